//! Tile packages on disk: open a `.tpkx` (or an ArcGIS `.tpk`) as a source cache by unpacking it to
//! a temporary folder, and write a `.tpkx` from a Compact V2 cache built in a temporary folder
//! beside it, renamed into place when complete.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::engine::{
    dest_options, extent_after, holds_cache, into_cache, run, JobOptions, JobSummary, Progress,
};
use crate::cache::{Cache, ALLLAYERS, CONF_CDI, CONF_XML};
use crate::error::{Error, FormatContext, IoContext, Result};
use crate::format::conf::{self, Envelope, StorageFormat, TileScheme};
use crate::format::{exploded, pixels, tpkx, TileAddr};

/// A cache unpacked from a package; the folder goes when this is dropped.
pub struct Unpacked {
    pub cache: Cache,
    _dir: tempfile::TempDir,
}

impl Unpacked {
    /// The cache and the temporary folder it lives in, to be kept as long as the cache is read.
    pub fn into_parts(self) -> (Cache, tempfile::TempDir) {
        (self.cache, self._dir)
    }
}

/// True for a file that starts like a zip archive.
pub fn is_package(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && magic == *b"PK\x03\x04"
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> Error {
    Error::invalid(format!(
        "{}: not a readable tile package: {e}",
        path.display()
    ))
}

/// Unpacks a package into `into`: a `.tpkx` becomes an ArcGIS-layout Compact V2 cache (conf.xml and
/// conf.cdi made from root.json); a `.tpk` is extracted as it is (its cache is in `v101/Layers`).
pub fn unpack(path: &Path, into: &Path) -> Result<()> {
    let f = fs::File::open(path).at(path)?;
    let mut z = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| zip_err(path, e))?;
    // root.json in any case, as a package zipped on Windows may spell it; a vector tile package
    // (`.vtpk`) keeps it, and its tiles, under `p12/`.
    let top = exploded::find_name(z.file_names(), tpkx::ROOT_JSON).in_file(path)?;
    let vtpk = exploded::find_name(z.file_names(), VTPK_ROOT_JSON).in_file(path)?;
    let (root_name, base) = match (top, vtpk) {
        (Some(n), _) => (n.to_string(), ""),
        (None, Some(n)) => (n.to_string(), VTPK_DIR),
        (None, None) => (tpkx::ROOT_JSON.to_string(), ""),
    };
    let root = match z.by_name(&root_name) {
        Ok(mut e) => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).at(path)?;
            Some(b)
        }
        Err(zip::result::ZipError::FileNotFound) => None,
        Err(e) => return Err(zip_err(path, e)),
    };
    fs::create_dir_all(into).at(into)?;
    let Some(root) = root else {
        z.extract(into).map_err(|e| zip_err(path, e))?;
        return Ok(());
    };
    let info = tpkx::parse_root_json(&root).in_file(path.join(&root_name))?;
    if !base.is_empty() && info.scheme.tile_format.image_kind().is_none() {
        return Err(Error::invalid(format!(
            "{}: a vector tile package whose tiles are {:?}, not vector tiles (pbf); bundlefs \
             reads vector tile packages of pbf tiles",
            path.display(),
            info.scheme.tile_format.name()
        )));
    }
    let prefix = format!("{base}{}/", info.tile_dir);
    let tiles = into.join(ALLLAYERS);
    fs::create_dir_all(&tiles).at(&tiles)?;
    for i in 0..z.len() {
        let mut e = z.by_index(i).map_err(|e| zip_err(path, e))?;
        let Some(name) = e.enclosed_name() else {
            continue;
        };
        let name = name.to_string_lossy().replace('\\', "/");
        // The tile folder in any case (`tile/`, `Tile/`), as the names inside it.
        let Some(rel) = (name.len() > prefix.len()
            && name.is_char_boundary(prefix.len())
            && name[..prefix.len()].eq_ignore_ascii_case(&prefix))
        .then(|| &name[prefix.len()..]) else {
            continue;
        };
        // Only Lnn/RrrrrCcccc.bundle entries: nothing else is written outside the folder.
        let mut parts = rel.split('/');
        let (Some(level), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if e.is_dir()
            || exploded::parse_level_dir(level).is_err()
            || exploded::parse_bundle_file(file).is_err()
        {
            continue;
        }
        let dir = tiles.join(level);
        fs::create_dir_all(&dir).at(&dir)?;
        let out = dir.join(file);
        let mut w = fs::File::create(&out).at(&out)?;
        std::io::copy(&mut e, &mut w).at(&out)?;
    }
    let scheme = &info.scheme;
    fs::write(into.join(CONF_XML), scheme.to_conf_xml()).at(into.join(CONF_XML))?;
    let env = info
        .extent
        .unwrap_or_else(|| crate::format::extent::scheme_extent(scheme));
    fs::write(into.join(CONF_CDI), conf::write_cdi(&env, scheme)).at(into.join(CONF_CDI))?;
    Ok(())
}

