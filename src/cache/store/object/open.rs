//! Opening a cache in an object store, or making one: what is under a prefix ([`probe`]: conf.xml,
//! conf.cdi, and whether the level folders are under `_alllayers/` (ArcGIS layout) or at the
//! prefix (MapProxy layout)), which storage its keys show ([`detect`]: `.bundle` → Compact V2,
//! `.bundlx` beside → Compact V1, `Rxxxxxxxx/` row prefixes → exploded), and [`open`] /
//! [`open_in`], which set up the one [`Connection`] and the layout over it ([`V2Objects`],
//! [`V1Objects`] or [`ExplodedObjects`]), probing a writable mount's store for conditional writes
//! first. Also [`holds_cache`] (is there a cache at a URL) and [`put_file`] (conf.cdi beside one).

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};

use super::client::{block, store_client, store_client_with};
use super::connection::{Connection, Listings};
use super::disk;
use super::explain::{obj_err, rel_url, store_name};
use super::exploded::ExplodedObjects;
use super::options::WriteCoordination;
use super::v1::{self, V1Objects};
use super::v2::V2Objects;
use crate::cache::store::Storage;
use crate::cache::url::ObjectUrl;
use crate::cache::CacheOptions;
use crate::error::{Error, FormatContext, Result};
use crate::format::conf::StorageFormat;
use crate::format::exploded as names;

/// The folder (key segment) holding the level folders in the ArcGIS layout.
const ALLLAYERS: &str = "_alllayers";

/// What [`probe`] found under a prefix.
pub struct Found {
    /// conf.xml bytes, if any.
    pub conf_xml: Option<Bytes>,
    /// conf.cdi bytes, if any.
    pub cdi: Option<Bytes>,
    /// Whether the level folders are under `_alllayers` (ArcGIS layout) or at the prefix
    /// (MapProxy layout).
    pub arcgis_layout: bool,
}

/// A small object at `rel` under the prefix, None if it does not exist.
fn get_small(store: &dyn ObjectStore, url: &ObjectUrl, rel: &str) -> Result<Option<Bytes>> {
    let key = Key::from(url.key(rel));
    match block(async { store.get(&key).await?.bytes().await }) {
        Ok(b) => Ok(Some(b)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(obj_err(url, rel, e)),
    }
}

/// Writes a small object (conf.cdi) at `rel` under the cache at `url`, replacing it (client from
/// the environment, [`store_client`]). Errors: the client's settings, or the store's answer,
/// naming the object.
pub fn put_file(url: &ObjectUrl, rel: &str, bytes: &[u8]) -> Result<()> {
    let key = Key::from(url.key(rel));
    block(store_client(url)?.put(&key, PutPayload::from(Bytes::copy_from_slice(bytes))))
        .map_err(|e| obj_err(url, rel, e))?;
    Ok(())
}

/// True when the prefix at `url` holds a cache (conf.xml, `_alllayers/`, or `Lnn/` prefixes).
/// Errors: the client's settings, or a failed GET or listing, naming the object or prefix.
pub fn holds_cache(url: &ObjectUrl) -> Result<bool> {
    let client = store_client(url)?;
    let f = probe(url, client.as_ref())?;
    if f.arcgis_layout {
        return Ok(true);
    }
    let c = Connection::new(url.clone(), client, "", CacheOptions::default());
    Ok(!Listings::default().levels(&c)?.is_empty())
}

/// What a new cache in an object store gets: its storage (Compact V2 or exploded; Compact V1 is
/// read-only there and refused by name), conf.xml and conf.cdi bytes (written as given, conf.cdi
/// first, each replacing what is there).
pub struct NewCache<'a> {
    /// The storage format asked for.
    pub storage: StorageFormat,
    /// conf.xml bytes (None: MapProxy layout, level folders at the prefix).
    pub conf_xml: Option<&'a [u8]>,
    /// conf.cdi bytes.
    pub cdi: Option<&'a [u8]>,
}

/// A cache found (or made) at a URL: conf.xml and conf.cdi, the layout and the storage.
pub struct Opened {
    /// conf.xml bytes, if any.
    pub conf_xml: Option<Bytes>,
    /// conf.xml parsed (checked at open: a bad one is an error naming `s3://…/conf.xml`).
    pub conf: Option<crate::format::conf::ConfXml>,
    /// conf.cdi bytes, if any.
    pub cdi: Option<Bytes>,
    /// ArcGIS layout (`_alllayers/`), else MapProxy (level folders at the prefix).
    pub arcgis_layout: bool,
    /// The storage format of the tiles: detected from the keys of the first level holding any,
    /// else conf.xml's (else, for a new cache, the one asked for).
    pub storage: StorageFormat,
    /// The storage of its tiles: [`V2Objects`] (Compact V2), [`ExplodedObjects`] or
    /// [`V1Objects`] (read-only).
    pub store: Box<dyn Storage>,
}

