//! Tile image kind from its bytes (for MIXED caches and file extensions).

/// An image kind a tile can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Png,
    Jpeg,
}

const PNG_SIG: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

impl ImageKind {
    /// File extension used in exploded caches.
    pub fn ext(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
        }
    }

    /// From an extension (png, jpg, jpeg; any case).
    pub fn from_ext(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(ImageKind::Png),
            "jpg" | "jpeg" => Some(ImageKind::Jpeg),
            _ => None,
        }
    }
}

/// Sniffs PNG/JPEG. Also recognises a PNG whose first four signature bytes are missing (seen in
/// Esri's own `Usa.tpkx`). None when the bytes are neither: callers fall back to the cache format.
pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(&PNG_SIG)
        || (bytes.starts_with(&PNG_SIG[4..]) && bytes.get(8..12) == Some(b"IHDR"))
    {
        Some(ImageKind::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageKind::Jpeg)
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
