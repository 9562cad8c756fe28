#!/bin/sh
# sim-selftest: every planted bug (build/sim-bugK, -DSIM_BUG=K) must make the
# simulator fail on some seed where the unplanted build (build/sim) passes.
# Comparing against the baseline keeps the self-test honest while the real
# code still has failing seeds of its own (see the report / docs).
#
# Each build runs twice: SEEDS seeds as `make test` runs them, and
# HARSH_SEEDS with --harsh (many more chunks missing at a source, destroyed
# disks and power cuts inside a flush), where the bugs that need a parked
# record or a cut flush to show are caught far more often.
# usage: tests/sim/selftest.sh BUILD_DIR SEEDS HARSH_SEEDS BUG...
set -u
B=$1 SEEDS=$2 HARSH=$3
shift 3

# failing seeds of one run, as "mode:seed check"
fails() { grep '^FAIL seed' "$1" | while read -r _ _ s chk _; do echo "$2:$s ${chk%:}"; done; }

run() { # binary, log prefix
	"$B/$1" --seeds "$SEEDS" > "$B/$2.log" 2>&1
	"$B/$1" --harsh --seeds "$HARSH" > "$B/$2-harsh.log" 2>&1
	{ fails "$B/$2.log" default; fails "$B/$2-harsh.log" harsh; }
}

base=$(run sim sim-base | cut -d' ' -f1 | sort -u)
echo "sim-selftest: baseline (no bug): $(echo "$base" | grep -c .) of $SEEDS + $HARSH (harsh) seeds fail"
caught=0 total=0
for k in "$@"; do
	total=$((total + 1))
	# failures on seeds the baseline passes, with the check that caught each
	new=$(run "sim-bug$k" "sim-bug$k" | while read -r s chk; do
		echo "$base" | grep -qx "$s" || echo "$s $chk"; done)
	n=$(echo "$new" | grep -c .)
	if [ "$n" -gt 0 ]; then
		caught=$((caught + 1))
		modes=$(echo "$new" | cut -d: -f1 | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
		checks=$(echo "$new" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
		first=$(echo "$new" | head -1 | cut -d' ' -f1)
		flag=$(echo "$first" | grep -q '^harsh' && echo ' --harsh')
		echo "sim-selftest: bug $k CAUGHT on $n new seeds ($modes; by $checks); e.g. build/sim-bug$k$flag --seed ${first#*:}"
	else
		echo "sim-selftest: bug $k NOT caught in $SEEDS + $HARSH (harsh) seeds ($B/sim-bug$k*.log)"
	fi
done
echo "sim-selftest: $caught of $total planted bugs caught"
[ "$caught" -eq "$total" ]
