//! Compact V2 bundles (`.bundle` with the index inside): header, index math, reading from a byte slice
//! (a memory map) and writing (a new bundle in one pass, or durable appends to an existing one).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    bad_entry, u32_at, u64_at, FormatError, Slot, BUNDLE_DIM, BUNDLE_TILES, MAX_TILE_SIZE,
};
use crate::error::{Error, FormatContext, IoContext, Result};

/// Length of the fixed header (struct `<4I3Q6I`).
pub const HEADER_LEN: usize = 64;
/// Length of the tile index: 16384 entries of 8 bytes.
pub const INDEX_LEN: usize = BUNDLE_TILES * 8;
/// First byte after header and index; tile records start here.
pub const DATA_START: u64 = (HEADER_LEN + INDEX_LEN) as u64;
/// Each tile record is a u32 size followed by the tile bytes; the index points at the bytes.
pub const RECORD_PREFIX: u64 = 4;
/// Index value ArcGIS and MapProxy write for an empty slot (offset 4, size 0).
pub const EMPTY_ENTRY: u64 = 4;
/// Largest offset the 40-bit offset field holds.
pub const MAX_OFFSET: u64 = (1 << 40) - 1;

// Header field offsets (all little-endian).
const H_VERSION: usize = 0; // u32, 3
const H_RECORD_COUNT: usize = 4; // u32, 16384 (real ArcGIS files may say 0)
const H_MAX_TILE: usize = 8; // u32, largest tile size
const H_OFFSET_SIZE: usize = 12; // u32, 5 (bytes per offset)
const H_SLACK: usize = 16; // u64, slack space, 0
const H_FILE_SIZE: usize = 24; // u64, whole file size
const H_USER_HEADER_OFFSET: usize = 32; // u64, 40
const H_USER_HEADER_SIZE: usize = 40; // u32, 20 + index size
const H_LEGACY1: usize = 44; // u32, 3
const H_LEGACY2: usize = 48; // u32, 16 (real files may say 0)
const H_LEGACY3: usize = 52; // u32, 16384
const H_LEGACY4: usize = 56; // u32, 5
const H_INDEX_SIZE: usize = 60; // u32, 131072

const VERSION: u32 = 3;
const OFFSET_SIZE: u32 = 5;
const USER_HEADER_OFFSET: u64 = 40;

/// Position in the file of the index entry for `slot` (row-major).
pub fn index_pos(slot: Slot) -> usize {
    HEADER_LEN + 8 * (slot.row * BUNDLE_DIM + slot.col) as usize
}

/// One decoded index entry: low 40 bits offset of the tile bytes, high 24 bits their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry(pub u64);

impl IndexEntry {
    pub fn new(offset: u64, size: u32) -> Self {
        IndexEntry(offset | (u64::from(size) << 40))
    }
    pub fn offset(self) -> u64 {
        self.0 & MAX_OFFSET
    }
    pub fn size(self) -> u32 {
        (self.0 >> 40) as u32
    }
    pub fn is_empty(self) -> bool {
        self.size() == 0
    }
}

/// A fresh header as MapProxy and the spec write it.
pub fn header_bytes(max_tile: u32, file_size: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let mut put32 = |at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(H_VERSION, VERSION);
    put32(H_RECORD_COUNT, BUNDLE_TILES as u32);
    put32(H_MAX_TILE, max_tile);
    put32(H_OFFSET_SIZE, OFFSET_SIZE);
    put32(H_USER_HEADER_SIZE, 20 + INDEX_LEN as u32);
    put32(H_LEGACY1, 3);
    put32(H_LEGACY2, 16);
    put32(H_LEGACY3, BUNDLE_TILES as u32);
    put32(H_LEGACY4, 5);
    put32(H_INDEX_SIZE, INDEX_LEN as u32);
    h[H_SLACK..H_SLACK + 8].copy_from_slice(&0u64.to_le_bytes());
    h[H_FILE_SIZE..H_FILE_SIZE + 8].copy_from_slice(&file_size.to_le_bytes());
    h[H_USER_HEADER_OFFSET..H_USER_HEADER_OFFSET + 8]
        .copy_from_slice(&USER_HEADER_OFFSET.to_le_bytes());
    h
}

/// The bytes of an empty bundle: header plus an index of empty entries.
pub fn empty_bundle() -> Vec<u8> {
    let mut b = Vec::with_capacity(DATA_START as usize);
    b.extend_from_slice(&header_bytes(0, DATA_START));
    for _ in 0..BUNDLE_TILES {
        b.extend_from_slice(&EMPTY_ENTRY.to_le_bytes());
    }
    b
}

