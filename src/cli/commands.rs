//! What each cache command does, in terms of the library: info, verify, create, export, import,
//! compact, render and sample (mount and unmount live in their own modules). Output goes through
//! `outln!`, so a reader that goes away (`| head`) ends the command quietly.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::output::{self, outln};
use super::source::{open_folder, Source};
use super::{
    CompactArgs, CreateArgs, DeleteArgs, ExportArgs, ExportTo, ImportArgs, InfoArgs, JobArgs,
    RenderArgs, SampleArgs, StorageArg, VerifyArgs,
};
use crate::cache::{Cache, LevelStats};
use crate::error::count;
use crate::format::conf::{StorageFormat, TileFormat, TileScheme};
use crate::format::levels::LevelRange;
use crate::format::TileAddr;
use crate::jobs::aoi::Aoi;
use crate::jobs::aoi::Coverage;
use crate::jobs::engine::{JobOptions, JobSummary, LevelSelect, Progress, Target};
use crate::jobs::export::export_job;
use crate::jobs::import::import_job;
use crate::jobs::package::{export_ready_to_serve, update_package, update_package_as, PackageKind};
use crate::jobs::selection::Area;
use crate::render::batch::{render_batch_in, BatchOptions, BlockCover, TileFilter};
use crate::render::label::LabelSource;
use crate::render::{HttpOptions, Keep, RenderOptions, Renderer, SourceSpec, TileSource};

/// `bundlefs info`: the scheme, storage and per-level statistics, as a table or JSON.
pub fn info(a: &InfoArgs) -> anyhow::Result<ExitCode> {
    info_of(&a.cache, a.json)
}

/// `bundlefs verify`: every index entry (and with `--decode` every image); exit 1 on a problem.
pub fn verify(a: &VerifyArgs) -> anyhow::Result<ExitCode> {
    // A package is checked as unpacked (problems then name the unpacked bundle files).
    let src = Source::open(&a.cache)?;
    let r = crate::jobs::verify::verify(src.cache(), a.decode)?;
    let shown = |p: &crate::jobs::verify::Problem| crate::jobs::package::shown(&p.to_string());
    for p in &r.problems {
        outln!("BAD {}", shown(p));
    }
    for w in &r.warnings {
        outln!("WARN {}", shown(w));
    }
    for n in &r.not_checked {
        outln!("NOT CHECKED {n}");
    }
    outln!(
        "{}: {}, {}, {} checked{}; {} problem(s), {} warning(s)",
        a.cache.display(),
        count(r.levels as u64, "level"),
        count(r.bundles as u64, "bundle"),
        count(r.tiles, "tile"),
        if a.decode { " and decoded" } else { "" },
        r.problems.len(),
        r.warnings.len()
    );
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `bundlefs create`: an empty Compact V2 cache of a scheme: Web Mercator, a tiling scheme file, or
/// one built from the Create Map Server Cache parameters (`--wkid`/`--wkt`, see `cli::scheme`).
pub fn create(a: &CreateArgs) -> anyhow::Result<ExitCode> {
    let t = &a.tool;
    let (s, antialiasing, extent) = if t.builds_scheme() {
        if a.scheme != "web-mercator" {
            bail!(
                "--scheme {} and --wkid/--wkt both give a tiling scheme; give one",
                a.scheme
            );
        }
        if a.levels.is_some() {
            bail!("--levels selects levels of --scheme; with --wkid/--wkt, --scales or --standard give the levels");
        }
        let doc = t.build()?;
        (doc.scheme, doc.antialiasing, doc.extent)
    } else {
        let only = t.building_only();
        if !only.is_empty() {
            bail!(
                "{} {} a tiling grid and {} a spatial reference: add --wkid N or --wkt FILE \
                 (--scheme takes the grid from web-mercator or the file)",
                only.join(", "),
                if only.len() == 1 { "defines" } else { "define" },
                if only.len() == 1 { "needs" } else { "need" },
            );
        }
        let levels = a.levels.unwrap_or(LevelRange { min: 0, max: 19 });
        let mut s = build_scheme(&a.scheme, levels, t.format.map(TileFormat::from))?;
        if let Some(q) = t.quality {
            if !matches!(s.tile_format, TileFormat::Jpeg | TileFormat::Mixed) {
                bail!(
                    "--quality {q} with format {}: quality applies to JPEG and MIXED only",
                    s.tile_format.name()
                );
            }
            if !(1..=100).contains(&q) {
                bail!("--quality {q}: out of range 1-100");
            }
            s.compression_quality = q;
        }
        // A scheme file's antialiasing is kept (ArcGIS's supertile size follows it).
        let antialiasing = t.antialiasing
            || (a.scheme != "web-mercator"
                && std::fs::read(&a.scheme)
                    .is_ok_and(|b| crate::render::supertile::antialiasing(&b)));
        if let Some(e) = &t.extent {
            crate::format::scheme::check_origin_above_left(&s, e)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.scheme))?;
        }
        (s, antialiasing, t.extent)
    };
    if a.ready_to_serve {
        if antialiasing {
            bail!("--ready-to-serve: root.json has no antialiasing setting; leave out --antialiasing (or the scheme file's)");
        }
        crate::jobs::package::create_ready_to_serve(&a.dir, &s, extent)?;
        outln!(
            "created {} ({}, {}, ready-to-serve: root.json, tile/)",
            a.dir.display(),
            count(s.lods.len() as u64, "level"),
            s.tile_format.name()
        );
        return Ok(ExitCode::SUCCESS);
    }
    Cache::create(&a.dir, &s, extent)?;
    if antialiasing {
        // Cache::create writes antialiasing off; the same document with it on replaces it.
        let doc = crate::format::scheme::SchemeDocument {
            scheme: s.clone(),
            antialiasing,
            extent,
        };
        crate::cache::write_atomic(&a.dir.join("conf.xml"), &doc.to_conf_xml(), true)?;
    }
    outln!(
        "created {} ({}, {}, compact-v2)",
        a.dir.display(),
        count(s.lods.len() as u64, "level"),
        s.tile_format.name()
    );
    Ok(ExitCode::SUCCESS)
}

