/*
 * test_chunk.c — chunk/: SHA-256 known answers, the gear table, FastCDC cut
 * points at the size edges, stability under insertion, streaming (threads,
 * odd read blocks, errors) against whole-buffer chunking, manifest tree
 * shape and node decoding of hostile input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunk/chunk.h"
#include "util/util.h"

/* ---- helpers ---- */

/* Deterministic pseudo-random bytes (xorshift64*), so failures replay. */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;
	size_t i;

	for (i = 0; i < n; i++) {
		if (i % 8 == 0) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
		}
		p[i] = (uint8_t)((x * 0x2545f4914f6cdd1dULL) >> (8 * (i % 8)));
	}
}

struct chunk_rec {
	uint64_t off;
	uint32_t len;
	uint8_t id[HASH_LEN];
};

struct chunk_list {
	struct chunk_rec *v;
	size_t n, cap;
	const uint8_t *file; /* when set, emitted data is checked against it */
	size_t stop_after;   /* when non-zero, emit fails after this many */
};

static void list_push(struct chunk_list *l, uint64_t off, uint32_t len, const uint8_t *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->v = xrealloc(l->v, l->cap * sizeof *l->v);
	}
	l->v[l->n].off = off;
	l->v[l->n].len = len;
	memcpy(l->v[l->n].id, id, HASH_LEN);
	l->n++;
}

/* Reference: whole buffer in memory, cdc_cut in a loop. */
static void chunk_buffer(const uint8_t *p, size_t n, struct chunk_list *out)
{
	uint8_t id[HASH_LEN];
	size_t off = 0, len;

	memset(out, 0, sizeof *out);
	while (off < n) {
		len = cdc_cut(p + off, n - off);
		assert_true(len > 0 && len <= n - off);
		sha256(p + off, len, id);
		list_push(out, off, (uint32_t)len, id);
		off += len;
	}
}

static int collect_chunk(void *ctx, const cdc_chunk *c)
{
	struct chunk_list *l = ctx;
	uint8_t id[HASH_LEN];

	if (l->stop_after && l->n == l->stop_after)
		return 42;
	if (l->file)
		assert_memory_equal(c->data, l->file + c->off, c->len);
	sha256(c->data, c->len, id);
	assert_memory_equal(id, c->id, HASH_LEN);
	list_push(l, c->off, c->len, c->id);
	return 0;
}

static void assert_lists_equal(const struct chunk_list *a, const struct chunk_list *b)
{
	size_t i;

	assert_int_equal(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		assert_int_equal(a->v[i].off, b->v[i].off);
		assert_int_equal(a->v[i].len, b->v[i].len);
		assert_memory_equal(a->v[i].id, b->v[i].id, HASH_LEN);
	}
}

static int temp_file(const uint8_t *p, size_t n)
{
	char path[] = "/tmp/test_chunk.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write_full(fd, p, n), 0);
	return fd;
}

/* ---- SHA-256 ---- */

static void check_sha(const char *msg, const char *hex)
{
	uint8_t out[HASH_LEN];
	char got[HASH_HEX_LEN + 1];

	sha256(msg, strlen(msg), out);
	hex_encode(out, HASH_LEN, got);
	assert_string_equal(got, hex);
}

