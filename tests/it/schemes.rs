//! Tiling schemes from the parameters of ArcGIS's Create Map Server Cache / Generate Map Server
//! Cache Tiling Scheme (`bundlefs create --wkid …`, `bundlefs scheme … -o FILE.xml`): the seed's
//! STANDARD example, the scheme file read back by `create`, the errors for bad combinations, and
//! caches for EPSG:2180 and EPSG:4326 with 512 px tiles rendered with `label` and read by GDAL's
//! ESRIC driver (Debian's GDAL 3.6 `gdalinfo` for the geotransform; the GDAL 3.10 in the
//! `rasterio` wheel for the pixels, as GDAL 3.6 aborts reading tiles of other than 256 px).
//! The GDAL tests FAIL, not skip, without `gdalinfo` or `rasterio` (`scripts/test.sh` installs them).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::*;
use bundlefs::cache::Cache;
use bundlefs::format::conf::{parse_cdi, TileFormat, TileScheme};

/// ArcGIS's inches per metre (resolution = scale / (DPI × 39.37)), written out here rather than
/// taken from the library so a change there shows.
const INCHES_PER_METRE: f64 = 39.37;
/// Metres per degree ArcGIS's geographic schemes imply: its pair 0.703125 deg/px ↔ 1:295497598.570834
/// (256 px, 96 DPI; ArcGIS Maps SDK for JavaScript `TileInfo.makeGCSWithTileSize`).
const METRES_PER_DEGREE: f64 = 295_497_598.570_834 / (0.703_125 * 96.0 * INCHES_PER_METRE);

fn bundlefs(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn scheme_of(conf: &Path) -> TileScheme {
    let bytes = fs::read(conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    TileScheme::parse_conf_xml(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()))
        .scheme
}

fn scales(s: &TileScheme) -> Vec<f64> {
    s.lods.iter().map(|l| l.scale).collect()
}

/// Fails the command must fail with exit 2 and this text in its message; returns stderr.
fn fails_with(args: &[&str], want: &str) -> String {
    let out = run(&mut bundlefs(args));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.to_lowercase().contains(&want.to_lowercase()),
        "{args:?}: want {want:?} in:\n{err}"
    );
    err
}

#[test]
fn standard_scales_reproduce_the_seed_example() {
    // Seed (create-map-server-cache-tool.txt, Scales Type): "if the source map document has an
    // extent of 1:121,000,000 and three scale levels are defined, the map service will create a
    // cache with scale levels at 1:128,000,000; 1:64,000,000; and 1:32,000,000."
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("std.xml");
    let out = run_ok(&mut bundlefs(&[
        "scheme",
        "--wkid",
        "3857",
        "--standard",
        "3",
        "--extent-scale",
        "121000000",
        "-o",
        p(&f),
    ]));
    assert!(out.contains("3 levels"), "{out}");
    let s = scheme_of(&f);
    assert_eq!(scales(&s), vec![128e6, 64e6, 32e6]);
    for l in &s.lods {
        let want = l.scale / (96.0 * INCHES_PER_METRE);
        assert!((l.resolution / want - 1.0).abs() < 1e-12, "{l:?}");
    }
    assert_eq!((s.wkid, s.latest_wkid), (Some(102100), Some(3857)));
    assert_eq!(
        (s.origin_x, s.origin_y),
        (-20037508.342787, 20037508.342787)
    );

    // The same from an extent: a square whose side fits one 256-px tile at 1:121,000,000.
    let side = 121e6 / (96.0 * INCHES_PER_METRE) * 256.0;
    let ext = format!(
        "{},{},{},{}",
        -side / 2.0,
        -side / 2.0,
        side / 2.0,
        side / 2.0
    );
    let g = tmp.path().join("ext.xml");
    run_ok(&mut bundlefs(&[
        "scheme",
        "--wkid",
        "3857",
        "--standard",
        "3",
        "--extent",
        &ext,
        "-o",
        p(&g),
    ]));
    assert_eq!(scales(&scheme_of(&g)), vec![128e6, 64e6, 32e6]);
    // 1:90,000,000 is closer (by ratio) to 1:64,000,000 than to 1:128,000,000.
    let h = tmp.path().join("90.xml");
    run_ok(&mut bundlefs(&[
        "scheme",
        "--wkid",
        "3857",
        "--standard",
        "2",
        "--extent-scale",
        "90000000",
        "-o",
        p(&h),
    ]));
    assert_eq!(scales(&scheme_of(&h)), vec![64e6, 32e6]);
}

