/* test_store_repl.c — the store's replication support: index ids, the
 * change log by sequence, and applying received records as they are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "store/store.h"

static char root_dir[] = "/tmp/ss_test_repl_XXXXXX";

static store *open_store(const char *name)
{
	char dir[256];
	snprintf(dir, sizeof dir, "%s/%s", root_dir, name);
	store *st;
	assert_int_equal(store_open(dir, &st), 0);
	store_set_node(st, 0x1111);
	return st;
}

/* Store one file's tree (a single data chunk under a level-1 node) and
 * return its root; size set to the content length. */
static void put_tree(store *st, const char *content, uint8_t root[HASH_LEN], uint64_t *size)
{
	tree_entry e;
	size_t n = strlen(content);
	sha256(content, n, e.id);
	e.size = n;
	assert_int_equal(store_put_chunk(st, e.id, content, n), 0);
	uint8_t node[TREE_NODE_MAX];
	size_t len = tree_node_encode(1, &e, 1, node);
	sha256(node, len, root);
	assert_int_equal(store_put_node(st, root, node, len), 0);
	*size = n;
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

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root_dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	if (!mkdtemp(root_dir))
		return 1;
	log_level = LOG_ERR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_index_id_stable_and_distinct),
		cmocka_unit_test(test_since_lists_in_sequence_order),
		cmocka_unit_test(test_apply_keeps_vector_and_origin),
		cmocka_unit_test(test_apply_is_all_or_nothing),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	teardown(NULL);
	return rc;
}
