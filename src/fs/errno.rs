//! File-system errors and their errno: what a call on the tree can end in, typed, and the one place
//! where a library [`Error`] becomes the errno a FUSE reply carries.

use crate::Error;

/// Result of a call on the tree.
pub type FsResult<T> = std::result::Result<T, FsError>;

/// What a call on the tree can end in. Each variant names the path (inside the tree) or the inode
/// at fault, and knows its errno ([`ToErrno`]); cache errors keep their own message and file.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file or folder, or an inode the tree does not (or no longer) know (ENOENT).
    #[error("{0}: no such file or folder")]
    NotFound(String),
    /// A change asked of a read-only mount (EROFS).
    #[error("{0}: read-only mount")]
    ReadOnly(String),
    /// A name that may not be created here: not a tile name (`Cxxxxxxxx.png|jpg`), not a
    /// temporary name (`.*`), not a level or row folder name (EPERM).
    #[error("{path}: {why}")]
    NotPermitted {
        /// The path in the tree.
        path: String,
        /// What is allowed instead.
        why: std::borrow::Cow<'static, str>,
    },
    /// The name exists already (EEXIST).
    #[error("{0}: exists")]
    Exists(String),
    /// A file operation on a folder (EISDIR).
    #[error("{0}: is a folder")]
    IsDir(String),
    /// A folder operation on a file (ENOTDIR).
    #[error("{0}: not a folder")]
    NotDir(String),
    /// A folder removed while it holds tiles or files being written (ENOTEMPTY).
    #[error("{0}: folder not empty")]
    NotEmpty(String),
    /// A folder moved, or a file moved out of the row folders: bundles cannot move, so the kernel
    /// is told to copy (EXDEV makes `mv` copy and delete).
    #[error("{0}: cannot be moved inside the mount (copied instead)")]
    CrossDevice(String),
    /// Bytes written under a tile name that are not a tile the cache can store (wrong kind, bad
    /// size, undecodable image, a merge that failed). Nothing stored changed (EINVAL).
    #[error("{path}: not stored: {source}")]
    BadTile {
        /// The path in the tree the tile was written under.
        path: String,
        /// Why the cache refused it.
        #[source]
        source: Error,
    },
    /// A value the tree does not support, named (a level outside the tiling scheme, a rename
    /// flag, a name that is not UTF-8) (EINVAL).
    #[error("{what}: {why}")]
    Invalid {
        /// The path or value at fault.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A write past the largest tile, 2^24-1 bytes (the Compact V2 index's 24-bit size field,
    /// FORMATS.md) (EFBIG).
    #[error("{0}: tiles hold at most 2^24-1 bytes")]
    TooBig(String),
    /// A write to a file that is not open for writing (EBADF).
    #[error("inode {0}: not open for writing")]
    NotOpenForWriting(u64),
    /// A read on a file handle the tree does not know (EBADF).
    #[error("file handle {0}: not open")]
    BadHandle(u64),
    /// A call the tree answers "never ask again" to (ENOSYS): the kernel then stops sending it
    /// (open on read-only mounts with FUSE_NO_OPEN_SUPPORT, flush on read-only mounts, xattrs).
    #[error("{0}: not implemented (the kernel stops asking)")]
    NotImplemented(&'static str),
    /// An error of the cache below (I/O, a broken bundle, a lock, a source that failed).
    #[error(transparent)]
    Cache(#[from] Error),
}

impl FsError {
    /// A missing file or folder, named.
    pub fn not_found(what: impl std::fmt::Display) -> FsError {
        FsError::NotFound(what.to_string())
    }

    /// Whether this is "no such file or folder", from the tree or from the cache below.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            FsError::NotFound(_) | FsError::Cache(Error::NotFound(_))
        )
    }
}

/// The errno a file-system call replies with for an error (`libc::E*`, positive).
pub trait ToErrno {
    /// The errno, positive (`libc::ENOENT`…).
    fn errno(&self) -> i32;
}

