//! Rendering missing tiles: the ArcGIS export source against a local server that checks every
//! parameter, single-flight, timeouts, retries and bad answers; the WMS source against a real
//! MapServer (cgi-mapserver) run as CGI on 127.0.0.1; `resample` against mosaics of stored tiles;
//! and the `bundlefs render` command.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::support::http::{cgi_server, Request, Response, TestServer};
use crate::support::mount::Mounted;
use bundlefs::cache::Cache;
use bundlefs::format::conf::{Envelope, Lod, StorageFormat, TileFormat, TileScheme};
use bundlefs::format::sniff::{sniff, ImageKind};
use bundlefs::format::TileAddr;
use bundlefs::fs::ToErrno;
use bundlefs::render::label::LabelSource;
use bundlefs::render::resample::ResampleSource;
use bundlefs::render::{HttpOptions, Keep, RenderOptions, Renderer, SourceSpec, TileSource};
use bundlefs::Error;
use image::imageops::{self, FilterType};
use image::{Rgba, RgbaImage};

// ---------------------------------------------------------------------------------------------
// A projected scheme with deliberately unusual numbers (non-square tiles, DPI 120, WKID 3035), so
// a swapped width/height, a default DPI or a wrong SR shows.

pub(crate) const X0: f64 = -5_000_000.0;
pub(crate) const Y0: f64 = 10_000_000.0;
pub(crate) const W: u32 = 512;
pub(crate) const H: u32 = 256;
pub(crate) const RES: [f64; 3] = [10_000.0, 5_000.0, 2_500.0];
pub(crate) const EXPORT_PATH: &str = "/arcgis/rest/services/Test/MapServer/export";

pub(crate) fn projected_scheme(format: TileFormat) -> TileScheme {
    TileScheme {
        wkt: None,
        wkid: Some(3035),
        latest_wkid: Some(3035),
        origin_x: X0,
        origin_y: Y0,
        tile_cols: W,
        tile_rows: H,
        dpi: 120,
        lods: RES
            .iter()
            .enumerate()
            .map(|(i, r)| Lod {
                level: i as u8,
                scale: r * 120.0 * 39.37,
                resolution: *r,
            })
            .collect(),
        compression_quality: if format == TileFormat::Jpeg { 90 } else { 0 },
        tile_format: format,
        storage: StorageFormat::CompactV2,
        packet_size: 128,
    }
}

pub(crate) const EXTENT: Envelope = Envelope {
    xmin: -4_000_000.0,
    ymin: 6_000_000.0,
    xmax: 0.0,
    ymax: 9_000_000.0,
};

/// Tile bounds straight from the formula in FORMATS.md.
fn expected_bounds(t: TileAddr) -> [f64; 4] {
    let r = RES[t.level as usize];
    let xmin = X0 + f64::from(t.col) * f64::from(W) * r;
    let ymax = Y0 - f64::from(t.row) * f64::from(H) * r;
    [xmin, ymax - f64::from(H) * r, xmin + f64::from(W) * r, ymax]
}

