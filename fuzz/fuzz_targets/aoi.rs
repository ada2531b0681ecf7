//! The GeoJSON area-of-interest reader: `Aoi::from_geojson`, then the queries jobs make of it
//! (`bbox`, `coverage`, `mask`, `contains_point`).
//!
//! Properties: no panic and no runaway allocation; an area that parses has a finite, non-empty
//! bounding box; a mask has exactly width × height cells.
#![no_main]

use std::path::Path;

use bundlefs::jobs::aoi::Aoi;
use bundlefs::format::conf::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(aoi) = Aoi::from_geojson(Path::new("fuzz.geojson"), input) else {
        return;
    };
    let b = aoi.bbox();
    assert!(b.xmin < b.xmax && b.ymin < b.ymax, "empty bbox {b:?}");
    let (w, h) = (b.xmax - b.xmin, b.ymax - b.ymin);
    let quarter = Envelope {
        xmin: b.xmin,
        ymin: b.ymin,
        xmax: b.xmin + w / 2.0,
        ymax: b.ymin + h / 2.0,
    };
    let _ = aoi.coverage(&b);
    let _ = aoi.coverage(&quarter);
    let m = aoi.mask(&quarter, 16, 16);
    assert_eq!(m.as_slice().len(), 256);
    let _ = aoi.contains_point(b.xmin + w / 2.0, b.ymin + h / 2.0);
});
