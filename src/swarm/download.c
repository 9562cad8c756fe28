/*
 * download.c — `get`: one coordinator thread per download, one worker per
 * seeder.
 *
 *   1. the tree: from the root id in the .mtorrent down, level by level,
 *      each node verified against its id (so every byte of the tree is the
 *      sharer's), giving the ordered list of chunks (id, offset, length);
 *   2. the chunks: every worker takes batches of chunks still to fetch from
 *      one shared list and keeps SWARM_DEPTH READs outstanding, so a fast
 *      seeder serves more.  A chunk is hashed before it is written at its
 *      offset in DEST.part, then served to others at once.  A seeder that
 *      sends wrong bytes is dropped and reported; one that fails is dropped;
 *      their chunks go back to the list.  The coordinator asks the trackers
 *      for seeders again every few seconds;
 *   3. fsync, rename DEST.part to DEST, seed it.
 */
#include "swarm.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define MAX_KNOWN 32          /* seeders remembered per download */
#define REQUERY_S 3.0         /* ask the trackers again this often */
#define RETRY_DEAD_S 5.0      /* a seeder that failed may be tried again after */
#define TREE_DEADLINE_S 120   /* one seeder's whole tree, at most */
#define READ_DEADLINE_S 30.0  /* a READ's answers, at most: slower seeders are dropped */

enum { WANTED, TAKEN, DONE };

typedef struct leaf {
	uint8_t id[HASH_LEN];
	uint64_t off;
	uint32_t len;
	uint8_t state;
	uint8_t owner; /* TAKEN: the source (index) that took it */
	bool dup;      /* asked of a second source in the endgame */
} leaf;

typedef enum { SRC_IDLE, SRC_RUNNING, SRC_DEAD, SRC_BAD } src_state;

typedef struct source {
	struct job *job;
	uint8_t id[HASH_LEN];
	char addr[WIRE_ADDR_MAX];
	src_state state;
	double ended;      /* when it last stopped */
	bool joinable;
	pthread_t thread;
	uint64_t bytes;
	uint8_t *missing;  /* bitmap over leaves: it answered MISSING */
	int fd;            /* its socket while the worker runs (under job.mu), else -1 */
} source;

typedef struct job {
	swarm *sw;
	download *d;
	pthread_mutex_t mu; /* the leaves, the sources (with sw->mu never held inside) */
	pthread_cond_t cv;
	leaf *leaves;
	size_t nleaves, capleaves, ndone, hint;
	int fd, file;
	source src[MAX_KNOWN];
	unsigned nsrc;
	bool have_tree; /* leaves final: sources get their MISSING bitmaps */
	double tree_started;
	bool stop;
	bool shared; /* announced as a (partial) seeder */
} job;

/* ---- talking to one seeder ---- */

typedef struct seeder_link {
	conn c;
	msgio io;
	msg *m;
	ZSTD_DCtx *dctx;
	uint8_t *scratch;
} seeder_link;

static int link_open(swarm *sw, const char *addr, seeder_link *l)
{
	memset(l, 0, sizeof *l);
	l->c.fd = -1;
	int rc = conn_connect(sw->ctx, addr, TRACKERS_CONNECT_MS, &l->c);
	if (rc)
		return rc;
	conn_set_timeout(&l->c, SWARM_IO_MS);
	msgio_init(&l->io, &l->c);
	l->m = xmalloc(sizeof *l->m);
	l->dctx = ZSTD_createDCtx();
	l->scratch = xmalloc(CDC_MAX);
	if (l->c.peer.role != ROLE_CLIENT && l->c.peer.role != ROLE_SERVER)
		rc = ss_fail(SS_EAUTH, "%s is not a seeder (its certificate says %s)", addr, tls_role_name(l->c.peer.role));
	return rc ? rc : msgio_hello_client(&l->io);
}

static void link_close(seeder_link *l)
{
	if (l->m)
		msgio_free(&l->io);
	conn_close(&l->c);
	free(l->m);
	free(l->scratch);
	ZSTD_freeDCtx(l->dctx);
	memset(l, 0, sizeof *l);
}

/*
 * The next reply to a READ of id: 1 and the verified bytes (*p, *n), 0 if
 * the seeder does not have it, SS_ECORRUPT if its bytes do not hash to id,
 * or another error.
 */
