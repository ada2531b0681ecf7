//! The connection to an object store that every object layout (Compact V2 [`super::v2`],
//! Compact V1 [`super::v1`], exploded [`super::exploded`]) goes through: one [`Connection`] per
//! opened cache holds the cache's URL, the `object_store` client, the options, the retry policy of
//! conditional writes, the quirks learnt of the store, `--single-writer`, the key prefix of the
//! level folders (`_alllayers` or none), and the one set of request counters ([`ObjectStats`]).
//!
//! Writes that must not lose another writer's change go through [`Connection::put_conditional`]
//! (`If-Match: <ETag>`, `If-None-Match: *` for a new object, unconditional with `--single-writer`)
//! inside [`RetryPolicy::compare_and_swap`] (read, decide, PUT; on a lost race again after a
//! jittered backoff). Ceph RGW 16 compares `If-Match` with the *unquoted* ETag: on a 412 whose HEAD
//! shows the very ETag sent, the PUT is retried once unquoted and the store remembered as wanting
//! that (also learnt by the compare-and-swap probe, [`Connection::check_conditional_writes`]).
//!
//! Also here: the level and bundle listings the Compact V1 and V2 layouts share ([`Listings`]),
//! and the limits both keep to. Building the client is `client.rs`; explaining its errors
//! `explain.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::client::block;
use super::explain::{obj_err, obj_err_key, rel_url};
use super::options::WriteCoordination;
use super::probe::CasProbe;
use crate::cache::url::ObjectUrl;
use crate::cache::CacheOptions;
use crate::error::Result;
use crate::format::{exploded as names, BundleId};

/// How conditional writes are retried after losing a race to another writer.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all (the first included) before the write fails.
    pub attempts: u32,
    /// Delay before the second try; doubled each further try (capped at `max_delay`), and
    /// jittered to between half and all of it so racing writers spread out.
    pub base_delay: Duration,
    /// Longest delay between tries.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The sleep before try `attempt` (1 = the second try): `base_delay` doubled per further try,
    /// at most `max_delay`, drawn between half and all of it from `seed` (advanced).
    fn delay(&self, attempt: u32, seed: &mut u64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        *seed = xorshift(*seed);
        exp.mul_f64(0.5 + (*seed % 1000) as f64 / 2000.0)
    }

    /// Compare-and-swap, the one loop every conditional write of the object store runs: `one`
    /// reads what is stored, decides, and PUTs with a precondition; on [`Try::Lost`] (another
    /// writer was first) it runs again after a sleep ([`RetryPolicy::delay`], jittered by `id`,
    /// so racing writers spread out), at most `attempts` times. `one` gets the try's number
    /// (0 first). Ok(Some(v)) when a try was done, Ok(None) when every try was lost (the caller
    /// says so, naming what it wrote); an error of `one` ends it. Each lost try is logged at
    /// info, naming the bundle.
    pub(crate) fn compare_and_swap<T>(
        &self,
        id: &BundleId,
        mut one: impl FnMut(u32) -> Result<Try<T>>,
    ) -> Result<Option<T>> {
        let mut seed = jitter_seed(id);
        for attempt in 0..self.attempts {
            if attempt > 0 {
                std::thread::sleep(self.delay(attempt, &mut seed));
            }
            if let Try::Done(v) = one(attempt)? {
                return Ok(Some(v));
            }
            // Logged at info: a conflict is normal with many writers, but worth seeing.
            tracing::info!(
                "level {} bundle {}: another writer changed it first; reading and deciding again \
                 (try {} of {})",
                id.level,
                crate::format::exploded::bundle_base(id),
                attempt + 1,
                self.attempts
            );
        }
        Ok(None)
    }
}

/// What one try of a compare-and-swap came to ([`RetryPolicy::compare_and_swap`]).
pub(crate) enum Try<T> {
    /// Done (written, or nothing to write): the value to return.
    Done(T),
    /// Another writer changed the object first (a conditional PUT refused): read and decide again.
    Lost,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 12,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// The live request counters of a store connection ([`crate::cache::counters`]).
pub use crate::cache::counters::LiveStoreCounters as ObjectStats;

/// How many whole bundles (batch reads) stay in memory at most.
pub(super) const MAX_WHOLE_BUNDLES: usize = 8;

/// A tile kept among the recent ones: the ETag of the bundle version it was read from, its bytes.
pub(super) type RecentTile = (String, Arc<Vec<u8>>);

/// A seed for the retry jitter of a write to bundle `id`: differs between threads, processes
/// and bundles, so racing writers draw different delays; never 0 (xorshift would stay 0).
fn jitter_seed(id: &BundleId) -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let tid = format!("{:?}", std::thread::current().id());
    let h = tid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (t ^ h ^ (u64::from(id.row0) << 32) ^ u64::from(id.col0)) | 1
}

