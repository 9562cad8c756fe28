/*
 * test_store_gc.c — history retention, tombstone expiry, and garbage
 * collection with segment compaction: what is kept reads back (also after a
 * reopen), what is dropped really leaves the disk, leases pin new chunks,
 * GC runs while other threads put, commit and read, and a crash at each
 * step of compaction leaves a store that opens and a later GC cleans up.
 *
 * Each test works in its own temporary directory.  Segments are made small
 * (store_set_segment_max) so a few MiB span many of them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chunk/chunk.h"
#include "store/segment.h"
#include "store/store.h"
#include "store/store_internal.h"
#include "util/util.h"

#define NODE_A 0x1111222233334444ULL
#define KiB 1024u
#define MiB (1024u * 1024u)

/* ---- helpers ---- */

static char tdir[256]; /* the test's data directory */

/* This executable's fsync fails with EIO for the next fail_fsync_seg calls
 * on a segment file (as in test_store.c). */
static int fail_fsync_seg;

int fsync(int fd)
{
	if (fail_fsync_seg) {
		char link[64], target[512];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t l = readlink(link, target, sizeof target - 1);
		if (l > 4 && !memcmp(target + l - 4, ".seg", 4)) {
			fail_fsync_seg--;
			errno = EIO;
			return -1;
		}
	}
	return (int)syscall(SYS_fsync, fd);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int setup(void **state)
{
	char tmpl[] = "/tmp/ss_test_gc_XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	snprintf(tdir, sizeof tdir, "%s/data", tmpl);
	store_gc_debug_stop_after = GC_STOP_NONE;
	return 0;
}

static int teardown(void **state)
{
	char top[256];
	snprintf(top, sizeof top, "%s", tdir);
	*strrchr(top, '/') = 0;
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	store_gc_debug_stop_after = GC_STOP_NONE;
	return 0;
}

#define assert_msg(rc, want)                                                                       \
	do {                                                                                       \
		const char *m_ = ss_errmsg(rc);                                                    \
		if (!strstr(m_, want))                                                             \
			fail_msg("message \"%s\" lacks \"%s\"", m_, want);                           \
	} while (0)

#define assert_ok(expr)                                                                            \
	do {                                                                                       \
		int rc_ = (expr);                                                                  \
		if (rc_)                                                                           \
			fail_msg("%s: %s", #expr, ss_errmsg(rc_));                                   \
	} while (0)

static store *open_seg_max(uint64_t seg_max)
{
	store *st = NULL;
	int rc = store_open(tdir, &st);
	if (rc)
		fail_msg("store_open: %s", ss_errmsg(rc));
	store_set_node(st, NODE_A);
	if (seg_max)
		store_set_segment_max(st, seg_max);
	return st;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 32);
	}
}

typedef struct chunk_t {
	uint8_t id[HASH_LEN];
	size_t len;
	uint8_t *data;
} chunk_t;

static chunk_t mk_chunk(uint64_t seed, size_t len)
{
	chunk_t c = {.len = len, .data = xmalloc(len)};
	fill(c.data, len, seed);
	sha256(c.data, len, c.id);
	return c;
}

static void put_ok(store *st, const chunk_t *c)
{
	assert_ok(store_put_chunk(st, c->id, c->data, c->len));
}

static void get_ok(store *st, const chunk_t *c)
{
	buf b;
	buf_init(&b, SEG_CHUNK_MAX);
	int rc = store_get_chunk(st, c->id, &b);
	if (rc)
		fail_msg("store_get_chunk: %s", ss_errmsg(rc));
	assert_int_equal(b.len, c->len);
	assert_memory_equal(b.p, c->data, c->len);
	buf_free(&b);
}

static void get_absent(store *st, const uint8_t id[HASH_LEN])
{
	buf b;
	buf_init(&b, SEG_CHUNK_MAX);
	assert_int_equal(store_has(st, id), 0);
	assert_int_equal(store_get_chunk(st, id, &b), SS_ENOENT);
	buf_free(&b);
}

/* A file: its data chunks (owned unless shared), its tree's nodes, root. */
typedef struct file_t {
	chunk_t *c;
	size_t n;
	bool *owned;
	uint8_t root[HASH_LEN];
	uint64_t size;
	uint8_t (*nodes)[HASH_LEN];
	size_t nnodes;
} file_t;

static int emit_node(void *ctx, uint8_t level, const uint8_t *node, size_t len, const uint8_t id[HASH_LEN],
		     uint64_t size)
{
	void **a = ctx;
	store *st = a[0];
	file_t *f = a[1];
	f->nodes = xrealloc(f->nodes, (f->nnodes + 1) * HASH_LEN);
	memcpy(f->nodes[f->nnodes++], id, HASH_LEN);
	return store_put_node(st, id, node, len);
}

/* Build the tree over f->c[0..n) (chunks already put or not, as the caller
 * decided), storing the nodes. */
static void build_tree(store *st, file_t *f)
{
	tree_builder *tb = xmalloc(sizeof *tb);
	void *ctx[2] = {st, f};
	tree_init(tb, emit_node, ctx);
	for (size_t i = 0; i < f->n; i++)
		assert_int_equal(tree_add(tb, f->c[i].id, f->c[i].len), 0);
	assert_int_equal(tree_finish(tb, f->root, &f->size), 0);
	free(tb);
}

