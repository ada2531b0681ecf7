//! An open bundle (V1 pair or V2 file) mapped read-only with memmap2, plus what identifies the
//! version of the file it mapped, so a change by another writer is noticed and the bundle remapped.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, FormatContext, IoContext, Result};
use crate::format::v1::{V1Bundle, V1Part};
use crate::format::v2::V2Bundle;
use crate::format::{BundleId, FormatError, Slot};

/// Identity and version of a file: a change of any field means the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path` (None if there is none). Errors name the path.
    pub fn of(path: &Path) -> Result<Option<FileStamp>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStamp::from_meta(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The modification time the stamp records.
    pub fn mtime(&self) -> std::time::SystemTime {
        let ns = self.mtime_ns.max(0) as u128;
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
    }

    /// The stamp of already read metadata.
    pub fn from_meta(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

enum Kind {
    V2,
    V1 {
        bundlx: Mmap,
        bundlx_file: File,
        bundlx_path: PathBuf,
        bundlx_stamp: FileStamp,
    },
}

/// The bytes of a bundle: a map of a local file, or an object read whole into memory
/// (`cache::store::object`).
enum Data {
    Map(Mmap),
    Mem(bytes::Bytes),
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Map(m) => &m[..],
            Data::Mem(b) => &b[..],
        }
    }
}

/// A mapped bundle. Cheap to share (`Arc`); tiles are served as slices of the map.
pub struct BundleHandle {
    pub id: BundleId,
    pub path: PathBuf,
    pub stamp: FileStamp,
    map: Data,
    /// The mapped file, to see (fstat) whether it shrank under the map and to read tiles with
    /// pread: touching a map past the end of a file cut in place kills the process (SIGBUS).
    /// None for a bundle held in memory (it cannot change under us).
    file: Option<File>,
    kind: Kind,
}

fn map_file(path: &Path) -> Result<(Mmap, FileStamp, File)> {
    let file = File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    if meta.len() == 0 {
        return Err(Error::format(
            path,
            FormatError::Truncated {
                what: "bundle header",
                len: 0,
                need: 60,
            },
        ));
    }
    // SAFETY: the map is read-only; bundle writers (bundlefs, MapProxy, ArcGIS) only append or
    // replace files by rename, so mapped bytes stay valid. A file truncated in place by a foreign
    // tool would fault; `bundlefs compact` and every bundlefs writer never do that.
    // Served tiles are read with pread, and every use of the map checks first that the file did
    // not shrink (see `BundleHandle::check_len`).
    let map = unsafe { Mmap::map(&file) }.at(path)?;
    Ok((map, FileStamp::from_meta(&meta), file))
}

impl BundleHandle {
    /// Maps a V2 bundle and checks its header.
    pub fn open_v2(id: BundleId, path: &Path) -> Result<BundleHandle> {
        let (map, stamp, file) = map_file(path)?;
        V2Bundle::parse(&map).in_file(path)?;
        Ok(BundleHandle {
            id,
            path: path.to_path_buf(),
            stamp,
            map: Data::Map(map),
            file: Some(file),
            kind: Kind::V2,
        })
    }

    /// A V2 bundle held whole in memory (an object read from an object store; `path` is its URL,
    /// for messages; `stamp` carries its size and last-modified time, `ino` 0). Checks its header.
    pub fn from_v2_bytes(
        id: BundleId,
        path: &Path,
        bytes: bytes::Bytes,
        stamp: FileStamp,
    ) -> Result<BundleHandle> {
        V2Bundle::parse(&bytes).in_file(path)?;
        Ok(BundleHandle {
            id,
            path: path.to_path_buf(),
            stamp,
            map: Data::Mem(bytes),
            file: None,
            kind: Kind::V2,
        })
    }

