/*
 * get.c — download a file, verifying every node and chunk against the
 * manifest root before a byte of it is kept.
 *
 * The server sends the tree depth-first, pre-order (docs/WIRE.md).  The
 * client walks the same order with a stack of verified nodes, so every frame
 * has exactly one id it must hash to: the root from META, then each child
 * named by an already verified node.  Bytes go to a temporary file beside
 * LOCAL_FILE, which is renamed into place (with mode and mtime restored)
 * only when the whole tree has arrived; on any failure it is removed.
 * Memory: one frame, one chunk, one node per tree level, a 1 MiB write buffer.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

typedef struct level {
	uint8_t bytes[TREE_NODE_MAX];
	tree_node nd;
	unsigned next;
} level;

typedef struct getter {
	client *cl;
	int fd;
	buf out;   /* pending writes */
	buf chunk; /* decompressed chunk */
	ZSTD_DCtx *dctx;
	level *stack;
	int depth;
	uint64_t written;
	progress pg;
	const char *local;
} getter;

/*
 * The temporary file of a download in progress, removed if the user
 * interrupts us: a signal handler may only use async-signal-safe calls,
 * hence a fixed buffer and unlink(2).
 */
static char tmp_path[PATH_MAX];
static volatile sig_atomic_t tmp_live;

