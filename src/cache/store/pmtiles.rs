//! PMTiles v3 storage (the specification: github.com/protomaps/PMTiles, `spec/v3/spec.md`; the
//! codec is [`crate::format::pmtiles`]). A PMTiles file is written once, whole, so there are two
//! halves:
//!
//! - [`PmtilesStore`] reads a file: mapped read-only (memmap2), the root directory decoded at
//!   open, leaf directories decoded when first needed and kept in an LRU. A bundle (an aligned
//!   128×128 block of a zoom level) is one contiguous range of Hilbert tile ids, so listing a
//!   bundle's tiles walks one range of the directories. Every write is refused by name.
//! - [`Builder`] writes one: [`Building`] is the storage a job writes into (tiles arrive bundle by
//!   bundle, in any order): each distinct tile content goes once to a temporary file beside the
//!   destination, in arrival order, and the builder keeps only (tile id, offset, length) per tile
//!   and a hash per content. [`Builder::finish`] sorts the entries by tile id, joins consecutive
//!   ids of the same content into runs, writes header, root directory, metadata, leaf
//!   directories, then copies the tile data in tile-id order (clustered), into a temporary file
//!   renamed to the destination. Memory stays bounded by the entries (24 bytes a tile while the
//!   tiles come, with a hash-map slot per distinct content; about 100 bytes a tile at the end),
//!   never the tiles' bytes.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use memmap2::Mmap;
use object_store::ObjectStore;

use super::{GroupView, LevelStats, Storage, StorageKind, TileGroup, TimedSlot, UpdateFn};
use crate::cache::files::AtomicFile;
use crate::cache::TileBytes;
use crate::error::{Error, IoContext, Result};
use crate::format::pmtiles::{
    block_range, build_directories, decode_directory, decompress, gzip, tile_id, zoom_base, zxy,
    Compression, Entry, Header, TileType, HEADER_LEN,
};
use crate::format::v2::WriteStats;
use crate::format::{BundleId, Slot, TileAddr, MAX_TILE_SIZE};

/// Leaf directories decoded and kept.
const LEAF_CACHE: usize = 64;
/// Directories nest at most this deep (the spec's writers use root + one level of leaves).
const MAX_DEPTH: u32 = 4;
/// A piece of a bundle's tiles read at once is at most this long …
const SPAN_LIMIT: u64 = 64 << 20;
/// … and has gaps of at most this many bytes between the tiles it holds.
const PIECE_GAP: u64 = 256 << 10;
/// A directory or the metadata may inflate to at most this many bytes.
const INFLATE_LIMIT: u64 = 1 << 30;

/// The message of a write refused: the file is only read.
fn read_only_error(path: &Path) -> Error {
    Error::invalid(format!(
        "{}: a PMTiles file is read-only here (it is written once, whole: export the tiles to \
         a new .pmtiles instead)",
        path.display()
    ))
}

/// The bytes of a file: mapped, or in memory (the fuzz target).
enum Data {
    Map(Mmap),
    Owned(Vec<u8>),
    /// An object in a store, read by range GETs; its first bytes (header and, as the spec
    /// intends, the root directory) by one GET at open.
    Remote {
        store: Arc<dyn ObjectStore>,
        key: object_store::path::Path,
        len: u64,
        head: Vec<u8>,
        /// Range GETs after the first, and the bytes they brought.
        gets: AtomicU64,
        bytes_down: AtomicU64,
    },
}

/// The first bytes of a remote file read at open: the header and the root directory fit in them.
const FIRST_READ: u64 = crate::format::pmtiles::ROOT_LIMIT as u64;

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Map(m) => m.len() as u64,
            Data::Owned(v) => v.len() as u64,
            Data::Remote { len, .. } => *len,
        }
    }

    /// Bytes `off`..`off+len`, which the caller has checked lie inside the file.
    fn read(&self, off: u64, len: u64) -> std::result::Result<Cow<'_, [u8]>, String> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| format!("bytes {off}+{len} lie past the end of the file"))?;
        match self {
            Data::Map(m) => Ok(Cow::Borrowed(&m[off as usize..end as usize])),
            Data::Owned(v) => Ok(Cow::Borrowed(&v[off as usize..end as usize])),
            Data::Remote { head, .. } if end <= head.len() as u64 => {
                Ok(Cow::Borrowed(&head[off as usize..end as usize]))
            }
            Data::Remote {
                store,
                key,
                gets,
                bytes_down,
                ..
            } => {
                gets.fetch_add(1, Ordering::Relaxed);
                let got = super::object::block(store.get_range(key, off..end))
                    .map_err(|e| format!("range GET of bytes {off}-{end}: {e}"))?;
                bytes_down.fetch_add(got.len() as u64, Ordering::Relaxed);
                if got.len() as u64 != len {
                    return Err(format!(
                        "range GET of bytes {off}-{end} gave {} bytes",
                        got.len()
                    ));
                }
                Ok(Cow::Owned(got.to_vec()))
            }
        }
    }
}

/// A PMTiles file as a read-only storage.
pub struct PmtilesStore {
    path: PathBuf,
    map: Data,
    header: Header,
    root: Vec<Entry>,
    leaves: Mutex<lru::LruCache<u64, Arc<Vec<Entry>>>>,
    mtime: Option<SystemTime>,
}

impl PmtilesStore {
    /// Opens the PMTiles file at `path`. Errors, naming the file: it cannot be read, another
    /// magic or version, a truncated header, a section past the end of the file, a compression
    /// bundlefs does not read, a root directory that does not decode.
    pub fn open(path: &Path) -> Result<PmtilesStore> {
        let file = File::open(path).at(path)?;
        let meta = file.metadata().at(path)?;
        let bad = |m: String| Error::invalid(format!("{}: {m}", path.display()));
        if meta.len() < HEADER_LEN as u64 {
            let mut head = vec![0u8; meta.len() as usize];
            file.read_exact_at(&mut head, 0).at(path)?;
            return Err(bad(Header::parse(&head, meta.len())
                .err()
                .unwrap_or_else(|| "truncated PMTiles header".to_string())));
        }
        // SAFETY: the map is read-only and PMTiles files are written once and replaced by rename
        // (bundlefs writes a temporary file and renames it), so mapped bytes stay valid. A file
        // cut in place by a foreign tool would fault, as any mapped reader would.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        Self::over(path, Data::Map(map), meta.modified().ok())
    }

