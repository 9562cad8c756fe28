/*
 * put.c — upload a file (or a directory, recursively) sending only what the
 * server lacks.
 *
 * A producer thread chunks and hashes the file (cdc_stream, hashing on every
 * core) and builds the manifest tree; the sender (the calling thread) takes
 * level-1 nodes in batches (4, 8, … up to PUT_BATCH_NODES) and runs the
 * exchange of docs/WIRE.md: OFFER the batch's node ids, send the bodies of
 * the nodes the server lacks, then only the chunks it lacks, then SYNC.
 * Upper tree levels follow bottom up, in rounds of one level each, then
 * COMMIT.  So an edit costs one offer per
 * ~1 MiB of file (32 bytes) plus the changed nodes and chunks.
 *
 * Memory: chunk bytes are never held; the sender re-reads them with pread
 * (the producer just read them, so they come from the page cache).  A batch
 * holds at most PUT_BATCH_NODES level-1 nodes with their chunk offsets, at
 * most PUT_QUEUE batches are queued, and upper-level nodes (one per ~1 MiB ×
 * 32 of file) are kept until the end.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PUT_BATCH_NODES WIRE_BATCH_NODES
#define PUT_QUEUE 3

typedef struct span {
	uint64_t off;
	uint32_t len;
} span;

typedef struct node_item {
	uint8_t id[HASH_LEN];
	uint8_t level;
	uint16_t len;
	uint8_t bytes[TREE_NODE_MAX];
	uint64_t size;
	span chunks[TREE_MAX_FANOUT]; /* level 1: where each child is in the file */
} node_item;

typedef struct batch {
	unsigned n;
	bool last;
	uint64_t bytes; /* file bytes covered */
	node_item nodes[PUT_BATCH_NODES];
} batch;

typedef struct producer {
	int fd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	batch *queue[PUT_QUEUE];
	unsigned head, count;
	bool stop; /* sender gave up */
	int rc;    /* producer's result: 0 running, 1 done, <0 failed */
	char err[256]; /* its message (error messages are per thread) */

	batch *cur;
	unsigned batch_limit; /* nodes in the next batch: 4, 8, … PUT_BATCH_NODES */
	tree_builder *tb;
	span pending[TREE_MAX_FANOUT]; /* chunks since the last level-1 node */
	unsigned npending;
	node_item *upper; /* nodes of level ≥ 2, children first */
	size_t nupper, capupper;
	uint8_t root[HASH_LEN];
	uint64_t size;
} producer;

/* Files of a directory put are committed with WIRE_COMMIT_DEFER: the server
 * answers once each is durable on it, and one BARRIER per PUT_BARRIER_EVERY
 * files (and at the end) waits for the write quorum — instead of a quorum
 * round per file, which made small files cost a peer's pull, fetch and
 * fsync each.  The put succeeds only once the last barrier has. */
#define PUT_BARRIER_EVERY 256

/* Small files of a directory put go whole in one PUT_SMALL frame each,
 * without waiting for the answer; up to PUT_SMALL_WINDOW are in flight, and
 * the server commits those that arrived together in one transaction. */
#define PUT_SMALL_WINDOW 512
#define PUT_BARRIER_SMALL 4096

typedef struct put_stats {
	uint64_t files, file_bytes, sent; /* sent: frame bytes, for the summary */
	bool defer;                       /* inside a directory put */
	uint64_t unacked_seq;             /* highest deferred commit not yet behind a barrier */
	unsigned unacked;
	/* PUT_SMALLs sent and not answered yet: a ring of their local paths
	 * and sizes, in order. */
	char *small_path[PUT_SMALL_WINDOW];
	uint64_t small_size[PUT_SMALL_WINDOW];
	unsigned small_head, small_out;
	uint8_t *small_buf; /* WIRE_SMALL_MAX */
} put_stats;

