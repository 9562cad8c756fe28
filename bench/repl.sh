#!/usr/bin/env bash
# bench/repl.sh — replication benchmarks (issue 3): a syncstore cluster on
# 127.0.0.1 against rsync (daemon, as in bench/run.sh) and Syncthing (two
# instances, as in ../shared/PEERS.md), same files, same run, runs interleaved.
#
# Usage: bench/repl.sh [cluster-put] [syncthing] [small-files] [catch-up] [VAR=VALUE]...
#        (no name: all four)
#
#   cluster-put  a SIZE_MB random file put to server 0 of a fresh 3-server
#                cluster (write quorum: majority) until all three hold it (the
#                put, then `status --wait` on server 0), against `rsync --fsync`
#                to one destination.  Goal: ≤ 2.5× rsync.  Also the CPU floor:
#                CPU seconds of the client and the three servers during the
#                run, divided by the number of CPUs, against rsync's wall time.
#   syncthing    the same file through a fresh 2-server cluster (put + status
#                --wait) against two fresh Syncthing instances (file placed,
#                then: scan request on the first, until the second is in sync).
#                Goal: syncstore ≥ 2× Syncthing's speed.
#   small-files  NFILES files of SMALL_KB KiB (100 per directory) put as one
#                directory to a fresh 3-server cluster (put DIR + status --wait),
#                against `rsync -r --fsync` to one destination and Syncthing.
#                Files/s; goals: ≥ 5× Syncthing and ≥ rsync.
#   catch-up     a 3-server cluster holds CATCH_FILES files of CATCH_KB KiB and
#                one CATCH_BIG_MB MiB file; server 2 is killed (-9), every small
#                file is rewritten with new random bytes through server 0,
#                server 2 is restarted: time until converged (status --wait on
#                server 2, then on server 0) and bytes server 2 received over
#                its peer links, counted by countfwd forwarders on all four of
#                its links (its pulls from 0 and 1, and 0's and 1's pulls from
#                it), against the bytes changed.
#
# Variables (environment or arguments):
#   SIZE_MB=1024  RUNS=5  NFILES=10000  SMALL_KB=4
#   CATCH_FILES=1000  CATCH_KB=16  CATCH_BIG_MB=64
#   WAIT_MAX=900       timeout (s) of `status --wait` and of Syncthing's sync
#   WARMUP=1           one untimed-in-the-table warm-up run of each variant first
#                      (0: none)
#   INSTALL=1          install syncthing with apt-get when missing (as root;
#                      0: never)
#   BENCH_DIR=/tmp     a work dir is made under it and removed at exit
#   KEEP=1             keep the work dir (server logs are in its log/)
#   RESULTS=FILE       also write the tables to FILE (and raw lines to FILE.raw)
#   SYNCSTORE=path     binary to measure (default build/syncstore, copied first)
#   QUIET_MAX=120 QUIET_CPUS=0.25   before each timed run wait (at most
#                      QUIET_MAX s) until the machine is nearly idle
#
# Every syncstore cluster starts on fresh data directories and fresh ports and
# is waited for (`status --wait`, not timed) before a timed run; every rsync
# run gets a deleted destination; every Syncthing run gets two fresh homes
# (copies of two generated ones: same device ids, empty databases) and empty
# folders.  Timed commands run under /usr/bin/time (client CPU and peak RSS);
# server-side CPU comes from /proc (all servers of the cluster; the rsync
# daemon's reaped children; both Syncthing processes).  Medians over RUNS runs.
# Tables on stdout, progress on stderr.  Helpers shared with bench/run.sh are
# in bench/lib.sh.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCHES=()
for a in "$@"; do
	case "$a" in
	*=*) export "${a?}" ;;
	cluster-put | syncthing | small-files | catch-up) BENCHES+=("$a") ;;
	all) BENCHES=(cluster-put syncthing small-files catch-up) ;;
	-h | --help)
		sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "repl.sh: unknown argument '$a' (try --help)" >&2
		exit 2
		;;
	esac
done
[ ${#BENCHES[@]} -gt 0 ] || BENCHES=(cluster-put syncthing small-files catch-up)

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-5}
NFILES=${NFILES:-10000}
SMALL_KB=${SMALL_KB:-4}
CATCH_FILES=${CATCH_FILES:-1000}
CATCH_KB=${CATCH_KB:-16}
CATCH_BIG_MB=${CATCH_BIG_MB:-64}
WAIT_MAX=${WAIT_MAX:-900}
WARMUP=${WARMUP:-1}
INSTALL=${INSTALL:-1}

ME=repl.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_setup rsync openssl /usr/bin/time
start_rsyncd

# ---------------------------------------------------------------- helpers
# One python helper for what the shell does badly: deterministic file trees
# and Syncthing's REST API (no curl needed).
cat >"$W/bin/helper.py" <<'PY'
import json, os, random, sys, time, urllib.request
import xml.etree.ElementTree as ET

def tree(d, n, kb, seed):
    """n files of kb KiB of seeded pseudo-random bytes, 100 per directory."""
    r = random.Random(int(seed))
    n, kb = int(n), int(kb)
    for i in range(n):
        sub = os.path.join(d, "d%03d" % (i // 100))
        if i % 100 == 0:
            os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "f%03d" % (i % 100)), "wb") as f:
            f.write(r.randbytes(kb * 1024))

def api(port, key, path, method="GET", timeout=60):
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path), method=method,
                                 data=b"" if method == "POST" else None,
                                 headers={"X-API-Key": key})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body.strip() else None

