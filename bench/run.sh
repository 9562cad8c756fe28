#!/usr/bin/env bash
# bench/run.sh — syncstore against rsync (daemon on 127.0.0.1), same files,
# same run, runs interleaved.  `make bench` calls it.  Results: docs/BENCHMARKS.md.
#
# Usage: bench/run.sh [delta] [initial] [mem] [VAR=VALUE]...   (no name: all three)
#
#   delta    a random SIZE_MB file already on both sides; the new version has
#            100 bytes inserted at the middle and 4 KiB overwritten at ~10 %.
#            syncstore `put` vs `rsync --no-whole-file --stats` onto the old
#            copy, both through a counting forwarder: bytes both ways (counted
#            outside both programs) and wall time.  Goal: ≤ 0.5× rsync on each.
#   initial  first upload of the SIZE_MB file to an empty destination, durable
#            on both sides (syncstore commits after fsync; rsync --fsync).
#            Direct and through the forwarder.  Goal: direct ≤ 1.5× rsync direct.
#   mem      peak RSS of the client (/usr/bin/time) and of the server
#            (VmHWM of a fresh server) during a put of a MEM_MB file, then
#            during the update of that file.  Goal: ≤ 100 MiB each.
#
# Variables (environment or arguments):
#   SIZE_MB=1024  RUNS=5  MEM_MB=4096  MEM_RUNS=1
#   BENCH_DIR=/tmp     a work dir is made under it and removed at exit
#   KEEP=1             keep the work dir (for debugging)
#   RESULTS=FILE       also write the tables to FILE (and raw lines to FILE.raw)
#   SYNCSTORE=path     binary to measure (default build/syncstore, copied first
#                      so a concurrent rebuild cannot change it mid-run)
#   QUIET_MAX=120 QUIET_CPUS=0.25   before each timed run wait (at most
#                      QUIET_MAX s) until the machine is nearly idle
#
# Every timed command is started the same way: /usr/bin/time -f '%M %U %S'
# (client peak RSS and CPU), wall time from the shell's clock around it,
# server-side CPU from /proc (syncstore server; rsync daemon's reaped
# children), bytes from the counting forwarder (bench/countfwd.c).  Before
# each timed run the destination is reset (not timed) and `sync` is run;
# both programs get one untimed warm-up run first.  Medians over RUNS runs;
# the order of the programs alternates from run to run.  Tables on stdout,
# progress on stderr.  Method and results: docs/BENCHMARKS.md.  Helpers shared
# with bench/repl.sh are in bench/lib.sh.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCHES=()
for a in "$@"; do
	case "$a" in
	*=*) export "${a?}" ;;
	delta | initial | mem) BENCHES+=("$a") ;;
	all) BENCHES=(delta initial mem) ;;
	-h | --help)
		sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "run.sh: unknown argument '$a' (try --help)" >&2
		exit 2
		;;
	esac
