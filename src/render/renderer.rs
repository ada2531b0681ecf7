//! The [`Renderer`]: what stands between the file system and a [`TileSource`]. It answers only for
//! tiles inside the scheme (a level of conf.xml, a row/col inside the conf.cdi extent), renders
//! each missing tile once however many readers wait for it (single-flight), at most N at a time
//! (a bounded pool), retries failures that may pass with a growing pause, remembers failures for
//! a short while (negative cache) and recent tiles in a byte-bounded memory cache, checks every
//! image against the scheme (size, kind; re-encoding for the cache's format), and can keep what it
//! rendered in the cache (directly or through a write buffer). With supertiles on (and a source that
//! draws areas), a miss renders the whole supertile holding the tile in one request, cuts it into
//! tiles, and serves, remembers and keeps all of them; single-flight is then per supertile.

use std::collections::HashMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::pixels::conform;
use super::supertile::{self, Layout, Supertile};
use super::TileSource;
use crate::cache::buffer::WriteBuffer;
use crate::cache::Cache;
use crate::format::conf::{Envelope, TileFormat, TileScheme};
use crate::format::extent::scheme_extent;
use crate::format::TileAddr;
use crate::{Error, Result};

/// Tunables of a [`Renderer`].
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Renders running at once (further tiles wait for a slot).
    pub concurrency: usize,
    /// Limit for one attempt (network sources apply it to the whole request), and for waiting for a
    /// free render slot.
    pub timeout: Duration,
    /// Further attempts after a failure that may pass (timeout, HTTP 5xx/429, dropped connection).
    pub retries: u32,
    /// Pause before the first retry; doubled before each next one.
    pub backoff: Duration,
    /// How long a failed or empty tile is answered from memory before the source is asked again.
    pub negative_ttl: Duration,
    /// Bytes of rendered tiles kept in memory, so lookup, open and read of one tile render it once
    /// (and the other tiles of a supertile are served without asking again).
    pub memory_budget: usize,
    /// Side of a supertile in pixels (rounded down to whole tiles), for sources that draw areas
    /// (`arcgis:`, `wms:`); 0: one request per tile. The CLI's defaults are
    /// [`supertile::arcgis_default_px`] for `render` and [`supertile::MOUNT_PX`] for the mount.
    pub supertile: u32,
    /// Margin in pixels drawn around each supertile and cut away (MapProxy's meta-buffer), so
    /// labels near an edge are placed with their surroundings; none beyond the tiling origin.
    pub supertile_buffer: u32,
    /// Largest image side assumed, in pixels, for a source that does not advertise its own
    /// ([`TileSource::max_image`]); a supertile and its margins are shrunk to fit the source's
    /// maximum ([`supertile::MAX_IMAGE_PX`], 4096, by default).
    pub max_image: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            concurrency: 4,
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(250),
            negative_ttl: Duration::from_secs(10),
            memory_budget: 64 << 20,
            supertile: 0,
            supertile_buffer: 0,
            max_image: supertile::MAX_IMAGE_PX,
        }
    }
}

impl RenderOptions {
    /// The longest one `get` can take when the source honours the timeout: every attempt timing
    /// out, the pauses between them, and the wait for a slot.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.retries + 1;
        let pauses: Duration = (0..self.retries).map(|i| self.backoff * 2u32.pow(i)).sum();
        self.timeout * (attempts + 1) + pauses
    }
}

/// Where rendered tiles go besides memory (`--keep-rendered`).
#[derive(Clone, Default)]
pub enum Keep {
    /// Nowhere: rendered tiles live only in the memory cache.
    #[default]
    No,
    /// Straight into the bundles (`Cache::write_tiles`, one append per tile).
    Cache,
    /// Into a write buffer, which reaches the bundles on its own schedule.
    Buffer(Arc<WriteBuffer>),
}

/// Counters since the renderer was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderStats {
    /// Calls to the source (attempts, retries included).
    pub source_calls: u64,
    /// Tiles rendered and accepted (every tile of a supertile counts).
    pub rendered: u64,
    /// Tiles the source had nothing for.
    pub empty: u64,
    /// Tiles that failed after every attempt.
    pub failed: u64,
    /// `get` calls that waited for another caller's render of the same tile.
    pub joined: u64,
    /// `get` calls answered from the memory cache.
    pub memory_hits: u64,
    /// `get` calls answered from the negative cache.
    pub negative_hits: u64,
    /// Rendered tiles stored with `Keep`.
    pub kept: u64,
}

