/*
 * peer — this server's links to the other servers of the cluster.
 *
 * The replication core (core/node.c) runs on one thread of its own, fed by
 * a bounded queue of events, and decides everything: when each link
 * connects, PULLs (and how long the peer may hold it), fetches, retries
 * the parked records or backs off; it checks and applies every batch and
 * keeps the parked records.  One thread per `--peer` address does what the
 * core says over the network — connect over mutual TLS (the certificate
 * must say role server, and match the pinned node id if one was given as
 * ID@HOST:PORT), PULL, READ — and posts how it went:
 *
 *   core: PULL(index id, after our cursor, wait)
 *   link: → ENTRY… PULLED(index id, head, …)          posts pulled
 *   core: FETCH(the roots the batch lacks here), one link at a time
 *   link: READ(node ids), READ(missing chunk ids) … → CHUNK / MISSING,
 *         each verified and stored                     posts fetched
 *   core: store_apply_remote(records, cursor) — one transaction
 *
 * The peer holds a PULL with nothing new for up to PEER_WAIT_MS, answering
 * as soon as something changes (long poll), so a put propagates at once
 * without polling traffic.  A lost link is retried with backoff (0.1 s
 * doubling to 1 s).  Serving the other direction — answering PULL and READ
 * from peers — is session.c's job.
 */
#ifndef SS_PEER_H
#define SS_PEER_H

#include "../core/node.h"
#include "server.h"

#define PEER_WAIT_MS REPL_WAIT_MS /* longest a PULL is held when nothing is new */
#define PEER_PULL_BATCH REPL_PULL_BATCH /* records asked for per PULL */
#define PEER_BACKOFF_MAX_MS REPL_BACKOFF_MAX_MS /* a returning peer is seen within a second */
#define PEER_CONNECT_MS 3000 /* connect + TLS handshake (bounds shutdown too) */
#define PEER_PENDING_FRESH_S 10.0       /* a write waits for records parked this recently */

/* A peer's state as status shows it. */
typedef struct peer_info {
	char addr[128];
	bool connected, known; /* known: we have talked to it since start */
	bool head_known;       /* head and digest are from this connection */
	uint8_t id[HASH_LEN];
	uint64_t index_id, head, cursor, files, bytes;
	uint8_t digest[HASH_LEN];
} peer_info;

/* Start one link thread per srv->opts->peers entry. */
int peers_start(server *srv);
/* Stop and join them (at shutdown; srv->stopping is set). */
void peers_stop(server *srv);
/* Free what peers_start made, once no session can ask peers_info. */
void peers_free(server *srv);
/*
 * Before a write: wait (up to max_ms) until every connected peer's log, as
 * far as it last announced it, is applied here, so a version that was
 * acknowledged through another server is this write's predecessor rather
 * than a concurrent one (no spurious conflict for one user writing through
 * two servers in turn).  False if still behind when the time is up.
 */
#define PEER_CATCH_UP_MS 2000
bool peers_catch_up(server *srv, int max_ms);

/* Is addr one of our --peer addresses (as written)? */
bool peers_listed(server *srv, const char *addr);
/* Is the node one of our --peer servers (reached through its address)? */
bool peers_is_member(server *srv, uint64_t node);
/*
 * forget NODE: remove a member for good — it no longer blocks tombstone
 * expiry or counts toward the write quorum, and its links are refused (it
 * may rejoin only as a new member, with a wiped data directory).  node is a
 * hex id or a prefix of a member's id (≥ 8 digits).  Remembered in the
 * store; passed on to every connected member unless relayed.  *servers gets
 * how many servers recorded it.
 */
int peers_forget(server *srv, const char *node, bool relayed, unsigned *servers);
bool peers_is_forgotten(server *srv, const uint8_t id[HASH_LEN]);

/* A connection of its own to --peer number i: TLS, the peer's identity
 * checked as for the link, HELLO.  For push.c. */
int peers_dial(server *srv, unsigned i, conn *c, msgio *io);

/* Is our link to the peer with this short node id up? */
bool peers_link_up(server *srv, uint64_t node);

/*
 * Fetch chunks this server lost (scrub found them corrupt) from its peers,
 * each over a short connection of its own: every copy verified against its
 * id before it is stored.  ids (n ≤ 1024) is left holding those no peer
 * could supply; returns how many were repaired.
 */
unsigned peers_repair(server *srv, uint8_t *ids, unsigned n);

/* Snapshot of peer i's state; false past the last peer. */
bool peers_info(server *srv, unsigned i, peer_info *out);

#endif
