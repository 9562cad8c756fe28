/*
 * session.c — one client connection: requests in, replies out.
 *
 * Put (see docs/WIRE.md for the frames):
 *   PUT → OK; then batches of  OFFER(node ids) → WANT(bitmap)
 *                              NODE… → WANT(children) each
 *                              CHUNK… SYNC → OK
 *   and finally COMMIT(root, size) → OK(seq) once durable.
 * A batch is open from an OFFER that wants something to its SYNC, and two
 * may be open at once: a client sends the next batch's OFFER and NODEs
 * while this batch's CHUNKs are still on their way, so it never waits for
 * the server to drain the data in flight.  NODEs join the newest open
 * batch, SYNC closes the oldest.  A chunk already asked for by an open
 * batch is not asked for again.
 * The server keeps a received node in memory until SYNC and then stores it
 * marked complete (store_put_node), but only once all its children are
 * present; "have" for a node is that mark, never mere bytes.  CHUNK frames go
 * to the session's verifier thread, which checks each against its id before
 * storing it; SYNC and COMMIT wait for it.  COMMIT's store_commit re-checks
 * the whole tree in the transaction that writes the record.
 *
 * Get: GET → META(record), then the tree in depth-first pre-order as NODE
 * and CHUNK frames, then END.  Every chunk is verified when read from disk;
 * a corrupt one ends the stream with an ERROR naming it.
 *
 * Memory per session: one frame (≤ 1 MiB), one chunk, the nodes of two batches
 * (≤ 2 × SESSION_MAX_NODES × 5 KiB), a zstd context, and once it uploads, the
 * verifier's VERIFIER_SLOTS chunk buffers (~1 MiB) and the batch's wanted ids.
 */
#include "server.h"
#include "peer.h"
#include "push.h"
#include "registry.h"
#include "verifier.h"
#include "../core/link.h"
#include "../core/repl.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define SESSION_MAX_NODES WIRE_BATCH_NODES
#define SESSION_MAX_BATCHES 2

typedef struct pending_node {
	uint8_t id[HASH_LEN];
	uint16_t len;
	uint8_t bytes[TREE_NODE_MAX];
} pending_node;

typedef struct put_batch {
	pending_node *nodes; /* ≤ SESSION_MAX_NODES, stored at SYNC */
	unsigned nnodes;
	idset wanted; /* data chunks this batch asked for */
} put_batch;

typedef struct session {
	server *srv;
	conn *c;
	msgio io;
	msg m;
	buf chunk;      /* decompressed chunk / chunk read from the store */
	wire_zstd z;    /* compression of chunks sent by get */
	put_batch batches[SESSION_MAX_BATCHES]; /* open put batches, a ring */
	unsigned bhead, nbatches;
	verifier *v; /* started by the session's first put */
	uint64_t last_write; /* seq of this session's latest commit */
	quorum_hold unacked; /* from its oldest commit not yet through a quorum wait */
	bool peer_live;      /* counted in server_peer_live */
	bool have_next;      /* s->m holds a request read ahead, not handled yet */
	bool push_leased;    /* a peer pushes chunks on this session: push_lease pins them */
	uint64_t push_lease;
	struct small_req *small; /* SESSION_SMALL_GROUP, allocated by the first PUT_SMALL */
} session;

/* One PUT_SMALL of a group: its record, then its outcome. */
typedef struct small_req {
	record rec;
	bool wait;        /* not deferred: answer once the write quorum holds it */
	int rc;
	char err[WIRE_TEXT_MAX];
} small_req;

#define SESSION_SMALL_GROUP 256

/* Reply with an ERROR frame carrying the current message for rc. */
static int reply_error(session *s, int rc)
{
	int wrc = wire_error(&s->io.out, rc, ss_errmsg(rc));
	if (!wrc)
		wrc = msgio_flush(&s->io);
	return wrc;
}

static void set_bit(uint8_t *bits, unsigned i) { bits[i / 8] |= (uint8_t)(1u << (i % 8)); }

/* ---- put ---- */

static put_batch *newest_batch(session *s)
{
	return s->nbatches ? &s->batches[(s->bhead + s->nbatches - 1) % SESSION_MAX_BATCHES] : NULL;
}

static bool asked_for(const session *s, const uint8_t id[HASH_LEN])
{
	for (unsigned i = 0; i < s->nbatches; i++)
		if (idset_has(&s->batches[(s->bhead + i) % SESSION_MAX_BATCHES].wanted, id))
			return true;
	return false;
}

static put_batch *open_batch(session *s)
{
	if (s->nbatches == SESSION_MAX_BATCHES) {
		ss_fail(SS_EPROTO, "more than %d put batches open before SYNC", SESSION_MAX_BATCHES);
		return NULL;
	}
	s->nbatches++;
	put_batch *b = newest_batch(s);
	b->nnodes = 0;
	idset_clear(&b->wanted);
	return b;
}

/* An OFFER that wants any node opens a batch, which its SYNC closes. */
static int put_offer(session *s)
{
	uint8_t bits[WIRE_MAX_OFFER / 8] = {0};
	uint16_t n = s->m.offer.count;
	bool any = false;
	for (unsigned i = 0; i < n; i++) {
		int have = store_has_node(s->srv->st, s->m.offer.ids + (size_t)i * HASH_LEN);
		if (have < 0)
			return have;
		if (!have) {
			set_bit(bits, i);
			any = true;
		}
	}
	if (any && !open_batch(s))
		return SS_EPROTO;
	return wire_want(&s->io.out, bits, n);
}

/* A child of a level-1 node is a data chunk; any other child is a node,
 * which counts only when its whole subtree is there. */
static int child_present(session *s, const tree_node *nd, const uint8_t id[HASH_LEN])
{
	return nd->level == 1 ? store_has(s->srv->st, id) : store_has_node(s->srv->st, id);
}

