//! A tile cache: where it lives ([`url::Location`]: a folder or a store URL), its tiling scheme
//! (`conf.xml`, or a `root.json`), extent (`conf.cdi`) and the storage of its tiles.
//! [`Cache::open_with`] reads either layout (ArcGIS `conf.xml` + `_alllayers/`, or MapProxy's `Lnn/`
//! at the root), ready-to-serve folders and unpacked vector tile packages (`p12/`), and detects
//! exploded / Compact V1 / Compact V2; every tile operation goes to the cache's one
//! [`store::Storage`] (one file per storage kind in `store/`). The questions whose answers differ
//! between a folder and a store (a level's folder, its time, syncing, compaction, how deleted space
//! is reclaimed) are methods here, so nothing above `cache/` asks whether a path is a URL.

pub mod buffer;
pub mod bundle;
pub mod changes;
pub mod commit;
pub mod counters;
pub mod files;
pub mod lock;
pub mod rts;
pub mod shard;
pub mod spelling;
pub mod store;
pub mod times;
pub mod url;

use std::collections::BTreeSet;
use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use self::bundle::{BundleHandle, FileStamp};
pub use self::files::{sync_dir, write_atomic, AtomicFile};
pub use self::lock::BundleLock;
pub(crate) use self::store::read_dir_names;
use self::store::{
    compact::CompactStore,
    exploded::{ExplodedStore, FileLayout},
};
pub use self::store::{
    Compacted, GroupView, LevelStats, Place, Storage, StorageKind, TileGroup, TileStat, TimedSlot,
    UpdateFn,
};
use crate::error::{Error, FormatContext, IoContext, Result};
use crate::format::conf::{self, ConfXml, Envelope, StorageFormat, TileScheme};
use crate::format::exploded;
use crate::format::sniff::{sniff, ImageKind};
use crate::format::v2::WriteStats;
use crate::format::{BundleId, Slot, TileAddr};

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
    /// Client settings of a cache in an object store (ignored for folders).
    pub object: store::object::ObjectOptions,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            recheck: Duration::from_secs(1),
            max_open_bundles: 256,
            lock_timeout: Duration::from_secs(60),
            durable: true,
            object: store::object::ObjectOptions::default(),
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
    /// Bytes owned by the caller (a tile made or read elsewhere).
    pub fn owned(v: Vec<u8>) -> Self {
        TileBytes(Repr::Owned(Arc::new(v), None))
    }

    /// Bytes held elsewhere (the write buffer), with their modification time.
    pub fn shared(v: Arc<Vec<u8>>, mtime: Option<std::time::SystemTime>) -> Self {
        TileBytes(Repr::Owned(v, mtime))
    }

    /// Bytes read from a file (an exploded tile) with the file's modification time.
    pub(crate) fn file(v: Vec<u8>, mtime: Option<std::time::SystemTime>) -> Self {
        TileBytes(Repr::Owned(Arc::new(v), mtime))
    }

    /// Bytes read (pread) from an open bundle.
    pub(crate) fn read_from(b: Arc<BundleHandle>, v: Vec<u8>) -> Self {
        TileBytes(Repr::Read(b, Arc::new(v)))
    }

    /// A slice of a mapped bundle (batch jobs: no copy).
    pub(crate) fn mapped(b: Arc<BundleHandle>, r: std::ops::Range<usize>) -> Self {
        TileBytes(Repr::Mapped(b, r))
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

/// A tile cache: scheme, extent and storage. Shared between threads (`Arc<Cache>`).
pub struct Cache {
    /// Where the cache lives: a folder, or a prefix in an object store.
    location: url::Location,
    place: Place,
    layout: Layout,
    storage: StorageFormat,
    conf: Option<ConfXml>,
    cdi: Option<Vec<u8>>,
    opts: CacheOptions,
    store: Box<dyn Storage>,
    /// Set for a ready-to-serve folder (`root.json`, no conf.xml; see [`rts`]).
    ready_to_serve: Option<rts::ReadyToServe>,
}

pub(crate) const CONF_XML: &str = "conf.xml";
pub(crate) const CONF_CDI: &str = "conf.cdi";
pub(crate) const ALLLAYERS: &str = "_alllayers";

impl Cache {
    /// Opens a cache folder (or its conf.xml) with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Cache> {
        Self::open_with(path, CacheOptions::default())
    }

    /// Opens a cache folder (or its conf.xml, or an unpacked `.tpk`, or a ready-to-serve folder or
    /// its `root.json`, or an MBTiles, GeoPackage or PMTiles file, an XYZ or TMS folder, or a cache
    /// or a PMTiles object in a store) with `opts`.
    ///
    /// Names are found whatever their case, as ArcGIS on Windows writes them (`Conf.xml`,
    /// `CONF.CDI`, `_AllLayers`). A folder without conf.xml is searched for the one holding it:
    /// `Layers/` (a server cache), `v101/<Map Name>/` (an unpacked `.tpk`; ArcGIS names it after
    /// the map, older packages `Layers`). A folder with neither but a `root.json` is a ready-to-serve
    /// cache ([`rts`]).
    ///
    /// Errors, each naming the file: a missing folder, a plain file, no cache in it, a
    /// conf.xml/conf.cdi that cannot be read or holds a value bundlefs does not support (see
    /// `doc/accepted-inputs.md`), two spellings of one name in one folder (naming both), several
    /// caches in one package, a `PacketSize` other than 128 with bundles on disk.
    pub fn open_with(path: impl AsRef<Path>, opts: CacheOptions) -> Result<Cache> {
        if let Some(u) = url::ObjectUrl::from_path(path.as_ref())? {
            if url::is_pmtiles(path.as_ref()) {
                // One object, read by range requests.
                let store = store::pmtiles::PmtilesStore::open_url(&u)?;
                return Cache::pmtiles_cache(path.as_ref(), store, opts);
            }
            return Cache::open_url(&u, opts, None);
        }
        if url::is_mbtiles(path.as_ref()) {
            return Cache::open_mbtiles(path.as_ref(), opts);
        }
        if url::is_geopackage(path.as_ref()) {
            return Cache::open_geopackage(path.as_ref(), opts);
        }
        if url::is_pmtiles(path.as_ref()) {
            return Cache::open_pmtiles(path.as_ref(), opts);
        }
        let mut root = path.as_ref().to_path_buf();
        let names_conf = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case(CONF_XML))
        };
        if (names_conf(&root) && root.is_file()) || rts::names_root_json(&root) {
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
            } else if let Some(c) = rts::open(&root, &opts)? {
                return Ok(c);
            } else if let Some(c) = match find_entry(&root, "p12")? {
                // An unpacked vector tile package: its service root.json and tiles in `p12/`.
                Some(p12) if p12.is_dir() => rts::open(&p12, &opts)?,
                _ => None,
            } {
                return Ok(c);
            } else if let Some(tms) = xyz_folder(&root)? {
                return Cache::open_xyz(&root, tms, opts);
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

    /// A cache over what `open_with` or `create` found or wrote, with the storage for its kind.
    fn assemble(
        root: PathBuf,
        tiles_dir: PathBuf,
        layout: Layout,
        storage: StorageFormat,
        conf: Option<ConfXml>,
        cdi: Option<Vec<u8>>,
        opts: CacheOptions,
    ) -> Cache {
        let place = Place { root, tiles_dir };
        let default_kind = default_kind(conf.as_ref().map(|c| &c.scheme));
        let store: Box<dyn Storage> = match storage {
            StorageFormat::Exploded => Box::new(ExplodedStore::new(
                place.clone(),
                default_kind,
                opts.durable,
            )),
            _ => Box::new(CompactStore::new(place.clone(), storage, opts.clone())),
        };
        Cache {
            location: url::Location::Folder(place.root.clone()),
            place,
            layout,
            storage,
            conf,
            cdi,
            opts,
            store,
            ready_to_serve: None,
        }
    }

    /// Opens the cache in an object store at `url` (`s3://BUCKET/PREFIX` or
    /// `az://CONTAINER/PREFIX`; client settings from the `AWS_*` or `AZURE_*` environment), or with
    /// `new` creates it (conf.cdi, then conf.xml). Compact V2 and exploded caches are read and
    /// written there, Compact V1 only read; the storage is the one the keys show
    /// (`store::object::open`).
    pub fn open_url(
        url: &url::ObjectUrl,
        opts: CacheOptions,
        new: Option<store::object::NewCache>,
    ) -> Result<Cache> {
        let o = store::object::open(url, opts.clone(), new)?;
        let root = PathBuf::from(url.to_string());
        if let Some(b) = &o.cdi {
            conf::parse_cdi(b).in_file(root.join(CONF_CDI))?;
        }
        let (layout, tiles_dir) = match o.arcgis_layout {
            true => (Layout::ArcGis, root.join(ALLLAYERS)),
            false => (Layout::MapProxy, root.clone()),
        };
        Ok(Cache {
            location: url::Location::Store(url.clone()),
            place: Place { root, tiles_dir },
            layout,
            storage: o.storage,
            conf: o.conf,
            cdi: o.cdi.map(|b| b.to_vec()),
            opts,
            store: o.store,
            ready_to_serve: None,
        })
    }

    /// A cache held in the one file (or object) `path`: an MBTiles file, a GeoPackage or a
    /// PMTiles file, shown with conf.xml `conf` (made from the file's tiling scheme) and conf.cdi
    /// `cdi`, its tiles in `store`. Listed as exploded storage: one record per tile, as exploded
    /// storage has one file per tile.
    fn one_file(
        path: &Path,
        conf: ConfXml,
        cdi: Option<Vec<u8>>,
        store: Box<dyn Storage>,
        opts: CacheOptions,
    ) -> Cache {
        Cache {
            location: url::Location::File(path.to_path_buf()),
            place: Place {
                root: path.to_path_buf(),
                tiles_dir: path.to_path_buf(),
            },
            layout: Layout::ArcGis,
            storage: StorageFormat::Exploded,
            conf: Some(conf),
            cdi,
            opts,
            store,
            ready_to_serve: None,
        }
    }

    /// Opens an MBTiles file: its tiles through [`store::sqlite::SqliteTiles`], its tiling
    /// scheme Web Mercator with the zoom levels 0 to 23 (ArcGIS Online's), or to `maxzoom`
    /// (metadata, else the deepest level held) when deeper, and the `format` of the metadata (else the first tile's kind), its extent from
    /// `bounds`. The cache shows a conf.xml made from that scheme. Errors, naming the file: no
    /// such file, not SQLite, no `tiles` table, a `format` bundlefs does not read.
    pub fn open_mbtiles(path: &Path, opts: CacheOptions) -> Result<Cache> {
        need_file(path, "MBTiles file")?;
        let meta = store::mbtiles::read_metadata(path)?;
        let store = store::mbtiles::open(path, opts.durable)?;
        let levels = store.levels()?;
        let format = match meta.get("format") {
            Some(f) => crate::format::mbtiles::tile_format(f)
                .map_err(|e| Error::invalid(format!("{}: metadata {e}", path.display())))?,
            None => first_tile_format(&store, &levels),
        };
        let maxzoom = meta
            .get("maxzoom")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .into_iter()
            .chain(levels.last().copied())
            .max()
            .unwrap_or(0);
        // Every zoom an MBTiles file may take, as ArcGIS Online's scheme has them (0-23), or
        // deeper when the file holds deeper levels: an import may add any of them.
        let scheme = TileScheme::web_mercator(maxzoom.max(23), format);
        let conf = TileScheme::parse_conf_xml(&scheme.to_conf_xml()).in_file(path)?;
        let cdi = meta
            .get("bounds")
            .and_then(|b| crate::format::mbtiles::parse_bounds(b))
            .map(|e| conf::write_cdi(&e, &scheme));
        Ok(Cache::one_file(path, conf, cdi, Box::new(store), opts))
    }

    /// Creates an empty MBTiles file at `path` for tiles of `scheme` (Web Mercator zoom levels,
    /// [`crate::format::mbtiles::refusal`]) covering `extent`, named `name`, and opens it.
    /// Errors: a scheme MBTiles cannot hold or a tile format it cannot name (both by name), a
    /// path that exists, SQLite errors; each naming the file.
    pub fn create_mbtiles(
        path: &Path,
        scheme: &TileScheme,
        extent: &Envelope,
        name: &str,
        opts: CacheOptions,
    ) -> Result<Cache> {
        if let Some(why) = crate::format::mbtiles::refusal(scheme) {
            return Err(Error::invalid(format!(
                "{}: {why}; nothing written (a GeoPackage holds any tiling scheme: export to \
                 NAME.gpkg)",
                path.display()
            )));
        }
        let format = crate::format::mbtiles::format_name(&scheme.tile_format)
            .map_err(|e| Error::invalid(format!("{}: {e}; nothing written", path.display())))?;
        let (minzoom, maxzoom) = (
            scheme.lods.iter().map(|l| l.level).min().unwrap_or(0),
            scheme.lods.iter().map(|l| l.level).max().unwrap_or(0),
        );
        let (cx, cy) = crate::format::mbtiles::to_lon_lat(
            (extent.xmin + extent.xmax) / 2.0,
            (extent.ymin + extent.ymax) / 2.0,
        );
        let meta = [
            ("name", name.to_string()),
            ("format", format.to_string()),
            ("bounds", crate::format::mbtiles::bounds(extent)),
            ("center", format!("{cx:.6},{cy:.6},{minzoom}")),
            ("minzoom", minzoom.to_string()),
            ("maxzoom", maxzoom.to_string()),
            ("type", "baselayer".to_string()),
            ("description", format!("{name}, written by bundlefs")),
        ];
        store::mbtiles::create(path, &meta)?;
        Cache::open_mbtiles(path, opts)
    }

    /// Opens a GeoPackage's tile table ([`store::geopackage::describe`]): its tiles through
    /// [`store::sqlite::SqliteTiles`], its tiling scheme from the tile matrix set and matrices
    /// ([`crate::format::geopackage::scheme_of`]; JPEG when the first tile is one, else PNG), its
    /// extent from `gpkg_contents`' bounds. The cache shows a conf.xml made from that scheme.
    /// Errors, naming the file: no such file, not SQLite, no GeoPackage tile table or several, a
    /// tile matrix bundlefs cannot take as an ArcGIS level (by zoom level).
    pub fn open_geopackage(path: &Path, opts: CacheOptions) -> Result<Cache> {
        need_file(path, "GeoPackage file")?;
        let t = store::geopackage::describe(path)?;
        let store = store::geopackage::open(path, &t, opts.durable)?;
        let levels = store.levels()?;
        let format = first_tile_format(&store, &levels);
        let scheme = crate::format::geopackage::scheme_of(
            (t.set.xmin, t.set.ymax),
            &t.matrices,
            &t.srs,
            format,
        )
        .map_err(|e| Error::invalid(format!("{}: table {}: {e}", path.display(), t.table)))?;
        let conf = TileScheme::parse_conf_xml(&scheme.to_conf_xml()).in_file(path)?;
        let cdi = t.contents.as_ref().map(|e| conf::write_cdi(e, &scheme));
        Ok(Cache::one_file(path, conf, cdi, Box::new(store), opts))
    }

    /// Creates a GeoPackage at `path` with one tile table (named after `name`,
    /// [`crate::format::geopackage::table_name`]) for tiles of `scheme` covering `extent`, each
    /// level's tile matrix covering the scheme's own extent too, and opens it. Errors: tiles
    /// GeoPackage cannot hold (by name), a path that exists, SQLite errors; each naming the file.
    pub fn create_geopackage(
        path: &Path,
        scheme: &TileScheme,
        extent: &Envelope,
        name: &str,
        opts: CacheOptions,
    ) -> Result<Cache> {
        if let Some(why) = crate::format::geopackage::refusal(scheme) {
            return Err(Error::invalid(format!(
                "{}: {why}; nothing written",
                path.display()
            )));
        }
        let world = crate::format::extent::scheme_extent(scheme);
        let table = crate::format::geopackage::table_name(name);
        store::geopackage::create(path, &table, scheme, extent, &world)?;
        Cache::open_geopackage(path, opts)
    }

    /// Opens an XYZ (`tms` false) or TMS folder (`z/x/y.ext`) as a cache: its tiles through
    /// [`ExplodedStore`] with that [`FileLayout`], its tiling scheme Web Mercator with the zoom
    /// levels 0 to 23, or to the deepest level held when deeper; the tile format from
    /// `metadata.json`'s `format` (else the first tile's kind), the extent from its `bounds`.
    /// Errors, naming the file: a `metadata.json` that cannot be read or says a `scheme` or
    /// `format` bundlefs does not read.
    pub fn open_xyz(root: &Path, tms: bool, opts: CacheOptions) -> Result<Cache> {
        let meta_path = root.join(crate::format::xyz::METADATA);
        let crate::format::xyz::FolderMetadata { format, bounds, .. } = match fs::read(&meta_path) {
            Ok(b) => crate::format::xyz::read_metadata(&b)
                .map_err(|e| Error::invalid(format!("{}: {e}", meta_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(Error::io(&meta_path, e)),
        };
        let place = Place {
            root: root.to_path_buf(),
            tiles_dir: root.to_path_buf(),
        };
        let layout = if tms {
            FileLayout::Tms
        } else {
            FileLayout::Xyz
        };
        let probe = ExplodedStore::with_layout(place.clone(), layout, ImageKind::Png, false);
        let levels = probe.levels()?;
        let format = match format {
            Some(f) => crate::format::mbtiles::tile_format(&f)
                .map_err(|e| Error::invalid(format!("{}: {e}", meta_path.display())))?,
            None => first_tile_format(&probe, &levels),
        };
        let deepest = levels.last().copied().unwrap_or(0);
        let scheme = TileScheme::web_mercator(deepest.max(23), format.clone());
        let conf = TileScheme::parse_conf_xml(&scheme.to_conf_xml()).in_file(root)?;
        let cdi = bounds.map(|e| conf::write_cdi(&e, &scheme));
        let kind = format.image_kind().unwrap_or(ImageKind::Png);
        Ok(Cache {
            location: url::Location::Folder(root.to_path_buf()),
            place: place.clone(),
            layout: Layout::MapProxy,
            storage: StorageFormat::Exploded,
            conf: Some(conf),
            cdi,
            store: Box::new(ExplodedStore::with_layout(
                place,
                layout,
                kind,
                opts.durable,
            )),
            opts,
            ready_to_serve: None,
        })
    }

    /// Creates an XYZ (`tms` false) or TMS folder at `path` for tiles of `scheme` (Web Mercator
    /// zoom levels only, by name otherwise) covering `extent`, with a `metadata.json` saying its
    /// row order, name, format, bounds and zooms, and opens it. Errors: a scheme the folder cannot
    /// hold or a format it cannot name (by name), a folder that holds files already, I/O errors;
    /// each naming the path.
    pub fn create_xyz(
        path: &Path,
        scheme: &TileScheme,
        extent: &Envelope,
        name: &str,
        opts: CacheOptions,
        tms: bool,
    ) -> Result<Cache> {
        let what = if tms { "a TMS folder" } else { "an XYZ folder" };
        if let Some(why) = crate::format::mbtiles::web_mercator_refusal(scheme, what) {
            return Err(Error::invalid(format!(
                "{}: {why}; nothing written (a GeoPackage holds any tiling scheme: export to \
                 NAME.gpkg)",
                path.display()
            )));
        }
        let format = crate::format::mbtiles::format_name(&scheme.tile_format)
            .map_err(|e| Error::invalid(format!("{}: {e}; nothing written", path.display())))?;
        if fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::invalid(format!(
                "{}: a folder holding files already; export writes a new {}",
                path.display(),
                if tms { "TMS folder" } else { "XYZ folder" }
            )));
        }
        let zooms = (
            scheme.lods.iter().map(|l| l.level).min().unwrap_or(0),
            scheme.lods.iter().map(|l| l.level).max().unwrap_or(0),
        );
        fs::create_dir_all(path).at(path)?;
        let meta = crate::format::xyz::metadata(
            name,
            format,
            &crate::format::mbtiles::bounds(extent),
            zooms,
            tms,
        );
        write_atomic(
            &path.join(crate::format::xyz::METADATA),
            &meta,
            opts.durable,
        )?;
        Cache::open_xyz(path, tms, opts)
    }

    /// Opens a PMTiles v3 file, read only: its tiles through
    /// [`store::pmtiles::PmtilesStore`], its tiling scheme Web Mercator with the zoom levels 0 to
    /// 23 (or to the deepest level held), its tile format from the header's tile type (MIXED when
    /// bundlefs wrote it from a MIXED cache, see doc/formats.md), its extent from the header's
    /// bounds. Errors, naming the file: no such file, not PMTiles v3, a damaged header or root
    /// directory, a tile type bundlefs does not keep.
    pub fn open_pmtiles(path: &Path, opts: CacheOptions) -> Result<Cache> {
        need_file(path, "PMTiles file")?;
        let store = store::pmtiles::PmtilesStore::open(path)?;
        Cache::pmtiles_cache(path, store, opts)
    }

    /// The cache over the PMTiles file (or object) `store` at `path` ([`Cache::open_pmtiles`]).
    fn pmtiles_cache(
        path: &Path,
        store: store::pmtiles::PmtilesStore,
        opts: CacheOptions,
    ) -> Result<Cache> {
        let h = store.header().clone();
        let mut format = crate::format::pmtiles::tile_format(h.tile_type)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        let meta = store.metadata()?;
        if format == conf::TileFormat::Png
            && meta.get(crate::format::pmtiles::TILE_FORMAT_KEY) == Some(&"MIXED".into())
        {
            format = conf::TileFormat::Mixed;
        }
        let deepest = store.levels()?.last().copied().unwrap_or(0);
        let scheme = TileScheme::web_mercator(h.max_zoom.max(deepest).max(23), format);
        let conf = TileScheme::parse_conf_xml(&scheme.to_conf_xml()).in_file(path)?;
        let deg = |v: i32| f64::from(v) / 1e7;
        let (xmin, ymin) =
            crate::format::mbtiles::from_lon_lat(deg(h.bounds_e7[0]), deg(h.bounds_e7[1]));
        let (xmax, ymax) =
            crate::format::mbtiles::from_lon_lat(deg(h.bounds_e7[2]), deg(h.bounds_e7[3]));
        let cdi = (xmin < xmax && ymin < ymax).then(|| {
            conf::write_cdi(
                &Envelope {
                    xmin,
                    ymin,
                    xmax,
                    ymax,
                },
                &scheme,
            )
        });
        Ok(Cache::one_file(path, conf, cdi, Box::new(store), opts))
    }

    /// Starts a new PMTiles file at `path` for tiles of `scheme` (Web Mercator zoom levels,
    /// [`crate::format::pmtiles::refusal`]) covering `extent`, named `name`: a cache whose writes
    /// go to the returned builder, which [`store::pmtiles::Builder::finish`] turns into the file
    /// once the cache is dropped. Errors: a scheme PMTiles cannot hold or a tile format it cannot
    /// type (both by name), a path that exists; each naming the file.
    pub fn create_pmtiles(
        path: &Path,
        scheme: &TileScheme,
        extent: &Envelope,
        name: &str,
        opts: CacheOptions,
    ) -> Result<(Cache, Arc<store::pmtiles::Builder>)> {
        if let Some(why) = crate::format::pmtiles::refusal(scheme) {
            return Err(Error::invalid(format!(
                "{}: {why}; nothing written (GeoPackage can hold other tiling schemes)",
                path.display()
            )));
        }
        let tile_type = crate::format::pmtiles::tile_type(&scheme.tile_format)
            .map_err(|e| Error::invalid(format!("{}: {e}; nothing written", path.display())))?;
        let (w, s) = crate::format::mbtiles::to_lon_lat(extent.xmin, extent.ymin);
        let (e, n) = crate::format::mbtiles::to_lon_lat(extent.xmax, extent.ymax);
        let bounds = [
            w.max(-180.0),
            s.max(-85.051129),
            e.min(180.0),
            n.min(85.051129),
        ];
        let mut metadata = serde_json::Map::new();
        metadata.insert("name".into(), name.into());
        metadata.insert("format".into(), tile_type.name().into());
        metadata.insert("type".into(), "baselayer".into());
        metadata.insert(
            "description".into(),
            format!("{name}, written by bundlefs").into(),
        );
        if scheme.tile_format == conf::TileFormat::Mixed {
            metadata.insert(
                crate::format::pmtiles::TILE_FORMAT_KEY.into(),
                "MIXED".into(),
            );
        }
        let new = store::pmtiles::NewFile {
            tile_type,
            bounds,
            metadata,
        };
        let builder = Arc::new(match url::ObjectUrl::from_path(path)? {
            // Written here first, then uploaded whole.
            Some(u) => store::pmtiles::Builder::create_upload(
                path,
                store::object::store_client(&u)?,
                object_store::path::Path::from(u.prefix.as_str()),
                new,
            )?,
            None => store::pmtiles::Builder::create(path, new, opts.durable)?,
        });
        let conf = TileScheme::parse_conf_xml(&scheme.to_conf_xml()).in_file(path)?;
        let cache = Cache::one_file(
            path,
            conf,
            Some(conf::write_cdi(extent, scheme)),
            Box::new(store::pmtiles::Building(builder.clone())),
            opts,
        );
        Ok((cache, builder))
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
        let env = extent.unwrap_or_else(|| crate::format::extent::scheme_extent(scheme));
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
        if let Some(u) = url::ObjectUrl::from_path(root.as_ref())? {
            let new = store::object::NewCache {
                storage,
                conf_xml,
                cdi,
            };
            return Cache::open_url(&u, opts, Some(new));
        }
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).at(&root)?;
        let (layout, tiles_dir, conf) = match conf_xml {
            Some(xml) => {
                let conf_path = root.join(CONF_XML);
                let conf = TileScheme::parse_conf_xml(xml).in_file(&conf_path)?;
                // conf.xml first: a folder with `_alllayers/` but no conf.xml (a job killed in
                // between) could not be told apart from a cache of unknown scheme on a re-run.
                if let Some(cdi) = cdi {
                    write_atomic(&root.join(CONF_CDI), cdi, opts.durable)?;
                }
                write_atomic(&conf_path, xml, opts.durable)?;
                let tiles_dir = root.join(ALLLAYERS);
                fs::create_dir_all(&tiles_dir).at(&tiles_dir)?;
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
        if let Some(r) = &self.ready_to_serve {
            let levels = self.levels()?;
            let range = levels.first().zip(levels.last()).map(|(a, b)| (*a, *b));
            r.write_content(scheme, range, env, self.opts.durable)?;
        } else if let url::Location::Store(u) = &self.location {
            store::object::put_file(u, CONF_CDI, &bytes)?;
        } else if let (url::Location::File(f), StorageKind::Geopackage) =
            (&self.location, self.kind())
        {
            // GeoPackage keeps it as its tile table's gpkg_contents bounds (map units).
            let t = store::geopackage::describe(f)?;
            store::geopackage::set_bounds(f, &t.table, env)?;
        } else if let url::Location::File(f) = &self.location {
            if url::is_pmtiles(f) {
                return Err(Error::invalid(format!(
                    "{}: a PMTiles file is read-only here; its bounds are not changed",
                    f.display()
                )));
            }
            // MBTiles keeps its extent as `bounds` (degrees) in its metadata.
            store::mbtiles::set_metadata(f, &[("bounds", crate::format::mbtiles::bounds(env))])?;
        } else {
            // Over the file as spelled on disk (`CONF.CDI`), never a second spelling beside it.
            let root = &self.place.root;
            let path = find_entry(root, CONF_CDI)?.unwrap_or_else(|| root.join(CONF_CDI));
            write_atomic(&path, &bytes, self.opts.durable)?;
        }
        self.cdi = Some(bytes);
        Ok(())
    }

    /// The file that holds (or would hold) tile `t`, for messages.
    pub fn tile_file(&self, t: TileAddr) -> PathBuf {
        self.store.location(t)
    }

    /// The ready-to-serve marker (`root.json`) when the cache is such a folder: its scheme and
    /// extent come from `root.json`, and [`Cache::set_extent`] writes there.
    pub fn ready_to_serve(&self) -> Option<&rts::ReadyToServe> {
        self.ready_to_serve.as_ref()
    }

    /// Tunables this cache was opened with.
    pub fn options(&self) -> &CacheOptions {
        &self.opts
    }

    /// The cache folder (holding conf.xml, or the level folders in MapProxy's layout); for a
    /// cache in a store its URL as a path, for messages.
    pub fn root(&self) -> &Path {
        &self.place.root
    }

    /// Where the cache lives: a folder, or a prefix in an object store.
    pub fn location(&self) -> &url::Location {
        &self.location
    }

    /// Whether level `level` is there: its folder on disk (a folder without tiles counts), or in a
    /// store, which has no folders, whether the level holds tiles.
    pub fn level_exists(&self, level: u8) -> bool {
        match &self.location {
            url::Location::Folder(_) => self.level_dir(level).is_dir(),
            url::Location::Store(_) | url::Location::File(_) => {
                self.levels().is_ok_and(|v| v.contains(&level))
            }
        }
    }

    /// The modification time of level `level`'s folder, or with None of the folder holding the
    /// levels; None in a store (no folders) or when there is no such folder.
    pub fn folder_mtime(&self, level: Option<u8>) -> Option<SystemTime> {
        let url::Location::Folder(_) = &self.location else {
            // One file: its time stands for its levels.
            if let url::Location::File(f) = &self.location {
                return fs::metadata(f).and_then(|m| m.modified()).ok();
            }
            return None;
        };
        let dir = match level {
            Some(l) => self.level_dir(l),
            None => self.place.tiles_dir.clone(),
        };
        fs::metadata(dir).and_then(|m| m.modified()).ok()
    }

    /// The modification time of a file beside the levels (`conf.xml`, `conf.cdi`) or of the
    /// cache folder itself (`""`); None in a store or when it is missing.
    pub fn file_mtime(&self, name: &str) -> Option<SystemTime> {
        let url::Location::Folder(root) = &self.location else {
            if let (url::Location::File(f), "") = (&self.location, name) {
                return fs::metadata(f).and_then(|m| m.modified()).ok();
            }
            return None;
        };
        let p = match name {
            "" => root.clone(),
            n => find_entry(root, n).ok().flatten()?,
        };
        fs::metadata(p).and_then(|m| m.modified()).ok()
    }

    /// Makes the place level `level`'s tiles go: its folder on disk (with any missing parents);
    /// nothing in a store, whose keys carry the level. Errors: the folder cannot be made.
    pub fn make_level(&self, level: u8) -> Result<()> {
        match &self.location {
            url::Location::Folder(_) => {
                if matches!(self.kind(), StorageKind::Xyz | StorageKind::Tms) {
                    // Column folders are made with their first tile; an empty zoom folder
                    // would look like a level that holds nothing.
                    return Ok(());
                }
                let dir = self.place.level_dir(level);
                fs::create_dir_all(&dir).at(&dir)
            }
            url::Location::Store(_) | url::Location::File(_) => Ok(()),
        }
    }

    /// Makes every write so far durable: syncfs(2) of the file system holding the folder; for a
    /// one-file cache (MBTiles, GeoPackage) fsync(2) of the file and of its folder (its name, and
    /// SQLite's journal gone), so the sync waits for this file's data only, not for every other
    /// writer's on the file system; nothing in a store (a PUT is durable once answered). Errors:
    /// the sync failed, naming the folder or file.
    pub fn sync_all(&self) -> Result<()> {
        match &self.location {
            url::Location::Folder(root) => files::syncfs(root),
            url::Location::File(f) => {
                fs::File::open(f).and_then(|h| h.sync_all()).at(f)?;
                // A bare name (`out.mbtiles`) is in the working folder: sync_dir takes "" as ".".
                files::sync_dir(f.parent().unwrap_or(Path::new("")))
            }
            url::Location::Store(_) => Ok(()),
        }
    }

    /// Which implementation keeps the tiles ([`StorageKind`]).
    pub fn kind(&self) -> StorageKind {
        self.store.kind()
    }

    /// The storage as messages name it: Esri's StorageFormat name (`compact-v2`, …) where the
    /// kind is one, else the kind's name (`mbtiles`).
    pub fn storage_name(&self) -> String {
        match self.kind().esri_format() {
            Some(_) => self.storage.to_string(),
            None => self.kind().name().to_string(),
        }
    }

    /// Why `bundlefs compact` cannot rewrite this cache's bundles, if it cannot: exploded caches
    /// have none, V1 pairs cannot be replaced atomically (and are read-only in a store).
    pub fn compact_refusal(&self) -> Option<String> {
        match self.kind() {
            StorageKind::CompactV2 | StorageKind::StoreCompactV2 => None,
            StorageKind::StoreCompactV1 => Some(store::object::v1::READ_ONLY.to_string()),
            StorageKind::CompactV1 => Some(
                "compact rewrites Compact V2 bundles only: a V1 .bundle/.bundlx pair cannot be \
                 replaced atomically for readers that don't lock (export to compact-v2, or to a \
                 new V1 cache)"
                    .to_string(),
            ),
            StorageKind::Exploded
            | StorageKind::StoreExploded
            | StorageKind::Xyz
            | StorageKind::Tms => Some("an exploded cache has no bundles to compact".to_string()),
            StorageKind::Mbtiles | StorageKind::Geopackage => Some(format!(
                "an {} file has no bundles to compact (SQLite's VACUUM reclaims its free pages)",
                if self.kind() == StorageKind::Mbtiles {
                    "MBTiles"
                } else {
                    "GeoPackage"
                }
            )),
            StorageKind::Pmtiles => Some(
                "a PMTiles file is written once, whole: it has no bundles to compact".to_string(),
            ),
        }
    }

    /// How deleting tiles frees their space here ([`Reclaim`]).
    pub fn deleted_space(&self) -> Reclaim {
        match self.kind() {
            StorageKind::Exploded | StorageKind::Xyz | StorageKind::Tms => Reclaim::Files,
            StorageKind::StoreExploded => Reclaim::Objects,
            StorageKind::StoreCompactV2 => Reclaim::Rewritten,
            StorageKind::CompactV2 => Reclaim::DeadSpace,
            StorageKind::CompactV1 | StorageKind::StoreCompactV1 => Reclaim::DeadSpaceV1,
            StorageKind::Mbtiles | StorageKind::Geopackage | StorageKind::Pmtiles => {
                Reclaim::Records
            }
        }
    }

    /// The folder holding the level folders (`_alllayers`, or the root).
    pub fn tiles_dir(&self) -> &Path {
        &self.place.tiles_dir
    }
    /// Where the level folders live.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The storage format of the tiles (detected from the files; conf.xml's when there are none).
    pub fn storage(&self) -> StorageFormat {
        self.storage
    }
    /// The storage of the tiles, for operations beyond this facade.
    pub fn store(&self) -> &dyn Storage {
        self.store.as_ref()
    }
    /// The parsed conf.xml, if the cache has one.
    pub fn conf(&self) -> Option<&ConfXml> {
        self.conf.as_ref()
    }
    /// The tiling scheme, if the cache has a conf.xml.
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
        default_kind(self.scheme())
    }

    /// The image kind of a tile: sniffed, else the cache's format.
    pub fn kind_of(&self, bytes: &[u8]) -> ImageKind {
        sniff(bytes).unwrap_or_else(|| self.default_kind())
    }

    /// Refuses a path that resolves, through symbolic links, outside the cache folder
    /// ([`Place::check_inside`]).
    pub fn check_inside(&self, p: &Path) -> Result<()> {
        self.place.check_inside(p)
    }

    /// The folder of level `level`: `tiles_dir/Lnn`, or in an XYZ or TMS folder `root/z`.
    pub fn level_dir(&self, level: u8) -> PathBuf {
        if matches!(self.kind(), StorageKind::Xyz | StorageKind::Tms) {
            return self.place.tiles_dir.join(level.to_string());
        }
        self.place.level_dir(level)
    }

    /// Path of a bundle's `.bundle` file.
    pub fn bundle_path(&self, id: &BundleId) -> PathBuf {
        self.place.bundle_path(id)
    }

    /// Path of a bundle's lock file (as MapProxy names it).
    pub fn lock_path(&self, id: &BundleId) -> PathBuf {
        self.place.lock_path(id)
    }

    /// Whether a lookup of level `level`'s folder, or of a row folder in it, is answered "present"
    /// without listing the storage: true for a level of conf.xml's LODs in a storage whose
    /// listings are remote round trips ([`Storage::lookups_list`] false: an object store). The
    /// folder's contents (readdir) are still listed; a tile under it is looked up by itself.
    pub fn unlisted_lookup(&self, level: u8) -> bool {
        !self.store.lookups_list()
            && self
                .scheme()
                .is_some_and(|s| s.lods.iter().any(|l| l.level == level))
    }

    /// Levels that have a folder, ascending.
    pub fn levels(&self) -> Result<Vec<u8>> {
        self.store.levels()
    }

    /// Bundles of a level (compact storage; empty for exploded), from file names only; the
    /// listing is kept until the level folder changes.
    pub fn bundles(&self, level: u8) -> Result<Vec<BundleId>> {
        self.store.bundles(level)
    }

    /// The open bundle `id`, reopened if another writer changed it; None if it doesn't exist (or
    /// the storage is exploded).
    pub fn bundle(&self, id: BundleId) -> Result<Option<Arc<BundleHandle>>> {
        self.store.bundle(id)
    }

    /// Forgets an open bundle so the next access opens the file anew.
    pub fn invalidate(&self, id: &BundleId) {
        self.store.invalidate(id)
    }

    /// Rewrites bundle `id` without its dead space when that is at least `min_dead` (0.0–1.0) of
    /// its size ([`Storage::compact_bundle`]: local bundles under their lock by an atomic rename,
    /// bundles in an object store by a conditional PUT).
    pub fn compact_bundle(&self, id: BundleId, min_dead: f64) -> Result<Compacted> {
        self.store.compact_bundle(id, min_dead)
    }

    /// The tile's bytes, or None if the cache lacks it. A broken entry is an error naming file and entry.
    pub fn tile(&self, t: TileAddr) -> Result<Option<TileBytes>> {
        self.store.tile(t)
    }

    /// Rows of a level that hold at least one tile.
    pub fn rows(&self, level: u8) -> Result<BTreeSet<u32>> {
        self.store.rows(level)
    }

    /// Tiles of one row: (col, size in bytes), ascending by col.
    pub fn cols(&self, level: u8, row: u32) -> Result<Vec<(u32, u64)>> {
        self.store.cols(level, row)
    }

    /// Tiles of one column: (row, size in bytes), ascending by row (from the indexes of the
    /// column's bundles only).
    pub fn col_tiles(&self, level: u8, col: u32) -> Result<Vec<(u32, u64)>> {
        self.store.col_tiles(level, col)
    }

    /// Groups of tiles of a level, one per bundle (for exploded storage, the bundle they would form).
    pub fn groups(&self, level: u8) -> Result<Vec<TileGroup>> {
        self.store.groups(level)
    }

    /// Reads every tile of a group (in slot order for bundles). Any broken entry is an error.
    pub fn read_group(&self, g: &TileGroup) -> Result<Vec<(TileAddr, TileBytes)>> {
        self.store.read_group(g)
    }

    /// Stats of one level.
    pub fn level_stats(&self, level: u8) -> Result<LevelStats> {
        self.store.level_stats(level)
    }

    /// Writes tiles (the last of duplicates wins), grouped per bundle: one lock, one append, one index
    /// update each. New bundles are written whole, atomically.
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
        for (id, group) in store::compact::by_bundle(tiles) {
            let st = self.store.write_group(id, &group)?;
            total.tiles += st.tiles;
            total.bytes_written += st.bytes_written;
        }
        let levels = tiles.iter().map(|t| t.0.level);
        if let (Some(lo), Some(hi)) = (levels.clone().min(), levels.max()) {
            self.took_levels(lo, hi)?;
        }
        Ok(total)
    }

    /// Read-modify-write of one bundle ([`Storage::update_group`]): `f` sees the bundle as stored
    /// and returns the tiles to write; no other writer changes the bundle in between.
    pub fn update_group(&self, id: BundleId, f: &mut UpdateFn) -> Result<WriteStats> {
        let st = self.store.update_group(id, f)?;
        if st.tiles > 0 {
            self.took_levels(id.level, id.level)?;
        }
        Ok(st)
    }

    /// Tiles of levels `lo..=hi` were written: a ready-to-serve folder's `root.json` widens its
    /// level range to take them ([`rts::ReadyToServe::take_levels`]).
    fn took_levels(&self, lo: u8, hi: u8) -> Result<()> {
        match (&self.ready_to_serve, self.scheme()) {
            (Some(r), Some(s)) => r.take_levels(s, lo, hi, self.opts.durable),
            _ => Ok(()),
        }
    }

    /// The modification time to show for a tile: its own (time sidecar, or the file's in an
    /// exploded cache) when recorded, else its bundle's.
    pub fn tile_mtime(&self, t: TileAddr, bytes: &TileBytes) -> Option<SystemTime> {
        self.store.tile_mtime(t, bytes)
    }

    /// Whether tile `t`'s attributes (and, with `bytes`, its bytes) are at hand without a request
    /// to an object store ([`Storage::at_hand`]).
    pub fn at_hand(&self, t: TileAddr, bytes: bool) -> bool {
        self.store.at_hand(t, bytes)
    }

    /// Size and time of stored tile `t` ([`Storage::tile_stat`]); None if the cache lacks it.
    pub fn tile_stat(&self, t: TileAddr) -> Result<Option<TileStat>> {
        self.store.tile_stat(t)
    }

    /// Whether [`Cache::tile_stat`] answers without reading the tile, and the image kind (so
    /// the name's extension) a tile has without sniffing its bytes: Some for a store that keeps
    /// tiles behind requests (an object store) with a conf.xml fixing one format (PNG*, JPEG);
    /// None otherwise (local storage, MIXED, no conf.xml: read the tile and sniff it).
    pub fn kind_without_reading(&self) -> Option<ImageKind> {
        if !self.store.stats_without_reading() {
            return None;
        }
        self.scheme().and_then(|s| s.tile_format.image_kind())
    }

    /// Records a stored tile's modification time (as `touch`/rsync set it). False if the tile is
    /// not stored.
    pub fn set_tile_time(&self, t: TileAddr, mtime: SystemTime) -> Result<bool> {
        self.store.set_tile_time(t, mtime)
    }

    /// Whether `stamp` is what this process left the bundle as at its last write (no other writer
    /// changed it since).
    pub fn written_by_us(&self, id: &BundleId, stamp: &FileStamp) -> bool {
        self.store.written_by_us(id, stamp)
    }

    /// Removes tiles (their bytes become dead space in compact bundles).
    pub fn delete_tiles(&self, tiles: &[TileAddr]) -> Result<()> {
        let mut groups: std::collections::BTreeMap<BundleId, Vec<Slot>> = Default::default();
        for t in tiles {
            groups.entry(t.bundle()).or_default().push(t.slot());
        }
        for (id, slots) in groups {
            self.store.delete_group(id, &slots)?;
        }
        Ok(())
    }
}

