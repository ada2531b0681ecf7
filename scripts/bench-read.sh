#!/usr/bin/env bash
# Read benchmark: a compact cache through the bundlefs mount against a native exploded copy.
#
# Usage: scripts/bench-read.sh          (as root: real FUSE mounts, drop_caches for cold runs)
#   BIG_MAX=10    levels 0..BIG_MAX of the synthetic "big" cache (10: 1,398,101 tiles)
#   READ_MAX=8    levels 0..READ_MAX of the cache read tile by tile (8: 87,381 tiles of ~3.5 KB)
#   RUNS=3        best of RUNS for every timing
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
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
BIG_MAX=${BIG_MAX:-10}
READ_MAX=${READ_MAX:-8}
RUNS=${RUNS:-3}

say() { printf '==> %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
now() { date +%s.%N; }
[[ $(id -u) == 0 ]] || { echo "bench-read: run as root (FUSE mounts and drop_caches)" >&2; exit 1; }
command -v fusermount3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }

say "cargo build --release (bundlefs, examples/synth)"
cargo build --release --quiet --bin bundlefs --example synth
BIN=$repo/target/release/bundlefs
SYNTH=$repo/target/release/examples/synth

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
# mount CACHE: mounts it on $mnt with the daemon's pid in $daemon; prints seconds taken.
mount_cache() {
    local t0 t1
    t0=$(now)
    daemon=$("$BIN" mount "$1" "$mnt" --daemon --log-file "$work/daemon.log" | sed -n "s/^pid: //p")
    t1=$(now)
    calc "$t1 - $t0"
}
status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # kB
best() { sort -g | head -1; }
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
side=$((1 << BIG_MAX))
tile=$(printf '_alllayers/L%02d/R%08x/C%08x.png' "$BIG_MAX" $((side / 2 + 3)) $((side / 3)))
ntile=$(printf '_alllayers/L%02d/R%08x/C%08x.png' "$READ_MAX" $(((1 << READ_MAX) / 2 + 3)) $(((1 << READ_MAX) / 3)))
mount_s=() first_s=() native_first_s=()
for _ in $(seq "$RUNS"); do
    drop
    mount_s+=("$(mount_cache "$work/big")")
    t0=$(now)
    cat "$mnt/$tile" >/dev/null
    first_s+=("$(calc "$(now) - $t0")")
    unmount
    t0=$(now)
    cat "$work/native/$ntile" >/dev/null
    native_first_s+=("$(calc "$(now) - $t0")")
done
mount_best=$(printf '%s\n' "${mount_s[@]}" | best)
first_best=$(printf '%s\n' "${first_s[@]}" | best)
native_first_best=$(printf '%s\n' "${native_first_s[@]}" | best)

# (3a) walk every name of the big cache through the mount (readdirplus + lookups), daemon memory.
say "walking all $big_tiles names of the big cache through the mount"
drop
mount_cache "$work/big" >/dev/null
t0=$(now)
walked=$(find "$mnt/_alllayers" -type f | wc -l)
walk_s=$(calc "$(now) - $t0")
big_hwm=$(status "$daemon" VmHWM)
big_anon=$(status "$daemon" RssAnon)
unmount
[[ $walked == "$big_tiles" ]] || { echo "bench-read: walked $walked names, expected $big_tiles" >&2; exit 1; }

# (2) every tile of the read cache, warm and cold, mount vs native.
say "reading all $n_read tiles: native vs mount, warm and cold, best of $RUNS"
native_cold=() native_warm=() mount_cold=() mount_warm=()
for _ in $(seq "$RUNS"); do
    drop
    native_cold+=("$(time_readall "$work/native")")
    native_warm+=("$(time_readall "$work/native")")
    drop
    mount_cache "$work/read" >/dev/null
    mount_cold+=("$(time_readall "$mnt")")
    mount_warm+=("$(time_readall "$mnt")")
    read_hwm=$(status "$daemon" VmHWM)
    read_anon=$(status "$daemon" RssAnon)
    unmount
done
nc=$(printf '%s\n' "${native_cold[@]}" | best)
nw=$(printf '%s\n' "${native_warm[@]}" | best)
mc=$(printf '%s\n' "${mount_cold[@]}" | best)
mw=$(printf '%s\n' "${mount_warm[@]}" | best)

# Byte-for-byte check of what was read (once, warm): the mount's tree equals the native copy.
mount_cache "$work/read" >/dev/null
diff -r "$work/native" "$mnt" >/dev/null || { echo "bench-read: mount differs from the native copy" >&2; exit 1; }
unmount

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
