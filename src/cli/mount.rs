//! `bundlefs mount`: option parsing (`-o` as from mount(8)/fstab), refusals of a mount point that
//! is taken, daemonising only once the mount is live (`--daemon` re-runs this program with its
//! own arguments), signal handling (SIGINT/SIGTERM unmount cleanly after the final flush, SIGHUP
//! reopens the log file), systemd's readiness protocol (`READY=1` once live, `STOPPING=1` at the
//! final flush, on `$NOTIFY_SOCKET`), where the log goes (`log`), the control socket `bundlefs
//! status` asks (`status`) and `--metrics` (`metrics`), the session itself, and the record
//! `bundlefs unmount` waits on (`registry`).

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use super::registry::{self, Record, Status};
use super::source::refuse_package;
use super::MountArgs;
use crate::cache::buffer::WriteBuffer;
use crate::cache::store::object::{ObjectOptions, WriteCoordination};
use crate::cache::url::Location;
use crate::cache::{Cache, CacheOptions};
use crate::format::values::Seconds;
use crate::fs::fuse::{watch_changes, FuseFs, FuseOptions};
use crate::fs::TreeFs;
use crate::render::http::HttpOptions;
use crate::render::renderer::{Keep, RenderOptions, Renderer};
use crate::render::spec::SourceSpec;

/// Threads answering the requests of a mount of a cache in an object store that may wait on the
/// store (lookups, reads, listings, flushes …), beside the session threads (`--threads`).
const STORE_THREADS: usize = 16;

/// What `-o` said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    pub read_only: bool,
    pub acl: Acl,
    pub default_permissions: bool,
    /// Mount over a folder that holds files (hiding them while mounted).
    pub nonempty: bool,
    pub passthrough: Vec<String>,
    /// `endpoint=URL`: the object store's URL (caches at `s3://…` or `az://…` only).
    pub endpoint: Option<String>,
    /// `region=R`: the object store's region (caches at `s3://…` only; refused for `az://…`).
    pub region: Option<String>,
    /// `timeout=SECONDS`: time limit of one object-store request with its retries.
    pub timeout: Option<Duration>,
    /// `profile=NAME`: the AWS profile whose keys sign the requests (caches at `s3://…`).
    pub profile: Option<String>,
    /// `credentials_file=FILE`: the AWS shared credentials file, or for `az://…` a file of
    /// `AZURE_STORAGE_*=VALUE` lines.
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Acl {
    #[default]
    Owner,
    RootAndOwner,
    All,
}

/// Parses `-o` values (each may be a comma list). fstab-only words are accepted and ignored.
pub fn parse_options(opts: &[String]) -> anyhow::Result<ParsedOptions> {
    let mut p = ParsedOptions {
        read_only: true,
        ..Default::default()
    };
    for word in opts
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        match word {
            "ro" => p.read_only = true,
            "rw" => p.read_only = false,
            "allow_other" => p.acl = Acl::All,
            "allow_root" => p.acl = Acl::RootAndOwner,
            "default_permissions" => p.default_permissions = true,
            "nonempty" => p.nonempty = true,
            "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "_netdev" | "nofail" | "owner"
            | "comment" => {}
            w if w.starts_with("x-") || w.starts_with("comment=") || w.starts_with("user=") => {}
            // mount(8) adds `dev,suid` (and `exec`) to what it passes a helper; a tile tree has
            // no device or set-user-ID files, so bundlefs mounts stay nodev,nosuid.
            "dev" | "suid" => {}
            // Access times: the tree keeps none (a read changes no time), so these words, common
            // in fstab lines, mean nothing here.
            "relatime" | "norelatime" | "strictatime" | "nostrictatime" | "diratime"
            | "nodiratime" | "lazytime" | "nolazytime" => {}
            w if w.starts_with("endpoint=") => {
                let v = &w["endpoint=".len()..];
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    bail!(
                        "-o endpoint={}: want the object store's URL, like http://127.0.0.1:7480",
                        crate::cache::store::object::shown_endpoint(v)
                    );
                }
                p.endpoint = Some(v.to_string());
            }
            w if w.starts_with("region=") => {
                let v = &w["region=".len()..];
                if v.is_empty() {
                    bail!("-o region=: want a region name, like us-east-1");
                }
                p.region = Some(v.to_string());
            }
            w if w.starts_with("profile=") => {
                let v = &w["profile=".len()..];
                if v.is_empty() {
                    bail!("-o profile=: want a profile name of ~/.aws/credentials or ~/.aws/config");
                }
                p.profile = Some(v.to_string());
            }
            w if w.starts_with("credentials_file=") => {
                let v = &w["credentials_file=".len()..];
                if v.is_empty() {
                    bail!("-o credentials_file=: want a file");
                }
                // Absolute: a daemon serves from `/`.
                p.credentials_file = Some(
                    std::path::absolute(v)
                        .with_context(|| format!("-o credentials_file={v}: not a path"))?,
                );
            }
            w if w.starts_with("timeout=") => {
                let v: Seconds = w["timeout=".len()..]
                    .parse()
                    .map_err(|e| anyhow::anyhow!("-o {w}: {e}"))?;
                if v.0.is_zero() {
                    bail!("-o {w}: want a time limit above 0 seconds");
                }
                p.timeout = Some(v.0);
            }
            "exec" | "noexec" | "nosuid" | "nodev" | "atime" | "noatime" | "sync" | "async"
            | "dirsync" => p.passthrough.push(word.to_string()),
            w => bail!("-o {}: unknown mount option (known: ro, rw, allow_other, allow_root, default_permissions, nonempty; for s3:// and az:// caches endpoint=URL, region=R, timeout=SECONDS, profile=NAME, credentials_file=FILE; every flag of `bundlefs mount --help` as key=value, e.g. write_buffer=1G)", crate::cache::store::object::shown_endpoint(w)),
        }
    }
    // A mount others may enter gets the kernel's permission checks against the modes shown
    // (bundlefs itself answers `access` with ENOSYS), so other users cannot write through it.
    if p.acl != Acl::Owner {
        p.default_permissions = true;
    }
    Ok(p)
}

