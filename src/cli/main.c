/*
 * main.c — the syncstore program: global options, then one command.
 *
 * The same binary is also `tracker` and `client` (links made by the build),
 * chosen by the name it is started under.
 */
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/server.h"
#include "cli.h"

#define VERSION "0.1.0"

static const char usage_text[] =
	"usage: syncstore [--server HOST:PORT] [--tls DIR] [--quiet] COMMAND [ARGS]\n"
	"\n"
	"cluster setup:\n"
	"  init DIR                                  create a cluster CA and an admin client identity\n"
	"  cert issue --tls DIR --role ROLE --name NAME --out OUTDIR\n"
	"                                            issue an identity (ROLE: server, tracker, client)\n"
	"  server --data DIR --listen HOST:PORT --tls DIR [--peer [ID@]HOST:PORT]...\n"
	"         [--write-quorum majority|all|N] [--quorum-timeout SECONDS] [--retention SECONDS]\n"
	"         [--scrub-interval SECONDS] [--scrub-rate MB] [--tracker HOST:PORT]...\n"
	"                                            run a storage server in the foreground\n"
	"files:\n"
	"  put LOCAL_FILE_OR_DIR REMOTE_PATH         upload (an update sends only what changed)\n"
	"  get [--version V] REMOTE_PATH LOCAL_FILE  download, verified, written atomically\n"
	"                                            (a directory put earlier: every file under it)\n"
	"  ls [--json] [PREFIX]                      list files\n"
	"  rm [-r] REMOTE_PATH                       delete a file (or everything under a prefix)\n"
	"  mv REMOTE_PATH NEW_REMOTE_PATH            rename\n"
	"  stat REMOTE_PATH                          size, mode, mtime, version, content id\n"
	"  log REMOTE_PATH                           kept versions, newest first\n"
	"  status [--wait] [--timeout SECONDS] [--json]\n"
	"                                            servers, sequences and whether they converged\n"
	"  forget NODE_ID                            remove a dead member for good\n"
	"\n"
	"SYNCSTORE_SERVER and SYNCSTORE_TLS stand in for --server and --tls (default 127.0.0.1:7070\n"
	"and ~/.syncstore).  Exit status: 0 success, 1 failure, 2 usage error.\n";

static int usage(int code)
{
	fputs(usage_text, code ? stderr : stdout);
	return code;
}

static int cmd_init(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: syncstore init DIR\n");
		return EXIT_USAGE;
	}
	int rc = tls_init_dir(argv[1]);
	if (rc)
		return cli_fail("init", rc);
	printf("created a cluster CA and an admin client identity in %s\n", argv[1]);
	return 0;
}

static int cmd_cert(int argc, char **argv)
{
	const char *tls = NULL, *role = NULL, *name = NULL, *out = NULL;
	static const struct option lopts[] = {{"tls", required_argument, 0, 't'},
					      {"role", required_argument, 0, 'r'},
					      {"name", required_argument, 0, 'n'},
					      {"out", required_argument, 0, 'o'},
					      {0, 0, 0, 0}};
	if (argc < 2 || strcmp(argv[1], "issue"))
		goto usage;
	optind = 2;
	int c;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 't': tls = optarg; break;
		case 'r': role = optarg; break;
		case 'n': name = optarg; break;
		case 'o': out = optarg; break;
		default: goto usage;
		}
	}
	if (!tls || !role || !name || !out || optind != argc)
		goto usage;
	tls_role r = tls_role_parse(role);
	if (r == ROLE_NONE) {
		fprintf(stderr, "syncstore: cert issue: unknown role '%s' (server, tracker or client)\n", role);
		return EXIT_USAGE;
	}
	int rc = tls_issue(tls, r, name, out, name);
	if (rc)
		return cli_fail("cert issue", rc);
	printf("issued %s identity %s in %s\n", role, name, out);
	return 0;
usage:
	fprintf(stderr, "usage: syncstore cert issue --tls DIR --role server|tracker|client --name NAME --out OUTDIR\n");
	return EXIT_USAGE;
}