#[derive(Default)]
struct Counters {
    source_calls: AtomicU64,
    rendered: AtomicU64,
    empty: AtomicU64,
    failed: AtomicU64,
    joined: AtomicU64,
    memory_hits: AtomicU64,
    negative_hits: AtomicU64,
    kept: AtomicU64,
}

/// A tile and its encoded bytes.
type EncodedTile = (TileAddr, Vec<u8>);

/// Rendered tiles: one, or every tile of a supertile.
pub type Tiles = Arc<Vec<(TileAddr, Arc<Vec<u8>>)>>;

/// What a render came to, in a form every waiting caller can have a copy of.
#[derive(Clone)]
enum Outcome {
    Tiles(Tiles),
    /// The source has nothing there (ENOENT).
    Empty(String),
    /// The render failed (EIO).
    Failed {
        what: String,
        msg: String,
    },
}

impl Outcome {
    fn from_error(e: Error, source: &str) -> Outcome {
        match e {
            Error::NotFound(what) => Outcome::Empty(what),
            Error::Source { what, msg, .. } => Outcome::Failed { what, msg },
            other => Outcome::Failed {
                what: source.to_string(),
                msg: other.to_string(),
            },
        }
    }

    /// Tile `t` of the outcome.
    fn into_result(self, t: TileAddr, note: &str) -> Result<Arc<Vec<u8>>> {
        self.into_tiles(t, note).and_then(|tiles| {
            tiles
                .iter()
                .find(|(a, _)| *a == t)
                .map(|(_, b)| b.clone())
                .ok_or_else(|| Error::NotFound(format!("{t} (not in its supertile{note})")))
        })
    }

    /// Every tile of the outcome; errors speak of `t`.
    fn into_tiles(self, t: TileAddr, note: &str) -> Result<Tiles> {
        match self {
            Outcome::Tiles(b) => Ok(b),
            Outcome::Empty(what) => Err(Error::NotFound(format!("{t} ({what}{note})"))),
            Outcome::Failed { what, msg } => Err(Error::Source {
                what,
                msg: format!("{t}: {msg}{note}"),
                retryable: false,
            }),
        }
    }
}

/// One render in progress; followers wait on it.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<Outcome>>,
    cv: Condvar,
}

/// Recently rendered tiles under a byte budget.
struct Recent {
    tiles: LruCache<TileAddr, Arc<Vec<u8>>>,
    bytes: usize,
}

/// Counting semaphore for render slots.
struct Pool {
    used: Mutex<usize>,
    cv: Condvar,
    cap: usize,
}

struct Slot<'a>(&'a Pool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap() -= 1;
        self.0.cv.notify_one();
    }
}

impl Pool {
    fn acquire(&self, wait: Duration) -> Option<Slot<'_>> {
        let deadline = Instant::now() + wait;
        let mut used = self.used.lock().unwrap();
        while *used >= self.cap {
            let left = deadline.checked_duration_since(Instant::now())?;
            used = self.cv.wait_timeout(used, left).unwrap().0;
        }
        *used += 1;
        Some(Slot(self))
    }
}

/// Renders the tiles a cache lacks, from one source.
pub struct Renderer {
    cache: Arc<Cache>,
    scheme: TileScheme,
    extent: Envelope,
    ranges: HashMap<u8, (Range<u32>, Range<u32>)>,
    source: Arc<dyn TileSource>,
    what: String,
    layout: Option<Layout>,
    keep: Keep,
    opts: RenderOptions,
    flights: Mutex<HashMap<TileAddr, Arc<Flight>>>,
    negative: Mutex<HashMap<TileAddr, (Instant, Outcome)>>,
    /// Shared with the source ([`TileSource::see_made`]).
    recent: Arc<Mutex<Recent>>,
    pool: Pool,
    counters: Counters,
}

