//! Areas of interest: a GeoJSON polygon or multipolygon in the cache's spatial reference, how a tile
//! (or a bundle) lies against it, and which of a tile's pixels it covers (pixel centres, even-odd
//! per polygon, polygons united).

use std::path::Path;

use geo::{
    BoundingRect, Contains, Coord, Intersects, Line, LineString, MultiPolygon, Polygon, Rect,
};
use geojson::{GeoJson, GeometryValue, Position};

use crate::error::{Error, Result};
use crate::format::conf::Envelope;

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

impl Aoi {
    /// Reads a GeoJSON file: a geometry, a feature or a feature collection of polygons and
    /// multipolygons, coordinates in the cache's spatial reference.
    pub fn from_geojson_file(path: &Path) -> Result<Aoi> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_geojson(path, &bytes)
    }

    /// Parses GeoJSON bytes; `path` names the source in errors.
    pub fn from_geojson(path: &Path, bytes: &[u8]) -> Result<Aoi> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| bad(path, format!("not UTF-8 text: {e}")))?;
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