static int cmd_server(int argc, char **argv)
{
	server_opts o = {.write_quorum = "majority", .quorum_timeout_ms = SERVER_QUORUM_MS,
			 .retention_ms = SERVER_RETENTION_MS, .scrub_interval_ms = SERVER_SCRUB_INTERVAL_MS,
			 .scrub_rate_mb = SERVER_SCRUB_RATE_MB};
	char *end;
	static const struct option lopts[] = {{"data", required_argument, 0, 'd'},
					      {"listen", required_argument, 0, 'l'},
					      {"tls", required_argument, 0, 't'},
					      {"peer", required_argument, 0, 'p'},
					      {"tracker", required_argument, 0, 'T'},
					      {"write-quorum", required_argument, 0, 'w'},
					      {"quorum-timeout", required_argument, 0, 'q'},
					      {"retention", required_argument, 0, 'r'},
					      {"scrub-interval", required_argument, 0, 'S'},
					      {"scrub-rate", required_argument, 0, 'R'},
					      {"help", no_argument, 0, 'h'},
					      {0, 0, 0, 0}};
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': o.data = optarg; break;
		case 'l': o.listen = optarg; break;
		case 't': o.tls = optarg; break;
		case 'p':
			if (o.npeers == (int)ARRAY_LEN(o.peers)) {
				fprintf(stderr, "syncstore: server: at most %zu peers\n", ARRAY_LEN(o.peers));
				return EXIT_USAGE;
			}
			o.peers[o.npeers++] = optarg;
			break;
		case 'T':
			if (o.ntrackers == (int)ARRAY_LEN(o.trackers)) {
				fprintf(stderr, "syncstore: server: at most %zu trackers\n", ARRAY_LEN(o.trackers));
				return EXIT_USAGE;
			}
			o.trackers[o.ntrackers++] = optarg;
			break;
		case 'w': o.write_quorum = optarg; break;
		case 'q': {
			double sec = strtod(optarg, &end);
			if (*end || end == optarg || sec <= 0 || sec > 86400) {
				fprintf(stderr, "syncstore: server: --quorum-timeout wants seconds, not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.quorum_timeout_ms = (int)(sec * 1000);
			break;
		}
		case 'r': {
			double sec = strtod(optarg, &end);
			if (*end || end == optarg || sec < 0 || sec > 100.0 * 365 * 24 * 3600) {
				fprintf(stderr, "syncstore: server: --retention wants seconds, not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.retention_ms = (int64_t)(sec * 1000);
			break;
		}
		case 'S': {
			double sec = strtod(optarg, &end);
			if (*end || end == optarg || sec <= 0 || sec > 365.0 * 24 * 3600) {
				fprintf(stderr, "syncstore: server: --scrub-interval wants seconds, not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.scrub_interval_ms = (int)(sec * 1000);
			break;
		}
		case 'R': {
			long mb = strtol(optarg, &end, 10);
			if (*end || end == optarg || mb < 0 || mb > 100000) {
				fprintf(stderr, "syncstore: server: --scrub-rate wants MB/s (0 = no scrub), not '%s'\n",
					optarg);
				return EXIT_USAGE;
			}
			o.scrub_rate_mb = (int)mb;
			break;
		}
		case 'h':
			printf("usage: syncstore server --data DIR --listen HOST:PORT --tls DIR [--peer [ID@]HOST:PORT]...\n"
			       "       [--write-quorum majority|all|N] [--quorum-timeout SECONDS] [--retention SECONDS]\n"
			       "       [--scrub-interval SECONDS] [--scrub-rate MB] [--tracker HOST:PORT]...\n");
			return 0;
		default: goto usage;
		}
	}
	if (!o.data || !o.listen || !o.tls || optind != argc)
		goto usage;
	return server_main(&o);
usage:
	fprintf(stderr, "usage: syncstore server --data DIR --listen HOST:PORT --tls DIR [--peer [ID@]HOST:PORT]...\n"
			"       [--write-quorum majority|all|N] [--quorum-timeout SECONDS] [--retention SECONDS]\n"
			"       [--scrub-interval SECONDS] [--scrub-rate MB] [--tracker HOST:PORT]...\n");
	return EXIT_USAGE;
}

static int cmd_forget(const cli_opts *o, int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: syncstore forget NODE_ID\n");
		return EXIT_USAGE;
	}
	client cl;
	int rc = client_connect(o, &cl);
	if (!rc && !(rc = wire_forget(&cl.io.out, argv[1], 0)))
		rc = msgio_expect(&cl.io, MSG_OK, cl.m);
	uint64_t servers = rc ? 0 : cl.m->ok.value;
	client_close(&cl);
	if (rc)
		return cli_fail("forget", rc);
	printf("forgot %s on %llu server%s\n", argv[1], (unsigned long long)servers, servers == 1 ? "" : "s");
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(const cli_opts *, int, char **);
} client_cmds[] = {
	{"put", cmd_put}, {"get", cmd_get},   {"ls", cmd_ls},         {"rm", cmd_rm},         {"mv", cmd_mv},
	{"stat", cmd_stat}, {"log", cmd_log}, {"status", cmd_status}, {"forget", cmd_forget},
};

int main(int argc, char **argv)
{
	/* Writes to a peer that went away must fail with EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	const char *prog = basename(argv[0]);
	if (!strcmp(prog, "tracker"))
		return tracker_main(argc, argv);
	if (!strcmp(prog, "client"))
		return swarm_client_main(argc, argv);

	cli_opts o = {.server = getenv("SYNCSTORE_SERVER"), .tls = getenv("SYNCSTORE_TLS")};
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		const char **target = NULL;
		size_t n = 0;
		if (!strncmp(a, "--server", n = 8))
			target = &o.server;
		else if (!strncmp(a, "--tls", n = 5))
			target = &o.tls;
		if (target && a[n] == '=') {
			*target = a + n + 1;
		} else if (target && !a[n]) {
			if (++i == argc)
				return usage(EXIT_USAGE);
			*target = argv[i];
		} else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
			o.quiet = true;
		} else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			log_level = LOG_DEBUG;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			return usage(0);
		} else if (!strcmp(a, "--version")) {
			printf("syncstore %s (storage format %d, wire protocol %d)\n", VERSION, STORE_FORMAT,
			       WIRE_VERSION);
			return 0;
		} else {
			fprintf(stderr, "syncstore: unknown option %s\n", a);
			return usage(EXIT_USAGE);
		}
	}
	if (i == argc)
		return usage(EXIT_USAGE);
	const char *cmd = argv[i];
	argc -= i;
	argv += i;
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return usage(0);

	if (!strcmp(cmd, "init"))
		return cmd_init(argc, argv);
	if (!strcmp(cmd, "cert"))
		return cmd_cert(argc, argv);
	if (!strcmp(cmd, "server"))
		return cmd_server(argc, argv);

	static char tlsdef[4096];
	if (!o.server || !*o.server)
		o.server = "127.0.0.1:7070";
	if (!o.tls || !*o.tls) {
		const char *home = getenv("HOME");
		snprintf(tlsdef, sizeof tlsdef, "%s/.syncstore", home ? home : ".");
		o.tls = tlsdef;
	}
	for (size_t k = 0; k < ARRAY_LEN(client_cmds); k++)
		if (!strcmp(cmd, client_cmds[k].name))
			return client_cmds[k].fn(&o, argc, argv);
	fprintf(stderr, "syncstore: unknown command '%s'\n", cmd);
	return usage(EXIT_USAGE);
}
