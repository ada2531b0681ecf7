//! Tiles that are not pictures: LERC (elevation caches, `CacheTileFormat` LERC) and gzip'ed
//! Mapbox Vector Tiles (vector tile caches and `.vtpk` packages, `p12/tile/Lnn/…bundle`). They are
//! named by what they are (`.lerc`, `.pbf`) in exports and the mount, copied byte for byte, and
//! the operations that need pixels are refused by name. The tiles are made by independent
//! producers from PyPI — Esri's `lerc` and `mapbox-vector-tile` — and read back with them (and
//! GDAL's MVT driver, `ogrinfo`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlefs::cache::Cache;
use bundlefs::format::conf::{TileFormat, TileScheme};
use bundlefs::format::{v2, Slot, TileAddr};

use crate::support::mount::{need, sh, Mounted};
use crate::support::{bin, run, run_ok, tree_files};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a Python snippet with `python3`; its stdout.
fn python(code: &str) -> String {
    let o = run(Command::new("python3").arg("-c").arg(code));
    assert!(o.status.success(), "python3: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `n` LERC blobs made by Esri's `lerc` package (a 64 x 64 float32 elevation grid each, its
/// values depending on the tile number), written as `dir/lerc-N`.
fn lerc_blobs(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    python(&format!(
        r#"
import numpy as np, lerc
for i in range({n}):
    a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) * 0.5 + i * 100.0
    res, size, buf = lerc.encode(a, 1, False, None, 0.01, 1)
    assert res == 0, res
    open(r'{}/lerc-%d' % i, 'wb').write(bytes(buf)[:size])
"#,
        dir.display()
    ));
    (0..n)
        .map(|i| fs::read(dir.join(format!("lerc-{i}"))).unwrap())
        .collect()
}

/// `n` gzip'ed vector tiles made by `mapbox-vector-tile` (one layer "roads" with a line and a
/// property naming the tile number), written as `dir/pbf-N`.
fn pbf_tiles(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    python(&format!(
        r#"
import gzip, mapbox_vector_tile as mvt
for i in range({n}):
    t = mvt.encode([{{"name": "roads", "features": [{{"geometry": "LINESTRING(0 0, %d 4096)" % (100 + i), "properties": {{"n": i}}}}]}}])
    open(r'{}/pbf-%d' % i, 'wb').write(gzip.compress(t, mtime=0))
"#,
        dir.display()
    ));
    (0..n)
        .map(|i| fs::read(dir.join(format!("pbf-{i}"))).unwrap())
        .collect()
}

/// The tiles of levels 0-1 of a Web Mercator scheme (1 + 4), with `blobs[i]` for the i-th.
fn five_tiles(blobs: &[Vec<u8>]) -> BTreeMap<TileAddr, Vec<u8>> {
    let addrs = [
        TileAddr::new(0, 0, 0),
        TileAddr::new(1, 0, 0),
        TileAddr::new(1, 0, 1),
        TileAddr::new(1, 1, 0),
        TileAddr::new(1, 1, 1),
    ];
    addrs.into_iter().zip(blobs.iter().cloned()).collect()
}

/// Every `.ext` file of an exploded tree, by tile.
fn files_by_tile(root: &Path, ext: &str) -> BTreeMap<TileAddr, Vec<u8>> {
    tree_files(&root.join("_alllayers"))
        .into_iter()
        .map(|(rel, b)| {
            assert!(rel.ends_with(&format!(".{ext}")), "{rel}: not named .{ext}");
            let p: Vec<&str> = rel.split('/').collect();
            let l = p[0][1..].parse().unwrap();
            let r = u32::from_str_radix(&p[1][1..], 16).unwrap();
            let c = u32::from_str_radix(p[2][1..].split('.').next().unwrap(), 16).unwrap();
            (TileAddr::new(l, r, c), b)
        })
        .collect()
}

#[test]
fn lerc_elevation_tiles_are_named_kept_and_refused_where_pixels_are_needed() {
    need("fusermount3");
    let d = tempfile::tempdir().unwrap();
    let blobs = lerc_blobs(d.path(), 5);
    assert!(
        blobs.iter().all(|b| b.starts_with(b"Lerc2 ")),
        "lerc made LERC 2 blobs"
    );
    let tiles = five_tiles(&blobs);
    let cache = d.path().join("elevation");
    let c = Cache::create(
        &cache,
        &TileScheme::web_mercator(2, TileFormat::Other("LERC".into())),
        None,
    )
    .unwrap();
    let refs: Vec<(TileAddr, &[u8])> = tiles.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    c.write_tiles(&refs).unwrap();
    drop(c);

    let info = run_ok(Command::new(bin()).arg("info").arg(&cache));
    assert!(info.contains("LERC"), "{info}");
    let v = run_ok(
        Command::new(bin())
            .arg("verify")
            .arg(&cache)
            .arg("--decode"),
    );
    assert!(v.contains("0 problem(s)"), "{v}");

    // Exploded export: .lerc files, byte for byte, which Esri's lerc decodes.
    let out = d.path().join("exploded");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&cache)
            .arg(&out)
            .args(["--storage", "exploded"]),
    );
    assert_eq!(files_by_tile(&out, "lerc"), tiles);
    let decoded = python(&format!(
        "import lerc\nr = lerc.decode(open(r'{}/_alllayers/L01/R00000001/C00000000.lerc','rb').read())\nprint(r[0], r[1].shape, float(r[1][0][0]))",
        out.display()
    ));
    assert!(
        decoded.starts_with("0 (64, 64) 300.0"),
        "lerc.decode: {decoded}"
    );

    // The mount shows .lerc files with the stored bytes.
    let m = Mounted::start(&cache, &d.path().join("mnt"), &[]);
    let got = fs::read(m.path("_alllayers/L00/R00000000/C00000000.lerc")).unwrap();
    assert_eq!(got, tiles[&TileAddr::new(0, 0, 0)]);
    assert!(!m.path("_alllayers/L00/R00000000/C00000000.png").exists());
    drop(m);

    // Import: OVERWRITE copies; MERGE over a stored tile and --aoi clipping need pixels.
    // Another LERC cache holding other tiles at the same places.
    let other = d.path().join("other");
    let c = Cache::create(
        &other,
        &TileScheme::web_mercator(2, TileFormat::Other("LERC".into())),
        None,
    )
    .unwrap();
    let mut rev = blobs.clone();
    rev.reverse();
    let theirs = five_tiles(&rev);
    let refs: Vec<(TileAddr, &[u8])> = theirs.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    c.write_tiles(&refs).unwrap();
    drop(c);
    let o = run(Command::new(bin()).arg("import").arg(&cache).arg(&other));
    let t = text(&o);
    assert!(!o.status.success(), "merge of LERC tiles: {t}");
    assert!(t.contains("LERC tiles hold no pixels"), "{t}");
    assert_eq!(
        crate::support::all_tiles(&Cache::open(&other).unwrap()),
        theirs,
        "nothing stored by the refused merge"
    );
    run_ok(
        Command::new(bin())
            .arg("import")
            .arg(&cache)
            .arg(&other)
            .args(["--mode", "overwrite"]),
    );
    assert_eq!(
        crate::support::all_tiles(&Cache::open(&other).unwrap()),
        tiles,
        "OVERWRITE copies the bytes"
    );
    let aoi = d.path().join("aoi.geojson");
    fs::write(
        &aoi,
        r#"{"type":"Polygon","coordinates":[[[-100,-10],[10,-10],[10,40],[-100,40],[-100,-10]]]}"#,
    )
    .unwrap();
    let o = run(Command::new(bin())
        .arg("export")
        .arg(&cache)
        .arg(d.path().join("clipped"))
        .args(["--storage", "compact-v2", "--aoi"])
        .arg(&aoi));
    let t = text(&o);
    assert!(!o.status.success() && t.contains("LERC"), "{t}");
}