impl Renderer {
    /// A renderer for `cache` (which must have a conf.xml) from `source`. Checks the source against
    /// the scheme now, so a misconfigured source fails here rather than at the first tile.
    pub fn new(
        cache: Arc<Cache>,
        source: Arc<dyn TileSource>,
        keep: Keep,
        opts: RenderOptions,
    ) -> Result<Renderer> {
        let scheme = cache.scheme().cloned().ok_or_else(|| {
            Error::invalid(format!(
                "{}: no conf.xml; rendering needs the tiling scheme",
                cache.root().display()
            ))
        })?;
        if let TileFormat::Other(name) = &scheme.tile_format {
            return Err(Error::invalid(format!(
                "{}: cannot render tiles of format {name}",
                cache.root().display()
            )));
        }
        source.check(&scheme)?;
        let extent = cache.extent().unwrap_or_else(|| scheme_extent(&scheme));
        let ranges = scheme
            .lods
            .iter()
            .filter_map(|l| Some((l.level, scheme.tile_range(l.level, &extent)?)))
            .collect();
        let what = source.describe();
        let layout = match (opts.supertile, source.draws_areas()) {
            (0, _) if opts.supertile_buffer > 0 => {
                return Err(Error::invalid(format!(
                    "--supertile-buffer {} needs supertiles (--supertile is 0: tile by tile)",
                    opts.supertile_buffer
                )))
            }
            (0, _) | (_, false) => None,
            (px, true) => {
                // Asked once, here: a source that draws less than it is asked for answers with a
                // smaller image (ArcGIS) or an exception (MapServer), never the supertile.
                let max = source
                    .max_image()
                    .unwrap_or((opts.max_image, opts.max_image));
                Some(Layout::new(&scheme, px, opts.supertile_buffer, max)?)
            }
        };
        let recent = Arc::new(Mutex::new(Recent {
            tiles: LruCache::unbounded(),
            bytes: 0,
        }));
        // A source building tiles from others (resample) sees those made but not stored yet.
        let (seen, kept) = (
            recent.clone(),
            match &keep {
                Keep::Buffer(w) => Some(w.clone()),
                _ => None,
            },
        );
        source.see_made(Arc::new(move |t| {
            if let Some(b) = seen.lock().unwrap().tiles.peek(&t) {
                return Some(b.clone());
            }
            match kept.as_ref()?.get(t)? {
                crate::cache::buffer::Pending::Put { bytes, .. } => Some(bytes),
                crate::cache::buffer::Pending::Delete => None,
            }
        }));
        Ok(Renderer {
            cache,
            scheme,
            extent,
            ranges,
            source,
            what,
            layout,
            keep,
            pool: Pool {
                used: Mutex::new(0),
                cv: Condvar::new(),
                cap: opts.concurrency.max(1),
            },
            opts,
            flights: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            recent,
            counters: Counters::default(),
        })
    }

