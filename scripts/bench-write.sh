#!/usr/bin/env bash
# Write benchmark: `rsync -a` of an exploded cache into a writable bundlefs mount vs into a native
# folder on the same disk, in one run.
#
# Usage: scripts/bench-write.sh      (as root: real FUSE mounts)
#   MAXLEVEL=7   levels 0..MAXLEVEL of the source (7: 21,845 tiles of ~3.5 KB, 256 px PNG)
#   RUNS=2       best of RUNS for the timings
#   BIN=PATH     the bundlefs under test (default: cargo build --release of this repo)
#   BASELINE_BIN=PATH  also measure this bundlefs, interleaved run by run with BIN, and print both,
#                ratio and verdict per measure
#   NOISE_PCT=5, SYNTH=PATH: see scripts/lib-bench.sh
#   e.g. BASELINE_BIN=/tmp/old/bundlefs BIN=target/release/bundlefs RUNS=3 scripts/bench-write.sh
#
# Source: examples/synth.rs writes a V2 cache, `bundlefs export --storage exploded` explodes it.
#   (1) speed: `rsync -a SRC/ DEST/` then `sync` into an empty native folder, against `rsync -a`
#       into a mount (-o rw, --write-buffer 256M) of an empty cache from `bundlefs create`, then
#       unmount (which flushes every buffered tile and fsyncs the bundles);
#   (2) write amplification: bundle bytes after the job over tile bytes, and the bytes the daemon
#       sent to the disk over the whole job incl. the final flush (/proc/PID/io write_bytes, page
#       granular; wchar, what its write calls carried) over tile bytes;
#   (3) daemon peak RSS (VmHWM) with --write-buffer 64M and 512M over the same rsync.
# With BASELINE_BIN, (1)-(3) are made for both binaries from the same source (written by BIN and
# SYNTH); each side runs the whole job with its own binary (create, mount, verify); the native
# rsync is timed once per run.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
MAXLEVEL=${MAXLEVEL:-7}
RUNS=${RUNS:-2}

# shellcheck source=scripts/lib-bench.sh
source "$repo/scripts/lib-bench.sh"
[[ $(id -u) == 0 ]] || { echo "bench-write: run as root (FUSE mounts)" >&2; exit 1; }
command -v rsync >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync; }
command -v fusermount3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }

setup_bins --bin bundlefs --example synth
setup_synth

