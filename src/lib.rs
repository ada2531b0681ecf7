//! bundlefs: Esri ArcGIS compact tile caches (Compact V1/V2) as exploded trees — formats, cache access,
//! tile sources, batch jobs and a FUSE adapter. Layers depend one way: format → cache → (jobs, render)
//! → fs → cli.

pub mod cache;
pub mod cli;
pub mod error;
pub mod format;
pub mod fs;
pub mod jobs;
pub mod render;

pub use error::{Error, Result};