#[test]
fn default_origins_and_custom_scales() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, (f64, f64), Option<u32>); 3] = [
        ("3857", (-20037508.342787, 20037508.342787), Some(102100)),
        ("4326", (-180.0, 90.0), Some(4326)),
        ("2180", (-5120900.0, 9998100.0), Some(2180)),
    ];
    for (wkid, origin, want_wkid) in cases {
        let f = tmp.path().join(format!("{wkid}.xml"));
        run_ok(&mut bundlefs(&[
            "scheme",
            "--wkid",
            wkid,
            "--scales",
            "4000000,2000000,500",
            "--dpi",
            "120",
            "--tile-size",
            "128",
            "-o",
            p(&f),
        ]));
        let s = scheme_of(&f);
        assert_eq!((s.origin_x, s.origin_y), origin, "{wkid}");
        assert_eq!(s.wkid, want_wkid, "{wkid}");
        assert_eq!(scales(&s), vec![4e6, 2e6, 500.0]);
        assert_eq!((s.tile_cols, s.tile_rows, s.dpi), (128, 128, 120));
        assert_eq!(s.tile_format, TileFormat::Png);
        assert_eq!(s.compression_quality, 0);
        let per_unit = if wkid == "4326" {
            METRES_PER_DEGREE
        } else {
            1.0
        };
        let want = 500.0 / (120.0 * INCHES_PER_METRE * per_unit);
        assert!((s.lods[2].resolution / want - 1.0).abs() < 1e-12, "{wkid}");
        // Every scheme written carries a WKT (GDAL reads the spatial reference from it only).
        assert!(s.wkt.as_deref().is_some_and(|w| w.contains(wkid)), "{wkid}");
    }
    // --origin overrides; JPEG gets quality 75 by default.
    let f = tmp.path().join("o.xml");
    run_ok(&mut bundlefs(&[
        "scheme",
        "--wkid",
        "2180",
        "--origin",
        "-1000,2000000",
        "--scales",
        "1000",
        "--format",
        "JPEG",
        "-o",
        p(&f),
    ]));
    let s = scheme_of(&f);
    assert_eq!((s.origin_x, s.origin_y), (-1000.0, 2000000.0));
    assert_eq!(
        (s.tile_format, s.compression_quality),
        (TileFormat::Jpeg, 75)
    );
}

/// The WKT of case 09 (ArcGIS's Esri WKT of ETRS_1989_Poland_CS92) gives the same scheme as WKID 2180,
/// except the WKT text, which is kept as given.
#[test]
fn wkt_file_gives_the_spatial_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = fs::read_to_string(case_data("09-local-srs-2180").join("scheme.xml")).unwrap();
    let wkt = conf
        .split("<WKT>")
        .nth(1)
        .unwrap()
        .split("</WKT>")
        .next()
        .unwrap()
        .replace("&quot;", "\"");
    let wkt_file = tmp.path().join("pl.wkt");
    fs::write(&wkt_file, &wkt).unwrap();
    let a = tmp.path().join("a.xml");
    let b = tmp.path().join("b.xml");
    let args = ["--scales", "10000000,5000000", "-o"];
    run_ok(
        bundlefs(&["scheme", "--wkt", p(&wkt_file)])
            .args(args)
            .arg(&a),
    );
    run_ok(bundlefs(&["scheme", "--wkid", "2180"]).args(args).arg(&b));
    let (sa, sb) = (scheme_of(&a), scheme_of(&b));
    assert_eq!(sa.wkt.as_deref(), Some(wkt.as_str()));
    assert_eq!((sa.wkid, sa.latest_wkid), (Some(2180), Some(2180)));
    assert_eq!(
        (sa.origin_x, sa.origin_y, &sa.lods),
        (sb.origin_x, sb.origin_y, &sb.lods)
    );
    // Case 09's own scheme (ArcGIS-made) has the same origin and, at 1:10,000,000, the same
    // resolution.
    let c09 = scheme_of(&case_data("09-local-srs-2180").join("scheme.xml"));
    assert_eq!((c09.origin_x, c09.origin_y), (sa.origin_x, sa.origin_y));
    assert_eq!(c09.lods[0].scale, sa.lods[0].scale);
    assert!((c09.lods[0].resolution / sa.lods[0].resolution - 1.0).abs() < 1e-12);
}

