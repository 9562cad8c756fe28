/*
 * store_fixture.h — what the replication unit tests (test_store_repl,
 * test_link, test_node) all need: stores in a temporary directory, and
 * one-chunk files.  Include after cmocka.h.
 */
#ifndef SS_STORE_FIXTURE_H
#define SS_STORE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

/* The test binary's directory (a mkdtemp template, made by fx_run). */
static char fx_dir[] = "/tmp/ss_test_XXXXXX";

/* Open (or create) the store fx_dir/name as node `node`. */
static inline store *fx_open(const char *name, uint64_t node)
{
	char dir[256];
	snprintf(dir, sizeof dir, "%s/%s", fx_dir, name);
	store *st;
	assert_int_equal(store_open(dir, &st), 0);
	store_set_node(st, node);
	return st;
}

/* Store a file's tree — one data chunk under a level-1 node — at st: its
 * root in root, its size in *size, the data chunk's id in chunk (may be
 * NULL). */
static inline void fx_tree(store *st, const char *content, uint8_t root[HASH_LEN], uint64_t *size,
			   uint8_t chunk[HASH_LEN])
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
	if (chunk)
		memcpy(chunk, e.id, HASH_LEN);
}

/* A one-chunk file committed at st (its vector bumped there). */
static inline record fx_commit(store *st, const char *path, const char *content, uint8_t chunk[HASH_LEN])
{
	record r;
	memset(&r, 0, sizeof r);
	snprintf(r.path, sizeof r.path, "%s", path);
	r.mode = 0644;
	fx_tree(st, content, r.root, &r.size, chunk);
	assert_int_equal(store_commit(st, &r), 0);
	return r;
}

/* Make fx_dir, run the tests, remove fx_dir: the exit status. */
static inline int fx_run(const char *name, const struct CMUnitTest *tests, size_t n)
{
	if (!mkdtemp(fx_dir))
		return 1;
	int rc = _cmocka_run_group_tests(name, tests, n, NULL, NULL);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", fx_dir);
	if (system(cmd))
		rc = rc ? rc : 1;
	return rc;
}

#endif
