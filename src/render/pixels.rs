//! Tile images between sources and the cache: decode, check size and kind against the cache's
//! tiling scheme, and re-encode when the cache's CacheTileFormat demands another kind.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbaImage};

use crate::format::conf::{TileFormat, TileScheme};
use crate::format::sniff::{sniff, ImageKind};
use crate::{Error, Result};

/// JPEG quality used when conf.xml gives none (CompressionQuality 0 or absent).
pub const DEFAULT_JPEG_QUALITY: u8 = 75;

/// How many bytes of a rejected body an error message quotes.
const QUOTE_BYTES: usize = 200;

/// Encodes pixels in the cache's tile format: JPEG at its quality, PNG otherwise (RGB when every
/// pixel is opaque, which makes smaller files).
pub fn encode(img: &RgbaImage, format: &TileFormat, quality: u32) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let opaque = img.pixels().all(|p| p[3] == u8::MAX);
    let res = if *format == TileFormat::Jpeg {
        let rgb = image::DynamicImage::ImageRgba8(img.clone()).to_rgb8();
        let q = match quality {
            0 => DEFAULT_JPEG_QUALITY,
            q => q.min(100) as u8,
        };
        JpegEncoder::new_with_quality(&mut out, q).encode_image(&rgb)
    } else if opaque {
        let rgb = image::DynamicImage::ImageRgba8(img.clone()).to_rgb8();
        PngEncoder::new(&mut out).write_image(
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
            ExtendedColorType::Rgb8,
        )
    } else {
        PngEncoder::new(&mut out).write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgba8,
        )
    };
    res.map_err(|e| Error::invalid(format!("encoding tile: {e}")))?;
    Ok(out.into_inner())
}

/// A short printable excerpt of a body, for error messages about non-images.
pub fn quote(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(QUOTE_BYTES)];
    let text: String = String::from_utf8_lossy(head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let more = if bytes.len() > QUOTE_BYTES { "…" } else { "" };
    format!("{:?}{more}", text.trim())
}

/// Decodes a PNG or JPEG tile; `what` names where the bytes came from.
pub fn decode(bytes: &[u8], what: &str) -> Result<RgbaImage> {
    let Some(kind) = sniff(bytes) else {
        return Err(Error::source(
            what,
            format!(
                "not a PNG or JPEG image ({} bytes): {}",
                bytes.len(),
                quote(bytes)
            ),
        ));
    };
    let fmt = match kind {
        ImageKind::Png => image::ImageFormat::Png,
        ImageKind::Jpeg => image::ImageFormat::Jpeg,
    };
    image::load_from_memory_with_format(bytes, fmt)
        .map(|i| i.to_rgba8())
        .map_err(|e| Error::source(what, format!("cannot decode {kind:?} image: {e}")))
}

/// Checks a source's image against the scheme — it must decode fully and be exactly
/// TileCols × TileRows — and returns bytes the cache accepts: the same bytes when their kind fits
/// the cache's CacheTileFormat (either kind for MIXED), else the pixels re-encoded.
pub fn conform(bytes: Vec<u8>, scheme: &TileScheme, what: &str) -> Result<Vec<u8>> {
    if let TileFormat::Other(name) = &scheme.tile_format {
        return Err(Error::invalid(format!(
            "cannot render tiles for a cache of format {name}"
        )));
    }
    let img = decode(&bytes, what)?;
    if (img.width(), img.height()) != (scheme.tile_cols, scheme.tile_rows) {
        return Err(Error::source(
            what,
            format!(
                "image is {}x{} px, the cache's tiles are {}x{}",
                img.width(),
                img.height(),
                scheme.tile_cols,
                scheme.tile_rows
            ),
        ));
    }
    let kind = sniff(&bytes).expect("decode checked the kind");
    if scheme.tile_format.accepts(kind) {
        return Ok(bytes);
    }
    tracing::debug!(
        "{what}: {kind:?} image re-encoded for a {} cache",
        scheme.tile_format.name()
    );
    encode(&img, &scheme.tile_format, scheme.compression_quality)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn scheme(format: TileFormat) -> TileScheme {
        let mut s = TileScheme::web_mercator(1, format);
        s.tile_cols = 8;
        s.tile_rows = 4;
        s
    }

    #[test]
    fn conform_keeps_fitting_bytes_and_reencodes_others() {
        let img = RgbaImage::from_pixel(8, 4, Rgba([10, 200, 30, 255]));
        let png = encode(&img, &TileFormat::Png, 0).unwrap();
        let s = scheme(TileFormat::Png32);
        assert_eq!(conform(png.clone(), &s, "t").unwrap(), png);
        let j = conform(png.clone(), &scheme(TileFormat::Jpeg), "t").unwrap();
        assert_eq!(sniff(&j), Some(ImageKind::Jpeg));
        let back = decode(&j, "t").unwrap();
        assert!(back.pixels().all(|p| p[1].abs_diff(200) < 8));
        assert_eq!(
            conform(png.clone(), &scheme(TileFormat::Mixed), "t").unwrap(),
            png
        );
    }

    #[test]
    fn conform_rejects_wrong_size_garbage_and_truncation() {
        let s = scheme(TileFormat::Png);
        let big = encode(&RgbaImage::new(9, 4), &TileFormat::Png, 0).unwrap();
        let e = conform(big, &s, "http://x/y").unwrap_err().to_string();
        assert!(
            e.contains("http://x/y") && e.contains("9x4") && e.contains("8x4"),
            "{e}"
        );
        let e = conform(b"{\"error\":{\"code\":400}}".to_vec(), &s, "u")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a PNG or JPEG") && e.contains("error"),
            "{e}"
        );
        let mut png = encode(&RgbaImage::new(8, 4), &TileFormat::Png, 0).unwrap();
        png.truncate(png.len() - 20);
        assert!(conform(png, &s, "u").is_err());
        let e = conform(Vec::new(), &scheme(TileFormat::Other("LERC".into())), "u").unwrap_err();
        assert!(e.to_string().contains("LERC"));
    }
}
