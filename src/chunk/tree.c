/*
 * tree.c — manifest trees: node encoding, bounds-checked decoding, and the
 * streaming builder that cuts a file's chunk list into a content-defined
 * Merkle tree (a "prolly tree").
 *
 * Node format (chunk.h has the authoritative table):
 *
 *   offset  size      field
 *   ------  --------  ------------------------------------------------------
 *   0       4         magic "SSMN"
 *   4       1         version, TREE_VERSION
 *   5       1         level, 1..TREE_MAX_LEVEL (1: children are data chunks)
 *   6       2         count, u16 LE, 0..TREE_MAX_FANOUT
 *   8       40×count  child id (32 bytes) + subtree byte size (u64 LE)
 *
 * Decoding takes untrusted bytes and accepts only what the builder can
 * produce the same way: exact length, every entry size ≥ 1, a data chunk
 * (level-1 entry) at most CDC_MAX bytes, a node above level 1 never empty,
 * and a total size that fits in 64 bits.  So a decoded node's sizes can be
 * used to bound allocations without further checks.
 *
 * Shape: within each level, a node closes after an entry whose id has the
 * low 5 bits of byte 31 zero once it holds TREE_MIN_FANOUT entries, or when
 * it holds TREE_MAX_FANOUT.  Each closed node becomes one entry of the level
 * above.  Boundaries therefore depend only on the sequence of entries at
 * that level, and an edit that changes one chunk changes one node per level:
 * one leaf-to-root path (plus, near the edit, the nodes whose boundary moved
 * when a boundary id appeared or disappeared).
 *
 * Finish: every level is closed bottom-up until a level holds exactly one
 * node; that node is the root.  If the last closed node of a level is the
 * only node of that level, it is the root itself (no one-entry parent is
 * made for it), so the root of a sequence is unique and the same whether or
 * not its last node happened to close on a boundary.  Special cases: no
 * entries → an empty level-1 node; a single chunk → a level-1 node with one
 * entry.
 *
 * Costs: one SHA-256 of at most 5 KiB per closed node (~1 per 32 chunks);
 * memory is the builder itself, one pending node per level (~90 KB).  A
 * builder serves one sequence: tree_init it again before the next.
 * Limits: TREE_MAX_LEVEL levels, far beyond any real file (8^15 chunks).
 */
#include "chunk.h"
#include "../util/util.h"

#include <string.h>

/* Mean fan-out 32: cut after an id whose byte 31 has its low 5 bits zero. */
#define TREE_CUT_MASK 0x1f

int tree_node_decode(const uint8_t *p, size_t n, tree_node *out)
{
	uint64_t total = 0;
	unsigned level, count, i;

	if (n < TREE_HDR)
		return ss_fail(SS_ECORRUPT, "tree node truncated: %zu bytes, header needs %d",
			       n, TREE_HDR);
	if (memcmp(p, TREE_MAGIC, 4) != 0)
		return ss_fail(SS_ECORRUPT, "tree node has bad magic");
	if (p[4] != TREE_VERSION)
		return ss_fail(SS_ECORRUPT, "tree node has unsupported version %u", p[4]);
	level = p[5];
	if (level < 1 || level > TREE_MAX_LEVEL)
		return ss_fail(SS_ECORRUPT, "tree node has bad level %u", level);
	count = rd16(p + 6);
	if (count > TREE_MAX_FANOUT)
		return ss_fail(SS_ECORRUPT, "tree node has %u entries, at most %d allowed",
			       count, TREE_MAX_FANOUT);
	if (n != (size_t)TREE_HDR + (size_t)TREE_ENTRY * count)
		return ss_fail(SS_ECORRUPT, "tree node length %zu does not match %u entries",
			       n, count);
	if (count == 0 && level > 1)
		return ss_fail(SS_ECORRUPT, "empty tree node at level %u", level);
	for (i = 0; i < count; i++) {
		uint64_t size = rd64(p + TREE_HDR + (size_t)TREE_ENTRY * i + HASH_LEN);
		if (size == 0)
			return ss_fail(SS_ECORRUPT, "tree node entry %u has size 0", i);
		if (level == 1 && size > CDC_MAX)
			return ss_fail(SS_ECORRUPT,
				       "tree node entry %u: chunk of %llu bytes exceeds %d",
				       i, (unsigned long long)size, CDC_MAX);
		if (size > UINT64_MAX - total)
			return ss_fail(SS_ECORRUPT, "tree node total size overflows");
		total += size;
	}
	out->level = (uint8_t)level;
	out->count = (uint16_t)count;
	out->entries = p + TREE_HDR;
	return 0;
}

void tree_node_entry(const tree_node *nd, unsigned i, tree_entry *out)
{
	const uint8_t *e;

	SS_ASSERT(i < nd->count);
	e = nd->entries + (size_t)TREE_ENTRY * i;
	memcpy(out->id, e, HASH_LEN);
	out->size = rd64(e + HASH_LEN);
}