/// Where a vector tile package (`.vtpk`) keeps its service `root.json` and tile folder: `p12/`
/// (Esri's VTPK layout, as QGIS's `QgsVtpkTiles` and ArcGIS read it: `p12/root.json`,
/// `p12/tile/Lnn/RrrrrCcccc.bundle`, Compact V2).
const VTPK_DIR: &str = "p12/";
const VTPK_ROOT_JSON: &str = "p12/root.json";

/// Folders packages were unpacked to, with the package each came from ([`shown`]).
static UNPACKED: std::sync::Mutex<Vec<(PathBuf, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Opens a package as a source cache (unpacked to a temporary folder; messages that name the
/// folder are shown naming the package, [`shown`]).
pub fn open_package(path: &Path) -> Result<Unpacked> {
    let dir = tempfile::Builder::new()
        .prefix("bundlefs-package-")
        .tempdir()
        .at(std::env::temp_dir())?;
    UNPACKED
        .lock()
        .unwrap()
        .push((dir.path().to_path_buf(), path.to_path_buf()));
    unpack(path, dir.path())?;
    let cache = Cache::open(dir.path())?;
    Ok(Unpacked { cache, _dir: dir })
}

/// `text` (a message) with each temporary folder a package was unpacked to replaced by the
/// package's path, so users read `Usa.tpkx/_alllayers/L00/R0000C0000.bundle`, never
/// `/tmp/bundlefs-package-XXXX/…`.
pub fn shown(text: &str) -> String {
    let mut out = text.to_string();
    for (dir, pkg) in UNPACKED.lock().unwrap().iter() {
        out = out.replace(&dir.display().to_string(), &pkg.display().to_string());
    }
    out
}

/// The kinds of tile package bundlefs writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    /// `.tpkx`: Esri's open tile-package spec, Compact V2 bundles under `tile/`, `root.json`.
    Tpkx,
    /// `.tpk`: ArcGIS's older package, Compact V1 bundles (+ `.bundlx`) under
    /// `v101/Layers/_alllayers/`, conf.xml, `esriinfo/` (see [`crate::format::tpk`]).
    Tpk,
}

impl PackageKind {
    /// The storage of the bundles this kind holds.
    pub fn storage(self) -> StorageFormat {
        match self {
            PackageKind::Tpkx => StorageFormat::CompactV2,
            PackageKind::Tpk => StorageFormat::CompactV1,
        }
    }

    /// The file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            PackageKind::Tpkx => "tpkx",
            PackageKind::Tpk => "tpk",
        }
    }

    /// The kind a file name's extension says (`.tpk`, `.tpkx`, any case), if any.
    pub fn of_name(path: &Path) -> Option<PackageKind> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("tpkx") {
            Some(PackageKind::Tpkx)
        } else if ext.eq_ignore_ascii_case("tpk") {
            Some(PackageKind::Tpk)
        } else {
            None
        }
    }

    /// The kind of an existing package, by what it holds: a `root.json` makes a `.tpkx`, anything
    /// else (a `v101/` cache) a `.tpk`. Errors: a file that is not a readable zip, naming it.
    pub fn of_file(path: &Path) -> Result<PackageKind> {
        let f = fs::File::open(path).at(path)?;
        let z = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| zip_err(path, e))?;
        if exploded::find_name(z.file_names(), VTPK_ROOT_JSON)
            .in_file(path)?
            .is_some()
        {
            return Err(Error::invalid(format!(
                "{}: a vector tile package (.vtpk); bundlefs reads vector tile packages (info, \
                 verify, export, and mount of an export) but does not write them: export its \
                 tiles to a folder instead",
                path.display()
            )));
        }
        let has_root = exploded::find_name(z.file_names(), tpkx::ROOT_JSON)
            .in_file(path)?
            .is_some();
        Ok(if has_root {
            PackageKind::Tpkx
        } else {
            PackageKind::Tpk
        })
    }
}