#[test]
fn scheme_file_is_taken_back_by_create() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("geo.xml");
    run_ok(&mut bundlefs(&[
        "scheme",
        "--wkid",
        "4326",
        "--scales",
        "50000000,25000000,12500000",
        "--tile-size",
        "512",
        "--format",
        "MIXED",
        "--quality",
        "90",
        "--antialiasing",
        "-o",
        p(&f),
    ]));
    let written = fs::read_to_string(&f).unwrap();
    assert!(
        written.contains("<Antialiasing>true</Antialiasing>"),
        "{written}"
    );
    // Typed as ArcGIS types a geographic reference.
    assert!(
        written.contains("xsi:type=\"typens:GeographicCoordinateSystem\""),
        "{written}"
    );
    let cache = tmp.path().join("cache");
    let out = run_ok(&mut bundlefs(&[
        "create",
        p(&cache),
        "--scheme",
        p(&f),
        "--extent",
        "10,45,30,60",
    ]));
    assert!(out.contains("3 levels, MIXED"), "{out}");
    let conf = cache.join("conf.xml");
    assert_eq!(scheme_of(&conf), scheme_of(&f));
    let back = fs::read_to_string(&conf).unwrap();
    assert!(back.contains("<Antialiasing>true</Antialiasing>"), "{back}");
    let cdi = parse_cdi(&fs::read(cache.join("conf.cdi")).unwrap()).unwrap();
    assert_eq!(
        [cdi.xmin, cdi.ymin, cdi.xmax, cdi.ymax],
        [10.0, 45.0, 30.0, 60.0]
    );
    // The cache opens, and --format still overrides a file's format.
    Cache::open(&cache).unwrap();
    let png = tmp.path().join("png");
    run_ok(&mut bundlefs(&[
        "create",
        p(&png),
        "--scheme",
        p(&f),
        "--format",
        "PNG",
    ]));
    let s = scheme_of(&png.join("conf.xml"));
    assert_eq!((s.tile_format, s.compression_quality), (TileFormat::Png, 0));
}

