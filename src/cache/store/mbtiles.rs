//! MBTiles files: creating one with its `metadata` (MBTiles 1.3, github.com/mapbox/mbtiles-spec)
//! and opening one as a storage. The tiles are read and written by [`super::sqlite::SqliteTiles`]
//! over the `tiles` table (TMS rows, [`super::sqlite::Grid::Tms`]); the tile-times table is
//! `bundlefs_tile_times`.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};

use super::sqlite::{sql, Grid, SqliteTiles};
use crate::error::{Error, Result};

/// The table of tile times bundlefs adds (zoom, column, TMS row, nanoseconds since the epoch).
const TIMES: &str = "bundlefs_tile_times";

/// Opens the MBTiles file at `path` as a storage: read-write when the file can be written, else
/// read-only (also when its tiles are behind a view). `durable`: every write waits for the disk.
/// Errors: no such file, not SQLite, no `tiles` table or view, each naming the file.
pub fn open(path: &Path, durable: bool) -> Result<SqliteTiles> {
    SqliteTiles::open(
        path,
        Grid::Tms,
        durable,
        "not an MBTiles file (an SQLite database without a tiles table)",
    )
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
    let mut db = Connection::open(path).map_err(|e| sql(path, e))?;
    // Before the first table: the page size of a new file ([`super::sqlite::PAGE_SIZE`]).
    db.execute_batch(&format!("PRAGMA page_size = {};", super::sqlite::PAGE_SIZE))
        .map_err(|e| sql(path, e))?;
    // One transaction: the tables and the metadata are there together or not at all, and a
    // durable commit costs its syncs once, not once per metadata row.
    let tx = db.transaction().map_err(|e| sql(path, e))?;
    tx.execute_batch(&format!(
        "CREATE TABLE metadata (name TEXT, value TEXT);
         CREATE UNIQUE INDEX name ON metadata (name);
         CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
         CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
         CREATE TABLE {TIMES} (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, mtime_ns INTEGER,
             PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID;"
    ))
    .map_err(|e| sql(path, e))?;
    {
        let mut st = tx
            .prepare("INSERT INTO metadata (name, value) VALUES (?1, ?2)")
            .map_err(|e| sql(path, e))?;
        for (k, v) in metadata {
            st.execute(params![k, v]).map_err(|e| sql(path, e))?;
        }
    }
    tx.commit().map_err(|e| sql(path, e))
}

/// Sets `metadata` pairs of the MBTiles file at `path` (replacing values of those names), in one
/// durable transaction (SQLite's default `synchronous=FULL`); pairs the file holds already, with
/// that value and once, are left alone, and when that is all of them nothing is written (no
/// transaction, no sync). Errors: SQLite errors, naming the file.
pub fn set_metadata(path: &Path, pairs: &[(&str, String)]) -> Result<()> {
    let mut db = super::sqlite::connect(path, false)?;
    let mut todo = Vec::new();
    for (k, v) in pairs {
        let values: Vec<Option<String>> = {
            let mut st = db
                .prepare_cached("SELECT value FROM metadata WHERE name = ?1")
                .map_err(|e| sql(path, e))?;
            let rows = st.query_map([k], |r| r.get(0)).map_err(|e| sql(path, e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| sql(path, e))?
        };
        if values != [Some(v.clone())] {
            todo.push((k, v));
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let tx = db.transaction().map_err(|e| sql(path, e))?;
    for (k, v) in todo {
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
    let db = super::sqlite::connect(path, true)?;
    super::sqlite::check_sqlite(&db, path, "an MBTiles file")?;
    if !super::sqlite::has_object(&db, path, "tiles", "'table', 'view'")? {
        return Err(Error::invalid(format!(
            "{}: not an MBTiles file (an SQLite database without a tiles table)",
            path.display()
        )));
    }
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
