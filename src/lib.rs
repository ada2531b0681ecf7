//! bundlefs: Esri ArcGIS compact tile caches (Compact V1/V2) as exploded trees — formats, cache access,
//! tile sources, a FUSE adapter and batch jobs. Layers depend one way: format → cache → render → fs → cli.

pub mod cache;
pub mod cli;
pub mod error;
pub mod format;
pub mod fs;
pub mod render;

pub use error::{Error, Result};
