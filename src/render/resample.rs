//! The `resample` source: a missing tile made from stored neighbours in the same cache — from its
//! four children at the next finer level (2×2 mosaic, each output pixel the alpha-weighted mean of
//! 2×2 input pixels) when they are all stored, else from the matching quarter of its parent at the
//! next coarser level (bilinear ×2), else from whichever children are stored (the rest left empty).
//! Stored tiles are used, and tiles the renderer made but has not stored yet (its memory, a write
//! buffer: [`super::MadeTiles`]), so a level rendered in a run or mount feeds the next; no
//! recursion (a neighbour is never rendered for it), and only between levels whose resolutions
//! differ by 2.

use std::sync::Arc;

use image::imageops::{self, FilterType};
use image::{Rgba, RgbaImage};

use super::pixels::{decode, encode};
use super::{MadeTiles, TileSource};
use crate::cache::Cache;
use crate::format::conf::{TileFormat, TileScheme};
use crate::format::TileAddr;
use crate::{Error, Result};

/// Relative tolerance on "the finer level has half the resolution".
const RATIO_TOLERANCE: f64 = 1e-6;

/// Resamples from the cache it reads, and from tiles made but not stored yet.
pub struct ResampleSource {
    cache: Arc<Cache>,
    /// Tiles the renderer made (memory, write buffer), seen before the stored ones.
    made: std::sync::OnceLock<MadeTiles>,
}

impl ResampleSource {
    pub fn new(cache: Arc<Cache>) -> Self {
        ResampleSource {
            cache,
            made: std::sync::OnceLock::new(),
        }
    }

    /// A neighbour tile: made in this run or mount (not stored yet), else stored.
    fn stored(&self, t: TileAddr, scheme: &TileScheme) -> Result<Option<RgbaImage>> {
        let made = self.made.get().and_then(|f| f(t));
        let bytes: Vec<u8> = match made {
            Some(b) => b.as_ref().clone(),
            None => match self.cache.tile(t)? {
                Some(b) => b.to_vec(),
                None => return Ok(None),
            },
        };
        let what = format!("{}: stored tile {t}", self.cache.root().display());
        let img = decode(&bytes, &what)?;
        if (img.width(), img.height()) != (scheme.tile_cols, scheme.tile_rows) {
            return Err(Error::source(
                what,
                format!(
                    "is {}x{} px, conf.xml says {}x{}",
                    img.width(),
                    img.height(),
                    scheme.tile_cols,
                    scheme.tile_rows
                ),
            ));
        }
        Ok(Some(img))
    }
}

/// Whether level `fine` has half the resolution of level `coarse` in the scheme.
pub fn halves(scheme: &TileScheme, coarse: u8, fine: u8) -> bool {
    match (scheme.lod(coarse), scheme.lod(fine)) {
        (Some(c), Some(f)) => ((c.resolution / f.resolution) / 2.0 - 1.0).abs() < RATIO_TOLERANCE,
        _ => false,
    }
}

/// Halves a 2W×2H image: each output pixel is the alpha-weighted mean of its 2×2 input block.
pub fn half(src: &RgbaImage) -> RgbaImage {
    let (w, h) = (src.width() / 2, src.height() / 2);
    RgbaImage::from_fn(w, h, |x, y| {
        let mut acc = [0u32; 4];
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let p = src.get_pixel(2 * x + dx, 2 * y + dy).0;
            let a = u32::from(p[3]);
            for c in 0..3 {
                acc[c] += u32::from(p[c]) * a;
            }
            acc[3] += a;
        }
        if acc[3] == 0 {
            return Rgba([0, 0, 0, 0]);
        }
        let ch = |c: usize| ((acc[c] + acc[3] / 2) / acc[3]) as u8;
        Rgba([ch(0), ch(1), ch(2), ((acc[3] + 2) / 4) as u8])
    })
}

impl TileSource for ResampleSource {
    fn describe(&self) -> String {
        "resample".into()
    }

    fn see_made(&self, made: MadeTiles) {
        let _ = self.made.set(made);
    }

    fn check(&self, scheme: &TileScheme) -> Result<()> {
        let pairs = scheme
            .lods
            .iter()
            .filter(|l| l.level < u8::MAX && halves(scheme, l.level, l.level + 1))
            .count();
        if pairs == 0 {
            return Err(Error::invalid(
                "resample: no two consecutive levels of conf.xml differ by a factor of 2",
            ));
        }
        if !scheme.tile_cols.is_multiple_of(2) || !scheme.tile_rows.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "resample: tiles of {}x{} px cannot be split in quarters",
                scheme.tile_cols, scheme.tile_rows
            )));
        }
        Ok(())
    }

    fn render(&self, scheme: &TileScheme, t: TileAddr) -> Result<Option<Vec<u8>>> {
        let (w, h) = (scheme.tile_cols, scheme.tile_rows);
        let encode = |img: &RgbaImage| encode(img, &scheme.tile_format, scheme.compression_quality);
        let mut children = Vec::new();
        if t.level < u8::MAX && halves(scheme, t.level, t.level + 1) {
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (Some(row), Some(col)) = (
                    t.row.checked_mul(2).map(|r| r + dr),
                    t.col.checked_mul(2).map(|c| c + dc),
                ) else {
                    continue;
                };
                let child = TileAddr::new(t.level + 1, row, col);
                if let Some(img) = self.stored(child, scheme)? {
                    children.push(((dr, dc), img));
                }
            }
        }
        if children.len() < 4 && t.level > 0 && halves(scheme, t.level - 1, t.level) {
            let parent = TileAddr::new(t.level - 1, t.row / 2, t.col / 2);
            if let Some(img) = self.stored(parent, scheme)? {
                let (qw, qh) = (w / 2, h / 2);
                let quarter =
                    imageops::crop_imm(&img, (t.col % 2) * qw, (t.row % 2) * qh, qw, qh).to_image();
                tracing::debug!("resample: {t} upsampled from {parent}");
                return encode(&imageops::resize(&quarter, w, h, FilterType::Triangle)).map(Some);
            }
        }
        if children.is_empty() {
            return Ok(None);
        }
        // JPEG keeps no alpha: leave missing children white rather than black.
        let empty = if scheme.tile_format == TileFormat::Jpeg {
            Rgba([255, 255, 255, 255])
        } else {
            Rgba([0, 0, 0, 0])
        };
        let mut mosaic = RgbaImage::from_pixel(2 * w, 2 * h, empty);
        for ((dr, dc), img) in &children {
            imageops::replace(&mut mosaic, img, i64::from(dc * w), i64::from(dr * h));
        }
        tracing::debug!("resample: {t} downsampled from {} children", children.len());
        encode(&half(&mosaic)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_weights_by_alpha() {
        let mut src = RgbaImage::new(2, 2);
        src.put_pixel(0, 0, Rgba([200, 100, 0, 255]));
        src.put_pixel(1, 0, Rgba([100, 50, 0, 255]));
        // Transparent pixels' colour must not bleed in.
        src.put_pixel(0, 1, Rgba([0, 255, 255, 0]));
        src.put_pixel(1, 1, Rgba([0, 255, 255, 0]));
        assert_eq!(half(&src).get_pixel(0, 0).0, [150, 75, 0, 128]);
        assert_eq!(half(&RgbaImage::new(2, 2)).get_pixel(0, 0).0, [0, 0, 0, 0]);
    }
}
