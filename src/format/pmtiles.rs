//! PMTiles v3 facts (the specification: github.com/protomaps/PMTiles, `spec/v3/spec.md`): the
//! 127-byte header, tile ids on a Hilbert curve, and the directory codec. Pure functions over
//! bytes; the file itself (mapping it, writing it) is the storage's (`cache::store::pmtiles`).
//!
//! - **Header** (127 bytes, little-endian): magic `PMTiles`, version 3, then offset and length
//!   (u64 each) of the root directory, the metadata (JSON), the leaf directories and the tile
//!   data; the counts of addressed tiles, tile entries and tile contents (u64 each); the
//!   clustered flag, the internal (directory and metadata) compression, the tile compression,
//!   the tile type, min and max zoom (u8 each); the bounds as min lon, min lat, max lon, max lat
//!   (i32, degrees × 10⁷); the center zoom (u8) and center lon, lat (i32 × 10⁷).
//! - **Tile id**: the tiles of all lower zooms come first (4⁰ + … + 4^(z−1) of them), then the
//!   position of (x, y) on the Hilbert curve of zoom z. Rows (y) count from the top, as XYZ and
//!   Esri's rows of a Web Mercator cache do. An aligned 2^k × 2^k block of a zoom (a bundle:
//!   k = 7) is a contiguous range of 4^k ids.
//! - **Directory**: entries (tile id, offset, length, run length) ascending by tile id, written
//!   as a varint count, the tile ids as deltas, the run lengths, the lengths, then the offsets
//!   (0 for "right after the previous entry", else offset + 1); the whole then compressed by the
//!   internal compression. An entry of run length 0 points at a leaf directory (its offset and
//!   length in the leaf directory section); otherwise it covers `run_length` consecutive tile
//!   ids with the same bytes (offset and length in the tile data section).
//! - The header and the root directory together fit the first 16,384 bytes.

use std::io::{Read, Write};

use crate::format::conf::{TileFormat, TileScheme};
use crate::format::sniff::ImageKind;

/// The metadata key that says a PNG-typed file holds a MIXED cache's tiles (JPEG and PNG, each as
/// it is); bundlefs writes it and reads it back, other readers ignore it.
pub const TILE_FORMAT_KEY: &str = "bundlefs:tile_format";
/// The header's length in bytes.
pub const HEADER_LEN: usize = 127;
/// Header and root directory together fit in this many bytes (so one read of 16 KiB gets both).
pub const ROOT_LIMIT: usize = 16_384;
const MAGIC: &[u8; 7] = b"PMTiles";
/// The deepest zoom whose tile ids fit in 64 bits.
pub const MAX_ZOOM: u8 = 31;

/// Compression of the directories and metadata (internal) or of the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Unknown = 0,
    None = 1,
    Gzip = 2,
    Brotli = 3,
    Zstd = 4,
}

impl Compression {
    fn of(v: u8) -> Option<Compression> {
        Some(match v {
            0 => Compression::Unknown,
            1 => Compression::None,
            2 => Compression::Gzip,
            3 => Compression::Brotli,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Unknown => "unknown",
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Brotli => "brotli",
            Compression::Zstd => "zstd",
        }
    }
}

/// The tile type of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileType {
    Unknown = 0,
    Mvt = 1,
    Png = 2,
    Jpeg = 3,
    Webp = 4,
    Avif = 5,
}

impl TileType {
    fn of(v: u8) -> TileType {
        match v {
            1 => TileType::Mvt,
            2 => TileType::Png,
            3 => TileType::Jpeg,
            4 => TileType::Webp,
            5 => TileType::Avif,
            _ => TileType::Unknown,
        }
    }

    /// Its name in messages and the metadata's `format`.
    pub fn name(self) -> &'static str {
        match self {
            TileType::Unknown => "unknown",
            TileType::Mvt => "pbf",
            TileType::Png => "png",
            TileType::Jpeg => "jpg",
            TileType::Webp => "webp",
            TileType::Avif => "avif",
        }
    }
}

