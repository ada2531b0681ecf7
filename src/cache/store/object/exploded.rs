//! Exploded caches in an object store: one object per tile, keys mirroring the folder layout
//! (`PREFIX/_alllayers/L05/R0000abcd/C0000abcd.png`, or `PREFIX/L05/…` in MapProxy's layout).
//! Names follow `format::exploded` and are read the way the local exploded store reads them
//! (`cache::store::exploded`): level, row and tile names in either case (ArcGIS on Windows), the
//! exact name first, another spelling only when it is the only one (two are not guessed between),
//! and of a tile stored under several extensions the cache's own format first, then png, jpg,
//! jpeg.
//!
//! Reads: a row's tiles come from one ListObjectsV2 of its row prefix (names, sizes, times and
//! ETags), kept `recheck` in a bounded LRU; a tile is one GET. Writes: one PUT per tile
//! ([`Storage::write_group`], overwrite), read-modify-write by GET and conditional PUT
//! ([`Storage::update_group`]: `If-Match` the ETag read, `If-None-Match: *` for a tile that was not
//! there; on a precondition failure the update decides again for the tiles not yet stored), and
//! DELETE ([`Storage::delete_group`]). The conditional PUTs, the Ceph RGW 16 unquoted-ETag quirk
//! and `--single-writer` are the connection's (`Connection::put_conditional`, shared by every
//! object layout); the compare-and-swap probe of a writable mount runs in `object::open` whatever
//! the layout.

mod times;

use crate::cache::store::StorageKind;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use lru::LruCache;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};

use super::client::block;
use super::connection::{Connection, ObjectStats, RecentTile, Try};
use super::explain::{obj_err, obj_err_key, rel_url};
use super::v2::times::stamp;
use crate::cache::store::{
    check_tiles, GroupView, LevelStats, Storage, TileGroup, TileStat, TimedSlot, UpdateFn,
};
use crate::cache::TileBytes;
use crate::error::{Error, Result};
use crate::format::sniff::{sniff, ImageKind};
use crate::format::v2::WriteStats;
use crate::format::{exploded as names, BundleId, Slot, TileAddr, BUNDLE_DIM};

/// At most this many tile entries of row listings are kept (about 100 bytes each: ≈13 MiB); the
/// least recently used rows are dropped first. A larger row is listed for each use, not kept.
pub const MAX_KEPT_ENTRIES: usize = 131_072;

/// How many recently read tiles stay in memory (keyed by the object's ETag): a mount looks a tile
/// up and then reads it, both asking for the bytes.
const RECENT_TILES: usize = 64;

/// Tiles larger than this are not kept among the recent ones (so those hold at most 16 MiB).
const RECENT_TILE_MAX: usize = 256 << 10;

/// At most this many kept row listings are checked for other writers' changes per `recheck`
/// ([`Storage::foreign_changes`]), the most recently used first.
pub const FOREIGN_ROWS: usize = 256;

/// Requests a batch operation (a group's PUTs, GETs or DELETEs) keeps under way at once.
const PARALLEL: usize = 8;

/// A tile object as a listing shows it.
#[derive(Debug, Clone)]
struct TileObject {
    /// File name as stored (`C0000abcd.png`, or another spelling).
    name: String,
    size: u64,
    mtime: SystemTime,
    etag: Option<String>,
}

/// One row folder's tiles, from one listing of its prefix.
#[derive(Debug, Default)]
struct Row {
    /// The row folder, relative to the level folders' parent, as spelled in the store
    /// (`L05/R0000abcd`; the canonical spelling when the row holds nothing yet).
    dir: String,
    /// Tile objects by column (several when a tile is stored under several names).
    tiles: BTreeMap<u32, Vec<TileObject>>,
}

impl Row {
    fn len(&self) -> usize {
        self.tiles.values().map(Vec::len).sum()
    }

    fn all(&self, col: u32) -> &[TileObject] {
        self.tiles.get(&col).map_or(&[], Vec::as_slice)
    }

    /// The object serving column `col`, as the local store picks the file: extension `first`,
    /// then png, jpg, jpeg; for each the exact name, else its only other spelling.
    fn choose(&self, col: u32, first: ImageKind) -> Option<&TileObject> {
        let objs = self.all(col);
        for ext in std::iter::once(first.ext()).chain(crate::format::exploded::TILE_EXTS) {
            let canonical = names::col_file(col, ext);
            if let Some(o) = objs.iter().find(|o| o.name == canonical) {
                return Some(o);
            }
            let mut other = objs
                .iter()
                .filter(|o| o.name.eq_ignore_ascii_case(&canonical));
            if let (Some(o), None) = (other.next(), other.next()) {
                return Some(o);
            }
        }
        None
    }

    /// The name a new tile with extension `ext` gets in column `col`: the stored spelling of that
    /// name if there is exactly one, else the canonical name.
    fn name_for(&self, col: u32, ext: &str) -> String {
        let canonical = names::col_file(col, ext);
        let objs = self.all(col);
        if objs.iter().any(|o| o.name == canonical) {
            return canonical;
        }
        let mut other = objs
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(&canonical));
        match (other.next(), other.next()) {
            (Some(o), None) => o.name.clone(),
            _ => canonical,
        }
    }
}

/// Something kept for `recheck`: when it was read, and it.
type Kept<T> = (Instant, Arc<T>);

/// Row listings kept, bounded by their entries in all.
struct RowCache {
    rows: LruCache<(u8, u32), Kept<Row>>,
    entries: usize,
}

impl RowCache {
    fn put(&mut self, key: (u8, u32), row: Arc<Row>) {
        let n = row.len().max(1);
        if n > MAX_KEPT_ENTRIES {
            return;
        }
        if let Some((_, old)) = self.rows.pop(&key) {
            self.entries -= old.len().max(1);
        }
        self.entries += n;
        self.rows.put(key, (Instant::now(), row));
        while self.entries > MAX_KEPT_ENTRIES {
            match self.rows.pop_lru() {
                Some((_, (_, r))) => self.entries -= r.len().max(1),
                None => break,
            }
        }
    }

    fn forget(&mut self, level: u8, rows: std::ops::Range<u32>) {
        let gone: Vec<(u8, u32)> = self
            .rows
            .iter()
            .map(|(k, _)| *k)
            .filter(|(l, r)| *l == level && rows.contains(r))
            .collect();
        for k in gone {
            if let Some((_, r)) = self.rows.pop(&k) {
                self.entries -= r.len().max(1);
            }
        }
    }
}

/// An exploded cache under a prefix of an object store.
pub struct ExplodedObjects {
    /// The connection to the store: client, URL, layout, options, counters, and the conditional
    /// PUT (with the RGW quirk it learnt, and `--single-writer`).
    conn: Arc<Connection>,
    /// The extension tried first, and given to bytes that are neither PNG nor JPEG.
    default_kind: ImageKind,
    /// Level → its folder name as spelled in the store; kept `recheck`.
    levels: Mutex<Option<Kept<BTreeMap<u8, String>>>>,
    /// Level → names of its row prefixes (every spelling, unparsed); kept `recheck`.
    row_names: Mutex<HashMap<u8, Kept<Vec<String>>>>,
    rows: Mutex<RowCache>,
    /// Recently read tiles: (ETag of the object, bytes).
    recent: Mutex<LruCache<TileAddr, RecentTile>>,
    /// Times objects of rows read lately: key relative to the level folders' parent → (its ETag,
    /// records).
    row_times: Mutex<LruCache<String, (String, Arc<times::RowTimes>)>>,
}

