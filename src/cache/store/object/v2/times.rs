//! Per-tile modification times of a cache in an object store: the sidecar object
//! `<bundle key>.times` beside each bundle (`…/L05/R0080C0100.bundle.times`), in the format of
//! the local sidecar (`cache::times`: 16-byte header, 16,384 records of raw index entry + time).
//!
//! Bundles hold no per-tile times, and rsync's quick check compares size and mtime: without these
//! records every tile shows its bundle's time and `rsync -a` resends every tile each run. GDAL,
//! ArcGIS and MapProxy open bundles by name and never look at the sidecar.
//!
//! A record counts only while (1) the sidecar's *stamp* (the header's reserved word) is the
//! CRC-32 of the bundle's current ETag, quotes removed — the bundle version the records were made
//! for — and (2) its raw index entry equals the bundle's current entry for the slot. A bundle
//! rewritten by anyone who does not restamp the sidecar (ArcGIS, MapProxy, `delete`, `import`)
//! makes every tile fall back to its bundle's time. A whole-bundle rebuild (object stores have no
//! append) can put another tile of the same size at the same offset, so the entry alone would not
//! tell that tile apart; the stamp does.
//!
//! Reads: one GET of the whole sidecar (256 KiB) per bundle, kept in a small LRU
//! ([`SIDECARS_KEPT`]) with its ETag and rechecked every `recheck` by a GET with `If-None-Match`
//! (304: kept); a missing sidecar is remembered as such for `recheck` too.
//!
//! Writes: after a flush's bundle PUT that carries times (`write_group`), and at `set_tile_time`,
//! a read-modify-write of the sidecar by conditional PUT (`If-Match` its ETag, `If-None-Match: *`
//! when new, unconditional with `--single-writer`: `Connection::put_conditional`). A flush
//! carries the records of the tiles it copied from the version it was built from over to their
//! new entries (the rebuild moves them), so earlier times survive later flushes. On a lost race:
//! re-read, re-apply, jittered bounded retries; on final failure a warning naming the object. A
//! lost time costs rsync a resend, never a wrong tile.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use lru::LruCache;
use object_store::path::Path as Key;
use object_store::{GetOptions, PutPayload};

use super::V2Objects;
use crate::cache::bundle::BundleHandle;
use crate::cache::store::object::client::block;
use crate::cache::store::object::connection::Try;
use crate::cache::store::object::explain::{obj_err, rel_url};
use crate::cache::store::Storage;
use crate::cache::store::TimedSlot;
use crate::cache::times::Sidecar;
use crate::error::{Error, Result};
use crate::format::v2::{self, WriteStats};
use crate::format::{BundleId, Slot, TileAddr};

/// How many bundles' sidecars stay in memory (each 256 KiB: at most 8 MiB; a missing one costs
/// nothing but its entry).
pub const SIDECARS_KEPT: usize = 32;

/// Suffix of a sidecar object's key after its bundle's key.
pub const SIDECAR_SUFFIX: &str = ".times";

/// Key (relative to the cache's prefix) of the marker object a writer PUTs before its first
/// sidecar: a reader looks for sidecars only while it exists (asked once per `recheck` for the
/// whole cache), so a cache nobody recorded times in (written by ArcGIS, MapProxy, GDAL,
/// `bundlefs export`) costs no sidecar request at all. Its bytes do not matter.
pub const MARKER: &str = ".bundlefs-times";

/// What reading a tile's time needs besides its bundle's index.
pub(super) enum TimesWork {
    /// Nothing: known that no sidecar exists in the cache, or the bundle's is kept fresh.
    Nothing,
    /// Asking whether the cache has the marker at all.
    Marker,
    /// A GET of the bundle's sidecar (with this `If-None-Match` ETag).
    Sidecar(Option<String>),
}

/// What a whole-bundle rewrite stored ([`V2Objects::rewrite_tagged`]).
#[derive(Debug, Default)]
pub(super) struct Rewritten {
    /// Tiles and bytes written (zero when nothing was written).
    pub stats: WriteStats,
    /// ETag of the bundle version the new one was built from (None: it was new).
    pub built_from: Option<String>,
    /// ETag the store gave the new bundle (None: nothing written, or the store sent none).
    pub stored: Option<String>,
}

/// A bundle's sidecar as last read or written by this process.
pub(super) struct Kept {
    /// ETag of the sidecar object; None: it does not exist.
    etag: Option<String>,
    /// Its records; None when it does not exist or is not a sidecar.
    sidecar: Option<Arc<Sidecar>>,
    /// When the store last confirmed `etag`.
    checked: Instant,
}

/// The kept sidecars, by bundle.
pub(super) type Sidecars = Mutex<LruCache<BundleId, Arc<Kept>>>;

/// An empty set of kept sidecars, bounded by [`SIDECARS_KEPT`].
pub(super) fn sidecars() -> Sidecars {
    Mutex::new(LruCache::new(NonZeroUsize::new(SIDECARS_KEPT).unwrap()))
}

