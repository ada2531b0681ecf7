//! Compact V1 caches in an object store, read-only: `PREFIX/_alllayers/L05/R0080C0100.bundle` with
//! its `.bundlx` index beside (byte layouts in `format::v1`: a 16-byte header, 128×128 5-byte
//! offsets in column-major order, a 16-byte footer; each offset points at a record's u32 size,
//! the tile's bytes follow).
//!
//! Reads: a bundle's index is one GET of its `.bundlx` (81,952 bytes) after one range GET of the
//! `.bundle`'s 60-byte header (its version is checked, and its ETag and size noted), kept in a
//! bounded LRU and checked every `recheck` by one HEAD of the `.bundlx` (a new ETag drops it). A
//! tile is one range GET of the `.bundle` from its offset to the next offset in the index (the
//! record's size prefix, its bytes, and any dead bytes after them; at most 256 KiB, a second
//! range GET for the rest of a larger tile), pinned with `If-Match` to the `.bundle` ETag seen
//! when the index was read: a bundle replaced since gives 412, and the index is read anew once.
//! V1's index has no sizes, so what needs them reads records: a row's listing (`cols`) reads its
//! tiles (kept among the recent ones, so the mount's reads that follow cost nothing more), and
//! `level_stats` (`info`), `bundle` and `read_group` (batch jobs) read each bundle whole (one GET,
//! pinned the same way; at most 8 kept).
//!
//! Writes are refused by name ([`READ_ONLY`]): a V1 pair is two objects that cannot be replaced
//! together atomically, so readers could see an index of one version over the bundle of another.

use crate::cache::store::StorageKind;
use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use lru::LruCache;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange};

use super::client::block;
use super::connection::{Connection, Listings, ObjectStats, RecentTile, MAX_WHOLE_BUNDLES};
use super::explain::{obj_err, rel_url};
use crate::cache::bundle::{BundleHandle, FileStamp};
use crate::cache::store::{LevelStats, Storage, TileGroup, TimedSlot, UpdateFn};
use crate::cache::TileBytes;
use crate::error::{Error, Result};
use crate::format::v1::{self, V1Bundle, V1Part, BUNDLX_LEN, HEADER_LEN};
use crate::format::v2::{self, WriteStats};
use crate::format::{
    bad_entry, exploded as names, u40_at, BundleId, FormatError, Slot, TileAddr, BUNDLE_DIM,
    MAX_TILE_SIZE,
};

/// Why every write to a Compact V1 cache in an object store is refused (and an `-o rw` mount of
/// one, at mount time).
pub const READ_ONLY: &str =
    "Compact V1 in an object store is read-only; to change it, export that V1 cache to compact-v2";

/// Bytes of a record asked for by the first range GET of a tile (its size prefix, and the tile
/// when it is no larger); a larger tile costs a second GET for the rest.
const FIRST_READ: u64 = 256 << 10;

/// Recently read tiles kept (each ≤ [`RECENT_TILE_MAX`]): 128 × 256 KiB = 32 MiB at most.
const RECENT_TILES: usize = 128;
const RECENT_TILE_MAX: usize = 256 << 10;

/// What one `.bundlx` entry says, checked against the `.bundle`'s size.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// No tile: offset 0 (MapProxy's removed tile) or an offset into the zero block after the
    /// header, which holds zeros by the format (`format::v1`; not fetched).
    Empty,
    /// A record (u32 size, then the tile) at this offset.
    Record(u64),
    /// An entry that cannot be right: why.
    Broken(String),
}

/// A bundle's `.bundlx` and what the `.bundle` looked like when it was read.
struct Index {
    bundlx: Bytes,
    bundlx_etag: String,
    /// ETag of the `.bundle`: tile reads are pinned to it.
    bundle_etag: String,
    bundle_size: u64,
    mtime: SystemTime,
    /// Every record offset, ascending (a record ends at most where the next begins).
    offsets: Vec<u64>,
    /// Tile sizes learnt by reading records.
    sizes: Mutex<HashMap<Slot, u32>>,
    checked: Mutex<Instant>,
}

