//! Files bundlefs writes into a cache folder: one way to replace a file atomically (temporary file
//! in the same folder, fsync, rename, fsync of the folder) with the permissions other programs and
//! accounts sharing the cache expect.
//!
//! Modes: a new file gets what `cp` gives a new file, `0666 & !umask`; a file that replaces another
//! keeps the replaced file's permission bits, and, when bundlefs runs as root, its owner and group
//! (as `cp` onto an existing file keeps them). A temporary file alone would be `0600`, which locks
//! out ArcGIS Server, web servers or MapProxy running under another account.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, IoContext, Result};

/// Prefix of the temporary files: readers that list a cache folder skip names starting with `.`.
pub const TEMP_PREFIX: &str = ".bundlefs-";

/// The process umask, read from `/proc/self/status` (Linux ≥ 4.7) so that it is never changed,
/// not even for an instant (changing it to read it races with other threads creating files).
/// Falls back to `0o022`, the common default, where the line is missing.
pub fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// The permission bits `cp` gives a new regular file: `0666 & !umask`.
pub fn new_file_mode() -> u32 {
    0o666 & !umask()
}

/// A file being written in place of `dest`: bytes go to a temporary file beside it, which
/// [`AtomicFile::commit`] renames over `dest`. Dropped uncommitted, the temporary file is removed
/// and `dest` is untouched.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    durable: bool,
}

impl AtomicFile {
    /// Starts replacing (or creating) `dest`. The temporary file already carries the final
    /// permissions (see the module docs). `durable`: fsync the file before the rename and the
    /// folder after it. Errors name the folder or file that failed.
    pub fn create(dest: &Path, durable: bool) -> Result<AtomicFile> {
        match fs::metadata(dest) {
            Ok(old) => Self::start(dest, durable, Some(&old)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::start(dest, durable, None),
            Err(e) => Err(Error::io(dest, e)),
        }
    }

    /// As [`AtomicFile::create`] for a `dest` the caller knows to be absent (it has just listed
    /// the folder): no `stat` of `dest`, and the file gets a new file's mode. Should another
    /// process create `dest` meanwhile, the commit replaces it, as `create` would have.
    pub fn create_new(dest: &Path, durable: bool) -> Result<AtomicFile> {
        Self::start(dest, durable, None)
    }

    fn start(dest: &Path, durable: bool, old: Option<&fs::Metadata>) -> Result<AtomicFile> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut b = tempfile::Builder::new();
        b.prefix(TEMP_PREFIX);
        let tmp = match old {
            Some(old) => {
                let tmp = b.tempfile_in(dir).map_err(os_error).at(dir)?;
                let f = tmp.as_file();
                f.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
                    .at(tmp.path())?;
                if rustix::process::geteuid().is_root() {
                    std::os::unix::fs::fchown(f, Some(old.uid()), Some(old.gid())).at(tmp.path())?;
                }
                tmp
            }
            // Created with 0666: the kernel applies the umask at open, as for `cp` (no fchmod).
            None => b
                .permissions(fs::Permissions::from_mode(0o666))
                .tempfile_in(dir)
                .map_err(os_error)
                .at(dir)?,
        };
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            durable,
        })
    }

    /// The temporary file, to write or seek in.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temporary file's path (for messages).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The file this one will replace.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Makes the new bytes the file at `dest`: fsync (if durable), rename, fsync the folder.
    pub fn commit(self) -> Result<()> {
        if self.durable {
            self.tmp.as_file().sync_all().at(self.tmp.path())?;
        }
        let dest = self.dest;
        self.tmp
            .persist(&dest)
            .map_err(|e| Error::io(&dest, e.error))?;
        if self.durable {
            sync_dir(dest.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// The system's error under one of `tempfile`'s, whose text also names the random temporary
/// path: messages name the folder instead (`DIR: No such file or directory`).
fn os_error(e: std::io::Error) -> std::io::Error {
    // tempfile's error is private; its text is "{system error} at path {path:?}".
    let text = e.to_string();
    match text.rfind(" at path \"") {
        Some(cut) if e.raw_os_error().is_none() => std::io::Error::new(e.kind(), &text[..cut]),
        _ => e,
    }
}

/// Writes `bytes` to `path` atomically with [`AtomicFile`] (permissions as its module docs say).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut f = AtomicFile::create(path, durable)?;
    f.file().write_all(bytes).at(path)?;
    f.commit()
}

/// [`write_atomic`] for a `path` the caller knows to be absent ([`AtomicFile::create_new`]).
pub fn write_atomic_new(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut f = AtomicFile::create_new(path, durable)?;
    f.file().write_all(bytes).at(path)?;
    f.commit()
}

/// Flushes the file system holding `path` (one syncfs(2) instead of an fsync per file).
/// Errors: `path` cannot be opened, or the sync failed, naming it.
pub fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).at(path)?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io(path, e.into()))
}

/// fsyncs a folder so a rename or a new name in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn new_files_get_cp_mode_and_replaced_files_keep_theirs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("conf.xml");
        write_atomic(&p, b"one", true).unwrap();
        assert_eq!(mode(&p), 0o666 & !umask());
        assert_ne!(mode(&p), 0o600, "a temp file's mode leaked");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o640);
    }

    #[test]
    fn uncommitted_file_leaves_the_old_one_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.bundle");
        write_atomic(&p, b"old", false).unwrap();
        let mut f = AtomicFile::create(&p, false).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_folder_is_named_without_the_temporary_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nodir/x.xml");
        let e = write_atomic(&p, b"x", false).unwrap_err().to_string();
        assert!(!e.contains(TEMP_PREFIX), "{e}");
        assert!(e.contains("nodir"), "{e}");
    }

    #[test]
    fn umask_is_read_without_changing_it() {
        let before = fs::read_to_string("/proc/self/status").unwrap();
        let m = umask();
        assert!(m <= 0o777);
        let line = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("Umask:"))
                .map(String::from)
        };
        assert_eq!(
            line(&before),
            line(&fs::read_to_string("/proc/self/status").unwrap())
        );
    }
}