static int put_node(session *s)
{
	tree_node nd;
	int rc = tree_node_decode(s->m.node.bytes, s->m.node.len, &nd);
	if (rc)
		return rc;
	/* A NODE nothing offered (a client that skips OFFER) opens a batch. */
	put_batch *b = s->nbatches ? newest_batch(s) : open_batch(s);
	if (b->nnodes == SESSION_MAX_NODES)
		return ss_fail(SS_EPROTO, "more than %d tree nodes in one batch", SESSION_MAX_NODES);
	pending_node *p = &b->nodes[b->nnodes++];
	sha256(s->m.node.bytes, s->m.node.len, p->id);
	p->len = (uint16_t)s->m.node.len;
	memcpy(p->bytes, s->m.node.bytes, s->m.node.len);

	uint8_t bits[TREE_MAX_FANOUT / 8] = {0};
	for (unsigned i = 0; i < nd.count; i++) {
		tree_entry e;
		tree_node_entry(&nd, i, &e);
		/* A chunk an open batch already asked for arrives before
		 * that batch's SYNC, so before this one's. */
		if (nd.level == 1 && asked_for(s, e.id))
			continue;
		int have = child_present(s, &nd, e.id);
		if (have < 0)
			return have;
		if (!have) {
			set_bit(bits, i);
			if (nd.level == 1)
				idset_add(&b->wanted, e.id);
		}
	}
	return wire_want(&s->io.out, bits, nd.count);
}

/* Close the oldest batch: store its nodes, children first, each only if its
 * subtree is whole. */
static int put_sync(session *s, verifier *v)
{
	if (!s->nbatches) { /* nothing to store: just wait for the chunks */
		int drc = verifier_drain(v);
		return drc ? drc : wire_ok(&s->io.out, 0);
	}
	put_batch *b = &s->batches[s->bhead];
	s->bhead = (s->bhead + 1) % SESSION_MAX_BATCHES;
	s->nbatches--;
	int drc = verifier_drain(v);
	if (drc)
		return drc;
	for (unsigned k = 0; k < b->nnodes; k++) {
		pending_node *p = &b->nodes[k];
		tree_node nd;
		SS_ASSERT(tree_node_decode(p->bytes, p->len, &nd) == 0);
		for (unsigned i = 0; i < nd.count; i++) {
			tree_entry e;
			tree_node_entry(&nd, i, &e);
			int have = child_present(s, &nd, e.id);
			if (have < 0)
				return have;
			if (!have) {
				char hex[HASH_HEX_LEN + 1];
				hex_encode(e.id, HASH_LEN, hex);
				return ss_fail(SS_EPROTO, "upload incomplete: chunk %.16s was wanted but never sent", hex);
			}
		}
		int rc = store_put_node(s->srv->st, p->id, p->bytes, p->len);
		if (rc)
			return rc;
		push_raw(s->srv, p->id, p->bytes, p->len);
	}
	return wire_ok(&s->io.out, 0);
}

static void catch_up(session *s);

/* A commit of this session: until a quorum wait covers it, the history
 * keeps it (server_hold). */
static void committed(session *s, uint64_t seq)
{
	s->last_write = MAX(s->last_write, seq);
	server_hold(s->srv, &s->unacked, seq);
}

/* server_quorum_wait for seq; once it covers every commit of the session,
 * the session's hold on the history ends (acknowledged or not: the client
 * was told either way). */
static int session_quorum_wait(session *s, uint64_t seq, unsigned *copies)
{
	int rc = server_quorum_wait(s->srv, seq, copies);
	if (seq >= s->last_write)
		server_release(s->srv, &s->unacked);
	else
		server_hold_from(s->srv, &s->unacked, seq + 1); /* what is left waiting */
	return rc;
}

/* The verifier stored a client's chunk: send it on to the peers now. */
static void pushed_on(void *ctx, const uint8_t *payload, size_t len)
{
	push_chunk(ctx, payload, len);
}

static int put_commit(session *s, record *rec)
{
	/* store_commit checks, in the transaction that writes the record,
	 * that the whole tree is present and holds exactly rec->size bytes. */
	memcpy(rec->root, s->m.commit.root, HASH_LEN);
	if (s->m.commit.size != rec->size)
		return ss_fail(SS_EPROTO, "commit size %llu differs from the announced %llu",
			       (unsigned long long)s->m.commit.size, (unsigned long long)rec->size);
	catch_up(s);
	int rc = store_commit(s->srv->st, rec);
	if (rc)
		return rc;
	server_changed(s->srv);
	log_info("put %s: %llu bytes, version %llu", rec->path, (unsigned long long)rec->size,
		 (unsigned long long)rec->seq);
	committed(s, rec->seq);
	/* A deferred commit (one file of a directory put) is answered now; the
	 * client's BARRIER after the batch waits for the quorum once. */
	unsigned copies;
	if (!(s->m.commit.flags & WIRE_COMMIT_DEFER) && (rc = session_quorum_wait(s, rec->seq, &copies)))
		return rc;
	return wire_ok(&s->io.out, rec->seq);
}

static bool fatal(int rc);

/* Before a write: apply what the peers already hold (peers_catch_up). */
static void catch_up(session *s)
{
	if (!peers_catch_up(s->srv, PEER_CATCH_UP_MS))
		log_info("writing while still behind a peer's log (it may become a conflict)");
}

/*
 * After a failure that is not the client's fault (a full disk, say), read
 * and drop its frames until it waits for an answer, so the ERROR reaches it
 * instead of a reset connection.
 */
static int drain_put(session *s, int rc)
{
	char what[WIRE_TEXT_MAX];
	snprintf(what, sizeof what, "%s", ss_errmsg(rc));
	while (!msgio_recv(&s->io, &s->m))
		if (s->m.type != MSG_CHUNK)
			break;
	return ss_fail(rc, "%s", what);
}

