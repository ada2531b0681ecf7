//! Areas of interest: a GeoJSON polygon or multipolygon read in the coordinate reference system it
//! declares (WGS 84 longitude/latitude by RFC 7946 when it declares none) and carried into the
//! cache's spatial reference, how a tile (or a bundle) lies against it, and which of a tile's pixels
//! it covers (pixel centres, even-odd per polygon, polygons united).

use std::path::Path;

use geo::{
    BoundingRect, Contains, Coord, Intersects, Line, LineString, MultiPolygon, Polygon, Rect,
};
use geojson::{GeoJson, GeometryValue, Position};

use crate::error::{Error, FormatContext, Result};
use crate::format::conf::{Envelope, TileScheme};
use crate::format::extent::{self, Crs, WEB_MERCATOR, WGS84};

/// How a rectangle lies against the area of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Outside,
    Inside,
    /// The boundary crosses it: decide pixel by pixel.
    Partial,
}

/// A polygonal area of interest.
#[derive(Debug, Clone)]
pub struct Aoi {
    shape: MultiPolygon<f64>,
    bbox: Envelope,
    /// Every ring edge, for the boundary test and the scanline fill: (polygon index, a, b).
    edges: Vec<(usize, Coord<f64>, Coord<f64>)>,
}

/// Which pixels of a tile the area covers, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    inside: Vec<bool>,
    count: usize,
}

impl Mask {
    pub fn get(&self, x: u32, y: u32) -> bool {
        self.inside[(y * self.width + x) as usize]
    }
    /// Pixels covered.
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn is_full(&self) -> bool {
        self.count == self.inside.len()
    }
    pub fn as_slice(&self) -> &[bool] {
        &self.inside
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: bad area of interest: {msg}", path.display()))
}

fn ring(path: &Path, coords: &[Position], what: &str) -> Result<LineString<f64>> {
    let mut pts = Vec::with_capacity(coords.len());
    for (i, p) in coords.iter().enumerate() {
        let s = p.as_slice();
        if s.len() < 2 || !s[0].is_finite() || !s[1].is_finite() {
            return Err(bad(
                path,
                format!("{what}: position {i} is not a pair of numbers"),
            ));
        }
        pts.push(Coord { x: s[0], y: s[1] });
    }
    if pts.len() < 4 || pts.first() != pts.last() {
        return Err(bad(
            path,
            format!("{what}: a ring needs at least 4 positions, the last equal to the first"),
        ));
    }
    Ok(LineString::new(pts))
}

fn polygon(path: &Path, rings: &[Vec<Position>], what: &str) -> Result<Polygon<f64>> {
    let Some((outer, holes)) = rings.split_first() else {
        return Err(bad(path, format!("{what} has no rings")));
    };
    let outer = ring(path, outer, &format!("{what}, outer ring"))?;
    let holes = holes
        .iter()
        .enumerate()
        .map(|(i, h)| ring(path, h, &format!("{what}, hole {i}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Polygon::new(outer, holes))
}

fn collect(path: &Path, g: &GeometryValue, out: &mut Vec<Polygon<f64>>) -> Result<()> {
    match g {
        GeometryValue::Polygon { coordinates } => out.push(polygon(
            path,
            coordinates,
            &format!("polygon {}", out.len()),
        )?),
        GeometryValue::MultiPolygon { coordinates } => {
            for p in coordinates {
                out.push(polygon(path, p, &format!("polygon {}", out.len()))?);
            }
        }
        GeometryValue::GeometryCollection { geometries } => {
            for g in geometries {
                collect(path, &g.value, out)?;
            }
        }
        other => {
            return Err(bad(
                path,
                format!(
                    "a {} is not an area (want Polygon or MultiPolygon)",
                    other.type_name()
                ),
            ))
        }
    }
    Ok(())
}

/// The JSON document and its polygons, coordinates as written. The bytes go through the one
/// tolerant reader of text inputs ([`crate::format::text::decode`]: byte-order marks, UTF-16, CRLF).
fn parse_polygons(path: &Path, bytes: &[u8]) -> Result<(serde_json::Value, Vec<Polygon<f64>>)> {
    let text = crate::format::text::decode(bytes).in_file(path)?;
    let text = text.as_str();
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(path, format!("not GeoJSON: {e}")))?;
    let gj: GeoJson = text
        .parse()
        .map_err(|e| bad(path, format!("not GeoJSON: {e}")))?;
    let mut polys = Vec::new();
    match &gj {
        GeoJson::Geometry(g) => collect(path, &g.value, &mut polys)?,
        GeoJson::Feature(f) => {
            if let Some(g) = &f.geometry {
                collect(path, &g.value, &mut polys)?
            }
        }
        GeoJson::FeatureCollection(fc) => {
            for f in &fc.features {
                if let Some(g) = &f.geometry {
                    collect(path, &g.value, &mut polys)?
                }
            }
        }
    }
    if polys.is_empty() {
        return Err(bad(path, "no polygon in it"));
    }
    Ok((doc, polys))
}

/// The coordinate reference system a GeoJSON file declares in its `crs` member (GeoJSON 2008, as
/// QGIS and ogr2ogr still write it): `(name as written, EPSG code)`, or `None` when it declares none.
/// Accepted names: `urn:ogc:def:crs:OGC:1.3:CRS84` (and `OGC::CRS84`, `CRS84`), `CRS83`, `CRS27`,
/// `EPSG:N`, `urn:ogc:def:crs:EPSG::N` (any version), `http://www.opengis.net/def/crs/EPSG/0/N`,
/// `…/epsg.xml#N`, `ESRI:102100`; also `{"type": "EPSG", "properties": {"code": N}}`. Anything else
/// (a `link` CRS, an unknown name) is refused by name.
pub fn declared_crs(path: &Path, doc: &serde_json::Value) -> Result<Option<(String, u32)>> {
    let Some(crs) = doc.get("crs") else {
        return Ok(None);
    };
    if crs.is_null() {
        return Ok(None);
    }
    let kind = crs.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let props = crs.get("properties");
    if kind.eq_ignore_ascii_case("EPSG") {
        if let Some(code) = props
            .and_then(|p| p.get("code"))
            .and_then(|c| c.as_u64())
            .and_then(|c| u32::try_from(c).ok())
        {
            return Ok(Some((format!("EPSG:{code}"), code)));
        }
    }
    let name = props
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .filter(|_| kind.eq_ignore_ascii_case("name"))
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "its \"crs\" member {crs} is not one bundlefs reads; give \
                     {{\"type\": \"name\", \"properties\": {{\"name\": \"EPSG:N\"}}}} or leave it out for \
                     WGS 84 longitude/latitude (RFC 7946)"
                ),
            )
        })?;
    let code = crs_name_code(name).ok_or_else(|| {
        bad(
            path,
            format!(
                "declares the coordinate reference system {name:?}, which bundlefs does not know; \
                 name it as EPSG:N or urn:ogc:def:crs:EPSG::N"
            ),
        )
    })?;
    Ok(Some((name.to_string(), code)))
}

