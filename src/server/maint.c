/*
 * maint.c — the server's housekeeping threads.
 *
 * Scrub: a pass over every stored chunk every --scrub-interval (the first
 * one interval after the start), re-reading
 * and re-hashing at most --scrub-rate MB/s (in quarter-second slices, so
 * the disk and a core are never monopolised).  A chunk that does not verify
 * is dropped from the index at once — never served again — and re-fetched
 * from a peer whose copy verifies (peers_repair); ones no peer could supply
 * are tried again after the pass.
 *
 * Housekeeping: history retention, tombstone expiry and garbage collection,
 * every MAINT_INTERVAL (or retention / 2 if shorter, at least a second).
 *
 *   1. versions superseded more than --retention ago leave the history;
 *   2. tombstones older than --retention that every other member has
 *      durably applied (its PULL cursor over our log is past them; see
 *      repl_tombstone_expirable) are removed for good, with their path's
 *      older versions;
 *   3. chunks no kept version reaches are dropped and mostly-empty segments
 *      compacted (store_gc), so disk space comes back — after a round that
 *      expired something, and hourly anyway (failed uploads' chunks).
 *
 * A member that is down blocks step 2 — as it must — and status shows the
 * tombstones waiting for it.
 */
#include "maint.h"
#include "peer.h"
#include "../core/repl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each configured member's cursor over our log, 0 if unknown; the count. */
static unsigned member_acks(server *srv, uint64_t acked[SERVER_MAX_PEERS])
{
	peer_info pi;
	unsigned n = 0;
	for (unsigned i = 0; peers_info(srv, i, &pi) && n < SERVER_MAX_PEERS; i++) {
		bool known = false;
		for (unsigned k = 0; k < HASH_LEN && !known; k++)
			known = pi.id[k] != 0;
		if (known && peers_is_forgotten(srv, pi.id))
			continue; /* forgotten: blocks nothing any more */
		acked[n++] = known ? server_acked(srv, node_short_id(pi.id)) : 0;
	}
	return n;
}

static void maint_round(server *srv, double *last_gc, bool *leased_left)
{
	store *st = srv->st;
	int64_t now = now_wall_ns();
	int64_t retention = srv->opts->retention_ms * 1000000;
	uint64_t versions = 0, tombs = 0;
	int rc = store_expire_history(st, now, retention, server_quorum_floor(srv), &versions);
	if (!rc) {
		uint64_t acked[SERVER_MAX_PEERS];
		repl_expiry e = {.now_ns = now, .retention_ns = retention, .acked = acked};
		e.nmembers = member_acks(srv, acked);
		rc = store_expire_tombstones(st, repl_expirable, &e, &tombs);
	}
	/* GC walks every kept tree: only after something left the history, or
	 * hourly for what failed uploads and fetches left behind — and again
	 * (at most every MAINT_GC_RETRY_S) while garbage is still kept for a
	 * lease (an upload, a fetch or a peer's pushes in progress). */
	store_gc_stats gs = {0};
	bool retry = *leased_left && now_mono() - *last_gc > MAINT_GC_RETRY_S;
	if (!rc && (versions || tombs || retry || now_mono() - *last_gc > MAINT_GC_IDLE_S)) {
		*last_gc = now_mono();
		rc = store_gc(st, &gs);
		*leased_left = !rc && gs.chunks_leased;
	}
	if (rc) {
		log_warn("housekeeping: %s", ss_errmsg(rc));
		return;
	}
	if (versions || tombs || gs.chunks_dropped || gs.segments_deleted) {
		char freed[16];
		fmt_size(gs.bytes_before > gs.bytes_after ? gs.bytes_before - gs.bytes_after : 0, freed);
		log_info("housekeeping: %llu old versions and %llu tombstones expired, %llu chunks dropped, "
			 "%llu segments compacted, %s freed",
			 (unsigned long long)versions, (unsigned long long)tombs,
			 (unsigned long long)gs.chunks_dropped, (unsigned long long)gs.segments_compacted, freed);
	}
}

