//! Managing tiles (issue 15 part 5, ArcGIS's Manage Map Server Cache Tiles): `bundlefs delete` by
//! levels, extent and a non-rectangular area of interest in Compact V2, V1 and exploded caches,
//! `compact` reclaiming the dead space, a mount seeing the deletion, `render --aoi`, and a job
//! waiting for a bundle lock held by another process instead of interleaving with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bundlefs::cache::{BundleLock, Cache};
use bundlefs::format::conf::{Envelope, TileFormat};
use bundlefs::format::TileAddr;
use bundlefs::jobs::aoi::{Aoi, Coverage};
use bundlefs::jobs::selection::Area;
use bundlefs::render::batch::{render_batch_in, BatchOptions, BlockCover, TileFilter};
use bundlefs::render::{Keep, RenderOptions, Renderer, SourceSpec};

use crate::support::http::{Response, TestServer};
use crate::support::mount::{need, Mounted};
use crate::support::{all_tiles, bin, bundlefs_export, run, run_ok, sample_cache};

type Tiles = BTreeMap<TileAddr, Vec<u8>>;

/// `bundlefs delete CACHE ARGS…`, which must succeed; returns stdout.
fn delete(cache: &Path, args: &[&str]) -> String {
    run_ok(Command::new(bin()).arg("delete").arg(cache).args(args))
}

/// `expected` less the tiles for which `gone` holds.
fn without(expected: &Tiles, gone: impl Fn(&TileAddr) -> bool) -> Tiles {
    expected
        .iter()
        .filter(|(t, _)| !gone(t))
        .map(|(t, b)| (*t, b.clone()))
        .collect()
}

