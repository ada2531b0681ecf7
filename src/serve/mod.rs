//! `bundlefs serve`: tiles of caches over HTTP, without FUSE. This module is kernel- and
//! socket-free: [`Service::handle`] maps a request (method, path and query, headers) to a
//! [`Response`]; `http.rs` is the thin HTTP/1.1 adapter (std sockets) that feeds it.
//!
//! Routes (doc/serve.md):
//! - `/` an HTML index of the caches and their URLs; `/healthz` "ok";
//! - ArcGIS REST: `/arcgis/rest/services` (the catalog), `/arcgis/rest/services/NAME/MapServer`
//!   (the map service JSON, [`describe::map_service`]) and
//!   `/arcgis/rest/services/NAME/MapServer/tile/{level}/{row}/{col}`;
//! - OGC WMTS 1.0.0: KVP `/wmts?SERVICE=WMTS&REQUEST=GetCapabilities|GetTile&…`, RESTful
//!   `/wmts/1.0.0/WMTSCapabilities.xml` and `/wmts/1.0.0/NAME/default/{set}/{matrix}/{row}/{col}.{ext}`;
//! - XYZ: `/xyz/NAME/{z}/{x}/{y}.{ext}` and TileJSON 3.0.0 at `/xyz/NAME.json`, for Web Mercator
//!   schemes whose levels are zoom levels only.
//!
//! Tiles are sent as stored (never re-encoded; a PNG stored without the first four bytes of its
//! signature, as ArcGIS wrote some, gets them back as the mount shows it), with the Content-Type
//! of what their bytes are (sniffed per tile: a MIXED cache holds PNG and JPEG), a strong ETag
//! (the CRC-32 and length of the bytes), `Cache-Control: public, max-age=N` and `Access-Control-Allow-Origin: *`. Client
//! errors are 4xx naming what is wrong; a failure to read a cache is a 500 with the message (and
//! a log line), a failed render a 502.

pub mod describe;
pub mod http;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cache::Cache;
use crate::error::Error;
use crate::format::conf::TileScheme;
use crate::format::pixels::as_image_file;
use crate::format::sniff::{sniff, ImageKind};
use crate::format::TileAddr;
use crate::render::Renderer;

/// One cache served under a name.
pub struct Layer {
    /// The name in URLs (`/xyz/NAME/…`, the WMTS layer, the ArcGIS service).
    pub name: String,
    /// The cache the tiles come from.
    pub cache: Arc<Cache>,
    /// Renders tiles the cache lacks (`--source`), as the mount does.
    pub renderer: Option<Arc<Renderer>>,
}

/// How tiles are answered.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `Cache-Control: public, max-age=N` of tiles, seconds.
    pub max_age: u32,
    /// Sent with 200 for a tile the cache lacks (`--blank-tile FILE`), instead of a 404.
    pub blank_tile: Option<Arc<Vec<u8>>>,
    /// `http://HOST:PORT` for absolute URLs when a request has no `Host` header.
    pub base_url: String,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_age: 3600,
            blank_tile: None,
            base_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// An HTTP request as the service needs it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, …
    pub method: &'a str,
    /// The request target: path and query (`/xyz/a/1/0/0.png?x=1`), percent-encoded.
    pub target: &'a str,
    /// Header names and values (names in any case).
    pub headers: &'a [(String, String)],
}

impl Request<'_> {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The answer: status, headers and body. For `HEAD` the body is empty and `content_length` is the
/// length the `GET` body would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code (200, 304, 400, 404, 405, 500, 502).
    pub status: u16,
    /// Header names and values; an empty value is not sent.
    pub headers: Vec<(&'static str, String)>,
    /// The body (empty for `HEAD` and 304).
    pub body: Vec<u8>,
    /// The `Content-Length` to send (the body's, or for `HEAD` the `GET` body's).
    pub content_length: usize,
}

