//! The open tile formats against their own tools: MBTiles written by bundlefs read by GDAL (the
//! rasterio wheel's MBTiles driver: per-level checksums equal to what its ESRIC driver reads from
//! the source cache), by MapProxy (`type: mbtiles` cache, exported by `mapproxy-util export`) and
//! by `sqlite3` (the TMS row flip); an MBTiles written by `gdal_translate` imported into a compact
//! cache tile for tile; round trips byte for byte; refusals by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

use crate::support::mount::{need, sh, Mounted};
use crate::support::{all_tiles, bin, esri_sample_cache, run, run_ok, sample_cache, scratch_dir};

fn export(src: &Path, dest: &Path, extra: &[&str]) -> String {
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(src)
            .arg(dest)
            .args(extra),
    )
}

/// Every tile of the MBTiles file as `sqlite3` lists it: (zoom, column, TMS row) → bytes.
fn sqlite_tiles(f: &Path) -> BTreeMap<(u8, u32, u32), Vec<u8>> {
    need("sqlite3");
    let (ok, out, err) = sh(&format!(
        "sqlite3 -separator ' ' {} 'SELECT zoom_level, tile_column, tile_row, hex(tile_data) FROM tiles'",
        f.display()
    ));
    assert!(ok, "sqlite3: {err}");
    out.lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            let bytes = (0..v[3].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[3][i..i + 2], 16).unwrap())
                .collect();
            (
                (
                    v[0].parse().unwrap(),
                    v[1].parse().unwrap(),
                    v[2].parse().unwrap(),
                ),
                bytes,
            )
        })
        .collect()
}

#[test]
fn mbtiles_round_trips_tile_for_tile_with_the_tms_row_flip() {
    let d = scratch_dir("mbtiles-rt");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    let f = d.join("esri.mbtiles");
    let out = export(&src, &f, &[]);
    assert!(out.contains("(mbtiles)"), "{out}");
    // sqlite3 sees each tile at its TMS row, bytes as stored.
    let rows = sqlite_tiles(&f);
    assert_eq!(rows.len(), want.len());
    for (t, b) in &want {
        let tms = (1u32 << t.level) - 1 - t.row;
        assert_eq!(
            rows.get(&(t.level, t.col, tms)),
            Some(b),
            "{t} at TMS row {tms}"
        );
    }
    // Back to Compact V2 and to exploded: the source's tiles, byte for byte.
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
    let expl = d.join("expl");
    export(&f, &expl, &["--storage", "exploded"]);
    assert_eq!(all_tiles(&Cache::open(&expl).unwrap()), want);
    // info and verify --decode read it.
    let info = run_ok(Command::new(bin()).arg("info").arg(&f));
    assert!(info.contains("storage:  mbtiles"), "{info}");
    let v = run_ok(Command::new(bin()).args(["verify", "--decode"]).arg(&f));
    assert!(
        v.contains("21 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
    // Metadata as MBTiles 1.3 asks.
    let (ok, meta, _) = sh(&format!(
        "sqlite3 {} \"SELECT name || '=' || value FROM metadata ORDER BY name\"",
        f.display()
    ));
    assert!(ok);
    for want in [
        "format=jpg",
        "minzoom=0",
        "maxzoom=2",
        "name=esri-sample-cache",
    ] {
        assert!(meta.lines().any(|l| l == want), "{want} not in\n{meta}");
    }
    assert!(
        meta.lines().any(|l| l.starts_with("bounds=-179.99")),
        "{meta}"
    );
}

#[test]
fn gdal_reads_bundlefs_mbtiles_with_the_sources_checksums() {
    let d = scratch_dir("mbtiles-gdal");
    let src = esri_sample_cache();
    let f = d.join("esri.mbtiles");
    export(&src, &f, &[]);
    // The rasterio wheel's GDAL: ESRIC on the source's conf.xml (levels 0-2 are its coarsest
    // overviews), the MBTiles driver on the file (zoom 2 its base, then its overviews).
    let script = r#"
import sys, rasterio
conf, mbt = sys.argv[1], sys.argv[2]
with rasterio.open(conf) as ds:
    n = len(ds.overviews(1))
for i in range(3):
    with rasterio.open(conf, overview_level=n - 1 - i) as d:
        print("esric", i, d.width, d.height, [d.checksum(b) for b in (1, 2, 3)])
with rasterio.open(mbt) as ds:
    print("driver", ds.driver)
    m = len(ds.overviews(1))
for i in range(3):
    kw = {} if i == 2 else {"overview_level": m - 1 - i}
    with rasterio.open(mbt, **kw) as d:
        print("mbtiles", i, d.width, d.height, [d.checksum(b) for b in (1, 2, 3)])
"#;
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(src.join("conf.xml"))
        .arg(&f));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rasterio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("driver MBTiles"), "{text}");
    for level in 0..3 {
        let of = |who: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{who} {level} ")))
                .unwrap_or_else(|| panic!("no {who} line for level {level}:\n{text}"))
                .split_once(' ')
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(of("esric"), of("mbtiles"), "level {level}:\n{text}");
    }
}

