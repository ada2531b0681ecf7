//! Extents and spatial references: the extent a tiling scheme covers on its own, the EPSG code of a
//! scheme's spatial reference (from its WKID, LatestWKID or WKT), and envelopes and points carried
//! from one spatial reference to another with `proj4rs` (EPSG definitions from `crs-definitions`).

use proj4rs::Proj;

use super::conf::{Envelope, TileScheme, WEB_MERCATOR_ORIGIN};
use super::BUNDLE_DIM;

/// EPSG code of geographic WGS 84 (longitude, latitude in degrees).
pub const WGS84: u32 = 4326;
/// EPSG code of Web Mercator (WGS 84 / Pseudo-Mercator).
pub const WEB_MERCATOR: u32 = 3857;

/// Esri and legacy ids that name Web Mercator: 102100 (Esri, auxiliary sphere), 102113 (Esri,
/// the older sphere id), 900913 (the "Google" id), 3785 (EPSG's deprecated code). All use the sphere
/// of radius 6378137 m, so they are one spatial reference for tiles.
const WEB_MERCATOR_ALIASES: [u32; 5] = [3857, 102100, 102113, 900913, 3785];

/// Why a spatial reference or a transformation cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrsError {
    /// The code is not one bundlefs has a definition for.
    #[error("EPSG:{0} is not a spatial reference bundlefs knows (no EPSG definition for it)")]
    Unknown(u32),
    /// The transformation failed for every point given.
    #[error("cannot transform from EPSG:{from} to EPSG:{to}: {msg}")]
    Transform { from: u32, to: u32, msg: String },
}

/// The EPSG code that `id` (an Esri WKID or an EPSG code) stands for: Web Mercator's Esri ids
/// become 3857; other ids are returned as they are (Esri's own ids above 32767 have no EPSG twin
/// here and fail later in [`Crs::from_epsg`]).
pub fn epsg_of_wkid(id: u32) -> u32 {
    if WEB_MERCATOR_ALIASES.contains(&id) {
        WEB_MERCATOR
    } else {
        id
    }
}

/// The EPSG code a WKT names: its outermost `AUTHORITY["EPSG",N]` (the last one in the text, as
/// OGC WKT 1 puts it at the end of the top-level object), else a few names ArcGIS writes without an
/// authority: `GCS_WGS_1984` (4326) and `WGS_1984_Web_Mercator_Auxiliary_Sphere` (3857).
pub fn epsg_of_wkt(wkt: &str) -> Option<u32> {
    let t = wkt.trim();
    // The top-level AUTHORITY is the last one, just before the closing bracket.
    if let Some(at) = t.rfind("AUTHORITY[") {
        let rest = &t[at + "AUTHORITY[".len()..];
        let inner = rest.split(']').next().unwrap_or("");
        // Depth 1 is inside the top-level object only.
        let depth = t[..at].matches('[').count() as i64 - t[..at].matches(']').count() as i64;
        let mut parts = inner.split(',').map(|p| p.trim().trim_matches('"'));
        if depth == 1 && parts.next()?.eq_ignore_ascii_case("EPSG") {
            return parts.next()?.parse().ok();
        }
    }
    let name = t
        .split_once('[')
        .map(|(kind, rest)| (kind.trim(), rest.split(',').next().unwrap_or("")))
        .map(|(kind, n)| {
            (
                kind.to_ascii_uppercase(),
                n.trim().trim_matches('"').to_string(),
            )
        })?;
    match (name.0.as_str(), name.1.as_str()) {
        ("GEOGCS", "GCS_WGS_1984") | ("GEOGCS", "WGS 84") => Some(WGS84),
        ("PROJCS", "WGS_1984_Web_Mercator_Auxiliary_Sphere")
        | ("PROJCS", "WGS_1984_Web_Mercator")
        | ("PROJCS", "WGS 84 / Pseudo-Mercator") => Some(WEB_MERCATOR),
        _ => None,
    }
}

