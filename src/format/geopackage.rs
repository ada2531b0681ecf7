//! OGC GeoPackage 1.3 tile facts (OGC 12-128r18, "GeoPackage Encoding Standard", clause 2.2
//! "Tiles"): a tile matrix set (`gpkg_tile_matrix_set`: its spatial reference and bounds, the top
//! left corner being where every zoom level's tile (0, 0) starts), one tile matrix per zoom level
//! (`gpkg_tile_matrix`: `matrix_width` × `matrix_height` tiles of `tile_width` × `tile_height`
//! pixels, `pixel_x_size`/`pixel_y_size` map units per pixel), and a tile table whose `tile_row`
//! counts down from the top, as bundles count rows. Tiles are PNG or JPEG, mixed freely (clause
//! 2.2.3); WebP only with an extension bundlefs does not write.
//!
//! An ArcGIS tiling scheme maps onto it one to one: the tile origin is the set's top left, each LOD
//! a zoom level of the same number with its resolution as pixel size. Pure functions: the SQL is
//! the storage's (`cache::store::geopackage`).

use super::conf::{Envelope, Lod, StorageFormat, TileFormat, TileScheme, INCHES_PER_METRE};
use super::extent::{epsg_of_wkid, scheme_epsg};
use super::scheme::{MapUnits, SpatialReference};
use super::sniff::ImageKind;

/// `PRAGMA application_id` of a GeoPackage: the ASCII of "GPKG" (clause 1.1.1.1.1).
pub const APPLICATION_ID: i32 = 0x4750_4B47;
/// `PRAGMA user_version` of a GeoPackage 1.3 (clause 1.1.1.1.1: 10300 for 1.3.x).
pub const USER_VERSION: i32 = 10300;

/// One row of `gpkg_tile_matrix`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matrix {
    /// `zoom_level` (the ArcGIS level of the same number).
    pub zoom: u8,
    /// `matrix_width`: columns of tiles.
    pub width: u32,
    /// `matrix_height`: rows of tiles.
    pub height: u32,
    /// `tile_width` in pixels.
    pub tile_width: u32,
    /// `tile_height` in pixels.
    pub tile_height: u32,
    /// `pixel_x_size`: map units per pixel across.
    pub pixel_x: f64,
    /// `pixel_y_size`: map units per pixel down.
    pub pixel_y: f64,
}

/// One row of `gpkg_spatial_ref_sys`.
#[derive(Debug, Clone, PartialEq)]
pub struct Srs {
    /// `srs_id` (the EPSG code or Esri WKID where there is one).
    pub id: i64,
    /// `srs_name`.
    pub name: String,
    /// `organization` (`EPSG`, `ESRI` or `NONE`).
    pub organization: String,
    /// `organization_coordsys_id`.
    pub code: i64,
    /// `definition`: WKT, or `undefined`.
    pub definition: String,
}

/// The `gpkg_spatial_ref_sys` rows every GeoPackage has (clause 1.1.2.1.2): WGS 84 (4326) and the
/// undefined Cartesian (-1) and geographic (0) references.
pub fn required_srs() -> Vec<Srs> {
    let wgs84 = SpatialReference::Wkid(4326)
        .resolve()
        .ok()
        .and_then(|r| r.wkt)
        .unwrap_or_else(|| "undefined".into());
    vec![
        Srs {
            id: 4326,
            name: "WGS 84 geodetic".into(),
            organization: "EPSG".into(),
            code: 4326,
            definition: wgs84,
        },
        Srs {
            id: -1,
            name: "Undefined cartesian SRS".into(),
            organization: "NONE".into(),
            code: -1,
            definition: "undefined".into(),
        },
        Srs {
            id: 0,
            name: "Undefined geographic SRS".into(),
            organization: "NONE".into(),
            code: 0,
            definition: "undefined".into(),
        },
    ]
}