static void on_signal(int sig)
{
	if (tmp_live)
		unlink(tmp_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

static int flush_out(getter *g)
{
	int rc = write_full(g->fd, g->out.p, g->out.len);
	buf_reset(&g->out);
	return rc ? ss_fail(rc, "cannot write %s: %s", g->local, ss_errmsg(rc)) : 0;
}

static int short_id_fail(const char *what, const uint8_t id[HASH_LEN])
{
	char hex[HASH_HEX_LEN + 1];
	hex_encode(id, HASH_LEN, hex);
	return ss_fail(SS_ECORRUPT, "%s %.16s does not match its hash: refusing it", what, hex);
}

/* Handle one NODE frame whose id must be `want`. */
static int take_node(getter *g, const uint8_t want[HASH_LEN], const msg *m)
{
	uint8_t id[HASH_LEN];
	sha256(m->node.bytes, m->node.len, id);
	if (memcmp(id, want, HASH_LEN))
		return short_id_fail("tree node", want);
	if (g->depth > TREE_MAX_LEVEL)
		return ss_fail(SS_ECORRUPT, "tree deeper than %d levels", TREE_MAX_LEVEL);
	level *l = &g->stack[g->depth];
	memcpy(l->bytes, m->node.bytes, m->node.len);
	int rc = tree_node_decode(l->bytes, m->node.len, &l->nd);
	if (rc)
		return rc;
	if (g->depth > 0 && l->nd.level != g->stack[g->depth - 1].nd.level - 1)
		return ss_fail(SS_ECORRUPT, "tree node at the wrong level");
	l->next = 0;
	g->depth++;
	return 0;
}

static int take_chunk(getter *g, const tree_entry *e, const msg *m)
{
	const uint8_t *p;
	size_t n;
	int rc = wire_chunk_raw(m, g->dctx, g->chunk.p, &p, &n);
	if (rc)
		return rc;
	uint8_t id[HASH_LEN];
	sha256(p, n, id);
	if (n != e->size || memcmp(id, e->id, HASH_LEN))
		return short_id_fail("chunk", e->id);
	if (g->out.len + n > g->out.max && (rc = flush_out(g)))
		return rc;
	rc = buf_append(&g->out, p, n);
	g->written += n;
	progress_update(&g->pg, g->written);
	return rc;
}

/* Receive the tree of root into g->fd. */
static int receive_tree(getter *g, const uint8_t root[HASH_LEN])
{
	msg *m = g->cl->m;
	int rc;
	uint8_t want[HASH_LEN];
	memcpy(want, root, HASH_LEN);
	bool want_node = true;
	tree_entry e;
	for (;;) {
		/* What comes next: pop finished nodes, then the next child. */
		if (g->depth > 0) {
			while (g->depth > 0 && g->stack[g->depth - 1].next == g->stack[g->depth - 1].nd.count)
				g->depth--;
			if (g->depth == 0)
				break;
			level *top = &g->stack[g->depth - 1];
			tree_node_entry(&top->nd, top->next++, &e);
			memcpy(want, e.id, HASH_LEN);
			want_node = top->nd.level > 1;
		}
		if ((rc = msgio_recv(&g->cl->io, m)))
			return rc;
		if (m->type == MSG_ERROR)
			return ss_fail(SS_EREMOTE, "%s", m->error.text);
		if (want_node && m->type == MSG_NODE)
			rc = take_node(g, want, m);
		else if (!want_node && m->type == MSG_CHUNK && !memcmp(m->chunk.id, want, HASH_LEN))
			rc = take_chunk(g, &e, m);
		else
			rc = ss_fail(SS_EPROTO, "server sent message type %u out of order", m->type);
		if (rc)
			return rc;
	}
	if ((rc = msgio_expect(&g->cl->io, MSG_END, m)))
		return rc;
	return flush_out(g);
}

/* Download remote (version 0 = current) into local, atomically. */
static int get_file(const cli_opts *o, client *cl, const char *remote, uint64_t version, const char *local)
{
	char tmp[PATH_MAX];
	record *rec = xmalloc(sizeof *rec);
	getter g = {.cl = cl, .fd = -1, .local = local};
	buf_init(&g.out, 1 << 20);
	buf_init(&g.chunk, CDC_MAX);
	int rc = buf_reserve(&g.chunk, CDC_MAX);
	g.dctx = ZSTD_createDCtx();
	g.stack = xmalloc(sizeof(level) * (TREE_MAX_LEVEL + 1));

	if (rc || (rc = wire_get(&cl->io.out, remote, version)) || (rc = msgio_expect(&cl->io, MSG_META, cl->m)))
		goto out;
	*rec = cl->m->rec;
	if (snprintf(tmp, sizeof tmp, "%s.syncstore-XXXXXX", local) >= (int)sizeof tmp) {
		rc = ss_fail(SS_ETOOBIG, "path too long: %s", local);
		goto out;
	}
	g.fd = mkstemp(tmp);
	if (g.fd < 0) {
		rc = ss_fail_errno("cannot create a temporary file beside %s", local);
		goto out;
	}
	memcpy(tmp_path, tmp, sizeof tmp_path);
	tmp_live = 1;
	progress_init(&g.pg, remote, rec->size, o->quiet);
	rc = receive_tree(&g, rec->root);
	progress_end(&g.pg);
	if (!rc && g.written != rec->size)
		rc = ss_fail(SS_ECORRUPT, "received %llu bytes of %llu", (unsigned long long)g.written,
			     (unsigned long long)rec->size);
	/* Floor division: an mtime before 1970 has a negative second and a
	 * nanosecond field that must still be in [0, 1e9). */
	int64_t sec = rec->mtime_ns / 1000000000, nsec = rec->mtime_ns % 1000000000;
	if (nsec < 0) {
		sec--;
		nsec += 1000000000;
	}
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)sec, .tv_nsec = (long)nsec}};
	/* Permission bits only: a setuid or setgid bit from the server is
	 * never planted on the local file. */
	if (!rc && fchmod(g.fd, rec->mode & 0777) < 0)
		rc = ss_fail_errno("cannot set the mode of %s", local);
	if (!rc && futimens(g.fd, ts) < 0)
		rc = ss_fail_errno("cannot set the mtime of %s", local);
	if (!rc && fsync(g.fd) < 0)
		rc = ss_fail_errno("cannot write %s", local);
	if (!rc && rename(tmp, local) < 0)
		rc = ss_fail_errno("cannot rename into %s", local);
	close(g.fd);
	if (rc)
		unlink(tmp);
	tmp_live = 0;
out:
	free(g.stack);
	ZSTD_freeDCtx(g.dctx);
	buf_free(&g.out);
	buf_free(&g.chunk);
	free(rec);
	return rc;
}

#define GET_DIR_MAX_FILES 1000000

