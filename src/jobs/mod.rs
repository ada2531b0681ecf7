//! Batch jobs over caches, as ArcGIS's caching tools run them: one engine (`engine`: tile
//! selection by levels, extent and area of interest, then write-to-destination) that `export`,
//! `import` and `package` call, never each other; `verify` and `compact` walk one cache.

pub mod aoi;
pub mod compact;
pub mod engine;
pub mod export;
pub mod import;
pub mod package;
pub mod pixels;
pub mod selection;
pub mod verify;