static void test_sha256_known_answers(void **state)
{
	check_sha("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* ---- gear table and cut points ---- */

static void test_gear_table_is_splitmix64(void **state)
{
	uint64_t s = CDC_GEAR_SEED, z;
	int i;

	for (i = 0; i < 256; i++) {
		s += 0x9e3779b97f4a7c15ULL;
		z = s;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		z ^= z >> 31;
		assert_int_equal(cdc_gear[i], z);
	}
}

static void test_cut_small_inputs(void **state)
{
	uint8_t *p = xmalloc(CDC_MAX + 1);
	struct chunk_list l;

	fill_random(p, CDC_MAX + 1, 7);
	assert_int_equal(cdc_cut(p, 0), 0);
	assert_int_equal(cdc_cut(p, 1), 1);
	assert_int_equal(cdc_cut(p, CDC_MIN - 1), CDC_MIN - 1);
	/* No cut is possible before CDC_MIN: one chunk. */
	assert_int_equal(cdc_cut(p, CDC_MIN), CDC_MIN);

	chunk_buffer(p, 0, &l);
	assert_int_equal(l.n, 0);
	free(l.v);
	chunk_buffer(p, 1, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].len, 1);
	free(l.v);
	free(p);
}

static void test_cut_max_edges(void **state)
{
	uint8_t *p = xcalloc(1, CDC_MAX + 1);
	struct chunk_list l;
	size_t i, sum;

	/* All zeros: the hash settles on a value that never passes the mask,
	 * so every cut is forced at CDC_MAX. */
	assert_int_equal(cdc_cut(p, CDC_MAX), CDC_MAX);
	assert_int_equal(cdc_cut(p, CDC_MAX + 1), CDC_MAX);
	chunk_buffer(p, CDC_MAX + 1, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.v[0].len, CDC_MAX);
	assert_int_equal(l.v[1].len, 1);
	free(l.v);

	/* Random data of exactly CDC_MAX and CDC_MAX+1 bytes. */
	fill_random(p, CDC_MAX + 1, 11);
	for (size_t n = CDC_MAX; n <= CDC_MAX + 1; n++) {
		chunk_buffer(p, n, &l);
		for (i = 0, sum = 0; i < l.n; i++) {
			assert_true(l.v[i].len <= CDC_MAX);
			if (i + 1 < l.n)
				assert_true(l.v[i].len > CDC_MIN);
			sum += l.v[i].len;
		}
		assert_int_equal(sum, n);
		free(l.v);
	}
	/* A cut never looks past CDC_MAX. */
	assert_true(cdc_cut(p, CDC_MAX + 1) <= CDC_MAX);
	free(p);
}

static void test_cut_all_zero_forces_max(void **state)
{
	size_t n = 5 * CDC_MAX + 12345, i;
	uint8_t *p = xcalloc(1, n);
	struct chunk_list l;

	chunk_buffer(p, n, &l);
	assert_int_equal(l.n, 6);
	for (i = 0; i < 5; i++)
		assert_int_equal(l.v[i].len, CDC_MAX);
	assert_int_equal(l.v[5].len, 12345);
	free(l.v);
	free(p);
}

static void test_cut_lengths_in_bounds(void **state)
{
	size_t n = 16 << 20, i, sum = 0;
	uint8_t *p = xmalloc(n);
	struct chunk_list l;

	fill_random(p, n, 3);
	chunk_buffer(p, n, &l);
	for (i = 0; i < l.n; i++) {
		if (i + 1 < l.n)
			assert_true(l.v[i].len >= CDC_MIN);
		assert_true(l.v[i].len <= CDC_MAX);
		assert_int_equal(l.v[i].off, sum);
		sum += l.v[i].len;
	}
	assert_int_equal(sum, n);
	/* Normalized chunking around the 32 KiB target: mean ≈ 37 KiB. */
	assert_true(n / l.n > 30 * 1024 && n / l.n < 45 * 1024);
	free(l.v);
	free(p);
}

/* ---- manifest trees ---- */

struct node_rec {
	uint8_t id[HASH_LEN];
	uint8_t level;
	uint64_t size;
};

struct tree_out {
	struct node_rec *v;
	size_t n, cap;
};

static int collect_node(void *ctx, uint8_t level, const uint8_t *node, size_t len,
			const uint8_t id[HASH_LEN], uint64_t size)
{
	struct tree_out *t = ctx;
	uint8_t want[HASH_LEN];
	tree_node nd;
	tree_entry e;
	size_t i, j;

	sha256(node, len, want);
	assert_memory_equal(want, id, HASH_LEN);
	assert_int_equal(tree_node_decode(node, len, &nd), 0);
	assert_int_equal(nd.level, level);
	assert_int_equal(tree_node_size(&nd), size);
	assert_true(nd.count <= TREE_MAX_FANOUT);
	/* Children before parents: every child node was emitted already. */
	if (level > 1) {
		for (i = 0; i < nd.count; i++) {
			tree_node_entry(&nd, (unsigned)i, &e);
			for (j = 0; j < t->n; j++)
				if (!memcmp(t->v[j].id, e.id, HASH_LEN))
					break;
			assert_true(j < t->n);
			assert_int_equal(t->v[j].level, level - 1);
			assert_int_equal(t->v[j].size, e.size);
		}
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 64;
		t->v = xrealloc(t->v, t->cap * sizeof *t->v);
	}
	memcpy(t->v[t->n].id, id, HASH_LEN);
	t->v[t->n].level = level;
	t->v[t->n].size = size;
	t->n++;
	return 0;
}

static void build_tree(const struct chunk_list *l, struct tree_out *t, uint8_t root[HASH_LEN],
		       uint64_t *size)
{
	tree_builder *tb = xmalloc(sizeof *tb);
	size_t i;

	memset(t, 0, sizeof *t);
	tree_init(tb, collect_node, t);
	for (i = 0; i < l->n; i++)
		assert_int_equal(tree_add(tb, l->v[i].id, l->v[i].len), 0);
	assert_int_equal(tree_finish(tb, root, size), 0);
	free(tb);
	/* The root is the last node emitted. */
	assert_true(t->n > 0);
	assert_memory_equal(t->v[t->n - 1].id, root, HASH_LEN);
}

static size_t nodes_not_in(const struct tree_out *b, const struct tree_out *a)
{
	size_t i, j, n = 0;

	for (i = 0; i < b->n; i++) {
		for (j = 0; j < a->n; j++)
			if (!memcmp(b->v[i].id, a->v[j].id, HASH_LEN))
				break;
		n += j == a->n;
	}
	return n;
}

static size_t chunks_not_in(const struct chunk_list *b, const struct chunk_list *a)
{
	size_t i, j, n = 0;

	for (i = 0; i < b->n; i++) {
		for (j = 0; j < a->n; j++)
			if (!memcmp(b->v[i].id, a->v[j].id, HASH_LEN))
				break;
		n += j == a->n;
	}
	return n;
}

static void test_insert_changes_few_chunks_and_one_path(void **state)
{
	size_t n = 8 << 20, mid = n / 2;
	uint8_t *a = xmalloc(n), *b = xmalloc(n + 100);
	struct chunk_list la, lb;
	struct tree_out ta, tb;
	uint8_t ra[HASH_LEN], rb[HASH_LEN];
	uint64_t sa, sb;

	fill_random(a, n, 2024);
	memcpy(b, a, mid);
	fill_random(b + mid, 100, 99);
	memcpy(b + mid + 100, a + mid, n - mid);
	chunk_buffer(a, n, &la);
	chunk_buffer(b, n + 100, &lb);
	assert_true(chunks_not_in(&lb, &la) >= 1);
	assert_true(chunks_not_in(&lb, &la) <= 3);

	build_tree(&la, &ta, ra, &sa);
	build_tree(&lb, &tb, rb, &sb);
	assert_int_equal(sa, n);
	assert_int_equal(sb, n + 100);
	assert_memory_not_equal(ra, rb, HASH_LEN);
	/* One leaf-to-root path: at most one new node per level. */
	assert_true(nodes_not_in(&tb, &ta) <= tb.v[tb.n - 1].level);
	free(la.v);
	free(lb.v);
	free(ta.v);
	free(tb.v);
	free(a);
	free(b);
}

/* Synthetic entries: ids from a counter, so the tree can be large and fast. */
static void synth_entries(struct chunk_list *l, size_t n, uint64_t seed)
{
	uint8_t msg[16], id[HASH_LEN];
	size_t i;

	memset(l, 0, sizeof *l);
	for (i = 0; i < n; i++) {
		le64(msg, seed);
		le64(msg + 8, i);
		sha256(msg, sizeof msg, id);
		list_push(l, 0, (uint32_t)(1 + i % CDC_MAX), id);
	}
}

static void check_fanout(const struct tree_out *t, const struct chunk_list *l)
{
	tree_builder *tb = xmalloc(sizeof *tb);
	uint8_t root[HASH_LEN];
	uint64_t size, total = 0;
	size_t i;

	for (i = 0; i < l->n; i++)
		total += l->v[i].len;
	tree_init(tb, NULL, NULL);
	for (i = 0; i < l->n; i++)
		assert_int_equal(tree_add(tb, l->v[i].id, l->v[i].len), 0);
	assert_int_equal(tree_finish(tb, root, &size), 0);
	assert_memory_equal(root, t->v[t->n - 1].id, HASH_LEN);
	assert_int_equal(size, total);
	free(tb);
}

static void test_tree_large_shape_and_edit(void **state)
{
	struct chunk_list la, lb;
	struct tree_out ta, tb;
	uint8_t ra[HASH_LEN], rb[HASH_LEN];
	uint64_t sa, sb;
	size_t n = 40000, i, per_level[TREE_MAX_LEVEL + 1] = {0};
	uint8_t top;

	synth_entries(&la, n, 1);
	build_tree(&la, &ta, ra, &sa);
	check_fanout(&ta, &la);
	top = ta.v[ta.n - 1].level;
	assert_true(top >= 3);
	for (i = 0; i < ta.n; i++)
		per_level[ta.v[i].level]++;
	assert_int_equal(per_level[top], 1);
	/* Mean fan-out 32, bounded 8..128: level 1 has ~n/32 nodes. */
	assert_true(per_level[1] > n / 128 && per_level[1] <= n / 8 + 1);

	/*
	 * Change one entry in the middle, keeping its boundary byte: the
	 * leaves stay the same, and each level above changes in one node, or
	 * two where the new node id happens to move a boundary.
	 */
	synth_entries(&lb, n, 1);
	lb.v[n / 2].id[0] ^= 1;
	build_tree(&lb, &tb, rb, &sb);
	assert_memory_not_equal(ra, rb, HASH_LEN);
	assert_int_equal(sb, sa);
	assert_true(nodes_not_in(&tb, &ta) >= top);
	assert_true(nodes_not_in(&tb, &ta) <= 2u * top);
	free(la.v);
	free(lb.v);
	free(ta.v);
	free(tb.v);
}

static void test_tree_empty_and_single(void **state)
{
	struct chunk_list l;
	struct tree_out t;
	uint8_t root[HASH_LEN], want[HASH_LEN], node[TREE_NODE_MAX];
	uint64_t size;
	tree_entry e;
	size_t len;

	memset(&l, 0, sizeof l);
	build_tree(&l, &t, root, &size);
	assert_int_equal(t.n, 1);
	assert_int_equal(size, 0);
	assert_int_equal(t.v[0].level, 1);
	len = tree_node_encode(1, NULL, 0, node);
	assert_int_equal(len, TREE_HDR);
	sha256(node, len, want);
	assert_memory_equal(root, want, HASH_LEN);
	free(t.v);

	memset(e.id, 0xab, HASH_LEN);
	e.size = 1234;
	list_push(&l, 0, 1234, e.id);
	build_tree(&l, &t, root, &size);
	assert_int_equal(t.n, 1);
	assert_int_equal(size, 1234);
	len = tree_node_encode(1, &e, 1, node);
	sha256(node, len, want);
	assert_memory_equal(root, want, HASH_LEN);
	free(t.v);
	free(l.v);
}

/* Ids with a chosen boundary bit pattern in byte 31. */
static void boundary_entries(struct chunk_list *l, size_t n, int boundary_every)
{
	uint8_t id[HASH_LEN];
	size_t i;

	memset(l, 0, sizeof *l);
	for (i = 0; i < n; i++) {
		memset(id, 0, HASH_LEN);
		le64(id, i + 1);
		id[HASH_LEN - 1] = boundary_every && (i + 1) % boundary_every == 0 ? 0x20 : 0x01;
		list_push(l, 0, 100, id);
	}
}

static void test_tree_root_unique_at_edges(void **state)
{
	struct chunk_list l;
	struct tree_out t;
	uint8_t root[HASH_LEN];
	uint64_t size;

	/* 128 entries, no boundary id: closes at TREE_MAX_FANOUT on the last
	 * entry; that single node is the root, with no one-entry parent. */
	boundary_entries(&l, TREE_MAX_FANOUT, 0);
	build_tree(&l, &t, root, &size);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.v[0].level, 1);
	assert_int_equal(size, 100 * TREE_MAX_FANOUT);
	free(t.v);
	free(l.v);

	/* 129 entries: two leaves and a level-2 root. */
	boundary_entries(&l, TREE_MAX_FANOUT + 1, 0);
	build_tree(&l, &t, root, &size);
	assert_int_equal(t.n, 3);
	assert_int_equal(t.v[2].level, 2);
	free(t.v);
	free(l.v);

	/* A boundary id on the 10th and last entry: one leaf, the root. */
	boundary_entries(&l, 10, 10);
	build_tree(&l, &t, root, &size);
	assert_int_equal(t.n, 1);
	free(t.v);
	free(l.v);

	/* Boundary ids before TREE_MIN_FANOUT entries are ignored. */
	boundary_entries(&l, 20, 3);
	build_tree(&l, &t, root, &size);
	/* cuts after entries 9 and 18: three leaves and a root */
	assert_int_equal(t.n, 4);
	free(t.v);
	free(l.v);

}

