#!/usr/bin/env bash
# Build reference Esri tile caches with MapProxy (no network) for bundlefs
# interop tests and benchmarks.
#
# Usage:
#   scripts/mapproxy-fixture.sh OUTDIR MAXLEVEL [png|jpeg]
#       OUTDIR/mapproxy.yaml, OUTDIR/seed.yaml    the configuration used
#       OUTDIR/v2/Lnn/RrrrrCcccc.bundle           Compact V2 (mapproxy-seed)
#       OUTDIR/v1/Lnn/RrrrrCcccc.bundle + .bundlx Compact V1 (copied from v2)
#       OUTDIR/arcgis/Lnn/Rrrrrrrrr/Ccccccccc.png|.jpeg  exploded (copied from v2)
#       OUTDIR/*.log                              MapProxy output
#     (MapProxy leaves RrrrrCcccc.lck lock files beside the bundles.)
#   scripts/mapproxy-fixture.sh --export-from compact-v1|compact-v2 SRCDIR DESTDIR MAXLEVEL [png|jpeg]
#       Read an existing compact cache laid out SRCDIR/Lnn/*.bundle (no conf.xml
#       needed; grid below) with MapProxy and write it as an exploded ArcGIS
#       layout DESTDIR/Lnn/Rrrrrrrrr/Ccccccccc.png|.jpeg. Config and log go to
#       DESTDIR.mapproxy.yaml and DESTDIR.log. Missing tiles are not written.
#
# Grid: EPSG:3857, origin nw (row 0 at the top, as ArcGIS), 256 px tiles,
# level 0 resolution 156543.03392800014 halving per level, whole world.
# Tiles come from MapProxy's built-in debug source (labelled tiles).
# Requires Debian packages: mapproxy (1.15), python3-yaml.
set -euo pipefail

CONCURRENCY=2
NLEVELS=24 # resolutions listed in the grid (levels 0..23)
PY=/usr/bin/python3; [[ -x $PY ]] || PY=python3

usage() {
    sed -n '5,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() { echo "mapproxy-fixture: $*" >&2; exit 1; }

# run LOG CMD...: run quietly, append output to LOG, print LOG on failure.
run() {
    local log=$1; shift
    echo "+ $*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        echo "mapproxy-fixture: command failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

check_level() {
    [[ $1 =~ ^[0-9]+$ ]] && (( $1 < NLEVELS )) ||
        die "MAXLEVEL must be 0..$((NLEVELS - 1)), got '$1'"
}

mime_of() {
    case $1 in
        png) echo image/png ;;
        jpeg|jpg) echo image/jpeg ;;
        *) die "FORMAT must be png or jpeg, got '$1'" ;;
    esac
}

# globals_yaml WORKDIR: keep MapProxy's scratch (tile locks) out of the caches.
globals_yaml() {
    cat <<EOF
globals:
  cache:
    base_dir: '$1/cache_data'
    lock_dir: '$1/cache_data/tile_locks'
    tile_lock_dir: '$1/cache_data/tile_locks'
EOF
}

# grid_yaml: the grids section (ArcGIS/Google Web Mercator tiling scheme).
# The bbox is MapProxy's exact world extent; 256 * res(0) is 1e-5 m smaller,
# which MapProxy floors to one tile (grid 2^z x 2^z at every level).
grid_yaml() {
    cat <<'EOF'
grids:
  webmercator:
    srs: 'EPSG:3857'
    bbox: [-20037508.342789244, -20037508.342789244, 20037508.342789244, 20037508.342789244]
    bbox_srs: 'EPSG:3857'
    origin: nw
    tile_size: [256, 256]
    res:
EOF
    "$PY" - "$NLEVELS" <<'EOF'
import sys
for i in range(int(sys.argv[1])):
    print("      - %r   # L%02d" % (156543.03392800014 / 2**i, i))
EOF
}

# cache_yaml NAME SOURCE TYPE DIR: one cache definition (TYPE: compact-v1,
# compact-v2 or arcgis; SOURCE empty for none).
cache_yaml() {
    local name=$1 source=$2 type=$3 dir=$4
    cat <<EOF
  $name:
    sources: [$source]
    grids: [webmercator]
    format: $mime
    cache:
EOF
    case $type in
        compact-v[12]) printf '      type: compact\n      version: %s\n' "${type#compact-v}" ;;
        arcgis) printf '      type: file\n      directory_layout: arcgis\n' ;;
    esac
    # Without directory: MapProxy nests the cache in <base_dir>/<name>/<grid>/.
    printf "      directory: '%s'\n" "$dir"
}

