/* peer.c — links to the other servers: pull their change logs (see peer.h). */
#include "peer.h"
#include "../core/apply.h"
#include "../core/link.h"
#include "../core/node.h"
#include "../core/repl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <zstd.h>

typedef struct peer {
	server *srv;
	struct peers *all;
	unsigned idx;
	pthread_t thread;
	bool started;
	char addr[128];
	char pin[HASH_HEX_LEN + 1]; /* hex node id (or a prefix of it); "" = any */
	int fd;                     /* the live link's socket, -1: none (under all->mu) */
	peer_info info;             /* under all->mu */
	/* The link's next action from the core, under all->mu. */
	repl_act act;
	bool has_act;
	pthread_cond_t act_cv;
	/* Fetched by the link for the batch in hand: the core logs and resets
	 * them while the link waits for its next action. */
	uint64_t fetched_chunks, fetched_bytes;
} peer;

/* An event for the core thread (core/node.h says what each means). */
typedef enum { EV_START, EV_WOKE, EV_CONNECTED, EV_FAILED, EV_PULLED, EV_FETCHED, EV_FORGET } core_ev_kind;

typedef struct core_ev {
	core_ev_kind kind;
	unsigned link;
	uint64_t peer;       /* CONNECTED: its short id; FORGET: the member's */
	record *recs;        /* PULLED: lent until the link's next action */
	unsigned n;
	repl_pulled pulled;
	bool *done;          /* FORGET: set once handled (under mu) */
	int *rc;             /* FORGET: its result */
} core_ev;

struct peers {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a peer's info changed, or a forget was handled */
	SSL_CTX *ctx;      /* client side of the links, this node's identity */
	unsigned n;
	peer *v;
	uint8_t forgotten[SERVER_MAX_PEERS][HASH_LEN]; /* members removed for good */
	unsigned nforgotten;
	/* Published by the core: the records parked here, how often a batch
	 * parked new ones, and when one last did. */
	uint64_t pending, pending_gen; /* under mu */
	double parked_at;
	/* The core thread and its bounded queue (under mu): every link has at
	 * most one event in it (it waits for its action after each), plus a
	 * forget or two — a full queue makes the poster wait. */
	repl_node *node; /* the core thread's alone */
	pthread_t core;
	bool core_started, stopping;
	/* The core thread has ended: nothing lent to it (a link's records, a
	 * forget's result) is used any more.  Until then a link waits, even
	 * when stopping, so its buffer outlives the core's use of it. */
	bool core_exited;
	core_ev *q;
	unsigned qcap, qhead, qlen;
	pthread_cond_t q_cv; /* an event came, or room */
	uint64_t conflicts;  /* logged so far */
};

static bool forgotten_locked(struct peers *ps, const uint8_t id[HASH_LEN])
{
	for (unsigned i = 0; i < ps->nforgotten; i++)
		if (!memcmp(ps->forgotten[i], id, HASH_LEN))
			return true;
	return false;
}

bool peers_is_forgotten(server *srv, const uint8_t id[HASH_LEN])
{
	struct peers *ps = srv->peers;
	if (!ps)
		return false;
	pthread_mutex_lock(&ps->mu);
	bool f = forgotten_locked(ps, id);
	pthread_mutex_unlock(&ps->mu);
	return f;
}

/* One connection to a peer.  A link thread's buffers (recs, cache) are
 * its own and outlive its connections; a short connection (peers_dial,
 * repair, forget) has none. */
typedef struct link {
	peer *p;
	store *st;
	conn c;
	msgio io;
	msg *m;
	ZSTD_DCtx *dctx;
	uint8_t *scratch; /* CDC_MAX: decompressed chunks */
	record *recs;     /* PEER_PULL_BATCH: what a PULL brought */
	uint64_t peer_short;
	struct cached_node *cache; /* PEER_PULL_BATCH: nodes prefetch() read */
	unsigned ncache;
	buf local; /* a node read from our own store */
} link;

typedef struct cached_node {
	uint8_t id[HASH_LEN];
	size_t len;
	uint8_t bytes[TREE_NODE_MAX];
} cached_node;

/* ---- fetching trees ---- */

/* Send READ for n ids; then the replies come in the same order. */
static int send_read(link *l, const uint8_t *ids, unsigned n)
{
	int rc = wire_ids(&l->io.out, MSG_READ, ids, (uint16_t)n);
	return rc ? rc : msgio_flush(&l->io);
}

/* The next READ reply, which must be the bytes of id: verified, raw in
 * p and n (valid until the next receive). */
static int recv_chunk(link *l, const uint8_t id[HASH_LEN], const uint8_t **p, size_t *n)
{
	char hex[HASH_HEX_LEN + 1];
	int rc = msgio_recv(&l->io, l->m);
	if (rc)
		return rc;
	if (l->m->type == MSG_MISSING) {
		hex_encode(id, HASH_LEN, hex);
		return ss_fail(SS_ENOENT, "it does not have chunk %.16s", hex);
	}
	if (l->m->type == MSG_ERROR)
		return ss_fail(SS_EREMOTE, "%s", l->m->error.text);
	if (l->m->type != MSG_CHUNK)
		return ss_fail(SS_EPROTO, "it answered READ with message type %u", l->m->type);
	if ((rc = wire_chunk_raw(l->m, l->dctx, l->scratch, p, n)))
		return rc;
	uint8_t got[HASH_LEN];
	sha256(*p, *n, got);
	if (memcmp(got, id, HASH_LEN)) {
		hex_encode(id, HASH_LEN, hex);
		return ss_fail(SS_ECORRUPT, "it sent bytes that do not match chunk %.16s", hex);
	}
	return 0;
}