/// The image the fake export server draws for a bbox: a gradient whose colours depend on the
/// bbox, with varying alpha (so a PNG32 cache must get it untouched).
pub(crate) fn fake_map(w: u32, h: u32, bbox: &[f64]) -> Vec<u8> {
    let k = (bbox.iter().map(|v| v.abs()).sum::<f64>() / 1000.0) as u32;
    let img = RgbaImage::from_fn(w, h, |x, y| {
        Rgba([
            ((x + k) % 251) as u8,
            ((y * 3 + k / 7) % 241) as u8,
            (k % 256) as u8,
            (128 + (x + y) % 128) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub(crate) fn parse_bbox(s: &str) -> Option<Vec<f64>> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == 4).then_some(v)
}

/// Checks an export request against what the seed documents, except bbox (checked per tile by
/// the caller). Returns the problems.
pub(crate) fn check_export(req: &Request, format: &str, transparent: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if req.path != EXPORT_PATH {
        bad.push(format!("path {:?}", req.path));
    }
    let want = [
        ("bboxSR", "3035"),
        ("imageSR", "3035"),
        ("size", "512,256"),
        ("dpi", "120"),
        ("format", format),
        ("transparent", transparent),
        ("f", "image"),
        ("layers", "show:0,2"),
    ];
    for (k, v) in want {
        if req.params.get(k).map(String::as_str) != Some(v) {
            bad.push(format!("{k}={:?}, want {v:?}", req.params.get(k)));
        }
    }
    let mut names = req.names.clone();
    names.sort();
    let mut expected: Vec<String> = want.iter().map(|(k, _)| k.to_string()).collect();
    expected.push("bbox".into());
    expected.sort();
    if names != expected {
        bad.push(format!("parameters {names:?}, want exactly {expected:?}"));
    }
    if req.params.get("bbox").and_then(|b| parse_bbox(b)).is_none() {
        bad.push(format!(
            "bbox {:?} is not 4 numbers",
            req.params.get("bbox")
        ));
    }
    bad
}

/// A fake map service: validates every request, records it, answers with `fake_map`.
pub(crate) struct FakeExport {
    server: TestServer,
    seen: Arc<Mutex<Vec<Request>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

fn fake_export(format: &'static str, transparent: &'static str, delay: Duration) -> FakeExport {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let (s, p) = (seen.clone(), problems.clone());
    let server = TestServer::start(move |req| {
        s.lock().unwrap().push(req.clone());
        let bad = check_export(req, format, transparent);
        if !bad.is_empty() {
            p.lock().unwrap().extend(bad.iter().cloned());
            return Response::status(400, &bad.join("; "));
        }
        std::thread::sleep(delay);
        let bbox = parse_bbox(&req.params["bbox"]).unwrap();
        Response::ok("image/png", fake_map(W, H, &bbox))
    });
    FakeExport {
        server,
        seen,
        problems,
    }
}

pub(crate) fn projected_cache(dir: &Path, format: TileFormat) -> Arc<Cache> {
    Arc::new(Cache::create(dir.join("cache"), &projected_scheme(format), Some(EXTENT)).unwrap())
}

pub(crate) fn quick_opts() -> RenderOptions {
    RenderOptions {
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        ..RenderOptions::default()
    }
}

pub(crate) fn http_opts(timeout: Duration) -> HttpOptions {
    HttpOptions {
        timeout,
        ..HttpOptions::default()
    }
}

fn arcgis_renderer(cache: &Arc<Cache>, base: &str, opts: RenderOptions) -> Renderer {
    let spec: SourceSpec =
        format!("arcgis:{base}/arcgis/rest/services/Test/MapServer?layers=show:0,2")
            .parse()
            .unwrap();
    let src = spec.build(cache, &http_opts(opts.timeout)).unwrap();
    Renderer::new(cache.clone(), src, Keep::No, opts).unwrap()
}

#[test]
fn arcgis_export_carries_every_parameter_and_exact_bounds() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png32);
    let fake = fake_export("png32", "true", Duration::ZERO);
    let r = arcgis_renderer(&cache, &fake.server.url(), quick_opts());
    let tiles = [
        TileAddr::new(0, 0, 0),
        TileAddr::new(0, 1, 0),
        TileAddr::new(1, 1, 0),
        TileAddr::new(1, 3, 1),
        TileAddr::new(2, 4, 2),
        TileAddr::new(2, 6, 3),
    ];
    for t in tiles {
        assert!(r.renderable(t), "{t}");
        let got = r.get(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        // PNG32 cache, PNG answer: the server's bytes, untouched.
        assert_eq!(
            *got,
            fake_map(W, H, &expected_bounds(t)),
            "{t}: not the image for its bbox"
        );
    }
    assert_eq!(*fake.problems.lock().unwrap(), Vec::<String>::new());
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), tiles.len());
    for (req, t) in seen.iter().zip(tiles) {
        let bbox = parse_bbox(&req.params["bbox"]).unwrap();
        let want = expected_bounds(t);
        for i in 0..4 {
            assert!(
                (bbox[i] - want[i]).abs() <= 1e-6,
                "{t}: bbox {bbox:?}, want {want:?}"
            );
        }
    }
    // Connection reuse: six sequential requests over one connection.
    assert_eq!(fake.server.connections(), 1);
    // Outside levels or extent: ENOENT, and the server is not asked.
    for t in [
        TileAddr::new(3, 0, 0),
        TileAddr::new(0, 2, 0),
        TileAddr::new(0, 0, 1),
        TileAddr::new(2, 0, 0),
    ] {
        assert!(!r.renderable(t), "{t}");
        assert_eq!(r.get(t).unwrap_err().errno(), libc::ENOENT, "{t}");
    }
    assert_eq!(fake.server.requests(), tiles.len());
}

#[test]
fn arcgis_png_answer_is_reencoded_for_a_jpeg_cache() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Jpeg);
    // A server that ignores format=jpg and sends PNG anyway.
    let fake = fake_export("jpg", "false", Duration::ZERO);
    let r = arcgis_renderer(&cache, &fake.server.url(), quick_opts());
    let t = TileAddr::new(1, 2, 1);
    let got = r.get(t).unwrap();
    assert_eq!(sniff(&got), Some(ImageKind::Jpeg));
    let want = image::load_from_memory(&fake_map(W, H, &expected_bounds(t)))
        .unwrap()
        .to_rgb8();
    let got = image::load_from_memory(&got).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (W, H));
    let mean: f64 = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / got.as_raw().len() as f64;
    assert!(
        mean < 4.0,
        "JPEG differs from the PNG by {mean} per channel on average"
    );
    assert_eq!(*fake.problems.lock().unwrap(), Vec::<String>::new());
}

#[test]
fn sixteen_concurrent_readers_make_one_request() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png);
    let fake = fake_export("png32", "true", Duration::from_millis(300));
    let r = arcgis_renderer(&cache, &fake.server.url(), quick_opts());
    let t = TileAddr::new(2, 5, 1);
    let barrier = Barrier::new(16);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    r.get(t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        fake.server.requests(),
        1,
        "16 readers of one tile → one request"
    );
    let want = fake_map(W, H, &expected_bounds(t));
    for res in results {
        assert_eq!(*res.unwrap(), want);
    }
    let st = r.stats();
    assert_eq!(st.source_calls, 1);
    assert_eq!(st.joined + st.memory_hits, 15, "{st:?}");
}

