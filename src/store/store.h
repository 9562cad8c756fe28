/*
 * store — the chunk store (segment files) and the metadata (SQLite, WAL).
 *
 * Data directory layout (format version STORE_FORMAT):
 *
 *   path                 what
 *   -------------------  -------------------------------------------------
 *   FORMAT               "syncstore-store <version>\n"; refuse newer versions
 *   LOCK                 flock()ed while a server uses the directory
 *   meta.db (+-wal,-shm) SQLite: chunk index, namespace, versions, settings,
 *                        cursors over the peers' change logs, pending records
 *   seg/NNNNNNNN.seg     append-only segment files of chunk records
 *
 * Segment record (see segment.c for the full table): header with magic,
 * length and the chunk id, then the raw bytes.  A record is whole when its
 * length fits in the file and SHA-256(bytes) equals its id; recovery cuts the
 * file after the last whole record.
 *
 * Durability (group commit): store_put_chunk appends to the active segment
 * and remembers the index row in memory; store_flush fsyncs the segment and
 * then commits all remembered rows in one SQLite transaction.  Concurrent
 * callers of store_flush share one fsync.  Nothing is reported present by
 * store_has before its bytes are in a segment; nothing is acknowledged to a
 * client before store_flush (or store_commit, which flushes) returns.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef SS_STORE_H
#define SS_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "../chunk/chunk.h"
#include "../util/util.h"

#define STORE_FORMAT 2 /* 2: the pending table (a format-1 directory is upgraded) */
#define STORE_SEGMENT_MAX (64u << 20) /* roll to a new segment past this */

typedef struct store store;

/*
 * Open (creating if empty) a data directory.  Refuses with a clear message:
 * a directory it cannot write, one locked by another process, a newer format.
 * Recovers torn segment tails.
 */
int store_open(const char *dir, store **out);
void store_close(store *st);
const char *store_dir(const store *st);

/* ---- chunks (data chunks and tree nodes alike) ---- */

/* 1 present, 0 absent, <0 error. */
int store_has(store *st, const uint8_t id[HASH_LEN]);
/* Append bytes whose SHA-256 the caller has verified equals id. Idempotent. */
int store_put_chunk(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len);
/* The same for a chunk the caller found absent moments ago (an upload asked
 * for it): skips the index lookup, the hot path's second SQLite miss.  If
 * another upload stored it meanwhile, this copy is garbage, never wrong. */
int store_put_absent_chunk(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len);
/*
 * Tree nodes are chunks too, but "have" for a node must mean its whole
 * subtree is present.  store_put_node stores a node (like store_put_chunk)
 * and marks it complete; the caller has checked its children.  Bytes that
 * merely arrived as a chunk never count as a complete node, and a node whose
 * subtree lost a chunk (found corrupt, or missing at commit) is unmarked.
 */
int store_put_node(store *st, const uint8_t id[HASH_LEN], const void *data, size_t len);
/* 1 complete node, 0 not, <0 error. */
int store_has_node(store *st, const uint8_t id[HASH_LEN]);
int store_unmark_node(store *st, const uint8_t id[HASH_LEN]);
/* Read a chunk into out (reset first) and verify its SHA-256; SS_ECORRUPT
 * with a message naming the chunk if it does not verify, SS_ENOENT if absent. */
int store_get_chunk(store *st, const uint8_t id[HASH_LEN], buf *out);
/* Content held in memory, stored whole: its chunks (cut as a streamed
 * upload cuts them) and its complete tree; *root is the root node's id, to
 * commit. */
int store_put_small(store *st, const void *data, size_t len, uint8_t root[HASH_LEN]);
/* Read back content of at most one chunk (out reset; SS_EINVAL if more). */
int store_get_small(store *st, const uint8_t root[HASH_LEN], buf *out);
/* Drop a chunk (or tree node) from the index: for a copy found corrupt, so
 * that it reads as absent and the next upload (or repair) stores it again.
 * Its bytes stay in the segment as garbage. */
int store_forget(store *st, const uint8_t id[HASH_LEN]);
/* Make every chunk put so far durable (group commit). */
int store_flush(store *st);

/*
 * ---- leases: chunks of uploads and fetches in flight are pinned against GC ----
 *
 * A lease remembers the append point (segment, offset) at its beginning; the
 * watermark is the oldest such point over live leases.  store_gc never drops
 * a chunk whose record lies at or after the watermark, so whatever a lease
 * holder stores from its beginning on survives until the lease ends.  A chunk
 * it merely found present (stored before) is not pinned: if GC drops it, the
 * holder's commit fails its whole-tree check (SS_ENOENT naming the chunk),
 * nothing acknowledged is lost, and the retry sends the chunk again.
 */
uint64_t store_lease_begin(store *st);
void store_lease_end(store *st, uint64_t lease);
/* Number of live leases (for status). */
unsigned store_lease_count(store *st);

