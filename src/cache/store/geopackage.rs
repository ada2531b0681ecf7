//! GeoPackage files (OGC GeoPackage 1.3 tiles; the facts in [`crate::format::geopackage`]):
//! creating one for a tiling scheme, finding its tile table, and opening that table as a storage.
//! The tiles are read and written by [`super::sqlite::SqliteTiles`] over the table
//! ([`super::sqlite::Grid::Matrix`], rows top-down); tile times are kept in
//! `bundlefs_tile_times_TABLE`.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::sqlite::{connect, has_object, ident, sql, Grid, SqliteTiles};
use crate::error::{Error, Result};
use crate::format::conf::{Envelope, TileScheme};
use crate::format::geopackage::{self as gpkg, Matrix, Srs};

/// What a GeoPackage says of its tile table: everything but the tiles.
#[derive(Debug, Clone)]
pub struct TileTable {
    /// The table's name.
    pub table: String,
    /// `gpkg_contents.identifier` (else the table name).
    pub identifier: String,
    /// The spatial reference of the tile matrix set.
    pub srs: Srs,
    /// The tile matrix set's bounds (map units).
    pub set: Envelope,
    /// The tile matrices, ascending by zoom level.
    pub matrices: Vec<Matrix>,
    /// `gpkg_contents`' bounds, when all four are given.
    pub contents: Option<Envelope>,
}

/// Creates a GeoPackage 1.3 at `path` (refused if something is there) holding one empty tile
/// table named `table` for tiles of `scheme` covering `extent`: the application id and version,
/// `gpkg_spatial_ref_sys` (the three required rows and the scheme's), `gpkg_contents` (data
/// type `tiles`, bounds `extent`), `gpkg_tile_matrix_set` and one `gpkg_tile_matrix` row per LOD
/// ([`gpkg::matrices`] over `extent` and `world`, the extent every level's grid must cover), the
/// tile table, and bundlefs's tile-times table. Errors: the path exists, SQLite errors, naming the
/// file.
pub fn create(
    path: &Path,
    table: &str,
    scheme: &TileScheme,
    extent: &Envelope,
    world: &Envelope,
) -> Result<()> {
    if path.exists() {
        return Err(Error::invalid(format!(
            "{}: already exists; export writes a new GeoPackage",
            path.display()
        )));
    }
    let mut db = Connection::open(path).map_err(|e| sql(path, e))?;
    // Before the first table: the page size of a new file ([`super::sqlite::PAGE_SIZE`]).
    db.execute_batch(&format!("PRAGMA page_size = {};", super::sqlite::PAGE_SIZE))
        .map_err(|e| sql(path, e))?;
    let tx = db.transaction().map_err(|e| sql(path, e))?;
    let t = ident(table);
    let times = ident(&format!("bundlefs_tile_times_{table}"));
    tx.execute_batch(&format!(
        "PRAGMA application_id = {};
         PRAGMA user_version = {};
         CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
             organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
             definition TEXT NOT NULL, description TEXT);
         CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
             identifier TEXT UNIQUE, description TEXT DEFAULT '',
             last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
             min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
             CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
         CREATE TABLE gpkg_tile_matrix_set (table_name TEXT NOT NULL PRIMARY KEY,
             srs_id INTEGER NOT NULL, min_x DOUBLE NOT NULL, min_y DOUBLE NOT NULL,
             max_x DOUBLE NOT NULL, max_y DOUBLE NOT NULL,
             CONSTRAINT fk_gtms_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
             CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
         CREATE TABLE gpkg_tile_matrix (table_name TEXT NOT NULL, zoom_level INTEGER NOT NULL,
             matrix_width INTEGER NOT NULL, matrix_height INTEGER NOT NULL,
             tile_width INTEGER NOT NULL, tile_height INTEGER NOT NULL,
             pixel_x_size DOUBLE NOT NULL, pixel_y_size DOUBLE NOT NULL,
             CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level),
             CONSTRAINT fk_tmm_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name));
         CREATE TABLE {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, zoom_level INTEGER NOT NULL,
             tile_column INTEGER NOT NULL, tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL,
             UNIQUE (zoom_level, tile_column, tile_row));
         CREATE TABLE {times} (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,
             mtime_ns INTEGER, PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID;",
        gpkg::APPLICATION_ID,
        gpkg::USER_VERSION
    ))
    .map_err(|e| sql(path, e))?;
    let srs = gpkg::srs_of(scheme);
    {
        let mut put = tx
            .prepare(
                "INSERT OR IGNORE INTO gpkg_spatial_ref_sys (srs_name, srs_id, organization, \
                 organization_coordsys_id, definition) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(|e| sql(path, e))?;
        for s in gpkg::required_srs().iter().chain([&srs]) {
            put.execute(params![s.name, s.id, s.organization, s.code, s.definition])
                .map_err(|e| sql(path, e))?;
        }
    }
    tx.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, \
         max_x, max_y, srs_id) VALUES (?1, 'tiles', ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            table,
            format!("{table}, written by bundlefs"),
            extent.xmin,
            extent.ymin,
            extent.xmax,
            extent.ymax,
            srs.id
        ],
    )
    .map_err(|e| sql(path, e))?;
    let cover = crate::format::extent::union(extent, world);
    let (set, matrices) = gpkg::matrices(scheme, &cover);
    tx.execute(
        "INSERT INTO gpkg_tile_matrix_set (table_name, srs_id, min_x, min_y, max_x, max_y) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![table, srs.id, set.xmin, set.ymin, set.xmax, set.ymax],
    )
    .map_err(|e| sql(path, e))?;
    for m in &matrices {
        tx.execute(
            "INSERT INTO gpkg_tile_matrix (table_name, zoom_level, matrix_width, matrix_height, \
             tile_width, tile_height, pixel_x_size, pixel_y_size) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                table,
                m.zoom,
                m.width,
                m.height,
                m.tile_width,
                m.tile_height,
                m.pixel_x,
                m.pixel_y
            ],
        )
        .map_err(|e| sql(path, e))?;
    }
    tx.commit().map_err(|e| sql(path, e))
}

