//! The thin HTTP/1.1 adapter of [`Service`], on std sockets: an accept loop, a thread per
//! connection (keep-alive, requests answered in order), and a stop that lets requests in hand
//! finish.
//!
//! Why not tiny_http (which `--metrics` uses): its connection pool queued a burst of new
//! connections behind idle threads that had not yet woken (`util::task_pool`: a task is queued,
//! not given a new thread, while threads are counted as waiting), so of a browser's six parallel
//! keep-alive connections two could wait until another connection closed: tiles loaded after
//! 10 s or never (seen with headless Chromium, tests/it/serve.rs). Here every accepted
//! connection gets its own thread at once.
//!
//! What is read: the request line and headers (at most [`MAX_HEAD`] bytes), a body by
//! `Content-Length` (read and dropped, at most [`MAX_BODY`]); a chunked body, a head too large or
//! not HTTP/1.x gets a 400 and the connection is closed. What is written: status line, the
//! service's headers, `Content-Length`, `Connection`; no body for `HEAD`, 204 and 304.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Request, Response, Service};

/// Most bytes of a request line and headers together.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most bytes of a request body read (and dropped); a longer one closes the connection.
pub const MAX_BODY: u64 = 1024 * 1024;
/// How long an idle keep-alive connection is kept.
pub const IDLE: Duration = Duration::from_secs(60);

/// A bound listening socket and the address it got (`--listen HOST:0` gives a free port).
pub struct Listener {
    socket: TcpListener,
    /// The address bound.
    pub addr: SocketAddr,
}

/// Listens on `addr` (`HOST:PORT`). Errors name the address (a port in use, a bad address).
pub fn bind(addr: &str) -> Result<Listener, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("--listen {addr}: cannot listen: {e}");
    let socket = TcpListener::bind(addr).map_err(|e| cannot(&e))?;
    let addr = socket.local_addr().map_err(|e| cannot(&e))?;
    Ok(Listener { socket, addr })
}

/// A running server: [`Running::stop`] ends it.
pub struct Running {
    stop: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops taking connections and requests, and waits (up to `grace`) until the requests in
    /// hand are answered. Idle keep-alive connections are left to close with the process.
    pub fn stop(mut self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let t0 = Instant::now();
        while self.busy.load(Ordering::SeqCst) > 0 && t0.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Serves `service` on `listener`: each accepted connection gets a thread, at most
/// `max_connections` at once (one more is answered 503 and closed, never left waiting).
pub fn run(
    service: Arc<Service>,
    listener: Listener,
    max_connections: usize,
) -> std::io::Result<Running> {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let addr = listener.addr;
    let (s, b) = (stop.clone(), busy.clone());
    let accept = std::thread::Builder::new()
        .name("bundlefs-serve-accept".into())
        .spawn(move || {
            for conn in listener.socket.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let stream = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accepting a connection on {addr}: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if open.fetch_add(1, Ordering::SeqCst) >= max_connections.max(1) {
                    open.fetch_sub(1, Ordering::SeqCst);
                    let mut w = stream;
                    let r = Response::text(
                        503,
                        &format!("{max_connections} connections open already; try again"),
                    );
                    let _ = write_response(&mut w, &r, false, false);
                    continue;
                }
                let (service, stop, busy, open) =
                    (service.clone(), s.clone(), b.clone(), open.clone());
                let spawned = std::thread::Builder::new()
                    .name("bundlefs-serve-conn".into())
                    .spawn(move || {
                        connection(&service, stream, &stop, &busy);
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::error!("starting a connection thread: {e}");
                }
            }
        })?;
    Ok(Running {
        stop,
        busy,
        addr,
        accept: Some(accept),
    })
}

/// One parsed request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

/// Why a request could not be read: the connection ends (`None`: quietly), or with a 400.
enum ReadError {
    Closed,
    Bad(String),
}

/// Answers the requests of one connection in order until it closes, asks to, fails, idles
/// longer than [`IDLE`], or the server stops.
fn connection(service: &Service, stream: TcpStream, stop: &AtomicBool, busy: &AtomicUsize) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = BufWriter::new(stream);
    loop {
        let head = match read_head(&mut reader) {
            Ok(h) => h,
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(msg)) => {
                let _ = write_response(&mut writer, &Response::text(400, &msg), false, false);
                return;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let body = skip_body(&mut reader, &head.headers);
        let resp = match &body {
            Ok(()) => answer(service, &head),
            Err(msg) => Response::text(400, msg),
        };
        let keep = head.keep_alive && body.is_ok() && !stop.load(Ordering::SeqCst);
        let head_only = head.method.eq_ignore_ascii_case("HEAD");
        let sent = write_response(&mut writer, &resp, keep, head_only);
        busy.fetch_sub(1, Ordering::SeqCst);
        if sent.is_err() || !keep {
            return;
        }
    }
}

/// The service's answer; a panic while answering becomes a 500 (and a log line).
fn answer(service: &Service, h: &Head) -> Response {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        service.handle(&Request {
            method: &h.method,
            target: &h.target,
            headers: &h.headers,
        })
    }))
    .unwrap_or_else(|_| {
        tracing::error!("{} {}: the handler panicked", h.method, h.target);
        Response::text(
            500,
            &format!("{} {}: internal error (logged)", h.method, h.target),
        )
    })
}

