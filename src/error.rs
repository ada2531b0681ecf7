//! Error type shared by every layer: each variant names the file (and entry) at fault. The errno a
//! file-system call replies with is the mount's concern (`fs::errno`).

use std::io;
use std::path::{Path, PathBuf};

use crate::format::FormatError;

/// Result alias used across bundlefs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `n` and `noun` for a message or summary, the noun plural unless `n` is 1: `count(1, "bundle")`
/// is "1 bundle", `count(0, "tile")` "0 tiles". `noun` is a regular English noun (an `s` is added).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Everything that can go wrong reading or writing a cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file's bytes break its format (bundle, bundlx, conf.xml, tile name…).
    #[error("{}: {source}", path.display())]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    /// Another writer holds the bundle's lock file longer than we wait.
    #[error("{}: locked by another writer (waited {waited_ms} ms)", path.display())]
    Locked { path: PathBuf, waited_ms: u64 },
    /// The request is wrong (bad option, tile outside the scheme, format mismatch…).
    #[error("{0}")]
    Invalid(String),
    /// No such tile/level/file.
    #[error("{0}: not found")]
    NotFound(String),
    /// A tile source (map server, resampling…) failed to produce a tile; `what` names the source or
    /// URL. `retryable` marks failures that may pass on a second try (timeouts, 5xx, dropped connections).
    #[error("{what}: {msg}")]
    Source {
        what: String,
        msg: String,
        retryable: bool,
    },
}

impl Error {
    /// An I/O failure on `path`.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A format error in the file at `path`.
    pub fn format(path: impl AsRef<Path>, source: FormatError) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A refused request, with the message the user sees.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// A source failure that a retry will not fix (bad image, HTTP 4xx…).
    pub fn source(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Source {
            what: what.into(),
            msg: msg.into(),
            retryable: false,
        }
    }
}

/// Adds the path to an `io::Result`.
pub trait IoContext<T> {
    /// The error as [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Adds the path to a format result.
pub trait FormatContext<T> {
    /// The error as [`Error::Format`] naming `path`.
    fn in_file(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> FormatContext<T> for std::result::Result<T, FormatError> {
    fn in_file(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::format(path, e))
    }
}
