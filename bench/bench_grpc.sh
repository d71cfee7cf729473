#!/bin/sh
# Compares ncgrpc (ncgrpc-testc -> ncgrpc-testd) with grpcio (pyclient.py ->
# pyserver.py) on the same workload over TLS on loopback: bidi throughput with
# 64 KiB messages (bench-stream) and unary round-trip rate (bench-unary).
#
#   bench/bench_grpc.sh BUILD_DIR [SECONDS]
#
# BUILD_DIR is a CMake build directory with src/test/ncgrpc-testd and
# ncgrpc-testc built.  Not part of ctest.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 BUILD_DIR [SECONDS]" >&2
	exit 64
fi
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/bench_grpc.py" --build "$1" --seconds "${2:-5}" --size 65536