static int fail_emit(void *ctx, uint8_t level, const uint8_t *node, size_t len,
		     const uint8_t id[HASH_LEN], uint64_t size)
{
	int *left = ctx;
	return --*left < 0 ? -99 : 0;
}

static void test_tree_emit_error_propagates(void **state)
{
	struct chunk_list l;
	tree_builder *tb = xmalloc(sizeof *tb);
	uint8_t root[HASH_LEN];
	uint64_t size;
	int left = 2, rc = 0;
	size_t i;

	boundary_entries(&l, 1000, 0);
	tree_init(tb, fail_emit, &left);
	for (i = 0; i < l.n && rc == 0; i++)
		rc = tree_add(tb, l.v[i].id, l.v[i].len);
	if (rc == 0)
		rc = tree_finish(tb, root, &size);
	assert_int_equal(rc, -99);
	free(tb);
	free(l.v);
}

/* ---- node encode/decode ---- */

static size_t sample_node(uint8_t *node, uint8_t level, unsigned count)
{
	tree_entry e[TREE_MAX_FANOUT];
	unsigned i;

	for (i = 0; i < count; i++) {
		memset(e[i].id, (int)(i * 7 + 1), HASH_LEN);
		e[i].size = 1 + i * 1000;
	}
	return tree_node_encode(level, e, count, node);
}

