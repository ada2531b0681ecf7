//! GeoPackage against its own tools: files bundlefs writes read by GDAL (the rasterio wheel's GPKG
//! driver: per-level checksums equal to what its ESRIC driver reads from the source cache; for a
//! national grid, the same pixels at the same place), by MapProxy (a `type: geopackage` cache,
//! exported by `mapproxy-util export`) and by `sqlite3` (tile matrices, spatial reference); a
//! GeoPackage written by `gdal_translate` imported tile for tile; round trips byte for byte; bad
//! files named.

use std::path::Path;
use std::process::Command;

use bundlefs::cache::Cache;
use bundlefs::format::conf::Envelope;
use bundlefs::format::TileAddr;

use crate::support::mount::{need, sh, Mounted};
use crate::support::sqlite::{export, query as sqlite, tiles as sqlite_tiles};
use crate::support::{all_tiles, bin, esri_sample_cache, run, run_ok, scratch_dir};

#[test]
fn geopackage_round_trips_tile_for_tile_rows_from_the_top() {
    let d = scratch_dir("gpkg-rt");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    let f = d.join("esri.gpkg");
    let out = export(&src, &f, &[]);
    assert!(out.contains("(geopackage)"), "{out}");
    // sqlite3 sees each tile at its own row (GeoPackage counts rows from the top, as bundles do).
    let rows = sqlite_tiles(&f, "esri_sample_cache");
    assert_eq!(rows.len(), want.len());
    for (t, b) in &want {
        assert_eq!(rows.get(&(t.level, t.col, t.row)), Some(b), "{t}");
    }
    // What GeoPackage 1.3 asks of the file: its application id and version, the three required
    // spatial references and the cache's, a contents row of data type tiles, the tile matrix set
    // and a tile matrix per level.
    assert_eq!(
        sqlite(
            &f,
            "PRAGMA application_id; PRAGMA user_version; PRAGMA page_size;"
        ),
        vec![
            vec!["1196444487".to_string()],
            vec!["10300".to_string()],
            vec![bundlefs::cache::store::sqlite::PAGE_SIZE.to_string()]
        ]
    );
    let srs = sqlite(
        &f,
        "SELECT srs_id, organization, organization_coordsys_id FROM gpkg_spatial_ref_sys ORDER BY srs_id",
    );
    assert_eq!(
        srs,
        [
            ["-1", "NONE", "-1"],
            ["0", "NONE", "0"],
            ["3857", "EPSG", "3857"],
            ["4326", "EPSG", "4326"]
        ]
        .map(|r| r.map(str::to_string).to_vec())
        .to_vec()
    );
    assert_eq!(
        sqlite(
            &f,
            "SELECT table_name, data_type, srs_id FROM gpkg_contents"
        ),
        vec![vec![
            "esri_sample_cache".to_string(),
            "tiles".into(),
            "3857".into()
        ]]
    );
    let m = sqlite(
        &f,
        "SELECT zoom_level, matrix_width, matrix_height, tile_width, pixel_x_size FROM gpkg_tile_matrix \
         WHERE zoom_level <= 2 ORDER BY zoom_level",
    );
    for (z, row) in m.iter().enumerate() {
        let n = (1u32 << z).to_string();
        assert_eq!(
            &row[..4],
            &[z.to_string(), n.clone(), n, "256".into()],
            "{row:?}"
        );
        let px: f64 = row[4].parse().unwrap();
        assert!(
            (px - 156543.03392800014 / f64::from(1u32 << z)).abs() < 1e-6,
            "{row:?}"
        );
    }
    // Back to Compact V2 and to exploded: the source's tiles, byte for byte.
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
    let expl = d.join("expl");
    export(&f, &expl, &["--storage", "exploded"]);
    assert_eq!(all_tiles(&Cache::open(&expl).unwrap()), want);
    let info = run_ok(Command::new(bin()).arg("info").arg(&f));
    assert!(
        info.contains("storage:  geopackage") && info.contains("(GeoPackage)"),
        "{info}"
    );
    let v = run_ok(Command::new(bin()).args(["verify", "--decode"]).arg(&f));
    assert!(
        v.contains("21 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
}

#[test]
fn gdal_reads_bundlefs_geopackage_with_the_sources_checksums() {
    let d = scratch_dir("gpkg-gdal");
    let src = esri_sample_cache();
    let f = d.join("esri.gpkg");
    export(&src, &f, &[]);
    // The rasterio wheel's GDAL: ESRIC on the source's conf.xml (levels 0-2 are its coarsest
    // overviews), the GPKG driver on the file (zoom 2, the deepest holding tiles, is its base).
    let script = r#"
import sys, rasterio
conf, gpkg = sys.argv[1], sys.argv[2]
with rasterio.open(conf) as ds:
    n = len(ds.overviews(1))
for i in range(3):
    with rasterio.open(conf, overview_level=n - 1 - i) as d:
        print("esric", i, d.width, d.height, [d.checksum(b) for b in (1, 2, 3)])
with rasterio.open(gpkg) as ds:
    print("driver", ds.driver)
    m = len(ds.overviews(1))
for i in range(3):
    kw = {} if i == 2 else {"overview_level": m - 1 - i}
    with rasterio.open(gpkg, **kw) as d:
        print("gpkg", i, d.width, d.height, [d.checksum(b) for b in (1, 2, 3)])
"#;
    let text = python(script, &[&src.join("conf.xml"), &f]);
    assert!(text.contains("driver GPKG"), "{text}");
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
        assert_eq!(of("esric"), of("gpkg"), "level {level}:\n{text}");
    }
}

/// Runs a Python script (the rasterio wheel's GDAL) with `args`; its standard output.
fn python(script: &str, args: &[&Path]) -> String {
    let out = run(Command::new("python3").args(["-c", script]).args(args));
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 512 px PNG tile of one colour, different for each tile.
fn tile_png(t: TileAddr) -> Vec<u8> {
    let px = image::Rgba([
        (t.col * 37 % 256) as u8,
        (t.row * 59 % 256) as u8,
        t.level.wrapping_mul(80),
        255,
    ]);
    let img = image::RgbaImage::from_pixel(512, 512, px);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A British National Grid cache (EPSG:27700, ArcGIS's default origin for references in metres,
/// 512 px tiles, three levels) goes into a GeoPackage with its own spatial reference and matrices,
/// comes back tile for tile with the same scheme, and GDAL's GPKG driver shows the same pixels at
/// the same map coordinates as its ESRIC driver shows from the source.
#[test]
fn a_national_grid_goes_into_a_geopackage_and_gdal_places_it_as_esric_does() {
    let d = scratch_dir("gpkg-national");
    let c = d.join("bng");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&c)
            .args(["--wkid", "27700", "--scales", "4000000,2000000,1000000"])
            .args(["--tile-size", "512", "--extent", "0,0,700000,1300000"]),
    );
    let cache = Cache::open(&c).unwrap();
    let scheme = cache.scheme().unwrap().clone();
    let area = Envelope {
        xmin: 100000.0,
        ymin: 100000.0,
        xmax: 600000.0,
        ymax: 1200000.0,
    };
    let mut tiles = Vec::new();
    for l in &scheme.lods {
        let (rows, cols) = scheme.tile_range(l.level, &area).unwrap();
        for r in rows {
            for col in cols.clone() {
                let t = TileAddr::new(l.level, r, col);
                tiles.push((t, tile_png(t)));
            }
        }
    }
    let refs: Vec<(TileAddr, &[u8])> = tiles.iter().map(|(t, b)| (*t, &b[..])).collect();
    cache.write_tiles(&refs).unwrap();
    drop(cache);
    let want = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(want.len(), tiles.len());

    let f = d.join("bng.gpkg");
    export(&c, &f, &[]);
    assert_eq!(
        sqlite(
            &f,
            "SELECT s.srs_id, s.organization, m.min_x, m.max_y FROM gpkg_tile_matrix_set m \
             JOIN gpkg_spatial_ref_sys s USING (srs_id)"
        ),
        vec![vec![
            "27700".to_string(),
            "EPSG".into(),
            "-5120900.0".into(),
            "9998100.0".into()
        ]]
    );
    // Each level's matrix reaches past the cache extent (700 km east, 0 north) from the origin.
    for row in sqlite(
        &f,
        "SELECT zoom_level, matrix_width, matrix_height, pixel_x_size FROM gpkg_tile_matrix",
    ) {
        let (w, h, px): (f64, f64, f64) = (
            row[1].parse().unwrap(),
            row[2].parse().unwrap(),
            row[3].parse().unwrap(),
        );
        assert!(-5120900.0 + w * 512.0 * px >= 700000.0, "{row:?}");
        assert!(9998100.0 - h * 512.0 * px <= 0.0, "{row:?}");
    }
    let back = d.join("back");
    export(&f, &back, &["--storage", "compact-v2"]);
    let b = Cache::open(&back).unwrap();
    assert_eq!(all_tiles(&b), want);
    let s2 = b.scheme().unwrap();
    assert_eq!(
        (s2.wkid, s2.origin_x, s2.origin_y),
        (Some(27700), -5120900.0, 9998100.0)
    );
    assert_eq!((s2.tile_cols, s2.tile_rows), (512, 512));
    for (a, z) in scheme.lods.iter().zip(&s2.lods) {
        assert_eq!(a.level, z.level);
        assert!((a.resolution / z.resolution - 1.0).abs() < 1e-12);
        assert!(
            (a.scale / z.scale - 1.0).abs() < 1e-6,
            "{} {}",
            a.scale,
            z.scale
        );
    }
    // GDAL: the deepest level read over the same map window from the source (ESRIC, its full
    // resolution) and the file (GPKG, its base): same pixel size, same pixels.
    let script = r#"
import sys, rasterio
from rasterio.windows import from_bounds
conf, gpkg = sys.argv[1], sys.argv[2]
box = [float(v) for v in sys.argv[3:7]]
for name, path in (("esric", conf), ("gpkg", gpkg)):
    with rasterio.open(path) as ds:
        w = from_bounds(*box, transform=ds.transform).round_offsets().round_lengths()
        a = ds.read(window=w)
        print(name, ds.driver, round(ds.res[0], 6), a.shape, int(a.sum()), hash(a.tobytes()))
"#;
    // A window on whole tiles of the deepest level, inside the tiles written: both drivers' pixel
    // grids hold it without resampling.
    let deepest = scheme.lods.last().unwrap();
    let tw = 512.0 * deepest.resolution;
    let (rows, cols) = scheme.tile_range(deepest.level, &area).unwrap();
    let edge = |v: f64| Path::new(&format!("{v}")).to_path_buf();
    let window = [
        edge(scheme.origin_x + f64::from(cols.start + 1) * tw),
        edge(scheme.origin_y - f64::from(rows.end - 1) * tw),
        edge(scheme.origin_x + f64::from(cols.end - 1) * tw),
        edge(scheme.origin_y - f64::from(rows.start + 1) * tw),
    ];
    let mut args = vec![c.join("conf.xml"), f.clone()];
    args.extend(window);
    let args: Vec<&Path> = args.iter().map(|p| p.as_path()).collect();
    let text = python(script, &args);
    let line = |who: &str| {
        text.lines()
            .find(|l| l.starts_with(who))
            .unwrap_or_else(|| panic!("no {who} line:\n{text}"))
            .split(' ')
            .skip(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(text.contains("gpkg GPKG"), "{text}");
    assert_eq!(line("esric"), line("gpkg"), "{text}");
}

/// MapProxy reads the GeoPackage bundlefs wrote from its own cache as a `type: geopackage` cache
/// on GLOBAL_WEBMERCATOR, whose rows count from the top as GeoPackage's do
/// ([`crate::support::mapproxy`]).
#[test]
fn mapproxy_reads_bundlefs_geopackage() {
    crate::support::mapproxy::reads_what_bundlefs_wrote(
        "gpkg-mapproxy",
        &crate::support::mapproxy::Reader {
            dest: "mp.gpkg",
            export_args: &[],
            cache_yaml: "      type: geopackage\n      filename: {path}\n      table_name: cache",
            origin_sw: false,
        },
    );
}

/// GDAL writes a GeoPackage on the Web Mercator grid (`TILING_SCHEME=GoogleMapsCompatible`, its
/// own PNG encoding, zooms 2 then 1 and 0 by gdaladdo); bundlefs reads its scheme as Web Mercator
/// zoom levels and imports every tile at its row and column with GDAL's bytes.
#[test]
fn a_geopackage_written_by_gdal_imports_tile_for_tile() {
    let f = crate::support::sqlite::gdal_file_imports_tile_for_tile(
        "gpkg-from-gdal",
        "gdal.gpkg",
        "GPKG -co TILING_SCHEME=GoogleMapsCompatible -co TILE_FORMAT=PNG -co RASTER_TABLE=esric",
        "esric",
        false,
    );
    let g = Cache::open(&f).unwrap();
    assert!(bundlefs::format::mbtiles::refusal(g.scheme().unwrap()).is_none());
}

/// A mount of a GeoPackage shows its tiles; an import adds a level into it; bad files are named.
#[test]
fn a_mount_of_a_geopackage_and_bad_files() {
    need("fusermount3");
    let d = scratch_dir("gpkg-mount");
    let src = esri_sample_cache();
    let f = d.join("s.gpkg");
    export(&src, &f, &["--levels", "0-1"]);
    let want = all_tiles(&Cache::open(&src).unwrap());
    {
        let m = Mounted::start(&f, &d.join("mnt"), &[]);
        for (t, b) in want.iter().filter(|(t, _)| t.level <= 1) {
            let p = m.path(&format!(
                "_alllayers/L{:02}/R{:08x}/C{:08x}.jpg",
                t.level, t.row, t.col
            ));
            assert_eq!(&std::fs::read(&p).unwrap(), b, "{}", p.display());
        }
        assert!(
            !m.path("_alllayers/L02").exists(),
            "level 2 was not exported"
        );
    }
    run_ok(
        Command::new(bin())
            .arg("import")
            .arg(&src)
            .arg(&f)
            .args(["--levels", "2"]),
    );
    assert_eq!(all_tiles(&Cache::open(&f).unwrap()), want);

    let bad = d.join("bad.gpkg");
    std::fs::write(&bad, b"this is not a database").unwrap();
    let o = run(Command::new(bin()).arg("info").arg(&bad));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(bad.to_str().unwrap()),
        "{err}"
    );
    assert!(
        err.contains("not a GeoPackage") && err.contains("not a database"),
        "{err}"
    );
    // A GeoPackage whose tile table lost its tile matrices.
    let nomatrix = d.join("nomatrix.gpkg");
    std::fs::copy(&f, &nomatrix).unwrap();
    let (ok, _, e) = sh(&format!(
        "sqlite3 {} 'DELETE FROM gpkg_tile_matrix'",
        nomatrix.display()
    ));
    assert!(ok, "{e}");
    let o = run(Command::new(bin()).arg("info").arg(&nomatrix));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("has no gpkg_tile_matrix rows"),
        "{err}"
    );
    // --storage geopackage into a name that says otherwise; LERC tiles refused by name.
    let o = run(Command::new(bin())
        .arg("export")
        .arg(&src)
        .arg(d.join("x"))
        .args(["--storage", "geopackage"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name it NAME.gpkg"));
}

/// MapProxy seeds a `type: geopackage` cache from its debug source (levels 0-2 on
/// GLOBAL_WEBMERCATOR); bundlefs reads the file MapProxy wrote as Web Mercator zoom levels and
/// imports every tile at its row and column with MapProxy's bytes.
#[test]
fn a_geopackage_seeded_by_mapproxy_imports_tile_for_tile() {
    need("mapproxy-seed");
    let d = scratch_dir("gpkg-mapproxy-seed");
    let f = d.join("mp.gpkg");
    let conf = d.join("mapproxy.yaml");
    std::fs::write(
        &conf,
        format!(
            "services:\n  demo:\nlayers:\n  - name: mp\n    title: mp\n    sources: [gp]\n\
             globals:\n  cache:\n    base_dir: {d}/cache_data\n    lock_dir: {d}/locks\n    \
             tile_lock_dir: {d}/locks\n\
             sources:\n  dbg:\n    type: debug\n\
             caches:\n  gp:\n    grids: [GLOBAL_WEBMERCATOR]\n    sources: [dbg]\n    \
             format: image/png\n    cache:\n      type: geopackage\n      filename: {f}\n      \
             table_name: seeded\n",
            d = d.display(),
            f = f.display()
        ),
    )
    .unwrap();
    let seed = d.join("seed.yaml");
    std::fs::write(
        &seed,
        "seeds:\n  s:\n    caches: [gp]\n    grids: [GLOBAL_WEBMERCATOR]\n    levels:\n      to: 2\n",
    )
    .unwrap();
    let (ok, out, err) = sh(&format!(
        "cd {} && mapproxy-seed -f {} -s {} -c 1 --seed s",
        d.display(),
        conf.display(),
        seed.display()
    ));
    assert!(ok, "mapproxy-seed: {out}{err}");
    let rows = sqlite_tiles(&f, "seeded");
    assert_eq!(rows.len(), 21, "zooms 0-2");
    let g = Cache::open(&f).unwrap();
    assert!(bundlefs::format::mbtiles::refusal(g.scheme().unwrap()).is_none());
    let c = d.join("cache");
    export(&f, &c, &["--storage", "compact-v2"]);
    let got = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(got.len(), rows.len());
    for ((z, x, y), b) in &rows {
        let t = TileAddr::new(*z, *y, *x);
        assert_eq!(got.get(&t), Some(b), "{t}");
    }
}
