//! What `serve` says about its caches: the ArcGIS REST map service JSON, the WMTS 1.0.0
//! capabilities document, TileJSON 3.0.0 and the HTML index. Pure functions of the caches'
//! tiling schemes and extents.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{Layer, Service};
use crate::format::conf::{Envelope, TileScheme};
use crate::format::extent::{known_world, scheme_crs, scheme_epsg, scheme_extent, wgs84_extent};
use crate::format::scheme::{MapUnits, SpatialReference};

/// Metres per degree of the WMTS standard (OGC 07-057r7 §6.1, Annex E): the equatorial
/// circumference of the WGS 84 ellipsoid over 360, 6378137 × 2π / 360.
pub const WMTS_METRES_PER_DEGREE: f64 = 6378137.0 * 2.0 * std::f64::consts::PI / 360.0;

/// The "standardized rendering pixel size" of WMTS (OGC 07-057r7 §6.1): 0.28 mm.
pub const WMTS_PIXEL_SIZE: f64 = 0.00028;

/// The `currentVersion` the REST JSON claims: the ArcGIS Server release whose map service
/// resource shape it follows (10.81).
const REST_VERSION: f64 = 10.81;

/// The unit of a scheme's coordinates: from its WKT (the last `UNIT` of a `PROJCS`, degrees for a
/// `GEOGCS`), else its WKID; metres when neither tells.
pub fn units(s: &TileScheme) -> MapUnits {
    let by_wkt = s
        .wkt
        .as_ref()
        .and_then(|w| SpatialReference::Wkt(w.clone()).resolve().ok());
    let by_id = || {
        s.latest_wkid
            .or(s.wkid)
            .and_then(|id| SpatialReference::Wkid(id).resolve().ok())
    };
    by_wkt
        .or_else(by_id)
        .map_or(MapUnits::Linear(1.0), |r| r.units)
}

/// Whether coordinates in the scheme's spatial reference are written second axis first in WMTS
/// (`urn:ogc:def:crs:EPSG::N` follows the EPSG axis order): geographic ones (latitude first) and
/// the projected ones that are northing first ([`crate::format::axes::northing_first`]).
pub fn axes_swapped(s: &TileScheme) -> bool {
    let geographic =
        scheme_crs(s).is_ok_and(|c| c.is_geographic()) || matches!(units(s), MapUnits::Degrees);
    geographic || scheme_epsg(s).is_some_and(crate::format::axes::northing_first)
}

/// The extent a layer announces: conf.cdi's, else the scheme's known world, else the box the
/// scheme's origin spans symmetrically ([`scheme_extent`]).
pub fn layer_extent(l: &Layer) -> Option<Envelope> {
    let s = l.cache.scheme()?;
    Some(
        l.cache
            .extent()
            .or_else(|| known_world(s))
            .unwrap_or_else(|| scheme_extent(s)),
    )
}

/// One tile matrix of a WMTS tile matrix set.
#[derive(Debug, Clone, PartialEq)]
pub struct TileMatrix {
    /// The level number, also the identifier.
    pub level: u8,
    /// `ScaleDenominator`: resolution × metres per unit / 0.28 mm (dimensionless).
    pub scale_denominator: f64,
    /// The tiling origin in the CRS axis order ([`axes_swapped`]).
    pub top_left: (f64, f64),
    /// Tiles across from the origin to the far edge of the extent (`MatrixWidth`).
    pub width: u32,
    /// Tiles down from the origin to the far edge of the extent (`MatrixHeight`).
    pub height: u32,
}

/// The tile matrices of a scheme over `extent`: one per LOD, identified by its level.
pub fn tile_matrices(s: &TileScheme, extent: &Envelope) -> Vec<TileMatrix> {
    let mpu = match units(s) {
        MapUnits::Degrees => WMTS_METRES_PER_DEGREE,
        MapUnits::Linear(m) => m,
    };
    let top_left = if axes_swapped(s) {
        (s.origin_y, s.origin_x)
    } else {
        (s.origin_x, s.origin_y)
    };
    s.lods
        .iter()
        .map(|l| {
            let (rows, cols) = s.tile_range(l.level, extent).unwrap_or((0..1, 0..1));
            TileMatrix {
                level: l.level,
                scale_denominator: l.resolution * mpu / WMTS_PIXEL_SIZE,
                top_left,
                width: cols.end.max(1),
                height: rows.end.max(1),
            }
        })
        .collect()
}

