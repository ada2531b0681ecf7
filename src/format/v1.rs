//! Compact V1 bundles: a `.bundle` of size-prefixed records and a `.bundlx` index of 5-byte offsets,
//! column-major. Reading from byte slices; writing a new pair in one pass, or durable appends.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    bad_entry, u32_at, u40_at, FormatError, Slot, BUNDLE_DIM, BUNDLE_TILES, MAX_TILE_SIZE,
};
use crate::error::{Error, FormatContext, IoContext, Result};

/// `.bundlx` header (fixed bytes).
pub const BUNDLX_HEADER: [u8; 16] = [3, 0, 0, 0, 16, 0, 0, 0, 0, 0x40, 0, 0, 5, 0, 0, 0];
/// `.bundlx` footer (fixed bytes).
pub const BUNDLX_FOOTER: [u8; 16] = [0, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0];
/// Bytes per `.bundlx` offset.
pub const OFFSET_BYTES: usize = 5;
/// Total `.bundlx` length.
pub const BUNDLX_LEN: usize = 16 + OFFSET_BYTES * BUNDLE_TILES + 16;
/// `.bundle` header length (struct `<4I3Q5I`).
pub const HEADER_LEN: usize = 60;
/// The zero block after the header: one empty u32 size per slot.
pub const ZERO_BLOCK_LEN: usize = 4 * BUNDLE_TILES;
/// First byte of tile records.
pub const DATA_START: u64 = (HEADER_LEN + ZERO_BLOCK_LEN) as u64;

// `.bundle` header fields.
const H_VERSION: usize = 0; // u32, 3
const H_MAX_TILES: usize = 4; // u32, 16384
const H_MAX_TILE: usize = 8; // u32, largest tile size
const H_FIXED5: usize = 12; // u32, 5
const H_COUNT4: usize = 16; // u64, tile count × 4
const H_FILE_SIZE: usize = 24; // u64, file size
const H_FIXED40: usize = 32; // u64, 40
const H_FIXED16: usize = 40; // u32, 16
const H_ROW0: usize = 44; // u32, first row
const H_ROW1: usize = 48; // u32, last row
const H_COL0: usize = 52; // u32, first column
const H_COL1: usize = 56; // u32, last column

/// Position in the `.bundlx` of the offset for `slot` (column-major).
pub fn index_pos(slot: Slot) -> usize {
    16 + OFFSET_BYTES * (slot.col * BUNDLE_DIM + slot.row) as usize
}

/// The `.bundle` header for a bundle whose first tile is (row0, col0).
pub fn header_bytes(
    row0: u32,
    col0: u32,
    max_tile: u32,
    tiles: u64,
    file_size: u64,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let mut put32 = |at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(H_VERSION, 3);
    put32(H_MAX_TILES, BUNDLE_TILES as u32);
    put32(H_MAX_TILE, max_tile);
    put32(H_FIXED5, 5);
    put32(H_FIXED16, 16);
    put32(H_ROW0, row0);
    put32(H_ROW1, row0 + BUNDLE_DIM - 1);
    put32(H_COL0, col0);
    put32(H_COL1, col0 + BUNDLE_DIM - 1);
    h[H_COUNT4..H_COUNT4 + 8].copy_from_slice(&(tiles * 4).to_le_bytes());
    h[H_FILE_SIZE..H_FILE_SIZE + 8].copy_from_slice(&file_size.to_le_bytes());
    h[H_FIXED40..H_FIXED40 + 8].copy_from_slice(&40u64.to_le_bytes());
    h
}

/// A `.bundlx` whose every offset points at its slot's zero size in the zero block (no tiles).
pub fn empty_bundlx() -> Vec<u8> {
    let mut x = Vec::with_capacity(BUNDLX_LEN);
    x.extend_from_slice(&BUNDLX_HEADER);
    for i in 0..BUNDLE_TILES {
        let off = HEADER_LEN as u64 + 4 * i as u64;
        x.extend_from_slice(&off.to_le_bytes()[..OFFSET_BYTES]);
    }
    x.extend_from_slice(&BUNDLX_FOOTER);
    x
}

/// An empty `.bundle` (header and zero block).
pub fn empty_bundle(row0: u32, col0: u32) -> Vec<u8> {
    let mut b = header_bytes(row0, col0, 0, 0, DATA_START).to_vec();
    b.resize(DATA_START as usize, 0);
    b
}

/// Read-only view of a V1 pair.
#[derive(Clone, Copy)]
pub struct V1Bundle<'a> {
    bundle: &'a [u8],
    bundlx: &'a [u8],
}

