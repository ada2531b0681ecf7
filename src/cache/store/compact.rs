//! Compact storage in a local folder: Compact V2 `.bundle` files, or Compact V1 `.bundle` +
//! `.bundlx` pairs (byte layouts in `format::v2` / `format::v1`). Bundles are mapped read-only
//! (kept in a bounded LRU, re-checked for other writers' changes every `recheck`), tiles are read
//! with `pread`, and writers append under the per-bundle `flock` MapProxy also takes
//! (`cache::lock`), with the durable append sequence of the format layer.

use crate::cache::store::StorageKind;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::BufWriter;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use lru::LruCache;

use super::{
    check_tiles, compaction_due, read_dir_names, Compacted, GroupView, LevelStats, Place, Storage,
    TileGroup, TimedSlot, UpdateFn,
};
use crate::cache::bundle::{BundleHandle, FileStamp};
use crate::cache::files::{write_atomic, AtomicFile};
use crate::cache::lock::BundleLock;
use crate::cache::spelling;
use crate::cache::{times, CacheOptions, TileBytes};
use crate::error::{IoContext, Result};
use crate::format::conf::StorageFormat;
use crate::format::v2::WriteStats;
use crate::format::{exploded as names, v1, v2, BundleId, Slot, TileAddr};

struct Cached {
    handle: Arc<BundleHandle>,
    checked_ms: AtomicU64,
}

/// A level's bundle list and the level folder's stamp when it was read.
type LevelListing = (FileStamp, Arc<Vec<BundleId>>);

/// Local Compact V1 or V2 bundles.
pub struct CompactStore {
    place: Place,
    format: StorageFormat,
    opts: CacheOptions,
    open: Mutex<LruCache<BundleId, Arc<Cached>>>,
    listings: Mutex<HashMap<u8, LevelListing>>,
    /// The stamp each bundle had right after our own last write to it, so watchers can tell our
    /// changes (which the kernel already knows about) from other writers'.
    own_writes: Mutex<HashMap<BundleId, FileStamp>>,
    epoch: Instant,
}