impl Index {
    fn entry(&self, slot: Slot) -> Entry {
        let off = u40_at(&self.bundlx, v1::index_pos(slot));
        if off == 0 {
            Entry::Empty
        } else if off < HEADER_LEN as u64 {
            Entry::Broken(format!("offset {off} points into the bundle header"))
        } else if off < v1::DATA_START {
            Entry::Empty
        } else if off + 4 > self.bundle_size {
            Entry::Broken(format!(
                "offset {off} is past the end of the bundle ({} bytes)",
                self.bundle_size
            ))
        } else {
            Entry::Record(off)
        }
    }

    /// Slots with a record or a broken entry (the slots a local V1 bundle lists).
    fn live(&self) -> impl Iterator<Item = Slot> + '_ {
        Slot::all().filter(|s| self.entry(*s) != Entry::Empty)
    }

    /// Where the record at `off` ends at the latest: the next record's offset, or the end.
    fn end_after(&self, off: u64) -> u64 {
        let i = self.offsets.partition_point(|o| *o <= off);
        self.offsets.get(i).copied().unwrap_or(self.bundle_size)
    }
}

/// A bundle read whole, with what `info` needs of it and its handle for batch jobs.
struct Whole {
    bundle: Bytes,
    index: Arc<Index>,
    stats: LevelStats,
    /// The tiles as an in-memory Compact V2 bundle ([`BundleHandle`] holds V1 pairs only as
    /// files), or why not (a broken entry, named).
    handle: OnceLock<std::result::Result<Arc<BundleHandle>, String>>,
}

/// A Compact V1 cache under a prefix of an object store, read-only.
pub struct V1Objects {
    /// The connection to the store: client, URL, layout, options, counters.
    conn: Arc<Connection>,
    /// The level list and the levels' bundle lists (of `.bundle` objects), kept `recheck`.
    lists: Listings,
    indexes: Mutex<LruCache<BundleId, Arc<Index>>>,
    whole: Mutex<LruCache<BundleId, Arc<Whole>>>,
    recent: Mutex<LruCache<TileAddr, RecentTile>>,
    /// Bundles found absent and when (not asked again for `recheck`).
    absent: Mutex<LruCache<BundleId, Instant>>,
}

impl V1Objects {
    /// The read-only V1 layout over `conn` (the cache's connection to its store).
    pub fn new(conn: Arc<Connection>) -> V1Objects {
        let cap = NonZeroUsize::new(conn.opts.max_open_bundles.max(1)).unwrap();
        let whole =
            NonZeroUsize::new(conn.opts.max_open_bundles.clamp(1, MAX_WHOLE_BUNDLES)).unwrap();
        V1Objects {
            conn,
            lists: Listings::default(),
            indexes: Mutex::new(LruCache::new(cap)),
            whole: Mutex::new(LruCache::new(whole)),
            recent: Mutex::new(LruCache::new(NonZeroUsize::new(RECENT_TILES).unwrap())),
            absent: Mutex::new(LruCache::new(cap)),
        }
    }

    /// Request counters (the connection's: every request to the store is counted there).
    pub fn stats(&self) -> &ObjectStats {
        &self.conn.stats
    }

