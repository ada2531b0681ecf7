//! Per-bundle writer lock: an exclusive `flock` on `<bundle>.lck`, the same file MapProxy locks, so
//! bundlefs, MapProxy seeding and other bundlefs processes never write one bundle at once.
//!
//! MapProxy's lock helper may delete the `.lck` file when it unlocks. A writer that opened the old
//! file and then got its flock would hold a lock on a file no one else will ever open, while the
//! next writer creates and locks a new one: two holders. So after taking the flock the holder
//! checks that the path still names the very file it locked (same device and inode) and, if not,
//! lets go and starts again with the file now at the path. bundlefs removes the file itself when it
//! lets go (so exported caches hold no `.lck` files), under the same rule.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How long a writer waits for a bundle lock before it says so (a `warn` log line).
pub const WAIT_NOTICE: Duration = Duration::from_secs(3);

/// A held lock; released on drop (closing the descriptor releases the flock).
#[derive(Debug)]
pub struct BundleLock {
    _file: File,
    path: PathBuf,
}

impl BundleLock {
    /// Takes the lock, waiting up to `timeout` for another holder to let go (a warning naming the
    /// lock file after [`WAIT_NOTICE`] of waiting, so a job that waits says why it is idle).
    pub fn acquire(path: &Path, timeout: Duration) -> Result<BundleLock> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut told = false;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .at(path)?;
            loop {
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                {
                    Ok(()) => break,
                    Err(e)
                        if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
                    Err(e) => return Err(Error::io(path, e.into())),
                }
                if start.elapsed() >= timeout {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                        waited_ms: start.elapsed().as_millis() as u64,
                    });
                }
                if !told && start.elapsed() >= WAIT_NOTICE {
                    told = true;
                    tracing::warn!(
                        "waiting for the lock on {} held by another process (up to {} s)",
                        path.display(),
                        timeout.as_secs()
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            if still_named(&file, path)? {
                return Ok(BundleLock {
                    _file: file,
                    path: path.to_path_buf(),
                });
            }
            // The file was unlinked or replaced while we waited: the lock is worthless.
            tracing::debug!(
                "{}: lock file replaced while waiting; retrying",
                path.display()
            );
        }
    }

    /// Tries once; Ok(None) if another writer holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<BundleLock>> {
        match Self::acquire(path, Duration::ZERO) {
            Ok(l) => Ok(Some(l)),
            Err(Error::Locked { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BundleLock {
    /// Removes the lock file while the lock is still held (the descriptor closes after this), so
    /// no `.lck` files are left beside the bundles (ArcGIS leaves none). A writer that opened the
    /// file meanwhile and gets the flock next finds the path no longer names it and starts over
    /// (`acquire`), as after MapProxy's unlock, which deletes the file too.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `path` still names the file `file` was opened from (same device and inode).
fn still_named(file: &File, path: &Path) -> Result<bool> {
    let held = file.metadata().at(path)?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_times_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("R0000C0000.lck");
        let held = BundleLock::acquire(&p, Duration::from_secs(1)).unwrap();
        let e = BundleLock::acquire(&p, Duration::from_millis(30)).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        assert!(BundleLock::try_acquire(&p).unwrap().is_none());
        drop(held);
        assert!(!p.exists(), "the lock file goes with the lock");
        assert!(BundleLock::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn a_lock_file_deleted_by_its_holder_is_not_held_twice() {
        // MapProxy's unlock may delete the .lck: a waiter that locked the deleted file must not
        // think it holds the bundle while a newcomer locks the new file at the same path.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("R0000C0000.lck");
        let first = BundleLock::acquire(&p, Duration::from_secs(1)).unwrap();
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || BundleLock::acquire(&p2, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        // The holder unlocks MapProxy's way: delete, then close.
        std::fs::remove_file(&p).unwrap();
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        // The waiter's lock must be on the file now at the path, so a newcomer cannot take it.
        assert!(BundleLock::try_acquire(&p).unwrap().is_none());
        drop(second);
        assert!(BundleLock::try_acquire(&p).unwrap().is_some());
    }
}
