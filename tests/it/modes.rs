//! Files other users and programs read (issue: real-world caches, kind 7): every file bundlefs
//! creates gets the mode `cp` would give (`0666 & !umask`), and a file it replaces keeps the
//! replaced file's mode. The commands run under umask 027, so a new file must be `0640`: neither
//! a temporary file's `0600` nor a hard-coded `0644` passes.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::mount::{need, sh, Mounted};
use crate::support::{bin, run_ok};

/// `bundlefs ARGS` run under umask 027.
fn bundlefs_027(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "umask 027 && exec \"$0\" \"$@\"", bin()])
        .args(args);
    c
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Every regular file under `dir` (or `dir` itself), with its mode, skipping lock files (they are
/// MapProxy's convention, created by `open`, and carry no data).
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.extension().is_none_or(|e| e != "lck") {
            out.push((p.clone(), m.mode() & 0o7777));
        }
    }
    out.sort();
    out
}

fn assert_all(dir: &Path, want: u32, what: &str) {
    let files = modes_under(dir);
    assert!(
        !files.is_empty(),
        "{what}: no files under {}",
        dir.display()
    );
    let bad: Vec<_> = files.iter().filter(|(_, m)| *m != want).collect();
    assert!(
        bad.is_empty(),
        "{what}: want {want:o}, got {:?}",
        bad.iter()
            .map(|(p, m)| format!("{} {m:o}", p.display()))
            .collect::<Vec<_>>()
    );
}

fn sample(dir: &Path) -> PathBuf {
    let c = dir.join("sample");
    run_ok(
        bundlefs_027(&["sample", c.to_str().unwrap(), "--levels", "0-2"])
            .arg("--format")
            .arg("PNG"),
    );
    c
}

#[test]
fn files_created_by_sample_export_and_packages_get_cp_modes() {
    let d = tempfile::tempdir().unwrap();
    let src = sample(d.path());
    assert_all(&src, 0o640, "sample");
    for storage in ["compact-v2", "compact-v1", "exploded"] {
        let dest = d.path().join(storage);
        run_ok(&mut bundlefs_027(&[
            "export",
            "--storage",
            storage,
            src.to_str().unwrap(),
            dest.to_str().unwrap(),
        ]));
        assert_all(&dest, 0o640, storage);
    }
    let pkg = d.path().join("p.tpkx");
    run_ok(&mut bundlefs_027(&[
        "export",
        "--storage",
        "tpkx",
        src.to_str().unwrap(),
        pkg.to_str().unwrap(),
    ]));
    assert_eq!(mode(&pkg), 0o640, "tpkx");
    // Importing into the package replaces it: its mode stays.
    fs::set_permissions(&pkg, fs::Permissions::from_mode(0o604)).unwrap();
    run_ok(&mut bundlefs_027(&[
        "import",
        src.to_str().unwrap(),
        pkg.to_str().unwrap(),
    ]));
    assert_eq!(mode(&pkg), 0o604, "tpkx replaced by import");
}

#[test]
fn compact_keeps_the_replaced_bundles_mode() {
    let d = tempfile::tempdir().unwrap();
    let src = sample(d.path());
    // Overwrite a tile so L02's bundle has dead space, then make its mode unusual.
    let c = bundlefs::cache::Cache::open(&src).unwrap();
    let t = bundlefs::format::TileAddr::new(2, 1, 1);
    let bytes = c.tile(t).unwrap().unwrap().to_vec();
    c.write_tiles(&[(t, &bytes)]).unwrap();
    drop(c);
    let bundle = src.join("_alllayers/L02/R0000C0000.bundle");
    fs::set_permissions(&bundle, fs::Permissions::from_mode(0o604)).unwrap();
    let ino = fs::metadata(&bundle).unwrap().ino();
    run_ok(&mut bundlefs_027(&[
        "compact",
        src.to_str().unwrap(),
        "--min-dead",
        "0",
    ]));
    assert_ne!(
        fs::metadata(&bundle).unwrap().ino(),
        ino,
        "compact did not rewrite the bundle"
    );
    assert_eq!(mode(&bundle), 0o604);
}

#[test]
fn bundles_and_time_sidecars_written_through_a_mount_get_cp_modes() {
    need("rsync");
    need("fusermount3");
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    run_ok(&mut bundlefs_027(&[
        "create",
        cache.to_str().unwrap(),
        "--levels",
        "0-3",
    ]));
    assert_all(&cache, 0o640, "create");
    let src = sample(d.path());
    let exploded = d.path().join("exploded");
    run_ok(&mut bundlefs_027(&[
        "export",
        "--storage",
        "exploded",
        src.to_str().unwrap(),
        exploded.to_str().unwrap(),
    ]));
    let mnt = d.path().join("mnt");
    // The daemon runs under umask 027 as well.
    fs::create_dir_all(&mnt).unwrap();
    let child = bundlefs_027(&[
        "mount",
        cache.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        "rw",
    ])
    .spawn()
    .unwrap();
    let start = std::time::Instant::now();
    while !crate::support::mount::is_mounted(&mnt) {
        assert!(start.elapsed().as_secs() < 15, "mount did not appear");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Unmounts (and reaps the daemon, which flushes before it exits) even if an assert fails.
    let guard = Mounted {
        child: Some(child),
        mnt: mnt.clone(),
    };
    let (ok, _, err) = sh(&format!(
        "rsync -a {}/_alllayers/ {}/_alllayers/",
        exploded.display(),
        mnt.display()
    ));
    assert!(ok, "rsync: {err}");
    drop(guard);
    let files = modes_under(&cache.join("_alllayers"));
    assert!(
        files
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".bundle.times")),
        "no time sidecars: {files:?}"
    );
    assert_all(&cache, 0o640, "mount flush");
}