/* A file of n chunks of len bytes, seeded, all put. */
static file_t mk_file(store *st, uint64_t seed, size_t n, size_t len)
{
	file_t f = {.c = xcalloc(n ? n : 1, sizeof(chunk_t)), .owned = xcalloc(n ? n : 1, 1), .n = n};
	for (size_t i = 0; i < n; i++) {
		f.c[i] = mk_chunk(seed * 100000 + i, len);
		f.owned[i] = true;
		put_ok(st, &f.c[i]);
	}
	build_tree(st, &f);
	return f;
}

static void free_file(file_t *f)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->owned[i])
			free(f->c[i].data);
	free(f->c);
	free(f->owned);
	free(f->nodes);
	memset(f, 0, sizeof *f);
}

static record mk_rec(const char *path, const file_t *f, int64_t otime)
{
	record r;
	memset(&r, 0, sizeof r);
	snprintf(r.path, sizeof r.path, "%s", path);
	r.size = f ? f->size : 0;
	r.mode = 0644;
	r.mtime_ns = 1700000000000000000LL;
	r.otime_ns = otime;
	if (f)
		memcpy(r.root, f->root, HASH_LEN);
	else
		r.deleted = true;
	return r;
}

static uint64_t commit_ok(store *st, const char *path, const file_t *f, int64_t otime)
{
	record r = mk_rec(path, f, otime);
	int rc = store_commit(st, &r);
	if (rc)
		fail_msg("store_commit %s: %s", path, ss_errmsg(rc));
	return r.seq;
}

/* Walk the tree under id through the store, checking every node and data
 * chunk reads back and verifies; returns the bytes under it. */
static uint64_t walk_tree(store *st, const uint8_t id[HASH_LEN])
{
	buf b;
	buf_init(&b, SEG_CHUNK_MAX);
	int rc = store_get_chunk(st, id, &b);
	if (rc)
		fail_msg("tree node: %s", ss_errmsg(rc));
	tree_node nd;
	assert_int_equal(tree_node_decode(b.p, b.len, &nd), 0);
	uint64_t total = 0;
	for (unsigned i = 0; i < nd.count; i++) {
		tree_entry e;
		tree_node_entry(&nd, i, &e);
		if (nd.level > 1) {
			assert_int_equal(walk_tree(st, e.id), e.size);
		} else {
			buf c;
			buf_init(&c, SEG_CHUNK_MAX);
			rc = store_get_chunk(st, e.id, &c);
			if (rc)
				fail_msg("data chunk: %s", ss_errmsg(rc));
			assert_int_equal(c.len, e.size);
			buf_free(&c);
		}
		total += e.size;
	}
	buf_free(&b);
	return total;
}

/* Every chunk of f reads back with its bytes, and its tree walks whole. */
static void verify_file(store *st, const file_t *f)
{
	for (size_t i = 0; i < f->n; i++)
		get_ok(st, &f->c[i]);
	assert_int_equal(walk_tree(st, f->root), f->size);
}

/* The current record of path is live with f's root. */
static void verify_current(store *st, const char *path, const file_t *f)
{
	record r;
	assert_ok(store_lookup(st, path, &r));
	assert_false(r.deleted);
	assert_memory_equal(r.root, f->root, HASH_LEN);
	verify_file(st, f);
}

static uint64_t seg_dir_bytes(unsigned *nfiles)
{
	char dir[300];
	snprintf(dir, sizeof dir, "%s/seg", tdir);
	DIR *d = opendir(dir);
	assert_non_null(d);
	uint64_t total = 0;
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char p[600];
		struct stat sb;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		assert_int_equal(stat(p, &sb), 0);
		total += (uint64_t)sb.st_size;
		n++;
	}
	closedir(d);
	if (nfiles)
		*nfiles = n;
	return total;
}

static bool seg_exists(unsigned num)
{
	char p[300];
	snprintf(p, sizeof p, "%s/seg/%08u.seg", tdir, num);
	return access(p, F_OK) == 0;
}

static bool expire_all(void *ctx, const record *t)
{
	(void)ctx;
	return t->deleted;
}

static int count_rec(void *ctx, const record *r)
{
	(void)r;
	(*(unsigned *)ctx)++;
	return 0;
}

static unsigned history_len(store *st, const char *path)
{
	unsigned n = 0;
	assert_ok(store_history(st, path, count_rec, &n));
	return n;
}

/* ---- history retention ---- */

typedef struct seqs_t {
	uint64_t v[16];
	unsigned n;
} seqs_t;

static int collect_seq(void *ctx, const record *r)
{
	seqs_t *s = ctx;
	if (s->n < 16)
		s->v[s->n++] = r->seq;
	return 0;
}