uint64_t tree_node_size(const tree_node *nd)
{
	uint64_t total = 0;
	unsigned i;

	/* Decode has checked that this sum does not overflow. */
	for (i = 0; i < nd->count; i++)
		total += rd64(nd->entries + (size_t)TREE_ENTRY * i + HASH_LEN);
	return total;
}

size_t tree_node_encode(uint8_t level, const tree_entry *e, unsigned count, uint8_t *out)
{
	unsigned i;

	SS_ASSERT(level >= 1 && level <= TREE_MAX_LEVEL);
	SS_ASSERT(count <= TREE_MAX_FANOUT);
	memcpy(out, TREE_MAGIC, 4);
	out[4] = TREE_VERSION;
	out[5] = level;
	le16(out + 6, (uint16_t)count);
	for (i = 0; i < count; i++) {
		uint8_t *q = out + TREE_HDR + (size_t)TREE_ENTRY * i;
		memcpy(q, e[i].id, HASH_LEN);
		le64(q + HASH_LEN, e[i].size);
	}
	return TREE_HDR + (size_t)TREE_ENTRY * count;
}

void tree_init(tree_builder *tb, tree_emit_fn emit, void *ctx)
{
	memset(tb->count, 0, sizeof tb->count);
	memset(tb->emitted, 0, sizeof tb->emitted);
	tb->emit = emit;
	tb->ctx = ctx;
	tb->nlevels = 0;
}

/*
 * Encode, hash and emit the pending node of a level, and empty it.
 * The node's id and total size are returned in *out.
 */
static int tree_close(tree_builder *tb, unsigned level, tree_entry *out)
{
	uint8_t node[TREE_NODE_MAX];
	uint64_t size = 0;
	unsigned i, count = tb->count[level];
	size_t len;
	int rc;

	for (i = 0; i < count; i++)
		size += tb->pending[level][i].size;
	len = tree_node_encode((uint8_t)level, tb->pending[level], count, node);
	sha256(node, len, out->id);
	out->size = size;
	tb->count[level] = 0;
	tb->emitted[level]++;
	if (tb->emit && (rc = tb->emit(tb->ctx, (uint8_t)level, node, len, out->id, size)) != 0)
		return rc;
	return 0;
}

/* Append an entry to a level, closing the node (and cascading) on a cut. */
static int tree_push(tree_builder *tb, unsigned level, const tree_entry *e)
{
	tree_entry up;
	unsigned count;
	int rc;

	for (;;) {
		if (level > TREE_MAX_LEVEL)
			return ss_fail(SS_ETOOBIG, "manifest tree deeper than %d levels",
				       TREE_MAX_LEVEL);
		if (level > tb->nlevels)
			tb->nlevels = level;
		count = tb->count[level];
		tb->pending[level][count] = *e;
		tb->count[level] = ++count;
		if (count < TREE_MAX_FANOUT &&
		    (count < TREE_MIN_FANOUT || (e->id[HASH_LEN - 1] & TREE_CUT_MASK) != 0))
			return 0;
		if ((rc = tree_close(tb, level, &up)) != 0)
			return rc;
		e = &up;
		level++;
	}
}

int tree_add(tree_builder *tb, const uint8_t id[HASH_LEN], uint64_t size)
{
	tree_entry e;

	memcpy(e.id, id, HASH_LEN);
	e.size = size;
	return tree_push(tb, 1, &e);
}

int tree_finish(tree_builder *tb, uint8_t root[HASH_LEN], uint64_t *size)
{
	tree_entry top;
	unsigned level;
	int rc;

	if (tb->nlevels == 0) {
		/* No entries: the empty file's root is an empty level-1 node. */
		tb->nlevels = 1;
		if ((rc = tree_close(tb, 1, &top)) != 0)
			return rc;
		goto done;
	}
	for (level = 1;; level++) {
		SS_ASSERT(level <= tb->nlevels);
		if (tb->emitted[level] == 0) {
			/*
			 * No node of this level has closed, so the pending one
			 * is its only node and this is the top level.  If it
			 * holds a single entry (above level 1), that entry is
			 * the only node of the level below, and the root.
			 */
			SS_ASSERT(tb->count[level] > 0);
			if (level > 1 && tb->count[level] == 1) {
				top = tb->pending[level][0];
				tb->count[level] = 0;
				goto done;
			}
			if ((rc = tree_close(tb, level, &top)) != 0)
				return rc;
			goto done;
		}
		/* Other nodes of this level exist: close the last one and
		 * carry it up, unless it closed by itself on a boundary. */
		if (tb->count[level] > 0) {
			if ((rc = tree_close(tb, level, &top)) != 0)
				return rc;
			if ((rc = tree_push(tb, level + 1, &top)) != 0)
				return rc;
		}
	}
done:
	memcpy(root, top.id, HASH_LEN);
	*size = top.size;
	return 0;
}
