//! Tiles in one SQLite file, as MBTiles 1.3 and OGC GeoPackage 1.3 keep them: a table of
//! `zoom_level`, `tile_column`, `tile_row`, `tile_data`, read and written through `rusqlite`
//! (SQLite bundled). The two differ in how they number a level's tiles, which [`Grid`] says:
//! MBTiles counts rows bottom-up over 2^zoom × 2^zoom tiles, GeoPackage top-down over the
//! `matrix_width` × `matrix_height` tiles its `gpkg_tile_matrix` gives each zoom level. Levels are
//! the file's zoom levels; a bundle is the 128×128 block of tiles it would be in a compact cache,
//! so jobs move tiles bundle by bundle (one transaction each). Bytes are stored as given.
//!
//! Tile times: neither format has them, so bundlefs keeps them in a table of its own
//! (`bundlefs_tile_times`, for GeoPackage `bundlefs_tile_times_TABLE`; other readers ignore
//! unknown tables). Before the first write into a file that lacks it, every tile gets the file's
//! modification time (what it was shown with), so a tile's time moves only when that tile
//! changes; a file bundlefs never wrote shows its tiles with the file's time.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and reads of one file are
//! short. Creating files and their metadata is the formats' own (`mbtiles.rs`, `geopackage.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{GroupView, LevelStats, Storage, StorageKind, TimedSlot, UpdateFn};
use crate::cache::TileBytes;
use crate::error::{Error, Result};
use crate::format::v2::WriteStats;
use crate::format::{BundleId, Slot, TileAddr, BUNDLE_DIM, MAX_TILE_SIZE};

/// The SQLite page size of the files bundlefs creates (bytes; SQLite's default is 4096). Tiles
/// of a few kilobytes are most rows of a tile table: with 16 KiB pages a bulk export into a new
/// file took 0.17-0.18 s against 0.25 s with 4 KiB pages (21,845 tiles of 3.5 KB, page cache
/// dropped, file synced; doc/formats.md). Any SQLite reader reads any page size up to 65536.
pub const PAGE_SIZE: u32 = 16384;

/// How a file numbers the tiles of its zoom levels.
#[derive(Debug, Clone)]
pub enum Grid {
    /// MBTiles: zoom levels 0-30 of 2^zoom × 2^zoom tiles, rows counted bottom-up (TMS,
    /// `tile_row = 2^zoom - 1 - row`); the table is `tiles`.
    Tms,
    /// GeoPackage: the tile table `table`, whose zoom levels have (columns, rows) tiles each as
    /// its `gpkg_tile_matrix` says, rows counted top-down from the tile matrix set's top left,
    /// as bundles count them.
    Matrix {
        /// The tile table's name (`gpkg_contents.table_name`).
        table: String,
        /// Zoom level → (`matrix_width`, `matrix_height`).
        dims: BTreeMap<u8, (u32, u32)>,
    },
}

impl Grid {
    /// (columns, rows) of zoom level `z`, None for a level the grid lacks.
    fn dims(&self, z: u8) -> Option<(u32, u32)> {
        match self {
            Grid::Tms => (z <= 30).then(|| (1u32 << z, 1u32 << z)),
            Grid::Matrix { dims, .. } => dims.get(&z).copied(),
        }
    }

    /// The stored `tile_row` of (top-down) row `row` of level `z`, and back (both directions
    /// are the same map); None outside the level's rows.
    fn flip(&self, z: u8, row: u32) -> Option<u32> {
        let (_, h) = self.dims(z)?;
        (row < h).then(|| match self {
            Grid::Tms => h - 1 - row,
            Grid::Matrix { .. } => row,
        })
    }

    /// Whether tile `t` lies inside its level's grid.
    fn holds(&self, t: TileAddr) -> bool {
        self.dims(t.level)
            .is_some_and(|(w, h)| t.col < w && t.row < h)
    }

    /// The tile table, quoted for SQL.
    fn table(&self) -> String {
        match self {
            Grid::Tms => "tiles".into(),
            Grid::Matrix { table, .. } => ident(table),
        }
    }

