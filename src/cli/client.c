/*
 * client.c — connecting to a server, and the small namespace commands
 * (ls, rm, mv, stat, log, status).  put and get live in put.c and get.c.
 */
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const char *what, int rc)
{
	fprintf(stderr, "syncstore: %s: %s\n", what, ss_errmsg(rc));
	return EXIT_FAIL;
}

int client_connect(const cli_opts *o, client *cl)
{
	char crt[PATH_MAX], key[PATH_MAX];
	memset(cl, 0, sizeof *cl);
	cl->c.fd = -1;
	snprintf(crt, sizeof crt, "%s/client.crt", o->tls);
	snprintf(key, sizeof key, "%s/client.key", o->tls);
	if (access(crt, R_OK) || access(key, R_OK))
		return ss_fail(SS_ENOENT, "no client identity in %s (client.crt, client.key): run `syncstore init %s` "
					  "or pass --tls DIR", o->tls, o->tls);
	cl->ctx = tls_ctx_new(o->tls, crt, key, 0);
	if (!cl->ctx)
		return SS_ETLS;
	int rc = conn_connect(cl->ctx, o->server, 10000, &cl->c);
	if (rc)
		goto fail;
	msgio_init(&cl->io, &cl->c);
	cl->m = xmalloc(sizeof *cl->m);
	/* Generous, but a stalled server must not hang a script for ever. */
	conn_set_timeout(&cl->c, CLIENT_TIMEOUT_MS);
	/* A tracker is a server in another role: status works against it. */
	if (cl->c.peer.role != ROLE_SERVER && cl->c.peer.role != ROLE_TRACKER) {
		rc = ss_fail(SS_EAUTH, "%s is not a syncstore server (its certificate says %s)", o->server,
			     tls_role_name(cl->c.peer.role));
		goto fail;
	}
	if ((rc = msgio_hello_client(&cl->io)))
		goto fail;
	return 0;
fail:
	client_close(cl);
	return rc;
}

int client_pending_error(client *cl, int rc)
{
	if (!cl->m)
		return rc;
	buf_reset(&cl->io.out);
	conn_set_timeout(&cl->c, 2000);
	char what[WIRE_TEXT_MAX];
	snprintf(what, sizeof what, "%s", ss_errmsg(rc));
	if (msgio_recv(&cl->io, cl->m) == 0 && cl->m->type == MSG_ERROR)
		return ss_fail(SS_EREMOTE, "%s", cl->m->error.text);
	return ss_fail(rc, "%s", what);
}

void client_close(client *cl)
{
	if (cl->m) {
		msgio_free(&cl->io);
		free(cl->m);
		cl->m = NULL;
	}
	if (cl->c.fd >= 0 || cl->c.ssl)
		conn_close(&cl->c);
	cl->c.fd = -1;
	cl->c.ssl = NULL;
	if (cl->ctx)
		SSL_CTX_free(cl->ctx);
	cl->ctx = NULL;
}

static void fmt_mode(uint32_t mode, char out[11])
{
	static const char rwx[] = "rwxrwxrwx";
	out[0] = '-';
	for (int i = 0; i < 9; i++)
		out[i + 1] = mode & (1u << (8 - i)) ? rwx[i] : '-';
	out[10] = 0;
}

static void fmt_time(int64_t ns, char *out, size_t n, bool precise)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	localtime_r(&t, &tm);
	size_t k = strftime(out, n, precise ? "%Y-%m-%d %H:%M:%S" : "%Y-%m-%d %H:%M", &tm);
	if (precise)
		snprintf(out + k, n - k, ".%09lld", (long long)(ns % 1000000000));
}

/* A JSON string: quotes, backslashes and control bytes escaped; other
 * bytes (UTF-8 names) pass through. */
