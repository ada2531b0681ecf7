//! The exploded tree over a cache: what each path is, its attributes, its bytes and its listing.
//! Plain methods returning plain types, so it is tested without a kernel. `mount` answers the
//! kernel's calls over it (TTLs, open flags, handles), `watch` runs the mount's background work,
//! and `fuse` only forwards fuser's calls to `mount` and replies.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod counters;
pub mod errno;
pub mod fuse;
pub mod handles;
pub mod inode;
pub mod mount;
pub mod view;
pub mod watch;
mod write;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use self::errno::{FsError, FsResult, ToErrno};
use self::inode::{Inodes, Node};
pub use self::view::View;
use self::watch::WatchedBundles;
use crate::cache::buffer::{Pending, WriteBuffer};
use crate::cache::{Cache, Layout, TileBytes};
use crate::format::conf::StorageFormat;
use crate::format::exploded;
use crate::format::sniff::ImageKind;
use crate::format::TileAddr;
use crate::{Error, Result};

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A folder: the root, `_alllayers`, a level or a row.
    Dir,
    /// A file: conf.xml, conf.cdi, a tile or a temporary file.
    File,
}

/// Attributes of a node (the adapter adds owner, mode and block counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (see `inode`); 0 only in a negative entry.
    pub ino: u64,
    /// File or folder.
    pub kind: Kind,
    /// Bytes (files); 0 for folders, and for listed files whose size is not known yet.
    pub size: u64,
    /// Modification time: the tile's (its sidecar time, else its bundle's), a folder's on disk,
    /// else the mount's start.
    pub mtime: SystemTime,
    /// Link count: 1 for files, 2 for row folders, 1 ("unknown") for level folders.
    pub nlink: u32,
}

/// One directory entry, with attributes for readdirplus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name in its folder (`Cxxxxxxxx.png`, `Rxxxxxxxx`, `Lnn`…).
    pub name: String,
    /// Its attributes.
    pub attr: Attr,
}

/// Something the kernel may have cached that is now wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Attributes and data of an inode.
    Inode(u64),
    /// A name in a directory.
    Entry {
        /// The folder's inode.
        parent: u64,
        /// The name in it.
        name: String,
    },
}

/// The exploded view of a cache.
pub struct TreeFs {
    cache: Arc<Cache>,
    pub(crate) inodes: Inodes,
    conf_xml: Option<Arc<Vec<u8>>>,
    conf_cdi: Option<Arc<Vec<u8>>>,
    mounted_at: SystemTime,
    /// Bundles whose tiles the kernel may cache, checked for foreign changes (see `watch`).
    watched: WatchedBundles,
    /// The write buffer: of a writable mount, or where kept rendered tiles wait.
    writer: Option<Arc<WriteBuffer>>,
    /// Whether users may write (`-o rw`).
    writable: bool,
    /// Where tiles the bundles lack come from (`--source`).
    renderer: Option<Arc<crate::render::renderer::Renderer>>,
    /// Levels whose listings also show renderable names (`--list-renderable`).
    list_renderable: Option<crate::format::levels::LevelRange>,
    /// Files being written, temporary files, created folders (see `write`).
    w: Mutex<write::WriteState>,
    /// Invalidations found while serving a request, sent later by the watcher thread (never from
    /// inside a request: the kernel may hold locks the notification needs).
    queued: Mutex<Vec<Invalidation>>,
    /// Tiles whose read failed and was logged, with the message: one lookup, open and read of a
    /// broken tile log it once (later failures with the same message at debug level).
    reported: Mutex<lru::LruCache<TileAddr, String>>,
    /// What the tree answered ([`TreeFs::snapshot`]).
    counted: counters::LiveTree,
    /// The layout shown ([`View`]; ArcGIS's unless `mount --layout` says otherwise).
    view: View,
}

/// How many failing tiles [`TreeFs`] remembers having reported.
const REPORTED_KEPT: usize = 4096;