/// MapProxy reads the MBTiles file bundlefs wrote from its own cache as a `type: mbtiles` cache
/// on a Web Mercator grid with origin sw (its mbtiles cache keeps rows as its grid counts them,
/// and GLOBAL_WEBMERCATOR counts from the top), so TMS rows, as MBTiles numbers them
/// ([`crate::support::mapproxy`]).
#[test]
fn mapproxy_reads_bundlefs_mbtiles() {
    crate::support::mapproxy::reads_what_bundlefs_wrote(
        "mbtiles-mapproxy",
        &crate::support::mapproxy::Reader {
            dest: "mp.mbtiles",
            export_args: &[],
            cache_yaml: "      type: mbtiles\n      filename: {path}",
            origin_sw: true,
        },
    );
}

#[test]
fn an_mbtiles_written_by_gdal_imports_tile_for_tile() {
    need("gdal_translate");
    let d = scratch_dir("mbtiles-from-gdal");
    let src = esri_sample_cache();
    // GDAL draws level 2 of the ESRIC source (overview 16 of 19: the cache has levels 0-19)
    // into a new MBTiles (its own PNG encoding), then adds zooms 1 and 0 with gdaladdo.
    let f = d.join("gdal.mbtiles");
    let (ok, out, err) = sh(&format!(
        "gdal_translate -q -of MBTILES -oo OVERVIEW_LEVEL=16 {} {} && gdaladdo -q {} 2 4",
        src.join("conf.xml").display(),
        f.display(),
        f.display()
    ));
    assert!(ok, "gdal_translate: {out}{err}");
    let rows = sqlite_tiles(&f);
    assert_eq!(rows.len(), 21, "zooms 0-2");
    // Into a compact cache: each tile lands at its flipped row with GDAL's bytes.
    let c = d.join("cache");
    export(&f, &c, &["--storage", "compact-v2"]);
    let got = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(got.len(), rows.len());
    for ((z, x, y), b) in &rows {
        let t = TileAddr::new(*z, (1u32 << z) - 1 - y, *x);
        assert_eq!(got.get(&t), Some(b), "{t}");
    }
}

#[test]
fn a_mount_of_an_mbtiles_file_shows_its_tiles_and_an_import_merges_into_it() {
    need("fusermount3");
    let d = scratch_dir("mbtiles-mount");
    let src = sample_cache(&d, "0-2");
    let f = d.join("s.mbtiles");
    export(&src, &f, &["--levels", "0-1"]);
    let want = all_tiles(&Cache::open(&src).unwrap());
    {
        let m = Mounted::start(&f, &d.join("mnt"), &[]);
        for (t, b) in want.iter().filter(|(t, _)| t.level <= 1) {
            let p = m.path(&format!(
                "_alllayers/L{:02}/R{:08x}/C{:08x}.png",
                t.level, t.row, t.col
            ));
            assert_eq!(&std::fs::read(&p).unwrap(), b, "{}", p.display());
        }
        assert!(
            !m.path("_alllayers/L02").exists(),
            "level 2 was not exported"
        );
    }
    // import adds level 2 into the file; maxzoom follows on the next export, tiles now.
    run_ok(
        Command::new(bin())
            .arg("import")
            .arg(&src)
            .arg(&f)
            .args(["--levels", "2"]),
    );
    assert_eq!(all_tiles(&Cache::open(&f).unwrap()), want);
}

