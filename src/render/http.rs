//! The HTTP client of the map-server sources: one `ureq` agent per source (so connections are
//! reused), a whole-request timeout, no proxy unless asked, and errors that name the URL and say
//! whether a retry may help.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::format::MAX_TILE_SIZE;
use crate::{Error, Result};

/// How the client connects.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Limit for one request, from connecting to the last body byte.
    pub timeout: Duration,
    /// `None`: connect directly (the default, whatever the environment says); `Some("env")`: use
    /// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`/`ALL_PROXY`; `Some(url)`: this proxy.
    pub proxy: Option<String>,
    /// Idle connections kept open per host for reuse.
    pub idle_per_host: usize,
    /// At most this many requests a second to the source (`render --rate`), spread evenly: each
    /// request starts at least 1/rate s after the one before, whichever thread sends it. None:
    /// no cap.
    pub rate: Option<f64>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            proxy: None,
            idle_per_host: 8,
            rate: None,
        }
    }
}

/// A response with a 2xx status.
#[derive(Debug)]
pub struct Fetched {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A shared HTTP agent (clones share the connection pool).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    /// With a rate cap: the interval between request starts and when the next may start.
    pace: Option<(Duration, Arc<Mutex<Instant>>)>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// The URL with the values of `token`-like parameters hidden, for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if ["token", "key", "apikey", "access_token"]
                    .contains(&k.to_ascii_lowercase().as_str()) =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

impl HttpClient {
    pub fn new(opts: &HttpOptions) -> Result<Self> {
        let proxy = match opts.proxy.as_deref() {
            None => None,
            Some("env") => ureq::Proxy::try_from_env(),
            Some(url) => Some(
                ureq::Proxy::new(url).map_err(|e| Error::invalid(format!("proxy {url:?}: {e}")))?,
            ),
        };
        let config = ureq::Agent::config_builder()
            .proxy(proxy)
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(opts.idle_per_host.max(1))
            .max_idle_connections(opts.idle_per_host.max(1) * 4)
            .user_agent(concat!("bundlefs/", env!("CARGO_PKG_VERSION")))
            .build();
        let pace = match opts.rate {
            None => None,
            Some(r) if r.is_finite() && r > 0.0 => Some((
                Duration::from_secs_f64(1.0 / r),
                Arc::new(Mutex::new(Instant::now())),
            )),
            Some(r) => {
                return Err(Error::invalid(format!(
                    "--rate {r}: give the most requests a second, a number above 0"
                )))
            }
        };
        Ok(HttpClient {
            agent: ureq::Agent::new_with_config(config),
            pace,
        })
    }

    /// With a rate cap, waits for this request's turn: the slot after the last one taken.
    fn wait_turn(&self) {
        let Some((every, next)) = &self.pace else {
            return;
        };
        let start = {
            let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*n).max(Instant::now());
            *n = start + *every;
            start
        };
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
    }

    /// GETs `url`; a non-2xx status is an error quoting the start of the body.
    pub fn get(&self, url: &str) -> Result<Fetched> {
        self.wait_turn();
        let shown = redact(url);
        let started = Instant::now();
        let fail = |e: ureq::Error| {
            let retryable = matches!(
                e,
                ureq::Error::Timeout(_)
                    | ureq::Error::Io(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled
            );
            let msg = match &e {
                ureq::Error::Timeout(t) => {
                    format!(
                        "timed out ({t}) after {:.1} s",
                        started.elapsed().as_secs_f64()
                    )
                }
                _ => e.to_string(),
            };
            Error::Source {
                what: shown.clone(),
                msg,
                retryable,
            }
        };
        let mut resp = self.agent.get(url).call().map_err(fail)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_TILE_SIZE as u64)
            .read_to_vec()
            .map_err(fail)?;
        tracing::debug!(
            "GET {shown} -> {status}, {} bytes, {:.1} ms",
            body.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        if !(200..300).contains(&status) {
            return Err(Error::Source {
                what: shown,
                msg: format!("HTTP {status}: {}", super::pixels::quote(&body)),
                retryable: status >= 500 || status == 408 || status == 429,
            });
        }
        Ok(Fetched { content_type, body })
    }
}

/// Appends `key=value` pairs to a URL that may already hold a query.
pub fn with_query(base: &str, pairs: &[(&str, String)]) -> String {
    let mut url = base.to_string();
    let mut sep = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    for (k, v) in pairs {
        url.push_str(sep);
        url.push_str(k);
        url.push('=');
        url.push_str(v);
        sep = "&";
    }
    url
}

/// Percent-encodes a query value (everything but unreserved characters and `,` `:`).
pub fn encode_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL split into its base (scheme, host, path) and raw `key=value` query pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitUrl {
    pub base: String,
    pub params: Vec<(String, String)>,
}

impl SplitUrl {
    /// Splits a URL given by the user; only `http://` and `https://` are accepted.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "{url:?}: want an http:// or https:// URL"
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let params = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let split = SplitUrl {
            base: base.to_string(),
            params,
        };
        ureq::http::Uri::try_from(split.join(&[]).as_str())
            .map_err(|e| Error::invalid(format!("{url:?}: not a valid URL: {e}")))?;
        Ok(split)
    }

    /// The value of a parameter, by case-insensitive name.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Removes a parameter (case-insensitive) and returns its value.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let i = self
            .params
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))?;
        Some(self.params.remove(i).1)
    }

    /// The URL with the remaining parameters followed by `extra`.
    pub fn join(&self, extra: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, String)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        pairs.extend(extra.iter().cloned());
        with_query(&self.base, &pairs)
    }
}

/// A number as a URL wants it: plain decimal notation (never an exponent), shortest exact digits.
pub fn num(v: f64) -> String {
    let s = format!("{v}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_join_and_redact() {
        let mut u = SplitUrl::parse("http://h:8/a/MapServer?token=abc&Layers=show:1").unwrap();
        assert_eq!(u.get("layers"), Some("show:1"));
        assert_eq!(u.take("LAYERS").as_deref(), Some("show:1"));
        assert_eq!(
            u.join(&[("f", "image".into())]),
            "http://h:8/a/MapServer?token=abc&f=image"
        );
        assert_eq!(
            redact("http://h/x?a=1&token=abc"),
            "http://h/x?a=1&token=***"
        );
        assert!(SplitUrl::parse("ftp://h/x").is_err());
        assert!(SplitUrl::parse("http://h/a b").is_err());
        assert_eq!(num(-3.7e-9), "-0.0000000037");
        assert_eq!(num(-20037508.342787), "-20037508.342787");
        assert_eq!(num(-0.0), "0");
        assert_eq!(
            encode_value("{\"wkt\":\"A B\"}"),
            "%7B%22wkt%22:%22A%20B%22%7D"
        );
    }
}
