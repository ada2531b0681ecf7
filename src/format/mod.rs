//! Bytes ↔ tiles: bundle formats (Compact V1/V2), exploded names, conf.xml/conf.cdi, root.json,
//! the one tolerant text reader every XML/JSON input goes through ([`text`]), image sniffing.
//! No policy and no file-system walking here: callers hand in bytes or open files.

pub mod axes;
pub mod conf;
pub mod exploded;
pub mod extent;
pub mod geopackage;
pub mod levels;
pub mod mbtiles;
pub mod mvt;
pub mod pixels;
pub mod pmtiles;
pub mod scheme;
pub mod sniff;
pub mod text;
pub mod tpk;
pub mod tpkx;
pub mod v1;
pub mod v2;
pub mod values;
pub mod xyz;

/// Tiles per bundle side (rows and columns).
pub const BUNDLE_DIM: u32 = 128;
/// Tiles per bundle.
pub const BUNDLE_TILES: usize = (BUNDLE_DIM * BUNDLE_DIM) as usize;
/// Largest tile a bundle index can address (24-bit size field).
pub const MAX_TILE_SIZE: usize = (1 << 24) - 1;

/// A tile of the cache: level, row (0 at the top) and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileAddr {
    pub level: u8,
    pub row: u32,
    pub col: u32,
}

impl TileAddr {
    pub fn new(level: u8, row: u32, col: u32) -> Self {
        TileAddr { level, row, col }
    }

    /// The bundle this tile is stored in.
    pub fn bundle(&self) -> BundleId {
        BundleId {
            level: self.level,
            row0: self.row - self.row % BUNDLE_DIM,
            col0: self.col - self.col % BUNDLE_DIM,
        }
    }

    /// The tile's position inside its bundle.
    pub fn slot(&self) -> Slot {
        Slot {
            row: self.row % BUNDLE_DIM,
            col: self.col % BUNDLE_DIM,
        }
    }
}

impl std::fmt::Display for TileAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "L{:02}/R{:08x}/C{:08x}", self.level, self.row, self.col)
    }
}

/// A bundle: level and first row/column (multiples of 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId {
    pub level: u8,
    pub row0: u32,
    pub col0: u32,
}

impl BundleId {
    /// The tile at `slot` of this bundle.
    pub fn tile(&self, slot: Slot) -> TileAddr {
        TileAddr {
            level: self.level,
            row: self.row0 + slot.row,
            col: self.col0 + slot.col,
        }
    }
}

/// A tile position inside a bundle (row, col in 0..128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub row: u32,
    pub col: u32,
}

impl Slot {
    /// All 16384 slots in row-major order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..BUNDLE_DIM).flat_map(|row| (0..BUNDLE_DIM).map(move |col| Slot { row, col }))
    }
}

/// What is wrong with a file's bytes. The caller adds the path ([`crate::Error::Format`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("file is {len} bytes, shorter than its {what} ({need} bytes)")]
    Truncated {
        what: &'static str,
        len: u64,
        need: u64,
    },
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("index entry for row {row} col {col} (in bundle): {msg}")]
    BadEntry { row: u32, col: u32, msg: String },
    #[error("tile of {0} bytes is larger than a bundle can hold (2^24-1)")]
    TileTooLarge(usize),
    #[error("bundle would exceed 2^40 bytes")]
    BundleTooLarge,
    #[error("invalid name {name:?}: {msg}")]
    BadName { name: String, msg: String },
    #[error("invalid XML: {0}")]
    Xml(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Bytes that are not text bundlefs can decode ([`text::decode`]).
    #[error("unreadable text: {0}")]
    Text(String),
    /// A value bundlefs does not support, named with the field that holds it (`PacketSize 64 …`):
    /// reading on would read the wrong bytes.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub(crate) fn bad_entry(slot: Slot, msg: impl Into<String>) -> FormatError {
    FormatError::BadEntry {
        row: slot.row,
        col: slot.col,
        msg: msg.into(),
    }
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A little-endian u64 at `at`.
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A 5-byte little-endian integer (V1 `.bundlx` offsets).
pub fn u40_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x[..5].copy_from_slice(&b[at..at + 5]);
    u64::from_le_bytes(x)
}
