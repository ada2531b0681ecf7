//! Pixel work of export/import jobs on one tile: clip to an area of interest, merge over or
//! overwrite a destination tile, and re-encode in the cache's format only when pixels changed.
//!
//! Merge rule: the source is composited over the destination (Porter-Duff "over"), so fully
//! transparent source pixels keep the destination's, opaque ones replace them, and partly
//! transparent ones blend. Overwrite takes the source pixel as it is. Outside the area of
//! interest the destination (or, without one, transparency / the background colour) stays.

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbaImage};

use super::aoi::Mask;
use crate::format::conf::TileFormat;
use crate::format::sniff::{has_full_png_signature, sniff, ImageKind};

/// How source tiles go into the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Source over destination: transparent source pixels keep the destination's.
    #[default]
    Merge,
    /// Source pixels replace the destination's (inside the area of interest).
    Overwrite,
}

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

/// The destination cache's image settings.
#[derive(Debug, Clone)]
pub struct Codec {
    pub format: TileFormat,
    /// JPEG quality (1–100).
    pub quality: u8,
    /// What pixels outside the area become in JPEG tiles (which have no transparency).
    pub background: [u8; 3],
    pub width: u32,
    pub height: u32,
    /// Kind assumed for tiles whose bytes don't tell (the cache's format).
    pub default_kind: ImageKind,
}

/// A pixel error: the caller names the tile and its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelError {
    #[error("cannot decode {what} tile: {msg}")]
    Decode { what: &'static str, msg: String },
    #[error("{what} tile is {w}x{h} pixels, the tiling scheme says {sw}x{sh}")]
    Size {
        what: &'static str,
        w: u32,
        h: u32,
        sw: u32,
        sh: u32,
    },
    #[error("cannot encode tile: {0}")]
    Encode(String),
}

const PNG_SIG_HEAD: [u8; 4] = [0x89, b'P', b'N', b'G'];

impl Codec {
    /// Decodes a tile to RGBA at the scheme's tile size.
    pub fn decode(&self, bytes: &[u8], what: &'static str) -> Result<RgbaImage, PixelError> {
        let kind = sniff(bytes).unwrap_or(self.default_kind);
        let fixed;
        let bytes =
            if kind == ImageKind::Png && !has_full_png_signature(bytes) && sniff(bytes).is_some() {
                // Esri's truncated signature (see sniff): put the 4 missing bytes back.
                fixed = [&PNG_SIG_HEAD[..], bytes].concat();
                &fixed[..]
            } else {
                bytes
            };
        let fmt = match kind {
            ImageKind::Png => image::ImageFormat::Png,
            ImageKind::Jpeg => image::ImageFormat::Jpeg,
        };
        let img = image::load_from_memory_with_format(bytes, fmt)
            .map_err(|e| PixelError::Decode {
                what,
                msg: e.to_string(),
            })?
            .into_rgba8();
        if img.width() != self.width || img.height() != self.height {
            return Err(PixelError::Size {
                what,
                w: img.width(),
                h: img.height(),
                sw: self.width,
                sh: self.height,
            });
        }
        Ok(img)
    }

    fn is_jpeg(&self) -> bool {
        self.format == TileFormat::Jpeg
    }

    /// The pixel an empty destination has.
    fn blank(&self) -> [u8; 4] {
        if self.is_jpeg() {
            let [r, g, b] = self.background;
            [r, g, b, 255]
        } else {
            [0, 0, 0, 0]
        }
    }

