//! Caches in a real object store: a Ceph cluster with two S3 gateways (RGW 16), started around the
//! test run by `scripts/objstore-test.sh` (or `scripts/test.sh`), which exports its `AWS_*`
//! variables and `BUNDLEFS_S3_TEST=1`. Without them these tests fail (they are never skipped):
//! run them with `scripts/objstore-test.sh`. Each test works under its own prefix of the bucket.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bundlefs::cache::store::object::{s3_client_at, ObjectStorage, RetryPolicy};
use bundlefs::cache::url::ObjectUrl;
use bundlefs::cache::{Cache, CacheOptions, GroupView, Storage, TileBytes};
use bundlefs::format::{BundleId, Slot, TileAddr};

use crate::support::{
    all_tiles, assert_same_tiles, assert_same_tree, bin, esri_sample_cache, run, run_ok, tree_files,
};

/// The bucket of the test cluster; fails the test when the cluster's environment is missing.
fn bucket() -> String {
    assert!(
        std::env::var_os("BUNDLEFS_S3_TEST").is_some(),
        "BUNDLEFS_S3_TEST is not set: these tests need the Ceph cluster that \
         scripts/objstore-test.sh (or scripts/test.sh) starts around them"
    );
    std::env::var("BUNDLEFS_S3_BUCKET").expect("BUNDLEFS_S3_BUCKET (from the cluster's env)")
}

/// A fresh `s3://BUCKET/it/NAME-PID-NANOS` URL no other test or run uses.
fn fresh_url(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3://{}/it/{name}-{}-{nanos}", bucket(), std::process::id())
}

fn parse(url: &str) -> ObjectUrl {
    ObjectUrl::parse(url).unwrap().unwrap()
}

/// Uploads every file under `dir` as it is (like copying a cache folder into the bucket).
fn upload(dir: &Path, url: &str) {
    let u = parse(url);
    let client = s3_client_at(&u, None).unwrap();
    let s = ObjectStorage::with_store(u, client, "", CacheOptions::default());
    for (rel, bytes) in tree_files(dir) {
        s.put_file(&rel, &bytes)
            .unwrap_or_else(|e| panic!("upload {rel}: {e}"));
    }
}

fn info_json(cache: &str) -> serde_json::Value {
    let out = run_ok(Command::new(bin()).args(["info", "--json", cache]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn an_uploaded_cache_reads_back_tile_for_tile() {
    let local = esri_sample_cache();
    let url = fresh_url("upload");
    upload(&local, &url);
    let want = all_tiles(&Cache::open(&local).unwrap());
    assert!(want.len() > 10, "fixture has tiles");
    let c = Cache::open(&url).unwrap();
    assert_eq!(
        c.levels().unwrap(),
        Cache::open(&local).unwrap().levels().unwrap()
    );
    assert_same_tiles(&c, &want, "cache read from the object store");
    // info and verify work on the URL and agree with the local folder.
    let (a, b) = (info_json(&url), info_json(local.to_str().unwrap()));
    assert_eq!(a["total"], b["total"], "info totals, store vs folder");
    assert_eq!(a["storage"], b["storage"]);
    let out = run(Command::new(bin()).args(["verify", "--decode", &url]));
    assert!(
        out.status.success(),
        "verify {url}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn export_from_the_store_equals_the_local_export() {
    let local = esri_sample_cache();
    let url = fresh_url("export-exploded");
    upload(&local, &url);
    let d = tempfile::tempdir().unwrap();
    let (from_store, from_folder) = (d.path().join("store"), d.path().join("folder"));
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded", &url])
            .arg(&from_store),
    );
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(&local)
            .arg(&from_folder),
    );
    let want = tree_files(&from_folder);
    assert!(want.keys().any(|k| k.ends_with(".jpg")), "tiles exported");
    assert_same_tree(
        &tree_files(&from_store),
        &want,
        "export of s3:// vs of the folder",
    );
}

#[test]
fn export_and_import_into_the_store_write_plain_v2_bundles() {
    let local = esri_sample_cache();
    let want = all_tiles(&Cache::open(&local).unwrap());
    let url = fresh_url("export-import");
    // Levels 0-1 by export (a new cache), then everything by import (merging into its bundles).
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2", "--levels", "0-1"])
            .arg(&local)
            .arg(&url),
    );
    let c = Cache::open(&url).unwrap();
    assert_eq!(c.levels().unwrap(), vec![0, 1]);
    run_ok(Command::new(bin()).arg("import").arg(&local).arg(&url));
    let c = Cache::open(&url).unwrap();
    assert_same_tiles(&c, &want, "cache exported and imported into the store");
    for l in c.levels().unwrap() {
        assert_eq!(
            c.level_stats(l).unwrap().dead_bytes,
            0,
            "level {l}: no dead space"
        );
    }
    // And back to a local folder.
    let d = tempfile::tempdir().unwrap();
    let back = d.path().join("back");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2", &url])
            .arg(&back),
    );
    assert_same_tiles(
        &Cache::open(&back).unwrap(),
        &want,
        "store exported to a folder",
    );
}