/* One put, from PUT to COMMIT.  The lease pins the upload's chunks. */
static int do_put(session *s)
{
	record *rec = xcalloc(1, sizeof *rec);
	int rc = path_check(s->m.put.path, strlen(s->m.put.path));
	if (rc)
		goto out;
	snprintf(rec->path, sizeof rec->path, "%s", s->m.put.path);
	rec->size = s->m.put.size;
	rec->mode = s->m.put.mode & 07777;
	rec->mtime_ns = s->m.put.mtime_ns;

	/* Refuse before anything is stored if the write could not be
	 * acknowledged anyway. */
	if ((rc = server_quorum_ready(s->srv)))
		goto out;
	uint64_t lease = store_lease_begin(s->srv->st);
	if (!s->v)
		s->v = verifier_start(s->srv->st, pushed_on, s->srv);
	verifier *v = s->v;
	s->nbatches = 0;
	if (!v)
		rc = ss_fail(SS_ENOMEM, "cannot start a verifier thread");
	if (rc || (rc = wire_ok(&s->io.out, 0)) || (rc = msgio_flush(&s->io)))
		goto end;
	for (;;) {
		if ((rc = msgio_recv(&s->io, &s->m)))
			break;
		switch (s->m.type) {
		case MSG_OFFER: rc = put_offer(s); break;
		case MSG_NODE: rc = put_node(s); break;
		case MSG_CHUNK:
			rc = verifier_submit(v, &s->m, &s->io.in, asked_for(s, s->m.chunk.id));
			break;
		case MSG_SYNC: rc = put_sync(s, v); break;
		case MSG_COMMIT:
			if (!(rc = verifier_drain(v)))
				rc = put_commit(s, rec);
			goto end;
		default: rc = ss_fail(SS_EPROTO, "unexpected message type %u during put", s->m.type);
		}
		if (rc)
			break;
	}
	/* After a failed CHUNK the client is still sending this batch's
	 * chunks; drain them up to its next question.  Whatever it sends
	 * after that (the next batch's frames, pipelined) linger() drops. */
	if (!fatal(rc) && s->m.type == MSG_CHUNK)
		rc = drain_put(s, rc);
end:
	/* Everything queued is stored (or dropped after a failure) before
	 * the lease that pins it ends. */
	if (v)
		verifier_reset(v);
	store_lease_end(s->srv->st, lease);
out:
	free(rec);
	return rc;
}

/* ---- small files, many per transaction ---- */

/* Is a whole frame perhaps waiting already (TLS bytes decrypted, or bytes
 * on the socket)?  Then the group can grow without keeping anyone waiting. */
static bool input_ready(session *s)
{
	struct pollfd p = {.fd = s->c->fd, .events = POLLIN};
	return SSL_has_pending(s->c->ssl) || poll(&p, 1, 0) > 0;
}

static void small_fail(small_req *r, int rc)
{
	r->rc = rc;
	snprintf(r->err, sizeof r->err, "%s", ss_errmsg(rc));
}

/* Store one PUT_SMALL's bytes and make its record (not committed yet). */
static void small_take(session *s, small_req *r)
{
	memset(&r->rec, 0, sizeof r->rec);
	r->rc = 0;
	r->wait = !(s->m.small.flags & WIRE_COMMIT_DEFER);
	int rc = path_check(s->m.small.path, strlen(s->m.small.path));
	if (rc) {
		small_fail(r, rc);
		return;
	}
	snprintf(r->rec.path, sizeof r->rec.path, "%s", s->m.small.path);
	r->rec.size = s->m.small.size;
	r->rec.mode = s->m.small.mode & 07777;
	r->rec.mtime_ns = s->m.small.mtime_ns;
	if ((rc = store_put_small(s->srv->st, s->m.small.data, s->m.small.size, r->rec.root)))
		small_fail(r, rc);
}

/* Commit the group's good records: in one transaction, or — if that fails —
 * one by one, so only the bad ones fail. */
static void small_commit(session *s, small_req *g, unsigned n)
{
	record *recs = xmalloc(n * sizeof *recs);
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++)
		if (!g[i].rc)
			recs[k++] = g[i].rec;
	catch_up(s);
	int rc = k ? store_commit_batch(s->srv->st, recs, k) : 0;
	k = 0;
	for (unsigned i = 0; i < n; i++) {
		if (g[i].rc)
			continue;
		if (!rc)
			g[i].rec = recs[k];
		else if ((g[i].rc = store_commit(s->srv->st, &g[i].rec)))
			small_fail(&g[i], g[i].rc);
		k++;
		if (!g[i].rc)
			committed(s, g[i].rec.seq);
	}
	free(recs);
	server_changed(s->srv);
}

/*
 * PUT_SMALL: a whole file in one frame.  The client sends them without
 * waiting, so the session takes every one already arrived (up to
 * SESSION_SMALL_GROUP) and commits them together — one fsync of the chunks
 * and one of the database for the group instead of two per file — then
 * answers each in order: OK(seq), or ERROR for that file alone.  A request
 * of another kind ends the group and is handled next.
 */