/// Asserts the cache at `dir`, opened anew, holds exactly `want`, byte for byte.
fn assert_holds(dir: &Path, want: &Tiles, what: &str) {
    let got = all_tiles(&Cache::open(dir).unwrap());
    let missing: Vec<_> = want.keys().filter(|t| !got.contains_key(t)).collect();
    let extra: Vec<_> = got.keys().filter(|t| !want.contains_key(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    for (t, b) in want {
        assert!(got[t] == *b, "{what}: {t} differs");
    }
}

/// The map bounds of a tile of the cache at `dir` (its conf.xml's scheme).
fn bbox(dir: &Path, t: TileAddr) -> Envelope {
    Cache::open(dir)
        .unwrap()
        .scheme()
        .unwrap()
        .tile_bbox(t)
        .unwrap()
}

fn env_arg(e: &Envelope) -> String {
    format!("{},{},{},{}", e.xmin, e.ymin, e.xmax, e.ymax)
}

/// A point given in tile units of `level` (column, row from the origin; fractions inside tiles)
/// as map coordinates of the cache at `dir`.
fn at(dir: &Path, level: u8, col: f64, row: f64) -> (f64, f64) {
    let b = bbox(dir, TileAddr::new(level, 0, 0));
    let (w, h) = (b.xmax - b.xmin, b.ymax - b.ymin);
    (b.xmin + col * w, b.ymax - row * h)
}

/// A triangle in tile units of level 3 (columns 4.3-7.9, rows 0.2-3.7: a bounding box of 16
/// tiles of which the triangle covers only some).
const TRIANGLE: [(f64, f64); 3] = [(4.3, 0.2), (7.9, 0.4), (7.6, 3.7)];

/// Writes the triangle as a GeoJSON feature collection in EPSG:3857 (the sample cache's
/// reference), as QGIS writes one; returns its path.
fn triangle_geojson(dir: &Path, cache: &Path) -> PathBuf {
    let mut ring: Vec<[f64; 2]> = TRIANGLE
        .iter()
        .map(|(c, r)| {
            let (x, y) = at(cache, 3, *c, *r);
            [x, y]
        })
        .collect();
    ring.push(ring[0]);
    let doc = serde_json::json!({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]
    });
    let p = dir.join("triangle.geojson");
    fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
    p
}

/// Whether the triangle covers a pixel centre of the 256 × 256 px tile (`row`, `col`) of `level`
/// (3 or coarser), by brute force in level-3 tile units (independent of bundlefs' scanline mask).
fn triangle_takes(level: u8, row: u32, col: u32) -> bool {
    covers_a_pixel_centre(&TRIANGLE, 1u32 << (3 - level), row, col, 256, 256)
}

/// Whether triangle `tri` (in tile units of a finer level, `k` of its tiles to a side of ours)
/// covers the centre of a pixel of tile (`row`, `col`), `w` × `h` px; by brute force.
fn covers_a_pixel_centre(
    tri: &[(f64, f64); 3],
    k: u32,
    row: u32,
    col: u32,
    w: u32,
    h: u32,
) -> bool {
    let [a, b, c] = *tri;
    let k = f64::from(k);
    let side = |p: (f64, f64), q: (f64, f64), x: f64, y: f64| {
        (q.0 - p.0) * (y - p.1) - (q.1 - p.1) * (x - p.0)
    };
    for j in 0..h {
        for i in 0..w {
            let x = (f64::from(col) + (f64::from(i) + 0.5) / f64::from(w)) * k;
            let y = (f64::from(row) + (f64::from(j) + 0.5) / f64::from(h)) * k;
            let (d1, d2, d3) = (side(a, b, x, y), side(b, c, x, y), side(c, a, x, y));
            let neg = d1 < 0.0 || d2 < 0.0 || d3 < 0.0;
            let pos = d1 > 0.0 || d2 > 0.0 || d3 > 0.0;
            if !(neg && pos) {
                return true;
            }
        }
    }
    false
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .len()
}

#[test]
fn delete_by_levels_extent_and_aoi_then_compact_keeps_every_other_tile() {
    let tmp = tempfile::tempdir().unwrap();
    let c = sample_cache(tmp.path(), "0-3");
    let original = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(original.len(), 1 + 4 + 16 + 64);
    let bundle3 = c.join("_alllayers/L03/R0000C0000.bundle");
    let size_before = file_len(&bundle3);

    // No selection at all: refused, nothing deleted.
    let out = run(Command::new(bin()).arg("delete").arg(&c));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--all") && err.contains("nothing was deleted"),
        "{err}"
    );
    assert_holds(&c, &original, "after a refused delete");

    // By levels: every tile of level 2.
    let out = delete(&c, &["--levels", "2"]);
    assert!(out.contains("deleted 16 tiles from 1 bundle"), "{out}");
    let mut want = without(&original, |t| t.level == 2);
    assert_holds(&c, &want, "after --levels 2");

    // By extent: level 3, the tiles of columns 0-1 (the box ends inside column 1).
    let e0 = bbox(&c, TileAddr::new(3, 0, 0));
    let e1 = bbox(&c, TileAddr::new(3, 7, 1));
    let ext = Envelope {
        xmin: e0.xmin,
        ymin: e1.ymin,
        xmax: e1.xmin + (e1.xmax - e1.xmin) / 3.0,
        ymax: e0.ymax,
    };
    let out = delete(&c, &["--levels", "3", "--extent", &env_arg(&ext)]);
    assert!(out.contains("deleted 16 tiles from 1 bundle"), "{out}");
    want = without(&want, |t| t.level == 3 && t.col <= 1);
    assert_holds(&c, &want, "after --extent");

    // By a triangle: tiles with a pixel centre in it go; tiles in its bounding box but outside
    // it stay (the selection is the polygon, not its box).
    let aoi = triangle_geojson(tmp.path(), &c);
    let taken: Vec<TileAddr> = (0..4)
        .flat_map(|r| (4..8).map(move |col| TileAddr::new(3, r, col)))
        .filter(|t| triangle_takes(3, t.row, t.col))
        .collect();
    assert!(
        taken.len() > 3 && taken.len() < 16,
        "the triangle must take some of its box's 16 tiles, not all: {taken:?}"
    );
    let out = delete(&c, &["--levels", "3", "--aoi", aoi.to_str().unwrap()]);
    assert!(
        out.contains(&format!("deleted {} tiles from 1 bundle", taken.len())),
        "{out}"
    );
    want = without(&want, |t| taken.contains(t));
    assert_holds(&c, &want, "after --aoi");
    let kept_in_box = want
        .keys()
        .filter(|t| t.level == 3 && t.row < 4 && t.col >= 4)
        .count();
    assert_eq!(
        kept_in_box,
        16 - taken.len(),
        "tiles in the box, outside the triangle"
    );

    // Deleting only clears index entries: the bundle keeps its size, the bytes are dead space.
    assert_eq!(file_len(&bundle3), size_before);
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(bin()).args(["info", "--json"]).arg(&c),
    ))
    .unwrap();
    let dead = info["total"]["deadBytes"].as_u64().unwrap();
    let removed: usize = original
        .iter()
        .filter(|(t, _)| !want.contains_key(t))
        .map(|(_, b)| b.len() + 4)
        .sum();
    assert_eq!(
        dead, removed as u64,
        "dead bytes = removed tiles and their size prefixes"
    );

    // compact reclaims it; every remaining tile is byte-identical.
    run_ok(
        Command::new(bin())
            .arg("compact")
            .arg(&c)
            .args(["--min-dead", "0%"]),
    );
    assert!(
        file_len(&bundle3) < size_before,
        "{} did not shrink",
        bundle3.display()
    );
    assert_holds(&c, &want, "after compact");
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(bin()).args(["info", "--json"]).arg(&c),
    ))
    .unwrap();
    assert_eq!(info["total"]["deadBytes"], 0);
    let out = run(Command::new(bin()).arg("verify").arg(&c));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --all takes the rest.
    let out = delete(&c, &["--all"]);
    assert!(
        out.contains(&format!("deleted {} tiles", want.len())),
        "{out}"
    );
    assert_holds(&c, &Tiles::new(), "after --all");
}

