//! Exploded storage in a local folder: one file per tile, named as [`FileLayout`] says: ArcGIS's
//! exploded cache (`Lnn/Rrrrrrrrr/Ccccccccc.png|jpg`, names per `format::exploded`), or an XYZ or
//! TMS folder (`z/x/y.png`, the row counted from the top or from the bottom; names per
//! `format::xyz`). Each tile file is replaced whole (temporary file, rename), so a reader sees the
//! old tile or the new one, never a mix.

use crate::cache::store::StorageKind;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{
    check_tiles, read_dir_names, set_file_mtime, GroupView, LevelStats, Place, Storage, TileGroup,
    TimedSlot, UpdateFn,
};
use crate::cache::files::{write_atomic, write_atomic_new};
use crate::cache::spelling;
use crate::cache::TileBytes;
use crate::error::{Error, IoContext, Result};
use crate::format::sniff::{sniff, ImageKind};
use crate::format::v2::WriteStats;
use crate::format::{exploded as names, xyz, BundleId, Slot, TileAddr};

/// How the tile files of an exploded storage are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLayout {
    /// ArcGIS: `Lnn/Rrrrrrrrr/Ccccccccc.ext` (hexadecimal rows and columns, any case).
    ArcGis,
    /// `z/x/y.ext`, y counted from the top (XYZ, "slippy map" tiles).
    Xyz,
    /// `z/x/y.ext`, y counted from the bottom (TMS).
    Tms,
}

/// A local exploded cache.
pub struct ExplodedStore {
    place: Place,
    layout: FileLayout,
    /// The extension to expect first (the cache's tile format), and to use for bytes that are
    /// neither PNG nor JPEG.
    default_kind: ImageKind,
    durable: bool,
    /// One mutex per bundle-sized group for [`Storage::update_group`] within this process.
    /// Exploded caches have no lock files (tools expect only tiles in the tree), so writers in
    /// other processes race on one tile as `cp` would; each tile file is still replaced whole.
    groups_locked: Mutex<HashMap<BundleId, Arc<Mutex<()>>>>,
}

impl ExplodedStore {
    /// ArcGIS exploded storage under `place`; `durable`: fsync each tile file and its folder.
    pub fn new(place: Place, default_kind: ImageKind, durable: bool) -> ExplodedStore {
        Self::with_layout(place, FileLayout::ArcGis, default_kind, durable)
    }

    /// Exploded storage under `place` with files named as `layout` says.
    pub fn with_layout(
        place: Place,
        layout: FileLayout,
        default_kind: ImageKind,
        durable: bool,
    ) -> ExplodedStore {
        ExplodedStore {
            place,
            layout,
            default_kind,
            durable,
            groups_locked: Mutex::new(HashMap::new()),
        }
    }

    fn row_dir(&self, level: u8, row: u32) -> PathBuf {
        spelling::resolve(&self.place.level_dir(level), &names::row_dir(row))
    }

    /// The folder of tile `t`'s file: its row folder (ArcGIS) or its column folder (XYZ, TMS).
    fn tile_dir(&self, t: TileAddr) -> PathBuf {
        match self.layout {
            FileLayout::ArcGis => self.row_dir(t.level, t.row),
            FileLayout::Xyz | FileLayout::Tms => self
                .place
                .tiles_dir
                .join(t.level.to_string())
                .join(t.col.to_string()),
        }
    }

    /// The file name of tile `t` with extension `ext` in [`ExplodedStore::tile_dir`]; None for a
    /// TMS row outside the level's 2^level rows.
    fn file_name(&self, t: TileAddr, ext: &str) -> Option<String> {
        match self.layout {
            FileLayout::ArcGis => Some(names::col_file(t.col, ext)),
            FileLayout::Xyz => Some(xyz::file_name(t.row, ext)),
            FileLayout::Tms => {
                crate::format::mbtiles::flip_row(t.level, t.row).map(|y| xyz::file_name(y, ext))
            }
        }
    }

