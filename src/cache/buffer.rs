//! The write buffer: tiles written (or deleted) wait in memory under a byte budget, are visible to
//! reads at once, and reach the bundles grouped per bundle (one lock, one append, one index update)
//! when the budget evicts them, or on `flush_bundle`/`flush_all` (fsync, unmount), or in the
//! background once a bundle is due ([`WriteBuffer::due_bundles`]: quiet for a while, holding a
//! chunk's worth of tiles, or holding a tile for too long).
//! An entry leaves the buffer only once its bundle write succeeded; a failed flush keeps it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;

use super::commit::{self, ImportMode};
use super::counters::{BufferCounters, LiveFlushCounters};
use super::Cache;
use crate::format::sniff::ImageKind;
use crate::format::{BundleId, TileAddr};
use crate::Result;

/// The longest a change waits in the buffer before the background flush writes its bundle, however
/// busy the bundle stays (as the kernel's dirty-page expiry does for files).
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// A change waiting for its bundle.
#[derive(Debug, Clone)]
pub enum Pending {
    Put {
        bytes: Arc<Vec<u8>>,
        mtime: SystemTime,
    },
    Delete,
}

impl Pending {
    fn bytes(&self) -> usize {
        match self {
            Pending::Put { bytes, .. } => bytes.len(),
            Pending::Delete => 0,
        }
    }
    fn same(&self, o: &Pending) -> bool {
        match (self, o) {
            (Pending::Put { bytes: a, mtime: x }, Pending::Put { bytes: b, mtime: y }) => {
                Arc::ptr_eq(a, b) && x == y
            }
            (Pending::Delete, Pending::Delete) => true,
            _ => false,
        }
    }
}

struct Inner {
    tiles: LruCache<TileAddr, Pending>,
    /// The same tiles in (level, row, col) order, for listings.
    order: BTreeSet<TileAddr>,
    bytes: usize,
    /// What waits per bundle, for background flushing.
    bundles: HashMap<BundleId, BundleWaiting>,
}

/// The changes of one bundle waiting in the buffer.
#[derive(Debug, Clone, Copy)]
struct BundleWaiting {
    tiles: usize,
    bytes: usize,
    last_write: Instant,
    /// When the oldest change still waiting was recorded (for the age limit).
    first_write: Instant,
}

impl Inner {
    fn remove(&mut self, t: &TileAddr) {
        if let Some(old) = self.tiles.pop(t) {
            self.bytes -= old.bytes();
            self.order.remove(t);
            let id = t.bundle();
            if let Some(b) = self.bundles.get_mut(&id) {
                b.tiles -= 1;
                b.bytes -= old.bytes();
                if b.tiles == 0 {
                    self.bundles.remove(&id);
                }
            }
        }
    }
}

/// Buffered writes in front of a [`Cache`].
pub struct WriteBuffer {
    cache: Arc<Cache>,
    budget: usize,
    mode: ImportMode,
    inner: Mutex<Inner>,
    /// One flush at a time, so two flushes never write the same tiles twice.
    flushing: Mutex<()>,
    /// What the flushes came to ([`WriteBuffer::counters`]).
    flushed: LiveFlushCounters,
}

/// Counters of what was flushed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    pub bundles: usize,
    pub tiles: usize,
    pub bytes_written: u64,
}

impl std::ops::AddAssign for FlushStats {
    fn add_assign(&mut self, o: FlushStats) {
        self.bundles += o.bundles;
        self.tiles += o.tiles;
        self.bytes_written += o.bytes_written;
    }
}

impl WriteBuffer {
    /// A buffer over `cache` holding at most `budget_bytes` of tile bytes (OVERWRITE mode);
    /// past the budget the least recently written bundle is flushed.
    pub fn new(cache: Arc<Cache>, budget_bytes: usize) -> Self {
        Self::with_mode(cache, budget_bytes, ImportMode::Overwrite)
    }

    /// [`WriteBuffer::new`] with the way a written tile meets the stored one (OVERWRITE/MERGE).
    pub fn with_mode(cache: Arc<Cache>, budget_bytes: usize, mode: ImportMode) -> Self {
        WriteBuffer {
            cache,
            budget: budget_bytes,
            mode,
            inner: Mutex::new(Inner {
                tiles: LruCache::unbounded(),
                order: BTreeSet::new(),
                bytes: 0,
                bundles: HashMap::new(),
            }),
            flushing: Mutex::new(()),
            flushed: LiveFlushCounters::default(),
        }
    }

