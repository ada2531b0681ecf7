//! Ready-to-serve folders and `.tpk` packages (issue 15, parts 2 and 3), against real peers: the
//! GDAL inside the `rasterio` wheel (≥ 3.8, reads a folder's `root.json`) and `tpkutils` (reads
//! `.tpk`), both from PyPI for `python3` (scripts/test.sh installs them), and ArcGIS's own
//! packages in `tests/data/fixtures` and `tests/data/cases/12-*`. A missing peer FAILS the test.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::mount::Mounted;
use crate::support::*;
use bundlefs::cache::Cache;
use bundlefs::format::conf::{StorageFormat, TileScheme};
use bundlefs::format::TileAddr;
use bundlefs::jobs::package::{open_package, PackageKind};

/// `bundlefs export SRC DEST [--storage S]`, which must succeed.
fn export(src: &Path, dest: &Path, storage: Option<&str>) -> String {
    let mut c = Command::new(bin());
    c.arg("export").arg(src).arg(dest);
    if let Some(s) = storage {
        c.args(["--storage", s]);
    }
    run_ok(&mut c)
}

/// `bundlefs ARGS…`, which must fail; returns its standard error.
fn fails(args: &[&std::ffi::OsStr]) -> String {
    let out = run(Command::new(bin()).args(args));
    assert!(
        !out.status.success(),
        "bundlefs {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `_alllayers` tree of an ArcGIS-layout exploded cache.
fn exploded_tiles(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tree_files(&dir.join("_alllayers"))
}

/// The scheme facts a conversion must keep (the WKT's spelling may change with the document).
fn scheme_facts(s: &TileScheme) -> String {
    let lods: Vec<String> = s
        .lods
        .iter()
        .map(|l| format!("{}:{}:{}", l.level, l.scale, l.resolution))
        .collect();
    format!(
        "wkid {:?}/{:?} origin {} {} tile {}x{} dpi {} format {} q {} lods {}",
        s.wkid.or(s.latest_wkid),
        s.latest_wkid.or(s.wkid),
        s.origin_x,
        s.origin_y,
        s.tile_cols,
        s.tile_rows,
        s.dpi,
        s.tile_format.name(),
        s.compression_quality,
        lods.join(",")
    )
}

fn conf_scheme(path: &Path) -> TileScheme {
    TileScheme::parse_conf_xml(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .scheme
}

fn root_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("root.json")).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Part 2: ready-to-serve folders

/// exploded → ready-to-serve → exploded gives the same tiles and scheme, for Esri's sample cache
/// (JPEG, L00–L02) and a PNG cache bundlefs draws; the folder is laid out as the spec says.
#[test]
fn ready_to_serve_round_trip_keeps_tiles_and_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let png = sample_cache(tmp.path(), "0-3");
    for (name, src) in [("esri", esri_sample_cache()), ("png", png)] {
        let ex1 = tmp.path().join(format!("{name}-ex1"));
        export(&src, &ex1, Some("exploded"));
        let rts = tmp.path().join(format!("{name}-rts"));
        let out = export(&ex1, &rts, Some("ready-to-serve"));
        assert!(out.contains("ready-to-serve"), "{out}");
        for f in ["root.json", "iteminfo.json", "thumbnail.png"] {
            assert!(rts.join(f).is_file(), "{name}: {f} missing");
        }
        assert!(!rts.join("conf.xml").exists() && !rts.join("_alllayers").exists());
        // Bundles only (and the bundle locks every bundlefs writer leaves, which readers ignore).
        let names: Vec<String> = tree_files(&rts.join("tile"))
            .into_keys()
            .filter(|n| !n.ends_with(".lck"))
            .collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| n.ends_with(".bundle")),
            "{name}: tile/ holds {names:?}"
        );
        let root = root_json(&rts);
        assert_eq!(root["tileBundlesPath"], "./tile");
        assert_eq!(
            root["storageInfo"]["storageFormat"],
            "esriMapCacheStorageModeCompactV2"
        );
        assert_eq!(root["name"], format!("{name}-rts"));
        let item: serde_json::Value =
            serde_json::from_slice(&fs::read(rts.join("iteminfo.json")).unwrap()).unwrap();
        assert_eq!(item["type"], "Compact Tile Package");

        let c = Cache::open(&rts).unwrap();
        assert!(c.ready_to_serve().is_some());
        assert_eq!(c.storage(), StorageFormat::CompactV2);
        let info = run_ok(Command::new(bin()).arg("info").arg(&rts));
        assert!(info.contains("ready-to-serve layout"), "{info}");
        let json: serde_json::Value = serde_json::from_str(&run_ok(
            Command::new(bin()).args(["info", "--json"]).arg(&rts),
        ))
        .unwrap();
        assert_eq!(json["layout"], "ReadyToServe");
        let verified = run_ok(Command::new(bin()).arg("verify").arg(rts.join("root.json")));
        assert!(verified.contains("0 problem(s)"), "{verified}");

        let ex2 = tmp.path().join(format!("{name}-ex2"));
        export(&rts, &ex2, Some("exploded"));
        assert_same_tree(
            &exploded_tiles(&ex2),
            &exploded_tiles(&ex1),
            &format!("{name}: exploded -> ready-to-serve -> exploded"),
        );
        assert_eq!(
            scheme_facts(&conf_scheme(&ex2.join("conf.xml"))),
            scheme_facts(&conf_scheme(&ex1.join("conf.xml"))),
            "{name}: scheme through root.json"
        );
        // root.json's levels are the levels holding tiles.
        let levels = c.levels().unwrap();
        assert_eq!(root["minLOD"], *levels.first().unwrap());
        assert_eq!(root["maxLOD"], *levels.last().unwrap());
    }
}

