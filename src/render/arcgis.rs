//! The `arcgis:URL` source: a map service's REST "Export Map" operation asked for one tile's
//! bounding box at the cache's size, spatial reference, DPI and image format (`f=image`, so the
//! server streams the image bytes), and the service's own description (`f=json`) for the largest
//! image it exports (`maxImageWidth`/`maxImageHeight`).

use super::http::{encode_value, num, HttpClient, SplitUrl};
use super::supertile::{advertised_max, MAX_IMAGE_PX as MAX};
use super::Area;
use super::TileSource;
use crate::format::conf::{Envelope, TileFormat, TileScheme};
use crate::format::TileAddr;
use crate::{Error, Result};

/// Export parameters bundlefs derives from the tile; a URL that sets them is refused.
const DERIVED: [&str; 5] = ["bbox", "bboxSR", "imageSR", "size", "f"];
/// Export parameters with a default from the scheme that the URL may override.
const DEFAULTED: [&str; 3] = ["format", "transparent", "dpi"];

/// A map service's export operation.
#[derive(Debug)]
pub struct ArcGisSource {
    url: SplitUrl,
    http: HttpClient,
}

/// The export `format` for a cache format: `jpg` for JPEG, `png8`/`png24` for those, else `png32`.
pub fn export_format(f: &TileFormat) -> &'static str {
    match f {
        TileFormat::Jpeg => "jpg",
        TileFormat::Png8 => "png8",
        TileFormat::Png24 => "png24",
        _ => "png32",
    }
}

/// The spatial reference parameter of a scheme: its WKID, else `{"wkt":…}`.
pub fn spatial_reference(s: &TileScheme) -> Option<String> {
    if let Some(id) = s.wkid.or(s.latest_wkid) {
        return Some(id.to_string());
    }
    s.wkt
        .as_ref()
        .map(|wkt| encode_value(&serde_json::json!({ "wkt": wkt }).to_string()))
}

impl ArcGisSource {
    /// `url` is the map service (`…/MapServer`) or its export operation (`…/MapServer/export`);
    /// other query parameters (`layers=show:1`, `token=…`, `time=…`) are passed on unchanged.
    pub fn new(url: &str, http: HttpClient) -> Result<Self> {
        let mut u = SplitUrl::parse(url).map_err(|e| Error::invalid(format!("arcgis:{e}")))?;
        if let Some((k, _)) = u
            .params
            .iter()
            .find(|(k, _)| DERIVED.iter().any(|d| d.eq_ignore_ascii_case(k)))
        {
            return Err(Error::invalid(format!(
                "arcgis:{url}: parameter {k:?} is set by bundlefs from each tile; remove it from the URL"
            )));
        }
        let trimmed = u.base.trim_end_matches('/');
        u.base = if trimmed.ends_with("/export") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/export")
        };
        Ok(ArcGisSource { url: u, http })
    }

    /// The service description request: the map service's URL (without `/export`) and the URL's
    /// own parameters (`token=…`), with `f=json`.
    pub fn info_url(&self) -> String {
        let mut u = self.url.clone();
        u.base = u.base.trim_end_matches("/export").to_string();
        u.join(&[("f", "json".into())])
    }

    /// The export request for a tile.
    pub fn request_url(&self, scheme: &TileScheme, tile: TileAddr) -> Result<String> {
        let bbox = scheme
            .tile_bbox(tile)
            .ok_or_else(|| Error::NotFound(format!("level {} in conf.xml", tile.level)))?;
        self.area_url(scheme, &bbox, scheme.tile_cols, scheme.tile_rows)
    }

    /// The export request for a map area (`bbox` in the scheme's map units) drawn at
    /// `width` × `height` pixels.
    pub fn area_url(
        &self,
        scheme: &TileScheme,
        bbox: &Envelope,
        width: u32,
        height: u32,
    ) -> Result<String> {
        let sr = spatial_reference(scheme).ok_or_else(|| {
            Error::invalid("arcgis source: conf.xml gives neither WKID nor WKT for the tiles")
        })?;
        let mut pairs = vec![
            (
                "bbox",
                format!(
                    "{},{},{},{}",
                    num(bbox.xmin),
                    num(bbox.ymin),
                    num(bbox.xmax),
                    num(bbox.ymax)
                ),
            ),
            ("bboxSR", sr.clone()),
            ("imageSR", sr),
            ("size", format!("{width},{height}")),
        ];
        let defaults = [
            scheme.dpi.to_string(),
            export_format(&scheme.tile_format).to_string(),
            (scheme.tile_format != TileFormat::Jpeg).to_string(),
        ];
        for (k, v) in ["dpi", "format", "transparent"].into_iter().zip(defaults) {
            debug_assert!(DEFAULTED.contains(&k));
            if self.url.get(k).is_none() {
                pairs.push((k, v));
            }
        }
        pairs.push(("f", "image".into()));
        Ok(self.url.join(&pairs))
    }
}

