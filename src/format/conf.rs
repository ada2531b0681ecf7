//! `conf.xml` (tiling scheme) and `conf.cdi` (cache extent): parsing with quick-xml, writing new ones,
//! and rewriting the storage format of an existing conf.xml without touching anything else.

use std::ops::Range;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::{FormatError, TileAddr};

/// How a cache stores its tiles (`CacheStorageInfo/StorageFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageFormat {
    Exploded,
    CompactV1,
    CompactV2,
}

impl StorageFormat {
    pub fn esri_name(self) -> &'static str {
        match self {
            StorageFormat::Exploded => "esriMapCacheStorageModeExploded",
            StorageFormat::CompactV1 => "esriMapCacheStorageModeCompact",
            StorageFormat::CompactV2 => "esriMapCacheStorageModeCompactV2",
        }
    }

    pub fn from_esri_name(s: &str) -> Option<Self> {
        match s.trim() {
            "esriMapCacheStorageModeExploded" => Some(StorageFormat::Exploded),
            "esriMapCacheStorageModeCompact" => Some(StorageFormat::CompactV1),
            "esriMapCacheStorageModeCompactV2" => Some(StorageFormat::CompactV2),
            _ => None,
        }
    }
}

impl std::fmt::Display for StorageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageFormat::Exploded => "exploded",
            StorageFormat::CompactV1 => "compact-v1",
            StorageFormat::CompactV2 => "compact-v2",
        })
    }
}

/// `TileImageInfo/CacheTileFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TileFormat {
    Png,
    Png8,
    Png24,
    Png32,
    Jpeg,
    Mixed,
    /// Anything else ArcGIS may write (LERC, …): kept, served as stored.
    Other(String),
}

impl TileFormat {
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_uppercase().as_str() {
            "PNG" => TileFormat::Png,
            "PNG8" => TileFormat::Png8,
            "PNG24" => TileFormat::Png24,
            "PNG32" => TileFormat::Png32,
            "JPEG" | "JPG" => TileFormat::Jpeg,
            "MIXED" => TileFormat::Mixed,
            _ => TileFormat::Other(s.trim().to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            TileFormat::Png => "PNG",
            TileFormat::Png8 => "PNG8",
            TileFormat::Png24 => "PNG24",
            TileFormat::Png32 => "PNG32",
            TileFormat::Jpeg => "JPEG",
            TileFormat::Mixed => "MIXED",
            TileFormat::Other(s) => s,
        }
    }

    /// The kind tiles of this format hold (None for MIXED and unknown formats): LERC for
    /// `LERC`/`LERC2` (ArcGIS elevation caches), vector tiles for `pbf`/`MVT` (vector tile caches'
    /// `tileInfo.format`), any case.
    pub fn image_kind(&self) -> Option<super::sniff::ImageKind> {
        use super::sniff::ImageKind;
        match self {
            TileFormat::Png | TileFormat::Png8 | TileFormat::Png24 | TileFormat::Png32 => {
                Some(ImageKind::Png)
            }
            TileFormat::Jpeg => Some(ImageKind::Jpeg),
            TileFormat::Other(name) => match name.to_ascii_uppercase().as_str() {
                "LERC" | "LERC2" => Some(ImageKind::Lerc),
                "PBF" | "MVT" => Some(ImageKind::Pbf),
                _ => None,
            },
            TileFormat::Mixed => None,
        }
    }

    /// Whether a tile of `kind` is acceptable in a cache of this format.
    pub fn accepts(&self, kind: super::sniff::ImageKind) -> bool {
        match self.image_kind() {
            Some(k) => k == kind,
            // MIXED is JPEG and PNG (Esri), never LERC or vector tiles.
            None => matches!(self, TileFormat::Mixed) && kind.has_pixels(),
        }
    }
}

/// One level of detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Lod {
    pub level: u8,
    pub scale: f64,
    pub resolution: f64,
}

/// A rectangle in map units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope {
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
}

impl Envelope {
    pub fn intersects(&self, o: &Envelope) -> bool {
        self.xmin < o.xmax && o.xmin < self.xmax && self.ymin < o.ymax && o.ymin < self.ymax
    }
}

/// The tiling scheme and image/storage settings of a cache.
#[derive(Debug, Clone, PartialEq)]
pub struct TileScheme {
    pub wkt: Option<String>,
    pub wkid: Option<u32>,
    pub latest_wkid: Option<u32>,
    pub origin_x: f64,
    pub origin_y: f64,
    /// Tile width in pixels (`TileCols`).
    pub tile_cols: u32,
    /// Tile height in pixels (`TileRows`).
    pub tile_rows: u32,
    pub dpi: u32,
    pub lods: Vec<Lod>,
    pub tile_format: TileFormat,
    pub compression_quality: u32,
    pub storage: StorageFormat,
    pub packet_size: u32,
}

/// Inches per metre as ArcGIS uses it to turn scales into resolutions.
pub const INCHES_PER_METRE: f64 = 39.37;

/// Web Mercator origin and level-0 resolution/scale (ArcGIS Online / Google / Bing scheme).
pub const WEB_MERCATOR_ORIGIN: f64 = 20037508.342787;
pub const WEB_MERCATOR_RES0: f64 = 156543.03392800014;
pub const WEB_MERCATOR_SCALE0: f64 = 591657527.591555;

