//! Caches in Azure Blob Storage (`az://CONTAINER/PREFIX`) against Microsoft's Azurite emulator,
//! started around the test run by `scripts/test.sh` (or by hand: `scripts/azurite.sh start DIR`,
//! then `. DIR/env`), which exports `AZURE_STORAGE_USE_EMULATOR=true`, `BUNDLEFS_AZ_CONTAINER` and
//! `BUNDLEFS_AZ_TEST=1`. Without them these tests fail (they are never skipped). Each test works
//! under its own prefix of the container.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bundlefs::cache::store::object::{store_client_at, ObjectStorage, RetryPolicy};
use bundlefs::cache::url::{ObjectUrl, Scheme};
use bundlefs::cache::{Cache, CacheOptions, GroupView, Storage, TileBytes, TileGroup};
use bundlefs::format::{BundleId, Slot, TileAddr};

use crate::support::mount::Mounted;
use crate::support::{bin, run, run_ok, tree_files};

/// The container of the emulator; fails the test when its environment is missing.
fn container() -> String {
    assert!(
        std::env::var_os("BUNDLEFS_AZ_TEST").is_some(),
        "BUNDLEFS_AZ_TEST is not set: these tests need the Azurite emulator that \
         scripts/test.sh (or scripts/azurite.sh start DIR; . DIR/env) starts around them"
    );
    std::env::var("BUNDLEFS_AZ_CONTAINER").expect("BUNDLEFS_AZ_CONTAINER (from azurite.sh's env)")
}

/// A fresh `az://CONTAINER/it/NAME-PID-NANOS` URL no other test or run uses.
fn fresh_url(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "az://{}/it/{name}-{}-{nanos}",
        container(),
        std::process::id()
    )
}

/// `bundlefs sample` levels 0-3 (85 tiles) in a temporary folder.
fn sample(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    run_ok(
        Command::new(bin())
            .arg("sample")
            .arg(&src)
            .args(["--levels", "0-3"]),
    );
    src
}

fn exploded_tiles(cache: &str, out: &Path) -> BTreeMap<String, Vec<u8>> {
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(cache)
            .arg(out)
            .args(["--storage", "exploded"]),
    );
    tree_files(&out.join("_alllayers"))
}

/// Every command on a cache in Azure Blob Storage: export into it, info, verify --decode, export
/// out of it (equal to the local export), a read-only mount (equal byte for byte), an `-o rw`
/// mount taking a copied tile (the compare-and-swap probe passes on Azurite), delete.
#[test]
fn a_cache_in_azure_blob_storage_works_like_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let src = sample(d.path());
    let url = fresh_url("cache");
    let parsed = ObjectUrl::parse(&url).unwrap().unwrap();
    assert_eq!(parsed.scheme, Scheme::Azure);
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(&url)
            .args(["--storage", "compact-v2"]),
    );
    let info = run_ok(Command::new(bin()).args(["info", "--json", &url]));
    let local_info = run_ok(Command::new(bin()).arg("info").arg("--json").arg(&src));
    let tiles_of = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["tiles"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(tiles_of(&info), tiles_of(&local_info), "info --json tiles");
    run_ok(Command::new(bin()).args(["verify", "--decode", &url]));

    let want = exploded_tiles(src.to_str().unwrap(), &d.path().join("local"));
    let got = exploded_tiles(&url, &d.path().join("from-az"));
    assert_eq!(want.len(), 85);
    assert!(got == want, "export of az:// differs from the local export");

    // Read-only mount: the same tree as the folder's exploded export.
    {
        let m = Mounted::start(Path::new(&url), &d.path().join("ro"), &[]);
        let seen = tree_files(&m.mnt.join("_alllayers"));
        assert!(seen == want, "the mount of az:// differs from the export");
    }

    // A writable mount: the probe passes, a copied tile lands in its bundle.
    let new_tile = want.values().next().unwrap().clone();
    {
        let m = Mounted::start(Path::new(&url), &d.path().join("rw"), &["-o", "rw"]);
        let dir = m.mnt.join("_alllayers/L03/R00000007");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("C00000000.png"), &new_tile).unwrap();
        let f = std::fs::File::open(dir.join("C00000000.png")).unwrap();
        f.sync_all().unwrap();
    }
    let c = Cache::open(&url).unwrap();
    let t = c
        .tile(TileAddr::new(3, 7, 0))
        .unwrap()
        .expect("copied tile");
    assert_eq!(&t[..], &new_tile[..]);

    // delete through the same storage seam.
    run_ok(Command::new(bin()).args(["delete", &url, "--levels", "3"]));
    let c = Cache::open(&url).unwrap();
    assert!(c.tile(TileAddr::new(3, 7, 0)).unwrap().is_none(), "deleted");
    assert!(c.tile(TileAddr::new(2, 0, 0)).unwrap().is_some());
}