static void test_node_round_trip(void **state)
{
	uint8_t node[TREE_NODE_MAX], again[TREE_NODE_MAX];
	tree_entry e[TREE_MAX_FANOUT];
	tree_node nd;
	unsigned counts[] = {0, 1, 2, 8, 33, TREE_MAX_FANOUT}, k, i;
	uint64_t total;

	for (k = 0; k < ARRAY_LEN(counts); k++) {
		size_t len = sample_node(node, counts[k] ? 3 : 1, counts[k]);
		assert_int_equal(len, TREE_HDR + TREE_ENTRY * counts[k]);
		assert_memory_equal(node, "SSMN\x01", 5);
		assert_int_equal(tree_node_decode(node, len, &nd), 0);
		assert_int_equal(nd.count, counts[k]);
		assert_int_equal(nd.level, counts[k] ? 3 : 1);
		total = 0;
		for (i = 0; i < nd.count; i++) {
			tree_node_entry(&nd, i, &e[i]);
			assert_int_equal(e[i].size, 1 + i * 1000);
			assert_int_equal(e[i].id[0], (uint8_t)(i * 7 + 1));
			total += e[i].size;
		}
		assert_int_equal(tree_node_size(&nd), total);
		assert_int_equal(tree_node_encode(nd.level, e, nd.count, again), len);
		assert_memory_equal(again, node, len);
	}
}