impl TileScheme {
    /// The ArcGIS Online / Bing / Google Web Mercator scheme, levels 0..=max_level.
    pub fn web_mercator(max_level: u8, tile_format: TileFormat) -> Self {
        let lods = (0..=max_level)
            .map(|l| {
                let f = f64::from(1u32 << l.min(31));
                Lod {
                    level: l,
                    scale: WEB_MERCATOR_SCALE0 / f,
                    resolution: WEB_MERCATOR_RES0 / f,
                }
            })
            .collect();
        let quality = if tile_format == TileFormat::Jpeg || tile_format == TileFormat::Mixed {
            75
        } else {
            0
        };
        TileScheme {
            wkt: Some(WEB_MERCATOR_WKT.to_string()),
            wkid: Some(102100),
            latest_wkid: Some(3857),
            origin_x: -WEB_MERCATOR_ORIGIN,
            origin_y: WEB_MERCATOR_ORIGIN,
            tile_cols: 256,
            tile_rows: 256,
            dpi: 96,
            lods,
            tile_format,
            compression_quality: quality,
            storage: StorageFormat::CompactV2,
            packet_size: 128,
        }
    }

    pub fn lod(&self, level: u8) -> Option<&Lod> {
        self.lods.iter().find(|l| l.level == level)
    }

    /// Map-unit bounds of a tile.
    pub fn tile_bbox(&self, t: TileAddr) -> Option<Envelope> {
        let r = self.lod(t.level)?.resolution;
        let (w, h) = (f64::from(self.tile_cols) * r, f64::from(self.tile_rows) * r);
        let xmin = self.origin_x + f64::from(t.col) * w;
        let ymax = self.origin_y - f64::from(t.row) * h;
        Some(Envelope {
            xmin,
            ymin: ymax - h,
            xmax: xmin + w,
            ymax,
        })
    }

    /// The rows and columns of the tiles at `level` that intersect `env`, as half-open ranges
    /// `(rows, cols)` (`start..end`, end excluded), counted from the tiling origin and cut at 0;
    /// None if the level is not in the scheme or no tile intersects. A tile that only touches
    /// `env` along an edge does not count.
    pub fn tile_range(&self, level: u8, env: &Envelope) -> Option<(Range<u32>, Range<u32>)> {
        let r = self.lod(level)?.resolution;
        let (w, h) = (f64::from(self.tile_cols) * r, f64::from(self.tile_rows) * r);
        // A tiny epsilon keeps an extent that ends exactly on a tile edge from taking the next tile.
        let eps = 1e-9;
        let c0 = ((env.xmin - self.origin_x) / w + eps).floor().max(0.0);
        let c1 = ((env.xmax - self.origin_x) / w - eps).ceil();
        let r0 = ((self.origin_y - env.ymax) / h + eps).floor().max(0.0);
        let r1 = ((self.origin_y - env.ymin) / h - eps).ceil();
        if c1 <= c0 || r1 <= r0 {
            return None;
        }
        let clamp = |v: f64| v.min(f64::from(u32::MAX)) as u32;
        Some((clamp(r0)..clamp(r1), clamp(c0)..clamp(c1)))
    }

    /// Parses a conf.xml document.
    ///
    /// The bytes go through [`super::text::decode`] (byte-order marks, UTF-16, CRLF). Pre-10.0
    /// files are read too: no `CacheStorageInfo` (exploded), `jpg` as format word, numbers in
    /// E-notation, any tile size in 1..=65536 px.
    ///
    /// Errors: [`FormatError::Xml`] naming the element at fault; [`FormatError::Unsupported`] for
    /// a value bundlefs cannot read by (an unknown `StorageFormat`, a `PacketSize` other than 128
    /// for compact storage, a `LevelID` given twice); [`FormatError::Text`] for undecodable bytes.
    pub fn parse_conf_xml(xml: &[u8]) -> Result<ConfXml, FormatError> {
        parse_conf(xml)
    }

    /// A new conf.xml for this scheme.
    pub fn to_conf_xml(&self) -> Vec<u8> {
        write_conf(self)
    }
}

/// A parsed conf.xml that remembers its bytes, so it can be rewritten with only the storage changed.
#[derive(Debug, Clone)]
pub struct ConfXml {
    pub scheme: TileScheme,
    raw: Vec<u8>,
    storage_span: Option<Range<usize>>,
    /// Text of `CacheStorageInfo/PacketSize` (exploded caches often say 0; compact needs 128).
    packet_span: Option<Range<usize>>,
    /// Byte position of `</CacheInfo>`, where a missing CacheStorageInfo is inserted.
    root_end: usize,
}

impl ConfXml {
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The same document with `StorageFormat` set to `storage` (added if absent); nothing else changes,
    /// except a `PacketSize` other than 128 becomes 128 for compact storage (GDAL's ESRIC and ArcGIS
    /// read compact caches with 128 only; exploded caches often say 0).
    pub fn with_storage(&self, storage: StorageFormat) -> Vec<u8> {
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        match &self.storage_span {
            Some(span) => edits.push((span.clone(), storage.esri_name().to_string())),
            None => edits.push((
                self.root_end..self.root_end,
                format!(
                    "<CacheStorageInfo xsi:type=\"typens:CacheStorageInfo\"><StorageFormat>{}\
                     </StorageFormat><PacketSize>128</PacketSize></CacheStorageInfo>",
                    storage.esri_name()
                ),
            )),
        }
        // Also where the document has a PacketSize but no StorageFormat (the inserted element
        // would come second, and readers take the first PacketSize).
        if let Some(p) = &self.packet_span {
            let text = String::from_utf8_lossy(&self.raw[p.clone()]);
            if storage != StorageFormat::Exploded && text.trim() != "128" {
                edits.push((p.clone(), "128".to_string()));
            }
        }
        edits.sort_by_key(|e| e.0.start);
        let mut out = Vec::with_capacity(self.raw.len() + 160);
        let mut at = 0;
        for (r, text) in edits {
            out.extend_from_slice(&self.raw[at..r.start]);
            out.extend_from_slice(text.as_bytes());
            at = r.end;
        }
        out.extend_from_slice(&self.raw[at..]);
        out
    }
}

