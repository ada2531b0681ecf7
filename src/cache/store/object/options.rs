//! Settings of the S3 client of a cache in an object store: endpoint and region (besides the
//! `AWS_*` environment), time limits, and how writes are coordinated (`-o rw` probe,
//! `--single-writer`). Given on the command line as mount options (`-o endpoint=URL,region=R,
//! timeout=SECONDS`); other commands take the same settings from the environment.

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

/// Default time limit of one request and of its retries together (see [`ObjectOptions::timeout`]).
/// Above the ~10 s a Ceph placement group stalls while a stopped OSD is noticed
/// (`shared/OBJECT-STORE.md`), below the 3 minutes `object_store` retries by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest wait to open a connection (a stopped gateway refuses at once; an unreachable host
/// does not).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries of a failed request (5xx, timeout, refused connection) inside the time limit.
pub const MAX_RETRIES: usize = 4;

/// How writers of the cache are coordinated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteCoordination {
    /// Conditional PUTs (`If-Match` / `If-None-Match: *`), not probed (batch jobs: a store that
    /// ignores the conditions is found out only by a writable mount's probe).
    #[default]
    Conditional,
    /// Conditional PUTs, after a probe at open proved that the store refuses a wrong `If-Match`
    /// (`-o rw` mounts). A store that does not is refused by name.
    Probed,
    /// Unconditional PUTs: the operator promises that this is the only writer
    /// (`--single-writer`), e.g. on a store without compare-and-swap (Garage 2.5).
    SingleWriter,
}

/// Client settings of a cache in an object store. Unset values come from the `AWS_*`
/// environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, …) as the `object_store` crate reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOptions {
    /// The store's URL (`http://127.0.0.1:7480`), over `AWS_ENDPOINT_URL`. An `http://` endpoint
    /// given here is allowed without `AWS_ALLOW_HTTP`.
    pub endpoint: Option<String>,
    /// The region requests are signed for, over `AWS_REGION`.
    pub region: Option<String>,
    /// Time limit of one request (connect included; connecting alone at most
    /// [`MAX_CONNECT_TIMEOUT`]) and of its retries together: a store that does not answer gives
    /// an error after about this long (EIO through a mount).
    pub timeout: Duration,
    /// How writers are coordinated.
    pub writes: WriteCoordination,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        ObjectOptions {
            endpoint: None,
            region: None,
            timeout: DEFAULT_TIMEOUT,
            writes: WriteCoordination::default(),
        }
    }
}

impl ObjectOptions {
    /// `b` with these settings applied over what it read from the environment.
    pub(crate) fn apply(&self, mut b: AmazonS3Builder) -> AmazonS3Builder {
        if let Some(ep) = &self.endpoint {
            if ep.starts_with("http://") {
                b = b.with_allow_http(true);
            }
            b = b.with_endpoint(ep);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
        let timeout = self.timeout.max(Duration::from_millis(1));
        b = b
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                ms(timeout),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                ms(timeout.min(MAX_CONNECT_TIMEOUT)),
            );
        b.with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: (timeout / 4).max(Duration::from_millis(100)),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: timeout,
        })
    }
}

/// `endpoint` with any user information (`user:password@`) replaced by `***@`, for messages.
pub fn shown_endpoint(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_shown_without_user_information() {
        assert_eq!(
            shown_endpoint("http://key:secret@127.0.0.1:7480/x"),
            "http://***@127.0.0.1:7480/x"
        );
        assert_eq!(
            shown_endpoint("http://127.0.0.1:7480"),
            "http://127.0.0.1:7480"
        );
    }

    #[test]
    fn settings_reach_the_client_configuration() {
        let o = ObjectOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("eu-test-1".into()),
            timeout: Duration::from_secs(3),
            writes: WriteCoordination::Probed,
        };
        let b = o.apply(AmazonS3Builder::new().with_bucket_name("b"));
        let get = |k: AmazonS3ConfigKey| b.get_config_value(&k);
        assert_eq!(
            get(AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(get(AmazonS3ConfigKey::Region).as_deref(), Some("eu-test-1"));
        assert_eq!(
            get(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout)).as_deref(),
            Some("3000ms")
        );
        assert_eq!(
            get(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );
    }
}
