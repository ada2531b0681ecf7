//! The one engine of export, import and package jobs (they call it, never each other): pick the
//! source tiles (levels or scales, extent or area of interest), decide each tile (copy, clip, merge,
//! nothing: [`super::tile`]), and write them to the destination bundle by bundle in parallel,
//! through the destination's storage ([`Cache::update_group`]: each tile decided against the
//! destination's tile under the bundle's lock; new bundles written whole in one pass), so an
//! interrupted job leaves a valid cache. [`into_cache`] is the import into an open cache that
//! `import`, `export` (into an existing folder) and `package` (into an unpacked `.tpkx`) use.
//!
//! Which function a target needs (a folder: [`super::export`] / [`super::import`]; a `.tpkx`:
//! [`super::package`]) is the caller's choice, made by the command line.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::aoi::{Aoi, Area, Coverage, Mask, Take};
use super::tile::{Outcome, Side, TilePixels};
use crate::cache::shard::Shard;
use crate::cache::url::Location;
use crate::cache::{Cache, CacheOptions, GroupView, TileBytes, TileGroup};
use crate::error::{Error, Result};
use crate::format::conf::{Envelope, StorageFormat, TileFormat, TileScheme};
use crate::format::extent::union;
use crate::format::levels::LevelRange;
use crate::format::pixels::{ImportMode, PngCompression, TileEncoder, DEFAULT_BACKGROUND};
use crate::format::sniff::ImageKind;
use crate::format::{BundleId, Slot, TileAddr, BUNDLE_DIM};

/// Which levels a job takes.
#[derive(Debug, Clone, PartialEq)]
pub enum LevelSelect {
    /// The levels in this range (those the source has).
    Range(LevelRange),
    /// Map scales, each matching one LOD of the source (within 0.5 %).
    Scales(Vec<f64>),
}

impl Default for LevelSelect {
    fn default() -> Self {
        LevelSelect::Range(LevelRange::ALL)
    }
}

/// What an export or import takes and how it writes.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub levels: LevelSelect,
    /// Whole tiles intersecting this rectangle (cache units). Ignored when `aoi` is given.
    pub extent: Option<Envelope>,
    /// Tiles clipped at pixel resolution to this area.
    pub aoi: Option<Aoi>,
    /// How source tiles meet the destination's (jobs default to MERGE, as ArcGIS's Import Map
    /// Server Cache tool does).
    pub mode: ImportMode,
    /// JPEG tiles' colour outside the area; [`DEFAULT_BACKGROUND`] (white) when None.
    pub background: Option<[u8; 3]>,
    /// Make the result durable (syncfs at the end, fdatasync around index updates).
    pub sync: bool,
    /// A source without conf.xml takes the destination's tiling scheme on trust
    /// (`--scheme-of-dest`); each tile's size and format are then checked against it.
    pub scheme_of_dest: bool,
    /// Tiles (and bundles) of the source that cannot be read are left out and listed in
    /// [`JobSummary::unreadable`] instead of ending the job (`--skip-unreadable`, for salvaging
    /// a damaged cache).
    pub skip_unreadable: bool,
    /// Only the bundles of this worker's share (`--shard I/N`, [`Shard`]); None: every bundle.
    pub shard: Option<Shard>,
}

impl Default for JobOptions {
    /// Every level, no extent or area, MERGE, white background, no sync.
    fn default() -> Self {
        JobOptions {
            levels: LevelSelect::default(),
            extent: None,
            aoi: None,
            mode: ImportMode::Merge,
            background: None,
            sync: false,
            scheme_of_dest: false,
            skip_unreadable: false,
            shard: None,
        }
    }
}

/// What an export writes: a cache folder ([`super::export::export_job`]) or a tile package
/// ([`super::package::update_package`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A cache folder in this storage format.
    Storage(StorageFormat),
    /// A `.tpkx` tile package (Compact V2 bundles in a stored zip).
    Tpkx,
}

/// Options for the destination cache of a job.
pub fn dest_options(storage: StorageFormat, sync: bool) -> CacheOptions {
    CacheOptions {
        // Exploded tiles are renamed into place one by one; one syncfs at the end covers them.
        durable: sync && storage != StorageFormat::Exploded,
        ..CacheOptions::default()
    }
}

