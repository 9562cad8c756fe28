/*
 * conn.c — blocking TCP + TLS 1.3 connections, and listening sockets.
 *
 * One thread per connection does blocking SSL_read/SSL_write: for bulk chunk
 * streams this is the fastest of the ways measured (DESIGN.md §4), and the
 * callers read exact sizes, so conn_read loops over records until n bytes
 * are in; read-ahead (tls.c) saves a syscall per record.  Cost, measured
 * with bench/tls_bench.c: ~1 core-second per GB at each end (AES-GCM, the
 * copies in and out of the kernel, and loopback TCP itself).
 *
 * Timeouts: connect() is bounded by poll() on a non-blocking socket; the
 * handshake by SO_RCVTIMEO/SO_SNDTIMEO, cleared afterwards; reads by
 * conn_set_timeout (SO_RCVTIMEO).  Writes have no timeout: a peer that
 * stops reading blocks its writer, which is the back-pressure we want; a
 * watchdog that wants the writer back calls shutdown(c->fd, SHUT_RDWR) from
 * another thread, and the write fails.
 *
 * Errors say which peer and what happened, lower case:
 *   cannot connect to 127.0.0.1:7001: connection refused
 *   tls handshake with 127.0.0.1:7001 failed: tlsv13 alert certificate required
 *   read from server1 (127.0.0.1:7001) failed: connection reset by peer
 */
#include "tls.h"
#include "../util/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>

/* SSL_read/SSL_write take an int length. */
#define CONN_IO_MAX (1 << 30)

/* strerror, lower-cased to match the project's messages; thread-safe. */
static const char *errtext(int e, char *b, size_t n)
{
	const char *s = strerror_r(e, b, n);
	if (s != b)
		snprintf(b, n, "%s", s);
	b[0] = (char)tolower((unsigned char)b[0]);
	return b;
}

static void conn_reset(conn *c)
{
	memset(c, 0, sizeof *c);
	c->fd = -1;
	c->ssl = NULL;
}

int hostport_parse(const char *s, char *host, size_t hostsz, char *port, size_t portsz)
{
	const char *h, *p, *colon;
	size_t hl;

	if (!s)
		return ss_fail(SS_EINVAL, "invalid address: expected HOST:PORT");
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return ss_fail(SS_EINVAL, "invalid address \"%s\": expected [IPV6]:PORT", s);
		h = s + 1;
		hl = (size_t)(close - h);
		p = close + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return ss_fail(SS_EINVAL, "invalid address \"%s\": expected HOST:PORT", s);
		if (memchr(s, ':', (size_t)(colon - s)))
			return ss_fail(SS_EINVAL, "invalid address \"%s\": write an ipv6 address as [ADDR]:PORT", s);
		h = s;
		hl = (size_t)(colon - s);
		p = colon + 1;
	}
	if (hl == 0)
		return ss_fail(SS_EINVAL, "invalid address \"%s\": missing host", s);
	size_t pl = strlen(p);
	if (pl == 0 || pl > 5 || strspn(p, "0123456789") != pl || atol(p) > 65535)
		return ss_fail(SS_EINVAL, "invalid address \"%s\": port must be a number from 0 to 65535", s);
	if (hl >= hostsz || pl >= portsz)
		return ss_fail(SS_ETOOBIG, "invalid address \"%s\": too long", s);
	memcpy(host, h, hl);
	host[hl] = 0;
	memcpy(port, p, pl + 1);
	return 0;
}

static int resolve(const char *hostport, int passive, struct addrinfo **res)
{
	char host[256], port[8];
	struct addrinfo hints = { 0 };
	int rc = hostport_parse(hostport, host, sizeof host, port, sizeof port);
	if (rc)
		return rc;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	int g = getaddrinfo(host, port, &hints, res);
	if (g == EAI_SYSTEM)
		return ss_fail_errno("cannot resolve %s", host);
	if (g)
		return ss_fail(g == EAI_NONAME ? SS_ENOENT : SS_EIO, "cannot resolve %s: %s", host, gai_strerror(g));
	return 0;
}

