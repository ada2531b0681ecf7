//! Export and import jobs (issue 6): every storage pair (tpkx included), level/scale selection,
//! extents, AOI clipping checked pixel by pixel, merge vs overwrite, scheme/format mismatch errors,
//! bad inputs named in errors, and an interrupted export re-run. No external tools.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use bundlefs::cache::Cache;
use bundlefs::error::Result;
use bundlefs::format::conf::{parse_cdi, StorageFormat, TileFormat, TileScheme};
use bundlefs::format::pixels::ImportMode;
use bundlefs::format::TileAddr;
use bundlefs::jobs::engine::{JobOptions, JobSummary, LevelSelect, NoProgress, Progress, Target};
use bundlefs::jobs::export::export_job;
use bundlefs::jobs::import::import_job;
use bundlefs::jobs::package::{open_package, update_package};
use bundlefs::jobs::verify::verify;
use image::{Rgba, RgbaImage};

fn storages() -> [Target; 4] {
    [
        Target::Storage(StorageFormat::CompactV2),
        Target::Storage(StorageFormat::CompactV1),
        Target::Storage(StorageFormat::Exploded),
        Target::Tpkx,
    ]
}

fn name(t: Target) -> String {
    match t {
        Target::Storage(s) => s.to_string(),
        Target::Tpkx => "tpkx".into(),
    }
}

fn dest_for(dir: &Path, t: Target) -> PathBuf {
    match t {
        Target::Tpkx => dir.join("out.tpkx"),
        Target::Storage(s) => dir.join(format!("out-{s}")),
    }
}

/// Tiles of an export result (a folder, or a package read back through `open_package`).
fn result_tiles(dest: &Path) -> BTreeMap<TileAddr, Vec<u8>> {
    if dest.is_file() {
        all_tiles(&open_package(dest).unwrap().cache)
    } else {
        all_tiles(&Cache::open(dest).unwrap())
    }
}

/// Export as `bundlefs export` dispatches it: a folder is export's, a `.tpkx` package's.
fn export_to(
    src: &Cache,
    dest: &Path,
    target: Target,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    match target {
        Target::Storage(st) => export_job(src, dest, st, opts, progress),
        Target::Tpkx => update_package(src, dest, opts, progress, false),
    }
}

/// Import as `bundlefs import` dispatches it: into a cache folder, or into a package file.
fn import_into(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    if dest.is_file() {
        update_package(src, dest, opts, progress, true)
    } else {
        import_job(src, dest, opts, progress)
    }
}

fn job() -> JobOptions {
    JobOptions::default()
}

/// `bundlefs sample DIR --levels A-B --format F`.
fn sample(dir: &Path, levels: &str, format: &str) -> Cache {
    run_ok(
        Command::new(bin())
            .arg("sample")
            .arg(dir)
            .args(["--levels", levels, "--format", format]),
    );
    Cache::open(dir).unwrap()
}

fn decode(bytes: &[u8]) -> RgbaImage {
    image::load_from_memory(bytes).unwrap().into_rgba8()
}

// ---------------------------------------------------------------------------------------------
// Storage pairs

