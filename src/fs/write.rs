//! Writes through the tree: files being written, temporary names, folders made by mkdir, and the
//! operations (create, write, truncate, rename, unlink, mkdir, rmdir, fsync) that end in the write
//! buffer. Plain methods, tested without a kernel.
//!
//! The rules (in the names of the ArcGIS layout; the XYZ and TMS views of [`super::View`] take
//! the same rules in theirs: column folders `z/x` for row folders, `y.ext` for `Cxxxxxxxx.ext`):
//! - Tiles live in row folders. A name that is a tile name (`Cxxxxxxxx.png|jpg`) is that tile; its
//!   bytes are committed (checked, merged in MERGE mode, buffered) when the file is closed,
//!   fsync'd or truncated outside an open. A bad tile fails that close/fsync with EINVAL
//!   ([`FsError::BadTile`], naming the file); nothing stored changes.
//! - *Temporaries* live in memory: a name starting with `.` in any folder of the tree (rsync's
//!   `.Cxxxxxxxx.png.XXXXXX`, its `--delay-updates` folder `.~tmp~`, a `--partial-dir` or a
//!   `--temp-dir` made inside the tree), and every name inside a temporary folder. Temporary files
//!   and folders can be written, renamed among temporary names, listed and removed; a temporary
//!   file renamed onto a tile name (in a row folder, from any folder) commits it, and one renamed
//!   onto `conf.xml`/`conf.cdi` is accepted when it holds the bytes the mount shows (rsync of a
//!   whole cache) and refused otherwise; `conf.xml`/`conf.cdi` written in place (`cp`, `tar`)
//!   likewise, judged at close. What is still temporary at unmount was never stored: the
//!   daemon ends with an error naming the files, so `bundlefs unmount` exits non-zero.
//! - A stored tile cannot become a temporary (EPERM: rsync `--backup`/`--backup-dir` into the
//!   tree fail loudly): it would live only in memory and be lost at unmount.
//! - Any other name is refused with EPERM ([`FsError::NotPermitted`]).
//! - mkdir of `Lnn` (a level of the scheme) and `Rxxxxxxxx` works; bundles appear with their first
//!   tile. rmdir works on folders without tiles. Level and row folders cannot be renamed (EXDEV:
//!   `mv` copies).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::errno::{FsError, FsResult};
use super::inode::Node;
use super::{Attr, DirEntry, Invalidation, Kind, TreeFs, View};
use crate::cache::buffer::WriteBuffer;
use crate::cache::Layout;
use crate::format::exploded;
use crate::format::sniff::ImageKind;
use crate::format::{TileAddr, MAX_TILE_SIZE};
use crate::Error;

/// A tile file open for writing.
pub(super) struct OpenTile {
    tile: TileAddr,
    /// The folder it is listed in: (level, key of [`super::View::folder_name`]).
    folder: (u8, u32),
    /// The name it is written under (its extension says what it must hold).
    name: String,
    kind: ImageKind,
    data: Vec<u8>,
    dirty: bool,
    /// Write handles open on it.
    opens: u32,
    mtime: Option<SystemTime>,
}

/// A temporary file or folder (see the module docs), kept in memory.
pub(super) struct Temp {
    /// The folder holding it (any folder of the tree, or a temporary folder).
    parent: u64,
    /// The tile folder (level, key of [`super::View::folder_name`]) holding it directly, which
    /// exists while it does.
    row: Option<(u8, u32)>,
    name: String,
    /// A folder (no bytes) or a file.
    dir: bool,
    data: Vec<u8>,
    mtime: SystemTime,
}

#[derive(Default)]
pub(super) struct WriteState {
    open: HashMap<u64, OpenTile>,
    /// Temporary files and folders by inode, and their inodes by (folder inode, name).
    temps: HashMap<u64, Temp>,
    temp_names: HashMap<(u64, String), u64>,
    /// Temporary inodes renamed onto a tile (or onto an equal conf.xml/conf.cdi): the kernel may
    /// keep using them for that name until it forgets the inode; dropped on FORGET.
    aliases: HashMap<u64, Node>,
    next_temp: u64,
    /// Folders made by mkdir: (level, None) or (level, Some(row)) (XYZ and TMS views: Some
    /// column).
    created: BTreeSet<(u8, Option<u32>)>,
    /// conf.xml / conf.cdi written in place (`cp`, `tar` of a whole cache), by the inode written
    /// through (the file's own, or a temporary renamed onto it that the kernel still uses):
    /// which of the two, the bytes written so far, the write handles open. Compared with the
    /// shown file at close.
    conf_writes: HashMap<u64, (Node, Vec<u8>, u32)>,
}

impl WriteState {
    pub(super) fn created_level(&self, l: u8) -> bool {
        self.created
            .range((l, None)..=(l, Some(u32::MAX)))
            .next()
            .is_some()
    }
    pub(super) fn created_levels(&self) -> Vec<u8> {
        self.created.iter().map(|(l, _)| *l).collect()
    }
    pub(super) fn created_rows(&self, l: u8) -> Vec<u32> {
        self.created
            .range((l, Some(0))..=(l, Some(u32::MAX)))
            .filter_map(|(_, r)| *r)
            .collect()
    }
    /// Whether a tile folder (level, key) must exist for what is being written in it.
    pub(super) fn row_in_use(&self, l: u8, r: u32) -> bool {
        self.created.contains(&(l, Some(r))) || self.folder_busy(l, r)
    }

    /// Whether temporaries or files being written sit in tile folder (level, key).
    fn folder_busy(&self, l: u8, r: u32) -> bool {
        self.temps.values().any(|t| t.row == Some((l, r)))
            || self.open.values().any(|o| o.folder == (l, r))
    }
}

/// Write handles are told apart from read handles by this file handle.
pub const WRITE_FH: u64 = 1;

impl TreeFs {
    /// The write buffer, or [`FsError::ReadOnly`] naming `what` was to change.
    fn writer_or_rofs(&self, what: impl std::fmt::Display) -> FsResult<&Arc<WriteBuffer>> {
        self.writer
            .as_ref()
            .filter(|_| self.writable)
            .ok_or_else(|| FsError::ReadOnly(what.to_string()))
    }

    /// A rendered copy of `t` held in memory is stale once `t` is written or deleted.
    fn forget_rendered(&self, t: TileAddr) {
        if let Some(r) = &self.renderer {
            r.forget(t);
        }
    }

    /// Path of level `l`'s folder inside the tree, with a trailing `/`, for messages.
    fn level_path(&self, l: u8) -> String {
        match (self.view(), self.cache.layout()) {
            (View::ArcGis, Layout::ArcGis) => format!("_alllayers/{}/", exploded::level_dir(l)),
            (view, _) => format!("{}/", view.level_name(l)),
        }
    }

    /// Path of a name in tile folder (level, `key`) inside the tree, for messages.
    fn tree_path(&self, level: u8, key: u32, name: &str) -> String {
        format!(
            "{}{}/{name}",
            self.level_path(level),
            self.view().folder_name(key)
        )
    }

    /// A file renamed onto a name that is not a tile's, in tile folder `folder` if it is one.
    fn not_a_tile_name(&self, from: &str, to: String, folder: Option<(u8, u32)>) -> FsError {
        tracing::debug!("rename {from} -> {to}: not a tile name");
        self.counted.written(false);
        let name = to.rsplit('/').next().unwrap_or_default().to_string();
        FsError::NotPermitted {
            why: self.why_not_a_tile(folder.map(|f| f.0), &name, "").into(),
            path: to,
        }
    }

    /// Why `name` (in a tile folder of `level`) names no tile: in the XYZ and TMS views a `y`
    /// past the zoom's 2^level rows is said as such; else what a tile name is, and `or` (what
    /// else the place takes).
    fn why_not_a_tile(&self, level: Option<u8>, name: &str, or: &str) -> String {
        if let (View::Xyz | View::Tms, Some(l)) = (self.view(), level) {
            let n = name
                .split_once('.')
                .and_then(|(y, _)| crate::format::xyz::parse_number(y));
            if let Some(y) = n.filter(|y| *y >= (1u32 << l.min(31))) {
                return format!(
                    "y {y} is outside zoom {l}'s rows (0-{})",
                    (1u64 << l.min(31)) - 1
                );
            }
        }
        format!("not {}{or}", self.view().names().tile)
    }

    /// Whether `name` is a folder name of the tree (`_alllayers`, `Lnn`, `Rxxxxxxxx`; XYZ and
    /// TMS views: a zoom or column number).
    fn tree_folder_name(&self, name: &str) -> bool {
        match self.view() {
            View::ArcGis => {
                name == "_alllayers"
                    || exploded::parse_level_dir(name).is_ok_and(|l| exploded::level_dir(l) == name)
                    || exploded::parse_row_dir(name).is_ok_and(|r| exploded::row_dir(r) == name)
            }
            _ => crate::format::xyz::parse_number(name).is_some_and(|n| n.to_string() == name),
        }
    }

    /// The tile folder (level, key) tile `t` is listed in.
    fn folder_of(&self, t: TileAddr) -> (u8, u32) {
        match self.tile_entry(t, "png").0 {
            Node::Row { level, row } => (level, row),
            _ => (t.level, t.row),
        }
    }

    fn row_of(&self, parent: u64) -> Option<(u8, u32)> {
        match self.inodes.node(parent)? {
            Node::Row { level, row } => Some((level, row)),
            _ => None,
        }
    }

