/* registry.c — see registry.h. */
#include "registry.h"
#include "peer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct liveness {
	uint8_t id[HASH_LEN];
	double seen; /* now_mono() of its last heartbeat or announce; 0: free */
} liveness;

struct registry {
	pthread_mutex_t mu;
	/* The registry as of store change generation snap_gen (under mu). */
	registry_entry *snap;
	size_t nsnap, capsnap;
	uint64_t snap_gen;
	bool snap_valid;
	liveness live[REGISTRY_MAX_SEEDERS];
	double started, lease;
	FILE *log;
	bool full_said;
	pthread_t exporter;
	bool exporting;
	buf last_export;
};

int registry_lease_ms(void)
{
	const char *e = getenv("SYNCSTORE_LEASE_MS");
	long v = e ? strtol(e, NULL, 10) : 0;
	return v >= 100 && v <= 24L * 3600 * 1000 ? (int)v : REGISTRY_LEASE_MS;
}

/* ---- liveness (under mu) ---- */

static liveness *live_find(struct registry *r, const uint8_t id[HASH_LEN], bool add)
{
	liveness *stalest = NULL;
	for (unsigned i = 0; i < REGISTRY_MAX_SEEDERS; i++) {
		liveness *l = &r->live[i];
		if (l->seen && !memcmp(l->id, id, HASH_LEN))
			return l;
		if (!stalest || l->seen < stalest->seen)
			stalest = l;
	}
	if (!add)
		return NULL;
	memcpy(stalest->id, id, HASH_LEN);
	return stalest;
}

static bool is_live(struct registry *r, const uint8_t id[HASH_LEN], double now)
{
	if (now - r->started < r->lease)
		return true; /* grace after a start: every seeder gets one lease */
	liveness *l = live_find(r, id, false);
	return l && now - l->seen < r->lease;
}

/* ---- the registry as records ---- */

static void entry_path(const uint8_t root[HASH_LEN], const uint8_t seeder[HASH_LEN], char *out)
{
	hex_encode(root, HASH_LEN, out);
	out[HASH_HEX_LEN] = '/';
	hex_encode(seeder, HASH_LEN, out + HASH_HEX_LEN + 1);
}

/* "syncstore-seeder 1\nname N\nsize S\naddr A\n" → e (name, size, addr). */
static int entry_parse(const buf *b, registry_entry *e)
{
	char text[WIRE_NAME_MAX + WIRE_ADDR_MAX + 96];
	if (b->len >= sizeof text)
		return ss_fail(SS_ECORRUPT, "registry entry of %zu bytes", b->len);
	memcpy(text, b->p, b->len);
	text[b->len] = 0;
	char *name = strstr(text, "\nname "), *size = strstr(text, "\nsize "), *addr = strstr(text, "\naddr ");
	if (strncmp(text, "syncstore-seeder 1\n", 19) || !name || !size || !addr)
		return ss_fail(SS_ECORRUPT, "malformed registry entry");
	name += 6, size += 6, addr += 6;
	size_t nn = strcspn(name, "\n"), an = strcspn(addr, "\n");
	if (nn >= sizeof e->name || an >= sizeof e->addr)
		return ss_fail(SS_ECORRUPT, "malformed registry entry");
	memcpy(e->name, name, nn);
	e->name[nn] = 0;
	memcpy(e->addr, addr, an);
	e->addr[an] = 0;
	e->size = strtoull(size, NULL, 10);
	return 0;
}

typedef struct snap_ctx {
	struct registry *r;
	store *st;
	buf b;
} snap_ctx;