/// Two writers update one bundle in Azure Blob Storage at once: each one's tiles survive, the
/// slots both write hold one of theirs, and they really collided (conflicts counted).
#[test]
fn racing_writers_on_azure_lose_no_tile() {
    let url = ObjectUrl::parse(&fresh_url("race")).unwrap().unwrap();
    let id = BundleId {
        level: 4,
        row0: 0,
        col0: 0,
    };
    const ROUNDS: u32 = 20;
    let tile = |w: u32, n: u32| format!("writer {w} tile {n} ").repeat(20).into_bytes();
    let slot = |n: u32| Slot {
        row: n / 128,
        col: n % 128,
    };
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let u = url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let client = store_client_at(&u, None).unwrap();
                let s = ObjectStorage::with_store(u, client, "_alllayers", CacheOptions::default())
                    .with_retry(RetryPolicy {
                        attempts: 60,
                        base_delay: Duration::from_millis(5),
                        max_delay: Duration::from_millis(200),
                    });
                barrier.wait();
                for i in 0..ROUNDS {
                    let own = 1000 * (w + 1) + i;
                    let shared = 500 + i % 5;
                    s.update_group(id, &mut |_v: &dyn GroupView| {
                        Ok(vec![
                            (slot(own), TileBytes::owned(tile(w, own))),
                            (slot(shared), TileBytes::owned(tile(w, shared))),
                        ])
                    })
                    .unwrap_or_else(|e| panic!("writer {w} round {i}: {e}"));
                }
                s.stats().conflicts.load(Ordering::Relaxed)
            })
        })
        .collect();
    let conflicts: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    let c = Cache::open(url.to_string()).unwrap();
    let got: BTreeMap<TileAddr, Vec<u8>> = c
        .read_group(&TileGroup::bundle(id))
        .unwrap()
        .into_iter()
        .map(|(t, b)| (t, b.to_vec()))
        .collect();
    for w in 0..2 {
        for i in 0..ROUNDS {
            let own = 1000 * (w + 1) + i;
            assert_eq!(
                got.get(&id.tile(slot(own))),
                Some(&tile(w, own)),
                "writer {w}'s tile {own} lost"
            );
        }
    }
    for n in 500..505 {
        let b = got.get(&id.tile(slot(n))).expect("shared slot written");
        assert!(*b == tile(0, n) || *b == tile(1, n), "shared slot {n}");
    }
    assert_eq!(got.len(), 2 * ROUNDS as usize + 5, "no stray tiles");
    assert!(
        conflicts > 0,
        "the writers never collided: the test proved nothing"
    );
}

/// Settings that mean nothing for Azure are refused by name, and a wrong account key gives an
/// error that names the object and holds no secret.
#[test]
fn azure_settings_are_checked_and_secrets_stay_out_of_errors() {
    let url = fresh_url("settings");
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run(Command::new(bin())
        .arg("mount")
        .arg(&url)
        .arg(&mnt)
        .args(["-o", "region=eu-west-1"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("region=eu-west-1") && err.contains("Azure"),
        "{err}"
    );

    // A wrong key for the emulator's account (not the emulator flag: explicit settings).
    let secret = "c2VjcmV0LWtleS10aGF0LWlzLXdyb25nLWZvci1henVyaXRl";
    let out = run(Command::new(bin())
        .args(["info", &url])
        .env_remove("AZURE_STORAGE_USE_EMULATOR")
        .env("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
        .env("AZURE_STORAGE_ACCOUNT_KEY", secret)
        .env(
            "AZURE_STORAGE_ENDPOINT",
            "http://127.0.0.1:10000/devstoreaccount1",
        )
        .env("AZURE_ALLOW_HTTP", "true"));
    assert!(!out.status.success(), "a wrong key was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "the error names the cache: {err}");
    assert!(!err.contains(secret), "the secret leaked: {err}");
}
