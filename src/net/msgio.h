/*
 * msgio — wire frames over a blocking TLS connection.
 *
 * Writes are gathered in an outgoing buffer and sent in large SSL_writes
 * (msg_flush), since bulk chunk streams want few, big writes.  Reads pull one
 * whole frame into a bounded scratch buffer and decode it with wire_decode.
 */
#ifndef SS_MSGIO_H
#define SS_MSGIO_H

#include "../proto/wire.h"
#include "tls.h"

#define MSGIO_FLUSH_AT (1u << 20)

typedef struct msgio {
	conn *c;
	buf out;      /* frames not yet written */
	buf in;       /* payload of the last frame read */
	uint64_t sent; /* frame bytes written, for "sent X of Y" reports */
	uint32_t peer_features; /* the other side's HELLO flags (WIRE_FEATURE_*) */
} msgio;

void msgio_init(msgio *io, conn *c);
void msgio_free(msgio *io);
/* The encoders append to io->out; msgio_maybe_flush writes once it is large. */
int msgio_flush(msgio *io);
int msgio_maybe_flush(msgio *io);
/* Flush, then read and decode the next frame. */
int msgio_recv(msgio *io, msg *m);
/* Flush, read a frame, and fail unless it has the expected type; an ERROR
 * frame becomes SS_EREMOTE with the server's text as the message. */
int msgio_expect(msgio *io, uint8_t type, msg *m);
/* HELLO both ways (client sends first; server answers). */
int msgio_hello_client(msgio *io);
int msgio_hello_server(msgio *io);

#endif