fn mount_option(word: &str) -> MountOption {
    match word {
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        "dirsync" => MountOption::DirSync,
        other => MountOption::CUSTOM(other.to_string()),
    }
}

/// Set in the environment of the daemon `--daemon` starts: its standard output is a pipe to the
/// starting process, which reads one line, `ok` once the mount is live or the error.
const DAEMON_CHILD_ENV: &str = "BUNDLEFS_DAEMON_CHILD";

/// Runs the mount: in the foreground, or (`--daemon`) in a child that reports back once live.
pub fn run(mut args: MountArgs) -> anyhow::Result<ExitCode> {
    let parsed = parse_options(&args.options)?;
    // The struct holds absolute paths from here on (a daemon serves from `/`).
    // A cache in an object store (`s3://…`) is a URL, not a path to make absolute.
    if !Location::parse(&args.cache)?.is_store() {
        args.cache = abs(&args.cache)?;
    }
    args.mountpoint = abs(&args.mountpoint)?;
    let child = std::env::var_os(DAEMON_CHILD_ENV).is_some();
    if args.daemon && !child {
        return daemonize(&args, &parsed);
    }
    if child {
        std::env::remove_var(DAEMON_CHILD_ENV);
        // Out of the starting terminal's session: its hangup or Ctrl-C is not ours.
        nix::unistd::setsid().context("setsid")?;
        std::env::set_current_dir("/").context("chdir /")?;
    }
    let result = choose_log(&args, child).and_then(|()| serve(&args, &parsed, child));
    if let Err(e) = &result {
        if child {
            // Still the pipe if the mount never went live; /dev/null afterwards.
            let _ = writeln!(std::io::stdout(), "error: {}", super::error_text(e));
        }
    }
    result
}

/// Where the log goes: `--log-file` (reopened on SIGHUP); else, for a daemon, syslog (`/dev/log`,
/// read by journald and rsyslog) or, where nothing listens there, a file in the state folder next
/// to the mount's record; a foreground mount logs to standard error (a systemd unit's journal).
/// A daemon's standard error follows its file, so a panic's message is kept too.
fn choose_log(args: &MountArgs, child: bool) -> anyhow::Result<()> {
    let sink = match (&args.log_file, child) {
        (Some(p), _) => super::log::open_file(p)?,
        (None, false) => return Ok(()),
        (None, true) => match super::log::open_syslog() {
            Some(s) => s,
            None => super::log::open_file(
                &registry::record_path(&args.mountpoint).with_extension("log"),
            )?,
        },
    };
    if let (true, super::log::Sink::File { file, .. }) = (child, &sink) {
        nix::unistd::dup2_stderr(file).context("pointing standard error at the log file")?;
    }
    super::log::set(sink);
    Ok(())
}

/// What is mounted where and how to stop it, for the person who started it.
fn describe(args: &MountArgs, parsed: &ParsedOptions) -> String {
    format!(
        "mounted {} on {} ({}{})",
        args.cache.display(),
        args.mountpoint.display(),
        if parsed.read_only {
            "read-only"
        } else {
            "read-write"
        },
        match args.layout {
            crate::fs::View::ArcGis => String::new(),
            v => format!(", {} layout", v.name()),
        }
    )
}

fn stop_hint(args: &MountArgs) -> String {
    format!("stop with: bundlefs unmount {}", args.mountpoint.display())
}

