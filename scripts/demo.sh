#!/bin/sh
# make demo: a 3-server cluster on 127.0.0.1 in a temporary directory.
# Upload a 256 MiB file to one server and watch it reach the others; kill a
# server with -9, update the file (only the changed chunks travel) and add a
# few files elsewhere; restart the dead server and watch it catch up by
# itself; download from it and verify; stop the cluster.
set -eu
cd "$(dirname "$0")/.."
BIN="$PWD/build/syncstore"
DEMO=$(mktemp -d /tmp/syncstore-demo.XXXXXX)
BASE=${DEMO_PORT:-$((20000 + $$ % 20000))}
PORTS="$BASE $((BASE + 1)) $((BASE + 2))"
PIDS=""
cleanup() {
	for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
	for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$DEMO"
}
trap cleanup EXIT INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# start N: server N (0, 1, 2) with the other two as peers; its PID in PID_N.
start() {
	n=$1 port=$((BASE + $1)) peers=""
	for p in $PORTS; do [ "$p" = "$port" ] || peers="$peers --peer 127.0.0.1:$p"; done
	# shellcheck disable=SC2086
	"$BIN" server --data "$DEMO/data$n" --listen "127.0.0.1:$port" --tls "$DEMO/tls" $peers \
		2>>"$DEMO/server$n.log" &
	eval "PID_$n=$!"
	PIDS="$PIDS $!"
	i=0
	until [ "$(grep -c "listening on" "$DEMO/server$n.log" 2>/dev/null)" -ge "$2" ]; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$(eval echo "\$PID_$n")" 2>/dev/null; then
			cat "$DEMO/server$n.log" >&2
			echo "demo: server $n did not start" >&2
			exit 1
		fi
		sleep 0.1
	done
}
on() { n=$1; shift; "$BIN" --server "127.0.0.1:$((BASE + n))" "$@"; }

say "a cluster CA and an admin identity"
"$BIN" init "$DEMO/tls"
export SYNCSTORE_TLS="$DEMO/tls"

say "three servers on 127.0.0.1:$(echo $PORTS | tr ' ' ',') (each lists the other two with --peer)"
for n in 0 1 2; do start $n 1; done
on 0 status --wait --timeout 30

say "a 256 MiB file of random bytes, uploaded to server 0 (write quorum: majority)"
head -c 268435456 /dev/urandom >"$DEMO/big.bin"
on 0 put "$DEMO/big.bin" demo/big.bin
on 0 stat demo/big.bin | grep durable
on 0 status --wait --timeout 120

say "kill -9 server 2"
kill -9 "$PID_2"
wait "$PID_2" 2>/dev/null || true

say "meanwhile: insert 17 bytes in the middle of the file and upload it to server 1"
{ head -c 134217728 "$DEMO/big.bin"; printf 'hello, syncstore!'; tail -c +134217729 "$DEMO/big.bin"; } >"$DEMO/big2.bin"
mv "$DEMO/big2.bin" "$DEMO/big.bin"
on 1 put "$DEMO/big.bin" demo/big.bin
say "and five small files to server 0"
for i in 1 2 3 4 5; do
	echo "note $i, written while server 2 was down" >"$DEMO/note$i.txt"
	on 0 --quiet put "$DEMO/note$i.txt" "demo/notes/note$i.txt"
done
on 0 status || true

say "restart server 2: it pulls what it missed from its peers"
start 2 2
on 2 status --wait --timeout 120

say "download from server 2 and verify"
on 2 get demo/big.bin "$DEMO/back.bin"
if cmp -s "$DEMO/big.bin" "$DEMO/back.bin"; then
	echo "server 2's copy is byte-identical ($(sha256sum <"$DEMO/back.bin" | cut -c1-16)…)"
else
	echo "demo: server 2's copy differs!" >&2
	exit 1
fi
on 2 ls
echo "server 2's log of its catch-up:"
awk '/listening on/ { since = "" } { since = since $0 "\n" } END { printf "%s", since }' "$DEMO/server2.log" |
	grep "applied" || true

say "stop the cluster (SIGTERM)"
for pid in $PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
PIDS=""
echo "all servers exited"
