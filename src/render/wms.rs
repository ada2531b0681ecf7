//! The `wms:URL` source: OGC WMS GetMap (1.1.1 or 1.3.0) for one tile's bounding box. WMS
//! parameters (LAYERS, STYLES, VERSION, CRS/SRS, FORMAT, TRANSPARENT, vendor ones like `map=`) come
//! from the URL's query; bundlefs adds SERVICE, REQUEST, BBOX, WIDTH, HEIGHT. Options for bundlefs
//! itself follow a `#` (never sent): `#axis=xy|yx` overrides the 1.3.0 axis-order rule.

use super::http::{num, HttpClient, SplitUrl};
use super::Area;
use super::TileSource;
use crate::format::conf::{Envelope, TileFormat, TileScheme};
use crate::format::TileAddr;
use crate::{Error, Result};

/// GetMap parameters bundlefs sets per tile; a URL that sets them is refused.
const DERIVED: [&str; 5] = ["service", "request", "bbox", "width", "height"];

/// EPSG geographic CRSs whose axis order is latitude first (WMS 1.3.0 honours the EPSG order):
/// WGS 84 and the common national datums.
const LAT_FIRST_EPSG: [u32; 14] = [
    4326, 4258, 4269, 4267, 4283, 4148, 4167, 4171, 4230, 4231, 4314, 4612, 4617, 4674,
];

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WmsVersion {
    V111,
    V130,
}

/// Axis order of BBOX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// x (easting/longitude) first.
    Xy,
    /// y (northing/latitude) first.
    Yx,
}

/// A WMS layer set.
#[derive(Debug)]
pub struct WmsSource {
    url: SplitUrl,
    version: WmsVersion,
    crs: Option<String>,
    axis: Option<Axis>,
    http: HttpClient,
}

/// The CRS code a scheme's WKID means in WMS: Esri's Web Mercator ids become EPSG:3857.
pub fn crs_of(s: &TileScheme) -> Option<String> {
    let id = match s.latest_wkid.or(s.wkid)? {
        102100 | 102113 | 900913 => 3857,
        id if id >= 100_000 => return None,
        id => id,
    };
    Some(format!("EPSG:{id}"))
}

/// Whether BBOX is latitude/northing first for this CRS and version.
pub fn axis_for(version: WmsVersion, crs: &str) -> Axis {
    if version == WmsVersion::V111 {
        return Axis::Xy;
    }
    let code = crs
        .to_ascii_uppercase()
        .strip_prefix("EPSG:")
        .and_then(|c| c.parse::<u32>().ok());
    match code {
        Some(c) if LAT_FIRST_EPSG.contains(&c) => Axis::Yx,
        _ => Axis::Xy,
    }
}

impl WmsSource {
    pub fn new(spec_url: &str, http: HttpClient) -> Result<Self> {
        let ctx = |msg: String| Error::invalid(format!("wms:{spec_url}: {msg}"));
        let (url, options) = spec_url.split_once('#').unwrap_or((spec_url, ""));
        let mut u = SplitUrl::parse(url).map_err(|e| Error::invalid(format!("wms:{e}")))?;
        if let Some((k, _)) = u
            .params
            .iter()
            .find(|(k, _)| DERIVED.iter().any(|d| d.eq_ignore_ascii_case(k)))
        {
            return Err(ctx(format!(
                "parameter {k:?} is set by bundlefs from each tile; remove it from the URL"
            )));
        }
        if u.get("layers").is_none() {
            return Err(ctx(
                "the URL needs LAYERS=… (comma-separated layer names)".into()
            ));
        }
        let version = match u.take("version").as_deref() {
            None | Some("1.3.0") => WmsVersion::V130,
            Some("1.1.1") => WmsVersion::V111,
            Some(v) => return Err(ctx(format!("VERSION={v}: want 1.1.1 or 1.3.0"))),
        };
        let crs = match (u.take("crs"), u.take("srs")) {
            (Some(a), Some(b)) if a != b => {
                return Err(ctx(format!("CRS={a} and SRS={b} disagree")));
            }
            (a, b) => a.or(b),
        };
        let mut axis = None;
        for opt in options.split('&').filter(|o| !o.is_empty()) {
            match opt.to_ascii_lowercase().as_str() {
                "axis=xy" => axis = Some(Axis::Xy),
                "axis=yx" => axis = Some(Axis::Yx),
                _ => {
                    return Err(ctx(format!(
                        "unknown option #{opt} (known: axis=xy, axis=yx)"
                    )))
                }
            }
        }
        Ok(WmsSource {
            url: u,
            version,
            crs,
            axis,
            http,
        })
    }

    fn crs(&self, scheme: &TileScheme) -> Result<String> {
        self.crs.clone().or_else(|| crs_of(scheme)).ok_or_else(|| {
            Error::invalid(format!(
                "{}: conf.xml's spatial reference has no EPSG code; give CRS=EPSG:… in the URL",
                self.describe()
            ))
        })
    }

    /// The GetMap request for a tile.
    pub fn request_url(&self, scheme: &TileScheme, tile: TileAddr) -> Result<String> {
        let b = scheme
            .tile_bbox(tile)
            .ok_or_else(|| Error::NotFound(format!("level {} in conf.xml", tile.level)))?;
        self.area_url(scheme, &b, scheme.tile_cols, scheme.tile_rows)
    }

