/*
 * client.c — `client MY_ADDR TRACKER1 TRACKER2 LOG_FILE`: the shell on
 * standard input, the files this client shares, its state and heartbeats
 * (docs/SWARM.md).
 */
#include "swarm.h"
#include "cmdline.h"
#include "../cli/cli.h"
#include "../server/registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192

static swarm SW = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* ---- state: which local file holds which root ---- */

static void state_path(swarm *sw, char *out)
{
	path_join(out, PATH_MAX, sw->statedir, "shares");
}

/* Rewrite the shares list (under sw->mu). */
static void state_save(swarm *sw)
{
	buf b;
	buf_init(&b, (size_t)SWARM_MAX_SHARES * (PATH_MAX + 80));
	char hex[HASH_HEX_LEN + 1], path[PATH_MAX];
	buf_append(&b, "# syncstore client shares 1: root<TAB>local path\n", 49);
	for (unsigned i = 0; i < sw->nshares; i++) {
		if (sw->shares[i].partial)
			continue; /* a download's DEST.part: not there after a restart */
		hex_encode(sw->shares[i].t.root, HASH_LEN, hex);
		buf_append(&b, hex, HASH_HEX_LEN);
		buf_append(&b, "\t", 1);
		buf_append(&b, sw->shares[i].path, strlen(sw->shares[i].path));
		buf_append(&b, "\n", 1);
	}
	state_path(sw, path);
	int rc = write_file_atomic(path, b.p, b.len, 0600);
	if (rc)
		log_warn("cannot save %s: %s", path, ss_errmsg(rc));
	buf_free(&b);
}

/* The local path the shares list gives for root, if any. */
static bool state_lookup(swarm *sw, const uint8_t root[HASH_LEN], char *out)
{
	char path[PATH_MAX], hex[HASH_HEX_LEN + 1];
	state_path(sw, path);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	hex_encode(root, HASH_LEN, hex);
	char line[PATH_MAX + 80];
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, hex, HASH_HEX_LEN) && line[HASH_HEX_LEN] == '\t') {
			str_copy(out, PATH_MAX, line + HASH_HEX_LEN + 1);
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* ---- sharing ---- */

typedef struct hasher {
	tree_builder tb;
	int file;
} hasher;

static int on_node(void *ctx, uint8_t level, const uint8_t *node, size_t len, const uint8_t id[HASH_LEN],
		   uint64_t size)
{
	hasher *h = ctx;
	seed_add_node(id, node, len, h->file);
	return 0;
}

static int on_chunk(void *ctx, const cdc_chunk *c)
{
	hasher *h = ctx;
	seed_add_chunk(c->id, h->file, c->off, c->len);
	return tree_add(&h->tb, c->id, c->len);
}

/* Chunk and hash path (the same chunks and tree as `syncstore put`),
 * indexing everything for serving: fills t's root and size, *file. */
static int hash_file(const char *path, mtorrent *t, int *file)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ss_fail_errno("cannot open %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ss_fail(SS_EINVAL, "%s is not a regular file", path);
	}
	hasher h;
	int rc = h.file = seed_file_open(path);
	if (rc >= 0) {
		tree_init(&h.tb, on_node, &h);
		if (!(rc = cdc_stream(fd, 0, on_chunk, &h)))
			rc = tree_finish(&h.tb, t->root, &t->size);
		if (rc)
			seed_file_close(h.file);
		else
			*file = h.file;
	}
	close(fd);
	return rc < 0 ? rc : 0;
}

