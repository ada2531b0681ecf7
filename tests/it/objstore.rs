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

use bundlefs::cache::store::object::{store_client_at, Connection, RetryPolicy, V2Objects};
use bundlefs::cache::url::ObjectUrl;
use bundlefs::cache::{Cache, CacheOptions, GroupView, Storage, TileBytes};
use bundlefs::format::conf::{StorageFormat, TileScheme};
use bundlefs::format::{BundleId, Slot, TileAddr};

use crate::support::mount::{is_mounted, Mounted, MOUNT_WAIT};

use crate::support::{
    all_tiles, assert_same_tiles, assert_same_tree, bin, esri_sample_cache, run, run_ok, tree_files,
};

/// The bucket of the test cluster; fails the test when the cluster's environment is missing.
pub(crate) fn bucket() -> String {
    assert!(
        std::env::var_os("BUNDLEFS_S3_TEST").is_some(),
        "BUNDLEFS_S3_TEST is not set: these tests need the Ceph cluster that \
         scripts/objstore-test.sh (or scripts/test.sh) starts around them"
    );
    std::env::var("BUNDLEFS_S3_BUCKET").expect("BUNDLEFS_S3_BUCKET (from the cluster's env)")
}

/// A fresh `s3://BUCKET/it/NAME-PID-NANOS` URL no other test or run uses.
pub(crate) fn fresh_url(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3://{}/it/{name}-{}-{nanos}", bucket(), std::process::id())
}

pub(crate) fn parse(url: &str) -> ObjectUrl {
    ObjectUrl::parse(url).unwrap().unwrap()
}

/// Uploads every file under `dir` as it is (like copying a cache folder into the bucket).
pub(crate) fn upload(dir: &Path, url: &str) {
    let u = parse(url);
    let client = store_client_at(&u, None).unwrap();
    let s = Connection::new(u, client, "", CacheOptions::default());
    for (rel, bytes) in tree_files(dir) {
        s.put_file(&rel, &bytes)
            .unwrap_or_else(|e| panic!("upload {rel}: {e}"));
    }
}

pub(crate) fn info_json(cache: &str) -> serde_json::Value {
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

/// Tile management on a cache in the store gives what it gives on a folder: `delete` (bundles
/// rewritten without the tiles: no dead space), `compact` (nothing to reclaim), `render --keep`
/// (tiles rendered into the store), then `verify --decode`.
#[test]
fn delete_compact_and_render_keep_work_on_the_store_as_on_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let local = crate::support::sample_cache(d.path(), "0-4");
    let url = fresh_url("manage");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2"])
            .arg(&local)
            .arg(&url),
    );
    let nw = "-20037508,1,-1,20037508";
    for cache in [local.to_str().unwrap(), url.as_str()] {
        let out =
            run_ok(Command::new(bin()).args(["delete", cache, "--levels", "3-4", "--extent", nw]));
        // The north-west quadrant: 4×4 tiles of level 3, 8×8 of level 4.
        assert!(out.contains("deleted 80 tiles"), "{cache}: {out}");
        // In the store the bundles are rewritten without them: no dead space to speak of.
        assert_eq!(
            out.contains("bytes are gone"),
            cache == url,
            "{cache}: {out}"
        );
    }
    let after_delete = all_tiles(&Cache::open(&local).unwrap());
    let c = Cache::open(&url).unwrap();
    assert_same_tiles(&c, &after_delete, "store after delete");
    for l in c.levels().unwrap() {
        assert_eq!(c.level_stats(l).unwrap().dead_bytes, 0, "level {l}");
    }
    let out = run_ok(Command::new(bin()).args(["compact", &url, "--min-dead", "0%"]));
    assert!(out.contains("0 rewritten"), "{out}");
    for cache in [local.to_str().unwrap(), url.as_str()] {
        run_ok(Command::new(bin()).args([
            "render", cache, "--source", "label", "--levels", "3-4", "--keep",
        ]));
    }
    let want = all_tiles(&Cache::open(&local).unwrap());
    assert_eq!(want.len(), 341);
    assert_same_tiles(
        &Cache::open(&url).unwrap(),
        &want,
        "store after render --keep",
    );
    let out = run_ok(Command::new(bin()).args(["verify", "--decode", &url]));
    assert!(out.contains("0 problem(s)"), "{out}");
}

#[test]
fn storages_other_than_compact_v2_are_refused_by_name() {
    let url = fresh_url("exploded");
    let out = run(Command::new(bin())
        .args(["export", "--storage", "compact-v1"])
        .arg(esri_sample_cache())
        .arg(&url));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Compact V1 in an object store is read-only"),
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
    let _gw = gw2_shared();
    let url = parse(&fresh_url("race"));
    let ep2 = std::env::var("AWS_ENDPOINT_URL_2").expect("AWS_ENDPOINT_URL_2 (second gateway)");
    race_two_writers_on_one_bundle(&url, [None, Some(ep2)], 25);
}

/// Two writers (through `endpoints`: None = the environment's) update one bundle of `url` at
/// once, `rounds` times each, each time their own slot and one of five slots both write
/// (overwrite). Asserts that every writer's own tiles survive, each shared slot holds one of
/// theirs, there is no stray tile, and the writers really collided (conflicts counted).
pub(crate) fn race_two_writers_on_one_bundle(
    url: &ObjectUrl,
    endpoints: [Option<String>; 2],
    rounds: u32,
) {
    let id = BundleId {
        level: 4,
        row0: 0,
        col0: 128,
    };
    let tile = |w: u32, n: u32| format!("writer {w} tile {n} ").repeat(20).into_bytes();
    let slot = |n: u32| Slot {
        row: n / 128,
        col: n % 128,
    };
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = endpoints
        .into_iter()
        .enumerate()
        .map(|(w, ep)| {
            let w = w as u32;
            let u = url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let client = store_client_at(&u, ep.as_deref()).unwrap();
                let s = V2Objects::new(Arc::new(
                    Connection::new(u, client, "_alllayers", CacheOptions::default()).with_retry(
                        RetryPolicy {
                            attempts: 60,
                            base_delay: Duration::from_millis(10),
                            max_delay: Duration::from_millis(400),
                        },
                    ),
                ));
                barrier.wait();
                for i in 0..rounds {
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
                    s.connection().sends_unquoted_etags(),
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
        for i in 0..rounds {
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
    assert_eq!(got.len(), 2 * rounds as usize + 5, "no stray tiles");
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

/// `bundlefs sample --levels LEVELS` in `dir/src`, exported into the store at `url` as Compact
/// V2; returns the local folder.
pub(crate) fn sample_in_store(dir: &Path, levels: &str, url: &str) -> std::path::PathBuf {
    let src = dir.join("src");
    run_ok(
        Command::new(bin())
            .arg("sample")
            .arg(&src)
            .args(["--levels", levels]),
    );
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(url)
            .args(["--storage", "compact-v2"]),
    );
    src
}

/// (GETs, tiles fetched ahead) from the request counters a daemon logs at unmount.
fn gets_logged(log: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .rfind(|l| l.contains("tiles fetched ahead"))
        .unwrap_or_else(|| panic!("no request counters in the daemon's log:\n{text}"));
    let num_before = |marker: &str| -> u64 {
        let head = &line[..line
            .find(marker)
            .unwrap_or_else(|| panic!("{marker}: {line}"))];
        let digits: String = head
            .trim_end()
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.chars().rev().collect::<String>().parse().unwrap()
    };
    (num_before(" GETs"), num_before(" tiles fetched ahead"))
}

/// Names and sizes of every file under `dir` (sorted walk; no file is opened).
fn tree_sizes(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, m.len());
            }
        }
    }
    out
}