#[test]
fn every_storage_pair_keeps_every_tile_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    // Sources: ArcGIS V2 (Esri's sample), ArcGIS V1 (inside the .tpk), exploded, and a .tpkx.
    let sample_v2 = Cache::open(esri_sample_cache()).unwrap();
    let tpk = unpack_tpk(tmp.path());
    let exploded = tmp.path().join("src-exploded");
    export_to(
        &sample_v2,
        &exploded,
        Target::Storage(StorageFormat::Exploded),
        &job(),
        &NoProgress,
    )
    .unwrap();
    let usa = open_package(&fixtures().join("arcgis-tpkx/Usa.tpkx")).unwrap();
    let sources: Vec<(&str, Cache)> = vec![
        ("esri v2", Cache::open(esri_sample_cache()).unwrap()),
        ("tpk v1", Cache::open(&tpk).unwrap()),
        ("exploded", Cache::open(&exploded).unwrap()),
        ("usa.tpkx", Cache::open(usa.cache.root()).unwrap()),
    ];
    for (sname, src) in &sources {
        let want = all_tiles(src);
        assert!(!want.is_empty(), "{sname}");
        for target in storages() {
            let what = format!("{sname} -> {}", name(target));
            let dir = tmp.path().join(what.replace([' ', '>'], "_"));
            let dest = dest_for(&dir, target);
            let s = export_to(src, &dest, target, &job(), &NoProgress).unwrap();
            assert_eq!(s.tiles_written, want.len() as u64, "{what}");
            assert_eq!(s.tiles_copied, want.len() as u64, "{what}");
            // Bundles keep the bytes; exploded files are files users open, so a PNG stored
            // without its first four signature bytes (Usa.tpkx levels 0-1) comes out whole.
            let expect: BTreeMap<TileAddr, Vec<u8>> =
                if target == Target::Storage(StorageFormat::Exploded) {
                    want.iter()
                        .map(|(t, b)| {
                            let whole = bundlefs::format::pixels::as_image_file(b).into_owned();
                            (*t, whole)
                        })
                        .collect()
                } else {
                    want.clone()
                };
            assert_eq!(result_tiles(&dest), expect, "{what}");
            if let Target::Storage(st) = target {
                let c = Cache::open(&dest).unwrap();
                assert_eq!(c.storage(), st, "{what}");
                assert_eq!(
                    c.scheme().unwrap().storage,
                    st,
                    "{what}: conf.xml StorageFormat"
                );
                assert!(verify(&c, false).unwrap().problems.is_empty(), "{what}");
            }
        }
    }
}

