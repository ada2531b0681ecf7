//! The tree as a mount serves it: every call the kernel makes, answered with what the reply needs
//! (entries with their TTL, negative entries, opens with their flags, listings per handle, read
//! snapshots) and typed errors. Kernel-free, so the policy is tested without a mount; `fuse`
//! only forwards to it and replies.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::errno::{FsError, FsResult};
use super::handles::Handles;
use super::inode::{Node, ROOT_INO};
use super::write::WRITE_FH;
use super::{Attr, DirEntry, FileBytes, Kind, StatFs, TreeFs};

/// How long the kernel may keep what it is told, and whether users may write.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Entry and attribute time-to-live given to the kernel (`--ttl`).
    pub ttl: Duration,
    /// How long the kernel may remember that a name in a row does not exist (0: not at all).
    pub negative_ttl: Duration,
    /// A read-only mount (no `-o rw`).
    pub read_only: bool,
}

/// A name's attributes and how long the kernel may keep them. `attr.ino == 0` is a negative
/// entry: the name does not exist, and the kernel may remember that for `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The name's attributes (inode 0: it does not exist).
    pub attr: Attr,
    /// How long the kernel may keep them.
    pub ttl: Duration,
}

/// How the kernel should treat an open file or folder (the FOPEN_* reply flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// FOPEN_KEEP_CACHE: the pages cached from earlier opens stay valid.
    pub keep_cache: bool,
    /// FOPEN_CACHE_DIR: the kernel may cache the folder's listing.
    pub cache_dir: bool,
    /// FOPEN_DIRECT_IO: no page cache; every read reaches the daemon.
    pub direct_io: bool,
}

/// An open handle and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The file handle the kernel passes back with each call on the open file.
    pub fh: u64,
    /// How the kernel should cache it.
    pub flags: OpenFlags,
}

/// How a file is opened (from the open(2) flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    /// O_TRUNC.
    pub truncate: bool,
}

/// rename(2) flags (renameat2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameMode {
    /// RENAME_NOREPLACE: fail with EEXIST if the target exists.
    pub no_replace: bool,
    /// RENAME_EXCHANGE: swap the two names (not supported).
    pub exchange: bool,
    /// RENAME_WHITEOUT: overlay file systems' whiteout (not supported).
    pub whiteout: bool,
}

/// One folder entry as a reply lists it: `next` is the offset the kernel passes to continue
/// after it.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// The offset of the entry after this one.
    pub next: u64,
    /// The name.
    pub name: &'a str,
    /// Its attributes (readdir uses only the inode and kind).
    pub attr: Attr,
    /// How long the kernel may keep them (readdirplus).
    pub ttl: Duration,
}

/// A folder's listing from an offset: `.`, `..`, then the entries the handle keeps.
pub struct Listing {
    dots: [Attr; 2],
    list: Arc<Vec<DirEntry>>,
    offset: u64,
    policy: Policy,
}

impl Listing {
    /// The entries from the offset asked, with the offset after each and its TTL.
    pub fn entries(&self) -> impl Iterator<Item = Listed<'_>> {
        let dots = ["."; 1]
            .into_iter()
            .chain([".."])
            .zip(self.dots.iter().copied());
        dots.chain(self.list.iter().map(|e| (e.name.as_str(), e.attr)))
            .enumerate()
            .skip(self.offset.min(usize::MAX as u64) as usize)
            .map(|(i, (name, attr))| Listed {
                next: i as u64 + 1,
                name,
                attr,
                ttl: self.policy.entry_ttl(&attr),
            })
    }
}

impl Policy {
    /// The TTL of an entry: none for a file of size 0, whose bytes are not known yet (a
    /// renderable name, a broken entry), so the kernel looks it up (and gets the real size)
    /// before use; `ttl` for the rest.
    pub fn entry_ttl(&self, a: &Attr) -> Duration {
        if a.kind == Kind::File && a.size == 0 {
            Duration::ZERO
        } else {
            self.ttl
        }
    }