int swarm_share(swarm *sw, const mtorrent *t, const char *path, const char *mtorrent_path, int file, unsigned how,
		int *announced)
{
	char abs[PATH_MAX];
	if (!realpath(path, abs))
		str_copy(abs, sizeof abs, path);
	int old = -1, rc = 0;
	pthread_mutex_lock(&sw->mu);
	share *s = NULL;
	for (unsigned i = 0; i < sw->nshares && !s; i++)
		if (!memcmp(sw->shares[i].t.root, t->root, HASH_LEN))
			s = &sw->shares[i];
	if (s && s->file != file && s->partial)
		rc = ss_fail(SS_EBUSY, "%s is being downloaded here; it is shared once complete", t->name);
	else if (s && s->file != file && !(how & SHARE_REPLACE))
		rc = ss_fail(SS_EEXIST, "%s is shared here already (%s)", t->name, s->path);
	else if (!s && sw->nshares == SWARM_MAX_SHARES)
		rc = ss_fail(SS_ETOOBIG, "already sharing %d files", SWARM_MAX_SHARES);
	if (rc) {
		pthread_mutex_unlock(&sw->mu);
		return rc; /* file stays the caller's */
	}
	if (s)
		old = s->file;
	else
		s = &sw->shares[sw->nshares++];
	s->t = *t;
	s->file = file;
	s->partial = how & SHARE_PARTIAL;
	str_copy(s->path, sizeof s->path, abs);
	str_copy(s->mtorrent, sizeof s->mtorrent, mtorrent_path);
	state_save(sw);
	pthread_mutex_unlock(&sw->mu);
	if (old >= 0 && old != file)
		seed_file_close(old); /* the replaced share's: no one else uses it */
	int arc = trackers_announce(&sw->ts, t->root, t->size, t->name, 0);
	if (announced)
		*announced = arc;
	return 0;
}

bool swarm_has_share(swarm *sw, const uint8_t root[HASH_LEN])
{
	bool has = false;
	pthread_mutex_lock(&sw->mu);
	for (unsigned i = 0; i < sw->nshares && !has; i++)
		has = !sw->shares[i].partial && !memcmp(sw->shares[i].t.root, root, HASH_LEN);
	pthread_mutex_unlock(&sw->mu);
	return has;
}

int swarm_unshare(swarm *sw, const mtorrent *t, int file, bool *ours, const char *mtorrent_path)
{
	int found = -1;
	pthread_mutex_lock(&sw->mu);
	for (unsigned i = 0; i < sw->nshares; i++) {
		share *s = &sw->shares[i];
		if (memcmp(s->t.root, t->root, HASH_LEN) || (file >= 0 ? s->file != file : s->partial))
			continue;
		found = s->file;
		if (ours)
			*ours = mtorrent_path && !strcmp(s->mtorrent, mtorrent_path);
		*s = sw->shares[--sw->nshares];
		state_save(sw);
		break;
	}
	pthread_mutex_unlock(&sw->mu);
	if (found < 0)
		return ss_fail(SS_ENOENT, "not sharing %s", t->name);
	seed_file_close(found);
	return trackers_announce(&sw->ts, t->root, t->size, t->name, WIRE_ANNOUNCE_WITHDRAW);
}

static void do_share(swarm *sw, int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: share LOCAL_FILE NAME.mtorrent\n");
		return;
	}
	mtorrent t = {0};
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", argv[1]);
	snprintf(t.name, sizeof t.name, "%s", basename(tmp));
	if (!mtorrent_name_ok(t.name)) {
		fprintf(stderr, "share: '%s' cannot be shared under that name\n", t.name);
		return;
	}
	for (unsigned i = 0; i < 2; i++)
		str_copy(t.trackers[t.ntrackers++], sizeof t.trackers[0], sw->trackers[i]);
	int file = -1;
	int rc = hash_file(argv[1], &t, &file);
	if (!rc)
		rc = mtorrent_write(argv[2], &t);
	if (rc) {
		if (file >= 0)
			seed_file_close(file);
		fprintf(stderr, "share: %s\n", ss_errmsg(rc));
		return;
	}
	int announced = 0;
	if ((rc = swarm_share(sw, &t, argv[1], argv[2], file, SHARE_REPLACE, &announced))) {
		seed_file_close(file);
		fprintf(stderr, "share: %s\n", ss_errmsg(rc));
		return;
	}
	char size[16];
	fmt_size(t.size, size);
	if (announced)
		fprintf(stderr, "share: %s is served, but %s\n", t.name, ss_errmsg(announced));
	else
		printf("shared %s (%s) as %s\n", t.name, size, argv[2]);
	log_info("share %s (%s) as %s%s", argv[1], size, argv[2], announced ? ", not announced" : "");
}