    /// The GetMap request for a map area (`b` in the scheme's map units) drawn at
    /// `width` × `height` pixels.
    pub fn area_url(
        &self,
        scheme: &TileScheme,
        b: &Envelope,
        width: u32,
        height: u32,
    ) -> Result<String> {
        let crs = self.crs(scheme)?;
        let axis = self.axis.unwrap_or_else(|| axis_for(self.version, &crs));
        let bbox = match axis {
            Axis::Xy => [b.xmin, b.ymin, b.xmax, b.ymax],
            Axis::Yx => [b.ymin, b.xmin, b.ymax, b.xmax],
        }
        .map(num)
        .join(",");
        let (version, crs_key) = match self.version {
            WmsVersion::V111 => ("1.1.1", "SRS"),
            WmsVersion::V130 => ("1.3.0", "CRS"),
        };
        let mut pairs = vec![
            ("SERVICE", "WMS".to_string()),
            ("VERSION", version.to_string()),
            ("REQUEST", "GetMap".to_string()),
        ];
        if self.url.get("styles").is_none() {
            pairs.push(("STYLES", String::new()));
        }
        pairs.push((crs_key, crs));
        pairs.push(("BBOX", bbox));
        pairs.push(("WIDTH", width.to_string()));
        pairs.push(("HEIGHT", height.to_string()));
        let jpeg = scheme.tile_format == TileFormat::Jpeg;
        if self.url.get("format").is_none() {
            let f = if jpeg { "image/jpeg" } else { "image/png" };
            pairs.push(("FORMAT", f.to_string()));
        }
        if self.url.get("transparent").is_none() {
            pairs.push((
                "TRANSPARENT",
                if jpeg { "FALSE" } else { "TRUE" }.to_string(),
            ));
        }
        Ok(self.url.join(&pairs))
    }
}

impl TileSource for WmsSource {
    fn describe(&self) -> String {
        format!("wms:{}", super::http::redact(&self.url.join(&[])))
    }

    fn check(&self, scheme: &TileScheme) -> Result<()> {
        self.crs(scheme).map(|_| ())
    }

    fn render(&self, scheme: &TileScheme, tile: TileAddr) -> Result<Option<Vec<u8>>> {
        let url = self.request_url(scheme, tile)?;
        self.get(&url)
    }

    fn draws_areas(&self) -> bool {
        true
    }

    fn render_area(&self, scheme: &TileScheme, area: &Area) -> Result<Option<Vec<u8>>> {
        let url = self.area_url(scheme, &area.bbox, area.width, area.height)?;
        self.get(&url)
    }
}

impl WmsSource {
    /// GETs a GetMap URL; an XML answer (a service exception) is an error quoting it.
    fn get(&self, url: &str) -> Result<Option<Vec<u8>>> {
        let got = self.http.get(url)?;
        // Servers report errors as XML with status 200; say so rather than "not an image".
        if let Some(ct) = &got.content_type {
            if ct.contains("xml") {
                return Err(Error::source(
                    super::http::redact(url),
                    format!("server answered {ct}: {}", super::pixels::quote(&got.body)),
                ));
            }
        }
        Ok(Some(got.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::HttpOptions;

    fn geographic() -> TileScheme {
        let mut s = TileScheme::web_mercator(2, TileFormat::Png);
        s.wkid = Some(4326);
        s.latest_wkid = Some(4326);
        s.origin_x = -180.0;
        s.origin_y = 90.0;
        for (i, l) in s.lods.iter_mut().enumerate() {
            l.resolution = 0.703125 / f64::from(1u32 << i);
        }
        s
    }

    #[test]
    fn axis_order_and_parameters() {
        let http = HttpClient::new(&HttpOptions::default()).unwrap();
        let s = geographic();
        let t = TileAddr::new(0, 0, 0);
        let v13 = WmsSource::new("http://h/wms?map=/m.map&LAYERS=a,b", http.clone()).unwrap();
        let u = v13.request_url(&s, t).unwrap();
        assert!(
            u.contains("VERSION=1.3.0") && u.contains("CRS=EPSG:4326"),
            "{u}"
        );
        assert!(
            u.contains("BBOX=-90,-180,90,0") && u.contains("map=/m.map"),
            "{u}"
        );
        let v11 = WmsSource::new("http://h/wms?LAYERS=a&version=1.1.1", http.clone()).unwrap();
        let u = v11.request_url(&s, t).unwrap();
        assert!(
            u.contains("SRS=EPSG:4326") && u.contains("BBOX=-180,-90,0,90"),
            "{u}"
        );
        let forced = WmsSource::new("http://h/wms?LAYERS=a#axis=xy", http.clone()).unwrap();
        assert!(forced
            .request_url(&s, t)
            .unwrap()
            .contains("BBOX=-180,-90,0,90"));
        let wm = TileScheme::web_mercator(1, TileFormat::Jpeg);
        let u = v13.request_url(&wm, t).unwrap();
        assert!(
            u.contains("CRS=EPSG:3857") && u.contains("FORMAT=image/jpeg"),
            "{u}"
        );
        for bad in [
            "http://h/wms",
            "http://h/wms?LAYERS=a&BBOX=1",
            "http://h/wms?LAYERS=a&VERSION=1.0.0",
            "http://h/wms?LAYERS=a#x=1",
        ] {
            assert!(WmsSource::new(bad, http.clone()).is_err(), "{bad}");
        }
    }
}