/// Mounts and serves until unmounted (or a stop signal), then stores what is buffered and says
/// how it ended in the registry. The steps: the tree ([`build_tree`]), the FUSE adapter and its
/// mount options ([`fuse_adapter`], [`fuse_config`]), the background threads
/// ([`start_threads`]), the session, and the final flush ([`finish`]).
fn serve(args: &MountArgs, parsed: &ParsedOptions, child: bool) -> anyhow::Result<ExitCode> {
    // Block the stop signals before any thread starts, so every thread inherits the mask and one
    // thread alone takes them (sigwait) and unmounts.
    let sigs = stop_signals();
    sigs.thread_block()
        .context("blocking SIGINT/SIGTERM/SIGHUP")?;
    refuse_package(&args.cache, "mount")?;
    let cache = Cache::open_with(
        &args.cache,
        CacheOptions {
            recheck: args.recheck.0,
            object: object_options(args, parsed)?,
            ..Default::default()
        },
    )?;
    if !parsed.read_only && cache.store().read_only() {
        // Writes would be accepted into the buffer, then refused at every flush.
        bail!(
            "{}: -o rw: this cache can only be read here ({}); mount it read-only",
            args.cache.display(),
            cache.kind()
        );
    }
    let canonical_mnt = check_mountpoint(&args.mountpoint, cache.root(), parsed)?;
    let tree = Arc::new(build_tree(args, parsed, Arc::new(cache))?);
    let fs = fuse_adapter(args, parsed, &tree)?;
    let config = fuse_config(args, parsed);

    // Keyed by the resolved path, as `bundlefs unmount` resolves the path it is given.
    let mut record = Record::this_process(&args.cache, &canonical_mnt);
    record.writes = tree.writer().is_some();
    record.read_only = parsed.read_only;
    let socket = registry::socket_path(&canonical_mnt);
    let report = reporter(args, parsed, &tree, &canonical_mnt);
    if let Some(addr) = &args.metrics {
        let report = report.clone();
        super::metrics::serve(addr, move || super::metrics::page(&report()))?;
    }
    match super::status::serve_control(&socket, report) {
        Ok(()) => record.socket = Some(socket),
        // Serving still works; only `bundlefs status` cannot ask this daemon.
        Err(e) => tracing::warn!("{}", super::error_text(&e)),
    }
    // Written before the mount appears, so whoever sees the mount finds the record.
    if let Err(e) = registry::write(&record) {
        // Serving still works; only `bundlefs unmount` cannot wait for this daemon.
        tracing::warn!(
            "{}; `bundlefs unmount` will not be able to wait for this daemon's flush",
            super::error_text(&e)
        );
    }
    let mut session = match fuser::Session::new(fs, &args.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            registry::remove(&canonical_mnt);
            return Err(e).with_context(|| {
                format!(
                    "mounting {} on {}",
                    args.cache.display(),
                    args.mountpoint.display()
                )
            });
        }
    };
    registry::prune(Duration::from_secs(24 * 3600));
    tracing::info!("{}", describe(args, parsed));
    let stop = start_threads(args, &tree, &mut session, sigs)?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&describe(args, parsed)),
    ]);
    if child {
        // Tell the starting process, then let go of the pipe: later writes go nowhere.
        let mut out = std::io::stdout().lock();
        let line = format!("ok\t{}\n", super::log::shown());
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        drop(out);
        let null = std::fs::File::options().write(true).open("/dev/null")?;
        nix::unistd::dup2_stdout(&null).context("redirecting standard output to /dev/null")?;
    } else {
        // Foreground: say so (a closed standard output is no reason to stop serving).
        let _ = writeln!(
            std::io::stdout(),
            "{}\npid: {}\n{} (or Ctrl-C)",
            describe(args, parsed),
            std::process::id(),
            stop_hint(args)
        );
    }
    let res = session.run();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let end = finish(args, &tree, &mut record, res);
    // Nobody is left to answer on it.
    if let Some(s) = &record.socket {
        let _ = std::fs::remove_file(s);
    }
    end?;
    tracing::info!("unmounted {}", args.mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

/// The tree over `cache`: writable (`-o rw`) through a write buffer, with a renderer for
/// `--source` (kept tiles through the mount's buffer, or one of their own).
fn build_tree(
    args: &MountArgs,
    parsed: &ParsedOptions,
    cache: Arc<Cache>,
) -> anyhow::Result<TreeFs> {
    let buffer = || {
        Arc::new(WriteBuffer::with_mode(
            cache.clone(),
            args.write_buffer.bytes(),
            args.import_mode,
        ))
    };
    let writer = (!parsed.read_only).then(buffer);
    let mut tree = match &writer {
        Some(w) => TreeFs::writable(w.clone()),
        None => TreeFs::new(cache.clone()),
    }
    .with_view(args.layout)?;
    let Some(spec) = &args.source else {
        if args.list_renderable.is_some() {
            bail!("--list-renderable needs --source");
        }
        return Ok(tree);
    };
    let kept = match (&writer, args.keep_rendered) {
        (_, false) => None,
        (Some(w), true) => Some(w.clone()),
        (None, true) => Some(buffer()),
    };
    let keep = kept.clone().map_or(Keep::No, Keep::Buffer);
    let flags = RenderFlags {
        timeout: args.render_timeout.0,
        proxy: args.proxy.clone(),
        jobs: args.render_jobs,
        supertile: args.supertile,
        supertile_buffer: args.supertile_buffer,
    };
    let r = source_renderer(&cache, spec, keep, &flags)?;
    tree = tree.with_renderer(Arc::new(r), kept);
    if let Some(levels) = args.list_renderable {
        if args.layout != crate::fs::View::ArcGis {
            bail!("--list-renderable lists ArcGIS row folders; not with --layout xyz or tms");
        }
        tree = tree.list_renderable(levels)?;
    }
    Ok(tree)
}

/// How `--source` renders, from the flags the mount and `serve` share.
pub(super) struct RenderFlags {
    /// `--render-timeout`: one request to the source.
    pub timeout: Duration,
    /// `--proxy`: a URL, `env`, or none.
    pub proxy: Option<String>,
    /// `--render-jobs`: renders at once.
    pub jobs: usize,
    /// `--supertile`: pixels a side of the block drawn in one request.
    pub supertile: u32,
    /// `--supertile-buffer`: pixels drawn around a supertile and cut away.
    pub supertile_buffer: u32,
}

/// The renderer of `--source SPEC` over `cache` (single-flight, supertiles, rendered tiles kept
/// as `keep` says), as the mount and `bundlefs serve` build it.
pub(super) fn source_renderer(
    cache: &Arc<Cache>,
    spec: &str,
    keep: Keep,
    f: &RenderFlags,
) -> anyhow::Result<Renderer> {
    let spec: SourceSpec = spec.parse()?;
    let http = HttpOptions {
        timeout: f.timeout,
        proxy: f.proxy.clone(),
        ..HttpOptions::default()
    };
    let src = spec.build(cache, &http)?;
    let r = Renderer::new(
        cache.clone(),
        src,
        keep,
        RenderOptions {
            concurrency: f.jobs.max(1),
            timeout: f.timeout,
            supertile: f.supertile,
            supertile_buffer: f.supertile_buffer,
            ..RenderOptions::default()
        },
    )?;
    tracing::info!("rendering missing tiles from {spec}");
    Ok(r)
}

/// The FUSE adapter over `tree`: TTLs, ownership, and thread pools for renders and for requests
/// that may wait on an object store.
fn fuse_adapter(
    args: &MountArgs,
    parsed: &ParsedOptions,
    tree: &Arc<TreeFs>,
) -> anyhow::Result<FuseFs> {
    let (ttl, recheck) = (args.ttl.0, args.recheck.0);
    let mut fs = FuseFs::new(
        tree.clone(),
        FuseOptions {
            ttl,
            // As long as a change by another writer may go unnoticed anyway.
            negative_ttl: ttl.min(recheck),
            read_only: parsed.read_only,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        },
    );
    if args.source.is_some() {
        // Every render slot and as many lookups waiting for one get a thread of their own.
        fs = fs.with_render_threads(2 * args.render_jobs.max(1) + 2)?;
    }
    if tree.cache().location().is_store() {
        // Requests that may wait on the object store never hold a session thread.
        fs = fs.with_store_threads(STORE_THREADS)?;
    }
    Ok(fs)
}

/// The mount options (`fuse.bundlefs`, nodev, nosuid, ro, the `-o` words passed through), access
/// control and session threads.
fn fuse_config(args: &MountArgs, parsed: &ParsedOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("bundlefs:{}", args.cache.display())),
        // As a kernel option, not `MountOption::Subtype`: fuser passes that only to fusermount3,
        // so a mount made by root directly showed as plain `fuse` (findmnt -t fuse.bundlefs
        // found nothing). The kernel takes `subtype=` itself (fs/fuse/inode.c).
        MountOption::CUSTOM("subtype=bundlefs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if parsed.read_only {
        config.mount_options.push(MountOption::RO);
    }
    if parsed.default_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config
        .mount_options
        .extend(parsed.passthrough.iter().map(|w| mount_option(w)));
    config.acl = match parsed.acl {
        Acl::Owner => SessionACL::Owner,
        Acl::RootAndOwner => SessionACL::RootAndOwner,
        Acl::All => SessionACL::All,
    };
    let threads = args.threads.max(1);
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    config
}