static int link_chunk(seeder_link *l, const uint8_t id[HASH_LEN], const uint8_t **p, size_t *n)
{
	int rc = msgio_recv(&l->io, l->m);
	if (rc)
		return rc;
	if (l->m->type == MSG_MISSING && !memcmp(l->m->missing.id, id, HASH_LEN))
		return 0;
	if (l->m->type != MSG_CHUNK || memcmp(l->m->chunk.id, id, HASH_LEN))
		return ss_fail(SS_EPROTO, "it answered READ with message type %u out of order", l->m->type);
	if ((rc = wire_chunk_raw(l->m, l->dctx, l->scratch, p, n)))
		return rc;
	uint8_t got[HASH_LEN];
	sha256(*p, *n, got);
	if (memcmp(got, id, HASH_LEN)) {
		char hex[HASH_HEX_LEN + 1];
		hex_encode(id, HASH_LEN, hex);
		return ss_fail(SS_ECORRUPT, "it sent chunk %.16s with bytes that do not match its hash", hex);
	}
	return 1;
}

static bool aborted(swarm *sw)
{
	pthread_mutex_lock(&sw->mu);
	bool a = sw->abort;
	pthread_mutex_unlock(&sw->mu);
	return a;
}

/* ---- the tree ---- */

typedef struct tree_walk {
	uint8_t (*ids)[HASH_LEN]; /* this level's nodes, in file order */
	uint64_t *sizes;
	size_t n, cap;
} tree_walk;

/* Fetch and check one level's nodes from l; append the next level (or the
 * leaves, at level 1) in order.  *level is the level these nodes must have
 * (0: the root's, whatever it is). */
#define TREE_BATCH (WIRE_MAX_OFFER / 16) /* nodes per READ */
#define TREE_WINDOW 4                  /* READs outstanding per seeder */
#define TREE_SOURCES SWARM_TREE_SOURCES

/* Check one node of the level (expected id and size), index it, and append
 * its children to the next level — or, at level 1, its chunks to the
 * leaves.  *level is the level every node here must have (0: the root's,
 * whatever it is). */
static int take_node(job *j, const uint8_t *p, size_t n, const uint8_t id[HASH_LEN], uint64_t size, tree_walk *next,
		     unsigned *level)
{
	tree_node nd;
	int rc = tree_node_decode(p, n, &nd);
	if (rc)
		return rc;
	if (!*level)
		*level = nd.level; /* the root's says how tall the tree is */
	if (nd.level != *level || tree_node_size(&nd) != size)
		return ss_fail(SS_ECORRUPT, "the tree is inconsistent (level %u, %llu bytes)", nd.level,
			       (unsigned long long)tree_node_size(&nd));
	seed_add_node(id, p, n, j->file);
	for (unsigned e = 0; e < nd.count; e++) {
		tree_entry te;
		tree_node_entry(&nd, e, &te);
		if (nd.level > 1) {
			/* In a real tree every entry covers at least one chunk:
			 * more than size / CDC_MIN + 1 is a lie. */
			if (next->n > j->d->t.size / CDC_MIN + 1)
				return ss_fail(SS_ECORRUPT, "the tree lists more nodes than the file has chunks");
			if (next->n == next->cap) {
				next->cap = next->cap ? 2 * next->cap : 64;
				next->ids = xrealloc(next->ids, next->cap * HASH_LEN);
				next->sizes = xrealloc(next->sizes, next->cap * sizeof *next->sizes);
			}
			memcpy(next->ids[next->n], te.id, HASH_LEN);
			next->sizes[next->n++] = te.size;
			continue;
		}
		/* Every chunk but the last is ≥ CDC_MIN: the list stays within
		 * size / CDC_MIN entries whatever the tree says. */
		const leaf *prev = j->nleaves ? &j->leaves[j->nleaves - 1] : NULL;
		if (te.size > CDC_MAX || (prev && prev->len < CDC_MIN))
			return ss_fail(SS_ECORRUPT, "the tree lists a chunk of %llu bytes", (unsigned long long)te.size);
		uint64_t off = prev ? prev->off + prev->len : 0;
		if (j->nleaves == j->capleaves) {
			j->capleaves = j->capleaves ? 2 * j->capleaves : 256;
			j->leaves = xrealloc(j->leaves, j->capleaves * sizeof *j->leaves);
		}
		leaf *lf = &j->leaves[j->nleaves++];
		memset(lf, 0, sizeof *lf);
		memcpy(lf->id, te.id, HASH_LEN);
		lf->off = off;
		lf->len = (uint32_t)te.size;
		lf->state = WANTED;
	}
	return 0;
}

