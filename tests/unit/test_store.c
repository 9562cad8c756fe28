/*
 * test_store.c — the chunk store and the metadata: durability across
 * reopen, verification on read, torn-tail and unindexed-record recovery,
 * commit checks, the namespace, the data directory's guards (format, lock,
 * permissions), a full disk, and concurrent group commit.
 *
 * Each test works in its own temporary directory.  Segment files are edited
 * behind the store's back using the record format documented in segment.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chunk/chunk.h"
#include "store/segment.h"
#include "store/store.h"
#include "util/util.h"

#define NODE_A 0x1111222233334444ULL

/*
 * Fault injection: this executable's fsync and fdatasync stand in for
 * libc's (SQLite's calls bind to them too), failing with EIO for the next
 * fail_fsync_seg calls on a segment file or fail_fsync_wal on SQLite's WAL.
 */
static int fail_fsync_seg, fail_fsync_wal;

static bool fd_is(int fd, const char *suffix)
{
	char link[64], target[512];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t l = readlink(link, target, sizeof target - 1);
	if (l <= 0)
		return false;
	target[l] = 0;
	size_t n = strlen(suffix);
	return (size_t)l >= n && !strcmp(target + l - n, suffix);
}

static bool inject(int fd)
{
	if (fail_fsync_seg && fd_is(fd, ".seg")) {
		fail_fsync_seg--;
		return true;
	}
	if (fail_fsync_wal && fd_is(fd, "-wal")) {
		fail_fsync_wal--;
		return true;
	}
	return false;
}

int fsync(int fd)
{
	if (inject(fd)) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd)
{
	if (inject(fd)) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* ---- helpers ---- */

static char tdir[256]; /* the test's data directory */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int setup(void **state)
{
	char tmpl[] = "/tmp/ss_test_store_XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	chmod(tmpl, 0755);
	snprintf(tdir, sizeof tdir, "%s/data", tmpl);
	return 0;
}

static int teardown(void **state)
{
	char top[256];
	snprintf(top, sizeof top, "%s", tdir);
	*strrchr(top, '/') = 0;
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* The error message must mention want; print it if it does not. */
#define assert_msg(rc, want)                                                                       \
	do {                                                                                       \
		const char *m_ = ss_errmsg(rc);                                                    \
		if (!strstr(m_, want))                                                             \
			fail_msg("message \"%s\" lacks \"%s\"", m_, want);                           \
	} while (0)

static store *open_ok(void)
{
	store *st = NULL;
	int rc = store_open(tdir, &st);
	if (rc)
		fail_msg("store_open: %s", ss_errmsg(rc));
	store_set_node(st, NODE_A);
	return st;
}

/* Deterministic pseudo-random bytes. */
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
	int rc = store_put_chunk(st, c->id, c->data, c->len);
	if (rc)
		fail_msg("store_put_chunk: %s", ss_errmsg(rc));
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

static void seg_file(unsigned num, char out[300])
{
	snprintf(out, 300, "%s/seg/%08u.seg", tdir, num);
}

static off_t file_size(const char *path)
{
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_size;
}

/* A file of nchunks data chunks: the tree's nodes go to the store through
 * the builder; data chunks are put unless their index is skip. */
typedef struct file_t {
	chunk_t *c;
	size_t n;
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
	return store_put_chunk(st, id, node, len);
}

static file_t mk_file(store *st, uint64_t seed, size_t n, size_t len, long skip)
{
	file_t f = {.c = xcalloc(n ? n : 1, sizeof(chunk_t)), .n = n};
	tree_builder *tb = xmalloc(sizeof *tb);
	void *ctx[2] = {st, &f};
	tree_init(tb, emit_node, ctx);
	for (size_t i = 0; i < n; i++) {
		f.c[i] = mk_chunk(seed * 100000 + i, len);
		if ((long)i != skip)
			put_ok(st, &f.c[i]);
		assert_int_equal(tree_add(tb, f.c[i].id, len), 0);
	}
	assert_int_equal(tree_finish(tb, f.root, &f.size), 0);
	free(tb);
	return f;
}

static void free_file(file_t *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->c[i].data);
	free(f->c);
	free(f->nodes);
}

static record *mk_rec(const char *path, const file_t *f)
{
	record *r = xcalloc(1, sizeof *r);
	snprintf(r->path, sizeof r->path, "%s", path);
	r->size = f ? f->size : 0;
	r->mode = 0644;
	r->mtime_ns = 1700000000000000000LL;
	if (f)
		memcpy(r->root, f->root, HASH_LEN);
	else
		r->deleted = true;
	return r;
}

static void commit_ok(store *st, record *r)
{
	int rc = store_commit(st, r);
	if (rc)
		fail_msg("store_commit %s: %s", r->path, ss_errmsg(rc));
}

/* ---- chunks ---- */

static void test_put_get_roundtrip(void **state)
{
	store *st = open_ok();
	chunk_t c = mk_chunk(1, 40000), d = mk_chunk(2, 1);
	assert_int_equal(store_has(st, c.id), 0);
	put_ok(st, &c);
	/* Pending, not yet indexed: present and readable already. */
	assert_int_equal(store_has(st, c.id), 1);
	get_ok(st, &c);
	assert_int_equal(store_flush(st), 0);
	assert_int_equal(store_has(st, c.id), 1);
	get_ok(st, &c);

	/* Idempotent: a second put appends nothing. */
	char seg[300];
	seg_file(1, seg);
	off_t before = file_size(seg);
	assert_int_equal(before, SEG_FILE_HDR + SEG_REC_HDR + 40000);
	put_ok(st, &c);
	assert_int_equal(file_size(seg), before);

	put_ok(st, &d);
	put_ok(st, &d);
	assert_int_equal(store_flush(st), 0);
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, 2);
	assert_int_equal(ss.chunk_bytes, 40001);

	/* Absent chunk, and a buffer too small for the chunk. */
	chunk_t e = mk_chunk(3, 10);
	buf b;
	buf_init(&b, 100);
	int rc = store_get_chunk(st, e.id, &b);
	assert_int_equal(rc, SS_ENOENT);
	assert_msg(rc, "not found");
	assert_int_equal(store_get_chunk(st, c.id, &b), SS_ETOOBIG);
	assert_int_equal(b.len, 0);
	buf_free(&b);

	/* Too large for a record. */
	uint8_t *big = xcalloc(1, SEG_CHUNK_MAX + 1);
	rc = store_put_chunk(st, e.id, big, SEG_CHUNK_MAX + 1);
	assert_int_equal(rc, SS_ETOOBIG);
	free(big);

	store_close(st);
	free(c.data);
	free(d.data);
	free(e.data);
}