/// Tiles per bundle side that bundlefs reads and writes (`PacketSize`). GDAL's ESRIC driver refuses
/// other values too ("Only PacketSize of 128 is supported"); bundle names and index slots depend on it.
pub const PACKET_SIZE: u32 = super::BUNDLE_DIM;

/// Refuses, by name, a `PacketSize` compact storage cannot be read with. Exploded caches carry no
/// bundles: their PacketSize (often 0) is kept and ignored.
pub fn check_packet_size(storage: StorageFormat, packet_size: u32) -> Result<(), FormatError> {
    if storage == StorageFormat::Exploded || packet_size == PACKET_SIZE {
        return Ok(());
    }
    Err(FormatError::Unsupported(format!(
        "PacketSize {packet_size} for {storage} storage; bundlefs reads bundles of \
         {PACKET_SIZE} x {PACKET_SIZE} tiles only (as GDAL and ArcGIS 10.x write them)"
    )))
}

/// Refuses a tiling scheme that names one level twice: which resolution holds would be a guess.
pub(crate) fn check_unique_levels(
    levels: impl Iterator<Item = u8>,
    what: &str,
) -> Result<(), FormatError> {
    let mut seen = std::collections::BTreeSet::new();
    for l in levels {
        if !seen.insert(l) {
            return Err(FormatError::Unsupported(format!(
                "{what} {l} appears twice; one level has one resolution"
            )));
        }
    }
    Ok(())
}

fn xml_err(e: impl std::fmt::Display, pos: u64) -> FormatError {
    FormatError::Xml(format!("{e} (at byte {pos})"))
}

/// What one pass over a conf.xml's events found: every text with its element path and span in the
/// decoded text, the `LODInfo` fields in document order, and where the root element ends.
struct Scanned {
    texts: Vec<(String, String, Range<usize>)>,
    /// (LevelID, Scale, Resolution) of each `LODInfos/LODInfo`, as written.
    lods: Vec<(Option<String>, Option<String>, Option<String>)>,
    root_end: usize,
}

impl Scanned {
    /// The trimmed text of the first element at path `p` (`CacheInfo/TileCacheInfo/DPI`) and
    /// its span.
    fn get(&self, p: &str) -> Option<(String, Range<usize>)> {
        self.texts
            .iter()
            .find(|t| t.0 == p)
            .map(|t| (t.1.trim().to_string(), t.2.clone()))
    }

    /// The finite number at `p`. Errors: missing, or not a number, naming the element.
    fn num(&self, p: &str) -> Result<f64, FormatError> {
        let (v, _) = self
            .get(p)
            .ok_or_else(|| FormatError::Xml(format!("missing <{p}>")))?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| FormatError::Xml(format!("<{p}> is not a number: {v:?}")))
    }

    /// A whole number at `p` as ArcGIS writes them, also in E-notation or with a zero fraction
    /// (`96.0`); None when missing or not whole.
    fn int(&self, p: &str) -> Option<u32> {
        self.get(p).and_then(|(v, _)| {
            v.parse::<u32>().ok().or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(x))
                    .map(|x| x as u32)
            })
        })
    }
}

/// Reads the events of `xml` (decoded text; `bom` is the length of a leading UTF-8 byte-order mark
/// quick-xml skips without counting). Errors: malformed XML, a mismatched end tag, a document
/// ending inside an element, no `<CacheInfo>` root, each with its byte position.
fn scan_conf(xml: &[u8], bom: usize) -> Result<Scanned, FormatError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<String> = Vec::new();
    let mut texts: Vec<(String, String, Range<usize>)> = Vec::new();
    let mut lods: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
    let mut root_end = None;
    let mut buf = Vec::new();
    loop {
        let before = reader.buffer_position() as usize + bom;
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| xml_err(e, reader.error_position()))?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "LODInfo" && stack.last().map(String::as_str) == Some("LODInfos") {
                    lods.push((None, None, None));
                }
                stack.push(name);
            }
            Event::End(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return Err(xml_err(format!("unexpected </{name}>"), before as u64));
                }
                if stack.is_empty() && name == "CacheInfo" {
                    root_end = Some(before);
                }
            }
            Event::Text(t) => {
                let after = reader.buffer_position() as usize + bom;
                let text = t
                    .unescape()
                    .map_err(|e| xml_err(e, before as u64))?
                    .into_owned();
                if text.trim().is_empty() {
                    buf.clear();
                    continue;
                }
                let path = stack.join("/");
                if stack.len() >= 2 && stack[stack.len() - 2] == "LODInfo" {
                    if let Some(lod) = lods.last_mut() {
                        match stack.last().unwrap().as_str() {
                            "LevelID" => lod.0 = Some(text.clone()),
                            "Scale" => lod.1 = Some(text.clone()),
                            "Resolution" => lod.2 = Some(text.clone()),
                            _ => {}
                        }
                    }
                }
                texts.push((path, text, before..after));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(FormatError::Xml(format!(
            "document ends inside <{}>",
            stack.join("/")
        )));
    }
    let root_end =
        root_end.ok_or_else(|| FormatError::Xml("no <CacheInfo> root element".into()))?;
    Ok(Scanned {
        texts,
        lods,
        root_end,
    })
}

