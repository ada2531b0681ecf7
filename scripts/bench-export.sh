#!/usr/bin/env bash
# Export benchmark: bundlefs against MapProxy on a MapProxy-seeded cache of levels 0-7
# (21845 PNG tiles, Web Mercator).
#
# Usage: scripts/bench-export.sh [FIXTURE_DIR]
#   FIXTURE_DIR: an existing `scripts/mapproxy-fixture.sh FIXTURE_DIR 7` output (v2/, arcgis/);
#   seeded into a temporary folder when not given. Work folders are created beside it (same disk).
#   RUNS=3        best of RUNS for every timing
#   BIN=PATH      the bundlefs under test (default: cargo build --release of this repo)
#   BASELINE_BIN=PATH  also run every bundlefs job below with this bundlefs, interleaved run by run
#                 with BIN (this, baseline, this, baseline… each after dropping the page cache),
#                 and print both, ratio and verdict per job (time and peak RSS)
#   NOISE_PCT=5: see scripts/lib-bench.sh
#   e.g. BASELINE_BIN=/tmp/old/bundlefs BIN=target/release/bundlefs scripts/bench-export.sh /tmp/fx
#
# Times, best of RUNS each, page cache dropped before every run when running as root:
#   (a) MapProxy:  mapproxy-util export --type arcgis   compact-v2 -> exploded
#   (b) bundlefs:  bundlefs export --storage exploded   compact-v2 -> exploded (default: final sync)
#   (c) bundlefs:  compact-v2 -> compact-v1, exploded -> compact-v2, compact-v2 -> .tpkx
#   (d) MapProxy:  mapproxy-util export --type compact-v2 --force   into a copy of a cache holding
#                  other tiles at every address (bundlefs sample, levels 0-7)
#   (e) bundlefs:  bundlefs import --mode overwrite / merge         into a copy of the same cache
# and reports peak RSS (GNU time -v; the largest process for MapProxy's workers).
# With BASELINE_BIN, both binaries read the same inputs (the fixture, and the exploded tree, the
# .tpkx source and the import target written by BIN); MapProxy runs once per run.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
MAXLEVEL=7
TILES=21845 # 4^0 + ... + 4^7
RUNS=${RUNS:-3}
CONCURRENCY=2 # MapProxy workers; bundlefs uses one rayon thread per core (2 here)

# shellcheck source=scripts/lib-bench.sh
source "$repo/scripts/lib-bench.sh"

if [[ ! -x /usr/bin/time ]]; then
    say "installing GNU time (for peak RSS)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time
fi
command -v mapproxy-util >/dev/null || { echo "bench: mapproxy-util missing (apt-get install mapproxy python3-yaml)" >&2; exit 1; }

setup_bins

