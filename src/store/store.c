/*
 * store.c — the data directory: lock, format, chunk index and group commit,
 * leases, and the namespace (records, versions, version vectors) in SQLite.
 *
 * Metadata schema (meta.db, journal_mode=WAL, synchronous=FULL).  Unsigned
 * 64-bit values (size, origin, vv counters, peer ids, cursors) are stored as
 * the int64 with the same bits; nothing compares them in SQL.
 *
 *   table     column       type              meaning
 *   --------  -----------  ----------------  ------------------------------
 *   chunks    id           BLOB PRIMARY KEY  chunk id (SHA-256); WITHOUT ROWID
 *             seg          INTEGER           segment number
 *             off          INTEGER           offset of the record header
 *             len          INTEGER           chunk length in bytes
 *             (index chunks_seg on (seg, off): a segment's records, for GC)
 *   nodes     id           BLOB PRIMARY KEY  tree nodes marked complete
 *   segments  seg          INTEGER PRIMARY KEY
 *             indexed_end  INTEGER           end of the last indexed record;
 *                                            recovery scans from here
 *   versions  seq          INTEGER PRIMARY KEY AUTOINCREMENT: local sequence,
 *                                            never reused
 *             path         TEXT              remote path
 *             size, mode, mtime_ns           as in struct record
 *             root         BLOB (32 bytes)   manifest root; zeros when deleted
 *             deleted      INTEGER           0 or 1
 *             vv           BLOB              version vector, see below
 *             origin       INTEGER           short id of the node that took it
 *             otime_ns     INTEGER           when the origin took it
 *             (index versions_path on (path, seq) for history)
 *   current   path         TEXT PRIMARY KEY  one row per path ever written,
 *             seq          INTEGER           → versions.seq; WITHOUT ROWID
 *   settings  key          TEXT PRIMARY KEY  free-form settings; WITHOUT ROWID
 *             value        any
 *   cursors   peer         INTEGER PRIMARY KEY: short id of a peer pulled from
 *             index_id     INTEGER           the peer's index id the seq is in
 *             seq          INTEGER           highest of the peer's sequence
 *                                            numbers applied here; written in
 *                                            the transaction that applies them
 *
 * Version vector blob: n × (node u64 LE, counter u64 LE), sorted by node,
 * strictly increasing, n ≤ VV_MAX.
 *
 * Namespace digest (store_stats_get; every server must compute the same):
 * each live row of current contributes h = SHA-256 of
 *   path (without terminator) · 0x00 · root (32 bytes) · n (u32 LE) ·
 *   n × (node u64 LE, counter u64 LE)
 * where n and the pairs are the record's version vector, sorted by node;
 * the digest is SHA-256 of the sum of every h (as 256-bit little-endian
 * numbers, mod 2^256), 32 bytes LE.  A sum, not a hash over a sorted scan,
 * so that it is kept up to date write by write (ns_change) instead of
 * costing a scan of the namespace per PULL reply.
 * Local sequence numbers, sizes, modes and times are not part of it: equal
 * vectors with equal roots mean the same version everywhere.  Tombstones
 * are not either: they expire at different moments on different servers,
 * while the live namespace is what must agree.
 *
 * Group commit.  store_put_chunk appends to a segment and records the row in
 * an in-memory pending table (by id) with a put sequence number.  One
 * flusher at a time snapshots the pending table, fsyncs the segments
 * (outside every store lock, so other threads keep appending), and inserts
 * the rows in one SQLite transaction; then it removes them from the pending
 * table and advances done_seq.  A flush call waits until done_seq covers the
 * puts made before it started, so concurrent callers share one fsync.
 *
 * Locks, always taken in this order (mu may be taken briefly inside db_mu,
 * never the other way round):
 *   gc_mu     one store_gc at a time
 *   flushing  (a flag under mu, waited for on flush_cv) one flusher at a
 *             time; store_gc takes it too while it re-points index rows
 *   put_mu    one put at a time: the "already present?" check, the append
 *             and the pending insert are atomic against other puts
 *   db_mu     the SQLite connection and its statements (one connection)
 *   mu        pending table, flush state, leases, node id, gone_gen
 * The segment set has its own leaf locks.  store_apply_remote calls its
 * decide callback with db_mu held, so the callback must not use the store.
 * Every write to the namespace (commit, rename, apply) reads the current
 * records it builds on inside its own transaction, under db_mu: a record
 * applied from a peer is never overwritten by a vector read before it.
 *
 * Leases are an in-memory list; each remembers the segment append point
 * (segment number, offset) when it began.  The watermark is the minimum over
 * live leases ("past everything" when none is live), and store_gc never drops
 * a chunk whose indexed record lies at or after it: whatever an upload or a
 * fetch stores after taking its lease survives until the lease ends.  A chunk
 * older than the watermark that an upload in flight merely found present
 * (store_has said yes, so it was never sent) is not pinned and may be
 * dropped if no kept version references it; that upload's commit then fails
 * its whole-tree check (store_commit re-checks under the lock when gone_gen
 * moved, and returns SS_ENOENT naming the chunk), nothing acknowledged is
 * lost, and the client's retry is asked for the chunk and sends it again.
 *
 * Garbage collection (store_gc; docs/STORAGE.md has the full argument):
 * mark what every version reaches, walking the database in batches without
 * holding db_mu; sweep unmarked rows older than the watermark in batched
 * transactions, each of which first marks (under db_mu) the versions
 * committed since the mark, so no version can slip in between; then compact
 * sealed segments less than half live: copy, fsync, re-point in one
 * transaction, and only then delete the old file.  Readers that looked a
 * record up before it moved retry the lookup when the read fails (read_at).
 *
 * store_list prefixes match whole components ("a/b" lists "a/b" and
 * "a/b/…", not "a/bc"); a prefix ending in '/' or "" is a plain string
 * prefix.  Tombstones are listed by no walk but history and the digest.
 *
 * Limits: pending bytes above STORE_PENDING_BYTES (or rows above
 * STORE_PENDING_ROWS) make the put that crosses it flush, which also holds
 * back other putters until the flush completes.  store_list and
 * store_history hand records to the callback in batches of STORE_LIST_BATCH
 * without holding any lock, so callbacks may use the store; a walk is not a
 * snapshot.  store_stats_get scans the whole current table under db_mu.
 */
#include "store.h"
#include "segment.h"
#include "store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_PENDING_BYTES (64u << 20)
#define STORE_PENDING_ROWS 65536
#define STORE_RECOVER_BATCH 4096
#define STORE_LIST_BATCH 64
#define STORE_BUSY_MS 5000
#define STORE_CLOCK_MARGIN (1ull << 32) /* store_log_regressed's jump beyond `lost` */

/* ---- pending table: chunks appended but not yet indexed ---- */

typedef struct pend_ent {
	uint8_t id[HASH_LEN];
	seg_loc loc;
	uint64_t seq; /* put sequence; 0 marks an empty slot */
	bool node;    /* a tree node whose subtree is complete: index it in nodes too */
} pend_ent;

/* Open addressing with linear probing; ids are SHA-256, so their first
 * bytes are already a uniform hash. */
typedef struct pend_table {
	pend_ent *v;
	size_t cap, n; /* cap is 0 or a power of two, at most half full */
} pend_table;

static size_t pend_home(const pend_table *t, const uint8_t id[HASH_LEN])
{
	return (size_t)rd64(id) & (t->cap - 1);
}

static pend_ent *pend_find(pend_table *t, const uint8_t id[HASH_LEN])
{
	if (!t->cap)
		return NULL;
	for (size_t i = pend_home(t, id);; i = (i + 1) & (t->cap - 1)) {
		if (!t->v[i].seq)
			return NULL;
		if (!memcmp(t->v[i].id, id, HASH_LEN))
			return &t->v[i];
	}
}

static void pend_insert(pend_table *t, const pend_ent *e)
{
	size_t i = pend_home(t, e->id);
	while (t->v[i].seq)
		i = (i + 1) & (t->cap - 1);
	t->v[i] = *e;
	t->n++;
}

static void pend_add(pend_table *t, const pend_ent *e)
{
	SS_ASSERT(e->seq);
	if ((t->n + 1) * 2 > t->cap) {
		pend_table old = *t;
		t->cap = old.cap ? old.cap * 2 : 1024;
		t->v = xcalloc(t->cap, sizeof *t->v);
		t->n = 0;
		for (size_t i = 0; i < old.cap; i++)
			if (old.v[i].seq)
				pend_insert(t, &old.v[i]);
		free(old.v);
	}
	pend_insert(t, e);
}