/// Through a mount of `s3://…`: listing every name with its size (`find`, `ls -l`) costs no tile
/// GET (sizes come from the bundles' indexes), and reading every tile in name order (`tar`, `cp
/// -r`) coalesces adjacent tiles into few range GETs; the bytes equal the local export's.
#[test]
fn listings_cost_no_tile_get_and_reads_in_name_order_coalesce() {
    let d = tempfile::tempdir().unwrap();
    let url = fresh_url("coalesce");
    let src = sample_in_store(d.path(), "0-5", &url);
    let exploded = d.path().join("exploded");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(&exploded)
            .args(["--storage", "exploded"]),
    );
    let want = tree_files(&exploded.join("_alllayers"));
    assert_eq!(want.len(), 1365, "levels 0-5 of the sample");
    let bundles = 6;

    // Names and sizes only.
    let log = d.path().join("list.log");
    let mut m = mount_logged(&url, &d.path().join("m1"), &["--recheck", "3600"], &log);
    let sizes = tree_sizes(&m.mnt.join("_alllayers"));
    let want_sizes: BTreeMap<String, u64> = want
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    assert_eq!(sizes, want_sizes, "names and sizes through the mount");
    assert!(unmount(&mut m, 60), "the daemon exited with an error");
    let (gets, _) = gets_logged(&log);
    assert!(
        gets <= bundles,
        "listing {} names took {gets} GETs (at most one index GET per bundle expected)",
        want.len()
    );

    // Every tile read, in name order.
    let log = d.path().join("read.log");
    let mut m = mount_logged(&url, &d.path().join("m2"), &["--recheck", "3600"], &log);
    let got = tree_files(&m.mnt.join("_alllayers"));
    assert!(
        got == want,
        "tiles read through the mount differ from the export"
    );
    assert!(unmount(&mut m, 60), "the daemon exited with an error");
    let (gets, ahead) = gets_logged(&log);
    // One GET per tile would be 1365 + 6; windows of up to 64 tiles make it about 50.
    assert!(
        gets < 100 && ahead > 1200,
        "reading {} tiles in name order took {gets} GETs, {ahead} tiles fetched ahead",
        want.len()
    );
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` (`HOST:PORT`) that holds every request whose
/// first line contains `slow` for `delay` before passing it on. Runs until the test ends.
fn delaying_proxy(upstream: String, slow: &'static str, delay: Duration) -> String {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let head = String::from_utf8_lossy(&buf[..n.min(512)]);
                    if head.lines().next().is_some_and(|l| l.contains(slow)) {
                        std::thread::sleep(delay);
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    format!("http://{addr}")
}

/// A request waiting on the store does not hold a session thread: with `--threads 1`, while a
/// read in one bundle waits 4 s on the store (a proxy holds its requests), a read in another
/// bundle is answered at once.
#[test]
fn a_slow_store_request_holds_no_session_thread() {
    let d = tempfile::tempdir().unwrap();
    let url = fresh_url("slow");
    sample_in_store(d.path(), "0-2", &url);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let upstream = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let delay = Duration::from_secs(4);
    let proxy = delaying_proxy(upstream.to_string(), "/L01/", delay);
    let log = d.path().join("mount.log");
    let opts = format!("endpoint={proxy}");
    let mut m = mount_logged(
        &url,
        &d.path().join("m"),
        &["-o", &opts, "--threads", "1", "--recheck", "3600"],
        &log,
    );
    let slow = m.mnt.join("_alllayers/L01/R00000000/C00000001.png");
    let fast = m.mnt.join("_alllayers/L02/R00000001/C00000002.png");
    let t0 = std::time::Instant::now();
    let reader = std::thread::spawn(move || {
        let b = std::fs::read(&slow).unwrap();
        (b.len(), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t1 = std::time::Instant::now();
    let fast_bytes = std::fs::read(&fast).unwrap();
    let fast_took = t1.elapsed();
    let (slow_len, slow_took) = reader.join().unwrap();
    assert!(slow_len > 0 && !fast_bytes.is_empty());
    assert!(
        slow_took >= delay,
        "the slow read took {slow_took:?}: the proxy did not hold it, the test proves nothing"
    );
    assert!(
        fast_took < Duration::from_secs(2),
        "a read in another bundle waited {fast_took:?} behind the slow one"
    );
    assert!(unmount(&mut m, 60), "the daemon exited with an error");
}

// ---- writable mounts, the CAS probe, faults (second slice) ------------------------------------

/// Tests that stop gateway 2 take this for writing; tests that use gateway 2 take it for reading.
static GATEWAY_2: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn gw2_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    GATEWAY_2.read().unwrap_or_else(|e| e.into_inner())
}

/// The cluster's folder (for `scripts/ceph-cluster.sh stop-gw DIR N` and friends).
fn cluster_dir() -> std::path::PathBuf {
    let conf = std::env::var("CEPH_CONF").expect("CEPH_CONF (from the cluster's env)");
    Path::new(&conf).parent().unwrap().to_path_buf()
}

fn cluster(cmd: &str, n: u32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ceph-cluster.sh");
    run_ok(
        Command::new("bash")
            .arg(script)
            .arg(cmd)
            .arg(cluster_dir())
            .arg(n.to_string()),
    );
}

/// An empty web-mercator PNG cache (levels 0-5) at a fresh URL: `bundlefs create` in a folder,
/// its conf.xml and conf.cdi uploaded.
fn empty_cache(name: &str) -> String {
    empty_cache_as(name, StorageFormat::CompactV2)
}

/// [`empty_cache`] with exploded storage (its conf.xml rewritten to say so before the upload).
fn empty_exploded_cache(name: &str) -> String {
    empty_cache_as(name, StorageFormat::Exploded)
}

fn empty_cache_as(name: &str, storage: StorageFormat) -> String {
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("cache");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&c)
            .args(["--levels", "0-5"]),
    );
    let conf = std::fs::read(c.join("conf.xml")).unwrap();
    let conf = TileScheme::parse_conf_xml(&conf)
        .unwrap()
        .with_storage(storage);
    std::fs::write(c.join("conf.xml"), conf).unwrap();
    let url = fresh_url(name);
    upload(&c, &url);
    assert_eq!(Cache::open(&url).unwrap().storage(), storage);
    url
}

/// A `bundlefs mount` in the foreground with its log (RUST_LOG=info) in `log`; unmounted by
/// Drop, or by [`unmount`] which also checks how the daemon ended.
pub(crate) fn mount_logged(cache: &str, mnt: &Path, extra: &[&str], log: &Path) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let child = Command::new(bin())
        .arg("mount")
        .arg(cache)
        .arg(mnt)
        .args(extra)
        .env("RUST_LOG", "info,fuser=error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start bundlefs mount");
    let mut m = Mounted {
        child: Some(child),
        mnt: mnt.to_path_buf(),
    };
    let start = std::time::Instant::now();
    while !is_mounted(mnt) {
        if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "bundlefs mount exited early: {st}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(start.elapsed() < MOUNT_WAIT, "mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}

/// Unmounts `m` and waits (at most `secs`) for its daemon, which flushes its write buffer
/// before it exits; true if it exited with success.
pub(crate) fn unmount(m: &mut Mounted, secs: u64) -> bool {
    let ok = Command::new("fusermount3")
        .arg("-u")
        .arg(&m.mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "fusermount3 -u {}", m.mnt.display());
    let mut c = m.child.take().unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st.success();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "the daemon did not exit within {secs} s of the unmount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A 256×256 PNG unique to (`writer`, tile): a tEXt chunk after IHDR names both.
fn writer_png(base: &[u8], writer: u32, t: TileAddr) -> Vec<u8> {
    let text = format!(
        "bundlefs\0writer {writer} tile {}/{}/{}",
        t.level, t.row, t.col
    );
    crate::support::png_with_text(base, &text)
}

fn base_png() -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(256, 256, image::Rgba([30, 120, 200, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Writes `tiles` of `writer` as an exploded tree (`Lnn/Rxxxxxxxx/Cxxxxxxxx.png`) under `dir`.
fn write_tree(dir: &Path, base: &[u8], writer: u32, tiles: &[TileAddr]) {
    for t in tiles {
        let p = dir
            .join(format!("L{:02}", t.level))
            .join(format!("R{:08x}", t.row))
            .join(format!("C{:08x}.png", t.col));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, writer_png(base, writer, *t)).unwrap();
    }
}

/// The largest "conflicts in all: N" an object-store writer logged.
fn conflicts_logged(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("conflicts in all: ").nth(1))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Two `-o rw` mounts of one cache, one per gateway (the second by `-o endpoint=`), rsync
/// overlapping tile sets into the same bundles at once. After unmount every tile is there and
/// equals one of its writers' (only one writer: that writer's), and the writers really collided
/// (conflicts logged by the daemons).
#[test]
fn two_rw_mounts_on_two_gateways_rsync_overlapping_tiles_and_lose_none() {
    crate::support::mount::need("rsync");
    let _gw = gw2_shared();
    let url = empty_cache("rw-two");
    let ep2 = std::env::var("AWS_ENDPOINT_URL_2").expect("AWS_ENDPOINT_URL_2 (second gateway)");
    let d = tempfile::tempdir().unwrap();
    let base = base_png();
    // Writer 0: level 3 whole and level 5 rows 0-19; writer 1: level 3 whole and rows 12-31.
    // Level 3 is one bundle both write whole, level 5 one bundle (32×32 tiles) sharing rows
    // 12-19: 704 tiles each, 320 of them written by both.
    let l3: Vec<TileAddr> = (0..8)
        .flat_map(|r| (0..8).map(move |c| TileAddr::new(3, r, c)))
        .collect();
    let rows = |a: u32, b: u32| -> Vec<TileAddr> {
        (a..b)
            .flat_map(|r| (0..32).map(move |c| TileAddr::new(5, r, c)))
            .collect()
    };
    let sets = [
        [l3.clone(), rows(0, 20)].concat(),
        [l3.clone(), rows(12, 32)].concat(),
    ];
    let srcs = [d.path().join("src0"), d.path().join("src1")];
    for w in 0..2 {
        write_tree(&srcs[w], &base, w as u32, &sets[w]);
    }
    let logs = [d.path().join("mount0.log"), d.path().join("mount1.log")];
    // A small write buffer (a flush every ~16 tiles) and a flush of what waits every 0.2 s:
    // both daemons rewrite the shared bundles often while the tiles come in.
    let flags = [
        "--write-buffer",
        "16k",
        "--flush-idle",
        "0",
        "--recheck",
        "0.2",
    ];
    let opts1 = format!("rw,endpoint={ep2}");
    let mut m0 = mount_logged(
        &url,
        &d.path().join("mnt0"),
        &[&["-o", "rw"][..], &flags[..]].concat(),
        &logs[0],
    );
    let mut m1 = mount_logged(
        &url,
        &d.path().join("mnt1"),
        &[&["-o", opts1.as_str()][..], &flags[..]].concat(),
        &logs[1],
    );
    let rsyncs: Vec<_> = (0..2)
        .map(|w| {
            let dest = [&m0, &m1][w].path("_alllayers");
            Command::new("timeout")
                .arg("300")
                .arg("rsync")
                .arg("-a")
                .arg(format!("{}/", srcs[w].display()))
                .arg(format!("{}/", dest.display()))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (w, r) in rsyncs.into_iter().enumerate() {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rsync {w}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&logs[w]).unwrap_or_default()
        );
    }
    let ok0 = unmount(&mut m0, 120);
    let ok1 = unmount(&mut m1, 120);
    let log = |w: usize| std::fs::read_to_string(&logs[w]).unwrap_or_default();
    assert!(ok0 && ok1, "a daemon failed:\n{}\n{}", log(0), log(1));
    // The probe learnt RGW 16's quirk on both mounts, and left no probe object behind.
    for w in 0..2 {
        assert!(log(w).contains("unquoted ETags"), "mount {w}:\n{}", log(w));
    }
    let c = Cache::open(&url).unwrap();
    let mut got: BTreeMap<TileAddr, Vec<u8>> = BTreeMap::new();
    for id in [
        TileAddr::new(3, 0, 0).bundle(),
        TileAddr::new(5, 0, 0).bundle(),
    ] {
        for (t, b) in c
            .read_group(&bundlefs::cache::TileGroup::bundle(id))
            .unwrap()
        {
            got.insert(t, b.to_vec());
        }
    }
    let mut writers: BTreeMap<TileAddr, Vec<u32>> = BTreeMap::new();
    for (w, set) in sets.iter().enumerate() {
        for t in set {
            writers.entry(*t).or_default().push(w as u32);
        }
    }
    assert_eq!(got.len(), writers.len(), "tiles stored vs tiles written");
    let mut from = [0usize; 2];
    for (t, ws) in &writers {
        let b = got.get(t).unwrap_or_else(|| panic!("tile {t} missing"));
        let who = ws.iter().find(|w| *b == writer_png(&base, **w, *t));
        let who = who.unwrap_or_else(|| panic!("tile {t} equals none of its writers {ws:?}"));
        from[*who as usize] += 1;
    }
    let conflicts = conflicts_logged(&logs[0]) + conflicts_logged(&logs[1]);
    eprintln!(
        "tiles: {}; held by writer 0/1: {from:?}; conflicts logged: {conflicts}",
        got.len()
    );
    assert!(
        conflicts > 0,
        "the two mounts never collided: the test proved nothing\n{}\n{}",
        log(0),
        log(1)
    );
    let probe_left = block_list(&url)
        .into_iter()
        .filter(|k| k.contains(bundlefs::cache::store::object::PROBE_NAME))
        .collect::<Vec<_>>();
    assert!(probe_left.is_empty(), "probe objects left: {probe_left:?}");
}

/// The keys directly under the cache's prefix at `url` (ListObjectsV2 with delimiter).
fn block_list(url: &str) -> Vec<String> {
    let u = parse(url);
    let client = store_client_at(&u, None).unwrap();
    let prefix = object_store::path::Path::from(u.prefix.as_str());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let l = rt
        .block_on(client.list_with_delimiter(Some(&prefix)))
        .unwrap();
    l.objects
        .into_iter()
        .map(|o| o.location.to_string())
        .collect()
}

/// A tile written through an `-o rw` mount and fsync'd is in its bundle in the bucket when fsync
/// returns (read by a separate client while the mount is still up); the time set on it (as
/// `touch`/`rsync -a` do) is accepted.
#[test]
fn fsync_through_an_rw_mount_returns_after_the_bundle_is_stored() {
    let url = empty_cache("rw-fsync");
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("mount.log");
    // Long idle and a big buffer: only the fsync (or the unmount) can flush.
    let m = mount_logged(
        &url,
        &d.path().join("mnt"),
        &["-o", "rw", "--flush-idle", "3600"],
        &log,
    );
    let base = base_png();
    let t = TileAddr::new(2, 1, 3);
    let dir = m.path("_alllayers/L02/R00000001");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("C00000003.png");
    let bytes = writer_png(&base, 7, t);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
    }
    let c = Cache::open(&url).unwrap();
    assert_eq!(
        c.tile(t).unwrap().as_deref(),
        Some(&bytes[..]),
        "the fsync'd tile is not in the bucket yet:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // A tile written without fsync waits in the buffer (so the check above could fail).
    let t2 = TileAddr::new(2, 1, 2);
    std::fs::write(dir.join("C00000002.png"), writer_png(&base, 7, t2)).unwrap();
    assert!(
        Cache::open(&url).unwrap().tile(t2).unwrap().is_none(),
        "a tile without fsync was flushed at once: the fsync check proves nothing"
    );
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(when)
        .unwrap();
    drop(m);
    let c = Cache::open(&url).unwrap();
    assert!(c.tile(t2).unwrap().is_some(), "flushed at unmount");
}

/// Runs `scripts/ceph-cluster.sh UNDO DIR N` when dropped (a stopped gateway or killed OSD comes
/// back even when the test fails).
struct Restore(&'static str, u32);

impl Drop for Restore {
    fn drop(&mut self) {
        cluster(self.0, self.1);
    }
}

/// A gateway stopped while mounted: reads of tiles fail with EIO within the time limit and the
/// log names the bundle object; an fsync fails with EIO and keeps the tile buffered; nothing
/// stored is damaged; once the gateway is back, reads work and the buffered tile is stored.
#[test]
fn a_stopped_gateway_gives_eio_then_reads_and_flushes_resume() {
    let _gw = GATEWAY_2.write().unwrap_or_else(|e| e.into_inner());
    let url = empty_cache("gw-stop");
    let ep2 = std::env::var("AWS_ENDPOINT_URL_2").expect("AWS_ENDPOINT_URL_2 (second gateway)");
    let base = base_png();
    // Four tiles stored through gateway 1 before the mount.
    let stored: Vec<TileAddr> = (0..4).map(|c| TileAddr::new(2, 1, c)).collect();
    let c = Cache::open(&url).unwrap();
    let bytes: Vec<Vec<u8>> = stored.iter().map(|t| writer_png(&base, 1, *t)).collect();
    let puts: Vec<(TileAddr, &[u8], Option<std::time::SystemTime>)> = stored
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (*t, &b[..], None))
        .collect();
    c.write_tiles_timed(&puts).unwrap();
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("mount.log");
    let opts = format!("rw,endpoint={ep2},timeout=3");
    let mut m = mount_logged(
        &url,
        &d.path().join("mnt"),
        &["-o", &opts, "--recheck", "0.5", "--flush-idle", "3600"],
        &log,
    );
    let row = m.path("_alllayers/L02/R00000001");
    let names: Vec<String> = std::fs::read_dir(&row)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(std::fs::read(row.join("C00000000.png")).unwrap(), bytes[0]);
    // A new tile written (not yet fsync'd) while the gateway is up: it waits in the buffer.
    // (In another row: level 2 of Web Mercator has columns 0-3 only, and row 1 holds all four.)
    let new_t = TileAddr::new(2, 0, 2);
    let new_bytes = writer_png(&base, 2, new_t);
    let row0 = m.path("_alllayers/L02/R00000000");
    std::fs::create_dir_all(&row0).unwrap();
    let mut f = std::fs::File::create(row0.join("C00000002.png")).unwrap();
    {
        use std::io::Write;
        f.write_all(&new_bytes).unwrap();
    }

    cluster("stop-gw", 2);
    let back = Restore("start-gw", 2);
    std::thread::sleep(Duration::from_millis(600)); // past --recheck: the index is checked again
    let t0 = std::time::Instant::now();
    let e = std::fs::read(row.join("C00000001.png")).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "read with the gateway down: {e}"
    );
    assert!(
        took < Duration::from_secs(15),
        "the failed read took {took:?}"
    );
    let e = f.sync_all().unwrap_err();
    drop(f);
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "fsync with the gateway down: {e}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let bundle = "_alllayers/L02/R0000C0000.bundle";
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains(bundle)),
        "no error line naming {bundle}:\n{text}"
    );
    eprintln!("failed read took {took:?}");
    // `bundlefs status` counts the failed flush, names it, and exits 1 while its tile waits.
    let status = || {
        let o = run(Command::new(bin()).arg("status").arg(&m.mnt).arg("--json"));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), v[0]["report"]["counters"].clone())
    };
    let (code, c) = status();
    assert_eq!(code, Some(1), "status with a failing flush: {c}");
    assert!(c["buffer"]["flush_failures"].as_u64() >= Some(1), "{c}");
    assert_eq!(c["buffer"]["failing_bundles"], 1, "{c}");
    assert_eq!(c["buffer"]["waiting_tiles"], 1, "{c}");
    assert!(
        c["buffer"]["last_error"]
            .as_str()
            .unwrap()
            .contains("level 2 bundle R0000C0000"),
        "{c}"
    );
    assert!(
        c["store"]["gets"].as_u64() >= Some(1),
        "store requests counted: {c}"
    );

    drop(back); // gateway 2 answers again
    assert_eq!(std::fs::read(row.join("C00000001.png")).unwrap(), bytes[1]);
    // fsync again: the tile is stored, and status is well again (the failure stays counted).
    let f = std::fs::File::options()
        .write(true)
        .open(row0.join("C00000002.png"))
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    let (code, c) = status();
    assert_eq!(code, Some(0), "status once stored: {c}");
    assert_eq!(c["buffer"]["failing_bundles"], 0, "{c}");
    assert!(c["buffer"]["flush_failures"].as_u64() >= Some(1), "{c}");
    assert!(
        unmount(&mut m, 60),
        "the daemon failed:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let c = Cache::open(&url).unwrap();
    for (t, b) in stored.iter().zip(&bytes) {
        assert_eq!(c.tile(*t).unwrap().as_deref(), Some(&b[..]), "tile {t}");
    }
    assert_eq!(
        c.tile(new_t).unwrap().as_deref(),
        Some(&new_bytes[..]),
        "the tile whose fsync failed was stored once the gateway was back"
    );
}

/// `kill -9` of one OSD while an rsync writes through an `-o rw` mount: with pools of size 3 and
/// min_size 2 the writer sees no error, and every tile is stored.
#[test]
fn kill_9_of_an_osd_mid_rsync_the_writer_sees_no_error() {
    crate::support::mount::need("rsync");
    let _gw = GATEWAY_2.write().unwrap_or_else(|e| e.into_inner());
    let url = empty_cache("osd-kill");
    let d = tempfile::tempdir().unwrap();
    let base = base_png();
    let tiles: Vec<TileAddr> = (0..32)
        .flat_map(|r| (0..32).map(move |c| TileAddr::new(5, r, c)))
        .collect();
    let src = d.path().join("src");
    write_tree(&src, &base, 3, &tiles);
    let log = d.path().join("mount.log");
    let mut m = mount_logged(
        &url,
        &d.path().join("mnt"),
        &["-o", "rw", "--write-buffer", "16k", "--flush-idle", "0"],
        &log,
    );
    let mut rsync = Command::new("timeout")
        .arg("300")
        .arg("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", m.path("_alllayers").display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    cluster("kill-osd", 1);
    let _back = Restore("start-osd", 1);
    let running = rsync.try_wait().unwrap().is_none();
    let out = rsync.wait_with_output().unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "rsync: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text()
    );
    assert!(unmount(&mut m, 120), "the daemon failed:\n{}", text());
    assert!(
        running,
        "rsync had ended before the OSD was killed: the test proved nothing"
    );
    let c = Cache::open(&url).unwrap();
    for t in &tiles {
        assert_eq!(
            c.tile(*t).unwrap().as_deref(),
            Some(&writer_png(&base, 3, *t)[..]),
            "tile {t}"
        );
    }
}

/// Object-store settings are refused by name where they mean nothing: `-o endpoint=` on a cache
/// folder, `--single-writer` on a read-only mount. (No cluster needed.)
#[test]
fn object_store_mount_settings_are_refused_where_they_mean_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let local = esri_sample_cache();
    let out = run(Command::new(bin())
        .arg("mount")
        .arg(&local)
        .arg(&mnt)
        .args(["-o", "endpoint=http://127.0.0.1:7480"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("-o endpoint=") && err.contains("object store"),
        "{err}"
    );
    let out = run(Command::new(bin())
        .arg("mount")
        .arg("s3://bucket/prefix")
        .arg(&mnt)
        .arg("--single-writer"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--single-writer") && err.contains("-o rw"),
        "{err}"
    );
    assert!(!is_mounted(&mnt));
}

/// `kill -9` of an `-o rw` mount of `s3://…` while an rsync writes through it: every bundle in
/// the bucket is still valid (`verify --decode`), every tile fsync'd before is there, and every
/// stored tile is one that was sent (a PUT replaces a bundle whole: old or new, never torn).
#[test]
fn kill_9_of_an_rw_mount_mid_flush_leaves_valid_bundles_and_every_fsynced_tile() {
    use std::io::Write;
    crate::support::mount::need("rsync");
    let url = empty_cache("mount-kill");
    let d = tempfile::tempdir().unwrap();
    let base = base_png();
    let src = d.path().join("src");
    let all: Vec<TileAddr> = (0..=5u8)
        .flat_map(|l| {
            (0..(1u32 << l))
                .flat_map(move |r| (0..(1u32 << l)).map(move |c| TileAddr::new(l, r, c)))
        })
        .collect();
    write_tree(&src, &base, 4, &all);
    let log = d.path().join("mount.log");
    let mnt = d.path().join("mnt");
    let mut synced = Vec::new();
    {
        let mut m = mount_logged(
            &url,
            &mnt,
            &["-o", "rw", "--write-buffer", "16k", "--flush-idle", "0.2"],
            &log,
        );
        // Tiles written and fsync'd one by one before the rsync: each acknowledged by fsync.
        let dir = m.path("_alllayers/L04/R00000003");
        std::fs::create_dir_all(&dir).unwrap();
        for col in 0..16u32 {
            let t = TileAddr::new(4, 3, col);
            let mut f = std::fs::File::create(dir.join(format!("C{col:08x}.png"))).unwrap();
            f.write_all(&writer_png(&base, 4, t)).unwrap();
            f.sync_all().unwrap();
            synced.push(t);
        }
        let mut rsync = Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.path("_alllayers").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill the daemon once a good part of the tiles reached the bucket (flushes go on all
        // along with this buffer).
        let start = std::time::Instant::now();
        loop {
            let c = Cache::open(&url).unwrap();
            let n: u64 = c
                .levels()
                .unwrap()
                .into_iter()
                .map(|l| c.level_stats(l).unwrap().tiles)
                .sum();
            if n > synced.len() as u64 + 100 || start.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        let child = m.child.as_mut().unwrap();
        child.kill().unwrap(); // SIGKILL
                               // Abort the dead daemon's connection, as in the folder's kill test (writeback.rs).
        let _ = Command::new("umount").arg("-f").arg(&mnt).status();
        child.wait().unwrap();
        let _ = rsync.wait();
    }
    assert!(!is_mounted(&mnt));
    let c = Cache::open(&url).unwrap();
    let report = bundlefs::jobs::verify::verify(&c, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let stored = all_tiles(&c);
    for t in &synced {
        assert_eq!(
            stored.get(t),
            Some(&writer_png(&base, 4, *t)),
            "fsync'd tile {t} lost"
        );
    }
    for (t, b) in &stored {
        assert_eq!(*b, writer_png(&base, 4, *t), "tile {t}");
    }
    eprintln!("{} of {} tiles stored at the kill", stored.len(), all.len());
    assert!(
        stored.len() > synced.len() && stored.len() < all.len(),
        "the kill should land mid-transfer: {} of {} stored\n{}",
        stored.len(),
        all.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Size and band checksums of the first `levels` levels (level 0 first) of the cache whose
/// conf.xml is `path` (a file, or `/vsis3/BUCKET/KEY`), as the GDAL inside the PyPI rasterio wheel
/// (GDAL ≥ 3.8: Debian's gdalinfo 3.6 dies with SIGFPE on the Esri sample) computes them through
/// its ESRIC driver. Fails, naming the path, when python3 or rasterio is missing.
fn gdal_checksums(path: &str, levels: usize, env: &[(&str, String)]) -> Vec<String> {
    let script = r#"
import sys, rasterio
path, levels = sys.argv[1], int(sys.argv[2])
with rasterio.open(path) as ds:
    n = len(ds.overviews(1))
    print(ds.driver)
for o in [n - 1 - i for i in range(levels)]:
    with rasterio.open(path, overview_level=o) as d:
        print(d.width, d.height, [d.checksum(b) for b in range(1, d.count + 1)])
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, path, &levels.to_string()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "python3 with rasterio could not read {path} (scripts/test.sh installs rasterio with pip):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ESRIC"), "{path}: {text}");
    lines.map(str::to_string).collect()
}

#[test]
fn gdal_reads_bundles_bundlefs_wrote_into_the_store_via_vsis3() {
    let local = esri_sample_cache();
    let url = fresh_url("gdal-vsis3");
    // Bundles written by bundlefs: levels 0-1 by export, level 2 merged in by import.
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2", "--levels", "0-1"])
            .arg(&local)
            .arg(&url),
    );
    run_ok(Command::new(bin()).arg("import").arg(&local).arg(&url));
    let want = gdal_checksums(local.join("conf.xml").to_str().unwrap(), 3, &[]);
    assert_eq!(want.len(), 3, "{want:?}");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (cluster env)");
    let host = endpoint
        .strip_prefix("http://")
        .expect("an http:// endpoint")
        .trim_end_matches('/')
        .to_string();
    let env = [
        ("AWS_S3_ENDPOINT", host),
        ("AWS_HTTPS", "NO".to_string()),
        ("AWS_VIRTUAL_HOSTING", "FALSE".to_string()),
        // GDAL caches nothing between runs; make sure it asks the store, not a stale listing.
        ("CPL_VSIL_CURL_NON_CACHED", "/vsis3/".to_string()),
    ];
    let vsi = format!("/vsis3/{}/conf.xml", url.strip_prefix("s3://").unwrap());
    let got = gdal_checksums(&vsi, 3, &env);
    assert_eq!(got, want, "{vsi} vs {}", local.display());
}

/// Another mount's write reaches a reading mount within about `--recheck`, although the kernel
/// may keep names and attributes for `--ttl` (an hour here): the reader's storage finds the
/// bundle's new ETag and the mount tells the kernel to forget that bundle's changed rows.
#[test]
fn a_write_through_one_mount_is_seen_by_another_within_recheck() {
    let url = empty_cache("two-mounts-recheck");
    let d = tempfile::tempdir().unwrap();
    let (wlog, rlog) = (d.path().join("writer.log"), d.path().join("reader.log"));
    let w = mount_logged(
        &url,
        &d.path().join("w"),
        &["-o", "rw", "--flush-idle", "3600"],
        &wlog,
    );
    let base = base_png();
    let t = TileAddr::new(2, 1, 3);
    let rel = "_alllayers/L02/R00000001/C00000003.png";
    std::fs::create_dir_all(w.path("_alllayers/L02/R00000001")).unwrap();
    let write = |bytes: &[u8]| {
        use std::io::Write;
        let mut f = std::fs::File::create(w.path(rel)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
    };
    let first = writer_png(&base, 1, t);
    write(&first);
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
    let mut second = writer_png(&base, 2, t);
    second.extend_from_slice(&[0; 100]);
    assert_ne!(second.len(), first.len());
    let written = std::time::Instant::now();
    write(&second);
    let seen = loop {
        let got = std::fs::read(r.path(rel)).unwrap();
        if got == second {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(15),
            "the reader still shows {} bytes (want {}) 15 s after the write:\n{}",
            got.len(),
            second.len(),
            std::fs::read_to_string(&rlog).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("the reading mount showed the new tile {seen:?} after the writer's fsync");
    assert!(
        seen < Duration::from_secs(5),
        "{seen:?}: not within recheck (0.5 s) and a few polls"
    );
    drop(r);
    drop(w);
}

/// Per-tile times in the store (the `<bundle>.bundle.times` sidecar objects): `rsync -a` of a
/// folder of tiles into an `-o rw` mount of a fresh prefix (a small write buffer, so each bundle
/// is flushed several times and earlier tiles' times must survive the later rebuilds); after a
/// remount a second `rsync -a --dry-run --itemize-changes` of the same folder lists no tile, and
/// `stat` shows each source file's mtime. Then `touch -d` of a tile through an rw mount survives
/// a remount. Control: a source tile given a new time is listed by the same dry run.
#[test]
fn rsync_a_times_survive_a_remount_so_a_second_rsync_sends_no_tile() {
    let _gw = gw2_shared();
    rsync_times_survive_a_remount(&empty_cache("times-rsync"));
}

/// The same for an exploded cache in the store (a tile object's time cannot be set: the times go
/// to each row folder's `.bundlefs-times` object).
#[test]
fn rsync_a_times_survive_a_remount_of_an_exploded_prefix() {
    let _gw = gw2_shared();
    rsync_times_survive_a_remount(&empty_exploded_cache("times-rsync-exploded"));
}

/// The largest count of tile-times PUTs a daemon's log reports ("tile-times sidecars: N GETs, M
/// PUTs, …" of Compact V2, "tile-times objects: M PUTs, …" of exploded).
fn times_puts_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("tile-times ").nth(1))
        .filter_map(|s| {
            s.split(" PUTs")
                .next()?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

fn rsync_times_survive_a_remount(url: &str) {
    crate::support::mount::need("rsync");
    let url = url.to_string();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let base = base_png();
    // Level 3 whole (one bundle) and level 5 rows 0-3 (one bundle): 192 tiles.
    let tiles: Vec<TileAddr> = (0..8)
        .flat_map(|r| (0..8).map(move |c| TileAddr::new(3, r, c)))
        .chain((0..4).flat_map(|r| (0..32).map(move |c| TileAddr::new(5, r, c))))
        .collect();
    write_tree(&src, &base, 7, &tiles);
    let rel = |t: &TileAddr| format!("L{:02}/R{:08x}/C{:08x}.png", t.level, t.row, t.col);
    // Source times in the past, one per file and with nanoseconds: neither the flush's time nor
    // the bundle's can match them by chance.
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let src_time = |i: usize| t0 + Duration::new(61 * i as u64, 1000 * i as u32 + 7);
    for (i, t) in tiles.iter().enumerate() {
        std::fs::File::options()
            .write(true)
            .open(src.join(rel(t)))
            .unwrap()
            .set_modified(src_time(i))
            .unwrap();
    }
    let rsync = |args: &[&str], dest: &Path| {
        let out = Command::new("timeout")
            .arg("300")
            .arg("rsync")
            .args(args)
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", dest.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rsync {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Tiles rsync would transfer: an itemized line (`YXcstpoguax`) whose update type is not
    // `.` (attributes only), or whose size or time differs. A read-only mount shows tiles
    // 0444, so `.f...p.....` (permissions only, no data sent) is not a transfer.
    let tiles_listed = |itemized: &str| -> Vec<String> {
        itemized
            .lines()
            .filter(|l| l.trim_end().ends_with(".png"))
            .filter(|l| {
                let b = l.as_bytes();
                b[0] != b'.' || b[3] != b'.' || b[4] != b'.'
            })
            .map(str::to_string)
            .collect()
    };
    let logs: Vec<_> = (0..4).map(|i| d.path().join(format!("m{i}.log"))).collect();
    let flags = ["--write-buffer", "16k", "--flush-idle", "0"];

    // 1. rsync -a into a writable mount, unmount (flushes the rest).
    let mut w = mount_logged(
        &url,
        &d.path().join("w"),
        &[&["-o", "rw"][..], &flags[..]].concat(),
        &logs[0],
    );
    rsync(&["-a"], &w.path("_alllayers"));
    assert!(
        unmount(&mut w, 120),
        "the writing mount failed:\n{}",
        std::fs::read_to_string(&logs[0]).unwrap_or_default()
    );
    let log0 = std::fs::read_to_string(&logs[0]).unwrap_or_default();
    assert!(!log0.contains("not recorded"), "times lost:\n{log0}");
    // The writer's request counters (sidecar cost, for doc/object-store.md).
    for l in log0.lines().filter(|l| l.contains("tile-times ")) {
        eprintln!("writer: {l}");
    }

    // 2. A fresh read-only mount: every tile shows its source's time, nothing to send again.
    let r = mount_logged(&url, &d.path().join("r"), &[], &logs[1]);
    let mnt = r.path("_alllayers");
    for (i, t) in tiles.iter().enumerate() {
        let m = std::fs::metadata(mnt.join(rel(t))).unwrap();
        assert_eq!(m.len(), std::fs::metadata(src.join(rel(t))).unwrap().len());
        assert_eq!(m.modified().unwrap(), src_time(i), "mtime of {}", rel(t));
    }
    let again = rsync(&["-a", "--dry-run", "--itemize-changes"], &mnt);
    assert_eq!(
        tiles_listed(&again),
        Vec::<String>::new(),
        "a second rsync -a would send tiles again:\n{again}"
    );
    // Control: the same dry run does list a tile whose source time changed.
    let changed = rel(&tiles[5]);
    std::fs::File::options()
        .write(true)
        .open(src.join(&changed))
        .unwrap()
        .set_modified(src_time(5) + Duration::from_secs(3600))
        .unwrap();
    let listed = tiles_listed(&rsync(&["-a", "--dry-run", "--itemize-changes"], &mnt));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].ends_with(&changed), "{listed:?}");
    std::fs::File::options()
        .write(true)
        .open(src.join(&changed))
        .unwrap()
        .set_modified(src_time(5))
        .unwrap();
    drop(r);

    // 3. touch -d of a stored tile through a writable mount survives a remount.
    let touched = tiles[70];
    let other = tiles[71];
    let mut w = mount_logged(&url, &d.path().join("w2"), &["-o", "rw"], &logs[2]);
    let wm = w.path("_alllayers");
    run_ok(
        Command::new("touch")
            .env("TZ", "UTC")
            .args(["-d", "2001-02-03 04:05:06.789"])
            .arg(wm.join(rel(&touched))),
    );
    let want = std::time::UNIX_EPOCH + Duration::new(981_173_106, 789_000_000);
    assert_eq!(
        std::fs::metadata(wm.join(rel(&touched)))
            .unwrap()
            .modified()
            .unwrap(),
        want
    );
    assert!(unmount(&mut w, 60), "the touching mount failed");
    let log2 = std::fs::read_to_string(&logs[2]).unwrap_or_default();
    assert_eq!(
        times_puts_in(&log2),
        1,
        "one sidecar PUT for one touch:\n{log2}"
    );
    let r = mount_logged(&url, &d.path().join("r2"), &[], &logs[3]);
    let mnt = r.path("_alllayers");
    let time_of = |t: &TileAddr| {
        std::fs::metadata(mnt.join(rel(t)))
            .unwrap()
            .modified()
            .unwrap()
    };
    assert_eq!(time_of(&touched), want, "the touched time after a remount");
    assert_eq!(time_of(&other), src_time(71), "a neighbour's time kept");
    drop(r);
}

/// A bundle with dead space written by another program (here a local `delete`, as ArcGIS or
/// MapProxy leave them) and uploaded as it is: `compact` of the prefix judges it from its index,
/// rebuilds it and puts it conditionally; the tiles stay those of the local folder, and a bundle
/// under the threshold is left alone. (Before the storage seam carried compact, this failed on a
/// local lock-file path under the URL.)
#[test]
fn compact_rewrites_an_uploaded_bundle_with_dead_space() {
    let d = tempfile::tempdir().unwrap();
    let local = crate::support::sample_cache(d.path(), "0-2");
    let nw = "-20037508,1,-1,20037508";
    run_ok(Command::new(bin()).args([
        "delete",
        local.to_str().unwrap(),
        "--levels",
        "2",
        "--extent",
        nw,
    ]));
    let url = fresh_url("compact");
    upload(&local, &url);
    let dead = |cache: &str| info_json(cache)["total"]["deadBytes"].as_u64().unwrap();
    let before = dead(&url);
    assert!(before > 0, "the uploaded L02 bundle has dead space");
    assert_eq!(before, dead(local.to_str().unwrap()));
    let out = run_ok(Command::new(bin()).args(["compact", &url, "--min-dead", "99%"]));
    assert!(out.contains("0 rewritten"), "under the threshold: {out}");
    assert_eq!(dead(&url), before);
    let out = run_ok(Command::new(bin()).args(["compact", &url, "--min-dead", "0%"]));
    assert!(out.contains("3 bundles checked, 1 rewritten"), "{out}");
    assert_eq!(dead(&url), 0, "no dead space left");
    assert_same_tiles(
        &Cache::open(&url).unwrap(),
        &all_tiles(&Cache::open(&local).unwrap()),
        "store after compact",
    );
    let out = run_ok(Command::new(bin()).args(["verify", "--decode", &url]));
    assert!(out.contains("0 problem(s)"), "{out}");
}

/// Credentials as the AWS CLI finds them: an fstab line mounts an `s3://` cache with keys from a
/// profile of a credentials file (`profile=`, `credentials_file=`), though the environment mount(8)
/// runs it in holds wrong keys; `AWS_PROFILE` with `AWS_SHARED_CREDENTIALS_FILE` serves `info`
/// without any key in the environment; a missing profile is an error naming it and the file.
#[test]
fn credentials_from_a_profile_mount_an_s3_cache_through_fstab() {
    use crate::support::mount::{need, sh, OnPath, Unmount};
    need("mount.fuse3");
    let local = esri_sample_cache();
    let url = fresh_url("profile");
    upload(&local, &url);
    let d = tempfile::tempdir().unwrap();
    let key = std::env::var("AWS_ACCESS_KEY_ID").expect("the cluster's AWS_ACCESS_KEY_ID");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let creds = d.path().join("credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[tiles]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    // `info` with AWS_PROFILE and the file only.
    let info = |profile: &str| {
        run(Command::new(bin())
            .args(["info", &url])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_PROFILE", profile)
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", d.path().join("no-config")))
    };
    let o = info("tiles");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = info("missing");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("AWS_PROFILE: no profile missing in") && err.contains(creds.to_str().unwrap()),
        "{err}"
    );
    assert!(!err.contains(&secret), "no secret in messages: {err}");
    // fstab, with wrong keys in mount(8)'s environment: the profile's keys are used.
    let _on_path = OnPath::new();
    let mnt = d.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let fstab = d.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{url} {} fuse.bundlefs ro,_netdev,nofail,profile=tiles,credentials_file={},endpoint={endpoint} 0 0\n",
            mnt.display(),
            creds.display()
        ),
    )
    .unwrap();
    let _guard = Unmount(mnt.clone());
    let (ok, out, err) = sh(&format!(
        "AWS_ACCESS_KEY_ID=wrong AWS_SECRET_ACCESS_KEY=wrong mount -T {} {}",
        fstab.display(),
        mnt.display()
    ));
    assert!(ok, "mount -T: {out}{err}");
    let want = all_tiles(&Cache::open(&local).unwrap());
    let (t, bytes) = want.iter().next().unwrap();
    let shown = std::fs::read(mnt.join(format!(
        "_alllayers/L{:02}/R{:08x}/C{:08x}.png",
        t.level, t.row, t.col
    )))
    .or_else(|_| {
        std::fs::read(mnt.join(format!(
            "_alllayers/L{:02}/R{:08x}/C{:08x}.jpg",
            t.level, t.row, t.col
        )))
    })
    .unwrap();
    assert_eq!(&shown, bytes);
    let (ok, out, err) = sh(&format!("umount {}", mnt.display()));
    assert!(ok, "umount: {out}{err}");
}

/// The storage contract (`cache::store::contract`, which the unit tests run over an in-memory
/// store) over the three object layouts against Ceph RGW: the real conditional PUTs, ETags and
/// listings. Each test gets a fresh prefix.
#[test]
fn the_storage_contract_holds_on_ceph_for_every_object_layout() {
    use bundlefs::cache::store::contract::{Maker, TESTS};
    use bundlefs::cache::store::object::{Connection, ExplodedObjects, V1Objects, V2Objects};
    use bundlefs::format::sniff::ImageKind;

    fn conn() -> Arc<Connection> {
        let url = parse(&fresh_url("contract"));
        let client = store_client_at(&url, None).unwrap();
        let opts = CacheOptions {
            recheck: Duration::ZERO,
            ..CacheOptions::default()
        };
        Arc::new(
            Connection::new(url, client, "_alllayers", opts).with_retry(RetryPolicy {
                attempts: 200,
                base_delay: Duration::from_millis(2),
                max_delay: Duration::from_millis(50),
            }),
        )
    }
    fn v2() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
        (Box::new(()), Box::new(V2Objects::new(conn())))
    }
    fn exploded() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
        (
            Box::new(()),
            Box::new(ExplodedObjects::new(conn(), ImageKind::Png)),
        )
    }
    fn v1() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
        (Box::new(()), Box::new(V1Objects::new(conn())))
    }
    let makers: [(&str, Maker); 3] = [("v2", v2), ("exploded", exploded), ("v1", v1)];
    for (layout, make) in makers {
        for (name, test) in TESTS {
            eprintln!("contract on Ceph: {layout} layout, {name}");
            test(make);
        }
    }
}

/// Two `bundlefs serve` processes over one Compact V2 cache in Ceph (each its own connection,
/// as two replicas behind a load balancer): every tile of the Esri sample from both, through
/// the REST route, is the stored bytes, with the same ETag from each; a missing tile is a 404 from
/// both.
#[test]
fn two_serves_answer_from_one_cache() {
    let url = fresh_url("serve");
    upload(&esri_sample_cache(), &url);
    let a = crate::serve::Served::start(&[&format!("world={url}")]);
    let b = crate::serve::Served::start(&[&format!("world={url}")]);
    let tiles = all_tiles(&Cache::open(esri_sample_cache()).unwrap());
    for (t, bytes) in &tiles {
        let path = format!(
            "/arcgis/rest/services/world/MapServer/tile/{}/{}/{}",
            t.level, t.row, t.col
        );
        let (ra, rb) = (a.get(&path), b.get(&path));
        for r in [&ra, &rb] {
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert!(&r.body == bytes, "{path}: not the stored bytes");
        }
        assert_eq!(ra.header("etag"), rb.header("etag"), "{path}");
    }
    for s in [&a, &b] {
        let r = s.get("/xyz/world/2/0/7.jpg");
        assert_eq!(r.status, 404, "{}", r.text());
    }
}

/// Four `render --shard I/4` processes at once into one Compact V2 cache in Ceph, shards 0 and 1
/// through gateway 1 and shards 2 and 3 through gateway 2 (each process its own
/// `AWS_ENDPOINT_URL`), from the fake ArcGIS service of `scale.rs` (levels 8-9 around the map's
/// centre, supertiles of 4 × 4 tiles), store exactly the tiles one process stores into a local
/// cache, and ask the source for each supertile once in total. Each gateway's log shows PUTs into
/// the cache: both gateways really took bundles.
#[test]
fn four_render_shards_through_two_gateways_store_what_one_process_stores() {
    use crate::scale::{cache, render_cmd, server};
    use bundlefs::cache::shard::Shard;
    let _gw = gw2_shared();
    let url = fresh_url("render-shards");
    let ep1 = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (first gateway)");
    let ep2 = std::env::var("AWS_ENDPOINT_URL_2").expect("AWS_ENDPOINT_URL_2 (second gateway)");
    let d = tempfile::tempdir().unwrap();
    let (one_srv, one_asked) = server(Duration::ZERO);
    let whole = cache(d.path(), "whole");
    run_ok(&mut render_cmd(&whole, &one_srv, &[]));
    let want = all_tiles(&Cache::open(&whole).unwrap());
    assert_eq!(want.len(), 256 + 1024);
    // Both gateways have work: of the 8 bundles, some belong to shards 0-1, some to shards 2-3.
    let shards: Vec<Shard> = (0..4).map(|i| format!("{i}/4").parse().unwrap()).collect();
    for pair in shards.chunks(2) {
        assert!(
            want.keys()
                .any(|t| pair.iter().any(|s| s.takes(&t.bundle()))),
            "shards {pair:?} take no bundle: the test would leave a gateway idle"
        );
    }

    // The same empty cache in the store: its conf.xml and conf.cdi uploaded.
    upload(&cache(d.path(), "empty"), &url);
    let (srv, asked) = server(Duration::from_millis(5));
    let took = crate::scale::run_at_once(
        shards
            .iter()
            .map(|s| {
                let ep = if s.index < 2 { &ep1 } else { &ep2 };
                let mut c = render_cmd(&url, &srv, &["--shard", &s.to_string()]);
                c.env("AWS_ENDPOINT_URL", ep);
                c
            })
            .collect(),
    );
    eprintln!("shards said: {took:?}");
    assert_same_tiles(
        &Cache::open(&url).unwrap(),
        &want,
        "four shards through two gateways vs one local process",
    );
    let mut a = asked.lock().unwrap().clone();
    let mut b = one_asked.lock().unwrap().clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a.len(), 16 + 64, "each supertile asked once: {took:?}");
    assert_eq!(a, b, "the supertiles one process asks for");
    // Each gateway's access log (RGW's `beast:` lines) has PUTs of bundles of this cache.
    for gw in [1, 2] {
        let puts: usize = bundle_puts(gw, &url, 0).values().sum();
        eprintln!("gateway {gw}: {puts} bundle PUT(s)");
        assert!(
            puts > 0,
            "no bundle PUT of {url} in {}",
            gateway_log(gw).display()
        );
    }
    let out = run_ok(Command::new(bin()).args(["verify", &url]));
    assert!(out.contains("0 problem(s)"), "{out}");
}