/// The EPSG code of a CRS name as GeoJSON files write it (see [`declared_crs`]).
fn crs_name_code(name: &str) -> Option<u32> {
    let n = name.trim();
    let lower = n.to_ascii_lowercase();
    let last = lower.rsplit([':', '/', '#']).next().unwrap_or("");
    match last {
        "crs84" => return Some(WGS84),
        "crs83" => return Some(4269),
        "crs27" => return Some(4267),
        _ => {}
    }
    let code: u32 = last.parse().ok()?;
    let epsg_form = lower.starts_with("epsg:")
        || lower.starts_with("urn:ogc:def:crs:epsg:")
        || lower.contains("opengis.net/def/crs/epsg/")
        || lower.contains("epsg.xml#");
    if epsg_form {
        return Some(code);
    }
    // Esri's ids of Web Mercator only: other Esri ids have no EPSG definition here.
    (lower.starts_with("esri:") && extent::epsg_of_wkid(code) == WEB_MERCATOR)
        .then_some(WEB_MERCATOR)
}

/// Whether every position lies within longitude ±180 and latitude ±90.
fn looks_geographic(polys: &[Polygon<f64>]) -> bool {
    polys.iter().all(|p| {
        std::iter::once(p.exterior())
            .chain(p.interiors())
            .flat_map(|r| r.coords())
            .all(|c| c.x.abs() <= 180.0 && c.y.abs() <= 90.0)
    })
}

/// The spatial reference of the cache a selection is for, or why it has none bundlefs can use.
pub(crate) fn cache_crs(scheme: Option<&TileScheme>) -> std::result::Result<Crs, String> {
    match scheme {
        Some(s) => extent::scheme_crs(s),
        None => Err("no spatial reference (the cache has no conf.xml)".into()),
    }
}

