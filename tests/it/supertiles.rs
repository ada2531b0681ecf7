//! Supertiles: a level of N tiles in K supertiles makes K requests (counted by the test's server),
//! every tile is the matching crop of the image the server returned for its supertile (pixel for
//! pixel, on both sides of every seam, with and without a margin), concurrent misses of one
//! supertile make one request (in the library and through the mount, where `--keep-rendered`
//! stores every tile of it), and MapServer draws a polygon's label once per supertile where tile
//! by tile it draws one per tile. Supertiles are never larger than the source's maximum image
//! size: an ArcGIS service's `maxImageWidth`/`maxImageHeight` (its `f=json`, asked once) and
//! MapServer's `MAXSIZE` (its 1.3.0 GetCapabilities), counted request by request.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use crate::render::{
    decode, fake_map, fetch, geographic_scheme, http_opts, parse_bbox, projected_cache, quick_opts,
    tile_path, EXPORT_PATH, H, RES, W, X0, Y0,
};
use crate::support::http::{cgi_server, Response, TestServer};
use crate::support::mount::Mounted;
use bundlefs::cache::Cache;
use bundlefs::format::conf::{Envelope, TileFormat};
use bundlefs::format::TileAddr;
use bundlefs::render::batch::{render_batch, BatchOptions};
use bundlefs::render::{Keep, RenderOptions, Renderer, SourceSpec};
use image::RgbaImage;

/// One export request the fake server answered: bbox (xmin, ymin, xmax, ymax), size, the PNG sent.
#[derive(Clone, Debug)]
struct Drawn {
    bbox: [f64; 4],
    width: u32,
    height: u32,
    png: Vec<u8>,
}

/// A fake ArcGIS map service: its export draws `fake_map` at whatever size it is asked (a different
/// image for every bbox, varying with x, y and alpha) and records what it sent; its `f=json`
/// description answers `info` (404 when None, as a server without one) and is counted apart.
struct Drawing {
    server: TestServer,
    drawn: Arc<Mutex<Vec<Drawn>>>,
    info: Arc<AtomicUsize>,
}

impl Drawing {
    /// Requests of the service description (`…/MapServer?f=json`).
    fn info(&self) -> usize {
        self.info.load(Ordering::SeqCst)
    }

    /// Every other request: the exports.
    fn exports(&self) -> usize {
        self.server.requests() - self.info()
    }
}

fn drawing_server(delay: Duration, info: Option<serde_json::Value>) -> Drawing {
    let drawn = Arc::new(Mutex::new(Vec::new()));
    let asked = Arc::new(AtomicUsize::new(0));
    let (d, a) = (drawn.clone(), asked.clone());
    let service = EXPORT_PATH.trim_end_matches("/export");
    let server = TestServer::start(move |req| {
        if req.path == service && req.param("f") == Some("json") {
            a.fetch_add(1, Ordering::SeqCst);
            return match &info {
                Some(v) => Response::ok("application/json", v.to_string().into_bytes()),
                None => Response::status(404, "no service description here"),
            };
        }
        if req.path != EXPORT_PATH {
            return Response::status(404, &format!("no {}", req.path));
        }
        let (Some(bbox), Some(size)) = (
            req.params.get("bbox").and_then(|b| parse_bbox(b)),
            req.params.get("size"),
        ) else {
            return Response::status(400, "bbox and size needed");
        };
        let Some((w, h)) = size
            .split_once(',')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        else {
            return Response::status(400, "size=W,H");
        };
        std::thread::sleep(delay);
        let png = fake_map(w, h, &bbox);
        d.lock().unwrap().push(Drawn {
            bbox: [bbox[0], bbox[1], bbox[2], bbox[3]],
            width: w,
            height: h,
            png: png.clone(),
        });
        Response::ok("image/png", png)
    });
    Drawing {
        server,
        drawn,
        info: asked,
    }
}

fn spec(server: &TestServer) -> String {
    format!(
        "arcgis:{}/arcgis/rest/services/Test/MapServer",
        server.url()
    )
}

