/* node.c — see node.h. */
#include "node.h"
#include "repl.h"
#include "resolve.h"

#include <stdlib.h>
#include <string.h>

#ifndef SIM_BUG
#define SIM_BUG 0
#endif

typedef struct nlink {
	repl_link rl;
	repl_peer_state ps;
	repl_pull_req req; /* the PULL in flight */
	/* the batch in hand, lent by the link from `pulled` until it is applied */
	record *recs;
	unsigned nrecs;
	uint64_t from;
	/* a try of the parked records (LINK_RESOLVE), a batch at a time */
	bool resolving;
	store_pending *pend; /* REPL_PULL_BATCH, during a try */
	unsigned npend;
	uint64_t r_start, r_end;
	bool r_wrapped;
	int r_round;
	unsigned r_written;
	/* what the link fetches: its batch's incomplete trees */
	uint8_t *roots; /* REPL_PULL_BATCH ids */
	unsigned nroots;
	uint64_t lease;
	bool leased;
	bool wants_turn; /* its FETCH waits for the link fetching now */
	bool ready;      /* its next action is decided (repl_node_take_ready) */
	repl_act act;
} nlink;

struct repl_node {
	store *st;
	unsigned n;
	nlink *l;
	repl_view view;
	int fetcher; /* the link fetching now, -1: none */
	repl_counts counts;
};

repl_node *repl_node_new(store *st, unsigned nlinks)
{
	repl_node *n = xcalloc(1, sizeof *n);
	n->st = st;
	n->n = nlinks;
	n->l = xcalloc(nlinks ? nlinks : 1, sizeof *n->l);
	n->fetcher = -1;
	/* What is parked from before (status shows it before any link is up;
	 * an error here shows up again at the first event that recounts). */
	(void)store_pending_count(st, &n->view.parked);
	for (unsigned i = 0; i < nlinks; i++) {
		repl_link_init(&n->l[i].rl);
		n->l[i].roots = xmalloc((size_t)REPL_PULL_BATCH * HASH_LEN);
	}
	return n;
}

void repl_node_free(repl_node *n)
{
	if (!n)
		return;
	for (unsigned i = 0; i < n->n; i++) {
		if (n->l[i].leased)
			store_lease_end(n->st, n->l[i].lease);
		free(n->l[i].pend);
		free(n->l[i].roots);
	}
	free(n->l);
	free(n);
}

/* ---- small pieces ---- */

/* The apply's "fetch": the link has fetched what its peer had, so a tree
 * that is still incomplete parks its record. */
static int fetched_here(void *ctx, const uint8_t root[HASH_LEN])
{
	int have = store_has_node(ctx, root);
	return have < 0 ? have : have ? 0 : SS_ENOENT;
}

/* Recount the parked records; a batch that parked some moves the
 * generation, so every link tries them at once. */
static int note_parked(repl_node *n, unsigned parked)
{
	uint64_t count = 0;
	int rc = store_pending_count(n->st, &count);
	if (rc)
		return rc;
	n->view.parked = count;
	if (parked)
		n->view.parked_gen++;
	return 0;
}

static void lease(repl_node *n, nlink *l)
{
	if (!l->leased) {
		l->lease = store_lease_begin(n->st);
		l->leased = true;
	}
}

static void unlease(repl_node *n, nlink *l)
{
	if (l->leased) {
		store_lease_end(n->st, l->lease);
		l->leased = false;
	}
}

/* Add root to the fetch list unless its tree is complete here or listed. */
static int want_root(repl_node *n, nlink *l, const uint8_t root[HASH_LEN])
{
	for (unsigned k = 0; k < l->nroots; k++)
		if (!memcmp(l->roots + (size_t)k * HASH_LEN, root, HASH_LEN))
			return 0;
	int have = store_has_node(n->st, root);
	if (have < 0)
		return have;
	if (!have && l->nroots < REPL_PULL_BATCH)
		memcpy(l->roots + (size_t)l->nroots++ * HASH_LEN, root, HASH_LEN);
	return 0;
}