#[test]
fn delete_in_compact_v1_and_exploded_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let c = sample_cache(tmp.path(), "0-3");
    let original = all_tiles(&Cache::open(&c).unwrap());
    // One tile: a box inside tile L03 row 5 col 6.
    let b = bbox(&c, TileAddr::new(3, 5, 6));
    let (dx, dy) = ((b.xmax - b.xmin) / 4.0, (b.ymax - b.ymin) / 4.0);
    let inner = Envelope {
        xmin: b.xmin + dx,
        ymin: b.ymin + dy,
        xmax: b.xmax - dx,
        ymax: b.ymax - dy,
    };
    // One row: level 3 row 2, the box reaching across the whole level inside that row.
    let r = bbox(&c, TileAddr::new(3, 2, 0));
    let row = Envelope {
        xmin: r.xmin,
        ymin: r.ymin + dy,
        xmax: bbox(&c, TileAddr::new(3, 2, 7)).xmax,
        ymax: r.ymax - dy,
    };

    let v1 = tmp.path().join("v1");
    bundlefs_export(&c, &v1, "compact-v1");
    let bundlx = v1.join("_alllayers/L03/R0000C0000.bundlx");
    let bundle = v1.join("_alllayers/L03/R0000C0000.bundle");
    let (x_before, b_before) = (fs::read(&bundlx).unwrap(), file_len(&bundle));
    let out = delete(&v1, &["--levels", "3", "--extent", &env_arg(&inner)]);
    assert!(out.contains("deleted 1 tile from 1 bundle"), "{out}");
    let want = without(&original, |t| *t == TileAddr::new(3, 5, 6));
    assert_holds(&v1, &want, "V1 after deleting one tile");
    // Only that tile's 5-byte offset changed (column-major: 16 + 5 * (col * 128 + row)).
    let x_after = fs::read(&bundlx).unwrap();
    let at = 16 + 5 * (6 * 128 + 5);
    let changed: Vec<usize> = (0..x_after.len())
        .filter(|i| x_after[*i] != x_before[*i])
        .collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|i| (at..at + 5).contains(i)),
        "bytes changed in the .bundlx: {changed:?}"
    );
    assert_eq!(file_len(&bundle), b_before, "the .bundle is not rewritten");

    let ex = tmp.path().join("exploded");
    bundlefs_export(&c, &ex, "exploded");
    let tile = ex.join("_alllayers/L03/R00000005/C00000006.png");
    assert!(tile.is_file());
    let out = delete(&ex, &["--levels", "3", "--extent", &env_arg(&inner)]);
    assert!(
        out.contains("deleted 1 tile from 1 bundle in level 3"),
        "{out}"
    );
    assert!(!tile.exists());
    assert!(tile.parent().unwrap().is_dir(), "row 5 still holds 7 tiles");
    assert_holds(&ex, &want, "exploded after deleting one tile");
    // A whole row: its folder goes with its tiles.
    let out = delete(&ex, &["--levels", "3", "--extent", &env_arg(&row)]);
    assert!(
        out.contains("deleted 8 tiles") && out.contains("1 empty row folder removed"),
        "{out}"
    );
    assert!(!ex.join("_alllayers/L03/R00000002").exists());
    assert!(ex.join("_alllayers/L03/R00000003").is_dir());
    let want = without(&want, |t| t.level == 3 && t.row == 2);
    assert_holds(&ex, &want, "exploded after deleting a row");
}