/*
 * REMOTE_PATH names no file but has files under it: fetch each into the
 * local directory, like `put DIR` in reverse.  The listing is read whole
 * before the first download (one connection answers one request at a time),
 * so it is capped.  Every name comes from the server and is checked again
 * here, so a hostile server cannot write outside LOCAL.
 */
static int get_dir(const cli_opts *o, client *cl, const char *remote, const char *local, unsigned *nfiles)
{
	char prefix[SS_PATH_MAX + 2];
	snprintf(prefix, sizeof prefix, "%s/", remote);
	size_t plen = strlen(prefix), n = 0, cap = 0;
	char **paths = NULL;
	int rc = wire_path(&cl->io.out, MSG_LIST, prefix);
	while (!rc && !(rc = msgio_recv(&cl->io, cl->m)) && cl->m->type == MSG_ENTRY) {
		const char *p = cl->m->rec.path;
		if (strncmp(p, prefix, plen) || path_check(p + plen, strlen(p + plen))) {
			rc = ss_fail(SS_EPROTO, "server listed an unexpected path: %s", p);
			break;
		}
		if (n == GET_DIR_MAX_FILES) {
			rc = ss_fail(SS_ETOOBIG, "more than %d files under %s: get them by smaller prefixes",
				     GET_DIR_MAX_FILES, remote);
			break;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			paths = xrealloc(paths, cap * sizeof *paths);
		}
		paths[n++] = xstrdup(p + plen);
	}
	if (!rc && cl->m->type == MSG_ERROR)
		rc = ss_fail(SS_EREMOTE, "%s", cl->m->error.text);
	else if (!rc && cl->m->type != MSG_END)
		rc = ss_fail(SS_EPROTO, "unexpected reply %u to a listing", cl->m->type);
	if (!rc && n == 0)
		rc = ss_fail(SS_ENOENT, "no such file or directory: %s", remote);
	for (size_t i = 0; i < n && !rc; i++) {
		char lpath[PATH_MAX], rpath[SS_PATH_MAX + 1], dir[PATH_MAX];
		if ((rc = path_join(lpath, sizeof lpath, local, paths[i])) ||
		    (rc = path_join(rpath, sizeof rpath, remote, paths[i])))
			break;
		snprintf(dir, sizeof dir, "%s", lpath);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			if ((rc = mkdir_p(dir, 0755)))
				break;
		}
		if ((rc = get_file(o, cl, rpath, 0, lpath)))
			break;
		(*nfiles)++;
	}
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return rc;
}

int cmd_get(const cli_opts *o, int argc, char **argv)
{
	uint64_t version = 0;
	static const struct option lopts[] = {{"version", required_argument, 0, 'V'}, {0, 0, 0, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+", lopts, NULL)) != -1) {
		if (c != 'V') {
			optind = argc + 1;
			break;
		}
		char *end;
		version = strtoull(optarg, &end, 10);
		if (*end || !version) {
			fprintf(stderr, "syncstore: get: --version wants a positive number, not '%s'\n", optarg);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: syncstore get [--version V] REMOTE_PATH LOCAL_FILE\n");
		return EXIT_USAGE;
	}
	const char *remote = argv[optind], *local = argv[optind + 1];
	int rc = path_check(remote, strlen(remote));
	if (rc)
		return cli_fail("get", rc);
	client cl;
	if ((rc = client_connect(o, &cl)))
		return cli_fail("get", rc);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	rc = get_file(o, &cl, remote, version, local);
	unsigned nfiles = 0;
	if (rc == SS_ENOENT && !version) {
		char first[WIRE_TEXT_MAX];
		snprintf(first, sizeof first, "%s", ss_errmsg(rc));
		rc = get_dir(o, &cl, remote, local, &nfiles);
		if (rc == SS_ENOENT && !nfiles)
			rc = ss_fail(SS_ENOENT, "%s", first);
		if (!rc)
			printf("got %s: %u file%s into %s\n", remote, nfiles, nfiles == 1 ? "" : "s", local);
	}
	client_close(&cl);
	return rc ? cli_fail("get", rc) : 0;
}