/// Carries a ring from `from` into `to`, with points added along each edge (at most 1/256 of the
/// ring's larger side apart, in source units) so edges that curve when projected are followed.
fn reproject_ring(
    path: &Path,
    ring: &LineString<f64>,
    from: &Crs,
    to: &Crs,
) -> Result<LineString<f64>> {
    let Some(r) = ring.bounding_rect() else {
        return Ok(ring.clone());
    };
    let step = r.width().max(r.height()) / 256.0;
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for l in ring.lines() {
        let len = l.dx().hypot(l.dy());
        let n = if step > 0.0 {
            ((len / step).ceil() as usize).clamp(1, 4096)
        } else {
            1
        };
        for i in 0..n {
            let f = i as f64 / n as f64;
            pts.push((l.start.x + f * l.dx(), l.start.y + f * l.dy()));
        }
    }
    if let Some(last) = ring.0.last() {
        pts.push((last.x, last.y));
    }
    if from.is_geographic() && to.epsg() == WEB_MERCATOR {
        // Web Mercator ends at ±85.0511°: the poles have no image.
        for p in pts.iter_mut() {
            p.1 = p.1.clamp(-85.051_128_779_806_59, 85.051_128_779_806_59);
        }
    }
    from.transform_all(to, &mut pts)
        .map_err(|e| bad(path, e.to_string()))?;
    Ok(LineString::new(
        pts.into_iter().map(|(x, y)| Coord { x, y }).collect(),
    ))
}