/// A `.vtpk` as ArcGIS lays one out (stored zip): `p12/root.json` (a vector tile service's
/// document: `tileInfo` with 512 px tiles and format pbf), `p12/tile/Lnn/R0000C0000.bundle`
/// (Compact V2), a style and `esriinfo/`.
fn write_vtpk(path: &Path, tiles: &BTreeMap<TileAddr, Vec<u8>>) {
    let scheme = TileScheme::web_mercator(1, TileFormat::Other("pbf".into()));
    let lods: Vec<String> = scheme
        .lods
        .iter()
        .map(|l| {
            format!(
                r#"{{"level":{},"resolution":{},"scale":{}}}"#,
                l.level,
                l.resolution / 2.0,
                l.scale / 2.0
            )
        })
        .collect();
    let root = format!(
        r#"{{"currentVersion":10.9,"name":"roads","capabilities":"TilesOnly","type":"indexedVector",
"defaultStyles":"resources/styles","tiles":["tile/{{z}}/{{y}}/{{x}}.pbf"],
"exportTilesAllowed":false,"initialExtent":{{"xmin":-20037508.342787,"ymin":-20037508.342787,"xmax":20037508.342787,"ymax":20037508.342787,"spatialReference":{{"wkid":102100,"latestWkid":3857}}}},
"fullExtent":{{"xmin":-20037508.342787,"ymin":-20037508.342787,"xmax":20037508.342787,"ymax":20037508.342787,"spatialReference":{{"wkid":102100,"latestWkid":3857}}}},
"minScale":0,"maxScale":0,
"tileInfo":{{"rows":512,"cols":512,"dpi":96,"format":"pbf","origin":{{"x":-20037508.342787,"y":20037508.342787}},
"spatialReference":{{"wkid":102100,"latestWkid":3857}},"lods":[{}]}},
"maxzoom":1,"minLOD":0,"maxLOD":1,"resourceInfo":{{"styleVersion":8,"tileCompression":"gzip"}}}}"#,
        lods.join(",")
    );
    let mut by_level: BTreeMap<u8, Vec<(Slot, &[u8])>> = BTreeMap::new();
    for (t, b) in tiles {
        by_level.entry(t.level).or_default().push((t.slot(), b));
    }
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut put = |name: &str, bytes: &[u8]| {
        z.start_file(name, stored).unwrap();
        z.write_all(bytes).unwrap();
    };
    put("esriinfo/iteminfo.xml", b"<ESRI_ItemInformation/>");
    put("p12/root.json", root.as_bytes());
    put(
        "p12/resources/styles/root.json",
        br#"{"version":8,"layers":[]}"#,
    );
    for (level, slots) in by_level {
        let mut b = v2::Builder::new(std::io::Cursor::new(Vec::new())).unwrap();
        for (s, bytes) in slots {
            b.add(s, bytes).unwrap();
        }
        let (cur, _) = b.finish().unwrap();
        put(
            &format!("p12/tile/L{level:02}/R0000C0000.bundle"),
            &cur.into_inner(),
        );
    }
    z.finish().unwrap();
}