/// Reads a request line and headers (lines ending in CRLF or LF).
fn read_head(r: &mut impl BufRead) -> Result<Head, ReadError> {
    let mut used = 0;
    let mut line = String::new();
    // Blank lines before a request are allowed (RFC 9112 §2.2).
    loop {
        line.clear();
        let n = read_line(r, &mut line, &mut used)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!(
            "not an HTTP request line: {:?}",
            line.trim_end()
        )));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v => {
            return Err(ReadError::Bad(format!(
                "{v}: only HTTP/1.0 and 1.1 are served"
            )))
        }
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if read_line(r, &mut h, &mut used)? == 0 {
            return Err(ReadError::Closed);
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let Some((n, v)) = h.split_once(':') else {
            return Err(ReadError::Bad(format!("not a header line: {h:?}")));
        };
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let connection = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Connection"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    let keep_alive = if http11 {
        !connection.contains("close")
    } else {
        connection.contains("keep-alive")
    };
    Ok(Head {
        method,
        target,
        headers,
        keep_alive,
    })
}

/// One line, counting bytes against [`MAX_HEAD`]; 0 at end of stream.
fn read_line(
    r: &mut impl BufRead,
    line: &mut String,
    used: &mut usize,
) -> Result<usize, ReadError> {
    let mut limited = r.take((MAX_HEAD - (*used).min(MAX_HEAD)) as u64 + 1);
    let n = match limited.read_line(line) {
        Ok(n) => n,
        // A timeout or reset ends the connection; bytes that are not UTF-8 are a bad request.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(ReadError::Bad("request head is not UTF-8".into()))
        }
        Err(_) => return Err(ReadError::Closed),
    };
    *used += n;
    if *used > MAX_HEAD {
        return Err(ReadError::Bad(format!(
            "request head longer than {MAX_HEAD} bytes"
        )));
    }
    if n > 0 && !line.ends_with('\n') {
        return Err(ReadError::Closed);
    }
    Ok(n)
}

/// Reads and drops a request body given by `Content-Length`; a chunked or too long body is an
/// error (answered 400, then the connection closes).
fn skip_body(r: &mut impl BufRead, headers: &[(String, String)]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("Transfer-Encoding").is_some() {
        return Err("request bodies with Transfer-Encoding are not read here".into());
    }
    let Some(len) = get("Content-Length") else {
        return Ok(());
    };
    let len: u64 = len
        .trim()
        .parse()
        .map_err(|_| format!("Content-Length {len:?}: not a number"))?;
    if len > MAX_BODY {
        return Err(format!(
            "a request body of {len} bytes; at most {MAX_BODY} are read"
        ));
    }
    let copied = std::io::copy(&mut r.take(len), &mut std::io::sink()).unwrap_or(0);
    if copied < len {
        return Err("the request body ended early".into());
    }
    Ok(())
}

/// The reason phrase of the statuses the service answers with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes `r` in one flush: status line, headers, `Content-Length`, `Connection`, the body
/// (none for `HEAD`, 204 and 304).
fn write_response(
    w: &mut impl Write,
    r: &Response,
    keep: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256 + r.body.len());
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (n, v) in &r.headers {
        if !v.is_empty() && !v.contains(['\r', '\n']) {
            let _ = write!(out, "{n}: {v}\r\n");
        }
    }
    let no_body = head_only || matches!(r.status, 204 | 304);
    if !matches!(r.status, 204 | 304) {
        let _ = write!(out, "Content-Length: {}\r\n", r.content_length);
    }
    let _ = write!(
        out,
        "Connection: {}\r\n\r\n",
        if keep { "keep-alive" } else { "close" }
    );
    if !no_body {
        out.extend_from_slice(&r.body);
    }
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, ReadError> {
        read_head(&mut std::io::Cursor::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn heads_are_read_and_bad_ones_refused() {
        let h = head("\r\nGET /a?b=1 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"t\"\r\n\r\n")
            .ok()
            .unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/a?b=1"));
        assert_eq!(h.headers[1], ("If-None-Match".into(), "\"t\"".into()));
        assert!(h.keep_alive);
        assert!(
            !head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .ok()
                .unwrap()
                .keep_alive
        );
        assert!(!head("GET / HTTP/1.0\r\n\r\n").ok().unwrap().keep_alive);
        assert!(
            head("GET / HTTP/1.0\nConnection: Keep-Alive\n\n")
                .ok()
                .unwrap()
                .keep_alive
        );
        assert!(matches!(head(""), Err(ReadError::Closed)));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost"),
            Err(ReadError::Closed)
        ));
        assert!(matches!(head("GET /\r\n\r\n"), Err(ReadError::Bad(_))));
        assert!(matches!(
            head("GET / HTTP/2\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(head(&long), Err(ReadError::Bad(m)) if m.contains("longer than")));
    }

    #[test]
    fn bodies_are_skipped_within_bounds() {
        let h = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        let mut r = std::io::Cursor::new(b"abcdGET".to_vec());
        assert!(skip_body(&mut r, &h("content-length", "4")).is_ok());
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "GET");
        let mut r = std::io::Cursor::new(b"ab".to_vec());
        assert!(skip_body(&mut r, &h("Content-Length", "4")).is_err());
        assert!(skip_body(&mut r, &h("Transfer-Encoding", "chunked")).is_err());
        assert!(skip_body(&mut r, &h("Content-Length", "99999999999")).is_err());
        assert!(skip_body(&mut r, &h("Content-Length", "x")).is_err());
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        let r = Response::text(404, "no");
        write_response(&mut out, &r, true, false).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.starts_with("HTTP/1.1 404 Not Found\r\n"), "{t}");
        assert!(
            t.contains("Content-Length: 3\r\nConnection: keep-alive\r\n\r\nno\n"),
            "{t}"
        );
        let mut out = Vec::new();
        write_response(&mut out, &r, false, true).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(
            t.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{t}"
        );
    }
}