/* Fetch the data chunks of a level-1 node that are not here. */
static int fetch_chunks(link *l, const tree_node *nd)
{
	uint8_t ids[TREE_MAX_FANOUT * HASH_LEN];
	unsigned n = 0;
	for (unsigned i = 0; i < nd->count; i++) {
		tree_entry e;
		tree_node_entry(nd, i, &e);
		int have = store_has(l->st, e.id);
		if (have < 0)
			return have;
		bool dup = false;
		for (unsigned j = 0; j < n && !dup; j++)
			dup = !memcmp(ids + j * HASH_LEN, e.id, HASH_LEN);
		if (!have && !dup)
			memcpy(ids + n++ * HASH_LEN, e.id, HASH_LEN);
	}
	if (!n)
		return 0;
	/* Every reply is read even after a MISSING, so the link stays in
	 * step; the tree then reports SS_ENOENT (its record is parked). */
	int rc = send_read(l, ids, n), missing = 0;
	for (unsigned i = 0; i < n && !rc; i++) {
		const uint8_t *p;
		size_t len;
		if ((rc = recv_chunk(l, ids + i * HASH_LEN, &p, &len)) == SS_ENOENT) {
			rc = 0;
			missing = SS_ENOENT;
			continue;
		}
		if (!rc && !(rc = store_put_chunk(l->st, ids + i * HASH_LEN, p, len))) {
			l->p->fetched_chunks++;
			l->p->fetched_bytes += len;
		}
	}
	return rc ? rc : missing;
}

/*
 * Make the tree under id complete here: fetch the node unless it is already
 * marked complete, then whatever of its subtree is missing, then mark it
 * (store_put_node) — children first, so a mark always means a whole
 * subtree.  Depth is bounded by TREE_MAX_LEVEL.
 */
static int fetch_tree(link *l, const uint8_t id[HASH_LEN], int level, unsigned depth)
{
	int rc = store_has_node(l->st, id);
	if (rc)
		return rc < 0 ? rc : 0;
	if (depth > TREE_MAX_LEVEL)
		return ss_fail(SS_ECORRUPT, "its tree is deeper than %d levels", TREE_MAX_LEVEL);
	uint8_t body[TREE_NODE_MAX];
	const uint8_t *p = NULL;
	size_t len = 0;
	for (unsigned i = 0; i < l->ncache && !p; i++)
		if (!memcmp(l->cache[i].id, id, HASH_LEN))
			p = l->cache[i].bytes, len = l->cache[i].len;
	/* A node pushed during the put is here as a chunk already. */
	if (!p && store_get_chunk(l->st, id, &l->local) == 0)
		p = l->local.p, len = l->local.len;
	if (!p && ((rc = send_read(l, id, 1)) || (rc = recv_chunk(l, id, &p, &len))))
		return rc;
	if (len > TREE_NODE_MAX)
		return ss_fail(SS_ECORRUPT, "it sent a tree node that is too large");
	memcpy(body, p, len);
	tree_node nd;
	if ((rc = tree_node_decode(body, len, &nd)))
		return rc;
	if (level >= 0 && nd.level != level)
		return ss_fail(SS_ECORRUPT, "it sent a tree node at the wrong level");
	if (nd.level == 1) {
		rc = fetch_chunks(l, &nd);
	} else {
		for (unsigned i = 0; i < nd.count && !rc; i++) {
			tree_entry e;
			tree_node_entry(&nd, i, &e);
			rc = fetch_tree(l, e.id, nd.level - 1, depth + 1);
		}
	}
	return rc ? rc : store_put_node(l->st, id, body, len);
}

/* READ ids[0..n) and store every data chunk that comes back verified. */
static int read_chunks(link *l, const uint8_t *ids, unsigned n)
{
	int rc = send_read(l, ids, n);
	for (unsigned i = 0; i < n && !rc; i++) {
		const uint8_t *p;
		size_t len;
		if ((rc = recv_chunk(l, ids + (size_t)i * HASH_LEN, &p, &len)) == SS_ENOENT) {
			rc = 0; /* the walk that needs it reports it */
			continue;
		}
		if (!rc && !(rc = store_put_chunk(l->st, ids + (size_t)i * HASH_LEN, p, len))) {
			l->p->fetched_chunks++;
			l->p->fetched_bytes += len;
		}
	}
	return rc;
}

/*
 * Before the walks of a batch: the root nodes of all its trees in one
 * READ, then every data chunk missing under the roots of level 1 in as few
 * READs as fit — two round trips for a batch of small files instead of two
 * per file.  The walks (fetch_tree) then find the roots in l->cache and
 * the chunks in the store, and do the checking and marking as before.
 * roots: n distinct ids (the core's list).
 */
