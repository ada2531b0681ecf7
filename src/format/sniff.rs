//! What a tile holds, from its bytes (for MIXED caches and file extensions): a picture (PNG, JPEG)
//! or data without pixels bundlefs decodes (LERC elevation, vector tiles).

/// What a tile holds. Tiles are named by it (`.png`, `.jpg`, `.lerc`, `.pbf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Png,
    Jpeg,
    /// Esri's LERC (Limited Error Raster Compression) blob: elevation layers' tiles
    /// (`CacheTileFormat` LERC). Kept and copied as bytes; no pixels.
    Lerc,
    /// A Mapbox Vector Tile (protocol buffers), gzip'ed as ArcGIS vector tile caches and `.vtpk`
    /// packages store them (`tileInfo.format` pbf). Kept and copied as bytes; no pixels.
    Pbf,
}

const PNG_SIG: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

impl ImageKind {
    /// File extension used in exploded caches.
    pub fn ext(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Lerc => "lerc",
            ImageKind::Pbf => "pbf",
        }
    }

    /// From an extension (png, jpg, jpeg, lerc, pbf; any case).
    pub fn from_ext(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(ImageKind::Png),
            "jpg" | "jpeg" => Some(ImageKind::Jpeg),
            "lerc" => Some(ImageKind::Lerc),
            "pbf" => Some(ImageKind::Pbf),
            _ => None,
        }
    }

    /// Whether tiles of this kind are pictures bundlefs decodes (PNG, JPEG). LERC and vector
    /// tiles are bytes only: copied as they are, refused by name where pixels are needed (merge,
    /// clipping to an area, a background, resampling, rendering).
    pub fn has_pixels(self) -> bool {
        matches!(self, ImageKind::Png | ImageKind::Jpeg)
    }

    /// The kind's name in messages: PNG, JPEG, LERC, vector tile (PBF).
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Png => "PNG",
            ImageKind::Jpeg => "JPEG",
            ImageKind::Lerc => "LERC",
            ImageKind::Pbf => "vector tile (PBF)",
        }
    }
}

/// Sniffs PNG, JPEG, LERC and gzip'ed vector tiles. Also recognises a PNG whose first four
/// signature bytes are missing (seen in Esri's own `Usa.tpkx`). LERC blobs start `CntZImage `
/// (LERC 1) or `Lerc2 ` (LERC 2: Esri's lerc repository, `Lerc2::WriteHeader`); gzip starts
/// 1f 8b (RFC 1952 §2.3.1), which in a tile cache is a vector tile (ArcGIS stores them gzip'ed).
/// None when the bytes are none of these (an uncompressed vector tile, damage): callers fall back
/// to the cache format.
pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(&PNG_SIG)
        || (bytes.starts_with(&PNG_SIG[4..]) && bytes.get(8..12) == Some(b"IHDR"))
    {
        Some(ImageKind::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageKind::Jpeg)
    } else if bytes.starts_with(b"CntZImage ") || bytes.starts_with(b"Lerc2 ") {
        Some(ImageKind::Lerc)
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(ImageKind::Pbf)
    } else {
        None
    }
}

/// True for a complete, well-formed PNG signature (the truncated Esri variant is not).
pub fn has_full_png_signature(bytes: &[u8]) -> bool {
    bytes.starts_with(&PNG_SIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs() {
        assert_eq!(sniff(&PNG_SIG), Some(ImageKind::Png));
        assert_eq!(sniff(b"\r\n\x1a\n\0\0\0\rIHDR...."), Some(ImageKind::Png));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some(ImageKind::Jpeg));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(ImageKind::from_ext("JPEG"), Some(ImageKind::Jpeg));
    }
}