static void test_reopen_keeps_chunks_and_records(void **state)
{
	store *st = open_ok();
	file_t f = mk_file(st, 7, 50, 3000, -1);
	record *r = mk_rec("docs/a.txt", &f);
	commit_ok(st, r);
	assert_int_equal(r->seq, 1);
	store_close(st);

	/* FORMAT, LOCK, meta.db and the segment are there. */
	char p[400];
	buf b;
	buf_init(&b, 1 << 16);
	snprintf(p, sizeof p, "%s/FORMAT", tdir);
	assert_int_equal(read_file_small(p, &b), 0);
	assert_int_equal(b.len, strlen("syncstore-store 2\n"));
	assert_memory_equal(b.p, "syncstore-store 2\n", b.len);
	buf_free(&b);

	st = open_ok();
	for (size_t i = 0; i < f.n; i++) {
		assert_int_equal(store_has(st, f.c[i].id), 1);
		get_ok(st, &f.c[i]);
	}
	record *got = xcalloc(1, sizeof *got);
	assert_int_equal(store_lookup(st, "docs/a.txt", got), 0);
	assert_string_equal(got->path, "docs/a.txt");
	assert_int_equal(got->seq, 1);
	assert_int_equal(got->size, 150000);
	assert_int_equal(got->mode, 0644);
	assert_memory_equal(got->root, f.root, HASH_LEN);
	assert_false(got->deleted);
	assert_int_equal(got->vv.n, 1);
	assert_true(got->vv.e[0].node == NODE_A);
	assert_true(got->vv.e[0].counter > 0);
	assert_true(got->origin == NODE_A);
	assert_true(got->otime_ns > 0);
	store_close(st);
	free(got);
	free(r);
	free_file(&f);
}

/* Flip one byte of the chunk's bytes or of its record header on disk. */
static void flip(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t c;
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void test_get_verifies(void **state)
{
	store *st = open_ok();
	chunk_t a = mk_chunk(11, 5000), c = mk_chunk(12, 5000);
	put_ok(st, &a);
	put_ok(st, &c);
	assert_int_equal(store_flush(st), 0);
	store_close(st);

	char seg[300];
	seg_file(1, seg);
	uint64_t coff = SEG_FILE_HDR + SEG_REC_HDR + 5000;
	flip(seg, (off_t)(coff + SEG_REC_HDR + 1234));

	st = open_ok();
	buf b;
	buf_init(&b, SEG_CHUNK_MAX);
	int rc = store_get_chunk(st, c.id, &b);
	assert_int_equal(rc, SS_ECORRUPT);
	char want[100], hex[9];
	hex_encode(c.id, 4, hex);
	snprintf(want, sizeof want, "chunk %s", hex);
	assert_msg(rc, want);
	snprintf(want, sizeof want, "corrupt on disk (segment 00000001 offset %llu)", (unsigned long long)coff);
	assert_msg(rc, want);
	assert_int_equal(b.len, 0); /* the bad bytes are never handed out */
	get_ok(st, &a);

	/* Damage the header's id too, while the store is open. */
	flip(seg, SEG_FILE_HDR + 16);
	assert_int_equal(store_get_chunk(st, a.id, &b), SS_ECORRUPT);
	assert_int_equal(b.len, 0);
	buf_free(&b);
	store_close(st);
	free(a.data);
	free(c.data);
}

/* Append a record per segment.c's table, behind the store's back. */
static void append_record(const char *path, const chunk_t *c, uint32_t flags)
{
	uint8_t h[SEG_REC_HDR] = {0};
	memcpy(h, "SSCK", 4);
	le32(h + 4, flags);
	le32(h + 8, (uint32_t)c->len);
	memcpy(h + 16, c->id, HASH_LEN);
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, h, sizeof h), sizeof h);
	assert_int_equal(write(fd, c->data, c->len), (ssize_t)c->len);
	close(fd);
}

static void test_torn_tail_recovers(void **state)
{
	store *st = open_ok();
	chunk_t c[4];
	for (int i = 0; i < 3; i++) {
		c[i] = mk_chunk(20 + (uint64_t)i, 7000);
		put_ok(st, &c[i]);
	}
	assert_int_equal(store_flush(st), 0);
	store_close(st);

	char seg[300];
	seg_file(1, seg);
	off_t whole = file_size(seg);
	/* A fourth record cut in the middle of its bytes... */
	c[3] = mk_chunk(23, 7000);
	append_record(seg, &c[3], 0);
	assert_int_equal(truncate(seg, whole + SEG_REC_HDR + 3000), 0);
	st = open_ok();
	assert_int_equal(file_size(seg), whole);
	assert_int_equal(store_has(st, c[3].id), 0);
	for (int i = 0; i < 3; i++)
		get_ok(st, &c[i]);
	/* ...and the store stays writable at the cut. */
	put_ok(st, &c[3]);
	assert_int_equal(store_flush(st), 0);
	store_close(st);
	assert_int_equal(file_size(seg), whole + SEG_REC_HDR + 7000);

	/* Garbage after the last record, and a record with an unknown flag
	 * (which this format version never writes). */
	whole = file_size(seg);
	int fd = open(seg, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, "garbage!garbage!garbage!garbage!garbage!garbage!garbage!", 56), 56);
	close(fd);
	st = open_ok();
	assert_int_equal(file_size(seg), whole);
	store_close(st);
	chunk_t x = mk_chunk(24, 100);
	append_record(seg, &x, 1);
	st = open_ok();
	assert_int_equal(file_size(seg), whole);
	assert_int_equal(store_has(st, x.id), 0);
	for (int i = 0; i < 4; i++)
		get_ok(st, &c[i]);
	store_close(st);
	for (int i = 0; i < 4; i++)
		free(c[i].data);
	free(x.data);
}

