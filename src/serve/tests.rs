use std::sync::Arc;

use super::*;
use crate::format::conf::{Envelope, TileFormat, TileScheme};

fn png(v: u8) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(4, 4, image::Rgba([v, 2, 3, 255]));
    let mut b = std::io::Cursor::new(Vec::new());
    img.write_to(&mut b, image::ImageFormat::Png).unwrap();
    b.into_inner()
}

fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([9, 8, 7]));
    let mut b = std::io::Cursor::new(Vec::new());
    img.write_to(&mut b, image::ImageFormat::Jpeg).unwrap();
    b.into_inner()
}

/// A MIXED Web Mercator cache (levels 0-3) with a PNG at 2/1/1 and a JPEG at 2/1/2.
fn cache(dir: &std::path::Path) -> Arc<Cache> {
    let c = Cache::create(
        dir.join("c"),
        &TileScheme::web_mercator(3, TileFormat::Mixed),
        None,
    )
    .unwrap();
    c.write_tiles(&[
        (TileAddr::new(2, 1, 1), &png(7)[..]),
        (TileAddr::new(2, 1, 2), &jpeg()[..]),
    ])
    .unwrap();
    Arc::new(c)
}

fn service(dir: &std::path::Path, opts: ServeOptions) -> Service {
    Service::new(
        vec![Layer {
            name: "world".into(),
            cache: cache(dir),
            renderer: None,
        }],
        opts,
    )
    .unwrap()
}

fn get(s: &Service, target: &str) -> Response {
    call(s, "GET", target, &[])
}

fn call(s: &Service, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    s.handle(&Request {
        method,
        target,
        headers: &headers,
    })
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn every_route_gives_the_stored_tile_with_its_own_type() {
    let d = tempfile::tempdir().unwrap();
    let s = service(d.path(), ServeOptions::default());
    let stored = s.layers()[0].cache.tile(TileAddr::new(2, 1, 1)).unwrap();
    for url in [
        "/arcgis/rest/services/world/MapServer/tile/2/1/1",
        "/xyz/world/2/1/1.png",
        "/wmts/1.0.0/world/default/world/2/1/1.png",
        "/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=world&STYLE=default\
         &TILEMATRIXSET=world&TILEMATRIX=2&TILEROW=1&TILECOL=1&FORMAT=image%2Fpng",
        "/wmts?service=wmts&request=GetTile&layer=world&tilematrixset=world&tilematrix=2&tilerow=1&tilecol=1",
    ] {
        let r = get(&s, url);
        assert_eq!(r.status, 200, "{url}: {}", text(&r));
        assert_eq!(&r.body[..], &stored.as_ref().unwrap()[..], "{url}");
        assert_eq!(r.header("Content-Type"), Some("image/png"), "{url}");
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(r.header("Cache-Control"), Some("public, max-age=3600"));
        assert_eq!(r.header("ETag"), Some(etag(&r.body).as_str()));
    }
    // MIXED: the JPEG tile is sent as JPEG, whatever the extension asked.
    let r = get(&s, "/xyz/world/2/2/1.png");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(s.stats().tiles, 6);
}

#[test]
fn etag_gives_304_and_head_gives_no_body() {
    let d = tempfile::tempdir().unwrap();
    let s = service(
        d.path(),
        ServeOptions {
            max_age: 60,
            ..Default::default()
        },
    );
    let url = "/xyz/world/2/1/1.png";
    let r = get(&s, url);
    let tag = r.header("ETag").unwrap().to_string();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "strong: {tag}");
    for v in [tag.as_str(), "*", &format!("\"x\", W/{tag}")] {
        let n = call(&s, "GET", url, &[("if-none-match", v)]);
        assert_eq!(n.status, 304, "{v}");
        assert!(n.body.is_empty());
        assert_eq!(n.header("ETag"), Some(tag.as_str()));
        assert_eq!(n.header("Cache-Control"), Some("public, max-age=60"));
    }
    let n = call(&s, "GET", url, &[("If-None-Match", "\"other\"")]);
    assert_eq!(n.status, 200);
    let h = call(&s, "HEAD", url, &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.content_length, r.body.len());
    assert_eq!(h.header("Content-Type"), Some("image/png"));
    let h = call(&s, "HEAD", "/xyz/world/2/0/0.png", &[]);
    assert_eq!((h.status, h.body.len()), (404, 0));
    assert_eq!(s.stats().not_modified, 3);
}

