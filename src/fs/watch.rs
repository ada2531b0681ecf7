//! The background work of a mount: watching the bundles whose tiles the kernel may cache for
//! changes by other writers (what the kernel must forget), and flushing the write buffer's bundles
//! that are due. Kernel-free: the kernel is reached through [`Notify`].

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::inode::Node;
use super::{Invalidation, TreeFs};
use crate::cache::changes::RowDigests;
use crate::cache::BundleHandle;
use crate::format::exploded;
use crate::format::{BundleId, TileAddr, BUNDLE_DIM};

/// How many bundles are watched for foreign changes (those whose tiles the kernel may cache).
const WATCHED_BUNDLES: usize = 4096;

/// A bundle whose tiles the kernel may cache: the handle seen (its stamp) and a digest of each
/// row of its index at that time. The map itself shows later index writes, so the digests are what
/// tells which rows another writer changed.
#[derive(Clone)]
struct Watched {
    handle: Arc<BundleHandle>,
    rows: Arc<RowDigests>,
}

/// The bundles watched for changes by other writers, least recently read dropped first.
pub(super) struct WatchedBundles(Mutex<LruCache<BundleId, Watched>>);

impl Default for WatchedBundles {
    fn default() -> Self {
        WatchedBundles(Mutex::new(LruCache::new(
            NonZeroUsize::new(WATCHED_BUNDLES).expect("non-zero"),
        )))
    }
}

impl WatchedBundles {
    /// Watches the bundle of a tile just read, keeping the first handle seen: `poll_changes`
    /// compares it with the file on disk.
    pub(super) fn remember(&self, h: &Arc<BundleHandle>) {
        if self.0.lock().unwrap().get(&h.id).is_some() {
            return;
        }
        let w = Watched {
            handle: h.clone(),
            rows: Arc::new(RowDigests::of(h)),
        };
        self.0.lock().unwrap().put(h.id, w);
    }

    fn snapshot(&self) -> Vec<(BundleId, Watched)> {
        let g = self.0.lock().unwrap();
        g.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn put(&self, id: BundleId, handle: Arc<BundleHandle>, rows: RowDigests) {
        let w = Watched {
            handle,
            rows: Arc::new(rows),
        };
        self.0.lock().unwrap().put(id, w);
    }

    fn drop_bundle(&self, id: &BundleId) {
        self.0.lock().unwrap().pop(id);
    }
}

impl TreeFs {
    /// Checks the watched bundles for changes by other writers and says what the kernel must
    /// forget: for each changed row of a bundle, its tiles (inode and both names), the row
    /// folder and its entry in the level.
    pub fn poll_changes(&self) -> Vec<Invalidation> {
        let mut out = Vec::new();
        for (id, old) in self.watched.snapshot() {
            match old.handle.is_stale() {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => tracing::warn!("{e}"),
            }
            self.cache.invalidate(&id);
            let new = match self.cache.bundle(id) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("bundle changed and is now unreadable: {e}");
                    None
                }
            };
            let after = new.as_ref().map(|b| RowDigests::of(b));
            // Our own flush: the kernel saw those writes come through it, nothing to forget
            // (sending invalidations for them would also contend with the writers' folder locks).
            if let (Some(h), Some(rows)) = (&new, &after) {
                if self.cache.written_by_us(&id, &h.stamp) {
                    self.watched.put(id, h.clone(), rows.clone());
                    continue;
                }
            }
            for r in old.rows.changed_rows(after.as_ref()) {
                self.row_changed(id, id.row0 + r, &mut out);
            }
            match (new, after) {
                (Some(handle), Some(rows)) => self.watched.put(id, handle, rows),
                _ => self.watched.drop_bundle(&id),
            }
        }
        // Bundles in an object store: the storage itself finds other writers' changes.
        for (id, rows) in self.cache.store().foreign_changes() {
            for r in rows {
                self.row_changed(id, id.row0 + r, &mut out);
            }
        }
        out
    }

    /// What the kernel must forget when row `row` of bundle `id` changed.
    fn row_changed(&self, id: BundleId, row: u32, out: &mut Vec<Invalidation>) {
        let level_ino = self.ino(Node::Level(id.level));
        if self.view() != super::View::ArcGis {
            // XYZ and TMS views: each tile's entry in its column folder.
            for c in 0..BUNDLE_DIM {
                let t = TileAddr::new(id.level, row, id.col0 + c);
                out.push(Invalidation::Inode(self.ino(Node::Tile(t))));
                for ext in ["png", "jpg", "lerc", "pbf"] {
                    let (parent, name) = self.tile_entry(t, ext);
                    out.push(Invalidation::Entry {
                        parent: self.ino(parent),
                        name,
                    });
                }
                out.push(Invalidation::Inode(self.ino(self.tile_entry(t, "png").0)));
            }
            out.push(Invalidation::Inode(level_ino));
            return;
        }
        let row_ino = self.ino(Node::Row {
            level: id.level,
            row,
        });
        for c in 0..BUNDLE_DIM {
            let t = TileAddr::new(id.level, row, id.col0 + c);
            out.push(Invalidation::Inode(self.ino(Node::Tile(t))));
            for ext in ["png", "jpg", "lerc", "pbf"] {
                out.push(Invalidation::Entry {
                    parent: row_ino,
                    name: exploded::col_file(t.col, ext),
                });
            }
        }
        out.push(Invalidation::Inode(row_ino));
        out.push(Invalidation::Entry {
            parent: level_ino,
            name: exploded::row_dir(row),
        });
        out.push(Invalidation::Inode(level_ino));
    }
}