/* Read the answer to the oldest PUT_SMALL in flight. */
static int small_answer(client *cl, put_stats *stats)
{
	unsigned i = stats->small_head;
	int rc = msgio_expect(&cl->io, MSG_OK, cl->m);
	if (rc) {
		char why[WIRE_TEXT_MAX];
		snprintf(why, sizeof why, "%s", ss_errmsg(rc));
		rc = ss_fail(rc, "%s: %s", stats->small_path[i], why);
	} else {
		stats->files++;
		stats->file_bytes += stats->small_size[i];
		stats->unacked_seq = MAX(stats->unacked_seq, cl->m->ok.value);
		stats->unacked++;
	}
	free(stats->small_path[i]);
	stats->small_path[i] = NULL;
	stats->small_head = (i + 1) % PUT_SMALL_WINDOW;
	stats->small_out--;
	return rc;
}

/* Collect every answer still due (before a request that wants its own).
 * The first failure ends the put: the answers after it are not read. */
static int small_drain(client *cl, put_stats *stats)
{
	int rc = 0;
	while (stats->small_out && !rc)
		rc = small_answer(cl, stats);
	return rc;
}

static void small_free(put_stats *stats)
{
	for (unsigned i = 0; i < PUT_SMALL_WINDOW; i++)
		free(stats->small_path[i]);
	free(stats->small_buf);
}

static int put_barrier(client *cl, put_stats *stats);

/* One small file of a directory, sent whole (fd open, sb its stat). */
static int put_small(client *cl, int fd, const struct stat *sb, const char *local, const char *remote,
		     put_stats *stats)
{
	int rc = 0;
	if (stats->small_out == PUT_SMALL_WINDOW && (rc = small_answer(cl, stats)))
		return rc;
	/* A barrier empties the pipeline: small files take one per
	 * PUT_BARRIER_SMALL rather than per PUT_BARRIER_EVERY. */
	if (stats->unacked >= PUT_BARRIER_SMALL && (rc = put_barrier(cl, stats)))
		return rc;
	if (!stats->small_buf)
		stats->small_buf = xmalloc(WIRE_SMALL_MAX);
	size_t n = (size_t)sb->st_size;
	if ((rc = pread_full(fd, stats->small_buf, n, 0)))
		return ss_fail(rc, "cannot read %s: %s", local, ss_errmsg(rc));
	struct stat after;
	if (fstat(fd, &after) < 0 || after.st_size != sb->st_size || after.st_mtim.tv_sec != sb->st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != sb->st_mtim.tv_nsec)
		return ss_fail(SS_EIO, "%s changed while it was being uploaded: nothing was committed", local);
	int64_t mtime = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
	uint64_t sent0 = cl->io.out.len;
	if ((rc = wire_put_small(&cl->io.out, remote, sb->st_mode & 07777, mtime, WIRE_COMMIT_DEFER,
				 stats->small_buf, n)))
		return rc;
	stats->sent += cl->io.out.len - sent0;
	unsigned i = (stats->small_head + stats->small_out++) % PUT_SMALL_WINDOW;
	stats->small_path[i] = xstrdup(local);
	stats->small_size[i] = n;
	return msgio_maybe_flush(&cl->io);
}

/* Wait until the write quorum holds every deferred commit so far. */
static int put_barrier(client *cl, put_stats *stats)
{
	int drc = small_drain(cl, stats);
	if (drc)
		return drc;
	if (!stats->unacked)
		return 0;
	int rc = wire_barrier(&cl->io.out, stats->unacked_seq);
	if (!rc)
		rc = msgio_expect(&cl->io, MSG_OK, cl->m);
	if (!rc)
		stats->unacked = 0;
	return rc;
}

/* ---- producer ---- */