    pub fn scheme(&self) -> &TileScheme {
        &self.scheme
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The extent tiles must touch to be renderable (conf.cdi, else the scheme's full extent).
    pub fn extent(&self) -> Envelope {
        self.extent
    }

    /// The source's name (`arcgis:URL`, `resample`, …; tokens hidden).
    pub fn source_name(&self) -> &str {
        &self.what
    }

    pub fn options(&self) -> &RenderOptions {
        &self.opts
    }

    /// How tiles are grouped into supertiles; None when each tile is its own request (supertiles
    /// off, or a source that draws single tiles only).
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    /// The tiles rendered together with `t` (its supertile, clipped to the extent; `t` alone when
    /// supertiles are off). `t` must be renderable.
    pub fn unit_of(&self, t: TileAddr) -> Supertile {
        match (&self.layout, self.ranges.get(&t.level)) {
            (Some(l), Some(range)) => l.supertile(t, range),
            _ => Supertile {
                level: t.level,
                rows: t.row..t.row + 1,
                cols: t.col..t.col + 1,
            },
        }
    }

    /// Rows and columns (half-open) of the renderable tiles of a level; None for a level not in
    /// conf.xml or wholly outside the extent.
    pub fn renderable_range(&self, level: u8) -> Option<(Range<u32>, Range<u32>)> {
        self.ranges.get(&level).cloned()
    }

    /// Whether a tile is inside the scheme: its level is in conf.xml and it overlaps the extent.
    pub fn renderable(&self, t: TileAddr) -> bool {
        self.ranges
            .get(&t.level)
            .is_some_and(|(rows, cols)| rows.contains(&t.row) && cols.contains(&t.col))
    }

    pub fn stats(&self) -> RenderStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RenderStats {
            source_calls: get(&c.source_calls),
            rendered: get(&c.rendered),
            empty: get(&c.empty),
            failed: get(&c.failed),
            joined: get(&c.joined),
            memory_hits: get(&c.memory_hits),
            negative_hits: get(&c.negative_hits),
            kept: get(&c.kept),
        }
    }

    /// Drops what memory holds for a tile (rendered bytes or a remembered failure), e.g. after the
    /// tile was written or deleted through the mount.
    pub fn forget(&self, t: TileAddr) {
        let mut r = self.recent.lock().unwrap();
        if let Some(b) = r.tiles.pop(&t) {
            r.bytes -= b.len();
        }
        drop(r);
        if self.renderable(t) {
            self.negative
                .lock()
                .unwrap()
                .remove(&self.unit_of(t).anchor());
        }
    }

    /// The rendered tile. Callers look for a stored tile first; this one renders (or answers from
    /// memory). With supertiles, a miss renders the tile's whole supertile and remembers every tile
    /// of it. Errors: [`Error::NotFound`] (ENOENT) for a tile outside the scheme or one the source
    /// has nothing for; [`Error::Source`] (EIO) when rendering failed.
    pub fn get(&self, t: TileAddr) -> Result<Arc<Vec<u8>>> {
        self.check_renderable(t)?;
        if let Some(b) = self.recent.lock().unwrap().tiles.get(&t) {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b.clone());
        }
        let (o, note) = self.fly(t, true)?;
        o.into_result(t, &note)
    }

    /// Every tile rendered together with `t` (see [`Renderer::unit_of`]), rendered now (or joined
    /// with a render under way); for batches, which store them all. Errors as [`Renderer::get`].
    pub fn get_all(&self, t: TileAddr) -> Result<Tiles> {
        self.check_renderable(t)?;
        let (o, note) = self.fly(t, false)?;
        o.into_tiles(t, &note)
    }

    fn check_renderable(&self, t: TileAddr) -> Result<()> {
        if self.renderable(t) {
            return Ok(());
        }
        Err(Error::NotFound(format!(
            "{t} (outside the tiling scheme: level not in conf.xml or tile outside the cache extent)"
        )))
    }