#[test]
fn bad_combinations_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let d = p(&dir);
    let bad_wkt = tmp.path().join("bad.wkt");
    fs::write(&bad_wkt, "PROJCRS[\"WKT 2 is not read\"]").unwrap();
    let missing = tmp.path().join("missing.wkt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--wkid",
                "2180",
                "--scales",
                "1000",
                "--origin",
                "200000,9998100",
                "--extent",
                "140000,120000,880000,800000",
            ],
            "not above-left of the extent",
        ),
        (
            vec![
                "--wkid",
                "2180",
                "--scales",
                "1000",
                "--origin",
                "-5120900,700000",
                "--extent",
                "140000,120000,880000,800000",
            ],
            "not above-left of the extent",
        ),
        (
            vec!["--wkid", "3857", "--scales", "1000,2000"],
            "strictly decreasing",
        ),
        (
            vec!["--wkid", "3857", "--scales", "1000,1000"],
            "strictly decreasing",
        ),
        (
            vec!["--wkid", "3857", "--scales", "0"],
            "not a positive number",
        ),
        (
            vec!["--wkid", "3857", "--scales", "1000", "--quality", "80"],
            "quality applies to JPEG and MIXED only",
        ),
        (
            vec![
                "--wkid",
                "3857",
                "--scales",
                "1000",
                "--format",
                "JPEG",
                "--quality",
                "0",
            ],
            "out of range 1-100",
        ),
        (vec!["--wkid", "99999", "--scales", "1000"], "WKID 99999"),
        (
            vec!["--wkid", "3857", "--scales", "1000", "--tile-size", "300"],
            "tile size 300",
        ),
        (
            vec!["--wkid", "3857", "--scales", "1000", "--dpi", "0"],
            "DPI 0",
        ),
        (vec!["--wkid", "3857", "--standard", "3"], "--extent"),
        (
            vec![
                "--wkid",
                "3857",
                "--standard",
                "0",
                "--extent-scale",
                "1000",
            ],
            "0 scale levels",
        ),
        (
            vec![
                "--wkid",
                "4326",
                "--scales",
                "1000",
                "--extent",
                "0,0,200,10",
            ],
            "longitude -180..180",
        ),
        (vec!["--wkid", "3857"], "--scales"),
        (vec!["--scales", "1000"], "--wkid N or --wkt FILE"),
        (vec!["--wkt", p(&bad_wkt), "--scales", "1000"], "PROJCRS"),
        (
            vec!["--wkt", p(&missing), "--scales", "1000"],
            "missing.wkt",
        ),
    ];
    for (args, want) in &cases {
        // `create` refuses and leaves no cache; `scheme` refuses and writes no file.
        let mut c = vec!["create", d];
        c.extend(args);
        let err = fails_with(&c, want);
        assert!(!dir.join("conf.xml").exists(), "{args:?}: {err}");
        let out = tmp.path().join("s.xml");
        let mut s = vec!["scheme"];
        s.extend(args);
        s.extend(["-o", p(&out)]);
        fails_with(&s, want);
        assert!(!out.exists(), "{args:?}");
    }
    // create only: tool parameters without a spatial reference, or beside --scheme/--levels.
    fails_with(
        &["create", d, "--tile-size", "512"],
        "--tile-size defines a tiling grid and needs a spatial reference",
    );
    fails_with(
        &["create", d, "--dpi", "120", "--origin", "0,0"],
        "--origin, --dpi define a tiling grid",
    );
    // --quality and --antialiasing apply to --scheme too, checked alike.
    fails_with(
        &["create", d, "--quality", "50"],
        "--quality 50 with format PNG",
    );
    fails_with(
        &["create", d, "--format", "JPEG", "--quality", "0"],
        "out of range 1-100",
    );
    assert!(!dir.join("conf.xml").exists());
    let jq = tmp.path().join("jq");
    run_ok(&mut bundlefs(&[
        "create",
        p(&jq),
        "--levels",
        "0-3",
        "--format",
        "JPEG",
        "--quality",
        "50",
        "--antialiasing",
    ]));
    let conf = fs::read_to_string(jq.join("conf.xml")).unwrap();
    assert!(
        conf.contains("<CompressionQuality>50</CompressionQuality>"),
        "{conf}"
    );
    assert!(conf.contains("<Antialiasing>true</Antialiasing>"), "{conf}");
    let web = [
        "create", d, "--scheme", "x.xml", "--wkid", "3857", "--scales", "1000",
    ];
    fails_with(&web, "give one");
    let lv = [
        "create", d, "--levels", "0-3", "--wkid", "3857", "--scales", "1000",
    ];
    fails_with(&lv, "--levels");
    // A scheme file's origin is checked against --extent too.
    let f = tmp.path().join("pl.xml");
    run_ok(&mut bundlefs(&[
        "scheme",
        "--wkid",
        "2180",
        "--origin",
        "0,1000000",
        "--scales",
        "1000",
        "-o",
        p(&f),
    ]));
    fails_with(
        &["create", d, "--scheme", p(&f), "--extent", "-10,0,10,10"],
        "not above-left",
    );
    assert!(!dir.join("conf.xml").exists());
}

// ---------------------------------------------------------------------------------------------
// GDAL's ESRIC driver

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "`{tool}` not found on PATH: install gdal-bin (scripts/test.sh does)"
    );
}

