/*
 * registry — a tracker's registry of shared files and their seeders
 * (docs/SWARM.md).  The tracker is a server in the tracker role: registry
 * entries are records in its store, replicated to the other tracker by the
 * ordinary pull links at write quorum 1:
 *
 *   path    <manifest root hex>/<seeder node id hex>
 *   content "syncstore-seeder 1\nname N\nsize S\naddr A\n"  (one small chunk)
 *
 * Liveness is soft state kept here, in memory: a seeder is live while its
 * last HEARTBEAT or ANNOUNCE to this tracker is younger than the lease (and
 * every seeder gets one lease of grace when the tracker starts).  Only live
 * seeders are answered and exported.  A thread rewrites the seederlist
 * export whenever what it would say changes.
 */
#ifndef SS_REGISTRY_H
#define SS_REGISTRY_H

#include "server.h"

#define REGISTRY_LEASE_MS 15000  /* default; SYNCSTORE_LEASE_MS overrides */
#define REGISTRY_MAX_SEEDERS 4096 /* liveness slots; the stalest is reused */
#define REGISTRY_MAX_ENTRIES (1u << 20)
#define REGISTRY_MAX_PER_CLIENT 4096 /* files one client certificate may seed */

typedef struct registry_entry {
	uint8_t root[HASH_LEN], seeder[HASH_LEN];
	uint64_t size;
	char name[WIRE_NAME_MAX], addr[WIRE_ADDR_MAX];
} registry_entry;

/* Lease length in ms from SYNCSTORE_LEASE_MS (default REGISTRY_LEASE_MS). */
int registry_lease_ms(void);

/* Open the request log, write the export and start its thread. */
int registry_start(server *srv);
void registry_stop(server *srv);

/* ANNOUNCE from `who`: record (or withdraw) who as a seeder; *held gets how
 * many files this tracker now lists for it. */
int registry_announce(server *srv, const uint8_t who[HASH_LEN], tls_role role, const msg *m, uint64_t *held);
/* HEARTBEAT from `who`: it is live; *held as above. */
int registry_heartbeat(server *srv, const uint8_t who[HASH_LEN], const msg *m, uint64_t *held);
/* Call fn for each live seeder of root. */
typedef int (*registry_fn)(void *ctx, const registry_entry *e);
int registry_seeders(server *srv, const uint8_t root[HASH_LEN], registry_fn fn, void *ctx);

/* One line in the request log: time, peer, what was asked, and the result. */
void registry_log(server *srv, const uint8_t who[HASH_LEN], const char *what, int rc);

#endif