fn renderer(cache: &Arc<Cache>, server: &TestServer, opts: RenderOptions, keep: Keep) -> Renderer {
    let spec: SourceSpec = spec(server).parse().unwrap();
    let src = spec.build(cache, &http_opts(opts.timeout)).unwrap();
    Renderer::new(cache.clone(), src, keep, opts).unwrap()
}

/// Level 2 of `render::projected_scheme` inside `render::EXTENT`: tiles of 512 × 256 px at
/// 2500 m, so 1,280,000 × 640,000 m from the origin (-5e6, 1e7). The extent's x from -4e6 to 0
/// gives columns 0..4 (-4e6 is 0.78 tile widths from the origin, 0 is 3.9); its y from 9e6 down to
/// 6e6 gives rows 1..7 (1.56 and 6.25 tile heights): 6 × 4 = 24 tiles.
const LEVEL: u8 = 2;
const ROWS: std::ops::Range<u32> = 1..7;
const COLS: std::ops::Range<u32> = 0..4;

/// A 1024-px supertile of 512 × 256 tiles holds 2 columns and 4 rows; anchored at the origin, the
/// bands are rows 0..4, 4..8 and columns 0..2, 2..4, so level 2 falls into 2 × 2 = 4 supertiles,
/// clipped to rows 1..4 and 4..7.
fn expected_supertiles() -> Vec<(std::ops::Range<u32>, std::ops::Range<u32>)> {
    let mut out = Vec::new();
    for (r0, r1) in [(1, 4), (4, 7)] {
        for (c0, c1) in [(0, 2), (2, 4)] {
            out.push((r0..r1, c0..c1));
        }
    }
    out
}

/// The bbox and size a supertile must be asked with: its tiles plus `buffer` px on each side, none
/// above row 0 or left of column 0 (FORMATS.md's formula on whole pixels).
fn expected_request(
    rows: &std::ops::Range<u32>,
    cols: &std::ops::Range<u32>,
    buffer: u32,
) -> ([f64; 4], u32, u32) {
    let r = RES[LEVEL as usize];
    let left = if cols.start == 0 { 0 } else { buffer };
    let top = if rows.start == 0 { 0 } else { buffer };
    let px0 = f64::from(cols.start * W - left);
    let py0 = f64::from(rows.start * H - top);
    let px1 = f64::from(cols.end * W + buffer);
    let py1 = f64::from(rows.end * H + buffer);
    (
        [X0 + px0 * r, Y0 - py1 * r, X0 + px1 * r, Y0 - py0 * r],
        (px1 - px0) as u32,
        (py1 - py0) as u32,
    )
}

/// The crop of the drawn image that tile `t` must equal: the request whose bbox holds the tile's
/// centre, at the tile's pixel offset from that bbox's top-left corner.
fn crop_for(t: TileAddr, drawn: &[Drawn]) -> (usize, RgbaImage) {
    let r = RES[t.level as usize];
    let xmin = X0 + f64::from(t.col * W) * r;
    let ymax = Y0 - f64::from(t.row * H) * r;
    let (cx, cy) = (xmin + f64::from(W) * r / 2.0, ymax - f64::from(H) * r / 2.0);
    let holders: Vec<usize> = (0..drawn.len())
        .filter(|&i| {
            let b = drawn[i].bbox;
            b[0] < cx && cx < b[2] && b[1] < cy && cy < b[3]
        })
        .collect();
    assert_eq!(holders.len(), 1, "{t}: drawn by {holders:?}");
    let d = &drawn[holders[0]];
    let (x, y) = ((xmin - d.bbox[0]) / r, (d.bbox[3] - ymax) / r);
    assert!(
        (x - x.round()).abs() < 1e-6 && (y - y.round()).abs() < 1e-6,
        "{t}: not on a pixel edge"
    );
    let img = decode(&d.png, "drawn");
    assert_eq!((img.width(), img.height()), (d.width, d.height));
    let crop = image::imageops::crop_imm(&img, x.round() as u32, y.round() as u32, W, H).to_image();
    (holders[0], crop)
}