done
[ ${#BENCHES[@]} -gt 0 ] || BENCHES=(delta initial mem)

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-5}
MEM_MB=${MEM_MB:-4096}
MEM_RUNS=${MEM_RUNS:-1}

ME=run.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_setup rsync openssl /usr/bin/time

# make_update OLD NEW: 100 bytes inserted at the middle, 4 KiB overwritten
# at MiB (SIZE*100/1024), i.e. ~10 % (100 MiB of 1 GiB)
make_update() {
	local size mid off
	size=$(stat -c %s "$1")
	mid=$((size / 2))
	off=$((size / 1048576 * 100 / 1024 * 1048576))
	head -c 100 /dev/zero | openssl enc -aes-128-ctr -nosalt -K 0f0e0d0c0b0a09080706050403020100 \
		-iv 00000000000000000000000000000001 >"$W/data/ins100"
	head -c 4096 /dev/zero | openssl enc -aes-128-ctr -nosalt -K 0f0e0d0c0b0a09080706050403020100 \
		-iv 00000000000000000000000000000002 >"$W/data/ow4k"
	{ head -c "$mid" "$1"; cat "$W/data/ins100"; tail -c +"$((mid + 1))" "$1"; } >"$2"
	dd if="$W/data/ow4k" of="$2" bs=4096 seek="$((off / 4096))" conv=notrunc status=none
	echo "insert 100 B at $mid, overwrite 4096 B at $off"
}

# ---------------------------------------------------------------- servers
# syncstore server: start_ss DATA PORT (sets SS_PID); stop_ss
SS_PID=
start_ss() {
	local logf="$W/log/server.$2.log"
	: >"$logf"
	"$SS" server --data "$1" --listen "127.0.0.1:$2" --tls "$W/tls" 2>"$logf" &
	SS_PID=$!
	PIDS+=("$SS_PID")
	wait_for "$logf" "listening on" "$SS_PID"
}
stop_ss() {
	[ -n "$SS_PID" ] || return 0
	stop_pid "$SS_PID"
	SS_PID=
}
vm_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# the rsync daemon (module [dst]), and a counting forwarder in front of each server
start_rsyncd
SS_PORT=$(free_port)
start_fwd ss "$SS_PORT"
start_fwd rs "$RS_PORT"

# server_ticks TAG: CPU ticks so far of the server side (for `timed`): the
# syncstore server process, or the rsync daemon's children, reaped.  TAG
# contains -ss or -rs.
server_ticks() {
	case "$1" in
	*-ss*) proc_ticks "$SS_PID" 14,15 ;;
	*-rs*) rsyncd_ticks ;;
	esac
}

# ss_cmd PORT LOCAL REMOTE: CMD = the syncstore put command line
ss_cmd() { CMD=("$SS" --server "127.0.0.1:$1" --tls "$W/tls" --quiet put "$2" "$3"); }
ss_put() { ss_cmd "$@"; "${CMD[@]}" >>"$W/log/untimed.out"; } # untimed
ss_check() { # ss_check PORT REMOTE EXPECTED_FILE: the server holds exactly it
	rm -f "$W/data/check"
	"$SS" --server "127.0.0.1:$1" --tls "$W/tls" --quiet get "$2" "$W/data/check" >>"$W/log/untimed.out"
	cmp "$W/data/check" "$3" || { die "syncstore content differs"; }
	rm -f "$W/data/check"
}
rs_check() {
	cmp "$W/rsync/dst/$1" "$2" || { die "rsync content differs"; }
}

emit "Command: \`bench/run.sh ${BENCHES[*]} SIZE_MB=$SIZE_MB RUNS=$RUNS MEM_MB=$MEM_MB MEM_RUNS=$MEM_RUNS\`"
emit "Run: $HOST_LINE; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
emit ""
emit "Programs: syncstore = $SS_ID; $(rsync --version | head -n 1 | tr -s ' ')."
emit ""

need_main_file() {
	[ -f "$W/data/old" ] && return 0
	log "generating $SIZE_MB MiB random file"
	gen "$W/data/old" "$SIZE_MB" 000102030405060708090a0b0c0d0e0f
}