def st_config(home, gui, listen, key, folder, me, *devs):
    """Edit a generated config.xml as ../shared/PEERS.md says.  devs: ID:PORT..."""
    p = os.path.join(home, "config.xml")
    t = ET.parse(p)
    root = t.getroot()
    for e in root.findall("device") + root.findall("folder"):
        root.remove(e)
    f = ET.Element("folder", {"id": "bench", "label": "bench", "path": folder, "type": "sendreceive",
                              "rescanIntervalS": "3600", "fsWatcherEnabled": "false",
                              "fsWatcherDelayS": "10", "ignorePerms": "false", "autoNormalize": "true"})
    ET.SubElement(f, "filesystemType").text = "basic"
    for i, dp in enumerate(devs):
        did, port = dp.split(":")
        ET.SubElement(f, "device", {"id": did, "introducedBy": ""})
    ET.SubElement(f, "minDiskFree", {"unit": "%"}).text = "0"
    root.insert(0, f)
    for i, dp in enumerate(devs):
        did, port = dp.split(":")
        d = ET.Element("device", {"id": did, "name": "st%d" % (i + 1), "compression": "metadata",
                                  "introducer": "false", "skipIntroductionRemovals": "false",
                                  "introducedBy": ""})
        ET.SubElement(d, "address").text = "tcp://127.0.0.1:%s" % port
        ET.SubElement(d, "paused").text = "false"
        ET.SubElement(d, "autoAcceptFolders").text = "false"
        root.insert(1 + i, d)
    g = root.find("gui")
    g.find("address").text = "127.0.0.1:%s" % gui
    g.find("apikey").text = key
    o = root.find("options")
    for tag in ("listenAddress", "globalAnnounceServer", "stunServer"):
        for e in o.findall(tag):
            o.remove(e)
    ET.SubElement(o, "listenAddress").text = "tcp://127.0.0.1:%s" % listen
    for tag, val in (("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                     ("relaysEnabled", "false"), ("natEnabled", "false"), ("startBrowser", "false"),
                     ("crashReportingEnabled", "false"), ("announceLANAddresses", "false"),
                     ("urAccepted", "-1"), ("autoUpgradeIntervalH", "0"),
                     ("setLowPriority", "false")):
        e = o.find(tag)
        if e is None:
            e = ET.SubElement(o, tag)
        e.text = val
    t.write(p)

def st_ready(port, key, other, timeout):
    """Until the instance answers, is connected to `other` and its folder is idle."""
    end = time.time() + float(timeout)
    last = "no answer"
    while time.time() < end:
        try:
            c = api(port, key, "/rest/system/connections")["connections"].get(other, {})
            s = api(port, key, "/rest/db/status?folder=bench")
            last = "connected %s, folder %s" % (c.get("connected"), s.get("state"))
            if c.get("connected") and s.get("state") == "idle":
                return
        except Exception as e:
            last = str(e)
        time.sleep(0.1)
    sys.exit("syncthing on port %s not ready after %ss: %s" % (port, timeout, last))

def st_sync(p1, k1, p2, k2, nfiles, nbytes, timeout):
    """Scan request on the first (returns when the scan is done), then poll the
    second until it holds nfiles files, nbytes bytes, needs nothing and is idle."""
    nfiles, nbytes, end = int(nfiles), int(nbytes), time.time() + float(timeout)
    api(p1, k1, "/rest/db/scan?folder=bench", "POST", timeout=float(timeout))
    s = {}
    while time.time() < end:
        s = api(p2, k2, "/rest/db/status?folder=bench")
        if (s["state"] == "idle" and s["needFiles"] == 0 and s["needBytes"] == 0
                and s.get("needDeletes", 0) == 0 and s["globalFiles"] >= nfiles
                and s["localFiles"] >= nfiles and s["localBytes"] >= nbytes
                and s["inSyncBytes"] >= s["globalBytes"]):
            return
        time.sleep(0.02)
    sys.exit("second syncthing not in sync after %ss: %s" % (timeout, json.dumps(s)))

def st_shutdown(port, key):
    try:
        api(port, key, "/rest/system/shutdown", "POST", timeout=10)
    except Exception:
        pass

cmd = sys.argv[1]
{"tree": tree, "st-config": st_config, "st-ready": st_ready, "st-sync": st_sync,
 "st-shutdown": st_shutdown}[cmd](*sys.argv[2:])
PY
helper() { /usr/bin/python3 "$W/bin/helper.py" "$@"; }

# ---------------------------------------------------------------- syncstore cluster
# A cluster: CL_N servers, server i on CL_PORT[i] with data $W/cl/s<i>,
# logging to its own file per start (all kept in $W/log/ss.*.log for the
# summary at the end).  CL_PEERS[i] = the ports server i is given as --peer.
CL_N=0
CL_PIDS=()
CL_PORT=()
CL_PEERS=()
CL_LOG=()
LOGSEQ=0
# start_server I: start server i of the cluster (data, port and peers as set)
start_server() {
	local i=$1 a=() p
	for p in ${CL_PEERS[$i]}; do a+=(--peer "127.0.0.1:$p"); done
	LOGSEQ=$((LOGSEQ + 1))
	CL_LOG[i]="$W/log/ss.$(printf %03d $LOGSEQ).$CL_TAG.s$i.log"
	"$SS" server --data "$W/cl/s$i" --listen "127.0.0.1:${CL_PORT[$i]}" --tls "$W/tls" "${a[@]}" 2>"${CL_LOG[$i]}" &
	CL_PIDS[i]=$!
	PIDS+=("$!")
}
# wait_listening I: until server i logs "listening on" (polled every 10 ms)
wait_listening() {
	local n
	for n in $(seq 1000); do
		grep -q "listening on" "${CL_LOG[$1]}" 2>/dev/null && return 0
		kill -0 "${CL_PIDS[$1]}" 2>/dev/null || break
		sleep 0.01
	done
	cat "${CL_LOG[$1]}" >&2
	die "server $1 did not start"
}
# stop_server I [SIGNAL]: stop server i (SIGTERM: a clean exit is expected)
stop_server() {
	local i=$1 sig=${2:-TERM} pid=${CL_PIDS[$1]:-} rc=0
	[ -n "$pid" ] || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || rc=$?
	forget_pid "$pid"
	CL_PIDS[i]=
	if [ "$sig" = TERM ] && [ $rc != 0 ]; then
		log "  WARNING: server $i ($CL_TAG) exited with status $rc after SIGTERM"
		echo "server $i of $CL_TAG exited with status $rc after SIGTERM" >>"$W/log/exits"
	fi
}
stop_cluster() {
	local i
	for ((i = 0; i < CL_N; i++)); do stop_server "$i"; done
	CL_N=0
}
# ssc I ARGS...: a syncstore client command against server i
ssc() {
	local i=$1
	shift
	"$SS" --server "127.0.0.1:${CL_PORT[$i]}" --tls "$W/tls" --quiet "$@"
}
# cluster_wait I: untimed status --wait on server i; logs how long it took
cluster_wait() {
	local t0 t1
	t0=$(date +%s%N)
	ssc "$1" status --wait --timeout "$WAIT_MAX" >"$W/log/status.out" 2>&1 || {
		cat "$W/log/status.out" >&2
		die "cluster $CL_TAG did not converge within ${WAIT_MAX}s"
	}
	t1=$(date +%s%N)
	READY=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
}
# start_cluster N TAG: N servers on fresh data dirs and fresh ports, each
# with all the others as peers, default write quorum; waits until converged
start_cluster() {
	local n=$1 i j t0 t1
	CL_N=$n CL_TAG=$2
	rm -rf "$W/cl"
	mkdir -p "$W/cl"
	for ((i = 0; i < n; i++)); do CL_PORT[i]=$(free_port); done
	for ((i = 0; i < n; i++)); do
		CL_PEERS[i]=
		for ((j = 0; j < n; j++)); do [ $i = $j ] || CL_PEERS[i]+=" ${CL_PORT[$j]}"; done
	done
	t0=$(date +%s%N)
	for ((i = 0; i < n; i++)); do start_server "$i"; done
	for ((i = 0; i < n; i++)); do wait_listening "$i"; done
	cluster_wait 0
	t1=$(date +%s%N)
	READY=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
	echo "ready-$n $READY" >>"$W/results"
	log "  $n-server cluster converged ${READY}s after start (not timed)"
}
# the CPU ticks of all running servers of the cluster
cluster_ticks() {
	local t=0 i
	for ((i = 0; i < CL_N; i++)); do
		[ -z "${CL_PIDS[$i]:-}" ] || t=$((t + $(proc_ticks "${CL_PIDS[$i]}" 14,15)))
	done
	echo $t
}

# ---------------------------------------------------------------- Syncthing
ST_ERR=
ST_PIDS=()
ST_READY=0
# st_prepare: install if needed, generate two homes once (templates), pick ports
st_prepare() {
	[ "$ST_READY" = 0 ] || return 0
	ST_READY=1
	if ! command -v syncthing >/dev/null; then
		if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ]; then
			log "installing syncthing (apt-get)"
			if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends syncthing >/dev/null 2>&1; }; then
				ST_ERR="syncthing is not installed and apt-get install syncthing failed"
			fi
		else
			ST_ERR="syncthing is not installed (run as root, or apt-get install syncthing)"
		fi
	fi
	if [ -z "$ST_ERR" ] && ! command -v syncthing >/dev/null; then
		ST_ERR="syncthing is not installed"
	fi
	[ -z "$ST_ERR" ] || { log "$ST_ERR"; return 0; }
	ST_VERSION=$(syncthing --version 2>/dev/null | head -n 1 | awk '{print $1, $2}')
	log "$ST_VERSION"
	local k
	for k in 1 2; do
		rm -rf "$W/st/tmpl$k"
		if ! syncthing generate --home="$W/st/tmpl$k" --no-default-folder --skip-port-probing \
			>"$W/log/st.generate.$k.log" 2>&1; then
			ST_ERR="syncthing generate failed: $(tail -n 1 "$W/log/st.generate.$k.log")"
			log "$ST_ERR"
			return 0
		fi
		ST_ID[k]=$(syncthing serve --home="$W/st/tmpl$k" --device-id 2>/dev/null)
		ST_GUI[k]=$(free_port)
		ST_LISTEN[k]=$(free_port)
		ST_KEY[k]=bench$k$RANDOM$RANDOM
	done
	for k in 1 2; do
		helper st-config "$W/st/tmpl$k" "${ST_GUI[$k]}" "${ST_LISTEN[$k]}" "${ST_KEY[$k]}" "$W/st/data$k" "$k" \
			"${ST_ID[1]}:${ST_LISTEN[1]}" "${ST_ID[2]}:${ST_LISTEN[2]}" ||
			{ ST_ERR="could not write Syncthing's config.xml"; log "$ST_ERR"; return 0; }
	done
}
# st_start: two fresh instances (homes copied from the templates, empty
# folders); waits until they are connected and idle.  Returns 1 (ST_ERR set)
# if they do not come up.
st_start() {
	local k
	ST_PIDS=()
	for k in 1 2; do
		rm -rf "$W/st/h$k" "$W/st/data$k"
		cp -a "$W/st/tmpl$k" "$W/st/h$k"
		mkdir -p "$W/st/data$k/.stfolder"
		LOGSEQ=$((LOGSEQ + 1))
		ST_LOG[k]="$W/log/st.$(printf %03d $LOGSEQ).$k.log"
		STNOUPGRADE=1 syncthing serve --home="$W/st/h$k" --no-browser --no-restart --no-default-folder \
			--gui-address="127.0.0.1:${ST_GUI[$k]}" >"${ST_LOG[$k]}" 2>&1 &
		ST_PIDS[k]=$!
		PIDS+=("$!")
	done
	for k in 1 2; do
		if ! helper st-ready "${ST_GUI[$k]}" "${ST_KEY[$k]}" "${ST_ID[$((3 - k))]}" 60 2>"$W/log/st.ready.err"; then
			ST_ERR="Syncthing did not start: $(tail -n 1 "$W/log/st.ready.err"); log: $(tail -n 1 "${ST_LOG[$k]}")"
			log "$ST_ERR"
			st_stop
			return 1
		fi
	done
}
st_stop() {
	local k p i
	for k in 1 2; do
		[ -n "${ST_PIDS[$k]:-}" ] || continue
		helper st-shutdown "${ST_GUI[$k]}" "${ST_KEY[$k]}"
	done
	for k in 1 2; do
		p=${ST_PIDS[$k]:-}
		[ -n "$p" ] || continue
		for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		stop_pid "$p"
	done
	ST_PIDS=()
}
# CPU ticks of the Syncthing processes and their children
st_ticks() {
	local t=0 p c
	for p in "${ST_PIDS[@]}"; do
		for c in "$p" $(ps -o pid= --ppid "$p"); do
			[ -r "/proc/$c/stat" ] && t=$((t + $(proc_ticks "$c" 14,15)))
		done
	done
	echo $t
}