/// The 127-byte header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub root_offset: u64,
    pub root_length: u64,
    pub metadata_offset: u64,
    pub metadata_length: u64,
    pub leaf_offset: u64,
    pub leaf_length: u64,
    pub data_offset: u64,
    pub data_length: u64,
    pub addressed_tiles: u64,
    pub tile_entries: u64,
    pub tile_contents: u64,
    pub clustered: bool,
    pub internal_compression: Compression,
    pub tile_compression: Compression,
    pub tile_type: TileType,
    pub min_zoom: u8,
    pub max_zoom: u8,
    /// min lon, min lat, max lon, max lat in degrees × 10⁷.
    pub bounds_e7: [i32; 4],
    pub center_zoom: u8,
    /// lon, lat in degrees × 10⁷.
    pub center_e7: [i32; 2],
}

impl Header {
    /// The header at the start of `b`. Errors (one line, without the file's name): fewer than
    /// 127 bytes, another magic, a version other than 3, a compression value the spec does not
    /// define, a section that lies past `file_len`.
    pub fn parse(b: &[u8], file_len: u64) -> Result<Header, String> {
        if b.len() >= 7 && &b[..7] != MAGIC {
            return Err(
                "not a PMTiles file (it does not begin with the magic \"PMTiles\")".to_string(),
            );
        }
        if b.len() < 8 {
            return Err(format!(
                "truncated PMTiles header ({} bytes of {HEADER_LEN})",
                b.len()
            ));
        }
        if b[7] != 3 {
            return Err(format!(
                "PMTiles version {}: bundlefs reads PMTiles version 3 only (convert it with \
                 `pmtiles convert`)",
                b[7]
            ));
        }
        if b.len() < HEADER_LEN {
            return Err(format!(
                "truncated PMTiles header ({} bytes of {HEADER_LEN})",
                b.len()
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let i32_at = |i: usize| i32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let comp = |i: usize, what: &str| {
            Compression::of(b[i])
                .ok_or_else(|| format!("unknown {what} compression {} in the PMTiles header", b[i]))
        };
        let h = Header {
            root_offset: u64_at(8),
            root_length: u64_at(16),
            metadata_offset: u64_at(24),
            metadata_length: u64_at(32),
            leaf_offset: u64_at(40),
            leaf_length: u64_at(48),
            data_offset: u64_at(56),
            data_length: u64_at(64),
            addressed_tiles: u64_at(72),
            tile_entries: u64_at(80),
            tile_contents: u64_at(88),
            clustered: b[96] == 1,
            internal_compression: comp(97, "internal")?,
            tile_compression: comp(98, "tile")?,
            tile_type: TileType::of(b[99]),
            min_zoom: b[100],
            max_zoom: b[101],
            bounds_e7: [i32_at(102), i32_at(106), i32_at(110), i32_at(114)],
            center_zoom: b[118],
            center_e7: [i32_at(119), i32_at(123)],
        };
        for (what, off, len) in [
            ("root directory", h.root_offset, h.root_length),
            ("metadata", h.metadata_offset, h.metadata_length),
            ("leaf directories", h.leaf_offset, h.leaf_length),
            ("tile data", h.data_offset, h.data_length),
        ] {
            if off.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(format!(
                    "the PMTiles header puts the {what} at bytes {off}+{len}, past the end of \
                     the file ({file_len} bytes): a truncated or damaged file"
                ));
            }
        }
        Ok(h)
    }

    /// The 127 bytes of the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..7].copy_from_slice(MAGIC);
        b[7] = 3;
        let u64s = [
            self.root_offset,
            self.root_length,
            self.metadata_offset,
            self.metadata_length,
            self.leaf_offset,
            self.leaf_length,
            self.data_offset,
            self.data_length,
            self.addressed_tiles,
            self.tile_entries,
            self.tile_contents,
        ];
        for (i, v) in u64s.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[96] = u8::from(self.clustered);
        b[97] = self.internal_compression as u8;
        b[98] = self.tile_compression as u8;
        b[99] = self.tile_type as u8;
        b[100] = self.min_zoom;
        b[101] = self.max_zoom;
        for (i, v) in self.bounds_e7.iter().enumerate() {
            b[102 + 4 * i..106 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[118] = self.center_zoom;
        b[119..123].copy_from_slice(&self.center_e7[0].to_le_bytes());
        b[123..127].copy_from_slice(&self.center_e7[1].to_le_bytes());
        b
    }
}

/// The number of tile ids of all zooms below `z`: (4^z − 1) / 3, the first id of zoom `z`.
pub fn zoom_base(z: u8) -> u64 {
    ((1u128 << (2 * u32::from(z))) - 1) as u64 / 3
}

/// The tile id of (z, x, y), y counted from the top; None outside the zoom's 2^z columns and
/// rows or past zoom 31.
pub fn tile_id(z: u8, x: u32, y: u32) -> Option<u64> {
    if z > MAX_ZOOM || u64::from(x) >= 1u64 << z || u64::from(y) >= 1u64 << z {
        return None;
    }
    let n = 1u64 << z;
    let (mut x, mut y) = (u64::from(x), u64::from(y));
    let mut d = 0u64;
    let mut s = n / 2;
    while s > 0 {
        let rx = u64::from(x & s != 0);
        let ry = u64::from(y & s != 0);
        d += s * s * ((3 * rx) ^ ry);
        // Turn the quadrant so the curve inside it runs as the whole one does (only the bits
        // below `s` matter from here on).
        if ry == 0 {
            if rx == 1 {
                x = n - 1 - x;
                y = n - 1 - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s /= 2;
    }
    Some(zoom_base(z) + d)
}

/// The (z, x, y) of tile id `id` (y from the top); None past zoom 31.
pub fn zxy(id: u64) -> Option<(u8, u32, u32)> {
    let mut z = 0u8;
    while z <= MAX_ZOOM && zoom_base(z + 1) <= id {
        z += 1;
    }
    if z > MAX_ZOOM {
        return None;
    }
    let mut d = id - zoom_base(z);
    let (mut x, mut y) = (0u64, 0u64);
    let mut s = 1u64;
    while s < (1u64 << z) {
        let rx = 1 & (d / 2);
        let ry = 1 & (d ^ rx);
        if ry == 0 {
            if rx == 1 {
                x = s - 1 - x;
                y = s - 1 - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        x += s * rx;
        y += s * ry;
        d /= 4;
        s *= 2;
    }
    Some((z, x as u32, y as u32))
}

/// The range of tile ids of the aligned 2^k × 2^k block (k = `min(7, z)`: a bundle) holding
/// (z, x, y): contiguous on the Hilbert curve.
pub fn block_range(z: u8, x: u32, y: u32) -> Option<std::ops::Range<u64>> {
    let id = tile_id(z, x, y)?;
    let k = 2 * u32::from(z.min(7));
    let base = zoom_base(z);
    let start = base + (((id - base) >> k) << k);
    Some(start..start + (1u64 << k))
}

/// One directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub tile_id: u64,
    /// In the tile data section (tiles) or the leaf directory section (leaves).
    pub offset: u64,
    pub length: u32,
    /// Consecutive tile ids with these bytes; 0 for a leaf directory.
    pub run_length: u32,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*pos)
            .ok_or("a directory ends inside a number (truncated)")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a directory holds a number longer than 64 bits".to_string())
}

/// The directory of `entries` (ascending by tile id), uncompressed.
pub fn encode_directory(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 6 + 4);
    put_varint(&mut out, entries.len() as u64);
    let mut last = 0;
    for e in entries {
        put_varint(&mut out, e.tile_id - last);
        last = e.tile_id;
    }
    for e in entries {
        put_varint(&mut out, u64::from(e.run_length));
    }
    for e in entries {
        put_varint(&mut out, u64::from(e.length));
    }
    for (i, e) in entries.iter().enumerate() {
        let follows = i > 0 && {
            let p = &entries[i - 1];
            e.offset == p.offset + u64::from(p.length)
        };
        put_varint(&mut out, if follows { 0 } else { e.offset + 1 });
    }
    out
}

/// The entries of an uncompressed directory. Errors: truncated, more entries than bytes, tile
/// ids past 64 bits, a length or run length past 32 bits, an offset 0 on the first entry.
pub fn decode_directory(b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut pos = 0;
    let n = get_varint(b, &mut pos)?;
    // Each entry takes at least 4 bytes: a count beyond that is a damaged directory.
    if n > (b.len() as u64) / 4 + 1 {
        return Err(format!(
            "a directory says it holds {n} entries in {} bytes",
            b.len()
        ));
    }
    let n = n as usize;
    let mut entries = vec![
        Entry {
            tile_id: 0,
            offset: 0,
            length: 0,
            run_length: 0
        };
        n
    ];
    let mut last = 0u64;
    for e in entries.iter_mut() {
        last = last
            .checked_add(get_varint(b, &mut pos)?)
            .ok_or("a directory's tile ids run past 64 bits")?;
        e.tile_id = last;
    }
    let small = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| format!("a directory entry has a {what} of {v}"))
    };
    for e in entries.iter_mut() {
        e.run_length = small(get_varint(b, &mut pos)?, "run length")?;
    }
    for e in entries.iter_mut() {
        e.length = small(get_varint(b, &mut pos)?, "length")?;
    }
    for i in 0..n {
        let v = get_varint(b, &mut pos)?;
        entries[i].offset = if v == 0 {
            if i == 0 {
                return Err("the first directory entry has no offset".to_string());
            }
            let p = entries[i - 1];
            p.offset
                .checked_add(u64::from(p.length))
                .ok_or("a directory's offsets run past 64 bits")?
        } else {
            v - 1
        };
    }
    Ok(entries)
}

/// `b` compressed by gzip (the internal compression bundlefs writes).
pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// `b` decompressed by `c` (none or gzip; at most `limit` bytes out). Errors: brotli, zstd or
/// unknown compression (named), a broken gzip stream, more than `limit` bytes.
pub fn decompress(c: Compression, b: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    match c {
        Compression::None => Ok(b.to_vec()),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(b)
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("a gzip'ed directory or metadata does not inflate: {e}"))?;
            if out.len() as u64 > limit {
                return Err(format!(
                    "a directory or metadata inflates past {limit} bytes"
                ));
            }
            Ok(out)
        }
        other => Err(format!(
            "internal compression {}: bundlefs reads PMTiles whose directories are gzip'ed or \
             not compressed",
            other.name()
        )),
    }
}

