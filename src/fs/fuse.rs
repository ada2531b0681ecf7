//! The thin fuser adapter: each handler forwards to [`MountFs`] and turns its answer into a reply
//! (an error into its errno). Kernel capabilities are negotiated here; what to ask for, TTLs, open
//! flags, handles and the background work live in `fs::mount`, `fs::handles` and `fs::watch`.

use std::ffi::OsStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::errno::{FsError, ToErrno};
use super::mount::{Entry, MountFs, OpenMode, Opened, Policy, RenameMode};
use super::watch::{self, Notify, WatchTiming};
use super::{Attr, Invalidation, Kind, TreeFs};

/// Mount-time settings of the adapter.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Entry and attribute time-to-live given to the kernel.
    pub ttl: Duration,
    /// How long the kernel may remember that a name in a row does not exist.
    pub negative_ttl: Duration,
    /// A read-only mount (files 0444, folders 0555, every change EROFS).
    pub read_only: bool,
    /// Owner shown for every file and folder.
    pub uid: u32,
    /// Group shown for every file and folder.
    pub gid: u32,
}

/// fuser `Filesystem` over a [`TreeFs`].
pub struct FuseFs {
    fs: Arc<MountFs>,
    opts: FuseOptions,
    /// With a tile source: the threads that answer lookups which may render, so a slow or
    /// hanging source never holds a session thread (the reply is sent from here when done).
    renders: Option<Arc<rayon::ThreadPool>>,
    /// With a cache in an object store: the threads that answer every request that may wait on
    /// the store (lookups, attributes, opens, reads, listings, flushes, fsync, writes and time
    /// changes), so a slow or dead store never holds a session thread; None for a local cache,
    /// where such requests are memory maps and local files, answered on the session thread.
    store_io: Option<Arc<rayon::ThreadPool>>,
}

/// The errno of a refused call, logged as its kind deserves.
fn errno(op: &str, e: &FsError) -> Errno {
    MountFs::log(op, e);
    Errno::from_i32(e.errno())
}

/// Answers a request that returns nothing but success or an error.
fn empty(op: &str, reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(op, &e)),
    }
}

fn fopen_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    for (set, flag) in [
        (o.flags.keep_cache, FopenFlags::FOPEN_KEEP_CACHE),
        (o.flags.cache_dir, FopenFlags::FOPEN_CACHE_DIR),
        (o.flags.direct_io, FopenFlags::FOPEN_DIRECT_IO),
    ] {
        if set {
            f |= flag;
        }
    }
    f
}

/// Kernel attributes of a node: owner and mode are the mount's.
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

fn reply_entry(opts: &FuseOptions, reply: ReplyEntry, r: Result<Entry, FsError>) {
    match r {
        Ok(e) => reply.entry(&e.ttl, &file_attr(opts, &e.attr), Generation(0)),
        Err(e) => reply.error(errno("lookup", &e)),
    }
}

impl FuseFs {
    /// The adapter over `tree` with `opts`.
    pub fn new(tree: Arc<TreeFs>, opts: FuseOptions) -> Self {
        let policy = Policy {
            ttl: opts.ttl,
            negative_ttl: opts.negative_ttl,
            read_only: opts.read_only,
        };
        FuseFs {
            fs: Arc::new(MountFs::new(tree, policy)),
            opts,
            renders: None,
            store_io: None,
        }
    }