static void test_node_decode_rejects(void **state)
{
	uint8_t node[TREE_NODE_MAX], bad[TREE_NODE_MAX + TREE_ENTRY];
	tree_node nd;
	size_t len, i;

	len = sample_node(node, 2, 5);
	/* Every truncation, and one byte too many. */
	for (i = 0; i < len; i++)
		assert_int_equal(tree_node_decode(node, i, &nd), SS_ECORRUPT);
	memcpy(bad, node, len);
	bad[len] = 0;
	assert_int_equal(tree_node_decode(bad, len + 1, &nd), SS_ECORRUPT);

	memcpy(bad, node, len);
	bad[0] = 'X';
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	memcpy(bad, node, len);
	bad[4] = 2;
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	memcpy(bad, node, len);
	bad[5] = 0;
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	bad[5] = TREE_MAX_LEVEL + 1;
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	bad[5] = TREE_MAX_LEVEL;
	assert_int_equal(tree_node_decode(bad, len, &nd), 0);
	/* Count disagreeing with the length either way. */
	memcpy(bad, node, len);
	le16(bad + 6, 4);
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	le16(bad + 6, 6);
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	/* Count above the maximum even with a matching length. */
	len = sample_node(bad, 2, TREE_MAX_FANOUT);
	memcpy(bad + len, bad + len - TREE_ENTRY, TREE_ENTRY);
	le16(bad + 6, TREE_MAX_FANOUT + 1);
	assert_int_equal(tree_node_decode(bad, len + TREE_ENTRY, &nd), SS_ECORRUPT);
	le16(bad + 6, 0xffff);
	assert_int_equal(tree_node_decode(bad, len + TREE_ENTRY, &nd), SS_ECORRUPT);

	/* Entry sizes: zero, a data chunk above CDC_MAX, a sum overflowing. */
	len = sample_node(bad, 1, 2);
	le64(bad + TREE_HDR + HASH_LEN, 0);
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	le64(bad + TREE_HDR + HASH_LEN, CDC_MAX);
	assert_int_equal(tree_node_decode(bad, len, &nd), 0);
	le64(bad + TREE_HDR + HASH_LEN, CDC_MAX + 1);
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	bad[5] = 2;
	assert_int_equal(tree_node_decode(bad, len, &nd), 0);
	le64(bad + TREE_HDR + HASH_LEN, UINT64_MAX);
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	/* An empty node exists only as the empty file's level-1 root. */
	len = sample_node(bad, 2, 0);
	assert_int_equal(tree_node_decode(bad, len, &nd), SS_ECORRUPT);
	assert_string_equal(ss_errmsg(SS_ECORRUPT), "empty tree node at level 2");
}

