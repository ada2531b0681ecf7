//! Per-bundle writer lock: an exclusive `flock` on `<bundle>.lck`, the same file MapProxy locks, so
//! bundlefs, MapProxy seeding and other bundlefs processes never write one bundle at once.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// A held lock; released on drop (closing the descriptor releases the flock).
#[derive(Debug)]
pub struct BundleLock {
    _file: File,
    path: PathBuf,
}

impl BundleLock {
    /// Takes the lock, waiting up to `timeout` for another holder to let go.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<BundleLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .at(path)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(BundleLock {
                    _file: file,
                    path: path.to_path_buf(),
                });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK)
                && err.raw_os_error() != Some(libc::EINTR)
            {
                return Err(Error::io(path, err));
            }
            if start.elapsed() >= timeout {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
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

    pub fn path(&self) -> &Path {
        &self.path
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
        assert!(BundleLock::try_acquire(&p).unwrap().is_some());
    }
}
