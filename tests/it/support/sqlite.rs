//! SQLite tile files (MBTiles, GeoPackage) as independent tools see them: `sqlite3` for the rows,
//! and GDAL writing files that bundlefs must import tile for tile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

use super::mount::{need, sh};
use super::{all_tiles, bin, esri_sample_cache, run_ok, scratch_dir};

/// `bundlefs export SRC DEST EXTRA…`, its output (fails the test when it fails).
pub fn export(src: &Path, dest: &Path, extra: &[&str]) -> String {
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(src)
            .arg(dest)
            .args(extra),
    )
}

/// What `sqlite3` answers to `q` on file `f`, one line per row, fields split by `|`.
pub fn query(f: &Path, q: &str) -> Vec<Vec<String>> {
    need("sqlite3");
    let (ok, out, err) = sh(&format!("sqlite3 {} \"{q}\"", f.display()));
    assert!(ok, "sqlite3 {q}: {err}");
    out.lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// Every tile of table `table` as `sqlite3` lists it: (zoom, column, row as stored) → bytes.
pub fn tiles(f: &Path, table: &str) -> BTreeMap<(u8, u32, u32), Vec<u8>> {
    query(
        f,
        &format!("SELECT zoom_level, tile_column, tile_row, hex(tile_data) FROM {table}"),
    )
    .into_iter()
    .map(|v| {
        let bytes = (0..v[3].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[3][i..i + 2], 16).unwrap())
            .collect();
        let n = |i: usize| v[i].parse::<u32>().unwrap();
        ((n(0) as u8, n(1), n(2)), bytes)
    })
    .collect()
}

/// GDAL draws level 2 of the Esri sample (ESRIC overview 16 of its 19) into a new `file` with
/// `gdal_translate -of DRIVER_OPTIONS` (its own PNG encoding) and adds zooms 1 and 0 with
/// gdaladdo; bundlefs exports the file into a Compact V2 cache, where every tile of `table` must
/// sit at its row (`rows_from_bottom`: flipped over 2^zoom, as MBTiles counts) with GDAL's bytes.
/// Returns the file, for the caller's own checks.
pub fn gdal_file_imports_tile_for_tile(
    tag: &str,
    file: &str,
    driver_options: &str,
    table: &str,
    rows_from_bottom: bool,
) -> PathBuf {
    need("gdal_translate");
    let d = scratch_dir(tag);
    let src = esri_sample_cache();
    let f = d.join(file);
    let (ok, out, err) = sh(&format!(
        "gdal_translate -q -of {driver_options} -oo OVERVIEW_LEVEL=16 {} {} && gdaladdo -q {} 2 4",
        src.join("conf.xml").display(),
        f.display(),
        f.display()
    ));
    assert!(ok, "gdal_translate: {out}{err}");
    let rows = tiles(&f, table);
    assert!(rows.len() >= 21, "zooms 0-2: {}", rows.len());
    let c = d.join("cache");
    export(&f, &c, &["--storage", "compact-v2"]);
    let got = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(got.len(), rows.len());
    for ((z, x, y), b) in &rows {
        let row = if rows_from_bottom {
            (1u32 << z) - 1 - y
        } else {
            *y
        };
        let t = TileAddr::new(*z, row, *x);
        assert_eq!(got.get(&t), Some(b), "{t}");
    }
    f
}