# ================================================================ 1. delta
bench_delta() {
	need_main_file
	local what
	what=$(make_update "$W/data/old" "$W/data/new")
	log "delta: $what"
	# Server state "holds the old version": made once, restored before every
	# run (a put of old onto a fresh path is not enough: the store keeps the
	# chunks and nodes of the new version from the previous run, so later runs
	# would send almost nothing).
	local tmpl="$W/ss-delta-tmpl" data="$W/ss-delta"
	rm -rf "$tmpl"
	start_ss "$tmpl" "$SS_PORT"
	ss_put "$SS_PORT" "$W/data/old" bench/f
	stop_ss

	ss_delta_run() { # ss_delta_run TAG
		stop_ss
		rm -rf "$data"
		cp -a "$tmpl" "$data"
		start_ss "$data" "$SS_PORT"
		sync
		ss_cmd "$FWD_PORT_ss" "$W/data/new" bench/f
		timed "$1" ss -- "${CMD[@]}"
	}
	rs_delta_run() {
		rm -f "$W/rsync/dst/f"
		cp "$W/data/old" "$W/rsync/dst/f"
		sync
		timed "$1" rs -- rsync --no-whole-file --stats "$W/data/new" "rsync://127.0.0.1:$FWD_PORT_rs/dst/f"
		# rsync's own count, as a cross-check of the forwarder's
		awk -v t="$1-own" '/^Total bytes sent:/ {gsub(",", "", $4); s = $4} /^Total bytes received:/ {gsub(",", "", $4); r = $4} END {print t, s, r}' "$W/log/cmd.out" >>"$W/results"
		rs_check f "$W/data/new"
	}
	log "delta: warm-up"
	ss_delta_run warm-delta-ss
	rs_delta_run warm-delta-rs
	local i
	for i in $(seq "$RUNS"); do
		log "delta: run $i/$RUNS"
		if [ $((i % 2)) = 1 ]; then
			ss_delta_run delta-ss
			rs_delta_run delta-rs
		else
			rs_delta_run delta-rs
			ss_delta_run delta-ss
		fi
	done
	ss_check "$SS_PORT" bench/f "$W/data/new"
	stop_ss
	rm -rf "$tmpl" "$data" "$W/rsync/dst/f"

	local sb rb st rt su ru sd rd
	sb=$(med delta-ss 9) rb=$(med delta-rs 9) st=$(med delta-ss 2) rt=$(med delta-rs 2)
	su=$(med delta-ss 4) ru=$(med delta-rs 4) sd=$(med delta-ss 5) rd=$(med delta-rs 5)
	emit "### 1. Delta update: $SIZE_MB MiB random file, $what"
	emit ""
	emit "Medians of $RUNS runs (interleaved, order alternating). Bytes counted by a forwarder between client and server (TCP payload, both directions); both programs go through one."
	emit ""
	emit "| metric | syncstore put | rsync --no-whole-file | syncstore / rsync | goal | verdict |"
	emit "|---|---:|---:|---:|---|---|"
	emit "| bytes client→server | $su ($(human_b "$su")) | $ru ($(human_b "$ru")) | $(ratio "$su" "$ru") | | |"
	emit "| bytes server→client | $sd ($(human_b "$sd")) | $rd ($(human_b "$rd")) | $(ratio "$sd" "$rd") | | |"
	emit "| bytes total | $sb ($(human_b "$sb")) | $rb ($(human_b "$rb")) | $(ratio "$sb" "$rb") | ≤ 0.5× | $(verdict "$(ratio "$sb" "$rb")" 0.5) |"
	emit "| wall time (s) | $st | $rt | $(ratio "$st" "$rt") | ≤ 0.5× | $(verdict "$(ratio "$st" "$rt")" 0.5) |"
	emit "| CPU s, client (user+sys) | $(med delta-ss 6) | $(med delta-rs 6) | $(ratio "$(med delta-ss 6)" "$(med delta-rs 6)") | | |"
	emit "| CPU s, server side | $(med delta-ss 7) | $(med delta-rs 7) | $(ratio "$(med delta-ss 7)" "$(med delta-rs 7)") | | |"
	emit "| client peak RSS (MiB) | $(mib "$(med delta-ss 3)") | $(mib "$(med delta-rs 3)") | | | |"
	emit "| other processes' CPU during the run (CPUs of $NCPU) | $(med delta-ss 8) | $(med delta-rs 8) | | | |"
	emit ""
	emit "Per run — syncstore time (s): $(list delta-ss 2); bytes: $(list delta-ss 9)"
	emit ""
	emit "Per run — rsync time (s): $(list delta-rs 2); bytes: $(list delta-rs 9); rsync's own --stats count, sent + received: $(awk '$1 == "delta-rs-own" {print $2 + $3}' "$W/results" | paste -sd' ' | sed 's/ /, /g')"
	emit ""
}