static int prefetch(link *l, const uint8_t *roots, unsigned n)
{
	uint8_t *ids = xmalloc((size_t)WIRE_MAX_OFFER * HASH_LEN);
	unsigned k = 0;
	int rc = 0;
	l->ncache = 0;
	for (unsigned i = 0; i < n && !rc && k < PEER_PULL_BATCH; i++) {
		const uint8_t *root = roots + (size_t)i * HASH_LEN;
		int have = store_has_node(l->st, root);
		/* A root pushed during the put is here as a chunk: fetch_tree
		 * reads it locally. */
		if (!have)
			have = store_has(l->st, root);
		if (have < 0)
			rc = have;
		else if (!have)
			memcpy(ids + (size_t)k++ * HASH_LEN, root, HASH_LEN);
	}
	if (!rc && k)
		rc = send_read(l, ids, k);
	for (unsigned i = 0; i < k && !rc; i++) {
		const uint8_t *p;
		size_t len;
		if ((rc = recv_chunk(l, ids + (size_t)i * HASH_LEN, &p, &len)) == SS_ENOENT) {
			rc = 0;
			continue;
		}
		if (!rc && len <= TREE_NODE_MAX) {
			cached_node *c = &l->cache[l->ncache++];
			memcpy(c->id, ids + (size_t)i * HASH_LEN, HASH_LEN);
			memcpy(c->bytes, p, len);
			c->len = len;
		}
	}
	/* The data chunks under level-1 roots. */
	idset want = {0};
	k = 0;
	for (unsigned i = 0; i < l->ncache && !rc; i++) {
		tree_node nd;
		if (tree_node_decode(l->cache[i].bytes, l->cache[i].len, &nd) || nd.level != 1)
			continue; /* the walk reports a bad node */
		for (unsigned e = 0; e < nd.count && !rc; e++) {
			tree_entry te;
			tree_node_entry(&nd, e, &te);
			int have = store_has(l->st, te.id);
			if (have < 0)
				rc = have;
			else if (!have && !idset_add(&want, te.id))
				memcpy(ids + (size_t)k++ * HASH_LEN, te.id, HASH_LEN);
			if (!rc && k == WIRE_MAX_OFFER) {
				rc = read_chunks(l, ids, k);
				k = 0;
			}
		}
	}
	if (!rc && k)
		rc = read_chunks(l, ids, k);
	idset_free(&want);
	free(ids);
	return rc;
}

/* ACT_FETCH: complete the trees of roots[0..n) as far as the peer has
 * them.  A chunk it lacks is no error here (the core parks the record);
 * anything else (a bad chunk, the link) is. */
static int fetch_roots(link *l, const uint8_t *roots, unsigned n)
{
	int rc = prefetch(l, roots, n);
	for (unsigned i = 0; i < n && !rc && !server_stopping(l->p->srv); i++)
		if ((rc = fetch_tree(l, roots + (size_t)i * HASH_LEN, -1, 0)) == SS_ENOENT)
			rc = 0;
	l->ncache = 0;
	return rc;
}

/* ACT_PULL: send the core's request, held by the peer at most wait_ms;
 * receive its records into l->recs and its PULLED. */
static int pull_once(link *l, const repl_act *act, core_ev *ev)
{
	const repl_pull_req *rq = &act->req;
	int rc = wire_pull(&l->io.out, rq->index_id, rq->after, rq->acked, rq->fp, PEER_PULL_BATCH, act->wait_ms);
	if (rc || (rc = msgio_flush(&l->io)))
		return rc;
	unsigned n = 0;
	for (;;) {
		if ((rc = msgio_recv(&l->io, l->m)))
			return rc;
		if (l->m->type == MSG_PULLED)
			break;
		if (l->m->type == MSG_ERROR)
			return ss_fail(SS_EREMOTE, "peer %s: %s", l->p->addr, l->m->error.text);
		if (l->m->type != MSG_ENTRY || n == PEER_PULL_BATCH)
			return ss_fail(SS_EPROTO, "peer %s answered PULL with message type %u (record %u)", l->p->addr,
				       l->m->type, n);
		l->recs[n++] = l->m->rec;
	}
	ev->recs = l->recs;
	ev->n = n;
	ev->pulled = (repl_pulled){.index_id = l->m->pulled.index_id,
				   .head = l->m->pulled.head,
				   .files = l->m->pulled.files,
				   .bytes = l->m->pulled.bytes};
	memcpy(ev->pulled.digest, l->m->pulled.digest, HASH_LEN);
	return 0;
}

/* ---- the link ---- */

static int check_peer(link *l)
{
	peer *p = l->p;
	char hex[HASH_HEX_LEN + 1];
	hex_encode(l->c.peer.id, HASH_LEN, hex);
	if (l->c.peer.role != p->srv->role)
		return ss_fail(SS_EAUTH, "%s is not a syncstore %s (its certificate says %s)", p->addr,
			       tls_role_name(p->srv->role), tls_role_name(l->c.peer.role));
	if (p->pin[0] && strncasecmp(hex, p->pin, strlen(p->pin)))
		return ss_fail(SS_EAUTH, "%s is node %.16s, not the pinned %s", p->addr, hex, p->pin);
	if (!memcmp(l->c.peer.id, p->srv->node_id, HASH_LEN))
		return ss_fail(SS_EINVAL, "%s is this server itself", p->addr);
	if (peers_is_forgotten(p->srv, l->c.peer.id))
		return ss_fail(SS_EAUTH, "%s is node %.16s, which this cluster forgot: wipe its data directory to "
					 "join again as a new member", p->addr, hex);
	return 0;
}

