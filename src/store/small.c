/*
 * small.c — contents held whole in memory, stored and read whole: files of
 * a PUT_SMALL, the tracker's registry entries, the simulator's files.  The
 * chunks and tree are exactly those of a streamed upload of the same bytes
 * (FastCDC cut points, the same tree builder), so the root is the same.
 */
#include "store.h"

#include <stdlib.h>

static int put_node(void *ctx, uint8_t level, const uint8_t *node, size_t len, const uint8_t id[HASH_LEN],
		    uint64_t size)
{
	return store_put_node(ctx, id, node, len);
}

int store_put_small(store *st, const void *data, size_t len, uint8_t root[HASH_LEN])
{
	const uint8_t *p = data;
	tree_builder *tb = xmalloc(sizeof *tb);
	tree_init(tb, put_node, st);
	int rc = 0;
	for (size_t off = 0; off < len && !rc;) {
		size_t n = cdc_cut(p + off, len - off);
		uint8_t id[HASH_LEN];
		sha256(p + off, n, id);
		if (!(rc = store_put_chunk(st, id, p + off, n)))
			rc = tree_add(tb, id, n);
		off += n;
	}
	uint64_t size;
	if (!rc)
		rc = tree_finish(tb, root, &size);
	free(tb);
	return rc;
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
	if (nd.level != 1 || nd.count > 1)
		return ss_fail(SS_EINVAL, "content of %llu bytes is not one chunk",
			       (unsigned long long)tree_node_size(&nd));
	if (!nd.count) {
		buf_reset(out);
		return 0;
	}
	tree_node_entry(&nd, 0, &e);
	return store_get_chunk(st, e.id, out);
}