# ================================================================ 2. initial
bench_initial() {
	need_main_file
	local data="$W/ss-init"
	ss_init_run() { # ss_init_run TAG direct|fwd: fresh empty server each run
		stop_ss
		rm -rf "$data"
		start_ss "$data" "$SS_PORT"
		sync
		if [ "$2" = direct ]; then
			ss_cmd "$SS_PORT" "$W/data/old" bench/f
			timed "$1" - -- "${CMD[@]}"
		else
			ss_cmd "$FWD_PORT_ss" "$W/data/old" bench/f
			timed "$1" ss -- "${CMD[@]}"
		fi
	}
	rs_init_run() { # rs_init_run TAG direct|fwd: destination file deleted each run
		rm -f "$W/rsync/dst/f"
		sync
		if [ "$2" = direct ]; then
			timed "$1" - -- rsync --fsync "$W/data/old" "rsync://127.0.0.1:$RS_PORT/dst/f"
		else
			timed "$1" rs -- rsync --fsync "$W/data/old" "rsync://127.0.0.1:$FWD_PORT_rs/dst/f"
		fi
		rs_check f "$W/data/old"
	}
	log "initial: warm-up"
	ss_init_run warm-init-ss direct
	rs_init_run warm-init-rs direct
	local i variants=("ss direct" "rs direct" "ss fwd" "rs fwd") k v
	for i in $(seq "$RUNS"); do
		log "initial: run $i/$RUNS"
		for k in 0 1 2 3; do # rotate the order of the four variants
			v=${variants[$(((k + i - 1) % 4))]}
			set -- $v
			"${1}_init_run" "init-$1-$2" "$2"
		done
	done
	ss_check "$SS_PORT" bench/f "$W/data/old"
	stop_ss
	rm -rf "$data" "$W/rsync/dst/f"

	local sd rd sf rf
	sd=$(med init-ss-direct 2) rd=$(med init-rs-direct 2) sf=$(med init-ss-fwd 2) rf=$(med init-rs-fwd 2)
	mbps() { awk -v s="$1" -v m="$SIZE_MB" 'BEGIN {printf "%.0f", m / s}'; }
	emit "### 2. Initial upload of the $SIZE_MB MiB random file, durable on both sides"
	emit ""
	emit "Fresh destination every run (syncstore: a new empty server data dir; rsync: destination file deleted). rsync with --fsync. Medians of $RUNS runs, four variants interleaved in rotating order."
	emit ""
	emit "| variant | syncstore put | rsync --fsync | syncstore / rsync | goal | verdict |"
	emit "|---|---:|---:|---:|---|---|"
	emit "| **direct**: wall time (s) | $sd ($(mbps "$sd") MiB/s) | $rd ($(mbps "$rd") MiB/s) | $(ratio "$sd" "$rd") | ≤ 1.5× | $(verdict "$(ratio "$sd" "$rd")" 1.5) |"
	emit "| through forwarder: wall time (s) | $sf ($(mbps "$sf") MiB/s) | $rf ($(mbps "$rf") MiB/s) | $(ratio "$sf" "$rf") | (info) | |"
	emit "| through forwarder: bytes total | $(human_b "$(med init-ss-fwd 9)") | $(human_b "$(med init-rs-fwd 9)") | $(ratio "$(med init-ss-fwd 9)" "$(med init-rs-fwd 9)") | | |"
	emit "| direct: CPU s, client (user+sys) | $(med init-ss-direct 6) | $(med init-rs-direct 6) | $(ratio "$(med init-ss-direct 6)" "$(med init-rs-direct 6)") | | |"
	emit "| direct: CPU s, server side | $(med init-ss-direct 7) | $(med init-rs-direct 7) | $(ratio "$(med init-ss-direct 7)" "$(med init-rs-direct 7)") | | |"
	emit "| direct: client peak RSS (MiB) | $(mib "$(med init-ss-direct 3)") | $(mib "$(med init-rs-direct 3)") | | | |"
	emit "| direct: other processes' CPU during the run (CPUs of $NCPU) | $(med init-ss-direct 8) | $(med init-rs-direct 8) | | | |"
	emit ""
	emit "Per run (s) — syncstore direct: $(list init-ss-direct 2); rsync direct: $(list init-rs-direct 2); syncstore fwd: $(list init-ss-fwd 2); rsync fwd: $(list init-rs-fwd 2)"
	emit ""
}