/// The stamp of a bundle version: CRC-32 (IEEE, `crc32fast`) of its ETag without quotes or a
/// weak-validator `W/` (stores differ in quoting between PUT answers and GETs).
pub fn stamp(etag: &str) -> u32 {
    let bare = etag.trim_start_matches("W/").trim_matches('"');
    crc32fast::hash(bare.as_bytes())
}

/// The tiles of `old` a rewrite kept (not in `written`, still stored in the new version whose
/// header + index is `new_head`): (slot, old raw index entry, new raw index entry).
fn carried_entries(
    old: &BundleHandle,
    new_head: &[u8],
    written: &BTreeSet<Slot>,
) -> Vec<(Slot, u64, u64)> {
    old.slots()
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| !written.contains(s))
        .map(|s| {
            let new = crate::format::u64_at(new_head, v2::index_pos(s));
            (s, old.raw_entry(s), new)
        })
        .filter(|(_, _, n)| *n != 0)
        .collect()
}

/// A sidecar stamped `new_stamp` giving each of the `carried` tiles (slot, old entry, new entry)
/// the time it was shown with in the version it was carried from: its record in `c` (the old
/// version's sidecar, if any) for its old entry, else `shown` (the old version's last-modified
/// time, which readers were shown for tiles without a record), keyed to its new entry.
fn carry_over(
    c: Option<&Sidecar>,
    new_stamp: u32,
    carried: &[(Slot, u64, u64)],
    shown: SystemTime,
) -> Sidecar {
    let mut n = Sidecar::new(new_stamp);
    for (s, o, e) in carried {
        n.set(*s, *e, c.and_then(|c| c.time(*s, *o)).unwrap_or(shown));
    }
    n
}

/// A sidecar change: gets the sidecar as stored (None: none, or not a sidecar) and returns the
/// new one (None: write nothing).
type ApplyFn<'a> = dyn FnMut(Option<&Sidecar>) -> Result<Option<Sidecar>> + 'a;

impl V2Objects {
    fn times_rel(&self, id: &BundleId) -> String {
        format!("{}{SIDECAR_SUFFIX}", self.bundle_rel(id))
    }

    fn times_key(&self, id: &BundleId) -> Key {
        Key::from(self.conn.url.key(&self.times_rel(id)))
    }

    /// Bundle `id`'s sidecar: the kept one while confirmed less than `recheck` ago (unless
    /// `reread`), else one GET (`If-None-Match` the kept ETag: a 304 keeps it).
    fn sidecar(&self, id: BundleId, reread: bool) -> Result<Arc<Kept>> {
        let kept = self.sidecars.lock().unwrap().get(&id).cloned();
        if let Some(k) = &kept {
            if !reread && k.checked.elapsed() < self.conn.opts.recheck {
                return Ok(k.clone());
            }
        }
        let if_none_match = kept.as_ref().and_then(|k| k.etag.clone());
        let got = block(self.get_sidecar(id, if_none_match));
        self.keep_sidecar(id, kept, got)
    }

    /// What reading a time in bundle `id` needs now (see [`TimesWork`]).
    pub(super) fn times_work(&self, id: &BundleId) -> TimesWork {
        match *self.times_marker.lock().unwrap() {
            Some((at, false)) if at.elapsed() < self.conn.opts.recheck => TimesWork::Nothing,
            Some((at, true)) if at.elapsed() < self.conn.opts.recheck => match self.sidecar_due(id)
            {
                Some(if_none_match) => TimesWork::Sidecar(if_none_match),
                None => TimesWork::Nothing,
            },
            _ => TimesWork::Marker,
        }
    }

    /// Whether the cache has the times marker: as kept for `recheck`, else one HEAD. A store
    /// error counts as present (sidecars are then looked for, and their errors only logged).
    fn times_anywhere(&self) -> bool {
        if let Some((at, present)) = *self.times_marker.lock().unwrap() {
            if at.elapsed() < self.conn.opts.recheck {
                return present;
            }
        }
        let got = block(self.head_marker());
        self.keep_marker(got)
    }

    /// The HEAD of the cache's times marker.
    pub(super) async fn head_marker(&self) -> object_store::Result<object_store::ObjectMeta> {
        self.conn.stats.heads.fetch_add(1, Ordering::Relaxed);
        self.conn
            .store
            .head(&Key::from(self.conn.url.key(&self.marker_rel())))
            .await
    }

    /// Keeps what a HEAD of the marker answered; returns whether it exists (an error other than
    /// "not found" counts as yes, logged at debug level).
    pub(super) fn keep_marker(&self, got: object_store::Result<object_store::ObjectMeta>) -> bool {
        let present = match got {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => {
                tracing::debug!("{}: times marker not read: {e}", self.conn.url);
                true
            }
        };
        *self.times_marker.lock().unwrap() = Some((Instant::now(), present));
        present
    }

    fn marker_rel(&self) -> String {
        match self.conn.tiles_rel.is_empty() {
            true => MARKER.to_string(),
            false => format!("{}/{MARKER}", self.conn.tiles_rel),
        }
    }

