#!/bin/sh
# Install the Debian packages syncstore builds, tests and benchmarks with.
# Idempotent and quiet when everything is already there.
set -e
PKGS="build-essential pkg-config libssl-dev libsqlite3-dev libzstd-dev libevent-dev
libcmocka-dev python3 python3-pytest clang libclang-rt-14-dev rsync openssl time"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
	exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends $missing >/dev/null
