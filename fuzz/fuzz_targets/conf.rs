//! conf.xml and conf.cdi parsing: `TileScheme::parse_conf_xml`, `ConfXml::with_storage`,
//! `TileScheme::to_conf_xml`, `parse_cdi`, `write_cdi`.
//!
//! Properties: no panic; a parsed conf.xml rewritten with another storage format parses again
//! with that storage and otherwise the same scheme; a scheme written out parses back to itself;
//! a parsed envelope written as conf.cdi parses back to itself.
#![no_main]

use bundlefs::format::conf::{parse_cdi, write_cdi, StorageFormat, TileScheme};
use libfuzzer_sys::fuzz_target;

fn finite(s: &TileScheme) -> bool {
    [s.origin_x, s.origin_y].iter().all(|v| v.is_finite())
        && s.lods
            .iter()
            .all(|l| l.scale.is_finite() && l.resolution.is_finite())
}

fuzz_target!(|input: &[u8]| {
    if let Ok(c) = TileScheme::parse_conf_xml(input) {
        for storage in [
            StorageFormat::Exploded,
            StorageFormat::CompactV1,
            StorageFormat::CompactV2,
        ] {
            let out = c.with_storage(storage);
            let again = TileScheme::parse_conf_xml(&out)
                .unwrap_or_else(|e| panic!("with_storage({storage}) does not parse: {e}"));
            assert_eq!(again.scheme.storage, storage);
            let mut want = c.scheme.clone();
            want.storage = storage;
            want.packet_size = again.scheme.packet_size;
            if finite(&want) {
                assert_eq!(
                    again.scheme, want,
                    "with_storage({storage}) changed the scheme"
                );
            }
        }
        if finite(&c.scheme) {
            let out = c.scheme.to_conf_xml();
            let again = TileScheme::parse_conf_xml(&out)
                .unwrap_or_else(|e| panic!("to_conf_xml does not parse: {e}"));
            assert_eq!(again.scheme, c.scheme, "to_conf_xml round trip");
            if let Ok(env) = parse_cdi(input) {
                let back = parse_cdi(&write_cdi(&env, &c.scheme)).expect("write_cdi parses");
                if [env.xmin, env.ymin, env.xmax, env.ymax]
                    .iter()
                    .all(|v| v.is_finite())
                {
                    assert_eq!(back, env, "conf.cdi round trip");
                }
            }
        }
    }
    let _ = parse_cdi(input);
});
