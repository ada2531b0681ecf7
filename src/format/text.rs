//! One tolerant reader for every XML and JSON input (conf.xml, conf.cdi, root.json, iteminfo.json,
//! GeoJSON): bytes as editors and ArcGIS versions write them, to one UTF-8 string with `\n` lines.
//!
//! Accepted: UTF-8 with or without a byte-order mark; UTF-16 LE or BE with a byte-order mark, or
//! without one when the text starts with an ASCII character (XML 1.0 appendix F, RFC 8259 §8.1 and
//! RFC 4627 §3 detect it from the zero bytes); ISO-8859-1 / windows-1252 when an XML declaration
//! says so. Line ends CRLF and lone CR become LF (XML 1.0 §2.11 does the same). Refused, by name:
//! UTF-32, a zero character (U+0000, which neither XML nor JSON allows), and bytes that are none
//! of the above (the error gives the offset).
//!
//! Callers in higher layers add the file's path: `text::decode(&bytes).in_file(path)?`.

use super::FormatError;

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";
const UTF16LE_BOM: &[u8] = b"\xff\xfe";
const UTF16BE_BOM: &[u8] = b"\xfe\xff";
const UTF32LE_BOM: &[u8] = b"\xff\xfe\x00\x00";
const UTF32BE_BOM: &[u8] = b"\x00\x00\xfe\xff";

/// The encoding a text file was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    Utf8,
    /// UTF-16 little-endian (Windows "Unicode"), with or without a byte-order mark.
    Utf16Le,
    /// UTF-16 big-endian, with or without a byte-order mark.
    Utf16Be,
    /// windows-1252 (a superset of ISO-8859-1's printable characters), when declared.
    Windows1252,
}

/// Decodes a text file's bytes (see the module comment) into UTF-8 with `\n` line ends.
///
/// Errors: [`FormatError::Text`] naming what is wrong (UTF-32, an odd-length or broken UTF-16
/// stream, bytes that are not UTF-8 at a given offset, a zero character).
pub fn decode(bytes: &[u8]) -> Result<String, FormatError> {
    decode_with(bytes).map(|(s, _)| s)
}

/// [`decode`], also saying which encoding the bytes were in.
pub fn decode_with(bytes: &[u8]) -> Result<(String, Encoding), FormatError> {
    if bytes.starts_with(UTF32LE_BOM) || bytes.starts_with(UTF32BE_BOM) {
        return Err(text_err(
            "UTF-32 text (byte-order mark) is not supported; save it as UTF-8",
        ));
    }
    let (text, enc) = if let Some(rest) = bytes.strip_prefix(UTF8_BOM) {
        (utf8(rest, bytes)?, Encoding::Utf8)
    } else if let Some(rest) = bytes.strip_prefix(UTF16LE_BOM) {
        (utf16(rest, false)?, Encoding::Utf16Le)
    } else if let Some(rest) = bytes.strip_prefix(UTF16BE_BOM) {
        (utf16(rest, true)?, Encoding::Utf16Be)
    } else if bytes.len() >= 2 && bytes[0] != 0 && bytes[1] == 0 {
        // An ASCII first character followed by a zero byte: UTF-16 LE without a mark.
        (utf16(bytes, false)?, Encoding::Utf16Le)
    } else if bytes.len() >= 2 && bytes[0] == 0 && bytes[1] != 0 {
        (utf16(bytes, true)?, Encoding::Utf16Be)
    } else {
        match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_string(), Encoding::Utf8),
            Err(_) if declares_latin1(bytes) => (windows_1252(bytes), Encoding::Windows1252),
            Err(e) => return Err(not_utf8(e.valid_up_to())),
        }
    };
    // XML 1.0 (§2.2, Char) and JSON (RFC 8259 §7: control characters only escaped) have no
    // U+0000. A zero character is a binary file or a broken transcoding, and the text could not be
    // written back: a rewrite starting with it would be sniffed as UTF-16 above.
    if let Some(at) = text.find('\0') {
        return Err(text_err(format!(
            "a zero character (U+0000) at character {}; XML and JSON text has none \
             (a binary file, or UTF-16 read with the wrong byte order?)",
            text[..at].chars().count()
        )));
    }
    let mut text = normalise_newlines(text);
    if enc != Encoding::Utf8 {
        text = declare_utf8(text);
    }
    Ok((text, enc))
}