#[test]
fn tpkx_is_a_stored_zip_with_root_json_and_v2_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Cache::open(esri_sample_cache()).unwrap();
    let dest = tmp.path().join("sample.tpkx");
    export_to(&src, &dest, Target::Tpkx, &job(), &NoProgress).unwrap();
    let mut z = zip::ZipArchive::new(fs::File::open(&dest).unwrap()).unwrap();
    let mut names = Vec::new();
    for i in 0..z.len() {
        let f = z.by_index(i).unwrap();
        assert_eq!(
            f.compression(),
            zip::CompressionMethod::Stored,
            "{}",
            f.name()
        );
        names.push(f.name().to_string());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "iteminfo.json",
            "root.json",
            "thumbnail.png",
            "tile/L00/R0000C0000.bundle",
            "tile/L01/R0000C0000.bundle",
            "tile/L02/R0000C0000.bundle"
        ]
    );
    let root: serde_json::Value = serde_json::from_reader(z.by_name("root.json").unwrap()).unwrap();
    assert_eq!(root["tileBundlesPath"], "./tile");
    assert_eq!(root["minLOD"], 0);
    assert_eq!(root["maxLOD"], 2);
    assert_eq!(root["tileImageInfo"]["format"], "JPEG");
    assert_eq!(
        root["storageInfo"]["storageFormat"],
        "esriMapCacheStorageModeCompactV2"
    );
    assert_eq!(root["tileInfo"]["lods"].as_array().unwrap().len(), 20);
    let item: serde_json::Value =
        serde_json::from_reader(z.by_name("iteminfo.json").unwrap()).unwrap();
    assert_eq!(item["type"], "Compact Tile Package");
    assert_eq!(item["name"], "sample");
    // As ArcGIS writes it: the item extent in WGS84, inside the world, and a thumbnail.
    assert_eq!(item["extent"]["spatialReference"]["wkid"], 4326);
    let (x0, y0, x1, y1) = (
        item["extent"]["xmin"].as_f64().unwrap(),
        item["extent"]["ymin"].as_f64().unwrap(),
        item["extent"]["xmax"].as_f64().unwrap(),
        item["extent"]["ymax"].as_f64().unwrap(),
    );
    assert!(-180.0 <= x0 && x0 < x1 && x1 <= 180.0, "{x0} {x1}");
    assert!(-90.0 <= y0 && y0 < y1 && y1 <= 90.0, "{y0} {y1}");
    assert_eq!(item["thumbnail"], "./thumbnail.png");
    let mut thumb = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("thumbnail.png").unwrap(), &mut thumb).unwrap();
    let img = image::load_from_memory(&thumb).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (200, 133));
    // The sample's tiles are drawn: the picture has opaque pixels of more than one colour.
    let opaque: std::collections::BTreeSet<[u8; 4]> =
        img.pixels().filter(|p| p[3] == 255).map(|p| p.0).collect();
    assert!(
        opaque.len() > 10,
        "thumbnail looks empty: {} colours",
        opaque.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Selection: levels, scales, extent

#[test]
fn levels_scales_and_extent_select_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Cache::open(esri_sample_cache()).unwrap();
    let all = all_tiles(&src);
    let scheme = src.scheme().unwrap().clone();
    let run = |name: &str, opts: JobOptions| {
        let dest = tmp.path().join(name);
        export_to(
            &src,
            &dest,
            Target::Storage(StorageFormat::CompactV2),
            &opts,
            &NoProgress,
        )
        .unwrap();
        (dest.clone(), result_tiles(&dest))
    };
    let (_, got) = run(
        "levels",
        JobOptions {
            levels: LevelSelect::Range("1-2".parse().unwrap()),
            ..job()
        },
    );
    let want: BTreeMap<_, _> = all
        .iter()
        .filter(|(t, _)| t.level >= 1)
        .map(|(t, b)| (*t, b.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 20);

    // Scales as ArcGIS lists them (rounded), one per level.
    let l1 = scheme.lod(1).unwrap().scale.round();
    let (_, got) = run(
        "scales",
        JobOptions {
            levels: LevelSelect::Scales(vec![l1]),
            ..job()
        },
    );
    assert!(
        got.keys().all(|t| t.level == 1) && got.len() == 4,
        "{got:?}"
    );
    let e = export_to(
        &src,
        &tmp.path().join("badscale"),
        Target::Storage(StorageFormat::CompactV2),
        &JobOptions {
            levels: LevelSelect::Scales(vec![500000.0]),
            ..job()
        },
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("scale 500000 is not a level"), "{e}");

    // A small box in the north-west quarter: one tile per level, and conf.cdi is that box.
    let ext = bundlefs::format::conf::Envelope {
        xmin: -12.0e6,
        ymin: 11.0e6,
        xmax: -11.0e6,
        ymax: 12.0e6,
    };
    let (dest, got) = run(
        "extent",
        JobOptions {
            extent: Some(ext),
            ..job()
        },
    );
    let keys: Vec<TileAddr> = got.keys().copied().collect();
    assert_eq!(
        keys,
        [
            TileAddr::new(0, 0, 0),
            TileAddr::new(1, 0, 0),
            TileAddr::new(2, 0, 0)
        ]
    );
    for t in &keys {
        assert_eq!(got[t], all[t], "{t} byte-identical");
    }
    let cdi = parse_cdi(&fs::read(dest.join("conf.cdi")).unwrap()).unwrap();
    assert_eq!(cdi, ext);
}

// ---------------------------------------------------------------------------------------------
// AOI clipping

/// Even-odd ray casting, written independently of bundlefs's scanline mask.
fn in_polygon(poly: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// A quadrilateral across the world, in Web Mercator metres.
const QUAD: [(f64, f64); 4] = [
    (-17.3e6, 2.1e6),
    (1.7e6, 19.1e6),
    (18.9e6, -1.3e6),
    (-5.9e6, -18.7e6),
];

fn write_aoi(dir: &Path) -> PathBuf {
    let mut ring: Vec<[f64; 2]> = QUAD.iter().map(|&(x, y)| [x, y]).collect();
    ring.push(ring[0]);
    let gj = serde_json::json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]});
    let p = dir.join("aoi.geojson");
    fs::write(&p, gj.to_string()).unwrap();
    p
}

