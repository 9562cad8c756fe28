/*
 * wire.c — encoders and the bounds-checked decoder for wire.h's frames.
 *
 * The reader is BoringSSL's CBS in miniature: a pointer and a remaining
 * length; every read checks first and the whole decode fails on the first
 * short field.  Nothing here touches a socket, so the decoder is fuzzed
 * directly (fuzz/fuzz_wire.c).
 */
#include "wire.h"

#include <stdio.h>
#include <string.h>
#include <zstd.h>

typedef struct rd {
	const uint8_t *p;
	size_t n;
	int bad;
} rd;

static const uint8_t *take(rd *r, size_t n)
{
	if (r->bad || r->n < n) {
		r->bad = 1;
		return NULL;
	}
	const uint8_t *p = r->p;
	r->p += n;
	r->n -= n;
	return p;
}

static uint8_t get8(rd *r)
{
	const uint8_t *p = take(r, 1);
	return p ? p[0] : 0;
}

static uint16_t get16(rd *r)
{
	const uint8_t *p = take(r, 2);
	return p ? rd16(p) : 0;
}

static uint32_t get32(rd *r)
{
	const uint8_t *p = take(r, 4);
	return p ? rd32(p) : 0;
}

static uint64_t get64(rd *r)
{
	const uint8_t *p = take(r, 8);
	return p ? rd64(p) : 0;
}

static void get_id(rd *r, uint8_t out[HASH_LEN])
{
	const uint8_t *p = take(r, HASH_LEN);
	if (p)
		memcpy(out, p, HASH_LEN);
}

/* A str: u16 length + bytes.  Refuses NUL bytes and anything over cap-1. */
static void get_str(rd *r, char *out, size_t cap)
{
	uint16_t len = get16(r);
	const uint8_t *p = take(r, len);
	if (!p || len >= cap || memchr(p, 0, len)) {
		r->bad = 1;
		out[0] = 0;
		return;
	}
	memcpy(out, p, len);
	out[len] = 0;
}

static void get_record(rd *r, record *rec)
{
	memset(rec, 0, sizeof *rec);
	get_str(r, rec->path, sizeof rec->path);
	rec->seq = get64(r);
	rec->size = get64(r);
	rec->mode = get32(r);
	rec->mtime_ns = (int64_t)get64(r);
	get_id(r, rec->root);
	rec->deleted = get8(r) != 0;
	rec->origin = get64(r);
	rec->otime_ns = (int64_t)get64(r);
	rec->vv.n = get8(r);
	if (rec->vv.n > VV_MAX) {
		r->bad = 1;
		return;
	}
	for (unsigned i = 0; i < rec->vv.n; i++) {
		rec->vv.e[i].node = get64(r);
		rec->vv.e[i].counter = get64(r);
	}
}

int wire_header(const uint8_t hdr[WIRE_HDR], uint32_t *payload_len, uint8_t *type)
{
	uint32_t len = rd32(hdr);
	if (len < 1 || len > WIRE_MAX_FRAME)
		return ss_fail(SS_EPROTO, "frame length %u out of range (1..%u)", len, WIRE_MAX_FRAME);
	*payload_len = len - 1;
	*type = hdr[4];
	return 0;
}