#[test]
fn storages_other_than_compact_v2_are_refused_by_name() {
    let url = fresh_url("exploded");
    let out = run(Command::new(bin())
        .args(["export", "--storage", "exploded"])
        .arg(esri_sample_cache())
        .arg(&url));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("exploded storage in an object store is not supported"),
        "{err}"
    );
    let out = run(Command::new(bin()).args(["info", &fresh_url("nothing")]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a tile cache"), "{err}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let url = fresh_url("secret");
    let secret = "Sup3rSecretValue-xyz";
    let out = run(Command::new(bin())
        .args(["info", &url])
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ACCESS_KEY_ID", "nobody-key-4711"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "wrong credentials must fail: {all}");
    assert!(all.contains(&url), "the error names the cache: {all}");
    assert!(!all.contains(secret), "secret in output: {all}");
}

/// Two writers, each on its own gateway, update one bundle at once: every tile of each survives,
/// a slot both write holds one of theirs, and the writers really collided (conflicts counted).
#[test]
fn racing_writers_on_two_gateways_lose_no_tile() {
    let url = parse(&fresh_url("race"));
    let ep2 = std::env::var("AWS_ENDPOINT_URL_2").expect("AWS_ENDPOINT_URL_2 (second gateway)");
    let id = BundleId {
        level: 4,
        row0: 0,
        col0: 128,
    };
    const ROUNDS: u32 = 25;
    let tile = |w: u32, n: u32| format!("writer {w} tile {n} ").repeat(20).into_bytes();
    let slot = |n: u32| Slot {
        row: n / 128,
        col: n % 128,
    };
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = [None, Some(ep2)]
        .into_iter()
        .enumerate()
        .map(|(w, ep)| {
            let w = w as u32;
            let u = url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let client = s3_client_at(&u, ep.as_deref()).unwrap();
                let s = ObjectStorage::with_store(u, client, "_alllayers", CacheOptions::default())
                    .with_retry(RetryPolicy {
                        attempts: 60,
                        base_delay: Duration::from_millis(10),
                        max_delay: Duration::from_millis(400),
                    });
                barrier.wait();
                for i in 0..ROUNDS {
                    // Its own slot, and a slot both writers write (overwrite: the later wins).
                    let own = 1000 * (w + 1) + i;
                    let shared = 500 + i % 5;
                    s.update_group(id, &mut |_v: &dyn GroupView| {
                        Ok(vec![
                            (slot(own % 16384), TileBytes::owned(tile(w, own))),
                            (slot(shared), TileBytes::owned(tile(w, shared))),
                        ])
                    })
                    .unwrap_or_else(|e| panic!("writer {w} round {i}: {e}"));
                }
                (
                    s.stats().conflicts.load(Ordering::Relaxed),
                    s.sends_unquoted_etags(),
                )
            })
        })
        .collect();
    let results: Vec<(u64, bool)> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    let conflicts: u64 = results.iter().map(|r| r.0).sum();
    eprintln!("conflicts: {conflicts}; unquoted ETags learnt: {results:?}");
    let c = Cache::open(url.to_string()).unwrap();
    let mut got: BTreeMap<TileAddr, Vec<u8>> = BTreeMap::new();
    for (t, b) in c
        .read_group(&bundlefs::cache::TileGroup::bundle(id))
        .unwrap()
    {
        got.insert(t, b.to_vec());
    }
    for w in 0..2 {
        for i in 0..ROUNDS {
            let own = 1000 * (w + 1) + i;
            let t = id.tile(slot(own % 16384));
            assert_eq!(
                got.get(&t),
                Some(&tile(w, own)),
                "writer {w}'s tile {own} lost"
            );
        }
    }
    for n in 500..505 {
        let b = got.get(&id.tile(slot(n))).expect("shared slot written");
        assert!(
            *b == tile(0, n) || *b == tile(1, n),
            "shared slot {n} holds neither writer's tile"
        );
    }
    assert_eq!(got.len(), 2 * ROUNDS as usize + 5, "no stray tiles");
    assert!(
        conflicts > 0,
        "the writers never collided: the test proved nothing"
    );
}

/// A read-only mount of `s3://…` shows the same tree, byte for byte, as a mount of the folder.
#[test]
fn a_mount_of_the_store_equals_the_mount_of_the_folder() {
    use crate::support::mount::Mounted;
    crate::support::mount::need("fusermount3");
    let local = esri_sample_cache();
    let url = fresh_url("mount");
    upload(&local, &url);
    let d = tempfile::tempdir().unwrap();
    let want = {
        let m = Mounted::start(&local, &d.path().join("folder"), &[]);
        tree_files(&m.mnt)
    };
    assert!(want.len() > 10, "the folder's mount shows tiles");
    let m = Mounted::start(Path::new(&url), &d.path().join("store"), &[]);
    assert_same_tree(
        &tree_files(&m.mnt),
        &want,
        "mount of s3:// vs mount of the folder",
    );
}
