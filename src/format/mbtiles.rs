//! MBTiles 1.3 facts (the specification: github.com/mapbox/mbtiles-spec, 1.3/spec.md): the
//! `tiles` table numbers rows bottom-up (TMS: `tile_row = 2^zoom - 1 - row`), levels are Web
//! Mercator zoom levels (EPSG:3857, 256 px tiles, the origin at the top left of the ±20037508.34 m
//! square), and `metadata` holds `name`, `format` (`png`, `jpg`, `webp`, `pbf`), `bounds`
//! (`left,bottom,right,top` in WGS84 degrees), `center` (`lon,lat,zoom`), `minzoom`, `maxzoom`.
//! Pure functions: the SQL is the storage's (`cache::store::mbtiles`).

use crate::format::conf::{
    Envelope, TileFormat, TileScheme, WEB_MERCATOR_ORIGIN, WEB_MERCATOR_RES0,
};
use crate::format::sniff::ImageKind;

/// The sphere radius of Web Mercator (EPSG:3857), metres: WGS84's semi-major axis.
const R: f64 = 6378137.0;

/// The `tile_row` of row `row` (counted from the top, as bundles count) at `zoom`, and back (the
/// flip is its own inverse). None when the row lies outside the zoom's 2^zoom rows.
pub fn flip_row(zoom: u8, row: u32) -> Option<u32> {
    let n = 1u64 << zoom.min(31);
    (u64::from(row) < n).then(|| (n - 1 - u64::from(row)) as u32)
}

/// Why `s` cannot be kept in MBTiles, or None when it can ([`web_mercator_refusal`]).
pub fn refusal(s: &TileScheme) -> Option<String> {
    web_mercator_refusal(s, "MBTiles")
}

/// Why `s` cannot be kept in a format (`what`, for the message: `MBTiles`, `an XYZ folder`) whose
/// levels are Web Mercator zoom levels, or None when it can: Web Mercator, 256×256 px tiles, the
/// origin at (-20037508.342787, 20037508.342787), and every level's resolution that of the zoom
/// level of the same number (156543.03392800014 / 2^level m/px, to 1e-6 relative).
pub fn web_mercator_refusal(s: &TileScheme, what: &str) -> Option<String> {
    if !crate::format::extent::is_web_mercator(s) {
        return Some(format!(
            "{what} holds Web Mercator (EPSG:3857) tiles only, and this tiling scheme is in {}",
            crate::format::extent::describe(s)
        ));
    }
    if (s.tile_cols, s.tile_rows) != (256, 256) {
        return Some(format!(
            "{what} holds 256×256 px tiles only, and this tiling scheme has {}×{} px tiles",
            s.tile_cols, s.tile_rows
        ));
    }
    let off = |a: f64, b: f64| (a - b).abs() > 0.01;
    if off(s.origin_x, -WEB_MERCATOR_ORIGIN) || off(s.origin_y, WEB_MERCATOR_ORIGIN) {
        return Some(format!(
            "{what} starts its tiles at the top left of the Web Mercator square \
             (-20037508.342787, 20037508.342787); this tiling scheme's origin is ({}, {})",
            s.origin_x, s.origin_y
        ));
    }
    for l in &s.lods {
        let want = WEB_MERCATOR_RES0 / f64::from(1u32 << l.level.min(31));
        if (l.resolution / want - 1.0).abs() > 1e-6 {
            return Some(format!(
                "{what} numbers levels by zoom, and level {} of this tiling scheme has a \
                 resolution of {} m/px where zoom {} has {want}",
                l.level, l.resolution, l.level
            ));
        }
    }
    None
}

/// The `format` metadata value of tiles of `f`, or why MBTiles cannot say it.
pub fn format_name(f: &TileFormat) -> Result<&'static str, String> {
    match f {
        TileFormat::Png | TileFormat::Png8 | TileFormat::Png24 | TileFormat::Png32 => Ok("png"),
        TileFormat::Jpeg => Ok("jpg"),
        // MBTiles has one format per file; readers (GDAL, MapProxy) look at each tile's bytes.
        TileFormat::Mixed => Ok("png"),
        other => match other.image_kind() {
            Some(ImageKind::Pbf) => Ok("pbf"),
            _ => Err(format!(
                "MBTiles holds png, jpg, webp or pbf tiles; {} tiles have no MBTiles format",
                other.name()
            )),
        },
    }
}