/// The `gpkg_spatial_ref_sys` row of a scheme's spatial reference: by its EPSG code where it has
/// one ([`scheme_epsg`]; Web Mercator's Esri ids are 3857), with the scheme's WKT or the EPSG
/// definition bundlefs carries; else by its Esri WKID (`ESRI`); else, a WKT alone, as srs_id
/// 100000 (`NONE`); nothing at all gives -1, the undefined Cartesian reference.
pub fn srs_of(s: &TileScheme) -> Srs {
    let wkt = s
        .wkt
        .clone()
        .filter(|w| !w.trim().is_empty())
        .unwrap_or_else(|| "undefined".into());
    if let Some(code) = scheme_epsg(s).filter(|c| *c <= 32767) {
        let definition = SpatialReference::Wkid(code)
            .resolve()
            .ok()
            .and_then(|r| r.wkt)
            .unwrap_or(wkt);
        return Srs {
            id: i64::from(code),
            name: format!("EPSG:{code}"),
            organization: "EPSG".into(),
            code: i64::from(code),
            definition,
        };
    }
    match (s.latest_wkid.or(s.wkid), wkt.as_str()) {
        (Some(id), _) => Srs {
            id: i64::from(id),
            name: format!("ESRI:{id}"),
            organization: "ESRI".into(),
            code: i64::from(id),
            definition: wkt,
        },
        (None, "undefined") => required_srs().swap_remove(1),
        (None, _) => Srs {
            id: 100_000,
            name: wkt.split('"').nth(1).unwrap_or("custom").to_string(),
            organization: "NONE".into(),
            code: 100_000,
            definition: wkt,
        },
    }
}

/// Why tiles of `s` cannot go into a GeoPackage, or None when they can: its tiles must be PNG or
/// JPEG (MIXED is both, which GeoPackage allows tile by tile).
pub fn refusal(s: &TileScheme) -> Option<String> {
    match s.tile_format {
        TileFormat::Mixed => None,
        ref f => match f.image_kind() {
            Some(ImageKind::Png | ImageKind::Jpeg) => None,
            _ => Some(format!(
                "GeoPackage tiles are PNG or JPEG (WebP and others only by extensions bundlefs \
                 does not write); this cache's tiles are {}",
                f.name()
            )),
        },
    }
}

/// The tile matrix set bounds and one tile matrix per LOD for tiles of `s` covering `extent` (map
/// units). The set's top left is the scheme's origin; each level has as many columns and rows as
/// reach from there past `extent`'s right and bottom edges (at least one); the set's right and
/// bottom edges are the farthest any level reaches, so every level's tiles lie inside it. For
/// schemes whose levels halve in resolution over an extent of whole tiles (Web Mercator's square)
/// the edges are exact at every level, as the standard asks (clause 2.2.7, requirement 45);
/// elsewhere they hold to within one tile.
pub fn matrices(s: &TileScheme, extent: &Envelope) -> (Envelope, Vec<Matrix>) {
    let (ox, oy) = (s.origin_x, s.origin_y);
    let mut set = Envelope {
        xmin: ox,
        ymin: oy,
        xmax: ox,
        ymax: oy,
    };
    let mut out = Vec::new();
    for l in &s.lods {
        let (tw, th) = (
            f64::from(s.tile_cols) * l.resolution,
            f64::from(s.tile_rows) * l.resolution,
        );
        // A tiny epsilon keeps an extent ending on a tile edge from taking one more tile.
        let count = |span: f64, size: f64| {
            ((span / size) - 1e-9).ceil().max(1.0).min(u32::MAX as f64) as u32
        };
        let width = count(extent.xmax - ox, tw);
        let height = count(oy - extent.ymin, th);
        set.xmax = set.xmax.max(ox + f64::from(width) * tw);
        set.ymin = set.ymin.min(oy - f64::from(height) * th);
        out.push(Matrix {
            zoom: l.level,
            width,
            height,
            tile_width: s.tile_cols,
            tile_height: s.tile_rows,
            pixel_x: l.resolution,
            pixel_y: l.resolution,
        });
    }
    (set, out)
}