static void test_unindexed_records_reindexed(void **state)
{
	store *st = open_ok();
	chunk_t a = mk_chunk(30, 9000);
	put_ok(st, &a);
	assert_int_equal(store_flush(st), 0);
	store_close(st);

	/* Bytes written, index batch never committed. */
	char seg[300];
	seg_file(1, seg);
	chunk_t b = mk_chunk(31, 12345), c = mk_chunk(32, 0);
	append_record(seg, &b, 0);
	append_record(seg, &c, 0);
	st = open_ok();
	assert_int_equal(store_has(st, b.id), 1);
	assert_int_equal(store_has(st, c.id), 1);
	get_ok(st, &b);
	get_ok(st, &c);
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, 3);
	store_close(st);

	/* A server that dies without flushing: its puts come back at open. */
	chunk_t d[20];
	for (int i = 0; i < 20; i++)
		d[i] = mk_chunk(40 + (uint64_t)i, 20000);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		store *cs = NULL;
		if (store_open(tdir, &cs))
			_exit(1);
		for (int i = 0; i < 20; i++)
			if (store_put_chunk(cs, d[i].id, d[i].data, d[i].len))
				_exit(2);
		_exit(0); /* no flush, no close */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	st = open_ok();
	for (int i = 0; i < 20; i++) {
		assert_int_equal(store_has(st, d[i].id), 1);
		get_ok(st, &d[i]);
	}
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, 23);
	store_close(st);
	for (int i = 0; i < 20; i++)
		free(d[i].data);
	free(a.data);
	free(b.data);
	free(c.data);
}

static void test_segments_roll(void **state)
{
	store *st = open_ok();
	enum { N = 560, LEN = 128 * 1024 }; /* 70 MiB: more than one segment */
	uint8_t *data = xmalloc(LEN);
	uint8_t (*ids)[HASH_LEN] = xmalloc(N * HASH_LEN);
	for (int i = 0; i < N; i++) {
		fill(data, LEN, 1000 + (uint64_t)i);
		sha256(data, LEN, ids[i]);
		assert_int_equal(store_put_chunk(st, ids[i], data, LEN), 0);
	}
	assert_int_equal(store_flush(st), 0);
	store_close(st);
	char seg[300];
	seg_file(1, seg);
	assert_true(file_size(seg) <= STORE_SEGMENT_MAX);
	seg_file(2, seg);
	assert_true(file_size(seg) > SEG_FILE_HDR);

	st = open_ok();
	buf b;
	buf_init(&b, LEN);
	for (int i = 0; i < N; i += 37) {
		assert_int_equal(store_get_chunk(st, ids[i], &b), 0);
		fill(data, LEN, 1000 + (uint64_t)i);
		assert_memory_equal(b.p, data, LEN);
	}
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, N);
	buf_free(&b);
	store_close(st);
	free(data);
	free(ids);
}

/* More segments than SEG_OPEN_MAX: idle descriptors are closed and
 * reopened on demand.  The segments are written by hand (one record each)
 * so the test needs no gigabytes. */
static int count_seg_fds(void)
{
	int n = 0;
	char link[64], target[512];
	for (int fd = 0; fd < 4096; fd++) {
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t l = readlink(link, target, sizeof target - 1);
		if (l <= 0)
			continue;
		target[l] = 0;
		if (strstr(target, ".seg"))
			n++;
	}
	return n;
}

static void test_many_segments(void **state)
{
	enum { NSEG = SEG_OPEN_MAX + 36 };
	store *st = open_ok();
	store_close(st);
	chunk_t *c = xcalloc(NSEG, sizeof *c);
	for (unsigned i = 0; i < NSEG; i++) {
		char seg[300];
		seg_file(i + 1, seg);
		uint8_t h[SEG_FILE_HDR] = {0};
		memcpy(h, "SSSG", 4);
		le32(h + 4, SEG_VERSION);
		le32(h + 8, i + 1);
		int fd = open(seg, O_WRONLY | O_CREAT | O_EXCL, 0644);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, h, sizeof h), sizeof h);
		close(fd);
		c[i] = mk_chunk(900 + i, 1000 + i);
		append_record(seg, &c[i], 0);
	}
	st = open_ok();
	assert_true(count_seg_fds() <= SEG_OPEN_MAX + 1);
	for (int round = 0; round < 2; round++)
		for (unsigned i = 0; i < NSEG; i++)
			get_ok(st, &c[i]);
	assert_true(count_seg_fds() <= SEG_OPEN_MAX + 1);
	/* Appends continue in the newest segment. */
	chunk_t x = mk_chunk(899, 5000);
	put_ok(st, &x);
	assert_int_equal(store_flush(st), 0);
	char seg[300];
	seg_file(NSEG, seg);
	assert_int_equal(file_size(seg), SEG_FILE_HDR + 2 * SEG_REC_HDR + 1000 + NSEG - 1 + 5000);
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, NSEG + 1);
	store_close(st);
	for (unsigned i = 0; i < NSEG; i++)
		free(c[i].data);
	free(c);
	free(x.data);
}

/* ---- commit ---- */

