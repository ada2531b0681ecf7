//! Names of the exploded layout (`Lnn/Rxxxxxxxx/Cxxxxxxxx.ext`) and of bundle files (`RrrrrCcccc`).

use super::{BundleId, FormatError};

fn bad(name: &str, msg: &str) -> FormatError {
    FormatError::BadName {
        name: name.to_string(),
        msg: msg.to_string(),
    }
}

/// `L07`: "L" and the level in (at least) two decimal digits.
pub fn level_dir(level: u8) -> String {
    format!("L{level:02}")
}

/// `R0000001f`: "R" and the row in 8 lower-case hex digits.
pub fn row_dir(row: u32) -> String {
    format!("R{row:08x}")
}

/// `C0000002a.png`.
pub fn col_file(col: u32, ext: &str) -> String {
    format!("C{col:08x}.{ext}")
}

/// Bundle base name `R0080C0100` (bundle's first row/col, lower-case hex, at least 4 digits).
pub fn bundle_base(id: &BundleId) -> String {
    format!("R{:04x}C{:04x}", id.row0, id.col0)
}

/// Parses `Lnn`; None for names that are not level folders at all (`Lxx`, `Layers`…).
pub fn parse_level_dir(name: &str) -> Result<u8, FormatError> {
    let digits = name
        .strip_prefix('L')
        .ok_or_else(|| bad(name, "a level folder is L and 2 decimal digits"))?;
    if digits.len() < 2 || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(name, "a level folder is L and 2 decimal digits"));
    }
    // One spelling per level (`L07`, never `L007`): two folders must not stand for one level.
    if digits.len() == 3 && digits.starts_with('0') {
        return Err(bad(name, "a level below 100 has 2 digits"));
    }
    digits
        .parse::<u8>()
        .map_err(|_| bad(name, "level out of range"))
}

fn parse_hex8(name: &str, prefix: char, what: &str) -> Result<u32, FormatError> {
    let digits = name
        .strip_prefix(prefix)
        .ok_or_else(|| bad(name, &format!("a {what} name starts with {prefix}")))?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            name,
            &format!("a {what} name is {prefix} and 8 hex digits"),
        ));
    }
    u32::from_str_radix(digits, 16).map_err(|_| bad(name, "bad hex number"))
}

/// Parses `Rxxxxxxxx` (hex, either case).
pub fn parse_row_dir(name: &str) -> Result<u32, FormatError> {
    parse_hex8(name, 'R', "row folder")
}

/// Tile file extensions bundlefs knows, and the image kind each stands for.
pub const TILE_EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Parses `Cxxxxxxxx.ext` into (col, ext). Extensions are png, jpg, jpeg (any case).
pub fn parse_col_file(name: &str) -> Result<(u32, &str), FormatError> {
    let (stem, ext) = name
        .rsplit_once('.')
        .ok_or_else(|| bad(name, "a tile file is Cxxxxxxxx.png or .jpg"))?;
    if !TILE_EXTS.iter().any(|e| e.eq_ignore_ascii_case(ext)) {
        return Err(bad(name, "a tile file ends in .png, .jpg or .jpeg"));
    }
    Ok((parse_hex8(stem, 'C', "tile file")?, ext))
}

/// Parses a bundle file name `RrrrrCcccc.bundle` / `.bundlx` into (row0, col0, extension).
pub fn parse_bundle_file(name: &str) -> Result<(u32, u32, &str), FormatError> {
    let (stem, ext) = name
        .rsplit_once('.')
        .ok_or_else(|| bad(name, "not a bundle file"))?;
    if ext != "bundle" && ext != "bundlx" {
        return Err(bad(name, "not a .bundle or .bundlx file"));
    }
    let rest = stem
        .strip_prefix('R')
        .ok_or_else(|| bad(name, "a bundle name is RrrrrCcccc"))?;
    let (r, c) = rest
        .split_once('C')
        .ok_or_else(|| bad(name, "a bundle name is RrrrrCcccc"))?;
    let hex = |s: &str| -> Result<u32, FormatError> {
        if s.len() < 4 || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                name,
                "a bundle name is R, 4+ hex digits, C, 4+ hex digits",
            ));
        }
        // One spelling per bundle (`R8080`, never `R008080`): past 4 digits, no leading zero.
        if s.len() > 4 && s.starts_with('0') {
            return Err(bad(name, "more than 4 hex digits with a leading zero"));
        }
        u32::from_str_radix(s, 16).map_err(|_| bad(name, "bad hex number"))
    };
    let (row0, col0) = (hex(r)?, hex(c)?);
    if row0 % super::BUNDLE_DIM != 0 || col0 % super::BUNDLE_DIM != 0 {
        return Err(bad(name, "bundle row/col must be multiples of 128"));
    }
    Ok((row0, col0, ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_facts_example() {
        assert_eq!(
            format!(
                "{}/{}/{}",
                level_dir(9),
                row_dir(0x05397fb1),
                col_file(0x0012d687, "png")
            ),
            "L09/R05397fb1/C0012d687.png"
        );
        assert_eq!(
            bundle_base(&BundleId {
                level: 3,
                row0: 0x80,
                col0: 0x10000
            }),
            "R0080C10000"
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(parse_row_dir("R0000000g")
            .unwrap_err()
            .to_string()
            .contains("R0000000g"));
        assert!(parse_row_dir("R123").is_err());
        assert!(parse_row_dir("..").is_err());
        assert!(parse_col_file("C00000001.gif").is_err());
        assert!(parse_col_file("C00000001").is_err());
        assert!(parse_level_dir("L1").is_err());
        assert!(parse_level_dir("Lab").is_err());
        assert!(parse_bundle_file("R0001C0000.bundle").is_err());
        assert_eq!(
            parse_bundle_file("R0080C0100.bundlx").unwrap(),
            (0x80, 0x100, "bundlx")
        );
        assert_eq!(parse_col_file("C0000000A.JPG").unwrap(), (10, "JPG"));
        // Found by the `names` fuzz target: zero-padded spellings parsed to the same bundle or
        // level as the canonical name (which is the file the cache opens).
        assert!(parse_bundle_file("R008080C0100.bundlx").is_err());
        assert!(parse_bundle_file("R0080C00100.bundle").is_err());
        assert_eq!(
            parse_bundle_file("R10080C10000.bundle").unwrap(),
            (0x10080, 0x10000, "bundle")
        );
        assert!(parse_level_dir("L007").is_err());
        assert_eq!(parse_level_dir("L123").unwrap(), 123);
    }

    proptest! {
        #[test]
        fn names_round_trip(level in any::<u8>(), row in any::<u32>(), col in any::<u32>()) {
            prop_assert_eq!(parse_level_dir(&level_dir(level)).unwrap(), level);
            prop_assert_eq!(parse_row_dir(&row_dir(row)).unwrap(), row);
            let file = col_file(col, "jpg");
            prop_assert_eq!(parse_col_file(&file).unwrap(), (col, "jpg"));
            let id = crate::format::TileAddr::new(level, row, col).bundle();
            let name = format!("{}.bundle", bundle_base(&id));
            prop_assert_eq!(parse_bundle_file(&name).unwrap(), (id.row0, id.col0, "bundle"));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,20}") {
            let _ = parse_level_dir(&s);
            let _ = parse_row_dir(&s);
            let _ = parse_col_file(&s);
            let _ = parse_bundle_file(&s);
        }
    }
}
