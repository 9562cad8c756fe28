# bench/lib.sh — what bench/run.sh and bench/repl.sh share.  Sourced, not run.
# shellcheck shell=bash
#
# The sourcing script sets ME (its name, for messages), ROOT (the source
# tree) and `set -euo pipefail`, exports its VAR=VALUE arguments, sources this
# file, and then calls
#
#   bench_setup TOOL...   check that the tools are there, make the work dir $W
#                         (under BENCH_DIR, removed at exit unless KEEP=1),
#                         install the trap that kills every PID in PIDS at
#                         exit, copy SYNCSTORE to $SS (so a rebuild during the
#                         run cannot change it), build countfwd into $W/bin,
#                         make the cluster CA and admin identity in $W/tls.
#
# It also defines server_ticks TAG: the CPU ticks, so far, of the server side
# of a timed run tagged TAG (`timed` calls it before and after the command).
#
# Tables are collected with `emit` into $W/tables.md and printed by
# bench_finish; progress goes to stderr through `log`.

SYNCSTORE=${SYNCSTORE:-$ROOT/build/syncstore}
QUIET_MAX=${QUIET_MAX:-120}
QUIET_CPUS=${QUIET_CPUS:-0.25}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
PIDS=()
FWD_PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	echo "$ME: $*" >&2
	exit 1
}

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

bench_setup() {
	local t
	for t in "$@" /usr/bin/python3 "${CC:-cc}"; do
		command -v "$t" >/dev/null || die "$t is needed"
	done
	[ -x "$SYNCSTORE" ] || die "$SYNCSTORE missing (run make)"
	mkdir -p "${BENCH_DIR:-/tmp}"
	W=$(mktemp -d "${BENCH_DIR:-/tmp}/syncstore-bench.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir -p "$W/bin" "$W/data" "$W/log"
	cp "$SYNCSTORE" "$W/bin/syncstore"
	SS="$W/bin/syncstore"
	${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -o "$W/bin/countfwd" "$ROOT/bench/countfwd.c" -lpthread
	"$SS" init "$W/tls" >/dev/null
	: >"$W/results"
	OUT="$W/tables.md"
	: >"$OUT"
	HOST_LINE="$(date -u '+%Y-%m-%d %H:%M UTC'); $NCPU CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); /tmp on $(df --output=source,fstype /tmp | tail -n 1 | tr -s ' ')"
	SS_ID="$SYNCSTORE built $(date -u -r "$SYNCSTORE" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$SS" | cut -c1-12), source tree at commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?) + working-tree changes"
	log "work dir $W; $HOST_LINE"
	log "syncstore: $SS_ID"
}

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
	local _
	for _ in $(seq 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.05
	done
	echo "$ME: timed out waiting for '$2' in $1:" >&2
	cat "$1" >&2 || true
	exit 1
}

# gen FILE MIB KEYHEX: deterministic pseudo-random bytes (AES-128-CTR of zeros)
gen() {
	head -c "$(($2 * 1048576))" /dev/zero |
		openssl enc -aes-128-ctr -nosalt -K "$3" -iv 00000000000000000000000000000000 >"$1"
}

# ---------------------------------------------------------------- rsync
# start_rsyncd: an rsync daemon on a free port of 127.0.0.1 (RS_PORT, RS_PID),
# module [dst] = $W/rsync/dst
start_rsyncd() {
	local _
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
	for _ in $(seq 100); do
		rsync "rsync://127.0.0.1:$RS_PORT/" >/dev/null 2>&1 && break
		kill -0 "$RS_PID" || die "rsync daemon died"
		sleep 0.05
	done
	log "rsync $(rsync --version | head -n 1)"
}
# ticks of the daemon's children, which count once reaped
rsyncd_ticks() {
	local _
	for _ in $(seq 200); do
		[ -z "$(ps -o pid= --ppid "$RS_PID")" ] && break
		sleep 0.025
	done
	proc_ticks "$RS_PID" 16,17
}

# ---------------------------------------------------------------- forwarders
# counting forwarders (bench/countfwd.c): start_fwd NAME TARGET_PORT -> sets
# FWD_PORT_<NAME>.  Its counts cover the connections that have finished.
start_fwd() {
	local out="$W/log/fwd.$1.out"
	"$W/bin/countfwd" 0 "127.0.0.1:$2" "$W/log/fwd.$1.status" >"$out" 2>"$W/log/fwd.$1.err" &
	PIDS+=("$!")
	FWD_PIDS+=("$!")
	wait_for "$out" "^port " "$!"
	printf -v "FWD_PORT_$1" '%s' "$(awk '/^port/ {print $2}' "$out")"
}
# fwd_counts NAME: "closed up down" from the forwarder's status file
fwd_counts() { awk '{print $2, $6, $8}' "$W/log/fwd.$1.status"; }
# fwd_settle NAME CLOSED_BEFORE: wait until a new connection finished and none is open
fwd_settle() {
	local _
	for _ in $(seq 400); do
		if awk -v c="$2" '$2 > c && $4 == 0 {ok=1} END {exit !ok}' "$W/log/fwd.$1.status"; then
			return 0
		fi
		sleep 0.025
	done
	die "forwarder $1 did not settle: $(cat "$W/log/fwd.$1.status")"
}