/// Checks the header fields that matter (as GDAL does; real files differ from the spec elsewhere).
pub fn check_header(data: &[u8]) -> Result<(), FormatError> {
    if data.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "V2 header",
            len: data.len() as u64,
            need: HEADER_LEN as u64,
        });
    }
    let version = u32_at(data, H_VERSION);
    let offset_size = u32_at(data, H_OFFSET_SIZE);
    let uho = u64_at(data, H_USER_HEADER_OFFSET);
    let index_size = u32_at(data, H_INDEX_SIZE);
    if version != VERSION
        || offset_size != OFFSET_SIZE
        || uho != USER_HEADER_OFFSET
        || index_size as usize != INDEX_LEN
    {
        return Err(FormatError::BadHeader(format!(
            "not a Compact V2 bundle (version {version}, offset size {offset_size}, \
             user header offset {uho}, index size {index_size}; expected 3, 5, 40, 131072)"
        )));
    }
    Ok(())
}

/// A read-only view of a whole V2 bundle's bytes.
#[derive(Clone, Copy)]
pub struct V2Bundle<'a> {
    data: &'a [u8],
}

impl<'a> V2Bundle<'a> {
    /// Validates header and index presence; individual entries are checked when read.
    pub fn parse(data: &'a [u8]) -> Result<Self, FormatError> {
        check_header(data)?;
        if (data.len() as u64) < DATA_START {
            return Err(FormatError::Truncated {
                what: "V2 index",
                len: data.len() as u64,
                need: DATA_START,
            });
        }
        Ok(V2Bundle { data })
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries().next().is_none()
    }

    /// Largest tile size the header claims.
    pub fn header_max_tile(&self) -> u32 {
        u32_at(self.data, H_MAX_TILE)
    }

    /// File size the header claims.
    pub fn header_file_size(&self) -> u64 {
        u64_at(self.data, H_FILE_SIZE)
    }

    pub fn entry(&self, slot: Slot) -> IndexEntry {
        IndexEntry(u64_at(self.data, index_pos(slot)))
    }

    /// Checks an entry against the file: inside the data area, inside the file, size prefix equal.
    /// Returns the byte range of the tile, or None for an empty slot.
    pub fn tile_range(&self, slot: Slot) -> Result<Option<std::ops::Range<usize>>, FormatError> {
        let e = self.entry(slot);
        if e.is_empty() {
            return Ok(None);
        }
        let (off, size) = (e.offset(), u64::from(e.size()));
        if off < DATA_START + RECORD_PREFIX {
            return Err(bad_entry(
                slot,
                format!("offset {off} points into the header/index (data starts at {DATA_START})"),
            ));
        }
        if off + size > self.len() {
            return Err(bad_entry(
                slot,
                format!(
                    "tile of {size} bytes at offset {off} runs past the end of the file ({} bytes)",
                    self.len()
                ),
            ));
        }
        let prefix = u32_at(self.data, (off - RECORD_PREFIX) as usize);
        if u64::from(prefix) != size {
            return Err(bad_entry(
                slot,
                format!(
                    "record size {prefix} at offset {} disagrees with index size {size}",
                    off - 4
                ),
            ));
        }
        Ok(Some(off as usize..(off + size) as usize))
    }

    /// The bytes of the tile at `slot`, checked.
    pub fn tile(&self, slot: Slot) -> Result<Option<&'a [u8]>, FormatError> {
        Ok(self.tile_range(slot)?.map(|r| &self.data[r]))
    }

    /// Non-empty entries in row-major order (unchecked; use `tile_range` to validate).
    pub fn entries(&self) -> impl Iterator<Item = (Slot, IndexEntry)> + 'a {
        let data = self.data;
        Slot::all().filter_map(move |s| {
            let e = IndexEntry(u64_at(data, index_pos(s)));
            (!e.is_empty()).then_some((s, e))
        })
    }

    /// Bytes not used by header, index or live tile records (overwritten or deleted tiles).
    pub fn dead_bytes(&self) -> u64 {
        let live: u64 = self
            .entries()
            .map(|(_, e)| u64::from(e.size()) + RECORD_PREFIX)
            .sum();
        self.len().saturating_sub(DATA_START + live)
    }
}

/// Writes a new bundle in one pass: records as they come, header and index at the end.
pub struct Builder<W: Write + Seek> {
    out: W,
    index: Vec<u64>,
    pos: u64,
    max_tile: u32,
    tiles: usize,
}

