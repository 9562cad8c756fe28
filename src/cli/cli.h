/* cli — the syncstore command line: client commands, progress display. */
#ifndef SS_CLI_H
#define SS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "../net/msgio.h"

typedef struct cli_opts {
	const char *server; /* HOST:PORT */
	const char *tls;    /* directory with ca.crt, client.crt, client.key */
	bool quiet;
} cli_opts;

/* A connected, authenticated client session with a server. */
typedef struct client {
	SSL_CTX *ctx;
	conn c;
	msgio io;
	msg *m; /* scratch for replies (large: holds paths) */
} client;

int client_connect(const cli_opts *o, client *cl);
void client_close(client *cl);
/* After a write failed (the server closed on us), the reason may be waiting
 * in an ERROR frame: return that, or rc with its message unchanged. */
int client_pending_error(client *cl, int rc);

int cmd_put(const cli_opts *o, int argc, char **argv);
int cmd_get(const cli_opts *o, int argc, char **argv);
int cmd_ls(const cli_opts *o, int argc, char **argv);
int cmd_rm(const cli_opts *o, int argc, char **argv);
int cmd_mv(const cli_opts *o, int argc, char **argv);
int cmd_stat(const cli_opts *o, int argc, char **argv);
int cmd_log(const cli_opts *o, int argc, char **argv);
int cmd_status(const cli_opts *o, int argc, char **argv);

/* The seed-compatible programs (docs/SWARM.md), chosen by argv[0]. */
int tracker_main(int argc, char **argv);
int swarm_client_main(int argc, char **argv);
/* $SYNCSTORE_TLS, or ~/.syncstore. */
const char *swarm_tls_dir(void);

/* Progress bar on stderr, only when it is a terminal and not quiet. */
typedef struct progress {
	bool on;
	const char *label;
	uint64_t total, done;
	double start, last;
} progress;
void progress_init(progress *p, const char *label, uint64_t total, bool quiet);
void progress_update(progress *p, uint64_t done);
void progress_end(progress *p);

#define CLIENT_TIMEOUT_MS (5 * 60 * 1000)

/* Exit codes (CONTRACT.md). */
#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* Print "syncstore: <what>: <message>" for rc and return EXIT_FAIL. */
int cli_fail(const char *what, int rc);

#endif
