//! Tile packages (`.tpkx`, Esri's open tile-package spec): `root.json` and `iteminfo.json` to and
//! from a [`TileScheme`], and the stored (uncompressed) zip that holds them with the Compact V2
//! bundles under `tile/`. Callers hand in readers and writers; no file-system walking here.

use std::io::{Read, Seek, Write};

use serde_json::{json, Map, Value};

use super::conf::{Envelope, Lod, StorageFormat, TileFormat, TileScheme};
use super::{extent, FormatError};

/// Name of the package's scheme document.
pub const ROOT_JSON: &str = "root.json";
/// Name of the package's item description.
pub const ITEMINFO_JSON: &str = "iteminfo.json";
/// Folder of the bundles inside the package (`tileBundlesPath`).
pub const TILE_DIR: &str = "tile";
/// Bundles per package side: the spec fixes compact V2 bundles of 128 × 128 tiles.
pub const PACKET_SIZE: u32 = super::conf::PACKET_SIZE;
/// Zip entries of this size or more need zip64 records.
const ZIP64_FROM: u64 = 0xFFFF_FFFF;

fn json_err(msg: impl Into<String>) -> FormatError {
    FormatError::Json(msg.into())
}

/// `spatialReference` of a package: the WKID and LatestWKID as conf.xml gives them; when it gives
/// only a WKT, the EPSG code the WKT names ([`extent::epsg_of_wkt`]) as `wkid`/`latestWkid` too,
/// since GDAL's ESRIC driver opens a package by its WKIDs only (a WKT alone: "Invalid Spatial
/// Reference"). The WKT is kept when there is no WKID from conf.xml.
fn spatial_reference(s: &TileScheme) -> Value {
    let mut m = Map::new();
    let from_wkt = match (s.wkid, s.latest_wkid) {
        (None, None) => s.wkt.as_deref().and_then(extent::epsg_of_wkt),
        _ => None,
    };
    if let Some(id) = s.wkid.or(from_wkt) {
        m.insert("wkid".into(), json!(id));
    }
    if let Some(id) = s.latest_wkid.or(from_wkt) {
        m.insert("latestWkid".into(), json!(id));
    }
    if s.wkid.is_none() {
        if let Some(wkt) = &s.wkt {
            m.insert("wkt".into(), json!(wkt));
        }
    }
    Value::Object(m)
}

fn extent_json(e: &Envelope, sr: &Value) -> Value {
    json!({"xmin": e.xmin, "ymin": e.ymin, "xmax": e.xmax, "ymax": e.ymax, "spatialReference": sr})
}

/// `root.json` for a package holding `levels` (min, max) of `scheme` over `extent`.
pub fn root_json(name: &str, scheme: &TileScheme, levels: (u8, u8), extent: &Envelope) -> Vec<u8> {
    let sr = spatial_reference(scheme);
    let lod = |l: u8| scheme.lod(l);
    let lods: Vec<Value> = scheme
        .lods
        .iter()
        .map(|l| json!({"level": l.level, "resolution": l.resolution, "scale": l.scale}))
        .collect();
    // In this order, as ArcGIS writes it: GDAL's ESRIC driver recognises a root.json by finding
    // "tileBundlesPath" in its first 1024 bytes (8192 when "tileInfo" is seen there), so it must
    // come before anything long (a spatial reference's WKT).
    let members = [
        ("name", json!(name)),
        ("version", json!("1.0")),
        ("tileBundlesPath", json!(format!("./{TILE_DIR}"))),
        (
            "tileImageInfo",
            json!({
                "format": scheme.tile_format.name(),
                "compressionQuality": scheme.compression_quality,
            }),
        ),
        (
            "storageInfo",
            json!({
                "storageFormat": StorageFormat::CompactV2.esri_name(),
                "packetSize": PACKET_SIZE,
            }),
        ),
        ("minLOD", json!(levels.0)),
        ("maxLOD", json!(levels.1)),
        ("minScale", json!(lod(levels.0).map_or(0.0, |l| l.scale))),
        ("maxScale", json!(lod(levels.1).map_or(0.0, |l| l.scale))),
        ("resampling", json!(false)),
        ("spatialReference", sr.clone()),
        ("initialExtent", extent_json(extent, &sr)),
        ("fullExtent", extent_json(extent, &sr)),
        (
            "tileInfo",
            json!({
                "rows": scheme.tile_rows,
                "cols": scheme.tile_cols,
                "dpi": scheme.dpi,
                "origin": {"x": scheme.origin_x, "y": scheme.origin_y},
                "spatialReference": sr,
                "lods": lods,
            }),
        ),
    ];
    ordered_json(&members)
}

