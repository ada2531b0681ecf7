//! Real kernel mounts of `bundlefs mount` (needs /dev/fuse and root or fuse3): walks, cat, cp -r and
//! rsync -a out of the mount compared with MapProxy's own exploded export; ENOENT, EIO isolation,
//! changes by another writer, daemon mode and signals. Every mount is undone by a guard, also on failure.

use crate::support::mount::{is_mounted, need, sh, within, Mounted};

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

/// MapProxy-seeded caches (levels 0-3, PNG): v1/, v2/ and MapProxy's arcgis export, built once.
fn mapproxy_fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::support::mount::seed_mapproxy_fixture("mount-mp", 3))
}

fn diff_trees(a: &Path, b: &Path) {
    let (ok, out, err) = sh(&format!("diff -r {} {}", a.display(), b.display()));
    assert!(
        ok,
        "trees differ ({} vs {}):\n{out}{err}",
        a.display(),
        b.display()
    );
}

fn sample(dir: &Path) -> PathBuf {
    let c = dir.join("sample");
    let st = Command::new(crate::support::bin())
        .arg("sample")
        .arg(&c)
        .arg("--levels")
        .arg("0-3")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    c
}

#[test]
fn mapproxy_caches_mount_as_mapproxys_own_exploded_export() {
    need("fusermount3");
    need("rsync");
    let fx = mapproxy_fixture();
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["v2", "v1"] {
        let m = Mounted::start(&fx.join(kind), &tmp.path().join(format!("mnt-{kind}")), &[]);
        // Walk and cat every file.
        let (ok, out, err) = sh(&format!("find {} -type f | wc -l", m.mnt.display()));
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "85", "tiles in levels 0-3 of {kind}");
        let (ok, _, err) = sh(&format!(
            "find {} -type f -exec cat {{}} + >/dev/null",
            m.mnt.display()
        ));
        assert!(ok, "cat: {err}");
        diff_trees(&m.mnt, &fx.join("arcgis"));
        // cp -r and rsync -a out of the mount give the same tree.
        let cp = tmp.path().join(format!("cp-{kind}"));
        let (ok, _, err) = sh(&format!("cp -r {} {}", m.mnt.display(), cp.display()));
        assert!(ok, "cp: {err}");
        diff_trees(&cp, &fx.join("arcgis"));
        let rs = tmp.path().join(format!("rsync-{kind}"));
        let (ok, _, err) = sh(&format!("rsync -a {}/ {}/", m.mnt.display(), rs.display()));
        assert!(ok, "rsync: {err}");
        diff_trees(&rs, &fx.join("arcgis"));
        // A second rsync finds nothing to send (sizes and mtimes stable).
        let (ok, out, err) = sh(&format!(
            "rsync -a --stats {}/ {}/",
            m.mnt.display(),
            rs.display()
        ));
        assert!(ok, "{err}");
        assert!(
            out.contains("Number of regular files transferred: 0"),
            "{out}"
        );
    }
}

#[test]
fn arcgis_layout_conf_files_inodes_and_enoent() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let cache = sample(tmp.path());
    let mnt = tmp.path().join("mnt");
    let ino_first;
    {
        let m = Mounted::start(&cache, &mnt, &[]);
        let conf = within(10, {
            let p = m.path("conf.xml");
            move || fs::read_to_string(p).unwrap()
        });
        let orig = fs::read_to_string(cache.join("conf.xml")).unwrap();
        assert_eq!(
            conf,
            orig.replace(
                "esriMapCacheStorageModeCompactV2",
                "esriMapCacheStorageModeExploded"
            ),
            "conf.xml changes only in StorageFormat"
        );
        assert_eq!(
            fs::read(m.path("conf.cdi")).unwrap(),
            fs::read(cache.join("conf.cdi")).unwrap()
        );
        let tile = m.path("_alllayers/L02/R00000001/C00000003.png");
        let c = Cache::open(&cache).unwrap();
        let want = c.tile(TileAddr::new(2, 1, 3)).unwrap().unwrap().to_vec();
        assert_eq!(fs::read(&tile).unwrap(), want);
        let md = fs::metadata(&tile).unwrap();
        assert_eq!(md.len(), want.len() as u64);
        assert_eq!(md.nlink(), 1);
        assert_eq!(md.mode() & 0o777, 0o444);
        ino_first = md.ino();
        // Same inode on a second lookup, and via find -inum.
        assert_eq!(fs::metadata(&tile).unwrap().ino(), ino_first);
        let (ok, out, _) = sh(&format!("find {} -inum {ino_first}", m.mnt.display()));
        assert!(
            ok && out.trim().ends_with("L02/R00000001/C00000003.png"),
            "{out}"
        );
        // Link counts of folders: 2 + subfolders, except level folders: 1 ("unknown", so a
        // stat of a level never reads all its bundle indexes); rows hold no folders.
        assert_eq!(fs::metadata(m.path("_alllayers")).unwrap().nlink(), 2 + 4);
        assert_eq!(fs::metadata(m.path("_alllayers/L03")).unwrap().nlink(), 1);
        assert_eq!(
            fs::metadata(m.path("_alllayers/L03/R00000002"))
                .unwrap()
                .nlink(),
            2
        );
        // Names outside the cache.
        for bad in [
            "_alllayers/L09",
            "_alllayers/L2",
            "_alllayers/L02/R00000009",
            "_alllayers/L02/R0000000g",
            "_alllayers/L02/R00000001/C00000003.jpg",
            "_alllayers/L02/R00000001/C00000003.PNG",
            "_alllayers/L02/R00000001/C00000009.png",
            "_alllayers/L02/R00000001/../../L77",
            "nothing.txt",
        ] {
            let e = fs::metadata(m.path(bad)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{bad}: {e}");
        }
        // Read-only: writes are refused.
        let e = fs::OpenOptions::new().write(true).open(&tile).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)),
            "{e}"
        );
        let e = fs::write(m.path("_alllayers/L02/R00000001/C0000000a.png"), b"x").unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)),
            "{e}"
        );
    }
    assert!(!is_mounted(&mnt));
    // The inode survives a remount.
    let m = Mounted::start(&cache, &mnt, &[]);
    assert_eq!(
        fs::metadata(m.path("_alllayers/L02/R00000001/C00000003.png"))
            .unwrap()
            .ino(),
        ino_first
    );
}

