//! `bundlefs mount`: option parsing (`-o` as from mount(8)/fstab), daemonising only once the mount is
//! live, signal handling (SIGINT/SIGTERM/SIGHUP unmount cleanly) and the session itself.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{Config, MountOption, SessionACL};

use crate::cache::buffer::WriteBuffer;
use crate::cache::commit::ImportMode;
use crate::cache::{Cache, CacheOptions};
use crate::fs::fuse::{watch_changes, FuseFs, FuseOptions};
use crate::fs::TreeFs;
use crate::render::http::HttpOptions;
use crate::render::renderer::{Keep, RenderOptions, Renderer};
use crate::render::spec::SourceSpec;

/// Parsed mount settings.
#[derive(Debug, Clone)]
pub struct MountArgs {
    pub cache: PathBuf,
    pub mountpoint: PathBuf,
    pub options: Vec<String>,
    pub daemon: bool,
    pub ttl: Duration,
    pub threads: usize,
    pub recheck: Duration,
    /// Where a daemon writes its log (default: nowhere, so no terminal stays attached).
    pub log_file: Option<PathBuf>,
    /// Write buffer budget in bytes (writable mounts).
    pub write_buffer: usize,
    pub import_mode: ImportMode,
    /// Flush the write buffer after writes have been idle this long.
    pub flush_idle: Duration,
    /// `--source`: render tiles the bundles lack.
    pub source: Option<String>,
    pub keep_rendered: bool,
    pub render_timeout: Duration,
    pub render_jobs: usize,
    pub proxy: Option<String>,
    /// Levels whose listings show renderable names too.
    pub list_renderable: Option<crate::format::levels::LevelRange>,
    /// Supertile side in pixels (0: tile by tile) and the margin cut away around it.
    pub supertile: u32,
    pub supertile_buffer: u32,
}

/// Parses a byte size: `256M`, `64MiB`, `1G`, `512k`, `1048576`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?}: want a size like 256M"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(format!("{s:?}: unknown unit {u:?} (k, M, G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// What `-o` said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    pub read_only: bool,
    pub acl: Acl,
    pub default_permissions: bool,
    pub passthrough: Vec<String>,
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
            "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "_netdev" | "nofail" | "owner"
            | "comment" => {}
            w if w.starts_with("x-") || w.starts_with("comment=") => {}
            "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime" | "noatime" | "sync" | "async"
            | "dirsync" => p.passthrough.push(word.to_string()),
            w => bail!("-o {w}: unknown mount option (known: ro, rw, allow_other, allow_root, default_permissions)"),
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

const READY_FD_ENV: &str = "BUNDLEFS_READY_FD";

/// Runs the mount: in the foreground, or (`--daemon`) in a child that reports back once live.
pub fn run(args: MountArgs) -> anyhow::Result<ExitCode> {
    let parsed = parse_options(&args.options)?;
    if args.daemon && std::env::var_os(READY_FD_ENV).is_none() {
        return daemonize(&args);
    }
    let ready = match std::env::var(READY_FD_ENV) {
        Ok(fd) => {
            let fd: i32 = fd.parse().context("bad BUNDLEFS_READY_FD")?;
            std::env::remove_var(READY_FD_ENV);
            // SAFETY: the parent passed us this descriptor for exactly this purpose.
            Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
        }
        Err(_) => None,
    };
    let result = serve(&args, &parsed, ready.as_ref());
    if let (Err(e), Some(mut r)) = (&result, ready.as_ref()) {
        let _ = writeln!(r, "error: {}", super::error_text(e));
    }
    result
}

