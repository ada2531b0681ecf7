//! Real FUSE mounts for tests: a `bundlefs mount` child that is always unmounted (Drop), even
//! when the test fails; commands with time limits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MOUNT_WAIT: Duration = Duration::from_secs(15);

/// A running `bundlefs mount` in the foreground; Drop unmounts and reaps it.
pub struct Mounted {
    pub child: Option<Child>,
    pub mnt: PathBuf,
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
}

impl Mounted {
    pub fn start(cache: &Path, mnt: &Path, extra: &[&str]) -> Mounted {
        fs::create_dir_all(mnt).unwrap();
        let child = Command::new(super::bin())
            .arg("mount")
            .arg(cache)
            .arg(mnt)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("start bundlefs mount");
        let mut m = Mounted {
            child: Some(child),
            mnt: mnt.to_path_buf(),
        };
        let start = Instant::now();
        while !is_mounted(mnt) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("bundlefs mount exited early: {st}");
            }
            assert!(
                start.elapsed() < MOUNT_WAIT,
                "mount of {} did not appear",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if start.elapsed() > Duration::from_secs(10) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Runs `f` on another thread; fails the test (instead of hanging) after `secs`.
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("file-system call timed out (deadlock?)")
}

/// Runs a command with a time limit; returns (status ok, stdout, stderr).
pub fn sh(cmd: &str) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args(["120", "bash", "-c", cmd])
        .output()
        .expect("run bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn need(tool: &str) {
    let (ok, _, _) = sh(&format!("command -v {tool}"));
    assert!(
        ok,
        "{tool} is missing: run scripts/test.sh, which installs it"
    );
}

/// Runs `scripts/mapproxy-fixture.sh DIR MAXLEVEL png` (MapProxy-seeded v1/, v2/ and MapProxy's
/// arcgis export) into a scratch folder named after `tag`, removed when the test binary exits;
/// returns the folder.
pub fn seed_mapproxy_fixture(tag: &str, maxlevel: u8) -> PathBuf {
    need("mapproxy-util");
    let dir = super::scratch_dir(tag);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mapproxy-fixture.sh");
    let (ok, out, err) = sh(&format!("bash {script} {} {maxlevel} png", dir.display()));
    assert!(ok, "mapproxy fixture failed:\n{out}\n{err}");
    dir
}

/// Unmounts (`umount -l` as a last resort) on drop, for mounts made by mount(8) or a daemon.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
        }
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// `bundlefs` where mount.fuse3 looks for it (/bin/sh's default PATH: mount(8) passes none):
/// a symlink in /usr/local/sbin to the binary under test while any test holds an `OnPath`
/// (counted: tests run in parallel), removed when the last one drops.
pub struct OnPath(
    PathBuf,
    #[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>,
);

static ON_PATH_USERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// Held for reading by every [`OnPath`], for writing by a test that needs mount.fuse3 to find
/// the installed `/usr/bin/bundlefs` (no symlink in /usr/local/sbin meanwhile).
pub static MOUNT_HELPER: std::sync::RwLock<()> = std::sync::RwLock::new(());

impl OnPath {
    pub fn new() -> OnPath {
        let shared = MOUNT_HELPER.read().unwrap_or_else(|e| e.into_inner());
        let link = PathBuf::from("/usr/local/sbin/bundlefs");
        let mut users = ON_PATH_USERS.lock().unwrap();
        match fs::read_link(&link) {
            Ok(t) if t == Path::new(super::bin()) => {}
            Ok(t) => panic!(
                "{} points to {}, not the binary under test: remove it to run this test",
                link.display(),
                t.display()
            ),
            Err(_) if link.exists() => panic!(
                "{} exists and is no symlink: remove it to run this test",
                link.display()
            ),
            Err(_) => std::os::unix::fs::symlink(super::bin(), &link).unwrap(),
        }
        *users += 1;
        OnPath(link, shared)
    }
}

impl Drop for OnPath {
    fn drop(&mut self) {
        let mut users = ON_PATH_USERS.lock().unwrap();
        *users -= 1;
        if *users == 0 {
            let _ = fs::remove_file(&self.0);
        }
    }
}
