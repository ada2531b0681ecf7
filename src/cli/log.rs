//! Where the log goes: standard error (the default, and what systemd's journal collects from a
//! unit), a file (`--log-file`, reopened on SIGHUP so logrotate can move it), or syslog (a
//! `--daemon` without `--log-file`: journald and rsyslog both read `/dev/log`; where nothing
//! listens there, a file in the state folder instead, named when the mount starts).
//!
//! One `tracing` subscriber is installed at start ([`init`]); its writer asks the current
//! [`Sink`], which the mount daemon sets once it knows where to log ([`set`]). Lines keep
//! `RUST_LOG` levels (default `info` for a daemon's own lines, `warn` for libraries).

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use tracing::Level;

/// Set to a socket path to log to it instead of `/dev/log` (tests stand in for syslog with it).
pub const SYSLOG_SOCKET_ENV: &str = "BUNDLEFS_SYSLOG_SOCKET";

/// Where log lines go besides standard error (where they go before [`set`]).
pub enum Sink {
    /// A file, appended to; `path` is reopened on [`reopen`].
    File {
        /// The file's path.
        path: PathBuf,
        /// The open file.
        file: File,
    },
    /// Syslog: RFC 3164 datagrams, facility daemon, `bundlefs[PID]`, severity from the level.
    Syslog {
        /// The socket the lines go to (`/dev/log`).
        socket: PathBuf,
        /// The connection.
        logger: syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>,
    },
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Where the log goes now, as `status` shows it: `stderr`, the file's path, or `syslog (PATH)`.
pub fn shown() -> String {
    match &*SINK.lock().unwrap() {
        None => "stderr".into(),
        Some(Sink::File { path, .. }) => path.display().to_string(),
        Some(Sink::Syslog { socket, .. }) => format!("syslog ({})", socket.display()),
    }
}

/// Installs the subscriber (once, at start): `RUST_LOG` levels, else `default_filter`; colour
/// codes only with `ansi` (no log file to come) and a terminal on standard error.
pub fn init(default_filter: &str, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeSinkWriter)
        .with_ansi(ansi && std::io::stderr().is_terminal())
        .init();
}

/// Sends later lines to `sink`.
pub fn set(sink: Sink) {
    *SINK.lock().unwrap() = Some(sink);
}

/// Opens `path` for appending (created with mode 0644 as `cp` would give, less the umask).
pub fn open_file(path: &Path) -> anyhow::Result<Sink> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open log file", path.display()))?;
    Ok(Sink::File {
        path: path.to_path_buf(),
        file,
    })
}

/// Syslog at `BUNDLEFS_SYSLOG_SOCKET`, else `/dev/log`; None when nothing listens there.
pub fn open_syslog() -> Option<Sink> {
    let socket = std::env::var_os(SYSLOG_SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/log"));
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "bundlefs".into(),
        pid: std::process::id(),
    };
    let logger = syslog::unix_custom(formatter, &socket).ok()?;
    Some(Sink::Syslog { socket, logger })
}

/// A failed [`reopen`] (its folder gone, no permission): said in the log still open (the old
/// file) and on standard error, where a unit's journal keeps it, since the old file may be gone
/// from view.
pub fn reopen_failed(e: &anyhow::Error) {
    let msg = format!(
        "SIGHUP: {}; logging on to the old file",
        super::error_text(e)
    );
    tracing::error!("{msg}");
    let _ = writeln!(std::io::stderr(), "bundlefs: {msg}");
}

/// SIGHUP: the log file is opened again by its path (logrotate moved the old one away), and
/// standard error follows it so a panic's message lands there too. Nothing for other sinks.
pub fn reopen() -> anyhow::Result<()> {
    let mut g = SINK.lock().unwrap();
    if let Some(Sink::File { path, file }) = &mut *g {
        let Sink::File { file: new, .. } = open_file(path)? else {
            unreachable!()
        };
        nix::unistd::dup2_stderr(&new).context("pointing standard error at the log file")?;
        *file = new;
    }
    Ok(())
}

/// The subscriber's writer factory: one [`LineWriter`] per event, knowing its level.
struct MakeSinkWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeSinkWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter {
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// One event's text, sent to the sink whole when dropped (one write, one datagram).
struct LineWriter {
    level: Level,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut g = SINK.lock().unwrap();
        match &mut *g {
            None => {
                let _ = std::io::stderr().write_all(&self.buf);
            }
            Some(Sink::File { file, .. }) => {
                let _ = file.write_all(&self.buf);
            }
            Some(Sink::Syslog { logger, .. }) => {
                let text = String::from_utf8_lossy(&self.buf);
                let line = text.trim_end();
                let _ = match self.level {
                    Level::ERROR => logger.err(line),
                    Level::WARN => logger.warning(line),
                    Level::INFO => logger.info(line),
                    _ => logger.debug(line),
                };
            }
        }
    }
}