static int do_put_small(session *s)
{
	if (!s->small)
		s->small = xmalloc(SESSION_SMALL_GROUP * sizeof *s->small);
	small_req *g = s->small;
	uint64_t lease = store_lease_begin(s->srv->st);
	int ready = server_quorum_ready(s->srv), rc = 0;
	char notready[WIRE_TEXT_MAX];
	snprintf(notready, sizeof notready, "%s", ready ? ss_errmsg(ready) : "");
	unsigned n = 0;
	for (;;) {
		small_req *r = &g[n++];
		if (ready) {
			r->rc = ready;
			snprintf(r->err, sizeof r->err, "%s", notready);
		} else {
			small_take(s, r);
		}
		if (n == SESSION_SMALL_GROUP || !input_ready(s))
			break;
		if ((rc = msgio_recv(&s->io, &s->m)))
			break;
		if (s->m.type != MSG_PUT_SMALL) {
			s->have_next = true;
			break;
		}
	}
	small_commit(s, g, n);
	uint64_t wait_for = 0;
	for (unsigned i = 0; i < n; i++)
		if (!g[i].rc && g[i].wait)
			wait_for = MAX(wait_for, g[i].rec.seq);
	unsigned copies = 0;
	int qrc = wait_for ? session_quorum_wait(s, wait_for, &copies) : 0;
	char qerr[WIRE_TEXT_MAX];
	snprintf(qerr, sizeof qerr, "%s", qrc ? ss_errmsg(qrc) : "");
	store_lease_end(s->srv->st, lease);
	for (unsigned i = 0; i < n; i++) {
		int wrc;
		if (g[i].rc)
			wrc = wire_error(&s->io.out, g[i].rc, g[i].err);
		else if (qrc && g[i].wait)
			wrc = wire_error(&s->io.out, qrc, qerr);
		else
			wrc = wire_ok(&s->io.out, g[i].rec.seq);
		if (wrc)
			return wrc;
		if (!g[i].rc)
			log_debug("put %s: %llu bytes, version %llu", g[i].rec.path, (unsigned long long)g[i].rec.size,
				  (unsigned long long)g[i].rec.seq);
	}
	log_info("put %u small file%s in one commit", n, n == 1 ? "" : "s");
	if (rc == SS_ECLOSED) /* the client closed its side: it may still read these */
		msgio_flush(&s->io);
	return rc;
}

/* ---- get ---- */

/* Send the chunk in s->chunk, compressed when that pays (wire_chunk_close). */
static int send_chunk(session *s, const uint8_t id[HASH_LEN])
{
	uint8_t *payload;
	size_t start;
	int rc = wire_chunk_open(&s->io.out, id, (uint32_t)s->chunk.len, &payload, &start);
	if (rc)
		return rc;
	memcpy(payload, s->chunk.p, s->chunk.len);
	wire_chunk_close(&s->io.out, start, &s->z);
	return msgio_maybe_flush(&s->io);
}

typedef struct walk_level {
	uint8_t bytes[TREE_NODE_MAX];
	tree_node nd;
	unsigned next;
} walk_level;

/*
 * Read a chunk of the tree being sent.  A copy that fails verification is
 * forgotten together with every node above it on the stack (their subtrees
 * are no longer whole), so the next put of the file uploads it again.
 */
static int read_tree_chunk(session *s, const uint8_t id[HASH_LEN], walk_level *stack, int depth)
{
	int rc = store_get_chunk(s->srv->st, id, &s->chunk);
	if (rc != SS_ECORRUPT)
		return rc;
	char what[WIRE_TEXT_MAX];
	snprintf(what, sizeof what, "%s", ss_errmsg(rc));
	store_forget(s->srv->st, id);
	for (int i = 0; i < depth; i++) {
		uint8_t nid[HASH_LEN];
		sha256(stack[i].bytes, TREE_HDR + (size_t)TREE_ENTRY * stack[i].nd.count, nid);
		store_unmark_node(s->srv->st, nid);
	}
	log_err("%s: dropped from the index until a client or peer sends it again", what);
	return ss_fail(SS_ECORRUPT, "%s", what);
}

/* Depth-first pre-order: a node, then its children.  Bounded by tree depth. */
static int send_tree(session *s, const uint8_t root[HASH_LEN])
{
	walk_level *stack = xmalloc(sizeof(walk_level) * (TREE_MAX_LEVEL + 1));
	int depth = 0, rc;
	uint8_t id[HASH_LEN];
	memcpy(id, root, HASH_LEN);
	for (;;) {
		/* id names a node to send and descend into. */
		if ((rc = read_tree_chunk(s, id, stack, depth)))
			goto out;
		walk_level *w = &stack[depth];
		if (s->chunk.len > TREE_NODE_MAX) {
			rc = ss_fail(SS_ECORRUPT, "tree node too large");
			goto out;
		}
		memcpy(w->bytes, s->chunk.p, s->chunk.len);
		if ((rc = tree_node_decode(w->bytes, s->chunk.len, &w->nd)) ||
		    (depth > 0 && w->nd.level != stack[depth - 1].nd.level - 1) ||
		    (rc = wire_node(&s->io.out, w->bytes, s->chunk.len))) {
			rc = rc ? rc : ss_fail(SS_ECORRUPT, "tree node at the wrong level");
			goto out;
		}
		w->next = 0;
		depth++;
		/* Send data chunks of level-1 nodes; pop finished levels. */
		for (;;) {
			walk_level *top = &stack[depth - 1];
			tree_entry e;
			if (top->nd.level == 1) {
				for (; top->next < top->nd.count; top->next++) {
					tree_node_entry(&top->nd, top->next, &e);
					if ((rc = read_tree_chunk(s, e.id, stack, depth)) ||
					    (rc = send_chunk(s, e.id)))
						goto out;
				}
			}
			if (top->next < top->nd.count) {
				tree_node_entry(&top->nd, top->next++, &e);
				memcpy(id, e.id, HASH_LEN);
				if (depth > TREE_MAX_LEVEL) {
					rc = ss_fail(SS_ECORRUPT, "tree deeper than %d levels", TREE_MAX_LEVEL);
					goto out;
				}
				break;
			}
			if (--depth == 0) {
				rc = 0;
				goto out;
			}
		}
	}
out:
	free(stack);
	return rc;
}

static int do_get(session *s)
{
	record *rec = xmalloc(sizeof *rec);
	int rc = path_check(s->m.get.path, strlen(s->m.get.path));
	if (!rc)
		rc = s->m.get.version ? store_lookup_version(s->srv->st, s->m.get.path, s->m.get.version, rec)
				      : store_lookup(s->srv->st, s->m.get.path, rec);
	if (!rc && rec->deleted)
		rc = ss_fail(SS_ENOENT, "no such file: %s (deleted)", s->m.get.path);
	else if (rc == SS_ENOENT && s->m.get.version)
		rc = ss_fail(SS_ENOENT, "%s has no version %llu here (never, or no longer kept: see `syncstore log %s`)",
			     s->m.get.path, (unsigned long long)s->m.get.version, s->m.get.path);
	else if (rc == SS_ENOENT)
		rc = ss_fail(SS_ENOENT, "no such file: %s", s->m.get.path);
	if (rc)
		goto out;
	if ((rc = wire_record(&s->io.out, MSG_META, rec)))
		goto out;
	if ((rc = send_tree(s, rec->root))) {
		log_warn("get %s failed: %s", rec->path, ss_errmsg(rc));
		goto out;
	}
	rc = wire_empty(&s->io.out, MSG_END);
out:
	free(rec);
	return rc;
}