# server_ticks TAG (for `timed`): -ss all servers of the running cluster,
# -rs the rsync daemon's reaped children, -st both Syncthing instances
server_ticks() {
	case "$1" in
	*-ss*) cluster_ticks ;;
	*-rs*) rsyncd_ticks ;;
	*-st*) st_ticks ;;
	esac
}

# ss_timed TAG LOCAL REMOTE: put LOCAL to server 0, then status --wait on
# server 0, as one timed command
ss_timed() {
	# shellcheck disable=SC2016 # expanded by that sh
	timed "$1" - -- sh -c '"$0" --server "$1" --tls "$2" --quiet put "$3" "$4" &&
		exec "$0" --server "$1" --tls "$2" --quiet status --wait --timeout "$5" >/dev/null' \
		"$SS" "127.0.0.1:${CL_PORT[0]}" "$W/tls" "$2" "$3" "$WAIT_MAX"
}
# st_timed TAG NFILES NBYTES: scan request, then until the second is in sync
st_timed() {
	local rc=0
	TIMED_SOFT=1 timed "$1" - -- /usr/bin/python3 "$W/bin/helper.py" st-sync "${ST_GUI[1]}" "${ST_KEY[1]}" \
		"${ST_GUI[2]}" "${ST_KEY[2]}" "$2" "$3" "$WAIT_MAX" || rc=$?
	[ $rc = 0 ] || ST_ERR="Syncthing did not finish a sync ($1): $(tail -n 1 "$W/log/cmd.out")"
	return $rc
}
# place SRC DEST: hard links (cp -al; a copy if that fails) — placing is not timed
place() {
	cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"
}