impl CompactStore {
    /// Bundles of `format` (CompactV1 or CompactV2) under `place`, with `opts`' recheck interval,
    /// open-bundle bound, lock timeout and durability.
    pub fn new(place: Place, format: StorageFormat, opts: CacheOptions) -> CompactStore {
        let cap = NonZeroUsize::new(opts.max_open_bundles.max(1)).unwrap();
        CompactStore {
            place,
            format,
            opts,
            open: Mutex::new(LruCache::new(cap)),
            listings: Mutex::new(HashMap::new()),
            own_writes: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    fn v1(&self) -> bool {
        self.format == StorageFormat::CompactV1
    }

    /// Remembers that this process just rewrote bundle `id` (caller holds its lock), so watchers
    /// do not take it for another writer's change.
    fn note_own_write(&self, id: &BundleId) {
        if let Ok(Some(st)) = FileStamp::of(&self.place.bundle_path(id)) {
            self.own_writes.lock().unwrap().insert(*id, st);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// [`Place::check_inside`] for every file a writer of bundle `id` touches.
    fn check_bundle_files(&self, id: &BundleId) -> Result<()> {
        let path = self.place.bundle_path(id);
        for p in [
            self.place.level_dir(id.level),
            self.place.lock_path(id),
            spelling::bundlx_of(&path),
            times::sidecar_path(&path),
            path,
        ] {
            self.place.check_inside(&p)?;
        }
        Ok(())
    }

    /// Takes bundle `id`'s writer lock (creating its level folder); what other writers did before
    /// is visible once it is held.
    fn lock(&self, id: BundleId) -> Result<BundleLock> {
        let dir = self.place.level_dir(id.level);
        self.check_bundle_files(&id)?;
        fs::create_dir_all(&dir).at(&dir)?;
        let lock = BundleLock::acquire(&self.place.lock_path(&id), self.opts.lock_timeout)?;
        self.invalidate(&id);
        Ok(lock)
    }

    /// Appends tiles to bundle `id`, or, if it does not exist, writes it whole in one pass
    /// (temporary file, rename: readers never see a half-made bundle). The caller holds the lock.
    fn append_locked(
        &self,
        _lock: &BundleLock,
        id: BundleId,
        tiles: &[(Slot, &[u8])],
    ) -> Result<WriteStats> {
        let path = self.place.bundle_path(&id);
        let rw = |p: &Path| fs::OpenOptions::new().read(true).write(true).open(p).at(p);
        let st = if self.v1() {
            let xpath = spelling::bundlx_of(&path);
            if !path.exists() || !xpath.exists() {
                self.create_v1(id, &path, tiles)?
            } else {
                self.pin_times(id);
                let (b, x) = (rw(&path)?, rw(&xpath)?);
                v1::append_tiles(&b, &path, &x, &xpath, tiles, self.opts.durable)?
            }
        } else if !path.exists() {
            self.create_v2(&path, tiles)?
        } else {
            self.pin_times(id);
            v2::append_tiles(&rw(&path)?, &path, tiles, self.opts.durable)?
        };
        self.invalidate(&id);
        self.note_own_write(&id);
        Ok(st)
    }

    /// Writes a new V2 bundle holding `tiles` (the last of duplicates wins).
    fn create_v2(&self, path: &Path, tiles: &[(Slot, &[u8])]) -> Result<WriteStats> {
        let tiles = last_wins(tiles);
        let mut f = AtomicFile::create(path, self.opts.durable)?;
        let tmp = f.temp_path().to_path_buf();
        let mut b = v2::Builder::new(BufWriter::with_capacity(1 << 20, f.file())).at(&tmp)?;
        for (slot, bytes) in &tiles {
            b.add(*slot, bytes).at(&tmp)?;
        }
        let (_, len) = b.finish().at(&tmp)?;
        f.commit()?;
        // Coarse folder mtimes must not hide the new bundle from listings.
        self.listings
            .lock()
            .unwrap()
            .remove(&path_level(&self.place, path));
        Ok(WriteStats {
            tiles: tiles.len(),
            bytes_written: len,
        })
    }

    /// Writes a new V1 pair: the `.bundlx` first, then the `.bundle` (readers list `.bundle`
    /// files, so a lone `.bundlx` left by an interruption is ignored and rewritten).
    fn create_v1(&self, id: BundleId, path: &Path, tiles: &[(Slot, &[u8])]) -> Result<WriteStats> {
        let tiles = last_wins(tiles);
        let mut f = AtomicFile::create(path, self.opts.durable)?;
        let tmp = f.temp_path().to_path_buf();
        let mut b = v1::Builder::new(
            BufWriter::with_capacity(1 << 20, f.file()),
            id.row0,
            id.col0,
        )
        .at(&tmp)?;
        for (slot, bytes) in &tiles {
            b.add(*slot, bytes).at(&tmp)?;
        }
        let (_, bundlx, len) = b.finish().at(&tmp)?;
        write_atomic(&spelling::bundlx_of(path), &bundlx, self.opts.durable)?;
        f.commit()?;
        self.listings.lock().unwrap().remove(&id.level);
        Ok(WriteStats {
            tiles: tiles.len(),
            bytes_written: len + bundlx.len() as u64,
        })
    }

    /// Before a change to existing bundle `id` (under its lock): its tiles without a recorded
    /// time get the time they have been shown with, the bundle's (`times::pin`), so the change
    /// moves only the changed tiles' times. A failure is logged: it costs rsync a resend of the
    /// bundle's tiles, never a tile.
    fn pin_times(&self, id: BundleId) {
        self.invalidate(&id);
        let pinned = self.bundle(id).and_then(|h| {
            let Some(h) = h else { return Ok(0) };
            let entries: Vec<(Slot, u64)> = h
                .slots()
                .into_iter()
                .map(|(s, _)| (s, h.raw_entry(s)))
                .collect();
            times::pin(&h.path, &entries, h.stamp.mtime())
        });
        match pinned {
            Ok(n) if n > 0 => tracing::debug!(
                "{}: kept the time of {} before changing the bundle",
                self.place.bundle_path(&id).display(),
                crate::error::count(n as u64, "tile")
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "tile times of {} not kept (rsync will send its tiles again): {e}",
                self.place.bundle_path(&id).display()
            ),
        }
    }

    /// Records per-tile times after the index, still under the lock (see `times` for why a lost
    /// or torn record is harmless: it only costs rsync a resend).
    fn record_times(&self, id: BundleId, timed: &[TimedSlot]) {
        if !timed.iter().any(|t| t.2.is_some()) {
            return;
        }
        let path = self.place.bundle_path(&id);
        let recorded = self.bundle(id).and_then(|h| {
            let Some(h) = h else { return Ok(()) };
            let recs: Vec<(Slot, u64, SystemTime)> = timed
                .iter()
                .filter_map(|(s, _, m)| m.map(|m| (*s, h.raw_entry(*s), m)))
                .collect();
            times::write(&path, &recs)
        });
        if let Err(e) = recorded {
            tracing::warn!("tile times of {} not recorded: {e}", path.display());
        }
    }
}

struct LockedGroup<'a> {
    store: &'a CompactStore,
    handle: Option<Arc<BundleHandle>>,
}

impl GroupView for LockedGroup<'_> {
    fn exists(&self) -> bool {
        self.handle.is_some()
    }
    fn tile(&self, slot: Slot) -> Result<Option<TileBytes>> {
        match &self.handle {
            Some(h) => match h.tile_range(slot)? {
                Some(r) => Ok(Some(TileBytes::read_from(h.clone(), h.read(r)?))),
                None => Ok(None),
            },
            None => {
                let _ = self.store;
                Ok(None)
            }
        }
    }
}

impl Storage for CompactStore {
    fn kind(&self) -> StorageKind {
        match self.format {
            StorageFormat::CompactV1 => StorageKind::CompactV1,
            _ => StorageKind::CompactV2,
        }
    }

    fn levels(&self) -> Result<Vec<u8>> {
        self.place.levels()
    }

    fn bundles(&self, level: u8) -> Result<Vec<BundleId>> {
        let dir = self.place.level_dir(level);
        let Some(stamp) = FileStamp::of(&dir)? else {
            return Ok(Vec::new());
        };
        if let Some((s, v)) = self.listings.lock().unwrap().get(&level) {
            if *s == stamp {
                return Ok(v.as_ref().clone());
            }
        }
        let mut v = Vec::new();
        for n in read_dir_names(&dir)? {
            if !n.to_ascii_lowercase().ends_with(".bundle") {
                continue;
            }
            match names::parse_bundle_file(&n) {
                Ok((row0, col0, _)) => v.push(BundleId { level, row0, col0 }),
                Err(e) => tracing::warn!("{}: skipping: {e}", dir.join(&n).display()),
            }
        }
        v.sort_unstable();
        self.listings
            .lock()
            .unwrap()
            .insert(level, (stamp, Arc::new(v.clone())));
        Ok(v)
    }

    fn bundle(&self, id: BundleId) -> Result<Option<Arc<BundleHandle>>> {
        let cached = self.open.lock().unwrap().get(&id).cloned();
        if let Some(c) = cached {
            let now = self.now_ms();
            let last = c.checked_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) < self.opts.recheck.as_millis() as u64 {
                return Ok(Some(c.handle.clone()));
            }
            if !c.handle.is_stale()? {
                c.checked_ms.store(now, Ordering::Relaxed);
                return Ok(Some(c.handle.clone()));
            }
            tracing::debug!("{}: changed on disk, remapping", c.handle.path.display());
        }
        self.open.lock().unwrap().pop(&id);
        let Some(path) = self.place.find_bundle(&id) else {
            return Ok(None);
        };
        self.place.check_inside(&path)?;
        let handle = Arc::new(if self.v1() {
            self.place.check_inside(&spelling::bundlx_of(&path))?;
            BundleHandle::open_v1(id, &path)?
        } else {
            BundleHandle::open_v2(id, &path)?
        });
        let c = Arc::new(Cached {
            handle: handle.clone(),
            checked_ms: AtomicU64::new(self.now_ms()),
        });
        self.open.lock().unwrap().put(id, c);
        Ok(Some(handle))
    }

    fn invalidate(&self, id: &BundleId) {
        self.open.lock().unwrap().pop(id);
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        let Some(b) = self.bundle(t.bundle())? else {
            return Ok(None);
        };
        let read = |b: Arc<BundleHandle>, r: Option<std::ops::Range<usize>>| -> Result<_> {
            Ok(match r {
                Some(r) => Some(TileBytes::read_from(b.clone(), b.read(r)?)),
                None => None,
            })
        };
        match b.tile_range(t.slot()) {
            Ok(r) => read(b, r),
            // Another writer may have appended since the map was made (the index is shared with
            // the file, the map length is not): remap once before calling the entry bad.
            Err(e) if b.is_stale().unwrap_or(false) => {
                tracing::debug!("{e}; bundle changed on disk, remapping");
                self.invalidate(&t.bundle());
                let Some(b) = self.bundle(t.bundle())? else {
                    return Ok(None);
                };
                let r = b.tile_range(t.slot())?;
                read(b, r)
            }
            Err(e) => Err(e),
        }
    }

    fn slots_of(&self, id: BundleId) -> Result<Option<Vec<(Slot, u32)>>> {
        Ok(self.bundle(id)?.map(|b| b.slots()))
    }

    fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        match self.bundle(g.id)? {
            Some(b) => super::bundle_tiles(g.id, &b),
            None => Ok(Vec::new()),
        }
    }

    fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let mut s = LevelStats::default();
        for id in self.bundles(level)? {
            let Some(b) = self.bundle(id)? else { continue };
            s.bundles += 1;
            for (slot, size) in b.slots() {
                s.tiles += 1;
                s.tile_bytes += u64::from(size);
                if b.tile_range(slot).is_err() {
                    s.broken += 1;
                }
            }
            s.file_bytes += b.file_bytes();
            s.dead_bytes += b.dead_bytes();
        }
        Ok(s)
    }

    fn write_group(&self, id: BundleId, timed: &[TimedSlot]) -> Result<WriteStats> {
        check_tiles(&self.place.bundle_path(&id), id, timed)?;
        let tiles: Vec<(Slot, &[u8])> = timed.iter().map(|(s, b, _)| (*s, *b)).collect();
        let lock = self.lock(id)?;
        let st = self.append_locked(&lock, id, &tiles)?;
        self.record_times(id, timed);
        drop(lock);
        Ok(st)
    }

    fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats> {
        let lock = self.lock(id)?;
        let view = LockedGroup {
            store: self,
            handle: self.bundle(id)?,
        };
        let tiles = f(&view)?;
        if tiles.is_empty() {
            return Ok(WriteStats::default());
        }
        let timed: Vec<TimedSlot> = tiles.iter().map(|(s, b)| (*s, &b[..], None)).collect();
        check_tiles(&self.place.bundle_path(&id), id, &timed)?;
        let slices: Vec<(Slot, &[u8])> = tiles.iter().map(|(s, b)| (*s, &b[..])).collect();
        let st = self.append_locked(&lock, id, &slices)?;
        drop(lock);
        Ok(st)
    }

    fn delete_group(&self, id: BundleId, slots: &[Slot]) -> Result<()> {
        let path = self.place.bundle_path(&id);
        if !path.exists() {
            return Ok(());
        }
        self.check_bundle_files(&id)?;
        let _lock = BundleLock::acquire(&self.place.lock_path(&id), self.opts.lock_timeout)?;
        self.pin_times(id);
        if self.v1() {
            let xpath = spelling::bundlx_of(&path);
            let x = fs::OpenOptions::new().write(true).open(&xpath).at(&xpath)?;
            v1::delete_tiles(&x, &xpath, slots, self.opts.durable)?;
        } else {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .at(&path)?;
            v2::delete_tiles(&f, &path, slots, self.opts.durable)?;
        }
        self.invalidate(&id);
        self.note_own_write(&id);
        Ok(())
    }

    fn tile_mtime(&self, t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        if let Some(h) = bytes.bundle() {
            let slot = t.slot();
            if let Some(m) = times::read(&h.path, slot, h.raw_entry(slot)) {
                return Some(m);
            }
        }
        bytes.mtime()
    }

    fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        let id = t.bundle();
        let path = self.place.bundle_path(&id);
        if !path.exists() {
            return Ok(false);
        }
        self.check_bundle_files(&id)?;
        let _lock = BundleLock::acquire(&self.place.lock_path(&id), self.opts.lock_timeout)?;
        self.invalidate(&id);
        let Some(h) = self.bundle(id)? else {
            return Ok(false);
        };
        if h.tile_range(t.slot())?.is_none() {
            return Ok(false);
        }
        times::write(&path, &[(t.slot(), h.raw_entry(t.slot()), mtime)])?;
        Ok(true)
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        self.place.bundle_path(&t.bundle())
    }

    fn written_by_us(&self, id: &BundleId, stamp: &FileStamp) -> bool {
        self.own_writes.lock().unwrap().get(id) == Some(stamp)
    }

    /// Rebuilds the bundle under its `.lck` lock (not waited for: a held lock is
    /// [`Compacted::Locked`]) into a temporary file, synced and renamed over the old one: maps of
    /// the old file stay valid (new inode), and the new file keeps the old one's mode. Per-tile
    /// times are re-keyed to the new index entries.
    fn compact_bundle(&self, id: BundleId, min_dead: f64) -> Result<Compacted> {
        if self.v1() {
            return Ok(Compacted::Kept);
        }
        let Some(b) = self.bundle(id)? else {
            return Ok(Compacted::Kept);
        };
        if !compaction_due(b.file_bytes(), b.dead_bytes(), min_dead) {
            return Ok(Compacted::Kept);
        }
        drop(b);
        let path = self.place.bundle_path(&id);
        self.check_bundle_files(&id)?;
        let Some(_lock) = BundleLock::try_acquire(&self.place.lock_path(&id))? else {
            return Ok(Compacted::Locked(path));
        };
        // Read again under the lock: another writer may have appended since. Tiles without a
        // recorded time keep the one they were shown with (the old file's) after the rewrite.
        self.pin_times(id);
        let Some(b) = self.bundle(id)? else {
            return Ok(Compacted::Kept);
        };
        let mut tmp = AtomicFile::create(&path, true)?;
        let tmp_path = tmp.temp_path().to_path_buf();
        let mut builder =
            v2::Builder::new(BufWriter::with_capacity(1 << 20, tmp.file())).at(&tmp_path)?;
        for (slot, _) in b.slots() {
            if let Some(r) = b.tile_range(slot)? {
                builder.add(slot, b.bytes(r)).at(&tmp_path)?;
            }
        }
        let (_, after) = builder.finish().at(&tmp_path)?;
        // Per-tile times recorded for the old entries, to be re-keyed to the new ones.
        let recorded: Vec<_> = b
            .slots()
            .into_iter()
            .filter_map(|(slot, _)| times::read(&path, slot, b.raw_entry(slot)).map(|t| (slot, t)))
            .collect();
        tmp.commit()?;
        self.invalidate(&id);
        self.note_own_write(&id);
        if !recorded.is_empty() {
            let rekeyed = self.bundle(id).and_then(|nb| {
                let Some(nb) = nb else { return Ok(()) };
                let recs: Vec<_> = recorded
                    .iter()
                    .map(|(slot, t)| (*slot, nb.raw_entry(*slot), *t))
                    .collect();
                times::write(&path, &recs)
            });
            if let Err(e) = rekeyed {
                tracing::warn!("tile times of {} not kept: {e}", path.display());
            }
        }
        Ok(Compacted::Rewritten {
            before: b.file_bytes(),
            after,
        })
    }
}

