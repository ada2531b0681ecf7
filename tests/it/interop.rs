//! bundlefs against real peers: MapProxy 1.15 (writes and reads Compact V1/V2 and exploded ArcGIS
//! trees) and GDAL 3.6's ESRIC driver (reads Compact V2 through conf.xml).
//!
//! These tests need `mapproxy-util`/`mapproxy-seed` (Debian `mapproxy`, `python3-yaml`) and
//! `gdalinfo` (Debian `gdal-bin`); they FAIL, not skip, without them — `scripts/test.sh` installs them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::*;
use bundlefs::cache::Cache;
use bundlefs::format::{exploded, TileAddr};
use bundlefs::jobs::verify::verify;

// ---------------------------------------------------------------------------------------------
// Peers and fixtures

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Fails the test (never skips) when a peer tool is missing.
fn require(tools: &[&str]) {
    for t in tools {
        assert!(
            on_path(t),
            "`{t}` not found on PATH: the interop tests need MapProxy 1.15 and GDAL (Debian packages \
             mapproxy, python3-yaml, gdal-bin). Run scripts/test.sh, which installs them, or \
             `apt-get install mapproxy python3-yaml gdal-bin`."
        );
    }
}

/// A cache seeded by MapProxy with `scripts/mapproxy-fixture.sh`: `v2/`, `v1/`, `arcgis/`.
struct Fixture {
    dir: PathBuf,
    maxlevel: u8,
    /// `png` or `jpeg` (MapProxy's name, also its exploded file extension).
    fmt: &'static str,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mapproxy-fixture.sh")
}

fn seed(maxlevel: u8, fmt: &'static str) -> Fixture {
    require(&["mapproxy-util", "mapproxy-seed"]);
    let dir = scratch_dir(&format!("mapproxy-{fmt}{maxlevel}"));
    run_ok(
        Command::new("bash")
            .arg(script())
            .arg(&dir)
            .arg(maxlevel.to_string())
            .arg(fmt),
    );
    Fixture { dir, maxlevel, fmt }
}

/// MapProxy cache, levels 0–4, PNG (341 tiles). Seeded once per test binary.
fn png4() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| seed(4, "png"))
}

/// MapProxy cache, levels 0–2, JPEG (21 tiles).
fn jpeg2() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| seed(2, "jpeg"))
}

