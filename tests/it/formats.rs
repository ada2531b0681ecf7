//! The format and cache layers against real ArcGIS-written caches (no external tools): Esri's sample
//! Compact V2 cache, the Compact V1 cache inside an ArcGIS `.tpk`, the V2 bundles of Esri's `.tpkx`;
//! malformed inputs; the write path; property tests of the bundle writers.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use bundlefs::cache::{BundleLock, Cache, CacheOptions, Layout};
use bundlefs::format::conf::{StorageFormat, TileFormat, TileScheme};
use bundlefs::format::levels::LevelRange;
use bundlefs::format::sniff::{sniff, ImageKind};
use bundlefs::format::{v1, v2, BundleId, Slot, TileAddr, MAX_TILE_SIZE};
use bundlefs::jobs::export::{export, ExportOptions};
use bundlefs::jobs::verify::{verify, Report};
use bundlefs::Error;
use proptest::prelude::*;

fn export_to(src: &Cache, dest: &Path, storage: StorageFormat) {
    let opts = ExportOptions {
        storage,
        levels: LevelRange::ALL,
        sync: false,
    };
    export(src, dest, &opts, &|_| {})
        .unwrap_or_else(|e| panic!("export to {storage} at {}: {e}", dest.display()));
}

fn decode(bytes: &[u8], kind: ImageKind) {
    let fmt = match kind {
        ImageKind::Png => image::ImageFormat::Png,
        ImageKind::Jpeg => image::ImageFormat::Jpeg,
        other => panic!("{other:?} tiles are not pictures"),
    };
    image::load_from_memory_with_format(bytes, fmt).unwrap();
}

fn assert_clean(r: &Report, tiles: u64, warnings: usize, what: &str) {
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    assert_eq!(r.tiles, tiles, "{what}: tiles checked");
    assert_eq!(r.warnings.len(), warnings, "{what}: {:?}", r.warnings);
}

// ---------------------------------------------------------------------------------------------
// (a)–(c) real fixtures

#[test]
fn esri_sample_cache_is_v2_jpeg_and_decodes() {
    let c = Cache::open(esri_sample_cache()).unwrap();
    assert_eq!(c.storage(), StorageFormat::CompactV2);
    assert_eq!(c.layout(), Layout::ArcGis);
    assert_eq!(c.scheme().unwrap().tile_format, TileFormat::Jpeg);
    assert_eq!(c.levels().unwrap(), vec![0, 1, 2]);
    let tiles = all_tiles(&c);
    assert_eq!(tiles.len(), 21);
    assert_eq!(
        counts_per_level(&tiles),
        BTreeMap::from([(0, 1), (1, 4), (2, 16)])
    );
    for (t, bytes) in &tiles {
        assert_eq!(sniff(bytes), Some(ImageKind::Jpeg), "{t}");
        decode(bytes, ImageKind::Jpeg);
        assert_eq!(&c.tile(*t).unwrap().unwrap()[..], &bytes[..], "{t}");
    }
    assert_clean(&verify(&c, true).unwrap(), 21, 0, "esri-sample-cache");
}

/// `raw` with the text of `<StorageFormat>` replaced.
fn with_storage_text(raw: &str, storage: StorageFormat) -> String {
    let start = raw.find("<StorageFormat>").unwrap() + "<StorageFormat>".len();
    let end = raw.find("</StorageFormat>").unwrap();
    format!("{}{}{}", &raw[..start], storage.esri_name(), &raw[end..])
}

