//! The integration tests, one binary: every module below runs against the `bundlefs` library and
//! binary, real kernel mounts and real peers (MapProxy, GDAL, MapServer); `support` holds the
//! helpers they share (fixtures, temp caches, tile makers, mounts, a test HTTP server).

mod support;

mod cases;
mod cli;
mod damaged;
mod faults;
mod formats;
mod geopackage;
mod hostile;
mod interop;
mod jobs;
mod load;
mod manage;
mod modes;
mod mount;
mod objstore;
mod objstore_azure;
mod objstore_layouts;
mod open_formats;
mod packages;
mod realworld_crs;
mod realworld_text;
mod render;
mod rsync_matrix;
mod scale;
mod schemes;
mod serve;
mod service;
mod supertiles;
mod tilekinds;
mod writeback;
mod xyz;
