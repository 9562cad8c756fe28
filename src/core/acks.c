/* acks.c — see acks.h. */
#include "acks.h"

#include <stddef.h>

repl_ack *repl_acks_find(repl_acks *t, uint64_t node)
{
	for (unsigned i = 0; i < t->n; i++)
		if (t->v[i].node == node)
			return &t->v[i];
	return NULL;
}

repl_ack *repl_acks_get(repl_acks *t, uint64_t node, bool member)
{
	repl_ack *a = repl_acks_find(t, node);
	if (a)
		return a;
	unsigned i = t->n;
	if (i == REPL_ACKS_MAX) {
		for (i = 0; i < t->n && (t->v[i].live || t->v[i].member); i++)
			;
		if (i == t->n)
			for (i = 0; i < t->n && t->v[i].live; i++)
				;
		if (i == t->n)
			return NULL;
	} else {
		t->n++;
	}
	t->v[i] = (repl_ack){.node = node, .member = member};
	return &t->v[i];
}

bool repl_acks_seen(repl_acks *t, uint64_t node, uint64_t acked, bool member)
{
	repl_ack *a = repl_acks_get(t, node, member);
	if (!a)
		return false;
	a->acked = acked;
	a->member = member;
	return true;
}

unsigned repl_acks_copies(const repl_acks *t, uint64_t seq)
{
	unsigned n = 1;
	for (unsigned i = 0; i < t->n; i++)
		n += t->v[i].acked >= seq && t->v[i].member;
	return n;
}