#[test]
fn client_errors_are_4xx_naming_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let s = service(d.path(), ServeOptions::default());
    let cases: &[(&str, u16, &str)] = &[
        ("/xyz/world/2/0/0.png", 404, "world: no tile at level 2, row 0, col 0"),
        ("/xyz/world/9/0/0.png", 404, "no level 9 (its tiling scheme has levels 0-3)"),
        ("/arcgis/rest/services/world/MapServer/tile/12/0/0", 404, "no level 12"),
        ("/xyz/nope/2/0/0.png", 404, "no cache named \"nope\" here (served: world)"),
        ("/xyz/world/2/x/0.png", 400, "x \"x\": not a number"),
        ("/xyz/world/300/0/0.png", 400, "z \"300\""),
        ("/xyz/world/2/0/-1.png", 400, "y \"-1\""),
        ("/arcgis/rest/services/world/MapServer/tile/2/1/99999999999", 400, "col"),
        ("/nowhere", 404, "/nowhere: no such route"),
        ("/wmts?SERVICE=WMTS", 400, "REQUEST missing"),
        ("/wmts?SERVICE=WMS&REQUEST=GetMap", 400, "SERVICE=WMS"),
        ("/wmts?SERVICE=WMTS&REQUEST=GetFeatureInfo", 400, "GetFeatureInfo"),
        ("/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=world", 400, "TILEMATRIXSET missing"),
        (
            "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=world&TILEMATRIXSET=GoogleMaps&TILEMATRIX=1&TILEROW=0&TILECOL=0",
            400,
            "TileMatrixSet \"GoogleMaps\"",
        ),
        ("/wmts/1.0.0/world/default/world/2/1/q.png", 400, "TileCol \"q\""),
        ("/%ff%fe/%", 404, "no such route"),
        ("/xyz/world/3/4294967295/4294967295.png", 404, "no tile at level 3, row 4294967295"),
        ("/arcgis/rest/services/world/MapServer/tile/255/0/0", 404, "no level 255"),
        ("/wmts/1.0.0/world/default/world/3/4294967295/0.png", 404, "no tile"),
    ];
    for (url, status, msg) in cases {
        let r = get(&s, url);
        assert_eq!(r.status, *status, "{url}: {}", text(&r));
        assert!(text(&r).contains(msg), "{url}: {}", text(&r));
    }
    let r = call(&s, "POST", "/xyz/world/2/1/1.png", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(s.stats().server_errors, 0);
}

#[test]
fn a_blank_tile_stands_for_missing_ones_only() {
    let d = tempfile::tempdir().unwrap();
    let blank = png(0);
    let s = service(
        d.path(),
        ServeOptions {
            blank_tile: Some(Arc::new(blank.clone())),
            ..Default::default()
        },
    );
    let r = get(&s, "/xyz/world/3/0/0.png");
    assert_eq!((r.status, &r.body), (200, &blank));
    assert_eq!(r.header("Content-Type"), Some("image/png"));
    // A level the scheme lacks stays a 404.
    assert_eq!(get(&s, "/xyz/world/4/0/0.png").status, 404);
    assert_ne!(get(&s, "/xyz/world/2/1/1.png").body, blank);
}

#[test]
fn a_name_used_twice_or_unfit_for_urls_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let layer = |n: &str| Layer {
        name: n.into(),
        cache: c.clone(),
        renderer: None,
    };
    let e = Service::new(vec![layer("a"), layer("b"), layer("a")], Default::default())
        .err()
        .unwrap();
    assert!(e.contains("the name \"a\" is given to two caches"), "{e}");
    assert!(e.contains("NAME=CACHE"), "{e}");
    for bad in ["", "a b", "x/y", ".hidden", "<a>"] {
        let e = Service::new(vec![layer(bad)], Default::default())
            .err()
            .unwrap();
        assert!(e.contains("a cache name may hold"), "{bad:?}: {e}");
    }
}

#[test]
fn rest_json_has_esris_map_service_fields() {
    let d = tempfile::tempdir().unwrap();
    let s = service(d.path(), ServeOptions::default());
    let r = get(&s, "/arcgis/rest/services/world/MapServer?f=json");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["singleFusedMapCache"], true);
    assert_eq!(v["capabilities"], "Map");
    assert_eq!(v["units"], "esriMeters");
    assert_eq!(v["spatialReference"]["wkid"], 102100);
    assert_eq!(v["spatialReference"]["latestWkid"], 3857);
    let ti = &v["tileInfo"];
    assert_eq!(
        (ti["rows"].as_u64(), ti["cols"].as_u64()),
        (Some(256), Some(256))
    );
    assert_eq!(ti["dpi"], 96);
    assert_eq!(ti["format"], "MIXED");
    assert_eq!(ti["compressionQuality"], 75);
    assert_eq!(ti["origin"]["x"], -20037508.342787);
    assert_eq!(ti["origin"]["y"], 20037508.342787);
    assert_eq!(ti["spatialReference"]["latestWkid"], 3857);
    let lods = ti["lods"].as_array().unwrap();
    assert_eq!(lods.len(), 4);
    assert_eq!(lods[0]["level"], 0);
    assert_eq!(lods[0]["resolution"], 156543.03392800014);
    assert_eq!(lods[0]["scale"], 591657527.591555);
    for e in ["fullExtent", "initialExtent"] {
        for k in ["xmin", "ymin", "xmax", "ymax"] {
            assert!(v[e][k].is_f64(), "{e}.{k}");
        }
        assert_eq!(v[e]["spatialReference"]["wkid"], 102100);
    }
    let cat = get(&s, "/arcgis/rest/services?f=json");
    let c: serde_json::Value = serde_json::from_slice(&cat.body).unwrap();
    assert_eq!(c["services"][0]["name"], "world");
    assert_eq!(c["services"][0]["type"], "MapServer");
}