/* A tree builder emit that stores every node but the first one. */
struct skipctx {
	store *st;
	int seen;
};

static int skip_first(void *ctx, uint8_t level, const uint8_t *node, size_t len, const uint8_t id[HASH_LEN],
		      uint64_t size)
{
	struct skipctx *sc = ctx;
	if (sc->seen++ == 0)
		return 0;
	return store_put_chunk(sc->st, id, node, len);
}

static void test_commit_refuses_missing_chunks(void **state)
{
	store *st = open_ok();
	/* 400 small chunks: a tree of two levels. */
	file_t f = mk_file(st, 50, 400, 100, 123);
	record *r = mk_rec("big.bin", &f);
	int rc = store_commit(st, r);
	assert_int_equal(rc, SS_ENOENT);
	char want[100], hex[9];
	hex_encode(f.c[123].id, 4, hex);
	snprintf(want, sizeof want, "commit of big.bin refused: chunk %s", hex);
	assert_msg(rc, want);
	assert_msg(rc, "missing");
	assert_int_equal(r->seq, 0);
	record *got = xcalloc(1, sizeof *got);
	assert_int_equal(store_lookup(st, "big.bin", got), SS_ENOENT);

	/* A root that was never stored. */
	record *r2 = mk_rec("other.bin", &f);
	r2->root[0] ^= 1;
	assert_int_equal(store_commit(st, r2), SS_ENOENT);

	/* A size that disagrees with the manifest. */
	put_ok(st, &f.c[123]);
	r->size++;
	assert_int_equal(store_commit(st, r), SS_EINVAL);
	r->size--;
	commit_ok(st, r);
	assert_int_equal(store_lookup(st, "big.bin", got), 0);
	assert_int_equal(got->size, 40000);
	store_close(st);

	/* A missing interior node is refused as well: a fresh store holding
	 * every data chunk and every node but one leaf node. */
	teardown(state);
	setup(state);
	st = open_ok();
	file_t g = mk_file(st, 50, 400, 100, -1);
	assert_true(g.nnodes > 2);
	store_close(st);
	teardown(state);
	setup(state);
	st = open_ok();
	tree_builder *tb = xmalloc(sizeof *tb);
	for (size_t i = 0; i < g.n; i++)
		put_ok(st, &g.c[i]);
	/* Rebuild the nodes, storing all but the first one emitted. */
	struct skipctx sc = {st, 0};
	tree_init(tb, skip_first, &sc);
	for (size_t i = 0; i < g.n; i++)
		assert_int_equal(tree_add(tb, g.c[i].id, 100), 0);
	uint8_t root[HASH_LEN];
	uint64_t size;
	assert_int_equal(tree_finish(tb, root, &size), 0);
	assert_memory_equal(root, g.root, HASH_LEN);
	record *r3 = mk_rec("g.bin", &g);
	rc = store_commit(st, r3);
	assert_int_equal(rc, SS_ENOENT);
	hex_encode(g.nodes[0], 4, hex);
	snprintf(want, sizeof want, "chunk %s", hex);
	assert_msg(rc, want);
	store_close(st);
	free(tb);
	free(r);
	free(r2);
	free(r3);
	free(got);
	free_file(&f);
	free_file(&g);
}

/* ---- namespace ---- */

typedef struct collect {
	store *st;
	char paths[256][64];
	uint64_t seqs[256];
	int n;
} collect;

static int collect_fn(void *ctx, const record *r)
{
	collect *c = ctx;
	snprintf(c->paths[c->n], sizeof c->paths[0], "%.63s", r->path);
	c->seqs[c->n++] = r->seq;
	if (c->st) {
		/* Callbacks may use the store: no lock is held. */
		record *x = xmalloc(sizeof *x);
		assert_int_equal(store_lookup(c->st, r->path, x), 0);
		free(x);
	}
	return 0;
}

/* The documented digest (store.c): each live record adds SHA-256(path ·
 * 0x00 · root · n u32 LE · n × (node, counter) u64 LE) to a 256-bit sum. */
static void digest_add(uint8_t sum[32], const char *path, const uint8_t root[HASH_LEN], const uint64_t (*vv)[2],
		       unsigned n)
{
	uint8_t b[4096], h[HASH_LEN];
	size_t len = strlen(path);
	memcpy(b, path, len);
	b[len++] = 0;
	memcpy(b + len, root, HASH_LEN);
	len += HASH_LEN;
	le32(b + len, n);
	len += 4;
	for (unsigned i = 0; i < n; i++) {
		le64(b + len, vv[i][0]);
		le64(b + len + 8, vv[i][1]);
		len += 16;
	}
	sha256(b, len, h);
	unsigned carry = 0;
	for (int i = 0; i < 32; i++) {
		carry += (unsigned)sum[i] + h[i];
		sum[i] = (uint8_t)carry;
		carry >>= 8;
	}
}