#[test]
fn a_mount_sees_the_deletion() {
    need("fusermount3");
    let tmp = tempfile::tempdir().unwrap();
    let c = sample_cache(tmp.path(), "0-3");
    let m = Mounted::start(&c, &tmp.path().join("mnt"), &["--recheck", "0.2"]);
    let tile = m.path("_alllayers/L03/R00000001/C00000002.png");
    let other = m.path("_alllayers/L03/R00000001/C00000003.png");
    let other_bytes = fs::read(&other).unwrap();
    assert!(!fs::read(&tile).unwrap().is_empty());
    let b = bbox(&c, TileAddr::new(3, 1, 2));
    let (dx, dy) = ((b.xmax - b.xmin) / 4.0, (b.ymax - b.ymin) / 4.0);
    let inner = Envelope {
        xmin: b.xmin + dx,
        ymin: b.ymin + dy,
        xmax: b.xmax - dx,
        ymax: b.ymax - dy,
    };
    let out = delete(&c, &["--levels", "3", "--extent", &env_arg(&inner)]);
    assert!(
        out.contains("deleted 1 tile from 1 bundle in level 3"),
        "{out}"
    );
    let start = Instant::now();
    loop {
        let listed: Vec<String> = fs::read_dir(m.path("_alllayers/L03/R00000001"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let gone = fs::read(&tile).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if gone && !listed.iter().any(|n| n == "C00000002.png") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the deletion is not seen through the mount: listed {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read(&other).unwrap(),
        other_bytes,
        "a neighbour changed"
    );
}

#[test]
fn a_job_waits_for_the_bundle_lock_held_by_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let c = sample_cache(tmp.path(), "0-3");
    let original = all_tiles(&Cache::open(&c).unwrap());
    let cache = Cache::open(&c).unwrap();
    let id = TileAddr::new(2, 0, 0).bundle();
    let lock_path = cache.lock_path(&id);
    // Held through the same lock API (the flock of `<bundle>.lck` MapProxy takes too).
    let held = BundleLock::acquire(&lock_path, Duration::from_secs(1)).unwrap();
    let mut child = Command::new(bin())
        .arg("delete")
        .arg(&c)
        .args(["--levels", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "delete finished while another process held the bundle's lock"
    );
    assert_holds(&c, &original, "while the lock is held");
    // Past the notice delay, still waiting; then the lock is let go.
    std::thread::sleep(Duration::from_millis(2600));
    assert!(child.try_wait().unwrap().is_none(), "delete gave up early");
    let released = Instant::now();
    drop(held);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "delete took {:?} after the lock was let go",
        released.elapsed()
    );
    assert!(
        stderr.contains("waiting for the lock on")
            && stderr.contains(&lock_path.display().to_string()),
        "no waiting message naming {}: {stderr}",
        lock_path.display()
    );
    assert!(stdout.contains("deleted 16 tiles"), "{stdout}");
    assert_holds(
        &c,
        &without(&original, |t| t.level == 2),
        "after the lock was let go",
    );
}

#[test]
fn render_with_an_aoi_renders_only_the_tiles_it_takes() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let d = tmp.path().join(name);
        run_ok(
            Command::new(bin())
                .arg("create")
                .arg(&d)
                .args(["--levels", "0-3"]),
        );
        d
    };
    let (part, whole) = (make("part"), make("whole"));
    let aoi = triangle_geojson(tmp.path(), &part);
    let out = run_ok(
        Command::new(bin())
            .arg("render")
            .arg(&part)
            .args(["--source", "label", "--levels", "2-3", "--keep", "--aoi"])
            .arg(&aoi),
    );
    run_ok(
        Command::new(bin())
            .arg("render")
            .arg(&whole)
            .args(["--source", "label", "--levels", "2-3", "--keep"]),
    );
    let all = all_tiles(&Cache::open(&whole).unwrap());
    assert_eq!(all.len(), 16 + 64);
    let want: Tiles = all
        .iter()
        .filter(|(t, _)| t.level >= 2 && triangle_takes(t.level, t.row, t.col))
        .map(|(t, b)| (*t, b.clone()))
        .collect();
    let n3 = want.keys().filter(|t| t.level == 3).count();
    assert!(n3 > 3 && n3 < 16, "{n3} level-3 tiles");
    // Level 2 tile (1, 2) overlaps the triangle's box but holds no pixel centre of it.
    assert!(!want.contains_key(&TileAddr::new(2, 1, 2)) && want.len() > n3);
    assert_holds(&part, &want, "render --aoi");
    assert!(
        out.contains(&format!(
            "{} tiles in levels 2-3: {} rendered",
            want.len(),
            want.len()
        )),
        "{out}"
    );
}