/// `bundlefs export`: tiles of a cache or package into a new folder or `.tpkx`.
pub fn export(a: &ExportArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let source = Source::open(&a.src)?;
    let opts = job_options(&a.job, source.cache(), &a.src)?;
    let storage = a.storage.or_else(|| existing_storage(&a.dest));
    let target = ExportTo::choose(storage, &a.dest)?;
    if a.job.shard.is_some()
        && matches!(
            target,
            ExportTo::Target(Target::Tpkx) | ExportTo::Tpk | ExportTo::Pmtiles
        )
    {
        bail!(
            "{}: --shard splits jobs into folder, file and object-store caches; a tile package or \
             a PMTiles file is written whole at the end (export to a compact cache with --shard, \
             then export that once)",
            a.dest.display()
        );
    }
    let bar = Bar::new();
    job_metrics(
        a.job.metrics.as_deref(),
        "export",
        &a.src,
        bar.0.clone(),
        None,
    )?;
    // A folder is export's, a package or ready-to-serve folder is package's.
    let (c, d) = (source.cache(), &a.dest);
    let mut s = match target {
        ExportTo::Target(Target::Storage(st)) => export_job(c, d, st, &opts, &bar)?,
        ExportTo::Target(Target::Tpkx) => {
            update_package_as(c, d, Some(PackageKind::Tpkx), &opts, &bar, false)?
        }
        ExportTo::Tpk => update_package_as(c, d, Some(PackageKind::Tpk), &opts, &bar, false)?,
        ExportTo::ReadyToServe => export_ready_to_serve(c, d, &opts, &bar)?,
        ExportTo::Mbtiles => crate::jobs::export::export_mbtiles(c, d, &opts, &bar)?,
        ExportTo::Geopackage => crate::jobs::export::export_geopackage(c, d, &opts, &bar)?,
        ExportTo::Xyz(tms) => crate::jobs::export::export_xyz(c, d, tms, &opts, &bar)?,
        ExportTo::Pmtiles => crate::jobs::export::export_pmtiles(c, d, &opts, &bar)?,
    };
    bar.0.finish_and_clear();
    crate::jobs::selection::check_matched(source.cache(), &opts, &s)?;
    let to = match target {
        ExportTo::Target(Target::Storage(st)) => st.to_string(),
        ExportTo::Target(Target::Tpkx) => "tpkx".to_string(),
        ExportTo::Tpk => "tpk".to_string(),
        ExportTo::ReadyToServe => "ready-to-serve".to_string(),
        ExportTo::Mbtiles => "mbtiles".to_string(),
        ExportTo::Geopackage => "geopackage".to_string(),
        ExportTo::Xyz(tms) => if tms { "tms" } else { "xyz" }.to_string(),
        ExportTo::Pmtiles => "pmtiles".to_string(),
    };
    // The whole command's time: opening a package and writing one (zip) are part of the run.
    s.seconds = started.elapsed().as_secs_f64();
    print_summary("exported", &s, &a.src, source.cache(), &a.dest, &to)?;
    Ok(left_out(&s))
}

