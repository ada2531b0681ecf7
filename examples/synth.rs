//! Writes a large synthetic Compact V2 cache fast, for benchmarks (scripts/bench-read.sh).
//!
//! Usage: `cargo run --release --example synth -- DIR MAXLEVEL`
//!
//! DIR becomes an ArcGIS-layout cache (conf.xml, conf.cdi, `_alllayers/Lnn/RrrrrCcccc.bundle`), Web
//! Mercator, PNG, with every tile of levels 0..=MAXLEVEL (4^level tiles per level: 1,398,101 tiles for
//! MAXLEVEL 10). Tiles are 48 pre-encoded 8x8 PNGs cycled; each is a complete, valid PNG. Bundles are
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

/// An 8x8 RGB PNG whose colour depends on `i`.
fn png(i: u32) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([
            (i * 37 % 256) as u8,
            (i * 91 % 256) as u8 ^ (x as u8 * 16),
            (i * 13 % 256) as u8 ^ (y as u8 * 16),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, max] = args.as_slice() else {
        bail!("usage: synth DIR MAXLEVEL (0..=13)");
    };
    let dir = PathBuf::from(dir);
    let max: u8 = max.parse().context("MAXLEVEL")?;
    if max > 13 {
        bail!("MAXLEVEL {max}: at most 13 (89M tiles)");
    }
    let t0 = Instant::now();
    let tiles: Vec<Vec<u8>> = (0..VARIANTS).map(png).collect::<anyhow::Result<_>>()?;
    let cache = Cache::create(&dir, &TileScheme::web_mercator(max, TileFormat::Png), None)?;

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
