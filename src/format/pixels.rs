//! Tile pixels, the one place bundlefs handles them: decode a tile (PNG or JPEG, Esri's truncated
//! PNG signature repaired), check a tile against a tiling scheme (kind, CacheTileFormat, size),
//! encode pixels in a cache's CacheTileFormat, and composite one tile over another (MERGE).
//!
//! Everything here works on bytes and [`RgbaImage`]s (8-bit RGBA, straight — not premultiplied —
//! alpha, as PNG stores it); callers add the file and tile to the [`PixelError`]s.

use std::borrow::Cow;
use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, ImageReader, RgbaImage};

use super::conf::{TileFormat, TileScheme};
use super::sniff::{has_full_png_signature, sniff, ImageKind};
use super::MAX_TILE_SIZE;

/// How a tile written where the destination already holds one meets it: the two import modes of
/// ArcGIS's Import Map Server Cache tool. There is no default: each caller chooses its own (the
/// `import`/`export` jobs MERGE, a writable mount OVERWRITEs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// The new tile drawn over the stored one ([`over`]): its transparent pixels keep the stored
    /// tile's, its opaque ones replace them, partly transparent ones blend.
    Merge,
    /// The new tile's pixels replace the stored tile's.
    Overwrite,
}

impl ImportMode {
    /// The mode's name as the command line spells it (`merge`, `overwrite`).
    pub fn name(self) -> &'static str {
        match self {
            ImportMode::Merge => "merge",
            ImportMode::Overwrite => "overwrite",
        }
    }
}

impl std::fmt::Display for ImportMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ImportMode {
    type Err = String;
    /// `merge` or `overwrite`, any case (ArcGIS writes MERGE and OVERWRITE).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "merge" => Ok(ImportMode::Merge),
            "overwrite" => Ok(ImportMode::Overwrite),
            _ => Err(format!("{s:?}: want merge or overwrite")),
        }
    }
}

/// What is wrong with a tile's pixels. The caller names the file and the tile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelError {
    /// No bytes at all.
    #[error("empty file, not a tile")]
    Empty,
    /// More bytes than a bundle index entry can address (24-bit size).
    #[error("{0} bytes, larger than a bundle can hold (2^24-1)")]
    TooLarge(usize),
    /// Neither PNG nor JPEG by content (and no fallback kind given).
    #[error("not a PNG or JPEG image ({len} bytes)")]
    NotAnImage { len: usize },
    /// The content's kind differs from the kind the tile's name says.
    #[error("the bytes are {found:?} but the name says .{}", .named.ext())]
    KindMismatch { found: ImageKind, named: ImageKind },
    /// The cache's CacheTileFormat does not take this kind (a PNG in a JPEG cache…).
    #[error("{kind:?} tile in a cache whose CacheTileFormat is {format}")]
    Refused { kind: ImageKind, format: String },
    /// The decoder failed (truncated or corrupt image); `msg` is the decoder's.
    #[error("cannot decode {kind:?} image: {msg}")]
    Decode { kind: ImageKind, msg: String },
    /// Not the tiling scheme's (or the other tile's) size, in pixels.
    #[error("{w}x{h} pixels; the cache's tiles are {want_w}x{want_h}")]
    Size {
        w: u32,
        h: u32,
        want_w: u32,
        want_h: u32,
    },
    /// A CacheTileFormat bundlefs cannot encode (LERC…), by name.
    #[error(
        "cache tile format {0} is not supported for new pixels (PNG, PNG8, PNG24, PNG32, JPEG, \
         MIXED are)"
    )]
    Unsupported(String),
    /// The encoder failed; `msg` is the encoder's.
    #[error("cannot encode {kind:?} tile: {msg}")]
    Encode { kind: ImageKind, msg: String },
    /// LERC and vector tiles hold no pixels bundlefs decodes: what needs pixels (merging,
    /// clipping to an area, a background colour, resampling) is refused, by the kind's name.
    #[error(
        "{} tiles hold no pixels bundlefs can decode: merging, clipping to an area, a background \
         colour and resampling are not possible (copying them byte for byte is: --mode \
         overwrite, whole tiles)",
        .0.name()
    )]
    NoPixels(ImageKind),
}