# copy_caches CONF SEEDCONF LOG SRC MAXLEVEL NAME:TYPE:DIR...
# Copy cache SRC into the destination caches (defined in CONF with
# sources: [SRC]), without fetching tiles missing from SRC.
# PNG: mapproxy-util export (bytes pass through unchanged).
# JPEG: export can't: its destination cache has no format option and defaults
# to image/png, so it re-encodes every JPEG tile as a paletted PNG named .png.
# So seed the destination caches (sources: [SRC], format image/jpeg) instead;
# SRC must then have no sources of its own or be fully seeded.
copy_caches() {
    local conf=$1 seedconf=$2 log=$3 src=$4 maxlevel=$5; shift 5
    local spec name type dir names=""
    for spec in "$@"; do
        IFS=: read -r name type dir <<<"$spec"
        names+=${names:+, }$name
        if [[ $mime == image/png ]]; then
            run "$log" mapproxy-util export -f "$conf" --source "$src" \
                --grid webmercator --levels "0..$maxlevel" --type "$type" \
                --dest "$dir" -c "$CONCURRENCY"
        fi
    done
    if [[ $mime != image/png ]]; then
        cat >"$seedconf" <<EOF
seeds:
  copy:
    caches: [$names]
    grids: [webmercator]
    levels:
      to: $maxlevel
EOF
        run "$log" mapproxy-seed -f "$conf" -s "$seedconf" -c "$CONCURRENCY" --seed copy
    fi
}

if [[ ${1:-} == --export-from ]]; then
    (( $# == 5 || $# == 6 )) || usage
    kind=$2 src=$3 dest=$4 maxlevel=$5 fmt=${6:-png}
    case $kind in
        compact-v1|compact-v2) ;;
        *) die "--export-from takes compact-v1 or compact-v2, got '$kind'" ;;
    esac
    check_level "$maxlevel"
    mime=$(mime_of "$fmt")
    [[ -d $src ]] || die "no such directory: $src"
    src=$(cd "$src" && pwd)
    mkdir -p "$(dirname "$dest")"
    dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
    work=$dest.mapproxy-tmp log=$dest.log
    rm -rf "$dest" "$work" "$dest.seed.yaml"
    : >"$log"
    {
        globals_yaml "$work"
        grid_yaml
        echo "sources: {}"
        echo "caches:"
        cache_yaml src "" "$kind" "$src"          # the existing bundles, read-only
        cache_yaml arcgis src arcgis "$dest"      # JPEG path only
    } >"$dest.mapproxy.yaml"
    mkdir -p "$work"
    (cd "$work" && copy_caches "$dest.mapproxy.yaml" "$dest.seed.yaml" "$log" src \
        "$maxlevel" "arcgis:arcgis:$dest")
    rm -rf "$work"
    exit 0
fi

(( $# == 2 || $# == 3 )) || usage
out=$1 maxlevel=$2 fmt=${3:-png}
check_level "$maxlevel"
mime=$(mime_of "$fmt")
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/v1" "$out/v2" "$out/arcgis" "$out/cache_data"
rm -f "$out"/*.log "$out/copy.yaml"

{
    globals_yaml "$out"
    grid_yaml
    printf 'sources:\n  debug:\n    type: debug\n'
    echo "caches:"
    cache_yaml v2 debug compact-v2 "$out/v2"
    # v1 and arcgis are copies of v2; these two definitions serve the JPEG path
    # (PNG uses mapproxy-util export --type compact-v1|arcgis --source v2).
    cache_yaml v1 v2 compact-v1 "$out/v1"
    cache_yaml arcgis v2 arcgis "$out/arcgis"
} >"$out/mapproxy.yaml"

cat >"$out/seed.yaml" <<EOF
seeds:
  world:
    caches: [v2]
    grids: [webmercator]
    levels:
      to: $maxlevel
EOF

(
    cd "$out"
    run "$out/seed.log" mapproxy-seed -f "$out/mapproxy.yaml" -s "$out/seed.yaml" \
        -c "$CONCURRENCY" --seed world
    copy_caches "$out/mapproxy.yaml" "$out/copy.yaml" "$out/copy.log" v2 "$maxlevel" \
        "v1:compact-v1:$out/v1" "arcgis:arcgis:$out/arcgis"
)
rm -rf "$out/cache_data"