/// Writes (or rewrites, `must_exist` for import) the package at `dest` with the selected tiles of
/// `src`: an existing package keeps its kind, a new one is a `.tpkx`. See [`update_package_as`].
pub fn update_package(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
    must_exist: bool,
) -> Result<JobSummary> {
    update_package_as(src, dest, None, opts, progress, must_exist)
}

/// Writes (or rewrites, `must_exist` for import) the package at `dest` with the selected tiles of
/// `src`; `kind` says which package to write (None: an existing package's kind, else `.tpkx`). The
/// package is built in a temporary folder beside DEST and renamed over it when complete, so DEST
/// is never half written.
///
/// Errors: a source without conf.xml (a package needs a tiling scheme), DEST a folder, DEST missing
/// when `must_exist`, an existing DEST of the other kind (naming both), and the job's own errors.
pub fn update_package_as(
    src: &Cache,
    dest: &Path,
    kind: Option<PackageKind>,
    opts: &JobOptions,
    progress: &dyn Progress,
    must_exist: bool,
) -> Result<JobSummary> {
    let Some(src_conf) = src.conf() else {
        return Err(Error::invalid(format!(
            "{}: has no conf.xml; a tile package needs a tiling scheme",
            src.root().display()
        )));
    };
    refuse_vector_tiles(src, "a tile package")?;
    let exists = dest.is_file();
    let kind = match (kind, exists) {
        (k, true) => {
            let found = PackageKind::of_file(dest)?;
            if k.is_some_and(|k| k != found) {
                return Err(Error::invalid(format!(
                    "{}: is a .{} package; cannot write a .{} into it (choose another file); \
                     nothing was written",
                    dest.display(),
                    found.extension(),
                    k.map_or("", PackageKind::extension)
                )));
            }
            found
        }
        (k, false) => k.unwrap_or(PackageKind::Tpkx),
    };
    if dest.is_dir() {
        return Err(Error::invalid(format!(
            "{}: is a folder; a tile package is a file (e.g. {}.{})",
            dest.display(),
            dest.display(),
            kind.extension()
        )));
    }
    if must_exist && !exists {
        return Err(Error::invalid(format!(
            "{}: no such tile package",
            dest.display()
        )));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).at(&parent)?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".bundlefs-{}-", kind.extension()))
        .tempdir_in(&parent)
        .at(&parent)?;
    let cache_dir = work.path().join("cache");
    // Messages about the package being rewritten name it, not the work folder.
    UNPACKED
        .lock()
        .unwrap()
        .push((cache_dir.clone(), dest.to_path_buf()));
    let storage = kind.storage();
    let (summary, cache) = if exists {
        unpack(dest, &cache_dir)?;
        let mut d = Cache::open_with(&cache_dir, dest_options(storage, false))?;
        let s = into_cache(src, &mut d, opts, progress)?;
        (s, d)
    } else {
        let conf_xml = src_conf.with_storage(storage);
        let scheme = &src_conf.scheme;
        let env = extent_after(src, None, opts)
            .unwrap_or_else(|| crate::format::extent::scheme_extent(scheme));
        let cdi = conf::write_cdi(&env, scheme);
        let d = Cache::create_empty(
            &cache_dir,
            storage,
            Some(&conf_xml),
            Some(&cdi),
            dest_options(storage, false),
        )?;
        let s = run(
            src,
            &d,
            true,
            &JobOptions {
                sync: false,
                ..opts.clone()
            },
            progress,
        )?;
        (s, d)
    };
    match kind {
        PackageKind::Tpkx => write_tpkx(&cache, dest, opts.sync)?,
        PackageKind::Tpk => write_tpk(&cache, dest, opts.sync)?,
    }
    Ok(summary)
}

/// Tile packages and ready-to-serve folders hold raster tiles; vector tiles go to a `.vtpk`, which
/// bundlefs does not write: refused by name (`what` is the target), nothing written.
fn refuse_vector_tiles(src: &Cache, what: &str) -> Result<()> {
    if src.default_kind() == crate::format::sniff::ImageKind::Pbf {
        return Err(Error::invalid(format!(
            "{}: holds vector tiles (pbf); {what} holds raster tiles, and a vector tile package \
             (.vtpk) is not written by bundlefs: export to a folder (compact-v2, compact-v1, \
             exploded) instead; nothing was written",
            src.root().display()
        )));
    }
    Ok(())
}