    /// The inode of temporary file or folder `name` in folder `parent`, if there is one.
    pub(super) fn temp_ino(&self, parent: u64, name: &str) -> Option<u64> {
        self.w
            .lock()
            .unwrap()
            .temp_names
            .get(&(parent, name.to_string()))
            .copied()
    }

    /// A tile of row `level`/`row` being written under `name`, while its bytes are not committed.
    pub(super) fn lookup_written(&self, level: u8, row: u32, name: &str) -> FsResult<Option<Attr>> {
        if self.writer.is_none() {
            return Ok(None);
        }
        if let Some((t, _)) = self.tile_file_name(level, row, name) {
            let ino = self.ino(Node::Tile(t));
            let w = self.w.lock().unwrap();
            if let Some(o) = w.open.get(&ino) {
                if o.dirty && o.name == name {
                    return Ok(Some(open_attr_of(ino, o)));
                }
            }
        }
        Ok(None)
    }

    /// Attributes of a tile being written, while its bytes are not committed yet (once committed,
    /// what is stored, perhaps merged, is what readers see, even before the last release).
    pub(super) fn open_attr(&self, ino: u64) -> Option<Attr> {
        let w = self.w.lock().unwrap();
        w.open
            .get(&ino)
            .filter(|o| o.dirty)
            .map(|o| open_attr_of(ino, o))
    }

    pub(super) fn temp_attr(&self, ino: u64) -> FsResult<Attr> {
        let alias = {
            let w = self.w.lock().unwrap();
            if let Some(o) = w.open.get(&ino).filter(|o| o.dirty) {
                return Ok(open_attr_of(ino, o));
            }
            if let Some(t) = w.temps.get(&ino) {
                return Ok(temp_attr_of(ino, t));
            }
            w.aliases.get(&ino).copied()
        };
        match alias {
            Some(Node::Tile(t)) => {
                let b = self.stored_tile(t)?.ok_or_else(|| super::not_found(t))?;
                Ok(Attr {
                    ino,
                    ..self.tile_attr(t, &b)
                })
            }
            Some(n) => Ok(Attr {
                ino,
                ..self.getattr(self.ino(n))?
            }),
            None => Err(super::not_found(format!("inode {ino}"))),
        }
    }

    /// The tile a renamed temporary inode now stands for.
    pub(super) fn alias(&self, ino: u64) -> Option<TileAddr> {
        match self.alias_node(ino) {
            Some(Node::Tile(t)) => Some(t),
            _ => None,
        }
    }

    /// The node (a tile, conf.xml or conf.cdi) a renamed temporary inode now stands for.
    pub(super) fn alias_node(&self, ino: u64) -> Option<Node> {
        self.w.lock().unwrap().aliases.get(&ino).copied()
    }

    /// Whether `ino` is a temporary folder.
    pub(super) fn is_temp_dir(&self, ino: u64) -> bool {
        self.w
            .lock()
            .unwrap()
            .temps
            .get(&ino)
            .is_some_and(|t| t.dir)
    }

    /// The folder holding temporary folder `ino` (for `..` in listings).
    pub(super) fn temp_parent(&self, ino: u64) -> Option<u64> {
        self.w.lock().unwrap().temps.get(&ino).map(|t| t.parent)
    }

    /// Whether `name` in folder `parent` is a temporary name: a name starting with `.` in a
    /// folder of the tree, or any name in a temporary folder.
    fn temp_place(&self, parent: u64, name: &str) -> bool {
        match self.inodes.node(parent) {
            Some(Node::Temp(_)) => self.is_temp_dir(parent),
            Some(Node::Root | Node::AllLayers | Node::Level(_) | Node::Row { .. }) => {
                name.starts_with('.')
            }
            _ => false,
        }
    }

    /// The path of folder `ino` inside the tree, with a trailing `/` (empty for the root), for
    /// messages.
    fn dir_path(&self, ino: u64) -> String {
        match self.inodes.node(ino) {
            Some(Node::Temp(_)) => {
                let up = {
                    let w = self.w.lock().unwrap();
                    w.temps.get(&ino).map(|t| (t.parent, t.name.clone()))
                };
                match up {
                    Some((p, n)) if p != ino => format!("{}{n}/", self.dir_path(p)),
                    _ => String::new(),
                }
            }
            Some(Node::Row { level, row }) => self.tree_path(level, row, ""),
            Some(Node::Level(l)) => self.level_path(l),
            Some(Node::AllLayers) => "_alllayers/".to_string(),
            _ => String::new(),
        }
    }

    /// Makes a temporary file or folder `name` in `parent` (a temporary place).
    fn make_temp(&self, parent: u64, name: &str, dir: bool) -> FsResult<Attr> {
        let path = format!("{}{name}", self.dir_path(parent));
        let row = self.row_of(parent);
        let mut w = self.w.lock().unwrap();
        if w.temp_names.contains_key(&(parent, name.to_string())) {
            return Err(FsError::Exists(path));
        }
        w.next_temp += 1;
        let ino = self.ino(Node::Temp(w.next_temp));
        let t = Temp {
            parent,
            row,
            name: name.to_string(),
            dir,
            data: Vec::new(),
            mtime: SystemTime::now(),
        };
        let attr = temp_attr_of(ino, &t);
        w.temps.insert(ino, t);
        w.temp_names.insert((parent, name.to_string()), ino);
        Ok(attr)
    }

    /// Temporary files and folders in folder `ino`, for its listing.
    pub(super) fn temp_entries(&self, ino: u64) -> Vec<DirEntry> {
        let w = self.w.lock().unwrap();
        w.temps
            .iter()
            .filter(|(_, t)| t.parent == ino)
            .map(|(i, t)| DirEntry {
                name: t.name.clone(),
                attr: temp_attr_of(*i, t),
            })
            .collect()
    }

    /// Paths of the temporary files still in memory (never renamed onto a tile name).
    pub fn leftover_temps(&self) -> Vec<String> {
        let files: Vec<(u64, String)> = {
            let w = self.w.lock().unwrap();
            w.temps
                .values()
                .filter(|t| !t.dir)
                .map(|t| (t.parent, t.name.clone()))
                .collect()
        };
        let mut v: Vec<String> = files
            .into_iter()
            .map(|(p, n)| format!("{}{n}", self.dir_path(p)))
            .collect();
        v.sort();
        v
    }