impl Aoi {
    /// Reads a GeoJSON file (a geometry, a feature or a feature collection of polygons and
    /// multipolygons) into the spatial reference of `scheme` (the cache's): see
    /// [`Aoi::from_geojson_for`].
    pub fn from_geojson_file(path: &Path, scheme: Option<&TileScheme>) -> Result<Aoi> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_geojson_for(path, &bytes, scheme)
    }

    /// Parses GeoJSON bytes (`path` names the source in errors) and carries the polygons into the
    /// spatial reference of `scheme`. The coordinates are in the reference the file's `crs` member
    /// declares ([`declared_crs`]); without one, RFC 7946 says WGS 84 longitude/latitude, which is
    /// how they are read when every position lies within ±180/±90. A file without `crs` whose
    /// positions cannot be degrees is read in the cache's own units (the files bundlefs wrote
    /// before, and many tools' output) with a warning naming the way to declare it. Refused, naming
    /// both references, when the declared one is not the cache's and either is unknown.
    pub fn from_geojson_for(path: &Path, bytes: &[u8], scheme: Option<&TileScheme>) -> Result<Aoi> {
        let (doc, polys) = parse_polygons(path, bytes)?;
        let declared = declared_crs(path, &doc)?;
        let cache_ref = scheme.map_or_else(
            || "the cache's spatial reference".to_string(),
            extent::describe,
        );
        let (name, code) = match declared {
            Some(d) => d,
            None if looks_geographic(&polys) => {
                ("WGS 84 longitude/latitude (RFC 7946)".into(), WGS84)
            }
            None => {
                tracing::warn!(
                    "{}: declares no CRS and its coordinates are not longitude/latitude degrees: \
                     read in {cache_ref}. Add \"crs\": {{\"type\": \"name\", \"properties\": \
                     {{\"name\": \"EPSG:N\"}}}} to say which",
                    path.display()
                );
                return Self::from_polygons(path, polys);
            }
        };
        let target = cache_crs(scheme);
        if let Ok(t) = &target {
            if extent::epsg_of_wkid(code) == t.epsg() {
                return Self::from_polygons(path, polys);
            }
        }
        let from = Crs::from_epsg(code).map_err(|e| {
            bad(
                path,
                format!("its coordinates are in {name} but {e}; the cache is in {cache_ref}"),
            )
        })?;
        let to = target.map_err(|why| {
            bad(
                path,
                format!(
                    "its coordinates are in {name} (EPSG:{}) and cannot be carried into the cache's \
                     spatial reference, {why}; give the area in the cache's units with a \"crs\" \
                     member naming it",
                    from.epsg()
                ),
            )
        })?;
        if from.is_geographic() && !looks_geographic(&polys) {
            return Err(bad(
                path,
                format!("declares {name}, but its coordinates are not longitude/latitude degrees"),
            ));
        }
        let mut out = Vec::with_capacity(polys.len());
        for p in &polys {
            let ext = reproject_ring(path, p.exterior(), &from, &to)?;
            let holes = p
                .interiors()
                .iter()
                .map(|h| reproject_ring(path, h, &from, &to))
                .collect::<Result<Vec<_>>>()?;
            out.push(Polygon::new(ext, holes));
        }
        Self::from_polygons(path, out)
    }

    /// Parses GeoJSON bytes taking the coordinates as they are (no CRS handling); `path` names the
    /// source in errors.
    pub fn from_geojson(path: &Path, bytes: &[u8]) -> Result<Aoi> {
        let (_, polys) = parse_polygons(path, bytes)?;
        Self::from_polygons(path, polys)
    }

    fn from_polygons(path: &Path, polys: Vec<Polygon<f64>>) -> Result<Aoi> {
        Self::new(MultiPolygon::new(polys)).ok_or_else(|| bad(path, "the polygons enclose no area"))
    }

    /// An area from polygons (None when they have no extent).
    pub fn new(shape: MultiPolygon<f64>) -> Option<Aoi> {
        let r = shape.bounding_rect()?;
        if r.width() <= 0.0 || r.height() <= 0.0 {
            return None;
        }
        let mut edges = Vec::new();
        for (i, p) in shape.0.iter().enumerate() {
            for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
                for l in ring.lines() {
                    if l.start != l.end {
                        edges.push((i, l.start, l.end));
                    }
                }
            }
        }
        Some(Aoi {
            shape,
            bbox: Envelope {
                xmin: r.min().x,
                ymin: r.min().y,
                xmax: r.max().x,
                ymax: r.max().y,
            },
            edges,
        })
    }

    /// The bounding box of the area.
    pub fn bbox(&self) -> Envelope {
        self.bbox
    }

    /// How `env` lies against the area: outside, inside, or crossed by its boundary.
    pub fn coverage(&self, env: &Envelope) -> Coverage {
        if !env.intersects(&self.bbox) {
            return Coverage::Outside;
        }
        let rect = Rect::new(
            Coord {
                x: env.xmin,
                y: env.ymin,
            },
            Coord {
                x: env.xmax,
                y: env.ymax,
            },
        );
        let crossed = self.edges.iter().any(|(_, a, b)| {
            // Cheap bounding-box rejection before the exact segment test.
            a.x.max(b.x) >= env.xmin
                && a.x.min(b.x) <= env.xmax
                && a.y.max(b.y) >= env.ymin
                && a.y.min(b.y) <= env.ymax
                && Line::new(*a, *b).intersects(&rect)
        });
        if crossed {
            return Coverage::Partial;
        }
        // No boundary inside the rectangle: it lies wholly on one side; its centre tells which.
        let c = Coord {
            x: (env.xmin + env.xmax) / 2.0,
            y: (env.ymin + env.ymax) / 2.0,
        };
        if self.shape.contains(&c) {
            Coverage::Inside
        } else {
            Coverage::Outside
        }
    }

    /// The pixels of a `width` × `height` image covering `env` whose centres lie in the area.
    pub fn mask(&self, env: &Envelope, width: u32, height: u32) -> Mask {
        let (w, h) = (width as usize, height as usize);
        let mut inside = vec![false; w * h];
        let rx = (env.xmax - env.xmin) / f64::from(width);
        let ry = (env.ymax - env.ymin) / f64::from(height);
        // Only edges spanning the tile's rows matter.
        let local: Vec<&(usize, Coord<f64>, Coord<f64>)> = self
            .edges
            .iter()
            .filter(|(_, a, b)| a.y.max(b.y) >= env.ymin && a.y.min(b.y) <= env.ymax)
            .collect();
        let npoly = self.shape.0.len();
        let mut xs: Vec<Vec<f64>> = vec![Vec::new(); npoly];
        for row in 0..h {
            let y = env.ymax - (row as f64 + 0.5) * ry;
            for v in xs.iter_mut() {
                v.clear();
            }
            for (p, a, b) in &local {
                // Half-open rule: a vertex on the scanline is counted once.
                if (a.y > y) != (b.y > y) {
                    xs[*p].push(a.x + (y - a.y) * (b.x - a.x) / (b.y - a.y));
                }
            }
            let line = &mut inside[row * w..(row + 1) * w];
            for v in xs.iter_mut() {
                v.sort_by(f64::total_cmp);
                for pair in v.chunks_exact(2) {
                    // Pixel i's centre is env.xmin + (i + 0.5) * rx; it is inside when x0 <= it < x1.
                    let first = ((pair[0] - env.xmin) / rx - 0.5).ceil().max(0.0);
                    let end = ((pair[1] - env.xmin) / rx - 0.5).ceil().min(w as f64);
                    if end > first {
                        line[first as usize..end as usize].fill(true);
                    }
                }
            }
        }
        let count = inside.iter().filter(|b| **b).count();
        Mask {
            width,
            height,
            inside,
            count,
        }
    }

    /// Whether the point lies in the area (geo's test; the reference for [`Aoi::mask`]).
    pub fn contains_point(&self, x: f64, y: f64) -> bool {
        self.shape.contains(&Coord { x, y })
    }
}