/// What a package or ready-to-serve folder says about the cache it holds, worked out once.
struct Contents {
    /// The scheme, storage set to the cache's.
    scheme: TileScheme,
    /// First and last of `levels` (the scheme's first level when there are none).
    range: (u8, u8),
    /// The extent holding every tile ([`holding_tiles`]).
    extent: Envelope,
    /// Every bundle: its `Lnn/RrrrrCcccc.bundle` name and path.
    bundles: Vec<(String, PathBuf)>,
    thumbnail: Option<Vec<u8>>,
    /// Milliseconds since 1970.
    created: u64,
}

fn contents(cache: &Cache) -> Result<Contents> {
    let scheme = cache
        .scheme()
        .ok_or_else(|| Error::invalid(format!("{}: has no conf.xml", cache.root().display())))?;
    let scheme = package_scheme(scheme, cache.storage());
    let mut bundles = Vec::new();
    let mut levels = Vec::new();
    for l in cache.levels()? {
        let ids = cache.bundles(l)?;
        if ids.is_empty() {
            continue;
        }
        levels.push(l);
        for id in ids {
            bundles.push((
                format!(
                    "{}/{}.bundle",
                    exploded::level_dir(l),
                    exploded::bundle_base(&id)
                ),
                cache.bundle_path(&id),
            ));
        }
    }
    let range = match (levels.first(), levels.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => {
            let l = scheme.lods.first().map_or(0, |l| l.level);
            (l, l)
        }
    };
    let base = cache
        .extent()
        .unwrap_or_else(|| crate::format::extent::scheme_extent(&scheme));
    let extent = holding_tiles(cache, &scheme, &levels, base)?;
    let thumbnail = thumbnail(cache, &scheme, &levels, &extent);
    let created = now_ms();
    Ok(Contents {
        scheme,
        range,
        extent,
        bundles,
        thumbnail,
        created,
    })
}

/// A package's name: the file's (or folder's) name without extension.
/// `scheme` as a package or ready-to-serve folder stores it: `storage`, 128×128-tile bundles.
fn package_scheme(scheme: &TileScheme, storage: StorageFormat) -> TileScheme {
    let mut s = scheme.clone();
    s.storage = storage;
    s.packet_size = tpkx::PACKET_SIZE;
    s
}

/// First and last level of `scheme`'s LODs (0, 0 with none).
fn lod_range(scheme: &TileScheme) -> (u8, u8) {
    (
        scheme.lods.first().map_or(0, |l| l.level),
        scheme.lods.last().map_or(0, |l| l.level),
    )
}

/// Milliseconds since 1970 (package creation times), 0 for a clock before 1970.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn package_name(dest: &Path) -> String {
    dest.file_stem()
        .map_or_else(|| "tiles".to_string(), |s| s.to_string_lossy().into_owned())
}

type Entry = (String, u64, Box<dyn std::io::Read>);

fn bytes_entry(name: impl Into<String>, b: Vec<u8>) -> Entry {
    (
        name.into(),
        b.len() as u64,
        Box::new(std::io::Cursor::new(b)),
    )
}

fn file_entry(name: String, path: &Path) -> Result<Entry> {
    let f = fs::File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    Ok((name, len, Box::new(f)))
}

/// Names (last path component, lower case) of the entries a package rewrite makes anew, wherever
/// the package kept them; tiles (`.bundle`, `.bundlx`) are made anew too.
const REMADE: [&str; 9] = [
    "conf.xml",
    "conf.cdi",
    "conf.properties",
    "root.json",
    "iteminfo.json",
    "iteminfo.xml",
    "item.pkinfo",
    "thumbnail.png",
    "mapserver.json",
];

/// The entries of the package at `dest` (when there is one) that a rewrite does not make: ArcGIS's
/// layer files (`v101/Layers.lyr`, `v103/Layers.lyr`) and anything else bundlefs does not write,
/// kept byte for byte (stored, in memory: such entries are small). Errors: the package cannot be
/// read (naming it).
fn kept_entries(dest: &Path, made: &[Entry]) -> Result<Vec<Entry>> {
    use std::io::Read;
    if !dest.is_file() {
        return Ok(Vec::new());
    }
    let f = fs::File::open(dest).at(dest)?;
    let mut z = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| zip_err(dest, e))?;
    let made: std::collections::HashSet<String> =
        made.iter().map(|e| e.0.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    for i in 0..z.len() {
        let mut e = z.by_index(i).map_err(|e| zip_err(dest, e))?;
        let name = e.name().to_string();
        let lower = name.to_ascii_lowercase();
        let last = lower.rsplit('/').next().unwrap_or(&lower);
        if e.is_dir()
            || made.contains(&lower)
            || REMADE.contains(&last)
            || last.ends_with(".bundle")
            || last.ends_with(".bundlx")
        {
            continue;
        }
        let mut b = Vec::new();
        e.read_to_end(&mut b).at(dest)?;
        out.push(bytes_entry(name, b));
    }
    Ok(out)
}

