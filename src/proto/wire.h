/*
 * wire — the framed binary protocol between clients and servers.
 *
 * Every message is one frame:
 *
 *   offset  size  field
 *   ------  ----  ---------------------------------------------------------
 *   0       4     length L of what follows (type + payload), u32 LE,
 *                 1 ≤ L ≤ WIRE_MAX_FRAME; anything else closes the connection
 *   4       1     message type (enum wire_type)
 *   5       L-1   payload, fields in order, integers little-endian;
 *                 str = u16 length + bytes (no NUL); id = 32 raw bytes
 *
 * The first frame each way is HELLO; the versions negotiate to the highest
 * both support.  After that the client sends requests and reads replies; see
 * docs/WIRE.md for every message's fields and the put/get exchanges.
 *
 * Decoding is pure: wire_decode() takes bytes and fills a msg or fails with
 * SS_EPROTO on the first short or inconsistent field; trailing bytes are an
 * error too.  Pointers in a decoded msg point into the caller's payload.
 */
#ifndef SS_WIRE_H
#define SS_WIRE_H

#include <stdint.h>

#include "../store/store.h"
#include "../util/util.h"

#define WIRE_MAGIC "SYNCSTOR"
#define WIRE_VERSION 1
#define WIRE_MIN_VERSION 1
#define WIRE_HDR 5
#define WIRE_MAX_FRAME (1u << 20)
#define WIRE_MAX_OFFER 1024 /* ids in one OFFER or WANT */
#define WIRE_BATCH_NODES 64 /* tree nodes a client may send before SYNC */
#define WIRE_TEXT_MAX 512
#define WIRE_SMALL_MAX (64u * 1024) /* bytes of a file sent whole in PUT_SMALL */
/* HELLO flags: what this build understands beyond version 1's first
 * messages, so a newer client can fall back with an older server. */
#define WIRE_FEATURE_SMALL 1u /* PUT_SMALL */
#define WIRE_FEATURES WIRE_FEATURE_SMALL
/* Bytes of a CHUNK payload on the wire: raw ≤ CDC_MAX, zstd at most its bound. */
#define WIRE_CHUNK_MAX (CDC_MAX + CDC_MAX / 128 + 4096)

enum wire_type {
	MSG_HELLO = 1,   /* magic[8], max_version u16, min_version u16, flags u32 */
	MSG_ERROR = 2,   /* code i32, text str */
	MSG_OK = 3,      /* value u64 */
	MSG_END = 4,     /* end of a stream of ENTRY / SERVER frames */

	MSG_PUT = 10,    /* path str, size u64, mode u32, mtime_ns i64, flags u32 */
	MSG_OFFER = 11,  /* count u16, ids[count]: nodes the client has */
	MSG_WANT = 12,   /* count u16, bitmap[(count+7)/8]: bit i set = send item i */
	MSG_NODE = 13,   /* a manifest tree node's bytes */
	MSG_CHUNK = 14,  /* id, flags u8 (1 = zstd), raw_len u32, bytes */
	MSG_SYNC = 15,   /* (empty) — OK once every chunk and node so far is stored */
	MSG_COMMIT = 16, /* root id, size u64, flags u32 — OK(seq) once durable (and acknowledged) */
	MSG_BARRIER = 17, /* seq u64 — OK(copies) once the write quorum holds every commit up to seq */
	MSG_PUT_SMALL = 18, /* path str, size u64, mode u32, mtime_ns i64, flags u32, then the size bytes of
			     * the file (≤ WIRE_SMALL_MAX): a whole put in one frame, no reply awaited —
			     * OK(seq) or ERROR comes later, in order (flags: WIRE_COMMIT_DEFER) */

	MSG_GET = 20,    /* path str, version u64 (0 = current) */
	MSG_META = 21,   /* record (the version being sent); then NODE/CHUNK stream, END */

	MSG_LIST = 30,   /* prefix str — ENTRY…, END */
	MSG_ENTRY = 31,  /* record */
	MSG_STAT = 32,   /* path str — ENTRY */
	MSG_RM = 33,     /* path str, flags u32 (1 = recursive) — OK(count) */
	MSG_MV = 34,     /* from str, to str — OK(seq) */
	MSG_LOG = 35,    /* path str — ENTRY… newest first, END */
	MSG_FORGET = 36, /* node id (hex, ≥ 8 digits) str, flags u32 (1 = passed on by a peer) — OK(servers) */

	MSG_STATUS = 40, /* (empty) — SERVER…, END */
	MSG_SERVER = 41, /* one server's state, see wire_server */