/// Where the tiles a job takes lie, in the cache's spatial reference: everywhere, in an
/// `--extent` rectangle, or in an `--aoi` area (which wins over an extent, as in export).
///
/// One rule for every job ([`Area::take`]): a tile is taken when it overlaps the extent (touching
/// along an edge is not overlapping), or, for an area of interest, when at least one of its pixels
/// has its centre in the area. Copy jobs (`export`, `import`) keep only those pixels of a tile the
/// area crosses; whole-tile jobs (`delete`, `render --aoi`) take the whole tile
/// ([`Area::takes_tile`]); so `delete --aoi F` removes exactly the tiles `export --aoi F` writes.
#[derive(Debug, Clone)]
pub enum Area {
    /// Every tile.
    All,
    /// Tiles overlapping this rectangle.
    Extent(Envelope),
    /// Tiles with a pixel centre in this area.
    Aoi(Aoi),
}

impl Area {
    /// The area of an `--extent` and an `--aoi` (the area of interest wins).
    pub fn of(extent: Option<Envelope>, aoi: Option<Aoi>) -> Area {
        match (aoi, extent) {
            (Some(a), _) => Area::Aoi(a),
            (None, Some(e)) => Area::Extent(e),
            (None, None) => Area::All,
        }
    }

    /// How a block of tiles (a bundle, a supertile) with map bounds `env` lies against the area:
    /// `Outside` when it can hold no tile taken, `Inside` when every tile of it is taken.
    pub fn block(&self, env: &Envelope) -> Coverage {
        match self {
            Area::All => Coverage::Inside,
            Area::Extent(e) => {
                let tol = edge_tolerance(env);
                if !overlaps(env, e) {
                    Coverage::Outside
                } else if e.xmin <= env.xmin + tol
                    && e.ymin <= env.ymin + tol
                    && env.xmax <= e.xmax + tol
                    && env.ymax <= e.ymax + tol
                {
                    Coverage::Inside
                } else {
                    Coverage::Partial
                }
            }
            Area::Aoi(a) => a.coverage(env),
        }
    }

    /// How the tile with map bounds `env`, `width` × `height` pixels, is taken (see [`Area`]).
    pub fn take(&self, env: &Envelope, width: u32, height: u32) -> Take {
        match self {
            Area::All => Take::Whole,
            Area::Extent(e) if overlaps(env, e) => Take::Whole,
            Area::Extent(_) => Take::No,
            Area::Aoi(a) => match a.coverage(env) {
                Coverage::Outside => Take::No,
                Coverage::Inside => Take::Whole,
                Coverage::Partial => {
                    let m = a.mask(env, width, height);
                    if m.is_empty() {
                        Take::No
                    } else if m.is_full() {
                        Take::Whole
                    } else {
                        Take::Pixels(m)
                    }
                }
            },
        }
    }

    /// Whether the tile with map bounds `env`, `width` × `height` pixels, is taken at all (see
    /// [`Area`]).
    pub fn takes_tile(&self, env: &Envelope, width: u32, height: u32) -> bool {
        !matches!(self.take(env, width, height), Take::No)
    }

    /// The rectangle that holds the area (None for every tile).
    pub fn bounds(&self) -> Option<Envelope> {
        match self {
            Area::All => None,
            Area::Extent(e) => Some(*e),
            Area::Aoi(a) => Some(a.bbox()),
        }
    }
}

