//! Counters as values: what a storage and a write buffer have done since they were made, as plain
//! numbers one snapshot reads at once. `bundlefs status`, the `/metrics` page and the log lines at
//! unmount and at a job's end all read these same values (the daemon gathers them in
//! `fs::Snapshot`), so they cannot disagree. The live counters behind them are atomics kept by
//! their owner (the object-store connection, the write buffer); a snapshot copies them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Requests of one object-store connection, as counted since it was opened. Local storages have
/// none (`Storage::counters` is None for them). Each field is a count of requests or bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounters {
    /// GET requests of bundles, indexes and tiles (range or whole), sidecars not included.
    pub gets: u64,
    /// HEAD requests.
    pub heads: u64,
    /// Successful PUTs of bundles (or of tile objects, in an exploded cache).
    pub puts: u64,
    /// Conditional PUTs refused because another writer changed the object first; each made the
    /// write read and decide again (a retry), up to the retry policy's tries.
    pub conflicts: u64,
    /// Bytes received in GET bodies (indexes, tiles, whole bundles, sidecars).
    pub bytes_down: u64,
    /// Bytes sent in PUT bodies, refused conditional PUTs included.
    pub bytes_up: u64,
    /// Bundle indexes read from the on-disk index cache (`--cache-dir`) instead of the store.
    pub disk_hits: u64,
    /// Tiles fetched ahead of their reads in a coalesced range GET (sequential reads).
    pub tiles_ahead: u64,
    /// GETs of tile-times sidecars (`<bundle>.times`; a 304 or 404 counts too).
    pub sidecar_gets: u64,
    /// Successful PUTs of tile-times sidecars.
    pub sidecar_puts: u64,
    /// Conditional PUTs of sidecars refused because another writer changed them first.
    pub sidecar_conflicts: u64,
}

impl StoreCounters {
    /// Every request sent to the store: GETs, HEADs and PUTs, of bundles, tiles and sidecars,
    /// refused conditional PUTs included.
    pub fn requests(&self) -> u64 {
        self.gets
            + self.heads
            + self.puts
            + self.conflicts
            + self.sidecar_gets
            + self.sidecar_puts
            + self.sidecar_conflicts
    }
}

impl std::ops::Add for StoreCounters {
    type Output = StoreCounters;

    /// Field by field: the counters of two connections (or of a layout and the store below it)
    /// as one.
    fn add(self, o: StoreCounters) -> StoreCounters {
        StoreCounters {
            gets: self.gets + o.gets,
            heads: self.heads + o.heads,
            puts: self.puts + o.puts,
            conflicts: self.conflicts + o.conflicts,
            bytes_down: self.bytes_down + o.bytes_down,
            bytes_up: self.bytes_up + o.bytes_up,
            disk_hits: self.disk_hits + o.disk_hits,
            tiles_ahead: self.tiles_ahead + o.tiles_ahead,
            sidecar_gets: self.sidecar_gets + o.sidecar_gets,
            sidecar_puts: self.sidecar_puts + o.sidecar_puts,
            sidecar_conflicts: self.sidecar_conflicts + o.sidecar_conflicts,
        }
    }
}

impl std::fmt::Display for StoreCounters {
    /// One line for the log: `N GETs (B bytes; T tiles fetched ahead), …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} GETs ({} bytes; {} tiles fetched ahead), {} HEADs, {} indexes from the disk \
             cache, {} PUTs of bundles ({} bytes sent), {} conflicts with other writers; \
             tile-times sidecars: {} GETs, {} PUTs, {} conflicts",
            self.gets,
            self.bytes_down,
            self.tiles_ahead,
            self.heads,
            self.disk_hits,
            self.puts,
            self.bytes_up,
            self.conflicts,
            self.sidecar_gets,
            self.sidecar_puts,
            self.sidecar_conflicts
        )
    }
}

/// The live side of [`StoreCounters`]: atomics an object-store connection bumps as it sends
/// requests (shared by every layout over that connection).
#[derive(Debug, Default)]
pub struct LiveStoreCounters {
    /// See [`StoreCounters::gets`].
    pub gets: AtomicU64,
    /// See [`StoreCounters::heads`].
    pub heads: AtomicU64,
    /// See [`StoreCounters::disk_hits`].
    pub disk_hits: AtomicU64,
    /// See [`StoreCounters::bytes_down`].
    pub bytes_down: AtomicU64,
    /// See [`StoreCounters::bytes_up`].
    pub bytes_up: AtomicU64,
    /// See [`StoreCounters::puts`].
    pub puts: AtomicU64,
    /// See [`StoreCounters::conflicts`].
    pub conflicts: AtomicU64,
    /// See [`StoreCounters::tiles_ahead`].
    pub tiles_ahead: AtomicU64,
    /// See [`StoreCounters::sidecar_gets`].
    pub sidecar_gets: AtomicU64,
    /// See [`StoreCounters::sidecar_puts`].
    pub sidecar_puts: AtomicU64,
    /// See [`StoreCounters::sidecar_conflicts`].
    pub sidecar_conflicts: AtomicU64,
}