/* ---- streaming ---- */

static void check_stream(const uint8_t *p, size_t n, int threads, size_t block)
{
	struct chunk_list want, got;
	int fd = temp_file(p, n);

	chunk_buffer(p, n, &want);
	memset(&got, 0, sizeof got);
	got.file = p;
	if (block)
		assert_int_equal(cdc_stream_block(fd, threads, block, collect_chunk, &got), 0);
	else
		assert_int_equal(cdc_stream(fd, threads, collect_chunk, &got), 0);
	assert_lists_equal(&want, &got);
	/* pread leaves the descriptor's offset alone. */
	assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)n);
	close(fd);
	free(want.v);
	free(got.v);
}

static void test_stream_equals_buffer(void **state)
{
	size_t n = 9 * 1024 * 1024 + 4321;
	uint8_t *p = xmalloc(n);
	int threads[] = {1, 2, 3, 0};
	size_t i;

	fill_random(p, n, 5);
	for (i = 0; i < ARRAY_LEN(threads); i++)
		check_stream(p, n, threads[i], 0);
	free(p);
}

static void test_stream_odd_blocks(void **state)
{
	size_t n = 3 * 1024 * 1024 + 777;
	uint8_t *p = xmalloc(n);
	size_t blocks[] = {4097, 65537, CDC_MAX - 1, CDC_MAX, CDC_MAX + 1, 1000003};
	size_t i;
	int t;

	fill_random(p, n, 6);
	for (i = 0; i < ARRAY_LEN(blocks); i++)
		for (t = 1; t <= 2; t++)
			check_stream(p, n, t, blocks[i]);
	/* Tiny blocks: carry-over dominates, so keep the file small. */
	for (t = 1; t <= 2; t++) {
		check_stream(p, 40000, t, 1);
		check_stream(p, 300000, t, 777);
	}
	free(p);
}