/// Opens the cache at `url` (client from the `AWS_*` or `AZURE_*` environment and
/// `opts.object`), or with `create` writes its conf.cdi and conf.xml first; see [`open_in`].
pub fn open(url: &ObjectUrl, opts: CacheOptions, create: Option<NewCache>) -> Result<Opened> {
    let client = store_client_with(url, &opts.object)?;
    open_in(url, client, opts, create)
}

/// [`open`] over any `object_store` client (S3, Azure, or in-memory in tests).
///
/// The storage is the one the keys show (`.bundle` → Compact V2, `.bundlx` beside → Compact V1,
/// `Rxxxxxxxx/` row prefixes → exploded), else conf.xml's. Refused by name: creating a Compact
/// V1 cache, opening one for a writable mount (`-o rw`: [`v1::READ_ONLY`], at mount time rather
/// than at the first write), and a prefix holding no cache.
///
/// With [`WriteCoordination::Probed`] (a writable mount of a Compact V2 or exploded cache) the
/// store is probed for conditional writes first and refused by name if it does not honour them
/// ([`super::probe_conditional_writes`]).
pub fn open_in(
    url: &ObjectUrl,
    client: Arc<dyn ObjectStore>,
    opts: CacheOptions,
    create: Option<NewCache>,
) -> Result<Opened> {
    let (conf_xml, cdi, arcgis_layout, asked) = match create {
        Some(n) => {
            if n.storage == StorageFormat::CompactV1 {
                return Err(Error::invalid(format!(
                    "{url}: {}; a new cache there is compact-v2 or exploded",
                    v1::READ_ONLY
                )));
            }
            // Nothing is written over a cache of another storage.
            let rel = if n.conf_xml.is_some() { ALLLAYERS } else { "" };
            let there = Connection::new(url.clone(), client.clone(), rel, opts.clone());
            if let Some(d) = detect(&there)?.filter(|d| *d != n.storage) {
                return Err(already_holds(url, d, n.storage));
            }
            let w = Connection::new(url.clone(), client.clone(), "", opts.clone());
            if let Some(cdi) = n.cdi {
                w.put_file(crate::cache::CONF_CDI, cdi)?;
            }
            if let Some(x) = n.conf_xml {
                w.put_file(crate::cache::CONF_XML, x)?;
            }
            (
                n.conf_xml.map(Bytes::copy_from_slice),
                n.cdi.map(Bytes::copy_from_slice),
                n.conf_xml.is_some(),
                Some(n.storage),
            )
        }
        None => {
            let f = probe(url, client.as_ref())?;
            (f.conf_xml, f.cdi, f.arcgis_layout, None)
        }
    };
    let conf = match &conf_xml {
        Some(b) => Some(
            crate::format::conf::TileScheme::parse_conf_xml(b)
                .in_file(rel_url(url, crate::cache::CONF_XML))?,
        ),
        None => None,
    };
    let tiles_rel = if arcgis_layout { ALLLAYERS } else { "" };
    let writes = opts.object.writes;
    let name = store_name(url, &opts.object);
    let disk_cache = match &opts.object.cache_dir {
        Some(dir) => Some(disk::DiskCache::open(
            dir,
            opts.object.cache_size.unwrap_or(disk::DEFAULT_CACHE_SIZE),
        )?),
        None => None,
    };
    let conn = Arc::new(Connection::new(url.clone(), client, tiles_rel, opts));
    let detected = detect(&conn)?;
    let said = conf.as_ref().map(|c| c.scheme.storage);
    let storage = match (detected, asked, said) {
        (Some(d), Some(a), _) if d != a => return Err(already_holds(url, d, a)),
        (Some(d), _, Some(s)) if d != s => {
            tracing::warn!("{url}: conf.xml says {s} but the objects are {d}; using {d}");
            d
        }
        (Some(d), _, _) => d,
        (None, Some(a), _) => a,
        (None, None, Some(s)) => s,
        (None, None, None) if arcgis_layout => StorageFormat::CompactV2,
        (None, None, None) => {
            return Err(Error::invalid(format!(
                "{url}: not a tile cache (no conf.xml, no _alllayers/, no Lnn level prefixes)"
            )))
        }
    };
    if storage == StorageFormat::CompactV1 && writes != WriteCoordination::Conditional {
        return Err(Error::invalid(format!(
            "{url}: {}; mount it read-only",
            v1::READ_ONLY
        )));
    }
    match writes {
        WriteCoordination::Probed => {
            conn.check_conditional_writes(&name)?;
        }
        WriteCoordination::SingleWriter => tracing::info!(
            "{url}: --single-writer: {} are written unconditionally (no other writer is \
             expected)",
            if storage == StorageFormat::Exploded {
                "tiles"
            } else {
                "bundles"
            }
        ),
        WriteCoordination::Conditional => {}
    }
    let default_kind = crate::cache::default_kind(conf.as_ref().map(|c| &c.scheme));
    let store: Box<dyn Storage> = match storage {
        StorageFormat::CompactV2 => {
            let mut v2 = V2Objects::new(conn);
            if let Some(d) = disk_cache {
                v2 = v2.with_disk_cache(d);
            }
            Box::new(v2)
        }
        // The on-disk index cache holds Compact V2 indexes only.
        StorageFormat::Exploded => Box::new(ExplodedObjects::new(conn, default_kind)),
        StorageFormat::CompactV1 => Box::new(V1Objects::new(conn)),
    };
    Ok(Opened {
        conf_xml,
        conf,
        cdi,
        arcgis_layout,
        storage,
        store,
    })
}

