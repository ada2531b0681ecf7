//! Tile caches in an S3-compatible or Azure Blob object store (`s3://BUCKET/PREFIX`,
//! `az://CONTAINER/PREFIX`, see `cache::url`): keys mirror the folder layout, so a prefix bundlefs
//! wrote can be read by GDAL `/vsis3/` and registered as an ArcGIS cloud cache. Behaviour and
//! costs per request are described in `doc/object-store.md`.
//!
//! Four roles, one file each (the layouts in their own files below them):
//!
//! | role | file | what |
//! |---|---|---|
//! | the store connection | `object/connection.rs` | [`Connection`]: URL, client, options, [`RetryPolicy`] and compare-and-swap, conditional PUT with the ETag quirks, `--single-writer`, the one set of request counters ([`ObjectStats`]); the level and bundle listings the V1 and V2 layouts share |
//! | building the client | `object/client.rs` | [`store_client_with`] and friends (S3 or Azure Blob from the environment and [`ObjectOptions`]), the private runtime behind the synchronous facade |
//! | error explanation | `object/explain.rs` | a store's error as one line naming the object and the likely cause; never a credential |
//! | opening a cache | `object/open.rs` | [`open`], [`open_in`] ([`NewCache`] → [`Opened`]): what is under a prefix, which layout its keys show, the compare-and-swap probe of a writable mount; [`holds_cache`] |
//!
//! The layouts, each over an `Arc<Connection>`: Compact V2 [`V2Objects`] (`object/v2.rs`, its
//! per-tile times in `object/v2/times.rs`), Compact V1 read-only [`V1Objects`] (`object/v1.rs`),
//! exploded [`ExplodedObjects`] (`object/exploded.rs`, `object/exploded/times.rs`). Beside them:
//! the options of a store (`options.rs`), where credentials come from (`credentials.rs`: AWS
//! profiles and files, an Azure settings file), the compare-and-swap probe (`probe.rs`) and the on-disk
//! index cache of `--cache-dir` (`disk.rs`).

mod client;
mod connection;
pub mod credentials;
pub mod disk;
mod explain;
pub mod exploded;
mod open;
mod options;
mod probe;
pub mod v1;
pub mod v2;

pub(crate) use client::block;
pub use client::{store_client, store_client_at, store_client_with};
pub use connection::{Connection, ObjectStats, RetryPolicy};
pub use exploded::ExplodedObjects;
pub use open::{holds_cache, open, open_in, put_file, NewCache, Opened};
pub use options::{shown_endpoint, ObjectOptions, WriteCoordination, DEFAULT_TIMEOUT, TIMEOUT_ENV};
pub use probe::{probe as probe_conditional_writes, CasProbe, PROBE_NAME};
pub use v1::V1Objects;
pub use v2::V2Objects;
