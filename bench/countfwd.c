/*
 * countfwd — a counting TCP forwarder for the benchmarks (bench/run.sh).
 *
 *   countfwd LISTEN_PORT TARGET_HOST:PORT STATUS_FILE
 *
 * Listens on 127.0.0.1:LISTEN_PORT (0 = any free port), connects every
 * accepted connection to TARGET and copies bytes both ways with splice(2)
 * through a 1 MiB pipe (no copy through user space, so the forwarder is not
 * the bottleneck), with TCP_NODELAY on both legs.  Prints "port N" on stdout
 * once listening.  Whenever a connection opens or finishes (both directions
 * at EOF, or an error) it rewrites STATUS_FILE atomically with one line:
 *
 *   closed C active A up U down D
 *
 * up = bytes client -> target, down = bytes target -> client, totals over
 * the connections that have finished.  A benchmark reads the file before a
 * run, and after the client exits waits until active is 0 and closed has
 * grown, then takes the difference.  SIGTERM/SIGINT end it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_SZ (1 << 20)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t tot_up, tot_down, n_closed, n_active;
static const char *status_path;
static struct addrinfo *target;

static void write_status_locked(void)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", status_path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "closed %llu active %llu up %llu down %llu\n", (unsigned long long)n_closed,
		(unsigned long long)n_active, (unsigned long long)tot_up, (unsigned long long)tot_down);
	if (fclose(f) == 0)
		rename(tmp, status_path);
}

typedef struct pair {
	int a, b; /* a = client side, b = target side */
	pthread_mutex_t mu;
	int done; /* directions finished */
	uint64_t up, down;
} pair;

typedef struct dir {
	pair *p;
	int src, dst, upstream;
} dir;

static void pair_finish(pair *p)
{
	close(p->a);
	close(p->b);
	pthread_mutex_lock(&mu);
	tot_up += p->up;
	tot_down += p->down;
	n_closed++;
	n_active--;
	write_status_locked();
	pthread_mutex_unlock(&mu);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* Copy src -> dst until EOF or error; returns bytes carried, *err set on error. */
static uint64_t pump(int src, int dst, int *err)
{
	int pp[2];
	uint64_t total = 0;
	*err = 0;
	if (pipe2(pp, O_CLOEXEC) != 0) {
		*err = 1;
		return 0;
	}
	(void)fcntl(pp[1], F_SETPIPE_SZ, PIPE_SZ);
	for (;;) {
		ssize_t n = splice(src, NULL, pp[1], NULL, PIPE_SZ, SPLICE_F_MOVE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			*err = n < 0;
			break;
		}
		ssize_t left = n;
		while (left > 0) {
			ssize_t m = splice(pp[0], NULL, dst, NULL, (size_t)left, SPLICE_F_MOVE);
			if (m < 0 && errno == EINTR)
				continue;
			if (m <= 0) {
				*err = 1;
				goto out;
			}
			left -= m;
			total += (uint64_t)m;
		}
	}
out:
	close(pp[0]);
	close(pp[1]);
	return total;
}

static void *dir_main(void *arg)
{
	dir *d = arg;
	pair *p = d->p;
	int err;
	uint64_t n = pump(d->src, d->dst, &err);
	if (err) {
		shutdown(d->src, SHUT_RDWR);
		shutdown(d->dst, SHUT_RDWR);
	} else {
		shutdown(d->dst, SHUT_WR); /* pass the FIN on */
	}
	pthread_mutex_lock(&p->mu);
	if (d->upstream)
		p->up = n;
	else
		p->down = n;
	int last = ++p->done == 2;
	pthread_mutex_unlock(&p->mu);
	free(d);
	if (last)
		pair_finish(p);
	return NULL;
}

static void start_dir(pair *p, int src, int dst, int upstream)
{
	dir *d = calloc(1, sizeof *d);
	pthread_t t;
	pthread_attr_t attr;
	if (!d)
		abort();
	d->p = p;
	d->src = src;
	d->dst = dst;
	d->upstream = upstream;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, dir_main, d) != 0)
		abort();
	pthread_attr_destroy(&attr);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s LISTEN_PORT TARGET_HOST:PORT STATUS_FILE\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	status_path = argv[3];
	char host[256];
	const char *colon = strrchr(argv[2], ':');
	if (!colon || (size_t)(colon - argv[2]) >= sizeof host) {
		fprintf(stderr, "countfwd: bad target %s\n", argv[2]);
		return 2;
	}
	memcpy(host, argv[2], (size_t)(colon - argv[2]));
	host[colon - argv[2]] = 0;
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	if (getaddrinfo(host, colon + 1, &hints, &target) != 0) {
		fprintf(stderr, "countfwd: cannot resolve %s\n", argv[2]);
		return 1;
	}
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 128) != 0) {
		perror("countfwd: bind/listen");
		return 1;
	}
	socklen_t sl = sizeof sa;
	getsockname(ls, (struct sockaddr *)&sa, &sl);
	pthread_mutex_lock(&mu);
	write_status_locked();
	pthread_mutex_unlock(&mu);
	printf("port %u\n", ntohs(sa.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("countfwd: accept");
			return 1;
		}
		int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(t, target->ai_addr, target->ai_addrlen) != 0) {
			perror("countfwd: connect");
			close(c);
			close(t);
			continue;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pair *p = calloc(1, sizeof *p);
		if (!p)
			abort();
		p->a = c;
		p->b = t;
		pthread_mutex_init(&p->mu, NULL);
		pthread_mutex_lock(&mu);
		n_active++;
		write_status_locked();
		pthread_mutex_unlock(&mu);
		start_dir(p, c, t, 1);
		start_dir(p, t, c, 0);
	}
}
