/*
 * stream.c — chunk and hash a file with bounded memory, cut-point search
 * overlapped with SHA-256 on several cores.
 *
 * Pipeline (threads ≥ 2):
 *
 *   calling thread: pread a block → cdc_cut → queue chunk jobs → emit in order
 *   workers (threads-1):          claim a job → sha256 → mark it done
 *
 * The calling thread reads, finds cut points and emits; whenever it cannot
 * go further ahead (every block of the ring holds unemitted chunks) it
 * hashes queued jobs itself, so all `threads` cores hash and the split
 * between searching and hashing balances by itself.  Jobs are hashed in
 * any order but emitted strictly in file order, from the calling thread.
 *
 * Memory: a ring of CDC_NBLOCKS buffers, each CDC_MAX bytes of carry space
 * followed by one read block (CDC_BLOCK, 4 MiB): ~16.5 MiB, whatever the
 * file size.  A chunk that spans two reads is finished in the later buffer:
 * the unchunked tail (< CDC_MAX bytes) is copied in front of the new block,
 * so every chunk is contiguous and cdc_cut always sees CDC_MAX bytes unless
 * the file ends, which makes the cut points equal to whole-buffer chunking.
 * A block is reused once all of its chunks have been emitted.
 *
 * threads == 1 does everything inline in one buffer, with no threads and no
 * locks: cut a chunk, hash it while it is still in cache, emit it.
 *
 * Costs: one copy from the page cache (pread), the cut search (~3.8 GB/s),
 * SHA-256 (~1.5 GB/s per core here), a mutex round trip per chunk (~37 KiB).
 * Limits: at most CDC_MAX_THREADS threads; the file is read from offset 0 to
 * the end seen by pread, and a file that grows meanwhile is read to wherever
 * pread first returns 0.
 */
#include "chunk.h"
#include "../util/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CDC_BLOCK (4u << 20)
#define CDC_BLOCK_LIMIT (64u << 20)
#define CDC_NBLOCKS 4
#define CDC_MAX_THREADS 4
/* More than the chunks CDC_NBLOCKS blocks can hold (each > CDC_MIN bytes). */
#define CDC_JOBS 4096
#define CDC_BATCH 8

/*
 * Fill dst with up to want bytes from off; *got < want only at end of file.
 */