/// The levels of `LODInfo` fields as written: numbers, LevelID in 0..=99, a positive resolution
/// (from Scale and `dpi` when Resolution is absent: pre-10.0 files), each level once. Errors name
/// the LODInfo by its position.
fn parse_lods(
    raw: Vec<(Option<String>, Option<String>, Option<String>)>,
    dpi: f64,
) -> Result<Vec<Lod>, FormatError> {
    let mut parsed_lods = Vec::new();
    for (i, (level, scale, res)) in raw.into_iter().enumerate() {
        let field = |v: Option<String>, n: &str| -> Result<f64, FormatError> {
            let v = v.ok_or_else(|| FormatError::Xml(format!("LODInfo #{i} has no <{n}>")))?;
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    FormatError::Xml(format!("LODInfo #{i}: <{n}> is not a number: {v:?}"))
                })
        };
        let level = field(level, "LevelID")?;
        if !(0.0..=99.0).contains(&level) || level.fract() != 0.0 {
            return Err(FormatError::Xml(format!(
                "LODInfo #{i}: LevelID {level} out of range 0..99"
            )));
        }
        let scale = field(scale, "Scale")?;
        let resolution = match res {
            Some(r) => field(Some(r), "Resolution")?,
            None => scale / (dpi * INCHES_PER_METRE),
        };
        if resolution <= 0.0 {
            return Err(FormatError::Xml(format!(
                "LODInfo #{i}: resolution must be positive"
            )));
        }
        parsed_lods.push(Lod {
            level: level as u8,
            scale,
            resolution,
        });
    }
    if parsed_lods.is_empty() {
        return Err(FormatError::Xml("no <LODInfos>/<LODInfo> levels".into()));
    }
    check_unique_levels(parsed_lods.iter().map(|l| l.level), "<LODInfo> LevelID")?;
    Ok(parsed_lods)
}

/// conf.xml's StorageFormat and PacketSize, with the spans of their elements (for rewriting).
struct StorageInfo {
    storage: StorageFormat,
    storage_span: Option<Range<usize>>,
    packet_size: u32,
    packet_span: Option<Range<usize>>,
}

/// StorageFormat and PacketSize: pre-10.0 conf.xml has no CacheStorageInfo (exploded); compact
/// caches without PacketSize are read as the 128 every writer uses. Errors: an unknown
/// StorageFormat (by name), a PacketSize bundlefs cannot read.
fn storage_and_packet(sc: &Scanned) -> Result<StorageInfo, FormatError> {
    let storage_node = sc.get("CacheInfo/CacheStorageInfo/StorageFormat");
    let storage = match &storage_node {
        Some((v, _)) => StorageFormat::from_esri_name(v).ok_or_else(|| {
            FormatError::Unsupported(format!(
                "<StorageFormat> {v:?}; bundlefs reads {}, {} and {}",
                StorageFormat::Exploded.esri_name(),
                StorageFormat::CompactV1.esri_name(),
                StorageFormat::CompactV2.esri_name()
            ))
        })?,
        None => StorageFormat::Exploded,
    };
    let packet_node = sc.get("CacheInfo/CacheStorageInfo/PacketSize");
    let packet_size = match &packet_node {
        Some((v, _)) => sc
            .int("CacheInfo/CacheStorageInfo/PacketSize")
            .ok_or_else(|| {
                FormatError::Xml(format!("<PacketSize> is not a whole number: {v:?}"))
            })?,
        None if storage == StorageFormat::Exploded => 0,
        None => PACKET_SIZE,
    };
    check_packet_size(storage, packet_size)?;
    Ok(StorageInfo {
        storage,
        storage_span: storage_node.map(|n| n.1),
        packet_size,
        packet_span: packet_node.map(|n| n.1),
    })
}

fn parse_conf(bytes: &[u8]) -> Result<ConfXml, FormatError> {
    // Every text input goes through one tolerant reader (byte-order marks, UTF-16, CRLF); the
    // spans index the decoded text, which `raw` keeps.
    let text = super::text::decode(bytes)?;
    let xml = text.as_bytes();
    // quick-xml skips one leading UTF-8 byte-order mark without counting it in its positions (a
    // second mark, left by `decode` as content, is one): shift every position by its length so the
    // spans index `xml` itself.
    let bom = if xml.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    let sc = scan_conf(xml, bom)?;
    const TCI: &str = "CacheInfo/TileCacheInfo";
    let origin_x = sc.num(&format!("{TCI}/TileOrigin/X"))?;
    let origin_y = sc.num(&format!("{TCI}/TileOrigin/Y"))?;
    let tile_cols = sc.num(&format!("{TCI}/TileCols"))?;
    let tile_rows = sc.num(&format!("{TCI}/TileRows"))?;
    for (n, v) in [("TileCols", tile_cols), ("TileRows", tile_rows)] {
        if !(1.0..=65536.0).contains(&v) || v.fract() != 0.0 {
            return Err(FormatError::Xml(format!(
                "<{n}> must be a tile size in pixels, got {v}"
            )));
        }
    }
    let dpi = sc.num(&format!("{TCI}/DPI")).unwrap_or(96.0);
    let tile_format = sc
        .get("CacheInfo/TileImageInfo/CacheTileFormat")
        .map(|(v, _)| TileFormat::parse(&v))
        .ok_or_else(|| {
            FormatError::Xml("missing <CacheInfo/TileImageInfo/CacheTileFormat>".into())
        })?;
    let StorageInfo {
        storage,
        storage_span,
        packet_size,
        packet_span,
    } = storage_and_packet(&sc)?;
    let scheme = TileScheme {
        wkt: sc.get(&format!("{TCI}/SpatialReference/WKT")).map(|t| t.0),
        wkid: sc.int(&format!("{TCI}/SpatialReference/WKID")),
        latest_wkid: sc.int(&format!("{TCI}/SpatialReference/LatestWKID")),
        origin_x,
        origin_y,
        tile_cols: tile_cols as u32,
        tile_rows: tile_rows as u32,
        dpi: dpi as u32,
        lods: parse_lods(sc.lods.clone(), dpi)?,
        tile_format,
        compression_quality: sc
            .int("CacheInfo/TileImageInfo/CompressionQuality")
            .unwrap_or(0),
        storage,
        packet_size,
    };
    Ok(ConfXml {
        scheme,
        raw: xml.to_vec(),
        storage_span,
        packet_span,
        root_end: sc.root_end,
    })
}