    /// The table of tile times bundlefs adds (zoom, column, stored row, ns since the epoch).
    fn times(&self) -> String {
        match self {
            Grid::Tms => "bundlefs_tile_times".into(),
            Grid::Matrix { table, .. } => ident(&format!("bundlefs_tile_times_{table}")),
        }
    }

    /// SQL: the rows of the tile table that lie in their level's grid.
    fn in_grid(&self) -> String {
        match self {
            Grid::Tms => "zoom_level BETWEEN 0 AND 30 AND tile_column >= 0 AND tile_row >= 0 \
                 AND tile_column < (1 << zoom_level) AND tile_row < (1 << zoom_level)"
                .into(),
            Grid::Matrix { table, .. } => {
                let t = ident(table);
                format!(
                    "tile_column >= 0 AND tile_row >= 0 AND EXISTS (SELECT 1 FROM \
                     gpkg_tile_matrix m WHERE m.table_name = {} AND m.zoom_level = {t}.zoom_level \
                     AND {t}.tile_column < m.matrix_width AND {t}.tile_row < m.matrix_height)",
                    literal(table)
                )
            }
        }
    }

    /// SQL: the rows of the tile table that are tiles: data present and not empty, inside the
    /// grid. Every read goes through it, so counts, listings and reads agree; other rows are
    /// reported by `verify` ([`Storage::stray_records`]) and otherwise ignored.
    fn is_tile(&self) -> String {
        format!(
            "tile_data IS NOT NULL AND length(tile_data) > 0 AND {}",
            self.in_grid()
        )
    }

    /// SQL: the top-down row of a `tile_row` of level `z`.
    fn row_expr(&self, z: u8) -> String {
        match (self, self.dims(z)) {
            (Grid::Tms, Some((_, h))) => format!("({h} - 1 - tile_row)"),
            _ => "tile_row".into(),
        }
    }

    /// The query bounds of bundle `id`'s tiles in the tile table: first column, column past the
    /// last, and the lowest and highest stored row (its rows row0..row0+127 cut to the level's
    /// rows, flipped for TMS). None when the bundle lies outside the level's grid.
    fn window(&self, id: BundleId) -> Option<(i64, i64, i64, i64)> {
        let (w, h) = self.dims(id.level)?;
        if id.row0 >= h || id.col0 >= w {
            return None;
        }
        let last = (id.row0 + BUNDLE_DIM).min(h) - 1;
        let (a, b) = (self.flip(id.level, id.row0)?, self.flip(id.level, last)?);
        Some((
            i64::from(id.col0),
            i64::from(id.col0) + i64::from(BUNDLE_DIM),
            i64::from(a.min(b)),
            i64::from(a.max(b)),
        ))
    }
}

/// `name` as an SQL identifier (double quotes, inner ones doubled).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `s` as an SQL string literal (single quotes, inner ones doubled).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An SQLite error as one naming the file.
pub(crate) fn sql(path: &Path, e: rusqlite::Error) -> Error {
    Error::invalid(format!("{}: {e}", path.display()))
}

/// Opens `path` read-only or read-write, waiting up to 30 s for another writer's lock.
/// Errors: SQLite cannot open it, naming the file.
pub(crate) fn connect(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let db = Connection::open_with_flags(path, flags).map_err(|e| sql(path, e))?;
    db.busy_timeout(Duration::from_secs(30))
        .map_err(|e| sql(path, e))?;
    Ok(db)
}

/// Checks that `db` (the file `path`) is an SQLite database at all. Errors: SQLite's answer (such
/// as "file is not a database"), saying the file was taken for `what` (`an MBTiles file`, `a
/// GeoPackage`), both SQLite formats.
pub(crate) fn check_sqlite(db: &Connection, path: &Path, what: &str) -> Result<()> {
    db.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|_| ())
    .map_err(|e| {
        Error::invalid(format!(
            "{}: not {what} ({what} is an SQLite database, and SQLite says: {e})",
            path.display()
        ))
    })
}