/// The size of a tile's file: its bytes, 4 more for a PNG whose signature is restored
/// ([`image_file`]).
fn file_len(bytes: &TileBytes) -> u64 {
    crate::format::pixels::as_image_file(bytes).len() as u64
}

/// A tile's bytes as the file users read: a PNG stored without its first four signature bytes
/// (as ArcGIS wrote some) comes out whole, so browsers, PIL and `file` open it.
fn image_file(bytes: TileBytes) -> FileBytes {
    match crate::format::pixels::as_image_file(&bytes) {
        std::borrow::Cow::Owned(fixed) => FileBytes::Shared(Arc::new(fixed)),
        std::borrow::Cow::Borrowed(_) => FileBytes::Tile(bytes),
    }
}

fn not_found(what: impl std::fmt::Display) -> FsError {
    FsError::not_found(what)
}

impl TreeFs {
    /// A read-only tree over `cache`.
    pub fn new(cache: Arc<Cache>) -> TreeFs {
        let conf_xml = cache
            .conf()
            .map(|c| Arc::new(c.with_storage(StorageFormat::Exploded)));
        let conf_cdi = cache.cdi().map(|b| Arc::new(b.to_vec()));
        TreeFs {
            cache,
            inodes: Inodes::default(),
            conf_xml,
            conf_cdi,
            mounted_at: SystemTime::now(),
            watched: WatchedBundles::default(),
            writer: None,
            writable: false,
            renderer: None,
            list_renderable: None,
            w: Mutex::new(write::WriteState::default()),
            queued: Mutex::new(Vec::new()),
            reported: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(REPORTED_KEPT).unwrap(),
            )),
            counted: counters::LiveTree::default(),
            view: View::ArcGis,
        }
    }

    /// Every counter of the mount now: the tree's, its write buffer's, its storage's requests
    /// and its renderer's ([`counters::Snapshot`]).
    pub fn snapshot(&self) -> counters::Snapshot {
        counters::Snapshot {
            tree: self.counted.snapshot(),
            buffer: self.writer.as_ref().map(|w| w.counters()),
            store: self.cache.store().counters(),
            render: self.renderer.as_ref().map(|r| r.stats()),
        }
    }

    /// A writable tree: writes go through `writer` (whose cache is the one shown).
    pub fn writable(writer: Arc<WriteBuffer>) -> TreeFs {
        let mut t = TreeFs::new(writer.cache().clone());
        t.writer = Some(writer);
        t.writable = true;
        t
    }

    /// Renders tiles the bundles lack with `r`. `kept`: the buffer `r` keeps tiles in (read-only
    /// mounts with --keep-rendered), flushed like a writable mount's.
    pub fn with_renderer(
        mut self,
        r: Arc<crate::render::renderer::Renderer>,
        kept: Option<Arc<WriteBuffer>>,
    ) -> TreeFs {
        if self.writer.is_none() {
            self.writer = kept;
        }
        self.renderer = Some(r);
        self
    }

    /// Lists renderable names (not only stored tiles) in `levels`. Refused when a level of the
    /// range has more than `MAX_LISTED` renderable tiles: a listing must stay bounded.
    /// Errors: [`Error::Invalid`] without a renderer, or for a level too large to list.
    pub fn list_renderable(mut self, levels: crate::format::levels::LevelRange) -> Result<TreeFs> {
        const MAX_LISTED: u64 = 1 << 22;
        let r = self
            .renderer
            .as_ref()
            .ok_or_else(|| Error::invalid("listing renderable tiles needs --source"))?;
        for l in levels.min..=levels.max.min(63) {
            if let Some((rows, cols)) = r.renderable_range(l) {
                let n = (rows.end - rows.start) as u64 * (cols.end - cols.start) as u64;
                if n > MAX_LISTED {
                    return Err(Error::invalid(format!(
                        "level {l} has {n} renderable tiles; listing them is limited to \
                         levels of at most {MAX_LISTED}"
                    )));
                }
            }
        }
        self.list_renderable = Some(levels);
        Ok(self)
    }

    /// The renderable rows and columns of a level, when its listings show them.
    fn listed_range(&self, level: u8) -> Option<(std::ops::Range<u32>, std::ops::Range<u32>)> {
        if !self.list_renderable?.contains(level) {
            return None;
        }
        self.renderer.as_ref()?.renderable_range(level)
    }

    /// The write buffer (writable mounts, or kept rendered tiles), if any.
    pub fn writer(&self) -> Option<&Arc<WriteBuffer>> {
        self.writer.as_ref()
    }

    /// Invalidations queued by requests, taken by the caller.
    pub fn take_queued(&self) -> Vec<Invalidation> {
        std::mem::take(&mut *self.queued.lock().unwrap())
    }

    fn queue(&self, inv: Invalidation) {
        self.queued.lock().unwrap().push(inv);
    }

    /// The cache shown.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The inode number of a node.
    pub fn ino(&self, n: Node) -> u64 {
        self.inodes.ino(n)
    }

    /// The node levels hang from: `_alllayers` in ArcGIS layout, the root in MapProxy layout.
    pub(crate) fn levels_parent(&self) -> Node {
        if self.view != View::ArcGis {
            return Node::Root;
        }
        match self.cache.layout() {
            Layout::ArcGis => Node::AllLayers,
            Layout::MapProxy => Node::Root,
        }
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        self.inodes
            .node(ino)
            .ok_or_else(|| not_found(format!("inode {ino}")))
    }

    /// The time of a level's folder (None: of the folder holding the levels), else the mount's
    /// start (a store has no folders).
    fn dir_mtime(&self, level: Option<u8>) -> SystemTime {
        self.cache.folder_mtime(level).unwrap_or(self.mounted_at)
    }

    fn dir_attr(&self, n: Node, nlink: u32, mtime: SystemTime) -> Attr {
        Attr {
            ino: self.ino(n),
            kind: Kind::Dir,
            size: 0,
            mtime,
            nlink,
        }
    }

    fn tile_attr(&self, t: TileAddr, bytes: &TileBytes) -> Attr {
        Attr {
            ino: self.ino(Node::Tile(t)),
            kind: Kind::File,
            size: file_len(bytes),
            mtime: self.cache.tile_mtime(t, bytes).unwrap_or(self.mounted_at),
            nlink: 1,
        }
    }

    /// A tile: stored (or buffered), else rendered when a source is set and the scheme allows it.
    /// Errors are logged here, once, naming the bundle or the source: the caller turns them into
    /// EIO for this tile only.
    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        if let Some(b) = self.stored_tile(t)? {
            return Ok(Some(b));
        }
        let Some(r) = &self.renderer else {
            return Ok(None);
        };
        if !r.renderable(t) {
            return Ok(None);
        }
        match r.get(t) {
            Ok(bytes) => Ok(Some(TileBytes::shared(bytes, Some(self.mounted_at)))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => {
                tracing::error!("rendering {t}: {e}");
                Err(e)
            }
        }
    }

    /// Attributes and image kind of stored tile `t` from its bundle's index, without reading
    /// the tile, where the cache allows it ([`Cache::kind_without_reading`]: an object store with
    /// one tile format, where a read is a request — so `ls -l` and `find` cost no tile GETs).
    /// None: not answerable so (local storage, MIXED, a tile waiting in the write buffer) or not
    /// stored; the caller reads (or renders) the tile. Errors are logged here, naming the bundle.
    fn indexed_attr(&self, t: TileAddr) -> Result<Option<(Attr, ImageKind)>> {
        let Some(kind) = self.cache.kind_without_reading() else {
            return Ok(None);
        };
        if let Some(w) = &self.writer {
            if w.get(t).is_some() {
                return Ok(None);
            }
        }
        match self.cache.tile_stat(t) {
            Ok(Some(st)) => Ok(Some((
                Attr {
                    ino: self.ino(Node::Tile(t)),
                    kind: Kind::File,
                    size: st.size,
                    mtime: st.mtime.unwrap_or(self.mounted_at),
                    nlink: 1,
                },
                kind,
            ))),
            Ok(None) => Ok(None),
            Err(e) => {
                self.report(t, &e);
                Err(e)
            }
        }
    }

    /// Whether a tile name's extension fits the cache's CacheTileFormat (any does for MIXED, or
    /// without a conf.xml).
    fn ext_possible(&self, ext: &str) -> bool {
        self.cache
            .scheme()
            .and_then(|s| s.tile_format.image_kind())
            .is_none_or(|k| k.ext() == ext)
    }

    /// A listed tile whose bytes are not known (a broken entry, a renderable name): size 0, under
    /// the cache's default extension; the adapter gives it no TTL, so a lookup follows.
    fn unsized_entry(&self, t: TileAddr) -> DirEntry {
        DirEntry {
            name: exploded::col_file(t.col, self.cache.default_kind().ext()),
            attr: Attr {
                ino: self.ino(Node::Tile(t)),
                kind: Kind::File,
                size: 0,
                mtime: self.mounted_at,
                nlink: 1,
            },
        }
    }

    /// Whether looking up `name` in `parent` may render a tile, and so may take as long as a
    /// render: a source is set, the name is a renderable tile of a row, and no stored or written
    /// tile answers it.
    pub fn lookup_may_render(&self, parent: u64, name: &str) -> bool {
        let Some(r) = &self.renderer else {
            return false;
        };
        let Some(Node::Row { level, row }) = self.inodes.node(parent) else {
            return false;
        };
        let Some((t, ext)) = self.tile_named(level, row, name) else {
            return false;
        };
        self.ext_possible(ext) && r.renderable(t) && !matches!(self.stored_tile(t), Ok(Some(_)))
    }

    /// Whether looking up `name` in `parent` is answered from memory: anything but a tile name,
    /// or a tile whose attributes the cache has at hand ([`Cache::at_hand`]) or that waits in
    /// the write buffer. False: the lookup may wait on an object store.
    pub fn lookup_at_hand(&self, parent: u64, name: &str) -> bool {
        let Some(Node::Row { level, row }) = self.inodes.node(parent) else {
            return true;
        };
        let Some((t, _)) = self.tile_named(level, row, name) else {
            return true;
        };
        self.tile_at_hand(t, false)
    }

    /// Whether reading inode `ino` is answered from memory: anything but a tile, or a tile
    /// whose bytes the cache has at hand or that waits in the write buffer.
    pub fn read_at_hand(&self, ino: u64) -> bool {
        match self.inodes.node(ino) {
            Some(Node::Tile(t)) => self.tile_at_hand(t, true),
            _ => true,
        }
    }

    /// The tile a file `name` in row node (level, `key`) names, with the extension as written:
    /// in the ArcGIS view `key` is the row and `name` `Ccccccccc.ext`; in the XYZ and TMS views
    /// `key` is the column and `name` `y.ext`.
    fn tile_named<'a>(&self, level: u8, key: u32, name: &'a str) -> Option<(TileAddr, &'a str)> {
        match self.view {
            View::ArcGis => exploded::parse_col_file(name)
                .ok()
                .map(|(col, ext)| (TileAddr::new(level, key, col), ext)),
            View::Xyz | View::Tms => self.parse_xyz_tile(level, key, name),
        }
    }

    fn tile_at_hand(&self, t: TileAddr, bytes: bool) -> bool {
        if let Some(w) = &self.writer {
            if w.get(t).is_some() {
                return true;
            }
        }
        self.cache.at_hand(t, bytes)
    }

    /// Whether a level or row folder may hold renderable tiles.
    fn renderable_dir(&self, level: u8, row: Option<u32>) -> bool {
        let Some(r) = &self.renderer else {
            return false;
        };
        match (r.renderable_range(level), row) {
            (Some(_), None) => true,
            (Some((rows, _)), Some(row)) => rows.contains(&row),
            (None, _) => false,
        }
    }

    /// Logs a tile's read error at error level the first time it is seen (the kernel's lookup,
    /// getattr, open and read of one broken tile each meet it), at debug level after that.
    fn report(&self, t: TileAddr, e: &Error) {
        let msg = e.to_string();
        let mut r = self.reported.lock().unwrap();
        if r.get(&t) == Some(&msg) {
            tracing::debug!("tile {t}: {msg}");
        } else {
            tracing::error!("tile {t}: {msg}");
            r.put(t, msg);
        }
    }

    /// A stored tile: waiting in the write buffer, or in the bundles (remembering its bundle for
    /// change watching).
    fn stored_tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        if let Some(w) = &self.writer {
            match w.get(t) {
                Some(Pending::Put { bytes, mtime }) => {
                    return Ok(Some(TileBytes::shared(bytes, Some(mtime))))
                }
                Some(Pending::Delete) => return Ok(None),
                None => {}
            }
        }
        match self.cache.tile(t) {
            Ok(Some(b)) => {
                if let Some(h) = b.bundle() {
                    self.watched.remember(h);
                }
                Ok(Some(b))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.report(t, &e);
                Err(e)
            }
        }
    }

    fn level_exists(&self, level: u8) -> bool {
        // Its folder, or in a store (no folders) a level holding tiles; a level of conf.xml's
        // LODs of a store cache is shown unlisted.
        self.cache.level_exists(level)
            || self.cache.unlisted_lookup(level)
            || self.w.lock().unwrap().created_level(level)
            || self
                .writer
                .as_ref()
                .is_some_and(|w| w.levels().contains(&level))
    }

    /// Levels shown: on disk, written and waiting, or created by mkdir.
    fn levels(&self) -> Result<Vec<u8>> {
        let mut v = self.cache.levels()?;
        if let Some(w) = &self.writer {
            v.extend(w.levels());
            v.extend(self.w.lock().unwrap().created_levels());
        }
        if let Some(range) = self.list_renderable {
            v.extend((range.min..=range.max.min(63)).filter(|l| self.listed_range(*l).is_some()));
        }
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Rows of a level that hold tiles (stored or waiting), plus rows created by mkdir.
    fn rows(&self, level: u8) -> Result<std::collections::BTreeSet<u32>> {
        let mut rows = self.cache.rows(level)?;
        if let Some(w) = &self.writer {
            for (row, (puts, deletes)) in w.rows(level) {
                if puts {
                    rows.insert(row);
                } else if deletes && rows.contains(&row) && self.row_tiles(level, row)?.is_empty() {
                    rows.remove(&row);
                }
            }
            if self.view == View::ArcGis {
                // (Column folders made in the XYZ and TMS views are listed by level_cols.)
                rows.extend(self.w.lock().unwrap().created_rows(level));
            }
        }
        Ok(rows)
    }

    /// Columns and sizes of the tiles of a row, waiting changes applied.
    fn row_tiles(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let stored = self.cache.cols(level, row)?;
        Ok(match &self.writer {
            Some(w) => crate::cache::buffer::with_pending(stored, w.row(level, row)),
            None => stored,
        })
    }

    /// A row folder exists while it holds tiles, files being written, or was created by mkdir.
    fn row_exists(&self, level: u8, row: u32) -> Result<bool> {
        if self.writer.is_some() && self.w.lock().unwrap().row_in_use(level, row) {
            return Ok(true);
        }
        if self.cache.unlisted_lookup(level) {
            return Ok(true);
        }
        Ok(!self.row_tiles(level, row)?.is_empty())
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let p = self.node(parent)?;
        if let Some(ino) = self.temp_ino(parent, name) {
            return self.temp_attr(ino);
        }
        let child = match p {
            Node::Root if self.view != View::ArcGis && self.view.parse_level(name).is_none() => {
                return Err(not_found(name))
            }
            Node::Root if name == "conf.xml" && self.conf_xml.is_some() => Node::ConfXml,
            Node::Root if name == "conf.cdi" && self.conf_cdi.is_some() => Node::ConfCdi,
            Node::Root if name == "_alllayers" && self.cache.layout() == Layout::ArcGis => {
                Node::AllLayers
            }
            n if n == self.levels_parent() => match self.view.parse_level(name) {
                Some(l) if self.level_exists(l) || self.renderable_dir(l, None) => Node::Level(l),
                _ => return Err(not_found(name)),
            },
            Node::Level(level) if self.view != View::ArcGis => {
                // A column folder: in a read-only view shown on lookup for any column of the
                // zoom's grid (listing the columns that hold tiles costs a walk of the level), its
                // tiles decide; in a writable one only if it holds tiles or was made (col_exists).
                match self.view.parse_folder(level, name) {
                    Some(col) if self.col_exists(level, col)? => {
                        return self.getattr(self.ino(Node::Row { level, row: col }))
                    }
                    _ => return Err(not_found(name)),
                }
            }
            Node::Level(level) => match self.view.parse_folder(level, name) {
                Some(row) => Node::Row { level, row },
                None => return Err(not_found(name)),
            },
            Node::Row { level, row } => {
                if let Some(a) = self.lookup_written(level, row, name)? {
                    return Ok(a);
                }
                let (t, ext) = self
                    .tile_named(level, row, name)
                    .ok_or_else(|| not_found(name))?;
                // A name whose extension the cache's format cannot have is not worth a render.
                if !self.ext_possible(ext) {
                    return Err(not_found(name));
                }
                if let Some((attr, _)) = self.indexed_attr(t)? {
                    // ext_possible checked the extension against the one format.
                    return Ok(attr);
                }
                let bytes = self.tile(t)?.ok_or_else(|| not_found(name))?;
                if self.tile_entry(t, self.cache.kind_of(&bytes).ext()).1 != name || ext.is_empty()
                {
                    return Err(not_found(name));
                }
                return Ok(self.tile_attr(t, &bytes));
            }
            _ => return Err(not_found(name)),
        };
        // Rows exist only while they hold tiles.
        if let Node::Row { level, row } = child {
            if !self.row_exists(level, row)? && !self.renderable_dir(level, Some(row)) {
                return Err(not_found(name));
            }
        }
        self.getattr(self.ino(child))
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let n = self.node(ino)?;
        let root_mtime = self.cache.file_mtime("").unwrap_or(self.mounted_at);
        Ok(match n {
            Node::Root => {
                let subdirs = match (self.view, self.cache.layout()) {
                    (View::ArcGis, Layout::ArcGis) => 1,
                    _ => self.levels()?.len() as u32,
                };
                self.dir_attr(n, 2 + subdirs, root_mtime)
            }
            Node::ConfXml | Node::ConfCdi => {
                let (bytes, file) = if n == Node::ConfXml {
                    (&self.conf_xml, "conf.xml")
                } else {
                    (&self.conf_cdi, "conf.cdi")
                };
                let b = bytes.as_ref().ok_or_else(|| not_found(file))?;
                let mtime = self.cache.file_mtime(file).unwrap_or(self.mounted_at);
                Attr {
                    ino,
                    kind: Kind::File,
                    size: b.len() as u64,
                    mtime,
                    nlink: 1,
                }
            }
            Node::AllLayers => {
                if self.cache.layout() != Layout::ArcGis {
                    return Err(not_found("_alllayers"));
                }
                let levels = self.levels()?.len() as u32;
                self.dir_attr(n, 2 + levels, self.dir_mtime(None))
            }
            Node::Level(l) => {
                if !self.level_exists(l) && !self.renderable_dir(l, None) {
                    return Err(not_found(self.view.level_name(l)));
                }
                // Link count 1: "subfolder count unknown" (as btrfs and network filesystems
                // report; find and fts then do not rely on it). Counting rows would read the index
                // of every bundle of the level on a mere stat.
                self.dir_attr(n, 1, self.dir_mtime(Some(l)))
            }
            Node::Row { level, row } if self.view != View::ArcGis => {
                // A column folder: any column of the zoom's grid of a level shown.
                if row >= (1u32 << level.min(31))
                    || (!self.level_exists(level) && !self.renderable_dir(level, None))
                {
                    return Err(not_found(row.to_string()));
                }
                self.dir_attr(n, 2, self.dir_mtime(Some(level)))
            }
            Node::Row { level, row } => {
                if !self.row_exists(level, row)? && !self.renderable_dir(level, Some(row)) {
                    return Err(not_found(exploded::row_dir(row)));
                }
                self.dir_attr(n, 2, self.dir_mtime(Some(level)))
            }
            Node::Tile(t) => {
                if let Some(a) = self.open_attr(ino) {
                    return Ok(a);
                }
                let b = self.tile(t)?.ok_or_else(|| not_found(t))?;
                self.tile_attr(t, &b)
            }
            Node::Temp(_) => self.temp_attr(ino)?,
        })
    }

    /// Up to `size` bytes of a file from `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<FileBytes> {
        let n = self.node(ino)?;
        let whole: FileBytes = match n {
            Node::ConfXml => {
                FileBytes::Shared(self.conf_xml.clone().ok_or_else(|| not_found("conf.xml"))?)
            }
            Node::ConfCdi => {
                FileBytes::Shared(self.conf_cdi.clone().ok_or_else(|| not_found("conf.cdi"))?)
            }
            Node::Tile(_) | Node::Temp(_) if self.written_bytes(ino).is_some() => {
                FileBytes::Shared(self.written_bytes(ino).unwrap())
            }
            Node::Tile(t) => {
                let w = image_file(self.tile(t)?.ok_or_else(|| not_found(t))?).window(offset, size);
                self.counted.read(offset, w.bytes().len());
                return Ok(w);
            }
            Node::Temp(_) => match self.alias_node(ino) {
                Some(Node::Tile(t)) => image_file(self.tile(t)?.ok_or_else(|| not_found(t))?),
                Some(n @ (Node::ConfXml | Node::ConfCdi)) => {
                    return self.read(self.ino(n), offset, size)
                }
                _ if self.is_temp_dir(ino) => return Err(FsError::IsDir(format!("inode {ino}"))),
                _ => return Err(not_found(format!("inode {ino}"))),
            },
            _ => return Err(FsError::IsDir(format!("inode {ino}"))),
        };
        Ok(whole.window(offset, size))
    }

    /// The entries of a directory (without `.` and `..`), sorted by name.
    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let n = self.node(ino)?;
        let mut out = Vec::new();
        let mut push_dir = |name: String, child: Node| -> FsResult<()> {
            match self.getattr(self.ino(child)) {
                Ok(attr) => out.push(DirEntry { name, attr }),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            Ok(())
        };
        if n == Node::Root && self.view == View::ArcGis {
            if self.conf_xml.is_some() {
                push_dir("conf.xml".into(), Node::ConfXml)?;
            }
            if self.conf_cdi.is_some() {
                push_dir("conf.cdi".into(), Node::ConfCdi)?;
            }
            if self.cache.layout() == Layout::ArcGis {
                push_dir("_alllayers".into(), Node::AllLayers)?;
            }
        }
        out.extend(self.temp_entries(ino));
        match n {
            n if n == self.levels_parent() => {
                for l in self.levels()? {
                    let mtime = self.dir_mtime(Some(l));
                    out.push(DirEntry {
                        name: self.view.level_name(l),
                        attr: self.dir_attr(Node::Level(l), 1, mtime),
                    });
                }
            }
            Node::Level(level) if self.view != View::ArcGis => {
                if !self.level_exists(level) && !self.renderable_dir(level, None) {
                    return Err(not_found(self.view.level_name(level)));
                }
                let mtime = self.dir_mtime(Some(level));
                for col in self.level_cols(level)? {
                    out.push(DirEntry {
                        name: col.to_string(),
                        attr: self.dir_attr(Node::Row { level, row: col }, 2, mtime),
                    });
                }
            }
            Node::Row { level, row } if self.view != View::ArcGis => {
                out.extend(self.written_entries(level, row));
                out.extend(self.col_entries(level, row)?);
            }
            Node::Level(level) => {
                if !self.level_exists(level) && !self.renderable_dir(level, None) {
                    return Err(not_found(exploded::level_dir(level)));
                }
                let mtime = self.dir_mtime(Some(level));
                let mut rows = self.rows(level)?;
                if let Some((r, _)) = self.listed_range(level) {
                    rows.extend(r);
                }
                for row in rows {
                    out.push(DirEntry {
                        name: exploded::row_dir(row),
                        attr: self.dir_attr(Node::Row { level, row }, 2, mtime),
                    });
                }
            }
            Node::Row { level, row } => {
                out.extend(self.written_entries(level, row));
                for (col, _) in self.row_tiles(level, row)? {
                    let t = TileAddr::new(level, row, col);
                    match self.indexed_attr(t) {
                        Ok(Some((attr, kind))) => {
                            out.push(DirEntry {
                                name: exploded::col_file(col, kind.ext()),
                                attr,
                            });
                            continue;
                        }
                        Ok(None) => {}
                        Err(_) => {
                            out.push(self.unsized_entry(t));
                            continue;
                        }
                    }
                    match self.tile(t) {
                        Ok(Some(b)) => out.push(DirEntry {
                            name: exploded::col_file(col, self.cache.kind_of(&b).ext()),
                            attr: self.tile_attr(t, &b),
                        }),
                        Ok(None) => {}
                        // A broken entry stays listed (reads of it give EIO), the rest keep working.
                        Err(_) => out.push(self.unsized_entry(t)),
                    }
                }
                // Renderable names, listed without rendering: size 0 until looked up (the adapter
                // gives such entries no TTL, so the kernel asks, and the lookup renders).
                if let Some((rows, cols)) = self.listed_range(level) {
                    if rows.contains(&row) {
                        for col in cols {
                            out.push(self.unsized_entry(TileAddr::new(level, row, col)));
                        }
                    }
                }
            }
            Node::Root => {}
            Node::Temp(_) if self.is_temp_dir(ino) => {}
            _ => return Err(FsError::NotDir(format!("inode {ino}"))),
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// Space figures of the file system holding the cache.
    /// Errors: the statvfs(2) failure, naming the cache folder.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let path = self.cache.root();
        let st = rustix::fs::statvfs(path).map_err(|e| Error::io(path, e.into()))?;
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: u32::try_from(st.f_bsize).unwrap_or(u32::MAX),
            frsize: u32::try_from(st.f_frsize).unwrap_or(u32::MAX),
            // Names in the tree are at most `.Cxxxxxxxx.png.XXXXXX` long; 255 as most file
            // systems, whatever the cache's own file system allows.
            namelen: 255,
        })
    }
}

