//! Ready-to-serve cache folders (ArcGIS Enterprise's "Ready To Serve Format", an unpacked `.tpkx`):
//! `root.json` (+ `iteminfo.json`) and Compact V2 bundles under `tile/Lnn/`, no conf.xml. Opened
//! as an ArcGIS-layout cache whose conf.xml and conf.cdi are made from `root.json`; the extent
//! and level range a job grows are written back into `root.json`, every other member kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{detect_storage, find_entry, Cache, CacheOptions, Layout, CONF_XML};
use crate::error::{Error, FormatContext, Result};
use crate::format::conf::{self, Envelope, StorageFormat, TileScheme};
use crate::format::tpkx;

/// What marks a ready-to-serve folder: its `root.json`, as spelled on disk, and the level range
/// it declares (kept up to date as tiles of new levels are written).
#[derive(Debug)]
pub struct ReadyToServe {
    /// The folder's `root.json`.
    pub root_json: PathBuf,
    /// `minLOD`, `maxLOD` as `root.json` says them now (None when it does not: left alone).
    levels: Mutex<Option<(u8, u8)>>,
}

impl ReadyToServe {
    /// Widens `root.json`'s `minLOD`/`maxLOD` to take levels `lo..=hi` (tiles of them were just
    /// written), rewriting it only when they fall outside: GDAL reads no level beyond `maxLOD`.
    pub(crate) fn take_levels(
        &self,
        scheme: &TileScheme,
        lo: u8,
        hi: u8,
        durable: bool,
    ) -> Result<()> {
        let mut cur = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let Some((a, b)) = *cur else { return Ok(()) };
        if a <= lo && hi <= b {
            return Ok(());
        }
        let range = (a.min(lo), b.max(hi));
        self.rewrite(&tpkx::content_members(scheme, Some(range), None), durable)?;
        *cur = Some(range);
        Ok(())
    }

    /// Writes `extent` and `levels` (min, max) into `root.json` ([`tpkx::content_members`]).
    pub(crate) fn write_content(
        &self,
        scheme: &TileScheme,
        levels: Option<(u8, u8)>,
        extent: &Envelope,
        durable: bool,
    ) -> Result<()> {
        let mut cur = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        self.rewrite(
            &tpkx::content_members(scheme, levels, Some(extent)),
            durable,
        )?;
        if levels.is_some() {
            *cur = levels;
        }
        Ok(())
    }

    /// Sets `members` in `root.json`, every other byte kept, atomically.
    fn rewrite(&self, members: &[(&str, serde_json::Value)], durable: bool) -> Result<()> {
        let path = &self.root_json;
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let out = tpkx::set_members(&bytes, members).in_file(path)?;
        super::write_atomic(path, &out, durable)
    }
}

/// True for a path naming a `root.json` file (any case), which opens the folder holding it.
pub(crate) fn names_root_json(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.eq_ignore_ascii_case(tpkx::ROOT_JSON))
        && p.is_file()
}

/// Opens `root` as a ready-to-serve cache when it holds a `root.json` (and no conf.xml: the caller
/// looked for that first); `None` when it holds no `root.json`.
///
/// Errors, naming the file: a `root.json` that cannot be read or parsed or holds a value bundlefs
/// does not support ([`tpkx::parse_root_json`]); bundles under `tileBundlesPath` that are not
/// Compact V2 (a ready-to-serve cache holds Compact V2 only, as the seed's "Ready To Serve Format"
/// says).
pub(crate) fn open(root: &Path, opts: &CacheOptions) -> Result<Option<Cache>> {
    let Some(path) = find_entry(root, tpkx::ROOT_JSON)?.filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let info = tpkx::parse_root_json(&bytes).in_file(&path)?;
    let tiles_dir = tile_folder(root, &info.tile_dir)?;
    if let Some(found) = detect_storage(&tiles_dir)? {
        if found != StorageFormat::CompactV2 {
            return Err(Error::invalid(format!(
                "{}: holds {found} tiles; a ready-to-serve cache ({}) holds {} bundles only",
                tiles_dir.display(),
                path.display(),
                StorageFormat::CompactV2
            )));
        }
    }
    let scheme = &info.scheme;
    let conf = TileScheme::parse_conf_xml(&scheme.to_conf_xml()).in_file(root.join(CONF_XML))?;
    let env = info
        .extent
        .unwrap_or_else(|| crate::format::extent::scheme_extent(scheme));
    let cdi = conf::write_cdi(&env, scheme);
    let mut c = Cache::assemble(
        root.to_path_buf(),
        tiles_dir,
        Layout::ArcGis,
        StorageFormat::CompactV2,
        Some(conf),
        Some(cdi),
        opts.clone(),
    );
    c.ready_to_serve = Some(ReadyToServe {
        root_json: path,
        levels: Mutex::new(info.levels),
    });
    Ok(Some(c))
}