    /// The folder open flags: row folders change only through bundle changes, which the watcher
    /// invalidates, so the kernel keeps their listings; other folders are listed afresh.
    pub fn dir_flags(&self, n: Node) -> OpenFlags {
        match n {
            Node::Row { .. } => OpenFlags {
                keep_cache: true,
                cache_dir: true,
                direct_io: false,
            },
            _ => OpenFlags::default(),
        }
    }
}

/// Answers the kernel's calls over a [`TreeFs`].
pub struct MountFs {
    tree: Arc<TreeFs>,
    policy: Policy,
    handles: Handles,
    /// The kernel granted FUSE_NO_OPEN_SUPPORT (read-only mounts ask for it).
    no_open: AtomicBool,
}

/// A name that is not UTF-8 cannot name a level, row or tile.
fn utf8(name: &OsStr, missing: bool) -> FsResult<&str> {
    name.to_str().ok_or_else(|| {
        let shown = name.to_string_lossy().into_owned();
        if missing {
            FsError::NotFound(shown)
        } else {
            FsError::Invalid {
                what: shown,
                why: "names in the tree are ASCII".into(),
            }
        }
    })
}

impl MountFs {
    /// Serves `tree` with `policy`.
    pub fn new(tree: Arc<TreeFs>, policy: Policy) -> MountFs {
        MountFs {
            tree,
            policy,
            handles: Handles::default(),
            no_open: AtomicBool::new(false),
        }
    }

    /// The tree served.
    pub fn tree(&self) -> &Arc<TreeFs> {
        &self.tree
    }

    /// The mount's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The open handles (folder listings, read snapshots).
    pub fn handles(&self) -> &Handles {
        &self.handles
    }

    /// Whether to ask the kernel for FUSE_NO_OPEN_SUPPORT: once `open` answers ENOSYS the
    /// kernel stops sending open/release and keeps each file's page cache across opens (as
    /// FOPEN_KEEP_CACHE), so a warm re-read never reaches the daemon. Read-only mounts take it;
    /// writable ones need open for O_TRUNC and write handles.
    pub fn wants_no_open(&self) -> bool {
        self.policy.read_only
    }

    /// Records whether the kernel granted FUSE_NO_OPEN_SUPPORT.
    pub fn set_no_open(&self, granted: bool) {
        self.no_open.store(granted, Ordering::Relaxed);
    }

    fn entry(&self, attr: Attr) -> Entry {
        Entry {
            attr,
            ttl: self.policy.ttl,
        }
    }

