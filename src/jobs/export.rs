//! Export jobs: the selected tiles of a cache into a new (or existing, same-storage) cache folder in
//! a storage format (exploded, Compact V1, Compact V2). The work itself is [`super::engine`]; a
//! `.tpkx` package is [`super::package::update_package`], chosen by the caller.

use std::path::Path;

use super::engine::{
    check_selection, dest_options, extent_after, holds_cache, into_cache, job_area, run,
    JobOptions, JobSummary, LevelSelect, Progress,
};
use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, Result};
use crate::format::conf::{self, Envelope, StorageFormat, TileScheme};
use crate::format::levels::LevelRange;

/// What an export did.
#[derive(Debug, Default, Clone)]
pub struct ExportSummary {
    pub tiles: u64,
    pub bytes: u64,
    pub bundles: u64,
    pub seconds: f64,
}

/// Options of a whole-cache conversion (see [`export_job`] for extents, areas and merging).
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub storage: StorageFormat,
    pub levels: LevelRange,
    /// fsync the written files (one syncfs at the end).
    pub sync: bool,
}

/// Copies every tile of `src` (levels in range) to a new cache at `dest` in `opts.storage`.
/// DEST must not already hold a cache. The layout follows the source: ArcGIS (`conf.xml`,
/// `conf.cdi`, `_alllayers/`) when it has a conf.xml, MapProxy's `Lnn/` at the root otherwise.
pub fn export(
    src: &Cache,
    dest: &Path,
    opts: &ExportOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ExportSummary> {
    if holds_cache(dest)? {
        return Err(Error::invalid(format!(
            "{}: already holds a cache; export writes a new one (remove it or choose another folder)",
            dest.display()
        )));
    }
    struct F<'a>(&'a (dyn Fn(u64) + Sync));
    impl Progress for F<'_> {
        fn advance(&self, n: u64) {
            (self.0)(n)
        }
    }
    let job = JobOptions {
        levels: LevelSelect::Range(opts.levels),
        sync: opts.sync,
        ..JobOptions::default()
    };
    let s = export_job(src, dest, opts.storage, &job, &F(progress))?;
    Ok(ExportSummary {
        tiles: s.tiles_written,
        bytes: s.bytes_written,
        bundles: s.bundles,
        seconds: s.seconds,
    })
}

/// Exports the selected tiles of `src` to `dest`: a new cache folder in `storage`, with conf.xml
/// (StorageFormat set to `storage`) and conf.cdi (the exported area). When DEST already holds a
/// cache of that storage, tiles are merged into it or overwrite its own (`opts.mode`) after its
/// tiling scheme and image format are checked. A file at DEST is refused (a `.tpkx` package is
/// [`super::package::update_package`]'s).
pub fn export_job(
    src: &Cache,
    dest: &Path,
    storage: StorageFormat,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    check_selection(src, opts)?;
    if dest.is_file() {
        return Err(Error::invalid(format!(
            "{}: is a file; export --storage {storage} writes a cache folder",
            dest.display()
        )));
    }
    if holds_cache(dest)? {
        let mut d = Cache::open_with(dest, dest_options(storage, opts.sync))?;
        if d.storage() != storage {
            return Err(Error::invalid(format!(
                "{}: holds a cache in {} storage; a cache cannot mix storage formats, so export --storage {storage} \
                 cannot go into it (choose another folder); nothing was written",
                dest.display(),
                d.storage()
            )));
        }
        return into_cache(src, &mut d, opts, progress);
    }
    let conf = src.conf().map(|c| c.with_storage(storage));
    let cdi = match (src.scheme(), extent_after(src, None, opts)) {
        (Some(s), Some(e)) if job_area(opts).is_some() => Some(conf::write_cdi(&e, s)),
        (Some(s), None) => Some(conf::write_cdi(&crate::format::extent::scheme_extent(s), s)),
        _ => src.cdi().map(<[u8]>::to_vec),
    };
    let d = Cache::create_empty(
        dest,
        storage,
        conf.as_deref(),
        cdi.as_deref(),
        dest_options(storage, opts.sync),
    )?;
    run(src, &d, true, opts, progress)
}