    /// What was lost with the temporary files still in memory at unmount, naming up to ten of
    /// them; None when there are none.
    pub fn leftover_message(&self) -> Option<String> {
        const SHOWN: usize = 10;
        let left = self.leftover_temps();
        if left.is_empty() {
            return None;
        }
        let more = left.len().saturating_sub(SHOWN);
        Some(format!(
            "{} never renamed onto a tile name, so not stored: {}{}",
            crate::error::count(left.len() as u64, "temporary file"),
            left[..left.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }

    /// Moves temporary file or folder `ino` to temporary name `newname` in `newparent`, replacing
    /// a temporary of the same kind there (an empty one, for folders), as rename(2) does.
    fn move_temp(&self, ino: u64, newparent: u64, newname: &str) -> FsResult<()> {
        let to_path = format!("{}{newname}", self.dir_path(newparent));
        // A folder cannot move into itself or below.
        let mut up = Some(newparent);
        while let Some(p) = up {
            if p == ino {
                return Err(FsError::Invalid {
                    what: to_path,
                    why: "a folder cannot be moved into itself".into(),
                });
            }
            up = self.temp_parent(p);
        }
        let row = self.row_of(newparent);
        let mut w = self.w.lock().unwrap();
        let dir = w
            .temps
            .get(&ino)
            .ok_or_else(|| super::not_found(newname))?
            .dir;
        let key = (newparent, newname.to_string());
        if let Some(&old) = w.temp_names.get(&key) {
            if old == ino {
                return Ok(());
            }
            let old_dir = w.temps.get(&old).is_some_and(|t| t.dir);
            match (dir, old_dir) {
                (false, true) => return Err(FsError::IsDir(to_path)),
                (true, false) => return Err(FsError::NotDir(to_path)),
                (true, true) if w.temps.values().any(|t| t.parent == old) => {
                    return Err(FsError::NotEmpty(to_path))
                }
                _ => {}
            }
            w.temp_names.remove(&key);
            w.temps.remove(&old);
        }
        let t = w
            .temps
            .get_mut(&ino)
            .ok_or_else(|| super::not_found(newname))?;
        let from = (
            t.parent,
            std::mem::replace(&mut t.name, newname.to_string()),
        );
        t.parent = newparent;
        t.row = row;
        w.temp_names.remove(&from);
        w.temp_names.insert(key, ino);
        Ok(())
    }

    /// The kernel dropped an inode: a renamed temporary inode's alias is no longer needed.
    pub fn forget(&self, ino: u64) {
        if let Some(Node::Temp(_)) = self.inodes.node(ino) {
            self.w.lock().unwrap().aliases.remove(&ino);
        }
    }

    /// Bytes of a file being written (open tile or temporary file).
    pub(super) fn written_bytes(&self, ino: u64) -> Option<Arc<Vec<u8>>> {
        let w = self.w.lock().unwrap();
        if let Some(o) = w.open.get(&ino).filter(|o| o.dirty) {
            return Some(Arc::new(o.data.clone()));
        }
        w.temps
            .get(&ino)
            .filter(|t| !t.dir)
            .map(|t| Arc::new(t.data.clone()))
    }

    /// Tiles being written in a row (not committed yet), for its listing.
    pub(super) fn written_entries(&self, level: u8, row: u32) -> Vec<DirEntry> {
        if self.writer.is_none() {
            return Vec::new();
        }
        let w = self.w.lock().unwrap();
        w.open
            .iter()
            .filter(|(_, o)| o.dirty && o.folder == (level, row))
            .map(|(ino, o)| DirEntry {
                name: o.name.clone(),
                attr: open_attr_of(*ino, o),
            })
            .collect()
    }

    /// Creates a file and opens it for writing: a tile in a row folder, or a temporary file.
    pub fn create(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.writer_or_rofs(name)?;
        if self.temp_place(parent, name) {
            return self.make_temp(parent, name, false);
        }
        let names = self.view().names();
        let Some((level, row)) = self.row_of(parent) else {
            self.counted.written(false);
            return Err(FsError::NotPermitted {
                path: format!("{}{name}", self.dir_path(parent)),
                why: format!(
                    "files can only be made in {}, or under temporary names (.*)",
                    names.folder
                )
                .into(),
            });
        };
        let path = self.tree_path(level, row, name);
        let Some((t, kind)) = self.tile_file_name(level, row, name) else {
            self.counted.written(false);
            return Err(FsError::NotPermitted {
                path,
                why: self
                    .why_not_a_tile(Some(level), name, " nor a temporary name (.*)")
                    .into(),
            });
        };
        self.check_in_world(t, &path)?;
        let ino = self.ino(Node::Tile(t));
        let mut w = self.w.lock().unwrap();
        let o = w.open.entry(ino).or_insert(OpenTile {
            tile: t,
            folder: (level, row),
            name: name.to_string(),
            kind,
            data: Vec::new(),
            dirty: true,
            opens: 0,
            mtime: None,
        });
        o.opens += 1;
        o.data.clear();
        o.dirty = true;
        Ok(open_attr_of(ino, o))
    }

    /// Opens an existing file for writing (`truncate`: O_TRUNC). Returns the handle to use.
    pub fn open_write(&self, ino: u64, truncate: bool) -> FsResult<u64> {
        self.writer_or_rofs(format_args!("inode {ino}"))?;
        let node = self.node(ino)?;
        if let Node::Temp(_) = node {
            let mut w = self.w.lock().unwrap();
            if let Some(t) = w.temps.get_mut(&ino) {
                if t.dir {
                    return Err(FsError::IsDir(t.name.clone()));
                }
                if truncate {
                    t.data.clear();
                }
                return Ok(WRITE_FH);
            }
        }
        let target = match node {
            Node::Temp(_) => self.alias_node(ino).ok_or_else(|| super::not_found(ino))?,
            n => n,
        };
        let t = match target {
            Node::Tile(t) => t,
            Node::ConfXml | Node::ConfCdi => {
                // Written in place: kept aside, compared with the shown file at close. Also
                // through a temporary renamed onto it (rsync's), which the kernel may still use
                // for the name.
                let shown = self.read(self.ino(target), 0, u32::MAX)?.bytes().to_vec();
                let mut w = self.w.lock().unwrap();
                let e = w.conf_writes.entry(ino).or_insert((target, shown, 0));
                if truncate {
                    e.1.clear();
                }
                e.2 += 1;
                return Ok(WRITE_FH);
            }
            _ => return Err(FsError::IsDir(format!("inode {ino}"))),
        };
        {
            let mut w = self.w.lock().unwrap();
            if let Some(o) = w.open.get_mut(&ino) {
                o.opens += 1;
                if truncate {
                    o.data.clear();
                    o.dirty = true;
                }
                return Ok(WRITE_FH);
            }
        }
        let bytes = self.stored_tile(t)?.ok_or_else(|| super::not_found(t))?;
        let kind = self.cache.kind_of(&bytes);
        let o = OpenTile {
            tile: t,
            folder: self.folder_of(t),
            name: self.tile_entry(t, kind.ext()).1,
            kind,
            data: if truncate { Vec::new() } else { bytes.to_vec() },
            dirty: truncate,
            opens: 1,
            mtime: None,
        };
        self.w.lock().unwrap().open.insert(ino, o);
        Ok(WRITE_FH)
    }

    /// Writes bytes into a file open for writing.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.writer_or_rofs(format_args!("inode {ino}"))?;
        if offset > MAX_TILE_SIZE as u64 || offset as usize + data.len() > MAX_TILE_SIZE {
            return Err(FsError::TooBig(format!("inode {ino}")));
        }
        let end = offset as usize + data.len();
        let mut w = self.w.lock().unwrap();
        let buf = if let Some(o) = w.open.get_mut(&ino) {
            o.dirty = true;
            // The first bytes already say what the file holds: a tile whose content contradicts
            // its name fails at this write (`echo junk > C….png` reports it; a shell ignores
            // errors at close), not only at close.
            if offset == 0 && !data.is_empty() {
                let why = if data.len() >= 12 {
                    head_contradicts(data, o.kind)
                } else {
                    short_head_contradicts(data, o.kind)
                };
                if let Some(why) = why {
                    let path = self.tree_path(o.folder.0, o.folder.1, &o.name);
                    return Err(FsError::BadTile {
                        path,
                        source: Error::invalid(why),
                    });
                }
            }
            &mut o.data
        } else if let Some(t) = w.temps.get_mut(&ino) {
            t.mtime = SystemTime::now();
            &mut t.data
        } else if let Some((_, b, _)) = w.conf_writes.get_mut(&ino) {
            b
        } else {
            return Err(FsError::NotOpenForWriting(ino));
        };
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[offset as usize..end].copy_from_slice(data);
        Ok(data.len() as u32)
    }

    /// Changes size and/or modification time (mode and owner are not kept: tiles show 0644).
    pub fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        let node = self.node(ino)?;
        let file = matches!(node, Node::Tile(_) | Node::Temp(_));
        if (size.is_some() || mtime.is_some()) && file {
            self.writer_or_rofs(format_args!("inode {ino}"))?;
        }
        if let Some(s) = size {
            // conf.xml or conf.cdi only through a write handle (O_TRUNC, ftruncate): the result
            // is judged at close.
            let mut w = self.w.lock().unwrap();
            if let Some((_, b, _)) = w.conf_writes.get_mut(&ino) {
                b.resize(s.min(MAX_TILE_SIZE as u64) as usize, 0);
                drop(w);
                return self.getattr(ino);
            }
            if matches!(node, Node::ConfXml | Node::ConfCdi) {
                return Err(conf_read_only(node));
            }
        }
        if !file {
            return self.getattr(ino); // folder times and modes are not kept
        }
        if let Some(s) = size {
            if s > MAX_TILE_SIZE as u64 {
                return Err(FsError::TooBig(format!("inode {ino}: size {s}")));
            }
        }
        let handled = {
            let mut w = self.w.lock().unwrap();
            if let Some(o) = w.open.get_mut(&ino) {
                if let Some(s) = size {
                    o.data.resize(s as usize, 0);
                    o.dirty = true;
                }
                if mtime.is_some() {
                    o.mtime = mtime;
                }
                // A clean open tile is not committed at its release: a time set through its
                // handle (`touch` uses futimens) goes to the buffer or the store below, as for
                // a closed tile.
                o.dirty
            } else if let Some(t) = w.temps.get_mut(&ino) {
                if let Some(s) = size {
                    if t.dir {
                        return Err(FsError::IsDir(t.name.clone()));
                    }
                    t.data.resize(s as usize, 0);
                }
                if let Some(m) = mtime {
                    t.mtime = m;
                }
                true
            } else {
                false
            }
        };
        if !handled {
            let t = match node {
                Node::Tile(t) => t,
                _ => match self.alias_node(ino) {
                    Some(Node::Tile(t)) => t,
                    // A temporary renamed onto an equal conf.xml: its times are not kept.
                    Some(n @ (Node::ConfXml | Node::ConfCdi)) if size.is_none() => {
                        return self.getattr(self.ino(n)).map(|a| Attr { ino, ..a })
                    }
                    Some(n @ (Node::ConfXml | Node::ConfCdi)) => return Err(conf_read_only(n)),
                    _ => return Err(super::not_found(ino)),
                },
            };
            if let Some(s) = size {
                // Truncate outside an open: commit the truncated tile now.
                self.open_write(ino, false)?;
                let r = self.setattr(ino, Some(s), mtime);
                let c = self.release(ino, WRITE_FH);
                r?;
                c?;
                return self.getattr(ino);
            }
            if let Some(m) = mtime {
                let w = self.writer_or_rofs(t)?;
                if !w.set_time(t, m) && !self.cache.set_tile_time(t, m)? {
                    return Err(super::not_found(t));
                }
            }
        }
        self.getattr(ino)
    }

    /// Commits a dirty open tile: checked, merged, buffered. A refused tile is dropped (the
    /// kernel is told to forget the bytes it cached) and the error returned.
    fn commit_open(&self, ino: u64) -> FsResult<()> {
        let (t, kind, data, mtime, path) = {
            let mut w = self.w.lock().unwrap();
            let Some(o) = w.open.get_mut(&ino) else {
                return Ok(());
            };
            if !o.dirty {
                return Ok(());
            }
            o.dirty = false;
            let path = self.tree_path(o.folder.0, o.folder.1, &o.name);
            (o.tile, o.kind, o.data.clone(), o.mtime, path)
        };
        self.commit_tile(ino, t, kind, data, mtime, &path)
    }

    /// Refuses a tile outside the tiling scheme's known world (level 0 of Web Mercator has one
    /// tile: `L00/R00000000/C00000005.png` is no tile of it), naming the rows and columns the
    /// level has.
    fn check_in_world(&self, t: TileAddr, path: &str) -> FsResult<()> {
        let Some(s) = self.cache.scheme() else {
            return Ok(());
        };
        if crate::format::extent::tile_in_world(s, t) {
            return Ok(());
        }
        let range = s
            .tile_range(t.level, &crate::format::extent::scheme_extent(s))
            .map_or("none".to_string(), |(r, c)| {
                format!(
                    "rows {}-{}, columns {}-{}",
                    r.start,
                    r.end.saturating_sub(1),
                    c.start,
                    c.end.saturating_sub(1)
                )
            });
        Err(FsError::Invalid {
            what: path.to_string(),
            why: format!(
                "tile {t} lies outside the tiling scheme's world (level {} has {range}); not stored",
                t.level
            ),
        })
    }

    fn commit_tile(
        &self,
        ino: u64,
        t: TileAddr,
        kind: ImageKind,
        data: Vec<u8>,
        mtime: Option<SystemTime>,
        path: &str,
    ) -> FsResult<()> {
        let w = self.writer_or_rofs(path)?;
        if let Err(e) = self.check_in_world(t, path) {
            self.queue(Invalidation::Inode(ino));
            self.counted.written(false);
            return Err(e);
        }
        let before = self
            .stored_tile(t)
            .ok()
            .flatten()
            .map(|b| self.cache.kind_of(&b));
        let len = data.len();
        let committed = w.commit(t, kind, data, mtime.unwrap_or_else(SystemTime::now));
        self.counted.written(committed.is_ok());
        match committed {
            Ok(()) => {
                self.forget_rendered(t);
                // MERGE may store other bytes than were written: the kernel must re-read them.
                if w.get(t).is_some_and(|p| match p {
                    crate::cache::buffer::Pending::Put { bytes, .. } => bytes.len() != len,
                    _ => false,
                }) || w.mode() == crate::cache::commit::ImportMode::Merge
                {
                    self.queue(Invalidation::Inode(ino));
                }
                // A MIXED cache's tile that changed kind changes name: drop the old name.
                if let Some(old) = before.filter(|k| *k != kind) {
                    let (folder, name) = self.tile_entry(t, old.ext());
                    self.queue(Invalidation::Entry {
                        parent: self.ino(folder),
                        name,
                    });
                }
                Ok(())
            }
            Err(e) => {
                self.queue(Invalidation::Inode(ino));
                Err(match e {
                    // The cache refused the bytes (kind, size, decoding, merge).
                    Error::Invalid(_) => FsError::BadTile {
                        path: path.to_string(),
                        source: e,
                    },
                    e => {
                        tracing::error!("{path}: not stored: {e}");
                        FsError::Cache(e)
                    }
                })
            }
        }
    }

    /// close(2) of a handle: commits what was written. Errors reach the closing program.
    pub fn flush(&self, ino: u64) -> FsResult<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        self.check_conf_write(ino)?;
        self.commit_open(ino)
    }

