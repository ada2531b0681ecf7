//! Extents for every tiling scheme and coordinate systems of inputs (issue 14, kinds 3 and 4),
//! beyond cases 03, 09 and 13: checked against GDAL (Debian's `gdalinfo`/`gdaltransform` 3.6 for
//! conf.xml caches and points, the GDAL 3.10 in the `rasterio` wheel for `.tpkx`). They FAIL, not
//! skip, without those tools; `scripts/test.sh` installs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlefs::format::conf::{parse_cdi, Envelope};
use serde_json::Value;

use crate::support::{bin, case_data, copy_dir, run, run_ok};

/// The Poland CS92 (EPSG:2180) case: scheme.xml, a cache with one tile per level over Warsaw and
/// the tiles it holds (`expected.txt`).
fn case09() -> PathBuf {
    case_data("09-local-srs-2180")
}

/// The ArcGIS 9.x geographic case: WGS 84 by WKT only, 512 px tiles, origin (-180, 90).
fn case03() -> PathBuf {
    case_data("03-arcgis-9x-conf-geographic-512")
}

/// Warsaw in EPSG:2180, where case 09's tiles are.
const WARSAW: (f64, f64) = (637000.0, 487000.0);
/// Gdańsk in EPSG:2180 (no tile there in case 09).
const GDANSK: (f64, f64) = (472000.0, 725000.0);

