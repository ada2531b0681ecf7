#!/usr/bin/env bash
# `--shard I/N` under a real array engine: a throw-away single-node Slurm (Debian's slurmctld and
# slurmd, munge for authentication) runs `sbatch --array=0-3 --wait` of a job whose task I renders
# shard I/4 of levels 8-9 of a Web Mercator cache (`--source label`) into one local cache; the
# script then checks that the four shards stored exactly the tiles one process stores into another
# cache: `bundlefs verify` of both, `bundlefs info` of both, and the SHA-256 of every file of an
# `export --storage exploded` of each. Exits non-zero when any of that differs or fails.
#
#   scripts/slurm-shards.sh              (BUNDLEFS=PATH to use another binary than target/debug's)
#
# SLURM_SHARDS_DIR=DIR keeps the files (slurm.conf, logs, caches) in DIR instead of a temporary
# folder. Needs root: it installs slurmctld, slurmd, slurm-client and munge with apt-get when
# missing, and runs the daemons as root. Everything lives in the folder: slurm.conf, the munge key
# and socket, state and spool folders, logs; nothing in /etc/slurm or /etc/munge is used. munged,
# slurmctld and slurmd run in the foreground, their PIDs are recorded, and they are stopped by PID
# on exit, also when the script fails or is interrupted. Uses Slurm's default ports 6817/6818 on
# 127.0.0.1: not while another Slurm runs on this machine.
#
# Not part of scripts/test.sh: CI must not depend on Slurm (see doc/scale-out.md, "Proof").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf '== %s\n' "$*" >&2; }
die() {
    say "FAIL: $*"
    exit 1
}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing Slurm and munge from Debian"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge
fi

if [[ -z ${BUNDLEFS:-} ]]; then
    cargo build -q --bin bundlefs
    BUNDLEFS=$repo/target/debug/bundlefs
fi
[[ -x $BUNDLEFS ]] || die "no bundlefs binary at $BUNDLEFS"

dir=${SLURM_SHARDS_DIR:-$(mktemp -d /tmp/bundlefs-slurm-XXXXXX)}
mkdir -p "$dir"/{state,spool,log,munge}
chmod 700 "$dir" "$dir/munge"
pids=()
stop() {
    local rc=$? p
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do # slurmd, slurmctld, munged: the reverse order
        p=${pids[i]}
        kill "$p" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if ((rc)); then
        say "failed; logs in $dir/log:"
        tail -n 15 "$dir"/log/*.log >&2 2>/dev/null || true
    fi
    [[ -n ${SLURM_SHARDS_DIR:-} ]] || rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECS WHAT COMMAND...
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what: not within $secs s"
}

# ---- munge --------------------------------------------------------------------------------------
head -c 1024 /dev/urandom >"$dir/munge/munge.key"
chmod 600 "$dir/munge/munge.key"
sock=$dir/munge/munge.socket
munged -F --force --socket="$sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" \
    --log-file="$dir/log/munged.log" </dev/null >>"$dir/log/munged.out" 2>&1 &
pids+=($!)
wait_for 10 "munged to answer on $sock" bash -c "munge -S '$sock' -n | unmunge -S '$sock'"

# ---- Slurm --------------------------------------------------------------------------------------
node=$(hostname -s)
export SLURM_CONF=$dir/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=bundlefs
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=shards Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

say "slurmctld and slurmd ($(slurmctld -V), node $node, $dir)"
slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$dir/log/slurmctld.out" 2>&1 &
pids+=($!)
wait_for 30 "slurmctld to answer" scontrol ping
slurmd -D -f "$SLURM_CONF" </dev/null >>"$dir/log/slurmd.out" 2>&1 &
pids+=($!)
node_idle() { [[ $(sinfo -h -n "$node" -o %t) == idle ]]; }
wait_for 30 "node $node idle" node_idle
sinfo

# ---- the job --------------------------------------------------------------------------------------
shards=$dir/shards
whole=$dir/whole
render=(render --source label --levels 8-9 --extent -1200000,-1200000,1200000,1200000 --keep)
for c in "$shards" "$whole"; do
    "$BUNDLEFS" create "$c" --levels 0-9 --format PNG >/dev/null
done
cat >"$dir/job.sh" <<EOF
#!/bin/bash
#SBATCH --job-name=bundlefs-shards
#SBATCH --array=0-3
#SBATCH --cpus-per-task=1
#SBATCH --output=$dir/log/task-%a.out
echo "task \$SLURM_ARRAY_TASK_ID of job \$SLURM_ARRAY_JOB_ID on \$(hostname -s), started \$(date -u +%T.%3N)"
"$BUNDLEFS" ${render[*]} "$shards" --shard "\$SLURM_ARRAY_TASK_ID/4" || exit
echo "ended \$(date -u +%T.%3N)"
EOF
say "sbatch --array=0-3 --wait $dir/job.sh"
t0=$(date +%s%N)
rc=0
sbatch --wait "$dir/job.sh" || rc=$?
t1=$(date +%s%N)
for i in 0 1 2 3; do
    sed "s/^/  [task $i] /" "$dir/log/task-$i.out"
done
((rc == 0)) || die "sbatch --wait exited $rc"
printf '== the array job took %d ms\n' $(((t1 - t0) / 1000000)) >&2

say "one process, no Slurm: bundlefs ${render[*]} $whole"
"$BUNDLEFS" "${render[@]}" "$whole"

# ---- the check ----------------------------------------------------------------------------------
ok=1
for c in "$shards" "$whole"; do
    out=$("$BUNDLEFS" verify "$c") || {
        echo "$out"
        die "verify $c failed"
    }
    grep -q '0 problem(s)' <<<"$out" || {
        echo "$out"
        ok=0
    }
done
info() { "$BUNDLEFS" info --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
info_shards=$(info "$shards")
info_whole=$(info "$whole")
echo "info total, shards: $info_shards"
echo "info total, one:    $info_whole"
[[ $info_shards == "$info_whole" ]] || ok=0
sums() {
    "$BUNDLEFS" export --storage exploded "$1" "$2" >/dev/null
    (cd "$2" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}
sums "$shards" "$dir/x-shards" >"$dir/shards.sha256"
sums "$whole" "$dir/x-whole" >"$dir/whole.sha256"
n=$(grep -c '\.png$' "$dir/whole.sha256" || true)
if cmp -s "$dir/shards.sha256" "$dir/whole.sha256"; then
    echo "exploded exports: $n tiles, every file's SHA-256 equal"
else
    diff "$dir/shards.sha256" "$dir/whole.sha256" | head -20
    ok=0
fi
((n == 256 + 1024)) || {
    echo "expected 1280 tiles (16 x 16 at level 8, 32 x 32 at level 9), got $n"
    ok=0
}
((ok)) || die "the four Slurm shards did not store what one process stores"
say "OK: 4 Slurm array tasks (--shard I/4) stored the same $n tiles as one process"