/// Per tile: which pixel centres of it lie in QUAD.
fn expected_mask(scheme: &TileScheme, t: TileAddr) -> Vec<bool> {
    let b = scheme.tile_bbox(t).unwrap();
    let r = scheme.lod(t.level).unwrap().resolution;
    let (w, h) = (scheme.tile_cols, scheme.tile_rows);
    let mut m = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let cx = b.xmin + (f64::from(x) + 0.5) * r;
            let cy = b.ymax - (f64::from(y) + 0.5) * r;
            m.push(in_polygon(&QUAD, cx, cy));
        }
    }
    m
}

#[test]
fn aoi_clips_png_tiles_to_transparent_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let src = sample(&tmp.path().join("png"), "0-3", "PNG");
    let scheme = src.scheme().unwrap().clone();
    let all = all_tiles(&src);
    let aoi = write_aoi(tmp.path());
    for storage in ["compact-v2", "exploded"] {
        let dest = tmp.path().join(format!("clipped-{storage}"));
        let out = run_ok(
            Command::new(bin())
                .args(["export", "--storage", storage, "--aoi"])
                .arg(&aoi)
                .arg(src.root())
                .arg(&dest),
        );
        let got = result_tiles(&dest);
        let (mut inside, mut boundary, mut outside) = (0, 0, 0);
        for (t, bytes) in &all {
            let m = expected_mask(&scheme, *t);
            let n = m.iter().filter(|b| **b).count();
            if n == 0 {
                outside += 1;
                assert!(!got.contains_key(t), "{t} lies outside the AOI");
            } else if n == m.len() {
                inside += 1;
                assert_eq!(&got[t], bytes, "{t} lies inside: byte-identical");
            } else {
                boundary += 1;
                let s = decode(bytes);
                let g = decode(&got[t]);
                for (i, (sp, gp)) in s.pixels().zip(g.pixels()).enumerate() {
                    let (x, y) = (i as u32 % scheme.tile_cols, i as u32 / scheme.tile_cols);
                    if m[i] {
                        assert_eq!(sp, gp, "{t} pixel ({x},{y}) inside the AOI");
                    } else {
                        assert_eq!(
                            gp.0[3], 0,
                            "{t} pixel ({x},{y}) outside must be transparent"
                        );
                    }
                }
            }
        }
        assert!(
            inside > 0 && boundary > 0 && outside > 0,
            "{inside} {boundary} {outside}"
        );
        assert!(
            out.contains(&format!("clipped {boundary}")),
            "summary counts the clipped tiles:\n{out}"
        );
        // conf.cdi is the AOI's bounding box.
        let cdi = parse_cdi(&fs::read(dest.join("conf.cdi")).unwrap()).unwrap();
        assert_eq!((cdi.xmin, cdi.ymax), (-17.3e6, 19.1e6));
    }
}

