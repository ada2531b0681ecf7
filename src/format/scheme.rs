//! Tiling schemes built from the parameters of ArcGIS's Create Map Server Cache and Generate Map
//! Server Cache Tiling Scheme tools (seed `create-map-server-cache-tool.txt`): spatial reference,
//! tiling origin, scales (a custom list or STANDARD), DPI, tile size, image format, compression
//! quality, extent and antialiasing, each checked with an error that names the parameter.
//!
//! The result is a [`TileScheme`] plus the two settings `TileScheme` does not carry (antialiasing,
//! extent); [`SchemeDocument::to_conf_xml`] writes the `CacheInfo` document ArcGIS writes as the
//! tool's output and as a cache's `conf.xml`. Semantics and sources: `doc/tiling-schemes.md`.

use proj4rs::Proj;

use super::conf::{
    Envelope, Lod, StorageFormat, TileFormat, TileScheme, INCHES_PER_METRE, PACKET_SIZE,
    WEB_MERCATOR_ORIGIN, WEB_MERCATOR_WKT,
};
use super::extent::{epsg_of_wkid, epsg_of_wkt, WEB_MERCATOR, WGS84};

/// Tile sizes (pixels a side) the tools offer: "128 by 128", "256 by 256" (the default),
/// "512 by 512" and "1024 by 1024" (seed, Tile Size).
pub const TILE_SIZES: [u32; 4] = [128, 256, 512, 1024];
/// The tools' default tile size in pixels.
pub const DEFAULT_TILE_SIZE: u32 = 256;
/// The tools' default dots per inch ("The default value is 96", seed).
pub const DEFAULT_DPI: u32 = 96;
/// Largest DPI accepted: far above any screen or print device; a larger value is a typo.
pub const MAX_DPI: u32 = 10_000;
/// Default JPEG compression quality for JPEG and MIXED ("The default value is 75 for the JPEG tile
/// format and 0 for other formats", seed).
pub const DEFAULT_JPEG_QUALITY: u32 = 75;
/// STANDARD scales halve and double from 1:1,000,000 (seed, Scales Type).
pub const STANDARD_BASE_SCALE: f64 = 1_000_000.0;
/// Most levels a scheme can have: conf.xml level folders are `L00`…`L99`.
pub const MAX_LEVELS: usize = 100;

/// Metres per degree ArcGIS uses to turn the resolution of a geographic tiling scheme (degrees per
/// pixel) into a scale: the Esri pair "resolution 0.703125, scale 295497598.570834" for 256-px
/// tiles at 96 DPI (ArcGIS Maps SDK for JavaScript, `TileInfo.makeGCSWithTileSize`; the same pair
/// halved, 0.3515625 ↔ 147748799.285417, is in ArcGIS 9.2's own geographic conf.xml, see
/// `conf.rs` test `pre_10_conf_xml`) gives 295497598.570834 / (0.703125 × 96 × 39.37). That is
/// a degree of the ArcInfo sphere of radius 6,370,997 m (π × 6370997 / 180 = 111194.874285) to
/// 1e-10, not of the WGS 84 equator (111319.49, 0.11 % off).
pub const METRES_PER_DEGREE: f64 = 295_497_598.570_834 / (0.703_125 * 96.0 * INCHES_PER_METRE);

/// The tiling origin ArcGIS uses for a projected coordinate system in metres: the upper-left corner
/// of its default XY domain (x from -5120900, y up to 9998100). Seen in ArcGIS Server caches of
/// EPSG:2180 (`tests/data/cases/09-local-srs-2180/scheme.xml`), of EPSG:3067 and EPSG:25832 (REST
/// `tileInfo.origin`), and in the domain arcpy writes for projected references
/// (`…;-5120900 -9998100 10000;…`, XY origin and precision).
pub const PROJECTED_ORIGIN: (f64, f64) = (-5_120_900.0, 9_998_100.0);
/// The tiling origin of geographic schemes: longitude -180, latitude 90 (ArcGIS 9.2 conf.xml and
/// `TileInfo.makeGCSWithTileSize`).
pub const GEOGRAPHIC_ORIGIN: (f64, f64) = (-180.0, 90.0);