static int queue_push(producer *p, batch *b)
{
	pthread_mutex_lock(&p->mu);
	while (p->count == PUT_QUEUE && !p->stop)
		pthread_cond_wait(&p->cv, &p->mu);
	int rc = p->stop ? SS_ECLOSED : 0;
	if (!rc) {
		p->queue[(p->head + p->count++) % PUT_QUEUE] = b;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	if (rc)
		free(b);
	return rc;
}

static batch *queue_pop(producer *p)
{
	pthread_mutex_lock(&p->mu);
	while (p->count == 0 && p->rc == 0)
		pthread_cond_wait(&p->cv, &p->mu);
	batch *b = NULL;
	if (p->count) {
		b = p->queue[p->head];
		p->head = (p->head + 1) % PUT_QUEUE;
		p->count--;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return b;
}

static int on_node(void *ctx, uint8_t level, const uint8_t *node, size_t len, const uint8_t id[HASH_LEN],
		   uint64_t size)
{
	producer *p = ctx;
	node_item *it;
	if (level == 1) {
		if (!p->cur)
			p->cur = xcalloc(1, sizeof *p->cur);
		it = &p->cur->nodes[p->cur->n++];
		tree_node nd;
		SS_ASSERT(tree_node_decode(node, len, &nd) == 0 && nd.count == p->npending);
		memcpy(it->chunks, p->pending, sizeof(span) * p->npending);
		p->npending = 0;
		p->cur->bytes += size;
	} else {
		if (p->nupper == p->capupper) {
			p->capupper = p->capupper ? 2 * p->capupper : 16;
			p->upper = xrealloc(p->upper, p->capupper * sizeof *p->upper);
		}
		it = &p->upper[p->nupper++];
	}
	memcpy(it->id, id, HASH_LEN);
	it->level = level;
	it->len = (uint16_t)len;
	it->size = size;
	memcpy(it->bytes, node, len);
	if (level == 1 && p->cur->n == p->batch_limit) {
		batch *b = p->cur;
		p->cur = NULL;
		/* Small batches first, so bytes start flowing at once; then
		 * full ones, so round trips stay rare. */
		p->batch_limit = MIN(2 * p->batch_limit, PUT_BATCH_NODES);
		return queue_push(p, b);
	}
	return 0;
}

static int on_chunk(void *ctx, const cdc_chunk *c)
{
	producer *p = ctx;
	SS_ASSERT(p->npending < TREE_MAX_FANOUT);
	p->pending[p->npending++] = (span){c->off, c->len};
	return tree_add(p->tb, c->id, c->len);
}

static void *producer_main(void *arg)
{
	producer *p = arg;
	int rc = cdc_stream(p->fd, 0, on_chunk, p);
	if (!rc)
		rc = tree_finish(p->tb, p->root, &p->size);
	if (!rc) {
		batch *b = p->cur ? p->cur : xcalloc(1, sizeof *b);
		p->cur = NULL;
		b->last = true;
		rc = queue_push(p, b);
	}
	pthread_mutex_lock(&p->mu);
	if (rc)
		snprintf(p->err, sizeof p->err, "%s", ss_errmsg(rc));
	p->rc = rc ? rc : 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ---- sender ---- */

typedef struct sender {
	client *cl;
	int fd;
	wire_zstd z;
	put_stats *stats;
	unsigned oks; /* SYNCs sent whose OK is not read yet */
} sender;

static bool bit(const uint8_t *bits, unsigned i) { return bits[i / 8] >> (i % 8) & 1; }

static int send_chunk(sender *s, const uint8_t id[HASH_LEN], span sp)
{
	/* Read straight into the outgoing frame.  Not hashed again here: the
	 * server verifies every chunk, and a file that changes under us is
	 * caught by its size and mtime at the end. */
	uint8_t *payload;
	size_t start;
	int rc = wire_chunk_open(&s->cl->io.out, id, sp.len, &payload, &start);
	if (rc)
		return rc;
	if ((rc = pread_full(s->fd, payload, sp.len, sp.off))) {
		s->cl->io.out.len = start;
		return rc;
	}
	wire_chunk_close(&s->cl->io.out, start, &s->z);
	return msgio_maybe_flush(&s->cl->io);
}

/*
 * One batch of the exchange in docs/WIRE.md: OFFER, the NODEs the server
 * lacks, the CHUNKs it lacks, SYNC.  Level-1 nodes have spans and their
 * missing chunks are sent; for higher levels every child was uploaded by an
 * earlier batch, so a missing child is a protocol failure.
 *
 * Replies come in the order the requests went out, and a request queued
 * behind megabytes of chunks is answered only once the server has taken
 * them in.  So level-1 batches overlap: the next batch's OFFER goes out
 * before this batch's chunks, its NODEs halfway through them, and the
 * answers are read when they are already waiting.  SYNC's OK is read
 * lazily, just before the next answer behind it.
 */
typedef struct round {
	node_item *nodes;
	unsigned n;
	unsigned oks_before; /* OKs of earlier SYNCs queued before this OFFER's WANT */
	unsigned nwanted;
	uint8_t want[PUT_BATCH_NODES / 8];
	uint8_t child_want[PUT_BATCH_NODES][TREE_MAX_FANOUT / 8];
	uint64_t chunk_bytes, chunk_sent; /* of the wanted chunks */
	unsigned ni, ci;                  /* next chunk to send: node, child */
	idset sent;
} round;

static void round_init(round *r, node_item *nodes, unsigned n)
{
	memset(r, 0, sizeof *r);
	r->nodes = nodes;
	r->n = n;
}

static int read_oks(sender *s, unsigned n)
{
	int rc = 0;
	for (; n && !rc; n--, s->oks--)
		rc = msgio_expect(&s->cl->io, MSG_OK, s->cl->m);
	return rc;
}

static int round_offer(sender *s, round *r)
{
	SS_ASSERT(r->n <= PUT_BATCH_NODES);
	uint8_t ids[PUT_BATCH_NODES * HASH_LEN];
	for (unsigned i = 0; i < r->n; i++)
		memcpy(ids + i * HASH_LEN, r->nodes[i].id, HASH_LEN);
	r->oks_before = s->oks;
	int rc = wire_ids(&s->cl->io.out, MSG_OFFER, ids, (uint16_t)r->n);
	return rc ? rc : msgio_flush(&s->cl->io);
}

/* Read the OFFER's answer and send the nodes the server lacks. */
static int round_nodes(sender *s, round *r)
{
	msgio *io = &s->cl->io;
	int rc = read_oks(s, r->oks_before);
	if (rc || (rc = msgio_expect(io, MSG_WANT, s->cl->m)))
		return rc;
	if (s->cl->m->want.count != r->n)
		return ss_fail(SS_EPROTO, "server answered %u of %u offers", s->cl->m->want.count, r->n);
	memcpy(r->want, s->cl->m->want.bits, (r->n + 7) / 8);
	for (unsigned i = 0; i < r->n && !rc; i++)
		if (bit(r->want, i)) {
			rc = wire_node(&io->out, r->nodes[i].bytes, r->nodes[i].len);
			r->nwanted++;
		}
	return rc ? rc : msgio_flush(io);
}

/* Read which children of each sent node the server lacks. */
static int round_child_wants(sender *s, round *r)
{
	for (unsigned i = 0; i < r->n; i++) {
		if (!bit(r->want, i))
			continue;
		tree_node nd;
		SS_ASSERT(tree_node_decode(r->nodes[i].bytes, r->nodes[i].len, &nd) == 0);
		int rc = msgio_expect(&s->cl->io, MSG_WANT, s->cl->m);
		if (rc)
			return rc;
		if (s->cl->m->want.count != nd.count)
			return ss_fail(SS_EPROTO, "server answered %u of a node's %u children", s->cl->m->want.count,
				       nd.count);
		memcpy(r->child_want[i], s->cl->m->want.bits, (nd.count + 7u) / 8);
		for (unsigned j = 0; j < nd.count; j++) {
			if (!bit(r->child_want[i], j))
				continue;
			if (nd.level != 1)
				return ss_fail(SS_EPROTO, "server lost a tree node uploaded earlier in this put");
			r->chunk_bytes += r->nodes[i].chunks[j].len;
		}
	}
	return 0;
}

/* Send wanted chunks until `upto` of the round's chunk bytes have gone. */
static int round_chunks(sender *s, round *r, uint64_t upto)
{
	for (; r->ni < r->n && r->chunk_sent < upto; r->ni++, r->ci = 0) {
		if (!bit(r->want, r->ni))
			continue;
		node_item *it = &r->nodes[r->ni];
		unsigned count = it->level == 1 ? (unsigned)(it->len - TREE_HDR) / TREE_ENTRY : 0;
		for (; r->ci < count && r->chunk_sent < upto; r->ci++) {
			if (!bit(r->child_want[r->ni], r->ci))
				continue;
			span sp = it->chunks[r->ci];
			r->chunk_sent += sp.len;
			/* A chunk repeated in the file travels once a round. */
			if (idset_add(&r->sent, it->bytes + TREE_HDR + (size_t)r->ci * TREE_ENTRY))
				continue;
			int rc = send_chunk(s, it->bytes + TREE_HDR + (size_t)r->ci * TREE_ENTRY, sp);
			if (rc)
				return rc;
		}
		if (r->ci < count)
			return 0; /* stopped inside this node */
	}
	return 0;
}

static int round_sync(sender *s, round *r)
{
	if (!r->nwanted)
		return 0;
	int rc = wire_empty(&s->cl->io.out, MSG_SYNC);
	if (!rc)
		s->oks++;
	return rc ? rc : msgio_flush(&s->cl->io);
}

/* One batch on its own, nothing overlapped: upper levels, and level 1 when
 * the chunker is behind. */
static int round_whole(sender *s, round *r)
{
	int rc;
	if (!r->n)
		return 0;
	if ((rc = round_offer(s, r)) || (rc = round_nodes(s, r)) || (rc = round_child_wants(s, r)) ||
	    (rc = round_chunks(s, r, UINT64_MAX)))
		return rc;
	return round_sync(s, r);
}

/* A batch the chunker has ready, without waiting for one; NULL if none. */
static batch *queue_try_pop(producer *p)
{
	pthread_mutex_lock(&p->mu);
	bool ready = p->count > 0 || p->rc != 0;
	pthread_mutex_unlock(&p->mu);
	return ready ? queue_pop(p) : NULL;
}

static int chunker_failed(producer *p)
{
	return p->rc < 0 ? ss_fail(p->rc, "%s", p->err) : ss_fail(SS_EIO, "chunker ended without its last batch");
}

/*
 * The level-1 batches, overlapped (see struct round): while batch k's
 * chunks go out, batch k+1's OFFER and NODEs go with them, if the chunker
 * has it ready.  Otherwise batch k+1 runs on its own after k.
 */
static int send_level1(sender *s, producer *p, progress *pg)
{
	round *cur = xcalloc(1, sizeof *cur), *next = xcalloc(1, sizeof *next);
	batch *b = queue_pop(p), *nb = NULL;
	uint64_t done = 0;
	int rc = 0;
	if (!b)
		rc = chunker_failed(p);
	else {
		round_init(cur, b->nodes, b->n);
		if (b->n && !(rc = round_offer(s, cur)) && !(rc = round_nodes(s, cur)))
			rc = round_child_wants(s, cur);
	}
	while (!rc) {
		/* cur's nodes went out and its child WANTs are read. */
		bool overlap = false;
		if (!b->last && (nb = queue_try_pop(p)) && nb->n) {
			round_init(next, nb->nodes, nb->n);
			if ((rc = round_offer(s, next)))
				break;
			overlap = true;
		}
		if ((rc = round_chunks(s, cur, cur->chunk_bytes / 2)))
			break;
		if (overlap && (rc = round_nodes(s, next)))
			break;
		if ((rc = round_chunks(s, cur, UINT64_MAX)) || (rc = round_sync(s, cur)))
			break;
		if (overlap && (rc = round_child_wants(s, next)))
			break;
		done += b->bytes;
		progress_update(pg, done);
		bool last = b->last;
		free(b);
		idset_free(&cur->sent);
		b = NULL;
		if (last)
			break;
		if (!nb && !(nb = queue_pop(p))) {
			rc = chunker_failed(p);
			break;
		}
		b = nb;
		nb = NULL;
		round *t = cur;
		cur = next;
		next = t;
		if (!overlap) {
			round_init(cur, b->nodes, b->n);
			if (b->n && ((rc = round_offer(s, cur)) || (rc = round_nodes(s, cur)) ||
				     (rc = round_child_wants(s, cur))))
				break;
		}
	}
	free(b);
	free(nb);
	idset_free(&cur->sent);
	idset_free(&next->sent);
	free(cur);
	free(next);
	return rc;
}

/* Upload one regular file to remote path; fd open for reading. */
static int put_file(const cli_opts *o, client *cl, int fd, const struct stat *sb, const char *local, const char *remote,
		    put_stats *stats)
{
	msgio *io = &cl->io;
	int64_t mtime = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
	int rc = small_drain(cl, stats);
	if (rc)
		return rc;
	uint64_t sent0 = io->sent;
	rc = wire_put(&io->out, remote, (uint64_t)sb->st_size, sb->st_mode & 07777, mtime, 0);
	if (rc || (rc = msgio_expect(io, MSG_OK, cl->m)))
		return rc;

	producer *p = xcalloc(1, sizeof *p);
	p->fd = fd;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->batch_limit = 4;
	p->tb = xmalloc(sizeof *p->tb);
	tree_init(p->tb, on_node, p);
	sender s = {.cl = cl, .fd = fd, .stats = stats};
	wire_zstd_init(&s.z);

	progress pg;
	progress_init(&pg, remote, (uint64_t)sb->st_size, o->quiet);
	pthread_t th;
	int err = pthread_create(&th, NULL, producer_main, p);
	if (err) {
		p->rc = ss_fail(SS_ENOMEM, "cannot start the chunker thread: %s", strerror(err));
		snprintf(p->err, sizeof p->err, "%s", ss_errmsg(p->rc));
	}
	rc = send_level1(&s, p, &pg);
	/* Stop the producer (if the sender failed) and collect it. */
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (!err)
		pthread_join(th, NULL);
	while (p->count) {
		free(p->queue[p->head]);
		p->head = (p->head + 1) % PUT_QUEUE;
		p->count--;
	}
	free(p->cur);

	/* Upper levels, bottom up: every level in one or more rounds. */
	for (size_t i = 0; !rc && i < p->nupper;) {
		size_t j = i;
		while (j < p->nupper && j - i < PUT_BATCH_NODES && p->upper[j].level == p->upper[i].level)
			j++;
		round r;
		round_init(&r, p->upper + i, (unsigned)(j - i));
		rc = round_whole(&s, &r);
		idset_free(&r.sent);
		i = j;
	}
	if (!rc)
		rc = read_oks(&s, s.oks);
	/* A file changed under us explains any failure above (a short read,
	 * or the server refusing a chunk that no longer matches its hash)
	 * better than the failure itself, and must never be committed. */
	struct stat after;
	if (fstat(fd, &after) < 0 || after.st_size != sb->st_size || (!rc && p->size != (uint64_t)sb->st_size) ||
	    after.st_mtim.tv_sec != sb->st_mtim.tv_sec || after.st_mtim.tv_nsec != sb->st_mtim.tv_nsec)
		rc = ss_fail(SS_EIO, "%s changed while it was being uploaded: nothing was committed", local);
	if (!rc && !(rc = wire_commit(&io->out, p->root, p->size, stats->defer ? WIRE_COMMIT_DEFER : 0)))
		rc = msgio_expect(io, MSG_OK, cl->m);
	progress_end(&pg);
	if (!rc) {
		stats->files++;
		stats->file_bytes += p->size;
		if (stats->defer) {
			stats->unacked_seq = MAX(stats->unacked_seq, cl->m->ok.value);
			if (++stats->unacked >= PUT_BARRIER_EVERY)
				rc = put_barrier(cl, stats);
		}
	}
	stats->sent += io->sent - sent0;

	wire_zstd_free(&s.z);
	free(p->upper);
	free(p->tb);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
	return rc;
}

/* ---- directories ---- */

static int put_path(const cli_opts *o, client *cl, const char *local, const char *remote, put_stats *stats,
		    int depth);

static int put_dir(const cli_opts *o, client *cl, const char *local, const char *remote, put_stats *stats,
		   int depth)
{
	if (depth > 64)
		return ss_fail(SS_ETOOBIG, "directory tree deeper than 64 levels at %s", local);
	/* Sorted, so uploads are in a predictable order. */
	struct dirent **names;
	int n = scandir(local, &names, NULL, alphasort);
	if (n < 0)
		return ss_fail_errno("cannot read directory %s", local);
	int rc = 0;
	for (int i = 0; i < n; i++) {
		const char *nm = names[i]->d_name;
		if (!rc && strcmp(nm, ".") && strcmp(nm, "..")) {
			char l[PATH_MAX], r[SS_PATH_MAX + 1];
			if (!(rc = path_join(l, sizeof l, local, nm)) && !(rc = path_join(r, sizeof r, remote, nm)))
				rc = put_path(o, cl, l, r, stats, depth + 1);
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

/* The path named on the command line is followed if it is a symlink and
 * must be a file or directory; inside a directory, symlinks and special
 * files are skipped with a warning (following them could loop or escape). */
static int put_path(const cli_opts *o, client *cl, const char *local, const char *remote, put_stats *stats,
		    int depth)
{
	struct stat sb;
	if ((depth ? lstat(local, &sb) : stat(local, &sb)) < 0)
		return ss_fail_errno("cannot stat %s", local);
	if (S_ISDIR(sb.st_mode)) {
		stats->defer = true;
		int rc = put_dir(o, cl, local, remote, stats, depth);
		return rc || depth ? rc : put_barrier(cl, stats);
	}
	if (!S_ISREG(sb.st_mode)) {
		if (!depth)
			return ss_fail(SS_EINVAL, "%s is not a regular file or directory", local);
		fprintf(stderr, "syncstore: put: skipping %s: not a regular file\n", local);
		return 0;
	}
	int rc = path_check(remote, strlen(remote));
	if (rc)
		return rc;
	int fd = open(local, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ss_fail_errno("cannot open %s", local);
	if (stats->defer && sb.st_size <= (off_t)WIRE_SMALL_MAX && (cl->io.peer_features & WIRE_FEATURE_SMALL))
		rc = put_small(cl, fd, &sb, local, remote, stats);
	else
		rc = put_file(o, cl, fd, &sb, local, remote, stats);
	close(fd);
	return rc;
}

int cmd_put(const cli_opts *o, int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: syncstore put LOCAL_FILE_OR_DIR REMOTE_PATH\n");
		return EXIT_USAGE;
	}
	const char *local = argv[1], *remote = argv[2];
	int rc = path_check(remote, strlen(remote));
	if (rc)
		return cli_fail("put", rc);
	struct stat sb;
	if (stat(local, &sb) < 0)
		return cli_fail("put", ss_fail_errno("cannot stat %s", local));
	client cl;
	if ((rc = client_connect(o, &cl)))
		return cli_fail("put", rc);
	put_stats stats = {0};
	double t0 = now_mono();
	rc = put_path(o, &cl, local, remote, &stats, 0);
	small_free(&stats);
	if (rc == SS_ECLOSED || rc == SS_ETLS)
		rc = client_pending_error(&cl, rc);
	client_close(&cl);
	if (rc)
		return cli_fail("put", rc);
	{
		char size[16], sent[16];
		fmt_size(stats.file_bytes, size);
		fmt_size(stats.sent, sent);
		double pct = stats.file_bytes ? 100.0 * (double)stats.sent / (double)stats.file_bytes : 0;
		printf(pct < 1 ? "put %s: %llu file%s, %s, sent %s (%.3f%% of the data) in %.2f s\n"
			       : "put %s: %llu file%s, %s, sent %s (%.1f%% of the data) in %.2f s\n", remote,
		       (unsigned long long)stats.files, stats.files == 1 ? "" : "s", size, sent, pct, now_mono() - t0);
	}
	return 0;
}
