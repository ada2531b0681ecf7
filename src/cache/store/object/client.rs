//! Building the client of an object store: the `object_store` crate's S3 or Azure Blob client
//! for an [`ObjectUrl`], from the environment (`AWS_*`, `AZURE_*`) with [`ObjectOptions`]'s
//! settings over it (endpoint, region, time limits), and the private tokio runtime that client
//! runs on behind the synchronous facade ([`block`]). Credentials come from the environment and
//! never reach a message ([`super::explain`]).

use std::sync::{Arc, OnceLock};

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::ObjectStore;

use super::explain::scrub;
use super::options::ObjectOptions;
use crate::cache::url::{ObjectUrl, Scheme};
use crate::error::{Error, Result};

/// The private runtime the async client runs on (two workers: requests wait on the network).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bundlefs-s3")
            .enable_all()
            .build()
            .expect("a tokio runtime for the object store client")
    })
}

/// Runs `f` (a request of the async client) to completion on the private runtime; the
/// synchronous facade every object layout goes through.
pub(crate) fn block<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// The client of the store `url` names (S3 or Azure Blob, per its scheme), set up from the
/// environment (`AWS_*`, or `AZURE_*`: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
/// `AZURE_STORAGE_USE_EMULATOR` …), with the default time limits ([`ObjectOptions`]). Errors:
/// settings the client refuses, named without secrets.
pub fn store_client(url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>> {
    store_client_with(url, &ObjectOptions::default())
}

/// [`store_client`] with another endpoint (`http://HOST:PORT`) than the environment's, e.g. a
/// second gateway of the same store.
pub fn store_client_at(url: &ObjectUrl, endpoint: Option<&str>) -> Result<Arc<dyn ObjectStore>> {
    let o = ObjectOptions {
        endpoint: endpoint.map(str::to_string),
        ..ObjectOptions::default()
    };
    store_client_with(url, &o)
}

/// [`store_client`] with `o`'s settings over the environment's, and the credentials found as
/// `credentials` says (an AWS profile of `-o profile`/`AWS_PROFILE`/the files, else the client's
/// own sources). Errors: a profile asked for and not found (named with the files), settings the
/// client refuses; never a secret.
pub fn store_client_with(url: &ObjectUrl, o: &ObjectOptions) -> Result<Arc<dyn ObjectStore>> {
    let failed = |e: object_store::Error| {
        Error::invalid(format!(
            "{url}: cannot set up the {} client from the {} environment: {}",
            match url.scheme {
                Scheme::S3 => "S3",
                Scheme::Azure => "Azure Blob",
            },
            url.scheme.env_vars(),
            scrub(&e.to_string())
        ))
    };
    let bad = |e: Error| Error::invalid(format!("{url}: {e}"));
    Ok(match url.scheme {
        Scheme::S3 => {
            let b = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
            let (b, source) = super::credentials::apply_aws(b, o).map_err(bad)?;
            tracing::debug!("{url}: credentials from {source:?}");
            Arc::new(o.apply(b).map_err(bad)?.build().map_err(failed)?)
        }
        Scheme::Azure => {
            let b = MicrosoftAzureBuilder::from_env().with_container_name(&url.bucket);
            let b = super::credentials::apply_azure(b, o).map_err(bad)?;
            Arc::new(o.apply_azure(b).map_err(bad)?.build().map_err(failed)?)
        }
    })
}