fn fixtures() -> [(&'static Fixture, usize); 2] {
    [(png4(), 341), (jpeg2(), 21)]
}

impl Fixture {
    fn v1(&self) -> PathBuf {
        self.dir.join("v1")
    }
    fn v2(&self) -> PathBuf {
        self.dir.join("v2")
    }
    fn arcgis(&self) -> PathBuf {
        self.dir.join("arcgis")
    }

    /// MapProxy's own exploded export as a tree.
    fn arcgis_tree(&self) -> BTreeMap<String, Vec<u8>> {
        tree_files(&self.arcgis())
    }

    /// MapProxy's exploded export with `.jpeg` renamed `.jpg`: MapProxy names JPEG tiles `.jpeg`,
    /// ArcGIS (and so bundlefs) `.jpg`; the bytes must still be identical.
    fn arcgis_tree_as_arcgis_names(&self) -> BTreeMap<String, Vec<u8>> {
        self.arcgis_tree()
            .into_iter()
            .map(|(k, v)| match k.strip_suffix(".jpeg") {
                Some(stem) => (format!("{stem}.jpg"), v),
                None => (k, v),
            })
            .collect()
    }

    /// Tiles of MapProxy's exploded export, by address.
    fn arcgis_tiles(&self) -> BTreeMap<TileAddr, Vec<u8>> {
        self.arcgis_tree()
            .into_iter()
            .map(|(k, v)| {
                let parts: Vec<&str> = k.split('/').collect();
                assert_eq!(parts.len(), 3, "unexpected file {k} in MapProxy's export");
                let level = exploded::parse_level_dir(parts[0]).unwrap();
                let row = exploded::parse_row_dir(parts[1]).unwrap();
                let (col, ext) = exploded::parse_col_file(parts[2]).unwrap();
                assert_eq!(ext, self.fmt, "{k}");
                (TileAddr::new(level, row, col), v)
            })
            .collect()
    }

    /// `scripts/mapproxy-fixture.sh --export-from KIND SRC DEST`: MapProxy reads the compact cache at
    /// SRC and writes it as an exploded tree to DEST.
    fn mapproxy_export_from(&self, kind: &str, src: &Path, dest: &Path) {
        run_ok(
            Command::new("bash")
                .arg(script())
                .arg("--export-from")
                .arg(kind)
                .arg(src)
                .arg(dest)
                .arg(self.maxlevel.to_string())
                .arg(self.fmt),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (a) bundlefs reads MapProxy's bundles

#[test]
fn reads_mapproxy_v1_and_v2() {
    for (f, n) in fixtures() {
        let want = f.arcgis_tiles();
        assert_eq!(
            want.len(),
            n,
            "{}: MapProxy's arcgis export",
            f.dir.display()
        );
        for dir in [f.v1(), f.v2()] {
            let c = Cache::open(&dir).unwrap();
            assert_same_tiles(&c, &want, &dir.display().to_string());
            let r = verify(&c, true).unwrap();
            assert!(r.problems.is_empty() && r.warnings.is_empty(), "{r:?}");
            assert_eq!(r.tiles, n as u64);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) bundlefs export --storage exploded == MapProxy's own exploded export

#[test]
fn export_exploded_equals_mapproxy_arcgis_export() {
    for (f, n) in fixtures() {
        // JPEG: MapProxy writes `.jpeg`, bundlefs `.jpg` as ArcGIS does; compare with that renaming.
        let want = f.arcgis_tree_as_arcgis_names();
        assert_eq!(want.len(), n);
        for (src, name) in [(f.v2(), "from-v2"), (f.v1(), "from-v1")] {
            let out = scratch_dir(&format!("exploded-{}-{name}", f.fmt));
            let dest = out.join("tree");
            let msg = bundlefs_export(&src, &dest, "exploded");
            assert!(msg.contains(&format!("exported {n} tiles")), "{msg}");
            assert_same_tree(&tree_files(&dest), &want, &format!("{} {name}", f.fmt));
            fs::remove_dir_all(&out).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (c) MapProxy reads the bundles bundlefs writes

#[test]
fn mapproxy_reads_bundlefs_bundles() {
    for (f, n) in fixtures() {
        let want = f.arcgis_tree();
        for (src, storage) in [
            (f.v1(), "compact-v2"),
            (f.v2(), "compact-v2"),
            (f.v2(), "compact-v1"),
            (f.v1(), "compact-v1"),
        ] {
            let what = format!(
                "{}: {} -> bundlefs {storage} -> MapProxy",
                f.fmt,
                src.file_name().unwrap().to_string_lossy()
            );
            let out = scratch_dir("ours");
            let ours = out.join("bundles");
            let msg = bundlefs_export(&src, &ours, storage);
            assert!(
                msg.contains(&format!("exported {n} tiles")),
                "{what}: {msg}"
            );
            let back = out.join("arcgis");
            f.mapproxy_export_from(storage, &ours, &back);
            assert_same_tree(&tree_files(&back), &want, &what);
            fs::remove_dir_all(&out).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) GDAL's ESRIC driver

fn gdalinfo(args: &[&str], conf: &Path) -> String {
    require(&["gdalinfo"]);
    run_ok(Command::new("gdalinfo").args(args).arg(conf))
}

/// `gdalinfo` output without the line naming the file.
fn gdal_description(conf: &Path) -> String {
    gdalinfo(&[], conf)
        .lines()
        .filter(|l| !l.contains(&conf.display().to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `gdalinfo -checksum` of the overview levels holding data (overview index `n` is level
/// `count - 1 - n`). GDAL 3.6 dies with SIGFPE checksumming the full-resolution band of a 20-level
/// Web Mercator cache (134217728 px square), so each level is opened as its own dataset with the
/// generic `OVERVIEW_LEVEL` open option.
fn gdal_checksums(conf: &Path, levels: std::ops::RangeInclusive<usize>) -> Vec<String> {
    let info = gdal_description(conf);
    let ovr_line = info
        .lines()
        .find(|l| l.trim_start().starts_with("Overviews:"))
        .unwrap_or_else(|| panic!("{}: no overviews in gdalinfo:\n{info}", conf.display()));
    let count = ovr_line.split(',').count();
    levels
        .map(|level| {
            let oo = format!("OVERVIEW_LEVEL={}", count - 1 - level);
            let out = gdalinfo(&["-checksum", "-oo", &oo], conf);
            let sums: Vec<&str> = out
                .lines()
                .filter(|l| l.trim_start().starts_with("Checksum="))
                .collect();
            assert!(
                !sums.is_empty(),
                "{}: level {level}:\n{out}",
                conf.display()
            );
            format!("L{level}: {}", sums.join(" "))
        })
        .collect()
}

/// Every number after `Checksum=` / `checksum:` in `line` is non-zero.
fn assert_nonzero_checksums(line: &str) {
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    let nums = if line.trim_start().starts_with('L') {
        &nums[1..] // "L2: Checksum=…": skip the level
    } else {
        &nums[..]
    };
    assert!(!nums.is_empty() && nums.iter().all(|n| *n != 0), "{line}");
}

#[test]
fn gdal_reads_bundlefs_v2_like_esri_original() {
    let orig = esri_sample_cache();
    let want_sums = gdal_checksums(&orig.join("conf.xml"), 0..=2);
    // The data is on L00–L02: a zero checksum would mean GDAL read nothing there.
    for s in &want_sums {
        assert_nonzero_checksums(s);
    }
    let want_info = gdal_description(&orig.join("conf.xml"));
    assert!(
        want_info.contains("Size is 134217728, 134217728"),
        "{want_info}"
    );

    let tmp = scratch_dir("gdal");
    let step = |src: &Path, name: &str, storage: &str| -> PathBuf {
        let dest = tmp.join(name);
        bundlefs_export(src, &dest, storage);
        dest
    };
    let v2 = step(&orig, "v2", "compact-v2");
    let v1 = step(&orig, "v1", "compact-v1");
    let v1v2 = step(&v1, "v1v2", "compact-v2");
    let ex = step(&orig, "exploded", "exploded");
    let exv2 = step(&ex, "exploded-v2", "compact-v2");
    for d in [&v2, &v1v2, &exv2] {
        let conf = d.join("conf.xml");
        assert_eq!(gdal_checksums(&conf, 0..=2), want_sums, "{}", d.display());
        assert_eq!(gdal_description(&conf), want_info, "{}", d.display());
    }
    // GDAL reads Compact V2 only: V1 and exploded conf.xml are refused (so ours say what they hold).
    for d in [&v1, &ex] {
        let out = run(Command::new("gdalinfo").arg(d.join("conf.xml")));
        assert!(!out.status.success(), "{}", d.display());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Not recognized as esri V2"));
    }

    // An exploded cache whose conf.xml says PacketSize 0 (as ArcGIS writes for exploded caches):
    // GDAL refuses compact caches with any PacketSize but 128, so export must write 128.
    let ex0 = tmp.join("exploded-packet0");
    copy_dir(&ex, &ex0);
    let conf = fs::read_to_string(ex0.join("conf.xml")).unwrap();
    assert!(conf.contains("<PacketSize>128</PacketSize>"));
    fs::write(
        ex0.join("conf.xml"),
        conf.replace("<PacketSize>128</PacketSize>", "<PacketSize>0</PacketSize>"),
    )
    .unwrap();
    let ex0v2 = step(&ex0, "exploded-packet0-v2", "compact-v2");
    assert_eq!(gdal_checksums(&ex0v2.join("conf.xml"), 0..=2), want_sums);
}

#[test]
fn gdal_opens_bundlefs_sample() {
    let tmp = scratch_dir("sample");
    for (format, bands) in [("PNG", 4), ("JPEG", 3)] {
        let dir = tmp.join(format);
        run_ok(
            Command::new(bin())
                .arg("sample")
                .arg(&dir)
                .args(["--levels", "0-3", "--format", format]),
        );
        let conf = dir.join("conf.xml");
        let info = gdalinfo(&["-checksum"], &conf);
        assert!(info.contains("Driver: ESRIC/Esri Compact Cache"), "{info}");
        assert!(info.contains("Size is 2048, 2048"), "{info}");
        assert!(
            info.contains("Pixel Size = (19567.879241"),
            "{format}: level 3 resolution\n{info}"
        );
        assert!(
            info.contains("Origin = (-20037508.342787"),
            "{format}\n{info}"
        );
        let ovr: Vec<&str> = info
            .lines()
            .filter(|l| l.trim_start().starts_with("Overviews:"))
            .collect();
        assert_eq!(ovr.len(), bands, "{format}\n{info}");
        assert!(ovr
            .iter()
            .all(|l| l.trim() == "Overviews: 1024x1024, 512x512, 256x256"));
        assert_eq!(
            info.matches("ColorInterp=").count(),
            bands,
            "{format}\n{info}"
        );
        // Every level drew something.
        for l in info.lines().filter(|l| l.contains("hecksum")) {
            assert_nonzero_checksums(l);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (e) Tile packages: GDAL ≥ 3.8 reads .tpkx (Debian's 3.6 does not); the rasterio wheel bundles a
// newer GDAL, so the checks go through `python3 -c 'import rasterio'` (scripts/test.sh installs it).

/// Size and band checksums per level, as the GDAL inside rasterio computes them: a cache conf.xml
/// at the overviews of its first `levels` levels (level 0 first), a package at its base and each
/// overview (finest first).
fn rasterio_checksums(path: &Path, levels: usize) -> Vec<String> {
    let script = r#"
import sys, rasterio
path, levels = sys.argv[1], int(sys.argv[2])
with rasterio.open(path) as ds:
    n = len(ds.overviews(1))
    print(ds.driver)
if path.endswith(".tpkx"):
    opts = [None] + list(range(n))  # finest (base) first
else:
    opts = [n - 1 - i for i in range(levels)]  # coarsest (level 0) first
for o in opts:
    kw = {} if o is None else {"overview_level": o}
    with rasterio.open(path, **kw) as d:
        print(d.width, d.height, [d.checksum(b) for b in range(1, d.count + 1)])
"#;
    require(&["python3"]);
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(levels.to_string()));
    assert!(
        out.status.success(),
        "python3 with rasterio could not read {} (scripts/test.sh installs rasterio with pip):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ESRIC"), "{}: {text}", path.display());
    lines.map(str::to_string).collect()
}

#[test]
fn gdal_reads_bundlefs_tpkx_with_the_sources_checksums() {
    let tmp = scratch_dir("tpkx");
    // Esri's sample cache (L00-L02, whole world): the package's base is L02, its overviews L01, L00.
    let orig = esri_sample_cache();
    let want = rasterio_checksums(&orig.join("conf.xml"), 3);
    let pkg = tmp.join("sample.tpkx");
    bundlefs_export(&orig, &pkg, "tpkx");
    let mut got = rasterio_checksums(&pkg, 3);
    got.reverse();
    assert_eq!(got, want, "sample.tpkx vs esri-sample-cache/conf.xml");
    assert!(want.iter().all(|l| l.starts_with("1024 1024")
        || l.starts_with("512 512")
        || l.starts_with("256 256")));

    // Esri's Usa.tpkx read by bundlefs, written back as a package: GDAL sees the same raster.
    let usa = crate::support::fixtures().join("arcgis-tpkx/Usa.tpkx");
    let want = rasterio_checksums(&usa, 4);
    let v2 = tmp.join("usa-v2");
    bundlefs_export(&usa, &v2, "compact-v2");
    let back = tmp.join("usa.tpkx");
    bundlefs_export(&v2, &back, "TILE_PACKAGE");
    assert_eq!(rasterio_checksums(&back, 4), want, "Usa.tpkx round trip");
}

// ---------------------------------------------------------------------------------------------
// (f) MapProxy reads what export --levels and import write

#[test]
fn mapproxy_reads_level_exports_and_imports() {
    let f = png4();
    let full = f.arcgis_tree();
    for storage in ["compact-v1", "compact-v2"] {
        let out = scratch_dir("levels");
        let dest = out.join("bundles");
        run_ok(
            Command::new(bin())
                .args(["export", "--storage", storage, "--levels", "2-4"])
                .arg(f.v2())
                .arg(&dest),
        );
        let back = out.join("arcgis");
        f.mapproxy_export_from(storage, &dest, &back);
        let want: BTreeMap<String, Vec<u8>> = full
            .iter()
            .filter(|(k, _)| !k.starts_with("L00/") && !k.starts_with("L01/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_same_tree(
            &tree_files(&back),
            &want,
            &format!("{storage} --levels 2-4"),
        );

        // Take three L03 tiles out, then import the whole V1 cache: L00-L01 arrive as new bundles,
        // the three tiles are appended to the existing L03 bundle, the rest is unchanged.
        let c = Cache::open(&dest).unwrap();
        let gone = [
            TileAddr::new(3, 0, 0),
            TileAddr::new(3, 5, 2),
            TileAddr::new(3, 7, 7),
        ];
        c.delete_tiles(&gone).unwrap();
        let msg = run_ok(Command::new(bin()).arg("import").arg(f.v1()).arg(&dest));
        assert!(msg.contains("imported 8 tiles"), "{msg}");
        assert!(msg.contains("unchanged 333"), "{msg}"); // 341 - 5 (L00, L01) - 3
        let back2 = out.join("arcgis2");
        f.mapproxy_export_from(storage, &dest, &back2);
        assert_same_tree(
            &tree_files(&back2),
            &full,
            &format!("{storage} after import"),
        );
        fs::remove_dir_all(&out).unwrap();
    }
}
