//! What a job selects, in the cache's terms: the [`Area`] a job takes tiles in (kept in `aoi.rs`
//! so the copy engine can use it without an import cycle), an `--extent` given in another spatial
//! reference (`--extent-crs`), and the refusal of a selection (extent or area of interest) that matches no
//! tile, naming the selection's bounds and the cache's.

pub use super::aoi::Area;
use super::aoi::{cache_crs, Coverage};
use super::engine::{select_levels, JobOptions, JobSummary};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::format::conf::{Envelope, TileScheme};
use crate::format::extent::{self, Crs};
use crate::format::{Slot, BUNDLE_DIM};

/// An `--extent` given in the spatial reference `epsg` (e.g. 4326 for WGS 84 longitude/latitude
/// degrees), as the envelope in the cache's spatial reference that holds it (its boundary sampled,
/// see [`Crs::transform_envelope`]). Errors name both references when either is unknown.
pub fn extent_in_cache(e: &Envelope, epsg: u32, scheme: Option<&TileScheme>) -> Result<Envelope> {
    let from = Crs::from_epsg(epsg)
        .map_err(|err| Error::invalid(format!("--extent-crs {epsg}: {err}")))?;
    let to = cache_crs(scheme).map_err(|why| {
        Error::invalid(format!(
            "--extent in EPSG:{} cannot be carried into the cache's spatial reference: {why}; \
             give --extent in the cache's own units instead",
            from.epsg()
        ))
    })?;
    from.transform_envelope(&to, e).map_err(|err| {
        Error::invalid(format!(
            "--extent {},{},{},{}: {err}",
            e.xmin, e.ymin, e.xmax, e.ymax
        ))
    })
}

/// The area a job's options select (the AOI's bounding box, else the extent), if any.
fn selection_bounds(opts: &JobOptions) -> Option<Envelope> {
    match (&opts.aoi, &opts.extent) {
        (Some(a), _) => Some(a.bbox()),
        (None, e) => *e,
    }
}

fn fmt_env(e: &Envelope) -> String {
    format!("({}, {}, {}, {})", e.xmin, e.ymin, e.xmax, e.ymax)
}

/// The refusal of a selection that matches no tile of `src`: names the selection's bounds, where
/// tiles in the bundles it reaches lie (`tiles`) and the cache's extent (conf.cdi), in the cache's
/// spatial reference; `after` says the job ran (its destination may exist, holding no tile).
fn no_tile(
    src: &Cache,
    sel: &Envelope,
    levels: &[u8],
    tiles: Option<Envelope>,
    after: bool,
) -> Error {
    let units = src
        .scheme()
        .map_or_else(|| "the cache's units".to_string(), extent::describe);
    let lv = match (levels.first(), levels.last()) {
        (Some(a), Some(b)) if a != b => format!("levels {a}-{b}"),
        (Some(a), _) => format!("level {a}"),
        _ => "no level".into(),
    };
    let mut msg = format!(
        "the selection {} (in {units}) matches no tile of {} in {lv}",
        fmt_env(sel),
        src.root().display()
    );
    if let Some(t) = tiles {
        msg.push_str(&format!("; tiles near it cover {}", fmt_env(&t)));
    }
    if let Some(e) = src.extent() {
        msg.push_str(&format!("; its extent (conf.cdi) is {}", fmt_env(&e)));
    }
    msg.push_str(if after {
        "; no tile was written"
    } else {
        "; nothing was written"
    });
    Error::invalid(msg)
}

/// Refuses, before anything is written, a selection (`--extent`, `--aoi`) that meets no tile of
/// the selected levels of `src`, naming the selection's bounds and the cache's. Bundles that the
/// selection does not reach are judged by their bounds alone; in the others the tiles are listed
/// (index only) until one meets the selection. An AOI that meets a tile but none of its pixel
/// centres is caught after the job by [`check_matched`].
pub fn check_selection_meets(src: &Cache, opts: &JobOptions) -> Result<()> {
    let (Some(sel), Some(scheme)) = (selection_bounds(opts), src.scheme()) else {
        return Ok(());
    };
    let levels = select_levels(src, &opts.levels)?;
    if levels.is_empty() {
        return Ok(());
    }
    let meets = |b: &Envelope| match &opts.aoi {
        Some(a) => a.coverage(b) != Coverage::Outside,
        None => b.intersects(&sel),
    };
    let mut cover: Option<Envelope> = None;
    for &level in &levels {
        for g in src.groups(level)? {
            let (Some(a), Some(b)) = (
                scheme.tile_bbox(g.id.tile(Slot { row: 0, col: 0 })),
                scheme.tile_bbox(g.id.tile(Slot {
                    row: BUNDLE_DIM - 1,
                    col: BUNDLE_DIM - 1,
                })),
            ) else {
                continue;
            };
            let b = extent::union(&a, &b);
            if meets(&b) {
                let tiles: Vec<_> = if g.files.is_empty() {
                    src.bundle(g.id)?
                        .map(|h| h.slots().into_iter().map(|(s, _)| g.id.tile(s)).collect())
                        .unwrap_or_default()
                } else {
                    g.files.iter().map(|(t, _)| *t).collect()
                };
                let mut any = false;
                for t in tiles {
                    let Some(tb) = scheme.tile_bbox(t) else {
                        continue;
                    };
                    if meets(&tb) {
                        return Ok(());
                    }
                    cover = Some(cover.map_or(tb, |c| extent::union(&c, &tb)));
                    any = true;
                }
                if any {
                    continue;
                }
            }
        }
    }
    Err(no_tile(src, &sel, &levels, cover, false))
}

