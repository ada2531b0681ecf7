//! Real-world names, text files and unsupported values (issue 14, kinds 1, 2 and 5), beyond the
//! cases 01, 03, 12 and 14: caches as ArcGIS on Windows spells them, text as editors and older
//! ArcGIS save it, and values that would make bundlefs read the wrong bytes, refused by name in
//! every command.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bundlefs::cache::Cache;
use bundlefs::format::conf::{StorageFormat, TileFormat, TileScheme};
use bundlefs::format::TileAddr;

use crate::support::{
    all_tiles, bin, case_data, copy_dir, esri_sample_cache, fixtures, run, run_ok, unpack_tpk,
    unzip,
};

fn bundlefs(args: &[&str], paths: &[&Path]) -> Output {
    run(Command::new(bin()).args(args).args(paths))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Renames `from` (relative to `dir`) to `to`.
fn rename(dir: &Path, from: &str, to: &str) {
    fs::rename(dir.join(from), dir.join(to))
        .unwrap_or_else(|e| panic!("{}: rename to {to}: {e}", dir.join(from).display()));
}

/// A tile-like payload (PNG signature, then bytes that tell tiles apart).
fn tile(n: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(format!("tile {n}").as_bytes());
    v
}

/// The states_filled.tpk cache (Compact V1, L00-L04) unpacked into `dir`; returns the cache folder.
fn v1_cache(dir: &Path) -> PathBuf {
    unpack_tpk(dir).join("v101/Layers")
}

// ---------------------------------------------------------------------------------------------
// Kind 1: names as ArcGIS on Windows writes them

#[test]
fn v1_cache_spelled_as_on_windows_reads_like_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = v1_cache(&tmp.path().join("a"));
    let want = all_tiles(&Cache::open(&orig).unwrap());
    assert!(want.len() >= 20, "{} tiles", want.len());
    let win = tmp.path().join("win");
    copy_dir(&orig, &win);
    rename(&win, "conf.xml", "Conf.xml");
    rename(&win, "conf.cdi", "CONF.CDI");
    rename(&win, "_alllayers", "_AllLayers");
    let all = win.join("_AllLayers");
    rename(&all, "L01", "l01");
    rename(&all, "L02/R0000C0000.bundle", "L02/R0000C0000.BUNDLE");
    rename(&all, "L02/R0000C0000.bundlx", "L02/R0000C0000.BUNDLX");
    rename(&all, "L03/R0000C0000.bundle", "L03/r0000c0000.bundle");
    rename(&all, "L03/R0000C0000.bundlx", "L03/r0000c0000.Bundlx");

    let c = Cache::open(&win).unwrap();
    assert_eq!(c.storage(), StorageFormat::CompactV1);
    assert_eq!(c.scheme(), Cache::open(&orig).unwrap().scheme());
    assert!(c.extent().is_some(), "CONF.CDI read");
    assert_eq!(c.levels().unwrap(), vec![0, 1, 2, 3, 4]);
    let got = all_tiles(&c);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "tiles differ from the original's");
    // One tile looked up by address, in each renamed place.
    for level in [1u8, 2, 3] {
        let (t, bytes) = want.iter().find(|(t, _)| t.level == level).unwrap();
        assert_eq!(c.tile(*t).unwrap().as_deref(), Some(&bytes[..]), "{t}");
    }
    // verify reads it all: no problem, nothing skipped.
    let out = bundlefs(&["verify"], &[&win]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("WARN"), "{}", stdout(&out));
    // A path to the scheme file itself, in its own spelling, opens the cache too.
    let out = bundlefs(&["info"], &[&win.join("Conf.xml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("WKID 102100"), "{}", stdout(&out));
}

#[test]
fn writes_go_to_the_spelling_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = v1_cache(tmp.path());
    let c0 = Cache::open(&orig).unwrap();
    let t = *all_tiles(&c0).keys().find(|t| t.level == 2).unwrap();
    drop(c0);
    let lvl = orig.join("_alllayers");
    rename(&lvl, "L02", "l02");
    rename(&lvl, "l02/R0000C0000.bundle", "l02/R0000C0000.BUNDLE");
    rename(&lvl, "l02/R0000C0000.bundlx", "l02/R0000C0000.BUNDLX");
    let c = Cache::open(&orig).unwrap();
    let before = all_tiles(&c).len();
    c.write_tiles(&[(t, &tile(7)[..])]).unwrap();
    // The tile replaced the old one inside the existing files: no second spelling appeared.
    let mut names: Vec<String> = fs::read_dir(lvl.join("l02"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lck") && !n.ends_with(".times"))
        .collect();
    names.sort();
    assert_eq!(names, ["R0000C0000.BUNDLE", "R0000C0000.BUNDLX"]);
    assert!(!lvl.join("L02").exists());
    let c = Cache::open(&orig).unwrap();
    assert_eq!(c.tile(t).unwrap().as_deref(), Some(&tile(7)[..]));
    assert_eq!(all_tiles(&c).len(), before);
}

#[test]
fn exploded_names_in_any_case() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ex");
    let scheme = TileScheme::web_mercator(12, TileFormat::Png);
    let c = Cache::create(&dir, &scheme, None).unwrap();
    let c = {
        drop(c);
        let mut s = scheme.clone();
        s.storage = StorageFormat::Exploded;
        s.packet_size = 0;
        fs::write(dir.join("conf.xml"), s.to_conf_xml()).unwrap();
        Cache::open(&dir).unwrap()
    };
    // Rows and columns with hex letters, so that upper- and lower-case hex differ.
    let tiles = [
        TileAddr::new(12, 0xab0, 0xcd1),
        TileAddr::new(12, 0xab0, 0xcd2),
        TileAddr::new(11, 0x5e, 0xf),
    ];
    let writes: Vec<(TileAddr, Vec<u8>)> = tiles
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, tile(i as u32)))
        .collect();
    let refs: Vec<(TileAddr, &[u8])> = writes.iter().map(|(t, b)| (*t, &b[..])).collect();
    c.write_tiles(&refs).unwrap();
    let want = all_tiles(&c);
    assert_eq!(want.len(), 3);
    drop(c);
    let all = dir.join("_alllayers");
    assert!(all.join("L12/R00000ab0/C00000cd1.png").is_file());
    rename(&all, "L12/R00000ab0", "L12/R00000AB0");
    rename(
        &all,
        "L12/R00000AB0/C00000cd1.png",
        "L12/R00000AB0/c00000CD1.PNG",
    );
    rename(&all, "L11", "l11");
    rename(&all, "l11/R0000005e", "l11/r0000005E");
    rename(
        &all,
        "l11/r0000005E/C0000000f.png",
        "l11/r0000005E/C0000000F.Png",
    );
    let c = Cache::open(&dir).unwrap();
    assert_eq!(c.storage(), StorageFormat::Exploded);
    assert!(all_tiles(&c) == want, "tiles differ after renaming");
    for (t, b) in &writes {
        assert_eq!(c.tile(*t).unwrap().as_deref(), Some(&b[..]), "{t}");
    }
    // Overwriting a tile writes over its file as spelled, not a second file beside it.
    c.write_tiles(&[(tiles[0], &tile(9)[..])]).unwrap();
    let row: Vec<String> = fs::read_dir(all.join("L12/R00000AB0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(row.len(), 2, "{row:?}");
    assert!(!all.join("L12/R00000ab0").exists());
    assert_eq!(c.tile(tiles[0]).unwrap().as_deref(), Some(&tile(9)[..]));
    let out = bundlefs(&["verify"], &[&dir]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains("WARN"), "{}", stdout(&out));
}

#[test]
fn two_spellings_of_one_name_are_an_error_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 4] = [
        ("conf.xml", "Conf.xml", "Conf.xml"),
        ("conf.cdi", "CONF.CDI", "CONF.CDI"),
        ("_alllayers/L01", "_alllayers/l01", "l01"),
        (
            "_alllayers/L02/R0000C0000.bundle",
            "_alllayers/L02/R0000C0000.BUNDLE",
            "R0000C0000.BUNDLE",
        ),
    ];
    for (i, (orig, second, second_name)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("c{i}"));
        copy_dir(&esri_sample_cache(), &dir);
        let (from, to) = (dir.join(orig), dir.join(second));
        if from.is_dir() {
            copy_dir(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
        }
        let first_name = Path::new(orig).file_name().unwrap().to_str().unwrap();
        for cmd in ["info", "verify"] {
            let out = bundlefs(&[cmd], &[&dir]);
            assert!(!out.status.success(), "{cmd} {second}: accepted");
            let err = stderr(&out);
            assert!(
                err.contains(&format!("{first_name:?}"))
                    && err.contains(&format!("{second_name:?}")),
                "{cmd} {second}: {err}"
            );
        }
    }
}

