//! The `label` source: tiles drawn by bundlefs itself — a coloured square per level with a border and
//! the tile's level, row and column written on it. Used by `bundlefs sample` and for demos.

use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgba, RgbaImage};

use super::pixels::encode;
use super::TileSource;
use crate::format::conf::TileScheme;
use crate::format::TileAddr;
use crate::Result;

/// Draws labelled tiles.
#[derive(Debug, Default, Clone, Copy)]
pub struct LabelSource;

/// Background colour of a level: a hue wheel so neighbouring levels differ.
fn level_colour(level: u8) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [0xe6, 0x9f, 0x00],
        [0x56, 0xb4, 0xe9],
        [0x00, 0x9e, 0x73],
        [0xf0, 0xe4, 0x42],
        [0x00, 0x72, 0xb2],
        [0xd5, 0x5e, 0x00],
        [0xcc, 0x79, 0xa7],
        [0x99, 0x99, 0x99],
    ];
    PALETTE[level as usize % PALETTE.len()]
}

fn draw_text(img: &mut RgbaImage, text: &str, x0: i64, y0: i64, scale: u32, colour: Rgba<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(ch) else {
            continue;
        };
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits & (1 << gx) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = x0 + (i as i64 * 8 + gx) * i64::from(scale) + i64::from(dx);
                        let y = y0 + gy as i64 * i64::from(scale) + i64::from(dy);
                        if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height()
                        {
                            img.put_pixel(x as u32, y as u32, colour);
                        }
                    }
                }
            }
        }
    }
}

/// The labelled tile as pixels.
pub fn draw(width: u32, height: u32, t: TileAddr) -> RgbaImage {
    let [r, g, b] = level_colour(t.level);
    let mut img = RgbaImage::from_pixel(width, height, Rgba([r, g, b, 255]));
    let border = Rgba([r / 2, g / 2, b / 2, 255]);
    for x in 0..width {
        for w in 0..2.min(height) {
            img.put_pixel(x, w, border);
            img.put_pixel(x, height - 1 - w, border);
        }
    }
    for y in 0..height {
        for w in 0..2.min(width) {
            img.put_pixel(w, y, border);
            img.put_pixel(width - 1 - w, y, border);
        }
    }
    let lines = [
        format!("L{:02}", t.level),
        format!("R{:08x}", t.row),
        format!("C{:08x}", t.col),
    ];
    let widest = lines.iter().map(|l| l.len()).max().unwrap_or(1) as u32;
    let scale = ((width.saturating_sub(16)) / (widest * 8)).clamp(1, 4);
    let line_h = 8 * scale + 4;
    let total_h = line_h * lines.len() as u32;
    let ink = Rgba([0x10, 0x10, 0x10, 255]);
    for (i, line) in lines.iter().enumerate() {
        let w = line.len() as u32 * 8 * scale;
        let x = (i64::from(width) - i64::from(w)) / 2;
        let y = (i64::from(height) - i64::from(total_h)) / 2 + i as i64 * i64::from(line_h);
        draw_text(&mut img, line, x, y, scale, ink);
    }
    img
}

impl TileSource for LabelSource {
    fn describe(&self) -> String {
        "label".into()
    }

    fn render(&self, scheme: &TileScheme, tile: TileAddr) -> Result<Option<Vec<u8>>> {
        if scheme.lod(tile.level).is_none() {
            return Ok(None);
        }
        let img = draw(scheme.tile_cols, scheme.tile_rows, tile);
        encode(&img, &scheme.tile_format, scheme.compression_quality).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::TileFormat;

    #[test]
    fn labels_differ_per_tile_and_decode() {
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        let a = LabelSource
            .render(&s, TileAddr::new(1, 0, 1))
            .unwrap()
            .unwrap();
        let b = LabelSource
            .render(&s, TileAddr::new(1, 1, 1))
            .unwrap()
            .unwrap();
        assert_ne!(a, b);
        let img = image::load_from_memory(&a).unwrap();
        assert_eq!((img.width(), img.height()), (256, 256));
        assert!(LabelSource
            .render(&s, TileAddr::new(3, 0, 0))
            .unwrap()
            .is_none());
        let j = TileScheme::web_mercator(1, TileFormat::Jpeg);
        let jb = LabelSource
            .render(&j, TileAddr::new(0, 0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(
            crate::format::sniff::sniff(&jb),
            Some(crate::format::sniff::ImageKind::Jpeg)
        );
    }
}