    /// The storage over a file's bytes held in memory, named `path` in messages (for fuzzing:
    /// the same checks as [`PmtilesStore::open`]).
    #[doc(hidden)]
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<PmtilesStore> {
        Self::over(path, Data::Owned(bytes), None)
    }

    /// The PMTiles object at `url` (`s3://BUCKET/KEY.pmtiles`, `az://CONTAINER/KEY.pmtiles`;
    /// client settings from the environment, as for caches in a store), read by range requests:
    /// a HEAD, one GET of the first 16 KiB (header and root directory), then a GET per leaf
    /// directory (kept in the LRU) and per bundle's tiles. Errors: the store's, and those of
    /// [`PmtilesStore::open`], naming the URL.
    pub fn open_url(url: &crate::cache::url::ObjectUrl) -> Result<PmtilesStore> {
        let store = super::object::store_client(url)?;
        let name = PathBuf::from(url.to_string());
        Self::open_remote(
            &name,
            store,
            object_store::path::Path::from(url.prefix.as_str()),
        )
    }

    /// The PMTiles object `key` of `store`, named `name` in messages ([`PmtilesStore::open_url`]).
    pub fn open_remote(
        name: &Path,
        store: Arc<dyn ObjectStore>,
        key: object_store::path::Path,
    ) -> Result<PmtilesStore> {
        let bad = |m: String| Error::invalid(format!("{}: {m}", name.display()));
        let meta = super::object::block(store.head(&key)).map_err(|e| bad(e.to_string()))?;
        let first = meta.size.min(FIRST_READ);
        let head = super::object::block(store.get_range(&key, 0..first))
            .map_err(|e| bad(e.to_string()))?
            .to_vec();
        let mtime = SystemTime::from(meta.last_modified);
        let data = Data::Remote {
            store,
            key,
            len: meta.size,
            gets: AtomicU64::new(1),
            bytes_down: AtomicU64::new(head.len() as u64),
            head,
        };
        Self::over(name, data, Some(mtime))
    }

