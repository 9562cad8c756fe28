/*
 * acks — which servers hold which of our records: the table behind the
 * write quorum and tombstone expiry, with no I/O and no locks.
 *
 * A peer's PULL over our log says it has applied — durably, in the
 * transaction that stored its cursor — every record of ours up to the
 * seq it acknowledges (repl_serve_pull).  That, and only that, is a copy:
 * the write quorum counts it, never connections.  The server keeps one
 * table under its lock (server.c); the simulator one per simulated server.
 * Both lose it in a crash: it is rebuilt from the next PULLs.
 */
#ifndef SS_ACKS_H
#define SS_ACKS_H

#include <stdbool.h>
#include <stdint.h>

#define REPL_ACKS_MAX 64

typedef struct repl_ack {
	uint64_t node;  /* short node id */
	uint64_t acked; /* our highest seq it has applied (its latest word) */
	unsigned live;  /* its sessions open here now */
	bool member;    /* one of our --peer servers: only members count */
} repl_ack;

typedef struct repl_acks {
	repl_ack v[REPL_ACKS_MAX];
	unsigned n;
} repl_acks;

/* The entry of node, or NULL. */
repl_ack *repl_acks_find(repl_acks *t, uint64_t node);
/* The entry of node, made if new.  A full table (old identities of wiped
 * servers) gives up an entry with no session open, a non-member's first;
 * NULL if every one has a session open. */
repl_ack *repl_acks_get(repl_acks *t, uint64_t node, bool member);
/* node's PULL acknowledged our log up to `acked`: its latest word, not the
 * highest ever — a peer restarted from an older copy holds less than it
 * once said.  False if the table had no room. */
bool repl_acks_seen(repl_acks *t, uint64_t node, uint64_t acked, bool member);
/* Servers holding our record seq durably: this one, and each member that
 * acknowledged it. */
unsigned repl_acks_copies(const repl_acks *t, uint64_t seq);

#endif