/// The folder `tileBundlesPath` names under `root`, found whatever the case of its first part
/// (`tile`, `Tile`), as a package unzipped on Windows may spell it.
fn tile_folder(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut parts = rel.split('/');
    let first = parts.next().unwrap_or(tpkx::TILE_DIR);
    let mut p = find_entry(root, first)?.unwrap_or_else(|| root.join(first));
    for part in parts.filter(|s| !s.is_empty() && *s != ".") {
        p.push(part);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::TileFormat;
    use crate::format::TileAddr;

    /// A folder of root.json (with a member bundlefs does not know) and an empty `Tile/`.
    fn folder(dir: &Path) -> Vec<u8> {
        let s = TileScheme::web_mercator(4, TileFormat::Png);
        let e = Envelope {
            xmin: -10.0,
            ymin: -10.0,
            xmax: 10.0,
            ymax: 10.0,
        };
        let root = String::from_utf8(tpkx::root_json("t", &s, (0, 1), &e)).unwrap();
        let root = root.replacen("{\n", "{\n  \"layers\": [{\"id\": 0}],\n", 1);
        fs::write(dir.join("ROOT.JSON"), &root).unwrap();
        fs::create_dir_all(dir.join("Tile")).unwrap();
        root.into_bytes()
    }

    #[test]
    fn opens_by_folder_or_root_json_and_writes_back_only_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let before = folder(d.path());
        let c = Cache::open(d.path().join("ROOT.JSON")).unwrap();
        assert!(c.ready_to_serve().is_some());
        assert_eq!(c.tiles_dir(), d.path().join("Tile"));
        assert_eq!(c.scheme().unwrap().lods.len(), 5);

        // A tile of level 3 widens maxLOD; nothing else in root.json moves.
        let mut png = Vec::new();
        image::RgbaImage::new(256, 256)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        c.write_tiles(&[(TileAddr::new(3, 1, 1), &png[..])])
            .unwrap();
        let after = fs::read(d.path().join("ROOT.JSON")).unwrap();
        let (b, a) = (
            String::from_utf8(before).unwrap(),
            String::from_utf8(after).unwrap(),
        );
        let changed: Vec<(&str, &str)> = b.lines().zip(a.lines()).filter(|(x, y)| x != y).collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed[0].1.contains("\"maxLOD\": 3"), "{changed:?}");
        assert!(changed[1].1.contains("\"maxScale\""), "{changed:?}");
        assert!(a.starts_with("{\n  \"layers\": [{\"id\": 0}],\n  \"name\""));

        // set_extent writes fullExtent into root.json, not a conf.cdi.
        let mut c = Cache::open(d.path()).unwrap();
        let e = Envelope {
            xmin: -5.0,
            ymin: -6.0,
            xmax: 7.0,
            ymax: 8.0,
        };
        c.set_extent(&e).unwrap();
        assert!(!d.path().join("conf.cdi").exists());
        let info = tpkx::parse_root_json(&fs::read(d.path().join("ROOT.JSON")).unwrap()).unwrap();
        assert_eq!(info.extent, Some(e));
        assert_eq!(info.levels, Some((3, 3)));
        assert_eq!(Cache::open(d.path()).unwrap().extent(), Some(e));
    }

    #[test]
    fn other_storage_under_tile_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        folder(d.path());
        let l = d.path().join("Tile/L00/R00000000");
        fs::create_dir_all(&l).unwrap();
        fs::write(l.join("C00000000.png"), b"x").unwrap();
        let e = Cache::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("Tile") && e.contains("ready-to-serve"), "{e}");
    }
}