/* ---- namespace requests ---- */

static int send_entry(void *ctx, const record *r)
{
	session *s = ctx;
	int rc = wire_record(&s->io.out, MSG_ENTRY, r);
	return rc ? rc : msgio_maybe_flush(&s->io);
}

static int do_list(session *s)
{
	int rc = store_list(s->srv->st, s->m.path.path, send_entry, s);
	return rc ? rc : wire_empty(&s->io.out, MSG_END);
}

static int do_stat(session *s)
{
	record *rec = xmalloc(sizeof *rec);
	int rc = store_lookup(s->srv->st, s->m.path.path, rec);
	if (rc == SS_ENOENT || (!rc && rec->deleted))
		rc = ss_fail(SS_ENOENT, "no such file: %s", s->m.path.path);
	if (!rc)
		rc = wire_record(&s->io.out, MSG_ENTRY, rec);
	/* Durable on how many of how many servers (one server, for now). */
	if (!rc)
		rc = wire_ok(&s->io.out, (uint64_t)server_copies(s->srv, rec->seq) << 32 | s->srv->cluster_size);
	free(rec);
	return rc;
}

static int do_log(session *s)
{
	int rc = store_history(s->srv->st, s->m.path.path, send_entry, s);
	return rc ? rc : wire_empty(&s->io.out, MSG_END);
}

typedef struct rm_walk {
	session *s;
	const char *prefix;
	uint64_t removed;
} rm_walk;

static int tombstone(session *s, const char *path);

/* store_list runs its callback without holding the store, so each path is
 * tombstoned as the walk reaches it: memory stays flat however many match. */
static int rm_one(void *ctx, const record *r)
{
	rm_walk *w = ctx;
	if (strncmp(r->path, w->prefix, strlen(w->prefix)))
		return 0;
	int rc = tombstone(w->s, r->path);
	if (!rc)
		w->removed++;
	return rc;
}

static int tombstone(session *s, const char *path)
{
	record *rec = xcalloc(1, sizeof *rec);
	snprintf(rec->path, sizeof rec->path, "%s", path);
	rec->deleted = true;
	rec->mtime_ns = now_wall_ns();
	int rc = store_commit(s->srv->st, rec);
	if (!rc) {
		committed(s, rec->seq);
		server_changed(s->srv);
	}
	free(rec);
	return rc;
}

static int do_rm(session *s)
{
	const char *path = s->m.rm.path;
	int rc = path_check(path, strlen(path));
	if (rc || (rc = server_quorum_ready(s->srv)))
		return rc;
	catch_up(s);
	record *rec = xmalloc(sizeof *rec);
	rc = store_lookup(s->srv->st, path, rec);
	bool live = !rc && !rec->deleted;
	free(rec);
	if (rc && rc != SS_ENOENT)
		return rc;
	uint64_t removed = 0;
	/* Held for nothing else before this rm: if it fails part-way, no wait
	 * will cover what it removed (the client is told it failed), so the
	 * hold it took ends with it. */
	bool held_before = s->unacked.held;
	if (live) {
		if ((rc = tombstone(s, path)))
			return rc;
		removed++;
	}
	if (s->m.rm.flags & WIRE_RM_RECURSIVE) {
		/* Everything under PATH/, each tombstone its own commit. */
		char prefix[SS_PATH_MAX + 2];
		snprintf(prefix, sizeof prefix, "%s/", path);
		rm_walk w = {.s = s, .prefix = prefix};
		rc = store_list(s->srv->st, prefix, rm_one, &w);
		removed += w.removed;
		if (rc) {
			if (!held_before)
				server_release(s->srv, &s->unacked);
			return rc;
		}
	}
	if (!removed)
		return ss_fail(SS_ENOENT, "no such file: %s", path);
	log_info("rm %s: %llu removed", path, (unsigned long long)removed);
	unsigned copies;
	rc = session_quorum_wait(s, s->last_write, &copies);
	return rc ? rc : wire_ok(&s->io.out, removed);
}

static int do_mv(session *s)
{
	int rc = path_check(s->m.mv.from, strlen(s->m.mv.from));
	if (!rc)
		rc = path_check(s->m.mv.to, strlen(s->m.mv.to));
	if (rc)
		return rc;
	record *rec = xmalloc(sizeof *rec);
	rc = server_quorum_ready(s->srv);
	if (!rc)
		catch_up(s);
	if (!rc)
		rc = store_rename(s->srv->st, s->m.mv.from, s->m.mv.to, rec);
	uint64_t seq = rec->seq;
	if (!rc) {
		committed(s, seq);
		committed(s, seq + 1); /* the old path's tombstone */
	}
	free(rec);
	unsigned copies;
	if (!rc) {
		server_changed(s->srv);
		/* Acknowledged once the tombstone of the old path (seq + 1) is
		 * held too: else losing this server could leave both paths. */
		rc = session_quorum_wait(s, seq + 1, &copies);
	}
	if (rc == SS_ENOENT)
		rc = ss_fail(SS_ENOENT, "no such file: %s", s->m.mv.from);
	return rc ? rc : wire_ok(&s->io.out, seq);
}

/*
 * JOIN: a peer link introduces itself.  If each of us lists the other, the
 * two peer lists must describe clusters of the same size — else the two
 * would count different majorities, and a write "acknowledged by a quorum"
 * on one could be unknown to a quorum of the other.  A server we do not
 * list (one being added, or an observer) may pull: it counts for nothing.
 */
