/*
 * server — the storage daemon: one store, one listening socket, one thread
 * per connection doing blocking TLS I/O (bulk chunk streams want large reads
 * and writes; DESIGN.md measured ~1.75 GB/s that way against ~1.0 GB/s
 * through bufferevents).  Connections are capped at SERVER_MAX_CONNS.
 */
#ifndef SS_SERVER_H
#define SS_SERVER_H

#include <stdint.h>

#include "../net/msgio.h"
#include "../store/store.h"

#define SERVER_MAX_CONNS 512
#define SERVER_HANDSHAKE_MS 10000
#define SERVER_MAX_HANDSHAKES 64 /* connections still in their TLS handshake */
#define SERVER_IDLE_MS (10 * 60 * 1000)

typedef struct server_opts {
	const char *data;
	const char *listen;
	const char *tls;
	const char *peers[64];
	int npeers;
	const char *trackers[16];
	int ntrackers;
	const char *write_quorum;
} server_opts;

typedef struct server {
	const server_opts *opts;
	store *st;
	uint8_t node_id[HASH_LEN];
} server;

int server_main(const server_opts *o);

/* Serve one authenticated connection until it closes (session.c). */
void session_run(server *srv, conn *c);

#endif
