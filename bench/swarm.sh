#!/usr/bin/env bash
# bench/swarm.sh — swarm speed-up (issue 4): a SIZE_MB random file fetched by
# a fresh `client` (docs/SWARM.md) from 1 seeder and from 4, every seeder's
# upload capped at the same rate.  Goal: ≥ 3× faster from 4.
#
# Usage: bench/swarm.sh [VAR=VALUE]...
#
# Setup (not timed): two trackers on 127.0.0.1 (each the other's peer), one
# random file, four seeder clients, each in its own directory with its own
# copy of the file and SYNCSTORE_UPLOAD_RATE=RATE (MB/s, 10^6 bytes, all its
# connections together), fed commands through a FIFO.  Seeder 1 `share`s the
# file as NAME.mtorrent, the others `share` their copies (same bytes, same
# root), and the script waits until both trackers' seederlist exports list
# all four.
#
# Each timed run: for N seeders, seeders N+1..4 `remove` the share (seeders
# that were off `share` again), and the script waits until both seederlists
# list exactly seeders 1..N.  Then a fresh downloader (empty directory, new
# log, no rate limit) runs
#     printf 'get SEEDER1/NAME.mtorrent out.bin\n' | client ...
# timed from start to exit (end of input is `close`: it waits for the
# download, withdraws, exits).  The exit status must be 0 and out.bin must
# equal the file (cmp); anything else ends the script with the client's log.
# The downloader's log lines `download NAME: BYTES bytes from ADDR` give the
# sources used and each one's share.  Runs are interleaved (1, 4, 1, 4, …);
# medians of RUNS runs.  Table on stdout, progress on stderr.
#
# Variables (environment or arguments):
#   SIZE_MB=512     file size (MiB)
#   RATE=20         upload cap of every seeder (MB/s)
#   RUNS=3          timed runs per seeder count (median reported)
#   SEEDERS="1 4"   seeder counts to measure (each 1..4; speed-up is against
#                   the first)
#   DL_MAX=600      a download not finished after DL_MAX s is a failure
#   BENCH_DIR=/tmp  a work dir is made under it and removed at exit
#   KEEP=1          keep the work dir (logs of trackers, seeders and every
#                   downloader are in its log/)
#   RESULTS=FILE    also write the table to FILE (and raw lines to FILE.raw)
#   SYNCSTORE=path  binary to measure (default build/syncstore, copied first;
#                   run as `tracker` and `client` through symlinks)
#   QUIET_MAX=120 QUIET_CPUS=0.25   before each timed run wait (at most
#                   QUIET_MAX s) until the machine is nearly idle
#
# A quick check: bench/swarm.sh SIZE_MB=64 RUNS=1

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARGS=("$@")
for a in "$@"; do
	case "$a" in
	*=*) export "${a?}" ;;
	-h | --help)
		sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "swarm.sh: unknown argument '$a' (try --help)" >&2
		exit 2
		;;
	esac
done

SIZE_MB=${SIZE_MB:-512}
RATE=${RATE:-20}
RUNS=${RUNS:-3}
SEEDERS=${SEEDERS:-1 4}
DL_MAX=${DL_MAX:-600}
NSEED=4 # seeder processes started
NAME=swarm.bin

ME=swarm.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
for n in $SEEDERS; do
	case "$n" in
	[1-4]) ;;
	*) die "SEEDERS: '$n' is not a count from 1 to $NSEED" ;;
	esac
done
[ "$RUNS" -ge 1 ] 2>/dev/null || die "RUNS must be a positive number"
# the environment must not carry a cap or a lease into the trackers or the downloader
unset SYNCSTORE_UPLOAD_RATE SYNCSTORE_LEASE_MS SYNCSTORE_SERVER
bench_setup openssl /usr/bin/time timeout mkfifo cmp
ln -s syncstore "$W/bin/tracker"
ln -s syncstore "$W/bin/client"
export SYNCSTORE_TLS="$W/tls"
SIZE=$((SIZE_MB * 1048576))

# server_ticks (lib.sh, called by `timed`): CPU ticks of the seeders and trackers
SIDE_PIDS=()
server_ticks() {
	local t=0 p
	for p in "${SIDE_PIDS[@]}"; do t=$((t + $(proc_ticks "$p" 14,15))); done
	echo $t
}

