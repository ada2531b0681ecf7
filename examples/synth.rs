//! Writes a large synthetic Compact V2 cache fast, for benchmarks (scripts/bench-read.sh).
//!
//! Usage: `cargo run --release --example synth -- DIR MAXLEVEL [TILEPX]`
//!
//! DIR becomes an ArcGIS-layout cache (conf.xml, conf.cdi, `_alllayers/Lnn/RrrrrCcccc.bundle`), Web
//! Mercator, PNG, with every tile of levels 0..=MAXLEVEL (4^level tiles per level: 1,398,101 tiles for
//! MAXLEVEL 10). Tiles are 48 pre-encoded TILEPX-square PNGs cycled (default 8 px, ~100 bytes; 256 px
//! gives ~2-3 KB tiles, the size of a simple seeded map tile); each is a complete, valid PNG. Bundles are
//! written whole with the format layer's builder, in parallel, without fsync (scratch data).

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bundlefs::cache::Cache;
use bundlefs::format::conf::{TileFormat, TileScheme};
use bundlefs::format::v2::Builder;
use bundlefs::format::{BundleId, Slot, BUNDLE_DIM};
use rayon::prelude::*;

const VARIANTS: u32 = 48;

/// A `px`-square RGB PNG whose colours depend on `i`: bands and a grid, like a simple map tile.
fn png(i: u32, px: u32) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(px, px, |x, y| {
        let grid = x % 32 == i % 32 || y % 32 == (i * 7) % 32;
        if grid {
            image::Rgb([40, 40, 40])
        } else {
            image::Rgb([
                (i * 37 % 256) as u8,
                ((i * 91 + x / 8) % 256) as u8,
                ((i * 13 + y / 8) % 256) as u8,
            ])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, max, px) = match args.as_slice() {
        [dir, max] => (dir, max, 8),
        [dir, max, px] => (dir, max, px.parse().context("TILEPX")?),
        _ => bail!("usage: synth DIR MAXLEVEL (0..=13) [TILEPX]"),
    };
    if !(1..=1024).contains(&px) {
        bail!("TILEPX {px}: 1..=1024");
    }
    let dir = PathBuf::from(dir);
    let max: u8 = max.parse().context("MAXLEVEL")?;
    if max > 13 {
        bail!("MAXLEVEL {max}: at most 13 (89M tiles)");
    }
    let t0 = Instant::now();
    let tiles: Vec<Vec<u8>> = (0..VARIANTS)
        .map(|i| png(i, px))
        .collect::<anyhow::Result<_>>()?;
    let mut scheme = TileScheme::web_mercator(max, TileFormat::Png);
    scheme.tile_cols = px;
    scheme.tile_rows = px;
    let cache = Cache::create(&dir, &scheme, None)?;
    let avg = tiles.iter().map(Vec::len).sum::<usize>() / tiles.len();
    eprintln!("synth: {px} px tiles, {avg} bytes on average");

    let bundles: Vec<BundleId> = (0..=max)
        .flat_map(|level| {
            let side = 1u32 << level;
            let starts = (0..side).step_by(BUNDLE_DIM as usize);
            starts.clone().flat_map(move |row0| {
                starts
                    .clone()
                    .map(move |col0| BundleId { level, row0, col0 })
            })
        })
        .collect();
    for level in 0..=max {
        let d = cache.level_dir(level);
        std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
    }
    let count: usize = bundles
        .par_iter()
        .map(|id| -> anyhow::Result<usize> {
            let side = 1u32 << id.level;
            let path = cache.bundle_path(id);
            let f = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
            let mut b = Builder::new(BufWriter::with_capacity(1 << 20, f))?;
            for slot in Slot::all() {
                let (row, col) = (id.row0 + slot.row, id.col0 + slot.col);
                if row < side && col < side {
                    b.add(slot, &tiles[((row * 7 + col * 3) % VARIANTS) as usize])?;
                }
            }
            let n = b.tiles();
            b.finish()?;
            Ok(n)
        })
        .sum::<anyhow::Result<usize>>()?;
    eprintln!(
        "synth: {count} tiles in {} bundles, levels 0-{max}, {:.1} s",
        bundles.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