/// The tiling scheme of a GeoPackage tile table: origin at the set's top left (`set_top_left`:
/// min_x, max_y), one LOD per tile matrix (level = zoom level, resolution = pixel size, scale =
/// resolution × 96 dpi × 39.37 in/m × metres per map unit, ArcGIS's reckoning), tiles of
/// `format`, the spatial reference of `srs`. Errors, as text: no tile matrix, tile matrices of
/// different tile sizes, non-square pixels, a zoom level over 255 — each naming the zoom level.
pub fn scheme_of(
    set_top_left: (f64, f64),
    matrices: &[Matrix],
    srs: &Srs,
    format: TileFormat,
) -> Result<TileScheme, String> {
    let first = matrices
        .first()
        .ok_or("gpkg_tile_matrix has no zoom level for the table")?;
    let by_epsg = srs.organization.eq_ignore_ascii_case("EPSG");
    let reference = match (by_epsg, srs.definition.trim()) {
        (true, _) => SpatialReference::Wkid(srs.code as u32).resolve().ok(),
        (false, d) if d != "undefined" && !d.is_empty() => {
            SpatialReference::Wkt(d.to_string()).resolve().ok()
        }
        _ => None,
    };
    let units = reference
        .as_ref()
        .map_or(MapUnits::Linear(1.0), |r| r.units);
    let mut lods = Vec::new();
    for m in matrices {
        if (m.tile_width, m.tile_height) != (first.tile_width, first.tile_height) {
            return Err(format!(
                "zoom level {} has {}×{} px tiles and zoom level {} {}×{}: a tiling scheme has \
                 one tile size",
                m.zoom,
                m.tile_width,
                m.tile_height,
                first.zoom,
                first.tile_width,
                first.tile_height
            ));
        }
        if m.pixel_x.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || ((m.pixel_y / m.pixel_x) - 1.0).abs() > 1e-9
        {
            return Err(format!(
                "zoom level {} has pixels of {} × {} map units: bundlefs reads square pixels only",
                m.zoom, m.pixel_x, m.pixel_y
            ));
        }
        lods.push(Lod {
            level: m.zoom,
            resolution: m.pixel_x,
            scale: m.pixel_x * 96.0 * INCHES_PER_METRE * units.metres(),
        });
    }
    lods.sort_by_key(|l| l.level);
    let (wkid, latest) = match (by_epsg, &reference) {
        (true, _) if epsg_of_wkid(srs.code as u32) == 3857 => (Some(102100), Some(3857)),
        (true, _) => (Some(srs.code as u32), Some(srs.code as u32)),
        (false, _) if srs.organization.eq_ignore_ascii_case("ESRI") => {
            (Some(srs.code as u32), None)
        }
        _ => (None, None),
    };
    let wkt = match srs.definition.trim() {
        "undefined" | "" => reference.and_then(|r| r.wkt),
        d => Some(d.to_string()),
    };
    let quality = if matches!(format, TileFormat::Jpeg | TileFormat::Mixed) {
        75
    } else {
        0
    };
    Ok(TileScheme {
        wkt,
        wkid,
        latest_wkid: latest,
        origin_x: set_top_left.0,
        origin_y: set_top_left.1,
        tile_cols: first.tile_width,
        tile_rows: first.tile_height,
        dpi: 96,
        lods,
        tile_format: format,
        compression_quality: quality,
        storage: StorageFormat::CompactV2,
        packet_size: 128,
    })
}