/// Writes `entries` as a stored zip at `dest` (temporary file beside it, then rename), with the
/// entries of a package already there that bundlefs does not make ([`kept_entries`]).
fn write_zip(dest: &Path, mut entries: Vec<Entry>, sync: bool) -> Result<()> {
    let kept = kept_entries(dest, &entries)?;
    entries.extend(kept);
    // A package is a document to hand around: mode as `cp` gives, or the replaced package's.
    let mut tmp = crate::cache::AtomicFile::create(dest, sync)?;
    let tmp_path = tmp.temp_path().to_path_buf();
    let out = BufWriter::with_capacity(1 << 20, tmp.file());
    tpkx::write_package(out, entries).at(&tmp_path)?;
    tmp.commit()
}

/// Packs a Compact V2 ArcGIS-layout cache into a `.tpkx` at `dest` (temporary file beside it,
/// then rename).
pub fn write_tpkx(cache: &Cache, dest: &Path, sync: bool) -> Result<()> {
    let mut c = contents(cache)?;
    c.scheme.storage = StorageFormat::CompactV2;
    let name = package_name(dest);
    let root = tpkx::root_json(&name, &c.scheme, c.range, &c.extent);
    let item = tpkx::iteminfo_json(
        &name,
        &guid(c.created),
        c.created,
        &c.scheme,
        &c.extent,
        c.thumbnail.is_some(),
    );
    let mut files = vec![
        bytes_entry(tpkx::ROOT_JSON, root),
        bytes_entry(tpkx::ITEMINFO_JSON, item),
    ];
    if let Some(png) = c.thumbnail.take() {
        files.push(bytes_entry(tpkx::THUMBNAIL_PNG, png));
    }
    for (name, path) in &c.bundles {
        files.push(file_entry(format!("{}/{name}", tpkx::TILE_DIR), path)?);
    }
    write_zip(dest, files, sync)
}

/// Packs an ArcGIS-layout cache (Compact V1 for ArcGIS's readers) into a `.tpk` at `dest`, laid
/// out as ArcGIS writes one ([`crate::format::tpk`]): `esriinfo/` (item.pkinfo, iteminfo.xml,
/// thumbnail), `servicedescriptions/mapserver/mapserver.json`, then `v101/Layers/` with conf.cdi,
/// conf.properties, conf.xml and `_alllayers/` (each `.bundle` followed by its `.bundlx`). Every
/// entry stored, not compressed.
pub fn write_tpk(cache: &Cache, dest: &Path, sync: bool) -> Result<()> {
    use crate::format::tpk;
    let mut c = contents(cache)?;
    let name = package_name(dest);
    let id = guid(c.created);
    let geo = tpkx::wgs84_extent(&c.scheme, &c.extent);
    let conf_xml = match cache.conf() {
        Some(x) => x.with_storage(cache.storage()),
        None => c.scheme.to_conf_xml(),
    };
    let cdi = match cache.cdi() {
        Some(b) => b.to_vec(),
        None => conf::write_cdi(&c.extent, &c.scheme),
    };
    let mut files = vec![
        bytes_entry(tpk::ITEM_PKINFO, tpk::item_pkinfo(&name, &id)),
        bytes_entry(
            tpk::ITEMINFO_XML,
            tpk::iteminfo_xml(&name, &id, &c.scheme, geo.as_ref(), c.thumbnail.is_some()),
        ),
    ];
    if let Some(png) = c.thumbnail.take() {
        files.push(bytes_entry(tpk::THUMBNAIL_PNG, png));
    }
    files.push(bytes_entry(
        tpk::MAPSERVER_JSON,
        tpk::mapserver_json(&c.scheme, &c.extent, geo.as_ref()),
    ));
    let dir = tpk::CACHE_DIR;
    files.push(bytes_entry(format!("{dir}/{CONF_CDI}"), cdi));
    files.push(bytes_entry(
        format!("{dir}/{}", tpk::CONF_PROPERTIES),
        tpk::CONF_PROPERTIES_XML.as_bytes().to_vec(),
    ));
    files.push(bytes_entry(format!("{dir}/{CONF_XML}"), conf_xml));
    for (rel, path) in &c.bundles {
        files.push(file_entry(format!("{dir}/{ALLLAYERS}/{rel}"), path)?);
        let index = path.with_extension("bundlx");
        if index.is_file() {
            let rel = rel.strip_suffix("bundle").unwrap_or(rel);
            files.push(file_entry(
                format!("{dir}/{ALLLAYERS}/{rel}bundlx"),
                &index,
            )?);
        }
    }
    write_zip(dest, files, sync)
}