    /// Looks a name up. A missing file in a row folder is a negative entry (inode 0) the kernel
    /// keeps for `negative_ttl`, so rsync's repeated checks of a name it is about to write, and
    /// walks probing absent tiles, stay in the kernel.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let name = utf8(name, true)?;
        match self.tree.lookup(parent, name) {
            Ok(a) => Ok(self.entry(a)),
            Err(e)
                if e.is_not_found()
                    && !self.policy.negative_ttl.is_zero()
                    && matches!(self.tree.inodes.node(parent), Some(Node::Row { .. })) =>
            {
                Ok(Entry {
                    attr: Attr {
                        ino: 0,
                        kind: Kind::File,
                        size: 0,
                        mtime: UNIX_EPOCH,
                        nlink: 0,
                    },
                    ttl: self.policy.negative_ttl,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a lookup may render (and take as long as a render): see
    /// [`TreeFs::lookup_may_render`].
    pub fn lookup_may_render(&self, parent: u64, name: &OsStr) -> bool {
        name.to_str()
            .is_some_and(|n| self.tree.lookup_may_render(parent, n))
    }

    /// Whether a lookup is answered from memory ([`TreeFs::lookup_at_hand`]); false when it may
    /// wait on an object store.
    pub fn lookup_at_hand(&self, parent: u64, name: &OsStr) -> bool {
        name.to_str()
            .is_none_or(|n| self.tree.lookup_at_hand(parent, n))
    }

    /// Whether a read of `ino` through handle `fh` is answered from memory: a snapshot handle,
    /// or [`TreeFs::read_at_hand`].
    pub fn read_at_hand(&self, ino: u64, fh: u64) -> bool {
        Handles::is_snapshot(fh) || self.tree.read_at_hand(ino)
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Entry> {
        self.tree.getattr(ino).map(|a| self.entry(a))
    }

    /// Opens a file. Writing (or O_TRUNC) gets a write handle; read-only mounts refuse it
    /// (EROFS). Reading on a read-only mount: ENOSYS once the kernel granted
    /// FUSE_NO_OPEN_SUPPORT (after checking the file exists, so the first open still fails
    /// right), else handle 0 with FOPEN_KEEP_CACHE. Reading on a writable mount: a tile may be
    /// replaced at any time (rename over it, or a write) and the kernel's size and pages of the
    /// inode are refreshed only later, so the reader gets the whole tile as it was at open, read
    /// directly (FOPEN_DIRECT_IO, no clamp to a stale size): never a mix of two versions, nor
    /// one cut short.
    pub fn open(&self, ino: u64, mode: OpenMode) -> FsResult<Opened> {
        if self.policy.read_only && mode.write {
            return Err(FsError::ReadOnly(format!("inode {ino}")));
        }
        if mode.write || mode.truncate {
            let fh = self.tree.open_write(ino, mode.truncate)?;
            return Ok(Opened {
                fh,
                flags: OpenFlags::default(),
            });
        }
        let a = self.tree.getattr(ino)?;
        if a.kind != Kind::File {
            return Err(FsError::IsDir(format!("inode {ino}")));
        }
        if self.policy.read_only {
            if self.no_open.load(Ordering::Relaxed) {
                return Err(FsError::NotImplemented("open"));
            }
            return Ok(Opened {
                fh: 0,
                flags: OpenFlags {
                    keep_cache: true,
                    ..OpenFlags::default()
                },
            });
        }
        let bytes = self.tree.read(ino, 0, u32::MAX)?;
        Ok(Opened {
            fh: self.handles.open_snapshot(bytes),
            flags: OpenFlags {
                direct_io: true,
                ..OpenFlags::default()
            },
        })
    }

    /// Up to `size` bytes from `offset`: of the snapshot if `fh` is one, else of the file now.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<FileBytes> {
        if Handles::is_snapshot(fh) {
            let snap = self.handles.snapshot(fh).ok_or(FsError::BadHandle(fh))?;
            return Ok(FileBytes::Snapshot(snap).window(offset, size));
        }
        self.tree.read(ino, offset, size)
    }

    /// Opens a folder. Its listing is made at the handle's first readdir, not here: when the
    /// kernel still holds a row's listing (FOPEN_CACHE_DIR), no readdir comes and nothing is
    /// built.
    pub fn opendir(&self, ino: u64) -> FsResult<Opened> {
        let node = self
            .tree
            .inodes
            .node(ino)
            .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
        Ok(Opened {
            fh: self.handles.open_dir(),
            flags: self.policy.dir_flags(node),
        })
    }

    /// The listing of folder handle `fh` from `offset`. `plus` (readdirplus): `.` and `..`
    /// carry the folder's own attributes; else `..` carries the parent's inode (the only field
    /// a plain readdir sends besides the kind).
    pub fn readdir(&self, ino: u64, fh: u64, offset: u64, plus: bool) -> FsResult<Listing> {
        let list = self.handles.listing(fh, || self.tree.readdir(ino))?;
        let dots = if plus {
            let me = self.tree.getattr(ino)?;
            [me, me]
        } else {
            let dir = |ino| Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                mtime: UNIX_EPOCH,
                nlink: 2,
            };
            [dir(ino), dir(self.parent_of(ino))]
        };
        Ok(Listing {
            dots,
            list,
            offset,
            policy: self.policy,
        })
    }

    fn parent_of(&self, ino: u64) -> u64 {
        match self.tree.inodes.node(ino) {
            Some(Node::Row { level, .. }) => self.tree.ino(Node::Level(level)),
            Some(Node::Level(_)) => self.tree.ino(self.tree.levels_parent()),
            Some(Node::Temp(_)) => self.tree.temp_parent(ino).unwrap_or(ROOT_INO),
            _ => ROOT_INO,
        }
    }

    /// Closes folder handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.handles.release_dir(fh)
    }

    /// close(2) of a file: commits what was written (errors reach the closing program).
    /// Read-only mounts have nothing to flush: ENOSYS makes the kernel skip flush on close.
    pub fn flush(&self, ino: u64) -> FsResult<()> {
        if self.policy.read_only {
            return Err(FsError::NotImplemented("flush"));
        }
        self.tree.flush(ino)
    }

    /// Last close of a handle: drops a snapshot, or commits a write handle's file.
    pub fn release(&self, ino: u64, fh: u64) -> FsResult<()> {
        if Handles::is_snapshot(fh) {
            self.handles.release_snapshot(fh);
            return Ok(());
        }
        self.tree.release(ino, fh)
    }

    /// Creates a file in a row folder, open for writing.
    pub fn create(&self, parent: u64, name: &OsStr) -> FsResult<(Entry, Opened)> {
        let a = self.tree.create(parent, utf8(name, false)?)?;
        let opened = Opened {
            fh: WRITE_FH,
            flags: OpenFlags::default(),
        };
        Ok((self.entry(a), opened))
    }

    /// Writes into a file open for writing; the count written.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.tree.write(ino, offset, data)
    }

    /// Changes size and/or modification time (refused on read-only mounts).
    pub fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Entry> {
        if self.policy.read_only && (size.is_some() || mtime.is_some()) {
            return Err(FsError::ReadOnly(format!("inode {ino}")));
        }
        self.tree.setattr(ino, size, mtime).map(|a| self.entry(a))
    }

    /// fsync(2): commits the file and writes its bundle durably.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        self.tree.fsync(ino)
    }

