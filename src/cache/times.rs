//! Per-tile modification times, kept in a sidecar file beside each bundle.
//!
//! Bundles hold no per-tile times, but rsync's quick check compares size and mtime, so a mount that
//! showed every tile with its bundle's mtime would make every `rsync -a` resend everything.
//!
//! The sidecar `<bundle>.bundle.times` (same name as the bundle plus `.times`; ArcGIS, MapProxy and
//! GDAL open bundles by name and never look at it) is:
//! - a 16-byte header: `b"BFSTIMES"`, u32 LE version (1), u32 reserved;
//! - 16,384 records of 16 bytes in index order (row-major slot `row * 128 + col`): the tile's raw
//!   index entry when the time was recorded (u64 LE) and the time in nanoseconds since the Unix
//!   epoch (i64 LE; 0 = none).
//!
//! A record counts only while its entry equals the bundle's current index entry for that slot, so a
//! tile rewritten by another writer (MapProxy, ArcGIS, `bundlefs compact`) falls back to its
//! bundle's mtime instead of showing a stale time, and a torn record simply does not match. The
//! sidecar is written after the index, under the bundle lock, without fsync: losing it costs a
//! resend by rsync, never a wrong tile.
//!
//! [`Sidecar`] is the same format in memory, for stores that read and write it whole (the object
//! store's `<bundle key>.times` objects, `cache::store::object::v2::times`). Those put a *stamp* in the
//! header's reserved word (the CRC-32 of the bundle version's ETag the records were made for); a
//! local sidecar leaves it 0.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};
use crate::format::{Slot, BUNDLE_DIM};

const MAGIC: &[u8; 8] = b"BFSTIMES";
const VERSION: u32 = 1;
const HEADER: u64 = 16;
const RECORD: u64 = 16;
/// Size of a complete sidecar.
pub const SIDECAR_LEN: u64 = HEADER + RECORD * (BUNDLE_DIM as u64) * (BUNDLE_DIM as u64);

/// The sidecar path of a bundle.
pub fn sidecar_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".times");
    PathBuf::from(s)
}

/// Byte offset of `slot`'s record in a sidecar (records in row-major slot order after the header).
fn record_pos(slot: Slot) -> u64 {
    HEADER + RECORD * (u64::from(slot.row) * u64::from(BUNDLE_DIM) + u64::from(slot.col))
}

fn to_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        // Times before 1970 are stored negative.
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn from_nanos(n: i64) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs())
    }
}

/// One 16-byte record: the raw index entry (u64 LE), the time in ns since the epoch (i64 LE).
fn encode_record(entry: u64, t: SystemTime) -> [u8; RECORD as usize] {
    let mut rec = [0u8; RECORD as usize];
    rec[..8].copy_from_slice(&entry.to_le_bytes());
    rec[8..].copy_from_slice(&to_nanos(t).to_le_bytes());
    rec
}

/// The time of a record if it is set and made for `entry`.
fn decode_record(rec: &[u8], entry: u64) -> Option<SystemTime> {
    let seen = u64::from_le_bytes(rec[..8].try_into().ok()?);
    let nanos = i64::from_le_bytes(rec[8..16].try_into().ok()?);
    (seen == entry && nanos != 0).then(|| from_nanos(nanos))
}

/// A header of this format and version (the reserved word is not checked).
fn header_ok(head: &[u8]) -> bool {
    head.len() >= HEADER as usize
        && &head[..8] == MAGIC
        && u32::from_le_bytes(head[8..12].try_into().unwrap()) == VERSION
}

/// A whole sidecar in memory ([`SIDECAR_LEN`] bytes, the layout of the module docs), for stores
/// that read and write it as one object.
#[derive(Clone, PartialEq, Eq)]
pub struct Sidecar {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = Slot::all().filter(|s| self.raw(*s).1 != 0).count();
        write!(
            f,
            "Sidecar {{ stamp: {:#010x}, records: {set} }}",
            self.stamp()
        )
    }
}

