/*
 * tls — identities, certificates and TLS 1.3 connections with mutual auth.
 *
 * Every node (server, tracker, client) has a certificate signed by the
 * cluster CA.  The role is carried in the subject's organizationalUnitName
 * ("server", "tracker", "client"), the name in its commonName.  A node's id
 * is the SHA-256 of its certificate's DER SubjectPublicKeyInfo.  Host names
 * and IP SANs are not relied on (everything may run on 127.0.0.1).
 *
 * Files (PEM): ca.crt, ca.key (0600), <name>.crt, <name>.key (0600).
 * Keys are ECDSA P-256; certificates signed with SHA-256, valid 10 years.
 */
#ifndef SS_TLS_H
#define SS_TLS_H

#include <openssl/ssl.h>
#include <stdint.h>

#include "../chunk/chunk.h"

typedef enum { ROLE_NONE = 0, ROLE_SERVER, ROLE_TRACKER, ROLE_CLIENT } tls_role;
const char *tls_role_name(tls_role r);
tls_role tls_role_parse(const char *s); /* ROLE_NONE if unknown */

/* syncstore init DIR: CA + admin client identity; refuses to overwrite. */
int tls_init_dir(const char *dir);
/* Issue an identity signed by the CA in ca_dir: writes OUT/<base>.crt and
 * OUT/<base>.key (key 0600), creating OUT if needed; refuses to overwrite. */
int tls_issue(const char *ca_dir, tls_role role, const char *name, const char *outdir, const char *base);

/*
 * Find or create this node's identity: if idir/<base>.crt and .key exist use
 * them; else if ca_dir has ca.key issue one (role, name) into idir; else fail
 * with a message naming the `syncstore cert issue` command to run.
 * Fills crt_path/key_path (PATH_MAX each).
 */
int tls_identity(const char *ca_dir, const char *idir, const char *base, tls_role role, const char *name,
		 char *crt_path, char *key_path);

/* A TLS 1.3-only context that requires and verifies a peer certificate from
 * ca_dir/ca.crt, presenting crt/key.  NULL on failure, with the reason in
 * ss_errmsg(SS_ETLS). */
SSL_CTX *tls_ctx_new(const char *ca_dir, const char *crt, const char *key, int is_server);

/* After a completed handshake: the peer's role and node id. */
typedef struct tls_peer {
	tls_role role;
	uint8_t id[HASH_LEN];
	char name[64];
} tls_peer;
int tls_peer_info(SSL *ssl, tls_peer *out);
/* Node id of a local certificate file. */
int tls_cert_id(const char *crt_path, uint8_t id[HASH_LEN]);
/* Role, id and name of a certificate in hand or in a file (same rules as
 * tls_peer_info: role from OU, ROLE_NONE if absent or unknown). */
int tls_x509_info(X509 *x, tls_peer *out);
int tls_cert_info(const char *crt_path, tls_peer *out);
/* ss_fail() with ": <openssl reason>" appended; empties this thread's
 * OpenSSL error queue. */
int tls_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Blocking connection over a TCP socket: connect/accept + handshake with a
 * timeout, then full reads and writes.  conn_read returns SS_ECLOSED on a
 * clean EOF.
 *
 * timeout_ms <= 0 means no timeout.  On failure *c is left closed (fd -1),
 * so conn_close(c) is always safe.  conn_accept, like fdopen(): on success
 * the conn owns fd (conn_close closes it, unless the caller set c->fd = -1
 * first to keep it); on failure fd stays open and the caller's.  The caller
 * checks c->peer.role (and pins c->peer.id) — any certificate of the
 * cluster CA gets through.
 *
 * A write to a peer that has gone raises SIGPIPE inside OpenSSL (it cannot
 * pass MSG_NOSIGNAL): the program must ignore SIGPIPE (main does
 * signal(SIGPIPE, SIG_IGN)); this module then sees EPIPE → SS_ECLOSED.
 * After SS_ETIMEDOUT from conn_read the position in the stream is lost if
 * part of the n bytes had arrived; close the connection.
 *
 * One thread at a time per conn: OpenSSL does not allow SSL_read and
 * SSL_write on one SSL from two threads at once (a read may write, e.g. a
 * key update).  Another thread may only shutdown(c->fd, SHUT_RDWR) to wake
 * a blocked one.  Records are read ahead, so bytes may wait inside OpenSSL:
 * poll() on c->fd alone does not tell whether a read would block (check
 * SSL_has_pending(c->ssl) first).
 */
typedef struct conn {
	int fd;
	SSL *ssl;
	tls_peer peer;
} conn;

int conn_connect(SSL_CTX *ctx, const char *hostport, int timeout_ms, conn *c);
int conn_accept(SSL_CTX *ctx, int fd, int timeout_ms, conn *c);
int conn_write(conn *c, const void *p, size_t n);
int conn_read(conn *c, void *p, size_t n);
/* Sends close_notify (SSL_shutdown) then closes the socket. */
void conn_close(conn *c);
/* Set a receive timeout on the socket (0 = none). */
void conn_set_timeout(conn *c, int ms);

/* Parse "HOST:PORT" (IPv4 literal or name) or "[IPv6]:PORT" into host/port. */
int hostport_parse(const char *s, char *host, size_t hostsz, char *port, size_t portsz);
/* A listening TCP socket on HOST:PORT (SO_REUSEADDR, CLOEXEC): the fd, or a
 * negative SS_E* code.  PORT 0 picks a free port (see getsockname). */
int tcp_listen(const char *hostport, int backlog);

#endif
