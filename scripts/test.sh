#!/bin/sh
# The whole test suite: unit (cmocka), the replication simulator (tests/sim),
# fuzz-corpus replay and integration
# (pytest, real servers on 127.0.0.1), first in the optimised build, then
# again in the ASan+UBSan build.  Prints one summary line per stage.
set -eu
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_stage() { # build dir, simulator seeds
	B=$1
	echo "== unit tests ($B)"
	for t in "$B"/tests/test_*; do
		"$t"
	done
	echo "== simulator ($B, $2 seeds)"
	"$B"/sim --seeds "$2"
	echo "== fuzz corpora ($B)"
	for d in fuzz/corpus/*/; do
		"$B"/fuzz-replay "$(basename "$d")" "$d"
	done
	echo "== integration tests ($B)"
	SYNCSTORE_BIN="$PWD/$B/syncstore" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration
}

make -s -j"$JOBS" all build/fuzz-replay build/sim
run_stage build 1000
make -s -j"$JOBS" test-asan
# The sanitizers make each seed ~10x slower: fewer seeds there.
run_stage build-asan 100
echo "all tests passed"