static void test_expire_history(void **state)
{
	store *st = open_seg_max(0);
	const int64_t S = 1000000000LL, T0 = 1700000000LL * S;
	file_t f[4];
	for (int i = 0; i < 4; i++)
		f[i] = mk_file(st, 10 + (uint64_t)i, 2, 1000);
	/* a: v1 at T0, v2 at T0+100s, v3 at T0+200s; b: one version. */
	uint64_t a1 = commit_ok(st, "a", &f[0], T0);
	uint64_t a2 = commit_ok(st, "a", &f[1], T0 + 100 * S);
	uint64_t a3 = commit_ok(st, "a", &f[2], T0 + 200 * S);
	uint64_t b1 = commit_ok(st, "b", &f[3], T0);
	assert_int_equal(history_len(st, "a"), 3);

	uint64_t dropped = 99;
	assert_int_equal(store_expire_history(st, T0, -1, UINT64_MAX, &dropped), SS_EINVAL);
	/* Nothing superseded before now - 1000 s. */
	assert_ok(store_expire_history(st, T0 + 250 * S, 1000 * S, UINT64_MAX, &dropped));
	assert_int_equal(dropped, 0);
	/* now = T0+250 s, keep 120 s: v1 (superseded at T0+100 s, 150 s ago)
	 * goes; v2 (superseded at T0+200 s, 50 s ago) stays. */
	assert_ok(store_expire_history(st, T0 + 250 * S, 120 * S, UINT64_MAX, &dropped));
	assert_int_equal(dropped, 1);
	seqs_t h = {0};
	assert_ok(store_history(st, "a", collect_seq, &h));
	assert_int_equal(h.n, 2);
	assert_int_equal(h.v[0], a3);
	assert_int_equal(h.v[1], a2);
	record r;
	assert_int_equal(store_lookup_version(st, "a", a1, &r), SS_ENOENT);
	/* Exactly at the edge is not "more than": superseded 50 s ago, keep 50 s. */
	assert_ok(store_expire_history(st, T0 + 250 * S, 50 * S, UINT64_MAX, &dropped));
	assert_int_equal(dropped, 0);
	/* Retention 0 far in the future: only current versions remain. */
	assert_ok(store_expire_history(st, T0 + 100000 * S, 0, UINT64_MAX, NULL));
	assert_int_equal(history_len(st, "a"), 1);
	assert_int_equal(history_len(st, "b"), 1);
	assert_ok(store_lookup(st, "a", &r));
	assert_int_equal(r.seq, a3);
	assert_ok(store_lookup(st, "b", &r));
	assert_int_equal(r.seq, b1);
	/* The change log lost the dropped versions too. */
	seqs_t since = {0};
	assert_ok(store_since(st, 0, 100, collect_seq, &since));
	assert_int_equal(since.n, 2);
	assert_int_equal(since.v[0], a3);
	assert_int_equal(since.v[1], b1);

	/* A tombstone superseding a version counts like any version. */
	uint64_t a4 = commit_ok(st, "a", NULL, T0 + 300 * S);
	assert_ok(store_expire_history(st, T0 + 301 * S, 0, UINT64_MAX, &dropped));
	assert_int_equal(dropped, 1);
	assert_ok(store_lookup(st, "a", &r));
	assert_true(r.deleted);
	assert_int_equal(r.seq, a4);
	assert_int_equal(history_len(st, "a"), 1);
	store_close(st);
	for (int i = 0; i < 4; i++)
		free_file(&f[i]);
}

/* ---- tombstones ---- */

typedef struct expire_ctx {
	const char *only;
	unsigned calls;
	uint64_t seen_seq;
} expire_ctx;

static bool expire_one(void *ctx, const record *t)
{
	expire_ctx *e = ctx;
	e->calls++;
	assert_true(t->deleted);
	if (strcmp(t->path, e->only))
		return false;
	e->seen_seq = t->seq;
	return true;
}

static int no_path(void *ctx, const record *r)
{
	if (!strcmp(r->path, (const char *)ctx))
		fail_msg("%s still in the change log (seq %llu)", r->path, (unsigned long long)r->seq);
	return 0;
}

static void test_expire_tombstones(void **state)
{
	store *st = open_seg_max(0);
	file_t f[3];
	for (int i = 0; i < 3; i++)
		f[i] = mk_file(st, 20 + (uint64_t)i, 2, 1000);
	uint64_t count = 99, oldest = 99;
	assert_ok(store_tombstones(st, &count, &oldest));
	assert_int_equal(count, 0);
	assert_int_equal(oldest, 0);

	commit_ok(st, "x", &f[0], 0);
	commit_ok(st, "x", &f[1], 0);
	uint64_t xt = commit_ok(st, "x", NULL, 0);
	commit_ok(st, "y", &f[2], 0);
	commit_ok(st, "z", &f[0], 0);
	uint64_t zt = commit_ok(st, "z", NULL, 0);
	assert_ok(store_tombstones(st, &count, &oldest));
	assert_int_equal(count, 2);
	assert_int_equal(oldest, xt);

	store_stats before;
	assert_ok(store_stats_get(st, &before));
	expire_ctx e = {.only = "x"};
	uint64_t dropped = 0;
	assert_ok(store_expire_tombstones(st, expire_one, &e, &dropped));
	assert_int_equal(dropped, 1);
	assert_int_equal(e.calls, 2); /* x and z, never the live y */
	assert_int_equal(e.seen_seq, xt);

	record r;
	assert_int_equal(store_lookup(st, "x", &r), SS_ENOENT);
	assert_int_equal(history_len(st, "x"), 0);
	assert_ok(store_since(st, 0, 1000, no_path, (void *)"x"));
	/* The others are untouched. */
	assert_ok(store_lookup(st, "y", &r));
	assert_false(r.deleted);
	assert_ok(store_lookup(st, "z", &r));
	assert_true(r.deleted);
	assert_int_equal(history_len(st, "z"), 2);
	assert_ok(store_tombstones(st, &count, &oldest));
	assert_int_equal(count, 1);
	assert_int_equal(oldest, zt);

	/* The head never moves back, even when the newest version goes. */
	store_stats after;
	assert_ok(store_stats_get(st, &after));
	assert_int_equal(after.files, before.files);
	assert_int_equal(after.head_seq, before.head_seq);
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));
	assert_int_equal(dropped, 1);
	assert_ok(store_stats_get(st, &after));
	assert_int_equal(after.head_seq, zt);
	assert_ok(store_tombstones(st, &count, NULL));
	assert_int_equal(count, 0);
	/* A new version after the expiry gets a fresh sequence number. */
	uint64_t again = commit_ok(st, "x", &f[2], 0);
	assert_true(again > zt);
	assert_ok(store_lookup(st, "x", &r));
	assert_int_equal(r.vv.n, 1);
	/* Not back to 1: servers that still hold the path's old versions must
	 * see the new write as newer (one counter per node, never reset). */
	assert_true(r.vv.e[0].counter > 1);

	/* Many tombstones: more than one batch. */
	for (int i = 0; i < 150; i++) {
		char p[32];
		snprintf(p, sizeof p, "many/%03d", i);
		commit_ok(st, p, NULL, 0);
	}
	assert_ok(store_tombstones(st, &count, NULL));
	assert_int_equal(count, 150);
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));
	assert_int_equal(dropped, 150);
	assert_ok(store_tombstones(st, &count, NULL));
	assert_int_equal(count, 0);
	store_close(st);
	for (int i = 0; i < 3; i++)
		free_file(&f[i]);
}