    /// Answers requests that may wait on an object store on `n` threads of their own instead of
    /// the session's (for caches in an object store).
    pub fn with_store_threads(mut self, n: usize) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .thread_name(|i| format!("bundlefs-store-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        self.store_io = Some(Arc::new(pool));
        Ok(self)
    }

    /// Runs `f` (which answers one request) on the store threads when the cache is in an object
    /// store, else here on the session thread.
    fn on_store(&self, f: impl FnOnce(&MountFs, &FuseOptions) + Send + 'static) {
        match &self.store_io {
            Some(pool) => {
                let (fs, opts) = (self.fs.clone(), self.opts.clone());
                pool.spawn(move || f(&fs, &opts));
            }
            None => f(&self.fs, &self.opts),
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
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let mut flags = vec![
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ];
        if self.fs.wants_no_open() {
            flags.push(InitFlags::FUSE_NO_OPEN_SUPPORT);
        }
        for flag in flags {
            match config.add_capabilities(flag) {
                Ok(()) if flag == InitFlags::FUSE_NO_OPEN_SUPPORT => self.fs.set_no_open(true),
                Ok(()) => {}
                Err(unsupported) => tracing::debug!("kernel lacks {unsupported:?}"),
            }
        }
        if let Err(nearest) = config.set_max_readahead(128 * 1024) {
            tracing::debug!("kernel limits readahead to {nearest} bytes");
        }
        // Whole tiles in one write request where the kernel allows it.
        if let Err(nearest) = config.set_max_write(1 << 20) {
            tracing::debug!("kernel limits writes to {nearest} bytes");
        }
        Ok(())
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        self.fs.forget(ino.0);
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.destroy() {
            tracing::error!("flushing the write buffer at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Some(pool) = &self.renders {
            if self.fs.lookup_may_render(parent.0, name) {
                let (fs, opts, name) = (self.fs.clone(), self.opts.clone(), name.to_owned());
                pool.spawn(move || reply_entry(&opts, reply, fs.lookup(parent.0, &name)));
                return;
            }
        }
        if self.store_io.is_none() || self.fs.lookup_at_hand(parent.0, name) {
            return reply_entry(&self.opts, reply, self.fs.lookup(parent.0, name));
        }
        let name = name.to_owned();
        self.on_store(move |fs, opts| reply_entry(opts, reply, fs.lookup(parent.0, &name)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.on_store(move |fs, opts| match fs.getattr(ino.0) {
            Ok(e) => reply.attr(&e.ttl, &file_attr(opts, &e.attr)),
            Err(e) => reply.error(errno("getattr", &e)),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode {
            write: flags.acc_mode() != OpenAccMode::O_RDONLY,
            truncate: flags.0 & libc::O_TRUNC != 0,
        };
        self.on_store(move |fs, _| match fs.open(ino.0, mode) {
            Ok(o) => reply.opened(FileHandle(o.fh), fopen_flags(&o)),
            Err(e) => reply.error(errno("open", &e)),
        });
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
        let answer = move |fs: &MountFs| match fs.read(ino.0, fh.0, offset, size) {
            Ok(b) => reply.data(b.bytes()),
            Err(e) => reply.error(errno("read", &e)),
        };
        if self.store_io.is_none() || self.fs.read_at_hand(ino.0, fh.0) {
            return answer(&self.fs);
        }
        self.on_store(move |fs, _| answer(fs));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(o) => reply.opened(FileHandle(o.fh), fopen_flags(&o)),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.on_store(move |fs, _| match fs.readdir(ino.0, fh.0, offset, false) {
            Ok(l) => {
                for e in l.entries() {
                    let kind = match e.attr.kind {
                        Kind::Dir => FileType::Directory,
                        Kind::File => FileType::RegularFile,
                    };
                    if reply.add(INodeNo(e.attr.ino), e.next, kind, e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno("readdir", &e)),
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.on_store(
            move |fs, opts| match fs.readdir(ino.0, fh.0, offset, true) {
                Ok(l) => {
                    for e in l.entries() {
                        let attr = file_attr(opts, &e.attr);
                        let ino = INodeNo(e.attr.ino);
                        if reply.add(ino, e.next, e.name, &e.ttl, &attr, Generation(0)) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(errno("readdirplus", &e)),
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok()
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush on a read-only mount: answered here.
        if self.opts.read_only {
            return empty("flush", reply, self.fs.flush(ino.0));
        }
        self.on_store(move |fs, _| empty("flush", reply, fs.flush(ino.0)));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.opts.read_only {
            return empty("release", reply, self.fs.release(ino.0, fh.0));
        }
        self.on_store(move |fs, _| empty("release", reply, fs.release(ino.0, fh.0)));
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
        let name = name.to_owned();
        self.on_store(move |fs, opts| match fs.create(parent.0, &name) {
            Ok((e, o)) => reply.created(
                &e.ttl,
                &file_attr(opts, &e.attr),
                Generation(0),
                FileHandle(o.fh),
                fopen_flags(&o),
            ),
            Err(e) => reply.error(errno("create", &e)),
        });
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
        if self.store_io.is_none() {
            return match self.fs.write(ino.0, offset, data) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno("write", &e)),
            };
        }
        // A write may flush a bundle (evicted from the write buffer) to the store.
        let data = data.to_vec();
        self.on_store(move |fs, _| match fs.write(ino.0, offset, &data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", &e)),
        });
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
        let mtime = mtime.map(|m| match m {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        });
        self.on_store(move |fs, opts| match fs.setattr(ino.0, size, mtime) {
            Ok(e) => reply.attr(&e.ttl, &file_attr(opts, &e.attr)),
            Err(e) => reply.error(errno("setattr", &e)),
        });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        self.on_store(move |fs, _| empty("fsync", reply, fs.fsync(ino.0)));
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
        let name = name.to_owned();
        self.on_store(move |fs, opts| match fs.mkdir(parent.0, &name) {
            Ok(e) => reply.entry(&e.ttl, &file_attr(opts, &e.attr), Generation(0)),
            Err(e) => reply.error(errno("mkdir", &e)),
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.on_store(move |fs, _| empty("unlink", reply, fs.unlink(parent.0, &name)));
    }

    /// Hard links: a tile has one name (EPERM, as on file systems without links; rsync and cp
    /// fall back to a rename or a copy). Answered here so fuser does not log it as missing.
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(libc::EPERM));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.on_store(move |fs, _| empty("rmdir", reply, fs.rmdir(parent.0, &name)));
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
        let mode = RenameMode {
            no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
            whiteout: flags.contains(RenameFlags::RENAME_WHITEOUT),
        };
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.on_store(move |fs, _| {
            let r = fs.rename(parent.0, &name, newparent.0, &newname, mode);
            empty("rename", reply, r)
        });
    }

    // ENOSYS makes the kernel stop asking: no extended attributes, and permission checks are the
    // kernel's own (with default_permissions) or none beyond the read-only mount.
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
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
            Err(e) => reply.error(errno("statfs", &e)),
        }
    }
}

/// The kernel, reached through fuser's notifier.
struct KernelNotifier(Notifier);

impl Notify for KernelNotifier {
    fn notify(&self, inv: &Invalidation) -> std::io::Result<()> {
        match inv {
            Invalidation::Inode(ino) => self.0.inval_inode(INodeNo(*ino), 0, -1),
            Invalidation::Entry { parent, name } => {
                self.0.inval_entry(INodeNo(*parent), OsStr::new(name))
            }
        }
    }
}

/// Background work of a mount until `stop` is set (see [`watch::run`]): invalidations sent
/// through `notifier`, foreign changes checked every `every`, bundles of the write buffer
/// flushed when quiet for `idle_flush` or holding a chunk of tiles.
pub fn watch_changes(
    fs: Arc<TreeFs>,
    notifier: Notifier,
    every: Duration,
    idle_flush: Duration,
    stop: Arc<AtomicBool>,
) {
    let timing = WatchTiming { every, idle_flush };
    watch::run(&fs, &KernelNotifier(notifier), timing, &stop)
}
