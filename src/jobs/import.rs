//! Import jobs: the selected tiles of a cache (or package) into an existing cache whose tiling
//! scheme matches and whose image format matches or is MIXED; merged (the default) or overwriting.

use std::path::Path;

use super::engine::{
    check_compatible, check_selection, extent_after, run, select_levels, JobOptions, JobSummary,
    Progress,
};
use super::export::dest_options;
use crate::cache::Cache;
use crate::error::{Error, Result};

/// Imports into the cache at `dest` (a cache folder, or a `.tpkx` file that is rewritten whole).
/// Nothing is written when the options, schemes or formats don't fit.
pub fn import_job(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    check_selection(src, opts)?;
    if dest.is_file() {
        return super::package::update_package(src, dest, opts, progress, true);
    }
    if !(dest.is_dir() || crate::cache::url::is_url(dest)) || !super::engine::holds_cache(dest)? {
        return Err(Error::invalid(format!(
            "{}: not a tile cache; import needs an existing cache (use export to make a new one)",
            dest.display()
        )));
    }
    let probe = Cache::open(dest)?;
    let mut d = Cache::open_with(dest, dest_options(probe.storage(), opts.sync))?;
    drop(probe);
    into_cache(src, &mut d, opts, progress)
}

/// Checks compatibility, copies the tiles, then grows DEST's conf.cdi by the area taken.
pub(crate) fn into_cache(
    src: &Cache,
    dest: &mut Cache,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    let levels = select_levels(src, &opts.levels)?;
    check_compatible(src, dest, &levels)?;
    let before = dest.extent();
    let summary = run(src, dest, false, opts, progress)?;
    if summary.tiles_written > 0 {
        if let Some(e) = extent_after(src, before, opts) {
            if Some(e) != before {
                dest.set_extent(&e)?;
            }
        }
    }
    Ok(summary)
}
