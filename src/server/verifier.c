/* verifier.c — a bounded ring of chunk jobs and the thread that stores them. */
#include "verifier.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

typedef struct job {
	uint8_t id[HASH_LEN];
	uint8_t flags;
	bool wanted;
	uint32_t raw_len, len;
	buf frame;  /* the received frame's payload, taken over from msgio */
	size_t off; /* where the chunk bytes start in it */
} job;

struct verifier {
	store *st;
	verifier_stored_fn stored;
	void *stored_ctx;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t can_put, can_take;
	job *slots; /* VERIFIER_SLOTS */
	unsigned head, count;
	bool stop;
	int err;
	char errmsg[WIRE_TEXT_MAX];
	ZSTD_DCtx *dctx;
	uint8_t *raw; /* decompression buffer */
};

/* Decompress if needed, verify the hash, store.  Runs on the worker. */
static int verify_one(verifier *v, const job *j)
{
	const uint8_t *p = j->frame.p + j->off;
	size_t n = j->len;
	if (j->flags & WIRE_CHUNK_ZSTD) {
		size_t r = ZSTD_decompressDCtx(v->dctx, v->raw, CDC_MAX, p, n);
		if (ZSTD_isError(r) || r != j->raw_len)
			return ss_fail(SS_ECORRUPT, "chunk does not decompress to its stated length");
		p = v->raw;
		n = r;
	}
	uint8_t id[HASH_LEN];
	sha256(p, n, id);
	if (memcmp(id, j->id, HASH_LEN)) {
		char hex[HASH_HEX_LEN + 1];
		hex_encode(j->id, HASH_LEN, hex);
		return ss_fail(SS_ECORRUPT, "chunk %.16s does not match its hash", hex);
	}
	int rc = j->wanted ? store_put_absent_chunk(v->st, j->id, p, n) : store_put_chunk(v->st, j->id, p, n);
	if (!rc && v->stored)
		v->stored(v->stored_ctx, j->frame.p + j->off - (HASH_LEN + 5), j->len + HASH_LEN + 5);
	return rc;
}

static void *worker(void *arg)
{
	verifier *v = arg;
	pthread_mutex_lock(&v->mu);
	for (;;) {
		while (!v->count && !v->stop)
			pthread_cond_wait(&v->can_take, &v->mu);
		if (!v->count)
			break;
		job *j = &v->slots[v->head];
		bool failed = v->err != 0;
		pthread_mutex_unlock(&v->mu);
		/* After a failure the rest is dropped: the put is lost anyway. */
		int rc = failed ? 0 : verify_one(v, j);
		pthread_mutex_lock(&v->mu);
		if (rc && !v->err) {
			v->err = rc;
			snprintf(v->errmsg, sizeof v->errmsg, "%s", ss_errmsg(rc));
		}
		v->head = (v->head + 1) % VERIFIER_SLOTS;
		v->count--;
		pthread_cond_broadcast(&v->can_put);
	}
	pthread_mutex_unlock(&v->mu);
	return NULL;
}

verifier *verifier_start(store *st, verifier_stored_fn stored, void *ctx)
{
	verifier *v = xcalloc(1, sizeof *v);
	v->st = st;
	v->stored = stored;
	v->stored_ctx = ctx;
	pthread_mutex_init(&v->mu, NULL);
	pthread_cond_init(&v->can_put, NULL);
	pthread_cond_init(&v->can_take, NULL);
	v->slots = xmalloc(sizeof(job) * VERIFIER_SLOTS);
	for (unsigned i = 0; i < VERIFIER_SLOTS; i++)
		buf_init(&v->slots[i].frame, WIRE_MAX_FRAME);
	v->dctx = ZSTD_createDCtx();
	v->raw = xmalloc(CDC_MAX);
	if (pthread_create(&v->thread, NULL, worker, v)) {
		verifier_stop(v);
		return NULL;
	}
	v->started = true;
	return v;
}

/* The first failure, with its message set on this thread. */
static int first_error(verifier *v)
{
	return v->err ? ss_fail(v->err, "%s", v->errmsg) : 0;
}

int verifier_submit(verifier *v, const msg *m, buf *frame, bool wanted)
{
	pthread_mutex_lock(&v->mu);
	while (v->count == VERIFIER_SLOTS && !v->err)
		pthread_cond_wait(&v->can_put, &v->mu);
	int rc = first_error(v);
	job *j = &v->slots[(v->head + v->count) % VERIFIER_SLOTS];
	pthread_mutex_unlock(&v->mu);
	if (rc)
		return rc;
	/* Filled outside the lock: the worker never looks past head + count,
	 * and the session thread is the only submitter. */
	memcpy(j->id, m->chunk.id, HASH_LEN);
	j->flags = m->chunk.flags;
	j->wanted = wanted;
	j->raw_len = m->chunk.raw_len;
	j->len = m->chunk.len;
	/* Take the frame instead of copying it: hand msgio this slot's old
	 * buffer for its next read. */
	j->off = (size_t)(m->chunk.data - frame->p);
	buf old = j->frame;
	j->frame = *frame;
	*frame = old;
	buf_reset(frame);
	pthread_mutex_lock(&v->mu);
	v->count++;
	pthread_cond_signal(&v->can_take);
	pthread_mutex_unlock(&v->mu);
	return 0;
}

/* Wait until every queued chunk is stored (or dropped after a failure). */
static int drain(verifier *v, bool forget_failure)
{
	pthread_mutex_lock(&v->mu);
	while (v->count)
		pthread_cond_wait(&v->can_put, &v->mu);
	int rc = first_error(v);
	if (forget_failure)
		v->err = 0;
	pthread_mutex_unlock(&v->mu);
	return rc;
}

int verifier_drain(verifier *v) { return drain(v, false); }

void verifier_reset(verifier *v) { drain(v, true); }

void verifier_stop(verifier *v)
{
	if (!v)
		return;
	if (v->started) {
		pthread_mutex_lock(&v->mu);
		v->stop = true;
		pthread_cond_broadcast(&v->can_take);
		pthread_mutex_unlock(&v->mu);
		pthread_join(v->thread, NULL);
	}
	ZSTD_freeDCtx(v->dctx);
	free(v->raw);
	for (unsigned i = 0; i < VERIFIER_SLOTS; i++)
		buf_free(&v->slots[i].frame);
	free(v->slots);
	pthread_mutex_destroy(&v->mu);
	pthread_cond_destroy(&v->can_put);
	pthread_cond_destroy(&v->can_take);
	free(v);
}