/// WKT of geographic WGS 84 as ArcGIS writes it.
pub const WGS84_WKT: &str = "GEOGCS[\"GCS_WGS_1984\",DATUM[\"D_WGS_1984\",SPHEROID[\"WGS_1984\",\
6378137.0,298.257223563]],PRIMEM[\"Greenwich\",0.0],UNIT[\"Degree\",0.0174532925199433],\
AUTHORITY[\"EPSG\",4326]]";

/// Esri's WKID for Web Mercator, which ArcGIS writes as WKID with LatestWKID 3857.
const ESRI_WEB_MERCATOR_WKID: u32 = 102100;

/// What is wrong with a set of tiling scheme parameters; each message names the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemeError {
    /// A value out of its range, or two values that do not go together.
    #[error("{0}")]
    Invalid(String),
    /// A value bundlefs does not support, named.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

fn invalid(msg: impl Into<String>) -> SchemeError {
    SchemeError::Invalid(msg.into())
}

/// How the spatial reference is given (tool parameter "spatial reference of the source map").
#[derive(Debug, Clone, PartialEq)]
pub enum SpatialReference {
    /// An EPSG code or one of Web Mercator's Esri ids (102100, 102113, 900913, 3785).
    Wkid(u32),
    /// An OGC WKT 1 / Esri WKT text (`PROJCS[…]` or `GEOGCS[…]`).
    Wkt(String),
}

/// The unit of a spatial reference's coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MapUnits {
    /// Longitude/latitude degrees.
    Degrees,
    /// A linear unit of this many metres (1 for metres, 0.3048006096 for US survey feet).
    Linear(f64),
}

impl MapUnits {
    /// Metres in one map unit as ArcGIS reckons scales ([`METRES_PER_DEGREE`] for degrees).
    pub fn metres(self) -> f64 {
        match self {
            MapUnits::Degrees => METRES_PER_DEGREE,
            MapUnits::Linear(m) => m,
        }
    }
}

/// A spatial reference resolved: what conf.xml will say, and its units.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedReference {
    /// `SpatialReference/WKT` (written when known).
    pub wkt: Option<String>,
    /// `SpatialReference/WKID`.
    pub wkid: Option<u32>,
    /// `SpatialReference/LatestWKID`.
    pub latest_wkid: Option<u32>,
    /// EPSG code, when one identifies it.
    pub epsg: Option<u32>,
    /// Unit of the coordinates.
    pub units: MapUnits,
}