/// A server whose answers are chosen per request number.
fn scripted(answers: impl Fn(usize) -> Response + Send + Sync + 'static) -> TestServer {
    let n = AtomicUsize::new(0);
    TestServer::start(move |_| answers(n.fetch_add(1, Ordering::SeqCst)))
}

#[test]
fn hanging_server_fails_within_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png);
    // Hangs 4 s per request (bounded, so the server thread ends by itself).
    let server = scripted(|_| {
        std::thread::sleep(Duration::from_secs(4));
        Response::status(500, "late")
    });
    let opts = RenderOptions {
        timeout: Duration::from_millis(400),
        retries: 1,
        backoff: Duration::from_millis(10),
        ..RenderOptions::default()
    };
    let r = arcgis_renderer(&cache, &server.url(), opts);
    let started = Instant::now();
    let e = r.get(TileAddr::new(0, 0, 0)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        e.to_string().contains("/MapServer/export?"),
        "error names the URL: {e}"
    );
    // Two attempts of 0.4 s and one 10 ms pause; generous slack for a loaded machine.
    assert!(took < Duration::from_millis(1600), "took {took:?}");
    assert!(
        took >= Duration::from_millis(800),
        "took {took:?}: no retry?"
    );
    assert_eq!(server.requests(), 2);
}

#[test]
fn server_errors_are_retried_client_errors_are_not() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png);
    let server = scripted(|n| match n {
        0 => Response::status(503, "busy"),
        1 => Response::ok("image/png", fake_map(W, H, &[1.0, 2.0, 3.0, 4.0])),
        _ => Response::status(404, "no such service"),
    });
    let r = arcgis_renderer(&cache, &server.url(), quick_opts());
    let got = r.get(TileAddr::new(0, 0, 0)).unwrap();
    assert_eq!(*got, fake_map(W, H, &[1.0, 2.0, 3.0, 4.0]));
    assert_eq!(server.requests(), 2, "503 then success");
    let e = r.get(TileAddr::new(0, 1, 0)).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(
        e.to_string().contains("HTTP 404") && e.to_string().contains("no such service"),
        "{e}"
    );
    assert_eq!(server.requests(), 3, "a 404 is not retried");
}

#[test]
fn bad_answers_are_errors_and_not_cached_as_success() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png);
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let good = fake_map(W, H, &[0.0; 4]);
    let g = good.clone();
    // Answers made beforehand, so the server answers in no time and the negative TTL is not spent
    // drawing (on a loaded machine, drawing took 200 ms a request).
    let wrong_size = fake_map(W + 1, H, &[0.0; 4]);
    let mut truncated = fake_map(W, H, &[0.0; 4]);
    truncated.truncate(truncated.len() / 2);
    let server = scripted(move |n| {
        if f.load(Ordering::SeqCst) {
            return Response::ok("image/png", g.clone());
        }
        match n % 3 {
            // ArcGIS reports errors as JSON with status 200.
            0 => Response::ok(
                "text/plain",
                br#"{"error":{"code":498,"message":"Invalid Token"}}"#.to_vec(),
            ),
            1 => Response::ok("image/png", wrong_size.clone()),
            _ => Response::ok("image/png", truncated.clone()),
        }
    });
    let opts = RenderOptions {
        negative_ttl: Duration::from_millis(1000),
        ..quick_opts()
    };
    let r = arcgis_renderer(&cache, &server.url(), opts);
    let t = [
        TileAddr::new(1, 0, 0),
        TileAddr::new(1, 1, 0),
        TileAddr::new(1, 2, 0),
    ];
    let msgs: Vec<String> = t
        .iter()
        .map(|t| r.get(*t).unwrap_err().to_string())
        .collect();
    assert!(
        msgs[0].contains("not a PNG or JPEG") && msgs[0].contains("Invalid Token"),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].contains("513x256") && msgs[1].contains("512x256"),
        "{}",
        msgs[1]
    );
    assert!(msgs[2].contains("cannot decode"), "{}", msgs[2]);
    assert_eq!(server.requests(), 3, "bad images are not retried");
    // Within the negative TTL: still EIO, without asking the server.
    let e = r.get(t[0]).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(server.requests(), 3);
    // After it: asked again, and a good answer is served.
    fixed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1050));
    for tile in t {
        assert_eq!(*r.get(tile).unwrap(), good);
    }
    assert_eq!(server.requests(), 6);
}

// ---------------------------------------------------------------------------------------------
// WMS against MapServer.

const MAPSERV: &str = "/usr/lib/cgi-bin/mapserv";

/// The test raster: 360 × 180 one-degree pixels over the world; red encodes the column, green the
/// row, blue a 10° checkerboard.
fn raster_value(col: u32, row: u32) -> [u8; 3] {
    [
        (col * 255 / 359) as u8,
        (row * 255 / 179) as u8,
        if (col / 10 + row / 10).is_multiple_of(2) {
            0
        } else {
            200
        },
    ]
}

