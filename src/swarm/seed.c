/*
 * seed.c — what this client serves, and the upload port that serves it.
 *
 * The index maps a chunk id to where its bytes are: a (file slot, offset,
 * length) for a data chunk, or a copy of the bytes for a tree node.  Only
 * files the client shares, and chunks a running download has verified, are
 * ever in it, so no request can read anything else.  The same id may be
 * held by several files (a multimap: lookups take the first); dropping a
 * file removes its entries alone.
 *
 * Every data chunk is re-read and re-hashed before it is sent: a shared file
 * changed on disk answers MISSING, never wrong bytes.
 */
#include "swarm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SEED_MAX_FILES (SWARM_MAX_SHARES + SWARM_MAX_DOWNLOADS)

typedef struct slot {
	uint8_t id[HASH_LEN];
	bool used;
	int file;        /* file slot (a node's: the file whose tree it is in) */
	uint64_t off;
	uint32_t len;
	uint8_t *node;   /* a tree node's bytes, or NULL for a data chunk */
} slot;

typedef struct seed_file {
	int fd; /* -1: free */
	unsigned readers;
	bool closing;
} seed_file;

static struct {
	pthread_mutex_t mu;
	slot *tab;
	size_t cap, n; /* cap is a power of two */
	seed_file files[SEED_MAX_FILES];
	bool files_init;
	/* Uploads */
	int lfd;
	pthread_t acceptor;
	bool accepting;
	unsigned uploads;
	int upload_fd[SWARM_MAX_UPLOADS]; /* -1: free slot */
	pthread_cond_t uploads_done;
	double rate;        /* bytes/s all uploads together may send (0: unlimited) */
	double bucket_time; /* token bucket: when the budget was last topped up */
	double budget;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .lfd = -1, .uploads_done = PTHREAD_COND_INITIALIZER};

static void files_init(void)
{
	if (S.files_init)
		return;
	for (int i = 0; i < SEED_MAX_FILES; i++)
		S.files[i].fd = -1;
	S.files_init = true;
}

int seed_file_open(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ss_fail_errno("cannot open %s", path);
	pthread_mutex_lock(&S.mu);
	files_init();
	int file = -1;
	for (int i = 0; i < SEED_MAX_FILES && file < 0; i++)
		if (S.files[i].fd < 0)
			file = i;
	if (file >= 0)
		S.files[file] = (seed_file){.fd = fd};
	pthread_mutex_unlock(&S.mu);
	if (file < 0) {
		close(fd);
		return ss_fail(SS_ETOOBIG, "more than %d files open for serving", SEED_MAX_FILES);
	}
	return file;
}

static void file_release_locked(int file)
{
	seed_file *f = &S.files[file];
	if (f->closing && !f->readers) {
		close(f->fd);
		*f = (seed_file){.fd = -1};
	}
}

void seed_file_close(int file)
{
	/* Closing first: from now on nothing is added for it or found in it;
	 * then its entries go; the descriptor goes with the last reader. */
	pthread_mutex_lock(&S.mu);
	S.files[file].closing = true;
	pthread_mutex_unlock(&S.mu);
	seed_drop_file(file);
	pthread_mutex_lock(&S.mu);
	file_release_locked(file);
	pthread_mutex_unlock(&S.mu);
}

/* ---- the index ---- */

static size_t hash_of(const uint8_t id[HASH_LEN])
{
	size_t h;
	memcpy(&h, id, sizeof h);
	return h;
}

static void insert_locked(const slot *e)
{
	if (2 * (S.n + 1) > S.cap) {
		slot *old = S.tab;
		size_t oldcap = S.cap;
		S.cap = S.cap ? 2 * S.cap : 1024;
		S.tab = xcalloc(S.cap, sizeof *S.tab);
		S.n = 0;
		for (size_t i = 0; i < oldcap; i++)
			if (old[i].used)
				insert_locked(&old[i]);
		free(old);
	}
	size_t i = hash_of(e->id) & (S.cap - 1);
	for (; S.tab[i].used; i = (i + 1) & (S.cap - 1))
		if (S.tab[i].file == e->file && !memcmp(S.tab[i].id, e->id, HASH_LEN)) {
			free(e->node);
			return; /* this file holds it already */
		}
	S.tab[i] = *e;
	S.tab[i].used = true;
	S.n++;
}

void seed_add_chunk(const uint8_t id[HASH_LEN], int file, uint64_t off, uint32_t len)
{
	slot e = {.file = file, .off = off, .len = len};
	memcpy(e.id, id, HASH_LEN);
	pthread_mutex_lock(&S.mu);
	if (S.files[file].fd >= 0 && !S.files[file].closing) /* not a slot closed meanwhile */
		insert_locked(&e);
	pthread_mutex_unlock(&S.mu);
}