/// Starts the watcher (foreign changes, idle flushes) and the signal thread (a stop signal
/// unmounts); returns the flag that stops the watcher.
fn start_threads(
    args: &MountArgs,
    tree: &Arc<TreeFs>,
    session: &mut fuser::Session<FuseFs>,
    sigs: SigSet,
) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (tree, notifier, stop) = (tree.clone(), session.notifier(), stop.clone());
        let every = args.recheck.0.max(Duration::from_millis(100));
        let idle = args.flush_idle.0;
        std::thread::Builder::new()
            .name("bundlefs-watch".into())
            .spawn(move || watch_changes(tree, notifier, every, idle, stop))?;
    }
    let mut unmounter = session.unmount_callable();
    let mountpoint = args.mountpoint.clone();
    std::thread::Builder::new()
        .name("bundlefs-signals".into())
        .spawn(move || loop {
            match sigs.wait() {
                Ok(Signal::SIGHUP) => match super::log::reopen() {
                    Ok(()) => tracing::info!("SIGHUP: log reopened ({})", super::log::shown()),
                    Err(e) => super::log::reopen_failed(&e),
                },
                Ok(sig) => {
                    tracing::info!("{sig}: unmounting {}", mountpoint.display());
                    notify(&[sd_notify::NotifyState::Stopping]);
                    if let Err(e) = unmounter.unmount() {
                        tracing::error!("unmounting {}: {e}", mountpoint.display());
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!("waiting for signals: {e}");
                    return;
                }
            }
        })?;
    Ok(stop)
}