/*
 * Fetch one level's nodes in file order, batch b from seeder b % nl (each
 * keeping TREE_WINDOW READs outstanding), so several seeders serve the tree
 * at once.  *bad gets the index of the seeder a failure is about.
 */
static int fetch_level(job *j, seeder_link *ls, unsigned nl, tree_walk *cur, tree_walk *next, unsigned *level,
		       unsigned *bad)
{
	size_t nb = (cur->n + TREE_BATCH - 1) / TREE_BATCH, sent = 0;
	int rc = 0;
	for (size_t b = 0; b < nb && !rc; b++) {
		if (aborted(j->sw))
			return ss_fail(SS_EINVAL, "aborted");
		if (now_mono() - j->tree_started > TREE_DEADLINE_S)
			return ss_fail(SS_ETIMEDOUT, "the tree took more than %d s to arrive", TREE_DEADLINE_S);
		for (; sent < nb && sent < b + (size_t)TREE_WINDOW * nl && !rc; sent++) {
			size_t base = sent * TREE_BATCH;
			*bad = (unsigned)(sent % nl);
			rc = wire_ids(&ls[*bad].io.out, MSG_READ, cur->ids[base], (uint16_t)MIN(cur->n - base, TREE_BATCH));
		}
		*bad = (unsigned)(b % nl);
		seeder_link *l = &ls[*bad];
		size_t base = b * TREE_BATCH, k = MIN(cur->n - base, TREE_BATCH);
		for (size_t i = 0; i < k && !rc; i++) {
			const uint8_t *p;
			size_t n;
			if ((rc = link_chunk(l, cur->ids[base + i], &p, &n)) <= 0) {
				rc = rc ? rc : ss_fail(SS_ENOENT, "it does not have the file's tree");
				break;
			}
			rc = take_node(j, p, n, cur->ids[base + i], cur->sizes[base + i], next, level);
		}
	}
	if (!rc)
		(*level)--;
	return rc;
}

static int fetch_tree(job *j, seeder_link *ls, unsigned nl, unsigned *bad)
{
	j->tree_started = now_mono();
	tree_walk cur = {0}, next = {0};
	cur.ids = xmalloc(HASH_LEN);
	cur.sizes = xmalloc(sizeof *cur.sizes);
	memcpy(cur.ids[0], j->d->t.root, HASH_LEN);
	cur.sizes[0] = j->d->t.size;
	cur.n = 1;
	unsigned level = 0;
	int rc = 0;
	j->nleaves = 0;
	while (cur.n && !rc) {
		rc = fetch_level(j, ls, nl, &cur, &next, &level, bad);
		free(cur.ids);
		free(cur.sizes);
		cur = next;
		next = (tree_walk){0};
	}
	free(cur.ids);
	free(cur.sizes);
	return rc;
}

/* ---- the chunks ---- */

static bool missing_at(const source *s, size_t i)
{
	return s->missing[i / 8] >> (i % 8) & 1;
}

/* Take up to SWARM_BATCH chunks for s (under j->mu). */
/*
 * Take up to SWARM_BATCH chunks for s (under j->mu).  In the endgame —
 * nothing left to take, at most ENDGAME_LEFT chunks still in flight at other
 * seeders — s also asks for those, each of a second seeder at most once:
 * the first copy to arrive counts, so one slow seeder cannot hold the end
 * of a download.
 */
