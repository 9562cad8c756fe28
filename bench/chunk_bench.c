/*
 * chunk_bench.c — throughput of the chunking pipeline on page-cached data.
 *
 * Usage: chunk_bench [FILE [MiB]]
 *
 * Uses FILE (default /tmp/syncstore-chunk-bench.dat), creating it with
 * MiB (default 1024) of pseudo-random bytes when it is missing or has a
 * different size, reads it once to warm the page cache, then times, five
 * times each and reporting the median:
 *
 *   sha256       SHA-256 alone, 32 KiB pieces
 *   cdc_cut      the cut-point search alone
 *   stream t=1   cdc_stream, one thread (pread + cut + hash + emit)
 *   stream t=2   cdc_stream, two threads
 *
 * The first two read the file in 1 MiB blocks, as cdc_stream does, and
 * time only the work on each block, so they show the CPU cost that the
 * stream adds up (the block is in L2), not DRAM or pread speed.  The
 * machine should be otherwise idle: the numbers are wall-clock.
 *
 * Costs: 1 MiB of memory; the file stays in /tmp for reruns.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunk/chunk.h"
#include "util/util.h"

#define RUNS 5
#define BENCH_BLOCK ((uint64_t)1 << 20)

struct bench_ctx {
	uint64_t bytes;
	uint64_t chunks;
	uint8_t acc; /* consumes the ids so nothing is optimised away */
};

static int bench_emit(void *ctx, const cdc_chunk *c)
{
	struct bench_ctx *b = ctx;

	b->bytes += c->len;
	b->chunks++;
	b->acc ^= c->id[0];
	return 0;
}

static int make_file(const char *path, uint64_t size)
{
	uint8_t *blk = xmalloc(1 << 20);
	uint64_t x = 0x9e3779b97f4a7c15ULL, done;
	int fd, rc = 0;
	size_t i;

	fprintf(stderr, "creating %s (%llu MiB of random data)\n", path,
		(unsigned long long)(size >> 20));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(blk);
		return ss_fail_errno("cannot create %s", path);
	}
	for (done = 0; done < size && !rc; done += 1 << 20) {
		for (i = 0; i < (1 << 20); i += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(blk + i, &x, 8);
		}
		rc = write_full(fd, blk, (size_t)MIN(size - done, (uint64_t)1 << 20));
	}
	close(fd);
	free(blk);
	return rc;
}

/*
 * Read the file block by block and time only SHA-256 (cut = 0) or the cut
 * search (cut = 1) over each block.
 */
static double time_blocks(int fd, uint64_t size, uint8_t *blk, int cut, uint8_t *acc)
{
	uint8_t id[HASH_LEN];
	uint64_t off;
	size_t n, pos, len;
	double t, total = 0;

	for (off = 0; off < size; off += n) {
		n = (size_t)MIN(size - off, BENCH_BLOCK);
		if (pread_full(fd, blk, n, off) != 0)
			abort();
		t = now_mono();
		for (pos = 0; pos < n; pos += len) {
			if (cut) {
				len = cdc_cut(blk + pos, n - pos);
				*acc ^= (uint8_t)len;
			} else {
				len = MIN(n - pos, (size_t)32 * 1024);
				sha256(blk + pos, len, id);
				*acc ^= id[0];
			}
		}
		total += now_mono() - t;
	}
	return total;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *name, const double secs[RUNS], uint64_t bytes)
{
	double s[RUNS];

	memcpy(s, secs, sizeof s);
	qsort(s, RUNS, sizeof s[0], cmp_double);
	printf("%-14s %8.2f %8.2f %8.2f\n", name, bytes / s[RUNS / 2] / 1e9,
	       bytes / s[RUNS - 1] / 1e9, bytes / s[0] / 1e9);
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/tmp/syncstore-chunk-bench.dat";
	uint64_t size = (uint64_t)(argc > 2 ? atoll(argv[2]) : 1024) << 20;
	double secs[RUNS], t;
	struct bench_ctx bc;
	struct stat st;
	uint8_t *blk, acc = 0;
	uint64_t off;
	int fd, rc, r, threads;

	if (size == 0) {
		fprintf(stderr, "usage: chunk_bench [FILE [MiB]]\n");
		return 2;
	}
	if (stat(path, &st) != 0 || (uint64_t)st.st_size != size) {
		if ((rc = make_file(path, size)) != 0) {
			fprintf(stderr, "chunk_bench: %s\n", ss_errmsg(rc));
			return 1;
		}
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		perror(path);
		return 1;
	}
	blk = xmalloc(BENCH_BLOCK);
	/* Warm the page cache. */
	for (off = 0; off < size; off += BENCH_BLOCK)
		if ((rc = pread_full(fd, blk, (size_t)MIN(size - off, BENCH_BLOCK), off)) != 0) {
			fprintf(stderr, "chunk_bench: %s\n", ss_errmsg(rc));
			return 1;
		}

	printf("%llu MiB, median of %d runs (GB/s = 10^9 bytes/s)\n",
	       (unsigned long long)(size >> 20), RUNS);
	printf("%-14s %8s %8s %8s\n", "test", "median", "min", "max");
	for (r = 0; r < RUNS; r++)
		secs[r] = time_blocks(fd, size, blk, 0, &acc);
	report("sha256", secs, size);
	for (r = 0; r < RUNS; r++)
		secs[r] = time_blocks(fd, size, blk, 1, &acc);
	report("cdc_cut", secs, size);

	for (threads = 1; threads <= 2; threads++) {
		char name[32];
		for (r = 0; r < RUNS; r++) {
			memset(&bc, 0, sizeof bc);
			t = now_mono();
			if ((rc = cdc_stream(fd, threads, bench_emit, &bc)) != 0) {
				fprintf(stderr, "chunk_bench: %s\n", ss_errmsg(rc));
				return 1;
			}
			secs[r] = now_mono() - t;
			if (bc.bytes != size) {
				fprintf(stderr, "chunk_bench: streamed %llu bytes, expected %llu\n",
					(unsigned long long)bc.bytes, (unsigned long long)size);
				return 1;
			}
			acc ^= bc.acc;
		}
		snprintf(name, sizeof name, "stream t=%d", threads);
		report(name, secs, size);
	}
	printf("(%llu chunks, mean %llu bytes; checksum %02x)\n",
	       (unsigned long long)bc.chunks, (unsigned long long)(size / bc.chunks), acc);
	free(blk);
	close(fd);
	return 0;
}
