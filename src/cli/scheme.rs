//! The tiling scheme parameters of ArcGIS's Create Map Server Cache and Generate Map Server Cache
//! Tiling Scheme tools on the command line (shared by `create` and `scheme`), and `bundlefs scheme`,
//! which writes the tiling scheme alone as the XML file the second tool writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::output::outln;
use super::FormatArg;
use crate::format::conf::{Envelope, TileFormat};
use crate::format::scheme::{self, Scales, SchemeDocument, SchemeParams, SpatialReference};

/// A point `X,Y` in map units (commas and/or white space between the two numbers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point(pub f64, pub f64);

impl std::str::FromStr for Point {
    type Err = String;
    fn from_str(s: &str) -> Result<Point, String> {
        let v: Vec<f64> = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{s:?}: want X,Y (two numbers, e.g. -180,90)"))?;
        match v[..] {
            [x, y] => Ok(Point(x, y)),
            _ => Err(format!(
                "{s:?}: {} number(s); want X,Y (two numbers, e.g. -180,90)",
                v.len()
            )),
        }
    }
}

/// The tools' tiling scheme parameters (`create` and `scheme`).
#[derive(Debug, Clone, clap::Args)]
pub struct ToolSchemeArgs {
    /// Spatial reference as an EPSG code or Esri WKID (e.g. 3857, 102100, 4326, 2180); builds the
    /// scheme from the parameters below, like ArcGIS's Create Map Server Cache.
    #[arg(long, value_name = "N", conflicts_with = "wkt")]
    pub wkid: Option<u32>,
    /// Spatial reference as a file holding its WKT 1 text (PROJCS[…] or GEOGCS[…], as in conf.xml).
    #[arg(long, value_name = "FILE")]
    pub wkt: Option<PathBuf>,
    /// Tiling origin (upper-left corner) in map units; default: the spatial reference's usual one
    /// (-20037508.342787,20037508.342787 for Web Mercator, -180,90 for geographic references,
    /// -5120900,9998100 for other references in metres, as ArcGIS).
    #[arg(long, value_name = "X,Y", allow_hyphen_values = true)]
    pub origin: Option<Point>,
    /// Custom scales, level 0 first, strictly decreasing (500 for 1:500), e.g.
    /// 4000000,2000000,1000000.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1..,
        conflicts_with = "standard",
        value_name = "S1,S2,..."
    )]
    pub scales: Option<Vec<f64>>,
    /// STANDARD scales: N levels halving from the multiple of 1:1,000,000 by a power of two closest
    /// to the scale of --extent (the scale at which it fits one tile) or to --extent-scale.
    #[arg(long, value_name = "N")]
    pub standard: Option<u32>,
    /// With --standard: the scale of the map's extent (121000000 for 1:121,000,000) instead of the
    /// one computed from --extent.
    #[arg(long, value_name = "SCALE", requires = "standard")]
    pub extent_scale: Option<f64>,
    /// Dots per inch of the intended display [default: 96].
    #[arg(long, value_name = "DPI")]
    pub dpi: Option<u32>,
    /// Tile width and height in pixels: 128, 256, 512 or 1024 [default: 256].
    #[arg(long, value_name = "PX")]
    pub tile_size: Option<u32>,
    /// Tile image format [default: PNG; for `create --scheme FILE.xml`: the file's].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// JPEG compression quality 1-100, for JPEG and MIXED only [default: 75 for those].
    #[arg(long, value_name = "1-100")]
    pub quality: Option<u32>,
    /// Map extent in map units, one argument XMIN,YMIN,XMAX,YMAX: picks --standard's first scale
    /// and must lie below-right of the origin; `create` also writes it to conf.cdi (what `render`
    /// covers by default). A tiling scheme file holds no extent.
    #[arg(long, allow_hyphen_values = true, value_name = "XMIN,YMIN,XMAX,YMAX")]
    pub extent: Option<Envelope>,
    /// Antialiasing on (conf.xml TileImageInfo/Antialiasing; ArcGIS then draws 2048-px supertiles).
    #[arg(long)]
    pub antialiasing: bool,
}

impl ToolSchemeArgs {
    /// Whether a spatial reference is given, so the scheme is built from these parameters.
    pub fn builds_scheme(&self) -> bool {
        self.wkid.is_some() || self.wkt.is_some()
    }