int wire_decode(uint8_t type, const uint8_t *p, size_t n, msg *m)
{
	rd r = {p, n, 0};
	m->type = type;
	switch (type) {
	case MSG_HELLO: {
		const uint8_t *magic = take(&r, 8);
		if (magic && memcmp(magic, WIRE_MAGIC, 8))
			return ss_fail(SS_EPROTO, "not a syncstore peer (bad hello magic)");
		m->hello.max_version = get16(&r);
		m->hello.min_version = get16(&r);
		m->hello.flags = get32(&r);
		break;
	}
	case MSG_ERROR:
		m->error.code = (int32_t)get32(&r);
		get_str(&r, m->error.text, sizeof m->error.text);
		break;
	case MSG_OK:
		m->ok.value = get64(&r);
		break;
	case MSG_END:
	case MSG_SYNC:
	case MSG_STATUS:
		break;
	case MSG_PUT:
		get_str(&r, m->put.path, sizeof m->put.path);
		m->put.size = get64(&r);
		m->put.mode = get32(&r);
		m->put.mtime_ns = (int64_t)get64(&r);
		m->put.flags = get32(&r);
		break;
	case MSG_PUT_SMALL:
		get_str(&r, m->small.path, sizeof m->small.path);
		m->small.size = get64(&r);
		m->small.mode = get32(&r);
		m->small.mtime_ns = (int64_t)get64(&r);
		m->small.flags = get32(&r);
		if (!r.bad && (m->small.size > WIRE_SMALL_MAX || m->small.size != r.n))
			r.bad = 1;
		m->small.data = take(&r, r.bad ? 0 : m->small.size);
		break;
	case MSG_OFFER:
	case MSG_READ:
		m->offer.count = get16(&r);
		if (m->offer.count > WIRE_MAX_OFFER)
			return ss_fail(SS_EPROTO, "offer of %u ids exceeds the limit of %u", m->offer.count, WIRE_MAX_OFFER);
		m->offer.ids = take(&r, (size_t)m->offer.count * HASH_LEN);
		break;
	case MSG_WANT:
		m->want.count = get16(&r);
		if (m->want.count > WIRE_MAX_OFFER)
			return ss_fail(SS_EPROTO, "want of %u items exceeds the limit of %u", m->want.count, WIRE_MAX_OFFER);
		m->want.bits = take(&r, (m->want.count + 7u) / 8);
		break;
	case MSG_NODE:
		if (n > TREE_NODE_MAX)
			return ss_fail(SS_EPROTO, "tree node of %zu bytes exceeds %d", n, TREE_NODE_MAX);
		m->node.bytes = take(&r, n);
		m->node.len = (uint32_t)n;
		break;
	case MSG_CHUNK:
		get_id(&r, m->chunk.id);
		m->chunk.flags = get8(&r);
		m->chunk.raw_len = get32(&r);
		if (m->chunk.flags & ~WIRE_CHUNK_ZSTD)
			return ss_fail(SS_EPROTO, "chunk with unknown flags 0x%x", m->chunk.flags);
		if (m->chunk.raw_len > CDC_MAX)
			return ss_fail(SS_EPROTO, "chunk of %u bytes exceeds %d", m->chunk.raw_len, CDC_MAX);
		if (r.n > WIRE_CHUNK_MAX)
			return ss_fail(SS_EPROTO, "chunk payload of %zu bytes exceeds %d", r.n, WIRE_CHUNK_MAX);
		m->chunk.len = (uint32_t)r.n;
		m->chunk.data = take(&r, r.n);
		if (!(m->chunk.flags & WIRE_CHUNK_ZSTD) && m->chunk.len != m->chunk.raw_len)
			return ss_fail(SS_EPROTO, "chunk length %u does not match raw length %u", m->chunk.len,
				       m->chunk.raw_len);
		break;
	case MSG_COMMIT:
		get_id(&r, m->commit.root);
		m->commit.size = get64(&r);
		m->commit.flags = get32(&r);
		break;
	case MSG_BARRIER:
		m->barrier.seq = get64(&r);
		break;
	case MSG_GET:
		get_str(&r, m->get.path, sizeof m->get.path);
		m->get.version = get64(&r);
		break;
	case MSG_LIST:
	case MSG_STAT:
	case MSG_LOG:
		get_str(&r, m->path.path, sizeof m->path.path);
		break;
	case MSG_RM:
		get_str(&r, m->rm.path, sizeof m->rm.path);
		m->rm.flags = get32(&r);
		break;
	case MSG_MV:
		get_str(&r, m->mv.from, sizeof m->mv.from);
		get_str(&r, m->mv.to, sizeof m->mv.to);
		break;
	case MSG_META:
	case MSG_ENTRY:
		get_record(&r, &m->rec);
		break;
	case MSG_SERVER: {
		wire_server *s = &m->server;
		get_id(&r, s->id);
		get_str(&r, s->addr, sizeof s->addr);
		s->self = get8(&r);
		s->connected = get8(&r);
		s->head_seq = get64(&r);
		s->pending_records = get64(&r);
		s->pending_bytes = get64(&r);
		s->files = get64(&r);
		s->bytes = get64(&r);
		s->chunks = get64(&r);
		s->chunk_bytes = get64(&r);
		get_id(&r, s->digest);
		s->durable_of = get16(&r);
		s->tombstones = get64(&r);
		s->flags = get8(&r);
		break;
	}
	case MSG_FORGET:
		get_str(&r, m->forget.node, sizeof m->forget.node);
		m->forget.flags = get32(&r);
		break;
	case MSG_PULL:
		m->pull.index_id = get64(&r);
		m->pull.after = get64(&r);
		m->pull.limit = get32(&r);
		m->pull.wait_ms = get32(&r);
		m->pull.acked = get64(&r);
		m->pull.fp = get64(&r);
		break;
	case MSG_PULLED:
		m->pulled.index_id = get64(&r);
		m->pulled.head = get64(&r);
		m->pulled.files = get64(&r);
		m->pulled.bytes = get64(&r);
		get_id(&r, m->pulled.digest);
		break;
	case MSG_MISSING:
		get_id(&r, m->missing.id);
		break;
	case MSG_JOIN:
		get_str(&r, m->join.addr, sizeof m->join.addr);
		m->join.cluster_size = get16(&r);
		break;
	case MSG_ANNOUNCE:
		get_id(&r, m->announce.root);
		m->announce.size = get64(&r);
		get_str(&r, m->announce.name, sizeof m->announce.name);
		get_str(&r, m->announce.addr, sizeof m->announce.addr);
		m->announce.flags = get32(&r);
		break;
	case MSG_HEARTBEAT:
		get_str(&r, m->heartbeat.addr, sizeof m->heartbeat.addr);
		m->heartbeat.shares = get64(&r);
		break;
	case MSG_SEEDERS:
		get_id(&r, m->seeders.root);
		break;
	case MSG_SEEDER:
		get_id(&r, m->seeder.id);
		get_str(&r, m->seeder.addr, sizeof m->seeder.addr);
		m->seeder.size = get64(&r);
		get_str(&r, m->seeder.name, sizeof m->seeder.name);
		break;
	default:
		return ss_fail(SS_EPROTO, "unknown message type %u", type);
	}
	if (r.bad)
		return ss_fail(SS_EPROTO, "truncated or malformed message (type %u, %zu bytes)", type, n);
	if (r.n)
		return ss_fail(SS_EPROTO, "%zu trailing bytes after message type %u", r.n, type);
	return 0;
}