static void test_namespace(void **state)
{
	store *st = open_ok();
	file_t f1 = mk_file(st, 60, 3, 1000, -1), f2 = mk_file(st, 61, 5, 1000, -1), f0 = mk_file(st, 62, 0, 1, -1);
	const char *paths[] = {"b/d", "a", "b/c", "bc", "b!", "empty"};
	/* One counter per node for the whole store (vv_bump), growing with
	 * every write and never below the wall clock in microseconds. */
	uint64_t last = (uint64_t)(now_wall_ns() / 1000) - 1, a2 = 0, cnt[6];
	for (unsigned i = 0; i < ARRAY_LEN(paths); i++) {
		record *r = mk_rec(paths[i], i == 5 ? &f0 : &f1);
		commit_ok(st, r);
		assert_int_equal(r->seq, i + 1);
		assert_int_equal(r->vv.n, 1);
		assert_true(r->vv.e[0].counter > last);
		cnt[i] = last = r->vv.e[0].counter;
		if (i == 1)
			a2 = last;
		free(r);
	}
	/* An update bumps this node's counter; another node's write adds an
	 * entry, kept sorted by node. */
	record *r = mk_rec("a", &f2);
	commit_ok(st, r);
	assert_int_equal(r->seq, 7);
	assert_true(r->vv.e[0].counter > last);
	uint64_t a7 = last = r->vv.e[0].counter;
	store_set_node(st, 0x0000000000000005ULL);
	commit_ok(st, r);
	assert_int_equal(r->seq, 8);
	assert_int_equal(r->vv.n, 2);
	assert_true(r->vv.e[0].node == 5 && r->vv.e[0].counter > last);
	uint64_t c5 = last = r->vv.e[0].counter;
	assert_true(r->vv.e[1].node == NODE_A && r->vv.e[1].counter == a7);
	assert_true(r->origin == 5);
	store_set_node(st, NODE_A);

	record *got = xcalloc(1, sizeof *got);
	assert_int_equal(store_lookup(st, "a", got), 0);
	assert_int_equal(got->seq, 8);
	assert_memory_equal(got->root, f2.root, HASH_LEN);
	assert_int_equal(store_lookup_version(st, "a", 2, got), 0);
	assert_memory_equal(got->root, f1.root, HASH_LEN);
	assert_true(got->vv.e[0].counter == a2);
	assert_int_equal(store_lookup_version(st, "a", 3, got), SS_ENOENT);
	assert_int_equal(store_lookup(st, "nope", got), SS_ENOENT);

	collect *c = xcalloc(1, sizeof *c);
	assert_int_equal(store_list(st, "", collect_fn, c), 0);
	assert_int_equal(c->n, 6);
	const char *sorted[] = {"a", "b!", "b/c", "b/d", "bc", "empty"};
	for (int i = 0; i < 6; i++)
		assert_string_equal(c->paths[i], sorted[i]);
	memset(c, 0, sizeof *c);
	assert_int_equal(store_list(st, "b", collect_fn, c), 0);
	assert_int_equal(c->n, 2);
	assert_string_equal(c->paths[0], "b/c");
	assert_string_equal(c->paths[1], "b/d");
	memset(c, 0, sizeof *c);
	assert_int_equal(store_list(st, "b/", collect_fn, c), 0);
	assert_int_equal(c->n, 2);
	memset(c, 0, sizeof *c);
	assert_int_equal(store_list(st, "b/c", collect_fn, c), 0);
	assert_int_equal(c->n, 1);

	memset(c, 0, sizeof *c);
	assert_int_equal(store_history(st, "a", collect_fn, c), 0);
	assert_int_equal(c->n, 3);
	assert_int_equal(c->seqs[0], 8);
	assert_int_equal(c->seqs[1], 7);
	assert_int_equal(c->seqs[2], 2);

	/* Delete: a tombstone, hidden from list, kept in history. */
	record *del = mk_rec("bc", NULL);
	commit_ok(st, del);
	assert_int_equal(store_lookup(st, "bc", got), 0);
	assert_true(got->deleted);
	assert_true(got->vv.e[0].counter > last);
	last = got->vv.e[0].counter;
	memset(c, 0, sizeof *c);
	assert_int_equal(store_list(st, "", collect_fn, c), 0);
	assert_int_equal(c->n, 5);
	memset(c, 0, sizeof *c);
	assert_int_equal(store_history(st, "bc", collect_fn, c), 0);
	assert_int_equal(c->n, 2);

	/* Rename: the new path gets the content, the old one a tombstone. */
	record *nr = xcalloc(1, sizeof *nr);
	assert_int_equal(store_rename(st, "b/c", "moved/c", nr), 0);
	assert_string_equal(nr->path, "moved/c");
	assert_memory_equal(nr->root, f1.root, HASH_LEN);
	assert_int_equal(nr->size, 3000);
	assert_int_equal(nr->vv.n, 1);
	assert_true(nr->vv.e[0].counter > last);
	last = nr->vv.e[0].counter;
	assert_int_equal(store_lookup(st, "moved/c", got), 0);
	assert_int_equal(got->seq, nr->seq);
	assert_false(got->deleted);
	assert_int_equal(store_lookup(st, "b/c", got), 0);
	assert_true(got->deleted);
	assert_true(got->vv.e[0].counter > last);
	last = got->vv.e[0].counter;
	assert_int_equal(got->seq, nr->seq + 1);
	int rc = store_rename(st, "b/c", "x", nr);
	assert_int_equal(rc, SS_ENOENT);
	assert_msg(rc, "cannot rename b/c");
	/* Renaming onto an existing path continues that path's history. */
	assert_int_equal(store_rename(st, "moved/c", "a", nr), 0);
	assert_int_equal(nr->vv.n, 2);
	assert_true(nr->vv.e[1].counter > last);
	uint64_t ca = nr->vv.e[1].counter;
	assert_memory_equal(nr->root, f1.root, HASH_LEN);

	/* Bad paths never reach the namespace. */
	record *bad = mk_rec("../etc/passwd", &f1);
	assert_int_equal(store_commit(st, bad), SS_EINVAL);
	free(bad);

	/* Stats and the digest, computed here from the documented bytes.
	 * Current now: a (live, f1, {5:c5, A:ca}), b! (f1, {A:cnt[4]}), b/c
	 * (deleted), b/d (f1, {A:cnt[0]}), bc (deleted), empty (f0,
	 * {A:cnt[5]}), moved/c (deleted). */
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.files, 4);
	assert_int_equal(ss.bytes, 3000 * 3);
	assert_int_equal(ss.head_seq, 13);
	uint8_t want[HASH_LEN], sum[32] = {0};
	const uint64_t vva[][2] = {{5, c5}, {NODE_A, ca}}, vv1[][2] = {{NODE_A, cnt[0]}},
		       vv5[][2] = {{NODE_A, cnt[4]}}, vv6[][2] = {{NODE_A, cnt[5]}};
	/* Live rows only: tombstones are not part of the digest. */
	digest_add(sum, "empty", f0.root, vv6, 1); /* a sum: order does not matter */
	digest_add(sum, "a", f1.root, vva, 2);
	digest_add(sum, "b/d", f1.root, vv1, 1);
	digest_add(sum, "b!", f1.root, vv5, 1);
	sha256(sum, sizeof sum, want);
	assert_memory_equal(ss.digest, want, HASH_LEN);

	/* Same after reopen. */
	store_close(st);
	st = open_ok();
	store_stats s2;
	assert_int_equal(store_stats_get(st, &s2), 0);
	assert_memory_equal(&s2, &ss, sizeof ss);
	store_close(st);
	free(r);
	free(del);
	free(nr);
	free(got);
	free(c);
	free_file(&f0);
	free_file(&f1);
	free_file(&f2);
}

