/* trackers.c — see trackers.h. */
#include "trackers.h"

#include <string.h>

void trackers_init(trackers *ts, SSL_CTX *ctx, const char *self, const char *const *addrs, unsigned n)
{
	memset(ts, 0, sizeof *ts);
	ts->ctx = ctx;
	str_copy(ts->self, sizeof ts->self, self);
	ts->n = MIN(n, TRACKERS_MAX);
	for (unsigned i = 0; i < ts->n; i++) {
		pthread_mutex_init(&ts->t[i].mu, NULL);
		str_copy(ts->t[i].addr, sizeof ts->t[i].addr, addrs[i]);
		ts->t[i].c.fd = -1;
	}
}

static void drop(tracker_link *t)
{
	if (!t->open)
		return;
	msgio_free(&t->io);
	conn_close(&t->c);
	t->open = false;
}

void trackers_free(trackers *ts)
{
	for (unsigned i = 0; i < ts->n; i++) {
		pthread_mutex_lock(&ts->t[i].mu);
		drop(&ts->t[i]);
		pthread_mutex_unlock(&ts->t[i].mu);
		pthread_mutex_destroy(&ts->t[i].mu);
	}
	ts->n = 0;
}

static int dial(SSL_CTX *ctx, const char *addr, conn *c, msgio *io)
{
	int rc = conn_connect(ctx, addr, TRACKERS_CONNECT_MS, c);
	if (rc)
		return rc;
	conn_set_timeout(c, TRACKERS_IO_MS);
	msgio_init(io, c);
	if (c->peer.role != ROLE_TRACKER)
		rc = ss_fail(SS_EAUTH, "%s is not a tracker (its certificate says %s)", addr, tls_role_name(c->peer.role));
	if (!rc)
		rc = msgio_hello_client(io);
	if (rc) {
		msgio_free(io);
		conn_close(c);
	}
	return rc;
}

/* One request on an open connection: send req, read the reply. */
static int exchange(msgio *io, const buf *req, uint64_t *ok, seeder_fn fn, void *ctx)
{
	msg m;
	int rc = buf_append(&io->out, req->p, req->len);
	if (rc)
		return rc;
	if (!fn) {
		if ((rc = msgio_recv(io, &m)))
			return rc;
		if (m.type == MSG_ERROR) /* refused: no use asking again */
			return ss_fail(SS_EREMOTE, "%s", m.error.text);
		if (m.type != MSG_OK)
			return ss_fail(SS_EPROTO, "unexpected reply %u from a tracker", m.type);
		if (ok)
			*ok = m.ok.value;
		return 0;
	}
	for (unsigned n = 0;; n++) {
		if ((rc = msgio_recv(io, &m)))
			return rc;
		if (m.type == MSG_END)
			return 0;
		if (m.type == MSG_ERROR)
			return ss_fail(SS_EREMOTE, "%s", m.error.text);
		if (m.type != MSG_SEEDER || n > 1024)
			return ss_fail(SS_EPROTO, "unexpected reply %u to SEEDERS", m.type);
		if ((rc = fn(ctx, &m)))
			return rc;
	}
}