/// The tiles with, for each slot, only the last one given (what an append in that order leaves).
fn last_wins<'a>(tiles: &[(Slot, &'a [u8])]) -> Vec<(Slot, &'a [u8])> {
    let mut by_slot: BTreeMap<Slot, &'a [u8]> = BTreeMap::new();
    for (s, b) in tiles {
        by_slot.insert(*s, b);
    }
    by_slot.into_iter().collect()
}

/// The level of a bundle path under `place` (for invalidating its listing).
fn path_level(place: &Place, path: &Path) -> u8 {
    path.parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| names::parse_level_dir(n).ok())
        .unwrap_or_else(|| {
            tracing::debug!(
                "{}: not under {}",
                path.display(),
                place.tiles_dir.display()
            );
            0
        })
}

/// Groups timed tiles by bundle (helper for callers writing tiles of several bundles).
pub fn by_bundle<'a>(
    tiles: &[(TileAddr, &'a [u8], Option<SystemTime>)],
) -> BTreeMap<BundleId, Vec<TimedSlot<'a>>> {
    let mut groups: BTreeMap<BundleId, Vec<TimedSlot>> = BTreeMap::new();
    for (t, bytes, mtime) in tiles {
        groups
            .entry(t.bundle())
            .or_default()
            .push((t.slot(), *bytes, *mtime));
    }
    groups
}
