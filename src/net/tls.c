/*
 * tls.c — TLS 1.3 contexts with mutual authentication by the cluster CA.
 *
 * Both sides present a certificate and require one from the peer; the only
 * trust anchor is <ca_dir>/ca.crt (the system store is never loaded), chains
 * are at most CA → node, and host names are not checked: a node is known by
 * its role and id, which the caller checks after the handshake.
 *
 * Costs and limits: no session resumption (tickets and the session cache
 * are off) — every connection does a full ECDHE + ECDSA handshake, about a
 * millisecond of CPU; connections are long-lived so it does not matter, and
 * it keeps every handshake checking the peer's certificate against the CA.
 */
#include "tls.h"
#include "../util/util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509.h>

/*
 * Read-ahead lets one recv() take a record's header with its body (without
 * it OpenSSL reads the 5-byte header alone: two syscalls per 16 KiB record)
 * and, when the reader lags, several records at once.  The buffer is held
 * per connection, hence 64 KiB and not more: measured with
 * bench/tls_bench.c, larger buffers (and coalescing writes through a buffer
 * BIO, 6x fewer syscalls) changed neither CPU per GB nor throughput beyond
 * the noise.  Because of read-ahead, data may wait inside OpenSSL: never
 * poll() c->fd to ask whether a conn has data; use SSL_has_pending too.
 */
#define TLS_READ_BUF (64 * 1024)

/* AES-128-GCM first: it is ~9% cheaper than AES-256-GCM here (openssl
 * speed, 16 KiB: 3.0 vs 2.8 GB/s on one core) and bulk chunk data makes the
 * cipher a large cost of every hop.  Both ends are ours, so our order is the
 * one used; all three TLS 1.3 suites stay allowed. */
#define TLS_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* A missing file gives OpenSSL's "system lib"; say which file instead. */
static int check_readable(const char *what, const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return ss_fail(SS_ETLS, "cannot load %s %s: %s", what, path, strerror(errno));
	return 0;
}

SSL_CTX *tls_ctx_new(const char *ca_dir, const char *crt, const char *key, int is_server)
{
	char ca[PATH_MAX];
	SSL_CTX *ctx;

	ERR_clear_error();
	if (snprintf(ca, sizeof ca, "%s/ca.crt", ca_dir) >= (int)sizeof ca) {
		ss_fail(SS_ETLS, "path too long: %s/ca.crt", ca_dir);
		return NULL;
	}
	if (check_readable("ca certificate", ca) || check_readable("certificate", crt) || check_readable("key", key))
		return NULL;
	ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		tls_fail(SS_ETLS, "cannot create a tls context");
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS_SUITES)) {
		tls_fail(SS_ETLS, "cannot restrict the tls context to tls 1.3");
		goto fail;
	}
	if (!SSL_CTX_load_verify_locations(ctx, ca, NULL)) {
		tls_fail(SS_ETLS, "cannot load ca certificate %s", ca);
		goto fail;
	}
	if (is_server) {
		/* Tells clients which CA to pick a certificate for. */
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
		if (!names) {
			tls_fail(SS_ETLS, "cannot load ca certificate %s", ca);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1) {
		tls_fail(SS_ETLS, "cannot load certificate %s", crt);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		/* Loading already compares the key with the certificate. */
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
			ERR_clear_error();
			ss_fail(SS_ETLS, "key %s does not match certificate %s", key, crt);
		} else {
			tls_fail(SS_ETLS, "cannot load key %s", key);
		}
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_fail(SS_ETLS, "key %s does not match certificate %s", key, crt);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_verify_depth(ctx, 2);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (is_server)
		SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUF);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int tls_peer_info(SSL *ssl, tls_peer *out)
{
	X509 *x = SSL_get0_peer_certificate(ssl);
	memset(out, 0, sizeof *out);
	if (!x)
		return ss_fail(SS_EAUTH, "peer presented no certificate");
	/* VERIFY_PEER already failed the handshake otherwise; checked again
	 * because a wrong id here would let anyone in. */
	long v = SSL_get_verify_result(ssl);
	if (v != X509_V_OK)
		return ss_fail(SS_EAUTH, "peer certificate not verified: %s", X509_verify_cert_error_string(v));
	return tls_x509_info(x, out);
}