/// Where invalidations go: the kernel (the FUSE adapter's notifier) or, in tests, a list.
pub trait Notify {
    /// Tells the kernel to forget `inv`. An `io::Error` with ENOENT means the kernel had nothing
    /// cached for it (not worth a log line).
    fn notify(&self, inv: &Invalidation) -> std::io::Result<()>;
}

/// Timing of the background work.
#[derive(Debug, Clone, Copy)]
pub struct WatchTiming {
    /// How often the watched bundles are checked for foreign changes (`--recheck`).
    pub every: Duration,
    /// A bundle of the write buffer not written for this long is flushed (`--flush-idle`).
    pub idle_flush: Duration,
}

impl WatchTiming {
    /// The loop's tick: at most 50 ms, so queued invalidations go out promptly.
    fn tick(&self) -> Duration {
        Duration::from_millis(50).min(self.every)
    }
}

/// One pass of the background work, at `now`: state kept between passes.
struct Watcher {
    timing: WatchTiming,
    last_poll: Instant,
    retry_at: Instant,
}

impl Watcher {
    fn new(timing: WatchTiming, now: Instant) -> Watcher {
        Watcher {
            timing,
            last_poll: now,
            retry_at: now,
        }
    }

    /// Sends what requests queued and, every `every`, what `poll_changes` finds; flushes the
    /// due bundles of the write buffer (after a failed flush, not again before
    /// `max(idle_flush, 1 s)`: the tiles stay buffered and the flush is retried).
    fn pass(&mut self, fs: &TreeFs, to: &dyn Notify, now: Instant) {
        let mut invs = fs.take_queued();
        if now.duration_since(self.last_poll) >= self.timing.every {
            self.last_poll = now;
            invs.extend(fs.poll_changes());
        }
        if fs.writer().is_some() && now >= self.retry_at {
            if let Err(e) = fs.flush_due(self.timing.idle_flush) {
                tracing::error!("flushing the write buffer: {e} (kept; retried later)");
                self.retry_at = now + self.timing.idle_flush.max(Duration::from_secs(1));
            }
        }
        for inv in invs {
            match to.notify(&inv) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    tracing::warn!("invalidating {inv:?}: {e}")
                }
                _ => tracing::trace!("invalidated {inv:?}"),
            }
        }
    }
}