static void *maint_main(void *arg)
{
	server *srv = arg;
	int64_t every = srv->opts->retention_ms / 2;
	if (every > MAINT_INTERVAL_MS)
		every = MAINT_INTERVAL_MS;
	if (every < 1000)
		every = 1000;
	double last_gc = now_mono(); /* a start is not a reason to walk every tree */
	bool leased_left = false;
	while (!server_stopping(srv)) {
		server_sleep(srv, (int)every);
		if (!server_stopping(srv))
			maint_round(srv, &last_gc, &leased_left);
	}
	return NULL;
}

#define SCRUB_SLICE_MS 250
#define SCRUB_MAX_BAD 1024

static void *scrub_main(void *arg)
{
	server *srv = arg;
	uint8_t cursor[HASH_LEN] = {0};
	uint8_t *bad = xmalloc((size_t)SCRUB_MAX_BAD * HASH_LEN);
	unsigned nbad = 0;
	uint64_t slice = (uint64_t)srv->opts->scrub_rate_mb * 1000000 * SCRUB_SLICE_MS / 1000;
	uint64_t chunks = 0, bytes = 0, found = 0;
	/* The first pass an interval after the start: a restart loop must not
	 * turn into a read of the whole store each time. */
	server_sleep(srv, srv->opts->scrub_interval_ms);
	double pass_start = now_mono();
	while (!server_stopping(srv)) {
		double t0 = now_mono();
		store_scrub_result r;
		int rc = store_scrub(srv->st, cursor, slice, bad, SCRUB_MAX_BAD, &r);
		if (rc) {
			log_warn("scrub: %s", ss_errmsg(rc));
			server_sleep(srv, 10000);
			continue;
		}
		chunks += r.chunks;
		bytes += r.bytes;
		found += r.nbad;
		/* What this slice forgot, and what earlier ones (or reads, or a
		 * run before a restart) could not repair yet: the store keeps
		 * the list (store_wanted). */
		if (!store_wanted(srv->st, bad, SCRUB_MAX_BAD, &nbad) && nbad)
			nbad -= peers_repair(srv, bad, nbad);
		if (!r.done) {
			int spent = (int)((now_mono() - t0) * 1000);
			if (spent < SCRUB_SLICE_MS)
				server_sleep(srv, SCRUB_SLICE_MS - spent);
			continue;
		}
		char sz[16];
		fmt_size(bytes, sz);
		if (found || nbad)
			log_info("scrub: pass done in %.1f s: %llu chunks (%s) checked, %llu bad, %u not repaired yet",
				 now_mono() - pass_start, (unsigned long long)chunks, sz, (unsigned long long)found, nbad);
		chunks = bytes = found = 0;
		server_sleep(srv, srv->opts->scrub_interval_ms);
		if (!store_wanted(srv->st, bad, SCRUB_MAX_BAD, &nbad) && nbad)
			nbad -= peers_repair(srv, bad, nbad);
		pass_start = now_mono();
	}
	free(bad);
	return NULL;
}

int maint_start(server *srv)
{
	int err = pthread_create(&srv->maint, NULL, maint_main, srv);
	if (err)
		return ss_fail(SS_ENOMEM, "cannot start the housekeeping thread: %s", strerror(err));
	srv->maint_started = true;
	if (srv->opts->scrub_rate_mb > 0) {
		if ((err = pthread_create(&srv->scrub, NULL, scrub_main, srv)))
			return ss_fail(SS_ENOMEM, "cannot start the scrub thread: %s", strerror(err));
		srv->scrub_started = true;
	}
	return 0;
}

void maint_stop(server *srv)
{
	if (srv->maint_started)
		pthread_join(srv->maint, NULL);
	if (srv->scrub_started)
		pthread_join(srv->scrub, NULL);
	srv->maint_started = srv->scrub_started = false;
}