# ---------------------------------------------------------------- trackers
TP1=$(free_port)
TP2=$(free_port)
while [ "$TP2" = "$TP1" ]; do TP2=$(free_port); done
mkdir -p "$W/tr1" "$W/tr2"
"$W/bin/tracker" "127.0.0.1:$TP1" "127.0.0.1:$TP2" "$W/tr1/seeders" "$W/log/tracker1.log" \
	>"$W/log/tracker1.out" 2>&1 &
TR1=$!
PIDS+=("$TR1") SIDE_PIDS+=("$TR1")
"$W/bin/tracker" "127.0.0.1:$TP2" "127.0.0.1:$TP1" "$W/tr2/seeders" "$W/log/tracker2.log" \
	>"$W/log/tracker2.out" 2>&1 &
TR2=$!
PIDS+=("$TR2") SIDE_PIDS+=("$TR2")
wait_for "$W/tr1/seeders" '^# syncstore seederlist' "$TR1"
wait_for "$W/tr2/seeders" '^# syncstore seederlist' "$TR2"
log "trackers on 127.0.0.1:$TP1 and 127.0.0.1:$TP2"

# ---------------------------------------------------------------- the file
log "making a $SIZE_MB MiB random file"
gen "$W/data/$NAME" "$SIZE_MB" "$(openssl rand -hex 16)"

# ---------------------------------------------------------------- seeders
# seeder i: directory $W/s$i with its copy of the file, commands on fd SFD[i]
SPID=() SPORT=() SFD=() SADDR=() ACTIVE=()
for i in $(seq "$NSEED"); do
	d="$W/s$i"
	mkdir -p "$d"
	cp "$W/data/$NAME" "$d/$NAME"
	mkfifo "$d/in"
	SPORT[i]=$(free_port)
	SADDR[i]="127.0.0.1:${SPORT[i]}"
	(for f in "${SFD[@]}"; do exec {f}>&-; done # not the other seeders' FIFOs
		cd "$d" && SYNCSTORE_UPLOAD_RATE=$RATE exec "$W/bin/client" "${SADDR[i]}" \
		"127.0.0.1:$TP1" "127.0.0.1:$TP2" "$W/log/seeder$i.log" \
		<"$d/in" >"$W/log/seeder$i.out" 2>"$W/log/seeder$i.err") &
	SPID[i]=$!
	PIDS+=("${SPID[i]}") SIDE_PIDS+=("${SPID[i]}")
	exec {fd}>"$d/in" # opens once the client has the read end
	SFD[i]=$fd
	ACTIVE[i]=0
done
PIDS=("${SPID[@]}" "$TR1" "$TR2") # at exit: seeders first, so their `close` still reaches the trackers
# say I COMMAND: one command line to seeder I
say() { printf '%s\n' "$2" >&"${SFD[$1]}"; }
sync

# live_seeders TRACKER_DIR: seeder addresses the export lists for ROOT, sorted
live_seeders() {
	awk -F'\t' -v r="$ROOT_ID" '!/^#/ && $1 == r {print $4}' "$W/$1/seeders" 2>/dev/null | sort | paste -sd' '
}
# wait_seeders N: until both trackers list exactly seeders 1..N (120 s)
wait_seeders() {
	local want i _
	want=$(for i in $(seq "$1"); do echo "${SADDR[i]}"; done | sort | paste -sd' ')
	for _ in $(seq 2400); do
		[ "$(live_seeders tr1)" = "$want" ] && [ "$(live_seeders tr2)" = "$want" ] && return 0
		for i in $(seq "$NSEED"); do
			kill -0 "${SPID[i]}" 2>/dev/null || {
				cat "$W/log/seeder$i.err" >&2
				die "seeder $i died"
			}
		done
		sleep 0.05
	done
	echo "$ME: waited 120 s for seeders '$want'; tracker 1 lists '$(live_seeders tr1)', tracker 2 '$(live_seeders tr2)'" >&2
	for i in $(seq "$NSEED"); do
		echo "--- seeder $i stderr:" >&2
		tail -n 5 "$W/log/seeder$i.err" >&2
	done
	exit 1
}
# activate N: seeders 1..N share the file, the others do not
activate() {
	local i
	for i in $(seq "$NSEED"); do
		if [ "$i" -le "$1" ] && [ "${ACTIVE[i]}" = 0 ]; then
			say "$i" "share $W/s$i/$NAME $NAME.mtorrent"
			ACTIVE[i]=1
		elif [ "$i" -gt "$1" ] && [ "${ACTIVE[i]}" = 1 ]; then
			say "$i" "remove $NAME.mtorrent"
			ACTIVE[i]=0
		fi
	done
	wait_seeders "$1"
}