/* Connect l to p: TCP, TLS, the peer's identity checked, HELLO, JOIN. */
static int link_open(peer *p, link *l)
{
	memset(l, 0, sizeof *l);
	l->p = p;
	l->st = p->srv->st;
	l->c.fd = -1;
	int rc = conn_connect(p->all->ctx, p->addr, PEER_CONNECT_MS, &l->c);
	if (rc)
		return rc;
	msgio_init(&l->io, &l->c);
	l->m = xmalloc(sizeof *l->m);
	l->dctx = ZSTD_createDCtx();
	l->scratch = xmalloc(CDC_MAX);
	buf_init(&l->local, CDC_MAX);
	/* A held PULL answers within PEER_WAIT_MS; anything slower is dead. */
	conn_set_timeout(&l->c, PEER_WAIT_MS + 30000);
	if (!(rc = check_peer(l)) && !(rc = msgio_hello_client(&l->io)) &&
	    !(rc = wire_join(&l->io.out, p->srv->opts->listen, (uint16_t)p->srv->cluster_size)))
		rc = msgio_expect(&l->io, MSG_OK, l->m);
	l->peer_short = node_short_id(l->c.peer.id);
	return rc;
}

static void link_close(link *l)
{
	free(l->scratch);
	buf_free(&l->local);
	if (l->dctx)
		ZSTD_freeDCtx(l->dctx);
	free(l->m);
	if (l->c.fd >= 0) {
		msgio_free(&l->io);
		conn_close(&l->c);
	}
}

int peers_dial(server *srv, unsigned i, conn *c, msgio *io)
{
	struct peers *ps = srv->peers;
	if (!ps || i >= ps->n)
		return ss_fail(SS_EINVAL, "no peer %u", i);
	link l;
	int rc = link_open(&ps->v[i], &l);
	if (!rc) {
		/* Hand the connection over; the rest of the link is freed. */
		*c = l.c;
		*io = l.io;
		io->c = c;
		l.c.fd = -1;
	}
	link_close(&l);
	return rc;
}

/* ACT_CONNECT: open the link (its thread's buffers with it) and remember
 * whom it reached (status, forget, membership). */
static int link_up(peer *p, link *l, record *recs, cached_node *cache)
{
	int rc = link_open(p, l);
	l->recs = recs;
	l->cache = cache;
	pthread_mutex_lock(&p->all->mu);
	p->fd = l->c.fd; /* from now on peers_stop can wake us */
	pthread_mutex_unlock(&p->all->mu);
	if (rc || server_stopping(p->srv))
		return rc ? rc : SS_EUNAVAIL;
	pthread_mutex_lock(&p->all->mu);
	bool new_id = memcmp(p->info.id, l->c.peer.id, HASH_LEN) != 0;
	p->info.known = true;
	memcpy(p->info.id, l->c.peer.id, HASH_LEN);
	pthread_mutex_unlock(&p->all->mu);
	char hex[HASH_HEX_LEN + 1], key[160];
	hex_encode(l->c.peer.id, HASH_LEN, hex);
	/* Remembered, so status names a member that is down after our
	 * restart, and forget can find it. */
	snprintf(key, sizeof key, "peer:%s", p->addr);
	if (new_id && (rc = store_setting_set(l->st, key, hex)))
		log_warn("cannot remember peer %s: %s", p->addr, ss_errmsg(rc));
	log_info("peer %s (node %.16s) connected", p->addr, hex);
	return 0;
}

/* Close the link's connection, if open (its buffers stay). */
static void link_down(peer *p, link *l)
{
	if (l->c.fd < 0)
		return;
	pthread_mutex_lock(&p->all->mu);
	p->fd = -1;
	pthread_mutex_unlock(&p->all->mu);
	record *recs = l->recs;
	cached_node *cache = l->cache;
	link_close(l);
	*l = (link){.c.fd = -1, .recs = recs, .cache = cache};
}

static int64_t now_ms(void) { return (int64_t)(now_mono() * 1000); }

/* ---- the core thread ---- */

/* Queue ev for the core (waiting for room).  False once stopping. */
static bool post(struct peers *ps, const core_ev *ev)
{
	pthread_mutex_lock(&ps->mu);
	while (ps->qlen == ps->qcap && !ps->stopping)
		pthread_cond_wait(&ps->q_cv, &ps->mu);
	bool ok = !ps->stopping;
	if (ok) {
		ps->q[(ps->qhead + ps->qlen++) % ps->qcap] = *ev;
		pthread_cond_broadcast(&ps->q_cv);
	}
	pthread_mutex_unlock(&ps->mu);
	return ok;
}

/* Hand link p its next action (ACT_WAIT: none yet). */
static void give(peer *p, const repl_act *act)
{
	if (act->kind == ACT_WAIT)
		return;
	pthread_mutex_lock(&p->all->mu);
	p->act = *act;
	p->has_act = true;
	pthread_cond_signal(&p->act_cv);
	pthread_mutex_unlock(&p->all->mu);
}

/* Publish link i's state and the parked count (status, catch-up, the
 * quorum's live peers). */
static void publish(struct peers *ps, unsigned i, const repl_outcome *out)
{
	const repl_peer_state *st = repl_node_state(ps->node, i);
	repl_view v = repl_node_view(ps->node);
	pthread_mutex_lock(&ps->mu);
	peer_info *pi = &ps->v[i].info;
	pi->connected = st->connected;
	pi->head_known = st->connected && st->head_known;
	if (st->head_known) {
		pi->index_id = st->pulled.index_id;
		pi->head = st->pulled.head;
		pi->files = st->pulled.files;
		pi->bytes = st->pulled.bytes;
		memcpy(pi->digest, st->pulled.digest, HASH_LEN);
	}
	pi->cursor = st->cursor;
	ps->pending = v.parked;
	ps->pending_gen = v.parked_gen;
	if (out->parked)
		ps->parked_at = now_mono();
	pthread_cond_broadcast(&ps->cv);
	pthread_mutex_unlock(&ps->mu);
}