/* ACT_FETCH of l's roots now, or when the link fetching now is done.  The
 * lease keeps garbage collection off what the fetch stores until the apply
 * (taken when the fetch starts, not while the link waits for its turn). */
static void ask_fetch(repl_node *n, unsigned i, repl_act *act)
{
	nlink *l = &n->l[i];
	if (n->fetcher < 0 || n->fetcher == (int)i) {
		n->fetcher = (int)i;
		lease(n, l);
		*act = (repl_act){.kind = ACT_FETCH, .roots = l->roots, .n = l->nroots};
	} else {
		l->wants_turn = true;
		*act = (repl_act){.kind = ACT_WAIT};
	}
}

/* The fetch turn passes to the next link waiting for it (round from i). */
static void pass_turn(repl_node *n, unsigned i)
{
	if (n->fetcher != (int)i)
		return;
	n->fetcher = -1;
	for (unsigned k = 1; k <= n->n; k++) {
		unsigned j = (i + k) % n->n;
		nlink *l = &n->l[j];
		if (l->wants_turn) {
			l->wants_turn = false;
			ask_fetch(n, j, &l->act);
			l->ready = true;
			return;
		}
	}
}

/* ---- a try of the parked records ---- */

/* The try is over (or cut short): its lease and buffer go. */
static void resolve_end(repl_node *n, nlink *l)
{
	unlease(n, l);
	free(l->pend);
	l->pend = NULL;
	l->resolving = false;
}

static int next_action(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out);

/*
 * The next batch of parked rows, once round the table from where this
 * link's last try stopped (at most REPL_RESOLVE_BATCHES batches; rows
 * re-parked meanwhile get new ids past r_end and wait for the next try).
 * Rows the path has moved past since need no tree (repl_apply_pending
 * drops them); the rest are fetched unless complete.  A batch with
 * nothing to fetch is applied at once.
 */
static int resolve_step(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	nlink *l = &n->l[i];
	int rc = 0;
	while (l->r_round < REPL_RESOLVE_BATCHES) {
		unsigned np = 0;
		if ((rc = store_pending_list(n->st, l->rl.parked_after, l->pend, REPL_PULL_BATCH, &np)))
			return rc;
		while (np && l->pend[np - 1].rec.seq > l->r_end)
			np--;
		if (!np) {
			if (l->r_wrapped || !l->r_start)
				break;
			l->r_wrapped = true; /* the rows before where this try began */
			l->rl.parked_after = 0;
			l->r_end = l->r_start;
			continue;
		}
		l->r_round++;
		l->npend = np;
		l->rl.parked_after = l->pend[np - 1].rec.seq;
		l->nroots = 0;
		record *cur = xmalloc(sizeof *cur);
		for (unsigned k = 0; k < np && !rc; k++) {
			const record *r = &l->pend[k].rec;
			resolution res = {0};
			if (r->deleted ||
			    (!store_lookup(n->st, r->path, cur) && !resolve(cur, r, &res) && res.kind == RESOLVE_KEEP))
				continue;
			rc = want_root(n, l, r->root);
		}
		free(cur);
		if (rc)
			return rc;
		if (l->nroots) {
			ask_fetch(n, i, act);
			return 0;
		}
		store_applied ap;
		if ((rc = repl_apply_pending(n->st, l->pend, l->npend, fetched_here, n->st, &n->counts, &ap)) ||
		    (rc = note_parked(n, 0)))
			return rc;
		l->r_written += ap.written;
		out->written += ap.written;
	}
	resolve_end(n, l);
	out->resolved = true;
	repl_link_resolved(&l->rl, l->r_written, now_ms);
	return next_action(n, i, now_ms, act, out);
}

static int resolve_begin(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	nlink *l = &n->l[i];
	uint64_t top = 0;
	int rc = store_pending_max(n->st, &top);
	if (rc)
		return rc;
	l->resolving = true;
	l->pend = xmalloc(REPL_PULL_BATCH * sizeof *l->pend);
	l->r_start = l->rl.parked_after < top ? l->rl.parked_after : 0;
	l->rl.parked_after = l->r_start;
	l->r_end = top;
	l->r_wrapped = false;
	l->r_round = 0;
	l->r_written = 0;
	return resolve_step(n, i, now_ms, act, out);
}