/// The access log of gateway `gw` (1 or 2) of the cluster.
fn gateway_log(gw: u32) -> std::path::PathBuf {
    cluster_dir()
        .join("log")
        .join(format!("client.rgw.gw{gw}.log"))
}

/// The PUTs of bundles of the cache at `url` in gateway `gw`'s access log (RGW's `beast:` lines)
/// from byte `from` on: bundle key under the prefix (`_alllayers/L08/R0000C0000.bundle`) → PUTs.
fn bundle_puts(gw: u32, url: &str, from: u64) -> BTreeMap<String, usize> {
    let text = std::fs::read(gateway_log(gw)).unwrap();
    let text = String::from_utf8_lossy(&text[from as usize..]);
    let start = format!("\"PUT /{}/", url.trim_start_matches("s3://"));
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.split_once(&start).map(|(_, r)| r) else {
            continue;
        };
        let key = rest.split_once(' ').map_or(rest, |(k, _)| k);
        if key.ends_with(".bundle") {
            *out.entry(key.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// A `render --shard 0/2` into a Compact V2 cache in Ceph killed (SIGKILL) mid-run, once a
/// bundle of its share is complete, and run again (`scale::KilledShard`, as against a folder in
/// `scale.rs`): the rerun completes the share (and stores nothing of the other shard), asks the
/// source only for supertiles with a tile missing at the kill, and, per gateway 1's log, PUTs no
/// bundle whose tiles were all stored when it started and every bundle that lacked some; the
/// killed process leaves nothing in the way (object stores have no locks; a PUT is whole or
/// not at all). `verify` finds no problem.
#[test]
fn a_killed_render_shard_run_again_completes_its_share_in_the_store() {
    use crate::scale::{cache, KilledShard};
    let url = fresh_url("shard-kill");
    let d = tempfile::tempdir().unwrap();
    upload(&cache(d.path(), "empty"), &url);
    // Complete bundles of the share among `stored`.
    let complete = |stored: &BTreeMap<TileAddr, Vec<u8>>, share: &BTreeMap<TileAddr, Vec<u8>>| {
        let mut b: BTreeMap<BundleId, bool> = BTreeMap::new();
        for t in share.keys() {
            *b.entry(t.bundle()).or_insert(true) &= stored.contains_key(t);
        }
        b
    };
    let k = KilledShard::start(d.path(), &url, |stored, share| {
        complete(stored, share).values().any(|c| *c)
    });
    // Requests of the killed process still under way when it died are over by now.
    std::thread::sleep(Duration::from_secs(1));
    let at_rerun = all_tiles(&Cache::open(&url).unwrap());
    let from = std::fs::metadata(gateway_log(1)).unwrap().len();
    // Bundle key under the prefix (as in `bundle_puts`) → complete when the rerun started.
    let done: BTreeMap<String, bool> = complete(&at_rerun, &k.share)
        .into_iter()
        .map(|(id, c)| {
            let key = format!(
                "_alllayers/{}/{}.bundle",
                bundlefs::format::exploded::level_dir(id.level),
                bundlefs::format::exploded::bundle_base(&id)
            );
            (key, c)
        })
        .collect();
    eprintln!(
        "at the kill {} tiles of {} stored; bundles complete when the rerun started: {done:?}",
        k.stored_at_kill.len(),
        k.share.len()
    );
    assert!(
        done.values().any(|c| *c) && done.values().any(|c| !*c),
        "{done:?}"
    );
    let again = k.rerun(&url);
    // RGW writes its log lines as requests end; the last ones may trail the process's exit.
    std::thread::sleep(Duration::from_secs(1));
    let puts = bundle_puts(1, &url, from);
    eprintln!(
        "the rerun asked for {} supertile(s), PUT bundles {puts:?}",
        again.len()
    );
    for (key, complete) in &done {
        let n = puts.get(key).copied().unwrap_or(0);
        if *complete {
            assert_eq!(n, 0, "{key} was complete, and the rerun PUT it again");
        } else {
            assert!(n > 0, "{key} lacked tiles, and the rerun did not PUT it");
        }
    }
    assert_eq!(
        puts.len(),
        done.values().filter(|c| !**c).count(),
        "{puts:?}"
    );
    let out = run_ok(Command::new(bin()).args(["verify", &url]));
    assert!(out.contains("0 problem(s)"), "{out}");
}
