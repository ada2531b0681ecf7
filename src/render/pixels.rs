//! Render's side of tile pixels: source images checked against the cache's tiling scheme and
//! re-encoded when the cache's CacheTileFormat demands another kind, with errors naming the source
//! (URL, stored tile) as source failures. The pixel work is [`crate::format::pixels`].

use image::RgbaImage;

use crate::format::conf::{TileFormat, TileScheme};
use crate::format::pixels::{self, PixelError, TileEncoder};
use crate::format::sniff::sniff;
use crate::{Error, Result};

/// How many bytes of a rejected body an error message quotes.
const QUOTE_BYTES: usize = 200;

/// Encodes pixels in the cache's tile format ([`TileEncoder`]: JPEG at its quality with alpha
/// dropped, MIXED as JPEG when opaque and PNG otherwise, PNG as RGB when opaque), fast PNG because
/// a reader waits for the tile.
pub fn encode(img: &RgbaImage, format: &TileFormat, quality: u32) -> Result<Vec<u8>> {
    TileEncoder::new(format.clone(), quality)
        .encode(img)
        .map_err(|e| Error::invalid(format!("encoding tile: {e}")))
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

/// Decodes a PNG or JPEG tile ([`pixels::decode`]); `what` names where the bytes came from, and
/// bytes that are no image are quoted.
pub fn decode(bytes: &[u8], what: &str) -> Result<RgbaImage> {
    pixels::decode(bytes, None).map_err(|e| match e {
        PixelError::NotAnImage { .. } => Error::source(what, format!("{e}: {}", quote(bytes))),
        e => Error::source(what, e.to_string()),
    })
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
    pixels::check_size(&img, scheme).map_err(|e| Error::source(what, format!("image is {e}")))?;
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
    use crate::format::sniff::ImageKind;
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
