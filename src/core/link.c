/* link.c — see link.h. */
#include "link.h"
#include "repl.h"

#include <stdlib.h>

void repl_link_init(repl_link *l)
{
	*l = (repl_link){.backoff_ms = REPL_BACKOFF_MIN_MS};
}

/* Parked records worth a try through this link now: new ones parked since
 * its last try, or its retry is due. */
static bool parked_due(const repl_link *l, const repl_view *v, int64_t now_ms)
{
	return v->parked && (v->parked_gen != l->parked_gen || now_ms >= l->parked_retry_at);
}

repl_link_step repl_link_next(repl_link *l, const repl_view *v, int64_t now_ms)
{
	if (!l->up) {
		if (now_ms < l->connect_at)
			return (repl_link_step){LINK_SLEEP, (uint32_t)(l->connect_at - now_ms)};
		return (repl_link_step){LINK_CONNECT, 0};
	}
	if (l->look_parked) {
		l->look_parked = false;
		if (parked_due(l, v, now_ms)) {
			l->parked_gen = v->parked_gen;
			l->resolving = true;
			return (repl_link_step){LINK_RESOLVE, 0};
		}
	}
	/* The first PULL of a connection is answered at once, so the server
	 * learns the peer's head (status, the catch-up before a write); while
	 * records are parked the hold is short, so the link comes back to
	 * try them. */
	uint32_t wait = l->first ? 0 : v->parked ? REPL_PARKED_WAIT_MS : REPL_WAIT_MS;
	return (repl_link_step){LINK_PULL, wait};
}

void repl_link_connected(repl_link *l)
{
	l->up = true;
	l->first = true;
	l->look_parked = false;
	/* A peer back from a restart may have what was missing before —
	 * unless it was a try of them that broke the link. */
	if (!l->resolve_broke)
		l->parked_retry_at = l->parked_backoff_ms = 0;
	l->resolve_broke = false;
}

void repl_link_failed(repl_link *l, int64_t now_ms)
{
	if (l->resolving) {
		repl_link_resolved(l, 0, now_ms);
		l->resolve_broke = true;
	}
	/* A link that worked for a while starts its backoff afresh. */
	if (l->pulled)
		l->backoff_ms = REPL_BACKOFF_MIN_MS;
	l->up = l->pulled = l->first = l->look_parked = false;
	l->connect_at = now_ms + l->backoff_ms;
	l->backoff_ms = l->backoff_ms * 2 > REPL_BACKOFF_MAX_MS ? REPL_BACKOFF_MAX_MS : l->backoff_ms * 2;
}

void repl_link_pulled(repl_link *l)
{
	l->first = false;
	l->pulled = true;
	l->look_parked = true;
}

void repl_link_resolved(repl_link *l, unsigned written, int64_t now_ms)
{
	l->resolving = false;
	if (written)
		l->parked_backoff_ms = 0;
	else if (!l->parked_backoff_ms)
		l->parked_backoff_ms = REPL_PARKED_RETRY_MIN_MS;
	else if ((l->parked_backoff_ms *= 2) > REPL_PARKED_RETRY_MAX_MS)
		l->parked_backoff_ms = REPL_PARKED_RETRY_MAX_MS;
	l->parked_retry_at = now_ms + l->parked_backoff_ms;
}

/* ---- one PULL ---- */

int repl_pull_request(store *st, uint64_t peer_short, repl_pull_req *out)
{
	int rc = store_cursor_get(st, peer_short, &out->index_id, &out->after);
	if (!rc)
		rc = store_cursor_acked(st, peer_short, out->index_id, &out->acked);
	if (!rc)
		rc = store_cursor_fp(st, peer_short, &out->fp);
	return rc;
}

int repl_serve_pull(store *st, const repl_pull_req *req, repl_pull_plan *out)
{
	uint64_t index_id = store_index_id(st);
	*out = (repl_pull_plan){.index_id = index_id, .after = repl_pull_after(req->index_id, req->after, index_id)};
	store_stats stats;
	int rc = store_stats_get(st, &stats);
	if (rc)
		return rc;
	out->head = stats.head_seq;
	if (req->index_id != index_id)
		return 0;
	uint64_t ours = 0;
	if (out->after && out->after <= stats.head_seq) {
		record *at = xmalloc(sizeof *at);
		rc = store_version_at(st, out->after, at);
		if (!rc)
			ours = store_rec_fp(at);
		free(at);
		if (rc && rc != SS_ENOENT)
			return rc;
	}
	if (!repl_cursor_valid(out->after, stats.head_seq, ours, req->fp)) {
		/* The puller holds records of ours we no longer have, or not
		 * where we have them: restored from an older copy.  Its cursor
		 * acknowledges nothing we hold now; a new sequence space makes
		 * every peer start over (else what we write from here would
		 * sit at seqs their cursors already passed), and the version
		 * clock moves past any counter the lost part of our log used. */
		if ((rc = store_log_regressed(st, index_id, out->after)))
			return rc;
		out->regressed = true;
		out->index_id = store_index_id(st);
		out->after = 0;
		return 0;
	}
	/* What it has applied of our log: its cursor, less what it holds only
	 * as parked records (no tree yet). */
	out->acks = true;
	out->acked = req->acked < out->after ? req->acked : out->after;
	return 0;
}