    /// At close of conf.xml or conf.cdi written in place: accepted when the bytes equal the shown
    /// file (or the cache's own), refused naming the file otherwise. Nothing changes either way.
    fn check_conf_write(&self, ino: u64) -> FsResult<()> {
        let (n, written) = {
            let w = self.w.lock().unwrap();
            match w.conf_writes.get(&ino) {
                Some((n, b, _)) => (*n, b.clone()),
                None => return Ok(()),
            }
        };
        self.accept_conf_copy(n, &written)
    }

    /// Last close of a handle: commits if still dirty, forgets the open file with the last one.
    pub fn release(&self, ino: u64, fh: u64) -> FsResult<()> {
        if self.writer.is_none() || fh != WRITE_FH {
            return Ok(());
        }
        let r = self
            .check_conf_write(ino)
            .and_then(|()| self.commit_open(ino));
        let mut w = self.w.lock().unwrap();
        if let Some((_, _, opens)) = w.conf_writes.get_mut(&ino) {
            *opens = opens.saturating_sub(1);
            if *opens == 0 {
                w.conf_writes.remove(&ino);
            }
        }
        if let Some(o) = w.open.get_mut(&ino) {
            o.opens = o.opens.saturating_sub(1);
            if o.opens == 0 && !o.dirty {
                w.open.remove(&ino);
            }
        }
        r
    }

