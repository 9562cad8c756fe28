/*
 * test_tls — certificates, identities, and real TLS 1.3 connections over
 * 127.0.0.1 between threads.
 *
 * One cluster CA (plus a foreign one) is made per run in a temporary
 * directory.  Connection tests run the server side in a thread that only
 * records what happened; every assertion runs on the main thread, because
 * cmocka's failures longjmp.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "net/tls.h"
#include "util/util.h"

#define ASSERT_MSG_HAS(msg, part)                                                          \
	do {                                                                               \
		if (!strstr((msg), (part)))                                                \
			fail_msg("message \"%s\" does not contain \"%s\"", (msg), (part)); \
	} while (0)

static char root[PATH_MAX];   /* per-run temporary directory */
static char ca_dir[PATH_MAX]; /* the cluster CA (from tls_init_dir) */
static char srv_crt[PATH_MAX], srv_key[PATH_MAX], cli_crt[PATH_MAX], cli_key[PATH_MAX];
static char foreign_dir[PATH_MAX];

static void pathf(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, PATH_MAX, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && n < PATH_MAX);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int file_mode(const char *p)
{
	struct stat st;
	if (stat(p, &st) < 0)
		return -1;
	return (int)(st.st_mode & 07777);
}

static X509 *read_crt(const char *p)
{
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

/* Entries of a directory other than . and .., to catch stray temp files. */
static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int group_setup(void **state)
{
	char out[PATH_MAX];
	snprintf(root, sizeof root, "/tmp/ss_test_tls_XXXXXX");
	if (!mkdtemp(root))
		return -1;
	pathf(ca_dir, "%s/tls", root);
	pathf(foreign_dir, "%s/foreign", root);
	pathf(out, "%s/srv", root);
	if (tls_init_dir(ca_dir) || tls_init_dir(foreign_dir) || tls_issue(ca_dir, ROLE_SERVER, "server1", out, "server"))
		return -1;
	pathf(srv_crt, "%s/server.crt", out);
	pathf(srv_key, "%s/server.key", out);
	pathf(cli_crt, "%s/client.crt", ca_dir);
	pathf(cli_key, "%s/client.key", ca_dir);
	return 0;
}

static int group_teardown(void **state)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* ---- certificates ---- */

static void test_init_creates_four_files_with_modes(void **state)
{
	char dir[PATH_MAX], p[PATH_MAX];
	pathf(dir, "%s/init/deeper", root);
	assert_int_equal(tls_init_dir(dir), 0);
	assert_int_equal(file_mode(dir), 0700);
	pathf(p, "%s/ca.crt", dir);
	assert_int_equal(file_mode(p), 0644);
	X509 *ca = read_crt(p);
	assert_int_equal(X509_check_ca(ca), 1);
	X509_NAME *nm = X509_get_subject_name(ca);
	char cn[64];
	X509_NAME_get_text_by_NID(nm, NID_commonName, cn, sizeof cn);
	assert_string_equal(cn, "syncstore cluster CA");
	int crit = 0;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_true(bc->ca);
	assert_int_equal(crit, 1);
	BASIC_CONSTRAINTS_free(bc);
	assert_true(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN);
	pathf(p, "%s/ca.key", dir);
	assert_int_equal(file_mode(p), 0600);
	pathf(p, "%s/client.key", dir);
	assert_int_equal(file_mode(p), 0600);
	pathf(p, "%s/client.crt", dir);
	assert_int_equal(file_mode(p), 0644);
	tls_peer info;
	assert_int_equal(tls_cert_info(p, &info), 0);
	assert_int_equal(info.role, ROLE_CLIENT);
	assert_string_equal(info.name, "admin");
	X509 *cl = read_crt(p);
	assert_int_equal(X509_verify(cl, X509_get0_pubkey(ca)), 1);
	X509_free(cl);
	X509_free(ca);
	assert_int_equal(count_entries(dir), 4);

	int rc = tls_init_dir(dir);
	assert_int_equal(rc, SS_EEXIST);
	pathf(p, "%s/ca.key already exists: refusing to overwrite", dir);
	assert_string_equal(ss_errmsg(rc), p);
	assert_int_equal(count_entries(dir), 4);
}

static void test_issue_each_role_and_refuse_overwrite(void **state)
{
	static const tls_role roles[] = { ROLE_SERVER, ROLE_TRACKER, ROLE_CLIENT };
	char out[PATH_MAX], p[PATH_MAX];
	pathf(out, "%s/issued", root);
	X509 *ca = read_crt(strcat(strcpy(p, ca_dir), "/ca.crt"));
	for (unsigned i = 0; i < 3; i++) {
		const char *rn = tls_role_name(roles[i]);
		assert_int_equal(tls_role_parse(rn), roles[i]);
		assert_int_equal(tls_issue(ca_dir, roles[i], "node-7", out, rn), 0);
		pathf(p, "%s/%s.key", out, rn);
		assert_int_equal(file_mode(p), 0600);
		pathf(p, "%s/%s.crt", out, rn);
		tls_peer info;
		assert_int_equal(tls_cert_info(p, &info), 0);
		assert_int_equal(info.role, roles[i]);
		assert_string_equal(info.name, "node-7");
		X509 *x = read_crt(p);
		assert_int_equal(X509_verify(x, X509_get0_pubkey(ca)), 1);
		assert_int_equal(X509_check_ca(x), 0);
		/* Every node is both a TLS server and a TLS client. */
		assert_int_equal(X509_get_extended_key_usage(x) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
				 XKU_SSL_SERVER | XKU_SSL_CLIENT);
		X509_free(x);

		int rc = tls_issue(ca_dir, roles[i], "other", out, rn);
		assert_int_equal(rc, SS_EEXIST);
		ASSERT_MSG_HAS(ss_errmsg(rc), "refusing to overwrite");
	}
	X509_free(ca);
	assert_int_equal(count_entries(out), 6);
	assert_int_equal(tls_role_parse("admin"), ROLE_NONE);
	assert_int_equal(tls_issue(ca_dir, ROLE_NONE, "x", out, "none"), SS_EINVAL);
	assert_int_equal(tls_issue(ca_dir, ROLE_SERVER, "", out, "empty"), SS_EINVAL);
	assert_int_equal(tls_issue(ca_dir, ROLE_SERVER, "bad\nname", out, "nl"), SS_EINVAL);
	assert_int_equal(tls_issue(ca_dir, ROLE_SERVER, "x", out, "../escape"), SS_EINVAL);
	assert_int_equal(count_entries(out), 6);
}

/* A --tls directory holding only ca.crt, as handed to most nodes. */
static void make_cert_only_dir(char *dir)
{
	char src[PATH_MAX], dst[PATH_MAX];
	buf b;
	pathf(dir, "%s/certonly", root);
	if (access(dir, F_OK) == 0)
		return;
	assert_int_equal(mkdir_p(dir, 0700), 0);
	pathf(src, "%s/ca.crt", ca_dir);
	pathf(dst, "%s/ca.crt", dir);
	buf_init(&b, 1 << 20);
	assert_int_equal(read_file_small(src, &b), 0);
	assert_int_equal(write_file_atomic(dst, b.p, b.len, 0644), 0);
	buf_free(&b);
}

static void test_issue_without_ca_key(void **state)
{
	char dir[PATH_MAX], out[PATH_MAX], want[PATH_MAX + 80];
	make_cert_only_dir(dir);
	pathf(out, "%s/never", root);
	int rc = tls_issue(dir, ROLE_SERVER, "s", out, "server");
	assert_int_equal(rc, SS_ENOENT);
	snprintf(want, sizeof want, "%s/ca.key not found: the CA key is needed to issue identities", dir);
	assert_string_equal(ss_errmsg(rc), want);
	assert_int_equal(access(out, F_OK), -1);
}

static void test_identity_issues_once_then_reuses(void **state)
{
	char data[PATH_MAX], crt[PATH_MAX], key[PATH_MAX], crt2[PATH_MAX], key2[PATH_MAX];
	uint8_t id1[HASH_LEN], id2[HASH_LEN];
	struct stat st1, st2;
	pathf(data, "%s/data1", root);
	assert_int_equal(tls_identity(ca_dir, data, "server", ROLE_SERVER, "s1", crt, key), 0);
	assert_int_equal(file_mode(key), 0600);
	assert_int_equal(tls_cert_id(crt, id1), 0);
	assert_int_equal(stat(crt, &st1), 0);
	assert_int_equal(tls_identity(ca_dir, data, "server", ROLE_SERVER, "s1", crt2, key2), 0);
	assert_string_equal(crt, crt2);
	assert_string_equal(key, key2);
	assert_int_equal(tls_cert_id(crt2, id2), 0);
	assert_memory_equal(id1, id2, HASH_LEN);
	assert_int_equal(stat(crt2, &st2), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);

	/* The same files asked for as another role: refused, clearly. */
	int rc = tls_identity(ca_dir, data, "server", ROLE_TRACKER, "s1", crt2, key2);
	assert_int_equal(rc, SS_EAUTH);
	ASSERT_MSG_HAS(ss_errmsg(rc), "is a server identity, not a tracker one");

	/* A lone key (a crash between the two files) is named, not reused. */
	assert_int_equal(unlink(crt), 0);
	rc = tls_identity(ca_dir, data, "server", ROLE_SERVER, "s1", crt2, key2);
	assert_int_equal(rc, SS_ENOENT);
	ASSERT_MSG_HAS(ss_errmsg(rc), "server.key exists without");
}

static void test_identity_without_ca_key_names_command(void **state)
{
	char dir[PATH_MAX], data[PATH_MAX], crt[PATH_MAX], key[PATH_MAX], want[5 * PATH_MAX];
	make_cert_only_dir(dir);
	pathf(data, "%s/data2", root);
	int rc = tls_identity(dir, data, "server", ROLE_SERVER, "s2", crt, key);
	assert_int_equal(rc, SS_ENOENT);
	snprintf(want, sizeof want,
		 "no identity in %s and no CA key in %s: issue one with the CA key, "
		 "`syncstore cert issue --tls CA_DIR --role server --name s2 --out %s`",
		 data, dir, data);
	assert_string_equal(ss_errmsg(rc), want);
	assert_int_equal(access(data, F_OK), -1);
}

/* `cert issue --name NAME --out DATA` writes DATA/NAME.crt: a server finds it. */
static void test_identity_issued_under_its_own_name_is_found(void **state)
{
	char data[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	pathf(data, "%s/data3", root);
	assert_int_equal(tls_issue(ca_dir, ROLE_SERVER, "alpha", data, "alpha"), 0);
	assert_int_equal(tls_identity(ca_dir, data, "node", ROLE_SERVER, "ignored", crt, key), 0);
	ASSERT_MSG_HAS(crt, "/alpha.crt");
	ASSERT_MSG_HAS(key, "/alpha.key");
	/* Nothing new was issued under the default name. */
	char node[PATH_MAX];
	pathf(node, "%s/node.crt", data);
	assert_int_equal(access(node, F_OK), -1);
}

static void test_ctx_refuses_mismatched_key(void **state)
{
	assert_null(tls_ctx_new(ca_dir, srv_crt, cli_key, 1));
	ASSERT_MSG_HAS(ss_errmsg(SS_ETLS), "does not match");
	assert_null(tls_ctx_new(ca_dir, "/nonexistent/x.crt", cli_key, 1));
	ASSERT_MSG_HAS(ss_errmsg(SS_ETLS), "cannot load certificate /nonexistent/x.crt");
}

/* ---- addresses ---- */

static void test_hostport_parse(void **state)
{
	char h[64], p[8];
	assert_int_equal(hostport_parse("127.0.0.1:7001", h, sizeof h, p, sizeof p), 0);
	assert_string_equal(h, "127.0.0.1");
	assert_string_equal(p, "7001");
	assert_int_equal(hostport_parse("[::1]:80", h, sizeof h, p, sizeof p), 0);
	assert_string_equal(h, "::1");
	assert_string_equal(p, "80");
	assert_int_equal(hostport_parse("localhost:0", h, sizeof h, p, sizeof p), 0);
	assert_string_equal(h, "localhost");
	static const char *const bad[] = { "", "7001", "host:", ":7001", "::1:80", "[::1]80", "h:65536",
					   "h:12a", "h:-1", "[::1:80" };
	for (unsigned i = 0; i < ARRAY_LEN(bad); i++)
		if (hostport_parse(bad[i], h, sizeof h, p, sizeof p) != SS_EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
	assert_int_equal(hostport_parse("abcdefgh:1", h, 4, p, sizeof p), SS_ETOOBIG);
}

/* ---- connections ---- */

enum srv_action { SRV_ECHO, SRV_CLOSE, SRV_HALF, SRV_WAIT };

typedef struct srv {
	SSL_CTX *ctx;
	int lfd;
	enum srv_action action;
	size_t bulk; /* SRV_ECHO: bytes echoed after the greeting */
	int rc;      /* conn_accept's result */
	char msg[512];
	tls_peer peer;
	int io_rc;
	bool fd_open_after_fail;
	bool keep_fd;      /* close as a caller owning the socket does */
	bool fd_open_kept; /* ...and the socket was still open after */
	int wake[2]; /* SRV_WAIT: closes when the pipe is written */
} srv;

static void *srv_main(void *arg)
{
	srv *s = arg;
	conn c;
	/* Non-blocking, as an event loop's accept4 would hand it over. */
	int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	s->rc = conn_accept(s->ctx, fd, 5000, &c);
	if (s->rc) {
		snprintf(s->msg, sizeof s->msg, "%s", ss_errmsg(s->rc));
		/* A failed accept leaves the socket to us. */
		s->fd_open_after_fail = fcntl(fd, F_GETFD) >= 0;
		close(fd);
		return NULL;
	}
	s->peer = c.peer;
	switch (s->action) {
	case SRV_ECHO: {
		char hello[5];
		uint8_t *b = xmalloc(s->bulk ? s->bulk : 1);
		if (!(s->io_rc = conn_read(&c, hello, 5)) && !(s->io_rc = conn_write(&c, "world", 5)) &&
		    !(s->io_rc = conn_read(&c, b, s->bulk)))
			s->io_rc = conn_write(&c, b, s->bulk);
		free(b);
		break;
	}
	case SRV_CLOSE:
		break;
	case SRV_HALF:
		s->io_rc = conn_write(&c, "0123456789", 10);
		break;
	case SRV_WAIT: {
		char x;
		if (read(s->wake[0], &x, 1) < 0)
			s->io_rc = -1;
		break;
	}
	}
	if (s->keep_fd) {
		c.fd = -1;
		conn_close(&c); /* still sends close_notify */
		s->fd_open_kept = fcntl(fd, F_GETFD) >= 0;
		close(fd);
		return NULL;
	}
	conn_close(&c);
	return NULL;
}

static int listen_any(char *hp, size_t n)
{
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	int lfd = tcp_listen("127.0.0.1:0", 8);
	assert_true(lfd >= 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
	snprintf(hp, n, "127.0.0.1:%u", ntohs(a.sin_port));
	return lfd;
}

static void srv_start(srv *s, pthread_t *t, enum srv_action action, char *hp, size_t hpn)
{
	memset(s, 0, sizeof *s);
	s->ctx = tls_ctx_new(ca_dir, srv_crt, srv_key, 1);
	if (!s->ctx)
		fail_msg("%s", ss_errmsg(SS_ETLS));
	s->lfd = listen_any(hp, hpn);
	s->action = action;
	s->wake[0] = s->wake[1] = -1;
	if (action == SRV_WAIT)
		assert_int_equal(pipe(s->wake), 0);
}

static void srv_finish(srv *s, pthread_t t)
{
	pthread_join(t, NULL);
	close(s->lfd);
	if (s->wake[0] >= 0) {
		close(s->wake[0]);
		close(s->wake[1]);
	}
	SSL_CTX_free(s->ctx);
}

static SSL_CTX *client_ctx(void)
{
	SSL_CTX *ctx = tls_ctx_new(ca_dir, cli_crt, cli_key, 0);
	if (!ctx)
		fail_msg("%s", ss_errmsg(SS_ETLS));
	return ctx;
}

static void test_handshake_exchange_and_peer_ids(void **state)
{
	char hp[64], got[5];
	uint8_t srv_id[HASH_LEN], cli_id[HASH_LEN];
	srv s;
	pthread_t t;
	conn c;
	srv_start(&s, &t, SRV_ECHO, hp, sizeof hp);
	s.bulk = 3 * 1024 * 1024 + 12345; /* many records, not a multiple of 16 KiB */
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
	SSL_CTX *ctx = client_ctx();
	int rc = conn_connect(ctx, hp, 5000, &c);
	if (rc)
		fail_msg("%s", ss_errmsg(rc));
	assert_int_equal(c.peer.role, ROLE_SERVER);
	assert_string_equal(c.peer.name, "server1");
	assert_int_equal(tls_cert_id(srv_crt, srv_id), 0);
	assert_memory_equal(c.peer.id, srv_id, HASH_LEN);
	assert_string_equal(SSL_get_version(c.ssl), "TLSv1.3");

	uint8_t *out = xmalloc(s.bulk), *in = xmalloc(s.bulk);
	for (size_t i = 0; i < s.bulk; i++)
		out[i] = (uint8_t)(i * 2654435761u >> 13);
	assert_int_equal(conn_write(&c, "hello", 5), 0);
	assert_int_equal(conn_read(&c, got, 5), 0);
	assert_memory_equal(got, "world", 5);
	assert_int_equal(conn_write(&c, out, s.bulk), 0);
	assert_int_equal(conn_read(&c, in, s.bulk), 0);
	assert_memory_equal(in, out, s.bulk);
	/* The server closed after echoing: the next read sees a clean EOF. */
	assert_int_equal(conn_read(&c, got, 1), SS_ECLOSED);
	conn_close(&c);
	conn_close(&c); /* idempotent */
	srv_finish(&s, t);
	free(out);
	free(in);
	SSL_CTX_free(ctx);

	assert_int_equal(s.rc, 0);
	assert_int_equal(s.io_rc, 0);
	assert_int_equal(s.peer.role, ROLE_CLIENT);
	assert_string_equal(s.peer.name, "admin");
	assert_int_equal(tls_cert_id(cli_crt, cli_id), 0);
	assert_memory_equal(s.peer.id, cli_id, HASH_LEN);
}

static void test_foreign_ca_client_refused(void **state)
{
	char hp[64], crt[PATH_MAX], key[PATH_MAX], b[1];
	srv s;
	pthread_t t;
	conn c;
	srv_start(&s, &t, SRV_ECHO, hp, sizeof hp);
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
	/* Trusts our CA (so the client side is happy) but presents a
	 * certificate from another cluster's CA. */
	pathf(crt, "%s/client.crt", foreign_dir);
	pathf(key, "%s/client.key", foreign_dir);
	SSL_CTX *ctx = tls_ctx_new(ca_dir, crt, key, 0);
	assert_non_null(ctx);
	int rc = conn_connect(ctx, hp, 5000, &c);
	/* In TLS 1.3 the client finishes before the server judges its
	 * certificate, so the refusal may only show on the first read. */
	if (rc == 0) {
		rc = conn_read(&c, b, 1);
		assert_int_not_equal(rc, 0);
		ASSERT_MSG_HAS(ss_errmsg(rc), "alert");
	}
	conn_close(&c);
	srv_finish(&s, t);
	SSL_CTX_free(ctx);
	assert_int_equal(s.rc, SS_EAUTH);
	ASSERT_MSG_HAS(s.msg, "certificate verify failed");
	assert_true(s.fd_open_after_fail);
}

static void test_tls12_refused(void **state)
{
	char hp[64], ca[PATH_MAX];
	srv s;
	pthread_t t;
	srv_start(&s, &t, SRV_ECHO, hp, sizeof hp);
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);

	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	pathf(ca, "%s/ca.crt", ca_dir);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
	assert_int_equal(SSL_CTX_use_certificate_file(ctx, cli_crt, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, cli_key, SSL_FILETYPE_PEM), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	a.sin_port = htons((uint16_t)atoi(strchr(hp, ':') + 1));
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	assert_true(SSL_connect(ssl) <= 0);
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	srv_finish(&s, t);
	assert_int_equal(s.rc, SS_ETLS);
	ASSERT_MSG_HAS(s.msg, "tls handshake with 127.0.0.1:");
	ASSERT_MSG_HAS(s.msg, "unsupported protocol");
}

static void test_read_closed_after_peer_close(void **state)
{
	char hp[64], b[4];
	srv s;
	pthread_t t;
	conn c;
	for (int keep = 0; keep < 2; keep++) {
		srv_start(&s, &t, SRV_CLOSE, hp, sizeof hp);
		s.keep_fd = keep;
		assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
		SSL_CTX *ctx = client_ctx();
		assert_int_equal(conn_connect(ctx, hp, 5000, &c), 0);
		int rc = conn_read(&c, b, sizeof b);
		assert_int_equal(rc, SS_ECLOSED);
		ASSERT_MSG_HAS(ss_errmsg(rc), "connection closed by server1 (127.0.0.1:");
		conn_close(&c);
		srv_finish(&s, t);
		SSL_CTX_free(ctx);
		assert_int_equal(s.rc, 0);
		assert_int_equal(s.fd_open_kept, keep);
	}
}

static void test_read_closed_mid_message_says_how_much(void **state)
{
	char hp[64], b[20];
	srv s;
	pthread_t t;
	conn c;
	srv_start(&s, &t, SRV_HALF, hp, sizeof hp);
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
	SSL_CTX *ctx = client_ctx();
	assert_int_equal(conn_connect(ctx, hp, 5000, &c), 0);
	int rc = conn_read(&c, b, sizeof b);
	assert_int_equal(rc, SS_ECLOSED);
	ASSERT_MSG_HAS(ss_errmsg(rc), "after 10 of 20 bytes");
	assert_memory_equal(b, "0123456789", 10);
	conn_close(&c);
	srv_finish(&s, t);
	SSL_CTX_free(ctx);
	assert_int_equal(s.io_rc, 0);
}

static void test_read_timeout(void **state)
{
	char hp[64], b[4];
	srv s;
	pthread_t t;
	conn c;
	srv_start(&s, &t, SRV_WAIT, hp, sizeof hp);
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
	SSL_CTX *ctx = client_ctx();
	assert_int_equal(conn_connect(ctx, hp, 5000, &c), 0);
	conn_set_timeout(&c, 100);
	double t0 = now_mono();
	int rc = conn_read(&c, b, sizeof b);
	assert_int_equal(rc, SS_ETIMEDOUT);
	assert_true(now_mono() - t0 >= 0.09);
	ASSERT_MSG_HAS(ss_errmsg(rc), "timed out");
	/* A timeout is not fatal: the connection still closes cleanly. */
	assert_int_equal(write(s.wake[1], "x", 1), 1);
	conn_set_timeout(&c, 0);
	assert_int_equal(conn_read(&c, b, sizeof b), SS_ECLOSED);
	conn_close(&c);
	srv_finish(&s, t);
	SSL_CTX_free(ctx);
}

static void on_usr1(int sig)
{
}

typedef struct poker {
	pthread_t target;
	int wake_fd;
} poker;

/* Interrupts the target's blocking read with signals, then lets the
 * server close. */
static void *poker_main(void *arg)
{
	poker *p = arg;
	for (int i = 0; i < 5; i++) {
		usleep(20 * 1000);
		pthread_kill(p->target, SIGUSR1);
	}
	usleep(20 * 1000);
	if (write(p->wake_fd, "x", 1) != 1)
		abort();
	return NULL;
}

static void test_signal_during_read_is_not_a_timeout(void **state)
{
	char hp[64], b[4];
	struct sigaction sa = { .sa_handler = on_usr1 }, old;
	srv s;
	pthread_t t, pt;
	conn c;
	/* No SA_RESTART, and a receive timeout set: recv() returns EINTR. */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	srv_start(&s, &t, SRV_WAIT, hp, sizeof hp);
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
	SSL_CTX *ctx = client_ctx();
	assert_int_equal(conn_connect(ctx, hp, 5000, &c), 0);
	conn_set_timeout(&c, 5000);
	poker p = { .target = pthread_self(), .wake_fd = s.wake[1] };
	assert_int_equal(pthread_create(&pt, NULL, poker_main, &p), 0);
	int rc = conn_read(&c, b, sizeof b);
	pthread_join(pt, NULL);
	assert_int_equal(rc, SS_ECLOSED);
	conn_close(&c);
	srv_finish(&s, t);
	SSL_CTX_free(ctx);
	sigaction(SIGUSR1, &old, NULL);
}

static void test_connect_refused_message(void **state)
{
	char hp[64];
	conn c;
	int lfd = listen_any(hp, sizeof hp);
	close(lfd); /* the port is now (almost certainly) closed */
	SSL_CTX *ctx = client_ctx();
	int rc = conn_connect(ctx, hp, 2000, &c);
	assert_true(rc < 0);
	char want[128];
	snprintf(want, sizeof want, "cannot connect to %s: connection refused", hp);
	assert_string_equal(ss_errmsg(rc), want);
	assert_int_equal(c.fd, -1);
	assert_null(c.ssl);
	conn_close(&c);
	SSL_CTX_free(ctx);
}

static void test_write_after_peer_gone_is_closed(void **state)
{
	char hp[64];
	srv s;
	pthread_t t;
	conn c;
	srv_start(&s, &t, SRV_CLOSE, hp, sizeof hp);
	assert_int_equal(pthread_create(&t, NULL, srv_main, &s), 0);
	SSL_CTX *ctx = client_ctx();
	assert_int_equal(conn_connect(ctx, hp, 5000, &c), 0);
	srv_finish(&s, t);
	/* Keep writing until the RST comes back: EPIPE/ECONNRESET, never a
	 * signal (SIGPIPE is ignored, as in the program). */
	size_t n = 1 << 20;
	uint8_t *b = xcalloc(1, n);
	int rc = 0;
	for (int i = 0; i < 64 && !rc; i++)
		rc = conn_write(&c, b, n);
	free(b);
	assert_int_equal(rc, SS_ECLOSED);
	conn_close(&c);
	SSL_CTX_free(ctx);
}

int main(void)
{
	/* What the program's main does: a write to a vanished peer must be an
	 * error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	umask(022);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_creates_four_files_with_modes),
		cmocka_unit_test(test_issue_each_role_and_refuse_overwrite),
		cmocka_unit_test(test_issue_without_ca_key),
		cmocka_unit_test(test_identity_issues_once_then_reuses),
		cmocka_unit_test(test_identity_without_ca_key_names_command),
		cmocka_unit_test(test_identity_issued_under_its_own_name_is_found),
		cmocka_unit_test(test_ctx_refuses_mismatched_key),
		cmocka_unit_test(test_hostport_parse),
		cmocka_unit_test(test_handshake_exchange_and_peer_ids),
		cmocka_unit_test(test_foreign_ca_client_refused),
		cmocka_unit_test(test_tls12_refused),
		cmocka_unit_test(test_read_closed_after_peer_close),
		cmocka_unit_test(test_read_closed_mid_message_says_how_much),
		cmocka_unit_test(test_read_timeout),
		cmocka_unit_test(test_signal_during_read_is_not_a_timeout),
		cmocka_unit_test(test_connect_refused_message),
		cmocka_unit_test(test_write_after_peer_gone_is_closed),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
