#!/usr/bin/env bash
# Render benchmark: time per tile through bundlefs's renderer against the source's own time, tile by
# tile and in supertiles, side by side in one run.
#
# Usage: scripts/bench-render.sh            (LEVEL=4 RUNS=3 by default: 256 tiles per run;
#                                            PROFILE=dev for the debug build)
#
# The source is a real WMS: MapServer (Debian cgi-mapserver) serving a generated world raster in
# EPSG:4326, reprojected to the Web Mercator tiles of an empty cache, run as CGI behind
# the tests' CGI runner (examples/cgi_serve.rs) on 127.0.0.1. For the level's tiles it times,
# best of RUNS each:
#   (a) source:    curl fetching the very GetMap URLs bundlefs sent (taken from its debug log),
#                  one curl process, one after another
#   (b) bundlefs:  bundlefs render --levels LEVEL --jobs 1 --supertile 0 (tile by tile, like (a))
#   (c) bundlefs:  the same with --jobs 2
#   (d) supertiles: bundlefs render --jobs 1 with the default supertile (4096 px: level 4 in one
#                  request)
#   (e) supertiles: bundlefs render --jobs 2 --supertile 1024 (16 tiles a request)
#   (f) the mount: `bundlefs mount --source wms:… --supertile 0` freshly mounted each run (no tile
#                  in memory), then one `cat` of every tile path of the level, one after another
#   (g) the same mount with its default supertile (1024 px)
# and prints ms/tile, the ratio to (a) and the speed-up of supertiles over tile by tile. Every
# supertile run (d, e, g) also asks MapServer's 1.3.0 GetCapabilities once, for its maximum image
# size (the mapfile names its online resource so MapServer can answer; no MAXSIZE: 4096); that
# request is inside the timings.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
LEVEL=${LEVEL:-4}
RUNS=${RUNS:-3}
MAPSERV=/usr/lib/cgi-bin/mapserv