static void json_str(const char *p)
{
	putchar('"');
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void json_entry(const record *r)
{
	char hex[HASH_HEX_LEN + 1];
	hex_encode(r->root, HASH_LEN, hex);
	printf("{\"path\":");
	json_str(r->path);
	printf(",\"size\":%llu,\"mode\":\"%04o\",\"mtime_ns\":%lld,\"version\":%llu,\"content_id\":\"%s\"}",
	       (unsigned long long)r->size, r->mode, (long long)r->mtime_ns, (unsigned long long)r->seq, hex);
}

static int print_entry(const record *r)
{
	char mode[11], size[16], when[40];
	fmt_mode(r->mode, mode);
	fmt_size(r->size, size);
	fmt_time(r->mtime_ns, when, sizeof when, false);
	printf("%s %10s  %s  %s\n", mode, size, when, r->path);
	return 0;
}

int cmd_ls(const cli_opts *o, int argc, char **argv)
{
	bool json = argc > 1 && !strcmp(argv[1], "--json");
	if (json) {
		argc--;
		argv++;
	}
	if (argc > 2) {
		fprintf(stderr, "usage: syncstore ls [--json] [PREFIX]\n");
		return EXIT_USAGE;
	}
	const char *prefix = argc == 2 ? argv[1] : "";
	unsigned n = 0;
	client cl;
	int rc = client_connect(o, &cl);
	if (rc)
		return cli_fail("ls", rc);
	if (!(rc = wire_path(&cl.io.out, MSG_LIST, prefix))) {
		while (!(rc = msgio_recv(&cl.io, cl.m))) {
			if (cl.m->type == MSG_END)
				break;
			if (cl.m->type == MSG_ERROR) {
				rc = ss_fail(SS_EREMOTE, "%s", cl.m->error.text);
				break;
			}
			if (cl.m->type != MSG_ENTRY) {
				rc = ss_fail(SS_EPROTO, "unexpected reply %u to ls", cl.m->type);
				break;
			}
			if (json) {
				fputs(n ? ",\n " : "[", stdout);
				json_entry(&cl.m->rec);
			} else {
				print_entry(&cl.m->rec);
			}
			n++;
		}
	}
	if (json && !rc)
		puts(n ? "]" : "[]");
	client_close(&cl);
	return rc ? cli_fail("ls", rc) : 0;
}

int cmd_rm(const cli_opts *o, int argc, char **argv)
{
	uint32_t flags = 0;
	int i = 1;
	if (i < argc && !strcmp(argv[i], "-r")) {
		flags |= WIRE_RM_RECURSIVE;
		i++;
	}
	if (argc - i != 1) {
		fprintf(stderr, "usage: syncstore rm [-r] REMOTE_PATH\n");
		return EXIT_USAGE;
	}
	const char *path = argv[i];
	int rc = path_check(path, strlen(path));
	if (rc)
		return cli_fail("rm", rc);
	client cl;
	if ((rc = client_connect(o, &cl)))
		return cli_fail("rm", rc);
	if (!(rc = wire_rm(&cl.io.out, path, flags)) && !(rc = msgio_expect(&cl.io, MSG_OK, cl.m)))
		printf("removed %llu file%s\n", (unsigned long long)cl.m->ok.value, cl.m->ok.value == 1 ? "" : "s");
	client_close(&cl);
	return rc ? cli_fail("rm", rc) : 0;
}

int cmd_mv(const cli_opts *o, int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: syncstore mv REMOTE_PATH NEW_REMOTE_PATH\n");
		return EXIT_USAGE;
	}
	int rc = path_check(argv[1], strlen(argv[1]));
	if (!rc)
		rc = path_check(argv[2], strlen(argv[2]));
	if (rc)
		return cli_fail("mv", rc);
	client cl;
	if ((rc = client_connect(o, &cl)))
		return cli_fail("mv", rc);
	if (!(rc = wire_mv(&cl.io.out, argv[1], argv[2])))
		rc = msgio_expect(&cl.io, MSG_OK, cl.m);
	client_close(&cl);
	return rc ? cli_fail("mv", rc) : 0;
}