static int snap_add(void *ctx, const record *rec)
{
	snap_ctx *sc = ctx;
	struct registry *r = sc->r;
	registry_entry e = {0};
	char p[2 * HASH_HEX_LEN + 2];
	if (strlen(rec->path) != 2 * HASH_HEX_LEN + 1 || rec->path[HASH_HEX_LEN] != '/')
		return 0; /* not a registry entry (a conflict copy) */
	memcpy(p, rec->path, sizeof p);
	p[HASH_HEX_LEN] = 0;
	if (hex_decode(p, e.root, HASH_LEN) || hex_decode(p + HASH_HEX_LEN + 1, e.seeder, HASH_LEN))
		return 0;
	int rc = store_get_small(sc->st, rec->root, &sc->b);
	if (!rc)
		rc = entry_parse(&sc->b, &e);
	if (rc) {
		log_warn("registry: skipping %s: %s", rec->path, ss_errmsg(rc));
		return 0;
	}
	if (r->nsnap == REGISTRY_MAX_ENTRIES) {
		/* Never fail the whole registry over its size: the first entries
		 * (by root) are served, and the rest said once. */
		if (!r->full_said)
			log_warn("registry: more than %u entries; serving the first", REGISTRY_MAX_ENTRIES);
		r->full_said = true;
		return 1; /* stops the listing */
	}
	if (r->nsnap == r->capsnap) {
		r->capsnap = r->capsnap ? 2 * r->capsnap : 64;
		r->snap = xrealloc(r->snap, r->capsnap * sizeof *r->snap);
	}
	r->snap[r->nsnap++] = e;
	return 0;
}

/* Bring the snapshot up to the store's current state (under mu). */
static int snap_refresh(server *srv)
{
	struct registry *r = srv->reg;
	uint64_t gen = server_change_gen(srv);
	if (r->snap_valid && gen == r->snap_gen)
		return 0;
	snap_ctx sc = {.r = r, .st = srv->st};
	buf_init(&sc.b, CDC_MAX);
	r->nsnap = 0;
	int rc = store_list(srv->st, "", snap_add, &sc);
	if (rc == 1)
		rc = 0;
	buf_free(&sc.b);
	r->snap_valid = !rc;
	r->snap_gen = gen;
	return rc;
}

static uint64_t held_by(struct registry *r, const uint8_t who[HASH_LEN])
{
	uint64_t n = 0;
	for (size_t i = 0; i < r->nsnap; i++)
		n += !memcmp(r->snap[i].seeder, who, HASH_LEN);
	return n;
}

