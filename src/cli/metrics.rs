//! `--metrics ADDR`: the counters of a mount in the Prometheus text exposition format (version
//! 0.0.4: `# HELP`, `# TYPE`, one sample per line) on `GET /metrics`. The names, all prefixed
//! `bundlefs_`, are listed in [`METRICS`] (and [`JOB_METRICS`] for `export`, `import` and
//! `render --metrics`) and in doc/operations.md; every sample of a mount carries a `mountpoint`
//! label, every sample of a job `job` and `cache` labels. The values are the same snapshot `bundlefs status` shows
//! (`fs::counters::Snapshot`).

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;

use super::status::Report;
use crate::render::renderer::RenderStats;

/// Every metric: name (without the `bundlefs_` prefix), type, help. A metric whose part of the
/// mount is absent (no write buffer, a local cache, no renderer) is left out of the page.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("up", "gauge", "1 while the daemon serves the mount"),
    (
        "uptime_seconds",
        "gauge",
        "Seconds since the mount went live",
    ),
    (
        "tiles_read_total",
        "counter",
        "Tile files read from their start",
    ),
    (
        "read_bytes_total",
        "counter",
        "Tile bytes handed to the kernel",
    ),
    (
        "tiles_written_total",
        "counter",
        "Tiles written through the mount and accepted",
    ),
    (
        "writes_refused_total",
        "counter",
        "Tiles written through the mount and refused, and files refused for their name",
    ),
    (
        "buffer_tiles",
        "gauge",
        "Changes waiting in the write buffer",
    ),
    (
        "buffer_bytes",
        "gauge",
        "Tile bytes waiting in the write buffer",
    ),
    ("buffer_budget_bytes", "gauge", "The write buffer's budget"),
    (
        "flushes_total",
        "counter",
        "Flushes of one bundle's changes stored",
    ),
    (
        "flush_failures_total",
        "counter",
        "Flushes of one bundle's changes that failed",
    ),
    (
        "failing_bundles",
        "gauge",
        "Bundles whose last flush failed, their tiles still waiting",
    ),
    (
        "flushed_tiles_total",
        "counter",
        "Changes stored by flushes",
    ),
    (
        "flushed_bytes_total",
        "counter",
        "Bytes written into bundles by flushes",
    ),
    (
        "store_gets_total",
        "counter",
        "GET requests to the object store (sidecars apart)",
    ),
    (
        "store_heads_total",
        "counter",
        "HEAD requests to the object store",
    ),
    (
        "store_puts_total",
        "counter",
        "Successful PUTs of bundles or tiles",
    ),
    (
        "store_conflicts_total",
        "counter",
        "Conditional PUTs refused (another writer first); each retried",
    ),
    (
        "store_received_bytes_total",
        "counter",
        "Bytes received from the object store",
    ),
    (
        "store_sent_bytes_total",
        "counter",
        "Bytes sent to the object store",
    ),
    (
        "store_disk_cache_hits_total",
        "counter",
        "Bundle indexes read from the on-disk index cache",
    ),
    (
        "store_sidecar_gets_total",
        "counter",
        "GETs of tile-times sidecars",
    ),
    (
        "store_sidecar_puts_total",
        "counter",
        "PUTs of tile-times sidecars",
    ),
    (
        "store_sidecar_conflicts_total",
        "counter",
        "Conditional PUTs of sidecars refused",
    ),
    (
        "render_source_calls_total",
        "counter",
        "Requests to the tile source, retries included",
    ),
    (
        "render_tiles_total",
        "counter",
        "Tiles rendered and accepted",
    ),
    (
        "render_empty_total",
        "counter",
        "Tiles the source had nothing for",
    ),
    (
        "render_failures_total",
        "counter",
        "Tiles whose render failed after every attempt",
    ),
    (
        "render_kept_total",
        "counter",
        "Rendered tiles stored in the bundles",
    ),
];

