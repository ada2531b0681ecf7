//! `verify`: every index entry inside its file and consistent, optionally every tile decoded, and
//! a warning for every folder or file in the cache that bundlefs skips (never silence).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cache::{read_dir_names, Cache, Layout, TileGroup};
use crate::format::conf::StorageFormat;
use crate::format::sniff::{has_full_png_signature, sniff, ImageKind};
use crate::Result;

/// One thing wrong, naming the file (and the tile or entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

/// What verify looked at and found.
#[derive(Debug, Default)]
pub struct Report {
    pub levels: usize,
    pub bundles: usize,
    pub tiles: u64,
    pub problems: Vec<Problem>,
    /// Oddities that readers tolerate (e.g. ArcGIS's PNGs missing their first signature bytes).
    pub warnings: Vec<Problem>,
    /// Checks that were not made here, with why (said, never skipped silently).
    pub not_checked: Vec<String>,
}

/// Result of decoding one tile: fine, a tolerated oddity (warning), or a problem.
enum Decoded {
    Ok,
    Warn(String),
    Bad(String),
}

fn decode_check(bytes: &[u8], fallback: ImageKind) -> Decoded {
    let kind = sniff(bytes).unwrap_or(fallback);
    let fmt = match kind {
        ImageKind::Png => image::ImageFormat::Png,
        ImageKind::Jpeg => image::ImageFormat::Jpeg,
        ImageKind::Lerc | ImageKind::Pbf => return data_check(bytes, kind),
    };
    if kind == ImageKind::Png
        && !has_full_png_signature(bytes)
        && sniff(bytes) == Some(ImageKind::Png)
    {
        // ArcGIS has written PNGs whose first four signature bytes are missing; check the rest.
        let mut fixed = b"\x89PNG".to_vec();
        fixed.extend_from_slice(bytes);
        return match image::load_from_memory_with_format(&fixed, fmt) {
            Ok(_) => Decoded::Warn(
                "PNG lacks the first 4 signature bytes (decodes once restored)".into(),
            ),
            Err(e) => Decoded::Bad(format!("does not decode as PNG: {e}")),
        };
    }
    match image::load_from_memory_with_format(bytes, fmt) {
        Ok(_) => Decoded::Ok,
        Err(e) => Decoded::Bad(format!("does not decode as {kind:?}: {e}")),
    }
}

/// `--decode` of a tile without pixels: a LERC blob must start with its signature; a gzip'ed vector
/// tile must gunzip whole (RFC 1952: the CRC-32 and length trailer are checked by the decoder).
fn data_check(bytes: &[u8], kind: ImageKind) -> Decoded {
    match kind {
        ImageKind::Lerc if sniff(bytes) == Some(ImageKind::Lerc) => Decoded::Ok,
        ImageKind::Lerc => Decoded::Bad("is not a LERC blob (no CntZImage/Lerc2 signature)".into()),
        _ if sniff(bytes) != Some(ImageKind::Pbf) => Decoded::Ok, // uncompressed protobuf
        _ => {
            use std::io::Read;
            let mut out = Vec::new();
            match flate2::read::GzDecoder::new(bytes).read_to_end(&mut out) {
                Ok(_) => Decoded::Ok,
                Err(e) => Decoded::Bad(format!("vector tile does not gunzip: {e}")),
            }
        }
    }
}

/// Without decoding: a PNG stored without the first four bytes of its signature (as ArcGIS wrote
/// some) is a warning; bundlefs hands it out whole, other readers of the cache may not.
fn signature_check(head: &[u8]) -> Decoded {
    if crate::format::pixels::lacks_png_signature(head) {
        Decoded::Warn(
            "PNG lacks the first 4 signature bytes (bundlefs's mount and exploded exports give it \
             whole; other readers of this cache may not open it)"
                .into(),
        )
    } else {
        Decoded::Ok
    }
}

