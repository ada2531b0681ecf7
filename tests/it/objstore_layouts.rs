//! Exploded and Compact V1 caches in a real object store (the Ceph cluster of
//! `scripts/objstore-test.sh`; without it these tests fail, they are never skipped): uploaded
//! caches read, verify, export and mount as their folders do; an exploded prefix takes writes
//! through an `-o rw` mount as tile objects; a Compact V1 prefix is read-only, refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlefs::cache::store::object::store_client_at;
use bundlefs::cache::store::object::v1::READ_ONLY;
use bundlefs::cache::Cache;
use bundlefs::format::conf::StorageFormat;
use bundlefs::format::TileAddr;

use crate::objstore::{fresh_url, info_json, mount_logged, parse, unmount, upload};
use crate::support::mount::Mounted;
use crate::support::{
    all_tiles, assert_same_tree, bin, esri_sample_cache, run, run_ok, tree_files, unpack_tpk,
};

/// Every key under the cache at `url`, relative to its prefix.
fn keys(url: &str) -> Vec<String> {
    let u = parse(url);
    let client = store_client_at(&u, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let mut todo = vec![object_store::path::Path::from(u.prefix.as_str())];
    while let Some(p) = todo.pop() {
        let l = rt.block_on(client.list_with_delimiter(Some(&p))).unwrap();
        out.extend(l.objects.into_iter().map(|o| {
            o.location
                .as_ref()
                .strip_prefix(&format!("{}/", u.prefix))
                .unwrap()
                .to_string()
        }));
        todo.extend(l.common_prefixes);
    }
    out.sort();
    out
}

/// `verify --decode CACHE`'s summary without the cache's name ("3 levels, 21 bundles, …"),
/// after checking it succeeded with no problem.
fn verify_summary(cache: &str) -> String {
    let out = run_ok(Command::new(bin()).args(["verify", "--decode", cache]));
    let last = out.lines().last().unwrap_or_default().to_string();
    assert!(last.contains(" 0 problem(s)"), "verify {cache}: {out}");
    last.rsplit_once(": ")
        .map_or(last.clone(), |(_, s)| s.to_string())
}

/// `export --storage exploded CACHE DEST`; returns DEST's files.
fn export_exploded(cache: &Path, dest: &Path) -> BTreeMap<String, Vec<u8>> {
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(cache)
            .arg(dest),
    );
    tree_files(dest)
}

/// What a read-only mount of `cache` shows: every file and its bytes.
fn mounted_tree(cache: &Path, mnt: &Path) -> BTreeMap<String, Vec<u8>> {
    let m = Mounted::start(cache, mnt, &[]);
    tree_files(&m.mnt)
}

/// The same checks for a cache uploaded from `local` to `url`: `info` totals and storage,
/// `verify --decode` counts, `export --storage exploded` and a read-only mount, each equal to
/// what the folder gives.
fn same_as_the_folder(local: &Path, url: &str, work: &Path) {
    let (a, b) = (info_json(url), info_json(local.to_str().unwrap()));
    assert_eq!(a["total"], b["total"], "info totals, store vs folder");
    assert_eq!(a["storage"], b["storage"], "info storage, store vs folder");
    assert_eq!(
        verify_summary(url),
        verify_summary(local.to_str().unwrap()),
        "verify --decode, store vs folder"
    );
    let want = export_exploded(local, &work.join("export-folder"));
    assert!(want.len() > 10, "the folder's export holds tiles");
    assert_same_tree(
        &export_exploded(Path::new(url), &work.join("export-store")),
        &want,
        "export --storage exploded of s3:// vs of the folder",
    );
    crate::support::mount::need("fusermount3");
    let want = mounted_tree(local, &work.join("mnt-folder"));
    assert!(want.len() > 10, "the folder's mount shows tiles");
    assert_same_tree(
        &mounted_tree(Path::new(url), &work.join("mnt-store")),
        &want,
        "mount of s3:// vs mount of the folder",
    );
}