static void do_remove(swarm *sw, int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: remove NAME.mtorrent\n");
		return;
	}
	mtorrent t;
	int rc = mtorrent_read(argv[1], &t);
	if (rc) {
		fprintf(stderr, "remove: %s\n", ss_errmsg(rc));
		return;
	}
	bool ours = false;
	rc = swarm_unshare(sw, &t, -1, &ours, argv[1]);
	if (rc == SS_ENOENT) {
		fprintf(stderr, "remove: not sharing %s\n", argv[1]);
		return;
	}
	/* A .mtorrent our `share` wrote is the share's token: gone, it is not
	 * announced again at the next start.  Another's (a download's) stays. */
	if (ours && unlink(argv[1]) < 0)
		log_warn("cannot delete %s: %s", argv[1], strerror(errno));
	if (rc)
		fprintf(stderr, "remove: %s is no longer served, but %s\n", t.name, ss_errmsg(rc));
	else
		printf("removed %s\n", t.name);
	log_info("remove %s%s", argv[1], rc ? " (not withdrawn from the trackers)" : "");
}

static void do_get(swarm *sw, int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: get FILE.mtorrent DESTINATION\n");
		return;
	}
	mtorrent t;
	int rc = mtorrent_read(argv[1], &t);
	if (!rc)
		rc = download_start(sw, &t, argv[2]);
	if (rc) {
		fprintf(stderr, "get: %s\n", ss_errmsg(rc));
		return;
	}
	printf("downloading %s to %s\n", t.name, argv[2]);
	log_info("get %s to %s", argv[1], argv[2]);
}

static void do_show(swarm *sw)
{
	pthread_mutex_lock(&sw->mu);
	if (!sw->ndownloads)
		printf("no downloads\n");
	double now = now_mono();
	for (unsigned i = 0; i < sw->ndownloads; i++) {
		download *d = sw->downloads[i];
		if (d->state == DL_DONE) {
			printf("[S] %s -> %s\n", d->t.name, d->dest);
		} else if (d->state == DL_FAILED) {
			printf("[F] %s -> %s  %s\n", d->t.name, d->dest, d->reason);
		} else {
			uint64_t done = __atomic_load_n(&d->done_bytes, __ATOMIC_RELAXED);
			double pct = d->t.size ? 100.0 * (double)done / (double)d->t.size : 0;
			double rate = now > d->started ? (double)done / (now - d->started) / 1e6 : 0;
			printf("[D] %s -> %s  %.1f%%  %.1f MB/s  %u source%s\n", d->t.name, d->dest, pct, rate,
			       d->sources, d->sources == 1 ? "" : "s");
		}
	}
	pthread_mutex_unlock(&sw->mu);
}

/* ---- at start: announce the .mtorrent files of the working directory ---- */

static void announce_cwd(swarm *sw)
{
	DIR *dir = opendir(".");
	if (!dir)
		return;
	struct dirent *e;
	while ((e = readdir(dir))) {
		size_t n = strlen(e->d_name);
		if (n < 10 || strcmp(e->d_name + n - 9, ".mtorrent"))
			continue;
		mtorrent t, got;
		char path[PATH_MAX];
		int rc = mtorrent_read(e->d_name, &t), file = -1;
		if (rc) {
			log_warn("not announcing %s", ss_errmsg(rc));
			continue;
		}
		/* Where its data is: our shares list, or its name here. */
		if (!state_lookup(sw, t.root, path))
			snprintf(path, sizeof path, "%s", t.name);
		got = t;
		if ((rc = hash_file(path, &got, &file))) {
			log_info("not announcing %s: %s", e->d_name, ss_errmsg(rc));
			continue;
		}
		if (memcmp(got.root, t.root, HASH_LEN)) {
			log_warn("not announcing %s: %s has changed since it was shared", e->d_name, path);
			seed_file_close(file);
			continue;
		}
		int announced = 0;
		if ((rc = swarm_share(sw, &t, path, e->d_name, file, SHARE_REPLACE, &announced)))
			seed_file_close(file);
		else
			rc = announced;
		log_info("announced %s (%s)%s%s", e->d_name, path, rc ? ": " : "", rc ? ss_errmsg(rc) : "");
	}
	closedir(dir);
}

