/* repl.c — see repl.h. */
#include "repl.h"
#include "resolve.h"

#include <stdio.h>
#include <string.h>

int repl_decide(void *ctx, const record *local, const record *remote, record out[2], unsigned *n)
{
	repl_counts none = {0}, *c = ctx ? ctx : &none;
	*n = 0;
	if (!local) {
		out[(*n)++] = *remote;
		c->taken++;
		return 0;
	}
	resolution res;
	int rc = resolve(local, remote, &res);
	if (rc)
		return rc;
	switch (res.kind) {
	case RESOLVE_KEEP:
		c->kept++;
		return 0;
	case RESOLVE_TAKE:
		out[(*n)++] = *remote;
		c->taken++;
		return 0;
	case RESOLVE_MERGE:
		/* Same content; keep the higher origin's record so every server
		 * writes the very same version (its origin names future
		 * conflict copies). */
		out[*n] = remote->origin > local->origin ? *remote : *local;
		out[(*n)++].vv = res.merged;
		c->merged++;
		return 0;
	case RESOLVE_CONFLICT:
		/* The copy first: it gets the lower sequence, so a peer whose
		 * pull stops between the two (and whose cursor then acknowledges
		 * the winner) already holds the loser's content. */
		if (res.loser) {
			out[*n] = *res.loser;
			if ((rc = conflict_path(res.loser, out[*n].path, sizeof out[*n].path)))
				return rc;
			(*n)++;
		}
		out[*n] = *res.winner;
		out[(*n)++].vv = res.merged;
		c->conflicts++;
		return 0;
	}
	return ss_fail(SS_EINVAL, "unknown resolution %d", (int)res.kind);
}

int repl_record_check(const record *r)
{
	int rc = path_check(r->path, strlen(r->path));
	if (rc)
		return rc;
	if (r->vv.n == 0 || r->vv.n > VV_MAX)
		return ss_fail(SS_EPROTO, "record for %s has %u version vector entries", r->path, r->vv.n);
	for (unsigned i = 0; i < r->vv.n; i++) {
		if (!r->vv.e[i].counter || !r->vv.e[i].node)
			return ss_fail(SS_EPROTO, "record for %s has a zero in its version vector", r->path);
		if (i && r->vv.e[i - 1].node >= r->vv.e[i].node)
			return ss_fail(SS_EPROTO, "record for %s has an unsorted version vector", r->path);
	}
	if (r->mode & ~07777u)
		return ss_fail(SS_EPROTO, "record for %s has mode %o", r->path, r->mode);
	if (r->deleted) {
		for (unsigned i = 0; i < HASH_LEN; i++)
			if (r->root[i])
				return ss_fail(SS_EPROTO, "tombstone for %s names content", r->path);
	}
	return 0;
}

uint64_t repl_pull_after(uint64_t cursor_index, uint64_t cursor_seq, uint64_t peer_index)
{
#if SIM_BUG == 4
	/* PLANTED BUG 4 (tests/sim only): ignore the index id — a peer with
	 * a new data directory is asked for what follows the old cursor. */
	(void)cursor_index, (void)peer_index;
	return cursor_seq;
#endif
	return cursor_index == peer_index ? cursor_seq : 0;
}

bool repl_cursor_valid(uint64_t after, uint64_t head, uint64_t ours, uint64_t theirs)
{
	if (after > head)
		return false;
	return !after || !ours || !theirs || ours == theirs;
}

bool repl_tombstone_expirable(const record *t, int64_t now_ns, int64_t retention_ns, const uint64_t *acked,
			      unsigned nmembers)
{
	if (!t->deleted || now_ns - t->otime_ns < retention_ns)
		return false;
#if SIM_BUG == 3
	/* PLANTED BUG 3 (tests/sim only): expire ignoring members that are
	 * down or behind. */
	return true;
#endif
	for (unsigned i = 0; i < nmembers; i++)
		if (acked[i] < t->seq)
			return false;
	return true;
}

bool repl_expirable(void *ctx, const record *t)
{
	const repl_expiry *e = ctx;
	return repl_tombstone_expirable(t, e->now_ns, e->retention_ns, e->acked, e->nmembers);
}
