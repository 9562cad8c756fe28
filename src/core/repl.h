/*
 * repl — the decisions of replication, with no I/O.
 *
 * Every server pulls every peer's change log (docs/REPLICATION.md) and
 * hands each received record to store_apply_remote with repl_decide, which
 * says what the record changes here.  repl_decide is a pure function of the
 * two records (core/resolve), so every server that has seen the same
 * records holds the same namespace, whatever order they arrived in.
 */
#ifndef SS_REPL_H
#define SS_REPL_H

#include "../store/store.h"

/* What repl_decide did, summed over calls (its ctx). */
typedef struct repl_counts {
	uint64_t taken;     /* remote record newer: it replaces ours */
	uint64_t kept;      /* ours newer or the same: nothing written */
	uint64_t merged;    /* same content written on both sides: vectors merged */
	uint64_t conflicts; /* concurrent different content: winner + conflict copy */
} repl_counts;

/*
 * A store_decide_fn (ctx: repl_counts *, may be NULL).  No local record:
 * take the remote one.  Otherwise by resolve():
 *   KEEP      nothing
 *   TAKE      the remote record as it is
 *   MERGE     our record with the merged vector
 *   CONFLICT  the winner with the merged vector at the path, and the loser
 *             with its own vector at conflict_path(loser) — unless the loser
 *             is a delete, which needs no copy (an update beats it)
 */
int repl_decide(void *ctx, const record *local, const record *remote, record out[2], unsigned *n);

/* The sequence to pull after: the stored cursor if it is over the index the
 * peer announces, else 0 (its data directory is new: everything again). */
uint64_t repl_pull_after(uint64_t cursor_index, uint64_t cursor_seq, uint64_t peer_index);

#endif