#define ENDGAME_LEFT (4 * SWARM_BATCH)
static unsigned take(job *j, source *s, size_t *out)
{
	unsigned k = 0, me = (unsigned)(s - j->src);
	for (size_t i = j->hint; i < j->nleaves && k < SWARM_BATCH; i++) {
		leaf *lf = &j->leaves[i];
		if (lf->state != WANTED || missing_at(s, i))
			continue;
		lf->state = TAKEN;
		lf->owner = (uint8_t)me;
		lf->dup = false;
		out[k++] = i;
	}
	while (j->hint < j->nleaves && j->leaves[j->hint].state == DONE)
		j->hint++;
	if (k || j->nleaves - j->ndone > ENDGAME_LEFT)
		return k;
	for (size_t i = j->hint; i < j->nleaves && k < SWARM_BATCH; i++) {
		leaf *lf = &j->leaves[i];
		if (lf->state == TAKEN && lf->owner != me && !lf->dup && !missing_at(s, i)) {
			lf->dup = true;
			out[k++] = i;
		}
	}
	return k;
}

/* A failed source's chunks in flight go back to the list (those it was
 * only asked for a second time stay with their first source). */
static void give_back(job *j, const source *s, const size_t *idx, unsigned n)
{
	unsigned me = (unsigned)(s - j->src);
	for (unsigned i = 0; i < n; i++)
		if (j->leaves[idx[i]].state == TAKEN && j->leaves[idx[i]].owner == me)
			j->leaves[idx[i]].state = WANTED;
	if (n)
		j->hint = 0;
	pthread_cond_broadcast(&j->cv);
}

static void *worker(void *arg)
{
	source *s = arg;
	job *j = s->job;
	size_t batch[SWARM_DEPTH][SWARM_BATCH];
	unsigned count[SWARM_DEPTH] = {0}, head = 0, out = 0; /* a ring of READs in flight */
	double sent_at[SWARM_DEPTH] = {0};
	uint64_t unsynced = 0;
	seeder_link l;
	int rc = link_open(j->sw, s->addr, &l);
	pthread_mutex_lock(&j->mu);
	s->fd = l.c.fd;
	pthread_mutex_unlock(&j->mu);
	if (!rc && memcmp(l.c.peer.id, s->id, HASH_LEN))
		rc = ss_fail(SS_EAUTH, "%s is not the seeder the tracker named", s->addr);
	while (!rc) {
		pthread_mutex_lock(&j->mu);
		while (out < SWARM_DEPTH && !j->stop) {
			unsigned slot = (head + out) % SWARM_DEPTH;
			if (!(count[slot] = take(j, s, batch[slot])))
				break;
			uint8_t ids[SWARM_BATCH][HASH_LEN];
			for (unsigned i = 0; i < count[slot]; i++)
				memcpy(ids[i], j->leaves[batch[slot][i]].id, HASH_LEN);
			if ((rc = wire_ids(&l.io.out, MSG_READ, ids[0], (uint16_t)count[slot])))
				break;
			sent_at[slot] = now_mono();
			out++;
		}
		bool idle = !out && !rc && !j->stop;
		if (idle && j->ndone < j->nleaves)
			pthread_cond_wait(&j->cv, &j->mu); /* chunks may come back */
		bool stop = j->stop || (idle && j->ndone == j->nleaves);
		pthread_mutex_unlock(&j->mu);
		if (stop || rc)
			break;
		if (!out)
			continue;
		/* Read the replies to the oldest READ. */
		unsigned slot = head;
		for (unsigned i = 0; i < count[slot] && !rc; i++) {
			size_t at = batch[slot][i];
			leaf *lf = &j->leaves[at];
			const uint8_t *p;
			size_t n;
			int got = link_chunk(&l, lf->id, &p, &n);
			/* A seeder that trickles holds its chunks from everyone. */
			if (got >= 0 && now_mono() - sent_at[slot] > READ_DEADLINE_S)
				got = ss_fail(SS_ETIMEDOUT, "it took over %.0f s to answer one READ", READ_DEADLINE_S);
			if (got == 1 && n != lf->len)
				got = ss_fail(SS_ECORRUPT, "it sent a chunk of %zu bytes for one of %u", n, lf->len);
			if (got < 0) {
				rc = got;
				break;
			}
			if (got == 1 && pwrite(j->fd, p, n, (off_t)lf->off) != (ssize_t)n) {
				/* Our own disk failed: the whole download fails. */
				rc = ss_fail_errno("cannot write %s", j->d->part);
				pthread_mutex_lock(&j->mu);
				snprintf(j->d->reason, sizeof j->d->reason, "%s", ss_errmsg(rc));
				j->stop = true;
				pthread_mutex_unlock(&j->mu);
				break;
			}
			/* Start writing back what arrived, so that the fsync at
			 * the end has little left to do. */
			if (got == 1 && (unsynced += n) >= (16u << 20)) {
				sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
				unsynced = 0;
			}
			pthread_mutex_lock(&j->mu);
			if (got == 1 && lf->state != DONE) {
				lf->state = DONE;
				j->ndone++;
				s->bytes += n;
				__atomic_add_fetch(&j->d->done_bytes, n, __ATOMIC_RELAXED);
				seed_add_chunk(lf->id, j->file, lf->off, lf->len);
			} else if (got == 0) {
				s->missing[at / 8] |= (uint8_t)(1u << (at % 8));
				if (lf->state == TAKEN && lf->owner == (uint8_t)(s - j->src)) {
					lf->state = WANTED;
					j->hint = 0;
				}
			}
			pthread_cond_broadcast(&j->cv);
			pthread_mutex_unlock(&j->mu);
			batch[slot][i] = SIZE_MAX;
		}
		if (rc)
			break;
		head = (head + 1) % SWARM_DEPTH;
		out--;
	}
	char addr[WIRE_ADDR_MAX];
	pthread_mutex_lock(&j->mu);
	memcpy(addr, s->addr, sizeof addr);
	for (unsigned k = 0; k < out; k++) {
		unsigned slot = (head + k) % SWARM_DEPTH;
		for (unsigned i = 0; i < count[slot]; i++)
			if (batch[slot][i] != SIZE_MAX)
				give_back(j, s, &batch[slot][i], 1);
	}
	s->fd = -1;
	s->state = rc == SS_ECORRUPT || rc == SS_EAUTH ? SRC_BAD : rc ? SRC_DEAD : SRC_IDLE;
	s->ended = now_mono();
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
	char hex[HASH_HEX_LEN + 1];
	hex_encode(s->id, HASH_LEN, hex);
	if (rc == SS_ECORRUPT || rc == SS_EAUTH) {
		log_warn("download %s: dropping seeder %s (%.16s): %s", j->d->t.name, addr, hex, ss_errmsg(rc));
		fprintf(stderr, "client: download %s: dropped seeder %s: %s\n", j->d->t.name, addr, ss_errmsg(rc));
	}
	else if (rc)
		log_info("download %s: seeder %s: %s", j->d->t.name, addr, ss_errmsg(rc));
	log_info("download %s: %llu bytes from %s", j->d->t.name, (unsigned long long)s->bytes, addr);
	link_close(&l);
	return NULL;
}