#[test]
fn tpk_cache_folder_named_after_the_map() {
    let tmp = tempfile::tempdir().unwrap();
    let tpk = case_data("12-tpk-alt-root-name").join("alt_root_name.tpk");
    let dir = tmp.path().join("alt");
    unzip(&tpk, &dir);
    assert!(dir.join("v101/TPK Root Name/conf.xml").is_file());
    // Unpacked: the package root opens the cache of v101/TPK Root Name.
    let c = Cache::open(&dir).unwrap();
    assert!(
        c.root().ends_with("v101/TPK Root Name"),
        "{}",
        c.root().display()
    );
    assert_eq!(c.levels().unwrap(), vec![0, 1]);
    let unpacked = all_tiles(&c);
    assert!(!unpacked.is_empty());
    // Packed: the same tiles.
    let out = tmp.path().join("out");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2"])
            .arg(&tpk)
            .arg(&out),
    );
    assert!(all_tiles(&Cache::open(&out).unwrap()) == unpacked);
    // An upper-case V101 and a conf.xml spelled CONF.XML are found too.
    rename(&dir, "v101", "V101");
    rename(
        &dir,
        "V101/TPK Root Name/conf.xml",
        "V101/TPK Root Name/CONF.XML",
    );
    assert!(all_tiles(&Cache::open(&dir).unwrap()) == unpacked);
    // Two caches in one package: which one is meant cannot be told; both are named.
    copy_dir(&dir.join("V101/TPK Root Name"), &dir.join("V101/Other Map"));
    let err = bundlefs(&["info"], &[&dir]);
    assert!(!err.status.success());
    let e = stderr(&err);
    assert!(
        e.contains("TPK Root Name") && e.contains("Other Map"),
        "{e}"
    );
}