/// Reports progress in tiles (read, whether written or not).
pub trait Progress: Sync {
    /// Called once before any tile is read: the tiles the selected bundles hold.
    fn start(&self, _total_tiles: u64) {}
    /// Called after each bundle (or bundle-sized group of exploded tiles) with its tiles read.
    fn advance(&self, _tiles: u64) {}
}

/// No progress reports.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a job did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JobSummary {
    /// Source tiles read (in the selected levels and bundles).
    pub tiles_read: u64,
    /// Tiles stored in the destination (copied + clipped + merged).
    pub tiles_written: u64,
    /// Stored byte for byte from the source.
    pub tiles_copied: u64,
    /// Boundary tiles clipped to the area of interest (and re-encoded).
    pub tiles_clipped: u64,
    /// Tiles blended with the destination's (and re-encoded).
    pub tiles_merged: u64,
    /// Tiles whose destination already held the same pixels.
    pub tiles_unchanged: u64,
    /// Tiles outside the extent or area.
    pub tiles_skipped: u64,
    /// Tile bytes read from the source.
    pub bytes_read: u64,
    /// Tile bytes written to the destination.
    pub bytes_written: u64,
    /// Bundles (or bundle-sized groups of exploded tiles) that received tiles.
    pub bundles: u64,
    /// The levels taken, ascending.
    pub levels: Vec<u8>,
    /// Wall time of the job.
    pub seconds: f64,
    /// What of the source could not be read and was left out (with `skip_unreadable`): one line
    /// each, naming the file (and tile) and why; sorted.
    pub unreadable: Vec<String>,
    /// The source's object-store requests at the job's end (None for a local source): the
    /// counters `status` and `/metrics` read too ([`crate::cache::counters::StoreCounters`]).
    pub source_requests: Option<crate::cache::counters::StoreCounters>,
    /// The destination's object-store requests at the job's end (None for a local one).
    pub dest_requests: Option<crate::cache::counters::StoreCounters>,
}

