/* test_node.c — the replication core (core/node.c) driven by hand over real
 * stores: a link's actions in order, one fetch at a time, parking and
 * retrying through another link, refused batches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/node.h"
#include "store/store.h"
#include "store_fixture.h"

#define P1 0x1000000000000001ULL
#define P2 0x2000000000000002ULL

/* What a link's FETCH does: copy each root's tree (one level) from src;
 * with skip, all but that data chunk (the peer lacks it). */
static void copy_trees(store *dst, store *src, const repl_act *act, const uint8_t *skip)
{
	assert_int_equal(act->kind, ACT_FETCH);
	buf b;
	buf_init(&b, CDC_MAX);
	for (unsigned i = 0; i < act->n; i++) {
		const uint8_t *root = act->roots + (size_t)i * HASH_LEN;
		assert_int_equal(store_get_chunk(src, root, &b), 0);
		uint8_t node[TREE_NODE_MAX];
		size_t len = b.len;
		memcpy(node, b.p, len);
		tree_node nd;
		assert_int_equal(tree_node_decode(node, len, &nd), 0);
		bool whole = true;
		for (unsigned k = 0; k < nd.count; k++) {
			tree_entry e;
			tree_node_entry(&nd, k, &e);
			if (skip && !memcmp(e.id, skip, HASH_LEN)) {
				whole = false;
				continue;
			}
			assert_int_equal(store_get_chunk(src, e.id, &b), 0);
			assert_int_equal(store_put_chunk(dst, e.id, b.p, b.len), 0);
		}
		if (whole)
			assert_int_equal(store_put_node(dst, root, node, len), 0);
	}
	buf_free(&b);
}

typedef struct batch {
	record recs[16];
	unsigned n;
	repl_pulled pulled;
} batch;

static int collect(void *ctx, const record *r)
{
	batch *b = ctx;
	if (b->n < 16)
		b->recs[b->n++] = *r;
	return 0;
}

/* src's answer to the PULL in act. */
static void answer(store *src, const repl_act *act, batch *b)
{
	assert_int_equal(act->kind, ACT_PULL);
	repl_pull_plan plan;
	assert_int_equal(repl_serve_pull(src, &act->req, &plan), 0);
	memset(b, 0, sizeof *b);
	assert_int_equal(store_since(src, plan.after, 16, collect, b), 0);
	b->pulled.index_id = plan.index_id;
	b->pulled.head = plan.head;
}

static void connect_link(repl_node *n, unsigned i, uint64_t peer, repl_act *act)
{
	assert_int_equal(repl_node_start(n, i, 0, act), 0);
	assert_int_equal(act->kind, ACT_CONNECT);
	assert_int_equal(repl_node_connected(n, i, peer, 0, act, NULL), 0);
	assert_int_equal(act->kind, ACT_PULL);
	assert_int_equal(act->wait_ms, 0); /* a fresh connection's first PULL is not held */
}

/* Two peers s1 and s2, each with a file of its own (a, b); our core over
 * me with a link to each, connected, each link's first PULL answered. */
typedef struct two_links {
	store *s1, *s2, *me;
	repl_node *n;
	repl_act a0, a1;
	batch b0, b1;
} two_links;

static void two_links_open(two_links *f, const char *name)
{
	char d[64];
	snprintf(d, sizeof d, "%s_s1", name);
	f->s1 = fx_open(d, P1);
	snprintf(d, sizeof d, "%s_s2", name);
	f->s2 = fx_open(d, P2);
	snprintf(d, sizeof d, "%s_me", name);
	f->me = fx_open(d, 0x99);
	fx_commit(f->s1, "a", "from one", NULL);
	fx_commit(f->s2, "b", "from two", NULL);
	f->n = repl_node_new(f->me, 2);
	connect_link(f->n, 0, P1, &f->a0);
	connect_link(f->n, 1, P2, &f->a1);
	answer(f->s1, &f->a0, &f->b0);
	answer(f->s2, &f->a1, &f->b1);
}

static void two_links_close(two_links *f)
{
	repl_node_free(f->n);
	store_close(f->s1);
	store_close(f->s2);
	store_close(f->me);
}