/// JPEG quality when conf.xml gives none (CompressionQuality 0 or absent): ArcGIS's default, 75
/// (Esri, "Tips for choosing a cache image format", 2008).
pub const DEFAULT_JPEG_QUALITY: u8 = 75;

/// What pixels without data become in JPEG tiles (which have no transparency) in export and import
/// jobs unless the user chooses another colour: white, ArcGIS's default map background.
pub const DEFAULT_BACKGROUND: [u8; 3] = [255, 255, 255];

/// The first four PNG signature bytes, which some ArcGIS-written tiles lack (see [`sniff`]).
const PNG_SIGNATURE_HEAD: [u8; 4] = [0x89, b'P', b'N', b'G'];

/// The image crate's format for a kind with pixels; [`PixelError::NoPixels`] for LERC and vector
/// tiles.
fn image_format(kind: ImageKind) -> Result<image::ImageFormat, PixelError> {
    match kind {
        ImageKind::Png => Ok(image::ImageFormat::Png),
        ImageKind::Jpeg => Ok(image::ImageFormat::Jpeg),
        ImageKind::Lerc | ImageKind::Pbf => Err(PixelError::NoPixels(kind)),
    }
}

/// The bytes a decoder reads: the PNG signature restored when ArcGIS left its first four bytes out.
fn repaired(bytes: &[u8], kind: ImageKind) -> Cow<'_, [u8]> {
    if kind == ImageKind::Png
        && sniff(bytes) == Some(ImageKind::Png)
        && !has_full_png_signature(bytes)
    {
        Cow::Owned([&PNG_SIGNATURE_HEAD[..], bytes].concat())
    } else {
        Cow::Borrowed(bytes)
    }
}

/// Whether `bytes` are a PNG missing the first four bytes of its signature, as ArcGIS wrote some
/// tiles (Esri's own `Usa.tpkx`, levels 0-1): bundlefs's decoder reads them, but browsers, PIL and
/// `file` do not.
pub fn lacks_png_signature(bytes: &[u8]) -> bool {
    sniff(bytes) == Some(ImageKind::Png) && !has_full_png_signature(bytes)
}

/// `bytes` as an image file users get (a mounted tile, an exploded export): a PNG missing the
/// first four signature bytes gets them back (4 bytes longer); anything else as it is.
pub fn as_image_file(bytes: &[u8]) -> Cow<'_, [u8]> {
    repaired(bytes, ImageKind::Png)
}

/// Decodes a tile to RGBA. The kind comes from the bytes ([`sniff`]); when they don't tell,
/// `fallback` (the cache's kind, for tiles whose signature is damaged) or else
/// [`PixelError::NotAnImage`].
pub fn decode(bytes: &[u8], fallback: Option<ImageKind>) -> Result<RgbaImage, PixelError> {
    let kind = sniff(bytes)
        .or(fallback)
        .ok_or(PixelError::NotAnImage { len: bytes.len() })?;
    image::load_from_memory_with_format(&repaired(bytes, kind), image_format(kind)?)
        .map(image::DynamicImage::into_rgba8)
        .map_err(|e| PixelError::Decode {
            kind,
            msg: e.to_string(),
        })
}

/// Width and height in pixels from the image header only (nothing decoded).
pub fn dimensions(bytes: &[u8], kind: ImageKind) -> Result<(u32, u32), PixelError> {
    ImageReader::with_format(Cursor::new(repaired(bytes, kind)), image_format(kind)?)
        .into_dimensions()
        .map_err(|e| PixelError::Decode {
            kind,
            msg: e.to_string(),
        })
}

/// Checks an image against the scheme's tile size (TileCols × TileRows).
pub fn check_size(img: &RgbaImage, scheme: &TileScheme) -> Result<(), PixelError> {
    size_is(img.dimensions(), (scheme.tile_cols, scheme.tile_rows))
}

fn size_is((w, h): (u32, u32), (want_w, want_h): (u32, u32)) -> Result<(), PixelError> {
    if (w, h) == (want_w, want_h) {
        Ok(())
    } else {
        Err(PixelError::Size {
            w,
            h,
            want_w,
            want_h,
        })
    }
}

