//! The documents of a `.tpk` tile package (the older, Compact V1 package of ArcGIS), besides the
//! cache itself: entry names, `esriinfo/iteminfo.xml`, `esriinfo/item.pkinfo`,
//! `servicedescriptions/mapserver/mapserver.json` and `conf.properties`. Modelled on the packages
//! ArcGIS wrote in `tests/data/fixtures/arcgis-v1-tpk/states_filled.tpk` and
//! `tests/data/cases/12-tpk-alt-root-name/` (consbio/tpkutils' test data); the entries and
//! members written are the ones those packages hold and readers (ArcGIS, tpkutils) look up.

use quick_xml::escape::escape;
use serde_json::{json, Value};

use super::conf::{Envelope, TileScheme};

/// Folder of the cache inside the package: `v101/<map name>/`. ArcGIS names it after the map's
/// data frame, `Layers` unless renamed; bundlefs writes `Layers`, as the fixture has it.
pub const CACHE_DIR: &str = "v101/Layers";
/// The package's item description.
pub const ITEMINFO_XML: &str = "esriinfo/iteminfo.xml";
/// The package's id card.
pub const ITEM_PKINFO: &str = "esriinfo/item.pkinfo";
/// The thumbnail `iteminfo.xml` points to (relative to `esriinfo/`: `thumbnail/thumbnail.png`).
pub const THUMBNAIL_PNG: &str = "esriinfo/thumbnail/thumbnail.png";
/// The map service description (tpkutils reads the geographic extent from it).
pub const MAPSERVER_JSON: &str = "servicedescriptions/mapserver/mapserver.json";
/// Name of the cache's property set, beside conf.xml.
pub const CONF_PROPERTIES: &str = "conf.properties";

/// `conf.properties` as ArcGIS writes it in every package seen (a map cache, not elevation).
pub const CONF_PROPERTIES_XML: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?><PropertySet xsi:type='typens:PropertySet' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xmlns:xs='http://www.w3.org/2001/XMLSchema' xmlns:typens='http://www.esri.com/schemas/ArcGIS/10.3'><PropertyArray xsi:type='typens:ArrayOfPropertySetProperty'><PropertySetProperty xsi:type='typens:PropertySetProperty'><Key>CacheTileContentType</Key><Value xsi:type='xs:string'>Map</Value></PropertySetProperty></PropertyArray></PropertySet>";

/// The name a WKT gives its coordinate system (`PROJCS["WGS_1984_Web_Mercator_Auxiliary_Sphere",…`),
/// as ArcGIS writes it in `iteminfo.xml`'s `spatialreference`.
pub fn wkt_name(wkt: &str) -> Option<&str> {
    let start = wkt.find('"')? + 1;
    let len = wkt[start..].find('"')?;
    Some(&wkt[start..start + len])
}

/// `esriinfo/iteminfo.xml`: name, title, id, the extent in WGS84 degrees (`geo_extent`, left out
/// when unknown), the spatial reference's name, and `thumbnail/thumbnail.png` when `thumbnail`.
/// Every element tpkutils reads is there (`title`, `summary`, `tags`, `description`,
/// `accessinformation`, `licenseinfo`).
pub fn iteminfo_xml(
    name: &str,
    guid: &str,
    scheme: &TileScheme,
    geo_extent: Option<&Envelope>,
    thumbnail: bool,
) -> Vec<u8> {
    let n = escape(name);
    let sr = scheme
        .wkt
        .as_deref()
        .and_then(wkt_name)
        .map(|s| escape(s).into_owned())
        .or_else(|| scheme.wkid.map(|w| w.to_string()))
        .unwrap_or_default();
    let extent = geo_extent.map_or_else(String::new, |e| {
        format!(
            "<extent>\n<xmin>{}</xmin>\n<ymin>{}</ymin>\n<xmax>{}</xmax>\n<ymax>{}</ymax>\n</extent>\n",
            e.xmin, e.ymin, e.xmax, e.ymax
        )
    });
    let thumb = if thumbnail {
        "<thumbnail>thumbnail/thumbnail.png</thumbnail>\n"
    } else {
        "<thumbnail></thumbnail>\n"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<ESRI_ItemInformation Culture='en-US'>\n\
         <name>{n}</name>\n<guid>{guid}</guid>\n<catalogpath></catalogpath>\n<snippet>{n}</snippet>\n\
         <description></description>\n<summary>{n}</summary>\n<title>{n}</title>\n\
         <tags>Tile Package</tags>\n<type>Tile Package</type>\n<typekeywords>\n\
         <typekeyword>Data</typekeyword>\n<typekeyword>Tile Package</typekeyword>\n\
         <typekeyword>tpk</typekeyword>\n</typekeywords>\n{thumb}<documentation></documentation>\n\
         <url></url>\n<datalastmodifiedtime></datalastmodifiedtime>\n{extent}\
         <spatialreference>{sr}</spatialreference>\n<accessinformation></accessinformation>\n\
         <licenseinfo></licenseinfo>\n</ESRI_ItemInformation>\n"
    )
    .into_bytes()
}