/// The samples of `r`, by metric name (without prefix).
fn samples(r: &Report) -> Vec<(&'static str, u64)> {
    let c = &r.counters;
    let mut v = vec![
        ("up", 1),
        ("uptime_seconds", r.uptime_seconds),
        ("tiles_read_total", c.tree.tiles_read),
        ("read_bytes_total", c.tree.bytes_read),
        ("tiles_written_total", c.tree.tiles_written),
        ("writes_refused_total", c.tree.writes_refused),
    ];
    if let Some(b) = &c.buffer {
        v.extend([
            ("buffer_tiles", b.waiting_tiles),
            ("buffer_bytes", b.waiting_bytes),
            ("buffer_budget_bytes", b.budget_bytes),
            ("flushes_total", b.flushes),
            ("flush_failures_total", b.flush_failures),
            ("failing_bundles", b.failing_bundles),
            ("flushed_tiles_total", b.tiles_flushed),
            ("flushed_bytes_total", b.bytes_flushed),
        ]);
    }
    if let Some(s) = &c.store {
        v.extend([
            ("store_gets_total", s.gets),
            ("store_heads_total", s.heads),
            ("store_puts_total", s.puts),
            ("store_conflicts_total", s.conflicts),
            ("store_received_bytes_total", s.bytes_down),
            ("store_sent_bytes_total", s.bytes_up),
            ("store_disk_cache_hits_total", s.disk_hits),
            ("store_sidecar_gets_total", s.sidecar_gets),
            ("store_sidecar_puts_total", s.sidecar_puts),
            ("store_sidecar_conflicts_total", s.sidecar_conflicts),
        ]);
    }
    if let Some(x) = &c.render {
        v.extend(render_samples(x));
    }
    v
}

/// The `render_*` samples of `x`.
fn render_samples(x: &RenderStats) -> [(&'static str, u64); 5] {
    [
        ("render_source_calls_total", x.source_calls),
        ("render_tiles_total", x.rendered),
        ("render_empty_total", x.empty),
        ("render_failures_total", x.failed),
        ("render_kept_total", x.kept),
    ]
}

/// A label value escaped as the text format wants (`\`, `"` and newline).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` page of `r`.
pub fn page(r: &Report) -> String {
    let mnt = label(&r.mountpoint.to_string_lossy());
    let have = samples(r);
    let mut out = String::new();
    for (name, kind, help) in METRICS {
        let Some((_, v)) = have.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP bundlefs_{name} {help}");
        let _ = writeln!(out, "# TYPE bundlefs_{name} {kind}");
        let _ = writeln!(out, "bundlefs_{name}{{mountpoint=\"{mnt}\"}} {v}");
    }
    out
}

/// Serves `GET /metrics` on `addr` (e.g. `127.0.0.1:9464`) with `page()`, on a thread of its
/// own; other paths get 404. Binding is done here, so an address in use is an error naming it.
pub fn serve(addr: &str, page: impl Fn() -> String + Send + Sync + 'static) -> anyhow::Result<()> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("--metrics {addr}: cannot listen: {e}"))?;
    let page = Arc::new(page);
    std::thread::Builder::new()
        .name("bundlefs-metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("");
                let resp = if path == "/metrics" {
                    tiny_http::Response::from_string(page()).with_header(
                        tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"text/plain; version=0.0.4; charset=utf-8"[..],
                        )
                        .expect("a valid header"),
                    )
                } else {
                    tiny_http::Response::from_string("bundlefs: only /metrics here\n")
                        .with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })
        .context("starting the metrics thread")?;
    Ok(())
}

/// The metrics of a long job (`export`, `import`, `render` with `--metrics`), besides the
/// `render_*` ones of [`METRICS`] for `render`: name (without `bundlefs_`), type, help.
pub const JOB_METRICS: &[(&str, &str, &str)] = &[
    (
        "job_tiles_planned",
        "gauge",
        "Tiles the job will take (export, import: what the selected bundles hold; render: 0 until known)",
    ),
    (
        "job_tiles_done_total",
        "counter",
        "Tiles the job has taken so far (read, or visited by render)",
    ),
    ("job_elapsed_seconds", "gauge", "Seconds since the job started"),
];

/// What a running job shows on `/metrics`.
pub struct JobSample<'a> {
    /// `export`, `import` or `render`.
    pub job: &'a str,
    /// The cache the job reads (export, import) or renders into.
    pub cache: &'a str,
    /// [`JOB_METRICS`]' values: planned, done, elapsed seconds.
    pub planned: u64,
    /// Tiles taken so far.
    pub done: u64,
    /// Seconds since the start.
    pub elapsed: u64,
    /// The renderer's counters (`render`).
    pub render: Option<RenderStats>,
}

/// The `/metrics` page of a running job: labels `job` and `cache` on every sample.
pub fn job_page(j: &JobSample) -> String {
    let labels = format!("job=\"{}\",cache=\"{}\"", label(j.job), label(j.cache));
    let mut have: Vec<(&str, u64)> = vec![
        ("job_tiles_planned", j.planned),
        ("job_tiles_done_total", j.done),
        ("job_elapsed_seconds", j.elapsed),
    ];
    if let Some(x) = &j.render {
        have.extend(render_samples(x));
    }
    let mut out = String::new();
    for (name, kind, help) in JOB_METRICS.iter().chain(METRICS) {
        let Some((_, v)) = have.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP bundlefs_{name} {help}");
        let _ = writeln!(out, "# TYPE bundlefs_{name} {kind}");
        let _ = writeln!(out, "bundlefs_{name}{{{labels}}} {v}");
    }
    out
}

