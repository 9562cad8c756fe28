/*
 * sim — a deterministic simulator of a syncstore cluster.
 *
 * One process, N servers, each a REAL store (store_open on a directory
 * under $TMPDIR, default /dev/shm) with the server's own replication core
 * (core/node.c, which the server runs on its core thread), driven by one
 * seeded PRNG.  Each core runs one link per other server; where the server
 * has a thread per link doing what the core says over the network, the
 * simulator does it with function calls: CONNECT succeeds if the peer is up
 * and not cut off, PULL is answered by repl_serve_pull at the peer (the
 * acknowledgements and the restore check of session.c do_pull), FETCH
 * copies the trees from the peer's store.  The core decides the rest, as
 * in the server: its schedule (core/link.c: backoff, PULL holds, retries of
 * parked records), the batch checks, one fetch at a time, the apply
 * (core/apply.c: superseded records dropped, store_apply_remote +
 * repl_decide, parking).  The write quorum counts repl_acks_copies over
 * the same ack table as server.c; tombstone expiry is maint.c's
 * repl_expirable over it.  What is NOT the real code: the network, client
 * sessions (writes call store_commit directly; no catch_up before a
 * write), threads, the clock (simulated; the schedule reads it).
 *
 * Faults: dropped replies (the link breaks), delayed ones (the link waits;
 * other links' replies overtake it) and stale ones (an old batch of the
 * link delivered as the reply to a newer PULL: the core must refuse it or
 * it must be harmless); partitions that come and go; crashes (store_close
 * + store_open); now and then a destroyed disk (directory removed, a fresh
 * store: new index id, same node id — the node's certificate survives a
 * wiped data directory); a data directory restored from an older backup of
 * itself (same index id, shorter log: repl_serve_pull's cursor check,
 * store_log_regressed); chunks missing at the source of a fetch (the
 * record is parked, and applied later from any server).
 *
 * Crashes lose the in-flight messages and the servers' in-memory state (the
 * core, the ack table); the peers' links to a crashed server break.  Half
 * of them are power cuts (store_power_cut): a write is in flight (chunks
 * appended, not flushed, never acknowledged) and every segment loses what
 * was written after its last fsync, but a random part of it (a torn tail);
 * committed SQLite transactions survive, rows still pending in memory do
 * not.
 *
 * After the faults stop: every server up, no partition, pulls until
 * quiescent, then the checks (see check_all): same digest and listing
 * everywhere, every live tree complete and readable everywhere, cursors at
 * the heads, and no acknowledged write lost (see ack_ok).
 *
 *   build/sim [--seeds N] [--seed S] [--steps K] [-v]
 *
 * Per-run counters (conflicts, catch-ups, quorum failures, tombstone
 * expiries, parked records) are summed over the seeds; the run fails if any
 * sum is zero.  Every failure prints its seed; `make sim SEED=n` replays it.
 * Debugging aids: -v traces the run; with it, SIM_DEBUG_PATH=P also prints
 * every delivered batch and P's current vector after each apply;
 * SIM_NO_MISS=1 turns the missing-chunk fault off (same random stream).
 *
 * SIM_BUG (make sim-selftest): 1..6 plant one bug each (see the #if
 * SIM_BUG hooks here, in core/repl.c, core/apply.c and store/store.c).
 */
#include "chunk/chunk.h"
#include "core/repl.h"
#include "core/resolve.h"
#include "store/segment.h"
#include "core/acks.h"
#include "core/apply.h"
#include "core/link.h"
#include "core/node.h"
#include "store/store.h"
#include "util/util.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef SIM_BUG
#define SIM_BUG 0
#endif

#define N 3          /* servers */
#define W 2          /* write quorum (majority of 3) */
#define NPATHS 4     /* few paths, so concurrent writes conflict */
#define MAXBATCH 16  /* pull limit is random in 1..MAXBATCH */
/* The clock unit of the steps ("MS"): 1 s by default (--tick-ms changes it).
 * Conflict copies are named to the second, so with a finer tick two losers
 * from one node within a second share a copy path (see the report). */
static int64_t MS = 1000000000LL;
#define RETENTION (40 * MS)
#define QUORUM_TIMEOUT (100 * MS)
#define MAXWRITES 4096

static const char *paths[NPATHS] = {"f0", "f1.txt", "d/f2", "d/e/f3.bin"};

typedef struct batch {
	bool valid;
	record recs[MAXBATCH];
	unsigned n;
	uint64_t peer_index, head;
	bool stale; /* an old reply delivered again (the core must refuse it) */
} batch;

typedef struct server {
	store *st;
	char dir[512];
	bool up;
	uint64_t node;        /* short node id: fixed (its certificate) */
	unsigned incarnation; /* bumped by a crash or a destroyed disk */
	repl_acks acks;       /* in memory (server.c): which peers hold which of our records */
	repl_node *core;      /* its replication core (core/node.c), in memory */
	repl_act act[N];      /* act[j]: what its link to server j is doing */
	int64_t wake_at[N];   /* act[j] is ACT_SLEEP: until then (ms) */
	uint64_t conflicts;   /* the core's conflict count, as last summed */
	uint64_t parked;      /* its parked records, as last counted */
	bool rebuilding;      /* disk destroyed or restored, not caught up with every peer yet */
	bool has_backup;      /* dir.bak holds an older copy of the (closed) data directory */
	bool rotted;          /* a byte of a stored chunk flipped on its disk, not scrubbed yet */
	bool power_cut;       /* stopped by a power cut: check what its index claims at the next start */
	bool bak_rotted;      /* so was the backup */
} server;

typedef struct write_ev {
	int server;
	unsigned incarnation;
	int64_t t;
	record rec;  /* as committed: path, seq, root, deleted, vv */
	bool has_base;
	record base; /* the path's record at the writer just before (what the client saw) */
	bool moved;  /* the new path of an mv: src is the record it moved */
	record src;
	int state;   /* 0 waiting for the quorum, 1 acknowledged, 2 not acknowledged */
} write_ev;

typedef struct counters {
	uint64_t conflicts, catchups, quorum_failures, tomb_expiries, parked;
	uint64_t writes, acked, pulls, applied, dropped, delayed, stale, refused, link_errors,
		crashes, power_cuts, flush_cuts, destroyed, partitions, gcs, unavailable, unparked, missing, backups,
		restores, regressions, moves, connects, resolves, rotted, scrub_found, repaired, gc_stopped;
} counters;

static struct sim {
	uint64_t seed, rng;
	int64_t now;
	server s[N];
	bool cut[N][N];
	bool missed[N][N]; /* [a][b]: a could not pull from b for a while */
	batch pending[N][N], replay[N][N];
	batch held[N][N]; /* [a][b]: the reply a's link to b lent its core, until applied */
	write_ev *w;
	unsigned nw;
	repl_counts rc[N];
	counters c;
	char base[256];
	bool verbose;
	bool wiped_writes; /* let a server with a destroyed disk take writes before it caught up */
	bool calm;         /* the faults have stopped (heal_and_converge) */
	bool harsh;        /* --harsh: 25 % of chunks missing at a source (not 4 %), 5x the destroyed disks and the power cuts inside a flush */
	jmp_buf fail_jmp;
	char fail_check[64], fail_msg[512];
} S;