/* ---- namespace ---- */

#define VV_MAX 16
typedef struct vv_entry {
	uint64_t node; /* short node id: first 8 bytes of the node id, BE */
	uint64_t counter;
} vv_entry;
typedef struct vvec {
	unsigned n;
	vv_entry e[VV_MAX];
} vvec;

typedef struct record {
	char path[SS_PATH_MAX + 1];
	uint64_t seq;      /* local sequence number (assigned by commit) */
	uint64_t size;
	uint32_t mode;
	int64_t mtime_ns;
	uint8_t root[HASH_LEN]; /* manifest root (content id); zero when deleted */
	bool deleted;
	vvec vv;
	uint64_t origin;   /* short id of the node that took the write */
	int64_t otime_ns;  /* when the origin took it */
} record;

/* Node identity of this store (short id), set by the server at start. */
void store_set_node(store *st, uint64_t short_id);

/*
 * Commit a new version of rec->path: flushes chunks, checks in the same
 * transaction that rec->root's whole tree is present (unless deleted), bumps
 * the path's version vector for this node, assigns rec->seq, and makes the
 * record durable before returning.  SS_ENOENT if a chunk is missing.
 */
int store_commit(store *st, record *rec);
/* The same for n records in one transaction (one fsync of the chunks, one
 * of the database): all are committed, in order, or none — the error then
 * names the record that failed. */
int store_commit_batch(store *st, record *recs, unsigned n);
/* Rename: one transaction writing the new path and a tombstone for the old. */
/* out_new->seq is the new path's version; the old path's tombstone is
 * written right after it, at out_new->seq + 1. */
int store_rename(store *st, const char *from, const char *to, record *out_new);
/* Current (live or deleted) record of a path: 0, SS_ENOENT. */
int store_lookup(store *st, const char *path, record *out);
/* Version with local sequence seq of path. */
int store_lookup_version(store *st, const char *path, uint64_t seq, record *out);

/* Iterate current live records whose path starts with prefix (sorted).
 * fn returning non-zero stops the walk and is returned. */
typedef int (*store_rec_fn)(void *ctx, const record *r);
int store_list(store *st, const char *prefix, store_rec_fn fn, void *ctx);
/* Kept versions of one path, newest first. */
int store_history(store *st, const char *path, store_rec_fn fn, void *ctx);

/* ---- replication support ---- */

/* Small durable settings (the settings table; keys are not "index_id"):
 * get copies the value into out (NUL-terminated; SS_ENOENT if absent),
 * set replaces it (value NULL deletes), list calls fn for every key that
 * starts with prefix.  For the server's membership facts. */
int store_setting_get(store *st, const char *key, char *out, size_t outsz);
int store_setting_set(store *st, const char *key, const char *value);
typedef int (*store_setting_fn)(void *ctx, const char *key, const char *value);
int store_setting_list(store *st, const char *prefix, store_setting_fn fn, void *ctx);

/* A random id naming this store's sequence space (new for a new directory). */
uint64_t store_index_id(const store *st);
/*
 * This store's log went back: a peer holds records of ours that our log no
 * longer has where it had them (the data directory was restored from an
 * older copy; repl_cursor_valid), up to seq `lost`.  Unless the index id is
 * no longer old_index_id (someone saw it first), start a new sequence space
 * — a new index id, so every peer's cursor restarts from 0 and nothing
 * written since hides below a cursor that already passed its seq — and move
 * the version clock on by `lost` plus a wide margin (lost is one peer's
 * view of the lost part of the log, whose counters it bounds: each local
 * write takes a seq), so no counter a peer already saw is issued again.
 * One transaction.
 */
int store_log_regressed(store *st, uint64_t old_index_id, uint64_t lost);
/* Versions with local sequence > after, in sequence order, at most limit:
 * what a peer whose cursor is `after` has not seen yet. */
int store_since(store *st, uint64_t after, unsigned limit, store_rec_fn fn, void *ctx);
/*
 * Apply received records as they are — version vector, origin and times
 * kept, nothing bumped — in one transaction: each becomes a new local
 * version (its seq is set) and the current record of its path.  The caller
 * has already decided, with core/resolve, that each should win (a conflict
 * is two records: the winner at its path and the loser at its conflict
 * path).  Refused unless each live record's whole tree is present.
 */
int store_apply(store *st, record *recs, unsigned n);

/* A record's fingerprint: 64 bits of SHA-256 over path, deleted flag, root
 * and version vector (what identifies a version across servers). */
uint64_t store_rec_fp(const record *r);
/* The fingerprint of the record a peer's cursor stopped at (0: none): a
 * PULL carries it, and the peer checks its log still has that record
 * there. */
