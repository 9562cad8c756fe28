/*
 * tls_bench — one TLS 1.3 stream over 127.0.0.1 through conn_write/conn_read.
 *
 *   tls_bench [MIB_TOTAL [MIB_PER_WRITE]]     (defaults: 1024 and 1)
 *
 * Makes a throw-away CA and two identities in a temporary directory, then a
 * writer thread sends MIB_TOTAL MiB in MIB_PER_WRITE MiB conn_write calls
 * while the main thread reads them back with conn_read of the same size and
 * checks a few bytes of every block.  Prints throughput (GB/s, 10^9 bytes)
 * from the first write until the last byte is read, and CPU time per GB for
 * both ends together (they share the machine, as a real hop's two ends
 * would not).
 */
#include "net/tls.h"
#include "util/util.h"

#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct writer {
	SSL_CTX *ctx;
	char hp[64];
	size_t total, block;
	int rc;
	char msg[512];
} writer;

static void *writer_main(void *arg)
{
	writer *w = arg;
	uint8_t *b = xmalloc(w->block);
	conn c;
	memset(b, 0x5a, w->block);
	if ((w->rc = conn_connect(w->ctx, w->hp, 5000, &c)))
		goto out;
	for (size_t sent = 0; sent < w->total && !w->rc; sent += w->block) {
		memcpy(b, &sent, sizeof sent); /* lets the reader check order */
		w->rc = conn_write(&c, b, w->block);
	}
	if (!w->rc) {
		char ack;
		w->rc = conn_read(&c, &ack, 1);
	}
	conn_close(&c);
out:
	if (w->rc)
		snprintf(w->msg, sizeof w->msg, "%s", ss_errmsg(w->rc));
	free(b);
	return NULL;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static double cpu_secs(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static int die(int rc)
{
	fprintf(stderr, "tls_bench: %s\n", ss_errmsg(rc));
	return 1;
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/tls_bench_XXXXXX", ca[64], crt[PATH_MAX], key[PATH_MAX], ccrt[PATH_MAX], ckey[PATH_MAX];
	size_t mib_total = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	size_t mib_block = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
	writer w = { 0 };
	pthread_t t;
	conn c;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	if (!mib_total || !mib_block || mib_total % mib_block) {
		fprintf(stderr, "usage: tls_bench [MIB_TOTAL [MIB_PER_WRITE]] (total a multiple of the write size)\n");
		return 2;
	}
	if (!mkdtemp(dir))
		return die(ss_fail_errno("cannot create %s", dir));
	snprintf(ca, sizeof ca, "%s/ca", dir);
	snprintf(crt, sizeof crt, "%s/server.crt", ca);
	snprintf(key, sizeof key, "%s/server.key", ca);
	snprintf(ccrt, sizeof ccrt, "%s/client.crt", ca);
	snprintf(ckey, sizeof ckey, "%s/client.key", ca);
	if ((rc = tls_init_dir(ca)) || (rc = tls_issue(ca, ROLE_SERVER, "bench", ca, "server")))
		return die(rc);
	SSL_CTX *sctx = tls_ctx_new(ca, crt, key, 1);
	w.ctx = tls_ctx_new(ca, ccrt, ckey, 0);
	if (!sctx || !w.ctx)
		return die(SS_ETLS);
	nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);

	int lfd = tcp_listen("127.0.0.1:0", 4);
	if (lfd < 0)
		return die(lfd);
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	getsockname(lfd, (struct sockaddr *)&a, &al);
	snprintf(w.hp, sizeof w.hp, "127.0.0.1:%u", ntohs(a.sin_port));
	w.block = mib_block << 20;
	w.total = mib_total << 20;
	pthread_create(&t, NULL, writer_main, &w);
	if ((rc = conn_accept(sctx, accept(lfd, NULL, NULL), 5000, &c)))
		return die(rc);

	uint8_t *b = xmalloc(w.block);
	double t0 = now_mono(), c0 = cpu_secs();
	for (size_t got = 0; got < w.total; got += w.block) {
		size_t seq;
		if ((rc = conn_read(&c, b, w.block)))
			return die(rc);
		memcpy(&seq, b, sizeof seq);
		SS_ASSERT(seq == got && b[w.block - 1] == 0x5a);
	}
	double secs = now_mono() - t0, cpu = cpu_secs() - c0;
	rc = conn_write(&c, "k", 1);
	pthread_join(t, NULL);
	if (w.rc) {
		fprintf(stderr, "tls_bench: writer: %s\n", w.msg);
		return 1;
	}
	const char *cipher = SSL_get_cipher_name(c.ssl);
	printf("%zu MiB in %zu MiB writes, %s: %.2f s, %.2f GB/s, %.2f cpu-s/GB (both ends)\n", mib_total, mib_block,
	       cipher, secs, (double)w.total / secs / 1e9, cpu / ((double)w.total / 1e9));
	conn_close(&c);
	close(lfd);
	free(b);
	SSL_CTX_free(sctx);
	SSL_CTX_free(w.ctx);
	return rc ? die(rc) : 0;
}
