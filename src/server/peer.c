/* peer.c — links to the other servers: pull their change logs (see peer.h). */
#include "peer.h"
#include "apply.h"
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
	pthread_t thread;
	bool started;
	char addr[128];
	char pin[HASH_HEX_LEN + 1]; /* hex node id (or a prefix of it); "" = any */
	int fd;                     /* the live link's socket, -1: none (under all->mu) */
	peer_info info;             /* under all->mu */
} peer;

struct peers {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a peer's info changed */
	/* One link fetches and applies at a time: the peers mostly send the
	 * same records, and two links fetching the same trees at once would
	 * download them twice (the second finds them present instead). */
	pthread_mutex_t apply_mu;
	SSL_CTX *ctx; /* client side of the links, this node's identity */
	unsigned n;
	peer *v;
	uint8_t forgotten[SERVER_MAX_PEERS][HASH_LEN]; /* members removed for good */
	unsigned nforgotten;
	/* Records parked here (received, tree not complete yet), and how
	 * often a batch parked new ones: a link whose last try found nothing
	 * tries again at once when this moves, else after its backoff. */
	uint64_t pending, pending_gen; /* under mu */
	double parked_at;              /* now_mono() when a batch last parked some */
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

/* One connection to a peer. */
typedef struct link {
	peer *p;
	store *st;
	conn c;
	msgio io;
	msg *m;
	ZSTD_DCtx *dctx;
	uint8_t *scratch; /* CDC_MAX: decompressed chunks */
	record *recs;     /* PEER_PULL_BATCH */
	uint64_t peer_short;
	repl_counts counts;
	uint64_t fetched_chunks, fetched_bytes; /* since the last applied batch */
	struct cached_node *cache; /* PEER_PULL_BATCH: nodes prefetch() read */
	unsigned ncache;
	buf local; /* a node read from our own store */
	/* Pending records this link tried (resolve_pending): when it may try
	 * again, unless pending_gen moved. */
	double pending_retry_at;
	int pending_backoff_ms;
	uint64_t pending_gen;
	uint64_t pending_after; /* where its next try starts in the table (it goes round) */
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
			l->fetched_chunks++;
			l->fetched_bytes += len;
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
			l->fetched_chunks++;
			l->fetched_bytes += len;
		}
	}
	return rc;
}

/*
 * Before the walks of a batch: the root nodes of all its records in one
 * READ, then every data chunk missing under the roots of level 1 in as few
 * READs as fit — two round trips for a batch of small files instead of two
 * per file.  The walks (fetch_tree) then find the roots in l->cache and
 * the chunks in the store, and do the checking and marking as before.
 */
