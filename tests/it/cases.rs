//! The real-world cases (`tests/data/cases/*/run.sh`, inputs rebuilt from public reports that broke
//! tools): each script exits 0 when bundlefs does the right thing. They run here against the binary
//! under test; each kind also has tests of its own in the other modules.

use std::process::Command;

use crate::support::{bin, case_data};

/// Runs one case's `run.sh` with `BUNDLEFS` set to the binary under test; fails with its output.
fn run_case(name: &str) {
    let script = case_data(name).join("run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("BUNDLEFS", bin())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "case {name} failed:\n{text}");
}

#[test]
fn case_01_conf_xml_capital_c() {
    run_case("01-conf-xml-capital-C");
}

#[test]
fn case_03_arcgis_9x_conf_geographic_512() {
    run_case("03-arcgis-9x-conf-geographic-512");
}

#[test]
fn case_09_local_srs_2180() {
    run_case("09-local-srs-2180");
}

#[test]
fn case_12_tpk_alt_root_name() {
    run_case("12-tpk-alt-root-name");
}

#[test]
fn case_13_aoi_geojson_crs() {
    run_case("13-aoi-geojson-crs");
}

#[test]
fn case_14_packetsize_not_128() {
    run_case("14-packetsize-not-128");
}

#[test]
fn case_15_info_into_head() {
    run_case("15-info-into-head");
}

#[test]
fn case_31_rsync_delay_updates() {
    crate::support::mount::need("rsync");
    run_case("31-rsync-delay-updates");
}

#[test]
fn case_38_du_find_newer() {
    run_case("38-du-find-newer");
}
