//! Tiles the bundles lack, made on demand: sources (`arcgis:` REST export, `wms:` GetMap,
//! `resample` from neighbouring levels, `label` drawn here), the spec syntax that picks one, and the
//! [`Renderer`] that guards them (scheme check, single-flight, bounded pool, timeouts, retries,
//! negative cache, image checks, keeping rendered tiles), and [`supertile`]s: large blocks drawn
//! in one request and cut into tiles.

pub mod arcgis;
pub mod batch;
pub mod http;
pub mod label;
pub mod pixels;
pub mod renderer;
pub mod resample;
pub mod spec;
pub mod supertile;
pub mod wms;

pub use self::http::{HttpClient, HttpOptions};
pub use self::renderer::{Keep, RenderOptions, RenderStats, Renderer};
pub use self::spec::SourceSpec;
pub use self::supertile::Area;

use std::sync::Arc;

use crate::format::conf::TileScheme;
use crate::format::TileAddr;
use crate::Result;

/// Something that can produce the encoded bytes of a tile of a scheme.
/// Tiles made in this run or mount that are not stored yet (in the renderer's memory, or waiting
/// in a write buffer), by address; for sources that build tiles from other tiles (`resample`).
pub type MadeTiles = Arc<dyn Fn(TileAddr) -> Option<Arc<Vec<u8>>> + Send + Sync>;

pub trait TileSource: Send + Sync {
    /// Lets a source that builds tiles from other tiles see those made but not stored yet
    /// (`resample`); others ignore it. The [`Renderer`] calls it once, when it is made.
    fn see_made(&self, _made: MadeTiles) {}

    /// The encoded tile (PNG or JPEG; the [`Renderer`] checks size and kind and re-encodes when the
    /// cache needs it), or None if the source has nothing there.
    fn render(&self, scheme: &TileScheme, tile: TileAddr) -> Result<Option<Vec<u8>>>;

    /// Short name for logs and errors (`arcgis:URL`, `resample`, …).
    fn describe(&self) -> String;

    /// Checks once, before any tile, that the source can serve this scheme (spatial reference known,
    /// levels usable…), so a misconfiguration fails at start rather than at the first open.
    fn check(&self, _scheme: &TileScheme) -> Result<()> {
        Ok(())
    }

    /// Whether the source draws any map area at any size ([`TileSource::render_area`]), so the
    /// [`Renderer`] may ask it for supertiles. Map servers do; `resample` and `label` don't.
    fn draws_areas(&self) -> bool {
        false
    }

    /// The largest image the source draws, (width, height) in pixels, as the source advertises it
    /// (ArcGIS REST `maxImageWidth`/`maxImageHeight`, WMS 1.3.0 `MaxWidth`/`MaxHeight`). Asks the
    /// source (one request); the [`Renderer`] calls it once, when it is made with supertiles on.
    /// None when the source advertises nothing or does not answer (logged, not an error): the
    /// renderer then assumes [`supertile::MAX_IMAGE_PX`].
    fn max_image(&self) -> Option<(u32, u32)> {
        None
    }

    /// The encoded image (PNG or JPEG) of an area of `area.width` × `area.height` pixels, or None if
    /// the source has nothing there. Only called when [`TileSource::draws_areas`] says so.
    fn render_area(&self, _scheme: &TileScheme, _area: &Area) -> Result<Option<Vec<u8>>> {
        Err(crate::Error::invalid(format!(
            "{}: draws single tiles only, not supertiles",
            self.describe()
        )))
    }
}