/* ---- garbage collection ---- */

static void test_gc_reclaims_deleted_files(void **state)
{
	store *st = open_seg_max(1 * MiB);
	enum { NF = 10, NC = 64, LEN = 32 * KiB }; /* 10 files of 2 MiB */
	file_t f[NF], keep;
	for (int i = 0; i < NF; i++) {
		f[i] = mk_file(st, 100 + (uint64_t)i, NC, LEN);
		char p[32];
		snprintf(p, sizeof p, "bulk/%d", i);
		commit_ok(st, p, &f[i], 0);
		if (i == NF / 2) { /* a kept file among the garbage */
			keep = mk_file(st, 99, 16, 20 * KiB);
			commit_ok(st, "keep", &keep, 0);
		}
	}
	for (int i = 0; i < NF; i++) {
		char p[32];
		snprintf(p, sizeof p, "bulk/%d", i);
		commit_ok(st, p, NULL, 0);
	}
	uint64_t dropped;
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));
	assert_int_equal(dropped, NF);

	unsigned files_before, files_after;
	uint64_t disk_before = seg_dir_bytes(&files_before);
	assert_true(disk_before > (uint64_t)NF * NC * LEN);
	store_stats ss;
	assert_ok(store_stats_get(st, &ss));
	uint64_t chunks_before = ss.chunks;

	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	uint64_t disk_after = seg_dir_bytes(&files_after);
	print_message("gc: %llu chunks (%llu bytes) dropped, %llu compacted, %llu deleted; %llu -> %llu bytes "
		      "(%u -> %u files)\n",
		      (unsigned long long)gs.chunks_dropped, (unsigned long long)gs.bytes_dropped,
		      (unsigned long long)gs.segments_compacted, (unsigned long long)gs.segments_deleted,
		      (unsigned long long)disk_before, (unsigned long long)disk_after, files_before, files_after);
	/* Every data chunk and node of the deleted files went. */
	size_t nodes = 0;
	for (int i = 0; i < NF; i++)
		nodes += f[i].nnodes;
	assert_int_equal(gs.chunks_dropped, NF * NC + nodes);
	assert_true(gs.bytes_dropped >= (uint64_t)NF * NC * LEN);
	assert_int_equal(gs.bytes_before, disk_before);
	assert_int_equal(gs.bytes_after, disk_after);
	/* Space really came back: what is left is the kept file (320 KiB)
	 * and at most the active segment. */
	assert_true(disk_after < disk_before / 8);
	assert_true(disk_after < 2 * MiB);
	assert_true(files_after < files_before);
	assert_true(gs.segments_deleted > 0);
	assert_ok(store_stats_get(st, &ss));
	assert_int_equal(ss.chunks, chunks_before - gs.chunks_dropped);

	verify_current(st, "keep", &keep);
	for (int i = 0; i < NF; i++) {
		get_absent(st, f[i].c[0].id);
		get_absent(st, f[i].c[NC - 1].id);
		get_absent(st, f[i].root);
	}
	/* A second GC drops nothing more, but the segment that was active
	 * during the first (its garbage could not be compacted then) is
	 * sealed now and goes too. */
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 0);
	assert_true(gs.bytes_after <= disk_after);
	disk_after = seg_dir_bytes(NULL);
	assert_int_equal(gs.bytes_after, disk_after);
	assert_true(disk_after < 1 * MiB);

	/* After a reopen, everything kept still reads back and the counts
	 * agree with the index. */
	store_close(st);
	st = open_seg_max(1 * MiB);
	verify_current(st, "keep", &keep);
	assert_ok(store_stats_get(st, &ss));
	assert_int_equal(ss.chunks, keep.n + keep.nnodes);
	assert_int_equal(seg_dir_bytes(NULL), disk_after);
	store_close(st);
	for (int i = 0; i < NF; i++)
		free_file(&f[i]);
	free_file(&keep);
}

/* Files sharing chunks, history, a tombstone that is kept: GC keeps every
 * chunk reachable from any version still in the versions table. */