int store_cursor_fp(store *st, uint64_t peer, uint64_t *fp);
/* The version with local sequence seq (any path): 0, or SS_ENOENT if no
 * version has it (never written, or expired). */
int store_version_at(store *st, uint64_t seq, record *out);

/* The cursor over a peer's sequence space: the peer's index id and the
 * highest of its sequence numbers received here (applied or parked).  Both
 * 0 if never pulled. */
int store_cursor_get(store *st, uint64_t peer, uint64_t *index_id, uint64_t *seq);
/* Set it alone (a peer announced a new index id: start again from 0). */
int store_cursor_set(store *st, uint64_t peer, uint64_t index_id, uint64_t seq);

/* Decides what a received record changes, given the current local record of
 * its path (NULL if the path never existed here).  Fills out[0..*n) (*n ≤ 2)
 * with the records to write as they are (vector, origin, times kept): none
 * (the local one stands), the remote one, the local content with a merged
 * vector, or a winner plus a conflict copy at another path.  Non-zero aborts
 * the whole apply and is returned.  Called with the store's database lock held
 * inside the transaction: it must not call back into the store. */
typedef int (*store_decide_fn)(void *ctx, const record *local, const record *remote, record out[2], unsigned *n);

/* What an apply did: versions written, records parked as pending. */
typedef struct store_applied {
	unsigned written, parked;
} store_applied;

/*
 * Apply n records received from peer (short id), in order, in ONE
 * transaction together with setting that peer's cursor to (index_id,
 * peer_seq): all or nothing, so a crash never skips or repeats a record.
 * For each remote record, decide() sees the path's current record as of the
 * records applied before it in this same call.  Each record decide returns is
 * written like store_apply writes (a new local version that becomes current
 * of its path; a live record's whole tree must be present and hold exactly
 * its size, else SS_EINVAL naming the path) — except that a record identical
 * to the current one of its path (same deleted flag, root and version
 * vector) is not written again.
 *
 * A received record whose writing needs a tree that is not complete here is
 * not refused: it is PARKED — stored in the pending table, in the same
 * transaction, with (peer, index_id, its seq in the peer's log) — and
 * nothing of it is written (a savepoint undoes a conflict copy written
 * before the check failed).  store_apply_pending applies it later, once its
 * tree was fetched from any server.  out (may be NULL) gets the counts.
 */
int store_apply_remote(store *st, const record *remote, unsigned n, uint64_t peer, uint64_t index_id,
		       uint64_t peer_seq, store_decide_fn decide, void *ctx, store_applied *out);

/* ---- pending records: received, waiting for their trees ---- */

/* A parked record as received; rec.seq is the pending row's id (not a
 * local sequence).  peer, index_id, peer_seq: the log it came from. */
typedef struct store_pending {
	record rec;
	uint64_t peer, index_id, peer_seq;
} store_pending;

/* Up to max parked records with row id > after, oldest first; *n gets the
 * count. */
int store_pending_list(store *st, uint64_t after, store_pending *out, unsigned max, unsigned *n);
/* Parked records in all; the highest row id (0: none). */
int store_pending_count(store *st, uint64_t *n);
int store_pending_max(store *st, uint64_t *id);
/* Drop every record parked from peer's log (the member was forgotten: its
 * log will never be pulled again). */
int store_pending_drop_peer(store *st, uint64_t peer);
/*
 * Apply parked records p[0..n) like store_apply_remote does (decide, the
 * same writes, one transaction, no cursor): each one written — or found to
 * change nothing (KEEP, replay) — leaves the pending table; one whose tree is
 * still incomplete stays parked (counted in out->parked).  Rows another call
 * already took are skipped.
 */
int store_apply_pending(store *st, const store_pending *p, unsigned n, store_decide_fn decide, void *ctx,
			store_applied *out);
/*
 * This store's durable acknowledgement of a peer's log: the highest seq s
 * such that every record of the peer's log (over index_id) up to s is
 * applied here, not merely received — the cursor, or one below the oldest
 * record from that log still parked.  0 if the cursor is over another
 * index id.  What a PULL reports as `acked`, and what the write quorum and
 * tombstone expiry count.
 */
int store_cursor_acked(store *st, uint64_t peer, uint64_t index_id, uint64_t *acked);

typedef struct store_stats {
	uint64_t head_seq;
	uint64_t files;      /* live paths */
	uint64_t bytes;      /* sum of live sizes */
	uint64_t chunks;     /* chunk records indexed */
	uint64_t chunk_bytes;
	uint8_t digest[HASH_LEN]; /* SHA-256 over the sorted current namespace */
} store_stats;
int store_stats_get(store *st, store_stats *out);

/* ---- history, tombstones, garbage ---- */