work=$(mktemp -d "${TMPDIR:-/tmp}/bundlefs-bench-write.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
daemon=
unmount() {
    if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
    if [[ -n $daemon ]]; then
        # The daemon exits once it has flushed its buffer: wait for it. A zombie has finished
        # (its flush is on disk); this container's init can take ~1.7 s to reap it, which is not
        # ours to count.
        while kill -0 "$daemon" 2>/dev/null &&
            [[ $(awk '{ print $3 }' "/proc/$daemon/stat" 2>/dev/null) != Z ]]; do sleep 0.01; done
        daemon=
    fi
}
cleanup() { unmount; rm -rf "$work"; }
trap cleanup EXIT

say "source: levels 0-$MAXLEVEL"
"$SYNTH" "$work/synth" "$MAXLEVEL" 256
"$BIN" export "$work/synth" "$work/src" --storage exploded >/dev/null
src=$work/src/_alllayers
n=$(find "$src" -type f | wc -l)
tile_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')

# mount_rw SIDE BUDGET: an empty cache $work/cache.SIDE from SIDE's binary, mounted read-write
# by it; daemon pid in $daemon.
mount_rw() {
    local bin=${SIDE_BIN[$1]} cache=$work/cache.$1
    rm -rf "$cache"
    "$bin" create "$cache" --levels "0-$MAXLEVEL" >/dev/null
    daemon=$("$bin" mount "$cache" "$mnt" -o rw --write-buffer "$2" --daemon --log-file "$work/daemon.log" | pid_line)
}
io() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/io"; }
hwm() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"; }

say "rsync -a of $n tiles: native vs mount (${SIDES[*]}), $RUNS runs"
for run in $(seq "$RUNS"); do
    rm -rf "$work/native"
    sync
    t0=$(now)
    rsync -a "$src/" "$work/native/"
    sync
    record rsync native "$(calc "$(now) - $t0")"

    for side in $(sides_of_run "$run"); do
        mount_rw "$side" 256M
        t0=$(now)
        rsync -a "$src/" "$mnt/_alllayers/"
        unmount
        record rsync "$side" "$(calc "$(now) - $t0")"
    done
done
nb=$(best_of rsync native)
mb=$(best_of rsync)
# What the job left: the bundles and time sidecars in the cache folder after unmount.
for side in "${SIDES[@]}"; do
    record bundles "$side" "$(find "$work/cache.$side/_alllayers" -type f -name '*.bundle' -printf '%s\n' | awk '{ s += $1 } END { print s }')"
    record sidecars "$side" "$(find "$work/cache.$side/_alllayers" -type f -name '*.times' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
    "${SIDE_BIN[$side]}" verify "$work/cache.$side" >/dev/null
done
cache_bytes=$(best_of bundles)
side_bytes=$(best_of sidecars)

# Whole-job I/O of the daemon, final flush included: a foreground mount in a subshell that, once
# the daemon exited and was reaped, reads its own /proc/PID/io (which then includes the child's).
for side in "${SIDES[@]}"; do
    say "I/O of a whole job ($side)"
    bin=${SIDE_BIN[$side]} cache=$work/cache.$side
    rm -rf "$cache"
    "$bin" create "$cache" --levels "0-$MAXLEVEL" >/dev/null
    ( "$bin" mount "$cache" "$mnt" -o rw --write-buffer 512M 2>>"$work/daemon.log"
      cat "/proc/$BASHPID/io" >"$work/io.txt" ) &
    sub=$!
    for _ in $(seq 500); do mountpoint -q "$mnt" && break; sleep 0.01; done
    rsync -a "$src/" "$mnt/_alllayers/"
    fusermount3 -u "$mnt"
    wait "$sub"
    record write_bytes "$side" "$(awk '$1 == "write_bytes:" { print $2 }' "$work/io.txt")"
    record wchar "$side" "$(awk '$1 == "wchar:" { print $2 }' "$work/io.txt")"
done
last_wb=$(best_of write_bytes)
last_wc=$(best_of wchar)

say "daemon VmHWM with --write-buffer 64M and 512M (${SIDES[*]})"
for budget in 64M 512M; do
    for side in "${SIDES[@]}"; do
        mount_rw "$side" "$budget"
        rsync -a "$src/" "$mnt/_alllayers/"
        record "hwm$budget" "$side" "$(hwm "$daemon")"
        unmount
    done
done
rss=("64M:$(best_of hwm64M)" "512M:$(best_of hwm512M)")

cat <<EOF

bundlefs write benchmark ($(nproc) cores, $(uname -r))
source: $n tiles, $tile_bytes bytes of tiles (levels 0-$MAXLEVEL), best of $RUNS
(1) rsync -a + sync, native folder:             $nb s ($(calc "$n / $nb") files/s)
    rsync -a into the mount + unmount (flushed): $mb s ($(calc "$n / $mb") files/s)
    ratio mount/native speed: $(calc "$nb / $mb")
(2) bundles after the job: $cache_bytes bytes for $tile_bytes tile bytes: $(calc "$cache_bytes / $tile_bytes")x
    time sidecars: $side_bytes bytes
    daemon I/O over the whole job: write_bytes $last_wb ($(calc "$last_wb / $tile_bytes")x tile bytes), wchar $last_wc ($(calc "$last_wc / $tile_bytes")x)
(3) daemon VmHWM: ${rss[0]} kB, ${rss[1]} kB
EOF
compare_table "bundlefs write benchmark: this build against the baseline, best of $RUNS for (1) (one run each for the rest)"
compare_row "(1) rsync -a into the mount + unmount" rsync s
compare_row "(2) bundle bytes after the job" bundles bytes
compare_row "(2) time sidecar bytes" sidecars bytes
compare_row "(2) daemon write_bytes, whole job" write_bytes bytes
compare_row "(2) daemon wchar, whole job" wchar bytes
compare_row "(3) daemon VmHWM, --write-buffer 64M" hwm64M kB
compare_row "(3) daemon VmHWM, --write-buffer 512M" hwm512M kB