/// `statfs` answer: the figures of statvfs(2) of the cache folder (blocks in `frsize` units).
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    /// Size of the file system, in `frsize` units.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Preferred I/O block size, bytes.
    pub bsize: u32,
    /// Fragment size (the unit of the block counts), bytes.
    pub frsize: u32,
    /// Longest name, bytes.
    pub namelen: u32,
}

/// Bytes of a file, without copying: a tile slice or a shared buffer, windowed.
pub enum FileBytes {
    /// A tile (a slice of a mapped bundle, or owned bytes).
    Tile(TileBytes),
    /// Bytes shared with their owner (conf.xml, a file being written).
    Shared(Arc<Vec<u8>>),
    /// The bytes a read handle kept from its open.
    Snapshot(Arc<FileBytes>),
    /// `range` of the inner bytes.
    Window(Box<FileBytes>, std::ops::Range<usize>),
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.full().len())
    }
}

impl FileBytes {
    fn full(&self) -> &[u8] {
        match self {
            FileBytes::Tile(t) => t,
            FileBytes::Shared(v) => v,
            FileBytes::Snapshot(s) => s.full(),
            FileBytes::Window(inner, r) => &inner.full()[r.clone()],
        }
    }

    fn window(self, offset: u64, size: u32) -> FileBytes {
        let len = self.full().len();
        let start = (offset.min(len as u64)) as usize;
        let end = (start + size as usize).min(len);
        FileBytes::Window(Box::new(self), start..end)
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        self.full()
    }
}