/// The mount serves a Windows-spelled cache under the canonical names, with the same bytes.
#[test]
fn mount_serves_canonical_names_of_a_windows_spelled_cache() {
    use crate::support::mount::Mounted;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    copy_dir(&esri_sample_cache(), &dir);
    rename(&dir, "conf.xml", "Conf.xml");
    rename(&dir, "_alllayers/L01", "_alllayers/l01");
    rename(
        &dir,
        "_alllayers/l01/R0000C0000.bundle",
        "_alllayers/l01/R0000C0000.BUNDLE",
    );
    let want = all_tiles(&Cache::open(esri_sample_cache()).unwrap());
    let m = Mounted::start(&dir, &tmp.path().join("mnt"), &[]);
    let mut top: Vec<String> = fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["_alllayers", "conf.cdi", "conf.xml"]);
    // The mount's conf.xml is the cache's (storage said as exploded, as the tree is).
    let served = TileScheme::parse_conf_xml(&fs::read(m.path("conf.xml")).unwrap()).unwrap();
    let mut want_scheme = Cache::open(esri_sample_cache())
        .unwrap()
        .scheme()
        .unwrap()
        .clone();
    want_scheme.storage = StorageFormat::Exploded;
    assert_eq!(served.scheme, want_scheme);
    assert_eq!(want.keys().filter(|t| t.level == 1).count(), 4);
    for (t, bytes) in want.iter().filter(|(t, _)| t.level == 1) {
        let rel = format!("_alllayers/{t}.jpg");
        assert!(&fs::read(m.path(&rel)).unwrap() == bytes, "{rel} differs");
    }
    assert!(!m.path("_alllayers/l01").exists());
}

