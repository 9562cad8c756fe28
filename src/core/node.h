/*
 * node — the replication core of one server: every decision and every
 * change to replicated state, on one thread, driven by events, with no
 * network I/O.
 *
 * A server has one link per peer.  The links' I/O (connect, TLS, PULL,
 * READ) happens elsewhere — in server/peer.c a thread per link, in the
 * simulator (tests/sim) plain function calls — and each link is always
 * either doing the one action the core gave it, or waiting for its next
 * one.  When it has done an action it reports an event; the core handles
 * it and answers with the link's next action:
 *
 *   event (from link i)          core                         next action
 *   start                        —                            repl_link_next
 *   connected(peer)              count parked records         PULL …
 *   failed                       drop what the link had       SLEEP / CONNECT
 *   pulled(records, PULLED)      check the batch; a new       FETCH(roots) when
 *                                index id; what to fetch      it is this link's turn
 *   fetched                      apply the batch (parks what  PULL / RESOLVE …
 *                                is still incomplete), moves
 *                                the cursor, one transaction
 *   (RESOLVE)                    a batch of parked records    FETCH(roots) …
 *
 * plus one from elsewhere: a member was forgotten (repl_node_forget).  (The
 * acknowledgements peers' PULLs carry are not events: the session that
 * hears one records it in the ack table, core/acks.c, at once — a quorum
 * wait should not queue behind a batch being applied.)
 *
 * Only one link fetches at a time: the peers mostly send the same records,
 * and two links fetching the same trees at once would download them twice.
 * A link whose batch is ready while another fetches gets its FETCH when
 * the other's batch is applied (repl_node_take_ready hands it out).
 *
 * The fetch itself is the link's business (READ what the trees lack,
 * verify, store), done with the trees leased against garbage collection;
 * the core then applies the batch with a "fetch" that only looks at the
 * store: a tree still incomplete (the peer lacked a chunk) parks its record
 * (core/apply.c).  Records are lent, not copied: the records a link
 * reports with `pulled` stay the link's, untouched by it until its next
 * action after the apply.
 */
#ifndef SS_NODE_H
#define SS_NODE_H

#include "apply.h"
#include "link.h"

#define REPL_PULL_BATCH 256     /* records asked for per PULL */
#define REPL_RESOLVE_BATCHES 16 /* batches one try of the parked records goes through at most */

typedef enum {
	ACT_WAIT,    /* nothing yet: the core hands the next action later */
	ACT_SLEEP,   /* wait_ms, then report repl_node_woke */
	ACT_CONNECT, /* then repl_node_connected or repl_node_failed */
	ACT_PULL,    /* send req, held at most wait_ms; then repl_node_pulled */
	ACT_FETCH,   /* complete the trees of roots[0..n); then repl_node_fetched */
} repl_act_kind;

typedef struct repl_act {
	repl_act_kind kind;
	uint32_t wait_ms;
	repl_pull_req req;    /* ACT_PULL */
	const uint8_t *roots; /* ACT_FETCH: n ids of HASH_LEN bytes, valid until the next event of this link */
	unsigned n;
} repl_act;

/* What a PULLED said (its head and namespace: status shows them). */
typedef struct repl_pulled {
	uint64_t index_id, head, files, bytes;
	uint8_t digest[HASH_LEN];
} repl_pulled;

/* A link as status and the write catch-up see it. */
typedef struct repl_peer_state {
	bool connected;
	bool head_known; /* head and digest are from this connection */
	uint64_t peer;   /* short node id (0: never connected) */
	uint64_t cursor; /* what of its log is applied or parked here */
	repl_pulled pulled;
} repl_peer_state;

/* What handling one event did (for logs and wake-ups). */
typedef struct repl_outcome {
	unsigned written, parked, records; /* records: of the batch applied */
	bool resolved;                     /* a try of the parked records ended */
	bool state_changed;                /* repl_node_state(link) changed */
} repl_outcome;

typedef struct repl_node repl_node;

repl_node *repl_node_new(store *st, unsigned nlinks);
void repl_node_free(repl_node *n);

/*
 * Link events.  Each returns the link's next action in *act (ACT_WAIT: it
 * comes later, from repl_node_take_ready) and what it did in *out (may be
 * NULL).  A non-zero return is the batch refused (out of order, malformed)
 * or the store failing: the core has taken the link down already, and *act
 * is its next action as after repl_node_failed.  SLEEP and CONNECT always
 * mean the link is down: a connection still open is closed first.
 */
int repl_node_start(repl_node *n, unsigned link, int64_t now_ms, repl_act *act);
int repl_node_woke(repl_node *n, unsigned link, int64_t now_ms, repl_act *act);
int repl_node_connected(repl_node *n, unsigned link, uint64_t peer, int64_t now_ms, repl_act *act,
			repl_outcome *out);
void repl_node_failed(repl_node *n, unsigned link, int64_t now_ms, repl_act *act, repl_outcome *out);
int repl_node_pulled(repl_node *n, unsigned link, record *recs, unsigned nrecs, const repl_pulled *pulled,
		     int64_t now_ms, repl_act *act, repl_outcome *out);
int repl_node_fetched(repl_node *n, unsigned link, int64_t now_ms, repl_act *act, repl_outcome *out);
/* A link waiting (ACT_WAIT) whose action is now decided: true with *link
 * and *act set, once per decision. */
bool repl_node_take_ready(repl_node *n, unsigned *link, repl_act *act);

/* A member forgotten for good: what was parked from its log goes. */
int repl_node_forget(repl_node *n, uint64_t peer);

const repl_peer_state *repl_node_state(const repl_node *n, unsigned link);
/* The link's schedule (for the simulator's clock jumps and tests). */
const repl_link *repl_node_link(const repl_node *n, unsigned link);
/* Records parked here, and how often a batch parked new ones. */
repl_view repl_node_view(const repl_node *n);
const repl_counts *repl_node_counts(const repl_node *n);

#endif
