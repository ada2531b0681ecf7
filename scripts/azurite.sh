#!/usr/bin/env bash
# A throw-away Azure Blob Storage for the az:// tests: Microsoft's Azurite emulator (npm package
# `azurite`, installed into ~/.cache/bundlefs/azurite when missing), blob service only, bound to
# 127.0.0.1:10000, its data in DIR, stopped by PID. The Python SDK `azure-storage-blob` (PyPI,
# installed when missing) creates the container, which object_store cannot do.
#
#   scripts/azurite.sh start DIR     start; writes DIR/env (AZURE_* variables, BUNDLEFS_AZ_*)
#   scripts/azurite.sh stop DIR      stop the emulator started in DIR (by its PID)
#
# DIR/env exports AZURE_STORAGE_USE_EMULATOR=true (object_store then uses Azurite's well-known
# account devstoreaccount1 and its published key at http://127.0.0.1:10000) and
# BUNDLEFS_AZ_CONTAINER=bundlefs, BUNDLEFS_AZ_TEST=1.
set -euo pipefail

cmd=${1:?usage: azurite.sh start|stop DIR}
dir=${2:?usage: azurite.sh start|stop DIR}
VERSION=3.37.0
PORT=10000
prefix=${AZURITE_PREFIX:-$HOME/.cache/bundlefs/azurite}
say() { printf '== %s\n' "$*"; }

case $cmd in
stop)
    if [[ -f $dir/azurite.pid ]]; then
        pid=$(cat "$dir/azurite.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/azurite.pid"
    fi
    exit 0
    ;;
start) ;;
*)
    echo "azurite.sh: unknown command $cmd (start|stop)" >&2
    exit 2
    ;;
esac

command -v node >/dev/null 2>&1 || {
    echo "azurite.sh: node (Node.js >= 18) is needed to run Azurite" >&2
    exit 1
}
bin=$prefix/node_modules/.bin/azurite-blob
if [[ ! -x $bin ]]; then
    say "installing azurite@$VERSION (npm) into $prefix"
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --prefix "$prefix" "azurite@$VERSION" >/dev/null
fi
if ! python3 -c 'import azure.storage.blob' >/dev/null 2>&1; then
    say "installing azure-storage-blob (pip)"
    python3 -m pip install --quiet azure-storage-blob ||
        python3 -m pip install --quiet --break-system-packages azure-storage-blob
fi

mkdir -p "$dir/data"
if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
    echo "azurite.sh: 127.0.0.1:$PORT is taken (another Azurite?); stop it first" >&2
    exit 1
fi
"$bin" --blobHost 127.0.0.1 --blobPort "$PORT" --location "$dir/data" --silent \
    --skipApiVersionCheck --loose >"$dir/azurite.log" 2>&1 &
echo $! >"$dir/azurite.pid"
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.1
done
(exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || {
    cat "$dir/azurite.log" >&2
    echo "azurite.sh: Azurite did not listen on 127.0.0.1:$PORT" >&2
    exit 1
}
python3 - <<'PY'
from azure.storage.blob import BlobServiceClient
from azure.core.exceptions import ResourceExistsError
# Azurite's well-known development account (public; the emulator accepts nothing else).
c = BlobServiceClient.from_connection_string("UseDevelopmentStorage=true")
try:
    c.create_container("bundlefs")
except ResourceExistsError:
    pass
PY
cat >"$dir/env" <<EOF
export AZURE_STORAGE_USE_EMULATOR=true
export BUNDLEFS_AZ_CONTAINER=bundlefs
export BUNDLEFS_AZ_TEST=1
EOF
say "Azurite $VERSION listens on 127.0.0.1:$PORT (pid $(cat "$dir/azurite.pid")); container bundlefs; env: $dir/env"
