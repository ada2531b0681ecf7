#!/usr/bin/env bash
# Serving benchmark: `bundlefs serve` from a local Compact V2 cache against nginx serving the
# exploded copy of the same tiles, side by side in one run: wrk (Debian) asks both for random tiles
# of one level over keep-alive connections, with the same request list.
#
#   scripts/bench-serve.sh
#   MAXLEVEL=6   levels 0..MAXLEVEL of the sample cache (`bundlefs sample`); tiles from level MAXLEVEL
#   SECS=10      wrk's duration per run
#   CONNS=32     keep-alive connections; THREADS=2 wrk threads
#   BIN=PATH     the bundlefs under test (default: cargo build --release of this repo)
#   CACHE=DIR    a sample cache already made with `bundlefs sample DIR --levels 0-MAXLEVEL`
#
# Also MapProxy serving the same compact cache (its WMTS RESTful tiles from a `type: compact`,
# version 2 cache on a Web Mercator grid with origin nw), under Debian's gunicorn (/usr/bin, the
# system python3 that has MapProxy) with gthread workers and keep-alive, as MapProxy is deployed;
# skipped when /usr/bin/gunicorn is missing (apt-get install gunicorn).
#
# Prints, per server, wrk's requests/s and latency, and the ratios serve/nginx (goal >= 1.0) and
# serve/MapProxy (goal >= 10).
# nginx runs with twice as many workers as CPUs (serve: a thread per connection), access log off,
# sendfile on; serve with its defaults. Both on 127.0.0.1, stopped by PID at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '==> %s\n' "$*" >&2; }

MAXLEVEL=${MAXLEVEL:-6}
SECS=${SECS:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "bench: $tool missing (apt-get install wrk nginx-light)" >&2; exit 1; }
done
work=$(mktemp -d /tmp/bundlefs-bench-serve-XXXXXX)
chmod 755 "$work" # nginx workers run as another user
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [[ -f $work/gunicorn.pid ]] && kill "$(cat "$work/gunicorn.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -z ${BIN:-} ]]; then
    say "cargo build --release --bin bundlefs"
    cargo build --release --quiet --bin bundlefs
    BIN=$repo/target/release/bundlefs
fi
if [[ -z ${CACHE:-} ]]; then
    say "bundlefs sample (levels 0-$MAXLEVEL)"
    "$BIN" sample "$work/cache" --levels "0-$MAXLEVEL" >/dev/null
    CACHE=$work/cache
fi
say "exploded copy for nginx"
"$BIN" export "$CACHE" "$work/exploded" --storage exploded >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpus=$(nproc)
workers=$((2 * cpus))

nport=$(free_port)
cat >"$work/nginx.conf" <<EOF
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon on;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { image/png png; image/jpeg jpg; }
    server {
        listen 127.0.0.1:$nport;
        root $work/exploded/_alllayers;
    }
}
EOF
nginx -c "$work/nginx.conf" -p "$work"

sport=$(free_port)
"$BIN" serve "s=$CACHE" --listen "127.0.0.1:$sport" >"$work/serve.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q '^WMTS at' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done

mport=""
if [[ -x /usr/bin/gunicorn ]] && command -v mapproxy-util >/dev/null; then
    mport=$(free_port)
    cat >"$work/mapproxy.yaml" <<YAML
services:
  wmts:
    restful: true
    kvp: false
layers:
  - name: s
    title: s
    sources: [c]
caches:
  c:
    grids: [nw]
    sources: []
    cache:
      type: compact
      version: 2
      directory: $CACHE/_alllayers
grids:
  nw:
    base: GLOBAL_WEBMERCATOR
    origin: nw
    num_levels: $((MAXLEVEL + 1))
globals:
  cache:
    base_dir: $work/mp-base
    lock_dir: $work/mp-locks
YAML
    (cd "$work" && /usr/bin/gunicorn --bind "127.0.0.1:$mport" --workers "$workers" \
        --worker-class gthread --threads 8 --keep-alive 30 --log-level warning \
        --pid "$work/gunicorn.pid" --daemon \
        "mapproxy.wsgiapp:make_wsgi_app('$work/mapproxy.yaml')" >"$work/gunicorn.log" 2>&1)
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$mport/wmts/s/nw/0/0/0.png" && break
        sleep 0.2
    done
fi

# The same random tiles of level MAXLEVEL for both, as wrk Lua scripts over a fixed list.
python3 - "$MAXLEVEL" "$work" <<'EOF'
import random, sys
level, work = int(sys.argv[1]), sys.argv[2]
n = 1 << level
random.seed(24)
tiles = [(random.randrange(n), random.randrange(n)) for _ in range(10000)]
def lua(name, paths):
    with open(f"{work}/{name}.lua", "w") as f:
        f.write("local paths = {\n" + ",\n".join(f'"{p}"' for p in paths) + "\n}\n")
        f.write("local i = 0\nrequest = function()\n  i = i % #paths + 1\n"
                "  return wrk.format(\"GET\", paths[i])\nend\n")
lua("nginx", [f"/L{level:02d}/R{r:08x}/C{c:08x}.png" for r, c in tiles])
lua("serve", [f"/arcgis/rest/services/s/MapServer/tile/{level}/{r}/{c}" for r, c in tiles])
lua("mapproxy", [f"/wmts/s/nw/{level}/{c}/{r}.png" for r, c in tiles])
EOF

run() { # name port
    curl -sf -o /dev/null "http://127.0.0.1:$2/" || true
    wrk -t "$THREADS" -c "$CONNS" -d "${SECS}s" --latency -s "$work/$1.lua" "http://127.0.0.1:$2" >"$work/$1.wrk"
    local rps lat
    rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$1.wrk")
    lat=$(awk '/^ +50%/ {print $2}' "$work/$1.wrk")
    errs=$(grep -E 'Non-2xx|Socket errors' "$work/$1.wrk" || true)
    printf '%-8s %12s req/s   median latency %s %s\n' "$1" "$rps" "$lat" "$errs" >&2
    echo "$rps"
}
say "wrk -t$THREADS -c$CONNS -d${SECS}s, random tiles of level $MAXLEVEL ($(nproc) CPUs, $workers nginx workers)"
n=$(run nginx "$nport")
s=$(run serve "$sport")
python3 -c "import sys; print(f'serve/nginx: {float(sys.argv[2]) / float(sys.argv[1]):.2f}x (goal >= 1.0)')" "$n" "$s"
if [[ -n $mport ]]; then
    m=$(run mapproxy "$mport")
    python3 -c "import sys; print(f'serve/MapProxy: {float(sys.argv[2]) / float(sys.argv[1]):.1f}x (goal >= 10)')" "$m" "$s"
fi