/// The EPSG code of a scheme's spatial reference: LatestWKID (more often an EPSG code, as GDAL
/// reasons), else WKID, else what its WKT names ([`epsg_of_wkt`]). Web Mercator's Esri ids give
/// 3857. `None` when nothing identifies it.
pub fn scheme_epsg(s: &TileScheme) -> Option<u32> {
    let known = |id: u32| epsg_of_wkid(id) <= 32767;
    s.latest_wkid
        .filter(|&id| known(id))
        .or(s.wkid.filter(|&id| known(id)))
        .map(epsg_of_wkid)
        .or_else(|| s.wkt.as_deref().and_then(epsg_of_wkt))
        .or(s.latest_wkid.or(s.wkid))
}

/// How a scheme's spatial reference reads in messages: `EPSG:N`, the WKID, or the WKT's name.
pub fn describe(s: &TileScheme) -> String {
    if let Some(code) = scheme_epsg(s) {
        return format!("EPSG:{code}");
    }
    match s.wkt.as_deref() {
        Some(w) => {
            let name = w.split('"').nth(1).unwrap_or(w);
            format!("{name:?} (WKT without an EPSG code)")
        }
        None => "an unknown spatial reference (conf.xml names none)".into(),
    }
}

/// Whether the scheme is Web Mercator.
pub fn is_web_mercator(s: &TileScheme) -> bool {
    scheme_epsg(s) == Some(WEB_MERCATOR)
}

/// The extent of the whole world of a scheme, when the scheme says it: Web Mercator's square, or
/// the box symmetric about the map origin (0, 0) that an origin at the top left of the world
/// spans (geographic schemes: -180..180 × -90..90). None for schemes whose origin lies elsewhere
/// (national grids): their tiles have no bound but the data's.
pub fn known_world(s: &TileScheme) -> Option<Envelope> {
    (is_web_mercator(s) || (s.origin_x < 0.0 && s.origin_y > 0.0)).then(|| scheme_extent(s))
}

/// Whether tile `t` lies at least partly in the scheme's known world ([`known_world`]); true
/// when the world is not known or the level is not in the scheme (refused elsewhere).
pub fn tile_in_world(s: &TileScheme, t: crate::format::TileAddr) -> bool {
    let Some(w) = known_world(s) else {
        return true;
    };
    match s.tile_range(t.level, &w) {
        Some((rows, cols)) => rows.contains(&t.row) && cols.contains(&t.col),
        None => s.lod(t.level).is_none(),
    }
}

/// The extent a tiling scheme covers on its own (when no conf.cdi says better), in its map units:
///
/// - Web Mercator: the square ±20037508.342787 m, the whole projection.
/// - A scheme whose tile origin is a false origin (x < 0 < y, as ArcGIS puts it at the corner of the
///   coordinate system's domain): the grid symmetric about (0, 0) with that corner,
///   `(X0, -Y0, -X0, Y0)`. This is what GDAL's ESRIC driver assumes for a conf.xml or root.json
///   (`frmts/esric/esric_dataset.cpp`: "Assume symmetric coverage"), so GDAL and bundlefs see the
///   same raster; e.g. geographic (-180, 90) gives the world (-180, -90, 180, 90).
/// - Any other origin: the first bundle of the coarsest level (128 × 128 tiles down and right from
///   the origin), which holds every tile a one-bundle level can have.
pub fn scheme_extent(s: &TileScheme) -> Envelope {
    if is_web_mercator(s) {
        let o = WEB_MERCATOR_ORIGIN;
        return Envelope {
            xmin: -o,
            ymin: -o,
            xmax: o,
            ymax: o,
        };
    }
    let (x0, y0) = (s.origin_x, s.origin_y);
    if x0 < 0.0 && y0 > 0.0 {
        return Envelope {
            xmin: x0,
            ymin: -y0,
            xmax: -x0,
            ymax: y0,
        };
    }
    let coarsest = s.lods.iter().map(|l| l.resolution).fold(f64::NAN, f64::max);
    let r = if coarsest.is_finite() { coarsest } else { 1.0 };
    let n = f64::from(BUNDLE_DIM);
    Envelope {
        xmin: x0,
        ymin: y0 - n * f64::from(s.tile_rows) * r,
        xmax: x0 + n * f64::from(s.tile_cols) * r,
        ymax: y0,
    }
}

