/*
 * fuzz_wire.c — libFuzzer harness for the frame decoder.  The first byte
 * picks the message type; the rest is the payload.  Whatever decodes must
 * re-encode to a frame that decodes again.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

int fuzz_wire(const uint8_t *data, size_t size);

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