mbps() { awk -v s="$1" -v m="$2" 'BEGIN {if (s == "-" || s + 0 == 0) print "-"; else printf "%.0f", m / s}'; }
per_s() { awk -v s="$1" -v n="$2" 'BEGIN {if (s == "-" || s + 0 == 0) print "-"; else printf "%.0f", n / s}'; }
# verdict_ge RATIO LIMIT: the goal is RATIO ≥ LIMIT
verdict_ge() {
	awk -v r="$1" -v l="$2" 'BEGIN {if (r == "-") print "-"; else if (r >= l) printf "met (%.2fx >= %.2fx)", r, l; else printf "NOT met (%.2fx < %.2fx: needs %.0f%% less time)", r, l, 100 * (1 - r / l)}'
}
# floor TAG: per run (client CPU + server CPU) / CPUs
floor_list() { awk -v t="$1" -v n="$NCPU" '$1 == t {printf "%.3f\n", ($6 + $7) / n}' "$W/results"; }

# the header is written at the end (Syncthing's version is known only then)
HEADER="Command: \`bench/repl.sh ${BENCHES[*]} SIZE_MB=$SIZE_MB RUNS=$RUNS NFILES=$NFILES SMALL_KB=$SMALL_KB CATCH_FILES=$CATCH_FILES CATCH_KB=$CATCH_KB CATCH_BIG_MB=$CATCH_BIG_MB\`

Run: $HOST_LINE; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)
"

need_big() {
	[ -f "$W/data/big" ] && return 0
	log "generating $SIZE_MB MiB random file"
	gen "$W/data/big" "$SIZE_MB" 000102030405060708090a0b0c0d0e0f
}
need_small() {
	[ -d "$W/data/small" ] && return 0
	log "generating $NFILES files of $SMALL_KB KiB"
	helper tree "$W/data/small" "$NFILES" "$SMALL_KB" 1
}
warmups() { [ "$WARMUP" = 1 ]; }