    /// fsync(2): commits the file and writes its bundle durably.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        let Some(w) = self.writer.as_ref() else {
            return Ok(());
        };
        self.commit_open(ino)?;
        let t = match self.node(ino)? {
            Node::Tile(t) => Some(t),
            Node::Temp(_) => self.alias(ino),
            _ => None,
        };
        if let Some(t) = t {
            w.flush_bundle(t.bundle())?;
        }
        Ok(())
    }

    /// Removes a file: a tile leaves its bundle, a temporary file is dropped.
    pub fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        let w = self.writer_or_rofs(name)?;
        {
            let mut st = self.w.lock().unwrap();
            let key = (parent, name.to_string());
            if let Some(&ino) = st.temp_names.get(&key) {
                if st.temps.get(&ino).is_some_and(|t| t.dir) {
                    return Err(FsError::IsDir(name.to_string()));
                }
                st.temp_names.remove(&key);
                st.temps.remove(&ino);
                return Ok(());
            }
        }
        let Some((level, row)) = self.row_of(parent) else {
            return Err(match (self.inodes.node(parent), name) {
                (Some(Node::Root), "conf.xml") if self.conf_xml.is_some() => {
                    conf_read_only(Node::ConfXml)
                }
                (Some(Node::Root), "conf.cdi") if self.conf_cdi.is_some() => {
                    conf_read_only(Node::ConfCdi)
                }
                _ => super::not_found(name),
            });
        };
        let (t, kind) = self
            .tile_file_name(level, row, name)
            .ok_or_else(|| super::not_found(name))?;
        let ino = self.ino(Node::Tile(t));
        let open = self.w.lock().unwrap().open.remove(&ino);
        let stored = self.stored_tile(t)?;
        self.forget_rendered(t);
        match stored {
            Some(b) if self.cache.kind_of(&b) == kind => Ok(w.delete(t)?),
            _ if open.is_some() => Ok(()),
            _ => Err(super::not_found(name)),
        }
    }

    /// Renames a file or a temporary folder. A temporary file renamed onto a tile name commits
    /// it (rsync's last step), from any folder; temporaries move freely among temporary names;
    /// a stored tile moves only onto another tile name (copy, then delete). Level and row folders
    /// give EXDEV (`mv` then copies).
    pub fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str) -> FsResult<()> {
        self.writer_or_rofs(name)?;
        let from_path = format!("{}{name}", self.dir_path(parent));
        let to_path = format!("{}{newname}", self.dir_path(newparent));
        if let Some(ino) = self.temp_ino(parent, name) {
            if self.temp_place(newparent, newname) {
                return self.move_temp(ino, newparent, newname);
            }
            if self.is_temp_dir(ino) {
                // Out of the temporaries: `mv` copies what it holds, name by name.
                return Err(FsError::CrossDevice(from_path));
            }
            return self.commit_temp(ino, newparent, newname, &to_path);
        }
        let src = match (self.row_of(parent), self.inodes.node(parent)) {
            (Some((l0, r0)), _) => self.tile_file_name(l0, r0, name).map(|(t, _)| t),
            (None, Some(Node::Root)) if self.lookup(parent, name).is_ok() => match name {
                "conf.xml" => return Err(conf_read_only(Node::ConfXml)),
                "conf.cdi" => return Err(conf_read_only(Node::ConfCdi)),
                _ => None,
            },
            _ => None,
        };
        let Some(src) = src else {
            // Folders hold bundles: moving them is a copy (EXDEV makes mv do that).
            return match self.lookup(parent, name) {
                Ok(a) if a.kind == Kind::Dir => Err(FsError::CrossDevice(from_path)),
                _ => Err(super::not_found(from_path)),
            };
        };
        if self.temp_place(newparent, newname) {
            return Err(FsError::NotPermitted {
                path: from_path,
                why: "a stored tile cannot become a temporary file (it would be kept in memory \
                      only and lost at unmount; rsync --backup-dir: name a folder outside the \
                      mount)"
                    .into(),
            });
        }
        let Some((dst, kind)) = self
            .row_of(newparent)
            .and_then(|(l1, r1)| self.tile_file_name(l1, r1, newname))
        else {
            return Err(self.not_a_tile_name(&from_path, to_path, self.row_of(newparent)));
        };
        if src == dst {
            return Ok(());
        }
        let bytes = self
            .stored_tile(src)?
            .ok_or_else(|| super::not_found(name))?;
        let mtime = self.cache.tile_mtime(src, &bytes);
        let dst_ino = self.ino(Node::Tile(dst));
        self.commit_tile(dst_ino, dst, kind, bytes.to_vec(), mtime, &to_path)?;
        Ok(self.writer_or_rofs(from_path)?.delete(src)?)
    }

    /// A temporary file renamed out of the temporaries: onto a tile name it commits the tile;
    /// onto conf.xml or conf.cdi it is accepted when it holds the bytes the mount shows (or those
    /// of the cache's own file), refused otherwise; any other name is refused.
    fn commit_temp(&self, ino: u64, newparent: u64, newname: &str, to_path: &str) -> FsResult<()> {
        let (data, mtime, from) = {
            let w = self.w.lock().unwrap();
            let f = w.temps.get(&ino).ok_or_else(|| super::not_found(to_path))?;
            (f.data.clone(), f.mtime, (f.parent, f.name.clone()))
        };
        let from_path = format!("{}{}", self.dir_path(from.0), from.1);
        let target = match (self.inodes.node(newparent), self.row_of(newparent)) {
            (Some(Node::Root), _) if matches!(newname, "conf.xml" | "conf.cdi") => {
                let n = if newname == "conf.xml" {
                    Node::ConfXml
                } else {
                    Node::ConfCdi
                };
                self.accept_conf_copy(n, &data)?;
                n
            }
            (_, Some((l1, r1))) => {
                let Some((t, kind)) = self.tile_file_name(l1, r1, newname) else {
                    return Err(self.not_a_tile_name(
                        &from_path,
                        to_path.to_string(),
                        Some((l1, r1)),
                    ));
                };
                self.commit_tile(ino, t, kind, data, Some(mtime), to_path)?;
                Node::Tile(t)
            }
            _ => return Err(self.not_a_tile_name(&from_path, to_path.to_string(), None)),
        };
        let mut w = self.w.lock().unwrap();
        w.temp_names.remove(&from);
        w.temps.remove(&ino);
        // The kernel keeps the temporary inode for this name until it forgets it (the alias
        // answers for it meanwhile). No entry invalidation here: sent while rsync is busy in
        // the same folder, it waits for the folder lock, and if the daemon is killed then the
        // waiting thread keeps the dead daemon from ever exiting.
        w.aliases.insert(ino, target);
        Ok(())
    }

    /// A copy of conf.xml or conf.cdi (`n`) written into the mount: accepted when `data` equals
    /// the file as the mount shows it, or as the cache holds it; refused (EPERM) naming the file
    /// otherwise. Nothing changes either way.
    fn accept_conf_copy(&self, n: Node, data: &[u8]) -> FsResult<()> {
        let (shown, own) = match n {
            Node::ConfXml => (&self.conf_xml, self.cache.conf().map(|c| c.raw())),
            _ => (&self.conf_cdi, self.cache.cdi()),
        };
        if shown.as_ref().is_some_and(|b| b.as_slice() == data) || own == Some(data) {
            return Ok(());
        }
        Err(FsError::NotPermitted {
            path: conf_name(n).to_string(),
            why: "conf.xml and conf.cdi are shown read-only: only a copy equal to the mount's \
                  (or the cache's own) file is accepted"
                .into(),
        })
    }

    /// Makes a level or row folder, or a temporary folder.
    pub fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.writer_or_rofs(name)?;
        let p = self.node(parent)?;
        if self.temp_place(parent, name) {
            if self.is_temp_dir(parent) && self.tree_folder_name(name) {
                // A copy of the tree's folders inside the temporaries (rsync --backup-dir, cp -r
                // into a hidden folder) is kept, not temporary: it would be lost at unmount.
                return Err(FsError::NotPermitted {
                    path: format!("{}{name}", self.dir_path(parent)),
                    why: "temporary folders hold files for a while, not copies of the tree's \
                          level and row folders (they would be lost at unmount; rsync \
                          --backup-dir: name a folder outside the mount)"
                        .into(),
                });
            }
            return self.make_temp(parent, name, true);
        }
        let exists = self.lookup(parent, name).is_ok();
        let not_permitted = |why| FsError::NotPermitted {
            path: name.to_string(),
            why,
        };
        let names = self.view().names();
        if p == self.levels_parent() {
            let Some(l) = self.view().parse_level(name) else {
                return Err(not_permitted(format!("not {}", names.level).into()));
            };
            if let Some(s) = self.cache.scheme() {
                if !s.lods.iter().any(|lod| lod.level == l) {
                    return Err(FsError::Invalid {
                        what: name.to_string(),
                        why: format!("level {l} is not in the cache's tiling scheme"),
                    });
                }
            }
            if exists {
                return Err(FsError::Exists(name.to_string()));
            }
            self.w.lock().unwrap().created.insert((l, None));
            return self.getattr(self.ino(Node::Level(l)));
        }
        if let Node::Level(level) = p {
            let Some(row) = self.view().parse_folder(level, name) else {
                let col = crate::format::xyz::parse_number(name)
                    .filter(|x| self.view() != View::ArcGis && x.to_string() == name);
                return Err(not_permitted(
                    match col {
                        Some(x) => format!(
                            "column {x} is outside zoom {level}'s columns (0-{})",
                            (1u64 << level.min(31)) - 1
                        ),
                        None => format!("not a folder name of {}", names.folder),
                    }
                    .into(),
                ));
            };
            if exists {
                return Err(FsError::Exists(name.to_string()));
            }
            self.w.lock().unwrap().created.insert((level, Some(row)));
            return self.getattr(self.ino(Node::Row { level, row }));
        }
        if exists {
            return Err(FsError::Exists(name.to_string()));
        }
        Err(not_permitted(
            format!("only folders of levels and {} can be made", names.folder).into(),
        ))
    }

    /// Removes an empty level, row or temporary folder.
    pub fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writer_or_rofs(name)?;
        let p = self.node(parent)?;
        {
            let mut w = self.w.lock().unwrap();
            let key = (parent, name.to_string());
            if let Some(&ino) = w.temp_names.get(&key) {
                if !w.temps.get(&ino).is_some_and(|t| t.dir) {
                    return Err(FsError::NotDir(name.to_string()));
                }
                if w.temps.values().any(|t| t.parent == ino) {
                    return Err(FsError::NotEmpty(name.to_string()));
                }
                w.temp_names.remove(&key);
                w.temps.remove(&ino);
                return Ok(());
            }
        }
        let a = match self.lookup(parent, name) {
            Ok(a) => a,
            // A row or column folder goes with its last tile, and the kernel may still know it
            // (`rm -r` removes the tiles, then the folder): removed already.
            Err(e) if e.is_not_found() => {
                return match p {
                    Node::Level(level) if self.view().parse_folder(level, name).is_some() => Ok(()),
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        match self.node(a.ino)? {
            Node::Row { level, row } if p == Node::Level(level) => {
                let busy = self.w.lock().unwrap().folder_busy(level, row);
                let holds = match self.view() {
                    View::ArcGis => !self.row_tiles(level, row)?.is_empty(),
                    _ => !self.col_tiles(level, row)?.is_empty(),
                };
                if busy || holds {
                    return Err(FsError::NotEmpty(name.to_string()));
                }
                self.w.lock().unwrap().created.remove(&(level, Some(row)));
                Ok(())
            }
            Node::Level(l) => {
                if !self.rows(l)?.is_empty() {
                    return Err(FsError::NotEmpty(name.to_string()));
                }
                let was_created = self.w.lock().unwrap().created.remove(&(l, None));
                if self.cache.level_exists(l) && !was_created {
                    // A level folder on disk without tiles (empty bundles): it stays. ENOTEMPTY,
                    // which `rsync --delete` and `rm -r` take as "kept" (rsync then exits 0);
                    // EPERM would fail the whole transfer.
                    tracing::info!(
                        "rmdir {}: the level folder stays while its bundle files do (they hold \
                         no tiles now)",
                        self.level_path(l)
                    );
                    return Err(FsError::NotEmpty(name.to_string()));
                }
                Ok(())
            }
            Node::ConfXml | Node::ConfCdi => Err(FsError::NotDir(name.to_string())),
            _ => Err(FsError::NotPermitted {
                path: name.to_string(),
                why: "only level and row folders can be removed".into(),
            }),
        }
    }

    /// The background flush: writes the bundles of the write buffer quiet for `idle` or holding a
    /// chunk of tiles.
    pub fn flush_due(&self, idle: std::time::Duration) -> FsResult<()> {
        if let Some(w) = &self.writer {
            let s = w.flush_due(idle)?;
            if s.tiles > 0 {
                tracing::info!(
                    "flushed {} into {} ({} bytes)",
                    crate::error::count(s.tiles as u64, "tile"),
                    crate::error::count(s.bundles as u64, "bundle"),
                    s.bytes_written
                );
            }
        }
        Ok(())
    }

    /// Writes everything waiting in the write buffer (unmount).
    pub fn flush_all(&self) -> FsResult<()> {
        if let Some(w) = &self.writer {
            let s = w.flush_all()?;
            if s.tiles > 0 {
                tracing::info!(
                    "flushed {} into {} ({} bytes)",
                    crate::error::count(s.tiles as u64, "tile"),
                    crate::error::count(s.bundles as u64, "bundle"),
                    s.bytes_written
                );
            }
        }
        Ok(())
    }
}

/// conf.xml and conf.cdi are shown, not written.
fn conf_read_only(n: Node) -> FsError {
    FsError::NotPermitted {
        path: conf_name(n).to_string(),
        why: "conf.xml and conf.cdi are shown read-only".into(),
    }
}

/// The file name of node `n`, conf.xml or conf.cdi.
fn conf_name(n: Node) -> &'static str {
    if n == Node::ConfXml {
        "conf.xml"
    } else {
        "conf.cdi"
    }
}

/// Why the first bytes of a file contradict the kind its name says (PNG, JPEG and LERC have
/// signatures; a vector tile may be raw protobuf, which has none); None when they agree.
fn head_contradicts(head: &[u8], named: ImageKind) -> Option<String> {
    let found = crate::format::sniff::sniff(head);
    match found {
        Some(k) if k == named => None,
        None if named == ImageKind::Pbf => None,
        Some(k) => Some(format!(
            "the bytes are {} but the name says .{}",
            k.name(),
            named.ext()
        )),
        None => Some(format!(
            "not a {} file (its first bytes are no {} signature); the name says .{}",
            named.name(),
            named.name(),
            named.ext()
        )),
    }
}

