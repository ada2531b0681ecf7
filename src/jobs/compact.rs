//! `compact`: rewrite Compact V2 bundles whose dead space (overwritten or deleted tiles) passes a
//! threshold, through the storage seam ([`crate::cache::Storage::compact_bundle`]). A local bundle
//! is rebuilt under its `.lck` lock into a temporary file, synced, and renamed over the old one, so
//! readers see the old or the new file, never a mix; maps of the old file stay valid (new inode).
//! A bundle locked by another writer is left alone and reported. In an object store the bundle is
//! rebuilt and put conditionally (`If-Match`), like every write there.

use std::path::PathBuf;

use crate::cache::{Cache, Compacted};
use crate::error::{Error, Result};

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

/// Rewrites every bundle (with a `shard`, every bundle of its share) whose dead bytes are at least
/// `min_dead` (0.0–1.0) of its size.
pub fn compact(
    cache: &Cache,
    min_dead: f64,
    shard: Option<crate::cache::shard::Shard>,
) -> Result<CompactSummary> {
    if let Some(why) = cache.compact_refusal() {
        return Err(Error::invalid(format!("{}: {why}", cache.root().display())));
    }
    let mut s = CompactSummary::default();
    for level in cache.levels()? {
        for id in cache.bundles(level)? {
            if shard.is_some_and(|s| !s.takes(&id)) {
                continue;
            }
            s.bundles_checked += 1;
            match cache.compact_bundle(id, min_dead)? {
                Compacted::Kept => {}
                Compacted::Locked(path) => s.locked.push(path),
                Compacted::Rewritten { before, after } => {
                    s.bundles_rewritten += 1;
                    s.bytes_before += before;
                    s.bytes_after += after;
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::BundleLock;
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
        let s = compact(&c, 0.0, None).unwrap();
        assert_eq!((s.bundles_rewritten, s.locked.len()), (0, 1));
        drop(held);
        // Under the threshold: nothing to do.
        assert_eq!(compact(&c, 0.9, None).unwrap().bundles_rewritten, 0);
        let s = compact(&c, 0.001, None).unwrap();
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
