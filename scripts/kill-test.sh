#!/usr/bin/env bash
# kill -9 of a writable mount at random points of a large rsync, ROUNDS times (default 20).
#
#   scripts/kill-test.sh [ROUNDS]
#
# Each round: an empty cache (levels 0-7) is mounted with `-o rw` and a small write buffer (so
# bundles are being flushed when the kill lands); rsync copies 21,845 distinct labelled tiles into
# it while a second writer writes tiles one by one with `dd conv=fsync`, noting each one whose
# fsync returned. After a random delay the daemon gets SIGKILL. Then:
#   - `bundlefs verify --decode` must pass (every bundle valid, every stored tile decodes);
#   - a read-only remount must show every noted (fsync'd) tile byte for byte;
#   - every tile it shows must equal its source (no torn, stale or misplaced tile);
# and in the last round a second mount completes the transfer, after which the whole tree equals
# the source. Needs fusermount3 and rsync. BUNDLEFS=path picks the binary (default: cargo build
# --release). KEEP=1 keeps the work folder.
set -euo pipefail

cd "$(dirname "$0")/.."
rounds=${1:-20}
say() { printf '== %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

if [[ -z "${BUNDLEFS:-}" ]]; then
    cargo build --release --quiet
    BUNDLEFS=$PWD/target/release/bundlefs
fi
command -v fusermount3 >/dev/null || die "fusermount3 missing"
command -v rsync >/dev/null || die "rsync missing"

work=$(mktemp -d "${TMPDIR:-/tmp}/bundlefs-kill-XXXXXX")
mnt=$work/mnt
daemon=
cleanup() {
    [[ -n "$daemon" ]] && kill -9 "$daemon" 2>/dev/null || true
    fusermount3 -u -z "$mnt" 2>/dev/null || true
    [[ -n "${KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt"

say "source: 21,845 labelled tiles (levels 0-7), exploded"
"$BUNDLEFS" sample "$work/sample" --levels 0-7 >/dev/null
"$BUNDLEFS" export --storage exploded "$work/sample" "$work/src" >/dev/null
src=$work/src/_alllayers
total=$(find "$src" -name '*.png' | wc -l)
((total == 21845)) || die "expected 21845 source tiles, got $total"
"$BUNDLEFS" create "$work/empty" --levels 0-7 >/dev/null

wait_mounted() {
    local i
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$mnt" && return 0
        sleep 0.05
    done
    die "mount did not appear"
}

# The tiles that differ between the mount's tree ($1) and the source: rsync's checksum dry run
# over the files the mount has (one process, not one per tile).
differing() {
    rsync -rcn --existing --out-format='%n' "$1/" "$src/" | grep -v '/$' || true
}

fsynced_total=0
stored_total=0
midway=0
for ((round = 1; round <= rounds; round++)); do
    cache=$work/cache
    rm -rf "$cache"
    cp -a "$work/empty" "$cache"
    "$BUNDLEFS" mount "$cache" "$mnt" -o rw --write-buffer 2M --flush-idle 0.2 \
        2>"$work/mount.log" &
    daemon=$!
    wait_mounted
    rsync -a "$src/" "$mnt/_alllayers/" 2>/dev/null &
    rs=$!
    # The second writer: level 7 rows 120-127 (which rsync reaches last), tile by tile with fsync;
    # a tile is noted only once dd (write + fsync + close) succeeded.
    : >"$work/synced"
    (
        for r in 78 79 7a 7b 7c 7d 7e 7f; do
            d="_alllayers/L07/R000000$r"
            mkdir -p "$mnt/$d" 2>/dev/null || exit 0
            for f in "$src/L07/R000000$r"/*.png; do
                rel="$d/$(basename "$f")"
                dd if="$f" of="$mnt/$rel" conv=fsync status=none 2>/dev/null || exit 0
                echo "$rel" >>"$work/synced"
            done
        done
    ) &
    writer=$!
    # A random point: 0.2 to 3.2 s into the transfer (which takes about 3 s with a release build).
    delay=$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.2 + rand() * 3 }')
    sleep "$delay"
    kill -9 "$daemon"
    # Abort the dead daemon's connection (as root), as an administrator would: a daemon thread
    # caught in a kernel invalidation that waits for a folder lock held by a pending request
    # cannot exit, and the connection (and rsync) would wait for it forever.
    umount -f "$mnt" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    daemon=
    wait "$rs" 2>/dev/null || true
    wait "$writer" 2>/dev/null || true
    fusermount3 -u -z "$mnt" 2>/dev/null || true

    "$BUNDLEFS" verify --decode "$cache" >"$work/verify.log" 2>&1 ||
        { cat "$work/verify.log" >&2; die "round $round: verify failed after kill at ${delay}s"; }

    "$BUNDLEFS" mount "$cache" "$mnt" 2>>"$work/mount.log" &
    daemon=$!
    wait_mounted
    synced=$(wc -l <"$work/synced")
    while read -r rel; do
        cmp -s "$work/src/$rel" "$mnt/$rel" || die "round $round: fsync'd tile $rel lost or wrong"
    done <"$work/synced"
    stored=$(find "$mnt/_alllayers" -name '*.png' | wc -l)
    bad=$(differing "$mnt/_alllayers")
    [[ -z "$bad" ]] || die "round $round: tiles differing from their source: $(head -5 <<<"$bad")"
    fusermount3 -u "$mnt"
    wait "$daemon" || true
    daemon=
    say "round $round/$rounds: kill -9 at ${delay}s; verify clean; $synced fsync'd tiles intact; $stored of $total tiles stored, all equal to their source"
    ((stored < total)) && midway=$((midway + 1))
    fsynced_total=$((fsynced_total + synced))
    stored_total=$((stored_total + stored))
done

say "completing the last round's transfer through a new mount"
"$BUNDLEFS" mount "$cache" "$mnt" -o rw 2>>"$work/mount.log" &
daemon=$!
wait_mounted
rsync -a "$src/" "$mnt/_alllayers/"
fusermount3 -u "$mnt"
wait "$daemon" || true
daemon=
"$BUNDLEFS" verify --decode "$cache" >/dev/null || die "verify after completing failed"
"$BUNDLEFS" mount "$cache" "$mnt" 2>>"$work/mount.log" &
daemon=$!
wait_mounted
n=$(find "$mnt/_alllayers" -name '*.png' | wc -l)
bad=$(differing "$mnt/_alllayers")
fusermount3 -u "$mnt"
wait "$daemon" || true
daemon=
((n == total)) && [[ -z "$bad" ]] || die "after completing: $n of $total tiles, differing: $bad"
say "kill test passed: $rounds rounds ($midway killed mid-transfer), $fsynced_total fsync'd tiles all intact, $stored_total tiles found stored after kills all equal to their source; completed transfer equals the source ($total tiles)"