/// Which file of the pair an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Part {
    Bundle,
    Bundlx,
}

impl<'a> V1Bundle<'a> {
    /// Checks lengths and the fixed bytes that matter; entries are checked when read.
    pub fn parse(bundle: &'a [u8], bundlx: &'a [u8]) -> Result<Self, (V1Part, FormatError)> {
        if bundlx.len() < BUNDLX_LEN - 16 {
            return Err((
                V1Part::Bundlx,
                FormatError::Truncated {
                    what: "V1 bundlx index",
                    len: bundlx.len() as u64,
                    need: BUNDLX_LEN as u64,
                },
            ));
        }
        if bundlx[..16] != BUNDLX_HEADER {
            return Err((
                V1Part::Bundlx,
                FormatError::BadHeader("not a Compact V1 .bundlx (header bytes differ)".into()),
            ));
        }
        if bundle.len() < HEADER_LEN {
            return Err((
                V1Part::Bundle,
                FormatError::Truncated {
                    what: "V1 bundle header",
                    len: bundle.len() as u64,
                    need: HEADER_LEN as u64,
                },
            ));
        }
        let version = u32_at(bundle, H_VERSION);
        if version != 3 {
            return Err((
                V1Part::Bundle,
                FormatError::BadHeader(format!("V1 bundle version {version}, expected 3")),
            ));
        }
        Ok(V1Bundle { bundle, bundlx })
    }

    pub fn len(&self) -> u64 {
        self.bundle.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bundle.len() as u64 <= DATA_START
    }

    /// The raw offset for `slot` (points at the record's u32 size).
    pub fn offset(&self, slot: Slot) -> u64 {
        u40_at(self.bundlx, index_pos(slot))
    }

    /// Byte range of the tile at `slot` in the `.bundle`, checked; None if empty.
    pub fn tile_range(&self, slot: Slot) -> Result<Option<std::ops::Range<usize>>, FormatError> {
        let off = self.offset(slot);
        if off == 0 {
            // MapProxy writes offset 0 for a removed tile.
            return Ok(None);
        }
        if off < HEADER_LEN as u64 {
            return Err(bad_entry(
                slot,
                format!("offset {off} points into the bundle header"),
            ));
        }
        if off + 4 > self.len() {
            return Err(bad_entry(
                slot,
                format!(
                    "offset {off} is past the end of the bundle ({} bytes)",
                    self.len()
                ),
            ));
        }
        let size = u64::from(u32_at(self.bundle, off as usize));
        if size == 0 {
            return Ok(None);
        }
        if size > MAX_TILE_SIZE as u64 {
            return Err(bad_entry(
                slot,
                format!("record at offset {off} claims {size} bytes (over 2^24)"),
            ));
        }
        let start = off + 4;
        if start + size > self.len() {
            return Err(bad_entry(
                slot,
                format!("tile of {size} bytes at offset {start} runs past the end of the bundle ({} bytes)", self.len()),
            ));
        }
        Ok(Some(start as usize..(start + size) as usize))
    }

    pub fn tile(&self, slot: Slot) -> Result<Option<&'a [u8]>, FormatError> {
        Ok(self.tile_range(slot)?.map(|r| &self.bundle[r]))
    }

    /// Slots whose entries are non-empty or broken (broken ones are reported by `tile_range`).
    pub fn slots(&self) -> impl Iterator<Item = Slot> + 'a {
        let this = *self;
        Slot::all().filter(move |s| !matches!(this.tile_range(*s), Ok(None)))
    }

    /// Bytes in the `.bundle` not used by header, zero block or live records.
    pub fn dead_bytes(&self) -> u64 {
        let live: u64 = Slot::all()
            .filter_map(|s| self.tile_range(s).ok().flatten())
            .map(|r| (r.end - r.start) as u64 + 4)
            .sum();
        self.len().saturating_sub(DATA_START + live)
    }
}

/// Writes a new V1 pair in one pass: `.bundle` records to `out`, `.bundlx` bytes returned by `finish`.
pub struct Builder<W: Write + Seek> {
    out: W,
    row0: u32,
    col0: u32,
    index: Vec<u64>,
    pos: u64,
    max_tile: u32,
    tiles: u64,
}

impl<W: Write + Seek> Builder<W> {
    pub fn new(mut out: W, row0: u32, col0: u32) -> std::io::Result<Self> {
        out.write_all(&empty_bundle(row0, col0))?;
        Ok(Builder {
            out,
            row0,
            col0,
            index: (0..BUNDLE_TILES)
                .map(|i| HEADER_LEN as u64 + 4 * i as u64)
                .collect(),
            pos: DATA_START,
            max_tile: 0,
            tiles: 0,
        })
    }