impl LiveStoreCounters {
    /// The counters now.
    pub fn snapshot(&self) -> StoreCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreCounters {
            gets: g(&self.gets),
            heads: g(&self.heads),
            puts: g(&self.puts),
            conflicts: g(&self.conflicts),
            bytes_down: g(&self.bytes_down),
            bytes_up: g(&self.bytes_up),
            disk_hits: g(&self.disk_hits),
            tiles_ahead: g(&self.tiles_ahead),
            sidecar_gets: g(&self.sidecar_gets),
            sidecar_puts: g(&self.sidecar_puts),
            sidecar_conflicts: g(&self.sidecar_conflicts),
        }
    }
}

/// A write buffer's state and what its flushes came to since it was made.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferCounters {
    /// Changes (written or deleted tiles) waiting to be flushed.
    pub waiting_tiles: u64,
    /// Bytes of tile data waiting to be flushed.
    pub waiting_bytes: u64,
    /// The buffer's budget in bytes; past it the least recently written bundle is flushed.
    pub budget_bytes: u64,
    /// Flushes of one bundle's changes that were stored.
    pub flushes: u64,
    /// Flushes of one bundle's changes that failed (their tiles stay in the buffer and are tried
    /// again at the next flush).
    pub flush_failures: u64,
    /// The last failure's message, if any flush failed.
    pub last_error: Option<String>,
    /// Bundles whose last flush failed and that have not been stored since: their tiles wait in
    /// the buffer (0 once every failed bundle was stored by a later flush).
    #[serde(default)]
    pub failing_bundles: u64,
    /// Changes stored by flushes.
    pub tiles_flushed: u64,
    /// Bytes written into bundles by flushes.
    pub bytes_flushed: u64,
}

/// The live side of [`BufferCounters`]'s flush figures, kept by a write buffer.
#[derive(Debug, Default)]
pub struct LiveFlushCounters {
    flushes: AtomicU64,
    failures: AtomicU64,
    tiles: AtomicU64,
    bytes: AtomicU64,
    last_error: Mutex<Option<String>>,
    failing: Mutex<std::collections::BTreeSet<crate::format::BundleId>>,
}

impl LiveFlushCounters {
    /// Counts a stored flush of bundle `id`: `tiles` changes that wrote `bytes` bytes.
    pub fn stored(&self, id: crate::format::BundleId, tiles: u64, bytes: u64) {
        self.failing.lock().unwrap().remove(&id);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.tiles.fetch_add(tiles, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a failed flush of bundle `id` and keeps its message.
    pub fn failed(&self, id: crate::format::BundleId, message: String) {
        self.failing.lock().unwrap().insert(id);
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(message);
    }

    /// The flush figures now, with the waiting figures and budget given.
    pub fn snapshot(&self, waiting_tiles: u64, waiting_bytes: u64, budget: u64) -> BufferCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BufferCounters {
            waiting_tiles,
            waiting_bytes,
            budget_bytes: budget,
            flushes: g(&self.flushes),
            flush_failures: g(&self.failures),
            last_error: self.last_error.lock().unwrap().clone(),
            failing_bundles: self.failing.lock().unwrap().len() as u64,
            tiles_flushed: g(&self.tiles),
            bytes_flushed: g(&self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_copies_the_live_counters() {
        let live = LiveStoreCounters::default();
        live.gets.fetch_add(3, Ordering::Relaxed);
        live.puts.fetch_add(2, Ordering::Relaxed);
        live.conflicts.fetch_add(1, Ordering::Relaxed);
        live.sidecar_gets.fetch_add(4, Ordering::Relaxed);
        let s = live.snapshot();
        assert_eq!((s.gets, s.puts, s.conflicts, s.sidecar_gets), (3, 2, 1, 4));
        assert_eq!(s.requests(), 10);
        assert!(s.to_string().starts_with("3 GETs"), "{s}");

        let f = LiveFlushCounters::default();
        let (a, z) = (
            crate::format::TileAddr::new(3, 0, 0).bundle(),
            crate::format::TileAddr::new(9, 200, 0).bundle(),
        );
        f.stored(a, 5, 100);
        f.failed(z, "disk full".into());
        assert_eq!(f.snapshot(0, 0, 0).failing_bundles, 1);
        f.stored(a, 1, 10);
        assert_eq!(
            f.snapshot(0, 0, 0).failing_bundles,
            1,
            "another bundle stored"
        );
        f.stored(z, 0, 0);
        let b = f.snapshot(7, 70, 1000);
        assert_eq!(b.failing_bundles, 0, "the failed bundle stored since");
        assert_eq!((b.flushes, b.flush_failures), (3, 1));
        assert_eq!((b.tiles_flushed, b.bytes_flushed), (6, 110));
        assert_eq!(b.last_error.as_deref(), Some("disk full"));
        assert_eq!(
            (b.waiting_tiles, b.waiting_bytes, b.budget_bytes),
            (7, 70, 1000)
        );
    }
}
