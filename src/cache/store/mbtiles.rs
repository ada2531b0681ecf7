//! MBTiles storage: the tiles of a Web Mercator cache in one SQLite file (`tiles` table or view:
//! `zoom_level`, `tile_column`, `tile_row` counted bottom-up, `tile_data`; MBTiles 1.3), read and
//! written through `rusqlite` (SQLite bundled). Levels are zoom levels; a bundle is the 128×128
//! block of tiles it would be in a compact cache, so jobs move tiles bundle by bundle (one
//! transaction each). Bytes are stored as given.
//!
//! Tile times: MBTiles has none, so bundlefs keeps them in a table of its own,
//! `bundlefs_tile_times` (other readers ignore unknown tables). Before the first write into a
//! file that lacks it, every tile gets the file's modification time (what it was shown with), so a
//! tile's time moves only when that tile changes; a file bundlefs never wrote shows its tiles with
//! the file's time.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and reads of one file are
//! short. The file's metadata (`metadata` table) is written by [`create`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{GroupView, LevelStats, Storage, StorageKind, TimedSlot, UpdateFn};
use crate::cache::TileBytes;
use crate::error::{Error, Result};
use crate::format::mbtiles::flip_row;
use crate::format::v2::WriteStats;
use crate::format::{BundleId, Slot, TileAddr, BUNDLE_DIM, MAX_TILE_SIZE};

/// The table of tile times bundlefs adds (zoom, column, TMS row, nanoseconds since the epoch).
const TIMES: &str = "bundlefs_tile_times";

/// The rows of `tiles` that are tiles: data present and not empty, column and row inside the
/// zoom's 2^zoom (zoom 0-30). Every read goes through it, so counts, listings and reads agree;
/// other rows are reported by `verify` ([`Storage::stray_records`]) and otherwise ignored.
const IS_TILE: &str = "zoom_level BETWEEN 0 AND 30 AND tile_column >= 0 AND tile_row >= 0 \
     AND tile_column < (1 << zoom_level) AND tile_row < (1 << zoom_level) \
     AND tile_data IS NOT NULL AND length(tile_data) > 0";

/// An MBTiles file as a storage.
pub struct MbtilesStore {
    path: PathBuf,
    db: Mutex<Connection>,
    read_only: bool,
    durable: bool,
}

/// An SQLite error as one naming the file.
fn sql(path: &Path, e: rusqlite::Error) -> Error {
    Error::invalid(format!("{}: {e}", path.display()))
}

/// Creates an empty MBTiles 1.3 file at `path` (refused if something is there) with the
/// `metadata` pairs given, the `tiles` table, its unique index and the tile-times table.
/// Errors: the path exists, SQLite cannot create the file.
pub fn create(path: &Path, metadata: &[(&str, String)]) -> Result<()> {
    if path.exists() {
        return Err(Error::invalid(format!(
            "{}: already exists; export writes a new MBTiles file",
            path.display()
        )));
    }
    let db = Connection::open(path).map_err(|e| sql(path, e))?;
    let mut batch = format!(
        "BEGIN;
         CREATE TABLE metadata (name TEXT, value TEXT);
         CREATE UNIQUE INDEX name ON metadata (name);
         CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
         CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
         CREATE TABLE {TIMES} (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, mtime_ns INTEGER,
             PRIMARY KEY (zoom_level, tile_column, tile_row));"
    );
    batch.push_str("COMMIT;");
    db.execute_batch(&batch).map_err(|e| sql(path, e))?;
    let mut st = db
        .prepare("INSERT INTO metadata (name, value) VALUES (?1, ?2)")
        .map_err(|e| sql(path, e))?;
    for (k, v) in metadata {
        st.execute(params![k, v]).map_err(|e| sql(path, e))?;
    }
    Ok(())
}

/// Sets `metadata` pairs of the MBTiles file at `path` (replacing values of those names).
/// Errors: SQLite errors, naming the file.
pub fn set_metadata(path: &Path, pairs: &[(&str, String)]) -> Result<()> {
    let mut db = open(path, false)?;
    let tx = db.transaction().map_err(|e| sql(path, e))?;
    for (k, v) in pairs {
        tx.execute("DELETE FROM metadata WHERE name = ?1", [k])
            .map_err(|e| sql(path, e))?;
        tx.execute(
            "INSERT INTO metadata (name, value) VALUES (?1, ?2)",
            params![k, v],
        )
        .map_err(|e| sql(path, e))?;
    }
    tx.commit().map_err(|e| sql(path, e))
}