impl Response {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![
                ("Content-Type", content_type.to_string()),
                ("Access-Control-Allow-Origin", "*".into()),
            ],
            content_length: body.len(),
            body,
        }
    }

    /// A plain-text answer (errors, `/healthz`): `msg` and a newline.
    fn text(status: u16, msg: &str) -> Response {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            format!("{msg}\n").into_bytes(),
        )
    }

    /// The value of header `name` (any case), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request that cannot be answered with what was asked: status and message.
#[derive(Debug)]
struct Refusal(u16, String);

fn not_found(msg: impl Into<String>) -> Refusal {
    Refusal(404, msg.into())
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal(400, msg.into())
}

/// Counters of a service since it started.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    tiles: AtomicU64,
    tile_bytes: AtomicU64,
    not_modified: AtomicU64,
    not_found: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
}

/// What a service has answered since it started (`--metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServeStats {
    /// Requests answered, whatever their status.
    pub requests: u64,
    /// Tiles sent with 200 (blank tiles included, `HEAD` too).
    pub tiles: u64,
    /// Bytes of those tiles (`HEAD`: none).
    pub tile_bytes: u64,
    /// 304 Not Modified answers.
    pub not_modified: u64,
    /// 404 answers (missing tiles, levels, names, paths).
    pub not_found: u64,
    /// Other 4xx answers (bad numbers, bad WMTS parameters, methods).
    pub client_errors: u64,
    /// 5xx answers (a cache that cannot be read, a failed render).
    pub server_errors: u64,
}

/// The caches served and how; shared by the worker threads (`Arc<Service>`).
pub struct Service {
    layers: Vec<Layer>,
    opts: ServeOptions,
    counters: Counters,
}

/// Whether `name` can stand in a URL path segment and an XML identifier as it is.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
}

impl Service {
    /// A service over `layers`. Errors (naming the name): a name used twice, a name that is not
    /// letters, digits, `_`, `-` and `.` (it goes into URLs and XML as it is).
    pub fn new(layers: Vec<Layer>, opts: ServeOptions) -> Result<Service, String> {
        let mut seen = BTreeSet::new();
        for l in &layers {
            if !valid_name(&l.name) {
                return Err(format!(
                    "{:?} ({}): a cache name may hold letters, digits, '_', '-' and '.' only \
                     (and not start with '.'); name it with NAME=CACHE",
                    l.name,
                    l.cache.location()
                ));
            }
            if !seen.insert(l.name.as_str()) {
                let first = layers.iter().find(|o| o.name == l.name).expect("seen");
                return Err(format!(
                    "the name {:?} is given to two caches ({} and {}); name one with NAME=CACHE",
                    l.name,
                    first.cache.location(),
                    l.cache.location()
                ));
            }
        }
        Ok(Service {
            layers,
            opts,
            counters: Counters::default(),
        })
    }

    /// The layers served, in the order given.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The options the service answers with.
    pub fn options(&self) -> &ServeOptions {
        &self.opts
    }

