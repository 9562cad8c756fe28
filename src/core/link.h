/*
 * link — one replication link, as a state machine with no I/O.
 *
 * A server pulls each peer's change log over a link of its own
 * (server/peer.c); the simulator (tests/sim) runs every link of a whole
 * cluster in one process.  Both drive this same machine the same way:
 *
 *     for (;;) {
 *         repl_link_step s = repl_link_next(&l, &view, now_ms);
 *         do s.act (connect, PULL, retry parked records, or sleep);
 *         report how it went: repl_link_connected / _failed / _pulled /
 *                             _resolved
 *     }
 *
 * The machine decides everything about a link that is not moving bytes:
 * when to reconnect (backoff), how long a PULL may be held (not at all on
 * a fresh connection, briefly while records are parked, else long-polled),
 * and when the records parked here are worth another try through this link
 * (after every PULL once new ones parked, else with a backoff of its own).
 * Time is an input in milliseconds on any monotonic clock, so the
 * simulator's clock drives it exactly as the real one does.
 *
 * The PULL itself is symmetrical library code too: repl_pull_request
 * builds what the puller sends from its store, repl_serve_pull decides at
 * the server what the request acknowledges and where to send from.
 */
#ifndef SS_LINK_H
#define SS_LINK_H

#include "../store/store.h"

#define REPL_WAIT_MS 10000            /* longest a PULL is held when nothing is new */
#define REPL_BACKOFF_MIN_MS 100       /* first reconnect after a failure */
#define REPL_BACKOFF_MAX_MS 1000      /* a returning peer is seen within a second */
#define REPL_PARKED_WAIT_MS 1000      /* the PULL hold while records are parked */
#define REPL_PARKED_RETRY_MIN_MS 1000 /* a fruitless retry of parked records waits … */
#define REPL_PARKED_RETRY_MAX_MS 30000 /* … doubling up to this */

typedef enum {
	LINK_CONNECT, /* open the link: connect, TLS, check the peer, JOIN */
	LINK_PULL,    /* one PULL held at most wait_ms; apply its batch */
	LINK_RESOLVE, /* try the parked records through this link's peer */
	LINK_SLEEP,   /* idle for wait_ms (or until the view changes) */
} repl_link_act;

typedef struct repl_link_step {
	repl_link_act act;
	uint32_t wait_ms;
} repl_link_step;

/* What a link sees of its server: the records parked there, shared by all
 * links (any of them may complete one), and how often a batch parked new
 * ones (each time is a reason for every link to try again at once). */
typedef struct repl_view {
	uint64_t parked;
	uint64_t parked_gen;
} repl_view;

typedef struct repl_link {
	bool up;
	bool first;       /* no PULL answered on this connection yet */
	bool pulled;      /* some PULL answered since the last failure */
	bool look_parked; /* a PULL was answered: consider the parked records */
	int backoff_ms;   /* the wait before the next reconnect */
	int64_t connect_at;
	/* the parked records, as this link last tried them */
	uint64_t parked_gen;
	int64_t parked_retry_at;
	int parked_backoff_ms;
	uint64_t parked_after; /* the next try goes on from here (core/node.c) */
	bool resolving;        /* LINK_RESOLVE given, not reported yet */
	bool resolve_broke;    /* the link broke during a try: no early retry on reconnect */
} repl_link;

/* A link that has never connected: the first step is LINK_CONNECT. */
void repl_link_init(repl_link *l);
/* The step due now.  LINK_RESOLVE is chosen at most once per answered PULL. */
repl_link_step repl_link_next(repl_link *l, const repl_view *v, int64_t now_ms);
void repl_link_connected(repl_link *l);
/* The connect failed or the link broke (error, timeout, the peer went).
 * Breaking during a try of the parked records counts as a fruitless try
 * (its backoff grows), so a peer that fails every try is not hammered. */
void repl_link_failed(repl_link *l, int64_t now_ms);
void repl_link_pulled(repl_link *l);
/* A try of the parked records applied `written` of them. */
void repl_link_resolved(repl_link *l, unsigned written, int64_t now_ms);

/* ---- one PULL, both ends ---- */

/* What a puller sends (docs/WIRE.md PULL): its cursor over the peer's log,
 * what of that it has applied (store_cursor_acked: less what is parked)
 * and the fingerprint of the record at the cursor. */
typedef struct repl_pull_req {
	uint64_t index_id, after, acked, fp;
} repl_pull_req;
int repl_pull_request(store *st, uint64_t peer_short, repl_pull_req *out);

/* The server's answer to it, before the records (repl_serve_pull). */
typedef struct repl_pull_plan {
	uint64_t index_id; /* ours, to announce in PULLED (new if regressed) */
	uint64_t after;    /* send our records after this seq */
	bool regressed;    /* our log went back under its cursor: new sequence space */
	bool acks;         /* the request acknowledges our log up to `acked` */
	uint64_t acked;
	uint64_t head;     /* our head when it was checked (for the message) */
} repl_pull_plan;

/*
 * At the serving store: a request over our current index id acknowledges
 * what it says it applied (never past its cursor), unless the cursor is no
 * longer a place in our log (repl_cursor_valid) — then this data directory
 * was restored from an older copy, and store_log_regressed starts a new
 * sequence space, which every puller pulls again from 0.  A request over
 * another index id (ours is new to it) acknowledges nothing and starts
 * from 0.
 */
int repl_serve_pull(store *st, const repl_pull_req *req, repl_pull_plan *out);

#endif