cleanup_dirs=()
cleanup() { ((${#cleanup_dirs[@]})) && rm -rf "${cleanup_dirs[@]}"; return 0; }
trap cleanup EXIT

if [[ -n ${1:-} ]]; then
    fixture=$(cd "$1" && pwd)
    [[ -d $fixture/v2/L07 ]] || { echo "bench: $fixture/v2 is not a level 0-7 MapProxy fixture" >&2; exit 1; }
    work=$(mktemp -d "$(dirname "$fixture")/bundlefs-bench.XXXXXX")
    cleanup_dirs+=("$work")
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/bundlefs-bench.XXXXXX")
    cleanup_dirs+=("$work")
    fixture=$work/fixture
    say "seeding MapProxy fixture (levels 0-$MAXLEVEL, $TILES tiles) in $fixture"
    t0=$(date +%s.%N)
    bash scripts/mapproxy-fixture.sh "$fixture" "$MAXLEVEL" png
    say "seeded in $(calc "$(date +%s.%N) - $t0") s"
fi
src=$fixture/v2
n=$(find "$fixture/arcgis" -type f | wc -l)
[[ $n == "$TILES" ]] || { echo "bench: fixture holds $n tiles, expected $TILES" >&2; exit 1; }

# MapProxy configuration: the v2 bundles as a read-only compact cache (the --export-from mode of
# mapproxy-fixture.sh writes it; run it once here, which also checks MapProxy reads the cache).
say "MapProxy config (scripts/mapproxy-fixture.sh --export-from)"
bash scripts/mapproxy-fixture.sh --export-from compact-v2 "$src" "$work/mp-check" "$MAXLEVEL" png
conf=$work/mp-check.mapproxy.yaml
mpwork=$work/mp-scratch
mkdir -p "$mpwork"
rm -rf "$work/mp-check"

can_drop=0
if [[ $(id -u) == 0 ]] && { sync; echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    can_drop=1
else
    say "not dropping the page cache (needs root and a writable /proc/sys/vm/drop_caches): warm-cache numbers"
fi

# measure [--from DIR] NAME DEST CMD...: best wall time of $RUNS runs into a fresh DEST (a fresh
# copy of DIR with --from), peak RSS of the best run, in BEST[NAME] and RSS[NAME].
# A bundlefs job names its binary @BIN@ and its destination @DEST@ in CMD: with BASELINE_BIN, each
# run is then made by this build into DEST, then by the baseline into DEST.base; every run's time
# and peak RSS are recorded per side (lib-bench.sh) for the comparison table.
declare -A BEST RSS
measure() {
    local from=""
    if [[ $1 == --from ]]; then from=$2; shift 2; fi
    local name=$1 dest0=$2; shift 2
    local i t0 t1 secs rss side dest arg cmd sides=(this)
    [[ " $* " == *" @BIN@ "* ]] && sides=("${SIDES[@]}")
    for ((i = 1; i <= RUNS; i++)); do
        ((${#sides[@]} > 1)) && mapfile -t sides < <(sides_of_run "$i")
        for side in "${sides[@]}"; do
            dest=$dest0
            [[ $side == base ]] && dest=$dest0.base
            cmd=()
            for arg; do
                case $arg in
                    @BIN@) cmd+=("${SIDE_BIN[$side]}") ;;
                    @DEST@) cmd+=("$dest") ;;
                    *) cmd+=("$arg") ;;
                esac
            done
            rm -rf "$dest"
            [[ -n $from ]] && cp -r "$from" "$dest"
            sync
            ((can_drop)) && echo 3 >/proc/sys/vm/drop_caches
            t0=$(date +%s.%N)
            (cd "$mpwork" && /usr/bin/time -v -o "$work/time.txt" "${cmd[@]}" >"$work/out.txt" 2>&1) || {
                cat "$work/out.txt" "$work/time.txt" >&2
                exit 1
            }
            t1=$(date +%s.%N)
            secs=$(calc "$t1 - $t0")
            rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
            say "$name$( ((${#sides[@]} > 1)) && echo " ($side)") run $i: ${secs} s, peak RSS ${rss} KiB"
            record "$name" "$side" "$secs"
            record "$name.rss" "$side" "$rss"
            [[ $side == this ]] || continue
            if [[ -z ${BEST[$name]:-} ]] || awk "BEGIN { exit !($secs < ${BEST[$name]}) }"; then
                BEST[$name]=$secs
                RSS[$name]=$rss
            fi
        done
    done
}

measure mapproxy "$work/mp-exploded" \
    mapproxy-util export -f "$conf" --source src --grid webmercator --levels "0..$MAXLEVEL" \
    --type arcgis --dest "$work/mp-exploded" -c "$CONCURRENCY"
measure bundlefs "$work/bf-exploded" @BIN@ export --storage exploded "$src" @DEST@

if diff -r -q "$work/mp-exploded" "$work/bf-exploded" >/dev/null; then
    identical=yes
else
    identical=NO
fi
if [[ -n $BASELINE_BIN ]]; then
    if diff -r -q "$work/mp-exploded" "$work/bf-exploded.base" >/dev/null; then
        identical_base=yes
    else
        identical_base=NO
    fi
fi

measure v2-to-v1 "$work/bf-v1" @BIN@ export --storage compact-v1 "$src" @DEST@
measure exploded-to-v2 "$work/bf-v2" @BIN@ export --storage compact-v2 "$work/bf-exploded" @DEST@

# A package needs a tiling scheme: the same bundles under a bundlefs-made Web Mercator conf.xml.
arcsrc=$work/arcgis-layout
"$BIN" create "$arcsrc" --levels "0-$MAXLEVEL" --format PNG >/dev/null
cp -r "$src"/L[0-9]* "$arcsrc/_alllayers/"
measure tpkx "$work/bf.tpkx" @BIN@ export --storage tpkx "$arcsrc" @DEST@

# Import: 21845 tiles into an existing cache of the same scheme holding other tiles at the same
# addresses (bundlefs's labelled sample, levels 0-7), so every tile is appended to an existing
# bundle and its index entry repointed. MapProxy: export --force into those bundles.
dest0=$work/sample-dest
"$BIN" sample "$dest0" --levels "0-$MAXLEVEL" >/dev/null
measure --from "$dest0" mp-import "$work/mp-into" \
    mapproxy-util export -f "$conf" --source src --grid webmercator --levels "0..$MAXLEVEL" \
    --type compact-v2 --force --dest "$work/mp-into/_alllayers" -c "$CONCURRENCY"
measure --from "$dest0" import-overwrite "$work/bf-into" @BIN@ import --mode overwrite "$arcsrc" @DEST@
# Merge decodes both tiles, composites and re-encodes each changed one (MapProxy has no merge).
measure --from "$dest0" import-merge "$work/bf-into" @BIN@ import --mode merge "$arcsrc" @DEST@

row() { # label key ratio
    local secs=${BEST[$2]}
    printf '| %-49s | %8.3f | %9.0f | %9s | %8s |\n' "$1" "$secs" "$(calc "$TILES / $secs")" \
        "$(calc "${RSS[$2]} / 1024" | cut -d. -f1) MiB" "$3"
}
ratio=$(printf '%.1fx' "$(calc "${BEST[mapproxy]} / ${BEST[bundlefs]}")")
echo
echo "Export of $TILES tiles (levels 0-$MAXLEVEL, PNG), best of $RUNS, page cache $( ((can_drop)) && echo dropped || echo warm ), $(nproc) cores"
printf '| %-49s | %8s | %9s | %9s | %8s |\n' "job" "seconds" "tiles/s" "peak RSS" "MP/bfs"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..51})" "----------" "-----------" "-----------" "----------"
row "(a) MapProxy  export --type arcgis      v2->expl" mapproxy ""
row "(b) bundlefs export --storage exploded v2->expl" bundlefs "$ratio"
row "(c) bundlefs export --storage compact-v1 v2->v1" v2-to-v1 ""
row "(c) bundlefs export --storage compact-v2 expl->v2" exploded-to-v2 ""
row "(c) bundlefs export --storage tpkx   v2->.tpkx" tpkx ""
ratio_import=$(printf '%.1fx' "$(calc "${BEST[mp-import]} / ${BEST[import-overwrite]}")")
row "(d) MapProxy  export --force into existing cache" mp-import ""
row "(e) bundlefs import --mode overwrite (same)" import-overwrite "$ratio_import"
row "(e) bundlefs import --mode merge (re-encodes)" import-merge ""
echo
echo "bundlefs exploded tree byte-identical to MapProxy's: $identical"
[[ -z $BASELINE_BIN ]] || echo "baseline's exploded tree byte-identical to MapProxy's: $identical_base"
compare_table "bundlefs export benchmark: this build against the baseline, best of $RUNS, page cache $( ((can_drop)) && echo dropped || echo warm )"
for job in "bundlefs:(b) export --storage exploded v2->expl" "v2-to-v1:(c) export --storage compact-v1 v2->v1" \
    "exploded-to-v2:(c) export --storage compact-v2 expl->v2" "tpkx:(c) export --storage tpkx v2->.tpkx" \
    "import-overwrite:(e) import --mode overwrite" "import-merge:(e) import --mode merge"; do
    compare_row "${job#*:}" "${job%%:*}" s
    compare_row "${job#*:}, peak RSS" "${job%%:*}.rss" KiB
done
