//! PMTiles v3 reading: `PmtilesStore` over the input as a whole file (header, root and leaf
//! directories, metadata), then the levels, the bundles of a few levels and their tiles.
//!
//! The seeds (fuzz/corpus/pmtiles/) keep their directories uncompressed (internal compression
//! none, which the spec allows), so mutations reach the directory decoder and the walk over
//! root and leaf directories, not only gzip's checks.
//!
//! Properties: no panic (a damaged file is an error); every tile a bundle lists reads back with
//! the same bytes by `tile`.
#![no_main]

use std::path::Path;

use bundlefs::cache::store::pmtiles::PmtilesStore;
use bundlefs::cache::store::{Storage, TileGroup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(s) = PmtilesStore::from_bytes(Path::new("fuzz.pmtiles"), input.to_vec()) else {
        return;
    };
    let _ = s.metadata();
    let Ok(levels) = s.levels() else {
        return;
    };
    for level in levels.into_iter().take(4) {
        let _ = s.level_stats(level);
        let Ok(bundles) = s.bundles(level) else {
            continue;
        };
        for id in bundles.into_iter().take(4) {
            let Ok(tiles) = s.read_group(&TileGroup::bundle(id)) else {
                continue;
            };
            for (t, bytes) in tiles.into_iter().take(64) {
                match s.tile(t) {
                    Ok(Some(again)) => assert_eq!(&*again, &*bytes, "{t}"),
                    other => panic!("{t}: listed in its bundle but tile() gives {other:?}"),
                }
            }
        }
    }
});