	/* Between servers (both ends hold server certificates). */
	MSG_PULL = 50,    /* index_id u64, after u64, limit u32, wait_ms u32, acked u64, fp u64 — ENTRY…, PULLED */
	MSG_PULLED = 51,  /* index_id u64, head u64, files u64, bytes u64, digest id */
	MSG_READ = 52,    /* count u16, ids[count] — per id in order: CHUNK or MISSING */
	MSG_MISSING = 53, /* id: not stored here (or failed verification) */
	MSG_JOIN = 54,    /* listen addr str, cluster_size u16 — OK, or ERROR if the peer lists disagree */

	/* Swarm mode (docs/SWARM.md): clients and servers to a tracker. */
	MSG_ANNOUNCE = 60,  /* root id, size u64, name str, addr str, flags u32 — OK(seeder's records here) */
	MSG_HEARTBEAT = 61, /* addr str, shares u64 — OK(seeder's records here) */
	MSG_SEEDERS = 62,   /* root id — SEEDER…, END */
	MSG_SEEDER = 63,    /* node id, addr str, size u64, name str */
};

#define WIRE_PULL_MAX 1024 /* records in one PULL reply */

#define WIRE_RM_RECURSIVE 1u
#define WIRE_COMMIT_DEFER 1u /* answer at local durability; a BARRIER waits for the quorum */
#define WIRE_FORGET_RELAYED 1u
#define WIRE_SERVER_FORGOTTEN 1u /* wire_server.flags: forgotten member */
#define WIRE_SERVER_BLOCKS 2u    /* it blocks tombstone expiry (it has not applied them) */
#define WIRE_CHUNK_ZSTD 1u
#define WIRE_ANNOUNCE_WITHDRAW 1u     /* stop seeding this root */
#define WIRE_ANNOUNCE_WITHDRAW_ALL 2u /* stop seeding everything (close) */
#define WIRE_NAME_MAX 256             /* a shared file's name, NUL included */
#define WIRE_ADDR_MAX 128

typedef struct wire_server {
	uint8_t id[HASH_LEN];
	char addr[128];
	uint8_t self, connected;
	uint64_t head_seq, pending_records, pending_bytes, files, bytes, chunks, chunk_bytes;
	uint8_t digest[HASH_LEN];
	uint16_t durable_of; /* cluster size */
	uint64_t tombstones; /* self: tombstones kept, waiting to expire */
	uint8_t flags;       /* WIRE_SERVER_* */
} wire_server;

typedef struct msg {
	uint8_t type;
	union {
		struct { uint16_t max_version, min_version; uint32_t flags; } hello;
		struct { int32_t code; char text[WIRE_TEXT_MAX]; } error;
		struct { uint64_t value; } ok;
		struct { char path[SS_PATH_MAX + 1]; uint64_t size; uint32_t mode; int64_t mtime_ns; uint32_t flags; } put;
		struct { uint16_t count; const uint8_t *ids; } offer;
		struct { uint16_t count; const uint8_t *bits; } want;
		struct { const uint8_t *bytes; uint32_t len; } node;
		struct { uint8_t id[HASH_LEN]; uint8_t flags; uint32_t raw_len; const uint8_t *data; uint32_t len; } chunk;
		struct { uint8_t root[HASH_LEN]; uint64_t size; uint32_t flags; } commit;
		struct {
			char path[SS_PATH_MAX + 1];
			uint64_t size;
			uint32_t mode;
			int64_t mtime_ns;
			uint32_t flags;
			const uint8_t *data; /* size bytes */
		} small;
		struct { uint64_t seq; } barrier;
		struct { char path[SS_PATH_MAX + 1]; uint64_t version; } get;
		struct { char path[SS_PATH_MAX + 1]; } path; /* LIST prefix, STAT, LOG */
		struct { char path[SS_PATH_MAX + 1]; uint32_t flags; } rm;
		struct { char from[SS_PATH_MAX + 1], to[SS_PATH_MAX + 1]; } mv;
		struct { char node[HASH_HEX_LEN + 1]; uint32_t flags; } forget;
		record rec; /* META, ENTRY */
		wire_server server;
		/* acked ≤ after: applied here, not merely received (pending
		 * records); fp: store_rec_fp of the record at `after` as received */
		struct { uint64_t index_id, after, acked, fp; uint32_t limit, wait_ms; } pull;
		struct { uint64_t index_id, head, files, bytes; uint8_t digest[HASH_LEN]; } pulled;
		struct { uint8_t id[HASH_LEN]; } missing;
		struct { char addr[128]; uint16_t cluster_size; } join;
		struct {
			uint8_t root[HASH_LEN];
			uint64_t size;
			char name[WIRE_NAME_MAX], addr[WIRE_ADDR_MAX];
			uint32_t flags;
		} announce;
		struct { char addr[WIRE_ADDR_MAX]; uint64_t shares; } heartbeat;
		struct { uint8_t root[HASH_LEN]; } seeders;
		struct { uint8_t id[HASH_LEN]; char addr[WIRE_ADDR_MAX]; uint64_t size; char name[WIRE_NAME_MAX]; } seeder;
	};
} msg;

