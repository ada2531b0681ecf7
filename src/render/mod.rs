//! Tile sources: where a tile the bundles lack can come from. Today: `label` (drawn by bundlefs).

pub mod label;

use crate::format::conf::TileScheme;
use crate::format::TileAddr;
use crate::Result;

/// Something that can produce the encoded bytes of a tile of a scheme.
pub trait TileSource: Send + Sync {
    /// The encoded tile (PNG or JPEG per the scheme's format), or None if the source has nothing there.
    fn render(&self, scheme: &TileScheme, tile: TileAddr) -> Result<Option<Vec<u8>>>;
}
