/*
 * resolve.c — version vector order and the deterministic conflict rules of
 * resolve.h.  Everything here is a pure function of its arguments.
 */
#include "resolve.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t vv_get(const vvec *v, uint64_t node)
{
	for (unsigned i = 0; i < v->n; i++)
		if (v->e[i].node == node)
			return v->e[i].counter;
	return 0;
}

vv_order vv_compare(const vvec *a, const vvec *b)
{
	bool a_more = false, b_more = false;
	/* Every node of either vector; absent counters are 0. */
	for (unsigned i = 0; i < a->n; i++) {
		uint64_t x = a->e[i].counter, y = vv_get(b, a->e[i].node);
		a_more |= x > y;
		b_more |= y > x;
	}
	for (unsigned i = 0; i < b->n; i++)
		if (b->e[i].counter > vv_get(a, b->e[i].node))
			b_more = true;
	if (a_more && b_more)
		return VV_CONCURRENT;
	return a_more ? VV_AFTER : b_more ? VV_BEFORE : VV_EQUAL;
}

int vv_merge(const vvec *a, const vvec *b, vvec *out)
{
	vvec m = *a;
	for (unsigned i = 0; i < b->n; i++) {
		unsigned k = 0;
		while (k < m.n && m.e[k].node != b->e[i].node)
			k++;
		if (k < m.n) {
			m.e[k].counter = MAX(m.e[k].counter, b->e[i].counter);
			continue;
		}
		if (m.n == VV_MAX)
			return ss_fail(SS_ETOOBIG, "version vector with more than %d nodes", VV_MAX);
		m.e[m.n++] = b->e[i];
	}
	/* Sorted by node, so equal vectors encode to equal bytes. */
	for (unsigned i = 1; i < m.n; i++)
		for (unsigned j = i; j > 0 && m.e[j - 1].node > m.e[j].node; j--) {
			vv_entry t = m.e[j];
			m.e[j] = m.e[j - 1];
			m.e[j - 1] = t;
		}
	*out = m;
	return 0;
}

static bool same_content(const record *a, const record *b)
{
	if (a->deleted || b->deleted)
		return a->deleted == b->deleted;
	return !memcmp(a->root, b->root, HASH_LEN) && a->size == b->size && a->mode == b->mode &&
	       a->mtime_ns == b->mtime_ns;
}

/* The newer by (mtime, origin node): a total order, the same everywhere. */
static bool newer(const record *a, const record *b)
{
	if (a->mtime_ns != b->mtime_ns)
		return a->mtime_ns > b->mtime_ns;
	return a->origin > b->origin;
}

int resolve(const record *local, const record *remote, resolution *out)
{
	memset(out, 0, sizeof *out);
	vv_order o = vv_compare(&local->vv, &remote->vv);
	if (o == VV_AFTER || (o == VV_EQUAL && same_content(local, remote))) {
		out->kind = RESOLVE_KEEP;
		out->winner = local;
		return 0;
	}
	if (o == VV_BEFORE) {
		out->kind = RESOLVE_TAKE;
		out->winner = remote;
		return 0;
	}
	int rc = vv_merge(&local->vv, &remote->vv, &out->merged);
	if (rc)
		return rc;
	if (same_content(local, remote)) {
		out->kind = RESOLVE_MERGE;
		out->winner = local;
		return 0;
	}
	/* An update beats a concurrent delete, and leaves no conflict copy:
	 * the delete's intent (the old content is gone) is already met. */
	if (local->deleted != remote->deleted) {
		out->kind = RESOLVE_CONFLICT;
		out->winner = local->deleted ? remote : local;
		out->loser = NULL;
		return 0;
	}
	out->kind = RESOLVE_CONFLICT;
	out->winner = newer(remote, local) ? remote : local;
	out->loser = out->winner == remote ? local : remote;
	return 0;
}

int conflict_path(const record *loser, char *out, size_t outsz)
{
	const char *path = loser->path;
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	const char *dot = strrchr(base, '.');
	if (dot == base)
		dot = NULL; /* ".profile" has no extension */
	size_t stem = dot ? (size_t)(dot - path) : strlen(path);

	int64_t sec = loser->mtime_ns / 1000000000;
	if (loser->mtime_ns % 1000000000 < 0)
		sec--;
	time_t t = (time_t)sec;
	struct tm tm;
	char when[32];
	if (!gmtime_r(&t, &tm) || !strftime(when, sizeof when, "%Y%m%d-%H%M%S", &tm))
		snprintf(when, sizeof when, "%lld", (long long)sec);

	char tail[SS_NAME_MAX + 1];
	int tn = snprintf(tail, sizeof tail, ".sync-conflict-%s-%016llx%s", when, (unsigned long long)loser->origin,
			  dot && strlen(dot) <= SS_NAME_MAX / 2 ? dot : "");
	/* Too long a name would make the copy impossible, and every server
	 * would refuse the same record for ever: cut the stem instead (the
	 * same way everywhere), at a UTF-8 character boundary. */
	size_t dir = (size_t)(base - path), room_name = SS_NAME_MAX - (size_t)tn;
	size_t room_path = SS_PATH_MAX > dir + (size_t)tn ? SS_PATH_MAX - dir - (size_t)tn : 0;
	size_t keep = stem - dir;
	if (keep > room_name)
		keep = room_name;
	if (keep > room_path)
		keep = room_path;
	while (keep > 0 && keep < stem - dir && ((unsigned char)base[keep] & 0xC0) == 0x80)
		keep--;
	int n = snprintf(out, outsz, "%.*s%.*s%s", (int)dir, path, (int)keep, base, tail);
	if (n < 0 || (size_t)n >= outsz)
		return ss_fail(SS_ETOOBIG, "conflict copy name for %s is too long", path);
	return path_check(out, (size_t)n);
}