/* Validate a frame header: fills the payload length (L-1) and type. */
int wire_header(const uint8_t hdr[WIRE_HDR], uint32_t *payload_len, uint8_t *type);
/* Decode a payload of the given type.  0 or SS_EPROTO (message says why). */
int wire_decode(uint8_t type, const uint8_t *p, size_t n, msg *m);

/* Encoders append one whole frame to b. */
int wire_hello(buf *b);
int wire_error(buf *b, int code, const char *text);
int wire_ok(buf *b, uint64_t value);
int wire_empty(buf *b, uint8_t type); /* END, SYNC, STATUS */
int wire_put(buf *b, const char *path, uint64_t size, uint32_t mode, int64_t mtime_ns, uint32_t flags);
int wire_put_small(buf *b, const char *path, uint32_t mode, int64_t mtime_ns, uint32_t flags, const void *data,
		   size_t size);
int wire_ids(buf *b, uint8_t type, const uint8_t *ids, uint16_t count); /* OFFER, READ */
int wire_want(buf *b, const uint8_t *bits, uint16_t count);
int wire_node(buf *b, const uint8_t *node, size_t len);
int wire_chunk(buf *b, const uint8_t id[HASH_LEN], uint8_t flags, uint32_t raw_len, const void *data, size_t len);
int wire_commit(buf *b, const uint8_t root[HASH_LEN], uint64_t size, uint32_t flags);
int wire_barrier(buf *b, uint64_t seq);
int wire_get(buf *b, const char *path, uint64_t version);
int wire_path(buf *b, uint8_t type, const char *path); /* LIST, STAT, LOG */
int wire_rm(buf *b, const char *path, uint32_t flags);
int wire_mv(buf *b, const char *from, const char *to);
int wire_forget(buf *b, const char *node_hex, uint32_t flags);
int wire_record(buf *b, uint8_t type, const record *r); /* META, ENTRY */
int wire_server_info(buf *b, const wire_server *s);
int wire_pull(buf *b, uint64_t index_id, uint64_t after, uint64_t acked, uint64_t fp, uint32_t limit,
	      uint32_t wait_ms);
int wire_pulled(buf *b, uint64_t index_id, uint64_t head, uint64_t files, uint64_t bytes,
		const uint8_t digest[HASH_LEN]);
int wire_missing(buf *b, const uint8_t id[HASH_LEN]);
int wire_join(buf *b, const char *addr, uint16_t cluster_size);
int wire_announce(buf *b, const uint8_t root[HASH_LEN], uint64_t size, const char *name, const char *addr,
		  uint32_t flags);
int wire_heartbeat(buf *b, const char *addr, uint64_t shares);
int wire_seeders(buf *b, const uint8_t root[HASH_LEN]);
int wire_seeder(buf *b, const uint8_t id[HASH_LEN], const char *addr, uint64_t size, const char *name);

/*
 * CHUNK frames built in place: wire_chunk_open reserves a frame for raw_len
 * bytes and hands out where they go (read them straight there: no copy);
 * wire_chunk_close seals it, zstd-compressing the bytes (level 1) when that
 * saves at least 1/8.  The gate keeps incompressible data cheap: after a
 * chunk that did not pay, the next 2^k chunks are not tried (k grows to 6,
 * and resets on a chunk that pays), so random data costs ~1/64 of the tries.
 */
struct ZSTD_DCtx_s;
typedef struct wire_zstd {
	struct ZSTD_CCtx_s *cctx;
	buf scratch;
	unsigned skip, backoff;
} wire_zstd;
void wire_zstd_init(wire_zstd *z);
void wire_zstd_free(wire_zstd *z);
int wire_chunk_open(buf *b, const uint8_t id[HASH_LEN], uint32_t raw_len, uint8_t **payload, size_t *start);
int wire_chunk_close(buf *b, size_t start, wire_zstd *z);

/* The raw bytes of a received CHUNK (m): its payload, or the payload
 * decompressed into scratch (CDC_MAX bytes) with dctx.  SS_ECORRUPT if it
 * does not decompress to its stated length.  The hash is the caller's to
 * check. */
int wire_chunk_raw(const msg *m, struct ZSTD_DCtx_s *dctx, uint8_t *scratch, const uint8_t **p, size_t *n);

/* Negotiate: the version both speak, or SS_EPROTO. */
int wire_negotiate(const msg *hello, uint16_t *version);

#endif