/// The refusal to make a cache of storage `asked` where one of storage `found` is.
fn already_holds(url: &ObjectUrl, found: StorageFormat, asked: StorageFormat) -> Error {
    Error::invalid(format!(
        "{url}: already holds a cache in {found} storage; refusing to make one in {asked} \
         storage there"
    ))
}

/// Reads conf.xml and conf.cdi under the prefix and tells the layout: ArcGIS when conf.xml or
/// an `_alllayers/` prefix exists, else MapProxy (level folders at the prefix).
pub(super) fn probe(url: &ObjectUrl, store: &dyn ObjectStore) -> Result<Found> {
    let conf_xml = get_small(store, url, crate::cache::CONF_XML)?;
    let cdi = get_small(store, url, crate::cache::CONF_CDI)?;
    let arcgis_layout = conf_xml.is_some() || {
        let p = Key::from(url.key(ALLLAYERS));
        let l = block(store.list_with_delimiter(Some(&p))).map_err(|e| obj_err(url, "", e))?;
        !l.common_prefixes.is_empty() || !l.objects.is_empty()
    };
    Ok(Found {
        conf_xml,
        cdi,
        arcgis_layout,
    })
}

/// Storage of the cache `c` reaches, detected from the first level (in key order; level folder names in either case,
/// as ArcGIS on Windows writes them) holding anything: `.bundlx` objects → Compact V1,
/// `.bundle` objects → Compact V2, `Rxxxxxxxx/` row prefixes → exploded. None: no tiles yet.
pub(super) fn detect(c: &Connection) -> Result<Option<StorageFormat>> {
    let p = Key::from(c.url.key(&c.tiles_rel));
    let prefix = (!p.as_ref().is_empty()).then_some(&p);
    let l =
        block(c.store.list_with_delimiter(prefix)).map_err(|e| obj_err(&c.url, &c.tiles_rel, e))?;
    let mut levels: Vec<(u8, String)> = l
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename())
        .filter_map(|n| names::parse_level_dir(n).ok().map(|l| (l, n.to_string())))
        .collect();
    levels.sort();
    for (_, dir) in levels {
        let rel = c.rel_join(&dir);
        let l = block(
            c.store
                .list_with_delimiter(Some(&Key::from(c.url.key(&rel)))),
        )
        .map_err(|e| obj_err(&c.url, &rel, e))?;
        let kinds: Vec<&'static str> = l
            .objects
            .iter()
            .filter_map(|o| o.location.filename())
            .filter_map(|n| names::parse_bundle_file(n).ok().map(|b| b.2))
            .collect();
        if kinds.contains(&"bundlx") {
            return Ok(Some(StorageFormat::CompactV1));
        }
        if kinds.contains(&"bundle") {
            return Ok(Some(StorageFormat::CompactV2));
        }
        if l.common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .any(|n| names::parse_row_dir(n).is_ok())
        {
            return Ok(Some(StorageFormat::Exploded));
        }
    }
    Ok(None)
}
