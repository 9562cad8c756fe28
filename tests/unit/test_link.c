/* test_link.c — a replication link's schedule (core/link.c), both ends of
 * one PULL over real stores, and the acknowledgement table (core/acks.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/acks.h"
#include "core/link.h"
#include "core/repl.h"
#include "store/store.h"
#include "store_fixture.h"

static const repl_view calm = {0};

static void assert_step(repl_link *l, const repl_view *v, int64_t now, repl_link_act act, uint32_t wait)
{
	repl_link_step s = repl_link_next(l, v, now);
	assert_int_equal(s.act, act);
	assert_int_equal(s.wait_ms, wait);
}

/* ---- the schedule ---- */

static void test_connect_backoff_doubles_to_a_second(void **state)
{
	(void)state;
	repl_link l;
	repl_link_init(&l);
	assert_step(&l, &calm, 0, LINK_CONNECT, 0);
	int64_t now = 0;
	uint32_t want[] = {100, 200, 400, 800, 1000, 1000};
	for (unsigned i = 0; i < 6; i++) {
		repl_link_failed(&l, now);
		assert_step(&l, &calm, now, LINK_SLEEP, want[i]);
		assert_step(&l, &calm, now + want[i] - 1, LINK_SLEEP, 1);
		now += want[i];
		assert_step(&l, &calm, now, LINK_CONNECT, 0);
	}
	/* A link that pulled before it broke starts again from 0.1 s. */
	repl_link_connected(&l);
	repl_link_pulled(&l);
	repl_link_failed(&l, now);
	assert_step(&l, &calm, now, LINK_SLEEP, 100);
	/* One that connected but never pulled keeps backing off. */
	repl_link_connected(&l);
	repl_link_failed(&l, now);
	assert_step(&l, &calm, now, LINK_SLEEP, 200);
}

static void test_pull_hold(void **state)
{
	(void)state;
	repl_link l;
	repl_link_init(&l);
	repl_link_connected(&l);
	/* The first PULL of a connection is answered at once. */
	assert_step(&l, &calm, 0, LINK_PULL, 0);
	assert_step(&l, &calm, 0, LINK_PULL, 0);
	repl_link_pulled(&l);
	assert_step(&l, &calm, 0, LINK_PULL, REPL_WAIT_MS);
	/* While records are parked the hold is short (after the try). */
	repl_view parked = {.parked = 3, .parked_gen = 1};
	assert_step(&l, &parked, 0, LINK_PULL, REPL_PARKED_WAIT_MS);
	/* A new connection: not held again. */
	repl_link_failed(&l, 0);
	repl_link_connected(&l);
	assert_step(&l, &calm, 500, LINK_PULL, 0);
}