#[test]
fn jpeg_cache_shows_jpg_files() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let m = Mounted::start(
        &crate::support::esri_sample_cache(),
        &tmp.path().join("mnt"),
        &[],
    );
    let (ok, out, _) = sh(&format!(
        "cd {} && find _alllayers -type f | sort",
        m.mnt.display()
    ));
    assert!(ok);
    let files: Vec<&str> = out.lines().collect();
    assert_eq!(files.len(), 21);
    assert!(files.iter().all(|f| f.ends_with(".jpg")), "{files:?}");
    let img = image::open(m.path("_alllayers/L01/R00000000/C00000001.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256));
}

#[test]
fn a_corrupt_bundle_gives_eio_for_its_own_tiles_only() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let cache = sample(tmp.path());
    // L02: point one index entry (row 1, col 2) past the end of the file.
    let b2 = cache.join("_alllayers/L02/R0000C0000.bundle");
    let mut bytes = fs::read(&b2).unwrap();
    let pos = 64 + 8 * (128 + 2);
    let bad = (1u64 << 40) * 100 + (bytes.len() as u64 + 1000);
    bytes[pos..pos + 8].copy_from_slice(&bad.to_le_bytes());
    fs::write(&b2, &bytes).unwrap();
    // L03: a header that is not a V2 bundle.
    let b3 = cache.join("_alllayers/L03/R0000C0000.bundle");
    let mut bytes = fs::read(&b3).unwrap();
    bytes[0] = 9;
    fs::write(&b3, &bytes).unwrap();

    let m = Mounted::start(&cache, &tmp.path().join("mnt"), &[]);
    let e = within(10, {
        let p = m.path("_alllayers/L02/R00000001/C00000002.png");
        move || fs::read(p).unwrap_err()
    });
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Its neighbours in the same bundle and other levels still read.
    assert!(!fs::read(m.path("_alllayers/L02/R00000001/C00000001.png"))
        .unwrap()
        .is_empty());
    assert!(!fs::read(m.path("_alllayers/L01/R00000000/C00000000.png"))
        .unwrap()
        .is_empty());
    let e = fs::read_dir(m.path("_alllayers/L03"))
        .map(|d| d.count())
        .err();
    let e2 = fs::read(m.path("_alllayers/L03/R00000000/C00000000.png")).unwrap_err();
    assert!(
        e.is_some_and(|e| e.raw_os_error() == Some(libc::EIO))
            || e2.raw_os_error() == Some(libc::EIO),
        "L03 must fail with EIO: {e2}"
    );
}