/* Delete with backward shift, so lookups need no tombstones. */
static void pend_del(pend_table *t, const uint8_t id[HASH_LEN])
{
	pend_ent *e = pend_find(t, id);
	if (!e)
		return;
	size_t mask = t->cap - 1, i = (size_t)(e - t->v), j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (!t->v[j].seq)
			break;
		size_t k = pend_home(t, t->v[j].id);
		/* Entry j may move to the hole at i unless its home lies
		 * cyclically in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		t->v[i] = t->v[j];
		i = j;
	}
	t->v[i].seq = 0;
	t->n--;
}

/* ---- the store ---- */

/* A lease and the append point when it began: GC keeps every chunk whose
 * record lies at or after the oldest live lease's point (the watermark). */
typedef struct store_lease {
	uint64_t id;
	uint32_t seg;
	uint64_t off;
} store_lease;

enum {
	Q_BEGIN,
	Q_COMMIT,
	Q_ROLLBACK,
	Q_CHUNK_HAS,
	Q_CHUNK_LOC,
	Q_CHUNK_ADD,
	Q_NODE_HAS,
	Q_NODE_ADD,
	Q_NODE_DEL,
	Q_SEG_END_GET,
	Q_SEG_END_SET,
	Q_CUR_GET,
	Q_CUR_SET,
	Q_VER_GET,
	Q_VER_ADD,
	Q_LIST_FROM,
	Q_LIST_AFTER,
	Q_HISTORY,
	Q_DIGEST,
	Q_HEAD,
	Q_SINCE,
	Q_CURSOR_GET,
	Q_CURSOR_SET,
	Q_CHUNK_SCAN,
	Q_CHUNK_SEG,
	Q_CHUNK_MOVE,
	Q_CHUNK_DROP,
	Q_SEG_LIVE,
	Q_SEG_ALL,
	Q_SEG_DEL,
	Q_ROOTS,
	Q_NODE_SCAN,
	Q_HIST_SCAN,
	Q_VER_DROP,
	Q_TOMBS,
	Q_PATH_DROP_VERSIONS,
	Q_PATH_DROP_CURRENT,
	Q_TOMB_COUNT,
	Q_SAVE,
	Q_SAVE_UNDO,
	Q_SAVE_DONE,
	Q_PEND_ADD,
	Q_PEND_LIST,
	Q_PEND_DEL,
	Q_PEND_MIN,
	Q_PEND_COUNT,
	Q_PEND_MAX,
	Q_PEND_PATH,
	Q_PEND_OLD_LOG,
	Q_VER_AT,
	Q_PEND_NEWEST,
	Q_PEND_MOVE_ACK,
	Q_PEND_CONTENT_ELSEWHERE,
	Q_PEND_DROP_PEER,
	Q_PEND_ROOTS,
	Q_CURSOR_FP_GET,
	Q_CURSOR_FP_SET,
	Q_COUNT
};

#define REC_COLS "v.seq, v.path, v.size, v.mode, v.mtime_ns, v.root, v.deleted, v.vv, v.origin, v.otime_ns"

static const char *const store_sql[Q_COUNT] = {
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
	[Q_CHUNK_HAS] = "SELECT 1 FROM chunks WHERE id = ?1",
	[Q_CHUNK_LOC] = "SELECT seg, off, len FROM chunks WHERE id = ?1",
	[Q_CHUNK_ADD] = "INSERT OR IGNORE INTO chunks(id, seg, off, len) VALUES (?1, ?2, ?3, ?4)",
	[Q_NODE_HAS] = "SELECT 1 FROM nodes WHERE id = ?1",
	[Q_NODE_ADD] = "INSERT OR IGNORE INTO nodes(id) VALUES (?1)",
	[Q_NODE_DEL] = "DELETE FROM nodes WHERE id = ?1",
	[Q_SEG_END_GET] = "SELECT indexed_end FROM segments WHERE seg = ?1",
	[Q_SEG_END_SET] = "INSERT INTO segments(seg, indexed_end) VALUES (?1, ?2) ON CONFLICT(seg) "
			  "DO UPDATE SET indexed_end = max(indexed_end, excluded.indexed_end)",
	[Q_CUR_GET] = "SELECT " REC_COLS " FROM current c JOIN versions v ON v.seq = c.seq WHERE c.path = ?1",
	[Q_CUR_SET] = "INSERT INTO current(path, seq) VALUES (?1, ?2) ON CONFLICT(path) DO UPDATE SET seq = excluded.seq",
	[Q_VER_GET] = "SELECT " REC_COLS " FROM versions v WHERE v.seq = ?1 AND v.path = ?2",
	[Q_VER_ADD] = "INSERT INTO versions(path, size, mode, mtime_ns, root, deleted, vv, origin, otime_ns) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[Q_LIST_FROM] = "SELECT " REC_COLS " FROM current c JOIN versions v ON v.seq = c.seq "
			"WHERE c.path >= ?1 AND v.deleted = 0 ORDER BY c.path",
	[Q_LIST_AFTER] = "SELECT " REC_COLS " FROM current c JOIN versions v ON v.seq = c.seq "
			 "WHERE c.path > ?1 AND v.deleted = 0 ORDER BY c.path",
	[Q_HISTORY] = "SELECT " REC_COLS " FROM versions v WHERE v.path = ?1 AND v.seq < ?2 ORDER BY v.seq DESC",
	[Q_DIGEST] = "SELECT " REC_COLS " FROM current c JOIN versions v ON v.seq = c.seq ORDER BY c.path",
	/* The highest sequence ever handed out: expiry may delete the newest
	 * versions, and a head must never move back. */
	[Q_HEAD] = "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'versions'), 0),"
		   " coalesce((SELECT max(seq) FROM versions), 0))",
	[Q_SINCE] = "SELECT " REC_COLS " FROM versions v WHERE v.seq > ?1 ORDER BY v.seq",
	[Q_CURSOR_GET] = "SELECT index_id, seq FROM cursors WHERE peer = ?1",
	[Q_CURSOR_SET] = "INSERT INTO cursors(peer, index_id, seq) VALUES (?1, ?2, ?3) ON CONFLICT(peer) "
			 "DO UPDATE SET index_id = excluded.index_id, seq = excluded.seq",
	[Q_CHUNK_SCAN] = "SELECT id, seg, off, len FROM chunks WHERE id > ?1 ORDER BY id LIMIT ?2",
	[Q_CHUNK_SEG] = "SELECT id, off, len FROM chunks WHERE seg = ?1 ORDER BY off",
	[Q_CHUNK_MOVE] = "UPDATE chunks SET seg = ?4, off = ?5 WHERE id = ?1 AND seg = ?2 AND off = ?3",
	[Q_CHUNK_DROP] = "DELETE FROM chunks WHERE id = ?1 AND seg = ?2 AND off = ?3",
	[Q_SEG_LIVE] = "SELECT count(*) FROM chunks WHERE seg = ?1",
	[Q_SEG_ALL] = "SELECT seg FROM segments ORDER BY seg",
	[Q_SEG_DEL] = "DELETE FROM segments WHERE seg = ?1",
	[Q_ROOTS] = "SELECT seq, path, root FROM versions WHERE seq > ?1 AND deleted = 0 ORDER BY seq LIMIT ?2",
	[Q_NODE_SCAN] = "SELECT id FROM nodes WHERE id > ?1 ORDER BY id LIMIT ?2",
	/* Each version with the otime of the next version of its path (NULL
	 * for the newest, which is the current one). */
	[Q_HIST_SCAN] = "SELECT v.seq, (SELECT n.otime_ns FROM versions n WHERE n.path = v.path AND n.seq > v.seq "
			"ORDER BY n.seq LIMIT 1) FROM versions v WHERE v.seq > ?1 ORDER BY v.seq LIMIT ?2",
	[Q_VER_DROP] = "DELETE FROM versions WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM current c "
		       "WHERE c.path = versions.path AND c.seq = versions.seq)",
	[Q_TOMBS] = "SELECT " REC_COLS " FROM current c JOIN versions v ON v.seq = c.seq "
		    "WHERE c.path > ?1 AND v.deleted = 1 ORDER BY c.path LIMIT ?2",
	[Q_PATH_DROP_VERSIONS] = "DELETE FROM versions WHERE path = ?1",
	[Q_PATH_DROP_CURRENT] = "DELETE FROM current WHERE path = ?1",
	[Q_TOMB_COUNT] = "SELECT count(*), min(c.seq) FROM current c JOIN versions v ON v.seq = c.seq "
			 "WHERE v.deleted = 1",
	/* One received record inside an apply's transaction (see db_apply_received). */
	[Q_SAVE] = "SAVEPOINT rec",
	[Q_SAVE_UNDO] = "ROLLBACK TO rec",
	[Q_SAVE_DONE] = "RELEASE rec",
	[Q_PEND_ADD] = "INSERT INTO pending(peer, index_id, peer_seq, path, size, mode, mtime_ns, root, deleted, vv, "
		       "origin, otime_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	/* REC_COLS's shape, with the row id for seq, then where it came from. */
	[Q_PEND_LIST] = "SELECT id, path, size, mode, mtime_ns, root, deleted, vv, origin, otime_ns, peer, index_id, "
			"peer_seq FROM pending WHERE id > ?1 ORDER BY id LIMIT ?2",
	[Q_PEND_DEL] = "DELETE FROM pending WHERE id = ?1",
	[Q_PEND_MIN] = "SELECT min(peer_seq) FROM pending WHERE peer = ?1 AND index_id = ?2",
	[Q_PEND_COUNT] = "SELECT count(*) FROM pending",
	[Q_PEND_MAX] = "SELECT max(id) FROM pending",
	[Q_PEND_PATH] = "SELECT id, vv, root, deleted FROM pending WHERE path = ?1",
	[Q_PEND_OLD_LOG] = "DELETE FROM pending WHERE peer = ?1 AND index_id <> ?2",
	[Q_VER_AT] = "SELECT " REC_COLS " FROM versions v WHERE v.seq = ?1",
	[Q_PEND_NEWEST] = "SELECT id, path, size, mode, mtime_ns, root, deleted, vv, origin, otime_ns FROM pending "
			  "WHERE path = ?1 ORDER BY id DESC LIMIT 1",
	/* A dropped live row's place in its log goes to a live row with its
	 * content from the same log. */
	[Q_PEND_MOVE_ACK] = "UPDATE pending SET peer_seq = min(peer_seq, (SELECT d.peer_seq FROM pending d WHERE "
			    "d.id = ?1)) WHERE id <> ?1 AND deleted = 0 AND root = (SELECT d.root FROM pending d WHERE "
			    "d.id = ?1 AND d.deleted = 0) AND peer = (SELECT d.peer FROM pending d WHERE d.id = ?1) AND "
			    "index_id = (SELECT d.index_id FROM pending d WHERE d.id = ?1)",
	/* Is a dropped live row's content parked under another log? */
	[Q_PEND_CONTENT_ELSEWHERE] = "SELECT 1 FROM pending p, pending d WHERE d.id = ?1 AND d.deleted = 0 AND "
				     "p.id <> d.id AND p.deleted = 0 AND p.root = d.root AND (p.peer <> d.peer OR "
				     "p.index_id <> d.index_id) LIMIT 1",
	[Q_PEND_DROP_PEER] = "DELETE FROM pending WHERE peer = ?1",
	[Q_PEND_ROOTS] = "SELECT id, path, root FROM pending WHERE id > ?1 AND deleted = 0 ORDER BY id LIMIT ?2",
	[Q_CURSOR_FP_GET] = "SELECT fp FROM cursors WHERE peer = ?1",
	[Q_CURSOR_FP_SET] = "UPDATE cursors SET fp = ?2 WHERE peer = ?1",
};

static const char store_schema[] =
	"CREATE TABLE IF NOT EXISTS chunks(id BLOB PRIMARY KEY, seg INTEGER NOT NULL, off INTEGER NOT NULL,"
	" len INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS chunks_seg ON chunks(seg, off);"
	"CREATE TABLE IF NOT EXISTS nodes(id BLOB PRIMARY KEY) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS segments(seg INTEGER PRIMARY KEY, indexed_end INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS versions(seq INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,"
	" size INTEGER NOT NULL, mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, root BLOB NOT NULL,"
	" deleted INTEGER NOT NULL, vv BLOB NOT NULL, origin INTEGER NOT NULL, otime_ns INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS versions_path ON versions(path, seq);"
	"CREATE TABLE IF NOT EXISTS current(path TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS cursors(peer INTEGER PRIMARY KEY, index_id INTEGER NOT NULL,"
	" seq INTEGER NOT NULL, fp INTEGER NOT NULL DEFAULT 0);"
	/* Format 2: received records waiting for their trees (store_apply_remote). */
	"CREATE TABLE IF NOT EXISTS pending(id INTEGER PRIMARY KEY AUTOINCREMENT, peer INTEGER NOT NULL,"
	" index_id INTEGER NOT NULL, peer_seq INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,"
	" mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, root BLOB NOT NULL, deleted INTEGER NOT NULL,"
	" vv BLOB NOT NULL, origin INTEGER NOT NULL, otime_ns INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS pending_log ON pending(peer, index_id, peer_seq);"
	"CREATE INDEX IF NOT EXISTS pending_path ON pending(path);";

/* Sums over the live namespace (see ns_change). */
typedef struct ns_sum {
	uint64_t w[4]; /* 256-bit sum of the records' hashes, mod 2^256 */
	int64_t files, bytes;
} ns_sum;

struct store {
	char dir[PATH_MAX - 64]; /* room for "/meta.db" and the like */
	char dbpath[PATH_MAX];
	int lock_fd;
	seg_set *segs;

	pthread_mutex_t put_mu;
	pthread_mutex_t mu;
	pthread_cond_t flush_cv;
	pend_table pend;
	uint64_t pend_bytes;
	uint64_t put_seq;  /* last put sequence handed out */
	uint64_t done_seq; /* every put up to here is indexed or dropped */
	uint64_t drop_seq; /* highest put dropped because its segment was lost */
	bool flushing;
	store_flush_hook flush_hook; /* the simulator's, between fsync and index */
	void *flush_hook_ctx;
	/* Background flusher: appends past the threshold wake it instead of
	 * stalling an upload for the fsync; only past twice the threshold does
	 * an appender flush itself (the bound on pending rows and bytes). */
	pthread_t flusher;
	bool flusher_started, flush_wanted, closing;
	pthread_cond_t flusher_cv;
	uint64_t node;
	uint64_t lease_next;
	store_lease *leases;
	unsigned nleases, lease_cap;
	pthread_mutex_t gc_mu; /* one store_gc at a time; taken before everything */

	pthread_mutex_t db_mu;
	sqlite3 *db;
	sqlite3_stmt *q[Q_COUNT];
	uint64_t nchunks, chunk_bytes; /* indexed chunks, under db_mu */
	/* The live namespace, kept up to date instead of scanned (status and
	 * every PULL reply want it): committed sums, and the changes of the
	 * transaction in progress, applied at its commit.  Under db_mu. */
	ns_sum ns, ns_txn;
	uint64_t vv_clock; /* see vv_bump; under db_mu */
	bool clock_loaded;
	/* Chunks found corrupt here and forgotten, wanted from a peer again
	 * (store_wanted): "want:<hex>" rows of settings, and this copy of
	 * them.  Under db_mu. */
	uint8_t (*want)[HASH_LEN];
	unsigned nwant, capwant;
	uint64_t index_id;             /* names this store's sequence space */
	uint64_t gone_gen;             /* bumped (under mu) before a chunk leaves the index */
	bool fresh_db;                 /* meta.db was created by this open */
};

const char *store_dir(const store *st) { return st->dir; }

/* ---- SQLite helpers (caller holds db_mu) ---- */

static int db_code(store *st, int src)
{
	switch (src & 0xff) {
	case SQLITE_FULL: return SS_ENOSPC;
	case SQLITE_CORRUPT: case SQLITE_NOTADB: return SS_ECORRUPT;
	case SQLITE_BUSY: case SQLITE_LOCKED: return SS_EBUSY;
	case SQLITE_READONLY: case SQLITE_PERM: return SS_EPERM;
	case SQLITE_NOMEM: return SS_ENOMEM;
	case SQLITE_IOERR: case SQLITE_CANTOPEN: {
		int e = st->db ? sqlite3_system_errno(st->db) : 0;
		return e ? ss_errno_code(e) : SS_EIO;
	}
	default: return SS_EIO;
	}
}

/* "cannot index chunks in DIR/meta.db: database or disk is full" */
static int db_fail(store *st, int src, const char *what)
{
	return ss_fail(db_code(st, src), "%s in %s: %s", what, st->dbpath,
		       st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
}

/* Run a statement that returns no rows, then reset it. */
static int db_step_done(store *st, sqlite3_stmt *s, const char *what)
{
	int src = sqlite3_step(s);
	int rc = src == SQLITE_DONE || src == SQLITE_ROW ? 0 : db_fail(st, src, what);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

static int db_begin(store *st)
{
	st->ns_txn = (ns_sum){0};
	return db_step_done(st, st->q[Q_BEGIN], "cannot begin a transaction");
}

static void ns_fold(ns_sum *into, const ns_sum *d)
{
	unsigned __int128 carry = 0;
	for (int i = 0; i < 4; i++) {
		carry += (unsigned __int128)into->w[i] + d->w[i];
		into->w[i] = (uint64_t)carry;
		carry >>= 64;
	}
	into->files += d->files;
	into->bytes += d->bytes;
}

static int db_commit(store *st, const char *what)
{
	int rc = db_step_done(st, st->q[Q_COMMIT], what);
	if (!rc)
		ns_fold(&st->ns, &st->ns_txn);
	st->ns_txn = (ns_sum){0};
	return rc;
}

/* Roll back if a transaction is still open (SQLite may have rolled back
 * by itself after a full disk). */
static void db_rollback(store *st)
{
	st->ns_txn = (ns_sum){0};
	if (!sqlite3_get_autocommit(st->db)) {
		sqlite3_step(st->q[Q_ROLLBACK]);
		sqlite3_reset(st->q[Q_ROLLBACK]);
	}
}

/*
 * A live record's share of the namespace digest: SHA-256 of path · 0x00 ·
 * root · n (u32 LE) · vector, added (mod 2^256, as four u64 LE limbs) to
 * the sum over every live current record, or subtracted when it stops
 * being current.  Order-independent, so it is kept up to date per write.
 */
static size_t vv_encode(const vvec *v, uint8_t out[VV_MAX * 16]);

static void ns_change(store *st, const record *r, bool add)
{
	if (r->deleted)
		return;
	uint8_t b[1 + HASH_LEN + 4 + VV_MAX * 16], h[HASH_LEN];
	b[0] = 0;
	memcpy(b + 1, r->root, HASH_LEN);
	le32(b + 1 + HASH_LEN, r->vv.n);
	size_t n = 1 + HASH_LEN + 4 + vv_encode(&r->vv, b + 1 + HASH_LEN + 4);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		ss_assert_fail("EVP_DigestInit_ex(sha256)", __FILE__, __LINE__);
	EVP_DigestUpdate(md, r->path, strlen(r->path));
	EVP_DigestUpdate(md, b, n);
	unsigned len = HASH_LEN;
	EVP_DigestFinal_ex(md, h, &len);
	EVP_MD_CTX_free(md);
	ns_sum d = {.files = add ? 1 : -1, .bytes = add ? (int64_t)r->size : -(int64_t)r->size};
	for (int i = 0; i < 4; i++) {
		uint64_t limb = 0;
		for (int k = 7; k >= 0; k--)
			limb = limb << 8 | h[i * 8 + k];
		d.w[i] = limb;
	}
	if (!add) { /* two's complement of the 256-bit value */
		unsigned __int128 carry = 1;
		for (int i = 0; i < 4; i++) {
			carry += (uint64_t)~d.w[i];
			d.w[i] = (uint64_t)carry;
			carry >>= 64;
		}
	}
	/* Outside a transaction the statement commits by itself. */
	ns_fold(sqlite3_get_autocommit(st->db) ? &st->ns : &st->ns_txn, &d);
}

/* 1 and *loc if the chunk is indexed, 0 if not, <0 on error. */
static int db_chunk_loc(store *st, const uint8_t id[HASH_LEN], seg_loc *loc)
{
	sqlite3_stmt *s = st->q[loc ? Q_CHUNK_LOC : Q_CHUNK_HAS];
	sqlite3_bind_blob(s, 1, id, HASH_LEN, SQLITE_STATIC);
	int src = sqlite3_step(s), rc = 0;
	if (src == SQLITE_ROW) {
		rc = 1;
		if (loc) {
			int64_t seg = sqlite3_column_int64(s, 0), off = sqlite3_column_int64(s, 1),
				len = sqlite3_column_int64(s, 2);
			if (seg <= 0 || seg > UINT32_MAX || off < SEG_FILE_HDR || len < 0 || len > SEG_CHUNK_MAX) {
				char ab[SEG_ID_ABBREV];
				seg_id_abbrev(id, ab);
				rc = ss_fail(SS_ECORRUPT, "chunk %s: corrupt index entry in %s", ab, st->dbpath);
			} else {
				*loc = (seg_loc){.seg = (uint32_t)seg, .len = (uint32_t)len, .off = (uint64_t)off};
			}
		}
	} else if (src != SQLITE_DONE) {
		rc = db_fail(st, src, "cannot look up a chunk");
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

/* Insert chunk rows and advance the segments' indexed ends, in one
 * transaction.  The rows' bytes must be durable already. */
/* ---- chunks wanted again (caller holds db_mu) ---- */

static int want_find(const store *st, const uint8_t id[HASH_LEN])
{
	for (unsigned i = 0; i < st->nwant; i++)
		if (!memcmp(st->want[i], id, HASH_LEN))
			return (int)i;
	return -1;
}

static int want_row(store *st, const uint8_t id[HASH_LEN], bool add)
{
	char key[8 + HASH_HEX_LEN + 1];
	memcpy(key, "want:", 5);
	hex_encode(id, HASH_LEN, key + 5);
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db,
				     add ? "INSERT OR REPLACE INTO settings(key, value) VALUES (?1, 1)"
					 : "DELETE FROM settings WHERE key = ?1",
				     -1, &s, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot record a chunk wanted again");
	sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
	int rc = db_step_done(st, s, "cannot record a chunk wanted again");
	sqlite3_finalize(s);
	return rc;
}

static void want_add_mem(store *st, const uint8_t id[HASH_LEN])
{
	if (want_find(st, id) >= 0)
		return;
	if (st->nwant == st->capwant) {
		st->capwant = st->capwant ? st->capwant * 2 : 16;
		st->want = xrealloc(st->want, st->capwant * sizeof *st->want);
	}
	memcpy(st->want[st->nwant++], id, HASH_LEN);
}

static void want_del_mem(store *st, unsigned i) { memcpy(st->want[i], st->want[--st->nwant], HASH_LEN); }

static int want_load_one(void *ctx, const char *key, const char *value)
{
	uint8_t id[HASH_LEN];
	if (strlen(key) == 5 + HASH_HEX_LEN && !hex_decode(key + 5, id, HASH_LEN))
		want_add_mem(ctx, id);
	return 0;
}

int store_wanted(store *st, uint8_t *ids, unsigned max, unsigned *n)
{
	pthread_mutex_lock(&st->db_mu);
	*n = MIN(max, st->nwant);
	if (*n)
		memcpy(ids, st->want, (size_t)*n * HASH_LEN);
	pthread_mutex_unlock(&st->db_mu);
	return 0;
}

static int db_index(store *st, const pend_ent *rows, size_t n)
{
	struct seg_end {
		uint32_t seg;
		uint64_t end;
	} ends[16];
	unsigned nends = 0;
	uint64_t added = 0, bytes = 0;
	int rc = db_begin(st);
	if (rc)
		return rc;
	sqlite3_stmt *s = st->q[Q_CHUNK_ADD];
	for (size_t i = 0; i < n && !rc; i++) {
		const pend_ent *r = &rows[i];
		sqlite3_bind_blob(s, 1, r->id, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, r->loc.seg);
		sqlite3_bind_int64(s, 3, (int64_t)r->loc.off);
		sqlite3_bind_int64(s, 4, r->loc.len);
		if ((rc = db_step_done(st, s, "cannot index chunks")))
			break;
		if (sqlite3_changes(st->db)) {
			added++;
			bytes += r->loc.len;
		}
		/* A chunk wanted again is here again (the want row goes with
		 * this transaction; the copy below after its commit). */
		if (st->nwant && want_find(st, r->id) >= 0 && (rc = want_row(st, r->id, false)))
			break;
		if (r->node) {
			sqlite3_bind_blob(st->q[Q_NODE_ADD], 1, r->id, HASH_LEN, SQLITE_STATIC);
			if ((rc = db_step_done(st, st->q[Q_NODE_ADD], "cannot index tree nodes")))
				break;
		}
		unsigned k = 0;
		while (k < nends && ends[k].seg != r->loc.seg)
			k++;
		if (k == nends) {
			if (nends == ARRAY_LEN(ends)) {
				/* A batch spans a handful of segments at most;
				 * flush the ends collected so far to make room. */
				for (unsigned j = 0; j < nends && !rc; j++) {
					sqlite3_bind_int64(st->q[Q_SEG_END_SET], 1, ends[j].seg);
					sqlite3_bind_int64(st->q[Q_SEG_END_SET], 2, (int64_t)ends[j].end);
					rc = db_step_done(st, st->q[Q_SEG_END_SET], "cannot index chunks");
				}
				nends = k = 0;
			}
			ends[nends++] = (struct seg_end){r->loc.seg, 0};
		}
		ends[k].end = MAX(ends[k].end, seg_loc_end(&r->loc));
	}
	for (unsigned j = 0; j < nends && !rc; j++) {
		sqlite3_bind_int64(st->q[Q_SEG_END_SET], 1, ends[j].seg);
		sqlite3_bind_int64(st->q[Q_SEG_END_SET], 2, (int64_t)ends[j].end);
		rc = db_step_done(st, st->q[Q_SEG_END_SET], "cannot index chunks");
	}
	if (!rc)
		rc = db_commit(st, "cannot index chunks");
	if (rc) {
		db_rollback(st);
		return rc;
	}
	st->nchunks += added;
	st->chunk_bytes += bytes;
	for (size_t i = 0; i < n && st->nwant; i++) {
		int k = want_find(st, rows[i].id);
		if (k >= 0)
			want_del_mem(st, (unsigned)k);
	}
	return 0;
}

/* ---- version vectors and records ---- */

static size_t vv_encode(const vvec *v, uint8_t out[VV_MAX * 16])
{
	for (unsigned i = 0; i < v->n; i++) {
		le64(out + 16 * i, v->e[i].node);
		le64(out + 16 * i + 8, v->e[i].counter);
	}
	return (size_t)v->n * 16;
}

static int vv_decode(const uint8_t *p, size_t n, vvec *v)
{
	if (n % 16 || n / 16 > VV_MAX)
		return SS_ECORRUPT;
	v->n = (unsigned)(n / 16);
	for (unsigned i = 0; i < v->n; i++) {
		v->e[i].node = rd64(p + 16 * i);
		v->e[i].counter = rd64(p + 16 * i + 8);
		if (i && v->e[i].node <= v->e[i - 1].node)
			return SS_ECORRUPT;
	}
	return 0;
}

/* Increment node's counter, adding the node (kept sorted) if new. */
/*
 * This node's write counter for a new version.  One counter for the whole
 * store, never going back (the settings row "vv_clock", written in the
 * write's own transaction; on a store without it, the highest counter of
 * ours in any version): a path whose tombstone expired here, written again,
 * must not restart at 1 — servers that still hold its older versions would
 * take the new write for old news.  A record received from a peer with a
 * higher counter of ours (a restored copy of this store) moves it on too
 * (clock_see).  And it is never below the wall clock in microseconds (a
 * hybrid clock): a data directory wiped and started again keeps its node id
 * but not its clock, and must not issue a counter it issued before — its
 * next write would look older than versions the cluster holds (the
 * simulator lost acknowledged writes that way).  Counters issued before the
 * wipe were at most the time they were issued (plus one per write issued
 * faster than a microsecond); what it issues after is the time then.  Only
 * a wall clock set back by more than the restart took defeats this.
 * Caller holds db_mu inside a transaction.
 */
static int clock_load(store *st, uint64_t node)
{
	if (st->clock_loaded)
		return 0;
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "SELECT value FROM settings WHERE key = 'vv_clock'", -1, &s, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot read the version clock");
	if ((src = sqlite3_step(s)) == SQLITE_ROW)
		st->vv_clock = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	if (src != SQLITE_ROW) {
		/* Older store: the highest counter of ours in any version. */
		if ((src = sqlite3_prepare_v2(st->db, "SELECT vv FROM versions", -1, &s, NULL)) != SQLITE_OK)
			return db_fail(st, src, "cannot read the version clock");
		while ((src = sqlite3_step(s)) == SQLITE_ROW) {
			vvec v;
			if (vv_decode(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), &v))
				continue;
			for (unsigned i = 0; i < v.n; i++)
				if (v.e[i].node == node && v.e[i].counter > st->vv_clock)
					st->vv_clock = v.e[i].counter;
		}
		sqlite3_finalize(s);
	}
	st->clock_loaded = true;
	return 0;
}

static int clock_store(store *st)
{
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "INSERT INTO settings(key, value) VALUES ('vv_clock', ?1) "
					     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", -1, &s, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot write the version clock");
	sqlite3_bind_int64(s, 1, (int64_t)st->vv_clock);
	int rc = db_step_done(st, s, "cannot write the version clock");
	sqlite3_finalize(s);
	return rc;
}

/* A record applied here names counter c of ours: never issue it again. */
static int clock_see(store *st, const vvec *v, uint64_t node)
{
	int rc = clock_load(st, node);
	for (unsigned i = 0; !rc && i < v->n; i++)
		if (v->e[i].node == node && v->e[i].counter > st->vv_clock) {
			st->vv_clock = v->e[i].counter;
			rc = clock_store(st);
		}
	return rc;
}

static int vv_bump(store *st, vvec *v, uint64_t node, const char *path)
{
	int rc = clock_load(st, node);
	if (rc)
		return rc;
	unsigned i = 0;
	while (i < v->n && v->e[i].node < node)
		i++;
	bool have = i < v->n && v->e[i].node == node;
	if (!have && v->n == VV_MAX)
		return ss_fail(SS_ETOOBIG, "version vector of %s is full (%d nodes)", path, VV_MAX);
	uint64_t c = MAX(st->vv_clock, have ? v->e[i].counter : 0) + 1;
	int64_t wall_us = now_wall_ns() / 1000;
	if (wall_us > 0 && (uint64_t)wall_us > c)
		c = (uint64_t)wall_us;
	/* Ahead of the stored value if the transaction rolls back: a gap in
	 * the counters, which is harmless. */
	st->vv_clock = c;
	if ((rc = clock_store(st)))
		return rc;
	if (have) {
		v->e[i].counter = c;
		return 0;
	}
	memmove(&v->e[i + 1], &v->e[i], (v->n - i) * sizeof v->e[0]);
	v->e[i] = (vv_entry){node, c};
	v->n++;
	return 0;
}

/* Decode a row selected with REC_COLS. */
static int rec_from_row(store *st, sqlite3_stmt *s, record *r)
{
	const char *path = (const char *)sqlite3_column_text(s, 1);
	int plen = sqlite3_column_bytes(s, 1);
	const void *root = sqlite3_column_blob(s, 5);
	int rlen = sqlite3_column_bytes(s, 5);
	const void *vv = sqlite3_column_blob(s, 7);
	int vlen = sqlite3_column_bytes(s, 7);
	int64_t seq = sqlite3_column_int64(s, 0);
	if (!path || plen > SS_PATH_MAX || rlen != HASH_LEN || seq <= 0 ||
	    vv_decode(vv ? vv : (const void *)"", (size_t)vlen, &r->vv))
		return ss_fail(SS_ECORRUPT, "version %lld of %.200s is corrupt in %s", (long long)seq,
			       path ? path : "?", st->dbpath);
	memcpy(r->path, path, (size_t)plen);
	r->path[plen] = 0;
	r->seq = (uint64_t)seq;
	r->size = (uint64_t)sqlite3_column_int64(s, 2);
	r->mode = (uint32_t)sqlite3_column_int64(s, 3);
	r->mtime_ns = sqlite3_column_int64(s, 4);
	memcpy(r->root, root, HASH_LEN);
	r->deleted = sqlite3_column_int64(s, 6) != 0;
	r->origin = (uint64_t)sqlite3_column_int64(s, 8);
	r->otime_ns = sqlite3_column_int64(s, 9);
	return 0;
}

/* Step a bound query of (at most) one REC_COLS row into out, then reset
 * it: 1 found, 0 none, <0 error. */
static int db_one_record(store *st, sqlite3_stmt *s, record *out, const char *what)
{
	int src = sqlite3_step(s), rc = 0;
	if (src == SQLITE_ROW)
		rc = rec_from_row(st, s, out) ? SS_ECORRUPT : 1;
	else if (src != SQLITE_DONE)
		rc = db_fail(st, src, what);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

/* Current record of path: 1 found, 0 none, <0 error. */
static int db_current(store *st, const char *path, record *out)
{
	sqlite3_stmt *s = st->q[Q_CUR_GET];
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	return db_one_record(st, s, out, "cannot read the namespace");
}

static int db_current(store *st, const char *path, record *out);
static int put_version_row(store *st, const record *rec, uint64_t *seq);

/* Insert rec as a new version and make it current; sets *seq. */
static int db_put_version(store *st, const record *rec, uint64_t *seq)
{
	record *old = xmalloc(sizeof *old);
	int had = db_current(st, rec->path, old);
	if (had < 0) {
		free(old);
		return had;
	}
	int rc = put_version_row(st, rec, seq);
	if (!rc) {
		if (had)
			ns_change(st, old, false);
		ns_change(st, rec, true);
	}
	free(old);
	return rc;
}

/* Bind a record's columns (path, size, mode, mtime_ns, root, deleted, vv,
 * origin, otime_ns: the versions table's, and the pending table's after its
 * three) to parameters first.. of s; vv holds the encoded vector until the
 * statement has run. */
static void bind_record(sqlite3_stmt *s, int first, const record *r, uint8_t vv[VV_MAX * 16])
{
	size_t vlen = vv_encode(&r->vv, vv);
	sqlite3_bind_text(s, first, r->path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, first + 1, (int64_t)r->size);
	sqlite3_bind_int64(s, first + 2, r->mode);
	sqlite3_bind_int64(s, first + 3, r->mtime_ns);
	sqlite3_bind_blob(s, first + 4, r->root, HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, first + 5, r->deleted);
	sqlite3_bind_blob(s, first + 6, vv, (int)vlen, SQLITE_STATIC);
	sqlite3_bind_int64(s, first + 7, (int64_t)r->origin);
	sqlite3_bind_int64(s, first + 8, r->otime_ns);
}

static int put_version_row(store *st, const record *rec, uint64_t *seq)
{
	uint8_t vv[VV_MAX * 16];
	sqlite3_stmt *s = st->q[Q_VER_ADD];
	bind_record(s, 1, rec, vv);
	int rc = db_step_done(st, s, "cannot write a version");
	if (rc)
		return rc;
	*seq = (uint64_t)sqlite3_last_insert_rowid(st->db);
	s = st->q[Q_CUR_SET];
	sqlite3_bind_text(s, 1, rec->path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)*seq);
	return db_step_done(st, s, "cannot write a version");
}

/* ---- open and close ---- */

static void *flusher_main(void *arg)
{
	store *st = arg;
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (!st->flush_wanted && !st->closing)
			pthread_cond_wait(&st->flusher_cv, &st->mu);
		if (st->closing)
			break;
		st->flush_wanted = false;
		pthread_mutex_unlock(&st->mu);
		/* A failure stays visible: its rows stay pending (or are
		 * dropped and counted), so the next explicit flush reports it. */
		int rc = store_flush(st);
		if (rc)
			log_warn("background flush of %s: %s", st->dir, ss_errmsg(rc));
		pthread_mutex_lock(&st->mu);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

static void stop_flusher(store *st)
{
	if (st->flusher_started) {
		pthread_mutex_lock(&st->mu);
		st->closing = true;
		pthread_cond_signal(&st->flusher_cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->flusher, NULL);
		st->flusher_started = false;
	}
}

static void store_free(store *st)
{
	stop_flusher(st);
	for (int i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(st->q[i]);
	if (st->db)
		sqlite3_close(st->db);
	seg_close(st->segs);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	pthread_mutex_destroy(&st->put_mu);
	pthread_mutex_destroy(&st->mu);
	pthread_mutex_destroy(&st->db_mu);
	pthread_mutex_destroy(&st->gc_mu);
	pthread_cond_destroy(&st->flush_cv);
	pthread_cond_destroy(&st->flusher_cv);
	free(st->pend.v);
	free(st->leases);
	free(st->want);
	free(st);
}

/* strerror, lower case first letter (git style). */
static int store_sysfail(int err, const char *fmt, const char *a)
{
	char msg[128];
	snprintf(msg, sizeof msg, "%s", strerror(err));
	if (msg[0] >= 'A' && msg[0] <= 'Z' && !(msg[1] >= 'A' && msg[1] <= 'Z'))
		msg[0] = (char)(msg[0] - 'A' + 'a');
	return ss_fail(ss_errno_code(err), fmt, a, msg);
}

static int store_mkdir(store *st)
{
	struct stat sb;
	if (stat(st->dir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode))
			return ss_fail(SS_EINVAL, "cannot use data directory %s: not a directory", st->dir);
	} else if (errno == ENOENT) {
		int rc = mkdir_p(st->dir, 0700);
		if (rc)
			return ss_fail(rc, "cannot create data directory %s: %s", st->dir, ss_strerror(rc));
		/* Make the new directory's entry durable in its parent. */
		char parent[PATH_MAX];
		snprintf(parent, sizeof parent, "%s", st->dir);
		char *slash = strrchr(parent, '/');
		if (slash == parent)
			slash[1] = 0;
		else if (slash)
			*slash = 0;
		else
			snprintf(parent, sizeof parent, ".");
		if ((rc = fsync_dir(parent)))
			return rc;
	} else {
		return store_sysfail(errno, "cannot use data directory %s: %s", st->dir);
	}
	if (access(st->dir, R_OK | W_OK | X_OK) < 0)
		return store_sysfail(errno, "cannot use data directory %s: %s", st->dir);
	return 0;
}

static int store_lock(store *st)
{
	char path[PATH_MAX + 8];
	snprintf(path, sizeof path, "%s/LOCK", st->dir);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (st->lock_fd < 0)
		return store_sysfail(errno, "cannot use data directory %s: %s", st->dir);
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return store_sysfail(errno, "cannot lock data directory %s: %s", st->dir);
		char pid[32] = "";
		ssize_t n = pread(st->lock_fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		long v = strtol(pid, NULL, 10);
		if (v > 0)
			return ss_fail(SS_EBUSY, "data directory %s is in use by another server (pid %ld)", st->dir, v);
		return ss_fail(SS_EBUSY, "data directory %s is in use by another server", st->dir);
	}
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(st->lock_fd, 0) < 0 || pwrite(st->lock_fd, pid, (size_t)n, 0) != n)
		return store_sysfail(errno, "cannot write %s: %s", path);
	return 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n > k && !strcmp(s + n - k, suffix);
}

/* A directory without FORMAT is only adopted when it holds nothing but a
 * node identity (the server keeps node.crt/node.key there, and an operator
 * may put them in place before the first start), so a mistyped --data never
 * turns someone's files into a store. */
static int store_check_empty(store *st)
{
	DIR *d = opendir(st->dir);
	if (!d)
		return store_sysfail(errno, "cannot read data directory %s: %s", st->dir);
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "LOCK") || !strcmp(n, "FORMAT.tmp") ||
		    !strcmp(n, "lost+found") || has_suffix(n, ".crt") || has_suffix(n, ".key"))
			continue;
		rc = ss_fail(SS_EFORMAT, "data directory %s is not empty and has no FORMAT file: "
					 "not a syncstore data directory (found %s)", st->dir, n);
		break;
	}
	closedir(d);
	return rc;
}