static void test_gc_keeps_reachable(void **state)
{
	store *st = open_seg_max(256 * KiB);
	enum { NC = 40, LEN = 8 * KiB };
	file_t a = mk_file(st, 1, NC, LEN);
	/* b: the first half of a's chunks, then its own. */
	file_t b = {.c = xcalloc(NC, sizeof(chunk_t)), .owned = xcalloc(NC, 1), .n = NC};
	for (size_t i = 0; i < NC; i++) {
		if (i < NC / 2) {
			b.c[i] = a.c[i];
		} else {
			b.c[i] = mk_chunk(2 * 100000 + i, LEN);
			b.owned[i] = true;
			put_ok(st, &b.c[i]);
		}
	}
	build_tree(st, &b);
	file_t c1 = mk_file(st, 3, NC, LEN), c2 = mk_file(st, 4, NC, LEN), d = mk_file(st, 5, NC, LEN);
	commit_ok(st, "a", &a, 0);
	commit_ok(st, "b", &b, 0);
	uint64_t c1seq = commit_ok(st, "c", &c1, 0); /* history */
	commit_ok(st, "c", &c2, 0);
	commit_ok(st, "d", &d, 0);
	commit_ok(st, "d", NULL, 0); /* deleted, tombstone not expired */
	/* Garbage: chunks no version names. */
	chunk_t g[20];
	for (int i = 0; i < 20; i++) {
		g[i] = mk_chunk(7000 + (uint64_t)i, LEN);
		put_ok(st, &g[i]);
	}

	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 20);
	for (int i = 0; i < 20; i++)
		get_absent(st, g[i].id);
	verify_current(st, "a", &a);
	verify_current(st, "b", &b);
	verify_current(st, "c", &c2);
	verify_file(st, &c1); /* an old version stays readable while kept */
	verify_file(st, &d);  /* so does a deleted file's last content */

	/* Expire the history of c and the tombstone of d, delete a: a's own
	 * chunks go, those it shares with b stay. */
	uint64_t dropped;
	assert_ok(store_expire_history(st, INT64_MAX, 0, UINT64_MAX, &dropped));
	assert_true(dropped >= 2);
	record r;
	assert_int_equal(store_lookup_version(st, "c", c1seq, &r), SS_ENOENT);
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));
	assert_int_equal(dropped, 1);
	commit_ok(st, "a", NULL, 0);
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, (NC / 2) + a.nnodes + (NC + c1.nnodes) + (NC + d.nnodes));
	verify_current(st, "b", &b);
	verify_current(st, "c", &c2);
	for (size_t i = 0; i < NC; i++) {
		if (i >= NC / 2)
			get_absent(st, a.c[i].id);
		get_absent(st, c1.c[i].id);
		get_absent(st, d.c[i].id);
	}
	store_close(st);
	st = open_seg_max(256 * KiB);
	verify_current(st, "b", &b);
	verify_current(st, "c", &c2);
	store_close(st);
	for (int i = 0; i < 20; i++)
		free(g[i].data);
	free_file(&b); /* b's shared chunks are a's */
	free_file(&a);
	free_file(&c1);
	free_file(&c2);
	free_file(&d);
}

/* A lease pins what is stored after it began, not what was stored before. */
static void test_gc_lease_pins_new_chunks(void **state)
{
	store *st = open_seg_max(256 * KiB);
	file_t f = mk_file(st, 1, 10, 10 * KiB);
	commit_ok(st, "f", &f, 0);
	chunk_t old[8], young[8];
	for (int i = 0; i < 8; i++) {
		old[i] = mk_chunk(500 + (uint64_t)i, 30 * KiB);
		put_ok(st, &old[i]);
	}
	assert_ok(store_flush(st));
	uint64_t lease = store_lease_begin(st);
	for (int i = 0; i < 8; i++) {
		young[i] = mk_chunk(600 + (uint64_t)i, 30 * KiB); /* crosses into new segments */
		put_ok(st, &young[i]);
	}
	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 8);
	for (int i = 0; i < 8; i++) {
		get_absent(st, old[i].id);
		get_ok(st, &young[i]);
	}
	/* Also across a reopen of nothing: a second GC under the lease keeps them. */
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 0);
	store_lease_end(st, lease);
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 8);
	for (int i = 0; i < 8; i++)
		get_absent(st, young[i].id);
	verify_current(st, "f", &f);
	store_close(st);
	for (int i = 0; i < 8; i++) {
		free(old[i].data);
		free(young[i].data);
	}
	free_file(&f);
}

/* An upload that found an old garbage chunk present is not protected by its
 * lease: GC may drop it, and the commit then fails naming it; sending the
 * chunk again makes the retry succeed. */
static void test_gc_found_present_then_commit_fails(void **state)
{
	store *st = open_seg_max(0);
	file_t f = mk_file(st, 1, 6, 4 * KiB);
	commit_ok(st, "old", &f, 0);
	commit_ok(st, "old", NULL, 0);
	uint64_t dropped;
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));

	/* The upload begins: chunk 0 is old garbage "found present", the
	 * others are new and sent. */
	uint64_t lease = store_lease_begin(st);
	assert_int_equal(store_has(st, f.c[0].id), 1);
	file_t g = {.c = xcalloc(6, sizeof(chunk_t)), .owned = xcalloc(6, 1), .n = 6};
	g.c[0] = f.c[0];
	for (size_t i = 1; i < 6; i++) {
		g.c[i] = mk_chunk(4000 + i, 3 * KiB);
		g.owned[i] = true;
		assert_int_equal(store_has(st, g.c[i].id), 0);
		assert_ok(store_put_absent_chunk(st, g.c[i].id, g.c[i].data, g.c[i].len));
	}
	build_tree(st, &g);
	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	/* f's chunks and node went; g's new chunks and node are pinned. */
	assert_int_equal(gs.chunks_dropped, f.n + f.nnodes);
	for (size_t i = 1; i < 6; i++)
		get_ok(st, &g.c[i]);
	record r = mk_rec("new", &g, 0);
	int rc = store_commit(st, &r);
	assert_int_equal(rc, SS_ENOENT);
	char want[64], hex[9];
	hex_encode(f.c[0].id, 4, hex);
	snprintf(want, sizeof want, "chunk %s", hex);
	assert_msg(rc, want);
	assert_msg(rc, "missing");
	/* The retry sends it (and the node above it, unmarked by the walk). */
	put_ok(st, &g.c[0]);
	free(g.nodes);
	g.nodes = NULL;
	g.nnodes = 0;
	build_tree(st, &g);
	r = mk_rec("new", &g, 0);
	assert_ok(store_commit(st, &r));
	store_lease_end(st, lease);
	assert_ok(store_gc(st, &gs));
	verify_current(st, "new", &g);
	store_close(st);
	g.owned[0] = false;
	free_file(&g);
	free_file(&f);
}