static int prefetch(link *l, const record *recs, unsigned n)
{
	uint8_t *ids = xmalloc((size_t)WIRE_MAX_OFFER * HASH_LEN);
	unsigned k = 0;
	int rc = 0;
	l->ncache = 0;
	for (unsigned i = 0; i < n && !rc && k < PEER_PULL_BATCH; i++) {
		if (recs[i].deleted)
			continue;
		int have = store_has_node(l->st, recs[i].root);
		/* A root pushed during the put is here as a chunk: fetch_tree
		 * reads it locally. */
		if (!have)
			have = store_has(l->st, recs[i].root);
		bool dup = false;
		for (unsigned j = 0; j < k && !dup; j++)
			dup = !memcmp(ids + (size_t)j * HASH_LEN, recs[i].root, HASH_LEN);
		if (have < 0)
			rc = have;
		else if (!have && !dup)
			memcpy(ids + (size_t)k++ * HASH_LEN, recs[i].root, HASH_LEN);
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

/* repl_fetch_fn over the link: READ what the tree lacks. */
static int link_fetch(void *ctx, const uint8_t root[HASH_LEN])
{
	return fetch_tree(ctx, root, -1, 0);
}

/* ---- pulling ---- */

static void set_info(link *l, const msg *pulled, uint64_t cursor)
{
	peer *p = l->p;
	pthread_mutex_lock(&p->all->mu);
	p->info.head_known = true;
	p->info.index_id = pulled->pulled.index_id;
	p->info.head = pulled->pulled.head;
	p->info.files = pulled->pulled.files;
	p->info.bytes = pulled->pulled.bytes;
	memcpy(p->info.digest, pulled->pulled.digest, HASH_LEN);
	p->info.cursor = cursor;
	pthread_cond_broadcast(&p->all->cv);
	pthread_mutex_unlock(&p->all->mu);
}

/* Publish the store's count of parked records (status, peers_catch_up);
 * a batch that parked some moves pending_gen, so every link tries them.
 * Called holding apply_mu, under which every change to the parked records
 * happens, so no count read here can overwrite a newer one. */
static void note_pending(link *l, unsigned parked)
{
	uint64_t n = 0;
	int rc = store_pending_count(l->st, &n);
	if (rc) {
		log_warn("peer %s: %s", l->p->addr, ss_errmsg(rc));
		return;
	}
	pthread_mutex_lock(&l->p->all->mu);
	l->p->all->pending = n;
	if (parked) {
		l->p->all->pending_gen++;
		l->p->all->parked_at = now_mono();
	}
	pthread_cond_broadcast(&l->p->all->cv);
	pthread_mutex_unlock(&l->p->all->mu);
}

/*
 * Parked records (received, tree not complete: the server they came from
 * lacked a chunk): try to complete their trees from this link's peer and
 * apply them (repl_apply_pending), a batch at a time, several trees per
 * round trip (prefetch).  Every link does this, so a parked record is
 * fetched from whichever server has it.  A try that applied nothing backs
 * off (1 s doubling to PEER_PENDING_RETRY_MAX_MS) until new records park.
 */
static int resolve_pending(link *l)
{
	struct peers *ps = l->p->all;
	pthread_mutex_lock(&ps->mu);
	uint64_t pending = ps->pending, gen = ps->pending_gen;
	pthread_mutex_unlock(&ps->mu);
	if (!pending || (gen == l->pending_gen && now_mono() < l->pending_retry_at))
		return 0;
	l->pending_gen = gen;
	store_pending *p = xmalloc(PEER_PULL_BATCH * sizeof *p);
	store_applied total = {0};
	unsigned n = 0;
	int rc = 0;
	pthread_mutex_lock(&ps->apply_mu);
	uint64_t lease = store_lease_begin(l->st);
	/* At most 16 batches a try, once round the table from where the last
	 * try stopped, so rows no server can supply at the front do not starve
	 * the rest.  Rows still incomplete go back in at the end with new ids:
	 * the try stops at the highest id there was when it began, so it never
	 * meets them again. */
	uint64_t top = 0;
	rc = store_pending_max(l->st, &top);
	uint64_t start = l->pending_after < top ? l->pending_after : 0, end = top;
	bool wrapped = false;
	l->pending_after = start;
	for (int round = 0; round < 16 && !rc && !server_stopping(l->p->srv); round++) {
		if ((rc = store_pending_list(l->st, l->pending_after, p, PEER_PULL_BATCH, &n)))
			break;
		while (n && p[n - 1].rec.seq > end)
			n--;
		if (!n) {
			if (wrapped || !start)
				break;
			wrapped = true; /* the rows before where this try began */
			l->pending_after = 0;
			end = start;
			continue;
		}
		l->pending_after = p[n - 1].rec.seq;
		for (unsigned i = 0; i < n; i++)
			l->recs[i] = p[i].rec;
		store_applied ap;
		if (!(rc = prefetch(l, l->recs, n)) &&
		    !(rc = repl_apply_pending(l->st, p, n, link_fetch, l, &l->counts, &ap)))
			total.written += ap.written;
		l->ncache = 0;
	}
	store_lease_end(l->st, lease);
	note_pending(l, 0);
	pthread_mutex_unlock(&ps->apply_mu);
	free(p);
	if (total.written) {
		server_changed(l->p->srv);
		char sz[16];
		fmt_size(l->fetched_bytes, sz);
		log_info("peer %s: applied %u pending records (%llu chunks, %s fetched from it)", l->p->addr,
			 total.written, (unsigned long long)l->fetched_chunks, sz);
		l->pending_backoff_ms = 0;
	} else {
		l->pending_backoff_ms = l->pending_backoff_ms ? MIN(l->pending_backoff_ms * 2, PEER_PENDING_RETRY_MAX_MS)
							      : 1000;
	}
	l->fetched_chunks = l->fetched_bytes = 0;
	l->pending_retry_at = now_mono() + l->pending_backoff_ms / 1000.0;
	return rc;
}

/* One PULL: receive what is new, complete the trees, apply in one go
 * (records whose trees this peer cannot complete are parked).  The first
 * PULL of a connection is not held, so status and the write catch-up learn
 * the peer's head at once; while records are parked it is held at most
 * PEER_PENDING_WAIT_MS, so the link comes back to try them. */
static int pull_once(link *l, bool first)
{
	uint64_t index_id, cursor, acked, fp;
	int rc = store_cursor_get(l->st, l->peer_short, &index_id, &cursor);
	if (!rc)
		rc = store_cursor_acked(l->st, l->peer_short, index_id, &acked);
	if (!rc)
		rc = store_cursor_fp(l->st, l->peer_short, &fp);
	pthread_mutex_lock(&l->p->all->mu);
	uint32_t wait = first ? 0 : l->p->all->pending ? PEER_PENDING_WAIT_MS : PEER_WAIT_MS;
	pthread_mutex_unlock(&l->p->all->mu);
	if (rc || (rc = wire_pull(&l->io.out, index_id, cursor, acked, fp, PEER_PULL_BATCH, wait)) ||
	    (rc = msgio_flush(&l->io)))
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
	msg pulled = *l->m;
	/* A new index id means the peer's data directory is new: its records
	 * come again from the start, and the cursor restarts with them. */
	uint64_t peer_index = pulled.pulled.index_id;
	uint64_t from = repl_pull_after(index_id, cursor, peer_index);
	/* Its head, before the fetches: a write here meanwhile knows to wait. */
	set_info(l, &pulled, from);
	/* The batch itself (checks, superseded records, lease, trees, apply)
	 * is server/apply.c, shared with the simulator.  One link fetches and
	 * applies at a time; an empty batch takes no turn. */
	store_applied ap = {0};
	uint64_t last = n ? l->recs[n - 1].seq : from; /* before the batch is compacted */
	/* An empty batch takes no turn, unless it starts a new index id (its
	 * cursor reset drops the records parked from the old log). */
	bool locked = n || peer_index != index_id;
	if (locked)
		pthread_mutex_lock(&l->p->all->apply_mu);
	/* The lease keeps garbage collection off what prefetch stores. */
	uint64_t lease = store_lease_begin(l->st);
	rc = n ? prefetch(l, l->recs, n) : 0;
	if (!rc)
		rc = repl_apply_batch(l->st, l->recs, n, from, pulled.pulled.head, l->peer_short, peer_index, link_fetch,
				      l, &l->counts, &ap);
	l->ncache = 0;
	store_lease_end(l->st, lease);
	if (locked) {
		/* Parked records may have come, or gone with an old log. */
		if (!rc)
			note_pending(l, ap.parked);
		pthread_mutex_unlock(&l->p->all->apply_mu);
	}
	if (rc)
		return rc;
	if (ap.parked)
		log_warn("peer %s lacks chunks of %u records: parked until another server sends them", l->p->addr,
			 ap.parked);
	if (n) {
		if (ap.written) {
			server_changed(l->p->srv);
			char sz[16];
			fmt_size(l->fetched_bytes, sz);
			log_info("peer %s: applied %u of %u records (%llu chunks, %s fetched)", l->p->addr, ap.written,
				 n, (unsigned long long)l->fetched_chunks, sz);
		}
		l->fetched_chunks = l->fetched_bytes = 0;
		set_info(l, &pulled, last);
	}
	return resolve_pending(l);
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
	free(l->recs);
	free(l->cache);
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

static int link_run(peer *p, bool *pulled)
{
	link l;
	int rc = link_open(p, &l);
	l.recs = xmalloc(PEER_PULL_BATCH * sizeof *l.recs);
	l.cache = xmalloc(PEER_PULL_BATCH * sizeof *l.cache);
	pthread_mutex_lock(&p->all->mu);
	p->fd = l.c.fd; /* from now on peers_stop can wake us */
	pthread_mutex_unlock(&p->all->mu);
	if (!rc && !server_stopping(p->srv)) {
		l.peer_short = node_short_id(l.c.peer.id);
		pthread_mutex_lock(&p->all->mu);
		bool new_id = memcmp(p->info.id, l.c.peer.id, HASH_LEN) != 0;
		p->info.connected = p->info.known = true;
		p->info.head_known = false; /* until this connection's first PULLED */
		memcpy(p->info.id, l.c.peer.id, HASH_LEN);
		pthread_mutex_unlock(&p->all->mu);
		char hex[HASH_HEX_LEN + 1], key[160];
		hex_encode(l.c.peer.id, HASH_LEN, hex);
		/* Remembered, so status names a member that is down after our
		 * restart, and forget can find it. */
		snprintf(key, sizeof key, "peer:%s", p->addr);
		if (new_id && (rc = store_setting_set(l.st, key, hex)))
			log_warn("cannot remember peer %s: %s", p->addr, ss_errmsg(rc));
		rc = 0;
		log_info("peer %s (node %.16s) connected", p->addr, hex);
		pthread_mutex_lock(&p->all->apply_mu);
		note_pending(&l, 0);
		pthread_mutex_unlock(&p->all->apply_mu);
		for (bool first = true; !server_stopping(p->srv) && !(rc = pull_once(&l, first)); first = false)
			*pulled = true;
		if (l.counts.conflicts)
			log_info("peer %s: %llu conflicts resolved", p->addr, (unsigned long long)l.counts.conflicts);
	}
	pthread_mutex_lock(&p->all->mu);
	p->fd = -1;
	p->info.connected = false;
	pthread_cond_broadcast(&p->all->cv);
	pthread_mutex_unlock(&p->all->mu);
	link_close(&l);
	return rc;
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

static void *peer_main(void *arg)
{
	peer *p = arg;
	char last[WIRE_TEXT_MAX] = "";
	int backoff = 100;
	while (!server_stopping(p->srv)) {
		bool pulled = false;
		int rc = link_run(p, &pulled);
		if (server_stopping(p->srv))
			break;
		/* Say each distinct failure once, not every retry. */
		if (strcmp(last, ss_errmsg(rc))) {
			snprintf(last, sizeof last, "%s", ss_errmsg(rc));
			log_warn("peer %s: %s (retrying)", p->addr, last);
		}
		if (pulled)
			backoff = 100;
		server_sleep(p->srv, backoff);
		backoff = backoff * 2 > PEER_BACKOFF_MAX_MS ? PEER_BACKOFF_MAX_MS : backoff * 2;
	}
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
	pthread_mutex_init(&ps->apply_mu, NULL);
	pthread_cond_init(&ps->cv, NULL);
	ps->v = xcalloc(o->npeers ? (size_t)o->npeers : 1, sizeof *ps->v);
	srv->peers = ps;
	int rc = 0;
	for (int i = 0; i < o->npeers && !rc; i++) {
		peer *p = &ps->v[ps->n++];
		p->srv = srv;
		p->all = ps;
		p->fd = -1;
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
	for (unsigned i = 0; i < ps->n; i++) {
		int err = pthread_create(&ps->v[i].thread, NULL, peer_main, &ps->v[i]);
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
	for (unsigned i = 0; i < ps->n; i++)
		if (ps->v[i].fd >= 0)
			shutdown(ps->v[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&ps->mu);
	for (unsigned i = 0; i < ps->n; i++)
		if (ps->v[i].started)
			pthread_join(ps->v[i].thread, NULL);
}

void peers_free(server *srv)
{
	struct peers *ps = srv->peers;
	if (!ps)
		return;
	if (ps->ctx)
		SSL_CTX_free(ps->ctx);
	pthread_mutex_destroy(&ps->mu);
	pthread_mutex_destroy(&ps->apply_mu);
	pthread_cond_destroy(&ps->cv);
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
	 * (if it exists anywhere) through the logs of those who hold it. */
	pthread_mutex_lock(&ps->apply_mu);
	if ((rc = store_pending_drop_peer(srv->st, node_short_id(id))))
		log_warn("forget %.16s: %s", hex, ss_errmsg(rc));
	uint64_t left = 0;
	if (!store_pending_count(srv->st, &left)) {
		pthread_mutex_lock(&ps->mu);
		ps->pending = left;
		pthread_mutex_unlock(&ps->mu);
	}
	pthread_mutex_unlock(&ps->apply_mu);
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
