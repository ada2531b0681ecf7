//! `--source` values: `arcgis:URL`, `wms:URL[#axis=xy|yx]`, `resample`, `label`.

use std::str::FromStr;
use std::sync::Arc;

use super::arcgis::ArcGisSource;
use super::http::{HttpClient, HttpOptions};
use super::label::LabelSource;
use super::resample::ResampleSource;
use super::wms::WmsSource;
use super::TileSource;
use crate::cache::Cache;
use crate::{Error, Result};

/// A parsed `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A map service's REST export (`…/MapServer` or `…/MapServer/export`, extra parameters kept).
    ArcGis(String),
    /// A WMS endpoint with its GetMap parameters (LAYERS required), optionally `#axis=…`.
    Wms(String),
    /// Tiles made from stored tiles of the neighbouring levels.
    Resample,
    /// Labelled tiles drawn by bundlefs.
    Label,
}

const SYNTAX: &str = "arcgis:URL, wms:URL, resample or label";

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(url) = s.strip_prefix("arcgis:") {
            return Ok(SourceSpec::ArcGis(url.to_string()));
        }
        if let Some(url) = s.strip_prefix("wms:") {
            return Ok(SourceSpec::Wms(url.to_string()));
        }
        match s {
            "resample" => Ok(SourceSpec::Resample),
            "label" => Ok(SourceSpec::Label),
            _ => Err(Error::invalid(format!("--source {s:?}: want {SYNTAX}"))),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::ArcGis(u) => write!(f, "arcgis:{}", super::http::redact(u)),
            SourceSpec::Wms(u) => write!(f, "wms:{}", super::http::redact(u)),
            SourceSpec::Resample => f.write_str("resample"),
            SourceSpec::Label => f.write_str("label"),
        }
    }
}

impl SourceSpec {
    /// The source, with its own HTTP agent for the network ones. `cache` is what `resample` reads.
    pub fn build(&self, cache: &Arc<Cache>, http: &HttpOptions) -> Result<Arc<dyn TileSource>> {
        Ok(match self {
            SourceSpec::ArcGis(u) => Arc::new(ArcGisSource::new(u, HttpClient::new(http)?)?),
            SourceSpec::Wms(u) => Arc::new(WmsSource::new(u, HttpClient::new(http)?)?),
            SourceSpec::Resample => Arc::new(ResampleSource::new(cache.clone())),
            SourceSpec::Label => Arc::new(LabelSource),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            "arcgis:http://h/MapServer".parse::<SourceSpec>().unwrap(),
            SourceSpec::ArcGis("http://h/MapServer".into())
        );
        assert_eq!(
            " wms:http://h/w?LAYERS=a#axis=yx"
                .parse::<SourceSpec>()
                .unwrap(),
            SourceSpec::Wms("http://h/w?LAYERS=a#axis=yx".into())
        );
        assert_eq!(
            "resample".parse::<SourceSpec>().unwrap(),
            SourceSpec::Resample
        );
        assert_eq!("label".parse::<SourceSpec>().unwrap(), SourceSpec::Label);
        let e = "tms:http://x"
            .parse::<SourceSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tms:http://x") && e.contains("arcgis:URL"),
            "{e}"
        );
    }
}