/// The root directory and the leaf directories (both gzip'ed) of `entries` (ascending by tile
/// id): all in the root when it fits beside the header in [`ROOT_LIMIT`] bytes, else leaves of
/// `n` entries each (n from 4096, doubled until the root of leaf pointers fits).
pub fn build_directories(entries: &[Entry]) -> (Vec<u8>, Vec<u8>) {
    let root = gzip(&encode_directory(entries));
    if root.len() + HEADER_LEN <= ROOT_LIMIT {
        return (root, Vec::new());
    }
    let mut leaf_size = 4096;
    loop {
        let mut leaves = Vec::new();
        let mut pointers = Vec::new();
        for chunk in entries.chunks(leaf_size) {
            let leaf = gzip(&encode_directory(chunk));
            pointers.push(Entry {
                tile_id: chunk[0].tile_id,
                offset: leaves.len() as u64,
                length: leaf.len() as u32,
                run_length: 0,
            });
            leaves.extend_from_slice(&leaf);
        }
        let root = gzip(&encode_directory(&pointers));
        if root.len() + HEADER_LEN <= ROOT_LIMIT {
            return (root, leaves);
        }
        leaf_size *= 2;
    }
}

/// Why `s` cannot be kept in PMTiles, or None when it can: the same rules as MBTiles
/// ([`crate::format::mbtiles::refusal`]): Web Mercator zoom levels, 256 px tiles, the origin at
/// the top left of the Web Mercator square.
pub fn refusal(s: &TileScheme) -> Option<String> {
    crate::format::mbtiles::refusal(s).map(|why| why.replace("MBTiles", "PMTiles"))
}

