#!/usr/bin/env bash
# Read benchmark: a compact cache through the bundlefs mount against a native exploded copy.
#
# Usage: scripts/bench-read.sh          (as root: real FUSE mounts, drop_caches for cold runs)
#   BIG_MAX=10    levels 0..BIG_MAX of the synthetic "big" cache (10: 1,398,101 tiles)
#   READ_MAX=8    levels 0..READ_MAX of the cache read tile by tile (8: 87,381 tiles of ~3.5 KB)
#   RUNS=3        best of RUNS for every timing
#   BIN=PATH      the bundlefs under test (default: cargo build --release of this repo)
#   BASELINE_BIN=PATH  also measure this bundlefs, interleaved run by run with BIN (each cold run
#                 drops the page cache first), and print both, ratio and verdict per measure
#   NOISE_PCT=5, SYNTH=PATH: see scripts/lib-bench.sh
#   e.g. BASELINE_BIN=/tmp/old/bundlefs BIN=target/release/bundlefs RUNS=3 scripts/bench-read.sh
#
# All side by side in one run, on caches written by examples/synth.rs (the library's V2 writer):
#   (1) big cache: mount time (`bundlefs mount --daemon` returns once the mount answers) and
#       first-tile latency (`cat` of one level-BIG_MAX tile right after mounting, cold page cache)
#       against `cat` of the same tile from the native exploded copy of the read cache;
#   (2) read cache: every tile read through the mount vs from `bundlefs export --storage exploded`
#       of it on the same disk, with `tar -cf - . | cat >/dev/null` (walk + open + read of every
#       file), warm (second run) and cold (page cache dropped, daemon freshly mounted); files/s;
#   (3) the daemon's peak RSS (VmHWM, and anonymous memory RssAnon — mapped bundle pages are
#       file cache, not daemon memory) after reading every tile of the read cache and after
#       walking every name of the big cache.
# With BASELINE_BIN, (1)-(3) are made for both binaries on the same caches and native copy (both
# written by BIN and SYNTH); the native figures are taken once per run.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
BIG_MAX=${BIG_MAX:-10}
READ_MAX=${READ_MAX:-8}
RUNS=${RUNS:-3}

# shellcheck source=scripts/lib-bench.sh
source "$repo/scripts/lib-bench.sh"
[[ $(id -u) == 0 ]] || { echo "bench-read: run as root (FUSE mounts and drop_caches)" >&2; exit 1; }
command -v fusermount3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }

setup_bins --bin bundlefs --example synth
setup_synth