/* What an event did, in the log; held PULLs wake if anything was written. */
static void report(struct peers *ps, peer *p, const repl_outcome *out)
{
	if (out->parked)
		log_warn("peer %s lacks chunks of %u records: parked until another server sends them", p->addr,
			 out->parked);
	if (out->written) {
		server_changed(p->srv);
		char sz[16];
		fmt_size(p->fetched_bytes, sz);
		if (out->records)
			log_info("peer %s: applied %u of %u records (%llu chunks, %s fetched)", p->addr, out->written,
				 out->records, (unsigned long long)p->fetched_chunks, sz);
		else
			log_info("peer %s: applied %u pending records (%llu chunks, %s fetched from it)", p->addr,
				 out->written, (unsigned long long)p->fetched_chunks, sz);
	}
	if (out->written || out->records || out->resolved)
		p->fetched_chunks = p->fetched_bytes = 0;
	uint64_t conflicts = repl_node_counts(ps->node)->conflicts;
	if (conflicts > ps->conflicts) {
		log_info("%llu conflicts resolved (records from peer %s)", (unsigned long long)(conflicts - ps->conflicts),
			 p->addr);
		ps->conflicts = conflicts;
	}
}

static void handle(struct peers *ps, core_ev *ev)
{
	repl_node *node = ps->node;
	unsigned i = ev->link;
	repl_act act = {.kind = ACT_WAIT};
	repl_outcome out = {0};
	int64_t now = now_ms();
	int rc = 0;
	switch (ev->kind) {
	case EV_FORGET:
		rc = repl_node_forget(node, ev->peer);
		pthread_mutex_lock(&ps->mu);
		ps->pending = repl_node_view(node).parked;
		*ev->rc = rc;
		*ev->done = true;
		pthread_cond_broadcast(&ps->cv);
		pthread_mutex_unlock(&ps->mu);
		return;
	case EV_START:
		rc = repl_node_start(node, i, now, &act);
		break;
	case EV_WOKE:
		rc = repl_node_woke(node, i, now, &act);
		break;
	case EV_CONNECTED:
		rc = repl_node_connected(node, i, ev->peer, now, &act, &out);
		break;
	case EV_FAILED:
		repl_node_failed(node, i, now, &act, &out);
		ps->v[i].fetched_chunks = ps->v[i].fetched_bytes = 0;
		break;
	case EV_PULLED:
		rc = repl_node_pulled(node, i, ev->recs, ev->n, &ev->pulled, now, &act, &out);
		break;
	case EV_FETCHED:
		rc = repl_node_fetched(node, i, now, &act, &out);
		break;
	}
	peer *p = &ps->v[i];
	if (rc)
		log_warn("peer %s: %s (reconnecting)", p->addr, ss_errmsg(rc));
	report(ps, p, &out);
	publish(ps, i, &out);
	give(p, &act);
	unsigned j;
	while (repl_node_take_ready(node, &j, &act))
		give(&ps->v[j], &act);
}

/*
 * The core thread: every decision of replication and every change to its
 * state (cursors, applied and parked records) is made here, one event at a
 * time (core/node.c).  The link threads only move bytes.
 */
static void *core_main(void *arg)
{
	struct peers *ps = arg;
	for (;;) {
		pthread_mutex_lock(&ps->mu);
		while (!ps->qlen && !ps->stopping)
			pthread_cond_wait(&ps->q_cv, &ps->mu);
		if (ps->stopping) {
			ps->core_exited = true;
			for (unsigned i = 0; i < ps->n; i++)
				pthread_cond_signal(&ps->v[i].act_cv);
			pthread_cond_broadcast(&ps->cv);
			pthread_mutex_unlock(&ps->mu);
			break;
		}
		core_ev ev = ps->q[ps->qhead];
		ps->qhead = (ps->qhead + 1) % ps->qcap;
		ps->qlen--;
		pthread_cond_broadcast(&ps->q_cv);
		pthread_mutex_unlock(&ps->mu);
		handle(ps, &ev);
	}
	return NULL;
}

/* The link's next action; false once stopping.  A link waits for its
 * action even when stopping, until the core has ended: the core may be
 * applying the records it lent it.  Once its action is given the core is
 * done with them. */
static bool wait_act(peer *p, repl_act *act)
{
	struct peers *ps = p->all;
	pthread_mutex_lock(&ps->mu);
	while (!p->has_act && !ps->core_exited)
		pthread_cond_wait(&p->act_cv, &ps->mu);
	bool ok = p->has_act && !ps->stopping;
	if (ok) {
		*act = p->act;
		p->has_act = false;
	}
	pthread_mutex_unlock(&ps->mu);
	return ok;
}

/* Fetch ids (n ≤ WIRE_MAX_OFFER) from one peer over a connection of its
 * own; those it sent are stored and removed from ids (compacted). */
static int repair_from(peer *p, uint8_t *ids, unsigned *n)
{
	link l;
	int rc = link_open(p, &l);
	if (!rc)
		rc = send_read(&l, ids, *n);
	unsigned left = 0, i = 0;
	for (; i < *n && !rc; i++) {
		const uint8_t *id = ids + (size_t)i * HASH_LEN, *data;
		size_t len;
		int r = recv_chunk(&l, id, &data, &len);
		if (r == SS_ENOENT || r == SS_ECORRUPT) {
			/* Still wanted.  A copy that does not verify makes the
			 * rest of this peer's answers suspect: stop here. */
			memmove(ids + (size_t)left++ * HASH_LEN, id, HASH_LEN);
			if (r == SS_ECORRUPT)
				rc = r;
			continue;
		}
		if ((rc = r) || (rc = store_put_chunk(l.st, id, data, len)))
			memmove(ids + (size_t)left++ * HASH_LEN, id, HASH_LEN);
	}
	for (; i < *n; i++) /* not reached: still wanted */
		memmove(ids + (size_t)left++ * HASH_LEN, ids + (size_t)i * HASH_LEN, HASH_LEN);
	*n = left;
	link_close(&l);
	return rc;
}