# ================================================================ 1. cluster-put
bench_cluster-put() {
	need_big
	cp_ss_run() { # cp_ss_run TAG [check]
		start_cluster 3 "$1"
		sync
		ss_timed "$1" "$W/data/big" bench/f
		if [ "${2:-}" = check ]; then
			rm -f "$W/data/check"
			ssc 2 get bench/f "$W/data/check" >>"$W/log/untimed.out"
			cmp "$W/data/check" "$W/data/big" || die "server 2 does not hold the file put to server 0"
			rm -f "$W/data/check"
			log "  checked: get from server 2 = the file"
		fi
		stop_cluster
	}
	cp_rs_run() {
		rm -f "$W/rsync/dst/f"
		sync
		timed "$1" - -- rsync --fsync "$W/data/big" "rsync://127.0.0.1:$RS_PORT/dst/f"
		cmp "$W/rsync/dst/f" "$W/data/big" || die "rsync content differs"
	}
	if warmups; then
		log "cluster-put: warm-up"
		cp_ss_run warm-cp-ss
		cp_rs_run warm-cp-rs
	fi
	local i
	for i in $(seq "$RUNS"); do
		log "cluster-put: run $i/$RUNS"
		local chk=
		[ "$i" != "$RUNS" ] || chk=check
		if [ $((i % 2)) = 1 ]; then
			cp_ss_run cp-ss $chk
			cp_rs_run cp-rs
		else
			cp_rs_run cp-rs
			cp_ss_run cp-ss $chk
		fi
	done
	rm -f "$W/rsync/dst/f"

	local st rt fl
	st=$(med cp-ss 2) rt=$(med cp-rs 2) fl=$(floor_list cp-ss | median)
	emit "### 1. cluster-put: $SIZE_MB MiB random file, durable on all three servers of a fresh cluster"
	emit ""
	emit "syncstore: \`put\` to server 0 of a fresh 3-server cluster (fresh data dirs, default write quorum = majority), then \`status --wait\` on server 0 until all three hold it (one timed command). rsync: \`rsync --fsync\` to one destination (daemon on 127.0.0.1), destination deleted before each run. Medians of $RUNS runs, order alternating. After the last run, a \`get\` from server 2 matched the file (cmp)."
	emit ""
	emit "| metric | syncstore, 3 servers | rsync --fsync, 1 destination | syncstore / rsync | goal | verdict |"
	emit "|---|---:|---:|---:|---|---|"
	emit "| **wall time (s)** | $st ($(mbps "$st" "$SIZE_MB") MiB/s) | $rt ($(mbps "$rt" "$SIZE_MB") MiB/s) | $(ratio "$st" "$rt") | ≤ 2.5× | $(verdict "$(ratio "$st" "$rt")" 2.5) |"
	emit "| CPU floor: (client + 3 servers) CPU-s / $NCPU CPUs (s) | $fl | | $(ratio "$fl" "$rt") (of rsync's wall time) | (info) | |"
	emit "| CPU s, client (user+sys) | $(med cp-ss 6) | $(med cp-rs 6) | $(ratio "$(med cp-ss 6)" "$(med cp-rs 6)") | | |"
	emit "| CPU s, server side (3 servers / rsync daemon) | $(med cp-ss 7) | $(med cp-rs 7) | $(ratio "$(med cp-ss 7)" "$(med cp-rs 7)") | | |"
	emit "| client peak RSS (MiB) | $(mib "$(med cp-ss 3)") | $(mib "$(med cp-rs 3)") | | | |"
	emit "| other processes' CPU during the run (CPUs of $NCPU) | $(med cp-ss 8) | $(med cp-rs 8) | | | |"
	emit ""
	emit "Per run (s) — syncstore: $(list cp-ss 2); rsync: $(list cp-rs 2); CPU floor: $(floor_list cp-ss | paste -sd' ' | sed 's/ /, /g')."
	emit ""
}

# ================================================================ 2. syncthing
bench_syncthing() {
	need_big
	st_prepare
	local size
	size=$(stat -c %s "$W/data/big")
	sy_ss_run() {
		start_cluster 2 "$1"
		sync
		ss_timed "$1" "$W/data/big" bench/f
		if [ "${2:-}" = check ]; then
			rm -f "$W/data/check"
			ssc 1 get bench/f "$W/data/check" >>"$W/log/untimed.out"
			cmp "$W/data/check" "$W/data/big" || die "server 1 does not hold the file put to server 0"
			rm -f "$W/data/check"
			log "  checked: get from server 1 = the file"
		fi
		stop_cluster
	}
	sy_st_run() {
		[ -z "$ST_ERR" ] || return 0
		st_start || return 0
		place "$W/data/big" "$W/st/data1/f"
		sync
		if st_timed "$1" 1 "$size"; then
			cmp "$W/st/data2/f" "$W/data/big" || die "Syncthing's copy differs"
		fi
		st_stop
	}
	if warmups; then
		log "syncthing: warm-up"
		sy_ss_run warm-sy-ss
		sy_st_run warm-sy-st
	fi
	local i chk
	for i in $(seq "$RUNS"); do
		log "syncthing: run $i/$RUNS"
		chk=
		[ "$i" != "$RUNS" ] || chk=check
		if [ $((i % 2)) = 1 ]; then
			sy_ss_run sy-ss $chk
			sy_st_run sy-st
		else
			sy_st_run sy-st
			sy_ss_run sy-ss $chk
		fi
	done

	local st tt r
	st=$(med sy-ss 2) tt=$(med sy-st 2)
	r=$(ratio "$tt" "$st")
	emit "### 2. syncthing: $SIZE_MB MiB random file, 2 syncstore servers against 2 Syncthing instances"
	emit ""
	emit "syncstore: put to server 0 of a fresh 2-server cluster + \`status --wait\` until both hold it. Syncthing (${ST_VERSION:-not run}): two fresh instances on 127.0.0.1 (../shared/PEERS.md; file watcher off, low priority off), the file hard-linked into the first one's folder (not timed), then a scan request on the first (returns when the scan is done) until the second reports the folder idle with nothing needed and the file held (REST polled every 20 ms); its copy was compared (cmp) after every run. Medians of $RUNS runs, order alternating."
	emit ""
	if [ -n "$ST_ERR" ] && [ "$tt" = - ]; then
		emit "**Syncthing could not be measured: $ST_ERR.**"
		emit ""
	elif [ -n "$ST_ERR" ]; then
		emit "**Syncthing failed part-way: $ST_ERR (the runs before it are used).**"
		emit ""
	fi
	emit "| metric | syncstore, 2 servers | Syncthing, 2 instances | syncstore speed / Syncthing speed | goal | verdict |"
	emit "|---|---:|---:|---:|---|---|"
	emit "| **wall time (s)** | $st ($(mbps "$st" "$SIZE_MB") MiB/s) | ${tt} ($(mbps "$tt" "$SIZE_MB") MiB/s) | $r | ≥ 2× | $(verdict_ge "$r" 2) |"
	emit "| CPU s, client (user+sys) | $(med sy-ss 6) | $(med sy-st 6) (REST poller) | | | |"
	emit "| CPU s, server side (2 servers / 2 Syncthing) | $(med sy-ss 7) | $(med sy-st 7) | $(ratio "$(med sy-ss 7)" "$(med sy-st 7)") | | |"
	emit "| other processes' CPU during the run (CPUs of $NCPU) | $(med sy-ss 8) | $(med sy-st 8) | | | |"
	emit ""
	emit "Per run (s) — syncstore: $(list sy-ss 2); Syncthing: $(list sy-st 2)."
	emit ""
}

