//! The write buffer: tiles written (or deleted) wait in memory under a byte budget, are visible to
//! reads at once, and reach the bundles grouped per bundle (one lock, one append, one index update)
//! when the budget evicts them, or on `flush_bundle`/`flush_all` (fsync, idle timer, unmount).
//! An entry leaves the buffer only once its bundle write succeeded; a failed flush keeps it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::Cache;
use crate::format::{BundleId, TileAddr};
use crate::Result;

/// A change waiting for its bundle.
#[derive(Debug, Clone)]
pub enum Pending {
    Put(Arc<Vec<u8>>),
    Delete,
}

impl Pending {
    fn bytes(&self) -> usize {
        match self {
            Pending::Put(b) => b.len(),
            Pending::Delete => 0,
        }
    }
    fn same(&self, o: &Pending) -> bool {
        match (self, o) {
            (Pending::Put(a), Pending::Put(b)) => Arc::ptr_eq(a, b),
            (Pending::Delete, Pending::Delete) => true,
            _ => false,
        }
    }
}

struct Inner {
    tiles: LruCache<TileAddr, Pending>,
    bytes: usize,
}

/// Buffered writes in front of a [`Cache`].
pub struct WriteBuffer {
    cache: Arc<Cache>,
    budget: usize,
    inner: Mutex<Inner>,
    /// One flush at a time, so two flushes never write the same tiles twice.
    flushing: Mutex<()>,
}

/// Counters of what was flushed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    pub bundles: usize,
    pub tiles: usize,
    pub bytes_written: u64,
}

impl WriteBuffer {
    pub fn new(cache: Arc<Cache>, budget_bytes: usize) -> Self {
        WriteBuffer {
            cache,
            budget: budget_bytes,
            inner: Mutex::new(Inner {
                tiles: LruCache::unbounded(),
                bytes: 0,
            }),
            flushing: Mutex::new(()),
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Bytes of tile data waiting.
    pub fn pending_bytes(&self) -> usize {
        self.inner.lock().unwrap().bytes
    }

    /// Number of changes waiting.
    pub fn pending_tiles(&self) -> usize {
        self.inner.lock().unwrap().tiles.len()
    }

    /// The waiting change for a tile, if any (reads consult this before the bundles).
    pub fn get(&self, t: TileAddr) -> Option<Pending> {
        self.inner.lock().unwrap().tiles.peek(&t).cloned()
    }

    /// Stores a tile (visible at once); flushes least recently written bundles past the budget.
    pub fn put(&self, t: TileAddr, bytes: Vec<u8>) -> Result<()> {
        self.record(t, Pending::Put(Arc::new(bytes)))
    }

    /// Removes a tile (visible at once).
    pub fn delete(&self, t: TileAddr) -> Result<()> {
        self.record(t, Pending::Delete)
    }

    fn record(&self, t: TileAddr, p: Pending) -> Result<()> {
        {
            let mut g = self.inner.lock().unwrap();
            g.bytes += p.bytes();
            if let Some(old) = g.tiles.put(t, p) {
                g.bytes -= old.bytes();
            }
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
            g.tiles
                .iter()
                .filter(|(t, _)| t.bundle() == id)
                .map(|(t, p)| (*t, p.clone()))
                .collect()
        };
        self.write_batch(&batch)
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
            let s = self.write_batch(batch)?;
            total.bundles += s.bundles;
            total.tiles += s.tiles;
            total.bytes_written += s.bytes_written;
        }
        Ok(total)
    }

    fn write_batch(&self, batch: &[(TileAddr, Pending)]) -> Result<FlushStats> {
        if batch.is_empty() {
            return Ok(FlushStats::default());
        }
        let puts: Vec<(TileAddr, &[u8])> = batch
            .iter()
            .filter_map(|(t, p)| match p {
                Pending::Put(b) => Some((*t, b.as_slice())),
                Pending::Delete => None,
            })
            .collect();
        let deletes: Vec<TileAddr> = batch
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Delete))
            .map(|(t, _)| *t)
            .collect();
        let st = self.cache.write_tiles(&puts)?;
        if !deletes.is_empty() {
            self.cache.delete_tiles(&deletes)?;
        }
        // Drop what was written, unless it was replaced meanwhile.
        let mut g = self.inner.lock().unwrap();
        for (t, p) in batch {
            if g.tiles.peek(t).is_some_and(|now| now.same(p)) {
                g.tiles.pop(t);
                g.bytes -= p.bytes();
            }
        }
        Ok(FlushStats {
            bundles: 1,
            tiles: batch.len(),
            bytes_written: st.bytes_written,
        })
    }
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
        assert!(matches!(b.get(t), Some(Pending::Put(v)) if v.len() == 100));
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
}