/// The command line's rule for `render --aoi`, over the library's [`Area`].
#[derive(Debug)]
struct AoiTiles(Area, u32, u32);

impl TileFilter for AoiTiles {
    fn block(&self, env: &Envelope) -> BlockCover {
        match self.0.block(env) {
            Coverage::Outside => BlockCover::Outside,
            Coverage::Inside => BlockCover::Inside,
            Coverage::Partial => BlockCover::Partial,
        }
    }
    fn tile(&self, env: &Envelope) -> bool {
        self.0.takes_tile(env, self.1, self.2)
    }
}

/// With supertiles, an area inside one of the four supertiles of level 2 makes one request, and
/// only the tiles with a pixel centre in the area are rendered and kept.
#[test]
fn render_in_an_aoi_asks_only_for_the_supertiles_it_meets() {
    use crate::render::{fake_map, parse_bbox, projected_cache, quick_opts, EXPORT_PATH, H, W};
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png32);
    let server = TestServer::start(|req| {
        if req.path != EXPORT_PATH {
            return Response::status(404, "no such path");
        }
        let bbox = req.params.get("bbox").and_then(|b| parse_bbox(b));
        let size = req.params.get("size").and_then(|s| {
            let (w, h) = s.split_once(',')?;
            Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))
        });
        match (bbox, size) {
            (Some(b), Some((w, h))) => Response::ok("image/png", fake_map(w, h, &b)),
            _ => Response::status(400, "bbox and size=W,H needed"),
        }
    });
    let opts = RenderOptions {
        supertile: 1024,
        memory_budget: 0,
        ..quick_opts()
    };
    let spec: SourceSpec = format!(
        "arcgis:{}/arcgis/rest/services/Test/MapServer",
        server.url()
    )
    .parse()
    .unwrap();
    let src = spec
        .build(&cache, &crate::render::http_opts(opts.timeout))
        .unwrap();
    let r = Renderer::new(cache.clone(), src, Keep::No, opts).unwrap();
    // Renderer::new asked the service once for its maximum image size (`f=json`, 404 here).
    let described = server.requests();
    // Level 2 (24 tiles of 512 x 256 px, in supertiles rows 1..4 | 4..7 x columns 0..2 | 2..4):
    // a triangle in tile units of level 2 inside the first supertile.
    let tri = [(0.9, 1.2), (1.8, 1.3), (1.6, 3.6)];
    let origin = cache
        .scheme()
        .unwrap()
        .tile_bbox(TileAddr::new(2, 0, 0))
        .unwrap();
    let (tw, th) = (origin.xmax - origin.xmin, origin.ymax - origin.ymin);
    let mut ring: Vec<[f64; 2]> = tri
        .iter()
        .map(|(c, r)| [origin.xmin + c * tw, origin.ymax - r * th])
        .collect();
    ring.push(ring[0]);
    let json = serde_json::json!({"type": "Polygon", "coordinates": [ring]}).to_string();
    let aoi = Aoi::from_geojson(Path::new("triangle.geojson"), json.as_bytes()).unwrap();
    let filter = AoiTiles(Area::Aoi(aoi), W, H);
    let bo = BatchOptions {
        levels: "2-2".parse().unwrap(),
        extent: None,
        overwrite: false,
        keep: true,
        jobs: 2,
        max_tiles: 1000,
        fine_first: false,
        near_first: Vec::new(),
        shard: None,
    };
    let st = render_batch_in(&r, &bo, Some(&filter), &|_| {}).unwrap();
    let want: Vec<TileAddr> = (1..7)
        .flat_map(|row| (0..4).map(move |col| TileAddr::new(2, row, col)))
        .filter(|t| covers_a_pixel_centre(&tri, 1, t.row, t.col, W, H))
        .collect();
    assert!(want.len() >= 3 && want.len() < 6, "{want:?}");
    let n = want.len() as u64;
    assert_eq!(
        (st.candidates, st.rendered, st.kept, st.failed),
        (n, n, n, 0),
        "{st:?}"
    );
    assert_eq!(
        server.requests() - described,
        1,
        "one supertile met, one request"
    );
    let stored: Vec<TileAddr> = all_tiles(&cache).into_keys().collect();
    assert_eq!(stored, want);
}

