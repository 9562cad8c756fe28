/* test_wire.c — every message round-trips; every truncation is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/wire.h"

/* Build one frame of each message type. */
static void build_all(buf *b, size_t *starts, size_t *n)
{
	uint8_t ids[3 * HASH_LEN], bits[1] = {0x5};
	for (size_t i = 0; i < sizeof ids; i++)
		ids[i] = (uint8_t)i;
	uint8_t node[TREE_NODE_MAX];
	tree_entry e[2] = {{{1}, 100}, {{2}, 200}};
	size_t nodelen = tree_node_encode(1, e, 2, node);
	record r = {.seq = 7, .size = 1234, .mode = 0644, .mtime_ns = 99, .deleted = false, .origin = 5, .otime_ns = 6};
	strcpy(r.path, "docs/a.txt");
	r.vv.n = 2;
	r.vv.e[0] = (vv_entry){1, 2};
	r.vv.e[1] = (vv_entry){3, 4};
	wire_server sv = {.self = 1, .connected = 1, .head_seq = 3, .durable_of = 3};
	strcpy(sv.addr, "127.0.0.1:7001");

	*n = 0;
#define ADD(call) do { starts[(*n)++] = b->len; assert_int_equal(call, 0); } while (0)
	ADD(wire_hello(b));
	ADD(wire_error(b, SS_ENOENT, "no such file: x"));
	ADD(wire_ok(b, 42));
	ADD(wire_empty(b, MSG_END));
	ADD(wire_put(b, "docs/a.txt", 1234, 0644, 99, 0));
	ADD(wire_ids(b, MSG_OFFER, ids, 3));
	ADD(wire_want(b, bits, 3));
	ADD(wire_node(b, node, nodelen));
	ADD(wire_chunk(b, ids, 0, 5, "hello", 5));
	ADD(wire_commit(b, ids, 1234, WIRE_COMMIT_DEFER));
	ADD(wire_get(b, "docs/a.txt", 3));
	ADD(wire_path(b, MSG_LIST, "docs"));
	ADD(wire_rm(b, "docs", WIRE_RM_RECURSIVE));
	ADD(wire_mv(b, "a", "b"));
	ADD(wire_record(b, MSG_ENTRY, &r));
	ADD(wire_server_info(b, &sv));
	/* Later messages go last, so the indexes spot-checked below stay. */
	ADD(wire_barrier(b, 77));
	ADD(wire_forget(b, "0123456789abcdef", WIRE_FORGET_RELAYED));
	ADD(wire_pull(b, 5, 6, 4, 0x1122334455667788ULL, 7, 8));
	ADD(wire_pulled(b, 5, 6, 7, 8, ids));
	ADD(wire_ids(b, MSG_READ, ids, 2));
	ADD(wire_missing(b, ids));
	ADD(wire_join(b, "127.0.0.1:7001", 3));
	ADD(wire_put_small(b, "docs/s.txt", 0644, 99, WIRE_COMMIT_DEFER, "small", 5));
	ADD(wire_announce(b, ids, 1234, "report final.pdf", "127.0.0.1:9001", 0));
	ADD(wire_heartbeat(b, "127.0.0.1:9001", 3));
	ADD(wire_seeders(b, ids));
	ADD(wire_seeder(b, ids, "127.0.0.1:9001", 1234, "report final.pdf"));
#undef ADD
	starts[*n] = b->len;
}

static int decode_frame(const uint8_t *p, size_t n, msg *m)
{
	uint32_t len;
	uint8_t type;
	if (n < WIRE_HDR)
		return SS_EPROTO;
	int rc = wire_header(p, &len, &type);
	if (rc)
		return rc;
	if (n - WIRE_HDR != len)
		return SS_EPROTO;
	return wire_decode(type, p + WIRE_HDR, len, m);
}

