/*
 * idset.c — a set of 32-byte ids (SHA-256 outputs): open addressing with
 * linear probing, keyed by the id's first bytes, which are uniform already.
 * The all-zero id marks empty slots (a SHA-256 output is never all zero in
 * practice).  Grows to keep at most half full.
 */
#include "util.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t zero_id[IDSET_KEY];

static size_t slot_of(const idset *set, const uint8_t id[IDSET_KEY])
{
	size_t i = (size_t)rd64(id) & (set->cap - 1);
	while (memcmp(set->v[i], zero_id, IDSET_KEY) && memcmp(set->v[i], id, IDSET_KEY))
		i = (i + 1) & (set->cap - 1);
	return i;
}

bool idset_has(const idset *set, const uint8_t id[IDSET_KEY])
{
	return set->cap && memcmp(set->v[slot_of(set, id)], zero_id, IDSET_KEY);
}

bool idset_add(idset *set, const uint8_t id[IDSET_KEY])
{
	if ((set->n + 1) * 2 > set->cap) {
		idset old = *set;
		set->cap = old.cap ? old.cap * 2 : 256;
		set->v = xcalloc(set->cap, IDSET_KEY);
		set->n = 0;
		for (size_t i = 0; i < old.cap; i++)
			if (memcmp(old.v[i], zero_id, IDSET_KEY))
				idset_add(set, old.v[i]);
		free(old.v);
	}
	size_t i = slot_of(set, id);
	if (memcmp(set->v[i], zero_id, IDSET_KEY))
		return true;
	memcpy(set->v[i], id, IDSET_KEY);
	set->n++;
	return false;
}

void idset_clear(idset *set)
{
	if (set->cap)
		memset(set->v, 0, set->cap * IDSET_KEY);
	set->n = 0;
}

void idset_free(idset *set)
{
	free(set->v);
	memset(set, 0, sizeof *set);
}