#[test]
fn tpk_v1_round_trips_through_every_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = unpack_tpk(tmp.path());
    let src = Cache::open(&pkg).unwrap();
    assert!(
        src.root().ends_with("v101/Layers"),
        "{}",
        src.root().display()
    );
    assert_eq!(src.storage(), StorageFormat::CompactV1);
    let tiles = all_tiles(&src);
    assert_eq!(tiles.len(), 24);
    for (t, bytes) in &tiles {
        assert_eq!(sniff(bytes), Some(ImageKind::Png), "{t}");
        decode(bytes, ImageKind::Png);
    }
    assert_clean(&verify(&src, true).unwrap(), 24, 0, "tpk");
    let src_conf = String::from_utf8(fs::read(src.root().join("conf.xml")).unwrap()).unwrap();
    let src_cdi = fs::read(src.root().join("conf.cdi")).unwrap();

    // V1 → V2 → V1 → exploded → V2, every stage read back tile by tile.
    let mut from: PathBuf = src.root().to_path_buf();
    for (i, storage) in [
        StorageFormat::CompactV2,
        StorageFormat::CompactV1,
        StorageFormat::Exploded,
        StorageFormat::CompactV2,
    ]
    .into_iter()
    .enumerate()
    {
        let dest = tmp.path().join(format!("stage{i}-{storage}"));
        export_to(&Cache::open(&from).unwrap(), &dest, storage);
        let c = Cache::open(&dest).unwrap();
        assert_eq!(c.storage(), storage, "stage {i}");
        assert_eq!(c.layout(), Layout::ArcGis);
        assert_same_tiles(&c, &tiles, &format!("stage {i} ({storage})"));
        assert_clean(&verify(&c, true).unwrap(), 24, 0, &format!("stage {i}"));
        // conf.xml: StorageFormat says the target; every other byte is the source's.
        let conf = fs::read(dest.join("conf.xml")).unwrap();
        let parsed = TileScheme::parse_conf_xml(&conf).unwrap();
        assert_eq!(parsed.scheme.storage, storage);
        assert_eq!(
            String::from_utf8(conf).unwrap(),
            with_storage_text(&src_conf, storage),
            "stage {i}: conf.xml"
        );
        assert_eq!(fs::read(dest.join("conf.cdi")).unwrap(), src_cdi);
        if storage == StorageFormat::Exploded {
            assert!(dest
                .join("_alllayers/L00/R00000000/C00000000.png")
                .is_file());
        }
        from = dest;
    }
}

#[test]
fn tpkx_tile_folder_has_144_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = unpack_tpkx(tmp.path());
    let c = Cache::open(pkg.join("tile")).unwrap();
    assert_eq!(c.storage(), StorageFormat::CompactV2);
    assert_eq!(c.layout(), Layout::MapProxy);
    assert_eq!(c.levels().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    let tiles = all_tiles(&c);
    assert_eq!(tiles.len(), 144);
    assert!(tiles.values().all(|b| sniff(b) == Some(ImageKind::Png)));
    // Two of Esri's PNGs lack their first 4 signature bytes: warnings, not problems.
    let r = verify(&c, true).unwrap();
    assert_clean(&r, 144, 2, "tpkx");
    assert!(r.warnings.iter().all(|w| w.what.contains("signature")));
}

/// ArcGIS writes a package's item extent in WGS84 degrees. Converting the Web Mercator fullExtent
/// of Esri's own `Usa.tpkx` lands within 0.03° of the extent in its `iteminfo.json` (ArcGIS takes
/// that one from the data, so it is not exactly the converted fullExtent; meters written as
/// degrees, the old mistake, would be off by millions).
#[test]
fn tpkx_item_extent_is_wgs84_like_arcgis_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = unpack_tpkx(tmp.path());
    let root_bytes = fs::read(pkg.join("root.json")).unwrap();
    let root = bundlefs::format::tpkx::parse_root_json(&root_bytes).unwrap();
    let full = root.extent.expect("Usa root.json has a fullExtent");
    let item: serde_json::Value =
        serde_json::from_slice(&fs::read(pkg.join("iteminfo.json")).unwrap()).unwrap();
    let want = &item["extent"];
    assert_eq!(want["spatialReference"]["wkid"], 4326);
    let got = bundlefs::format::tpkx::wgs84_extent(&root.scheme, &full).unwrap();
    for (k, v) in [
        ("xmin", got.xmin),
        ("ymin", got.ymin),
        ("xmax", got.xmax),
        ("ymax", got.ymax),
    ] {
        let w = want[k].as_f64().unwrap();
        assert!((v - w).abs() < 0.03, "{k}: {v} vs ArcGIS {w}");
    }
    // And what bundlefs writes for a package of its own says the same.
    let ours = bundlefs::format::tpkx::iteminfo_json("Usa", "G", 0, &root.scheme, &full, false);
    let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    assert_eq!(ours["extent"]["spatialReference"]["wkid"], 4326);
    assert_eq!(ours["extent"]["ymax"].as_f64().unwrap(), got.ymax);
}

// ---------------------------------------------------------------------------------------------
// (d) malformed inputs: an error naming the file and the entry, never a panic, never bytes

