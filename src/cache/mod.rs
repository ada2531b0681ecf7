//! A cache of bundles on disk: open either layout (ArcGIS `conf.xml` + `_alllayers/`, or MapProxy's
//! `Lnn/` at the root), detect exploded / Compact V1 / Compact V2, list levels, bundles and tiles
//! without reading tiles, get a tile (a slice of a memory map), and write or delete tiles under the
//! per-bundle lock with the durable append sequence of the format layer.

pub mod buffer;
pub mod bundle;
pub mod commit;
pub mod lock;
pub mod names;
pub mod times;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;

pub use self::bundle::{BundleHandle, FileStamp};
pub use self::lock::BundleLock;
use crate::error::{Error, FormatContext, IoContext, Result};
use crate::format::conf::{self, ConfXml, Envelope, StorageFormat, TileScheme};
use crate::format::exploded;
use crate::format::sniff::{sniff, ImageKind};
use crate::format::v2::WriteStats;
use crate::format::{v1, v2, BundleId, Slot, TileAddr, BUNDLE_DIM};

/// Where the level folders live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `conf.xml`, `conf.cdi`, `_alllayers/Lnn/…`.
    ArcGis,
    /// `Lnn/…` directly in the cache folder, no conf.xml (MapProxy's compact caches).
    MapProxy,
}

/// Tunables of an open cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// How often an open bundle is checked (stat) for changes by other writers.
    pub recheck: Duration,
    /// How many bundles stay mapped at once.
    pub max_open_bundles: usize,
    /// How long a writer waits for a bundle lock held by someone else.
    pub lock_timeout: Duration,
    /// fdatasync around index updates (off only for bulk jobs that sync at the end).
    pub durable: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            recheck: Duration::from_secs(1),
            max_open_bundles: 256,
            lock_timeout: Duration::from_secs(60),
            durable: true,
        }
    }
}

/// Tile bytes: read from a bundle, a slice of a mapped bundle (batch jobs), or owned bytes.
#[derive(Clone)]
pub struct TileBytes(Repr);

#[derive(Clone)]
enum Repr {
    Mapped(Arc<BundleHandle>, std::ops::Range<usize>),
    /// Read (pread) from the bundle: what the mount serves, safe from files cut under the map.
    Read(Arc<BundleHandle>, Arc<Vec<u8>>),
    Owned(Arc<Vec<u8>>, Option<std::time::SystemTime>),
}

impl TileBytes {
    pub fn owned(v: Vec<u8>) -> Self {
        TileBytes(Repr::Owned(Arc::new(v), None))
    }

    /// Bytes held elsewhere (the write buffer), with their modification time.
    pub fn shared(v: Arc<Vec<u8>>, mtime: Option<std::time::SystemTime>) -> Self {
        TileBytes(Repr::Owned(v, mtime))
    }

    fn file(v: Vec<u8>, mtime: Option<std::time::SystemTime>) -> Self {
        TileBytes(Repr::Owned(Arc::new(v), mtime))
    }

    /// Modification time of what holds the tile (its bundle, or its file), if known.
    pub fn mtime(&self) -> Option<std::time::SystemTime> {
        match &self.0 {
            Repr::Mapped(b, _) | Repr::Read(b, _) => Some(b.stamp.mtime()),
            Repr::Owned(_, t) => *t,
        }
    }

    /// The bundle the bytes are mapped from, if any.
    pub fn bundle(&self) -> Option<&Arc<BundleHandle>> {
        match &self.0 {
            Repr::Mapped(b, _) | Repr::Read(b, _) => Some(b),
            Repr::Owned(..) => None,
        }
    }
}

impl Deref for TileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Mapped(b, r) => b.bytes(r.clone()),
            Repr::Read(_, v) | Repr::Owned(v, _) => v,
        }
    }
}

impl std::fmt::Debug for TileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TileBytes({} bytes)", self.len())
    }
}

struct Cached {
    handle: Arc<BundleHandle>,
    checked_ms: AtomicU64,
}

/// Per-level counts for `info`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LevelStats {
    pub bundles: u64,
    pub tiles: u64,
    pub tile_bytes: u64,
    pub file_bytes: u64,
    pub dead_bytes: u64,
}

/// A level's bundle list and the level folder's stamp when it was read.
type LevelListing = (FileStamp, Arc<Vec<BundleId>>);

/// A tile cache folder.
pub struct Cache {
    root: PathBuf,
    tiles_dir: PathBuf,
    layout: Layout,
    storage: StorageFormat,
    conf: Option<ConfXml>,
    cdi: Option<Vec<u8>>,
    opts: CacheOptions,
    open: Mutex<LruCache<BundleId, Arc<Cached>>>,
    listings: Mutex<std::collections::HashMap<u8, LevelListing>>,
    /// The stamp each bundle had right after our own last write to it, so watchers can tell our
    /// changes (which the kernel already knows about) from other writers'.
    own_writes: Mutex<std::collections::HashMap<BundleId, FileStamp>>,
    epoch: Instant,
}

pub(crate) const CONF_XML: &str = "conf.xml";
pub(crate) const CONF_CDI: &str = "conf.cdi";
pub(crate) const ALLLAYERS: &str = "_alllayers";