static void test_one_fetch_at_a_time(void **state)
{
	(void)state;
	two_links f;
	two_links_open(&f, "turn");
	repl_node *n = f.n;
	store *s1 = f.s1, *s2 = f.s2, *me = f.me;
	repl_act a0 = f.a0, a1 = f.a1, act;
	batch b0 = f.b0, b1 = f.b1;
	repl_outcome out;
	assert_int_equal(repl_node_pulled(n, 0, b0.recs, b0.n, &b0.pulled, 0, &a0, &out), 0);
	assert_int_equal(a0.kind, ACT_FETCH);
	assert_int_equal(a0.n, 1);
	/* The head is known before the fetch: a write here knows to wait. */
	assert_true(repl_node_state(n, 0)->head_known && repl_node_state(n, 0)->pulled.head == b0.pulled.head);
	assert_int_equal(repl_node_pulled(n, 1, b1.recs, b1.n, &b1.pulled, 0, &a1, &out), 0);
	assert_int_equal(a1.kind, ACT_WAIT); /* link 0 is fetching */
	unsigned i;
	assert_false(repl_node_take_ready(n, &i, &act));
	copy_trees(me, s1, &a0, NULL);
	assert_int_equal(repl_node_fetched(n, 0, 0, &a0, &out), 0);
	assert_int_equal(out.written, 1);
	assert_int_equal(a0.kind, ACT_PULL);
	assert_int_equal(a0.wait_ms, REPL_WAIT_MS);
	assert_true(repl_node_state(n, 0)->cursor == b0.recs[0].seq);
	/* Now link 1's turn. */
	assert_true(repl_node_take_ready(n, &i, &act));
	assert_int_equal(i, 1);
	assert_int_equal(act.kind, ACT_FETCH);
	assert_false(repl_node_take_ready(n, &i, &act));
	copy_trees(me, s2, &act, NULL);
	assert_int_equal(repl_node_fetched(n, 1, 0, &a1, &out), 0);
	assert_int_equal(out.written, 1);
	record r;
	assert_int_equal(store_lookup(me, "a", &r), 0);
	assert_int_equal(store_lookup(me, "b", &r), 0);
	two_links_close(&f);
}

/* A link that breaks while it fetches passes the turn on. */
static void test_failed_fetch_passes_turn(void **state)
{
	(void)state;
	two_links f;
	two_links_open(&f, "fail");
	repl_node *n = f.n;
	store *me = f.me;
	repl_act a0 = f.a0, a1 = f.a1, act;
	batch b0 = f.b0, b1 = f.b1;
	assert_int_equal(repl_node_pulled(n, 0, b0.recs, b0.n, &b0.pulled, 0, &a0, NULL), 0);
	assert_int_equal(repl_node_pulled(n, 1, b1.recs, b1.n, &b1.pulled, 0, &a1, NULL), 0);
	assert_int_equal(a1.kind, ACT_WAIT);
	repl_node_failed(n, 0, 0, &a0, NULL);
	assert_int_equal(a0.kind, ACT_SLEEP);
	assert_false(repl_node_state(n, 0)->connected);
	unsigned i;
	assert_true(repl_node_take_ready(n, &i, &act));
	assert_int_equal(i, 1);
	assert_int_equal(act.kind, ACT_FETCH);
	/* Nothing of link 0's batch was applied: its cursor did not move. */
	uint64_t idx, cur;
	assert_int_equal(store_cursor_get(me, P1, &idx, &cur), 0);
	assert_int_equal(cur, 0);
	two_links_close(&f);
}

/* A record whose peer lacks a chunk is parked; the next link's try of the
 * parked records gets it from its own peer. */
