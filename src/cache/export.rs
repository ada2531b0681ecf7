//! Whole-cache conversion between storage formats (exploded, Compact V1, Compact V2): parallel over
//! bundles, a bundle at a time, new bundles written in one pass to a temporary file and renamed.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::{write_atomic, Cache, TileBytes, TileGroup, ALLLAYERS, CONF_CDI, CONF_XML};
use crate::error::{Error, IoContext, Result};
use crate::format::conf::StorageFormat;
use crate::format::{exploded, v1, v2, BundleId, TileAddr};

/// An inclusive range of levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelRange {
    pub min: u8,
    pub max: u8,
}

impl LevelRange {
    pub const ALL: LevelRange = LevelRange {
        min: 0,
        max: u8::MAX,
    };
    pub fn contains(&self, l: u8) -> bool {
        (self.min..=self.max).contains(&l)
    }
}

impl std::str::FromStr for LevelRange {
    type Err = String;
    /// `5`, `0-7`, `3-` (from 3 up), `-4` (up to 4).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let p = |v: &str, d: u8| -> std::result::Result<u8, String> {
            if v.is_empty() {
                Ok(d)
            } else {
                v.trim()
                    .parse::<u8>()
                    .map_err(|_| format!("bad level {v:?} in {s:?} (want e.g. 0-7)"))
            }
        };
        let r = match s.split_once('-') {
            Some((a, b)) => LevelRange {
                min: p(a, 0)?,
                max: p(b, u8::MAX)?,
            },
            None => {
                let l = p(s, 0)?;
                LevelRange { min: l, max: l }
            }
        };
        if r.min > r.max {
            return Err(format!("empty level range {s:?}"));
        }
        Ok(r)
    }
}

/// What an export did.
#[derive(Debug, Default, Clone)]
pub struct ExportSummary {
    pub tiles: u64,
    pub bytes: u64,
    pub bundles: u64,
    pub seconds: f64,
}

/// Options of a conversion.
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
    let start = Instant::now();
    if dest.join(CONF_XML).exists() || dest.join(ALLLAYERS).exists() || has_level_dirs(dest)? {
        return Err(Error::invalid(format!(
            "{}: already holds a cache; export writes a new one (remove it or choose another folder)",
            dest.display()
        )));
    }
    fs::create_dir_all(dest).at(dest)?;
    let tiles_dir = match src.conf() {
        Some(conf) => {
            write_atomic(
                &dest.join(CONF_XML),
                &conf.with_storage(opts.storage),
                false,
            )?;
            if let Some(cdi) = src.cdi() {
                write_atomic(&dest.join(CONF_CDI), cdi, false)?;
            }
            dest.join(ALLLAYERS)
        }
        None => dest.to_path_buf(),
    };
    let levels: Vec<u8> = src
        .levels()?
        .into_iter()
        .filter(|l| opts.levels.contains(*l))
        .collect();
    let tiles = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let bundles = AtomicU64::new(0);
    for level in levels {
        let groups = src.groups(level)?;
        let ldir = tiles_dir.join(exploded::level_dir(level));
        fs::create_dir_all(&ldir).at(&ldir)?;
        groups
            .par_iter()
            .try_for_each(|g: &TileGroup| -> Result<()> {
                let group = src.read_group(g)?;
                if group.is_empty() {
                    return Ok(());
                }
                let n = group.len() as u64;
                let b: u64 = group.iter().map(|(_, t)| t.len() as u64).sum();
                match opts.storage {
                    StorageFormat::Exploded => write_exploded(src, &ldir, &group)?,
                    StorageFormat::CompactV2 => write_v2(&ldir, &g.id, &group)?,
                    StorageFormat::CompactV1 => write_v1(&ldir, &g.id, &group)?,
                }
                tiles.fetch_add(n, Ordering::Relaxed);
                bytes.fetch_add(b, Ordering::Relaxed);
                bundles.fetch_add(1, Ordering::Relaxed);
                progress(n);
                Ok(())
            })?;
    }
    if opts.sync {
        syncfs(dest)?;
    }
    Ok(ExportSummary {
        tiles: tiles.into_inner(),
        bytes: bytes.into_inner(),
        bundles: bundles.into_inner(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn has_level_dirs(dir: &Path) -> Result<bool> {
    Ok(super::read_dir_names(dir)?
        .iter()
        .any(|n| exploded::parse_level_dir(n).is_ok()))
}

/// Flushes the file system holding `path` (one call instead of an fsync per file).
pub fn syncfs(path: &Path) -> Result<()> {
    let f = fs::File::open(path).at(path)?;
    // SAFETY: syncfs on a descriptor we own.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn write_exploded(src: &Cache, ldir: &Path, group: &[(TileAddr, TileBytes)]) -> Result<()> {
    let mut last_row = None;
    let mut rdir = PathBuf::new();
    for (t, bytes) in group {
        if last_row != Some(t.row) {
            rdir = ldir.join(exploded::row_dir(t.row));
            fs::create_dir_all(&rdir).at(&rdir)?;
            last_row = Some(t.row);
        }
        let p = rdir.join(exploded::col_file(t.col, src.kind_of(bytes).ext()));
        fs::write(&p, &bytes[..]).at(&p)?;
    }
    Ok(())
}

fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".bundlefs-")
        .tempfile_in(dir)
        .at(dir)
}

fn write_v2(ldir: &Path, id: &BundleId, group: &[(TileAddr, TileBytes)]) -> Result<()> {
    let path = ldir.join(format!("{}.bundle", exploded::bundle_base(id)));
    let tmp = temp_in(ldir)?;
    let tmp_path = tmp.path().to_path_buf();
    let mut b = v2::Builder::new(BufWriter::with_capacity(1 << 20, tmp.as_file())).at(&tmp_path)?;
    for (t, bytes) in group {
        b.add(t.slot(), bytes).map_err(|e| Error::io(&path, e))?;
    }
    b.finish().at(&tmp_path)?;
    tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(())
}

fn write_v1(ldir: &Path, id: &BundleId, group: &[(TileAddr, TileBytes)]) -> Result<()> {
    let base = ldir.join(exploded::bundle_base(id));
    let path = base.with_extension("bundle");
    let tmp = temp_in(ldir)?;
    let tmp_path = tmp.path().to_path_buf();
    let mut b = v1::Builder::new(
        BufWriter::with_capacity(1 << 20, tmp.as_file()),
        id.row0,
        id.col0,
    )
    .at(&tmp_path)?;
    for (t, bytes) in group {
        b.add(t.slot(), bytes).map_err(|e| Error::io(&path, e))?;
    }
    let (_, bundlx, _) = b.finish().at(&tmp_path)?;
    write_atomic(&base.with_extension("bundlx"), &bundlx, false)?;
    tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(())
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
