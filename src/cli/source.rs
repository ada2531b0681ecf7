//! Opening the cache a command names: a folder, or a `.tpkx`/`.tpk` package unpacked for the
//! job; commands that change a cache in place or serve it refuse a package, naming the way to a
//! folder.

use std::path::Path;

use crate::cache::Cache;
use crate::jobs::package::{is_package, open_package, Unpacked};

/// Opens a cache folder for a command that changes it in place or serves it (`what`): a tile
/// package is refused with the way to get a folder from it.
pub fn open_folder(path: &Path, what: &str) -> anyhow::Result<Cache> {
    refuse_package(path, what)?;
    Ok(Cache::open(path)?)
}

/// Refuses a tile package where a command (`what`) needs a cache folder, naming the way to get
/// one.
pub fn refuse_package(path: &Path, what: &str) -> anyhow::Result<()> {
    if path.is_file() && is_package(path) {
        anyhow::bail!(
            "{}: a tile package; {what} works on a cache folder. Make one with \
             `bundlefs export {} DIR --storage compact-v2`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// A source cache: a folder, or a package unpacked for the job.
pub enum Source {
    Folder(Cache),
    Package(Unpacked),
}

impl Source {
    /// Opens `path`: a package (by name/content) is unpacked, anything else opened as a folder.
    pub fn open(path: &Path) -> anyhow::Result<Source> {
        Ok(if is_package(path) {
            Source::Package(open_package(path)?)
        } else {
            Source::Folder(Cache::open(path)?)
        })
    }

    /// The cache to read.
    pub fn cache(&self) -> &Cache {
        match self {
            Source::Folder(c) => c,
            Source::Package(p) => &p.cache,
        }
    }
}