/// The members of `root.json` that follow from what a cache holds: `minLOD`/`maxLOD` and
/// `minScale`/`maxScale` for `levels` (min, max), `fullExtent` (in the scheme's spatial
/// reference) for `extent`. What [`root_json`] writes, for [`set_members`] to update a
/// ready-to-serve folder after tiles were added. GDAL's ESRIC driver reads levels `minLOD` to
/// `maxLOD` only (a level beyond `maxLOD` is not seen), and crops to `fullExtent`.
pub fn content_members(
    scheme: &TileScheme,
    levels: Option<(u8, u8)>,
    extent: Option<&Envelope>,
) -> Vec<(&'static str, Value)> {
    let sr = spatial_reference(scheme);
    let mut out = Vec::new();
    if let Some(e) = extent {
        out.push(("fullExtent", extent_json(e, &sr)));
    }
    if let Some((lo, hi)) = levels {
        let scale = |l: u8| scheme.lod(l).map_or(0.0, |l| l.scale);
        out.extend([
            ("minLOD", json!(lo)),
            ("maxLOD", json!(hi)),
            ("minScale", json!(scale(lo))),
            ("maxScale", json!(scale(hi))),
        ]);
    }
    out
}

/// A JSON object with its members in the given order, pretty-printed (serde_json's maps sort keys).
fn ordered_json(members: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (k, v)) in members.iter().enumerate() {
        let text = serde_json::to_string_pretty(v).expect("JSON of plain values");
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&serde_json::to_string(k).expect("a string"));
        out.push_str(": ");
        out.push_str(&text.replace('\n', "\n  "));
    }
    out.push_str("\n}");
    out.into_bytes()
}

/// The extent in geographic WGS84 (WKID 4326), as ArcGIS writes it in `iteminfo.json`, for any
/// spatial reference bundlefs can identify ([`extent::wgs84_extent`]); `None` otherwise (a wrong
/// extent is worse than none).
pub fn wgs84_extent(scheme: &TileScheme, e: &Envelope) -> Option<Envelope> {
    extent::wgs84_extent(scheme, e)
}

/// Name of the package thumbnail, as `iteminfo.json` points to it.
pub const THUMBNAIL_PNG: &str = "thumbnail.png";

/// `iteminfo.json` of a package (`guid` must be unique per package; the caller makes one). As
/// ArcGIS writes it, the extent is in WGS84 ([`wgs84_extent`]; left out when it cannot be given);
/// `thumbnail` says whether the package holds [`THUMBNAIL_PNG`].
pub fn iteminfo_json(
    name: &str,
    guid: &str,
    created_ms: u64,
    scheme: &TileScheme,
    extent: &Envelope,
    thumbnail: bool,
) -> Vec<u8> {
    let mut v = json!({
        "name": name,
        "title": name,
        "guid": guid,
        "version": "1.0",
        "created": created_ms,
        "type": "Compact Tile Package",
        "typeKeywords": ["Compact Tile Package", "Tile Package", "tpkx"],
        "creator": "bundlefs",
    });
    if let Some(g) = wgs84_extent(scheme, extent) {
        v["extent"] = extent_json(&g, &json!({"wkid": 4326, "latestWkid": 4326}));
    }
    if thumbnail {
        v["thumbnail"] = json!(format!("./{THUMBNAIL_PNG}"));
    }
    serde_json::to_vec_pretty(&v).expect("JSON of plain values")
}

