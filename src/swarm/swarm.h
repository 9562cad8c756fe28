/*
 * swarm — the seed-compatible `client` (docs/SWARM.md): shares files,
 * downloads them from many seeders at once, and serves what it holds.
 *
 *   client.c    the shell on standard input, shares, state, heartbeats
 *   seed.c      what this client serves: the index of chunks and tree nodes
 *               it holds, and the upload port answering READ
 *   download.c  `get`: the tree, then chunks from every seeder at once
 *   (net/trackers.c: requests to the trackers, the other when one fails)
 *
 * Threads: the shell (main), the upload acceptor and one thread per upload
 * connection, the heartbeat thread, and per download a coordinator with
 * one worker per seeder.  Shared state is behind swarm.mu, except the
 * serving index (seed.c has its own lock).
 */
#ifndef SS_SWARM_H
#define SS_SWARM_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../net/msgio.h"
#include "../net/trackers.h"
#include "mtorrent.h"

#define SWARM_MAX_SHARES 1024
#define SWARM_MAX_DOWNLOADS 256
#define SWARM_MAX_SOURCES 8      /* seeders one download draws from at once */
#define SWARM_TREE_SOURCES 4     /* seeders the tree is fetched from at once */
#define SWARM_BATCH 8            /* chunks per READ */
#define SWARM_DEPTH 4            /* READs outstanding per seeder */
#define SWARM_MAX_UPLOADS 32     /* upload connections served at once */
#define SWARM_NO_SEEDER_MS 30000 /* a download with no source this long fails */
#define SWARM_IO_MS 15000        /* a seeder silent this long is dropped (a tracker: TRACKERS_IO_MS) */

/* One file this client serves. */
typedef struct share {
	mtorrent t;
	char path[PATH_MAX];     /* the data */
	char mtorrent[PATH_MAX]; /* its .mtorrent, as given ("" for a download's) */
	int file;                /* seed.c file slot */
	bool partial;            /* a download still running: served as far as verified */
} share;

typedef enum { DL_RUNNING, DL_DONE, DL_FAILED } dl_state;

typedef struct download {
	mtorrent t;
	char dest[PATH_MAX], part[PATH_MAX];
	dl_state state;
	char reason[256];         /* DL_FAILED: why */
	uint64_t done_bytes;      /* verified and written */
	unsigned sources;         /* workers connected now */
	int tree_fd[SWARM_TREE_SOURCES]; /* the tree's connections while it is fetched, else -1 (under swarm.mu) */
	double started, finished; /* now_mono() */
	pthread_t thread;
	bool joined;
} download;

typedef struct swarm {
	char addr[WIRE_ADDR_MAX]; /* our upload address, as announced */
	char trackers[2][WIRE_ADDR_MAX];
	trackers ts;
	char statedir[PATH_MAX];
	uint8_t node_id[HASH_LEN];
	SSL_CTX *ctx;  /* to trackers and seeders */
	SSL_CTX *sctx; /* the upload port */
	int lease_ms;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* a download ended; stopping */
	share shares[SWARM_MAX_SHARES];
	unsigned nshares;
	download *downloads[SWARM_MAX_DOWNLOADS];
	unsigned ndownloads;
	bool abort;    /* downloads stop (second close, SIGINT) */
	bool stopping; /* heartbeats and uploads stop */
} swarm;

/* ---- seed.c ---- */
/* Open path for serving; the slot number, or <0. */
int seed_file_open(const char *path);
void seed_file_close(int file);
/* A data chunk at (file, off, len), or a node of file's tree (copied). */
void seed_add_chunk(const uint8_t id[HASH_LEN], int file, uint64_t off, uint32_t len);
void seed_add_node(const uint8_t id[HASH_LEN], const uint8_t *bytes, size_t len, int file);
/* Forget everything of one file: its chunks and its tree's nodes. */
void seed_drop_file(int file);
/* Start the upload acceptor on sw->addr. */
int seed_start(swarm *sw);
void seed_stop(swarm *sw);

/* ---- download.c ---- */
int download_start(swarm *sw, const mtorrent *t, const char *dest);

/* ---- client.c ---- */
/*
 * Serve and announce a file from seed.c slot `file`.  On success the share
 * table owns the slot (a running download keeps writing through its own
 * descriptor and unshares it if it fails); on failure the caller still does.
 * A share of the same root from another slot is replaced with SHARE_REPLACE
 * (the `share` command), else SS_EEXIST; one still downloading is never
 * replaced (SS_EBUSY).  *announced (may be NULL) gets the trackers' answer.
 */
#define SHARE_REPLACE 1u
#define SHARE_PARTIAL 2u /* a running download's DEST.part */
int swarm_share(swarm *sw, const mtorrent *t, const char *path, const char *mtorrent_path, int file, unsigned how,
		int *announced);
/* Stop serving t's root and withdraw it: the share from slot `file`, or
 * (file -1) the complete share, as `remove` does.  *ours (may be NULL): it
 * was shared by `share` under mtorrent_path.  SS_ENOENT if not shared. */
int swarm_unshare(swarm *sw, const mtorrent *t, int file, bool *ours, const char *mtorrent_path);
/* Does this client share all of root (not a download still running)? */
bool swarm_has_share(swarm *sw, const uint8_t root[HASH_LEN]);

#endif
