/*
 * chunk — content-defined chunking (FastCDC), SHA-256, manifest trees.
 *
 * Storage format version 1 (changing any of these changes every chunk id of
 * every file, so they are versioned with the store):
 *
 *   parameter          value
 *   -----------------  -----------------------------------------------
 *   CDC_MIN            8 KiB   (no cut before this many bytes)
 *   CDC_AVG            32 KiB  (normal size; mask switches here)
 *   CDC_MAX            128 KiB (forced cut)
 *   masks              normalized chunking level 2: 17 bits before AVG,
 *                      13 bits after (FastCDC paper, "NC2")
 *   gear table         256 × u64 from SplitMix64 seeded with CDC_GEAR_SEED
 *   chunk id           SHA-256 of the chunk's raw bytes
 *
 * Manifest tree node (a node is stored and exchanged like a chunk; its id is
 * the SHA-256 of these bytes):
 *
 *   offset  size     field
 *   ------  -------  --------------------------------------------------
 *   0       4        magic "SSMN"
 *   4       1        format version (1)
 *   5       1        level: 1 = children are data chunks, L>1 = nodes of L-1
 *   6       2        count of entries, u16 LE, 0..TREE_MAX_FANOUT
 *   8       40×count entries: child id (32 bytes), subtree byte size (u64 LE)
 *
 * Node cut rule: a node is closed after an entry whose child id has its low
 * 5 bits of byte 31 zero (mean fan-out 32), provided it has ≥ TREE_MIN_FANOUT
 * entries, or when it reaches TREE_MAX_FANOUT.  The root is the single node
 * of the top level; an empty file is a level-1 node with no entries.  Because
 * boundaries depend only on child ids, an edit changes one leaf-to-root path.
 */
#ifndef SS_CHUNK_H
#define SS_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#define CDC_FORMAT_VERSION 1
#define CDC_MIN (8 * 1024)
#define CDC_AVG (32 * 1024)
#define CDC_MAX (128 * 1024)
#define CDC_GEAR_SEED 0x73796e6373746f72ULL /* "syncstor" */

#define HASH_LEN 32
#define HASH_HEX_LEN 64

/* SHA-256 through OpenSSL's EVP interface. */
void sha256(const void *p, size_t n, uint8_t out[HASH_LEN]);

/*
 * cdc_cut: length of the next chunk of p[0..n).  The caller passes at least
 * CDC_MAX bytes unless the data ends sooner (then n is all that remains and
 * the result may be n).  Stateless, so streaming equals whole-buffer chunking.
 */
size_t cdc_cut(const uint8_t *p, size_t n);
extern const uint64_t cdc_gear[256];

/*
 * cdc_stream: chunk and hash a file descriptor with bounded memory, cut-point
 * search overlapped with hashing on `threads` threads (0 = number of cores,
 * at most 4).  Calls emit() for each chunk in file order.  If emit returns
 * non-zero, streaming stops and that value is returned.  Reads the whole
 * file with pread from offset 0, so the fd's offset is untouched.
 */
typedef struct cdc_chunk {
	uint64_t off;     /* offset in the file */
	uint32_t len;
	uint8_t id[HASH_LEN];
	const uint8_t *data; /* valid only during emit() */
} cdc_chunk;
typedef int (*cdc_emit_fn)(void *ctx, const cdc_chunk *c);
int cdc_stream(int fd, int threads, cdc_emit_fn emit, void *ctx);
/* cdc_stream reading `block` bytes per pread (1..16 MiB; cdc_stream uses
 * 1 MiB): for tests of odd block boundaries and for benchmarks. */
int cdc_stream_block(int fd, int threads, size_t block, cdc_emit_fn emit, void *ctx);

/* ---- manifest tree ---- */
#define TREE_MAGIC "SSMN"
#define TREE_VERSION 1
#define TREE_MIN_FANOUT 8
#define TREE_MAX_FANOUT 128
#define TREE_MAX_LEVEL 16
#define TREE_HDR 8
#define TREE_ENTRY 40
#define TREE_NODE_MAX (TREE_HDR + TREE_ENTRY * TREE_MAX_FANOUT)

typedef struct tree_entry {
	uint8_t id[HASH_LEN];
	uint64_t size;
} tree_entry;

/* A decoded node.  Entries point into the caller's bytes (zero copy). */
typedef struct tree_node {
	uint8_t level;
	uint16_t count;
	const uint8_t *entries; /* count × TREE_ENTRY bytes */
} tree_node;

/* Bounds-checked decode of untrusted bytes: 0 or SS_ECORRUPT. */
int tree_node_decode(const uint8_t *p, size_t n, tree_node *out);
void tree_node_entry(const tree_node *nd, unsigned i, tree_entry *out);
/* Total bytes under a node. */
uint64_t tree_node_size(const tree_node *nd);
/* Encode count entries at level into out (TREE_NODE_MAX bytes); returns length. */
size_t tree_node_encode(uint8_t level, const tree_entry *e, unsigned count, uint8_t *out);

/*
 * tree_builder — streaming construction.  Feed data chunk entries in file
 * order with tree_add(); each completed node is passed to emit() (level 1
 * nodes as soon as they close, higher levels as they close), children always
 * before parents.  tree_finish() closes every level and returns the root.
 * Memory: one pending node per level.
 */
typedef int (*tree_emit_fn)(void *ctx, uint8_t level, const uint8_t *node, size_t len,
			    const uint8_t id[HASH_LEN], uint64_t size);
typedef struct tree_builder {
	tree_emit_fn emit;
	void *ctx;
	unsigned nlevels;                 /* levels in use */
	unsigned count[TREE_MAX_LEVEL + 1];
	uint64_t emitted[TREE_MAX_LEVEL + 1]; /* nodes closed per level */
	tree_entry pending[TREE_MAX_LEVEL + 1][TREE_MAX_FANOUT];
} tree_builder;

void tree_init(tree_builder *tb, tree_emit_fn emit, void *ctx);
int tree_add(tree_builder *tb, const uint8_t id[HASH_LEN], uint64_t size);
int tree_finish(tree_builder *tb, uint8_t root[HASH_LEN], uint64_t *size);

#endif