impl ExplodedObjects {
    /// The exploded layout over `conn` (the cache's connection to its store); `default_kind` is
    /// the cache's tile format (conf.xml's CacheTileFormat; PNG without one).
    pub fn new(conn: Arc<Connection>, default_kind: ImageKind) -> ExplodedObjects {
        ExplodedObjects {
            conn,
            default_kind,
            levels: Mutex::new(None),
            row_names: Mutex::new(HashMap::new()),
            rows: Mutex::new(RowCache {
                rows: LruCache::unbounded(),
                entries: 0,
            }),
            recent: Mutex::new(LruCache::new(NonZeroUsize::new(RECENT_TILES).unwrap())),
            row_times: Mutex::new(LruCache::new(NonZeroUsize::new(times::KEPT).unwrap())),
        }
    }

    /// Request counters (the connection's: GETs, tile PUTs, conflicts, and the bytes and HEADs of
    /// conditional PUTs; every request to the store is counted there).
    pub fn stats(&self) -> &ObjectStats {
        &self.conn.stats
    }

    /// The connection to the store this layout goes through (probe, unquoted-ETag quirk, URL).
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    fn fresh<T>(&self, kept: &Kept<T>) -> bool {
        kept.0.elapsed() < self.conn.opts.recheck
    }

    /// `rel` (relative to the level folders' parent) relative to the cache.
    fn rel(&self, rel: &str) -> String {
        self.conn.rel_join(rel)
    }

    fn url_of(&self, rel: &str) -> PathBuf {
        rel_url(&self.conn.url, &self.rel(rel))
    }

    fn key_of(&self, rel: &str) -> Key {
        Key::from(self.conn.url.key(&self.rel(rel)))
    }

    /// Level → folder name as spelled in the store (the canonical name when present, else its
    /// only other spelling; a level spelled twice otherwise is skipped with a warning).
    fn level_names(&self) -> Result<Arc<BTreeMap<u8, String>>> {
        if let Some(k) = &*self.levels.lock().unwrap() {
            if self.fresh(k) {
                return Ok(k.1.clone());
            }
        }
        let l = self.list(&self.conn.tiles_rel.clone())?;
        let mut by_level: BTreeMap<u8, Vec<String>> = BTreeMap::new();
        for n in l.common_prefixes.iter().filter_map(|p| p.filename()) {
            if let Ok(level) = names::parse_level_dir(n) {
                by_level.entry(level).or_default().push(n.to_string());
            }
        }
        let mut out = BTreeMap::new();
        for (level, spelled) in by_level {
            let canonical = names::level_dir(level);
            if spelled.contains(&canonical) {
                out.insert(level, canonical);
            } else if spelled.len() == 1 {
                out.insert(level, spelled[0].clone());
            } else {
                tracing::warn!(
                    "{}: level {level} is spelled {spelled:?}; neither is read (keep one)",
                    rel_url(&self.conn.url, &self.conn.tiles_rel).display()
                );
            }
        }
        let out = Arc::new(out);
        *self.levels.lock().unwrap() = Some((Instant::now(), out.clone()));
        Ok(out)
    }

    /// The folder name of `level` as spelled in the store (canonical when it has none yet).
    fn level_dir(&self, level: u8) -> Result<String> {
        Ok(self
            .level_names()?
            .get(&level)
            .cloned()
            .unwrap_or_else(|| names::level_dir(level)))
    }

    /// One ListObjectsV2 (with delimiter) of the prefix `rel` (relative to the cache).
    fn list(&self, rel: &str) -> Result<object_store::ListResult> {
        let p = Key::from(self.conn.url.key(rel));
        let prefix = (!p.as_ref().is_empty()).then_some(&p);
        block(self.conn.store.list_with_delimiter(prefix))
            .map_err(|e| obj_err(&self.conn.url, rel, e))
    }

    /// Names of the row prefixes of `level` (every spelling, as stored), kept `recheck`.
    fn row_names(&self, level: u8) -> Result<Arc<Vec<String>>> {
        if let Some(k) = self.row_names.lock().unwrap().get(&level) {
            if self.fresh(k) {
                return Ok(k.1.clone());
            }
        }
        let ldir = self.level_dir(level)?;
        let l = self.list(&self.rel(&ldir))?;
        let v: Arc<Vec<String>> = Arc::new(
            l.common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect(),
        );
        if v.len() <= MAX_KEPT_ENTRIES {
            self.row_names
                .lock()
                .unwrap()
                .insert(level, (Instant::now(), v.clone()));
        }
        Ok(v)
    }

    /// Lists the row folder `dir` (relative to the level folders' parent). A name that is not a
    /// tile is skipped: with a warning naming the key when it starts with `C` (a tile name that
    /// does not parse), or, with `strict` (whole-level reads, as the local store's `groups`), an
    /// error naming the key.
    fn list_row(&self, dir: &str, strict: bool) -> Result<Row> {
        let l = self.list(&self.rel(dir))?;
        let mut row = Row {
            dir: dir.to_string(),
            tiles: BTreeMap::new(),
        };
        let mut times_etag = None;
        for o in &l.objects {
            let Some(n) = o.location.filename() else {
                continue;
            };
            if n == times::TIMES_NAME {
                times_etag = Some(o.e_tag.clone().unwrap_or_default());
                continue;
            }
            match names::parse_col_file(n) {
                Ok((col, _)) => row.tiles.entry(col).or_default().push(TileObject {
                    name: n.to_string(),
                    size: o.size,
                    mtime: o.last_modified.into(),
                    etag: o.e_tag.clone(),
                }),
                Err(e) if strict && n.starts_with('C') => {
                    return Err(Error::format(self.url_of(&format!("{dir}/{n}")), e))
                }
                Err(e) if n.starts_with(['C', 'c']) => tracing::warn!(
                    "{}: skipping: {e}",
                    self.url_of(&format!("{dir}/{n}")).display()
                ),
                Err(_) => tracing::debug!(
                    "{}: not a tile, ignored",
                    self.url_of(&format!("{dir}/{n}")).display()
                ),
            }
        }
        if let Some(etag) = times_etag {
            self.apply_times(&mut row, etag);
        }
        Ok(row)
    }