/* ---- the coordinator ---- */

typedef struct found {
	job *j;
	unsigned added;
} found;

static int add_seeder(void *ctx, const msg *m)
{
	found *f = ctx;
	job *j = f->j;
	/* Ourselves: only when we share the whole file already (a `get` of a
	 * file this client shares copies it through its own upload port). */
	if (!memcmp(m->seeder.id, j->sw->node_id, HASH_LEN) && !swarm_has_share(j->sw, j->d->t.root))
		return 0;
	pthread_mutex_lock(&j->mu);
	source *s = NULL;
	for (unsigned i = 0; i < j->nsrc && !s; i++)
		if (!memcmp(j->src[i].id, m->seeder.id, HASH_LEN))
			s = &j->src[i];
	if (!s) {
		/* A new seeder: a free slot, or one of a seeder that failed
		 * long ago (the tracker may name more than MAX_KNOWN over time). */
		double now = now_mono();
		for (unsigned i = 0; i < j->nsrc && !s; i++)
			if ((j->src[i].state == SRC_DEAD || j->src[i].state == SRC_BAD) &&
			    now - j->src[i].ended > 10 * RETRY_DEAD_S)
				s = &j->src[i];
		if (!s && j->nsrc < MAX_KNOWN)
			s = &j->src[j->nsrc++];
		if (s) {
			if (s->joinable)
				pthread_join(s->thread, NULL); /* it has ended: its state is set */
			free(s->missing);
			memset(s, 0, sizeof *s);
			s->job = j;
			memcpy(s->id, m->seeder.id, HASH_LEN);
			s->missing = j->have_tree ? xcalloc(j->nleaves / 8 + 1, 1) : NULL;
			s->fd = -1;
			f->added++;
		}
	}
	if (s && s->state != SRC_RUNNING)
		snprintf(s->addr, sizeof s->addr, "%s", m->seeder.addr); /* it may have moved */
	pthread_mutex_unlock(&j->mu);
	return 0;
}

