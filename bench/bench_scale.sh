#!/bin/sh
# ncgrpcd scale benchmark: N idle devices (default 10000) on one ncgrpcd.
#   bench/bench_scale.sh [BUILD_DIR] [bench_scale.py options]
# Builds ncgrpcd and ncgrpc-agent in BUILD_DIR (default build), raises the
# open-file limit for itself and its children only, and runs bench_scale.py.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
[ $# -gt 0 ] && shift
cmake -S "$here/.." -B "$build" >/dev/null
make -C "$build" -j"$(nproc)" ncgrpcd ncgrpc-agent >/dev/null
ulimit -n "$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)" 2>/dev/null || ulimit -n 65536 || true
exec /usr/bin/python3 "$here/bench_scale.py" \
    --ncgrpcd "$build/src/server/ncgrpcd" --agent "$build/src/agent/ncgrpc-agent" "$@"
