//! Supertiles: ArcGIS draws a large block of tiles in one request and cuts it into tiles, so labels
//! are placed once per block instead of at every tile edge, and the map service is asked once
//! instead of once per tile. This module holds the sizes (ArcGIS's defaults, the sources' maximum
//! image size), the origin-anchored grid of supertiles clipped to the extent, the optional margin
//! cut away afterwards (MapProxy's meta-buffer), and the split of a supertile image into tiles.
//!
//! Source of the sizes: Esri, "Cache creation tools and processes" (`seeds/
//! cache-creation-tools-and-processes.txt`): "A supertile is 2048 by 2048 pixels with antialiasing
//! or 4096 by 4096 pixels without."

use std::ops::Range;

use image::RgbaImage;
use rayon::prelude::*;

use super::pixels::{decode, encode};
use crate::format::conf::{Envelope, TileScheme};
use crate::format::TileAddr;
use crate::{Error, Result};

/// Side of ArcGIS's supertile without antialiasing, in pixels.
pub const ARCGIS_PX: u32 = 4096;
/// Side of ArcGIS's supertile with antialiasing (conf.xml `TileImageInfo/Antialiasing` true).
pub const ARCGIS_ANTIALIASED_PX: u32 = 2048;
/// Default side for the mount, which renders on a reader's miss: smaller, so the first tile comes
/// quickly (16 tiles of 256 px).
pub const MOUNT_PX: u32 = 1024;
/// Largest image asked of a source that advertises no maximum, width and height, in pixels: the
/// default of an ArcGIS Server map service's `maxImageWidth`/`maxImageHeight` and of MapServer's
/// `MAXSIZE` (Debian's MapServer 8.0 advertises `<MaxWidth>4096</MaxWidth>` without one), both 4096. Sources that advertise
/// their maximum ([`crate::render::TileSource::max_image`]) are held to theirs instead.
pub const MAX_IMAGE_PX: u32 = 4096;

/// A source's advertised maximum image size as (width, height) pixels: a side it leaves out (or
/// gives as 0, or beyond `u32`) is [`MAX_IMAGE_PX`]; None when it gives neither.
pub fn advertised_max(width: Option<u64>, height: Option<u64>) -> Option<(u32, u32)> {
    let side = |v: Option<u64>| {
        v.filter(|&v| v > 0)
            .map_or(MAX_IMAGE_PX, |v| u32::try_from(v).unwrap_or(u32::MAX))
    };
    match (width.filter(|&v| v > 0), height.filter(|&v| v > 0)) {
        (None, None) => None,
        _ => Some((side(width), side(height))),
    }
}

/// The supertile side ArcGIS uses for a cache: 2048 px when its conf.xml says
/// `<Antialiasing>true</Antialiasing>`, else 4096 px. `conf_xml` is the document's bytes; an
/// unreadable document counts as no antialiasing.
pub fn arcgis_default_px(conf_xml: &[u8]) -> u32 {
    if antialiasing(conf_xml) {
        ARCGIS_ANTIALIASED_PX
    } else {
        ARCGIS_PX
    }
}

/// Whether conf.xml's `TileImageInfo/Antialiasing` is `true` (any namespace prefix, any case).
pub fn antialiasing(conf_xml: &[u8]) -> bool {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(conf_xml);
    let mut inside = false;
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => inside = e.local_name().as_ref() == b"Antialiasing",
            Ok(Event::Text(t)) if inside => {
                return t
                    .unescape()
                    .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
            }
            Ok(Event::End(_)) => inside = false,
            Ok(Event::Eof) | Err(_) => return false,
            _ => {}
        }
        buf.clear();
    }
}

/// A map area a source draws as one image: its bounds in the scheme's map units and its size in
/// pixels (at the level's resolution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub level: u8,
    pub bbox: Envelope,
    /// Image width, pixels.
    pub width: u32,
    /// Image height, pixels.
    pub height: u32,
}

/// How tiles are grouped into supertiles for one scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Tiles across one supertile.
    pub cols: u32,
    /// Tiles down one supertile.
    pub rows: u32,
    /// Margin in pixels drawn around a supertile and cut away (clipped at the tiling origin).
    pub buffer: u32,
}