fn batch(keep: bool) -> BatchOptions {
    BatchOptions {
        levels: "2-2".parse().unwrap(),
        extent: None,
        overwrite: false,
        keep,
        jobs: 2,
        max_tiles: 1000,
        fine_first: false,
        near_first: Vec::new(),
        shard: None,
    }
}

/// Renders level 2 in 1024-px supertiles with `buffer`, keeps it, and checks requests and crops.
fn level_in_supertiles(buffer: u32) {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png32);
    let ds = drawing_server(Duration::ZERO, None);
    let (server, drawn) = (&ds.server, &ds.drawn);
    let opts = RenderOptions {
        supertile: 1024,
        supertile_buffer: buffer,
        memory_budget: 0,
        ..quick_opts()
    };
    let r = renderer(&cache, server, opts, Keep::No);
    assert_eq!(r.renderable_range(LEVEL), Some((ROWS, COLS)));
    let st = render_batch(&r, &batch(true), &|_| {}).unwrap();
    let n = (ROWS.len() * COLS.len()) as u64;
    assert_eq!((st.rendered, st.kept, st.failed), (n, n, 0), "{st:?}");
    // K supertiles, K requests.
    let want = expected_supertiles();
    assert_eq!(
        ds.exports(),
        want.len(),
        "{n} tiles in {} supertiles",
        want.len()
    );
    let drawn = drawn.lock().unwrap().clone();
    for (rows, cols) in &want {
        let (bbox, w, h) = expected_request(rows, cols, buffer);
        let hit = drawn.iter().any(|d| {
            (d.width, d.height) == (w, h) && (0..4).all(|i| (d.bbox[i] - bbox[i]).abs() < 1e-6)
        });
        assert!(
            hit,
            "supertile rows {rows:?} cols {cols:?}: no request {bbox:?} {w}x{h}"
        );
    }
    // Every tile equals its crop, pixel for pixel; tiles on either side of a seam come from
    // different requests.
    let mut from = std::collections::HashMap::new();
    for row in ROWS {
        for col in COLS {
            let t = TileAddr::new(LEVEL, row, col);
            let stored = cache
                .tile(t)
                .unwrap()
                .unwrap_or_else(|| panic!("{t} not kept"));
            let (i, want) = crop_for(t, &drawn);
            assert!(
                decode(&stored, &t.to_string()) == want,
                "{t}: not the crop of request {i}"
            );
            from.insert((row, col), i);
        }
    }
    assert_ne!(from[&(3, 0)], from[&(4, 0)], "row seam 3|4");
    assert_ne!(from[&(1, 1)], from[&(1, 2)], "column seam 1|2");
    assert_eq!(from[&(1, 0)], from[&(3, 1)], "one supertile");
    // A second run finds every tile stored and asks nothing.
    let st = render_batch(&r, &batch(true), &|_| {}).unwrap();
    assert_eq!((st.rendered, st.skipped_stored), (0, n));
    assert_eq!(ds.exports(), want.len());
    // The service was asked for its maximum image size once, when the renderer was made; its 404
    // is not an error (4096 px assumed).
    assert_eq!(ds.info(), 1);
}

#[test]
fn a_level_of_24_tiles_in_4_supertiles_makes_4_requests_and_tiles_are_crops() {
    level_in_supertiles(0);
}

#[test]
fn a_margin_is_drawn_and_cut_away() {
    level_in_supertiles(24);
}

