/*
 * resolve — how two versions of one path relate, and which one wins.
 *
 * Pure functions of the records (no I/O, no clock, no randomness), so every
 * server that holds the same two records reaches the same answer: that is
 * what makes conflicts derived rather than negotiated (DESIGN.md section 2).
 *
 * Rules:
 *   - version vectors decide causality: if one dominates, it is newer;
 *   - identical content (same deleted flag and root) under concurrent or
 *     equal vectors merges: the pointwise max of the vectors, no new counter;
 *   - an update beats a concurrent delete;
 *   - otherwise (concurrent, or equal vectors with different content) it is a
 *     conflict: the winner is the newer (mtime, origin node), the loser is
 *     kept as `name.sync-conflict-<loser mtime>-<loser node>.ext`.
 */
#ifndef SS_RESOLVE_H
#define SS_RESOLVE_H

#include "../store/store.h"

typedef enum { VV_EQUAL, VV_BEFORE, VV_AFTER, VV_CONCURRENT } vv_order;

/* How a relates to b: VV_BEFORE means a happened before b. */
vv_order vv_compare(const vvec *a, const vvec *b);
/* Pointwise max into out (sorted by node).  SS_ETOOBIG past VV_MAX nodes. */
int vv_merge(const vvec *a, const vvec *b, vvec *out);
/* Counter of node in v (0 if absent). */
uint64_t vv_get(const vvec *v, uint64_t node);

typedef enum {
	RESOLVE_KEEP,     /* the local record stands; the remote one is old news */
	RESOLVE_TAKE,     /* the remote record replaces the local one */
	RESOLVE_MERGE,    /* same content: keep it, with the merged vector */
	RESOLVE_CONFLICT, /* concurrent different content: winner + conflict copy */
} resolve_kind;

typedef struct resolution {
	resolve_kind kind;
	const record *winner; /* KEEP: local; TAKE: remote; CONFLICT: the newer */
	const record *loser;  /* CONFLICT only: kept under conflict_path */
	vvec merged;          /* MERGE and CONFLICT: pointwise max of both */
} resolution;

/* Decide between the current local record of a path and one received. */
int resolve(const record *local, const record *remote, resolution *out);

/*
 * The conflict copy's name: "dir/name.sync-conflict-YYYYMMDD-HHMMSS-NODE.ext"
 * from the loser's mtime (UTC) and origin node (16 hex digits).  The
 * extension is the part after the last '.' of the last component, unless
 * that dot starts the name.  SS_ETOOBIG if the result is not a valid path.
 */
int conflict_path(const record *loser, char *out, size_t outsz);

#endif