fn serve(
    args: &MountArgs,
    parsed: &ParsedOptions,
    ready: Option<&std::fs::File>,
) -> anyhow::Result<ExitCode> {
    super::commands::refuse_package(&args.cache, "mount")?;
    let cache = Cache::open_with(
        &args.cache,
        CacheOptions {
            recheck: args.recheck,
            ..Default::default()
        },
    )?;
    check_mountpoint(&args.mountpoint, cache.root())?;
    let cache = Arc::new(cache);
    let buffer = || {
        Arc::new(WriteBuffer::with_mode(
            cache.clone(),
            args.write_buffer,
            args.import_mode,
        ))
    };
    let writer = (!parsed.read_only).then(buffer);
    let mut tree = match &writer {
        Some(w) => TreeFs::writable(w.clone()),
        None => TreeFs::new(cache.clone()),
    };
    if let Some(spec) = &args.source {
        let spec: SourceSpec = spec.parse()?;
        let http = HttpOptions {
            timeout: args.render_timeout,
            proxy: args.proxy.clone(),
            ..HttpOptions::default()
        };
        let src = spec.build(&cache, &http)?;
        // Kept tiles go through the write buffer: the mount's own, or one of their own.
        let kept = match (&writer, args.keep_rendered) {
            (_, false) => None,
            (Some(w), true) => Some(w.clone()),
            (None, true) => Some(buffer()),
        };
        let keep = kept.clone().map_or(Keep::No, Keep::Buffer);
        let r = Renderer::new(
            cache.clone(),
            src,
            keep,
            RenderOptions {
                concurrency: args.render_jobs.max(1),
                timeout: args.render_timeout,
                supertile: args.supertile,
                supertile_buffer: args.supertile_buffer,
                ..RenderOptions::default()
            },
        )?;
        tracing::info!("rendering missing tiles from {spec}");
        tree = tree.with_renderer(Arc::new(r), kept);
        if let Some(levels) = args.list_renderable {
            tree = tree.list_renderable(levels)?;
        }
    } else if args.list_renderable.is_some() {
        bail!("--list-renderable needs --source");
    }
    let tree = Arc::new(tree);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut fs = FuseFs::new(
        tree.clone(),
        FuseOptions {
            ttl: args.ttl,
            // As long as a change by another writer may go unnoticed anyway.
            negative_ttl: args.ttl.min(args.recheck),
            read_only: parsed.read_only,
            uid,
            gid,
        },
    );
    if args.source.is_some() {
        // Every render slot and as many lookups waiting for one get a thread of their own.
        fs = fs.with_render_threads(2 * args.render_jobs.max(1) + 2)?;
    }

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("bundlefs:{}", args.cache.display())),
        MountOption::Subtype("bundlefs".into()),
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

    // Block the stop signals in every thread; one thread waits for them and unmounts.
    let sigs = stop_signals();
    // SAFETY: plain signal-mask call on an initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut()) };

    let mut session = fuser::Session::new(fs, &args.mountpoint, &config).with_context(|| {
        format!(
            "mounting {} on {}",
            args.cache.display(),
            args.mountpoint.display()
        )
    })?;
    tracing::info!(
        "mounted {} on {}",
        args.cache.display(),
        args.mountpoint.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (tree, notifier, stop) = (tree.clone(), session.notifier(), stop.clone());
        let every = args.recheck.max(Duration::from_millis(100));
        let idle = args.flush_idle;
        std::thread::Builder::new()
            .name("bundlefs-watch".into())
            .spawn(move || watch_changes(tree, notifier, every, idle, stop))?;
    }
    {
        let mut unmounter = session.unmount_callable();
        let mountpoint = args.mountpoint.clone();
        std::thread::Builder::new()
            .name("bundlefs-signals".into())
            .spawn(move || {
                let mut sig = 0;
                // SAFETY: sigwait on the blocked set.
                unsafe { libc::sigwait(&sigs, &mut sig) };
                tracing::info!("signal {sig}: unmounting {}", mountpoint.display());
                if let Err(e) = unmounter.unmount() {
                    tracing::error!("unmounting {}: {e}", mountpoint.display());
                }
            })?;
    }
    if let Some(mut r) = ready {
        let _ = r.write_all(b"ok\n");
    }
    let res = session.run();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Whatever the session's end, buffered tiles go to their bundles before we exit.
    let flushed = tree.flush_all();
    res.with_context(|| format!("serving {}", args.mountpoint.display()))?;
    flushed.context("flushing the write buffer at unmount")?;
    tracing::info!("unmounted {}", args.mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a zeroed, then emptied, set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// The mount point must be a folder we can mount on. A FUSE mount whose daemon died (killed, or
/// crashed) leaves the folder answering ENOTCONN: say so, and how to clear it, rather than
/// "not a directory".
///
/// It must also stay clear of the cache folder: mounted on it, inside it or above it, the mount
/// would hide the bundles from the daemon itself, whose reads would then come back to it.
fn check_mountpoint(mnt: &Path, cache_root: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(mnt) {
        Ok(m) if m.is_dir() => {
            let (Ok(m), Ok(c)) = (mnt.canonicalize(), cache_root.canonicalize()) else {
                return Ok(());
            };
            if c.starts_with(&m) || m.starts_with(&c) {
                bail!(
                    "{}: mount point overlaps the cache folder {} (mounted there, the tree \
                     would hide the bundles it is made of); choose a folder outside it",
                    mnt.display(),
                    c.display()
                );
            }
            Ok(())
        }
        Ok(_) => bail!("{}: mount point is not a directory", mnt.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "{}: a FUSE mount whose daemon is gone is still there ({e}); \
             clear it with `fusermount3 -u {}` and mount again",
            mnt.display(),
            mnt.display()
        ),
        Err(e) => bail!("{}: mount point: {e}", mnt.display()),
    }
}

/// Starts this same command in a new session without `--daemon` and waits until it says the mount
/// is live (or why it failed).
fn daemonize(args: &MountArgs) -> anyhow::Result<ExitCode> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: fresh descriptors from pipe2, owned here.
    let (mut rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    };
    let exe = std::env::current_exe().context("finding the bundlefs executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount")
        .arg(abs(&args.cache)?)
        .arg(abs(&args.mountpoint)?);
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--ttl").arg(args.ttl.as_secs_f64().to_string());
    cmd.arg("--threads").arg(args.threads.to_string());
    cmd.arg("--recheck")
        .arg(args.recheck.as_secs_f64().to_string());
    cmd.arg("--write-buffer").arg(args.write_buffer.to_string());
    cmd.arg("--import-mode").arg(match args.import_mode {
        ImportMode::Overwrite => "overwrite",
        ImportMode::Merge => "merge",
    });
    cmd.arg("--flush-idle")
        .arg(args.flush_idle.as_secs_f64().to_string());
    if let Some(s) = &args.source {
        cmd.arg("--source").arg(s);
    }
    if args.keep_rendered {
        cmd.arg("--keep-rendered");
    }
    cmd.arg("--render-timeout")
        .arg(args.render_timeout.as_secs_f64().to_string());
    cmd.arg("--render-jobs").arg(args.render_jobs.to_string());
    cmd.arg("--supertile").arg(args.supertile.to_string());
    cmd.arg("--supertile-buffer")
        .arg(args.supertile_buffer.to_string());
    if let Some(p) = &args.proxy {
        cmd.arg("--proxy").arg(p);
    }
    if let Some(l) = &args.list_renderable {
        cmd.arg("--list-renderable")
            .arg(format!("{}-{}", l.min, l.max));
    }
    cmd.env(READY_FD_ENV, fds[1].to_string());
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
        .stdout(std::process::Stdio::null())
        .stderr(log);
    cmd.current_dir("/");
    let wfd = fds[1];
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::setsid();
            // Keep the ready pipe open across exec.
            let flags = libc::fcntl(wfd, libc::F_GETFD);
            libc::fcntl(wfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    drop(wr);
    // One line: "ok" once the mount is live, or the error. The child keeps the pipe open while it
    // serves, so read a line, not to the end.
    let mut msg = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut rd), &mut msg);
    if msg.starts_with("ok") {
        println!("{}", child.id());
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
/// turned into `bundlefs mount --daemon SRC DIR -o OPTS`.
pub fn helper_args(argv: &[String]) -> Vec<String> {
    let mut out = vec![
        "bundlefs".to_string(),
        "mount".to_string(),
        "--daemon".to_string(),
    ];
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => {
                if let Some(o) = it.next() {
                    out.push("-o".into());
                    out.push(o.clone());
                }
            }
            "-n" | "-s" | "-v" | "-f" => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn helper() {
        let a: Vec<String> = [
            "mount.fuse.bundlefs",
            "/c",
            "/m",
            "-o",
            "ro,allow_other",
            "-n",
        ]
        .map(String::from)
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