/// For a first write shorter than a signature check needs (`echo junk > C….png` writes 5 bytes):
/// why the bytes cannot begin a tile of `named`, when they are no prefix of its signature (PNG:
/// `89 50 4E 47 0D 0A 1A 0A`, or the `0D 0A 1A 0A` a PNG starts with when ArcGIS cut the first
/// four bytes; JPEG: `FF D8 FF`; PNG spec §5.2, JPEG/JFIF SOI). Other kinds are not judged here.
fn short_head_contradicts(head: &[u8], named: ImageKind) -> Option<String> {
    let starts: &[&[u8]] = match named {
        ImageKind::Png => &[b"\x89PNG\r\n\x1a\n", b"\r\n\x1a\n"],
        ImageKind::Jpeg => &[b"\xff\xd8\xff"],
        _ => return None,
    };
    let fits = starts.iter().any(|sig| {
        let n = head.len().min(sig.len());
        head[..n] == sig[..n]
    });
    (!fits).then(|| {
        format!(
            "not a {} file (its first bytes are no {} signature); the name says .{}",
            named.name(),
            named.name(),
            named.ext()
        )
    })
}

fn temp_attr_of(ino: u64, t: &Temp) -> Attr {
    Attr {
        ino,
        kind: if t.dir { Kind::Dir } else { Kind::File },
        size: t.data.len() as u64,
        mtime: t.mtime,
        nlink: if t.dir { 2 } else { 1 },
    }
}

