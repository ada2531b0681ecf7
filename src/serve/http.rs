//! The thin `tiny_http` adapter of [`Service`]: binding, a pool of worker threads each taking
//! requests from the one listening socket, and the stop flag they watch.

use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Request, Response, Service};

/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Listens on `addr` (`HOST:PORT`). Errors name the address (a port in use, a bad address).
///
/// The socket gets `TCP_NODELAY`, which Linux hands on to every accepted connection: tiny_http
/// writes a response's head and body in separate writes, and with Nagle's algorithm the body of
/// every response after the first on a keep-alive connection waited for the client's delayed ACK
/// (about 40 ms a tile, measured with scripts/bench-serve.sh).
pub fn bind(addr: &str) -> Result<tiny_http::Server, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("--listen {addr}: cannot listen: {e}");
    let l = std::net::TcpListener::bind(addr).map_err(|e| cannot(&e))?;
    if let Err(e) = no_delay(&l) {
        tracing::warn!("--listen {addr}: cannot set TCP_NODELAY ({e}); keep-alive answers may lag");
    }
    tiny_http::Server::from_listener(l, None).map_err(|e| cannot(&e))
}

/// Sets `TCP_NODELAY` on `l`.
fn no_delay(l: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) on the descriptor of a socket borrowed for the call, with a pointer
    // to a c_int that outlives the call and that int's size.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts `threads` workers answering requests of `server` with `service` until `stop` is set;
/// each finishes the request in hand first. Join the handles to wait for them.
pub fn run(
    service: Arc<Service>,
    server: Arc<tiny_http::Server>,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads.max(1))
        .map(|i| {
            let (service, server, stop) = (service.clone(), server.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("bundlefs-serve-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(POLL) {
                            Ok(Some(req)) => answer(&service, req),
                            Ok(None) => {}
                            Err(e) => tracing::warn!("receiving a request: {e}"),
                        }
                    }
                })
        })
        .collect()
}

/// Answers one request; a panic while answering becomes a 500 (and a log line), never a dead
/// worker.
fn answer(service: &Service, req: tiny_http::Request) {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
        .collect();
    let method = req.method().as_str().to_string();
    let target = req.url().to_string();
    // A request body is never read; tiny_http skips what is left of it before the next request.
    let resp = std::panic::catch_unwind(AssertUnwindSafe(|| {
        service.handle(&Request {
            method: &method,
            target: &target,
            headers: &headers,
        })
    }))
    .unwrap_or_else(|_| {
        tracing::error!("{method} {target}: the handler panicked");
        Response::text(500, &format!("{method} {target}: internal error (logged)"))
    });
    let _ = req.respond(to_tiny(resp));
}

fn to_tiny(r: Response) -> tiny_http::Response<Cursor<Vec<u8>>> {
    let headers = r
        .headers
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .filter_map(|(n, v)| tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()).ok())
        .collect();
    tiny_http::Response::new(
        tiny_http::StatusCode(r.status),
        headers,
        Cursor::new(r.body),
        Some(r.content_length),
        None,
    )
    .with_chunked_threshold(usize::MAX)
}
