//! The storage seam: one trait, [`Storage`], for every kind of place a cache's tiles live in, and
//! one file per kind. Everything above `cache/` (jobs, render, the tree) reaches tiles through
//! [`crate::cache::Cache`], which holds one `Storage` and never branches on the kind itself.
//!
//! - [`exploded`]: one file per tile (`Lnn/Rrrrrrrrr/Ccccccccc.png|jpg|lerc|pbf`) in a local
//!   folder;
//! - [`compact`]: Compact V1 (`.bundle` + `.bundlx`) or V2 (`.bundle`) files in a local folder,
//!   mapped read-only, appended to under a per-bundle `flock`;
//! - [`object`]: Compact V2 (`object/v2.rs`), exploded (`object/exploded.rs`) and Compact V1
//!   (read only, `object/v1.rs`) in an S3-compatible or Azure store, each over one connection to
//!   the store (`object/connection.rs`), written by conditional PUT.
//! - [`sqlite`]: the tiles of an MBTiles file ([`mbtiles`]: TMS rows) or a GeoPackage tile table
//!   ([`geopackage`]: rows from the top over each zoom's tile matrix), one SQLite file each.
//!
//! [`StorageKind`] names the implementation, apart from conf.xml's `StorageFormat`.
//!
//! The write operations are shaped for stores without append or flock (object stores, see
//! `doc/architecture.md`): a writer hands over a whole group of tiles of one bundle
//! ([`Storage::write_group`]) or a function that decides what to write from the bundle as it is
//! now ([`Storage::update_group`]). A local store runs that function once under the bundle lock;
//! a store with compare-and-swap runs it again on the bundle it finds after a lost race.

pub mod compact;
#[doc(hidden)]
pub mod contract;
pub mod exploded;
pub mod geopackage;
pub mod mbtiles;
pub mod object;
pub mod pmtiles;
pub mod sqlite;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::bundle::{BundleHandle, FileStamp};
use super::TileBytes;
use crate::cache::spelling;
use crate::error::{Error, IoContext, Result};
use crate::format::conf::StorageFormat;
use crate::format::v2::WriteStats;
use crate::format::{exploded as names, BundleId, Slot, TileAddr};

/// A tile to write into a bundle's slot, with its modification time if known.
pub type TimedSlot<'a> = (Slot, &'a [u8], Option<SystemTime>);

/// What [`Storage::update_group`] asks of its caller: given a view of the group as stored now,
/// the tiles to write (none: write nothing). Called once per attempt.
pub type UpdateFn<'a> = dyn FnMut(&dyn GroupView) -> Result<Vec<(Slot, TileBytes)>> + 'a;

/// The current content of one group (bundle) as [`Storage::update_group`] shows it.
pub trait GroupView {
    /// Whether the group exists at all (a bundle file, or any tile file of it).
    fn exists(&self) -> bool;
    /// The tile stored in `slot` now, if any.
    fn tile(&self, slot: Slot) -> Result<Option<TileBytes>>;
}

/// Per-level counts for `info`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LevelStats {
    /// Bundles (for exploded storage: groups of tiles that would form one bundle).
    pub bundles: u64,
    /// Tiles stored.
    pub tiles: u64,
    /// Bytes of tile data.
    pub tile_bytes: u64,
    /// Bytes of the files holding them (headers, indexes and dead space included).
    pub file_bytes: u64,
    /// Bytes held by overwritten or deleted tiles (reclaimable by `bundlefs compact`).
    pub dead_bytes: u64,
    /// Index entries that point outside their bundle (a bundle cut short in its tile data),
    /// where the storage can tell from the index and the file size (local bundles).
    pub broken: u64,
}

/// Tiles of one bundle (or, for exploded storage, the files that would form it).
#[derive(Debug, Clone)]
pub struct TileGroup {
    /// The bundle.
    pub id: BundleId,
    pub(crate) files: Vec<(TileAddr, PathBuf)>,
}

impl TileGroup {
    /// A group known by its bundle only (compact storage: the tiles are in the bundle's index).
    pub fn bundle(id: BundleId) -> TileGroup {
        TileGroup {
            id,
            files: Vec::new(),
        }
    }

