//! Caches addressed by URL instead of a local folder: `s3://BUCKET/PREFIX` (an S3-compatible object
//! store) or `az://CONTAINER/PREFIX` (Azure Blob Storage), both served by `cache::store::object`.
//! The URL holds no secret: endpoint, region and credentials come from the standard `AWS_*` or
//! `AZURE_*` environment variables (see `doc/object-store.md`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// URL schemes of object stores that bundlefs knows of but does not serve (yet); refused by name.
const UNSUPPORTED_SCHEMES: &[&str] = &["azure", "abfs", "abfss", "gs", "gcs", "http", "https"];

/// The kind of object store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `s3://`: Amazon S3 and S3-compatible stores (Ceph RGW, MinIO, Garage …).
    S3,
    /// `az://`: Azure Blob Storage (and the Azurite emulator); the "bucket" is the container.
    Azure,
}

impl Scheme {
    /// The URL scheme as written (`s3`, `az`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Azure => "az",
        }
    }

    /// The environment variables the store's client reads its settings from, for messages.
    pub fn env_vars(self) -> &'static str {
        match self {
            Scheme::S3 => "AWS_*",
            Scheme::Azure => "AZURE_*",
        }
    }
}

/// A cache in an object store: `s3://BUCKET/PREFIX` or `az://CONTAINER/PREFIX`. Keys below the
/// prefix mirror the folder layout (`PREFIX/conf.xml`, `PREFIX/_alllayers/L05/R0080C0100.bundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    /// Which kind of store.
    pub scheme: Scheme,
    /// The bucket (S3; path-style addressing) or container (Azure) name.
    pub bucket: String,
    /// The key prefix of the cache, without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
}

