/* msgio.c — frames over a conn: gathered writes, bounded reads. */
#include "msgio.h"

#include <stdlib.h>
#include <string.h>

void msgio_init(msgio *io, conn *c)
{
	memset(io, 0, sizeof *io);
	io->c = c;
	buf_init(&io->out, 4 * MSGIO_FLUSH_AT + WIRE_MAX_FRAME);
	buf_init(&io->in, WIRE_MAX_FRAME);
}

void msgio_free(msgio *io)
{
	buf_free(&io->out);
	buf_free(&io->in);
}

int msgio_flush(msgio *io)
{
	if (!io->out.len)
		return 0;
	int rc = conn_write(io->c, io->out.p, io->out.len);
	if (!rc)
		io->sent += io->out.len;
	buf_reset(&io->out);
	return rc;
}

int msgio_maybe_flush(msgio *io)
{
	return io->out.len >= MSGIO_FLUSH_AT ? msgio_flush(io) : 0;
}

int msgio_recv(msgio *io, msg *m)
{
	int rc = msgio_flush(io);
	if (rc)
		return rc;
	uint8_t hdr[WIRE_HDR];
	uint32_t len;
	uint8_t type;
	if ((rc = conn_read(io->c, hdr, sizeof hdr)))
		return rc;
	if ((rc = wire_header(hdr, &len, &type)))
		return rc;
	buf_reset(&io->in);
	if ((rc = buf_reserve(&io->in, len)))
		return rc;
	if (len && (rc = conn_read(io->c, io->in.p, len)))
		return rc == SS_ECLOSED ? ss_fail(SS_EPROTO, "connection closed in the middle of a frame") : rc;
	io->in.len = len;
	return wire_decode(type, io->in.p, len, m);
}

int msgio_expect(msgio *io, uint8_t type, msg *m)
{
	int rc = msgio_recv(io, m);
	if (rc)
		return rc;
	if (m->type == type)
		return 0;
	if (m->type == MSG_ERROR) {
		int code = m->error.code < 0 && m->error.code >= SS_EUNAVAIL ? m->error.code : SS_EREMOTE;
		return ss_fail(code, "%s", m->error.text);
	}
	return ss_fail(SS_EPROTO, "unexpected message type %u (wanted %u)", m->type, type);
}

static int check_hello(const msg *m)
{
	uint16_t v;
	return wire_negotiate(m, &v);
}

int msgio_hello_client(msgio *io)
{
	msg *m = xmalloc(sizeof *m);
	int rc = wire_hello(&io->out);
	if (!rc)
		rc = msgio_expect(io, MSG_HELLO, m);
	if (!rc)
		rc = check_hello(m);
	if (!rc)
		io->peer_features = m->hello.flags;
	free(m);
	return rc;
}

int msgio_hello_server(msgio *io)
{
	msg *m = xmalloc(sizeof *m);
	int rc = msgio_expect(io, MSG_HELLO, m);
	if (!rc)
		rc = check_hello(m);
	if (!rc) {
		io->peer_features = m->hello.flags;
		rc = wire_hello(&io->out);
	}
	if (!rc)
		rc = msgio_flush(io);
	free(m);
	return rc;
}