static void test_roundtrip(void **state)
{
	(void)state;
	buf b;
	buf_init(&b, 1 << 20);
	size_t starts[32], n;
	build_all(&b, starts, &n);
	msg *m = malloc(sizeof *m);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(decode_frame(b.p + starts[i], starts[i + 1] - starts[i], m), 0);
	/* Spot-check field values survive. */
	assert_int_equal(decode_frame(b.p + starts[14], starts[15] - starts[14], m), 0);
	assert_string_equal(m->rec.path, "docs/a.txt");
	assert_int_equal(m->rec.size, 1234);
	assert_int_equal(m->rec.vv.n, 2);
	assert_int_equal(m->rec.vv.e[1].counter, 4);
	assert_int_equal(decode_frame(b.p + starts[13], starts[14] - starts[13], m), 0);
	assert_string_equal(m->mv.to, "b");
	assert_int_equal(decode_frame(b.p + starts[23], starts[24] - starts[23], m), 0);
	assert_int_equal(m->type, MSG_PUT_SMALL);
	assert_string_equal(m->small.path, "docs/s.txt");
	assert_int_equal(m->small.size, 5);
	assert_memory_equal(m->small.data, "small", 5);
	assert_int_equal(m->small.flags, WIRE_COMMIT_DEFER);
	assert_int_equal(decode_frame(b.p + starts[24], starts[25] - starts[24], m), 0);
	assert_string_equal(m->announce.name, "report final.pdf");
	assert_string_equal(m->announce.addr, "127.0.0.1:9001");
	assert_int_equal(m->announce.size, 1234);
	assert_int_equal(decode_frame(b.p + starts[27], starts[28] - starts[27], m), 0);
	assert_string_equal(m->seeder.name, "report final.pdf");
	assert_int_equal(decode_frame(b.p + starts[18], starts[19] - starts[18], m), 0);
	assert_int_equal(m->type, MSG_PULL);
	assert_true(m->pull.index_id == 5 && m->pull.after == 6 && m->pull.acked == 4);
	assert_true(m->pull.fp == 0x1122334455667788ULL);
	assert_true(m->pull.limit == 7 && m->pull.wait_ms == 8);
	free(m);
	buf_free(&b);
}

static void test_every_truncation_refused(void **state)
{
	(void)state;
	buf b;
	buf_init(&b, 1 << 20);
	size_t starts[32], n;
	build_all(&b, starts, &n);
	msg *m = malloc(sizeof *m);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *f = b.p + starts[i];
		size_t len = starts[i + 1] - starts[i];
		uint8_t type = f[4];
		/* Payloads cut short: the decoder sees fewer bytes than encoded. */
		for (size_t cut = 0; cut < len - WIRE_HDR; cut++) {
			int rc = wire_decode(type, f + WIRE_HDR, cut, m);
			/* NODE and CHUNK payloads end in variable bytes; a cut there
			 * still fails because the node or length check catches it. */
			if (type == MSG_NODE && rc == 0) {
				tree_node nd;
				rc = tree_node_decode(m->node.bytes, m->node.len, &nd);
			}
			assert_int_not_equal(rc, 0);
		}
		/* Trailing bytes are refused too. */
		uint8_t *longer = malloc(len + 1);
		memcpy(longer, f + WIRE_HDR, len - WIRE_HDR);
		longer[len - WIRE_HDR] = 0;
		if (type != MSG_NODE && type != MSG_CHUNK)
			assert_int_not_equal(wire_decode(type, longer, len - WIRE_HDR + 1, m), 0);
		free(longer);
	}
	free(m);
	buf_free(&b);
}

static void test_header_limits(void **state)
{
	(void)state;
	uint8_t h[WIRE_HDR] = {0};
	uint32_t len;
	uint8_t type;
	assert_int_not_equal(wire_header(h, &len, &type), 0); /* length 0 */
	le32(h, WIRE_MAX_FRAME + 1);
	assert_int_not_equal(wire_header(h, &len, &type), 0);
	le32(h, 0xfffffff0u);
	assert_int_not_equal(wire_header(h, &len, &type), 0);
	le32(h, WIRE_MAX_FRAME);
	assert_int_equal(wire_header(h, &len, &type), 0);
	assert_int_equal(len, WIRE_MAX_FRAME - 1);
}

static void test_bad_fields(void **state)
{
	(void)state;
	msg *m = malloc(sizeof *m);
	uint8_t p[64] = {0};
	/* Unknown type. */
	assert_int_not_equal(wire_decode(200, p, 0, m), 0);
	/* A str with a NUL inside. */
	le16(p, 3);
	memcpy(p + 2, "a\0b", 3);
	assert_int_not_equal(wire_decode(MSG_LIST, p, 5, m), 0);
	/* An offer claiming more ids than the limit. */
	le16(p, WIRE_MAX_OFFER + 1);
	assert_int_not_equal(wire_decode(MSG_OFFER, p, 2, m), 0);
	/* A chunk with a raw length beyond CDC_MAX. */
	memset(p, 0, sizeof p);
	le32(p + HASH_LEN + 1, CDC_MAX + 1);
	assert_int_not_equal(wire_decode(MSG_CHUNK, p, HASH_LEN + 5, m), 0);
	/* Bad hello magic. */
	memcpy(p, "NOTSYNCS", 8);
	assert_int_not_equal(wire_decode(MSG_HELLO, p, 16, m), 0);
	free(m);
}

static void test_negotiate(void **state)
{
	(void)state;
	msg m = {.type = MSG_HELLO};
	uint16_t v;
	m.hello.max_version = 5;
	m.hello.min_version = 1;
	assert_int_equal(wire_negotiate(&m, &v), 0);
	assert_int_equal(v, WIRE_VERSION);
	m.hello.max_version = 9;
	m.hello.min_version = 9;
	assert_int_not_equal(wire_negotiate(&m, &v), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_every_truncation_refused),
		cmocka_unit_test(test_header_limits),
		cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_negotiate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