/// How far apart two edges may be and still count as one: a millionth of the block's smaller
/// side (a quarter of a thousandth of a pixel for a 256 px tile). Tile edges are computed from
/// the origin, the resolution and the row or column, so an extent given as the exact edges of a
/// tile differs from them by float error (seen: 3e-6 m at 10^7 m from the origin); without a
/// tolerance the tiles beside it would count as overlapping it.
fn edge_tolerance(env: &Envelope) -> f64 {
    1e-6 * (env.xmax - env.xmin).abs().min((env.ymax - env.ymin).abs())
}

/// Whether `env` (a tile or block) and the extent `e` share more than an edge: the overlap is
/// wider and taller than [`edge_tolerance`].
fn overlaps(env: &Envelope, e: &Envelope) -> bool {
    let tol = edge_tolerance(env);
    env.xmax.min(e.xmax) - env.xmin.max(e.xmin) > tol
        && env.ymax.min(e.ymax) - env.ymin.max(e.ymin) > tol
}

/// How a tile is taken by an [`Area`].
#[derive(Debug, Clone, PartialEq)]
pub enum Take {
    /// Not at all: no pixel centre in the area (no overlap with the extent).
    No,
    /// Every pixel.
    Whole,
    /// Only the pixels the mask holds (an area of interest crossing the tile); never empty or full.
    Pixels(Mask),
}

#[cfg(test)]
mod extent_tests {
    use super::*;
    use crate::format::conf::TileScheme;
    use crate::format::TileAddr;

    /// An extent given as a tile's edges (as a user types them) takes that tile only, not the
    /// neighbours whose computed edges differ from it by float error.
    #[test]
    fn an_extent_on_tile_edges_takes_that_tile_only() {
        let s = TileScheme::web_mercator(4, crate::format::conf::TileFormat::Png);
        let e = Envelope {
            xmin: -20037508.342787,
            ymin: 10018754.1713935,
            xmax: -10018754.1713935,
            ymax: 20037508.342787,
        };
        let area = Area::Extent(e);
        let mut taken = Vec::new();
        for row in 0..4 {
            for col in 0..4 {
                let t = TileAddr { level: 2, row, col };
                if area.takes_tile(&s.tile_bbox(t).unwrap(), 256, 256) {
                    taken.push((row, col));
                }
            }
        }
        assert_eq!(taken, vec![(0, 0)]);
        // More than an edge (100 m, 0.0026 px at level 2) is taken.
        let wider = Envelope {
            xmax: e.xmax + 100.0,
            ..e
        };
        let t = TileAddr {
            level: 2,
            row: 0,
            col: 1,
        };
        assert!(Area::Extent(wider).takes_tile(&s.tile_bbox(t).unwrap(), 256, 256));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aoi(json: &str) -> Aoi {
        Aoi::from_geojson(Path::new("t.geojson"), json.as_bytes()).unwrap()
    }

    fn env(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> Envelope {
        Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    #[test]
    fn geojson_with_a_byte_order_mark_or_crlf_reads_like_plain_utf8() {
        let plain = r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]]]}"#;
        let want = aoi(plain).bbox();
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend(plain.replace(',', ",\r\n").as_bytes());
        let got = Aoi::from_geojson(Path::new("bom.geojson"), &bom).unwrap();
        assert_eq!(got.bbox(), want);
        // UTF-16 LE with its mark, as some Windows editors save it.
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend(plain.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let got = Aoi::from_geojson(Path::new("u16.geojson"), &utf16).unwrap();
        assert_eq!(got.bbox(), want);
    }