# ================================================================ 3. small-files
bench_small-files() {
	need_small
	st_prepare
	local bytes=$((NFILES * SMALL_KB * 1024))
	sf_ss_run() {
		start_cluster 3 "$1"
		sync
		ss_timed "$1" "$W/data/small" sm
		if [ "${2:-}" = check ]; then
			rm -rf "$W/data/check"
			ssc 2 get sm "$W/data/check" >>"$W/log/untimed.out"
			diff -r "$W/data/check" "$W/data/small" >/dev/null || die "server 2 does not hold the tree put to server 0"
			rm -rf "$W/data/check"
			log "  checked: get from server 2 = the tree"
		fi
		stop_cluster
	}
	sf_rs_run() {
		rm -rf "$W/rsync/dst/small"
		sync
		timed "$1" - -- rsync -r --fsync "$W/data/small/" "rsync://127.0.0.1:$RS_PORT/dst/small/"
		diff -r "$W/rsync/dst/small" "$W/data/small" >/dev/null || die "rsync's tree differs"
	}
	sf_st_run() {
		[ -z "$ST_ERR" ] || return 0
		st_start || return 0
		place "$W/data/small" "$W/st/data1/small"
		sync
		if st_timed "$1" "$NFILES" "$bytes"; then
			diff -r "$W/st/data2/small" "$W/data/small" >/dev/null || die "Syncthing's tree differs"
		fi
		st_stop
	}
	if warmups; then
		log "small-files: warm-up"
		sf_ss_run warm-sf-ss
		sf_rs_run warm-sf-rs
		sf_st_run warm-sf-st
	fi
	local i k v chk variants=(ss rs st)
	for i in $(seq "$RUNS"); do
		log "small-files: run $i/$RUNS"
		chk=
		[ "$i" != "$RUNS" ] || chk=check
		for k in 0 1 2; do # rotate the order of the three variants
			v=${variants[$(((k + i - 1) % 3))]}
			"sf_${v}_run" "sf-$v" $chk
		done
	done
	rm -rf "$W/rsync/dst/small"

	local ts tr tt fs fr ft r1 r2
	ts=$(med sf-ss 2) tr=$(med sf-rs 2) tt=$(med sf-st 2)
	fs=$(per_s "$ts" "$NFILES") fr=$(per_s "$tr" "$NFILES") ft=$(per_s "$tt" "$NFILES")
	r1=$(ratio "$fs" "$ft") r2=$(ratio "$fs" "$fr")
	emit "### 3. small-files: $NFILES files of $SMALL_KB KiB ($((NFILES / 100 + (NFILES % 100 > 0))) directories), durable everywhere"
	emit ""
	emit "syncstore: \`put DIR\` to server 0 of a fresh 3-server cluster + \`status --wait\` until all three hold it. rsync: \`rsync -r --fsync\` to one destination, deleted before each run. Syncthing: 2 fresh instances as in 2, the tree hard-linked into the first folder (not timed), scan request until the second holds all $NFILES files. Every copy compared (diff -r): rsync's and Syncthing's after every run, a \`get\` of the directory from server 2 after the last. Medians of $RUNS runs, three variants in rotating order."
	emit ""
	[ -z "$ST_ERR" ] || { emit "**Syncthing: $ST_ERR.**"; emit ""; }
	emit "| metric | syncstore, 3 servers | rsync -r --fsync, 1 destination | Syncthing, 2 instances |"
	emit "|---|---:|---:|---:|"
	emit "| wall time (s) | $ts | $tr | $tt |"
	emit "| **files/s** | $fs | $fr | $ft |"
	emit "| CPU s, client (user+sys) | $(med sf-ss 6) | $(med sf-rs 6) | $(med sf-st 6) (REST poller) |"
	emit "| CPU s, server side | $(med sf-ss 7) | $(med sf-rs 7) | $(med sf-st 7) |"
	emit "| other processes' CPU during the run (CPUs of $NCPU) | $(med sf-ss 8) | $(med sf-rs 8) | $(med sf-st 8) |"
	emit ""
	emit "| goal | syncstore files/s ÷ theirs | verdict |"
	emit "|---|---:|---|"
	emit "| ≥ 5× Syncthing's files/s | $r1 | $(verdict_ge "$r1" 5) |"
	emit "| ≥ rsync's files/s | $r2 | $(verdict_ge "$r2" 1) |"
	emit ""
	emit "Per run (s) — syncstore: $(list sf-ss 2); rsync: $(list sf-rs 2); Syncthing: $(list sf-st 2)."
	emit ""
}