int tcp_listen(const char *hostport, int backlog)
{
	struct addrinfo *res, *ai;
	int fd = -1, e = 0, rc;
	char eb[128];

	if ((rc = resolve(hostport, 1, &res)))
		return rc;
	for (ai = res; ai; ai = ai->ai_next) {
		int one = 1;
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		/* A restarted server must get its port back while old
		 * connections sit in TIME_WAIT. */
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
		    bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog > 0 ? backlog : SOMAXCONN) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ss_fail(e == EADDRINUSE ? SS_EBUSY : ss_errno_code(e), "cannot listen on %s: %s", hostport,
			       errtext(e, eb, sizeof eb));
	return fd;
}

static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return ss_fail_errno("cannot make socket blocking");
	return 0;
}

static void set_timeouts(int fd, int ms, int which)
{
	struct timeval tv = { 0 };
	if (ms > 0) {
		tv.tv_sec = ms / 1000;
		tv.tv_usec = (ms % 1000) * 1000;
	}
	if (which & 1)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (which & 2)
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* "name (ip:port)" for messages after the handshake; just one of them if
 * the other is unknown. */
static const char *conn_desc(const conn *c, char *b, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char h[NI_MAXHOST], p[NI_MAXSERV];
	bool addr = c->fd >= 0 && getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0 &&
		    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) == 0;
	char a[NI_MAXHOST + NI_MAXSERV + 4] = "";
	if (addr)
		snprintf(a, sizeof a, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
	if (c->peer.name[0] && addr)
		snprintf(b, n, "%s (%s)", c->peer.name, a);
	else if (c->peer.name[0])
		snprintf(b, n, "%s", c->peer.name);
	else
		snprintf(b, n, "%s", addr ? a : "peer");
	return b;
}

/*
 * After a fatal error OpenSSL must not be asked to send close_notify;
 * quiet shutdown makes conn_close's SSL_shutdown a no-op.
 */
static void conn_fatal(conn *c)
{
	SSL_set_quiet_shutdown(c->ssl, 1);
}

/*
 * A signal interrupted a blocking call: OpenSSL reports EINTR as "want
 * read/write", which must not pass for a timeout.  Retrying is right —
 * the way to stop a thread blocked on a conn is shutdown(fd), not a signal.
 */
static bool conn_interrupted(SSL *ssl, int ret)
{
	int e = errno;
	int err = SSL_get_error(ssl, ret);
	errno = e;
	return e == EINTR && (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE);
}

/* Turn a failed SSL_read/SSL_write into an SS_E code and message.  `got`
 * bytes of `want` had been transferred by this call. */
static int conn_io_error(conn *c, int ret, const char *op, size_t got, size_t want)
{
	int e = errno;
	int err = SSL_get_error(c->ssl, ret);
	char d[160], eb[128];
	unsigned long q;

	conn_desc(c, d, sizeof d);
	switch (err) {
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		if (got)
			return ss_fail(SS_ECLOSED, "connection closed by %s after %zu of %zu bytes", d, got, want);
		return ss_fail(SS_ECLOSED, "connection closed by %s", d);
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		/* A blocking socket only says "again" when SO_RCVTIMEO or
		 * SO_SNDTIMEO expired. */
		ERR_clear_error();
		return ss_fail(SS_ETIMEDOUT, "%s %s timed out", op, d);
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (e == EAGAIN || e == EWOULDBLOCK)
			return ss_fail(SS_ETIMEDOUT, "%s %s timed out", op, d);
		conn_fatal(c);
		if (e == 0 || e == EPIPE || e == ECONNRESET) {
			if (got)
				return ss_fail(SS_EIO, "connection to %s lost after %zu of %zu bytes", d, got, want);
			return ss_fail(SS_ECLOSED, "%s %s failed: %s", op, d,
				       e ? errtext(e, eb, sizeof eb) : "connection closed by peer");
		}
		return ss_fail(ss_errno_code(e), "%s %s failed: %s", op, d, errtext(e, eb, sizeof eb));
	case SSL_ERROR_SSL:
		conn_fatal(c);
		q = ERR_peek_error();
		/* OpenSSL 3 reports a TCP EOF without close_notify this way. */
		if (ERR_GET_LIB(q) == ERR_LIB_SSL && ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			ERR_clear_error();
			if (got)
				return ss_fail(SS_EIO, "connection to %s lost after %zu of %zu bytes", d, got, want);
			return ss_fail(SS_ECLOSED, "connection closed by %s", d);
		}
		return tls_fail(SS_ETLS, "tls %s %s failed", op, d);
	default:
		conn_fatal(c);
		return tls_fail(SS_ETLS, "tls %s %s failed (ssl error %d)", op, d, err);
	}
}

/* The handshake on a connected blocking socket; who names the peer.  On
 * failure fd is closed only if own_fd. */
static int conn_handshake(SSL_CTX *ctx, int fd, int is_server, bool own_fd, int timeout_ms, const char *who, conn *c)
{
	char eb[128];
	int one = 1, r, err, e, rc;

	/* Requests and replies are small and latency-bound; bulk writes are
	 * large anyway, so Nagle only ever adds delay. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	set_timeouts(fd, timeout_ms, 3);
	c->fd = fd;
	c->ssl = SSL_new(ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, fd)) {
		rc = tls_fail(SS_ENOMEM, "tls handshake with %s failed", who);
		goto fail;
	}
	do {
		ERR_clear_error();
		errno = 0;
		r = is_server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
	} while (r != 1 && conn_interrupted(c->ssl, r));
	if (r != 1) {
		e = errno;
		err = SSL_get_error(c->ssl, r);
		long v = SSL_get_verify_result(c->ssl);
		conn_fatal(c);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ||
		    (err == SSL_ERROR_SYSCALL && (e == EAGAIN || e == EWOULDBLOCK))) {
			ERR_clear_error();
			rc = ss_fail(SS_ETIMEDOUT, "tls handshake with %s timed out after %d ms", who, timeout_ms);
		} else if (v != X509_V_OK) {
			ERR_clear_error();
			rc = ss_fail(SS_EAUTH, "tls handshake with %s failed: certificate verify failed: %s", who,
				     X509_verify_cert_error_string(v));
		} else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
			ERR_clear_error();
			rc = ss_fail(SS_ETLS, "tls handshake with %s failed: %s", who,
				     e ? errtext(e, eb, sizeof eb) : "connection closed by peer");
		} else {
			rc = tls_fail(SS_ETLS, "tls handshake with %s failed", who);
		}
		goto fail;
	}
	set_timeouts(fd, 0, 3);
	if ((rc = tls_peer_info(c->ssl, &c->peer)))
		goto fail;
	return 0;
fail:
	if (!own_fd) {
		set_timeouts(fd, 0, 3);
		c->fd = -1;
	}
	conn_close(c);
	return rc;
}

int conn_connect(SSL_CTX *ctx, const char *hostport, int timeout_ms, conn *c)
{
	struct addrinfo *res, *ai;
	double deadline = now_mono() + timeout_ms / 1000.0;
	int fd = -1, e = ECONNREFUSED, rc;
	char eb[128];

	conn_reset(c);
	if ((rc = resolve(hostport, 0, &res)))
		return rc;
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		e = errno;
		while (e == EINPROGRESS || e == EINTR) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int wait = -1;
			if (timeout_ms > 0) {
				double left = deadline - now_mono();
				wait = left > 0 ? (int)(left * 1000) + 1 : 0;
			}
			int pr = poll(&pfd, 1, wait);
			if (pr < 0) {
				e = errno;
				continue;
			}
			if (pr == 0) {
				e = ETIMEDOUT;
				break;
			}
			socklen_t sl = sizeof e;
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
				e = errno;
		}
		if (e != 0) {
			close(fd);
			fd = -1;
			/* The whole connect shares one deadline. */
			if (e == ETIMEDOUT)
				break;
		}
	}
	freeaddrinfo(res);
	if (fd < 0) {
		if (e == ETIMEDOUT)
			return ss_fail(SS_ETIMEDOUT, "cannot connect to %s: timed out after %d ms", hostport, timeout_ms);
		return ss_fail(ss_errno_code(e), "cannot connect to %s: %s", hostport, errtext(e, eb, sizeof eb));
	}
	if ((rc = set_blocking(fd))) {
		close(fd);
		return rc;
	}
	return conn_handshake(ctx, fd, 0, true, timeout_ms, hostport, c);
}

