#!/usr/bin/env bash
# Per-tile read latency of a cache in an object store through a bundlefs mount (and through
# `bundlefs serve` over HTTP), side by side with
# the floor: one raw range GET of the same bytes (the tile and its 4-byte size prefix, as bundlefs
# reads them) by curl on one kept-alive connection. Against the Ceph cluster of
# scripts/ceph-cluster.sh (started and stopped here unless CEPH_ENV=DIR/env names a running one).
#
#   scripts/bench-objstore.sh                  build --release, synthesize, upload, measure
#   BIN=target/release/bundlefs SYNTH=… scripts/bench-objstore.sh
#   MAXLEVEL=8 WARM=20 scripts/bench-objstore.sh
#
# The cache: examples/synth.rs, levels 0..MAXLEVEL (default 8: 12 bundles, 87,381 tiles of
# 256 px, ~2-3 KB each), exported into s3://BUCKET/bench-PID with `bundlefs export`.
# Per bundle, through a fresh read-only mount (--recheck 3600: no HEAD rechecks in the way):
#   cold bundle   the first tile read of the bundle: lookups of its row folder and name (the
#                 bundle's index is fetched, one range GET of 128 KiB) and the tile (one GET);
#   warm index    WARM (default 20) further tiles of that bundle: lookups + one range GET each;
#   kernel cache  the same WARM tiles again: served by the kernel, the daemon not called;
#   disk cache    after an unmount, a fresh mount on the same --cache-dir: each bundle's cold tile
#                 again, its index read from the disk cache (one tile GET).
# Each figure is open+read+close of one file (python, perf_counter), median over the samples;
# the floor is curl's time_total for the same byte ranges, median. Ratio = mount / floor.
# Through `bundlefs serve` (over HTTP on loopback, the same samples, a fresh serve): curl's
# time_total of the tile URL, median; ratio serve / floor. Serve's requests and the floor's go
# in turns through one curl (a kept-alive connection to each), so both are timed alike and at once.
# RTT_MS=N: the latency part only, through a TCP proxy on 127.0.0.1 that holds every request N ms
# before passing it to the gateway (a store farther away than loopback; the floor's curl goes
# through the same proxy). The throughput part is then skipped.
# Needs: curl >= 7.75 (--aws-sigv4), python3, fusermount3. Output: a table on standard output.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '==> %s\n' "$*" >&2; }

MAXLEVEL=${MAXLEVEL:-8}
WARM=${WARM:-20}
work=$(mktemp -d /tmp/bundlefs-bench-objstore-XXXXXX)
mnt=$work/mnt
ceph_dir=
mount_pid=
proxy_pid=
cleanup() {
    [[ -z $proxy_pid ]] || kill "$proxy_pid" 2>/dev/null || true
    [[ -z ${serve_pid:-} ]] || kill "$serve_pid" 2>/dev/null || true
    if [[ -n $mount_pid ]]; then
        fusermount3 -u "$mnt" 2>/dev/null || true
        wait "$mount_pid" 2>/dev/null || true
    fi
    if [[ -n $ceph_dir ]]; then
        bash scripts/ceph-cluster.sh stop "$ceph_dir" >/dev/null 2>&1 || true
        rm -rf "$ceph_dir"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z ${BIN:-} ]]; then
    say "cargo build --release --bin bundlefs --example synth"
    cargo build --release --quiet --bin bundlefs --example synth
    BIN=$repo/target/release/bundlefs
fi
SYNTH=${SYNTH:-$(dirname "$BIN")/examples/synth}
[[ -x $BIN && -x $SYNTH ]] || { echo "bench: BIN=$BIN or SYNTH=$SYNTH missing" >&2; exit 1; }

if [[ -n ${CEPH_ENV:-} ]]; then
    # shellcheck disable=SC1090
    . "$CEPH_ENV"
else
    ceph_dir=$(mktemp -d /tmp/bundlefs-bench-ceph-XXXXXX)
    say "starting Ceph (scripts/ceph-cluster.sh start $ceph_dir)"
    bash scripts/ceph-cluster.sh start "$ceph_dir" >&2
    # shellcheck disable=SC1091
    . "$ceph_dir/env"
fi

RTT_MS=${RTT_MS:-0}
read_endpoint=$AWS_ENDPOINT_URL
mount_extra=()
if ((RTT_MS > 0)); then
    hostport=${AWS_ENDPOINT_URL#http://}
    hostport=${hostport%/}
    python3 -u - "${hostport%:*}" "${hostport##*:}" "$RTT_MS" >"$work/proxy.port" <<'PY' &
import socket, sys, threading, time
host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print(ls.getsockname()[1], flush=True)
METHODS = (b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ")
def pump(src, dst, hold):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if hold and b.startswith(METHODS):
                time.sleep(delay)
            dst.sendall(b)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
while True:
    c, _ = ls.accept()
    u = socket.create_connection((host, port))
    for s in (c, u):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=pump, args=(c, u, True), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, False), daemon=True).start()