    /// The connection to the store this layout goes through.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    fn rel(&self, id: &BundleId, ext: &str) -> String {
        format!(
            "{}/{}.{ext}",
            self.conn.level_rel(id.level),
            names::bundle_base(id)
        )
    }

    fn key(&self, id: &BundleId, ext: &str) -> Key {
        Key::from(self.conn.url.key(&self.rel(id, ext)))
    }

    fn url(&self, id: &BundleId, ext: &str) -> PathBuf {
        rel_url(&self.conn.url, &self.rel(id, ext))
    }

    fn refuse(&self) -> Error {
        Error::invalid(format!("{}: {READ_ONLY}", self.conn.url))
    }

    fn fresh(&self, checked: &Mutex<Instant>) -> bool {
        checked.lock().unwrap().elapsed() < self.conn.opts.recheck
    }

    /// Bundle `id`'s index: kept and confirmed (HEAD of the `.bundlx`) every `recheck`, else read
    /// (header range GET of the `.bundle`, GET of the `.bundlx`). None if the bundle is absent.
    fn index(&self, id: BundleId) -> Result<Option<Arc<Index>>> {
        let kept = self.indexes.lock().unwrap().get(&id).cloned();
        if let Some(ix) = kept {
            if self.fresh(&ix.checked) {
                return Ok(Some(ix));
            }
            self.conn.stats.heads.fetch_add(1, Ordering::Relaxed);
            match block(self.conn.store.head(&self.key(&id, "bundlx"))) {
                Ok(m) if m.e_tag.as_deref() == Some(ix.bundlx_etag.as_str()) => {
                    *ix.checked.lock().unwrap() = Instant::now();
                    return Ok(Some(ix));
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(obj_err(&self.conn.url, &self.rel(&id, "bundlx"), e)),
            }
            self.invalidate(&id);
        }
        if let Some(at) = self.absent.lock().unwrap().get(&id) {
            if at.elapsed() < self.conn.opts.recheck {
                return Ok(None);
            }
        }
        let ix = self.read_index(id)?;
        match &ix {
            Some(ix) => {
                self.indexes.lock().unwrap().put(id, ix.clone());
            }
            None => {
                self.absent.lock().unwrap().put(id, Instant::now());
            }
        }
        Ok(ix)
    }

    fn read_index(&self, id: BundleId) -> Result<Option<Arc<Index>>> {
        let (burl, xurl) = (self.url(&id, "bundle"), self.url(&id, "bundlx"));
        let need_etag = |etag: Option<String>, url: &PathBuf| {
            etag.ok_or_else(|| {
                Error::io(
                    url,
                    std::io::Error::other("the store sent no ETag; bundlefs needs ETags"),
                )
            })
        };
        self.conn.stats.gets.fetch_add(2, Ordering::Relaxed);
        let opts = GetOptions {
            range: Some(GetRange::Bounded(0..HEADER_LEN as u64)),
            ..Default::default()
        };
        let head = block(async {
            let r = self
                .conn
                .store
                .get_opts(&self.key(&id, "bundle"), opts)
                .await?;
            let meta = r.meta.clone();
            Ok::<_, object_store::Error>((meta, r.bytes().await?))
        });
        let (meta, head) = match head {
            Ok(h) => h,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(obj_err(&self.conn.url, &self.rel(&id, "bundle"), e)),
        };
        let x = block(async {
            let r = self.conn.store.get(&self.key(&id, "bundlx")).await?;
            let meta = r.meta.clone();
            Ok::<_, object_store::Error>((meta, r.bytes().await?))
        });
        let (xmeta, bundlx) = match x {
            Ok(x) => x,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::io(
                    &xurl,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the .bundlx index of this Compact V1 bundle is missing",
                    ),
                ))
            }
            Err(e) => return Err(obj_err(&self.conn.url, &self.rel(&id, "bundlx"), e)),
        };
        self.conn
            .stats
            .bytes_down
            .fetch_add((head.len() + bundlx.len()) as u64, Ordering::Relaxed);
        V1Bundle::parse(&head, &bundlx).map_err(|(part, e)| match part {
            V1Part::Bundle => Error::format(&burl, e),
            V1Part::Bundlx => Error::format(&xurl, e),
        })?;
        if bundlx.len() < BUNDLX_LEN - 16 {
            return Err(Error::format(
                &xurl,
                FormatError::Truncated {
                    what: "V1 bundlx index",
                    len: bundlx.len() as u64,
                    need: BUNDLX_LEN as u64,
                },
            ));
        }
        let bundle_etag = need_etag(meta.e_tag, &burl)?;
        let bundlx_etag = need_etag(xmeta.e_tag, &xurl)?;
        let mut ix = Index {
            bundlx,
            bundlx_etag,
            bundle_etag,
            bundle_size: meta.size,
            mtime: meta.last_modified.into(),
            offsets: Vec::new(),
            sizes: Mutex::new(HashMap::new()),
            checked: Mutex::new(Instant::now()),
        };
        let mut offsets: Vec<u64> = Slot::all()
            .filter_map(|s| match ix.entry(s) {
                Entry::Record(off) => Some(off),
                _ => None,
            })
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        ix.offsets = offsets;
        Ok(Some(Arc::new(ix)))
    }

    /// One range GET of the `.bundle` of `id`, pinned to `ix`'s ETag. `Ok(None)`: the bundle
    /// changed (412) or went (404) since the index was read.
    fn range(&self, id: &BundleId, ix: &Index, r: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(r.clone())),
            if_match: Some(ix.bundle_etag.clone()),
            ..Default::default()
        };
        self.conn.stats.gets.fetch_add(1, Ordering::Relaxed);
        let got = block(async {
            let g = self
                .conn
                .store
                .get_opts(&self.key(id, "bundle"), opts)
                .await?;
            g.bytes().await
        });
        match got {
            Ok(b) => {
                self.conn
                    .stats
                    .bytes_down
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                if b.len() as u64 != r.end - r.start {
                    return Err(Error::format(
                        self.url(id, "bundle"),
                        FormatError::Truncated {
                            what: "V1 record (range read)",
                            len: b.len() as u64,
                            need: r.end - r.start,
                        },
                    ));
                }
                Ok(Some(b))
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(obj_err(&self.conn.url, &self.rel(id, "bundle"), e)),
        }
    }

    /// The tile in `slot` per `ix`, checked as a local V1 bundle checks it. `Ok(Err(()))`: the
    /// bundle changed since the index was read.
    fn read_tile(
        &self,
        id: BundleId,
        ix: &Index,
        slot: Slot,
    ) -> Result<std::result::Result<Option<Vec<u8>>, ()>> {
        let xurl = self.url(&id, "bundlx");
        let off = match ix.entry(slot) {
            Entry::Empty => return Ok(Ok(None)),
            Entry::Broken(msg) => return Err(Error::format(&xurl, bad_entry(slot, msg))),
            Entry::Record(off) => off,
        };
        let first = (ix.end_after(off) - off)
            .clamp(4, FIRST_READ)
            .min(ix.bundle_size - off);
        let Some(b) = self.range(&id, ix, off..off + first)? else {
            return Ok(Err(()));
        };
        let size = u64::from(u32::from_le_bytes(b[..4].try_into().unwrap()));
        if size == 0 {
            return Ok(Ok(None));
        }
        if size > MAX_TILE_SIZE as u64 {
            return Err(Error::format(
                &xurl,
                bad_entry(
                    slot,
                    format!("record at offset {off} claims {size} bytes (over 2^24)"),
                ),
            ));
        }
        let start = off + 4;
        if start + size > ix.bundle_size {
            return Err(Error::format(
                &xurl,
                bad_entry(
                    slot,
                    format!(
                        "tile of {size} bytes at offset {start} runs past the end of the bundle \
                         ({} bytes)",
                        ix.bundle_size
                    ),
                ),
            ));
        }
        let mut tile = b[4..].to_vec();
        if (tile.len() as u64) < size {
            let Some(rest) = self.range(&id, ix, off + first..start + size)? else {
                return Ok(Err(()));
            };
            tile.extend_from_slice(&rest);
        }
        tile.truncate(size as usize);
        ix.sizes.lock().unwrap().insert(slot, size as u32);
        Ok(Ok(Some(tile)))
    }

    /// Bundle `id` read whole (one GET pinned to its index's ETag; on 412 the index is read anew
    /// once), kept in a small LRU while its index is current. None if it is absent.
    fn whole(&self, id: BundleId) -> Result<Option<Arc<Whole>>> {
        for _ in 0..2 {
            let Some(ix) = self.index(id)? else {
                return Ok(None);
            };
            if let Some(w) = self.whole.lock().unwrap().get(&id) {
                if Arc::ptr_eq(&w.index, &ix) {
                    return Ok(Some(w.clone()));
                }
            }
            let Some(bundle) = self.range(&id, &ix, 0..ix.bundle_size)? else {
                self.invalidate(&id);
                continue;
            };
            let v = V1Bundle::parse(&bundle, &ix.bundlx).map_err(|(part, e)| match part {
                V1Part::Bundle => Error::format(self.url(&id, "bundle"), e),
                V1Part::Bundlx => Error::format(self.url(&id, "bundlx"), e),
            })?;
            let mut stats = LevelStats {
                bundles: 1,
                file_bytes: (bundle.len() + ix.bundlx.len()) as u64,
                dead_bytes: v.dead_bytes(),
                ..LevelStats::default()
            };
            for s in v.slots() {
                stats.tiles += 1;
                stats.tile_bytes += v
                    .tile_range(s)
                    .ok()
                    .flatten()
                    .map_or(0, |r| (r.end - r.start) as u64);
            }
            let w = Arc::new(Whole {
                bundle,
                index: ix,
                stats,
                handle: OnceLock::new(),
            });
            self.whole.lock().unwrap().put(id, w.clone());
            return Ok(Some(w));
        }
        Err(Error::io(
            self.url(&id, "bundle"),
            std::io::Error::other("the bundle changed again while being read; try again"),
        ))
    }

    /// The tiles of `w` as an in-memory Compact V2 bundle; a broken entry is an error naming the
    /// `.bundlx` and the slot (as a local V1 bundle's read of that slot is).
    fn handle(&self, id: BundleId, w: &Whole) -> Result<Arc<BundleHandle>> {
        let xurl = self.url(&id, "bundlx");
        let burl = self.url(&id, "bundle");
        w.handle
            .get_or_init(|| {
                let v = V1Bundle::parse(&w.bundle, &w.index.bundlx)
                    .map_err(|(_, e)| Error::format(&xurl, e).to_string())?;
                let mut b = v2::Builder::new(Cursor::new(Vec::new())).map_err(|e| e.to_string())?;
                for s in Slot::all() {
                    match v.tile_range(s) {
                        Ok(Some(r)) => b.add(s, &w.bundle[r]).map_err(|e| e.to_string())?,
                        Ok(None) => {}
                        Err(e) => return Err(Error::format(&xurl, e).to_string()),
                    }
                }
                let (out, _) = b.finish().map_err(|e| e.to_string())?;
                let stamp = FileStamp {
                    ino: 0,
                    len: w.bundle.len() as u64,
                    mtime_ns: w
                        .index
                        .mtime
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i128),
                };
                BundleHandle::from_v2_bytes(id, &burl, Bytes::from(out.into_inner()), stamp)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|msg| Error::io(&xurl, std::io::Error::other(msg)))
    }

    /// One line of request counters, for the daemon's log.
    pub fn stats_line(&self) -> String {
        let s = &self.conn.stats;
        format!(
            "{} (compact-v1, read-only): {} GETs ({} bytes), {} HEADs",
            self.conn.url,
            s.gets.load(Ordering::Relaxed),
            s.bytes_down.load(Ordering::Relaxed),
            s.heads.load(Ordering::Relaxed)
        )
    }
}

