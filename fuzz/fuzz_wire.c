/*
 * fuzz_wire.c — libFuzzer harness for the frame decoder.  The first byte
 * picks the message type; the rest is the payload.  Whatever decodes must
 * re-encode to a frame that decodes again: records, and the tracker's
 * messages (ANNOUNCE, HEARTBEAT, SEEDERS, SEEDER), which must come back
 * field for field.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

int fuzz_wire(const uint8_t *data, size_t size);

/* Encode m again (a swarm message), decode it, and compare. */
static void swarm_round_trip(const msg *m)
{
	buf b;
	buf_init(&b, 1 << 20);
	int rc = 0;
	switch (m->type) {
	case MSG_ANNOUNCE:
		rc = wire_announce(&b, m->announce.root, m->announce.size, m->announce.name, m->announce.addr,
				   m->announce.flags);
		break;
	case MSG_HEARTBEAT: rc = wire_heartbeat(&b, m->heartbeat.addr, m->heartbeat.shares); break;
	case MSG_SEEDERS: rc = wire_seeders(&b, m->seeders.root); break;
	case MSG_SEEDER: rc = wire_seeder(&b, m->seeder.id, m->seeder.addr, m->seeder.size, m->seeder.name); break;
	default: buf_free(&b); return;
	}
	SS_ASSERT(rc == 0);
	uint32_t len;
	uint8_t type;
	SS_ASSERT(wire_header(b.p, &len, &type) == 0 && len == b.len - WIRE_HDR && type == m->type);
	msg *again = calloc(1, sizeof *again);
	SS_ASSERT(wire_decode(type, b.p + WIRE_HDR, len, again) == 0);
	switch (type) {
	case MSG_ANNOUNCE:
		SS_ASSERT(!memcmp(again->announce.root, m->announce.root, HASH_LEN) &&
			  again->announce.size == m->announce.size && !strcmp(again->announce.name, m->announce.name) &&
			  !strcmp(again->announce.addr, m->announce.addr) && again->announce.flags == m->announce.flags);
		break;
	case MSG_HEARTBEAT:
		SS_ASSERT(!strcmp(again->heartbeat.addr, m->heartbeat.addr) && again->heartbeat.shares == m->heartbeat.shares);
		break;
	case MSG_SEEDERS: SS_ASSERT(!memcmp(again->seeders.root, m->seeders.root, HASH_LEN)); break;
	default:
		SS_ASSERT(!memcmp(again->seeder.id, m->seeder.id, HASH_LEN) && !strcmp(again->seeder.addr, m->seeder.addr) &&
			  again->seeder.size == m->seeder.size && !strcmp(again->seeder.name, m->seeder.name));
	}
	free(again);
	buf_free(&b);
}

int fuzz_wire(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	msg *m = malloc(sizeof *m);
	if (wire_decode(data[0], data + 1, size - 1, m) == 0 && (m->type == MSG_ENTRY || m->type == MSG_META)) {
		buf b;
		buf_init(&b, 1 << 20);
		SS_ASSERT(wire_record(&b, m->type, &m->rec) == 0);
		uint32_t len;
		uint8_t type;
		SS_ASSERT(wire_header(b.p, &len, &type) == 0 && len == b.len - WIRE_HDR);
		msg *again = malloc(sizeof *again);
		SS_ASSERT(wire_decode(type, b.p + WIRE_HDR, len, again) == 0);
		SS_ASSERT(!strcmp(again->rec.path, m->rec.path) && again->rec.size == m->rec.size);
		free(again);
		buf_free(&b);
	}
	else if (wire_decode(data[0], data + 1, size - 1, m) == 0)
		swarm_round_trip(m);
	if (size >= WIRE_HDR) {
		uint32_t len;
		uint8_t type;
		(void)wire_header(data, &len, &type);
	}
	free(m);
	return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_wire(data, size); }
#endif
