//! The on-disk index cache of a cache in an object store (`bundlefs mount --cache-dir DIR
//! --cache-size SIZE`): the header and index of a Compact V2 bundle (bytes 0..131136 of the
//! object: 64-byte header + 128×128×8-byte index, Esri's Compact V2 layout, `format::v2`) kept in
//! one file per bundle object, so a fresh mount reads a bundle's index from disk instead of one
//! 128 KiB range GET.
//!
//! An entry file (`<crc32 of the object URL, hex>-<bundle file name>.idx`) holds, little-endian:
//! the magic `BFSIDX1\n`; the object URL (u16 length + UTF-8), the ETag (u16 length + UTF-8),
//! the object size (u64), its last-modified time (i64 nanoseconds since 1970), the header+index
//! bytes (u32 length + bytes); then the CRC-32 (IEEE, `crc32fast`) of everything before it. An
//! entry whose checksum, layout or URL does not match is deleted and the index fetched again.
//!
//! The file's modification time is when the entry's ETag was last confirmed by the store (its
//! GET, or a HEAD after `--recheck`); a mount trusts an entry confirmed less than `--recheck`
//! ago, and HEADs the object for an older one (same ETag: used and touched; else dropped). The
//! same time orders eviction: when the files exceed `--cache-size` bytes, the least recently
//! confirmed are deleted until the total is at most 90 % of it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::{Error, IoContext, Result};

/// Default bound of the disk cache in bytes (`--cache-size`): 1 GiB ≈ 8,000 bundle indexes.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

const MAGIC: &[u8; 8] = b"BFSIDX1\n";

/// One bundle's header and index as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    /// ETag of the object the bytes came from.
    pub etag: String,
    /// Object size in bytes.
    pub size: u64,
    /// Object last-modified time.
    pub mtime: SystemTime,
    /// Bytes 0..131136 of the object (header and index).
    pub head: Bytes,
    /// How long ago the store last confirmed the ETag (the entry file's modification time).
    pub age: Duration,
}

/// A folder of index entries bounded in bytes.
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Bytes of entry files, as counted at open and by this process's writes since.
    total: Mutex<u64>,
}