/// Background work of a mount until `stop` is set: every tick (50 ms at most), sends the kernel
/// what requests queued and what [`TreeFs::poll_changes`] finds (every `timing.every`), and
/// flushes the bundles of the write buffer that are due: not written for `timing.idle_flush`,
/// or holding a chunk of tiles.
pub fn run(fs: &TreeFs, to: &dyn Notify, timing: WatchTiming, stop: &AtomicBool) {
    let mut w = Watcher::new(timing, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(timing.tick());
        w.pass(fs, to, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::buffer::WriteBuffer;
    use crate::cache::Cache;
    use crate::format::conf::{TileFormat, TileScheme};

    /// Records invalidations; answers ENOENT for inodes (as the kernel does for what it lacks).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Invalidation>>);

    impl Notify for Recorder {
        fn notify(&self, inv: &Invalidation) -> std::io::Result<()> {
            self.0.lock().unwrap().push(inv.clone());
            match inv {
                Invalidation::Inode(_) => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
                Invalidation::Entry { .. } => Ok(()),
            }
        }
    }

    fn png(v: u8) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(256, 256, image::Rgba([v, 2, 3, 255]));
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, image::ImageFormat::Png).unwrap();
        b.into_inner()
    }

    fn cache() -> (tempfile::TempDir, Arc<Cache>) {
        let d = tempfile::tempdir().unwrap();
        let scheme = TileScheme::web_mercator(3, TileFormat::Png);
        let c = Cache::create(d.path(), &scheme, None).unwrap();
        (d, Arc::new(c))
    }

    #[test]
    fn a_foreign_write_invalidates_its_row_only_at_the_poll() {
        let (d, c) = cache();
        let t = TileAddr::new(2, 1, 1);
        c.write_tiles(&[(t, &png(1)[..])]).unwrap();
        let fs = TreeFs::new(c);
        let row = fs.ino(Node::Row { level: 2, row: 1 });
        let tile = fs.ino(Node::Tile(t));
        fs.read(tile, 0, 10).unwrap(); // its bundle is watched from now on
        let timing = WatchTiming {
            every: Duration::from_secs(1),
            idle_flush: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let mut w = Watcher::new(timing, t0);
        let rec = Recorder::default();
        w.pass(&fs, &rec, t0);
        assert!(rec.0.lock().unwrap().is_empty(), "nothing changed");

        // Another writer changes a tile of row 3 of the bundle.
        let other = Cache::open(d.path()).unwrap();
        other
            .write_tiles(&[(TileAddr::new(2, 3, 0), &png(3)[..])])
            .unwrap();
        w.pass(&fs, &rec, t0 + Duration::from_millis(500));
        assert!(rec.0.lock().unwrap().is_empty(), "not yet time to poll");
        w.pass(&fs, &rec, t0 + Duration::from_secs(1));
        let got = std::mem::take(&mut *rec.0.lock().unwrap());
        let row3 = fs.ino(Node::Row { level: 2, row: 3 });
        assert!(got.contains(&Invalidation::Inode(row3)), "{got:?}");
        assert!(got.contains(&Invalidation::Entry {
            parent: row3,
            name: "C00000000.png".into()
        }));
        assert!(!got.contains(&Invalidation::Inode(row)), "row 1 unchanged");
        assert!(!got.contains(&Invalidation::Inode(tile)));
        // Told once: the next poll finds nothing new.
        w.pass(&fs, &rec, t0 + Duration::from_secs(2));
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn queued_invalidations_go_out_at_the_next_pass() {
        let (_d, c) = cache();
        let fs = TreeFs::new(c);
        fs.queue(Invalidation::Inode(77));
        let timing = WatchTiming {
            every: Duration::from_secs(3600),
            idle_flush: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let rec = Recorder::default();
        Watcher::new(timing, t0).pass(&fs, &rec, t0);
        assert_eq!(*rec.0.lock().unwrap(), [Invalidation::Inode(77)]);
        assert!(fs.take_queued().is_empty());
    }

    #[test]
    fn due_bundles_are_flushed_and_a_failed_flush_waits_before_retrying() {
        let (d, c) = cache();
        let w = Arc::new(WriteBuffer::new(c, 1 << 20));
        let t = TileAddr::new(1, 0, 1);
        w.commit(
            t,
            crate::format::sniff::ImageKind::Png,
            png(5),
            std::time::SystemTime::now(),
        )
        .unwrap();
        let fs = TreeFs::writable(w.clone());
        let timing = WatchTiming {
            every: Duration::from_secs(3600),
            idle_flush: Duration::ZERO,
        };
        let t0 = Instant::now();
        let mut watcher = Watcher::new(timing, t0);
        // The level folder is made unwritable by replacing it with a file: the flush fails.
        let level = d.path().join("_alllayers").join("L01");
        std::fs::write(&level, b"not a folder").unwrap();
        watcher.pass(&fs, &Recorder::default(), t0);
        assert_eq!(w.pending_tiles(), 1, "kept after a failed flush");
        std::fs::remove_file(&level).unwrap();
        watcher.pass(&fs, &Recorder::default(), t0 + Duration::from_millis(500));
        assert_eq!(w.pending_tiles(), 1, "no retry before 1 s");
        watcher.pass(&fs, &Recorder::default(), t0 + Duration::from_secs(1));
        assert_eq!(w.pending_tiles(), 0, "flushed at the retry");
        assert!(fs.cache().tile(t).unwrap().is_some());
    }
}
