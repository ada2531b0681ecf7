//! `bundlefs serve [NAME=]CACHE… --listen ADDR`: the caches' tiles over HTTP (ArcGIS REST, WMTS,
//! XYZ; [`crate::serve`]) until SIGINT or SIGTERM. Opening the caches, naming them, `--metrics`
//! and the stop signals are here; answering requests is the serve layer's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{SigSet, Signal};

use super::mount::{source_renderer, RenderFlags};
use crate::cache::Cache;
use crate::format::values::Seconds;
use crate::jobs::package::{is_package, open_package};
use crate::render::renderer::Keep;
use crate::serve::{Layer, ServeOptions, Service};

/// Arguments of `bundlefs serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Caches to serve, each a cache folder (or its conf.xml), a .tpkx/.tpk package, an
    /// .mbtiles file, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX; NAME=CACHE names it in URLs
    /// (default: its folder or file name without extension).
    #[arg(required = true, value_name = "[NAME=]CACHE")]
    pub caches: Vec<String>,
    /// Address to listen on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Connections served at once, each by a thread of its own; one more is answered 503.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_connections: usize,
    /// Seconds clients and proxies may keep a tile (Cache-Control: public, max-age=N).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub max_age: u32,
    /// A tile file sent (200) for tiles the cache lacks, instead of a 404.
    #[arg(long, value_name = "FILE")]
    pub blank_tile: Option<PathBuf>,
    /// Render tiles the cache lacks from this source, as `mount --source` does (one cache only).
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// With --source: store rendered tiles in the cache's bundles.
    #[arg(long, requires = "source")]
    pub keep_rendered: bool,
    /// Seconds allowed for one request to the source.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub render_timeout: Seconds,
    /// Renders at once (requests to the source in flight).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub render_jobs: usize,
    /// HTTP proxy URL for the source, or "env" for HTTP_PROXY/HTTPS_PROXY/NO_PROXY (default: none).
    #[arg(long, value_name = "URL|env")]
    pub proxy: Option<String>,
    /// With --source arcgis: or wms:, pixels a side of the block of tiles drawn in one request.
    #[arg(long, value_name = "PX", default_value_t = crate::render::supertile::MOUNT_PX)]
    pub supertile: u32,
    /// Pixels drawn around each supertile and cut away afterwards (labels near its edges).
    #[arg(long, value_name = "PX", default_value_t = 0)]
    pub supertile_buffer: u32,
    /// Serve the counters in the Prometheus text format on http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Log to FILE (appended; reopened on SIGHUP, for logrotate) instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// `NAME=CACHE` split, or `CACHE` with the name it gets by default. A `=` counts only when what
/// precedes it holds no `/` (a path or URL may hold `=`).
pub fn name_and_cache(arg: &str) -> (String, String) {
    if let Some((n, c)) = arg.split_once('=') {
        if !n.contains('/') && !n.is_empty() {
            return (n.to_string(), c.to_string());
        }
    }
    (default_name(arg), arg.to_string())
}

/// A cache's default name: its folder or file name without extension (the folder of a
/// conf.xml or root.json; the last part of a store prefix).
fn default_name(cache: &str) -> String {
    let p = Path::new(cache.trim_end_matches('/'));
    let named_file = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.eq_ignore_ascii_case("conf.xml") || n.eq_ignore_ascii_case("root.json"));
    let p = if named_file {
        p.parent().unwrap_or(p)
    } else {
        p
    };
    let p = if p.as_os_str().is_empty() || p == Path::new(".") {
        std::env::current_dir().unwrap_or_default()
    } else {
        p.to_path_buf()
    };
    let file = p.extension().is_some() && !p.is_dir();
    let name = if file { p.file_stem() } else { p.file_name() };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `bundlefs serve` until SIGINT or SIGTERM; then stops taking requests, lets the ones in
