/*
 * fuzz_tree.c — libFuzzer harness for tree_node_decode, the parser of
 * manifest tree nodes received from peers.
 *
 * Any input must either be rejected with SS_ECORRUPT or decode to a node
 * whose entries read back in bounds and re-encode to exactly the input
 * bytes (the format has one encoding per node), with tree_node_size equal
 * to the sum of the entries.  Seeds: fuzz/corpus/tree/.
 */
#include <stdint.h>
#include <string.h>

#include "chunk/chunk.h"
#include "util/util.h"

int fuzz_tree(const uint8_t *data, size_t size);

int fuzz_tree(const uint8_t *data, size_t size)
{
	tree_entry e[TREE_MAX_FANOUT];
	uint8_t again[TREE_NODE_MAX];
	tree_node nd;
	uint64_t total = 0;
	unsigned i;
	size_t len;
	int rc;

	rc = tree_node_decode(data, size, &nd);
	if (rc != 0) {
		SS_ASSERT(rc == SS_ECORRUPT);
		return 0;
	}
	SS_ASSERT(nd.level >= 1 && nd.level <= TREE_MAX_LEVEL);
	SS_ASSERT(nd.count <= TREE_MAX_FANOUT);
	for (i = 0; i < nd.count; i++) {
		tree_node_entry(&nd, i, &e[i]);
		SS_ASSERT(e[i].size > 0);
		total += e[i].size;
	}
	SS_ASSERT(tree_node_size(&nd) == total);
	len = tree_node_encode(nd.level, e, nd.count, again);
	SS_ASSERT(len == size);
	SS_ASSERT(memcmp(again, data, size) == 0);
	return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	return fuzz_tree(d, n);
}
#endif