#[test]
fn aoi_burns_the_background_into_jpeg_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Cache::open(esri_sample_cache()).unwrap();
    let scheme = src.scheme().unwrap().clone();
    let all = all_tiles(&src);
    let aoi = write_aoi(tmp.path());
    let dest = tmp.path().join("clipped");
    run_ok(
        Command::new(bin())
            .args([
                "export",
                "--storage",
                "compact-v2",
                "--background",
                "#ff00ff",
                "--aoi",
            ])
            .arg(&aoi)
            .arg(src.root())
            .arg(&dest),
    );
    let got = result_tiles(&dest);
    let (w, h) = (scheme.tile_cols as i64, scheme.tile_rows as i64);
    let mut checked = 0;
    for (t, bytes) in &all {
        let m = expected_mask(&scheme, *t);
        let n = m.iter().filter(|b| **b).count();
        if n == 0 || n == m.len() {
            assert_eq!(got.contains_key(t), n > 0, "{t}");
            if n > 0 {
                assert_eq!(&got[t], bytes, "{t}: inside, byte-identical");
            }
            continue;
        }
        assert_eq!(&got[t][..3], &[0xff, 0xd8, 0xff], "{t}: still a JPEG");
        let s = decode(bytes);
        let g = decode(&got[t]);
        // JPEG is lossy: judge pixels at least 8 px (one DCT block) away from the boundary.
        let far = |x: i64, y: i64, want: bool| {
            (-8..=8).all(|dy| {
                (-8..=8).all(|dx| {
                    let (xx, yy) = (x + dx, y + dy);
                    !(0..w).contains(&xx)
                        || !(0..h).contains(&yy)
                        || m[(yy * w + xx) as usize] == want
                })
            })
        };
        let (mut bg_err, mut bg_n, mut in_err, mut in_n) = (0i64, 0i64, 0i64, 0i64);
        // Every third pixel each way keeps the test quick in debug builds.
        for y in (0..h).step_by(3) {
            for x in (0..w).step_by(3) {
                let i = (y * w + x) as usize;
                let gp = g.get_pixel(x as u32, y as u32).0;
                if !m[i] && far(x, y, false) {
                    let d = [255, 0, 255]
                        .iter()
                        .zip(gp)
                        .map(|(a, b)| (a - i64::from(b)).abs())
                        .max()
                        .unwrap();
                    assert!(
                        d <= 24,
                        "{t} ({x},{y}) outside: {gp:?} is not the background"
                    );
                    bg_err += d;
                    bg_n += 1;
                } else if m[i] && far(x, y, true) {
                    let sp = s.get_pixel(x as u32, y as u32).0;
                    in_err += (0..3)
                        .map(|c| (i64::from(sp[c]) - i64::from(gp[c])).abs())
                        .sum::<i64>();
                    in_n += 3;
                }
            }
        }
        assert!(bg_n > 0 && in_n > 0, "{t}");
        assert!(
            bg_err as f64 / (bg_n as f64) < 4.0,
            "{t}: mean background error"
        );
        assert!(
            in_err as f64 / (in_n as f64) < 6.0,
            "{t}: mean error inside after re-encoding"
        );
        checked += 1;
    }
    assert!(checked > 0, "no boundary tile in the sample cache");
}

// ---------------------------------------------------------------------------------------------
// Merge vs overwrite

fn png(img: &RgbaImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
        .unwrap();
    v
}

/// Source tile: left third opaque red, middle third half-transparent green, right third clear.
fn overlay() -> RgbaImage {
    RgbaImage::from_fn(256, 256, |x, _| match x {
        0..=84 => Rgba([255, 0, 0, 255]),
        85..=169 => Rgba([0, 255, 0, 128]),
        _ => Rgba([0, 0, 0, 0]),
    })
}

fn png_cache(dir: &Path, format: TileFormat, tiles: &[(TileAddr, Vec<u8>)]) -> Cache {
    let c = Cache::create(dir, &TileScheme::web_mercator(3, format), None).unwrap();
    let refs: Vec<(TileAddr, &[u8])> = tiles.iter().map(|(t, b)| (*t, &b[..])).collect();
    c.write_tiles(&refs).unwrap();
    Cache::open(dir).unwrap()
}

