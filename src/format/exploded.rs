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

/// Strips a one-letter prefix in either case (`L05`, `l05`): ArcGIS on Windows, whose file system
/// ignores case, has written caches with either.
fn strip_letter(name: &str, letter: char) -> Option<&str> {
    name.strip_prefix(letter.to_ascii_uppercase())
        .or_else(|| name.strip_prefix(letter.to_ascii_lowercase()))
}

/// Parses a level folder name `Lnn` (`L` in either case, 2 decimal digits; 3 from level 100).
///
/// Errors: [`FormatError::BadName`] for names that are not level folders (`L5`, `L007`, `Layers`).
pub fn parse_level_dir(name: &str) -> Result<u8, FormatError> {
    let digits = strip_letter(name, 'L')
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
    let digits = strip_letter(name, prefix)
        .ok_or_else(|| bad(name, &format!("a {what} name starts with {prefix}")))?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            name,
            &format!("a {what} name is {prefix} and 8 hex digits"),
        ));
    }
    u32::from_str_radix(digits, 16).map_err(|_| bad(name, "bad hex number"))
}

/// Parses a row folder name `Rxxxxxxxx` (`R` and hex digits in either case).
pub fn parse_row_dir(name: &str) -> Result<u32, FormatError> {
    parse_hex8(name, 'R', "row folder")
}

/// Tile file extensions bundlefs knows: pictures (png, jpg, jpeg), LERC elevation (lerc) and
/// vector tiles (pbf), as [`crate::format::sniff::ImageKind::from_ext`] reads them.
pub const TILE_EXTS: [&str; 5] = ["png", "jpg", "jpeg", "lerc", "pbf"];

/// Parses `Cxxxxxxxx.ext` into (col, ext as written). `C`, hex digits and the extension (png, jpg,
/// jpeg, lerc, pbf) may be in either case.
pub fn parse_col_file(name: &str) -> Result<(u32, &str), FormatError> {
    let (stem, ext) = name
        .rsplit_once('.')
        .ok_or_else(|| bad(name, "a tile file is Cxxxxxxxx.png or .jpg"))?;
    if !TILE_EXTS.iter().any(|e| e.eq_ignore_ascii_case(ext)) {
        return Err(bad(
            name,
            "a tile file ends in .png, .jpg, .jpeg, .lerc or .pbf",
        ));
    }
    Ok((parse_hex8(stem, 'C', "tile file")?, ext))
}

/// Parses a bundle file name `RrrrrCcccc.bundle` / `.bundlx` into (row0, col0, extension in lower
/// case). Letters, hex digits and the extension may be in either case (`R0080C0100.BUNDLE`).
pub fn parse_bundle_file(name: &str) -> Result<(u32, u32, &'static str), FormatError> {
    let (stem, ext) = name
        .rsplit_once('.')
        .ok_or_else(|| bad(name, "not a bundle file"))?;
    let ext = if ext.eq_ignore_ascii_case("bundle") {
        "bundle"
    } else if ext.eq_ignore_ascii_case("bundlx") {
        "bundlx"
    } else {
        return Err(bad(name, "not a .bundle or .bundlx file"));
    };
    let rest = strip_letter(stem, 'R').ok_or_else(|| bad(name, "a bundle name is RrrrrCcccc"))?;
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
    // The column's `C` may be lower case, like the hex digit c: an upper-case `C` is the separator
    // when there is one; else the one `c` that leaves two valid numbers.
    let split = |sep: char| -> Vec<(u32, u32)> {
        rest.match_indices(sep)
            .filter_map(|(i, _)| Some((hex(&rest[..i]).ok()?, hex(&rest[i + 1..]).ok()?)))
            .collect()
    };
    let mut found = split('C');
    if found.is_empty() {
        found = split('c');
    }
    let (row0, col0) = match found[..] {
        [one] => one,
        [] => {
            // Name the first problem of the obvious reading.
            let (r, c) = rest
                .split_once(['C', 'c'])
                .ok_or_else(|| bad(name, "a bundle name is RrrrrCcccc"))?;
            (hex(r)?, hex(c)?)
        }
        _ => return Err(bad(name, "ambiguous: spell the column's C in upper case")),
    };
    if row0 % super::BUNDLE_DIM != 0 || col0 % super::BUNDLE_DIM != 0 {
        return Err(bad(name, "bundle row/col must be multiples of 128"));
    }
    Ok((row0, col0, ext))
}

