#!/bin/sh
# chunk.sh — build and run the chunking benchmark (bench/chunk_bench.c):
# SHA-256 alone, cdc_cut alone and cdc_stream with 1 and 2 threads over a
# 1 GiB page-cached file in /tmp, median of 5 runs, in GB/s.
# Usage: bench/chunk.sh [FILE [MiB]]   (defaults: /tmp/syncstore-chunk-bench.dat 1024)
set -e
cd "$(dirname "$0")/.."
make -s build/libsyncstore.a
mkdir -p build/bench
${CC:-cc} -std=c11 -D_GNU_SOURCE -Isrc -O2 -g -Wall -Wextra -Werror -Wshadow \
	-Wno-unused-parameter -o build/bench/chunk_bench bench/chunk_bench.c \
	build/libsyncstore.a -lssl -lcrypto -lsqlite3 -lzstd -levent -lpthread
exec build/bench/chunk_bench "$@"
