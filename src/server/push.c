/* push.c — see push.h. */
#include "push.h"
#include "peer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

typedef struct item {
	struct item *next;
	size_t len;
	uint8_t frame[]; /* a whole CHUNK frame */
} item;

typedef struct pusher {
	server *srv;
	unsigned peer; /* index among the --peer servers */
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	item *head, *tail;
	size_t bytes;
	uint64_t sent, dropped; /* chunks */
	int fd;                 /* the connection's socket, -1: none (under mu) */
} pusher;

struct pushers {
	unsigned n;
	pusher *v;
};

static void drop_all_locked(pusher *p)
{
	for (item *it = p->head, *next; it; it = next) {
		next = it->next;
		free(it);
		p->dropped++;
	}
	p->head = p->tail = NULL;
	p->bytes = 0;
}

static void enqueue(pusher *p, const uint8_t *payload, size_t len, const uint8_t *id, const uint8_t *raw, size_t rawlen)
{
	size_t flen = WIRE_HDR + (payload ? len : HASH_LEN + 5 + rawlen);
	pthread_mutex_lock(&p->mu);
	if (p->bytes + flen > PUSH_QUEUE_MAX) {
		p->dropped++;
		pthread_mutex_unlock(&p->mu);
		return;
	}
	item *it = xmalloc(sizeof *it + flen);
	it->next = NULL;
	it->len = flen;
	le32(it->frame, (uint32_t)(flen - 4));
	it->frame[4] = MSG_CHUNK;
	if (payload) {
		memcpy(it->frame + WIRE_HDR, payload, len);
	} else {
		memcpy(it->frame + WIRE_HDR, id, HASH_LEN);
		it->frame[WIRE_HDR + HASH_LEN] = 0;
		le32(it->frame + WIRE_HDR + HASH_LEN + 1, (uint32_t)rawlen);
		memcpy(it->frame + WIRE_HDR + HASH_LEN + 5, raw, rawlen);
	}
	if (p->tail)
		p->tail->next = it;
	else
		p->head = it;
	p->tail = it;
	p->bytes += flen;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void push_chunk(server *srv, const uint8_t *payload, size_t len)
{
	for (unsigned i = 0; srv->push && i < srv->push->n; i++)
		enqueue(&srv->push->v[i], payload, len, NULL, NULL, 0);
}

void push_raw(server *srv, const uint8_t id[HASH_LEN], const uint8_t *bytes, size_t len)
{
	for (unsigned i = 0; srv->push && i < srv->push->n; i++)
		enqueue(&srv->push->v[i], NULL, 0, id, bytes, len);
}

/* Send everything queued (taken in one go) on io.  The bytes taken still
 * count against PUSH_QUEUE_MAX until they are written. */
static int send_queued(pusher *p, msgio *io)
{
	pthread_mutex_lock(&p->mu);
	item *list = p->head;
	p->head = p->tail = NULL;
	pthread_mutex_unlock(&p->mu);
	int rc = 0;
	uint64_t n = 0;
	size_t bytes = 0;
	for (item *it = list, *next; it; it = next) {
		next = it->next;
		if (!rc && !(rc = buf_append(&io->out, it->frame, it->len)))
			rc = msgio_maybe_flush(io);
		n += !rc;
		bytes += it->len;
		free(it);
	}
	if (!rc)
		rc = msgio_flush(io);
	pthread_mutex_lock(&p->mu);
	p->sent += n;
	p->bytes -= MIN(bytes, p->bytes);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static void *pusher_main(void *arg)
{
	pusher *p = arg;
	server *srv = p->srv;
	conn c = {.fd = -1};
	msgio io;
	double last_used = 0;
	int backoff = 100;
	pthread_mutex_lock(&p->mu);
	while (!server_stopping(srv)) {
		if (!p->head) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&p->cv, &p->mu, &ts);
			bool idle = c.fd >= 0 && !p->head && now_mono() - last_used > PUSH_IDLE_MS / 1000.0;
			if (!idle)
				continue;
			/* The peer would close an idle session; close it first. */
			p->fd = -1;
			pthread_mutex_unlock(&p->mu);
			msgio_free(&io);
			conn_close(&c);
			pthread_mutex_lock(&p->mu);
			continue;
		}
		pthread_mutex_unlock(&p->mu);
		int rc = 0;
		if (c.fd < 0 && !(rc = peers_dial(srv, p->peer, &c, &io))) {
			/* Writes time out: a peer that stalls after the handshake
			 * must not hold this thread (or shutdown) for long. */
			struct timeval tv = {.tv_sec = 30};
			setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
			pthread_mutex_lock(&p->mu);
			p->fd = c.fd;
			pthread_mutex_unlock(&p->mu);
			backoff = 100;
			if (server_stopping(srv)) /* push_stop may have missed this socket */
				rc = SS_ECLOSED;
		}
		if (!rc)
			rc = send_queued(p, &io);
		last_used = now_mono();
		pthread_mutex_lock(&p->mu);
		if (rc) {
			/* Best effort: what could not go now is pulled later. */
			drop_all_locked(p);
			if (c.fd >= 0) {
				p->fd = -1;
				pthread_mutex_unlock(&p->mu);
				msgio_free(&io);
				conn_close(&c);
				pthread_mutex_lock(&p->mu);
			}
			pthread_mutex_unlock(&p->mu);
			server_sleep(srv, backoff);
			backoff = MIN(backoff * 2, PEER_BACKOFF_MAX_MS);
			pthread_mutex_lock(&p->mu);
		}
	}
	p->fd = -1;
	drop_all_locked(p);
	pthread_mutex_unlock(&p->mu);
	if (c.fd >= 0) {
		msgio_free(&io);
		conn_close(&c);
	}
	return NULL;
}

int push_start(server *srv)
{
	unsigned n = (unsigned)srv->opts->npeers;
	if (!n || srv->role != ROLE_SERVER)
		return 0;
	struct pushers *ps = xcalloc(1, sizeof *ps);
	ps->v = xcalloc(n, sizeof *ps->v);
	srv->push = ps;
	for (unsigned i = 0; i < n; i++) {
		pusher *p = &ps->v[ps->n++];
		p->srv = srv;
		p->peer = i;
		p->fd = -1;
		pthread_mutex_init(&p->mu, NULL);
		pthread_cond_init(&p->cv, NULL);
		int err = pthread_create(&p->thread, NULL, pusher_main, p);
		if (err)
			return ss_fail(SS_ENOMEM, "cannot start a push thread: %s", strerror(err));
		p->started = true;
	}
	return 0;
}

void push_stop(server *srv)
{
	struct pushers *ps = srv->push;
	if (!ps)
		return;
	for (unsigned i = 0; i < ps->n; i++) {
		pusher *p = &ps->v[i];
		pthread_mutex_lock(&p->mu);
		if (p->fd >= 0)
			shutdown(p->fd, SHUT_RDWR);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	for (unsigned i = 0; i < ps->n; i++) {
		pusher *p = &ps->v[i];
		if (p->started)
			pthread_join(p->thread, NULL);
		if (p->sent || p->dropped)
			log_info("pushed %llu chunks to peer %u during puts (%llu dropped, pulled instead)",
				 (unsigned long long)p->sent, i, (unsigned long long)p->dropped);
		pthread_mutex_destroy(&p->mu);
		pthread_cond_destroy(&p->cv);
	}
	free(ps->v);
	free(ps);
	srv->push = NULL;
}