unsigned peers_repair(server *srv, uint8_t *ids, unsigned n)
{
	struct peers *ps = srv->peers;
	unsigned want = n;
	for (unsigned i = 0; ps && i < ps->n && n && !server_stopping(srv); i++) {
		peer_info pi;
		if (!peers_info(srv, i, &pi) || !pi.connected)
			continue;
		int rc = repair_from(&ps->v[i], ids, &n);
		if (rc)
			log_warn("repair from peer %s: %s", ps->v[i].addr, ss_errmsg(rc));
	}
	if (want > n) {
		int rc = store_flush(srv->st);
		if (rc)
			log_warn("repair: %s", ss_errmsg(rc));
		log_info("repaired %u of %u chunks from peers", want - n, want);
	}
	if (n)
		log_warn("%u chunks could not be repaired from any peer yet (will retry)", n);
	return want - n;
}

/* A link's thread: does what the core says — connect, PULL, fetch, sleep
 * — over the network, and tells the core how it went. */
static void *peer_main(void *arg)
{
	peer *p = arg;
	char last[WIRE_TEXT_MAX] = "";
	record *recs = xmalloc(PEER_PULL_BATCH * sizeof *recs);
	cached_node *cache = xmalloc(PEER_PULL_BATCH * sizeof *cache);
	link l = {.c.fd = -1, .recs = recs, .cache = cache};
	repl_act act;
	bool ok = post(p->all, &(core_ev){.kind = EV_START, .link = p->idx});
	while (ok && wait_act(p, &act)) {
		core_ev ev = {.link = p->idx};
		int rc = 0;
		switch (act.kind) {
		case ACT_WAIT:
			continue;
		case ACT_SLEEP:
			link_down(p, &l);
			server_sleep(p->srv, (int)act.wait_ms);
			ev.kind = EV_WOKE;
			break;
		case ACT_CONNECT:
			link_down(p, &l);
			if (!(rc = link_up(p, &l, recs, cache))) {
				ev.kind = EV_CONNECTED;
				ev.peer = l.peer_short;
			}
			break;
		case ACT_PULL:
			ev.kind = EV_PULLED;
			rc = pull_once(&l, &act, &ev);
			break;
		case ACT_FETCH:
			ev.kind = EV_FETCHED;
			rc = fetch_roots(&l, act.roots, act.n);
			break;
		}
		if (rc) {
			link_down(p, &l);
			ev = (core_ev){.kind = EV_FAILED, .link = p->idx};
			/* Say each distinct failure once, not every retry. */
			if (!server_stopping(p->srv) && strcmp(last, ss_errmsg(rc))) {
				snprintf(last, sizeof last, "%s", ss_errmsg(rc));
				log_warn("peer %s: %s (retrying)", p->addr, last);
			}
		}
		ok = post(p->all, &ev);
	}
	link_down(p, &l);
	free(recs);
	free(cache);
	return NULL;
}

/* ---- start, stop, status ---- */

/* "[ID@]HOST:PORT" into p->pin and p->addr. */
static int parse_peer(const char *spec, peer *p)
{
	const char *at = strchr(spec, '@');
	const char *addr = at ? at + 1 : spec;
	if (at) {
		size_t n = (size_t)(at - spec);
		if (n < 8 || n > HASH_HEX_LEN || strspn(spec, "0123456789abcdefABCDEF") < n)
			return ss_fail(SS_EINVAL, "--peer %s: the node id before '@' must be 8 to 64 hex digits", spec);
		memcpy(p->pin, spec, n);
		p->pin[n] = 0;
	}
	char host[128], port[16];
	if (strlen(addr) >= sizeof p->addr || hostport_parse(addr, host, sizeof host, port, sizeof port))
		return ss_fail(SS_EINVAL, "--peer %s: expected [ID@]HOST:PORT", spec);
	snprintf(p->addr, sizeof p->addr, "%s", addr);
	return 0;
}

static int load_forgotten(void *ctx, const char *key, const char *value)
{
	struct peers *ps = ctx;
	(void)value;
	const char *hex = key + strlen("forgotten:");
	if (strlen(hex) == HASH_HEX_LEN && ps->nforgotten < SERVER_MAX_PEERS &&
	    !hex_decode(hex, ps->forgotten[ps->nforgotten], HASH_LEN))
		ps->nforgotten++;
	return 0;
}