const L1_TILES: [(u32, u32, usize); 4] = [(0, 0, 300), (0, 1, 200), (1, 0, 250), (1, 1, 400)];

fn tile_bytes(t: TileAddr, len: usize) -> Vec<u8> {
    let tag = format!("tile {t} ");
    tag.bytes().cycle().take(len).collect()
}

/// A small ArcGIS-layout V2 cache with four tiles in L01/R0000C0000.bundle.
fn small_v2_cache(dir: &Path) -> Cache {
    let c = Cache::create(dir, &TileScheme::web_mercator(9, TileFormat::Png), None).unwrap();
    let tiles: Vec<(TileAddr, Vec<u8>)> = L1_TILES
        .iter()
        .map(|&(r, col, len)| {
            let t = TileAddr::new(1, r, col);
            (t, tile_bytes(t, len))
        })
        .collect();
    let refs: Vec<(TileAddr, &[u8])> = tiles.iter().map(|(t, b)| (*t, &b[..])).collect();
    c.write_tiles(&refs).unwrap();
    Cache::open(dir).unwrap()
}

/// The same four tiles as a Compact V1 cache.
fn small_v1_cache(tmp: &Path) -> Cache {
    let src = small_v2_cache(&tmp.join("v2src"));
    let dest = tmp.join("v1");
    export_to(&src, &dest, StorageFormat::CompactV1);
    Cache::open(&dest).unwrap()
}

fn l1_bundle(c: &Cache) -> PathBuf {
    c.bundle_path(&BundleId {
        level: 1,
        row0: 0,
        col0: 0,
    })
}

/// A V2 index entry of `path`.
fn v2_entry(path: &Path, slot: Slot) -> v2::IndexEntry {
    let b = fs::read(path).unwrap();
    v2::V2Bundle::parse(&b).unwrap().entry(slot)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// `Cache::tile` fails, naming `file` and (if given) the entry's row/col in the bundle.
fn assert_tile_err(c: &Cache, t: TileAddr, file: &Path, entry: Option<Slot>) -> String {
    let e = match c.tile(t) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{t}: expected an error, got {v:?}"),
    };
    assert!(e.contains(&file.display().to_string()), "{e}");
    if let Some(s) = entry {
        assert!(e.contains(&format!("row {} col {}", s.row, s.col)), "{e}");
    }
    e
}

/// verify reports a problem at `file` (about tile `t`, if given); returns its text.
fn assert_verify_problem(c: &Cache, file: &Path, t: Option<TileAddr>) -> String {
    let r = verify(c, false).unwrap();
    let p = r
        .problems
        .iter()
        .find(|p| p.path == file)
        .unwrap_or_else(|| panic!("no problem at {}: {:?}", file.display(), r.problems));
    let text = p.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    if let Some(t) = t {
        assert!(text.contains(&format!("tile {t}")), "{text}");
        let s = t.slot();
        assert!(
            text.contains(&format!("row {} col {}", s.row, s.col)),
            "{text}"
        );
    }
    text
}

fn assert_export_fails(c: &Cache, dest: &Path, names: &str) -> String {
    let opts = ExportOptions {
        storage: StorageFormat::CompactV2,
        levels: LevelRange::ALL,
        sync: false,
    };
    let e = export(c, dest, &opts, &|_| {}).unwrap_err().to_string();
    assert!(e.contains(names), "{e}");
    e
}