/// What a package's `root.json` says: the tiling scheme (storage Compact V2), the levels it holds,
/// its full extent and the bundle folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RootInfo {
    pub scheme: TileScheme,
    pub levels: Option<(u8, u8)>,
    pub extent: Option<Envelope>,
    /// `tileBundlesPath` without a leading `./` (usually `tile`).
    pub tile_dir: String,
}

/// Parses a package's `root.json`.
///
/// The bytes go through [`super::text::parse_json`] (byte-order marks, UTF-16, CRLF).
///
/// Errors: [`FormatError::Json`] naming the member at fault; [`FormatError::Unsupported`] for a
/// value bundlefs cannot read by: `storageInfo.packetSize` other than 128, a
/// `storageInfo.storageFormat` other than Compact V2 (the only storage of the spec), a level given
/// twice in `tileInfo.lods`.
pub fn parse_root_json(bytes: &[u8]) -> Result<RootInfo, FormatError> {
    let v: Value = super::text::parse_json(bytes)?;
    let num = |v: &Value, path: &str| -> Result<f64, FormatError> {
        let mut cur = v;
        for k in path.split('.') {
            cur = cur
                .get(k)
                .ok_or_else(|| json_err(format!("missing {path:?}")))?;
        }
        cur.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| json_err(format!("{path:?} is not a number: {cur}")))
    };
    let ti = v
        .get("tileInfo")
        .ok_or_else(|| json_err("missing \"tileInfo\""))?;
    let (rows, cols) = (num(ti, "rows")?, num(ti, "cols")?);
    for (n, x) in [("tileInfo.rows", rows), ("tileInfo.cols", cols)] {
        if !(1.0..=65536.0).contains(&x) || x.fract() != 0.0 {
            return Err(json_err(format!(
                "{n} must be a tile size in pixels, got {x}"
            )));
        }
    }
    let dpi = num(ti, "dpi").unwrap_or(96.0);
    let lods_v = ti
        .get("lods")
        .and_then(Value::as_array)
        .ok_or_else(|| json_err("missing \"tileInfo.lods\""))?;
    let mut lods = Vec::new();
    for (i, l) in lods_v.iter().enumerate() {
        let level = num(l, "level").map_err(|e| json_err(format!("lods[{i}]: {e}")))?;
        if !(0.0..=99.0).contains(&level) || level.fract() != 0.0 {
            return Err(json_err(format!(
                "lods[{i}]: level {level} out of range 0..99"
            )));
        }
        let scale = num(l, "scale").map_err(|e| json_err(format!("lods[{i}]: {e}")))?;
        let resolution =
            num(l, "resolution").unwrap_or(scale / (dpi * super::conf::INCHES_PER_METRE));
        if resolution <= 0.0 {
            return Err(json_err(format!("lods[{i}]: resolution must be positive")));
        }
        lods.push(Lod {
            level: level as u8,
            scale,
            resolution,
        });
    }
    if lods.is_empty() {
        return Err(json_err("\"tileInfo.lods\" is empty"));
    }
    super::conf::check_unique_levels(lods.iter().map(|l| l.level), "tileInfo.lods level")?;
    check_storage_info(v.get("storageInfo"))?;
    let sr = ti
        .get("spatialReference")
        .or_else(|| v.get("spatialReference"));
    let sr_int = |k: &str| {
        sr.and_then(|s| s.get(k))
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
    };
    let wkid = sr_int("wkid");
    let latest_wkid = sr_int("latestWkid");
    let mut wkt = sr
        .and_then(|s| s.get("wkt"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if wkt.is_none() && (wkid == Some(102100) || wkid == Some(3857)) {
        wkt = Some(super::conf::WEB_MERCATOR_WKT.to_string());
    }
    let tii = v.get("tileImageInfo");
    // A vector tile service's root.json (`.vtpk`) gives the format in `tileInfo` (`pbf`).
    let format = tii
        .and_then(|t| t.get("format"))
        .or_else(|| ti.get("format"))
        .and_then(Value::as_str)
        .map_or(TileFormat::Png, TileFormat::parse);
    let quality = tii
        .and_then(|t| t.get("compressionQuality"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    let scheme = TileScheme {
        wkt,
        wkid,
        latest_wkid,
        origin_x: num(ti, "origin.x")?,
        origin_y: num(ti, "origin.y")?,
        tile_cols: cols as u32,
        tile_rows: rows as u32,
        dpi: dpi as u32,
        lods,
        tile_format: format,
        compression_quality: quality,
        storage: StorageFormat::CompactV2,
        packet_size: PACKET_SIZE,
    };
    let levels = match (num(&v, "minLOD"), num(&v, "maxLOD")) {
        (Ok(a), Ok(b)) if (0.0..=99.0).contains(&a) && (a..=99.0).contains(&b) => {
            Some((a as u8, b as u8))
        }
        _ => None,
    };
    let extent = v.get("fullExtent").and_then(|e| {
        let (xmin, ymin, xmax, ymax) = (
            num(e, "xmin").ok()?,
            num(e, "ymin").ok()?,
            num(e, "xmax").ok()?,
            num(e, "ymax").ok()?,
        );
        (xmin <= xmax && ymin <= ymax).then_some(Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        })
    });
    let tile_dir = v
        .get("tileBundlesPath")
        .and_then(Value::as_str)
        .unwrap_or("./tile")
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string();
    if tile_dir.is_empty() || tile_dir.split('/').any(|p| p == "..") {
        return Err(json_err(format!("bad \"tileBundlesPath\" {tile_dir:?}")));
    }
    Ok(RootInfo {
        scheme,
        levels,
        extent,
        tile_dir,
    })
}

/// Refuses a `storageInfo` whose values change how the bundles are read: a storage format other
/// than Compact V2 or a packet size other than 128 (absent members mean the spec's values).
fn check_storage_info(si: Option<&Value>) -> Result<(), FormatError> {
    let Some(si) = si else { return Ok(()) };
    if let Some(f) = si.get("storageFormat") {
        let name = f.as_str().unwrap_or_default();
        if StorageFormat::from_esri_name(name) != Some(StorageFormat::CompactV2) {
            return Err(FormatError::Unsupported(format!(
                "storageInfo.storageFormat {f}; a tile package holds {} bundles",
                StorageFormat::CompactV2.esri_name()
            )));
        }
    }
    if let Some(p) = si.get("packetSize") {
        let size = p
            .as_f64()
            .filter(|x| x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(x))
            .ok_or_else(|| {
                FormatError::Unsupported(format!(
                    "storageInfo.packetSize {p}; bundlefs reads bundles of {PACKET_SIZE} x {PACKET_SIZE} tiles only"
                ))
            })?;
        super::conf::check_packet_size(StorageFormat::CompactV2, size as u32)
            .map_err(|_| {
                FormatError::Unsupported(format!(
                    "storageInfo.packetSize {size}; bundlefs reads bundles of {PACKET_SIZE} x {PACKET_SIZE} \
                     tiles only (GDAL refuses other sizes too)"
                ))
            })?;
    }
    Ok(())
}

/// Writes a package: every entry stored (not compressed), as ArcGIS Runtime requires. `entries`
/// are (name inside the package, size, reader); sizes decide whether an entry needs zip64.
pub fn write_package<W, R>(
    out: W,
    entries: impl IntoIterator<Item = (String, u64, R)>,
) -> std::io::Result<W>
where
    W: Write + Seek,
    R: Read,
{
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(out);
    for (name, size, mut r) in entries {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(size >= ZIP64_FROM);
        z.start_file(name, opts).map_err(std::io::Error::other)?;
        std::io::copy(&mut r, &mut z)?;
    }
    z.finish().map_err(std::io::Error::other)
}

/// `root.json` text with top-level `members` set to the given values, everything else kept as it
/// was, byte for byte and in its order (an update must not move `tileBundlesPath` past the first
/// 1024 bytes, where GDAL's ESRIC driver looks for it, nor drop members bundlefs does not read,
/// such as ArcGIS's `layers` legend). A member not there yet is added at the end.
///
/// Errors: what [`super::text::parse_json`] reports for bytes that are not JSON, and
/// [`FormatError::Json`] when the document is not an object.
pub fn set_members(bytes: &[u8], members: &[(&str, Value)]) -> Result<Vec<u8>, FormatError> {
    super::text::parse_json(bytes)?;
    let text = super::text::decode(bytes)?;
    let spans =
        top_level_members(&text).ok_or_else(|| json_err("root.json is not a JSON object"))?;
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut added = String::new();
    for (key, value) in members {
        let value_text = serde_json::to_string(value).expect("JSON of plain values");
        match spans.members.iter().find(|(k, _)| k == key) {
            Some((_, range)) => edits.push((range.clone(), value_text)),
            None => {
                let sep = if spans.members.is_empty() && added.is_empty() {
                    "\n  "
                } else {
                    ",\n  "
                };
                added.push_str(sep);
                added.push_str(&serde_json::to_string(key).expect("a string"));
                added.push_str(": ");
                added.push_str(&value_text);
            }
        }
    }
    if !added.is_empty() {
        added.push('\n');
        edits.push((spans.last_value_end..spans.last_value_end, added));
    }
    edits.sort_by_key(|e| e.0.start);
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for (range, with) in edits {
        out.push_str(&text[at..range.start]);
        out.push_str(&with);
        at = range.end;
    }
    out.push_str(&text[at..]);
    Ok(out.into_bytes())
}

/// Members of a JSON object's top level: (key, byte range of the value), and where the last value
/// ends (just after `{` for an empty object).
struct TopLevel {
    members: Vec<(String, std::ops::Range<usize>)>,
    last_value_end: usize,
}

/// Scans valid JSON text (checked by the caller) for its top-level members; `None` when the
/// document is not an object.
fn top_level_members(text: &str) -> Option<TopLevel> {
    let b = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // Index just past the string starting at `i` (a `"`).
    let string_end = |mut i: usize| {
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Index just past the value starting at `i`.
    let value_end = |mut i: usize| {
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i = string_end(i);
                    if depth == 0 {
                        return i;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return i;
                    }
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                b',' if depth == 0 => return i,
                c if depth == 0 && c.is_ascii_whitespace() => return i,
                _ => {}
            }
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut out = TopLevel {
        members: Vec::new(),
        last_value_end: i,
    };
    loop {
        i = skip_ws(i);
        match b.get(i)? {
            b'}' => return Some(out),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let k_end = string_end(i);
        let key: String = serde_json::from_str(text.get(i..k_end)?).ok()?;
        i = skip_ws(k_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let v_start = skip_ws(i + 1);
        let v_end = value_end(v_start);
        out.members.push((key, v_start..v_end));
        out.last_value_end = v_end;
        i = v_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_json_round_trips() {
        let mut s = TileScheme::web_mercator(5, TileFormat::Png);
        s.storage = StorageFormat::CompactV2;
        let e = Envelope {
            xmin: -10.0,
            ymin: -5.0,
            xmax: 20.0,
            ymax: 7.5,
        };
        let r = parse_root_json(&root_json("x", &s, (1, 4), &e)).unwrap();
        assert_eq!(r.scheme, s);
        assert_eq!(r.levels, Some((1, 4)));
        assert_eq!(r.extent, Some(e));
        assert_eq!(r.tile_dir, "tile");
    }

    #[test]
    fn bad_root_json_says_what() {
        let e = parse_root_json(b"{\"tileInfo\": {\"rows\": 256}}").unwrap_err();
        assert!(e.to_string().contains("cols"), "{e}");
        let e = parse_root_json(b"[1,").unwrap_err();
        assert!(matches!(e, FormatError::Json(_)));
        let e = parse_root_json(
            br#"{"tileBundlesPath":"../x","tileInfo":{"rows":256,"cols":256,"origin":{"x":0,"y":0},"lods":[{"level":0,"scale":1,"resolution":1}]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("tileBundlesPath"), "{e}");
    }

    fn sample_root() -> String {
        let s = TileScheme::web_mercator(3, TileFormat::Png);
        let e = Envelope {
            xmin: -1.0,
            ymin: -1.0,
            xmax: 1.0,
            ymax: 1.0,
        };
        String::from_utf8(root_json("x", &s, (0, 3), &e)).unwrap()
    }

    #[test]
    fn root_json_as_editors_save_it() {
        let plain = parse_root_json(sample_root().as_bytes()).unwrap();
        let mut bom_crlf = b"\xef\xbb\xbf".to_vec();
        bom_crlf.extend_from_slice(sample_root().replace('\n', "\r\n").as_bytes());
        assert_eq!(parse_root_json(&bom_crlf).unwrap(), plain);
        let mut utf16 = vec![0xfe, 0xff];
        for u in sample_root().encode_utf16() {
            utf16.extend_from_slice(&u.to_be_bytes());
        }
        assert_eq!(parse_root_json(&utf16).unwrap(), plain);
    }

    #[test]
    fn root_json_values_bundlefs_cannot_read_by_are_refused() {
        let cases = [
            ("\"packetSize\": 128", "\"packetSize\": 64", "packetSize 64"),
            (
                "\"packetSize\": 128",
                "\"packetSize\": \"128\"",
                "packetSize \"128\"",
            ),
            (
                "esriMapCacheStorageModeCompactV2",
                "esriMapCacheStorageModeCompact",
                "storageFormat \"esriMapCacheStorageModeCompact\"",
            ),
            ("\"level\": 3", "\"level\": 2", "level 2 appears twice"),
        ];
        for (from, to, want) in cases {
            let text = sample_root().replace(from, to);
            assert_ne!(text, sample_root(), "{from}");
            let e = parse_root_json(text.as_bytes()).unwrap_err();
            assert!(matches!(e, FormatError::Unsupported(_)), "{e}");
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        // Without storageInfo, the spec's values hold.
        let mut v: Value = serde_json::from_str(&sample_root()).unwrap();
        v.as_object_mut().unwrap().remove("storageInfo");
        let r = parse_root_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(r.scheme.packet_size, 128);
    }

    #[test]
    fn package_entries_are_stored() {
        let data = vec![7u8; 1000];
        let cur = write_package(
            std::io::Cursor::new(Vec::new()),
            [
                ("root.json".to_string(), 2, &b"{}"[..]),
                ("tile/L00/R0000C0000.bundle".to_string(), 1000, &data[..]),
            ],
        )
        .unwrap();
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(cur.into_inner())).unwrap();
        assert_eq!(z.len(), 2);
        let f = z.by_name("tile/L00/R0000C0000.bundle").unwrap();
        assert_eq!(f.compression(), zip::CompressionMethod::Stored);
        assert_eq!(f.size(), 1000);
        assert_eq!(f.compressed_size(), 1000);
    }

    #[test]
    fn set_members_keeps_the_rest_in_order() {
        let text = "{\"name\": \"a\\\"}\", \"fullExtent\": {\"xmin\": 1, \"l\": [1, {\"x\": \"}\"}]},\n \"tileBundlesPath\" : \"./tile\", \"maxLOD\":3}";
        let out = set_members(
            text.as_bytes(),
            &[
                ("fullExtent", json!({"xmin": 5})),
                ("maxLOD", json!(7)),
                ("minLOD", json!(2)),
            ],
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "{\"name\": \"a\\\"}\", \"fullExtent\": {\"xmin\":5},\n \"tileBundlesPath\" : \"./tile\", \"maxLOD\":7,\n  \"minLOD\": 2\n}"
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["minLOD"], 2);
        assert_eq!(v["name"], "a\"}");
        assert_eq!(
            set_members(b"{}", &[("a", json!(1))]).unwrap(),
            b"{\n  \"a\": 1\n}"
        );
        assert!(set_members(b"[1]", &[("a", json!(1))]).is_err());
        assert!(set_members(b"{\"a\": ", &[("a", json!(1))]).is_err());
    }
}