/// Checks that `bytes` may be stored as a tile named with extension kind `named`: not empty, small
/// enough for a bundle, a PNG or JPEG by content of the name's kind, and — when the cache has a
/// tiling scheme — accepted by its CacheTileFormat (MIXED takes both) and of its tile size (read
/// from the header). Returns the kind.
pub fn check_tile(
    bytes: &[u8],
    named: ImageKind,
    scheme: Option<&TileScheme>,
) -> Result<ImageKind, PixelError> {
    if bytes.is_empty() {
        return Err(PixelError::Empty);
    }
    if bytes.len() > MAX_TILE_SIZE {
        return Err(PixelError::TooLarge(bytes.len()));
    }
    // An uncompressed vector tile has no signature: its name (and the cache's format) tell.
    let kind = match sniff(bytes) {
        Some(k) => k,
        None if named == ImageKind::Pbf => ImageKind::Pbf,
        None => return Err(PixelError::NotAnImage { len: bytes.len() }),
    };
    if kind != named {
        return Err(PixelError::KindMismatch { found: kind, named });
    }
    if let Some(s) = scheme {
        if !s.tile_format.accepts(kind) {
            return Err(PixelError::Refused {
                kind,
                format: s.tile_format.name().to_string(),
            });
        }
        if kind.has_pixels() {
            size_is(dimensions(bytes, kind)?, (s.tile_cols, s.tile_rows))?;
        }
    }
    Ok(kind)
}

/// True when every pixel is opaque (alpha 255).
pub fn is_opaque(img: &RgbaImage) -> bool {
    img.pixels().all(|p| p.0[3] == u8::MAX)
}

/// How hard the PNG encoder works: on-demand paths (a reader or a writer waiting) take `Fast`,
/// batch jobs writing tiles once for many reads take `Small`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngCompression {
    /// The `png` crate's fast deflate (bigger files).
    Fast,
    /// zlib's default level (smaller files, several times slower).
    Small,
}

/// Encodes pixels as a cache's tiles: which image kind its CacheTileFormat wants, JPEG quality,
/// what JPEG does with transparency, and PNG effort.
#[derive(Debug, Clone, PartialEq)]
pub struct TileEncoder {
    pub format: TileFormat,
    /// JPEG quality, 1–100.
    pub jpeg_quality: u8,
    /// JPEG tiles: the colour transparent pixels are drawn over ([`over`] it, so partly
    /// transparent ones blend). None: alpha is dropped and each pixel keeps its colour, as the
    /// renderers always did for sources asked for opaque images.
    pub background: Option<[u8; 3]>,
    pub png: PngCompression,
}

impl TileEncoder {
    /// The encoder for a cache of `format` whose conf.xml says `compression_quality` (0 or absent:
    /// [`DEFAULT_JPEG_QUALITY`]; over 100: 100), JPEG alpha dropped (no background), fast PNG.
    pub fn new(format: TileFormat, compression_quality: u32) -> Self {
        let jpeg_quality = match compression_quality {
            0 => DEFAULT_JPEG_QUALITY,
            q => q.min(100) as u8,
        };
        TileEncoder {
            format,
            jpeg_quality,
            background: None,
            png: PngCompression::Fast,
        }
    }

    /// The encoder for tiles of `scheme` (its CacheTileFormat and CompressionQuality).
    pub fn for_scheme(scheme: &TileScheme) -> Self {
        Self::new(scheme.tile_format.clone(), scheme.compression_quality)
    }

    /// The image kind the cache stores these pixels as: JPEG for JPEG caches; for MIXED caches JPEG
    /// when every pixel is opaque and PNG otherwise (Esri: MIXED uses JPEG except where transparency
    /// is detected, there PNG 32); PNG for the PNG formats. Other formats (LERC…) are refused.
    pub fn kind_for(&self, img: &RgbaImage) -> Result<ImageKind, PixelError> {
        match &self.format {
            TileFormat::Mixed if is_opaque(img) => Ok(ImageKind::Jpeg),
            TileFormat::Mixed => Ok(ImageKind::Png),
            TileFormat::Other(name) => Err(PixelError::Unsupported(name.clone())),
            f => Ok(f.image_kind().expect("PNG and JPEG formats have a kind")),
        }
    }

    /// Encodes in the kind the cache's format wants ([`TileEncoder::kind_for`]).
    pub fn encode(&self, img: &RgbaImage) -> Result<Vec<u8>, PixelError> {
        self.encode_as(img, self.kind_for(img)?)
    }