/// Checks the whole cache. Problems are collected, not fatal; Err only for an unreadable folder.
/// Folders and files the cache's readers skip (`L3/`, `l05/` beside nothing, `notes.txt`) are
/// warnings naming each, see [`skipped`].
pub fn verify(cache: &Cache, decode: bool) -> Result<Report> {
    let mut report = Report::default();
    let fallback = cache.default_kind();
    if let crate::cache::url::Location::File(f) = cache.location() {
        // One database file: no folder entries beside its tiles, but maybe records that are no
        // tiles.
        report.warnings.extend(
            cache
                .store()
                .stray_records()
                .into_iter()
                .map(|what| Problem {
                    path: f.clone(),
                    what,
                }),
        );
    } else if matches!(
        cache.kind(),
        crate::cache::StorageKind::Xyz | crate::cache::StorageKind::Tms
    ) {
        // `z/x/y.ext` folders have no names to misspell; other files are not tiles.
        report.not_checked.push(
            "entries the cache does not read (stray files and folders): checked in ArcGIS \
             layouts only, not in XYZ or TMS folders"
                .to_string(),
        );
    } else if !cache.location().is_folder() {
        // Keys a listing by prefix never shows are not "skipped entries" as a folder's are.
        report.not_checked.push(
            "entries the cache does not read (stray files and folders): checked in local \
             folders only; a store is listed by the keys of its levels and bundles"
                .to_string(),
        );
    } else {
        report.warnings.extend(skipped(cache)?);
    }
    for level in cache.levels()? {
        report.levels += 1;
        let groups: Vec<TileGroup> = match cache.groups(level) {
            Ok(g) => g,
            Err(e) => {
                report.problems.push(Problem {
                    path: cache.level_dir(level),
                    what: e.to_string(),
                });
                continue;
            }
        };
        let results: Vec<Checked> = groups
            .par_iter()
            .map(|g| check_group(cache, g, decode, fallback))
            .collect();
        for c in results {
            report.bundles += 1;
            report.tiles += c.tiles;
            report.problems.extend(c.problems);
            report.warnings.extend(c.warnings);
        }
    }
    Ok(report)
}