const TYPENS: &str = "http://www.esri.com/schemas/ArcGIS/10.3";

fn fmt_f64(v: f64) -> String {
    // Shortest representation that round-trips.
    format!("{v:?}")
}

struct Xml {
    w: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Self {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))
            .unwrap();
        Xml { w }
    }
    fn open(&mut self, name: &str, xsi_type: Option<&str>, root: bool) {
        let mut s = BytesStart::new(name);
        if let Some(t) = xsi_type {
            s.push_attribute(("xsi:type", t));
        }
        if root {
            s.push_attribute(("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"));
            s.push_attribute(("xmlns:xs", "http://www.w3.org/2001/XMLSchema"));
            s.push_attribute(("xmlns:typens", TYPENS));
        }
        self.w.write_event(Event::Start(s)).unwrap();
    }
    fn close(&mut self, name: &str) {
        self.w.write_event(Event::End(BytesEnd::new(name))).unwrap();
    }
    fn leaf(&mut self, name: &str, text: &str) {
        self.w
            .write_event(Event::Start(BytesStart::new(name)))
            .unwrap();
        self.w
            .write_event(Event::Text(BytesText::new(text)))
            .unwrap();
        self.w.write_event(Event::End(BytesEnd::new(name))).unwrap();
    }
    fn finish(self) -> Vec<u8> {
        let mut v = self.w.into_inner();
        v.push(b'\n');
        v
    }
}

fn spatial_reference(x: &mut Xml, wkt: Option<&str>, wkid: Option<u32>, latest: Option<u32>) {
    if wkt.is_none() && wkid.is_none() && latest.is_none() {
        return;
    }
    // ArcGIS types a geographic reference as such (its 9.x conf.xml: GeographicCoordinateSystem).
    let geographic = wkt.is_some_and(|w| w.trim_start().to_ascii_uppercase().starts_with("GEOGCS"));
    let kind = if geographic {
        "typens:GeographicCoordinateSystem"
    } else {
        "typens:ProjectedCoordinateSystem"
    };
    x.open("SpatialReference", Some(kind), false);
    if let Some(wkt) = wkt {
        x.leaf("WKT", wkt);
    }
    if let Some(id) = wkid {
        x.leaf("WKID", &id.to_string());
    }
    if let Some(id) = latest {
        x.leaf("LatestWKID", &id.to_string());
    }
    x.close("SpatialReference");
}

fn write_conf(s: &TileScheme) -> Vec<u8> {
    let mut x = Xml::new();
    x.open("CacheInfo", Some("typens:CacheInfo"), true);
    x.open("TileCacheInfo", Some("typens:TileCacheInfo"), false);
    spatial_reference(&mut x, s.wkt.as_deref(), s.wkid, s.latest_wkid);
    x.open("TileOrigin", Some("typens:PointN"), false);
    x.leaf("X", &fmt_f64(s.origin_x));
    x.leaf("Y", &fmt_f64(s.origin_y));
    x.close("TileOrigin");
    x.leaf("TileCols", &s.tile_cols.to_string());
    x.leaf("TileRows", &s.tile_rows.to_string());
    x.leaf("DPI", &s.dpi.to_string());
    x.open("LODInfos", Some("typens:ArrayOfLODInfo"), false);
    for l in &s.lods {
        x.open("LODInfo", Some("typens:LODInfo"), false);
        x.leaf("LevelID", &l.level.to_string());
        x.leaf("Scale", &fmt_f64(l.scale));
        x.leaf("Resolution", &fmt_f64(l.resolution));
        x.close("LODInfo");
    }
    x.close("LODInfos");
    x.close("TileCacheInfo");
    x.open("TileImageInfo", Some("typens:TileImageInfo"), false);
    x.leaf("CacheTileFormat", s.tile_format.name());
    x.leaf("CompressionQuality", &s.compression_quality.to_string());
    x.leaf("Antialiasing", "false");
    x.close("TileImageInfo");
    x.open("CacheStorageInfo", Some("typens:CacheStorageInfo"), false);
    x.leaf("StorageFormat", s.storage.esri_name());
    x.leaf("PacketSize", &s.packet_size.to_string());
    x.close("CacheStorageInfo");
    x.close("CacheInfo");
    x.finish()
}