int peers_start(server *srv)
{
	const server_opts *o = srv->opts;
	struct peers *ps = xcalloc(1, sizeof *ps);
	pthread_mutex_init(&ps->mu, NULL);
	pthread_cond_init(&ps->cv, NULL);
	pthread_cond_init(&ps->q_cv, NULL);
	ps->v = xcalloc(o->npeers ? (size_t)o->npeers : 1, sizeof *ps->v);
	srv->peers = ps;
	int rc = 0;
	for (int i = 0; i < o->npeers && !rc; i++) {
		peer *p = &ps->v[ps->n];
		p->idx = ps->n++;
		p->srv = srv;
		p->all = ps;
		p->fd = -1;
		pthread_cond_init(&p->act_cv, NULL);
		rc = parse_peer(o->peers[i], p);
		snprintf(p->info.addr, sizeof p->info.addr, "%s", p->addr);
		if (!rc && !strcmp(p->addr, o->listen))
			rc = ss_fail(SS_EINVAL, "--peer %s is this server's own --listen address", p->addr);
	}
	if (rc || (rc = store_setting_list(srv->st, "forgotten:", load_forgotten, ps)))
		return rc;
	for (unsigned i = 0; i < ps->n; i++) {
		char key[160], hex[HASH_HEX_LEN + 1];
		snprintf(key, sizeof key, "peer:%s", ps->v[i].addr);
		if (!store_setting_get(srv->st, key, hex, sizeof hex) && strlen(hex) == HASH_HEX_LEN)
			hex_decode(hex, ps->v[i].info.id, HASH_LEN);
	}
	if (!ps->n)
		return 0;
	ps->ctx = tls_ctx_new(o->tls, srv->crt, srv->key, 0);
	if (!ps->ctx)
		return SS_ETLS;
	ps->node = repl_node_new(srv->st, ps->n);
	ps->pending = repl_node_view(ps->node).parked;
	ps->qcap = ps->n + 16;
	ps->q = xcalloc(ps->qcap, sizeof *ps->q);
	int err = pthread_create(&ps->core, NULL, core_main, ps);
	if (err)
		return ss_fail(SS_ENOMEM, "cannot start the replication core thread: %s", strerror(err));
	ps->core_started = true;
	for (unsigned i = 0; i < ps->n; i++) {
		err = pthread_create(&ps->v[i].thread, NULL, peer_main, &ps->v[i]);
		if (err)
			return ss_fail(SS_ENOMEM, "cannot start a peer thread: %s", strerror(err));
		ps->v[i].started = true;
	}
	return 0;
}

void peers_stop(server *srv)
{
	struct peers *ps = srv->peers;
	if (!ps)
		return;
	pthread_mutex_lock(&ps->mu);
	ps->stopping = true;
	pthread_cond_broadcast(&ps->q_cv);
	for (unsigned i = 0; i < ps->n; i++)
		if (ps->v[i].fd >= 0)
			shutdown(ps->v[i].fd, SHUT_RDWR);
	if (!ps->core_started)
		ps->core_exited = true; /* (links never started either) */
	pthread_mutex_unlock(&ps->mu);
	/* The core ends after the event in hand, and then wakes the links and
	 * any forget waiting for it. */
	if (ps->core_started)
		pthread_join(ps->core, NULL);
	for (unsigned i = 0; i < ps->n; i++)
		if (ps->v[i].started)
			pthread_join(ps->v[i].thread, NULL);
	for (unsigned i = 0; i < ps->n; i++)
		ps->v[i].started = false;
}

void peers_free(server *srv)
{
	struct peers *ps = srv->peers;
	if (!ps)
		return;
	if (ps->ctx)
		SSL_CTX_free(ps->ctx);
	repl_node_free(ps->node);
	for (unsigned i = 0; i < ps->n; i++)
		pthread_cond_destroy(&ps->v[i].act_cv);
	pthread_mutex_destroy(&ps->mu);
	pthread_cond_destroy(&ps->cv);
	pthread_cond_destroy(&ps->q_cv);
	free(ps->q);
	free(ps->v);
	free(ps);
	srv->peers = NULL;
}

static bool behind_locked(struct peers *ps)
{
	/* A parked record may be the very version the write builds on —
	 * while it is new, and the other links are still trying it.  One no
	 * server could supply for a while does not hold up every write. */
	if (ps->pending && now_mono() - ps->parked_at < PEER_PENDING_FRESH_S)
		return true;
	for (unsigned i = 0; i < ps->n; i++) {
		const peer_info *pi = &ps->v[i].info;
		if (pi->connected && (!pi->head_known || pi->cursor < pi->head))
			return true;
	}
	return false;
}

bool peers_catch_up(server *srv, int max_ms)
{
	struct peers *ps = srv->peers;
	if (!ps || !ps->n)
		return true;
	/* Waits in slices: server_stopping takes the server's lock, which is
	 * never taken inside ps->mu (server.c takes them the other way). */
	double end = now_mono() + max_ms / 1000.0;
	for (;;) {
		pthread_mutex_lock(&ps->mu);
		bool behind = behind_locked(ps);
		if (behind) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000L;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&ps->cv, &ps->mu, &ts);
			behind = behind_locked(ps);
		}
		pthread_mutex_unlock(&ps->mu);
		if (!behind || now_mono() >= end || server_stopping(srv))
			return !behind;
	}
}

bool peers_listed(server *srv, const char *addr)
{
	struct peers *ps = srv->peers;
	for (unsigned i = 0; ps && i < ps->n; i++)
		if (!strcmp(ps->v[i].addr, addr))
			return true;
	return false;
}

bool peers_is_member(server *srv, uint64_t node)
{
	struct peers *ps = srv->peers;
	bool member = false;
	if (!ps)
		return false;
	pthread_mutex_lock(&ps->mu);
	for (unsigned i = 0; i < ps->n && !member; i++)
		member = ps->v[i].info.known && node_short_id(ps->v[i].info.id) == node &&
			 !forgotten_locked(ps, ps->v[i].info.id);
	pthread_mutex_unlock(&ps->mu);
	return member;
}

/* Drop the records parked from a forgotten member's log: through the
 * core, or here when there is none (no links). */
