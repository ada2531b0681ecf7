#!/usr/bin/env bash
# Write benchmark: `rsync -a` of an exploded cache into a writable bundlefs mount vs into a native
# folder on the same disk, in one run.
#
# Usage: scripts/bench-write.sh      (as root: real FUSE mounts)
#   MAXLEVEL=7   levels 0..MAXLEVEL of the source (7: 21,845 tiles of ~3.5 KB, 256 px PNG)
#   RUNS=2       best of RUNS for the timings
#
# Source: examples/synth.rs writes a V2 cache, `bundlefs export --storage exploded` explodes it.
#   (1) speed: `rsync -a SRC/ DEST/` then `sync` into an empty native folder, against `rsync -a`
#       into a mount (-o rw, --write-buffer 256M) of an empty cache from `bundlefs create`, then
#       unmount (which flushes every buffered tile and fsyncs the bundles);
#   (2) write amplification: bundle bytes after the job over tile bytes, and the bytes the daemon
#       sent to the disk over the whole job incl. the final flush (/proc/PID/io write_bytes, page
#       granular; wchar, what its write calls carried) over tile bytes;
#   (3) daemon peak RSS (VmHWM) with --write-buffer 64M and 512M over the same rsync.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
MAXLEVEL=${MAXLEVEL:-7}
RUNS=${RUNS:-2}

say() { printf '==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
now() { date +%s.%N; }
[[ $(id -u) == 0 ]] || { echo "bench-write: run as root (FUSE mounts)" >&2; exit 1; }
command -v rsync >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync; }
command -v fusermount3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }

say "cargo build --release (bundlefs, examples/synth)"
cargo build --release --quiet --bin bundlefs --example synth
BIN=$repo/target/release/bundlefs

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
"$repo/target/release/examples/synth" "$work/synth" "$MAXLEVEL" 256
"$BIN" export "$work/synth" "$work/src" --storage exploded >/dev/null
src=$work/src/_alllayers
n=$(find "$src" -type f | wc -l)
tile_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')

# mount_rw BUDGET: an empty cache mounted read-write; daemon pid in $daemon.
mount_rw() {
    rm -rf "$work/cache"
    "$BIN" create "$work/cache" --levels "0-$MAXLEVEL" >/dev/null
    daemon=$("$BIN" mount "$work/cache" "$mnt" -o rw --write-buffer "$1" --daemon --log-file "$work/daemon.log" | sed -n "s/^pid: //p")
}
io() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/io"; }
hwm() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"; }

native=() mounted=()
for _ in $(seq "$RUNS"); do
    rm -rf "$work/native"
    sync
    t0=$(now)
    rsync -a "$src/" "$work/native/"
    sync
    native+=("$(calc "$(now) - $t0")")

    mount_rw 256M
    t0=$(now)
    rsync -a "$src/" "$mnt/_alllayers/"
    unmount
    mounted+=("$(calc "$(now) - $t0")")
done
nb=$(printf '%s\n' "${native[@]}" | sort -g | head -1)
mb=$(printf '%s\n' "${mounted[@]}" | sort -g | head -1)
# What the job left: the bundles and time sidecars in the cache folder after unmount.
cache_bytes=$(find "$work/cache/_alllayers" -type f -name '*.bundle' -printf '%s\n' | awk '{ s += $1 } END { print s }')
side_bytes=$(find "$work/cache/_alllayers" -type f -name '*.times' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
"$BIN" verify "$work/cache" >/dev/null

# Whole-job I/O of the daemon, final flush included: a foreground mount in a subshell that, once
# the daemon exited and was reaped, reads its own /proc/PID/io (which then includes the child's).
say "I/O of a whole job"
rm -rf "$work/cache"
"$BIN" create "$work/cache" --levels "0-$MAXLEVEL" >/dev/null
( "$BIN" mount "$work/cache" "$mnt" -o rw --write-buffer 512M 2>>"$work/daemon.log"
  cat "/proc/$BASHPID/io" >"$work/io.txt" ) &
sub=$!
for _ in $(seq 500); do mountpoint -q "$mnt" && break; sleep 0.01; done
rsync -a "$src/" "$mnt/_alllayers/"
fusermount3 -u "$mnt"
wait "$sub"
last_wb=$(awk '$1 == "write_bytes:" { print $2 }' "$work/io.txt")
last_wc=$(awk '$1 == "wchar:" { print $2 }' "$work/io.txt")

rss=()
for budget in 64M 512M; do
    mount_rw "$budget"
    rsync -a "$src/" "$mnt/_alllayers/"
    rss+=("$budget:$(hwm "$daemon")")
    unmount
done

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
