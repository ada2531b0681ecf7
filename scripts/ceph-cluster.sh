#!/usr/bin/env bash
# A throw-away Ceph cluster with two S3 gateways (RGW) on loopback, for tests against a real
# object store (conditional PUT with If-Match/If-None-Match, range GET, replication, lost OSDs).
#
#   scripts/ceph-cluster.sh start DIR        create and start a new cluster in DIR; writes DIR/env
#   scripts/ceph-cluster.sh stop DIR         stop every daemon started in DIR (gateways, OSDs, mon)
#   scripts/ceph-cluster.sh kill-osd DIR N   SIGKILL osd.N (N = 0, 1 or 2)
#   scripts/ceph-cluster.sh start-osd DIR N  start osd.N again and wait until the mon has it up
#   scripts/ceph-cluster.sh stop-gw DIR N    stop gateway N (1 = port 7480, 2 = port 7481)
#   scripts/ceph-cluster.sh start-gw DIR N   start gateway N again and wait until it answers S3
#
# The cluster: 1 mon (127.0.0.1:6789), 3 bluestore OSDs on sparse 2 GiB files (pools of size 3,
# min_size 2, 8 PGs), 2 radosgw gateways on 127.0.0.1:7480 and 127.0.0.1:7481, no auth between
# daemons, no mgr. `start` creates the S3 user bundlefs / bundlefs-secret and the bucket
# `bundlefs`, writes and deletes one object (the first write to a new cluster is slow), checks
# that both gateways answer S3, and then writes DIR/env:
#     . DIR/env   # AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_2, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                 # AWS_REGION, AWS_ALLOW_HTTP, BUNDLEFS_S3_BUCKET, CEPH_CONF
# Everything lives in DIR: ceph.conf, mon and OSD data, logs (DIR/log), sockets (DIR/run) and the
# PID of every daemon (DIR/pids/*.pid); nothing goes to /etc/ceph or /var/lib/ceph. `start` on a
# DIR that held a stopped cluster wipes it first. Ports are fixed, so one cluster per machine at a
# time: `start` fails if they are taken. If `start` fails it stops what it started.
# `stop` stops the daemons by their recorded PIDs only, in order (gateways, OSDs, mon), with
# SIGKILL after a timeout; it keeps DIR (logs) and is idempotent.
#
# Needs: root (installs ceph-mon ceph-osd radosgw ceph-common with apt-get when radosgw is
# missing), curl >= 7.75 (--aws-sigv4). S3 clients must use path-style addressing and plain HTTP.
# RGW 16 quirk: If-Match on PUT is compared with the *unquoted* ETag (the quoted one gives 412).
# A request by hand (curl 7.88 does not add x-amz-content-sha256 itself, and RGW rejects a
# signature without it as SignatureDoesNotMatch):
#     curl --aws-sigv4 aws:amz:us-east-1:s3 --user bundlefs:bundlefs-secret \
#          -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' http://127.0.0.1:7480/bundlefs/KEY
set -euo pipefail

MON_PORT=6789
GW_PORTS=(unused 7480 7481) # gateway N listens on GW_PORTS[N]
NUM_OSDS=3
S3_KEY=bundlefs
S3_SECRET=bundlefs-secret
S3_BUCKET=bundlefs
S3_REGION=us-east-1

