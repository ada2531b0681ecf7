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
pub fn bind(addr: &str) -> Result<tiny_http::Server, String> {
    tiny_http::Server::http(addr).map_err(|e| format!("--listen {addr}: cannot listen: {e}"))
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
fn answer(service: &Service, mut req: tiny_http::Request) {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
        .collect();
    let method = req.method().as_str().to_string();
    let target = req.url().to_string();
    // A request body is never read; drain what the client sent so keep-alive stays in step.
    let _ = std::io::copy(&mut req.as_reader(), &mut std::io::sink());
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
