#!/bin/sh
# sim-selftest: every planted bug (build/sim-bugK, -DSIM_BUG=K) must make the
# simulator fail on some seed where the unplanted build (build/sim) passes.
# Comparing against the baseline keeps the self-test honest while the real
# code still has failing seeds of its own (see the report / docs).
# usage: tests/sim/selftest.sh BUILD_DIR SEEDS BUG...
set -u
B=$1 SEEDS=$2
shift 2
"$B/sim" --seeds "$SEEDS" > "$B/sim-base.log" 2>&1
base=$(grep -o '^FAIL seed [0-9]*' "$B/sim-base.log" | awk '{print $3}' | sort -u)
echo "sim-selftest: baseline (no bug): $(echo "$base" | grep -c .) of $SEEDS seeds fail"
caught=0 total=0
for k in "$@"; do
	total=$((total + 1))
	"$B/sim-bug$k" --seeds "$SEEDS" > "$B/sim-bug$k.log" 2>&1
	rc=$?
	# failures on seeds the baseline passes, with the check that caught each
	new=$(grep '^FAIL seed' "$B/sim-bug$k.log" | while read -r _ _ s chk _; do
		echo "$base" | grep -qx "$s" || echo "$s ${chk%:}"; done)
	n=$(echo "$new" | grep -c .)
	if [ "$rc" -ne 0 ] && [ "$n" -gt 0 ]; then
		caught=$((caught + 1))
		checks=$(echo "$new" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
		echo "sim-selftest: bug $k CAUGHT on $n new seeds (by $checks); e.g. seed $(echo "$new" | head -1 | cut -d' ' -f1): build/sim-bug$k --seed $(echo "$new" | head -1 | cut -d' ' -f1)"
	else
		echo "sim-selftest: bug $k NOT caught in $SEEDS seeds (rc $rc; $B/sim-bug$k.log)"
	fi
done
echo "sim-selftest: $caught of $total planted bugs caught"
[ "$caught" -eq "$total" ]