    /// Encodes as `kind`: JPEG as RGB (flattened on the background if there is one), PNG as RGB
    /// when every pixel is opaque (smaller files), RGBA otherwise.
    pub fn encode_as(&self, img: &RgbaImage, kind: ImageKind) -> Result<Vec<u8>, PixelError> {
        let mut out = Vec::new();
        let err = |e: image::ImageError| PixelError::Encode {
            kind,
            msg: e.to_string(),
        };
        let (w, h) = img.dimensions();
        let rgb = |bg: Option<[u8; 3]>| -> Vec<u8> {
            img.pixels()
                .flat_map(|p| {
                    let o = match bg {
                        Some([r, g, b]) => over(p.0, [r, g, b, u8::MAX]),
                        None => p.0,
                    };
                    [o[0], o[1], o[2]]
                })
                .collect()
        };
        match kind {
            ImageKind::Lerc | ImageKind::Pbf => return Err(PixelError::NoPixels(kind)),
            ImageKind::Jpeg => {
                JpegEncoder::new_with_quality(&mut out, self.jpeg_quality.clamp(1, 100))
                    .write_image(&rgb(self.background), w, h, ExtendedColorType::Rgb8)
                    .map_err(err)?
            }
            ImageKind::Png => {
                let compression = match self.png {
                    PngCompression::Fast => CompressionType::Fast,
                    PngCompression::Small => CompressionType::Default,
                };
                let enc = PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive);
                if is_opaque(img) {
                    enc.write_image(&rgb(None), w, h, ExtendedColorType::Rgb8)
                } else {
                    enc.write_image(img.as_raw(), w, h, ExtendedColorType::Rgba8)
                }
                .map_err(err)?
            }
        }
        Ok(out)
    }
}

/// Porter-Duff "source over destination" for one pixel, 8-bit straight alpha, rounded once.
///
/// With a = αs/255 and b = αd/255 (Porter & Duff, "Compositing Digital Images", 1984, on
/// premultiplied colours, divided back by the result's alpha for straight alpha):
/// αo = a + b(1 − a) and Co = (Cs·a + Cd·b(1 − a)) / αo. Multiplying through by 255² gives exact
/// integers: A = αs·255 + αd·(255 − αs) = 255²·αo and Co = (Cs·αs·255 + Cd·αd·(255 − αs)) / A,
/// each then rounded to the nearest integer (halves up); αo = A / 255 rounded the same way. No
/// intermediate value is truncated. Example: (10,10,10, α100) over (200,200,200, α50):
/// A = 25500 + 7750 = 33250, Co = (255000 + 1550000) / 33250 = 54.29 → 54, αo = 130.39 → 130.
pub fn over(s: [u8; 4], d: [u8; 4]) -> [u8; 4] {
    match (s[3], d[3]) {
        (u8::MAX, _) => s,
        // A transparent pixel changes nothing, whatever colour it carries.
        (0, _) => d,
        (_, 0) => s,
        (sa, da) => {
            let (sa, da) = (u32::from(sa), u32::from(da));
            let a = sa * 255 + da * (255 - sa);
            let ch = |i: usize| {
                let num = u32::from(s[i]) * sa * 255 + u32::from(d[i]) * da * (255 - sa);
                ((2 * num + a) / (2 * a)) as u8
            };
            [ch(0), ch(1), ch(2), ((2 * a + 255) / 510) as u8]
        }
    }
}