#[test]
fn an_exploded_cache_in_the_store_reads_verifies_exports_and_mounts_as_its_folder() {
    let d = tempfile::tempdir().unwrap();
    let local = d.path().join("exploded");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(esri_sample_cache())
            .arg(&local),
    );
    let url = fresh_url("layouts-exploded");
    upload(&local, &url);
    let c = Cache::open(&url).unwrap();
    assert_eq!(c.storage(), StorageFormat::Exploded);
    assert_eq!(
        all_tiles(&c),
        all_tiles(&Cache::open(&local).unwrap()),
        "tiles read from the store"
    );
    same_as_the_folder(&local, &url, d.path());
}

#[test]
fn a_compact_v1_cache_in_the_store_reads_as_its_folder_and_refuses_writes_by_name() {
    let d = tempfile::tempdir().unwrap();
    // ArcGIS's own Compact V1 cache (a .tpk's v101/Layers).
    let local = Cache::open(unpack_tpk(d.path()))
        .unwrap()
        .root()
        .to_path_buf();
    assert_eq!(
        Cache::open(&local).unwrap().storage(),
        StorageFormat::CompactV1
    );
    let url = fresh_url("layouts-v1");
    upload(&local, &url);
    let c = Cache::open(&url).unwrap();
    assert_eq!(c.storage(), StorageFormat::CompactV1);
    assert_eq!(
        all_tiles(&c),
        all_tiles(&Cache::open(&local).unwrap()),
        "tiles read from the store"
    );
    same_as_the_folder(&local, &url, d.path());
    // Converted to Compact V2 store to store.
    let v2 = fresh_url("layouts-v1-to-v2");
    run_ok(Command::new(bin()).args(["export", "--storage", "compact-v2", &url, &v2]));
    let c2 = Cache::open(&v2).unwrap();
    assert_eq!(c2.storage(), StorageFormat::CompactV2);
    assert_eq!(
        all_tiles(&c2),
        all_tiles(&Cache::open(&local).unwrap()),
        "V1 in the store exported to V2 in the store"
    );
    // An -o rw mount is refused at mount time, by name (`timeout`: a mount that came up would
    // stay in the foreground).
    let mnt = d.path().join("mnt-rw");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run(Command::new("timeout")
        .arg("60")
        .arg(bin())
        .args(["mount", "-o", "rw", &url])
        .arg(&mnt));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "-o rw mount of a V1 prefix: {err}");
    assert!(
        err.contains(READ_ONLY) && err.contains(&url),
        "the refusal names the cache and why: {err}"
    );
    // Writing jobs are refused by name too: import into it, and a new V1 cache in the store.
    let before = keys(&url);
    let out = run(Command::new(bin()).arg("import").arg(&local).arg(&url));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(READ_ONLY), "{err}");
    assert_eq!(keys(&url), before, "nothing written by the refused import");
    let out = run(Command::new(bin()).arg("compact").arg(&url));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(READ_ONLY), "{err}");
    assert!(
        !err.contains("a new V1 cache"),
        "no advice that cannot work here: {err}"
    );
    let out = run(Command::new(bin())
        .args(["export", "--storage", "compact-v1"])
        .arg(&local)
        .arg(fresh_url("layouts-new-v1")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(READ_ONLY), "{err}");
}