impl Layout {
    /// The layout for a requested side `px` (pixels; rounded down to whole tiles, at least one),
    /// margin `buffer`, and a source that draws at most `max_image` = (width, height) pixels (what
    /// it advertises, [`MAX_IMAGE_PX`] a side when it advertises nothing): the supertile shrinks
    /// until it and both margins fit, with a log line when a requested side is cut to the source's
    /// maximum. Errors when not even one tile and its margins fit.
    pub fn new(scheme: &TileScheme, px: u32, buffer: u32, max_image: (u32, u32)) -> Result<Layout> {
        let fit = |tile: u32, max: u32, what: &str| -> Result<u32> {
            let room = max.saturating_sub(buffer.saturating_mul(2));
            if room < tile {
                return Err(Error::invalid(format!(
                    "--supertile-buffer {buffer}: one {tile}-px tile {what} plus twice the buffer is more \
                     than the {max} px the source draws at most"
                )));
            }
            Ok((px / tile).clamp(1, room / tile))
        };
        let (max_w, max_h) = max_image;
        let cols = fit(scheme.tile_cols, max_w, "across")?;
        let rows = fit(scheme.tile_rows, max_h, "down")?;
        let drawn = (cols * scheme.tile_cols, rows * scheme.tile_rows);
        let what = format!(
            "supertile of {px} px (buffer {buffer} px): the source draws at most {max_w} x {max_h} px, \
             so supertiles of {} x {} px are drawn ({cols} x {rows} tiles of {} x {} px)",
            drawn.0, drawn.1, scheme.tile_cols, scheme.tile_rows
        );
        // Asking more than the source draws is cut down with a warning; only the margins not
        // fitting beside a supertile of the source's maximum is routine.
        if px > max_w.min(max_h) {
            tracing::warn!("{what}");
        } else if px.saturating_add(buffer.saturating_mul(2)) > max_w.min(max_h) {
            tracing::info!("{what}");
        }
        Ok(Layout { cols, rows, buffer })
    }

    /// The supertile holding tile `t`: the origin-anchored block of `rows` × `cols` tiles around it,
    /// cut down to `range` (the level's renderable rows and columns: the extent).
    pub fn supertile(&self, t: TileAddr, range: &(Range<u32>, Range<u32>)) -> Supertile {
        let r0 = t.row - t.row % self.rows;
        let c0 = t.col - t.col % self.cols;
        let (rr, cr) = range;
        Supertile {
            level: t.level,
            rows: r0.max(rr.start)..r0.saturating_add(self.rows).min(rr.end),
            cols: c0.max(cr.start)..c0.saturating_add(self.cols).min(cr.end),
        }
    }

    /// The image to ask for a supertile: its tiles plus the margin (none above the first row or
    /// left of the first column of the grid), and where the first tile starts in that image.
    pub fn area(&self, scheme: &TileScheme, st: &Supertile) -> Option<(Area, (u32, u32))> {
        let res = scheme.lod(st.level)?.resolution;
        let (tw, th) = (u64::from(scheme.tile_cols), u64::from(scheme.tile_rows));
        let b = u64::from(self.buffer);
        let (x0, y0) = (u64::from(st.cols.start) * tw, u64::from(st.rows.start) * th);
        let (x1, y1) = (u64::from(st.cols.end) * tw, u64::from(st.rows.end) * th);
        let (left, top) = (b.min(x0), b.min(y0));
        let (px0, py0, px1, py1) = (x0 - left, y0 - top, x1 + b, y1 + b);
        // Map units from whole-pixel positions: the same formula as a tile's bounds (FORMATS.md).
        let bbox = Envelope {
            xmin: scheme.origin_x + px0 as f64 * res,
            xmax: scheme.origin_x + px1 as f64 * res,
            ymax: scheme.origin_y - py0 as f64 * res,
            ymin: scheme.origin_y - py1 as f64 * res,
        };
        let area = Area {
            level: st.level,
            bbox,
            width: (px1 - px0) as u32,
            height: (py1 - py0) as u32,
        };
        Some((area, (left as u32, top as u32)))
    }
}

/// A block of tiles of one level drawn together (rows and columns half-open).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Supertile {
    pub level: u8,
    pub rows: Range<u32>,
    pub cols: Range<u32>,
}

impl Supertile {
    /// Its first tile: the key renders are shared under.
    pub fn anchor(&self) -> TileAddr {
        TileAddr::new(self.level, self.rows.start, self.cols.start)
    }

    /// Its tiles, row by row.
    pub fn tiles(&self) -> impl Iterator<Item = TileAddr> + '_ {
        self.rows.clone().flat_map(move |r| {
            self.cols
                .clone()
                .map(move |c| TileAddr::new(self.level, r, c))
        })
    }

    /// How many tiles it holds.
    pub fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Whether it holds no tile.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts a source's supertile image (`bytes`, PNG or JPEG, from `what`) into the supertile's tiles,