int trackers_call(trackers *ts, unsigned i, const buf *req, uint64_t *ok, seeder_fn fn, void *ctx)
{
	tracker_link *t = &ts->t[i];
	int rc = 0;
	pthread_mutex_lock(&t->mu);
	for (int attempt = 0; attempt < 2; attempt++) {
		bool fresh = !t->open;
		if (!t->open) {
			if ((rc = dial(ts->ctx, t->addr, &t->c, &t->io)))
				break;
			t->open = true;
		}
		rc = exchange(&t->io, req, ok, fn, ctx);
		if (!rc || rc == SS_EREMOTE)
			break;
		drop(t);
		/* Only a connection that went stale since its last use is worth a
		 * second try; a tracker that times out is down for this request. */
		if (fresh || rc == SS_ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&t->mu);
	return rc;
}

int trackers_announce(trackers *ts, const uint8_t *root, uint64_t size, const char *name, uint32_t flags)
{
	static const uint8_t none[HASH_LEN];
	buf req;
	buf_init(&req, WIRE_MAX_FRAME);
	int rc = wire_announce(&req, root ? root : none, size, name ? name : "", ts->self, flags);
	int last = rc;
	unsigned took = 0;
	for (unsigned i = 0; i < ts->n && !rc; i++) {
		int r = trackers_call(ts, i, &req, NULL, NULL, NULL);
		if (r)
			log_warn("tracker %s: %s", ts->t[i].addr, ss_errmsg(r));
		took += !r;
		last = r ? r : last;
	}
	buf_free(&req);
	if (rc || took)
		return rc;
	return ss_fail(last ? last : SS_EUNAVAIL, "no tracker answered");
}

int trackers_seeders(trackers *ts, const uint8_t root[HASH_LEN], const char (*extra)[128], unsigned nextra,
		     seeder_fn fn, void *ctx)
{
	buf req;
	buf_init(&req, WIRE_MAX_FRAME);
	int rc = wire_seeders(&req, root);
	if (rc)
		goto out;
	for (unsigned i = 0; i < ts->n; i++) {
		if (!(rc = trackers_call(ts, i, &req, NULL, fn, ctx)))
			goto out;
		log_info("tracker %s: %s", ts->t[i].addr, ss_errmsg(rc));
	}
	/* Ours are all down: the extra ones we do not already know. */
	rc = SS_EUNAVAIL;
	for (unsigned i = 0; i < nextra && rc; i++) {
		bool known = false;
		for (unsigned k = 0; k < ts->n && !known; k++)
			known = !strcmp(extra[i], ts->t[k].addr);
		conn c;
		msgio io;
		if (known || dial(ts->ctx, extra[i], &c, &io))
			continue;
		rc = exchange(&io, &req, NULL, fn, ctx);
		msgio_free(&io);
		conn_close(&c);
	}
	if (rc)
		rc = ss_fail(SS_EUNAVAIL, "no tracker answered");
out:
	buf_free(&req);
	return rc;
}

/* Withdraw everything at tracker i and announce every share again. */
static void resync(trackers *ts, unsigned i, share_iter next, void *ctx)
{
	static const uint8_t none[HASH_LEN];
	uint8_t root[HASH_LEN];
	uint64_t size;
	char name[WIRE_NAME_MAX];
	buf req;
	buf_init(&req, WIRE_MAX_FRAME);
	int rc = wire_announce(&req, none, 0, "", ts->self, WIRE_ANNOUNCE_WITHDRAW_ALL);
	if (!rc)
		rc = trackers_call(ts, i, &req, NULL, NULL, NULL);
	for (unsigned k = 0; !rc && next(ctx, k, root, &size, name); k++) {
		buf_reset(&req);
		if (!(rc = wire_announce(&req, root, size, name, ts->self, 0)))
			rc = trackers_call(ts, i, &req, NULL, NULL, NULL);
	}
	if (rc)
		log_info("tracker %s: announcing again: %s", ts->t[i].addr, ss_errmsg(rc));
	buf_free(&req);
}

void trackers_keepalive(trackers *ts, unsigned i, uint64_t count, share_iter next, void *ctx)
{
	tracker_link *t = &ts->t[i];
	buf req;
	buf_init(&req, WIRE_MAX_FRAME);
	uint64_t held = 0;
	int rc = wire_heartbeat(&req, ts->self, count);
	if (!rc)
		rc = trackers_call(ts, i, &req, &held, NULL, NULL);
	buf_free(&req);
	double now = now_mono();
	if (rc || held == count) {
		if (!rc)
			t->resync_wait = 0;
		return;
	}
	if (now < t->resync_after)
		return;
	log_info("tracker %s lists %llu of our %llu files: announcing them again", t->addr, (unsigned long long)held,
		 (unsigned long long)count);
	resync(ts, i, next, ctx);
	t->resync_wait = t->resync_wait ? MIN(2 * t->resync_wait, 600.0) : 5.0;
	t->resync_after = now + t->resync_wait;
}
