//! A minimal HTTP/1.1 server for tests: listens on 127.0.0.1 (port 0), answers GETs through a
//! handler, keeps connections alive, counts requests and connections, and stops when dropped (also
//! when a test panics). Plus a CGI runner on top of it for MapServer's `mapserv`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A parsed request line.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// The query as sent (still percent-encoded).
    pub raw_query: String,
    /// Decoded parameters; repeated names keep the last value.
    pub params: HashMap<String, String>,
    /// Names in the order sent (to find duplicates).
    pub names: Vec<String>,
}

impl Request {
    /// A parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler answers.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status: 200,
            content_type: content_type.into(),
            body,
        }
    }
    pub fn status(status: u16, msg: &str) -> Self {
        Response {
            status,
            content_type: "text/plain".into(),
            body: msg.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A running test server.
pub struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

/// Percent-decoding (and `+` as space) of a query component.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_target(target: &str) -> Request {
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let mut params = HashMap::new();
    let mut names = Vec::new();
    for kv in raw_query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        names.push(decode(k));
        params.insert(decode(k), decode(v));
    }
    Request {
        path: path.to_string(),
        raw_query: raw_query.to_string(),
        params,
        names,
    }
}

fn serve_connection(
    stream: TcpStream,
    handler: &Handler,
    stop: &AtomicBool,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        // Wait for the next request on a kept-alive connection, checking for shutdown.
        loop {
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut close = false;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if h.to_ascii_lowercase().starts_with("connection:")
                && h.to_ascii_lowercase().contains("close")
            {
                close = true;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        requests.fetch_add(1, Ordering::SeqCst);
        let resp = handler(&parse_target(&target));
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
            resp.status,
            resp.content_type,
            resp.body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        out.write_all(head.as_bytes())?;
        out.write_all(&resp.body)?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

impl TestServer {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, r, c) = (stop.clone(), requests.clone(), connections.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, s, r) = (handler.clone(), s.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = serve_connection(conn, &*h, &s, &r);
                });
            }
        });
        TestServer {
            addr,
            stop,
            requests,
            connections,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Runs a CGI program for each request (as a web server would: QUERY_STRING, REQUEST_METHOD…)
/// and turns its `Content-Type`/`Status` headers and body into the HTTP response.
pub fn cgi_server(program: PathBuf, env: Vec<(String, String)>) -> TestServer {
    TestServer::start(move |req| {
        let mut cmd = std::process::Command::new(&program);
        cmd.env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", &req.raw_query)
            .env("SCRIPT_NAME", &req.path)
            .env("SERVER_NAME", "127.0.0.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .stdin(std::process::Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => {
                return Response::status(500, &format!("cannot run {}: {e}", program.display()))
            }
        };
        let raw = out.stdout;
        let Some(split) = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| (p, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
        else {
            return Response::status(
                502,
                &format!(
                    "CGI output without headers: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            );
        };
        let (head, body) = (&raw[..split.0], &raw[split.0 + split.1..]);
        let mut resp = Response::ok("application/octet-stream", body.to_vec());
        for line in String::from_utf8_lossy(head).lines() {
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-type" => resp.content_type = v.trim().to_string(),
                    "status" => {
                        resp.status = v
                            .trim()
                            .split(' ')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(500)
                    }
                    _ => {}
                }
            }
        }
        resp
    })
}
