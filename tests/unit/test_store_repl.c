/* test_store_repl.c — the store's replication support: index ids, the
 * change log by sequence, applying received records as they are, peer
 * cursors, and applying a pulled batch with a decide callback. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "core/repl.h"
#include "core/resolve.h"
#include "store/store.h"
#include "store_fixture.h"

static store *open_store(const char *name) { return fx_open(name, 0x1111); }

/* Store one file's tree (a single data chunk under a level-1 node) and
 * return its root; size set to the content length. */
static void put_tree(store *st, const char *content, uint8_t root[HASH_LEN], uint64_t *size)
{
	fx_tree(st, content, root, size, NULL);
}

/* A level-1 node over TREE_MAX_FANOUT small chunks: a commit's walk of it
 * takes the database lock once per chunk, room for other writers between. */
static void put_wide_tree(store *st, uint8_t root[HASH_LEN], uint64_t *size)
{
	tree_entry e[TREE_MAX_FANOUT];
	*size = 0;
	for (unsigned i = 0; i < TREE_MAX_FANOUT; i++) {
		char content[16];
		int n = snprintf(content, sizeof content, "piece %u", i);
		sha256(content, (size_t)n, e[i].id);
		e[i].size = (uint64_t)n;
		*size += e[i].size;
		assert_int_equal(store_put_chunk(st, e[i].id, content, (size_t)n), 0);
	}
	uint8_t node[TREE_NODE_MAX];
	size_t len = tree_node_encode(1, e, TREE_MAX_FANOUT, node);
	sha256(node, len, root);
	assert_int_equal(store_put_node(st, root, node, len), 0);
}

static record mkrec(const char *path, uint64_t origin, uint64_t counter)
{
	record r;
	memset(&r, 0, sizeof r);
	snprintf(r.path, sizeof r.path, "%s", path);
	r.mode = 0644;
	r.mtime_ns = 123;
	r.origin = origin;
	r.otime_ns = 456;
	r.vv.n = 1;
	r.vv.e[0] = (vv_entry){origin, counter};
	return r;
}

static void test_index_id_stable_and_distinct(void **state)
{
	(void)state;
	store *a = open_store("idA"), *b = open_store("idB");
	uint64_t ida = store_index_id(a), idb = store_index_id(b);
	assert_true(ida != 0);
	assert_true(ida != idb);
	store_close(a);
	a = open_store("idA");
	assert_true(store_index_id(a) == ida);
	store_close(a);
	store_close(b);
}

typedef struct collect {
	uint64_t seqs[64];
	char paths[64][32];
	unsigned n;
} collect;

static int collect_fn(void *ctx, const record *r)
{
	collect *c = ctx;
	c->seqs[c->n] = r->seq;
	snprintf(c->paths[c->n], sizeof c->paths[0], "%.31s", r->path);
	c->n++;
	return 0;
}

static void test_since_lists_in_sequence_order(void **state)
{
	(void)state;
	store *st = open_store("since");
	uint8_t root[HASH_LEN];
	uint64_t size;
	put_tree(st, "hello", root, &size);
	for (int i = 0; i < 5; i++) {
		record r = mkrec("f0", 0, 0);
		r.path[1] = (char)('0' + i);
		memcpy(r.root, root, HASH_LEN);
		r.size = size;
		r.vv.n = 0;
		assert_int_equal(store_commit(st, &r), 0);
	}
	collect c = {0};
	assert_int_equal(store_since(st, 0, 100, collect_fn, &c), 0);
	assert_int_equal(c.n, 5);
	for (unsigned i = 1; i < c.n; i++)
		assert_true(c.seqs[i] > c.seqs[i - 1]);
	collect d = {0};
	assert_int_equal(store_since(st, c.seqs[2], 100, collect_fn, &d), 0);
	assert_int_equal(d.n, 2);
	assert_string_equal(d.paths[0], "f3");
	collect e = {0};
	assert_int_equal(store_since(st, 0, 3, collect_fn, &e), 0);
	assert_int_equal(e.n, 3);
	store_close(st);
}

static void test_apply_keeps_vector_and_origin(void **state)
{
	(void)state;
	store *st = open_store("apply");
	record r = mkrec("docs/a.txt", 0x2222, 7);
	put_tree(st, "remote content", r.root, &r.size);
	assert_int_equal(store_apply(st, &r, 1), 0);
	assert_true(r.seq > 0);
	record got;
	assert_int_equal(store_lookup(st, "docs/a.txt", &got), 0);
	assert_int_equal(got.vv.n, 1);
	assert_true(got.vv.e[0].node == 0x2222);
	assert_int_equal(got.vv.e[0].counter, 7);
	assert_true(got.origin == 0x2222);
	assert_int_equal(got.otime_ns, 456);
	assert_int_equal(got.seq, r.seq);
	/* A tombstone applies without a tree. */
	record del = mkrec("docs/a.txt", 0x2222, 8);
	del.deleted = true;
	assert_int_equal(store_apply(st, &del, 1), 0);
	assert_int_equal(store_lookup(st, "docs/a.txt", &got), 0);
	assert_true(got.deleted);
	/* Applied records are in the change log, so they travel on. */
	collect c = {0};
	assert_int_equal(store_since(st, 0, 100, collect_fn, &c), 0);
	assert_int_equal(c.n, 2);
	store_close(st);
}

static void test_apply_is_all_or_nothing(void **state)
{
	(void)state;
	store *st = open_store("atomic");
	record recs[2] = {mkrec("good", 0x3333, 1), mkrec("bad", 0x3333, 2)};
	put_tree(st, "present", recs[0].root, &recs[0].size);
	memset(recs[1].root, 0xab, HASH_LEN); /* a tree that was never stored */
	recs[1].size = 10;
	assert_int_equal(store_apply(st, recs, 2), SS_ENOENT);
	record got;
	assert_int_equal(store_lookup(st, "good", &got), SS_ENOENT);
	assert_int_equal(store_lookup(st, "bad", &got), SS_ENOENT);
	/* A size that disagrees with the tree is refused too. */
	recs[0].size++;
	assert_int_not_equal(store_apply(st, recs, 1), 0);
	/* And an empty version vector (a record from nowhere). */
	recs[0].size--;
	recs[0].vv.n = 0;
	assert_int_equal(store_apply(st, recs, 1), SS_EINVAL);
	store_close(st);
}

/* ---- cursors and store_apply_remote ---- */