    /// Number of tiles, if known without reading the bundle (exploded sources); 0 otherwise.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// Every tile of bundle `b` (the whole bundle `id`, in memory or mapped) in slot order, as
/// slices of it: the `read_group` of the compact storages. A broken index entry is an error
/// naming the bundle (a batch job must not drop a tile silently).
pub(crate) fn bundle_tiles(
    id: BundleId,
    b: &Arc<BundleHandle>,
) -> Result<Vec<(TileAddr, TileBytes)>> {
    Ok(b.tile_ranges()?
        .into_iter()
        .map(|(slot, r)| (id.tile(slot), TileBytes::mapped(b.clone(), r)))
        .collect())
}

/// What a store can tell of a stored tile without handing out its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileStat {
    /// Size of the tile in bytes (what a read of it returns).
    pub size: u64,
    /// Its modification time (own if recorded, else its bundle's), if the store has one.
    pub mtime: Option<SystemTime>,
}

/// Which implementation keeps a cache's tiles: how its files are laid out and where they live.
/// Not conf.xml's `StorageFormat`, which names Esri's three formats only: a storage that is no
/// Esri format (MBTiles, GeoPackage, PMTiles, XYZ folders) gets a kind and a name without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    /// Compact V1: `.bundle` + `.bundlx` pairs in level folders.
    CompactV1,
    /// Compact V2: `.bundle` files holding their index, in level folders.
    CompactV2,
    /// One file per tile, `Lnn/Rxxxxxxxx/Cxxxxxxxx.ext`.
    Exploded,
    /// Compact V2 bundles as objects of an S3-compatible or Azure store.
    StoreCompactV2,
    /// Compact V1 pairs as objects of a store (read only).
    StoreCompactV1,
    /// One object per tile in a store.
    StoreExploded,
    /// An MBTiles file (SQLite; Web Mercator zoom levels, TMS rows).
    Mbtiles,
    /// A tile table of an OGC GeoPackage (SQLite; any tiling scheme, rows top-down).
    Geopackage,
    /// An XYZ folder: `z/x/y.ext`, rows from the top (Web Mercator zoom levels).
    Xyz,
    /// A TMS folder: `z/x/y.ext`, rows from the bottom (Web Mercator zoom levels).
    Tms,
    /// A PMTiles v3 file (Hilbert tile ids; read only, written whole by export).
    Pmtiles,
}

impl StorageKind {
    /// Its name in messages and `info`.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::CompactV1 => "compact-v1",
            StorageKind::CompactV2 => "compact-v2",
            StorageKind::Exploded => "exploded",
            StorageKind::StoreCompactV2 => "compact-v2 in an object store",
            StorageKind::StoreCompactV1 => "compact-v1 in an object store (read only)",
            StorageKind::StoreExploded => "exploded in an object store",
            StorageKind::Mbtiles => "mbtiles",
            StorageKind::Geopackage => "geopackage",
            StorageKind::Xyz => "xyz",
            StorageKind::Tms => "tms",
            StorageKind::Pmtiles => "pmtiles",
        }
    }

    /// The conf.xml `StorageFormat` a cache of this kind declares; None for a kind that is no
    /// Esri format.
    pub fn esri_format(self) -> Option<StorageFormat> {
        Some(match self {
            StorageKind::CompactV1 | StorageKind::StoreCompactV1 => StorageFormat::CompactV1,
            StorageKind::CompactV2 | StorageKind::StoreCompactV2 => StorageFormat::CompactV2,
            StorageKind::Exploded | StorageKind::StoreExploded => StorageFormat::Exploded,
            StorageKind::Mbtiles
            | StorageKind::Geopackage
            | StorageKind::Pmtiles
            | StorageKind::Xyz
            | StorageKind::Tms => return None,
        })
    }
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One kind of storage of a cache's tiles. Errors name the file (or object) and what is wrong.
/// Implementations are shared between threads (the mount serves reads while it flushes).
pub trait Storage: Send + Sync {
    /// Which implementation this is ([`StorageKind`]).
    fn kind(&self) -> StorageKind;

    /// The conf.xml `StorageFormat` of the kind, for Esri's formats ([`StorageKind::esri_format`]).
    fn format(&self) -> Option<StorageFormat> {
        self.kind().esri_format()
    }

    /// Levels that hold a folder (or prefix), ascending.
    fn levels(&self) -> Result<Vec<u8>>;

    /// The tile's bytes, or None if the cache lacks it. A broken entry is an error.
    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>>;

    /// Stored tiles of bundle `id` from its index: (slot, size in bytes), None if the bundle
    /// does not exist. Compact storages give it; the default rows/cols are built on it.
    fn slots_of(&self, _id: BundleId) -> Result<Option<Vec<(Slot, u32)>>> {
        Ok(None)
    }