fn bundlefs(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Points carried from `from` to `to` by GDAL's `gdaltransform` (PROJ), x/y in GIS order.
fn gdaltransform(from: &str, to: &str, pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let gis = |s: &str| {
        if s == "EPSG:4326" {
            "+proj=longlat +datum=WGS84 +no_defs".to_string()
        } else {
            s.to_string()
        }
    };
    let mut child = Command::new("gdaltransform")
        .args(["-s_srs", &gis(from), "-t_srs", &gis(to), "-output_xy"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gdaltransform (Debian gdal-bin) is needed: run scripts/test.sh");
    let input: String = pts
        .iter()
        .map(|(x, y)| format!("{x:.10} {y:.10}\n"))
        .collect();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "gdaltransform failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect()
}

/// Runs a Python program with the given arguments (rasterio's GDAL reads `.tpkx`); its stdout.
fn python(prog: &str, args: &[&str]) -> String {
    run_ok(Command::new("python3").arg("-c").arg(prog).args(args))
}

/// The exploded tiles under `dir/_alllayers`, as `Lnn/Rxxxxxxxx/Cxxxxxxxx.png` lines.
fn exploded_tiles(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let root = dir.join("_alllayers");
    if !root.is_dir() {
        return out;
    }
    for l in fs::read_dir(&root).unwrap() {
        let l = l.unwrap().path();
        for r in fs::read_dir(&l).unwrap() {
            let r = r.unwrap().path();
            for c in fs::read_dir(&r).unwrap() {
                let c = c.unwrap().path();
                out.push(p(c.strip_prefix(&root).unwrap()).to_string());
            }
        }
    }
    out.sort();
    out
}

fn expected09() -> Vec<String> {
    fs::read_to_string(case09().join("expected.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn root_json(tpkx: &Path) -> Value {
    let f = fs::File::open(tpkx).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut z.by_name("root.json").unwrap(), &mut s).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn item_json(tpkx: &Path) -> Value {
    let f = fs::File::open(tpkx).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut z.by_name("iteminfo.json").unwrap(), &mut s).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn env_of(v: &Value) -> Envelope {
    let g = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    Envelope {
        xmin: g("xmin"),
        ymin: g("ymin"),
        xmax: g("xmax"),
        ymax: g("ymax"),
    }
}

fn contains(e: &Envelope, (x, y): (f64, f64)) -> bool {
    e.xmin <= x && x <= e.xmax && e.ymin <= y && y <= e.ymax
}

/// The largest value of any band in the 64 × 64 pixels around map point (x, y) of a package, at
/// its finest level, as GDAL reads it: 0 where GDAL sees no tile (or the point is outside the
/// dataset's bounds).
fn gdal_value_at(tpkx: &Path, (x, y): (f64, f64)) -> u32 {
    let out = python(
        "import sys, rasterio
from rasterio.windows import Window
d = rasterio.open(sys.argv[1])
x, y = float(sys.argv[2]), float(sys.argv[3])
b = d.bounds
if not (b.left <= x < b.right and b.bottom < y <= b.top):
    print(0)
else:
    r, c = d.index(x, y)
    w = Window(max(c - 32, 0), max(r - 32, 0), 64, 64)
    print(int(d.read(window=w, boundless=False).max()))",
        &[p(tpkx), &x.to_string(), &y.to_string()],
    );
    out.trim().parse().unwrap()
}

/// `create` from a scheme alone writes the extent GDAL's ESRIC driver assumes for the scheme
/// (symmetric about the false origin), so the area the scheme exists for can be rendered: for
/// Poland CS92, whose origin is 5000 km from the data, and for a geographic 9.x scheme.
#[test]
fn create_writes_the_scheme_extent_gdal_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("pl");
    run_ok(bundlefs(&["create", p(&new), "--scheme"]).arg(case09().join("scheme.xml")));
    let cdi = parse_cdi(&fs::read(new.join("conf.cdi")).unwrap()).unwrap();
    // GDAL's view of the same conf.xml: its raster's corners.
    let info: Value = serde_json::from_str(&run_ok(
        Command::new("gdalinfo")
            .arg("-json")
            .arg(new.join("conf.xml")),
    ))
    .unwrap();
    let ul = &info["cornerCoordinates"]["upperLeft"];
    let lr = &info["cornerCoordinates"]["lowerRight"];
    let gdal = [
        ul[0].as_f64().unwrap(),
        lr[1].as_f64().unwrap(),
        lr[0].as_f64().unwrap(),
        ul[1].as_f64().unwrap(),
    ];
    let ours = [cdi.xmin, cdi.ymin, cdi.xmax, cdi.ymax];
    for (g, o) in gdal.iter().zip(ours) {
        // GDAL's raster ends on whole pixels of the finest level (132 m here).
        assert!(
            (g - o).abs() < 200.0,
            "conf.cdi {ours:?} vs gdalinfo {gdal:?}"
        );
    }
    assert!(contains(&cdi, WARSAW) && contains(&cdi, GDANSK), "{cdi:?}");
    // Warsaw's level-0 tile (row 14, col 8), refused before with a one-corner-tile conf.cdi.
    let out = tmp.path().join("w.png");
    run_ok(&mut bundlefs(&[
        "render",
        p(&new),
        "--source",
        "label",
        "--tile",
        "0/14/8",
        "-o",
        p(&out),
    ]));
    assert!(fs::metadata(&out).unwrap().len() > 0);

    let geo = tmp.path().join("geo");
    run_ok(
        bundlefs(&["create", p(&geo), "--levels", "0-8", "--scheme"])
            .arg(case03().join("cache/conf.xml")),
    );
    let cdi = parse_cdi(&fs::read(geo.join("conf.cdi")).unwrap()).unwrap();
    assert_eq!(
        [cdi.xmin, cdi.ymin, cdi.xmax, cdi.ymax],
        [-180.0, -90.0, 180.0, 90.0]
    );
    // A tile in the south-east quarter of the world (row 3 of 4 at level 2, col 7 of 8).
    run_ok(&mut bundlefs(&[
        "render",
        p(&geo),
        "--source",
        "label",
        "--tile",
        "2/3/7",
        "-o",
        p(&out),
    ]));
}

/// A `.tpkx` made from a cache whose conf.cdi misses the tiles (one corner tile, as `create`
/// wrote before) gets a fullExtent holding them, and GDAL shows the tiles; a conf.cdi that holds
/// them is kept as it is (case 09).
#[test]
fn tpkx_full_extent_holds_every_tile() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_dir(&case09().join("cache"), &src);
    let corner = r#"<?xml version="1.0" encoding="utf-8"?>
<EnvelopeN xsi:type="typens:EnvelopeN" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:typens="http://www.esri.com/schemas/ArcGIS/10.3">
<XMin>-5120900</XMin><YMin>9320770.8</YMin><XMax>-4443570.8</XMax><YMax>9998100</YMax></EnvelopeN>"#;
    fs::write(src.join("conf.cdi"), corner).unwrap();
    let tpkx = tmp.path().join("p.tpkx");
    run_ok(&mut bundlefs(&[
        "export",
        p(&src),
        p(&tpkx),
        "--storage",
        "tpkx",
    ]));
    let root = root_json(&tpkx);
    let full = env_of(&root["fullExtent"]);
    assert_eq!(env_of(&root["initialExtent"]), full);
    assert!(
        contains(&full, WARSAW),
        "fullExtent {full:?} misses Warsaw's tiles"
    );
    assert_eq!(root["spatialReference"]["wkid"], 2180);
    assert!(
        gdal_value_at(&tpkx, WARSAW) > 0,
        "GDAL sees no tile at Warsaw"
    );

    // Case 09's own conf.cdi (Poland) already holds the tiles: kept exactly.
    let kept = tmp.path().join("k.tpkx");
    run_ok(&mut bundlefs(&[
        "export",
        p(&case09().join("cache")),
        p(&kept),
        "--storage",
        "tpkx",
    ]));
    let e = env_of(&root_json(&kept)["fullExtent"]);
    assert_eq!(
        [e.xmin, e.ymin, e.xmax, e.ymax],
        [144000.0, 130000.0, 880000.0, 780000.0]
    );
}

/// Importing into a `.tpkx` grows its fullExtent to what was added, and GDAL shows both areas.
#[test]
fn importing_into_a_tpkx_grows_its_extent() {
    let tmp = tempfile::tempdir().unwrap();
    let tpkx = tmp.path().join("p.tpkx");
    run_ok(&mut bundlefs(&[
        "export",
        p(&case09().join("cache")),
        p(&tpkx),
        "--storage",
        "tpkx",
        "--extent",
        "636900",
        "486900",
        "637100",
        "487100",
    ]));
    let before = env_of(&root_json(&tpkx)["fullExtent"]);
    assert!(
        contains(&before, WARSAW) && !contains(&before, GDANSK),
        "{before:?}"
    );
    // A second cache of the same scheme with a level-4 tile over Gdańsk.
    let other = tmp.path().join("other");
    run_ok(
        bundlefs(&["create", p(&other), "--levels", "0-4", "--scheme"])
            .arg(case09().join("scheme.xml")),
    );
    let res4 = 500000.0 / (96.0 * 39.37);
    let span = 256.0 * res4;
    let col = ((GDANSK.0 + 5120900.0) / span).floor();
    let row = ((9998100.0 - GDANSK.1) / span).floor();
    run_ok(&mut bundlefs(&[
        "render",
        p(&other),
        "--source",
        "label",
        "--keep",
        "--tile",
        &format!("4/{row}/{col}"),
    ]));
    let (x, y) = GDANSK;
    run_ok(
        bundlefs(&["import", p(&other), p(&tpkx), "--extent"]).args([
            (x - 100.0).to_string(),
            (y - 100.0).to_string(),
            (x + 100.0).to_string(),
            (y + 100.0).to_string(),
        ]),
    );
    let after = env_of(&root_json(&tpkx)["fullExtent"]);
    assert!(
        contains(&after, WARSAW) && contains(&after, GDANSK),
        "{after:?}"
    );
    assert!(
        gdal_value_at(&tpkx, GDANSK) > 0,
        "GDAL sees no tile at Gdańsk"
    );
    assert!(
        gdal_value_at(&tpkx, WARSAW) > 0,
        "GDAL sees no tile at Warsaw"
    );
}

/// The item extent is in WGS 84 for a projected reference (EPSG:2180), matching GDAL's
/// transform of the fullExtent; a reference given only by WKT gets its WKID and opens in GDAL.
#[test]
fn tpkx_item_extent_in_wgs84_and_wkt_only_references() {
    let tmp = tempfile::tempdir().unwrap();
    let tpkx = tmp.path().join("pl.tpkx");
    run_ok(&mut bundlefs(&[
        "export",
        p(&case09().join("cache")),
        p(&tpkx),
        "--storage",
        "tpkx",
    ]));
    let full = env_of(&root_json(&tpkx)["fullExtent"]);
    let item = item_json(&tpkx);
    assert_eq!(item["extent"]["spatialReference"]["wkid"], 4326);
    let got = env_of(&item["extent"]);
    let want = python(
        "import sys
from rasterio.warp import transform_bounds
v = [float(a) for a in sys.argv[1:]]
print(*transform_bounds('EPSG:2180', 'EPSG:4326', *v, densify_pts=64))",
        &[
            &full.xmin.to_string(),
            &full.ymin.to_string(),
            &full.xmax.to_string(),
            &full.ymax.to_string(),
        ],
    );
    let want: Vec<f64> = want
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    for (g, w) in [got.xmin, got.ymin, got.xmax, got.ymax].iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "item extent {got:?} vs GDAL {want:?}");
    }

    let geo = tmp.path().join("geo.tpkx");
    run_ok(&mut bundlefs(&[
        "export",
        p(&case03().join("cache")),
        p(&geo),
        "--storage",
        "tpkx",
    ]));
    let root = root_json(&geo);
    assert_eq!(
        root["spatialReference"]["wkid"], 4326,
        "{}",
        root["spatialReference"]
    );
    assert!(root["spatialReference"]["wkt"]
        .as_str()
        .unwrap()
        .contains("GCS_WGS_1984"));
    let bounds = python(
        "import sys, rasterio
d = rasterio.open(sys.argv[1]); print(d.crs.to_epsg(), *d.bounds)",
        &[p(&geo)],
    );
    assert_eq!(bounds.trim(), "4326 -180.0 -90.0 180.0 90.0");
    // GDAL reads the finest level (8): its one tile, row 69 col 270, holds (10.1, 41.1).
    assert!(gdal_value_at(&geo, (10.1, 41.1)) > 0);
    let e = env_of(&item_json(&geo)["extent"]);
    assert_eq!(
        [e.xmin, e.ymin, e.xmax, e.ymax],
        [-180.0, -90.0, 180.0, 90.0]
    );
}

fn write_ring(path: &Path, crs: Option<&str>, ring: &[(f64, f64)]) {
    let coords: Vec<[f64; 2]> = ring.iter().map(|&(x, y)| [x, y]).collect();
    let mut v = serde_json::json!({"type": "FeatureCollection", "features": [{"type": "Feature",
        "properties": {}, "geometry": {"type": "Polygon", "coordinates": [coords]}}]});
    if let Some(c) = crs {
        v["crs"] = serde_json::json!({"type": "name", "properties": {"name": c}});
    }
    fs::write(path, v.to_string()).unwrap();
}

/// A square of ±`d` map units about `c`, closed.
fn square(c: (f64, f64), d: f64) -> Vec<(f64, f64)> {
    vec![
        (c.0 - d, c.1 - d),
        (c.0 + d, c.1 - d),
        (c.0 + d, c.1 + d),
        (c.0 - d, c.1 + d),
        (c.0 - d, c.1 - d),
    ]
}

/// The same area around Warsaw as GeoJSON in WGS 84 (undeclared, as RFC 7946 says, and declared
/// CRS84), in EPSG:2180 and in EPSG:3857 (points carried by GDAL): each selects case 09's tiles.
#[test]
fn aoi_in_any_declared_crs_selects_the_same_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    // ±3 km: a pixel centre of every level's tile (level 0 pixels are 2.6 km) lies inside.
    let ring_pl = square(WARSAW, 3000.0);
    let ring_ll = gdaltransform("EPSG:2180", "EPSG:4326", &ring_pl);
    let ring_wm = gdaltransform("EPSG:2180", "EPSG:3857", &ring_pl);
    type Case<'a> = (&'a str, Option<&'a str>, &'a [(f64, f64)]);
    let cases: [Case; 4] = [
        ("lonlat", None, &ring_ll),
        ("crs84", Some("urn:ogc:def:crs:OGC:1.3:CRS84"), &ring_ll),
        ("pl", Some("urn:ogc:def:crs:EPSG::2180"), &ring_pl),
        ("wm", Some("EPSG:3857"), &ring_wm),
    ];
    for (name, crs, ring) in cases {
        let aoi = tmp.path().join(format!("{name}.geojson"));
        write_ring(&aoi, crs, ring);
        let out = tmp.path().join(name);
        run_ok(&mut bundlefs(&[
            "export",
            p(&case09().join("cache")),
            p(&out),
            "--storage",
            "exploded",
            "--aoi",
            p(&aoi),
        ]));
        assert_eq!(exploded_tiles(&out), expected09(), "AOI {name}");
    }
    // A CRS bundlefs has no definition for is refused naming both references; nothing written.
    let aoi = tmp.path().join("odd.geojson");
    write_ring(&aoi, Some("EPSG:32767"), &ring_pl);
    let out = run(&mut bundlefs(&[
        "export",
        p(&case09().join("cache")),
        p(&tmp.path().join("odd")),
        "--storage",
        "exploded",
        "--aoi",
        p(&aoi),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("EPSG:32767") && err.contains("EPSG:2180"),
        "{err}"
    );
    assert!(!tmp.path().join("odd").exists());
}

/// `--extent` in WGS 84 with `--extent-crs 4326` (export and render); the same numbers read as the
/// cache's metres match no tile and are refused, naming the selection's bounds and the cache's.
#[test]
fn extent_crs_and_selections_matching_no_tile() {
    let tmp = tempfile::tempdir().unwrap();
    let ll = gdaltransform(
        "EPSG:2180",
        "EPSG:4326",
        &[
            (WARSAW.0 - 50.0, WARSAW.1 - 50.0),
            (WARSAW.0 + 50.0, WARSAW.1 + 50.0),
        ],
    );
    let ext = [ll[0].0, ll[0].1, ll[1].0, ll[1].1].map(|v| v.to_string());
    let out = tmp.path().join("e");
    run_ok(
        bundlefs(&[
            "export",
            p(&case09().join("cache")),
            p(&out),
            "--storage",
            "exploded",
            "--extent-crs",
            "4326",
            "--extent",
        ])
        .args(&ext),
    );
    assert_eq!(exploded_tiles(&out), expected09());

    // Degrees read as metres: far outside every bundle; refused before anything is written.
    let none = tmp.path().join("none");
    let o = run(bundlefs(&[
        "export",
        p(&case09().join("cache")),
        p(&none),
        "--storage",
        "exploded",
        "--extent",
    ])
    .args(&ext));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "exit 0 for a selection matching no tile: {err}"
    );
    assert!(
        err.contains("matches no tile") && err.contains(&ext[0]) && err.contains("144000"),
        "{err}"
    );
    assert!(!none.exists(), "written although nothing matched");

    // Inside the level-0 bundle but on no tile: refused after the job (exit non-zero).
    let o = run(&mut bundlefs(&[
        "export",
        p(&case09().join("cache")),
        p(&tmp.path().join("n2")),
        "--storage",
        "exploded",
        "--extent",
        "-5000000",
        "9900000",
        "-4990000",
        "9910000",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("matches no tile") && err.contains("-5000000"),
        "{err}"
    );

    // render: one level-4 tile around Warsaw from a WGS 84 extent.
    let new = tmp.path().join("new");
    run_ok(
        bundlefs(&["create", p(&new), "--levels", "0-4", "--scheme"])
            .arg(case09().join("scheme.xml")),
    );
    let said = run_ok(&mut bundlefs(&[
        "render",
        p(&new),
        "--source",
        "label",
        "--levels",
        "4-4",
        "--extent-crs",
        "4326",
        "--extent",
        &ext.join(","),
    ]));
    assert!(said.contains(": 1 tile in level 4: 1 rendered"), "{said}");
}