int cmd_stat(const cli_opts *o, int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: syncstore stat REMOTE_PATH\n");
		return EXIT_USAGE;
	}
	int rc = path_check(argv[1], strlen(argv[1]));
	if (rc)
		return cli_fail("stat", rc);
	client cl;
	if ((rc = client_connect(o, &cl)))
		return cli_fail("stat", rc);
	record *r = xmalloc(sizeof *r);
	if (!(rc = wire_path(&cl.io.out, MSG_STAT, argv[1])) && !(rc = msgio_expect(&cl.io, MSG_ENTRY, cl.m))) {
		*r = cl.m->rec;
		rc = msgio_expect(&cl.io, MSG_OK, cl.m); /* durable on (high 32 bits) of (low 32 bits) */
	}
	if (!rc) {
		char size[16], when[64], hex[HASH_HEX_LEN + 1];
		fmt_size(r->size, size);
		fmt_time(r->mtime_ns, when, sizeof when, true);
		hex_encode(r->root, HASH_LEN, hex);
		uint64_t d = cl.m->ok.value;
		printf("path: %s\nsize: %llu (%s)\nmode: %04o\nmtime: %s\nversion: %llu\ncontent id: %s\n"
		       "durable on: %u of %u servers\n",
		       r->path, (unsigned long long)r->size, size, r->mode, when, (unsigned long long)r->seq, hex,
		       (unsigned)(d >> 32), (unsigned)(d & 0xffffffffu));
	}
	free(r);
	client_close(&cl);
	return rc ? cli_fail("stat", rc) : 0;
}

int cmd_log(const cli_opts *o, int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: syncstore log REMOTE_PATH\n");
		return EXIT_USAGE;
	}
	int rc = path_check(argv[1], strlen(argv[1]));
	if (rc)
		return cli_fail("log", rc);
	client cl;
	if ((rc = client_connect(o, &cl)))
		return cli_fail("log", rc);
	int n = 0;
	if (!(rc = wire_path(&cl.io.out, MSG_LOG, argv[1]))) {
		while (!(rc = msgio_recv(&cl.io, cl.m)) && cl.m->type == MSG_ENTRY) {
			const record *r = &cl.m->rec;
			char size[16], when[40], hex[HASH_HEX_LEN + 1];
			fmt_size(r->size, size);
			fmt_time(r->mtime_ns, when, sizeof when, false);
			hex_encode(r->root, HASH_LEN, hex);
			printf("version %-6llu %s  %10s  %s\n", (unsigned long long)r->seq, when,
			       r->deleted ? "deleted" : size, r->deleted ? "" : hex);
			n++;
		}
		if (!rc && cl.m->type == MSG_ERROR)
			rc = ss_fail(SS_EREMOTE, "%s", cl.m->error.text);
		if (!rc && n == 0)
			rc = ss_fail(SS_ENOENT, "no such file: %s", argv[1]);
	}
	client_close(&cl);
	return rc ? cli_fail("log", rc) : 0;
}