impl Sidecar {
    /// An empty sidecar (no records) with `stamp` in the header's reserved word.
    pub fn new(stamp: u32) -> Sidecar {
        let mut bytes = vec![0u8; SIDECAR_LEN as usize];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&stamp.to_le_bytes());
        Sidecar { bytes }
    }

    /// `bytes` as a sidecar; None unless they are exactly [`SIDECAR_LEN`] bytes with this magic
    /// and version (anything else is not trusted: a store then starts it over).
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Sidecar> {
        (bytes.len() as u64 == SIDECAR_LEN && header_ok(&bytes)).then_some(Sidecar { bytes })
    }

    /// The header's reserved word (the object store's stamp; 0 in local sidecars).
    pub fn stamp(&self) -> u32 {
        u32::from_le_bytes(self.bytes[12..16].try_into().unwrap())
    }

    /// The recorded time of `slot` if its record was made for index entry `entry`.
    pub fn time(&self, slot: Slot, entry: u64) -> Option<SystemTime> {
        let at = record_pos(slot) as usize;
        decode_record(&self.bytes[at..at + RECORD as usize], entry)
    }

    /// The raw record of `slot`: (index entry, ns since the epoch; 0 = none).
    fn raw(&self, slot: Slot) -> (u64, i64) {
        let at = record_pos(slot) as usize;
        let b = &self.bytes[at..at + RECORD as usize];
        (
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            i64::from_le_bytes(b[8..].try_into().unwrap()),
        )
    }

    /// Records `t` for `slot` holding index entry `entry`.
    pub fn set(&mut self, slot: Slot, entry: u64, t: SystemTime) {
        let at = record_pos(slot) as usize;
        self.bytes[at..at + RECORD as usize].copy_from_slice(&encode_record(entry, t));
    }

    /// The encoded sidecar.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded sidecar, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The recorded time of a slot, if the sidecar has one for exactly this index entry.
pub fn read(bundle: &Path, slot: Slot, entry: u64) -> Option<SystemTime> {
    let f = File::open(sidecar_path(bundle)).ok()?;
    let mut head = [0u8; HEADER as usize];
    f.read_exact_at(&mut head, 0).ok()?;
    if !header_ok(&head) {
        return None;
    }
    let mut rec = [0u8; RECORD as usize];
    f.read_exact_at(&mut rec, record_pos(slot)).ok()?;
    decode_record(&rec, entry)
}

/// Records times for slots with their current index entries. The caller holds the bundle lock.
pub fn write(bundle: &Path, records: &[(Slot, u64, SystemTime)]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let path = sidecar_path(bundle);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    let mut head = [0u8; HEADER as usize];
    let fresh = f.read_exact_at(&mut head, 0).is_err() || !header_ok(&head);
    if fresh {
        // New (or unreadable: start over) sidecar: all records empty, then the header.
        f.set_len(0).at(&path)?;
        f.set_len(SIDECAR_LEN).at(&path)?;
        f.write_all_at(&Sidecar::new(0).as_bytes()[..HEADER as usize], 0)
            .at(&path)?;
    } else if f.metadata().at(&path)?.len() != SIDECAR_LEN {
        f.set_len(SIDECAR_LEN).at(&path)?;
    }
    let mut sorted: Vec<(u64, [u8; RECORD as usize])> = records
        .iter()
        .map(|(slot, entry, t)| (record_pos(*slot), encode_record(*entry, *t)))
        .collect();
    sorted.sort_by_key(|r| r.0);
    // Coalesce adjacent records into one write.
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i].0;
        let mut buf = sorted[i].1.to_vec();
        let mut j = i + 1;
        while j < sorted.len() && sorted[j].0 == start + buf.len() as u64 {
            buf.extend_from_slice(&sorted[j].1);
            j += 1;
        }
        f.write_all_at(&buf, start).at(&path)?;
        i = j;
    }
    Ok(())
}