int wire_negotiate(const msg *hello, uint16_t *version)
{
	uint16_t v = MIN(hello->hello.max_version, (uint16_t)WIRE_VERSION);
	if (v < hello->hello.min_version || v < WIRE_MIN_VERSION)
		return ss_fail(SS_EPROTO, "no common protocol version (peer speaks %u..%u, we speak %u..%u)",
			       hello->hello.min_version, hello->hello.max_version, WIRE_MIN_VERSION, WIRE_VERSION);
	*version = v;
	return 0;
}

/* ---- encoding ---- */

/* Open a frame: reserve the header; frame_end patches the length. */
static int frame_begin(buf *b, uint8_t type, size_t payload_hint)
{
	int rc = buf_reserve(b, WIRE_HDR + payload_hint);
	if (rc)
		return rc;
	uint8_t hdr[WIRE_HDR] = {0, 0, 0, 0, type};
	return buf_append(b, hdr, WIRE_HDR);
}

static int frame_end(buf *b, size_t start)
{
	size_t len = b->len - start - 4;
	SS_ASSERT(len >= 1 && len <= WIRE_MAX_FRAME);
	le32(b->p + start, (uint32_t)len);
	return 0;
}

/* Finish a frame, or take back its partial bytes if any append failed. */
static int frame_done(buf *b, size_t start, int rc)
{
	if (rc) {
		b->len = start;
		return SS_ETOOBIG;
	}
	return frame_end(b, start);
}

static int put8(buf *b, uint8_t v) { return buf_append(b, &v, 1); }
static int put16(buf *b, uint16_t v) { uint8_t t[2]; le16(t, v); return buf_append(b, t, 2); }
static int put32(buf *b, uint32_t v) { uint8_t t[4]; le32(t, v); return buf_append(b, t, 4); }
static int put64(buf *b, uint64_t v) { uint8_t t[8]; le64(t, v); return buf_append(b, t, 8); }

static int put_str(buf *b, const char *s)
{
	size_t n = strlen(s);
	if (n > UINT16_MAX)
		return ss_fail(SS_ETOOBIG, "string of %zu bytes too long for the wire", n);
	int rc = put16(b, (uint16_t)n);
	return rc ? rc : buf_append(b, s, n);
}

/* Encoders build the payload with unchecked appends into a reserved frame;
 * the buffer's own limit still applies, so `rc |=` collects any failure. */
int wire_hello(buf *b)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_HELLO, 16);
	rc |= buf_append(b, WIRE_MAGIC, 8);
	rc |= put16(b, WIRE_VERSION);
	rc |= put16(b, WIRE_MIN_VERSION);
	rc |= put32(b, WIRE_FEATURES);
	return frame_done(b, s, rc);
}