struct MapServer {
    server: TestServer,
    _dir: tempfile::TempDir,
}

/// Writes the raster (PNG → GeoTIFF with gdal_translate), a mapfile and a MapServer config, and
/// serves `mapserv` as CGI on 127.0.0.1.
fn mapserver() -> MapServer {
    assert!(
        Path::new(MAPSERV).is_file(),
        "{MAPSERV} missing: install Debian's cgi-mapserver (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let img = image::RgbImage::from_fn(360, 180, |x, y| image::Rgb(raster_value(x, y)));
    img.save(p.join("world.png")).unwrap();
    crate::support::run_ok(
        Command::new("gdal_translate")
            .args([
                "-q",
                "-of",
                "GTiff",
                "-a_srs",
                "EPSG:4326",
                "-a_ullr",
                "-180",
                "90",
                "180",
                "-90",
            ])
            .arg(p.join("world.png"))
            .arg(p.join("world.tif")),
    );
    let map = format!(
        r#"MAP
  NAME "bundlefs-test"
  EXTENT -180 -90 180 90
  SIZE 256 256
  PROJECTION "init=epsg:4326" END
  OUTPUTFORMAT NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" END
  OUTPUTFORMAT NAME "jpeg" DRIVER "AGG/JPEG" MIMETYPE "image/jpeg" IMAGEMODE RGB EXTENSION "jpg" END
  WEB METADATA "wms_title" "bundlefs test" "wms_srs" "EPSG:4326 EPSG:3857" "wms_enable_request" "*" END END
  LAYER
    NAME "world"
    TYPE RASTER
    STATUS ON
    DATA "{}"
    PROJECTION "init=epsg:4326" END
    METADATA "wms_title" "world" END
  END
END
"#,
        p.join("world.tif").display()
    );
    std::fs::write(p.join("world.map"), map).unwrap();
    let conf = format!(
        "CONFIG\n  ENV\n    MS_MAP_PATTERN \"^{}/\"\n  END\n  MAPS\n    WORLD \"{}\"\n  END\nEND\n",
        p.display(),
        p.join("world.map").display()
    );
    std::fs::write(p.join("mapserver.conf"), conf).unwrap();
    let server = cgi_server(
        MAPSERV.into(),
        vec![(
            "MAPSERVER_CONFIG_FILE".into(),
            p.join("mapserver.conf").display().to_string(),
        )],
    );
    MapServer { server, _dir: dir }
}

/// ArcGIS's geographic scheme on WGS 84: 2 × 1 tiles of 256 px at level 0.
pub(crate) fn geographic_scheme(format: TileFormat) -> TileScheme {
    TileScheme {
        wkt: None,
        wkid: Some(4326),
        latest_wkid: Some(4326),
        origin_x: -180.0,
        origin_y: 90.0,
        tile_cols: 256,
        tile_rows: 256,
        dpi: 96,
        lods: (0..3)
            .map(|l| Lod {
                level: l,
                scale: 0.0,
                resolution: 0.703125 / f64::from(1u32 << l),
            })
            .collect(),
        compression_quality: 90,
        tile_format: format,
        storage: StorageFormat::CompactV2,
        packet_size: 128,
    }
}

pub(crate) fn fetch(url: &str) -> Vec<u8> {
    let mut resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    resp.body_mut().read_to_vec().unwrap()
}

pub(crate) fn decode(bytes: &[u8], what: &str) -> RgbaImage {
    image::load_from_memory(bytes)
        .unwrap_or_else(|e| {
            panic!(
                "{what}: {e}: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )
        })
        .to_rgba8()
}

/// Checks sampled pixels of a geographic tile against the raster's values at their centres
/// (one raster pixel of slack for nearest-neighbour rounding at cell edges).
fn assert_georeferenced(img: &RgbaImage, scheme: &TileScheme, t: TileAddr) {
    let res = scheme.lod(t.level).unwrap().resolution;
    let xmin = -180.0 + f64::from(t.col) * 256.0 * res;
    let ymax = 90.0 - f64::from(t.row) * 256.0 * res;
    for py in (3..256).step_by(25) {
        for px in (5..256).step_by(25) {
            let lon = xmin + (f64::from(px) + 0.5) * res;
            let lat = ymax - (f64::from(py) + 0.5) * res;
            let (col, row) = ((lon + 180.0).floor() as u32, (90.0 - lat).floor() as u32);
            let got = img.get_pixel(px, py).0;
            let ok = |c: usize, v: u32, max: u32| {
                (v.saturating_sub(1)..=(v + 1).min(max)).any(|v2| {
                    let want = if c == 0 {
                        raster_value(v2, 0)[0]
                    } else {
                        raster_value(0, v2)[1]
                    };
                    want == got[c]
                })
            };
            assert!(
                ok(0, col, 359) && ok(1, row, 179) && got[3] == 255,
                "{t} pixel ({px},{py}) at lon {lon} lat {lat}: got {got:?}, want about {:?}",
                raster_value(col, row)
            );
        }
    }
}

fn wms_case(version: &str) {
    wms_case_via(version, false)
}

/// `through_mount`: read each tile from `bundlefs mount --source wms:…` instead of the Renderer.
fn wms_case_via(version: &str, through_mount: bool) {
    let ms = mapserver();
    let d = tempfile::tempdir().unwrap();
    let scheme = geographic_scheme(TileFormat::Png);
    let extent = Envelope {
        xmin: -180.0,
        ymin: -90.0,
        xmax: 180.0,
        ymax: 90.0,
    };
    let cache = Arc::new(Cache::create(d.path().join("c"), &scheme, Some(extent)).unwrap());
    let base = format!("{}/cgi-bin/mapserv?map=WORLD&LAYERS=world", ms.server.url());
    let spec: SourceSpec = format!("wms:{base}&VERSION={version}").parse().unwrap();
    let src = spec
        .build(&cache, &http_opts(Duration::from_secs(20)))
        .unwrap();
    let r = Renderer::new(cache.clone(), src, Keep::No, RenderOptions::default()).unwrap();
    let mounted = through_mount.then(|| {
        Mounted::start(
            &d.path().join("c"),
            &d.path().join("mnt"),
            // Tile by tile, so each tile is compared with its own GetMap (supertiles:
            // supertiles.rs).
            &[
                "--source",
                &format!("wms:{base}&VERSION={version}"),
                "--supertile",
                "0",
            ],
        )
    });
    for t in [
        TileAddr::new(0, 0, 0),
        TileAddr::new(0, 0, 1),
        TileAddr::new(1, 1, 2),
        TileAddr::new(2, 1, 5),
    ] {
        let got = match &mounted {
            Some(m) => std::fs::read(m.path(&tile_path(t, "png")))
                .unwrap_or_else(|e| panic!("{t} through the mount: {e}")),
            None => r.get(t).unwrap_or_else(|e| panic!("{t}: {e}")).to_vec(),
        };
        // The same map asked for directly, with the bbox written out here.
        let res = scheme.lod(t.level).unwrap().resolution;
        let (xmin, ymax) = (
            -180.0 + f64::from(t.col) * 256.0 * res,
            90.0 - f64::from(t.row) * 256.0 * res,
        );
        let (xmax, ymin) = (xmin + 256.0 * res, ymax - 256.0 * res);
        let (crs, bbox) = if version == "1.3.0" {
            ("CRS", format!("{ymin},{xmin},{ymax},{xmax}"))
        } else {
            ("SRS", format!("{xmin},{ymin},{xmax},{ymax}"))
        };
        let direct_url = format!(
            "{base}&SERVICE=WMS&VERSION={version}&REQUEST=GetMap&STYLES=&{crs}=EPSG:4326&BBOX={bbox}\
             &WIDTH=256&HEIGHT=256&FORMAT=image/png&TRANSPARENT=TRUE"
        );
        let direct = decode(&fetch(&direct_url), &direct_url);
        let mine = decode(&got, &format!("rendered {t}"));
        assert!(
            mine == direct,
            "{t} (WMS {version}): rendered tile differs from {direct_url}"
        );
        assert_georeferenced(&mine, &scheme, t);
    }
}

#[test]
fn wms_111_tiles_match_mapserver_getmap() {
    wms_case("1.1.1");
}

#[test]
fn wms_130_tiles_match_mapserver_getmap_with_lat_lon_axis_order() {
    wms_case("1.3.0");
}

#[test]
fn wms_web_mercator_jpeg_cache_reencodes_png_answers() {
    let ms = mapserver();
    let d = tempfile::tempdir().unwrap();
    let scheme = TileScheme::web_mercator(2, TileFormat::Jpeg);
    let cache = Arc::new(Cache::create(d.path().join("c"), &scheme, None).unwrap());
    let base = format!(
        "{}/cgi-bin/mapserv?map=WORLD&LAYERS=world&FORMAT=image/png",
        ms.server.url()
    );
    let spec: SourceSpec = format!("wms:{base}").parse().unwrap();
    let src = spec
        .build(&cache, &http_opts(Duration::from_secs(20)))
        .unwrap();
    let r = Renderer::new(cache, src, Keep::No, RenderOptions::default()).unwrap();
    let t = TileAddr::new(1, 0, 1);
    let got = r.get(t).unwrap();
    assert_eq!(sniff(&got), Some(ImageKind::Jpeg), "JPEG cache gets JPEG");
    let b = scheme.tile_bbox(t).unwrap();
    let direct_url = format!(
        "{base}&SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&STYLES=&CRS=EPSG:3857&BBOX={},{},{},{}\
         &WIDTH=256&HEIGHT=256&TRANSPARENT=FALSE",
        b.xmin, b.ymin, b.xmax, b.ymax
    );
    let direct = decode(&fetch(&direct_url), &direct_url);
    let mine = decode(&got, "rendered");
    let mean: f64 = mine
        .pixels()
        .zip(direct.pixels())
        .map(|(a, b)| (0..3).map(|c| f64::from(a[c].abs_diff(b[c]))).sum::<f64>() / 3.0)
        .sum::<f64>()
        / f64::from(256 * 256);
    assert!(
        mean < 4.0,
        "JPEG tile differs from the PNG GetMap by {mean} on average"
    );
    // A layer MapServer doesn't have: its XML exception becomes EIO naming the server's answer.
    let bad: SourceSpec = format!(
        "wms:{}/cgi-bin/mapserv?map=WORLD&LAYERS=nope",
        ms.server.url()
    )
    .parse()
    .unwrap();
    let c2 = Arc::new(Cache::create(d.path().join("c2"), &scheme, None).unwrap());
    let src = bad.build(&c2, &http_opts(Duration::from_secs(20))).unwrap();
    let r = Renderer::new(c2, src, Keep::No, RenderOptions::default()).unwrap();
    let e = r.get(t).unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// resample

/// A Web Mercator PNG cache (levels 0–4 in conf.xml, extent: the northern half) holding labelled
/// tiles at level 1 (all four) and the four level-3 children of level-2 tile (1, 2).
fn resample_cache(dir: &Path) -> (Arc<Cache>, TileScheme) {
    let scheme = TileScheme::web_mercator(4, TileFormat::Png);
    let o = bundlefs::format::conf::WEB_MERCATOR_ORIGIN;
    let extent = Envelope {
        xmin: -o,
        ymin: 1000.0,
        xmax: o,
        ymax: o,
    };
    let c = Cache::create(dir.join("c"), &scheme, Some(extent)).unwrap();
    let mut tiles = Vec::new();
    for (r, col) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        tiles.push(TileAddr::new(1, r, col));
    }
    for (r, col) in [(2, 4), (2, 5), (3, 4), (3, 5)] {
        tiles.push(TileAddr::new(3, r, col));
    }
    let bytes: Vec<(TileAddr, Vec<u8>)> = tiles
        .iter()
        .map(|t| (*t, LabelSource.render(&scheme, *t).unwrap().unwrap()))
        .collect();
    let refs: Vec<(TileAddr, &[u8])> = bytes.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    c.write_tiles(&refs).unwrap();
    (Arc::new(c), scheme)
}

fn stored(c: &Cache, t: TileAddr) -> RgbaImage {
    decode(&c.tile(t).unwrap().unwrap(), &t.to_string())
}

/// Tolerance: `image`'s thumbnail (area averaging) of the 2×2 mosaic against our alpha-weighted
/// 2×2 mean; both average the same four pixels of opaque tiles, so they may differ by rounding only.
const DOWNSAMPLE_TOLERANCE: u8 = 1;

#[test]
fn resample_downsamples_children_and_upsamples_parents() {
    let d = tempfile::tempdir().unwrap();
    let (c, _scheme) = resample_cache(d.path());
    let r = Renderer::new(
        c.clone(),
        Arc::new(ResampleSource::new(c.clone())),
        Keep::No,
        RenderOptions::default(),
    )
    .unwrap();
    // Downsample: level 2 (1, 2) from its level-3 children; level 0 from level 1.
    for (t, kids) in [
        (
            TileAddr::new(2, 1, 2),
            [(3, 2, 4), (3, 2, 5), (3, 3, 4), (3, 3, 5)],
        ),
        (
            TileAddr::new(0, 0, 0),
            [(1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)],
        ),
    ] {
        let got = decode(
            &r.get(t).unwrap_or_else(|e| panic!("{t}: {e}")),
            &t.to_string(),
        );
        let mut mosaic = RgbaImage::new(512, 512);
        for (i, (l, row, col)) in kids.into_iter().enumerate() {
            let kid = stored(&c, TileAddr::new(l, row, col));
            imageops::replace(
                &mut mosaic,
                &kid,
                (i as i64 % 2) * 256,
                (i as i64 / 2) * 256,
            );
        }
        let want = imageops::thumbnail(&mosaic, 256, 256);
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= DOWNSAMPLE_TOLERANCE,
            "{t}: differs from the ½-scaled mosaic by up to {worst}"
        );
    }
    // Upsample: level 2 (0, 1) has no children; its parent is level 1 (0, 0), top-right quarter.
    let t = TileAddr::new(2, 0, 1);
    let got = decode(&r.get(t).unwrap(), &t.to_string());
    let parent = stored(&c, TileAddr::new(1, 0, 0));
    let diffs: Vec<f64> = [(0, 0), (128, 0), (0, 128), (128, 128)]
        .iter()
        .map(|&(x, y)| {
            let q = imageops::resize(
                &imageops::crop_imm(&parent, x, y, 128, 128).to_image(),
                256,
                256,
                FilterType::Nearest,
            );
            q.as_raw()
                .iter()
                .zip(got.as_raw())
                .map(|(a, b)| f64::from(a.abs_diff(*b)))
                .sum::<f64>()
                / q.as_raw().len() as f64
        })
        .collect();
    assert!(
        diffs[1] < 6.0,
        "{t}: far from its parent's top-right quarter: {diffs:?}"
    );
    assert!(
        diffs
            .iter()
            .enumerate()
            .all(|(i, d)| i == 1 || *d > diffs[1] * 2.0),
        "{diffs:?}"
    );
}

#[test]
fn resample_outside_levels_extent_or_data_is_enoent() {
    let d = tempfile::tempdir().unwrap();
    let (c, _) = resample_cache(d.path());
    let r = Renderer::new(
        c.clone(),
        Arc::new(ResampleSource::new(c.clone())),
        Keep::No,
        RenderOptions::default(),
    )
    .unwrap();
    let cases = [
        (TileAddr::new(5, 0, 0), "level not in conf.xml"),
        (
            TileAddr::new(1, 1, 0),
            "row outside the extent (southern half)",
        ),
        (TileAddr::new(2, 0, 4), "column outside the level's grid"),
        (
            TileAddr::new(4, 0, 0),
            "inside, but no children (no level 5) and no stored parent",
        ),
    ];
    for (t, why) in cases {
        match r.get(t) {
            Err(e @ Error::NotFound(_)) => assert_eq!(e.errno(), libc::ENOENT),
            other => panic!("{t} ({why}): want ENOENT, got {other:?}"),
        }
    }
    assert!(!r.renderable(TileAddr::new(1, 1, 0)));
    assert!(r.renderable(TileAddr::new(4, 7, 15)));
}

// ---------------------------------------------------------------------------------------------
// bundlefs render

#[test]
fn render_command_batch_keep_and_single_tile() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("c");
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .args(["create", "--levels", "0-3"])
            .arg(&cache),
    );
    let out = crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&cache)
            .args(["--source", "label", "--levels", "1-2", "--keep"]),
    );
    assert!(
        out.contains("20 rendered") && out.contains("20 kept"),
        "{out}"
    );
    let c = Cache::open(&cache).unwrap();
    let scheme = c.scheme().unwrap().clone();
    for t in [TileAddr::new(1, 1, 0), TileAddr::new(2, 3, 2)] {
        let want = LabelSource.render(&scheme, t).unwrap().unwrap();
        assert_eq!(&c.tile(t).unwrap().unwrap()[..], &want[..], "{t}");
    }
    assert!(c.tile(TileAddr::new(0, 0, 0)).unwrap().is_none());
    // Stored tiles are skipped the second time.
    let out = crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&cache)
            .args(["--source", "label", "--levels", "0-2"]),
    );
    assert!(
        out.contains("1 rendered") && out.contains("20 already stored"),
        "{out}"
    );
    let file = d.path().join("t.png");
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&cache)
            .args([
                "--source",
                "resample",
                "--tile",
                "L00/R00000000/C00000000",
                "-o",
            ])
            .arg(&file),
    );
    assert_eq!(sniff(&std::fs::read(&file).unwrap()), Some(ImageKind::Png));
    let bad = crate::support::run(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&cache)
            .args(["--source", "label", "--tile", "4/0/0"]),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("outside the tiling scheme"));
}