    /// The counters so far.
    pub fn stats(&self) -> ServeStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServeStats {
            requests: g(&c.requests),
            tiles: g(&c.tiles),
            tile_bytes: g(&c.tile_bytes),
            not_modified: g(&c.not_modified),
            not_found: g(&c.not_found),
            client_errors: g(&c.client_errors),
            server_errors: g(&c.server_errors),
        }
    }

    fn layer(&self, name: &str) -> Result<&Layer, Refusal> {
        self.layers.iter().find(|l| l.name == name).ok_or_else(|| {
            not_found(format!(
                "no cache named {name:?} here (served: {})",
                self.layers
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// `http://HOST` of absolute URLs: the request's `Host`, else [`ServeOptions::base_url`].
    fn base(&self, req: &Request) -> String {
        match req.header("Host") {
            Some(h) if !h.is_empty() && !h.contains(['/', '"', '<', '>', ' ']) => {
                format!("http://{h}")
            }
            _ => self.opts.base_url.clone(),
        }
    }

    /// Answers one request. Never panics on any input; a failure to read a cache is a 500 naming
    /// the cache and the error (and logged).
    pub fn handle(&self, req: &Request) -> Response {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let head = req.method.eq_ignore_ascii_case("HEAD");
        let resp = if head || req.method.eq_ignore_ascii_case("GET") {
            match self.route(req) {
                Ok(r) => r,
                Err(Refusal(status, msg)) => {
                    if status >= 500 {
                        tracing::error!("{} {}: {msg}", req.method, req.target);
                    }
                    Response::text(status, &msg)
                }
            }
        } else if req.method.eq_ignore_ascii_case("OPTIONS") {
            let mut r = Response::new(204, "text/plain", Vec::new());
            r.headers.push(("Allow", "GET, HEAD, OPTIONS".into()));
            r.headers
                .push(("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS".into()));
            r.headers
                .push(("Access-Control-Allow-Headers", "If-None-Match".into()));
            r
        } else {
            Response::text(
                405,
                &format!("{}: only GET and HEAD are served here", req.method),
            )
            .with("Allow", "GET, HEAD, OPTIONS")
        };
        let c = &self.counters;
        match resp.status {
            304 => c.not_modified.fetch_add(1, Ordering::Relaxed),
            404 => c.not_found.fetch_add(1, Ordering::Relaxed),
            400..=499 => c.client_errors.fetch_add(1, Ordering::Relaxed),
            500.. => c.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if head {
            Response {
                body: Vec::new(),
                ..resp
            }
        } else {
            resp
        }
    }

    fn route(&self, req: &Request) -> Result<Response, Refusal> {
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let path = percent_decode(path);
        let query = Query::parse(query);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            [""] => Ok(Response::new(
                200,
                "text/html; charset=utf-8",
                describe::index_html(self, &self.base(req)).into_bytes(),
            )),
            ["healthz"] => Ok(Response::text(200, "ok")),
            ["arcgis", "rest", "services"] => Ok(json(describe::catalog(self))),
            ["arcgis", "rest", "services", name, "MapServer"] => {
                let l = self.layer(name)?;
                Ok(json(describe::map_service(l).map_err(not_found)?))
            }
            ["arcgis", "rest", "services", name, "MapServer", "tile", level, row, col] => {
                let l = self.layer(name)?;
                let t = TileAddr::new(
                    number(level, "level")?,
                    number(row, "row")?,
                    number(col, "col")?,
                );
                self.tile(l, t, req)
            }
            ["wmts"] => self.wmts_kvp(req, &query),
            ["wmts", "1.0.0", "WMTSCapabilities.xml"] => Ok(self.capabilities(req)),
            ["wmts", "1.0.0", name, _style, set, matrix, row, file] => {
                let l = self.layer(name)?;
                let (col, _ext) = file.rsplit_once('.').unwrap_or((file, ""));
                let t = self.wmts_tile(l, set, matrix, row, col)?;
                self.tile(l, t, req)
            }
            ["xyz", file] if file.ends_with(".json") => {
                let l = self.layer(file.trim_end_matches(".json"))?;
                let s = xyz_scheme(l)?;
                Ok(json(describe::tilejson(l, s, &self.base(req))))
            }
            ["xyz", name, z, x, file] => {
                let l = self.layer(name)?;
                xyz_scheme(l)?;
                let (y, _ext) = file.rsplit_once('.').unwrap_or((file, ""));
                let t = TileAddr::new(number(z, "z")?, number(y, "y")?, number(x, "x")?);
                self.tile(l, t, req)
            }
            _ => Err(not_found(format!(
                "{path}: no such route (see / for the caches and their URLs)"
            ))),
        }
    }

    fn capabilities(&self, req: &Request) -> Response {
        Response::new(
            200,
            "application/xml; charset=utf-8",
            describe::wmts_capabilities(self, &self.base(req)).into_bytes(),
        )
    }

    /// `/wmts?SERVICE=WMTS&REQUEST=…` (parameter names in any case, as OGC 07-057r7 §7 says).
    fn wmts_kvp(&self, req: &Request, q: &Query) -> Result<Response, Refusal> {
        if let Some(s) = q.get("SERVICE") {
            if !s.eq_ignore_ascii_case("WMTS") {
                return Err(bad(format!("SERVICE={s}: only WMTS is served here")));
            }
        }
        let request = q
            .get("REQUEST")
            .ok_or_else(|| bad("REQUEST missing: GetCapabilities or GetTile"))?;
        if request.eq_ignore_ascii_case("GetCapabilities") {
            return Ok(self.capabilities(req));
        }
        if !request.eq_ignore_ascii_case("GetTile") {
            return Err(bad(format!(
                "REQUEST={request}: GetCapabilities and GetTile are served here"
            )));
        }
        let need = |k: &str| {
            q.get(k)
                .ok_or_else(|| bad(format!("GetTile: parameter {k} missing")))
        };
        let l = self.layer(need("LAYER")?)?;
        let t = self.wmts_tile(
            l,
            need("TILEMATRIXSET")?,
            need("TILEMATRIX")?,
            need("TILEROW")?,
            need("TILECOL")?,
        )?;
        self.tile(l, t, req)
    }

    /// The tile a WMTS request names: the matrix set must be the layer's, the matrix one of its
    /// levels.
    fn wmts_tile(
        &self,
        l: &Layer,
        set: &str,
        matrix: &str,
        row: &str,
        col: &str,
    ) -> Result<TileAddr, Refusal> {
        if set != l.name {
            return Err(bad(format!(
                "TileMatrixSet {set:?}: layer {} has the tile matrix set {:?} only",
                l.name, l.name
            )));
        }
        Ok(TileAddr::new(
            number(matrix, "TileMatrix")?,
            number(row, "TileRow")?,
            number(col, "TileCol")?,
        ))
    }

    /// Tile `t` of `l`: stored, else rendered (`--source`), else the blank tile or 404.
    fn tile(&self, l: &Layer, t: TileAddr, req: &Request) -> Result<Response, Refusal> {
        if let Some(s) = l.cache.scheme() {
            if s.lod(t.level).is_none() {
                return Err(not_found(format!(
                    "{}: no level {} (its tiling scheme has {})",
                    l.name,
                    t.level,
                    levels_text(s)
                )));
            }
        }
        let stored = l.cache.tile(t).map_err(|e| {
            Refusal(
                500,
                format!(
                    "{}: reading tile {t} of {}: {e}",
                    l.name,
                    l.cache.location()
                ),
            )
        })?;
        if let Some(b) = stored {
            return Ok(self.tile_response(l, &b, req));
        }
        let bytes: Arc<Vec<u8>> = match &l.renderer {
            Some(r) if r.renderable(t) => match r.get(t) {
                Ok(b) => b,
                Err(Error::NotFound(_)) => self.missing(l, t)?,
                Err(e) => return Err(Refusal(502, format!("{}: rendering tile {t}: {e}", l.name))),
            },
            _ => self.missing(l, t)?,
        };
        Ok(self.tile_response(l, &bytes, req))
    }

    /// The blank tile, or a 404 naming the tile.
    fn missing(&self, l: &Layer, t: TileAddr) -> Result<Arc<Vec<u8>>, Refusal> {
        self.opts.blank_tile.clone().ok_or_else(|| {
            not_found(format!(
                "{}: no tile at level {}, row {}, col {}",
                l.name, t.level, t.row, t.col
            ))
        })
    }

    /// The answer with tile `bytes`: as stored, except that a PNG stored without the first four
    /// bytes of its signature (as ArcGIS wrote some) gets them back, as the mount shows it
    /// ([`as_image_file`]); browsers do not read it otherwise.
    fn tile_response(&self, l: &Layer, bytes: &[u8], req: &Request) -> Response {
        let body = as_image_file(bytes).into_owned();
        let bytes = &body[..];
        let tag = etag(bytes);
        let common = |r: Response| {
            r.with("ETag", tag.clone()).with(
                "Cache-Control",
                format!("public, max-age={}", self.opts.max_age),
            )
        };
        if req
            .header("If-None-Match")
            .is_some_and(|v| matches(v, &tag))
        {
            let mut r = common(Response::new(304, "", Vec::new()));
            r.headers.retain(|(n, _)| *n != "Content-Type");
            return r;
        }
        let kind = sniff(bytes).unwrap_or_else(|| l.cache.default_kind());
        let len = body.len() as u64;
        let mut r = common(Response::new(200, content_type(kind), body));
        if kind == ImageKind::Pbf {
            // ArcGIS stores vector tiles gzip'ed (sniff: 1f 8b); they are sent as stored.
            r.headers.push(("Content-Encoding", "gzip".into()));
        }
        self.counters.tiles.fetch_add(1, Ordering::Relaxed);
        if !req.method.eq_ignore_ascii_case("HEAD") {
            self.counters.tile_bytes.fetch_add(len, Ordering::Relaxed);
        }
        r
    }
}

/// The Content-Type of tiles of `kind`.
pub fn content_type(kind: ImageKind) -> &'static str {
    match kind {
        ImageKind::Png => "image/png",
        ImageKind::Jpeg => "image/jpeg",
        ImageKind::Lerc => "application/octet-stream",
        ImageKind::Pbf => "application/vnd.mapbox-vector-tile",
    }
}

/// The strong entity tag of tile bytes: `"CRC-LEN"`, the CRC-32 (IEEE, crc32fast) and the length
/// of the bytes in hex. Equal bytes give equal tags on every replica, whatever the storage.
pub fn etag(bytes: &[u8]) -> String {
    format!("\"{:08x}-{:x}\"", crc32fast::hash(bytes), bytes.len())
}

/// Whether an `If-None-Match` value (`*`, or tags separated by commas, weak or strong) matches
/// `tag` (RFC 9110 §13.1.2: the weak comparison).
fn matches(value: &str, tag: &str) -> bool {
    value.split(',').map(str::trim).any(|v| {
        v == "*" || v.strip_prefix("W/").unwrap_or(v) == tag.strip_prefix("W/").unwrap_or(tag)
    })
}

fn json(v: serde_json::Value) -> Response {
    Response::new(
        200,
        "application/json; charset=utf-8",
        serde_json::to_vec_pretty(&v).unwrap_or_default(),
    )
}

/// A path segment or parameter as a number, or a 400 naming it.
fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, Refusal> {
    s.parse()
        .map_err(|_| bad(format!("{what} {s:?}: not a number in range")))
}

/// The scheme of `l` when XYZ can serve it (Web Mercator, 256 px, levels numbered by zoom), else
/// a 404 saying why.
fn xyz_scheme(l: &Layer) -> Result<&TileScheme, Refusal> {
    let s = l.cache.scheme().ok_or_else(|| {
        not_found(format!(
            "{}: no tiling scheme (no conf.xml), so no XYZ tiles",
            l.name
        ))
    })?;
    match crate::format::mbtiles::refusal(s) {
        None => Ok(s),
        Some(why) => Err(not_found(format!(
            "{}: not served as XYZ, which numbers Web Mercator tiles by zoom as MBTiles does: {why}; \
             use /wmts or /arcgis/rest/services/{}/MapServer",
            l.name, l.name
        ))),
    }
}

/// A scheme's levels as `0-19` or `0, 2, 5`.
fn levels_text(s: &TileScheme) -> String {
    let v: Vec<u8> = s.lods.iter().map(|l| l.level).collect();
    match (v.first(), v.last()) {
        (Some(a), Some(b)) if usize::from(b - a) + 1 == v.len() => format!("levels {a}-{b}"),
        (Some(_), _) => format!(
            "levels {}",
            v.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "no levels".into(),
    }
}

/// Decodes `%XX` escapes (and `+` in queries is left to [`Query::parse`]); invalid escapes stay.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters: names compared in any case.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (
                        percent_decode(&k.replace('+', " ")),
                        percent_decode(&v.replace('+', " ")),
                    )
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests;