/// each encoded in the cache's CacheTileFormat (lossless PNG for PNG caches, so a tile's pixels are
/// exactly the image's). `offset` is where the first tile starts (the margin). Errors: not an image,
/// or not exactly the size asked for.
pub fn split(
    bytes: &[u8],
    scheme: &TileScheme,
    st: &Supertile,
    area: &Area,
    offset: (u32, u32),
    what: &str,
) -> Result<Vec<(TileAddr, Vec<u8>)>> {
    let img = decode(bytes, what)?;
    if (img.width(), img.height()) != (area.width, area.height) {
        return Err(Error::source(
            what,
            format!(
                "image is {}x{} px, asked for {}x{}",
                img.width(),
                img.height(),
                area.width,
                area.height
            ),
        ));
    }
    let tiles: Vec<TileAddr> = st.tiles().collect();
    tiles
        .par_iter()
        .map(|t| {
            let x = offset.0 + (t.col - st.cols.start) * scheme.tile_cols;
            let y = offset.1 + (t.row - st.rows.start) * scheme.tile_rows;
            let tile: RgbaImage =
                image::imageops::crop_imm(&img, x, y, scheme.tile_cols, scheme.tile_rows)
                    .to_image();
            Ok((
                *t,
                encode(&tile, &scheme.tile_format, scheme.compression_quality)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::TileFormat;

    #[test]
    fn antialiasing_picks_the_arcgis_size() {
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        let xml = String::from_utf8(s.to_conf_xml()).unwrap();
        assert!(xml.contains("<Antialiasing>false</Antialiasing>"), "{xml}");
        assert_eq!(arcgis_default_px(xml.as_bytes()), ARCGIS_PX);
        let on = xml.replace(
            "<Antialiasing>false</Antialiasing>",
            "<Antialiasing>true</Antialiasing>",
        );
        assert_eq!(arcgis_default_px(on.as_bytes()), ARCGIS_ANTIALIASED_PX);
        assert_eq!(arcgis_default_px(b"<not xml"), ARCGIS_PX);
    }

    const SQUARE: (u32, u32) = (MAX_IMAGE_PX, MAX_IMAGE_PX);

    #[test]
    fn layout_follows_the_source_maximum_per_side() {
        let s = TileScheme::web_mercator(6, TileFormat::Png);
        // maxImageWidth 1000, maxImageHeight 600: 3 tiles across (768 px), 2 down (512 px).
        let l = Layout::new(&s, 4096, 0, (1000, 600)).unwrap();
        assert_eq!((l.cols, l.rows), (3, 2));
        // A smaller request than the maximum is kept.
        let l = Layout::new(&s, 512, 0, (1000, 600)).unwrap();
        assert_eq!((l.cols, l.rows), (2, 2));
        // Margins count against the maximum: 1000 - 2 * 100 = 800 px → 3 tiles.
        let l = Layout::new(&s, 4096, 100, (1000, 1000)).unwrap();
        assert_eq!((l.cols, l.rows), (3, 3));
        // A source drawing less than one tile cannot take supertiles at all.
        let e = Layout::new(&s, 4096, 0, (200, 4096))
            .unwrap_err()
            .to_string();
        assert!(e.contains("200 px"), "{e}");
    }

    #[test]
    fn layout_is_capped_and_anchored_at_the_origin() {
        let mut s = TileScheme::web_mercator(6, TileFormat::Png);
        s.tile_cols = 512;
        let l = Layout::new(&s, 4096, 0, SQUARE).unwrap();
        assert_eq!((l.cols, l.rows), (8, 16));
        // A buffer shrinks the block so block + 2 buffers stays within 4096 px.
        let l = Layout::new(&s, 4096, 64, SQUARE).unwrap();
        assert_eq!((l.cols, l.rows), (7, 15));
        assert!(Layout::new(&s, 4096, 2000, SQUARE).is_err());
        let l = Layout::new(&s, 1024, 16, SQUARE).unwrap();
        assert_eq!((l.cols, l.rows), (2, 4));
        let range = (0..40, 3..64);
        let st = l.supertile(TileAddr::new(6, 38, 3), &range);
        assert_eq!((st.rows.clone(), st.cols.clone()), (36..40, 3..4));
        assert_eq!(st.len(), 4);
        let (a, off) = l.area(&s, &st).unwrap();
        assert_eq!((a.width, a.height), (512 + 32, 4 * 256 + 32));
        assert_eq!(off, (16, 16));
        let res = s.lod(6).unwrap().resolution;
        let tb = s.tile_bbox(TileAddr::new(6, 36, 3)).unwrap();
        assert!((a.bbox.xmin - (tb.xmin - 16.0 * res)).abs() < 1e-6);
        assert!((a.bbox.ymax - (tb.ymax + 16.0 * res)).abs() < 1e-6);
        // No margin beyond the origin.
        let st = l.supertile(TileAddr::new(6, 0, 4), &(0..64, 0..64));
        let (a, off) = l.area(&s, &st).unwrap();
        assert_eq!(off, (16, 0));
        assert_eq!((a.width, a.height), (1024 + 32, 1024 + 16));
        assert!((a.bbox.ymax - s.origin_y).abs() < 1e-9);
    }
}