impl<W: Write + Seek> Builder<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(&empty_bundle())?;
        Ok(Builder {
            out,
            index: vec![EMPTY_ENTRY; BUNDLE_TILES],
            pos: DATA_START,
            max_tile: 0,
            tiles: 0,
        })
    }

    /// Adds (or replaces: the last one wins) the tile at `slot`.
    pub fn add(&mut self, slot: Slot, tile: &[u8]) -> std::io::Result<()> {
        let size = check_tile_size(tile.len()).map_err(std::io::Error::other)?;
        let off = self.pos + RECORD_PREFIX;
        if off + u64::from(size) > MAX_OFFSET {
            return Err(std::io::Error::other(FormatError::BundleTooLarge));
        }
        self.out.write_all(&size.to_le_bytes())?;
        self.out.write_all(tile)?;
        let i = (slot.row * BUNDLE_DIM + slot.col) as usize;
        if self.index[i] == EMPTY_ENTRY {
            self.tiles += 1;
        }
        self.index[i] = IndexEntry::new(off, size).0;
        self.pos = off + u64::from(size);
        self.max_tile = self.max_tile.max(size);
        Ok(())
    }

    pub fn tiles(&self) -> usize {
        self.tiles
    }

    /// Writes header and index; returns the writer (not synced) and the file size.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        let mut head = Vec::with_capacity(DATA_START as usize);
        head.extend_from_slice(&header_bytes(self.max_tile, self.pos));
        for e in &self.index {
            head.extend_from_slice(&e.to_le_bytes());
        }
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&head)?;
        self.out.flush()?;
        Ok((self.out, self.pos))
    }
}

pub(crate) fn check_tile_size(len: usize) -> Result<u32, FormatError> {
    if len > MAX_TILE_SIZE {
        Err(FormatError::TileTooLarge(len))
    } else {
        Ok(len as u32)
    }
}

/// What an append or delete did, for write-amplification accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub tiles: usize,
    pub bytes_written: u64,
}

/// Durably appends tiles to an existing bundle opened read-write (caller holds the bundle lock).
///
/// Order: all records at the end of the file in one write, fdatasync, then the index entries
/// (adjacent ones coalesced) and the header's largest-tile/file-size fields, fdatasync again.
/// A crash leaves either the old or the new entry for every tile, never a dangling one.
/// With several tiles for one slot, the last wins.
pub fn append_tiles(
    file: &File,
    path: &Path,
    tiles: &[(Slot, &[u8])],
    sync: bool,
) -> Result<WriteStats> {
    if tiles.is_empty() {
        return Ok(WriteStats::default());
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0).at(path)?;
    check_header(&head).in_file(path)?;
    let end = file.metadata().at(path)?.len();
    if end < DATA_START {
        return Err(Error::format(
            path,
            FormatError::Truncated {
                what: "V2 index",
                len: end,
                need: DATA_START,
            },
        ));
    }
    let total: usize = tiles
        .iter()
        .map(|(_, t)| t.len() + RECORD_PREFIX as usize)
        .sum();
    if end + total as u64 > MAX_OFFSET {
        return Err(Error::format(path, FormatError::BundleTooLarge));
    }
    let mut records = Vec::with_capacity(total);
    let mut entries: Vec<(usize, u64)> = Vec::with_capacity(tiles.len());
    let mut max_tile = u32_at(&head, H_MAX_TILE);
    for (slot, tile) in tiles {
        let size = check_tile_size(tile.len())
            .map_err(|e| bad_entry(*slot, e.to_string()))
            .in_file(path)?;
        records.extend_from_slice(&size.to_le_bytes());
        let off = end + records.len() as u64;
        records.extend_from_slice(tile);
        entries.push((index_pos(*slot), IndexEntry::new(off, size).0));
        max_tile = max_tile.max(size);
    }
    file.write_all_at(&records, end).at(path)?;
    if sync {
        file.sync_data().at(path)?;
    }
    let new_end = end + records.len() as u64;
    let mut written = records.len() as u64 + write_entries(file, path, entries)?;
    let mut fields = [0u8; 24];
    fields[0..4].copy_from_slice(&max_tile.to_le_bytes());
    fields[4..16].copy_from_slice(&head[12..24]);
    fields[16..24].copy_from_slice(&new_end.to_le_bytes());
    file.write_all_at(&fields, H_MAX_TILE as u64).at(path)?;
    written += fields.len() as u64;
    if sync {
        file.sync_data().at(path)?;
    }
    Ok(WriteStats {
        tiles: tiles.len(),
        bytes_written: written,
    })
}

/// Marks slots empty (the tile bytes become dead space). Caller holds the bundle lock.
pub fn delete_tiles(file: &File, path: &Path, slots: &[Slot], sync: bool) -> Result<WriteStats> {
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0).at(path)?;
    check_header(&head).in_file(path)?;
    let entries = slots.iter().map(|s| (index_pos(*s), EMPTY_ENTRY)).collect();
    let written = write_entries(file, path, entries)?;
    if sync {
        file.sync_data().at(path)?;
    }
    Ok(WriteStats {
        tiles: slots.len(),
        bytes_written: written,
    })
}