/// Exports the selected tiles of `src` into the MBTiles file `dest` ([`Cache::create_mbtiles`]),
/// or, when `dest` is an MBTiles file already, into it (merged or overwriting, `opts.mode`, after
/// the schemes are checked). Bytes are copied as stored. Afterwards `minzoom`/`maxzoom` say the
/// levels the file holds, and for vector tiles `json` gives their `vector_layers` (MBTiles 1.3,
/// read from the tiles: [`crate::format::mvt`]). Errors: `src` without a tiling scheme, a scheme MBTiles cannot hold
/// (not Web Mercator zoom levels; by name), a tile format it cannot name, SQLite errors.
pub fn export_mbtiles(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    let summary = export_to_file(
        src,
        dest,
        "MBTiles needs Web Mercator zoom levels",
        &Cache::create_mbtiles,
        opts,
        progress,
    )?;
    let d = Cache::open(dest)?;
    let levels = d.levels()?;
    if let (Some(min), Some(max)) = (levels.first(), levels.last()) {
        crate::cache::store::mbtiles::set_metadata(
            dest,
            &[("minzoom", min.to_string()), ("maxzoom", max.to_string())],
        )?;
    }
    // Vector tiles: MBTiles 1.3 asks for `json` with the layers and their fields
    // (`vector_layers`), read from the tiles the file holds now.
    let meta = crate::cache::store::mbtiles::read_metadata(dest)?;
    if meta.get("format").map(String::as_str) == Some("pbf") {
        let mut seen = crate::format::mvt::SeenLayers::new();
        for level in &levels {
            for g in d.groups(*level)? {
                for (t, b) in d.read_group(&g)? {
                    crate::format::mvt::see_tile(&mut seen, t.level, &b);
                }
            }
        }
        let json = serde_json::json!({ "vector_layers": crate::format::mvt::vector_layers(&seen) });
        crate::cache::store::mbtiles::set_metadata(dest, &[("json", json.to_string())])?;
    }
    Ok(summary)
}

/// Exports the selected tiles of `src` into the GeoPackage `dest` ([`Cache::create_geopackage`]:
/// one tile table, a tile matrix per level of the tiling scheme, any spatial reference), or, when
/// `dest` is a GeoPackage already, into its tile table (merged or overwriting, `opts.mode`, after
/// the schemes are checked). Bytes are copied as stored (PNG and JPEG tiles of a MIXED cache
/// stay as they are). Errors: `src` without a tiling scheme, tiles GeoPackage cannot hold (LERC,
/// vector tiles; by name), SQLite errors.
pub fn export_geopackage(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    export_to_file(
        src,
        dest,
        "a GeoPackage needs the tiling scheme",
        &Cache::create_geopackage,
        opts,
        progress,
    )
}

/// Exports the selected tiles of `src` into a new PMTiles v3 file `dest`
/// ([`Cache::create_pmtiles`]): the tiles go to a temporary file as they come, then the file is
/// written whole, clustered in tile-id order, identical tiles stored once. Bytes are copied as
/// stored. Errors: `dest` exists (PMTiles is written once), `src` without a tiling scheme, a
/// scheme PMTiles cannot hold (not Web Mercator zoom levels; by name), a tile format it cannot
/// type; a failed job leaves no file.
pub fn export_pmtiles(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    check_selection(src, opts)?;
    if dest.exists() {
        return Err(Error::invalid(format!(
            "{}: already exists; a PMTiles file is written once, whole, so export does not merge \
             into one (remove it or choose another name)",
            dest.display()
        )));
    }
    let (scheme, extent, name) =
        new_file_plan(src, opts, "PMTiles needs Web Mercator zoom levels")?;
    let (d, builder) = Cache::create_pmtiles(
        dest,
        scheme,
        &extent,
        &name,
        // The file is synced (when asked) before it is renamed into place.
        crate::cache::CacheOptions {
            durable: opts.sync,
            ..crate::cache::CacheOptions::default()
        },
    )?;
    // The file is written whole after the tiles: the job's own sync would find nothing yet.
    let job = JobOptions {
        sync: false,
        ..opts.clone()
    };
    let summary = run(src, &d, true, &job, progress)?;
    drop(d);
    let builder = std::sync::Arc::into_inner(builder)
        .ok_or_else(|| Error::invalid(format!("{}: still in use after the job", dest.display())))?;
    builder.finish()?;
    Ok(summary)
}

