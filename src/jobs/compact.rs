//! `compact`: rewrite Compact V2 bundles whose dead space (overwritten or deleted tiles) passes a
//! threshold. Each bundle is rebuilt under its `.lck` lock into a temporary file, synced, and renamed
//! over the old one, so readers see the old or the new file, never a mix; maps of the old file
//! stay valid (new inode). A bundle locked by another writer is left alone and reported.

use std::io::BufWriter;
use std::path::PathBuf;

use crate::cache::{AtomicFile, BundleLock, Cache};
use crate::error::{Error, IoContext, Result};
use crate::format::conf::StorageFormat;
use crate::format::v2;

/// What `compact` did.
#[derive(Debug, Default)]
pub struct CompactSummary {
    pub bundles_checked: u64,
    pub bundles_rewritten: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bundles over the threshold that another writer held locked.
    pub locked: Vec<PathBuf>,
}

/// Rewrites every bundle whose dead bytes are at least `min_dead` (0.0–1.0) of its size.
pub fn compact(cache: &Cache, min_dead: f64) -> Result<CompactSummary> {
    match cache.storage() {
        StorageFormat::CompactV2 => {}
        StorageFormat::CompactV1 if crate::cache::url::is_url(cache.root()) => {
            return Err(Error::invalid(format!(
                "{}: {}",
                cache.root().display(),
                crate::cache::store::object::v1::READ_ONLY
            )))
        }
        StorageFormat::CompactV1 => {
            return Err(Error::invalid(format!(
                "{}: compact rewrites Compact V2 bundles only: a V1 .bundle/.bundlx pair cannot be \
                 replaced atomically for readers that don't lock (export to compact-v2, or to a new V1 cache)",
                cache.root().display()
            )))
        }
        StorageFormat::Exploded => {
            return Err(Error::invalid(format!("{}: an exploded cache has no bundles to compact", cache.root().display())))
        }
    }
    let mut s = CompactSummary::default();
    for level in cache.levels()? {
        for id in cache.bundles(level)? {
            let Some(b) = cache.bundle(id)? else { continue };
            s.bundles_checked += 1;
            let (size, dead) = (b.file_bytes(), b.dead_bytes());
            if size == 0 || (dead as f64) < min_dead * size as f64 || dead == 0 {
                continue;
            }
            drop(b);
            let path = cache.bundle_path(&id);
            let Some(_lock) = BundleLock::try_acquire(&cache.lock_path(&id))? else {
                s.locked.push(path);
                continue;
            };
            // Re-read under the lock: another writer may have appended since.
            cache.invalidate(&id);
            let Some(b) = cache.bundle(id)? else { continue };
            // The new file keeps the old one's mode (and owner as root): see cache::files.
            let mut tmp = AtomicFile::create(&path, true)?;
            let tmp_path = tmp.temp_path().to_path_buf();
            let mut builder =
                v2::Builder::new(BufWriter::with_capacity(1 << 20, tmp.file())).at(&tmp_path)?;
            for (slot, _) in b.slots() {
                if let Some(r) = b.tile_range(slot)? {
                    builder.add(slot, b.bytes(r)).at(&tmp_path)?;
                }
            }
            let (_, new_size) = builder.finish().at(&tmp_path)?;
            // Per-tile times recorded for the old entries, to be re-keyed to the new ones.
            let times: Vec<_> = b
                .slots()
                .into_iter()
                .filter_map(|(slot, _)| {
                    crate::cache::times::read(&path, slot, b.raw_entry(slot)).map(|t| (slot, t))
                })
                .collect();
            tmp.commit()?;
            cache.invalidate(&id);
            cache.note_own_write(&id);
            if !times.is_empty() {
                let rekeyed = cache.bundle(id).and_then(|nb| {
                    let Some(nb) = nb else { return Ok(()) };
                    let recs: Vec<_> = times
                        .iter()
                        .map(|(slot, t)| (*slot, nb.raw_entry(*slot), *t))
                        .collect();
                    crate::cache::times::write(&path, &recs)
                });
                if let Err(e) = rekeyed {
                    tracing::warn!("tile times of {} not kept: {e}", path.display());
                }
            }
            s.bundles_rewritten += 1;
            s.bytes_before += b.file_bytes();
            s.bytes_after += new_size;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::{TileFormat, TileScheme};
    use crate::format::TileAddr;

    #[test]
    fn compacts_dead_space_keeps_tiles_and_respects_locks() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::create(
            d.path(),
            &TileScheme::web_mercator(3, TileFormat::Png),
            None,
        )
        .unwrap();
        let t1 = TileAddr::new(2, 1, 1);
        let t2 = TileAddr::new(2, 1, 2);
        c.write_tiles(&[(t1, &[1u8; 1000][..]), (t2, &[2u8; 10][..])])
            .unwrap();
        c.write_tiles(&[(t1, &[3u8; 500][..])]).unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890);
        assert!(c.set_tile_time(t2, when).unwrap());
        let id = t1.bundle();
        assert_eq!(c.bundle(id).unwrap().unwrap().dead_bytes(), 1004);
        // Held by another writer: left alone, reported.
        let held =
            BundleLock::acquire(&c.lock_path(&id), std::time::Duration::from_secs(1)).unwrap();
        let s = compact(&c, 0.0).unwrap();
        assert_eq!((s.bundles_rewritten, s.locked.len()), (0, 1));
        drop(held);
        // Under the threshold: nothing to do.
        assert_eq!(compact(&c, 0.9).unwrap().bundles_rewritten, 0);
        let s = compact(&c, 0.001).unwrap();
        assert_eq!(s.bundles_rewritten, 1);
        assert_eq!(s.bytes_before - s.bytes_after, 1004);
        let c = Cache::open(d.path()).unwrap();
        assert_eq!(c.bundle(id).unwrap().unwrap().dead_bytes(), 0);
        // Per-tile times survive the rewrite (re-keyed to the new index entries).
        let t = c.tile(t2).unwrap().unwrap();
        assert_eq!(c.tile_mtime(t2, &t), Some(when));
        assert_eq!(&c.tile(t1).unwrap().unwrap()[..], &[3u8; 500][..]);
        assert_eq!(&c.tile(t2).unwrap().unwrap()[..], &[2u8; 10][..]);
    }
}