static void test_list_many_with_callbacks(void **state)
{
	store *st = open_ok();
	file_t f = mk_file(st, 70, 1, 10, -1);
	for (int i = 0; i < 150; i++) {
		char p[32];
		snprintf(p, sizeof p, "dir/f%03d", i);
		record *r = mk_rec(p, &f);
		commit_ok(st, r);
		free(r);
	}
	collect *c = xcalloc(1, sizeof *c);
	c->st = st;
	assert_int_equal(store_list(st, "dir", collect_fn, c), 0);
	assert_int_equal(c->n, 150);
	for (int i = 1; i < 150; i++)
		assert_true(strcmp(c->paths[i - 1], c->paths[i]) < 0);
	store_close(st);
	free(c);
	free_file(&f);
}

static void test_leases(void **state)
{
	store *st = open_ok();
	assert_int_equal(store_lease_count(st), 0);
	uint64_t a = store_lease_begin(st), b = store_lease_begin(st);
	assert_true(a != b);
	assert_int_equal(store_lease_count(st), 2);
	store_lease_end(st, a);
	assert_int_equal(store_lease_count(st), 1);
	store_lease_end(st, b);
	assert_int_equal(store_lease_count(st), 0);
	store_close(st);
}

/* ---- the data directory's guards ---- */

static void test_format_refuses_newer(void **state)
{
	assert_int_equal(mkdir_p(tdir, 0755), 0);
	char p[400];
	snprintf(p, sizeof p, "%s/FORMAT", tdir);
	assert_int_equal(write_file_atomic(p, "syncstore-store 3\n", 18, 0644), 0);
	store *st = NULL;
	int rc = store_open(tdir, &st);
	assert_int_equal(rc, SS_EFORMAT);
	assert_null(st);
	char want[400];
	snprintf(want, sizeof want, "data directory %s has format 3, this syncstore reads up to 2: upgrade syncstore",
		 tdir);
	assert_msg(rc, want);

	/* Not a FORMAT this program wrote. */
	assert_int_equal(write_file_atomic(p, "hello\n", 6, 0644), 0);
	assert_int_equal(store_open(tdir, &st), SS_EFORMAT);

	/* A directory with other files and no FORMAT is not adopted. */
	unlink(p);
	snprintf(p, sizeof p, "%s/notes.txt", tdir);
	assert_int_equal(write_file_atomic(p, "x", 1, 0644), 0);
	rc = store_open(tdir, &st);
	assert_int_equal(rc, SS_EFORMAT);
	assert_msg(rc, "not a syncstore data directory");
}

static void test_lock_in_use(void **state)
{
	store *st = open_ok();
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		store *other = NULL;
		int rc = store_open(tdir, &other);
		char want[400];
		snprintf(want, sizeof want, "data directory %s is in use by another server (pid %ld)", tdir,
			 (long)parent);
		if (rc != SS_EBUSY || other)
			_exit(1);
		if (strcmp(ss_errmsg(rc), want)) {
			fprintf(stderr, "got \"%s\"\n", ss_errmsg(rc));
			_exit(2);
		}
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	store_close(st);
	/* Free again once closed. */
	st = open_ok();
	store_close(st);
}

static void test_permission_denied(void **state)
{
	assert_int_equal(mkdir_p(tdir, 0755), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* As root, drop to nobody; otherwise a read-only directory. */
		if (getuid() == 0) {
			if (setgid(65534) || setuid(65534))
				_exit(3);
		} else if (chmod(tdir, 0555)) {
			_exit(3);
		}
		store *st = NULL;
		int rc = store_open(tdir, &st);
		char want[400];
		snprintf(want, sizeof want, "cannot use data directory %s: permission denied", tdir);
		if (rc != SS_EPERM || strcmp(ss_errmsg(rc), want)) {
			fprintf(stderr, "got %d \"%s\"\n", rc, ss_errmsg(rc));
			_exit(1);
		}
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A chunk found corrupt and forgotten is wanted again until it is indexed
 * again, across restarts; garbage collection drops wants nothing reaches. */
static void test_wanted_survives_restart(void **state)
{
	store *st = open_ok();
	chunk_t a = mk_chunk(70, 4000), b = mk_chunk(71, 5000);
	put_ok(st, &a);
	put_ok(st, &b);
	assert_int_equal(store_flush(st), 0);
	uint8_t ids[4 * HASH_LEN];
	unsigned n = 9;
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_forget(st, a.id), 0);
	assert_int_equal(store_has(st, a.id), 0);
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 1);
	assert_memory_equal(ids, a.id, HASH_LEN);
	store_close(st);
	st = open_ok();
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 1); /* still wanted after a restart */
	/* Stored again (a repair): wanted no more, for good. */
	put_ok(st, &a);
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 1); /* not before it is durable */
	assert_int_equal(store_flush(st), 0);
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 0);
	store_close(st);
	st = open_ok();
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 0);
	get_ok(st, &a);
	/* b belongs to no version: once forgotten, GC finds nothing that
	 * reaches it and drops the want. */
	assert_int_equal(store_forget(st, b.id), 0);
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_gc(st, NULL), 0);
	assert_int_equal(store_wanted(st, ids, 4, &n), 0);
	assert_int_equal(n, 0);
	store_close(st);
	free(a.data);
	free(b.data);
}