int conn_accept(SSL_CTX *ctx, int fd, int timeout_ms, conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char h[NI_MAXHOST], p[NI_MAXSERV], who[NI_MAXHOST + NI_MAXSERV + 4] = "peer";
	int rc;

	conn_reset(c);
	if (fd < 0)
		return ss_fail(SS_EINVAL, "cannot accept a connection: no socket");
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(who, sizeof who, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
	/* accept4(SOCK_NONBLOCK) on an event loop's listener is likely. */
	if ((rc = set_blocking(fd)))
		return rc;
	/* Like fdopen(): a failed accept leaves fd to the caller, who may keep
	 * it in a table to shutdown() it from elsewhere. */
	return conn_handshake(ctx, fd, 1, false, timeout_ms, who, c);
}

int conn_write(conn *c, const void *p, size_t n)
{
	const uint8_t *q = p;
	size_t done = 0;

	if (!c->ssl)
		return ss_fail(SS_ECLOSED, "write on a closed connection");
	while (done < n) {
		size_t w = 0;
		ERR_clear_error();
		errno = 0;
		/* Blocking and without partial writes, SSL_write_ex returns only
		 * when all of it is sent, as 16 KiB records. */
		if (SSL_write_ex(c->ssl, q + done, MIN(n - done, (size_t)CONN_IO_MAX), &w) <= 0) {
			if (conn_interrupted(c->ssl, 0))
				continue; /* same arguments, as OpenSSL requires */
			return conn_io_error(c, 0, "write to", done, n);
		}
		done += w;
	}
	return 0;
}

int conn_read(conn *c, void *p, size_t n)
{
	uint8_t *q = p;
	size_t got = 0;

	if (!c->ssl)
		return ss_fail(SS_ECLOSED, "read on a closed connection");
	while (got < n) {
		size_t r = 0;
		ERR_clear_error();
		errno = 0;
		if (SSL_read_ex(c->ssl, q + got, MIN(n - got, (size_t)CONN_IO_MAX), &r) <= 0) {
			if (conn_interrupted(c->ssl, 0))
				continue;
			return conn_io_error(c, 0, "read from", got, n);
		}
		got += r;
	}
	return 0;
}

void conn_close(conn *c)
{
	if (c->ssl) {
		/* One close_notify, never waiting: non-blocking so that a peer
		 * which stopped reading cannot hang the close.  The fd comes from
		 * the SSL because a caller that owns the socket may have set
		 * c->fd to -1 to keep it open. */
		int sfd = SSL_get_fd(c->ssl);
		if (sfd >= 0)
			fcntl(sfd, F_SETFL, fcntl(sfd, F_GETFL) | O_NONBLOCK);
		SSL_shutdown(c->ssl);
		ERR_clear_error();
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	conn_reset(c);
}

void conn_set_timeout(conn *c, int ms)
{
	if (c->fd >= 0)
		set_timeouts(c->fd, ms, 1);
}
