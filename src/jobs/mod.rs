//! Batch jobs over caches, as ArcGIS's caching tools run them. One engine (`engine`: tile
//! selection by levels, extent and area of interest, what to store per tile (`tile`), and
//! write-to-destination through the destination's storage) that `export` (to a cache folder),
//! `import` (into a cache folder) and `package` (to or into a `.tpkx`) call, never each other; the
//! command line picks which one a target needs. `verify` and `compact` walk one cache.

pub mod aoi;
pub mod compact;
pub mod delete;
pub mod engine;
pub mod export;
pub mod import;
pub mod package;
pub mod selection;
pub mod tile;
pub mod verify;