/* ---- the link's schedule ---- */

static int next_action(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	nlink *l = &n->l[i];
	repl_link_step s = repl_link_next(&l->rl, &n->view, now_ms);
	switch (s.act) {
	case LINK_SLEEP:
		*act = (repl_act){.kind = ACT_SLEEP, .wait_ms = s.wait_ms};
		return 0;
	case LINK_CONNECT:
		*act = (repl_act){.kind = ACT_CONNECT};
		return 0;
	case LINK_RESOLVE:
		return resolve_begin(n, i, now_ms, act, out);
	case LINK_PULL:
		break;
	}
	int rc = repl_pull_request(n->st, l->ps.peer, &l->req);
	*act = (repl_act){.kind = ACT_PULL, .wait_ms = s.wait_ms, .req = l->req};
	return rc;
}

/* A failure the core saw (a refused batch, the store): the link goes down
 * as if it had reported one. */
static int fail(repl_node *n, unsigned i, int rc, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	repl_node_failed(n, i, now_ms, act, out);
	return rc;
}

/* ---- events ---- */

int repl_node_start(repl_node *n, unsigned i, int64_t now_ms, repl_act *act)
{
	repl_outcome out = {0};
	return next_action(n, i, now_ms, act, &out);
}

int repl_node_woke(repl_node *n, unsigned i, int64_t now_ms, repl_act *act)
{
	return repl_node_start(n, i, now_ms, act);
}

int repl_node_connected(repl_node *n, unsigned i, uint64_t peer, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	repl_outcome dummy;
	out = out ? out : &dummy;
	*out = (repl_outcome){.state_changed = true};
	nlink *l = &n->l[i];
	l->ps.connected = true;
	l->ps.head_known = false; /* until this connection's first PULLED */
	l->ps.peer = peer;
	repl_link_connected(&l->rl);
	int rc = note_parked(n, 0);
	if (!rc)
		rc = next_action(n, i, now_ms, act, out);
	return rc ? fail(n, i, rc, now_ms, act, out) : 0;
}

void repl_node_failed(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	repl_outcome dummy;
	out = out ? out : &dummy;
	nlink *l = &n->l[i];
	out->state_changed = true;
	l->ps.connected = false;
	l->wants_turn = false;
	l->ready = false;
	l->recs = NULL;
	l->nrecs = 0;
	resolve_end(n, l); /* repl_link_failed counts a try cut short as fruitless */
	pass_turn(n, i);
	repl_link_failed(&l->rl, now_ms);
	/* Down: SLEEP or CONNECT, which need no store. */
	repl_link_step s = repl_link_next(&l->rl, &n->view, now_ms);
	*act = s.act == LINK_SLEEP ? (repl_act){.kind = ACT_SLEEP, .wait_ms = s.wait_ms}
				   : (repl_act){.kind = ACT_CONNECT};
}

/* Apply l's batch (its trees fetched as far as the peer had them). */
static int apply(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	nlink *l = &n->l[i];
	store_applied ap = {0};
	uint64_t last = l->recs[l->nrecs - 1].seq; /* before the batch is compacted */
	out->records = l->nrecs;
	int rc = repl_apply_batch(n->st, l->recs, l->nrecs, l->from, l->ps.pulled.head, l->ps.peer,
				  l->ps.pulled.index_id, fetched_here, n->st, &n->counts, &ap);
	unlease(n, l);
	l->recs = NULL;
	l->nrecs = 0;
	if (rc || (rc = note_parked(n, ap.parked)))
		return fail(n, i, rc, now_ms, act, out);
	out->written += ap.written;
	out->parked += ap.parked;
	l->ps.cursor = last;
	out->state_changed = true;
	repl_link_pulled(&l->rl);
	rc = next_action(n, i, now_ms, act, out);
	return rc ? fail(n, i, rc, now_ms, act, out) : 0;
}