static void ask_trackers(job *j)
{
	found f = {.j = j};
	int rc = trackers_seeders(&j->sw->ts, j->d->t.root, j->d->t.trackers, j->d->t.ntrackers, add_seeder, &f);
	if (rc)
		log_info("download %s: %s", j->d->t.name, ss_errmsg(rc));
	pthread_mutex_lock(&j->mu);
	/* What a seeder lacked a moment ago it may hold now (another
	 * downloader that got further). */
	for (unsigned i = 0; i < j->nsrc && j->have_tree; i++)
		memset(j->src[i].missing, 0, j->nleaves / 8 + 1);
	j->hint = 0;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

/* Start workers on idle seeders, up to SWARM_MAX_SOURCES (under j->mu);
 * the number running. */
static unsigned start_workers(job *j, double now)
{
	unsigned running = 0;
	for (unsigned i = 0; i < j->nsrc; i++)
		running += j->src[i].state == SRC_RUNNING;
	for (unsigned i = 0; i < j->nsrc && running < SWARM_MAX_SOURCES; i++) {
		source *s = &j->src[i];
		if (s->state == SRC_BAD || s->state == SRC_RUNNING ||
		    (s->state == SRC_DEAD && now - s->ended < RETRY_DEAD_S))
			continue;
		if (s->joinable)
			pthread_join(s->thread, NULL);
		s->joinable = false;
		s->state = SRC_RUNNING;
		if (pthread_create(&s->thread, NULL, worker, s)) {
			s->state = SRC_DEAD;
			s->ended = now;
			continue;
		}
		s->joinable = true;
		running++;
	}
	return running;
}

static void stop_workers(job *j)
{
	pthread_mutex_lock(&j->mu);
	j->stop = true;
	pthread_cond_broadcast(&j->cv);
	/* Wake workers blocked on a seeder (the fd stays open until the worker,
	 * under this lock, stops publishing it). */
	for (unsigned i = 0; i < j->nsrc; i++)
		if (j->src[i].state == SRC_RUNNING && j->src[i].fd >= 0)
			shutdown(j->src[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&j->mu);
	for (unsigned i = 0; i < j->nsrc; i++)
		if (j->src[i].joinable) {
			pthread_join(j->src[i].thread, NULL);
			j->src[i].joinable = false;
		}
}

/* The tree, from whichever seeder gives it first. */
static void set_tree_fds(job *j, const seeder_link *ls, unsigned nl)
{
	pthread_mutex_lock(&j->sw->mu);
	for (unsigned i = 0; i < TREE_SOURCES; i++)
		j->d->tree_fd[i] = i < nl ? ls[i].c.fd : -1;
	pthread_mutex_unlock(&j->sw->mu);
}

/* The tree, from up to TREE_SOURCES seeders at once; a seeder that fails
 * is marked and the others try again. */
static int get_tree(job *j)
{
	int rc = SS_ENOENT;
	while (rc && !aborted(j->sw)) {
		seeder_link ls[TREE_SOURCES];
		source *who[TREE_SOURCES];
		unsigned nl = 0;
		for (unsigned i = 0; i < j->nsrc && nl < TREE_SOURCES; i++) {
			source *s = &j->src[i];
			if (s->state == SRC_DEAD || s->state == SRC_BAD)
				continue;
			if ((rc = link_open(j->sw, s->addr, &ls[nl]))) {
				log_info("download %s: tree from %s: %s", j->d->t.name, s->addr, ss_errmsg(rc));
				link_close(&ls[nl]);
				s->state = SRC_DEAD;
				s->ended = now_mono();
				continue;
			}
			who[nl++] = s;
		}
		if (!nl)
			return rc ? rc : ss_fail(SS_ENOENT, "no seeder answered");
		/* Published, so an abort can wake a read from a seeder that
		 * trickles. */
		set_tree_fds(j, ls, nl);
		unsigned bad = 0;
		rc = aborted(j->sw) ? ss_fail(SS_EINVAL, "aborted") : fetch_tree(j, ls, nl, &bad);
		set_tree_fds(j, NULL, 0);
		for (unsigned i = 0; i < nl; i++)
			link_close(&ls[i]);
		if (rc && aborted(j->sw))
			return rc;
		if (rc) {
			log_info("download %s: tree from %s: %s", j->d->t.name, who[bad]->addr, ss_errmsg(rc));
			who[bad]->state = rc == SS_ECORRUPT ? SRC_BAD : SRC_DEAD;
			who[bad]->ended = now_mono();
		}
	}
	return rc;
}

static void set_state(job *j, dl_state st, const char *reason)
{
	pthread_mutex_lock(&j->sw->mu);
	j->d->state = st;
	j->d->finished = now_mono();
	if (reason && !j->d->reason[0])
		snprintf(j->d->reason, sizeof j->d->reason, "%s", reason);
	pthread_cond_broadcast(&j->sw->cv);
	pthread_mutex_unlock(&j->sw->mu);
}


static int run(job *j)
{
	download *d = j->d;
	double last_progress = now_mono(), last_ask = 0;
	int rc = 0;
	/* The file the chunks go to (and are served from as they arrive). */
	j->fd = open(d->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (j->fd < 0)
		return ss_fail_errno("cannot create %s", d->part);
	if (ftruncate(j->fd, (off_t)d->t.size) < 0)
		return ss_fail_errno("cannot size %s", d->part);
	if ((j->file = seed_file_open(d->part)) < 0)
		return j->file;
	/* Seeders, then the tree. */
	for (;;) {
		if (aborted(j->sw))
			return ss_fail(SS_EINVAL, "aborted");
		ask_trackers(j);
		last_ask = now_mono();
		if (j->nsrc && !(rc = get_tree(j)))
			break;
		if (now_mono() - last_progress > SWARM_NO_SEEDER_MS / 1000.0)
			return j->nsrc ? rc : ss_fail(SS_ENOENT, "no seeder has it");
		for (unsigned i = 0; i < j->nsrc; i++)
			if (j->src[i].state == SRC_DEAD)
				j->src[i].state = SRC_IDLE;
		usleep(500 * 1000);
	}
	pthread_mutex_lock(&j->mu);
	j->have_tree = true;
	for (unsigned i = 0; i < j->nsrc; i++) {
		free(j->src[i].missing);
		j->src[i].missing = xcalloc(j->nleaves / 8 + 1, 1);
		if (j->src[i].state == SRC_DEAD)
			j->src[i].state = SRC_IDLE;
	}
	pthread_mutex_unlock(&j->mu);
	/* The chunks.  Seed while downloading: others get what is verified here so far
	 * (MISSING for the rest). */
	int announced = 0;
	if ((rc = swarm_share(j->sw, &d->t, d->part, "", j->file, SHARE_PARTIAL, &announced)))
		log_info("download %s: not seeded while it runs: %s", d->t.name, ss_errmsg(rc));
	else if (announced)
		log_info("download %s: not announced yet: %s", d->t.name, ss_errmsg(announced));
	j->shared = !rc;
	rc = 0;
	size_t last_done = 0;
	pthread_mutex_lock(&j->mu);
	while (j->ndone < j->nleaves && !j->stop) {
		double now = now_mono();
		unsigned running = start_workers(j, now);
		pthread_mutex_lock(&j->sw->mu);
		d->sources = running;
		bool abort = j->sw->abort;
		pthread_mutex_unlock(&j->sw->mu);
		if (abort) {
			rc = ss_fail(SS_EINVAL, "aborted");
			break;
		}
		if (j->ndone != last_done)
			last_done = j->ndone, last_progress = now;
		if (now - last_progress > SWARM_NO_SEEDER_MS / 1000.0) {
			rc = ss_fail(SS_EUNAVAIL, "no seeder sent anything for %d s (%zu of %zu chunks missing)",
				     SWARM_NO_SEEDER_MS / 1000, j->nleaves - j->ndone, j->nleaves);
			break;
		}
		if (now - last_ask > REQUERY_S || (!running && now - last_ask > 0.5)) {
			pthread_mutex_unlock(&j->mu);
			ask_trackers(j);
			last_ask = now_mono();
			pthread_mutex_lock(&j->mu);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 300 * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		pthread_cond_timedwait(&j->cv, &j->mu, &ts);
	}
	bool complete = j->ndone == j->nleaves;
	if (!rc && !complete)
		rc = ss_fail(SS_EIO, "%s", d->reason[0] ? d->reason : "stopped");
	pthread_mutex_unlock(&j->mu);
	stop_workers(j);
	pthread_mutex_lock(&j->sw->mu);
	d->sources = 0;
	pthread_mutex_unlock(&j->sw->mu);
	if (rc)
		return rc;
	if (fsync(j->fd) < 0)
		return ss_fail_errno("cannot sync %s", d->part);
	if (rename(d->part, d->dest) < 0)
		return ss_fail_errno("cannot rename %s to %s", d->part, d->dest);
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", d->dest);
	fsync_dir(dirname(dir));
	return 0;
}

static void *coordinator(void *arg)
{
	job *j = arg;
	download *d = j->d;
	j->fd = j->file = -1;
	int rc = run(j);
	if (j->fd >= 0)
		close(j->fd);
	for (unsigned i = 0; i < j->nsrc; i++)
		free(j->src[i].missing);
	free(j->leaves);
	if (rc) {
		log_warn("download %s to %s failed: %s", d->t.name, d->dest, ss_errmsg(rc));
		if (j->shared)
			swarm_unshare(j->sw, &d->t, j->file, NULL, NULL);
		else if (j->file >= 0)
			seed_file_close(j->file);
		unlink(d->part);
		set_state(j, DL_FAILED, ss_errmsg(rc));
	} else {
		log_info("download %s to %s complete (%llu bytes)", d->t.name, d->dest, (unsigned long long)d->t.size);
		set_state(j, DL_DONE, NULL);
		int announced = 0;
		if ((rc = swarm_share(j->sw, &d->t, d->dest, "", j->file, 0, &announced))) {
			log_info("not seeding %s: %s", d->dest, ss_errmsg(rc));
			seed_file_close(j->file);
		} else if (announced) {
			log_warn("seeding %s, not announced yet: %s", d->dest, ss_errmsg(announced));
		}
	}
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
	free(j);
	return NULL;
}

int download_start(swarm *sw, const mtorrent *t, const char *dest)
{
	download *d = xcalloc(1, sizeof *d);
	d->t = *t;
	struct stat st;
	int n = stat(dest, &st) == 0 && S_ISDIR(st.st_mode) ? snprintf(d->dest, sizeof d->dest, "%s/%s", dest, t->name)
							     : snprintf(d->dest, sizeof d->dest, "%s", dest);
	if (n >= (int)sizeof d->dest || snprintf(d->part, sizeof d->part, "%s.part", d->dest) >= (int)sizeof d->part) {
		free(d);
		return ss_fail(SS_ETOOBIG, "destination path too long");
	}
	d->state = DL_RUNNING;
	d->started = now_mono();
	for (unsigned i = 0; i < SWARM_TREE_SOURCES; i++)
		d->tree_fd[i] = -1;
	job *j = xcalloc(1, sizeof *j);
	j->sw = sw;
	j->d = d;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	pthread_mutex_lock(&sw->mu);
	int rc = 0;
	if (sw->ndownloads == SWARM_MAX_DOWNLOADS)
		rc = ss_fail(SS_ETOOBIG, "at most %d downloads per session", SWARM_MAX_DOWNLOADS);
	else if (pthread_create(&d->thread, NULL, coordinator, j))
		rc = ss_fail(SS_EIO, "cannot start a download thread");
	else
		sw->downloads[sw->ndownloads++] = d;
	pthread_mutex_unlock(&sw->mu);
	if (rc) {
		pthread_mutex_destroy(&j->mu);
		pthread_cond_destroy(&j->cv);
		free(j);
		free(d);
	}
	return rc;
}