/// Starts `bundlefs ARGS…` while the test holds the lock of bundle `id` of `cache`; checks it is
/// still waiting after 1.2 s, lets go, and returns its stdout once it has succeeded.
fn waits_then_runs(cache: &Path, t: TileAddr, args: &[&std::ffi::OsStr]) -> String {
    let lock = Cache::open(cache).unwrap().lock_path(&t.bundle());
    let held = BundleLock::acquire(&lock, Duration::from_secs(1)).unwrap();
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    if let Some(st) = child.try_wait().unwrap() {
        let out = child.wait_with_output().unwrap();
        panic!(
            "{args:?} ended ({st}) while another process held {}: {}",
            lock.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(held);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn render_and_import_wait_for_a_held_bundle_lock_too() {
    let tmp = tempfile::tempdir().unwrap();
    let c = sample_cache(tmp.path(), "0-2");
    let t = TileAddr::new(2, 1, 1);
    let bundle = c.join("_alllayers/L02/R0000C0000.bundle");
    let before = all_tiles(&Cache::open(&c).unwrap());

    // render --overwrite --keep appends level 2's tiles again once the lock is free.
    let size = file_len(&bundle);
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let out = waits_then_runs(
        &c,
        t,
        &[
            os("render"),
            c.as_os_str(),
            os("--source"),
            os("label"),
            os("--levels"),
            os("2"),
            os("--overwrite"),
            os("--keep"),
        ],
    );
    assert!(out.contains("16 kept"), "{out}");
    assert!(file_len(&bundle) > size, "render appended nothing");
    assert_holds(&c, &before, "labels drawn again are the same labels");

    // import --mode overwrite of another cache whose level-2 tiles all hold level 0's image.
    let other = tmp.path().join("other");
    let o = Cache::create(&other, Cache::open(&c).unwrap().scheme().unwrap(), None).unwrap();
    let l0 = before[&TileAddr::new(0, 0, 0)].clone();
    let l2: Vec<(TileAddr, &[u8])> = before
        .keys()
        .filter(|k| k.level == 2)
        .map(|k| (*k, &l0[..]))
        .collect();
    o.write_tiles(&l2).unwrap();
    let theirs = all_tiles(&o);
    assert_ne!(theirs[&t], before[&t]);
    waits_then_runs(
        &c,
        t,
        &[
            os("import"),
            other.as_os_str(),
            c.as_os_str(),
            os("--levels"),
            os("2"),
            os("--mode"),
            os("overwrite"),
        ],
    );
    let want: Tiles = before
        .iter()
        .map(|(k, v)| {
            let v = if k.level == 2 { &theirs[k] } else { v };
            (*k, v.clone())
        })
        .collect();
    assert_holds(&c, &want, "after the import");
}
