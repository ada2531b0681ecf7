//! One snapshot of a mount's counters: what the tree answered, its write buffer, its storage's
//! requests and its renderer, read at once ([`Snapshot`], `TreeFs::snapshot`). `bundlefs status`
//! and the `/metrics` page read this one value, and the log line at unmount reads the same
//! counters, so they never disagree.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::cache::counters::{BufferCounters, StoreCounters};
use crate::render::renderer::RenderStats;

/// What the tree answered since the mount began.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeCounters {
    /// Tiles served: reads of a tile file from its start (one per open on a writable mount, one
    /// per read of the first page on a read-only one; pages the kernel keeps are not asked
    /// again, so not counted).
    pub tiles_read: u64,
    /// Bytes of tiles handed to the kernel.
    pub bytes_read: u64,
    /// Tiles written through the mount and accepted into the write buffer.
    pub tiles_written: u64,
    /// Tiles written through the mount and refused (not a tile the cache can store, outside the
    /// tiling scheme, a failed merge), and files refused for their name (no tile's, e.g. a
    /// `metadata.json`); each was reported to the writing program and logged.
    pub writes_refused: u64,
}

/// The live side of [`TreeCounters`].
#[derive(Debug, Default)]
pub(crate) struct LiveTree {
    tiles_read: AtomicU64,
    bytes_read: AtomicU64,
    tiles_written: AtomicU64,
    writes_refused: AtomicU64,
}

impl LiveTree {
    /// A read of a tile file at `offset` that returned `bytes` bytes.
    pub(crate) fn read(&self, offset: u64, bytes: usize) {
        if offset == 0 {
            self.tiles_read.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A tile written and accepted (`true`) or refused (`false`).
    pub(crate) fn written(&self, accepted: bool) {
        let c = if accepted {
            &self.tiles_written
        } else {
            &self.writes_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TreeCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TreeCounters {
            tiles_read: g(&self.tiles_read),
            bytes_read: g(&self.bytes_read),
            tiles_written: g(&self.tiles_written),
            writes_refused: g(&self.writes_refused),
        }
    }
}

/// Every counter of a mount at one moment. A part is None where the mount has no such thing (no
/// write buffer on a read-only mount without kept renders, no requests for a local cache, no
/// renderer without `--source`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the tree answered.
    pub tree: TreeCounters,
    /// The write buffer (of a writable mount, or where kept rendered tiles wait).
    pub buffer: Option<BufferCounters>,
    /// The object store's requests (a cache in a store).
    pub store: Option<StoreCounters>,
    /// The renderer's counters (`--source`).
    pub render: Option<RenderStats>,
}
