/*
 * trackers — requests to swarm trackers (docs/SWARM.md), for the client
 * and for servers started with --tracker.
 *
 * One connection per tracker is kept open and reused, one request at a
 * time; a failed request is retried once on a fresh connection, then
 * reported.  A tracker that is down costs at most a connect timeout.
 */
#ifndef SS_TRACKERS_H
#define SS_TRACKERS_H

#include <pthread.h>

#include "msgio.h"

#define TRACKERS_MAX 16
#define TRACKERS_CONNECT_MS 3000
#define TRACKERS_IO_MS 5000 /* a tracker slower than this to answer counts as down */

typedef struct tracker_link {
	pthread_mutex_t mu;
	char addr[WIRE_ADDR_MAX];
	conn c;
	msgio io;
	bool open;
	double resync_after; /* now_mono() before which no resync is tried */
	double resync_wait;  /* the next pause, doubling while resyncs fail to agree */
} tracker_link;

typedef struct trackers {
	SSL_CTX *ctx;
	char self[WIRE_ADDR_MAX]; /* the address we serve chunks on */
	tracker_link t[TRACKERS_MAX];
	unsigned n;
} trackers;

void trackers_init(trackers *ts, SSL_CTX *ctx, const char *self, const char *const *addrs, unsigned n);
void trackers_free(trackers *ts);

/* One request (the frame in req) to tracker i: OK's value into *ok, or the
 * SEEDER stream through fn (fn NULL: OK expected). */
typedef int (*seeder_fn)(void *ctx, const msg *m);
int trackers_call(trackers *ts, unsigned i, const buf *req, uint64_t *ok, seeder_fn fn, void *ctx);
/* ANNOUNCE (flags WIRE_ANNOUNCE_*; root NULL with WITHDRAW_ALL) to every
 * tracker; fails only when none took it. */
int trackers_announce(trackers *ts, const uint8_t *root, uint64_t size, const char *name, uint32_t flags);
/* Live seeders of root from the first tracker that answers, then from the
 * extra addresses (a .mtorrent's own trackers). */
int trackers_seeders(trackers *ts, const uint8_t root[HASH_LEN], const char (*extra)[128], unsigned nextra,
		     seeder_fn fn, void *ctx);

/*
 * Heartbeat tracker i, saying we serve `count` files.  A tracker that lists
 * another number gets everything withdrawn and announced again from next()
 * (fills root, size and name of share k and returns true, or false past
 * the last one) — at once the first time, then, while the numbers still
 * differ after a resync, at most every 2^k heartbeats (up to 10 minutes):
 * an entry the tracker refuses must not make every heartbeat a full resync.
 */
typedef bool (*share_iter)(void *ctx, unsigned k, uint8_t root[HASH_LEN], uint64_t *size, char *name);
void trackers_keepalive(trackers *ts, unsigned i, uint64_t count, share_iter next, void *ctx);

#endif