#[test]
fn merge_blends_overwrite_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let blue = png(&RgbaImage::from_pixel(256, 256, Rgba([0, 0, 255, 255])));
    let over = png(&overlay());
    let (a, b) = (TileAddr::new(1, 0, 0), TileAddr::new(1, 1, 1));
    let src = png_cache(
        &tmp.path().join("src"),
        TileFormat::Png,
        &[(a, over.clone()), (b, over.clone())],
    );
    for (mode, mode_name) in [
        (ImportMode::Merge, "merge"),
        (ImportMode::Overwrite, "overwrite"),
    ] {
        let dest_dir = tmp.path().join(mode_name);
        // DEST has tile a (blue) but not b.
        png_cache(&dest_dir, TileFormat::Png, &[(a, blue.clone())]);
        let opts = JobOptions { mode, ..job() };
        let s = import_into(&src, &dest_dir, &opts, &NoProgress).unwrap();
        let got = all_tiles(&Cache::open(&dest_dir).unwrap());
        assert_eq!(
            got[&b], over,
            "{mode_name}: no destination tile → source bytes"
        );
        match mode {
            ImportMode::Overwrite => {
                assert_eq!(got[&a], over, "overwrite stores the source bytes");
                assert_eq!((s.tiles_copied, s.tiles_merged), (2, 0));
            }
            ImportMode::Merge => {
                assert_eq!((s.tiles_copied, s.tiles_merged), (1, 1));
                let g = decode(&got[&a]);
                for (x, p) in g
                    .enumerate_pixels()
                    .filter(|(_, y, _)| *y == 100)
                    .map(|(x, _, p)| (x, p))
                {
                    let want = match x {
                        0..=84 => [255, 0, 0, 255],
                        // 128/255 green over opaque blue.
                        85..=169 => [0, 128, 127, 255],
                        _ => [0, 0, 255, 255],
                    };
                    for c in 0..4 {
                        assert!(
                            (i32::from(p.0[c]) - want[c]).abs() <= 1,
                            "merge x={x}: {:?} vs {want:?}",
                            p.0
                        );
                    }
                }
                // A second identical merge blends the half-transparent third again (source over
                // the merged result), so it is re-encoded; tile b already equals the source.
                let s2 = import_into(&src, &dest_dir, &opts, &NoProgress).unwrap();
                assert_eq!((s2.tiles_merged, s2.tiles_unchanged), (1, 1), "{s2:?}");
                // Without partial alpha a merge is idempotent: the re-run writes nothing.
                let hard = png(&RgbaImage::from_fn(256, 256, |x, _| {
                    if x < 128 {
                        Rgba([255, 0, 0, 255])
                    } else {
                        Rgba([0, 0, 0, 0])
                    }
                }));
                let src2 = png_cache(&tmp.path().join("src2"), TileFormat::Png, &[(a, hard)]);
                let s3 = import_into(&src2, &dest_dir, &opts, &NoProgress).unwrap();
                assert_eq!(s3.tiles_merged, 1, "{s3:?}");
                let bundle = Cache::open(&dest_dir).unwrap().bundle_path(&a.bundle());
                let len = fs::metadata(&bundle).unwrap().len();
                let s4 = import_into(&src2, &dest_dir, &opts, &NoProgress).unwrap();
                assert_eq!((s4.tiles_written, s4.tiles_unchanged), (0, 1), "{s4:?}");
                assert_eq!(fs::metadata(&bundle).unwrap().len(), len);
            }
        }
    }
}

