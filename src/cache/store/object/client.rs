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

/// The private runtime the async client runs on: a current-thread runtime, driven by whichever
/// thread waits in [`block`] (tokio lets many threads call `block_on` on one: one at a time drives
/// the connections and timers, the others poll their own futures and wait).
///
/// Not a multi-thread runtime with workers of its own: there a request goes from the waiting
/// thread to a worker (which writes it), its answer from the worker back to the waiting thread,
/// two thread wake-ups per request; about 70 µs of a 1 ms range GET from Ceph on loopback
/// (`scripts/bench-objstore.sh`, doc/serve.md). Here the thread that waits does the request
/// itself.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the object store client")
    })
}

/// Runs `f` (a request of the async client) to completion on the private runtime; the
/// synchronous facade every object layout goes through.
///
/// Between two calls nobody drives the runtime, so what the network brought meanwhile (a store
/// closing an idle kept-alive connection) waits in the driver. Two yields before `f` let the
/// runtime take it in (the first polls the driver, the second runs the connection tasks it woke):
/// a connection the store closed leaves the pool before `f` picks one, and no request goes out on
/// it (a conditional PUT on a dead connection is not retried by the client).
pub(crate) fn block<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(async {
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        f.await
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path as Key;
    use object_store::{PutMode, PutOptions, PutPayload};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A store on 127.0.0.1 that answers each request 200 on a kept-alive connection and then
    /// closes that connection 50 ms later (as a store or proxy closes idle connections): the next
    /// conditional PUT, 300 ms after the first, must go out on a new connection and succeed (the
    /// client does not retry a PUT sent on a connection the store had closed).
    #[test]
    fn a_connection_the_store_closed_while_idle_is_not_used_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answered = Arc::new(AtomicUsize::new(0));
        let a = answered.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; len];
                        std::io::Read::read_exact(&mut r, &mut body).unwrap();
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n",
                        );
                        a.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
                // Closed with the request answered, the client not told (no Connection: close).
                drop(conn);
            }
        });
        let store = AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .unwrap();
        let put = |name: &str| {
            block(store.put_opts(
                &Key::from(name),
                PutPayload::from_static(b"tile"),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            ))
        };
        put("a").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        put("b").unwrap_or_else(|e| panic!("the second PUT: {e}"));
        assert_eq!(answered.load(Ordering::SeqCst), 2);
    }
}