/// ArcGIS's own ready-to-serve layout (Esri's Usa.tpkx, unzipped) is a cache as it is: its tiles
/// are the package's.
#[test]
fn arcgis_ready_to_serve_folder_is_read_as_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let usa = unpack_tpkx(tmp.path());
    let from_folder = tmp.path().join("from-folder");
    export(&usa, &from_folder, Some("exploded"));
    let from_pkg = tmp.path().join("from-pkg");
    export(
        &fixtures().join("arcgis-tpkx/Usa.tpkx"),
        &from_pkg,
        Some("exploded"),
    );
    let got = exploded_tiles(&from_folder);
    assert_eq!(got.len(), 144, "Usa holds 144 tiles in L00-L05");
    assert_same_tree(&got, &exploded_tiles(&from_pkg), "Usa folder vs Usa.tpkx");
}

/// A read-only mount of a ready-to-serve folder shows the exploded tree: a conf.xml made from
/// root.json (exploded storage, the source's scheme) and tiles equal to the source's.
#[test]
fn mount_of_ready_to_serve_shows_conf_xml_and_source_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = tmp.path().join("ex");
    export(&esri_sample_cache(), &ex, Some("exploded"));
    let rts = tmp.path().join("rts");
    export(&esri_sample_cache(), &rts, Some("ready-to-serve"));
    let m = Mounted::start(&rts, &tmp.path().join("mnt"), &[]);
    let conf = conf_scheme(&m.path("conf.xml"));
    assert_eq!(conf.storage, StorageFormat::Exploded);
    assert_eq!(
        scheme_facts(&conf),
        scheme_facts(&conf_scheme(&ex.join("conf.xml")))
    );
    assert!(m.path("conf.cdi").is_file());
    assert_same_tree(
        &tree_files(&m.path("_alllayers")),
        &exploded_tiles(&ex),
        "mount of the ready-to-serve folder vs the source exploded",
    );
}

