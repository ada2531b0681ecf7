//! The `wms:URL` source: OGC WMS GetMap (1.1.1 or 1.3.0) for one tile's bounding box. WMS
//! parameters (LAYERS, STYLES, VERSION, CRS/SRS, FORMAT, TRANSPARENT, vendor ones like `map=`) come
//! from the URL's query; bundlefs adds SERVICE, REQUEST, BBOX, WIDTH, HEIGHT. Options for bundlefs
//! itself follow a `#` (never sent): `#axis=xy|yx` overrides the 1.3.0 axis-order rule. The
//! largest image the server draws comes from its 1.3.0 GetCapabilities (`<Service>`'s
//! `<MaxWidth>`/`<MaxHeight>`; 1.1.1 has no such field).

use super::http::{num, HttpClient, SplitUrl};
use super::supertile::{advertised_max, MAX_IMAGE_PX as MAX};
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

    /// `<MaxWidth>`/`<MaxHeight>` of the 1.3.0 capabilities' `<Service>` (OGC 06-042, 7.2.4.2;
    /// MapServer advertises its mapfile's MAXSIZE there, 4096 without one).
    fn max_image(&self) -> Option<(u32, u32)> {
        let url = self.capabilities_url();
        let shown = super::http::redact(&url);
        let body = match self.http.get(&url) {
            Ok(got) => got.body,
            Err(e) => {
                tracing::warn!("{e}; assuming the server draws up to {MAX} px a side");
                return None;
            }
        };
        let (w, h) = service_max_size(&body);
        let max = advertised_max(w, h);
        match max {
            Some((w, h)) => tracing::info!("{shown}: the server draws at most {w} x {h} px"),
            // MapServer answers an exception when, e.g., it cannot tell its own URL.
            None if body.windows(16).any(|w| w == b"ServiceException") => tracing::warn!(
                "{shown}: server answered {}; assuming it draws up to {MAX} px a side",
                super::pixels::quote(&body)
            ),
            None => tracing::info!(
                "{shown}: no <MaxWidth>/<MaxHeight> in the capabilities' <Service>; assuming {MAX} px \
                 a side"
            ),
        }
        max
    }
}

/// `<Service>`'s `<MaxWidth>` and `<MaxHeight>` in a WMS capabilities document (any namespace
/// prefix); a missing or unreadable value is None.
pub fn service_max_size(xml: &[u8]) -> (Option<u64>, Option<u64>) {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(xml);
    let (mut in_service, mut field) = (false, None::<bool>);
    let (mut w, mut h) = (None, None);
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"Service" => in_service = true,
                b"MaxWidth" if in_service => field = Some(true),
                b"MaxHeight" if in_service => field = Some(false),
                _ => field = None,
            },
            Ok(Event::Text(t)) => {
                if let Some(width) = field {
                    let v = t.unescape().ok().and_then(|v| v.trim().parse::<u64>().ok());
                    if width {
                        w = v;
                    } else {
                        h = v;
                    }
                }
            }
            Ok(Event::End(e)) => {
                field = None;
                if e.local_name().as_ref() == b"Service" {
                    in_service = false;
                }
            }
            Ok(Event::Eof) | Err(_) => return (w, h),
            _ => {}
        }
        buf.clear();
    }
}

impl WmsSource {
    /// The GetCapabilities request: the URL's own parameters (`map=…`) with SERVICE, REQUEST and
    /// VERSION=1.3.0 whatever version GetMap uses, since only 1.3.0 capabilities carry the maximum
    /// image size and a server's limit does not depend on the version asked.
    pub fn capabilities_url(&self) -> String {
        self.url.join(&[
            ("SERVICE", "WMS".to_string()),
            ("VERSION", "1.3.0".to_string()),
            ("REQUEST", "GetCapabilities".to_string()),
        ])
    }

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
        assert_eq!(
            v11.capabilities_url(),
            "http://h/wms?LAYERS=a&SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities"
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

    #[test]
    fn max_size_is_read_from_the_service_section_only() {
        let caps = br#"<?xml version="1.0"?>
<WMS_Capabilities version="1.3.0" xmlns="http://www.opengis.net/wms">
<Service><Name>WMS</Name><MaxWidth> 2048 </MaxWidth><MaxHeight>1024</MaxHeight></Service>
<Capability><Layer><MaxWidth>9</MaxWidth></Layer></Capability>
</WMS_Capabilities>"#;
        assert_eq!(service_max_size(caps), (Some(2048), Some(1024)));
        let v111 = br#"<WMT_MS_Capabilities version="1.1.1"><Service><Name>OGC:WMS</Name></Service>
<Capability><Layer><MaxWidth>9</MaxWidth></Layer></Capability></WMT_MS_Capabilities>"#;
        assert_eq!(service_max_size(v111), (None, None));
        assert_eq!(service_max_size(b"<not xml"), (None, None));
        assert_eq!(advertised_max(None, None), None);
        assert_eq!(advertised_max(Some(2048), None), Some((2048, MAX)));
    }
}