    /// The parameters given that define a tiling grid, so only make sense when building a scheme
    /// (for the error that names them when no spatial reference is given). `--format`,
    /// `--quality`, `--extent` and `--antialiasing` also apply to `--scheme`.
    pub fn building_only(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let given = [
            (self.origin.is_some(), "--origin"),
            (self.scales.is_some(), "--scales"),
            (self.standard.is_some(), "--standard"),
            (self.dpi.is_some(), "--dpi"),
            (self.tile_size.is_some(), "--tile-size"),
        ];
        for (on, name) in given {
            if on {
                v.push(name);
            }
        }
        v
    }

    /// The tool parameters, read (the WKT file) but not yet checked; errors name the file.
    pub fn params(&self) -> anyhow::Result<SchemeParams> {
        let sr = match (&self.wkid, &self.wkt) {
            (Some(id), _) => SpatialReference::Wkid(*id),
            (None, Some(path)) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("{}: cannot read the WKT file", path.display()))?;
                let text = crate::format::text::decode(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                SpatialReference::Wkt(text.to_string())
            }
            (None, None) => {
                bail!("a tiling scheme needs a spatial reference: --wkid N or --wkt FILE")
            }
        };
        let scales = match (&self.scales, self.standard) {
            (Some(s), _) => Scales::Custom(s.clone()),
            (None, Some(n)) => Scales::Standard {
                count: n,
                extent_scale: self.extent_scale,
            },
            (None, None) => bail!(
                "a tiling scheme needs its scales: --scales S1,S2,… (CUSTOM) or --standard N (STANDARD)"
            ),
        };
        let mut p = SchemeParams::new(sr, scales);
        p.origin = self.origin.map(|o| (o.0, o.1));
        p.dpi = self.dpi.unwrap_or(scheme::DEFAULT_DPI);
        p.tile_size = self.tile_size.unwrap_or(scheme::DEFAULT_TILE_SIZE);
        p.format = self.format.map(TileFormat::from).unwrap_or(TileFormat::Png);
        p.quality = self.quality;
        p.extent = self.extent;
        p.antialiasing = self.antialiasing;
        Ok(p)
    }

    /// Builds and checks the scheme; errors name the parameter (and the WKT file, if one).
    pub fn build(&self) -> anyhow::Result<SchemeDocument> {
        let p = self.params()?;
        scheme::build(&p).map_err(|e| match &self.wkt {
            Some(path) => anyhow::anyhow!("tiling scheme ({}): {e}", path.display()),
            None => anyhow::anyhow!("tiling scheme: {e}"),
        })
    }
}

/// Arguments of `bundlefs scheme`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchemeArgs {
    /// The tiling scheme parameters (--wkid or --wkt, and --scales or --standard, are required).
    #[command(flatten)]
    pub tool: ToolSchemeArgs,
    /// The tiling scheme file to write (overwritten if it exists).
    #[arg(short = 'o', long, value_name = "FILE.xml")]
    pub output: PathBuf,
}

/// `bundlefs scheme`: the tiling scheme alone, as Generate Map Server Cache Tiling Scheme writes it
/// (a `CacheInfo` document like conf.xml); `create --scheme FILE.xml` takes it back.
pub fn run(a: &SchemeArgs) -> anyhow::Result<ExitCode> {
    let doc = a.tool.build()?;
    write_file(&a.output, &doc.to_conf_xml())?;
    outln!(
        "wrote {} ({}, {} px tiles, {} dpi, {})",
        a.output.display(),
        crate::error::count(doc.scheme.lods.len() as u64, "level"),
        doc.scheme.tile_cols,
        doc.scheme.dpi,
        doc.scheme.tile_format.name()
    );
    print_lods(&doc)?;
    Ok(ExitCode::SUCCESS)
}

/// One line per level: level, scale and resolution (map units per pixel).
pub fn print_lods(doc: &SchemeDocument) -> anyhow::Result<()> {
    for l in &doc.scheme.lods {
        outln!(
            "  L{:02}  1:{}  {} per pixel",
            l.level,
            l.scale,
            l.resolution
        );
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::cache::write_atomic(path, bytes, true)
        .with_context(|| format!("{}: cannot write the tiling scheme", path.display()))
}