fn open_attr_of(ino: u64, o: &OpenTile) -> Attr {
    Attr {
        ino,
        kind: Kind::File,
        size: o.data.len() as u64,
        mtime: o.mtime.unwrap_or_else(SystemTime::now),
        nlink: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::format::conf::{TileFormat, TileScheme};
    use crate::fs::errno::ToErrno;
    use std::time::{Duration, UNIX_EPOCH};

    fn tree() -> (tempfile::TempDir, TreeFs) {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::create(
            d.path(),
            &TileScheme::web_mercator(3, TileFormat::Png),
            None,
        )
        .unwrap();
        let w = Arc::new(WriteBuffer::new(Arc::new(c), 1 << 20));
        (d, TreeFs::writable(w))
    }

    fn png(v: u8) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(256, 256, image::Rgba([v, 2, 3, 255]));
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, image::ImageFormat::Png).unwrap();
        b.into_inner()
    }

    fn errno(r: FsResult<impl std::fmt::Debug>) -> i32 {
        r.unwrap_err().errno()
    }

    #[test]
    fn create_write_close_then_read_and_list() {
        let (_d, fs) = tree();
        let l2 = fs.ino(Node::Level(2));
        let all = fs.ino(Node::AllLayers);
        fs.mkdir(all, "L02").unwrap();
        let row = fs.mkdir(l2, "R00000001").unwrap().ino;
        let a = fs.create(row, "C00000002.png").unwrap();
        let bytes = png(9);
        fs.write(a.ino, 0, &bytes).unwrap();
        fs.flush(a.ino).unwrap();
        fs.release(a.ino, WRITE_FH).unwrap();
        assert_eq!(fs.getattr(a.ino).unwrap().size, bytes.len() as u64);
        assert_eq!(fs.read(a.ino, 0, 1 << 20).unwrap().bytes(), &bytes[..]);
        let names: Vec<String> = fs
            .readdir(row)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["C00000002.png"]);
        // The flush puts it in the bundle.
        fs.flush_all().unwrap();
        let t = TileAddr::new(2, 1, 2);
        assert_eq!(&fs.cache().tile(t).unwrap().unwrap()[..], &bytes[..]);
        // Unlink removes it; the empty row can then be removed.
        fs.unlink(row, "C00000002.png").unwrap();
        assert!(fs.lookup(row, "C00000002.png").is_err());
        fs.rmdir(l2, "R00000001").unwrap();
        assert_eq!(errno(fs.lookup(l2, "R00000001")), libc::ENOENT);
    }

    #[test]
    fn a_short_first_write_that_cannot_begin_the_named_kind_fails_at_once() {
        let (_d, fs) = tree();
        fs.mkdir(fs.ino(Node::AllLayers), "L01").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(1)), "R00000000").unwrap().ino;
        let a = fs.create(row, "C00000000.png").unwrap();
        // `echo junk > C….png`: 5 bytes, no PNG signature's start.
        assert_eq!(errno(fs.write(a.ino, 0, b"junk\n")), libc::EINVAL);
        // And again at close (for programs that look only there); nothing is stored.
        assert_eq!(errno(fs.flush(a.ino)), libc::EINVAL);
        let _ = fs.release(a.ino, WRITE_FH);
        // A PNG written a few bytes at a time passes its first write, and is stored whole.
        let b = fs.create(row, "C00000001.png").unwrap();
        let bytes = png(4);
        fs.write(b.ino, 0, &bytes[..3]).unwrap();
        fs.write(b.ino, 3, &bytes[3..]).unwrap();
        fs.flush(b.ino).unwrap();
        fs.release(b.ino, WRITE_FH).unwrap();
        // A JPEG name refuses PNG bytes, short or not.
        let c = fs.create(row, "C00000000.jpg").unwrap();
        assert_eq!(errno(fs.write(c.ino, 0, &bytes[..4])), libc::EINVAL);
        let _ = fs.release(c.ino, WRITE_FH);
        assert!(fs.cache().tile(TileAddr::new(1, 0, 0)).unwrap().is_none());
    }

    #[test]
    fn the_snapshot_counts_reads_writes_refusals_and_flushes() {
        let (d, fs) = tree();
        fs.mkdir(fs.ino(Node::AllLayers), "L02").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(2)), "R00000001").unwrap().ino;
        let write = |name: &str, bytes: &[u8]| {
            let a = fs.create(row, name).unwrap();
            let w = fs.write(a.ino, 0, bytes).map(|_| ());
            let r = w.and(fs.flush(a.ino));
            let _ = fs.release(a.ino, WRITE_FH);
            (a.ino, r)
        };
        let bytes = png(9);
        let (ino, ok) = write("C00000002.png", &bytes);
        ok.unwrap();
        assert!(write("C00000003.png", b"no image").1.is_err());
        fs.read(ino, 0, 100).unwrap();
        fs.read(ino, 100, 1 << 20).unwrap();
        let s = fs.snapshot();
        assert_eq!(s.tree.tiles_written, 1);
        assert_eq!(s.tree.writes_refused, 1);
        assert_eq!(s.tree.tiles_read, 1);
        assert_eq!(s.tree.bytes_read, bytes.len() as u64);
        let b = s.buffer.clone().unwrap();
        assert_eq!((b.waiting_tiles, b.waiting_bytes), (1, bytes.len() as u64));
        assert_eq!((b.flushes, b.flush_failures), (0, 0));
        assert!(s.store.is_none() && s.render.is_none());
        // A flush that cannot write (the level folder replaced by a file) is counted, named.
        let level = d.path().join("_alllayers/L02");
        std::fs::create_dir_all(level.parent().unwrap()).unwrap();
        std::fs::write(&level, b"in the way").unwrap();
        assert!(fs.flush_all().is_err());
        let b = fs.snapshot().buffer.unwrap();
        assert_eq!((b.flushes, b.flush_failures, b.waiting_tiles), (0, 1, 1));
        assert_eq!(b.failing_bundles, 1);
        assert!(
            b.last_error
                .as_deref()
                .unwrap()
                .contains("level 2 bundle R0000C0000"),
            "{b:?}"
        );
        // Once the way is clear the tile is stored and counted.
        std::fs::remove_file(&level).unwrap();
        fs.flush_all().unwrap();
        let b = fs.snapshot().buffer.unwrap();
        assert_eq!((b.flushes, b.flush_failures, b.waiting_tiles), (1, 1, 0));
        assert_eq!(b.failing_bundles, 0, "stored since");
        assert_eq!(b.tiles_flushed, 1);
        assert!(b.bytes_flushed >= bytes.len() as u64);
    }

    #[test]
    fn rsync_sequence_commits_on_rename_with_the_time_set() {
        let (_d, fs) = tree();
        fs.mkdir(fs.ino(Node::AllLayers), "L03").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(3)), "R00000004").unwrap().ino;
        let tmp = fs.create(row, ".C00000005.png.a1B2c3").unwrap();
        let bytes = png(7);
        fs.write(tmp.ino, 0, &bytes).unwrap();
        fs.flush(tmp.ino).unwrap();
        let when = UNIX_EPOCH + Duration::new(1_600_000_000, 42);
        fs.setattr(tmp.ino, None, Some(when)).unwrap();
        // Not a tile yet.
        assert_eq!(errno(fs.lookup(row, "C00000005.png")), libc::ENOENT);
        fs.rename(row, ".C00000005.png.a1B2c3", row, "C00000005.png")
            .unwrap();
        let a = fs.lookup(row, "C00000005.png").unwrap();
        assert_eq!((a.size, a.mtime), (bytes.len() as u64, when));
        assert_eq!(errno(fs.lookup(row, ".C00000005.png.a1B2c3")), libc::ENOENT);
        // The kernel may still use the temporary inode for the name: it answers as the tile.
        assert_eq!(fs.getattr(tmp.ino).unwrap().size, bytes.len() as u64);
        // Once the kernel forgets it, the alias goes (no memory kept per file written).
        fs.forget(tmp.ino);
        assert_eq!(errno(fs.getattr(tmp.ino)), libc::ENOENT);
        // After the flush the time comes from the sidecar.
        fs.flush_all().unwrap();
        assert_eq!(fs.lookup(row, "C00000005.png").unwrap().mtime, when);
    }

    /// rsync --delay-updates, --partial-dir and --temp-dir make hidden folders inside the tree,
    /// write tiles in them, and rename them out: every one is committed.
    #[test]
    fn temporary_folders_hold_files_until_renamed_onto_tile_names() {
        let (_d, fs) = tree();
        let all = fs.ino(Node::AllLayers);
        fs.mkdir(all, "L02").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(2)), "R00000001").unwrap().ino;
        // --delay-updates: `.~tmp~` in the row, the file under its final name inside it.
        let tmpdir = fs.mkdir(row, ".~tmp~").unwrap();
        assert_eq!(tmpdir.kind, Kind::Dir);
        assert_eq!(fs.lookup(row, ".~tmp~").unwrap().ino, tmpdir.ino);
        let f = fs.create(tmpdir.ino, "C00000002.png").unwrap();
        let bytes = png(9);
        fs.write(f.ino, 0, &bytes).unwrap();
        fs.release(f.ino, WRITE_FH).unwrap();
        // Inside the temporary folder it is not a tile yet.
        assert_eq!(errno(fs.lookup(row, "C00000002.png")), libc::ENOENT);
        let names: Vec<String> = fs
            .readdir(tmpdir.ino)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["C00000002.png"]);
        let listed: Vec<String> = fs
            .readdir(row)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(listed, [".~tmp~"]);
        // A non-empty temporary folder cannot be removed; rename out commits the tile.
        assert_eq!(errno(fs.rmdir(row, ".~tmp~")), libc::ENOTEMPTY);
        fs.rename(tmpdir.ino, "C00000002.png", row, "C00000002.png")
            .unwrap();
        assert_eq!(
            fs.lookup(row, "C00000002.png").unwrap().size,
            bytes.len() as u64
        );
        fs.rmdir(row, ".~tmp~").unwrap();
        assert_eq!(errno(fs.lookup(row, ".~tmp~")), libc::ENOENT);
        // --temp-dir=.tmp at the top of the tree (made by the user), renamed across folders.
        let top = fs.mkdir(all, ".tmp").unwrap().ino;
        let g = fs.create(top, ".C00000003.png.XyZ123").unwrap();
        fs.write(g.ino, 0, &png(4)).unwrap();
        fs.release(g.ino, WRITE_FH).unwrap();
        fs.rename(top, ".C00000003.png.XyZ123", row, "C00000003.png")
            .unwrap();
        assert!(fs.lookup(row, "C00000003.png").is_ok());
        // Nested temporary folders take any name but the tree's folder names (a copy of the
        // tree, as rsync --backup-dir makes, would be lost at unmount); they move among
        // temporary names.
        assert_eq!(errno(fs.mkdir(top, "L02")), libc::EPERM);
        assert_eq!(errno(fs.mkdir(top, "R00000001")), libc::EPERM);
        let deep = fs.mkdir(top, "partial").unwrap().ino;
        let h = fs.create(deep, "anything.txt").unwrap();
        fs.release(h.ino, WRITE_FH).unwrap();
        fs.rename(top, "partial", all, ".moved").unwrap();
        let moved = fs.lookup(all, ".moved").unwrap().ino;
        assert_eq!(moved, deep);
        assert!(fs.lookup(moved, "anything.txt").is_ok());
        assert_eq!(fs.leftover_temps(), ["_alllayers/.moved/anything.txt"]);
        // Out of the temporaries, a folder is copied by mv (EXDEV); a file must become a tile.
        assert_eq!(errno(fs.rename(all, ".moved", all, "L01")), libc::EXDEV);
        assert_eq!(
            errno(fs.rename(moved, "anything.txt", row, "notes.txt")),
            libc::EPERM
        );
        assert_eq!(errno(fs.rename(all, ".moved", moved, "x")), libc::EINVAL);
        fs.unlink(moved, "anything.txt").unwrap();
        fs.rmdir(all, ".moved").unwrap();
        assert!(fs.leftover_temps().is_empty());
        // Both tiles reach the bundle.
        fs.flush_all().unwrap();
        let c = fs.cache();
        assert!(c.tile(TileAddr::new(2, 1, 2)).unwrap().is_some());
        assert!(c.tile(TileAddr::new(2, 1, 3)).unwrap().is_some());
    }

    /// A stored tile cannot become a temporary (rsync --backup-dir inside the tree): it would be
    /// lost at unmount. The tool gets EPERM and the tile stays.
    #[test]
    fn stored_tiles_are_not_moved_into_the_temporaries() {
        let (_d, fs) = tree();
        let all = fs.ino(Node::AllLayers);
        fs.mkdir(all, "L01").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(1)), "R00000000").unwrap().ino;
        let a = fs.create(row, "C00000001.png").unwrap();
        fs.write(a.ino, 0, &png(3)).unwrap();
        fs.release(a.ino, WRITE_FH).unwrap();
        let bak = fs.mkdir(all, ".bak").unwrap().ino;
        let e = fs
            .rename(row, "C00000001.png", bak, "C00000001.png")
            .unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().contains("lost at unmount"), "{e}");
        assert_eq!(
            errno(fs.rename(row, "C00000001.png", row, "C00000001.png~")),
            libc::EPERM
        );
        assert!(fs.lookup(row, "C00000001.png").is_ok());
        // Level and row folders are copied by mv.
        assert_eq!(
            errno(fs.rename(fs.ino(Node::Level(1)), "R00000000", all, ".x")),
            libc::EXDEV
        );
    }

    /// rsync of a whole cache sends conf.xml as a temporary and renames it: a copy equal to the
    /// shown file is accepted, another refused.
    #[test]
    fn an_equal_conf_xml_is_accepted_another_refused() {
        let (_d, fs) = tree();
        let root = fs.ino(Node::Root);
        let shown = fs
            .read(fs.ino(Node::ConfXml), 0, u32::MAX)
            .unwrap()
            .bytes()
            .to_vec();
        let t = fs.create(root, ".conf.xml.AbC123").unwrap();
        fs.write(t.ino, 0, &shown).unwrap();
        fs.release(t.ino, WRITE_FH).unwrap();
        fs.rename(root, ".conf.xml.AbC123", root, "conf.xml")
            .unwrap();
        // The renamed inode answers as conf.xml; a time set on it is not an error.
        assert_eq!(fs.getattr(t.ino).unwrap().size, shown.len() as u64);
        fs.setattr(t.ino, None, Some(UNIX_EPOCH + Duration::from_secs(5)))
            .unwrap();
        assert_eq!(fs.read(t.ino, 0, u32::MAX).unwrap().bytes(), &shown[..]);
        let u = fs.create(root, ".conf.xml.DeF456").unwrap();
        fs.write(u.ino, 0, b"<CacheInfo/>").unwrap();
        fs.release(u.ino, WRITE_FH).unwrap();
        let e = fs
            .rename(root, ".conf.xml.DeF456", root, "conf.xml")
            .unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().contains("conf.xml"), "{e}");
        assert_eq!(
            fs.read(fs.ino(Node::ConfXml), 0, u32::MAX).unwrap().bytes(),
            &shown[..]
        );
        assert_eq!(
            errno(fs.rename(root, "conf.xml", root, ".conf.bak")),
            libc::EPERM
        );
        // Written in place (cp, tar): judged at close; equal bytes pass, others fail the close.
        let conf = fs.ino(Node::ConfXml);
        fs.open_write(conf, true).unwrap();
        fs.write(conf, 0, &shown).unwrap();
        fs.flush(conf).unwrap();
        fs.release(conf, WRITE_FH).unwrap();
        fs.open_write(conf, true).unwrap();
        fs.write(conf, 0, b"<CacheInfo/>").unwrap();
        assert_eq!(errno(fs.flush(conf)), libc::EPERM);
        let _ = fs.release(conf, WRITE_FH);
        assert_eq!(fs.read(conf, 0, u32::MAX).unwrap().bytes(), &shown[..]);
        // A truncate outside a write handle is refused at once.
        assert_eq!(errno(fs.setattr(conf, Some(0), None)), libc::EPERM);
        // Through the renamed temporary's inode, which the kernel may still hold for the name
        // (`cp -a` right after `rsync -a`): judged as conf.xml, the same way.
        fs.open_write(t.ino, true).unwrap();
        fs.setattr(t.ino, Some(0), None).unwrap();
        fs.write(t.ino, 0, &shown).unwrap();
        fs.flush(t.ino).unwrap();
        fs.release(t.ino, WRITE_FH).unwrap();
        fs.open_write(t.ino, true).unwrap();
        fs.write(t.ino, 0, b"<CacheInfo/>").unwrap();
        assert_eq!(errno(fs.flush(t.ino)), libc::EPERM);
        let _ = fs.release(t.ino, WRITE_FH);
        assert_eq!(fs.read(conf, 0, u32::MAX).unwrap().bytes(), &shown[..]);
    }

    #[test]
    fn refusals() {
        let (_d, fs) = tree();
        fs.mkdir(fs.ino(Node::AllLayers), "L01").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(1)), "R00000000").unwrap().ino;
        assert_eq!(errno(fs.create(row, "notes.txt")), libc::EPERM);
        assert_eq!(
            errno(fs.create(fs.ino(Node::Level(1)), "C00000000.png")),
            libc::EPERM
        );
        // Both counted as refused writes (status, metrics).
        assert_eq!(fs.snapshot().tree.writes_refused, 2);
        assert_eq!(
            errno(fs.mkdir(fs.ino(Node::AllLayers), "L09")),
            libc::EINVAL
        );
        assert_eq!(
            errno(fs.mkdir(fs.ino(Node::AllLayers), "L01")),
            libc::EEXIST
        );
        // Bytes that contradict the name fail at the first write, and again at close.
        let a = fs.create(row, "C00000001.png").unwrap();
        let e = fs.write(a.ino, 0, b"GIF89a not a tile").unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("C00000001.png"), "{e}");
        assert_eq!(errno(fs.flush(a.ino)), libc::EINVAL);
        assert_eq!(fs.writer().unwrap().pending_tiles(), 0, "nothing stored");
        // A JPEG under a .png name: the write says what the bytes are.
        let b = fs.create(row, "C00000000.png").unwrap();
        let jpeg = [0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F', b'I', b'F', 0, 1];
        let e = fs.write(b.ino, 0, &jpeg).unwrap_err();
        assert!(e.to_string().contains("JPEG"), "{e}");
        // A tile outside the scheme's world (level 1 of Web Mercator has 2 x 2 tiles).
        let e = fs.create(row, "C00000005.png").unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("outside the tiling scheme"), "{e}");
        // Read-only trees refuse writes.
        let ro = TreeFs::new(fs.cache().clone());
        assert_eq!(errno(ro.create(row, "C00000001.png")), libc::EROFS);
    }

    /// `rm -r` of a row folder: its last tile gone, the folder went with it, and the rmdir the
    /// kernel still sends succeeds; an emptied level folder on disk stays (ENOTEMPTY, which
    /// rsync --delete tolerates).
    #[test]
    fn rm_r_of_a_row_folder_succeeds_and_a_level_on_disk_stays() {
        let (d, fs) = tree();
        fs.mkdir(fs.ino(Node::AllLayers), "L01").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(1)), "R00000001").unwrap().ino;
        let a = fs.create(row, "C00000000.png").unwrap();
        fs.write(a.ino, 0, &png(5)).unwrap();
        fs.release(a.ino, WRITE_FH).unwrap();
        fs.flush_all().unwrap();
        // A new mount of the cache: the row folder is there because it holds a tile.
        let w = Arc::new(WriteBuffer::new(
            Arc::new(Cache::open(d.path()).unwrap()),
            1 << 20,
        ));
        let fs = TreeFs::writable(w);
        let level = fs.lookup(fs.ino(Node::AllLayers), "L01").unwrap().ino;
        let row = fs.lookup(level, "R00000001").unwrap().ino;
        assert_eq!(errno(fs.rmdir(level, "R00000001")), libc::ENOTEMPTY);
        fs.unlink(row, "C00000000.png").unwrap();
        assert_eq!(errno(fs.lookup(level, "R00000001")), libc::ENOENT);
        fs.rmdir(level, "R00000001").unwrap();
        fs.flush_all().unwrap();
        assert_eq!(
            errno(fs.rmdir(fs.ino(Node::AllLayers), "L01")),
            libc::ENOTEMPTY
        );
        assert_eq!(errno(fs.rmdir(level, "notes")), libc::ENOENT);
    }

    /// The XYZ and TMS views take writes in their own names: rsync's temporary renamed onto
    /// `z/x/y.png` stores tile (z, y or its flip, x); ArcGIS names are refused there.
    #[test]
    fn xyz_and_tms_views_store_tiles_written_under_z_x_y_names() {
        for (view, y, row) in [(View::Xyz, 2, 2), (View::Tms, 2, 5)] {
            let (_d, fs) = tree();
            let fs = fs.with_view(view).unwrap();
            let root = fs.ino(Node::Root);
            let level = fs.mkdir(root, "3").unwrap().ino;
            assert_eq!(level, fs.ino(Node::Level(3)));
            // A writable view shows the column folders that hold tiles or were made.
            assert_eq!(errno(fs.lookup(level, "5")), libc::ENOENT);
            let col = fs.mkdir(level, "5").unwrap().ino;
            assert_eq!(fs.lookup(level, "5").unwrap().ino, col);
            assert_eq!(errno(fs.mkdir(level, "5")), libc::EEXIST);
            let tmp = fs.create(col, &format!(".{y}.png.a1B2c3")).unwrap();
            let bytes = png(9);
            fs.write(tmp.ino, 0, &bytes).unwrap();
            fs.flush(tmp.ino).unwrap();
            fs.rename(col, &format!(".{y}.png.a1B2c3"), col, &format!("{y}.png"))
                .unwrap();
            let t = TileAddr::new(3, row, 5);
            assert_eq!(
                fs.lookup(col, &format!("{y}.png")).unwrap().size,
                bytes.len() as u64
            );
            // cp: create, write, close; listed while open, stored at close.
            let b = fs.create(col, "0.png").unwrap();
            fs.write(b.ino, 0, &png(4)).unwrap();
            let names: Vec<String> = fs
                .readdir(col)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, ["0.png".to_string(), format!("{y}.png")], "{view:?}");
            fs.release(b.ino, WRITE_FH).unwrap();
            let names: Vec<String> = fs
                .readdir(level)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, ["5"]);
            assert_eq!(errno(fs.rmdir(level, "5")), libc::ENOTEMPTY);
            fs.flush_all().unwrap();
            assert_eq!(&fs.cache().tile(t).unwrap().unwrap()[..], &bytes[..]);
            let other = TileAddr::new(3, if view == View::Tms { 7 } else { 0 }, 5);
            assert!(fs.cache().tile(other).unwrap().is_some(), "{view:?}");
            // ArcGIS names, rows past the zoom's grid and L folders are no names of this view.
            let e = fs.create(col, "C00000001.png").unwrap_err();
            assert_eq!(e.errno(), libc::EPERM);
            assert!(e.to_string().contains("y.png"), "{e}");
            let e = fs.create(col, "8.png").unwrap_err();
            assert_eq!(e.errno(), libc::EPERM);
            assert!(
                e.to_string().contains("y 8 is outside zoom 3's rows (0-7)"),
                "{e}"
            );
            assert_eq!(errno(fs.create(col, "03.png")), libc::EPERM);
            assert_eq!(errno(fs.mkdir(root, "L03")), libc::EPERM);
            let e = fs.mkdir(level, "8").unwrap_err();
            assert_eq!(e.errno(), libc::EPERM);
            assert!(
                e.to_string()
                    .contains("column 8 is outside zoom 3's columns (0-7)"),
                "{e}"
            );
            assert_eq!(errno(fs.mkdir(root, "9")), libc::EINVAL);
            // unlink and rename between z/x/y names.
            fs.rename(col, &format!("{y}.png"), col, "1.png").unwrap();
            fs.unlink(col, "0.png").unwrap();
            fs.flush_all().unwrap();
            let moved = TileAddr::new(3, if view == View::Tms { 6 } else { 1 }, 5);
            assert_eq!(&fs.cache().tile(moved).unwrap().unwrap()[..], &bytes[..]);
            assert!(fs.cache().tile(t).unwrap().is_none());
            assert!(fs.cache().tile(other).unwrap().is_none());
        }
    }

    #[test]
    fn own_flushes_are_not_foreign_changes() {
        let (d, fs) = tree();
        let all = fs.ino(Node::AllLayers);
        fs.mkdir(all, "L02").unwrap();
        let row = fs.mkdir(fs.ino(Node::Level(2)), "R00000001").unwrap().ino;
        let put = |name: &str, v: u8| {
            let a = fs.create(row, name).unwrap();
            fs.write(a.ino, 0, &png(v)).unwrap();
            fs.release(a.ino, WRITE_FH).unwrap();
            fs.flush_all().unwrap();
            a.ino
        };
        let ino = put("C00000001.png", 1);
        fs.read(ino, 0, 10).unwrap(); // watched from now on
        put("C00000002.png", 2);
        assert!(fs.poll_changes().is_empty(), "our own flush");
        // Another writer (another Cache on the same folder) changes the bundle.
        let other = Cache::open(d.path()).unwrap();
        other
            .write_tiles(&[(TileAddr::new(2, 1, 3), &png(3)[..])])
            .unwrap();
        assert!(!fs.poll_changes().is_empty(), "a foreign change");
    }

    #[test]
    fn after_close_readers_see_the_stored_merge_even_before_release() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::create(
            d.path(),
            &TileScheme::web_mercator(3, TileFormat::Png),
            None,
        )
        .unwrap();
        let t = TileAddr::new(1, 0, 1);
        c.write_tiles(&[(t, &png(50)[..])]).unwrap();
        let w = Arc::new(WriteBuffer::with_mode(
            Arc::new(c),
            1 << 20,
            crate::cache::commit::ImportMode::Merge,
        ));
        let fs = TreeFs::writable(w);
        let row = fs.ino(Node::Row { level: 1, row: 0 });
        let clear = {
            let img = image::RgbaImage::from_pixel(256, 256, image::Rgba([0, 0, 0, 0]));
            let mut b = std::io::Cursor::new(Vec::new());
            img.write_to(&mut b, image::ImageFormat::Png).unwrap();
            b.into_inner()
        };
        let a = fs.create(row, "C00000001.png").unwrap();
        fs.write(a.ino, 0, &clear).unwrap();
        fs.flush(a.ino).unwrap(); // close(2); the release may come later
        let got = fs.read(a.ino, 0, 1 << 20).unwrap().bytes().to_vec();
        assert_ne!(got, clear, "the merge, not the written bytes");
        let px = image::load_from_memory(&got).unwrap().to_rgba8();
        assert_eq!(px.get_pixel(3, 3), &image::Rgba([50, 2, 3, 255]));
        assert_eq!(fs.getattr(a.ino).unwrap().size, got.len() as u64);
    }
}
