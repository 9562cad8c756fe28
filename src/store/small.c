/*
 * small.c — contents of at most one chunk, stored and read whole: the
 * tracker's registry entries (docs/SWARM.md) and the simulator's files.
 */
#include "store.h"

int store_put_small(store *st, const void *data, size_t len, uint8_t root[HASH_LEN])
{
	uint8_t node[TREE_NODE_MAX];
	if (!len || len > CDC_MAX)
		return ss_fail(SS_EINVAL, "small content of %zu bytes (1..%u)", len, CDC_MAX);
	tree_entry e = {.size = len};
	sha256(data, len, e.id);
	int rc = store_put_chunk(st, e.id, data, len);
	if (rc)
		return rc;
	size_t nlen = tree_node_encode(1, &e, 1, node);
	sha256(node, nlen, root);
	return store_put_node(st, root, node, nlen);
}

int store_get_small(store *st, const uint8_t root[HASH_LEN], buf *out)
{
	tree_node nd;
	tree_entry e;
	int rc = store_get_chunk(st, root, out);
	if (rc)
		return rc;
	if ((rc = tree_node_decode(out->p, out->len, &nd)))
		return rc;
	if (nd.level != 1 || nd.count != 1)
		return ss_fail(SS_EINVAL, "content of %llu bytes is not small (level %u, %u entries)",
			       (unsigned long long)tree_node_size(&nd), nd.level, nd.count);
	tree_node_entry(&nd, 0, &e);
	return store_get_chunk(st, e.id, out);
}