static int do_join(session *s)
{
	const server *srv = s->srv;
	if (peers_listed(s->srv, s->m.join.addr) && s->m.join.cluster_size != srv->cluster_size)
		return ss_fail(SS_EINVAL,
			       "peer lists disagree: %s says the cluster has %u servers, %s says %u; give every "
			       "server the same --peer list (all the others)",
			       s->m.join.addr, s->m.join.cluster_size, srv->opts->listen, srv->cluster_size);
	return wire_ok(&s->io.out, srv->cluster_size);
}

static int do_forget(session *s)
{
	unsigned servers;
	int rc = peers_forget(s->srv, s->m.forget.node, s->m.forget.flags & WIRE_FORGET_RELAYED, &servers);
	return rc ? rc : wire_ok(&s->io.out, servers);
}

/* BARRIER(seq): every commit of ours up to seq is held by the write quorum. */
static int do_barrier(session *s)
{
	unsigned copies;
	int rc = session_quorum_wait(s, s->m.barrier.seq, &copies);
	return rc ? rc : wire_ok(&s->io.out, copies);
}

static int do_status(session *s)
{
	store_stats st;
	int rc = store_stats_get(s->srv->st, &st);
	uint64_t tombs = 0, oldest = 0, parked = 0;
	if (!rc)
		rc = store_tombstones(s->srv->st, &tombs, &oldest);
	if (!rc)
		rc = store_pending_count(s->srv->st, &parked);
	if (rc)
		return rc;
	/* Our own pending records: received, waiting for their trees. */
	wire_server w = {.self = 1, .connected = 1, .durable_of = 1, .pending_records = parked};
	memcpy(w.id, s->srv->node_id, HASH_LEN);
	snprintf(w.addr, sizeof w.addr, "%s", s->srv->opts->listen);
	w.head_seq = st.head_seq;
	w.files = st.files;
	w.bytes = st.bytes;
	w.chunks = st.chunks;
	w.chunk_bytes = st.chunk_bytes;
	w.tombstones = tombs;
	memcpy(w.digest, st.digest, HASH_LEN);
	rc = wire_server_info(&s->io.out, &w);
	/* Then every peer as this server last heard from it. */
	peer_info pi;
	for (unsigned i = 0; !rc && peers_info(s->srv, i, &pi); i++) {
		wire_server v = {.connected = pi.connected, .durable_of = 1};
		memcpy(v.id, pi.id, HASH_LEN);
		snprintf(v.addr, sizeof v.addr, "%s", pi.addr);
		v.head_seq = pi.head;
		v.pending_records = pi.head > pi.cursor ? pi.head - pi.cursor : 0;
		if (pi.connected && !pi.head_known && !v.pending_records)
			v.pending_records = 1; /* not heard from on this connection yet */
		v.files = pi.files;
		v.bytes = pi.bytes;
		memcpy(v.digest, pi.digest, HASH_LEN);
		if (peers_is_forgotten(s->srv, pi.id))
			v.flags |= WIRE_SERVER_FORGOTTEN;
		else if (tombs && server_acked(s->srv, node_short_id(pi.id)) < oldest)
			v.flags |= WIRE_SERVER_BLOCKS; /* it has not applied our oldest tombstone */
		rc = wire_server_info(&s->io.out, &v);
	}
	return rc ? rc : wire_empty(&s->io.out, MSG_END);
}

/* ---- serving peers ---- */

typedef struct pull_out {
	session *s;
	unsigned n;
	uint64_t last; /* seq of the last record sent */
} pull_out;

static int pull_entry(void *ctx, const record *r)
{
	pull_out *po = ctx;
	po->n++;
	po->last = r->seq;
	int rc = wire_record(&po->s->io.out, MSG_ENTRY, r);
	return rc ? rc : msgio_maybe_flush(&po->s->io);
}

/* While a PULL is held the peer sends nothing: anything readable is its
 * connection closing. */
static bool peer_spoke(session *s)
{
	struct pollfd p = {.fd = s->c->fd, .events = POLLIN | POLLRDHUP};
	return poll(&p, 1, 0) > 0;
}

/*
 * PULL: the records after the peer's cursor (from 0 if its cursor is over
 * another index id: our data directory is not the one it knew), then
 * PULLED with our index id and state.  With nothing new, hold the request
 * until something changes or wait_ms pass (long poll).
 */
static int do_pull(session *s)
{
	server *srv = s->srv;
	if (peers_is_forgotten(srv, s->c->peer.id))
		return ss_fail(SS_EAUTH, "this node was forgotten by the cluster: wipe its data directory to join "
					 "again as a new member");
	const repl_pull_req rq = {s->m.pull.index_id, s->m.pull.after, s->m.pull.acked, s->m.pull.fp};
	repl_pull_plan plan;
	int rc = repl_serve_pull(srv->st, &rq, &plan);
	if (rc)
		return rc;
	if (plan.regressed) {
		char hex[HASH_HEX_LEN + 1];
		hex_encode(s->c->peer.id, HASH_LEN, hex);
		log_err("peer %.16s holds our record %llu, which our log (ending at %llu) %s: this data directory "
			"was restored from an older copy; starting a new sequence space (index id %016llx) so every "
			"peer pulls everything again", hex, (unsigned long long)rq.after, (unsigned long long)plan.head,
			rq.after > plan.head ? "no longer has" : "has another record at",
			(unsigned long long)plan.index_id);
	}
	if (plan.acks)
		server_peer_acked(srv, node_short_id(s->c->peer.id), plan.acked);
	uint64_t index_id = plan.index_id, after = plan.after;
	store_stats st;
	unsigned limit = s->m.pull.limit && s->m.pull.limit < WIRE_PULL_MAX ? s->m.pull.limit : WIRE_PULL_MAX;
	uint32_t wait_ms = s->m.pull.wait_ms < 60000 ? s->m.pull.wait_ms : 60000;
	double deadline = now_mono() + wait_ms / 1000.0;
	pull_out po = {.s = s};
	for (;;) {
		uint64_t gen = server_change_gen(srv);
		if ((rc = store_since(srv->st, after, limit, pull_entry, &po)))
			return rc;
		double left = deadline - now_mono();
		if (po.n || left <= 0 || server_stopping(srv) || peer_spoke(s))
			break;
		/* In slices, so a peer that went away is noticed (and stops
		 * counting as connected for the write quorum) within ~0.2 s. */
		server_wait_change(srv, gen, left > 0.2 ? 200 : (int)(left * 1000) + 1);
	}
	/* Read after the records: its head is at least the last one sent. */
	if ((rc = store_stats_get(srv->st, &st)))
		return rc;
	return wire_pulled(&s->io.out, index_id, st.head_seq, st.files, st.bytes, st.digest);
}