#[test]
fn changes_by_another_writer_are_seen() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let cache = sample(tmp.path());
    let m = Mounted::start(&cache, &tmp.path().join("mnt"), &["--recheck", "0.2"]);
    let tile = m.path("_alllayers/L01/R00000001/C00000001.png");
    let before = fs::read(&tile).unwrap();
    // Another writer (here: the library, as MapProxy would) replaces a tile and adds one.
    let c = Cache::open(&cache).unwrap();
    let new_tile = fs::read(m.path("_alllayers/L00/R00000000/C00000000.png")).unwrap();
    c.write_tiles(&[
        (TileAddr::new(1, 1, 1), &new_tile),
        (TileAddr::new(3, 0, 9), &new_tile),
    ])
    .unwrap();
    let start = Instant::now();
    loop {
        let now = fs::read(&tile).unwrap();
        if now == new_tile {
            break;
        }
        assert_eq!(now, before, "a torn or wrong tile was served");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "change not seen through the mount"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new tile at L03 row 0 col 9 shows up in its (cached) row listing too.
    let start = Instant::now();
    loop {
        let names: Vec<String> = fs::read_dir(m.path("_alllayers/L03/R00000000"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        if names.iter().any(|n| n == "C00000009.png") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new tile not listed: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read(m.path("_alllayers/L03/R00000000/C00000009.png")).unwrap(),
        new_tile
    );
}

#[test]
fn daemon_mode_returns_when_live_and_sigterm_unmounts() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let cache = sample(tmp.path());
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("timeout")
        .arg("30")
        .arg(crate::support::bin())
        .args(["mount", "--daemon"])
        .arg(&cache)
        .arg(&mnt)
        .args(["-o", "ro,default_permissions"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Live as soon as the command returned.
    let guard = Mounted {
        child: None,
        mnt: mnt.clone(),
    };
    assert!(is_mounted(&mnt));
    let mut f = fs::File::open(mnt.join("_alllayers/L00/R00000000/C00000000.png")).unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    drop(f);
    assert!(buf.starts_with(b"\x89PNG"));
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("pid: "))
        .and_then(|p| p.trim().parse().ok())
        .expect("daemon prints its pid");
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while is_mounted(&mnt) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGTERM did not unmount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(guard);
    // A bad option fails before anything is mounted, with a clear message.
    let out = Command::new(crate::support::bin())
        .args(["mount", "--daemon"])
        .arg(&cache)
        .arg(&mnt)
        .args(["-o", "bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    assert!(!is_mounted(&mnt));
}

#[test]
fn mount_helper_takes_mount8_arguments() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let cache = sample(tmp.path());
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // mount(8) runs /sbin/mount.fuse.bundlefs SRC DIR -o OPTS for `mount -t fuse.bundlefs`.
    let helper = tmp.path().join("mount.fuse.bundlefs");
    std::os::unix::fs::symlink(crate::support::bin(), &helper).unwrap();
    let out = Command::new("timeout")
        .arg("30")
        .arg(&helper)
        .arg(&cache)
        .arg(&mnt)
        .args(["-o", "ro,noauto,nofail", "-n"])
        .output()
        .unwrap();
    let _guard = Mounted {
        child: None,
        mnt: mnt.clone(),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(&mnt),
        "the helper returns once the mount is live"
    );
    assert!(
        fs::metadata(mnt.join("_alllayers/L03/R00000007/C00000007.png"))
            .unwrap()
            .len()
            > 0
    );
    let (ok, _, err) = sh(&format!("fusermount3 -u {}", mnt.display()));
    assert!(ok, "{err}");
    let start = Instant::now();
    while is_mounted(&mnt) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a daemon dies (kill -9), its mount point answers ENOTCONN. Mounting there again says so
/// and how to clear it (not "not a directory"); after `fusermount3 -u` the mount works again.
#[test]
fn mounting_over_a_dead_mount_says_how_to_clear_it() {
    need("fusermount3");
    let d = tempfile::Builder::new()
        .prefix("bundlefs-mount-dead-")
        .tempdir()
        .unwrap();
    let cache = sample(d.path());
    let mnt = d.path().join("mnt");
    let mut m = Mounted::start(&cache, &mnt, &[]);
    let child = m.child.as_mut().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let err = fs::metadata(&mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let out = Command::new(crate::support::bin())
        .arg("mount")
        .arg(&cache)
        .arg(&mnt)
        .arg("--daemon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(&mnt.display().to_string())
            && msg.contains(&format!("fusermount3 -u {}", mnt.display())),
        "{msg}"
    );
    // As the message says: clear it, and the mount works again.
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let again = Mounted::start(&cache, &mnt, &[]);
    assert!(again.path("conf.xml").is_file());
    drop(again);
    drop(m);
}

/// A mount point on, inside or above the cache folder would hide the bundles from the daemon
/// itself: refused with a clear message, nothing mounted.
#[test]
fn mount_points_overlapping_the_cache_are_refused() {
    let d = tempfile::Builder::new()
        .prefix("bundlefs-mount-overlap-")
        .tempdir()
        .unwrap();
    let cache = sample(d.path());
    for mnt in [
        cache.join("_alllayers"),
        cache.clone(),
        d.path().to_path_buf(),
    ] {
        let out = Command::new(crate::support::bin())
            .arg("mount")
            .arg(&cache)
            .arg(&mnt)
            .arg("--daemon")
            .output()
            .unwrap();
        // Had it mounted, undo it before failing.
        let mounted = is_mounted(&mnt);
        if mounted {
            let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
        }
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !mounted,
            "{}: {msg}",
            mnt.display()
        );
        assert!(msg.contains("overlaps the cache folder"), "{msg}");
    }
}