/// The one entry of a folder listing that spells `wanted` ignoring ASCII case (`Conf.xml` for
/// `conf.xml`, `l05` for `L05`): the name as found on disk, or None.
///
/// Errors: [`FormatError::BadName`] naming both when two entries spell it (possible on Linux, not
/// on Windows): which one ArcGIS meant cannot be told.
pub fn find_name<'a, I>(names: I, wanted: &str) -> Result<Option<&'a str>, FormatError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut found: Option<&'a str> = None;
    for n in names {
        if !n.eq_ignore_ascii_case(wanted) {
            continue;
        }
        match found {
            None => found = Some(n),
            Some(first) => {
                let (a, b) = if first <= n { (first, n) } else { (n, first) };
                return Err(bad(
                    a,
                    &format!(
                        "{a:?} and {b:?} are two spellings of {wanted:?} in one folder; keep one"
                    ),
                ));
            }
        }
    }
    Ok(found)
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

    /// ArcGIS on Windows (a file system that ignores case) writes any of these spellings.
    #[test]
    fn names_in_either_case() {
        assert_eq!(parse_level_dir("l05").unwrap(), 5);
        assert_eq!(parse_row_dir("r0000001F").unwrap(), 0x1f);
        assert_eq!(parse_col_file("c0000002A.PNG").unwrap(), (0x2a, "PNG"));
        for n in [
            "R0080C0100.bundle",
            "R0080C0100.BUNDLE",
            "r0080c0100.bundle",
            "R0080c0100.Bundle",
        ] {
            assert_eq!(
                parse_bundle_file(n).unwrap(),
                (0x80, 0x100, "bundle"),
                "{n}"
            );
        }
        assert_eq!(
            parse_bundle_file("R00A0C0B00.BUNDLX"),
            Err(bad(
                "R00A0C0B00.BUNDLX",
                "bundle row/col must be multiples of 128"
            ))
        );
        assert_eq!(
            parse_bundle_file("R0A00C0B00.BUNDLX").unwrap(),
            (0xa00, 0xb00, "bundlx")
        );
        // Still one spelling of the number per name.
        assert!(parse_level_dir("l007").is_err());
        assert!(parse_bundle_file("r008080c0100.bundle").is_err());
        // Lower-case hex digit c beside a lower-case column letter.
        assert_eq!(
            parse_bundle_file("r0c00cc000.bundle").unwrap(),
            (0xc00, 0xc000, "bundle")
        );
        assert_eq!(
            parse_bundle_file("R0C00Cc000.bundle").unwrap(),
            (0xc00, 0xc000, "bundle")
        );
        assert!(parse_level_dir("x05").is_err());
    }

    #[test]
    fn find_name_ignores_case_but_refuses_two_spellings() {
        let names = ["Conf.xml", "_alllayers", "Conf.CDI"];
        assert_eq!(find_name(names, "conf.xml").unwrap(), Some("Conf.xml"));
        assert_eq!(find_name(names, "conf.cdi").unwrap(), Some("Conf.CDI"));
        assert_eq!(find_name(names, "root.json").unwrap(), None);
        let e = find_name(["conf.xml", "x", "Conf.xml"], "conf.xml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"Conf.xml\"") && msg.contains("\"conf.xml\""),
            "{msg}"
        );
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
            let _ = find_name([s.as_str(), "a"], &s);
        }
    }
}