/// Exports the selected tiles of `src` into the XYZ (`tms` false) or TMS folder `dest`
/// ([`Cache::create_xyz`]: `z/x/y.ext` and a `metadata.json`), or, when `dest` is such a folder
/// already, into it (merged or overwriting, `opts.mode`, after the schemes are checked). Bytes are
/// copied as stored, each tile's extension its kind's. Afterwards `metadata.json`'s
/// `minzoom`/`maxzoom` say the levels the folder holds. Errors: `src` without a tiling scheme, a
/// scheme that is not Web Mercator zoom levels (by name), a folder that holds other files, I/O.
pub fn export_xyz(
    src: &Cache,
    dest: &Path,
    tms: bool,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    use crate::cache::StorageKind;
    let existing = dest
        .is_dir()
        .then(|| Cache::open_with(dest, dest_options(StorageFormat::Exploded, opts.sync)))
        .and_then(|c| c.ok())
        .filter(|c| matches!(c.kind(), StorageKind::Xyz | StorageKind::Tms));
    let (summary, levels) = if let Some(mut d) = existing {
        let summary = into_cache(src, &mut d, opts, progress)?;
        (summary, d.levels()?)
    } else {
        let summary = export_to_file(
            src,
            dest,
            "XYZ and TMS folders need Web Mercator zoom levels",
            &move |p, s, e, n, o| Cache::create_xyz(p, s, e, n, o, tms),
            opts,
            progress,
        )?;
        (summary, Cache::open(dest)?.levels()?)
    };
    let meta = dest.join(crate::format::xyz::METADATA);
    if let (Some(min), Some(max), Ok(bytes)) = (levels.first(), levels.last(), std::fs::read(&meta))
    {
        let b = crate::format::xyz::with_zooms(&bytes, (*min, *max))
            .map_err(|e| Error::invalid(format!("{}: {e}", meta.display())))?;
        crate::cache::files::write_atomic(&meta, &b, opts.sync)?;
    }
    Ok(summary)
}

/// What a new one-file cache for the tiles of `src` is made with: `src`'s tiling scheme, the
/// extent of the selected tiles (the scheme's when there is none), and a name (`src`'s folder or
/// file name without extension). Errors: `src` without conf.xml; `needs` says what the format
/// needs of the scheme.
fn new_file_plan<'a>(
    src: &'a Cache,
    opts: &JobOptions,
    needs: &str,
) -> Result<(&'a TileScheme, Envelope, String)> {
    let Some(scheme) = src.scheme() else {
        return Err(Error::invalid(format!(
            "{}: has no conf.xml, so its tiling scheme is unknown; {needs} (nothing written)",
            src.root().display()
        )));
    };
    let extent = extent_after(src, None, opts)
        .unwrap_or_else(|| crate::format::extent::scheme_extent(scheme));
    let name = src
        .root()
        .file_stem()
        .map_or("tiles".to_string(), |n| n.to_string_lossy().into_owned());
    Ok((scheme, extent, name))
}

/// Makes one file of a new cache with `create(path, scheme, extent, name, options)`.
type CreateFile = dyn Fn(&Path, &TileScheme, &Envelope, &str, CacheOptions) -> Result<Cache>;

/// The selected tiles of `src` into the one-file cache `dest`: into it when it is there, else into
/// a new one (a file, or a folder that was empty) made by `create`, which is removed again when
/// the job fails (a file left half written would look like a whole one). `needs` says what the
/// file needs of the scheme, for the error of a source without conf.xml.
fn export_to_file(
    src: &Cache,
    dest: &Path,
    needs: &str,
    create: &CreateFile,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    check_selection(src, opts)?;
    if dest.is_file() {
        // A file that is there already, which others may be reading: every commit durable
        // (SQLite synchronous=FULL, unless --no-sync), so a crash or power loss can lose at most
        // the bundle being written, never the file. Only a new file is written without syncs
        // and made durable by the job's one sync at its end.
        let mut d = Cache::open_with(
            dest,
            CacheOptions {
                durable: opts.sync,
                ..CacheOptions::default()
            },
        )?;
        return into_cache(src, &mut d, opts, progress);
    }
    let (scheme, extent, name) = new_file_plan(src, opts, needs)?;
    let d = create(
        dest,
        scheme,
        &extent,
        &name,
        dest_options(StorageFormat::Exploded, opts.sync),
    )?;
    match run(src, &d, true, opts, progress) {
        Ok(s) => Ok(s),
        Err(e) => {
            drop(d);
            let _ = if dest.is_dir() {
                std::fs::remove_dir_all(dest)
            } else {
                std::fs::remove_file(dest)
            };
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_ranges() {
        assert_eq!(
            "0-7".parse::<LevelRange>().unwrap(),
            LevelRange { min: 0, max: 7 }
        );
        assert_eq!(
            "3".parse::<LevelRange>().unwrap(),
            LevelRange { min: 3, max: 3 }
        );
        assert_eq!(
            "3-".parse::<LevelRange>().unwrap(),
            LevelRange { min: 3, max: 255 }
        );
        assert!("7-3".parse::<LevelRange>().is_err());
        assert!("x".parse::<LevelRange>().is_err());
    }
}