#[test]
fn v2_truncated_mid_tile() {
    let tmp = tempfile::tempdir().unwrap();
    let c = small_v2_cache(tmp.path());
    let path = l1_bundle(&c);
    let last = Slot { row: 1, col: 1 }; // written last: its record ends the file
    let e = v2_entry(&path, last);
    assert_eq!(
        e.offset() + u64::from(e.size()),
        fs::metadata(&path).unwrap().len()
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(e.offset() + u64::from(e.size()) / 2)
        .unwrap();
    let c = Cache::open(tmp.path()).unwrap();
    let t = TileAddr::new(1, 1, 1);
    let msg = assert_tile_err(&c, t, &path, Some(last));
    assert!(msg.contains("past the end"), "{msg}");
    // The other tiles still read.
    assert!(c.tile(TileAddr::new(1, 0, 0)).unwrap().is_some());
    assert_verify_problem(&c, &path, Some(t));
    assert_export_fails(&c, &tmp.path().join("out"), &path.display().to_string());
}

#[test]
fn v2_index_entry_past_eof() {
    let tmp = tempfile::tempdir().unwrap();
    let c = small_v2_cache(tmp.path());
    let path = l1_bundle(&c);
    let s = Slot { row: 0, col: 1 };
    let len = fs::metadata(&path).unwrap().len();
    patch(
        &path,
        v2::index_pos(s) as u64,
        &v2::IndexEntry::new(len + 100, 10).0.to_le_bytes(),
    );
    let c = Cache::open(tmp.path()).unwrap();
    let t = TileAddr::new(1, 0, 1);
    assert_tile_err(&c, t, &path, Some(s));
    assert_verify_problem(&c, &path, Some(t));
}

#[test]
fn v2_size_prefix_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let c = small_v2_cache(tmp.path());
    let path = l1_bundle(&c);
    let s = Slot { row: 1, col: 0 };
    let e = v2_entry(&path, s);
    patch(&path, e.offset() - 4, &(e.size() + 1).to_le_bytes());
    let c = Cache::open(tmp.path()).unwrap();
    let t = TileAddr::new(1, 1, 0);
    let msg = assert_tile_err(&c, t, &path, Some(s));
    assert!(msg.contains("disagrees"), "{msg}");
    assert_verify_problem(&c, &path, Some(t));
}

#[test]
fn v1_bundlx_shorter_than_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let c = small_v1_cache(tmp.path());
    let xpath = l1_bundle(&c).with_extension("bundlx");
    fs::OpenOptions::new()
        .write(true)
        .open(&xpath)
        .unwrap()
        .set_len(10)
        .unwrap();
    let c = Cache::open(c.root()).unwrap();
    // A whole-file problem: the message names the .bundlx (no entry to name).
    let msg = assert_tile_err(&c, TileAddr::new(1, 0, 0), &xpath, None);
    assert!(msg.contains("shorter"), "{msg}");
    assert_verify_problem(&c, &xpath, None);
    assert_export_fails(&c, &tmp.path().join("out"), &xpath.display().to_string());
}

#[test]
fn v1_offset_past_eof() {
    let tmp = tempfile::tempdir().unwrap();
    let c = small_v1_cache(tmp.path());
    let path = l1_bundle(&c);
    let xpath = path.with_extension("bundlx");
    let s = Slot { row: 1, col: 1 };
    let len = fs::metadata(&path).unwrap().len();
    patch(
        &xpath,
        v1::index_pos(s) as u64,
        &(len + 1000).to_le_bytes()[..5],
    );
    let c = Cache::open(c.root()).unwrap();
    let t = TileAddr::new(1, 1, 1);
    // The entry lives in the .bundlx, so that is the file named.
    let msg = assert_tile_err(&c, t, &xpath, Some(s));
    assert!(msg.contains("past the end"), "{msg}");
    assert_verify_problem(&c, &xpath, Some(t));
}

#[test]
fn oversized_tile_is_refused_and_bundle_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let big = vec![7u8; MAX_TILE_SIZE + 1];
    for c in [
        small_v2_cache(&tmp.path().join("v2")),
        small_v1_cache(&tmp.path().join("v1")),
    ] {
        let path = l1_bundle(&c);
        let files = [path.clone(), path.with_extension("bundlx")];
        let before: Vec<_> = files.iter().map(|p| fs::read(p).ok()).collect();
        let t = TileAddr::new(1, 0, 5);
        let e = c
            .write_tiles(&[(TileAddr::new(1, 0, 6), b"fine"), (t, &big)])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("row 0 col 5") && e.contains("2^24"), "{e}");
        let after: Vec<_> = files.iter().map(|p| fs::read(p).ok()).collect();
        assert!(before == after, "{}: bundle changed", path.display());
        assert!(c.tile(t).unwrap().is_none());
        assert!(c.tile(TileAddr::new(1, 0, 6)).unwrap().is_none());
    }
    // The largest legal tile is accepted.
    let c = Cache::open(tmp.path().join("v2")).unwrap();
    let max = vec![9u8; MAX_TILE_SIZE];
    let t = TileAddr::new(1, 2, 2);
    c.write_tiles(&[(t, &max)]).unwrap();
    assert_eq!(c.tile(t).unwrap().unwrap().len(), MAX_TILE_SIZE);
}