static int format_write(store *st)
{
	char path[PATH_MAX + 8], text[64];
	snprintf(path, sizeof path, "%s/FORMAT", st->dir);
	int n = snprintf(text, sizeof text, "syncstore-store %d\n", STORE_FORMAT);
	return write_file_atomic(path, text, (size_t)n, 0644);
}

/* Check FORMAT (write it for a new directory); *version gets the one found. */
static int store_format(store *st, unsigned *version)
{
	char path[PATH_MAX + 8];
	snprintf(path, sizeof path, "%s/FORMAT", st->dir);
	buf b;
	buf_init(&b, 1 << 16); /* read_file_small asks for 4 KiB at a time */
	int rc = read_file_small(path, &b);
	if (rc == SS_ENOENT) {
		buf_free(&b);
		*version = STORE_FORMAT;
		return (rc = store_check_empty(st)) ? rc : format_write(st);
	}
	if (rc) {
		buf_free(&b);
		return rc;
	}
	char text[64];
	snprintf(text, sizeof text, "%.*s", (int)MIN(b.len, sizeof text - 1), (const char *)b.p);
	buf_free(&b);
	char nl = 0;
	if (sscanf(text, "syncstore-store %u%c", version, &nl) != 2 || nl != '\n' || *version == 0)
		return ss_fail(SS_EFORMAT, "data directory %s: FORMAT file is not recognized "
					   "(expected \"syncstore-store %d\")", st->dir, STORE_FORMAT);
	if (*version > STORE_FORMAT)
		return ss_fail(SS_EFORMAT, "data directory %s has format %u, this syncstore reads up to %d: "
					   "upgrade syncstore", st->dir, *version, STORE_FORMAT);
	return 0;
}

static int store_segdir(store *st, char out[PATH_MAX])
{
	snprintf(out, PATH_MAX, "%s/seg", st->dir);
	if (mkdir(out, 0700) == 0)
		return fsync_dir(st->dir);
	if (errno != EEXIST)
		return store_sysfail(errno, "cannot create segment directory %s: %s", out);
	return 0;
}