int wire_error(buf *b, int code, const char *text)
{
	char t[WIRE_TEXT_MAX];
	snprintf(t, sizeof t, "%s", text);
	size_t s = b->len;
	int rc = frame_begin(b, MSG_ERROR, 6 + strlen(t));
	rc |= put32(b, (uint32_t)code);
	rc |= put_str(b, t);
	return frame_done(b, s, rc);
}

int wire_ok(buf *b, uint64_t value)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_OK, 8);
	rc |= put64(b, value);
	return frame_done(b, s, rc);
}

int wire_empty(buf *b, uint8_t type)
{
	size_t s = b->len;
	int rc = frame_begin(b, type, 0);
	return frame_done(b, s, rc);
}

int wire_put(buf *b, const char *path, uint64_t size, uint32_t mode, int64_t mtime_ns, uint32_t flags)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_PUT, 32 + strlen(path));
	rc |= put_str(b, path);
	rc |= put64(b, size);
	rc |= put32(b, mode);
	rc |= put64(b, (uint64_t)mtime_ns);
	rc |= put32(b, flags);
	return frame_done(b, s, rc);
}

int wire_put_small(buf *b, const char *path, uint32_t mode, int64_t mtime_ns, uint32_t flags, const void *data,
		   size_t size)
{
	if (size > WIRE_SMALL_MAX)
		return ss_fail(SS_ETOOBIG, "%zu bytes is too large for PUT_SMALL", size);
	size_t s = b->len;
	int rc = frame_begin(b, MSG_PUT_SMALL, 32 + strlen(path) + size);
	rc |= put_str(b, path);
	rc |= put64(b, size);
	rc |= put32(b, mode);
	rc |= put64(b, (uint64_t)mtime_ns);
	rc |= put32(b, flags);
	rc |= buf_append(b, data, size);
	return frame_done(b, s, rc);
}

int wire_ids(buf *b, uint8_t type, const uint8_t *ids, uint16_t count)
{
	SS_ASSERT(count <= WIRE_MAX_OFFER);
	size_t s = b->len;
	int rc = frame_begin(b, type, 2 + (size_t)count * HASH_LEN);
	rc |= put16(b, count);
	rc |= buf_append(b, ids, (size_t)count * HASH_LEN);
	return frame_done(b, s, rc);
}

int wire_want(buf *b, const uint8_t *bits, uint16_t count)
{
	SS_ASSERT(count <= WIRE_MAX_OFFER);
	size_t s = b->len;
	int rc = frame_begin(b, MSG_WANT, 2 + (count + 7u) / 8);
	rc |= put16(b, count);
	rc |= buf_append(b, bits, (count + 7u) / 8);
	return frame_done(b, s, rc);
}

int wire_node(buf *b, const uint8_t *node, size_t len)
{
	SS_ASSERT(len <= TREE_NODE_MAX);
	size_t s = b->len;
	int rc = frame_begin(b, MSG_NODE, len);
	rc |= buf_append(b, node, len);
	return frame_done(b, s, rc);
}

int wire_chunk(buf *b, const uint8_t id[HASH_LEN], uint8_t flags, uint32_t raw_len, const void *data, size_t len)
{
	SS_ASSERT(raw_len <= CDC_MAX && len <= WIRE_MAX_FRAME - 64);
	size_t s = b->len;
	int rc = frame_begin(b, MSG_CHUNK, HASH_LEN + 5 + len);
	rc |= buf_append(b, id, HASH_LEN);
	rc |= put8(b, flags);
	rc |= put32(b, raw_len);
	rc |= buf_append(b, data, len);
	return frame_done(b, s, rc);
}

int wire_commit(buf *b, const uint8_t root[HASH_LEN], uint64_t size, uint32_t flags)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_COMMIT, HASH_LEN + 12);
	rc |= buf_append(b, root, HASH_LEN);
	rc |= put64(b, size);
	rc |= put32(b, flags);
	return frame_done(b, s, rc);
}

int wire_barrier(buf *b, uint64_t seq)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_BARRIER, 8);
	rc |= put64(b, seq);
	return frame_done(b, s, rc);
}

int wire_get(buf *b, const char *path, uint64_t version)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_GET, 10 + strlen(path));
	rc |= put_str(b, path);
	rc |= put64(b, version);
	return frame_done(b, s, rc);
}

