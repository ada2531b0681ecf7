//! Caches in Azure Blob Storage (`az://CONTAINER/PREFIX`) against Microsoft's Azurite emulator,
//! started around the test run by `scripts/test.sh` (or by hand: `scripts/azurite.sh start DIR`,
//! then `. DIR/env`), which exports `AZURE_STORAGE_USE_EMULATOR=true`, `BUNDLEFS_AZ_CONTAINER` and
//! `BUNDLEFS_AZ_TEST=1`. Without them these tests fail (they are never skipped). Each test works
//! under its own prefix of the container.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bundlefs::cache::url::{ObjectUrl, Scheme};
use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

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
    let url = fresh_url("cache");
    let parsed = ObjectUrl::parse(&url).unwrap().unwrap();
    assert_eq!(parsed.scheme, Scheme::Azure);
    let src = crate::objstore::sample_in_store(d.path(), "0-3", &url);
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
    crate::objstore::race_two_writers_on_one_bundle(&url, [None, None], 20);
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

/// `-o credentials_file=FILE` for an az:// mount: the account, its key (Azurite's published
/// development key) and the endpoint come from a file of `AZURE_STORAGE_*` lines, with no Azure
/// setting in the environment (as under fstab or systemd); a line the client does not know is an
/// error naming the file and line, never a value.
#[test]
fn an_azure_mount_takes_its_account_key_from_a_file() {
    let d = tempfile::tempdir().unwrap();
    let url = fresh_url("credfile");
    let local = crate::support::sample_cache(d.path(), "0-1");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&local)
            .arg(&url)
            .args(["--storage", "compact-v2"]),
    );
    let file = d.path().join("azure.env");
    std::fs::write(
        &file,
        "# Azurite's well-known development account\n\
         AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1\n\
         AZURE_STORAGE_ACCOUNT_KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==\n\
         AZURE_STORAGE_ENDPOINT=http://127.0.0.1:10000/devstoreaccount1\n\
         AZURE_ALLOW_HTTP=true\n",
    )
    .unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let opts = format!("ro,credentials_file={}", file.display());
    let out = run(Command::new(bin())
        .args(["mount", "--daemon", "-o", &opts])
        .arg(&url)
        .arg(&mnt)
        .env_remove("AZURE_STORAGE_USE_EMULATOR"));
    let _guard = crate::support::mount::Unmount(mnt.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = Cache::open(&local)
        .unwrap()
        .tile(TileAddr::new(1, 0, 1))
        .unwrap()
        .map(|b| b.to_vec());
    let got = std::fs::read(mnt.join("_alllayers/L01/R00000000/C00000001.png")).ok();
    assert!(want.is_some() && got == want, "tile through the mount");
    run_ok(Command::new(bin()).arg("unmount").arg(&mnt));
    // A bad line: named, value not shown.
    std::fs::write(
        &file,
        "AZURE_STORAGE_ACCOUNT_KEY=topsecretvalue\nNOT_A_SETTING=1\n",
    )
    .unwrap();
    let out = run(Command::new(bin())
        .args(["mount", "--daemon", "-o", &opts])
        .arg(&url)
        .arg(&mnt)
        .env_remove("AZURE_STORAGE_USE_EMULATOR"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("NOT_A_SETTING"),
        "{err}"
    );
    assert!(!err.contains("topsecretvalue"), "{err}");
}

/// A PMTiles file into Azure Blob Storage and out of it: `export` uploads it whole; `info`,
/// `verify --decode`, `export` and a read-only mount read it by range requests, tile for tile; a
/// second export onto the same key is refused by name.
#[test]
fn pmtiles_in_azure_blob_storage_by_range_requests() {
    crate::support::mount::need("fusermount3");
    let d = tempfile::tempdir().unwrap();
    let url = format!("{}.pmtiles", fresh_url("pmtiles"));
    let src = crate::support::esri_sample_cache();
    let want = crate::support::all_tiles(&Cache::open(&src).unwrap());
    run_ok(Command::new(bin()).arg("export").arg(&src).arg(&url));
    let info = run_ok(Command::new(bin()).args(["info", &url]));
    assert!(info.contains("storage:  pmtiles"), "{info}");
    let v = run_ok(Command::new(bin()).args(["verify", "--decode", &url]));
    assert!(
        v.contains("21 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
    assert_eq!(crate::support::all_tiles(&Cache::open(&url).unwrap()), want);
    let back = d.path().join("back");
    run_ok(
        Command::new(bin())
            .args(["export", &url])
            .arg(&back)
            .args(["--storage", "compact-v2"]),
    );
    assert_eq!(
        crate::support::all_tiles(&Cache::open(&back).unwrap()),
        want
    );
    {
        let m = Mounted::start(Path::new(&url), &d.path().join("mnt"), &[]);
        let t = TileAddr::new(2, 1, 3);
        let p = m.path(&format!("_alllayers/L02/R{:08x}/C{:08x}.jpg", t.row, t.col));
        assert_eq!(std::fs::read(&p).unwrap(), want[&t], "{}", p.display());
    }
    let o = run(Command::new(bin()).arg("export").arg(&src).arg(&url));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already exists"),
        "{o:?}"
    );
}