/* READ: each id's bytes as a CHUNK, or MISSING.  A copy that fails
 * verification is forgotten (read_tree_chunk's rule) and reported missing. */
static int do_read(session *s)
{
	uint16_t n = s->m.offer.count;
	uint8_t *ids = xmalloc((size_t)n * HASH_LEN + 1);
	memcpy(ids, s->m.offer.ids, (size_t)n * HASH_LEN);
	int rc = 0;
	for (unsigned i = 0; i < n && !rc; i++) {
		const uint8_t *id = ids + (size_t)i * HASH_LEN;
		rc = store_get_chunk(s->srv->st, id, &s->chunk);
		if (rc == SS_ECORRUPT) {
			log_err("%s: dropped from the index until a peer sends it again", ss_errmsg(rc));
			store_forget(s->srv->st, id);
		}
		if (rc == SS_ENOENT || rc == SS_ECORRUPT)
			rc = wire_missing(&s->io.out, id);
		else if (!rc)
			rc = send_chunk(s, id);
	}
	free(ids);
	return rc;
}

/* ---- serving swarm clients (trackers only) ---- */

static int do_announce(session *s)
{
	uint64_t held;
	int rc = registry_announce(s->srv, s->c->peer.id, s->c->peer.role, &s->m, &held);
	return rc ? rc : wire_ok(&s->io.out, held);
}

static int do_heartbeat(session *s)
{
	uint64_t held;
	int rc = registry_heartbeat(s->srv, s->c->peer.id, &s->m, &held);
	return rc ? rc : wire_ok(&s->io.out, held);
}

static int seeder_out(void *ctx, const registry_entry *e)
{
	session *s = ctx;
	return wire_seeder(&s->io.out, e->seeder, e->addr, e->size, e->name);
}

static int do_seeders(session *s)
{
	int rc = registry_seeders(s->srv, s->m.seeders.root, seeder_out, s);
	return rc ? rc : wire_empty(&s->io.out, MSG_END);
}

/* What the request log says of a request. */
static void describe(const msg *m, char *out, size_t n)
{
	char hex[HASH_HEX_LEN + 1];
	switch (m->type) {
	case MSG_ANNOUNCE:
		hex_encode(m->announce.root, HASH_LEN, hex);
		snprintf(out, n, "%s %s %.16s %s",
			 m->announce.flags & WIRE_ANNOUNCE_WITHDRAW_ALL ? "WITHDRAW_ALL"
			 : m->announce.flags			    ? "WITHDRAW"
								    : "ANNOUNCE",
			 m->announce.name, hex, m->announce.addr);
		break;
	case MSG_HEARTBEAT: snprintf(out, n, "HEARTBEAT %s", m->heartbeat.addr); break;
	case MSG_SEEDERS:
		hex_encode(m->seeders.root, HASH_LEN, hex);
		snprintf(out, n, "SEEDERS %.16s", hex);
		break;
	case MSG_STATUS: snprintf(out, n, "STATUS"); break;
	case MSG_PULL:
		snprintf(out, n, "PULL after %llu", (unsigned long long)m->pull.after);
		break;
	case MSG_READ: snprintf(out, n, "READ %u", m->offer.count); break;
	case MSG_JOIN: snprintf(out, n, "JOIN %s", m->join.addr); break;
	default: snprintf(out, n, "message type %u", m->type);
	}
}

/* A chunk a peer pushed during a put it is taking: verified (on the
 * verifier's thread) and stored, no answer; the record follows by PULL. */
static int do_pushed(session *s)
{
	if (!s->v && !(s->v = verifier_start(s->srv->st, NULL, NULL)))
		return ss_fail(SS_ENOMEM, "cannot start a verifier thread");
	/* Pushed chunks belong to no version until their record arrives by
	 * PULL: the lease keeps garbage collection off them meanwhile (the
	 * pusher closes an idle connection after PUSH_IDLE_MS). */
	if (!s->push_leased) {
		s->push_lease = store_lease_begin(s->srv->st);
		s->push_leased = true;
	}
	/* Nobody reads answers on a push connection: any failure ends it. */
	int rc = verifier_submit(s->v, &s->m, &s->io.in, false);
	return rc ? ss_fail(SS_EPROTO, "pushed chunk not stored: %s", ss_errmsg(rc)) : 0;
}

/* One request from a server of our own role: replication only. */
static int peer_request(session *s)
{
	switch (s->m.type) {
	case MSG_CHUNK: return s->srv->role == ROLE_SERVER ? do_pushed(s) : ss_fail(SS_EPROTO, "a tracker takes no chunks");
	case MSG_PULL: return do_pull(s);
	case MSG_READ: return do_read(s);
	case MSG_STATUS: return do_status(s);
	case MSG_FORGET: return do_forget(s);
	case MSG_JOIN: return do_join(s);
	default: return ss_fail(SS_EPROTO, "unexpected message type %u from a peer", s->m.type);
	}
}