PY
    proxy_pid=$!
    for _ in $(seq 100); do [[ -s $work/proxy.port ]] && break; sleep 0.05; done
    read_endpoint=http://127.0.0.1:$(head -1 "$work/proxy.port")
    mount_extra=(-o "endpoint=$read_endpoint")
    say "reads go through a proxy holding each request $RTT_MS ms ($read_endpoint)"
fi

say "synthesizing levels 0-$MAXLEVEL (256 px tiles)"
"$SYNTH" "$work/src" "$MAXLEVEL" 256 >/dev/null
url=s3://$BUNDLEFS_S3_BUCKET/bench-$$-$(date +%s)
say "export into $url"
t0=$(date +%s.%N)
"$BIN" export --storage compact-v2 "$work/src" "$url" >/dev/null
t1=$(date +%s.%N)
upload_s=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
bytes=$(du -sb "$work/src/_alllayers" | cut -f1)

# The samples: per bundle one cold tile and WARM others, with their byte ranges in the object.
python3 - "$work/src/_alllayers" "$WARM" >"$work/samples" <<'EOF'
import os, random, struct, sys
root, warm = sys.argv[1], int(sys.argv[2])
random.seed(42)
for lv in sorted(os.listdir(root)):
    level = int(lv[1:])
    for name in sorted(os.listdir(os.path.join(root, lv))):
        if not name.endswith(".bundle"):
            continue
        row0, col0 = int(name[1:5], 16), int(name[6:10], 16)
        with open(os.path.join(root, lv, name), "rb") as f:
            f.seek(64)
            index = f.read(128 * 128 * 8)
        slots = []
        for i in range(128 * 128):
            (v,) = struct.unpack_from("<Q", index, 8 * i)
            off, size = v & ((1 << 40) - 1), v >> 40
            if size:
                slots.append((i // 128, i % 128, off, size))
        picks = random.sample(slots, min(len(slots), warm + 1))
        for k, (r, c, off, size) in enumerate(picks):
            kind = "cold" if k == 0 else "warm"
            rel = f"{lv}/R{row0 + r:08x}/C{col0 + c:08x}.png"
            key = f"{lv}/{name}"
            print(kind, rel, key, off - 4, off + size - 1)
EOF
n_bundles=$(grep -c '^cold' "$work/samples")
say "$n_bundles bundles, $(wc -l <"$work/samples") sampled tiles"

say "mounting $url (read-only, --recheck 3600)"
mkdir -p "$mnt"
mount_at() {
    "$BIN" mount "$url" "$mnt" --recheck 3600 --cache-dir "$work/index-cache" "${mount_extra[@]}" \
        >"$work/mount.out" 2>>"$work/mount.log" &
    mount_pid=$!
    for _ in $(seq 200); do
        mountpoint -q "$mnt" && break
        sleep 0.05
    done
    mountpoint -q "$mnt" || { cat "$work/mount.log" >&2; exit 1; }
}
unmount() {
    fusermount3 -u "$mnt"
    wait "$mount_pid"
    mount_pid=
}
mount_at

# Through the mount: per bundle the cold tile, its warm tiles, then the warm tiles again.
python3 - "$mnt/_alllayers" "$work/samples" >"$work/mount.times" <<'EOF'
import sys, time
root, samples = sys.argv[1], sys.argv[2]
by_bundle = {}
for line in open(samples):
    kind, rel, key, a, b = line.split()
    by_bundle.setdefault(key, []).append((kind, rel, int(b) - int(a) - 3))
def read(rel, size):
    t = time.perf_counter()
    with open(f"{root}/{rel}", "rb") as f:
        n = len(f.read())
    dt = time.perf_counter() - t
    assert n == size, (rel, n, size)
    return dt
for key, tiles in by_bundle.items():
    for kind, rel, size in tiles:
        print(kind, read(rel, size))
    for kind, rel, size in tiles:
        if kind == "warm":
            print("kernel", read(rel, size))
EOF

# A fresh mount on the same --cache-dir: per bundle its cold tile again, the index now from disk
# (the kernel's and the daemon's caches went with the first mount).
unmount
say "fresh mount, indexes from $work/index-cache ($(du -sb "$work/index-cache" | cut -f1) bytes)"
mount_at
python3 - "$mnt/_alllayers" "$work/samples" >>"$work/mount.times" <<'EOF'
import sys, time
root, samples = sys.argv[1], sys.argv[2]
for line in open(samples):
    kind, rel, key, a, b = line.split()
    if kind != "cold":
        continue
    t = time.perf_counter()
    with open(f"{root}/{rel}", "rb") as f:
        n = len(f.read())
    dt = time.perf_counter() - t
    assert n == int(b) - int(a) - 3, (rel, n)
    print("disk", dt)
EOF

# Through `bundlefs serve` (no FUSE; loopback only, skipped with RTT_MS) and the floor, in one
# curl run: per sampled tile its serve request (the tile URL: per bundle the cold tile, index +
# tile GET, then the warm ones, one tile GET each) and its floor request (the tile's byte range
# from the store; for a cold tile also the 128 KiB header+index), one after the other, in turns
# serve first and floor first. One curl, one kept-alive connection to each, so both are timed by
# the same client in the same seconds: the load of a shared machine drifts, and timing the floor
# after serve (as this script did) moved the ratio by ±0.1; Python's http.client, which timed
# serve before, added 50-100 us a request of its own (5-10 % of the floor). Serve's answers are
# checked for 200 and the tile's size, the floor's for 206. The config holds the store's secret:
# a file only we can read, not the process list.
serve_pid=
if [[ $RTT_MS == 0 ]]; then
    sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$BIN" serve "s=$url" --listen "127.0.0.1:$sport" >"$work/serve.out" 2>&1 &
    serve_pid=$!
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$sport/healthz" && break
        sleep 0.1
    done
fi
floor_entry() { # LABEL KEY RANGE
    echo "url = \"$read_endpoint/$BUNDLEFS_S3_BUCKET/${url#s3://*/}/_alllayers/$2\""
    echo "range = \"$3\""
    echo "output = \"/dev/null\""
    echo "write-out = \"$1 %{time_total} %{http_code}\\n\""
    echo "aws-sigv4 = \"aws:amz:${AWS_REGION:-us-east-1}:s3\""
    echo "user = \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\""
    echo "header = \"x-amz-content-sha256: UNSIGNED-PAYLOAD\""
    echo next
}
floor_entries() { # KIND KEY A B
    floor_entry "$1" "$2" "$3-$4"
    # The bundle's header+index (bytes 0-131135), as the mount's cold read fetches it.
    [[ $1 != cold ]] || floor_entry index "$2" 0-131135
}
serve_entry() { # KIND REL A B
    local lv r col level row c
    IFS=/ read -r lv r col <<<"$2"
    level=$((10#${lv:1})) row=$((16#${r:1})) c=${col:1}
    c=$((16#${c%.*}))
    echo "url = \"http://127.0.0.1:$sport/arcgis/rest/services/s/MapServer/tile/$level/$row/$c\""
    echo "output = \"/dev/null\""
    echo "write-out = \"serve-$1 %{time_total} %{http_code} %{size_download} $(($4 - $3 - 3))\\n\""
    echo next
}
cfg=$work/curl.cfg
umask 077
{
    i=0
    while read -r kind rel key a b; do
        if [[ -z $serve_pid ]]; then
            floor_entries "$kind" "$key" "$a" "$b"
        elif ((i % 2 == 0)); then
            serve_entry "$kind" "$rel" "$a" "$b"
            floor_entries "$kind" "$key" "$a" "$b"
        else
            floor_entries "$kind" "$key" "$a" "$b"
            serve_entry "$kind" "$rel" "$a" "$b"
        fi
        i=$((i + 1))
    done <"$work/samples"
} | sed '$d' >"$cfg"
curl -s -K "$cfg" >"$work/curl.raw"
rm -f "$cfg"
if [[ -n $serve_pid ]]; then
    kill "$serve_pid"
    wait "$serve_pid" || true
fi
grep -v '^serve-' "$work/curl.raw" >"$work/floor.raw" || true
if grep -qv ' 206$' "$work/floor.raw"; then
    echo "bench: a floor request did not answer 206:" >&2
    grep -v ' 206$' "$work/floor.raw" | head -3 >&2
    exit 1
fi
awk '{ print ($1 == "index" ? "index" : "floor"), $2 }' "$work/floor.raw" >"$work/floor.times"
if [[ -n $serve_pid ]]; then
    grep '^serve-' "$work/curl.raw" >"$work/serve.raw"
    if awk '$3 != 200 || $4 != $5 { bad = 1 } END { exit !bad }' "$work/serve.raw"; then
        echo "bench: serve did not answer a tile with 200 and its bytes:" >&2
        awk '$3 != 200 || $4 != $5' "$work/serve.raw" | head -3 >&2
        exit 1
    fi
    awk '{ print $1, $2 }' "$work/serve.raw" >>"$work/mount.times"
fi

python3 - "$work/mount.times" "$work/floor.times" <<EOF
import statistics, sys
vals = {}
for path in sys.argv[1:]:
    for line in open(path):
        k, v = line.split()
        vals.setdefault(k, []).append(float(v) * 1000)
med = {k: statistics.median(v) for k, v in vals.items()}
floor = med["floor"]
print(f"cache: levels 0-$MAXLEVEL, $n_bundles bundles, $bytes bytes of bundles; export into the store: ${upload_s} s")
print(f"floor: one range GET of the tile's bytes (curl, kept-alive): median {floor:.3f} ms over {len(vals['floor'])} requests")
two = floor + med["index"]
print(f"floor of a cold bundle: the 128 KiB index GET (median {med['index']:.3f} ms) + the tile GET: {two:.3f} ms ({two / floor:.2f}x the floor)")
print(f"{'read through the mount':<40} {'samples':>7} {'median ms':>10} {'p90 ms':>8} {'x floor':>8}")
names = {"cold": "cold bundle (index + tile GET)", "warm": "warm index (one tile GET)", "disk": "disk cache (fresh mount, index from disk)", "kernel": "kernel cache (daemon not called)", "serve-cold": "serve: cold bundle (HTTP, index + tile)", "serve-warm": "serve: warm index (HTTP, one tile GET)"}
for k in [k for k in ["cold", "warm", "disk", "kernel", "serve-cold", "serve-warm"] if k in vals]:
    v = sorted(vals[k])
    p90 = v[min(len(v) - 1, int(0.9 * len(v)))]
    print(f"{names[k]:<40} {len(v):>7} {med[k]:>10.3f} {p90:>8.3f} {med[k] / floor:>8.2f}")
EOF

# ---- Throughput, write and memory (skipped with THROUGHPUT=0) ----------------------------------
# tar of level TARLEVEL (default MAXLEVEL-2: 4096 tiles, one bundle) through a fresh mount vs
# GDAL (the rasterio wheel's, ESRIC over /vsis3/) reading the same level (decoded: GDAL has no
# other way to read the tiles); rsync of levels 0..TARLEVEL (as tile files) into an -o rw mount of
# an empty prefix (--write-buffer WRITE_BUFFER, default 256M) vs `bundlefs import` of the same
# files; the daemons' peak RSS (VmHWM).
[[ ${THROUGHPUT:-1} == 1 && $RTT_MS == 0 ]] || exit 0
TARLEVEL=${TARLEVEL:-$((MAXLEVEL - 2))}
WRITE_BUFFER=${WRITE_BUFFER:-256M}
lv=$(printf 'L%02d' "$TARLEVEL")
unmount
rm -rf "$work/index-cache"
hwm() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
now() { date +%s.%N; }
secs() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }

mount_at
t0=$(now)
tiles=$(tar -cf - -C "$mnt/_alllayers" "$lv" | tar -tvf - | grep -c '\.png$')
t1=$(now)
tar_s=$(secs "$t0" "$t1")
names_t0=$(now)
names=$(find "$mnt/_alllayers" -type f | wc -l)
names_s=$(secs "$names_t0" "$(now)")
read_rss=$(hwm "$mount_pid")
unmount

gdal_s=n/a
if python3 -c 'import rasterio' 2>/dev/null; then
    host=${AWS_ENDPOINT_URL#http://}
    t0=$(now)
    AWS_S3_ENDPOINT=${host%/} AWS_HTTPS=NO AWS_VIRTUAL_HOSTING=FALSE python3 - \
        "/vsis3/$BUNDLEFS_S3_BUCKET/${url#s3://*/}/conf.xml" "$TARLEVEL" <<'PY' >&2
import sys, rasterio
path, level = sys.argv[1], int(sys.argv[2])
with rasterio.open(path) as ds:
    n = len(ds.overviews(1))
# Overview n-1 is level 0; level L is overview n-1-L (the full resolution when L = n).
kw = {} if level == n else {"overview_level": n - 1 - level}
with rasterio.open(path, **kw) as d:
    a = d.read()
    print("gdal read", d.width, "x", d.height, "px,", a.nbytes, "bytes decoded")
PY
    gdal_s=$(secs "$t0" "$(now)")
fi

# Write: levels 0..TARLEVEL as tile files.
"$BIN" export --storage exploded --levels "0-$TARLEVEL" "$work/src" "$work/tiles" >/dev/null
tile_bytes=$(find "$work/tiles/_alllayers" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
n_tiles=$(find "$work/tiles/_alllayers" -type f | wc -l)
# An empty cache at prefix URL $1: the source's conf.xml only (PUT by curl; secret in a file).
empty() {
    local u=$1 cfg=$work/put.cfg
    {
        echo "url = \"$AWS_ENDPOINT_URL/$BUNDLEFS_S3_BUCKET/${u#s3://*/}/conf.xml\""
        echo "upload-file = \"$work/src/conf.xml\""
        echo "aws-sigv4 = \"aws:amz:${AWS_REGION:-us-east-1}:s3\""
        echo "user = \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\""
        echo "header = \"x-amz-content-sha256: UNSIGNED-PAYLOAD\""
    } >"$cfg"
    curl -sf -K "$cfg" -o /dev/null
    rm -f "$cfg"
}
wurl=$url-write
empty "$wurl"
RUST_LOG=info "$BIN" mount "$wurl" "$mnt" -o rw --recheck 3600 --write-buffer "$WRITE_BUFFER" >"$work/mount.out" 2>"$work/write.log" &
mount_pid=$!
for _ in $(seq 200); do mountpoint -q "$mnt" && break; sleep 0.05; done
t0=$(now)
rsync -r "$work/tiles/_alllayers/" "$mnt/_alllayers/"
write_rss=$(hwm "$mount_pid")
fusermount3 -u "$mnt"
wait "$mount_pid"
mount_pid=
rsync_s=$(secs "$t0" "$(now)")
sent=$(grep -o '([0-9]* bytes sent)' "$work/write.log" | tail -1 | tr -dc '0-9' || true)
iurl=$url-import
empty "$iurl"
t0=$(now)
"$BIN" import "$work/tiles" "$iurl" >/dev/null
import_s=$(secs "$t0" "$(now)")

echo
echo "throughput: level $TARLEVEL, $tiles tiles"
printf '%-52s %8s s\n' "tar of $lv through a fresh mount" "$tar_s"
printf '%-52s %8s s\n' "GDAL /vsis3/ (rasterio) reading level $TARLEVEL, decoded" "$gdal_s"
printf '%-52s %8s s  (%s names)\n' "find of every tile name (levels 0-$MAXLEVEL)" "$names_s" "$names"
echo "write: levels 0-$TARLEVEL, $n_tiles tiles, $tile_bytes bytes of tiles"
printf '%-52s %8s s\n' "rsync -r into an -o rw mount of an empty prefix" "$rsync_s"
printf '%-52s %8s s\n' "bundlefs import of the same files" "$import_s"
if [[ -n $sent ]]; then
    printf '%-52s %8s    (%s / %s)\n' "bytes sent to the store / tile bytes (rsync)" \
        "$(awk "BEGIN { printf \"%.2f\", $sent / $tile_bytes }")" "$sent" "$tile_bytes"
fi
echo "memory: daemon peak RSS (VmHWM)"
printf '%-52s %8s MiB\n' "read-only mount after tar + find of every name" "$read_rss"
printf '%-52s %8s MiB\n' "-o rw mount during rsync (--write-buffer $WRITE_BUFFER)" "$write_rss"

# ---- Memory with many names (NAMES_LEVEL=10: 1,398,101 tiles of 16 px; skipped by default) ------
# A read-only mount listing every name of levels 0..NAMES_LEVEL (find), its peak RSS against the
# bounds: 256 kept indexes (128 KiB each) + 16 MiB of recent tiles + 64 MiB.
[[ ${NAMES_LEVEL:-0} -gt 0 ]] || exit 0
say "synthesizing levels 0-$NAMES_LEVEL (16 px tiles) for the names run"
"$SYNTH" "$work/names" "$NAMES_LEVEL" 16 >/dev/null
nurl=$url-names
"$BIN" export --storage compact-v2 "$work/names" "$nurl" >/dev/null
n_bundles=$(find "$work/names/_alllayers" -name '*.bundle' | wc -l)
rm -rf "$work/names"
url=$nurl
mount_at
t0=$(now)
names=$(find "$mnt/_alllayers" -type f | wc -l)
names_s=$(secs "$t0" "$(now)")
names_rss=$(hwm "$mount_pid")
unmount
echo "names: levels 0-$NAMES_LEVEL, $n_bundles bundles"
printf '%-52s %8s s  (%s names)\n' "find of every tile name" "$names_s" "$names"
printf '%-52s %8s MiB\n' "read-only mount after find (at most 256 indexes kept)" "$names_rss"