/// After a job: refuses (exit non-zero) a selection that matched no tile of `src` (every tile read
/// lay outside it), naming the selection's bounds and the cache's extent.
pub fn check_matched(src: &Cache, opts: &JobOptions, summary: &JobSummary) -> Result<()> {
    let Some(sel) = selection_bounds(opts) else {
        return Ok(());
    };
    if summary.tiles_read > summary.tiles_skipped {
        return Ok(());
    }
    Err(no_tile(src, &sel, &summary.levels, None, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::aoi::Aoi;

    fn env(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> Envelope {
        Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    fn scheme(epsg: u32) -> TileScheme {
        let mut s = TileScheme::web_mercator(0, crate::format::conf::TileFormat::Png);
        if epsg != 3857 {
            s.wkid = Some(epsg);
            s.latest_wkid = Some(epsg);
            s.wkt = None;
        }
        s
    }

    #[test]
    fn an_area_judges_blocks_consistently_with_its_tiles() {
        let e = Area::Extent(env(0.0, 0.0, 10.0, 10.0));
        assert_eq!(e.block(&env(2.0, 2.0, 8.0, 8.0)), Coverage::Inside);
        assert_eq!(e.block(&env(5.0, 5.0, 15.0, 15.0)), Coverage::Partial);
        assert_eq!(e.block(&env(10.0, 0.0, 20.0, 10.0)), Coverage::Outside);
        // Touching along an edge is not overlapping.
        assert!(!e.takes_tile(&env(10.0, 0.0, 20.0, 10.0), 4, 4));
        assert!(e.takes_tile(&env(9.9, 0.0, 20.0, 10.0), 4, 4));
        // A right triangle over the square (0,0)-(4,4): a 4 x 4 px tile there has pixel centres
        // at .5; the tile (4,0)-(8,4) beside it touches the hypotenuse's end only.
        let json = r#"{"type":"Polygon","coordinates":[[[0,0],[4,0],[0,4],[0,0]]]}"#;
        let a = Area::Aoi(Aoi::from_geojson(std::path::Path::new("t"), json.as_bytes()).unwrap());
        assert_eq!(a.block(&env(0.0, 0.0, 4.0, 4.0)), Coverage::Partial);
        assert!(a.takes_tile(&env(0.0, 0.0, 4.0, 4.0), 4, 4));
        assert!(!a.takes_tile(&env(4.0, 0.0, 8.0, 4.0), 4, 4));
        // A one-pixel tile the hypotenuse (x + y = 4) crosses, its centre (2.5, 2) outside.
        let grazed = env(2.0, 1.5, 3.0, 2.5);
        assert_eq!(a.block(&grazed), Coverage::Partial);
        assert!(!a.takes_tile(&grazed, 1, 1));
        assert_eq!(Area::All.block(&env(0.0, 0.0, 1.0, 1.0)), Coverage::Inside);
        // Copy jobs keep the pixels with a centre in the area. Pixel (x, y) (y down from the top
        // at 4) has its centre at (x + .5, 3.5 - y): inside the triangle when x - y < 0, outside
        // when x - y > 0 (on the hypotenuse otherwise).
        match a.take(&env(0.0, 0.0, 4.0, 4.0), 4, 4) {
            crate::jobs::aoi::Take::Pixels(m) => {
                for y in 0..4i32 {
                    for x in 0..4i32 {
                        if x != y {
                            assert_eq!(m.get(x as u32, y as u32), x < y, "pixel ({x}, {y})");
                        }
                    }
                }
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.take(&env(0.0, 0.0, 1.0, 1.0), 4, 4),
            crate::jobs::aoi::Take::Whole
        );
        assert_eq!(
            e.take(&env(10.0, 0.0, 20.0, 10.0), 4, 4),
            crate::jobs::aoi::Take::No
        );
    }

    #[test]
    fn extents_in_wgs84_are_carried_into_the_cache() {
        let e = extent_in_cache(&env(2.0, 48.5, 2.8, 49.1), 4326, Some(&scheme(3857))).unwrap();
        let r = 6_378_137.0_f64;
        assert!((e.xmin - 2.0_f64.to_radians() * r).abs() < 1e-6, "{e:?}");
        let err = extent_in_cache(&env(0.0, 0.0, 1.0, 1.0), 4326, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EPSG:4326") && err.contains("no conf.xml"),
            "{err}"
        );
    }
}