fn spatial_reference(s: &TileScheme) -> Value {
    match (s.wkid, s.latest_wkid, &s.wkt) {
        (Some(w), Some(l), _) => json!({"wkid": w, "latestWkid": l}),
        (Some(w), None, _) => json!({"wkid": w}),
        (None, Some(l), _) => json!({"wkid": l, "latestWkid": l}),
        (None, None, Some(wkt)) => json!({"wkt": wkt}),
        (None, None, None) => json!({}),
    }
}

fn esri_units(s: &TileScheme) -> &'static str {
    match units(s) {
        MapUnits::Degrees => "esriDecimalDegrees",
        MapUnits::Linear(m) if (m - 1.0).abs() < 1e-9 => "esriMeters",
        MapUnits::Linear(m) if (m - 0.3048).abs() < 1e-4 => "esriFeet",
        MapUnits::Linear(_) => "esriUnknownUnits",
    }
}

/// `/arcgis/rest/services?f=json`: the catalog (every cache a MapServer in the root folder).
pub fn catalog(svc: &Service) -> Value {
    let services: Vec<Value> = svc
        .layers()
        .iter()
        .map(|l| json!({"name": l.name, "type": "MapServer"}))
        .collect();
    json!({"currentVersion": REST_VERSION, "folders": [], "services": services})
}

/// The map service resource of a cached map service (ArcGIS REST API, "Map Service"): the
/// tiling scheme as `tileInfo` (rows, cols, dpi, format, compressionQuality, origin,
/// spatialReference, lods with level, resolution and scale, all conf.xml's), the extent as
/// `fullExtent` and `initialExtent`, `singleFusedMapCache: true`, `capabilities: "Map"`, units.
/// An error for a cache without a tiling scheme (no conf.xml).
pub fn map_service(l: &Layer) -> Result<Value, String> {
    let s = l.cache.scheme().ok_or_else(|| {
        format!(
            "{}: no tiling scheme (no conf.xml in {}), so no map service description",
            l.name,
            l.cache.location()
        )
    })?;
    let sr = spatial_reference(s);
    let e = layer_extent(l).unwrap_or_else(|| scheme_extent(s));
    let extent = json!({
        "xmin": e.xmin, "ymin": e.ymin, "xmax": e.xmax, "ymax": e.ymax,
        "spatialReference": sr.clone(),
    });
    let lods: Vec<Value> = s
        .lods
        .iter()
        .map(|x| json!({"level": x.level, "resolution": x.resolution, "scale": x.scale}))
        .collect();
    Ok(json!({
        "currentVersion": REST_VERSION,
        "serviceDescription": "",
        "mapName": l.name,
        "description": format!("{} served by bundlefs", l.cache.location()),
        "copyrightText": "",
        "supportsDynamicLayers": false,
        "layers": [],
        "tables": [],
        "spatialReference": sr.clone(),
        "singleFusedMapCache": true,
        "tileInfo": {
            "rows": s.tile_rows,
            "cols": s.tile_cols,
            "dpi": s.dpi,
            "format": s.tile_format.name(),
            "compressionQuality": s.compression_quality,
            "origin": {"x": s.origin_x, "y": s.origin_y},
            "spatialReference": sr,
            "lods": lods,
        },
        "initialExtent": extent.clone(),
        "fullExtent": extent,
        "minScale": s.lods.first().map_or(0.0, |x| x.scale),
        "maxScale": s.lods.last().map_or(0.0, |x| x.scale),
        "units": esri_units(s),
        "supportedImageFormatTypes": s.tile_format.name(),
        "capabilities": "Map",
        "exportTilesAllowed": false,
        "maxExportTilesCount": 0,
    }))
}

/// The levels a layer offers to XYZ clients: those stored (with a renderer: all of the scheme's).
fn served_levels(l: &Layer, s: &TileScheme) -> Vec<u8> {
    let all: Vec<u8> = s.lods.iter().map(|x| x.level).collect();
    if l.renderer.is_some() {
        return all;
    }
    match l.cache.levels() {
        Ok(v) if v.iter().any(|x| all.contains(x)) => {
            v.into_iter().filter(|x| all.contains(x)).collect()
        }
        _ => all,
    }
}