/// The tile type of tiles of `f`, or why PMTiles cannot say it. A MIXED cache is written as
/// PNG with each tile's bytes as they are (see doc/formats.md).
pub fn tile_type(f: &TileFormat) -> Result<TileType, String> {
    match f {
        TileFormat::Png
        | TileFormat::Png8
        | TileFormat::Png24
        | TileFormat::Png32
        | TileFormat::Mixed => Ok(TileType::Png),
        TileFormat::Jpeg => Ok(TileType::Jpeg),
        other => match other.image_kind() {
            Some(ImageKind::Pbf) => Ok(TileType::Mvt),
            _ => Err(format!(
                "PMTiles holds png, jpg, webp, avif or mvt tiles; {} tiles have no PMTiles tile type",
                other.name()
            )),
        },
    }
}

/// The tile format of tiles of type `t`. Errors: a type bundlefs does not keep, named.
pub fn tile_format(t: TileType) -> Result<TileFormat, String> {
    match t {
        TileType::Png => Ok(TileFormat::Png),
        TileType::Jpeg => Ok(TileFormat::Jpeg),
        TileType::Mvt => Ok(TileFormat::Other("pbf".into())),
        other => Err(format!(
            "tile type {}: bundlefs reads PMTiles of png, jpg or mvt tiles",
            other.name()
        )),
    }
}

