#!/bin/sh
# Keystroke echo latency of a raw terminal through ncgrpcd with N idle
# devices (default 1000), against a local pty in the same run.
#   bench/bench_echo.sh [BUILD_DIR] [bench_echo.py options]
# Builds ncgrpcd and ncgrpc-agent in BUILD_DIR (default build) and runs
# bench_echo.py with the open-file limit raised for itself and its children.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
[ $# -gt 0 ] && shift
cmake -S "$here/.." -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
make -C "$build" -j2 ncgrpcd ncgrpc-agent >/dev/null
ulimit -n 65536 2>/dev/null || true
exec /usr/bin/python3 "$here/bench_echo.py" \
    --ncgrpcd "$build/src/server/ncgrpcd" --agent "$build/src/agent/ncgrpc-agent" "$@"