/// Tells systemd (`$NOTIFY_SOCKET`, sd_notify(3)) how the daemon stands; nothing without it.
pub(super) fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("telling systemd ($NOTIFY_SOCKET): {e}");
    }
}

/// The function that makes the daemon's status report (for `bundlefs status` and `/metrics`):
/// the record's facts and a snapshot of `tree`'s counters at each call.
fn reporter(
    args: &MountArgs,
    parsed: &ParsedOptions,
    tree: &Arc<TreeFs>,
    mountpoint: &Path,
) -> impl Fn() -> super::status::Report + Clone + Send + Sync + 'static {
    let (tree, mountpoint) = (tree.clone(), mountpoint.to_path_buf());
    let source = args.cache.display().to_string();
    let mode = if parsed.read_only {
        "read-only"
    } else {
        "read-write"
    };
    let metrics = args.metrics.clone();
    let started = std::time::Instant::now();
    move || super::status::Report {
        mountpoint: mountpoint.clone(),
        source: source.clone(),
        mode: mode.into(),
        layout: tree.view().name().into(),
        pid: std::process::id(),
        uptime_seconds: started.elapsed().as_secs(),
        log: super::log::shown(),
        metrics: metrics.clone(),
        counters: tree.snapshot(),
    }
}

/// After the session: stores every buffered tile, logs the store's counters, and records how the
/// mount ended (unmounted with everything stored, or failed and why). Temporary files never
/// renamed onto a tile make it a failure naming them: they were not stored.
fn finish(
    args: &MountArgs,
    tree: &TreeFs,
    record: &mut Record,
    res: std::io::Result<()>,
) -> anyhow::Result<()> {
    record.status = Status::Flushing;
    let _ = registry::write(record);
    notify(&[sd_notify::NotifyState::Stopping]);
    // Whatever the session's end, buffered tiles go to their bundles before we exit.
    let flushed = tree.flush_all();
    if let Some(c) = tree.cache().store().counters() {
        tracing::info!("{}: {c}", tree.cache().location());
    }
    let dropped = match tree.leftover_message() {
        Some(m) => Err(anyhow::anyhow!("every tile stored, but {m}")),
        None => Ok(()),
    };
    let end = res
        .with_context(|| format!("serving {}", args.mountpoint.display()))
        .and_then(|()| flushed.context("flushing the write buffer at unmount"))
        .and(dropped);
    match &end {
        Ok(()) => record.status = Status::Unmounted,
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(super::error_text(e));
        }
    }
    if let Err(e) = registry::write(record) {
        tracing::warn!("{}", super::error_text(&e));
    }
    end
}