/* ---- utilities ---- */

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (S.rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
static unsigned rn(unsigned n) { return (unsigned)(rnd() % n); }
static bool chance(unsigned pct) { return rn(100) < pct; }

static void fail(const char *check, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail(const char *check, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	snprintf(S.fail_check, sizeof S.fail_check, "%s", check);
	vsnprintf(S.fail_msg, sizeof S.fail_msg, fmt, ap);
	va_end(ap);
	longjmp(S.fail_jmp, 1);
}

/* A store call that must not fail in the simulated world. */
#define MUST(call)                                                                                     \
	do {                                                                                           \
		int must_rc_ = (call);                                                                 \
		if (must_rc_)                                                                          \
			fail("store", "%s: %s", #call, ss_errmsg(must_rc_));                          \
	} while (0)

static int rm_rf(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb))
		return 0;
	if (S_ISDIR(sb.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char sub[1024];
			snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
			rm_rf(sub);
		}
		if (d)
			closedir(d);
		return rmdir(path);
	}
	return unlink(path);
}

/* Copy the directory tree src to dst (which must not exist). */
static int cp_r(const char *src, const char *dst)
{
	struct stat sb;
	if (lstat(src, &sb))
		return -1;
	if (S_ISDIR(sb.st_mode)) {
		if (mkdir(dst, 0700))
			return -1;
		DIR *d = opendir(src);
		struct dirent *e;
		int rc = d ? 0 : -1;
		while (!rc && (e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char a[1024], b[1024];
			snprintf(a, sizeof a, "%s/%s", src, e->d_name);
			snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
			rc = cp_r(a, b);
		}
		if (d)
			closedir(d);
		return rc;
	}
	FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
	int rc = in && out ? 0 : -1;
	char chunk[65536];
	size_t n;
	while (!rc && (n = fread(chunk, 1, sizeof chunk, in)) > 0)
		rc = fwrite(chunk, 1, n, out) == n ? 0 : -1;
	if (in)
		fclose(in);
	if (out && fclose(out))
		rc = -1;
	return rc;
}

static void hex8(const uint8_t *id, char *out) { hex_encode(id, 4, out); }

/* The simulated clock as the links' schedules read it. */
static int64_t now_ms(void) { return S.now / 1000000; }

/* ---- servers ---- */

static void set_act(int a, int b, const repl_act *act);

/* Start server i: its store, its core, a link to every other server. */
static void srv_open(int i)
{
	server *s = &S.s[i];
	MUST(store_open(s->dir, &s->st));
	store_set_node(s->st, s->node);
	s->up = true;
	if (s->power_cut && !s->rotted) {
		/* Whatever the index names survived the cut: it was durable
		 * before it was indexed (planted bug 5 indexes first).  The
		 * store's scrub re-reads every indexed chunk. */
		uint8_t cursor[HASH_LEN] = {0}, bad[HASH_LEN];
		store_scrub_result r;
		MUST(store_scrub(s->st, cursor, UINT64_MAX, bad, 1, &r));
		if (r.nbad)
			fail("durable", "server %d: %u indexed chunks did not survive a power cut", i, r.nbad);
	}
	s->power_cut = false;
	s->core = repl_node_new(s->st, N);
	s->conflicts = 0;
	MUST(store_pending_count(s->st, &s->parked));
	for (int j = 0; j < N; j++) {
		repl_act act = {.kind = ACT_WAIT};
		if (j != i)
			MUST(repl_node_start(s->core, (unsigned)j, now_ms(), &act));
		set_act(i, j, &act);
	}
}

/* Connections of i die with it: replies in flight are lost. */
static void drop_links(int i)
{
	for (int j = 0; j < N; j++) {
		S.pending[i][j].valid = S.pending[j][i].valid = false;
		S.replay[i][j].valid = S.replay[j][i].valid = false;
	}
}

/* power_cut: the server stops as a power failure stops it (see crash). */
static void took(int a, int b, int rc, const repl_act *act, const repl_outcome *out, bool expect_refusal);

static void srv_stop(int i, bool power_cut)
{
	server *s = &S.s[i];
	/* The core is memory: gone (its leases end with it). */
	repl_node_free(s->core);
	s->core = NULL;
	s->power_cut = power_cut;
	if (power_cut)
		store_power_cut(s->st, (unsigned)rn(1001));
	else
		store_close(s->st);
	s->st = NULL;
	s->up = false;
	s->incarnation++;
	/* The ack table is memory too.  The peers' links to it break. */
	memset(&s->acks, 0, sizeof s->acks);
	drop_links(i);
	for (int j = 0; j < N; j++) {
		if (j == i || !S.s[j].up || !repl_node_link(S.s[j].core, (unsigned)i)->up)
			continue;
		repl_act act;
		repl_outcome out = {0};
		repl_node_failed(S.s[j].core, (unsigned)i, now_ms(), &act, &out);
		took(j, i, 0, &act, &out, false);
	}
	for (int j = 0; j < N; j++)
		S.missed[i][j] = true;
}

static void srv_down(int i) { srv_stop(i, false); }

static uint64_t head_of(int i)
{
	store_stats st;
	MUST(store_stats_get(S.s[i].st, &st));
	return st.head_seq;
}

/* ---- the write quorum (server.c copies_locked) ---- */


static void quorum_update(void)
{
	for (unsigned k = 0; k < S.nw; k++) {
		write_ev *w = &S.w[k];
		if (w->state)
			continue;
		server *s = &S.s[w->server];
		if (!s->up || s->incarnation != w->incarnation || S.now - w->t > QUORUM_TIMEOUT) {
			w->state = 2; /* the client was told "not acknowledged" (or nothing) */
			S.c.quorum_failures++;
		} else if (repl_acks_copies(&s->acks, w->rec.seq) >= W) {
			w->state = 1;
			S.c.acked++;
			if (S.verbose)
				fprintf(stderr, "  write #%u acknowledged\n", k);
		}
	}
}

/* ---- client writes ---- */

/* A write event of server i (a write's record as committed, the path's
 * record it was based on), waiting for the quorum. */
static void add_write(int i, const record *rec, const record *base)
{
	write_ev *w = &S.w[S.nw];
	memset(w, 0, sizeof *w);
	w->rec = *rec;
	w->has_base = base != NULL;
	if (base)
		w->base = *base;
	w->server = i;
	w->incarnation = S.s[i].incarnation;
	w->t = S.now;
	S.nw++;
	S.c.writes++;
}

/*
 * mv FROM TO on server i (session.c do_mv: store_rename, acknowledged once
 * the quorum holds both records): TO gets FROM's content with a vector that
 * succeeds TO's, and FROM a tombstone that succeeds FROM's — two write
 * events, each checked like a put and an rm.  False if FROM holds nothing.
 */
static bool client_mv(int i, const char *from)
{
	server *s = &S.s[i];
	const char *to = paths[rn(NPATHS)];
	record src, old, nr, tomb;
	if (!strcmp(from, to) || store_lookup(s->st, from, &src) || src.deleted)
		return false;
	int had = store_lookup(s->st, to, &old);
	if (had && had != SS_ENOENT)
		fail("store", "lookup %s: %s", to, ss_errmsg(had));
	MUST(store_rename(s->st, from, to, &nr));
	MUST(store_lookup(s->st, from, &tomb));
	if (!tomb.deleted || tomb.seq != nr.seq + 1)
		fail("store", "mv %s %s: the tombstone is not the next version", from, to);
	if (S.verbose)
		fprintf(stderr, "t=%lld write #%u-%u on %d: mv %s %s, seq %llu-%llu\n", (long long)((S.now / MS) % 100000),
			S.nw, S.nw + 1, i, from, to, (unsigned long long)nr.seq, (unsigned long long)tomb.seq);
	add_write(i, &nr, had ? NULL : &old);
	S.w[S.nw - 1].moved = true;
	S.w[S.nw - 1].src = src;
	add_write(i, &tomb, &src);
	S.c.moves++;
	return true;
}

static void client_write(int i)
{
	server *s = &S.s[i];
	/* server_quorum_ready: fewer than W-1 reachable peers, nothing written. */
	unsigned live = 0;
	for (int j = 0; j < N; j++)
		live += j != i && S.s[j].up && !S.cut[i][j];
	if (live < W - 1) {
		S.c.unavailable++;
		return;
	}
	/* KNOWN GAP (docs/REPLICATION.md "What is next"): a wiped data
	 * directory keeps the node id.  Its counters follow the wall clock
	 * (vv_bump), so its writes no longer compare as old news and vanish,
	 * but a write made before it has caught up supersedes its own earlier
	 * versions of the path without having seen them (last writer wins, no
	 * conflict copy).  The real server's 2 s catch-up before a write
	 * narrows that window.  By default the simulated server refuses writes
	 * until it has caught up with every peer; --wiped-writes allows them
	 * (1 of 300 seeds then fails, against 40 before the hybrid clock). */
	if (s->rebuilding && !S.wiped_writes) {
		S.c.unavailable++;
		return;
	}
	if (S.nw + 2 > MAXWRITES)
		return;
	write_ev *w = &S.w[S.nw];
	memset(w, 0, sizeof *w);
	const char *path = paths[rn(NPATHS)];
	if (chance(15) && client_mv(i, path))
		return;
	int rc = store_lookup(s->st, path, &w->base);
	if (rc && rc != SS_ENOENT)
		fail("store", "lookup %s: %s", path, ss_errmsg(rc));
	w->has_base = !rc;
	record *r = &w->rec;
	snprintf(r->path, sizeof r->path, "%s", path);
	r->mtime_ns = r->otime_ns = S.now;
	r->mode = 0644;
	if (w->has_base && !w->base.deleted && chance(25)) {
		r->deleted = true;
	} else {
		uint8_t data[64];
		size_t len = 1 + rn(sizeof data);
		for (size_t k = 0; k < len; k++)
			data[k] = (uint8_t)rnd();
		MUST(store_put_small(s->st, data, len, r->root));
		r->size = len;
	}
	MUST(store_commit(s->st, r));
	if (S.verbose) {
		char h[9] = "tomb", b[9] = "-";
		if (!r->deleted)
			hex8(r->root, h);
		if (w->has_base)
			w->base.deleted ? snprintf(b, sizeof b, "tomb") : (hex8(w->base.root, b), 0);
		fprintf(stderr, "t=%lld write #%u on %d: %s %s seq %llu (base %s)\n", (long long)((S.now / MS) % 100000),
			S.nw, i, r->path, h, (unsigned long long)r->seq, b);
	}
	w->server = i;
	w->incarnation = s->incarnation;
	w->t = S.now;
	S.nw++;
	S.c.writes++;
}

/* ---- pulls ---- */

typedef struct collect {
	batch *b;
} collect;

static int collect_rec(void *ctx, const record *r)
{
	batch *b = ((collect *)ctx)->b;
	if (b->n < MAXBATCH)
		b->recs[b->n++] = *r;
	return 0;
}

/* b answers a's PULL (a's core built the request): the same library call
 * as session.c do_pull. */
static void serve_pull(int a, int b, const repl_pull_req *rq, unsigned limit, batch *out)
{
	server *A = &S.s[a], *B = &S.s[b];
	repl_pull_plan plan;
	MUST(repl_serve_pull(B->st, rq, &plan));
	if (plan.regressed) {
		S.c.regressions++;
		if (S.verbose)
			fprintf(stderr, "  %d's log went back (%d's cursor past its head): new index id\n", b, a);
	}
	if (plan.acks) {
		repl_ack *was = repl_acks_find(&B->acks, A->node);
		if (S.verbose && (!was || was->acked != plan.acked))
			fprintf(stderr, "  %d acks %d's log to %llu (cursor %llu)\n", a, b,
				(unsigned long long)plan.acked, (unsigned long long)plan.after);
		repl_acks_seen(&B->acks, A->node, plan.acked, true);
	}
	memset(out, 0, sizeof *out);
	collect c = {out};
	MUST(store_since(B->st, plan.after, limit, collect_rec, &c));
	out->valid = true;
	out->peer_index = plan.index_id;
	out->head = head_of(b);
#if SIM_BUG == 1
	/* PLANTED BUG 1: count the puller as holding what we just SENT it,
	 * before it fetched, applied and made it durable. */
	if (plan.acks && out->n)
		repl_acks_seen(&B->acks, A->node, out->recs[out->n - 1].seq, true);
#endif
}

typedef struct fetch_ctx {
	store *dst, *src;
	bool faults; /* the source may lack a chunk (found rotten on read) */
} fetch_ctx;

/* repl_fetch_fn: copy the tree of id from src (the peer) into dst, like
 * peer.c fetch_tree — missing data chunks, then the node marked complete,
 * children before parents.  With faults, now and then the source answers
 * MISSING for a chunk (as a server does for one its read found corrupt):
 * the rest is still copied, the node stays unmarked, SS_ENOENT — and the
 * record is parked until a fetch from some server completes it. */
static int fetch_tree(fetch_ctx *f, const uint8_t id[HASH_LEN], unsigned depth)
{
	int rc = store_has_node(f->dst, id), missing = 0;
	if (rc)
		return rc < 0 ? rc : 0;
	if (depth > TREE_MAX_LEVEL)
		return ss_fail(SS_ECORRUPT, "tree too deep");
	buf nb, cb;
	buf_init(&nb, TREE_NODE_MAX);
	buf_init(&cb, CDC_MAX);
	if ((rc = store_get_chunk(f->src, id, &nb))) {
		/* A copy that does not verify is forgotten at the source and
		 * answered MISSING (session.c do_read): the record parks. */
		if (rc == SS_ECORRUPT)
			rc = store_forget(f->src, id) ? rc : SS_ENOENT;
		goto out;
	}
	tree_node nd;
	if ((rc = tree_node_decode(nb.p, nb.len, &nd)))
		goto out;
	for (unsigned i = 0; i < nd.count && !rc; i++) {
		tree_entry e;
		tree_node_entry(&nd, i, &e);
		if (nd.level > 1) {
			rc = fetch_tree(f, e.id, depth + 1);
			continue;
		}
		if ((rc = store_has(f->dst, e.id)) != 0) {
			rc = rc < 0 ? rc : 0;
			continue;
		}
		if (f->faults && chance(S.harsh ? 25 : 4) && !getenv("SIM_NO_MISS")) {
			S.c.missing++;
			missing = SS_ENOENT;
			continue;
		}
		if (!(rc = store_get_chunk(f->src, e.id, &cb)))
			rc = store_put_chunk(f->dst, e.id, cb.p, cb.len);
		else if (rc == SS_ECORRUPT && !store_forget(f->src, e.id))
			missing = SS_ENOENT, rc = 0;
		else if (rc == SS_ENOENT)
			missing = rc, rc = 0;
	}
	if (!rc && missing)
		rc = missing;
	else if (!rc)
		rc = store_put_node(f->dst, id, nb.p, nb.len);
out:
	buf_free(&nb);
	buf_free(&cb);
	return rc;
}


/* Has a caught up with every other server (for a destroyed disk)? */
static uint64_t parked_at(int i);

static void rebuild_check(int a)
{
	/* Caught up means applied: a parked record is a version of a path
	 * the server would otherwise write as if it were new. */
	if (!S.s[a].rebuilding || parked_at(a))
		return;
	for (int j = 0; j < N; j++) {
		if (j == a)
			continue;
		if (!S.s[j].up)
			return;
		uint64_t idx, cur;
		MUST(store_cursor_get(S.s[a].st, S.s[j].node, &idx, &cur));
		if (idx != store_index_id(S.s[j].st) || cur < head_of(j))
			return;
	}
	S.s[a].rebuilding = false;
}

static void listing_dump(int a);

/* The flush hook of a power cut inside a flush (see deliver). */
static bool hook_fired;
static int stop_inside_flush(void *ctx)
{
	(void)ctx;
	hook_fired = true;
	return 1;
}

static void srv_stop(int i, bool power_cut);

static void gc(int i);

/* ---- the links: what peer.c's link threads do, as function calls ---- */

static void set_act(int a, int b, const repl_act *act)
{
	S.s[a].act[b] = *act;
	if (act->kind == ACT_SLEEP)
		S.s[a].wake_at[b] = now_ms() + act->wait_ms;
}

/* After an event of a's link to b was handled by a's core: the counters,
 * the link's next action, and those it made ready for a's other links. */
static void took(int a, int b, int rc, const repl_act *act, const repl_outcome *out, bool expect_refusal)
{
	server *A = &S.s[a];
	S.c.parked += out->parked;
	S.c.applied += out->written;
	uint64_t parked = 0;
	MUST(store_pending_count(A->st, &parked));
	if (A->parked + out->parked > parked)
		S.c.unparked += A->parked + out->parked - parked;
	A->parked = parked;
	S.c.resolves += out->resolved;
	uint64_t conflicts = repl_node_counts(A->core)->conflicts;
	S.c.conflicts += conflicts - A->conflicts;
	A->conflicts = conflicts;
	if (rc) {
		/* The link fails and reconnects; the durable cursor is
		 * unchanged, so nothing is skipped. */
		if (rc == SS_EPROTO && expect_refusal)
			S.c.refused++;
		else
			S.c.link_errors++;
		if (S.verbose)
			fprintf(stderr, "  %d<-%d %s: %s\n", a, b,
				rc == SS_EPROTO && expect_refusal ? "refused" : "LINK ERROR", ss_errmsg(rc));
	}
	if (out->parked && S.verbose)
		fprintf(stderr, "  %d<-%d parked %u records\n", a, b, out->parked);
	if (out->written) {
		if (S.verbose) {
			fprintf(stderr, "  %d<-%d applied %u records\n", a, b, out->written);
			listing_dump(a);
		}
		if (S.missed[a][b]) {
			S.c.catchups++;
			S.missed[a][b] = false;
		}
	}
	set_act(a, b, act);
	unsigned j;
	repl_act next;
	while (repl_node_take_ready(A->core, &j, &next))
		set_act(a, (int)j, &next);
	unsigned fetching = 0;
	for (int k = 0; k < N; k++)
		fetching += A->act[k].kind == ACT_FETCH;
	if (fetching > 1)
		fail("core", "server %d has %u links fetching at once", a, fetching);
	rebuild_check(a);
}

static void link_failed(int a, int b)
{
	repl_act act;
	repl_outcome out = {0};
	repl_node_failed(S.s[a].core, (unsigned)b, now_ms(), &act, &out);
	took(a, b, 0, &act, &out, false);
}

/* Now and then the power fails inside an apply's flush: after the fetched
 * chunks' fsync, before their index rows commit (planted bug 5 swaps the
 * two, and the cut must then leave a hole).  Armed before a core event
 * that may apply a batch; true (and server a is down) if it fired. */
static bool cut_armed;
static void arm_cut(int a)
{
	cut_armed = !S.calm && chance(S.harsh ? 10 : 2);
	hook_fired = false;
	if (cut_armed)
		store_set_flush_hook(S.s[a].st, stop_inside_flush, NULL);
}

static bool cut_fired(int a)
{
	if (!cut_armed)
		return false;
	cut_armed = false;
	if (!hook_fired) {
		store_set_flush_hook(S.s[a].st, NULL, NULL);
		return false;
	}
	S.c.crashes++;
	S.c.power_cuts++;
	S.c.flush_cuts++;
	srv_stop(a, true);
	return true;
}

static void debug_batch(int a, int b, const batch *m)
{
	if (!getenv("SIM_DEBUG_PATH") || !S.verbose)
		return;
	fprintf(stderr, "  %d<-%d batch to %llu (%u records)\n", a, b,
		(unsigned long long)(m->n ? m->recs[m->n - 1].seq : 0), m->n);
	for (unsigned k = 0; k < m->n; k++) {
		fprintf(stderr, "     %llu %s %s vv", (unsigned long long)m->recs[k].seq, m->recs[k].path,
			m->recs[k].deleted ? "tomb" : "live");
		for (unsigned e = 0; e < m->recs[k].vv.n; e++)
			fprintf(stderr, " %llx:%llu", (unsigned long long)(m->recs[k].vv.e[e].node >> 32),
				(unsigned long long)m->recs[k].vv.e[e].counter);
		fprintf(stderr, "\n");
	}
}

/* The reply in S.held[a][b] reaches a's link: the core checks it, and
 * applies it at once or asks for its trees. */
static void pulled(int a, int b, bool expect_refusal)
{
	batch *m = &S.held[a][b];
	debug_batch(a, b, m);
	repl_pulled pu = {.index_id = m->peer_index, .head = m->head};
	repl_act act;
	repl_outcome out = {0};
	arm_cut(a);
	int rc = repl_node_pulled(S.s[a].core, (unsigned)b, m->recs, m->n, &pu, now_ms(), &act, &out);
	if (!cut_fired(a))
		took(a, b, rc, &act, &out, expect_refusal);
}

/* ACT_PULL of a's link to b, with the network's faults. */
static void pull(int a, int b, bool faults)
{
	S.c.pulls++;
	batch *m = &S.held[a][b];
	/* Stale: an old reply of this link comes instead (not possible over
	 * one TCP connection; the core's checks must refuse it or it must be
	 * harmless). */
	bool stale = faults && S.replay[a][b].valid && chance(8);
	if (stale) {
		*m = S.replay[a][b];
		m->stale = true;
		S.replay[a][b].valid = false;
		S.c.stale++;
	} else {
		serve_pull(a, b, &S.s[a].act[b].req, faults ? 1 + rn(MAXBATCH) : MAXBATCH, m);
	}
	unsigned r = faults ? rn(100) : 99;
	if (r < 8) {
		/* The reply is lost: the link times out and breaks; it asks
		 * again from its durable cursor once it has reconnected. */
		S.c.dropped++;
		link_failed(a, b);
	} else if (r < 18) {
		/* Delayed: the link waits for it; other links' replies
		 * overtake it. */
		S.pending[a][b] = *m;
		S.c.delayed++;
	} else {
		if (!stale && m->n)
			S.replay[a][b] = *m;
		pulled(a, b, stale);
	}
	quorum_update();
}

static void deliver_pending(void)
{
	int a = (int)rn(N), b = (int)rn(N);
	if (!S.pending[a][b].valid)
		return;
	S.pending[a][b].valid = false;
	if (!S.s[a].up || S.s[a].act[b].kind != ACT_PULL)
		return; /* (not reached: a link that broke lost its replies) */
	S.held[a][b] = S.pending[a][b];
	pulled(a, b, S.held[a][b].stale);
	quorum_update();
}

/* ACT_FETCH of a's link to b: copy the trees from b's store (a chunk b
 * lacks now and then, while faults run); then the core applies. */
static void fetch(int a, int b)
{
	server *A = &S.s[a];
	fetch_ctx f = {A->st, S.s[b].st, !S.calm};
	const repl_act *act = &A->act[b];
	int rc = 0;
	for (unsigned k = 0; k < act->n && !rc; k++)
		if ((rc = fetch_tree(&f, act->roots + (size_t)k * HASH_LEN, 0)) == SS_ENOENT)
			rc = 0;
	if (rc) {
		link_failed(a, b);
		return;
	}
	/* Now and then garbage is collected between the fetch and the apply
	 * (the server's maintenance thread runs any time): the lease keeps
	 * the fetched chunks, which no version references yet. */
	if (chance(10))
		gc(a);
	repl_act next;
	repl_outcome out = {0};
	arm_cut(a);
	rc = repl_node_fetched(A->core, (unsigned)b, now_ms(), &next, &out);
	if (!cut_fired(a))
		took(a, b, rc, &next, &out, false);
	quorum_update();
}

/*
 * One step of a's link to b: what its action says, if it can be done now.
 * A link whose peer is cut off finds out when it next talks to it (one
 * whose peer crashed was told at once: srv_stop).  A PULL waits while its
 * reply is delayed.
 */
static void link_step(int a, int b, bool faults)
{
	server *A = &S.s[a];
	if (a == b || !A->up)
		return;
	bool reachable = S.s[b].up && !S.cut[a][b];
	repl_act act;
	repl_outcome out = {0};
	int rc = 0;
	switch (A->act[b].kind) {
	case ACT_WAIT:
		return;
	case ACT_SLEEP:
		if (now_ms() < A->wake_at[b])
			return;
		rc = repl_node_woke(A->core, (unsigned)b, now_ms(), &act);
		break;
	case ACT_CONNECT:
		if (!reachable) {
			link_failed(a, b);
			return;
		}
		S.c.connects++;
		rc = repl_node_connected(A->core, (unsigned)b, S.s[b].node, now_ms(), &act, &out);
		break;
	case ACT_PULL:
		if (S.pending[a][b].valid)
			return;
		if (reachable)
			pull(a, b, faults);
		else
			link_failed(a, b);
		return;
	case ACT_FETCH:
		if (reachable)
			fetch(a, b);
		else
			link_failed(a, b);
		return;
	}
	took(a, b, rc, &act, &out, false);
}

static uint64_t parked_at(int i)
{
	uint64_t n = 0;
	MUST(store_pending_count(S.s[i].st, &n));
	return n;
}

/* ---- housekeeping (maint.c) ---- */

/* store_gc on server i.  GC stops while a kept tree has a rotten node or
 * lacks one (forgotten as corrupt, not repaired yet): the server's
 * maintenance logs that and tries again later, as here.  Any other error
 * fails the run. */
static void gc(int i)
{
	int rc = store_gc(S.s[i].st, NULL);
	S.c.gcs++;
	if (!rc)
		return;
	unsigned nwant = 0;
	uint8_t one[HASH_LEN];
	MUST(store_wanted(S.s[i].st, one, 1, &nwant));
	if (!nwant && !S.s[i].rotted)
		fail("store", "server %d: store_gc: %s", i, ss_errmsg(rc));
	S.c.gc_stopped++;
}

/* maint.c scrub_main: re-hash every stored chunk; those that do not verify
 * are forgotten (store_scrub) and fetched again from a peer whose copy
 * verifies (peers_repair: each reachable peer in turn). */
static void scrub(int i)
{
	server *s = &S.s[i];
	enum { MAXBAD = 64 };
	uint8_t cursor[HASH_LEN] = {0}, bad[MAXBAD * HASH_LEN];
	store_scrub_result r;
	MUST(store_scrub(s->st, cursor, UINT64_MAX, bad, MAXBAD, &r));
	if (!r.done)
		fail("scrub", "server %d: a whole pass did not finish", i);
	S.c.scrub_found += r.nbad;
	/* What it forgot now and what is still wanted from before (the store
	 * keeps the list across restarts): from each reachable peer in turn. */
	unsigned nwant = 0;
	MUST(store_wanted(s->st, bad, MAXBAD, &nwant));
	buf b;
	buf_init(&b, CDC_MAX);
	unsigned left = 0;
	for (unsigned k = 0; k < nwant; k++) {
		const uint8_t *id = bad + (size_t)k * HASH_LEN;
		bool done = false;
		for (int j = 0; j < N && !done; j++)
			if (j != i && S.s[j].up && !S.cut[i][j] && !store_get_chunk(S.s[j].st, id, &b)) {
				MUST(store_put_chunk(s->st, id, b.p, b.len));
				done = true;
				S.c.repaired++;
			}
		left += !done;
	}
	buf_free(&b);
	if (nwant)
		MUST(store_flush(s->st));
	if (S.verbose && nwant)
		fprintf(stderr, "  %d scrub: %u bad, %u wanted, %u repaired\n", i, r.nbad, nwant, nwant - left);
	/* Found and forgotten: no copy here serves rotten bytes.  Until the
	 * repair, the copy counts as lost (destroy_disk and rot wait). */
	s->rotted = left > 0;
}

static void housekeeping(int i)
{
	server *s = &S.s[i];
	uint64_t versions = 0, tombs = 0;
	/* server_quorum_floor: the writes of this server still waiting. */
	uint64_t floor = UINT64_MAX;
	for (unsigned k = 0; k < S.nw; k++)
		if (!S.w[k].state && S.w[k].server == i && S.w[k].incarnation == s->incarnation)
			floor = MIN(floor, S.w[k].rec.seq);
	MUST(store_expire_history(s->st, S.now, RETENTION, floor, &versions));
	uint64_t acked[N];
	repl_expiry e = {.now_ns = S.now, .retention_ns = RETENTION, .acked = acked};
	for (int j = 0; j < N; j++) {
		repl_ack *a = j != i ? repl_acks_find(&s->acks, S.s[j].node) : NULL;
		if (j != i)
			acked[e.nmembers++] = a ? a->acked : 0;
	}
	MUST(store_expire_tombstones(s->st, repl_expirable, &e, &tombs));
	S.c.tomb_expiries += tombs;
	scrub(i);
	if (versions || tombs || chance(20)) {
		gc(i);
	}
}

/* ---- faults ---- */

/*
 * A crash: half the time a process crash (everything written survives in
 * the page cache), half the time a power cut — with a write in flight
 * (its chunks appended, not yet flushed, never acknowledged), after which
 * every segment loses its unsynced tail but a random part of it (a torn
 * record).  Either way nothing acknowledged may be lost and no record may
 * end up with a hole.
 */
static void crash(void)
{
	int i = (int)rn(N);
	if (!S.s[i].up)
		return;
	S.c.crashes++;
	bool power = chance(50);
	if (power) {
		S.c.power_cuts++;
		uint8_t data[3 * CDC_MIN], root[HASH_LEN];
		size_t len = 1 + rn(sizeof data);
		for (size_t k = 0; k < len; k++)
			data[k] = (uint8_t)rnd();
		MUST(store_put_small(S.s[i].st, data, len, root));
	}
	srv_stop(i, power);
}

/* An operator's backup of a stopped server's data directory (whole, as
 * it is on disk), and later that directory restored from it: the server
 * comes back with an older log and older state (the store's own view is
 * consistent; what it took since is gone from it, as from a lost disk). */
static void backup(int i)
{
	char bak[600];
	snprintf(bak, sizeof bak, "%s.bak", S.s[i].dir);
	rm_rf(bak);
	if (cp_r(S.s[i].dir, bak))
		fail("setup", "cannot copy %s to %s", S.s[i].dir, bak);
	S.s[i].has_backup = true;
	S.s[i].bak_rotted = S.s[i].rotted;
	S.c.backups++;
	if (S.verbose)
		fprintf(stderr, "  backup of %d\n", i);
}

static bool anyone_rebuilding(void)
{
	for (int j = 0; j < N; j++)
		if (S.s[j].rebuilding)
			return true;
	return false;
}

static void restore(int i)
{
	char bak[600];
	snprintf(bak, sizeof bak, "%s.bak", S.s[i].dir);
	if (rm_rf(S.s[i].dir) || cp_r(bak, S.s[i].dir))
		fail("setup", "cannot restore %s from %s", S.s[i].dir, bak);
	S.s[i].incarnation++;
	S.s[i].rebuilding = true; /* like a destroyed disk: see client_write */
	S.s[i].rotted = S.s[i].bak_rotted;
	S.c.restores++;
	if (S.verbose)
		fprintf(stderr, "  %d restored from its backup\n", i);
}

/* A server that is down comes back after a while (about 20 steps) — now
 * and then (model limit: one lost disk at a time, as destroy_disk) from its
 * backup. */
static void restarts(void)
{
	for (int i = 0; i < N; i++) {
		if (S.s[i].up || !chance(5))
			continue;
		if (!S.calm && S.s[i].has_backup && !anyone_rebuilding() && chance(40))
			restore(i);
		else if (!S.calm && chance(25))
			backup(i);
		srv_open(i);
	}
}

/*
 * Bitrot: a byte of a chunk's bytes flips in one of server i's segment
 * files.  Only a chunk both other servers hold, and only while no disk is
 * being rebuilt and no other rot is unrepaired: W=2 survives one lost copy
 * (destroy_disk waits too).  The server's scrub, which runs continuously at
 * a bounded rate, finds it within a few steps (run_scrubs).  Reads verify, so the rotten copy is never
 * served: peers fetching it find it missing, the scrub in housekeeping
 * forgets it and repairs it from a peer.
 */
static void rot(void)
{
	int i = (int)rn(N);
	server *s = &S.s[i];
	for (int j = 0; j < N; j++)
		if (S.s[j].rebuilding || S.s[j].rotted)
			return;
	if (!s->up)
		return;
	/* Its peers reachable, so the scrub can repair it before the other
	 * copies may go (a version superseded there expires in RETENTION). */
	for (int j = 0; j < N; j++)
		if (j != i && (!S.s[j].up || S.cut[i][j]))
			return;
	char segdir[600], path[700];
	snprintf(segdir, sizeof segdir, "%s/seg", s->dir);
	DIR *d = opendir(segdir);
	if (!d)
		return;
	char names[64][32];
	unsigned nn = 0;
	struct dirent *de;
	while ((de = readdir(d)) && nn < 64)
		if (strstr(de->d_name, ".seg") && strlen(de->d_name) < 32)
			snprintf(names[nn++], 32, "%s", de->d_name);
	closedir(d);
	if (!nn)
		return;
	snprintf(path, sizeof path, "%s/%s", segdir, names[rn(nn)]);
	FILE *f = fopen(path, "r+b");
	if (!f)
		return;
	/* Walk the records; pick one of those some other server holds. */
	uint8_t h[SEG_REC_HDR];
	long off = SEG_FILE_HDR, pick = -1;
	uint32_t pick_len = 0;
	unsigned seen = 0;
	buf b;
	buf_init(&b, CDC_MAX);
	while (!fseek(f, off, SEEK_SET) && fread(h, 1, sizeof h, f) == sizeof h && !memcmp(h, "SSCK", 4)) {
		uint32_t len = (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
		bool others = true;
		for (int j = 0; j < N && others; j++)
			others = j == i || (S.s[j].up && !store_get_chunk(S.s[j].st, h + 16, &b));
		if (len && others && store_has(s->st, h + 16) == 1 && rn(++seen) == 0) {
			pick = off;
			pick_len = len;
		}
		off += SEG_REC_HDR + (long)len;
	}
	buf_free(&b);
	if (pick >= 0) {
		long at = pick + SEG_REC_HDR + (long)rn(pick_len);
		int c;
		if (!fseek(f, at, SEEK_SET) && (c = fgetc(f)) != EOF && !fseek(f, at, SEEK_SET) &&
		    fputc(c ^ 0x10, f) != EOF) {
			s->rotted = true;
			S.c.rotted++;
			if (S.verbose)
				fprintf(stderr, "  bitrot on %d: %s offset %ld\n", i, path, at);
		}
	}
	fclose(f);
}

static void destroy_disk(void)
{
	int i = (int)rn(N);
	/* Model limit: W=2 survives one lost disk at a time.  A second disk
	 * goes only once the first one's server caught up with everyone. */
	for (int j = 0; j < N; j++)
		if (S.s[j].rebuilding || S.s[j].rotted)
			return;
	if (S.s[i].up)
		srv_down(i);
	S.s[i].incarnation++;
	if (rm_rf(S.s[i].dir))
		fail("setup", "cannot remove %s", S.s[i].dir);
	srv_open(i); /* a fresh store: new index id */
	S.s[i].rebuilding = true;
	S.c.destroyed++;
}

static void partition(void)
{
	int a = (int)rn(N), b = (int)rn(N);
	if (a == b)
		return;
	bool cut = !S.cut[a][b];
	S.cut[a][b] = S.cut[b][a] = cut;
	if (cut) {
		S.c.partitions++;
		S.missed[a][b] = S.missed[b][a] = true;
		/* The connections break: replies in flight are lost. */
		S.pending[a][b].valid = S.pending[b][a].valid = false;
		S.replay[a][b].valid = S.replay[b][a].valid = false;
	}
}

/* ---- the checks ---- */

/* Every node and data chunk under root reads back verified from st. */
static bool tree_readable(store *st, const uint8_t root[HASH_LEN], unsigned depth)
{
	buf b;
	buf_init(&b, CDC_MAX);
	bool ok = depth <= TREE_MAX_LEVEL && !store_get_chunk(st, root, &b);
	uint8_t node[TREE_NODE_MAX];
	size_t len = b.len;
	tree_node nd;
	ok = ok && len <= TREE_NODE_MAX;
	if (ok) {
		memcpy(node, b.p, len);
		ok = !tree_node_decode(node, len, &nd);
	}
	for (unsigned e = 0; ok && e < nd.count; e++) {
		tree_entry te;
		tree_node_entry(&nd, e, &te);
		ok = nd.level > 1 ? tree_readable(st, te.id, depth + 1) : !store_get_chunk(st, te.id, &b);
	}
	buf_free(&b);
	return ok;
}

typedef struct listing {
	record *v;
	unsigned n, cap;
} listing;

static int list_rec(void *ctx, const record *r)
{
	listing *l = ctx;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->v = xrealloc(l->v, l->cap * sizeof *l->v);
	}
	l->v[l->n++] = *r;
	return 0;
}

static bool same_content(const record *a, const record *b)
{
	return a->deleted == b->deleted && (a->deleted || !memcmp(a->root, b->root, HASH_LEN));
}

static bool vv_le(const vvec *a, const vvec *b)
{
	vv_order o = vv_compare(a, b);
	return o == VV_EQUAL || o == VV_BEFORE;
}

/* Is path a conflict copy of base ("base.sync-conflict-…", or for a name
 * with an extension "stem.sync-conflict-….ext")? */
static bool copy_of(const char *path, const char *base)
{
	char stem[SS_PATH_MAX + 1];
	snprintf(stem, sizeof stem, "%s", base);
	char *slash = strrchr(stem, '/'), *dot = strrchr(stem, '.');
	if (dot && (!slash || dot > slash + 1))
		*dot = 0;
	size_t n = strlen(stem);
	return !strncmp(path, stem, n) && !strncmp(path + n, ".sync-conflict-", 15);
}

/*
 * No acknowledged write lost.  The ground truth is the simulator's log of
 * client writes, each with the record its writer held at the path just
 * before (its "base": what the client overwrote).
 *
 * A write w is PRESENT if the final namespace holds its content (same root,
 * or a tombstone) with a vector ≥ w's — at its path, or for a live write at
 * a conflict copy of its path (a loser keeps its own vector; a winner at the
 * path carries the merged one, which is ≥ w's).
 *
 * A write w' SUPERSEDES w if w' was written on top of w: w'.base has w's
 * content and a vector ≥ w's (the client saw w, perhaps merged with other
 * versions of the same content, and replaced it).  Vector order alone is
 * not enough: after a conflict the winner's merged vector dominates the
 * loser, whose content must nevertheless survive as a copy.
 *
 * w is OK if it is present or some write that supersedes it is OK (writes
 * are checked newest first, so that is known).  Every ACKNOWLEDGED write
 * must be OK; unacknowledged ones may legitimately be lost (the only copy
 * was on a destroyed disk).
 *
 * Deletes: an acknowledged rm is OK if the path's final record (or its
 * absence after the tombstone expired) has a vector ≥ its own — an update
 * concurrent with an rm wins by design and leaves no copy, but then its
 * merged vector is ≥ the rm's — or holds the content of a write made after
 * the rm (see check_acks).  A resurrection by an older version fails
 * (vector AFTER or CONCURRENT), and also shows up as a digest mismatch.
 */
static bool present(const write_ev *w, const listing *all, bool path_absent)
{
	if (w->rec.deleted)
		return path_absent;
	for (unsigned k = 0; k < all->n; k++) {
		const record *r = &all->v[k];
		if ((!strcmp(r->path, w->rec.path) || copy_of(r->path, w->rec.path)) && same_content(r, &w->rec) &&
		    vv_le(&w->rec.vv, &r->vv))
			return true;
	}
	return false;
}

static void listing_dump(int a)
{
	listing l = {0};
	MUST(store_list(S.s[a].st, "", list_rec, &l));
	fprintf(stderr, "  applied on %d, now:", a);
	for (unsigned k = 0; k < l.n; k++) {
		char h[9];
		hex8(l.v[k].root, h);
		fprintf(stderr, " %s=%s", l.v[k].path, h);
	}
	fprintf(stderr, "\n");
	free(l.v);
	const char *dbg = getenv("SIM_DEBUG_PATH");
	record cur;
	if (dbg && !store_lookup(S.s[a].st, dbg, &cur)) {
		fprintf(stderr, "    %s on %d: %s vv", dbg, a, cur.deleted ? "tomb" : "live");
		for (unsigned k = 0; k < cur.vv.n; k++)
			fprintf(stderr, " %llx:%llu", (unsigned long long)(cur.vv.e[k].node >> 32),
				(unsigned long long)cur.vv.e[k].counter);
		fprintf(stderr, "\n");
	}
}

static void check_acks(store *st)
{
	/* store_list gives live records; the path's current record (maybe a
	 * tombstone) comes from store_lookup. */
	listing all = {0};
	MUST(store_list(st, "", list_rec, &all));
	bool *ok = xcalloc(S.nw ? S.nw : 1, sizeof *ok);
	for (unsigned k = S.nw; k-- > 0;) {
		const write_ev *w = &S.w[k];
		record cur;
		int rc = store_lookup(st, w->rec.path, &cur);
		if (rc && rc != SS_ENOENT)
			fail("store", "lookup: %s", ss_errmsg(rc));
		if (w->rec.deleted && !rc && (vv_le(&w->rec.vv, &cur.vv) || cur.deleted)) {
			/* The delete stands, or a later / concurrent update won —
			 * or the path is deleted anyway (an expired tombstone, a
			 * new file, deleted again): nothing deleted came back. */
			ok[k] = true;
			continue;
		}
		/* A write made after the rm (later in the run) may hold the path
		 * with a vector concurrent to the rm's: once the tombstone expired
		 * everywhere, a new write starts from no record.  That is a new
		 * file, not the deleted one back; content written before the rm
		 * coming back still fails. */
		if (w->rec.deleted && !rc && !cur.deleted) {
			for (unsigned j = k + 1; j < S.nw && !ok[k]; j++)
				ok[k] = !strcmp(S.w[j].rec.path, w->rec.path) && same_content(&S.w[j].rec, &cur);
			if (ok[k])
				continue;
		}
		ok[k] = present(w, &all, rc == SS_ENOENT);
		for (unsigned j = k + 1; j < S.nw && !ok[k]; j++)
			ok[k] = ok[j] && S.w[j].has_base && !strcmp(S.w[j].rec.path, w->rec.path) &&
				same_content(&S.w[j].base, &w->rec) && vv_le(&w->rec.vv, &S.w[j].base.vv);
		/* Or an mv took it (or what superseded it) to another path, and
		 * the moved record is there. */
		for (unsigned j = k + 1; j < S.nw && !ok[k]; j++)
			ok[k] = ok[j] && S.w[j].moved && !strcmp(S.w[j].src.path, w->rec.path) &&
				same_content(&S.w[j].src, &w->rec) && vv_le(&w->rec.vv, &S.w[j].src.vv);
		if (!ok[k] && w->state == 1) {
			char h[9] = "--------";
			if (!w->rec.deleted)
				hex8(w->rec.root, h);
			char ch[9] = "(none)";
			if (!rc && !cur.deleted)
				hex8(cur.root, ch);
			free(ok);
			free(all.v);
			fail("acked-write-lost",
			     "acknowledged %s of %s (content %s, seq %llu on server %d, vector of %u nodes) is gone: "
			     "the path holds %s%s",
			     w->rec.deleted ? "rm" : "put", w->rec.path, h, (unsigned long long)w->rec.seq, w->server,
			     w->rec.vv.n, rc ? "nothing" : cur.deleted ? "a tombstone" : ch,
			     !rc && vv_compare(&w->rec.vv, &cur.vv) == VV_CONCURRENT ? " (concurrent)" : "");
		}
	}
	free(ok);
	free(all.v);
}

static void check_all(void)
{
	store_stats st[N];
	listing l[N];
	memset(l, 0, sizeof l);
	/* The namespace sums a store keeps in memory, per write, are what a
	 * reopen computes from the database. */
	for (int i = 0; i < N; i++) {
		store_stats before, after;
		MUST(store_stats_get(S.s[i].st, &before));
		srv_down(i);
		srv_open(i);
		MUST(store_stats_get(S.s[i].st, &after));
		if (memcmp(before.digest, after.digest, HASH_LEN) || before.files != after.files ||
		    before.bytes != after.bytes)
			fail("digest", "server %d's namespace sums drifted from its database (%llu files in memory, "
				       "%llu on disk)", i, (unsigned long long)before.files, (unsigned long long)after.files);
	}
	for (int i = 0; i < N; i++) {
		MUST(store_stats_get(S.s[i].st, &st[i]));
		MUST(store_list(S.s[i].st, "", list_rec, &l[i]));
	}
	for (int i = 0; i < N; i++) {
		store_pending p;
		unsigned n = 0;
		MUST(store_pending_list(S.s[i].st, 0, &p, 1, &n));
		if (!n)
			continue;
		char h[9], where[64] = "";
		hex8(p.rec.root, h);
		for (int j = 0; j < N; j++) {
			record cur;
			int has = store_has_node(S.s[j].st, p.rec.root), found = !store_lookup(S.s[j].st, p.rec.path, &cur);
			snprintf(where + strlen(where), sizeof where - strlen(where), " %d:%s%s", j, has == 1 ? "tree" : "-",
				 !found ? "/no-record" : cur.deleted ? "/tomb" : vv_compare(&p.rec.vv, &cur.vv) == VV_CONCURRENT ? "/concurrent" : "/ordered");
		}
		fail("converged", "server %d still has %llu parked records; first: %s %s from %016llx seq %llu (%u vv "
				  "entries;%s)", i, (unsigned long long)parked_at(i), p.rec.path, p.rec.deleted ? "tomb" : h,
		     (unsigned long long)p.peer, (unsigned long long)p.peer_seq, p.rec.vv.n, where);
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++) {
			if (i == j)
				continue;
			uint64_t idx, cur;
			MUST(store_cursor_get(S.s[i].st, S.s[j].node, &idx, &cur));
			if (idx != store_index_id(S.s[j].st) || cur != st[j].head_seq)
				fail("converged", "server %d's cursor over %d is %llu, its head %llu", i, j,
				     (unsigned long long)cur, (unsigned long long)st[j].head_seq);
		}
	for (int i = 1; i < N; i++) {
		bool same = l[i].n == l[0].n;
		for (unsigned k = 0; same && k < l[0].n; k++)
			same = !strcmp(l[i].v[k].path, l[0].v[k].path) && same_content(&l[i].v[k], &l[0].v[k]) &&
			       vv_compare(&l[i].v[k].vv, &l[0].v[k].vv) == VV_EQUAL;
		if (!same || memcmp(st[i].digest, st[0].digest, HASH_LEN) || st[i].files != st[0].files) {
			char detail[256] = "";
			for (unsigned k = 0; k < l[0].n || k < l[i].n; k++) {
				const record *x = k < l[0].n ? &l[0].v[k] : NULL, *y = k < l[i].n ? &l[i].v[k] : NULL;
				if (!x || !y || strcmp(x->path, y->path) || !same_content(x, y)) {
					snprintf(detail, sizeof detail, " (first difference: %.80s on 0, %.80s on %d)",
						 x ? x->path : "-", y ? y->path : "-", i);
					break;
				}
				if (vv_compare(&x->vv, &y->vv) != VV_EQUAL) {
					int o = snprintf(detail, sizeof detail, " (first difference: the vectors of %.80s:", x->path);
					for (int j = 0; j < N && o < (int)sizeof detail - 40; j++) {
						record c;
						if (store_lookup(S.s[j].st, x->path, &c))
							continue;
						o += snprintf(detail + o, sizeof detail - (size_t)o, " %d:", j);
						for (unsigned e = 0; e < c.vv.n && o < (int)sizeof detail - 30; e++)
							o += snprintf(detail + o, sizeof detail - (size_t)o, "%s%llx=%llu", e ? "," : "",
								      (unsigned long long)(c.vv.e[e].node >> 32),
								      (unsigned long long)c.vv.e[e].counter);
					}
					if (o < (int)sizeof detail - 1)
						snprintf(detail + o, sizeof detail - (size_t)o, ")");
					break;
				}
			}
			fail("namespace", "server %d holds %llu files, server 0 %llu; digests %s%s", i,
			     (unsigned long long)st[i].files, (unsigned long long)st[0].files,
			     memcmp(st[i].digest, st[0].digest, HASH_LEN) ? "differ" : "equal", detail);
		}
	}
	/* Every live tree complete and readable everywhere: walked and read
	 * (node marks are only hints; a forgotten chunk resets them all). */
	for (int i = 0; i < N; i++)
		for (unsigned k = 0; k < l[0].n; k++)
			if (!l[0].v[k].deleted && !tree_readable(S.s[i].st, l[0].v[k].root, 0))
				fail("chunks", "server %d cannot read the tree of %s", i, l[0].v[k].path);
	for (int i = 0; i < N; i++)
		free(l[i].v);
	check_acks(S.s[0].st);
}

/* ---- one run ---- */

static void heal_and_converge(void)
{
	S.calm = true;
	for (int i = 0; i < N; i++) {
		if (!S.s[i].up)
			srv_open(i);
		for (int j = 0; j < N; j++) {
			S.cut[i][j] = false;
			S.pending[i][j].valid = S.replay[i][j].valid = false;
		}
	}
	/* Every link steps as its schedule says; a round with no progress
	 * while records are still parked jumps the clock to the first link's
	 * retry of them (its backoff), a few times at most. */
	for (int round = 0, idle = 0; round < 256; round++) {
		bool progress = false;
		int64_t retry = INT64_MAX;
		for (int a = 0; a < N; a++)
			for (int b = 0; b < N; b++) {
				if (a == b)
					continue;
				uint64_t i0, c0, i1, c1, p0 = parked_at(a);
				bool up0 = repl_node_link(S.s[a].core, (unsigned)b)->up;
				MUST(store_cursor_get(S.s[a].st, S.s[b].node, &i0, &c0));
				for (int k = 0; k < 3; k++)
					link_step(a, b, false);
				MUST(store_cursor_get(S.s[a].st, S.s[b].node, &i1, &c1));
				progress |= i0 != i1 || c0 != c1 || p0 != parked_at(a) ||
					    up0 != repl_node_link(S.s[a].core, (unsigned)b)->up;
				if (parked_at(a))
					retry = MIN(retry, repl_node_link(S.s[a].core, (unsigned)b)->parked_retry_at);
			}
		S.now += MS;
		quorum_update();
		if (progress)
			continue;
		if (retry == INT64_MAX || ++idle > 8)
			return;
		if (retry > now_ms())
			S.now = retry * 1000000;
	}
	fail("converged", "still changing after 256 rounds of link steps");
}

static int run(uint64_t seed, unsigned steps)
{
	memset(&S.s, 0, sizeof S.s);
	memset(S.cut, 0, sizeof S.cut);
	memset(S.missed, 0, sizeof S.missed);
	memset(S.pending, 0, sizeof S.pending);
	memset(S.replay, 0, sizeof S.replay);
	memset(S.rc, 0, sizeof S.rc);
	S.calm = false;
	S.seed = seed;
	S.rng = seed;
	S.now = 1700000000LL * 1000000000LL;
	S.nw = 0;
	for (int i = 0; i < N; i++) {
		snprintf(S.s[i].dir, sizeof S.s[i].dir, "%s/s%d", S.base, i);
		rm_rf(S.s[i].dir);
		char bak[600];
		snprintf(bak, sizeof bak, "%s.bak", S.s[i].dir);
		rm_rf(bak);
		S.s[i].node = 0x5100000000000001ULL + ((uint64_t)i << 32);
	}
	int result = 0;
	if (setjmp(S.fail_jmp)) {
		printf("FAIL seed %llu [%s]: %s\n  replay: make sim SEED=%llu\n", (unsigned long long)seed,
		       S.fail_check, S.fail_msg, (unsigned long long)seed);
		fflush(stdout);
		result = 1;
		goto cleanup;
	}
	for (int i = 0; i < N; i++)
		srv_open(i);
	for (unsigned step = 0; step < steps; step++) {
		S.now += (1 + rn(3)) * MS;
		unsigned r = rn(1000);
		if (r < 250) {
			int i = (int)rn(N);
			if (S.s[i].up)
				client_write(i);
		} else if (r < 650) {
			/* A link runs a few actions (connect, PULL, fetch). */
			int a = (int)rn(N), b = (int)rn(N);
			for (int k = 0; k < 3; k++)
				link_step(a, b, true);
		} else if (r < 780) {
			deliver_pending();
		} else if (r < 800) {
			crash();
		} else if (r < 830) {
			partition();
		} else if (r < 900) {
			int i = (int)rn(N);
			if (S.s[i].up)
				housekeeping(i);
		} else if (r < (S.harsh ? 920u : 904u)) {
			destroy_disk();
		} else if (r < 960) {
			link_step((int)rn(N), (int)rn(N), true);
		} else if (r < 966) {
			rot();
		}
		/* The scrub thread runs all the time: a rotten copy is found
		 * (and repaired) within a few steps. */
		for (int i = 0; i < N; i++)
			if (S.s[i].up && S.s[i].rotted && chance(30))
				scrub(i);
		restarts();
		quorum_update();
	}
	heal_and_converge();
	/* Housekeeping once more everywhere, then converge again: expiry
	 * after healing must not break anything either. */
	S.now += 2 * RETENTION;
	for (int i = 0; i < N; i++)
		housekeeping(i);
	heal_and_converge();
	check_all();
cleanup:
	for (int i = 0; i < N; i++) {
		repl_node_free(S.s[i].core);
		S.s[i].core = NULL;
		if (S.s[i].st)
			store_close(S.s[i].st);
		S.s[i].st = NULL;
		rm_rf(S.s[i].dir);
		char bak[600];
		snprintf(bak, sizeof bak, "%s.bak", S.s[i].dir);
		rm_rf(bak);
	}
	return result;
}

int main(int argc, char **argv)
{
	uint64_t first = 1, nseeds = 1000;
	unsigned steps = 300;
	bool one = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
			nseeds = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			first = strtoull(argv[++i], NULL, 0), one = true;
		else if (!strcmp(argv[i], "--first") && i + 1 < argc)
			first = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
			steps = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--tick-ms") && i + 1 < argc)
			MS = (int64_t)(strtod(argv[++i], NULL) * 1e6);
		else if (!strcmp(argv[i], "--wiped-writes"))
			S.wiped_writes = true;
		else if (!strcmp(argv[i], "--harsh"))
			S.harsh = true;
		else if (!strcmp(argv[i], "-v"))
			S.verbose = true;
		else {
			fprintf(stderr, "usage: %s [--seeds N] [--first S] [--seed S] [--steps K] [--tick-ms T] [--wiped-writes] [--harsh] [-v]\n", argv[0]);
			return 2;
		}
	}
	if (one)
		nseeds = 1;
	log_level = S.verbose ? LOG_WARN : -1;
	const char *tmp = getenv("TMPDIR");
	struct stat sb;
	if (!tmp || !*tmp)
		tmp = !stat("/dev/shm", &sb) && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
	snprintf(S.base, sizeof S.base, "%s/syncstore-sim-%d", tmp, (int)getpid());
	if (mkdir(S.base, 0700)) {
		perror(S.base);
		return 2;
	}
	S.w = xmalloc(MAXWRITES * sizeof *S.w);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	counters total = {0};
	unsigned failed = 0;
	for (uint64_t k = 0; k < nseeds; k++) {
		memset(&S.c, 0, sizeof S.c);
		failed += run(first + k, steps);
		counters *c = &S.c;
		uint64_t *dst = (uint64_t *)&total, *src = (uint64_t *)c;
		for (size_t f = 0; f < sizeof total / sizeof(uint64_t); f++)
			dst[f] += src[f];
		if (one || S.verbose)
			printf("seed %llu: %llu writes (%llu acked, %llu not), %llu conflicts, %llu catch-ups, %llu "
			       "tombstones expired\n",
			       (unsigned long long)(first + k), (unsigned long long)c->writes,
			       (unsigned long long)c->acked, (unsigned long long)c->quorum_failures,
			       (unsigned long long)c->conflicts, (unsigned long long)c->catchups,
			       (unsigned long long)c->tomb_expiries);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	rm_rf(S.base);
	free(S.w);
	printf("sim%s: %llu seeds from %llu, %u steps each, %.1f s (%.1f ms/seed)\n",
	       SIM_BUG ? " (planted bug)" : "", (unsigned long long)nseeds, (unsigned long long)first, steps, secs,
	       secs * 1000 / (double)nseeds);
	printf("  exercised: %llu conflicts, %llu catch-ups, %llu quorum failures, %llu tombstone expiries, %llu "
	       "records parked\n",
	       (unsigned long long)total.conflicts, (unsigned long long)total.catchups,
	       (unsigned long long)total.quorum_failures, (unsigned long long)total.tomb_expiries,
	       (unsigned long long)total.parked);
	printf("  also: %llu writes (%llu acknowledged, %llu refused: no quorum reachable), %llu pulls, %llu "
	       "records written by applies, %llu replies dropped, %llu delayed, %llu stale; "
	       "%llu batches refused as expected, %llu link errors; %llu crashes (%llu power cuts, %llu inside a "
	       "flush), %llu disks destroyed, %llu partitions, %llu GCs; %llu chunks missing at a source, %llu "
	       "parked records applied in %llu tries; %llu backups, %llu restored (%llu logs found gone back); %llu "
	       "moves; %llu link connects; %llu bytes rotted, %llu bad chunks found by scrub, %llu repaired "
	       "from a peer, %llu GCs stopped by a rotten or missing node\n",
	       (unsigned long long)total.writes, (unsigned long long)total.acked,
	       (unsigned long long)total.unavailable, (unsigned long long)total.pulls,
	       (unsigned long long)total.applied, (unsigned long long)total.dropped,
	       (unsigned long long)total.delayed,
	       (unsigned long long)total.stale, (unsigned long long)total.refused,
	       (unsigned long long)total.link_errors, (unsigned long long)total.crashes,
	       (unsigned long long)total.power_cuts, (unsigned long long)total.flush_cuts,
	       (unsigned long long)total.destroyed, (unsigned long long)total.partitions,
	       (unsigned long long)total.gcs, (unsigned long long)total.missing, (unsigned long long)total.unparked,
	       (unsigned long long)total.resolves, (unsigned long long)total.backups, (unsigned long long)total.restores,
	       (unsigned long long)total.regressions, (unsigned long long)total.moves,
	       (unsigned long long)total.connects, (unsigned long long)total.rotted,
	       (unsigned long long)total.scrub_found, (unsigned long long)total.repaired,
	       (unsigned long long)total.gc_stopped);
	if (failed) {
		printf("sim: %u of %llu seeds FAILED (each printed above with its seed)\n", failed,
		       (unsigned long long)nseeds);
		return 1;
	}
	if (!one && (!total.conflicts || !total.catchups || !total.quorum_failures || !total.tomb_expiries ||
		     !total.parked || !total.resolves || !total.scrub_found)) {
		printf("sim: FAILED: a counter above is zero — the run did not exercise it\n");
		return 1;
	}
	printf("sim: ok\n");
	return 0;
}