static void test_parked_tried_after_a_pull_with_backoff(void **state)
{
	(void)state;
	repl_link l;
	repl_link_init(&l);
	repl_link_connected(&l);
	repl_view v = {.parked = 2, .parked_gen = 1};
	assert_step(&l, &v, 0, LINK_PULL, 0); /* nothing answered yet: no try */
	repl_link_pulled(&l);
	assert_step(&l, &v, 0, LINK_RESOLVE, 0);
	/* Once per answered PULL. */
	assert_step(&l, &v, 0, LINK_PULL, REPL_PARKED_WAIT_MS);
	/* A try that applied nothing waits 1 s, doubling to 30 s. */
	int64_t now = 0;
	uint32_t backoff[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
	for (unsigned i = 0; i < 7; i++) {
		repl_link_resolved(&l, 0, now);
		repl_link_pulled(&l);
		assert_step(&l, &v, now + backoff[i] - 1, LINK_PULL, REPL_PARKED_WAIT_MS);
		repl_link_pulled(&l);
		now += backoff[i];
		assert_step(&l, &v, now, LINK_RESOLVE, 0);
	}
	/* New records parked (the generation moved): tried at once. */
	repl_link_resolved(&l, 0, now);
	repl_link_pulled(&l);
	v.parked_gen++;
	assert_step(&l, &v, now, LINK_RESOLVE, 0);
	/* A try that applied some: the next is due at once. */
	repl_link_resolved(&l, 1, now);
	repl_link_pulled(&l);
	assert_step(&l, &v, now, LINK_RESOLVE, 0);
	/* Nothing parked: nothing to try. */
	repl_link_pulled(&l);
	assert_step(&l, &calm, now, LINK_PULL, REPL_WAIT_MS);
}

static void test_reconnect_tries_parked_at_once(void **state)
{
	(void)state;
	repl_link l;
	repl_link_init(&l);
	repl_link_connected(&l);
	repl_view v = {.parked = 1, .parked_gen = 1};
	repl_link_pulled(&l);
	assert_step(&l, &v, 0, LINK_RESOLVE, 0);
	repl_link_resolved(&l, 0, 0);
	repl_link_pulled(&l);
	assert_step(&l, &v, 10, LINK_PULL, REPL_PARKED_WAIT_MS);
	/* The peer came back (perhaps repaired): worth a try at once. */
	repl_link_failed(&l, 10);
	repl_link_connected(&l);
	assert_step(&l, &v, 200, LINK_PULL, 0);
	repl_link_pulled(&l);
	assert_step(&l, &v, 200, LINK_RESOLVE, 0);
}

/* A peer whose every try breaks the link (it sends bytes that do not
 * verify, say) is not asked again at each reconnect: the try backs off. */
static void test_try_that_breaks_the_link_backs_off(void **state)
{
	(void)state;
	repl_link l;
	repl_link_init(&l);
	repl_link_connected(&l);
	repl_view v = {.parked = 1, .parked_gen = 1};
	int64_t now = 0;
	uint32_t backoff[] = {1000, 2000, 4000};
	for (unsigned i = 0; i < 3; i++) {
		repl_link_pulled(&l);
		assert_step(&l, &v, now, LINK_RESOLVE, 0);
		repl_link_failed(&l, now);
		now += 100;
		assert_step(&l, &v, now, LINK_CONNECT, 0);
		repl_link_connected(&l);
		assert_step(&l, &v, now, LINK_PULL, 0);
		repl_link_pulled(&l);
		assert_step(&l, &v, now, LINK_PULL, REPL_PARKED_WAIT_MS);
		now += backoff[i] - 100;
	}
	/* A reconnect after a break elsewhere tries at once again. */
	repl_link_pulled(&l);
	assert_step(&l, &v, now, LINK_RESOLVE, 0);
	repl_link_resolved(&l, 0, now);
	repl_link_failed(&l, now);
	repl_link_connected(&l);
	repl_link_pulled(&l);
	assert_step(&l, &v, now + 100, LINK_RESOLVE, 0);
}

/* ---- the acknowledgement table ---- */

static void test_acks_copies_count_members(void **state)
{
	(void)state;
	repl_acks t = {0};
	assert_int_equal(repl_acks_copies(&t, 1), 1); /* this server */
	assert_true(repl_acks_seen(&t, 0xa, 10, true));
	assert_true(repl_acks_seen(&t, 0xb, 5, true));
	assert_true(repl_acks_seen(&t, 0xc, 99, false)); /* not one of our --peer servers */
	assert_int_equal(repl_acks_copies(&t, 5), 3);
	assert_int_equal(repl_acks_copies(&t, 6), 2);
	assert_int_equal(repl_acks_copies(&t, 11), 1);
	/* The latest word, not the highest: a peer restored from an older
	 * copy holds less than it said. */
	assert_true(repl_acks_seen(&t, 0xa, 3, true));
	assert_int_equal(repl_acks_copies(&t, 5), 2);
	assert_int_equal(repl_acks_find(&t, 0xa)->acked, 3);
	assert_null(repl_acks_find(&t, 0xd));
}

static void test_acks_full_table_reuses(void **state)
{
	(void)state;
	repl_acks t = {0};
	for (uint64_t i = 0; i < REPL_ACKS_MAX; i++) {
		repl_ack *a = repl_acks_get(&t, 100 + i, i != 7);
		assert_non_null(a);
		a->live = i != 7 && i != 9; /* 7: no session, not a member; 9: no session, a member */
	}
	/* A non-member without a session goes first, then a member without. */
	repl_ack *a = repl_acks_get(&t, 1, true);
	assert_non_null(a);
	assert_null(repl_acks_find(&t, 107));
	a->live = 1;
	assert_non_null(repl_acks_get(&t, 2, true));
	assert_null(repl_acks_find(&t, 109));
	repl_acks_find(&t, 2)->live = 1;
	/* Every entry has a session open: no room. */
	assert_null(repl_acks_get(&t, 3, true));
	assert_false(repl_acks_seen(&t, 3, 1, true));
}

/* ---- one PULL over real stores ---- */

static uint64_t fp_at(store *st, uint64_t seq)
{
	record at;
	assert_int_equal(store_version_at(st, seq, &at), 0);
	return store_rec_fp(&at);
}

static void test_serve_pull(void **state)
{
	(void)state;
	store *st = fx_open("serve", 0x2222);
	record a = fx_commit(st, "a", "alpha", NULL), b = fx_commit(st, "b", "beta", NULL);
	uint64_t idx = store_index_id(st);
	repl_pull_plan p;

	/* A puller new to us (another index id, or none): everything, no ack. */
	repl_pull_req rq = {.index_id = 0, .after = 0};
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.index_id == idx && p.after == 0 && !p.acks && !p.regressed && p.head == b.seq);
	rq = (repl_pull_req){.index_id = idx + 1, .after = 5, .acked = 5};
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.after == 0 && !p.acks && !p.regressed);

	/* Over our index, at a record it holds: acknowledges what it applied,
	 * never past its cursor. */
	rq = (repl_pull_req){.index_id = idx, .after = a.seq, .acked = a.seq, .fp = fp_at(st, a.seq)};
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.after == a.seq && p.acks && p.acked == a.seq && !p.regressed);
	rq.acked = a.seq - 1; /* something parked */
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.acks && p.acked == a.seq - 1);
	rq.acked = b.seq; /* more than its cursor says: capped */
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.acks && p.acked == a.seq);

	/* At another record than ours there: we were restored from an older
	 * copy.  A new sequence space, no acknowledgement. */
	rq = (repl_pull_req){.index_id = idx, .after = a.seq, .acked = a.seq, .fp = fp_at(st, b.seq)};
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.regressed && !p.acks && p.after == 0 && p.index_id != idx);
	assert_true(store_index_id(st) == p.index_id);

	/* Past our head: the same. */
	uint64_t idx2 = p.index_id;
	rq = (repl_pull_req){.index_id = idx2, .after = b.seq + 10, .acked = b.seq + 10};
	assert_int_equal(repl_serve_pull(st, &rq, &p), 0);
	assert_true(p.regressed && !p.acks && p.after == 0 && p.index_id != idx2);
	store_close(st);
}