impl SpatialReference {
    /// What conf.xml says for this reference and its units.
    ///
    /// A WKID must be one the EPSG definitions bundlefs carries know (crs-definitions, via
    /// proj4rs); Web Mercator's ids are written as ArcGIS writes them (WKID 102100, LatestWKID
    /// 3857) with ArcGIS's WKT, 4326 with ArcGIS's `GCS_WGS_1984` WKT, others with the EPSG
    /// registry's WKT 1 from crs-definitions. A WKT is kept as given; its units are the last
    /// `UNIT[…]` of a `PROJCS` (factor to metres) or degrees for a `GEOGCS`.
    ///
    /// Errors: [`SchemeError::Unsupported`] for an unknown WKID or a WKT other than WKT 1
    /// `PROJCS`/`GEOGCS`; [`SchemeError::Invalid`] for a `PROJCS` without a usable `UNIT`.
    pub fn resolve(&self) -> Result<ResolvedReference, SchemeError> {
        match self {
            SpatialReference::Wkid(id) => {
                let epsg = epsg_of_wkid(*id);
                let proj = u16::try_from(epsg)
                    .ok()
                    .and_then(|c| Proj::from_epsg_code(c).ok())
                    .ok_or_else(|| {
                        SchemeError::Unsupported(format!(
                            "WKID {id}: not a spatial reference bundlefs knows (it has the EPSG \
                             definitions of the crs-definitions crate); give its WKT with --wkt FILE"
                        ))
                    })?;
                let units = if proj.is_latlong() {
                    MapUnits::Degrees
                } else {
                    MapUnits::Linear(proj.to_meter())
                };
                let (wkid, wkt) = match epsg {
                    WEB_MERCATOR => (ESRI_WEB_MERCATOR_WKID, Some(WEB_MERCATOR_WKT.to_string())),
                    WGS84 => (WGS84, Some(WGS84_WKT.to_string())),
                    // The EPSG registry's WKT 1 (crs-definitions): GDAL's ESRIC driver reads the
                    // spatial reference from conf.xml's WKT only (EPSG:4326 when it is missing).
                    other => (
                        other,
                        u16::try_from(other)
                            .ok()
                            .and_then(crs_definitions::from_code)
                            .map(|d| d.wkt.to_string()),
                    ),
                };
                Ok(ResolvedReference {
                    wkt,
                    wkid: Some(wkid),
                    latest_wkid: Some(epsg),
                    epsg: Some(epsg),
                    units,
                })
            }
            SpatialReference::Wkt(text) => {
                let wkt = text.trim().to_string();
                let units = wkt_units(&wkt)?;
                let epsg = epsg_of_wkt(&wkt).map(epsg_of_wkid);
                let wkid = epsg.map(|e| {
                    if e == WEB_MERCATOR {
                        ESRI_WEB_MERCATOR_WKID
                    } else {
                        e
                    }
                });
                Ok(ResolvedReference {
                    wkt: Some(wkt),
                    wkid,
                    latest_wkid: epsg,
                    epsg,
                    units,
                })
            }
        }
    }
}

/// The units of a WKT 1 text: degrees for `GEOGCS`, the factor of the top-level `UNIT` (the last
/// one at depth 1) for `PROJCS`.
fn wkt_units(wkt: &str) -> Result<MapUnits, SchemeError> {
    let kind = wkt
        .split('[')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    match kind.as_str() {
        "GEOGCS" => Ok(MapUnits::Degrees),
        "PROJCS" => {
            let mut depth = 0i32;
            let mut last = None;
            for (i, ch) in wkt.char_indices() {
                match ch {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    'U' | 'u'
                        if depth == 1 && wkt[i..].to_ascii_uppercase().starts_with("UNIT[") =>
                    {
                        last = Some(i)
                    }
                    _ => {}
                }
            }
            let at = last.ok_or_else(|| {
                invalid("WKT: the PROJCS has no UNIT[…] of its own; cannot tell its map units")
            })?;
            let inner = wkt[at + 5..].split(']').next().unwrap_or("");
            let factor = inner
                .split(',')
                .nth(1)
                .and_then(|f| f.trim().parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| {
                    invalid(format!(
                        "WKT: UNIT[{inner}] has no positive factor to metres"
                    ))
                })?;
            Ok(MapUnits::Linear(factor))
        }
        "" => Err(invalid("WKT: empty text")),
        other => Err(SchemeError::Unsupported(format!(
            "WKT of kind {other}: bundlefs reads WKT 1 PROJCS[…] or GEOGCS[…] (as ArcGIS writes \
             them in conf.xml)"
        ))),
    }
}

/// How the scales of the levels are chosen (tool parameter Scales Type).
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    /// CUSTOM: these scales (1:N given as N), level 0 first, strictly decreasing.
    Custom(Vec<f64>),
    /// STANDARD: `count` scales halving from the power-of-two multiple of 1:1,000,000 closest to
    /// the extent's scale (`extent_scale`, or computed from the extent by [`extent_scale`]).
    Standard {
        /// Number of levels.
        count: u32,
        /// The scale of the map's extent (1:N as N); None: computed from the extent.
        extent_scale: Option<f64>,
    },
}

