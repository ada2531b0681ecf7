//! XYZ and TMS tile folders: `{z}/{x}/{y}.{ext}`, decimal numbers, one folder per zoom level and
//! column, y counted from the top (XYZ, the "slippy map" convention of OpenStreetMap, Leaflet and
//! OpenLayers) or from the bottom (TMS, OSGeo's Tile Map Service specification, as gdal2tiles
//! writes by default). Levels are Web Mercator zoom levels. A folder says which it is in
//! `metadata.json` (`"scheme": "xyz"` or `"tms"`, beside MBTiles-style metadata: name, format,
//! bounds, minzoom, maxzoom, as mb-util writes it), or, for TMS, by a `tilemapresource.xml`
//! (gdal2tiles).

use serde_json::{json, Map, Value};

use super::conf::Envelope;

/// The metadata file bundlefs writes into (and reads from) a folder's root.
pub const METADATA: &str = "metadata.json";
/// The file gdal2tiles writes beside TMS tiles (OSGeo TMS 1.0.0 `TileMap`).
pub const TMS_RESOURCE: &str = "tilemapresource.xml";

/// The name of the file of the tile at `y` with extension `ext`: `y.ext`.
pub fn file_name(y: u32, ext: &str) -> String {
    format!("{y}.{ext}")
}

/// A decimal number without sign or spaces (`"17"`; not `"+1"`, `"0x1"`, `""`).
pub fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The y of a tile file name `y.ext` whose extension is a tile's
/// ([`super::exploded::TILE_EXTS`], any case); None for any other name.
pub fn parse_file(name: &str) -> Option<u32> {
    let (stem, ext) = name.rsplit_once('.')?;
    super::exploded::TILE_EXTS
        .iter()
        .any(|e| e.eq_ignore_ascii_case(ext))
        .then(|| parse_number(stem))
        .flatten()
}

/// The `metadata.json` of a folder: MBTiles-style keys (`name`, `format` as MBTiles names it,
/// `bounds` in WGS84 degrees `left,bottom,right,top`, `minzoom`, `maxzoom`) and `scheme`.
pub fn metadata(name: &str, format: &str, bounds: &str, zooms: (u8, u8), tms: bool) -> Vec<u8> {
    let v = json!({
        "name": name,
        "format": format,
        "bounds": bounds,
        "minzoom": zooms.0.to_string(),
        "maxzoom": zooms.1.to_string(),
        "scheme": if tms { "tms" } else { "xyz" },
        "description": format!("{name}, written by bundlefs"),
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `metadata.json` bytes with `minzoom` and `maxzoom` set to `zooms` (the levels the folder holds
/// after a job), everything else kept. Errors, as text: not a JSON object.
pub fn with_zooms(bytes: &[u8], zooms: (u8, u8)) -> Result<Vec<u8>, String> {
    let mut v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object_mut().ok_or("not a JSON object")?;
    o.insert("minzoom".into(), Value::String(zooms.0.to_string()));
    o.insert("maxzoom".into(), Value::String(zooms.1.to_string()));
    let mut out = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    out.push(b'\n');
    Ok(out)
}

/// What a folder's `metadata.json` says that bundlefs uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FolderMetadata {
    /// `scheme`: Some(true) for `tms`, Some(false) for `xyz`.
    pub tms: Option<bool>,
    /// `format`, as MBTiles names it (`png`, `jpg`, `pbf`).
    pub format: Option<String>,
    /// `bounds`, as Web Mercator metres.
    pub bounds: Option<Envelope>,
}

/// What a folder's `metadata.json` says ([`FolderMetadata`]). `bounds` may be a string
/// `left,bottom,right,top` (MBTiles) or an array of four numbers (TileJSON). Errors, as text: not
/// JSON, not an object, a `scheme` other than `xyz`/`tms`.
pub fn read_metadata(bytes: &[u8]) -> Result<FolderMetadata, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let o: &Map<String, Value> = v.as_object().ok_or("not a JSON object")?;
    let text = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let tms = match text("scheme").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("xyz") => Some(false),
        Some("tms") => Some(true),
        Some(other) => {
            return Err(format!(
                "scheme {other:?}: bundlefs reads \"xyz\" (rows from the top) or \"tms\" (from the bottom)"
            ))
        }
    };
    let bounds = match o.get("bounds") {
        Some(Value::String(s)) => super::mbtiles::parse_bounds(s),
        Some(Value::Array(a)) => {
            let n: Option<Vec<String>> = a
                .iter()
                .map(|v| v.as_f64().map(|f| f.to_string()))
                .collect();
            n.and_then(|n| super::mbtiles::parse_bounds(&n.join(",")))
        }
        _ => None,
    };
    Ok(FolderMetadata {
        tms,
        format: text("format"),
        bounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_metadata() {
        assert_eq!(file_name(12, "png"), "12.png");
        assert_eq!(parse_file("12.PNG"), Some(12));
        assert_eq!(parse_file("12.jpeg"), Some(12));
        assert_eq!(parse_file("x.png"), None);
        assert_eq!(parse_file("-1.png"), None);
        assert_eq!(parse_file("12.txt"), None);
        assert_eq!(parse_number("007"), Some(7));
        assert_eq!(parse_number("+1"), None);
        let m = metadata("n", "png", "-180,-85,180,85", (0, 3), true);
        let m = read_metadata(&m).unwrap();
        assert_eq!((m.tms, m.format.as_deref()), (Some(true), Some("png")));
        assert!(m.bounds.unwrap().xmax > 2.0e7);
        assert!(read_metadata(br#"{"scheme": "wmts"}"#)
            .unwrap_err()
            .contains("wmts"));
        assert!(read_metadata(b"[1]").is_err());
        let m = read_metadata(br#"{"bounds": [-10, -10, 10, 10]}"#).unwrap();
        assert!(m.bounds.is_some());
    }
}