/// Writing into a ready-to-serve folder: import, render --keep and a read-write mount add tiles
/// of new levels, and root.json's maxLOD follows (GDAL reads no level past it); its other members
/// stay as they were. compact and verify work on it.
#[test]
fn ready_to_serve_takes_import_render_mount_rw_and_compact() {
    let tmp = tempfile::tempdir().unwrap();
    let rts = tmp.path().join("rts");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "ready-to-serve", "--levels", "0"])
            .arg(esri_sample_cache())
            .arg(&rts),
    );
    let before = root_json(&rts);
    assert_eq!(
        (before["minLOD"].as_u64(), before["maxLOD"].as_u64()),
        (Some(0), Some(0))
    );

    run_ok(
        Command::new(bin())
            .args(["import", "--levels", "1"])
            .arg(esri_sample_cache())
            .arg(&rts),
    );
    assert_eq!(root_json(&rts)["maxLOD"], 1);

    run_ok(
        Command::new(bin())
            .args(["render", "--source", "label", "--levels", "2", "--keep"])
            .arg(&rts),
    );
    assert_eq!(root_json(&rts)["maxLOD"], 2);

    {
        let m = Mounted::start(&rts, &tmp.path().join("mnt"), &["-o", "rw"]);
        let bytes = fs::read(m.path("_alllayers/L00/R00000000/C00000000.jpg")).unwrap();
        fs::create_dir_all(m.path("_alllayers/L03/R00000001")).unwrap();
        fs::write(m.path("_alllayers/L03/R00000001/C00000002.jpg"), &bytes).unwrap();
        let out = run_ok(Command::new(bin()).arg("unmount").arg(&m.mnt));
        assert!(out.contains("every tile stored"), "{out}");
    }
    let after = root_json(&rts);
    assert_eq!(after["maxLOD"], 3);
    let c = Cache::open(&rts).unwrap();
    let l0 = c.tile(TileAddr::new(0, 0, 0)).unwrap().unwrap();
    assert_eq!(
        c.tile(TileAddr::new(3, 1, 2)).unwrap().unwrap()[..],
        l0[..],
        "the tile written through the mount"
    );
    for k in [
        "tileInfo",
        "spatialReference",
        "tileImageInfo",
        "storageInfo",
        "name",
    ] {
        assert_eq!(after[k], before[k], "root.json member {k} changed");
    }

    // Overwrite L01 (dead space in its bundle), then compact reclaims it with the tiles intact.
    run_ok(
        Command::new(bin())
            .args(["import", "--levels", "1", "--mode", "overwrite"])
            .arg(esri_sample_cache())
            .arg(&rts),
    );
    let want = all_tiles(&Cache::open(&rts).unwrap());
    run_ok(
        Command::new(bin())
            .args(["compact", "--min-dead", "1%"])
            .arg(&rts),
    );
    assert_same_tiles(&Cache::open(&rts).unwrap(), &want, "after compact");
    let v = run_ok(Command::new(bin()).arg("verify").arg(&rts));
    assert!(v.contains("0 problem(s)"), "{v}");
}