#[derive(Default)]
struct Counters {
    unreadable: std::sync::Mutex<Vec<String>>,
    read: AtomicU64,
    copied: AtomicU64,
    clipped: AtomicU64,
    merged: AtomicU64,
    unchanged: AtomicU64,
    skipped: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    bundles: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The levels of `src` a job takes.
pub fn select_levels(src: &Cache, sel: &LevelSelect) -> Result<Vec<u8>> {
    let have = src.levels()?;
    match sel {
        LevelSelect::Range(r) => Ok(have.into_iter().filter(|l| r.contains(*l)).collect()),
        LevelSelect::Scales(scales) => {
            let scheme = src.scheme().ok_or_else(|| {
                Error::invalid(format!(
                    "{}: has no conf.xml, so its scales are unknown; select levels with --levels",
                    src.root().display()
                ))
            })?;
            let mut out = BTreeSet::new();
            for s in scales {
                let lod = scheme
                    .lods
                    .iter()
                    .find(|l| (l.scale - s).abs() <= 0.005 * s.abs())
                    .ok_or_else(|| {
                        let list: Vec<String> = scheme
                            .lods
                            .iter()
                            .map(|l| format!("{} (L{:02})", l.scale, l.level))
                            .collect();
                        Error::invalid(format!(
                            "scale {s} is not a level of {}; its scales are: {}",
                            src.root().display(),
                            list.join(", ")
                        ))
                    })?;
                out.insert(lod.level);
            }
            Ok(have.into_iter().filter(|l| out.contains(l)).collect())
        }
    }
}

/// The area a job covers (for conf.cdi): the AOI's bounding box or the extent, if any.
pub fn job_area(opts: &JobOptions) -> Option<Envelope> {
    match (&opts.aoi, &opts.extent) {
        (Some(a), _) => Some(a.bbox()),
        (None, Some(e)) => Some(*e),
        (None, None) => None,
    }
}

/// The intersection of two envelopes, if they overlap.
pub fn intersection(a: &Envelope, b: &Envelope) -> Option<Envelope> {
    let e = Envelope {
        xmin: a.xmin.max(b.xmin),
        ymin: a.ymin.max(b.ymin),
        xmax: a.xmax.min(b.xmax),
        ymax: a.ymax.min(b.ymax),
    };
    (e.xmin < e.xmax && e.ymin < e.ymax).then_some(e)
}

/// Checks the options against the source before anything is written.
pub fn check_selection(src: &Cache, opts: &JobOptions) -> Result<()> {
    if (opts.aoi.is_some() || opts.extent.is_some()) && src.scheme().is_none() {
        return Err(Error::invalid(format!(
            "{}: has no conf.xml, so tiles cannot be placed on the map; --extent and --aoi need one",
            src.root().display()
        )));
    }
    if let Some(e) = &opts.extent {
        if !(e.xmin < e.xmax && e.ymin < e.ymax) {
            return Err(Error::invalid(format!(
                "extent {},{},{},{}: want xmin,ymin,xmax,ymax with xmin < xmax and ymin < ymax",
                e.xmin, e.ymin, e.xmax, e.ymax
            )));
        }
    }
    Ok(())
}

/// The pixel settings for tiles going into `dest` (its scheme, else the source's): PNG encoded
/// for size, as a batch job writes each tile once for many reads.
fn tile_pixels(src: &Cache, dest: &Cache, background: Option<[u8; 3]>) -> TilePixels {
    let scheme: Option<&TileScheme> = dest.scheme().or(src.scheme());
    let mut encoder = match scheme {
        Some(s) => TileEncoder::for_scheme(s),
        None => TileEncoder::new(TileFormat::Png, 0),
    };
    encoder.background = Some(background.unwrap_or(DEFAULT_BACKGROUND));
    encoder.png = PngCompression::Small;
    TilePixels {
        fallback: encoder.format.image_kind().unwrap_or(ImageKind::Png),
        encoder,
        size: scheme.map(|s| (s.tile_cols, s.tile_rows)),
    }
}

/// Map bounds of a bundle (128 × 128 tiles).
fn bundle_bbox(scheme: &TileScheme, g: &TileGroup) -> Option<Envelope> {
    let a = scheme.tile_bbox(g.id.tile(Slot { row: 0, col: 0 }))?;
    let b = scheme.tile_bbox(g.id.tile(Slot {
        row: BUNDLE_DIM - 1,
        col: BUNDLE_DIM - 1,
    }))?;
    Some(union(&a, &b))
}

struct Ctx<'a> {
    src: &'a Cache,
    dest: &'a Cache,
    /// DEST was created by this job: it holds no tile we have not written.
    fresh: bool,
    mode: ImportMode,
    pixels: TilePixels,
    /// Where the tiles taken lie: the one rule of [`Area::take`], shared with delete and render.
    area: Area,
    n: Counters,
    progress: &'a dyn Progress,
    /// Check each source tile against DEST's scheme (a source without conf.xml taken on trust).
    check_each: Option<&'a TileScheme>,
    /// Leave out what cannot be read, noting it ([`JobOptions::skip_unreadable`]).
    skip_unreadable: bool,
    /// DEST keeps each tile as a file users open (exploded): a PNG stored without its first four
    /// signature bytes is written whole ([`crate::format::pixels::as_image_file`]); bundles keep
    /// the bytes as they are.
    image_files: bool,
}

