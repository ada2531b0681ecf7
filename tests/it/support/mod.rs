//! Helpers shared by the integration tests: fixture paths, unzipping packages, reading whole caches
//! and trees, running the `bundlefs` binary.
#![allow(dead_code)]

pub mod http;
pub mod mapproxy;
pub mod mount;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

/// The ArcGIS-written fixtures, kept in the repository (`tests/data/fixtures`, provenance and
/// licences in `tests/data/README.md`); `$BUNDLEFS_FIXTURES` overrides the folder.
pub fn fixtures() -> PathBuf {
    let p = std::env::var_os("BUNDLEFS_FIXTURES").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fixtures")),
        PathBuf::from,
    );
    assert!(p.is_dir(), "{}: fixtures folder missing", p.display());
    p
}

/// Inputs rebuilt from public reports that broke tools (`tests/data/cases`, see its README).
pub fn case_data(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cases")).join(name);
    assert!(p.exists(), "{}: case input missing", p.display());
    p
}

/// Esri's sample Compact V2 cache (JPEG, ArcGIS layout, L00–L02).
pub fn esri_sample_cache() -> PathBuf {
    fixtures().join("esri-sample-cache")
}

/// The `bundlefs` binary built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bundlefs")
}

/// Extracts a zip (`.tpk`, `.tpkx`) into `dest`.
pub fn unzip(zip_path: &Path, dest: &Path) {
    let f = fs::File::open(zip_path)
        .unwrap_or_else(|e| panic!("{}: {e} (fixtures missing?)", zip_path.display()));
    let mut z = zip::ZipArchive::new(f).unwrap_or_else(|e| panic!("{}: {e}", zip_path.display()));
    z.extract(dest)
        .unwrap_or_else(|e| panic!("{}: extract: {e}", zip_path.display()));
}

/// Unpacks `states_filled.tpk` into `dir`; returns the package root (the cache is in v101/Layers).
pub fn unpack_tpk(dir: &Path) -> PathBuf {
    let root = dir.join("states_filled");
    unzip(&fixtures().join("arcgis-v1-tpk/states_filled.tpk"), &root);
    root
}

/// Unpacks `Usa.tpkx` into `dir`; returns the package root (bundles in `tile/`).
pub fn unpack_tpkx(dir: &Path) -> PathBuf {
    let root = dir.join("Usa");
    unzip(&fixtures().join("arcgis-tpkx/Usa.tpkx"), &root);
    root
}

/// Every tile of a cache, read group by group (bundle by bundle). Panics on any error.
pub fn all_tiles(c: &Cache) -> BTreeMap<TileAddr, Vec<u8>> {
    let mut out = BTreeMap::new();
    for level in c.levels().unwrap() {
        for g in c.groups(level).unwrap() {
            for (t, bytes) in c.read_group(&g).unwrap() {
                assert!(
                    out.insert(t, bytes.to_vec()).is_none(),
                    "{t} listed twice in {}",
                    c.root().display()
                );
            }
        }
    }
    out
}

/// Tile counts per level.
pub fn counts_per_level(tiles: &BTreeMap<TileAddr, Vec<u8>>) -> BTreeMap<u8, usize> {
    let mut m = BTreeMap::new();
    for t in tiles.keys() {
        *m.entry(t.level).or_insert(0) += 1;
    }
    m
}

/// Asserts that `c` holds exactly `expected`, checking each tile through `Cache::tile`.
pub fn assert_same_tiles(c: &Cache, expected: &BTreeMap<TileAddr, Vec<u8>>, what: &str) {
    let got = all_tiles(c);
    let missing: Vec<_> = expected.keys().filter(|t| !got.contains_key(t)).collect();
    let extra: Vec<_> = got.keys().filter(|t| !expected.contains_key(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    for (t, bytes) in expected {
        let tile = c
            .tile(*t)
            .unwrap_or_else(|e| panic!("{what}: {t}: {e}"))
            .unwrap_or_else(|| panic!("{what}: {t} missing"));
        assert!(tile[..] == bytes[..], "{what}: {t} differs");
    }
}

/// Copies a folder tree.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for ent in fs::read_dir(src).unwrap() {
        let ent = ent.unwrap();
        let (s, d) = (ent.path(), dst.join(ent.file_name()));
        if ent.file_type().unwrap().is_dir() {
            copy_dir(&s, &d);
        } else {
            fs::copy(&s, &d).unwrap();
        }
    }
}

/// Every regular file under `dir`, by path relative to `dir` ('/'-separated), with its bytes.
pub fn tree_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let mut ents: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two trees hold the same file names and bytes; reports the differences by name.
pub fn assert_same_tree(
    got: &BTreeMap<String, Vec<u8>>,
    want: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what}: {} files vs {} expected; missing {missing:?}; extra {extra:?}; bytes differ {differ:?}",
        got.len(),
        want.len()
    );
}

/// Runs a command, returning its output; panics (with stdout/stderr) if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `bundlefs export --storage STORAGE SRC DEST` (default flags, i.e. with the final sync).
pub fn bundlefs_export(src: &Path, dest: &Path, storage: &str) -> String {
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg("--storage")
            .arg(storage)
            .arg(src)
            .arg(dest),
    )
}

/// Scratch folders that live as long as the test binary; removed at exit.
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_scratch() {
    if let Ok(dirs) = SCRATCH.lock() {
        for d in dirs.iter() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// An empty cache on a national grid (EPSG:2056, Swiss LV95; two custom scales) at `dir/lv95`,
/// made by `bundlefs create`: a scheme that is not Web Mercator, for the refusals of the formats
/// and views that need one.
pub fn lv95_cache(dir: &Path) -> PathBuf {
    let c = dir.join("lv95");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&c)
            .args(["--wkid", "2056", "--origin", "2420000,1350000"])
            .args(["--scales", "1000000,500000"]),
    );
    c
}

/// A folder `bundlefs-NAME-*` in the temporary folder that lives until the test binary exits,
/// for fixtures shared by its tests (a `TempDir` in a static would never be dropped).
pub fn scratch_dir(name: &str) -> PathBuf {
    static REGISTER: OnceLock<()> = OnceLock::new();
    REGISTER.get_or_init(|| {
        // SAFETY: registers a plain extern "C" function that only removes folders.
        unsafe { libc::atexit(remove_scratch) };
    });
    let d = tempfile::Builder::new()
        .prefix(&format!("bundlefs-{name}-"))
        .tempdir()
        .unwrap()
        .keep();
    SCRATCH.lock().unwrap().push(d.clone());
    d
}

/// `bundlefs sample DIR/sample --levels LEVELS` (256 px PNG tiles, Compact V2, Web Mercator);
/// returns the cache folder. Levels 0-2 make 21 tiles (L02: one bundle of 16).
pub fn sample_cache(dir: &Path, levels: &str) -> PathBuf {
    let c = dir.join("sample");
    run_ok(
        Command::new(bin())
            .arg("sample")
            .arg(&c)
            .args(["--levels", levels]),
    );
    c
}

/// `base` (a PNG) with a tEXt chunk holding `text` (`keyword\0value`) inserted right after IHDR,
/// so otherwise equal tiles differ in bytes and still decode to the same pixels.
pub fn png_with_text(base: &[u8], text: &str) -> Vec<u8> {
    let mut body = b"tEXt".to_vec();
    body.extend_from_slice(text.as_bytes());
    let mut out = base[..33].to_vec(); // signature + IHDR
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&base[33..]);
    out
}