/* One request from a swarm client (or a server seeding) to a tracker. */
static int tracker_request(session *s)
{
	switch (s->m.type) {
	case MSG_ANNOUNCE: return do_announce(s);
	case MSG_HEARTBEAT: return do_heartbeat(s);
	case MSG_SEEDERS: return do_seeders(s);
	case MSG_STATUS: return do_status(s);
	default:
		return ss_fail(SS_EPROTO, "a tracker keeps the swarm's registry, not files (message type %u): ask a "
					  "server", s->m.type);
	}
}

/*
 * Before closing on a failed put, read and drop what the client is still
 * sending (bounded in bytes and time), so the ERROR already written reaches
 * it instead of a connection reset.
 */
static void linger(session *s)
{
	uint8_t scrap[64 * 1024];
	uint64_t budget = 64u << 20;
	conn_set_timeout(s->c, 2000);
	shutdown(s->c->fd, SHUT_WR);
	while (budget > sizeof scrap && conn_read(s->c, scrap, sizeof scrap) == 0)
		budget -= sizeof scrap;
}

/* Errors a client can act on get an ERROR reply and the session goes on;
 * protocol violations and I/O failures end the connection. */
static bool fatal(int rc)
{
	return rc == SS_EPROTO || rc == SS_ECLOSED || rc == SS_ETLS || rc == SS_ETIMEDOUT || rc == SS_ETOOBIG ||
	       rc == SS_ECORRUPT;
}

void session_run(server *srv, conn *c)
{
	session *s = xcalloc(1, sizeof *s);
	s->srv = srv;
	s->c = c;
	msgio_init(&s->io, c);
	buf_init(&s->chunk, CDC_MAX + TREE_NODE_MAX);
	wire_zstd_init(&s->z);
	for (unsigned i = 0; i < SESSION_MAX_BATCHES; i++)
		s->batches[i].nodes = xmalloc(sizeof(pending_node) * SESSION_MAX_NODES);
	char hex[HASH_HEX_LEN + 1];
	hex_encode(c->peer.id, HASH_LEN, hex);

	int rc;
	bool tracker = srv->role == ROLE_TRACKER, peer = c->peer.role == srv->role;
	if (!peer && c->peer.role != ROLE_CLIENT && (tracker ? c->peer.role != ROLE_SERVER : true)) {
		rc = ss_fail(SS_EAUTH, "role %s may not use this %s", tls_role_name(c->peer.role),
			     tls_role_name(srv->role));
		log_info("peer %.16s (%s) refused: %s", hex, c->peer.name, ss_errmsg(rc));
		reply_error(s, rc);
		goto out;
	}
	conn_set_timeout(c, SERVER_IDLE_MS);
	/* Writes time out too: a client that stops reading a GET must not
	 * hold this thread for ever. */
	struct timeval tv = {.tv_sec = SERVER_IDLE_MS / 1000};
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if ((rc = msgio_hello_server(&s->io))) {
		log_info("peer %.16s: handshake failed: %s", hex, ss_errmsg(rc));
		if (rc != SS_ECLOSED)
			reply_error(s, rc);
		goto out;
	}
	for (;;) {
		rc = s->have_next ? 0 : msgio_recv(&s->io, &s->m);
		s->have_next = false;
		if (rc == SS_ECLOSED)
			break;
		if (!rc && peer && !s->peer_live) {
			s->peer_live = true;
			/* A peer PULLs at least every PEER_WAIT_MS: one silent for
			 * much longer is gone, and must stop counting for the
			 * write quorum. */
			conn_set_timeout(c, PEER_WAIT_MS + 20000);
			server_peer_live(srv, node_short_id(c->peer.id), +1);
		}
		if (!rc && (peer || tracker)) {
			rc = peer ? peer_request(s) : tracker_request(s);
			if (tracker) {
				char what[WIRE_NAME_MAX + WIRE_ADDR_MAX + 128];
				describe(&s->m, what, sizeof what);
				registry_log(srv, c->peer.id, what, rc);
			}
		} else if (!rc) {
			switch (s->m.type) {
			case MSG_PUT:
				/* A failed put leaves the client mid-stream: the
				 * connection ends after the ERROR. */
				if ((rc = do_put(s))) {
					log_info("peer %.16s: put failed: %s", hex, ss_errmsg(rc));
					reply_error(s, rc);
					linger(s);
					goto out;
				}
				break;
			case MSG_PUT_SMALL: rc = do_put_small(s); break;
			case MSG_GET: rc = do_get(s); break;
			case MSG_LIST: rc = do_list(s); break;
			case MSG_STAT: rc = do_stat(s); break;
			case MSG_LOG: rc = do_log(s); break;
			case MSG_RM: rc = do_rm(s); break;
			case MSG_MV: rc = do_mv(s); break;
			case MSG_STATUS: rc = do_status(s); break;
			case MSG_FORGET: rc = do_forget(s); break;
			case MSG_BARRIER: rc = do_barrier(s); break;
			/* Swarm clients fetch chunks by id: a server seeds all it holds. */
			case MSG_READ: rc = do_read(s); break;
			default: rc = ss_fail(SS_EPROTO, "unexpected message type %u", s->m.type);
			}
		}
		if (rc) {
			log_info("peer %.16s: %s", hex, ss_errmsg(rc));
			if (rc == SS_ECLOSED)
				break;
			reply_error(s, rc);
			if (fatal(rc))
				break;
			continue;
		}
		if ((rc = msgio_flush(&s->io)))
			break;
	}
out:
	server_release(srv, &s->unacked);
	if (s->peer_live)
		server_peer_live(srv, node_short_id(c->peer.id), -1);
	wire_zstd_free(&s->z);
	verifier_stop(s->v);
	if (s->push_leased)
		store_lease_end(srv->st, s->push_lease);
	for (unsigned i = 0; i < SESSION_MAX_BATCHES; i++) {
		free(s->batches[i].nodes);
		idset_free(&s->batches[i].wanted);
	}
	buf_free(&s->chunk);
	msgio_free(&s->io);
	free(s->small);
	free(s);
}
