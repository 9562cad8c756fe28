/*
 * seeding.c — a server started with --tracker registers as a seeder of
 * every file it holds (docs/SWARM.md), so a swarm `get` draws from servers
 * and clients together; swarm clients fetch its chunks with READ.
 *
 * Each round (on a change, else every lease/3) the distinct live roots are
 * listed; roots new since the last round are announced and roots gone are
 * withdrawn; then a heartbeat tells each tracker how many we serve, and a
 * tracker that lists another number gets them all again.
 */
#include "seeding.h"
#include "registry.h"

#include <stdlib.h>
#include <string.h>

typedef struct seeded {
	uint8_t root[HASH_LEN];
	uint64_t size;
	char name[WIRE_NAME_MAX];
} seeded;

typedef struct roots {
	seeded *v;
	size_t n, cap;
} roots;

static int add_root(void *ctx, const record *r)
{
	roots *rs = ctx;
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? 2 * rs->cap : 256;
		rs->v = xrealloc(rs->v, rs->cap * sizeof *rs->v);
	}
	seeded *s = &rs->v[rs->n++];
	memcpy(s->root, r->root, HASH_LEN);
	s->size = r->size;
	const char *base = strrchr(r->path, '/');
	str_copy(s->name, sizeof s->name, base ? base + 1 : r->path);
	/* A path may hold control characters; a tracker's entry may not. */
	for (char *c = s->name; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return 0;
}

static int by_root(const void *a, const void *b)
{
	return memcmp(((const seeded *)a)->root, ((const seeded *)b)->root, HASH_LEN);
}

/* The distinct roots of the live files, sorted. */
static int list_roots(store *st, roots *rs)
{
	rs->n = 0;
	int rc = store_list(st, "", add_root, rs);
	if (rc || !rs->n)
		return rc;
	qsort(rs->v, rs->n, sizeof *rs->v, by_root);
	size_t k = 1;
	for (size_t i = 1; i < rs->n; i++)
		if (memcmp(rs->v[i].root, rs->v[k - 1].root, HASH_LEN))
			rs->v[k++] = rs->v[i];
	rs->n = k;
	return 0;
}

static bool next_root(void *ctx, unsigned k, uint8_t root[HASH_LEN], uint64_t *size, char *name)
{
	roots *rs = ctx;
	if (k >= rs->n)
		return false;
	memcpy(root, rs->v[k].root, HASH_LEN);
	*size = rs->v[k].size;
	str_copy(name, WIRE_NAME_MAX, rs->v[k].name);
	return true;
}

/* Announce what is in cur and not in prev, withdraw the reverse (both sorted). */
static void announce_changes(trackers *ts, const roots *prev, const roots *cur)
{
	size_t i = 0, j = 0;
	while (i < prev->n || j < cur->n) {
		int c = i == prev->n ? 1 : j == cur->n ? -1 : memcmp(prev->v[i].root, cur->v[j].root, HASH_LEN);
		if (c < 0) {
			trackers_announce(ts, prev->v[i].root, 0, "", WIRE_ANNOUNCE_WITHDRAW);
			i++;
		} else if (c > 0) {
			trackers_announce(ts, cur->v[j].root, cur->v[j].size, cur->v[j].name, 0);
			j++;
		} else {
			i++, j++;
		}
	}
}

static void *seeding(void *arg)
{
	server *srv = arg;
	const server_opts *o = srv->opts;
	SSL_CTX *ctx = tls_ctx_new(o->tls, srv->crt, srv->key, 0);
	if (!ctx) {
		log_err("--tracker: %s", ss_errmsg(SS_ETLS));
		return NULL;
	}
	trackers ts;
	trackers_init(&ts, ctx, o->listen, o->trackers, (unsigned)o->ntrackers);
	roots prev = {0}, cur = {0};
	int wait_ms = registry_lease_ms() / 3;
	while (!server_stopping(srv)) {
		uint64_t gen = server_change_gen(srv);
		int rc = list_roots(srv->st, &cur);
		if (rc) {
			log_warn("--tracker: cannot list the files to seed: %s", ss_errmsg(rc));
		} else {
			announce_changes(&ts, &prev, &cur);
			for (unsigned i = 0; i < ts.n; i++)
				trackers_keepalive(&ts, i, cur.n, next_root, &cur);
			roots t = prev;
			prev = cur;
			cur = t;
		}
		server_wait_change(srv, gen, wait_ms);
	}
	trackers_announce(&ts, NULL, 0, NULL, WIRE_ANNOUNCE_WITHDRAW_ALL);
	trackers_free(&ts);
	SSL_CTX_free(ctx);
	free(prev.v);
	free(cur.v);
	return NULL;
}

int seeding_start(server *srv)
{
	if (!srv->opts->ntrackers)
		return 0;
	int err = pthread_create(&srv->seeder, NULL, seeding, srv);
	if (err)
		return ss_fail(SS_EIO, "cannot start the seeding thread: %s", strerror(err));
	srv->seeding = true;
	return 0;
}

void seeding_stop(server *srv)
{
	if (srv->seeding)
		pthread_join(srv->seeder, NULL);
	srv->seeding = false;
}