/// Sets the `gpkg_contents` bounds of `table` (the cache extent, map units).
/// Errors: SQLite errors, naming the file.
pub fn set_bounds(path: &Path, table: &str, e: &Envelope) -> Result<()> {
    let db = connect(path, false)?;
    db.execute(
        "UPDATE gpkg_contents SET min_x = ?2, min_y = ?3, max_x = ?4, max_y = ?5 \
         WHERE table_name = ?1",
        params![table, e.xmin, e.ymin, e.xmax, e.ymax],
    )
    .map_err(|e| sql(path, e))?;
    Ok(())
}

/// The tile table of the GeoPackage at `path`: its only `tiles` row of `gpkg_contents`, with its
/// tile matrix set, tile matrices and spatial reference. Errors, naming the file: not SQLite, no
/// `gpkg_contents` (no GeoPackage), no tile table or several (naming them: bundlefs reads one
/// tile table per file), a table without a tile matrix set or without tile matrices, a spatial
/// reference missing from `gpkg_spatial_ref_sys`, a zoom level outside 0-255.
pub fn describe(path: &Path) -> Result<TileTable> {
    let db = connect(path, true)?;
    super::sqlite::check_sqlite(&db, path, "a GeoPackage")?;
    let bad = |what: String| Error::invalid(format!("{}: {what}", path.display()));
    for t in [
        "gpkg_contents",
        "gpkg_tile_matrix_set",
        "gpkg_tile_matrix",
        "gpkg_spatial_ref_sys",
    ] {
        if !has_object(&db, path, t, "'table', 'view'")? {
            return Err(bad(format!(
                "not a GeoPackage with tiles (no {t} table; GeoPackage 1.3 tiles need \
                 gpkg_contents, gpkg_spatial_ref_sys, gpkg_tile_matrix_set and gpkg_tile_matrix)"
            )));
        }
    }
    let tables: Vec<(String, Option<String>)> = {
        let mut st = db
            .prepare(
                "SELECT table_name, identifier FROM gpkg_contents WHERE lower(data_type) = 'tiles' \
                 ORDER BY table_name",
            )
            .map_err(|e| sql(path, e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| sql(path, e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| sql(path, e))?
    };
    let (table, identifier) = match &tables[..] {
        [] => {
            return Err(bad(
                "a GeoPackage without tiles (no gpkg_contents row of data_type 'tiles')".into(),
            ))
        }
        [one] => one.clone(),
        many => {
            return Err(bad(format!(
                "holds {} tile tables ({}); bundlefs reads a GeoPackage of one tile table",
                many.len(),
                many.iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if !has_object(&db, path, &table, "'table', 'view'")? {
        return Err(bad(format!(
            "gpkg_contents names tile table {table}, which the file lacks"
        )));
    }
    let set: Option<(i64, f64, f64, f64, f64)> = db
        .query_row(
            "SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set WHERE table_name = ?1",
            [&table],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(|e| sql(path, e))?;
    let Some((srs_id, xmin, ymin, xmax, ymax)) = set else {
        return Err(bad(format!(
            "tile table {table} has no gpkg_tile_matrix_set row"
        )));
    };
    let srs: Option<Srs> = db
        .query_row(
            "SELECT srs_id, srs_name, organization, organization_coordsys_id, definition \
             FROM gpkg_spatial_ref_sys WHERE srs_id = ?1",
            [srs_id],
            |r| {
                Ok(Srs {
                    id: r.get(0)?,
                    name: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    organization: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    code: r.get::<_, Option<i64>>(3)?.unwrap_or(srs_id),
                    definition: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            },
        )
        .optional()
        .map_err(|e| sql(path, e))?;
    let Some(srs) = srs else {
        return Err(bad(format!(
            "the tile matrix set of {table} names srs_id {srs_id}, which gpkg_spatial_ref_sys lacks"
        )));
    };
    let mut matrices = Vec::new();
    {
        let mut st = db
            .prepare(
                "SELECT zoom_level, matrix_width, matrix_height, tile_width, tile_height, \
                 pixel_x_size, pixel_y_size FROM gpkg_tile_matrix WHERE table_name = ?1 \
                 ORDER BY zoom_level",
            )
            .map_err(|e| sql(path, e))?;
        let rows = st
            .query_map([&table], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, f64>(5)?,
                    r.get::<_, f64>(6)?,
                ))
            })
            .map_err(|e| sql(path, e))?;
        for r in rows {
            let (z, w, h, tw, th, px, py) = r.map_err(|e| sql(path, e))?;
            let zoom = u8::try_from(z).map_err(|_| {
                bad(format!(
                    "gpkg_tile_matrix zoom level {z} (bundlefs reads 0-255)"
                ))
            })?;
            let dim = |v: i64, what: &str| {
                u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                    bad(format!(
                        "gpkg_tile_matrix zoom level {z} has {what} {v} (must be 1 or more)"
                    ))
                })
            };
            matrices.push(Matrix {
                zoom,
                width: dim(w, "matrix_width")?,
                height: dim(h, "matrix_height")?,
                tile_width: dim(tw, "tile_width")?,
                tile_height: dim(th, "tile_height")?,
                pixel_x: px,
                pixel_y: py,
            });
        }
    }
    if matrices.is_empty() {
        return Err(bad(format!(
            "tile table {table} has no gpkg_tile_matrix rows (no zoom level is defined)"
        )));
    }
    type Bounds = (Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let contents: Option<Bounds> = db
        .query_row(
            "SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name = ?1",
            [&table],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(|e| sql(path, e))?;
    let contents = match contents {
        Some((Some(xmin), Some(ymin), Some(xmax), Some(ymax))) if xmin < xmax && ymin < ymax => {
            Some(Envelope {
                xmin,
                ymin,
                xmax,
                ymax,
            })
        }
        _ => None,
    };
    Ok(TileTable {
        identifier: identifier.unwrap_or_else(|| table.clone()),
        table,
        srs,
        set: Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        },
        matrices,
        contents,
    })
}

/// Opens tile table `t` of the GeoPackage at `path` as a storage (rows top-down over each zoom
/// level's tile matrix): read-write when the file can be written. `durable`: every write waits for
/// the disk. Errors: as [`SqliteTiles`] opens, naming the file.
pub fn open(path: &Path, t: &TileTable, durable: bool) -> Result<SqliteTiles> {
    let dims: BTreeMap<u8, (u32, u32)> = t
        .matrices
        .iter()
        .map(|m| (m.zoom, (m.width, m.height)))
        .collect();
    SqliteTiles::open(
        path,
        Grid::Matrix {
            table: t.table.clone(),
            dims,
        },
        durable,
        &format!("no tile table {}", t.table),
    )
}
