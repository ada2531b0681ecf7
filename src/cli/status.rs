//! `bundlefs status`: how each bundlefs mount of the host is doing, asked of its daemon.
//!
//! Every mount daemon answers on a control socket in the state folder (`registry::socket_path`):
//! a client connects and reads one JSON [`Report`] (the record's facts, uptime, where it logs, and
//! one `fs::counters::Snapshot` of its counters); the daemon then closes the connection. `status`
//! lists the bundlefs mounts of `/proc/self/mountinfo` (or the one asked for), asks each, and
//! says which daemon is gone. It exits 1 when a mount has bundles whose last flush failed (their
//! tiles still wait) or a daemon does not answer, so monitoring can run it; 2 for a mount point
//! that is no bundlefs mount.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::output::outln;
use super::registry;
use crate::fs::counters::Snapshot;

/// What a daemon says of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// The cache as given (a folder, or `s3://…`/`az://…`).
    pub source: String,
    /// `read-only` or `read-write`.
    pub mode: String,
    /// The layout shown (`mount --layout`): `arcgis`, `xyz` or `tms`.
    #[serde(default = "arcgis")]
    pub layout: String,
    /// The daemon's pid.
    pub pid: u32,
    /// Seconds since the mount went live.
    pub uptime_seconds: u64,
    /// Where the daemon logs (`stderr`, a file, `syslog (/dev/log)`).
    pub log: String,
    /// The `/metrics` address, if `--metrics` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Every counter of the mount now.
    pub counters: Snapshot,
}

/// How one mount stands, as `status` found it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountStatus {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// `serving` (the daemon answered), `dead` (its process is gone: the mount answers nothing
    /// until `fusermount3 -u`), or `unreachable` (alive, but its control socket did not answer).
    pub state: String,
    /// Why, for `dead` and `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The daemon's report (`serving`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

/// Answers connections on `path` with `report()` as JSON, on a thread of its own, until the
/// process exits. A stale socket file of an earlier daemon is replaced.
pub fn serve_control(
    path: &Path,
    report: impl Fn() -> Report + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("{}: cannot listen for `bundlefs status`", path.display()))?;
    std::thread::Builder::new()
        .name("bundlefs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
                let body = serde_json::to_vec(&report()).unwrap_or_default();
                let _ = c.write_all(&body);
            }
        })?;
    Ok(())
}

/// Asks the daemon listening on `socket` for its report (5 s at most).
pub fn ask(socket: &Path) -> anyhow::Result<Report> {
    let mut c = UnixStream::connect(socket)
        .with_context(|| format!("{}: cannot connect", socket.display()))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = Vec::new();
    c.read_to_end(&mut body)
        .with_context(|| format!("{}: no answer", socket.display()))?;
    serde_json::from_slice(&body)
        .with_context(|| format!("{}: not a bundlefs status report", socket.display()))
}

/// How the mount on `mnt` (absolute) stands.
fn mount_status(mnt: &Path) -> MountStatus {
    let record = registry::read(mnt).ok().flatten();
    let socket = record
        .as_ref()
        .and_then(|r| r.socket.clone())
        .unwrap_or_else(|| registry::socket_path(mnt));
    let (state, problem, report) = match ask(&socket) {
        Ok(r) => ("serving", None, Some(r)),
        Err(e) => match &record {
            Some(r) if !r.alive() => (
                "dead",
                Some(format!(
                    "its daemon (pid {}) is gone; the mount answers nothing until `fusermount3 -u {}`",
                    r.pid,
                    mnt.display()
                )),
                None,
            ),
            None => (
                "unreachable",
                Some(format!(
                    "no record of its daemon in {} (started by another user, or by a bundlefs \
                     older than `status`): {}",
                    registry::state_dir().display(),
                    super::error_text(&e)
                )),
                None,
            ),
            Some(_) => ("unreachable", Some(super::error_text(&e)), None),
        },
    };
    MountStatus {
        mountpoint: mnt.to_path_buf(),
        state: state.into(),
        problem,
        report,
    }
}

/// `bundlefs status [MOUNTPOINT] [--json]`.
pub fn run(mountpoint: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let mounts: Vec<PathBuf> = match mountpoint {
        Some(m) => {
            let abs = std::fs::canonicalize(m)
                .or_else(|_| std::path::absolute(m))
                .with_context(|| format!("{}: no such folder", m.display()))?;
            match registry::mount_at(&abs) {
                Some(e) if e.is_bundlefs() => vec![abs],
                Some(e) => bail!(
                    "{}: not a bundlefs mount (a {} mount of {})",
                    m.display(),
                    e.fstype,
                    e.source
                ),
                None => bail!("{}: not a mount point", m.display()),
            }
        }
        None => registry::bundlefs_mounts()
            .into_iter()
            .map(|(p, _)| p)
            .collect(),
    };
    let all: Vec<MountStatus> = mounts.iter().map(|m| mount_status(m)).collect();
    let failing = all.iter().any(|s| {
        s.report.is_none()
            || s.report
                .as_ref()
                .and_then(|r| r.counters.buffer.as_ref())
                .is_some_and(|b| b.failing_bundles > 0)
    });
    if json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else if all.is_empty() {
        outln!("no bundlefs mounts");
    } else {
        for s in &all {
            print_text(s)?;
        }
    }
    Ok(if failing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The layout of reports from daemons that did not say.
fn arcgis() -> String {
    "arcgis".into()
}

fn print_text(s: &MountStatus) -> anyhow::Result<()> {
    outln!("{}: {}", s.mountpoint.display(), s.state);
    if let Some(p) = &s.problem {
        outln!("  {p}");
    }
    let Some(r) = &s.report else {
        return Ok(());
    };
    outln!("  source: {} ({}, {} layout)", r.source, r.mode, r.layout);
    outln!(
        "  pid: {}, up {} s, log: {}",
        r.pid,
        r.uptime_seconds,
        r.log
    );
    if let Some(m) = &r.metrics {
        outln!("  metrics: http://{m}/metrics");
    }
    let c = &r.counters;
    outln!(
        "  tiles served: {} ({} bytes); written: {}, refused: {}",
        c.tree.tiles_read,
        c.tree.bytes_read,
        c.tree.tiles_written,
        c.tree.writes_refused
    );
    if let Some(b) = &c.buffer {
        outln!(
            "  write buffer: {} tiles, {} bytes waiting (budget {}); flushes: {} done, {} failed",
            b.waiting_tiles,
            b.waiting_bytes,
            b.budget_bytes,
            b.flushes,
            b.flush_failures
        );
        if let Some(e) = &b.last_error {
            outln!(
                "  last flush failure: {e}{}",
                if b.failing_bundles > 0 {
                    format!(" ({} bundles failing now)", b.failing_bundles)
                } else {
                    " (stored since)".into()
                }
            );
        }
    }
    if let Some(st) = &c.store {
        outln!(
            "  store: {} requests, {} conflicts (each retried), {} index disk-cache hits",
            st.requests(),
            st.conflicts + st.sidecar_conflicts,
            st.disk_hits
        );
        outln!("    {st}");
    }
    if let Some(rs) = &c.render {
        outln!(
            "  renders: {} source calls, {} tiles rendered, {} empty, {} failed, {} kept",
            rs.source_calls,
            rs.rendered,
            rs.empty,
            rs.failed,
            rs.kept
        );
    }
    Ok(())
}