/// Degrees as the header keeps them (× 10⁷, rounded).
pub fn e7(deg: f64) -> i32 {
    (deg * 1e7).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_hilbert_ids() {
        assert_eq!(tile_id(0, 0, 0), Some(0));
        assert_eq!(tile_id(1, 0, 0), Some(1));
        assert_eq!(tile_id(1, 0, 1), Some(2));
        assert_eq!(tile_id(1, 1, 1), Some(3));
        assert_eq!(tile_id(1, 1, 0), Some(4));
        assert_eq!(zoom_base(2), 5);
        assert_eq!(tile_id(2, 0, 0), Some(5));
        assert_eq!(tile_id(1, 2, 0), None);
        assert_eq!(tile_id(32, 0, 0), None);
        // Values of the reference implementation (pmtiles PyPI `zxy_to_tileid`).
        assert_eq!(tile_id(3, 3, 0), Some(26));
        assert_eq!(tile_id(20, 1, 0), Some(366503875926));
        assert_eq!(tile_id(20, 1000, 2000), Some(366507023509));
        assert_eq!(tile_id(12, 654, 1583), Some(8921942));
        assert_eq!(tile_id(31, 0, 0), Some(zoom_base(31)));
        for z in 0..8u8 {
            let n = 1u32 << z;
            let mut seen = std::collections::BTreeSet::new();
            for x in 0..n {
                for y in 0..n {
                    let id = tile_id(z, x, y).unwrap();
                    assert_eq!(zxy(id), Some((z, x, y)));
                    assert!(seen.insert(id));
                }
            }
            assert_eq!(*seen.first().unwrap(), zoom_base(z));
            assert_eq!(*seen.last().unwrap(), zoom_base(z + 1) - 1);
        }
        assert_eq!(zxy(zoom_base(31)), Some((31, 0, 0)));
    }

    #[test]
    fn a_bundle_is_one_range_of_ids() {
        let r = block_range(9, 130, 300).unwrap();
        assert_eq!(r.end - r.start, 16_384);
        for x in 128..256 {
            for y in 256..384 {
                assert!(r.contains(&tile_id(9, x, y).unwrap()));
            }
        }
        assert_eq!(block_range(3, 5, 5).unwrap(), zoom_base(3)..zoom_base(4));
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        let h = Header {
            root_offset: 127,
            root_length: 10,
            metadata_offset: 137,
            metadata_length: 5,
            leaf_offset: 142,
            leaf_length: 0,
            data_offset: 142,
            data_length: 8,
            addressed_tiles: 3,
            tile_entries: 2,
            tile_contents: 1,
            clustered: true,
            internal_compression: Compression::Gzip,
            tile_compression: Compression::None,
            tile_type: TileType::Png,
            min_zoom: 0,
            max_zoom: 3,
            bounds_e7: [-1_800_000_000, -850_511_287, 1_800_000_000, 850_511_287],
            center_zoom: 0,
            center_e7: [0, 0],
        };
        let b = h.to_bytes();
        assert_eq!(Header::parse(&b, 150).unwrap(), h);
        assert!(Header::parse(&b, 149).unwrap_err().contains("past the end"));
        assert!(Header::parse(&b[..100], 150)
            .unwrap_err()
            .contains("truncated"));
        let mut v2 = b;
        v2[7] = 2;
        assert!(Header::parse(&v2, 150).unwrap_err().contains("version 2"));
        let mut junk = b;
        junk[0] = b'X';
        assert!(Header::parse(&junk, 150).unwrap_err().contains("magic"));
        let mut comp = b;
        comp[97] = 9;
        assert!(Header::parse(&comp, 150)
            .unwrap_err()
            .contains("unknown internal compression"));
        assert!(decompress(Compression::Brotli, b"", 10)
            .unwrap_err()
            .contains("brotli"));
    }

    #[test]
    fn big_directories_go_to_leaves() {
        let entries: Vec<Entry> = (0..200_000u64)
            .map(|i| Entry {
                tile_id: i * 3,
                offset: i * 1000 + (i % 7) * 13,
                length: 1000 + (i % 97) as u32,
                run_length: 1 + (i % 3) as u32,
            })
            .collect();
        let (root, leaves) = build_directories(&entries);
        assert!(root.len() + HEADER_LEN <= ROOT_LIMIT);
        assert!(!leaves.is_empty());
        let pointers =
            decode_directory(&decompress(Compression::Gzip, &root, 1 << 30).unwrap()).unwrap();
        let mut back = Vec::new();
        for p in &pointers {
            assert_eq!(p.run_length, 0);
            let leaf = &leaves[p.offset as usize..(p.offset + u64::from(p.length)) as usize];
            back.extend(
                decode_directory(&decompress(Compression::Gzip, leaf, 1 << 30).unwrap()).unwrap(),
            );
        }
        assert_eq!(back, entries);
    }

    #[test]
    fn damaged_directories_are_errors() {
        assert!(decode_directory(&[]).is_err());
        assert!(decode_directory(&[0xff; 12]).is_err());
        assert!(decode_directory(&[2, 1, 1, 1, 1, 5, 5, 0, 0]).is_err());
        assert_eq!(decode_directory(&[0]).unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn directories_round_trip(
            raw in proptest::collection::vec(
                (0u64..1_000_000, 0u64..1 << 40, 0u32..u32::MAX, 0u32..1000, any::<bool>()),
                0..300,
            )
        ) {
            let mut id = 0u64;
            let mut entries = Vec::new();
            for (gap, offset, length, run, follow) in raw {
                id += gap;
                let offset = match (follow, entries.last()) {
                    (true, Some(p @ Entry { .. })) => p.offset + u64::from(p.length),
                    _ => offset,
                };
                entries.push(Entry { tile_id: id, offset, length, run_length: run });
            }
            let b = encode_directory(&entries);
            prop_assert_eq!(decode_directory(&b).unwrap(), entries.clone());
            let z = decompress(Compression::Gzip, &gzip(&b), 1 << 30).unwrap();
            prop_assert_eq!(z, b);
        }

        #[test]
        fn tile_ids_round_trip(z in 0u8..=31, x in any::<u32>(), y in any::<u32>()) {
            let n = 1u64 << z;
            let (x, y) = ((u64::from(x) % n) as u32, (u64::from(y) % n) as u32);
            let id = tile_id(z, x, y).unwrap();
            prop_assert_eq!(zxy(id), Some((z, x, y)));
        }
    }
}