/// A spatial reference that points can be transformed from and to.
pub struct Crs {
    epsg: u32,
    proj: Proj,
}

impl std::fmt::Debug for Crs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EPSG:{}", self.epsg)
    }
}

impl Crs {
    /// The spatial reference of EPSG code `code` (Web Mercator's Esri ids accepted), from the EPSG
    /// definitions `crs-definitions` carries (PROJ.4 strings of the EPSG registry).
    pub fn from_epsg(code: u32) -> Result<Crs, CrsError> {
        let epsg = epsg_of_wkid(code);
        let proj = u16::try_from(epsg)
            .ok()
            .and_then(|c| Proj::from_epsg_code(c).ok())
            .ok_or(CrsError::Unknown(epsg))?;
        Ok(Crs { epsg, proj })
    }

    /// The EPSG code.
    pub fn epsg(&self) -> u32 {
        self.epsg
    }

    /// Whether coordinates are longitude, latitude in degrees.
    pub fn is_geographic(&self) -> bool {
        self.proj.is_latlong()
    }

    /// Transforms one point (degrees for geographic references, map units otherwise; x is the
    /// easting or longitude whatever the EPSG axis order). `None` when the point has no image.
    pub fn transform(&self, to: &Crs, x: f64, y: f64) -> Option<(f64, f64)> {
        if self.epsg == to.epsg {
            return Some((x, y));
        }
        let mut p = if self.is_geographic() {
            (x.to_radians(), y.to_radians(), 0.0)
        } else {
            (x, y, 0.0)
        };
        proj4rs::transform::transform(&self.proj, &to.proj, &mut p).ok()?;
        let (ox, oy) = if to.is_geographic() {
            (p.0.to_degrees(), p.1.to_degrees())
        } else {
            (p.0, p.1)
        };
        (ox.is_finite() && oy.is_finite()).then_some((ox, oy))
    }

    /// Transforms many points in place; fails naming both references if any point has no image.
    pub fn transform_all(&self, to: &Crs, pts: &mut [(f64, f64)]) -> Result<(), CrsError> {
        for p in pts.iter_mut() {
            *p = self
                .transform(to, p.0, p.1)
                .ok_or_else(|| CrsError::Transform {
                    from: self.epsg,
                    to: to.epsg,
                    msg: format!("the point ({}, {}) has no image", p.0, p.1),
                })?;
        }
        Ok(())
    }

    /// The envelope in `to` that holds `e`: its boundary sampled at 64 points a side (edges curve
    /// when projected) and the points that have an image enclosed. Latitudes beyond Mercator's
    /// reach are cut at ±85.0511° first. Fails when no sampled point has an image.
    pub fn transform_envelope(&self, to: &Crs, e: &Envelope) -> Result<Envelope, CrsError> {
        if self.epsg == to.epsg {
            return Ok(*e);
        }
        let mut e = *e;
        if self.is_geographic() && to.epsg == WEB_MERCATOR {
            const MAX_LAT: f64 = 85.051_128_779_806_59;
            e.ymin = e.ymin.max(-MAX_LAT);
            e.ymax = e.ymax.min(MAX_LAT);
        }
        const N: usize = 64;
        let mut out: Option<Envelope> = None;
        for i in 0..=N {
            let f = i as f64 / N as f64;
            let x = e.xmin + f * (e.xmax - e.xmin);
            let y = e.ymin + f * (e.ymax - e.ymin);
            for (px, py) in [(x, e.ymin), (x, e.ymax), (e.xmin, y), (e.xmax, y)] {
                if let Some((qx, qy)) = self.transform(to, px, py) {
                    out = Some(match out {
                        None => Envelope {
                            xmin: qx,
                            ymin: qy,
                            xmax: qx,
                            ymax: qy,
                        },
                        Some(o) => Envelope {
                            xmin: o.xmin.min(qx),
                            ymin: o.ymin.min(qy),
                            xmax: o.xmax.max(qx),
                            ymax: o.ymax.max(qy),
                        },
                    });
                }
            }
        }
        out.filter(|o| o.xmin < o.xmax && o.ymin < o.ymax)
            .ok_or_else(|| CrsError::Transform {
                from: self.epsg,
                to: to.epsg,
                msg: format!(
                    "no point of ({}, {}, {}, {}) has an image",
                    e.xmin, e.ymin, e.xmax, e.ymax
                ),
            })
    }
}

