#!/bin/sh
# utf8_valid()/utf8_sanitize() throughput, this tree against BASE_REV's
# utf8.c, in one sitting (the machine is shared: compare the ratios).
#   bench/bench_utf8.sh [BASE_REV]      (default: 030560d, before the runs)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$here/..
base=${1:-030560d}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$top" show "$base:src/common/utf8.c" >"$tmp/utf8_base.c"
for v in base new; do
	src=$top/src/common/utf8.c
	[ "$v" = base ] && src=$tmp/utf8_base.c
	cc -std=c11 -O2 -D_GNU_SOURCE -I"$top/src/common" -o "$tmp/bench_$v" \
	    "$here/bench_utf8.c" "$src"
done
for v in base new; do
	echo "== $v ($( [ "$v" = base ] && echo "$base" || git -C "$top" rev-parse --short HEAD))"
	"$tmp/bench_$v"
done