static int forget_parked(struct peers *ps, server *srv, uint64_t node)
{
	if (!ps->n) {
		int rc = store_pending_drop_peer(srv->st, node);
		return rc ? rc : store_pending_count(srv->st, &ps->pending);
	}
	/* done and rc live here: wait until the core has written them, or
	 * has ended without handling the event. */
	bool done = false;
	int rc = 0;
	if (!post(ps, &(core_ev){.kind = EV_FORGET, .peer = node, .done = &done, .rc = &rc}))
		return ss_fail(SS_EUNAVAIL, "the server is stopping");
	pthread_mutex_lock(&ps->mu);
	while (!done && !ps->core_exited)
		pthread_cond_wait(&ps->cv, &ps->mu);
	bool handled = done;
	pthread_mutex_unlock(&ps->mu);
	return handled ? rc : ss_fail(SS_EUNAVAIL, "the server is stopping");
}

/* Tell one peer, over a short connection of its own. */
static int forget_at(peer *p, const char *hex)
{
	link l;
	int rc = link_open(p, &l);
	if (!rc && !(rc = wire_forget(&l.io.out, hex, WIRE_FORGET_RELAYED)))
		rc = msgio_expect(&l.io, MSG_OK, l.m);
	link_close(&l);
	return rc;
}

int peers_forget(server *srv, const char *node, bool relayed, unsigned *servers)
{
	struct peers *ps = srv->peers;
	uint8_t id[HASH_LEN];
	char self[HASH_HEX_LEN + 1], hex[HASH_HEX_LEN + 1] = "";
	size_t len = strlen(node);
	hex_encode(srv->node_id, HASH_LEN, self);
	*servers = 0;
	if (len < 8 || len > HASH_HEX_LEN || strspn(node, "0123456789abcdefABCDEF") != len)
		return ss_fail(SS_EINVAL, "'%s' is not a node id (8 to 64 hex digits, as status shows)", node);
	if (!strncasecmp(self, node, len))
		return ss_fail(SS_EINVAL, "%s is this server itself: ask another member to forget it", node);
	/* A prefix must name one member we know; a whole id may be one we never
	 * met (a peer relays what its members know). */
	unsigned matches = 0;
	pthread_mutex_lock(&ps->mu);
	for (unsigned i = 0; i < ps->n; i++) {
		char h[HASH_HEX_LEN + 1];
		bool any = false;
		for (unsigned k = 0; k < HASH_LEN && !any; k++)
			any = ps->v[i].info.id[k] != 0;
		hex_encode(ps->v[i].info.id, HASH_LEN, h);
		if (any && !strncasecmp(h, node, len) && strcmp(h, hex)) {
			memcpy(hex, h, sizeof hex);
			matches++;
		}
	}
	pthread_mutex_unlock(&ps->mu);
	if (matches > 1)
		return ss_fail(SS_EINVAL, "node id %s is ambiguous: give more digits", node);
	if (!matches && len == HASH_HEX_LEN)
		for (size_t i = 0; i <= len; i++)
			hex[i] = (char)(node[i] >= 'A' && node[i] <= 'F' ? node[i] - 'A' + 'a' : node[i]);
	if (!hex[0])
		return ss_fail(SS_ENOENT, "no member with node id %s (status lists them)", node);
	hex_decode(hex, id, HASH_LEN);
	char key[160];
	snprintf(key, sizeof key, "forgotten:%s", hex);
	int rc = store_setting_set(srv->st, key, "1");
	if (rc)
		return rc;
	pthread_mutex_lock(&ps->mu);
	if (!forgotten_locked(ps, id) && ps->nforgotten < SERVER_MAX_PEERS)
		memcpy(ps->forgotten[ps->nforgotten++], id, HASH_LEN);
	pthread_cond_broadcast(&ps->cv);
	pthread_mutex_unlock(&ps->mu);
	/* Its log will never be pulled again: what was parked from it comes
	 * (if it exists anywhere) through the logs of those who hold it.  The
	 * core drops it, as it makes every change to the parked records. */
	if ((rc = forget_parked(ps, srv, node_short_id(id))))
		log_warn("forget %.16s: %s", hex, ss_errmsg(rc));
	log_info("node %.16s forgotten: it no longer blocks tombstone expiry and may not rejoin with its data",
		 hex);
	*servers = 1;
	/* Pass it on to every member we can reach now (but not back: relayed). */
	for (unsigned i = 0; !relayed && i < ps->n; i++) {
		peer_info pi;
		if (!peers_info(srv, i, &pi) || !pi.connected || !memcmp(pi.id, id, HASH_LEN))
			continue;
		if ((rc = forget_at(&ps->v[i], hex)))
			log_warn("could not tell peer %s to forget %.16s: %s", ps->v[i].addr, hex, ss_errmsg(rc));
		else
			(*servers)++;
	}
	return 0;
}

bool peers_link_up(server *srv, uint64_t node)
{
	struct peers *ps = srv->peers;
	bool up = false;
	if (!ps)
		return false;
	pthread_mutex_lock(&ps->mu);
	for (unsigned i = 0; i < ps->n && !up; i++)
		up = ps->v[i].info.connected && node_short_id(ps->v[i].info.id) == node;
	pthread_mutex_unlock(&ps->mu);
	return up;
}

bool peers_info(server *srv, unsigned i, peer_info *out)
{
	struct peers *ps = srv->peers;
	if (!ps || i >= ps->n)
		return false;
	pthread_mutex_lock(&ps->mu);
	*out = ps->v[i].info;
	pthread_mutex_unlock(&ps->mu);
	return true;
}