int wire_path(buf *b, uint8_t type, const char *path)
{
	size_t s = b->len;
	int rc = frame_begin(b, type, 2 + strlen(path));
	rc |= put_str(b, path);
	return frame_done(b, s, rc);
}

int wire_rm(buf *b, const char *path, uint32_t flags)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_RM, 6 + strlen(path));
	rc |= put_str(b, path);
	rc |= put32(b, flags);
	return frame_done(b, s, rc);
}

int wire_mv(buf *b, const char *from, const char *to)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_MV, 4 + strlen(from) + strlen(to));
	rc |= put_str(b, from);
	rc |= put_str(b, to);
	return frame_done(b, s, rc);
}

int wire_record(buf *b, uint8_t type, const record *r)
{
	SS_ASSERT(r->vv.n <= VV_MAX);
	size_t s = b->len;
	int rc = frame_begin(b, type, 128 + strlen(r->path) + 16 * r->vv.n);
	rc |= put_str(b, r->path);
	rc |= put64(b, r->seq);
	rc |= put64(b, r->size);
	rc |= put32(b, r->mode);
	rc |= put64(b, (uint64_t)r->mtime_ns);
	rc |= buf_append(b, r->root, HASH_LEN);
	rc |= put8(b, r->deleted ? 1 : 0);
	rc |= put64(b, r->origin);
	rc |= put64(b, (uint64_t)r->otime_ns);
	rc |= put8(b, (uint8_t)r->vv.n);
	for (unsigned i = 0; i < r->vv.n; i++) {
		rc |= put64(b, r->vv.e[i].node);
		rc |= put64(b, r->vv.e[i].counter);
	}
	return frame_done(b, s, rc);
}

int wire_server_info(buf *b, const wire_server *v)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_SERVER, 160 + strlen(v->addr));
	rc |= buf_append(b, v->id, HASH_LEN);
	rc |= put_str(b, v->addr);
	rc |= put8(b, v->self);
	rc |= put8(b, v->connected);
	rc |= put64(b, v->head_seq);
	rc |= put64(b, v->pending_records);
	rc |= put64(b, v->pending_bytes);
	rc |= put64(b, v->files);
	rc |= put64(b, v->bytes);
	rc |= put64(b, v->chunks);
	rc |= put64(b, v->chunk_bytes);
	rc |= buf_append(b, v->digest, HASH_LEN);
	rc |= put16(b, v->durable_of);
	rc |= put64(b, v->tombstones);
	rc |= put8(b, v->flags);
	return frame_done(b, s, rc);
}

int wire_forget(buf *b, const char *node_hex, uint32_t flags)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_FORGET, 6 + strlen(node_hex));
	rc |= put_str(b, node_hex);
	rc |= put32(b, flags);
	return frame_done(b, s, rc);
}

int wire_pull(buf *b, uint64_t index_id, uint64_t after, uint64_t acked, uint64_t fp, uint32_t limit,
	      uint32_t wait_ms)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_PULL, 40);
	rc |= put64(b, index_id);
	rc |= put64(b, after);
	rc |= put32(b, limit);
	rc |= put32(b, wait_ms);
	rc |= put64(b, acked);
	rc |= put64(b, fp);
	return frame_done(b, s, rc);
}

int wire_pulled(buf *b, uint64_t index_id, uint64_t head, uint64_t files, uint64_t bytes,
		const uint8_t digest[HASH_LEN])
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_PULLED, 32 + HASH_LEN);
	rc |= put64(b, index_id);
	rc |= put64(b, head);
	rc |= put64(b, files);
	rc |= put64(b, bytes);
	rc |= buf_append(b, digest, HASH_LEN);
	return frame_done(b, s, rc);
}

int wire_join(buf *b, const char *addr, uint16_t cluster_size)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_JOIN, 4 + strlen(addr));
	rc |= put_str(b, addr);
	rc |= put16(b, cluster_size);
	return frame_done(b, s, rc);
}

int wire_missing(buf *b, const uint8_t id[HASH_LEN])
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_MISSING, HASH_LEN);
	rc |= buf_append(b, id, HASH_LEN);
	return frame_done(b, s, rc);
}