/// The spatial reference of a scheme, when bundlefs can identify it and has its definition.
pub fn scheme_crs(s: &TileScheme) -> Result<Crs, String> {
    let code = scheme_epsg(s).ok_or_else(|| describe(s))?;
    Crs::from_epsg(code).map_err(|e| e.to_string())
}

/// `e` (in the scheme's spatial reference) in geographic WGS 84 degrees, longitudes cut to ±180 and
/// latitudes to ±90, as ArcGIS writes a package's item extent. `None` when the scheme's spatial
/// reference is unknown or the envelope has no image in WGS 84.
pub fn wgs84_extent(s: &TileScheme, e: &Envelope) -> Option<Envelope> {
    let from = scheme_crs(s).ok()?;
    let to = Crs::from_epsg(WGS84).ok()?;
    let g = from.transform_envelope(&to, e).ok()?;
    let g = Envelope {
        xmin: g.xmin.clamp(-180.0, 180.0),
        ymin: g.ymin.clamp(-90.0, 90.0),
        xmax: g.xmax.clamp(-180.0, 180.0),
        ymax: g.ymax.clamp(-90.0, 90.0),
    };
    (g.xmin < g.xmax && g.ymin < g.ymax).then_some(g)
}

/// The union of two envelopes.
pub fn union(a: &Envelope, b: &Envelope) -> Envelope {
    Envelope {
        xmin: a.xmin.min(b.xmin),
        ymin: a.ymin.min(b.ymin),
        xmax: a.xmax.max(b.xmax),
        ymax: a.ymax.max(b.ymax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::{Lod, TileFormat};

    /// Poland CS92 as in case 09 (mapproxy/mapproxy#859): origin far from the data.
    fn poland() -> TileScheme {
        let mut s = TileScheme::web_mercator(0, TileFormat::Png);
        s.wkid = Some(2180);
        s.latest_wkid = Some(2180);
        s.wkt = None;
        s.origin_x = -5120900.0;
        s.origin_y = 9998100.0;
        s.lods = vec![Lod {
            level: 0,
            scale: 1e7,
            resolution: 1e7 / (96.0 * 39.37),
        }];
        s
    }

    #[test]
    fn scheme_extent_is_gdals_symmetric_grid() {
        let e = scheme_extent(&poland());
        assert_eq!(
            [e.xmin, e.ymin, e.xmax, e.ymax],
            [-5120900.0, -9998100.0, 5120900.0, 9998100.0]
        );
        // Warsaw's tile (level 0, row 14, col 8) lies inside.
        let t = poland()
            .tile_bbox(crate::format::TileAddr::new(0, 14, 8))
            .unwrap();
        assert!(t.intersects(&e));
        let mut g = poland();
        g.wkid = None;
        g.latest_wkid = None;
        g.wkt = Some("GEOGCS[\"GCS_WGS_1984\",DATUM[\"D_WGS_1984\"]]".into());
        g.origin_x = -180.0;
        g.origin_y = 90.0;
        let e = scheme_extent(&g);
        assert_eq!(
            [e.xmin, e.ymin, e.xmax, e.ymax],
            [-180.0, -90.0, 180.0, 90.0]
        );
        let wm = TileScheme::web_mercator(3, TileFormat::Png);
        assert_eq!(scheme_extent(&wm).xmax, WEB_MERCATOR_ORIGIN);
        // An origin that is not a false origin: one bundle of the coarsest level.
        let mut o = poland();
        o.origin_x = 100.0;
        o.origin_y = 200.0;
        let e = scheme_extent(&o);
        let span = 128.0 * 256.0 * o.lods[0].resolution;
        assert_eq!([e.xmin, e.ymax], [100.0, 200.0]);
        assert!((e.xmax - (100.0 + span)).abs() < 1e-6 && (e.ymin - (200.0 - span)).abs() < 1e-6);
    }

    #[test]
    fn epsg_codes_from_wkid_and_wkt() {
        let mut s = poland();
        assert_eq!(scheme_epsg(&s), Some(2180));
        s.wkid = Some(102100);
        s.latest_wkid = None;
        assert_eq!(scheme_epsg(&s), Some(3857));
        s.wkid = None;
        s.wkt = Some("PROJCS[\"ETRS_1989_Poland_CS92\",GEOGCS[\"GCS_ETRS_1989\",AUTHORITY[\"EPSG\",4258]],UNIT[\"Meter\",1.0],AUTHORITY[\"EPSG\",2180]]".into());
        assert_eq!(scheme_epsg(&s), Some(2180));
        // An inner AUTHORITY (the datum's) is not the reference's.
        s.wkt =
            Some("PROJCS[\"x\",GEOGCS[\"y\",AUTHORITY[\"EPSG\",4258]],UNIT[\"Meter\",1.0]]".into());
        assert_eq!(scheme_epsg(&s), None);
        assert!(describe(&s).contains("\"x\""), "{}", describe(&s));
        s.wkt = Some(crate::format::conf::WEB_MERCATOR_WKT.into());
        assert_eq!(scheme_epsg(&s), Some(3857));
        assert_eq!(
            epsg_of_wkt("GEOGCS[\"GCS_WGS_1984\",DATUM[\"D_WGS_1984\"]]"),
            Some(4326)
        );
    }

    /// Values from PROJ 9.1 through GDAL 3.6: `echo 19 52 | gdaltransform -s_srs '+proj=longlat
    /// +datum=WGS84' -t_srs EPSG:2180` gives 500000 459309.20940161.
    #[test]
    fn points_go_between_references() {
        let wgs = Crs::from_epsg(WGS84).unwrap();
        let pl = Crs::from_epsg(2180).unwrap();
        let (x, y) = wgs.transform(&pl, 19.0, 52.0).unwrap();
        assert!((x - 500000.0).abs() < 0.01, "{x}");
        assert!((y - 459309.209_401_61).abs() < 1e-6, "{y}");
        let (lon, lat) = pl.transform(&wgs, x, y).unwrap();
        assert!((lon - 19.0).abs() < 1e-9 && (lat - 52.0).abs() < 1e-9);
        let wm = Crs::from_epsg(102100).unwrap();
        let (x, y) = wgs.transform(&wm, 180.0, 0.0).unwrap();
        assert!(
            (x - WEB_MERCATOR_ORIGIN).abs() < 1e-3 && y.abs() < 1e-6,
            "{x} {y}"
        );
        assert_eq!(
            Crs::from_epsg(999_999).unwrap_err(),
            CrsError::Unknown(999_999)
        );
    }

    #[test]
    fn wgs84_extent_of_any_reference() {
        let s = poland();
        let e = Envelope {
            xmin: 144000.0,
            ymin: 130000.0,
            xmax: 880000.0,
            ymax: 780000.0,
        };
        let g = wgs84_extent(&s, &e).unwrap();
        // The west end is the north-west corner, the east end the north-east corner (PROJ 9.1 via
        // gdaltransform: 13.4635958468849 54.757..., 24.9075102422731 54.739...); the north edge
        // bulges above both corners, the south edge sags below the south corners (48.93 N).
        assert!((g.xmin - 13.463_595_846_884_9).abs() < 1e-9, "{g:?}");
        assert!((g.xmax - 24.907_510_242_273_1).abs() < 1e-9, "{g:?}");
        assert!(
            g.ymax > 54.757 && g.ymax < 55.0 && g.ymin < 48.935 && g.ymin > 48.8,
            "{g:?}"
        );
        let wm = TileScheme::web_mercator(0, TileFormat::Png);
        let g = wgs84_extent(&wm, &scheme_extent(&wm)).unwrap();
        assert!(
            (g.xmin + 180.0).abs() < 1e-6 && (g.ymax - 85.0511).abs() < 1e-3,
            "{g:?}"
        );
        let mut unknown = s.clone();
        unknown.wkid = None;
        unknown.latest_wkid = None;
        assert!(wgs84_extent(&unknown, &e).is_none());
    }
}