# ================================================================ 3. memory
bench_mem() {
	log "generating $MEM_MB MiB random file for the memory benchmark"
	gen "$W/data/mem" "$MEM_MB" 101112131415161718191a1b1c1d1e1f
	local what data="$W/ss-mem" i h
	what=$(make_update "$W/data/mem" "$W/data/mem.new")
	ss_mem_run() { # fresh server per measured put, so VmHWM is this put's
		sync
		ss_cmd "$SS_PORT" "$2" bench/m
		timed "$1" - -- "${CMD[@]}"
		h=$(vm_hwm_kib "$SS_PID")
		echo "$1-server $h" >>"$W/results"
		log "  server VmHWM $h KiB"
		stop_ss
	}
	for i in $(seq "$MEM_RUNS"); do
		log "mem: run $i/$MEM_RUNS"
		rm -rf "$data"
		start_ss "$data" "$SS_PORT"
		ss_mem_run mem-ss-put "$W/data/mem"
		start_ss "$data" "$SS_PORT" # same data, the old version is there
		ss_mem_run mem-ss-update "$W/data/mem.new"
		rm -f "$W/rsync/dst/m"
		sync
		timed mem-rs-put - -- rsync --fsync "$W/data/mem" "rsync://127.0.0.1:$RS_PORT/dst/m"
		sync
		timed mem-rs-update - -- rsync --no-whole-file "$W/data/mem.new" "rsync://127.0.0.1:$RS_PORT/dst/m"
	done
	rm -rf "$data" "$W/rsync/dst/m" "$W/data/mem" "$W/data/mem.new"

	maxc() { awk -v t="$1" '$1 == t {if ($2 > m) m = $2} END {print m + 0}' "$W/results"; }
	maxr() { col "$1" 3 | sort -g | tail -n 1; }
	row() { # row LABEL TAG
		local c s
		c=$(maxr "$2") s=$(maxc "$2-server")
		emit "| $1 | $(mib "$c") | $(mib "$s") | $(med "$2" 2) | ≤ 100 MiB each | $(awk -v c="$c" -v s="$s" 'BEGIN {print (c <= 102400 && s <= 102400) ? "met" : "NOT met"}') |"
	}
	emit "### 3. Peak memory, put of a $MEM_MB MiB random file"
	emit ""
	emit "Client: max RSS from /usr/bin/time. Server: VmHWM from /proc/PID/status of a server started just before the put (started again on the same data for the update). Max over $MEM_RUNS run(s); update = $what."
	emit ""
	emit "| operation | client peak RSS (MiB) | server peak RSS (MiB) | wall time (s) | goal | verdict |"
	emit "|---|---:|---:|---:|---|---|"
	row "syncstore put (new file)" mem-ss-put
	row "syncstore put (update)" mem-ss-update
	emit "| rsync --fsync (reference, client only) | $(mib "$(maxr mem-rs-put)") | n/a | $(med mem-rs-put 2) | | |"
	emit "| rsync --no-whole-file update (reference, client only) | $(mib "$(maxr mem-rs-update)") | n/a | $(med mem-rs-update 2) | | |"
	emit ""
}

for b in "${BENCHES[@]}"; do
	"bench_$b"
done
rm -f "$W/data/old" "$W/data/new"
bench_finish