    fn over(path: &Path, map: Data, mtime: Option<SystemTime>) -> Result<PmtilesStore> {
        let bad = |m: String| Error::invalid(format!("{}: {m}", path.display()));
        let head = map
            .read(0, map.len().min(HEADER_LEN as u64))
            .map_err(&bad)?;
        let header = Header::parse(&head, map.len()).map_err(bad)?;
        drop(head);
        let mut s = PmtilesStore {
            path: path.to_path_buf(),
            map,
            root: Vec::new(),
            leaves: Mutex::new(lru::LruCache::new(NonZeroUsize::new(LEAF_CACHE).unwrap())),
            mtime,
            header,
        };
        s.root = s.directory(s.header.root_offset, s.header.root_length, "root directory")?;
        Ok(s)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The metadata JSON (an empty object when there is none). Errors: it does not inflate or
    /// is no JSON, naming the file.
    pub fn metadata(&self) -> Result<serde_json::Value> {
        let h = &self.header;
        if h.metadata_length == 0 {
            return Ok(serde_json::json!({}));
        }
        let raw = self
            .map
            .read(h.metadata_offset, h.metadata_length)
            .map_err(|e| self.bad(format!("metadata: {e}")))?;
        let b = decompress(h.internal_compression, &raw, INFLATE_LIMIT)
            .map_err(|e| self.bad(format!("metadata: {e}")))?;
        serde_json::from_slice(&b).map_err(|e| self.bad(format!("metadata is no JSON: {e}")))
    }

    fn bad(&self, m: String) -> Error {
        Error::invalid(format!("{}: {m}", self.path.display()))
    }

    /// The directory at file bytes `off`..`off+len`, decoded.
    fn directory(&self, off: u64, len: u64, what: &str) -> Result<Vec<Entry>> {
        if off.checked_add(len).is_none_or(|e| e > self.map.len()) {
            return Err(self.bad(format!(
                "the {what} at bytes {off}+{len} lies past the end of the file ({} bytes)",
                self.map.len()
            )));
        }
        let raw = self
            .map
            .read(off, len)
            .map_err(|e| self.bad(format!("{what}: {e}")))?;
        let b = decompress(self.header.internal_compression, &raw, INFLATE_LIMIT)
            .map_err(|e| self.bad(format!("{what}: {e}")))?;
        decode_directory(&b).map_err(|e| self.bad(format!("{what}: {e}")))
    }

    /// The leaf directory of entry `e` (offset in the leaf section), from the LRU or decoded.
    fn leaf(&self, e: &Entry) -> Result<Arc<Vec<Entry>>> {
        if let Some(d) = self.leaves.lock().unwrap().get(&e.offset) {
            return Ok(d.clone());
        }
        let h = &self.header;
        if e.offset.saturating_add(u64::from(e.length)) > h.leaf_length {
            return Err(self.bad(format!(
                "a leaf directory at {}+{} lies past the leaf directory section ({} bytes)",
                e.offset, e.length, h.leaf_length
            )));
        }
        let d = Arc::new(self.directory(
            h.leaf_offset + e.offset,
            u64::from(e.length),
            "leaf directory",
        )?);
        self.leaves.lock().unwrap().put(e.offset, d.clone());
        Ok(d)
    }

    /// Calls `f(first id, count, offset, length)` for each run of tiles with ids in `range`,
    /// ascending; `f` returns false to stop. Returns false when stopped.
    fn walk(
        &self,
        range: std::ops::Range<u64>,
        f: &mut dyn FnMut(u64, u64, u64, u32) -> bool,
    ) -> Result<bool> {
        self.walk_in(&self.root, &range, 0, f)
    }

    fn walk_in(
        &self,
        dir: &[Entry],
        range: &std::ops::Range<u64>,
        depth: u32,
        f: &mut dyn FnMut(u64, u64, u64, u32) -> bool,
    ) -> Result<bool> {
        if depth > MAX_DEPTH {
            return Err(self.bad(format!(
                "leaf directories nest more than {MAX_DEPTH} deep (a damaged file)"
            )));
        }
        // Each tile id belongs to the last entry starting at or before it (as the spec's readers
        // search), so an entry reaches no further than the next one's start, even where a
        // damaged directory says it runs on: listings and single reads then agree.
        let first = dir
            .partition_point(|e| e.tile_id <= range.start)
            .saturating_sub(1);
        for (i, e) in dir.iter().enumerate().skip(first) {
            if e.tile_id >= range.end {
                break;
            }
            let next = dir.get(i + 1).map_or(u64::MAX, |n| n.tile_id);
            let lo = e.tile_id.max(range.start);
            if e.run_length == 0 {
                let within = lo..next.min(range.end);
                if within.is_empty() {
                    continue;
                }
                let leaf = self.leaf(e)?;
                if !self.walk_in(&leaf, &within, depth + 1, f)? {
                    return Ok(false);
                }
                continue;
            }
            let hi = e
                .tile_id
                .saturating_add(u64::from(e.run_length))
                .min(next)
                .min(range.end);
            if lo < hi && !f(lo, hi - lo, e.offset, e.length) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The bytes of a tile at `offset` in the tile data section.
    fn bytes(&self, id: u64, offset: u64, len: u32) -> Result<Cow<'_, [u8]>> {
        let h = &self.header;
        if offset.saturating_add(u64::from(len)) > h.data_length {
            return Err(self.bad(format!(
                "tile id {id} lies at {offset}+{len}, past the tile data section ({} bytes)",
                h.data_length
            )));
        }
        self.map
            .read(h.data_offset + offset, u64::from(len))
            .map_err(|e| self.bad(format!("tile id {id}: {e}")))
    }

    /// The runs of level `level`'s tiles (first id, count, offset, length), entries of length 0
    /// (no tile) left out.
    fn level_runs(&self, level: u8) -> Result<Vec<(u64, u64, u64, u32)>> {
        let mut out = Vec::new();
        if level <= crate::format::pmtiles::MAX_ZOOM {
            self.walk(zoom_base(level)..zoom_base(level + 1), &mut |a, n, o, l| {
                if l > 0 {
                    out.push((a, n, o, l));
                }
                true
            })?;
        }
        Ok(out)
    }

    /// The bundle holding tile id `id` of `level`.
    fn bundle_of(level: u8, id: u64) -> Option<BundleId> {
        let (_, x, y) = zxy(id)?;
        Some(TileAddr::new(level, y, x).bundle())
    }

    /// The tiles of bundle `id`: (tile, offset, length), in tile-id order.
    fn bundle_entries(&self, id: BundleId) -> Result<Vec<(TileAddr, u64, u32)>> {
        let Some(range) = block_range(id.level, id.col0, id.row0) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.walk(range, &mut |a, n, o, l| {
            for tid in a..a + n {
                if let Some((z, x, y)) = zxy(tid) {
                    out.push((TileAddr::new(z, y, x), o, l));
                }
            }
            true
        })?;
        Ok(out)
    }
}

/// An empty group, for [`Storage::update_group`] of a file being built (nothing stored yet).
struct Nothing;

impl GroupView for Nothing {
    fn exists(&self) -> bool {
        false
    }
    fn tile(&self, _slot: Slot) -> Result<Option<TileBytes>> {
        Ok(None)
    }
}

impl Storage for PmtilesStore {
    fn kind(&self) -> StorageKind {
        StorageKind::Pmtiles
    }

    fn levels(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for z in 0..=crate::format::pmtiles::MAX_ZOOM {
            // Stopped at the first run of tiles (entries of length 0 hold none).
            if !self.walk(zoom_base(z)..zoom_base(z + 1), &mut |_, _, _, l| l == 0)? {
                out.push(z);
            }
        }
        Ok(out)
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        let Some(id) = tile_id(t.level, t.col, t.row) else {
            return Ok(None);
        };
        let mut found = None;
        self.walk(id..id + 1, &mut |_, _, o, l| {
            found = Some((o, l));
            false
        })?;
        match found {
            Some((o, l)) if l > 0 => Ok(Some(TileBytes::owned(self.bytes(id, o, l)?.into_owned()))),
            _ => Ok(None),
        }
    }

    fn slots_of(&self, id: BundleId) -> Result<Option<Vec<(Slot, u32)>>> {
        let mut out: Vec<(Slot, u32)> = self
            .bundle_entries(id)?
            .into_iter()
            .filter(|(_, _, l)| *l > 0)
            .map(|(t, _, l)| (t.slot(), l))
            .collect();
        if out.is_empty() {
            return Ok(None);
        }
        out.sort();
        Ok(Some(out))
    }

    fn bundles(&self, level: u8) -> Result<Vec<BundleId>> {
        let mut out = BTreeSet::new();
        let k = 2 * u32::from(level.min(7));
        let base = zoom_base(level.min(crate::format::pmtiles::MAX_ZOOM));
        for (a, n, _, _) in self.level_runs(level)? {
            // Each aligned block of 4^k ids is one bundle.
            let (first, last) = ((a - base) >> k, (a + n - 1 - base) >> k);
            for b in first..=last {
                if let Some(id) = Self::bundle_of(level, base + (b << k)) {
                    out.insert(id);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        let entries: Vec<(TileAddr, u64, u32)> = self
            .bundle_entries(g.id)?
            .into_iter()
            .filter(|e| e.2 > 0)
            .collect();
        let id = |t: TileAddr| tile_id(t.level, t.col, t.row).unwrap_or(0);
        for &(t, o, l) in &entries {
            if o.saturating_add(u64::from(l)) > self.header.data_length {
                // The error of a read of it alone.
                self.bytes(id(t), o, l)?;
            }
        }
        // A clustered file keeps a bundle's tiles together: their bytes are read in pieces of
        // neighbouring tiles (one range GET each from a store), a repeated tile stored far away
        // (an ocean tile first met at another zoom) in a piece of its own.
        let mut wanted: Vec<(u64, u64)> = entries
            .iter()
            .map(|e| (e.1, e.1 + u64::from(e.2)))
            .collect();
        wanted.sort_unstable();
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        for (a, b) in wanted {
            match pieces.last_mut() {
                Some(p) if a <= p.1 + PIECE_GAP && b.max(p.1) - p.0 <= SPAN_LIMIT => {
                    p.1 = p.1.max(b)
                }
                _ => pieces.push((a, b)),
            }
        }
        let mut read = Vec::with_capacity(pieces.len());
        for &(a, b) in &pieces {
            read.push((a, self.bytes(id(entries[0].0), a, (b - a) as u32)?));
        }
        let mut out = Vec::with_capacity(entries.len());
        for (t, o, l) in entries {
            let i = read.partition_point(|(a, _)| *a <= o) - 1;
            let (a, bytes) = &read[i];
            let at = (o - a) as usize;
            out.push((t, TileBytes::owned(bytes[at..at + l as usize].to_vec())));
        }
        out.sort_by_key(|(t, _)| t.slot());
        Ok(out)
    }

    fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let mut st = LevelStats {
            bundles: self.bundles(level)?.len() as u64,
            ..LevelStats::default()
        };
        for (_, n, _, l) in self.level_runs(level)? {
            if l > 0 {
                st.tiles += n;
                st.tile_bytes += n * u64::from(l);
            }
        }
        // One file holds every level, and repeated tiles are stored once: no bytes per level.
        st.file_bytes = st.tile_bytes;
        Ok(st)
    }

    fn write_group(&self, _id: BundleId, _tiles: &[TimedSlot]) -> Result<WriteStats> {
        Err(read_only_error(&self.path))
    }

    fn update_group(&self, _id: BundleId, _f: &mut UpdateFn) -> Result<WriteStats> {
        Err(read_only_error(&self.path))
    }

    fn delete_group(&self, _id: BundleId, _slots: &[Slot]) -> Result<()> {
        Err(read_only_error(&self.path))
    }

    fn tile_mtime(&self, _t: TileAddr, _bytes: &TileBytes) -> Option<SystemTime> {
        self.mtime
    }

    fn set_tile_time(&self, _t: TileAddr, _mtime: SystemTime) -> Result<bool> {
        Err(read_only_error(&self.path))
    }

    fn read_only(&self) -> bool {
        true
    }

    fn counters(&self) -> Option<crate::cache::counters::StoreCounters> {
        match &self.map {
            Data::Remote {
                gets, bytes_down, ..
            } => Some(crate::cache::counters::StoreCounters {
                gets: gets.load(Ordering::Relaxed),
                heads: 1,
                bytes_down: bytes_down.load(Ordering::Relaxed),
                ..Default::default()
            }),
            _ => None,
        }
    }

    fn stats_without_reading(&self) -> bool {
        true
    }

    fn records_in_one_file(&self) -> bool {
        true
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        PathBuf::from(format!(
            "{} (z {}, x {}, y {}, tile id {})",
            self.path.display(),
            t.level,
            t.col,
            t.row,
            tile_id(t.level, t.col, t.row).map_or_else(|| "none".to_string(), |i| i.to_string())
        ))
    }
}

/// What a new PMTiles file says besides its tiles.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub tile_type: TileType,
    /// min lon, min lat, max lon, max lat (degrees).
    pub bounds: [f64; 4],
    /// The metadata JSON (an object: name, format, …); minzoom, maxzoom, bounds and center are
    /// added at the end.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A PMTiles file being written (see the module docs).
pub struct Builder {
    /// The file as messages name it (a local path, or the URL of an object).
    path: PathBuf,
    /// Where the file is written on this machine.
    local: PathBuf,
    /// The object the file goes to at the end, and the temporary folder it is written in first.
    upload: Option<(Upload, tempfile::TempDir)>,
    new: NewFile,
    durable: bool,
    state: Mutex<Build>,
}

/// An object a new file is uploaded to.
struct Upload {
    store: Arc<dyn ObjectStore>,
    key: object_store::path::Path,
}

struct Build {
    /// Distinct tile contents, in arrival order.
    data: tempfile::NamedTempFile,
    len: u64,
    /// (tile id, offset in `data`, length) per tile.
    entries: Vec<(u64, u64, u32)>,
    /// (hash, length) of a content → its offset in `data`.
    /// … and the zoom it first came at.
    seen: HashMap<(u64, u32), (u64, u8)>,
    /// Of vector tiles: contents that came again at other zooms than their first (offset →
    /// lowest and highest zoom), looked at again at the end for `vector_layers`' zooms.
    again: HashMap<u64, (u32, u8, u8)>,
    /// Whether the (vector) tiles are gzip'ed, from the first tile.
    gzip_tiles: Option<bool>,
    /// Of vector tiles: each layer's attributes and the zooms it was seen at (each distinct
    /// content looked at once), for the metadata's `vector_layers`.
    vector: crate::format::mvt::SeenLayers,
}

/// What [`Builder::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub addressed_tiles: u64,
    pub tile_entries: u64,
    pub tile_contents: u64,
    pub file_bytes: u64,
}

impl Builder {
    /// Starts a new PMTiles file at `path` (refused if something is there). `durable`: the file
    /// is synced before it is renamed into place. Errors: the path exists, the temporary file
    /// cannot be made beside it.
    pub fn create(path: &Path, new: NewFile, durable: bool) -> Result<Builder> {
        if path.exists() {
            return Err(Error::invalid(format!(
                "{}: already exists; a PMTiles file is written once, whole (remove it or choose \
                 another name)",
                path.display()
            )));
        }
        Self::start(path, path, None, new, durable)
    }

    /// Starts a new PMTiles object `key` of `store`, named `name` in messages: written in a
    /// temporary folder of this machine (`TMPDIR`), uploaded by [`Builder::finish`] (a multipart
    /// upload, read from the file in parts) and removed here. Errors: the object exists, the
    /// store cannot be asked, the temporary folder cannot be made.
    pub fn create_upload(
        name: &Path,
        store: Arc<dyn ObjectStore>,
        key: object_store::path::Path,
        new: NewFile,
    ) -> Result<Builder> {
        let bad = |m: String| Error::invalid(format!("{}: {m}", name.display()));
        match super::object::block(store.head(&key)) {
            Ok(_) => {
                return Err(bad(
                    "already exists; a PMTiles file is written once, whole (remove it or choose \
                     another name)"
                        .to_string(),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(bad(e.to_string())),
        }
        let tmp = tempfile::Builder::new()
            .prefix("bundlefs-pmtiles-")
            .tempdir()
            .map_err(|e| bad(format!("a temporary folder to write it in first: {e}")))?;
        let local = tmp.path().join("upload.pmtiles");
        Self::start(name, &local, Some((Upload { store, key }, tmp)), new, false)
    }

    fn start(
        path: &Path,
        local: &Path,
        upload: Option<(Upload, tempfile::TempDir)>,
        new: NewFile,
        durable: bool,
    ) -> Result<Builder> {
        let dir = match local.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let data = tempfile::Builder::new()
            .prefix(".bundlefs-pmtiles-data-")
            .tempfile_in(dir)
            .at(dir)?;
        Ok(Builder {
            path: path.to_path_buf(),
            local: local.to_path_buf(),
            upload,
            new,
            durable,
            state: Mutex::new(Build {
                data,
                len: 0,
                entries: Vec::new(),
                seen: HashMap::new(),
                again: HashMap::new(),
                gzip_tiles: None,
                vector: BTreeMap::new(),
            }),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds tile `t` (its bytes as they are). Errors: outside its zoom's grid or past zoom 31,
    /// empty or oversized, the temporary file cannot be written.
    pub fn add(&self, t: TileAddr, bytes: &[u8]) -> Result<()> {
        let id = tile_id(t.level, t.col, t.row).ok_or_else(|| {
            Error::invalid(format!(
                "{}: tile {t} lies outside zoom level {}'s rows and columns (or past zoom 31)",
                self.path.display(),
                t.level
            ))
        })?;
        if bytes.is_empty() || bytes.len() > MAX_TILE_SIZE {
            return Err(Error::invalid(format!(
                "{}: tile {t} has {} bytes; not stored",
                self.path.display(),
                bytes.len()
            )));
        }
        let len = bytes.len() as u32;
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let key = (h.finish(), len);
        let mut st = self.state.lock().unwrap();
        st.gzip_tiles
            .get_or_insert(bytes.starts_with(&[0x1f, 0x8b]));
        let tmp = st.data.path().to_path_buf();
        let same = match st.seen.get(&key) {
            Some(&(off, z)) => {
                let mut there = vec![0u8; bytes.len()];
                st.data.as_file().read_exact_at(&mut there, off).at(&tmp)?;
                (there == bytes).then_some((off, z))
            }
            None => None,
        };
        let off = match same {
            Some((off, first)) => {
                if self.new.tile_type == TileType::Mvt && first != t.level {
                    let e = st.again.entry(off).or_insert((len, first, first));
                    e.1 = e.1.min(t.level);
                    e.2 = e.2.max(t.level);
                }
                off
            }
            None => {
                let off = st.len;
                st.data.as_file().write_all_at(bytes, off).at(&tmp)?;
                st.len += u64::from(len);
                st.seen.entry(key).or_insert((off, t.level));
                if self.new.tile_type == TileType::Mvt {
                    crate::format::mvt::see_tile(&mut st.vector, t.level, bytes);
                }
                off
            }
        };
        st.entries.push((id, off, len));
        Ok(())
    }

    /// Writes the file: header, root directory, metadata, leaf directories, then the tile data
    /// in tile-id order, into a temporary file renamed to the destination (synced first when
    /// durable). A tile added twice keeps its last bytes. Errors: I/O, naming the file.
    pub fn finish(self) -> Result<Finished> {
        let st = self.state.into_inner().unwrap();
        let mut entries = st.entries;
        // Stable: of a tile added twice, the last one stays.
        entries.sort_by_key(|e| e.0);
        let mut kept: Vec<(u64, u64, u32)> = Vec::with_capacity(entries.len());
        for e in entries {
            match kept.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => kept.push(e),
            }
        }
        // Final offsets in tile-id order: each content once, where it is first met.
        let mut placed: HashMap<u64, u64> = HashMap::new();
        let mut order: Vec<(u64, u32)> = Vec::new();
        let mut data_len = 0u64;
        let mut dir: Vec<Entry> = Vec::new();
        for &(id, tmp_off, len) in &kept {
            let off = *placed.entry(tmp_off).or_insert_with(|| {
                order.push((tmp_off, len));
                data_len += u64::from(len);
                data_len - u64::from(len)
            });
            match dir.last_mut() {
                Some(p)
                    if p.offset == off
                        && p.tile_id + u64::from(p.run_length) == id
                        && p.run_length < u32::MAX =>
                {
                    p.run_length += 1
                }
                _ => dir.push(Entry {
                    tile_id: id,
                    offset: off,
                    length: len,
                    run_length: 1,
                }),
            }
        }
        let (root, leaves) = build_directories(&dir);
        let zooms: BTreeSet<u8> = kept.iter().filter_map(|e| zxy(e.0)).map(|z| z.0).collect();
        let (min_zoom, max_zoom) = (
            zooms.first().copied().unwrap_or(0),
            zooms.last().copied().unwrap_or(0),
        );
        let mut meta = self.new.metadata.clone();
        if self.new.tile_type == TileType::Mvt {
            // Contents that came again at other zooms: their layers at those zooms too.
            let mut vector = st.vector;
            for (&off, &(len, lo, hi)) in &st.again {
                let mut b = vec![0u8; len as usize];
                st.data
                    .as_file()
                    .read_exact_at(&mut b, off)
                    .at(st.data.path())?;
                crate::format::mvt::see_tile(&mut vector, lo, &b);
                crate::format::mvt::see_tile(&mut vector, hi, &b);
            }
            // TileJSON's vector_layers (GDAL's PMTiles driver needs it to open the file).
            meta.insert(
                "vector_layers".into(),
                crate::format::mvt::vector_layers(&vector),
            );
        }
        // TileJSON's shapes: numbers, and arrays of them.
        let b = self.new.bounds;
        let round = |v: f64| (v * 1e6).round() / 1e6;
        meta.insert("minzoom".into(), min_zoom.into());
        meta.insert("maxzoom".into(), max_zoom.into());
        meta.insert(
            "bounds".into(),
            serde_json::json!([round(b[0]), round(b[1]), round(b[2]), round(b[3])]),
        );
        meta.insert(
            "center".into(),
            serde_json::json!([
                round((b[0] + b[2]) / 2.0),
                round((b[1] + b[3]) / 2.0),
                min_zoom
            ]),
        );
        let meta = gzip(&serde_json::to_vec(&serde_json::Value::Object(meta)).unwrap_or_default());
        let e7 = crate::format::pmtiles::e7;
        let root_offset = HEADER_LEN as u64;
        let metadata_offset = root_offset + root.len() as u64;
        let leaf_offset = metadata_offset + meta.len() as u64;
        let data_offset = leaf_offset + leaves.len() as u64;
        let header = Header {
            root_offset,
            root_length: root.len() as u64,
            metadata_offset,
            metadata_length: meta.len() as u64,
            leaf_offset,
            leaf_length: leaves.len() as u64,
            data_offset,
            data_length: data_len,
            addressed_tiles: kept.len() as u64,
            tile_entries: dir.len() as u64,
            tile_contents: order.len() as u64,
            clustered: true,
            internal_compression: Compression::Gzip,
            tile_compression: match (self.new.tile_type, st.gzip_tiles) {
                (TileType::Mvt, Some(true)) => Compression::Gzip,
                (TileType::Mvt, _) => Compression::None,
                _ => Compression::None,
            },
            tile_type: self.new.tile_type,
            min_zoom,
            max_zoom,
            bounds_e7: [e7(b[0]), e7(b[1]), e7(b[2]), e7(b[3])],
            center_zoom: min_zoom,
            center_e7: [e7((b[0] + b[2]) / 2.0), e7((b[1] + b[3]) / 2.0)],
        };
        let mut out = AtomicFile::create_new(&self.local, self.durable)?;
        let tmp_out = out.temp_path().to_path_buf();
        {
            let mut w = BufWriter::with_capacity(1 << 20, out.file());
            w.write_all(&header.to_bytes()).at(&tmp_out)?;
            w.write_all(&root).at(&tmp_out)?;
            w.write_all(&meta).at(&tmp_out)?;
            w.write_all(&leaves).at(&tmp_out)?;
            let src = st.data.as_file();
            let mut buf = Vec::new();
            for (off, len) in order {
                buf.resize(len as usize, 0);
                src.read_exact_at(&mut buf, off).at(st.data.path())?;
                w.write_all(&buf).at(&tmp_out)?;
            }
            w.flush().at(&tmp_out)?;
        }
        if self.local.exists() {
            return Err(Error::invalid(format!(
                "{}: appeared while it was being written; nothing replaced",
                self.path.display()
            )));
        }
        out.commit()?;
        if let Some((up, _tmp)) = &self.upload {
            upload(&self.local, &self.path, up)?;
        }
        Ok(Finished {
            addressed_tiles: header.addressed_tiles,
            tile_entries: header.tile_entries,
            tile_contents: header.tile_contents,
            file_bytes: data_offset + data_len,
        })
    }
}

/// Uploads the file at `local` to `up`'s object (named `shown` in messages), in parts read from
/// the file (a few parts in flight at once, so memory stays bounded whatever the file's size).
fn upload(local: &Path, shown: &Path, up: &Upload) -> Result<()> {
    let bad = |m: String| Error::invalid(format!("{}: upload: {m}", shown.display()));
    let mut file = File::open(local).at(local)?;
    super::object::block(async {
        let mut w = object_store::WriteMultipart::new(up.store.put_multipart(&up.key).await?);
        let parts = async {
            let mut buf = vec![0u8; 8 << 20];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| {
                    object_store::Error::Generic {
                        store: "local file",
                        source: Box::new(e),
                    }
                })?;
                if n == 0 {
                    return Ok::<(), object_store::Error>(());
                }
                w.wait_for_capacity(4).await?;
                w.write(&buf[..n]);
            }
        }
        .await;
        match parts {
            Ok(()) => w.finish().await.map(|_| ()),
            Err(e) => {
                // Nothing half-uploaded is left behind as parts the store keeps.
                let _ = w.abort().await;
                Err(e)
            }
        }
    })
    .map_err(|e| bad(e.to_string()))
}

/// The storage a job writes a new PMTiles file through: writes go to the [`Builder`]; reads see
/// nothing (the file does not exist until [`Builder::finish`]).
pub struct Building(pub Arc<Builder>);

impl Building {
    fn put(&self, id: BundleId, tiles: &[(Slot, &[u8])]) -> Result<WriteStats> {
        let mut bytes = 0;
        for (s, b) in tiles {
            self.0.add(id.tile(*s), b)?;
            bytes += b.len() as u64;
        }
        Ok(WriteStats {
            tiles: tiles.len(),
            bytes_written: bytes,
        })
    }
}

impl Storage for Building {
    fn kind(&self) -> StorageKind {
        StorageKind::Pmtiles
    }

    fn levels(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn tile(&self, _t: TileAddr) -> Result<Option<TileBytes>> {
        Ok(None)
    }

    fn read_group(&self, _g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        Ok(Vec::new())
    }

    fn level_stats(&self, _level: u8) -> Result<LevelStats> {
        Ok(LevelStats::default())
    }

    fn write_group(&self, id: BundleId, tiles: &[TimedSlot]) -> Result<WriteStats> {
        let t: Vec<(Slot, &[u8])> = tiles.iter().map(|(s, b, _)| (*s, *b)).collect();
        self.put(id, &t)
    }

    fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats> {
        let new = f(&Nothing)?;
        let t: Vec<(Slot, &[u8])> = new.iter().map(|(s, b)| (*s, &b[..])).collect();
        self.put(id, &t)
    }

    fn delete_group(&self, _id: BundleId, _slots: &[Slot]) -> Result<()> {
        Err(read_only_error(self.0.path()))
    }

    fn tile_mtime(&self, _t: TileAddr, _bytes: &TileBytes) -> Option<SystemTime> {
        None
    }

    fn set_tile_time(&self, _t: TileAddr, _mtime: SystemTime) -> Result<bool> {
        Ok(false)
    }

    fn records_in_one_file(&self) -> bool {
        true
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        PathBuf::from(format!("{} (tile {t})", self.0.path().display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file() -> NewFile {
        NewFile {
            tile_type: TileType::Png,
            bounds: [-180.0, -85.0, 180.0, 85.0],
            metadata: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_written_file_reads_back_with_runs_and_shared_contents() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t.pmtiles");
        let b = Builder::create(&f, new_file(), false).unwrap();
        let sea = b"sea sea sea".to_vec();
        // Level 9: four bundles; a run of sea tiles along the curve, other tiles distinct.
        let mut want = Vec::new();
        for x in 0..200u32 {
            for y in [0u32, 1, 300] {
                let t = TileAddr::new(9, y, x);
                let bytes = if y == 300 {
                    format!("tile {x}").into_bytes()
                } else {
                    sea.clone()
                };
                b.add(t, &bytes).unwrap();
                want.push((t, bytes));
            }
        }
        b.add(TileAddr::new(0, 0, 0), b"world").unwrap();
        want.push((TileAddr::new(0, 0, 0), b"world".to_vec()));
        let done = b.finish().unwrap();
        assert_eq!(done.addressed_tiles, 601);
        assert_eq!(done.tile_contents, 202);
        assert!(done.tile_entries < 601);
        let s = PmtilesStore::open(&f).unwrap();
        assert!(s.header().clustered);
        assert_eq!(s.levels().unwrap(), vec![0, 9]);
        for (t, bytes) in &want {
            assert_eq!(s.tile(*t).unwrap().unwrap().to_vec(), *bytes, "{t}");
        }
        assert!(s.tile(TileAddr::new(9, 2, 2)).unwrap().is_none());
        let bundles = s.bundles(9).unwrap();
        assert_eq!(bundles.len(), 4);
        let n: usize = bundles
            .iter()
            .map(|id| s.read_group(&TileGroup::bundle(*id)).unwrap().len())
            .sum();
        assert_eq!(n, 600);
        assert_eq!(s.level_stats(9).unwrap().tiles, 600);
        assert_eq!(
            s.rows(9).unwrap().into_iter().collect::<Vec<_>>(),
            vec![0, 1, 300]
        );
        assert!(s
            .write_group(TileAddr::new(1, 0, 0).bundle(), &[])
            .unwrap_err()
            .to_string()
            .contains("read-only"));
        assert!(Builder::create(&f, new_file(), false).is_err());
    }

    /// A tile of varied length, so the directory does not compress to nothing.
    fn big_tile(x: u32, y: u32) -> String {
        let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663))
            .wrapping_mul(2_654_435_761)
            >> 24;
        format!("{x}/{y}{}", "#".repeat(n as usize))
    }

    #[test]
    fn many_tiles_go_through_leaf_directories() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big.pmtiles");
        let b = Builder::create(&f, new_file(), false).unwrap();
        for x in 0..256u32 {
            for y in 0..256u32 {
                b.add(TileAddr::new(8, y, x), big_tile(x, y).as_bytes())
                    .unwrap();
            }
        }
        b.finish().unwrap();
        let s = PmtilesStore::open(&f).unwrap();
        assert!(s.header().leaf_length > 0);
        for (x, y) in [(0, 0), (255, 255), (17, 200), (128, 3)] {
            assert_eq!(
                s.tile(TileAddr::new(8, y, x)).unwrap().unwrap().to_vec(),
                big_tile(x, y).into_bytes()
            );
        }
        assert_eq!(s.level_stats(8).unwrap().tiles, 65_536);
    }

    #[test]
    fn bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bad.pmtiles");
        for (bytes, what) in [
            (b"PMTiles\x03abc".to_vec(), "truncated"),
            (b"SQLite format 3\0".to_vec(), "magic"),
            ([&b"PMTiles\x02"[..], &[0u8; 200][..]].concat(), "version 2"),
            (Vec::new(), "truncated"),
        ] {
            std::fs::write(&f, &bytes).unwrap();
            let e = PmtilesStore::open(&f).err().unwrap().to_string();
            assert!(e.contains("bad.pmtiles") && e.contains(what), "{e}");
        }
    }

    #[test]
    fn the_fuzz_seeds_read_and_uncompressed_directories_too() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pmtiles");
        for (name, tiles) in [("plain", 7), ("leaves", 7), ("runs", 20_003)] {
            let b = std::fs::read(dir.join(name)).unwrap();
            let s = PmtilesStore::from_bytes(Path::new(name), b).unwrap();
            let mut n = 0;
            for l in s.levels().unwrap() {
                n += s.level_stats(l).unwrap().tiles;
            }
            assert_eq!(n, tiles, "{name}");
        }
        let s = PmtilesStore::from_bytes(
            Path::new("plain"),
            std::fs::read(dir.join("plain")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            s.tile(TileAddr::new(1, 0, 1)).unwrap().unwrap().to_vec(),
            b"t3"
        );
        // Ids 3 and 4 are one run: (x 1, y 1) and (x 1, y 0) share the bytes.
        assert_eq!(
            s.tile(TileAddr::new(1, 1, 1)).unwrap().unwrap().to_vec(),
            b"t3"
        );
    }

    /// A damaged directory whose run reaches past the next entry: each id belongs to the last
    /// entry starting at or before it, in listings as in single reads (found by the fuzz target).
    /// An entry of length 0 is no tile.
    #[test]
    fn overlapping_runs_read_as_single_reads_do() {
        let z8 = zoom_base(8);
        let root = crate::format::pmtiles::encode_directory(&[
            // An entry of length 0 holds no tile: zoom 0 is no level.
            Entry {
                tile_id: 0,
                offset: 0,
                length: 0,
                run_length: 1,
            },
            Entry {
                tile_id: z8,
                offset: 0,
                length: 2,
                run_length: 20_000,
            },
            Entry {
                tile_id: z8 + 5,
                offset: 2,
                length: 3,
                run_length: 1,
            },
        ]);
        let data = b"aabbb";
        let h = Header {
            root_offset: HEADER_LEN as u64,
            root_length: root.len() as u64,
            metadata_offset: (HEADER_LEN + root.len()) as u64,
            metadata_length: 0,
            leaf_offset: (HEADER_LEN + root.len()) as u64,
            leaf_length: 0,
            data_offset: (HEADER_LEN + root.len()) as u64,
            data_length: data.len() as u64,
            addressed_tiles: 0,
            tile_entries: 2,
            tile_contents: 2,
            clustered: true,
            internal_compression: Compression::None,
            tile_compression: Compression::None,
            tile_type: TileType::Png,
            min_zoom: 8,
            max_zoom: 8,
            bounds_e7: [0; 4],
            center_zoom: 8,
            center_e7: [0; 2],
        };
        let file = [&h.to_bytes()[..], &root, data].concat();
        let s = PmtilesStore::from_bytes(Path::new("overlap.pmtiles"), file).unwrap();
        assert_eq!(s.levels().unwrap(), vec![8]);
        assert!(s.tile(TileAddr::new(0, 0, 0)).unwrap().is_none());
        let mut n = 0;
        for id in s.bundles(8).unwrap() {
            for (t, b) in s.read_group(&TileGroup::bundle(id)).unwrap() {
                assert_eq!(s.tile(t).unwrap().unwrap().to_vec(), b.to_vec(), "{t}");
                n += 1;
            }
        }
        assert_eq!(n, 6);
    }

    /// A file in an object store (object_store's in-memory one) reads as the local file does, by
    /// range requests, leaf directories included.
    #[test]
    fn a_file_in_a_store_reads_by_range_requests() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big.pmtiles");
        let b = Builder::create(&f, new_file(), false).unwrap();
        for x in 0..256u32 {
            for y in 0..256u32 {
                b.add(TileAddr::new(8, y, x), big_tile(x, y).as_bytes())
                    .unwrap();
            }
        }
        b.add(TileAddr::new(0, 0, 0), big_tile(0, 0).as_bytes())
            .unwrap();
        b.finish().unwrap();
        let local = PmtilesStore::open(&f).unwrap();
        assert!(local.header().leaf_length > 0);
        let mem: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = object_store::path::Path::from("maps/big.pmtiles");
        super::super::object::block(mem.put(&key, std::fs::read(&f).unwrap().into())).unwrap();
        let s = PmtilesStore::open_remote(Path::new("s3://b/maps/big.pmtiles"), mem, key).unwrap();
        assert_eq!(s.levels().unwrap(), vec![0, 8]);
        let before = s.counters().unwrap();
        assert!(before.heads == 1 && before.gets >= 1, "{before:?}");
        assert!(local.counters().is_none());
        for id in s.bundles(8).unwrap() {
            let g = TileGroup::bundle(id);
            let a: Vec<_> = s
                .read_group(&g)
                .unwrap()
                .into_iter()
                .map(|(t, b)| (t, b.to_vec()))
                .collect();
            let b: Vec<_> = local
                .read_group(&g)
                .unwrap()
                .into_iter()
                .map(|(t, b)| (t, b.to_vec()))
                .collect();
            assert_eq!(a.len(), 16_384);
            assert_eq!(a, b);
        }
        assert_eq!(
            s.tile(TileAddr::new(0, 0, 0)).unwrap().unwrap().to_vec(),
            big_tile(0, 0).into_bytes()
        );
        // One GET per piece of a bundle's tiles (4 bundles) and per leaf, not one per tile.
        let after = s.counters().unwrap();
        assert!(after.gets - before.gets < 64, "{after:?}");
        assert!(after.bytes_down > std::fs::metadata(&f).unwrap().len() / 2);
        let e = PmtilesStore::open_remote(
            Path::new("s3://b/none.pmtiles"),
            Arc::new(object_store::memory::InMemory::new()),
            object_store::path::Path::from("none.pmtiles"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("s3://b/none.pmtiles"), "{e}");
    }

    /// A file written for a store goes up whole at the end (a multipart upload) and reads back
    /// from there; an object already there is refused.
    #[test]
    fn a_file_is_written_into_a_store_by_upload() {
        let mem: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = object_store::path::Path::from("maps/up.pmtiles");
        let name = Path::new("s3://b/maps/up.pmtiles");
        let b = Builder::create_upload(name, mem.clone(), key.clone(), new_file()).unwrap();
        for x in 0..64u32 {
            b.add(TileAddr::new(6, x % 7, x), big_tile(x, 3).as_bytes())
                .unwrap();
        }
        let local = b.local.clone();
        b.finish().unwrap();
        assert!(!local.exists(), "the local copy is gone after the upload");
        let s = PmtilesStore::open_remote(name, mem.clone(), key.clone()).unwrap();
        for x in 0..64u32 {
            assert_eq!(
                s.tile(TileAddr::new(6, x % 7, x))
                    .unwrap()
                    .unwrap()
                    .to_vec(),
                big_tile(x, 3).into_bytes()
            );
        }
        let e = Builder::create_upload(name, mem, key, new_file())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("s3://b/maps/up.pmtiles: already exists"), "{e}");
    }

    /// Vector tiles: `vector_layers` lists each layer with the zooms it is at, also where a
    /// tile's bytes came again at another zoom (stored once).
    #[test]
    fn vector_layers_cover_repeated_tiles_zooms() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("v.pmtiles");
        let new = NewFile {
            tile_type: TileType::Mvt,
            ..new_file()
        };
        let b = Builder::create(&f, new, false).unwrap();
        // A tile of one layer "roads" (Tile.layers = 3, Layer.name = 1), no features.
        let tile = [0x1a, 0x07, 0x0a, 0x05, b'r', b'o', b'a', b'd', b's'];
        b.add(TileAddr::new(1, 0, 0), &tile).unwrap();
        b.add(TileAddr::new(3, 5, 2), &tile).unwrap();
        b.add(TileAddr::new(2, 1, 1), &tile).unwrap();
        b.finish().unwrap();
        let s = PmtilesStore::open(&f).unwrap();
        assert_eq!(s.header().tile_contents, 1);
        let m = s.metadata().unwrap();
        assert_eq!(
            m["vector_layers"],
            serde_json::json!([{"id": "roads", "fields": {}, "minzoom": 1, "maxzoom": 3}])
        );
    }
}
