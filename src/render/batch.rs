//! Rendering many tiles at once without a mount (`bundlefs render --levels …`), like seeding: the
//! renderable tiles of some levels and an optional extent, skipping stored ones, several at a time,
//! kept in the cache in per-bundle batches. With supertiles, work is handed out one supertile at a
//! time (one request each); a supertile whose wanted tiles are all stored is not asked for. An
//! area of interest (`render --aoi`, a [`TileFilter`] the caller supplies) narrows the tiles further:
//! blocks it misses are skipped whole, tiles it does not take are neither rendered nor counted.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::renderer::Renderer;
use super::supertile::Supertile;
use crate::format::conf::{Envelope, TileScheme};
use crate::format::extent::union;
use crate::format::levels::LevelRange;
use crate::format::{TileAddr, BUNDLE_DIM};
use crate::{Error, Result};

/// Tiles written to the cache per `write_tiles` call when keeping.
const KEEP_BATCH: usize = 256;

/// What to render.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub levels: LevelRange,
    /// Only tiles touching this envelope (map units of the scheme); None: the renderer's extent.
    pub extent: Option<Envelope>,
    /// Render tiles the cache already holds too.
    pub overwrite: bool,
    /// Store rendered tiles in the cache.
    pub keep: bool,
    /// Worker threads asking the renderer (its pool still bounds concurrent renders).
    pub jobs: usize,
    /// Refuse to start when more tiles than this would be rendered.
    pub max_tiles: u64,
    /// Coarse levels first (false) or fine levels first (true), unless `near_first` says.
    pub fine_first: bool,
    /// Levels the source makes tiles from (`resample`: the levels holding tiles). When given, the
    /// levels nearest to them go first, so each level can use what the run made just before it,
    /// in either direction (levels 3-4 over a cache of 0-2: 3 from 2, then 4 from 3).
    pub near_first: Vec<u8>,
    /// Only the units (supertiles, or tiles) whose first tile is in a bundle of this share
    /// (`--shard I/N`); None: every unit.
    pub shard: Option<crate::cache::shard::Shard>,
}

/// How a block of tiles lies against a [`TileFilter`]'s area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCover {
    /// No tile of the block is taken.
    Outside,
    /// Every tile of the block is taken.
    Inside,
    /// Decide tile by tile.
    Partial,
}

/// Which tiles of the planned rows and columns a batch renders (`render --aoi`). The rule is the
/// caller's (the command line passes the jobs' area of interest); bounds are in the map units of
/// the tiling scheme.
pub trait TileFilter: Send + Sync + std::fmt::Debug {
    /// How the block of tiles with map bounds `env` (a bundle-sized block, a supertile) lies
    /// against the area; must not say `Outside` for a block holding a tile [`TileFilter::tile`]
    /// takes, nor `Inside` for one holding a tile it refuses.
    fn block(&self, env: &Envelope) -> BlockCover;
    /// Whether the tile with map bounds `env` is rendered.
    fn tile(&self, env: &Envelope) -> bool;
}

/// Map bounds of the tiles `rows` × `cols` (non-empty) of `level`; None for a level not in the
/// scheme.
fn block_bbox(
    scheme: &TileScheme,
    level: u8,
    rows: &Range<u32>,
    cols: &Range<u32>,
) -> Option<Envelope> {
    let a = scheme.tile_bbox(TileAddr::new(level, rows.start, cols.start))?;
    let b = scheme.tile_bbox(TileAddr::new(level, rows.end - 1, cols.end - 1))?;
    Some(union(&a, &b))
}