/// Copies the selected tiles of `src` into `dest` (which must already be checked compatible).
pub fn run(
    src: &Cache,
    dest: &Cache,
    fresh: bool,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    let start = Instant::now();
    check_selection(src, opts)?;
    let levels = select_levels(src, &opts.levels)?;
    let area = Area::of(opts.extent, opts.aoi.clone());
    let ctx = Ctx {
        src,
        dest,
        fresh,
        mode: opts.mode,
        pixels: tile_pixels(src, dest, opts.background),
        area,
        n: Counters::default(),
        progress,
        skip_unreadable: opts.skip_unreadable,
        check_each: if src.scheme().is_none() && opts.scheme_of_dest {
            dest.scheme()
        } else {
            None
        },
        image_files: dest.storage() == crate::format::conf::StorageFormat::Exploded,
    };
    // Plan: the groups of each level that can hold selected tiles, and how many tiles they hold.
    let mut plan: Vec<(u8, Vec<(TileGroup, Coverage)>)> = Vec::new();
    let mut total = 0u64;
    for &level in &levels {
        let mut groups = Vec::new();
        for g in src.groups(level)? {
            if opts.shard.is_some_and(|s| !s.takes(&g.id)) {
                continue;
            }
            let cov = ctx.group_coverage(&g);
            if cov == Coverage::Outside {
                continue;
            }
            total += if g.files.is_empty() {
                match src.bundle(g.id) {
                    Ok(b) => b.map_or(0, |b| b.slots().len() as u64),
                    // Left for `pick` to note as unreadable.
                    Err(_) if opts.skip_unreadable => 0,
                    Err(e) => return Err(e),
                }
            } else {
                g.files.len() as u64
            };
            groups.push((g, cov));
        }
        plan.push((level, groups));
    }
    progress.start(total);
    for (level, groups) in plan {
        if groups.is_empty() {
            continue;
        }
        dest.make_level(level)?;
        groups
            .par_iter()
            .try_for_each(|(g, cov)| ctx.group(g, *cov))?;
    }
    if opts.sync {
        dest.sync_all()?;
    }
    let n = &ctx.n;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(JobSummary {
        tiles_read: get(&n.read),
        tiles_written: get(&n.copied) + get(&n.clipped) + get(&n.merged),
        tiles_copied: get(&n.copied),
        tiles_clipped: get(&n.clipped),
        tiles_merged: get(&n.merged),
        tiles_unchanged: get(&n.unchanged),
        tiles_skipped: get(&n.skipped),
        bytes_read: get(&n.bytes_read),
        bytes_written: get(&n.bytes_written),
        bundles: get(&n.bundles),
        levels,
        seconds: start.elapsed().as_secs_f64(),
        unreadable: {
            let mut v = std::mem::take(&mut *n.unreadable.lock().unwrap());
            v.sort();
            v
        },
        source_requests: src.store().counters(),
        dest_requests: dest.store().counters(),
    })
}

/// One selected tile: its source bytes and, for boundary tiles, the pixels to keep.
#[derive(Clone)]
struct Pick {
    t: TileAddr,
    bytes: TileBytes,
    mask: Option<Mask>,
}

/// A tile to store.
struct Store {
    t: TileAddr,
    bytes: StoreBytes,
}

enum StoreBytes {
    Src(TileBytes),
    New(Vec<u8>),
}

impl StoreBytes {
    fn into_tile(self) -> TileBytes {
        match self {
            StoreBytes::Src(b) => b,
            StoreBytes::New(v) => TileBytes::owned(v),
        }
    }
}

impl std::ops::Deref for StoreBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            StoreBytes::Src(b) => b,
            StoreBytes::New(v) => v,
        }
    }
}