# ---------------------------------------------------------------- measuring
# timed TAG FWD -- CMD...: runs CMD; sets T (wall seconds), RSS (client peak
# KiB), UP, DOWN (bytes through forwarder FWD, or "-" for none), CCPU and SCPU
# (user+sys seconds of the client and of the server side, from server_ticks
# TAG) and appends "TAG T RSS UP DOWN CCPU SCPU OTHER" to $W/results.  Every
# program goes through exactly this path.  A failing CMD ends the script,
# unless TIMED_SOFT=1: then timed returns 1 and records nothing.
proc_ticks() { # proc_ticks PID FIELDS: sum of /proc/PID/stat fields (after the comm)
	awk -v f="$2" '{sub(/^.*\) /, ""); n = split(f, a, ","); for (i = 1; i <= n; i++) t += $(a[i] - 2); print t}' "/proc/$1/stat"
}
# busy ticks of the whole machine (user nice system irq softirq steal), and
# of our forwarders: what the machine did besides the measured programs is
# machine - client - server - forwarders ("other", in CPUs, per run)
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
fwd_ticks() { local t=0 p; for p in "${FWD_PIDS[@]}"; do t=$((t + $(proc_ticks "$p" 14,15))); done; echo $t; }
# wait_quiet: other engineers share this machine; before a timed run wait (at
# most QUIET_MAX s, default 120) until the machine has been nearly idle for
# a second (busy < QUIET_CPUS CPUs, default 0.25).  Logged either way.
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
	local tag=$1 fwd=$2 b0 u0 d0 u1 d1 t0 t1 rc s0 s1 m0 m1 f0 f1
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
		echo "$ME: $tag failed (exit $rc): $*" >&2
		cat "$W/log/cmd.out" >&2
		[ "${TIMED_SOFT:-0}" = 1 ] && return 1 # the caller reports it
		exit 1
	fi
	T=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
	read -r RSS CCPU < <(tail -n 1 "$W/log/time.out" | awk '{printf "%d %.2f\n", $1, $2 + $3}')
	UP=- DOWN=-
	if [ "$fwd" != - ]; then
		fwd_settle "$fwd" "$b0"
		read -r _ u1 d1 < <(fwd_counts "$fwd")
		UP=$((u1 - u0)) DOWN=$((d1 - d0))
	fi
	s1=$(server_ticks "$tag") f1=$(fwd_ticks) m1=$(machine_ticks)
	SCPU=$(awk -v a="$s0" -v b="$s1" -v h="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / h}')
	OTHER=$(awk -v m="$((m1 - m0))" -v f="$((f1 - f0))" -v c="$CCPU" -v s="$SCPU" -v h="$CLK_TCK" -v t="$T" \
		'BEGIN {o = ((m - f) / h - c - s) / t; printf "%.2f", o < 0 ? 0 : o}')
	echo "$tag $T $RSS $UP $DOWN $CCPU $SCPU $OTHER" >>"$W/results"
	log "  $tag: ${T}s, rss ${RSS} KiB, up $UP, down $DOWN, cpu client ${CCPU}s server ${SCPU}s, other ${OTHER} CPUs"
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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b}'; }
verdict() { # verdict RATIO LIMIT
	awk -v r="$1" -v l="$2" 'BEGIN {if (r == "-") print "-"; else if (r <= l) printf "met (%.2fx <= %.2fx)", r, l; else printf "NOT met (%.2fx > %.2fx: needs %.0f%% less)", r, l, 100 * (1 - l / r)}'
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
human_b() { awk -v b="$1" 'BEGIN {if (b >= 1048576) printf "%.2f MiB", b / 1048576; else if (b >= 1024) printf "%.1f KiB", b / 1024; else printf "%d B", b}'; }

emit() { printf '%s\n' "$*" >>"$OUT"; }

# bench_finish: the load line, then print the tables (and copy them to RESULTS)
bench_finish() {
	emit "Machine shared with other work: each timed run waited (≤ ${QUIET_MAX}s) for < $QUIET_CPUS CPUs busy; CPU used by other processes during the timed runs (of $NCPU): median $(awk 'NF >= 8 && $1 !~ /^warm/ {print $8}' "$W/results" | median), max $(awk 'NF >= 8 && $1 !~ /^warm/ {print $8}' "$W/results" | sort -g | tail -n 1). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	cat "$OUT"
	if [ -n "${RESULTS:-}" ]; then
		cp "$OUT" "$RESULTS"
		cp "$W/results" "$RESULTS.raw"
	fi
}