#define PEER 0x2222ull
#define PEER_INDEX 0x8000000000000001ull /* top bit set: u64 through int64 */

static void assert_cursor(store *st, uint64_t peer, uint64_t index_id, uint64_t seq)
{
	uint64_t i = 1, s = 1;
	assert_int_equal(store_cursor_get(st, peer, &i, &s), 0);
	assert_true(i == index_id);
	assert_true(s == seq);
}

static uint64_t head_seq(store *st)
{
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	return ss.head_seq;
}

static void test_cursor_fresh_is_zero(void **state)
{
	(void)state;
	store *st = open_store("cur0");
	assert_cursor(st, PEER, 0, 0);
	store_close(st);
}

static void test_cursor_roundtrip_survives_reopen(void **state)
{
	(void)state;
	store *st = open_store("cur1");
	assert_int_equal(store_cursor_set(st, PEER, PEER_INDEX, 42), 0);
	assert_int_equal(store_cursor_set(st, 0x3333, 7, UINT64_MAX), 0);
	assert_cursor(st, PEER, PEER_INDEX, 42);
	store_close(st);
	st = open_store("cur1");
	assert_cursor(st, PEER, PEER_INDEX, 42);
	assert_cursor(st, 0x3333, 7, UINT64_MAX);
	/* A new index id from the peer: start again from 0. */
	assert_int_equal(store_cursor_set(st, PEER, 99, 0), 0);
	assert_cursor(st, PEER, 99, 0);
	assert_cursor(st, 0x3333, 7, UINT64_MAX);
	/* Peer 0 names no node. */
	assert_int_equal(store_cursor_set(st, 0, 1, 1), SS_EINVAL);
	store_close(st);
}

