#!/bin/sh
# CPU time per unit of work of our gRPC transport: one ncgrpc-testc against
# one ncgrpc-testd over TLS on loopback, client and server CPU (user +
# system) added up.  A process waiting for a core uses no CPU, so the
# figure holds up on a busy machine, where the rates do not.
#
#   bench/bench_transport_cpu.sh BUILD_DIR [SECONDS] [bench-unary|bench-stream]
#
# Prints the rate and the CPU per call (bench-unary) or per MiB echoed
# (bench-stream, 64 KiB messages).  Not part of ctest.
set -eu
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
	echo "usage: $0 BUILD_DIR [SECONDS] [bench-unary|bench-stream]" >&2
	exit 64
fi
build=$1
secs=${2:-3}
mode=${3:-bench-unary}
case $mode in bench-unary) extra= ;; bench-stream) extra=65536 ;; *) exit 64 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ncgrpc-bench-cpu.XXXXXX")
trap 'kill "$srv" 2>/dev/null; rm -rf "$work"' EXIT
/usr/bin/python3 "$here/../tests/interop/mkcerts.py" "$work/certs" >/dev/null
"$build/src/test/ncgrpc-testd" --listen 127.0.0.1:0 --cert "$work/certs/server.pem" \
	--key "$work/certs/server.key" >"$work/srv.out" 2>&1 &
srv=$!
i=0
while ! port=$(sed -n 's/.*listening 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/srv.out" | head -1) ||
	[ -z "$port" ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || { echo "ncgrpc-testd did not start" >&2; cat "$work/srv.out" >&2; exit 1; }
	sleep 0.1
done
tick=$(getconf CLK_TCK)
cpu_srv() { awk '{ print $14 + $15 }' "/proc/$srv/stat"; }
t0=$(cpu_srv)
/usr/bin/time -f "cpu %U %S" -o "$work/time" "$build/src/test/ncgrpc-testc" \
	--connect "127.0.0.1:$port" --ca "$work/certs/ca.pem" "$mode" "$secs" $extra >"$work/cli.out"
t1=$(cpu_srv)
awk -v srv="$((t1 - t0))" -v tick="$tick" -v mode="$mode" '
	FILENAME ~ /time$/ && $1 == "cpu" { cli = $2 + $3 }
	/calls=/ { split($2, a, "="); n = a[2]; rate = $4 }
	/messages=/ { split($3, a, "="); n = a[2] / 1048576; rate = $5 }
	END {
		cpu = cli + srv / tick
		printf "%s %s cpu_s=%.2f cpu_per_%s=%.1f us\n", mode, rate, cpu,
		    mode == "bench-unary" ? "call" : "mib", cpu / n * 1e6
	}' "$work/time" "$work/cli.out"
