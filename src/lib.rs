//! bundlefs: Esri ArcGIS compact tile caches (Compact V1/V2) as exploded trees — formats, cache access,
//! tile sources, batch jobs, a FUSE adapter and an HTTP tile server. Layers depend one way: format →
//! cache → (jobs, render) → (fs, serve) → cli.

pub mod cache;
pub mod cli;
pub mod error;
pub mod format;
pub mod fs;
pub mod jobs;
pub mod render;
pub mod serve;

pub use error::{Error, Result};