/// Gives each tile of `entries` (slot, its current raw index entry) that has no record for that
/// entry the time `shown`: the time readers were shown for it until now (its bundle's). Called
/// under the bundle lock before a change to the bundle, so the change moves only the changed
/// tiles' times, never those of the tiles it leaves alone (rsync and `find -newer` see no
/// change that did not happen). One read of the sidecar; writes only the missing records.
/// Returns how many were recorded. Errors: the sidecar cannot be written (naming it).
pub fn pin(bundle: &Path, entries: &[(Slot, u64)], shown: SystemTime) -> Result<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let current = std::fs::read(sidecar_path(bundle))
        .ok()
        .and_then(Sidecar::from_bytes);
    let missing: Vec<(Slot, u64, SystemTime)> = entries
        .iter()
        .filter(|(s, e)| current.as_ref().and_then(|c| c.time(*s, *e)).is_none())
        .map(|(s, e)| (*s, *e, shown))
        .collect();
    write(bundle, &missing)?;
    Ok(missing.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_count_only_for_their_entry() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("R0000C0000.bundle");
        let s = Slot { row: 3, col: 127 };
        assert_eq!(read(&b, s, 42), None);
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let old = UNIX_EPOCH - Duration::new(10, 5);
        write(&b, &[(s, 42, t), (Slot { row: 3, col: 126 }, 7, old)]).unwrap();
        assert_eq!(
            std::fs::metadata(sidecar_path(&b)).unwrap().len(),
            SIDECAR_LEN
        );
        assert_eq!(read(&b, s, 42), Some(t));
        assert_eq!(read(&b, Slot { row: 3, col: 126 }, 7), Some(old));
        // Another writer changed the tile: its entry differs, the time no longer applies.
        assert_eq!(read(&b, s, 43), None);
        assert_eq!(read(&b, Slot { row: 0, col: 0 }, 0), None);
        // A damaged header is started over, not trusted.
        std::fs::write(sidecar_path(&b), b"garbage").unwrap();
        assert_eq!(read(&b, s, 42), None);
        write(&b, &[(s, 42, t)]).unwrap();
        assert_eq!(read(&b, s, 42), Some(t));
    }

    #[test]
    fn pin_records_only_the_tiles_without_a_time() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("R0000C0000.bundle");
        let (s1, s2) = (Slot { row: 0, col: 1 }, Slot { row: 5, col: 9 });
        let own = UNIX_EPOCH + Duration::from_secs(1_000);
        let shown = UNIX_EPOCH + Duration::from_secs(2_000);
        write(&b, &[(s1, 11, own)]).unwrap();
        // s1 keeps its own time; s2 (no record) gets the shown one; a stale record is replaced.
        assert_eq!(pin(&b, &[(s1, 11), (s2, 22)], shown).unwrap(), 1);
        assert_eq!(
            (read(&b, s1, 11), read(&b, s2, 22)),
            (Some(own), Some(shown))
        );
        assert_eq!(pin(&b, &[(s1, 12)], shown).unwrap(), 1);
        assert_eq!(read(&b, s1, 12), Some(shown));
        assert_eq!(pin(&b, &[(s1, 12), (s2, 22)], own).unwrap(), 0);
        // Without a sidecar one is made.
        let c = d.path().join("R0080C0000.bundle");
        assert_eq!(pin(&c, &[(s2, 5)], shown).unwrap(), 1);
        assert_eq!(read(&c, s2, 5), Some(shown));
    }

    #[test]
    fn a_sidecar_in_memory_has_the_file_format() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("R0000C0000.bundle");
        let s = Slot { row: 127, col: 1 };
        let t = UNIX_EPOCH + Duration::new(1_600_000_000, 7);
        write(&b, &[(s, 99, t)]).unwrap();
        // The file written by `write` decodes as a Sidecar, and the other way round.
        let file = std::fs::read(sidecar_path(&b)).unwrap();
        let sc = Sidecar::from_bytes(file.clone()).expect("a sidecar");
        assert_eq!(
            (sc.stamp(), sc.time(s, 99), sc.time(s, 98)),
            (0, Some(t), None)
        );
        let mut mine = Sidecar::new(0);
        mine.set(s, 99, t);
        assert_eq!(mine.as_bytes(), &file[..]);
        // The stamp is the reserved word; a later record replaces the earlier one.
        let mut stamped = Sidecar::new(0xdead_beef);
        assert_eq!(stamped.stamp(), 0xdead_beef);
        stamped.set(s, 1, t);
        stamped.set(s, 2, UNIX_EPOCH - Duration::from_secs(3));
        assert_eq!(stamped.time(s, 1), None);
        assert_eq!(
            stamped.time(s, 2),
            Some(UNIX_EPOCH - Duration::from_secs(3))
        );
        std::fs::write(sidecar_path(&b), stamped.as_bytes()).unwrap();
        assert_eq!(read(&b, s, 2), Some(UNIX_EPOCH - Duration::from_secs(3)));
        // Wrong length, magic or version: not a sidecar.
        assert!(Sidecar::from_bytes(file[..file.len() - 1].to_vec()).is_none());
        let mut bad = file.clone();
        bad[0] ^= 1;
        assert!(Sidecar::from_bytes(bad).is_none());
        let mut v2 = file;
        v2[8] = 2;
        assert!(Sidecar::from_bytes(v2).is_none());
    }
}