    /// Encodes in the cache's format: JPEG caches get JPEG (flattened on the background), MIXED
    /// caches JPEG when opaque and PNG otherwise, PNG caches PNG (RGB when opaque).
    pub fn encode(&self, img: &RgbaImage) -> Result<Vec<u8>, PixelError> {
        let opaque = img.pixels().all(|p| p.0[3] == 255);
        let jpeg = self.is_jpeg() || (self.format == TileFormat::Mixed && opaque);
        let mut out = Vec::new();
        let enc_err = |e: image::ImageError| PixelError::Encode(e.to_string());
        if jpeg {
            let bg = self.background;
            let rgb: Vec<u8> = img
                .pixels()
                .flat_map(|p| {
                    let o = over(p.0, [bg[0], bg[1], bg[2], 255]);
                    [o[0], o[1], o[2]]
                })
                .collect();
            JpegEncoder::new_with_quality(&mut out, self.quality.clamp(1, 100))
                .write_image(
                    &rgb,
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(enc_err)?;
        } else {
            let enc = PngEncoder::new_with_quality(
                &mut out,
                CompressionType::Default,
                FilterType::Adaptive,
            );
            if opaque {
                let rgb: Vec<u8> = img
                    .pixels()
                    .flat_map(|p| [p.0[0], p.0[1], p.0[2]])
                    .collect();
                enc.write_image(
                    &rgb,
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(enc_err)?;
            } else {
                enc.write_image(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgba8,
                )
                .map_err(enc_err)?;
            }
        }
        Ok(out)
    }

    /// Decides what to store for one tile. `mask` is None when the tile lies wholly in the area;
    /// `dest` is the destination's tile, if it has one.
    pub fn apply(
        &self,
        src: &[u8],
        mask: Option<&Mask>,
        dest: Option<&[u8]>,
        mode: Mode,
    ) -> Result<Outcome, PixelError> {
        if mask.is_some_and(Mask::is_empty) {
            return Ok(Outcome::Empty);
        }
        let mask = mask.filter(|m| !m.is_full());
        if dest == Some(src) && mask.is_none() {
            return Ok(Outcome::Unchanged);
        }
        match (mask, dest) {
            (None, None) => Ok(Outcome::Copy),
            (None, Some(_)) if mode == Mode::Overwrite => Ok(Outcome::Copy),
            (None, Some(d)) => {
                let s = self.decode(src, "source")?;
                if s.pixels().all(|p| p.0[3] == 255) {
                    return Ok(Outcome::Copy);
                }
                let base = self.decode(d, "destination")?;
                self.finish(composite(&s, &base, None, mode), Some(&base))
            }
            (Some(m), d) => {
                let s = self.decode(src, "source")?;
                let base = match d {
                    Some(d) => self.decode(d, "destination")?,
                    None => {
                        RgbaImage::from_pixel(self.width, self.height, image::Rgba(self.blank()))
                    }
                };
                let result = composite(&s, &base, Some(m), mode);
                self.finish(result, d.map(|_| &base))
            }
        }
    }

    fn finish(&self, result: RgbaImage, base: Option<&RgbaImage>) -> Result<Outcome, PixelError> {
        if base.is_some_and(|b| b.as_raw() == result.as_raw()) {
            return Ok(Outcome::Unchanged);
        }
        Ok(Outcome::Encoded(self.encode(&result)?))
    }
}

/// `s` over `d` (straight alpha, 8 bits).
fn over(s: [u8; 4], d: [u8; 4]) -> [u8; 4] {
    match (s[3], d[3]) {
        (255, _) | (_, 0) => s,
        (0, _) => d,
        (sa, da) => {
            let (sa, da) = (u32::from(sa), u32::from(da));
            // Alpha scaled by 255: ao = sa + da (1 - sa).
            let ao255 = sa * 255 + da * (255 - sa);
            let ch = |i: usize| {
                let num = u32::from(s[i]) * sa * 255 + u32::from(d[i]) * da * (255 - sa);
                ((num + ao255 / 2) / ao255) as u8
            };
            [ch(0), ch(1), ch(2), ((ao255 + 127) / 255) as u8]
        }
    }
}

fn composite(s: &RgbaImage, base: &RgbaImage, mask: Option<&Mask>, mode: Mode) -> RgbaImage {
    let mut out = base.clone();
    let inside = mask.map(Mask::as_slice);
    for (i, (o, sp)) in out.pixels_mut().zip(s.pixels()).enumerate() {
        if inside.is_some_and(|m| !m[i]) {
            continue;
        }
        o.0 = match mode {
            Mode::Overwrite => sp.0,
            Mode::Merge => over(sp.0, o.0),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_is_exact_at_the_ends() {
        assert_eq!(over([1, 2, 3, 255], [9, 9, 9, 255]), [1, 2, 3, 255]);
        assert_eq!(over([1, 2, 3, 0], [9, 9, 9, 200]), [9, 9, 9, 200]);
        assert_eq!(over([1, 2, 3, 40], [9, 9, 9, 0]), [1, 2, 3, 40]);
        // Half red over opaque blue.
        assert_eq!(over([255, 0, 0, 128], [0, 0, 255, 255]), [128, 0, 127, 255]);
    }
}