fn text_err(msg: impl Into<String>) -> FormatError {
    FormatError::Text(msg.into())
}

fn not_utf8(at: usize) -> FormatError {
    text_err(format!(
        "not UTF-8 text (invalid byte at offset {at}); bundlefs reads UTF-8 or UTF-16 \
         (ISO-8859-1/windows-1252 only when the XML declaration says so)"
    ))
}

fn utf8(rest: &[u8], whole: &[u8]) -> Result<String, FormatError> {
    let skipped = whole.len() - rest.len();
    std::str::from_utf8(rest)
        .map(str::to_string)
        .map_err(|e| not_utf8(skipped + e.valid_up_to()))
}

fn utf16(b: &[u8], big_endian: bool) -> Result<String, FormatError> {
    if !b.len().is_multiple_of(2) {
        return Err(text_err(format!(
            "UTF-16 text of an odd number of bytes ({})",
            b.len()
        )));
    }
    let units = b.chunks_exact(2).map(|p| {
        if big_endian {
            u16::from_be_bytes([p[0], p[1]])
        } else {
            u16::from_le_bytes([p[0], p[1]])
        }
    });
    let mut out = String::with_capacity(b.len() / 2);
    for (i, c) in char::decode_utf16(units).enumerate() {
        match c {
            Ok(c) => out.push(c),
            Err(e) => {
                return Err(text_err(format!(
                    "broken UTF-16 text: unpaired surrogate {:#06x} near byte {}",
                    e.unpaired_surrogate(),
                    2 * i
                )))
            }
        }
    }
    Ok(out)
}

/// The `encoding` of an XML declaration at the start of `b`, if any.
fn declared_encoding(b: &[u8]) -> Option<String> {
    let head = &b[..b.len().min(200)];
    let head = String::from_utf8_lossy(head);
    let decl = head.strip_prefix("<?xml")?;
    let decl = &decl[..decl.find("?>")?];
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    Some(rest[..rest.find(quote)?].to_string())
}

fn declares_latin1(b: &[u8]) -> bool {
    declared_encoding(b).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "windows-1252" | "cp1252"
        )
    })
}

/// windows-1252 bytes 0x80..=0x9F (the rest equal their Unicode code points); undefined bytes
/// keep their C1 code point, as ISO-8859-1 reads them. Source: the WHATWG Encoding Standard's
/// index-windows-1252.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn windows_1252(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            0x80..=0x9F => char::from_u32(u32::from(CP1252_HIGH[usize::from(c - 0x80)]))
                .unwrap_or(char::REPLACEMENT_CHARACTER),
            _ => char::from(c),
        })
        .collect()
}