/// Parses conf.cdi (`EnvelopeN` with XMin/YMin/XMax/YMax).
///
/// The bytes go through [`super::text::decode`] like every text input.
pub fn parse_cdi(bytes: &[u8]) -> Result<Envelope, FormatError> {
    let text = super::text::decode(bytes)?;
    let mut reader = Reader::from_reader(text.as_bytes());
    let mut stack: Vec<String> = Vec::new();
    let mut vals: [Option<f64>; 4] = [None; 4];
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| xml_err(e, reader.error_position()))?
        {
            Event::Start(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) if stack.len() == 2 && stack[0] == "EnvelopeN" => {
                let text = t.unescape().map_err(|e| xml_err(e, 0))?;
                let i = match stack[1].as_str() {
                    "XMin" => 0,
                    "YMin" => 1,
                    "XMax" => 2,
                    "YMax" => 3,
                    _ => {
                        buf.clear();
                        continue;
                    }
                };
                vals[i] = Some(text.trim().parse::<f64>().map_err(|_| {
                    FormatError::Xml(format!("<{}> is not a number: {:?}", stack[1], text.trim()))
                })?);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match vals {
        [Some(xmin), Some(ymin), Some(xmax), Some(ymax)] if xmin <= xmax && ymin <= ymax => {
            Ok(Envelope {
                xmin,
                ymin,
                xmax,
                ymax,
            })
        }
        [Some(_), Some(_), Some(_), Some(_)] => {
            Err(FormatError::Xml("envelope has min > max".into()))
        }
        _ => Err(FormatError::Xml(
            "EnvelopeN needs XMin, YMin, XMax and YMax".into(),
        )),
    }
}

/// Writes conf.cdi for `env` in the scheme's spatial reference.
pub fn write_cdi(env: &Envelope, scheme: &TileScheme) -> Vec<u8> {
    let mut x = Xml::new();
    x.open("EnvelopeN", Some("typens:EnvelopeN"), true);
    x.leaf("XMin", &fmt_f64(env.xmin));
    x.leaf("YMin", &fmt_f64(env.ymin));
    x.leaf("XMax", &fmt_f64(env.xmax));
    x.leaf("YMax", &fmt_f64(env.ymax));
    spatial_reference(
        &mut x,
        scheme.wkt.as_deref(),
        scheme.wkid,
        scheme.latest_wkid,
    );
    x.close("EnvelopeN");
    x.finish()
}

/// WKT of WGS 1984 Web Mercator (Auxiliary Sphere) as ArcGIS writes it.
pub const WEB_MERCATOR_WKT: &str = "PROJCS[\"WGS_1984_Web_Mercator_Auxiliary_Sphere\",GEOGCS[\"GCS_WGS_1984\",\
DATUM[\"D_WGS_1984\",SPHEROID[\"WGS_1984\",6378137.0,298.257223563]],PRIMEM[\"Greenwich\",0.0],\
UNIT[\"Degree\",0.0174532925199433]],PROJECTION[\"Mercator_Auxiliary_Sphere\"],PARAMETER[\"False_Easting\",0.0],\
PARAMETER[\"False_Northing\",0.0],PARAMETER[\"Central_Meridian\",0.0],PARAMETER[\"Standard_Parallel_1\",0.0],\
PARAMETER[\"Auxiliary_Sphere_Type\",0.0],UNIT[\"Meter\",1.0],AUTHORITY[\"EPSG\",3857]]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_web_mercator() {
        let s = TileScheme::web_mercator(5, TileFormat::Png32);
        let xml = s.to_conf_xml();
        let back = TileScheme::parse_conf_xml(&xml).unwrap();
        assert_eq!(back.scheme, s);
    }

    #[test]
    fn with_storage_changes_only_storage() {
        let s = TileScheme::web_mercator(2, TileFormat::Jpeg);
        let conf = TileScheme::parse_conf_xml(&s.to_conf_xml()).unwrap();
        let out = conf.with_storage(StorageFormat::Exploded);
        let again = TileScheme::parse_conf_xml(&out).unwrap();
        assert_eq!(again.scheme.storage, StorageFormat::Exploded);
        let a = String::from_utf8(conf.raw().to_vec()).unwrap();
        let b = String::from_utf8(out).unwrap();
        assert_eq!(
            a.replace(
                "esriMapCacheStorageModeCompactV2",
                "esriMapCacheStorageModeExploded"
            ),
            b
        );
    }

    /// Found by the `conf` fuzz target: a CacheStorageInfo with a PacketSize other than 128 but
    /// no StorageFormat (read as exploded) rewritten for compact storage kept that PacketSize
    /// (the StorageFormat went into a second CacheStorageInfo, and readers take the first
    /// PacketSize), so the result was refused. Now the PacketSize becomes 128 there too.
    #[test]
    fn with_storage_sets_packet_size_also_without_a_storage_element() {
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        let xml = String::from_utf8(s.to_conf_xml()).unwrap();
        let start = xml.find("<CacheStorageInfo").unwrap();
        let end = xml.find("</CacheStorageInfo>").unwrap() + "</CacheStorageInfo>".len();
        let xml = format!(
            "{}<CacheStorageInfo xsi:type=\"typens:CacheStorageInfo\"><PacketSize>64</PacketSize>\
             </CacheStorageInfo>{}",
            &xml[..start],
            &xml[end..]
        );
        let conf = TileScheme::parse_conf_xml(xml.as_bytes()).unwrap();
        assert_eq!(conf.scheme.storage, StorageFormat::Exploded);
        for storage in [StorageFormat::CompactV1, StorageFormat::CompactV2] {
            let again = TileScheme::parse_conf_xml(&conf.with_storage(storage))
                .unwrap_or_else(|e| panic!("{storage}: {e}"));
            assert_eq!(again.scheme.storage, storage);
            assert_eq!(again.scheme.packet_size, 128);
        }
    }

    /// Found by the `conf` fuzz target: with a UTF-8 byte-order mark (as Windows tools write),
    /// the spans were off by its length and `with_storage` wrote the new value over the tag.
    #[test]
    fn with_storage_after_a_byte_order_mark() {
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        let mut xml = b"\xef\xbb\xbf".to_vec();
        xml.extend_from_slice(&s.to_conf_xml());
        let conf = TileScheme::parse_conf_xml(&xml).unwrap();
        assert_eq!(conf.scheme, s);
        for storage in [StorageFormat::Exploded, StorageFormat::CompactV1] {
            let out = conf.with_storage(storage);
            let again = TileScheme::parse_conf_xml(&out).unwrap();
            assert_eq!(again.scheme.storage, storage);
            // Read through text::decode: the rewrite is plain UTF-8, without the mark.
            assert!(out.starts_with(b"<?xml"));
        }
        // Only the first mark is skipped (found by fuzzing too): a second one is content, and
        // the spans must stay right.
        let mut two = b"\xef\xbb\xbf".to_vec();
        two.extend_from_slice(&xml);
        let conf = TileScheme::parse_conf_xml(&two).unwrap();
        let out = conf.with_storage(StorageFormat::Exploded);
        let again = TileScheme::parse_conf_xml(&out).unwrap();
        assert_eq!(again.scheme.storage, StorageFormat::Exploded);
    }

    /// Found by the `conf` fuzz target: a spatial reference given only by LatestWKID was dropped
    /// when the scheme was written out.
    #[test]
    fn latest_wkid_alone_is_kept() {
        let mut s = TileScheme::web_mercator(1, TileFormat::Png);
        s.wkt = None;
        s.wkid = None;
        s.latest_wkid = Some(3857);
        let back = TileScheme::parse_conf_xml(&s.to_conf_xml()).unwrap();
        assert_eq!(back.scheme, s);
    }

    #[test]
    fn missing_storage_is_inserted() {
        let xml = b"<CacheInfo><TileCacheInfo><TileOrigin><X>0</X><Y>10</Y></TileOrigin><TileCols>256</TileCols>\
<TileRows>256</TileRows><LODInfos><LODInfo><LevelID>0</LevelID><Scale>1000</Scale></LODInfo></LODInfos>\
</TileCacheInfo><TileImageInfo><CacheTileFormat>PNG</CacheTileFormat></TileImageInfo></CacheInfo>";
        let c = TileScheme::parse_conf_xml(xml).unwrap();
        assert_eq!(c.scheme.storage, StorageFormat::Exploded);
        assert!((c.scheme.lods[0].resolution - 1000.0 / (96.0 * 39.37)).abs() < 1e-12);
        let out = c.with_storage(StorageFormat::CompactV2);
        assert_eq!(
            TileScheme::parse_conf_xml(&out).unwrap().scheme.storage,
            StorageFormat::CompactV2
        );
    }

    #[test]
    fn bad_conf_errors_name_the_element() {
        let e =
            TileScheme::parse_conf_xml(b"<CacheInfo><TileCacheInfo></TileCacheInfo></CacheInfo>")
                .unwrap_err();
        assert!(e.to_string().contains("TileOrigin/X"), "{e}");
        let e = TileScheme::parse_conf_xml(b"<CacheInfo><TileCacheInfo>").unwrap_err();
        assert!(e.to_string().contains("ends inside"), "{e}");
        let e = TileScheme::parse_conf_xml(b"not xml at all <<<").unwrap_err();
        assert!(matches!(e, FormatError::Xml(_)));
    }

    #[test]
    fn tile_geometry() {
        let s = TileScheme::web_mercator(3, TileFormat::Png);
        let b = s.tile_bbox(TileAddr::new(1, 1, 0)).unwrap();
        assert!((b.xmin + WEB_MERCATOR_ORIGIN).abs() < 1e-6);
        // The published origin and level-0 resolution disagree by 3 µm (256 × res0 / 2 ≠ origin).
        assert!((b.ymax - 0.0).abs() < 1e-5);
        assert!((b.ymin + WEB_MERCATOR_ORIGIN).abs() < 1e-5);
        let (rows, cols) = s.tile_range(2, &b).unwrap();
        assert_eq!((rows, cols), (2..4, 0..2));
    }

    /// ArcGIS 9.2/9.3 conf.xml (as in GeoWebCache's arcgis_09.2_conf.xml test file): WKT only, no
    /// CacheStorageInfo, `jpg`, E-notation, 512 px tiles, single-quoted attributes.
    const CONF_92: &str = "<?xml version='1.0' encoding='utf-8'?>\r\n\
<CacheInfo xsi:type='typens:CacheInfo' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' \
xmlns:typens='http://www.esri.com/schemas/ArcGIS/9.2'>\r\n<TileCacheInfo xsi:type='typens:TileCacheInfo'>\r\n\
<SpatialReference xsi:type='typens:GeographicCoordinateSystem'><WKT>GEOGCS[&quot;GCS_WGS_1984&quot;]</WKT>\
</SpatialReference>\r\n<TileOrigin xsi:type='typens:PointN'><X>-180</X><Y>90</Y></TileOrigin>\r\n\
<TileCols>512</TileCols><TileRows>512</TileRows><DPI>96</DPI>\r\n<LODInfos xsi:type='typens:ArrayOfLODInfo'>\r\n\
<LODInfo xsi:type='typens:LODInfo'><LevelID>0</LevelID><Scale>147748799.285417</Scale>\
<Resolution>0.3515625</Resolution></LODInfo>\r\n<LODInfo xsi:type='typens:LODInfo'><LevelID>8</LevelID>\
<Scale>5.77143747208660E+05</Scale><Resolution>1.373291015625E-03</Resolution></LODInfo>\r\n</LODInfos>\r\n\
</TileCacheInfo>\r\n<TileImageInfo xsi:type='typens:TileImageInfo'><CacheTileFormat>jpg</CacheTileFormat>\
<CompressionQuality>75</CompressionQuality><Antialiasing>true</Antialiasing></TileImageInfo>\r\n</CacheInfo>\r\n";

    #[test]
    fn pre_10_conf_xml() {
        let c = TileScheme::parse_conf_xml(CONF_92.as_bytes()).unwrap();
        let s = &c.scheme;
        assert_eq!(s.wkt.as_deref(), Some("GEOGCS[\"GCS_WGS_1984\"]"));
        assert_eq!((s.wkid, s.latest_wkid), (None, None));
        assert_eq!((s.origin_x, s.origin_y), (-180.0, 90.0));
        assert_eq!((s.tile_cols, s.tile_rows), (512, 512));
        assert_eq!(s.tile_format, TileFormat::Jpeg);
        assert_eq!(s.storage, StorageFormat::Exploded);
        assert_eq!(s.packet_size, 0);
        assert_eq!(s.lods[1].level, 8);
        assert_eq!(s.lods[1].resolution, 0.001373291015625);
        assert_eq!(s.lods[1].scale, 577143.74720866);
        // A tile of level 8 spans 512 × 1.373291015625E-03 = 0.703125 degrees.
        let b = s.tile_bbox(TileAddr::new(8, 69, 270)).unwrap();
        assert!((b.xmin - (-180.0 + 270.0 * 0.703125)).abs() < 1e-9, "{b:?}");
        // Made compact, it gains the CacheStorageInfo it lacked, and parses again.
        let v2 = TileScheme::parse_conf_xml(&c.with_storage(StorageFormat::CompactV2)).unwrap();
        assert_eq!(v2.scheme.storage, StorageFormat::CompactV2);
        assert_eq!(v2.scheme.packet_size, 128);
    }

    fn utf16le_with_bom(s: &str) -> Vec<u8> {
        let mut out = vec![0xff, 0xfe];
        for u in s.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }

    #[test]
    fn conf_xml_in_utf16_or_crlf_reads_like_utf8() {
        let s = TileScheme::web_mercator(3, TileFormat::Png);
        let utf8 = String::from_utf8(s.to_conf_xml()).unwrap();
        let crlf = utf8.replace('\n', "\r\n");
        let utf16 = utf16le_with_bom(&utf8.replace("utf-8", "UTF-16"));
        for bytes in [crlf.as_bytes().to_vec(), utf16] {
            let c = TileScheme::parse_conf_xml(&bytes).unwrap();
            assert_eq!(c.scheme, s);
            // The rewrite is UTF-8 and says so.
            let out = c.with_storage(StorageFormat::Exploded);
            assert!(std::str::from_utf8(&out)
                .unwrap()
                .contains("encoding=\"utf-8\""));
            assert_eq!(
                TileScheme::parse_conf_xml(&out).unwrap().scheme.storage,
                StorageFormat::Exploded
            );
        }
        let cdi = write_cdi(
            &Envelope {
                xmin: 1.0,
                ymin: 2.0,
                xmax: 3.0,
                ymax: 4.0,
            },
            &s,
        );
        let cdi16 = utf16le_with_bom(std::str::from_utf8(&cdi).unwrap());
        assert_eq!(parse_cdi(&cdi16).unwrap(), parse_cdi(&cdi).unwrap());
        let e = TileScheme::parse_conf_xml(b"<CacheInfo>\xff</CacheInfo>").unwrap_err();
        assert!(matches!(e, FormatError::Text(_)), "{e}");
    }

    fn with_packet(storage: &str, packet: &str) -> Vec<u8> {
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        String::from_utf8(s.to_conf_xml())
            .unwrap()
            .replace("esriMapCacheStorageModeCompactV2", storage)
            .replace("<PacketSize>128</PacketSize>", packet)
            .into_bytes()
    }

    #[test]
    fn packet_size_other_than_128_is_refused_for_compact_storage() {
        for storage in [
            "esriMapCacheStorageModeCompactV2",
            "esriMapCacheStorageModeCompact",
        ] {
            for p in ["64", "256", "0", "1.28E+02x"] {
                let xml = with_packet(storage, &format!("<PacketSize>{p}</PacketSize>"));
                let e = TileScheme::parse_conf_xml(&xml).unwrap_err();
                assert!(e.to_string().contains("PacketSize"), "{storage} {p}: {e}");
            }
            // 128 in E-notation is 128; a missing PacketSize is the 128 every writer uses.
            for p in ["<PacketSize>1.28E+02</PacketSize>", ""] {
                let c = TileScheme::parse_conf_xml(&with_packet(storage, p)).unwrap();
                assert_eq!(c.scheme.packet_size, 128, "{storage} {p:?}");
            }
        }
        // Exploded caches have no bundles: their PacketSize (often 0) is kept, not judged.
        for p in ["0", "64", "128"] {
            let xml = with_packet(
                "esriMapCacheStorageModeExploded",
                &format!("<PacketSize>{p}</PacketSize>"),
            );
            let c = TileScheme::parse_conf_xml(&xml).unwrap();
            assert_eq!(c.scheme.packet_size.to_string(), p);
            // Made compact, the size becomes 128.
            let v2 = TileScheme::parse_conf_xml(&c.with_storage(StorageFormat::CompactV2));
            assert_eq!(v2.unwrap().scheme.packet_size, 128);
        }
    }

    #[test]
    fn values_that_change_how_bytes_are_read_are_refused_by_name() {
        let xml = with_packet(
            "esriMapCacheStorageModeCompactV3",
            "<PacketSize>128</PacketSize>",
        );
        let e = TileScheme::parse_conf_xml(&xml).unwrap_err();
        assert!(matches!(e, FormatError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("CompactV3"), "{e}");
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        let xml = String::from_utf8(s.to_conf_xml())
            .unwrap()
            .replace("<LevelID>2</LevelID>", "<LevelID>1</LevelID>");
        let e = TileScheme::parse_conf_xml(xml.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("LevelID 1 appears twice"), "{e}");
    }

    #[test]
    fn cdi_round_trip() {
        let s = TileScheme::web_mercator(1, TileFormat::Png);
        let e = Envelope {
            xmin: -1.5,
            ymin: 2.0,
            xmax: 3.25,
            ymax: 4.0,
        };
        assert_eq!(parse_cdi(&write_cdi(&e, &s)).unwrap(), e);
        assert!(parse_cdi(b"<EnvelopeN><XMin>1</XMin></EnvelopeN>").is_err());
    }
}