    /// Maps a V1 pair (`.bundle` at `path`, `.bundlx` beside it) and checks both.
    pub fn open_v1(id: BundleId, path: &Path) -> Result<BundleHandle> {
        let bundlx_path = super::spelling::bundlx_of(path);
        let (map, stamp, file) = map_file(path)?;
        let (bundlx, bundlx_stamp, bundlx_file) = map_file(&bundlx_path)?;
        V1Bundle::parse(&map, &bundlx).map_err(|(part, e)| match part {
            V1Part::Bundle => Error::format(path, e),
            V1Part::Bundlx => Error::format(&bundlx_path, e),
        })?;
        Ok(BundleHandle {
            id,
            path: path.to_path_buf(),
            stamp,
            map: Data::Map(map),
            file: Some(file),
            kind: Kind::V1 {
                bundlx,
                bundlx_file,
                bundlx_path,
                bundlx_stamp,
            },
        })
    }

    /// Whether this is a Compact V1 pair (`.bundle` + `.bundlx`).
    pub fn is_v1(&self) -> bool {
        matches!(self.kind, Kind::V1 { .. })
    }

    /// True if the files on disk are no longer the ones mapped.
    pub fn is_stale(&self) -> Result<bool> {
        if self.file.is_none() {
            return Ok(false);
        }
        if FileStamp::of(&self.path)? != Some(self.stamp) {
            return Ok(true);
        }
        if let Kind::V1 {
            bundlx_path,
            bundlx_stamp,
            ..
        } = &self.kind
        {
            return Ok(FileStamp::of(bundlx_path)? != Some(*bundlx_stamp));
        }
        Ok(false)
    }

    /// Fails if a mapped file is now shorter than its map (cut in place by a foreign tool): the
    /// map must not be touched then, the bundle is stale and is mapped anew.
    pub fn check_len(&self) -> Result<()> {
        let shrunk = |f: &File, path: &Path, mapped: usize| -> Result<()> {
            let len = f.metadata().at(path)?.len();
            if len < mapped as u64 {
                return Err(Error::format(
                    path,
                    FormatError::Truncated {
                        what: "mapped bundle (it shrank on disk)",
                        len,
                        need: mapped as u64,
                    },
                ));
            }
            Ok(())
        };
        let Some(file) = &self.file else {
            return Ok(());
        };
        shrunk(file, &self.path, self.map.len())?;
        if let Kind::V1 {
            bundlx,
            bundlx_file,
            bundlx_path,
            ..
        } = &self.kind
        {
            shrunk(bundlx_file, bundlx_path, bundlx.len())?;
        }
        Ok(())
    }

