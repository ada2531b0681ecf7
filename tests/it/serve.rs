//! `bundlefs serve` against real clients: GDAL's WMTS driver (the rasterio wheel's GDAL, as the
//! other GDAL tests) with the checksums GDAL's ESRIC driver reads from the cache itself, OWSLib
//! (capabilities and a KVP GetTile), and plain HTTP for the ArcGIS REST JSON, every tile's bytes,
//! ETag/304, HEAD, the errors, `--metrics` and SIGTERM. Each server listens on 127.0.0.1 port 0
//! (the kernel's free port, read back from its "serving" lines) and is killed by a Drop guard.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bundlefs::cache::Cache;

use crate::support::{all_tiles, bin, case_data, esri_sample_cache, run, scratch_dir};

/// A running `bundlefs serve`; Drop stops and reaps it, so a failing test leaves no server.
pub(crate) struct Served {
    child: Child,
    /// `127.0.0.1:PORT`
    pub(crate) addr: String,
}

impl Served {
    /// Starts `bundlefs serve ARGS… --listen 127.0.0.1:0` and waits for its ready lines.
    pub(crate) fn start(args: &[&str]) -> Served {
        let mut child = Command::new(bin())
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bundlefs serve");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let mut seen = String::new();
        let addr = loop {
            let Some(Ok(l)) = lines.next() else {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve ended before it was ready:\n{seen}\n{err}");
            };
            seen.push_str(&l);
            seen.push('\n');
            if let Some(rest) = l.strip_prefix("WMTS at http://") {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        Served { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[])
    }
}

impl Drop for Served {
    /// SIGTERM first, so the server ends as it should (a package it unpacked is removed), then
    /// SIGKILL after 10 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, not yet reaped (wait below reaps it).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, headers (names lower-cased), body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The 2180 (Poland CS92, northing first in EPSG) fixture: one tile in each of levels 0-4.
fn poland() -> std::path::PathBuf {
    case_data("09-local-srs-2180/cache")
}

/// GDAL's WMTS driver (RESTful ResourceURL, `tilematrix=N` makes level N its base) reads, per
/// level, the same pixels GDAL's ESRIC driver reads from the cache folder (the ESRIC overview of
/// that level, over the window of the WMTS raster's bounds): the Web Mercator Esri sample at
/// levels 0-2 and the EPSG:2180 fixture, whose TopLeftCorner and BoundingBox are northing
/// first, at levels 0, 1, 3 and 4. (Level 2 of that scheme is 5 × level 4's resolution, and
/// ESRIC's overview for it is 77418 / 5 = 15483.6 px rounded, so ESRIC resamples there.) A
/// geographic layer is read at -180..180 × -90..90, as EPSG:4326's latitude-first corners say.
/// Debian's `gdalinfo -checksum` (GDAL 3.6) agrees too: WMTS and ESRIC, levels 0-2 of the sample.
/// GDAL's WMS disk cache is off: with it, GDAL (3.6 and 3.10) fails on a 404 for a missing tile
/// ("Unable to open downloaded block") where it otherwise reads an empty block.
#[test]
fn gdal_wmts_reads_each_level_as_esric_reads_the_cache() {
    let s = Served::start(&[
        esri_sample_cache().to_str().unwrap(),
        &format!("pl={}", poland().display()),
        &format!(
            "geo={}",
            case_data("03-arcgis-9x-conf-geographic-512/cache").display()
        ),
    ]);
    let script = r#"
import sys, rasterio
from rasterio.windows import from_bounds
caps, name, conf = sys.argv[1], sys.argv[2], sys.argv[3]
with rasterio.open(conf) as ds:
    deepest = len(ds.overviews(1))
for lv in [int(x) for x in sys.argv[4].split(",")]:
    with rasterio.open(f"WMTS:{caps},layer={name},tilematrix={lv}") as w:
        wc = [w.checksum(b) for b in (1, 2, 3)]
        bounds, size = w.bounds, (w.width, w.height)
    kw = {} if lv == deepest else {"overview_level": deepest - lv - 1}
    with rasterio.open(conf, **kw) as e:
        win = from_bounds(*bounds, transform=e.transform).round_offsets().round_lengths()
        ec = [e.checksum(b, window=win) for b in (1, 2, 3)]
    print("wmts", lv, size, wc)
    print("esric", lv, (win.width, win.height), ec)
"#;
    let caps = s.url("/wmts/1.0.0/WMTSCapabilities.xml");
    for (name, conf, levels) in [
        (
            "esri-sample-cache",
            esri_sample_cache().join("conf.xml"),
            "0,1,2",
        ),
        ("pl", poland().join("conf.xml"), "0,1,3,4"),
    ] {
        let out = run(Command::new("python3")
            .env("GDAL_ENABLE_WMS_CACHE", "NO")
            .args(["-c", script, &caps, name])
            .arg(&conf)
            .arg(levels));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: rasterio: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for lv in levels.split(',') {
            let of = |who: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("{who} {lv} ")))
                    .unwrap_or_else(|| panic!("{name}: no {who} line for level {lv}:\n{text}"))
                    .split_once(' ')
                    .unwrap()
                    .1
                    .to_string()
            };
            assert_eq!(of("wmts"), of("esric"), "{name} level {lv}:\n{text}");
        }
        println!("{name}:\n{text}");
        if name == "esri-sample-cache" {
            // Debian's gdalinfo (GDAL 3.6, its own libjpeg: other pixel values than the wheel's)
            // gives the same checksums for WMTS and for ESRIC's overview of each level.
            crate::support::mount::need("gdalinfo");
            let sums = |args: &[String]| {
                let out = run(Command::new("gdalinfo")
                    .env("GDAL_ENABLE_WMS_CACHE", "NO")
                    .arg("-checksum")
                    .args(args));
                let info = String::from_utf8_lossy(&out.stdout).into_owned();
                let v: Vec<String> = info
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("Checksum="))
                    .take(3)
                    .map(str::to_string)
                    .collect();
                assert_eq!(v.len(), 3, "gdalinfo {args:?}:\n{info}");
                v
            };
            // The sample's conf.xml has LODs 0-19: level 19 is ESRIC's base, level N its
            // overview 19 - N - 1.
            let deepest = 19;
            for lv in 0..3 {
                let wmts = sums(&[format!("WMTS:{caps},layer={name},tilematrix={lv}")]);
                let esric = sums(&[
                    "-oo".into(),
                    format!("OVERVIEW_LEVEL={}", deepest - lv - 1),
                    conf.display().to_string(),
                ]);
                assert_eq!(wmts, esric, "gdalinfo, level {lv}");
            }
        }
    }
    let out = run(Command::new("python3")
        .env("GDAL_ENABLE_WMS_CACHE", "NO")
        .args([
            "-c",
            "import sys, rasterio\n\
             with rasterio.open(f'WMTS:{sys.argv[1]},layer=geo,tilematrix=2') as w:\n\
             \x20   print(w.crs, [round(v, 6) for v in w.bounds], w.width, w.height)",
            &caps,
        ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "EPSG:4326 [-180.0, -90.0, 180.0, 90.0] 4096 2048",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// OWSLib (PyPI) parses the capabilities (layers, the matrix set's CRS and northing-first
/// corner) and fetches a tile through KVP GetTile: the bytes `Cache::tile` gives.
#[test]
fn owslib_reads_the_capabilities_and_gets_the_stored_tile() {
    let s = Served::start(&[
        esri_sample_cache().to_str().unwrap(),
        &format!("pl={}", poland().display()),
    ]);
    let script = r#"
import sys
from owslib.wmts import WebMapTileService
w = WebMapTileService(sys.argv[1])
print("layers", sorted(w.contents))
m = w.tilematrixsets["pl"]
print("pl", m.crs, m.tilematrix["1"].topleftcorner, m.tilematrix["1"].matrixwidth)
print("formats", w.contents["esri-sample-cache"].formats)
t = w.gettile(layer="esri-sample-cache", tilematrixset="esri-sample-cache", tilematrix="2",
              row=1, column=3, format="image/jpeg")
sys.stdout.flush()
sys.stdout.buffer.write(b"tile " + t.read())
"#;
    let out = run(Command::new("python3").args([
        "-c",
        script,
        &s.url("/wmts/1.0.0/WMTSCapabilities.xml"),
    ]));
    assert!(
        out.status.success(),
        "owslib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = out
        .stdout
        .windows(5)
        .position(|w| w == b"tile ")
        .expect("a tile");
    let text = String::from_utf8_lossy(&out.stdout[..at]).into_owned();
    assert!(
        text.contains("layers ['esri-sample-cache', 'pl']"),
        "{text}"
    );
    assert!(
        text.contains("pl urn:ogc:def:crs:EPSG::2180 (9998100.0, -5120900.0)"),
        "{text}"
    );
    assert!(text.contains("formats ['image/jpeg']"), "{text}");
    let c = Cache::open(esri_sample_cache()).unwrap();
    let stored = c
        .tile(bundlefs::format::TileAddr::new(2, 1, 3))
        .unwrap()
        .unwrap();
    assert!(
        out.stdout[at + 5..] == stored[..],
        "GetTile: not the stored bytes"
    );
}

/// The REST JSON, field by field against the shape of Esri's map service resource, and every
/// stored tile of the sample through the REST and XYZ routes: the stored bytes, sniffed type, the
/// CRC-32 ETag (304 on If-None-Match), HEAD without a body, and the errors.
#[test]
fn rest_json_and_every_tile_as_stored() {
    let d = scratch_dir("serve-rest");
    let blank = d.join("blank.png");
    std::fs::write(&blank, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let s = Served::start(&[
        &format!("world={}", esri_sample_cache().display()),
        "--max-age",
        "120",
    ]);
    let r = s.get("/arcgis/rest/services/world/MapServer?f=json");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let c = Cache::open(esri_sample_cache()).unwrap();
    let sc = c.scheme().unwrap();
    assert_eq!(v["singleFusedMapCache"], true);
    assert_eq!(v["capabilities"], "Map");
    assert_eq!(v["units"], "esriMeters");
    assert_eq!(v["spatialReference"]["wkid"], 3857);
    let ti = &v["tileInfo"];
    assert_eq!(ti["rows"], 256);
    assert_eq!(ti["cols"], 256);
    assert_eq!(ti["dpi"], 96);
    assert_eq!(ti["format"], "JPEG");
    assert_eq!(ti["compressionQuality"], sc.compression_quality);
    assert_eq!(ti["origin"]["x"], sc.origin_x);
    assert_eq!(ti["origin"]["y"], sc.origin_y);
    assert_eq!(ti["spatialReference"], v["spatialReference"]);
    let lods = ti["lods"].as_array().unwrap();
    assert_eq!(lods.len(), sc.lods.len());
    for (j, l) in lods.iter().zip(&sc.lods) {
        assert_eq!(j["level"], l.level);
        assert_eq!(j["resolution"], l.resolution);
        assert_eq!(j["scale"], l.scale);
    }
    let e = c.extent().unwrap();
    for k in ["fullExtent", "initialExtent"] {
        assert_eq!(v[k]["xmin"], e.xmin, "{k}");
        assert_eq!(v[k]["ymax"], e.ymax, "{k}");
        assert_eq!(v[k]["spatialReference"], v["spatialReference"], "{k}");
    }
    let tiles = all_tiles(&c);
    assert_eq!(tiles.len(), 21);
    for (t, bytes) in &tiles {
        for path in [
            format!(
                "/arcgis/rest/services/world/MapServer/tile/{}/{}/{}",
                t.level, t.row, t.col
            ),
            format!("/xyz/world/{}/{}/{}.jpg", t.level, t.col, t.row),
        ] {
            let r = s.get(&path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert!(&r.body == bytes, "{path}: not the stored bytes");
            assert_eq!(r.header("content-type"), Some("image/jpeg"), "{path}");
            assert_eq!(r.header("cache-control"), Some("public, max-age=120"));
            assert_eq!(r.header("access-control-allow-origin"), Some("*"));
            let tag = format!("\"{:08x}-{:x}\"", crc32fast::hash(bytes), bytes.len());
            assert_eq!(r.header("etag"), Some(tag.as_str()), "{path}");
        }
    }
    let path = "/xyz/world/2/3/1.jpg";
    let tag = s.get(path).header("etag").unwrap().to_string();
    let n = http(&s.addr, "GET", path, &[("If-None-Match", &tag)]);
    assert_eq!((n.status, n.body.len()), (304, 0));
    let h = http(&s.addr, "HEAD", path, &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(
        h.header("content-length"),
        Some(
            tiles[&bundlefs::format::TileAddr::new(2, 1, 3)]
                .len()
                .to_string()
                .as_str()
        )
    );
    for (path, status, msg) in [
        (
            "/xyz/world/3/0/0.jpg",
            404,
            "world: no tile at level 3, row 0, col 0",
        ),
        (
            "/xyz/world/20/0/0.jpg",
            404,
            "world: no level 20 (its tiling scheme has levels 0-19)",
        ),
        ("/xyz/world/2/0/zero.jpg", 400, "y \"zero\": not a number"),
        ("/xyz/other/2/0/0.jpg", 404, "no cache named \"other\""),
        ("/tiles/2/0/0", 404, "no such route"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains(msg), "{path}: {}", r.text());
    }
    assert_eq!(s.get("/healthz").text(), "ok\n");
    let t = s.get("/xyz/world.json");
    let j: serde_json::Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        j["tiles"][0],
        format!("http://{}/xyz/world/{{z}}/{{x}}/{{y}}.jpg", s.addr)
    );
    assert_eq!(
        (j["minzoom"].as_u64(), j["maxzoom"].as_u64()),
        (Some(0), Some(2))
    );
    drop(s);
    // With --blank-tile, a missing tile is the blank file, 200.
    let s = Served::start(&[
        esri_sample_cache().to_str().unwrap(),
        "--blank-tile",
        blank.to_str().unwrap(),
    ]);
    let r = s.get("/xyz/esri-sample-cache/3/0/0.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(&blank).unwrap());
    assert_eq!(r.header("content-type"), Some("image/png"));
}

/// A name used twice, a port in use and a missing cache: exit 2 with a message naming it;
/// `--metrics` counts what was answered; SIGTERM stops the server promptly with status 0.
#[test]
fn bad_input_is_refused_by_name_and_sigterm_stops_it() {
    let esri = esri_sample_cache();
    let out = run(Command::new(bin()).args([
        "serve",
        esri.to_str().unwrap(),
        &format!("esri-sample-cache={}", poland().display()),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the name \"esri-sample-cache\" is given to two caches"),
        "{err}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(Command::new(bin()).args(["serve", esri.to_str().unwrap(), "--listen", &addr]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--listen {addr}: cannot listen")),
        "{err}"
    );
    let out = run(Command::new(bin()).args(["serve", "/nonexistent/cache"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/cache"), "{err}");

    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = metrics.local_addr().unwrap().to_string();
    drop(metrics);
    let mut s = Served::start(&[esri.to_str().unwrap(), "--metrics", &maddr]);
    assert_eq!(s.get("/xyz/esri-sample-cache/0/0/0.jpg").status, 200);
    assert_eq!(s.get("/xyz/esri-sample-cache/5/0/0.jpg").status, 404);
    let page = http(&maddr, "GET", "/metrics", &[]).text();
    let listen = format!("listen=\"{}\"", s.addr);
    for line in [
        format!("bundlefs_serve_tiles_total{{{listen}}} 1"),
        format!("bundlefs_serve_not_found_total{{{listen}}} 1"),
        format!("bundlefs_serve_server_errors_total{{{listen}}} 0"),
    ] {
        assert!(page.contains(&line), "{line}:\n{page}");
    }
    let pid = s.child.id() as i32;
    // SAFETY: kill(2) on the pid of our own child, which Drop reaps.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "serve still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// A `.tpkx` package (Esri's `Usa.tpkx`, unpacked while served) and an MBTiles file are served
/// like folders, named after their files: every tile of the package as the mount shows it (its
/// PNGs stored without the first four signature bytes get them back), and the MBTiles tiles as
/// the cache they were exported from stores them.
#[test]
fn packages_and_mbtiles_are_served_as_they_are_read() {
    let d = scratch_dir("serve-packages");
    let mbt = d.join("esri.mbtiles");
    crate::support::run_ok(
        Command::new(bin())
            .arg("export")
            .arg(esri_sample_cache())
            .arg(&mbt),
    );
    let tpkx = crate::support::fixtures().join("arcgis-tpkx/Usa.tpkx");
    let s = Served::start(&[tpkx.to_str().unwrap(), mbt.to_str().unwrap()]);
    let usa = bundlefs::jobs::package::open_package(&tpkx).unwrap();
    let tiles = all_tiles(&usa.cache);
    assert!(tiles.len() > 30);
    for (t, bytes) in tiles.iter().filter(|(t, _)| t.level <= 3) {
        let r = s.get(&format!("/xyz/Usa/{}/{}/{}.png", t.level, t.col, t.row));
        assert_eq!(r.status, 200, "{t}: {}", r.text());
        assert_eq!(
            r.body,
            bundlefs::format::pixels::as_image_file(bytes).into_owned(),
            "{t}"
        );
        assert!(r.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{t}: a whole PNG");
        assert_eq!(r.header("content-type"), Some("image/png"));
    }
    for (t, bytes) in all_tiles(&Cache::open(esri_sample_cache()).unwrap()) {
        let r = s.get(&format!(
            "/arcgis/rest/services/esri/MapServer/tile/{}/{}/{}",
            t.level, t.row, t.col
        ));
        assert_eq!(r.status, 200, "{t}: {}", r.text());
        assert!(r.body == bytes, "{t}: not the stored bytes");
    }
}

/// `--source label --keep-rendered` renders a tile the cache lacks when it is asked for (the
/// mount's renderer), sends it as a PNG, and stores it in the cache's bundles.
#[test]
fn source_renders_missing_tiles_and_keeps_them() {
    let d = scratch_dir("serve-source");
    let c = crate::support::sample_cache(&d, "0-2");
    crate::support::run_ok(
        Command::new(bin())
            .arg("delete")
            .arg(&c)
            .args(["--levels", "2"]),
    );
    let t = bundlefs::format::TileAddr::new(2, 1, 3);
    assert!(Cache::open(&c).unwrap().tile(t).unwrap().is_none());
    let s = Served::start(&[c.to_str().unwrap(), "--source", "label", "--keep-rendered"]);
    let r = s.get("/xyz/sample/2/3/1.png");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/png"));
    drop(s);
    let kept = Cache::open(&c).unwrap().tile(t).unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(&r.body[..]),
        "the rendered tile is kept"
    );
}

/// A real browser: headless Chromium opens a Leaflet page (a file, with Debian's libjs-leaflet)
/// with two layers over one `serve`, its XYZ and its ArcGIS REST tile URLs. Every tile the map
/// asks for loads (Leaflet's `tileload`, none `tileerror`; zoom 1: four tiles a layer), and the
/// screenshot (copied to the temporary folder, its path printed) is not a blank page.
#[test]
fn chromium_shows_a_leaflet_map_of_both_tile_routes() {
    crate::support::mount::need("chromium");
    let leaflet = Path::new("/usr/share/javascript/leaflet");
    assert!(
        leaflet.join("leaflet.js").is_file(),
        "libjs-leaflet is missing: run scripts/test.sh, which installs it"
    );
    let s = Served::start(&[&format!("world={}", esri_sample_cache().display())]);
    let base = s.url("");
    let page = format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="file:///usr/share/javascript/leaflet/leaflet.css">
<script src="file:///usr/share/javascript/leaflet/leaflet.js"></script>
<style>html, body, #map {{ margin: 0; width: 512px; height: 512px; }}</style></head>
<body><div id="map"></div><pre id="out">waiting</pre><script>
var n = {{xyz: 0, rest: 0, failed: 0}};
function show() {{ document.getElementById('out').textContent =
  'xyz=' + n.xyz + ' rest=' + n.rest + ' failed=' + n.failed; }}
var map = L.map('map', {{zoomControl: false, attributionControl: false, fadeAnimation: false}})
  .setView([0, 0], 1);
function add(name, url) {{
  L.tileLayer(url, {{maxZoom: 2, opacity: 0.6}})
    .on('tileload', function () {{ n[name]++; show(); }})
    .on('tileerror', function () {{ n.failed++; show(); }})
    .addTo(map);
}}
add('xyz', '{base}/xyz/world/{{z}}/{{x}}/{{y}}.jpg');
add('rest', '{base}/arcgis/rest/services/world/MapServer/tile/{{z}}/{{y}}/{{x}}');
</script></body></html>"#
    );
    let d = scratch_dir("serve-chromium");
    let shot = d.join("leaflet.png");
    let html = d.join("map.html");
    std::fs::write(&html, page).unwrap();
    let chromium = |extra: &[&str]| {
        let out = run(Command::new("timeout")
            .args([
                "60",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
            ])
            // The DOM and the screenshot are taken at the load event (the tiles are images of
            // the page) or after 10 s. (`--virtual-time-budget` hung with a fresh profile.)
            .args(["--window-size=512,600", "--timeout=10000"])
            .arg(format!("--user-data-dir={}", d.join("profile").display()))
            .args(extra)
            .arg(format!("file://{}", html.display())));
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    let counts = dom
        .lines()
        .find_map(|l| l.split("<pre id=\"out\">").nth(1))
        .and_then(|l| l.split('<').next())
        .unwrap_or("no counts");
    // (With tiny_http as the adapter, two of the first six connections could wait behind busy
    // keep-alive connections: "xyz=4 rest=2" after the 10 s timeout, 1 load in ~10 under load.)
    assert_eq!(
        counts, "xyz=4 rest=4 failed=0",
        "the map's tiles did not all load"
    );
    chromium(&[&format!("--screenshot={}", shot.display())]);
    let img = image::open(&shot).unwrap().to_rgb8();
    let first = *img.get_pixel(0, 0);
    let differ = img.pixels().filter(|p| **p != first).count();
    assert!(
        differ > (img.width() * img.height() / 4) as usize,
        "the screenshot {} looks blank",
        shot.display()
    );
    // Kept for a look after the run (the scratch folder goes at exit).
    let keep = std::env::temp_dir().join("bundlefs-serve-leaflet.png");
    std::fs::copy(&shot, &keep).unwrap();
    println!("screenshot: {}", keep.display());
}

/// Twenty tiles asked one after another on one keep-alive connection come back in well under
/// 20 × 40 ms: an answer never waits for the client's delayed ACK (Nagle's algorithm, with a head
/// and body written apart, as tiny_http wrote them: 44 ms a tile; 0.2 ms now).
#[test]
fn keep_alive_answers_do_not_wait_for_delayed_acks() {
    let s = Served::start(&[esri_sample_cache().to_str().unwrap()]);
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let t0 = Instant::now();
    for i in 0..20 {
        let path = format!("/xyz/esri-sample-cache/2/{}/{}.jpg", i % 4, (i / 4) % 4);
        // One write: the request's own segments are not to wait on each other.
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr);
        c.write_all(req.as_bytes()).unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        assert!(len > 0, "{path}");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "20 keep-alive requests took {took:?}"
    );
}

/// The HTTP/1.1 adapter on a raw socket: two requests sent in one write (pipelined) get two
/// answers in order; a POST's body is skipped and the next request on the connection answered;
/// HTTP/1.0 closes after its answer; a garbage line is a 400 that closes; with
/// `--max-connections 1` a second connection is answered 503 at once, never left waiting.
#[test]
fn the_http_adapter_keeps_requests_in_step_and_never_leaves_one_waiting() {
    let s = Served::start(&[esri_sample_cache().to_str().unwrap()]);
    let talk = |addr: &str, send: &[u8]| -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(send).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let t = talk(
        &s.addr,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let first = t.find("HTTP/1.1 200 OK").expect(&t);
    let second = t.find("HTTP/1.1 404 Not Found").expect(&t);
    assert!(first < second, "{t}");
    let t = talk(
        &s.addr,
        b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(t.starts_with("HTTP/1.1 405"), "{t}");
    assert!(t.contains("HTTP/1.1 200 OK"), "{t}");
    let t = talk(&s.addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(
        t.contains("Connection: close") && t.ends_with("ok\n"),
        "{t}"
    );
    let t = talk(&s.addr, b"\x16\x03\x01 hello\r\n\r\n");
    assert!(t.starts_with("HTTP/1.1 400 Bad Request"), "{t}");
    drop(s);
    let s = Served::start(&[
        esri_sample_cache().to_str().unwrap(),
        "--max-connections",
        "1",
    ]);
    let mut held = TcpStream::connect(&s.addr).unwrap();
    held.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let _ = held.read(&mut buf).unwrap();
    let t0 = Instant::now();
    let t = talk(&s.addr, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(t.starts_with("HTTP/1.1 503"), "{t}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// As a `Type=notify` unit runs it: READY=1 on `$NOTIFY_SOCKET` once it answers, its lines in
/// `--log-file`, the file reopened on SIGHUP after it was moved away (logrotate), STOPPING=1 and
/// exit 0 on SIGTERM.
#[test]
fn serve_runs_as_a_notify_service_and_reopens_its_log_on_sighup() {
    use std::os::unix::net::UnixDatagram;
    let d = scratch_dir("serve-notify");
    let sock_path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let log = d.join("serve.log");
    let child = Command::new(bin())
        .arg("serve")
        .arg(esri_sample_cache())
        .args(["--listen", "127.0.0.1:0", "--log-file"])
        .arg(&log)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reaped (SIGTERM, then SIGKILL) by the guard whatever happens below.
    let mut s = Served {
        child,
        addr: String::new(),
    };
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // Its lines go to --log-file, the address it listens on among them.
    let text = std::fs::read_to_string(&log).unwrap();
    s.addr = text
        .split("on http://")
        .nth(1)
        .and_then(|t| t.split([' ', '\n']).next())
        .unwrap_or_else(|| panic!("no address in the log:\n{text}"))
        .to_string();
    assert_eq!(
        s.get("/healthz").status,
        200,
        "READY=1 only once it answers"
    );
    let moved = d.join("serve.log.1");
    std::fs::rename(&log, &moved).unwrap();
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGHUP: log reopened")) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reopened log after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.get("/xyz/esri-sample-cache/0/0/0.jpg").status, 200);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stopped"), "{text}");
    assert!(!std::fs::read_to_string(&moved).unwrap().contains("stopped"));
}