#[test]
fn what_mbtiles_cannot_hold_is_refused_by_name_and_bad_files_are_named() {
    let d = scratch_dir("mbtiles-refuse");
    // A national grid (EPSG:2056, Swiss LV95): not Web Mercator.
    let c = d.join("lv95");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&c)
            .args(["--wkid", "2056", "--origin", "2420000,1350000"])
            .args(["--scales", "1000000,500000"]),
    );
    let f = d.join("lv95.mbtiles");
    let o = run(Command::new(bin()).arg("export").arg(&c).arg(&f));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("MBTiles holds Web Mercator (EPSG:3857) tiles only")
            && err.contains("GeoPackage"),
        "{err}"
    );
    assert!(!f.exists(), "nothing written");
    // A file that is no SQLite database, and an SQLite file without tiles.
    let bad = d.join("bad.mbtiles");
    std::fs::write(&bad, b"this is not a database").unwrap();
    let o = run(Command::new(bin()).arg("info").arg(&bad));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(bad.to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("not a database"), "{err}");
    let empty = d.join("empty.mbtiles");
    let (ok, _, e) = sh(&format!("sqlite3 {} 'CREATE TABLE x (a)'", empty.display()));
    assert!(ok, "{e}");
    let o = run(Command::new(bin()).arg("info").arg(&empty));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not an MBTiles file (an SQLite database without a tiles table)"),
        "{err}"
    );
    // --storage mbtiles into a name that says otherwise.
    let o = run(Command::new(bin())
        .arg("export")
        .arg(esri_sample_cache())
        .arg(d.join("x"))
        .args(["--storage", "mbtiles"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name it NAME.mbtiles"));
}

/// What a trial found, kept fixed: `delete` from an MBTiles file deletes; rows without data or
/// outside their zoom's grid are warned about by `verify` and left out of copies, the good tiles
/// of their bundle kept; an export to a bare file name in the working folder works; an `import`
/// widens `minzoom`/`maxzoom`; an `-o rw` mount of a file whose tiles sit behind a view is refused
/// at mount time.
#[test]
fn mbtiles_delete_odd_rows_bare_names_zooms_and_views() {
    need("sqlite3");
    let d = scratch_dir("mbtiles-trial");
    let src = sample_cache(&d, "0-3");
    // A bare name, relative to the working folder.
    let o = run(Command::new(bin())
        .current_dir(&d)
        .args(["export", "sample", "out.mbtiles"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = d.join("out.mbtiles");
    let count =
        |f: &Path, z: u8| -> usize { sqlite_tiles(f).keys().filter(|(zz, _, _)| *zz == z).count() };
    // delete
    let del = d.join("del.mbtiles");
    std::fs::copy(&f, &del).unwrap();
    let out = run_ok(
        Command::new(bin())
            .arg("delete")
            .arg(&del)
            .args(["--levels", "3"]),
    );
    assert!(out.contains("deleted 64 tiles"), "{out}");
    assert_eq!((count(&del, 3), count(&del, 2)), (0, 16));
    // odd rows
    let odd = d.join("odd.mbtiles");
    std::fs::copy(&f, &odd).unwrap();
    let (ok, _, e) = sh(&format!(
        "sqlite3 {} \"UPDATE tiles SET tile_data = NULL WHERE zoom_level = 3 AND tile_column = 1 \
         AND tile_row = 1; INSERT INTO tiles VALUES (1, 5, 0, X'89504E47')\"",
        odd.display()
    ));
    assert!(ok, "{e}");
    let v = run_ok(Command::new(bin()).args(["verify", "--decode"]).arg(&odd));
    assert!(
        v.contains("84 tiles checked and decoded; 0 problem(s), 2 warning(s)"),
        "{v}"
    );
    assert!(
        v.contains("without tile data") && v.contains("3/1/1"),
        "{v}"
    );
    assert!(
        v.contains("outside their zoom level") && v.contains("1/5/0"),
        "{v}"
    );
    let back = d.join("odd-back");
    export(&odd, &back, &["--storage", "compact-v2"]);
    let mut want = all_tiles(&Cache::open(&src).unwrap());
    want.remove(&TileAddr::new(3, 6, 1));
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
    // import widens the zooms
    let s5 = d.join("s5");
    run_ok(
        Command::new(bin())
            .arg("sample")
            .arg(&s5)
            .args(["--levels", "0-4"]),
    );
    run_ok(
        Command::new(bin())
            .arg("import")
            .arg(&s5)
            .arg(&f)
            .args(["--levels", "4"]),
    );
    let (ok, meta, _) = sh(&format!(
        "sqlite3 {} \"SELECT value FROM metadata WHERE name = 'maxzoom'\"",
        f.display()
    ));
    assert!(ok && meta.trim() == "4", "{meta}");
    // a view over deduplicated tables: read, and refused for -o rw
    let view = d.join("view.mbtiles");
    let (ok, _, e) = sh(&format!(
        "sqlite3 {v} \"CREATE TABLE metadata (name TEXT, value TEXT); \
         INSERT INTO metadata VALUES ('format', 'png'); \
         CREATE TABLE map (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_id TEXT); \
         CREATE TABLE images (tile_id TEXT, tile_data BLOB); \
         ATTACH '{f}' AS src; \
         INSERT INTO images SELECT zoom_level || '/' || tile_column || '/' || tile_row, tile_data FROM src.tiles WHERE zoom_level <= 1; \
         INSERT INTO map SELECT zoom_level, tile_column, tile_row, zoom_level || '/' || tile_column || '/' || tile_row FROM src.tiles WHERE zoom_level <= 1; \
         CREATE VIEW tiles AS SELECT map.zoom_level, map.tile_column, map.tile_row, images.tile_data FROM map JOIN images ON images.tile_id = map.tile_id;\"",
        v = view.display(),
        f = f.display()
    ));
    assert!(ok, "{e}");
    let v = run_ok(Command::new(bin()).args(["verify", "--decode"]).arg(&view));
    assert!(
        v.contains("5 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let o = run(Command::new(bin())
        .args(["mount", "--daemon", "-o", "rw"])
        .arg(&view)
        .arg(&mnt));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("-o rw") && err.contains("mount it read-only"),
        "{err}"
    );
    assert!(!crate::support::mount::is_mounted(&mnt));
}
