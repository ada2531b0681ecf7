//! Mapbox Vector Tile facts (the specification: github.com/mapbox/vector-tile-spec, 2.1, and its
//! `vector_tile.proto`): just enough of the protocol buffer to list a tile's layers, their
//! attribute names and the kind of their values, which is what TileJSON's `vector_layers` says
//! (PMTiles and MBTiles metadata carry it; GDAL needs it to open a PMTiles file of vector tiles).
//!
//! Wire format: a message is a sequence of (key, value), key = field number << 3 | wire type
//! (0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit). `Tile` holds `layers` (3);
//! `Layer` holds `name` (1), `features` (2), `keys` (3), `values` (4); `Feature` holds `tags`
//! (2: packed pairs of key and value indexes); `Value` is one of string (1), float (2),
//! double (3), int64 (4), uint64 (5), sint64 (6), bool (7).

use std::collections::BTreeMap;

/// The kind of an attribute's values, as TileJSON names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Number,
    Boolean,
}

impl FieldKind {
    /// TileJSON's name.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::String => "String",
            FieldKind::Number => "Number",
            FieldKind::Boolean => "Boolean",
        }
    }
}

/// Layer name → attribute name → kind.
pub type Layers = BTreeMap<String, BTreeMap<String, FieldKind>>;

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("a vector tile ends inside a number")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a vector tile holds a number longer than 64 bits".to_string())
}

/// The fields of message `b`: (field number, value).
fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let w = match key & 7 {
            0 => Wire::Varint(varint(b, &mut pos)?),
            1 | 5 => {
                pos += if key & 7 == 1 { 8 } else { 4 };
                Wire::Fixed
            }
            2 => {
                let len = varint(b, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= b.len())
                    .ok_or("a vector tile's field runs past its end")?;
                let s = &b[pos..end];
                pos = end;
                Wire::Bytes(s)
            }
            t => return Err(format!("a vector tile holds wire type {t}")),
        };
        if pos > b.len() {
            return Err("a vector tile's field runs past its end".to_string());
        }
        out.push((key >> 3, w));
    }
    Ok(out)
}

/// Adds the layers of the (uncompressed) vector tile `tile` to `out`. An attribute seen with
/// values of two kinds is a String. Errors: not a protocol buffer of that shape.
pub fn add_layers(tile: &[u8], out: &mut Layers) -> Result<(), String> {
    for (n, w) in fields(tile)? {
        let (3, Wire::Bytes(layer)) = (n, w) else {
            continue;
        };
        let mut name = String::new();
        let mut keys = Vec::new();
        let mut kinds = Vec::new();
        let mut features = Vec::new();
        for (n, w) in fields(layer)? {
            match (n, w) {
                (1, Wire::Bytes(s)) => name = String::from_utf8_lossy(s).into_owned(),
                (2, Wire::Bytes(f)) => features.push(f),
                (3, Wire::Bytes(s)) => keys.push(String::from_utf8_lossy(s).into_owned()),
                (4, Wire::Bytes(v)) => {
                    let kind = fields(v)?
                        .first()
                        .map_or(FieldKind::String, |(t, _)| match t {
                            2..=6 => FieldKind::Number,
                            7 => FieldKind::Boolean,
                            _ => FieldKind::String,
                        });
                    kinds.push(kind);
                }
                _ => {}
            }
        }
        let layer_fields = out.entry(name).or_default();
        for f in features {
            let mut tags = Vec::new();
            for (n, w) in fields(f)? {
                match (n, w) {
                    (2, Wire::Bytes(packed)) => {
                        let mut p = 0;
                        while p < packed.len() {
                            tags.push(varint(packed, &mut p)?);
                        }
                    }
                    (2, Wire::Varint(v)) => tags.push(v),
                    _ => {}
                }
            }
            for pair in tags.chunks_exact(2) {
                let (Some(k), Some(kind)) =
                    (keys.get(pair[0] as usize), kinds.get(pair[1] as usize))
                else {
                    continue;
                };
                layer_fields
                    .entry(k.clone())
                    .and_modify(|was| {
                        if *was != *kind {
                            *was = FieldKind::String;
                        }
                    })
                    .or_insert(*kind);
            }
        }
    }
    Ok(())
}

/// Layers seen over many tiles: name → (fields and the kind of their values, lowest zoom, highest
/// zoom), for TileJSON 3.0's `vector_layers`.
pub type SeenLayers = BTreeMap<String, (BTreeMap<String, FieldKind>, u8, u8)>;

/// Adds the layers of vector tile `bytes` (gzip'ed or not, inflated up to 64 MiB) of zoom `z` to
/// `seen`; a field seen with values of two kinds becomes String. A tile that does not decode adds
/// nothing (its bytes are kept all the same; `verify --decode` is the check).
pub fn see_tile(seen: &mut SeenLayers, z: u8, bytes: &[u8]) {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        let mut d = flate2::read::GzDecoder::new(bytes).take(64 << 20);
        if d.read_to_end(&mut out).is_err() {
            return;
        }
        out
    } else {
        bytes.to_vec()
    };
    let mut layers = Layers::new();
    if add_layers(&raw, &mut layers).is_err() {
        return;
    }
    for (name, fields) in layers {
        let e = seen.entry(name).or_insert_with(|| (BTreeMap::new(), z, z));
        e.1 = e.1.min(z);
        e.2 = e.2.max(z);
        for (k, kind) in fields {
            e.0.entry(k)
                .and_modify(|was| {
                    if *was != kind {
                        *was = FieldKind::String;
                    }
                })
                .or_insert(kind);
        }
    }
}

/// TileJSON 3.0's `vector_layers` of `seen`: an array of `{"id", "fields": {name: "String" |
/// "Number" | "Boolean"}, "minzoom", "maxzoom"}`, by layer name.
pub fn vector_layers(seen: &SeenLayers) -> serde_json::Value {
    seen.iter()
        .map(|(id, (fields, lo, hi))| {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), v.name().into()))
                .collect();
            serde_json::json!({"id": id, "fields": fields, "minzoom": lo, "maxzoom": hi})
        })
        .collect::<Vec<_>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(field: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn layers_fields_and_kinds() {
        // A layer "roads" with keys n (int) and name (string), one feature tagged with both.
        let mut layer = msg(1, b"roads");
        layer.extend(msg(3, b"n"));
        layer.extend(msg(3, b"name"));
        layer.extend(msg(4, &[4 << 3, 7])); // int64 7
        layer.extend(msg(4, &msg(1, b"A1")));
        layer.extend(msg(2, &msg(2, &[0, 0, 1, 1])));
        layer.extend([15 << 3, 2]); // version 2
        let tile = msg(3, &layer);
        let mut out = Layers::new();
        add_layers(&tile, &mut out).unwrap();
        let roads = &out["roads"];
        assert_eq!(roads["n"], FieldKind::Number);
        assert_eq!(roads["name"], FieldKind::String);
        assert!(add_layers(&[0x1a, 0x40, 1], &mut out).is_err());
    }
}