work=$(mktemp -d "${TMPDIR:-/tmp}/bundlefs-bench-read.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
daemon=
unmount() {
    if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
    if [[ -n $daemon ]]; then
        for _ in $(seq 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
        daemon=
    fi
}
cleanup() { unmount; rm -rf "$work"; }
trap cleanup EXIT

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# mount_cache SIDE CACHE: mounts CACHE on $mnt with SIDE's binary, the daemon's pid in $daemon
# (not in a subshell, so that unmount waits for that daemon); seconds taken in $mount_secs.
mount_cache() {
    local t0 t1
    t0=$(now)
    daemon=$("${SIDE_BIN[$1]}" mount "$2" "$mnt" --daemon --log-file "$work/daemon.log" | pid_line)
    t1=$(now)
    mount_secs=$(calc "$t1 - $t0")
}
status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # kB
readall() { tar -C "$1" -cf - . | cat >/dev/null; }
time_readall() { local t0; t0=$(now); readall "$1"; calc "$(now) - $t0"; }

say "synthesizing big cache: levels 0-$BIG_MAX"
"$SYNTH" "$work/big" "$BIG_MAX" 8
say "synthesizing read cache: levels 0-$READ_MAX, 256 px tiles"
"$SYNTH" "$work/read" "$READ_MAX" 256
say "native exploded copy of the read cache (bundlefs export --storage exploded)"
"$BIN" export "$work/read" "$work/native" --storage exploded >/dev/null
n_read=$(find "$work/native/_alllayers" -type f | wc -l)
big_tiles=$(awk -v m="$BIG_MAX" 'BEGIN { n = 0; for (l = 0; l <= m; l++) n += 4 ^ l; print n }')

# (1) mount time and first-tile latency on the big cache, cold.
edge=$((1 << BIG_MAX))
tile=$(printf '_alllayers/L%02d/R%08x/C%08x.png' "$BIG_MAX" $((edge / 2 + 3)) $((edge / 3)))
ntile=$(printf '_alllayers/L%02d/R%08x/C%08x.png' "$READ_MAX" $(((1 << READ_MAX) / 2 + 3)) $(((1 << READ_MAX) / 3)))
say "mount time and first tile of the big cache, cold, ${SIDES[*]}, $RUNS runs"
for run in $(seq "$RUNS"); do
    for side in $(sides_of_run "$run"); do
        drop
        mount_cache "$side" "$work/big"
        record mount "$side" "$mount_secs"
        t0=$(now)
        cat "$mnt/$tile" >/dev/null
        record first "$side" "$(calc "$(now) - $t0")"
        unmount
    done
    t0=$(now)
    cat "$work/native/$ntile" >/dev/null
    record first native "$(calc "$(now) - $t0")"
done
mount_best=$(best_of mount)
first_best=$(best_of first)
native_first_best=$(best_of first native)

# (3a) walk every name of the big cache through the mount (readdirplus + lookups), daemon memory.
say "walking all $big_tiles names of the big cache through the mount (${SIDES[*]}), $RUNS runs"
for run in $(seq "$RUNS"); do for side in $(sides_of_run "$run"); do
    drop
    mount_cache "$side" "$work/big"
    t0=$(now)
    walked=$(find "$mnt/_alllayers" -type f | wc -l)
    record walk "$side" "$(calc "$(now) - $t0")"
    record big_hwm "$side" "$(status "$daemon" VmHWM)"
    record big_anon "$side" "$(status "$daemon" RssAnon)"
    unmount
    [[ $walked == "$big_tiles" ]] || { echo "bench-read: $side walked $walked names, expected $big_tiles" >&2; exit 1; }
done; done
walk_s=$(best_of walk)
big_hwm=$(best_of big_hwm)
big_anon=$(best_of big_anon)

# (2) every tile of the read cache, warm and cold, mount vs native.
say "reading all $n_read tiles: native vs mount (${SIDES[*]}), warm and cold, best of $RUNS"
for run in $(seq "$RUNS"); do
    drop
    record cold native "$(time_readall "$work/native")"
    record warm native "$(time_readall "$work/native")"
    for side in $(sides_of_run "$run"); do
        drop
        mount_cache "$side" "$work/read"
        record cold "$side" "$(time_readall "$mnt")"
        record warm "$side" "$(time_readall "$mnt")"
        record read_hwm "$side" "$(status "$daemon" VmHWM)"
        record read_anon "$side" "$(status "$daemon" RssAnon)"
        unmount
    done
done
nc=$(best_of cold native)
nw=$(best_of warm native)
mc=$(best_of cold)
mw=$(best_of warm)
read_hwm=$(best_of read_hwm)
read_anon=$(best_of read_anon)

# Byte-for-byte check of what was read (once, warm): the mount's tree equals the native copy.
for side in "${SIDES[@]}"; do
    mount_cache "$side" "$work/read"
    diff -r "$work/native" "$mnt" >/dev/null || { echo "bench-read: $side mount differs from the native copy" >&2; exit 1; }
    unmount
done

fps() { calc "$n_read / $1"; }
cat <<EOF

bundlefs read benchmark ($(nproc) cores, $(uname -r))
(1) big synthetic cache: $big_tiles tiles, levels 0-$BIG_MAX, $(du -sh "$work/big" | cut -f1)
    mount time (--daemon returns, mount live), best of $RUNS: $(calc "$mount_best * 1000") ms
    first tile, cold (cat of L$BIG_MAX tile):    $(calc "$first_best * 1000") ms   (native cat of one tile: $(calc "$native_first_best * 1000") ms)
    walk of all names (find), cold:      $walk_s s
(2) read cache: $n_read tiles of ~$(($(du -sb "$work/native/_alllayers" | cut -f1) / n_read)) bytes, tar -cf - | cat, best of $RUNS
    warm: native $nw s ($(fps "$nw") files/s)   mount $mw s ($(fps "$mw") files/s)   ratio $(calc "$nw / $mw")
    cold: native $nc s ($(fps "$nc") files/s)   mount $mc s ($(fps "$mc") files/s)   ratio $(calc "$nc / $mc")
(3) daemon memory: after reading the $n_read-tile cache: VmHWM $read_hwm kB, RssAnon $read_anon kB
                   after walking the $big_tiles-tile cache: VmHWM $big_hwm kB, RssAnon $big_anon kB
EOF
compare_table "bundlefs read benchmark: this build against the baseline, best of $RUNS"
compare_row "(1) mount time, big cache, cold" mount ms 1000
compare_row "(1) first tile, cold" first ms 1000
compare_row "(1) walk of all names (find), cold" walk s
compare_row "(2) read every tile, warm" warm s
compare_row "(2) read every tile, cold" cold s
compare_row "(3) VmHWM after reading every tile" read_hwm kB
compare_row "(3) RssAnon after reading every tile" read_anon kB
compare_row "(3) VmHWM after walking the big cache" big_hwm kB
compare_row "(3) RssAnon after walking the big cache" big_anon kB