/// GDAL's geotransform of a conf.xml (Debian's gdalinfo).
fn gdal_geotransform(conf: &Path) -> (Vec<f64>, String) {
    require("gdalinfo");
    let out = run_ok(Command::new("gdalinfo").arg("-json").arg(conf));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let gt = v["geoTransform"]
        .as_array()
        .unwrap_or_else(|| panic!("no geoTransform:\n{out}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let wkt = v["coordinateSystem"]["wkt"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (gt, wkt)
}

/// CRC-32 of the RGBA pixels (rows top down) GDAL 3.10 (rasterio) reads for each tile, at the
/// tile's level (the full raster for the finest level, an overview for the others).
fn gdal_tile_crcs(conf: &Path, tiles: &[(u8, u32, u32)], levels: usize, px: u32) -> Vec<u32> {
    let prog = "import sys, zlib, rasterio
from rasterio.windows import Window
conf, levels, px = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for t in sys.argv[4:]:
    l, r, c = map(int, t.split('/'))
    finest = l == levels - 1
    kw = {} if finest else {'OVERVIEW_LEVEL': levels - 2 - l}
    with rasterio.open(conf, **kw) as d:
        a = d.read(window=Window(c * px, r * px, px, px))
    assert a.shape == (4, px, px), a.shape
    print(zlib.crc32(a.transpose(1, 2, 0).tobytes()))";
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(prog)
        .arg(conf)
        .arg(levels.to_string())
        .arg(px.to_string());
    for (l, r, c) in tiles {
        cmd.arg(format!("{l}/{r}/{c}"));
    }
    run_ok(&mut cmd)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Creates a 512-px scheme from `args`, renders it with `label`, and checks GDAL's view: the
/// geotransform (origin, pixel size = resolution of the finest level, computed here from its
/// scale) and every tile's pixels.
fn render_and_read_with_gdal(
    name: &str,
    args: &[&str],
    want_origin: (f64, f64),
    per_unit: f64,
    crs: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join(name);
    run_ok(bundlefs(&["create", p(&cache)]).args(args));
    let out = run_ok(&mut bundlefs(&[
        "render",
        p(&cache),
        "--source",
        "label",
        "--keep",
        "--levels",
        "0-2",
    ]));
    assert!(out.contains("0 failed"), "{out}");
    let s = scheme_of(&cache.join("conf.xml"));
    assert_eq!(s.tile_cols, 512);
    let finest = s.lods.last().unwrap().scale;
    let res = finest / (96.0 * INCHES_PER_METRE * per_unit);

    let (gt, wkt) = gdal_geotransform(&cache.join("conf.xml"));
    assert_eq!(gt.len(), 6);
    assert!((gt[0] - want_origin.0).abs() < 1e-9, "{name}: {gt:?}");
    assert!((gt[3] - want_origin.1).abs() < 1e-9, "{name}: {gt:?}");
    assert!((gt[1] / res - 1.0).abs() < 1e-12, "{name}: {gt:?} vs {res}");
    assert!(
        (gt[5] / -res - 1.0).abs() < 1e-12,
        "{name}: {gt:?} vs {res}"
    );
    assert_eq!((gt[2], gt[4]), (0.0, 0.0));
    assert!(wkt.contains(crs), "{name}: GDAL's CRS:\n{wkt}");

    let c = Cache::open(&cache).unwrap();
    let tiles = all_tiles(&c);
    let levels = s.lods.len();
    for l in 0..levels as u8 {
        assert!(
            tiles.keys().any(|t| t.level == l),
            "{name}: nothing rendered at level {l}"
        );
    }
    let addrs: Vec<(u8, u32, u32)> = tiles.keys().map(|t| (t.level, t.row, t.col)).collect();
    let gdal = gdal_tile_crcs(&cache.join("conf.xml"), &addrs, levels, 512);
    for ((t, bytes), g) in tiles.iter().zip(gdal) {
        let img = image::load_from_memory(bytes).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), (512, 512), "{name} {t}");
        // The label tiles differ from each other (they name their tile): equal CRCs are no accident.
        assert_eq!(
            crc32fast::hash(img.as_raw()),
            g,
            "{name}: tile {t} as GDAL reads it"
        );
    }
}

#[test]
fn epsg2180_scheme_rendered_and_read_by_gdal() {
    render_and_read_with_gdal(
        "pl",
        &[
            "--wkid",
            "2180",
            "--scales",
            "8000000,4000000,2000000",
            "--tile-size",
            "512",
            "--extent",
            "140000,120000,880000,800000",
        ],
        (-5120900.0, 9998100.0),
        1.0,
        "Poland CS92",
    );
}

#[test]
fn epsg4326_scheme_rendered_and_read_by_gdal() {
    render_and_read_with_gdal(
        "geo",
        &[
            "--wkid",
            "4326",
            "--standard",
            "3",
            "--tile-size",
            "512",
            "--extent",
            "10,45,30,60",
        ],
        (-180.0, 90.0),
        METRES_PER_DEGREE,
        "WGS",
    );
}

/// `create --ready-to-serve` writes root.json (no conf.xml) for the same tiling scheme the
/// conf.xml form gets, and the folder is a cache every command takes (render --keep, export).
#[test]
fn ready_to_serve_create_gives_the_same_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [
        "--wkid",
        "2180",
        "--scales",
        "8000000,4000000,2000000",
        "--tile-size",
        "512",
        "--extent",
        "140000,120000,880000,800000",
    ];
    let conf = tmp.path().join("conf");
    let rts = tmp.path().join("rts");
    let mut a = vec!["create", p(&conf)];
    a.extend(params);
    run_ok(&mut bundlefs(&a));
    let mut b = vec!["create", p(&rts), "--ready-to-serve"];
    b.extend(params);
    let out = run_ok(&mut bundlefs(&b));
    assert!(out.contains("ready-to-serve"), "{out}");
    assert!(rts.join("root.json").is_file());
    assert!(rts.join("iteminfo.json").is_file());
    assert!(rts.join("tile").is_dir());
    assert!(!rts.join("conf.xml").exists());
    let (c1, c2) = (Cache::open(&conf).unwrap(), Cache::open(&rts).unwrap());
    assert!(c2.ready_to_serve().is_some());
    let (s1, s2) = (c1.scheme().unwrap(), c2.scheme().unwrap());
    assert_eq!(s1.wkid, s2.wkid);
    assert_eq!((s1.origin_x, s1.origin_y), (s2.origin_x, s2.origin_y));
    assert_eq!((s1.tile_cols, s1.tile_rows), (s2.tile_cols, s2.tile_rows));
    assert_eq!(s1.tile_format, s2.tile_format);
    assert_eq!(scales(s1), scales(s2));
    for (l1, l2) in s1.lods.iter().zip(&s2.lods) {
        assert!((l1.resolution - l2.resolution).abs() < 1e-9 * l1.resolution);
    }
    // A cache for the other commands: tiles rendered into it are kept and exported.
    run_ok(&mut bundlefs(&[
        "render",
        p(&rts),
        "--source",
        "label",
        "--levels",
        "0-1",
        "--keep",
    ]));
    let out = tmp.path().join("out");
    run_ok(&mut bundlefs(&[
        "export",
        p(&rts),
        p(&out),
        "--storage",
        "exploded",
    ]));
    let n = walkdir(&out.join("_alllayers"));
    assert!(n > 0, "no tile exported from the ready-to-serve cache");
    // Not over an existing cache, and no antialiasing (root.json has no such setting).
    let mut again = b.clone();
    again[1] = p(&rts);
    fails_with(&again, "already holds a cache");
    let other = tmp.path().join("aa");
    let mut aa = vec!["create", p(&other), "--ready-to-serve", "--antialiasing"];
    aa.extend(params);
    fails_with(&aa, "antialiasing");
    assert!(!other.join("root.json").exists());
}

fn walkdir(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walkdir(&e.path());
        } else {
            n += 1;
        }
    }
    n
}