#[test]
fn concurrent_misses_of_one_supertile_make_one_request() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png32);
    let ds = drawing_server(Duration::from_millis(300), None);
    let (server, drawn) = (&ds.server, &ds.drawn);
    let opts = RenderOptions {
        supertile: 1024,
        ..quick_opts()
    };
    let r = renderer(&cache, server, opts, Keep::No);
    // The supertile of rows 4..7, columns 0..2: six tiles, one reader each, all at once.
    let tiles: Vec<TileAddr> = (4..7)
        .flat_map(|row| (0..2).map(move |col| TileAddr::new(LEVEL, row, col)))
        .collect();
    let barrier = Barrier::new(tiles.len());
    let got: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = tiles
            .iter()
            .map(|t| {
                let (r, barrier) = (&r, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    r.get(*t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ds.exports(), 1, "six misses of one supertile");
    let drawn = drawn.lock().unwrap().clone();
    for (t, b) in tiles.iter().zip(got) {
        let b = b.unwrap_or_else(|e| panic!("{t}: {e}"));
        assert!(decode(&b, "tile") == crop_for(*t, &drawn).1, "{t}");
    }
    // Served from memory afterwards; a tile of the next supertile makes the second request.
    r.get(TileAddr::new(LEVEL, 5, 1)).unwrap();
    assert_eq!(ds.exports(), 1);
    r.get(TileAddr::new(LEVEL, 5, 2)).unwrap();
    assert_eq!(ds.exports(), 2);
    assert_eq!(r.stats().rendered, 6 + 6);
}

#[test]
fn keeping_a_supertile_never_replaces_a_stored_tile() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png32);
    // A tile of the supertile rows 4..7, columns 0..2 is stored already, with other pixels.
    let mine = TileAddr::new(LEVEL, 6, 1);
    let stored = fake_map(W, H, &[1.0, 2.0, 3.0, 4.0]);
    cache.write_tiles(&[(mine, &stored[..])]).unwrap();
    let ds = drawing_server(Duration::ZERO, None);
    let (server, drawn) = (&ds.server, &ds.drawn);
    let opts = RenderOptions {
        supertile: 1024,
        ..quick_opts()
    };
    let r = renderer(&cache, server, opts, Keep::Cache);
    let asked = TileAddr::new(LEVEL, 4, 0);
    r.get(asked).unwrap();
    assert_eq!(ds.exports(), 1);
    let drawn = drawn.lock().unwrap().clone();
    for row in 4..7 {
        for col in 0..2 {
            let t = TileAddr::new(LEVEL, row, col);
            let got = cache
                .tile(t)
                .unwrap()
                .unwrap_or_else(|| panic!("{t} not kept"));
            if t == mine {
                assert_eq!(&got[..], &stored[..], "{t}: the stored tile was replaced");
            } else {
                assert!(decode(&got, "kept") == crop_for(t, &drawn).1, "{t}");
            }
        }
    }
    assert_eq!(r.stats().kept, 5);
}