impl ToErrno for FsError {
    fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => libc::ENOENT,
            FsError::ReadOnly(_) => libc::EROFS,
            FsError::NotPermitted { .. } => libc::EPERM,
            FsError::Exists(_) => libc::EEXIST,
            FsError::IsDir(_) => libc::EISDIR,
            FsError::NotDir(_) => libc::ENOTDIR,
            FsError::NotEmpty(_) => libc::ENOTEMPTY,
            FsError::CrossDevice(_) => libc::EXDEV,
            FsError::BadTile { .. } => libc::EINVAL,
            FsError::Invalid { .. } => libc::EINVAL,
            FsError::TooBig(_) => libc::EFBIG,
            FsError::NotOpenForWriting(_) | FsError::BadHandle(_) => libc::EBADF,
            FsError::NotImplemented(_) => libc::ENOSYS,
            FsError::Cache(e) => e.errno(),
        }
    }
}

/// The cache's errors as a file-system call reports them: the OS error of a failed I/O call as it
/// is (ENOSPC stays ENOSPC), EIO for a broken file or a failed source (the tile is unreadable,
/// the rest of the tree keeps working), EAGAIN for a bundle locked by another writer, EINVAL for
/// a refused request, ENOENT for what does not exist.
impl ToErrno for Error {
    fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Format { .. } => libc::EIO,
            Error::Locked { .. } => libc::EAGAIN,
            Error::Invalid(_) => libc::EINVAL,
            Error::NotFound(_) => libc::ENOENT,
            Error::Source { .. } => libc::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_errno() {
        let io = |code| {
            Error::io(
                "/c/L01/R0000C0000.bundle",
                std::io::Error::from_raw_os_error(code),
            )
        };
        let cases: Vec<(FsError, i32)> = vec![
            (FsError::not_found("L01/R00000000"), libc::ENOENT),
            (FsError::ReadOnly("L01".into()), libc::EROFS),
            (
                FsError::NotPermitted {
                    path: "notes.txt".into(),
                    why: "not a tile name".into(),
                },
                libc::EPERM,
            ),
            (FsError::Exists("L01".into()), libc::EEXIST),
            (FsError::IsDir("L01".into()), libc::EISDIR),
            (FsError::NotDir("conf.xml".into()), libc::ENOTDIR),
            (FsError::NotEmpty("L01".into()), libc::ENOTEMPTY),
            (FsError::CrossDevice("L01".into()), libc::EXDEV),
            (
                FsError::BadTile {
                    path: "C00000001.png".into(),
                    source: Error::invalid("not an image"),
                },
                libc::EINVAL,
            ),
            (FsError::TooBig("inode 9".into()), libc::EFBIG),
            (FsError::NotOpenForWriting(9), libc::EBADF),
            (FsError::BadHandle(9), libc::EBADF),
            (FsError::NotImplemented("flush"), libc::ENOSYS),
            // Cache errors keep the OS error of the failed call, else EIO.
            (FsError::Cache(io(libc::ENOSPC)), libc::ENOSPC),
            (
                FsError::Cache(Error::io("/c/x", std::io::Error::other("short read"))),
                libc::EIO,
            ),
            (
                FsError::Cache(Error::Locked {
                    path: "/c/b.lck".into(),
                    waited_ms: 5,
                }),
                libc::EAGAIN,
            ),
            (FsError::Cache(Error::source("wms", "HTTP 500")), libc::EIO),
            (FsError::Cache(Error::NotFound("L09".into())), libc::ENOENT),
        ];
        for (e, want) in cases {
            assert_eq!(e.errno(), want, "{e}");
        }
    }

    #[test]
    fn not_found_from_either_layer() {
        assert!(FsError::not_found("x").is_not_found());
        assert!(FsError::Cache(Error::NotFound("x".into())).is_not_found());
        assert!(!FsError::Cache(Error::invalid("x")).is_not_found());
        assert!(!FsError::Exists("x".into()).is_not_found());
    }

    #[test]
    fn messages_name_the_path() {
        let e = FsError::BadTile {
            path: "_alllayers/L01/R00000000/C00000001.png".into(),
            source: Error::invalid("tile 1/0/1: not an image"),
        };
        assert_eq!(
            e.to_string(),
            "_alllayers/L01/R00000000/C00000001.png: not stored: tile 1/0/1: not an image"
        );
    }
}
