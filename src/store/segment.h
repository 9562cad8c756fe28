/*
 * segment — append-only segment files of chunk records (private to store/).
 *
 * The on-disk format is described at the top of segment.c.  A seg_set owns
 * the directory seg/ of one data directory: it appends records to the active
 * segment (rolling to a new file past STORE_SEGMENT_MAX), fsyncs what was
 * appended (group commit is the caller's: seg_sync makes everything appended
 * so far durable), reads records back verifying their SHA-256, and at open
 * recovers torn tails.  store_gc deletes sealed segments it has emptied
 * (seg_remove), never the newest, so segment numbers are never reused.
 *
 * Thread safety: every function may be called from any thread.  Appends are
 * serialized inside; reads and fsyncs run concurrently with appends.
 */
#ifndef SS_STORE_SEGMENT_H
#define SS_STORE_SEGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "../chunk/chunk.h"
#include "../util/util.h"

#define SEG_FILE_MAGIC "SSSG"
#define SEG_REC_MAGIC "SSCK"
#define SEG_VERSION 1
#define SEG_FILE_HDR 16   /* segment file header */
#define SEG_REC_HDR 48    /* record header before the chunk bytes */
#define SEG_CHUNK_MAX (1u << 20) /* largest chunk a record may hold */
#define SEG_OPEN_MAX 64   /* file descriptors kept open for reads */

/* Where a chunk's record is: segment number, offset of the record header. */
typedef struct seg_loc {
	uint32_t seg;
	uint32_t len; /* chunk bytes, without the header */
	uint64_t off;
} seg_loc;

/* End of a record in its segment file. */
static inline uint64_t seg_loc_end(const seg_loc *l) { return l->off + SEG_REC_HDR + l->len; }

typedef struct seg_set seg_set;

/* Open the segment directory (which must exist) and list its segments.  No
 * recovery yet: the store drives it with seg_recover, which must run for
 * every segment before the first append (it sets each append point). */
int seg_open(const char *dir, seg_set **out);
void seg_close(seg_set *ss);

/* Segments present, in increasing number (for recovery at open). */
unsigned seg_count(seg_set *ss);
uint32_t seg_num_at(seg_set *ss, unsigned i);

/*
 * Recover one segment: scan the records after indexed_end (0 = from the
 * start), call fn for each whole record whose SHA-256 matches its id, and
 * cut the file after the last one (ftruncate + fsync).  The file is fsynced
 * before the first fn call, so every record reported is durable.  fn
 * returning non-zero stops the scan and is returned (nothing is truncated).
 */
typedef int (*seg_found_fn)(void *ctx, const seg_loc *loc, const uint8_t id[HASH_LEN]);
/* fn returns SEG_CUT to cut the file at the start of this record instead:
 * for records that were never acknowledged and cannot be indexed now. */
#define SEG_CUT 1
int seg_recover(seg_set *ss, uint32_t num, uint64_t indexed_end, seg_found_fn fn, void *ctx);

/* Append one record to the active segment.  On failure (a full disk) the
 * partial record is cut off again and the set stays usable. */
int seg_append(seg_set *ss, const uint8_t id[HASH_LEN], const void *data, uint32_t len, seg_loc *loc);

/*
 * Make every record appended before the call durable: fsync each segment
 * written since the last sync, and the directory if a segment was created.
 * A segment whose fsync fails is marked lost (see seg_lost) and sealed: the
 * kernel may have dropped its dirty pages, so the records appended to it
 * since its last successful sync must be treated as never written.
 */
int seg_sync(seg_set *ss);
/* For the simulator: what a power cut leaves — every segment loses what
 * was written after its last fsync, but keep_permille/1000 of it (a torn
 * tail: records whole, then half of one, the rest gone). */
void seg_power_cut(seg_set *ss, unsigned keep_permille);
bool seg_lost(seg_set *ss, uint32_t num);

/* Read the record at loc into out (reset first) and verify it holds the
 * chunk id: SS_ECORRUPT naming the chunk and its place otherwise, and out is
 * left empty. */
int seg_read(seg_set *ss, const seg_loc *loc, const uint8_t id[HASH_LEN], buf *out);

/* "3fa1c0de…": the short form of a chunk id used in messages. */
#define SEG_ID_ABBREV 12
void seg_id_abbrev(const uint8_t id[HASH_LEN], char out[SEG_ID_ABBREV]);

/* ---- for garbage collection (store_gc) and leases ---- */

/* The append point: every record appended after the call lands at or after
 * (*num, *off) in (segment, offset) order. */
void seg_position(seg_set *ss, uint32_t *num, uint64_t *off);
/* Seal the active segment now and start a new one (for GC: the active
 * segment cannot be compacted, and may hold most of the garbage). */
int seg_roll(seg_set *ss);
/* Roll to a new segment past max bytes instead of STORE_SEGMENT_MAX. */
void seg_set_max(seg_set *ss, uint64_t max);
/* Size (the append point: end of the last whole record) and state of
 * segment num; SS_ENOENT if there is no such segment.  damaged: recovery
 * kept it read-only (a damaged or foreign header, or an index reaching past
 * its end), so it may hold records nothing indexes: never collect it. */
int seg_info(seg_set *ss, uint32_t num, uint64_t *size, bool *sealed, bool *damaged);
/* Sum of the sizes of every segment. */
uint64_t seg_total(seg_set *ss);
/*
 * Remove a sealed segment that is not the newest (so its number is never
 * handed out again): new reads of it fail as for a missing segment at once,
 * reads in progress finish first, then the file is unlinked and the
 * directory fsynced.  The caller has made sure nothing indexed points into
 * it any more.
 */
int seg_remove(seg_set *ss, uint32_t num);

#endif