/// Whether the database has a table or view named `name` (`types`: `'table'` and/or `'view'`).
/// Errors: the file is no SQLite database (SQLite's "file is not a database"), naming `path`.
pub(crate) fn has_object(db: &Connection, path: &Path, name: &str, types: &str) -> Result<bool> {
    db.query_row(
        &format!("SELECT count(*) FROM sqlite_master WHERE name = ?1 AND type IN ({types})"),
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(|e| sql(path, e))
}

/// The tiles of an MBTiles or GeoPackage file as a storage.
pub struct SqliteTiles {
    path: PathBuf,
    db: Mutex<Connection>,
    grid: Grid,
    read_only: bool,
    durable: bool,
}

impl SqliteTiles {
    /// The storage over the tile table of the file at `path` that `grid` describes: read-write
    /// when the file can be written and the table is no view, else read-only. `durable`: every
    /// write waits for the disk (SQLite `synchronous=FULL`), else `OFF` for bulk jobs that sync
    /// at the end. `missing` is the error text when the tile table is absent (the file is then
    /// no file of the format). Errors: no such file, not SQLite, no tile table, each naming the
    /// file.
    pub(crate) fn open(
        path: &Path,
        grid: Grid,
        durable: bool,
        missing: &str,
    ) -> Result<SqliteTiles> {
        let name = match &grid {
            Grid::Tms => "tiles".to_string(),
            Grid::Matrix { table, .. } => table.clone(),
        };
        let check = |db: Connection| -> Result<Connection> {
            if !has_object(&db, path, &name, "'table', 'view'")? {
                return Err(Error::invalid(format!("{}: {missing}", path.display())));
            }
            Ok(db)
        };
        let (db, mut read_only) = match connect(path, false).and_then(check) {
            Ok(db) => (db, false),
            Err(_) => (check(connect(path, true)?)?, true),
        };
        // Tiles behind a view (deduplicated into `map` and `images`, as mbutil writes them) are
        // read through it; bundlefs does not write such files.
        read_only |= has_object(&db, path, &name, "'view'")?;
        if !read_only {
            let mode = if durable { "FULL" } else { "OFF" };
            db.execute_batch(&format!("PRAGMA synchronous = {mode};"))
                .map_err(|e| sql(path, e))?;
        }
        Ok(SqliteTiles {
            path: path.to_path_buf(),
            db: Mutex::new(db),
            grid,
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

    /// Whether the tile table has an index whose first column is `zoom_level` (MBTiles'
    /// `tile_index`, GeoPackage's `UNIQUE (zoom_level, tile_column, tile_row)`), so rows can be
    /// found by zoom level without reading them all. False for a view.
    fn zoom_indexed(&self, db: &Connection) -> Result<bool> {
        let name = match &self.grid {
            Grid::Tms => "tiles",
            Grid::Matrix { table, .. } => table.as_str(),
        };
        db.query_row(
            "SELECT count(*) FROM pragma_index_list(?1) AS l, pragma_index_info(l.name) AS i \
             WHERE i.seqno = 0 AND i.name = 'zoom_level'",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| self.err(e))
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

    /// After writing tiles of `level`, in the caller's transaction: MBTiles' `minzoom`/`maxzoom`
    /// widened to take it, so readers (GDAL) see every level the file holds; GeoPackage's
    /// `gpkg_contents.last_change` set to now.
    fn touched(&self, db: &Connection, level: u8) -> Result<()> {
        match &self.grid {
            Grid::Tms => {
                if !has_object(db, &self.path, "metadata", "'table'")? {
                    return Ok(());
                }
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
            }
            Grid::Matrix { table, .. } => {
                db.execute(
                    "UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
                     WHERE table_name = ?1",
                    [table],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Before writing: the tile-times table, made when missing with every tile at the file's
    /// time (what they were shown with), inside the caller's transaction.
    fn pin_times(&self, db: &Connection) -> Result<()> {
        let times = self.grid.times();
        if has_object(db, &self.path, times.trim_matches('"'), "'table'")? {
            return Ok(());
        }
        let ns = nanos(self.file_mtime().unwrap_or_else(SystemTime::now));
        db.execute_batch(&format!(
            "CREATE TABLE {times} (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, mtime_ns INTEGER,
                 PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID;
             INSERT INTO {times} SELECT zoom_level, tile_column, tile_row, {ns} FROM {};",
            self.grid.table()
        ))
        .map_err(|e| self.err(e))
    }

    /// `value` (an SQL expression over a row: `tile_data`, `length(tile_data)`) of every tile
    /// of bundle `id`, with the tile, in no particular order.
    fn bundle_rows<T: rusqlite::types::FromSql>(
        &self,
        db: &Connection,
        id: BundleId,
        value: &str,
    ) -> Result<Vec<(TileAddr, T)>> {
        let Some((col0, col_end, lo, hi)) = self.grid.window(id) else {
            return Ok(Vec::new());
        };
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_column, tile_row, {value} FROM {} WHERE zoom_level = ?1 \
                 AND tile_column >= ?2 AND tile_column < ?3 AND tile_row >= ?4 AND tile_row <= ?5 \
                 AND {}",
                self.grid.table(),
                self.grid.is_tile()
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![id.level, col0, col_end, lo, hi], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?, r.get::<_, T>(2)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (col, stored, v) = r.map_err(|e| self.err(e))?;
            if let Some(row) = self.grid.flip(id.level, stored) {
                out.push((TileAddr::new(id.level, row, col), v));
            }
        }
        Ok(out)
    }

    /// The tiles of bundle `id` as stored: (tile, bytes), in slot order.
    fn bundle_tiles(&self, db: &Connection, id: BundleId) -> Result<Vec<(TileAddr, Vec<u8>)>> {
        let mut out = self.bundle_rows::<Vec<u8>>(db, id, "tile_data")?;
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
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {} (zoom_level, tile_column, tile_row, tile_data) \
                     VALUES (?1, ?2, ?3, ?4)",
                    self.grid.table()
                ))
                .map_err(|e| self.err(e))?;
            let mut time = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {} (zoom_level, tile_column, tile_row, mtime_ns) \
                     VALUES (?1, ?2, ?3, ?4)",
                    self.grid.times()
                ))
                .map_err(|e| self.err(e))?;
            let now = SystemTime::now();
            for (slot, b, mtime) in tiles {
                let t = id.tile(*slot);
                let stored = self
                    .grid
                    .flip(t.level, t.row)
                    .filter(|_| self.grid.holds(t))
                    .ok_or_else(|| self.outside(t))?;
                put.execute(params![t.level, t.col, stored, b])
                    .map_err(|e| self.err(e))?;
                time.execute(params![t.level, t.col, stored, nanos(mtime.unwrap_or(now))])
                    .map_err(|e| self.err(e))?;
                bytes += b.len() as u64;
            }
        }
        if !tiles.is_empty() {
            self.touched(&tx, id.level)?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(WriteStats {
            tiles: tiles.len(),
            bytes_written: bytes,
        })
    }

    fn outside(&self, t: TileAddr) -> Error {
        let what = match (&self.grid, self.grid.dims(t.level)) {
            (Grid::Tms, _) => format!(
                "lies outside zoom level {}'s {} rows and columns",
                t.level,
                1u64 << t.level.min(31)
            ),
            (Grid::Matrix { table, .. }, Some((w, h))) => format!(
                "lies outside the {w} columns and {h} rows gpkg_tile_matrix gives zoom level {} \
                 of table {table}",
                t.level
            ),
            (Grid::Matrix { table, .. }, None) => format!(
                "is of zoom level {}, which gpkg_tile_matrix of table {table} lacks",
                t.level
            ),
        };
        Error::invalid(format!("{}: tile {t} {what}", self.path.display()))
    }
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
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

impl Storage for SqliteTiles {
    fn kind(&self) -> StorageKind {
        match self.grid {
            Grid::Tms => StorageKind::Mbtiles,
            Grid::Matrix { .. } => StorageKind::Geopackage,
        }
    }

    fn levels(&self) -> Result<Vec<u8>> {
        let db = self.db.lock().unwrap();
        let to_level = |z: i64| {
            u8::try_from(z).map_err(|_| {
                Error::invalid(format!(
                    "{}: zoom level {z} (bundlefs reads levels 0-255)",
                    self.path.display()
                ))
            })
        };
        let mut out = Vec::new();
        if !self.zoom_indexed(&db)? {
            // No index to walk (a table without one, or a view): one scan of every row.
            let mut st = db
                .prepare_cached(&format!(
                    "SELECT DISTINCT zoom_level FROM {} WHERE {} ORDER BY zoom_level",
                    self.grid.table(),
                    self.grid.is_tile()
                ))
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map([], |r| r.get::<_, i64>(0))
                .map_err(|e| self.err(e))?;
            for z in rows {
                out.push(to_level(z.map_err(|e| self.err(e))?)?);
            }
            return Ok(out);
        }
        // Level after level, each found by one walk of the index from the last one found: a
        // few lookups per level instead of reading every tile (an open of a file of millions of
        // tiles read them all before).
        let mut st = db
            .prepare_cached(&format!(
                "SELECT zoom_level FROM {} WHERE zoom_level > ?1 AND {} ORDER BY zoom_level \
                 LIMIT 1",
                self.grid.table(),
                self.grid.is_tile()
            ))
            .map_err(|e| self.err(e))?;
        let mut after = i64::MIN;
        while let Some(z) = st
            .query_row([after], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(|e| self.err(e))?
        {
            if z <= after {
                break; // cannot happen with the query above; never loop on it
            }
            out.push(to_level(z)?);
            after = z;
        }
        Ok(out)
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        let Some(stored) = self.grid.flip(t.level, t.row) else {
            return Ok(None);
        };
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_data FROM {} WHERE zoom_level = ?1 AND tile_column = ?2 \
                 AND tile_row = ?3 AND {}",
                self.grid.table(),
                self.grid.is_tile()
            ))
            .map_err(|e| self.err(e))?;
        let b: Option<Vec<u8>> = st
            .query_row(params![t.level, t.col, stored], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(b.filter(|b| !b.is_empty()).map(TileBytes::owned))
    }

    fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT DISTINCT tile_row FROM {} WHERE zoom_level = ?1 AND {}",
                self.grid.table(),
                self.grid.is_tile()
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([level], |r| r.get::<_, u32>(0))
            .map_err(|e| self.err(e))?;
        let mut out = BTreeSet::new();
        for r in rows {
            if let Some(row) = self.grid.flip(level, r.map_err(|e| self.err(e))?) {
                out.insert(row);
            }
        }
        Ok(out)
    }

    fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let Some(stored) = self.grid.flip(level, row) else {
            return Ok(Vec::new());
        };
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT tile_column, length(tile_data) FROM {} WHERE zoom_level = ?1 \
                 AND tile_row = ?2 AND {} ORDER BY tile_column",
                self.grid.table(),
                self.grid.is_tile()
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![level, stored], |r| {
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
        if self.grid.dims(level).is_none() {
            return Ok(Vec::new());
        }
        let db = self.db.lock().unwrap();
        let mut st = db
            .prepare_cached(&format!(
                "SELECT DISTINCT tile_column / 128, {} / 128 FROM {} WHERE zoom_level = ?1 AND {}",
                self.grid.row_expr(level),
                self.grid.table(),
                self.grid.is_tile()
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![level], |r| {
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
                    "SELECT count(*), sum(length(tile_data)) FROM {} WHERE zoom_level = ?1 AND {}",
                    self.grid.table(),
                    self.grid.is_tile()
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
        let tiles: Vec<TimedSlot> = new.iter().map(|(s, b)| (*s, &b[..], None)).collect();
        self.put(&mut db, id, &tiles)
    }

    fn delete_group(&self, id: BundleId, slots: &[Slot]) -> Result<()> {
        self.refuse_read_only()?;
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        self.pin_times(&tx)?;
        for s in slots {
            let t = id.tile(*s);
            let Some(stored) = self.grid.flip(t.level, t.row) else {
                continue;
            };
            for table in [self.grid.table(), self.grid.times()] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3"
                    ),
                    params![t.level, t.col, stored],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn tile_mtime(&self, t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        // Bytes that carry their time (a tile waiting in a mount's write buffer) are newer than
        // the table.
        if let Some(m) = bytes.mtime() {
            return Some(m);
        }
        let stored = self.grid.flip(t.level, t.row)?;
        let db = self.db.lock().unwrap();
        let times = self.grid.times();
        if has_object(&db, &self.path, times.trim_matches('"'), "'table'").unwrap_or(false) {
            let ns: Option<i64> = db
                .query_row(
                    &format!(
                        "SELECT mtime_ns FROM {times} WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3"
                    ),
                    params![t.level, t.col, stored],
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
        let Some(stored) = self.grid.flip(t.level, t.row) else {
            return Ok(false);
        };
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        let there: i64 = tx
            .query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
                    self.grid.table()
                ),
                params![t.level, t.col, stored],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if there == 0 {
            return Ok(false);
        }
        self.pin_times(&tx)?;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO {} (zoom_level, tile_column, tile_row, mtime_ns) VALUES (?1, ?2, ?3, ?4)",
                self.grid.times()
            ),
            params![t.level, t.col, stored, nanos(mtime)],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn slots_of(&self, id: BundleId) -> Result<Option<Vec<(Slot, u32)>>> {
        let db = self.db.lock().unwrap();
        let mut out: Vec<(Slot, u32)> = self
            .bundle_rows::<i64>(&db, id, "length(tile_data)")?
            .into_iter()
            .map(|(t, len)| (t.slot(), len as u32))
            .collect();
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
                     FROM {} WHERE {cond}",
                    self.grid.table()
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
        };
        let outside = match self.grid {
            Grid::Tms => {
                "outside their zoom level's 2^zoom columns and rows (or at a zoom level outside \
                 0-30): no place on the map, left out of every listing, read and copy"
            }
            Grid::Matrix { .. } => {
                "outside the columns and rows gpkg_tile_matrix gives their zoom level (or at a \
                 zoom level it lacks): no place on the map, left out of every listing, read and \
                 copy"
            }
        };
        let mut out = Vec::new();
        for (cond, what) in [
            (
                "tile_data IS NULL OR length(tile_data) = 0".to_string(),
                "without tile data (NULL or 0 bytes): no tiles, left out of every listing, read \
                 and copy",
            ),
            (
                format!(
                    "tile_data IS NOT NULL AND length(tile_data) > 0 AND NOT ({})",
                    self.grid.in_grid()
                ),
                outside,
            ),
        ] {
            if let Some((n, Some(first))) = q(&cond).filter(|(n, _)| *n > 0) {
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
        let stored = self.grid.flip(t.level, t.row).unwrap_or(u32::MAX);
        let table = match &self.grid {
            Grid::Tms => String::new(),
            Grid::Matrix { table, .. } => format!("table {table}, "),
        };
        PathBuf::from(format!(
            "{} ({table}zoom_level {}, tile_column {}, tile_row {stored})",
            self.path.display(),
            t.level,
            t.col
        ))
    }
}

impl Drop for SqliteTiles {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Levels are the zoom levels holding a tile, whether found through the index or by a scan:
    /// rows without data and rows outside their level's grid make no level.
    #[test]
    fn levels_are_those_holding_tiles_with_and_without_an_index() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("levels.mbtiles");
        super::super::mbtiles::create(&f, &[("name", "t".into())]).unwrap();
        let db = Connection::open(&f).unwrap();
        db.execute_batch(
            "INSERT INTO tiles VALUES (0, 0, 0, x'01');
             INSERT INTO tiles VALUES (1, 0, 0, x'');
             INSERT INTO tiles VALUES (1, 1, 1, NULL);
             INSERT INTO tiles VALUES (3, 8, 0, x'01');
             INSERT INTO tiles VALUES (5, 2, 3, x'01');
             INSERT INTO tiles VALUES (5, 3, 3, x'01');
             INSERT INTO tiles VALUES (9, 0, 0, x'01');
             INSERT INTO tiles VALUES (31, 0, 0, x'01');",
        )
        .unwrap();
        let s = super::super::mbtiles::open(&f, false).unwrap();
        assert!(s.zoom_indexed(&s.db.lock().unwrap()).unwrap());
        assert_eq!(s.levels().unwrap(), vec![0, 5, 9]);
        db.execute_batch("DROP INDEX tile_index;").unwrap();
        let s = super::super::mbtiles::open(&f, false).unwrap();
        assert!(!s.zoom_indexed(&s.db.lock().unwrap()).unwrap());
        assert_eq!(s.levels().unwrap(), vec![0, 5, 9]);
    }
}