/* Two files interleaved chunk by chunk in the same segments; one goes, and
 * each segment it leaves less than half full is compacted. */
typedef struct mixed_t {
	file_t keep, gone;
} mixed_t;

static mixed_t mk_mixed(store *st, size_t n)
{
	mixed_t m = {0};
	file_t *k = &m.keep, *g = &m.gone;
	k->c = xcalloc(n, sizeof(chunk_t));
	k->owned = xcalloc(n, 1);
	g->c = xcalloc(n, sizeof(chunk_t));
	g->owned = xcalloc(n, 1);
	k->n = g->n = n;
	for (size_t i = 0; i < n; i++) {
		k->c[i] = mk_chunk(800000 + i, 8 * KiB);
		g->c[i] = mk_chunk(900000 + i, 24 * KiB);
		k->owned[i] = g->owned[i] = true;
		put_ok(st, &k->c[i]);
		put_ok(st, &g->c[i]);
	}
	build_tree(st, k);
	build_tree(st, g);
	commit_ok(st, "keep", k, 0);
	commit_ok(st, "gone", g, 0);
	commit_ok(st, "gone", NULL, 0);
	uint64_t dropped;
	assert_ok(store_expire_tombstones(st, expire_all, NULL, &dropped));
	assert_int_equal(dropped, 1);
	return m;
}

static void free_mixed(mixed_t *m)
{
	free_file(&m->keep);
	free_file(&m->gone);
}

/*
 * A segment fsync that fails inside garbage collection's copy step marks
 * the segment lost, and GC gives up with the error.  A put made before it
 * whose record sits in that segment was not durable: the next flush must
 * not index it (the next seg_sync skips lost segments and returns 0), but
 * report it lost, so it is sent again.  (A review of the O_DIRECT staging
 * on wip/segment-odirect found this broken there; main holds.)
 */
static void test_gc_failed_sync_loses_pending_put(void **state)
{
	store *st = open_seg_max(256 * KiB);
	mixed_t m = mk_mixed(st, 40);
	assert_ok(store_flush(st));
	chunk_t x = mk_chunk(777777, 8 * KiB);
	put_ok(st, &x); /* not flushed: in the active segment */
	fail_fsync_seg = 1;
	store_gc_stats gs;
	int rc = store_gc(st, &gs);
	fail_fsync_seg = 0;
	assert_true(rc != 0);
	rc = store_flush(st);
	assert_int_equal(rc, SS_EIO);
	assert_msg(rc, "lost");
	assert_int_equal(store_has(st, x.id), 0);
	/* Sent again, it is stored; nothing kept was lost. */
	put_ok(st, &x);
	assert_ok(store_flush(st));
	store_close(st);
	st = open_seg_max(256 * KiB);
	get_ok(st, &x);
	verify_current(st, "keep", &m.keep);
	store_close(st);
	free(x.data);
	free_mixed(&m);
}

static void test_gc_compacts_half_garbage_segment(void **state)
{
	store *st = open_seg_max(256 * KiB);
	mixed_t m = mk_mixed(st, 40); /* 1.25 MiB over 6 segments, 3/4 garbage */
	assert_ok(store_flush(st));
	assert_true(seg_exists(1) && seg_exists(2));
	unsigned nbefore;
	uint64_t before = seg_dir_bytes(&nbefore);
	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	unsigned nafter;
	uint64_t after = seg_dir_bytes(&nafter);
	print_message("compaction: %llu compacted, %llu deleted; %llu -> %llu bytes (%u -> %u files)\n",
		      (unsigned long long)gs.segments_compacted, (unsigned long long)gs.segments_deleted,
		      (unsigned long long)before, (unsigned long long)after, nbefore, nafter);
	assert_true(gs.segments_compacted >= 4);
	/* The old files are gone; their live records moved on. */
	assert_false(seg_exists(1));
	assert_false(seg_exists(2));
	assert_true(after < before / 2);
	verify_current(st, "keep", &m.keep);
	store_close(st);
	st = open_seg_max(256 * KiB);
	verify_current(st, "keep", &m.keep);
	for (size_t i = 0; i < m.gone.n; i++)
		get_absent(st, m.gone.c[i].id);
	/* Nothing more to do, and nothing is lost by doing it again. */
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 0);
	verify_current(st, "keep", &m.keep);
	store_close(st);
	free_mixed(&m);
}

/* A crash at each step of GC: the child process runs GC up to the step and
 * exits without closing anything; the store must open, read back every kept
 * chunk, and a later GC must delete what the interrupted one left behind. */