static int store_db_open(store *st)
{
	bool fresh = st->fresh_db = access(st->dbpath, F_OK) < 0;
	int src = sqlite3_open_v2(st->dbpath, &st->db,
				  SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot open the metadata");
	sqlite3_busy_timeout(st->db, STORE_BUSY_MS);
	/* The LOCK file already makes this process the only user, so take
	 * SQLite's locks once: no fcntl lock round trips per query, and the
	 * WAL index lives in heap memory instead of a shared-memory file. */
	src = sqlite3_exec(st->db, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-16384;", NULL, NULL, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot open the metadata");
	sqlite3_stmt *s;
	src = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot open the metadata");
	src = sqlite3_step(s);
	bool wal = src == SQLITE_ROW && !sqlite3_stricmp((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	if (src != SQLITE_ROW)
		return db_fail(st, src, "cannot open the metadata");
	if (!wal)
		return ss_fail(SS_EIO, "cannot open the metadata in %s: the file system does not support WAL mode",
			       st->dbpath);
	src = sqlite3_exec(st->db, "PRAGMA synchronous=FULL;", NULL, NULL, NULL);
	if (src == SQLITE_OK)
		src = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (src == SQLITE_OK)
		src = sqlite3_exec(st->db, store_schema, NULL, NULL, NULL);
	sqlite3_stmt *probe = NULL;
	if (src == SQLITE_OK && sqlite3_prepare_v2(st->db, "SELECT fp FROM cursors", -1, &probe, NULL) != SQLITE_OK)
		/* Format 1: cursors without the fingerprint of their record. */
		src = sqlite3_exec(st->db, "ALTER TABLE cursors ADD COLUMN fp INTEGER NOT NULL DEFAULT 0", NULL, NULL,
				   NULL);
	sqlite3_finalize(probe);
	if (src == SQLITE_OK)
		src = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
	if (src != SQLITE_OK) {
		int rc = db_fail(st, src, "cannot create the metadata schema");
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	if (fresh) {
		int rc = fsync_dir(st->dir);
		if (rc)
			return rc;
	}
	for (int i = 0; i < Q_COUNT; i++) {
		src = sqlite3_prepare_v3(st->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL);
		if (src != SQLITE_OK)
			return db_fail(st, src, "cannot prepare the metadata queries");
	}
	return 0;
}

typedef struct recover_ctx {
	store *st;
	pend_ent *rows;
	size_t n;
	uint64_t total;
} recover_ctx;

static int recover_found(void *ctx, const seg_loc *loc, const uint8_t id[HASH_LEN])
{
	recover_ctx *rc = ctx;
	pend_ent *e = &rc->rows[rc->n++];
	memcpy(e->id, id, HASH_LEN);
	e->loc = *loc;
	e->seq = 1;
	e->node = false; /* completeness is never inferred from bytes on disk */
	rc->total++;
	if (rc->n < STORE_RECOVER_BATCH)
		return 0;
	rc->n = 0;
	return db_index(rc->st, rc->rows, STORE_RECOVER_BATCH);
}

static int recover_cut(void *ctx, const seg_loc *loc, const uint8_t id[HASH_LEN])
{
	(void)ctx, (void)loc, (void)id;
	return SEG_CUT;
}

static int seg_end_get(store *st, uint32_t num, int64_t *end)
{
	sqlite3_stmt *s = st->q[Q_SEG_END_GET];
	sqlite3_bind_int64(s, 1, num);
	int src = sqlite3_step(s), err = 0;
	*end = 0;
	if (src == SQLITE_ROW)
		*end = sqlite3_column_int64(s, 0);
	else if (src != SQLITE_DONE)
		err = db_fail(st, src, "cannot read the segment index");
	sqlite3_reset(s);
	return err;
}

/* Re-index whole records past each segment's indexed end (written before a
 * crash, never indexed) and cut torn tails.  Batches are committed as they
 * fill, each advancing indexed_end, so an interrupted recovery resumes. */
static int store_recover(store *st)
{
	recover_ctx rc = {.st = st, .rows = xmalloc(STORE_RECOVER_BATCH * sizeof(pend_ent))};
	int err = 0;
	unsigned nseg = seg_count(st->segs), nfound = 0;
	if (st->fresh_db && nseg)
		log_warn("%s was missing: rebuilding the chunk index from %u segments; the namespace "
			 "starts empty", st->dbpath, nseg);
	for (unsigned i = 0; i < nseg && !err; i++) {
		uint32_t num = seg_num_at(st->segs, i);
		int64_t end;
		if ((err = seg_end_get(st, num, &end)))
			break;
		uint64_t before = rc.total;
		err = seg_recover(st->segs, num, end > 0 ? (uint64_t)end : 0, recover_found, &rc);
		if (!err && rc.n)
			err = db_index(st, rc.rows, rc.n);
		rc.n = 0;
		if (err == SS_ENOSPC) {
			/* No room to index the tail.  It was never acknowledged
			 * (acks follow indexing), so dropping it loses nothing,
			 * and a server that cannot start serves nobody. */
			log_warn("%s; dropping the unindexed tail of segment %08u", ss_errmsg(err), num);
			err = seg_end_get(st, num, &end);
			if (!err)
				err = seg_recover(st->segs, num, end > 0 ? (uint64_t)end : 0, recover_cut, NULL);
		}
		if (rc.total > before)
			nfound++;
	}
	/* nchunks counts rows db_index added; it is loaded for real later. */
	if (!err && st->nchunks)
		log_info("re-indexed %llu chunks written before the last stop (%u segments)",
			 (unsigned long long)st->nchunks, nfound);
	free(rc.rows);
	return err;
}

/* The namespace sums, from one scan at open (kept up to date after). */
static int store_count_namespace(store *st)
{
	record *r = xmalloc(sizeof *r);
	sqlite3_stmt *s = st->q[Q_DIGEST];
	int rc = 0, src;
	st->ns = (ns_sum){0};
	while (!rc && (src = sqlite3_step(s)) == SQLITE_ROW)
		if (!(rc = rec_from_row(st, s, r)))
			ns_change(st, r, true);
	if (!rc && src != SQLITE_DONE)
		rc = db_fail(st, src, "cannot read the namespace");
	sqlite3_reset(s);
	free(r);
	return rc;
}

static int store_count_chunks(store *st)
{
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "SELECT count(*), sum(len) FROM chunks", -1, &s, NULL);
	if (src == SQLITE_OK && (src = sqlite3_step(s)) == SQLITE_ROW) {
		st->nchunks = (uint64_t)sqlite3_column_int64(s, 0);
		st->chunk_bytes = (uint64_t)sqlite3_column_int64(s, 1);
		src = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return src == SQLITE_OK ? 0 : db_fail(st, src, "cannot count chunks");
}

/*
 * The index id names this store's sequence space: peers keep cursors as
 * (index id, seq), and a data directory that was wiped and started again
 * gets a new id, so their cursors reset instead of skipping its new records.
 */
static uint64_t store_node(store *st);

/* A new random index id into settings 'index_id'; the caller publishes *out
 * (st->index_id) once that is committed. */
static int db_new_index_id(store *st, uint64_t *out)
{
	uint64_t id = 0;
	while (!id || id == st->index_id)
		if (RAND_bytes((unsigned char *)&id, sizeof id) != 1)
			return ss_fail(SS_EIO, "cannot draw a random index id");
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "INSERT INTO settings(key, value) VALUES ('index_id', ?1) "
					     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", -1, &s, NULL);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot store the index id");
	sqlite3_bind_int64(s, 1, (int64_t)id);
	int rc = db_step_done(st, s, "cannot store the index id");
	sqlite3_finalize(s);
	if (!rc)
		*out = id;
	return rc;
}

static int store_load_index_id(store *st)
{
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "SELECT value FROM settings WHERE key = 'index_id'", -1, &s, NULL);
	if (src == SQLITE_OK && (src = sqlite3_step(s)) == SQLITE_ROW) {
		st->index_id = (uint64_t)sqlite3_column_int64(s, 0);
		src = SQLITE_OK;
	} else if (src == SQLITE_DONE) {
		src = SQLITE_OK;
	}
	sqlite3_finalize(s);
	if (src != SQLITE_OK)
		return db_fail(st, src, "cannot read the index id");
	if (st->index_id)
		return 0;
	uint64_t id;
	int rc = db_new_index_id(st, &id); /* autocommit: durable now */
	if (!rc)
		st->index_id = id;
	return rc;
}

uint64_t store_index_id(const store *st) { return __atomic_load_n(&st->index_id, __ATOMIC_ACQUIRE); }

int store_log_regressed(store *st, uint64_t old_index_id, uint64_t lost)
{
	uint64_t node = store_node(st);
	pthread_mutex_lock(&st->db_mu);
	int rc = 0;
	if (store_index_id(st) != old_index_id)
		goto out; /* another session saw it first */
	uint64_t clock = st->vv_clock;
	if (!(rc = db_begin(st)) && !(rc = clock_load(st, node))) {
		clock = st->vv_clock;
		/* lost is one peer's view (the first to notice); the lost part
		 * may be longer: a margin no plausible run of writes reaches. */
		uint64_t jump = lost > UINT64_MAX - STORE_CLOCK_MARGIN ? UINT64_MAX : lost + STORE_CLOCK_MARGIN;
		st->vv_clock = clock > UINT64_MAX - jump ? UINT64_MAX : clock + jump;
		rc = clock_store(st);
	}
	uint64_t id = 0;
	if (!rc)
		rc = db_new_index_id(st, &id);
	if (!rc)
		rc = db_commit(st, "cannot start a new sequence space");
	if (rc) {
		db_rollback(st);
		st->vv_clock = clock;
	} else {
		__atomic_store_n(&st->index_id, id, __ATOMIC_RELEASE);
	}
out:
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_open(const char *dir, store **out)
{
	*out = NULL;
	store *st = xcalloc(1, sizeof *st);
	st->lock_fd = -1;
	pthread_mutex_init(&st->put_mu, NULL);
	pthread_mutex_init(&st->mu, NULL);
	pthread_mutex_init(&st->db_mu, NULL);
	pthread_mutex_init(&st->gc_mu, NULL);
	pthread_cond_init(&st->flush_cv, NULL);
	pthread_cond_init(&st->flusher_cv, NULL);
	int rc = 0;
	char segdir[PATH_MAX];
	size_t dlen = strlen(dir);
	while (dlen > 1 && dir[dlen - 1] == '/')
		dlen--;
	if (dlen == 0 || dlen + 16 >= sizeof st->dir) {
		rc = ss_fail(SS_EINVAL, "cannot use data directory '%s': %s", dir, dlen ? "path too long" : "empty path");
		goto fail;
	}
	memcpy(st->dir, dir, dlen);
	snprintf(st->dbpath, sizeof st->dbpath, "%s/meta.db", st->dir);
	if (!sqlite3_threadsafe()) {
		rc = ss_fail(SS_EINVAL, "this SQLite library is built without thread support");
		goto fail;
	}
	unsigned format = 0;
	if ((rc = store_mkdir(st)) || (rc = store_lock(st)) || (rc = store_format(st, &format)) ||
	    (rc = store_segdir(st, segdir)) || (rc = store_db_open(st)) ||
	    /* The schema is current now (store_db_open adds what is new). */
	    (format < STORE_FORMAT && (rc = format_write(st))) || (rc = seg_open(segdir, &st->segs)) ||
	    (rc = store_recover(st)) || (rc = store_count_chunks(st)) || (rc = store_count_namespace(st)) ||
	    (rc = store_load_index_id(st)) || (rc = store_setting_list(st, "want:", want_load_one, st)))
		goto fail;
	int err = pthread_create(&st->flusher, NULL, flusher_main, st);
	if (err) {
		rc = ss_fail(SS_ENOMEM, "cannot start the flusher thread: %s", strerror(err));
		goto fail;
	}
	st->flusher_started = true;
	*out = st;
	return 0;
fail:
	store_free(st);
	return rc;
}

void store_close(store *st)
{
	if (!st)
		return;
	int rc = store_flush(st);
	if (rc)
		log_err("closing data directory %s: %s", st->dir, ss_errmsg(rc));
	store_free(st); /* stops the flusher first */
}

void store_set_flush_hook(store *st, store_flush_hook fn, void *ctx)
{
	pthread_mutex_lock(&st->mu);
	st->flush_hook = fn;
	st->flush_hook_ctx = ctx;
	pthread_mutex_unlock(&st->mu);
}

void store_power_cut(store *st, unsigned keep_permille)
{
	if (!st)
		return;
	stop_flusher(st); /* nothing more becomes durable */
	seg_power_cut(st->segs, keep_permille);
	store_free(st);
}

/* ---- chunks ---- */

int store_has(store *st, const uint8_t id[HASH_LEN])
{
	pthread_mutex_lock(&st->mu);
	bool pending = pend_find(&st->pend, id) != NULL;
	pthread_mutex_unlock(&st->mu);
	if (pending)
		return 1;
	/* A row leaves the pending table only after its index row committed,
	 * so a chunk absent above is either indexed by now or absent. */
	pthread_mutex_lock(&st->db_mu);
	int rc = db_chunk_loc(st, id, NULL);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

static int db_node_has(store *st, const uint8_t id[HASH_LEN])
{
	sqlite3_stmt *s = st->q[Q_NODE_HAS];
	sqlite3_bind_blob(s, 1, id, HASH_LEN, SQLITE_STATIC);
	int src = sqlite3_step(s);
	int rc = src == SQLITE_ROW ? 1 : src == SQLITE_DONE ? 0 : db_fail(st, src, "cannot look up a tree node");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

/*
 * Append a chunk unless present; with node set, also record that it is a
 * tree node with a complete subtree.  A node whose bytes are already stored
 * (say, uploaded earlier as a data chunk) gets a pending row pointing at the
 * existing record, so the mark is indexed by the next flush like any row.
 */
static int put_record(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len, bool node,
		      bool check_index)
{
	if (len > SEG_CHUNK_MAX) {
		char ab[SEG_ID_ABBREV];
		seg_id_abbrev(id, ab);
		return ss_fail(SS_ETOOBIG, "chunk %s is %zu bytes, more than the store's limit of %u", ab, len,
			       SEG_CHUNK_MAX);
	}
	int over = 0; /* 1: wake the flusher, 2: flush now */
	pthread_mutex_lock(&st->put_mu);
	pthread_mutex_lock(&st->mu);
	pend_ent *pe = pend_find(&st->pend, id);
	if (pe && node)
		pe->node = true;
	bool present = pe != NULL;
	pthread_mutex_unlock(&st->mu);
	int rc = 0;
	pend_ent e = {.node = node};
	memcpy(e.id, id, HASH_LEN);
	if (!present && check_index) {
		/* put_mu keeps the id out of the pending table meanwhile, and a
		 * flush only moves rows from pending to the index. */
		pthread_mutex_lock(&st->db_mu);
		rc = db_chunk_loc(st, id, &e.loc);
		if (rc == 1 && node && (rc = db_node_has(st, id)) == 0) {
			/* Stored, but not known complete: mark it. */
			pthread_mutex_lock(&st->mu);
			e.seq = ++st->put_seq;
			pend_add(&st->pend, &e);
			st->pend_bytes += e.loc.len;
			pthread_mutex_unlock(&st->mu);
			rc = 1;
		}
		pthread_mutex_unlock(&st->db_mu);
		present = rc == 1;
		rc = rc < 0 ? rc : 0;
	}
	if (!present && !rc) {
		if (!(rc = seg_append(st->segs, id, data, (uint32_t)len, &e.loc))) {
			pthread_mutex_lock(&st->mu);
			e.seq = ++st->put_seq;
			pend_add(&st->pend, &e);
			st->pend_bytes += len;
			if (st->pend_bytes >= 2 * STORE_PENDING_BYTES || st->pend.n >= 2 * STORE_PENDING_ROWS)
				over = 2;
			else if (st->pend_bytes >= STORE_PENDING_BYTES || st->pend.n >= STORE_PENDING_ROWS)
				over = 1;
			pthread_mutex_unlock(&st->mu);
		}
	}
	pthread_mutex_unlock(&st->put_mu);
	if (over == 2)
		rc = store_flush(st);
	else if (over) {
		pthread_mutex_lock(&st->mu);
		st->flush_wanted = true;
		pthread_cond_signal(&st->flusher_cv);
		pthread_mutex_unlock(&st->mu);
	}
	return rc;
}

int store_put_chunk(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len)
{
	return put_record(st, id, data, len, false, true);
}

int store_put_absent_chunk(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len)
{
	return put_record(st, id, data, len, false, false);
}

int store_put_node(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len)
{
	return put_record(st, id, data, len, true, true);
}

int store_has_node(store *st, const uint8_t id[HASH_LEN])
{
	pthread_mutex_lock(&st->mu);
	pend_ent *e = pend_find(&st->pend, id);
	bool pending = e && e->node;
	pthread_mutex_unlock(&st->mu);
	if (pending)
		return 1;
	pthread_mutex_lock(&st->db_mu);
	int rc = db_node_has(st, id);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

/* Forget every completeness mark (pending and indexed).  Used whenever a
 * chunk leaves the index: finding every node above it would need a reverse
 * index, and marks are cheap to earn again (a client re-sends the node body,
 * ~3% of the data, and the server re-checks its children).  Marks only decide
 * what an upload is asked for; a mark that races with a reset and survives
 * costs one refused commit (whose walk unmarks the node above the hole), never
 * a record with a hole. */
static int nodes_reset(store *st)
{
	pthread_mutex_lock(&st->mu);
	for (size_t i = 0; i < st->pend.cap; i++)
		st->pend.v[i].node = false;
	pthread_mutex_unlock(&st->mu);
	pthread_mutex_lock(&st->db_mu);
	int src = sqlite3_exec(st->db, "DELETE FROM nodes", NULL, NULL, NULL);
	int rc = src == SQLITE_OK ? 0 : db_fail(st, src, "cannot reset tree node marks");
	pthread_mutex_unlock(&st->db_mu);
	if (!rc)
		log_warn("a chunk left the index: tree node marks reset; uploads re-send node bodies once");
	return rc;
}

int store_unmark_node(store *st, const uint8_t id[HASH_LEN])
{
	pthread_mutex_lock(&st->mu);
	pend_ent *e = pend_find(&st->pend, id);
	if (e)
		e->node = false;
	pthread_mutex_unlock(&st->mu);
	pthread_mutex_lock(&st->db_mu);
	sqlite3_bind_blob(st->q[Q_NODE_DEL], 1, id, HASH_LEN, SQLITE_STATIC);
	int rc = db_step_done(st, st->q[Q_NODE_DEL], "cannot unmark a tree node");
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

/* Where a chunk is: pending (appended, not yet indexed) or indexed.  1 and
 * *loc, 0 absent, <0 error.  Caller holds db_mu if locked, else nothing. */
static int chunk_find(store *st, const uint8_t id[HASH_LEN], seg_loc *loc, bool locked)
{
	pthread_mutex_lock(&st->mu);
	pend_ent *e = pend_find(&st->pend, id);
	bool pending = e != NULL;
	if (pending)
		*loc = e->loc;
	pthread_mutex_unlock(&st->mu);
	if (pending)
		return 1;
	if (locked)
		return db_chunk_loc(st, id, loc);
	pthread_mutex_lock(&st->db_mu);
	int rc = db_chunk_loc(st, id, loc);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

static bool loc_equal(const seg_loc *a, const seg_loc *b)
{
	return a->seg == b->seg && a->off == b->off && a->len == b->len;
}

/*
 * Read chunk id at *loc, found without holding db_mu.  store_gc may have
 * moved the record (and deleted its old segment) or dropped the chunk since
 * the lookup: on a failed read, look it up again and retry if it moved.  A
 * record GC moves is re-pointed in the index before its old file goes, so a
 * second lookup finds the new place.
 */
static int read_at(store *st, const uint8_t id[HASH_LEN], seg_loc *loc, buf *out)
{
	for (int tries = 0;; tries++) {
		int rc = seg_read(st->segs, loc, id, out);
		if (!rc || rc == SS_ETOOBIG || tries == 3)
			return rc;
		seg_loc now;
		int found = chunk_find(st, id, &now, false);
		if (found < 0)
			return found;
		if (found == 0) {
			char ab[SEG_ID_ABBREV];
			seg_id_abbrev(id, ab);
			return ss_fail(SS_ENOENT, "chunk %s not found", ab);
		}
		if (loc_equal(&now, loc))
			return rc; /* really unreadable where it is */
		*loc = now;
	}
}

#define SCRUB_BATCH 64
int store_setting_get(store *st, const char *key, char *out, size_t outsz)
{
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "SELECT value FROM settings WHERE key = ?1", -1, &s, NULL);
	int rc = src == SQLITE_OK ? 0 : db_fail(st, src, "cannot read a setting");
	if (!rc) {
		sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
		src = sqlite3_step(s);
		if (src == SQLITE_ROW) {
			const unsigned char *v = sqlite3_column_text(s, 0);
			snprintf(out, outsz, "%s", v ? (const char *)v : "");
		} else if (src == SQLITE_DONE) {
			rc = SS_ENOENT;
		} else {
			rc = db_fail(st, src, "cannot read a setting");
		}
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_setting_set(store *st, const char *key, const char *value)
{
	if (!strcmp(key, "index_id"))
		return ss_fail(SS_EINVAL, "the index id is not a setting to change");
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db,
				     value ? "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO "
					     "UPDATE SET value = excluded.value"
					   : "DELETE FROM settings WHERE key = ?1",
				     -1, &s, NULL);
	int rc = src == SQLITE_OK ? 0 : db_fail(st, src, "cannot write a setting");
	if (!rc) {
		sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
		if (value)
			sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
		rc = db_step_done(st, s, "cannot write a setting");
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_setting_list(store *st, const char *prefix, store_setting_fn fn, void *ctx)
{
	/* Collected first, so fn may use the store. */
	char (*keys)[128] = NULL, (*vals)[128] = NULL;
	size_t n = 0, cap = 0;
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s;
	int src = sqlite3_prepare_v2(st->db, "SELECT key, value FROM settings WHERE substr(key, 1, ?2) = ?1 ORDER BY key",
				     -1, &s, NULL);
	int rc = src == SQLITE_OK ? 0 : db_fail(st, src, "cannot list settings");
	if (!rc) {
		sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 2, (int)strlen(prefix));
		while ((src = sqlite3_step(s)) == SQLITE_ROW) {
			if (n == cap) {
				cap = cap ? 2 * cap : 16;
				keys = xrealloc(keys, cap * sizeof *keys);
				vals = xrealloc(vals, cap * sizeof *vals);
			}
			const unsigned char *k = sqlite3_column_text(s, 0), *v = sqlite3_column_text(s, 1);
			snprintf(keys[n], sizeof keys[n], "%s", k ? (const char *)k : "");
			snprintf(vals[n], sizeof vals[n], "%s", v ? (const char *)v : "");
			n++;
		}
		if (src != SQLITE_DONE)
			rc = db_fail(st, src, "cannot list settings");
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&st->db_mu);
	for (size_t i = 0; i < n && !rc; i++)
		rc = fn(ctx, keys[i], vals[i]);
	free(keys);
	free(vals);
	return rc;
}

int store_scrub(store *st, uint8_t cursor[HASH_LEN], uint64_t budget, uint8_t *bad, unsigned maxbad,
		store_scrub_result *out)
{
	memset(out, 0, sizeof *out);
	struct {
		uint8_t id[HASH_LEN];
		seg_loc loc;
	} rows[SCRUB_BATCH];
	buf data;
	buf_init(&data, SEG_CHUNK_MAX);
	int rc = 0;
	while (!rc && out->bytes < budget && !out->done) {
		unsigned n = 0;
		pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_CHUNK_SCAN]; /* the GC sweep's scan */
		sqlite3_bind_blob(s, 1, cursor, HASH_LEN, SQLITE_TRANSIENT);
		sqlite3_bind_int(s, 2, SCRUB_BATCH);
		int src;
		while ((src = sqlite3_step(s)) == SQLITE_ROW && n < SCRUB_BATCH) {
			if (sqlite3_column_bytes(s, 0) != HASH_LEN)
				continue;
			memcpy(rows[n].id, sqlite3_column_blob(s, 0), HASH_LEN);
			rows[n].loc.seg = (uint32_t)sqlite3_column_int64(s, 1);
			rows[n].loc.off = (uint64_t)sqlite3_column_int64(s, 2);
			rows[n].loc.len = (uint32_t)sqlite3_column_int64(s, 3);
			n++;
		}
		if (src != SQLITE_ROW && src != SQLITE_DONE)
			rc = db_fail(st, src, "cannot list chunks to scrub");
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		pthread_mutex_unlock(&st->db_mu);
		if (rc)
			break;
		if (n < SCRUB_BATCH)
			out->done = true;
		for (unsigned i = 0; i < n && !rc; i++) {
			memcpy(cursor, rows[i].id, HASH_LEN);
			int r = read_at(st, rows[i].id, &rows[i].loc, &data);
			out->chunks++;
			out->bytes += rows[i].loc.len;
			if (!r || r == SS_ENOENT) /* fine, or dropped by GC meanwhile */
				continue;
			char ab[SEG_ID_ABBREV];
			seg_id_abbrev(rows[i].id, ab);
			log_err("scrub: %s; chunk %s dropped from the index until a peer sends it again", ss_errmsg(r),
				ab);
			if ((rc = store_forget(st, rows[i].id)))
				break;
			if (out->nbad < maxbad)
				memcpy(bad + (size_t)out->nbad * HASH_LEN, rows[i].id, HASH_LEN);
			out->nbad++;
		}
	}
	if (out->done)
		memset(cursor, 0, HASH_LEN);
	buf_free(&data);
	return rc;
}

int store_get_chunk(store *st, const uint8_t id[HASH_LEN], buf *out)
{
	seg_loc loc;
	buf_reset(out);
	int rc = chunk_find(st, id, &loc, false);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		char ab[SEG_ID_ABBREV];
		seg_id_abbrev(id, ab);
		return ss_fail(SS_ENOENT, "chunk %s not found", ab);
	}
	return read_at(st, id, &loc, out);
}

/*
 * Drop the pending rows whose segment was lost (its fsync failed): their
 * bytes may be gone, so they must be uploaded again.  Caller holds mu.
 */
int store_forget(store *st, const uint8_t id[HASH_LEN])
{
	pthread_mutex_lock(&st->mu);
	st->gone_gen++; /* before the row goes: see store_commit */
	pend_ent *e = pend_find(&st->pend, id);
	if (e) {
		st->pend_bytes -= e->loc.len;
		pend_del(&st->pend, id);
	}
	pthread_mutex_unlock(&st->mu);
	pthread_mutex_lock(&st->db_mu);
	/* Gone from the index and wanted from a peer again, in one
	 * transaction: a restart keeps asking for it (store_wanted). */
	sqlite3_stmt *s;
	bool gone = false;
	int rc = db_begin(st);
	int src = rc ? SQLITE_OK : sqlite3_prepare_v2(st->db, "DELETE FROM chunks WHERE id = ?1", -1, &s, NULL);
	if (!rc && src != SQLITE_OK)
		rc = db_fail(st, src, "cannot forget a chunk");
	else if (!rc) {
		sqlite3_bind_blob(s, 1, id, HASH_LEN, SQLITE_STATIC);
		rc = db_step_done(st, s, "cannot forget a chunk");
		gone = !rc && sqlite3_changes(st->db) > 0;
		sqlite3_finalize(s);
	}
	if (!rc)
		rc = want_row(st, id, true);
	if (!rc)
		rc = db_commit(st, "cannot forget a chunk");
	if (rc) {
		db_rollback(st);
	} else {
		if (gone && st->nchunks > 0)
			st->nchunks--;
		want_add_mem(st, id);
	}
	pthread_mutex_unlock(&st->db_mu);
	/* After the chunk is gone, so a node checked meanwhile is cleared too
	 * (marks are hints; commit's walk is what guarantees a whole tree). */
	int urc = nodes_reset(st);
	return rc ? rc : urc;
}

static void store_drop_lost(store *st)
{
	size_t n = 0;
	uint8_t (*ids)[HASH_LEN] = xmalloc((st->pend.n + 1) * HASH_LEN);
	for (size_t i = 0; i < st->pend.cap; i++) {
		pend_ent *e = &st->pend.v[i];
		if (!e->seq || !seg_lost(st->segs, e->loc.seg))
			continue;
		memcpy(ids[n++], e->id, HASH_LEN);
		st->drop_seq = MAX(st->drop_seq, e->seq);
		st->pend_bytes -= e->loc.len;
	}
	for (size_t i = 0; i < n; i++)
		pend_del(&st->pend, ids[i]);
	free(ids);
	if (n)
		log_err("%zu chunks not yet durable were lost with a segment whose fsync failed; "
			"they must be sent again", n);
}

int store_flush(store *st)
{
	int rc = 0;
	bool reset = false;
	pthread_mutex_lock(&st->mu);
	uint64_t target = st->put_seq, start = st->done_seq;
	while (st->done_seq < target) {
		if (st->flushing) {
			/* Another thread's flush may cover our puts: wait for it
			 * rather than start a second fsync. */
			pthread_cond_wait(&st->flush_cv, &st->mu);
			continue;
		}
		st->flushing = true;
		uint64_t end = st->put_seq;
		size_t n = 0;
		pend_ent *rows = xmalloc((st->pend.n + 1) * sizeof *rows);
		for (size_t i = 0; i < st->pend.cap; i++)
			if (st->pend.v[i].seq)
				rows[n++] = st->pend.v[i];
		pthread_mutex_unlock(&st->mu);

		/* The order that makes a chunk durable before anything points
		 * at it: fsync the segments, then commit their index rows (and
		 * the node marks) in one transaction. */
		bool lost = false;
#if SIM_BUG == 5
		/* PLANTED BUG 5 (tests/sim only): index before the fsync. */
		if (n) {
			pthread_mutex_lock(&st->db_mu);
			rc = db_index(st, rows, n);
			pthread_mutex_unlock(&st->db_mu);
		}
		if (!rc && st->flush_hook && st->flush_hook(st->flush_hook_ctx))
			rc = ss_fail(SS_EIO, "simulated stop inside a flush");
		if (!rc && (rc = seg_sync(st->segs)))
			lost = true;
#else
		rc = seg_sync(st->segs);
		if (rc) {
			lost = true;
		} else if (st->flush_hook && st->flush_hook(st->flush_hook_ctx)) {
			rc = ss_fail(SS_EIO, "simulated stop inside a flush");
		} else if (n) {
			pthread_mutex_lock(&st->db_mu);
			rc = db_index(st, rows, n);
			pthread_mutex_unlock(&st->db_mu);
		}
#endif

		pthread_mutex_lock(&st->mu);
		if (!rc) {
			for (size_t i = 0; i < n; i++) {
				pend_del(&st->pend, rows[i].id);
				st->pend_bytes -= rows[i].loc.len;
			}
			st->done_seq = end;
			if (!st->pend.n && st->pend.cap > 4096) {
				/* Drained after a bulk upload: give the memory back
				 * and keep later snapshots cheap. */
				free(st->pend.v);
				st->pend = (pend_table){0};
			}
		} else if (lost) {
			store_drop_lost(st);
			reset = true;
		}
		free(rows);
		st->flushing = false;
		pthread_cond_broadcast(&st->flush_cv);
		if (rc)
			break;
	}
	if (!rc && st->drop_seq > start)
		rc = ss_fail(SS_EIO, "chunks stored in %s were lost when a segment could not be synced; "
				     "send them again", st->dir);
	pthread_mutex_unlock(&st->mu);
	/* Nodes marked complete above a dropped chunk must not stay marked. */
	if (reset)
		nodes_reset(st);
	return rc;
}

/* ---- leases ---- */

uint64_t store_lease_begin(store *st)
{
	pthread_mutex_lock(&st->mu);
	if (st->nleases == st->lease_cap) {
		st->lease_cap = st->lease_cap ? st->lease_cap * 2 : 16;
		st->leases = xrealloc(st->leases, st->lease_cap * sizeof *st->leases);
	}
	store_lease *l = &st->leases[st->nleases++];
	l->id = ++st->lease_next;
	/* Under mu, so a watermark computed meanwhile sees this lease (or the
	 * lease sees every append the watermark's reader could miss). */
	seg_position(st->segs, &l->seg, &l->off);
	uint64_t id = l->id;
	pthread_mutex_unlock(&st->mu);
	return id;
}

/* (seg, off) lies before the point (wseg, woff). */
static bool pos_before(uint32_t seg, uint64_t off, uint32_t wseg, uint64_t woff)
{
	return seg < wseg || (seg == wseg && off < woff);
}

/* The minimum append point over live leases; "past everything" when none
 * is live.  Caller holds mu. */
static void lease_watermark(store *st, uint32_t *seg, uint64_t *off)
{
	*seg = UINT32_MAX;
	*off = UINT64_MAX;
	for (unsigned i = 0; i < st->nleases; i++)
		if (pos_before(st->leases[i].seg, st->leases[i].off, *seg, *off)) {
			*seg = st->leases[i].seg;
			*off = st->leases[i].off;
		}
}

void store_lease_end(store *st, uint64_t lease)
{
	pthread_mutex_lock(&st->mu);
	unsigned i = 0;
	while (i < st->nleases && st->leases[i].id != lease)
		i++;
	bool found = i < st->nleases;
	if (found)
		st->leases[i] = st->leases[--st->nleases];
	pthread_mutex_unlock(&st->mu);
	if (!found)
		log_warn("lease %llu ended twice or never begun", (unsigned long long)lease);
}

unsigned store_lease_count(store *st)
{
	pthread_mutex_lock(&st->mu);
	unsigned n = st->nleases;
	pthread_mutex_unlock(&st->mu);
	return n;
}

/* ---- namespace ---- */

void store_set_node(store *st, uint64_t short_id)
{
	pthread_mutex_lock(&st->mu);
	st->node = short_id;
	pthread_mutex_unlock(&st->mu);
}

static uint64_t store_node(store *st)
{
	pthread_mutex_lock(&st->mu);
	uint64_t node = st->node;
	pthread_mutex_unlock(&st->mu);
	return node;
}

static int rec_check_path(const char *path, size_t cap)
{
	size_t len = strnlen(path, cap);
	if (len == cap)
		return ss_fail(SS_EINVAL, "path too long (limit %d bytes)", SS_PATH_MAX);
	return path_check(path, len);
}

/*
 * Check that the tree under node id is wholly present: every node indexed,
 * readable, well-formed and at the expected level (0: any, for the root),
 * every data chunk indexed with the length its parent names.  Sets *size to
 * the bytes under it.  Caller holds db_mu inside a transaction.
 */
/*
 * The walk of one commit.  Nodes already verified are remembered with their
 * sizes, so the cost is the number of distinct nodes (a tree that names one
 * node 128 times at each of 8 levels costs 8 reads, not 128^8), and a node
 * naming a missing child is remembered so it can be unmarked afterwards.
 */
typedef struct tree_walk {
	const char *path;
	pend_table seen; /* verified nodes; loc.off holds the subtree size */
	bool broken;     /* `broken_id` names a node with a missing child */
	uint8_t broken_id[HASH_LEN];
	bool locked;     /* the caller holds db_mu; else take it per lookup */
} tree_walk;

static int walk_loc(store *st, const tree_walk *w, const uint8_t id[HASH_LEN], seg_loc *loc)
{
	if (w->locked)
		return db_chunk_loc(st, id, loc);
	pthread_mutex_lock(&st->db_mu);
	int rc = db_chunk_loc(st, id, loc);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

static int tree_check(store *st, tree_walk *w, const uint8_t id[HASH_LEN], unsigned level, uint64_t *size)
{
	char ab[SEG_ID_ABBREV];
	pend_ent *seen = pend_find(&w->seen, id);
	if (seen) {
		*size = seen->loc.off;
		return 0;
	}
	seg_loc loc;
	int rc = walk_loc(st, w, id, &loc);
	if (rc < 0)
		return rc;
	seg_id_abbrev(id, ab);
	if (rc == 0)
		return ss_fail(SS_ENOENT, "commit of %s refused: chunk %s missing", w->path, ab);
	buf b;
	buf_init(&b, TREE_NODE_MAX);
	tree_node nd;
	/* Holding db_mu, no record moves under the walk; without it, GC may
	 * move one between the lookup and the read. */
	if ((rc = w->locked ? seg_read(st->segs, &loc, id, &b) : read_at(st, id, &loc, &b))) {
		if (rc == SS_ETOOBIG)
			rc = ss_fail(SS_ECORRUPT, "commit of %s refused: tree node %s is malformed", w->path, ab);
		else if (rc == SS_ENOENT) /* dropped by GC meanwhile */
			rc = ss_fail(SS_ENOENT, "commit of %s refused: chunk %s missing", w->path, ab);
		goto out;
	}
	if (tree_node_decode(b.p, b.len, &nd) || (level && nd.level != level)) {
		rc = ss_fail(SS_ECORRUPT, "commit of %s refused: tree node %s is malformed", w->path, ab);
		goto out;
	}
	uint64_t total = 0;
	for (unsigned i = 0; i < nd.count && !rc; i++) {
		tree_entry e;
		uint64_t sub = 0;
		tree_node_entry(&nd, i, &e);
		if (nd.level > 1) {
			rc = tree_check(st, w, e.id, nd.level - 1u, &sub);
		} else {
			seg_loc cl;
			rc = walk_loc(st, w, e.id, &cl);
			seg_id_abbrev(e.id, ab);
			if (rc == 0)
				rc = ss_fail(SS_ENOENT, "commit of %s refused: chunk %s missing", w->path, ab);
			else if (rc == 1) {
				rc = 0;
				sub = cl.len;
			}
		}
		if (rc == SS_ENOENT && !w->broken) {
			w->broken = true;
			memcpy(w->broken_id, id, HASH_LEN);
		}
		if (!rc && sub != e.size) {
			seg_id_abbrev(id, ab);
			rc = ss_fail(SS_ECORRUPT, "commit of %s refused: tree node %s names %llu bytes for an entry "
						  "holding %llu",
				     w->path, ab, (unsigned long long)e.size, (unsigned long long)sub);
		}
		total += e.size; /* decode checked the sum fits */
	}
	if (!rc) {
		pend_ent v = {.seq = 1, .loc = {.off = total}};
		memcpy(v.id, id, HASH_LEN);
		pend_add(&w->seen, &v);
	}
	*size = total;
out:
	buf_free(&b);
	return rc;
}

int store_commit(store *st, record *rec)
{
	return store_commit_batch(st, rec, 1);
}

int store_commit_batch(store *st, record *recs, unsigned n)
{
	int rc = 0;
	for (unsigned i = 0; i < n && !rc; i++)
		rc = rec_check_path(recs[i].path, sizeof recs[i].path);
	if (rc)
		return rc;
	uint64_t node = store_node(st);
	if (!node)
		return ss_fail(SS_EINVAL, "commit of %s refused: this store has no node id", recs[0].path);
	int64_t now = now_wall_ns();
	for (unsigned i = 0; i < n; i++) {
		if (recs[i].deleted)
			memset(recs[i].root, 0, HASH_LEN);
		if (!recs[i].otime_ns)
			recs[i].otime_ns = now;
	}
	/* One fsync of the segment for every chunk of every record. */
	if ((rc = store_flush(st)))
		return rc;

	record *cur = xmalloc(sizeof *cur);
	tree_walk *walks = xcalloc(n, sizeof *walks);
	uint64_t *sizes = xcalloc(n, sizeof *sizes);
	/* rec is the caller's: changed only if the commit succeeds. */
	vvec *old_vv = xmalloc(n * sizeof *old_vv);
	uint64_t *old_origin = xmalloc(n * sizeof *old_origin), *seqs = xmalloc(n * sizeof *seqs);
	unsigned bad = 0;  /* the record a failure is about */
	unsigned done = 0; /* records whose vector and origin are set */
	/*
	 * Walk the trees first without holding the database (a large file's
	 * walk would stall every other session), then check in the
	 * transaction that no chunk left the index meanwhile: store_forget
	 * bumps gone_gen before deleting, so an unchanged generation means
	 * everything the walks saw is still there.  Otherwise walk again,
	 * inside.
	 */
	pthread_mutex_lock(&st->mu);
	uint64_t gen = st->gone_gen;
	pthread_mutex_unlock(&st->mu);
	for (unsigned i = 0; i < n && !rc; i++) {
		walks[i].path = recs[i].path;
		if (!recs[i].deleted && (rc = tree_check(st, &walks[i], recs[i].root, 0, &sizes[i])))
			bad = i;
	}
	if (rc)
		goto walked;
	pthread_mutex_lock(&st->db_mu);
	if ((rc = db_begin(st)))
		goto out;
	pthread_mutex_lock(&st->mu);
	bool changed = st->gone_gen != gen;
	pthread_mutex_unlock(&st->mu);
	for (unsigned i = 0; i < n && !rc; i++) {
		record *rec = &recs[i];
		bad = i;
		if (!rec->deleted && changed) {
			free(walks[i].seen.v);
			walks[i].seen = (pend_table){0};
			walks[i].locked = true;
			if ((rc = tree_check(st, &walks[i], rec->root, 0, &sizes[i])))
				break;
		}
		if (!rec->deleted && sizes[i] != rec->size) {
			rc = ss_fail(SS_EINVAL, "commit of %s refused: its manifest holds %llu bytes, not %llu", rec->path,
				     (unsigned long long)sizes[i], (unsigned long long)rec->size);
			break;
		}
		vvec vv = {0};
		if ((rc = db_current(st, rec->path, cur)) < 0)
			break;
		if (rc == 1)
			vv = cur->vv;
		if ((rc = vv_bump(st, &vv, node, rec->path)))
			break;
		old_vv[i] = rec->vv;
		old_origin[i] = rec->origin;
		rec->vv = vv;
		rec->origin = node;
		done++;
		if ((rc = db_put_version(st, rec, &seqs[i])))
			break;
	}
	if (!rc)
		rc = db_commit(st, "cannot commit a version");
	if (rc) {
		for (unsigned i = 0; i < done; i++) {
			recs[i].vv = old_vv[i];
			recs[i].origin = old_origin[i];
		}
	} else {
		for (unsigned i = 0; i < n; i++)
			recs[i].seq = seqs[i];
	}
out:
	if (rc)
		db_rollback(st);
	pthread_mutex_unlock(&st->db_mu);
walked:
	for (unsigned i = 0; i < n; i++)
		free(walks[i].seen.v);
	if (rc && walks[bad].broken) {
		/* The node claimed a whole subtree it does not have: unmark it,
		 * so the client's retry is asked for the missing part. */
		char msg[512];
		snprintf(msg, sizeof msg, "%s", ss_errmsg(rc));
		store_unmark_node(st, walks[bad].broken_id);
		rc = ss_fail(rc, "%s", msg);
	}
	free(walks);
	free(sizes);
	free(old_vv);
	free(old_origin);
	free(seqs);
	free(cur);
	return rc;
}

int store_rename(store *st, const char *from, const char *to, record *out_new)
{
	int rc;
	if ((rc = path_check(from, strlen(from))) || (rc = path_check(to, strlen(to))))
		return rc;
	if (!strcmp(from, to))
		return ss_fail(SS_EINVAL, "cannot rename %s onto itself", from);
	uint64_t node = store_node(st);
	if (!node)
		return ss_fail(SS_EINVAL, "rename of %s refused: this store has no node id", from);
	int64_t now = now_wall_ns();

	/* src: from's current record; nr: the new record at to; tomb: from's
	 * tombstone; old: to's current record, for its version vector. */
	record *r = xmalloc(4 * sizeof *r), *src = &r[0], *nr = &r[1], *tomb = &r[2], *old = &r[3];
	pthread_mutex_lock(&st->db_mu);
	if ((rc = db_begin(st)))
		goto out;
	rc = db_current(st, from, src);
	if (rc == 0 || (rc == 1 && src->deleted))
		rc = ss_fail(SS_ENOENT, "cannot rename %s: no such file", from);
	if (rc < 0)
		goto out;
	rc = db_current(st, to, old);
	if (rc < 0)
		goto out;
	*nr = *src;
	snprintf(nr->path, sizeof nr->path, "%s", to);
	nr->vv = rc == 1 ? old->vv : (vvec){0};
	nr->origin = node;
	nr->otime_ns = now;
	*tomb = (record){.mode = src->mode, .mtime_ns = now, .deleted = true, .vv = src->vv,
			 .origin = node, .otime_ns = now};
	snprintf(tomb->path, sizeof tomb->path, "%s", from);
	if ((rc = vv_bump(st, &nr->vv, node, to)) || (rc = vv_bump(st, &tomb->vv, node, from)) ||
	    (rc = db_put_version(st, nr, &nr->seq)) || (rc = db_put_version(st, tomb, &tomb->seq)) ||
	    (rc = db_commit(st, "cannot commit a rename")))
		goto out;
	if (out_new)
		*out_new = *nr;
out:
	if (rc)
		db_rollback(st);
	pthread_mutex_unlock(&st->db_mu);
	free(r);
	return rc;
}

int store_lookup(store *st, const char *path, record *out)
{
	pthread_mutex_lock(&st->db_mu);
	int rc = db_current(st, path, out);
	pthread_mutex_unlock(&st->db_mu);
	if (rc == 0)
		return ss_fail(SS_ENOENT, "no such file: %s", path);
	return rc < 0 ? rc : 0;
}

int store_lookup_version(store *st, const char *path, uint64_t seq, record *out)
{
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_VER_GET];
	sqlite3_bind_int64(s, 1, (int64_t)seq);
	sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	int src = sqlite3_step(s), rc;
	if (src == SQLITE_ROW)
		rc = rec_from_row(st, s, out);
	else if (src == SQLITE_DONE)
		rc = ss_fail(SS_ENOENT, "no version %llu of %s", (unsigned long long)seq, path);
	else
		rc = db_fail(st, src, "cannot read the namespace");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

/*
 * Prefix match for store_list: "" matches everything; a prefix ending in
 * '/' is a plain string prefix ("a/" matches everything under a/); any other
 * prefix matches whole components: "a/b" matches "a/b" and "a/b/…", not
 * "a/bc".
 */
static bool list_match(const char *path, const char *prefix, size_t plen)
{
	if (strncmp(path, prefix, plen))
		return false;
	return plen == 0 || prefix[plen - 1] == '/' || path[plen] == 0 || path[plen] == '/';
}

int store_list(store *st, const char *prefix, store_rec_fn fn, void *ctx)
{
	size_t plen = strlen(prefix);
	record *batch = xmalloc(STORE_LIST_BATCH * sizeof *batch);
	char *last = xmalloc(SS_PATH_MAX + 1);
	bool first = true, done = false;
	int rc = 0;
	while (!done && !rc) {
		unsigned n = 0;
		pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[first ? Q_LIST_FROM : Q_LIST_AFTER];
		sqlite3_bind_text(s, 1, first ? prefix : last, -1, SQLITE_STATIC);
		while (n < STORE_LIST_BATCH) {
			int src = sqlite3_step(s);
			if (src == SQLITE_DONE) {
				done = true;
				break;
			}
			if (src != SQLITE_ROW) {
				rc = db_fail(st, src, "cannot list the namespace");
				break;
			}
			const char *path = (const char *)sqlite3_column_text(s, 1);
			if (!path || strncmp(path, prefix, plen)) {
				done = true; /* sorted: past the prefix */
				break;
			}
			snprintf(last, SS_PATH_MAX + 1, "%s", path);
			if (!list_match(path, prefix, plen))
				continue;
			if ((rc = rec_from_row(st, s, &batch[n])))
				break;
			n++;
		}
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		pthread_mutex_unlock(&st->db_mu);
		first = false;
		/* Callbacks run without locks, so they may call the store. */
		for (unsigned i = 0; i < n && !rc; i++)
			rc = fn(ctx, &batch[i]);
	}
	free(last);
	free(batch);
	return rc;
}

/* Step a bound query of REC_COLS rows into out[0..max), then reset it: the
 * batch walks of history and the change log.  *done when the query ran out. */
static int db_step_records(store *st, sqlite3_stmt *s, record *out, unsigned max, unsigned *n, bool *done,
			   const char *what)
{
	int rc = 0;
	*n = 0;
	while (*n < max) {
		int src = sqlite3_step(s);
		if (src == SQLITE_DONE) {
			*done = true;
			break;
		}
		if (src != SQLITE_ROW) {
			rc = db_fail(st, src, what);
			break;
		}
		if ((rc = rec_from_row(st, s, &out[*n])))
			break;
		(*n)++;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

int store_since(store *st, uint64_t after, unsigned limit, store_rec_fn fn, void *ctx)
{
	record *batch = xmalloc(STORE_LIST_BATCH * sizeof *batch);
	int rc = 0;
	unsigned sent = 0;
	bool done = false;
	while (!done && !rc && sent < limit) {
		unsigned n = 0;
		pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_SINCE];
		sqlite3_bind_int64(s, 1, (int64_t)after);
		rc = db_step_records(st, s, batch, MIN(STORE_LIST_BATCH, limit - sent), &n, &done,
				     "cannot read the change log");
		if (n)
			after = batch[n - 1].seq;
		pthread_mutex_unlock(&st->db_mu);
		for (unsigned i = 0; i < n && !rc; i++)
			rc = fn(ctx, &batch[i]);
		sent += n;
	}
	free(batch);
	return rc;
}

/* A received record is usable as it is: a valid path and a vector (a
 * record from nowhere has none). */
static int rec_check_received(const record *r)
{
	int rc = rec_check_path(r->path, sizeof r->path);
	if (!rc && r->vv.n == 0)
		rc = ss_fail(SS_EINVAL, "record for %s has an empty version vector", r->path);
	return rc;
}

/* Write a received record as it is: a new version, current of its path,
 * once a live record's whole tree is found holding its size.  Caller holds
 * db_mu inside a transaction (the walk must see what the commit covers). */
/* node: this store's node id, read by the caller before db_mu (mu and
 * db_mu are never held together). */
/* broken (may be NULL) gets the id of a node marked complete whose subtree
 * turned out to have a hole, for the caller to unmark once it released the
 * database (else every retry trusts the mark and fetches nothing). */
static int db_apply_one(store *st, record *r, uint64_t *seq, uint64_t node, uint8_t *broken, bool *is_broken)
{
	int rc = node ? clock_see(st, &r->vv, node) : 0;
	if (rc)
		return rc;
	if (r->deleted) {
		memset(r->root, 0, HASH_LEN);
	} else {
		tree_walk walk = {.path = r->path, .locked = true};
		uint64_t size = 0;
		rc = tree_check(st, &walk, r->root, 0, &size);
		free(walk.seen.v);
		if (rc && walk.broken && broken) {
			memcpy(broken, walk.broken_id, HASH_LEN);
			*is_broken = true;
		}
		if (!rc && size != r->size)
			rc = ss_fail(SS_EINVAL, "record for %s names %llu bytes, its tree holds %llu", r->path,
				     (unsigned long long)r->size, (unsigned long long)size);
	}
	return rc ? rc : db_put_version(st, r, seq);
}

int store_apply(store *st, record *recs, unsigned n)
{
	int rc = 0;
	for (unsigned i = 0; i < n && !rc; i++)
		rc = rec_check_received(&recs[i]);
	if (rc || (rc = store_flush(st)))
		return rc;
	uint64_t *seqs = xcalloc(n, sizeof *seqs);
	uint64_t node = store_node(st);
	pthread_mutex_lock(&st->db_mu);
	if ((rc = db_begin(st)))
		goto out;
	for (unsigned i = 0; i < n && !rc; i++)
		rc = db_apply_one(st, &recs[i], &seqs[i], node, NULL, NULL);
	if (!rc)
		rc = db_commit(st, "cannot apply records");
out:
	if (rc)
		db_rollback(st);
	else
		for (unsigned i = 0; i < n; i++)
			recs[i].seq = seqs[i];
	pthread_mutex_unlock(&st->db_mu);
	free(seqs);
	return rc;
}

/* Caller holds db_mu.  (0, 0) if never pulled. */
static int db_cursor_get(store *st, uint64_t peer, uint64_t *index_id, uint64_t *seq)
{
	*index_id = *seq = 0;
	sqlite3_stmt *s = st->q[Q_CURSOR_GET];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	int src = sqlite3_step(s), rc = 0;
	if (src == SQLITE_ROW) {
		*index_id = (uint64_t)sqlite3_column_int64(s, 0);
		*seq = (uint64_t)sqlite3_column_int64(s, 1);
	} else if (src != SQLITE_DONE) {
		rc = db_fail(st, src, "cannot read a peer's cursor");
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

int store_cursor_get(store *st, uint64_t peer, uint64_t *index_id, uint64_t *seq)
{
	pthread_mutex_lock(&st->db_mu);
	int rc = db_cursor_get(st, peer, index_id, seq);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

/*
 * Caller holds db_mu.  Records parked from the peer's log under an older
 * index id go with it: that log is gone (a wiped data directory), and each
 * of its records that still exists anywhere comes again through the log of
 * a server that holds it, parked there under that server (a record
 * received only from a log that no longer exists would otherwise wait for
 * a tree no server has, for ever).
 */
static int db_cursor_set(store *st, uint64_t peer, uint64_t index_id, uint64_t seq, uint64_t fp)
{
	sqlite3_stmt *s = st->q[Q_CURSOR_SET];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	sqlite3_bind_int64(s, 2, (int64_t)index_id);
	sqlite3_bind_int64(s, 3, (int64_t)seq);
	int rc = db_step_done(st, s, "cannot write a peer's cursor");
	if (rc)
		return rc;
	s = st->q[Q_CURSOR_FP_SET];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	sqlite3_bind_int64(s, 2, (int64_t)fp);
	if ((rc = db_step_done(st, s, "cannot write a peer's cursor")))
		return rc;
	s = st->q[Q_PEND_OLD_LOG];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	sqlite3_bind_int64(s, 2, (int64_t)index_id);
	return db_step_done(st, s, "cannot drop pending records of an old log");
}

static int check_peer(uint64_t peer)
{
	/* 0 is "no node id" (store_set_node): a cursor for it is a bug. */
	return peer ? 0 : ss_fail(SS_EINVAL, "peer cursor refused: peer id 0 names no node");
}

int store_cursor_set(store *st, uint64_t peer, uint64_t index_id, uint64_t seq)
{
	int rc = check_peer(peer);
	if (rc)
		return rc;
	pthread_mutex_lock(&st->db_mu);
	if (!(rc = db_begin(st)) && !(rc = db_cursor_set(st, peer, index_id, seq, 0)))
		rc = db_commit(st, "cannot write a peer's cursor");
	if (rc)
		db_rollback(st);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

static bool vv_equal(const vvec *a, const vvec *b)
{
	return a->n == b->n && !memcmp(a->e, b->e, a->n * sizeof a->e[0]);
}

/* The same version: what the namespace digest covers. */
static bool rec_same(const record *a, const record *b)
{
	return a->deleted == b->deleted && !memcmp(a->root, b->root, HASH_LEN) && vv_equal(&a->vv, &b->vv);
}

/* Caller holds db_mu.  The first column of s's row as an integer (0 for NULL). */
static int db_scalar(store *st, sqlite3_stmt *s, uint64_t *out, const char *what)
{
	int src = sqlite3_step(s), rc = 0;
	*out = 0;
	if (src == SQLITE_ROW)
		*out = (uint64_t)sqlite3_column_int64(s, 0);
	else if (src != SQLITE_DONE)
		rc = db_fail(st, src, what);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

/* a ≤ b pointwise (every counter of a at most b's for the same node). */
static bool vv_le(const vvec *a, const vvec *b)
{
	for (unsigned i = 0, j = 0; i < a->n; i++) {
		while (j < b->n && b->e[j].node < a->e[i].node)
			j++;
		if (j == b->n || b->e[j].node != a->e[i].node || b->e[j].counter < a->e[i].counter)
			return false;
	}
	return true;
}

/*
 * A received record r, once applied (or found to change nothing), says
 * that every version of its path with a vector below r's is superseded —
 * whether or not r itself was written here (a tombstone for a path never
 * held is not).  Parked records of the path that
 * r supersedes are dropped: once their content is gone from every server
 * they could never be applied, and applying them later could only lose to r
 * (or bring back what r deleted).  Equal vectors with other content are a
 * conflict, not superseded.  Caller holds db_mu inside a transaction.
 */
static int db_pending_drop_superseded(store *st, const record *r)
{
	uint64_t drop[16];
	unsigned n = 0;
	int rc = 0, src;
	sqlite3_stmt *s = st->q[Q_PEND_PATH];
	sqlite3_bind_text(s, 1, r->path, -1, SQLITE_STATIC);
	while (n < 16 && (src = sqlite3_step(s)) == SQLITE_ROW) {
		vvec v;
		const void *vb = sqlite3_column_blob(s, 1), *root = sqlite3_column_blob(s, 2);
		if (vv_decode(vb ? vb : (const void *)"", (size_t)sqlite3_column_bytes(s, 1), &v) ||
		    sqlite3_column_bytes(s, 2) != HASH_LEN)
			continue; /* a damaged row is left for the apply to report */
		bool same = (sqlite3_column_int64(s, 3) != 0) == r->deleted && !memcmp(root, r->root, HASH_LEN);
		if (vv_le(&v, &r->vv) && (same || !vv_equal(&v, &r->vv)))
			drop[n++] = (uint64_t)sqlite3_column_int64(s, 0);
	}
	if (n < 16 && src != SQLITE_DONE)
		rc = db_fail(st, src, "cannot read the pending records");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	for (unsigned i = 0; i < n && !rc; i++) {
		/* Its content may still be parked under another path (the
		 * conflict copy that preserves it, later in a log).  In the same
		 * log, that row takes over holding the acknowledgement back; in
		 * another log's, this row stays (it goes as KEEP once the content
		 * is here, or with its own log). */
		uint64_t elsewhere = 0;
		sqlite3_stmt *e = st->q[Q_PEND_CONTENT_ELSEWHERE];
		sqlite3_bind_int64(e, 1, (int64_t)drop[i]);
		if ((rc = db_scalar(st, e, &elsewhere, "cannot read the pending records")))
			break;
		if (elsewhere)
			continue;
		sqlite3_stmt *m = st->q[Q_PEND_MOVE_ACK];
		sqlite3_bind_int64(m, 1, (int64_t)drop[i]);
		if ((rc = db_step_done(st, m, "cannot drop a pending record")))
			break;
		sqlite3_stmt *d = st->q[Q_PEND_DEL];
		sqlite3_bind_int64(d, 1, (int64_t)drop[i]);
		rc = db_step_done(st, d, "cannot drop a pending record");
	}
	return rc;
}

/* The newest parked record of path: 1 found, 0 none, <0 error. */
static int db_pending_newest(store *st, const char *path, record *out)
{
	sqlite3_stmt *s = st->q[Q_PEND_NEWEST];
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	return db_one_record(st, s, out, "cannot read the pending records");
}

/* Scratch records of one received record's apply. */
typedef struct apply_scratch {
	record local, out[2], cur, sub[2];
	uint64_t node; /* store_node, read before db_mu */
	uint8_t broken[HASH_LEN];
	bool is_broken;
	store_applied n;
} apply_scratch;

enum { APPLY_PARKED = 1 };

/* Write one record decide returned (db_apply_received): a new version,
 * current of its path — unless it is the path's current record already (a
 * replay, or KEEP as is), which adds nothing.  *nw counts what is written. */
static int db_write_out(store *st, apply_scratch *a, record *o, unsigned *nw)
{
	int rc = rec_check_received(o);
	if (rc)
		return rc;
	if (o->deleted)
		memset(o->root, 0, HASH_LEN);
	int found = db_current(st, o->path, &a->cur);
	if (found == 1 && rec_same(o, &a->cur))
		return 0;
	if (found < 0)
		return found;
	bool *is_broken = a->is_broken ? NULL : &a->is_broken; /* the first one found */
	if (!(rc = db_apply_one(st, o, &o->seq, a->node, is_broken ? a->broken : NULL, is_broken)))
		(*nw)++;
	return rc;
}

/*
 * One received record through decide, inside the caller's transaction
 * (db_mu held): 0 when done (its versions written, or nothing to write),
 * APPLY_PARKED when writing it needs a tree that is not complete here —
 * then nothing of it stays written (a savepoint undoes a conflict copy
 * written before the check failed) — or an error that aborts the apply.
 */
static int db_apply_received(store *st, const record *rr, uint64_t peer, store_decide_fn decide, void *ctx,
			     apply_scratch *a)
{
	int found = db_current(st, rr->path, &a->local);
	/* A path held here only as a parked record is held all the same: a
	 * tombstone for it must be decided against that record (and written,
	 * or parked with it), not skipped as one for a path never held — the
	 * parked record would come back to life once its tree arrived. */
	bool over_parked = false;
	if (!found && rr->deleted)
		over_parked = (found = db_pending_newest(st, rr->path, &a->local)) == 1;
	if (found < 0)
		return found;
	/* A counter of ours that any received record names is never issued
	 * again, written here or not: a wiped data directory's clock starts
	 * low, and a write of it must not look older than what the cluster
	 * already saw of it. */
	int rc = a->node ? clock_see(st, &rr->vv, a->node) : 0;
	if (rc)
		return rc;
	unsigned nout = 0;
	memset(a->out, 0, sizeof a->out);
	rc = decide(ctx, found ? &a->local : NULL, rr, a->out, &nout);
	if (rc) {
		char msg[400];
		snprintf(msg, sizeof msg, "%s", ss_errmsg(rc));
		return ss_fail(rc, "apply of %.200s from peer %016llx aborted: %s", rr->path, (unsigned long long)peer,
			       msg);
	}
	if (nout > 2)
		return ss_fail(SS_EINVAL, "apply of %.200s from peer %016llx aborted: decided %u records, at most 2",
			       rr->path, (unsigned long long)peer, nout);
	/* The parked record beats the tombstone, but may yet go (its log
	 * gone): the tombstone is held all the same, as the path's current
	 * record, and the parked one takes over from it when it applies. */
	if (over_parked && !nout)
		a->out[nout++] = *rr;
	bool live = false;
	for (unsigned j = 0; j < nout; j++)
		live |= !a->out[j].deleted;
	/* A way back to here: a live record may find its tree incomplete
	 * (parked), and any record may be refused (a size its tree does not
	 * hold) without taking the rest of the transaction with it. */
	ns_sum saved = st->ns_txn;
	if (nout && (rc = db_step_done(st, st->q[Q_SAVE], "cannot apply records")))
		return rc;
	unsigned nw = 0;
	for (unsigned j = 0; j < nout && !rc; j++) {
		record *o = &a->out[j];
		if ((found = db_current(st, o->path, &a->cur)) < 0) {
			rc = found;
			break;
		}
		/* A conflict copy (at another path than the received record's)
		 * is itself decided against what its path holds: derived late
		 * — a record applied long after its partner, say, once parked —
		 * it may meet a newer version of the copy there already, which
		 * it must not overwrite.  One level: a copy's own copy is
		 * written as decided. */
		if (found == 1 && strcmp(o->path, rr->path)) {
			unsigned ns = 0;
			memset(a->sub, 0, sizeof a->sub);
			if ((rc = decide(ctx, &a->cur, o, a->sub, &ns)))
				break;
			for (unsigned k = 0; k < ns && k < 2 && !rc; k++)
				rc = db_write_out(st, a, &a->sub[k], &nw);
			continue;
		}
		rc = db_write_out(st, a, o, &nw);
	}
	if (nout && rc < 0 && rc != SS_ENOENT) {
		/* Refused: nothing of it stays; the caller decides what a
		 * refusal means (a bad batch, or a parked record to drop). */
		db_step_done(st, st->q[Q_SAVE_UNDO], "cannot apply records");
		db_step_done(st, st->q[Q_SAVE_DONE], "cannot apply records");
		if (st->clock_loaded)
			clock_store(st);
		st->ns_txn = saved;
		return rc;
	}
	if (live && rc == SS_ENOENT) {
		/* A chunk of the tree is missing (its message names it): park.
		 * (The undo took back the clock's row, not the clock in memory,
		 * which has seen this record's counters: write it again.) */
		if (!(rc = db_step_done(st, st->q[Q_SAVE_UNDO], "cannot apply records")) &&
		    !(rc = st->clock_loaded ? clock_store(st) : 0))
			rc = APPLY_PARKED;
		st->ns_txn = saved;
		nw = 0;
	}
	if (nout && rc >= 0) {
		int r2 = db_step_done(st, st->q[Q_SAVE_DONE], "cannot apply records");
		rc = r2 ? r2 : rc;
	}
	/* Only a record taken in full supersedes parked ones: a parked one
	 * may itself go (its log gone), and the older one must then still
	 * hold the acknowledgement back. */
	if (!rc)
		rc = db_pending_drop_superseded(st, rr);
	a->n.written += nw;
	return rc;
}

/* After an apply released the database: a node marked complete whose
 * subtree had a hole loses its mark (else every fetch trusts it). */
static void apply_unmark(store *st, apply_scratch *a)
{
	if (a->is_broken)
		store_unmark_node(st, a->broken);
}

static int db_pending_add(store *st, const record *r, uint64_t peer, uint64_t index_id, uint64_t peer_seq)
{
	uint8_t vv[VV_MAX * 16];
	sqlite3_stmt *s = st->q[Q_PEND_ADD];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	sqlite3_bind_int64(s, 2, (int64_t)index_id);
	sqlite3_bind_int64(s, 3, (int64_t)peer_seq);
	bind_record(s, 4, r, vv);
	return db_step_done(st, s, "cannot park a record");
}

/* An apply's frame, shared by store_apply_remote and store_apply_pending:
 * its scratch, the database lock and one transaction (begun, or *rc). */
static apply_scratch *apply_begin(store *st, int *rc)
{
	apply_scratch *a = xcalloc(1, sizeof *a);
	a->node = store_node(st);
	pthread_mutex_lock(&st->db_mu);
	*rc = db_begin(st);
	return a;
}

/* Commit (or, after an error, roll back), unlock, and report. */
static int apply_end(store *st, apply_scratch *a, int rc, const char *what, store_applied *out)
{
	if (!rc)
		rc = db_commit(st, what);
	if (rc)
		db_rollback(st);
	pthread_mutex_unlock(&st->db_mu);
	apply_unmark(st, a);
	if (!rc && out)
		*out = a->n;
	free(a);
	return rc;
}

int store_apply_remote(store *st, const record *remote, unsigned n, uint64_t peer, uint64_t index_id,
		       uint64_t peer_seq, store_decide_fn decide, void *ctx, store_applied *out)
{
	if (out)
		*out = (store_applied){0};
	int rc = check_peer(peer);
	for (unsigned i = 0; i < n && !rc; i++)
		rc = rec_check_received(&remote[i]);
	if (rc || (rc = store_flush(st)))
		return rc;
	apply_scratch *a = apply_begin(st, &rc);
	for (unsigned i = 0; i < n && rc >= 0; i++) {
		rc = db_apply_received(st, &remote[i], peer, decide, ctx, a);
		if (rc == APPLY_PARKED) {
			rc = db_pending_add(st, &remote[i], peer, index_id, remote[i].seq);
			a->n.parked++;
		}
	}
	/* The cursor remembers which record it stopped at (the batch's last:
	 * always kept), so the peer can tell its log still has it there. */
	if (!rc)
		rc = db_cursor_set(st, peer, index_id, peer_seq, n ? store_rec_fp(&remote[n - 1]) : 0);
	return apply_end(st, a, rc, "cannot apply records", out);
}

/* ---- pending records ---- */

int store_pending_list(store *st, uint64_t after, store_pending *out, unsigned max, unsigned *n)
{
	*n = 0;
	int rc = 0, src;
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_PEND_LIST];
	sqlite3_bind_int64(s, 1, (int64_t)after);
	sqlite3_bind_int64(s, 2, max);
	while (*n < max && (src = sqlite3_step(s)) == SQLITE_ROW) {
		store_pending *p = &out[*n];
		if ((rc = rec_from_row(st, s, &p->rec)))
			break;
		p->peer = (uint64_t)sqlite3_column_int64(s, 10);
		p->index_id = (uint64_t)sqlite3_column_int64(s, 11);
		p->peer_seq = (uint64_t)sqlite3_column_int64(s, 12);
		(*n)++;
	}
	if (!rc && *n < max && src != SQLITE_DONE)
		rc = db_fail(st, src, "cannot read the pending records");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_pending_max(store *st, uint64_t *id)
{
	pthread_mutex_lock(&st->db_mu);
	int rc = db_scalar(st, st->q[Q_PEND_MAX], id, "cannot read the pending records");
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_pending_count(store *st, uint64_t *n)
{
	pthread_mutex_lock(&st->db_mu);
	int rc = db_scalar(st, st->q[Q_PEND_COUNT], n, "cannot count the pending records");
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_apply_pending(store *st, const store_pending *p, unsigned n, store_decide_fn decide, void *ctx,
			store_applied *out)
{
	if (out)
		*out = (store_applied){0};
	int rc = store_flush(st);
	if (rc)
		return rc;
	apply_scratch *a = apply_begin(st, &rc);
	for (unsigned i = 0; i < n && rc >= 0; i++) {
		/* Taken by another call already?  Its row is gone. */
		sqlite3_stmt *d = st->q[Q_PEND_DEL];
		sqlite3_bind_int64(d, 1, (int64_t)p[i].rec.seq);
		if ((rc = db_step_done(st, d, "cannot apply a pending record")))
			break;
		if (!sqlite3_changes(st->db))
			continue;
		rc = db_apply_received(st, &p[i].rec, p[i].peer, decide, ctx, a);
		if (rc == APPLY_PARKED || rc == SS_ECORRUPT) {
			/* Still incomplete — or a copy here failed its hash (our
			 * disk's fault, not the record's: scrub repairs it) —
			 * back in, with a new row id (after the ones still
			 * waiting, so a batch moves on). */
			if (rc == SS_ECORRUPT)
				log_warn("parked record kept: %s", ss_errmsg(rc));
			rc = db_pending_add(st, &p[i].rec, p[i].peer, p[i].index_id, p[i].peer_seq);
			a->n.parked++;
		} else if (rc == SS_EINVAL || rc == SS_EPROTO) {
			/* The record itself can never be applied (a size its
			 * verified tree does not hold, say): dropped, not kept
			 * to stall every try. */
			log_err("parked record dropped: %s", ss_errmsg(rc));
			rc = 0;
		}
	}
	return apply_end(st, a, rc, "cannot apply pending records", out);
}

uint64_t store_rec_fp(const record *r)
{
	uint8_t b[SS_PATH_MAX + 2 + HASH_LEN + VV_MAX * 16], h[HASH_LEN];
	size_t n = strlen(r->path) + 1;
	memcpy(b, r->path, n);
	b[n++] = r->deleted;
	memcpy(b + n, r->root, HASH_LEN);
	n += HASH_LEN;
	n += vv_encode(&r->vv, b + n);
	sha256(b, n, h);
	return rd64(h);
}

int store_pending_drop_peer(store *st, uint64_t peer)
{
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_PEND_DROP_PEER];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	int rc = db_step_done(st, s, "cannot drop pending records");
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_cursor_fp(store *st, uint64_t peer, uint64_t *fp)
{
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_CURSOR_FP_GET];
	sqlite3_bind_int64(s, 1, (int64_t)peer);
	int rc = db_scalar(st, s, fp, "cannot read a peer's cursor");
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_version_at(store *st, uint64_t seq, record *out)
{
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_VER_AT];
	sqlite3_bind_int64(s, 1, (int64_t)seq);
	int rc = db_one_record(st, s, out, "cannot read the change log");
	pthread_mutex_unlock(&st->db_mu);
	return rc == 1 ? 0 : rc == 0 ? SS_ENOENT : rc;
}

int store_cursor_acked(store *st, uint64_t peer, uint64_t index_id, uint64_t *acked)
{
	uint64_t cur_index, cur, oldest = 0;
	*acked = 0;
	pthread_mutex_lock(&st->db_mu);
	int rc = db_cursor_get(st, peer, &cur_index, &cur);
	if (!rc) {
		sqlite3_stmt *s = st->q[Q_PEND_MIN];
		sqlite3_bind_int64(s, 1, (int64_t)peer);
		sqlite3_bind_int64(s, 2, (int64_t)index_id);
		rc = db_scalar(st, s, &oldest, "cannot read the pending records");
	}
	pthread_mutex_unlock(&st->db_mu);
#if SIM_BUG == 6
	/* PLANTED BUG 6 (tests/sim only): acknowledge what was received —
	 * parked records too, whose trees are not here. */
	oldest = 0;
#endif
	if (!rc && cur_index == index_id)
		*acked = oldest && oldest - 1 < cur ? oldest - 1 : cur;
	return rc;
}

int store_history(store *st, const char *path, store_rec_fn fn, void *ctx)
{
	record *batch = xmalloc(STORE_LIST_BATCH * sizeof *batch);
	int64_t before = INT64_MAX;
	bool done = false;
	int rc = 0;
	while (!done && !rc) {
		unsigned n = 0;
		pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_HISTORY];
		sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, before);
		rc = db_step_records(st, s, batch, STORE_LIST_BATCH, &n, &done, "cannot read the history");
		if (n)
			before = (int64_t)batch[n - 1].seq;
		pthread_mutex_unlock(&st->db_mu);
		for (unsigned i = 0; i < n && !rc; i++)
			rc = fn(ctx, &batch[i]);
	}
	free(batch);
	return rc;
}

int store_stats_get(store *st, store_stats *out)
{
	memset(out, 0, sizeof *out);
	int rc = 0, src;
	pthread_mutex_lock(&st->db_mu);
	out->chunks = st->nchunks;
	out->chunk_bytes = st->chunk_bytes;
	sqlite3_stmt *s = st->q[Q_HEAD];
	if ((src = sqlite3_step(s)) == SQLITE_ROW)
		out->head_seq = (uint64_t)sqlite3_column_int64(s, 0);
	else
		rc = db_fail(st, src, "cannot read the namespace");
	sqlite3_reset(s);
	ns_sum ns = st->ns;
	pthread_mutex_unlock(&st->db_mu);
	out->files = (uint64_t)ns.files;
	out->bytes = (uint64_t)ns.bytes;
	uint8_t sum[32];
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 8; k++)
			sum[i * 8 + k] = (uint8_t)(ns.w[i] >> (8 * k));
	sha256(sum, sizeof sum, out->digest);
	return rc;
}

/* ---- history, tombstones, garbage ---- */

#define GC_BATCH 1024     /* rows per scan step and per sweep transaction */
#define EXPIRE_BATCH 256  /* versions per expiry transaction */

int store_gc_debug_stop_after = GC_STOP_NONE;

void store_set_segment_max(store *st, uint64_t bytes)
{
	seg_set_max(st->segs, bytes);
}

int store_expire_history(store *st, int64_t now_ns, int64_t retention_ns, uint64_t keep_from,
			 uint64_t *dropped)
{
	if (dropped)
		*dropped = 0;
	if (retention_ns < 0)
		return ss_fail(SS_EINVAL, "history retention must not be negative");
	/* A version superseded at t goes when t < cutoff. */
	int64_t cutoff = now_ns < INT64_MIN + retention_ns ? INT64_MIN : now_ns - retention_ns;
	uint64_t *seqs = xmalloc(EXPIRE_BATCH * sizeof *seqs);
	int64_t after = 0;
	uint64_t total = 0;
	bool done = false;
	int rc = 0;
	/* One transaction per batch, so other sessions get the database in
	 * between; each batch decides and deletes under the same lock. */
	while (!done && !rc) {
		unsigned n = 0, rows = 0;
		uint64_t got = 0;
		pthread_mutex_lock(&st->db_mu);
		if ((rc = db_begin(st))) {
			pthread_mutex_unlock(&st->db_mu);
			break;
		}
		sqlite3_stmt *s = st->q[Q_HIST_SCAN];
		sqlite3_bind_int64(s, 1, after);
		sqlite3_bind_int64(s, 2, EXPIRE_BATCH);
		int src;
		while ((src = sqlite3_step(s)) == SQLITE_ROW) {
			rows++;
			after = sqlite3_column_int64(s, 0);
			if (sqlite3_column_type(s, 1) == SQLITE_NULL)
				continue; /* the newest version of its path */
			if (sqlite3_column_int64(s, 1) < cutoff && (uint64_t)after < keep_from)
				seqs[n++] = (uint64_t)after;
		}
		if (src != SQLITE_DONE)
			rc = db_fail(st, src, "cannot read the history");
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		done = rows < EXPIRE_BATCH;
		for (unsigned i = 0; i < n && !rc; i++) {
			sqlite3_bind_int64(st->q[Q_VER_DROP], 1, (int64_t)seqs[i]);
			if (!(rc = db_step_done(st, st->q[Q_VER_DROP], "cannot expire history")))
				got += (uint64_t)sqlite3_changes(st->db);
		}
		if (!rc)
			rc = db_commit(st, "cannot expire history");
		if (rc)
			db_rollback(st);
		else
			total += got;
		pthread_mutex_unlock(&st->db_mu);
	}
	free(seqs);
	if (dropped)
		*dropped = total;
	return rc;
}

int store_expire_tombstones(store *st, store_expirable_fn expirable, void *ctx, uint64_t *dropped)
{
	if (dropped)
		*dropped = 0;
	record *batch = xmalloc(STORE_LIST_BATCH * sizeof *batch);
	char *last = xcalloc(1, SS_PATH_MAX + 1);
	uint64_t total = 0;
	bool done = false;
	int rc = 0;
	while (!done && !rc) {
		unsigned n = 0;
		uint64_t got = 0;
		pthread_mutex_lock(&st->db_mu);
		if ((rc = db_begin(st))) {
			pthread_mutex_unlock(&st->db_mu);
			break;
		}
		sqlite3_stmt *s = st->q[Q_TOMBS];
		sqlite3_bind_text(s, 1, last, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 2, STORE_LIST_BATCH);
		rc = db_step_records(st, s, batch, STORE_LIST_BATCH, &n, &done, "cannot read the tombstones");
		done = done || n < STORE_LIST_BATCH;
		if (n)
			snprintf(last, SS_PATH_MAX + 1, "%s", batch[n - 1].path);
		for (unsigned i = 0; i < n && !rc; i++) {
			/* Decided and removed in one transaction: the tombstone
			 * is still current when it goes. */
			if (!expirable(ctx, &batch[i]))
				continue;
			sqlite3_bind_text(st->q[Q_PATH_DROP_VERSIONS], 1, batch[i].path, -1, SQLITE_STATIC);
			sqlite3_bind_text(st->q[Q_PATH_DROP_CURRENT], 1, batch[i].path, -1, SQLITE_STATIC);
			if (!(rc = db_step_done(st, st->q[Q_PATH_DROP_VERSIONS], "cannot expire a tombstone")) &&
			    !(rc = db_step_done(st, st->q[Q_PATH_DROP_CURRENT], "cannot expire a tombstone")))
				got++;
		}
		if (!rc)
			rc = db_commit(st, "cannot expire tombstones");
		if (rc)
			db_rollback(st);
		else
			total += got;
		pthread_mutex_unlock(&st->db_mu);
	}
	free(last);
	free(batch);
	if (dropped)
		*dropped = total;
	return rc;
}

int store_tombstones(store *st, uint64_t *count, uint64_t *oldest_seq)
{
	uint64_t c = 0, o = 0;
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_TOMB_COUNT];
	int src = sqlite3_step(s), rc = 0;
	if (src == SQLITE_ROW) {
		c = (uint64_t)sqlite3_column_int64(s, 0);
		o = (uint64_t)sqlite3_column_int64(s, 1); /* NULL reads as 0 */
	} else {
		rc = db_fail(st, src, "cannot count tombstones");
	}
	sqlite3_reset(s);
	pthread_mutex_unlock(&st->db_mu);
	if (count)
		*count = c;
	if (oldest_seq)
		*oldest_seq = o;
	return rc;
}

/*
 * Garbage collection; the algorithm and its safety argument are in
 * docs/STORAGE.md ("Retention, tombstones, garbage collection").
 */
typedef struct gc_state {
	store *st;
	store_gc_stats *stats;
	idset live;     /* chunks and nodes reachable from a kept version */
	idset walked;   /* nodes walked (a data chunk may share a node's id) */
	uint64_t head;  /* every version up to this seq is marked */
	uint64_t pend_head; /* every parked record up to this row id is marked */
	uint32_t gseg;  /* the append point when this GC began */
	uint64_t goff;
} gc_state;

static int gc_stop(int step)
{
	if (store_gc_debug_stop_after != step)
		return 0;
	log_warn("store_gc: stopping after step %d (test hook)", step);
	return 1;
}

/* Mark the tree under node id (level 0: any, for a root).  locked: the
 * caller holds db_mu (and nothing moves records meanwhile). */
/* partial: the tree of a parked record, only partly here yet — what is
 * missing or unreadable is skipped, not an error. */
static int gc_mark_tree(gc_state *g, const uint8_t id[HASH_LEN], unsigned level, bool locked, const char *path,
			bool partial)
{
	if (idset_has(&g->walked, id))
		return 0;
	store *st = g->st;
	char ab[SEG_ID_ABBREV];
	seg_id_abbrev(id, ab);
	seg_loc loc;
	int rc = chunk_find(st, id, &loc, locked);
	if (rc == 0 && partial)
		return 0;
	if (rc == 0)
		return ss_fail(SS_ENOENT, "garbage collection stopped: tree node %s of %.200s is missing (store the "
					  "file again to repair it)", ab, path);
	if (rc < 0)
		return rc;
	buf b;
	buf_init(&b, TREE_NODE_MAX);
	tree_node nd;
	char msg[300] = "malformed";
	rc = locked ? seg_read(st->segs, &loc, id, &b) : read_at(st, id, &loc, &b);
	if (rc && rc != SS_ETOOBIG)
		snprintf(msg, sizeof msg, "%s", ss_errmsg(rc));
	else if (!rc && (tree_node_decode(b.p, b.len, &nd) || (level && nd.level != level)))
		rc = SS_ECORRUPT;
	if (rc && partial) {
		rc = 0; /* its apply will find out */
		goto out;
	}
	if (rc) {
		rc = ss_fail(rc == SS_ETOOBIG ? SS_ECORRUPT : rc,
			     "garbage collection stopped: tree node %s of %.200s is unreadable: %s", ab, path, msg);
		goto out;
	}
	idset_add(&g->walked, id);
	idset_add(&g->live, id);
	for (unsigned i = 0; i < nd.count && !rc; i++) {
		tree_entry e;
		tree_node_entry(&nd, i, &e);
		if (nd.level > 1)
			rc = gc_mark_tree(g, e.id, nd.level - 1u, locked, path, partial);
		else
			idset_add(&g->live, e.id);
	}
out:
	buf_free(&b);
	return rc;
}

/*
 * Mark the trees of the live versions after g->head, in batches.  Unlocked:
 * the database is taken per batch only, and versions committed meanwhile are
 * picked up by later batches (or by the sweep).  Locked: the caller holds
 * db_mu, so no version can be committed before the caller is done.
 */
static int gc_mark_versions(gc_state *g, bool locked)
{
	store *st = g->st;
	typedef struct {
		uint64_t seq;
		uint8_t root[HASH_LEN];
		char path[SS_PATH_MAX + 1];
	} root_row;
	root_row *rows = xmalloc(STORE_LIST_BATCH * sizeof *rows);
	int rc = 0;
	bool done = false;
	while (!done && !rc) {
		unsigned n = 0;
		if (!locked)
			pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_ROOTS];
		sqlite3_bind_int64(s, 1, (int64_t)g->head);
		sqlite3_bind_int64(s, 2, STORE_LIST_BATCH);
		int src;
		while ((src = sqlite3_step(s)) == SQLITE_ROW) {
			root_row *r = &rows[n];
			const char *path = (const char *)sqlite3_column_text(s, 1);
			r->seq = (uint64_t)sqlite3_column_int64(s, 0);
			snprintf(r->path, sizeof r->path, "%s", path ? path : "?");
			if (sqlite3_column_bytes(s, 2) != HASH_LEN) {
				rc = ss_fail(SS_ECORRUPT, "version %llu of %.200s is corrupt in %s",
					     (unsigned long long)r->seq, r->path, st->dbpath);
				break;
			}
			memcpy(r->root, sqlite3_column_blob(s, 2), HASH_LEN);
			n++;
		}
		if (!rc && src != SQLITE_DONE)
			rc = db_fail(st, src, "cannot read the versions");
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		if (!locked)
			pthread_mutex_unlock(&st->db_mu);
		done = n < STORE_LIST_BATCH;
		for (unsigned i = 0; i < n && !rc; i++)
			rc = gc_mark_tree(g, rows[i].root, 0, locked, rows[i].path, false);
		/* Sequence numbers only grow (AUTOINCREMENT), so a version
		 * committed after this batch's query lands above the head. */
		if (!rc && n)
			g->head = rows[n - 1].seq;
	}
	free(rows);
	return rc;
}

/*
 * The same for parked records (after g->pend_head): what of their trees is
 * here already — fetched from one server, the rest still to come from
 * another — is kept, so a retry does not fetch it again or never completes.
 */
static int gc_mark_pending(gc_state *g, bool locked)
{
	store *st = g->st;
	uint8_t root[HASH_LEN];
	char path[SS_PATH_MAX + 1];
	int rc = 0;
	for (;;) {
		/* A row at a time: the table is small, and the walk must not
		 * hold the database when unlocked. */
		if (!locked)
			pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_PEND_ROOTS];
		sqlite3_bind_int64(s, 1, (int64_t)g->pend_head);
		sqlite3_bind_int64(s, 2, 1);
		int src = sqlite3_step(s);
		bool row = src == SQLITE_ROW, whole = row && sqlite3_column_bytes(s, 2) == HASH_LEN;
		if (row) {
			g->pend_head = (uint64_t)sqlite3_column_int64(s, 0);
			const char *p = (const char *)sqlite3_column_text(s, 1);
			snprintf(path, sizeof path, "%s", p ? p : "?");
			if (whole) /* else a damaged row: its apply reports it */
				memcpy(root, sqlite3_column_blob(s, 2), HASH_LEN);
		} else if (src != SQLITE_DONE) {
			rc = db_fail(st, src, "cannot read the pending records");
		}
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		if (!locked)
			pthread_mutex_unlock(&st->db_mu);
		if (rc || !row || (whole && (rc = gc_mark_tree(g, root, 0, locked, path, true))))
			break;
	}
	return rc;
}

typedef struct gc_cand {
	uint8_t id[HASH_LEN];
	seg_loc loc;
} gc_cand;

/*
 * Drop the candidates that are still unreachable, older than the watermark
 * and not pending, in one transaction.  Versions committed since the mark are
 * marked first, under the same lock, so none can slip in between.
 */
static int gc_sweep_batch(gc_state *g, const gc_cand *c, size_t n)
{
	store *st = g->st;
	uint64_t dropped = 0, bytes = 0;
	pthread_mutex_lock(&st->db_mu);
	int rc = db_begin(st);
	if (!rc)
		rc = gc_mark_versions(g, true);
	if (!rc)
		rc = gc_mark_pending(g, true);
	uint32_t wseg;
	uint64_t woff;
	pthread_mutex_lock(&st->mu);
	lease_watermark(st, &wseg, &woff);
	/* Before any row goes: a commit that walked its tree without the lock
	 * sees the generation move and walks again inside (store_commit). */
	st->gone_gen++;
	pthread_mutex_unlock(&st->mu);
	uint64_t leased = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		const gc_cand *e = &c[i];
		if (idset_has(&g->live, e->id))
			continue;
		if (!pos_before(e->loc.seg, e->loc.off, wseg, woff)) {
			leased++; /* garbage, but a lease may still need it */
			continue;
		}
		/* A pending row (a node just marked over this record) would be
		 * indexed again by the next flush: keep the chunk. */
		pthread_mutex_lock(&st->mu);
		bool pending = pend_find(&st->pend, e->id) != NULL;
		pthread_mutex_unlock(&st->mu);
		if (pending)
			continue;
		sqlite3_stmt *s = st->q[Q_CHUNK_DROP];
		sqlite3_bind_blob(s, 1, e->id, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, e->loc.seg);
		sqlite3_bind_int64(s, 3, (int64_t)e->loc.off);
		if ((rc = db_step_done(st, s, "cannot drop garbage chunks")))
			break;
		if (!sqlite3_changes(st->db))
			continue;
		dropped++;
		bytes += e->loc.len;
		sqlite3_bind_blob(st->q[Q_NODE_DEL], 1, e->id, HASH_LEN, SQLITE_STATIC);
		rc = db_step_done(st, st->q[Q_NODE_DEL], "cannot drop garbage chunks");
	}
	if (!rc)
		rc = db_commit(st, "cannot drop garbage chunks");
	if (rc) {
		db_rollback(st);
	} else {
		st->nchunks -= MIN(st->nchunks, dropped);
		st->chunk_bytes -= MIN(st->chunk_bytes, bytes);
		g->stats->chunks_dropped += dropped;
		g->stats->bytes_dropped += bytes;
		g->stats->chunks_leased += leased;
	}
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

/* Walk the index in id order, a batch at a time, and sweep what is neither
 * marked nor appended since this GC began. */
static int gc_sweep(gc_state *g)
{
	store *st = g->st;
	gc_cand *c = xmalloc(2 * GC_BATCH * sizeof *c);
	uint8_t after[HASH_LEN] = {0};
	size_t n = 0;
	bool done = false;
	int rc = 0;
	while (!rc && !done) {
		unsigned rows = 0;
		pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_CHUNK_SCAN];
		sqlite3_bind_blob(s, 1, after, HASH_LEN, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 2, GC_BATCH);
		int src;
		while ((src = sqlite3_step(s)) == SQLITE_ROW) {
			rows++;
			if (sqlite3_column_bytes(s, 0) != HASH_LEN) {
				rc = ss_fail(SS_ECORRUPT, "corrupt chunk index entry in %s", st->dbpath);
				break;
			}
			memcpy(after, sqlite3_column_blob(s, 0), HASH_LEN);
			int64_t seg = sqlite3_column_int64(s, 1), off = sqlite3_column_int64(s, 2),
				len = sqlite3_column_int64(s, 3);
			if (idset_has(&g->live, after) || seg <= 0 || seg > UINT32_MAX || off < 0 || len < 0 ||
			    !pos_before((uint32_t)seg, (uint64_t)off, g->gseg, g->goff))
				continue;
			gc_cand *e = &c[n++];
			memcpy(e->id, after, HASH_LEN);
			e->loc = (seg_loc){.seg = (uint32_t)seg, .off = (uint64_t)off, .len = (uint32_t)len};
		}
		if (!rc && src != SQLITE_DONE)
			rc = db_fail(st, src, "cannot scan the chunk index");
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		pthread_mutex_unlock(&st->db_mu);
		done = rows < GC_BATCH;
		if (!rc && n && (n >= GC_BATCH || done)) {
			rc = gc_sweep_batch(g, c, n);
			n = 0;
		}
	}
	free(c);
	return rc;
}

typedef struct gc_node {
	uint8_t id[HASH_LEN];
	unsigned level;
} gc_node;

static int gc_node_level_cmp(const void *a, const void *b)
{
	unsigned x = ((const gc_node *)a)->level, y = ((const gc_node *)b)->level;
	return x < y ? -1 : x > y;
}

/* Caller holds db_mu. */
static int gc_unmark(store *st, const uint8_t id[HASH_LEN])
{
	pthread_mutex_lock(&st->mu);
	pend_ent *e = pend_find(&st->pend, id);
	if (e)
		e->node = false;
	pthread_mutex_unlock(&st->mu);
	sqlite3_bind_blob(st->q[Q_NODE_DEL], 1, id, HASH_LEN, SQLITE_STATIC);
	return db_step_done(st, st->q[Q_NODE_DEL], "cannot unmark a tree node");
}

/*
 * Completeness marks after a sweep.  A node reachable from a kept version
 * keeps its mark: its whole subtree was marked, so nothing under it went.  A
 * marked node nothing reaches is kept only when the watermark pins it (an
 * upload or fetch in flight), and children it found present may have been
 * swept: check each such node's children now, lowest level first, and unmark
 * it unless they are all still here.
 */
static int gc_check_marks(gc_state *g)
{
	store *st = g->st;
	/* Marks still pending go to the nodes table first. */
	int rc = store_flush(st);
	gc_node *v = NULL;
	size_t n = 0, cap = 0;
	uint8_t after[HASH_LEN] = {0};
	bool done = false;
	while (!rc && !done) {
		unsigned rows = 0;
		pthread_mutex_lock(&st->db_mu);
		sqlite3_stmt *s = st->q[Q_NODE_SCAN];
		sqlite3_bind_blob(s, 1, after, HASH_LEN, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 2, GC_BATCH);
		int src;
		while ((src = sqlite3_step(s)) == SQLITE_ROW) {
			rows++;
			if (sqlite3_column_bytes(s, 0) != HASH_LEN) {
				rc = ss_fail(SS_ECORRUPT, "corrupt tree node mark in %s", st->dbpath);
				break;
			}
			memcpy(after, sqlite3_column_blob(s, 0), HASH_LEN);
			if (idset_has(&g->live, after))
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				v = xrealloc(v, cap * sizeof *v);
			}
			memcpy(v[n].id, after, HASH_LEN);
			v[n++].level = 0;
		}
		if (!rc && src != SQLITE_DONE)
			rc = db_fail(st, src, "cannot scan the tree node marks");
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		pthread_mutex_unlock(&st->db_mu);
		done = rows < GC_BATCH;
	}
	buf b;
	buf_init(&b, TREE_NODE_MAX);
	/* Levels first (an unreadable node sorts first and is unmarked). */
	for (size_t i = 0; i < n && !rc; i++) {
		seg_loc loc;
		tree_node nd;
		if (chunk_find(st, v[i].id, &loc, false) == 1 && !read_at(st, v[i].id, &loc, &b) &&
		    !tree_node_decode(b.p, b.len, &nd))
			v[i].level = nd.level;
	}
	if (n)
		qsort(v, n, sizeof *v, gc_node_level_cmp);
	idset whole = {0};
	uint64_t unmarked = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		/* Under the lock, so the check and the unmark see one state. */
		pthread_mutex_lock(&st->db_mu);
		seg_loc loc;
		tree_node nd = {0};
		bool ok = v[i].level > 0 && chunk_find(st, v[i].id, &loc, true) == 1 &&
			  !seg_read(st->segs, &loc, v[i].id, &b) && !tree_node_decode(b.p, b.len, &nd);
		for (unsigned k = 0; ok && k < nd.count; k++) {
			tree_entry e;
			tree_node_entry(&nd, k, &e);
			if (nd.level == 1)
				ok = chunk_find(st, e.id, &loc, true) == 1;
			else
				ok = idset_has(&g->live, e.id) || idset_has(&whole, e.id);
		}
		if (ok)
			idset_add(&whole, v[i].id);
		else if (!(rc = gc_unmark(st, v[i].id)))
			unmarked++;
		pthread_mutex_unlock(&st->db_mu);
	}
	if (unmarked)
		log_info("garbage collection: %llu tree node marks cleared (their subtrees lost chunks)",
			 (unsigned long long)unmarked);
	idset_free(&whole);
	buf_free(&b);
	free(v);
	return rc;
}

/* Keep every other store function off the flush path: a flush snapshots
 * pending rows and indexes them later, so while GC re-points rows none may
 * be in flight with a stale location. */
static void flush_exclude(store *st, bool on)
{
	pthread_mutex_lock(&st->mu);
	if (on) {
		while (st->flushing)
			pthread_cond_wait(&st->flush_cv, &st->mu);
		st->flushing = true;
	} else {
		st->flushing = false;
		pthread_cond_broadcast(&st->flush_cv);
	}
	pthread_mutex_unlock(&st->mu);
}

typedef struct gc_row {
	uint8_t id[HASH_LEN];
	seg_loc from, to;
} gc_row;

/* The index rows in segment num (sealed, so no new record lands there). */
static int gc_seg_rows(store *st, uint32_t num, gc_row **out, size_t *n)
{
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_CHUNK_SEG];
	sqlite3_bind_int64(s, 1, num);
	int src, rc = 0;
	while ((src = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t off = sqlite3_column_int64(s, 1), len = sqlite3_column_int64(s, 2);
		if (sqlite3_column_bytes(s, 0) != HASH_LEN || off < SEG_FILE_HDR || len < 0 || len > SEG_CHUNK_MAX) {
			rc = ss_fail(SS_ECORRUPT, "corrupt index entry for segment %08u in %s", num, st->dbpath);
			break;
		}
		if (*n == cap) {
			cap = cap ? 2 * cap : 256;
			*out = xrealloc(*out, cap * sizeof **out);
		}
		gc_row *r = &(*out)[(*n)++];
		memcpy(r->id, sqlite3_column_blob(s, 0), HASH_LEN);
		r->from = (seg_loc){.seg = num, .off = (uint64_t)off, .len = (uint32_t)len};
	}
	if (!rc && src != SQLITE_DONE)
		rc = db_fail(st, src, "cannot read the chunk index");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

/*
 * Copy the rows' records to the active segment and make the copies durable.
 * 1 (and a warning) if a record cannot be read: the segment stays as it is.
 */
static int gc_copy(store *st, uint32_t num, gc_row *rows, size_t n)
{
	buf b;
	buf_init(&b, SEG_CHUNK_MAX);
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		if ((rc = seg_read(st->segs, &rows[i].from, rows[i].id, &b))) {
			log_warn("garbage collection: segment %08u kept: %s", num, ss_errmsg(rc));
			rc = 1;
			break;
		}
		rc = seg_append(st->segs, rows[i].id, b.p, (uint32_t)b.len, &rows[i].to);
	}
	buf_free(&b);
	if (rc)
		return rc;
	/* The flush path's fsync: every copy (and the directory, if the copies
	 * started a new segment) is durable before any row points at it. */
	if ((rc = seg_sync(st->segs)))
		return rc;
	for (size_t i = 0; i < n; i++)
		if (seg_lost(st->segs, rows[i].to.seg))
			return ss_fail(SS_EIO, "garbage collection: segment %08u could not be synced", rows[i].to.seg);
	return 0;
}

/*
 * Re-point the moved rows in one transaction and report whether anything
 * (an index row or a pending row) still points into segment num.  Pending
 * rows with the old location (a node marked over a moved record) follow.
 */
static int gc_repoint(store *st, uint32_t num, const gc_row *rows, size_t n, bool *empty)
{
	flush_exclude(st, true);
	pthread_mutex_lock(&st->db_mu);
	int rc = n ? db_begin(st) : 0;
	for (size_t i = 0; i < n && !rc; i++) {
		sqlite3_stmt *s = st->q[Q_CHUNK_MOVE];
		sqlite3_bind_blob(s, 1, rows[i].id, HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, rows[i].from.seg);
		sqlite3_bind_int64(s, 3, (int64_t)rows[i].from.off);
		sqlite3_bind_int64(s, 4, rows[i].to.seg);
		sqlite3_bind_int64(s, 5, (int64_t)rows[i].to.off);
		rc = db_step_done(st, s, "cannot move chunks");
	}
	if (!rc && n)
		rc = db_commit(st, "cannot move chunks");
	if (rc)
		db_rollback(st);
	int64_t left = 0;
	if (!rc) {
		sqlite3_stmt *s = st->q[Q_SEG_LIVE];
		sqlite3_bind_int64(s, 1, num);
		int src = sqlite3_step(s);
		if (src == SQLITE_ROW)
			left = sqlite3_column_int64(s, 0);
		else
			rc = db_fail(st, src, "cannot read the chunk index");
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
	}
	if (!rc) {
		pthread_mutex_lock(&st->mu);
		for (size_t i = 0; i < n; i++) {
			pend_ent *e = pend_find(&st->pend, rows[i].id);
			if (e && loc_equal(&e->loc, &rows[i].from))
				e->loc = rows[i].to;
		}
		for (size_t i = 0; i < st->pend.cap; i++)
			if (st->pend.v[i].seq && st->pend.v[i].loc.seg == num)
				left++;
		pthread_mutex_unlock(&st->mu);
	}
	pthread_mutex_unlock(&st->db_mu);
	flush_exclude(st, false);
	*empty = left == 0;
	return rc;
}

/* Compact (or delete) each sealed segment, other than the newest, whose
 * indexed records fill less than half of it. */
/* The active segment is never compacted: if it is mostly garbage (files
 * deleted soon after they were written, the common case on a small store),
 * seal it now so this GC can.  Only past GC_ROLL_MIN, so an idle store
 * does not get a new file every round. */
#define GC_ROLL_MIN (1u << 20)
static int gc_roll_active(store *st)
{
	uint32_t num;
	uint64_t off;
	seg_position(st->segs, &num, &off);
	if (off < GC_ROLL_MIN)
		return 0;
	gc_row *rows;
	size_t n;
	int rc = gc_seg_rows(st, num, &rows, &n);
	if (rc)
		return rc;
	uint64_t live = 0;
	for (size_t k = 0; k < n; k++)
		live += SEG_REC_HDR + rows[k].from.len;
	free(rows);
	return live * 2 < off ? seg_roll(st->segs) : 0;
}

static int gc_compact(gc_state *g)
{
	store *st = g->st;
	int rc0 = gc_roll_active(st);
	if (rc0)
		return rc0;
	unsigned nseg = seg_count(st->segs);
	if (nseg < 2)
		return 0;
	uint32_t *nums = xmalloc(nseg * sizeof *nums);
	for (unsigned i = 0; i < nseg; i++)
		nums[i] = seg_num_at(st->segs, i);
	int rc = 0;
	for (unsigned i = 0; i + 1 < nseg && !rc; i++) {
		uint32_t num = nums[i];
		uint64_t size;
		bool sealed, damaged;
		if (seg_info(st->segs, num, &size, &sealed, &damaged) || !sealed || damaged)
			continue;
		gc_row *rows;
		size_t n;
		if ((rc = gc_seg_rows(st, num, &rows, &n)))
			break;
		uint64_t live = 0;
		for (size_t k = 0; k < n; k++)
			live += SEG_REC_HDR + rows[k].from.len;
		if (n && live * 2 >= size) {
			free(rows);
			continue;
		}
		bool empty = false;
		if (n && (rc = gc_copy(st, num, rows, n))) {
			free(rows);
			if (rc == 1) /* unreadable record: keep the segment */
				rc = 0;
			continue;
		}
		if (gc_stop(GC_STOP_AFTER_COPY)) {
			free(rows);
			rc = 1;
			break;
		}
		rc = gc_repoint(st, num, rows, n, &empty);
		free(rows);
		if (rc)
			break;
		if (gc_stop(GC_STOP_AFTER_REPOINT)) {
			rc = 1;
			break;
		}
		if (!empty) {
			/* Something new points into it (a race with a forget or
			 * a node mark): leave it to the next GC. */
			log_info("garbage collection: segment %08u still in use; kept", num);
			continue;
		}
		/* Only now, with no row pointing into it, does the file go; the
		 * row in segments goes after the unlink is durable. */
		if ((rc = seg_remove(st->segs, num)))
			break;
		if (n)
			g->stats->segments_compacted++;
		g->stats->segments_deleted++;
		if (gc_stop(GC_STOP_AFTER_UNLINK)) {
			rc = 1;
			break;
		}
		pthread_mutex_lock(&st->db_mu);
		sqlite3_bind_int64(st->q[Q_SEG_DEL], 1, num);
		rc = db_step_done(st, st->q[Q_SEG_DEL], "cannot drop a segment's index entry");
		pthread_mutex_unlock(&st->db_mu);
	}
	free(nums);
	return rc;
}

/* Drop the segments rows of segment files that are gone (a crash between a
 * segment's unlink and its row's deletion).  Numbers below the newest
 * segment are never handed out again. */
static int gc_prune_segment_rows(store *st)
{
	unsigned nseg = seg_count(st->segs);
	if (!nseg)
		return 0;
	uint32_t newest = seg_num_at(st->segs, nseg - 1);
	uint32_t *gone = NULL;
	size_t n = 0, cap = 0;
	pthread_mutex_lock(&st->db_mu);
	sqlite3_stmt *s = st->q[Q_SEG_ALL];
	int src, rc = 0;
	while ((src = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t num = sqlite3_column_int64(s, 0);
		uint64_t size;
		bool sealed, damaged;
		if (num <= 0 || num >= newest || !seg_info(st->segs, (uint32_t)num, &size, &sealed, &damaged))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			gone = xrealloc(gone, cap * sizeof *gone);
		}
		gone[n++] = (uint32_t)num;
	}
	if (src != SQLITE_DONE)
		rc = db_fail(st, src, "cannot read the segment index");
	sqlite3_reset(s);
	for (size_t i = 0; i < n && !rc; i++) {
		sqlite3_bind_int64(st->q[Q_SEG_DEL], 1, gone[i]);
		rc = db_step_done(st, st->q[Q_SEG_DEL], "cannot drop a segment's index entry");
	}
	pthread_mutex_unlock(&st->db_mu);
	free(gone);
	return rc;
}

/* Chunks wanted again that no kept version or parked record reaches any
 * more need no repair: their rows go. */
static int want_prune(store *st, const idset *live)
{
	pthread_mutex_lock(&st->db_mu);
	int rc = 0;
	for (unsigned i = 0; i < st->nwant && !rc;) {
		if (idset_has(live, st->want[i]))
			i++;
		else if (!(rc = want_row(st, st->want[i], false)))
			want_del_mem(st, i);
	}
	pthread_mutex_unlock(&st->db_mu);
	return rc;
}

int store_gc(store *st, store_gc_stats *out)
{
	store_gc_stats stats = {0};
	if (out)
		*out = stats;
	if (pthread_mutex_trylock(&st->gc_mu))
		return ss_fail(SS_EBUSY, "garbage collection of %s is already running", st->dir);
	gc_state g = {.st = st, .stats = &stats};
	/* GC's own lease pins everything appended from now on: chunks of
	 * uploads that begin during the mark are never candidates. */
	uint64_t lease = store_lease_begin(st);
	pthread_mutex_lock(&st->mu);
	for (unsigned i = 0; i < st->nleases; i++)
		if (st->leases[i].id == lease) {
			g.gseg = st->leases[i].seg;
			g.goff = st->leases[i].off;
		}
	pthread_mutex_unlock(&st->mu);
	int rc = store_flush(st);
	stats.bytes_before = seg_total(st->segs);
	if (!rc)
		rc = gc_prune_segment_rows(st);
	if (!rc)
		rc = gc_mark_versions(&g, false);
	if (!rc)
		rc = gc_mark_pending(&g, false);
	if (!rc)
		rc = want_prune(st, &g.live);
	if (!rc)
		rc = gc_sweep(&g);
	if (!rc)
		rc = gc_check_marks(&g);
	if (!rc && gc_stop(GC_STOP_AFTER_SWEEP))
		rc = 1;
	if (!rc)
		rc = gc_compact(&g);
	if (!rc)
		rc = gc_prune_segment_rows(st);
	if (rc == 1) /* stopped by the test hook */
		rc = 0;
	stats.bytes_after = seg_total(st->segs);
	store_lease_end(st, lease);
	idset_free(&g.live);
	idset_free(&g.walked);
	pthread_mutex_unlock(&st->gc_mu);
	if (!rc && (stats.chunks_dropped || stats.segments_deleted))
		log_info("garbage collection of %s: %llu chunks (%llu bytes) dropped, %llu segments compacted, "
			 "%llu deleted; segments %llu -> %llu bytes",
			 st->dir, (unsigned long long)stats.chunks_dropped, (unsigned long long)stats.bytes_dropped,
			 (unsigned long long)stats.segments_compacted, (unsigned long long)stats.segments_deleted,
			 (unsigned long long)stats.bytes_before, (unsigned long long)stats.bytes_after);
	if (out)
		*out = stats;
	return rc;
}