/// Bad ready-to-serve input gets errors naming the file and what is wrong.
#[test]
fn bad_ready_to_serve_folders_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let rts = tmp.path().join("rts");
    export(&esri_sample_cache(), &rts, Some("ready-to-serve"));

    // A root.json that is not JSON.
    let broken = tmp.path().join("broken");
    copy_dir(&rts, &broken);
    fs::write(broken.join("root.json"), b"{\"tileInfo\": ").unwrap();
    let e = fails(&["info".as_ref(), broken.as_os_str()]);
    assert!(e.contains("root.json"), "{e}");

    // Compact V1 bundles under tile/.
    let v1 = tmp.path().join("v1");
    export(
        &esri_sample_cache(),
        &tmp.path().join("v1src"),
        Some("compact-v1"),
    );
    fs::create_dir_all(&v1).unwrap();
    fs::copy(rts.join("root.json"), v1.join("root.json")).unwrap();
    copy_dir(&tmp.path().join("v1src/_alllayers"), &v1.join("tile"));
    let e = fails(&["info".as_ref(), v1.as_os_str()]);
    assert!(e.contains("compact-v1") || e.contains("Compact V1"), "{e}");
    assert!(e.contains("ready-to-serve"), "{e}");

    // export --storage ready-to-serve into a conf.xml cache, or onto a file.
    let ex = tmp.path().join("ex");
    export(&esri_sample_cache(), &ex, Some("compact-v2"));
    let e = fails(&[
        "export".as_ref(),
        "--storage".as_ref(),
        "ready-to-serve".as_ref(),
        esri_sample_cache().as_os_str(),
        ex.as_os_str(),
    ]);
    assert!(e.contains("not ready-to-serve"), "{e}");
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    let e = fails(&[
        "export".as_ref(),
        "--storage".as_ref(),
        "ready-to-serve".as_ref(),
        esri_sample_cache().as_os_str(),
        file.as_os_str(),
    ]);
    assert!(e.contains("is a file"), "{e}");
    // No --storage and no package name.
    let e = fails(&[
        "export".as_ref(),
        esri_sample_cache().as_os_str(),
        tmp.path().join("somewhere").as_os_str(),
    ]);
    assert!(e.contains("--storage"), "{e}");
}

/// Size and band checksums per level as the GDAL inside rasterio computes them: for a conf.xml,
/// its first `levels` overviews from level 0; for a root.json (or .tpkx), its base and every
/// overview, returned from level 0 on too.
fn rasterio_checksums(path: &Path, levels: usize) -> Vec<String> {
    let script = r#"
import sys, rasterio
path, levels = sys.argv[1], int(sys.argv[2])
with rasterio.open(path) as ds:
    n = len(ds.overviews(1))
    print(ds.driver)
if path.endswith("conf.xml"):
    opts = [n - 1 - i for i in range(levels)]
else:
    opts = [None] + list(range(n))
for o in opts:
    kw = {} if o is None else {"overview_level": o}
    with rasterio.open(path, **kw) as d:
        print(d.width, d.height, [d.checksum(b) for b in range(1, d.count + 1)])
"#;
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(levels.to_string()));
    assert!(
        out.status.success(),
        "python3 with rasterio could not read {} (scripts/test.sh installs rasterio with pip):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ESRIC"), "{}: {text}", path.display());
    let mut v: Vec<String> = lines.map(str::to_string).collect();
    if !path.ends_with("conf.xml") {
        v.reverse();
    }
    v
}

/// GDAL (rasterio's, ≥ 3.8) reads the root.json of a folder bundlefs wrote with the checksums of
/// the source: Esri's sample cache through its conf.xml, Esri's Usa.tpkx as a package.
#[test]
fn gdal_reads_ready_to_serve_root_json_with_the_sources_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let src = esri_sample_cache();
    let want = rasterio_checksums(&src.join("conf.xml"), 3);
    assert_eq!(want.len(), 3);
    let rts = tmp.path().join("sample-rts");
    export(&src, &rts, Some("ready-to-serve"));
    assert_eq!(
        rasterio_checksums(&rts.join("root.json"), 3),
        want,
        "sample ready-to-serve vs esri-sample-cache/conf.xml"
    );

    let usa = fixtures().join("arcgis-tpkx/Usa.tpkx");
    let want = rasterio_checksums(&usa, 6);
    let rts = tmp.path().join("usa-rts");
    export(&usa, &rts, Some("ready-to-serve"));
    assert_eq!(
        rasterio_checksums(&rts.join("root.json"), 6),
        want,
        "Usa ready-to-serve vs Usa.tpkx"
    );
}

// ---------------------------------------------------------------------------------------------
// Part 3: .tpk packages