say() { printf '==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }
now() { date +%s.%N; }

[[ -x $MAPSERV ]] || { echo "bench: $MAPSERV missing (apt-get install cgi-mapserver)" >&2; exit 1; }
command -v gdal_translate >/dev/null || { echo "bench: gdal_translate missing (apt-get install gdal-bin)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench: curl missing" >&2; exit 1; }

work=$(mktemp -d /tmp/bench-render.XXXXXX)
srv_pid=
cleanup() {
    exec 3>&- 2>/dev/null || true
    [[ -n $srv_pid ]] && kill "$srv_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

PROFILE=${PROFILE:-release} # PROFILE=dev: the debug build (dependencies at opt-level 2)
if [[ $PROFILE == release ]]; then
    say "cargo build --release"
    cargo build --release --quiet --bin bundlefs --example cgi_serve
    out=$repo/target/release
else
    say "cargo build"
    cargo build --quiet --bin bundlefs --example cgi_serve
    out=$repo/target/debug
fi
BIN=$out/bundlefs

say "dataset: 360x180 world raster (GeoTIFF), mapfile, MapServer config"
python3 - "$work/world.png" <<'EOF'
import struct, sys, zlib
w, h = 360, 180
rows = b"".join(
    b"\x00" + bytes(v for x in range(w) for v in ((x * 255) // 359, (y * 255) // 179, ((x // 10 + y // 10) % 2) * 200))
    for y in range(h))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
EOF
gdal_translate -q -of GTiff -a_srs EPSG:4326 -a_ullr -180 90 180 -90 "$work/world.png" "$work/world.tif"
cat >"$work/world.map" <<EOF
MAP
  NAME "bench"
  EXTENT -180 -90 180 90
  SIZE 256 256
  PROJECTION "init=epsg:4326" END
  OUTPUTFORMAT NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" END
  WEB METADATA "wms_title" "bench" "wms_srs" "EPSG:4326 EPSG:3857" "wms_enable_request" "*"
    "wms_onlineresource" "http://127.0.0.1/cgi-bin/mapserv?map=WORLD&" END END
  LAYER
    NAME "world"
    TYPE RASTER
    STATUS ON
    DATA "$work/world.tif"
    PROJECTION "init=epsg:4326" END
  END
END
EOF
cat >"$work/mapserver.conf" <<EOF
CONFIG
  ENV
    MS_MAP_PATTERN "^$work/"
  END
  MAPS
    WORLD "$work/world.map"
  END
END
EOF
# The CGI runner of the tests (examples/cgi_serve.rs): keep-alive, one thread per connection.
mkfifo "$work/stdin"
"$out/examples/cgi_serve" "$work/port" "$MAPSERV" \
    "MAPSERVER_CONFIG_FILE=$work/mapserver.conf" <"$work/stdin" 2>"$work/server.log" &
srv_pid=$!
exec 3>"$work/stdin" # the server stops when this closes (at exit)
for _ in $(seq 50); do [[ -s $work/port ]] && break; sleep 0.1; done
port=$(cat "$work/port")
base="http://127.0.0.1:$port/cgi-bin/mapserv?map=WORLD&LAYERS=world"
for _ in $(seq 50); do
    curl -sf -o /dev/null "$base&SERVICE=WMS&REQUEST=GetCapabilities" && break
    sleep 0.1
done

"$BIN" create "$work/cache" --levels "0-$LEVEL" >/dev/null
render() { # jobs, supertile px ("" for the default), log file
    RUST_LOG=bundlefs::render::http=debug "$BIN" render "$work/cache" --source "wms:$base" \
        --levels "$LEVEL" --jobs "$1" --timeout 60 --retries 0 --overwrite \
        ${2:+--supertile "$2"} 2>"$3" >"$work/render.out"
    grep -q " 0 failed" "$work/render.out" || { echo "bench: renders failed" >&2; cat "$work/render.out" >&2; exit 1; }
}

say "warm-up and request list"
render 1 0 "$work/first.log"
grep -o 'GET http[^ ]*' "$work/first.log" | sed 's/^GET //' >"$work/urls.txt"
tiles=$(wc -l <"$work/urls.txt")
[[ $tiles -gt 0 ]] || { echo "bench: no requests logged" >&2; cat "$work/render.out" "$work/first.log" >&2; exit 1; }
grep -q " 0 failed" "$work/render.out" || { echo "bench: renders failed" >&2; cat "$work/render.out" >&2; exit 1; }
sed 's/.*/url = "&"\noutput = "\/dev\/null"/' "$work/urls.txt" >"$work/curl.conf"

best() { # command...
    local b=
    for _ in $(seq "$RUNS"); do
        local t0 t1 d
        t0=$(now)
        "$@"
        t1=$(now)
        d=$(calc "$t1 - $t0")
        if [[ -z $b ]] || awk "BEGIN { exit !($d < $b) }"; then b=$d; fi
    done
    echo "$b"
}

say "timing $tiles tiles of level $LEVEL, best of $RUNS"
t_src=$(best curl -sf --config "$work/curl.conf")
t_one=$(best render 1 0 /dev/null)
t_two=$(best render 2 0 /dev/null)
t_sup=$(best render 1 "" /dev/null)
calls_sup=$(grep -o '[0-9]* source calls' "$work/render.out")
t_sup2=$(best render 2 1024 /dev/null)
calls_sup2=$(grep -o '[0-9]* source calls' "$work/render.out")

# (d) through the mount: a fresh mount per run (so nothing is in the renderer's memory), timed
# from the first to the last tile read.
mkdir -p "$work/mnt"
side=$((1 << LEVEL))
paths=()
for ((r = 0; r < side; r++)); do
    for ((c = 0; c < side; c++)); do
        paths+=("$(printf '%s/mnt/_alllayers/L%02d/R%08x/C%08x.png' "$work" "$LEVEL" "$r" "$c")")
    done
done
# The bundles must lack the tiles for the mount to render them.
rm -rf "$work/cache"
"$BIN" create "$work/cache" --levels "0-$LEVEL" >/dev/null
mount_cat() { # supertile px
    local best_d=
    for _ in $(seq "$RUNS"); do
        "$BIN" mount "$work/cache" "$work/mnt" --source "wms:$base" --render-timeout 60 \
            --supertile "$1" --daemon >/dev/null
        t0=$(now)
        cat "${paths[@]}" >/dev/null
        d=$(calc "$(now) - $t0")
        fusermount3 -u "$work/mnt"
        if [[ -z $best_d ]] || awk "BEGIN { exit !($d < $best_d) }"; then best_d=$d; fi
    done
    echo "$best_d"
}
t_mnt=$(mount_cat 0)
t_mnt_sup=$(mount_cat 1024)

printf '\n%-46s %9s %9s %7s\n' "level $LEVEL, $tiles tiles (MapServer WMS, CGI)" "total s" "ms/tile" "ratio"
printf '%-46s %9s %9s %7s\n' "(a) source: curl, same URLs, one connection" "$t_src" "$(calc "$t_src * 1000 / $tiles")" "1.00"
printf '%-46s %9s %9s %7s\n' "(b) bundlefs render --jobs 1" "$t_one" "$(calc "$t_one * 1000 / $tiles")" "$(calc "$t_one / $t_src")"
printf '%-46s %9s %9s %7s\n' "(c) bundlefs render --jobs 2" "$t_two" "$(calc "$t_two * 1000 / $tiles")" "$(calc "$t_two / $t_src")"
printf '%-46s %9s %9s %7s\n' "(d) render --jobs 1, supertile 4096 (default)" "$t_sup" "$(calc "$t_sup * 1000 / $tiles")" "$(calc "$t_sup / $t_src")"
printf '%-46s %9s %9s %7s\n' "(e) render --jobs 2 --supertile 1024" "$t_sup2" "$(calc "$t_sup2 * 1000 / $tiles")" "$(calc "$t_sup2 / $t_src")"
printf '%-46s %9s %9s %7s\n' "(f) cat through the mount, --supertile 0" "$t_mnt" "$(calc "$t_mnt * 1000 / $tiles")" "$(calc "$t_mnt / $t_src")"
printf '%-46s %9s %9s %7s\n' "(g) cat through the mount, supertile 1024" "$t_mnt_sup" "$(calc "$t_mnt_sup * 1000 / $tiles")" "$(calc "$t_mnt_sup / $t_src")"
printf '\nrequests: (d) %s, (e) %s\n' "$calls_sup" "$calls_sup2"
printf 'overhead of the renderer per tile, (b)-(a): %s ms\n' "$(calc "($t_one - $t_src) * 1000 / $tiles")"
printf 'supertile speed-up: (b)/(d) %sx, (c)/(e) %sx, mount (f)/(g) %sx\n' \
    "$(calc "$t_one / $t_sup")" "$(calc "$t_two / $t_sup2")" "$(calc "$t_mnt / $t_mnt_sup")"