/// The parameters of Create Map Server Cache / Generate Map Server Cache Tiling Scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemeParams {
    /// Spatial reference of the cache.
    pub spatial_reference: SpatialReference,
    /// Tiling origin (upper-left corner) in map units; None: the reference's usual one
    /// ([`default_origin`]).
    pub origin: Option<(f64, f64)>,
    /// Scales of the levels.
    pub scales: Scales,
    /// Dots per inch (default [`DEFAULT_DPI`]).
    pub dpi: u32,
    /// Tile width and height in pixels, one of [`TILE_SIZES`].
    pub tile_size: u32,
    /// Tile image format.
    pub format: TileFormat,
    /// JPEG compression quality 1–100, for JPEG and MIXED only; None: 75 for those, 0 otherwise.
    pub quality: Option<u32>,
    /// Extent of the map in map units (conf.cdi; the origin must be above-left of it).
    pub extent: Option<Envelope>,
    /// `TileImageInfo/Antialiasing`.
    pub antialiasing: bool,
}

impl SchemeParams {
    /// The tool's defaults for everything but the spatial reference and the scales.
    pub fn new(spatial_reference: SpatialReference, scales: Scales) -> Self {
        SchemeParams {
            spatial_reference,
            origin: None,
            scales,
            dpi: DEFAULT_DPI,
            tile_size: DEFAULT_TILE_SIZE,
            format: TileFormat::Png,
            quality: None,
            extent: None,
            antialiasing: false,
        }
    }
}

/// A built tiling scheme and the settings written beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemeDocument {
    /// The scheme (Compact V2 storage, packet size 128).
    pub scheme: TileScheme,
    /// `TileImageInfo/Antialiasing`.
    pub antialiasing: bool,
    /// The extent given, if any (for conf.cdi).
    pub extent: Option<Envelope>,
}

impl SchemeDocument {
    /// The `CacheInfo` document: conf.xml of a cache, and the file Generate Map Server Cache
    /// Tiling Scheme writes (a conf.xml-like XML tiling scheme file, which Create Map Server Cache
    /// takes back as its "predefined tiling scheme").
    pub fn to_conf_xml(&self) -> Vec<u8> {
        let xml = self.scheme.to_conf_xml();
        if !self.antialiasing {
            return xml;
        }
        // conf.rs writes every scheme with antialiasing off; this is its one element for it.
        let text = String::from_utf8(xml).expect("conf.xml is written as UTF-8");
        text.replacen(
            "<Antialiasing>false</Antialiasing>",
            "<Antialiasing>true</Antialiasing>",
            1,
        )
        .into_bytes()
    }
}

/// Resolution in map units per pixel of a level at `scale` (1:scale): `scale / (dpi × 39.37 ×
/// metres per unit)`, with ArcGIS's 39.37 inches per metre ([`INCHES_PER_METRE`]; `conf.rs`) and,
/// for degrees, [`METRES_PER_DEGREE`].
pub fn resolution(scale: f64, dpi: u32, units: MapUnits) -> f64 {
    scale / (f64::from(dpi) * INCHES_PER_METRE * units.metres())
}

/// The scale at which `extent` just fits in one tile of `tile_size` px: its longer side in metres
/// over the tile's width in metres at `dpi` (bundlefs's stand-in for "the extent of the source map
/// document", which ArcGIS takes from the map's data frame).
pub fn extent_scale(extent: &Envelope, units: MapUnits, tile_size: u32, dpi: u32) -> f64 {
    let side = (extent.xmax - extent.xmin).max(extent.ymax - extent.ymin) * units.metres();
    side / f64::from(tile_size) * f64::from(dpi) * INCHES_PER_METRE
}

/// STANDARD scales: `count` levels halving from the scale 1,000,000 × 2^k closest to `from` (closest
/// by ratio, k rounded in log₂). The seed's example: an extent at 1:121,000,000 and three levels
/// give 1:128,000,000, 1:64,000,000 and 1:32,000,000.
pub fn standard_scales(from: f64, count: u32) -> Vec<f64> {
    let k = (from / STANDARD_BASE_SCALE).log2().round();
    (0..count)
        .map(|i| STANDARD_BASE_SCALE * (k - f64::from(i)).exp2())
        .collect()
}

