#!/usr/bin/env bash
# Everything CI checks: installs the peers the tests run against (when missing), then
# cargo fmt --check, cargo clippy (all targets, warnings are errors), cargo test (all targets), then
# every fuzz target for 30 s (scripts/fuzz.sh: nightly toolchain, cargo-fuzz installed if missing;
# a crash fails the run). FUZZ_SECS=N changes the 30 s, FUZZ_SECS=0 skips fuzzing.
#
# Tests need: fusermount3 (fuse3), mapproxy-util/mapproxy-seed (mapproxy, python3-yaml),
# gdalinfo (gdal-bin), rsync, /usr/lib/cgi-bin/mapserv (cgi-mapserver: the WMS of tests/render.rs),
# python3 with rasterio, tpkutils, lerc and mapbox-vector-tile (pip). Fixtures and case inputs are in tests/data (see its README).
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# tool:package pairs; a package is installed when its tool is missing.
needs=(fusermount3:fuse3 mapproxy-util:mapproxy gdalinfo:gdal-bin rsync:rsync file:file man:man-db
    sqlite3:sqlite3 chromium:chromium nginx:nginx)
missing=()
for pair in "${needs[@]}"; do
    tool=${pair%%:*} pkg=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
done
# tests/render.rs runs MapServer as CGI from its Debian path.
[[ -x /usr/lib/cgi-bin/mapserv ]] || missing+=(cgi-mapserver)
# tests/it/serve.rs opens a Leaflet map of `bundlefs serve` in headless Chromium.
[[ -f /usr/share/javascript/leaflet/leaflet.js ]] || missing+=(libjs-leaflet)
# MapProxy's fixture script runs /usr/bin/python3 with PyYAML (python3-yaml).
if ! /usr/bin/python3 -c 'import yaml' >/dev/null 2>&1; then
    missing+=(python3-yaml)
fi
# gdal2tiles.py (gdal-bin) runs /usr/bin/python3 with GDAL's bindings (python3-gdal): the TMS tree
# of tests/it/xyz.rs.
if ! /usr/bin/python3 -c 'from osgeo import gdal' >/dev/null 2>&1; then
    missing+=(python3-gdal)
fi

if ((${#missing[@]})); then
    say "installing missing test dependencies: ${missing[*]}"
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "test.sh: need root or sudo to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${missing[@]}"
else
    say "test dependencies present (fuse3, mapproxy, gdal-bin, rsync, file, man-db, sqlite3, chromium, nginx, libjs-leaflet, python3-yaml, python3-gdal, cgi-mapserver)"
fi

# GDAL >= 3.8 reads .tpkx and ready-to-serve root.json; Debian's gdal-bin is 3.6, so the
# tile-package tests read them with the GDAL bundled in the rasterio wheel (PyPI). tpkutils (PyPI)
# reads the .tpk packages bundlefs writes (tests/it/packages.rs). Both for `python3`, when missing.
# Esri's lerc and mapbox-vector-tile (PyPI) make and read the LERC and vector tiles of
# tests/it/tilekinds.rs; prometheus_client parses the /metrics page (tests/it/service.rs); pmtiles
# reads and writes PMTiles files and pyogrio's GDAL (3.12, with the PMTiles driver the rasterio
# wheel lacks) reads vector ones (tests/it/open_formats.rs); OWSLib reads `bundlefs serve`'s WMTS
# (tests/it/serve.rs). Each as import-name:pip-name.
for pair in rasterio:rasterio tpkutils:tpkutils lerc:lerc mapbox_vector_tile:mapbox-vector-tile pmtiles:pmtiles pyogrio:pyogrio \
    prometheus_client:prometheus_client owslib:OWSLib; do
    py=${pair%%:*} pkg=${pair#*:}
    if ! python3 -c "import $py" >/dev/null 2>&1; then
        say "installing $pkg (pip) for the interop tests"
        python3 -m pip install --quiet "$pkg" ||
            python3 -m pip install --quiet --break-system-packages "$pkg"
    fi
done

say "cargo fmt --check"
cargo fmt --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

say "scripts/check-layers.py (layer arrows one way, no import cycle between files)"
python3 scripts/check-layers.py

# The object-store tests (tests/it/objstore.rs) run against a throw-away Ceph cluster with two S3
# gateways on loopback (scripts/ceph-cluster.sh installs Ceph from Debian when missing); its AWS_*
# variables and BUNDLEFS_S3_TEST=1 are exported to cargo test, and it is stopped by PID on exit,
# also when the tests fail.
# The az:// tests (tests/it/objstore_azure.rs) run against Microsoft's Azurite emulator on
# 127.0.0.1:10000 (scripts/azurite.sh: npm package installed when missing), stopped by PID too.
log=$(mktemp)
ceph_dir=$(mktemp -d /tmp/bundlefs-ceph-XXXXXX)
az_dir=$(mktemp -d /tmp/bundlefs-azurite-XXXXXX)
stop_ceph() { bash scripts/ceph-cluster.sh stop "$ceph_dir" >/dev/null 2>&1 || true; rm -rf "$ceph_dir"; }
stop_azurite() { bash scripts/azurite.sh stop "$az_dir" >/dev/null 2>&1 || true; rm -rf "$az_dir"; }
trap 'rm -f "$log"; stop_ceph; stop_azurite' EXIT
# The .deb the package test installs (tests/it/service.rs): release build, man pages,
# completions, cargo-deb (installed when missing).
say "scripts/package.sh (the Debian package tests/it/service.rs installs)"
rm -rf target/debian
scripts/package.sh

say "cargo test --all-targets --no-run (build first, so the cluster below does not idle through it)"
cargo test --all-targets --no-run

say "starting Ceph for the object-store tests (scripts/ceph-cluster.sh start $ceph_dir)"
bash scripts/ceph-cluster.sh start "$ceph_dir"
# shellcheck disable=SC1091
. "$ceph_dir/env"
export BUNDLEFS_S3_TEST=1

say "starting Azurite for the az:// tests (scripts/azurite.sh start $az_dir)"
bash scripts/azurite.sh start "$az_dir"
# shellcheck disable=SC1091
. "$az_dir/env"

say "cargo test --all-targets --no-fail-fast"
# --no-fail-fast: a failing binary must not hide the others; the summary line is always printed.
status=0
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "\nall test binaries: %d passed, %d failed\n", p, f }' "$log"
stop_ceph
stop_azurite

# Fuzzing still runs after failed tests (its findings are worth seeing), but the run fails.
# Fuzz targets briefly, so a regression in a parser shows (the long runs are local: README).
fuzz_secs=${FUZZ_SECS:-30}
if ((fuzz_secs > 0)); then
    say "scripts/fuzz.sh $fuzz_secs"
    scripts/fuzz.sh "$fuzz_secs"
else
    say "fuzzing skipped (FUZZ_SECS=0)"
fi

if ((status != 0)); then
    echo "test.sh: cargo test failed (exit $status); see the failures above" >&2
    exit "$status"
fi