/// How many tiles of `rows` × `cols` of `level` `area` takes, judged in bundle-sized blocks (a
/// block the area misses or holds whole costs one test).
fn count_in_area(
    scheme: &TileScheme,
    level: u8,
    rows: &Range<u32>,
    cols: &Range<u32>,
    area: &dyn TileFilter,
) -> u64 {
    let mut n = 0u64;
    let step = |v: u32| (v / BUNDLE_DIM + 1).saturating_mul(BUNDLE_DIM);
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = step(r0).min(rows.end);
        let mut c0 = cols.start;
        while c0 < cols.end {
            let c1 = step(c0).min(cols.end);
            let cover = block_bbox(scheme, level, &(r0..r1), &(c0..c1))
                .map_or(BlockCover::Outside, |b| area.block(&b));
            n += match cover {
                BlockCover::Outside => 0,
                BlockCover::Inside => u64::from(r1 - r0) * u64::from(c1 - c0),
                BlockCover::Partial => (r0..r1)
                    .flat_map(|r| (c0..c1).map(move |c| TileAddr::new(level, r, c)))
                    .filter(|t| scheme.tile_bbox(*t).is_some_and(|b| area.tile(&b)))
                    .count() as u64,
            };
            c0 = c1;
        }
        r0 = r1;
    }
    n
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BatchStats {
    pub candidates: u64,
    pub skipped_stored: u64,
    pub rendered: u64,
    pub empty: u64,
    pub failed: u64,
    pub kept: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Rows and columns (half-open) of one level.
pub type LevelTiles = (u8, Range<u32>, Range<u32>);

/// The levels and tile ranges a batch covers, with their tile count.
pub fn plan(r: &Renderer, o: &BatchOptions) -> (Vec<LevelTiles>, u64) {
    plan_in(r, o, None)
}

/// [`plan`] within an area: the ranges are the same (give `o.extent` the area's bounds to narrow
/// them), the count is of the tiles `area` takes; levels where it takes none are left out.
pub fn plan_in(
    r: &Renderer,
    o: &BatchOptions,
    area: Option<&dyn TileFilter>,
) -> (Vec<LevelTiles>, u64) {
    let mut levels: Vec<u8> = r
        .scheme()
        .lods
        .iter()
        .map(|l| l.level)
        .filter(|l| o.levels.contains(*l))
        .collect();
    levels.sort_unstable();
    if o.fine_first {
        levels.reverse();
    }
    if !o.near_first.is_empty() {
        let steps = |l: u8| {
            o.near_first
                .iter()
                .map(|s| (i16::from(*s) - i16::from(l)).unsigned_abs())
                .min()
                .unwrap_or(u16::MAX)
        };
        // Stable: among levels as near, the order above (fine first when asked) stays.
        levels.sort_by_key(|l| steps(*l));
    }
    let mut out = Vec::new();
    let mut total = 0u64;
    for level in levels {
        let Some((rows, cols)) = r.renderable_range(level) else {
            continue;
        };
        let (rows, cols) = match &o.extent {
            Some(env) => match r.scheme().tile_range(level, env) {
                Some((er, ec)) => (
                    rows.start.max(er.start)..rows.end.min(er.end),
                    cols.start.max(ec.start)..cols.end.min(ec.end),
                ),
                None => continue,
            },
            None => (rows, cols),
        };
        if rows.is_empty() || cols.is_empty() {
            continue;
        }
        let n = match (o.shard, area) {
            (Some(s), _) => units(r, level, &rows, &cols)
                .iter()
                .filter(|u| s.takes(&u.anchor().bundle()))
                .map(|u| {
                    u.tiles()
                        .filter(|t| rows.contains(&t.row) && cols.contains(&t.col))
                        .filter(|t| {
                            area.is_none_or(|a| {
                                r.scheme().tile_bbox(*t).is_some_and(|b| a.tile(&b))
                            })
                        })
                        .count() as u64
                })
                .sum(),
            (None, Some(a)) => count_in_area(r.scheme(), level, &rows, &cols, a),
            (None, None) => u64::from(rows.end - rows.start) * u64::from(cols.end - cols.start),
        };
        if n == 0 {
            continue;
        }
        total += n;
        out.push((level, rows, cols));
    }
    (out, total)
}

/// The units a level's tiles are rendered in, row by row: supertiles (clipped to the extent) when
/// the renderer uses them, else single tiles. Only units holding a tile of `rows` × `cols`.
pub fn units(r: &Renderer, level: u8, rows: &Range<u32>, cols: &Range<u32>) -> Vec<Supertile> {
    let mut out = Vec::new();
    let mut row = rows.start;
    while row < rows.end {
        let mut col = cols.start;
        let mut next_row = rows.end;
        while col < cols.end {
            let u = r.unit_of(TileAddr::new(level, row, col));
            col = u.cols.end.max(col + 1);
            next_row = next_row.min(u.rows.end.max(row + 1));
            out.push(u);
        }
        // The units of one band of rows (one row without supertiles) end on the same row.
        row = next_row;
    }
    out
}

/// Renders the planned tiles; `progress` is called with the number of tiles done since last call.
pub fn render_batch(
    r: &Renderer,
    o: &BatchOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BatchStats> {
    render_batch_in(r, o, None, progress)
}

/// [`render_batch`] of only the tiles `area` takes (all planned tiles when None): supertiles it
/// misses are not asked for, and a supertile it crosses is asked for once for the tiles it takes.
pub fn render_batch_in(
    r: &Renderer,
    o: &BatchOptions,
    area: Option<&dyn TileFilter>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BatchStats> {
    let started = Instant::now();
    let (plan, total) = plan_in(r, o, area);
    if total > o.max_tiles {
        return Err(Error::invalid(format!(
            "{total} tiles to render, more than the limit of {}; narrow --levels/--extent/--aoi or raise --max-tiles",
            o.max_tiles
        )));
    }
    let scheme = r.scheme();
    let c = r.cache();
    let counts: [AtomicU64; 6] = Default::default();
    let [skipped, rendered, empty, failed, kept, bytes] = &counts;
    for (level, rows, cols) in plan {
        // Each unit with how the area lies against it (Inside: no tile test needed).
        let units: Vec<(Supertile, BlockCover)> = units(r, level, &rows, &cols)
            .into_iter()
            .map(|u| {
                let cover = match area {
                    None => BlockCover::Inside,
                    Some(a) => block_bbox(scheme, level, &u.rows, &u.cols)
                        .map_or(BlockCover::Outside, |b| a.block(&b)),
                };
                (u, cover)
            })
            .filter(|(_, c)| *c != BlockCover::Outside)
            .filter(|(u, _)| o.shard.is_none_or(|s| s.takes(&u.anchor().bundle())))
            .collect();
        let next = AtomicUsize::new(0);
        let pending: Mutex<Vec<(TileAddr, Arc<Vec<u8>>)>> = Mutex::new(Vec::new());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let flush = |batch: Vec<(TileAddr, Arc<Vec<u8>>)>| {
            if batch.is_empty() {
                return;
            }
            let refs: Vec<(TileAddr, &[u8])> =
                batch.iter().map(|(t, b)| (*t, b.as_slice())).collect();
            match c.write_tiles(&refs) {
                Ok(st) => {
                    kept.fetch_add(st.tiles as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        };
        let inside = |t: &TileAddr| rows.contains(&t.row) && cols.contains(&t.col);
        let taken = |t: &TileAddr, cover: BlockCover| match (cover, area) {
            (BlockCover::Partial, Some(a)) => scheme.tile_bbox(*t).is_some_and(|b| a.tile(&b)),
            _ => true,
        };
        std::thread::scope(|s| {
            for _ in 0..o.jobs.max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= units.len() || first_error.lock().unwrap().is_some() {
                        break;
                    }
                    // The tiles of this unit the batch covers, less the stored ones.
                    let (unit, cover) = &units[i];
                    let mut wanted: Vec<TileAddr> = unit
                        .tiles()
                        .filter(|t| inside(t) && taken(t, *cover))
                        .collect();
                    let covered = wanted.len() as u64;
                    if !o.overwrite {
                        wanted.retain(|t| match c.tile(*t) {
                            Ok(Some(_)) => false,
                            Ok(None) => true,
                            Err(e) => {
                                tracing::error!(
                                    "{t}: stored tile unreadable, rendering it again: {e}"
                                );
                                true
                            }
                        });
                        skipped.fetch_add(covered - wanted.len() as u64, Ordering::Relaxed);
                    }
                    let Some(first) = wanted.first().copied() else {
                        progress(covered);
                        continue;
                    };
                    match r.get_all(first) {
                        Ok(tiles) => {
                            let got: Vec<(TileAddr, Arc<Vec<u8>>)> = tiles
                                .iter()
                                .filter(|(t, _)| wanted.contains(t))
                                .cloned()
                                .collect();
                            rendered.fetch_add(got.len() as u64, Ordering::Relaxed);
                            let b: usize = got.iter().map(|(_, b)| b.len()).sum();
                            bytes.fetch_add(b as u64, Ordering::Relaxed);
                            if o.keep {
                                let full = {
                                    let mut p = pending.lock().unwrap();
                                    p.extend(got);
                                    (p.len() >= KEEP_BATCH).then(|| std::mem::take(&mut *p))
                                };
                                if let Some(batch) = full {
                                    flush(batch);
                                }
                            }
                        }
                        Err(Error::NotFound(_)) => {
                            empty.fetch_add(wanted.len() as u64, Ordering::Relaxed);
                        }
                        // The renderer has logged it.
                        Err(_) => {
                            failed.fetch_add(wanted.len() as u64, Ordering::Relaxed);
                        }
                    }
                    progress(covered);
                });
            }
        });
        flush(std::mem::take(&mut *pending.lock().unwrap()));
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }
    }
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(BatchStats {
        candidates: total,
        skipped_stored: get(skipped),
        rendered: get(rendered),
        empty: get(empty),
        failed: get(failed),
        kept: get(kept),
        bytes: get(bytes),
        seconds: started.elapsed().as_secs_f64(),
    })
}