    /// Makes sure the times marker exists before a sidecar is written (one PUT with
    /// `If-None-Match: *` the first time; "already there" is fine). Errors: the store's.
    fn ensure_marker(&self) -> Result<()> {
        if let Some((_, true)) = *self.times_marker.lock().unwrap() {
            return Ok(());
        }
        let rel = self.marker_rel();
        let key = Key::from(self.conn.url.key(&rel));
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        let body =
            PutPayload::from_static(b"bundlefs: tile-time sidecars (*.bundle.times) exist\n");
        match block(self.conn.store.put_opts(&key, body, opts)) {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(obj_err(&self.conn.url, &rel, e)),
        }
        *self.times_marker.lock().unwrap() = Some((Instant::now(), true));
        Ok(())
    }

    /// Whether bundle `id`'s sidecar is due for a GET (none kept, or kept longer than
    /// `recheck`): Some(the `If-None-Match` ETag to send), None when the kept one is fresh.
    pub(super) fn sidecar_due(&self, id: &BundleId) -> Option<Option<String>> {
        match self.sidecars.lock().unwrap().peek(id) {
            Some(k) if k.checked.elapsed() < self.conn.opts.recheck => None,
            Some(k) => Some(k.etag.clone()),
            None => Some(None),
        }
    }

    /// The GET of bundle `id`'s sidecar (`If-None-Match`: 304 when unchanged), counted.
    pub(super) async fn get_sidecar(
        &self,
        id: BundleId,
        if_none_match: Option<String>,
    ) -> object_store::Result<(object_store::ObjectMeta, Bytes)> {
        let opts = GetOptions {
            if_none_match,
            ..Default::default()
        };
        self.conn.stats.sidecar_gets.fetch_add(1, Ordering::Relaxed);
        let r = self.conn.store.get_opts(&self.times_key(&id), opts).await?;
        let meta = r.meta.clone();
        Ok((meta, r.bytes().await?))
    }

    /// Keeps what a GET of bundle `id`'s sidecar answered ([`Self::get_sidecar`]; `kept`: what
    /// was kept before it, for a 304) and returns it. Errors: the store's, naming the object.
    pub(super) fn keep_sidecar(
        &self,
        id: BundleId,
        kept: Option<Arc<Kept>>,
        got: object_store::Result<(object_store::ObjectMeta, Bytes)>,
    ) -> Result<Arc<Kept>> {
        let rel = self.times_rel(&id);
        let now = Instant::now();
        let new = match got {
            Ok((meta, bytes)) => {
                self.conn
                    .stats
                    .bytes_down
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let len = bytes.len();
                let sidecar = Sidecar::from_bytes(bytes.into());
                if sidecar.is_none() {
                    tracing::warn!(
                        "{}: not a tile-times sidecar ({len} bytes, want {}); its times are \
                         ignored and it is started over when a time is next recorded",
                        rel_url(&self.conn.url, &rel).display(),
                        crate::cache::times::SIDECAR_LEN
                    );
                }
                Kept {
                    etag: meta.e_tag,
                    sidecar: sidecar.map(Arc::new),
                    checked: now,
                }
            }
            Err(object_store::Error::NotModified { .. }) if kept.is_some() => {
                let k = kept.unwrap();
                Kept {
                    etag: k.etag.clone(),
                    sidecar: k.sidecar.clone(),
                    checked: now,
                }
            }
            Err(object_store::Error::NotFound { .. }) => Kept {
                etag: None,
                sidecar: None,
                checked: now,
            },
            Err(e) => return Err(obj_err(&self.conn.url, &rel, e)),
        };
        let new = Arc::new(new);
        self.sidecars.lock().unwrap().put(id, new.clone());
        Ok(new)
    }