    /// Gives the row's tile objects the times recorded for them in the row's times object
    /// ([`times`]), listed with ETag `etag`: kept from an earlier read of that version, else one
    /// GET. A times object that is not one, or that cannot be read, is a warning, and the objects
    /// keep the store's times (as for Compact V2 sidecars).
    fn apply_times(&self, row: &mut Row, etag: String) {
        let rel = format!("{}/{}", row.dir, times::TIMES_NAME);
        let kept = self
            .row_times
            .lock()
            .unwrap()
            .get(&rel)
            .filter(|(e, _)| !etag.is_empty() && stamp(e) == stamp(&etag))
            .map(|(_, r)| r.clone());
        let recs = match kept {
            Some(r) => r,
            None => {
                // A time is never worth an EIO: a failed read leaves the store's times.
                let (bytes, got_etag) = match self.get(&rel) {
                    Ok(Some((b, e, _))) => (b, e),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("tile times not read, tiles show their objects' times: {e}");
                        return;
                    }
                };
                let Some(recs) = times::parse(&bytes) else {
                    tracing::warn!(
                        "{}: not a bundlefs times object; tiles show their objects' times",
                        self.url_of(&rel).display()
                    );
                    return;
                };
                let recs = Arc::new(recs);
                if let Some(e) = got_etag {
                    self.row_times.lock().unwrap().put(rel, (e, recs.clone()));
                }
                recs
            }
        };
        for (col, objs) in row.tiles.iter_mut() {
            for o in objs {
                if let Some(t) = times::recorded(&recs, *col, o.etag.as_deref()) {
                    o.mtime = t;
                }
            }
        }
    }

    /// Row `row` of `level`: kept if listed less than `recheck` ago, else one listing of the
    /// canonical row prefix, and when that is empty one of the row's only other spelling.
    fn row(&self, level: u8, row: u32) -> Result<Arc<Row>> {
        if let Some(k) = self.rows.lock().unwrap().rows.get(&(level, row)) {
            if self.fresh(k) {
                return Ok(k.1.clone());
            }
        }
        let ldir = self.level_dir(level)?;
        let canonical = names::row_dir(row);
        let mut r = self.list_row(&format!("{ldir}/{canonical}"), false)?;
        if r.tiles.is_empty() {
            let names = self.row_names(level)?;
            let mut other = names
                .iter()
                .filter(|n| **n != canonical && names::parse_row_dir(n) == Ok(row));
            if let (Some(n), None) = (other.next(), other.next()) {
                r = self.list_row(&format!("{ldir}/{n}"), false)?;
            }
        }
        let r = Arc::new(r);
        self.rows.lock().unwrap().put((level, row), r.clone());
        Ok(r)
    }

    /// Forgets what is kept of `level`'s rows `rows` (and the level and row names), after a write.
    fn forget(&self, level: u8, rows: std::ops::Range<u32>) {
        self.rows.lock().unwrap().forget(level, rows.clone());
        self.row_names.lock().unwrap().remove(&level);
        *self.levels.lock().unwrap() = None;
        let mut recent = self.recent.lock().unwrap();
        let gone: Vec<TileAddr> = recent
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| t.level == level && rows.contains(&t.row))
            .collect();
        for t in gone {
            recent.pop(&t);
        }
    }

    /// GET of the object at `rel` (relative to the level folders' parent): its bytes and ETag
    /// and time, None if it does not exist.
    fn get(&self, rel: &str) -> Result<Option<(Bytes, Option<String>, SystemTime)>> {
        self.conn.stats.gets.fetch_add(1, Ordering::Relaxed);
        let key = self.key_of(rel);
        let got = block(async {
            let r = self.conn.store.get(&key).await?;
            let meta = r.meta.clone();
            Ok::<_, object_store::Error>((meta, r.bytes().await?))
        });
        match got {
            Ok((meta, b)) => {
                self.conn
                    .stats
                    .bytes_down
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(Some((b, meta.e_tag, meta.last_modified.into())))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(obj_err(&self.conn.url, &self.rel(rel), e)),
        }
    }

    /// Runs `f` on each of `keys` with up to [`PARALLEL`] requests under way; results in order.
    fn many<T, F, Fut>(&self, keys: Vec<Key>, f: F) -> Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn ObjectStore>, Key) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let url = self.conn.url.clone();
        let store = self.conn.store.clone();
        block(async move {
            let mut out: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();
            let mut set = tokio::task::JoinSet::new();
            let mut next = 0;
            loop {
                while set.len() < PARALLEL && next < keys.len() {
                    let (i, key) = (next, keys[next].clone());
                    let fut = f(store.clone(), key.clone());
                    set.spawn(async move { (i, key, fut.await) });
                    next += 1;
                }
                let Some(done) = set.join_next().await else {
                    break;
                };
                let (i, key, r) = done.map_err(|e| {
                    Error::io(
                        PathBuf::from(url.to_string()),
                        std::io::Error::other(format!("a request task failed: {e}")),
                    )
                })?;
                out[i] = Some(r.map_err(|e| obj_err_key(&url, key.as_ref(), e))?);
            }
            Ok(out
                .into_iter()
                .map(|o| o.expect("every key answered"))
                .collect())
        })
    }

    /// DELETEs of `keys` ([`Self::many`]); an object already gone is no error.
    fn delete_all(&self, keys: Vec<Key>) -> Result<()> {
        self.many(keys, |store, key| async move {
            match store.delete(&key).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                r => r,
            }
        })
        .map(|_| ())
    }

    /// Where a new tile `t` with `bytes` goes (relative to the level folders' parent), and the
    /// objects of the same tile under other names, to delete once it is stored (a tile stored
    /// under another extension is replaced, not kept beside, as in the local store).
    fn target(&self, t: TileAddr, bytes: &[u8]) -> Result<(String, Vec<String>)> {
        let row = self.row(t.level, t.row)?;
        let ext = sniff(bytes).unwrap_or(self.default_kind).ext();
        let name = row.name_for(t.col, ext);
        let others = row
            .all(t.col)
            .iter()
            .filter(|o| o.name != name)
            .map(|o| format!("{}/{}", row.dir, o.name))
            .collect();
        Ok((format!("{}/{name}", row.dir), others))
    }

    /// Every tile object of `level`: (tile, key relative to the level folders' parent, size).
    /// Errors as the local store's `groups`: a row prefix `R…` or tile name `C…` that does not
    /// parse, naming the key.
    fn level_objects(&self, level: u8) -> Result<Vec<(TileAddr, String, u64)>> {
        let ldir = self.level_dir(level)?;
        let mut out = Vec::new();
        for rn in self.row_names(level)?.iter() {
            if !rn.starts_with(['R', 'r']) {
                continue;
            }
            let row = match names::parse_row_dir(rn) {
                Ok(row) => row,
                Err(e) if rn.starts_with('R') => {
                    return Err(Error::format(self.url_of(&format!("{ldir}/{rn}")), e))
                }
                Err(_) => continue,
            };
            let r = self.list_row(&format!("{ldir}/{rn}"), true)?;
            for (col, objs) in &r.tiles {
                for o in objs {
                    out.push((
                        TileAddr::new(level, row, *col),
                        format!("{}/{}", r.dir, o.name),
                        o.size,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The connection's counters (this layout's requests and its conditional PUTs), for the log.
    pub fn stats_line(&self) -> String {
        let s = &self.conn.stats;
        format!(
            "{} (exploded): {} GETs ({} bytes), {} PUTs of tiles ({} bytes sent), {} HEADs, {} \
             conflicts with other writers; tile-times objects: {} PUTs, {} conflicts",
            self.conn.url,
            s.gets.load(Ordering::Relaxed),
            s.bytes_down.load(Ordering::Relaxed),
            s.puts.load(Ordering::Relaxed),
            s.bytes_up.load(Ordering::Relaxed),
            s.heads.load(Ordering::Relaxed),
            s.conflicts.load(Ordering::Relaxed),
            s.sidecar_puts.load(Ordering::Relaxed),
            s.sidecar_conflicts.load(Ordering::Relaxed)
        )
    }
}

fn empty_tile(url: PathBuf) -> Error {
    Error::io(
        url,
        std::io::Error::other("an empty (0-byte) tile object; not served as a tile"),
    )
}

/// What an update saw of one slot: the object's key (relative to the level folders' parent) and
/// ETag, or None when there was no tile.
type Seen = Option<(String, String)>;

/// The group as [`Storage::update_group`] shows it: each tile read by GET, its ETag noted for the
/// conditional PUT.
struct View<'a> {
    store: &'a ExplodedObjects,
    id: BundleId,
    seen: Mutex<HashMap<Slot, Seen>>,
}

impl GroupView for View<'_> {
    fn exists(&self) -> bool {
        true
    }

    fn tile(&self, slot: Slot) -> Result<Option<TileBytes>> {
        let s = self.store;
        let t = self.id.tile(slot);
        let row = s.row(t.level, t.row)?;
        let Some(o) = row.choose(t.col, s.default_kind) else {
            self.seen.lock().unwrap().insert(slot, None);
            return Ok(None);
        };
        let rel = format!("{}/{}", row.dir, o.name);
        match s.get(&rel)? {
            None => {
                self.seen.lock().unwrap().insert(slot, None);
                Ok(None)
            }
            Some((b, etag, mtime)) => {
                if b.is_empty() {
                    return Err(empty_tile(s.url_of(&rel)));
                }
                let Some(etag) = etag else {
                    return Err(Error::io(
                        s.url_of(&rel),
                        std::io::Error::other("the store sent no ETag; bundlefs needs ETags"),
                    ));
                };
                self.seen.lock().unwrap().insert(slot, Some((rel, etag)));
                Ok(Some(TileBytes::shared(Arc::new(b.to_vec()), Some(mtime))))
            }
        }
    }
}

impl Storage for ExplodedObjects {
    /// Never claimed: every answer may need a request (a mount hands it to its store threads).
    fn at_hand(&self, _t: TileAddr, _bytes: bool) -> bool {
        false
    }

    fn kind(&self) -> StorageKind {
        StorageKind::StoreExploded
    }

    fn levels(&self) -> Result<Vec<u8>> {
        Ok(self.level_names()?.keys().copied().collect())
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        for _ in 0..2 {
            let row = self.row(t.level, t.row)?;
            let Some(o) = row.choose(t.col, self.default_kind) else {
                return Ok(None);
            };
            let rel = format!("{}/{}", row.dir, o.name);
            if let (Some(tag), Some((etag, v))) = (&o.etag, self.recent.lock().unwrap().get(&t)) {
                if tag == etag {
                    return Ok(Some(TileBytes::shared(v.clone(), Some(o.mtime))));
                }
            }
            if o.size == 0 {
                return Err(empty_tile(self.url_of(&rel)));
            }
            match self.get(&rel)? {
                Some((b, etag, mtime)) => {
                    if b.is_empty() {
                        return Err(empty_tile(self.url_of(&rel)));
                    }
                    // The listed object (whose time may be a recorded one), or a newer version.
                    let same = |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if stamp(a) == stamp(b));
                    let mtime = if same(&etag, &o.etag) { o.mtime } else { mtime };
                    let v = Arc::new(b.to_vec());
                    if let Some(etag) = etag.filter(|_| v.len() <= RECENT_TILE_MAX) {
                        self.recent.lock().unwrap().put(t, (etag, v.clone()));
                    }
                    return Ok(Some(TileBytes::shared(v, Some(mtime))));
                }
                // Deleted since the listing: list the row again, once.
                None => self.rows.lock().unwrap().forget(t.level, t.row..t.row + 1),
            }
        }
        Ok(None)
    }

    fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        Ok(self
            .row_names(level)?
            .iter()
            .filter_map(|n| names::parse_row_dir(n).ok())
            .collect())
    }

    fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let r = self.row(level, row)?;
        Ok(r.tiles
            .keys()
            .filter_map(|col| r.choose(*col, self.default_kind).map(|o| (*col, o.size)))
            .collect())
    }

    fn groups(&self, level: u8) -> Result<Vec<TileGroup>> {
        let mut map: BTreeMap<BundleId, Vec<(TileAddr, PathBuf)>> = BTreeMap::new();
        for (t, rel, _) in self.level_objects(level)? {
            map.entry(t.bundle())
                .or_default()
                .push((t, self.url_of(&rel)));
        }
        Ok(map
            .into_iter()
            .map(|(id, files)| TileGroup { id, files })
            .collect())
    }

    fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        let root = format!(
            "{}://{}/",
            self.conn.url.scheme.as_str(),
            self.conn.url.bucket
        );
        let keys: Vec<Key> = g
            .files
            .iter()
            .map(|(_, p)| {
                let s = p.to_string_lossy();
                s.strip_prefix(&root).map(Key::from).ok_or_else(|| {
                    Error::invalid(format!("{}: not an object of {}", s, self.conn.url))
                })
            })
            .collect::<Result<_>>()?;
        let n = keys.len() as u64;
        let got = self.many(keys, |store, key| async move {
            store.get(&key).await?.bytes().await
        })?;
        self.conn.stats.gets.fetch_add(n, Ordering::Relaxed);
        let down: u64 = got.iter().map(|b| b.len() as u64).sum();
        self.conn
            .stats
            .bytes_down
            .fetch_add(down, Ordering::Relaxed);
        Ok(g.files
            .iter()
            .zip(got)
            .map(|((t, _), b)| (*t, TileBytes::owned(b.to_vec())))
            .collect())
    }

    fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let mut s = LevelStats::default();
        let mut bundles = BTreeSet::new();
        for (t, _, size) in self.level_objects(level)? {
            bundles.insert(t.bundle());
            s.tiles += 1;
            s.tile_bytes += size;
            s.file_bytes += size;
        }
        s.bundles = bundles.len() as u64;
        Ok(s)
    }

    fn write_group(&self, id: BundleId, tiles: &[TimedSlot]) -> Result<WriteStats> {
        check_tiles(&self.url_of(&self.level_dir(id.level)?), id, tiles)?;
        let last: BTreeMap<Slot, &[u8]> = tiles.iter().map(|(s, b, _)| (*s, *b)).collect();
        // The time given with the last copy of each tile (the one stored).
        let when: BTreeMap<Slot, Option<SystemTime>> =
            tiles.iter().map(|(s, _, t)| (*s, *t)).collect();
        let mut puts = Vec::new();
        let mut stale = Vec::new();
        let mut st = WriteStats::default();
        // Per put: the tile, its row folder, and the time to record.
        let mut placed: Vec<(TileAddr, String, Option<SystemTime>)> = Vec::new();
        for (slot, bytes) in &last {
            let (rel, others) = self.target(id.tile(*slot), bytes)?;
            let dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            placed.push((id.tile(*slot), dir, when[slot]));
            puts.push((self.key_of(&rel), Bytes::copy_from_slice(bytes)));
            stale.extend(others.iter().map(|r| self.key_of(r)));
            st.tiles += 1;
            st.bytes_written += bytes.len() as u64;
        }
        let bodies: HashMap<Key, Bytes> = puts.iter().cloned().collect();
        let bodies = Arc::new(bodies);
        let keys: Vec<Key> = puts.into_iter().map(|(k, _)| k).collect();
        let result = self.many(keys, |store, key| {
            let body = bodies[&key].clone();
            async move {
                store
                    .put(&key, PutPayload::from(body))
                    .await
                    .map(|r| r.e_tag)
            }
        });
        self.forget(id.level, id.row0..id.row0 + BUNDLE_DIM);
        let etags = result?;
        // Times given with the tiles go to their rows' times objects, keyed to the ETags stored.
        let mut by_row: BTreeMap<String, (TileAddr, Vec<times::Record>)> = BTreeMap::new();
        for ((t, dir, when), etag) in placed.into_iter().zip(etags) {
            if let (Some(when), Some(etag)) = (when, etag) {
                by_row
                    .entry(dir)
                    .or_insert_with(|| (t, Vec::new()))
                    .1
                    .push((t.col, etag, when));
            }
        }
        for (dir, (t, recs)) in by_row {
            self.record_times(t, &dir, &recs);
        }
        self.conn
            .stats
            .puts
            .fetch_add(st.tiles as u64, Ordering::Relaxed);
        self.conn
            .stats
            .bytes_up
            .fetch_add(st.bytes_written, Ordering::Relaxed);
        self.delete_all(stale)?;
        Ok(st)
    }

    fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats> {
        let policy = self.conn.policy;
        let mut stored: BTreeSet<Slot> = BTreeSet::new();
        let mut st = WriteStats::default();
        let mut pending: Vec<String> = Vec::new();
        let done = policy.compare_and_swap(&id, |attempt| {
            let view = View {
                store: self,
                id,
                seen: Mutex::new(HashMap::new()),
            };
            let decided = f(&view)?;
            // Tiles stored by an earlier try stay as stored: deciding them again against our own
            // tile would, for a merge, composite it twice.
            let todo: BTreeMap<Slot, TileBytes> = decided
                .into_iter()
                .filter(|(s, _)| !stored.contains(s))
                .collect();
            if todo.is_empty() {
                return Ok(Try::Done(()));
            }
            let timed: Vec<TimedSlot> = todo.iter().map(|(s, b)| (*s, &b[..], None)).collect();
            check_tiles(&self.url_of(&self.level_dir(id.level)?), id, &timed)?;
            let seen = view.seen.into_inner().unwrap();
            pending.clear();
            for (slot, bytes) in &todo {
                let t = id.tile(*slot);
                let (rel, others) = self.target(t, bytes)?;
                let key = self.key_of(&rel);
                let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
                let ok = match seen.get(slot) {
                    // Not looked at by the update: its decision did not depend on the tile
                    // stored, so it overwrites it.
                    None => {
                        block(self.conn.store.put(&key, payload))
                            .map_err(|e| obj_err_key(&self.conn.url, key.as_ref(), e))?;
                        true
                    }
                    Some(Some((old, etag))) if *old == rel => self
                        .conn
                        .put_conditional(&key, payload, Some(etag))?
                        .is_some(),
                    // No tile, or one under another name: this name must still be free.
                    Some(_) => self.conn.put_conditional(&key, payload, None)?.is_some(),
                };
                if ok {
                    for o in &others {
                        block(self.conn.store.delete(&self.key_of(o)))
                            .or_else(|e| match e {
                                object_store::Error::NotFound { .. } => Ok(()),
                                e => Err(e),
                            })
                            .map_err(|e| obj_err(&self.conn.url, &self.rel(o), e))?;
                    }
                    stored.insert(*slot);
                    st.tiles += 1;
                    st.bytes_written += bytes.len() as u64;
                    self.conn.stats.puts.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.conn.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    pending.push(rel);
                }
            }
            // Once per try, not per tile: the next try lists the rows again (other writers'
            // tiles), and so do readers after our writes.
            self.forget(id.level, id.row0..id.row0 + BUNDLE_DIM);
            if pending.is_empty() {
                if attempt > 0 {
                    tracing::info!(
                        "{}: tiles of bundle {} stored after {attempt} conflict(s) with other \
                         writers (conditional PUT refused, tiles read again and decided again); \
                         conflicts in all: {}",
                        self.conn.url,
                        names::bundle_base(&id),
                        self.conn.stats.conflicts.load(Ordering::Relaxed)
                    );
                }
                return Ok(Try::Done(()));
            }
            tracing::debug!(
                "{}: another writer changed {} tile(s) first (try {}); deciding again",
                self.url_of(&pending[0]).display(),
                pending.len(),
                attempt + 1
            );
            Ok(Try::Lost)
        })?;
        if done.is_some() {
            return Ok(st);
        }
        Err(Error::io(
            self.url_of(&pending[0]),
            std::io::Error::other(format!(
                "gave up after {} tries: other writers changed this tile each time (conditional \
                 PUT refused); {} tile(s) of this write were not stored, {} were",
                policy.attempts,
                pending.len(),
                stored.len()
            )),
        ))
    }

    fn delete_group(&self, id: BundleId, slots: &[Slot]) -> Result<()> {
        let mut keys = Vec::new();
        for s in slots {
            let t = id.tile(*s);
            let row = self.row(t.level, t.row)?;
            keys.extend(
                row.all(t.col)
                    .iter()
                    .map(|o| self.key_of(&format!("{}/{}", row.dir, o.name))),
            );
        }
        let result = self.delete_all(keys);
        self.forget(id.level, id.row0..id.row0 + BUNDLE_DIM);
        result?;
        // A row folder left without tiles loses its times object too (else the prefix, and so
        // an empty row folder, would stay).
        let rows: BTreeSet<u32> = slots.iter().map(|s| id.row0 + s.row).collect();
        let mut gone = Vec::new();
        for row in rows {
            let r = self.row(id.level, row)?;
            if r.tiles.is_empty() {
                gone.push(self.key_of(&format!("{}/{}", r.dir, times::TIMES_NAME)));
            }
        }
        if !gone.is_empty() {
            self.delete_all(gone)?;
            self.forget(id.level, id.row0..id.row0 + BUNDLE_DIM);
        }
        Ok(())
    }

    fn tile_mtime(&self, _t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        bytes.mtime()
    }

    /// An object's own time is the store's (its last PUT): the time goes to the row's times
    /// object ([`times`]), keyed to the tile object's ETag. False if the tile is not stored.
    fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        let row = self.row(t.level, t.row)?;
        let Some(o) = row.choose(t.col, self.default_kind) else {
            return Ok(false);
        };
        if let Some(etag) = &o.etag {
            self.record_times(t, &row.dir, &[(t.col, etag.clone(), mtime)]);
            self.rows.lock().unwrap().forget(t.level, t.row..t.row + 1);
        }
        Ok(true)
    }

    fn stats_without_reading(&self) -> bool {
        true
    }

    /// Size and time from the row's listing, no GET, for a tile object named with the cache's
    /// own extension. A tile stored under another extension, or a zero-byte object, gives None:
    /// the caller reads it (and names it by its bytes, or gets the error naming the key).
    fn tile_stat(&self, t: TileAddr) -> Result<Option<TileStat>> {
        let row = self.row(t.level, t.row)?;
        let Some(o) = row.choose(t.col, self.default_kind) else {
            return Ok(None);
        };
        let ext = o.name.rsplit_once('.').map_or("", |(_, e)| e);
        let own = ImageKind::from_ext(ext) == Some(self.default_kind);
        if !own || o.size == 0 {
            return Ok(None);
        }
        Ok(Some(TileStat {
            size: o.size,
            mtime: Some(o.mtime),
        }))
    }

    /// A row prefix goes with its last object (the store's `delete_group`): counts the rows of
    /// `rows` now without tiles.
    fn remove_empty_rows(&self, level: u8, rows: &BTreeSet<u32>) -> u64 {
        rows.iter()
            .filter(|r| self.cols(level, **r).is_ok_and(|c| c.is_empty()))
            .count() as u64
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        let kept = self
            .rows
            .lock()
            .unwrap()
            .rows
            .peek(&(t.level, t.row))
            .map(|k| k.1.clone());
        if let Some(row) = kept {
            if let Some(o) = row.choose(t.col, self.default_kind) {
                return self.url_of(&format!("{}/{}", row.dir, o.name));
            }
        }
        self.url_of(&format!(
            "{}/{}/{}",
            names::level_dir(t.level),
            names::row_dir(t.row),
            names::col_file(t.col, self.default_kind.ext())
        ))
    }

    fn invalidate(&self, id: &BundleId) {
        self.rows
            .lock()
            .unwrap()
            .forget(id.level, id.row0..id.row0 + BUNDLE_DIM);
    }

    fn lookups_list(&self) -> bool {
        false
    }

    fn counters(&self) -> Option<crate::cache::counters::StoreCounters> {
        // Every request through the connection (this layout's, its conditional PUTs') is
        // counted there, once.
        Some(self.conn.stats.snapshot())
    }

    /// The kept row listings older than `recheck` (the [`FOREIGN_ROWS`] most recently used at
    /// most: that many ListObjectsV2 per `recheck`), listed again; a row whose tiles (names,
    /// ETags) differ is reported for each bundle the changed columns are in. Own writes drop the
    /// listings they touch, so they are not reported.
    fn foreign_changes(&self) -> Vec<(BundleId, Vec<u32>)> {
        let kept: Vec<((u8, u32), Arc<Row>)> = self
            .rows
            .lock()
            .unwrap()
            .rows
            .iter()
            .filter(|(_, k)| !self.fresh(k))
            .take(FOREIGN_ROWS)
            .map(|(key, k)| (*key, k.1.clone()))
            .collect();
        let mut changed: BTreeMap<BundleId, BTreeSet<u32>> = BTreeMap::new();
        for ((level, row), old) in kept {
            let new = match self.list_row(&old.dir, false) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    tracing::warn!("checking for changes by other writers: {e}");
                    continue;
                }
            };
            let cols: BTreeSet<u32> = old.tiles.keys().chain(new.tiles.keys()).copied().collect();
            let tag = |r: &Row, col: u32| -> Vec<(String, Option<String>)> {
                r.all(col)
                    .iter()
                    .map(|o| (o.name.clone(), o.etag.clone()))
                    .collect()
            };
            for col in cols {
                if tag(&old, col) != tag(&new, col) {
                    let t = TileAddr::new(level, row, col);
                    changed
                        .entry(t.bundle())
                        .or_default()
                        .insert(row - t.bundle().row0);
                    self.recent.lock().unwrap().pop(&t);
                }
            }
            self.rows.lock().unwrap().put((level, row), new);
        }
        changed
            .into_iter()
            .map(|(id, rows)| (id, rows.into_iter().collect()))
            .collect()
    }
}