/// `export … s3://… --storage exploded` makes an exploded cache in the store; an `-o rw` mount of
/// it (probed for compare-and-swap like a Compact V2 one) takes a `cp -r` of a level, and after
/// the unmount the tiles are objects under the ArcGIS names, readable as the source's tiles.
#[test]
fn an_rw_mount_of_an_exploded_prefix_takes_a_cp_and_stores_tile_objects() {
    crate::support::mount::need("fusermount3");
    let d = tempfile::tempdir().unwrap();
    let local = d.path().join("exploded");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(esri_sample_cache())
            .arg(&local),
    );
    let url = fresh_url("layouts-rw");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded", "--levels", "0-1"])
            .arg(&local)
            .arg(&url),
    );
    assert_eq!(
        Cache::open(&url).unwrap().storage(),
        StorageFormat::Exploded
    );
    assert!(
        keys(&url).contains(&"_alllayers/L00/R00000000/C00000000.jpg".to_string()),
        "export wrote tile objects: {:?}",
        keys(&url)
    );
    let log = d.path().join("mount.log");
    let mut m = mount_logged(&url, &d.path().join("mnt"), &["-o", "rw"], &log);
    let src: PathBuf = local.join("_alllayers").join("L02");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(m.path("_alllayers"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -r into the mount: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        unmount(&mut m, 120),
        "the daemon failed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.contains("unquoted ETags"),
        "the rw mount probed the store: {log}"
    );
    let want = all_tiles(&Cache::open(&local).unwrap());
    let l2: Vec<&TileAddr> = want.keys().filter(|t| t.level == 2).collect();
    assert!(!l2.is_empty(), "level 2 has tiles");
    let stored = keys(&url);
    for t in &l2 {
        let key = format!("_alllayers/L02/R{:08x}/C{:08x}.jpg", t.row, t.col);
        assert!(stored.contains(&key), "{key} is not an object: {stored:?}");
    }
    assert_eq!(
        all_tiles(&Cache::open(&url).unwrap()),
        want,
        "the store holds the source's tiles, levels 0-2"
    );
    // delete of the level: its summary counts the tile objects' bytes and the row prefixes
    // emptied (as the local exploded store counts files and row folders).
    let bytes: usize = l2.iter().map(|t| want[*t].len()).sum();
    let rows: std::collections::BTreeSet<u32> = l2.iter().map(|t| t.row).collect();
    let out = run_ok(Command::new(bin()).args(["delete", &url, "--levels", "2"]));
    let said = format!(
        "({bytes} bytes of tile objects, {} removed)",
        if rows.len() == 1 {
            "1 empty row folder".to_string()
        } else {
            format!("{} empty row folders", rows.len())
        }
    );
    assert!(out.contains(&said), "{out} (wanted {said})");
    assert!(
        !keys(&url).iter().any(|k| k.starts_with("_alllayers/L02/")),
        "level 2 left objects: {:?}",
        keys(&url)
    );
}

/// Another mount's write to an exploded prefix reaches a reading mount within `--recheck` and a
/// few polls, whatever `--ttl` (its row listing is listed again and the kernel told to forget
/// the row: `Storage::foreign_changes`).
#[test]
fn a_write_to_an_exploded_prefix_through_one_mount_is_seen_by_another_within_recheck() {
    crate::support::mount::need("fusermount3");
    let d = tempfile::tempdir().unwrap();
    let local = d.path().join("exploded");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(esri_sample_cache())
            .arg(&local),
    );
    let url = fresh_url("layouts-recheck");
    upload(&local, &url);
    let rel = "_alllayers/L01/R00000000/C00000001.jpg";
    let first = std::fs::read(local.join(rel)).unwrap();
    let (wlog, rlog) = (d.path().join("writer.log"), d.path().join("reader.log"));
    let w = mount_logged(&url, &d.path().join("w"), &["-o", "rw"], &wlog);
    let r = mount_logged(
        &url,
        &d.path().join("r"),
        &["--recheck", "0.5", "--ttl", "3600"],
        &rlog,
    );
    assert_eq!(
        std::fs::read(r.path(rel)).unwrap(),
        first,
        "the reader's first read"
    );
    // A longer tile: with the old size still cached, the kernel would hand out wrong bytes.
    let mut second = first.clone();
    second.extend_from_slice(&[0; 100]);
    let written = std::time::Instant::now();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(w.path(rel)).unwrap();
        f.write_all(&second).unwrap();
        f.sync_all().unwrap();
    }
    let seen = loop {
        let got = std::fs::read(r.path(rel)).unwrap();
        if got == second {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < std::time::Duration::from_secs(15),
            "the reader still shows {} bytes (want {}) 15 s after the write:\n{}",
            got.len(),
            second.len(),
            std::fs::read_to_string(&rlog).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    eprintln!("the reading mount showed the new tile {seen:?} after the writer's fsync");
    assert!(
        seen < std::time::Duration::from_secs(5),
        "{seen:?}: not within recheck (0.5 s) and a few polls"
    );
    drop(r);
    drop(w);
}