    /// Rows of a level that hold at least one tile (by default: from the indexes of the bundles
    /// [`Storage::bundles`] lists, via [`Storage::slots_of`]; an unreadable bundle is logged and
    /// skipped).
    fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        let mut rows = BTreeSet::new();
        for id in self.bundles(level)? {
            match self.slots_of(id) {
                Ok(Some(slots)) => rows.extend(slots.into_iter().map(|(s, _)| id.row0 + s.row)),
                Ok(None) => {}
                Err(e) => tracing::error!("{e}"),
            }
        }
        Ok(rows)
    }

    /// Tiles of one row: (column, size in bytes), ascending by column (by default: from the
    /// indexes of the row's bundles, via [`Storage::slots_of`]).
    fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for (id, slot, size) in line_slots(self, level, row, true)? {
            out.push((id.col0 + slot.col, size));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Tiles of one column: (row, size in bytes), ascending by row (by default: from the
    /// indexes of the column's bundles, via [`Storage::slots_of`]; stores without bundles walk
    /// their rows).
    fn col_tiles(&self, level: u8, col: u32) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for (id, slot, size) in line_slots(self, level, col, false)? {
            out.push((id.row0 + slot.row, size));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The groups of a level, one per bundle (by default: one per bundle [`Storage::bundles`]
    /// lists; exploded storage groups its tile files instead).
    fn groups(&self, level: u8) -> Result<Vec<TileGroup>> {
        Ok(self
            .bundles(level)?
            .into_iter()
            .map(TileGroup::bundle)
            .collect())
    }

    /// Every tile of a group (in slot order for bundles). Any broken entry is an error.
    fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>>;

    /// Counts of one level, from indexes and file sizes (no tile is read).
    fn level_stats(&self, level: u8) -> Result<LevelStats>;

    /// Writes tiles of one bundle durably (when the cache's options say so), the last of
    /// duplicates winning; records their times where given.
    fn write_group(&self, id: BundleId, tiles: &[TimedSlot]) -> Result<WriteStats>;

    /// Read-modify-write of one bundle: `f` sees the bundle as stored and returns what to write;
    /// no other writer changes the bundle in between (a lock, or a retried compare-and-swap).
    fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats>;

    /// Removes tiles of one bundle (their bytes become dead space in bundles).
    fn delete_group(&self, id: BundleId, slots: &[Slot]) -> Result<()>;

    /// The modification time to show for a stored tile: its own when recorded, else its bundle's.
    fn tile_mtime(&self, t: TileAddr, bytes: &TileBytes) -> Option<SystemTime>;

    /// Records a stored tile's modification time. False if the tile is not stored.
    fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool>;

    /// Whether tile `t`'s attributes ([`Storage::tile_stat`]) and, with `bytes`, its bytes are at
    /// hand in memory, so that answering needs no request that may wait on a network store. True
    /// (the default) for local storages; an object store answers from what it keeps.
    fn at_hand(&self, _t: TileAddr, _bytes: bool) -> bool {
        true
    }

    /// Whether every write of a bundle rewrites it whole (an object store: no append), so that
    /// writing one bundle in n flushes costs about n/2 times its size. The write buffer then
    /// flushes a bundle while it is still being written only past half its budget.
    fn rewrites_whole_bundles(&self) -> bool {
        false
    }

    /// Whether [`Storage::tile_stat`] answers from an index without reading the tile. True for
    /// an object store, where reading a tile costs a request; false (the default) for local
    /// storages, where a tile read is a memory map and the bytes also tell the image kind.
    fn stats_without_reading(&self) -> bool {
        false
    }

    /// Records the storage holds that are no tiles and that it therefore leaves out (an MBTiles
    /// row without data, or outside its zoom's grid), one line each kind with a count and an
    /// example, for `verify`'s warnings. Empty by default.
    fn stray_records(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether tiles are records of one database file (MBTiles): no bundle index and no tile
    /// files to check, so `verify` reads each group's tiles instead.
    fn records_in_one_file(&self) -> bool {
        false
    }

    /// Whether the storage only reads (Compact V1 in an object store): its writes are refused by
    /// name and change nothing. A capability, so shared tests ask it rather than the kind.
    fn read_only(&self) -> bool {
        false
    }

    /// Size and time of stored tile `t`, None if the cache lacks it. By default the tile is read
    /// (its length and [`Storage::tile_mtime`]); stores whose
    /// [`Storage::stats_without_reading`] is true answer from the bundle's index instead.
    fn tile_stat(&self, t: TileAddr) -> Result<Option<TileStat>> {
        Ok(self.tile(t)?.map(|b| TileStat {
            size: b.len() as u64,
            mtime: self.tile_mtime(t, &b),
        }))
    }

    /// Where tile `t` is (or would be) stored, for messages.
    fn location(&self, t: TileAddr) -> PathBuf;

    /// After `delete` removed tiles of `rows` (of `level`): removes what held those rows when it
    /// is left empty (an exploded folder's row folders; a store's row prefixes go with their last
    /// object) and returns how many rows are now gone. Bundles have no row places: 0.
    fn remove_empty_rows(&self, _level: u8, _rows: &BTreeSet<u32>) -> u64 {
        0
    }

    /// Bundles of a level (compact storage; empty for exploded).
    fn bundles(&self, _level: u8) -> Result<Vec<BundleId>> {
        Ok(Vec::new())
    }

    /// The open bundle `id` (compact storage), reopened if another writer changed it.
    fn bundle(&self, _id: BundleId) -> Result<Option<Arc<BundleHandle>>> {
        Ok(None)
    }

    /// Forgets what is cached of bundle `id`, so the next access reads it anew.
    fn invalidate(&self, _id: &BundleId) {}

    /// Bundles another writer changed since this process read their index, each with the rows
    /// (0-127, relative to the bundle) whose index entries differ now; a bundle now absent has
    /// all its rows. The storage checks what it keeps, at most once per `recheck` per bundle.
    /// Empty by default: local bundles are watched by the mount itself (`fs::watch` compares
    /// their files); an object store has no file to compare, so it reports here.
    fn foreign_changes(&self) -> Vec<(BundleId, Vec<u32>)> {
        Vec::new()
    }

    /// The storage's request counters now (an object store: GETs, HEADs, PUTs, bytes received
    /// and sent, conflicts; [`crate::cache::counters::StoreCounters`]); None for local storages,
    /// which send no requests.
    fn counters(&self) -> Option<crate::cache::counters::StoreCounters> {
        None
    }

    /// Whether a lookup of a level or row folder must list the storage to answer. False for an
    /// object store, where a listing is a ListObjectsV2 round trip: there a level of conf.xml's
    /// LODs and its rows are shown on lookup unlisted, and a tile lookup under them asks for the
    /// tile's bundle directly (an absent bundle is a 404 on its index GET: no tile).
    fn lookups_list(&self) -> bool {
        true
    }

    /// Whether `stamp` is what this process left bundle `id` as at its last write.
    fn written_by_us(&self, _id: &BundleId, _stamp: &FileStamp) -> bool {
        false
    }

    /// Rewrites Compact V2 bundle `id` without its dead space (bytes of overwritten or deleted
    /// tiles) when that is at least `min_dead` (0.0–1.0) of the bundle's size; readers see the
    /// old or the new bundle, never a mix, and every tile keeps its bytes. The default (storages
    /// without V2 bundles: exploded, Compact V1) keeps everything.
    fn compact_bundle(&self, _id: BundleId, _min_dead: f64) -> Result<Compacted> {
        Ok(Compacted::Kept)
    }
}

/// What [`Storage::compact_bundle`] did with one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compacted {
    /// Absent, or under the threshold: left as it is.
    Kept,
    /// Over the threshold but held by another writer (its lock file): left as it is.
    Locked(PathBuf),
    /// Rewritten: its size in bytes before and after.
    Rewritten { before: u64, after: u64 },
}

/// Whether a bundle of `size` bytes with `dead` dead bytes is due for [`Storage::compact_bundle`]
/// at threshold `min_dead` (a fraction of the size; a bundle without dead bytes never is).
pub fn compaction_due(size: u64, dead: u64, min_dead: f64) -> bool {
    size > 0 && dead > 0 && dead as f64 >= min_dead * size as f64
}

/// Where the files of a local cache are: its folder and the folder of its level folders.
#[derive(Debug, Clone)]
pub struct Place {
    /// The cache folder (holding conf.xml, or the level folders in MapProxy's layout).
    pub root: PathBuf,
    /// The folder holding the level folders (`_alllayers`, or the root).
    pub tiles_dir: PathBuf,
}

impl Place {
    /// `tiles_dir/Lnn`.
    pub fn level_dir(&self, level: u8) -> PathBuf {
        spelling::resolve(&self.tiles_dir, &names::level_dir(level))
    }

    /// Path of a bundle's `.bundle` file.
    pub fn bundle_path(&self, id: &BundleId) -> PathBuf {
        spelling::resolve(
            &self.level_dir(id.level),
            &format!("{}.bundle", names::bundle_base(id)),
        )
    }

    /// Path of a bundle's `.bundle` file if there is one (any spelling of its level folder and
    /// name), found with fewer system calls than [`Place::bundle_path`] and a test for existence.
    pub fn find_bundle(&self, id: &BundleId) -> Option<PathBuf> {
        let level = spelling::find(&self.tiles_dir, &names::level_dir(id.level))?;
        spelling::find(&level, &format!("{}.bundle", names::bundle_base(id)))
    }

    /// Path of a bundle's lock file (as MapProxy names it).
    pub fn lock_path(&self, id: &BundleId) -> PathBuf {
        self.level_dir(id.level)
            .join(format!("{}.lck", names::bundle_base(id)))
    }

    /// Levels that have a folder, ascending.
    pub fn levels(&self) -> Result<Vec<u8>> {
        let mut v: Vec<u8> = read_dir_names(&self.tiles_dir)?
            .iter()
            .filter_map(|n| names::parse_level_dir(n).ok())
            .filter(|l| self.level_dir(*l).is_dir())
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Refuses a path that resolves, through symbolic links, outside the cache folder, so no tile
    /// is ever read from or written to a file elsewhere. A path that does not exist yet is judged
    /// by its nearest existing ancestor; a dangling symbolic link is refused (opening it to create
    /// would create its target).
    pub fn check_inside(&self, p: &Path) -> Result<()> {
        let root = std::fs::canonicalize(&self.root).at(&self.root)?;
        let mut at = p;
        // Another writer may create a folder on the path between two of the calls below: the
        // path is then resolved again (a few times at most).
        let mut again = 8;
        let real = loop {
            match std::fs::canonicalize(at) {
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Ok(m) = std::fs::symlink_metadata(at) {
                        let dangling = m.file_type().is_symlink() && std::fs::metadata(at).is_err();
                        if dangling || again == 0 {
                            return Err(Error::io(
                                at,
                                std::io::Error::other(
                                    "a dangling symbolic link in the cache; not followed",
                                ),
                            ));
                        }
                        // Created meanwhile: resolve it again.
                        again -= 1;
                        continue;
                    }
                    match at.parent() {
                        Some(q) if !q.as_os_str().is_empty() => at = q,
                        _ => return Ok(()),
                    }
                }
                Err(e) => return Err(Error::io(at, e)),
            }
        };
        if real.starts_with(&root) {
            return Ok(());
        }
        Err(Error::io(
            at,
            std::io::Error::other(format!(
                "resolves to {} outside the cache folder {}; not followed",
                real.display(),
                root.display()
            )),
        ))
    }
}

/// Names in a folder (those that are UTF-8); a missing folder has none.
pub(crate) fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.at(dir)?;
        if let Some(n) = ent.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// Refuses tiles that no storage may hold (empty, or over a bundle entry's 24-bit size field)
/// before anything is written. `location` names the file for the error.
pub(crate) fn check_tiles(location: &Path, id: BundleId, tiles: &[TimedSlot]) -> Result<()> {
    for (slot, bytes, _) in tiles {
        let t = id.tile(*slot);
        if bytes.is_empty() {
            return Err(Error::invalid(format!(
                "tile {t}: refusing to store an empty tile"
            )));
        }
        if bytes.len() > crate::format::MAX_TILE_SIZE {
            return Err(Error::format(
                location,
                crate::format::FormatError::BadEntry {
                    row: slot.row,
                    col: slot.col,
                    msg: format!(
                        "tile {t} of {} bytes is larger than a bundle can hold (2^24-1)",
                        bytes.len()
                    ),
                },
            ));
        }
    }
    Ok(())
}

/// Sets a file's modification time.
pub(crate) fn set_file_mtime(path: &Path, mtime: SystemTime) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .at(path)?;
    f.set_modified(mtime).at(path)
}

/// The stored slots of row `n` (`row`) or column `n` of a level, with their bundle and size
/// in bytes, from the indexes of the bundles that line crosses (one in 128 of the level's).
fn line_slots<S: Storage + ?Sized>(
    store: &S,
    level: u8,
    n: u32,
    row: bool,
) -> Result<Vec<(BundleId, Slot, u64)>> {
    let first = n - n % crate::format::BUNDLE_DIM;
    let mut out = Vec::new();
    for id in store.bundles(level)? {
        if (if row { id.row0 } else { id.col0 }) != first {
            continue;
        }
        let Some(slots) = store.slots_of(id)? else {
            continue;
        };
        for (s, size) in slots {
            if (if row { s.row } else { s.col }) == n - first {
                out.push((id, s, u64::from(size)));
            }
        }
    }
    Ok(out)
}