/// Exports the selected tiles of `src` to a ready-to-serve folder at `dest` (the seed's "Ready To
/// Serve Format": `root.json`, `iteminfo.json`, `thumbnail.png`, Compact V2 bundles under
/// `tile/Lnn/`): a new folder, or merged into (or overwriting, `opts.mode`) an existing
/// ready-to-serve folder, whose `root.json` then grows by the area taken.
///
/// Errors: a source without conf.xml, DEST a file, DEST holding another kind of cache, and the
/// job's own errors.
pub fn export_ready_to_serve(
    src: &Cache,
    dest: &Path,
    opts: &JobOptions,
    progress: &dyn Progress,
) -> Result<JobSummary> {
    let storage = StorageFormat::CompactV2;
    refuse_vector_tiles(src, "a ready-to-serve folder")?;
    let Some(src_conf) = src.conf() else {
        return Err(Error::invalid(format!(
            "{}: has no conf.xml; a ready-to-serve cache needs a tiling scheme",
            src.root().display()
        )));
    };
    if dest.is_file() {
        return Err(Error::invalid(format!(
            "{}: is a file; export --storage ready-to-serve writes a folder",
            dest.display()
        )));
    }
    if dest.is_dir() && holds_cache(dest)? {
        let mut d = Cache::open_with(dest, dest_options(storage, opts.sync))?;
        if d.ready_to_serve().is_none() || d.root() != dest {
            return Err(Error::invalid(format!(
                "{}: holds a cache that is not ready-to-serve (it has a conf.xml or no root.json); \
                 choose another folder; nothing was written",
                dest.display()
            )));
        }
        return into_cache(src, &mut d, opts, progress);
    }
    let scheme = package_scheme(&src_conf.scheme, storage);
    let env = extent_after(src, None, opts)
        .unwrap_or_else(|| crate::format::extent::scheme_extent(&scheme));
    let name = package_name(dest);
    fs::create_dir_all(dest.join(tpkx::TILE_DIR)).at(dest)?;
    // root.json first (what makes the folder a cache), final once the tiles are in.
    let root_path = dest.join(tpkx::ROOT_JSON);
    let root = tpkx::root_json(&name, &scheme, lod_range(&scheme), &env);
    crate::cache::write_atomic(&root_path, &root, false)?;
    let d = Cache::open_with(dest, dest_options(storage, false))?;
    let summary = run(
        src,
        &d,
        true,
        &JobOptions {
            sync: false,
            ..opts.clone()
        },
        progress,
    )?;
    let c = contents(&d)?;
    let root = tpkx::root_json(&name, &scheme, c.range, &c.extent);
    let item = tpkx::iteminfo_json(
        &name,
        &guid(c.created),
        c.created,
        &scheme,
        &c.extent,
        c.thumbnail.is_some(),
    );
    if let Some(png) = &c.thumbnail {
        crate::cache::write_atomic(&dest.join(tpkx::THUMBNAIL_PNG), png, false)?;
    }
    crate::cache::write_atomic(&dest.join(tpkx::ITEMINFO_JSON), &item, false)?;
    crate::cache::write_atomic(&root_path, &root, false)?;
    if opts.sync {
        crate::cache::files::syncfs(dest)?;
    }
    Ok(summary)
}