static void test_pull_request_from_cursor(void **state)
{
	(void)state;
	store *src = fx_open("req_src", 0x3333), *dst = fx_open("req_dst", 0x4444);
	repl_pull_req rq;
	assert_int_equal(repl_pull_request(dst, 0x3333, &rq), 0);
	assert_true(rq.index_id == 0 && rq.after == 0 && rq.acked == 0 && rq.fp == 0);
	record r = fx_commit(src, "x", "xx", NULL);
	record recs[1];
	assert_int_equal(store_version_at(src, r.seq, &recs[0]), 0);
	fx_tree(dst, "xx", recs[0].root, &recs[0].size, NULL);
	assert_int_equal(store_apply_remote(dst, recs, 1, 0x3333, store_index_id(src), r.seq, repl_decide, NULL, NULL),
			 0);
	assert_int_equal(repl_pull_request(dst, 0x3333, &rq), 0);
	assert_true(rq.index_id == store_index_id(src) && rq.after == r.seq && rq.acked == r.seq);
	assert_true(rq.fp == fp_at(src, r.seq) && rq.fp != 0);
	/* The source serving it: an acknowledgement of r. */
	repl_pull_plan p;
	assert_int_equal(repl_serve_pull(src, &rq, &p), 0);
	assert_true(p.acks && p.acked == r.seq && !p.regressed);
	store_close(src);
	store_close(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_backoff_doubles_to_a_second),
		cmocka_unit_test(test_pull_hold),
		cmocka_unit_test(test_parked_tried_after_a_pull_with_backoff),
		cmocka_unit_test(test_reconnect_tries_parked_at_once),
		cmocka_unit_test(test_try_that_breaks_the_link_backs_off),
		cmocka_unit_test(test_acks_copies_count_members),
		cmocka_unit_test(test_acks_full_table_reuses),
		cmocka_unit_test(test_serve_pull),
		cmocka_unit_test(test_pull_request_from_cursor),
	};
	return fx_run("link", tests, sizeof tests / sizeof *tests);
}
