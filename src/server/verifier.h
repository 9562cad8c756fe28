/*
 * verifier — a put's second thread: it decompresses, hashes and stores the
 * CHUNK payloads while the session thread goes on decrypting the next ones,
 * so one upload keeps both cores busy (TLS on one, SHA-256 and the page
 * cache copy on the other).
 *
 * Memory: VERIFIER_SLOTS frame buffers (a CHUNK frame is ≤ ~132 KiB; the
 * buffers circulate with msgio's, so no chunk is copied) and a zstd context.  submit() blocks while every slot is full; drain() waits
 * until everything submitted is stored and returns the first failure, with
 * its message set on the calling thread.
 */
#ifndef SS_VERIFIER_H
#define SS_VERIFIER_H

#include "../proto/wire.h"
#include "../store/store.h"

#define VERIFIER_SLOTS 8

typedef struct verifier verifier;

/* Called on the verifier's thread with each chunk it stored: the CHUNK
 * payload as received (id, flags, raw_len, bytes — maybe compressed). */
typedef void (*verifier_stored_fn)(void *ctx, const uint8_t *payload, size_t len);
verifier *verifier_start(store *st, verifier_stored_fn stored, void *ctx);
/* Queue one decoded CHUNK: the verifier takes over `frame` (the buffer m
 * points into) and leaves an empty one of its own in its place.  wanted: this upload asked
 * for it moments ago, so the store may skip its index lookup; any other chunk
 * gets the idempotent path.  Returns the first error seen so far, if any,
 * without queueing. */
int verifier_submit(verifier *v, const msg *m, buf *frame, bool wanted);
int verifier_drain(verifier *v);
/* Drain and forget any failure: the verifier serves the session's next put. */
void verifier_reset(verifier *v);
/* Drain, stop the thread and free everything. */
void verifier_stop(verifier *v);

#endif