/// Creates an empty ready-to-serve cache folder `dest` (ArcGIS's "Ready To Serve Format" of
/// Create Map Server Cache): `root.json` for `scheme` (Compact V2, 128×128-tile bundles; `minLOD`
/// and `maxLOD` the scheme's first and last level, `fullExtent` = `extent` or the scheme's own),
/// `iteminfo.json` and an empty `tile/`. The folder may exist if it holds nothing that makes it a
/// cache.
///
/// Errors: `dest` a file or already a cache (nothing is written), and I/O errors naming the file.
pub fn create_ready_to_serve(
    dest: &Path,
    scheme: &TileScheme,
    extent: Option<Envelope>,
) -> Result<Cache> {
    if dest.is_file() || (dest.is_dir() && holds_cache(dest)?) {
        return Err(Error::invalid(format!(
            "{}: already holds a cache (or is a file); refusing to overwrite",
            dest.display()
        )));
    }
    let scheme = package_scheme(scheme, StorageFormat::CompactV2);
    let env = extent.unwrap_or_else(|| crate::format::extent::scheme_extent(&scheme));
    let name = package_name(dest);
    let range = lod_range(&scheme);
    fs::create_dir_all(dest.join(tpkx::TILE_DIR)).at(dest)?;
    let created = now_ms();
    let item = tpkx::iteminfo_json(&name, &guid(created), created, &scheme, &env, false);
    crate::cache::write_atomic(&dest.join(tpkx::ITEMINFO_JSON), &item, true)?;
    // root.json last: it is what makes the folder a cache.
    let root = tpkx::root_json(&name, &scheme, range, &env);
    crate::cache::write_atomic(&dest.join(tpkx::ROOT_JSON), &root, true)?;
    Cache::open(dest)
}