static int count_held(server *srv, const uint8_t who[HASH_LEN], uint64_t *held)
{
	struct registry *r = srv->reg;
	pthread_mutex_lock(&r->mu);
	int rc = snap_refresh(srv);
	*held = rc ? 0 : held_by(r, who);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static void touch(server *srv, const uint8_t who[HASH_LEN])
{
	struct registry *r = srv->reg;
	pthread_mutex_lock(&r->mu);
	liveness *l = live_find(r, who, true);
	bool was = l->seen && now_mono() - l->seen < r->lease;
	l->seen = now_mono();
	pthread_mutex_unlock(&r->mu);
	if (!was)
		server_changed(srv); /* the export may gain it back */
}

static int write_entry(server *srv, const char *path, const msg *m)
{
	char text[WIRE_NAME_MAX + WIRE_ADDR_MAX + 96];
	int n = snprintf(text, sizeof text, "syncstore-seeder 1\nname %s\nsize %" PRIu64 "\naddr %s\n",
			 m->announce.name, m->announce.size, m->announce.addr);
	/* mtime 0: the same seeder announced through both trackers at once
	 * gives identical records, which merge instead of conflicting. */
	record rec = {.mode = 0644, .size = (uint64_t)n};
	snprintf(rec.path, sizeof rec.path, "%s", path);
	int rc = store_put_small(srv->st, text, (size_t)n, rec.root);
	return rc ? rc : store_commit(srv->st, &rec);
}

static int withdraw(server *srv, const char *path)
{
	record rec;
	int rc = store_lookup(srv->st, path, &rec);
	if (rc == SS_ENOENT || (!rc && rec.deleted))
		return 0;
	if (rc)
		return rc;
	memset(&rec, 0, sizeof rec);
	snprintf(rec.path, sizeof rec.path, "%s", path);
	rec.deleted = true;
	return store_commit(srv->st, &rec);
}

static bool field_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

int registry_announce(server *srv, const uint8_t who[HASH_LEN], tls_role role, const msg *m, uint64_t *held)
{
	uint32_t flags = m->announce.flags;
	if (flags & ~(WIRE_ANNOUNCE_WITHDRAW | WIRE_ANNOUNCE_WITHDRAW_ALL))
		return ss_fail(SS_EINVAL, "unknown announce flags %#x", flags);
	if (!flags && (!field_ok(m->announce.name) || strchr(m->announce.name, '/') || !field_ok(m->announce.addr)))
		return ss_fail(SS_EINVAL, "announce: a name (no '/', no control characters) and an address are required");
	if (!flags && role == ROLE_CLIENT) {
		/* One client cannot fill the registry (a server seeds all it holds). */
		uint64_t now_held;
		int rc = count_held(srv, who, &now_held);
		if (rc)
			return rc;
		if (now_held >= REGISTRY_MAX_PER_CLIENT)
			return ss_fail(SS_ETOOBIG, "a client may seed at most %u files", REGISTRY_MAX_PER_CLIENT);
	}
	/* Apply what the other tracker announced first, so a remove sent here
	 * after a share sent there deletes it rather than racing it. */
	peers_catch_up(srv, PEER_CATCH_UP_MS);
	touch(srv, who);
	int rc = 0;
	if (flags & WIRE_ANNOUNCE_WITHDRAW_ALL) {
		struct registry *r = srv->reg;
		char (*paths)[2 * HASH_HEX_LEN + 2] = NULL;
		size_t n = 0;
		pthread_mutex_lock(&r->mu);
		if (!(rc = snap_refresh(srv))) {
			paths = xmalloc((held_by(r, who) + 1) * sizeof *paths);
			for (size_t i = 0; i < r->nsnap; i++)
				if (!memcmp(r->snap[i].seeder, who, HASH_LEN))
					entry_path(r->snap[i].root, who, paths[n++]);
		}
		pthread_mutex_unlock(&r->mu);
		for (size_t i = 0; i < n && !rc; i++)
			rc = withdraw(srv, paths[i]);
		free(paths);
	} else {
		char path[2 * HASH_HEX_LEN + 2];
		entry_path(m->announce.root, who, path);
		rc = flags ? withdraw(srv, path) : write_entry(srv, path, m);
	}
	if (rc)
		return rc;
	server_changed(srv);
	return count_held(srv, who, held);
}

int registry_heartbeat(server *srv, const uint8_t who[HASH_LEN], const msg *m, uint64_t *held)
{
	touch(srv, who);
	return count_held(srv, who, held);
}

int registry_seeders(server *srv, const uint8_t root[HASH_LEN], registry_fn fn, void *ctx)
{
	struct registry *r = srv->reg;
	registry_entry found[64];
	unsigned n = 0;
	pthread_mutex_lock(&r->mu);
	int rc = snap_refresh(srv);
	double now = now_mono();
	/* At most 64 (the first live ones): enough sources for one download. */
	for (size_t i = 0; !rc && i < r->nsnap && n < ARRAY_LEN(found); i++)
		if (!memcmp(r->snap[i].root, root, HASH_LEN) && is_live(r, r->snap[i].seeder, now))
			found[n++] = r->snap[i];
	pthread_mutex_unlock(&r->mu);
	for (unsigned i = 0; i < n && !rc; i++)
		rc = fn(ctx, &found[i]);
	return rc;
}

/* ---- the request log ---- */

static void stamp(char out[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void registry_log(server *srv, const uint8_t who[HASH_LEN], const char *what, int rc)
{
	struct registry *r = srv->reg;
	if (!r || !r->log)
		return;
	char ts[32], hex[HASH_HEX_LEN + 1];
	stamp(ts);
	hex_encode(who, HASH_LEN, hex);
	pthread_mutex_lock(&r->mu);
	if (rc)
		fprintf(r->log, "%s %.16s %s -> error: %s\n", ts, hex, what, ss_errmsg(rc));
	else
		fprintf(r->log, "%s %.16s %s -> ok\n", ts, hex, what);
	fflush(r->log);
	pthread_mutex_unlock(&r->mu);
}

/* ---- the seederlist export ---- */

static int export_text(server *srv, buf *out)
{
	struct registry *r = srv->reg;
	char root[HASH_HEX_LEN + 1], seeder[HASH_HEX_LEN + 1], line[WIRE_NAME_MAX + WIRE_ADDR_MAX + 200];
	buf_reset(out);
	static const char head[] = "# syncstore seederlist 1 — live seeders of each shared file\n"
				   "# root\tname\tsize\tseeder address\tseeder node id\n";
	int rc = buf_append(out, head, sizeof head - 1);
	pthread_mutex_lock(&r->mu);
	if (!rc)
		rc = snap_refresh(srv);
	double now = now_mono();
	for (size_t i = 0; !rc && i < r->nsnap; i++) {
		registry_entry *e = &r->snap[i];
		if (!is_live(r, e->seeder, now))
			continue;
		hex_encode(e->root, HASH_LEN, root);
		hex_encode(e->seeder, HASH_LEN, seeder);
		int n = snprintf(line, sizeof line, "%s\t%s\t%" PRIu64 "\t%s\t%s\n", root, e->name, e->size, e->addr,
				 seeder);
		rc = buf_append(out, line, (size_t)n);
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int export_once(server *srv)
{
	struct registry *r = srv->reg;
	buf b;
	buf_init(&b, (size_t)REGISTRY_MAX_ENTRIES * 512);
	int rc = export_text(srv, &b);
	if (!rc && (b.len != r->last_export.len || memcmp(b.p, r->last_export.p, b.len))) {
		rc = write_file_atomic(srv->opts->seederlist, b.p, b.len, 0644);
		if (!rc) {
			buf_reset(&r->last_export);
			rc = buf_append(&r->last_export, b.p, b.len);
		}
	}
	buf_free(&b);
	return rc;
}

static void *exporter(void *arg)
{
	server *srv = arg;
	while (!server_stopping(srv)) {
		uint64_t gen = server_change_gen(srv);
		int rc = export_once(srv);
		if (rc)
			log_warn("cannot write the seederlist %s: %s", srv->opts->seederlist, ss_errmsg(rc));
		/* Woken by changes; the 1 s tick notices leases running out. */
		server_wait_change(srv, gen, 1000);
	}
	return NULL;
}

int registry_start(server *srv)
{
	struct registry *r = xcalloc(1, sizeof *r);
	pthread_mutex_init(&r->mu, NULL);
	r->started = now_mono();
	r->lease = registry_lease_ms() / 1000.0;
	buf_init(&r->last_export, (size_t)REGISTRY_MAX_ENTRIES * 512);
	srv->reg = r;
	int rc = 0;
	if (srv->opts->request_log && !(r->log = fopen(srv->opts->request_log, "ae")))
		rc = ss_fail_errno("cannot open the log file %s", srv->opts->request_log);
	if (!rc && (rc = export_once(srv)))
		rc = ss_fail(rc, "cannot write the seederlist %s: %s", srv->opts->seederlist, ss_errmsg(rc));
	int err;
	if (!rc && (err = pthread_create(&r->exporter, NULL, exporter, srv)))
		rc = ss_fail(SS_EIO, "cannot start the exporter: %s", strerror(err));
	r->exporting = !rc;
	return rc;
}

void registry_stop(server *srv)
{
	struct registry *r = srv->reg;
	if (!r)
		return;
	if (r->exporting)
		pthread_join(r->exporter, NULL);
	if (r->log)
		fclose(r->log);
	buf_free(&r->last_export);
	free(r->snap);
	pthread_mutex_destroy(&r->mu);
	free(r);
	srv->reg = NULL;
}