/// Writes index entries, coalescing adjacent ones into one write. Later duplicates win.
fn write_entries(file: &File, path: &Path, mut entries: Vec<(usize, u64)>) -> Result<u64> {
    // Stable sort keeps the order of duplicates; keep the last of each position.
    entries.sort_by_key(|e| e.0);
    entries.reverse();
    entries.dedup_by_key(|e| e.0);
    entries.reverse();
    let mut written = 0u64;
    let mut i = 0;
    while i < entries.len() {
        let start = entries[i].0;
        let mut buf = entries[i].1.to_le_bytes().to_vec();
        let mut j = i + 1;
        while j < entries.len() && entries[j].0 == start + 8 * (j - i) {
            buf.extend_from_slice(&entries[j].1.to_le_bytes());
            j += 1;
        }
        file.write_all_at(&buf, start as u64).at(path)?;
        written += buf.len() as u64;
        i = j;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn empty_bundle_parses_and_has_no_tiles() {
        let b = empty_bundle();
        assert_eq!(b.len() as u64, DATA_START);
        let v = V2Bundle::parse(&b).unwrap();
        assert!(v.is_empty());
        assert_eq!(v.dead_bytes(), 0);
        assert_eq!(v.tile(Slot { row: 5, col: 7 }).unwrap(), None);
    }

    #[test]
    fn builder_round_trip_and_last_wins() {
        let mut b = Builder::new(Cursor::new(Vec::new())).unwrap();
        b.add(Slot { row: 0, col: 0 }, b"first").unwrap();
        b.add(Slot { row: 127, col: 3 }, b"second").unwrap();
        b.add(Slot { row: 0, col: 0 }, b"again").unwrap();
        assert_eq!(b.tiles(), 2);
        let (c, size) = b.finish().unwrap();
        let bytes = c.into_inner();
        assert_eq!(bytes.len() as u64, size);
        let v = V2Bundle::parse(&bytes).unwrap();
        assert_eq!(
            v.tile(Slot { row: 0, col: 0 }).unwrap(),
            Some(&b"again"[..])
        );
        assert_eq!(
            v.tile(Slot { row: 127, col: 3 }).unwrap(),
            Some(&b"second"[..])
        );
        assert_eq!(v.header_file_size(), size);
        assert_eq!(v.header_max_tile(), 6);
        assert_eq!(v.dead_bytes(), 4 + 5);
        // First record starts right after the index, as in ArcGIS files.
        assert_eq!(
            v.entry(Slot { row: 127, col: 3 }).offset(),
            DATA_START + 4 + 5 + 4
        );
    }

    #[test]
    fn entry_past_eof_is_an_error() {
        let mut b = empty_bundle();
        let pos = index_pos(Slot { row: 1, col: 2 });
        b[pos..pos + 8].copy_from_slice(&IndexEntry::new(DATA_START + 4, 100).0.to_le_bytes());
        let v = V2Bundle::parse(&b).unwrap();
        let err = v.tile(Slot { row: 1, col: 2 }).unwrap_err();
        assert!(err.to_string().contains("row 1 col 2"), "{err}");
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    #[test]
    fn bad_header_and_truncation() {
        assert!(matches!(
            V2Bundle::parse(&[0u8; 10]),
            Err(FormatError::Truncated { .. })
        ));
        let mut b = empty_bundle();
        b[0] = 2;
        assert!(matches!(
            V2Bundle::parse(&b),
            Err(FormatError::BadHeader(_))
        ));
        let b = empty_bundle();
        assert!(matches!(
            V2Bundle::parse(&b[..1000]),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn too_large_tile_is_refused() {
        let mut b = Builder::new(Cursor::new(Vec::new())).unwrap();
        let big = vec![0u8; MAX_TILE_SIZE + 1];
        assert!(b.add(Slot { row: 0, col: 0 }, &big).is_err());
    }

    #[test]
    fn append_and_delete_on_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("R0000C0000.bundle");
        std::fs::write(&p, empty_bundle()).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let s = Slot { row: 3, col: 4 };
        let t = Slot { row: 3, col: 5 };
        let st = append_tiles(&f, &p, &[(s, b"abc"), (t, b"defg"), (s, b"xyz!!")], true).unwrap();
        assert_eq!(st.tiles, 3);
        let bytes = std::fs::read(&p).unwrap();
        let v = V2Bundle::parse(&bytes).unwrap();
        assert_eq!(v.tile(s).unwrap(), Some(&b"xyz!!"[..]));
        assert_eq!(v.tile(t).unwrap(), Some(&b"defg"[..]));
        assert_eq!(v.header_file_size(), bytes.len() as u64);
        assert_eq!(v.header_max_tile(), 5);
        delete_tiles(&f, &p, &[t], true).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let v = V2Bundle::parse(&bytes).unwrap();
        assert_eq!(v.tile(t).unwrap(), None);
        assert_eq!(v.entries().count(), 1);
    }
}