/// TileJSON 3.0.0 of a layer (github.com/mapbox/tilejson-spec, 3.0.0): the XYZ URL template,
/// zoom range (stored levels), bounds and center in WGS 84 degrees.
pub fn tilejson(l: &Layer, s: &TileScheme, base: &str) -> Value {
    let levels = served_levels(l, s);
    let (min, max) = (
        levels.iter().min().copied().unwrap_or(0),
        levels.iter().max().copied().unwrap_or(0),
    );
    let ext = ext_of(s);
    let mut v = json!({
        "tilejson": "3.0.0",
        "name": l.name,
        "tiles": [format!("{base}/xyz/{}/{{z}}/{{x}}/{{y}}.{ext}", l.name)],
        "scheme": "xyz",
        "minzoom": min,
        "maxzoom": max,
        "attribution": "",
    });
    if let Some(g) = layer_extent(l).and_then(|e| wgs84_extent(s, &e)) {
        v["bounds"] = json!([g.xmin, g.ymin, g.xmax, g.ymax]);
        v["center"] = json!([(g.xmin + g.xmax) / 2.0, (g.ymin + g.ymax) / 2.0, min]);
    }
    v
}

/// The file extension of tile URLs of a scheme (MIXED and PNG caches: png).
fn ext_of(s: &TileScheme) -> &'static str {
    match s.tile_format.image_kind() {
        Some(k) => k.ext(),
        None => "png",
    }
}

/// The MIME types a layer's tiles may have: MIXED both PNG and JPEG.
fn formats_of(s: &TileScheme) -> Vec<(&'static str, &'static str)> {
    match s.tile_format.image_kind() {
        Some(k) => vec![(super::content_type(k), k.ext())],
        None => vec![("image/png", "png"), ("image/jpeg", "jpg")],
    }
}

/// XML text with `&`, `<`, `>`, `"` escaped.
fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The WMTS 1.0.0 capabilities (OGC 07-057r7): one layer per cache with a tiling scheme and an
/// EPSG code, named and titled by its name, a `default` style, its formats, a KVP GetTile and a
/// RESTful `ResourceURL` template; one tile matrix set per cache named like it, from its
/// tiling scheme ([`tile_matrices`]). Caches that cannot be described are left out with an XML
/// comment saying why.
pub fn wmts_capabilities(svc: &Service, base: &str) -> String {
    let mut x = String::new();
    let kvp = format!("{}/wmts?", esc(base));
    let op = |name: &str| {
        format!(
            "    <ows:Operation name=\"{name}\"><ows:DCP><ows:HTTP>\
             <ows:Get xlink:href=\"{kvp}\"><ows:Constraint name=\"GetEncoding\"><ows:AllowedValues>\
             <ows:Value>KVP</ows:Value></ows:AllowedValues></ows:Constraint></ows:Get>\
             </ows:HTTP></ows:DCP></ows:Operation>\n"
        )
    };
    x.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Capabilities xmlns=\"http://www.opengis.net/wmts/1.0\" \
         xmlns:ows=\"http://www.opengis.net/ows/1.1\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:gml=\"http://www.opengis.net/gml\" \
         xsi:schemaLocation=\"http://www.opengis.net/wmts/1.0 \
         http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd\" version=\"1.0.0\">\n\
         \x20 <ows:ServiceIdentification>\n\
         \x20   <ows:Title>bundlefs</ows:Title>\n\
         \x20   <ows:ServiceType>OGC WMTS</ows:ServiceType>\n\
         \x20   <ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>\n\
         \x20 </ows:ServiceIdentification>\n\
         \x20 <ows:OperationsMetadata>\n",
    );
    x.push_str(&op("GetCapabilities"));
    x.push_str(&op("GetTile"));
    x.push_str("  </ows:OperationsMetadata>\n  <Contents>\n");
    let mut sets = String::new();
    for l in svc.layers() {
        let name = esc(&l.name);
        let Some(s) = l.cache.scheme() else {
            let _ = writeln!(x, "    <!-- {name}: no tiling scheme (no conf.xml) -->");
            continue;
        };
        let Some(epsg) = scheme_epsg(s) else {
            let _ = writeln!(
                x,
                "    <!-- {name}: its spatial reference has no EPSG code -->"
            );
            continue;
        };
        let e = layer_extent(l).unwrap_or_else(|| scheme_extent(s));
        let crs = format!("urn:ogc:def:crs:EPSG::{epsg}");
        let _ = writeln!(x, "    <Layer>\n      <ows:Title>{name}</ows:Title>");
        if let Some(g) = wgs84_extent(s, &e) {
            let _ = writeln!(
                x,
                "      <ows:WGS84BoundingBox><ows:LowerCorner>{} {}</ows:LowerCorner>\
                 <ows:UpperCorner>{} {}</ows:UpperCorner></ows:WGS84BoundingBox>",
                g.xmin, g.ymin, g.xmax, g.ymax
            );
        }
        let _ = writeln!(x, "      <ows:Identifier>{name}</ows:Identifier>");
        let (lo, hi) = if axes_swapped(s) {
            ((e.ymin, e.xmin), (e.ymax, e.xmax))
        } else {
            ((e.xmin, e.ymin), (e.xmax, e.ymax))
        };
        let _ = writeln!(
            x,
            "      <ows:BoundingBox crs=\"{crs}\"><ows:LowerCorner>{} {}</ows:LowerCorner>\
             <ows:UpperCorner>{} {}</ows:UpperCorner></ows:BoundingBox>",
            lo.0, lo.1, hi.0, hi.1
        );
        x.push_str(
            "      <Style isDefault=\"true\"><ows:Identifier>default</ows:Identifier></Style>\n",
        );
        let formats = formats_of(s);
        for (mime, _) in &formats {
            let _ = writeln!(x, "      <Format>{mime}</Format>");
        }
        let _ = writeln!(
            x,
            "      <TileMatrixSetLink><TileMatrixSet>{name}</TileMatrixSet></TileMatrixSetLink>"
        );
        for (mime, ext) in &formats {
            let _ = writeln!(
                x,
                "      <ResourceURL format=\"{mime}\" resourceType=\"tile\" \
                 template=\"{}/wmts/1.0.0/{name}/default/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.{ext}\"/>",
                esc(base)
            );
        }
        x.push_str("    </Layer>\n");
        let _ = writeln!(
            sets,
            "    <TileMatrixSet>\n      <ows:Identifier>{name}</ows:Identifier>\n      \
             <ows:SupportedCRS>{crs}</ows:SupportedCRS>"
        );
        for m in tile_matrices(s, &e) {
            let _ = writeln!(
                sets,
                "      <TileMatrix><ows:Identifier>{}</ows:Identifier>\
                 <ScaleDenominator>{}</ScaleDenominator><TopLeftCorner>{} {}</TopLeftCorner>\
                 <TileWidth>{}</TileWidth><TileHeight>{}</TileHeight>\
                 <MatrixWidth>{}</MatrixWidth><MatrixHeight>{}</MatrixHeight></TileMatrix>",
                m.level,
                m.scale_denominator,
                m.top_left.0,
                m.top_left.1,
                s.tile_cols,
                s.tile_rows,
                m.width,
                m.height
            );
        }
        sets.push_str("    </TileMatrixSet>\n");
    }
    x.push_str(&sets);
    let _ = write!(
        x,
        "  </Contents>\n  <ServiceMetadataURL xlink:href=\"{}/wmts/1.0.0/WMTSCapabilities.xml\"/>\n\
         </Capabilities>\n",
        esc(base)
    );
    x
}