/// `base` (the cache's conf.cdi, or the scheme's own extent) grown by every tile of `levels` that
/// lies wholly outside it, so the package's `fullExtent` holds every tile: GDAL's ESRIC driver
/// crops a package to its `fullExtent` (`-projwin`), and ArcGIS clients zoom to it, so a tile
/// outside would be hidden. A tile that overlaps `base` is left as it is (coarse tiles reach far
/// beyond the data; the extent stays where the data is). Reads only the indexes of bundles that
/// are not wholly inside `base`.
fn holding_tiles(
    cache: &Cache,
    scheme: &TileScheme,
    levels: &[u8],
    base: Envelope,
) -> Result<Envelope> {
    use crate::format::extent::union;
    use crate::format::{Slot, BUNDLE_DIM};
    let inside = |b: &Envelope| {
        b.xmin >= base.xmin && b.xmax <= base.xmax && b.ymin >= base.ymin && b.ymax <= base.ymax
    };
    let mut out = base;
    for &l in levels {
        for id in cache.bundles(l)? {
            let corners = (
                scheme.tile_bbox(id.tile(Slot { row: 0, col: 0 })),
                scheme.tile_bbox(id.tile(Slot {
                    row: BUNDLE_DIM - 1,
                    col: BUNDLE_DIM - 1,
                })),
            );
            let (Some(a), Some(b)) = corners else {
                continue;
            };
            if inside(&union(&a, &b)) {
                continue;
            }
            let Some(bundle) = cache.bundle(id)? else {
                continue;
            };
            for (slot, _) in bundle.slots() {
                if let Some(t) = scheme.tile_bbox(id.tile(slot)) {
                    if !t.intersects(&base) {
                        out = union(&out, &t);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Size of the thumbnail ArcGIS puts in its packages.
const THUMB_W: u32 = 200;
const THUMB_H: u32 = 133;

/// A picture of the package for `thumbnail.png`: the extent drawn from the deepest level whose
/// tiles over it fit in 4×4 (fewer for tiles over 512 px; else the top-left corner of the first
/// level), scaled into 200×133 on a transparent background. `None` when no tile there decodes; the package is complete without it.
fn thumbnail(
    cache: &Cache,
    scheme: &TileScheme,
    levels: &[u8],
    extent: &Envelope,
) -> Option<Vec<u8>> {
    use image::imageops::{self, FilterType};
    // At most 4×4 tiles, and a mosaic of at most 2048 px a side (a scheme may declare tiles of
    // up to 65536 px: one such tile is drawn alone, larger ones get no thumbnail).
    let (tw, th) = (scheme.tile_cols, scheme.tile_rows);
    if tw.max(th) > 4096 {
        return None;
    }
    let max = (2048 / tw.max(th)).clamp(1, 4);
    let fits = |r: &std::ops::Range<u32>| r.end - r.start <= max;
    let (level, rows, cols) = levels
        .iter()
        .rev()
        .find_map(|&l| {
            let (r, c) = scheme.tile_range(l, extent)?;
            (fits(&r) && fits(&c)).then_some((l, r, c))
        })
        .or_else(|| {
            let l = *levels.first()?;
            let (r, c) = scheme.tile_range(l, extent)?;
            Some((
                l,
                r.start..r.end.min(r.start + max),
                c.start..c.end.min(c.start + max),
            ))
        })?;
    let mut mosaic =
        image::RgbaImage::new(tw * (cols.end - cols.start), th * (rows.end - rows.start));
    let mut any = false;
    for r in rows.clone() {
        for c in cols.clone() {
            let Ok(Some(bytes)) = cache.tile(TileAddr::new(level, r, c)) else {
                continue;
            };
            let Ok(img) = pixels::decode(&bytes, scheme.tile_format.image_kind()) else {
                continue;
            };
            let (x, y) = ((c - cols.start) * tw, (r - rows.start) * th);
            imageops::overlay(&mut mosaic, &img, i64::from(x), i64::from(y));
            any = true;
        }
    }
    if !any {
        return None;
    }
    // The extent's pixels in the mosaic (all of it if the extent is degenerate there).
    let res = scheme.lod(level)?.resolution;
    let x0 = scheme.origin_x + f64::from(cols.start) * f64::from(tw) * res;
    let y0 = scheme.origin_y - f64::from(rows.start) * f64::from(th) * res;
    let px = |v: f64, max: u32| (v / res).clamp(0.0, f64::from(max)) as u32;
    let (w, h) = (mosaic.width(), mosaic.height());
    let (mut cx0, mut cx1) = (px(extent.xmin - x0, w), px(extent.xmax - x0, w));
    let (mut cy0, mut cy1) = (px(y0 - extent.ymax, h), px(y0 - extent.ymin, h));
    if cx1 <= cx0 || cy1 <= cy0 {
        (cx0, cx1, cy0, cy1) = (0, w, 0, h);
    }
    let crop = imageops::crop_imm(&mosaic, cx0, cy0, cx1 - cx0, cy1 - cy0).to_image();
    let scale = (f64::from(THUMB_W) / f64::from(crop.width()))
        .min(f64::from(THUMB_H) / f64::from(crop.height()));
    let sw = ((f64::from(crop.width()) * scale).round() as u32).clamp(1, THUMB_W);
    let sh = ((f64::from(crop.height()) * scale).round() as u32).clamp(1, THUMB_H);
    let small = imageops::resize(&crop, sw, sh, FilterType::Triangle);
    let mut out = image::RgbaImage::new(THUMB_W, THUMB_H);
    imageops::overlay(
        &mut out,
        &small,
        i64::from((THUMB_W - sw) / 2),
        i64::from((THUMB_H - sh) / 2),
    );
    let mut png = Vec::new();
    out.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(png)
}

/// A package id in GUID form, unique enough for one machine (time, process, a random hasher key).
fn guid(seed: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seed);
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::TileFormat;

    /// A scheme may declare tiles of up to 65536 px; the thumbnail must not build a mosaic of
    /// 4×4 of them (256 GiB). Tiles of 1024 px are still drawn.
    #[test]
    fn thumbnails_of_huge_tiles_stay_bounded() {
        let d = tempfile::tempdir().unwrap();
        let mut s = TileScheme::web_mercator(2, TileFormat::Png);
        s.tile_cols = 65536;
        s.tile_rows = 65536;
        let c = Cache::create(d.path().join("huge"), &s, None).unwrap();
        // A decodable tile is there: only the size bound keeps the thumbnail from being drawn.
        let small = image::RgbaImage::from_pixel(8, 8, image::Rgba([1, 2, 3, 255]));
        let mut png = Vec::new();
        small
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        for level in 0..=2 {
            c.write_tiles(&[(TileAddr::new(level, 0, 0), &png[..])])
                .unwrap();
        }
        assert!(thumbnail(
            &c,
            &s,
            &[0, 1, 2],
            &crate::format::extent::scheme_extent(&s)
        )
        .is_none());

        let mut s = TileScheme::web_mercator(2, TileFormat::Png);
        s.tile_cols = 1024;
        s.tile_rows = 1024;
        let c = Cache::create(d.path().join("big"), &s, None).unwrap();
        let img = image::RgbaImage::from_pixel(1024, 1024, image::Rgba([200, 10, 10, 255]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        c.write_tiles(&[(TileAddr::new(2, 0, 0), &png[..])])
            .unwrap();
        let thumb = thumbnail(&c, &s, &[1, 2], &crate::format::extent::scheme_extent(&s)).unwrap();
        let t = image::load_from_memory(&thumb).unwrap().to_rgba8();
        assert_eq!(t.dimensions(), (THUMB_W, THUMB_H));
        assert!(t.pixels().any(|p| p.0 == [200, 10, 10, 255]));
    }
}