#[test]
fn vector_tile_packages_are_read_as_pbf_tiles() {
    need("fusermount3");
    let d = tempfile::tempdir().unwrap();
    let blobs = pbf_tiles(d.path(), 5);
    assert!(blobs.iter().all(|b| b.starts_with(&[0x1f, 0x8b])));
    let tiles = five_tiles(&blobs);
    let vtpk = d.path().join("roads.vtpk");
    write_vtpk(&vtpk, &tiles);

    let info = run_ok(Command::new(bin()).arg("info").arg(&vtpk));
    assert!(info.contains("pbf") && info.contains("512x512"), "{info}");
    let v = run_ok(Command::new(bin()).arg("verify").arg(&vtpk).arg("--decode"));
    assert!(
        v.contains("5 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
    assert!(
        !v.contains("bundlefs-package"),
        "messages name the package: {v}"
    );

    // Exploded export: .pbf files, byte for byte; mapbox-vector-tile and GDAL read them.
    let out = d.path().join("exploded");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&vtpk)
            .arg(&out)
            .args(["--storage", "exploded"]),
    );
    assert_eq!(files_by_tile(&out, "pbf"), tiles);
    let one = out.join("_alllayers/L01/R00000001/C00000001.pbf");
    let layer = python(&format!(
        "import gzip, mapbox_vector_tile as m\nt = m.decode(gzip.decompress(open(r'{}','rb').read()))\nprint(list(t), t['roads']['features'][0]['properties'])",
        one.display()
    ));
    assert!(layer.contains("['roads'] {'n': 4}"), "{layer}");
    let (ok, ogr, err) = sh(&format!("ogrinfo -ro -al -so {}", one.display()));
    assert!(ok && ogr.contains("roads"), "ogrinfo: {ogr}{err}");

    // A Compact V2 folder of them mounts with .pbf names and the stored bytes.
    let v2c = d.path().join("v2");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&vtpk)
            .arg(&v2c)
            .args(["--storage", "compact-v2"]),
    );
    let m = Mounted::start(&v2c, &d.path().join("mnt"), &[]);
    let names = tree_files(&m.path("_alllayers"));
    assert_eq!(names.len(), 5);
    assert!(
        names.keys().all(|k| k.ends_with(".pbf")),
        "{:?}",
        names.keys()
    );
    assert_eq!(
        fs::read(m.path("_alllayers/L00/R00000000/C00000000.pbf")).unwrap(),
        tiles[&TileAddr::new(0, 0, 0)]
    );
    drop(m);

    // Unpacked, the package's folder reads as it does zipped.
    let unpacked: PathBuf = d.path().join("unpacked");
    let mut z = zip::ZipArchive::new(fs::File::open(&vtpk).unwrap()).unwrap();
    z.extract(&unpacked).unwrap();
    let info2 = run_ok(Command::new(bin()).arg("info").arg(&unpacked));
    assert!(info2.contains("pbf"), "{info2}");

    // What bundlefs does not write is refused naming it: a raster package of vector tiles, and
    // writing into the vector tile package.
    let o = run(Command::new(bin())
        .arg("export")
        .arg(&vtpk)
        .arg(d.path().join("roads.tpkx")));
    assert!(
        !o.status.success() && text(&o).contains("vector tiles"),
        "{}",
        text(&o)
    );
    let o = run(Command::new(bin()).arg("import").arg(&v2c).arg(&vtpk));
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("vector tile package"),
        "{t}"
    );
    assert!(!t.contains("/tmp/bundlefs-package"), "{t}");
}