/// The object-store settings of the mount; refuses them for a cache in a local folder, and
/// `--single-writer` on a read-only mount.
fn object_options(args: &MountArgs, parsed: &ParsedOptions) -> anyhow::Result<ObjectOptions> {
    let in_store = Location::parse(&args.cache)?.is_store();
    if !in_store {
        let given = [
            parsed.endpoint.as_ref().map(|_| "endpoint"),
            parsed.region.as_ref().map(|_| "region"),
            parsed.timeout.map(|_| "timeout"),
            parsed.profile.as_ref().map(|_| "profile"),
            parsed.credentials_file.as_ref().map(|_| "credentials_file"),
        ];
        if let Some(w) = given.into_iter().flatten().next() {
            bail!(
                "-o {w}=…: only for a cache in an object store (s3://BUCKET/PREFIX, az://CONTAINER/PREFIX); {} is a folder",
                args.cache.display()
            );
        }
    }
    for (given, flag) in [
        (args.cache_dir.is_some(), "--cache-dir"),
        (args.single_writer, "--single-writer"),
    ] {
        if !in_store && given {
            bail!(
                "{flag}: only for a cache in an object store (s3://BUCKET/PREFIX, az://CONTAINER/PREFIX); {} is not one",
                args.cache.display()
            );
        }
    }
    if args.single_writer && parsed.read_only {
        bail!("--single-writer is a promise about writing mounts: it needs -o rw");
    }
    Ok(ObjectOptions {
        endpoint: parsed.endpoint.clone(),
        region: parsed.region.clone(),
        timeout: parsed.timeout,
        profile: parsed.profile.clone(),
        credentials_file: parsed.credentials_file.clone(),
        cache_dir: args.cache_dir.clone(),
        cache_size: Some(crate::cache::store::object::disk::check_limit(
            args.cache_size.0,
        )?),
        writes: match (parsed.read_only, args.single_writer) {
            (true, _) => WriteCoordination::Conditional,
            (false, true) => WriteCoordination::SingleWriter,
            (false, false) => WriteCoordination::Probed,
        },
    })
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// The mount point must be a folder we can mount on. A FUSE mount whose daemon died (killed, or
/// crashed) leaves the folder answering ENOTCONN: say so, and how to clear it, rather than
/// "not a directory".
///
/// It must also stay clear of the cache folder: mounted on it, inside it or above it, the mount
/// would hide the bundles from the daemon itself, whose reads would then come back to it. It must
/// not hold a bundlefs mount already (two daemons stacked, the lower one unreachable), and must be
/// empty unless `-o nonempty` (a mount hides the folder's files while it lasts). Returns the mount
/// point with symbolic links resolved.
fn check_mountpoint(
    mnt: &Path,
    cache_root: &Path,
    parsed: &ParsedOptions,
) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(mnt) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{}: mount point is not a directory", mnt.display()),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTCONN as i32) => bail!(
            "{}: a FUSE mount whose daemon is gone is still there ({e}); \
             clear it with `fusermount3 -u {}` and mount again",
            mnt.display(),
            mnt.display()
        ),
        Err(e) => bail!("{}: mount point: {e}", mnt.display()),
    }
    let m = mnt
        .canonicalize()
        .with_context(|| format!("{}: mount point", mnt.display()))?;
    if let Ok(c) = cache_root.canonicalize() {
        if c.starts_with(&m) || m.starts_with(&c) {
            bail!(
                "{}: mount point overlaps the cache folder {} (mounted there, the tree \
                 would hide the bundles it is made of); choose a folder outside it",
                mnt.display(),
                c.display()
            );
        }
    }
    if let Some(e) = registry::mount_at(&m).filter(registry::MountEntry::is_bundlefs) {
        bail!(
            "{}: already a bundlefs mount (of {}); unmount it first with `bundlefs unmount {}`",
            mnt.display(),
            e.source.strip_prefix("bundlefs:").unwrap_or(&e.source),
            mnt.display()
        );
    }
    if !parsed.nonempty {
        let mut entries =
            std::fs::read_dir(&m).with_context(|| format!("{}: mount point", mnt.display()))?;
        if let Some(first) = entries.next() {
            let first = first.with_context(|| format!("{}: mount point", mnt.display()))?;
            bail!(
                "{}: not empty (it holds {:?}{}); the mount would hide its files. Mount on an \
                 empty folder, or add -o nonempty to mount over them",
                mnt.display(),
                first.file_name(),
                if entries.next().is_some() {
                    " and more"
                } else {
                    ""
                }
            );
        }
    }
    Ok(m)
}