int cmd_status(const cli_opts *o, int argc, char **argv)
{
	bool json = false, wait = false;
	double timeout = -1; /* none: --wait waits until converged */
	char *end;
	static const struct option lopts[] = {{"json", no_argument, 0, 'j'},
					      {"wait", no_argument, 0, 'w'},
					      {"timeout", required_argument, 0, 't'},
					      {0, 0, 0, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'w': wait = true; break;
		case 't':
			timeout = strtod(optarg, &end);
			if (*end || end == optarg || timeout < 0) {
				fprintf(stderr, "syncstore: status: --timeout wants seconds, not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		default:
			fprintf(stderr, "usage: syncstore status [--wait] [--timeout SECONDS] [--json]\n");
			return EXIT_USAGE;
		}
	}
	double deadline = now_mono() + timeout;
	for (;;) {
		client cl;
		int rc = client_connect(o, &cl);
		if (rc)
			return cli_fail("status", rc);
		wire_server sv[64];
		int n = 0;
		if (!(rc = wire_empty(&cl.io.out, MSG_STATUS))) {
			while (!(rc = msgio_recv(&cl.io, cl.m)) && cl.m->type == MSG_SERVER)
				if (n < 64)
					sv[n++] = cl.m->server;
			if (!rc && cl.m->type == MSG_ERROR)
				rc = ss_fail(SS_EREMOTE, "%s", cl.m->error.text);
			else if (!rc && cl.m->type != MSG_END)
				rc = ss_fail(SS_EPROTO, "unexpected reply %u to status", cl.m->type);
		}
		client_close(&cl);
		if (rc)
			return cli_fail("status", rc);
		bool converged = true;
		for (int i = 0; i < n; i++)
			if (!(sv[i].flags & WIRE_SERVER_FORGOTTEN) &&
			    (!sv[i].connected || sv[i].pending_records || memcmp(sv[i].digest, sv[0].digest, HASH_LEN)))
				converged = false;
		if (!wait || converged || (timeout >= 0 && now_mono() >= deadline)) {
			char id[HASH_HEX_LEN + 1], dg[HASH_HEX_LEN + 1], sz[16], pb[16];
			if (json)
				printf("{\"servers\":[");
			else
				printf("%-16s  %-21s  %-9s  %8s  %8s  %10s  %8s  %s\n", "NODE", "ADDRESS", "STATE", "HEAD",
				       "PENDING", "PEND.BYTES", "FILES", "DIGEST");
			for (int i = 0; i < n; i++) {
				hex_encode(sv[i].id, HASH_LEN, id);
				hex_encode(sv[i].digest, HASH_LEN, dg);
				if (json) {
					printf("%s{\"node\":\"%s\",\"addr\":\"%s\",\"self\":%s,\"connected\":%s,"
					       "\"head\":%llu,\"pending_records\":%llu,\"pending_bytes\":%llu,"
					       "\"files\":%llu,\"bytes\":%llu,\"chunks\":%llu,\"chunk_bytes\":%llu,"
					       "\"digest\":\"%s\",\"tombstones\":%llu,\"forgotten\":%s,"
					       "\"blocks_tombstone_expiry\":%s}",
					       i ? "," : "", id, sv[i].addr, sv[i].self ? "true" : "false",
					       sv[i].connected ? "true" : "false", (unsigned long long)sv[i].head_seq,
					       (unsigned long long)sv[i].pending_records,
					       (unsigned long long)sv[i].pending_bytes, (unsigned long long)sv[i].files,
					       (unsigned long long)sv[i].bytes, (unsigned long long)sv[i].chunks,
					       (unsigned long long)sv[i].chunk_bytes, dg, (unsigned long long)sv[i].tombstones,
					       sv[i].flags & WIRE_SERVER_FORGOTTEN ? "true" : "false",
					       sv[i].flags & WIRE_SERVER_BLOCKS ? "true" : "false");
				} else {
					fmt_size(sv[i].pending_bytes, pb);
					fmt_size(sv[i].bytes, sz);
					const char *state = sv[i].flags & WIRE_SERVER_FORGOTTEN ? "forgotten"
							    : sv[i].connected ? (sv[i].self ? "self" : "connected")
									      : "down";
					printf("%.16s  %-21s  %-9s  %8llu  %8llu  %10s  %8llu  %.16s%s\n", id, sv[i].addr,
					       state,
					       (unsigned long long)sv[i].head_seq,
					       (unsigned long long)sv[i].pending_records, pb,
					       (unsigned long long)sv[i].files, dg,
					       sv[i].flags & WIRE_SERVER_BLOCKS ? "  (tombstones wait for it)" : "");
				}
			}
			if (json)
				printf("],\"converged\":%s}\n", converged ? "true" : "false");
			else
				printf("%s\n", converged ? "converged" : "not converged");
			if (!json && n && sv[0].tombstones)
				printf("%llu tombstone%s kept until every member has applied %s\n",
				       (unsigned long long)sv[0].tombstones, sv[0].tombstones == 1 ? "" : "s",
				       sv[0].tombstones == 1 ? "it" : "them");
			if (wait && !converged) {
				fprintf(stderr, "syncstore: status: not converged after %.0f seconds\n", timeout);
				return EXIT_FAIL;
			}
			return 0;
		}
		usleep(200 * 1000);
	}
}