/// The storage of the cache `dest` already holds (a folder with conf.xml, or a cache in an object
/// store), for `export` without `--storage`: tiles go into it as they are stored there. None for
/// anything else (no cache yet, a package, a ready-to-serve folder).
fn existing_storage(dest: &Path) -> Option<StorageArg> {
    if crate::cache::url::is_mbtiles(dest) {
        return Some(StorageArg::Mbtiles);
    }
    if crate::cache::url::is_geopackage(dest) {
        return Some(StorageArg::Geopackage);
    }
    if crate::cache::url::is_pmtiles(dest) {
        return Some(StorageArg::Pmtiles);
    }
    if !crate::jobs::engine::holds_cache(dest).ok()? {
        return None;
    }
    let c = Cache::open(dest).ok()?;
    if c.ready_to_serve().is_some() {
        return None;
    }
    match c.kind() {
        crate::cache::StorageKind::Xyz => return Some(StorageArg::Xyz),
        crate::cache::StorageKind::Tms => return Some(StorageArg::Tms),
        _ => {}
    }

    Some(match c.storage() {
        StorageFormat::Exploded => StorageArg::Exploded,
        StorageFormat::CompactV1 => StorageArg::CompactV1,
        StorageFormat::CompactV2 => StorageArg::CompactV2,
    })
}

/// `bundlefs import`: tiles of a cache or package into an existing cache.
pub fn import(a: &ImportArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let source = Source::open(&a.src)?;
    let opts = job_options(&a.job, source.cache(), &a.src)?;
    let bar = Bar::new();
    job_metrics(
        a.job.metrics.as_deref(),
        "import",
        &a.src,
        bar.0.clone(),
        None,
    )?;
    // A cache folder is import's, a package file (rewritten whole) is package's.
    if a.job.shard.is_some() && a.dest.is_file() && !crate::cache::url::is_tile_file(&a.dest) {
        bail!(
            "{}: --shard splits jobs into folder, file and object-store caches; a tile package is \
             one zip written whole at the end",
            a.dest.display()
        );
    }
    let mut s = if a.dest.is_file() && !crate::cache::url::is_tile_file(&a.dest) {
        update_package(source.cache(), &a.dest, &opts, &bar, true)?
    } else {
        import_job(source.cache(), &a.dest, &opts, &bar)?
    };
    bar.0.finish_and_clear();
    crate::jobs::selection::check_matched(source.cache(), &opts, &s)?;
    s.seconds = started.elapsed().as_secs_f64();
    print_summary(
        "imported",
        &s,
        &a.src,
        source.cache(),
        &a.dest,
        "existing cache",
    )?;
    Ok(left_out(&s))
}