/// Issue 12: (10,10,10, α100) MERGEd over (200,200,200, α50) is 54 per channel, α130 (exact
/// Porter-Duff "over": 1805000 / 33250 = 54.29, 33250 / 255 = 130.39), through the library job and
/// through `bundlefs import --mode merge`. The mount's MERGE gave 53; it now calls the same
/// compositing (`format::pixels::over`, unit-tested in cache::commit).
#[test]
fn merge_value_is_pinned_through_import() {
    let tmp = tempfile::tempdir().unwrap();
    let t = TileAddr::new(2, 1, 2);
    let top = png(&RgbaImage::from_pixel(256, 256, Rgba([10, 10, 10, 100])));
    let under = png(&RgbaImage::from_pixel(256, 256, Rgba([200, 200, 200, 50])));
    let src = png_cache(
        &tmp.path().join("src"),
        TileFormat::Png,
        &[(t, top.clone())],
    );
    for how in ["library", "cli"] {
        let dest = tmp.path().join(how);
        png_cache(&dest, TileFormat::Png, &[(t, under.clone())]);
        match how {
            "library" => {
                let opts = JobOptions {
                    mode: ImportMode::Merge,
                    ..job()
                };
                let s = import_into(&src, &dest, &opts, &NoProgress).unwrap();
                assert_eq!((s.tiles_merged, s.tiles_written), (1, 1), "{s:?}");
            }
            _ => {
                run_ok(
                    Command::new(bin())
                        .args(["import", "--mode", "merge"])
                        .arg(src.root())
                        .arg(&dest),
                );
            }
        }
        let got = decode(&Cache::open(&dest).unwrap().tile(t).unwrap().unwrap());
        assert_eq!(got.dimensions(), (256, 256));
        assert!(
            got.pixels().all(|p| p.0 == [54, 54, 54, 130]),
            "{how}: {:?}",
            got.get_pixel(0, 0)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Mismatch errors: nothing written

#[test]
fn scheme_and_format_mismatches_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let tile = png(&overlay());
    let t = TileAddr::new(1, 0, 0);
    let src = png_cache(
        &tmp.path().join("src"),
        TileFormat::Png,
        &[(t, tile.clone())],
    );
    let jpeg_src = Cache::open(esri_sample_cache()).unwrap();

    // JPEG into PNG: refused; into MIXED: accepted.
    let png_dest = tmp.path().join("png-dest");
    png_cache(&png_dest, TileFormat::Png, &[(t, tile.clone())]);
    let before = tree_files(&png_dest);
    let e = import_into(&jpeg_src, &png_dest, &job(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("image formats differ") && e.contains("JPEG"),
        "{e}"
    );
    assert_same_tree(&tree_files(&png_dest), &before, "after refused import");
    let mixed = tmp.path().join("mixed-dest");
    png_cache(&mixed, TileFormat::Mixed, &[(t, tile.clone())]);
    let s = import_into(&jpeg_src, &mixed, &job(), &NoProgress).unwrap();
    assert_eq!(s.tiles_written, 21);

    // Another origin, another tile size, a level DEST lacks: refused, DEST untouched.
    type Change = fn(&mut TileScheme);
    let cases: [(&str, Change); 3] = [
        ("origin", |s| s.origin_x += 1000.0),
        ("tile size", |s| {
            s.tile_cols = 512;
            s.tile_rows = 512
        }),
        ("level 1", |s| s.lods.retain(|l| l.level != 1)),
    ];
    for (what, change) in cases {
        let d = tmp.path().join(format!("dest-{}", what.replace(' ', "-")));
        let mut scheme = TileScheme::web_mercator(3, TileFormat::Png);
        change(&mut scheme);
        Cache::create(&d, &scheme, None).unwrap();
        let before = tree_files(&d);
        let e = import_into(&src, &d, &job(), &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tiling schemes differ") && e.contains(what),
            "{what}: {e}"
        );
        assert_same_tree(&tree_files(&d), &before, what);
    }

    // Export into a cache of another storage format: refused.
    let v1 = tmp.path().join("v1");
    export_to(
        &src,
        &v1,
        Target::Storage(StorageFormat::CompactV1),
        &job(),
        &NoProgress,
    )
    .unwrap();
    let e = export_to(
        &src,
        &v1,
        Target::Storage(StorageFormat::CompactV2),
        &job(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot mix storage formats"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Bad input: clear errors naming the path, exit code 2

fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{cmd:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_aoi_unwritable_dest_and_broken_tiles_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = esri_sample_cache();
    let bad = tmp.path().join("bad.geojson");
    fs::write(
        &bad,
        r#"{"type": "LineString", "coordinates": [[0,0],[1,1]]}"#,
    )
    .unwrap();
    let e = fails(
        Command::new(bin())
            .args(["export", "--storage", "exploded", "--aoi"])
            .arg(&bad)
            .arg(&src)
            .arg(tmp.path().join("x")),
    );
    assert!(
        e.contains(&bad.display().to_string()) && e.contains("LineString"),
        "{e}"
    );
    assert!(
        !tmp.path().join("x").exists(),
        "nothing written for a bad AOI"
    );

    // DEST under a regular file cannot be created.
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    let e = fails(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2"])
            .arg(&src)
            .arg(file.join("dest")),
    );
    assert!(e.contains(&file.join("dest").display().to_string()), "{e}");

    // A tile whose bytes are not an image, on the AOI boundary (so it must be decoded).
    let broken = tmp.path().join("broken");
    copy_dir(&src, &broken);
    let c = Cache::open(&broken).unwrap();
    let t = TileAddr::new(0, 0, 0);
    c.write_tiles(&[(t, b"not a jpeg at all".as_slice())])
        .unwrap();
    let aoi = write_aoi(tmp.path());
    let e = fails(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2", "--aoi"])
            .arg(&aoi)
            .arg(&broken)
            .arg(tmp.path().join("y")),
    );
    assert!(
        e.contains(&c.bundle_path(&t.bundle()).display().to_string()),
        "{e}"
    );
    assert!(e.contains("source tile: cannot decode Jpeg image"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// An interrupted export leaves a valid DEST and can be re-run

#[test]
fn killed_export_leaves_valid_dest_and_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let src = sample(&tmp.path().join("src"), "0-5", "PNG");
    let want = all_tiles(&src);
    for (i, storage) in ["compact-v2", "exploded"].into_iter().enumerate() {
        let dest = tmp.path().join(format!("dest-{storage}"));
        let mut child = Command::new(bin())
            .args(["export", "--storage", storage])
            .arg(src.root())
            .arg(&dest)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + 30 * i as u64));
        let _ = child.kill();
        child.wait().unwrap();
        if dest.join("conf.xml").exists() {
            let c = Cache::open(&dest).unwrap();
            let r = verify(&c, true).unwrap();
            assert!(
                r.problems.is_empty(),
                "{storage}: after kill: {:?}",
                r.problems
            );
            for (t, b) in all_tiles(&c) {
                assert_eq!(b, want[&t], "{storage}: {t} after kill");
            }
        }
        run_ok(
            Command::new(bin())
                .args(["export", "--storage", storage])
                .arg(src.root())
                .arg(&dest),
        );
        assert_eq!(
            all_tiles(&Cache::open(&dest).unwrap()),
            want,
            "{storage}: re-run"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Importing a folder without conf.xml: refused with the way on, or taken on the destination's
// scheme with --scheme-of-dest while every tile is still checked

#[test]
fn a_source_without_conf_xml_needs_scheme_of_dest_and_its_tiles_are_still_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let src = sample(&tmp.path().join("src"), "0-2", "PNG");
    let want = all_tiles(&src);
    // A bare exploded tree: the tiles without conf.xml / conf.cdi.
    let bare = tmp.path().join("bare");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(src.root())
            .arg(&bare),
    );
    fs::remove_file(bare.join("conf.xml")).unwrap();
    fs::remove_file(bare.join("conf.cdi")).unwrap();
    let dest = tmp.path().join("dest");
    run_ok(
        Command::new(bin())
            .args(["create", "--levels", "0-5"])
            .arg(&dest),
    );
    let import = |extra: &[&str]| {
        Command::new(bin())
            .arg("import")
            .arg(&bare)
            .arg(&dest)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = import(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted without conf.xml");
    assert!(err.contains("--scheme-of-dest"), "no way on named: {err}");
    assert!(all_tiles(&Cache::open(&dest).unwrap()).is_empty());

    let out = import(&["--scheme-of-dest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all_tiles(&Cache::open(&dest).unwrap()), want);

    // A tile of the wrong pixel size is refused by name, even on trust.
    let odd = bare.join("_alllayers/L02/R00000001/C00000001.png");
    let small = image::RgbaImage::from_pixel(100, 100, image::Rgba([1, 2, 3, 255]));
    small.save(&odd).unwrap();
    let out = import(&["--scheme-of-dest"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 100x100 tile was accepted");
    assert!(
        err.contains("C00000001.png") && err.contains("100"),
        "{err}"
    );
}