/// `top` onto `base` pixel by pixel (both the same size): MERGE draws it [`over`] the base,
/// OVERWRITE takes its pixels. `inside` (row-major, one flag per pixel) limits the change to the
/// flagged pixels, e.g. an area of interest; None changes every pixel.
pub fn composite(
    top: &RgbaImage,
    base: &RgbaImage,
    inside: Option<&[bool]>,
    mode: ImportMode,
) -> RgbaImage {
    debug_assert_eq!(top.dimensions(), base.dimensions());
    let mut out = base.clone();
    for (i, (o, t)) in out.pixels_mut().zip(top.pixels()).enumerate() {
        if inside.is_some_and(|m| !m[i]) {
            continue;
        }
        o.0 = match mode {
            ImportMode::Overwrite => t.0,
            ImportMode::Merge => over(t.0, o.0),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    /// `over` in f64, rounded at the end: the reference the integer version must match. Exact
    /// halves occur (e.g. 130560 / 52224 = 2.5) and f64 may land just under them, so values are
    /// nudged by 1e-9 before rounding half up; a non-half value is at least 1/(2·255²) ≈ 8e-6 away.
    fn over_f64(s: [u8; 4], d: [u8; 4]) -> [u8; 4] {
        let (a, b) = (f64::from(s[3]) / 255.0, f64::from(d[3]) / 255.0);
        let ao = a + b * (1.0 - a);
        if ao == 0.0 {
            return d;
        }
        let c = |i: usize| {
            ((f64::from(s[i]) * a + f64::from(d[i]) * b * (1.0 - a)) / ao + 1e-9).round() as u8
        };
        [c(0), c(1), c(2), (ao * 255.0 + 1e-9).round() as u8]
    }

    #[test]
    fn merge_value_of_issue_12_is_54() {
        // The mount used to give 53 (two truncations), import 54: 54.29 rounds to 54.
        assert_eq!(
            over([10, 10, 10, 100], [200, 200, 200, 50]),
            [54, 54, 54, 130]
        );
        assert_eq!(
            over_f64([10, 10, 10, 100], [200, 200, 200, 50]),
            [54, 54, 54, 130]
        );
    }

    #[test]
    fn over_is_exact_at_the_ends_and_matches_real_arithmetic() {
        assert_eq!(over([1, 2, 3, 255], [9, 9, 9, 255]), [1, 2, 3, 255]);
        assert_eq!(over([1, 2, 3, 0], [9, 9, 9, 200]), [9, 9, 9, 200]);
        assert_eq!(over([1, 2, 3, 40], [9, 9, 9, 0]), [1, 2, 3, 40]);
        // Half red over opaque blue: 255·128/255 = 128, 255·127/255 = 127.
        assert_eq!(over([255, 0, 0, 128], [0, 0, 255, 255]), [128, 0, 127, 255]);
        // Every alpha pair, a spread of colours, against the real-valued formula.
        let colours = [0u8, 1, 10, 77, 128, 200, 254, 255];
        for sa in 0..=255u8 {
            for da in (0..=255u8).step_by(3) {
                for &cs in &colours {
                    for &cd in &colours {
                        let (s, d) = ([cs, cd, cs, sa], [cd, cs, 255 - cd, da]);
                        assert_eq!(over(s, d), over_f64(s, d), "{s:?} over {d:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn composite_respects_mode_and_mask() {
        let base = RgbaImage::from_pixel(2, 1, Rgba([200, 200, 200, 50]));
        let top = RgbaImage::from_pixel(2, 1, Rgba([10, 10, 10, 100]));
        let m = composite(&top, &base, None, ImportMode::Merge);
        assert_eq!(m.get_pixel(1, 0).0, [54, 54, 54, 130]);
        let o = composite(&top, &base, Some(&[false, true]), ImportMode::Overwrite);
        assert_eq!(o.get_pixel(0, 0).0, [200, 200, 200, 50]);
        assert_eq!(o.get_pixel(1, 0).0, [10, 10, 10, 100]);
    }

    fn scheme(format: TileFormat) -> TileScheme {
        let mut s = TileScheme::web_mercator(1, format);
        s.tile_cols = 8;
        s.tile_rows = 4;
        s
    }

    #[test]
    fn encode_follows_the_cache_format_and_decodes_back() {
        let opaque = RgbaImage::from_pixel(8, 4, Rgba([10, 200, 30, 255]));
        let mut clear = opaque.clone();
        clear.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        let enc = |f| TileEncoder::for_scheme(&scheme(f));
        let kind = |b: &[u8]| sniff(b).unwrap();
        assert_eq!(
            kind(&enc(TileFormat::Png).encode(&clear).unwrap()),
            ImageKind::Png
        );
        assert_eq!(
            kind(&enc(TileFormat::Jpeg).encode(&clear).unwrap()),
            ImageKind::Jpeg
        );
        assert_eq!(
            kind(&enc(TileFormat::Mixed).encode(&opaque).unwrap()),
            ImageKind::Jpeg
        );
        assert_eq!(
            kind(&enc(TileFormat::Mixed).encode(&clear).unwrap()),
            ImageKind::Png
        );
        let png = enc(TileFormat::Png32).encode(&clear).unwrap();
        assert_eq!(decode(&png, None).unwrap(), clear, "PNG is lossless");
        // JPEG: opaque pixels as they are; transparent ones keep their colour without a
        // background, and become the background with one.
        let mut half = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 0]));
        for y in 0..4 {
            for x in 0..8 {
                half.put_pixel(x, y, Rgba([10, 200, 30, 255]));
            }
        }
        let mut jpeg = enc(TileFormat::Jpeg);
        let j = decode(&jpeg.encode(&half).unwrap(), None).unwrap();
        assert!(j.get_pixel(4, 1).0[1].abs_diff(200) < 8);
        assert!(
            j.get_pixel(4, 6).0[..3].iter().all(|c| *c < 8),
            "{:?}",
            j.get_pixel(4, 6)
        );
        jpeg.background = Some(DEFAULT_BACKGROUND);
        let j = decode(&jpeg.encode(&half).unwrap(), None).unwrap();
        assert!(j.get_pixel(4, 1).0[1].abs_diff(200) < 8);
        assert!(
            j.get_pixel(4, 6).0[..3].iter().all(|c| *c > 247),
            "{:?}",
            j.get_pixel(4, 6)
        );
        let e = enc(TileFormat::Other("LERC".into()))
            .encode(&opaque)
            .unwrap_err();
        assert!(e.to_string().contains("LERC"), "{e}");
        assert_eq!(TileEncoder::new(TileFormat::Jpeg, 0).jpeg_quality, 75);
        assert_eq!(TileEncoder::new(TileFormat::Jpeg, 400).jpeg_quality, 100);
    }

    #[test]
    fn decode_repairs_esri_truncated_png_and_names_bad_bytes() {
        let img = RgbaImage::from_pixel(8, 4, Rgba([1, 2, 3, 4]));
        let png = TileEncoder::new(TileFormat::Png, 0).encode(&img).unwrap();
        assert_eq!(decode(&png[4..], None).unwrap(), img);
        assert_eq!(dimensions(&png[4..], ImageKind::Png).unwrap(), (8, 4));
        assert_eq!(
            decode(b"{\"error\"}", None).unwrap_err(),
            PixelError::NotAnImage { len: 9 }
        );
        let mut cut = png.clone();
        cut.truncate(png.len() - 20);
        assert!(matches!(
            decode(&cut, None),
            Err(PixelError::Decode {
                kind: ImageKind::Png,
                ..
            })
        ));
    }

    #[test]
    fn check_tile_refuses_each_bad_tile_by_name() {
        let s = scheme(TileFormat::Png);
        let png = TileEncoder::new(TileFormat::Png, 0)
            .encode(&RgbaImage::new(8, 4))
            .unwrap();
        assert_eq!(
            check_tile(&png, ImageKind::Png, Some(&s)),
            Ok(ImageKind::Png)
        );
        assert_eq!(
            check_tile(&[], ImageKind::Png, Some(&s)),
            Err(PixelError::Empty)
        );
        assert!(matches!(
            check_tile(&png, ImageKind::Jpeg, Some(&s)),
            Err(PixelError::KindMismatch { .. })
        ));
        assert!(matches!(
            check_tile(&png, ImageKind::Png, Some(&scheme(TileFormat::Jpeg))),
            Err(PixelError::Refused { .. })
        ));
        let big = TileEncoder::new(TileFormat::Png, 0)
            .encode(&RgbaImage::new(9, 4))
            .unwrap();
        let e = check_tile(&big, ImageKind::Png, Some(&s)).unwrap_err();
        assert_eq!(e.to_string(), "9x4 pixels; the cache's tiles are 8x4");
        assert_eq!(check_tile(&big, ImageKind::Png, None), Ok(ImageKind::Png));
        assert!(ImportMode::Merge.to_string().parse::<ImportMode>() == Ok(ImportMode::Merge));
        assert!("MERGE".parse::<ImportMode>() == Ok(ImportMode::Merge));
        assert!("blend".parse::<ImportMode>().is_err());
    }
}