    /// Reads the bytes of a range returned by `tile_range` from the file (not the map), so a file
    /// cut meanwhile gives an error instead of a fault.
    pub fn read(&self, r: Range<usize>) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else {
            return match self.map.get(r.clone()) {
                Some(b) => Ok(b.to_vec()),
                None => Err(Error::format(
                    &self.path,
                    FormatError::Truncated {
                        what: "tile",
                        len: self.map.len() as u64,
                        need: r.end as u64,
                    },
                )),
            };
        };
        let mut buf = vec![0u8; r.len()];
        match file.read_exact_at(&mut buf, r.start as u64) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::format(
                &self.path,
                FormatError::Truncated {
                    what: "tile (the file shrank on disk)",
                    len: file.metadata().map_or(0, |m| m.len()),
                    need: r.end as u64,
                },
            )),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// Checked byte range of the tile in `slot` (None: no tile). Errors name the file and entry.
    pub fn tile_range(&self, slot: Slot) -> Result<Option<Range<usize>>> {
        self.check_len()?;
        self.range_in_map(slot)
    }

    /// The checked byte ranges of every tile, in slot order: [`Self::tile_range`] of each occupied
    /// slot, the file's length checked (one stat) for all of them rather than for each. Errors:
    /// the file shrank under the map, or the first broken entry, naming the file and entry.
    pub fn tile_ranges(&self) -> Result<Vec<(Slot, Range<usize>)>> {
        self.check_len()?;
        let mut out = Vec::new();
        for (slot, _) in self.slots() {
            if let Some(r) = self.range_in_map(slot)? {
                out.push((slot, r));
            }
        }
        Ok(out)
    }

    /// [`Self::tile_range`] without the length check: the caller has made it.
    fn range_in_map(&self, slot: Slot) -> Result<Option<Range<usize>>> {
        match &self.kind {
            Kind::V2 => V2Bundle::parse(&self.map)
                .and_then(|b| b.tile_range(slot))
                .in_file(&self.path),
            Kind::V1 {
                bundlx,
                bundlx_path,
                ..
            } => V1Bundle::parse(&self.map, bundlx)
                .map_err(|(_, e)| Error::format(bundlx_path, e))?
                .tile_range(slot)
                .map_err(|e| Error::format(bundlx_path, e)),
        }
    }

    /// The bytes of a range returned by `tile_range`.
    pub fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.map[r]
    }

    /// Occupied slots with their tile sizes. Broken entries are included with size 0 so that callers
    /// that check (`tile_range`) see them; cheap: reads only the index (V2) or index + size words (V1).
    /// Nothing if the file shrank under the map (it is stale; the next access maps it anew).
    pub fn slots(&self) -> Vec<(Slot, u32)> {
        if self.check_len().is_err() {
            return Vec::new();
        }
        match &self.kind {
            Kind::V2 => match V2Bundle::parse(&self.map) {
                Ok(b) => b.entries().map(|(s, e)| (s, e.size())).collect(),
                Err(_) => Vec::new(),
            },
            Kind::V1 { bundlx, .. } => match V1Bundle::parse(&self.map, bundlx) {
                Ok(b) => b
                    .slots()
                    .map(|s| {
                        (
                            s,
                            b.tile_range(s)
                                .ok()
                                .flatten()
                                .map_or(0, |r| (r.end - r.start) as u32),
                        )
                    })
                    .collect(),
                Err(_) => Vec::new(),
            },
        }
    }

    /// The raw index entry of one slot (V2: the 8-byte entry; V1: the 5-byte offset): what the
    /// time sidecar keys its records by. 0 if the file shrank under the map.
    pub fn raw_entry(&self, s: Slot) -> u64 {
        if self.check_len().is_err() {
            return 0;
        }
        match &self.kind {
            Kind::V2 => crate::format::u64_at(&self.map, crate::format::v2::index_pos(s)),
            Kind::V1 { bundlx, .. } => {
                crate::format::u40_at(bundlx, crate::format::v1::index_pos(s))
            }
        }
    }

    /// The raw index entry of every slot, in slot order (`BUNDLE_TILES` values), for telling
    /// which tiles another writer changed.
    pub fn raw_entries(&self) -> Vec<u64> {
        if self.check_len().is_err() {
            return vec![0; crate::format::BUNDLE_TILES];
        }
        match &self.kind {
            Kind::V2 => Slot::all()
                .map(|s| crate::format::u64_at(&self.map, crate::format::v2::index_pos(s)))
                .collect(),
            Kind::V1 { bundlx, .. } => Slot::all()
                .map(|s| crate::format::u40_at(bundlx, crate::format::v1::index_pos(s)))
                .collect(),
        }
    }

    /// Size of the mapped bundle file(s) in bytes.
    pub fn file_bytes(&self) -> u64 {
        match &self.kind {
            Kind::V2 => self.map.len() as u64,
            Kind::V1 { bundlx, .. } => (self.map.len() + bundlx.len()) as u64,
        }
    }

    /// Bytes held by overwritten or deleted tiles.
    pub fn dead_bytes(&self) -> u64 {
        match &self.kind {
            Kind::V2 => V2Bundle::parse(&self.map).map_or(0, |b| b.dead_bytes()),
            Kind::V1 { bundlx, .. } => {
                V1Bundle::parse(&self.map, bundlx).map_or(0, |b| b.dead_bytes())
            }
        }
    }

    /// The paths this bundle consists of.
    pub fn paths(&self) -> Vec<&Path> {
        match &self.kind {
            Kind::V2 => vec![&self.path],
            Kind::V1 { bundlx_path, .. } => vec![&self.path, bundlx_path],
        }
    }
}
