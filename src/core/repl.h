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
 * take the remote one — a tombstone too: this server's acknowledgement of
 * the delete counts toward its write quorum, so it must hold it, or the
 * deleted version would come back here from any server that still has it
 * once the tombstone's own servers are lost.  (A tombstone expired here and
 * received again is held again until it expires again: an echo that dies
 * out; docs/REPLICATION.md.)  Otherwise by resolve():
 *   KEEP      nothing
 *   TAKE      the remote record as it is
 *   MERGE     our record with the merged vector
 *   CONFLICT  the winner with the merged vector at the path, and the loser
 *             with its own vector at conflict_path(loser) — unless the loser
 *             is a delete, which needs no copy (an update beats it)
 */
int repl_decide(void *ctx, const record *local, const record *remote, record out[2], unsigned *n);

/*
 * May this server forget tombstone t for good?  Only once it is older than
 * the retention window and every other member has durably applied this
 * server's log past it: acked[i] is member i's cursor over our log (0 when
 * unknown — a member down since we started blocks expiry, as it must: it may
 * still hold the deleted version and would bring it back).
 */
bool repl_tombstone_expirable(const record *t, int64_t now_ns, int64_t retention_ns, const uint64_t *acked,
			      unsigned nmembers);
/* The same as a store_expirable_fn (store_expire_tombstones' callback)
 * over a repl_expiry, for the server's housekeeping and the simulator. */
typedef struct repl_expiry {
	int64_t now_ns, retention_ns;
	const uint64_t *acked;
	unsigned nmembers;
} repl_expiry;
bool repl_expirable(void *ctx, const record *t);

/* Is a received record well formed (path, sorted non-zero version vector,
 * mode, an empty root for a tombstone)?  0 or SS_EPROTO/SS_EINVAL saying why. */
int repl_record_check(const record *r);

/* The sequence to pull after: the stored cursor if it is over the index the
 * peer announces, else 0 (its data directory is new: everything again). */
uint64_t repl_pull_after(uint64_t cursor_index, uint64_t cursor_seq, uint64_t peer_index);

/*
 * Is a puller's cursor over our log (same index id) still a place in it?
 * after: its cursor; head: our head; ours: store_rec_fp of our version at
 * seq `after` (0: no version there — never written, or expired); theirs:
 * the fingerprint of the record it received there (0: unknown).  False when
 * our log went back or changed under its cursor — the cursor is past our
 * head, or our record there is another one: this data directory was
 * restored from an older copy (and may since have written new records at
 * seqs the cursor already passed).  The caller then starts a new sequence
 * space (store_log_regressed).
 */
bool repl_cursor_valid(uint64_t after, uint64_t head, uint64_t ours, uint64_t theirs);

#endif