/* A full disk, simulated with RLIMIT_FSIZE (writes past it fail with
 * EFBIG, which the store reports as no space). */
static void test_disk_full(void **state)
{
	store *st = open_ok();
	chunk_t first = mk_chunk(80, 30000);
	put_ok(st, &first);
	assert_int_equal(store_flush(st), 0);
	char seg[300];
	seg_file(1, seg);
	off_t whole = file_size(seg);

	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)whole + 100000;
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rc = 0, i;
	chunk_t c[10];
	for (i = 0; i < 10; i++) {
		c[i] = mk_chunk(81 + (uint64_t)i, 30000);
		if ((rc = store_put_chunk(st, c[i].id, c[i].data, c[i].len)))
			break;
		whole += SEG_REC_HDR + 30000;
	}
	assert_int_equal(rc, SS_ENOSPC);
	assert_int_equal(i, 3);
	assert_msg(rc, "cannot store chunk");
	/* The partial record was cut off, nothing half-written remains. */
	assert_int_equal(file_size(seg), whole);
	assert_int_equal(store_has(st, c[3].id), 0);
	/* Reads go on. */
	get_ok(st, &first);
	get_ok(st, &c[0]);

	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	put_ok(st, &c[3]);
	assert_int_equal(store_flush(st), 0);
	store_close(st);
	st = open_ok();
	for (int k = 0; k <= 3; k++)
		get_ok(st, &c[k]);
	assert_int_equal(file_size(seg), whole + SEG_REC_HDR + 30000);
	store_close(st);
	free(first.data);
	for (int k = 0; k <= i; k++)
		free(c[k].data);
}

/* A failed segment fsync: the kernel may have dropped the pages, so the
 * chunks not yet durable are forgotten (to be sent again), the segment
 * takes no more appends, and the store goes on. */
static void test_segment_fsync_failure(void **state)
{
	store *st = open_ok();
	chunk_t a = mk_chunk(95, 3000), b = mk_chunk(96, 3000), c = mk_chunk(97, 3000);
	put_ok(st, &a);
	assert_int_equal(store_flush(st), 0);
	put_ok(st, &b);
	put_ok(st, &c);
	fail_fsync_seg = 1;
	int rc = store_flush(st);
	fail_fsync_seg = 0;
	assert_int_equal(rc, SS_EIO);
	assert_msg(rc, "cannot fsync segment 00000001");
	assert_int_equal(store_has(st, a.id), 1);
	assert_int_equal(store_has(st, b.id), 0);
	assert_int_equal(store_has(st, c.id), 0);
	get_ok(st, &a);

	/* Sent again, they land in a new segment.  The first flush still
	 * reports that chunks put before it were lost (c is). */
	put_ok(st, &b);
	char seg[300];
	seg_file(2, seg);
	assert_int_equal(file_size(seg), SEG_FILE_HDR + SEG_REC_HDR + 3000);
	rc = store_flush(st);
	assert_int_equal(rc, SS_EIO);
	assert_msg(rc, "lost");
	put_ok(st, &c);
	assert_int_equal(store_flush(st), 0);
	get_ok(st, &b);
	get_ok(st, &c);
	store_close(st);
	st = open_ok();
	get_ok(st, &a);
	get_ok(st, &b);
	get_ok(st, &c);
	store_close(st);
	free(a.data);
	free(b.data);
	free(c.data);
}

/* A failed index commit (SQLite's WAL fsync): the chunks are durable in
 * their segment, stay present, and the next flush indexes them. */
static void test_index_commit_failure(void **state)
{
	store *st = open_ok();
	chunk_t a = mk_chunk(98, 3000);
	put_ok(st, &a);
	fail_fsync_wal = 1;
	int rc = store_flush(st);
	fail_fsync_wal = 0;
	assert_true(rc < 0);
	assert_msg(rc, "cannot index chunks");
	assert_int_equal(store_has(st, a.id), 1);
	get_ok(st, &a);
	assert_int_equal(store_flush(st), 0);
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, 1);
	store_close(st);
	st = open_ok();
	get_ok(st, &a);
	store_close(st);
	free(a.data);
}

/* ---- concurrency ---- */

enum { TH = 4, PER = 400, OVERLAP = 100 };

typedef struct worker {
	store *st;
	int t;
	int fails;
} worker;

static uint64_t wseed(int t, int i) { return 5000 + (uint64_t)(t * (PER - OVERLAP) + i); }

static void *worker_run(void *arg)
{
	worker *w = arg;
	uint8_t data[40000], id[HASH_LEN];
	for (int i = 0; i < PER; i++) {
		size_t len = 4000 + (size_t)(wseed(w->t, i) % 36000);
		fill(data, len, wseed(w->t, i));
		sha256(data, len, id);
		if (store_put_chunk(w->st, id, data, len) || store_has(w->st, id) != 1)
			w->fails++;
		if (i % 40 == 39 && store_flush(w->st))
			w->fails++;
	}
	if (store_flush(w->st))
		w->fails++;
	return NULL;
}