impl Drop for ExplodedObjects {
    fn drop(&mut self) {
        if self.conn.stats.puts.load(Ordering::Relaxed)
            + self.conn.stats.sidecar_puts.load(Ordering::Relaxed)
            > 0
        {
            tracing::info!("{}", self.stats_line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::url::ObjectUrl;
    use crate::cache::CacheOptions;
    use crate::format::conf::StorageFormat;
    use object_store::memory::InMemory;
    use std::time::Duration;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0";

    fn url() -> ObjectUrl {
        ObjectUrl::parse("s3://bucket/caches/world")
            .unwrap()
            .unwrap()
    }

    fn storage(mem: &Arc<InMemory>, tiles_rel: &str, recheck: Duration) -> ExplodedObjects {
        let opts = CacheOptions {
            recheck,
            ..CacheOptions::default()
        };
        let conn = Connection::new(url(), mem.clone(), tiles_rel, opts).with_retry(
            super::super::RetryPolicy {
                attempts: 20,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(4),
            },
        );
        ExplodedObjects::new(Arc::new(conn), ImageKind::Png)
    }

    fn png(n: u32) -> Vec<u8> {
        [
            PNG,
            format!("png tile {n} ")
                .repeat(1 + n as usize % 5)
                .as_bytes(),
        ]
        .concat()
    }

    fn keys(mem: &InMemory) -> Vec<String> {
        block(async {
            mem.list_with_delimiter(None).await.unwrap();
            let mut out = Vec::new();
            let mut todo = vec![None];
            while let Some(p) = todo.pop() {
                let l = mem.list_with_delimiter(p.as_ref()).await.unwrap();
                out.extend(l.objects.into_iter().map(|o| o.location.to_string()));
                todo.extend(l.common_prefixes.into_iter().map(Some));
            }
            out.sort();
            out
        })
    }

    fn put_raw(mem: &InMemory, key: &str, bytes: &[u8]) {
        block(mem.put(&Key::from(key), PutPayload::from(bytes.to_vec()))).unwrap();
    }

    const ID: BundleId = BundleId {
        level: 3,
        row0: 128,
        col0: 0,
    };

    fn slot(row: u32, col: u32) -> Slot {
        Slot { row, col }
    }

    #[test]
    fn writes_reads_lists_and_deletes_tiles_as_objects() {
        let mem = Arc::new(InMemory::new());
        let s = storage(&mem, "_alllayers", Duration::from_secs(60));
        assert_eq!(s.levels().unwrap(), Vec::<u8>::new());
        let (a, b, c) = (png(1), png(2), png(3));
        s.write_group(
            ID,
            &[
                (slot(0, 1), &a[..], None),
                (slot(0, 2), &b[..], None),
                (slot(5, 0), &c[..], None),
            ],
        )
        .unwrap();
        assert_eq!(
            keys(&mem),
            vec![
                "caches/world/_alllayers/L03/R00000080/C00000001.png",
                "caches/world/_alllayers/L03/R00000080/C00000002.png",
                "caches/world/_alllayers/L03/R00000085/C00000000.png",
            ]
        );
        assert_eq!(s.levels().unwrap(), vec![3]);
        assert_eq!(s.rows(3).unwrap(), BTreeSet::from([128, 133]));
        assert_eq!(
            s.cols(3, 128).unwrap(),
            vec![(1, a.len() as u64), (2, b.len() as u64)]
        );
        assert_eq!(&s.tile(ID.tile(slot(0, 1))).unwrap().unwrap()[..], &a[..]);
        assert!(s.tile(ID.tile(slot(0, 3))).unwrap().is_none());
        let gets = s.stats().gets.load(Ordering::Relaxed);
        let st = s.tile_stat(ID.tile(slot(0, 2))).unwrap().unwrap();
        assert_eq!(st.size, b.len() as u64);
        assert_eq!(
            s.stats().gets.load(Ordering::Relaxed),
            gets,
            "stat without a GET"
        );
        let groups = s.groups(3).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].id, ID);
        let mut read: Vec<(TileAddr, Vec<u8>)> = s
            .read_group(&groups[0])
            .unwrap()
            .into_iter()
            .map(|(t, b)| (t, b.to_vec()))
            .collect();
        read.sort_by_key(|(t, _)| (t.row, t.col));
        assert_eq!(
            read,
            vec![
                (ID.tile(slot(0, 1)), a.clone()),
                (ID.tile(slot(0, 2)), b.clone()),
                (ID.tile(slot(5, 0)), c.clone()),
            ]
        );
        let st = s.level_stats(3).unwrap();
        let total = (a.len() + b.len() + c.len()) as u64;
        assert_eq!(
            (st.bundles, st.tiles, st.tile_bytes, st.file_bytes),
            (1, 3, total, total)
        );
        // A JPEG over the PNG tile replaces it under its own extension (not kept beside).
        let j = [JPEG, b"jpeg bytes"].concat();
        s.write_group(ID, &[(slot(0, 1), &j[..], None)]).unwrap();
        let k = keys(&mem);
        assert!(k.contains(&"caches/world/_alllayers/L03/R00000080/C00000001.jpg".to_string()));
        assert!(!k.contains(&"caches/world/_alllayers/L03/R00000080/C00000001.png".to_string()));
        assert_eq!(&s.tile(ID.tile(slot(0, 1))).unwrap().unwrap()[..], &j[..]);
        // Not the cache's extension (PNG here): read and named by its bytes, not stated.
        assert!(s.tile_stat(ID.tile(slot(0, 1))).unwrap().is_none());
        assert_eq!(
            s.location(ID.tile(slot(0, 1))),
            PathBuf::from("s3://bucket/caches/world/_alllayers/L03/R00000080/C00000001.jpg")
        );
        s.delete_group(ID, &[slot(0, 1), slot(5, 0)]).unwrap();
        assert!(s.tile(ID.tile(slot(0, 1))).unwrap().is_none());
        assert_eq!(s.rows(3).unwrap(), BTreeSet::from([128]));
        assert_eq!(keys(&mem).len(), 1);
        assert_eq!(s.stats().conflicts.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn names_in_either_case_are_read_and_bad_objects_are_named() {
        let mem = Arc::new(InMemory::new());
        // MapProxy's layout: level folders at the prefix.
        put_raw(&mem, "caches/world/l04/r0000001f/c0000002A.PNG", &png(7));
        put_raw(&mem, "caches/world/l04/r0000001f/notes.txt", b"not a tile");
        put_raw(&mem, "caches/world/L05/R00000002/C00000003.png", b"");
        put_raw(&mem, "caches/world/L05/R00000002/C00000004.png", &png(4));
        let s = storage(&mem, "", Duration::from_secs(60));
        assert_eq!(s.levels().unwrap(), vec![4, 5]);
        let t = TileAddr::new(4, 0x1f, 0x2a);
        assert_eq!(&s.tile(t).unwrap().unwrap()[..], &png(7)[..]);
        assert_eq!(s.rows(4).unwrap(), BTreeSet::from([0x1f]));
        // A zero-byte object: listed (size 0), its read an error naming the key.
        assert_eq!(
            s.cols(5, 2).unwrap(),
            vec![(3, 0), (4, png(4).len() as u64)]
        );
        let e = s.tile(TileAddr::new(5, 2, 3)).unwrap_err().to_string();
        assert!(
            e.contains("s3://bucket/caches/world/L05/R00000002/C00000003.png")
                && e.contains("empty (0-byte) tile object"),
            "{e}"
        );
        // A tile name that does not parse: skipped when reading a row, an error naming the key
        // for whole-level reads (as the local store's groups).
        put_raw(&mem, "caches/world/L05/R00000002/C0000000x.png", &png(1));
        let s = storage(&mem, "", Duration::from_secs(60));
        assert!(s.tile(TileAddr::new(5, 2, 4)).unwrap().is_some());
        let e = s.groups(5).unwrap_err().to_string();
        assert!(
            e.contains("s3://bucket/caches/world/L05/R00000002/C0000000x.png"),
            "{e}"
        );
        // A write goes under the spelling already stored.
        let new = png(8);
        s.write_group(
            t.bundle(),
            &[(
                Slot {
                    row: 0x1f,
                    col: 0x2a,
                },
                &new[..],
                None,
            )],
        )
        .unwrap();
        assert!(keys(&mem).contains(&"caches/world/l04/r0000001f/c0000002A.PNG".to_string()));
        assert_eq!(&s.tile(t).unwrap().unwrap()[..], &new[..]);
    }

    #[test]
    fn a_merge_that_loses_a_race_decides_again_for_the_lost_tiles_only() {
        let mem = Arc::new(InMemory::new());
        let s = storage(&mem, "_alllayers", Duration::from_secs(60));
        let other = storage(&mem, "_alllayers", Duration::from_secs(60));
        let (a, b) = (png(1), png(2));
        s.write_group(
            ID,
            &[(slot(0, 1), &a[..], None), (slot(0, 2), &b[..], None)],
        )
        .unwrap();
        let theirs = png(20);
        let fresh = png(30);
        let mut calls = 0;
        // A "merge": each tile becomes what is stored plus a suffix. Between our reads and our
        // PUTs another writer replaces tile 2 and creates tile 3 (If-Match and If-None-Match:
        // * both fail); tile 1 goes through at once and must not be merged twice.
        let st = s
            .update_group(ID, &mut |v: &dyn GroupView| {
                calls += 1;
                let mut out = Vec::new();
                for col in [1, 2, 3] {
                    let now = v
                        .tile(slot(0, col))?
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    let base = if now.is_empty() { png(0) } else { now };
                    out.push((
                        slot(0, col),
                        TileBytes::owned([&base[..], b"+ours"].concat()),
                    ));
                }
                if calls == 1 {
                    other
                        .write_group(
                            ID,
                            &[
                                (slot(0, 2), &theirs[..], None),
                                (slot(0, 3), &fresh[..], None),
                            ],
                        )
                        .unwrap();
                }
                Ok(out)
            })
            .unwrap();
        assert_eq!(calls, 2, "decided again after the conflicts");
        assert_eq!(st.tiles, 3);
        assert_eq!(s.stats().conflicts.load(Ordering::Relaxed), 2);
        let reader = storage(&mem, "_alllayers", Duration::ZERO);
        let got = |col| {
            reader
                .tile(ID.tile(slot(0, col)))
                .unwrap()
                .unwrap()
                .to_vec()
        };
        assert_eq!(got(1), [&a[..], b"+ours"].concat(), "merged once");
        assert_eq!(
            got(2),
            [&theirs[..], b"+ours"].concat(),
            "over the winner's tile"
        );
        assert_eq!(
            got(3),
            [&fresh[..], b"+ours"].concat(),
            "over the tile made meanwhile"
        );
    }

    #[test]
    fn gives_up_after_bounded_tries_naming_the_tile() {
        let mem = Arc::new(InMemory::new());
        let s = storage(&mem, "_alllayers", Duration::from_secs(60));
        let other = storage(&mem, "_alllayers", Duration::from_secs(60));
        let a = png(1);
        s.write_group(ID, &[(slot(0, 1), &a[..], None)]).unwrap();
        let mut round = 100;
        let e = s
            .update_group(ID, &mut |v: &dyn GroupView| {
                round += 1;
                let now = v.tile(slot(0, 1))?.unwrap().to_vec();
                let theirs = png(round);
                other
                    .write_group(ID, &[(slot(0, 1), &theirs[..], None)])
                    .unwrap();
                Ok(vec![(
                    slot(0, 1),
                    TileBytes::owned([&now[..], b"!"].concat()),
                )])
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("gave up after 20 tries"), "{e}");
        assert!(
            e.contains("s3://bucket/caches/world/_alllayers/L03/R00000080/C00000001.png"),
            "{e}"
        );
        assert!(!s
            .tile(ID.tile(slot(0, 1)))
            .unwrap()
            .unwrap()
            .ends_with(b"!"));
    }

    #[test]
    fn open_creates_an_exploded_cache_and_finds_it_again() {
        use super::super::{open_in, NewCache, WriteCoordination};
        let mem = Arc::new(InMemory::new());
        let conf =
            crate::format::conf::TileScheme::web_mercator(4, crate::format::conf::TileFormat::Jpeg)
                .to_conf_xml();
        let new = NewCache {
            storage: StorageFormat::Exploded,
            conf_xml: Some(&conf),
            cdi: None,
        };
        let o = open_in(&url(), mem.clone(), CacheOptions::default(), Some(new)).unwrap();
        assert_eq!(o.storage, StorageFormat::Exploded);
        // No tiles yet: conf.xml says Compact V2, the cache was asked for exploded.
        assert!(o.arcgis_layout);
        let j = [JPEG, b"jpeg"].concat();
        o.store
            .write_group(ID, &[(slot(0, 0), &j[..], None)])
            .unwrap();
        assert!(
            keys(&mem).contains(&"caches/world/_alllayers/L03/R00000080/C00000000.jpg".to_string())
        );
        // Opened again (a writable mount: the probe runs), the keys tell the storage.
        let mut opts = CacheOptions::default();
        opts.object.writes = WriteCoordination::Probed;
        let o = open_in(&url(), mem.clone(), opts, None).unwrap();
        assert_eq!(o.storage, StorageFormat::Exploded);
        assert_eq!(
            &o.store.tile(ID.tile(slot(0, 0))).unwrap().unwrap()[..],
            &j[..]
        );
        // Another storage over it is refused by name.
        let new = NewCache {
            storage: StorageFormat::CompactV2,
            conf_xml: Some(&conf),
            cdi: None,
        };
        let e = open_in(&url(), mem.clone(), CacheOptions::default(), Some(new))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("already holds a cache in exploded storage"),
            "{e}"
        );
    }

    #[test]
    fn foreign_changes_name_the_rows_another_writer_changed_once() {
        let mem = Arc::new(InMemory::new());
        let reader = storage(&mem, "_alllayers", Duration::ZERO);
        let writer = storage(&mem, "_alllayers", Duration::from_secs(60));
        let (a, b) = (png(1), png(2));
        writer
            .write_group(
                ID,
                &[(slot(0, 1), &a[..], None), (slot(4, 2), &b[..], None)],
            )
            .unwrap();
        // The reader has read rows 128 and 132 (kept listings).
        assert!(reader.tile(ID.tile(slot(0, 1))).unwrap().is_some());
        assert!(reader.tile(ID.tile(slot(4, 2))).unwrap().is_some());
        assert_eq!(reader.foreign_changes(), vec![], "nothing changed yet");
        let c = png(3);
        writer
            .write_group(ID, &[(slot(4, 2), &c[..], None)])
            .unwrap();
        assert_eq!(reader.foreign_changes(), vec![(ID, vec![4])]);
        assert_eq!(reader.foreign_changes(), vec![], "reported once");
        assert_eq!(
            &reader.tile(ID.tile(slot(4, 2))).unwrap().unwrap()[..],
            &c[..]
        );
        // A tile deleted by another writer in a bundle further right is named with its bundle.
        let right = BundleId { col0: 128, ..ID };
        writer
            .write_group(right, &[(slot(0, 5), &a[..], None)])
            .unwrap();
        assert!(reader.tile(right.tile(slot(0, 5))).unwrap().is_some());
        let _ = reader.foreign_changes();
        writer.delete_group(right, &[slot(0, 5)]).unwrap();
        assert_eq!(reader.foreign_changes(), vec![(right, vec![0])]);
        // The reader's own write is not reported.
        reader
            .write_group(ID, &[(slot(0, 1), &c[..], None)])
            .unwrap();
        assert!(reader.tile(ID.tile(slot(0, 1))).unwrap().is_some());
        assert_eq!(reader.foreign_changes(), vec![]);
    }

    #[test]
    fn tile_times_survive_a_new_instance_and_count_for_their_object_only() {
        let mem = Arc::new(InMemory::new());
        let s = storage(&mem, "_alllayers", Duration::from_secs(60));
        let when = |n: u64| std::time::UNIX_EPOCH + Duration::new(1_500_000_000 + n, 7);
        let (a, b, c) = (png(1), png(2), png(3));
        s.write_group(
            ID,
            &[
                (slot(0, 1), &a[..], Some(when(1))),
                (slot(0, 2), &b[..], None),
                (slot(5, 0), &c[..], Some(when(3))),
            ],
        )
        .unwrap();
        // One times object per row that got a time; listings do not show it as a tile.
        assert!(keys(&mem)
            .contains(&"caches/world/_alllayers/L03/R00000080/.bundlefs-times".to_string()));
        assert_eq!(keys(&mem).len(), 5);
        let mtime =
            |s: &ExplodedObjects, sl: Slot| s.tile_stat(ID.tile(sl)).unwrap().unwrap().mtime;
        // A new instance (a remount) reads them from the store.
        let s2 = storage(&mem, "_alllayers", Duration::from_secs(60));
        assert_eq!(s2.cols(3, 128).unwrap().len(), 2);
        assert_eq!(mtime(&s2, slot(0, 1)), Some(when(1)));
        assert_eq!(mtime(&s2, slot(5, 0)), Some(when(3)));
        assert_ne!(
            mtime(&s2, slot(0, 2)),
            Some(when(1)),
            "no time given: the object's"
        );
        let read = s2.tile(ID.tile(slot(0, 1))).unwrap().unwrap();
        assert_eq!(s2.tile_mtime(ID.tile(slot(0, 1)), &read), Some(when(1)));
        // touch through a mount: recorded, also for a tile written without a time.
        assert!(s2.set_tile_time(ID.tile(slot(0, 2)), when(2)).unwrap());
        assert!(!s2.set_tile_time(ID.tile(slot(0, 9)), when(2)).unwrap());
        let s3 = storage(&mem, "_alllayers", Duration::from_secs(60));
        assert_eq!(mtime(&s3, slot(0, 1)), Some(when(1)));
        assert_eq!(mtime(&s3, slot(0, 2)), Some(when(2)));
        // Another program rewrites a tile: its record no longer counts.
        put_raw(
            &mem,
            "caches/world/_alllayers/L03/R00000080/C00000001.png",
            &png(9),
        );
        let s4 = storage(&mem, "_alllayers", Duration::from_secs(60));
        assert_ne!(mtime(&s4, slot(0, 1)), Some(when(1)));
        assert_eq!(mtime(&s4, slot(0, 2)), Some(when(2)));
        assert_eq!(s4.level_stats(3).unwrap().tiles, 3);
        // A row emptied by delete loses its times object; another row keeps its own.
        s4.delete_group(ID, &[slot(5, 0)]).unwrap();
        let k = keys(&mem);
        assert!(!k.iter().any(|k| k.contains("R00000085/")), "{k:?}");
        assert!(
            k.iter().any(|k| k.ends_with("R00000080/.bundlefs-times")),
            "{k:?}"
        );
        assert_eq!(s4.rows(3).unwrap(), BTreeSet::from([128]));
    }
}