    /// The outcome of rendering `t`'s unit, as leader or follower, with a note for error texts.
    /// `memory`: look in the memory cache again under the flights lock (a render may just have
    /// finished).
    fn fly(&self, t: TileAddr, memory: bool) -> Result<(Outcome, String)> {
        let unit = self.unit_of(t);
        let key = unit.anchor();
        let flight = {
            let mut flights = self.flights.lock().unwrap();
            if memory {
                if let Some(b) = self.recent.lock().unwrap().tiles.get(&t) {
                    self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                    let tiles = Arc::new(vec![(t, b.clone())]);
                    return Ok((Outcome::Tiles(tiles), String::new()));
                }
            }
            {
                let mut neg = self.negative.lock().unwrap();
                match neg.get(&key) {
                    Some((until, o)) if Instant::now() < *until => {
                        self.counters.negative_hits.fetch_add(1, Ordering::Relaxed);
                        let left = until.saturating_duration_since(Instant::now());
                        let note =
                            format!("; remembered, asked again in {:.1} s", left.as_secs_f64());
                        return Ok((o.clone(), note));
                    }
                    Some(_) => {
                        neg.remove(&key);
                    }
                    None => {}
                }
            }
            match flights.get(&key) {
                Some(f) => {
                    let f = f.clone();
                    drop(flights);
                    self.counters.joined.fetch_add(1, Ordering::Relaxed);
                    return Ok((self.wait(&f, t)?, String::new()));
                }
                None => {
                    let f = Arc::new(Flight::default());
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        // Leader. The guard finishes the flight even if rendering panics.
        let mut guard = FlightGuard {
            renderer: self,
            flight: &flight,
            key,
            outcome: None,
        };
        let outcome = self.render_with_retries(&unit);
        guard.outcome = Some(outcome.clone());
        drop(guard);
        Ok((outcome, String::new()))
    }

    fn wait(&self, f: &Flight, t: TileAddr) -> Result<Outcome> {
        let limit = self.opts.worst_case() + Duration::from_secs(1);
        let done = f.done.lock().unwrap();
        let (done, res) =
            f.cv.wait_timeout_while(done, limit, |d| d.is_none())
                .unwrap();
        if res.timed_out() {
            return Err(Error::Source {
                what: self.what.clone(),
                msg: format!(
                    "{t}: gave up waiting {:.1} s for another reader's render",
                    limit.as_secs_f64()
                ),
                retryable: false,
            });
        }
        Ok(done.clone().expect("woken with an outcome"))
    }

    /// Called by the leader with the flights lock held: publish the outcome where later callers
    /// look (memory, negative cache), then take the flight out.
    fn publish(&self, flights: &mut HashMap<TileAddr, Arc<Flight>>, key: TileAddr, o: &Outcome) {
        match o {
            Outcome::Tiles(tiles) => {
                let mut r = self.recent.lock().unwrap();
                for (t, b) in tiles
                    .iter()
                    .filter(|(_, b)| b.len() <= self.opts.memory_budget)
                {
                    if let Some(old) = r.tiles.put(*t, b.clone()) {
                        r.bytes -= old.len();
                    }
                    r.bytes += b.len();
                    while r.bytes > self.opts.memory_budget {
                        match r.tiles.pop_lru() {
                            Some((_, old)) => r.bytes -= old.len(),
                            None => break,
                        }
                    }
                }
            }
            _ if !self.opts.negative_ttl.is_zero() => {
                let mut neg = self.negative.lock().unwrap();
                let now = Instant::now();
                neg.retain(|_, (until, _)| *until > now);
                neg.insert(key, (now + self.opts.negative_ttl, o.clone()));
            }
            _ => {}
        }
        flights.remove(&key);
    }

    fn render_with_retries(&self, unit: &Supertile) -> Outcome {
        let t = unit.anchor();
        let t = if unit.len() > 1 {
            format!("supertile {t}+{}x{}", unit.rows.len(), unit.cols.len())
        } else {
            t.to_string()
        };
        let started = Instant::now();
        let Some(_slot) = self.pool.acquire(self.opts.timeout) else {
            tracing::error!(
                "{}: {t}: all {} render slots stayed busy for {:.1} s",
                self.what,
                self.pool.cap,
                self.opts.timeout.as_secs_f64()
            );
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return Outcome::Failed {
                what: self.what.clone(),
                msg: format!(
                    "all {} render slots stayed busy for {:.1} s",
                    self.pool.cap,
                    self.opts.timeout.as_secs_f64()
                ),
            };
        };
        let attempts = self.opts.retries + 1;
        let mut pause = self.opts.backoff;
        for attempt in 1..=attempts {
            match self.attempt(unit) {
                Ok(Some(tiles)) => {
                    self.counters
                        .rendered
                        .fetch_add(tiles.len() as u64, Ordering::Relaxed);
                    tracing::debug!(
                        "{}: {t} rendered ({} tiles, {} bytes, {:.1} ms, attempt {attempt})",
                        self.what,
                        tiles.len(),
                        tiles.iter().map(|(_, b)| b.len()).sum::<usize>(),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    let tiles: Vec<(TileAddr, Arc<Vec<u8>>)> =
                        tiles.into_iter().map(|(t, b)| (t, Arc::new(b))).collect();
                    self.keep(&tiles);
                    return Outcome::Tiles(Arc::new(tiles));
                }
                Ok(None) => {
                    self.counters.empty.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("{}: nothing at {t}", self.what);
                    return Outcome::Empty(format!("{} has nothing there", self.what));
                }
                Err(e) => {
                    let retryable = matches!(
                        e,
                        Error::Source {
                            retryable: true,
                            ..
                        } | Error::Io { .. }
                    );
                    if retryable && attempt < attempts {
                        tracing::warn!(
                            "{t}: attempt {attempt}/{attempts} failed: {e}; retrying in {} ms",
                            pause.as_millis()
                        );
                        std::thread::sleep(pause);
                        pause *= 2;
                        continue;
                    }
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "{t}: render failed after {attempt} attempt(s) in {:.1} s: {e}",
                        started.elapsed().as_secs_f64()
                    );
                    return Outcome::from_error(e, &self.what);
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// One call to the source, its image checked (and re-encoded if needed): a single tile, or a
    /// supertile's image cut into its tiles.
    fn attempt(&self, unit: &Supertile) -> Result<Option<Vec<EncodedTile>>> {
        let t = unit.anchor();
        self.counters.source_calls.fetch_add(1, Ordering::Relaxed);
        let area = match &self.layout {
            Some(l) => Some(
                l.area(&self.scheme, unit)
                    .ok_or_else(|| Error::NotFound(format!("level {} in conf.xml", unit.level)))?,
            ),
            None => None,
        };
        let res = catch_unwind(AssertUnwindSafe(|| match &area {
            Some((a, _)) => self.source.render_area(&self.scheme, a),
            None => self.source.render(&self.scheme, t),
        }))
        .unwrap_or_else(|_| {
            Err(Error::source(
                &self.what,
                format!("{t}: the source panicked"),
            ))
        });
        let Some(bytes) = res? else {
            return Ok(None);
        };
        match &area {
            Some((a, offset)) => {
                let what = format!(
                    "{} (supertile {t}+{}x{} tiles, {}x{} px)",
                    self.what,
                    unit.rows.len(),
                    unit.cols.len(),
                    a.width,
                    a.height
                );
                supertile::split(&bytes, &self.scheme, unit, a, *offset, &what).map(Some)
            }
            None => {
                let what = format!("{} ({t})", self.what);
                conform(bytes, &self.scheme, &what).map(|b| Some(vec![(t, b)]))
            }
        }
    }

    /// Stores rendered tiles (`Keep`). Of a supertile, only tiles with nothing stored and no change
    /// waiting in the write buffer: a tile the reader did not ask for must never replace one
    /// written (or deleted) meanwhile. (Checked just before storing, not under a lock: a write
    /// landing in between can still be replaced, as with a single rendered tile before.)
    fn keep(&self, tiles: &[(TileAddr, Arc<Vec<u8>>)]) {
        let filtered: Vec<(TileAddr, Arc<Vec<u8>>)>;
        let tiles = if tiles.len() > 1 && !matches!(self.keep, Keep::No) {
            filtered = tiles
                .iter()
                .filter(|(t, _)| {
                    let pending = match &self.keep {
                        Keep::Buffer(b) => b.get(*t).is_some(),
                        _ => false,
                    };
                    !pending && matches!(self.cache.tile(*t), Ok(None))
                })
                .cloned()
                .collect();
            &filtered[..]
        } else {
            tiles
        };
        if tiles.is_empty() {
            return;
        }
        let res = match &self.keep {
            Keep::No => return,
            Keep::Cache => {
                let refs: Vec<(TileAddr, &[u8])> =
                    tiles.iter().map(|(t, b)| (*t, b.as_slice())).collect();
                self.cache.write_tiles(&refs).map(|_| ())
            }
            Keep::Buffer(b) => tiles
                .iter()
                .try_for_each(|(t, bytes)| b.put(*t, bytes.to_vec())),
        };
        let first = tiles.first().map(|(t, _)| *t);
        match (res, first) {
            (Ok(()), _) => {
                self.counters
                    .kept
                    .fetch_add(tiles.len() as u64, Ordering::Relaxed);
            }
            // The reader still gets its tile; the next one renders it again.
            (Err(e), Some(t)) => tracing::error!(
                "{t} (+{} more): rendered but not kept: {e}",
                tiles.len() - 1
            ),
            (Err(e), None) => tracing::error!("rendered but not kept: {e}"),
        }
    }
}

/// Finishes a flight when the leader is done (or unwinds): publish, remove, wake followers.
struct FlightGuard<'a> {
    renderer: &'a Renderer,
    flight: &'a Arc<Flight>,
    key: TileAddr,
    outcome: Option<Outcome>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let o = self.outcome.take().unwrap_or_else(|| Outcome::Failed {
            what: self.renderer.what.clone(),
            msg: "render aborted".into(),
        });
        {
            let mut flights = self
                .renderer
                .flights
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.renderer.publish(&mut flights, self.key, &o);
        }
        *self.flight.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(o);
        self.flight.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::ToErrno;
    use crate::render::label::LabelSource;
    use std::sync::atomic::AtomicU32;

    /// A source that counts calls, fails the first `fail` of them (retryably), and sleeps.
    struct Flaky {
        calls: AtomicU32,
        fail: u32,
        sleep: Duration,
        retryable: bool,
    }

    impl TileSource for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn render(&self, s: &TileScheme, t: TileAddr) -> Result<Option<Vec<u8>>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.sleep);
            if n < self.fail {
                return Err(Error::Source {
                    what: "flaky".into(),
                    msg: format!("failure #{n}"),
                    retryable: self.retryable,
                });
            }
            LabelSource.render(s, t)
        }
    }

    fn cache(dir: &std::path::Path) -> Arc<Cache> {
        let s = TileScheme::web_mercator(3, TileFormat::Png);
        Arc::new(Cache::create(dir, &s, None).unwrap())
    }

    fn opts() -> RenderOptions {
        RenderOptions {
            backoff: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
            ..RenderOptions::default()
        }
    }

    #[test]
    fn retries_then_succeeds_and_remembers() {
        let d = tempfile::tempdir().unwrap();
        let src = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail: 2,
            sleep: Duration::ZERO,
            retryable: true,
        });
        let r = Renderer::new(cache(d.path()), src.clone(), Keep::Cache, opts()).unwrap();
        let t = TileAddr::new(2, 1, 3);
        let b = r.get(t).unwrap();
        assert_eq!(src.calls.load(Ordering::SeqCst), 3);
        assert_eq!(r.get(t).unwrap(), b);
        assert_eq!(
            src.calls.load(Ordering::SeqCst),
            3,
            "second get must come from memory"
        );
        assert_eq!(
            &r.cache().tile(t).unwrap().unwrap()[..],
            &b[..],
            "kept in the bundle"
        );
        assert_eq!(r.stats().kept, 1);
    }

    #[test]
    fn permanent_failure_is_not_retried_and_is_remembered_briefly() {
        let d = tempfile::tempdir().unwrap();
        let src = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail: 1,
            sleep: Duration::ZERO,
            retryable: false,
        });
        let mut o = opts();
        o.negative_ttl = Duration::from_millis(200);
        let r = Renderer::new(cache(d.path()), src.clone(), Keep::No, o).unwrap();
        let t = TileAddr::new(1, 0, 0);
        let e = r.get(t).unwrap_err();
        assert_eq!(e.errno(), libc::EIO, "{e}");
        let e2 = r.get(t).unwrap_err();
        assert!(e2.to_string().contains("remembered"), "{e2}");
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(250));
        r.get(t).unwrap();
        assert_eq!(src.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn outside_the_scheme_is_not_found_without_asking() {
        let d = tempfile::tempdir().unwrap();
        let src = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail: 0,
            sleep: Duration::ZERO,
            retryable: false,
        });
        let r = Renderer::new(cache(d.path()), src.clone(), Keep::No, opts()).unwrap();
        for t in [
            TileAddr::new(4, 0, 0),
            TileAddr::new(1, 2, 0),
            TileAddr::new(1, 0, 2),
        ] {
            assert!(!r.renderable(t));
            assert_eq!(r.get(t).unwrap_err().errno(), libc::ENOENT);
        }
        assert!(r.renderable(TileAddr::new(3, 7, 7)));
        assert_eq!(src.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn single_flight_and_bounded_pool() {
        let d = tempfile::tempdir().unwrap();
        let src = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            fail: 0,
            sleep: Duration::from_millis(100),
            retryable: false,
        });
        let mut o = opts();
        o.concurrency = 2;
        let r = Renderer::new(cache(d.path()), src.clone(), Keep::No, o).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| r.get(TileAddr::new(2, 0, 0)).unwrap());
            }
        });
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        // 4 distinct tiles, 2 slots, 100 ms each: at least two rounds.
        let started = Instant::now();
        std::thread::scope(|s| {
            for c in 0..4 {
                let r = &r;
                s.spawn(move || r.get(TileAddr::new(3, 1, c)).unwrap());
            }
        });
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }
}
