//! Exploded-layout and bundle file names: `parse_level_dir`, `parse_row_dir`, `parse_col_file`,
//! `parse_bundle_file`.
//!
//! Properties: no panic; a name that parses formats back to itself (letters, hex digits and extensions in either case),
//! so two different files can never stand for the same level, row, tile or bundle.
#![no_main]

use bundlefs::format::exploded::{
    bundle_base, col_file, level_dir, parse_bundle_file, parse_col_file, parse_level_dir,
    parse_row_dir, row_dir,
};
use bundlefs::format::{BundleId, BUNDLE_DIM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(name) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(l) = parse_level_dir(name) {
        assert!(level_dir(l).eq_ignore_ascii_case(name), "level {l}");
    }
    if let Ok(r) = parse_row_dir(name) {
        assert!(row_dir(r).eq_ignore_ascii_case(name), "row {r}");
    }
    if let Ok((c, ext)) = parse_col_file(name) {
        assert!(
            col_file(c, ext).eq_ignore_ascii_case(name),
            "col {c} ext {ext}"
        );
        assert!(!ext.contains(['/', '\0']));
    }
    if let Ok((row0, col0, ext)) = parse_bundle_file(name) {
        assert_eq!(row0 % BUNDLE_DIM, 0);
        assert_eq!(col0 % BUNDLE_DIM, 0);
        let id = BundleId {
            level: 0,
            row0,
            col0,
        };
        let back = format!("{}.{ext}", bundle_base(&id));
        assert!(
            back.eq_ignore_ascii_case(name),
            "bundle {row0} {col0} {ext}"
        );
    }
});
