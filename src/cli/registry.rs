//! Which bundlefs daemon serves which mount point, and how it ended: a small JSON record per mount
//! point in a state folder, written by the daemon when its mount is live (`serving`) and again
//! once it has flushed and is about to exit (`unmounted` or `failed` with the reason). `bundlefs
//! unmount` reads it to know which process to wait for and whether its last flush succeeded.
//!
//! The state folder is `/run/bundlefs` for root, else `$XDG_RUNTIME_DIR/bundlefs`, else
//! `$TMPDIR/bundlefs-UID`; `BUNDLEFS_STATE_DIR` overrides it. A record names its process by pid and
//! start time (field 22 of `/proc/PID/stat`, proc(5)), so a reused pid is not mistaken for it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How a daemon stands, as it last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The mount is live.
    Serving,
    /// Unmounted; storing the tiles still in its write buffer.
    Flushing,
    /// Unmounted, every buffered tile flushed into its bundle; the process is exiting.
    Unmounted,
    /// The session or the final flush failed (`Record::error` says why); the process is exiting.
    Failed,
}

/// One daemon's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    /// Start time of the process in clock ticks after boot (proc(5) `stat` field 22).
    pub start_time: u64,
    pub cache: PathBuf,
    pub mountpoint: PathBuf,
    pub status: Status,
    /// Why it failed (with `Status::Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the daemon holds tiles to store (a writable mount, or kept rendered tiles): only
    /// then can its death lose any. Records of older versions lack it and count as writing.
    #[serde(default = "writes_by_default")]
    pub writes: bool,
    /// Whether the mount is read-only (`-o ro`, the default of `bundlefs mount`).
    #[serde(default)]
    pub read_only: bool,
    /// When the daemon started serving, in seconds since the Unix epoch.
    #[serde(default)]
    pub started: u64,
    /// The daemon's control socket (`bundlefs status` asks it; [`socket_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

fn writes_by_default() -> bool {
    true
}

impl Record {
    /// A record of this process serving `cache` on `mountpoint`.
    pub fn this_process(cache: &Path, mountpoint: &Path) -> Record {
        let pid = std::process::id();
        Record {
            pid,
            start_time: start_time(pid).unwrap_or(0),
            cache: cache.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            status: Status::Serving,
            error: None,
            writes: true,
            read_only: true,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            socket: None,
        }
    }

    /// Whether the recorded process still runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        match process_state(self.pid) {
            Some((_, start)) if start != self.start_time => false,
            Some((state, _)) if state != 'Z' => true,
            // The leader thread shows Z as soon as it has exited, while the process's other
            // threads may still be ending (its exit is not over): alive until only it is left.
            Some(_) => other_threads_left(self.pid),
            None => false,
        }
    }
}

/// The folder holding the records (not created).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BUNDLEFS_STATE_DIR") {
        return PathBuf::from(d);
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/bundlefs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("bundlefs"),
        _ => std::env::temp_dir().join(format!("bundlefs-{uid}")),
    }
}

/// FNV-1a 64 of `s` (a fixed function: names made from it must not change between builds).
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The control socket of the daemon serving `mountpoint` (an absolute path): `ctl-HASH.sock` in
/// the state folder, a hash of the path, since a socket's path holds at most 107 bytes (unix(7)).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    state_dir().join(format!(
        "ctl-{:016x}.sock",
        fnv64(&mountpoint.to_string_lossy())
    ))
}

/// The record file of a mount point (an absolute path): its path with `%` and `/` escaped, so
/// the name reads back as the path; a path too long for one file name ends in a hash of it.
pub fn record_path(mountpoint: &Path) -> PathBuf {
    let s = mountpoint.to_string_lossy();
    let mut name = s.replace('%', "%25").replace('/', "%2F");
    if name.len() > 200 {
        let h = fnv64(&s);
        let cut = name.len() - 150;
        let cut = (cut..name.len())
            .find(|&i| name.is_char_boundary(i))
            .unwrap_or(cut);
        name = format!("{h:016x}-{}", &name[cut..]);
    }
    state_dir().join(format!("{name}.json"))
}

