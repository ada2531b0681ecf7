//! What each subcommand does, in terms of the library.

use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::{Command, JobArgs, RenderArgs};
use std::path::Path;

use crate::cache::{Cache, LevelStats};
use crate::format::conf::{Envelope, StorageFormat, TileFormat, TileScheme};
use crate::format::levels::LevelRange;
use crate::format::TileAddr;
use crate::jobs::aoi::Aoi;
use crate::jobs::engine::{JobOptions, JobSummary, LevelSelect, Progress, Target};
use crate::jobs::export::export_job;
use crate::jobs::import::import_job;
use crate::jobs::package::{is_package, open_package, update_package, Unpacked};
use crate::jobs::verify::verify;
use crate::render::batch::{render_batch, BatchOptions};
use crate::render::label::LabelSource;
use crate::render::{HttpOptions, Keep, RenderOptions, Renderer, SourceSpec, TileSource};
use std::sync::Arc;

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Info { cache, json } => info(&cache, json),
        Command::Verify { cache, decode } => {
            // A package is checked as unpacked (problems then name the unpacked bundle files).
            let src = Source::open(&cache)?;
            let r = verify(src.cache(), decode)?;
            for p in &r.problems {
                println!("BAD {p}");
            }
            for w in &r.warnings {
                println!("WARN {w}");
            }
            println!(
                "{}: {} levels, {} bundles, {} tiles checked{}; {} problem(s), {} warning(s)",
                cache.display(),
                r.levels,
                r.bundles,
                r.tiles,
                if decode { " and decoded" } else { "" },
                r.problems.len(),
                r.warnings.len()
            );
            Ok(if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Create {
            dir,
            scheme,
            levels,
            format,
        } => {
            let s = build_scheme(&scheme, levels, format.into())?;
            Cache::create(&dir, &s, None)?;
            println!(
                "created {} ({} levels, {}, compact-v2)",
                dir.display(),
                s.lods.len(),
                s.tile_format.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            src,
            dest,
            storage,
            job,
        } => {
            let source = Source::open(&src)?;
            let opts = job_options(&job, source.cache())?;
            let target: Target = storage.into();
            let bar = Bar::new();
            // A folder is export's, a package is package's.
            let s = match target {
                Target::Storage(st) => export_job(source.cache(), &dest, st, &opts, &bar)?,
                Target::Tpkx => update_package(source.cache(), &dest, &opts, &bar, false)?,
            };
            bar.0.finish_and_clear();
            crate::jobs::selection::check_matched(source.cache(), &opts, &s)?;
            let to = match target {
                Target::Storage(st) => st.to_string(),
                Target::Tpkx => "tpkx".to_string(),
            };
            print_summary("exported", &s, &src, source.cache(), &dest, &to);
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { src, dest, job } => {
            let source = Source::open(&src)?;
            let opts = job_options(&job, source.cache())?;
            let bar = Bar::new();
            // A cache folder is import's, a package file (rewritten whole) is package's.
            let s = if dest.is_file() {
                update_package(source.cache(), &dest, &opts, &bar, true)?
            } else {
                import_job(source.cache(), &dest, &opts, &bar)?
            };
            bar.0.finish_and_clear();
            crate::jobs::selection::check_matched(source.cache(), &opts, &s)?;
            print_summary(
                "imported",
                &s,
                &src,
                source.cache(),
                &dest,
                "existing cache",
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount {
            cache,
            mountpoint,
            options,
            daemon,
            ttl,
            threads,
            recheck,
            log_file,
            write_buffer,
            import_mode,
            flush_idle,
            source,
            keep_rendered,
            render_timeout,
            render_jobs,
            proxy,
            list_renderable,
            supertile,
            supertile_buffer,
        } => {
            let secs = |v: f64, what: &str| -> anyhow::Result<std::time::Duration> {
                std::time::Duration::try_from_secs_f64(v)
                    .map_err(|_| anyhow::anyhow!("--{what} must be >= 0 seconds"))
            };
            super::mount::run(super::mount::MountArgs {
                cache,
                mountpoint,
                options,
                daemon,
                ttl: secs(ttl, "ttl")?,
                threads,
                recheck: secs(recheck, "recheck")?,
                log_file,
                write_buffer,
                import_mode,
                flush_idle: secs(flush_idle, "flush-idle")?,
                source,
                keep_rendered,
                render_timeout: secs(render_timeout, "render-timeout")?,
                render_jobs,
                proxy,
                list_renderable,
                supertile,
                supertile_buffer,
            })
        }
        Command::Compact { cache, min_dead } => {
            let t = min_dead.trim();
            let frac = match t.strip_suffix('%') {
                Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
                None => t.parse::<f64>(),
            }
            .ok()
            .filter(|v| (0.0..=1.0).contains(v))
            .ok_or_else(|| {
                anyhow::anyhow!("--min-dead {min_dead:?}: want a share like 20% or 0.2")
            })?;
            let c = open_folder(&cache, "compact")?;
            let s = crate::jobs::compact::compact(&c, frac)?;
            println!(
                "{}: {} bundles checked, {} rewritten, {} -> {} bytes",
                cache.display(),
                s.bundles_checked,
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
        Command::Render(a) => render(a),
        Command::Sample {
            dir,
            levels,
            format,
        } => {
            if levels.max > 10 {
                bail!(
                    "sample levels go up to 10 (4^level tiles each); got {}",
                    levels.max
                );
            }
            let format: TileFormat = format.into();
            if format == TileFormat::Mixed {
                bail!("a sample cache needs one image format (PNG… or JPEG), not MIXED");
            }
            let s = TileScheme::web_mercator(levels.max, format);
            let c = Cache::create(&dir, &s, None)?;
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
                let refs: Vec<(TileAddr, &[u8])> =
                    tiles.iter().map(|(t, b)| (*t, b.as_slice())).collect();
                n += c.write_tiles(&refs)?.tiles as u64;
            }
            println!(
                "wrote sample cache {} ({} labelled tiles, levels {}-{})",
                dir.display(),
                n,
                levels.min,
                levels.max
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render(a: RenderArgs) -> anyhow::Result<ExitCode> {
    let spec: SourceSpec = a.source.parse()?;
    let timeout = std::time::Duration::try_from_secs_f64(a.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--timeout must be > 0 seconds"))?;
    let cache = Arc::new(open_folder(&a.cache, "render")?);
    let http = HttpOptions {
        timeout,
        proxy: a.proxy.clone(),
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
    if let Some(t) = &a.tile {
        let t = parse_tile(t)?;
        let keep = if a.keep { Keep::Cache } else { Keep::No };
        let r = Renderer::new(cache, src, keep, opts)?;
        let started = std::time::Instant::now();
        let bytes = r.get(t)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match a.output.as_deref() {
            Some(p) if p.as_os_str() == "-" => {
                std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes)?
            }
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
    let mut extent = a.extent.as_deref().map(parse_extent).transpose()?;
    if let (Some(e), Some(crs)) = (&mut extent, a.extent_crs) {
        *e = crate::jobs::selection::extent_in_cache(e, crs, cache.scheme())?;
    }
    let r = Renderer::new(cache, src, Keep::No, opts)?;
    let bo = BatchOptions {
        levels,
        extent,
        overwrite: a.overwrite,
        keep: a.keep,
        jobs: a.jobs.max(1),
        max_tiles: a.max_tiles,
        fine_first: spec == SourceSpec::Resample,
    };
    let bar = progress_bar();
    let st = render_batch(&r, &bo, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let made = st.rendered + st.empty + st.failed;
    println!(
        "{}: {} tiles in levels {}-{}: {} rendered ({} bytes), {} empty, {} failed, {} already stored, {} kept; {:.2} s ({:.1} ms/tile, {} source calls) from {spec}",
        a.cache.display(),
        st.candidates,
        levels.min,
        levels.max,
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

/// `L/R/C` in decimal, or `Lnn/Rxxxxxxxx/Cxxxxxxxx[.ext]` as in exploded caches (hex row/col).
fn parse_tile(s: &str) -> anyhow::Result<TileAddr> {
    let bad =
        || anyhow::anyhow!("--tile {s:?}: want L/R/C (e.g. 3/2/5) or L03/R00000002/C00000005");
    let parts: Vec<&str> = s.trim().trim_matches('/').split('/').collect();
    let [l, r, c] = parts[..] else {
        return Err(bad());
    };
    let c = c.split('.').next().unwrap_or(c);
    let named = |v: &str, p: char| {
        v.strip_prefix(p)
            .or_else(|| v.strip_prefix(p.to_ascii_lowercase()))
            .map(str::to_string)
    };
    let t = match (named(l, 'L'), named(r, 'R'), named(c, 'C')) {
        (Some(l), Some(r), Some(c)) => TileAddr::new(
            l.parse().map_err(|_| bad())?,
            u32::from_str_radix(&r, 16).map_err(|_| bad())?,
            u32::from_str_radix(&c, 16).map_err(|_| bad())?,
        ),
        (None, None, None) => TileAddr::new(
            l.parse().map_err(|_| bad())?,
            r.parse().map_err(|_| bad())?,
            c.parse().map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    };
    Ok(t)
}

fn parse_extent(s: &str) -> anyhow::Result<Envelope> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--extent {s:?}: want XMIN,YMIN,XMAX,YMAX numbers"))?;
    match v[..] {
        [xmin, ymin, xmax, ymax] if xmin < xmax && ymin < ymax => Ok(Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        }),
        _ => bail!("--extent {s:?}: want XMIN,YMIN,XMAX,YMAX with XMIN < XMAX and YMIN < YMAX"),
    }
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

/// Opens a cache folder for a command that changes it in place or serves it (`what`): a tile
/// package is refused with the way to get a folder from it.
fn open_folder(path: &Path, what: &str) -> anyhow::Result<Cache> {
    refuse_package(path, what)?;
    Ok(Cache::open(path)?)
}

/// Refuses a tile package where a command (`what`) needs a cache folder, naming the way to get
/// one.
pub(crate) fn refuse_package(path: &Path, what: &str) -> anyhow::Result<()> {
    if path.is_file() && is_package(path) {
        anyhow::bail!(
            "{}: a tile package; {what} works on a cache folder. Make one with \
             `bundlefs export {} DIR --storage compact-v2`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// A source cache: a folder, or a package unpacked for the job.
enum Source {
    Folder(Cache),
    Package(Unpacked),
}

impl Source {
    fn open(path: &Path) -> anyhow::Result<Source> {
        Ok(if is_package(path) {
            Source::Package(open_package(path)?)
        } else {
            Source::Folder(Cache::open(path)?)
        })
    }
    fn cache(&self) -> &Cache {
        match self {
            Source::Folder(c) => c,
            Source::Package(p) => &p.cache,
        }
    }
}

fn parse_colour(s: &str) -> anyhow::Result<[u8; 3]> {
    let t = s.trim().trim_start_matches('#');
    let bad = || anyhow::anyhow!("--background {s:?}: want RRGGBB, #RRGGBB or R,G,B");
    if t.contains(',') {
        let v: Vec<u8> = t
            .split(',')
            .map(|p| p.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        return <[u8; 3]>::try_from(v).map_err(|_| bad());
    }
    if t.len() != 6 || !t.is_ascii() {
        return Err(bad());
    }
    let byte = |i: usize| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| bad());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

fn job_options(a: &JobArgs, src: &Cache) -> anyhow::Result<JobOptions> {
    let levels = match (&a.levels, &a.scales) {
        (_, Some(scales)) => LevelSelect::Scales(scales.clone()),
        (Some(r), None) => LevelSelect::Range(*r),
        (None, None) => LevelSelect::Range(LevelRange::ALL),
    };
    let extent = a.extent.as_ref().map(|v| Envelope {
        xmin: v[0],
        ymin: v[1],
        xmax: v[2],
        ymax: v[3],
    });
    let extent = match (extent, a.extent_crs) {
        (Some(e), Some(crs)) => Some(crate::jobs::selection::extent_in_cache(
            &e,
            crs,
            src.scheme(),
        )?),
        (e, _) => e,
    };
    let aoi = a
        .aoi
        .as_deref()
        .map(|p| Aoi::from_geojson_file(p, src.scheme()))
        .transpose()?;
    if aoi.is_some() && extent.is_some() {
        eprintln!("bundlefs: both --aoi and --extent given: the area of interest wins");
    }
    let opts = JobOptions {
        levels,
        extent,
        aoi,
        mode: a.mode.into(),
        background: a.background.as_deref().map(parse_colour).transpose()?,
        sync: !a.no_sync,
    };
    crate::jobs::selection::check_selection_meets(src, &opts)?;
    Ok(opts)
}

fn print_summary(verb: &str, s: &JobSummary, src: &Path, c: &Cache, dest: &Path, to: &str) {
    println!(
        "{verb} {} tiles ({} bytes, {} bundles) from {} ({}) to {} ({to}) in {:.2} s ({:.0} tiles/s)",
        s.tiles_written,
        s.bytes_written,
        s.bundles,
        src.display(),
        c.storage(),
        dest.display(),
        s.seconds,
        s.tiles_read as f64 / s.seconds.max(1e-9)
    );
    println!(
        "tiles read {} ({} bytes), written {} (copied {}, clipped {}, merged {}), unchanged {}, skipped {}",
        s.tiles_read,
        s.bytes_read,
        s.tiles_written,
        s.tiles_copied,
        s.tiles_clipped,
        s.tiles_merged,
        s.tiles_unchanged,
        s.tiles_skipped
    );
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
    format: TileFormat,
) -> anyhow::Result<TileScheme> {
    let mut s = if scheme == "web-mercator" {
        if levels.max > 23 {
            bail!("web-mercator has levels 0-23; got up to {}", levels.max);
        }
        TileScheme::web_mercator(levels.max, format.clone())
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
    if s.tile_format != format {
        s.compression_quality = if format == TileFormat::Jpeg || format == TileFormat::Mixed {
            75
        } else {
            0
        };
    }
    s.tile_format = format;
    s.storage = StorageFormat::CompactV2;
    s.packet_size = 128;
    Ok(s)
}

fn info(path: &std::path::Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let src = Source::open(path)?;
    let c = src.cache();
    let mut levels = Vec::new();
    for l in c.levels()? {
        levels.push((l, c.level_stats(l)?));
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
        Source::Folder(c) => (c.root().to_path_buf(), format!("{:?} layout", c.layout())),
    };
    if as_json {
        let v = json!({
            "path": shown,
            "package": matches!(src, Source::Package(_)),
            "layout": format!("{:?}", c.layout()),
            "storage": c.storage().to_string(),
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
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("cache:    {} ({kind})", shown.display());
    println!("storage:  {}", c.storage());
    match scheme {
        Some(s) => {
            let sr = match (s.wkid, s.latest_wkid) {
                (Some(a), Some(b)) if a != b => format!("WKID {a} (latest {b})"),
                (Some(a), _) => format!("WKID {a}"),
                _ => "WKT only".to_string(),
            };
            println!(
                "scheme:   {sr}, origin ({}, {}), {}x{} px, {} DPI",
                s.origin_x, s.origin_y, s.tile_cols, s.tile_rows, s.dpi
            );
            println!(
                "format:   {} (quality {})",
                s.tile_format.name(),
                s.compression_quality
            );
            let (lo, hi) = (
                s.lods.first().map_or(0, |l| l.level),
                s.lods.last().map_or(0, |l| l.level),
            );
            println!("LODs:     {} (levels {lo}-{hi})", s.lods.len());
        }
        None => println!("scheme:   none (no conf.xml)"),
    }
    if let Some(e) = c.extent() {
        println!("extent:   {} {} {} {}", e.xmin, e.ymin, e.xmax, e.ymax);
    }
    println!(
        "{:>5} {:>18} {:>14} {:>8} {:>10} {:>14} {:>12}",
        "level", "scale", "resolution", "bundles", "tiles", "bytes", "dead bytes"
    );
    for (l, s) in &levels {
        let lod = scheme.and_then(|sc| sc.lod(*l));
        println!(
            "{:>5} {:>18} {:>14} {:>8} {:>10} {:>14} {:>12}",
            l,
            lod.map_or("-".into(), |x| format!("{:.3}", x.scale)),
            lod.map_or("-".into(), |x| format!("{:.6}", x.resolution)),
            s.bundles,
            s.tiles,
            s.file_bytes,
            s.dead_bytes
        );
    }
    println!(
        "{:>5} {:>18} {:>14} {:>8} {:>10} {:>14} {:>12}",
        "total", "", "", total.bundles, total.tiles, total.file_bytes, total.dead_bytes
    );
    Ok(ExitCode::SUCCESS)
}
