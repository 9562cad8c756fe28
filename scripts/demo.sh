#!/bin/sh
# make demo: a local server in a temporary directory; upload a 256 MiB file,
# insert bytes in its middle, upload again (only the changed chunks travel),
# download, verify, stop the server.
set -eu
cd "$(dirname "$0")/.."
BIN="$PWD/build/syncstore"
DEMO=$(mktemp -d /tmp/syncstore-demo.XXXXXX)
PORT=${DEMO_PORT:-$((20000 + $$ % 20000))}
SERVER_PID=""
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
	rm -rf "$DEMO"
}
trap cleanup EXIT INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a cluster CA and an admin identity"
"$BIN" init "$DEMO/tls"

say "a server on 127.0.0.1:$PORT (data in $DEMO/data)"
"$BIN" server --data "$DEMO/data" --listen "127.0.0.1:$PORT" --tls "$DEMO/tls" 2>"$DEMO/server.log" &
SERVER_PID=$!
i=0
until grep -q "listening on" "$DEMO/server.log" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
		cat "$DEMO/server.log" >&2
		echo "demo: the server did not start" >&2
		exit 1
	fi
	sleep 0.1
done
export SYNCSTORE_SERVER="127.0.0.1:$PORT" SYNCSTORE_TLS="$DEMO/tls"

say "a 256 MiB file of random bytes"
head -c 268435456 /dev/urandom >"$DEMO/big.bin"
ls -lh "$DEMO/big.bin" | awk '{print $5, $NF}'

say "first upload: every chunk travels"
"$BIN" put "$DEMO/big.bin" demo/big.bin

say "insert 17 bytes in the middle of the file"
{ head -c 134217728 "$DEMO/big.bin"; printf 'hello, syncstore!'; tail -c +134217729 "$DEMO/big.bin"; } >"$DEMO/big2.bin"
mv "$DEMO/big2.bin" "$DEMO/big.bin"

say "second upload: only the chunks around the edit travel"
"$BIN" put "$DEMO/big.bin" demo/big.bin

say "download and verify"
"$BIN" get demo/big.bin "$DEMO/back.bin"
if cmp -s "$DEMO/big.bin" "$DEMO/back.bin"; then
	echo "downloaded copy is byte-identical ($(sha256sum <"$DEMO/back.bin" | cut -c1-16)…)"
else
	echo "demo: the downloaded copy differs!" >&2
	exit 1
fi

say "what the server holds"
"$BIN" ls
"$BIN" stat demo/big.bin
"$BIN" status

say "stop the server (SIGTERM)"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" && echo "server exited cleanly"
SERVER_PID=""