/// The tile format of a `format` metadata value. Errors: a value bundlefs does not read, named.
pub fn tile_format(name: &str) -> Result<TileFormat, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "png" => Ok(TileFormat::Png),
        "jpg" | "jpeg" => Ok(TileFormat::Jpeg),
        "pbf" => Ok(TileFormat::Other("pbf".into())),
        other => Err(format!(
            "format {other:?}: bundlefs reads MBTiles of png, jpg or pbf tiles"
        )),
    }
}

/// Longitude and latitude (degrees) of Web Mercator point (x, y) in metres (the inverse
/// spherical Mercator of EPSG:3857, IOGP Guidance Note 7-2, "Popular Visualisation Pseudo
/// Mercator").
pub fn to_lon_lat(x: f64, y: f64) -> (f64, f64) {
    let lon = (x / R).to_degrees();
    let lat = (2.0 * (y / R).exp().atan() - std::f64::consts::FRAC_PI_2).to_degrees();
    (lon, lat)
}

/// Web Mercator metres of (lon, lat) in degrees (latitude clamped to ±85.0511287798°, the
/// square's edge).
pub fn from_lon_lat(lon: f64, lat: f64) -> (f64, f64) {
    let lat = lat.clamp(-85.051_128_779_806_59, 85.051_128_779_806_59);
    let x = R * lon.to_radians();
    let y = R
        * (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
            .tan()
            .ln();
    (x, y)
}

/// The `bounds` value (`left,bottom,right,top`, degrees) of an extent in Web Mercator metres.
pub fn bounds(e: &Envelope) -> String {
    let (w, s) = to_lon_lat(e.xmin, e.ymin);
    let (east, n) = to_lon_lat(e.xmax, e.ymax);
    format!(
        "{:.6},{:.6},{:.6},{:.6}",
        w.max(-180.0),
        s.max(-85.051129),
        east.min(180.0),
        n.min(85.051129)
    )
}

/// The extent in Web Mercator metres of a `bounds` value; None when it is not four numbers.
pub fn parse_bounds(v: &str) -> Option<Envelope> {
    let n: Vec<f64> = v
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [w, s, e, north] = n[..] else {
        return None;
    };
    let (xmin, ymin) = from_lon_lat(w, s);
    let (xmax, ymax) = from_lon_lat(e, north);
    (xmin < xmax && ymin < ymax).then_some(Envelope {
        xmin,
        ymin,
        xmax,
        ymax,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_flip_and_bounds_round_trip() {
        assert_eq!(flip_row(0, 0), Some(0));
        assert_eq!(flip_row(3, 0), Some(7));
        assert_eq!(flip_row(3, 7), Some(0));
        assert_eq!(flip_row(3, 8), None);
        let e = Envelope {
            xmin: -20037508.342787,
            ymin: -20037508.342787,
            xmax: 20037508.342787,
            ymax: 20037508.342787,
        };
        assert_eq!(bounds(&e), "-180.000000,-85.051129,180.000000,85.051129");
        let back = parse_bounds("-180,-85.051129,180,85.051129").unwrap();
        assert!((back.xmax - e.xmax).abs() < 1.0 && (back.ymax - e.ymax).abs() < 10.0);
        let (lon, lat) = to_lon_lat(from_lon_lat(13.4, 52.5).0, from_lon_lat(13.4, 52.5).1);
        assert!((lon - 13.4).abs() < 1e-9 && (lat - 52.5).abs() < 1e-9);
    }

    #[test]
    fn only_web_mercator_zoom_levels_fit() {
        assert_eq!(refusal(&TileScheme::web_mercator(5, TileFormat::Png)), None);
        let mut s = TileScheme::web_mercator(5, TileFormat::Png);
        s.tile_cols = 512;
        s.tile_rows = 512;
        assert!(refusal(&s).unwrap().contains("256×256"));
        let mut s = TileScheme::web_mercator(5, TileFormat::Png);
        s.lods.remove(0);
        for l in &mut s.lods {
            l.level -= 1;
        }
        assert!(refusal(&s).unwrap().contains("numbers levels by zoom"));
        assert!(format_name(&TileFormat::Other("LERC".into())).is_err());
        assert_eq!(format_name(&TileFormat::Jpeg), Ok("jpg"));
        assert!(tile_format("webp").unwrap_err().contains("webp"));
    }
}
