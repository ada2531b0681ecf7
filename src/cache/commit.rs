//! What may be stored as a tile, and how a new tile meets the one already stored (the import
//! modes of ArcGIS's Import Map Server Cache tool: OVERWRITE, or MERGE where transparent pixels of
//! the new tile keep the old tile's pixels).

use super::Cache;
use crate::format::pixels::{self, composite, decode, is_opaque, TileEncoder};
use crate::format::sniff::{sniff, ImageKind};
use crate::{Error, Result};

/// The one import mode enum ([`crate::format::pixels::ImportMode`]); a writable mount defaults to
/// OVERWRITE.
pub use crate::format::pixels::ImportMode;

/// Checks that `bytes` may be stored under a name with extension `ext_kind`: a PNG or JPEG (by
/// content), of the name's kind, accepted by the cache's CacheTileFormat (MIXED takes both), and of
/// the scheme's tile size ([`pixels::check_tile`]). `what` names the tile in the error.
pub fn check_tile(cache: &Cache, what: &str, ext_kind: ImageKind, bytes: &[u8]) -> Result<()> {
    pixels::check_tile(bytes, ext_kind, cache.scheme())
        .map(drop)
        .map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// MERGE: the new tile drawn over the stored one ([`pixels::over`], the same compositing as
/// `bundlefs import --mode merge`). Returns None when the new tile is a JPEG or fully opaque (it
/// replaces the old one byte for byte, no re-encoding); otherwise the composite as a PNG (the kind
/// the new tile was written as, so its name stays).
pub fn merge(what: &str, old: &[u8], new: &[u8]) -> Result<Option<Vec<u8>>> {
    if sniff(new) != Some(ImageKind::Png) {
        return Ok(None); // JPEG has no transparency
    }
    let top = decode(new, None).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    if is_opaque(&top) {
        return Ok(None);
    }
    let base =
        decode(old, None).map_err(|e| Error::invalid(format!("{what} (stored tile): {e}")))?;
    if base.dimensions() != top.dimensions() {
        return Err(Error::invalid(format!(
            "{what}: {:?} pixels, the stored tile has {:?}",
            top.dimensions(),
            base.dimensions()
        )));
    }
    let out = composite(&top, &base, None, ImportMode::Merge);
    // Fast PNG: a writer (or the flush behind it) waits for this tile.
    TileEncoder::new(crate::format::conf::TileFormat::Png, 0)
        .encode_as(&out, ImageKind::Png)
        .map(Some)
        .map_err(|e| Error::invalid(format!("{what}: the merged tile: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgba, RgbaImage};
    use std::io::Cursor;

    fn png(img: &RgbaImage) -> Vec<u8> {
        let mut b = Cursor::new(Vec::new());
        img.write_to(&mut b, ImageFormat::Png).unwrap();
        b.into_inner()
    }

    #[test]
    fn merge_gives_the_value_import_gives() {
        // Issue 12: the mount gave 53 per channel here (two truncations), import 54.
        let old = RgbaImage::from_pixel(4, 4, Rgba([200, 200, 200, 50]));
        let new = RgbaImage::from_pixel(4, 4, Rgba([10, 10, 10, 100]));
        let merged = merge("t", &png(&old), &png(&new)).unwrap().unwrap();
        assert_eq!(sniff(&merged), Some(ImageKind::Png));
        let m = decode(&merged, None).unwrap();
        assert!(
            m.pixels().all(|p| p.0 == [54, 54, 54, 130]),
            "{:?}",
            m.get_pixel(0, 0)
        );
    }

    #[test]
    fn merge_keeps_old_pixels_under_transparent_ones() {
        let old = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 255]));
        let mut new = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0]));
        new.put_pixel(1, 2, Rgba([200, 100, 50, 255]));
        new.put_pixel(3, 3, Rgba([255, 0, 0, 128]));
        let merged = merge("t", &png(&old), &png(&new)).unwrap().unwrap();
        let m = decode(&merged, None).unwrap();
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
