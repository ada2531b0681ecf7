#!/usr/bin/env bash
# Open-formats benchmark: moving a Compact V2 cache into MBTiles and back, bundlefs side by side
# with MapProxy (`mapproxy-util export`) between the same formats and with the floor, a plain
# SQLite bulk insert of the same tile bytes in one transaction (Python's sqlite3, the bytes read
# into memory first, so only the insert is timed).
#
#   scripts/bench-formats.sh
#   MAXLEVEL=8   levels 0..MAXLEVEL of the synthetic cache (8: 87,381 tiles of 256 px, ~3.5 KB)
#   RUNS=3       best of RUNS for every timing
#   BIN=PATH     the bundlefs under test (default: cargo build --release of this repo)
#
# Rows (seconds, best of RUNS; the page cache dropped before each run when running as root):
#   (a) bundlefs export            compact-v2 -> .mbtiles
#   (b) MapProxy mapproxy-util export --type mbtile   compact-v2 -> .mbtiles
#   (c) floor: sqlite3 bulk insert of the same rows, one transaction, synchronous=OFF
#   (d) bundlefs export            .mbtiles -> compact-v2
#   (e) MapProxy mapproxy-util export --type compact-v2   .mbtiles -> compact-v2
#   (f) bundlefs export            compact-v2 -> .gpkg
#   (g) MapProxy mapproxy-util export --type geopackage   compact-v2 -> .gpkg
#   (h) bundlefs export            compact-v2 -> .pmtiles (MapProxy writes no PMTiles)
#   (i) bundlefs export            compact-v2 -> XYZ folder (--storage xyz)
#   (j) MapProxy mapproxy-util export --type tms          compact-v2 -> z/x/y folder
# and the ratios MapProxy/bundlefs (goal >= 10) and bundlefs/floor (goal <= 1.5), with the peak
# RSS of each bundlefs job (tiles are streamed bundle by bundle, not held).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '==> %s\n' "$*" >&2; }

MAXLEVEL=${MAXLEVEL:-8}
RUNS=${RUNS:-3}
work=$(mktemp -d /tmp/bundlefs-bench-formats-XXXXXX)
trap 'rm -rf "$work"' EXIT

if [[ -z ${BIN:-} ]]; then
    say "cargo build --release --bin bundlefs --example synth"
    cargo build --release --quiet --bin bundlefs --example synth
    BIN=$repo/target/release/bundlefs
fi
SYNTH=${SYNTH:-$(dirname "$BIN")/examples/synth}
[[ -x $BIN && -x $SYNTH ]] || { echo "bench: BIN=$BIN or SYNTH=$SYNTH missing" >&2; exit 1; }
command -v mapproxy-util >/dev/null || { echo "bench: mapproxy-util missing (apt mapproxy)" >&2; exit 1; }

drop() { if [[ $(id -u) == 0 ]]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }

say "synthesizing levels 0-$MAXLEVEL ($SYNTH)"
"$SYNTH" "$work/src" "$MAXLEVEL" 256 >/dev/null

# MapProxy reads the same bundles as a compact-v2 cache on a grid like the cache's (origin nw).
nlevels=$((MAXLEVEL + 1))
{
    printf 'services:\n  demo:\nlayers:\n  - name: src\n    title: src\n    sources: [src]\n'
    printf 'globals:\n  cache:\n    base_dir: %s/mp-base\n    lock_dir: %s/mp-locks\n' "$work" "$work"
    printf 'grids:\n  nw:\n    base: GLOBAL_WEBMERCATOR\n    origin: nw\n    num_levels: %d\n' "$nlevels"
    printf 'caches:\n  src:\n    grids: [nw]\n    sources: []\n'
    printf '    cache:\n      type: compact\n      version: 2\n      directory: %s/src/_alllayers\n' "$work"
    printf '  mbt:\n    grids: [GLOBAL_WEBMERCATOR]\n    sources: []\n'
    printf '    cache:\n      type: mbtiles\n      filename: %s/mp.mbtiles\n' "$work"
} >"$work/mapproxy.yaml"

# best-of-RUNS seconds and peak RSS (KiB) of a command; runs `prep` before each run.
best() {
    local prep=$1
    shift
    local best_s="" best_rss=""
    for ((i = 0; i < RUNS; i++)); do
        eval "$prep"
        drop
        /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" ||
            { cat "$work/err" >&2; exit 1; }
        local s rss
        read -r s rss <"$work/time"
        if [[ -z $best_s ]] || awk -v a="$s" -v b="$best_s" 'BEGIN { exit !(a < b) }'; then
            best_s=$s best_rss=$rss
        fi
    done
    echo "$best_s $best_rss"
}

say "(a) bundlefs export -> .mbtiles"
read -r a a_rss <<<"$(best "rm -f $work/b.mbtiles" "$BIN" export "$work/src" "$work/b.mbtiles")"
say "(b) mapproxy-util export --type mbtile"
read -r b _ <<<"$(best "rm -f $work/mp-out.mbtiles" mapproxy-util export -f "$work/mapproxy.yaml" \
    --source src --grid nw --dest "$work/mp-out.mbtiles" --type mbtile --levels "0..$MAXLEVEL")"
