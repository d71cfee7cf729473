#!/bin/sh
# The scale curve of one ncgrpcd: bench_scale.py at growing numbers of idle
# devices, one table of RSS per device, connect time and ListDevices time.
#
#   bench/bench_curve.sh [BUILD_DIR] [DEVICES...]
#                                  default: build/release 1000 5000 10000 19000
#
# 1,000 clients per ncgrpc-agent process, one listen address per 12,000
# devices (127.0.0.1, .2, ...: a loopback address pair has about 28,000
# ephemeral ports), fleet limits (bench_scale.py --limits fleet), and 50
# shell sessions one after another at each size.  ncgrpcd needs one file
# descriptor per device: bench_scale.py raises RLIMIT_NOFILE up to the hard
# limit, and only a process with CAP_SYS_RESOURCE can raise that (20,000 on
# the machine of BENCHMARKS.md, hence 19,000).  100,000 devices take about
# 10 GB, most of it the agents'.  Each size logs to
# $TMPDIR/ncgrpc-curve.*/N.log.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build/release}
[ $# -gt 0 ] && shift
sizes=${*:-1000 5000 10000 19000}
case $build in /*) ;; *) build=$top/$build ;; esac
out=$(mktemp -d "${TMPDIR:-/tmp}/ncgrpc-curve.XXXXXX")

for n in $sizes; do
	agents=$(((n + 999) / 1000))
	listen=$(((n + 11999) / 12000))
	echo "curve: $n devices ($agents agents, $listen listen addresses); log $out/$n.log" >&2
	/usr/bin/python3 "$top/bench/bench_scale.py" --ncgrpcd "$build/src/server/ncgrpcd" \
	    --agent "$build/src/agent/ncgrpc-agent" --devices "$n" --agents "$agents" \
	    --listen "$listen" --limits fleet --sessions 50 --concurrency 1 \
	    --connect-timeout 3600 \
	    >"$out/$n.log" 2>&1 || echo "curve: $n devices FAILED, see $out/$n.log" >&2
done

printf '%-8s %10s %12s %12s %12s %14s %14s %12s\n' devices "RSS (MiB)" \
    "per device" "connect (s)" "List (ms)" "started p99" "first p99" "agents (MiB)"
for n in $sizes; do
	awk -v n="$n" '
	/^ncgrpcd RSS, [0-9]+ idle devices/ { rss = $(NF-1) / 1024 }
	/^RSS per idle device/ { per = $(NF-1) }
	/^time to connect all devices/ { t = $(NF-1) }
	/^ListDevices with/ { l = $(NF-1) }
	/^Session -> SessionStarted/ { st = $NF == "ms" ? $(NF-1) : "-" }
	/^Session -> first output byte/ { fb = $NF == "ms" ? $(NF-1) : "-" }
	/^agents. RSS/ { a = $(NF-1) / 1024 }
	END { printf "%-8s %10.1f %9s KiB %12s %12s %11s ms %11s ms %12.1f\n",
	    n, rss, per, t, l, st, fb, a }' "$out/$n.log"
done