    pub fn add(&mut self, slot: Slot, tile: &[u8]) -> std::io::Result<()> {
        let size = super::v2::check_tile_size(tile.len()).map_err(std::io::Error::other)?;
        if tile.is_empty() {
            return Err(std::io::Error::other("empty tile"));
        }
        self.out.write_all(&size.to_le_bytes())?;
        self.out.write_all(tile)?;
        let i = (slot.col * BUNDLE_DIM + slot.row) as usize;
        if self.index[i] < DATA_START {
            self.tiles += 1;
        }
        self.index[i] = self.pos;
        self.pos += 4 + u64::from(size);
        self.max_tile = self.max_tile.max(size);
        Ok(())
    }

    /// Writes the `.bundle` header and returns the writer, the `.bundlx` bytes and the bundle size.
    pub fn finish(mut self) -> std::io::Result<(W, Vec<u8>, u64)> {
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&header_bytes(
            self.row0,
            self.col0,
            self.max_tile,
            self.tiles,
            self.pos,
        ))?;
        self.out.flush()?;
        let mut x = Vec::with_capacity(BUNDLX_LEN);
        x.extend_from_slice(&BUNDLX_HEADER);
        for off in &self.index {
            x.extend_from_slice(&off.to_le_bytes()[..OFFSET_BYTES]);
        }
        x.extend_from_slice(&BUNDLX_FOOTER);
        Ok((self.out, x, self.pos))
    }
}

/// Durably appends tiles to an existing V1 pair (caller holds the bundle lock): records, fdatasync,
/// then the `.bundlx` offsets and the header, fdatasync both.
pub fn append_tiles(
    bundle: &File,
    bundle_path: &Path,
    bundlx: &File,
    bundlx_path: &Path,
    tiles: &[(Slot, &[u8])],
    sync: bool,
) -> Result<super::v2::WriteStats> {
    let mut head = [0u8; HEADER_LEN];
    bundle.read_exact_at(&mut head, 0).at(bundle_path)?;
    let end = bundle.metadata().at(bundle_path)?.len();
    let mut idx = vec![0u8; BUNDLX_LEN];
    bundlx.read_exact_at(&mut idx, 0).at(bundlx_path)?;
    let mut count4 = super::u64_at(&head, H_COUNT4);
    let mut max_tile = u32_at(&head, H_MAX_TILE);
    let mut records = Vec::new();
    let mut new_offsets = Vec::new();
    for (slot, tile) in tiles {
        let size = super::v2::check_tile_size(tile.len())
            .map_err(|e| bad_entry(*slot, e.to_string()))
            .in_file(bundle_path)?;
        if tile.is_empty() {
            return Err(Error::invalid(format!(
                "{}: refusing to store an empty tile",
                bundle_path.display()
            )));
        }
        let pos = index_pos(*slot);
        let old = u40_at(&idx, pos);
        let was_live = old >= HEADER_LEN as u64 && old + 4 <= end && {
            let mut s = [0u8; 4];
            bundle.read_exact_at(&mut s, old).is_ok() && u32::from_le_bytes(s) > 0
        };
        let was_new_here = new_offsets.iter().any(|(p, _)| *p == pos);
        if !was_live && !was_new_here {
            count4 += 4;
        }
        let off = end + records.len() as u64;
        records.extend_from_slice(&size.to_le_bytes());
        records.extend_from_slice(tile);
        new_offsets.push((pos, off));
        idx[pos..pos + OFFSET_BYTES].copy_from_slice(&off.to_le_bytes()[..OFFSET_BYTES]);
        max_tile = max_tile.max(size);
    }
    bundle.write_all_at(&records, end).at(bundle_path)?;
    if sync {
        bundle.sync_data().at(bundle_path)?;
    }
    let mut written = records.len() as u64;
    for (pos, off) in &new_offsets {
        bundlx
            .write_all_at(&off.to_le_bytes()[..OFFSET_BYTES], *pos as u64)
            .at(bundlx_path)?;
        written += OFFSET_BYTES as u64;
    }
    let new_end = end + records.len() as u64;
    let mut fields = [0u8; 24];
    fields[0..4].copy_from_slice(&max_tile.to_le_bytes());
    fields[4..8].copy_from_slice(&head[H_FIXED5..H_FIXED5 + 4]);
    fields[8..16].copy_from_slice(&count4.to_le_bytes());
    fields[16..24].copy_from_slice(&new_end.to_le_bytes());
    bundle
        .write_all_at(&fields, H_MAX_TILE as u64)
        .at(bundle_path)?;
    written += 24;
    if sync {
        bundlx.sync_data().at(bundlx_path)?;
        bundle.sync_data().at(bundle_path)?;
    }
    Ok(super::v2::WriteStats {
        tiles: tiles.len(),
        bytes_written: written,
    })
}