#[derive(Default)]
struct Checked {
    tiles: u64,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checked {
    fn decoded(&mut self, d: Decoded, path: &std::path::Path, t: crate::format::TileAddr) {
        match d {
            Decoded::Ok => {}
            Decoded::Warn(w) => self.warnings.push(Problem {
                path: path.to_path_buf(),
                what: format!("tile {t}: {w}"),
            }),
            Decoded::Bad(w) => self.problems.push(Problem {
                path: path.to_path_buf(),
                what: format!("tile {t} {w}"),
            }),
        }
    }
}

fn check_group(cache: &Cache, g: &TileGroup, decode: bool, fallback: ImageKind) -> Checked {
    let mut c = Checked::default();
    if cache.store().records_in_one_file() {
        // No index or files of its own: each tile is read and checked.
        let path = cache.root().to_path_buf();
        match cache.read_group(g) {
            Err(e) => c.problems.push(problem_from(&e, &path, None)),
            Ok(tiles) => {
                for (t, b) in tiles {
                    c.tiles += 1;
                    let at = cache.tile_file(t);
                    if decode {
                        c.decoded(decode_check(&b, fallback), &at, t);
                    } else {
                        c.decoded(signature_check(&b), &at, t);
                    }
                }
            }
        }
        return c;
    }
    if cache.storage() == StorageFormat::Exploded {
        for (t, p) in &g.files {
            c.tiles += 1;
            // Through the storage: a file of a folder, or an object of a store (`s3://…`).
            let one = TileGroup {
                id: g.id,
                files: vec![(*t, p.clone())],
            };
            let read = cache.read_group(&one).map(|v| {
                v.into_iter()
                    .next()
                    .map_or_else(Vec::new, |(_, b)| b.to_vec())
            });
            match read {
                Err(e) => c.problems.push(problem_from(&e, p, None)),
                Ok(b) if b.is_empty() => c.problems.push(Problem {
                    path: p.clone(),
                    what: "empty tile file".into(),
                }),
                Ok(b) if decode => c.decoded(decode_check(&b, fallback), p, *t),
                Ok(b) => c.decoded(signature_check(&b), p, *t),
            }
        }
        return c;
    }
    let path = cache.bundle_path(&g.id);
    let b = match cache.bundle(g.id) {
        Ok(Some(b)) => b,
        Ok(None) => return c,
        Err(e) => {
            c.problems.push(problem_from(&e, &path, None));
            return c;
        }
    };
    for (slot, _) in b.slots() {
        c.tiles += 1;
        let t = g.id.tile(slot);
        match b.tile_range(slot) {
            Err(e) => c.problems.push(problem_from(&e, &path, Some(t))),
            Ok(None) => {}
            Ok(Some(r)) if decode => c.decoded(decode_check(b.bytes(r), fallback), &path, t),
            // The head is enough to see a PNG missing its signature's first bytes.
            Ok(Some(r)) => c.decoded(
                signature_check(b.bytes(r.start..r.end.min(r.start + 16))),
                &path,
                t,
            ),
        }
    }
    c
}

/// A problem from an error, at the file the error names (else `fallback`), without repeating the path.
fn problem_from(
    e: &crate::Error,
    fallback: &std::path::Path,
    tile: Option<crate::format::TileAddr>,
) -> Problem {
    let path = match e {
        crate::Error::Format { path, .. } | crate::Error::Io { path, .. } => path.clone(),
        _ => fallback.to_path_buf(),
    };
    let msg = e.to_string();
    let prefix = format!("{}: ", path.display());
    let msg = msg.strip_prefix(&prefix).unwrap_or(&msg);
    let what = match tile {
        Some(t) => format!("tile {t}: {msg}"),
        None => msg.to_string(),
    };
    Problem { path, what }
}

/// Files writers leave beside tiles that every reader ignores by design (FORMATS.md: MapProxy's
/// `.lck`, ArcGIS's `.lock`/`.done` while a job runs; bundlefs's `.times` sidecars and hidden
/// temporary files).
fn ignored_by_design(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || [".lck", ".lock", ".done", ".times"]
            .iter()
            .any(|e| lower.ends_with(e))
}

/// Every entry of the cache's tile folders that the cache's own listings do not read, with why:
/// names bundlefs does not know (`L3`, `Lxx`, `notes.txt`), a second spelling the cache does not
/// open, a `.bundlx` without its bundle, files where folders belong. Compared against what
/// [`Cache::levels`], [`Cache::bundles`] and [`Cache::groups`] return, so a warning means the
/// entry really is skipped.
pub fn skipped(cache: &Cache) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    let mut warn = |path: PathBuf, what: String| out.push(Problem { path, what });
    let tiles = cache.tiles_dir();
    let levels = cache.levels()?;
    let level_names: BTreeSet<PathBuf> = levels.iter().map(|l| cache.level_dir(*l)).collect();
    let mut names = read_dir_names(tiles)?;
    names.sort();
    for n in names {
        let p = tiles.join(&n);
        if level_names.contains(&p) || ignored_by_design(&n) {
            continue;
        }
        // In MapProxy's layout the level folders sit beside anything; only folders look like
        // skipped levels there. The ArcGIS layout's `_alllayers` holds level folders only.
        if cache.layout() == Layout::MapProxy && !p.is_dir() {
            continue;
        }
        let why = match crate::format::exploded::parse_level_dir(&n) {
            Ok(l) if !p.is_dir() => format!("skipped: a file named like level {l}'s folder"),
            Ok(l) => format!(
                "skipped: level {l} is read from {:?}; this spelling is not",
                crate::format::exploded::level_dir(l)
            ),
            Err(_) if !p.is_dir() => "skipped: a file where level folders are".to_string(),
            Err(e) => format!("skipped: not a level folder ({e})"),
        };
        warn(p, why);
    }
    for level in levels {
        let dir = cache.level_dir(level);
        let mut read: BTreeSet<PathBuf> = BTreeSet::new();
        if cache.storage() == StorageFormat::Exploded {
            for g in cache.groups(level).unwrap_or_default() {
                for (_, f) in &g.files {
                    read.insert(f.clone());
                    if let Some(row) = f.parent() {
                        read.insert(row.to_path_buf());
                    }
                }
            }
        } else {
            for id in cache.bundles(level)? {
                let b = cache.bundle_path(&id);
                if cache.storage() == StorageFormat::CompactV1 {
                    read.insert(crate::cache::spelling::bundlx_of(&b));
                }
                read.insert(b);
            }
        }
        let what = match cache.storage() {
            StorageFormat::Exploded => "a row folder (Rxxxxxxxx)",
            StorageFormat::CompactV1 => "a bundle (RrrrrCcccc.bundle with its .bundlx)",
            StorageFormat::CompactV2 => "a bundle (RrrrrCcccc.bundle)",
        };
        let deeper = cache.storage() == StorageFormat::Exploded;
        check_folder(&dir, &read, what, deeper, &mut warn)?;
    }
    Ok(out)
}

/// Warns about entries of a level folder not in `read`, and with `deeper` (exploded) about those
/// of its row folders. An empty folder holds nothing skipped.
fn check_folder(
    dir: &Path,
    read: &BTreeSet<PathBuf>,
    what: &str,
    deeper: bool,
    warn: &mut impl FnMut(PathBuf, String),
) -> Result<()> {
    let mut names = read_dir_names(dir)?;
    names.sort();
    for n in names {
        let p = dir.join(&n);
        if ignored_by_design(&n) {
            continue;
        }
        if read.contains(&p) {
            if deeper && p.is_dir() {
                check_folder(&p, read, "a tile (Cxxxxxxxx.png or .jpg)", false, warn)?;
            }
            continue;
        }
        if p.is_dir() && read_dir_names(&p)?.is_empty() {
            continue;
        }
        warn(p, format!("skipped: not read as {what}"));
    }
    Ok(())
}