#[test]
fn bad_conf_xml_is_an_error_naming_file_and_element() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = fs::read_to_string(esri_sample_cache().join("conf.xml")).unwrap();
    let origin_start = conf.find("<TileOrigin").unwrap();
    let origin_end = conf.find("</TileOrigin>").unwrap() + "</TileOrigin>".len();
    let cases = [
        (
            "no-origin",
            format!("{}{}", &conf[..origin_start], &conf[origin_end..]),
            "TileOrigin",
        ),
        (
            "bad-scale",
            conf.replacen("<Scale>591657527.591555</Scale>", "<Scale>huge</Scale>", 1),
            "Scale",
        ),
    ];
    for (name, xml, element) in cases {
        assert_ne!(xml, conf, "{name}: fixture changed?");
        let dir = tmp.path().join(name);
        copy_dir(&esri_sample_cache(), &dir);
        fs::write(dir.join("conf.xml"), xml).unwrap();
        let e = Cache::open(&dir).err().expect(name).to_string();
        assert!(
            e.contains(&dir.join("conf.xml").display().to_string()),
            "{e}"
        );
        assert!(e.contains(element), "{name}: {e}");
        // The CLI says the same and fails (exit 2 for errors).
        let out = run(Command::new(bin()).arg("verify").arg(&dir));
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(element));
    }
}

#[test]
fn exploded_non_hex_row_folder_fails_export() {
    let tmp = tempfile::tempdir().unwrap();
    let v2c = small_v2_cache(&tmp.path().join("v2"));
    let exp = tmp.path().join("exploded");
    export_to(&v2c, &exp, StorageFormat::Exploded);
    let bad = exp.join("_alllayers/L01/R0000000g");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("C00000000.png"), b"whatever").unwrap();
    let c = Cache::open(&exp).unwrap();
    assert_eq!(c.storage(), StorageFormat::Exploded);
    let msg = assert_export_fails(&c, &tmp.path().join("out"), &bad.display().to_string());
    assert!(msg.contains("R0000000g"), "{msg}");
    let r = verify(&c, false).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.to_string().contains("R0000000g")),
        "{:?}",
        r.problems
    );
}

#[test]
fn empty_bundle_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for c in [
        small_v2_cache(&tmp.path().join("v2")),
        small_v1_cache(&tmp.path().join("v1")),
    ] {
        let id = BundleId {
            level: 2,
            row0: 0,
            col0: 0,
        };
        let path = c.bundle_path(&id);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"").unwrap();
        if c.storage() == StorageFormat::CompactV1 {
            fs::write(path.with_extension("bundlx"), v1::empty_bundlx()).unwrap();
        }
        let c = Cache::open(c.root()).unwrap();
        assert_tile_err(&c, TileAddr::new(2, 0, 0), &path, None);
        assert_verify_problem(&c, &path, None);
        assert_export_fails(
            &c,
            &tmp.path().join(format!("out-{}", c.storage())),
            &path.display().to_string(),
        );
        // The good level still reads.
        assert_eq!(
            &c.tile(TileAddr::new(1, 0, 0)).unwrap().unwrap()[..],
            &tile_bytes(TileAddr::new(1, 0, 0), 300)[..]
        );
    }
}