// ---------------------------------------------------------------------------------------------
// Through the mount: `bundlefs mount --source …` renders what the bundles lack when it is opened.

pub(crate) fn tile_path(t: TileAddr, ext: &str) -> String {
    format!(
        "_alllayers/L{:02}/R{:08x}/C{:08x}.{ext}",
        t.level, t.row, t.col
    )
}

#[test]
fn wms_tiles_through_the_mount_match_mapserver_getmap() {
    wms_case_via("1.3.0", true);
}

#[test]
fn sixteen_readers_through_the_mount_make_one_request() {
    let d = tempfile::tempdir().unwrap();
    let cache = projected_cache(d.path(), TileFormat::Png);
    let fake = fake_export("png32", "true", Duration::from_millis(300));
    let spec = format!(
        "arcgis:{}/arcgis/rest/services/Test/MapServer?layers=show:0,2",
        fake.server.url()
    );
    let m = Mounted::start(
        cache.root(),
        &d.path().join("mnt"),
        &["--source", &spec, "--supertile", "0"],
    );
    let t = TileAddr::new(2, 5, 1);
    let path = m.path(&tile_path(t, "png"));
    let barrier = Barrier::new(16);
    let results: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    std::fs::read(&path)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = fake_map(W, H, &expected_bounds(t));
    for r in results {
        assert_eq!(r.unwrap(), want);
    }
    assert_eq!(fake.server.requests(), 1, "16 readers of one missing tile");
    assert!(fake.problems.lock().unwrap().is_empty());
    // Outside the scheme: no request, ENOENT.
    for bad in [
        "_alllayers/L07",                         // level not in conf.xml
        "_alllayers/L02/R00000005/C000000ff.png", // column outside the extent
        "_alllayers/L02/R00000005/C00000001.jpg", // not this cache's format
    ] {
        let e = std::fs::metadata(m.path(bad)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{bad}");
    }
    assert_eq!(fake.server.requests(), 1);
}

#[test]
fn kept_rendered_tiles_land_in_the_bundles() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let c = Cache::create(&dir, &TileScheme::web_mercator(3, TileFormat::Png), None).unwrap();
    let t = TileAddr::new(3, 2, 5);
    let want = LabelSource.render(c.scheme().unwrap(), t).unwrap().unwrap();
    {
        let m = Mounted::start(
            &dir,
            &d.path().join("mnt"),
            &["--source", "label", "--keep-rendered"],
        );
        assert_eq!(std::fs::read(m.path(&tile_path(t, "png"))).unwrap(), want);
        // Not listed (listings show stored tiles), but readable by name.
        assert!(std::fs::read_dir(m.path("_alllayers")).unwrap().count() <= 1);
    }
    let c = Cache::open(&dir).unwrap();
    assert_eq!(
        &c.tile(t).unwrap().unwrap()[..],
        &want[..],
        "kept in the bundle"
    );
    assert!(
        c.tile(TileAddr::new(3, 2, 6)).unwrap().is_none(),
        "only what was read"
    );
}

