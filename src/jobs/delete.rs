//! `delete`: removes the selected tiles of a cache, as ArcGIS's Manage Map Server Cache Tiles does
//! with its "Delete tiles" mode: by levels (or scales), by an extent, or by an area of interest.
//! Tiles go through the storage seam ([`Storage::delete_group`]): in Compact V1/V2 bundles their
//! index entries are cleared under the bundle's lock (the bytes become dead space that `bundlefs
//! compact` reclaims in V2 bundles); in an exploded cache their files are removed, and row folders
//! left empty with them; in an object store each bundle is rewritten without them. Semantics and
//! the proofs in `doc/managing-tiles.md`.

use std::collections::BTreeSet;
use std::time::Instant;

use super::aoi::{Aoi, Coverage};
use super::engine::{check_selection, select_levels, JobOptions, LevelSelect};
use super::selection::Area;
use crate::cache::{Cache, Storage, TileGroup};
use crate::error::{Error, Result};
use crate::format::conf::{Envelope, TileScheme};
use crate::format::extent::union;
use crate::format::{Slot, TileAddr, BUNDLE_DIM};

/// What `delete` removes. At least one of `levels`, `extent` and `aoi` must be given, or `all`
/// (every tile of the cache) said outright: a delete never takes everything by default.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Only these levels (or the levels at these scales); None: every level.
    pub levels: Option<LevelSelect>,
    /// Only tiles overlapping this rectangle (cache units). Ignored when `aoi` is given.
    pub extent: Option<Envelope>,
    /// Only tiles holding a pixel whose centre lies in this area (see [`Area`]).
    pub aoi: Option<Aoi>,
    /// Every tile of the cache (refused together with any other selection).
    pub all: bool,
    /// Only the bundles of this worker's share (`--shard I/N`); None: every bundle.
    pub shard: Option<crate::cache::shard::Shard>,
}

/// What a delete did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeleteSummary {
    /// Tiles removed.
    pub tiles: u64,
    /// Bytes of tile data removed (in bundles: now dead space).
    pub bytes: u64,
    /// Bundles (or bundle-sized groups of exploded tiles) that lost tiles.
    pub bundles: u64,
    /// Row folders removed because the deletion left them empty (exploded caches).
    pub row_folders: u64,
    /// The levels looked at, ascending.
    pub levels: Vec<u8>,
    /// Wall time.
    pub seconds: f64,
}

/// Deletes the tiles of `cache` that `opts` selects. Refused before anything is removed: no
/// selection and no `all`, `all` with a selection, an extent or area on a cache without conf.xml
/// (tiles cannot be placed on the map), an extent with `xmin >= xmax` or `ymin >= ymax`, levels or
/// scales the cache lacks. A bundle another writer holds is waited for (its `.lck` flock, up to the
/// cache's lock timeout, with a message after a few seconds), never written at the same time.
pub fn delete(cache: &Cache, opts: &DeleteOptions) -> Result<DeleteSummary> {
    let given = opts.levels.is_some() || opts.extent.is_some() || opts.aoi.is_some();
    if !given && !opts.all {
        return Err(Error::invalid(format!(
            "{}: say which tiles to delete: --levels, --scales, --extent or --aoi \
             (or --all for every tile of the cache); nothing was deleted",
            cache.root().display()
        )));
    }
    if given && opts.all {
        return Err(Error::invalid(
            "--all deletes every tile and takes no --levels, --scales, --extent or --aoi; \
             nothing was deleted"
                .to_string(),
        ));
    }
    let job = JobOptions {
        levels: opts.levels.clone().unwrap_or_default(),
        extent: opts.extent,
        aoi: opts.aoi.clone(),
        ..JobOptions::default()
    };
    check_selection(cache, &job)?;
    let levels = select_levels(cache, &job.levels)?;
    let area = Area::of(opts.extent, opts.aoi.clone());
    delete_tiles_of(cache.store(), cache.scheme(), &levels, &area, opts.shard)
}

/// Deletes, level by level and bundle by bundle, the tiles of `levels` in `store` that `area`
/// takes ([`Area::takes_tile`], tiles placed by `scheme`). Bundles the area cannot reach are not
/// opened. `scheme` may be None only with [`Area::All`]. With a `shard`, only its bundles.
pub fn delete_tiles_of(
    store: &dyn Storage,
    scheme: Option<&TileScheme>,
    levels: &[u8],
    area: &Area,
    shard: Option<crate::cache::shard::Shard>,
) -> Result<DeleteSummary> {
    let start = Instant::now();
    let mut s = DeleteSummary {
        levels: levels.to_vec(),
        ..DeleteSummary::default()
    };
    for &level in levels {
        for g in store.groups(level)? {
            if shard.is_some_and(|s| !s.takes(&g.id)) {
                continue;
            }
            let (slots, bytes) = selected(store, scheme, &g, area)?;
            if slots.is_empty() {
                continue;
            }
            store.delete_group(g.id, &slots)?;
            s.tiles += slots.len() as u64;
            s.bytes += bytes;
            s.bundles += 1;
            let rows: BTreeSet<u32> = slots.iter().map(|s| g.id.row0 + s.row).collect();
            s.row_folders += store.remove_empty_rows(g.id.level, &rows);
        }
    }
    s.seconds = start.elapsed().as_secs_f64();
    Ok(s)
}