/* A data directory from before the cursors table gains it at open. */
static void test_cursor_table_added_to_old_directory(void **state)
{
	(void)state;
	store *st = open_store("cur_old");
	store_close(st);
	char path[300];
	snprintf(path, sizeof path, "%s/cur_old/meta.db", fx_dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP TABLE cursors", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	st = open_store("cur_old");
	assert_cursor(st, PEER, 0, 0);
	assert_int_equal(store_cursor_set(st, PEER, PEER_INDEX, 3), 0);
	assert_cursor(st, PEER, PEER_INDEX, 3);
	store_close(st);
}

/* A format-1 directory (no pending table) is upgraded in place: the table
 * is added and FORMAT says 2, so an older syncstore refuses it from then on
 * instead of ignoring the records parked there. */
static void test_format_1_upgraded(void **state)
{
	(void)state;
	store *st = open_store("fmt1");
	store_close(st);
	char path[300];
	snprintf(path, sizeof path, "%s/fmt1/meta.db", fx_dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP TABLE pending; ALTER TABLE cursors DROP COLUMN fp", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	snprintf(path, sizeof path, "%s/fmt1/FORMAT", fx_dir);
	assert_int_equal(write_file_atomic(path, "syncstore-store 1\n", 18, 0644), 0);
	st = open_store("fmt1");
	uint64_t n = 99;
	assert_int_equal(store_pending_count(st, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_cursor_set(st, PEER, PEER_INDEX, 3), 0); /* cursors gained fp */
	assert_int_equal(store_cursor_fp(st, PEER, &n), 0);
	assert_int_equal(n, 0);
	store_close(st);
	buf b;
	buf_init(&b, 1 << 16);
	assert_int_equal(read_file_small(path, &b), 0);
	assert_int_equal(b.len, 18);
	assert_memory_equal(b.p, "syncstore-store 2\n", 18);
	buf_free(&b);
}

/* Remembers what each call saw; ctx of the decide functions below. */
typedef struct decide_log {
	unsigned calls;
	bool had_local[8];
	record local[8];
	unsigned fail_at; /* 1-based call that fails with SS_EPROTO; 0 never */
	record extra;     /* decide_conflict: the conflict copy */
} decide_log;

static void log_call(decide_log *d, const record *local)
{
	if (d->calls < 8) {
		d->had_local[d->calls] = local != NULL;
		if (local)
			d->local[d->calls] = *local;
	}
	d->calls++;
}

static int decide_take(void *ctx, const record *local, const record *remote, record out[2], unsigned *n)
{
	decide_log *d = ctx;
	log_call(d, local);
	if (d->fail_at == d->calls)
		return ss_fail(SS_EPROTO, "planted failure");
	out[0] = *remote;
	*n = 1;
	return 0;
}

/* The local record stands, returned as it is (a KEEP written out). */
static int decide_local(void *ctx, const record *local, const record *remote, record out[2], unsigned *n)
{
	log_call(ctx, local);
	out[0] = local ? *local : *remote;
	*n = 1;
	return 0;
}

static int decide_conflict(void *ctx, const record *local, const record *remote, record out[2], unsigned *n)
{
	decide_log *d = ctx;
	log_call(d, local);
	out[0] = *remote;
	out[1] = d->extra;
	*n = 2;
	return 0;
}

/* A log found gone back (a restored directory) starts a new sequence space:
 * a new index id, durable; the version clock moved past the lost part;
 * a second detection of the same regression changes nothing. */
static void test_log_regressed(void **state)
{
	(void)state;
	store *st = open_store("regressed");
	uint64_t old = store_index_id(st);
	record r = mkrec("a", 0, 0);
	put_tree(st, "aaaa", r.root, &r.size);
	r.vv.n = 0;
	assert_int_equal(store_commit(st, &r), 0);
	assert_int_equal(r.vv.n, 1);
	uint64_t c0 = r.vv.e[0].counter;
	assert_int_equal(store_log_regressed(st, old, 50), 0);
	uint64_t now = store_index_id(st);
	assert_true(now != old && now != 0);
	assert_int_equal(store_log_regressed(st, old, 50), 0); /* seen already: no-op */
	assert_true(store_index_id(st) == now);
	store_close(st);
	st = open_store("regressed");
	assert_true(store_index_id(st) == now);
	record r2 = mkrec("a", 0, 0);
	r2.vv.n = 0;
	memcpy(r2.root, r.root, HASH_LEN);
	r2.size = r.size;
	assert_int_equal(store_commit(st, &r2), 0);
	assert_true(r2.vv.e[0].counter > c0 + 50); /* no counter of the lost log again */
	store_close(st);
}

/* The cursor remembers the fingerprint of the batch's last record; the
 * source's version at that seq has the same fingerprint. */
static void test_cursor_fp(void **state)
{
	(void)state;
	store *src = open_store("fp_src"), *dst = open_store("fp_dst");
	record recs[2] = {mkrec("x", 0, 0), mkrec("y", 0, 0)};
	for (int i = 0; i < 2; i++) {
		put_tree(src, i ? "yy" : "x", recs[i].root, &recs[i].size);
		put_tree(dst, i ? "yy" : "x", recs[i].root, &recs[i].size);
		recs[i].vv.n = 0;
		assert_int_equal(store_commit(src, &recs[i]), 0);
	}
	uint64_t fp = 99;
	assert_int_equal(store_cursor_fp(dst, PEER, &fp), 0);
	assert_int_equal(fp, 0);
	decide_log d = {0};
	assert_int_equal(store_apply_remote(dst, recs, 2, PEER, PEER_INDEX, recs[1].seq, decide_take, &d, NULL), 0);
	assert_int_equal(store_cursor_fp(dst, PEER, &fp), 0);
	record at;
	assert_int_equal(store_version_at(src, recs[1].seq, &at), 0);
	assert_true(fp == store_rec_fp(&at) && fp != 0);
	assert_int_equal(store_version_at(src, recs[0].seq, &at), 0);
	assert_true(fp != store_rec_fp(&at));
	assert_int_equal(store_version_at(src, 999, &at), SS_ENOENT);
	/* Setting the cursor alone (a new index id) forgets it. */
	assert_int_equal(store_cursor_set(dst, PEER, PEER_INDEX + 1, 0), 0);
	assert_int_equal(store_cursor_fp(dst, PEER, &fp), 0);
	assert_int_equal(fp, 0);
	store_close(src);
	store_close(dst);
}

static void test_apply_remote_takes_batch(void **state)
{
	(void)state;
	store *st = open_store("ar_take");
	record recs[3] = {mkrec("r/a", PEER, 1), mkrec("r/b", PEER, 2), mkrec("r/c", PEER, 3)};
	put_tree(st, "aaa", recs[0].root, &recs[0].size);
	put_tree(st, "bbbb", recs[1].root, &recs[1].size);
	put_tree(st, "ccccc", recs[2].root, &recs[2].size);
	for (int i = 0; i < 3; i++)
		recs[i].seq = 10 + (uint64_t)i; /* the peer's seqs: not kept */
	decide_log d = {0};
	store_applied ap = {99, 99};
	assert_int_equal(store_apply_remote(st, recs, 3, PEER, PEER_INDEX, 12, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 3);
	assert_int_equal(d.calls, 3);
	for (int i = 0; i < 3; i++)
		assert_false(d.had_local[i]);
	assert_cursor(st, PEER, PEER_INDEX, 12);
	record got;
	assert_int_equal(store_lookup(st, "r/b", &got), 0);
	assert_memory_equal(got.root, recs[1].root, HASH_LEN);
	assert_int_equal(got.size, 4);
	assert_true(got.origin == PEER);
	assert_int_equal(got.otime_ns, 456);
	assert_int_equal(got.vv.n, 1);
	assert_int_equal(got.vv.e[0].counter, 2);
	collect c = {0};
	assert_int_equal(store_since(st, 0, 100, collect_fn, &c), 0);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.paths[2], "r/c");
	store_close(st);
	/* Durable together. */
	st = open_store("ar_take");
	assert_cursor(st, PEER, PEER_INDEX, 12);
	assert_int_equal(store_lookup(st, "r/c", &got), 0);
	store_close(st);
}

/* The root of put_tree(content) without storing anything. */
static void tree_of(const char *content, uint8_t root[HASH_LEN], uint64_t *size)
{
	tree_entry e;
	size_t n = strlen(content);
	sha256(content, n, e.id);
	e.size = n;
	uint8_t node[TREE_NODE_MAX];
	size_t len = tree_node_encode(1, &e, 1, node);
	sha256(node, len, root);
	*size = n;
}

static uint64_t pending_count(store *st)
{
	uint64_t n = 99;
	assert_int_equal(store_pending_count(st, &n), 0);
	return n;
}

static uint64_t acked(store *st)
{
	uint64_t a = 99;
	assert_int_equal(store_cursor_acked(st, PEER, PEER_INDEX, &a), 0);
	return a;
}

static void test_apply_remote_parks_missing_tree(void **state)
{
	(void)state;
	store *st = open_store("ar_missing");
	assert_int_equal(store_cursor_set(st, PEER, PEER_INDEX, 5), 0);
	record recs[3] = {mkrec("ok1", PEER, 1), mkrec("hole", PEER, 2), mkrec("ok2", PEER, 3)};
	put_tree(st, "one", recs[0].root, &recs[0].size);
	tree_of("not here yet", recs[1].root, &recs[1].size);
	put_tree(st, "two", recs[2].root, &recs[2].size);
	for (int i = 0; i < 3; i++)
		recs[i].seq = 6 + (uint64_t)i;
	decide_log d = {0};
	store_applied ap = {99, 99};
	assert_int_equal(store_apply_remote(st, recs, 3, PEER, PEER_INDEX, 8, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 2);
	assert_int_equal(ap.parked, 1);
	record got;
	assert_int_equal(store_lookup(st, "ok1", &got), 0);
	assert_int_equal(store_lookup(st, "ok2", &got), 0);
	assert_int_equal(store_lookup(st, "hole", &got), SS_ENOENT);
	/* The cursor moves past the parked record; the acknowledgement does
	 * not: it stops below the oldest record still parked. */
	assert_cursor(st, PEER, PEER_INDEX, 8);
	assert_int_equal(acked(st), 6);
	uint64_t other = 99;
	assert_int_equal(store_cursor_acked(st, PEER, PEER_INDEX + 1, &other), 0);
	assert_int_equal(other, 0); /* a cursor over another index acknowledges nothing */
	store_close(st);

	/* Durable with the cursor. */
	st = open_store("ar_missing");
	assert_int_equal(pending_count(st), 1);
	assert_int_equal(acked(st), 6);
	store_pending p[4];
	unsigned n = 0;
	assert_int_equal(store_pending_list(st, 0, p, 4, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(p[0].rec.path, "hole");
	assert_true(p[0].peer == PEER && p[0].index_id == PEER_INDEX && p[0].peer_seq == 7);
	assert_memory_equal(p[0].rec.root, recs[1].root, HASH_LEN);
	assert_int_equal(p[0].rec.vv.n, 1);

	/* Still no tree: it stays parked. */
	assert_int_equal(store_apply_pending(st, p, n, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_int_equal(ap.parked, 1);
	assert_int_equal(pending_count(st), 1);
	assert_int_equal(acked(st), 6);
	/* Its tree arrives (any server may have sent it): applied, and the
	 * acknowledgement catches up with the cursor. */
	assert_int_equal(store_pending_list(st, 0, p, 4, &n), 0);
	assert_int_equal(n, 1);
	uint8_t root[HASH_LEN];
	uint64_t size;
	put_tree(st, "not here yet", root, &size);
	assert_int_equal(store_apply_pending(st, p, n, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 1);
	assert_int_equal(ap.parked, 0);
	assert_int_equal(pending_count(st), 0);
	assert_int_equal(acked(st), 8);
	assert_int_equal(store_lookup(st, "hole", &got), 0);
	assert_memory_equal(got.root, recs[1].root, HASH_LEN);
	/* A stale list (rows already taken) changes nothing. */
	uint64_t head = head_seq(st);
	assert_int_equal(store_apply_pending(st, p, n, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_true(head_seq(st) == head);

	/* A size its tree does not hold is refused, naming the path. */
	recs[1] = recs[0];
	recs[1].size++;
	snprintf(recs[1].path, sizeof recs[1].path, "short");
	assert_int_equal(store_apply_remote(st, recs, 2, PEER, PEER_INDEX, 10, decide_take, &d, NULL), SS_EINVAL);
	assert_non_null(strstr(ss_errmsg(SS_EINVAL), "short"));
	assert_cursor(st, PEER, PEER_INDEX, 8);
	store_close(st);
}

/* A tombstone for a path held here only as a parked record is decided
 * against that record and written (not skipped as one for a path never
 * held): else the acknowledgement would pass both while nothing is stored,
 * and the parked record would come back once its tree arrived. */
static void test_tombstone_over_parked_record_is_written(void **state)
{
	(void)state;
	store *st = open_store("park_tomb");
	const uint64_t S = 0x2222, Q = 0x3333;
	record r = mkrec("p", S, 1);
	tree_of("never here", r.root, &r.size);
	r.seq = 1;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &r, 1, S, 70, 1, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.parked, 1);
	record t = mkrec("p", Q, 1);
	t.deleted = true;
	t.size = 0;
	t.vv.n = 2;
	t.vv.e[0] = (vv_entry){S, 1};
	t.vv.e[1] = (vv_entry){Q, 1};
	t.seq = 5;
	assert_int_equal(store_apply_remote(st, &t, 1, Q, 80, 5, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1);
	record got;
	assert_int_equal(store_lookup(st, "p", &got), 0);
	assert_true(got.deleted);
	assert_int_equal(pending_count(st), 0); /* superseded by the tombstone, which is stored */
	store_close(st);
}

/* A version parked in one batch whose content a conflict copy carries in the
 * next (the copy parked too, the winner applied): the winner supersedes the
 * version, but the copy takes over holding the acknowledgement back. */
static void test_superseded_parked_record_passes_ack_to_its_copy(void **state)
{
	(void)state;
	store *st = open_store("park_copy_ack");
	const uint64_t S = 0x2222, Q = 0x3333, IDX = 77;
	record v = mkrec("p", S, 1);
	tree_of("v content", v.root, &v.size);
	v.seq = 1;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &v, 1, S, IDX, 1, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.parked, 1);
	record b[2];
	b[0] = v;
	snprintf(b[0].path, sizeof b[0].path, "p.sync-conflict-x");
	b[1] = mkrec("p", Q, 1);
	b[1].vv.n = 2;
	b[1].vv.e[0] = (vv_entry){S, 1};
	b[1].vv.e[1] = (vv_entry){Q, 1};
	put_tree(st, "winner", b[1].root, &b[1].size);
	b[0].seq = b[1].seq = 2; /* repl_apply_batch files both under the batch's first seq */
	assert_int_equal(store_apply_remote(st, b, 2, S, IDX, 3, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1);
	assert_int_equal(ap.parked, 1);
	uint64_t a = 99;
	assert_int_equal(store_cursor_acked(st, S, IDX, &a), 0);
	assert_int_equal(a, 0); /* v (seq 1) is held by nobody here: not acknowledged */
	assert_int_equal(pending_count(st), 1);
	store_close(st);
}

/* A parked record that can never be applied (its tree does not hold its
 * size) is dropped; the others in the same call are applied. */
static void test_unappliable_parked_record_dropped(void **state)
{
	(void)state;
	store *st = open_store("park_bad");
	record b[2] = {mkrec("bad", 0x2222, 1), mkrec("good", 0x2222, 2)};
	tree_of("bad content", b[0].root, &b[0].size);
	b[0].size = 999;
	tree_of("good content", b[1].root, &b[1].size);
	b[0].seq = 1;
	b[1].seq = 2;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, b, 2, 0x2222, 70, 2, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.parked, 2);
	uint8_t root[HASH_LEN];
	uint64_t size;
	put_tree(st, "bad content", root, &size);
	put_tree(st, "good content", root, &size);
	store_pending p[4];
	unsigned n = 0;
	assert_int_equal(store_pending_list(st, 0, p, 4, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_apply_pending(st, p, n, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1);
	assert_int_equal(pending_count(st), 0);
	record got;
	assert_int_equal(store_lookup(st, "good", &got), 0);
	assert_int_equal(store_lookup(st, "bad", &got), SS_ENOENT);
	store_close(st);
}

/* What of a parked record's tree is here already (one server sent half of
 * it) survives garbage collection, so the rest from another server
 * completes it. */
static void test_gc_keeps_partial_tree_of_parked_record(void **state)
{
	(void)state;
	store *st = open_store("park_gc");
	const char *part[2] = {"first half of the file", "second half, from elsewhere"};
	tree_entry e[2];
	for (int i = 0; i < 2; i++) {
		e[i].size = strlen(part[i]);
		sha256(part[i], e[i].size, e[i].id);
	}
	uint8_t node[TREE_NODE_MAX], root[HASH_LEN];
	size_t len = tree_node_encode(1, e, 2, node);
	sha256(node, len, root);
	/* The node and the first chunk arrived; the second did not. */
	assert_int_equal(store_put_chunk(st, root, node, len), 0);
	assert_int_equal(store_put_chunk(st, e[0].id, part[0], e[0].size), 0);
	record r = mkrec("half", 0x2222, 1);
	memcpy(r.root, root, HASH_LEN);
	r.size = e[0].size + e[1].size;
	r.seq = 1;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &r, 1, 0x2222, 70, 1, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.parked, 1);
	assert_int_equal(store_gc(st, NULL), 0);
	assert_int_equal(store_has(st, root), 1);
	assert_int_equal(store_has(st, e[0].id), 1);
	/* The rest arrives: the record applies. */
	assert_int_equal(store_put_chunk(st, e[1].id, part[1], e[1].size), 0);
	assert_int_equal(store_put_node(st, root, node, len), 0);
	store_pending p[2];
	unsigned n = 0;
	assert_int_equal(store_pending_list(st, 0, p, 2, &n), 0);
	assert_int_equal(store_apply_pending(st, p, n, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1);
	assert_int_equal(pending_count(st), 0);
	store_close(st);
}

/* A wiped directory (its node id kept, its clock back at 0) learns its old
 * counters from every record it receives: its next write of a path must not
 * look older than the tombstone the cluster holds for it. */
static void test_clock_sees_records_not_written(void **state)
{
	(void)state;
	store *st = open_store("clock_keep"); /* node 0x1111, fresh */
	record t = mkrec("gone", 0x2222, 4);
	t.deleted = true;
	t.size = 0;
	t.vv.n = 2;
	t.vv.e[0] = (vv_entry){0x1111, 7}; /* our write #7, before the wipe */
	t.vv.e[1] = (vv_entry){0x2222, 4};
	t.seq = 1;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &t, 1, 0x2222, 70, 1, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1); /* a path never held here: the tombstone is kept all the same */
	record w = mkrec("gone", 0, 0);
	put_tree(st, "written again", w.root, &w.size);
	w.vv.n = 0;
	assert_int_equal(store_commit(st, &w), 0);
	assert_true(vv_get(&w.vv, 0x1111) > 7);
	resolution res;
	assert_int_equal(resolve(&w, &t, &res), 0);
	assert_int_not_equal(res.kind, RESOLVE_TAKE); /* the tombstone does not win over the new write */
	store_close(st);
}

/* A conflict derived late (the losing record applied long after its
 * partner, e.g. once parked) meets its copy path holding a newer version
 * already (the copy was edited since, elsewhere): the old copy must not
 * overwrite it — the copy is decided against its path like any record. */
static void test_late_conflict_copy_does_not_overwrite_newer_copy(void **state)
{
	(void)state;
	store *st = open_store("late_copy");
	record mine = mkrec("doc.txt", 0x1111, 1);
	mine.mtime_ns = 200; /* newer: it wins */
	put_tree(st, "mine", mine.root, &mine.size);
	record theirs = mkrec("doc.txt", 0x2222, 1);
	theirs.mtime_ns = 100;
	put_tree(st, "theirs", theirs.root, &theirs.size);
	record edited = theirs; /* the copy, edited on another server since */
	assert_int_equal(conflict_path(&theirs, edited.path, sizeof edited.path), 0);
	edited.vv.n = 2;
	edited.vv.e[1] = (vv_entry){0x3333, 1};
	put_tree(st, "the copy, edited", edited.root, &edited.size);
	record first[2] = {mine, edited};
	first[0].seq = 1;
	first[1].seq = 2;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, first, 2, 0x3333, 80, 2, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 2);
	theirs.seq = 1;
	assert_int_equal(store_apply_remote(st, &theirs, 1, 0x2222, 70, 1, repl_decide, NULL, &ap), 0);
	record got;
	assert_int_equal(store_lookup(st, edited.path, &got), 0);
	assert_memory_equal(got.root, edited.root, HASH_LEN); /* still the edited copy */
	assert_int_equal(got.vv.n, 2);
	assert_int_equal(store_lookup(st, "doc.txt", &got), 0);
	assert_memory_equal(got.root, mine.root, HASH_LEN);
	assert_int_equal(got.vv.n, 2); /* merged: the conflict was seen */
	store_close(st);
}

/* A data directory wiped and started again keeps its node id but not its
 * clock: its counters still come out above every one it issued before (they
 * follow the wall clock), so its writes do not look older than its old
 * ones. */
static void test_wiped_store_counters_stay_ahead(void **state)
{
	(void)state;
	store *st = open_store("wiped");
	record r = mkrec("p", 0, 0);
	put_tree(st, "before the wipe", r.root, &r.size);
	r.vv.n = 0;
	assert_int_equal(store_commit(st, &r), 0);
	uint64_t before = vv_get(&r.vv, 0x1111);
	store_close(st);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s/wiped", fx_dir);
	assert_int_equal(system(cmd), 0);
	st = open_store("wiped");
	record w = mkrec("p", 0, 0);
	put_tree(st, "after the wipe", w.root, &w.size);
	w.vv.n = 0;
	assert_int_equal(store_commit(st, &w), 0);
	assert_true(vv_get(&w.vv, 0x1111) > before);
	store_close(st);
}

/* A parked record whose tree is here but reads back corrupt (our disk's
 * fault, not the record's) stays parked, and keeps holding the
 * acknowledgement back. */
static void test_parked_record_kept_when_local_copy_corrupt(void **state)
{
	(void)state;
	store *st = open_store("park_rot");
	record r = mkrec("p", 0x2222, 1);
	const char *content = "content of p";
	tree_entry e;
	e.size = strlen(content);
	sha256(content, e.size, e.id);
	uint8_t node[TREE_NODE_MAX];
	size_t len = tree_node_encode(1, &e, 1, node);
	sha256(node, len, r.root);
	r.size = e.size;
	r.seq = 5;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &r, 1, 0x2222, 70, 5, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.parked, 1);
	assert_int_equal(store_put_chunk(st, e.id, content, e.size), 0);
	node[len - 1] ^= 1; /* the node's copy here is rotten */
	assert_int_equal(store_put_node(st, r.root, node, len), 0);
	store_pending p[2];
	unsigned n = 0;
	assert_int_equal(store_pending_list(st, 0, p, 2, &n), 0);
	assert_int_equal(store_apply_pending(st, p, n, repl_decide, NULL, &ap), 0);
	assert_int_equal(pending_count(st), 1);
	uint64_t a = 99;
	assert_int_equal(store_cursor_acked(st, 0x2222, 70, &a), 0);
	assert_int_equal(a, 4);
	store_close(st);
}

/* A tombstone that a parked record beats is held all the same: if the
 * parked record then goes with its log, the delete is still here. */
static void test_tombstone_beaten_by_parked_record_is_held(void **state)
{
	(void)state;
	store *st = open_store("park_tomb_keep");
	const uint64_t S = 0x2222, Q = 0x3333;
	record l = mkrec("x", S, 2);
	l.vv.n = 2;
	l.vv.e[1] = (vv_entry){Q, 1};
	tree_of("L content", l.root, &l.size);
	l.seq = 3;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &l, 1, S, 70, 3, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.parked, 1);
	record t = mkrec("x", Q, 1);
	t.deleted = true;
	t.size = 0;
	t.vv.n = 2;
	t.vv.e[0] = (vv_entry){S, 1};
	t.vv.e[1] = (vv_entry){Q, 1};
	t.seq = 9;
	assert_int_equal(store_apply_remote(st, &t, 1, Q, 80, 9, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1);
	assert_int_equal(store_cursor_set(st, S, 71, 0), 0); /* S's log is gone, and L with it */
	assert_int_equal(pending_count(st), 0);
	record got;
	assert_int_equal(store_lookup(st, "x", &got), 0);
	assert_true(got.deleted);
	store_close(st);
}

/* A superseded parked record whose content is parked under ANOTHER log (its
 * conflict copy came through another server) stays, holding its own log's
 * acknowledgement back. */
static void test_superseded_parked_record_stays_while_copy_parked_elsewhere(void **state)
{
	(void)state;
	store *st = open_store("park_copy_other_log");
	const uint64_t X = 0x2222, Y = 0x3333;
	record v = mkrec("p", X, 1);
	tree_of("v content", v.root, &v.size);
	v.seq = 1;
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &v, 1, X, 70, 1, repl_decide, NULL, &ap), 0);
	record b[2];
	b[0] = v;
	snprintf(b[0].path, sizeof b[0].path, "p.sync-conflict-x");
	b[1] = mkrec("p", Y, 1);
	b[1].vv.n = 2;
	b[1].vv.e[0] = (vv_entry){X, 1};
	b[1].vv.e[1] = (vv_entry){Y, 1};
	put_tree(st, "winner", b[1].root, &b[1].size);
	b[0].seq = b[1].seq = 4;
	assert_int_equal(store_apply_remote(st, b, 2, Y, 80, 5, repl_decide, NULL, &ap), 0);
	assert_int_equal(ap.written, 1);
	uint64_t a = 99;
	assert_int_equal(store_cursor_acked(st, X, 70, &a), 0);
	assert_int_equal(a, 0); /* v is not held here */
	assert_int_equal(pending_count(st), 2);
	store_close(st);
}

/* Conflict: the loser's copy first, then the winner (repl_decide's order). */
static int decide_copy_first(void *ctx, const record *local, const record *remote, record out[2], unsigned *n)
{
	decide_log *d = ctx;
	log_call(d, local);
	out[0] = d->extra;
	out[1] = *remote;
	*n = 2;
	return 0;
}

static void test_apply_remote_park_undoes_conflict_copy(void **state)
{
	(void)state;
	store *st = open_store("ar_park_copy");
	record mine = mkrec("doc.txt", 0, 0);
	put_tree(st, "mine", mine.root, &mine.size);
	mine.vv.n = 0;
	assert_int_equal(store_commit(st, &mine), 0);
	store_stats before;
	assert_int_equal(store_stats_get(st, &before), 0);
	record theirs = mkrec("doc.txt", PEER, 1);
	tree_of("theirs, not here", theirs.root, &theirs.size);
	theirs.seq = 1;
	decide_log d = {.extra = mine};
	snprintf(d.extra.path, sizeof d.extra.path, "doc.sync-conflict.txt");
	store_applied ap;
	assert_int_equal(store_apply_remote(st, &theirs, 1, PEER, PEER_INDEX, 1, decide_copy_first, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_int_equal(ap.parked, 1);
	/* The copy written before the winner's tree check failed is undone,
	 * in the database and in the namespace sums. */
	record got;
	assert_int_equal(store_lookup(st, "doc.sync-conflict.txt", &got), SS_ENOENT);
	store_stats after;
	assert_int_equal(store_stats_get(st, &after), 0);
	assert_memory_equal(after.digest, before.digest, HASH_LEN);
	assert_true(after.files == before.files && after.head_seq == before.head_seq);
	assert_cursor(st, PEER, PEER_INDEX, 1);
	assert_int_equal(acked(st), 0);
	store_close(st);
}

static void test_apply_remote_sees_earlier_in_batch(void **state)
{
	(void)state;
	store *st = open_store("ar_order");
	record recs[2] = {mkrec("same", PEER, 1), mkrec("same", PEER, 2)};
	put_tree(st, "first", recs[0].root, &recs[0].size);
	put_tree(st, "second", recs[1].root, &recs[1].size);
	decide_log d = {0};
	store_applied ap = {0};
	assert_int_equal(store_apply_remote(st, recs, 2, PEER, PEER_INDEX, 2, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 2);
	assert_int_equal(d.calls, 2);
	assert_false(d.had_local[0]);
	assert_true(d.had_local[1]);
	assert_memory_equal(d.local[1].root, recs[0].root, HASH_LEN);
	assert_int_equal(d.local[1].vv.e[0].counter, 1);
	assert_true(d.local[1].seq > 0); /* a local seq: it was written */
	record got;
	assert_int_equal(store_lookup(st, "same", &got), 0);
	assert_memory_equal(got.root, recs[1].root, HASH_LEN);
	store_close(st);
}

static void test_apply_remote_identical_writes_nothing(void **state)
{
	(void)state;
	store *st = open_store("ar_same");
	record r = mkrec("keep", PEER, 4);
	put_tree(st, "kept", r.root, &r.size);
	decide_log d = {0};
	store_applied ap = {0};
	assert_int_equal(store_apply_remote(st, &r, 1, PEER, PEER_INDEX, 1, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 1);
	uint64_t head = head_seq(st);
	/* The same record again (a replay), and a decide returning ours. */
	ap.written = 99;
	assert_int_equal(store_apply_remote(st, &r, 1, PEER, PEER_INDEX, 2, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_cursor(st, PEER, PEER_INDEX, 2);
	record older = mkrec("keep", PEER, 3);
	put_tree(st, "older", older.root, &older.size);
	ap.written = 99;
	assert_int_equal(store_apply_remote(st, &older, 1, PEER, PEER_INDEX, 3, decide_local, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_cursor(st, PEER, PEER_INDEX, 3);
	assert_true(head_seq(st) == head);
	/* Identical means deleted, root and vector: other fields do not count. */
	record touched = r;
	touched.mtime_ns = 999;
	assert_int_equal(store_apply_remote(st, &touched, 1, PEER, PEER_INDEX, 4, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_true(head_seq(st) == head);
	store_close(st);
}

static void test_apply_remote_conflict_writes_both(void **state)
{
	(void)state;
	store *st = open_store("ar_conflict");
	record mine = mkrec("doc.txt", 0, 0);
	put_tree(st, "mine", mine.root, &mine.size);
	mine.vv.n = 0;
	assert_int_equal(store_commit(st, &mine), 0); /* vv {0x1111: 1} */
	record theirs = mkrec("doc.txt", PEER, 1);
	put_tree(st, "theirs", theirs.root, &theirs.size);
	/* Winner: theirs with the merged vector; loser: mine at its copy. */
	record batch = theirs;
	batch.vv.n = 2;
	batch.vv.e[0] = (vv_entry){0x1111, 1};
	batch.vv.e[1] = (vv_entry){PEER, 1};
	decide_log d = {.extra = mine};
	snprintf(d.extra.path, sizeof d.extra.path, "doc.sync-conflict.txt");
	store_applied ap = {0};
	assert_int_equal(store_apply_remote(st, &batch, 1, PEER, PEER_INDEX, 1, decide_conflict, &d, &ap), 0);
	assert_int_equal(ap.written, 2);
	assert_true(d.had_local[0]);
	assert_memory_equal(d.local[0].root, mine.root, HASH_LEN);
	record got;
	assert_int_equal(store_lookup(st, "doc.txt", &got), 0);
	assert_memory_equal(got.root, theirs.root, HASH_LEN);
	assert_int_equal(got.vv.n, 2);
	assert_int_equal(store_lookup(st, "doc.sync-conflict.txt", &got), 0);
	assert_memory_equal(got.root, mine.root, HASH_LEN);
	assert_true(got.origin == 0x1111);
	/* Replayed, both outputs equal the current records of their own
	 * paths (the copy's is not the remote's path): nothing written. */
	uint64_t head = head_seq(st);
	assert_int_equal(store_apply_remote(st, &batch, 1, PEER, PEER_INDEX, 2, decide_conflict, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	assert_true(head_seq(st) == head);
	store_close(st);
}

static void test_apply_remote_decide_error_aborts(void **state)
{
	(void)state;
	store *st = open_store("ar_abort");
	assert_int_equal(store_cursor_set(st, PEER, PEER_INDEX, 5), 0);
	record recs[2] = {mkrec("x1", PEER, 1), mkrec("x2", PEER, 2)};
	put_tree(st, "x1", recs[0].root, &recs[0].size);
	put_tree(st, "x2", recs[1].root, &recs[1].size);
	decide_log d = {.fail_at = 2};
	store_applied ap = {99, 99};
	assert_int_equal(store_apply_remote(st, recs, 2, PEER, PEER_INDEX, 7, decide_take, &d, &ap), SS_EPROTO);
	assert_int_equal(ap.written, 0);
	assert_int_equal(d.calls, 2);
	assert_non_null(strstr(ss_errmsg(SS_EPROTO), "planted failure"));
	assert_non_null(strstr(ss_errmsg(SS_EPROTO), "x2"));
	record got;
	assert_int_equal(store_lookup(st, "x1", &got), SS_ENOENT);
	assert_cursor(st, PEER, PEER_INDEX, 5);
	assert_int_equal(head_seq(st), 0);
	/* Records refused before decide runs: no vector, a bad path, peer 0. */
	decide_log none = {0};
	recs[0].vv.n = 0;
	assert_int_equal(store_apply_remote(st, recs, 2, PEER, PEER_INDEX, 7, decide_take, &none, NULL), SS_EINVAL);
	recs[0].vv.n = 1;
	snprintf(recs[1].path, sizeof recs[1].path, "../x2");
	assert_int_equal(store_apply_remote(st, recs, 2, PEER, PEER_INDEX, 7, decide_take, &none, NULL), SS_EINVAL);
	assert_int_equal(store_apply_remote(st, recs, 1, 0, PEER_INDEX, 7, decide_take, &none, NULL), SS_EINVAL);
	assert_int_equal(none.calls, 0);
	assert_cursor(st, PEER, PEER_INDEX, 5);
	store_close(st);
}

static void test_apply_remote_tombstone(void **state)
{
	(void)state;
	store *st = open_store("ar_tomb");
	record live = mkrec("gone", PEER, 1);
	put_tree(st, "soon gone", live.root, &live.size);
	record recs[3] = {live, mkrec("gone", PEER, 2), mkrec("never-here", PEER, 1)};
	recs[1].deleted = true;
	memset(recs[1].root, 0xcd, HASH_LEN); /* no tree: ignored, stored as zeros */
	recs[1].size = 0;
	recs[2].deleted = true;
	decide_log d = {0};
	store_applied ap = {0};
	assert_int_equal(store_apply_remote(st, recs, 3, PEER, PEER_INDEX, 3, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 3);
	record got;
	uint8_t zero[HASH_LEN] = {0};
	assert_int_equal(store_lookup(st, "gone", &got), 0);
	assert_true(got.deleted);
	assert_memory_equal(got.root, zero, HASH_LEN);
	assert_int_equal(store_lookup(st, "never-here", &got), 0);
	assert_true(got.deleted);
	/* A replayed tombstone (its root not zeroed by the sender) is identical. */
	assert_int_equal(store_apply_remote(st, &recs[1], 1, PEER, PEER_INDEX, 4, decide_take, &d, &ap), 0);
	assert_int_equal(ap.written, 0);
	store_close(st);
}

/* A local commit right after a replicated record must build on it. */
static void test_commit_after_apply_remote_dominates(void **state)
{
	(void)state;
	store *st = open_store("ar_commit");
	record r = mkrec("p", PEER, 5);
	put_tree(st, "remote", r.root, &r.size);
	decide_log d = {0};
	assert_int_equal(store_apply_remote(st, &r, 1, PEER, PEER_INDEX, 1, decide_take, &d, NULL), 0);
	record mine = mkrec("p", 0, 0);
	put_tree(st, "local", mine.root, &mine.size);
	mine.vv.n = 0;
	assert_int_equal(store_commit(st, &mine), 0);
	assert_int_equal(vv_compare(&mine.vv, &r.vv), VV_AFTER);
	assert_int_equal(vv_get(&mine.vv, PEER), 5);
	assert_true(vv_get(&mine.vv, 0x1111) > 0);
	store_close(st);
}

#define RACE_N 40

typedef struct race {
	store *st;
	uint8_t root[HASH_LEN];
	uint64_t size;
	pthread_barrier_t go; /* start together, so the writes interleave */
} race;

/* Merges the remote vector into whatever is current (MERGE, always). */
static int decide_merge(void *ctx, const record *local, const record *remote, record out[2], unsigned *n)
{
	(void)ctx;
	out[0] = local ? *local : *remote;
	*n = 1;
	return local ? vv_merge(&local->vv, &remote->vv, &out[0].vv) : 0;
}

static void *race_commits(void *arg)
{
	race *rc = arg;
	pthread_barrier_wait(&rc->go);
	for (int i = 0; i < RACE_N; i++) {
		record r = mkrec("race", 0, 0);
		memcpy(r.root, rc->root, HASH_LEN);
		r.size = rc->size;
		r.vv.n = 0;
		if (store_commit(rc->st, &r))
			return (void *)1;
	}
	return NULL;
}

static void *race_applies(void *arg)
{
	race *rc = arg;
	pthread_barrier_wait(&rc->go);
	for (int i = 1; i <= RACE_N; i++) {
		/* A commit's walk takes the lock once per chunk: without a
		 * pause this loop would starve it and finish first. */
		usleep(300);
		record r = mkrec("race", PEER, (uint64_t)i);
		memcpy(r.root, rc->root, HASH_LEN);
		r.size = rc->size;
		if (store_apply_remote(rc->st, &r, 1, PEER, PEER_INDEX, (uint64_t)i, decide_merge, NULL, NULL))
			return (void *)1;
	}
	return NULL;
}

typedef struct hist {
	vvec vv[2 * RACE_N + 4];
	unsigned n;
} hist;

static int hist_fn(void *ctx, const record *r)
{
	hist *h = ctx;
	if (h->n < ARRAY_LEN(h->vv))
		h->vv[h->n++] = r->vv;
	return 0;
}

/* Local commits and applied records interleave on one path: every version
 * must dominate the one before it (no write built on a stale vector). */
static void test_commit_and_apply_remote_serialize(void **state)
{
	(void)state;
	race rc = {.st = open_store("ar_race")};
	put_wide_tree(rc.st, rc.root, &rc.size);
	pthread_barrier_init(&rc.go, NULL, 2);
	pthread_t a, b;
	void *ra, *rb;
	assert_int_equal(pthread_create(&a, NULL, race_commits, &rc), 0);
	assert_int_equal(pthread_create(&b, NULL, race_applies, &rc), 0);
	pthread_join(a, &ra);
	pthread_join(b, &rb);
	pthread_barrier_destroy(&rc.go);
	assert_null(ra);
	assert_null(rb);
	hist h = {0};
	assert_int_equal(store_history(rc.st, "race", hist_fn, &h), 0);
	assert_int_equal(h.n, 2 * RACE_N); /* newest first */
	for (unsigned i = 0; i + 1 < h.n; i++)
		assert_int_equal(vv_compare(&h.vv[i], &h.vv[i + 1]), VV_AFTER);
	assert_true(vv_get(&h.vv[0], 0x1111) > 0); /* 40 commits, each above the last (VV_AFTER above) */
	assert_int_equal(vv_get(&h.vv[0], PEER), RACE_N);
	assert_cursor(rc.st, PEER, PEER_INDEX, RACE_N);
	store_close(rc.st);
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", fx_dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	if (!mkdtemp(fx_dir))
		return 1;
	log_level = LOG_ERR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_index_id_stable_and_distinct),
		cmocka_unit_test(test_since_lists_in_sequence_order),
		cmocka_unit_test(test_apply_keeps_vector_and_origin),
		cmocka_unit_test(test_apply_is_all_or_nothing),
		cmocka_unit_test(test_cursor_fresh_is_zero),
		cmocka_unit_test(test_cursor_roundtrip_survives_reopen),
		cmocka_unit_test(test_cursor_table_added_to_old_directory),
		cmocka_unit_test(test_format_1_upgraded),
		cmocka_unit_test(test_log_regressed),
		cmocka_unit_test(test_cursor_fp),
		cmocka_unit_test(test_apply_remote_takes_batch),
		cmocka_unit_test(test_apply_remote_parks_missing_tree),
		cmocka_unit_test(test_apply_remote_park_undoes_conflict_copy),
		cmocka_unit_test(test_tombstone_over_parked_record_is_written),
		cmocka_unit_test(test_superseded_parked_record_passes_ack_to_its_copy),
		cmocka_unit_test(test_unappliable_parked_record_dropped),
		cmocka_unit_test(test_gc_keeps_partial_tree_of_parked_record),
		cmocka_unit_test(test_clock_sees_records_not_written),
		cmocka_unit_test(test_late_conflict_copy_does_not_overwrite_newer_copy),
		cmocka_unit_test(test_wiped_store_counters_stay_ahead),
		cmocka_unit_test(test_parked_record_kept_when_local_copy_corrupt),
		cmocka_unit_test(test_tombstone_beaten_by_parked_record_is_held),
		cmocka_unit_test(test_superseded_parked_record_stays_while_copy_parked_elsewhere),
		cmocka_unit_test(test_apply_remote_sees_earlier_in_batch),
		cmocka_unit_test(test_apply_remote_identical_writes_nothing),
		cmocka_unit_test(test_apply_remote_conflict_writes_both),
		cmocka_unit_test(test_apply_remote_decide_error_aborts),
		cmocka_unit_test(test_apply_remote_tombstone),
		cmocka_unit_test(test_commit_after_apply_remote_dominates),
		cmocka_unit_test(test_commit_and_apply_remote_serialize),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	teardown(NULL);
	return rc;
}