impl Ctx<'_> {
    fn group_coverage(&self, g: &TileGroup) -> Coverage {
        let scheme = self.src.scheme();
        let bbox = scheme.and_then(|s| bundle_bbox(s, g));
        match bbox {
            None => Coverage::Inside,
            Some(b) => self.area.block(&b),
        }
    }

    /// Which tiles of a group are taken, and how many were read.
    fn pick(&self, g: &TileGroup, cov: Coverage) -> Result<(Vec<Pick>, u64)> {
        let tiles = match self.src.read_group(g) {
            Ok(t) => t,
            Err(_) if self.skip_unreadable => self.readable_tiles(g),
            Err(e @ (Error::Format { .. } | Error::Io { .. })) => {
                return Err(Error::invalid(format!(
                    "{e}; nothing more was copied (the destination keeps the tiles written \
                     before); to copy what can be read, run again with --skip-unreadable, which \
                     lists what it leaves out"
                )))
            }
            Err(e) => return Err(e),
        };
        let n = tiles.len() as u64;
        add(&self.n.read, n);
        add(
            &self.n.bytes_read,
            tiles.iter().map(|(_, b)| b.len() as u64).sum(),
        );
        let scheme = self.src.scheme();
        let mut out = Vec::with_capacity(tiles.len());
        let mut skipped = 0;
        for (t, bytes) in tiles {
            let bbox = || {
                scheme.and_then(|s| s.tile_bbox(t)).ok_or_else(|| {
                    Error::invalid(format!(
                        "tile {t}: level {} is not in {}'s conf.xml",
                        t.level,
                        self.src.root().display()
                    ))
                })
            };
            let mask = match cov {
                Coverage::Inside => None,
                Coverage::Outside => {
                    skipped += 1;
                    continue;
                }
                Coverage::Partial => {
                    let b = bbox()?;
                    let (w, h) = scheme.map_or((0, 0), |s| (s.tile_cols, s.tile_rows));
                    match self.area.take(&b, w, h) {
                        Take::No => {
                            skipped += 1;
                            continue;
                        }
                        Take::Whole => None,
                        Take::Pixels(m) => Some(m),
                    }
                }
            };
            out.push(Pick { t, bytes, mask });
        }
        add(&self.n.skipped, skipped);
        Ok((out, n))
    }

    /// The tiles of group `g` that can be read, one by one, each one that cannot noted as
    /// unreadable (`--skip-unreadable`); a bundle that cannot be opened at all is noted whole.
    fn readable_tiles(&self, g: &TileGroup) -> Vec<(TileAddr, TileBytes)> {
        let note = |what: String| {
            // Listed at the end of the job (`JobSummary::unreadable`), so only at debug here.
            tracing::debug!("skipped: {what}");
            self.n.unreadable.lock().unwrap().push(what);
        };
        let mut out = Vec::new();
        if !g.files.is_empty() {
            for (t, p) in &g.files {
                let one = TileGroup {
                    id: g.id,
                    files: vec![(*t, p.clone())],
                };
                match self.src.read_group(&one) {
                    Ok(v) => out.extend(v),
                    Err(e) => note(format!("tile {t}: {e}")),
                }
            }
            return out;
        }
        match self.src.bundle(g.id) {
            Ok(Some(b)) => {
                for (slot, _) in b.slots() {
                    let t = g.id.tile(slot);
                    match self.src.tile(t) {
                        Ok(Some(bytes)) => out.push((t, bytes)),
                        Ok(None) => {}
                        Err(e) => note(format!("tile {t}: {e}")),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => note(format!("{e} (the whole bundle)")),
        }
        out
    }

    /// Decides one tile against the destination's current tile.
    fn decide(&self, p: Pick, dest: Option<TileBytes>) -> Result<Option<Store>> {
        if let Some(scheme) = self.check_each {
            let kind = self.src.kind_of(&p.bytes);
            crate::format::pixels::check_tile(&p.bytes, kind, Some(scheme)).map_err(|e| {
                Error::invalid(format!(
                    "{}: tile {}: {e} (checked against {}'s tiling scheme, --scheme-of-dest)",
                    self.src.tile_file(p.t).display(),
                    p.t,
                    self.dest.root().display()
                ))
            })?;
        }
        let outcome = self
            .pixels
            .apply(&p.bytes, p.mask.as_ref(), dest.as_deref(), self.mode)
            .map_err(|e| {
                let file = match e.side {
                    Side::Source => self.src.tile_file(p.t),
                    Side::Destination => self.dest.tile_file(p.t),
                };
                Error::invalid(format!("{}: tile {}: {e}", file.display(), p.t))
            })?;
        let bytes = match outcome {
            Outcome::Copy => {
                add(&self.n.copied, 1);
                StoreBytes::Src(p.bytes)
            }
            Outcome::Encoded(v) => {
                if p.mask.is_some() {
                    add(&self.n.clipped, 1);
                } else {
                    add(&self.n.merged, 1);
                }
                StoreBytes::New(v)
            }
            Outcome::Unchanged => {
                add(&self.n.unchanged, 1);
                return Ok(None);
            }
            Outcome::Empty => {
                add(&self.n.skipped, 1);
                return Ok(None);
            }
        };
        Ok(Some(Store { t: p.t, bytes }))
    }

    fn group(&self, g: &TileGroup, cov: Coverage) -> Result<()> {
        let (picks, read) = self.pick(g, cov)?;
        let result = self.write_group(g.id, picks);
        self.progress.advance(read);
        result
    }

    /// Writes the picked tiles of one bundle into the destination, each decided against the
    /// destination's tile as stored at that moment ([`Cache::update_group`]: under the bundle's
    /// lock, or retried on a lost compare-and-swap in stores without locks).
    fn write_group(&self, id: BundleId, picks: Vec<Pick>) -> Result<()> {
        if picks.is_empty() {
            return Ok(());
        }
        let mut decide_all = |view: &dyn GroupView| -> Result<Vec<(Slot, TileBytes)>> {
            // A store without locks calls this again after a lost race: decide anew each time.
            let mut out = Vec::with_capacity(picks.len());
            for p in picks.iter().cloned() {
                let dest_tile = if self.fresh || !view.exists() {
                    None
                } else {
                    view.tile(p.t.slot())?
                };
                if let Some(s) = self.decide(p, dest_tile)? {
                    let mut bytes = s.bytes.into_tile();
                    if self.image_files {
                        if let std::borrow::Cow::Owned(whole) =
                            crate::format::pixels::as_image_file(&bytes)
                        {
                            bytes = TileBytes::owned(whole);
                        }
                    }
                    out.push((s.t.slot(), bytes));
                }
            }
            Ok(out)
        };
        let st = self.dest.update_group(id, &mut decide_all)?;
        if st.tiles > 0 {
            add(&self.n.bundles, 1);
            add(&self.n.bytes_written, st.bytes_written);
        }
        Ok(())
    }
}

/// Sorted levels as runs, `0-4, 7`; `none` for no level.
pub fn level_runs(levels: &[u8]) -> String {
    if levels.is_empty() {
        return "none".into();
    }
    let mut runs: Vec<(u8, u8)> = Vec::new();
    for &l in levels {
        match runs.last_mut() {
            Some((_, hi)) if u16::from(*hi) + 1 == u16::from(l) => *hi = l,
            _ => runs.push((l, l)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that DEST can take SRC's tiles of `levels`: same tiling scheme (spatial reference,
/// origin, tile size, the LODs of those levels) and image formats that match, or DEST MIXED.
/// With `scheme_of_dest`, a source without conf.xml is accepted (its tiles are checked one by one
/// in [`run`]); without it, the refusal says how to go on.
pub fn check_compatible(
    src: &Cache,
    dest: &Cache,
    levels: &[u8],
    scheme_of_dest: bool,
) -> Result<()> {
    let (s, d) = match (src.scheme(), dest.scheme()) {
        (Some(s), Some(d)) => (s, d),
        (None, Some(_)) if scheme_of_dest => {
            tracing::info!(
                "{}: no conf.xml; trusting {}'s tiling scheme (--scheme-of-dest), checking each tile",
                src.root().display(),
                dest.root().display()
            );
            return Ok(());
        }
        (None, None) => {
            tracing::warn!(
                "{} and {} have no conf.xml: their tiling schemes cannot be compared",
                src.root().display(),
                dest.root().display()
            );
            return Ok(());
        }
        (None, Some(_)) => {
            return Err(Error::invalid(format!(
                "{}: has no conf.xml, so its tiling scheme cannot be checked against {}'s; if its \
                 tiles follow the destination's scheme, run again with --scheme-of-dest (each \
                 tile's pixel size and format are still checked), or copy the scheme's conf.xml \
                 into it; nothing was written",
                src.root().display(),
                dest.root().display()
            )))
        }
        (Some(_), None) => {
            return Err(Error::invalid(format!(
                "{}: has no conf.xml, so its tiling scheme cannot be checked against {}'s",
                dest.root().display(),
                src.root().display()
            )))
        }
    };
    let what = |msg: String| {
        Error::invalid(format!(
            "tiling schemes differ: {msg} ({} vs {}); nothing was written",
            src.root().display(),
            dest.root().display()
        ))
    };
    let sr = |x: &TileScheme| {
        x.latest_wkid.or(x.wkid).map(|id| match id {
            102100 | 102113 | 900913 => 3857,
            other => other,
        })
    };
    if let (Some(a), Some(b)) = (sr(s), sr(d)) {
        if a != b {
            return Err(what(format!("spatial reference WKID {a} vs {b}")));
        }
    }
    if (s.tile_cols, s.tile_rows) != (d.tile_cols, d.tile_rows) {
        return Err(what(format!(
            "tile size {}x{} vs {}x{}",
            s.tile_cols, s.tile_rows, d.tile_cols, d.tile_rows
        )));
    }
    let mut finest = f64::INFINITY;
    for &l in levels {
        let (Some(a), Some(b)) = (s.lod(l), d.lod(l)) else {
            let both: Vec<u8> = levels
                .iter()
                .copied()
                .filter(|l| s.lod(*l).is_some() && d.lod(*l).is_some())
                .collect();
            let runs = level_runs(&both);
            let hint = match both.as_slice() {
                [] => String::new(),
                // --levels takes one range: suggest it when the shared levels are one.
                [.., last] if !runs.contains(',') => format!(
                    "; both define levels {runs}: run again with --levels {}-{last}",
                    both[0]
                ),
                _ => format!("; both define levels {runs}"),
            };
            return Err(what(format!(
                "level {l} is {} in the source and {} in the destination{hint}",
                if s.lod(l).is_some() {
                    "defined"
                } else {
                    "missing"
                },
                if d.lod(l).is_some() {
                    "defined"
                } else {
                    "missing"
                },
            )));
        };
        if (a.resolution - b.resolution).abs() > 1e-6 * a.resolution {
            return Err(what(format!(
                "level {l} resolution {} vs {}",
                a.resolution, b.resolution
            )));
        }
        finest = finest.min(a.resolution);
    }
    // Tiles must line up to well under a pixel at the finest level taken.
    let tol = if finest.is_finite() {
        finest * 0.01
    } else {
        1e-3
    };
    if (s.origin_x - d.origin_x).abs() > tol || (s.origin_y - d.origin_y).abs() > tol {
        return Err(what(format!(
            "origin ({}, {}) vs ({}, {})",
            s.origin_x, s.origin_y, d.origin_x, d.origin_y
        )));
    }
    let (sf, df) = (&s.tile_format, &d.tile_format);
    let same_kind = sf.image_kind().is_some() && sf.image_kind() == df.image_kind();
    if !(sf == df || same_kind || *df == TileFormat::Mixed) {
        return Err(Error::invalid(format!(
            "image formats differ: {} tiles cannot go into a {} cache (formats must match, or the \
             destination be MIXED) ({} vs {}); nothing was written",
            sf.name(),
            df.name(),
            src.root().display(),
            dest.root().display()
        )));
    }
    Ok(())
}

/// Checks compatibility, copies the tiles of `src` into the open cache `dest` (merged or
/// overwriting, `opts.mode`), then grows DEST's conf.cdi by the area taken.
pub fn into_cache(
    src: &Cache,
    dest: &mut Cache,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    let levels = select_levels(src, &opts.levels)?;
    check_compatible(src, dest, &levels, opts.scheme_of_dest)?;
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

/// True when `dir` (a folder or a store URL) already holds a cache ([`Location::holds_cache`]).
pub fn holds_cache(dir: &Path) -> Result<bool> {
    Location::parse(dir)?.holds_cache()
}

/// The conf.cdi extent after a job: DEST's grown by the area, or the area (cut to SRC's extent).
pub fn extent_after(
    src: &Cache,
    dest_before: Option<Envelope>,
    opts: &JobOptions,
) -> Option<Envelope> {
    let area = match (job_area(opts), src.extent()) {
        (Some(a), Some(s)) => Some(intersection(&a, &s).unwrap_or(a)),
        (Some(a), None) => Some(a),
        (None, s) => s,
    };
    match (dest_before, area) {
        (Some(d), Some(a)) => Some(union(&d, &a)),
        (d, a) => a.or(d),
    }
}
