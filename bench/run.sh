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
# progress on stderr.  Method and results: docs/BENCHMARKS.md.

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
SYNCSTORE=${SYNCSTORE:-$ROOT/build/syncstore}

for t in rsync openssl /usr/bin/time /usr/bin/python3 "${CC:-cc}"; do
	command -v "$t" >/dev/null || { echo "run.sh: $t is needed" >&2; exit 1; }
done
[ -x "$SYNCSTORE" ] || { echo "run.sh: $SYNCSTORE missing (run make)" >&2; exit 1; }

mkdir -p "${BENCH_DIR:-/tmp}"
W=$(mktemp -d "${BENCH_DIR:-/tmp}/syncstore-bench.XXXXXX")
PIDS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
	local rc=$?
	set +e
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	if [ "${KEEP:-0}" = 1 ]; then
		log "work dir kept: $W"
	else
		rm -rf "$W"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() { # drop $1 from PIDS
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	forget_pid "$1"
}

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for FILE PATTERN PID: until FILE holds PATTERN (10 s), or PID died
wait_for() {
	local i
	for i in $(seq 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.05
	done
	echo "run.sh: timed out waiting for '$2' in $1:" >&2
	cat "$1" >&2 || true
	exit 1
}

# ---------------------------------------------------------------- tools
mkdir -p "$W/bin" "$W/data" "$W/log"
cp "$SYNCSTORE" "$W/bin/syncstore"
SS="$W/bin/syncstore"
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -o "$W/bin/countfwd" "$ROOT/bench/countfwd.c" -lpthread
"$SS" init "$W/tls" >/dev/null

# gen FILE MIB KEYHEX: deterministic pseudo-random bytes (AES-128-CTR of zeros)
gen() {
	head -c "$(($2 * 1048576))" /dev/zero |
		openssl enc -aes-128-ctr -nosalt -K "$3" -iv 00000000000000000000000000000000 >"$1"
}

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

# rsync daemon on its own port, module [dst] = $W/rsync/dst
RS_PORT=$(free_port)
mkdir -p "$W/rsync/dst"
cat >"$W/rsync/rsyncd.conf" <<EOF
port = $RS_PORT
address = 127.0.0.1
use chroot = no
uid = root
gid = root
pid file = $W/rsync/rsyncd.pid
log file = $W/log/rsyncd.log
[dst]
    path = $W/rsync/dst
    read only = no
EOF
[ "$(id -u)" = 0 ] || sed -i '/^uid = /d; /^gid = /d' "$W/rsync/rsyncd.conf"
rsync --daemon --no-detach --config="$W/rsync/rsyncd.conf" &
RS_PID=$!
PIDS+=("$RS_PID")
for i in $(seq 100); do
	rsync "rsync://127.0.0.1:$RS_PORT/" >/dev/null 2>&1 && break
	kill -0 "$RS_PID" || { echo "run.sh: rsync daemon died" >&2; exit 1; }
	sleep 0.05
done

# counting forwarders: start_fwd NAME TARGET_PORT -> sets FWD_PORT_<NAME>
start_fwd() {
	local out="$W/log/fwd.$1.out"
	"$W/bin/countfwd" 0 "127.0.0.1:$2" "$W/log/fwd.$1.status" >"$out" 2>"$W/log/fwd.$1.err" &
	PIDS+=("$!")
	FWD_PIDS+=("$!")
	wait_for "$out" "^port " "$!"
	printf -v "FWD_PORT_$1" '%s' "$(awk '/^port/ {print $2}' "$out")"
}
FWD_PIDS=()
SS_PORT=$(free_port)
start_fwd ss "$SS_PORT"
start_fwd rs "$RS_PORT"

# fwd_counts NAME: "closed up down" from the forwarder's status file
fwd_counts() { awk '{print $2, $6, $8}' "$W/log/fwd.$1.status"; }
# fwd_settle NAME CLOSED_BEFORE: wait until a new connection finished and none is open
fwd_settle() {
	local i
	for i in $(seq 400); do
		if awk -v c="$2" '$2 > c && $4 == 0 {ok=1} END {exit !ok}' "$W/log/fwd.$1.status"; then
			return 0
		fi
		sleep 0.025
	done
	echo "run.sh: forwarder $1 did not settle: $(cat "$W/log/fwd.$1.status")" >&2
	exit 1
}

# ---------------------------------------------------------------- measuring
# timed TAG FWD -- CMD...: runs CMD; sets T (wall seconds), RSS (client peak
# KiB), UP, DOWN (bytes through forwarder FWD, or "-" for none), CCPU and SCPU
# (user+sys seconds of the client and of the server side: the syncstore
# server process, or the rsync daemon's children, reaped) and appends
# "TAG T RSS UP DOWN CCPU SCPU" to $W/results.  TAG contains -ss or -rs.
# Every program goes through exactly this path.
proc_ticks() { # proc_ticks PID FIELDS: sum of /proc/PID/stat fields (after the comm)
	awk -v f="$2" '{sub(/^.*\) /, ""); n = split(f, a, ","); for (i = 1; i <= n; i++) t += $(a[i] - 2); print t}' "/proc/$1/stat"
}
server_ticks() { # server_ticks TAG
	case "$1" in
	*-ss*) proc_ticks "$SS_PID" 14,15 ;;
	*-rs*) # children of the daemon count once reaped
		local i
		for i in $(seq 200); do
			[ -z "$(ps -o pid= --ppid "$RS_PID")" ] && break
			sleep 0.025
		done
		proc_ticks "$RS_PID" 16,17 ;;
	esac
}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
# busy ticks of the whole machine (user nice system irq softirq steal), and
# of our forwarders: what the machine did besides the measured programs is
# machine - client - server - forwarders ("other", in CPUs, per run)
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
fwd_ticks() { local t=0 p; for p in "${FWD_PIDS[@]}"; do t=$((t + $(proc_ticks "$p" 14,15))); done; echo $t; }
# wait_quiet: other engineers share this machine; before a timed run wait (at
# most QUIET_MAX s, default 120) until the machine has been nearly idle for
# a second (busy < QUIET_CPUS CPUs, default 0.25).  Logged either way.
QUIET_MAX=${QUIET_MAX:-120}
QUIET_CPUS=${QUIET_CPUS:-0.25}
wait_quiet() {
	local t0 a b waited=0
	t0=$(date +%s)
	while :; do
		a=$(machine_ticks)
		sleep 1
		b=$(machine_ticks)
		BUSY=$(awk -v a="$a" -v b="$b" -v h="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / h}')
		awk -v x="$BUSY" -v l="$QUIET_CPUS" 'BEGIN {exit !(x <= l)}' && break
		if [ $(($(date +%s) - t0)) -ge "$QUIET_MAX" ]; then
			log "  machine still busy ($BUSY CPUs) after ${QUIET_MAX}s; measuring anyway"
			break
		fi
		waited=1
	done
	[ $waited = 0 ] || log "  waited $(($(date +%s) - t0))s for a quiet machine (now $BUSY CPUs busy)"
}
timed() {
	local tag=$1 fwd=$2 b0 u0 d0 b1 u1 d1 t0 t1 rc s0 s1 m0 m1 f0 f1
	shift 3
	wait_quiet
	[ "$fwd" = - ] || read -r b0 u0 d0 < <(fwd_counts "$fwd")
	s0=$(server_ticks "$tag") f0=$(fwd_ticks) m0=$(machine_ticks)
	t0=$(date +%s%N)
	set +e
	/usr/bin/time -f '%M %U %S' -o "$W/log/time.out" "$@" >"$W/log/cmd.out" 2>&1
	rc=$?
	set -e
	t1=$(date +%s%N)
	if [ $rc != 0 ]; then
		echo "run.sh: $tag failed (exit $rc): $*" >&2
		cat "$W/log/cmd.out" >&2
		exit 1
	fi
	T=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
	read -r RSS CCPU < <(tail -n 1 "$W/log/time.out" | awk '{printf "%d %.2f\n", $1, $2 + $3}')
	UP=- DOWN=-
	if [ "$fwd" != - ]; then
		fwd_settle "$fwd" "$b0"
		read -r b1 u1 d1 < <(fwd_counts "$fwd")
		UP=$((u1 - u0)) DOWN=$((d1 - d0))
	fi
	s1=$(server_ticks "$tag") f1=$(fwd_ticks) m1=$(machine_ticks)
	SCPU=$(awk -v a="$s0" -v b="$s1" -v h="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / h}')
	OTHER=$(awk -v m="$((m1 - m0))" -v f="$((f1 - f0))" -v c="$CCPU" -v s="$SCPU" -v h="$CLK_TCK" -v t="$T" \
		'BEGIN {o = ((m - f) / h - c - s) / t; printf "%.2f", o < 0 ? 0 : o}')
	echo "$tag $T $RSS $UP $DOWN $CCPU $SCPU $OTHER" >>"$W/results"
	log "  $tag: ${T}s, rss ${RSS} KiB, up $UP, down $DOWN, cpu client ${CCPU}s server ${SCPU}s, other ${OTHER} CPUs"
}

# ss_cmd PORT LOCAL REMOTE: CMD = the syncstore put command line
ss_cmd() { CMD=("$SS" --server "127.0.0.1:$1" --tls "$W/tls" --quiet put "$2" "$3"); }
ss_put() { ss_cmd "$@"; "${CMD[@]}" >>"$W/log/untimed.out"; } # untimed
ss_check() { # ss_check PORT REMOTE EXPECTED_FILE: the server holds exactly it
	rm -f "$W/data/check"
	"$SS" --server "127.0.0.1:$1" --tls "$W/tls" --quiet get "$2" "$W/data/check" >>"$W/log/untimed.out"
	cmp "$W/data/check" "$3" || { echo "run.sh: syncstore content differs" >&2; exit 1; }
	rm -f "$W/data/check"
}
rs_check() {
	cmp "$W/rsync/dst/$1" "$2" || { echo "run.sh: rsync content differs" >&2; exit 1; }
}

# ---------------------------------------------------------------- statistics
# col TAG N: column N (2 = time, 3 = rss, 4 = up, 5 = down, 6 = client cpu,
# 7 = server cpu, 8 = other load in CPUs, 9 = up+down) of TAG's runs
col() {
	awk -v t="$1" -v n="$2" '$1 == t {print (n == 9 ? $4 + $5 : $n)}' "$W/results"
}
median() { sort -g | awk '{a[NR] = $1} END {if (!NR) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.10g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
med() { col "$1" "$2" | median; }
list() { col "$1" "$2" | paste -sd' ' | sed 's/ /, /g'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "-"; else printf "%.3f", a / b}'; }
verdict() { # verdict RATIO LIMIT
	awk -v r="$1" -v l="$2" 'BEGIN {if (r == "-") print "-"; else if (r <= l) printf "met (%.2fx <= %.2fx)", r, l; else printf "NOT met (%.2fx > %.2fx: needs %.0f%% less)", r, l, 100 * (1 - l / r)}'
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
human_b() { awk -v b="$1" 'BEGIN {if (b >= 1048576) printf "%.2f MiB", b / 1048576; else if (b >= 1024) printf "%.1f KiB", b / 1024; else printf "%d B", b}'; }

OUT="$W/tables.md"
: >"$OUT"
emit() { printf '%s\n' "$*" >>"$OUT"; }

HOST_LINE="$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); /tmp on $(df --output=source,fstype /tmp | tail -n 1 | tr -s ' ')"
log "work dir $W; $HOST_LINE"
SS_ID="$SYNCSTORE built $(date -u -r "$SYNCSTORE" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$SS" | cut -c1-12), source tree at commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?) + working-tree changes"
log "syncstore: $SS_ID"
log "rsync $(rsync --version | head -n 1)"

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
emit "Machine shared with other work: each timed run waited (≤ ${QUIET_MAX}s) for < $QUIET_CPUS CPUs busy; CPU used by other processes during the timed runs (of $NCPU): median $(awk 'NF >= 8 && $1 !~ /^warm/ {print $8}' "$W/results" | median), max $(awk 'NF >= 8 && $1 !~ /^warm/ {print $8}' "$W/results" | sort -g | tail -n 1). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."

cat "$OUT"
if [ -n "${RESULTS:-}" ]; then
	cp "$OUT" "$RESULTS"
	cp "$W/results" "$RESULTS.raw"
fi