void seed_add_node(const uint8_t id[HASH_LEN], const uint8_t *bytes, size_t len, int file)
{
	slot e = {.file = file, .len = (uint32_t)len, .node = xmalloc(len)};
	memcpy(e.node, bytes, len);
	memcpy(e.id, id, HASH_LEN);
	pthread_mutex_lock(&S.mu);
	if (S.files[file].fd >= 0 && !S.files[file].closing)
		insert_locked(&e);
	else
		free(e.node);
	pthread_mutex_unlock(&S.mu);
}

void seed_drop_file(int file)
{
	pthread_mutex_lock(&S.mu);
	slot *old = S.tab;
	size_t oldcap = S.cap;
	S.tab = oldcap ? xcalloc(oldcap, sizeof *S.tab) : NULL;
	S.n = 0;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].used && old[i].file != file)
			insert_locked(&old[i]);
		else if (old[i].used)
			free(old[i].node);
	}
	free(old);
	pthread_mutex_unlock(&S.mu);
}

/* Copy out where id is; for a data chunk, pin its file (release after). */
static bool lookup(const uint8_t id[HASH_LEN], slot *out, uint8_t *node)
{
	bool found = false;
	pthread_mutex_lock(&S.mu);
	for (size_t i = S.cap ? hash_of(id) & (S.cap - 1) : 0; S.cap && S.tab[i].used; i = (i + 1) & (S.cap - 1)) {
		slot *e = &S.tab[i];
		if (memcmp(e->id, id, HASH_LEN) || S.files[e->file].closing)
			continue;
		*out = *e;
		if (e->node)
			memcpy(node, e->node, e->len);
		else
			S.files[e->file].readers++;
		found = true;
		break;
	}
	pthread_mutex_unlock(&S.mu);
	return found;
}

/* ---- the upload port ---- */

/* Upload rate limit from SYNCSTORE_UPLOAD_RATE (MB/s), for benchmarks that
 * compare one seeder with several: sleep until n bytes fit the budget. */
