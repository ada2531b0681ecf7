//! Rendering many tiles at once without a mount (`bundlefs render --levels …`), like seeding: the
//! renderable tiles of some levels and an optional extent, skipping stored ones, several at a time,
//! kept in the cache in per-bundle batches.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::renderer::Renderer;
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
        let next = Mutex::new((rows.start, cols.start));
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
        std::thread::scope(|s| {
            for _ in 0..o.jobs.max(1) {
                s.spawn(|| loop {
                    let t = {
                        let mut n = next.lock().unwrap();
                        if n.0 >= rows.end || first_error.lock().unwrap().is_some() {
                            break;
                        }
                        let t = TileAddr::new(level, n.0, n.1);
                        n.1 += 1;
                        if n.1 >= cols.end {
                            n.1 = cols.start;
                            n.0 += 1;
                        }
                        t
                    };
                    if !o.overwrite {
                        match c.tile(t) {
                            Ok(Some(_)) => {
                                skipped.fetch_add(1, Ordering::Relaxed);
                                progress(1);
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => tracing::error!(
                                "{t}: stored tile unreadable, rendering it again: {e}"
                            ),
                        }
                    }
                    match r.get(t) {
                        Ok(b) => {
                            rendered.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                            if o.keep {
                                let full = {
                                    let mut p = pending.lock().unwrap();
                                    p.push((t, b));
                                    (p.len() >= KEEP_BATCH).then(|| std::mem::take(&mut *p))
                                };
                                if let Some(batch) = full {
                                    flush(batch);
                                }
                            }
                        }
                        Err(Error::NotFound(_)) => {
                            empty.fetch_add(1, Ordering::Relaxed);
                        }
                        // The renderer has logged it.
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    progress(1);
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