/// Starts this same program with its own arguments in a new session and waits until the child
/// says the mount is live (or why it failed); prints what is mounted where, the daemon's pid and
/// how to stop it. The child runs in this process's folder so relative paths mean the same, makes
/// them absolute and moves to `/` itself; nothing is re-serialised, so no option can be dropped.
fn daemonize(args: &MountArgs, parsed: &ParsedOptions) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the bundlefs executable")?;
    let mut argv = std::env::args_os();
    let arg0: OsString = argv.next().unwrap_or_else(|| exe.clone().into_os_string());
    let mut cmd = std::process::Command::new(&exe);
    {
        use std::os::unix::process::CommandExt;
        // As invoked: `mount.fuse.bundlefs` must still read its mount(8) arguments.
        cmd.arg0(&arg0);
    }
    cmd.args(argv).env(DAEMON_CHILD_ENV, "1");
    let log = match &args.log_file {
        Some(p) => std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("{}: cannot open log file", p.display()))?,
        ),
        None => std::process::Stdio::null(),
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    // One line: "ok" once the mount is live, or the error. The child then points its standard
    // output elsewhere, so the pipe ends with that line (or with the child).
    let mut msg = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut msg);
    }
    if let Some(rest) = msg.strip_prefix("ok") {
        super::output::outln!("{}", describe(args, parsed));
        super::output::outln!("pid: {}", child.id());
        if let Some(log) = rest
            .strip_prefix('\t')
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            super::output::outln!("log: {log}");
        }
        super::output::outln!("{}", stop_hint(args));
        return Ok(ExitCode::SUCCESS);
    }
    let status = child.wait().ok();
    let msg = msg.trim().trim_start_matches("error: ");
    if msg.is_empty() {
        bail!("mount daemon exited ({status:?}) before the mount was live");
    }
    bail!("{msg}")
}

fn abs(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot make absolute", p.display()))
}

/// Arguments as mount(8) passes them to a `mount.fuse.bundlefs` helper: `SRC DIR [-o OPTS] [-n -s -v -f]`,
/// turned into `bundlefs mount --daemon SRC DIR -o OPTS`. fuse3's `mount.fuse3` (the helper of
/// every `fuse.TYPE`) runs `bundlefs SRC DIR -o OPTS` the same way ([`is_helper_call`]).
pub fn helper_args(argv: &[OsString]) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["bundlefs".into(), "mount".into(), "--daemon".into()];
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                if let Some(o) = it.next() {
                    out.push("-o".into());
                    out.push(o.clone());
                }
            }
            Some("-n" | "-s" | "-v" | "-f") => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Whether `argv` is a mount helper's call, `bundlefs SRC DIR [-o OPTS]` (what fuse3's
/// `mount.fuse3` runs for `mount -t fuse.bundlefs SRC DIR` and fstab lines of that type): a first
/// argument that is neither an option nor one of `cmd`'s subcommands (or `help`), and a second.
pub fn is_helper_call(argv: &[OsString], cmd: &clap::Command) -> bool {
    let Some(first) = argv.get(1).and_then(|a| a.to_str()) else {
        return false;
    };
    argv.len() >= 3
        && !first.starts_with('-')
        && first != "help"
        && !cmd
            .get_subcommands()
            .any(|c| c.get_name() == first || c.get_all_aliases().any(|a| a == first))
}