    /// Makes a level or row folder.
    pub fn mkdir(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        self.tree
            .mkdir(parent, utf8(name, false)?)
            .map(|a| self.entry(a))
    }

    /// Removes a file.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.tree.unlink(parent, utf8(name, true)?)
    }

    /// Removes an empty folder.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.tree.rmdir(parent, utf8(name, true)?)
    }

    /// Renames a file. RENAME_EXCHANGE and RENAME_WHITEOUT are refused by name (EINVAL);
    /// RENAME_NOREPLACE fails with EEXIST when the target exists.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        mode: RenameMode,
    ) -> FsResult<()> {
        let (name, newname) = (utf8(name, false)?, utf8(newname, false)?);
        for (set, flag) in [
            (mode.exchange, "RENAME_EXCHANGE"),
            (mode.whiteout, "RENAME_WHITEOUT"),
        ] {
            if set {
                return Err(FsError::Invalid {
                    what: format!("rename {name} -> {newname}"),
                    why: format!("{flag} is not supported"),
                });
            }
        }
        if mode.no_replace && self.tree.lookup(newparent, newname).is_ok() {
            return Err(FsError::Exists(newname.to_string()));
        }
        self.tree.rename(parent, name, newparent, newname)
    }

    /// Space figures of the file system holding the cache.
    pub fn statfs(&self) -> FsResult<StatFs> {
        self.tree.statfs()
    }

    /// The kernel dropped inode `ino`.
    pub fn forget(&self, ino: u64) {
        self.tree.forget(ino)
    }

    /// Unmount: writes everything still buffered.
    pub fn destroy(&self) -> FsResult<()> {
        self.tree.flush_all()
    }

    /// Logs a refused call once, at the level its kind deserves: refusals a user should see
    /// (a name that cannot be made, a level outside the scheme, a tile not stored) at warn;
    /// routine answers (missing names, EEXIST, EXDEV for `mv`, ENOSYS) not at all.
    pub fn log(op: &str, e: &FsError) {
        match e {
            FsError::BadTile { .. }
            | FsError::NotPermitted { .. }
            | FsError::Invalid { .. }
            | FsError::TooBig(_) => tracing::warn!("{op}: {e}"),
            _ => tracing::debug!("{op}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::buffer::WriteBuffer;
    use crate::cache::Cache;
    use crate::format::conf::{TileFormat, TileScheme};
    use crate::format::TileAddr;
    use crate::fs::errno::ToErrno;

    fn png(v: u8) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(256, 256, image::Rgba([v, 2, 3, 255]));
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, image::ImageFormat::Png).unwrap();
        b.into_inner()
    }

    const TTL: Duration = Duration::from_secs(60);
    const NEG: Duration = Duration::from_secs(5);

    /// A cache with tile 2/1/1 stored, served read-only or writable.
    fn mount(read_only: bool) -> (tempfile::TempDir, MountFs) {
        let d = tempfile::tempdir().unwrap();
        let scheme = TileScheme::web_mercator(3, TileFormat::Png);
        let c = Arc::new(Cache::create(d.path(), &scheme, None).unwrap());
        c.write_tiles(&[(TileAddr::new(2, 1, 1), &png(1)[..])])
            .unwrap();
        let tree = if read_only {
            TreeFs::new(c)
        } else {
            TreeFs::writable(Arc::new(WriteBuffer::new(c, 1 << 20)))
        };
        let policy = Policy {
            ttl: TTL,
            negative_ttl: NEG,
            read_only,
        };
        (d, MountFs::new(Arc::new(tree), policy))
    }

    fn row(m: &MountFs, level: u8, row: u32) -> u64 {
        m.tree().ino(Node::Row { level, row })
    }

    const READ: OpenMode = OpenMode {
        write: false,
        truncate: false,
    };

    #[test]
    fn entries_carry_their_ttl_and_misses_in_rows_are_negative() {
        let (_d, m) = mount(true);
        let r = row(&m, 2, 1);
        let e = m.lookup(r, OsStr::new("C00000001.png")).unwrap();
        assert_eq!(e.ttl, TTL);
        assert!(e.attr.ino != 0 && e.attr.size > 0);
        let miss = m.lookup(r, OsStr::new("C00000002.png")).unwrap();
        assert_eq!((miss.attr.ino, miss.ttl), (0, NEG));
        // Outside a row a missing name is an error, not a negative entry.
        let level = m.tree().ino(Node::Level(2));
        assert_eq!(
            m.lookup(level, OsStr::new("R00000007"))
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
        // No negative TTL: plain ENOENT.
        let (_d2, mut m2) = mount(true);
        m2.policy.negative_ttl = Duration::ZERO;
        let e = m2.lookup(row(&m2, 2, 1), OsStr::new("C00000002.png"));
        assert_eq!(e.unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn listed_files_of_unknown_size_get_no_ttl() {
        let p = Policy {
            ttl: TTL,
            negative_ttl: NEG,
            read_only: true,
        };
        let mut a = Attr {
            ino: 5,
            kind: Kind::File,
            size: 0,
            mtime: UNIX_EPOCH,
            nlink: 1,
        };
        assert_eq!(p.entry_ttl(&a), Duration::ZERO);
        a.size = 10;
        assert_eq!(p.entry_ttl(&a), TTL);
        a.size = 0;
        a.kind = Kind::Dir;
        assert_eq!(p.entry_ttl(&a), TTL);
    }

    #[test]
    fn read_only_opens_keep_the_cache_then_stop_with_no_open() {
        let (_d, m) = mount(true);
        let e = m
            .lookup(row(&m, 2, 1), OsStr::new("C00000001.png"))
            .unwrap();
        let o = m.open(e.attr.ino, READ).unwrap();
        assert_eq!(o.fh, 0);
        assert!(o.flags.keep_cache && !o.flags.direct_io);
        let write = OpenMode {
            write: true,
            truncate: false,
        };
        assert_eq!(m.open(e.attr.ino, write).unwrap_err().errno(), libc::EROFS);
        m.set_no_open(true);
        assert_eq!(m.open(e.attr.ino, READ).unwrap_err().errno(), libc::ENOSYS);
        // A missing file still fails right before the kernel stops asking.
        let gone = m.tree().ino(Node::Tile(TileAddr::new(2, 1, 3)));
        assert_eq!(m.open(gone, READ).unwrap_err().errno(), libc::ENOENT);
        assert_eq!(m.open(ROOT_INO, READ).unwrap_err().errno(), libc::EISDIR);
        assert_eq!(m.flush(e.attr.ino).unwrap_err().errno(), libc::ENOSYS);
        assert_eq!(
            m.setattr(e.attr.ino, Some(0), None).unwrap_err().errno(),
            libc::EROFS
        );
        assert!(m.wants_no_open());
    }

    #[test]
    fn writable_reads_see_the_tile_as_it_was_at_open() {
        let (_d, m) = mount(false);
        assert!(!m.wants_no_open());
        let r = row(&m, 2, 1);
        let ino = m.lookup(r, OsStr::new("C00000001.png")).unwrap().attr.ino;
        let o = m.open(ino, READ).unwrap();
        assert!(o.flags.direct_io && !o.flags.keep_cache);
        let before = m.read(ino, o.fh, 0, u32::MAX).unwrap().bytes().to_vec();
        // Replaced while open: the handle keeps the old bytes, a new open sees the new ones.
        let (new, w) = m.create(r, OsStr::new("C00000001.png")).unwrap();
        assert_eq!(w.fh, WRITE_FH);
        let v2 = png(200);
        m.write(new.attr.ino, 0, &v2).unwrap();
        m.release(new.attr.ino, w.fh).unwrap();
        assert_eq!(m.read(ino, o.fh, 0, u32::MAX).unwrap().bytes(), &before[..]);
        assert_eq!(m.read(ino, o.fh, 1, 3).unwrap().bytes(), &before[1..4]);
        let o2 = m.open(ino, READ).unwrap();
        assert_ne!(o.fh, o2.fh);
        assert_eq!(m.read(ino, o2.fh, 0, u32::MAX).unwrap().bytes(), &v2[..]);
        m.release(ino, o.fh).unwrap();
        m.release(ino, o2.fh).unwrap();
        assert_eq!(m.handles().open_counts(), (0, 0));
        assert_eq!(m.read(ino, o.fh, 0, 1).unwrap_err().errno(), libc::EBADF);
    }

    #[test]
    fn folders_list_from_their_handle_with_rows_cached_by_the_kernel() {
        let (_d, m) = mount(true);
        let r = row(&m, 2, 1);
        let o = m.opendir(r).unwrap();
        assert!(o.flags.cache_dir && o.flags.keep_cache);
        let level = m.tree().ino(Node::Level(2));
        assert_eq!(m.opendir(level).unwrap().flags, OpenFlags::default());
        let l = m.readdir(r, o.fh, 0, false).unwrap();
        let got: Vec<(u64, &str, u64)> =
            l.entries().map(|e| (e.next, e.name, e.attr.ino)).collect();
        let tile = m.tree().ino(Node::Tile(TileAddr::new(2, 1, 1)));
        assert_eq!(
            got,
            [(1, ".", r), (2, "..", level), (3, "C00000001.png", tile)]
        );
        // From an offset: what follows it.
        let l = m.readdir(r, o.fh, 2, true).unwrap();
        let rest: Vec<&str> = l.entries().map(|e| e.name).collect();
        assert_eq!(rest, ["C00000001.png"]);
        assert_eq!(l.entries().next().unwrap().ttl, TTL);
        m.releasedir(o.fh);
        assert_eq!(m.handles().open_counts(), (0, 0));
        assert_eq!(m.opendir(12345).unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn rename_flags_and_bad_names_are_refused_by_name() {
        let (_d, m) = mount(false);
        let r = row(&m, 2, 1);
        let (a, b) = (OsStr::new("C00000001.png"), OsStr::new("C00000002.png"));
        let ex = RenameMode {
            exchange: true,
            ..RenameMode::default()
        };
        let e = m.rename(r, a, r, b, ex).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("RENAME_EXCHANGE"), "{e}");
        let keep = RenameMode {
            no_replace: true,
            ..RenameMode::default()
        };
        assert_eq!(
            m.rename(r, b, r, a, keep).unwrap_err().errno(),
            libc::EEXIST
        );
        m.rename(r, a, r, b, keep).unwrap();
        assert!(m.tree().lookup(r, "C00000002.png").is_ok());
        use std::os::unix::ffi::OsStrExt;
        let bad = OsStr::from_bytes(b"C\xff.png");
        assert_eq!(m.lookup(r, bad).unwrap_err().errno(), libc::ENOENT);
        assert_eq!(m.create(r, bad).unwrap_err().errno(), libc::EINVAL);
    }
}
