//! What an export or import job stores for one tile: the source bytes as they are, new pixels
//! (clipped to the area of interest and/or merged over the destination's tile) encoded in the
//! destination cache's format, or nothing. The pixel work itself is [`crate::format::pixels`].
//!
//! Outside the area of interest the destination's pixels stay; where the destination has no tile,
//! a blank one stands in: transparent, or for JPEG caches the background colour.

use image::{Rgba, RgbaImage};

use super::aoi::Mask;
use crate::format::conf::TileFormat;
use crate::format::pixels::{
    composite, decode, is_opaque, ImportMode, PixelError, TileEncoder, DEFAULT_BACKGROUND,
};
use crate::format::sniff::ImageKind;

/// What becomes of one tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Store the source bytes as they are.
    Copy,
    /// Store these new bytes (the tile was clipped and/or merged).
    Encoded(Vec<u8>),
    /// The destination already holds these pixels: write nothing.
    Unchanged,
    /// Nothing of the source tile is in the area: write nothing.
    Empty,
}

/// Which of the two tiles a [`TileError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The tile read from the source cache.
    Source,
    /// The destination's tile, or the destination's format (for encoding).
    Destination,
}

/// A pixel error on one side; the caller names the tile and the file of that side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} tile: {error}", match .side { Side::Source => "source", Side::Destination => "destination" })]
pub struct TileError {
    /// Which tile (and so which file) is at fault.
    pub side: Side,
    /// What is wrong with it.
    pub error: PixelError,
}

/// The destination cache's pixel settings for a job.
#[derive(Debug, Clone)]
pub struct TilePixels {
    /// Encodes new pixels in the destination's CacheTileFormat.
    pub encoder: TileEncoder,
    /// Tile size (TileCols, TileRows) of the tiling scheme; None without conf.xml, when the two
    /// tiles need only the same size.
    pub size: Option<(u32, u32)>,
    /// Kind assumed for tiles whose bytes don't tell (the cache's format).
    pub fallback: ImageKind,
}

impl TilePixels {
    fn decode(&self, bytes: &[u8], side: Side) -> Result<RgbaImage, TileError> {
        let fail = |error| TileError { side, error };
        let img = decode(bytes, Some(self.fallback)).map_err(fail)?;
        if let Some((want_w, want_h)) = self.size {
            let (w, h) = img.dimensions();
            if (w, h) != (want_w, want_h) {
                return Err(fail(PixelError::Size {
                    w,
                    h,
                    want_w,
                    want_h,
                }));
            }
        }
        Ok(img)
    }

    /// The pixel a missing destination tile has: the background in JPEG caches, else transparent.
    fn blank(&self) -> Rgba<u8> {
        if self.encoder.format == TileFormat::Jpeg {
            let [r, g, b] = self.encoder.background.unwrap_or(DEFAULT_BACKGROUND);
            Rgba([r, g, b, u8::MAX])
        } else {
            Rgba([0, 0, 0, 0])
        }
    }

    /// Decides what to store for one tile. `mask` is None when the tile lies wholly in the area;
    /// `dest` is the destination's tile, if it has one.
    pub fn apply(
        &self,
        src: &[u8],
        mask: Option<&Mask>,
        dest: Option<&[u8]>,
        mode: ImportMode,
    ) -> Result<Outcome, TileError> {
        if mask.is_some_and(Mask::is_empty) {
            return Ok(Outcome::Empty);
        }
        let mask = mask.filter(|m| !m.is_full());
        if dest == Some(src) && mask.is_none() {
            return Ok(Outcome::Unchanged);
        }
        let Some(d) = dest else {
            let Some(m) = mask else {
                return Ok(Outcome::Copy);
            };
            let s = self.decode(src, Side::Source)?;
            let (w, h) = s.dimensions();
            let base = RgbaImage::from_pixel(w, h, self.blank());
            return self.finish(composite(&s, &base, Some(m.as_slice()), mode), None);
        };
        if mask.is_none() && mode == ImportMode::Overwrite {
            return Ok(Outcome::Copy);
        }
        let s = self.decode(src, Side::Source)?;
        if mask.is_none() && is_opaque(&s) {
            // MERGE of an opaque tile is the tile itself: keep its bytes.
            return Ok(Outcome::Copy);
        }
        let base = self.decode(d, Side::Destination)?;
        if base.dimensions() != s.dimensions() {
            let ((w, h), (want_w, want_h)) = (s.dimensions(), base.dimensions());
            return Err(TileError {
                side: Side::Source,
                error: PixelError::Size {
                    w,
                    h,
                    want_w,
                    want_h,
                },
            });
        }
        let result = composite(&s, &base, mask.map(Mask::as_slice), mode);
        self.finish(result, Some(&base))
    }

    fn finish(&self, result: RgbaImage, base: Option<&RgbaImage>) -> Result<Outcome, TileError> {
        if base.is_some_and(|b| b.as_raw() == result.as_raw()) {
            return Ok(Outcome::Unchanged);
        }
        // Encoding fails only for the destination's format (one bundlefs cannot write, e.g. LERC).
        let bytes = self.encoder.encode(&result).map_err(|error| TileError {
            side: Side::Destination,
            error,
        })?;
        Ok(Outcome::Encoded(bytes))
    }
}