/// The usual tiling origin of a spatial reference: Web Mercator's (±20037508.342787, the ArcGIS
/// Online scheme), (-180, 90) for geographic references, [`PROJECTED_ORIGIN`] for references in
/// metres. None for other linear units (ArcGIS's domain there depends on the unit: give --origin).
pub fn default_origin(r: &ResolvedReference) -> Option<(f64, f64)> {
    match (r.epsg, r.units) {
        (Some(WEB_MERCATOR), _) => Some((-WEB_MERCATOR_ORIGIN, WEB_MERCATOR_ORIGIN)),
        (_, MapUnits::Degrees) => Some(GEOGRAPHIC_ORIGIN),
        (_, MapUnits::Linear(m)) if (m - 1.0).abs() < 1e-12 => Some(PROJECTED_ORIGIN),
        _ => None,
    }
}

/// Checks the parameters and builds the scheme: levels 0…n-1 with their scales and resolutions
/// ([`resolution`]), Compact V2 storage.
///
/// Errors ([`SchemeError`], naming the parameter): a tile size not in [`TILE_SIZES`]; DPI 0 or
/// above [`MAX_DPI`]; a quality outside 1–100 or given for a format other than JPEG/MIXED; no
/// scales, more than [`MAX_LEVELS`], a scale not positive or not strictly decreasing; STANDARD
/// with neither an extent nor an extent scale; an origin not finite or not above-left of the
/// extent; a geographic extent outside ±180/±90; an unknown WKID or an unreadable WKT; a
/// reference whose usual origin is unknown and no origin given.
pub fn build(p: &SchemeParams) -> Result<SchemeDocument, SchemeError> {
    if !TILE_SIZES.contains(&p.tile_size) {
        return Err(SchemeError::Unsupported(format!(
            "tile size {} px; the tiling scheme tools offer 128, 256, 512 or 1024",
            p.tile_size
        )));
    }
    if p.dpi == 0 || p.dpi > MAX_DPI {
        return Err(invalid(format!("DPI {} out of range 1-{MAX_DPI}", p.dpi)));
    }
    let jpeg = matches!(p.format, TileFormat::Jpeg | TileFormat::Mixed);
    if let TileFormat::Other(name) = &p.format {
        return Err(SchemeError::Unsupported(format!(
            "tile format {name}; the tools write PNG, PNG8, PNG24, PNG32, JPEG or MIXED"
        )));
    }
    let quality = match p.quality {
        Some(q) if !jpeg => {
            return Err(invalid(format!(
                "compression quality {q} with format {}: quality applies to JPEG and MIXED only",
                p.format.name()
            )))
        }
        Some(q) if !(1..=100).contains(&q) => {
            return Err(invalid(format!(
                "compression quality {q} out of range 1-100"
            )))
        }
        Some(q) => q,
        None if jpeg => DEFAULT_JPEG_QUALITY,
        None => 0,
    };
    let r = p.spatial_reference.resolve()?;
    if let Some(e) = &p.extent {
        let finite = [e.xmin, e.ymin, e.xmax, e.ymax]
            .iter()
            .all(|v| v.is_finite());
        if !(finite && e.xmin < e.xmax && e.ymin < e.ymax) {
            return Err(invalid(format!("extent {e:?} is empty or not finite")));
        }
        if r.units == MapUnits::Degrees
            && (e.xmin < -180.0 || e.xmax > 180.0 || e.ymin < -90.0 || e.ymax > 90.0)
        {
            return Err(invalid(format!(
                "extent ({}, {}, {}, {}) is not within longitude -180..180, latitude -90..90 \
                 (the spatial reference is geographic: the extent is in degrees)",
                e.xmin, e.ymin, e.xmax, e.ymax
            )));
        }
    }
    let (ox, oy) = match p.origin {
        Some(o) => o,
        None => default_origin(&r).ok_or_else(|| {
            invalid(format!(
                "no usual tiling origin is known for map units of {} m; give --origin X,Y",
                r.units.metres()
            ))
        })?,
    };
    if !(ox.is_finite() && oy.is_finite()) {
        return Err(invalid(format!("origin ({ox}, {oy}) is not finite")));
    }
    if let Some(e) = &p.extent {
        origin_above_left((ox, oy), e)?;
    }
    let scales = match &p.scales {
        Scales::Custom(s) => s.clone(),
        Scales::Standard {
            count,
            extent_scale: from,
        } => {
            if *count == 0 {
                return Err(invalid("STANDARD with 0 scale levels; give at least 1"));
            }
            let from =
                match (from, &p.extent) {
                    (Some(s), _) => *s,
                    (None, Some(e)) => extent_scale(e, r.units, p.tile_size, p.dpi),
                    (None, None) => return Err(invalid(
                        "STANDARD scales start at the level closest to the extent: give --extent \
                         (or --extent-scale)",
                    )),
                };
            if !(from.is_finite() && from > 0.0) {
                return Err(invalid(format!(
                    "extent scale {from} is not a positive number"
                )));
            }
            standard_scales(from, (*count).min(MAX_LEVELS as u32 + 1))
        }
    };
    check_scales(&scales)?;
    let lods: Vec<Lod> = scales
        .iter()
        .enumerate()
        .map(|(i, &scale)| Lod {
            level: i as u8,
            scale,
            resolution: resolution(scale, p.dpi, r.units),
        })
        .collect();
    if let (Some(e), Some(finest)) = (&p.extent, lods.last()) {
        // Rows and columns are 32-bit in bundle names and tile addresses (ArcGIS's too).
        let span = f64::from(p.tile_size) * finest.resolution;
        let (col, row) = ((e.xmax - ox) / span, (oy - e.ymin) / span);
        if col.max(row) >= f64::from(u32::MAX) {
            return Err(invalid(format!(
                "the extent reaches row {row:.0}, column {col:.0} at level {} (1:{}): tile \
                 addresses stop at {}; choose a smaller finest scale or an origin nearer the extent",
                finest.level,
                finest.scale,
                u32::MAX
            )));
        }
    }
    Ok(SchemeDocument {
        scheme: TileScheme {
            wkt: r.wkt,
            wkid: r.wkid,
            latest_wkid: r.latest_wkid,
            origin_x: ox,
            origin_y: oy,
            tile_cols: p.tile_size,
            tile_rows: p.tile_size,
            dpi: p.dpi,
            lods,
            tile_format: p.format.clone(),
            compression_quality: quality,
            storage: StorageFormat::CompactV2,
            packet_size: PACKET_SIZE,
        },
        antialiasing: p.antialiasing,
        extent: p.extent,
    })
}