/// The HTML index at `/`: each cache, where it lives, and its URLs.
pub fn index_html(svc: &Service, base: &str) -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>bundlefs serve</title></head>\
         <body>\n<h1>bundlefs serve</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>WMTS: <a href=\"/wmts/1.0.0/WMTSCapabilities.xml\">{0}/wmts/1.0.0/WMTSCapabilities.xml</a> \
         (KVP: <a href=\"/wmts?SERVICE=WMTS&amp;REQUEST=GetCapabilities\">{0}/wmts?SERVICE=WMTS&amp;REQUEST=GetCapabilities</a>)</p>\n<ul>",
        esc(base)
    );
    for l in svc.layers() {
        let name = esc(&l.name);
        let _ = write!(
            h,
            "<li><b>{name}</b> ({}): <a href=\"/arcgis/rest/services/{name}/MapServer?f=json\">ArcGIS REST</a>, \
             tiles <code>{}/arcgis/rest/services/{name}/MapServer/tile/{{level}}/{{row}}/{{col}}</code>",
            esc(&l.cache.location().to_string()),
            esc(base)
        );
        if let Some(s) = l.cache.scheme() {
            if crate::format::mbtiles::refusal(s).is_none() {
                let _ = write!(
                    h,
                    "; XYZ <code>{}/xyz/{name}/{{z}}/{{x}}/{{y}}.{}</code> \
                     (<a href=\"/xyz/{name}.json\">TileJSON</a>)",
                    esc(base),
                    ext_of(s)
                );
            }
        }
        h.push_str("</li>\n");
    }
    h.push_str("</ul>\n</body></html>\n");
    h
}