#[test]
fn verify_warns_about_what_it_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    copy_dir(&esri_sample_cache(), &dir);
    let all = dir.join("_alllayers");
    fs::create_dir(all.join("L3")).unwrap();
    fs::write(all.join("L3/R0000C0000.bundle"), b"x").unwrap();
    fs::write(all.join("notes.txt"), b"x").unwrap();
    fs::write(all.join("L01/readme.txt"), b"x").unwrap();
    fs::write(all.join("L01/R0000C0001.bundle"), b"x").unwrap();
    fs::create_dir(all.join("Lxx")).unwrap();
    fs::write(all.join("Lxx/a"), b"x").unwrap();
    // Left by writers, ignored by every reader by design: no warning.
    fs::write(all.join("L01/R0000C0000.lck"), b"").unwrap();
    fs::write(all.join("L01/R0000C0000.lock"), b"").unwrap();
    fs::create_dir(all.join("L04")).unwrap();

    let out = bundlefs(&["verify"], &[&dir]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "skipped entries are warnings, not problems: {text}"
    );
    let warns: Vec<&str> = text.lines().filter(|l| l.starts_with("WARN ")).collect();
    for name in ["L3", "notes.txt", "readme.txt", "R0000C0001.bundle", "Lxx"] {
        assert!(
            warns
                .iter()
                .any(|w| w.contains(&format!("/{name}: skipped"))),
            "no warning for {name}: {text}"
        );
    }
    assert_eq!(warns.len(), 5, "{text}");
    assert!(text.contains("0 problem(s), 5 warning(s)"), "{text}");
    // The clean original: no warning at all.
    let out = bundlefs(&["verify"], &[&esri_sample_cache()]);
    assert!(!stdout(&out).contains("WARN"), "{}", stdout(&out));
}

#[test]
fn verify_warns_about_skipped_exploded_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = tmp.path().join("ex");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "exploded"])
            .arg(esri_sample_cache())
            .arg(&ex),
    );
    let l1 = ex.join("_alllayers/L01");
    let row = fs::read_dir(&l1).unwrap().next().unwrap().unwrap().path();
    fs::write(row.join("Thumbs.db"), b"x").unwrap();
    fs::create_dir(l1.join("rows-backup")).unwrap();
    fs::write(l1.join("rows-backup/C00000000.jpg"), b"x").unwrap();
    let out = bundlefs(&["verify"], &[&ex]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Thumbs.db: skipped"), "{text}");
    assert!(text.contains("rows-backup: skipped"), "{text}");
    assert!(text.contains("2 warning(s)"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Kind 2: text files as editors and older ArcGIS write them

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out = if big_endian {
        vec![0xfe, 0xff]
    } else {
        vec![0xff, 0xfe]
    };
    for u in text.encode_utf16() {
        out.extend_from_slice(&if big_endian {
            u.to_be_bytes()
        } else {
            u.to_le_bytes()
        });
    }
    out
}

/// `info` without its first line (the path).
fn info_body(dir: &Path) -> String {
    let out = bundlefs(&["info"], &[dir]);
    assert!(out.status.success(), "{}: {}", dir.display(), stderr(&out));
    stdout(&out).lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn conf_files_in_utf16_with_crlf_read_like_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let want = info_body(&esri_sample_cache());
    let exported = tmp.path().join("exported");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "compact-v2"])
            .arg(esri_sample_cache())
            .arg(&exported),
    );
    let want_exported = info_body(&exported);
    let conf = fs::read_to_string(esri_sample_cache().join("conf.xml")).unwrap();
    let cdi = fs::read_to_string(esri_sample_cache().join("conf.cdi")).unwrap();
    for (i, be) in [false, true].into_iter().enumerate() {
        let dir = tmp.path().join(format!("c{i}"));
        copy_dir(&esri_sample_cache(), &dir);
        let crlf = |s: &str| s.replace("\r\n", "\n").replace('\n', "\r\n");
        fs::write(dir.join("conf.xml"), utf16(&crlf(&conf), be)).unwrap();
        let mut bom = b"\xef\xbb\xbf".to_vec();
        bom.extend_from_slice(crlf(&cdi).as_bytes());
        fs::write(dir.join("conf.cdi"), bom).unwrap();
        assert_eq!(info_body(&dir), want, "big endian: {be}");
        let c = Cache::open(&dir).unwrap();
        assert_eq!(
            c.extent(),
            Cache::open(esri_sample_cache()).unwrap().extent()
        );
        // Exported, the scheme is written as UTF-8 that reads back as the original's export.
        let out = tmp.path().join(format!("out{i}"));
        run_ok(
            Command::new(bin())
                .args(["export", "--storage", "compact-v2"])
                .arg(&dir)
                .arg(&out),
        );
        let written = fs::read(out.join("conf.xml")).unwrap();
        assert!(std::str::from_utf8(&written).is_ok());
        assert_eq!(info_body(&out), want_exported);
    }
}