/// Tiles of a `.tpk` as tpkutils (PyPI) reads them: `TPK(path).read_tiles()`, dumped to files
/// `z/row/col` (tpkutils' x is the column, y the row, unflipped) and read back, keyed by
/// (tpkutils' zoom, row, column); tpkutils takes the zoom from the resolution, which for Web
/// Mercator schemes of level 0 at 1:591,657,527 is the level.
fn tpkutils_tiles(tpk: &Path) -> BTreeMap<TileAddr, Vec<u8>> {
    let out = tempfile::tempdir().unwrap();
    let script = r#"
import os, sys
from tpkutils import TPK
tpk, out = sys.argv[1], sys.argv[2]
with TPK(tpk) as t:
    print(t.format)
    for tile in t.read_tiles():
        d = os.path.join(out, str(tile.z), str(tile.y))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, str(tile.x)), "wb") as f:
            f.write(tile.data)
"#;
    let o = run(Command::new("python3")
        .args(["-c", script])
        .arg(tpk)
        .arg(out.path()));
    assert!(
        o.status.success(),
        "python3 with tpkutils could not read {} (scripts/test.sh installs tpkutils with pip):\n{}",
        tpk.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    tree_files(out.path())
        .into_iter()
        .map(|(k, v)| {
            let p: Vec<u32> = k.split('/').map(|x| x.parse().unwrap()).collect();
            (TileAddr::new(p[0] as u8, p[1], p[2]), v)
        })
        .collect()
}

/// tpkutils reads a `.tpk` bundlefs wrote back to the source's tiles, byte for byte: Esri's
/// sample cache (JPEG) and a PNG cache, the storage given or inferred from the name.
#[test]
fn tpkutils_reads_bundlefs_tpk_as_the_source_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let png = sample_cache(tmp.path(), "0-3");
    for (name, src, storage) in [
        ("esri", esri_sample_cache(), Some("tpk")),
        ("png", png, None),
    ] {
        let tpk = tmp.path().join(format!("{name}.tpk"));
        let out = export(&src, &tpk, storage);
        assert!(out.contains("(tpk)"), "{out}");
        assert_eq!(PackageKind::of_file(&tpk).unwrap(), PackageKind::Tpk);
        let want = all_tiles(&Cache::open(&src).unwrap());
        assert!(!want.is_empty());
        let got = tpkutils_tiles(&tpk);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}: tiles tpkutils finds"
        );
        for (t, b) in &want {
            assert!(got[t] == *b, "{name}: {t} differs as tpkutils reads it");
        }
        // bundlefs reads its own package to the same tiles, as Compact V1.
        let p = open_package(&tpk).unwrap();
        assert_eq!(p.cache.storage(), StorageFormat::CompactV1);
        assert_same_tiles(&p.cache, &want, &format!("{name}.tpk read by bundlefs"));
    }
}

/// The zip entries of a package, with whether each is stored (not compressed).
fn zip_entries(path: &Path) -> BTreeMap<String, bool> {
    let mut z = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let e = z.by_index(i).unwrap();
            (
                e.name().to_string(),
                e.compression() == zip::CompressionMethod::Stored,
            )
        })
        .collect()
}