static int cdc_read(int fd, uint8_t *dst, size_t want, uint64_t off, size_t *got)
{
	size_t n = 0;

	while (n < want) {
		ssize_t r = pread(fd, dst + n, want - n, (off_t)(off + n));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return ss_fail_errno("cannot read input at offset %llu",
					     (unsigned long long)(off + n));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*got = n;
	return 0;
}

static uint8_t *cdc_buf_alloc(size_t block)
{
	/* Page-aligned read area (the carry space in front is CDC_MAX bytes);
	 * aligned_alloc wants a multiple of the alignment. */
	return aligned_alloc(4096, (CDC_MAX + block + 4095) & ~(size_t)4095);
}

/* ---- threads == 1: everything inline ---- */

static int cdc_stream_inline(int fd, size_t block, cdc_emit_fn emit, void *ctx)
{
	uint8_t *mem, *base;
	uint64_t roff = 0, coff = 0;
	size_t rem = 0, got, avail, pos, len;
	cdc_chunk c;
	int rc = 0;

	if ((mem = cdc_buf_alloc(block)) == NULL)
		return ss_fail(SS_ENOMEM, "cannot allocate chunking buffer");
	for (;;) {
		if ((rc = cdc_read(fd, mem + CDC_MAX, block, roff, &got)) != 0)
			break;
		roff += got;
		base = mem + CDC_MAX - rem;
		avail = rem + got;
		pos = 0;
		/* At end of file (got < block) cut everything left. */
		while (avail - pos >= CDC_MAX || (got < block && pos < avail)) {
			len = cdc_cut(base + pos, avail - pos);
			c.off = coff;
			c.len = (uint32_t)len;
			c.data = base + pos;
			sha256(c.data, len, c.id);
			if ((rc = emit(ctx, &c)) != 0)
				goto out;
			pos += len;
			coff += len;
		}
		if (got < block)
			break;
		rem = avail - pos;
		memmove(mem + CDC_MAX - rem, base + pos, rem);
	}
out:
	free(mem);
	return rc;
}

/* ---- threads ≥ 2: pipeline ---- */

struct cdc_job {
	const uint8_t *data;
	uint64_t off;
	uint32_t len;
	int done;               /* under mu */
	uint8_t id[HASH_LEN];
};

struct cdc_block {
	uint8_t *buf;
	uint64_t end;           /* jobs before this sequence number are ours or older */
};

struct cdc_pipe {
	pthread_mutex_t mu;
	pthread_cond_t work;    /* workers: a job was queued, or stop */
	pthread_cond_t done;    /* caller: a job was hashed */
	struct cdc_job *jobs;   /* ring of CDC_JOBS, indexed by sequence */
	uint64_t head;          /* next job to emit (caller only) */
	uint64_t claim;         /* next job to hash */
	uint64_t tail;          /* next job to queue */
	int idle;               /* workers waiting on work */
	int waiting;            /* caller waiting on done */
	int stop;
};

static struct cdc_job *cdc_job_at(struct cdc_pipe *pp, uint64_t seq)
{
	return &pp->jobs[seq % CDC_JOBS];
}

static void *cdc_worker(void *arg)
{
	struct cdc_pipe *pp = arg;
	struct cdc_job *j;

	pthread_mutex_lock(&pp->mu);
	for (;;) {
		while (!pp->stop && pp->claim == pp->tail) {
			pp->idle++;
			pthread_cond_wait(&pp->work, &pp->mu);
			pp->idle--;
		}
		if (pp->stop)
			break;
		j = cdc_job_at(pp, pp->claim++);
		pthread_mutex_unlock(&pp->mu);
		sha256(j->data, j->len, j->id);
		pthread_mutex_lock(&pp->mu);
		j->done = 1;
		if (pp->waiting)
			pthread_cond_signal(&pp->done);
	}
	pthread_mutex_unlock(&pp->mu);
	return NULL;
}

/*
 * The calling thread's side.  Returns 0 at end of file, or the first error
 * or non-zero emit() result.  Workers are stopped by the caller.
 */
static int cdc_pipe_run(struct cdc_pipe *pp, struct cdc_block *blk, int fd, size_t block,
			cdc_emit_fn emit, void *ctx)
{
	unsigned first = 0, cur = 0, used = 0, i, nq;
	uint8_t *base = NULL;
	size_t avail = 0, pos = 0, got = 0, rem, len;
	uint64_t roff = 0, coff = 0;
	int eof = 0, rc;
	struct cdc_job *j, q[CDC_BATCH];
	cdc_chunk c;

	for (;;) {
		/* 1. Emit every finished job at the head, in file order. */
		pthread_mutex_lock(&pp->mu);
		while (pp->head < pp->tail && (j = cdc_job_at(pp, pp->head))->done) {
			pthread_mutex_unlock(&pp->mu);
			/* The slot and its block stay ours until head moves on. */
			c.off = j->off;
			c.len = j->len;
			c.data = j->data;
			memcpy(c.id, j->id, HASH_LEN);
			if ((rc = emit(ctx, &c)) != 0)
				return rc;
			pthread_mutex_lock(&pp->mu);
			pp->head++;
		}
		pthread_mutex_unlock(&pp->mu);
		while (used > 1 && pp->head >= blk[first].end) {
			first = (first + 1) % CDC_NBLOCKS;
			used--;
		}

		/* 2. Cut a few chunks from the current block. */
		nq = 0;
		while (nq < CDC_BATCH && pp->tail + nq - pp->head < CDC_JOBS &&
		       base && (avail - pos >= CDC_MAX || (eof && pos < avail))) {
			len = cdc_cut(base + pos, avail - pos);
			q[nq].data = base + pos;
			q[nq].off = coff;
			q[nq].len = (uint32_t)len;
			q[nq].done = 0;
			nq++;
			pos += len;
			coff += len;
		}
		if (nq > 0) {
			pthread_mutex_lock(&pp->mu);
			for (i = 0; i < nq; i++)
				*cdc_job_at(pp, pp->tail++) = q[i];
			if (pp->idle)
				pthread_cond_signal(&pp->work);
			pthread_mutex_unlock(&pp->mu);
			continue;
		}

		/* 3. Read the next block, carrying the unchunked tail over. */
		if (!eof && (avail - pos < CDC_MAX || !base) && used < CDC_NBLOCKS) {
			unsigned nb = used ? (cur + 1) % CDC_NBLOCKS : first;
			rem = avail - pos;
			if (used)
				blk[cur].end = pp->tail;
			blk[nb].end = UINT64_MAX;
			if (rem)
				memcpy(blk[nb].buf + CDC_MAX - rem, base + pos, rem);
			cur = nb;
			used++;
			base = blk[cur].buf + CDC_MAX - rem;
			if ((rc = cdc_read(fd, blk[cur].buf + CDC_MAX, block, roff, &got)) != 0)
				return rc;
			roff += got;
			avail = rem + got;
			pos = 0;
			eof = got < block;
			continue;
		}

		/* 4. Nothing to cut or read: hash a queued job, or wait. */
		pthread_mutex_lock(&pp->mu);
		if (pp->claim < pp->tail) {
			j = cdc_job_at(pp, pp->claim++);
			pthread_mutex_unlock(&pp->mu);
			sha256(j->data, j->len, j->id);
			pthread_mutex_lock(&pp->mu);
			j->done = 1;
		} else if (pp->head < pp->tail) {
			pp->waiting = 1;
			while (!cdc_job_at(pp, pp->head)->done)
				pthread_cond_wait(&pp->done, &pp->mu);
			pp->waiting = 0;
		} else if (eof && pos == avail) {
			pthread_mutex_unlock(&pp->mu);
			return 0;
		}
		pthread_mutex_unlock(&pp->mu);
	}
}

static int cdc_stream_pipe(int fd, unsigned threads, size_t block, cdc_emit_fn emit, void *ctx)
{
	struct cdc_pipe pp;
	struct cdc_block blk[CDC_NBLOCKS];
	pthread_t tid[CDC_MAX_THREADS];
	unsigned i, nthr = 0;
	int rc;

	memset(&pp, 0, sizeof pp);
	memset(blk, 0, sizeof blk);
	pp.jobs = calloc(CDC_JOBS, sizeof *pp.jobs);
	if (!pp.jobs)
		return ss_fail(SS_ENOMEM, "cannot allocate chunking queue");
	for (i = 0; i < CDC_NBLOCKS; i++) {
		if ((blk[i].buf = cdc_buf_alloc(block)) == NULL) {
			rc = ss_fail(SS_ENOMEM, "cannot allocate chunking buffers");
			goto free_bufs;
		}
	}
	pthread_mutex_init(&pp.mu, NULL);
	pthread_cond_init(&pp.work, NULL);
	pthread_cond_init(&pp.done, NULL);
	/* If a thread cannot start, the caller hashes its share: slower, same result. */
	for (i = 0; i + 1 < threads; i++) {
		if (pthread_create(&tid[nthr], NULL, cdc_worker, &pp) != 0)
			break;
		nthr++;
	}

	rc = cdc_pipe_run(&pp, blk, fd, block, emit, ctx);

	pthread_mutex_lock(&pp.mu);
	pp.stop = 1;
	pthread_cond_broadcast(&pp.work);
	pthread_mutex_unlock(&pp.mu);
	for (i = 0; i < nthr; i++)
		pthread_join(tid[i], NULL);
	pthread_cond_destroy(&pp.done);
	pthread_cond_destroy(&pp.work);
	pthread_mutex_destroy(&pp.mu);
free_bufs:
	for (i = 0; i < CDC_NBLOCKS; i++)
		free(blk[i].buf);
	free(pp.jobs);
	return rc;
}

int cdc_stream_block(int fd, int threads, size_t block, cdc_emit_fn emit, void *ctx)
{
	long ncpu;

	if (threads < 0)
		return ss_fail(SS_EINVAL, "chunking threads must be ≥ 0, not %d", threads);
	if (block == 0 || block > CDC_BLOCK_LIMIT)
		return ss_fail(SS_EINVAL, "chunking block of %zu bytes out of range", block);
	if (threads == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		threads = ncpu < 1 ? 1 : (int)MIN(ncpu, CDC_MAX_THREADS);
	}
	threads = MIN(threads, CDC_MAX_THREADS);
	if (threads == 1)
		return cdc_stream_inline(fd, block, emit, ctx);
	return cdc_stream_pipe(fd, (unsigned)threads, block, emit, ctx);
}

int cdc_stream(int fd, int threads, cdc_emit_fn emit, void *ctx)
{
	return cdc_stream_block(fd, threads, CDC_BLOCK, emit, ctx);
}