impl url::Location {
    /// True when the location already holds a cache (conf.xml, `_alllayers/`, level folders,
    /// or a ready-to-serve `root.json`; in a store, the keys of one). Names in any case, as
    /// ArcGIS on Windows writes them (`Conf.xml`, `_AllLayers`). Errors: the folder or store
    /// cannot be listed (naming it).
    pub fn holds_cache(&self) -> Result<bool> {
        match self {
            url::Location::Store(u) => store::object::holds_cache(u),
            url::Location::File(f) => Ok(f.is_file()),
            // Not a folder (missing, or a file): nothing to hold a cache.
            url::Location::Folder(dir) if !dir.is_dir() => Ok(false),
            url::Location::Folder(dir) => Ok(find_entry(dir, CONF_XML)?.is_some()
                || find_entry(dir, ALLLAYERS)?.is_some()
                || find_entry(dir, crate::format::tpkx::ROOT_JSON)?.is_some()
                || read_dir_names(dir)?
                    .iter()
                    .any(|n| crate::format::exploded::parse_level_dir(n).is_ok())
                // An XYZ or TMS folder (z/x/y.ext).
                || xyz_folder(dir)?.is_some()),
        }
    }
}

/// How `delete` frees the space of the tiles it removes, by storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// Tile files are removed (and row folders left empty with them).
    Files,
    /// Tile objects are deleted (a row prefix goes with its last object).
    Objects,
    /// Index entries cleared: the bytes stay as dead space until `bundlefs compact`.
    DeadSpace,
    /// Compact V1 `.bundlx` entries cleared: the bytes stay as dead space (V1 is not compacted;
    /// export to a new cache to reclaim it).
    DeadSpaceV1,
    /// Bundles rewritten without the tiles (a store has no in-place writes): no dead space.
    Rewritten,
    /// Rows of an SQLite file deleted: their pages are free for the file's next tiles (`VACUUM`
    /// gives them back to the disk).
    Records,
}