/// The slots of group `g` that `area` takes, with the bytes their tiles hold. Compact bundles are
/// judged from their index (no tile is read); exploded groups from their file list.
fn selected(
    store: &dyn Storage,
    scheme: Option<&TileScheme>,
    g: &TileGroup,
    area: &Area,
) -> Result<(Vec<Slot>, u64)> {
    let place = |t: TileAddr| -> Result<Envelope> {
        scheme.and_then(|s| s.tile_bbox(t)).ok_or_else(|| {
            Error::invalid(format!(
                "tile {t}: level {} is not in the cache's tiling scheme, so the tile cannot be \
                 placed on the map; nothing more was deleted",
                t.level
            ))
        })
    };
    let cov = match area {
        Area::All => Coverage::Inside,
        _ => {
            let first = place(g.id.tile(Slot { row: 0, col: 0 }))?;
            let last = place(g.id.tile(Slot {
                row: BUNDLE_DIM - 1,
                col: BUNDLE_DIM - 1,
            }))?;
            area.block(&union(&first, &last))
        }
    };
    if cov == Coverage::Outside {
        return Ok((Vec::new(), 0));
    }
    let stored: Vec<(Slot, u64)> = if g.file_count() > 0 {
        // Tile files, or tile objects (whose sizes a store's listing gives).
        let mut v = Vec::with_capacity(g.files.len());
        for (t, p) in &g.files {
            let size = if store.stats_without_reading() {
                store.tile_stat(*t)?.map_or(0, |s| s.size)
            } else {
                std::fs::metadata(p).map_or(0, |m| m.len())
            };
            v.push((t.slot(), size));
        }
        v
    } else {
        // From the index alone (an object store's bundle is not read whole for it).
        store
            .slots_of(g.id)?
            .unwrap_or_default()
            .into_iter()
            .map(|(s, n)| (s, u64::from(n)))
            .collect()
    };
    let (w, h) = scheme.map_or((256, 256), |s| (s.tile_cols, s.tile_rows));
    let mut out = Vec::new();
    let mut bytes = 0;
    for (slot, n) in stored {
        if cov == Coverage::Inside || area.takes_tile(&place(g.id.tile(slot))?, w, h) {
            out.push(slot);
            bytes += n;
        }
    }
    Ok((out, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::object::V2Objects;
    use crate::cache::url::ObjectUrl;
    use crate::cache::CacheOptions;
    use crate::format::conf::TileFormat;
    use crate::format::BundleId;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn extent(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> Envelope {
        Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    /// In an object store (in memory here), a delete rewrites each bundle without the tiles taken
    /// and leaves every other tile byte for byte.
    #[test]
    fn deletes_in_an_object_store_bundle_by_bundle() {
        let url = ObjectUrl::parse("s3://bucket/caches/del").unwrap().unwrap();
        let store = V2Objects::with_store(
            url,
            Arc::new(InMemory::new()),
            "_alllayers",
            CacheOptions::default(),
        );
        let scheme = TileScheme::web_mercator(3, TileFormat::Png);
        // Level 3: 8 x 8 tiles in one bundle; each tile's bytes name it.
        let tiles: Vec<(TileAddr, Vec<u8>)> = (0..8)
            .flat_map(|r| (0..8).map(move |c| TileAddr::new(3, r, c)))
            .map(|t| (t, format!("tile {t}").into_bytes()))
            .collect();
        let id = BundleId {
            level: 3,
            row0: 0,
            col0: 0,
        };
        let timed: Vec<_> = tiles
            .iter()
            .map(|(t, b)| (t.slot(), &b[..], None))
            .collect();
        store.write_group(id, &timed).unwrap();
        // The western half of the world: columns 0-3.
        let half = extent(-20037508.0, -20037508.0, -1.0, 20037508.0);
        let s = delete_tiles_of(&store, Some(&scheme), &[3], &Area::Extent(half), None).unwrap();
        assert_eq!((s.tiles, s.bundles), (32, 1));
        store.invalidate(&id);
        for (t, b) in &tiles {
            let got = store.tile(*t).unwrap();
            if t.col < 4 {
                assert!(got.is_none(), "{t} should be gone");
            } else {
                assert_eq!(got.as_deref(), Some(&b[..]), "{t} should be kept");
            }
        }
        // Again: nothing left to take.
        let s = delete_tiles_of(&store, Some(&scheme), &[3], &Area::Extent(half), None).unwrap();
        assert_eq!(s.tiles, 0);
    }

    #[test]
    fn refuses_no_selection_and_all_with_a_selection() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::create(
            d.path(),
            &TileScheme::web_mercator(2, TileFormat::Png),
            None,
        )
        .unwrap();
        c.write_tiles(&[(TileAddr::new(1, 0, 0), b"x")]).unwrap();
        let e = delete(&c, &DeleteOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--all") && e.contains("nothing was deleted"),
            "{e}"
        );
        let e = delete(
            &c,
            &DeleteOptions {
                all: true,
                extent: Some(extent(0.0, 0.0, 1.0, 1.0)),
                ..DeleteOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--all"), "{e}");
        assert!(c.tile(TileAddr::new(1, 0, 0)).unwrap().is_some());
        let s = delete(
            &c,
            &DeleteOptions {
                all: true,
                ..DeleteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(s.tiles, 1);
        assert!(c.tile(TileAddr::new(1, 0, 0)).unwrap().is_none());
    }
}
