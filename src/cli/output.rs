//! Standard output that may close under us: `bundlefs info … | head` closes the pipe after a few
//! lines. Writes go through [`line`] (the `outln!` macro), which turns a closed pipe into
//! [`OutputClosed`]; `cli::main` ends quietly on it, with the status a shell gives a process killed
//! by SIGPIPE (128 + 13 = 141), instead of the panic `println!` gives.

use std::io::Write;

/// Standard output was closed by its reader (EPIPE): nothing more can be said, and nothing is wrong.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct OutputClosed;

/// Exit status for [`OutputClosed`]: 128 + SIGPIPE, what a shell reports for `yes | head`.
pub const CLOSED_STATUS: u8 = 141;

/// Writes `args` and a newline to standard output; a closed pipe is [`OutputClosed`], any other
/// failure an error naming standard output.
pub fn line(args: std::fmt::Arguments) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}").map_err(write_error)
}

/// Writes raw bytes (a tile) to standard output and flushes; errors as for [`line`].
pub fn bytes(b: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b)
        .and_then(|()| out.flush())
        .map_err(write_error)
}

fn write_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(OutputClosed)
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// True if `e` (or one of its causes) is [`OutputClosed`].
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<OutputClosed>())
}

/// `outln!("…", args)`: `println!` that returns `Err` (with `?`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))?
    };
}
pub(crate) use outln;