/// The image kind to assume for tiles whose bytes don't tell: the scheme's format, else PNG.
/// Refuses a one-file cache `path` that is no file: "no such `what`" (`MBTiles file`, …), naming
/// it.
fn need_file(path: &Path, what: &str) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    Err(Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("no such {what}")),
    ))
}

/// Whether the folder `root` (without conf.xml) is an XYZ or TMS folder, and which: Some(true)
/// for TMS (`metadata.json` says `"scheme": "tms"`, or a gdal2tiles `tilemapresource.xml` is
/// there), Some(false) for XYZ (`metadata.json` says `"scheme": "xyz"`, or has no scheme, or there
/// is none but a level folder `0`-`30` holding a column folder). None for anything else. Errors: a
/// `metadata.json` that cannot be read or parsed, naming it.
fn xyz_folder(root: &Path) -> Result<Option<bool>> {
    let meta = root.join(crate::format::xyz::METADATA);
    match fs::read(&meta) {
        Ok(b) => {
            let m = crate::format::xyz::read_metadata(&b)
                .map_err(|e| Error::invalid(format!("{}: {e}", meta.display())))?;
            return Ok(Some(m.tms.unwrap_or(false)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&meta, e)),
    }
    if root.join(crate::format::xyz::TMS_RESOURCE).is_file() {
        return Ok(Some(true));
    }
    let has_levels = store::read_dir_names(root)?.iter().any(|n| {
        crate::format::xyz::parse_number(n).is_some_and(|z| z <= 30)
            && store::read_dir_names(&root.join(n)).is_ok_and(|xs| {
                xs.iter()
                    .any(|x| crate::format::xyz::parse_number(x).is_some())
            })
    });
    Ok(has_levels.then_some(false))
}

/// The tile format of a file that does not say it: JPEG when its first tile (of the first level
/// in `levels`) is one, else PNG.
fn first_tile_format(store: &dyn Storage, levels: &[u8]) -> conf::TileFormat {
    let first = levels
        .first()
        .and_then(|&l| store.bundles(l).ok()?.first().copied())
        .and_then(|id| store.read_group(&TileGroup::bundle(id)).ok())
        .and_then(|v| v.into_iter().next())
        .and_then(|(_, b)| sniff(&b));
    match first {
        Some(ImageKind::Jpeg) => conf::TileFormat::Jpeg,
        _ => conf::TileFormat::Png,
    }
}

fn default_kind(scheme: Option<&TileScheme>) -> ImageKind {
    scheme
        .and_then(|s| s.tile_format.image_kind())
        .unwrap_or(ImageKind::Png)
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