#[test]
fn list_renderable_shows_names_without_rendering_them() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let c = Cache::create(&dir, &TileScheme::web_mercator(4, TileFormat::Png), None).unwrap();
    let t = TileAddr::new(2, 3, 1);
    let want = LabelSource.render(c.scheme().unwrap(), t).unwrap().unwrap();
    let m = Mounted::start(
        &dir,
        &d.path().join("mnt"),
        &["--source", "label", "--list-renderable", "0-2"],
    );
    let (ok, out, err) = crate::support::mount::sh(&format!(
        "cd {} && find . -type f | sort",
        m.path("_alllayers").display()
    ));
    assert!(ok, "{err}");
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 1 + 4 + 16, "{out}");
    assert!(names.contains(&"./L02/R00000003/C00000001.png"));
    assert!(
        !out.contains("L03"),
        "level 3 is not listed, only looked up"
    );
    // A listed name reads (and stats) as the rendered tile.
    let p = m.path(&tile_path(t, "png"));
    assert_eq!(std::fs::read(&p).unwrap(), want);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), want.len() as u64);
    // Level 3 still renders by name.
    assert!(m.path(&tile_path(TileAddr::new(3, 7, 7), "png")).is_file());
    drop(m);
    // Too large a level is refused before mounting.
    let c2 = d.path().join("big");
    Cache::create(&c2, &TileScheme::web_mercator(12, TileFormat::Png), None).unwrap();
    std::fs::create_dir(d.path().join("mnt2")).unwrap();
    let out = Command::new(crate::support::bin())
        .arg("mount")
        .arg(&c2)
        .arg(d.path().join("mnt2"))
        .args(["--source", "label", "--list-renderable", "0-12"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("level 12 has 16777216 renderable tiles"),
        "{err}"
    );
}