say() { printf '== %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }
usage() {
    sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# fail LOG MESSAGE: report, show the end of the log that explains it, and exit 1.
fail() {
    local log=$1
    shift
    say "FAIL: $*"
    if [[ -f $log ]]; then
        say "last lines of $log:"
        tail -n 30 "$log" >&2
    fi
    exit 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs_since() { # secs_since START_MS -> "12.345"
    local ms=$(($(now_ms) - $1))
    printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# ---- processes ------------------------------------------------------------------------------

pidfile() { echo "$dir/pids/$1.pid"; }

# alive PID: the process exists and is not a zombie (PID 1 here reaps exited daemons slowly).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # the fields after "(comm) "; the first one is the state
    [[ ${stat%% *} != Z ]]
}

# ours PID: it is a daemon of this cluster (guards against a recycled PID).
ours() {
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$dir/ceph.conf"* ]]
}

# running NAME: prints the PID of daemon NAME if it is running.
running() {
    local f pid
    f=$(pidfile "$1")
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    alive "$pid" && ours "$pid" && echo "$pid"
}

# spawn NAME COMMAND...: start a daemon in the foreground (-f) in the background, record its PID.
spawn() {
    local name=$1
    shift
    "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
    echo $! >"$(pidfile "$name")"
}

# wait_gone SECONDS PID...: wait until every PID has exited; fails if some still run after SECONDS.
wait_gone() {
    local end=$(($(now_ms) + $1 * 1000)) pid left
    shift
    while :; do
        left=0
        for pid in "$@"; do alive "$pid" && left=1; done
        ((left)) || return 0
        (($(now_ms) < end)) || return 1
        sleep 0.1
    done
}

# stop_daemons NAME...: SIGTERM them all, wait, SIGKILL what is left after 20 s.
stop_daemons() {
    local name pid pids=()
    for name in "$@"; do
        if pid=$(running "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    if ((${#pids[@]})) && ! wait_gone 20 "${pids[@]}"; then
        for pid in "${pids[@]}"; do
            alive "$pid" || continue
            say "pid $pid did not stop after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait_gone 10 "${pids[@]}" || say "some of pids ${pids[*]} are still there"
    fi
    for name in "$@"; do rm -f "$(pidfile "$name")"; done
}

mkfs_pids=() # the OSD mkfs steps running in the background during start

start_failed() {
    local pid
    for pid in "${mkfs_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    stop_all
}

stop_all() {
    [[ -d $dir/pids ]] || return 0
    stop_daemons gw1 gw2
    stop_daemons $(for ((n = 0; n < NUM_OSDS; n++)); do echo "osd.$n"; done)
    stop_daemons mon
}

# wait_for SECONDS WHAT CONDITION...: run CONDITION (a command) until it succeeds.
wait_for() {
    local limit=$1 what=$2
    local end=$(($(now_ms) + limit * 1000))
    shift 2
    until "$@"; do
        (($(now_ms) < end)) || {
            say "timed out after $limit s waiting for $what"
            return 1
        }
        sleep 0.2
    done
}

# must_run NAME: the daemon is still running, or fail with the end of its logs.
must_run() {
    running "$1" >/dev/null && return 0
    if [[ -s $dir/log/$1.out ]]; then # its stdout and stderr
        say "$1 exited; last lines of $dir/log/$1.out:"
        tail -n 10 "$dir/log/$1.out" >&2
    fi
    fail "$(logfile "$1")" "$1 exited"
}
logfile() {
    case $1 in
    mon) echo "$dir/log/mon.a.log" ;;
    osd.*) echo "$dir/log/$1.log" ;;
    gw*) echo "$dir/log/client.rgw.$1.log" ;;
    esac
}

# ---- ceph and S3 ------------------------------------------------------------------------------

ceph_() { ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@"; }

up_osds() { ceph_ osd dump 2>/dev/null | awk '/^osd\.[0-9]+ up /{print $1}'; } # osd.0 ...
osd_is_up() { # osd_is_up N
    must_run "osd.$1"
    [[ " $(up_osds | tr '\n' ' ') " == *" osd.$1 "* ]]
}
osds_up() {
    local n
    for ((n = 0; n < NUM_OSDS; n++)); do must_run "osd.$n"; done
    [[ $(up_osds | wc -l) == "$NUM_OSDS" ]]
}
mon_up() { must_run mon && ceph_ mon stat >/dev/null 2>&1; }

# s3 N METHOD PATH [CURL ARGS...]: a signed request to gateway N; prints the HTTP status.
s3() {
    local port=${GW_PORTS[$1]} method=$2 path=$3
    shift 3
    curl -s -o /dev/null -w '%{http_code}' --max-time 30 \
        --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_KEY:$S3_SECRET" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -X "$method" "$@" "http://127.0.0.1:$port$path" || true
}
gw_answers() { # gw_answers N: the gateway lists the bucket
    must_run "gw$1"
    [[ $(s3 "$1" GET "/$S3_BUCKET?max-keys=1") == 200 ]]
}
gw_listens() { # gw_listens N: the gateway answers HTTP at all
    must_run "gw$1"
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${GW_PORTS[$1]}/"
}

port_taken() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_osd() { # start_osd N
    spawn "osd.$1" ceph-osd -c "$dir/ceph.conf" -i "$1" --osd-data "$dir/osd/$1" -f
}
start_gw() { # start_gw N
    spawn "gw$1" radosgw -c "$dir/ceph.conf" -n "client.rgw.gw$1" -f
}

write_conf() {
    cat >"$dir/ceph.conf" <<EOF
# Written by scripts/ceph-cluster.sh: a throw-away test cluster on loopback.
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon host = v1:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind port min = 6800
ms bind port max = 6900
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
run dir = $dir/run
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
crash dir = $dir/crash
mon data = $dir/mon/\$name
mon cluster log file = $dir/log/cluster.log
mon max pg per osd = 1000
paxos propose interval = 0.1
# A test cluster on a shared, nearly full disk: do not refuse to start below 5 % free (the default).
mon data avail crit = 0
mon warn on insecure global id reclaim allowed = false
mon warn on msgr2 not enabled = false
osd pool default size = 3
osd pool default min size = 2
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 2147483648
osd memory target = 939524096
# fewer op shards: each one costs ~0.3 s at OSD start (5 by default on a "rotational" file)
osd op num shards = 2
osd op num threads per shard = 2
osd heartbeat grace = 4
# An OSD that sends mon commands at boot (crush location, device class) can race its own monmap
# and exit with "wrong fsid" (seen with auth none); the script puts OSDs into the crush map itself.
osd crush update on start = false
osd class update on start = false
rgw data = $dir/rgw/\$name

[client.rgw.gw1]
rgw frontends = beast endpoint=127.0.0.1:${GW_PORTS[1]} tcp_nodelay=1

[client.rgw.gw2]
rgw frontends = beast endpoint=127.0.0.1:${GW_PORTS[2]} tcp_nodelay=1
EOF
}

# ---- commands ---------------------------------------------------------------------------------

cmd_start() {
    local t0 t n id
    t0=$(now_ms)

    if ! command -v radosgw >/dev/null; then
        say "radosgw missing: installing ceph with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            ceph-mon ceph-osd radosgw ceph-common >/dev/null
        t0=$(now_ms) # the start time below is the cluster's, not the install's
    fi
    curl --help all 2>/dev/null | grep -q -- --aws-sigv4 || die "curl has no --aws-sigv4 (need curl >= 7.75)"

    for n in "$dir"/pids/*.pid; do
        [[ -f $n ]] || continue
        running "$(basename "$n" .pid)" >/dev/null && die "$dir holds a running cluster: run '$0 stop $dir' first"
    done
    for n in "$MON_PORT" "${GW_PORTS[1]}" "${GW_PORTS[2]}"; do
        port_taken "$n" && die "port 127.0.0.1:$n is in use (another cluster? one per machine at a time)"
    done
    if [[ -e $dir/ceph.conf ]]; then
        rm -rf "${dir:?}"/{ceph.conf,env,pids,run,log,mon,osd,rgw,crash}
    elif [[ -d $dir && -n $(ls -A "$dir") ]]; then
        die "$dir is not empty and holds no cluster: give a new or empty folder"
    fi
    mkdir -p "$dir"/{pids,run,log,mon,osd,rgw,crash}

    # From here on, a failure stops whatever was started.
    trap 'if (($?)); then say "start failed: stopping what it started (logs in $dir/log)"; start_failed; fi' EXIT

    write_conf

    t=$(now_ms)
    ceph-mon -c "$dir/ceph.conf" -i a --mkfs --keyring /dev/null >>"$dir/log/mon.out" 2>&1 ||
        fail "$dir/log/mon.out" "ceph-mon --mkfs failed"
    spawn mon ceph-mon -c "$dir/ceph.conf" -i a -f
    wait_for 30 "the mon" mon_up || fail "$(logfile mon)" "the mon did not come up"
    say "mon up ($(secs_since "$t") s)"

    t=$(now_ms)
    # mkfs (a few seconds each) runs in the background while the mon registers the OSDs
    for ((n = 0; n < NUM_OSDS; n++)); do
        mkdir -p "$dir/osd/$n"
        ceph-osd -c "$dir/ceph.conf" -i "$n" --osd-data "$dir/osd/$n" --mkfs -f \
            >>"$dir/log/osd.$n.out" 2>&1 &
        mkfs_pids+=($!)
    done
    for ((n = 0; n < NUM_OSDS; n++)); do
        id=$(ceph_ osd create) || fail "$(logfile mon)" "ceph osd create failed"
        [[ $id == "$n" ]] || die "ceph osd create gave id $id, expected $n"
        ceph_ osd crush add "osd.$n" 1 root=default host=localhost >/dev/null 2>&1 ||
            fail "$(logfile mon)" "ceph osd crush add osd.$n failed"
    done
    for ((n = 0; n < NUM_OSDS; n++)); do
        wait "${mkfs_pids[$n]}" || fail "$dir/log/osd.$n.out" "ceph-osd --mkfs of osd.$n failed"
    done
    for ((n = 0; n < NUM_OSDS; n++)); do start_osd "$n"; done
    wait_for 60 "$NUM_OSDS OSDs up" osds_up || fail "$(logfile mon)" "the OSDs did not all come up"
    say "$NUM_OSDS OSDs up ($(secs_since "$t") s)"

    t=$(now_ms)
    radosgw-admin -c "$dir/ceph.conf" user create --uid "$S3_KEY" --display-name "$S3_KEY" \
        --access-key "$S3_KEY" --secret-key "$S3_SECRET" >>"$dir/log/radosgw-admin.out" 2>&1 ||
        fail "$dir/log/radosgw-admin.out" "radosgw-admin user create failed"
    say "S3 user $S3_KEY created ($(secs_since "$t") s)"

    t=$(now_ms)
    start_gw 1
    start_gw 2
    wait_for 60 "gateway 1 to listen" gw_listens 1 || fail "$(logfile gw1)" "gateway 1 does not answer"
    wait_for 60 "gateway 2 to listen" gw_listens 2 || fail "$(logfile gw2)" "gateway 2 does not answer"
    say "gateways listen ($(secs_since "$t") s)"

    t=$(now_ms)
    local code
    code=$(s3 1 PUT "/$S3_BUCKET")
    [[ $code == 200 ]] || fail "$(logfile gw1)" "creating bucket $S3_BUCKET gave HTTP $code"
    code=$(s3 1 PUT "/$S3_BUCKET/.warm-up" --data-binary warm-up)
    [[ $code == 200 ]] || fail "$(logfile gw1)" "the warm-up PUT gave HTTP $code"
    code=$(s3 1 DELETE "/$S3_BUCKET/.warm-up")
    [[ $code == 204 ]] || fail "$(logfile gw1)" "the warm-up DELETE gave HTTP $code"
    wait_for 30 "gateway 1 to serve S3" gw_answers 1 || fail "$(logfile gw1)" "gateway 1 does not serve S3"
    wait_for 30 "gateway 2 to serve S3" gw_answers 2 || fail "$(logfile gw2)" "gateway 2 does not serve S3"
    say "bucket $S3_BUCKET ready on both gateways ($(secs_since "$t") s)"

    cat >"$dir/env" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:${GW_PORTS[1]} AWS_ENDPOINT_URL_2=http://127.0.0.1:${GW_PORTS[2]} AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=$S3_REGION AWS_ALLOW_HTTP=true BUNDLEFS_S3_BUCKET=$S3_BUCKET CEPH_CONF=$dir/ceph.conf
EOF
    trap - EXIT
    say "cluster started in $(secs_since "$t0") s; use: . $dir/env; stop: $0 stop $dir"
}

cmd_stop() {
    stop_all
    say "stopped (logs kept in $dir/log)"
}

cmd_kill_osd() { # N
    local pid
    pid=$(running "osd.$1") || die "osd.$1 is not running"
    kill -KILL "$pid"
    wait_gone 10 "$pid" || die "osd.$1 (pid $pid) still there after SIGKILL"
    rm -f "$(pidfile "osd.$1")"
    say "osd.$1 (pid $pid) killed"
}

cmd_start_osd() { # N
    local t
    t=$(now_ms)
    running "osd.$1" >/dev/null && die "osd.$1 is already running"
    [[ -d $dir/osd/$1 ]] || die "no osd.$1 in $dir"
    start_osd "$1"
    wait_for 60 "osd.$1 up" osd_is_up "$1" || fail "$(logfile "osd.$1")" "osd.$1 did not come up"
    say "osd.$1 up ($(secs_since "$t") s)"
}

cmd_stop_gw() { # N
    stop_daemons "gw$1"
    say "gateway $1 stopped"
}

cmd_start_gw() { # N
    local t
    t=$(now_ms)
    running "gw$1" >/dev/null && die "gateway $1 is already running"
    start_gw "$1"
    wait_for 60 "gateway $1" gw_answers "$1" || fail "$(logfile "gw$1")" "gateway $1 does not serve S3"
    say "gateway $1 up ($(secs_since "$t") s)"
}

# ---- main -------------------------------------------------------------------------------------

(($# >= 2)) || usage
cmd=$1
dir=$(realpath -m -- "$2")
case $cmd in
start | stop) (($# == 2)) || usage ;;
kill-osd | start-osd)
    (($# == 3)) && [[ $3 =~ ^[0-9]+$ ]] && (($3 < NUM_OSDS)) || usage
    [[ -f $dir/ceph.conf ]] || die "no cluster in $dir"
    ;;
stop-gw | start-gw)
    (($# == 3)) && [[ $3 == 1 || $3 == 2 ]] || usage
    [[ -f $dir/ceph.conf ]] || die "no cluster in $dir"
    ;;
*) usage ;;
esac

case $cmd in
start) cmd_start ;;
stop) cmd_stop ;;
kill-osd) cmd_kill_osd "$3" ;;
start-osd) cmd_start_osd "$3" ;;
stop-gw) cmd_stop_gw "$3" ;;
start-gw) cmd_start_gw "$3" ;;
esac
