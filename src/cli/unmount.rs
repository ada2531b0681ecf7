//! `bundlefs unmount MOUNTPOINT` (also `umount`): unmounts with `fusermount3 -u` (`umount` where
//! fusermount3 is missing), then waits until the daemon recorded for that mount point has flushed
//! its write buffer and exited, and reports how that flush ended (`registry`). `fusermount3 -u`
//! alone returns while the daemon is still storing tiles, so a script that copies or verifies the
//! cache right after it may miss them.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::output::outln;
use super::registry::{self, Record, Status};
use super::UnmountArgs;

/// Runs `bundlefs unmount` (a busy mount is retried for [`BUSY_WAIT`], then exit 1 with the mount
/// left as it is): exit 0 once every tile is stored and the daemon has exited, 1 if the
/// wait timed out, 2 (an error) if the daemon's flush failed or its end cannot be known.
pub fn run(a: &UnmountArgs) -> anyhow::Result<ExitCode> {
    let mnt = mount_point(&a.mountpoint)?;
    let record = registry::read(&mnt)?;
    let mounted = registry::mount_at(&mnt);
    let live = record.clone().filter(Record::alive);
    if mounted.is_none() && live.is_none() {
        return match record {
            // Unmounted by other means since; its last word still tells whether all is stored.
            Some(r) => report(&mnt, &r, false),
            None => bail!("{}: not mounted", mnt.display()),
        };
    }
    if let (None, Some(r)) = (&mounted, &live) {
        if r.status == Status::Serving {
            // Between writing its record and mounting, or its mount taken away under it.
            bail!(
                "{}: not mounted, though daemon pid {} is recorded as serving it (still \
                 starting?); nothing to unmount",
                mnt.display(),
                r.pid
            );
        }
    }
    if let Some(m) = &mounted {
        if live.is_none() && !m.is_bundlefs() {
            bail!(
                "{}: not a bundlefs mount ({} of {}); use umount",
                mnt.display(),
                m.fstype,
                m.source
            );
        }
        if let Err(why) = release_when_free(&mnt)? {
            eprintln!(
                "bundlefs: {}: still busy after {} s: {why}. A program still has a file or its \
                 working folder in the mount (`fuser -vm {}` lists them); nothing was lost and the \
                 mount stays: run `bundlefs unmount {}` again once it is free",
                mnt.display(),
                BUSY_WAIT.as_secs(),
                mnt.display(),
                mnt.display()
            );
            return Ok(ExitCode::from(1));
        }
    }
    let Some(r) = live else {
        // Mounted by bundlefs, but no live daemon on record: it died (its buffered tiles with
        // it), or it was started by another user or an older bundlefs.
        let r = record.context(format!(
            "{}: unmounted, but no bundlefs daemon is recorded for it in {}, so whether its \
             tiles were all stored is unknown",
            mnt.display(),
            registry::state_dir().display()
        ))?;
        return report(&mnt, &r, false);
    };
    let started = Instant::now();
    let mut said = false;
    while r.alive() {
        let waited = started.elapsed();
        if let Some(limit) = a.timeout {
            if waited >= limit.0 {
                eprintln!(
                    "bundlefs: {}: unmounted, but daemon pid {} is still flushing after {:.1} s; \
                     run `bundlefs unmount {}` again to wait for it",
                    mnt.display(),
                    r.pid,
                    waited.as_secs_f64(),
                    mnt.display()
                );
                return Ok(ExitCode::from(1));
            }
        }
        if !said && waited >= Duration::from_secs(1) {
            eprintln!(
                "bundlefs: waiting for daemon pid {} to store its buffered tiles…",
                r.pid
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = registry::read(&mnt)?.filter(|n| n.pid == r.pid && n.start_time == r.start_time);
    report(&mnt, &last.unwrap_or(r), true)
}

/// Says how the daemon of `r` ended: success only if it wrote that it unmounted with everything
/// flushed. The record is removed once reported.
fn report(mnt: &Path, r: &Record, waited: bool) -> anyhow::Result<ExitCode> {
    match r.status {
        Status::Unmounted => {
            registry::remove(mnt);
            outln!(
                "unmounted {} ({}); every tile stored, daemon pid {} exited",
                mnt.display(),
                r.cache.display(),
                r.pid
            );
            Ok(ExitCode::SUCCESS)
        }
        Status::Failed => {
            registry::remove(mnt);
            bail!(
                "{}: daemon pid {} failed: {}",
                mnt.display(),
                r.pid,
                r.error.as_deref().unwrap_or("no reason given")
            )
        }
        Status::Serving | Status::Flushing if (waited || !r.alive()) && !r.writes => {
            // A read-only daemon held nothing to store: its end loses no tile.
            registry::remove(mnt);
            outln!(
                "unmounted {} ({}); daemon pid {} had ended without unmounting (killed?); it \
                 was read-only, so no tile was lost",
                mnt.display(),
                r.cache.display(),
                r.pid
            );
            Ok(ExitCode::SUCCESS)
        }
        Status::Serving | Status::Flushing if waited || !r.alive() => {
            registry::remove(mnt);
            bail!(
                "{}: daemon pid {} ended without finishing its flush (killed?); tiles it held in \
                 its write buffer may be lost: check {} with `bundlefs verify`",
                mnt.display(),
                r.pid,
                r.cache.display()
            )
        }
        Status::Serving | Status::Flushing => bail!(
            "{}: daemon pid {} is still serving it, but it is not mounted",
            mnt.display(),
            r.pid
        ),
    }
}

/// The mount point as the daemon recorded it (absolute, symbolic links resolved). A mount whose
/// daemon died answers ENOTCONN to the stat that resolving needs, so its parent is resolved
/// instead.
fn mount_point(p: &Path) -> anyhow::Result<PathBuf> {
    let a =
        std::path::absolute(p).with_context(|| format!("{}: cannot make absolute", p.display()))?;
    if let Ok(c) = a.canonicalize() {
        return Ok(c);
    }
    match (a.parent().map(Path::canonicalize), a.file_name()) {
        (Some(Ok(parent)), Some(name)) => Ok(parent.join(name)),
        _ => Ok(a),
    }
}

/// How long `unmount` retries a mount that is busy: the processes of a tool that just ended
/// (rsync's receiver and generator) may still hold their working folder in it for a moment.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// [`release`], retried while the mount is busy for up to [`BUSY_WAIT`]: Ok(Err(complaint))
/// when it stayed busy; other failures are errors.
fn release_when_free(mnt: &Path) -> anyhow::Result<Result<(), String>> {
    let started = Instant::now();
    loop {
        match release(mnt) {
            Ok(()) => return Ok(Ok(())),
            Err(e) => {
                let text = e.to_string();
                if !text.to_ascii_lowercase().contains("busy") {
                    return Err(e);
                }
                if started.elapsed() >= BUSY_WAIT {
                    return Ok(Err(text));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// `fusermount3 -u MNT` (or `umount MNT` where fusermount3 is not installed); its complaint
/// (e.g. "Device or resource busy") becomes the error.
fn release(mnt: &Path) -> anyhow::Result<()> {
    let run = |prog: &str| Command::new(prog).arg("-u").arg(mnt).output();
    let out = match run("fusermount3") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Command::new("umount")
            .arg(mnt)
            .output()
            .context("running umount (fusermount3 is not installed)")?,
        r => r.context("running fusermount3")?,
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{}: cannot unmount: {}",
            mnt.display(),
            why.trim().trim_start_matches("fusermount3: ")
        );
    }
    Ok(())
}
