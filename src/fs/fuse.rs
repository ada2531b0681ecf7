//! The thin fuser adapter: each handler calls [`TreeFs`] and turns its answer into a reply.
//! Kernel caching is set here: long TTLs, keep-cache, cached row listings, readdirplus, and
//! invalidations pushed by a watcher thread when another writer changes a bundle.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::inode::{Node, ROOT_INO};
use super::{Attr, DirEntry, FileBytes, Invalidation, Kind, TreeFs};
use crate::Error;

/// Mount-time settings of the adapter.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Entry and attribute time-to-live given to the kernel.
    pub ttl: Duration,
    /// How long the kernel may remember that a name in a row does not exist.
    pub negative_ttl: Duration,
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
}

/// fuser `Filesystem` over a [`TreeFs`].
pub struct FuseFs {
    fs: Arc<TreeFs>,
    opts: FuseOptions,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Writable mounts: the bytes each read handle saw at open (handles carry [`SNAPSHOT_FH`]).
    snapshots: Mutex<HashMap<u64, Arc<FileBytes>>>,
    next_fh: AtomicU64,
    /// The kernel granted FUSE_NO_OPEN_SUPPORT (read-only mounts ask for it).
    no_open: bool,
    /// With a tile source: the threads that answer lookups which may render, so a slow or
    /// hanging source never holds a session thread (the reply is sent from here when done).
    renders: Option<Arc<rayon::ThreadPool>>,
}