# ================================================================ 4. catch-up
bench_catch-up() {
	local changed=$((CATCH_FILES * CATCH_KB * 1024)) f
	log "catch-up: generating $CATCH_FILES files of $CATCH_KB KiB and a $CATCH_BIG_MB MiB file"
	rm -rf "$W/data/cu"
	mkdir -p "$W/data/cu"
	helper tree "$W/data/cu/small" "$CATCH_FILES" "$CATCH_KB" 2
	gen "$W/data/cu/big" "$CATCH_BIG_MB" 202122232425262728292a2b2c2d2e2f
	# ports fixed for the benchmark (server 2 restarts on its own); four
	# forwarders on server 2's links: its pulls from 0 and 1 (F0, F1) and
	# 0's and 1's pulls from it (F20, F21)
	CL_PORT=("$(free_port)" "$(free_port)" "$(free_port)")
	for f in 0 1; do start_fwd "cu$f" "${CL_PORT[$f]}"; done
	start_fwd cu20 "${CL_PORT[2]}"
	start_fwd cu21 "${CL_PORT[2]}"
	# fwd_quiet: until no connection is open on the four forwarders (a
	# reconnect attempt of 0 or 1 towards a dead server 2 opens one briefly)
	fwd_quiet() {
		local n
		for n in $(seq 600); do
			awk '$4 != 0 {busy = 1} END {exit busy}' "$W/log/fwd.cu0.status" "$W/log/fwd.cu1.status" \
				"$W/log/fwd.cu20.status" "$W/log/fwd.cu21.status" && return 0
			sleep 0.05
		done
		die "forwarders still have open connections"
	}
	# link_bytes: "received sent" by server 2, totals over the four forwarders
	link_bytes() {
		awk 'FILENAME ~ /cu[01]\.status/ {r += $8; s += $6} FILENAME ~ /cu2[01]\.status/ {r += $6; s += $8} END {print r, s}' \
			"$W/log/fwd.cu0.status" "$W/log/fwd.cu1.status" "$W/log/fwd.cu20.status" "$W/log/fwd.cu21.status"
	}
	from_peer() { awk '{print $8}' "$W/log/fwd.cu$1.status"; }

	cu_run() { # cu_run TAG RUN_NUMBER [check]
		local tag=$1 seed=$((100 + $2)) t0 t1 t2 r0 s0 r1 s1 p0 p1 q0 q1 m0 m1 c0 c1 c2 f0 f1
		CL_N=3 CL_TAG=$tag
		rm -rf "$W/cl"
		mkdir -p "$W/cl"
		CL_PEERS=("${CL_PORT[1]} $FWD_PORT_cu20" "${CL_PORT[0]} $FWD_PORT_cu21" "$FWD_PORT_cu0 $FWD_PORT_cu1")
		local i
		for i in 0 1 2; do start_server "$i"; done
		for i in 0 1 2; do wait_listening "$i"; done
		cluster_wait 0
		log "  cluster converged; putting $CATCH_FILES files + $CATCH_BIG_MB MiB (not timed)"
		rm -rf "$W/data/cu/now"
		cp -a "$W/data/cu/small" "$W/data/cu/now"
		ssc 0 put "$W/data/cu/now" cu/small >>"$W/log/untimed.out"
		ssc 0 put "$W/data/cu/big" cu/big >>"$W/log/untimed.out"
		cluster_wait 0
		log "  converged; kill -9 server 2, rewriting every small file through server 0 (not timed)"
		stop_server 2 KILL
		fwd_quiet
		rm -rf "$W/data/cu/now"
		helper tree "$W/data/cu/now" "$CATCH_FILES" "$CATCH_KB" "$seed"
		ssc 0 put "$W/data/cu/now" cu/small >>"$W/log/untimed.out"
		fwd_quiet
		read -r r0 s0 < <(link_bytes)
		p0=$(from_peer 0) q0=$(from_peer 1)
		sync
		wait_quiet
		c0=$(cluster_ticks) m0=$(machine_ticks) f0=$(fwd_ticks)
		t0=$(date +%s%N)
		start_server 2
		wait_listening 2
		ssc 2 status --wait --timeout "$WAIT_MAX" >"$W/log/status.out" 2>&1 ||
			{ cat "$W/log/status.out" >&2; die "server 2 did not converge within ${WAIT_MAX}s"; }
		t1=$(date +%s%N)
		ssc 0 status --wait --timeout "$WAIT_MAX" >"$W/log/status.out" 2>&1 ||
			{ cat "$W/log/status.out" >&2; die "server 0 does not see the cluster converged within ${WAIT_MAX}s"; }
		t2=$(date +%s%N)
		c1=$(cluster_ticks) m1=$(machine_ticks) f1=$(fwd_ticks)
		c2=$(proc_ticks "${CL_PIDS[2]}" 14,15)
		if [ "${3:-}" = check ]; then
			rm -rf "$W/data/check"
			ssc 2 get cu/small "$W/data/check" >>"$W/log/untimed.out"
			diff -r "$W/data/check" "$W/data/cu/now" >/dev/null || die "server 2 does not hold the rewritten files"
			rm -rf "$W/data/check"
			ssc 2 get cu/big "$W/data/check" >>"$W/log/untimed.out"
			cmp "$W/data/check" "$W/data/cu/big" || die "server 2 does not hold the big file"
			rm -f "$W/data/check"
			log "  checked: server 2 holds the new files and the big one"
		fi
		stop_server 2
		fwd_quiet
		read -r r1 s1 < <(link_bytes)
		p1=$(from_peer 0) q1=$(from_peer 1)
		stop_cluster
		# TAG T2 T0 RECEIVED SENT FROM0 FROM1 OTHER CPU(all three) CPU(server 2)
		# (OTHER in column 8, as in `timed`'s lines, for the load summary)
		awk -v tag="$tag" -v a="$t0" -v b="$t1" -v c="$t2" -v r="$((r1 - r0))" -v s="$((s1 - s0))" \
			-v p="$((p1 - p0))" -v q="$((q1 - q0))" -v cc="$((c1 - c0))" -v c2="$c2" -v m="$((m1 - m0 - (f1 - f0)))" -v h="$CLK_TCK" \
			'BEGIN {t = (c - a) / 1e9; o = (m - cc) / h / t; printf "%s %.3f %.3f %d %d %d %d %.2f %.2f %.2f\n", tag, (b - a) / 1e9, t, r, s, p, q, o < 0 ? 0 : o, cc / h, c2 / h}' >>"$W/catchup"
		log "  $(tail -n 1 "$W/catchup" | awk '{printf "%s: converged on server 2 %ss, on server 0 %ss; server 2 received %d B (from 0: %d, from 1: %d), sent %d B; CPU all %ss, server 2 %ss; other %s CPUs", $1, $2, $3, $4, $6, $7, $5, $9, $10, $8}')"
	}
	: >"$W/catchup"
	if warmups; then
		log "catch-up: warm-up"
		cu_run warm-cu 0
	fi
	local i chk
	for i in $(seq "$RUNS"); do
		log "catch-up: run $i/$RUNS"
		chk=
		[ "$i" != "$RUNS" ] || chk=check
		cu_run cu "$i" $chk
	done
	cat "$W/catchup" >>"$W/results"

	cm() { awk -v n="$1" '$1 == "cu" {print $n}' "$W/catchup" | median; }
	cl() { awk -v n="$1" '$1 == "cu" {print $n}' "$W/catchup" | paste -sd' ' | sed 's/ /, /g'; }
	local rcv
	rcv=$(cm 4)
	emit "### 4. catch-up: server 2 back after $CATCH_FILES files of $CATCH_KB KiB changed while it was down"
	emit ""
	emit "A fresh 3-server cluster holds $CATCH_FILES files of $CATCH_KB KiB and one $CATCH_BIG_MB MiB file. Server 2 is killed (kill -9), every small file is rewritten with new random bytes and put (as one directory) through server 0 ($(human_b "$changed") changed), then server 2 is restarted on its data. Timed from its start until \`status --wait\` on server 2 returns, then until \`status --wait\` on server 0 returns. Bytes: TCP payload on all four of server 2's peer links (its pulls from servers 0 and 1, and their pulls from it), counted by countfwd forwarders from the restart until server 2 was stopped after converging. Medians of $RUNS runs, a fresh cluster each run; after the last, a \`get\` from server 2 matched every file."
	emit ""
	emit "| metric | median | per run |"
	emit "|---|---:|---|"
	emit "| **time until converged, as server 2 sees it (s)** | $(cm 2) | $(cl 2) |"
	emit "| time until converged, as server 0 sees it (s) | $(cm 3) | $(cl 3) |"
	emit "| **bytes received by server 2 over its peer links** | $rcv ($(human_b "$rcv")) | $(cl 4) |"
	emit "| — of which from server 0 / from server 1 (its pulls) | $(cm 6) / $(cm 7) | |"
	emit "| bytes sent by server 2 over its peer links | $(cm 5) ($(human_b "$(cm 5)")) | $(cl 5) |"
	emit "| bytes changed | $changed ($(human_b "$changed")) | |"
	emit "| **received / changed** | $(ratio "$rcv" "$changed") | |"
	emit "| CPU s, all three servers / server 2 alone | $(cm 9) / $(cm 10) | |"
	emit "| other processes' CPU during the run (CPUs of $NCPU) | $(cm 8) | |"
	emit ""
}