static void test_parked_record_comes_through_another_link(void **state)
{
	(void)state;
	store *s1 = fx_open("park_s1", P1), *s2 = fx_open("park_s2", P2), *me = fx_open("park_me", 0x99);
	uint8_t chunk[HASH_LEN];
	record r1 = fx_commit(s1, "f", "the content", chunk);
	/* s2 holds the same tree (and so can supply it), under its own log. */
	uint8_t c2[HASH_LEN];
	fx_commit(s2, "g", "the content", c2);
	repl_node *n = repl_node_new(me, 2);
	repl_act a0, a1;
	connect_link(n, 0, P1, &a0);
	batch b0;
	answer(s1, &a0, &b0);
	repl_outcome out;
	assert_int_equal(repl_node_pulled(n, 0, b0.recs, b0.n, &b0.pulled, 0, &a0, &out), 0);
	copy_trees(me, s1, &a0, chunk); /* s1 answers MISSING for the data chunk */
	assert_int_equal(repl_node_fetched(n, 0, 0, &a0, &out), 0);
	assert_int_equal(out.parked, 1);
	assert_int_equal(repl_node_view(n).parked, 1);
	/* The cursor moved past it (the batch is applied, the record parked). */
	assert_true(repl_node_state(n, 0)->cursor == r1.seq);
	/* Link 0 tries the parked record at once (new ones parked): its peer
	 * still lacks the chunk, so it stays parked and the try backs off. */
	assert_int_equal(a0.kind, ACT_FETCH);
	copy_trees(me, s1, &a0, chunk);
	assert_int_equal(repl_node_fetched(n, 0, 100, &a0, &out), 0);
	assert_true(out.resolved);
	assert_int_equal(out.written, 0);
	assert_int_equal(a0.kind, ACT_PULL);
	assert_int_equal(a0.wait_ms, REPL_PARKED_WAIT_MS);
	/* Link 1 connects; after its first PULL it tries them through s2. */
	connect_link(n, 1, P2, &a1);
	batch b1;
	answer(s2, &a1, &b1);
	assert_int_equal(repl_node_pulled(n, 1, b1.recs, b1.n, &b1.pulled, 200, &a1, &out), 0);
	/* g's tree is f's: the part s1 sent is here; the rest comes now. */
	copy_trees(me, s2, &a1, NULL);
	assert_int_equal(repl_node_fetched(n, 1, 200, &a1, &out), 0);
	/* g, and then in the same turn the parked f, whose tree is complete
	 * now: nothing more to fetch. */
	assert_int_equal(out.written, 2);
	assert_true(out.resolved);
	assert_int_equal(repl_node_view(n).parked, 0);
	assert_int_equal(a1.kind, ACT_PULL);
	record r;
	assert_int_equal(store_lookup(me, "f", &r), 0);
	assert_memory_equal(r.root, r1.root, HASH_LEN);
	repl_node_free(n);
	store_close(s1);
	store_close(s2);
	store_close(me);
}

/* A batch out of order is refused: the link goes down, nothing applied. */
static void test_refused_batch(void **state)
{
	(void)state;
	store *s1 = fx_open("refuse_s1", P1), *me = fx_open("refuse_me", 0x99);
	uint8_t c[HASH_LEN];
	fx_commit(s1, "a", "one", c);
	fx_commit(s1, "b", "two", c);
	repl_node *n = repl_node_new(me, 1);
	repl_act a0;
	connect_link(n, 0, P1, &a0);
	batch b0;
	answer(s1, &a0, &b0);
	assert_int_equal(b0.n, 2);
	record t = b0.recs[0];
	b0.recs[0] = b0.recs[1];
	b0.recs[1] = t;
	assert_int_equal(repl_node_pulled(n, 0, b0.recs, b0.n, &b0.pulled, 0, &a0, NULL), SS_EPROTO);
	assert_true(a0.kind == ACT_SLEEP || a0.kind == ACT_CONNECT);
	assert_false(repl_node_state(n, 0)->connected);
	uint64_t idx, cur;
	assert_int_equal(store_cursor_get(me, P1, &idx, &cur), 0);
	assert_int_equal(cur, 0);
	repl_node_free(n);
	store_close(s1);
	store_close(me);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_fetch_at_a_time),
		cmocka_unit_test(test_failed_fetch_passes_turn),
		cmocka_unit_test(test_parked_record_comes_through_another_link),
		cmocka_unit_test(test_refused_batch),
	};
	return fx_run("node", tests, sizeof tests / sizeof *tests);
}