/// Marks the file handles of read snapshots (writable mounts), apart from the write handles.
const SNAPSHOT_FH: u64 = 1 << 62;

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Answers a request that returns nothing but success or an error.
fn empty(reply: ReplyEmpty, r: Result<(), Error>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

impl FuseFs {
    pub fn new(fs: Arc<TreeFs>, opts: FuseOptions) -> Self {
        FuseFs {
            fs,
            opts,
            dirs: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            no_open: false,
            renders: None,
        }
    }

    /// Answers lookups that may render on `n` threads of their own instead of the session's.
    pub fn with_render_threads(mut self, n: usize) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .thread_name(|i| format!("bundlefs-render-lookup-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        self.renders = Some(Arc::new(pool));
        Ok(self)
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        file_attr(&self.opts, a)
    }

    fn listing(&self, ino: u64, fh: FileHandle) -> Result<Arc<Vec<DirEntry>>, Error> {
        if let Some(l) = self.dirs.lock().unwrap().get(&fh.0) {
            return Ok(l.clone());
        }
        // First readdir of this handle: the listing it keeps until releasedir, so a listing
        // read in several replies is one consistent snapshot.
        let l = Arc::new(self.fs.readdir(ino)?);
        self.dirs.lock().unwrap().insert(fh.0, l.clone());
        Ok(l)
    }

    fn parent_of(&self, ino: u64) -> u64 {
        match self.fs.inodes.node(ino) {
            Some(Node::Row { level, .. }) => self.fs.ino(Node::Level(level)),
            Some(Node::Level(_)) => self.fs.ino(self.fs.levels_parent()),
            _ => ROOT_INO,
        }
    }
}

/// Kernel attributes of a node.
fn file_attr(opts: &FuseOptions, a: &Attr) -> FileAttr {
    let (kind, perm) = match a.kind {
        Kind::Dir => (
            FileType::Directory,
            if opts.read_only { 0o555 } else { 0o755 },
        ),
        Kind::File => (
            FileType::RegularFile,
            if opts.read_only { 0o444 } else { 0o644 },
        ),
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm,
        nlink: a.nlink,
        uid: opts.uid,
        gid: opts.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Answers a lookup (from a session thread, or from a render-lookup thread).
fn answer_lookup(fs: &TreeFs, opts: &FuseOptions, parent: u64, name: &str, reply: ReplyEntry) {
    match fs.lookup(parent, name) {
        Ok(a) => reply.entry(&opts.ttl, &file_attr(opts, &a), Generation(0)),
        // A missing file in a row: a negative entry (inode 0) the kernel keeps for
        // `negative_ttl`, so rsync's repeated checks of a name it is about to write (and
        // walks probing absent tiles) stay in the kernel.
        Err(Error::NotFound(_))
            if !opts.negative_ttl.is_zero()
                && matches!(fs.inodes.node(parent), Some(Node::Row { .. })) =>
        {
            let none = Attr {
                ino: 0,
                kind: Kind::File,
                size: 0,
                mtime: std::time::UNIX_EPOCH,
                nlink: 0,
            };
            reply.entry(&opts.negative_ttl, &file_attr(opts, &none), Generation(0))
        }
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // NO_OPEN_SUPPORT: once `open` answers ENOSYS the kernel stops sending open/release and
        // keeps each file's page cache across opens (as FOPEN_KEEP_CACHE), so a warm re-read never
        // reaches the daemon. Read-only mounts take it; writable ones need open for O_TRUNC/handles.
        let no_open = if self.opts.read_only {
            InitFlags::FUSE_NO_OPEN_SUPPORT
        } else {
            InitFlags::empty()
        };
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            no_open,
        ] {
            match config.add_capabilities(flag) {
                Ok(()) if flag == InitFlags::FUSE_NO_OPEN_SUPPORT => self.no_open = true,
                Ok(()) => {}
                Err(unsupported) => tracing::debug!("kernel lacks {unsupported:?}"),
            }
        }
        let _ = config.set_max_readahead(128 * 1024);
        // Whole tiles in one write request where the kernel allows it.
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        // Sent when the kernel evicts an inode: it holds no reference to it any more.
        self.fs.forget(ino.0);
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.flush_all() {
            tracing::error!("flushing the write buffer at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(pool) = &self.renders {
            if self.fs.lookup_may_render(parent.0, name) {
                let (fs, opts, name) = (self.fs.clone(), self.opts.clone(), name.to_string());
                pool.spawn(move || answer_lookup(&fs, &opts, parent.0, &name, reply));
                return;
            }
        }
        answer_lookup(&self.fs, &self.opts, parent.0, name, reply)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.opts.ttl, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.opts.read_only && flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if flags.acc_mode() != OpenAccMode::O_RDONLY || truncate {
            return match self.fs.open_write(ino.0, truncate) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            };
        }
        if self.opts.read_only && self.no_open {
            // The kernel (FUSE_NO_OPEN_SUPPORT granted) reads ENOSYS as "never send open again".
            // Before that the file's existence is checked, so the first open still fails right.
            if let Ok(a) = self.fs.getattr(ino.0) {
                if a.kind == Kind::File {
                    return reply.error(Errno::ENOSYS);
                }
            }
        }
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == Kind::File && self.opts.read_only => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            // Writable mounts: a tile may be replaced at any time (rename over it, or a write),
            // and the kernel's size and pages of the inode are refreshed only later. A reader
            // gets the whole tile as it was at open, read directly (no page cache, no clamp to a
            // stale size): never a mix of two versions, nor one cut short.
            Ok(a) if a.kind == Kind::File => match self.fs.read(ino.0, 0, u32::MAX) {
                Ok(bytes) => {
                    let fh = SNAPSHOT_FH | self.next_fh.fetch_add(1, Ordering::Relaxed);
                    self.snapshots.lock().unwrap().insert(fh, Arc::new(bytes));
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Err(e) => reply.error(errno(&e)),
            },
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if fh.0 & SNAPSHOT_FH != 0 {
            let snap = self.snapshots.lock().unwrap().get(&fh.0).cloned();
            return match snap {
                Some(b) => {
                    let all = b.bytes();
                    let start = offset.min(all.len() as u64) as usize;
                    let end = (start + size as usize).min(all.len());
                    reply.data(&all[start..end])
                }
                None => reply.error(Errno::EBADF),
            };
        }
        match self.fs.read(ino.0, offset, size) {
            Ok(b) => reply.data(b.bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The listing is made at the first readdir of the handle, not here: when the kernel
        // still holds a row's listing (FOPEN_CACHE_DIR), no readdir comes and nothing is built.
        let Some(node) = self.fs.inodes.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        // Row folders change only through bundle changes, which the watcher invalidates.
        let flags = match node {
            Node::Row { .. } => FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            _ => FopenFlags::empty(),
        };
        reply.opened(FileHandle(fh), flags)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.listing(ino.0, fh) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(&e)),
        };
        let dots = [(".", ino.0), ("..", self.parent_of(ino.0))];
        for (i, (name, ino, kind)) in dots
            .iter()
            .map(|(n, i)| (*n, *i, FileType::Directory))
            .chain(list.iter().map(|e| {
                let k = if e.attr.kind == Kind::Dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                (e.name.as_str(), e.attr.ino, k)
            }))
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match self.listing(ino.0, fh) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(&e)),
        };
        let me = match self.fs.getattr(ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(errno(&e)),
        };
        let dots = [
            DirEntry {
                name: ".".into(),
                attr: me,
            },
            DirEntry {
                name: "..".into(),
                attr: me,
            },
        ];
        for (i, e) in dots
            .iter()
            .chain(list.iter())
            .enumerate()
            .skip(offset as usize)
        {
            // Size 0 marks a file whose bytes are not known yet (a renderable name, a broken
            // entry): no TTL, so the kernel looks it up (and gets the real size) before use.
            let ttl = if e.attr.kind == Kind::File && e.attr.size == 0 {
                Duration::ZERO
            } else {
                self.opts.ttl
            };
            if reply.add(
                INodeNo(e.attr.ino),
                i as u64 + 1,
                &e.name,
                &ttl,
                &self.attr(&e.attr),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: fuser::ReplyEmpty,
    ) {
        self.dirs.lock().unwrap().remove(&fh.0);
        reply.ok()
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        if self.opts.read_only {
            // Nothing to flush on a read-only mount: ENOSYS makes the kernel skip flush on close.
            return reply.error(Errno::ENOSYS);
        }
        empty(reply, self.fs.flush(_ino.0))
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        if fh.0 & SNAPSHOT_FH != 0 {
            self.snapshots.lock().unwrap().remove(&fh.0);
            return reply.ok();
        }
        empty(reply, self.fs.release(ino.0, fh.0))
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        match self.fs.create(parent.0, name) {
            Ok(a) => reply.created(
                &self.opts.ttl,
                &self.attr(&a),
                Generation(0),
                FileHandle(super::write::WRITE_FH),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.opts.read_only && (size.is_some() || mtime.is_some()) {
            return reply.error(Errno::EROFS);
        }
        let mtime = mtime.map(|m| match m {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        });
        match self.fs.setattr(ino.0, size, mtime) {
            Ok(a) => reply.attr(&self.opts.ttl, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        empty(reply, self.fs.fsync(ino.0))
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        match self.fs.mkdir(parent.0, name) {
            Ok(a) => reply.entry(&self.opts.ttl, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        empty(reply, self.fs.unlink(parent.0, name))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        empty(reply, self.fs.rmdir(parent.0, name))
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (name.to_str(), newname.to_str()) else {
            return reply.error(Errno::EINVAL);
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE)
            && self.fs.lookup(newparent.0, newname).is_ok()
        {
            return reply.error(Errno::EEXIST);
        }
        empty(reply, self.fs.rename(parent.0, name, newparent.0, newname))
    }

    // ENOSYS makes the kernel stop asking: no extended attributes, and permission checks are the
    // kernel's own (with default_permissions) or none beyond the read-only mount.
    fn access(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS)
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS)
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// Background work of a mount until `stop` is set: sends the kernel what requests queued and
/// what `TreeFs::poll_changes` finds (every `every`), and flushes the bundles of the write buffer
/// that are due: not written for `idle_flush`, or holding a chunk of tiles.
pub fn watch_changes(
    fs: Arc<TreeFs>,
    notifier: Notifier,
    every: Duration,
    idle_flush: Duration,
    stop: Arc<AtomicBool>,
) {
    let tick = Duration::from_millis(50).min(every);
    let mut last_poll = Instant::now();
    let mut retry_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let mut invs = fs.take_queued();
        if last_poll.elapsed() >= every {
            last_poll = Instant::now();
            invs.extend(fs.poll_changes());
        }
        if fs.writer().is_some() && Instant::now() >= retry_at {
            if let Err(e) = fs.flush_due(idle_flush) {
                tracing::error!("flushing the write buffer: {e} (kept; retried later)");
                retry_at = Instant::now() + idle_flush.max(Duration::from_secs(1));
            }
        }
        for inv in invs {
            let res = match &inv {
                Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, -1),
                Invalidation::Entry { parent, name } => {
                    notifier.inval_entry(INodeNo(*parent), OsStr::new(name))
                }
            };
            // ENOENT just means the kernel had nothing cached for it.
            match res {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    tracing::warn!("invalidating {inv:?}: {e}")
                }
                _ => tracing::trace!("invalidated {inv:?}"),
            }
        }
    }
}