static void throttle(size_t n)
{
	if (S.rate <= 0)
		return;
	double wait;
	pthread_mutex_lock(&S.mu);
	double now = now_mono();
	S.budget = MIN(S.budget + (now - S.bucket_time) * S.rate, S.rate / 10);
	S.bucket_time = now;
	S.budget -= (double)n;
	wait = S.budget < 0 ? -S.budget / S.rate : 0;
	pthread_mutex_unlock(&S.mu);
	if (wait > 0) {
		struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

typedef struct upload {
	swarm *sw;
	int fd;
	unsigned slot; /* in S.upload_fd */
} upload;

static void unpin(int file)
{
	pthread_mutex_lock(&S.mu);
	S.files[file].readers--;
	file_release_locked(file);
	pthread_mutex_unlock(&S.mu);
}

/* Read a data chunk (lookup pinned its file) into payload and check it
 * still is what it was. */
static bool read_verified(const slot *e, uint8_t *payload)
{
	uint8_t got[HASH_LEN];
	bool ok = !pread_full(S.files[e->file].fd, payload, e->len, e->off);
	if (ok)
		sha256(payload, e->len, got);
	unpin(e->file);
	if (ok && !memcmp(got, e->id, HASH_LEN))
		return true;
	char hex[HASH_HEX_LEN + 1];
	hex_encode(e->id, HASH_LEN, hex);
	log_warn("chunk %.16s of a shared file changed on disk (or cannot be read): not served", hex);
	return false;
}

static int serve_one(msgio *io, wire_zstd *z, const uint8_t id[HASH_LEN], uint8_t *node, uint64_t *bytes)
{
	slot e;
	if (!lookup(id, &e, node))
		return wire_missing(&io->out, id);
	uint8_t *payload;
	size_t start;
	int rc = wire_chunk_open(&io->out, id, e.len, &payload, &start);
	if (rc) {
		if (!e.node)
			unpin(e.file);
		return rc;
	}
	if (e.node) {
		memcpy(payload, node, e.len);
	} else if (!read_verified(&e, payload)) {
		io->out.len = start;
		return wire_missing(&io->out, id);
	}
	*bytes += e.len;
	wire_chunk_close(&io->out, start, z);
	throttle(e.len);
	return msgio_maybe_flush(io);
}

/* Before the descriptor is closed: seed_stop must not shut it down after. */
static void unpublish(const upload *u)
{
	pthread_mutex_lock(&S.mu);
	S.upload_fd[u->slot] = -1;
	pthread_mutex_unlock(&S.mu);
}

static void *upload_thread(void *arg)
{
	upload *u = arg;
	conn c;
	msgio io;
	msg *m = xmalloc(sizeof *m);
	uint8_t *node = xmalloc(TREE_NODE_MAX > CDC_MAX ? TREE_NODE_MAX : CDC_MAX);
	uint64_t bytes = 0, chunks = 0;
	wire_zstd z;
	wire_zstd_init(&z);
	int rc = conn_accept(u->sw->sctx, u->fd, TRACKERS_CONNECT_MS, &c);
	char hex[HASH_HEX_LEN + 1] = "?";
	if (rc) {
		unpublish(u);
		close(u->fd);
		goto out;
	}
	hex_encode(c.peer.id, HASH_LEN, hex);
	conn_set_timeout(&c, 60000);
	/* Writes time out too: a downloader that stops reading must not hold
	 * this thread (and one of SWARM_MAX_UPLOADS) for ever. */
	struct timeval tv = {.tv_sec = 60};
	setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	msgio_init(&io, &c);
	rc = msgio_hello_server(&io);
	while (!rc && !(rc = msgio_recv(&io, m))) {
		if (m->type != MSG_READ) {
			rc = ss_fail(SS_EPROTO, "unexpected message type %u (a seeder answers READ only)", m->type);
			wire_error(&io.out, rc, ss_errmsg(rc));
			msgio_flush(&io);
			break;
		}
		/* The ids live in io.in, which the next flush keeps intact. */
		uint8_t ids[WIRE_MAX_OFFER * HASH_LEN];
		unsigned n = m->offer.count;
		memcpy(ids, m->offer.ids, (size_t)n * HASH_LEN);
		for (unsigned i = 0; i < n && !rc; i++) {
			uint64_t before = bytes;
			rc = serve_one(&io, &z, ids + (size_t)i * HASH_LEN, node, &bytes);
			chunks += bytes != before;
		}
		if (!rc)
			rc = msgio_flush(&io);
	}
	if (rc != SS_ECLOSED && rc)
		log_info("upload to %.16s (%s) ended: %s", hex, c.peer.name, ss_errmsg(rc));
	msgio_free(&io);
	unpublish(u);
	conn_close(&c);
	log_info("served %llu bytes in %llu chunks to %.16s", (unsigned long long)bytes, (unsigned long long)chunks,
		 hex);
out:
	wire_zstd_free(&z);
	free(node);
	free(m);
	pthread_mutex_lock(&S.mu);
	S.uploads--;
	pthread_cond_broadcast(&S.uploads_done);
	pthread_mutex_unlock(&S.mu);
	free(u);
	return NULL;
}

static void *acceptor(void *arg)
{
	swarm *sw = arg;
	while (!__atomic_load_n(&sw->stopping, __ATOMIC_ACQUIRE)) {
		struct pollfd p = {.fd = S.lfd, .events = POLLIN};
		if (poll(&p, 1, 200) <= 0)
			continue;
		int fd = accept4(S.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&S.mu);
		unsigned at = SWARM_MAX_UPLOADS;
		for (unsigned i = 0; i < SWARM_MAX_UPLOADS && at == SWARM_MAX_UPLOADS; i++)
			if (S.upload_fd[i] < 0)
				at = i;
		if (at < SWARM_MAX_UPLOADS) {
			S.upload_fd[at] = fd;
			S.uploads++;
		}
		pthread_mutex_unlock(&S.mu);
		if (at == SWARM_MAX_UPLOADS) {
			log_warn("refusing an upload connection: %d already open", SWARM_MAX_UPLOADS);
			close(fd);
			continue;
		}
		upload *u = xmalloc(sizeof *u);
		*u = (upload){.sw = sw, .fd = fd, .slot = at};
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, upload_thread, u)) {
			close(fd);
			free(u);
			pthread_mutex_lock(&S.mu);
			S.upload_fd[at] = -1;
			S.uploads--;
			pthread_mutex_unlock(&S.mu);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

int seed_start(swarm *sw)
{
	const char *rate = getenv("SYNCSTORE_UPLOAD_RATE");
	S.rate = rate ? strtod(rate, NULL) * 1e6 : 0;
	S.bucket_time = now_mono();
	for (unsigned i = 0; i < SWARM_MAX_UPLOADS; i++)
		S.upload_fd[i] = -1;
	S.lfd = tcp_listen(sw->addr, 64);
	if (S.lfd < 0)
		return S.lfd;
	int err = pthread_create(&S.acceptor, NULL, acceptor, sw);
	if (err) {
		close(S.lfd);
		return ss_fail(SS_EIO, "cannot start the upload thread: %s", strerror(err));
	}
	S.accepting = true;
	return 0;
}

void seed_stop(swarm *sw)
{
	if (!S.accepting)
		return;
	pthread_join(S.acceptor, NULL);
	close(S.lfd);
	S.accepting = false;
	/* Wake the uploads still running and wait for them: none may be inside
	 * OpenSSL when the program exits. */
	pthread_mutex_lock(&S.mu);
	for (unsigned i = 0; i < SWARM_MAX_UPLOADS; i++)
		if (S.upload_fd[i] >= 0)
			shutdown(S.upload_fd[i], SHUT_RDWR);
	while (S.uploads)
		pthread_cond_wait(&S.uploads_done, &S.mu);
	pthread_mutex_unlock(&S.mu);
}