for b in "${BENCHES[@]}"; do
	"bench_$b"
done
rm -f "$W/data/big"

{
	printf '%s\n' "$HEADER"
	printf 'Programs: syncstore = %s; %s%s.\n\n' "$SS_ID" "$(rsync --version | head -n 1 | tr -s ' ')" "${ST_VERSION:+; $ST_VERSION}"
	cat "$OUT"
} >"$OUT.new"
mv "$OUT.new" "$OUT"

# what the servers logged besides the usual: warnings and errors, grouped
# (timestamps, numbers and ports replaced), with a count and one example each
# Connection warnings while a peer starts, stops or is killed are expected;
# the failed TLS handshakes come from the catch-up forwarders, which accept
# a connection while server 2 is down and then close it.
EXPECTED='cannot connect to .*: connection refused \(retrying\)$|connection closed by .*\(retrying\)$|tls handshake with .* failed: (connection reset by peer|unexpected eof while reading) \(retrying\)$'
all_notable=$(cat "$W"/log/ss.*.log 2>/dev/null | grep -E ' (warn|error|fatal)[:]|assert|panic|AddressSanitizer' || true)
notable=$(printf '%s\n' "$all_notable" | grep -Ev "$EXPECTED" | grep . || true)
expected=$(printf '%s\n' "$all_notable" | grep -E "$EXPECTED" || true)
group() { # group lines: timestamps, ids and numbers replaced; count + first example
	sed -E 's/^[0-9:.]+ //' |
		awk '{k = $0; gsub(/[0-9a-f]{16,}/, "ID", k); gsub(/[0-9]+/, "N", k); if (!(k in n)) {ex[k] = $0; ord[++m] = k} n[k]++}
			END {for (i = 1; i <= m; i++) printf "%6d × %s\n", n[ord[i]], ex[ord[i]]}' | head -n 25
}
ready=$(awk '$1 ~ /^ready-/ {print $2}' "$W/results" | median)
emit "### Server logs and cluster start"
emit ""
[ "$ready" = - ] || emit "Fresh clusters reported converged (\`status --wait\` on server 0, not timed) a median ${ready} s after their servers were started ($(awk '$1 ~ /^ready-/ {print $2}' "$W/results" | sort -g | sed -n '1p;$p' | paste -sd' ' | sed 's/ / to /') s)."
if [ -s "$W/log/exits" ]; then
	emit ""
	emit "Unclean exits after SIGTERM: $(paste -sd';' "$W/log/exits")."
fi
emit ""
if [ -z "$notable" ]; then
	emit "No other warnings or errors in the servers' logs."
else
	emit "**Warnings and errors in the servers' logs** ($(printf '%s\n' "$notable" | wc -l) lines), grouped:"
	emit ""
	emit '```'
	printf '%s\n' "$notable" | group >>"$OUT"
	emit '```'
fi
if [ -n "$expected" ]; then
	emit ""
	emit "Connection warnings logged while a peer was starting, stopping or killed, or (failed TLS handshakes) by servers 0 and 1 reaching server 2's forwarder while it was down: $(printf '%s\n' "$expected" | wc -l) lines, grouped:"
	emit ""
	emit '```'
	printf '%s\n' "$expected" | group >>"$OUT"
	emit '```'
fi
emit ""
bench_finish
