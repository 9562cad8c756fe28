/*
 * server — the storage daemon: one store, one listening socket, one thread
 * per connection doing blocking TLS I/O (bulk chunk streams want large reads
 * and writes; DESIGN.md measured ~1.75 GB/s that way against ~1.0 GB/s
 * through bufferevents).  Connections are capped at SERVER_MAX_CONNS.
 */
#ifndef SS_SERVER_H
#define SS_SERVER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/acks.h"
#include "../net/msgio.h"
#include "../net/tls.h"
#include "../store/store.h"

#define SERVER_MAX_CONNS 512
#define SERVER_HANDSHAKE_MS 10000
#define SERVER_MAX_HANDSHAKES 64 /* connections still in their TLS handshake */
#define SERVER_IDLE_MS (10 * 60 * 1000)

#define SERVER_MAX_PEERS 64
#define SERVER_RETENTION_MS (30LL * 24 * 3600 * 1000) /* default of --retention: 30 days */
#define SERVER_SCRUB_INTERVAL_MS (24 * 3600 * 1000)    /* default of --scrub-interval: a day */
#define SERVER_SCRUB_RATE_MB 32                       /* default of --scrub-rate */

typedef struct server_opts {
	const char *data;
	const char *listen;
	const char *tls;
	const char *peers[SERVER_MAX_PEERS];
	int npeers;
	const char *trackers[16];
	int ntrackers;
	const char *write_quorum;
	int quorum_timeout_ms; /* how long a write waits for its acknowledgements */
	int64_t retention_ms;  /* old versions and tombstones are kept this long */
	int scrub_interval_ms; /* a scrub pass starts this long after the last */
	int scrub_rate_mb;     /* MB/s a scrub reads at most (0: no scrub) */
	/* A tracker (docs/SWARM.md) is a server in the tracker role: it
	 * replicates only with trackers, keeps the seeders registry, exports
	 * it to `seederlist` and logs every request to `request_log`. */
	tls_role role; /* ROLE_SERVER unless set */
	const char *seederlist, *request_log;
} server_opts;

#define SERVER_QUORUM_MS 30000 /* default of --quorum-timeout */
#define SERVER_QUORUM_GRACE_MS 2000 /* a write waits this long for peers to connect */

typedef struct server {
	const server_opts *opts;
	store *st;
	uint8_t node_id[HASH_LEN];
	char crt[PATH_MAX], key[PATH_MAX]; /* this node's identity */
	/* Change notification: chg_gen grows after every local commit and
	 * every applied batch of records, waking PULLs held by peers.
	 * Lock order: chg_mu before peer.c's lock (never the other way). */
	pthread_mutex_t chg_mu;
	pthread_cond_t chg_cv;
	uint64_t chg_gen;
	bool stopping;
	repl_acks acks; /* which peers hold which of our records (core/acks.h), under chg_mu */
	struct quorum_hold *holds; /* writes not yet acknowledged (server_hold), under chg_mu */
	unsigned cluster_size, write_quorum; /* N, W */
	struct peers *peers; /* peer.c */
	pthread_t maint, scrub; /* maint.c */
	bool maint_started, scrub_started;
	tls_role role;          /* ROLE_SERVER, or ROLE_TRACKER */
	struct registry *reg;   /* registry.c: trackers only */
	struct pushers *push;   /* push.c: chunks sent on to the peers during puts */
	pthread_t seeder;       /* seeding.c: with --tracker */
	bool seeding;
} server;

int server_main(const server_opts *o);

void server_changed(server *srv);
uint64_t server_change_gen(server *srv);
/* Wait until the generation is no longer gen, the server stops, or ms pass. */
void server_wait_change(server *srv, uint64_t gen, int ms);
bool server_stopping(server *srv);
/* Sleep ms, waking early when the server stops. */
void server_sleep(server *srv, int ms);
/* A peer's session opened (+1) or closed (-1); a PULL it sent says it has
 * applied our records up to `acked` (over our current index). */
void server_peer_live(server *srv, uint64_t node, int delta);
void server_peer_acked(server *srv, uint64_t node, uint64_t acked);
/* Before a write: fail unless W-1 peers are connected to take it (waiting
 * up to SERVER_QUORUM_GRACE_MS for them). */
int server_quorum_ready(server *srv);
/* After committing seq: wait until W servers (this one included) hold it
 * durably, or --quorum-timeout; *copies gets how many do. */
int server_quorum_wait(server *srv, uint64_t seq, unsigned *copies);
/*
 * Writes not yet acknowledged by the write quorum hold the history back: a
 * peer whose cursor passed a version that left our history meanwhile would
 * count as holding it.  A hold (owned by its caller, e.g. a session) covers
 * seqs from h->seq on; server_hold registers it or lowers its seq,
 * server_release withdraws it (both idempotent).  server_quorum_floor is
 * the lowest held seq (UINT64_MAX: none): history expiry keeps versions
 * from there on.
 */
typedef struct quorum_hold {
	uint64_t seq;
	bool held;
	struct quorum_hold *next;
} quorum_hold;
void server_hold(server *srv, quorum_hold *h, uint64_t seq);
/* A held h covers from seq on now (a wait covered what was below). */
void server_hold_from(server *srv, quorum_hold *h, uint64_t seq);
void server_release(server *srv, quorum_hold *h);
uint64_t server_quorum_floor(server *srv);
/* Peer node's cursor over our log as its last PULL said (0: unknown). */
uint64_t server_acked(server *srv, uint64_t node);
/* How many servers hold our record seq durably (this one included). */
unsigned server_copies(server *srv, uint64_t seq);

/* Short node id (first 8 bytes, big-endian): the name in version vectors. */
uint64_t node_short_id(const uint8_t id[HASH_LEN]);

/* Serve one authenticated connection until it closes (session.c). */
void session_run(server *srv, conn *c);

#endif