/* Drop non-current versions superseded more than retention_ns before now_ns:
 * a version is superseded at the otime_ns of the next version of its path
 * (next by local seq).  Current records are never dropped here, nor
 * versions with local seq ≥ keep_from (writes still waiting for their
 * write quorum: a peer whose cursor passed a dropped version would count as
 * holding it; UINT64_MAX keeps none back).  *dropped (may be NULL) gets the
 * count. */
int store_expire_history(store *st, int64_t now_ns, int64_t retention_ns, uint64_t keep_from,
			 uint64_t *dropped);

/* Current tombstones (deleted records) for which expirable(ctx, rec) says
 * yes are removed for good, together with every older version of their path,
 * so the path no longer exists in the namespace, the history or the change
 * log.  expirable runs under the database lock (it must not call the store);
 * rec->seq is the tombstone's local seq.  *dropped gets the tombstones removed. */
typedef bool (*store_expirable_fn)(void *ctx, const record *tombstone);
int store_expire_tombstones(store *st, store_expirable_fn expirable, void *ctx, uint64_t *dropped);

/* Count of current tombstones (for status); *oldest_seq is the lowest local
 * seq among them, 0 when there are none.  Either pointer may be NULL. */
int store_tombstones(store *st, uint64_t *count, uint64_t *oldest_seq);

/*
 * Scrub: re-read and re-hash stored chunks (tree nodes included) in id
 * order after *cursor (all zero: from the start), until about `budget` bytes
 * were read or the index ends (*done; *cursor is zeroed again).  A chunk
 * whose record does not verify, or cannot be read, is forgotten
 * (store_forget: never served again; stored again by whoever sends it next)
 * and its id appended to bad (up to maxbad; *nbad counts them).
 */
typedef struct store_scrub_result {
	uint64_t chunks, bytes; /* checked */
	unsigned nbad;
	bool done;
} store_scrub_result;
int store_scrub(store *st, uint8_t cursor[HASH_LEN], uint64_t budget, uint8_t *bad, unsigned maxbad,
		store_scrub_result *out);
/*
 * Chunks found corrupt here and forgotten (by scrub, or by a read that
 * failed to verify: store_forget) are wanted from a peer again until they
 * are indexed here again, however they come (a repair, a client's upload,
 * replication), or until garbage collection finds nothing that reaches
 * them.  The list survives restarts (settings rows "want:<hex>").  Up to
 * max of them into ids; *n gets how many.
 */
int store_wanted(store *st, uint8_t *ids, unsigned max, unsigned *n);

typedef struct store_gc_stats {
	uint64_t chunks_dropped, bytes_dropped;   /* index entries removed */
	uint64_t chunks_leased;                   /* unreachable, but kept for a live lease */
	uint64_t segments_compacted;              /* live records moved, then the file deleted */
	uint64_t segments_deleted;                /* files deleted (compacted ones included) */
	uint64_t bytes_before, bytes_after;       /* segment files on disk */
} store_gc_stats;

/*
 * Garbage collection, online (other threads keep putting, committing and
 * reading meanwhile):
 *  1. mark: every chunk and tree node reachable from any version still in
 *     the versions table (walk each distinct root's tree once);
 *  2. sweep: drop from the index every chunk/node row NOT marked whose
 *     segment position is older than the lease watermark, and clear the
 *     completeness marks that may no longer hold;
 *  3. compact: for each sealed (not active) segment whose live bytes are
 *     below half its size, copy its still-indexed records to the active
 *     segment (append, fsync, re-point the index rows in one transaction),
 *     then delete the old file (and its row in the segments table) only after
 *     that transaction committed; a segment with no live record left is
 *     simply deleted.
 * A crash at any point leaves a store that opens, loses no chunk a kept
 * version references, and whose orphan files and records a later GC
 * collects (docs/STORAGE.md has the argument).  One GC at a time: SS_EBUSY
 * while another runs.  A kept version whose tree node is missing or
 * unreadable stops the GC before anything is dropped (the message names it).
 * *out (may be NULL) gets the counts, also after a failure.
 */
int store_gc(store *st, store_gc_stats *out);

/* For the simulator: fn runs inside store_flush after the segments' fsync
 * and before their index rows commit; non-zero makes that flush fail as if
 * the process had stopped right there (the rows stay pending, so a power
 * cut next loses them).  NULL removes it. */
typedef int (*store_flush_hook)(void *ctx);
void store_set_flush_hook(store *st, store_flush_hook fn, void *ctx);

/* For the simulator: stop as a power cut would — nothing more is flushed,
 * and every segment loses what was written after its last fsync except
 * keep_permille/1000 of it (a torn tail).  Committed SQLite transactions
 * (WAL, synchronous=FULL) survive; rows still pending in memory do not.
 * st is freed. */
void store_power_cut(store *st, unsigned keep_permille);

/* For tests: roll segments past this many bytes instead of STORE_SEGMENT_MAX. */
void store_set_segment_max(store *st, uint64_t bytes);

#endif