#[test]
fn tile_by_tile_and_default_sizes_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let ds = drawing_server(Duration::ZERO, None);
    let server = &ds.server;
    let n = ROWS.len() * COLS.len();
    // --supertile 0: one request per tile; --supertile 1024: four; the default (conf.xml says no
    // antialiasing: 4096 px, 8 × 16 tiles): the whole level in one.
    for (i, (args, requests)) in [
        (&["--supertile", "0"][..], n),
        (&["--supertile", "1024"][..], 4),
        (&[][..], 1),
    ]
    .into_iter()
    .enumerate()
    {
        let cache = projected_cache(&d.path().join(i.to_string()), TileFormat::Png32);
        let (before, info) = (ds.exports(), ds.info());
        let out = crate::support::run_ok(
            Command::new(crate::support::bin())
                .arg("render")
                .arg(cache.root())
                .args(["--source", &spec(server), "--levels", "2", "--keep"])
                .args(args),
        );
        assert_eq!(ds.exports() - before, requests, "{args:?}: {out}");
        // Tile by tile, the service's maximum image size does not matter and is not asked.
        let probes = usize::from(requests != n);
        assert_eq!(ds.info() - info, probes, "{args:?}");
        assert!(
            out.contains(&format!("{n} rendered"))
                && out.contains(&format!("{requests} source calls")),
            "{args:?}: {out}"
        );
        let c = Cache::open(cache.root()).unwrap();
        assert_eq!(crate::support::all_tiles(&c).len(), n, "{args:?}");
    }
    // A margin needs supertiles; one too large for the source's 4096 px is refused by name.
    let cache = projected_cache(&d.path().join("x"), TileFormat::Png32);
    for (args, want) in [
        (
            &["--supertile", "0", "--supertile-buffer", "8"][..],
            "needs supertiles",
        ),
        (
            &["--supertile-buffer", "1900"][..],
            "--supertile-buffer 1900",
        ),
    ] {
        let out = crate::support::run(
            Command::new(crate::support::bin())
                .arg("render")
                .arg(cache.root())
                .args(["--source", &spec(server), "--levels", "2"])
                .args(args),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn the_mount_renders_the_supertile_of_a_miss_once_and_keeps_all_of_it() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png32);
    let ds = drawing_server(Duration::from_millis(300), None);
    let (server, drawn) = (&ds.server, &ds.drawn);
    let spec = spec(server);
    let tiles: Vec<TileAddr> = (1..4)
        .flat_map(|row| (2..4).map(move |col| TileAddr::new(LEVEL, row, col)))
        .collect();
    {
        // The mount's default supertile: 1024 px.
        let m = Mounted::start(
            cache.root(),
            &d.path().join("mnt"),
            &["--source", &spec, "--keep-rendered"],
        );
        let barrier = Barrier::new(tiles.len());
        let got: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = tiles
                .iter()
                .map(|t| {
                    let (p, barrier) = (m.path(&tile_path(*t, "png")), &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        std::fs::read(p)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(ds.exports(), 1, "six readers of one supertile's tiles");
        let drawn = drawn.lock().unwrap().clone();
        for (t, b) in tiles.iter().zip(got) {
            let b = b.unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(decode(&b, "tile") == crop_for(*t, &drawn).1, "{t}");
        }
    }
    // Unmounted: every tile of that supertile is in the bundles, and nothing else.
    let c = Cache::open(cache.root()).unwrap();
    let stored: HashSet<TileAddr> = crate::support::all_tiles(&c).into_keys().collect();
    assert_eq!(stored, tiles.iter().copied().collect::<HashSet<_>>());
}

/// A service advertising `maxImageWidth` 1000 and `maxImageHeight` 600 in its `f=json`
/// description (asked once per run) gets supertiles of at most 1000 × 600 px: with 512 × 256 px
/// tiles, 1 column × 2 rows each, whether `--supertile` is the default (4096) or asks 2048 (cut
/// down, with a warning naming the source's maximum).
#[test]
fn supertiles_are_capped_to_the_maximum_image_size_the_service_advertises() {
    let d = tempfile::tempdir().unwrap();
    let info = serde_json::json!({
        "currentVersion": 11.1,
        "singleFusedMapCache": false,
        "maxImageWidth": 1000,
        "maxImageHeight": 600,
    });
    let ds = drawing_server(Duration::ZERO, Some(info));
    // Origin-anchored bands of 600 / 256 = 2 rows and 1000 / 512 = 1 column, clipped to the
    // extent's rows 1..7 and columns 0..4: rows 1..2, 2..4, 4..6, 6..7 times 4 columns.
    let bands = |r: std::ops::Range<u32>, k: u32| (r.start / k..=(r.end - 1) / k).count();
    let want = bands(ROWS, 600 / H) * bands(COLS, 1000 / W);
    assert_eq!(want, 16);
    for (i, args) in [&[][..], &["--supertile", "2048"][..]]
        .into_iter()
        .enumerate()
    {
        let cache = projected_cache(&d.path().join(i.to_string()), TileFormat::Png32);
        let (info, exports) = (ds.info(), ds.exports());
        let seen = ds.drawn.lock().unwrap().len();
        let out = crate::support::run(
            Command::new(crate::support::bin())
                .arg("render")
                .arg(cache.root())
                .args(["--source", &spec(&ds.server), "--levels", "2", "--keep"])
                .args(args),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert_eq!(ds.info() - info, 1, "{args:?}: description asked once");
        assert_eq!(ds.exports() - exports, want, "{args:?}: {err}");
        let drawn = ds.drawn.lock().unwrap()[seen..].to_vec();
        for dr in &drawn {
            assert!(
                dr.width <= 1000 && dr.height <= 600,
                "{args:?}: asked {}x{} px",
                dr.width,
                dr.height
            );
        }
        assert!(
            err.contains("at most 1000 x 600 px") && err.contains("512 x 512 px are drawn"),
            "{args:?}: no warning: {err}"
        );
        let c = Cache::open(cache.root()).unwrap();
        for row in ROWS {
            for col in COLS {
                let t = TileAddr::new(LEVEL, row, col);
                let b = c.tile(t).unwrap().unwrap_or_else(|| panic!("{t} missing"));
                assert!(decode(&b, "tile") == crop_for(t, &drawn).1, "{args:?}: {t}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MapServer: one polygon covering the world, labelled "X" in red. MapServer places a polygon's
// label at the centre of the part of it inside the image, so tile by tile every tile gets a label
// of its own; in supertiles, every supertile gets one.

const MAPSERV: &str = "/usr/lib/cgi-bin/mapserv";
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

struct LabelServer {
    server: TestServer,
    _dir: tempfile::TempDir,
}

fn label_server() -> LabelServer {
    label_server_with(None)
}

/// The label map served by `mapserv`, with `MAXSIZE maxsize` in the mapfile when given.
fn label_server_with(maxsize: Option<u32>) -> LabelServer {
    assert!(
        Path::new(MAPSERV).is_file(),
        "{MAPSERV} missing: install cgi-mapserver"
    );
    assert!(
        Path::new(FONT).is_file(),
        "{FONT} missing: install fonts-dejavu-core"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("fonts.txt"), format!("sans {FONT}\n")).unwrap();
    let map = format!(
        r#"MAP
  NAME "labels"
  EXTENT -180 -90 180 90
  SIZE 256 256
  {}
  FONTSET "{}"
  PROJECTION "init=epsg:4326" END
  OUTPUTFORMAT NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" END
  WEB METADATA "wms_title" "labels" "wms_srs" "EPSG:4326" "wms_enable_request" "*"
    "wms_onlineresource" "http://127.0.0.1/cgi-bin/mapserv?map=LABELS&" END END
  LAYER
    NAME "land"
    TYPE POLYGON
    STATUS ON
    PROJECTION "init=epsg:4326" END
    FEATURE POINTS -179 -89 179 -89 179 89 -179 89 -179 -89 END TEXT "X" END
    CLASS
      STYLE OUTLINECOLOR 0 0 255 END
      LABEL TYPE TRUETYPE FONT "sans" SIZE 14 COLOR 255 0 0 PARTIALS FALSE POSITION CC END
    END
  END
END
"#,
        maxsize.map_or(String::new(), |m| format!("MAXSIZE {m}")),
        p.join("fonts.txt").display()
    );
    std::fs::write(p.join("labels.map"), map).unwrap();
    let conf = format!(
        "CONFIG\n  ENV\n    MS_MAP_PATTERN \"^{}/\"\n  END\n  MAPS\n    LABELS \"{}\"\n  END\nEND\n",
        p.display(),
        p.join("labels.map").display()
    );
    std::fs::write(p.join("mapserver.conf"), conf).unwrap();
    let server = cgi_server(
        MAPSERV.into(),
        vec![(
            "MAPSERVER_CONFIG_FILE".into(),
            p.join("mapserver.conf").display().to_string(),
        )],
    );
    LabelServer { server, _dir: dir }
}

/// Red label pixels: strongly red and mostly opaque.
fn is_label(p: &image::Rgba<u8>) -> bool {
    p[0] > 150 && p[1] < 100 && p[2] < 100 && p[3] > 128
}

/// Connected groups (8-neighbours) of label pixels: one per drawn "X".
fn labels(img: &RgbaImage) -> Vec<(u32, u32)> {
    let (w, h) = img.dimensions();
    let mut seen = vec![false; (w * h) as usize];
    let mut found = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if seen[(y * w + x) as usize] || !is_label(img.get_pixel(x, y)) {
                continue;
            }
            found.push((x, y));
            let mut stack = vec![(x, y)];
            seen[(y * w + x) as usize] = true;
            while let Some((x, y)) = stack.pop() {
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                            continue;
                        }
                        let (nx, ny) = (nx as u32, ny as u32);
                        let i = (ny * w + nx) as usize;
                        if !seen[i] && is_label(img.get_pixel(nx, ny)) {
                            seen[i] = true;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
        }
    }
    found
}

/// Level 2 of the geographic scheme (8 × 4 tiles of 256 px) rendered through `bundlefs render`
/// with `--supertile PX`, as one 2048 × 1024 mosaic.
fn rendered_level(ls: &LabelServer, dir: &Path, supertile: &str) -> (RgbaImage, u64) {
    let scheme = geographic_scheme(TileFormat::Png);
    let world = Envelope {
        xmin: -180.0,
        ymin: -90.0,
        xmax: 180.0,
        ymax: 90.0,
    };
    let root = dir.join(format!("c{supertile}"));
    let cache = Cache::create(&root, &scheme, Some(world)).unwrap();
    let src = format!(
        "wms:{}/cgi-bin/mapserv?map=LABELS&LAYERS=land&VERSION=1.1.1",
        ls.server.url()
    );
    let before = ls.server.requests() as u64;
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&root)
            .args([
                "--source",
                &src,
                "--levels",
                "2",
                "--keep",
                "--supertile",
                supertile,
            ]),
    );
    let mut mosaic = RgbaImage::new(8 * 256, 4 * 256);
    for row in 0..4 {
        for col in 0..8 {
            let t = TileAddr::new(2, row, col);
            let b = cache
                .tile(t)
                .unwrap()
                .unwrap_or_else(|| panic!("{t} missing"));
            let img = decode(&b, &t.to_string());
            image::imageops::replace(
                &mut mosaic,
                &img,
                i64::from(col) * 256,
                i64::from(row) * 256,
            );
        }
    }
    (mosaic, ls.server.requests() as u64 - before)
}

#[test]
fn mapserver_draws_each_label_once_per_supertile() {
    let ls = label_server();
    let d = tempfile::tempdir().unwrap();
    // Tile by tile: 32 requests, and a label in every tile.
    let (tiles, requests) = rendered_level(&ls, d.path(), "0");
    assert_eq!(requests, 32);
    assert_eq!(labels(&tiles).len(), 32, "one label per tile");
    // Supertiles of 512 px (2 × 2 tiles): 8 requests, one label each, at the supertile's centre,
    // where four tiles meet: drawn whole, once, across the seams.
    // One more request: the GetCapabilities asked once for MapServer's maximum image size.
    let (sup, requests) = rendered_level(&ls, d.path(), "512");
    assert_eq!(requests, 1 + 8);
    let found = labels(&sup);
    assert_eq!(found.len(), 8, "one label per supertile: {found:?}");
    let blocks: HashSet<(u32, u32)> = found.iter().map(|(x, y)| (x / 512, y / 512)).collect();
    assert_eq!(blocks.len(), 8, "each supertile holds one: {found:?}");
    // The mosaic is what MapServer draws for each supertile's area, pixel for pixel.
    for (bx, by) in blocks {
        let (xmin, ymax) = (-180.0 + f64::from(bx) * 90.0, 90.0 - f64::from(by) * 90.0);
        let url = format!(
            "{}/cgi-bin/mapserv?map=LABELS&LAYERS=land&SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap\
             &STYLES=&SRS=EPSG:4326&BBOX={xmin},{},{},{ymax}&WIDTH=512&HEIGHT=512\
             &FORMAT=image/png&TRANSPARENT=TRUE",
            ls.server.url(),
            ymax - 90.0,
            xmin + 90.0
        );
        let direct = decode(&fetch(&url), &url);
        let mine = image::imageops::crop_imm(&sup, bx * 512, by * 512, 512, 512).to_image();
        assert!(mine == direct, "supertile {bx},{by} differs from {url}");
    }
}

/// What the proxy saw: each request's REQUEST, WIDTH and HEIGHT (0 when absent).
type Seen = Arc<Mutex<Vec<(String, u32, u32)>>>;

/// A proxy in front of `upstream` that records each request's REQUEST, WIDTH and HEIGHT.
fn recording_proxy(upstream: String) -> (TestServer, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let server = TestServer::start(move |req| {
        let n = |k: &str| req.param(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let what = req.param("REQUEST").unwrap_or("").to_string();
        s.lock().unwrap().push((what, n("WIDTH"), n("HEIGHT")));
        let url = format!("{upstream}{}?{}", req.path, req.raw_query);
        let mut resp = match agent.get(&url).call() {
            Ok(r) => r,
            Err(e) => return Response::status(502, &format!("{url}: {e}")),
        };
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let body = resp.body_mut().read_to_vec().unwrap_or_default();
        Response {
            status,
            content_type: ct,
            body,
        }
    });
    (server, seen)
}

/// MapServer with `MAXSIZE 2048` in its mapfile advertises it in its 1.3.0 capabilities (and
/// refuses a larger GetMap); level 3 of the geographic scheme plus one level (16 × 8 tiles of
/// 256 px, 4096 × 2048 px) rendered with `render`'s default 4096-px supertile through a 1.1.1 URL
/// is asked in supertiles of at most 2048 px: two of 8 × 8 tiles, after one GetCapabilities.
#[test]
fn mapserver_maxsize_caps_the_supertiles() {
    let ls = label_server_with(Some(2048));
    let (proxy, seen) = recording_proxy(ls.server.url());
    // The peer's own limit, asked directly: a 4096-px GetMap is an exception naming 2048.
    let direct = fetch(&format!(
        "{}/cgi-bin/mapserv?map=LABELS&LAYERS=land&SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap\
         &STYLES=&SRS=EPSG:4326&BBOX=-180,-90,180,90&WIDTH=4096&HEIGHT=2048&FORMAT=image/png",
        ls.server.url()
    ));
    let text = String::from_utf8_lossy(&direct);
    assert!(
        text.contains("ServiceException") && text.contains("2048"),
        "{text}"
    );
    let mut scheme = geographic_scheme(TileFormat::Png);
    let mut lod = scheme.lods[2].clone();
    lod.level = 3;
    lod.resolution /= 2.0;
    scheme.lods.push(lod);
    let world = Envelope {
        xmin: -180.0,
        ymin: -90.0,
        xmax: 180.0,
        ymax: 90.0,
    };
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("c");
    Cache::create(&root, &scheme, Some(world)).unwrap();
    let src = format!(
        "wms:{}/cgi-bin/mapserv?map=LABELS&LAYERS=land&VERSION=1.1.1",
        proxy.url()
    );
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&root)
            .args(["--source", &src, "--levels", "3", "--keep"]),
    );
    let seen = seen.lock().unwrap().clone();
    let caps = seen.iter().filter(|(r, ..)| r == "GetCapabilities").count();
    let maps: Vec<(u32, u32)> = seen
        .iter()
        .filter(|(r, ..)| r == "GetMap")
        .map(|(_, w, h)| (*w, *h))
        .collect();
    assert_eq!((caps, seen.len()), (1, 1 + maps.len()), "{seen:?}");
    assert!(
        maps.iter().all(|&(w, h)| w <= 2048 && h <= 2048),
        "{maps:?}"
    );
    assert_eq!(maps, vec![(2048, 2048), (2048, 2048)]);
    let c = Cache::open(&root).unwrap();
    assert_eq!(crate::support::all_tiles(&c).len(), 16 * 8);
}
