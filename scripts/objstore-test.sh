#!/usr/bin/env bash
# Runs a command (default: the object-store tests) with a throw-away Ceph cluster (two S3
# gateways on 127.0.0.1:7480/7481, scripts/ceph-cluster.sh) started before it and stopped after it,
# also when it fails or is interrupted. The command sees the cluster's AWS_* variables and
# BUNDLEFS_S3_TEST=1 (tests/it/objstore.rs fails, rather than skips, without it).
#
#   scripts/objstore-test.sh                      cargo test --test it -- objstore::
#   scripts/objstore-test.sh cargo test --all-targets
#
# CEPH_DIR=DIR keeps the cluster's files (logs) in DIR instead of a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${CEPH_DIR:-$(mktemp -d /tmp/bundlefs-ceph-XXXXXX)}
stop() {
    bash scripts/ceph-cluster.sh stop "$dir" >/dev/null 2>&1 || true
    [[ -n ${CEPH_DIR:-} ]] || rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "==> starting Ceph (scripts/ceph-cluster.sh start $dir)"
bash scripts/ceph-cluster.sh start "$dir"
# shellcheck disable=SC1091
. "$dir/env"
export BUNDLEFS_S3_TEST=1

if (($# == 0)); then
    set -- cargo test --test it -- objstore::
fi
echo "==> $*"
"$@"