log "seeder 1 shares the file"
say 1 "share $W/s1/$NAME $NAME.mtorrent"
ACTIVE[1]=1
for _ in $(seq 1200); do
	grep -q '^root ' "$W/s1/$NAME.mtorrent" 2>/dev/null && break
	kill -0 "${SPID[1]}" 2>/dev/null || die "seeder 1 died: $(cat "$W/log/seeder1.err")"
	sleep 0.05
done
ROOT_ID=$(awk '/^root / {print $2; exit}' "$W/s1/$NAME.mtorrent")
[ -n "$ROOT_ID" ] || die "seeder 1 wrote no $NAME.mtorrent: $(cat "$W/log/seeder1.err")"
cp "$W/s1/$NAME.mtorrent" "$W/data/$NAME.mtorrent" # what every downloader gets
log "root $ROOT_ID; the other seeders share their copies"
activate "$NSEED"
for i in $(seq 2 "$NSEED"); do
	r=$(awk '/^root / {print $2; exit}' "$W/s$i/$NAME.mtorrent")
	[ "$r" = "$ROOT_ID" ] || die "seeder $i's $NAME.mtorrent has root $r, not $ROOT_ID"
done
log "both trackers list $NSEED seeders: ${SADDR[*]}"

# ---------------------------------------------------------------- runs
printf 'get %s out.bin\n' "$(printf '%s' "$W/data/$NAME.mtorrent" | sed 's/\\/\\\\/g; s/ /\\ /g')" >"$W/get.cmd"
: >"$W/swarm"
run_one() { # run_one N RUN
	local n=$1 d="$W/dl.$1.$2" port tag="n$1" lg srcs mn mx tot drops
	activate "$n"
	mkdir -p "$d"
	port=$(free_port)
	lg="$W/log/download.n$1.r$2.log"
	log "run $2/$RUNS, $n seeder(s)"
	cd "$d"
	TIMED_SOFT=1 timed "$tag" - -- timeout "$DL_MAX" "$W/bin/client" "127.0.0.1:$port" \
		"127.0.0.1:$TP1" "127.0.0.1:$TP2" "$lg" <"$W/get.cmd" || {
		echo "--- downloader log $lg:" >&2
		tail -n 40 "$lg" >&2
		die "download from $n seeder(s) failed (exit status above: 124 = not done after $DL_MAX s, above 128 = killed by signal status-128)"
	}
	cd "$W"
	cmp "$d/out.bin" "$W/data/$NAME" || die "download from $n seeder(s): out.bin differs from the file"
	read -r srcs mn mx tot < <(awk -v nm="$NAME" '
		$0 ~ ("download " nm ": [0-9]+ bytes from ") {
			for (i = 1; i <= NF; i++) if ($i == "bytes") b = $(i - 1)
			k++; tot += b; if (b > 0) s++
			if (k == 1 || b < mn) mn = b
			if (b > mx) mx = b
		}
		END {printf "%d %d %d %d\n", s, mn, mx, tot}' "$lg")
	drops=$(grep -c 'dropping seeder' "$lg" || true)
	echo "$tag $T $srcs $mn $mx $tot $drops" >>"$W/swarm"
	log "  sources $srcs, bytes per source $mn–$mx, total $tot, dropped $drops"
	[ "$srcs" -ge 1 ] || log "  (no 'download $NAME: … bytes from …' line in $lg)"
	rm -rf "$d"
}
for r in $(seq "$RUNS"); do
	for n in $SEEDERS; do run_one "$n" "$r"; done
done

# ---------------------------------------------------------------- table
scol() { awk -v t="$1" -v n="$2" '$1 == t {print $n}' "$W/swarm"; }
mbs() { awk -v t="$1" -v s="$SIZE" 'BEGIN {printf "%.1f", s / t / 1e6}'; }
FIRST=${SEEDERS%% *}
T1=$(med "n$FIRST" 2)
emit "### Swarm: $SIZE_MB MiB from 1 seeder against $NSEED (issue 4)"
emit ""
emit '```'
emit "bench/swarm.sh${ARGS[*]:+ ${ARGS[*]}}    # SIZE_MB=$SIZE_MB RATE=$RATE RUNS=$RUNS SEEDERS=\"$SEEDERS\""
emit '```'
emit ""
emit "$HOST_LINE. $SS_ID."
emit ""
emit "Every seeder's upload capped at $RATE MB/s (SYNCSTORE_UPLOAD_RATE=$RATE; MB = 10^6 bytes). A fresh downloader (no cap) runs \`get\` then end of input, timed from start to exit; out.bin compared with the file (cmp) after every run. Floor = file size / (seeders × cap). Medians of $RUNS run(s), interleaved ($(tr -s ' ' '\n' <<<"$SEEDERS" | grep . | paste -sd, | sed 's/,/, /g'), …)."
emit ""
emit "| seeders | median s | floor s | MB/s | speed-up vs $FIRST | sources used | bytes per source (min–max) | downloader CPU-s | seeders+trackers CPU-s |"
emit "|---:|---:|---:|---:|---:|---:|---|---:|---:|"
for n in $SEEDERS; do
	t=$(med "n$n" 2)
	fl=$(awk -v s="$SIZE" -v n="$n" -v r="$RATE" 'BEGIN {printf "%.2f", s / (n * r * 1e6)}')
	src=$(scol "n$n" 3 | median)
	mn=$(scol "n$n" 4 | sort -g | head -n 1)
	mx=$(scol "n$n" 5 | sort -g | tail -n 1)
	emit "| $n | $t | $fl | $(mbs "$t") | $(ratio "$T1" "$t" | awk '{printf "%.2f×", $1}') | $src | $(human_b "$mn") – $(human_b "$mx") ($(awk -v a="$mn" -v b="$mx" -v s="$SIZE" 'BEGIN {printf "%.0f–%.0f %%", 100 * a / s, 100 * b / s}')) | $(med "n$n" 6) | $(med "n$n" 7) |"
done
emit ""
for n in $SEEDERS; do
	emit "Per run, $n seeder(s) (s): $(list "n$n" 2); sources: $(scol "n$n" 3 | paste -sd' ' | sed 's/ /, /g'); bytes from all seeders (file: $SIZE): $(scol "n$n" 6 | sort -u | paste -sd' ' | sed 's/ /, /g'); seeders dropped: $(scol "n$n" 7 | awk '{s += $1} END {print s + 0}')."
done
LAST=${SEEDERS##* }
if [ "$FIRST" = 1 ] && [ "$LAST" = 4 ]; then
	sp=$(ratio "$T1" "$(med n4 2)")
	emit ""
	emit "Goal ≥ 3× faster from 4 seeders: $(awk -v s="$sp" 'BEGIN {if (s == "-") print "-"; else if (s >= 3) printf "**met** (%.2f×)", s; else printf "**NOT met** (%.2f×: needs %.0f%% less time)", s, 100 * (1 - s / 3)}')."
fi
emit ""
notable=$(cat "$W"/log/*.log "$W"/log/*.err 2>/dev/null | grep -Ei '(warn|error|fatal|assert|panic|AddressSanitizer)' || true)
if [ -n "$notable" ]; then
	emit "Warnings and errors in the trackers', seeders' and downloaders' logs ($(printf '%s\n' "$notable" | wc -l) lines; first 10):"
	emit ""
	emit '```'
	printf '%s\n' "$notable" | head -n 10 >>"$OUT"
	emit '```'
else
	emit "No warnings or errors in the trackers', seeders' and downloaders' logs."
fi
emit ""
bench_finish
