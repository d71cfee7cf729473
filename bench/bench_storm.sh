#!/bin/sh
# ncgrpcd's resident memory around a connect storm: N devices, each with the
# default KDF cost (scrypt, 16 MiB per check), connect at once through one
# ncgrpc-agent.  Prints RSS idle, when all are connected, and 3 s later.
#
#   bench/bench_storm.sh BUILD_DIR [OTHER_BUILD_DIR] [DEVICES]
#
# With OTHER_BUILD_DIR, the same storm runs against both builds, one after
# the other, for a comparison in one sitting.  Loopback only.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
n=${3:-100}
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT

storm() {
	b=$1
	case $b in /*) ;; *) b=$top/$b ;; esac
	printf '%s: ' "$1"
	NCGRPC_STORM_DEVICES=$n GRPC_VERBOSITY=NONE /usr/bin/python3 \
		"$top/tests/session/test_session_end.py" \
		--ncgrpcd "$b/src/server/ncgrpcd" --agent "$b/src/agent/ncgrpc-agent" \
		--stub-dir "$stubs" ServerTest.test_connect_storm_memory 2>&1 |
		sed -n 's/^connect storm of/storm of/p'
}

storm "$1"
[ -n "${2:-}" ] && storm "$2"
exit 0
