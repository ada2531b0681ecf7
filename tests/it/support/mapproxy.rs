//! MapProxy as a reader of the files bundlefs writes: its own compact cache (seeded by
//! `scripts/mapproxy-fixture.sh`, levels 0-2, PNG) goes through bundlefs into a file or folder of
//! an open format; MapProxy reads that as one of its caches and exports it (`mapproxy-util export
//! --type tms`); each tile must equal MapProxy's export of its own source at the place the format
//! puts it. (MapProxy encodes PNG tiles anew on export, so the comparison is between its two
//! exports, not with the source's bytes.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::mount::{need, sh};
use super::{bin, run_ok, scratch_dir, tree_files};

/// How MapProxy is to read what bundlefs wrote.
pub struct Reader<'a> {
    /// The name of what bundlefs writes (`mp.gpkg`, `xyz`) in the scratch folder.
    pub dest: &'a str,
    /// `bundlefs export` options choosing the format (e.g. `["--storage", "xyz"]`).
    pub export_args: &'a [&'a str],
    /// The YAML of MapProxy's `cache:` block, indented by 6, `{path}` standing for the file.
    pub cache_yaml: &'a str,
    /// Whether MapProxy's export names rows from the bottom (a grid with origin sw).
    pub origin_sw: bool,
}

/// Runs the comparison for `r` in a scratch folder tagged `tag`; returns the path bundlefs wrote.
pub fn reads_what_bundlefs_wrote(tag: &str, r: &Reader) -> PathBuf {
    need("mapproxy-util");
    let d = scratch_dir(tag);
    let fixture = super::mount::seed_mapproxy_fixture(tag, 2);
    // MapProxy's cache has no conf.xml: it goes under one bundlefs made for the same grid (Web
    // Mercator, levels 0-2, PNG), as ArcGIS keeps it.
    let cache = d.join("cache");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-2", "--format", "PNG"]),
    );
    for l in ["L00", "L01", "L02"] {
        let (ok, _, err) = sh(&format!(
            "cp -r {}/{l} {}/_alllayers/",
            fixture.join("v2").display(),
            cache.display()
        ));
        assert!(ok, "{err}");
    }
    let dest = d.join(r.dest);
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&cache)
            .arg(&dest)
            .args(r.export_args),
    );
    // MapProxy's GLOBAL_WEBMERCATOR counts rows from the top (origin nw); a grid based on it with
    // origin sw counts them from the bottom.
    let grid = if r.origin_sw {
        "webmercator_sw"
    } else {
        "GLOBAL_WEBMERCATOR"
    };
    let yaml = format!(
        "services:\n  demo:\nlayers:\n  - name: mp\n    title: mp\n    sources: [mp_cache]\n\
         grids:\n  webmercator_sw:\n    base: GLOBAL_WEBMERCATOR\n    origin: sw\n\
         caches:\n  mp_cache:\n    grids: [{grid}]\n    sources: []\n    cache:\n{}\n",
        r.cache_yaml.replace("{path}", &dest.display().to_string())
    );
    let conf = d.join("mapproxy.yaml");
    std::fs::write(&conf, yaml).unwrap();
    let out_dir = d.join("mp-export");
    let (ok, out, err) = sh(&format!(
        "cd {} && mapproxy-util export -f {} --source mp_cache --grid {grid} \
         --dest {} --type tms --levels 0..2",
        d.display(),
        conf.display(),
        out_dir.display()
    ));
    assert!(ok, "mapproxy-util export: {out}{err}");
    let want: BTreeMap<String, Vec<u8>> = tree_files(&fixture.join("arcgis"))
        .into_iter()
        .filter(|(k, _)| k.ends_with(".png"))
        .collect();
    assert_eq!(want.len(), 21, "the fixture's export");
    let mut differ = Vec::new();
    for (k, bytes) in &want {
        let parts: Vec<&str> = k.split('/').collect();
        let z = bundlefs::format::exploded::parse_level_dir(parts[0]).unwrap();
        let row = bundlefs::format::exploded::parse_row_dir(parts[1]).unwrap();
        let (col, _) = bundlefs::format::exploded::parse_col_file(parts[2]).unwrap();
        let y = if r.origin_sw {
            (1u32 << z) - 1 - row
        } else {
            row
        };
        let p = out_dir.join(format!("{z}/{col}/{y}.png"));
        if std::fs::read(&p).ok().as_ref() != Some(bytes) {
            differ.push(p);
        }
    }
    assert!(differ.is_empty(), "MapProxy's exports differ: {differ:?}");
    dest
}