/// Writes `r` as the record of its mount point (whole or not at all: temp file, then rename).
pub fn write(r: &Record) -> anyhow::Result<()> {
    let path = record_path(&r.mountpoint);
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot write a mount record", dir.display()))?;
    serde_json::to_writer(&mut tmp, r)?;
    tmp.persist(&path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// The record of `mountpoint`, if there is one; a record that cannot be read is an error naming
/// its file.
pub fn read(mountpoint: &Path) -> anyhow::Result<Option<Record>> {
    let path = record_path(mountpoint);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{}: not a bundlefs mount record", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Removes records of ended daemons older than `age`: a mount unmounted by other means than
/// `bundlefs unmount` leaves its record (nobody asked for its end); `/run` is emptied at boot, and
/// each new daemon prunes the rest.
pub fn prune(age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(state_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > age));
        if !old || path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let ended = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .is_none_or(|r| !r.alive());
        if ended {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Removes the record of `mountpoint` (once its end has been reported).
pub fn remove(mountpoint: &Path) {
    let _ = std::fs::remove_file(record_path(mountpoint));
}

/// State letter and start time of process `pid`, from `/proc/PID/stat` (proc(5): the command
/// name, field 2, is in parentheses and may hold spaces, so fields are counted after the last `)`).
fn process_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Whether process `pid` has threads besides its leader (`/proc/PID/task` entries), as while a
/// multi-threaded process is still exiting.
fn other_threads_left(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| d.count() > 1)
}

fn start_time(pid: u32) -> Option<u64> {
    process_state(pid).map(|(_, s)| s)
}

/// A mount listed in `/proc/self/mountinfo`: its file-system type and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    /// A bundlefs mount: type `fuse.bundlefs`, or plain `fuse` (as root the kernel mounts without
    /// the subtype) with the `bundlefs:CACHE` source bundlefs gives its mounts.
    pub fn is_bundlefs(&self) -> bool {
        self.fstype == "fuse.bundlefs"
            || (self.fstype.starts_with("fuse") && self.source.starts_with("bundlefs:"))
    }
}

/// The mounts of this mount namespace, in `/proc/self/mountinfo` order, each with its mount
/// point (proc(5) `mountinfo`: field 5 is the mount point with space, tab, newline and backslash
/// written as octal escapes; after the ` - ` separator come the type and the source). Empty when
/// the file cannot be read.
fn mountinfo() -> Vec<(String, MountEntry)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mnt = unescape_octal(l.split(' ').nth(4)?);
            let (_, tail) = l.split_once(" - ")?;
            let mut t = tail.split(' ');
            let fstype = t.next()?.to_string();
            let source = unescape_octal(t.next().unwrap_or(""));
            Some((mnt, MountEntry { fstype, source }))
        })
        .collect()
}

/// Every bundlefs mount of this mount namespace ([`MountEntry::is_bundlefs`]), with its mount
/// point, in `/proc/self/mountinfo` order.
pub fn bundlefs_mounts() -> Vec<(PathBuf, MountEntry)> {
    mountinfo()
        .into_iter()
        .filter(|(_, e)| e.is_bundlefs())
        .map(|(m, e)| (PathBuf::from(m), e))
        .collect()
}

/// The topmost mount on `path` (absolute, canonical), if any ([`mountinfo`]'s last entry there).
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let want = path.to_str()?;
    mountinfo()
        .into_iter()
        .rev()
        .find(|(m, _)| m == want)
        .map(|(_, e)| e)
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_read_back_and_stay_short() {
        let p = record_path(Path::new("/srv/tiles%/mnt"));
        assert_eq!(p.file_name().unwrap(), "%2Fsrv%2Ftiles%25%2Fmnt.json");
        let long = format!("/{}", "a/".repeat(300));
        let q = record_path(Path::new(&long));
        assert!(q.file_name().unwrap().len() < 255);
        assert_ne!(q, record_path(Path::new(&format!("{long}b"))));
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let mut r = Record::this_process(Path::new("/c"), Path::new("/m"));
        assert!(r.start_time > 0);
        assert!(r.alive());
        r.start_time += 1;
        assert!(!r.alive(), "a reused pid is another process");
        let json = serde_json::to_string(&Record {
            status: Status::Failed,
            error: Some("disk full".into()),
            ..r.clone()
        })
        .unwrap();
        assert!(
            json.contains(r#""status":"failed","error":"disk full""#),
            "{json}"
        );
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (back.status, back.error.as_deref()),
            (Status::Failed, Some("disk full"))
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_octal(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert_eq!(
            mount_at(Path::new("/proc")).map(|m| m.fstype),
            Some("proc".into())
        );
    }
}
