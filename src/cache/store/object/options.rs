//! Settings of the S3 client of a cache in an object store: endpoint and region (besides the
//! `AWS_*` environment), time limits, and how writes are coordinated (`-o rw` probe,
//! `--single-writer`). Given on the command line as mount options (`-o endpoint=URL,region=R,
//! timeout=SECONDS`); other commands take the same settings from the environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, [`TIMEOUT_ENV`]).

use std::time::Duration;

use crate::error::{Error, Result};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

/// Default time limit of one request and of its retries together (see [`ObjectOptions::timeout`]).
/// Above the ~10 s a Ceph placement group stalls while a stopped OSD is noticed
/// (`shared/OBJECT-STORE.md`), below the 3 minutes `object_store` retries by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable giving [`ObjectOptions::timeout`] in seconds where no option does.
pub const TIMEOUT_ENV: &str = "BUNDLEFS_S3_TIMEOUT";

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

/// Client settings of a cache in an object store. Unset values come from the `AWS_*` (or `AZURE_*`)
/// environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, …) as the `object_store` crate reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    /// The store's URL (`http://127.0.0.1:7480`), over `AWS_ENDPOINT_URL`. An `http://` endpoint
    /// given here is allowed without `AWS_ALLOW_HTTP`.
    pub endpoint: Option<String>,
    /// The region requests are signed for, over `AWS_REGION`.
    pub region: Option<String>,
    /// Time limit of one request (connect included; connecting alone at most
    /// [`MAX_CONNECT_TIMEOUT`]) and of its retries together: a store that does not answer gives
    /// an error after about this long (EIO through a mount). None: [`TIMEOUT_ENV`] if set, else
    /// [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// How writers are coordinated.
    pub writes: WriteCoordination,
    /// `--cache-dir`: folder of the on-disk index cache (`object::disk`); None: indexes are
    /// kept in memory only.
    pub cache_dir: Option<std::path::PathBuf>,
    /// `--cache-size`: bound of the on-disk index cache in bytes; None:
    /// `disk::DEFAULT_CACHE_SIZE` (1 GiB).
    pub cache_size: Option<u64>,
    /// `-o profile=NAME`: the AWS profile whose keys sign requests (`credentials`), over the
    /// environment's keys.
    pub profile: Option<String>,
    /// `-o credentials_file=FILE`: the AWS shared credentials file (S3), or a file of
    /// `AZURE_STORAGE_*=VALUE` lines (Azure) (`credentials`).
    pub credentials_file: Option<std::path::PathBuf>,
}

impl ObjectOptions {
    /// The time limit in force: [`ObjectOptions::timeout`], else [`TIMEOUT_ENV`], else
    /// [`DEFAULT_TIMEOUT`]. Errors: a [`TIMEOUT_ENV`] that is not a number of seconds above 0.
    pub fn effective_timeout(&self) -> Result<Duration> {
        if let Some(t) = self.timeout {
            return Ok(t);
        }
        match std::env::var(TIMEOUT_ENV) {
            Err(_) => Ok(DEFAULT_TIMEOUT),
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{TIMEOUT_ENV}={v}: want a number of seconds above 0, like 20 or 2.5"
                    ))
                }),
        }
    }

    /// `b` with these settings applied over what it read from the environment. Errors as
    /// [`ObjectOptions::effective_timeout`].
    pub(crate) fn apply(&self, mut b: AmazonS3Builder) -> Result<AmazonS3Builder> {
        if let Some(ep) = &self.endpoint {
            if ep.starts_with("http://") {
                b = b.with_allow_http(true);
            }
            b = b.with_endpoint(ep);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        let (timeout, connect, retry) = self.limits()?;
        b = b
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), timeout)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                connect,
            );
        Ok(b.with_retry(retry))
    }

    /// `b` (an Azure Blob client from the `AZURE_*` environment) with these settings: the
    /// endpoint (an `http://` one allowed; e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`)
    /// and the time limits as for S3. Errors: `region=`, which Azure does not have.
    pub(crate) fn apply_azure(
        &self,
        mut b: MicrosoftAzureBuilder,
    ) -> Result<MicrosoftAzureBuilder> {
        if let Some(r) = &self.region {
            return Err(Error::invalid(format!(
                "region={r}: Azure Blob Storage has no region setting (the account's endpoint \
                 decides); leave it out for az:// caches"
            )));
        }
        if let Some(ep) = &self.endpoint {
            if ep.starts_with("http://") {
                b = b.with_allow_http(true);
            }
            b = b.with_endpoint(ep.clone());
        }
        let (timeout, connect, retry) = self.limits()?;
        b = b
            .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), timeout)
            .with_config(
                AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                connect,
            );
        Ok(b.with_retry(retry))
    }

    /// The client's time limits: request timeout and connect timeout (as the crate's config
    /// strings, `"20000ms"`) and the retry policy, all within [`ObjectOptions::effective_timeout`].
    fn limits(&self) -> Result<(String, String, RetryConfig)> {
        let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
        let timeout = self.effective_timeout()?.max(Duration::from_millis(1));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: (timeout / 4).max(Duration::from_millis(100)),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: timeout,
        };
        Ok((ms(timeout), ms(timeout.min(MAX_CONNECT_TIMEOUT)), retry))
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
    fn the_timeout_comes_from_the_option_else_the_environment_else_the_default() {
        // The only test that sets this variable.
        let o = ObjectOptions::default();
        std::env::remove_var(TIMEOUT_ENV);
        assert_eq!(o.effective_timeout().unwrap(), DEFAULT_TIMEOUT);
        std::env::set_var(TIMEOUT_ENV, "2.5");
        assert_eq!(o.effective_timeout().unwrap(), Duration::from_millis(2500));
        let given = ObjectOptions {
            timeout: Some(Duration::from_secs(7)),
            ..ObjectOptions::default()
        };
        assert_eq!(given.effective_timeout().unwrap(), Duration::from_secs(7));
        std::env::set_var(TIMEOUT_ENV, "soon");
        let e = o.effective_timeout().unwrap_err().to_string();
        std::env::remove_var(TIMEOUT_ENV);
        assert!(e.contains("BUNDLEFS_S3_TIMEOUT=soon"), "{e}");
    }

    #[test]
    fn settings_reach_the_client_configuration() {
        let o = ObjectOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("eu-test-1".into()),
            timeout: Some(Duration::from_secs(3)),
            writes: WriteCoordination::Probed,
            ..ObjectOptions::default()
        };
        let b = o
            .apply(AmazonS3Builder::new().with_bucket_name("b"))
            .unwrap();
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