#[test]
fn pre_10_conf_in_utf16_reads_like_the_case() {
    let tmp = tempfile::tempdir().unwrap();
    let case = case_data("03-arcgis-9x-conf-geographic-512").join("cache");
    let want = info_body(&case);
    assert!(want.contains("512x512 px"), "{want}");
    let dir = tmp.path().join("c");
    copy_dir(&case, &dir);
    let conf = fs::read_to_string(dir.join("conf.xml")).unwrap();
    fs::write(
        dir.join("conf.xml"),
        utf16(&conf.replace('\n', "\r\n"), true),
    )
    .unwrap();
    assert_eq!(info_body(&dir), want);
}

/// Rewrites a package with `root.json` replaced (every entry stored, as the spec requires).
fn repack(src: &Path, dest: &Path, root_json: &[u8]) {
    let mut z = zip::ZipArchive::new(fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(fs::File::create(dest).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..z.len() {
        let mut e = z.by_index(i).unwrap();
        let name = e.name().to_string();
        w.start_file(name.as_str(), opts).unwrap();
        if name == "root.json" {
            w.write_all(root_json).unwrap();
        } else {
            std::io::copy(&mut e, &mut w).unwrap();
        }
    }
    w.finish().unwrap();
}

fn usa_root_json() -> String {
    let mut z =
        zip::ZipArchive::new(fs::File::open(fixtures().join("arcgis-tpkx/Usa.tpkx")).unwrap())
            .unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut z.by_name("root.json").unwrap(), &mut s).unwrap();
    s
}

/// What `verify` counts in a package: "N levels, N bundles, N tiles checked; …".
fn tile_count(pkg: &Path) -> String {
    let out = bundlefs(&["verify"], &[pkg]);
    assert!(out.status.success(), "{}: {}", pkg.display(), stderr(&out));
    let line = stdout(&out).lines().last().unwrap().to_string();
    line.rsplit_once(".tpkx: ").unwrap().1.to_string()
}

#[test]
fn tpkx_root_json_with_bom_crlf_or_utf16() {
    let tmp = tempfile::tempdir().unwrap();
    let usa = fixtures().join("arcgis-tpkx/Usa.tpkx");
    let want = tile_count(&usa);
    let root = usa_root_json();
    let crlf = root.replace("\r\n", "\n").replace('\n', "\r\n");
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(crlf.as_bytes());
    for (i, bytes) in [bom, utf16(&crlf, false)].into_iter().enumerate() {
        let pkg = tmp.path().join(format!("p{i}.tpkx"));
        repack(&usa, &pkg, &bytes);
        assert_eq!(tile_count(&pkg), want, "variant {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Kind 5: values bundlefs does not support, refused by name in every command

/// Every command that reads SRC refuses it, naming `what`.
fn refused_everywhere(src: &Path, what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let sample = tmp.path().join("sample");
    run_ok(
        Command::new(bin())
            .args(["sample", "--levels", "0-1"])
            .arg(&sample),
    );
    let runs: Vec<(&str, Vec<&str>, Vec<&Path>)> = vec![
        ("info", vec!["info"], vec![src]),
        ("verify", vec!["verify"], vec![src]),
        (
            "export",
            vec!["export", "--storage", "exploded"],
            vec![src, &dest],
        ),
        ("import", vec!["import"], vec![src, &sample]),
        ("compact", vec!["compact"], vec![src]),
    ];
    for (name, args, paths) in runs {
        if name == "compact" && src.extension().is_some_and(|e| e == "tpkx") {
            continue;
        }
        let out = bundlefs(&args, &paths);
        assert!(
            !out.status.success(),
            "{name} {}: accepted: {}",
            src.display(),
            stdout(&out)
        );
        assert!(stderr(&out).contains(what), "{name}: {}", stderr(&out));
    }
    assert!(!dest.exists(), "export wrote a destination");
}

#[test]
fn packet_size_not_128_is_refused_by_every_command() {
    let case = case_data("14-packetsize-not-128");
    refused_everywhere(&case.join("cache"), "PacketSize 64");
    refused_everywhere(&case.join("p64.tpkx"), "packetSize 64");
}

#[test]
fn packet_size_of_an_exploded_conf_over_bundles_is_judged_by_the_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = fs::read_to_string(esri_sample_cache().join("conf.xml")).unwrap();
    assert!(conf.contains("<PacketSize>128</PacketSize>"));
    let exploded = conf.replace(
        "esriMapCacheStorageModeCompactV2",
        "esriMapCacheStorageModeExploded",
    );
    for (p, ok) in [("64", false), ("0", true), ("128", true)] {
        let dir = tmp.path().join(format!("p{p}"));
        copy_dir(&esri_sample_cache(), &dir);
        let text = exploded.replace(
            "<PacketSize>128</PacketSize>",
            &format!("<PacketSize>{p}</PacketSize>"),
        );
        fs::write(dir.join("conf.xml"), text).unwrap();
        let out = bundlefs(&["verify"], &[&dir]);
        assert_eq!(out.status.success(), ok, "PacketSize {p}: {}", stderr(&out));
        if !ok {
            assert!(stderr(&out).contains("PacketSize 64"), "{}", stderr(&out));
        }
    }
}

#[test]
fn unknown_storage_format_and_twice_given_levels_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = fs::read_to_string(esri_sample_cache().join("conf.xml")).unwrap();
    let edits = [
        (
            "esriMapCacheStorageModeCompactV2",
            "esriMapCacheStorageModeCompactV3",
            "esriMapCacheStorageModeCompactV3",
        ),
        (
            "<LevelID>1</LevelID>",
            "<LevelID>0</LevelID>",
            "LevelID 0 appears twice",
        ),
    ];
    for (i, (from, to, what)) in edits.iter().enumerate() {
        assert!(conf.contains(from), "{from}");
        let dir = tmp.path().join(format!("c{i}"));
        copy_dir(&esri_sample_cache(), &dir);
        fs::write(dir.join("conf.xml"), conf.replacen(from, to, 1)).unwrap();
        refused_everywhere(&dir, what);
    }
    // A package that says it holds Compact V1 bundles.
    let root = usa_root_json();
    assert!(root.contains("esriMapCacheStorageModeCompactV2"));
    let pkg = tmp.path().join("v1.tpkx");
    repack(
        &fixtures().join("arcgis-tpkx/Usa.tpkx"),
        &pkg,
        root.replace(
            "esriMapCacheStorageModeCompactV2",
            "esriMapCacheStorageModeCompact",
        )
        .as_bytes(),
    );
    refused_everywhere(&pkg, "storageFormat");
}

#[test]
fn tpkx_entries_spelled_as_on_windows_are_found() {
    // A .tpkx re-zipped on Windows may carry `ROOT.JSON` and `Tile/L00/…`: the package must read
    // like the original.
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("sample");
    run_ok(
        Command::new(bin())
            .args(["sample", "--levels", "0-1"])
            .arg(&src),
    );
    let pkg = d.path().join("p.tpkx");
    run_ok(
        Command::new(bin())
            .args(["export", "--storage", "tpkx"])
            .arg(&src)
            .arg(&pkg),
    );
    let upper = d.path().join("upper.tpkx");
    let py = r#"
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
    for e in zi.infolist():
        n = e.filename
        n = "ROOT.JSON" if n == "root.json" else ("Tile/" + n[5:] if n.startswith("tile/") else n)
        zo.writestr(n, zi.read(e.filename))
"#;
    let st = Command::new("python3")
        .args(["-c", py])
        .arg(&pkg)
        .arg(&upper)
        .status()
        .unwrap();
    assert!(st.success());
    let a = d.path().join("a");
    let b = d.path().join("b");
    for (p, out) in [(&pkg, &a), (&upper, &b)] {
        run_ok(
            Command::new(bin())
                .args(["export", "--storage", "compact-v2"])
                .arg(p)
                .arg(out),
        );
    }
    let want = all_tiles(&Cache::open(&a).unwrap());
    assert!(!want.is_empty());
    assert_eq!(all_tiles(&Cache::open(&b).unwrap()), want);
}