static void crash_at(int step)
{
	store *st = open_seg_max(256 * KiB);
	mixed_t m = mk_mixed(st, 40);
	store_close(st);
	unsigned nbefore;
	uint64_t before = seg_dir_bytes(&nbefore);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		store *cs = NULL;
		if (store_open(tdir, &cs))
			_exit(2);
		store_set_segment_max(cs, 256 * KiB);
		store_gc_debug_stop_after = step;
		store_gc_stats gs;
		int rc = store_gc(cs, &gs);
		_exit(rc ? 3 : 0); /* a crash: no close, no flush */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	st = open_seg_max(256 * KiB);
	verify_current(st, "keep", &m.keep);
	if (step == GC_STOP_AFTER_COPY || step == GC_STOP_AFTER_REPOINT)
		assert_true(seg_exists(1)); /* the old file is still there */
	if (step == GC_STOP_AFTER_UNLINK)
		assert_false(seg_exists(1));
	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	verify_current(st, "keep", &m.keep);
	assert_false(seg_exists(1));
	assert_false(seg_exists(2));
	unsigned nafter;
	uint64_t after = seg_dir_bytes(&nafter);
	print_message("crash after step %d: %llu -> %llu bytes (%u -> %u files)\n", step,
		      (unsigned long long)before, (unsigned long long)after, nbefore, nafter);
	assert_true(after < before / 2);
	for (size_t i = 0; i < m.gone.n; i++)
		get_absent(st, m.gone.c[i].id);
	/* Orphans of the interrupted copy are collected by yet another round:
	 * what is left is no more than one clean GC leaves. */
	assert_ok(store_gc(st, &gs));
	store_close(st);
	st = open_seg_max(256 * KiB);
	verify_current(st, "keep", &m.keep);
	store_stats ss;
	assert_ok(store_stats_get(st, &ss));
	assert_int_equal(ss.chunks, m.keep.n + m.keep.nnodes);
	store_close(st);
	free_mixed(&m);
}

static void test_gc_crash_after_sweep(void **state) { crash_at(GC_STOP_AFTER_SWEEP); }
static void test_gc_crash_after_copy(void **state) { crash_at(GC_STOP_AFTER_COPY); }
static void test_gc_crash_after_repoint(void **state) { crash_at(GC_STOP_AFTER_REPOINT); }
static void test_gc_crash_after_unlink(void **state) { crash_at(GC_STOP_AFTER_UNLINK); }

/* In the same process: stopped before the unlink, the store keeps working
 * (reads go to the copies) and the next GC deletes the orphan. */
static void test_gc_orphan_segment_collected(void **state)
{
	store *st = open_seg_max(256 * KiB);
	mixed_t m = mk_mixed(st, 40);
	store_gc_debug_stop_after = GC_STOP_AFTER_REPOINT;
	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	store_gc_debug_stop_after = GC_STOP_NONE;
	assert_true(seg_exists(1));
	assert_int_equal(gs.segments_deleted, 0);
	verify_current(st, "keep", &m.keep);
	assert_ok(store_gc(st, &gs));
	assert_false(seg_exists(1));
	assert_true(gs.segments_deleted >= 1);
	verify_current(st, "keep", &m.keep);
	store_close(st);
	free_mixed(&m);
}

/* A kept version whose tree lost a node: GC refuses to guess and drops
 * nothing. */
static void test_gc_stops_on_missing_node(void **state)
{
	store *st = open_seg_max(0);
	file_t f = mk_file(st, 1, 300, 200); /* two levels */
	commit_ok(st, "f", &f, 0);
	chunk_t g = mk_chunk(77, 1000);
	put_ok(st, &g);
	assert_true(f.nnodes >= 2);
	assert_ok(store_forget(st, f.nodes[0]));
	store_gc_stats gs;
	int rc = store_gc(st, &gs);
	assert_int_equal(rc, SS_ENOENT);
	assert_msg(rc, "garbage collection stopped");
	assert_msg(rc, "of f is missing");
	assert_int_equal(gs.chunks_dropped, 0);
	get_ok(st, &g);
	store_close(st);
	free(g.data);
	free_file(&f);
}

/* A segment recovery kept read-only (here: its header overwritten) may hold
 * records nothing indexes: GC never compacts or deletes it. */
static void test_gc_keeps_damaged_segment(void **state)
{
	store *st = open_seg_max(0);
	chunk_t g = mk_chunk(1, 5000);
	put_ok(st, &g);
	store_close(st);
	char p[300];
	snprintf(p, sizeof p, "%s/seg/%08u.seg", tdir, 1u);
	FILE *fp = fopen(p, "r+b");
	assert_non_null(fp);
	assert_int_equal(fwrite("XXXX", 1, 4, fp), 4);
	fclose(fp);
	st = open_seg_max(0);
	file_t f = mk_file(st, 2, 3, 1000); /* lands in segment 2 */
	commit_ok(st, "f", &f, 0);
	store_gc_stats gs;
	assert_ok(store_gc(st, &gs));
	assert_int_equal(gs.chunks_dropped, 1); /* its index row, not its file */
	assert_int_equal(gs.segments_deleted, 0);
	assert_true(seg_exists(1));
	verify_current(st, "f", &f);
	store_close(st);
	free(g.data);
	free_file(&f);
}

/* ---- online: GC while others put, commit, delete and read ---- */

typedef struct conc_t {
	store *st;
	file_t stable[4];
	volatile int stop;
	unsigned commits, retries, reads, expired;
	uint64_t seed;
} conc_t;

/* Writers: upload a file under a lease and delete every other one again;
 * rounds 2k and 2k+1 share half their chunks, so the odd round finds
 * present chunks of a deleted (maybe expired) file.  A commit refused
 * because GC took one of those is retried like a client would: what is
 * absent now is sent again. */