impl DiskCache {
    /// Opens (creating) the folder `dir`, bounded to `limit` bytes of entries. Errors: the folder
    /// cannot be created or read (named).
    pub fn open(dir: &Path, limit: u64) -> Result<DiskCache> {
        fs::create_dir_all(dir).at(dir)?;
        let c = DiskCache {
            dir: dir.to_path_buf(),
            limit,
            total: Mutex::new(0),
        };
        let total = c.files()?.iter().map(|(_, len, _)| len).sum();
        *c.total.lock().unwrap() = total;
        c.evict_if_over();
        Ok(c)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file of object `url` (`s3://BUCKET/KEY`).
    pub fn path_of(&self, url: &str) -> PathBuf {
        let name = url.rsplit('/').next().unwrap_or("bundle");
        self.dir.join(format!(
            "{:08x}-{name}.idx",
            crc32fast::hash(url.as_bytes())
        ))
    }

    /// The entry of object `url`, if one is kept and intact. A damaged entry (checksum, layout,
    /// another object's) is deleted, logged and reported as absent.
    pub fn get(&self, url: &str) -> Option<DiskEntry> {
        let p = self.path_of(url);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("{}: cannot read the index cache entry: {e}", p.display());
                return None;
            }
        };
        match decode(&bytes, url) {
            Ok(mut e) => {
                e.age = fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or(Duration::MAX);
                Some(e)
            }
            Err(why) => {
                tracing::warn!(
                    "{}: index cache entry of {url} is damaged ({why}); deleted, the index is read \
                     from the store again",
                    p.display()
                );
                self.remove(&p, bytes.len() as u64);
                None
            }
        }
    }

    /// Keeps `e` as the entry of object `url` (written to a temporary file and renamed, so a
    /// reader sees the old entry or the new one), then evicts the least recently confirmed
    /// entries while the folder holds more than the limit. A failed write is logged, not an
    /// error: the cache is an optimisation.
    pub fn put(&self, url: &str, e: &DiskEntry) {
        let p = self.path_of(url);
        let bytes = encode(url, e);
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let old = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        // The old entry is removed before the rename, not replaced by it: ext4 (auto_da_alloc)
        // writes a file renamed over another out at once, 4 ms against 0.16 ms measured here for
        // 128 KiB, on a cold read's path. Meanwhile the entry is simply missing (a cache miss).
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => fs::rename(&tmp, &p),
            });
        if let Err(err) = written {
            tracing::warn!("{}: cannot write the index cache entry: {err}", p.display());
            let _ = fs::remove_file(&tmp);
            return;
        }
        {
            let mut t = self.total.lock().unwrap();
            *t = (*t + bytes.len() as u64).saturating_sub(old);
        }
        self.evict_if_over();
    }

    /// Records that the store confirmed the entry of `url` now (sets its modification time).
    pub fn touch(&self, url: &str) {
        let p = self.path_of(url);
        if let Ok(f) = fs::File::options().append(true).open(&p) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Deletes the entry of `url` (its bundle changed in the store).
    pub fn drop_entry(&self, url: &str) {
        let p = self.path_of(url);
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        self.remove(&p, len);
    }

    /// Bytes of entries, as counted by this process.
    pub fn total(&self) -> u64 {
        *self.total.lock().unwrap()
    }

    fn remove(&self, p: &Path, len: u64) {
        if fs::remove_file(p).is_ok() {
            let mut t = self.total.lock().unwrap();
            *t = t.saturating_sub(len);
        }
    }

    /// Entry files: (path, length, modification time).
    fn files(&self) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
        let mut v = Vec::new();
        for d in fs::read_dir(&self.dir).at(&self.dir)? {
            let d = d.at(&self.dir)?;
            let p = d.path();
            if p.extension().and_then(|e| e.to_str()) != Some("idx") {
                continue;
            }
            if let Ok(m) = d.metadata() {
                v.push((p, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        Ok(v)
    }

    fn evict_if_over(&self) {
        if self.total() <= self.limit {
            return;
        }
        let Ok(mut files) = self.files() else { return };
        files.sort_by_key(|(_, _, t)| *t);
        let mut total: u64 = files.iter().map(|(_, l, _)| l).sum();
        let goal = self.limit / 10 * 9;
        for (p, len, _) in files {
            if total <= goal {
                break;
            }
            if fs::remove_file(&p).is_ok() {
                total -= len;
            }
        }
        *self.total.lock().unwrap() = total;
    }
}

fn encode(url: &str, e: &DiskEntry) -> Vec<u8> {
    let mut b = Vec::with_capacity(e.head.len() + 256);
    b.extend_from_slice(MAGIC);
    for s in [url, e.etag.as_str()] {
        b.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_le_bytes());
        b.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
    }
    b.extend_from_slice(&e.size.to_le_bytes());
    let ns = e
        .mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    b.extend_from_slice(&ns.to_le_bytes());
    b.extend_from_slice(&(e.head.len() as u32).to_le_bytes());
    b.extend_from_slice(&e.head);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8], url: &str) -> std::result::Result<DiskEntry, String> {
    if b.len() < MAGIC.len() + 4 || &b[..MAGIC.len()] != MAGIC {
        return Err("not an index cache entry".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let want = u32::from_le_bytes(crc.try_into().unwrap());
    let got = crc32fast::hash(body);
    if want != got {
        return Err(format!("CRC-32 {got:08x}, stored {want:08x}"));
    }
    let mut r = Reader {
        b: body,
        pos: MAGIC.len(),
    };
    let stored_url = r.string()?;
    if stored_url != url {
        return Err(format!("holds {stored_url}"));
    }
    let etag = r.string()?;
    let size = u64::from_le_bytes(r.take(8)?.try_into().unwrap());
    let ns = i64::from_le_bytes(r.take(8)?.try_into().unwrap());
    let n = u32::from_le_bytes(r.take(4)?.try_into().unwrap()) as usize;
    let head = Bytes::copy_from_slice(r.take(n)?);
    if r.pos != body.len() {
        return Err(format!("{} bytes after the index", body.len() - r.pos));
    }
    Ok(DiskEntry {
        etag,
        size,
        mtime: SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64),
        head,
        age: Duration::ZERO,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let s = self.b.get(self.pos..self.pos + n).ok_or("truncated")?;
        self.pos += n;
        Ok(s)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "not UTF-8".to_string())
    }
}

/// Refuses a `--cache-size` below one entry, naming the value.
pub fn check_limit(limit: u64) -> Result<u64> {
    if limit < 256 << 10 {
        return Err(Error::invalid(format!(
            "--cache-size {limit}: below one bundle index entry (about 129 KiB); give at least 256k"
        )));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> DiskEntry {
        DiskEntry {
            etag: format!("\"etag-{n}\""),
            size: 200_000,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            head: Bytes::from(vec![n; 131_136]),
            age: Duration::ZERO,
        }
    }

    #[test]
    fn an_entry_reads_back_and_a_damaged_one_is_deleted() {
        let d = tempfile::tempdir().unwrap();
        let c = DiskCache::open(d.path(), DEFAULT_CACHE_SIZE).unwrap();
        let url = "s3://b/p/_alllayers/L00/R0000C0000.bundle";
        assert_eq!(c.get(url), None);
        c.put(url, &entry(7));
        let got = c.get(url).unwrap();
        assert_eq!(got.head, entry(7).head);
        assert_eq!(got.etag, entry(7).etag);
        assert_eq!(got.mtime, entry(7).mtime);
        assert!(got.age < Duration::from_secs(5));
        // Another object's URL is not served this entry.
        assert_eq!(c.get("s3://b/q/_alllayers/L00/R0000C0000.bundle"), None);
        // One flipped byte in the index: the checksum catches it, the entry is deleted.
        let p = c.path_of(url);
        let mut b = fs::read(&p).unwrap();
        b[1000] ^= 1;
        fs::write(&p, b).unwrap();
        assert_eq!(c.get(url), None);
        assert!(!p.exists());
    }

    #[test]
    fn the_folder_is_kept_under_its_limit_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let one = encode("s3://b/p/x", &entry(0)).len() as u64;
        let c = DiskCache::open(d.path(), 3 * one + one / 2).unwrap();
        let urls: Vec<String> = (0..6)
            .map(|i| format!("s3://b/p/_alllayers/L01/R0000C{i:04x}.bundle"))
            .collect();
        for (i, u) in urls.iter().enumerate() {
            c.put(u, &entry(i as u8));
            // Distinct confirmation times, oldest first.
            let f = fs::File::options().append(true).open(c.path_of(u)).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(100 - i as u64))
                .unwrap();
        }
        assert!(c.total() <= 3 * one + one / 2, "{} > limit", c.total());
        let on_disk: u64 = c.files().unwrap().iter().map(|(_, l, _)| l).sum();
        assert_eq!(on_disk, c.total());
        // The newest entry is kept, the oldest went.
        assert!(c.get(&urls[5]).is_some());
        assert!(c.get(&urls[0]).is_none());
    }
}