#[test]
fn wmts_capabilities_and_tilejson_use_the_host_asked() {
    let d = tempfile::tempdir().unwrap();
    let s = service(d.path(), ServeOptions::default());
    let r = call(
        &s,
        "GET",
        "/wmts/1.0.0/WMTSCapabilities.xml",
        &[("Host", "tiles.example:81")],
    );
    assert_eq!(r.status, 200);
    let x = text(&r);
    assert!(x.contains("<ows:Identifier>world</ows:Identifier>"), "{x}");
    assert!(x.contains("<ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>"));
    assert!(x.contains(
        "template=\"http://tiles.example:81/wmts/1.0.0/world/default/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.png\""
    ));
    assert!(
        x.contains("<Format>image/jpeg</Format>"),
        "MIXED: both formats"
    );
    // Level 0: 156543.03392800014 m / 0.28 mm; one tile of the whole world.
    assert!(x.contains("<ows:Identifier>0</ows:Identifier><ScaleDenominator>559082264.028572</ScaleDenominator><TopLeftCorner>-20037508.342787 20037508.342787</TopLeftCorner><TileWidth>256</TileWidth><TileHeight>256</TileHeight><MatrixWidth>1</MatrixWidth><MatrixHeight>1</MatrixHeight>"), "{x}");
    assert!(x.contains("<MatrixWidth>8</MatrixWidth><MatrixHeight>8</MatrixHeight>"));
    let kvp = get(&s, "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities");
    assert_eq!(kvp.status, 200);
    assert!(
        text(&kvp).contains("http://127.0.0.1:8080/wmts?"),
        "no Host: the base URL"
    );
    let j = call(&s, "GET", "/xyz/world.json", &[("Host", "h:1")]);
    let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(v["tilejson"], "3.0.0");
    assert_eq!(v["tiles"][0], "http://h:1/xyz/world/{z}/{x}/{y}.png");
    assert_eq!(
        (v["minzoom"].as_u64(), v["maxzoom"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(v["bounds"].as_array().unwrap().len(), 4);
    let index = text(&get(&s, "/"));
    assert!(
        index.contains("/arcgis/rest/services/world/MapServer"),
        "{index}"
    );
    assert_eq!(text(&get(&s, "/healthz")), "ok\n");
}

#[test]
fn geographic_and_northing_first_matrices_swap_the_corner_and_xyz_refuses_them() {
    let d = tempfile::tempdir().unwrap();
    let mut g = TileScheme::web_mercator(1, TileFormat::Png);
    g.wkid = Some(4326);
    g.latest_wkid = Some(4326);
    g.wkt = Some(crate::format::scheme::WGS84_WKT.into());
    g.origin_x = -180.0;
    g.origin_y = 90.0;
    g.lods[0].resolution = 0.703125;
    g.lods[1].resolution = 0.3515625;
    let e = Envelope {
        xmin: -180.0,
        ymin: -90.0,
        xmax: 180.0,
        ymax: 90.0,
    };
    let m = describe::tile_matrices(&g, &e);
    assert_eq!(
        m[0].top_left,
        (90.0, -180.0),
        "EPSG:4326 is lat,lon in WMTS"
    );
    assert_eq!((m[0].width, m[0].height), (2, 1));
    // 0.703125° × 6378137·2π/360 m/° / 0.28 mm
    assert!(
        (m[0].scale_denominator - 279541132.0143589).abs() < 1e-3,
        "{m:?}"
    );
    let mut p = g.clone();
    p.wkid = Some(2180);
    p.latest_wkid = Some(2180);
    p.wkt = None;
    assert!(describe::axes_swapped(&p));
    p.wkid = Some(32633);
    p.latest_wkid = Some(32633);
    assert!(!describe::axes_swapped(&p));
    let c = Cache::create(d.path().join("g"), &g, Some(e)).unwrap();
    let s = Service::new(
        vec![Layer {
            name: "geo".into(),
            cache: Arc::new(c),
            renderer: None,
        }],
        Default::default(),
    )
    .unwrap();
    let r = get(&s, "/xyz/geo/0/0/0.png");
    assert_eq!(r.status, 404);
    assert!(text(&r).contains("not served as XYZ"), "{}", text(&r));
    assert_eq!(get(&s, "/xyz/geo.json").status, 404);
    let x = text(&get(&s, "/wmts/1.0.0/WMTSCapabilities.xml"));
    assert!(
        x.contains(
            "crs=\"urn:ogc:def:crs:EPSG::4326\"><ows:LowerCorner>-90 -180</ows:LowerCorner>"
        ),
        "{x}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&get(&s, "/arcgis/rest/services/geo/MapServer").body).unwrap();
    assert_eq!(v["units"], "esriDecimalDegrees");
}

#[test]
fn percent_escapes_and_queries() {
    assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    assert_eq!(percent_decode("%e2%82%ac"), "€");
    let q = Query::parse("A=1&b=x+y&c=%3D&flag");
    assert_eq!(q.get("a"), Some("1"));
    assert_eq!(q.get("B"), Some("x y"));
    assert_eq!(q.get("c"), Some("="));
    assert_eq!(q.get("flag"), Some(""));
}