static void *writer(void *arg)
{
	conc_t *c = arg;
	store *st = c->st;
	for (unsigned round = 0; !c->stop && round < 40; round++) {
		uint64_t lease = store_lease_begin(st);
		file_t f = {.c = xcalloc(24, sizeof(chunk_t)), .owned = xcalloc(24, 1), .n = 24};
		for (size_t i = 0; i < f.n; i++) {
			uint64_t seed = c->seed * 1000000 + (i % 2 ? round : round & ~1u) * 100 + i;
			f.c[i] = mk_chunk(seed, 6 * KiB + i * 100);
			f.owned[i] = true;
			int have = store_has(st, f.c[i].id);
			assert_true(have >= 0);
			if (!have)
				assert_ok(store_put_chunk(st, f.c[i].id, f.c[i].data, f.c[i].len));
		}
		build_tree(st, &f);
		char path[64];
		snprintf(path, sizeof path, "w%llu/%u", (unsigned long long)c->seed, round);
		record r = mk_rec(path, &f, 0);
		int rc;
		for (int tries = 0; (rc = store_commit(st, &r)) == SS_ENOENT && tries < 5; tries++) {
			c->retries++;
			for (size_t i = 0; i < f.n; i++)
				assert_ok(store_put_chunk(st, f.c[i].id, f.c[i].data, f.c[i].len));
			free(f.nodes);
			f.nodes = NULL;
			f.nnodes = 0;
			build_tree(st, &f);
			r = mk_rec(path, &f, 0);
		}
		if (rc)
			fail_msg("writer commit: %s", ss_errmsg(rc));
		store_lease_end(st, lease);
		c->commits++;
		verify_file(st, &f);
		if (round % 2 == 0) {
			record t = mk_rec(path, NULL, 0);
			assert_ok(store_commit(st, &t));
		}
		free_file(&f);
	}
	return NULL;
}

static void *reader(void *arg)
{
	conc_t *c = arg;
	while (!c->stop) {
		for (int i = 0; i < 4; i++)
			verify_file(c->st, &c->stable[i]);
		c->reads++;
	}
	return NULL;
}

static void *expirer(void *arg)
{
	conc_t *c = arg;
	while (!c->stop) {
		uint64_t n;
		assert_ok(store_expire_tombstones(c->st, expire_all, NULL, &n));
		assert_ok(store_expire_history(c->st, INT64_MAX, 0, UINT64_MAX, NULL));
		c->expired += (unsigned)n;
		usleep(2000);
	}
	return NULL;
}

static void test_gc_concurrent(void **state)
{
	store *st = open_seg_max(128 * KiB);
	conc_t w[2] = {{.st = st, .seed = 1}, {.st = st, .seed = 2}};
	conc_t shared = {.st = st};
	for (int i = 0; i < 4; i++) {
		shared.stable[i] = mk_file(st, 40 + (uint64_t)i, 12, 7 * KiB);
		char p[32];
		snprintf(p, sizeof p, "stable/%d", i);
		commit_ok(st, p, &shared.stable[i], 0);
		/* Garbage between them, so their segments get compacted. */
		file_t g = mk_file(st, 50 + (uint64_t)i, 12, 20 * KiB);
		free_file(&g);
	}
	pthread_t tw[2], tr, te;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&tw[i], NULL, writer, &w[i]), 0);
	assert_int_equal(pthread_create(&tr, NULL, reader, &shared), 0);
	assert_int_equal(pthread_create(&te, NULL, expirer, &shared), 0);
	uint64_t dropped = 0, compacted = 0, deleted = 0;
	unsigned rounds = 0;
	for (;;) {
		store_gc_stats gs;
		assert_ok(store_gc(st, &gs));
		rounds++;
		dropped += gs.chunks_dropped;
		compacted += gs.segments_compacted;
		deleted += gs.segments_deleted;
		if (w[0].commits >= 40 && w[1].commits >= 40)
			break;
		usleep(1000);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(tw[i], NULL);
	shared.stop = 1;
	pthread_join(tr, NULL);
	pthread_join(te, NULL);
	print_message("concurrent: %u GC rounds, %llu chunks dropped, %llu segments compacted, %llu deleted; "
		      "%u + %u commits (%u + %u retried), %u reads, %u tombstones expired\n",
		      rounds, (unsigned long long)dropped, (unsigned long long)compacted,
		      (unsigned long long)deleted, w[0].commits, w[1].commits, w[0].retries, w[1].retries,
		      shared.reads, shared.expired);
	assert_true(dropped > 0);

	/* Every live file reads back whole, before and after a final GC and
	 * a reopen. */
	for (int pass = 0; pass < 3; pass++) {
		if (pass == 1) {
			store_gc_stats gs;
			assert_ok(store_gc(st, &gs));
		}
		if (pass == 2) {
			store_close(st);
			st = open_seg_max(128 * KiB);
		}
		for (int i = 0; i < 4; i++) {
			char p[32];
			snprintf(p, sizeof p, "stable/%d", i);
			verify_current(st, p, &shared.stable[i]);
		}
		for (int k = 0; k < 2; k++)
			for (unsigned round = 1; round < 40; round += 2) {
				char p[64];
				snprintf(p, sizeof p, "w%d/%u", k + 1, round);
				record r;
				assert_ok(store_lookup(st, p, &r));
				assert_false(r.deleted);
				assert_int_equal(walk_tree(st, r.root), r.size);
			}
	}
	store_close(st);
	for (int i = 0; i < 4; i++)
		free_file(&shared.stable[i]);
}

int main(void)
{
	log_level = LOG_WARN;

	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_expire_history, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_tombstones, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_reclaims_deleted_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_keeps_reachable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_lease_pins_new_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_found_present_then_commit_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_compacts_half_garbage_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_crash_after_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_crash_after_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_crash_after_repoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_crash_after_unlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_orphan_segment_collected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_stops_on_missing_node, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_keeps_damaged_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_failed_sync_loses_pending_put, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