int repl_node_pulled(repl_node *n, unsigned i, record *recs, unsigned nrecs, const repl_pulled *pulled, int64_t now_ms,
		     repl_act *act, repl_outcome *out)
{
	repl_outcome dummy;
	out = out ? out : &dummy;
	*out = (repl_outcome){.state_changed = true};
	nlink *l = &n->l[i];
	/* A new index id means the peer's data directory is new: its records
	 * come again from the start, and the cursor restarts with them. */
	l->from = repl_pull_after(l->req.index_id, l->req.after, pulled->index_id);
	int rc = repl_batch_check(recs, nrecs, l->from, pulled->head);
	if (rc)
		return fail(n, i, rc, now_ms, act, out);
	/* Its head, before the fetches: a write here meanwhile knows to wait. */
	l->ps.pulled = *pulled;
	l->ps.head_known = true;
	l->ps.cursor = l->from;
	if (!nrecs) {
		/* Only a new index id to remember (its cursor reset drops what
		 * was parked from the old log). */
		if (pulled->index_id != l->req.index_id &&
		    ((rc = store_cursor_set(n->st, l->ps.peer, pulled->index_id, 0)) || (rc = note_parked(n, 0))))
			return fail(n, i, rc, now_ms, act, out);
		repl_link_pulled(&l->rl);
		rc = next_action(n, i, now_ms, act, out);
		return rc ? fail(n, i, rc, now_ms, act, out) : 0;
	}
	l->recs = recs;
	l->nrecs = nrecs;
	/* The trees to fetch: those of the live records the batch keeps (the
	 * last of each path) that are not complete here. */
	l->nroots = 0;
	for (unsigned k = 0; k < nrecs && !rc; k++) {
		bool later = false;
		for (unsigned j = k + 1; j < nrecs && !later; j++)
			later = !strcmp(recs[k].path, recs[j].path);
		if (!later && !recs[k].deleted)
			rc = want_root(n, l, recs[k].root);
	}
	if (rc)
		return fail(n, i, rc, now_ms, act, out);
#if SIM_BUG == 2
	/* PLANTED BUG 2 (tests/sim only, with its other half in
	 * core/apply.c): apply without fetching the trees. */
	l->nroots = 0;
#endif
	if (!l->nroots)
		return apply(n, i, now_ms, act, out);
	ask_fetch(n, i, act);
	return 0;
}

int repl_node_fetched(repl_node *n, unsigned i, int64_t now_ms, repl_act *act, repl_outcome *out)
{
	repl_outcome dummy;
	out = out ? out : &dummy;
	*out = (repl_outcome){0};
	nlink *l = &n->l[i];
	int rc = 0;
	/* The turn passes first: this link's next fetch (the next batch of
	 * parked records, say) queues behind the others waiting. */
	pass_turn(n, i);
	if (!l->resolving)
		return apply(n, i, now_ms, act, out);
	store_applied ap;
	rc = repl_apply_pending(n->st, l->pend, l->npend, fetched_here, n->st, &n->counts, &ap);
	unlease(n, l);
	if (rc || (rc = note_parked(n, 0)))
		return fail(n, i, rc, now_ms, act, out);
	l->r_written += ap.written;
	out->written += ap.written;
	rc = resolve_step(n, i, now_ms, act, out);
	return rc ? fail(n, i, rc, now_ms, act, out) : 0;
}

bool repl_node_take_ready(repl_node *n, unsigned *link, repl_act *act)
{
	for (unsigned i = 0; i < n->n; i++)
		if (n->l[i].ready) {
			n->l[i].ready = false;
			*link = i;
			*act = n->l[i].act;
			return true;
		}
	return false;
}

int repl_node_forget(repl_node *n, uint64_t peer)
{
	int rc = store_pending_drop_peer(n->st, peer);
	return rc ? rc : note_parked(n, 0);
}

const repl_peer_state *repl_node_state(const repl_node *n, unsigned link) { return &n->l[link].ps; }
const repl_link *repl_node_link(const repl_node *n, unsigned link) { return &n->l[link].rl; }
repl_view repl_node_view(const repl_node *n) { return n->view; }
const repl_counts *repl_node_counts(const repl_node *n) { return &n->counts; }
