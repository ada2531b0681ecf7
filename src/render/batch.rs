//! Rendering many tiles at once without a mount (`bundlefs render --levels …`), like seeding: the
//! renderable tiles of some levels and an optional extent, skipping stored ones, several at a time,
//! kept in the cache in per-bundle batches. With supertiles, work is handed out one supertile at a
//! time (one request each); a supertile whose wanted tiles are all stored is not asked for.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::renderer::Renderer;
use super::supertile::Supertile;
use crate::format::conf::Envelope;
use crate::format::levels::LevelRange;
use crate::format::TileAddr;
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
    /// Coarse levels first (false) or fine levels first (true; `resample` builds overviews from
    /// finer levels, so it goes fine to coarse).
    pub fine_first: bool,
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
        total += u64::from(rows.end - rows.start) * u64::from(cols.end - cols.start);
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
    let started = Instant::now();
    let (plan, total) = plan(r, o);
    if total > o.max_tiles {
        return Err(Error::invalid(format!(
            "{total} tiles to render, more than the limit of {}; narrow --levels/--extent or raise --max-tiles",
            o.max_tiles
        )));
    }
    let c = r.cache();
    let counts: [AtomicU64; 6] = Default::default();
    let [skipped, rendered, empty, failed, kept, bytes] = &counts;
    for (level, rows, cols) in plan {
        let units = units(r, level, &rows, &cols);
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
        std::thread::scope(|s| {
            for _ in 0..o.jobs.max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= units.len() || first_error.lock().unwrap().is_some() {
                        break;
                    }
                    // The tiles of this unit the batch covers, less the stored ones.
                    let mut wanted: Vec<TileAddr> =
                        units[i].tiles().filter(|t| inside(t)).collect();
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
