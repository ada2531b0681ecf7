//! Per-tile modification times of an exploded cache in an object store: one small object per row
//! folder, `…/L05/R0000abcd/.bundlefs-times` ([`TIMES_NAME`]), beside the row's tile objects.
//!
//! A tile object's time is the store's (its last PUT) and cannot be set, and rsync's quick check
//! compares size and mtime: without these records every tile shows its upload time and
//! `rsync -a` resends every tile after a remount. ArcGIS, GDAL and MapProxy address tiles by name
//! and never see the object; bundlefs skips it in listings (its name is not a tile name).
//!
//! Format (UTF-8 text, so an operator can read it): the line `bundlefs-row-times 1`, then one
//! line per tile, `COLUMN STAMP SECONDS NANOSECONDS`, ascending by column. `STAMP` is the CRC-32
//! of the tile object's ETag ([`crate::cache::store::object::v2::times::stamp`]): a record counts only while the tile
//! object is the version it was made for, so a tile rewritten by anyone else (ArcGIS, another
//! program, a later PUT without a time) shows its object's time again. Times before 1970 are not
//! recorded (the tile shows its object's time).
//!
//! Reads cost nothing extra for rows without times: the row's listing (ListObjectsV2, which the
//! store answers anyway) shows whether the object exists, and only then is it read (one GET per
//! row listing). Writes: after a flush's PUTs that carry times, and at `set_tile_time`, a
//! read-modify-write by conditional PUT (`If-Match` its ETag, `If-None-Match: *` when new, through
//! the connection's `Connection::put_conditional`: the Ceph RGW quirk and
//! `--single-writer` apply), retried with jittered backoff on a lost race; on final failure a
//! warning naming the object. A lost time costs rsync a resend, never a wrong tile.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::PutPayload;

use super::ExplodedObjects;
use crate::cache::store::object::connection::{ObjectStats, Try};
use crate::cache::store::object::v2::times::stamp;
use crate::format::{BundleId, TileAddr};

/// Name of the times object in a row folder (not a tile name: listings skip it).
pub const TIMES_NAME: &str = ".bundlefs-times";

const HEADER: &str = "bundlefs-row-times 1";

/// Column → (stamp of the tile object's ETag, time).
pub(super) type RowTimes = BTreeMap<u32, (u32, SystemTime)>;

/// A time to record: (column, the tile object's ETag as stored, time).
pub(super) type Record = (u32, String, SystemTime);

/// How many rows' times objects stay in memory with the ETag they were read at, so a row listed
/// again (the `recheck` of other writers' changes) reads its times object only when it changed.
pub(super) const KEPT: usize = 64;

/// The records of a times object; None when it is not one (a warning is the caller's).
pub(super) fn parse(bytes: &[u8]) -> Option<RowTimes> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut out = RowTimes::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [col, st, secs, nanos] = f[..] else {
            return None;
        };
        let nanos: u32 = nanos.parse().ok().filter(|n| *n < 1_000_000_000)?;
        let t = UNIX_EPOCH.checked_add(Duration::new(secs.parse().ok()?, nanos))?;
        out.insert(col.parse().ok()?, (st.parse().ok()?, t));
    }
    Some(out)
}

/// The bytes of a times object holding `recs`.
pub(super) fn render(recs: &RowTimes) -> Vec<u8> {
    let mut s = String::with_capacity(24 + 40 * recs.len());
    s.push_str(HEADER);
    s.push('\n');
    for (col, (st, t)) in recs {
        if let Ok(d) = t.duration_since(UNIX_EPOCH) {
            s.push_str(&format!(
                "{col} {st} {} {}\n",
                d.as_secs(),
                d.subsec_nanos()
            ));
        }
    }
    s.into_bytes()
}

/// The time recorded for a tile object with ETag `etag` in column `col`, if its stamp matches.
pub(super) fn recorded(recs: &RowTimes, col: u32, etag: Option<&str>) -> Option<SystemTime> {
    let (st, t) = recs.get(&col)?;
    (Some(*st) == etag.map(stamp)).then_some(*t)
}

impl ExplodedObjects {
    /// Records `recs` (column, ETag of the tile object as stored, time) in the times object of
    /// row folder `dir` (relative to the level folders' parent) by conditional read-modify-write.
    /// Records of other columns already there are kept. Failure (races lost every try, a store
    /// error) is a warning naming the object: the tiles are stored either way.
    pub(super) fn record_times(&self, t: TileAddr, dir: &str, recs: &[Record]) {
        if recs.is_empty() {
            return;
        }
        let rel = format!("{dir}/{TIMES_NAME}");
        let key = self.key_of(&rel);
        let policy = self.conn.policy;
        let id: BundleId = t.bundle();
        let stats: &ObjectStats = &self.conn.stats;
        let done = policy.compare_and_swap(&id, |_| {
            let current = self.get(&rel)?;
            let (mut map, etag) = match current {
                Some((b, etag, _)) => (
                    parse(&b).unwrap_or_else(|| {
                        tracing::warn!(
                            "{}: not a times object; started over",
                            self.url_of(&rel).display()
                        );
                        RowTimes::new()
                    }),
                    etag,
                ),
                None => (RowTimes::new(), None),
            };
            for (col, tag, when) in recs {
                map.insert(*col, (stamp(tag), *when));
            }
            let body = PutPayload::from(Bytes::from(render(&map)));
            Ok(
                match self.conn.put_conditional(&key, body, etag.as_deref())? {
                    Some(_) => {
                        stats.sidecar_puts.fetch_add(1, Ordering::Relaxed);
                        Try::Done(())
                    }
                    None => {
                        stats.sidecar_conflicts.fetch_add(1, Ordering::Relaxed);
                        Try::Lost
                    }
                },
            )
        });
        match done {
            Ok(Some(())) => return,
            Err(e) => {
                tracing::warn!("tile times not recorded: {e}");
                return;
            }
            Ok(None) => {}
        }
        tracing::warn!(
            "{}: tile times not recorded: other writers changed it on each of {} tries",
            self.url_of(&rel).display(),
            policy.attempts
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_count_for_their_object_version_only() {
        let t = UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789);
        let mut recs = RowTimes::new();
        recs.insert(7, (stamp("\"abc\""), t));
        recs.insert(1 << 20, (stamp("def"), UNIX_EPOCH));
        let back = parse(&render(&recs)).unwrap();
        assert_eq!(back, recs);
        // Quoting differs between stores' answers: the stamp does not.
        assert_eq!(recorded(&back, 7, Some("abc")), Some(t));
        assert_eq!(recorded(&back, 7, Some("\"abd\"")), None);
        assert_eq!(recorded(&back, 7, None), None);
        assert_eq!(recorded(&back, 8, Some("abc")), None);
    }

    #[test]
    fn what_is_not_a_times_object_is_refused() {
        for bad in [
            &b""[..],
            b"something else\n",
            b"bundlefs-row-times 1\n1 2 3\n",
            b"bundlefs-row-times 1\n1 2 3 1000000000\n",
            b"bundlefs-row-times 1\nx 2 3 4\n",
            b"\xff",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"bundlefs-row-times 1\n"), Some(RowTimes::new()));
    }
}