impl ObjectUrl {
    /// Parses `s3://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]`. `Ok(None)` for anything that
    /// is not a URL (a local path); an error for a URL bundlefs cannot serve (another scheme, no
    /// bucket, empty key segments).
    pub fn parse(s: &str) -> Result<Option<ObjectUrl>> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(None);
        };
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let shown = redact(s);
        let s = shown.as_str();
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "s3" => Scheme::S3,
            "az" => Scheme::Azure,
            other => {
                let known = UNSUPPORTED_SCHEMES.contains(&other);
                return Err(Error::invalid(format!(
                    "{s}: {} URL scheme `{scheme}://`; bundlefs serves caches in local folders, \
                     in S3-compatible object stores (s3://BUCKET/PREFIX) and in Azure Blob \
                     Storage (az://CONTAINER/PREFIX)",
                    if known { "unsupported" } else { "unknown" }
                )));
            }
        };
        let what = match kind {
            Scheme::S3 => "bucket",
            Scheme::Azure => "container",
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!(
                "{s}: no {what} ({}://{}/PREFIX)",
                kind.as_str(),
                what.to_ascii_uppercase()
            )));
        }
        if bucket.contains(['?', '#', '@', ':']) {
            return Err(Error::invalid(format!(
                "{s}: the {what} name has a character not allowed in {what} names (`?`, `#`, `@` \
                 or `:`); options and credentials go in {} environment variables, not in the URL",
                kind.env_vars()
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|seg| seg == "." || seg == "..")
            || (!prefix.is_empty() && prefix.split('/').any(str::is_empty))
        {
            return Err(Error::invalid(format!(
                "{s}: prefix `{prefix}` has an empty, `.` or `..` segment"
            )));
        }
        Ok(Some(ObjectUrl {
            scheme: kind,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    /// [`ObjectUrl::parse`] of a path given on a command line (`s3://…` arrives as a path).
    pub fn from_path(p: &Path) -> Result<Option<ObjectUrl>> {
        match p.to_str() {
            Some(s) => Self::parse(s),
            None => Ok(None),
        }
    }

    /// The key of `rel` (a `/`-separated path relative to the cache) below the prefix.
    pub fn key(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        }
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_str();
        if self.prefix.is_empty() {
            write!(f, "{scheme}://{}", self.bucket)
        } else {
            write!(f, "{scheme}://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where a cache lives: a folder on this machine or a prefix in an object store. Parsed once,
/// where a path enters (the command line, a job's destination), and passed down; what differs
/// between the two is asked of the cache ([`crate::cache::Cache`]'s folder questions:
/// `level_exists`, `level_mtime`, `make_level`, `sync_all`, …), never by testing a path string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local folder (or a file in it: conf.xml, root.json, a package).
    Folder(PathBuf),
    /// `s3://BUCKET/PREFIX` or `az://CONTAINER/PREFIX`.
    Store(ObjectUrl),
    /// One file holding every tile: an MBTiles file (`*.mbtiles`), a GeoPackage (`*.gpkg`) or a
    /// PMTiles file (`*.pmtiles`, read only; also an object `s3://…/X.pmtiles` read by range
    /// requests, as [`crate::cache::Cache::open`] opens it: this holds its URL then).
    File(PathBuf),
}

/// Whether `p` names an MBTiles file (`.mbtiles`, any case).
pub fn is_mbtiles(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("mbtiles"))
}

/// Whether `p` names a GeoPackage (`.gpkg`, any case).
pub fn is_geopackage(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("gpkg"))
}

/// Whether `p` names a file that holds a whole cache as records ([`is_mbtiles`],
/// [`is_geopackage`], [`is_pmtiles`]): a [`Location::File`].
pub fn is_tile_file(p: &Path) -> bool {
    is_mbtiles(p) || is_geopackage(p) || is_pmtiles(p)
}

/// Whether `p` names a PMTiles file (`.pmtiles`, any case).
pub fn is_pmtiles(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("pmtiles"))
}

impl Location {
    /// `p` as given on a command line: a URL of a store bundlefs serves, else a local path.
    /// Errors: a URL bundlefs cannot serve (another scheme, no bucket, bad segments), by name.
    pub fn parse(p: &Path) -> Result<Location> {
        Ok(match ObjectUrl::from_path(p)? {
            Some(u) => Location::Store(u),
            None if is_tile_file(p) => Location::File(p.to_path_buf()),
            None => Location::Folder(p.to_path_buf()),
        })
    }

    /// Whether the cache is in an object store.
    pub fn is_store(&self) -> bool {
        matches!(self, Location::Store(_))
    }

    /// Whether the cache is a folder of folders and files (not a store, not one file).
    pub fn is_folder(&self) -> bool {
        matches!(self, Location::Folder(_))
    }

    /// The location as a path, for messages and for the path-keyed APIs (`s3://b/p` as written).
    pub fn path(&self) -> PathBuf {
        match self {
            Location::Folder(p) | Location::File(p) => p.clone(),
            Location::Store(u) => PathBuf::from(u.to_string()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Folder(p) | Location::File(p) => write!(f, "{}", p.display()),
            Location::Store(u) => write!(f, "{u}"),
        }
    }
}

/// True when `p` is written as a URL (`scheme://…`), i.e. not a local path. For the cache layer
/// only (`scripts/check-layers.py` refuses it above `cache/`): above it, ask a [`Location`].
pub fn is_url(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        s.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
        })
    })
}

/// `s` with any user information (`user:password@`) of its authority replaced by `***@`, for
/// messages: secrets never appear in logs or errors.
fn redact(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let u = ObjectUrl::parse("s3://tiles/world/cache/")
            .unwrap()
            .unwrap();
        assert_eq!(u.bucket, "tiles");
        assert_eq!(u.prefix, "world/cache");
        assert_eq!(u.key("conf.xml"), "world/cache/conf.xml");
        assert_eq!(u.to_string(), "s3://tiles/world/cache");
        let root = ObjectUrl::parse("s3://tiles").unwrap().unwrap();
        assert_eq!(root.prefix, "");
        assert_eq!(root.key("conf.xml"), "conf.xml");
        let az = ObjectUrl::parse("az://maps/world").unwrap().unwrap();
        assert_eq!((az.scheme, az.bucket.as_str()), (Scheme::Azure, "maps"));
        assert_eq!(az.to_string(), "az://maps/world");
        assert_eq!(u.scheme, Scheme::S3);
    }

    #[test]
    fn local_paths_are_not_urls() {
        assert_eq!(ObjectUrl::parse("/data/cache").unwrap(), None);
        assert_eq!(ObjectUrl::parse("cache/s3://x").unwrap(), None);
        assert!(!is_url(Path::new("/data/cache")));
        assert!(is_url(Path::new("s3://b/p")));
    }

    #[test]
    fn refuses_other_schemes_and_bad_urls_by_name() {
        let e = ObjectUrl::parse("gs://b/p").unwrap_err().to_string();
        assert!(e.contains("unsupported URL scheme `gs://`"), "{e}");
        let e = ObjectUrl::parse("s3:///p").unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
        let e = ObjectUrl::parse("az:///p").unwrap_err().to_string();
        assert!(e.contains("no container (az://CONTAINER/PREFIX)"), "{e}");
        let e = ObjectUrl::parse("az://k:s@c/p").unwrap_err().to_string();
        assert!(
            e.contains("AZURE_* environment") && !e.contains(":s@"),
            "{e}"
        );
        let e = ObjectUrl::parse("s3://key:secret@b/p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_* environment"), "{e}");
        assert!(!e.contains("secret"), "a secret in an error: {e}");
        let e = ObjectUrl::parse("https://u:pw@host/b")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw"), "a secret in an error: {e}");
        let e = ObjectUrl::parse("s3://b/a/../c").unwrap_err().to_string();
        assert!(e.contains("`..`"), "{e}");
    }
}