int wire_chunk_raw(const msg *m, struct ZSTD_DCtx_s *dctx, uint8_t *scratch, const uint8_t **p, size_t *n)
{
	*p = m->chunk.data;
	*n = m->chunk.len;
	if (!(m->chunk.flags & WIRE_CHUNK_ZSTD))
		return 0;
	size_t r = ZSTD_decompressDCtx(dctx, scratch, CDC_MAX, m->chunk.data, m->chunk.len);
	if (ZSTD_isError(r) || r != m->chunk.raw_len)
		return ss_fail(SS_ECORRUPT, "a chunk does not decompress to its stated length");
	*p = scratch;
	*n = r;
	return 0;
}

/* ---- CHUNK frames built in place ---- */

#define CHUNK_HDR (WIRE_HDR + HASH_LEN + 5) /* frame header, id, flags, raw_len */
#define ZGATE_MAX_BACKOFF 6

void wire_zstd_init(wire_zstd *z)
{
	memset(z, 0, sizeof *z);
	z->cctx = ZSTD_createCCtx();
	buf_init(&z->scratch, ZSTD_compressBound(CDC_MAX));
}

void wire_zstd_free(wire_zstd *z)
{
	ZSTD_freeCCtx(z->cctx);
	buf_free(&z->scratch);
}

int wire_chunk_open(buf *b, const uint8_t id[HASH_LEN], uint32_t raw_len, uint8_t **payload, size_t *start)
{
	SS_ASSERT(raw_len <= CDC_MAX);
	int rc = buf_reserve(b, CHUNK_HDR + raw_len);
	if (rc)
		return rc;
	*start = b->len;
	uint8_t *h = b->p + b->len;
	le32(h, (uint32_t)(CHUNK_HDR - 4 + raw_len));
	h[4] = MSG_CHUNK;
	memcpy(h + WIRE_HDR, id, HASH_LEN);
	h[WIRE_HDR + HASH_LEN] = 0;
	le32(h + WIRE_HDR + HASH_LEN + 1, raw_len);
	b->len += CHUNK_HDR + raw_len;
	*payload = h + CHUNK_HDR;
	return 0;
}

int wire_chunk_close(buf *b, size_t start, wire_zstd *z)
{
	uint8_t *h = b->p + start, *raw = h + CHUNK_HDR;
	uint32_t raw_len = rd32(h + WIRE_HDR + HASH_LEN + 1);
	if (!z || raw_len < 64)
		return 0;
	if (z->skip) {
		z->skip--;
		return 0;
	}
	if (buf_reserve(&z->scratch, ZSTD_compressBound(raw_len)))
		return 0;
	size_t n = ZSTD_compressCCtx(z->cctx, z->scratch.p, z->scratch.cap, raw, raw_len, 1);
	if (ZSTD_isError(n) || n >= raw_len - raw_len / 8) {
		z->backoff = MIN(z->backoff + 1, ZGATE_MAX_BACKOFF);
		z->skip = (1u << z->backoff) - 1;
		return 0;
	}
	z->backoff = 0;
	memcpy(raw, z->scratch.p, n);
	h[WIRE_HDR + HASH_LEN] = WIRE_CHUNK_ZSTD;
	le32(h, (uint32_t)(CHUNK_HDR - 4 + n));
	b->len = start + CHUNK_HDR + n;
	return 0;
}

int wire_announce(buf *b, const uint8_t root[HASH_LEN], uint64_t size, const char *name, const char *addr,
		  uint32_t flags)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_ANNOUNCE, HASH_LEN + 16 + strlen(name) + strlen(addr));
	rc |= buf_append(b, root, HASH_LEN);
	rc |= put64(b, size);
	rc |= put_str(b, name);
	rc |= put_str(b, addr);
	rc |= put32(b, flags);
	return frame_done(b, s, rc);
}

int wire_heartbeat(buf *b, const char *addr, uint64_t shares)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_HEARTBEAT, 10 + strlen(addr));
	rc |= put_str(b, addr);
	rc |= put64(b, shares);
	return frame_done(b, s, rc);
}

int wire_seeders(buf *b, const uint8_t root[HASH_LEN])
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_SEEDERS, HASH_LEN);
	rc |= buf_append(b, root, HASH_LEN);
	return frame_done(b, s, rc);
}

int wire_seeder(buf *b, const uint8_t id[HASH_LEN], const char *addr, uint64_t size, const char *name)
{
	size_t s = b->len;
	int rc = frame_begin(b, MSG_SEEDER, HASH_LEN + 12 + strlen(addr) + strlen(name));
	rc |= buf_append(b, id, HASH_LEN);
	rc |= put_str(b, addr);
	rc |= put64(b, size);
	rc |= put_str(b, name);
	return frame_done(b, s, rc);
}