static void test_concurrent_put_flush(void **state)
{
	store *st = open_ok();
	pthread_t th[TH];
	worker w[TH];
	for (int t = 0; t < TH; t++) {
		w[t] = (worker){st, t, 0};
		assert_int_equal(pthread_create(&th[t], NULL, worker_run, &w[t]), 0);
	}
	for (int t = 0; t < TH; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(w[t].fails, 0);
	}
	int unique = TH * (PER - OVERLAP) + OVERLAP;
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, unique);
	store_close(st);

	st = open_ok();
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.chunks, unique);
	uint8_t data[40000], id[HASH_LEN];
	buf b;
	buf_init(&b, SEG_CHUNK_MAX);
	for (int k = 0; k < unique; k++) {
		uint64_t seed = 5000 + (uint64_t)k;
		size_t len = 4000 + (size_t)(seed % 36000);
		fill(data, len, seed);
		sha256(data, len, id);
		assert_int_equal(store_get_chunk(st, id, &b), 0);
		assert_int_equal(b.len, len);
		assert_memory_equal(b.p, data, len);
	}
	buf_free(&b);
	store_close(st);
}

/* Uploads and commits from several threads while another lists and reads
 * stats: every commit lands, each path's counter grows with every commit. */
typedef struct committer {
	store *st;
	int t;
	int fails;
} committer;

static void *committer_run(void *arg)
{
	committer *w = arg;
	uint64_t last[4] = {0};
	for (int k = 0; k < 12; k++) {
		file_t f = mk_file(w->st, 2000 + (uint64_t)(w->t * 100 + k), 12, 2000, -1);
		char path[64];
		snprintf(path, sizeof path, "t%d/f%d", w->t, k % 4);
		record *r = mk_rec(path, &f);
		if (store_commit(w->st, r) || r->vv.e[0].counter <= last[k % 4])
			w->fails++;
		last[k % 4] = r->vv.e[0].counter;
		free(r);
		free_file(&f);
	}
	return NULL;
}

static int count_fn(void *ctx, const record *r)
{
	(*(int *)ctx)++;
	return 0;
}

static void test_concurrent_commits(void **state)
{
	store *st = open_ok();
	pthread_t th[TH];
	committer w[TH];
	for (int t = 0; t < TH; t++) {
		w[t] = (committer){st, t, 0};
		assert_int_equal(pthread_create(&th[t], NULL, committer_run, &w[t]), 0);
	}
	for (int i = 0; i < 20; i++) {
		int n = 0;
		store_stats ss;
		assert_int_equal(store_list(st, "", count_fn, &n), 0);
		assert_int_equal(store_stats_get(st, &ss), 0);
		assert_true(n <= TH * 4);
	}
	for (int t = 0; t < TH; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(w[t].fails, 0);
	}
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.files, TH * 4);
	assert_int_equal(ss.head_seq, TH * 12);
	store_close(st);
}

/* store_commit_batch: all records in one transaction, in order — or none,
 * with the error naming the one that failed. */
static void test_commit_batch(void **state)
{
	store *st = open_ok();
	record recs[4];
	memset(recs, 0, sizeof recs);
	for (int i = 0; i < 3; i++) {
		char data[32];
		int len = snprintf(data, sizeof data, "small file %d", i);
		snprintf(recs[i].path, sizeof recs[i].path, "dir/f%d", i);
		recs[i].size = (uint64_t)len;
		recs[i].mode = 0644;
		assert_int_equal(store_put_small(st, data, (size_t)len, recs[i].root), 0);
	}
	recs[3] = recs[0]; /* the same path again in the batch: its next version */
	assert_int_equal(store_commit_batch(st, recs, 4), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(recs[i].seq, (uint64_t)i + 1);
	assert_true(recs[3].vv.e[0].counter > recs[0].vv.e[0].counter); /* it supersedes f0 */
	record got;
	assert_int_equal(store_lookup(st, "dir/f1", &got), 0);
	assert_memory_equal(got.root, recs[1].root, HASH_LEN);

	/* One record whose tree is not here: nothing of the batch is kept. */
	record more[2];
	memset(more, 0, sizeof more);
	snprintf(more[0].path, sizeof more[0].path, "dir/g0");
	more[0].size = 5;
	assert_int_equal(store_put_small(st, "hello", 5, more[0].root), 0);
	snprintf(more[1].path, sizeof more[1].path, "dir/g1");
	more[1].size = 5;
	memset(more[1].root, 0xab, HASH_LEN);
	int rc = store_commit_batch(st, more, 2);
	assert_int_equal(rc, SS_ENOENT);
	assert_non_null(strstr(ss_errmsg(rc), "dir/g1"));
	assert_int_equal(store_lookup(st, "dir/g0", &got), SS_ENOENT);
	assert_int_equal(more[0].seq, 0);
	assert_int_equal(more[0].vv.n, 0);
	store_stats ss;
	assert_int_equal(store_stats_get(st, &ss), 0);
	assert_int_equal(ss.head_seq, 4);
	store_close(st);
}

/* A power cut loses what was not flushed — chunks, their index rows and
 * node marks together — and nothing that was. */
static void test_power_cut(void **state)
{
	store *st = open_ok();
	uint8_t kept_root[HASH_LEN], lost_root[HASH_LEN];
	assert_int_equal(store_put_small(st, "flushed before the cut", 22, kept_root), 0);
	assert_int_equal(store_flush(st), 0);
	char big[20000];
	memset(big, 'x', sizeof big);
	assert_int_equal(store_put_small(st, big, sizeof big, lost_root), 0);
	assert_int_equal(store_has_node(st, lost_root), 1);
	store_power_cut(st, 500); /* half the unsynced tail survives: a torn record */
	st = open_ok();
	assert_int_equal(store_has_node(st, kept_root), 1);
	buf b;
	buf_init(&b, CDC_MAX);
	assert_int_equal(store_get_small(st, kept_root, &b), 0);
	assert_int_equal(b.len, 22);
	assert_int_equal(store_has_node(st, lost_root), 0);
	assert_int_equal(store_has(st, lost_root), 0);
	buf_free(&b);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_keeps_chunks_and_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_verifies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unindexed_records_reindexed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segments_roll, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_refuses_missing_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_power_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_namespace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_many_with_callbacks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_refuses_newer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_in_use, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permission_denied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wanted_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_fsync_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_commit_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_put_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_commits, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
