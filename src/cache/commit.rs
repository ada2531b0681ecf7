//! What may be stored as a tile, and how a new tile meets the one already stored (the import
//! modes of ArcGIS's Import Map Server Cache tool: OVERWRITE, or MERGE where transparent pixels of
//! the new tile keep the old tile's pixels).

use std::io::Cursor;

use image::{ImageFormat, ImageReader, RgbaImage};

use super::Cache;
use crate::format::sniff::{sniff, ImageKind};
use crate::{Error, Result};

/// How a tile written over a stored one is combined with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// What is written is what is read back.
    #[default]
    Overwrite,
    /// Transparent pixels of the new tile keep the stored tile's pixels (alpha-composited: the new
    /// tile drawn over the old one).
    Merge,
}

impl std::str::FromStr for ImportMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "overwrite" => Ok(ImportMode::Overwrite),
            "merge" => Ok(ImportMode::Merge),
            _ => Err(format!("{s:?}: want merge or overwrite")),
        }
    }
}

/// Checks that `bytes` may be stored under a name with extension `ext_kind`: a PNG or JPEG (by
/// content), of the name's kind, accepted by the cache's CacheTileFormat (MIXED takes both), and of
/// the scheme's tile size. `what` names the tile in the error.
pub fn check_tile(cache: &Cache, what: &str, ext_kind: ImageKind, bytes: &[u8]) -> Result<()> {
    let bad = |msg: String| Err(Error::invalid(format!("{what}: {msg}")));
    if bytes.is_empty() {
        return bad("empty file, not a tile".into());
    }
    if bytes.len() > crate::format::MAX_TILE_SIZE {
        return bad(format!(
            "{} bytes, larger than a bundle can hold (2^24-1)",
            bytes.len()
        ));
    }
    let Some(kind) = sniff(bytes) else {
        return bad("neither PNG nor JPEG".into());
    };
    if kind != ext_kind {
        return bad(format!(
            "the bytes are {kind:?} but the name says .{}",
            ext_kind.ext()
        ));
    }
    if let Some(s) = cache.scheme() {
        if !s.tile_format.accepts(kind) {
            return bad(format!(
                "{kind:?} tile in a cache whose CacheTileFormat is {:?}",
                s.tile_format
            ));
        }
        let (w, h) = ImageReader::with_format(Cursor::new(bytes), image_format(kind))
            .into_dimensions()
            .map_err(|e| Error::invalid(format!("{what}: unreadable {kind:?}: {e}")))?;
        if (w, h) != (s.tile_cols, s.tile_rows) {
            return bad(format!(
                "{w}x{h} pixels; the cache's tiles are {}x{}",
                s.tile_cols, s.tile_rows
            ));
        }
    }
    Ok(())
}

fn image_format(k: ImageKind) -> ImageFormat {
    match k {
        ImageKind::Png => ImageFormat::Png,
        ImageKind::Jpeg => ImageFormat::Jpeg,
    }
}

fn decode(what: &str, bytes: &[u8]) -> Result<RgbaImage> {
    let kind = sniff(bytes).ok_or_else(|| Error::invalid(format!("{what}: not an image")))?;
    ImageReader::with_format(Cursor::new(bytes), image_format(kind))
        .decode()
        .map(|i| i.to_rgba8())
        .map_err(|e| Error::invalid(format!("{what}: cannot decode: {e}")))
}

/// MERGE: the new tile drawn over the old one. Returns None when the new tile is fully opaque
/// (it replaces the old one byte for byte, no re-encoding); otherwise the composite as PNG.
pub fn merge(what: &str, old: &[u8], new: &[u8]) -> Result<Option<Vec<u8>>> {
    if sniff(new) != Some(ImageKind::Png) {
        return Ok(None); // JPEG has no transparency
    }
    let top = decode(what, new)?;
    if top.pixels().all(|p| p.0[3] == 255) {
        return Ok(None);
    }
    let mut out = decode(&format!("{what} (stored tile)"), old)?;
    if out.dimensions() != top.dimensions() {
        return Err(Error::invalid(format!(
            "{what}: {:?} pixels, the stored tile has {:?}",
            top.dimensions(),
            out.dimensions()
        )));
    }
    for (o, n) in out.pixels_mut().zip(top.pixels()) {
        let a = u32::from(n.0[3]);
        if a == 255 {
            *o = *n;
        } else if a > 0 {
            // Source-over compositing in straight alpha.
            let ob = u32::from(o.0[3]) * (255 - a) / 255;
            let oa = a + ob;
            for c in 0..3 {
                o.0[c] = ((u32::from(n.0[c]) * a + u32::from(o.0[c]) * ob) / oa.max(1)) as u8;
            }
            o.0[3] = oa as u8;
        }
    }
    let mut buf = Cursor::new(Vec::new());
    out.write_to(&mut buf, ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("{what}: cannot encode the merged tile: {e}")))?;
    Ok(Some(buf.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn png(img: &RgbaImage) -> Vec<u8> {
        let mut b = Cursor::new(Vec::new());
        img.write_to(&mut b, ImageFormat::Png).unwrap();
        b.into_inner()
    }

    #[test]
    fn merge_keeps_old_pixels_under_transparent_ones() {
        let old = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 255]));
        let mut new = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0]));
        new.put_pixel(1, 2, Rgba([200, 100, 50, 255]));
        new.put_pixel(3, 3, Rgba([255, 0, 0, 128]));
        let merged = merge("t", &png(&old), &png(&new)).unwrap().unwrap();
        let m = decode("m", &merged).unwrap();
        assert_eq!(m.get_pixel(0, 0), &Rgba([10, 20, 30, 255]));
        assert_eq!(m.get_pixel(1, 2), &Rgba([200, 100, 50, 255]));
        let p = m.get_pixel(3, 3).0;
        assert_eq!(p[3], 255);
        assert!(
            (i32::from(p[0]) - (255 * 128 + 10 * 127) / 255).abs() <= 1,
            "{p:?}"
        );
        // An opaque new tile replaces the old one as is.
        let opaque = RgbaImage::from_pixel(4, 4, Rgba([1, 2, 3, 255]));
        assert_eq!(merge("t", &png(&old), &png(&opaque)).unwrap(), None);
    }
}
