/* apply.c — see apply.h. */
#include "apply.h"
#include "resolve.h"

#include <stdlib.h>
#include <string.h>

/* O(n²) over ≤ PEER_PULL_BATCH records. */
unsigned repl_drop_superseded(record *recs, unsigned n)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++) {
		bool later = false;
		for (unsigned j = i + 1; j < n && !later; j++)
			later = !strcmp(recs[i].path, recs[j].path);
		if (!later)
			recs[k++] = recs[i];
	}
	return k;
}

int repl_batch_check(const record *recs, unsigned n, uint64_t from, uint64_t head)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t prev = i ? recs[i - 1].seq : from;
		if (recs[i].seq <= prev || recs[i].seq > head)
			return ss_fail(SS_EPROTO, "it sent record %llu out of order (after %llu, head %llu)",
				       (unsigned long long)recs[i].seq, (unsigned long long)prev,
				       (unsigned long long)head);
		int rc = repl_record_check(&recs[i]);
		if (rc)
			return rc;
	}
	return 0;
}

int repl_apply_batch(store *st, record *recs, unsigned n, uint64_t from, uint64_t head, uint64_t peer_short,
		     uint64_t peer_index, repl_fetch_fn fetch, void *fetch_ctx, repl_counts *counts,
		     store_applied *out)
{
	if (out)
		*out = (store_applied){0};
	int rc = repl_batch_check(recs, n, from, head);
	if (rc)
		return rc;
	if (!n) {
		/* A new index id means the peer's data directory is new: its
		 * records come again from the start, and the cursor restarts. */
		uint64_t index_id, cursor;
		if ((rc = store_cursor_get(st, peer_short, &index_id, &cursor)))
			return rc;
		if (peer_index != index_id && (rc = store_cursor_set(st, peer_short, peer_index, 0)))
			return rc;
		return 0;
	}
	uint64_t first = recs[0].seq, last = recs[n - 1].seq;
	unsigned kept = repl_drop_superseded(recs, n);
	/* A record parked from this batch holds the acknowledgement back
	 * below the whole batch (store_cursor_acked): the records it stood in
	 * for are not held here either — those it superseded, and the one a
	 * conflict copy carries the content of (the copy comes later in the
	 * log than the version it preserves). */
	for (unsigned i = 0; i < kept; i++)
		recs[i].seq = first;
	/* Fetched chunks belong to no version until the apply: the lease
	 * keeps garbage collection off them meanwhile. */
	uint64_t lease = store_lease_begin(st);
	for (unsigned i = 0; i < kept && !rc; i++) {
		if (recs[i].deleted)
			continue;
#if SIM_BUG == 2
		/* PLANTED BUG 2 (tests/sim only): apply without fetching the
		 * tree, and leave out what the store would refuse — the cursor
		 * still moves past it, so the record is lost on this server. */
		int have = store_has_node(st, recs[i].root);
		if (have <= 0) {
			memmove(recs + i, recs + i + 1, (kept - i - 1) * sizeof *recs);
			kept--;
			i--;
		}
		continue;
#endif
		/* A tree this peer cannot complete is not its whole batch's
		 * problem: the store parks the record, and repl_apply_pending
		 * gets its tree from any server later. */
		if ((rc = fetch(fetch_ctx, recs[i].root)) == SS_ENOENT)
			rc = 0;
	}
	if (!rc)
		rc = store_apply_remote(st, recs, kept, peer_short, peer_index, last, repl_decide, counts, out);
	store_lease_end(st, lease);
	return rc;
}

int repl_apply_pending(store *st, store_pending *p, unsigned n, repl_fetch_fn fetch, void *fetch_ctx,
		       repl_counts *counts, store_applied *out)
{
	if (out)
		*out = (store_applied){0};
	unsigned ready = 0, waiting = 0;
	int rc = 0;
	uint64_t lease = store_lease_begin(st);
	for (unsigned i = 0; i < n && !rc; i++) {
		/* One the path has moved past since needs no tree: the apply
		 * finds it changes nothing and drops it. */
		record *cur = xmalloc(sizeof *cur);
		resolution res = {0};
		bool stale = !store_lookup(st, p[i].rec.path, cur) && !resolve(cur, &p[i].rec, &res) &&
			     res.kind == RESOLVE_KEEP;
		free(cur);
		if (!stale && !p[i].rec.deleted && (rc = fetch(fetch_ctx, p[i].rec.root)) == SS_ENOENT) {
			rc = 0; /* not from this server: it stays parked */
			waiting++;
			continue;
		}
		if (!rc)
			p[ready++] = p[i];
	}
	if (!rc && ready)
		rc = store_apply_pending(st, p, ready, repl_decide, counts, out);
	store_lease_end(st, lease);
	if (out)
		out->parked += waiting;
	return rc;
}

