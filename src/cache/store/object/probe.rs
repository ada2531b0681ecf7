//! The compare-and-swap probe a writable mount runs at open: a store that accepts a PUT with a
//! wrong `If-Match` (Garage 2.5 ignores both `If-Match` and `If-None-Match`, measured in
//! `shared/OBJECT-STORE.md`) cannot keep two writers from losing each other's tiles, so `-o rw`
//! on it is refused unless the operator promises a single writer (`--single-writer`). The probe
//! also learns whether the store wants `If-Match` ETags unquoted (Ceph RGW 16).

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::client::block;
use super::explain::{obj_err_key, scrub};
use crate::cache::url::ObjectUrl;
use crate::error::{Error, Result};

/// The name (below the cache's prefix) of the probe object, with what makes it unique appended.
pub const PROBE_NAME: &str = ".bundlefs-cas-probe";

/// An ETag no store hands out: a PUT conditional on it must fail.
const WRONG_ETAG: &str = "\"bundlefs-probe-wrong-etag-0000\"";

/// What the probe learnt of a store that honours conditional PUTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasProbe {
    /// The store compares `If-Match` with the unquoted ETag (Ceph RGW 16): send it unquoted.
    pub unquoted_etags: bool,
}

/// Probes the store of the cache at `url` with a small object under its prefix (deleted
/// afterwards, also when the probe fails): `If-None-Match: *` on an existing object and a wrong
/// `If-Match` must both be refused, and `If-Match` with the object's own ETag (quoted as sent,
/// else unquoted) must succeed. `store_name` names the store in the refusal (its endpoint).
///
/// Errors: the store accepted a write it had to refuse, or refused its own ETag (each naming
/// the store, the URL and `--single-writer`); a request that failed (naming the probe object).
pub fn probe(url: &ObjectUrl, store: &dyn ObjectStore, store_name: &str) -> Result<CasProbe> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let rel = format!("{PROBE_NAME}-{}-{nanos}", std::process::id());
    let key_s = url.key(&rel);
    let key = Key::from(key_s.as_str());
    let result = run(url, store, store_name, &key, &key_s);
    match block(store.delete(&key)) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(
            "{}://{}/{key_s}: could not delete the probe object: {}",
            url.scheme.as_str(),
            url.bucket,
            scrub(&e.to_string())
        ),
    }
    result
}

fn run(
    url: &ObjectUrl,
    store: &dyn ObjectStore,
    store_name: &str,
    key: &Key,
    key_s: &str,
) -> Result<CasProbe> {
    let put = |mode: PutMode, body: &'static [u8]| {
        block(store.put_opts(
            key,
            PutPayload::from(Bytes::from_static(body)),
            PutOptions {
                mode,
                ..Default::default()
            },
        ))
    };
    let update = |tag: &str| {
        PutMode::Update(UpdateVersion {
            e_tag: Some(tag.to_string()),
            version: None,
        })
    };
    let no_cas = |what: &str| {
        Error::invalid(format!(
            "{url}: the object store at {store_name} {what}, so it cannot keep two writing \
             mounts from losing each other's tiles (no compare-and-swap, as Garage 2.5); \
             -o rw is refused: mount read-only, or pass --single-writer to promise that this \
             is the only mount or job writing this cache (writes then go unconditionally)"
        ))
    };
    let err = |e: object_store::Error| obj_err_key(url, key_s, e);
    let first = put(PutMode::Create, b"bundlefs CAS probe 1").map_err(err)?;
    let etag = match first.e_tag {
        Some(t) => t,
        None => block(store.head(key))
            .map_err(err)?
            .e_tag
            .ok_or_else(|| no_cas("sends no ETags"))?,
    };
    match put(PutMode::Create, b"bundlefs CAS probe 2") {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {}
        Ok(_) => {
            return Err(no_cas(
                "accepted a PUT with If-None-Match: * over an existing object",
            ))
        }
        Err(e) => return Err(err(e)),
    }
    match put(update(WRONG_ETAG), b"bundlefs CAS probe 3") {
        Err(object_store::Error::Precondition { .. }) => {}
        Ok(_) => return Err(no_cas("accepted a PUT with a wrong If-Match")),
        Err(e) => return Err(err(e)),
    }
    match put(update(&etag), b"bundlefs CAS probe 4") {
        Ok(_) => {
            return Ok(CasProbe {
                unquoted_etags: false,
            })
        }
        Err(object_store::Error::Precondition { .. }) => {}
        Err(e) => return Err(err(e)),
    }
    let unquoted = etag.trim_matches('"');
    if unquoted != etag {
        match put(update(unquoted), b"bundlefs CAS probe 5") {
            Ok(_) => {
                tracing::info!(
                    "{url}: the store compares If-Match with unquoted ETags (Ceph RGW 16); \
                     sending them unquoted"
                );
                return Ok(CasProbe {
                    unquoted_etags: true,
                });
            }
            Err(object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Err(no_cas(
        "refused a PUT with If-Match of the object's own ETag",
    ))
}
