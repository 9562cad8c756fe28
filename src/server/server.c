/*
 * server.c — start-up checks, the accept loop, connection threads, shutdown.
 *
 * Signals: SIGTERM and SIGINT are blocked in every thread and read from a
 * signalfd in the accept loop, so shutdown is an ordinary event: stop
 * accepting, shut down every live socket (their threads see EOF and release
 * their leases), wait for the threads, close the store, exit 0.
 */
#include "server.h"
#include "maint.h"
#include "peer.h"
#include "registry.h"
#include "push.h"
#include "seeding.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(REPL_ACKS_MAX <= SERVER_MAX_PEERS, "live_peers copies the ack table into SERVER_MAX_PEERS slots");

typedef struct slot {
	int fd; /* -1 when free */
	pthread_t thread;
	double accepted;  /* now_mono() at accept */
	bool handshaking; /* TLS handshake not finished yet */
} slot;

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	slot slots[SERVER_MAX_CONNS];
	int live, handshaking;
	SSL_CTX *ctx;
	server *srv;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *conn_thread(void *arg)
{
	slot *s = arg;
	conn c;
	int rc = conn_accept(g.ctx, s->fd, SERVER_HANDSHAKE_MS, &c);
	pthread_mutex_lock(&g.mu);
	s->handshaking = false;
	g.handshaking--;
	pthread_mutex_unlock(&g.mu);
	if (rc) {
		log_info("connection refused: %s", ss_errmsg(rc));
	} else {
		session_run(g.srv, &c);
		c.fd = -1; /* the slot owns the descriptor; closed below */
		conn_close(&c);
	}
	pthread_mutex_lock(&g.mu);
	close(s->fd);
	s->fd = -1;
	g.live--;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mu);
	return NULL;
}

static void accept_one(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_warn("accept failed: %s", strerror(errno));
		return;
	}
	pthread_mutex_lock(&g.mu);
	slot *s = NULL;
	for (int i = 0; i < SERVER_MAX_CONNS && !s; i++)
		if (g.slots[i].fd < 0)
			s = &g.slots[i];
	if (!s || g.handshaking >= SERVER_MAX_HANDSHAKES) {
		pthread_mutex_unlock(&g.mu);
		log_warn("refusing a connection: %s", s ? "too many unfinished TLS handshakes" : "all connection slots busy");
		close(fd);
		return;
	}
	s->fd = fd;
	s->accepted = now_mono();
	s->handshaking = true;
	g.handshaking++;
	g.live++;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int err = pthread_create(&s->thread, &attr, conn_thread, s);
	pthread_attr_destroy(&attr);
	if (err) {
		log_warn("cannot start a connection thread: %s", strerror(err));
		close(fd);
		s->fd = -1;
		s->handshaking = false;
		g.handshaking--;
		g.live--;
	}
	pthread_mutex_unlock(&g.mu);
}

/* The handshake timeout of conn_accept bounds each read, not the whole
 * handshake: a peer trickling bytes is cut off here instead. */