/// hand finish (10 s at most), and exits 0. As a daemon: it logs to standard error (a unit's
/// journal) or `--log-file`, reopened on SIGHUP; it tells systemd READY=1 once it listens
/// (`Type=notify`, sd_notify(3)) and STOPPING=1 when asked to stop.
pub fn run(a: &ServeArgs) -> anyhow::Result<ExitCode> {
    // Blocked before any thread starts, so every thread inherits the mask and only the main
    // thread takes them (sigwait).
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGHUP);
    sigs.thread_block()
        .context("blocking SIGINT/SIGTERM/SIGHUP")?;
    if let Some(f) = &a.log_file {
        super::log::set(super::log::open_file(f)?);
    }
    if a.source.is_some() && a.caches.len() != 1 {
        bail!(
            "--source renders for one cache, and {} are given; serve the others from another \
             `bundlefs serve`",
            a.caches.len()
        );
    }
    let blank_tile = match &a.blank_tile {
        Some(f) => Some(Arc::new(
            std::fs::read(f).with_context(|| format!("--blank-tile {}", f.display()))?,
        )),
        None => None,
    };
    // Packages are unpacked for as long as the server runs.
    let mut unpacked = Vec::new();
    let mut layers = Vec::new();
    for arg in &a.caches {
        let (name, path) = name_and_cache(arg);
        let path = PathBuf::from(path);
        let cache = if is_package(&path) {
            let (c, dir) = open_package(&path)?.into_parts();
            unpacked.push(dir);
            c
        } else {
            Cache::open(&path)?
        };
        let cache = Arc::new(cache);
        let renderer = match &a.source {
            Some(spec) => {
                let keep = if a.keep_rendered {
                    Keep::Cache
                } else {
                    Keep::No
                };
                let flags = RenderFlags {
                    timeout: a.render_timeout.0,
                    proxy: a.proxy.clone(),
                    jobs: a.render_jobs,
                    supertile: a.supertile,
                    supertile_buffer: a.supertile_buffer,
                };
                Some(Arc::new(source_renderer(&cache, spec, keep, &flags)?))
            }
            None => None,
        };
        layers.push(Layer {
            name,
            cache,
            renderer,
        });
    }
    let listener = crate::serve::http::bind(&a.listen).map_err(anyhow::Error::msg)?;
    let addr = listener.addr.to_string();
    let base = format!("http://{addr}");
    let service = Service::new(
        layers,
        ServeOptions {
            max_age: a.max_age,
            blank_tile,
            base_url: base.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let service = Arc::new(service);
    if let Some(m) = &a.metrics {
        let (service, listen) = (service.clone(), addr.clone());
        super::metrics::serve(m, move || super::metrics::serve_page(&listen, &service))?;
    }
    let running = crate::serve::http::run(service.clone(), listener, a.max_connections)
        .context("starting the accept thread")?;
    {
        let mut out = std::io::stdout().lock();
        for l in service.layers() {
            let _ = writeln!(
                out,
                "serving {} at {base}/arcgis/rest/services/{}/MapServer ({})",
                l.name,
                l.name,
                l.cache.location()
            );
        }
        let _ = writeln!(
            out,
            "WMTS at {base}/wmts/1.0.0/WMTSCapabilities.xml; index at {base}/ \
             (pid {}; stop with SIGTERM or Ctrl-C)",
            std::process::id()
        );
        let _ = out.flush();
    }
    tracing::info!(
        "serving {} on {base} (log: {})",
        crate::error::count(service.layers().len() as u64, "cache"),
        super::log::shown()
    );
    super::mount::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving on {base}")),
    ]);
    let sig = loop {
        match sigs.wait().context("waiting for SIGINT/SIGTERM/SIGHUP")? {
            Signal::SIGHUP => match super::log::reopen() {
                Ok(()) => tracing::info!("SIGHUP: log reopened ({})", super::log::shown()),
                Err(e) => super::log::reopen_failed(&e),
            },
            sig => break sig,
        }
    };
    super::mount::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("{sig}: stopping; requests in hand are answered first");
    running.stop(Duration::from_secs(10));
    tracing::info!("stopped");
    drop(unpacked);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_argument_or_the_cache() {
        let n = |s: &str| name_and_cache(s);
        assert_eq!(n("w=/data/world"), ("w".into(), "/data/world".into()));
        assert_eq!(n("/data/world/"), ("world".into(), "/data/world/".into()));
        assert_eq!(n("/data/Usa.tpkx").0, "Usa");
        assert_eq!(n("/data/a.mbtiles").0, "a");
        assert_eq!(n("/data/world/conf.xml").0, "world");
        assert_eq!(n("s3://bucket/caches/roads").0, "roads");
        assert_eq!(
            n("/data/x=1/world"),
            ("world".into(), "/data/x=1/world".into())
        );
        assert_eq!(n("s3://b/p=1").1, "s3://b/p=1");
    }
}
