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
use crate::support::sqlite::export;
use crate::support::{all_tiles, bin, esri_sample_cache, run, run_ok, sample_cache, scratch_dir};

/// Every tile of the MBTiles file as `sqlite3` lists it: (zoom, column, TMS row) → bytes.
fn sqlite_tiles(f: &Path) -> BTreeMap<(u8, u32, u32), Vec<u8>> {
    crate::support::sqlite::tiles(f, "tiles")
}

#[test]
fn mbtiles_round_trips_tile_for_tile_with_the_tms_row_flip() {
    let d = scratch_dir("mbtiles-rt");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    let f = d.join("esri.mbtiles");
    let out = export(&src, &f, &[]);
    assert!(out.contains("(mbtiles)"), "{out}");
    assert_eq!(
        crate::support::sqlite::query(&f, "PRAGMA page_size"),
        [[bundlefs::cache::store::sqlite::PAGE_SIZE.to_string()]]
    );
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

/// GDAL's MBTiles driver writes a file bundlefs imports tile for tile, rows flipped
/// ([`crate::support::sqlite::gdal_file_imports_tile_for_tile`]).
#[test]
fn an_mbtiles_written_by_gdal_imports_tile_for_tile() {
    let f = crate::support::sqlite::gdal_file_imports_tile_for_tile(
        "mbtiles-from-gdal",
        "gdal.mbtiles",
        "MBTILES",
        "tiles",
        true,
    );
    assert_eq!(sqlite_tiles(&f).len(), 21, "zooms 0-2");
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
    let c = crate::support::lv95_cache(&d);
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

/// Every tile of a PMTiles file as the `pmtiles` PyPI reader lists it (`all_tiles`, which walks
/// the root and leaf directories and expands runs): (z, x, y) → (length, CRC-32), with the
/// header's fields as `key=value` lines.
fn pypi_pmtiles_tiles(f: &Path) -> (BTreeMap<TileAddr, (usize, u32)>, String) {
    let script = r#"
import sys, zlib
from pmtiles.reader import Reader, MmapSource, all_tiles
with open(sys.argv[1], "rb") as f:
    src = MmapSource(f)
    h = Reader(src).header()
    for k in sorted(h):
        v = h[k]
        print("header", k, getattr(v, "name", v))
    for (z, x, y), data in all_tiles(src):
        print("tile", z, x, y, len(data), zlib.crc32(data))
"#;
    let out = run(Command::new("python3").args(["-c", script]).arg(f));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pmtiles (PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tiles = BTreeMap::new();
    let mut header = String::new();
    for l in text.lines() {
        let v: Vec<&str> = l.split(' ').collect();
        match v[0] {
            "tile" => {
                let n = |i: usize| v[i].parse::<u64>().unwrap();
                let t = TileAddr::new(n(1) as u8, n(3) as u32, n(2) as u32);
                assert!(
                    tiles.insert(t, (n(4) as usize, n(5) as u32)).is_none(),
                    "{t} listed twice"
                );
            }
            _ => header.push_str(&format!("{}={}\n", v[1], v[2..].join(" "))),
        }
    }
    (tiles, header)
}

fn crc(b: &[u8]) -> (usize, u32) {
    (b.len(), crc32fast::hash(b))
}

#[test]
fn pmtiles_round_trips_tile_for_tile_and_the_pypi_reader_reads_every_tile() {
    let d = scratch_dir("pmtiles-rt");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    let f = d.join("esri.pmtiles");
    let out = export(&src, &f, &[]);
    assert!(out.contains("(pmtiles)"), "{out}");
    // The independent reader: every tile at its z/x/y (y from the top) with the source's bytes.
    let (tiles, header) = pypi_pmtiles_tiles(&f);
    assert_eq!(tiles.len(), want.len(), "{header}");
    for (t, b) in &want {
        assert_eq!(tiles.get(t), Some(&crc(b)), "{t}");
    }
    for line in [
        "clustered=True",
        "tile_type=JPEG",
        "tile_compression=NONE",
        "internal_compression=GZIP",
        "min_zoom=0",
        "max_zoom=2",
        "addressed_tiles_count=21",
    ] {
        assert!(header.lines().any(|l| l == line), "{line} not in\n{header}");
    }
    // Back to Compact V2 and to exploded: the source's tiles, byte for byte.
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
    let expl = d.join("expl");
    export(&f, &expl, &["--storage", "exploded"]);
    assert_eq!(all_tiles(&Cache::open(&expl).unwrap()), want);
    // info and verify --decode read it; it is read only.
    let info = run_ok(Command::new(bin()).arg("info").arg(&f));
    assert!(
        info.contains("storage:  pmtiles") && info.contains("PMTiles file"),
        "{info}"
    );
    let v = run_ok(Command::new(bin()).args(["verify", "--decode"]).arg(&f));
    assert!(
        v.contains("21 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
    assert!(Cache::open(&f).unwrap().store().read_only());
    // --storage pmtiles and a level selection.
    let part = d.join("part.pmtiles");
    export(&src, &part, &["--storage", "pmtiles", "--levels", "1-2"]);
    let (tiles, header) = pypi_pmtiles_tiles(&part);
    assert_eq!(tiles.len(), 20);
    assert!(header.lines().any(|l| l == "min_zoom=1"), "{header}");
    // An extent: the tiles meeting it, and it as the header's bounds (degrees × 10⁷).
    let part2 = d.join("extent.pmtiles");
    export(
        &src,
        &part2,
        &["--extent", "0,0,60,40", "--extent-crs", "4326"],
    );
    let (tiles, header) = pypi_pmtiles_tiles(&part2);
    assert_eq!(
        tiles.keys().copied().collect::<Vec<_>>(),
        vec![
            TileAddr::new(0, 0, 0),
            TileAddr::new(1, 0, 1),
            TileAddr::new(2, 1, 2)
        ]
    );
    for line in [
        "min_lon_e7=0",
        "max_lon_e7=600000000",
        "max_lat_e7=400000000",
    ] {
        assert!(header.lines().any(|l| l == line), "{line} not in\n{header}");
    }
    // A compact cache made from it imports into another one, tile for tile.
    let into = d.join("into");
    export(&src, &into, &["--storage", "compact-v2", "--levels", "0"]);
    run_ok(Command::new(bin()).arg("import").arg(&part).arg(&into));
    assert_eq!(all_tiles(&Cache::open(&into).unwrap()), want);
}

/// A file written by the `pmtiles` PyPI writer (the sample's tiles, and zoom 3 filled with the
/// zoom 0 tile: one run of 64 ids with the same bytes, stored once) goes into a compact cache
/// tile for tile.
#[test]
fn pmtiles_written_by_the_pypi_writer_import_tile_for_tile() {
    let d = scratch_dir("pmtiles-pypi");
    let src = esri_sample_cache();
    let ours = d.join("ours.pmtiles");
    export(&src, &ours, &[]);
    let theirs = d.join("theirs.pmtiles");
    let script = r#"
import sys
from pmtiles.reader import MmapSource, all_tiles
from pmtiles.writer import Writer
from pmtiles.tile import zxy_to_tileid, TileType, Compression
with open(sys.argv[1], "rb") as f:
    tiles = {zxy_to_tileid(*zxy): data for zxy, data in all_tiles(MmapSource(f))}
world = tiles[zxy_to_tileid(0, 0, 0)]
for x in range(8):
    for y in range(8):
        tiles[zxy_to_tileid(3, x, y)] = world
with open(sys.argv[2], "wb") as f:
    w = Writer(f)
    for tid in sorted(tiles):
        w.write_tile(tid, tiles[tid])
    w.finalize({"tile_type": TileType.JPEG, "tile_compression": Compression.NONE},
               {"name": "from the pypi writer"})
"#;
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(&ours)
        .arg(&theirs));
    assert!(
        out.status.success(),
        "pmtiles writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = all_tiles(&Cache::open(&src).unwrap());
    let world = want[&TileAddr::new(0, 0, 0)].clone();
    for x in 0..8 {
        for y in 0..8 {
            want.insert(TileAddr::new(3, y, x), world.clone());
        }
    }
    assert_eq!(all_tiles(&Cache::open(&theirs).unwrap()), want);
    let c = d.join("cache");
    export(&theirs, &c, &["--storage", "compact-v2"]);
    assert_eq!(all_tiles(&Cache::open(&c).unwrap()), want);
    // And back out: the run is one entry again, its bytes stored once.
    let again = d.join("again.pmtiles");
    export(&c, &again, &[]);
    let (tiles, header) = pypi_pmtiles_tiles(&again);
    assert_eq!(tiles.len(), want.len());
    assert!(
        header.lines().any(|l| l == "tile_contents_count=21"),
        "{header}"
    );
    assert!(
        header.lines().any(|l| l == "tile_entries_count=22"),
        "{header}"
    );
}

#[test]
fn pmtiles_refusals_and_bad_files_are_named() {
    let d = scratch_dir("pmtiles-refuse");
    // A national grid (EPSG:2056, Swiss LV95): not Web Mercator.
    let c = crate::support::lv95_cache(&d);
    let f = d.join("lv95.pmtiles");
    let o = run(Command::new(bin()).arg("export").arg(&c).arg(&f));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("PMTiles holds Web Mercator (EPSG:3857) tiles only")
            && err.contains("GeoPackage")
            && err.contains("lv95.pmtiles"),
        "{err}"
    );
    assert!(!f.exists(), "nothing written");
    let good = d.join("good.pmtiles");
    export(&esri_sample_cache(), &good, &[]);
    let bytes = std::fs::read(&good).unwrap();
    let mut v2 = bytes.clone();
    v2[7] = 2;
    let mut cut = bytes.clone();
    cut.truncate(1000);
    for (name, b, what) in [
        (
            "junk.pmtiles",
            b"this is no PMTiles file at all".to_vec(),
            "magic",
        ),
        (
            "short.pmtiles",
            bytes[..60].to_vec(),
            "truncated PMTiles header",
        ),
        ("v2.pmtiles", v2, "PMTiles version 2"),
        ("cut.pmtiles", cut, "past the end of the file"),
    ] {
        let p = d.join(name);
        std::fs::write(&p, &b).unwrap();
        for cmd in ["info", "verify"] {
            let o = run(Command::new(bin()).arg(cmd).arg(&p));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && err.contains(p.to_str().unwrap()) && err.contains(what),
                "{cmd} {name}: {err}"
            );
        }
    }
    // Written once: no export into an existing file, no import into one, no rw mount.
    let o = run(Command::new(bin())
        .arg("export")
        .arg(esri_sample_cache())
        .arg(&good));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already exists"),
        "{o:?}"
    );
    let o = run(Command::new(bin())
        .arg("import")
        .arg(esri_sample_cache())
        .arg(&good));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("written once"),
        "{o:?}"
    );
    assert_eq!(std::fs::read(&good).unwrap(), bytes, "unchanged");
    // --storage pmtiles into a name that says otherwise.
    let o = run(Command::new(bin())
        .arg("export")
        .arg(esri_sample_cache())
        .arg(d.join("x"))
        .args(["--storage", "pmtiles"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name it NAME.pmtiles"));
}

#[test]
fn pmtiles_mount_shows_the_files_tiles_read_only() {
    need("fusermount3");
    let d = scratch_dir("pmtiles-mount");
    let src = sample_cache(&d, "0-2");
    let f = d.join("s.pmtiles");
    export(&src, &f, &["--levels", "0-1"]);
    let want = all_tiles(&Cache::open(&src).unwrap());
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
    assert!(std::fs::write(m.path("_alllayers/L00/R00000000/C00000000.png"), b"x").is_err());
}

/// Vector tiles (gzip'ed MVT, as Esri's vector caches store them) go to PMTiles with tile type
/// MVT and tile compression gzip; GDAL's PMTiles driver (the GDAL 3.12 of the pyogrio wheel: the
/// driver reads vector tiles only) reads each zoom's features, and the file comes back tile for
/// tile.
/// A Web Mercator vector tile cache of levels 0-1 (five gzip'ed MVT tiles made by
/// mapbox-vector-tile, one layer `roads` with a Number field `n`) in `d/roads`, and its tiles.
fn vector_cache(d: &Path) -> (std::path::PathBuf, BTreeMap<TileAddr, Vec<u8>>) {
    use bundlefs::format::conf::{TileFormat, TileScheme};
    let make = r#"
import gzip, sys, mapbox_vector_tile as mvt
for i in range(5):
    t = mvt.encode([{"name": "roads", "features": [{"geometry": "LINESTRING(0 0, %d 4096)" % (100 + i), "properties": {"n": i}}]}])
    open(sys.argv[1] + "/pbf-%d" % i, "wb").write(gzip.compress(t, mtime=0))
"#;
    run_ok(Command::new("python3").args(["-c", make]).arg(d));
    let addrs = [
        TileAddr::new(0, 0, 0),
        TileAddr::new(1, 0, 0),
        TileAddr::new(1, 0, 1),
        TileAddr::new(1, 1, 0),
        TileAddr::new(1, 1, 1),
    ];
    let want: BTreeMap<TileAddr, Vec<u8>> = addrs
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, std::fs::read(d.join(format!("pbf-{i}"))).unwrap()))
        .collect();
    let src = d.join("roads");
    let c = Cache::create(
        &src,
        &TileScheme::web_mercator(1, TileFormat::Other("pbf".into())),
        None,
    )
    .unwrap();
    let refs: Vec<(TileAddr, &[u8])> = want.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    c.write_tiles(&refs).unwrap();
    drop(c);
    (src, want)
}

/// GDAL (the pyogrio wheel's) reading vector tile file `f`: its layers, and the `n` values of
/// layer `roads` at zooms 0 and 1.
fn gdal_vector_reads(f: &Path) -> String {
    let script = r#"
import sys, pyogrio
from pyogrio.raw import read
print("layers", [str(l[0]) for l in pyogrio.list_layers(sys.argv[1])])
for z in (0, 1):
    meta, fids, geoms, fields = read(sys.argv[1], layer="roads", ZOOM_LEVEL=str(z))
    print("zoom", z, sorted(int(v) for v in fields[meta["fields"].tolist().index("n")]))
"#;
    let out = run(Command::new("python3").args(["-c", script]).arg(f));
    assert!(
        out.status.success(),
        "pyogrio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vector tile cache to MBTiles: `format=pbf` and MBTiles 1.3's `json` metadata with the
/// layers and fields read from the tiles (`vector_layers`), which GDAL's MBTiles driver needs to
/// read the file as vector tiles; it reads each zoom's features.
#[test]
fn mbtiles_of_vector_tiles_carry_vector_layers_and_gdal_reads_them() {
    need("sqlite3");
    let d = scratch_dir("mbtiles-mvt");
    let (src, want) = vector_cache(&d);
    let f = d.join("roads.mbtiles");
    export(&src, &f, &[]);
    let (ok, meta, _) = sh(&format!(
        "sqlite3 {} \"SELECT name || '=' || value FROM metadata WHERE name IN ('format', 'json') ORDER BY name\"",
        f.display()
    ));
    assert!(ok);
    assert!(meta.contains("format=pbf"), "{meta}");
    let json: serde_json::Value = serde_json::from_str(
        meta.lines()
            .find_map(|l| l.strip_prefix("json="))
            .unwrap_or_else(|| panic!("no json in\n{meta}")),
    )
    .unwrap();
    assert_eq!(
        json["vector_layers"],
        serde_json::json!([{"id": "roads", "fields": {"n": "Number"}, "minzoom": 0, "maxzoom": 1}])
    );
    let text = gdal_vector_reads(&f);
    assert!(text.contains("layers ['roads']"), "{text}");
    assert!(text.contains("zoom 0 [0]"), "{text}");
    assert!(text.contains("zoom 1 [1, 2, 3, 4]"), "{text}");
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
}

#[test]
fn pmtiles_of_vector_tiles_are_read_by_gdal() {
    let d = scratch_dir("pmtiles-mvt");
    let (src, want) = vector_cache(&d);
    let f = d.join("roads.pmtiles");
    export(&src, &f, &[]);
    let (tiles, header) = pypi_pmtiles_tiles(&f);
    assert_eq!(tiles.len(), 5);
    for line in ["tile_type=MVT", "tile_compression=GZIP"] {
        assert!(header.lines().any(|l| l == line), "{line} not in\n{header}");
    }
    let text = gdal_vector_reads(&f);
    assert!(text.contains("layers ['roads']"), "{text}");
    assert!(text.contains("zoom 0 [0]"), "{text}");
    assert!(text.contains("zoom 1 [1, 2, 3, 4]"), "{text}");
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
}

/// A MIXED cache (JPEG and PNG tiles) goes to PMTiles with tile type PNG and each tile's bytes as
/// they are, and comes back as a MIXED cache (doc/formats.md says why it is not refused).
#[test]
fn pmtiles_of_a_mixed_cache_keep_each_tiles_bytes() {
    use bundlefs::format::conf::{TileFormat, TileScheme};
    let d = scratch_dir("pmtiles-mixed");
    let jpeg =
        all_tiles(&Cache::open(esri_sample_cache()).unwrap())[&TileAddr::new(0, 0, 0)].clone();
    let mut png = Vec::new();
    image::RgbaImage::from_pixel(256, 256, image::Rgba([0, 90, 200, 128]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let want: BTreeMap<TileAddr, Vec<u8>> = [
        (TileAddr::new(0, 0, 0), jpeg.clone()),
        (TileAddr::new(1, 0, 0), png.clone()),
        (TileAddr::new(1, 1, 1), jpeg),
        (TileAddr::new(1, 1, 0), png),
    ]
    .into_iter()
    .collect();
    let src = d.join("mixed");
    let c = Cache::create(&src, &TileScheme::web_mercator(1, TileFormat::Mixed), None).unwrap();
    let refs: Vec<(TileAddr, &[u8])> = want.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    c.write_tiles(&refs).unwrap();
    drop(c);
    let f = d.join("mixed.pmtiles");
    export(&src, &f, &[]);
    let (tiles, header) = pypi_pmtiles_tiles(&f);
    assert!(header.lines().any(|l| l == "tile_type=PNG"), "{header}");
    assert!(
        header.lines().any(|l| l == "tile_contents_count=2"),
        "{header}"
    );
    for (t, b) in &want {
        assert_eq!(tiles.get(t), Some(&crc(b)), "{t}");
    }
    let info = run_ok(Command::new(bin()).arg("info").arg(&f));
    assert!(info.contains("format:   MIXED"), "{info}");
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    let c = Cache::open(&back).unwrap();
    assert_eq!(c.scheme().unwrap().tile_format, TileFormat::Mixed);
    assert_eq!(all_tiles(&c), want);
}