impl TileSource for ArcGisSource {
    fn describe(&self) -> String {
        format!("arcgis:{}", super::http::redact(&self.url.join(&[])))
    }

    fn check(&self, scheme: &TileScheme) -> Result<()> {
        if spatial_reference(scheme).is_none() {
            return Err(Error::invalid(format!(
                "{}: conf.xml gives neither WKID nor WKT, so the export's bboxSR/imageSR are unknown",
                self.describe()
            )));
        }
        Ok(())
    }

    fn render(&self, scheme: &TileScheme, tile: TileAddr) -> Result<Option<Vec<u8>>> {
        let url = self.request_url(scheme, tile)?;
        let got = self.http.get(&url)?;
        Ok(Some(got.body))
    }

    fn draws_areas(&self) -> bool {
        true
    }

    fn render_area(&self, scheme: &TileScheme, area: &Area) -> Result<Option<Vec<u8>>> {
        let url = self.area_url(scheme, &area.bbox, area.width, area.height)?;
        let got = self.http.get(&url)?;
        Ok(Some(got.body))
    }

    /// `maxImageWidth`/`maxImageHeight` of the service's `f=json` description (Esri REST API, map
    /// and image service resources; ArcGIS Server's default is 4096). Esri: "If a value greater
    /// than the maximum is specified, the maximum value will be used", so a larger supertile
    /// would come back smaller than asked.
    fn max_image(&self) -> Option<(u32, u32)> {
        let url = self.info_url();
        let shown = super::http::redact(&url);
        let json = match self.http.get(&url).and_then(|got| {
            serde_json::from_slice::<serde_json::Value>(&got.body)
                .map_err(|e| Error::source(&shown, format!("not JSON: {e}")))
        }) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{e}; assuming the service draws up to {MAX} px a side");
                return None;
            }
        };
        let side = |k: &str| json.get(k).and_then(serde_json::Value::as_u64);
        let max = advertised_max(side("maxImageWidth"), side("maxImageHeight"));
        match max {
            Some((w, h)) => tracing::info!("{shown}: the service draws at most {w} x {h} px"),
            None => tracing::warn!(
                "{shown}: no maxImageWidth/maxImageHeight ({}); assuming {MAX} px a side",
                super::pixels::quote(json.to_string().as_bytes())
            ),
        }
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::HttpOptions;

    #[test]
    fn request_has_every_parameter() {
        let http = HttpClient::new(&HttpOptions::default()).unwrap();
        let s = TileScheme::web_mercator(3, TileFormat::Jpeg);
        let src = ArcGisSource::new(
            "https://h/arcgis/rest/services/W/MapServer/?layers=show:2",
            http.clone(),
        )
        .unwrap();
        let u = src.request_url(&s, TileAddr::new(1, 0, 1)).unwrap();
        assert!(
            u.starts_with("https://h/arcgis/rest/services/W/MapServer/export?layers=show:2&bbox="),
            "{u}"
        );
        for p in [
            "bboxSR=102100",
            "imageSR=102100",
            "size=256,256",
            "dpi=96",
            "format=jpg",
            "transparent=false",
            "f=image",
        ] {
            assert!(u.contains(p), "{p} missing from {u}");
        }
        assert_eq!(
            src.info_url(),
            "https://h/arcgis/rest/services/W/MapServer?layers=show:2&f=json"
        );
        let e = ArcGisSource::new("http://h/MapServer/export?bbox=1,2,3,4", http).unwrap_err();
        assert!(e.to_string().contains("\"bbox\""), "{e}");
    }
}