/// Marks slots empty (offset 0, as MapProxy does). Caller holds the bundle lock.
pub fn delete_tiles(
    bundlx: &File,
    bundlx_path: &Path,
    slots: &[Slot],
    sync: bool,
) -> Result<super::v2::WriteStats> {
    for s in slots {
        bundlx
            .write_all_at(&[0u8; OFFSET_BYTES], index_pos(*s) as u64)
            .at(bundlx_path)?;
    }
    if sync {
        bundlx.sync_data().at(bundlx_path)?;
    }
    Ok(super::v2::WriteStats {
        tiles: slots.len(),
        bytes_written: (slots.len() * OFFSET_BYTES) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn empty_pair_has_no_tiles_and_right_sizes() {
        let x = empty_bundlx();
        assert_eq!(x.len(), 81_952);
        let b = empty_bundle(128, 256);
        let v = V1Bundle::parse(&b, &x).unwrap();
        assert_eq!(v.slots().count(), 0);
        assert_eq!(u32_at(&b, H_ROW1), 255);
        assert_eq!(u32_at(&b, H_COL0), 256);
    }

    #[test]
    fn builder_round_trip_column_major() {
        let mut bld = Builder::new(Cursor::new(Vec::new()), 0, 0).unwrap();
        bld.add(Slot { row: 1, col: 0 }, b"r1c0").unwrap();
        bld.add(Slot { row: 0, col: 1 }, b"row0col1").unwrap();
        let (c, x, size) = bld.finish().unwrap();
        let b = c.into_inner();
        assert_eq!(b.len() as u64, size);
        let v = V1Bundle::parse(&b, &x).unwrap();
        assert_eq!(v.tile(Slot { row: 1, col: 0 }).unwrap(), Some(&b"r1c0"[..]));
        assert_eq!(
            v.tile(Slot { row: 0, col: 1 }).unwrap(),
            Some(&b"row0col1"[..])
        );
        assert_eq!(v.tile(Slot { row: 1, col: 1 }).unwrap(), None);
        // (row 1, col 0) is index 1 in column-major order.
        assert_eq!(v.offset(Slot { row: 1, col: 0 }), DATA_START);
        assert_eq!(super::super::u64_at(&b, H_COUNT4), 8);
    }

    #[test]
    fn short_bundlx_and_entry_past_eof() {
        let b = empty_bundle(0, 0);
        assert!(matches!(
            V1Bundle::parse(&b, &[0u8; 10]),
            Err((V1Part::Bundlx, FormatError::Truncated { .. }))
        ));
        let mut x = empty_bundlx();
        let p = index_pos(Slot { row: 2, col: 3 });
        x[p..p + 5].copy_from_slice(&1_000_000u64.to_le_bytes()[..5]);
        let v = V1Bundle::parse(&b, &x).unwrap();
        let e = v.tile(Slot { row: 2, col: 3 }).unwrap_err().to_string();
        assert!(
            e.contains("row 2 col 3") && e.contains("past the end"),
            "{e}"
        );
    }

    #[test]
    fn append_on_files() {
        let d = tempfile::tempdir().unwrap();
        let (bp, xp) = (d.path().join("a.bundle"), d.path().join("a.bundlx"));
        std::fs::write(&bp, empty_bundle(0, 0)).unwrap();
        std::fs::write(&xp, empty_bundlx()).unwrap();
        let rw = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap()
        };
        let (bf, xf) = (rw(&bp), rw(&xp));
        let s = Slot { row: 9, col: 1 };
        append_tiles(&bf, &bp, &xf, &xp, &[(s, b"one")], true).unwrap();
        append_tiles(&bf, &bp, &xf, &xp, &[(s, b"three")], true).unwrap();
        let (b, x) = (std::fs::read(&bp).unwrap(), std::fs::read(&xp).unwrap());
        let v = V1Bundle::parse(&b, &x).unwrap();
        assert_eq!(v.tile(s).unwrap(), Some(&b"three"[..]));
        assert_eq!(super::super::u64_at(&b, H_COUNT4), 4);
        assert_eq!(v.dead_bytes(), 7);
        delete_tiles(&xf, &xp, &[s], true).unwrap();
        let x = std::fs::read(&xp).unwrap();
        assert_eq!(V1Bundle::parse(&b, &x).unwrap().tile(s).unwrap(), None);
    }
}