/// A tile table name for a cache called `name`: letters, digits and `_` kept, anything else `_`,
/// a leading digit prefixed with `t`; `tiles` when nothing is left. (Any name is legal SQL when
/// quoted; these names need no quoting in other tools' SQL either.)
pub fn table_name(name: &str) -> String {
    let mut t: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if t.trim_matches('_').is_empty() {
        return "tiles".into();
    }
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        t.insert(0, 't');
    }
    if t.to_ascii_lowercase().starts_with("gpkg_") || t.to_ascii_lowercase().starts_with("sqlite_")
    {
        t.insert_str(0, "t_");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::TileScheme;

    #[test]
    fn web_mercator_matrices_are_the_zoom_grids_and_come_back_as_the_scheme() {
        let s = TileScheme::web_mercator(5, TileFormat::Png);
        let world = crate::format::extent::scheme_extent(&s);
        let (set, m) = matrices(&s, &world);
        assert_eq!(m.len(), 6);
        for mm in &m {
            assert_eq!((mm.width, mm.height), (1 << mm.zoom, 1 << mm.zoom));
        }
        assert!((set.xmax - 20037508.342787).abs() < 1e-3, "{set:?}");
        assert!((set.ymin + 20037508.342787).abs() < 1e-3, "{set:?}");
        let srs = srs_of(&s);
        assert_eq!((srs.id, srs.organization.as_str()), (3857, "EPSG"));
        let back = scheme_of((set.xmin, set.ymax), &m, &srs, TileFormat::Png).unwrap();
        assert_eq!(back.lods.len(), 6);
        for (a, b) in s.lods.iter().zip(&back.lods) {
            assert_eq!(a.level, b.level);
            assert!((a.resolution / b.resolution - 1.0).abs() < 1e-12);
            assert!(
                (a.scale / b.scale - 1.0).abs() < 1e-6,
                "{} vs {}",
                a.scale,
                b.scale
            );
        }
        assert!(crate::format::extent::is_web_mercator(&back));
        assert!(crate::format::mbtiles::refusal(&back).is_none());
    }

    #[test]
    fn a_partial_extent_takes_whole_tiles_and_odd_schemes_are_refused_by_zoom() {
        let s = TileScheme::web_mercator(3, TileFormat::Jpeg);
        let e = Envelope {
            xmin: -20037508.342787,
            ymin: 0.0,
            xmax: 0.0,
            ymax: 20037508.342787,
        };
        let (_, m) = matrices(&s, &e);
        // The top-left quarter: at zoom 3, 4 × 4 tiles.
        assert_eq!((m[3].width, m[3].height), (4, 4));
        let mut bad = m.clone();
        bad[2].tile_width = 512;
        let err = scheme_of((0.0, 0.0), &bad, &srs_of(&s), TileFormat::Png).unwrap_err();
        assert!(err.contains("zoom level 2"), "{err}");
        bad = m.clone();
        bad[1].pixel_y *= 2.0;
        let err = scheme_of((0.0, 0.0), &bad, &srs_of(&s), TileFormat::Png).unwrap_err();
        assert!(
            err.contains("zoom level 1") && err.contains("square"),
            "{err}"
        );
        assert!(scheme_of((0.0, 0.0), &[], &srs_of(&s), TileFormat::Png).is_err());
    }

    #[test]
    fn formats_and_names() {
        let mut s = TileScheme::web_mercator(1, TileFormat::Mixed);
        assert!(refusal(&s).is_none());
        s.tile_format = TileFormat::Other("LERC".into());
        assert!(refusal(&s).unwrap().contains("LERC"));
        assert_eq!(table_name("Esri sample"), "Esri_sample");
        assert_eq!(table_name("3d"), "t3d");
        assert_eq!(table_name("gpkg_x"), "t_gpkg_x");
        assert_eq!(table_name("..."), "tiles");
    }

    #[test]
    fn a_geographic_scheme_keeps_degrees_and_its_code() {
        let mut s = TileScheme::web_mercator(2, TileFormat::Png);
        s.wkid = Some(4326);
        s.latest_wkid = Some(4326);
        s.wkt = None;
        s.origin_x = -180.0;
        s.origin_y = 90.0;
        for (i, l) in s.lods.iter_mut().enumerate() {
            l.resolution = 0.703125 / f64::from(1u32 << i);
        }
        let srs = srs_of(&s);
        assert_eq!(srs.id, 4326);
        let world = Envelope {
            xmin: -180.0,
            ymin: -90.0,
            xmax: 180.0,
            ymax: 90.0,
        };
        let (set, m) = matrices(&s, &world);
        assert_eq!((m[0].width, m[0].height), (2, 1));
        let back = scheme_of((set.xmin, set.ymax), &m, &srs, TileFormat::Png).unwrap();
        assert_eq!(back.wkid, Some(4326));
        // 0.703125°/px at 96 dpi is ArcGIS's 1:295,497,598.57 (METRES_PER_DEGREE's definition).
        assert!((back.lods[0].scale / 295_497_598.570_834 - 1.0).abs() < 1e-9);
    }
}