impl Storage for V1Objects {
    /// Never claimed: every answer may need a request (a mount hands it to its store threads).
    fn at_hand(&self, _t: TileAddr, _bytes: bool) -> bool {
        false
    }

    fn kind(&self) -> StorageKind {
        StorageKind::StoreCompactV1
    }

    fn levels(&self) -> Result<Vec<u8>> {
        self.lists.levels(&self.conn)
    }

    fn bundles(&self, level: u8) -> Result<Vec<BundleId>> {
        self.lists.bundles(&self.conn, level)
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        let id = t.bundle();
        for _ in 0..2 {
            let Some(ix) = self.index(id)? else {
                return Ok(None);
            };
            if let Some((etag, v)) = self.recent.lock().unwrap().get(&t) {
                if *etag == ix.bundle_etag {
                    return Ok(Some(TileBytes::shared(v.clone(), Some(ix.mtime))));
                }
            }
            match self.read_tile(id, &ix, t.slot())? {
                Ok(Some(v)) => {
                    let v = Arc::new(v);
                    if v.len() <= RECENT_TILE_MAX {
                        self.recent
                            .lock()
                            .unwrap()
                            .put(t, (ix.bundle_etag.clone(), v.clone()));
                    }
                    return Ok(Some(TileBytes::shared(v, Some(ix.mtime))));
                }
                Ok(None) => return Ok(None),
                Err(()) => {
                    tracing::debug!(
                        "{}: changed since its index was read; reading it anew",
                        self.url(&id, "bundle").display()
                    );
                    self.invalidate(&id);
                }
            }
        }
        Err(Error::io(
            self.url(&id, "bundle"),
            std::io::Error::other(format!(
                "tile {t}: the bundle changed again while being read; try again"
            )),
        ))
    }

    fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        let mut rows = BTreeSet::new();
        for id in self.bundles(level)? {
            match self.index(id) {
                Ok(Some(ix)) => rows.extend(ix.live().map(|s| id.row0 + s.row)),
                Ok(None) => {}
                Err(e) => tracing::error!("{e}"),
            }
        }
        Ok(rows)
    }

    /// The row's tiles with their sizes: V1's index has none, so each tile whose size this
    /// process has not seen is read (and kept among the recent tiles). A broken entry is listed
    /// with size 0 (its read gives the error) and logged; a record of size 0 is no tile.
    fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let row0 = row - row % BUNDLE_DIM;
        let mut out = Vec::new();
        for id in self.bundles(level)?.into_iter().filter(|b| b.row0 == row0) {
            let Some(ix) = self.index(id)? else { continue };
            for s in ix.live().filter(|s| s.row == row - row0) {
                let known = ix.sizes.lock().unwrap().get(&s).copied();
                let size = match known {
                    Some(n) => Some(u64::from(n)),
                    None => match self.tile(id.tile(s)) {
                        Ok(b) => b.map(|b| b.len() as u64),
                        Err(e) => {
                            tracing::error!("{e}");
                            Some(0)
                        }
                    },
                };
                if let Some(n) = size {
                    out.push((id.col0 + s.col, n));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn slots_of(&self, id: BundleId) -> Result<Option<Vec<(Slot, u32)>>> {
        Ok(self.bundle(id)?.map(|h| h.slots()))
    }

    fn bundle(&self, id: BundleId) -> Result<Option<Arc<BundleHandle>>> {
        match self.whole(id)? {
            Some(w) => self.handle(id, &w).map(Some),
            None => Ok(None),
        }
    }

    fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        match self.bundle(g.id)? {
            Some(b) => crate::cache::store::bundle_tiles(g.id, &b),
            None => Ok(Vec::new()),
        }
    }

    fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let mut s = LevelStats::default();
        for id in self.bundles(level)? {
            let Some(w) = self.whole(id)? else { continue };
            s.bundles += w.stats.bundles;
            s.tiles += w.stats.tiles;
            s.tile_bytes += w.stats.tile_bytes;
            s.file_bytes += w.stats.file_bytes;
            s.dead_bytes += w.stats.dead_bytes;
        }
        Ok(s)
    }

    fn read_only(&self) -> bool {
        true
    }

    fn write_group(&self, _id: BundleId, _tiles: &[TimedSlot]) -> Result<WriteStats> {
        Err(self.refuse())
    }

    fn update_group(&self, _id: BundleId, _f: &mut UpdateFn) -> Result<WriteStats> {
        Err(self.refuse())
    }

    fn delete_group(&self, _id: BundleId, _slots: &[Slot]) -> Result<()> {
        Err(self.refuse())
    }

    fn tile_mtime(&self, _t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        bytes.mtime()
    }

    fn set_tile_time(&self, _t: TileAddr, _mtime: SystemTime) -> Result<bool> {
        Err(self.refuse())
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        self.url(&t.bundle(), "bundle")
    }

    fn invalidate(&self, id: &BundleId) {
        self.indexes.lock().unwrap().pop(id);
        self.whole.lock().unwrap().pop(id);
        self.absent.lock().unwrap().pop(id);
    }

    fn lookups_list(&self) -> bool {
        false
    }

    fn counters(&self) -> Option<crate::cache::counters::StoreCounters> {
        // Every request through the connection (this layout's, the probe's) is counted there.
        Some(self.conn.stats.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::url::ObjectUrl;
    use crate::cache::CacheOptions;
    use crate::format::conf::StorageFormat;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, PutPayload};
    use std::time::Duration;

    fn url() -> ObjectUrl {
        ObjectUrl::parse("s3://bucket/caches/v1").unwrap().unwrap()
    }

    fn storage(mem: &Arc<InMemory>, recheck: Duration) -> V1Objects {
        let opts = CacheOptions {
            recheck,
            ..CacheOptions::default()
        };
        V1Objects::new(Arc::new(Connection::new(
            url(),
            mem.clone(),
            "_alllayers",
            opts,
        )))
    }

    const ID: BundleId = BundleId {
        level: 2,
        row0: 0,
        col0: 128,
    };

    fn tile(n: u32, len: usize) -> Vec<u8> {
        format!("v1 tile {n} ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(len)
            .collect()
    }

    /// A V1 pair made by `format::v1::Builder` (the local V1 writer), uploaded.
    fn upload(mem: &InMemory, tiles: &[(Slot, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
        let mut b = v1::Builder::new(Cursor::new(Vec::new()), ID.row0, ID.col0).unwrap();
        for (s, t) in tiles {
            b.add(*s, t).unwrap();
        }
        let (c, bundlx, _) = b.finish().unwrap();
        let bundle = c.into_inner();
        for (ext, bytes) in [("bundle", &bundle), ("bundlx", &bundlx)] {
            let key = Key::from(format!("caches/v1/_alllayers/L02/R0000C0080.{ext}"));
            block(mem.put(&key, PutPayload::from(bytes.clone()))).unwrap();
        }
        (bundle, bundlx)
    }

    fn slot(row: u32, col: u32) -> Slot {
        Slot { row, col }
    }

    #[test]
    fn reads_tiles_rows_cols_and_stats_like_the_local_reader() {
        let mem = Arc::new(InMemory::new());
        // Column-major index; a tile overwritten (its first record becomes dead space, between
        // two live records); a tile larger than the first range read.
        let big = tile(9, FIRST_READ as usize + 1000);
        let tiles = vec![
            (slot(0, 0), tile(1, 100)),
            (slot(3, 0), tile(2, 50)),
            (slot(0, 5), tile(3, 70)),
            (slot(3, 0), tile(4, 80)),
            (slot(7, 2), big.clone()),
        ];
        let (bundle, bundlx) = upload(&mem, &tiles);
        let local = V1Bundle::parse(&bundle, &bundlx).unwrap();
        let s = storage(&mem, Duration::from_secs(60));
        assert_eq!(s.levels().unwrap(), vec![2]);
        assert_eq!(s.bundles(2).unwrap(), vec![ID]);
        for sl in Slot::all() {
            let want = local.tile(sl).unwrap();
            let got = s.tile(ID.tile(sl)).unwrap();
            assert_eq!(got.as_deref(), want, "slot {sl:?}");
        }
        assert_eq!(
            &s.tile(ID.tile(slot(3, 0))).unwrap().unwrap()[..],
            &tile(4, 80)[..]
        );
        assert_eq!(s.rows(2).unwrap(), BTreeSet::from([0, 3, 7]));
        assert_eq!(
            s.cols(2, 0).unwrap(),
            vec![(128, 100), (133, 70)],
            "sizes read from the records"
        );
        assert_eq!(s.cols(2, 7).unwrap(), vec![(130, big.len() as u64)]);
        let st = s.level_stats(2).unwrap();
        assert_eq!((st.bundles, st.tiles), (1, 4));
        assert_eq!(st.tile_bytes, 100 + 80 + 70 + big.len() as u64);
        assert_eq!(st.dead_bytes, local.dead_bytes());
        assert_eq!(st.dead_bytes, 54);
        assert_eq!(st.file_bytes, (bundle.len() + bundlx.len()) as u64);
        let mut group: Vec<(TileAddr, Vec<u8>)> = s
            .read_group(&TileGroup::bundle(ID))
            .unwrap()
            .into_iter()
            .map(|(t, b)| (t, b.to_vec()))
            .collect();
        group.sort_by_key(|(t, _)| (t.row, t.col));
        assert_eq!(group.len(), 4);
        assert_eq!(group[1], (ID.tile(slot(0, 5)), tile(3, 70)));
        let h = s.bundle(ID).unwrap().unwrap();
        assert_eq!(h.slots().len(), 4);
    }

    #[test]
    fn a_bundle_replaced_after_its_index_was_read_is_read_anew() {
        let mem = Arc::new(InMemory::new());
        upload(
            &mem,
            &[(slot(1, 1), tile(1, 40)), (slot(2, 2), tile(2, 40))],
        );
        let s = storage(&mem, Duration::from_secs(3600));
        assert!(s.tile(ID.tile(slot(1, 1))).unwrap().is_some());
        // Another copy of the cache replaces the pair: the kept index is stale (recheck 1 h),
        // but a read of a tile it locates is pinned to the old .bundle's ETag: 412, the index is
        // read again and the new tile served, never bytes of the new bundle at an old offset.
        upload(
            &mem,
            &[(slot(0, 0), tile(5, 30)), (slot(2, 2), tile(6, 60))],
        );
        let gets = s.stats().gets.load(Ordering::Relaxed);
        assert_eq!(
            &s.tile(ID.tile(slot(2, 2))).unwrap().unwrap()[..],
            &tile(6, 60)[..]
        );
        // The refused range GET, the header and .bundlx, the tile.
        assert_eq!(s.stats().gets.load(Ordering::Relaxed) - gets, 4);
        assert_eq!(
            &s.tile(ID.tile(slot(0, 0))).unwrap().unwrap()[..],
            &tile(5, 30)[..]
        );
    }

    #[test]
    fn every_write_is_refused_by_name_and_a_broken_entry_is_named() {
        let mem = Arc::new(InMemory::new());
        let (_, mut bundlx) = upload(&mem, &[(slot(0, 0), tile(1, 10))]);
        let s = storage(&mem, Duration::ZERO);
        let t = tile(2, 10);
        let errors = [
            s.write_group(ID, &[(slot(0, 1), &t[..], None)])
                .unwrap_err(),
            s.update_group(ID, &mut |_v| Ok(Vec::new())).unwrap_err(),
            s.delete_group(ID, &[slot(0, 0)]).unwrap_err(),
            s.set_tile_time(ID.tile(slot(0, 0)), SystemTime::now())
                .unwrap_err(),
        ];
        for e in errors {
            let e = e.to_string();
            assert!(e.contains("s3://bucket/caches/v1"), "{e}");
            assert!(e.contains(READ_ONLY), "{e}");
        }
        // An offset past the end of the bundle: an error naming the .bundlx and the slot.
        let p = v1::index_pos(slot(2, 3));
        bundlx[p..p + 5].copy_from_slice(&1_000_000u64.to_le_bytes()[..5]);
        let key = Key::from("caches/v1/_alllayers/L02/R0000C0080.bundlx");
        block(mem.put(&key, PutPayload::from(bundlx))).unwrap();
        let e = s.tile(ID.tile(slot(2, 3))).unwrap_err().to_string();
        assert!(e.contains("R0000C0080.bundlx"), "{e}");
        assert!(
            e.contains("row 2 col 3") && e.contains("past the end"),
            "{e}"
        );
        let e = s
            .read_group(&TileGroup::bundle(ID))
            .unwrap_err()
            .to_string();
        assert!(e.contains("R0000C0080.bundlx"), "{e}");
        // A missing .bundlx is named.
        block(mem.delete(&key)).unwrap();
        let s = storage(&mem, Duration::ZERO);
        let e = s.tile(ID.tile(slot(0, 0))).unwrap_err().to_string();
        assert!(
            e.contains("R0000C0080.bundlx") && e.contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn open_refuses_v1_for_writing_by_name_and_opens_it_read_only() {
        use super::super::{open_in, NewCache, WriteCoordination};
        let mem = Arc::new(InMemory::new());
        let conf =
            crate::format::conf::TileScheme::web_mercator(4, crate::format::conf::TileFormat::Png)
                .to_conf_xml();
        let new = NewCache {
            storage: StorageFormat::CompactV1,
            conf_xml: Some(&conf),
            cdi: None,
        };
        let e = open_in(&url(), mem.clone(), CacheOptions::default(), Some(new))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(READ_ONLY) && e.contains("s3://bucket/caches/v1"),
            "{e}"
        );
        assert!(block(mem.list_with_delimiter(None))
            .unwrap()
            .objects
            .is_empty());
        upload(&mem, &[(slot(0, 0), tile(1, 10))]);
        block(mem.put(
            &Key::from("caches/v1/conf.xml"),
            PutPayload::from(conf.clone()),
        ))
        .unwrap();
        for writes in [WriteCoordination::Probed, WriteCoordination::SingleWriter] {
            let mut opts = CacheOptions::default();
            opts.object.writes = writes;
            let e = open_in(&url(), mem.clone(), opts, None)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(READ_ONLY), "{writes:?}: {e}");
        }
        let o = open_in(&url(), mem.clone(), CacheOptions::default(), None).unwrap();
        assert_eq!(o.storage, StorageFormat::CompactV1);
        assert_eq!(o.store.format(), Some(StorageFormat::CompactV1));
        assert_eq!(
            &o.store.tile(ID.tile(slot(0, 0))).unwrap().unwrap()[..],
            &tile(1, 10)[..]
        );
    }
}
