//! Names on disk whatever their case: ArcGIS on Windows (a file system that ignores case) leaves
//! caches with `l05/`, `R0080C0A00.BUNDLE` or `r0000001f/c0000002a.PNG`; the cache builds the
//! canonical name ([`crate::format::exploded`]) and this module finds the entry that spells it.
//!
//! The exact name costs one `lstat`. Only when it is missing is the folder's listing consulted:
//! read once and kept (up to [`KEPT_FOLDERS`] folders) until the folder's modification time
//! changes. Two spellings of one name in one folder are ambiguous: the canonical path is returned
//! (as if none existed), `Cache::open` refuses such caches and `verify` names both.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lru::LruCache;

/// How many folders' listings are kept for lookups of other spellings.
pub const KEPT_FOLDERS: usize = 1024;

/// A folder's entries by lower-case name: the one spelling on disk, or None when two spell it.
type Spellings = HashMap<String, Option<String>>;

/// Kept listings: folder → (its modification time when read, its spellings).
type Listings = LruCache<PathBuf, (SystemTime, Arc<Spellings>)>;

static LISTINGS: Mutex<Option<Listings>> = Mutex::new(None);

/// The entry of `dir` spelling `canonical` in any case (`dir/canonical` itself when it exists or
/// when no other spelling does).
pub fn resolve(dir: &Path, canonical: &str) -> PathBuf {
    find(dir, canonical).unwrap_or_else(|| dir.join(canonical))
}

/// The entry of `dir` spelling `canonical` in any case, if there is one: `dir/canonical` when it
/// exists (one `lstat`), else the folder's kept listing is consulted (a `stat` of `dir`; none
/// when `dir` is missing). Cheaper than [`resolve`] and then a test for existence, which repeats
/// the `stat`s for names that are not there (a lookup of a tile in a bundle not yet written).
pub fn find(dir: &Path, canonical: &str) -> Option<PathBuf> {
    let exact = dir.join(canonical);
    if exact.symlink_metadata().is_ok() {
        return Some(exact);
    }
    spelling(dir, canonical).map(|n| dir.join(n))
}

/// The `.bundlx` index beside a V1 bundle (same base name, extension in any case).
pub fn bundlx_of(bundle: &Path) -> PathBuf {
    let dir = bundle.parent().unwrap_or(Path::new(""));
    let stem = bundle
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    resolve(dir, &format!("{stem}.bundlx"))
}

fn spelling(dir: &Path, canonical: &str) -> Option<String> {
    let mtime = dir.metadata().and_then(|m| m.modified()).ok()?;
    let key = canonical.to_ascii_lowercase();
    {
        let mut g = LISTINGS.lock().unwrap();
        if let Some((t, names)) = g.as_mut().and_then(|c| c.get(dir)) {
            if *t == mtime {
                return names.get(&key).cloned().flatten();
            }
        }
    }
    let mut names: Spellings = HashMap::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Some(n) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        names
            .entry(n.to_ascii_lowercase())
            .and_modify(|v| *v = None)
            .or_insert(Some(n));
    }
    let found = names.get(&key).cloned().flatten();
    let mut g = LISTINGS.lock().unwrap();
    g.get_or_insert_with(|| LruCache::new(NonZeroUsize::new(KEPT_FOLDERS).unwrap()))
        .put(dir.to_path_buf(), (mtime, Arc::new(names)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_other_spellings_and_prefers_the_exact_one() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("l05")).unwrap();
        std::fs::write(d.path().join("R0000C0000.BUNDLE"), b"x").unwrap();
        std::fs::write(d.path().join("R0000C0000.BUNDLX"), b"x").unwrap();
        assert_eq!(resolve(d.path(), "L05"), d.path().join("l05"));
        let b = resolve(d.path(), "R0000C0000.bundle");
        assert_eq!(b, d.path().join("R0000C0000.BUNDLE"));
        assert_eq!(bundlx_of(&b), d.path().join("R0000C0000.BUNDLX"));
        assert_eq!(resolve(d.path(), "L06"), d.path().join("L06"));
        // The exact name wins once it exists (the folder changed: the listing is read again).
        std::fs::create_dir(d.path().join("L06")).unwrap();
        assert_eq!(resolve(d.path(), "L06"), d.path().join("L06"));
        std::fs::create_dir(d.path().join("L05")).unwrap();
        assert_eq!(resolve(d.path(), "L05"), d.path().join("L05"));
    }

    #[test]
    fn two_spellings_are_not_guessed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("l07")).unwrap();
        std::fs::create_dir(d.path().join("L07")).unwrap();
        // Both exist: the exact name is taken.
        assert_eq!(resolve(d.path(), "L07"), d.path().join("L07"));
        std::fs::write(d.path().join("a.PNG"), b"").unwrap();
        std::fs::write(d.path().join("a.Png"), b"").unwrap();
        // Neither is the exact name: no guess, the canonical path (which does not exist).
        assert_eq!(resolve(d.path(), "a.png"), d.path().join("a.png"));
    }
}