/// bundlefs reads ArcGIS's own `.tpk` files and the ones it writes from them alike (info and an
/// exploded export equal; tpkutils sees the same tiles in both), and lays its package out as
/// ArcGIS does: the same entries as ArcGIS's package but the `.lyr` layer files, all stored.
#[test]
fn arcgis_tpk_and_bundlefs_tpk_read_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let arcgis = [
        fixtures().join("arcgis-v1-tpk/states_filled.tpk"),
        case_data("12-tpk-alt-root-name").join("alt_root_name.tpk"),
        case_data("12-tpk-alt-root-name").join("nonstandard_zoom_levels.tpk"),
    ];
    for (i, theirs) in arcgis.iter().enumerate() {
        let ours = tmp.path().join(format!("ours-{i}.tpk"));
        export(theirs, &ours, None);
        let info = |p: &Path| {
            let mut v: serde_json::Value =
                serde_json::from_str(&run_ok(Command::new(bin()).args(["info", "--json"]).arg(p)))
                    .unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("path");
            for l in o["levels"].as_array_mut().unwrap() {
                // Bundles are rewritten: sizes differ, tiles and counts do not.
                let l = l.as_object_mut().unwrap();
                l.remove("fileBytes");
                l.remove("deadBytes");
            }
            o.remove("total");
            v
        };
        assert_eq!(info(&ours), info(theirs), "{}: info", theirs.display());
        let (a, b) = (
            tmp.path().join(format!("a{i}")),
            tmp.path().join(format!("b{i}")),
        );
        export(theirs, &a, Some("exploded"));
        export(&ours, &b, Some("exploded"));
        assert_same_tree(&exploded_tiles(&b), &exploded_tiles(&a), "exploded tiles");
        assert!(!exploded_tiles(&a).is_empty());
        // tpkutils reads both to the same tiles (keyed by its zoom, which for
        // nonstandard_zoom_levels.tpk is the level + 2).
        let by_tpkutils = tpkutils_tiles(theirs);
        assert!(!by_tpkutils.is_empty());
        assert_eq!(
            tpkutils_tiles(&ours),
            by_tpkutils,
            "{}: tpkutils",
            theirs.display()
        );
    }

    // The layout: ArcGIS's entries (less its binary .lyr files), all stored.
    let theirs = &arcgis[0];
    let ours = tmp.path().join("ours-0.tpk");
    let want: Vec<String> = zip_entries(theirs)
        .into_keys()
        .filter(|n| !n.ends_with(".lyr"))
        .collect();
    let got = zip_entries(&ours);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert!(got.values().all(|stored| *stored), "every entry stored");
}

/// Importing into a `.tpk` keeps it a `.tpk`; a `.tpk` is never rewritten as a `.tpkx` (or the
/// other way round) by export.
#[test]
fn import_into_tpk_keeps_its_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let tpk = tmp.path().join("x.tpk");
    run_ok(
        Command::new(bin())
            .args(["export", "--levels", "0-1"])
            .arg(esri_sample_cache())
            .arg(&tpk),
    );
    run_ok(
        Command::new(bin())
            .args(["import", "--levels", "2"])
            .arg(esri_sample_cache())
            .arg(&tpk),
    );
    assert_eq!(PackageKind::of_file(&tpk).unwrap(), PackageKind::Tpk);
    let want = all_tiles(&Cache::open(esri_sample_cache()).unwrap());
    assert_eq!(tpkutils_tiles(&tpk), want, "tiles after import");
    let e = fails(&[
        "export".as_ref(),
        "--storage".as_ref(),
        "tpkx".as_ref(),
        esri_sample_cache().as_os_str(),
        tpk.as_os_str(),
    ]);
    assert!(e.contains("the name says tpk but --storage tpkx"), "{e}");
}