/// `bundlefs delete`: remove the selected tiles (see `jobs::delete`) and say what went.
pub fn delete(a: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let c = open_folder(&a.cache, "delete")?;
    let sel = &a.select;
    let levels = match (&sel.levels, &sel.scales) {
        (_, Some(s)) => Some(LevelSelect::Scales(s.clone())),
        (Some(r), None) => {
            // As export and import: a range meeting no level the cache has is a mistake.
            check_levels_meet(r, &c, &a.cache)?;
            Some(LevelSelect::Range(*r))
        }
        (None, None) => None,
    };
    let (extent, aoi) = extent_and_aoi(sel.extent, sel.extent_crs, sel.aoi.as_deref(), &c)?;
    let opts = crate::jobs::delete::DeleteOptions {
        levels,
        extent,
        aoi,
        all: a.all,
        shard: a.shard,
    };
    let s = crate::jobs::delete::delete(&c, &opts)?;
    use crate::cache::Reclaim;
    let removed = |what: &str| {
        format!(
            " ({} bytes of {what}, {} removed)",
            s.bytes,
            count(s.row_folders, "empty row folder")
        )
    };
    let after = match c.deleted_space() {
        _ if s.tiles == 0 => String::new(),
        // Each tile in a bundle has a 4-byte size prefix, which becomes dead space with it.
        Reclaim::DeadSpace => format!(
            "; their {} bytes ({} with their 4-byte size prefixes, as `info` counts dead bytes) \
             are dead space until `bundlefs compact {}` rewrites the bundles (by default those \
             at least 20% dead; `--min-dead 0%` for every one)",
            s.bytes,
            s.bytes + 4 * s.tiles,
            a.cache.display()
        ),
        Reclaim::DeadSpaceV1 => format!(
            "; their {} bytes ({} with their 4-byte size prefixes) stay in the .bundle files as \
             dead space (export to a new cache to reclaim it)",
            s.bytes,
            s.bytes + 4 * s.tiles
        ),
        Reclaim::Files => removed("files"),
        Reclaim::Objects => removed("tile objects"),
        Reclaim::Rewritten => format!(
            "; their {} bytes are gone (each bundle was rewritten without them: no dead space)",
            s.bytes
        ),
        Reclaim::Records => format!(
            "; their {} bytes are free pages of the file for its next tiles (`sqlite3 FILE \
             VACUUM` gives them back to the disk)",
            s.bytes
        ),
    };
    outln!(
        "{}: deleted {} from {} in {} {} ({}){after}",
        a.cache.display(),
        count(s.tiles, "tile"),
        count(s.bundles, "bundle"),
        if s.levels.len() == 1 {
            "level"
        } else {
            "levels"
        },
        levels_text(&s.levels),
        c.storage_name()
    );
    if s.tiles == 0 {
        eprintln!(
            "bundlefs: the selection meets no stored tile of {}; nothing was deleted",
            a.cache.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bundlefs compact`: rewrite bundles with enough dead space; exit 1 if one was locked.
pub fn compact(a: &CompactArgs) -> anyhow::Result<ExitCode> {
    let c = open_folder(&a.cache, "compact")?;
    let s = crate::jobs::compact::compact(&c, a.min_dead.0, a.shard)?;
    outln!(
        "{}: {} checked, {} rewritten, {} -> {} bytes",
        a.cache.display(),
        count(s.bundles_checked, "bundle"),
        s.bundles_rewritten,
        s.bytes_before,
        s.bytes_after
    );
    for p in &s.locked {
        eprintln!(
            "bundlefs: {}: locked by another writer, not compacted",
            p.display()
        );
    }
    Ok(if s.locked.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `bundlefs sample`: a small labelled Web Mercator cache.
pub fn sample(a: &SampleArgs) -> anyhow::Result<ExitCode> {
    let levels = a.levels;
    if levels.max > 10 {
        bail!(
            "sample levels go up to 10 (4^level tiles each); got {}",
            levels.max
        );
    }
    let format: TileFormat = a.format.into();
    if format == TileFormat::Mixed {
        bail!("a sample cache needs one image format (PNG… or JPEG), not MIXED");
    }
    let s = TileScheme::web_mercator(levels.max, format);
    let c = Cache::create(&a.dir, &s, None)?;
    let mut n = 0u64;
    for level in levels.min..=levels.max {
        let side = 1u32 << level;
        let tiles: Vec<(TileAddr, Vec<u8>)> = (0..side)
            .flat_map(|row| (0..side).map(move |col| TileAddr::new(level, row, col)))
            .map(|t| {
                Ok((
                    t,
                    LabelSource
                        .render(&s, t)?
                        .context("label source drew nothing")?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let refs: Vec<(TileAddr, &[u8])> = tiles.iter().map(|(t, b)| (*t, b.as_slice())).collect();
        n += c.write_tiles(&refs)?.tiles as u64;
    }
    outln!(
        "wrote sample cache {} ({} labelled tiles, levels {}-{})",
        a.dir.display(),
        n,
        levels.min,
        levels.max
    );
    Ok(ExitCode::SUCCESS)
}

/// `bundlefs render`: one tile (`--tile`) or a batch of levels from a source.
pub fn render(a: &RenderArgs) -> anyhow::Result<ExitCode> {
    let spec: SourceSpec = a.source.parse()?;
    let timeout = a.timeout.0;
    if timeout.is_zero() {
        bail!("--timeout must be more than 0 seconds");
    }
    let cache = Arc::new(open_folder(&a.cache, "render")?);
    let http = HttpOptions {
        timeout,
        proxy: a.proxy.clone(),
        rate: a.rate,
        ..HttpOptions::default()
    };
    let src = spec.build(&cache, &http)?;
    // One tile (--tile) is asked for alone unless --supertile says otherwise.
    let supertile = a
        .supertile
        .unwrap_or_else(|| match (&a.tile, cache.conf()) {
            (Some(_), _) => 0,
            (None, Some(c)) => crate::render::supertile::arcgis_default_px(c.raw()),
            (None, None) => crate::render::supertile::ARCGIS_PX,
        });
    let opts = RenderOptions {
        supertile,
        supertile_buffer: a.supertile_buffer,
        concurrency: a.jobs.max(1),
        timeout,
        retries: a.retries,
        // A batch visits each tile once: no memory cache, and failures are counted, not remembered.
        memory_budget: 0,
        negative_ttl: std::time::Duration::ZERO,
        ..RenderOptions::default()
    };
    if let Some(t) = a.tile {
        let keep = if a.keep { Keep::Cache } else { Keep::No };
        let r = Renderer::new(cache, src, keep, opts)?;
        let started = std::time::Instant::now();
        let bytes = r.get(t)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match a.output.as_deref() {
            Some(p) if p.as_os_str() == "-" => output::bytes(&bytes)?,
            Some(p) => std::fs::write(p, &bytes[..]).with_context(|| format!("{}", p.display()))?,
            None => {}
        }
        eprintln!(
            "{t}: {} bytes from {spec} in {ms:.1} ms{}",
            bytes.len(),
            if a.keep { ", kept" } else { "" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(levels) = a.levels else {
        bail!("say which tiles: --levels A-B (with an optional --extent) or --tile L/R/C");
    };
    check_levels_in_scheme(&cache, &a.cache, &levels)?;
    let (mut extent, aoi) = extent_and_aoi(a.extent, a.extent_crs, a.aoi.as_deref(), &cache)?;
    let area = aoi.map(|aoi| {
        extent = Some(aoi.bbox());
        let (width, height) = cache
            .scheme()
            .map_or((256, 256), |s| (s.tile_cols, s.tile_rows));
        AreaTiles {
            area: Area::Aoi(aoi),
            width,
            height,
        }
    });
    let r = Arc::new(Renderer::new(cache, src, Keep::No, opts)?);
    let bo = BatchOptions {
        levels,
        extent,
        overwrite: a.overwrite,
        keep: a.keep,
        jobs: a.jobs.max(1),
        max_tiles: a.max_tiles,
        fine_first: spec == SourceSpec::Resample,
        shard: a.shard,
        // Levels holding tiles (a level folder emptied by `delete` holds none).
        near_first: if spec == SourceSpec::Resample {
            let c = r.cache();
            let mut v = Vec::new();
            for l in c.levels()? {
                if c.level_stats(l)?.tiles > 0 {
                    v.push(l);
                }
            }
            v
        } else {
            Vec::new()
        },
    };
    let bar = progress_bar();
    job_metrics(
        a.metrics.as_deref(),
        "render",
        &a.cache,
        bar.clone(),
        Some(r.clone()),
    )?;
    let filter = area.as_ref().map(|f| f as &dyn TileFilter);
    let st = render_batch_in(&r, &bo, filter, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let made = st.rendered + st.empty + st.failed;
    outln!(
        "{}: {} in {}: {} rendered ({} bytes), {} empty, {} failed, {} already stored, {} kept; {:.2} s ({:.1} ms/tile, {} source calls) from {spec}",
        a.cache.display(),
        count(st.candidates, "tile"),
        if levels.min == levels.max {
            format!("level {}", levels.min)
        } else {
            format!("levels {}-{}", levels.min, levels.max)
        },
        st.rendered,
        st.bytes,
        st.empty,
        st.failed,
        st.skipped_stored,
        st.kept,
        st.seconds,
        st.seconds * 1e3 / made.max(1) as f64,
        r.stats().source_calls
    );
    Ok(if st.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The tiles of a jobs' [`Area`] as a render batch's filter (`render --aoi`): the same rule as
/// `delete --aoi` and `export --aoi` ([`Area::takes_tile`]).
#[derive(Debug)]
struct AreaTiles {
    area: Area,
    /// Tile size in pixels (conf.xml's TileCols × TileRows).
    width: u32,
    height: u32,
}

impl TileFilter for AreaTiles {
    fn block(&self, env: &crate::format::conf::Envelope) -> BlockCover {
        match self.area.block(env) {
            Coverage::Outside => BlockCover::Outside,
            Coverage::Inside => BlockCover::Inside,
            Coverage::Partial => BlockCover::Partial,
        }
    }
    fn tile(&self, env: &crate::format::conf::Envelope) -> bool {
        self.area.takes_tile(env, self.width, self.height)
    }
}

/// With `--metrics ADDR`: serves the job's progress (`bar`'s length and position) and, for
/// `render`, the renderer's counters on `/metrics` while the job runs
/// ([`super::metrics::job_page`]). Errors: the address cannot be listened on.
fn job_metrics(
    addr: Option<&str>,
    job: &'static str,
    cache: &Path,
    bar: ProgressBar,
    render: Option<Arc<Renderer>>,
) -> anyhow::Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    let cache = cache.display().to_string();
    let started = std::time::Instant::now();
    super::metrics::serve(addr, move || {
        super::metrics::job_page(&super::metrics::JobSample {
            job,
            cache: &cache,
            planned: bar.length().unwrap_or(0),
            done: bar.position(),
            elapsed: started.elapsed().as_secs(),
            render: render.as_ref().map(|r| r.stats()),
        })
    })
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} tiles  {per_sec}  {elapsed_precise}")
            .unwrap(),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The job options of `a`, for source `c` (named `src`): `--levels` must name at least one level
/// the source has (as `--scales` must name its scales), or the job would copy nothing and say
/// "0 tiles".
/// `--extent` (carried from `--extent-crs` into the cache's spatial reference) and `--aoi` (read
/// and carried likewise) of a command; says on standard error that the area wins when both are
/// given. Errors name the AOI file or the unknown EPSG code.
fn extent_and_aoi(
    extent: Option<crate::format::conf::Envelope>,
    extent_crs: Option<u32>,
    aoi: Option<&Path>,
    c: &Cache,
) -> anyhow::Result<(Option<crate::format::conf::Envelope>, Option<Aoi>)> {
    let extent = match (extent, extent_crs) {
        (Some(e), Some(crs)) => Some(crate::jobs::selection::extent_in_cache(
            &e,
            crs,
            c.scheme(),
        )?),
        (e, _) => e,
    };
    let aoi = aoi
        .map(|p| Aoi::from_geojson_file(p, c.scheme()))
        .transpose()?;
    if aoi.is_some() && extent.is_some() {
        eprintln!("bundlefs: both --aoi and --extent given: the area of interest wins");
    }
    Ok((extent, aoi))
}

/// `--levels` must meet a level the cache has; the error names the levels it has.
fn check_levels_meet(r: &LevelRange, c: &Cache, path: &Path) -> anyhow::Result<()> {
    let have = c.levels()?;
    if !have.iter().any(|l| r.contains(*l)) {
        bail!(
            "--levels {}: {} has no level in that range; its levels are: {}",
            range_text(r),
            path.display(),
            levels_text(&have)
        );
    }
    Ok(())
}

fn job_options(a: &JobArgs, c: &Cache, src: &Path) -> anyhow::Result<JobOptions> {
    let levels = match (&a.select.levels, &a.select.scales) {
        (_, Some(scales)) => LevelSelect::Scales(scales.clone()),
        (Some(r), None) => {
            check_levels_meet(r, c, src)?;
            LevelSelect::Range(*r)
        }
        (None, None) => LevelSelect::Range(LevelRange::ALL),
    };
    let s = &a.select;
    let (extent, aoi) = extent_and_aoi(s.extent, s.extent_crs, s.aoi.as_deref(), c)?;
    let opts = JobOptions {
        levels,
        extent,
        aoi,
        mode: a.mode.into(),
        background: a.background.map(|c| c.0),
        sync: !a.no_sync,
        scheme_of_dest: a.scheme_of_dest,
        skip_unreadable: a.skip_unreadable,
        shard: a.shard,
    };
    crate::jobs::selection::check_selection_meets(c, &opts)?;
    Ok(opts)
}

/// `--levels` of a render batch must name levels of the tiling scheme (the tiles need not exist:
/// rendering makes them).
fn check_levels_in_scheme(c: &Cache, path: &Path, r: &LevelRange) -> anyhow::Result<()> {
    let Some(s) = c.scheme() else {
        return Ok(()); // the renderer refuses a cache without conf.xml itself
    };
    let have: Vec<u8> = s.lods.iter().map(|l| l.level).collect();
    if !have.iter().any(|l| r.contains(*l)) {
        bail!(
            "--levels {}: the tiling scheme of {} has no level in that range; its levels are: {}",
            range_text(r),
            path.display(),
            levels_text(&have)
        );
    }
    Ok(())
}

/// `5`, `0-7`, `3-` or `-4`, as typed.
fn range_text(r: &LevelRange) -> String {
    match (r.min, r.max) {
        (a, b) if a == b => a.to_string(),
        (a, u8::MAX) => format!("{a}-"),
        (0, b) => format!("-{b}"),
        (a, b) => format!("{a}-{b}"),
    }
}

/// Levels as runs: `0-4, 7, 9-10`; `none` for none.
fn levels_text(levels: &[u8]) -> String {
    crate::jobs::engine::level_runs(levels)
}

/// Lists what `--skip-unreadable` left out (on stderr, naming each file and tile); exit 1 when
/// anything was, 0 otherwise.
fn left_out(s: &JobSummary) -> ExitCode {
    if s.unreadable.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "bundlefs: {} left out as unreadable (--skip-unreadable):",
        s.unreadable.len()
    );
    for u in &s.unreadable {
        eprintln!("  {}", crate::jobs::package::shown(u));
    }
    ExitCode::from(1)
}

fn print_summary(
    verb: &str,
    s: &JobSummary,
    src: &Path,
    c: &Cache,
    dest: &Path,
    to: &str,
) -> anyhow::Result<()> {
    outln!(
        "{verb} {} ({} bytes written, {}) from {} ({}) to {} ({to}) in {:.2} s ({:.0} tiles/s)",
        count(s.tiles_written, "tile"),
        s.bytes_written,
        count(s.bundles, "bundle"),
        src.display(),
        c.storage_name(),
        dest.display(),
        s.seconds,
        s.tiles_read as f64 / s.seconds.max(1e-9)
    );
    outln!(
        "tiles read {} ({} bytes), written {} (copied {}, clipped {}, merged {}), unchanged {}, skipped {} (outside the selection){}",
        s.tiles_read,
        s.bytes_read,
        s.tiles_written,
        s.tiles_copied,
        s.tiles_clipped,
        s.tiles_merged,
        s.tiles_unchanged,
        s.tiles_skipped,
        if s.unreadable.is_empty() {
            String::new()
        } else {
            format!(
                "; left out as unreadable: {} (tiles or whole bundles, listed below)",
                s.unreadable.len()
            )
        }
    );
    for (side, c) in [
        ("source", &s.source_requests),
        ("destination", &s.dest_requests),
    ] {
        if let Some(c) = c {
            outln!("{side} store requests: {c}");
        }
    }
    Ok(())
}

/// Progress on stderr when it is a terminal (tiles/s and ETA), nothing otherwise.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} tiles  {per_sec}  elapsed {elapsed}  ETA {eta}",
            )
            .unwrap(),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

fn build_scheme(
    scheme: &str,
    levels: LevelRange,
    format: Option<TileFormat>,
) -> anyhow::Result<TileScheme> {
    let mut s = if scheme == "web-mercator" {
        if levels.max > 23 {
            bail!("web-mercator has levels 0-23; got up to {}", levels.max);
        }
        TileScheme::web_mercator(levels.max, format.clone().unwrap_or(TileFormat::Png))
    } else {
        let bytes = std::fs::read(scheme)
            .with_context(|| format!("{scheme}: cannot read tiling scheme"))?;
        let conf =
            TileScheme::parse_conf_xml(&bytes).map_err(|e| anyhow::anyhow!("{scheme}: {e}"))?;
        conf.scheme
    };
    s.lods.retain(|l| levels.contains(l.level));
    if s.lods.is_empty() {
        bail!(
            "no levels of the scheme fall in {}-{}",
            levels.min,
            levels.max
        );
    }
    // Without --format a scheme file keeps its own format and quality.
    if let Some(format) = format {
        if s.tile_format != format {
            s.compression_quality = if format == TileFormat::Jpeg || format == TileFormat::Mixed {
                75
            } else {
                0
            };
        }
        s.tile_format = format;
    }
    s.storage = StorageFormat::CompactV2;
    s.packet_size = 128;
    Ok(s)
}

/// Stats of one level; when a bundle cannot be read (cut short inside its index), the level's
/// other bundles are counted one by one and the broken one is noted in `broken` (naming it).
fn level_stats_salvaged(c: &Cache, l: u8, broken: &mut Vec<String>) -> anyhow::Result<LevelStats> {
    let whole = match c.level_stats(l) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let ids = match c.bundles(l) {
        Ok(ids) => ids,
        Err(_) => return Err(whole.into()),
    };
    let mut s = LevelStats::default();
    for id in ids {
        match c.bundle(id) {
            Ok(Some(b)) => {
                s.bundles += 1;
                for (_, size) in b.slots() {
                    s.tiles += 1;
                    s.tile_bytes += u64::from(size);
                }
                s.file_bytes += b.file_bytes();
                s.dead_bytes += b.dead_bytes();
            }
            Ok(None) => {}
            Err(e) => broken.push(crate::jobs::package::shown(&e.to_string())),
        }
    }
    if broken.is_empty() {
        // Not a bundle of its own: the level's error stands.
        return Err(whole.into());
    }
    Ok(s)
}

fn info_of(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let src = Source::open(path)?;
    let c = src.cache();
    let mut levels = Vec::new();
    let mut broken: Vec<String> = Vec::new();
    for l in c.levels()? {
        let st = level_stats_salvaged(c, l, &mut broken)?;
        if st.broken > 0 {
            broken.push(format!(
                "level {l}: {} whose index entries point past the end of their bundle (cut \
                 short?); `bundlefs verify` names them",
                count(st.broken, "tile")
            ));
        }
        levels.push((l, st));
    }
    let total = levels.iter().fold(LevelStats::default(), |mut a, (_, s)| {
        a.bundles += s.bundles;
        a.tiles += s.tiles;
        a.tile_bytes += s.tile_bytes;
        a.file_bytes += s.file_bytes;
        a.dead_bytes += s.dead_bytes;
        a
    });
    let scheme = c.scheme();
    // A package is shown under its own name, not the folder it was unpacked to.
    let (shown, kind) = match &src {
        Source::Package(_) => (path.to_path_buf(), "tile package".to_string()),
        Source::Folder(c) if c.ready_to_serve().is_some() => {
            (c.root().to_path_buf(), "ready-to-serve layout".to_string())
        }
        Source::Folder(c) if c.kind() == crate::cache::StorageKind::Mbtiles => {
            (c.root().to_path_buf(), "MBTiles file".to_string())
        }
        Source::Folder(c) if c.kind() == crate::cache::StorageKind::Geopackage => {
            (c.root().to_path_buf(), "GeoPackage".to_string())
        }
        Source::Folder(c) if c.kind() == crate::cache::StorageKind::Xyz => {
            (c.root().to_path_buf(), "XYZ folder".to_string())
        }
        Source::Folder(c) if c.kind() == crate::cache::StorageKind::Tms => {
            (c.root().to_path_buf(), "TMS folder".to_string())
        }
        Source::Folder(c) if c.kind() == crate::cache::StorageKind::Pmtiles => {
            (c.root().to_path_buf(), "PMTiles file".to_string())
        }
        Source::Folder(c) => (c.root().to_path_buf(), format!("{:?} layout", c.layout())),
    };
    if as_json {
        let v = json!({
            "path": shown,
            "package": matches!(src, Source::Package(_)),
            "layout": match c.ready_to_serve() {
                Some(_) => "ReadyToServe".to_string(),
                None => format!("{:?}", c.layout()),
            },
            "storage": c.storage_name(),
            "scheme": scheme.map(|s| json!({
                "wkid": s.wkid, "latestWkid": s.latest_wkid,
                "origin": [s.origin_x, s.origin_y],
                "tileSize": [s.tile_cols, s.tile_rows], "dpi": s.dpi,
                "format": s.tile_format.name(), "compressionQuality": s.compression_quality,
                "lods": s.lods.iter().map(|l| json!({"level": l.level, "scale": l.scale, "resolution": l.resolution})).collect::<Vec<_>>(),
            })),
            "extent": c.extent().map(|e| [e.xmin, e.ymin, e.xmax, e.ymax]),
            "levels": levels.iter().map(|(l, s)| json!({
                "level": l, "bundles": s.bundles, "tiles": s.tiles, "tileBytes": s.tile_bytes,
                "fileBytes": s.file_bytes, "deadBytes": s.dead_bytes,
            })).collect::<Vec<_>>(),
            "total": {"bundles": total.bundles, "tiles": total.tiles, "tileBytes": total.tile_bytes,
                      "fileBytes": total.file_bytes, "deadBytes": total.dead_bytes},
            "broken": broken,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if broken.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    outln!("cache:    {} ({kind})", shown.display());
    outln!("storage:  {}", c.kind());
    match scheme {
        Some(s) => {
            let sr = match (s.wkid, s.latest_wkid) {
                (Some(a), Some(b)) if a != b => format!("WKID {a} (latest {b})"),
                (Some(a), _) => format!("WKID {a}"),
                _ => "WKT only".to_string(),
            };
            outln!(
                "scheme:   {sr}, origin ({}, {}), {}x{} px, {} DPI",
                s.origin_x,
                s.origin_y,
                s.tile_cols,
                s.tile_rows,
                s.dpi
            );
            if matches!(s.tile_format, TileFormat::Jpeg | TileFormat::Mixed) {
                outln!(
                    "format:   {} (quality {})",
                    s.tile_format.name(),
                    s.compression_quality
                );
            } else {
                outln!("format:   {}", s.tile_format.name());
            }
            let (lo, hi) = (
                s.lods.first().map_or(0, |l| l.level),
                s.lods.last().map_or(0, |l| l.level),
            );
            outln!("LODs:     {} (levels {lo}-{hi})", s.lods.len());
        }
        None => outln!("scheme:   none (no conf.xml)"),
    }
    if let Some(e) = c.extent() {
        outln!("extent:   {} {} {} {}", e.xmin, e.ymin, e.xmax, e.ymax);
    }
    // Tile bytes: what the tiles hold (as `delete` and the job summaries count them); file
    // bytes: what the cache's files take on disk (bundles with their indexes, dead space).
    outln!(
        "{:>5} {:>18} {:>14} {:>8} {:>10} {:>14} {:>14} {:>12}",
        "level",
        "scale",
        "resolution",
        "bundles",
        "tiles",
        "tile bytes",
        "file bytes",
        "dead bytes"
    );
    // Every LOD of the scheme has a row (the scales a user looks for, also in an empty cache),
    // plus any stored level the scheme lacks.
    let mut rows: Vec<(u8, LevelStats)> = scheme
        .map(|sc| {
            sc.lods
                .iter()
                .map(|l| (l.level, LevelStats::default()))
                .collect()
        })
        .unwrap_or_default();
    for (l, st) in &levels {
        match rows.iter_mut().find(|(r, _)| r == l) {
            Some(row) => row.1 = *st,
            None => rows.push((*l, *st)),
        }
    }
    rows.sort_by_key(|r| r.0);
    for (l, s) in &rows {
        let lod = scheme.and_then(|sc| sc.lod(*l));
        outln!(
            "{:>5} {:>18} {:>14} {:>8} {:>10} {:>14} {:>14} {:>12}",
            l,
            lod.map_or("-".into(), |x| format!("{:.3}", x.scale)),
            lod.map_or("-".into(), |x| format!("{:.6}", x.resolution)),
            s.bundles,
            s.tiles,
            s.tile_bytes,
            s.file_bytes,
            s.dead_bytes
        );
    }
    outln!(
        "{:>5} {:>18} {:>14} {:>8} {:>10} {:>14} {:>14} {:>12}",
        "total",
        "",
        "",
        total.bundles,
        total.tiles,
        total.tile_bytes,
        total.file_bytes,
        total.dead_bytes
    );
    for b in &broken {
        outln!(
            "BROKEN {b} (not counted above; `bundlefs export --skip-unreadable` salvages the rest)"
        );
    }
    Ok(if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
