/*
 * push — while a client uploads, the taking server sends each chunk it has
 * verified and stored straight on to every peer, so the peers' copies fill
 * during the put instead of after it (DESIGN.md's write path).  The record
 * still travels by PULL (docs/REPLICATION.md); the puller then finds the
 * chunks present and fetches only what a push missed.
 *
 * Best effort by design: a full queue (PUSH_QUEUE_MAX bytes per peer) or a
 * lost connection drops pushes, and the pull fetches those.  The receiving
 * server verifies every pushed chunk against its id before storing it.
 */
#ifndef SS_PUSH_H
#define SS_PUSH_H

#include "server.h"

#define PUSH_QUEUE_MAX (32u << 20) /* bytes queued per peer */
#define PUSH_IDLE_MS 15000         /* a push connection idle this long is closed */

int push_start(server *srv);
void push_stop(server *srv); /* srv->stopping is set */
/* Queue a CHUNK payload (id, flags, raw_len, bytes) for every peer. */
void push_chunk(server *srv, const uint8_t *payload, size_t len);
/* The same for bytes in hand (a tree node). */
void push_raw(server *srv, const uint8_t id[HASH_LEN], const uint8_t *bytes, size_t len);

#endif
