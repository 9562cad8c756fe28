/*
 * apply — what a server does with one batch of a peer's change log, with no
 * network: check the records, keep the last of each path, complete each
 * kept live record's tree through a fetch callback, and apply them with
 * repl_decide in one transaction that also moves the cursor.
 *
 * server/peer.c calls it with its network fetch (READ over the link);
 * tests/sim calls it with a fetch that copies from another in-process store,
 * so the simulator runs the very code the server runs.
 */
#ifndef SS_APPLY_H
#define SS_APPLY_H

#include "repl.h"
#include "../store/store.h"

/* Make the whole tree under root present and marked complete in the
 * puller's store (children before parents, like store_put_node wants). */
typedef int (*repl_fetch_fn)(void *ctx, const uint8_t root[HASH_LEN]);

/* Every record in order after `from`, at most `head`, and well formed
 * (repl_record_check): 0, or SS_EPROTO/SS_EINVAL saying which is not. */
int repl_batch_check(const record *recs, unsigned n, uint64_t from, uint64_t head);

/* Within one batch, keep only the last record of each path (a server's log
 * holds a path's versions in causal order).  Returns the count kept. */
unsigned repl_drop_superseded(record *recs, unsigned n);

/*
 * Apply the batch recs[0..n) received from peer peer_short (short node id),
 * whose PULLED announced index id peer_index and head `head`; `from` is the
 * sequence the pull asked after (repl_pull_after over the stored cursor).
 *
 *   - every record must come in order after `from` and at most `head`, and
 *     be well formed (repl_record_check): else SS_EPROTO/SS_EINVAL, nothing
 *     applied (a stale or duplicated batch is refused here);
 *   - n == 0: only a new index id is remembered (cursor (peer_index, 0));
 *   - otherwise drop superseded records, take a lease (GC stays off the
 *     fetched chunks), fetch each kept live record's tree, and call
 *     store_apply_remote(…, repl_decide, counts, out), setting the
 *     cursor to (peer_index, last seq of the batch).  A fetch that finds
 *     a chunk missing at the peer (SS_ENOENT) is no error: the store parks
 *     that record as pending, under the seq of the batch's FIRST record,
 *     so the acknowledgement stays below the whole batch until it is
 *     applied; any other fetch error fails the batch.
 *
 * recs is reordered in place.  counts and out may be NULL.  The caller
 * serialises concurrent calls on one store if it wants to (peer.c does).
 */
int repl_apply_batch(store *st, record *recs, unsigned n, uint64_t from, uint64_t head, uint64_t peer_short,
		     uint64_t peer_index, repl_fetch_fn fetch, void *fetch_ctx, repl_counts *counts,
		     store_applied *out);

/*
 * Try parked records p[0..n) (store_pending_list) with one more server's
 * fetch: a record the path has moved past since (resolve says KEEP) needs
 * no tree; the others are fetched, and those whose fetch finds a chunk
 * missing (SS_ENOENT) stay parked for another server.  The rest go through
 * store_apply_pending with repl_decide.  p is compacted in place.
 * out->parked counts what is still parked.  Any other fetch error stops it.
 */
int repl_apply_pending(store *st, store_pending *p, unsigned n, repl_fetch_fn fetch, void *fetch_ctx,
		       repl_counts *counts, store_applied *out);

#endif