static void test_stream_edges(void **state)
{
	size_t n = 4 * 1024 * 1024 + CDC_MAX, sizes[] = {0, 1, CDC_MIN, CDC_MAX, CDC_MAX + 1};
	uint8_t *p = xcalloc(1, n);
	size_t i;
	int t;

	for (t = 1; t <= 2; t++) {
		for (i = 0; i < ARRAY_LEN(sizes); i++)
			check_stream(p, sizes[i], t, 0);
		/* All zeros: forced CDC_MAX cuts land exactly on block ends. */
		check_stream(p, n, t, 0);
		check_stream(p, n - CDC_MAX, t, 0);
		check_stream(p, n, t, 2 * CDC_MAX);
	}
	fill_random(p, n, 8);
	for (t = 1; t <= 2; t++) {
		check_stream(p, 4 * 1024 * 1024, t, 0);
		check_stream(p, 4 * 1024 * 1024 - 1, t, 0);
		check_stream(p, 4 * 1024 * 1024 + 1, t, 0);
	}
	free(p);
}

static void test_stream_emit_error_stops(void **state)
{
	size_t n = 20 * 1024 * 1024;
	uint8_t *p = xmalloc(n);
	struct chunk_list got;
	int fd, t;

	fill_random(p, n, 9);
	fd = temp_file(p, n);
	for (t = 1; t <= 4; t++) {
		memset(&got, 0, sizeof got);
		got.stop_after = 5;
		assert_int_equal(cdc_stream(fd, t, collect_chunk, &got), 42);
		assert_int_equal(got.n, 5);
		free(got.v);
		/* Failing late, with the whole ring of blocks in flight. */
		memset(&got, 0, sizeof got);
		got.stop_after = 400;
		assert_int_equal(cdc_stream(fd, t, collect_chunk, &got), 42);
		assert_int_equal(got.n, 400);
		free(got.v);
	}
	close(fd);
	free(p);
}

static void test_stream_read_error(void **state)
{
	struct chunk_list got;
	int fd, t;

	memset(&got, 0, sizeof got);
	for (t = 1; t <= 2; t++) {
		assert_true(cdc_stream(-1, t, collect_chunk, &got) < 0);
		fd = open("/tmp", O_RDONLY | O_DIRECTORY);
		assert_true(fd >= 0);
		assert_int_equal(cdc_stream(fd, t, collect_chunk, &got), SS_EIO);
		assert_non_null(strstr(ss_errmsg(SS_EIO), "cannot read input at offset 0"));
		close(fd);
	}
	assert_int_equal(got.n, 0);
	assert_int_equal(cdc_stream(0, -1, collect_chunk, &got), SS_EINVAL);
	assert_int_equal(cdc_stream_block(0, 1, 0, collect_chunk, &got), SS_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_known_answers),
		cmocka_unit_test(test_gear_table_is_splitmix64),
		cmocka_unit_test(test_cut_small_inputs),
		cmocka_unit_test(test_cut_max_edges),
		cmocka_unit_test(test_cut_all_zero_forces_max),
		cmocka_unit_test(test_cut_lengths_in_bounds),
		cmocka_unit_test(test_insert_changes_few_chunks_and_one_path),
		cmocka_unit_test(test_tree_large_shape_and_edit),
		cmocka_unit_test(test_tree_empty_and_single),
		cmocka_unit_test(test_tree_root_unique_at_edges),
		cmocka_unit_test(test_tree_emit_error_propagates),
		cmocka_unit_test(test_node_round_trip),
		cmocka_unit_test(test_node_decode_rejects),
		cmocka_unit_test(test_stream_equals_buffer),
		cmocka_unit_test(test_stream_odd_blocks),
		cmocka_unit_test(test_stream_edges),
		cmocka_unit_test(test_stream_emit_error_stops),
		cmocka_unit_test(test_stream_read_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
