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
		out[*n] = *local;
		out[(*n)++].vv = res.merged;
		c->merged++;
		return 0;
	case RESOLVE_CONFLICT:
		out[*n] = *res.winner;
		out[(*n)++].vv = res.merged;
		if (res.loser) {
			out[*n] = *res.loser;
			if ((rc = conflict_path(res.loser, out[*n].path, sizeof out[*n].path)))
				return rc;
			(*n)++;
		}
		c->conflicts++;
		return 0;
	}
	return ss_fail(SS_EINVAL, "unknown resolution %d", (int)res.kind);
}

uint64_t repl_pull_after(uint64_t cursor_index, uint64_t cursor_seq, uint64_t peer_index)
{
	return cursor_index == peer_index ? cursor_seq : 0;
}