/// One xorshift64 step (the jitter's pseudo-random sequence).
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The connection to the store holding one cache, shared (`Arc`) by the layout over it: where
/// the cache is, the client, the options, how conditional writes are retried and what was learnt
/// of the store, and the request counters of everything sent through it.
pub struct Connection {
    /// The cache's URL (`s3://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`).
    pub(super) url: ObjectUrl,
    /// Relative key of the folder holding the level folders (`_alllayers`, or empty).
    pub(super) tiles_rel: String,
    /// The client (S3, Azure Blob, or in-memory in tests).
    pub(super) store: Arc<dyn ObjectStore>,
    /// The cache's options (`recheck`, `max_open_bundles`, `object`: the store's own).
    pub(super) opts: CacheOptions,
    /// How conditional writes are retried after a lost race.
    pub(super) policy: RetryPolicy,
    /// The store compares `If-Match` with unquoted ETags (Ceph RGW 16).
    pub(super) unquoted_etags: AtomicBool,
    /// The store refuses its own ETag in `If-Match` on GET: tile reads go unpinned.
    pub(super) unpinned_gets: AtomicBool,
    /// `--single-writer`: PUTs go unconditionally (the operator promised one writer).
    pub(super) single_writer: bool,
    /// Requests sent through this connection, by every layout over it.
    pub(super) stats: ObjectStats,
}

impl Connection {
    /// The connection over `store` (any `object_store` implementation: S3, Azure, or in-memory in
    /// tests) to the cache at `url`, its level folders under `tiles_rel` (`_alllayers` or empty);
    /// `--single-writer` from `opts.object.writes`, the default [`RetryPolicy`].
    pub fn new(
        url: ObjectUrl,
        store: Arc<dyn ObjectStore>,
        tiles_rel: &str,
        opts: CacheOptions,
    ) -> Connection {
        Connection {
            url,
            tiles_rel: tiles_rel.to_string(),
            store,
            policy: RetryPolicy::default(),
            unquoted_etags: AtomicBool::new(false),
            unpinned_gets: AtomicBool::new(false),
            single_writer: opts.object.writes == WriteCoordination::SingleWriter,
            opts,
            stats: ObjectStats::default(),
        }
    }

    /// Replaces the retry policy of conditional writes.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Connection {
        self.policy = policy;
        self
    }

    /// The cache URL.
    pub fn url(&self) -> &ObjectUrl {
        &self.url
    }

    /// Request counters of every layout over this connection.
    pub fn stats(&self) -> &ObjectStats {
        &self.stats
    }

    /// Writes a small object (conf.xml, conf.cdi) at `rel` under the prefix, replacing it.
    /// Errors: the store's, naming the object.
    pub fn put_file(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let key = Key::from(self.url.key(rel));
        block(
            self.store
                .put(&key, PutPayload::from(Bytes::copy_from_slice(bytes))),
        )
        .map_err(|e| obj_err(&self.url, rel, e))?;
        Ok(())
    }

    /// `rest` (relative to the level folders' parent) relative to the cache: under `tiles_rel`.
    pub(super) fn rel_join(&self, rest: &str) -> String {
        if self.tiles_rel.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.tiles_rel)
        }
    }

    /// The key of level `level`'s folder relative to the cache (canonical spelling, `L05`).
    pub(super) fn level_rel(&self, level: u8) -> String {
        self.rel_join(&names::level_dir(level))
    }

    /// One conditional PUT: `If-Match: etag`, or `If-None-Match: *` when `etag` is None. The
    /// store's answer (with the new ETag) on success; None if the precondition failed (another
    /// writer was first). Unconditional with `--single-writer`; the bytes sent are counted.
    /// Errors: any other answer of the store, naming the key.
    pub(super) fn put_conditional(
        &self,
        key: &Key,
        payload: PutPayload,
        etag: Option<&str>,
    ) -> Result<Option<object_store::PutResult>> {
        let rel = key.as_ref().to_string();
        let put = |mode: PutMode| {
            self.stats
                .bytes_up
                .fetch_add(payload.content_length() as u64, Ordering::Relaxed);
            block(self.store.put_opts(
                key,
                payload.clone(),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            ))
        };
        if self.single_writer {
            // --single-writer: the operator promised no other writer; the store may not
            // honour conditions anyway.
            return match put(PutMode::Overwrite) {
                Ok(r) => Ok(Some(r)),
                Err(e) => Err(obj_err_key(&self.url, &rel, e)),
            };
        }
        let Some(etag) = etag else {
            return match put(PutMode::Create) {
                Ok(r) => Ok(Some(r)),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(None),
                Err(e) => Err(obj_err_key(&self.url, &rel, e)),
            };
        };
        let update = |tag: &str| {
            PutMode::Update(UpdateVersion {
                e_tag: Some(tag.to_string()),
                version: None,
            })
        };
        let unquoted = etag.trim_matches('"');
        let first = if self.unquoted_etags.load(Ordering::Relaxed) {
            unquoted
        } else {
            etag
        };
        match put(update(first)) {
            Ok(r) => return Ok(Some(r)),
            Err(object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(obj_err_key(&self.url, &rel, e)),
        }
        if first == unquoted || unquoted == etag {
            return Ok(None);
        }
        // Ceph RGW 16 compares If-Match with the unquoted ETag: a 412 while the object still has
        // the ETag we sent means the store wants it unquoted.
        self.stats.heads.fetch_add(1, Ordering::Relaxed);
        let now = match block(self.store.head(key)) {
            Ok(m) => m.e_tag,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(obj_err_key(&self.url, &rel, e)),
        };
        if now.as_deref() != Some(etag) {
            return Ok(None);
        }
        match put(update(unquoted)) {
            Ok(r) => {
                if !self.unquoted_etags.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "{}: the store compares If-Match with unquoted ETags (Ceph RGW 16); \
                         sending them unquoted",
                        self.url
                    );
                }
                Ok(Some(r))
            }
            Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(obj_err_key(&self.url, &rel, e)),
        }
    }

    /// Whether conditional PUTs go with unquoted ETags (learnt from the store).
    pub fn sends_unquoted_etags(&self) -> bool {
        self.unquoted_etags.load(Ordering::Relaxed)
    }

    /// Runs the compare-and-swap probe ([`super::probe_conditional_writes`]) on this
    /// connection's store (named `store_name` in a refusal) and remembers whether it wants
    /// unquoted ETags. Errors as the probe's.
    pub fn check_conditional_writes(&self, store_name: &str) -> Result<CasProbe> {
        let p = super::probe::probe(&self.url, self.store.as_ref(), store_name)?;
        if p.unquoted_etags {
            self.unquoted_etags.store(true, Ordering::Relaxed);
        }
        Ok(p)
    }

    /// Whether PUTs go unconditionally (`--single-writer`).
    pub fn single_writer(&self) -> bool {
        self.single_writer
    }
}