/// The metrics of `bundlefs serve --metrics`, besides the `render_*` ones of [`METRICS`] with
/// `--source`: name (without `bundlefs_`), type, help. Every sample carries a `listen` label.
pub const SERVE_METRICS: &[(&str, &str, &str)] = &[
    (
        "serve_requests_total",
        "counter",
        "HTTP requests answered, whatever their status",
    ),
    (
        "serve_tiles_total",
        "counter",
        "Tiles sent with 200 (blank tiles and HEAD included)",
    ),
    (
        "serve_tile_bytes_total",
        "counter",
        "Bytes of the tiles sent (HEAD: none)",
    ),
    (
        "serve_not_modified_total",
        "counter",
        "304 answers to If-None-Match",
    ),
    (
        "serve_not_found_total",
        "counter",
        "404 answers (missing tiles, levels, names, paths)",
    ),
    (
        "serve_client_errors_total",
        "counter",
        "Other 4xx answers (bad numbers or parameters, methods)",
    ),
    (
        "serve_server_errors_total",
        "counter",
        "5xx answers (a cache that cannot be read, a failed render)",
    ),
];

/// The `/metrics` page of `bundlefs serve` listening on `listen`.
pub fn serve_page(listen: &str, service: &crate::serve::Service) -> String {
    let x = service.stats();
    let mut have: Vec<(&str, u64)> = vec![
        ("serve_requests_total", x.requests),
        ("serve_tiles_total", x.tiles),
        ("serve_tile_bytes_total", x.tile_bytes),
        ("serve_not_modified_total", x.not_modified),
        ("serve_not_found_total", x.not_found),
        ("serve_client_errors_total", x.client_errors),
        ("serve_server_errors_total", x.server_errors),
    ];
    let rendered = service
        .layers()
        .iter()
        .filter_map(|l| l.renderer.as_ref().map(|r| r.stats()))
        .next();
    if let Some(r) = &rendered {
        have.extend(render_samples(r));
    }
    let labels = format!("listen=\"{}\"", label(listen));
    let mut out = String::new();
    for (name, kind, help) in SERVE_METRICS.iter().chain(METRICS) {
        let Some((_, v)) = have.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP bundlefs_{name} {help}");
        let _ = writeln!(out, "# TYPE bundlefs_{name} {kind}");
        let _ = writeln!(out, "bundlefs_{name}{{{labels}}} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_listed_once_and_labelled() {
        let mut r = Report {
            mountpoint: "/mnt/a \"b\"".into(),
            source: "/c".into(),
            mode: "read-write".into(),
            layout: "xyz".into(),
            pid: 1,
            uptime_seconds: 5,
            log: "stderr".into(),
            metrics: None,
            counters: Default::default(),
        };
        r.counters.buffer = Some(Default::default());
        r.counters.store = Some(Default::default());
        r.counters.render = Some(Default::default());
        let names: Vec<&str> = samples(&r).iter().map(|(n, _)| *n).collect();
        let listed: Vec<&str> = METRICS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(
            names, listed,
            "samples and METRICS in the same order, all of them"
        );
        let p = page(&r);
        assert!(
            p.contains("bundlefs_uptime_seconds{mountpoint=\"/mnt/a \\\"b\\\"\"} 5"),
            "{p}"
        );
        assert_eq!(
            p.lines().filter(|l| l.starts_with("# TYPE")).count(),
            METRICS.len()
        );
    }

    /// doc/operations.md's table names exactly the metrics served, with their types.
    #[test]
    fn the_documented_metrics_are_the_served_ones() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/operations.md"))
                .unwrap();
        let rows: Vec<(String, String)> = doc
            .lines()
            .filter_map(|l| {
                let mut cells = l.split('|').map(str::trim).skip(1);
                let name = cells
                    .next()?
                    .strip_prefix("`bundlefs_")?
                    .strip_suffix('`')?;
                Some((name.to_string(), cells.next()?.to_string()))
            })
            .collect();
        let served: Vec<(String, String)> = METRICS
            .iter()
            .chain(JOB_METRICS)
            .chain(SERVE_METRICS)
            .map(|(n, k, _)| (n.to_string(), k.to_string()))
            .collect();
        assert_eq!(rows, served);
    }
}