/// Refuses an extent the tiling origin is not above-left of (X0 <= XMIN and Y0 >= YMAX): rows and
/// columns count down and right from the origin, so tiles up or left of it cannot be addressed.
pub fn check_origin_above_left(s: &TileScheme, extent: &Envelope) -> Result<(), SchemeError> {
    origin_above_left((s.origin_x, s.origin_y), extent)
}

fn origin_above_left((ox, oy): (f64, f64), e: &Envelope) -> Result<(), SchemeError> {
    if ox > e.xmin || oy < e.ymax {
        return Err(invalid(format!(
            "origin ({ox}, {oy}) is not above-left of the extent ({}, {}, {}, {}): the origin \
             is the upper-left corner of the tiling grid, so it needs X <= XMIN and Y >= YMAX",
            e.xmin, e.ymin, e.xmax, e.ymax
        )));
    }
    Ok(())
}

/// Scales of levels 0… : 1 to [`MAX_LEVELS`] of them, each positive and finite, each smaller than
/// the one before (level 0 shows the most ground).
pub fn check_scales(scales: &[f64]) -> Result<(), SchemeError> {
    if scales.is_empty() {
        return Err(invalid("no scales given"));
    }
    if scales.len() > MAX_LEVELS {
        return Err(invalid(format!(
            "{} scales; a tiling scheme has at most {MAX_LEVELS} levels (L00-L99)",
            scales.len()
        )));
    }
    for (i, &s) in scales.iter().enumerate() {
        if !(s.is_finite() && s > 0.0) {
            return Err(invalid(format!(
                "scale #{} ({s}) is not a positive number",
                i + 1
            )));
        }
        if i > 0 && s >= scales[i - 1] {
            return Err(invalid(format!(
                "scales must be strictly decreasing (level 0 first, e.g. 1000000,500000): \
                 scale #{} ({s}) is not smaller than scale #{} ({})",
                i + 1,
                i,
                scales[i - 1]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::{WEB_MERCATOR_RES0, WEB_MERCATOR_SCALE0};

    #[test]
    fn seed_standard_example() {
        // "an extent of 1:121,000,000 and three scale levels … 1:128,000,000; 1:64,000,000; and
        // 1:32,000,000" (create-map-server-cache-tool.txt).
        assert_eq!(standard_scales(121e6, 3), vec![128e6, 64e6, 32e6]);
        assert_eq!(standard_scales(1e6, 2), vec![1e6, 5e5]);
        // Closest by ratio: 1:730,000 is nearer 1:1,000,000 than 1:500,000 in log₂.
        assert_eq!(standard_scales(730_000.0, 1), vec![1e6]);
        assert_eq!(standard_scales(700_000.0, 1), vec![5e5]);
    }

    #[test]
    fn resolution_as_arcgis_computes_it() {
        // Web Mercator level 0: ArcGIS's published scale and resolution.
        let r = resolution(WEB_MERCATOR_SCALE0, 96, MapUnits::Linear(1.0));
        assert!((r / WEB_MERCATOR_RES0 - 1.0).abs() < 1e-12, "{r}");
        // Geographic: 0.3515625 deg/px ↔ 1:147748799.285417 in ArcGIS 9.2's conf.xml.
        let r = resolution(147_748_799.285_417, 96, MapUnits::Degrees);
        assert!((r - 0.3515625).abs() < 1e-12, "{r}");
        // The ArcInfo sphere's degree, to 1e-10.
        let sphere = std::f64::consts::PI * 6_370_997.0 / 180.0;
        assert!((METRES_PER_DEGREE / sphere - 1.0).abs() < 2e-10);
    }

    #[test]
    fn rows_and_columns_must_fit_32_bits() {
        let mut p = SchemeParams::new(SpatialReference::Wkid(2180), Scales::Custom(vec![0.01]));
        p.extent = Some(Envelope {
            xmin: 140000.0,
            ymin: 120000.0,
            xmax: 880000.0,
            ymax: 800000.0,
        });
        p.tile_size = 128;
        let e = build(&p).unwrap_err();
        assert!(e.to_string().contains("tile addresses stop at"), "{e}");
        p.scales = Scales::Custom(vec![1000.0]);
        assert_eq!(build(&p).unwrap().scheme.lods.len(), 1);
    }

    #[test]
    fn wkt_units_are_read() {
        assert_eq!(wkt_units(WGS84_WKT).unwrap(), MapUnits::Degrees);
        assert_eq!(wkt_units(WEB_MERCATOR_WKT).unwrap(), MapUnits::Linear(1.0));
        let feet = "PROJCS[\"x\",GEOGCS[\"g\",UNIT[\"Degree\",0.0174532925199433]],\
                    UNIT[\"Foot_US\",0.3048006096012192]]";
        assert_eq!(
            wkt_units(feet).unwrap(),
            MapUnits::Linear(0.3048006096012192)
        );
        assert!(matches!(
            wkt_units("PROJCRS[\"x\"]"),
            Err(SchemeError::Unsupported(_))
        ));
        assert!(wkt_units("PROJCS[\"x\",GEOGCS[\"g\",UNIT[\"Degree\",0.01]]]").is_err());
    }
}
