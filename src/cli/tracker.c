/*
 * tracker.c — `tracker MY_ADDR OTHER_ADDR SEEDERLIST_FILE LOG_FILE`, the
 * seed-compatible tracker: a syncstore server in the tracker role whose one
 * peer is the other tracker, at write quorum 1 (docs/SWARM.md).
 */
#include "cli.h"
#include "../server/server.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

const char *swarm_tls_dir(void)
{
	static char def[PATH_MAX];
	const char *e = getenv("SYNCSTORE_TLS");
	if (e && *e)
		return e;
	const char *home = getenv("HOME");
	snprintf(def, sizeof def, "%s/.syncstore", home ? home : ".");
	return def;
}

int tracker_main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: tracker MY_IP:PORT OTHER_TRACKER_IP:PORT SEEDERLIST_FILE LOG_FILE\n"
				"(SYNCSTORE_TLS names the cluster CA directory; the registry is kept in "
				"SEEDERLIST_FILE.state/)\n");
		return EXIT_USAGE;
	}
	static char data[PATH_MAX];
	if (snprintf(data, sizeof data, "%s.state", argv[3]) >= (int)sizeof data) {
		fprintf(stderr, "tracker: seederlist path too long\n");
		return EXIT_USAGE;
	}
	int rc = mkdir_p(data, 0700);
	if (rc) {
		fprintf(stderr, "tracker: %s\n", ss_errmsg(rc));
		return EXIT_FAIL;
	}
	static server_opts o;
	o.role = ROLE_TRACKER;
	o.data = data;
	o.listen = argv[1];
	o.tls = swarm_tls_dir();
	o.peers[o.npeers++] = argv[2];
	o.write_quorum = "1";
	o.quorum_timeout_ms = SERVER_QUORUM_MS;
	o.retention_ms = 3600 * 1000; /* registry history is of little use */
	o.scrub_interval_ms = SERVER_SCRUB_INTERVAL_MS;
	o.scrub_rate_mb = SERVER_SCRUB_RATE_MB;
	o.seederlist = argv[3];
	o.request_log = argv[4];
	return server_main(&o);
}