/// `esriinfo/item.pkinfo`: the package's id, name and type, as ArcGIS writes it.
pub fn item_pkinfo(name: &str, guid: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<pkinfo Culture='en-US'>\n<ID>{guid}</ID>\n\
         <name>{}</name>\n<version>10.3</version>\n<size>-1</size>\n<created></created>\n\
         <type>Tile Package</type>\n<servable>false</servable>\n<packagelocation></packagelocation>\n\
         <pkinfolocation></pkinfolocation>\n</pkinfo>\n",
        escape(name)
    )
    .into_bytes()
}

/// `servicedescriptions/mapserver/mapserver.json`: the service's spatial reference and extents
/// (`extent` in the scheme's units), the same in WGS84 degrees as `resourceInfo.geoFullExtent`
/// when known (tpkutils reads it for a package's bounds), no layers or legend.
pub fn mapserver_json(scheme: &TileScheme, extent: &Envelope, geo: Option<&Envelope>) -> Vec<u8> {
    let mut sr = json!({});
    if let Some(w) = scheme.wkid {
        sr["wkid"] = json!(w);
    }
    if let Some(w) = scheme.latest_wkid {
        sr["latestWkid"] = json!(w);
    }
    if scheme.wkid.is_none() {
        if let Some(wkt) = &scheme.wkt {
            sr["wkt"] = json!(wkt);
        }
    }
    let env = |e: &Envelope, sr: Option<&Value>| {
        let mut v = json!({"xmin": e.xmin, "ymin": e.ymin, "xmax": e.xmax, "ymax": e.ymax});
        if let Some(sr) = sr {
            v["spatialReference"] = sr.clone();
        }
        v
    };
    let mut resource_info = json!({});
    if let Some(g) = geo {
        resource_info["geoFullExtent"] = env(g, None);
        resource_info["geoInitialExtent"] = env(g, None);
    }
    let v = json!({
        "name": "MapServer",
        "contents": {
            "mapName": "Layers",
            "layers": [],
            "tables": [],
            "spatialReference": sr,
            "singleFusedMapCache": true,
            "initialExtent": env(extent, Some(&sr)),
            "fullExtent": env(extent, Some(&sr)),
            "capabilities": "Map",
            "exportTilesAllowed": false,
        },
        "resourceInfo": resource_info,
        "resources": [],
    });
    serde_json::to_vec(&v).expect("JSON of plain values")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::conf::TileFormat;

    #[test]
    fn iteminfo_names_the_spatial_reference_and_escapes() {
        let s = TileScheme::web_mercator(2, TileFormat::Png);
        let e = Envelope {
            xmin: -10.0,
            ymin: 1.0,
            xmax: 10.0,
            ymax: 2.0,
        };
        let x = String::from_utf8(iteminfo_xml("a<b", "G", &s, Some(&e), true)).unwrap();
        assert!(x.contains("<title>a&lt;b</title>"), "{x}");
        assert!(x.contains("<xmin>-10</xmin>"), "{x}");
        assert!(
            x.contains(
                "<spatialreference>WGS_1984_Web_Mercator_Auxiliary_Sphere</spatialreference>"
            ),
            "{x}"
        );
        let j: Value = serde_json::from_slice(&mapserver_json(&s, &e, Some(&e))).unwrap();
        assert_eq!(j["resourceInfo"]["geoFullExtent"]["xmax"], 10.0);
        assert_eq!(j["contents"]["spatialReference"]["wkid"], 102100);
    }
}