    /// The time recorded for `slot` of bundle `id` in its sidecar, if the sidecar is stamped with
    /// `bundle_etag` (the version whose index gave `entry`) and the slot's record was made for
    /// `entry`. None (show the bundle's time) otherwise, also when the sidecar cannot be read
    /// (logged at debug level: a time is never worth an error).
    pub(super) fn time_in_sidecar(
        &self,
        id: BundleId,
        bundle_etag: &str,
        slot: Slot,
        entry: u64,
    ) -> Option<SystemTime> {
        if !self.times_anywhere() {
            return None;
        }
        let kept = match self.sidecar(id, false) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!("tile times not read: {e}");
                return None;
            }
        };
        let sc = kept.sidecar.as_ref()?;
        if sc.stamp() != stamp(bundle_etag) {
            return None;
        }
        sc.time(slot, entry)
    }

    /// The recorded time of stored tile `t` ([`Self::time_in_sidecar`] against the bundle's
    /// current index). None: not recorded (or not stored).
    pub(super) fn recorded_time(&self, t: TileAddr) -> Option<SystemTime> {
        let id = t.bundle();
        let ix = self.index(id).ok()??;
        let e = ix.entry(t.slot());
        if e.is_empty() {
            return None;
        }
        self.time_in_sidecar(id, &ix.etag, t.slot(), e.0)
    }

    /// Read-modify-write of bundle `id`'s sidecar by conditional PUT; `apply` is called again
    /// after each lost race, against the sidecar as it is then. True if a sidecar was written.
    /// Errors: the store's, or [`crate::cache::store::object::RetryPolicy::attempts`] lost races, naming the sidecar object.
    fn update_sidecar(&self, id: BundleId, apply: &mut ApplyFn) -> Result<bool> {
        self.ensure_marker()?;
        let key = self.times_key(&id);
        let done = self.conn.policy.compare_and_swap(&id, |attempt| {
            let kept = self.sidecar(id, attempt > 0)?;
            let Some(new) = apply(kept.sidecar.as_deref())? else {
                return Ok(Try::Done(false));
            };
            let new = Arc::new(new);
            let payload = PutPayload::from(Bytes::copy_from_slice(new.as_bytes()));
            let Some(put) = self
                .conn
                .put_conditional(&key, payload, kept.etag.as_deref())?
            else {
                self.conn
                    .stats
                    .sidecar_conflicts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "{}: another writer changed the tile times (try {}); applying again",
                    rel_url(&self.conn.url, &self.times_rel(&id)).display(),
                    attempt + 1
                );
                return Ok(Try::Lost);
            };
            self.conn.stats.sidecar_puts.fetch_add(1, Ordering::Relaxed);
            let mut c = self.sidecars.lock().unwrap();
            match put.e_tag {
                Some(etag) => {
                    c.put(
                        id,
                        Arc::new(Kept {
                            etag: Some(etag),
                            sidecar: Some(new),
                            checked: Instant::now(),
                        }),
                    );
                }
                None => {
                    c.pop(&id);
                }
            }
            Ok(Try::Done(true))
        })?;
        if let Some(wrote) = done {
            return Ok(wrote);
        }
        Err(Error::io(
            rel_url(&self.conn.url, &self.times_rel(&id)),
            std::io::Error::other(format!(
                "gave up after {} tries: other writers changed the tile times each time \
                 (conditional PUT refused)",
                self.conn.policy.attempts
            )),
        ))
    }

    /// The sidecar of bundle `id`'s version stamped `new_stamp`, rewritten from the version
    /// stamped `old_stamp` keeping the `carried` tiles: `cur` itself when already for the new
    /// version (another mount got in first); else a new one giving the kept tiles the times they
    /// were shown with ([`carry_over`]: `cur`'s records when it is for the old version, else
    /// `shown`). None when `cur` is for some third version and the bundle is no longer the one
    /// stored here (a newer writer's: ours would not count anyway).
    fn carried_sidecar(
        &self,
        id: BundleId,
        cur: Option<&Sidecar>,
        new_stamp: u32,
        old_stamp: Option<u32>,
        carried: &[(Slot, u64, u64)],
        shown: SystemTime,
    ) -> Result<Option<Sidecar>> {
        Ok(Some(match cur {
            Some(c) if c.stamp() == new_stamp => c.clone(),
            Some(c) if Some(c.stamp()) == old_stamp => {
                carry_over(Some(c), new_stamp, carried, shown)
            }
            Some(_) if !self.bundle_still(&id, new_stamp)? => return Ok(None),
            _ => carry_over(None, new_stamp, carried, shown),
        }))
    }

    /// Whether bundle `id` is still the version with stamp `want` (one HEAD).
    fn bundle_still(&self, id: &BundleId, want: u32) -> Result<bool> {
        Ok(self.head_etag(id)?.is_some_and(|e| stamp(&e) == want))
    }

    /// After a flush stored bundle `id` (`done`): records the times `tiles` carry against the
    /// new bundle's index (`new_head`: its header + index), and carries the records of the tiles
    /// copied from the version it was built from (`old`) over to their new entries (tiles
    /// without a record keep the time they were shown with, `old`'s last-modified). Writes the
    /// sidecar when `tiles` carry a time or tiles were kept. Failures are logged as warnings
    /// naming the sidecar (a lost time costs a resend, never a wrong tile).
    pub(super) fn record_flush_times(
        &self,
        id: BundleId,
        done: &Rewritten,
        old: Option<&BundleHandle>,
        new_head: &[u8],
        tiles: &[TimedSlot],
    ) {
        let new_entry = |s: Slot| crate::format::u64_at(new_head, v2::index_pos(s));
        // The last of duplicates wins, as in the bundle.
        let records: HashMap<Slot, SystemTime> = tiles
            .iter()
            .filter_map(|(s, _, m)| m.map(|m| (*s, m)))
            .collect();
        let written: BTreeSet<Slot> = tiles.iter().map(|t| t.0).collect();
        let carried = old.map_or_else(Vec::new, |h| carried_entries(h, new_head, &written));
        if records.is_empty() && carried.is_empty() {
            return;
        }
        let url = rel_url(&self.conn.url, &self.times_rel(&id));
        let Some(stored) = &done.stored else {
            tracing::warn!(
                "{}: tile times not recorded: the store sent no ETag for the bundle",
                url.display()
            );
            return;
        };
        let shown = old.map_or(SystemTime::UNIX_EPOCH, |h| h.stamp.mtime());
        let new_stamp = stamp(stored);
        let old_stamp = done.built_from.as_deref().map(stamp);
        let mut gave_up = false;
        let r = self.update_sidecar(id, &mut |cur| {
            let Some(mut sc) =
                self.carried_sidecar(id, cur, new_stamp, old_stamp, &carried, shown)?
            else {
                gave_up = true;
                return Ok(None);
            };
            for (s, t) in &records {
                sc.set(*s, new_entry(*s), *t);
            }
            Ok(Some(sc))
        });
        match r {
            Ok(_) if gave_up => tracing::debug!(
                "{}: tile times not recorded: another writer replaced the bundle meanwhile",
                url.display()
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("tile times not recorded (rsync will send these tiles again): {e}")
            }
        }
    }

    /// After a rewrite of bundle `id` (`done`) that gives no tile a time (`delete`, `compact`,
    /// `import`, a merge): carries the records of the tiles it kept from the version it was
    /// built from (`old`) over to their entries in the new one (`new_head`: header + index), so
    /// those tiles keep their times and rsync does not send them again. `written` are the slots
    /// the rewrite put new tiles in: their records are not carried. Kept tiles without a record
    /// for the version built from get the time they were shown with, that version's
    /// last-modified ([`carry_over`]). Failures are logged (a lost time costs a resend).
    pub(super) fn carry_times(
        &self,
        id: BundleId,
        done: &Rewritten,
        old: &BundleHandle,
        new_head: &[u8],
        written: &BTreeSet<Slot>,
    ) {
        let (Some(stored), Some(built_from)) = (&done.stored, &done.built_from) else {
            return;
        };
        let (new_stamp, old_stamp) = (stamp(stored), stamp(built_from));
        let carried = carried_entries(old, new_head, written);
        if carried.is_empty() {
            return;
        }
        let shown = old.stamp.mtime();
        let r = self.update_sidecar(id, &mut |cur| {
            if cur.is_some_and(|c| c.stamp() == new_stamp) {
                return Ok(None); // another mount got in first
            }
            self.carried_sidecar(id, cur, new_stamp, Some(old_stamp), &carried, shown)
        });
        if let Err(e) = r {
            tracing::warn!("tile times not carried over (rsync will send these tiles again): {e}");
        }
    }

    /// `set_tile_time` of the object storage: records `mtime` for stored tile `t` against the
    /// bundle as it is now (its kept index confirmed by one HEAD, read anew if it changed). False
    /// if the tile is not stored. Errors: reading the index; a failed sidecar write is only
    /// logged (warning naming the object).
    pub(super) fn set_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        let id = t.bundle();
        let Some(mut ix) = self.index(id)? else {
            return Ok(false);
        };
        if self.head_etag(&id)?.as_deref() != Some(ix.etag.as_str()) {
            self.invalidate(&id);
            let Some(now) = self.index(id)? else {
                return Ok(false);
            };
            ix = now;
        }
        let slot = t.slot();
        let entry = ix.entry(slot);
        if entry.is_empty() {
            return Ok(false);
        }
        let want = stamp(&ix.etag);
        let mut gave_up = false;
        let r = self.update_sidecar(id, &mut |cur| {
            let mut sc = match cur {
                Some(c) if c.stamp() == want => {
                    if c.time(slot, entry.0) == Some(mtime) {
                        return Ok(None);
                    }
                    c.clone()
                }
                Some(_) => {
                    if !self.bundle_still(&id, want)? {
                        gave_up = true;
                        return Ok(None);
                    }
                    Sidecar::new(want)
                }
                None => Sidecar::new(want),
            };
            sc.set(slot, entry.0, mtime);
            Ok(Some(sc))
        });
        let url = rel_url(&self.conn.url, &self.times_rel(&id));
        match r {
            Ok(_) if gave_up => tracing::warn!(
                "{}: time of tile {t} not recorded: another writer replaced the bundle meanwhile",
                url.display()
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("time of tile {t} not recorded (rsync will send it again): {e}")
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::GroupView;
    use crate::cache::url::ObjectUrl;
    use crate::cache::{CacheOptions, TileBytes};
    use crate::format::BUNDLE_DIM;
    use object_store::memory::InMemory;
    use object_store::ObjectStore;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    use crate::cache::store::object::v2::tests::{storage, tile, ID};

    fn at(n: u32) -> TileAddr {
        ID.tile(Slot {
            row: n / BUNDLE_DIM,
            col: n % BUNDLE_DIM,
        })
    }

    fn when(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::new(1_600_000_000 + secs, 123_456_789)
    }

    /// Writes tiles `ns` by one flush, each with its time (None: none).
    fn flush(s: &V2Objects, ns: &[(u32, Option<SystemTime>)]) {
        let tiles: Vec<(Slot, Vec<u8>, Option<SystemTime>)> = ns
            .iter()
            .map(|(n, m)| (at(*n).slot(), tile(*n), *m))
            .collect();
        let timed: Vec<TimedSlot> = tiles.iter().map(|(s, b, m)| (*s, &b[..], *m)).collect();
        s.write_group(ID, &timed).unwrap();
    }

    /// The mtime `s` shows for tile `n`, and the bundle's time (what it falls back to).
    fn shown(s: &V2Objects, n: u32) -> (SystemTime, SystemTime) {
        let b = s.tile(at(n)).unwrap().expect("stored tile");
        (s.tile_mtime(at(n), &b).unwrap(), b.mtime().unwrap())
    }

    fn keys(mem: &InMemory) -> Vec<String> {
        use futures::StreamExt;
        block(
            mem.list(None)
                .map(|m| m.unwrap().location.to_string())
                .collect(),
        )
    }

    #[test]
    fn times_read_back_after_flushes_and_a_touch_from_another_process() {
        let mem = Arc::new(InMemory::new());
        let w = storage(&mem, Duration::from_secs(60));
        flush(&w, &[(200, Some(when(1))), (300, None)]);
        assert_eq!(
            keys(&mem),
            vec![
                "caches/world/_alllayers/.bundlefs-times",
                "caches/world/_alllayers/L03/R0080C0000.bundle",
                "caches/world/_alllayers/L03/R0080C0000.bundle.times"
            ]
        );
        let r = storage(&mem, Duration::ZERO);
        assert_eq!(shown(&r, 200).0, when(1));
        let (m, bundle) = shown(&r, 300);
        assert_eq!(
            m, bundle,
            "a tile flushed without a time shows its bundle's"
        );
        // A later flush puts a tile before them (their offsets move): their times are carried.
        flush(&w, &[(5, Some(when(5)))]);
        assert_eq!(shown(&r, 200).0, when(1), "moved by the rebuild, time kept");
        assert_eq!(shown(&r, 5).0, when(5));
        // A touch through another process.
        assert!(r.set_tile_time(at(300), when(3)).unwrap());
        assert!(!r.set_tile_time(at(301), when(3)).unwrap(), "not stored");
        let fresh = storage(&mem, Duration::ZERO);
        for (n, t) in [(5, when(5)), (200, when(1)), (300, when(3))] {
            assert_eq!(shown(&fresh, n).0, t, "tile {n}");
            // The lookup's answer from the index (no tile read) gives the same time.
            let st = fresh.tile_stat(at(n)).unwrap().unwrap();
            assert_eq!(
                (st.size, st.mtime),
                (tile(n).len() as u64, Some(t)),
                "stat {n}"
            );
        }
        assert_eq!(w.stats().sidecar_puts.load(Ordering::Relaxed), 2);
        assert_eq!(r.stats().sidecar_puts.load(Ordering::Relaxed), 1);
        // A flush without times (an import) restamps the sidecar for the new version: the tiles
        // it kept keep their times; the new tile shows its bundle's.
        let puts = w.stats().sidecar_puts.load(Ordering::Relaxed);
        flush(&w, &[(400, None)]);
        assert_eq!(w.stats().sidecar_puts.load(Ordering::Relaxed), puts + 1);
        let after = storage(&mem, Duration::ZERO);
        for (n, t) in [(5, when(5)), (200, when(1)), (300, when(3))] {
            assert_eq!(
                shown(&after, n).0,
                t,
                "tile {n} after a flush without times"
            );
        }
        let (m, bundle) = shown(&after, 400);
        assert_eq!(m, bundle);
        assert!(
            w.stats_line().contains("tile-times sidecars"),
            "{}",
            w.stats_line()
        );
    }

    #[test]
    fn delete_and_compact_carry_the_kept_tiles_times_over() {
        let mem = Arc::new(InMemory::new());
        let w = storage(&mem, Duration::from_secs(60));
        flush(
            &w,
            &[(1, Some(when(1))), (2, Some(when(2))), (3, Some(when(3)))],
        );
        w.delete_group(ID, &[at(2).slot()]).unwrap();
        let r = storage(&mem, Duration::from_secs(60));
        assert!(r.tile(at(2)).unwrap().is_none());
        assert_eq!(shown(&r, 1).0, when(1));
        assert_eq!(shown(&r, 3).0, when(3), "moved by the rebuild, time kept");
        // A bundle with dead space (as another program leaves it) compacted: times kept too.
        let (h, _) = r.get_whole(ID).unwrap().unwrap();
        let mut body = h.bytes(0..h.file_bytes() as usize).to_vec();
        body.extend_from_slice(&[0u8; 64]);
        let put = block(mem.put(&r.bundle_key(&ID), PutPayload::from(body))).unwrap();
        // A sidecar for that version, as a writer keeping times would leave it (the appended
        // bytes leave every index entry as it was).
        let ix = r.index(ID).unwrap().unwrap();
        let mut carried = Sidecar::new(stamp(put.e_tag.as_deref().unwrap()));
        for n in [1, 3] {
            carried.set(at(n).slot(), ix.entry(at(n).slot()).0, when(n.into()));
        }
        block(mem.put(
            &r.times_key(&ID),
            PutPayload::from(Bytes::copy_from_slice(carried.as_bytes())),
        ))
        .unwrap();
        let c = storage(&mem, Duration::from_secs(60));
        assert_eq!(shown(&c, 3).0, when(3));
        assert!(matches!(
            c.compact_bundle(ID, 0.0).unwrap(),
            crate::cache::Compacted::Rewritten { .. }
        ));
        let after = storage(&mem, Duration::from_secs(60));
        assert_eq!(shown(&after, 1).0, when(1));
        assert_eq!(shown(&after, 3).0, when(3));
    }

    #[test]
    fn a_record_for_a_rewritten_tile_is_ignored() {
        let mem = Arc::new(InMemory::new());
        let w = storage(&mem, Duration::from_secs(60));
        flush(&w, &[(1, Some(when(1))), (2, Some(when(2)))]);
        let r = storage(&mem, Duration::ZERO);
        assert_eq!(shown(&r, 1).0, when(1));
        // Another writer that keeps no times (an import) replaces tile 1 by another tile of the
        // same size: rebuilt whole, it lands at the same offset with the same index entry.
        let other: Vec<u8> = tile(1).iter().map(|b| b ^ 0x20).collect();
        assert_eq!(other.len(), tile(1).len());
        let before = r.index(ID).unwrap().unwrap().entry(at(1).slot()).0;
        let st = storage(&mem, Duration::from_secs(60))
            .update_group(ID, &mut |_: &dyn GroupView| {
                Ok(vec![(at(1).slot(), TileBytes::owned(other.clone()))])
            })
            .unwrap();
        assert_eq!(st.tiles, 1);
        let after = r.index(ID).unwrap().unwrap().entry(at(1).slot()).0;
        assert_eq!(before, after, "the test wants an unchanged index entry");
        assert_eq!(&r.tile(at(1)).unwrap().unwrap()[..], &other[..]);
        let (m, bundle) = shown(&r, 1);
        assert_eq!(
            m, bundle,
            "tile 1: the old tile's record counted for the new one"
        );
        // The tile the import kept keeps its time (carried over to the new version).
        assert_eq!(shown(&r, 2).0, when(2));
        // A record whose entry is not the tile's is ignored even in a sidecar of this version.
        assert!(w.set_tile_time(at(2), when(9)).unwrap());
        let ix = r.index(ID).unwrap().unwrap();
        let slot = at(2).slot();
        let e = ix.entry(slot).0;
        assert_eq!(r.time_in_sidecar(ID, &ix.etag, slot, e), Some(when(9)));
        assert_eq!(r.time_in_sidecar(ID, &ix.etag, slot, e + 1), None);
        assert_eq!(r.time_in_sidecar(ID, "\"another\"", slot, e), None);
    }

    #[test]
    fn two_writers_racing_on_one_sidecar_both_keep_their_times() {
        let mem = Arc::new(InMemory::new());
        let a = storage(&mem, Duration::from_secs(3600));
        let b = storage(&mem, Duration::from_secs(3600));
        flush(&a, &[(1, None), (2, None), (3, None)]);
        assert!(a.set_tile_time(at(1), when(1)).unwrap());
        assert!(b.set_tile_time(at(2), when(2)).unwrap());
        // `a` still keeps the sidecar it wrote (within recheck): its PUT is refused, it reads
        // b's sidecar and applies its time again.
        assert!(a.set_tile_time(at(3), when(3)).unwrap());
        assert_eq!(a.stats().sidecar_conflicts.load(Ordering::Relaxed), 1);
        let r = storage(&mem, Duration::ZERO);
        for n in [1, 2, 3] {
            assert_eq!(shown(&r, n).0, when(n.into()), "tile {n}");
        }
        // Four threads, each its own storage (as separate mounts), touching their own tiles.
        let threads: Vec<_> = (0..4u32)
            .map(|w| {
                let s = storage(&mem, Duration::from_secs(3600));
                std::thread::spawn(move || {
                    for n in 1..=3u32 {
                        assert!(s.set_tile_time(at(n), when(100 + u64::from(w))).unwrap());
                    }
                    s.stats().sidecar_conflicts.load(Ordering::Relaxed)
                })
            })
            .collect();
        let conflicts: u64 = threads.into_iter().map(|h| h.join().unwrap()).sum();
        eprintln!("sidecar conflicts among threads: {conflicts}");
        // Every tile shows one of the times written to it (no record lost to a torn write).
        for n in [1, 2, 3] {
            let m = shown(&r, n).0;
            assert!(
                (100..104).any(|w| m == when(w)),
                "tile {n}: {m:?} is none of the writers' times"
            );
        }
    }

    #[test]
    fn racing_touches_of_distinct_tiles_all_keep_their_times() {
        let mem = Arc::new(InMemory::new());
        let w = storage(&mem, Duration::from_secs(60));
        let ns: Vec<(u32, Option<SystemTime>)> = (0..16).map(|n| (n * 37, None)).collect();
        flush(&w, &ns);
        let threads: Vec<_> = (0..4u32)
            .map(|k| {
                let s = storage(&mem, Duration::from_secs(3600));
                std::thread::spawn(move || {
                    for i in 0..4u32 {
                        let n = (k * 4 + i) * 37;
                        assert!(s.set_tile_time(at(n), when(n.into())).unwrap());
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        let r = storage(&mem, Duration::ZERO);
        for (n, _) in ns {
            assert_eq!(shown(&r, n).0, when(n.into()), "tile {n} lost its time");
        }
    }

    #[test]
    fn flushes_of_two_writers_one_after_the_other_keep_both_times() {
        let mem = Arc::new(InMemory::new());
        let a = storage(&mem, Duration::from_secs(3600));
        let b = storage(&mem, Duration::from_secs(3600));
        flush(&a, &[(10, Some(when(10)))]);
        flush(&b, &[(2, Some(when(2)))]);
        flush(&a, &[(1, Some(when(1)))]);
        let r = storage(&mem, Duration::ZERO);
        for n in [1, 2, 10] {
            assert_eq!(shown(&r, n).0, when(n.into()), "tile {n}");
        }
        assert!(a.stats().sidecar_conflicts.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn a_missing_sidecar_means_the_bundle_time_and_is_asked_for_once_per_recheck() {
        let mem = Arc::new(InMemory::new());
        let w = storage(&mem, Duration::from_secs(60));
        flush(&w, &[(1, None), (2, None)]);
        assert_eq!(keys(&mem).len(), 1, "a sidecar written without any time");
        let r = storage(&mem, Duration::from_millis(300));
        let gets = || r.stats().sidecar_gets.load(Ordering::Relaxed);
        for n in [1, 2, 1] {
            let (m, bundle) = shown(&r, n);
            assert_eq!(m, bundle);
        }
        // No times marker in the cache: no sidecar is asked for at all.
        assert_eq!(
            gets(),
            0,
            "a sidecar asked for in a cache without the marker"
        );
        std::thread::sleep(Duration::from_millis(350));
        let _ = shown(&r, 1);
        assert_eq!(
            gets(),
            0,
            "a sidecar asked for in a cache without the marker"
        );
        // Written by another process meanwhile: seen after recheck.
        assert!(w.set_tile_time(at(1), when(1)).unwrap());
        assert_eq!(shown(&r, 1).0, shown(&r, 1).1, "within recheck");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(shown(&r, 1).0, when(1));
        // Unchanged since: the recheck is a GET answered 304, and the times stay.
        std::thread::sleep(Duration::from_millis(350));
        let down = r.stats().bytes_down.load(Ordering::Relaxed);
        assert_eq!(shown(&r, 1).0, when(1));
        assert!(
            r.stats().bytes_down.load(Ordering::Relaxed) - down < crate::cache::times::SIDECAR_LEN,
            "an unchanged sidecar was downloaded again"
        );
    }

    #[test]
    fn single_writer_keeps_times_with_unconditional_puts() {
        let mem = Arc::new(InMemory::new());
        let url = ObjectUrl::parse("s3://bucket/caches/world")
            .unwrap()
            .unwrap();
        let opts = CacheOptions {
            object: crate::cache::store::object::ObjectOptions {
                writes: crate::cache::store::object::WriteCoordination::SingleWriter,
                ..Default::default()
            },
            ..CacheOptions::default()
        };
        let w = V2Objects::with_store(url, mem.clone(), "_alllayers", opts);
        assert!(w.connection().single_writer());
        flush(&w, &[(1, Some(when(1))), (2, None)]);
        assert!(w.set_tile_time(at(2), when(2)).unwrap());
        flush(&w, &[(0, Some(when(0)))]);
        let r = storage(&mem, Duration::ZERO);
        for n in [0, 1, 2] {
            assert_eq!(shown(&r, n).0, when(n.into()), "tile {n}");
        }
        assert_eq!(w.stats().sidecar_puts.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_sidecar_that_is_not_one_is_ignored_and_started_over() {
        let mem = Arc::new(InMemory::new());
        let w = storage(&mem, Duration::ZERO);
        flush(&w, &[(1, None)]);
        let key = w.times_key(&ID);
        block(mem.put(&key, PutPayload::from(b"garbage".to_vec()))).unwrap();
        let (m, bundle) = shown(&w, 1);
        assert_eq!(m, bundle);
        assert!(w.set_tile_time(at(1), when(1)).unwrap());
        assert_eq!(shown(&w, 1).0, when(1));
        let len = block(mem.head(&key)).unwrap().size;
        assert_eq!(len, crate::cache::times::SIDECAR_LEN);
    }
}