#[test]
fn cli_verify_exit_codes_and_names() {
    let out = run(Command::new(bin())
        .args(["verify", "--decode"])
        .arg(esri_sample_cache()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sample");
    copy_dir(&esri_sample_cache(), &dir);
    let path = dir.join("_alllayers/L01/R0000C0000.bundle");
    let e = v2_entry(&path, Slot { row: 1, col: 0 });
    assert!(!e.is_empty());
    patch(&path, e.offset() - 4, &(e.size() ^ 0x55).to_le_bytes());
    let out = run(Command::new(bin()).arg("verify").arg(&dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let bad: Vec<&str> = stdout.lines().filter(|l| l.starts_with("BAD ")).collect();
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(bad[0].contains(&path.display().to_string()), "{stdout}");
    assert!(bad[0].contains("tile L01/R00000001/C00000000"), "{stdout}");
}

/// `info` and `verify` read Esri's packages directly; commands that need a folder (mount, compact,
/// render) refuse a package and name the export that makes one; a missing path or a plain file
/// gets one clear line, its cause said once.
#[test]
fn cli_reads_packages_and_says_what_to_do_where_it_cannot() {
    let tpkx = fixtures().join("arcgis-tpkx/Usa.tpkx");
    let tpk = fixtures().join("arcgis-v1-tpk/states_filled.tpk");
    let info = run_ok(Command::new(bin()).arg("info").arg(&tpkx));
    assert!(
        info.contains(&format!("{} (tile package)", tpkx.display())),
        "{info}"
    );
    assert!(info.contains("compact-v2"), "{info}");
    let out = run(Command::new(bin()).args(["verify", "--decode"]).arg(&tpk));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("24 tiles checked and decoded"), "{stdout}");

    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    for args in [
        vec!["mount".into(), tpkx.clone(), mnt.clone()],
        vec!["compact".into(), tpkx.clone()],
        vec![
            "render".into(),
            tpkx.clone(),
            "--source".into(),
            "resample".into(),
            "--levels".into(),
            "0-1".into(),
        ],
    ] {
        let out = run(Command::new(bin()).args(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("a tile package") && err.contains("bundlefs export"),
            "{args:?}: {err}"
        );
    }
    let missing = tmp.path().join("nope");
    let file = tmp.path().join("file.txt");
    fs::write(&file, b"x").unwrap();
    for (p, want) in [
        (&missing, "no such cache folder"),
        (&file, "a file, not a cache folder"),
    ] {
        let out = run(Command::new(bin()).arg("info").arg(p));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert_eq!(err.matches(want).count(), 1, "said once: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// (e) write path

fn info_dead_bytes(root: &Path) -> u64 {
    let out = run_ok(Command::new(bin()).args(["info", "--json"]).arg(root));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["total"]["deadBytes"].as_u64().unwrap()
}

fn write_path(root: &Path, storage: StorageFormat) {
    let scheme = TileScheme::web_mercator(9, TileFormat::Png);
    let c = match storage {
        StorageFormat::CompactV2 => Cache::create(root, &scheme, None).unwrap(),
        _ => {
            // An empty cache whose conf.xml says `storage`.
            let seed = root.with_extension("seed");
            let s = Cache::create(&seed, &scheme, None).unwrap();
            export_to(&s, root, storage);
            Cache::open(root).unwrap()
        }
    };
    assert_eq!(c.storage(), storage);
    let t1 = TileAddr::new(8, 0, 0);
    let t2 = TileAddr::new(8, 0, 1);
    let t3 = TileAddr::new(8, 130, 5); // another bundle (R0080C0000)
    let (b1, b2, b3) = (tile_bytes(t1, 100), tile_bytes(t2, 77), tile_bytes(t3, 33));
    c.write_tiles(&[(t1, &b1), (t2, &b2)]).unwrap();
    assert_eq!(c.level_stats(8).unwrap().tiles, 2);
    // A new bundle in a level already listed shows up.
    c.write_tiles(&[(t3, &b3)]).unwrap();
    let st = c.level_stats(8).unwrap();
    assert_eq!((st.bundles, st.tiles, st.dead_bytes), (2, 3, 0));

    let c = Cache::open(root).unwrap();
    let expected = BTreeMap::from([(t1, b1.clone()), (t2, b2.clone()), (t3, b3.clone())]);
    assert_same_tiles(&c, &expected, "reopened");
    assert_eq!(info_dead_bytes(root), 0);

    // Overwrite: new bytes read back; the old record (size + 4) becomes dead.
    let new1 = b"overwritten".repeat(5);
    c.write_tiles(&[(t1, &new1)]).unwrap();
    assert_eq!(&c.tile(t1).unwrap().unwrap()[..], &new1[..]);
    assert_eq!(
        &Cache::open(root).unwrap().tile(t1).unwrap().unwrap()[..],
        &new1[..]
    );
    let dead = b1.len() as u64 + 4;
    assert_eq!(c.level_stats(8).unwrap().dead_bytes, dead);
    assert_eq!(info_dead_bytes(root), dead);

    // Delete.
    c.delete_tiles(&[t2]).unwrap();
    assert!(c.tile(t2).unwrap().is_none());
    assert!(Cache::open(root).unwrap().tile(t2).unwrap().is_none());
    let st = c.level_stats(8).unwrap();
    assert_eq!(st.tiles, 2);
    assert_eq!(st.dead_bytes, dead + b2.len() as u64 + 4);
    assert_eq!(info_dead_bytes(root), st.dead_bytes);
    assert_clean(&verify(&c, false).unwrap(), 2, 0, "after writes");

    // Another writer holds the bundle's .lck: our write waits lock_timeout, fails, changes nothing.
    let id = t1.bundle();
    let held = BundleLock::acquire(&c.lock_path(&id), Duration::from_secs(1)).unwrap();
    let opts = CacheOptions {
        lock_timeout: Duration::from_millis(200),
        ..CacheOptions::default()
    };
    let c2 = Cache::open_with(root, opts).unwrap();
    let path = c2.bundle_path(&id);
    let files = [path.clone(), path.with_extension("bundlx")];
    let before: Vec<_> = files.iter().map(|p| fs::read(p).ok()).collect();
    let start = Instant::now();
    match c2.write_tiles(&[(t1, b"blocked")]) {
        Err(Error::Locked { path, .. }) => assert_eq!(path, c.lock_path(&id)),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
    match c2.delete_tiles(&[t1]) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    let after: Vec<_> = files.iter().map(|p| fs::read(p).ok()).collect();
    assert!(before == after, "bundle changed while locked");
    drop(held);
    c2.write_tiles(&[(t1, b"unblocked")]).unwrap();
    assert_eq!(&c2.tile(t1).unwrap().unwrap()[..], b"unblocked");
}

#[test]
fn write_path_v2() {
    let tmp = tempfile::tempdir().unwrap();
    write_path(&tmp.path().join("cache"), StorageFormat::CompactV2);
}

#[test]
fn write_path_v1() {
    let tmp = tempfile::tempdir().unwrap();
    write_path(&tmp.path().join("cache"), StorageFormat::CompactV1);
}

#[test]
fn packet_size_becomes_128_for_compact_storage() {
    let conf = TileScheme::web_mercator(2, TileFormat::Png)
        .to_conf_xml()
        .to_vec();
    let exploded = String::from_utf8(conf)
        .unwrap()
        .replace("<PacketSize>128</PacketSize>", "<PacketSize>0</PacketSize>")
        .replace(
            "esriMapCacheStorageModeCompactV2",
            "esriMapCacheStorageModeExploded",
        );
    let c = TileScheme::parse_conf_xml(exploded.as_bytes()).unwrap();
    assert_eq!(c.scheme.packet_size, 0);
    let v2 = String::from_utf8(c.with_storage(StorageFormat::CompactV2)).unwrap();
    assert_eq!(
        v2,
        exploded
            .replace("<PacketSize>0</PacketSize>", "<PacketSize>128</PacketSize>")
            .replace(
                "esriMapCacheStorageModeExploded",
                "esriMapCacheStorageModeCompactV2"
            )
    );
    // Exploded to exploded keeps it.
    assert_eq!(c.with_storage(StorageFormat::Exploded), exploded.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// (f) property tests: writers agree with a last-write-wins model

fn slot_strategy() -> impl Strategy<Value = Slot> {
    const HOT: [(u32, u32); 8] = [
        (0, 0),
        (0, 1),
        (1, 0),
        (127, 127),
        (5, 77),
        (64, 3),
        (127, 0),
        (0, 127),
    ];
    prop_oneof![
        3 => (0usize..HOT.len()).prop_map(|i| Slot { row: HOT[i].0, col: HOT[i].1 }),
        1 => (0u32..128, 0u32..128).prop_map(|(row, col)| Slot { row, col }),
    ]
}

fn writes_strategy() -> impl Strategy<Value = (Vec<(Slot, Vec<u8>)>, Vec<usize>)> {
    (
        prop::collection::vec(
            (slot_strategy(), prop::collection::vec(any::<u8>(), 1..64)),
            1..60,
        ),
        prop::collection::vec(1usize..12, 1..20),
    )
}

fn model(writes: &[(Slot, Vec<u8>)]) -> HashMap<Slot, Vec<u8>> {
    writes.iter().cloned().collect()
}

/// Splits `writes` into batches of the given sizes (the rest in one last batch).
fn batches<'a>(writes: &'a [(Slot, Vec<u8>)], sizes: &[usize]) -> Vec<&'a [(Slot, Vec<u8>)]> {
    let mut out = Vec::new();
    let mut rest = writes;
    for &n in sizes {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

fn check_v2(
    bytes: &[u8],
    m: &HashMap<Slot, Vec<u8>>,
    max_written: usize,
) -> Result<(), TestCaseError> {
    let b = v2::V2Bundle::parse(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(b.entries().count(), m.len());
    for (s, want) in m {
        prop_assert_eq!(b.tile(*s).unwrap(), Some(&want[..]));
    }
    prop_assert_eq!(b.header_file_size(), bytes.len() as u64);
    prop_assert_eq!(b.header_max_tile() as usize, max_written);
    Ok(())
}

fn check_v1(bundle: &[u8], bundlx: &[u8], m: &HashMap<Slot, Vec<u8>>) -> Result<(), TestCaseError> {
    prop_assert_eq!(bundlx.len(), v1::BUNDLX_LEN);
    let b =
        v1::V1Bundle::parse(bundle, bundlx).map_err(|(_, e)| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(b.slots().count(), m.len());
    // Header: tile count × 4 at 16, file size at 24 (u64 each).
    let u64_at = |at: usize| u64::from_le_bytes(bundle[at..at + 8].try_into().unwrap());
    prop_assert_eq!(u64_at(16), 4 * m.len() as u64);
    prop_assert_eq!(u64_at(24), bundle.len() as u64);
    for (s, want) in m {
        prop_assert_eq!(b.tile(*s).unwrap(), Some(&want[..]));
    }
    Ok(())
}

fn rw(p: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn v2_builder_and_append_match_model((writes, sizes) in writes_strategy()) {
        let m = model(&writes);
        let max = writes.iter().map(|w| w.1.len()).max().unwrap();
        let mut bld = v2::Builder::new(Cursor::new(Vec::new())).unwrap();
        for (s, t) in &writes {
            bld.add(*s, t).unwrap();
        }
        prop_assert_eq!(bld.tiles(), m.len());
        let (cur, size) = bld.finish().unwrap();
        let built = cur.into_inner();
        prop_assert_eq!(size, built.len() as u64);
        check_v2(&built, &m, max)?;

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("R0000C0000.bundle");
        fs::write(&p, v2::empty_bundle()).unwrap();
        let f = rw(&p);
        let mut so_far = Vec::new();
        for batch in batches(&writes, &sizes) {
            let refs: Vec<(Slot, &[u8])> = batch.iter().map(|(s, t)| (*s, &t[..])).collect();
            v2::append_tiles(&f, &p, &refs, false).unwrap();
            so_far.extend_from_slice(batch);
            let max = so_far.iter().map(|w| w.1.len()).max().unwrap();
            check_v2(&fs::read(&p).unwrap(), &model(&so_far), max)?;
        }
    }

    #[test]
    fn v1_builder_and_append_match_model((writes, sizes) in writes_strategy()) {
        let m = model(&writes);
        let mut bld = v1::Builder::new(Cursor::new(Vec::new()), 128, 256).unwrap();
        for (s, t) in &writes {
            bld.add(*s, t).unwrap();
        }
        let (cur, bundlx, size) = bld.finish().unwrap();
        let built = cur.into_inner();
        prop_assert_eq!(size, built.len() as u64);
        check_v1(&built, &bundlx, &m)?;

        let dir = tempfile::tempdir().unwrap();
        let (bp, xp) = (dir.path().join("R0080C0100.bundle"), dir.path().join("R0080C0100.bundlx"));
        fs::write(&bp, v1::empty_bundle(128, 256)).unwrap();
        fs::write(&xp, v1::empty_bundlx()).unwrap();
        let (bf, xf) = (rw(&bp), rw(&xp));
        let mut so_far = Vec::new();
        for batch in batches(&writes, &sizes) {
            let refs: Vec<(Slot, &[u8])> = batch.iter().map(|(s, t)| (*s, &t[..])).collect();
            v1::append_tiles(&bf, &bp, &xf, &xp, &refs, false).unwrap();
            so_far.extend_from_slice(batch);
            check_v1(&fs::read(&bp).unwrap(), &fs::read(&xp).unwrap(), &model(&so_far))?;
        }
    }
}
