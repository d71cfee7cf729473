#!/bin/sh
# The scale curve of one ncgrpcd: bench_scale.py at growing numbers of idle
# devices, one table of RSS per device, connect time and ListDevices time.
#
#   bench/bench_curve.sh [BUILD_DIR] [DEVICES...]
#                                  default: build/release 1000 10000 30000
#
# 1,000 clients per ncgrpc-agent process and one listen address per 12,000
# devices (127.0.0.1, .2, ...: a loopback address pair has about 28,000
# ephemeral ports).  100,000 devices take about 14 GB (the agents' share is
# most of it) and a raised RLIMIT_NOFILE (bench_scale.py raises it, root may
# raise the hard limit).  Each size logs to $TMPDIR/ncgrpc-curve.*/N.log.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build/release}
[ $# -gt 0 ] && shift
sizes=${*:-1000 10000 30000}
case $build in /*) ;; *) build=$top/$build ;; esac
out=$(mktemp -d "${TMPDIR:-/tmp}/ncgrpc-curve.XXXXXX")

for n in $sizes; do
	agents=$(((n + 999) / 1000))
	listen=$(((n + 11999) / 12000))
	echo "curve: $n devices ($agents agents, $listen listen addresses); log $out/$n.log" >&2
	/usr/bin/python3 "$top/bench/bench_scale.py" --ncgrpcd "$build/src/server/ncgrpcd" \
	    --agent "$build/src/agent/ncgrpc-agent" --devices "$n" --agents "$agents" \
	    --listen "$listen" --sessions 20 --concurrency 1 --connect-timeout 3600 \
	    >"$out/$n.log" 2>&1 || echo "curve: $n devices FAILED, see $out/$n.log" >&2
done

printf '%-10s %14s %16s %14s %18s %16s\n' devices "RSS (MiB)" "per device (KiB)" "connect (s)" "ListDevices (ms)" "agents (MiB)"
for n in $sizes; do
	awk -v n="$n" '
	/^ncgrpcd RSS, [0-9]+ idle devices/ { rss = $(NF-1) / 1024 }
	/^RSS per idle device/ { per = $(NF-1) }
	/^time to connect all devices/ { t = $(NF-1) }
	/^ListDevices with/ { l = $(NF-1) }
	/^agents.. RSS/ { a = $(NF-1) / 1024 }
	END { printf "%-10s %14.1f %16s %14s %18s %16.1f\n", n, rss, per, t, l, a }' "$out/$n.log"
done