/// A level's bundle list and when it was read.
type Listing = (Instant, Arc<Vec<BundleId>>);

/// The level list and the bundle lists (`.bundle` objects) of a cache's levels, each kept
/// `recheck` after it was read: what the Compact V2 and V1 layouts list alike (ListObjectsV2 with
/// a delimiter; the canonical level folder names `Lnn`).
#[derive(Default)]
pub(super) struct Listings {
    /// The level list and when it was read.
    level_list: Mutex<Option<(Instant, Vec<u8>)>>,
    /// Level → its bundle list and when it was read.
    listings: Mutex<HashMap<u8, Listing>>,
}

impl Listings {
    /// The levels of the cache `c` reaches (its `Lnn` folders under `tiles_rel`), ascending.
    /// Errors: the listing's, naming the prefix.
    pub(super) fn levels(&self, c: &Connection) -> Result<Vec<u8>> {
        if let Some((at, v)) = &*self.level_list.lock().unwrap() {
            if at.elapsed() < c.opts.recheck {
                return Ok(v.clone());
            }
        }
        let p = Key::from(c.url.key(&c.tiles_rel));
        let prefix = (!p.as_ref().is_empty()).then_some(&p);
        let l = block(c.store.list_with_delimiter(prefix))
            .map_err(|e| obj_err(&c.url, &c.tiles_rel, e))?;
        let mut v: Vec<u8> = l
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|n| n.starts_with('L'))
            .filter_map(|n| names::parse_level_dir(n).ok())
            .collect();
        v.sort_unstable();
        v.dedup();
        *self.level_list.lock().unwrap() = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    /// The bundles of `level` (its `.bundle` objects; a name that does not parse is skipped
    /// with a warning), sorted. Errors: the listing's, naming the level folder.
    pub(super) fn bundles(&self, c: &Connection, level: u8) -> Result<Vec<BundleId>> {
        if let Some((at, v)) = self.listings.lock().unwrap().get(&level) {
            if at.elapsed() < c.opts.recheck {
                return Ok(v.as_ref().clone());
            }
        }
        let rel = c.level_rel(level);
        let l = block(
            c.store
                .list_with_delimiter(Some(&Key::from(c.url.key(&rel)))),
        )
        .map_err(|e| obj_err(&c.url, &rel, e))?;
        let mut v = Vec::new();
        for o in &l.objects {
            let Some(n) = o.location.filename() else {
                continue;
            };
            if !n.ends_with(".bundle") {
                continue;
            }
            match names::parse_bundle_file(n) {
                Ok((row0, col0, _)) => v.push(BundleId { level, row0, col0 }),
                Err(e) => tracing::warn!("{}: skipping: {e}", rel_url(&c.url, &rel).display()),
            }
        }
        v.sort_unstable();
        self.listings
            .lock()
            .unwrap()
            .insert(level, (Instant::now(), Arc::new(v.clone())));
        Ok(v)
    }

    /// Forgets the kept lists of `level` and the level list (after a write there).
    pub(super) fn forget(&self, level: u8) {
        self.listings.lock().unwrap().remove(&level);
        *self.level_list.lock().unwrap() = None;
    }
}