pub(crate) fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.at(dir)?;
        if let Some(n) = ent.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// Writes `bytes` to `path` atomically: temp file in the same folder, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".bundlefs-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    if sync {
        tmp.as_file().sync_all().at(tmp.path())?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Cache {
    /// Opens a cache folder (or its conf.xml) with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Cache> {
        Self::open_with(path, CacheOptions::default())
    }

    /// Opens a cache folder (or its conf.xml) with `opts`.
    ///
    /// Names are found whatever their case, as ArcGIS on Windows writes them (`Conf.xml`,
    /// `CONF.CDI`, `_AllLayers`); two spellings of one name in one folder are an error naming
    /// both. A folder without conf.xml is searched for the one holding it: `Layers/` (a server
    /// cache), `v101/<Map Name>/` (an unpacked `.tpk`; ArcGIS names it after the map, older
    /// packages `Layers`). A `PacketSize` other than 128 with bundles on disk is refused.
    pub fn open_with(path: impl AsRef<Path>, opts: CacheOptions) -> Result<Cache> {
        let mut root = path.as_ref().to_path_buf();
        let names_conf = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case(CONF_XML))
        };
        if names_conf(&root) && root.is_file() {
            root.pop();
            if root.as_os_str().is_empty() {
                root.push(".");
            }
        }
        if !root.is_dir() {
            if root.exists() {
                return Err(Error::invalid(format!(
                    "{}: a file, not a cache folder or its conf.xml",
                    root.display()
                )));
            }
            return Err(Error::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such cache folder"),
            ));
        }
        if find_entry(&root, CONF_XML)?.is_none() {
            if let Some(sub) = find_conf_folder(&root)? {
                root = sub;
            }
        }
        let conf_path = find_entry(&root, CONF_XML)?.unwrap_or_else(|| root.join(CONF_XML));
        let conf = match fs::read(&conf_path) {
            Ok(b) => Some(TileScheme::parse_conf_xml(&b).in_file(&conf_path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&conf_path, e)),
        };
        let cdi_path = find_entry(&root, CONF_CDI)?.unwrap_or_else(|| root.join(CONF_CDI));
        let cdi = match fs::read(&cdi_path) {
            Ok(b) => {
                conf::parse_cdi(&b).in_file(&cdi_path)?;
                Some(b)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&cdi_path, e)),
        };
        let alllayers = find_entry(&root, ALLLAYERS)?.filter(|p| p.is_dir());
        let (layout, tiles_dir) = match (&conf, alllayers) {
            (_, Some(dir)) => (Layout::ArcGis, dir),
            (Some(_), None) => (Layout::ArcGis, root.join(ALLLAYERS)),
            (None, None) => (Layout::MapProxy, root.clone()),
        };
        let detected = detect_storage(&tiles_dir)?;
        if let (Some(d), Some(c)) = (detected, &conf) {
            // An exploded conf.xml's PacketSize (often 0) was never read by anyone; with bundles on
            // disk a size other than 0 or 128 says how they were cut.
            if c.scheme.packet_size != 0 {
                conf::check_packet_size(d, c.scheme.packet_size).in_file(&conf_path)?;
            }
        }
        let storage = match (detected, &conf) {
            (Some(d), Some(c)) if d != c.scheme.storage => {
                tracing::warn!(
                    "{}: conf.xml says {} but the files are {}; using {}",
                    root.display(),
                    c.scheme.storage,
                    d,
                    d
                );
                d
            }
            (Some(d), _) => d,
            (None, Some(c)) => c.scheme.storage,
            (None, None) => {
                if layout == Layout::MapProxy {
                    return Err(Error::invalid(format!(
                        "{}: not a tile cache (no conf.xml, no _alllayers, no Lnn level folders)",
                        root.display()
                    )));
                }
                StorageFormat::CompactV2
            }
        };
        Ok(Cache::assemble(
            root, tiles_dir, layout, storage, conf, cdi, opts,
        ))
    }

    /// A cache over what `open_with` or `create` found or wrote, with empty run-time state.
    fn assemble(
        root: PathBuf,
        tiles_dir: PathBuf,
        layout: Layout,
        storage: StorageFormat,
        conf: Option<ConfXml>,
        cdi: Option<Vec<u8>>,
        opts: CacheOptions,
    ) -> Cache {
        let cap = NonZeroUsize::new(opts.max_open_bundles.max(1)).unwrap();
        Cache {
            root,
            tiles_dir,
            layout,
            storage,
            conf,
            cdi,
            opts,
            open: Mutex::new(LruCache::new(cap)),
            listings: Mutex::new(Default::default()),
            own_writes: Mutex::new(Default::default()),
            epoch: Instant::now(),
        }
    }

    /// Creates an empty ArcGIS-layout cache (conf.xml, conf.cdi, `_alllayers/`).
    pub fn create(
        root: impl AsRef<Path>,
        scheme: &TileScheme,
        extent: Option<Envelope>,
    ) -> Result<Cache> {
        let root = root.as_ref();
        if find_entry(root, CONF_XML)?.is_some() {
            return Err(Error::invalid(format!(
                "{}: already holds a conf.xml; refusing to overwrite",
                root.display()
            )));
        }
        fs::create_dir_all(root.join(ALLLAYERS)).at(root)?;
        write_atomic(&root.join(CONF_XML), &scheme.to_conf_xml(), true)?;
        let env = extent.unwrap_or_else(|| scheme_extent(scheme));
        write_atomic(&root.join(CONF_CDI), &conf::write_cdi(&env, scheme), true)?;
        Cache::open(root)
    }

    /// Creates a cache folder holding no tiles yet, in `storage`: with `conf_xml` (and `cdi`) it is
    /// ArcGIS-layout (`conf.xml`, `conf.cdi`, `_alllayers/`), without, MapProxy-layout (level folders
    /// at the root). The conf.xml bytes are written as given.
    pub fn create_empty(
        root: impl AsRef<Path>,
        storage: StorageFormat,
        conf_xml: Option<&[u8]>,
        cdi: Option<&[u8]>,
        opts: CacheOptions,
    ) -> Result<Cache> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).at(&root)?;
        let (layout, tiles_dir, conf) = match conf_xml {
            Some(xml) => {
                let conf_path = root.join(CONF_XML);
                let conf = TileScheme::parse_conf_xml(xml).in_file(&conf_path)?;
                let tiles_dir = root.join(ALLLAYERS);
                fs::create_dir_all(&tiles_dir).at(&tiles_dir)?;
                write_atomic(&conf_path, xml, opts.durable)?;
                if let Some(cdi) = cdi {
                    write_atomic(&root.join(CONF_CDI), cdi, opts.durable)?;
                }
                (Layout::ArcGis, tiles_dir, Some(conf))
            }
            None => (Layout::MapProxy, root.clone(), None),
        };
        Ok(Cache::assemble(
            root,
            tiles_dir,
            layout,
            storage,
            conf,
            cdi.map(<[u8]>::to_vec),
            opts,
        ))
    }

    /// Replaces conf.cdi (the cache extent) atomically.
    pub fn set_extent(&mut self, env: &Envelope) -> Result<()> {
        let Some(scheme) = self.scheme() else {
            return Ok(());
        };
        let bytes = conf::write_cdi(env, scheme);
        // Over the file as spelled on disk (`CONF.CDI`), never a second spelling beside it.
        let path = find_entry(&self.root, CONF_CDI)?.unwrap_or_else(|| self.root.join(CONF_CDI));
        write_atomic(&path, &bytes, self.opts.durable)?;
        self.cdi = Some(bytes);
        Ok(())
    }

    /// The file that holds (or would hold) tile `t`, for messages.
    pub fn tile_file(&self, t: TileAddr) -> PathBuf {
        if self.storage == StorageFormat::Exploded {
            return self.exploded_tile_path(t).unwrap_or_else(|| {
                self.level_dir(t.level)
                    .join(exploded::row_dir(t.row))
                    .join(exploded::col_file(t.col, self.default_kind().ext()))
            });
        }
        self.bundle_path(&t.bundle())
    }

    /// Tunables this cache was opened with.
    pub fn options(&self) -> &CacheOptions {
        &self.opts
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn tiles_dir(&self) -> &Path {
        &self.tiles_dir
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn storage(&self) -> StorageFormat {
        self.storage
    }
    pub fn conf(&self) -> Option<&ConfXml> {
        self.conf.as_ref()
    }
    pub fn scheme(&self) -> Option<&TileScheme> {
        self.conf.as_ref().map(|c| &c.scheme)
    }
    /// Raw conf.cdi bytes, if the cache has one.
    pub fn cdi(&self) -> Option<&[u8]> {
        self.cdi.as_deref()
    }
    /// The cache extent (conf.cdi), if any.
    pub fn extent(&self) -> Option<Envelope> {
        self.cdi.as_deref().and_then(|b| conf::parse_cdi(b).ok())
    }

    /// The image kind to assume for tiles whose bytes don't tell.
    pub fn default_kind(&self) -> ImageKind {
        self.scheme()
            .and_then(|s| s.tile_format.image_kind())
            .unwrap_or(ImageKind::Png)
    }

    /// The image kind of a tile: sniffed, else the cache's format.
    pub fn kind_of(&self, bytes: &[u8]) -> ImageKind {
        sniff(bytes).unwrap_or_else(|| self.default_kind())
    }

    /// Refuses a cache path that resolves, through symbolic links, outside the cache folder, so
    /// no tile is ever read from or written to a file elsewhere. A path that does not exist yet is
    /// judged by its nearest existing ancestor; a dangling symbolic link is refused (opening it to
    /// create would create its target).
    pub fn check_inside(&self, p: &Path) -> Result<()> {
        let root = fs::canonicalize(&self.root).at(&self.root)?;
        let mut at = p;
        let real = loop {
            match fs::canonicalize(at) {
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if fs::symlink_metadata(at).is_ok() {
                        return Err(Error::io(
                            at,
                            std::io::Error::other(
                                "a dangling symbolic link in the cache; not followed",
                            ),
                        ));
                    }
                    match at.parent() {
                        Some(q) if !q.as_os_str().is_empty() => at = q,
                        _ => return Ok(()),
                    }
                }
                Err(e) => return Err(Error::io(at, e)),
            }
        };
        if real.starts_with(&root) {
            return Ok(());
        }
        Err(Error::io(
            at,
            std::io::Error::other(format!(
                "resolves to {} outside the cache folder {}; not followed",
                real.display(),
                root.display()
            )),
        ))
    }

    /// [`Cache::check_inside`] for every file a writer of bundle `id` touches.
    fn check_bundle_files(&self, id: &BundleId) -> Result<()> {
        let path = self.bundle_path(id);
        for p in [
            self.level_dir(id.level),
            self.lock_path(id),
            names::bundlx_of(&path),
            times::sidecar_path(&path),
            path,
        ] {
            self.check_inside(&p)?;
        }
        Ok(())
    }

    pub fn level_dir(&self, level: u8) -> PathBuf {
        names::resolve(&self.tiles_dir, &exploded::level_dir(level))
    }

    /// Path of a bundle's `.bundle` file.
    pub fn bundle_path(&self, id: &BundleId) -> PathBuf {
        names::resolve(
            &self.level_dir(id.level),
            &format!("{}.bundle", exploded::bundle_base(id)),
        )
    }

    /// Path of a bundle's lock file (as MapProxy names it).
    pub fn lock_path(&self, id: &BundleId) -> PathBuf {
        self.level_dir(id.level)
            .join(format!("{}.lck", exploded::bundle_base(id)))
    }

    /// Levels that have a folder, ascending.
    pub fn levels(&self) -> Result<Vec<u8>> {
        let mut v: Vec<u8> = read_dir_names(&self.tiles_dir)?
            .iter()
            .filter_map(|n| exploded::parse_level_dir(n).ok())
            .filter(|l| self.level_dir(*l).is_dir())
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Bundles of a level (compact storage), from file names only; the listing is kept until the
    /// level folder changes.
    pub fn bundles(&self, level: u8) -> Result<Vec<BundleId>> {
        let dir = self.level_dir(level);
        let Some(stamp) = FileStamp::of(&dir)? else {
            return Ok(Vec::new());
        };
        if let Some((s, v)) = self.listings.lock().unwrap().get(&level) {
            if *s == stamp {
                return Ok(v.as_ref().clone());
            }
        }
        let mut v = Vec::new();
        for n in read_dir_names(&dir)? {
            if !n.to_ascii_lowercase().ends_with(".bundle") {
                continue;
            }
            match exploded::parse_bundle_file(&n) {
                Ok((row0, col0, _)) => v.push(BundleId { level, row0, col0 }),
                Err(e) => tracing::warn!("{}: skipping: {e}", dir.join(&n).display()),
            }
        }
        v.sort_unstable();
        self.listings
            .lock()
            .unwrap()
            .insert(level, (stamp, Arc::new(v.clone())));
        Ok(v)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The mapped bundle `id`, reopened if another writer changed it; None if it doesn't exist.
    pub fn bundle(&self, id: BundleId) -> Result<Option<Arc<BundleHandle>>> {
        let cached = self.open.lock().unwrap().get(&id).cloned();
        if let Some(c) = cached {
            let now = self.now_ms();
            let last = c.checked_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) < self.opts.recheck.as_millis() as u64 {
                return Ok(Some(c.handle.clone()));
            }
            if !c.handle.is_stale()? {
                c.checked_ms.store(now, Ordering::Relaxed);
                return Ok(Some(c.handle.clone()));
            }
            tracing::debug!("{}: changed on disk, remapping", c.handle.path.display());
        }
        self.open.lock().unwrap().pop(&id);
        let path = self.bundle_path(&id);
        if !path.exists() {
            return Ok(None);
        }
        self.check_inside(&path)?;
        if self.storage == StorageFormat::CompactV1 {
            self.check_inside(&names::bundlx_of(&path))?;
        }
        let handle = Arc::new(match self.storage {
            StorageFormat::CompactV1 => BundleHandle::open_v1(id, &path)?,
            _ => BundleHandle::open_v2(id, &path)?,
        });
        let c = Arc::new(Cached {
            handle: handle.clone(),
            checked_ms: AtomicU64::new(self.now_ms()),
        });
        self.open.lock().unwrap().put(id, c);
        Ok(Some(handle))
    }

    /// Forgets a mapped bundle so the next access maps the file anew.
    pub fn invalidate(&self, id: &BundleId) {
        self.open.lock().unwrap().pop(id);
    }

    /// Path of an exploded tile, if one exists (any known extension).
    pub(crate) fn exploded_tile_path(&self, t: TileAddr) -> Option<PathBuf> {
        let dir = names::resolve(&self.level_dir(t.level), &exploded::row_dir(t.row));
        let first = self.default_kind().ext();
        [first, "png", "jpg", "jpeg"]
            .iter()
            .map(|ext| names::resolve(&dir, &exploded::col_file(t.col, ext)))
            .find(|p| p.is_file())
    }

    /// The tile's bytes, or None if the cache lacks it. A broken entry is an error naming file and entry.
    pub fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        if self.storage == StorageFormat::Exploded {
            return match self.exploded_tile_path(t) {
                Some(p) => {
                    self.check_inside(&p)?;
                    let bytes = fs::read(&p).at(&p)?;
                    let mtime = fs::metadata(&p).and_then(|m| m.modified()).ok();
                    Ok(Some(TileBytes::file(bytes, mtime)))
                }
                None => Ok(None),
            };
        }
        let Some(b) = self.bundle(t.bundle())? else {
            return Ok(None);
        };
        let read = |b: Arc<BundleHandle>, r: Option<std::ops::Range<usize>>| -> Result<_> {
            Ok(match r {
                Some(r) => Some(TileBytes(Repr::Read(b.clone(), Arc::new(b.read(r)?)))),
                None => None,
            })
        };
        match b.tile_range(t.slot()) {
            Ok(r) => read(b, r),
            // Another writer may have appended since the map was made (the index is shared with
            // the file, the map length is not): remap once before calling the entry bad.
            Err(e) if b.is_stale().unwrap_or(false) => {
                tracing::debug!("{e}; bundle changed on disk, remapping");
                self.invalidate(&t.bundle());
                let Some(b) = self.bundle(t.bundle())? else {
                    return Ok(None);
                };
                let r = b.tile_range(t.slot())?;
                read(b, r)
            }
            Err(e) => Err(e),
        }
    }

    /// Rows of a level that hold at least one tile.
    pub fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        let mut rows = BTreeSet::new();
        if self.storage == StorageFormat::Exploded {
            for n in read_dir_names(&self.level_dir(level))? {
                if let Ok(r) = exploded::parse_row_dir(&n) {
                    rows.insert(r);
                }
            }
            return Ok(rows);
        }
        for id in self.bundles(level)? {
            match self.bundle(id) {
                Ok(Some(b)) => rows.extend(b.slots().into_iter().map(|(s, _)| id.row0 + s.row)),
                Ok(None) => {}
                Err(e) => tracing::error!("{e}"),
            }
        }
        Ok(rows)
    }

    /// Tiles of one row: (col, size in bytes), ascending by col.
    pub fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        if self.storage == StorageFormat::Exploded {
            let dir = names::resolve(&self.level_dir(level), &exploded::row_dir(row));
            for n in read_dir_names(&dir)? {
                if let Ok((col, _)) = exploded::parse_col_file(&n) {
                    let len = fs::metadata(dir.join(&n)).at(dir.join(&n))?.len();
                    out.push((col, len));
                }
            }
            out.sort_unstable();
            return Ok(out);
        }
        let row0 = row - row % BUNDLE_DIM;
        for id in self.bundles(level)?.into_iter().filter(|b| b.row0 == row0) {
            let Some(b) = self.bundle(id)? else { continue };
            out.extend(
                b.slots()
                    .into_iter()
                    .filter(|(s, _)| s.row == row - row0)
                    .map(|(s, size)| (id.col0 + s.col, u64::from(size))),
            );
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Groups of tiles of a level, one per bundle (for exploded storage, the bundle they would form).
    pub fn groups(&self, level: u8) -> Result<Vec<TileGroup>> {
        if self.storage != StorageFormat::Exploded {
            return Ok(self
                .bundles(level)?
                .into_iter()
                .map(|id| TileGroup {
                    id,
                    files: Vec::new(),
                })
                .collect());
        }
        let mut map: BTreeMap<BundleId, Vec<(TileAddr, PathBuf)>> = BTreeMap::new();
        let ldir = self.level_dir(level);
        for rn in read_dir_names(&ldir)? {
            let rdir = ldir.join(&rn);
            if !rn.starts_with(['R', 'r']) || !rdir.is_dir() {
                continue;
            }
            // `R…` must be a row; a lower-case `r…` that is not one is skipped (verify warns).
            let row = match exploded::parse_row_dir(&rn) {
                Ok(row) => row,
                Err(e) if rn.starts_with('R') => return Err(Error::format(&rdir, e)),
                Err(_) => continue,
            };
            for cn in read_dir_names(&rdir)? {
                let p = rdir.join(&cn);
                match exploded::parse_col_file(&cn) {
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

    /// Reads every tile of a group (in slot order for bundles). Any broken entry is an error.
    pub fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        if self.storage == StorageFormat::Exploded {
            return g
                .files
                .iter()
                .map(|(t, p)| Ok((*t, TileBytes::owned(fs::read(p).at(p)?))))
                .collect();
        }
        let Some(b) = self.bundle(g.id)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (slot, _) in b.slots() {
            if let Some(r) = b.tile_range(slot)? {
                out.push((g.id.tile(slot), TileBytes(Repr::Mapped(b.clone(), r))));
            }
        }
        Ok(out)
    }

    /// Stats of one level.
    pub fn level_stats(&self, level: u8) -> Result<LevelStats> {
        let mut s = LevelStats::default();
        if self.storage == StorageFormat::Exploded {
            for g in self.groups(level)? {
                s.bundles += 1;
                for (_, p) in &g.files {
                    let len = fs::metadata(p).at(p)?.len();
                    s.tiles += 1;
                    s.tile_bytes += len;
                    s.file_bytes += len;
                }
            }
            return Ok(s);
        }
        for id in self.bundles(level)? {
            let Some(b) = self.bundle(id)? else { continue };
            s.bundles += 1;
            for (_, size) in b.slots() {
                s.tiles += 1;
                s.tile_bytes += u64::from(size);
            }
            s.file_bytes += b.file_bytes();
            s.dead_bytes += b.dead_bytes();
        }
        Ok(s)
    }

    /// Writes tiles (the last of duplicates wins), grouped per bundle: one lock, one append, one index
    /// update each. New bundles are created atomically under the lock.
    pub fn write_tiles(&self, tiles: &[(TileAddr, &[u8])]) -> Result<WriteStats> {
        let timed: Vec<(TileAddr, &[u8], Option<SystemTime>)> =
            tiles.iter().map(|(t, b)| (*t, *b, None)).collect();
        self.write_tiles_timed(&timed)
    }

    /// [`Cache::write_tiles`] that also records each tile's modification time when given (the
    /// `times` sidecar of compact bundles, the file's mtime in exploded caches).
    pub fn write_tiles_timed(
        &self,
        tiles: &[(TileAddr, &[u8], Option<SystemTime>)],
    ) -> Result<WriteStats> {
        let mut total = WriteStats::default();
        if self.storage == StorageFormat::Exploded {
            for (t, bytes, mtime) in tiles {
                let dir = names::resolve(&self.level_dir(t.level), &exploded::row_dir(t.row));
                self.check_inside(&dir)?;
                fs::create_dir_all(&dir).at(&dir)?;
                let ext = self.kind_of(bytes).ext();
                let path = names::resolve(&dir, &exploded::col_file(t.col, ext));
                self.check_inside(&path)?;
                write_atomic(&path, bytes, self.opts.durable)?;
                if let Some(m) = mtime {
                    set_file_mtime(&path, *m)?;
                }
                total.tiles += 1;
                total.bytes_written += bytes.len() as u64;
            }
            return Ok(total);
        }
        let mut groups: BTreeMap<BundleId, Vec<TimedSlot>> = BTreeMap::new();
        for (t, bytes, mtime) in tiles {
            groups
                .entry(t.bundle())
                .or_default()
                .push((t.slot(), bytes, *mtime));
        }
        for (id, group) in groups {
            let st = self.write_bundle(id, &group)?;
            total.tiles += st.tiles;
            total.bytes_written += st.bytes_written;
        }
        Ok(total)
    }

    /// The modification time to show for a tile: its own (time sidecar, or the file's in an
    /// exploded cache) when recorded, else its bundle's.
    pub fn tile_mtime(&self, t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        if let Some(h) = bytes.bundle() {
            let slot = t.slot();
            if let Some(m) = times::read(&h.path, slot, h.raw_entry(slot)) {
                return Some(m);
            }
        }
        bytes.mtime()
    }

    /// Records a stored tile's modification time (as `touch`/rsync set it). False if the tile is
    /// not stored.
    pub fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        if self.storage == StorageFormat::Exploded {
            return match self.exploded_tile_path(t) {
                Some(p) => {
                    self.check_inside(&p)?;
                    set_file_mtime(&p, mtime).map(|_| true)
                }
                None => Ok(false),
            };
        }
        let id = t.bundle();
        let path = self.bundle_path(&id);
        if !path.exists() {
            return Ok(false);
        }
        self.check_bundle_files(&id)?;
        let _lock = BundleLock::acquire(&self.lock_path(&id), self.opts.lock_timeout)?;
        self.invalidate(&id);
        let Some(h) = self.bundle(id)? else {
            return Ok(false);
        };
        if h.tile_range(t.slot())?.is_none() {
            return Ok(false);
        }
        times::write(&path, &[(t.slot(), h.raw_entry(t.slot()), mtime)])?;
        Ok(true)
    }

    fn write_bundle(&self, id: BundleId, timed: &[TimedSlot]) -> Result<WriteStats> {
        let tiles: Vec<(Slot, &[u8])> = timed.iter().map(|(s, b, _)| (*s, *b)).collect();
        let tiles = tiles.as_slice();
        let dir = self.level_dir(id.level);
        self.check_tiles(id, tiles)?;
        self.check_bundle_files(&id)?;
        fs::create_dir_all(&dir).at(&dir)?;
        let lock = BundleLock::acquire(&self.lock_path(&id), self.opts.lock_timeout)?;
        let st = self.append_locked(&lock, id, tiles)?;
        let path = self.bundle_path(&id);
        // Per-tile times, still under the lock, after the index: see `times` for why a lost or
        // torn record is harmless.
        if timed.iter().any(|t| t.2.is_some()) {
            let recorded = self.bundle(id).and_then(|h| {
                let Some(h) = h else { return Ok(()) };
                let recs: Vec<(Slot, u64, SystemTime)> = timed
                    .iter()
                    .filter_map(|(s, _, m)| m.map(|m| (*s, h.raw_entry(*s), m)))
                    .collect();
                times::write(&path, &recs)
            });
            if let Err(e) = recorded {
                tracing::warn!("tile times of {} not recorded: {e}", path.display());
            }
        }
        drop(lock);
        Ok(st)
    }

    /// Refuses bad tiles before anything (even a new empty bundle) is written.
    fn check_tiles(&self, id: BundleId, tiles: &[(Slot, &[u8])]) -> Result<()> {
        for (slot, bytes) in tiles {
            let t = id.tile(*slot);
            if bytes.is_empty() {
                return Err(Error::invalid(format!(
                    "tile {t}: refusing to store an empty tile"
                )));
            }
            if bytes.len() > crate::format::MAX_TILE_SIZE {
                return Err(Error::format(
                    self.bundle_path(&id),
                    crate::format::FormatError::BadEntry {
                        row: slot.row,
                        col: slot.col,
                        msg: format!(
                            "tile {t} of {} bytes is larger than a bundle can hold (2^24-1)",
                            bytes.len()
                        ),
                    },
                ));
            }
        }
        Ok(())
    }

    /// Takes the writer lock of bundle `id` (creating its level folder), for a read-modify-write
    /// with [`Cache::write_bundle_locked`].
    pub fn lock_bundle(&self, id: BundleId) -> Result<BundleLock> {
        let dir = self.level_dir(id.level);
        self.check_bundle_files(&id)?;
        fs::create_dir_all(&dir).at(&dir)?;
        let lock = BundleLock::acquire(&self.lock_path(&id), self.opts.lock_timeout)?;
        // Whatever another writer did before we held the lock must be visible now.
        self.invalidate(&id);
        Ok(lock)
    }

    /// Appends tiles to bundle `id` whose lock the caller holds (compact storage only).
    pub fn write_bundle_locked(
        &self,
        lock: &BundleLock,
        id: BundleId,
        tiles: &[(Slot, &[u8])],
    ) -> Result<WriteStats> {
        if self.storage == StorageFormat::Exploded {
            return Err(Error::invalid(
                "write_bundle_locked: exploded caches have no bundles",
            ));
        }
        self.check_tiles(id, tiles)?;
        self.append_locked(lock, id, tiles)
    }

    fn append_locked(
        &self,
        _lock: &BundleLock,
        id: BundleId,
        tiles: &[(Slot, &[u8])],
    ) -> Result<WriteStats> {
        let path = self.bundle_path(&id);
        let rw = |p: &Path| fs::OpenOptions::new().read(true).write(true).open(p).at(p);
        let mut created = 0u64;
        let st = match self.storage {
            StorageFormat::CompactV1 => {
                let xpath = names::bundlx_of(&path);
                if !path.exists() || !xpath.exists() {
                    write_atomic(&xpath, &v1::empty_bundlx(), self.opts.durable)?;
                    write_atomic(
                        &path,
                        &v1::empty_bundle(id.row0, id.col0),
                        self.opts.durable,
                    )?;
                    created = (v1::BUNDLX_LEN as u64) + v1::DATA_START;
                    self.listings.lock().unwrap().remove(&id.level);
                }
                let (b, x) = (rw(&path)?, rw(&xpath)?);
                v1::append_tiles(&b, &path, &x, &xpath, tiles, self.opts.durable)?
            }
            _ => {
                if !path.exists() {
                    write_atomic(&path, &v2::empty_bundle(), self.opts.durable)?;
                    created = v2::DATA_START;
                    // Coarse folder mtimes must not hide the new bundle from listings.
                    self.listings.lock().unwrap().remove(&id.level);
                }
                v2::append_tiles(&rw(&path)?, &path, tiles, self.opts.durable)?
            }
        };
        self.invalidate(&id);
        self.note_own_write(&id);
        Ok(WriteStats {
            tiles: st.tiles,
            bytes_written: st.bytes_written + created,
        })
    }

    /// Remembers the stamp of a bundle this process just wrote (caller holds its lock).
    pub(crate) fn note_own_write(&self, id: &BundleId) {
        if let Ok(Some(st)) = FileStamp::of(&self.bundle_path(id)) {
            self.own_writes.lock().unwrap().insert(*id, st);
        }
    }

    /// Whether `stamp` is what this process left the bundle as at its last write (no other writer
    /// changed it since).
    pub fn written_by_us(&self, id: &BundleId, stamp: &FileStamp) -> bool {
        self.own_writes.lock().unwrap().get(id) == Some(stamp)
    }

    /// Removes tiles (their bytes become dead space in compact bundles).
    pub fn delete_tiles(&self, tiles: &[TileAddr]) -> Result<()> {
        if self.storage == StorageFormat::Exploded {
            for t in tiles {
                if let Some(p) = self.exploded_tile_path(*t) {
                    fs::remove_file(&p).at(&p)?;
                }
            }
            return Ok(());
        }
        let mut groups: BTreeMap<BundleId, Vec<Slot>> = BTreeMap::new();
        for t in tiles {
            groups.entry(t.bundle()).or_default().push(t.slot());
        }
        for (id, slots) in groups {
            let path = self.bundle_path(&id);
            if !path.exists() {
                continue;
            }
            self.check_bundle_files(&id)?;
            let _lock = BundleLock::acquire(&self.lock_path(&id), self.opts.lock_timeout)?;
            if self.storage == StorageFormat::CompactV1 {
                let xpath = names::bundlx_of(&path);
                let x = fs::OpenOptions::new().write(true).open(&xpath).at(&xpath)?;
                v1::delete_tiles(&x, &xpath, &slots, self.opts.durable)?;
            } else {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .at(&path)?;
                v2::delete_tiles(&f, &path, &slots, self.opts.durable)?;
            }
            self.invalidate(&id);
            self.note_own_write(&id);
        }
        Ok(())
    }
}

/// Tiles of one bundle (or, for exploded storage, the files that would form it).
#[derive(Debug, Clone)]
pub struct TileGroup {
    pub id: BundleId,
    pub(crate) files: Vec<(TileAddr, PathBuf)>,
}

impl TileGroup {
    /// Number of tiles, if known without reading the bundle (exploded sources).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// The full extent of a scheme's level-0 grid from its origin (used when no extent is given).
/// A tile to write into a bundle, with its modification time if known.
type TimedSlot<'a> = (Slot, &'a [u8], Option<SystemTime>);

/// Sets a file's modification time.
fn set_file_mtime(path: &Path, mtime: SystemTime) -> Result<()> {
    let f = fs::OpenOptions::new().write(true).open(path).at(path)?;
    f.set_modified(mtime).at(path)
}

pub fn scheme_extent(s: &TileScheme) -> Envelope {
    if s.wkid == Some(102100) || s.wkid == Some(3857) || s.latest_wkid == Some(3857) {
        let o = conf::WEB_MERCATOR_ORIGIN;
        return Envelope {
            xmin: -o,
            ymin: -o,
            xmax: o,
            ymax: o,
        };
    }
    let l = s.lods.first().map_or(1.0, |l| l.resolution);
    let (w, h) = (f64::from(s.tile_cols) * l, f64::from(s.tile_rows) * l);
    Envelope {
        xmin: s.origin_x,
        ymin: s.origin_y - h,
        xmax: s.origin_x + w,
        ymax: s.origin_y,
    }
}

/// The entry of `dir` named `name` in any case (see [`exploded::find_name`]), or None; an error
/// naming both spellings when there are two.
pub(crate) fn find_entry(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let names = read_dir_names(dir)?;
    let found = exploded::find_name(names.iter().map(String::as_str), name).in_file(dir)?;
    Ok(found.map(|n| dir.join(n)))
}

/// The folder below `root` that holds conf.xml when `root` does not: `Layers/` (ArcGIS server
/// caches, old `.tpk`), or the one folder of `v101/` holding one (ArcGIS's Create Map Tile
/// Package names it after the map, e.g. `v101/TPK Root Name/`; seen in consbio/tpkutils' test
/// data). Several candidates are an error naming them.
fn find_conf_folder(root: &Path) -> Result<Option<PathBuf>> {
    let mut found = Vec::new();
    if let Some(l) = find_entry(root, "Layers")? {
        if find_entry_if_dir(&l, CONF_XML)? {
            found.push(l);
        }
    }
    if let Some(v) = find_entry(root, "v101")?.filter(|p| p.is_dir()) {
        let mut subs = read_dir_names(&v)?;
        subs.sort();
        for n in subs {
            let sub = v.join(&n);
            if sub.is_dir() && find_entry_if_dir(&sub, CONF_XML)? {
                found.push(sub);
            }
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(Error::invalid(format!(
            "{}: holds {} caches ({}); open one of them",
            root.display(),
            found.len(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn find_entry_if_dir(dir: &Path, name: &str) -> Result<bool> {
    Ok(find_entry(dir, name)?.is_some_and(|p| p.is_file()))
}

/// Storage of the files under `tiles_dir`, looking at the first level folder that holds anything.
/// Two spellings of one level folder, or of one bundle in a level folder, are an error naming
/// both (`L05` and `l05`, `R0000C0000.bundle` and `R0000C0000.BUNDLE`).
fn detect_storage(tiles_dir: &Path) -> Result<Option<StorageFormat>> {
    let mut levels: Vec<(u8, String)> = read_dir_names(tiles_dir)?
        .into_iter()
        .filter_map(|n| exploded::parse_level_dir(&n).ok().map(|l| (l, n)))
        .collect();
    levels.sort();
    for w in levels.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(two_spellings(tiles_dir, &w[0].1, &w[1].1));
        }
    }
    let mut found = None;
    for (_, l) in levels {
        let names = read_dir_names(&tiles_dir.join(&l))?;
        let mut bundles: Vec<(u32, u32, &str, &str)> = names
            .iter()
            .filter_map(|n| {
                exploded::parse_bundle_file(n)
                    .ok()
                    .map(|(r, c, ext)| (r, c, ext, n.as_str()))
            })
            .collect();
        bundles.sort();
        for w in bundles.windows(2) {
            if (w[0].0, w[0].1, w[0].2) == (w[1].0, w[1].1, w[1].2) {
                return Err(two_spellings(&tiles_dir.join(&l), w[0].3, w[1].3));
            }
        }
        if found.is_some() {
            continue;
        }
        if bundles.iter().any(|b| b.2 == "bundlx") {
            found = Some(StorageFormat::CompactV1);
        } else if !bundles.is_empty() {
            found = Some(StorageFormat::CompactV2);
        } else if names.iter().any(|n| exploded::parse_row_dir(n).is_ok()) {
            found = Some(StorageFormat::Exploded);
        }
    }
    Ok(found)
}

fn two_spellings(dir: &Path, a: &str, b: &str) -> Error {
    Error::format(
        dir,
        crate::format::FormatError::BadName {
            name: a.to_string(),
            msg: format!("{a:?} and {b:?} are two spellings of one name in one folder; keep one"),
        },
    )
}