    /// The tile a file `name` in folder `dir_key` (row of ArcGIS, column of XYZ) of `level` holds.
    fn parse_file(&self, level: u8, dir_key: u32, name: &str) -> Option<TileAddr> {
        match self.layout {
            FileLayout::ArcGis => names::parse_col_file(name)
                .ok()
                .map(|(col, _)| TileAddr::new(level, dir_key, col)),
            FileLayout::Xyz => xyz::parse_file(name).map(|y| TileAddr::new(level, y, dir_key)),
            FileLayout::Tms => xyz::parse_file(name)
                .and_then(|y| crate::format::mbtiles::flip_row(level, y))
                .map(|row| TileAddr::new(level, row, dir_key)),
        }
    }

    /// Path of a stored tile, if one exists (any known extension).
    pub fn tile_path(&self, t: TileAddr) -> Option<PathBuf> {
        let dir = self.tile_dir(t);
        let first = self.default_kind.ext();
        std::iter::once(&first)
            .chain(crate::format::exploded::TILE_EXTS.iter())
            .filter_map(|ext| self.file_name(t, ext))
            .map(|n| spelling::resolve(&dir, &n))
            .find(|p| p.is_file())
    }

    /// Every tile file of `level` (XYZ and TMS: column folders, then files): (tile, path).
    fn xyz_files(&self, level: u8) -> Result<Vec<(TileAddr, PathBuf)>> {
        let ldir = self.place.tiles_dir.join(level.to_string());
        let mut out = Vec::new();
        for xn in read_dir_names(&ldir)? {
            let Some(x) = xyz::parse_number(&xn) else {
                continue;
            };
            let xdir = ldir.join(&xn);
            for n in read_dir_names(&xdir)? {
                match self.parse_file(level, x, &n) {
                    Some(t) => out.push((t, xdir.join(n))),
                    None => tracing::debug!("{}: not a tile, ignored", xdir.join(n).display()),
                }
            }
        }
        Ok(out)
    }

    fn read_tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        match self.tile_path(t) {
            Some(p) => {
                self.place.check_inside(&p)?;
                let bytes = fs::read(&p).at(&p)?;
                let mtime = fs::metadata(&p).and_then(|m| m.modified()).ok();
                Ok(Some(TileBytes::file(bytes, mtime)))
            }
            None => Ok(None),
        }
    }
}

struct ExplodedGroup<'a> {
    store: &'a ExplodedStore,
    id: BundleId,
}

impl GroupView for ExplodedGroup<'_> {
    fn exists(&self) -> bool {
        true
    }
    fn tile(&self, slot: Slot) -> Result<Option<TileBytes>> {
        self.store.read_tile(self.id.tile(slot))
    }
}

impl Storage for ExplodedStore {
    fn kind(&self) -> StorageKind {
        match self.layout {
            FileLayout::ArcGis => StorageKind::Exploded,
            FileLayout::Xyz => StorageKind::Xyz,
            FileLayout::Tms => StorageKind::Tms,
        }
    }

    fn levels(&self) -> Result<Vec<u8>> {
        match self.layout {
            FileLayout::ArcGis => self.place.levels(),
            FileLayout::Xyz | FileLayout::Tms => xyz_levels(&self.place.tiles_dir),
        }
    }

    fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        self.read_tile(t)
    }

    fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        if self.layout != FileLayout::ArcGis {
            return Ok(self
                .xyz_files(level)?
                .into_iter()
                .map(|(t, _)| t.row)
                .collect());
        }
        Ok(read_dir_names(&self.place.level_dir(level))?
            .iter()
            .filter_map(|n| names::parse_row_dir(n).ok())
            .collect())
    }

    fn col_tiles(&self, level: u8, col: u32) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for row in self.rows(level)? {
            out.extend(
                self.cols(level, row)?
                    .into_iter()
                    .filter(|(c, _)| *c == col)
                    .map(|(_, size)| (row, size)),
            );
        }
        Ok(out)
    }

    fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        if self.layout != FileLayout::ArcGis {
            let mut out = Vec::new();
            for (t, p) in self.xyz_files(level)? {
                if t.row == row {
                    out.push((t.col, fs::metadata(&p).at(&p)?.len()));
                }
            }
            out.sort_unstable();
            return Ok(out);
        }
        let dir = self.row_dir(level, row);
        let mut out = Vec::new();
        for n in read_dir_names(&dir)? {
            if let Ok((col, _)) = names::parse_col_file(&n) {
                let p = dir.join(&n);
                out.push((col, fs::metadata(&p).at(&p)?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn groups(&self, level: u8) -> Result<Vec<TileGroup>> {
        let mut map: BTreeMap<BundleId, Vec<(TileAddr, PathBuf)>> = BTreeMap::new();
        if self.layout != FileLayout::ArcGis {
            for (t, p) in self.xyz_files(level)? {
                map.entry(t.bundle()).or_default().push((t, p));
            }
            return Ok(map
                .into_iter()
                .map(|(id, mut files)| {
                    files.sort();
                    TileGroup { id, files }
                })
                .collect());
        }
        let ldir = self.place.level_dir(level);
        for rn in read_dir_names(&ldir)? {
            let rdir = ldir.join(&rn);
            if !rn.starts_with(['R', 'r']) || !rdir.is_dir() {
                continue;
            }
            // `R…` must be a row; a lower-case `r…` that is not one is skipped (verify warns).
            let row = match names::parse_row_dir(&rn) {
                Ok(row) => row,
                Err(e) if rn.starts_with('R') => return Err(Error::format(&rdir, e)),
                Err(_) => continue,
            };
            for cn in read_dir_names(&rdir)? {
                let p = rdir.join(&cn);
                match names::parse_col_file(&cn) {
                    Ok((col, _)) => {
                        let t = TileAddr::new(level, row, col);
                        map.entry(t.bundle()).or_default().push((t, p));
                    }
                    Err(e) if cn.starts_with('C') => return Err(Error::format(&p, e)),
                    Err(_) => tracing::debug!("{}: not a tile, ignored", p.display()),
                }
            }
        }
        Ok(map
            .into_iter()
            .map(|(id, files)| TileGroup { id, files })
            .collect())
    }

    fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        g.files
            .iter()
            .map(|(t, p)| Ok((*t, TileBytes::owned(fs::read(p).at(p)?))))
            .collect()
    }

    fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let mut s = LevelStats::default();
        for g in self.groups(level)? {
            s.bundles += 1;
            for (_, p) in &g.files {
                let len = fs::metadata(p).at(p)?.len();
                s.tiles += 1;
                s.tile_bytes += len;
                s.file_bytes += len;
            }
        }
        Ok(s)
    }

    fn write_group(&self, id: BundleId, tiles: &[TimedSlot]) -> Result<WriteStats> {
        check_tiles(&self.place.level_dir(id.level), id, tiles)?;
        let mut total = WriteStats::default();
        let mut dirs: BTreeMap<PathBuf, Vec<&TimedSlot>> = BTreeMap::new();
        for t in tiles {
            dirs.entry(self.tile_dir(id.tile(t.0))).or_default().push(t);
        }
        for (dir, group) in dirs {
            // Per folder, not per tile: the folder checked and made once, its entries listed once
            // (a lookup per tile would list the folder anew after each write changed it).
            self.place.check_inside(&dir)?;
            fs::create_dir_all(&dir).at(&dir)?;
            let mut on_disk = row_entries(&dir)?;
            for (slot, bytes, mtime) in group {
                let t = id.tile(*slot);
                let ext = sniff(bytes).unwrap_or(self.default_kind).ext();
                let Some(canonical) = self.file_name(t, ext) else {
                    return Err(Error::invalid(format!(
                        "{}: tile {t} lies outside zoom level {}'s {} rows",
                        dir.display(),
                        t.level,
                        1u64 << t.level.min(31)
                    )));
                };
                let key = canonical.to_ascii_lowercase();
                // The spelling on disk (names in any case), followed only if it stays inside.
                let (path, listed) = match on_disk.get(&key) {
                    Some((name, link)) => {
                        let p = dir.join(name);
                        if *link {
                            self.place.check_inside(&p)?;
                        }
                        (p, true)
                    }
                    None => (dir.join(&canonical), false),
                };
                // A tile stored under another extension is replaced, not kept beside.
                let others: Vec<String> = crate::format::exploded::TILE_EXTS
                    .iter()
                    .filter_map(|e| self.file_name(t, e))
                    .map(|n| n.to_ascii_lowercase())
                    .filter(|k| *k != key)
                    .filter_map(|k| on_disk.remove(&k).map(|(n, _)| n))
                    .collect();
                if listed {
                    write_atomic(&path, bytes, self.durable)?;
                } else {
                    // Not in the row's listing: no stat to learn the mode of a file to replace.
                    write_atomic_new(&path, bytes, self.durable)?;
                }
                for n in others {
                    let old = dir.join(n);
                    fs::remove_file(&old).at(&old)?;
                }
                if let Some(m) = mtime {
                    set_file_mtime(&path, *m)?;
                }
                let name = path
                    .file_name()
                    .map_or(canonical.clone(), |n| n.to_string_lossy().into_owned());
                on_disk.insert(key, (name, false));
                total.tiles += 1;
                total.bytes_written += bytes.len() as u64;
            }
        }
        Ok(total)
    }

    fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats> {
        let lock = self
            .groups_locked
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .clone();
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let tiles = f(&ExplodedGroup { store: self, id })?;
        let timed: Vec<TimedSlot> = tiles.iter().map(|(s, b)| (*s, &b[..], None)).collect();
        self.write_group(id, &timed)
    }

    fn delete_group(&self, id: BundleId, slots: &[Slot]) -> Result<()> {
        for s in slots {
            if let Some(p) = self.tile_path(id.tile(*s)) {
                self.place.check_inside(&p)?;
                fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
    }

    fn tile_mtime(&self, _t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        bytes.mtime()
    }

    fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        match self.tile_path(t) {
            Some(p) => {
                self.place.check_inside(&p)?;
                set_file_mtime(&p, mtime).map(|_| true)
            }
            None => Ok(false),
        }
    }

    fn location(&self, t: TileAddr) -> PathBuf {
        self.tile_path(t).unwrap_or_else(|| {
            let dir = self.tile_dir(t);
            match self.file_name(t, self.default_kind.ext()) {
                Some(n) => dir.join(n),
                None => dir,
            }
        })
    }

    /// Removes the row folders `delete` left empty (`rmdir`: a folder another writer filled
    /// meanwhile stays); a folder that cannot be removed is a warning naming it.
    fn remove_empty_rows(&self, level: u8, rows: &BTreeSet<u32>) -> u64 {
        if self.layout != FileLayout::ArcGis {
            // Column folders, not row folders: left as they are.
            return 0;
        }
        let mut n = 0;
        for &row in rows {
            let dir = self.row_dir(level, row);
            match fs::remove_dir(&dir) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("{}: empty row folder not removed: {e}", dir.display()),
            }
        }
        n
    }
}

/// The zoom levels of an XYZ or TMS folder: its sub-folders named by a number 0-255, ascending.
fn xyz_levels(root: &std::path::Path) -> Result<Vec<u8>> {
    let mut v: Vec<u8> = read_dir_names(root)?
        .iter()
        .filter_map(|n| xyz::parse_number(n))
        .filter_map(|z| u8::try_from(z).ok())
        .filter(|z| root.join(z.to_string()).is_dir())
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// A row folder's entries by lower-case name: (the name on disk, whether it is a symbolic link).
/// A missing folder has none.
fn row_entries(dir: &std::path::Path) -> Result<HashMap<String, (String, bool)>> {
    let mut out = HashMap::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for ent in rd {
        let ent = ent.at(dir)?;
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let link = ent.file_type().at(dir)?.is_symlink();
        out.insert(name.to_ascii_lowercase(), (name, link));
    }
    Ok(out)
}
