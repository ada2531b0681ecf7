//! Import jobs: the selected tiles of a cache (or package) into an existing cache folder whose
//! tiling scheme matches and whose image format matches or is MIXED; merged or overwriting
//! (`JobOptions::mode`). The work itself is [`super::engine::into_cache`]; importing into a `.tpkx`
//! package is [`super::package::update_package`], chosen by the caller.

use std::path::Path;

use super::engine::{
    check_selection, dest_options, holds_cache, into_cache, JobOptions, JobSummary, Progress,
};
use crate::cache::{Cache, StorageKind};
use crate::error::{Error, Result};

/// Imports into the cache folder at `dest`. Nothing is written when the options, schemes or
/// formats don't fit; a file at DEST is refused (see [`super::package::update_package`]).
pub fn import_job(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    check_selection(src, opts)?;
    if crate::cache::url::is_pmtiles(dest) {
        return Err(Error::invalid(format!(
            "{}: a PMTiles file is written once, whole, so import cannot add to it; export the \
             tiles of both into a new .pmtiles instead",
            dest.display()
        )));
    }
    if dest.is_file() && !crate::cache::url::is_tile_file(dest) {
        return Err(Error::invalid(format!(
            "{}: is a file, not a cache folder (a .tpkx package is imported into by \
             jobs::package::update_package)",
            dest.display()
        )));
    }
    if !holds_cache(dest)? {
        return Err(Error::invalid(format!(
            "{}: not a tile cache; import needs an existing cache (use export to make a new one)",
            dest.display()
        )));
    }
    let probe = Cache::open(dest)?;
    let mut o = dest_options(probe.storage(), opts.sync);
    if matches!(probe.kind(), StorageKind::Mbtiles | StorageKind::Geopackage) {
        // An SQLite file others may be reading: every commit durable (synchronous=FULL, unless
        // --no-sync), so a crash or power loss cannot corrupt it (export_to_file says the same).
        o.durable = opts.sync;
    }
    let mut d = Cache::open_with(dest, o)?;
    drop(probe);
    into_cache(src, &mut d, opts, progress)
}