/// `render --source resample` over several levels: each level is made from the one the run made
/// just before it, in either direction (levels 3-4 over a cache of 0-2 go 3 then 4; levels 0-1
/// over a cache holding only level 2 go 1 then 0), and none is reported empty. Through a mount,
/// a level-4 tile is made from the level-3 tile the mount rendered a moment before.
#[test]
fn resample_several_levels_in_one_run_feeds_each_level_from_the_last() {
    let d = tempfile::tempdir().unwrap();
    let cache = crate::support::sample_cache(d.path(), "0-4");
    // Keep levels 0-2 only (delete 3-4), so 3 and 4 must come from coarser levels.
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("delete")
            .arg(&cache)
            .args(["--levels", "3-4"]),
    );
    let out = crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&cache)
            .args(["--source", "resample", "--levels", "3-4", "--keep"]),
    );
    assert!(
        out.contains("320 rendered") && out.contains(" 0 empty") && out.contains("320 kept"),
        "{out}"
    );
    // Downward: only level 4 kept, levels 2-3 rendered from it (3 first, then 2).
    let down = d.path().join("down");
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("export")
            .arg(&cache)
            .arg(&down)
            .args(["--storage", "compact-v2", "--levels", "4"]),
    );
    let out = crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("render")
            .arg(&down)
            .args(["--source", "resample", "--levels", "2-3", "--keep"]),
    );
    assert!(
        out.contains("80 rendered") && out.contains(" 0 empty"),
        "{out}"
    );
    // The mount: a level-4 tile below a level-3 tile the mount just rendered (nothing kept).
    let up = d.path().join("up");
    crate::support::run_ok(
        Command::new(crate::support::bin())
            .arg("export")
            .arg(&cache)
            .arg(&up)
            .args(["--storage", "compact-v2", "--levels", "0-2"]),
    );
    let m = Mounted::start(&up, &d.path().join("mnt"), &["--source", "resample"]);
    let l3 = m.path(&tile_path(TileAddr::new(3, 2, 3), "png"));
    assert!(
        std::fs::read(&l3).is_ok_and(|b| !b.is_empty()),
        "level 3 from level 2"
    );
    let l4 = m.path(&tile_path(TileAddr::new(4, 4, 6), "png"));
    let b = std::fs::read(&l4).expect("level 4 from the level-3 tile the mount made");
    assert_eq!(sniff(&b), Some(ImageKind::Png));
}