    /// The cache the buffer flushes into.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// OVERWRITE or MERGE.
    pub fn mode(&self) -> ImportMode {
        self.mode
    }

    /// Bytes of tile data waiting.
    pub fn pending_bytes(&self) -> usize {
        self.inner.lock().unwrap().bytes
    }

    /// Number of changes waiting.
    pub fn pending_tiles(&self) -> usize {
        self.inner.lock().unwrap().tiles.len()
    }

    /// What waits and what the flushes came to, now: every flush of a bundle's changes is
    /// counted, stored or failed (with the last failure's message), whoever started it (the
    /// background flush, a full buffer, fsync, unmount).
    pub fn counters(&self) -> BufferCounters {
        let (tiles, bytes) = {
            let g = self.inner.lock().unwrap();
            (g.tiles.len() as u64, g.bytes as u64)
        };
        self.flushed.snapshot(tiles, bytes, self.budget as u64)
    }

    /// Bundles worth flushing in the background now: those not written for `idle`, those
    /// holding at least `chunk` bytes of tiles (a long copy into one bundle then reaches the disk
    /// while it runs, not all at unmount), and those holding a change older than `max_age` (a
    /// slow, steady writer never leaves a bundle quiet, yet its tiles must not wait for ever).
    /// Fullest first.
    pub fn due_bundles(&self, idle: Duration, chunk: usize, max_age: Duration) -> Vec<BundleId> {
        let g = self.inner.lock().unwrap();
        let mut due: Vec<(usize, BundleId)> = g
            .bundles
            .iter()
            .filter(|(_, b)| {
                b.bytes >= chunk
                    || b.last_write.elapsed() >= idle
                    || b.first_write.elapsed() >= max_age
            })
            .map(|(id, b)| (b.bytes, *id))
            .collect();
        due.sort_by(|a, b| b.cmp(a));
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The waiting change for a tile, if any (reads consult this before the bundles).
    pub fn get(&self, t: TileAddr) -> Option<Pending> {
        self.inner.lock().unwrap().tiles.peek(&t).cloned()
    }

    /// Waiting changes of one row, by column.
    pub fn row(&self, level: u8, row: u32) -> Vec<(u32, Pending)> {
        let g = self.inner.lock().unwrap();
        g.order
            .range(TileAddr::new(level, row, 0)..=TileAddr::new(level, row, u32::MAX))
            .filter_map(|t| g.tiles.peek(t).map(|p| (t.col, p.clone())))
            .collect()
    }

    /// Waiting changes of column `col` of a level, by row (ascending).
    pub fn col(&self, level: u8, col: u32) -> Vec<(u32, Pending)> {
        let g = self.inner.lock().unwrap();
        g.order
            .range(TileAddr::new(level, 0, 0)..=TileAddr::new(level, u32::MAX, u32::MAX))
            .filter(|t| t.col == col)
            .filter_map(|t| g.tiles.peek(t).map(|p| (t.row, p.clone())))
            .collect()
    }

    /// Rows of a level with waiting changes: (row, whether any is a put, whether any is a delete).
    pub fn rows(&self, level: u8) -> BTreeMap<u32, (bool, bool)> {
        let g = self.inner.lock().unwrap();
        let mut out: BTreeMap<u32, (bool, bool)> = BTreeMap::new();
        for t in g
            .order
            .range(TileAddr::new(level, 0, 0)..=TileAddr::new(level, u32::MAX, u32::MAX))
        {
            let e = out.entry(t.row).or_default();
            match g.tiles.peek(t) {
                Some(Pending::Put { .. }) => e.0 = true,
                Some(Pending::Delete) => e.1 = true,
                None => {}
            }
        }
        out
    }

    /// Levels with waiting puts.
    pub fn levels(&self) -> BTreeSet<u8> {
        let g = self.inner.lock().unwrap();
        g.order
            .iter()
            .filter(|t| matches!(g.tiles.peek(t), Some(Pending::Put { .. })))
            .map(|t| t.level)
            .collect()
    }

    /// Stores a tile (visible at once, stamped now); flushes least recently written bundles past
    /// the budget. No checks: see [`WriteBuffer::commit`] for tiles coming from users.
    pub fn put(&self, t: TileAddr, bytes: Vec<u8>) -> Result<()> {
        self.record(
            t,
            Pending::Put {
                bytes: Arc::new(bytes),
                mtime: SystemTime::now(),
            },
        )
    }

    /// Stores a tile a user wrote under a name of kind `ext_kind`: checks it
    /// ([`commit::check_tile`]), merges it with the stored tile in MERGE mode, then buffers it with
    /// its modification time. A refused tile changes nothing.
    pub fn commit(
        &self,
        t: TileAddr,
        ext_kind: ImageKind,
        bytes: Vec<u8>,
        mtime: SystemTime,
    ) -> Result<()> {
        let what = format!("tile {t}");
        commit::check_tile(&self.cache, &what, ext_kind, &bytes)?;
        let bytes = match self.mode {
            ImportMode::Overwrite => bytes,
            ImportMode::Merge => {
                let old: Option<Vec<u8>> = match self.get(t) {
                    Some(Pending::Put { bytes, .. }) => Some(bytes.to_vec()),
                    Some(Pending::Delete) => None,
                    None => self.cache.tile(t)?.map(|b| b.to_vec()),
                };
                match old {
                    Some(old) => commit::merge(&what, &old, &bytes)?.unwrap_or(bytes),
                    None => bytes,
                }
            }
        };
        self.record(
            t,
            Pending::Put {
                bytes: Arc::new(bytes),
                mtime,
            },
        )
    }

    /// Sets the modification time of a waiting tile. False if the tile is not waiting.
    pub fn set_time(&self, t: TileAddr, mtime: SystemTime) -> bool {
        let mut g = self.inner.lock().unwrap();
        match g.tiles.peek_mut(&t) {
            Some(Pending::Put { mtime: m, .. }) => {
                *m = mtime;
                true
            }
            _ => false,
        }
    }

    /// Removes a tile (visible at once).
    pub fn delete(&self, t: TileAddr) -> Result<()> {
        self.record(t, Pending::Delete)
    }

    fn record(&self, t: TileAddr, p: Pending) -> Result<()> {
        {
            let mut g = self.inner.lock().unwrap();
            let now = Instant::now();
            let added = p.bytes();
            g.bytes += added;
            g.order.insert(t);
            let old = g.tiles.put(t, p);
            let removed = old.as_ref().map_or(0, Pending::bytes);
            g.bytes -= removed;
            let b = g.bundles.entry(t.bundle()).or_insert(BundleWaiting {
                tiles: 0,
                bytes: 0,
                last_write: now,
                first_write: now,
            });
            b.tiles += usize::from(old.is_none());
            b.bytes = b.bytes + added - removed;
            b.last_write = now;
        }
        loop {
            let victim = {
                let g = self.inner.lock().unwrap();
                if g.bytes <= self.budget {
                    return Ok(());
                }
                g.tiles.peek_lru().map(|(t, _)| t.bundle())
            };
            match victim {
                Some(id) => {
                    self.flush_bundle(id)?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Writes the waiting changes of one bundle.
    pub fn flush_bundle(&self, id: BundleId) -> Result<FlushStats> {
        let _one = self.flushing.lock().unwrap();
        let batch: Vec<(TileAddr, Pending)> = {
            let g = self.inner.lock().unwrap();
            g.order
                .range(id.tile(crate::format::Slot { row: 0, col: 0 })..)
                .take_while(|t| t.level == id.level && t.row < id.row0 + crate::format::BUNDLE_DIM)
                .filter(|t| t.bundle() == id)
                .filter_map(|t| g.tiles.peek(t).map(|p| (*t, p.clone())))
                .collect()
        };
        self.write_batch(&batch)
    }

    /// How many bytes one bundle may hold in the buffer before the background flush writes it
    /// out even while it is still being written: an eighth of the budget, within 1–16 MiB; half
    /// the budget (at least 1 MiB) where each flush rewrites the whole bundle (an object store:
    /// [`crate::cache::Storage::rewrites_whole_bundles`]), since there a bundle written in n
    /// flushes costs about n/2 times its size in bytes sent.
    pub fn chunk(&self) -> usize {
        if self.cache.store().rewrites_whole_bundles() {
            return (self.budget / 2).max(1 << 20);
        }
        (self.budget / 8).clamp(1 << 20, 16 << 20)
    }

    /// The background flush: writes the bundles that are due ([`WriteBuffer::due_bundles`] with
    /// [`WriteBuffer::chunk`] and [`MAX_AGE`]). A bundle that fails keeps its tiles; the others are still tried
    /// and the first error is returned.
    pub fn flush_due(&self, idle: Duration) -> Result<FlushStats> {
        let mut total = FlushStats::default();
        let mut first_err = None;
        for id in self.due_bundles(idle, self.chunk(), MAX_AGE) {
            match self.flush_bundle(id) {
                Ok(s) => total += s,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Writes every waiting change, bundle by bundle.
    pub fn flush_all(&self) -> Result<FlushStats> {
        let _one = self.flushing.lock().unwrap();
        let mut groups: BTreeMap<BundleId, Vec<(TileAddr, Pending)>> = BTreeMap::new();
        for (t, p) in self.inner.lock().unwrap().tiles.iter() {
            groups.entry(t.bundle()).or_default().push((*t, p.clone()));
        }
        let mut total = FlushStats::default();
        for batch in groups.values() {
            total += self.write_batch(batch)?;
        }
        Ok(total)
    }

    /// Writes one bundle's changes ([`WriteBuffer::store_batch`]) and counts how that went.
    fn write_batch(&self, batch: &[(TileAddr, Pending)]) -> Result<FlushStats> {
        if batch.is_empty() {
            return Ok(FlushStats::default());
        }
        let r = self.store_batch(batch);
        match &r {
            Ok(s) => self
                .flushed
                .stored(batch[0].0.bundle(), s.tiles as u64, s.bytes_written),
            Err(e) => {
                let id = batch[0].0.bundle();
                self.flushed.failed(
                    id,
                    format!(
                        "level {} bundle {}: {e}",
                        id.level,
                        crate::format::exploded::bundle_base(&id)
                    ),
                )
            }
        }
        r
    }

    fn store_batch(&self, batch: &[(TileAddr, Pending)]) -> Result<FlushStats> {
        let puts: Vec<(TileAddr, &[u8], Option<SystemTime>)> = batch
            .iter()
            .filter_map(|(t, p)| match p {
                Pending::Put { bytes, mtime } => Some((*t, bytes.as_slice(), Some(*mtime))),
                Pending::Delete => None,
            })
            .collect();
        let deletes: Vec<TileAddr> = batch
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Delete))
            .map(|(t, _)| *t)
            .collect();
        let st = self.cache.write_tiles_timed(&puts)?;
        if !deletes.is_empty() {
            self.cache.delete_tiles(&deletes)?;
        }
        // Drop what was written, unless it was replaced meanwhile.
        let mut g = self.inner.lock().unwrap();
        for (t, p) in batch {
            if g.tiles.peek(t).is_some_and(|now| now.same(p)) {
                g.remove(t);
            }
        }
        // What is left of the bundle came in during this flush: its age starts now, so a busy
        // bundle is not flushed again at every tick.
        if let Some(b) = batch
            .first()
            .and_then(|(t, _)| g.bundles.get_mut(&t.bundle()))
        {
            b.first_write = Instant::now();
        }
        Ok(FlushStats {
            bundles: 1,
            tiles: batch.len(),
            bytes_written: st.bytes_written,
        })
    }
}

/// Tiles of a row or column as stored, (column or row, size in bytes), with the write buffer's
/// waiting changes of it (`pending`, by the same key) applied; ascending.
pub fn with_pending(stored: Vec<(u32, u64)>, pending: Vec<(u32, Pending)>) -> Vec<(u32, u64)> {
    if pending.is_empty() {
        return stored;
    }
    let mut m: BTreeMap<u32, u64> = stored.into_iter().collect();
    for (key, p) in pending {
        match p {
            Pending::Put { bytes, .. } => {
                m.insert(key, bytes.len() as u64);
            }
            Pending::Delete => {
                m.remove(&key);
            }
        }
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::{TileFormat, TileScheme};

    fn cache() -> (tempfile::TempDir, Arc<Cache>) {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::create(
            d.path(),
            &TileScheme::web_mercator(9, TileFormat::Png),
            None,
        )
        .unwrap();
        (d, Arc::new(c))
    }

    #[test]
    fn buffered_tiles_are_visible_then_flushed() {
        let (_d, c) = cache();
        let b = WriteBuffer::new(c.clone(), 1 << 20);
        let t = TileAddr::new(3, 2, 1);
        b.put(t, vec![7; 100]).unwrap();
        assert!(matches!(b.get(t), Some(Pending::Put { bytes: v, .. }) if v.len() == 100));
        assert!(
            c.tile(t).unwrap().is_none(),
            "not in the bundle before a flush"
        );
        let s = b.flush_all().unwrap();
        assert_eq!(s.tiles, 1);
        assert_eq!(b.pending_tiles(), 0);
        assert_eq!(&c.tile(t).unwrap().unwrap()[..], &[7u8; 100][..]);
        b.delete(t).unwrap();
        b.flush_bundle(t.bundle()).unwrap();
        assert!(c.tile(t).unwrap().is_none());
    }

    #[test]
    fn budget_evicts_whole_bundles_least_recent_first() {
        let (_d, c) = cache();
        let b = WriteBuffer::new(c.clone(), 250);
        let a1 = TileAddr::new(9, 0, 0);
        let a2 = TileAddr::new(9, 0, 1);
        let other = TileAddr::new(9, 200, 200); // another bundle
        b.put(a1, vec![1; 100]).unwrap();
        b.put(a2, vec![2; 100]).unwrap();
        b.put(other, vec![3; 100]).unwrap(); // 300 > 250: the bundle of a1 (LRU) goes, with a2
        assert!(b.pending_bytes() <= 250);
        assert!(b.get(a1).is_none() && b.get(a2).is_none());
        assert!(b.get(other).is_some());
        assert_eq!(c.tile(a2).unwrap().unwrap().len(), 100);
        assert!(c.tile(other).unwrap().is_none());
    }

    #[test]
    fn a_failed_flush_keeps_the_tiles() {
        let (_d, c) = cache();
        let b = WriteBuffer::new(c.clone(), 1 << 20);
        let t = TileAddr::new(2, 0, 0);
        b.put(t, Vec::new()).unwrap(); // empty tiles are refused by the cache
        assert!(b.flush_all().is_err());
        assert_eq!(b.pending_tiles(), 1);
    }

    #[test]
    fn due_bundles_are_the_quiet_and_the_full() {
        let (_d, c) = cache();
        let b = WriteBuffer::new(c, 1 << 30);
        let hour = Duration::from_secs(3600);
        let a = TileAddr::new(9, 0, 0);
        let other = TileAddr::new(9, 128, 0);
        for col in 0..3 {
            b.put(TileAddr::new(9, 0, col), vec![1; 100]).unwrap();
        }
        b.put(other, vec![2; 50]).unwrap();
        assert!(
            b.due_bundles(hour, usize::MAX, hour).is_empty(),
            "nothing quiet or full"
        );
        assert_eq!(
            b.due_bundles(hour, 300, hour),
            vec![a.bundle()],
            "A holds 300 bytes"
        );
        assert_eq!(b.due_bundles(hour, 301, hour), vec![]);
        // Replacing a tile counts its new size only.
        b.put(TileAddr::new(9, 0, 2), vec![1; 10]).unwrap();
        assert_eq!(b.due_bundles(hour, 300, hour), vec![]);
        assert_eq!(b.due_bundles(hour, 210, hour), vec![a.bundle()]);
        // Idle for zero: everything, fullest first.
        assert_eq!(
            b.due_bundles(Duration::ZERO, usize::MAX, hour),
            vec![a.bundle(), other.bundle()]
        );
        // Holding a change longer than the age limit: due, however busy.
        assert_eq!(
            b.due_bundles(hour, usize::MAX, Duration::ZERO),
            vec![a.bundle(), other.bundle()]
        );
        b.flush_bundle(a.bundle()).unwrap();
        assert_eq!(
            b.due_bundles(Duration::ZERO, usize::MAX, hour),
            vec![other.bundle()]
        );
        b.delete(a).unwrap();
        assert_eq!(b.due_bundles(Duration::ZERO, usize::MAX, hour).len(), 2);
        b.flush_all().unwrap();
        assert!(b.due_bundles(Duration::ZERO, 0, hour).is_empty());
        assert_eq!(b.pending_tiles(), 0);
    }
}