/// Esri's `Usa.tpkx` stores its level 0-1 PNG tiles without the first four signature bytes. The
/// files users get are whole PNGs (`file` and a strict signature check agree) — through the mount
/// and in an exploded export — while `verify` still reports the stored bytes.
#[test]
fn png_tiles_stored_without_their_signature_come_out_whole() {
    crate::support::mount::need("fusermount3");
    let usa = fixtures().join("arcgis-tpkx/Usa.tpkx");
    let d = tempfile::tempdir().unwrap();
    let sig: &[u8] = b"\x89PNG\r\n\x1a\n";
    // The package really holds such tiles (else this test proves nothing).
    let verify = run(Command::new(bin()).arg("verify").arg(&usa));
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(said.contains("signature"), "verify: {said}");
    // Exploded export: every tile file is a whole image.
    let out = d.path().join("exploded");
    run_ok(Command::new(bin()).arg("export").arg(&usa).arg(&out).args([
        "--storage",
        "exploded",
        "--levels",
        "0-2",
    ]));
    let files = tree_files(&out.join("_alllayers"));
    assert!(!files.is_empty());
    for (rel, b) in &files {
        if rel.ends_with(".png") {
            assert!(
                b.starts_with(sig),
                "{rel}: exported without its PNG signature"
            );
        }
    }
    // Copied into Compact V2 bundles the bytes stay as stored (tiles are bytes); the mount of
    // that cache hands out the same whole files, sizes agreeing with the bytes read.
    let v2 = d.path().join("v2");
    run_ok(Command::new(bin()).arg("export").arg(&usa).arg(&v2).args([
        "--storage",
        "compact-v2",
        "--levels",
        "0-2",
    ]));
    let verify = run_ok(Command::new(bin()).arg("verify").arg(&v2));
    assert!(
        verify.contains("2 warning(s)"),
        "bytes kept in bundles: {verify}"
    );
    let mnt = d.path().join("mnt");
    let m = Mounted::start(&v2, &mnt, &[]);
    let mut checked = 0;
    for (rel, b) in &files {
        let p = m.path("_alllayers").join(rel);
        let got = fs::read(&p).unwrap();
        assert_eq!(&got, b, "{rel}: mount and export differ");
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            got.len() as u64,
            "{rel}: size"
        );
        checked += 1;
    }
    let l0 = m.path("_alllayers/L00/R00000000/C00000000.png");
    let (ok, out, _) = crate::support::mount::sh(&format!("file -b {}", l0.display()));
    assert!(ok && out.starts_with("PNG image data"), "file says: {out}");
    assert!(checked > 0);
}

/// Import into an ArcGIS `.tpk` keeps the entries bundlefs does not rewrite (`v101/Layers.lyr`,
/// `v103/Layers.lyr`) byte for byte; a level mismatch names the package (never the work folder)
/// and says which `--levels` would work.
#[test]
fn import_into_a_tpk_keeps_its_other_entries_and_names_it() {
    let d = tempfile::tempdir().unwrap();
    let tpk = d.path().join("states_filled.tpk");
    fs::copy(fixtures().join("arcgis-v1-tpk/states_filled.tpk"), &tpk).unwrap();
    let entries = |p: &Path| -> BTreeMap<String, Vec<u8>> {
        let mut z = zip::ZipArchive::new(fs::File::open(p).unwrap()).unwrap();
        (0..z.len())
            .map(|i| {
                let mut e = z.by_index(i).unwrap();
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut b).unwrap();
                (e.name().to_string(), b)
            })
            .filter(|(n, _)| n.ends_with(".lyr"))
            .collect()
    };
    let before = entries(&tpk);
    assert_eq!(before.len(), 2, "{:?}", before.keys());
    let src = d.path().join("src");
    run_ok(Command::new(bin()).arg("export").arg(&tpk).arg(&src).args([
        "--storage",
        "compact-v2",
        "--levels",
        "0-2",
    ]));
    run_ok(
        Command::new(bin())
            .arg("import")
            .arg(&src)
            .arg(&tpk)
            .args(["--mode", "overwrite"]),
    );
    assert_eq!(entries(&tpk), before, "layer files kept");
    // Independent reader: unzip lists them too.
    let (ok, list, _) = crate::support::mount::sh(&format!("unzip -Z1 {}", tpk.display()));
    if ok {
        assert!(
            list.contains("v101/Layers.lyr") && list.contains("v103/Layers.lyr"),
            "{list}"
        );
    }
    // Levels the package lacks: refused naming it, with the --levels that works.
    let s = sample_cache(d.path(), "0-5");
    let o = run(Command::new(bin()).arg("import").arg(&s).arg(&tpk));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("states_filled.tpk"), "{err}");
    assert!(!err.contains(".bundlefs-tpk"), "{err}");
    assert!(err.contains("--levels 0-4"), "{err}");
}