static void reap_slow_handshakes(void)
{
	double now = now_mono();
	pthread_mutex_lock(&g.mu);
	for (int i = 0; i < SERVER_MAX_CONNS; i++)
		if (g.slots[i].fd >= 0 && g.slots[i].handshaking &&
		    now - g.slots[i].accepted > SERVER_HANDSHAKE_MS / 1000.0)
			shutdown(g.slots[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&g.mu);
}

static void shutdown_connections(void)
{
	pthread_mutex_lock(&g.mu);
	for (int i = 0; i < SERVER_MAX_CONNS; i++)
		if (g.slots[i].fd >= 0)
			shutdown(g.slots[i].fd, SHUT_RDWR);
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	while (g.live > 0)
		if (pthread_cond_timedwait(&g.cv, &g.mu, &deadline) == ETIMEDOUT)
			break;
	int busy = g.live;
	pthread_mutex_unlock(&g.mu);
	if (busy > 0) {
		/* Their threads still use the store: freeing it would crash
		 * them.  Everything acknowledged is already durable, and the
		 * next start recovers the rest, so leave without cleaning up. */
		log_warn("%d connections still busy after 10 s: exiting without waiting for them", busy);
		_exit(0);
	}
}

void server_changed(server *srv)
{
	pthread_mutex_lock(&srv->chg_mu);
	srv->chg_gen++;
	pthread_cond_broadcast(&srv->chg_cv);
	pthread_mutex_unlock(&srv->chg_mu);
}

uint64_t server_change_gen(server *srv)
{
	pthread_mutex_lock(&srv->chg_mu);
	uint64_t gen = srv->chg_gen;
	pthread_mutex_unlock(&srv->chg_mu);
	return gen;
}

void server_wait_change(server *srv, uint64_t gen, int ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += ms / 1000;
	deadline.tv_nsec += (long)(ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&srv->chg_mu);
	while (srv->chg_gen == gen && !srv->stopping)
		if (pthread_cond_timedwait(&srv->chg_cv, &srv->chg_mu, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&srv->chg_mu);
}

void server_sleep(server *srv, int ms)
{
	double end = now_mono() + ms / 1000.0;
	pthread_mutex_lock(&srv->chg_mu);
	for (;;) {
		double left = end - now_mono();
		if (srv->stopping || left <= 0)
			break;
		struct timespec deadline;
		clock_gettime(CLOCK_REALTIME, &deadline);
		long ns = deadline.tv_nsec + (long)((left - (long)left) * 1e9);
		deadline.tv_sec += (time_t)left + ns / 1000000000;
		deadline.tv_nsec = ns % 1000000000;
		pthread_cond_timedwait(&srv->chg_cv, &srv->chg_mu, &deadline);
	}
	pthread_mutex_unlock(&srv->chg_mu);
}

bool server_stopping(server *srv)
{
	pthread_mutex_lock(&srv->chg_mu);
	bool stop = srv->stopping;
	pthread_mutex_unlock(&srv->chg_mu);
	return stop;
}

void server_peer_live(server *srv, uint64_t node, int delta)
{
	bool member = peers_is_member(srv, node);
	pthread_mutex_lock(&srv->chg_mu);
	repl_ack *a = repl_acks_get(&srv->acks, node, member);
	if (a)
		a->live = (unsigned)((int)a->live + delta);
	pthread_cond_broadcast(&srv->chg_cv);
	pthread_mutex_unlock(&srv->chg_mu);
}

void server_peer_acked(server *srv, uint64_t node, uint64_t acked)
{
	bool member = peers_is_member(srv, node);
	pthread_mutex_lock(&srv->chg_mu);
	if (repl_acks_seen(&srv->acks, node, acked, member))
		pthread_cond_broadcast(&srv->chg_cv);
	pthread_mutex_unlock(&srv->chg_mu);
}

uint64_t server_acked(server *srv, uint64_t node)
{
	pthread_mutex_lock(&srv->chg_mu);
	repl_ack *a = repl_acks_find(&srv->acks, node);
	uint64_t acked = a ? a->acked : 0;
	pthread_mutex_unlock(&srv->chg_mu);
	return acked;
}

unsigned server_copies(server *srv, uint64_t seq)
{
	pthread_mutex_lock(&srv->chg_mu);
	unsigned n = repl_acks_copies(&srv->acks, seq);
	pthread_mutex_unlock(&srv->chg_mu);
	return n;
}

/*
 * Peers that can take a write now: a session of theirs pulls from us, and
 * our own link to them is up.  The second condition notices a dead peer at
 * once (our link reads its EOF), where its held PULL here may not yet.
 */
static unsigned live_peers(server *srv)
{
	uint64_t nodes[SERVER_MAX_PEERS];
	unsigned n = 0, live = 0;
	pthread_mutex_lock(&srv->chg_mu);
	for (unsigned i = 0; i < srv->acks.n; i++)
		if (srv->acks.v[i].live > 0)
			nodes[n++] = srv->acks.v[i].node;
	pthread_mutex_unlock(&srv->chg_mu);
	for (unsigned i = 0; i < n; i++)
		live += peers_link_up(srv, nodes[i]);
	return live;
}

int server_quorum_ready(server *srv)
{
	/* A short grace, for peers (re)connecting right now: just after a
	 * start, our links are up a moment before theirs to us. */
	double deadline = now_mono() + SERVER_QUORUM_GRACE_MS / 1000.0;
	unsigned live;
	while ((live = live_peers(srv)) + 1 < srv->write_quorum && now_mono() < deadline && !server_stopping(srv))
		server_sleep(srv, 20);
	if (live + 1 >= srv->write_quorum)
		return 0;
	return ss_fail(SS_EUNAVAIL,
		       "write quorum not available: %u of %u servers connected, %u needed (nothing was written)",
		       live + 1, srv->cluster_size, srv->write_quorum);
}

void server_hold(server *srv, quorum_hold *h, uint64_t seq)
{
	pthread_mutex_lock(&srv->chg_mu);
	if (!h->held) {
		h->seq = seq;
		h->held = true;
		h->next = srv->holds;
		srv->holds = h;
	} else {
		h->seq = MIN(h->seq, seq);
	}
	pthread_mutex_unlock(&srv->chg_mu);
}

void server_hold_from(server *srv, quorum_hold *h, uint64_t seq)
{
	pthread_mutex_lock(&srv->chg_mu);
	if (h->held)
		h->seq = MAX(h->seq, seq);
	pthread_mutex_unlock(&srv->chg_mu);
}

void server_release(server *srv, quorum_hold *h)
{
	pthread_mutex_lock(&srv->chg_mu);
	if (h->held) {
		quorum_hold **pp = &srv->holds;
		while (*pp != h)
			pp = &(*pp)->next;
		*pp = h->next;
		h->held = false;
	}
	pthread_mutex_unlock(&srv->chg_mu);
}

uint64_t server_quorum_floor(server *srv)
{
	uint64_t floor = UINT64_MAX;
	pthread_mutex_lock(&srv->chg_mu);
	for (const quorum_hold *h = srv->holds; h; h = h->next)
		floor = MIN(floor, h->seq);
	pthread_mutex_unlock(&srv->chg_mu);
	return floor;
}

int server_quorum_wait(server *srv, uint64_t seq, unsigned *copies)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	int ms = srv->opts->quorum_timeout_ms > 0 ? srv->opts->quorum_timeout_ms : SERVER_QUORUM_MS;
	deadline.tv_sec += ms / 1000;
	deadline.tv_nsec += (long)(ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	/* Held while waiting: a peer's cursor counts as holding seq only
	 * while seq is still in our log (see server_quorum_floor). */
	quorum_hold me = {0};
	server_hold(srv, &me, seq);
	pthread_mutex_lock(&srv->chg_mu);
	while (repl_acks_copies(&srv->acks, seq) < srv->write_quorum && !srv->stopping)
		if (pthread_cond_timedwait(&srv->chg_cv, &srv->chg_mu, &deadline) == ETIMEDOUT)
			break;
	unsigned n = repl_acks_copies(&srv->acks, seq);
	pthread_mutex_unlock(&srv->chg_mu);
	server_release(srv, &me);
	*copies = n;
	if (n >= srv->write_quorum)
		return 0;
	return ss_fail(SS_EUNAVAIL, "not acknowledged: stored on %u of %u servers, may still appear", n,
		       srv->cluster_size);
}

/* "majority", "all" or a number 1..N. */
static int parse_quorum(const char *s, unsigned n, unsigned *out)
{
	char *end;
	if (!strcmp(s, "majority"))
		*out = n / 2 + 1;
	else if (!strcmp(s, "all"))
		*out = n;
	else if ((*out = (unsigned)strtoul(s, &end, 10)) < 1 || *end || *out > n)
		return ss_fail(SS_EINVAL, "--write-quorum %s: expected majority, all or a number from 1 to %u (the "
					  "cluster has %u servers)", s, n, n);
	return 0;
}

uint64_t node_short_id(const uint8_t id[HASH_LEN])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | id[i];
	return v;
}

/* Node name for a first-start identity: "server-HOST-PORT". */
static void node_name(tls_role role, const char *listen, char *out, size_t n)
{
	snprintf(out, n, "%s-%s", tls_role_name(role), listen);
	for (char *p = out; *p; p++)
		if (*p == ':' || *p == '/')
			*p = '-';
}

int server_main(const server_opts *o)
{
	static server srv; /* large (paths); peer threads keep a pointer */
	srv.opts = o;
	srv.role = o->role ? o->role : ROLE_SERVER;
	const char *prog = srv.role == ROLE_TRACKER ? "tracker" : "syncstore server";
	pthread_mutex_init(&srv.chg_mu, NULL);
	pthread_cond_init(&srv.chg_cv, NULL);
	char *crt = srv.crt, *key = srv.key, name[96];
	int rc;

	/* Blocked before any thread starts (the store's flusher, connection
	 * threads): threads inherit the mask, so only the signalfd sees them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	srv.cluster_size = (unsigned)o->npeers + 1;
	if ((rc = parse_quorum(o->write_quorum, srv.cluster_size, &srv.write_quorum))) {
		fprintf(stderr, "%s: %s\n", prog, ss_errmsg(rc));
		return 2;
	}
	if ((rc = store_open(o->data, &srv.st))) {
		fprintf(stderr, "%s: %s\n", prog, ss_errmsg(rc));
		return 1;
	}
	node_name(srv.role, o->listen, name, sizeof name);
	if ((rc = tls_identity(o->tls, o->data, "node", srv.role, name, crt, key)) ||
	    (rc = tls_cert_id(crt, srv.node_id))) {
		fprintf(stderr, "%s: %s\n", prog, ss_errmsg(rc));
		store_close(srv.st);
		return 1;
	}
	store_set_node(srv.st, node_short_id(srv.node_id));

	g.ctx = tls_ctx_new(o->tls, crt, key, 1);
	if (!g.ctx) {
		fprintf(stderr, "%s: %s\n", prog, ss_errmsg(SS_ETLS));
		store_close(srv.st);
		return 1;
	}
	int lfd = tcp_listen(o->listen, 128);
	if (lfd < 0) {
		fprintf(stderr, "%s: %s\n", prog, ss_errmsg(lfd));
		SSL_CTX_free(g.ctx);
		store_close(srv.st);
		return 1;
	}
	g.srv = &srv;
	for (int i = 0; i < SERVER_MAX_CONNS; i++)
		g.slots[i].fd = -1;

	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		fprintf(stderr, "%s: cannot watch for signals: %s\n", prog, strerror(errno));
		close(lfd);
		SSL_CTX_free(g.ctx);
		store_close(srv.st);
		return 1;
	}

	if ((rc = peers_start(&srv)) || (rc = push_start(&srv)) || (rc = maint_start(&srv)) ||
	    (srv.role == ROLE_TRACKER && (rc = registry_start(&srv))) || (rc = seeding_start(&srv))) {
		fprintf(stderr, "%s: %s\n", prog, ss_errmsg(rc));
		pthread_mutex_lock(&srv.chg_mu);
		srv.stopping = true;
		pthread_mutex_unlock(&srv.chg_mu);
		peers_stop(&srv);
		push_stop(&srv);
		maint_stop(&srv);
		seeding_stop(&srv);
		registry_stop(&srv);
		peers_free(&srv);
		close(sfd);
		close(lfd);
		SSL_CTX_free(g.ctx);
		store_close(srv.st);
		return 1;
	}

	char hex[HASH_HEX_LEN + 1];
	hex_encode(srv.node_id, HASH_LEN, hex);
	log_info("node %.16s listening on %s (data %s)", hex, o->listen, o->data);

	for (;;) {
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		if (poll(p, 2, 1000) < 0) {
			if (errno == EINTR)
				continue;
			log_err("poll failed: %s", strerror(errno));
			break;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == sizeof si)
				log_info("signal %u: shutting down", si.ssi_signo);
			break;
		}
		if (p[0].revents)
			accept_one(lfd);
		reap_slow_handshakes();
	}
	close(lfd);
	pthread_mutex_lock(&srv.chg_mu);
	srv.stopping = true;
	pthread_cond_broadcast(&srv.chg_cv);
	pthread_mutex_unlock(&srv.chg_mu);
	peers_stop(&srv);
	maint_stop(&srv);
	seeding_stop(&srv);
	shutdown_connections();
	push_stop(&srv); /* after the sessions: their verifiers push until they end */
	registry_stop(&srv);
	peers_free(&srv);
	store_close(srv.st);
	SSL_CTX_free(g.ctx);
	close(sfd);
	log_info("stopped");
	return 0;
}
