//! Per-handle state of a mount: the listing each open folder handle reads from, and the bytes each
//! read handle of a writable mount saw at open. Handle numbers are allocated here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{DirEntry, FileBytes};

/// Marks the file handles of read snapshots (writable mounts), apart from the write handles
/// ([`super::write::WRITE_FH`]) and the handle 0 of read-only opens.
const SNAPSHOT_FH: u64 = 1 << 62;

/// Open folder handles and read snapshots.
pub struct Handles {
    next: AtomicU64,
    /// Folder handles: the listing kept from the handle's first readdir until its releasedir.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Read handles of writable mounts: the bytes the file held at open.
    snapshots: Mutex<HashMap<u64, Arc<FileBytes>>>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            // Handle 1 is WRITE_FH: folder handles start above it.
            next: AtomicU64::new(2),
            dirs: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(HashMap::new()),
        }
    }
}

impl Handles {
    /// A new folder handle (its listing is made at its first readdir).
    pub fn open_dir(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The listing of folder handle `fh`: the one kept since its first readdir, else `make()`'s,
    /// kept from now on, so a listing read in several replies is one consistent snapshot.
    pub fn listing<E>(
        &self,
        fh: u64,
        make: impl FnOnce() -> Result<Vec<DirEntry>, E>,
    ) -> Result<Arc<Vec<DirEntry>>, E> {
        if let Some(l) = self.dirs.lock().unwrap().get(&fh) {
            return Ok(l.clone());
        }
        let l = Arc::new(make()?);
        Ok(self.dirs.lock().unwrap().entry(fh).or_insert(l).clone())
    }

    /// Forgets folder handle `fh` and its listing.
    pub fn release_dir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// A new read handle holding `bytes` until it is released.
    pub fn open_snapshot(&self, bytes: FileBytes) -> u64 {
        let fh = SNAPSHOT_FH | self.next.fetch_add(1, Ordering::Relaxed);
        self.snapshots.lock().unwrap().insert(fh, Arc::new(bytes));
        fh
    }

    /// Whether `fh` is a read snapshot's handle.
    pub fn is_snapshot(fh: u64) -> bool {
        fh & SNAPSHOT_FH != 0
    }

    /// The bytes of snapshot handle `fh`, or `None` if it is not open.
    pub fn snapshot(&self, fh: u64) -> Option<Arc<FileBytes>> {
        self.snapshots.lock().unwrap().get(&fh).cloned()
    }

    /// Forgets snapshot handle `fh`.
    pub fn release_snapshot(&self, fh: u64) {
        self.snapshots.lock().unwrap().remove(&fh);
    }

    /// How many folder handles and snapshots are open (for tests and leak checks).
    pub fn open_counts(&self) -> (usize, usize) {
        (
            self.dirs.lock().unwrap().len(),
            self.snapshots.lock().unwrap().len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Attr, Kind};

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            attr: Attr {
                ino: 9,
                kind: Kind::File,
                size: 1,
                mtime: std::time::UNIX_EPOCH,
                nlink: 1,
            },
        }
    }

    #[test]
    fn a_listing_is_made_once_per_handle_and_dropped_at_release() {
        let h = Handles::default();
        let (a, b) = (h.open_dir(), h.open_dir());
        assert_ne!(a, b);
        assert!(a > super::super::write::WRITE_FH && !Handles::is_snapshot(a));
        let mut made = 0;
        let mut make = |n: &str| {
            made += 1;
            Ok::<_, ()>(vec![entry(n)])
        };
        let first = h.listing(a, || make("x")).unwrap();
        // Later readdirs of the handle see the same listing, even if the folder changed.
        let again = h.listing(a, || make("y")).unwrap();
        assert_eq!(again[0].name, "x");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(h.listing(b, || make("z")).unwrap()[0].name, "z");
        assert_eq!(made, 2);
        // An error makes no listing: the next readdir tries again.
        assert!(h
            .listing(a + 100, || Err::<Vec<DirEntry>, _>("io"))
            .is_err());
        assert_eq!(h.open_counts(), (2, 0));
        h.release_dir(a);
        h.release_dir(b);
        assert_eq!(h.open_counts(), (0, 0));
    }

    #[test]
    fn snapshots_keep_the_bytes_seen_at_open() {
        let h = Handles::default();
        let fh = h.open_snapshot(FileBytes::Shared(Arc::new(b"tile v1".to_vec())));
        assert!(Handles::is_snapshot(fh));
        assert_ne!(fh, super::super::write::WRITE_FH);
        assert_eq!(h.snapshot(fh).unwrap().bytes(), b"tile v1");
        let other = h.open_snapshot(FileBytes::Shared(Arc::new(b"tile v2".to_vec())));
        assert_ne!(fh, other);
        h.release_snapshot(fh);
        assert!(h.snapshot(fh).is_none());
        assert_eq!(h.snapshot(other).unwrap().bytes(), b"tile v2");
        h.release_snapshot(other);
        assert_eq!(h.open_counts(), (0, 0));
    }
}