say "(c) floor: sqlite3 bulk insert of the same rows"
floor() {
    python3 - "$work/b.mbtiles" "$work/floor.mbtiles" <<'PY'
import os, sqlite3, sys, time
src, dst = sys.argv[1], sys.argv[2]
rows = sqlite3.connect(src).execute(
    "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles").fetchall()
if os.path.exists(dst):
    os.remove(dst)
t = time.perf_counter()
d = sqlite3.connect(dst)
d.execute("PRAGMA synchronous=OFF")
d.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
d.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
with d:
    d.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", rows)
d.close()
print(f"{time.perf_counter() - t:.3f}")
PY
}
c=""
for ((i = 0; i < RUNS; i++)); do
    drop
    s=$(floor)
    if [[ -z $c ]] || awk -v a="$s" -v b="$c" 'BEGIN { exit !(a < b) }'; then c=$s; fi
done
say "(d) bundlefs export .mbtiles -> compact-v2"
read -r d d_rss <<<"$(best "rm -rf $work/back" "$BIN" export "$work/b.mbtiles" "$work/back" --storage compact-v2)"
say "(e) mapproxy-util export --type compact-v2 from the MBTiles"
cp "$work/b.mbtiles" "$work/mp.mbtiles"
read -r e _ <<<"$(best "rm -rf $work/mp-back" mapproxy-util export -f "$work/mapproxy.yaml" \
    --source mbt --grid GLOBAL_WEBMERCATOR --dest "$work/mp-back" --type compact-v2 --levels "0..$MAXLEVEL")"
say "(f) bundlefs export -> .gpkg"
read -r f f_rss <<<"$(best "rm -f $work/b.gpkg" "$BIN" export "$work/src" "$work/b.gpkg")"
say "(g) mapproxy-util export --type geopackage"
read -r g _ <<<"$(best "rm -f $work/mp-out.gpkg" mapproxy-util export -f "$work/mapproxy.yaml" \
    --source src --grid nw --dest "$work/mp-out.gpkg" --type geopackage --levels "0..$MAXLEVEL")"
say "(h) bundlefs export -> .pmtiles"
read -r h h_rss <<<"$(best "rm -f $work/b.pmtiles" "$BIN" export "$work/src" "$work/b.pmtiles")"
say "(i) bundlefs export --storage xyz"
read -r xi i_rss <<<"$(best "rm -rf $work/b-xyz" "$BIN" export "$work/src" "$work/b-xyz" --storage xyz)"
say "(j) mapproxy-util export --type tms"
read -r j _ <<<"$(best "rm -rf $work/mp-tms" mapproxy-util export -f "$work/mapproxy.yaml" \
    --source src --grid nw --dest "$work/mp-tms" --type tms --levels "0..$MAXLEVEL")"

tiles=$("$BIN" info "$work/src" | awk '/^total/ { print $3 }')
# Each job must have moved every tile, or its time means nothing.
count() { "$BIN" info "$1" | awk '/^total/ { print $3 }'; }
for out in "$work/b.mbtiles" "$work/back" "$work/mp-out.mbtiles" "$work/mp-back" \
    "$work/b.gpkg" "$work/b.pmtiles" "$work/b-xyz"; do
    n=$(count "$out")
    [[ $n == "$tiles" ]] || { echo "bench: $out holds $n tiles, not $tiles" >&2; exit 1; }
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
printf '\n%s tiles (levels 0-%s, 256 px), best of %s\n\n' "$tiles" "$MAXLEVEL" "$RUNS"
printf '| job | seconds | tiles/s | peak RSS | ratio |\n|---|---|---|---|---|\n'
printf '| (a) bundlefs export compact-v2 -> .mbtiles | %s | %.0f | %s KiB | |\n' "$a" "$(ratio "$tiles" "$a")" "$a_rss"
printf '| (b) MapProxy export --type mbtile | %s | %.0f | | MapProxy/bundlefs %s |\n' "$b" "$(ratio "$tiles" "$b")" "$(ratio "$b" "$a")"
printf '| (c) floor: SQLite bulk insert, one transaction | %s | %.0f | | bundlefs/floor %s |\n' "$c" "$(ratio "$tiles" "$c")" "$(ratio "$a" "$c")"
printf '| (d) bundlefs export .mbtiles -> compact-v2 | %s | %.0f | %s KiB | |\n' "$d" "$(ratio "$tiles" "$d")" "$d_rss"
printf '| (e) MapProxy export --type compact-v2 from .mbtiles | %s | %.0f | | MapProxy/bundlefs %s |\n' "$e" "$(ratio "$tiles" "$e")" "$(ratio "$e" "$d")"
printf '| (f) bundlefs export compact-v2 -> .gpkg | %s | %.0f | %s KiB | |\n' "$f" "$(ratio "$tiles" "$f")" "$f_rss"
printf '| (g) MapProxy export --type geopackage | %s | %.0f | | MapProxy/bundlefs %s |\n' "$g" "$(ratio "$tiles" "$g")" "$(ratio "$g" "$f")"
printf '| (h) bundlefs export compact-v2 -> .pmtiles | %s | %.0f | %s KiB | |\n' "$h" "$(ratio "$tiles" "$h")" "$h_rss"
printf '| (i) bundlefs export compact-v2 -> xyz folder | %s | %.0f | %s KiB | |\n' "$xi" "$(ratio "$tiles" "$xi")" "$i_rss"
printf '| (j) MapProxy export --type tms | %s | %.0f | | MapProxy/bundlefs %s |\n' "$j" "$(ratio "$tiles" "$j")" "$(ratio "$j" "$xi")"
