//! Caches addressed by URL instead of a local folder: `s3://BUCKET/PREFIX` (an S3-compatible object
//! store, `cache::store::object`). The URL holds no secret: endpoint, region and credentials come
//! from the standard `AWS_*` environment variables (see `doc/object-store.md`).

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// URL schemes of object stores that bundlefs knows of but does not serve (yet); refused by name.
const UNSUPPORTED_SCHEMES: &[&str] =
    &["az", "azure", "abfs", "abfss", "gs", "gcs", "http", "https"];

/// A cache in an S3-compatible object store: `s3://BUCKET/PREFIX`. Keys below the prefix mirror
/// the folder layout (`PREFIX/conf.xml`, `PREFIX/_alllayers/L05/R0080C0100.bundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    /// The bucket name (path-style addressing; no dots or slashes needed).
    pub bucket: String,
    /// The key prefix of the cache, without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
}

impl ObjectUrl {
    /// Parses `s3://BUCKET[/PREFIX]`. `Ok(None)` for anything that is not a URL (a local path);
    /// an error for a URL bundlefs cannot serve (another scheme, no bucket, empty key segments).
    pub fn parse(s: &str) -> Result<Option<ObjectUrl>> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(None);
        };
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let shown = redact(s);
        let s = shown.as_str();
        let scheme_lc = scheme.to_ascii_lowercase();
        if scheme_lc != "s3" {
            let known = UNSUPPORTED_SCHEMES.contains(&scheme_lc.as_str());
            return Err(Error::invalid(format!(
                "{s}: {} URL scheme `{scheme}://`; bundlefs serves caches in local folders and \
                 in S3-compatible object stores (s3://BUCKET/PREFIX)",
                if known { "unsupported" } else { "unknown" }
            )));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!(
                "{s}: no bucket (s3://BUCKET/PREFIX)"
            )));
        }
        if bucket.contains(['?', '#', '@', ':']) {
            return Err(Error::invalid(format!(
                "{s}: the bucket name has a character not allowed in bucket names (`?`, `#`, `@` \
                 or `:`); options and credentials go in AWS_* environment variables, not in the URL"
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
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// True when `p` is written as a URL (`scheme://…`), i.e. not a local path.
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