/// The `metadata` table of the MBTiles file at `path` as name → value. Errors: not an SQLite file,
/// or no `tiles` table or view (then it is no MBTiles file), named.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let db = open(path, true)?;
    let mut out = BTreeMap::new();
    let has_metadata: bool = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'metadata'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| sql(path, e))?
        > 0;
    if has_metadata {
        let mut st = db
            .prepare("SELECT name, value FROM metadata")
            .map_err(|e| sql(path, e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                ))
            })
            .map_err(|e| sql(path, e))?;
        for r in rows {
            if let (Some(k), Some(v)) = r.map_err(|e| sql(path, e))? {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

/// Opens `path` (read-only, or read-write) and checks it holds a `tiles` table or view.
fn open(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let db = Connection::open_with_flags(path, flags).map_err(|e| sql(path, e))?;
    db.busy_timeout(Duration::from_secs(30))
        .map_err(|e| sql(path, e))?;
    let tiles: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'tiles' AND type IN ('table', 'view')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql(path, e))?;
    if tiles == 0 {
        return Err(Error::invalid(format!(
            "{}: not an MBTiles file (an SQLite database without a tiles table)",
            path.display()
        )));
    }
    Ok(db)
}

impl MbtilesStore {
    /// The storage over the MBTiles file at `path`: read-write when the file can be written, else
    /// read-only. `durable`: every write waits for the disk (SQLite `synchronous=FULL`), else
    /// `OFF` for bulk jobs that sync at the end. Errors: no such file, not SQLite, no `tiles`.
    pub fn open(path: &Path, durable: bool) -> Result<MbtilesStore> {
        let (db, mut read_only) = match open(path, false) {
            Ok(db) => (db, false),
            Err(_) => (open(path, true)?, true),
        };
        // Tiles behind a view (deduplicated into `map` and `images`, as mbutil writes them) are
        // read through it; bundlefs does not write such files.
        let view: i64 = db
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'tiles' AND type = 'view'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql(path, e))?;
        read_only |= view > 0;
        if !read_only {
            let mode = if durable { "FULL" } else { "OFF" };
            db.execute_batch(&format!("PRAGMA synchronous = {mode};"))
                .map_err(|e| sql(path, e))?;
        }
        Ok(MbtilesStore {
            path: path.to_path_buf(),
            db: Mutex::new(db),
            read_only,
            durable,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql(&self.path, e)
    }

    fn file_mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    fn refuse_read_only(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::invalid(format!(
                "{}: read-only (the file cannot be written, or keeps its tiles behind a view, \
                 which bundlefs only reads)",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// After writing tiles of `level`: `minzoom`/`maxzoom` widened to take it, in the caller's
    /// transaction, so readers (GDAL) see every level the file holds.
    fn widen_zooms(&self, db: &Connection, level: u8) -> Result<()> {
        for (name, keep) in [("minzoom", "min"), ("maxzoom", "max")] {
            db.execute(
                &format!(
                    "UPDATE metadata SET value = {keep}(CAST(value AS INTEGER), ?1) \
                     WHERE name = ?2 AND CAST(value AS INTEGER) <> {keep}(CAST(value AS INTEGER), ?1)"
                ),
                params![level, name],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Whether the tile-times table exists.
    fn has_times(db: &Connection) -> bool {
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?1",
            [TIMES],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n > 0)
    }

    /// Before writing: the tile-times table, made when missing with every tile at the file's
    /// time (what they were shown with), inside the caller's transaction.
    fn pin_times(&self, db: &Connection) -> Result<()> {
        if Self::has_times(db) {
            return Ok(());
        }
        let ns = nanos(self.file_mtime().unwrap_or_else(SystemTime::now));
        db.execute_batch(&format!(
            "CREATE TABLE {TIMES} (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, mtime_ns INTEGER,
                 PRIMARY KEY (zoom_level, tile_column, tile_row));
             INSERT INTO {TIMES} SELECT zoom_level, tile_column, tile_row, {ns} FROM tiles;"
        ))
        .map_err(|e| self.err(e))
    }

    /// The tiles of bundle `id` as stored: (tile, bytes), in slot order.
    fn bundle_tiles(&self, db: &Connection, id: BundleId) -> Result<Vec<(TileAddr, Vec<u8>)>> {
        let Some((z, col0, col_end, tms_lo, tms_hi)) = bundle_window(id) else {
            return Ok(Vec::new());
        };
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_column, tile_row, tile_data FROM tiles WHERE zoom_level = ?1 \
                 AND tile_column >= ?2 AND tile_column < ?3 AND tile_row >= ?4 AND tile_row <= ?5 \
                 AND {IS_TILE}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![z, col0, col_end, tms_lo, tms_hi], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (col, tms, data) = r.map_err(|e| self.err(e))?;
            let Some(row) = flip_row(z, tms) else {
                continue;
            };
            out.push((TileAddr::new(z, row, col), data));
        }
        out.sort_by_key(|(t, _)| (t.row, t.col));
        Ok(out)
    }

    /// Writes `tiles` (bundle `id`) in one transaction, their times recorded (now where none).
    fn put(
        &self,
        db: &mut Connection,
        id: BundleId,
        tiles: &[(Slot, &[u8], Option<SystemTime>)],
    ) -> Result<WriteStats> {
        let mut bytes = 0u64;
        for (slot, b, _) in tiles {
            check_size(&self.path, id.tile(*slot), b.len())?;
        }
        let tx = db.transaction().map_err(|e| self.err(e))?;
        self.pin_times(&tx)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            let mut time = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {TIMES} (zoom_level, tile_column, tile_row, mtime_ns) \
                     VALUES (?1, ?2, ?3, ?4)"
                ))
                .map_err(|e| self.err(e))?;
            let now = SystemTime::now();
            for (slot, b, mtime) in tiles {
                let t = id.tile(*slot);
                let tms = flip_row(t.level, t.row)
                    .filter(|_| flip_row(t.level, t.col).is_some())
                    .ok_or_else(|| outside(&self.path, t))?;
                put.execute(params![t.level, t.col, tms, b])
                    .map_err(|e| self.err(e))?;
                time.execute(params![t.level, t.col, tms, nanos(mtime.unwrap_or(now))])
                    .map_err(|e| self.err(e))?;
                bytes += b.len() as u64;
            }
        }
        if !tiles.is_empty() {
            self.widen_zooms(&tx, id.level)?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(WriteStats {
            tiles: tiles.len(),
            bytes_written: bytes,
        })
    }
}

/// The query bounds of bundle `id`'s tiles in the `tiles` table: zoom, first column, column past
/// the last, and the lowest and highest TMS row (its rows row0..row0+127 flipped, cut to the
/// zoom's 2^zoom rows). None when the bundle lies outside the zoom's grid.
fn bundle_window(id: BundleId) -> Option<(u8, i64, i64, i64, i64)> {
    let n = 1i64 << id.level.min(30);
    if i64::from(id.row0) >= n || i64::from(id.col0) >= n {
        return None;
    }
    let last_row = (i64::from(id.row0) + i64::from(BUNDLE_DIM)).min(n) - 1;
    Some((
        id.level,
        i64::from(id.col0),
        i64::from(id.col0) + i64::from(BUNDLE_DIM),
        n - 1 - last_row,
        n - 1 - i64::from(id.row0),
    ))
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

fn outside(path: &Path, t: TileAddr) -> Error {
    Error::invalid(format!(
        "{}: tile {t} lies outside zoom level {}'s {} rows and columns",
        path.display(),
        t.level,
        1u64 << t.level.min(31)
    ))
}

fn check_size(path: &Path, t: TileAddr, len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid(format!(
            "{}: tile {t} is empty (0 bytes); not stored",
            path.display()
        )));
    }
    if len > MAX_TILE_SIZE {
        return Err(Error::invalid(format!(
            "{}: tile {t} has {len} bytes, more than the {MAX_TILE_SIZE} a tile may hold",
            path.display()
        )));
    }
    Ok(())
}

/// A bundle's stored tiles, for [`Storage::update_group`].
struct View(BTreeMap<Slot, Vec<u8>>);

impl GroupView for View {
    fn exists(&self) -> bool {
        !self.0.is_empty()
    }
    fn tile(&self, slot: Slot) -> Result<Option<TileBytes>> {
        Ok(self.0.get(&slot).map(|b| TileBytes::owned(b.clone())))
    }
}

impl Storage for MbtilesStore {
    fn kind(&self) -> StorageKind {
        StorageKind::Mbtiles
    }

    fn levels(&self) -> Result<Vec<u8>> {
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT DISTINCT zoom_level FROM tiles WHERE {IS_TILE} ORDER BY zoom_level"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for z in rows {
            let z = z.map_err(|e| self.err(e))?;
            out.push(u8::try_from(z).map_err(|_| {
                Error::invalid(format!(
                    "{}: zoom level {z} (bundlefs reads levels 0-255)",
                    self.path.display()
                ))
            })?);
        }
        Ok(out)
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        let Some(tms) = flip_row(t.level, t.row) else {
            return Ok(None);
        };
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_data FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 \
                 AND tile_row = ?3 AND {IS_TILE}"
            ))
            .map_err(|e| self.err(e))?;
        let b: Option<Vec<u8>> = st
            .query_row(params![t.level, t.col, tms], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(b.filter(|b| !b.is_empty()).map(TileBytes::owned))
    }

    fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT DISTINCT tile_row FROM tiles WHERE zoom_level = ?1 AND {IS_TILE}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([level], |r| r.get::<_, u32>(0))
            .map_err(|e| self.err(e))?;
        let mut out = BTreeSet::new();
        for r in rows {
            if let Some(row) = flip_row(level, r.map_err(|e| self.err(e))?) {
                out.insert(row);
            }
        }
        Ok(out)
    }

    fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let Some(tms) = flip_row(level, row) else {
            return Ok(Vec::new());
        };
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_column, length(tile_data) FROM tiles WHERE zoom_level = ?1 \
                 AND tile_row = ?2 AND {IS_TILE} ORDER BY tile_column"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![level, tms], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    fn bundles(&self, level: u8) -> Result<Vec<BundleId>> {
        let n = 1u64 << level.min(31);
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT DISTINCT tile_column / 128, (?2 - 1 - tile_row) / 128 FROM tiles \
                 WHERE zoom_level = ?1 AND {IS_TILE}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![level, n as i64], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (c, rr) = r.map_err(|e| self.err(e))?;
            out.push(BundleId {
                level,
                row0: rr * BUNDLE_DIM,
                col0: c * BUNDLE_DIM,
            });
        }
        out.sort();
        Ok(out)
    }

    fn read_group(&self, g: &super::TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        let db = self.db.lock().unwrap();
        Ok(self
            .bundle_tiles(&db, g.id)?
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(t, b)| (t, TileBytes::owned(b)))
            .collect())
    }

    fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let bundles = self.bundles(level)?.len() as u64;
        let db = self.db.lock().unwrap();
        let (tiles, bytes): (i64, Option<i64>) = db
            .query_row(
                &format!(
                    "SELECT count(*), sum(length(tile_data)) FROM tiles WHERE zoom_level = ?1 \
                     AND {IS_TILE}"
                ),
                [level],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let bytes = bytes.unwrap_or(0) as u64;
        Ok(LevelStats {
            bundles,
            tiles: tiles as u64,
            tile_bytes: bytes,
            // One file holds every level: its bytes are not per level.
            file_bytes: bytes,
            dead_bytes: 0,
            broken: 0,
        })
    }

    fn write_group(&self, id: BundleId, tiles: &[TimedSlot]) -> Result<WriteStats> {
        self.refuse_read_only()?;
        let mut db = self.db.lock().unwrap();
        self.put(&mut db, id, tiles)
    }

    fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats> {
        self.refuse_read_only()?;
        let mut db = self.db.lock().unwrap();
        let view = View(
            self.bundle_tiles(&db, id)?
                .into_iter()
                .map(|(t, b)| (t.slot(), b))
                .collect(),
        );
        let new = f(&view)?;
        if new.is_empty() {
            return Ok(WriteStats::default());
        }
        let owned: Vec<(Slot, Vec<u8>)> = new.into_iter().map(|(s, b)| (s, b.to_vec())).collect();
        let tiles: Vec<TimedSlot> = owned.iter().map(|(s, b)| (*s, &b[..], None)).collect();
        self.put(&mut db, id, &tiles)
    }

    fn delete_group(&self, id: BundleId, slots: &[Slot]) -> Result<()> {
        self.refuse_read_only()?;
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        self.pin_times(&tx)?;
        for s in slots {
            let t = id.tile(*s);
            let Some(tms) = flip_row(t.level, t.row) else {
                continue;
            };
            for table in ["tiles", TIMES] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3"
                    ),
                    params![t.level, t.col, tms],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn tile_mtime(&self, t: TileAddr, _bytes: &TileBytes) -> Option<SystemTime> {
        let tms = flip_row(t.level, t.row)?;
        let db = self.db.lock().unwrap();
        if Self::has_times(&db) {
            let ns: Option<i64> = db
                .query_row(
                    &format!(
                        "SELECT mtime_ns FROM {TIMES} WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3"
                    ),
                    params![t.level, t.col, tms],
                    |r| r.get(0),
                )
                .optional()
                .ok()
                .flatten();
            if let Some(ns) = ns {
                return Some(UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64));
            }
        }
        drop(db);
        self.file_mtime()
    }

    fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        self.refuse_read_only()?;
        let Some(tms) = flip_row(t.level, t.row) else {
            return Ok(false);
        };
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        let there: i64 = tx
            .query_row(
                "SELECT count(*) FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
                params![t.level, t.col, tms],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if there == 0 {
            return Ok(false);
        }
        self.pin_times(&tx)?;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO {TIMES} (zoom_level, tile_column, tile_row, mtime_ns) VALUES (?1, ?2, ?3, ?4)"
            ),
            params![t.level, t.col, tms, nanos(mtime)],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn slots_of(&self, id: BundleId) -> Result<Option<Vec<(Slot, u32)>>> {
        let Some((z, col0, col_end, tms_lo, tms_hi)) = bundle_window(id) else {
            return Ok(None);
        };
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_column, tile_row, length(tile_data) FROM tiles WHERE zoom_level = ?1 \
                 AND tile_column >= ?2 AND tile_column < ?3 AND tile_row >= ?4 AND tile_row <= ?5 \
                 AND {IS_TILE}"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![z, col0, col_end, tms_lo, tms_hi], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (col, tms, len) = r.map_err(|e| self.err(e))?;
            if let Some(row) = flip_row(z, tms) {
                out.push((TileAddr::new(z, row, col).slot(), len as u32));
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        out.sort();
        Ok(Some(out))
    }

    fn stray_records(&self) -> Vec<String> {
        let db = self.db.lock().unwrap();
        let q = |cond: &str| -> Option<(i64, Option<String>)> {
            db.query_row(
                &format!(
                    "SELECT count(*), min(zoom_level || '/' || tile_column || '/' || tile_row) \
                     FROM tiles WHERE {cond}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
        };
        let mut out = Vec::new();
        for (cond, what) in [
            (
                "tile_data IS NULL OR length(tile_data) = 0",
                "without tile data (NULL or 0 bytes): no tiles, left out of every listing, read \
                 and copy",
            ),
            (
                "tile_data IS NOT NULL AND length(tile_data) > 0 AND NOT (zoom_level BETWEEN 0 AND 30 \
                 AND tile_column >= 0 AND tile_row >= 0 AND tile_column < (1 << zoom_level) \
                 AND tile_row < (1 << zoom_level))",
                "outside their zoom level's 2^zoom columns and rows (or at a zoom level outside \
                 0-30): no place on the map, left out of every listing, read and copy",
            ),
        ] {
            if let Some((n, Some(first))) = q(cond).filter(|(n, _)| *n > 0) {
                out.push(format!(
                    "{} {what} (zoom_level/tile_column/tile_row of one: {first})",
                    crate::error::count(n as u64, "row")
                ));
            }
        }
        out
    }

    fn stats_without_reading(&self) -> bool {
        true
    }

    fn records_in_one_file(&self) -> bool {
        true
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        let tms = flip_row(t.level, t.row).unwrap_or(u32::MAX);
        PathBuf::from(format!(
            "{} (zoom_level {}, tile_column {}, tile_row {tms})",
            self.path.display(),
            t.level,
            t.col
        ))
    }
}

impl Drop for MbtilesStore {
    fn drop(&mut self) {
        if !self.durable && !self.read_only {
            // A bulk job ran with synchronous=OFF; the job syncs the file system at its end.
            let _ = self
                .db
                .lock()
                .map(|db| db.execute_batch("PRAGMA synchronous = FULL;"));
        }
    }
}