/* ---- heartbeats ---- */

static bool next_share(void *ctx, unsigned k, uint8_t root[HASH_LEN], uint64_t *size, char *name)
{
	swarm *sw = ctx;
	pthread_mutex_lock(&sw->mu);
	bool more = k < sw->nshares;
	if (more) {
		memcpy(root, sw->shares[k].t.root, HASH_LEN);
		*size = sw->shares[k].t.size;
		str_copy(name, WIRE_NAME_MAX, sw->shares[k].t.name);
	}
	pthread_mutex_unlock(&sw->mu);
	return more;
}

/* One thread per tracker: a tracker that stalls delays no heartbeat to
 * the other. */
typedef struct beat {
	swarm *sw;
	unsigned tracker;
} beat;

static void *heartbeats(void *arg)
{
	beat *b = arg;
	swarm *sw = b->sw;
	pthread_mutex_lock(&sw->mu);
	while (!sw->stopping) {
		unsigned shares = sw->nshares;
		pthread_mutex_unlock(&sw->mu);
		trackers_keepalive(&sw->ts, b->tracker, shares, next_share, sw);
		pthread_mutex_lock(&sw->mu);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		long ms = sw->lease_ms / 3;
		ts.tv_sec += ms / 1000;
		ts.tv_nsec += (ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		if (!sw->stopping)
			pthread_cond_timedwait(&sw->cv, &sw->mu, &ts);
	}
	pthread_mutex_unlock(&sw->mu);
	return NULL;
}

/* ---- the shell ---- */

/* Lines from fd 0 without stdio buffering, so poll() tells the truth. */
typedef struct reader {
	char buf[LINE_MAX_BYTES];
	size_t len;
	bool eof, skipping; /* skipping: the rest of an overlong line */
} reader;

/* 1 and a line (without its end), 0 at end of input, or -1 if none within
 * ms (ms < 0: wait). */
static bool aborting(swarm *sw);

static int read_line(swarm *sw, reader *r, char *line, int ms)
{
	for (;;) {
		if (aborting(sw))
			return 0; /* a signal: as if the input ended */
		char *nl = memchr(r->buf, '\n', r->len);
		if (nl || (r->eof && r->len) || r->len == sizeof r->buf) {
			size_t n = nl ? (size_t)(nl - r->buf) : r->len;
			bool skip = r->skipping;
			r->skipping = !nl && !r->eof;
			memcpy(line, r->buf, n < LINE_MAX_BYTES ? n : LINE_MAX_BYTES - 1);
			line[n < LINE_MAX_BYTES ? n : LINE_MAX_BYTES - 1] = 0;
			size_t used = nl ? n + 1 : n;
			memmove(r->buf, r->buf + used, r->len - used);
			r->len -= used;
			if (skip)
				continue;
			if (r->skipping) {
				fprintf(stderr, "client: line longer than %d bytes ignored\n", LINE_MAX_BYTES);
				continue;
			}
			if (n && line[n - 1] == '\r')
				line[n - 1] = 0;
			return 1;
		}
		if (r->eof)
			return 0;
		if (ms >= 0) {
			struct pollfd p = {.fd = 0, .events = POLLIN};
			if (poll(&p, 1, ms) == 0)
				return -1;
		}
		ssize_t got = read(0, r->buf + r->len, sizeof r->buf - r->len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			r->eof = true;
		else
			r->len += (size_t)got;
	}
}

static unsigned running_downloads(swarm *sw)
{
	unsigned n = 0;
	for (unsigned i = 0; i < sw->ndownloads; i++)
		n += sw->downloads[i]->state == DL_RUNNING;
	return n;
}

static void abort_downloads(swarm *sw)
{
	pthread_mutex_lock(&sw->mu);
	sw->abort = true;
	/* Workers are stopped by their coordinators; a tree fetch is woken here. */
	for (unsigned i = 0; i < sw->ndownloads; i++)
		for (unsigned k = 0; k < SWARM_TREE_SOURCES; k++)
			if (sw->downloads[i]->tree_fd[k] >= 0)
				shutdown(sw->downloads[i]->tree_fd[k], SHUT_RDWR);
	pthread_cond_broadcast(&sw->cv);
	pthread_mutex_unlock(&sw->mu);
}

/* close: wait for the downloads (a second close aborts them), withdraw
 * everything, stop.  The exit status. */
static int finish(swarm *sw, reader *r)
{
	pthread_mutex_lock(&sw->mu);
	unsigned n = running_downloads(sw);
	pthread_mutex_unlock(&sw->mu);
	if (n)
		printf("waiting for %u download%s (close again to abort)\n", n, n == 1 ? "" : "s");
	char line[LINE_MAX_BYTES];
	while (n) {
		if (!r->eof && read_line(sw, r, line, 200) == 1) {
			char *argv[4], words[LINE_MAX_BYTES];
			int argc = 0;
			if (!cmdline_split(line, words, sizeof words, argv, 4, &argc) && argc && !strcmp(argv[0], "close")) {
				printf("aborting downloads\n");
				abort_downloads(sw);
			} else if (argc) {
				fprintf(stderr, "client: closing; only `close` (abort the downloads) is taken now\n");
			}
		} else if (r->eof) {
			usleep(200 * 1000);
		}
		pthread_mutex_lock(&sw->mu);
		n = running_downloads(sw);
		pthread_mutex_unlock(&sw->mu);
	}
	int status = 0;
	for (unsigned i = 0; i < sw->ndownloads; i++) {
		pthread_join(sw->downloads[i]->thread, NULL);
		status |= sw->downloads[i]->state == DL_FAILED;
	}
	return status;
}

/* SIGINT, SIGTERM: abort the downloads and close (the shell polls sw->abort). */
static void *signals(void *arg)
{
	sigset_t *set = arg;
	int sig;
	while (sigwait(set, &sig) == 0) {
		log_info("signal %d: aborting downloads and closing", sig);
		abort_downloads(&SW);
	}
	return NULL;
}

static bool aborting(swarm *sw)
{
	pthread_mutex_lock(&sw->mu);
	bool a = sw->abort;
	pthread_mutex_unlock(&sw->mu);
	return a;
}

static void dispatch(swarm *sw, char *line, bool *closing)
{
	char *argv[8], words[LINE_MAX_BYTES];
	int argc = 0;
	int rc = cmdline_split(line, words, sizeof words, argv, 8, &argc);
	if (rc) {
		fprintf(stderr, "client: %s\n", ss_errmsg(rc));
		return;
	}
	if (!argc)
		return;
	if (!strcmp(argv[0], "share"))
		do_share(sw, argc, argv);
	else if (!strcmp(argv[0], "get"))
		do_get(sw, argc, argv);
	else if (!strcmp(argv[0], "show_downloads"))
		do_show(sw);
	else if (!strcmp(argv[0], "remove"))
		do_remove(sw, argc, argv);
	else if (!strcmp(argv[0], "close"))
		*closing = true;
	else
		fprintf(stderr, "client: unknown command '%s' (share, get, show_downloads, remove, close)\n", argv[0]);
}

static int usage(void)
{
	fprintf(stderr, "usage: client MY_IP:UPLOAD_PORT TRACKER1_IP:PORT TRACKER2_IP:PORT LOG_FILE\n"
			"(SYNCSTORE_TLS names the cluster CA directory; commands come on standard input)\n");
	return EXIT_USAGE;
}

int swarm_client_main(int argc, char **argv)
{
	swarm *sw = &SW;
	if (argc != 5)
		return usage();
	if (strlen(argv[1]) >= sizeof sw->addr || strlen(argv[2]) >= sizeof sw->trackers[0] ||
	    strlen(argv[3]) >= sizeof sw->trackers[1] ||
	    snprintf(sw->statedir, sizeof sw->statedir, "%s.state", argv[4]) >= (int)sizeof sw->statedir)
		return usage();
	snprintf(sw->addr, sizeof sw->addr, "%s", argv[1]);
	snprintf(sw->trackers[0], sizeof sw->trackers[0], "%s", argv[2]);
	snprintf(sw->trackers[1], sizeof sw->trackers[1], "%s", argv[3]);
	sw->lease_ms = registry_lease_ms();

	int lfd = open(argv[4], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0) {
		fprintf(stderr, "client: cannot open the log file %s: %s\n", argv[4], strerror(errno));
		return EXIT_FAIL;
	}
	log_fd = lfd;

	/* Identity, issued on first start when the CA key is at hand. */
	char crt[PATH_MAX], key[PATH_MAX], name[160];
	const char *tls = swarm_tls_dir();
	memcpy(name, "client-", 7);
	str_copy(name + 7, sizeof name - 7, sw->addr);
	for (char *p = name; *p; p++)
		if (*p == ':' || *p == '/')
			*p = '-';
	int rc = mkdir_p(sw->statedir, 0700);
	if (!rc)
		rc = tls_identity(tls, sw->statedir, "node", ROLE_CLIENT, name, crt, key);
	if (!rc)
		rc = tls_cert_id(crt, sw->node_id);
	if (!rc && (!(sw->ctx = tls_ctx_new(tls, crt, key, 0)) || !(sw->sctx = tls_ctx_new(tls, crt, key, 1))))
		rc = SS_ETLS;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t sigthread, hb[2];
	beat beats[2] = {{sw, 0}, {sw, 1}};
	if (!rc)
		rc = seed_start(sw);
	if (rc) {
		fprintf(stderr, "client: %s\n", ss_errmsg(rc));
		return EXIT_FAIL;
	}
	const char *taddrs[2] = {sw->trackers[0], sw->trackers[1]};
	trackers_init(&sw->ts, sw->ctx, sw->addr, taddrs, 2);
	pthread_create(&sigthread, NULL, signals, &set);
	pthread_detach(sigthread);
	char hex[HASH_HEX_LEN + 1];
	hex_encode(sw->node_id, HASH_LEN, hex);
	log_info("client %.16s serving on %s, trackers %s and %s", hex, sw->addr, sw->trackers[0], sw->trackers[1]);

	announce_cwd(sw);
	for (unsigned i = 0; i < 2; i++)
		pthread_create(&hb[i], NULL, heartbeats, &beats[i]);

	static reader r;
	char line[LINE_MAX_BYTES];
	bool tty = isatty(0), closing = false;
	while (!closing && !aborting(sw)) {
		if (tty) {
			printf("> ");
			fflush(stdout);
		}
		int got;
		while ((got = read_line(sw, &r, line, 200)) < 0)
			;
		if (got != 1)
			break;
		dispatch(sw, line, &closing);
	}
	int status = finish(sw, &r);

	/* Heartbeats stop before the withdrawal: one in between would see the
	 * tracker list nothing and announce everything again. */
	pthread_mutex_lock(&sw->mu);
	sw->stopping = true;
	pthread_cond_broadcast(&sw->cv);
	pthread_mutex_unlock(&sw->mu);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(hb[i], NULL);
	rc = trackers_announce(&sw->ts, NULL, 0, NULL, WIRE_ANNOUNCE_WITHDRAW_ALL);
	if (rc)
		fprintf(stderr, "client: %s\n", ss_errmsg(rc));
	log_info("closed%s", status ? " (a download failed)" : "");
	seed_stop(sw);
	trackers_free(&sw->ts);
	fflush(stdout);
	return status;
}