/// CRLF and lone CR become LF.
fn normalise_newlines(s: String) -> String {
    if !s.contains('\r') {
        return s;
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// After transcoding, an XML declaration naming the old encoding would lie about the UTF-8 text
/// (and a conf.xml rewritten from it would be misread): it now says utf-8.
fn declare_utf8(s: String) -> String {
    let Some(enc) = declared_encoding(s.as_bytes()) else {
        return s;
    };
    let end = s.find("?>").unwrap_or(0);
    let decl = &s[..end];
    let Some(at) = decl.find(enc.as_str()) else {
        return s;
    };
    format!("{}utf-8{}", &s[..at], &s[at + enc.len()..])
}

/// Parses a JSON document (root.json, iteminfo.json, GeoJSON) read through [`decode`].
///
/// Errors: [`FormatError::Text`] for undecodable bytes, [`FormatError::Json`] (with line and
/// column) for bad JSON.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, FormatError> {
    let text = decode(bytes)?;
    serde_json::from_str(&text).map_err(|e| FormatError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16_bytes(s: &str, be: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let units = std::iter::once(0xFEFF)
            .filter(|_| bom)
            .chain(s.encode_utf16());
        for u in units {
            out.extend_from_slice(&if be { u.to_be_bytes() } else { u.to_le_bytes() });
        }
        out
    }

    #[test]
    fn plain_utf8_is_unchanged() {
        let s = "<a>x é</a>\n";
        assert_eq!(decode(s.as_bytes()).unwrap(), s);
        assert_eq!(decode(b"").unwrap(), "");
    }

    #[test]
    fn utf8_bom_is_stripped_once() {
        assert_eq!(decode(b"\xef\xbb\xbf{\"a\":1}").unwrap(), "{\"a\":1}");
        // A second mark is content, not a mark.
        assert_eq!(decode(b"\xef\xbb\xbf\xef\xbb\xbfx").unwrap(), "\u{feff}x");
    }

    #[test]
    fn utf16_with_and_without_bom() {
        let s = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n<CacheInfo>é</CacheInfo>";
        let want = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<CacheInfo>é</CacheInfo>";
        for be in [false, true] {
            for bom in [false, true] {
                let (got, enc) = decode_with(&utf16_bytes(s, be, bom)).unwrap();
                assert_eq!(got, want, "be={be} bom={bom}");
                assert_eq!(
                    enc,
                    if be {
                        Encoding::Utf16Be
                    } else {
                        Encoding::Utf16Le
                    }
                );
            }
        }
        let json = "{\"tileInfo\": 1}";
        assert_eq!(decode(&utf16_bytes(json, false, true)).unwrap(), json);
    }

    #[test]
    fn a_zero_character_is_refused_by_position() {
        // Fuzzing (conf target): after a byte-order mark, a zero character was read as UTF-8,
        // and the rewrite, without the mark, was then sniffed as UTF-16 BE.
        for b in [
            &b"\xef\xbb\xbf\x00u version"[..],
            b"<a>\x00</a>",
            b"{\"a\": \"x\x00\"}",
        ] {
            let e = decode(b).unwrap_err().to_string();
            assert!(e.contains("zero character (U+0000)"), "{e}");
        }
        let e = decode(&utf16_bytes("<a>\u{0}</a>", false, true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at character 3"), "{e}");
    }

    #[test]
    fn crlf_and_cr_become_lf() {
        assert_eq!(decode(b"a\r\nb\rc\n").unwrap(), "a\nb\nc\n");
    }

    #[test]
    fn declared_latin1_is_read() {
        let b = b"<?xml version='1.0' encoding='ISO-8859-1'?><a>caf\xe9 \x80</a>";
        let (s, enc) = decode_with(b).unwrap();
        assert_eq!(enc, Encoding::Windows1252);
        assert_eq!(s, "<?xml version='1.0' encoding='utf-8'?><a>café €</a>");
    }

    #[test]
    fn bad_bytes_are_refused_by_name() {
        let e = decode(b"<a>caf\xe9</a>").unwrap_err();
        assert!(e.to_string().contains("offset 6"), "{e}");
        let e = decode(b"\xff\xfe\x00\x00<\x00\x00\x00").unwrap_err();
        assert!(e.to_string().contains("UTF-32"), "{e}");
        let e = decode(b"\xff\xfe<\x00a").unwrap_err();
        assert!(e.to_string().contains("odd number"), "{e}");
        let e = decode(
            &utf16_bytes("a", false, true)
                .into_iter()
                .chain([0x00, 0xd8])
                .collect::<Vec<_>>(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("surrogate"), "{e}");
        let e = decode(b"\xef\xbb\xbfab\xc3").unwrap_err();
        assert!(e.to_string().contains("offset 5"), "{e}");
    }

    #[test]
    fn json_through_the_same_path() {
        let v = parse_json(b"\xef\xbb\xbf{\r\n  \"a\": 1.5E+01\r\n}\r\n").unwrap();
        assert_eq!(v["a"].as_f64(), Some(15.0));
        assert!(matches!(
            parse_json(b"{").unwrap_err(),
            FormatError::Json(_)
        ));
    }
}