    const DONUT: &str = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[
            [[0,0],[100,0],[100,100],[0,100],[0,0]],
            [[40,40],[60,40],[60,60],[40,60],[40,40]]]}},
        {"type":"Feature","properties":{},"geometry":{"type":"MultiPolygon","coordinates":[
            [[[150,10],[190,30],[160,90],[150,10]]]]}}]}"#;

    #[test]
    fn coverage_of_rectangles() {
        let a = aoi(DONUT);
        assert_eq!(a.bbox(), env(0.0, 0.0, 190.0, 100.0));
        assert_eq!(a.coverage(&env(10.0, 10.0, 30.0, 30.0)), Coverage::Inside);
        assert_eq!(a.coverage(&env(45.0, 45.0, 55.0, 55.0)), Coverage::Outside); // in the hole
        assert_eq!(a.coverage(&env(35.0, 35.0, 45.0, 45.0)), Coverage::Partial);
        assert_eq!(
            a.coverage(&env(110.0, 10.0, 140.0, 90.0)),
            Coverage::Outside
        );
        assert_eq!(
            a.coverage(&env(-50.0, -50.0, 300.0, 300.0)),
            Coverage::Partial
        );
        assert_eq!(a.coverage(&env(500.0, 0.0, 600.0, 10.0)), Coverage::Outside);
    }

    #[test]
    fn mask_matches_geo_point_in_polygon() {
        let a = aoi(DONUT);
        // An odd pixel size so centres never sit on edges.
        for e in [
            env(-7.0, -3.0, 201.0, 105.0),
            env(30.0, 30.0, 70.0, 70.0),
            env(140.0, 0.0, 200.0, 60.0),
        ] {
            let (w, h) = (64u32, 48u32);
            let m = a.mask(&e, w, h);
            let (rx, ry) = (
                (e.xmax - e.xmin) / f64::from(w),
                (e.ymax - e.ymin) / f64::from(h),
            );
            let mut n = 0;
            for y in 0..h {
                for x in 0..w {
                    let (cx, cy) = (
                        e.xmin + (f64::from(x) + 0.5) * rx,
                        e.ymax - (f64::from(y) + 0.5) * ry,
                    );
                    assert_eq!(
                        m.get(x, y),
                        a.contains_point(cx, cy),
                        "{e:?} pixel ({x}, {y})"
                    );
                    n += usize::from(m.get(x, y));
                }
            }
            assert_eq!(m.count(), n);
            assert!(n > 0 && !m.is_full(), "{e:?}: {n}");
        }
        assert!(a.mask(&env(10.0, 10.0, 30.0, 30.0), 8, 8).is_full());
        assert!(a.mask(&env(45.0, 45.0, 55.0, 55.0), 8, 8).is_empty());
    }

    fn scheme(epsg: u32) -> TileScheme {
        let mut s = TileScheme::web_mercator(0, crate::format::conf::TileFormat::Png);
        if epsg != 3857 {
            s.wkid = Some(epsg);
            s.latest_wkid = Some(epsg);
            s.wkt = None;
        }
        s
    }

    fn ring_json(crs: Option<&str>, ring: &[(f64, f64)]) -> String {
        let coords: Vec<[f64; 2]> = ring.iter().map(|&(x, y)| [x, y]).collect();
        let mut v = serde_json::json!({"type": "Feature", "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [coords]}});
        if let Some(c) = crs {
            v["crs"] = serde_json::json!({"type": "name", "properties": {"name": c}});
        }
        v.to_string()
    }

    fn read_for(json: &str, s: &TileScheme) -> Result<Aoi> {
        Aoi::from_geojson_for(Path::new("a.geojson"), json.as_bytes(), Some(s))
    }

    #[test]
    fn crs_names_as_tools_write_them() {
        for (name, code) in [
            ("urn:ogc:def:crs:OGC:1.3:CRS84", 4326),
            ("urn:ogc:def:crs:OGC::CRS84", 4326),
            ("CRS84", 4326),
            ("EPSG:3857", 3857),
            ("urn:ogc:def:crs:EPSG::2180", 2180),
            ("urn:ogc:def:crs:EPSG:6.6:4326", 4326),
            ("http://www.opengis.net/def/crs/EPSG/0/2180", 2180),
            ("http://www.opengis.net/gml/srs/epsg.xml#4326", 4326),
            ("ESRI:102100", 3857),
        ] {
            assert_eq!(crs_name_code(name), Some(code), "{name}");
        }
        for name in [
            "ESRI:102003",
            "urn:ogc:def:crs:OGC:1.3:CRS99",
            "WGS84",
            "EPSG:x",
        ] {
            assert_eq!(crs_name_code(name), None, "{name}");
        }
        let doc = serde_json::json!({"crs": {"type": "EPSG", "properties": {"code": 2180}}});
        assert_eq!(
            declared_crs(Path::new("a"), &doc).unwrap(),
            Some(("EPSG:2180".into(), 2180))
        );
        let link = serde_json::json!({"crs": {"type": "link", "properties": {"href": "x"}}});
        let e = declared_crs(Path::new("a.json"), &link)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.json") && e.contains("\"crs\" member"), "{e}");
    }

    /// Degrees go into Web Mercator by the sphere formulas x = Rλ, y = R ln tan(π/4 + φ/2)
    /// (R = 6378137 m), computed here independently of proj4rs.
    #[test]
    fn lon_lat_areas_are_carried_into_web_mercator() {
        let ring = [
            (2.0, 48.5),
            (2.8, 48.5),
            (2.8, 49.1),
            (2.0, 49.1),
            (2.0, 48.5),
        ];
        let r = 6_378_137.0_f64;
        let y = |lat: f64| {
            r * (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
                .tan()
                .ln()
        };
        let want = [
            2.0_f64.to_radians() * r,
            y(48.5),
            2.8_f64.to_radians() * r,
            y(49.1),
        ];
        // Declared, and by RFC 7946 when undeclared: the same area.
        for crs in [
            Some("urn:ogc:def:crs:OGC:1.3:CRS84"),
            Some("EPSG:4326"),
            None,
        ] {
            let b = read_for(&ring_json(crs, &ring), &scheme(3857))
                .unwrap()
                .bbox();
            let got = [b.xmin, b.ymin, b.xmax, b.ymax];
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{crs:?}: {got:?} vs {want:?}");
            }
        }
        // The same ring in metres, declared as such, is taken as it is.
        let m: Vec<(f64, f64)> = ring
            .iter()
            .map(|&(lon, lat)| (lon.to_radians() * r, y(lat)))
            .collect();
        let b = read_for(&ring_json(Some("EPSG:3857"), &m), &scheme(3857))
            .unwrap()
            .bbox();
        assert!((b.xmin - want[0]).abs() < 1e-6 && (b.ymax - want[3]).abs() < 1e-6);
    }

    /// A polygon in Poland CS92 read into a geographic cache: corners as PROJ 9.1 gives them
    /// (`gdaltransform -s_srs EPSG:2180 -t_srs '+proj=longlat +datum=WGS84'`: 144000 130000 →
    /// 14.1368607019397 48.9349347532319; 880000 780000 → 24.9075102422731 54.7394722588405).
    #[test]
    fn projected_areas_are_carried_into_geographic_caches() {
        let ring = [
            (144000.0, 130000.0),
            (880000.0, 130000.0),
            (880000.0, 780000.0),
            (144000.0, 780000.0),
            (144000.0, 130000.0),
        ];
        let a = read_for(
            &ring_json(Some("urn:ogc:def:crs:EPSG::2180"), &ring),
            &scheme(4326),
        )
        .unwrap();
        // 0.015° in from the south-west and north-east corners, and 0.015° out.
        assert!(a.contains_point(14.152, 48.950) && a.contains_point(24.892, 54.724));
        assert!(!a.contains_point(14.122, 48.920) && !a.contains_point(24.922, 54.754));
        let b = a.bbox();
        assert!((b.xmax - 24.907_510_242_273_1).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn references_that_cannot_be_used_are_refused_naming_both() {
        let ring = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)];
        let e = read_for(&ring_json(Some("EPSG:32767"), &ring), &scheme(2180))
            .unwrap_err()
            .to_string();
        assert!(e.contains("EPSG:32767") && e.contains("EPSG:2180"), "{e}");
        let mut unknown = scheme(2180);
        unknown.wkid = None;
        unknown.latest_wkid = None;
        unknown.wkt = Some("PROJCS[\"Local_Grid\",UNIT[\"Meter\",1.0]]".into());
        let e = read_for(&ring_json(None, &ring), &unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("WGS 84") && e.contains("Local_Grid"), "{e}");
        // Degrees declared, metres given.
        let big = [(0.0, 0.0), (5e5, 0.0), (5e5, 5e5), (0.0, 0.0)];
        let e = read_for(&ring_json(Some("CRS84"), &big), &scheme(3857))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not longitude/latitude"), "{e}");
        // No crs and not degrees: read in the cache's units (as bundlefs did before).
        let a = read_for(&ring_json(None, &big), &scheme(3857)).unwrap();
        assert_eq!(a.bbox(), env(0.0, 0.0, 5e5, 5e5));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = |s: &str| {
            Aoi::from_geojson(Path::new("x.json"), s.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err("{").contains("x.json: bad area of interest: not GeoJSON"));
        assert!(err(r#"{"type":"Point","coordinates":[1,2]}"#).contains("Point is not an area"));
        assert!(
            err(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}"#)
                .contains("at least 4 positions")
        );
        assert!(err(r#"{"type":"FeatureCollection","features":[]}"#).contains("no polygon"));
        assert!(
            err(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[2,0],[0,0]]]}"#)
                .contains("no area")
        );
    }
}