/// The `-o` words of a `mount` call (`argv[1] == "mount"`) that name one of its flags (`mount`
/// is `cmd`), turned into that flag: `-o source=resample,write_buffer=1G,rw` becomes
/// `--source=resample --write-buffer=1G -o rw`, so an fstab line can say everything the command
/// line can. A key is the flag's long name with `_` or `-` (`cache_dir`, `cache-dir`); a flag
/// without a value is a bare word (`daemon`, `keep_rendered`). Other words stay `-o` words
/// ([`parse_options`] judges them). A value cannot hold a comma (`-o` splits at commas): give
/// such a value as the flag. Any other call is returned as it is.
pub fn flag_words(argv: Vec<OsString>, cmd: &clap::Command) -> Vec<OsString> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("mount") {
        return argv;
    }
    let mut out: Vec<OsString> = Vec::with_capacity(argv.len());
    let mut flags: Vec<OsString> = Vec::new();
    let mut it = argv.into_iter();
    out.extend(it.by_ref().take(2));
    while let Some(a) = it.next() {
        let words = match a.to_str() {
            Some("-o") => match it.next() {
                Some(v) => v,
                None => {
                    out.push(a);
                    continue;
                }
            },
            Some(s) if s.starts_with("-o") && s.len() > 2 => s[2..].into(),
            _ => {
                out.push(a);
                continue;
            }
        };
        let Some(text) = words.to_str() else {
            out.extend([OsString::from("-o"), words]);
            continue;
        };
        let mut kept = Vec::new();
        for w in text.split(',').filter(|w| !w.trim().is_empty()) {
            let (key, value) = match w.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (w, None),
            };
            let long = key.trim().replace('_', "-");
            match cmd
                .get_arguments()
                .find(|x| x.get_long() == Some(long.as_str()))
            {
                // A flag the command line has already (`daemon`, which mount(8)'s call implies)
                // is not given twice.
                Some(_) if value.is_none() && out.iter().any(|a| *a == *format!("--{long}")) => {}
                Some(_) => flags.push(match value {
                    Some(v) => format!("--{long}={v}").into(),
                    None => format!("--{long}").into(),
                }),
                None => kept.push(w),
            }
        }
        if !kept.is_empty() {
            out.extend([OsString::from("-o"), kept.join(",").into()]);
        }
    }
    out.extend(flags);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount_helper_calls_and_flag_words() {
        let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        let mount = cmd.find_subcommand("mount").unwrap();
        // What mount.fuse3 runs for `mount -t fuse.bundlefs SRC DIR`, and what it does not.
        assert!(is_helper_call(
            &os(&["bundlefs", "/c", "/m", "-o", "rw"]),
            &cmd
        ));
        assert!(is_helper_call(&os(&["bundlefs", "s3://b/p", "/m"]), &cmd));
        for not in [
            &["bundlefs", "mount", "/c", "/m"][..],
            &["bundlefs", "umount", "/m"],
            &["bundlefs", "help", "mount"],
            &["bundlefs", "--version", "x"],
            &["bundlefs", "/c"],
        ] {
            assert!(!is_helper_call(&os(not), &cmd), "{not:?}");
        }
        let argv = flag_words(
            helper_args(&os(&[
                "bundlefs",
                "/c",
                "/m",
                "-o",
                "rw,dev,suid,source=resample,write_buffer=1G,cache-dir=/var/cache/b,keep_rendered,allow_other",
            ])),
            mount,
        );
        assert_eq!(
            argv,
            os(&[
                "bundlefs",
                "mount",
                "--daemon",
                "/c",
                "/m",
                "-o",
                "rw,dev,suid,allow_other",
                "--source=resample",
                "--write-buffer=1G",
                "--cache-dir=/var/cache/b",
                "--keep-rendered",
            ])
        );
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let crate::cli::Command::Mount(a) = cli.command else {
            panic!("not a mount")
        };
        assert!(a.daemon && a.keep_rendered);
        assert_eq!(a.source.as_deref(), Some("resample"));
        assert_eq!(a.write_buffer.bytes(), 1 << 30);
        let p = parse_options(&a.options).unwrap();
        assert!(!p.read_only && p.passthrough.is_empty(), "{p:?}");
        // A word naming no flag and no option is refused by name; other commands are untouched.
        let argv = flag_words(
            os(&["bundlefs", "mount", "/c", "/m", "-o", "bogus_word=1"]),
            mount,
        );
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let crate::cli::Command::Mount(a) = cli.command else {
            panic!("not a mount")
        };
        let e = parse_options(&a.options).unwrap_err().to_string();
        assert!(
            e.contains("bogus_word=1") && e.contains("write_buffer=1G"),
            "{e}"
        );
        let info = os(&["bundlefs", "info", "-o", "x"]);
        assert_eq!(flag_words(info.clone(), mount), info);
    }

    #[test]
    fn options() {
        let p = parse_options(&[
            "ro,allow_other".into(),
            "default_permissions,noauto,x-systemd.automount".into(),
        ])
        .unwrap();
        assert!(p.read_only && p.default_permissions);
        assert_eq!(p.acl, Acl::All);
        assert!(parse_options(&["bogus".into()])
            .unwrap_err()
            .to_string()
            .contains("bogus"));
        assert!(!parse_options(&["rw".into()]).unwrap().read_only);
        assert!(
            parse_options(&[]).unwrap().read_only,
            "read-only unless asked"
        );
        assert!(parse_options(&["rw,ro".into()]).unwrap().read_only);
        let s3 =
            parse_options(&["rw,endpoint=http://127.0.0.1:7481,region=eu-1,timeout=2.5".into()])
                .unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:7481"));
        assert_eq!(s3.region.as_deref(), Some("eu-1"));
        assert_eq!(s3.timeout, Some(Duration::from_millis(2500)));
        for bad in ["endpoint=127.0.0.1", "region=", "timeout=0", "timeout=soon"] {
            let e = parse_options(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        let e = parse_options(&["endpoint=ftp://key:s3cr3t@h".into()])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t"), "a secret in an error: {e}");
        let own = parse_options(&["rw".into()]).unwrap();
        assert!(own.acl == Acl::Owner && !own.default_permissions);
        for shared in ["allow_other", "allow_root", "rw,allow_other"] {
            let p = parse_options(&[shared.into()]).unwrap();
            assert!(
                p.default_permissions,
                "{shared} implies default_permissions"
            );
        }
    }

    #[test]
    fn helper() {
        let a: Vec<OsString> = [
            "mount.fuse.bundlefs",
            "/c",
            "/m",
            "-o",
            "ro,allow_other",
            "-n",
        ]
        .map(OsString::from)
        .to_vec();
        assert_eq!(
            helper_args(&a),
            [
                "bundlefs",
                "mount",
                "--daemon",
                "/c",
                "/m",
                "-o",
                "ro,allow_other"
            ]
        );
    }
}
