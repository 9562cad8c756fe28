/*
 * fuzz_mtorrent.c — libFuzzer harness for mtorrent_parse, the parser of
 * .mtorrent files users download from anywhere, and for cmdline_split, the
 * client shell's word splitter.
 *
 * A parse must either fail with one of its codes and a one-line message of
 * printable bytes, or give a struct that keeps every rule of the format and
 * formats to text that parses back to the identical struct.  The same bytes
 * (up to the first NUL) as a command line must split into words that, with
 * their spaces, tabs and backslashes escaped again, split back to the same
 * words.  Seeds: fuzz/corpus/mtorrent/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "swarm/cmdline.h"
#include "swarm/mtorrent.h"
#include "util/util.h"

int fuzz_mtorrent(const uint8_t *data, size_t size);

#define LINE_MAX_FUZZ 1024
#define WORDS_MAX 8

static void check_message(int rc)
{
	const char *m = ss_errmsg(rc);
	for (size_t i = 0; m[i]; i++)
		SS_ASSERT((uint8_t)m[i] >= 0x20 && m[i] != 0x7f);
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
	mtorrent *t = malloc(sizeof *t), *again = malloc(sizeof *again);
	int rc = mtorrent_parse((const char *)data, size, t);
	if (rc != 0) {
		SS_ASSERT(rc == SS_EINVAL || rc == SS_EFORMAT || rc == SS_ETOOBIG);
		check_message(rc);
		goto out;
	}
	SS_ASSERT(size <= MTORRENT_MAX_BYTES);
	SS_ASSERT(mtorrent_name_ok(t->name));
	SS_ASSERT(t->ntrackers >= 1 && t->ntrackers <= MTORRENT_MAX_TRACKERS);
	for (unsigned i = 0; i < MTORRENT_MAX_TRACKERS; i++) {
		size_t n = strnlen(t->trackers[i], sizeof t->trackers[i]);
		SS_ASSERT(n < sizeof t->trackers[i]);
		SS_ASSERT(i < t->ntrackers ? n > 0 && strchr(t->trackers[i], ':') && !strchr(t->trackers[i], ' ')
					   : n == 0);
	}
	buf b;
	buf_init(&b, MTORRENT_MAX_BYTES);
	SS_ASSERT(mtorrent_format(t, &b) == 0);
	SS_ASSERT(mtorrent_parse((const char *)b.p, b.len, again) == 0);
	SS_ASSERT(memcmp(t, again, sizeof *t) == 0);
	buf_free(&b);
out:
	free(t);
	free(again);
}

static void fuzz_split(const uint8_t *data, size_t size)
{
	char line[LINE_MAX_FUZZ + 1], store[256], store2[256], *argv[WORDS_MAX], *argv2[WORDS_MAX];
	int argc, argc2;
	size_t n = strnlen((const char *)data, MIN(size, LINE_MAX_FUZZ));
	memcpy(line, data, n);
	line[n] = 0;
	int rc = cmdline_split(line, store, sizeof store, argv, WORDS_MAX, &argc);
	if (rc != 0) {
		SS_ASSERT(rc == SS_EINVAL && argc == 0);
		return;
	}
	SS_ASSERT(argc >= 0 && argc <= WORDS_MAX);
	/* Escaping never makes a word longer than it was in the line. */
	char joined[LINE_MAX_FUZZ + 2]; /* the words, escaped, each followed by a space */
	size_t o = 0;
	for (int i = 0; i < argc; i++) {
		SS_ASSERT(argv[i] >= store && argv[i] < store + sizeof store && argv[i][0]);
		for (const char *c = argv[i]; *c; c++) {
			if (*c == ' ' || *c == '\t' || *c == '\\')
				joined[o++] = '\\';
			joined[o++] = *c;
		}
		joined[o++] = ' ';
		SS_ASSERT(o <= n + 1);
	}
	joined[o] = 0;
	SS_ASSERT(cmdline_split(joined, store2, sizeof store2, argv2, WORDS_MAX, &argc2) == 0);
	SS_ASSERT(argc2 == argc);
	for (int i = 0; i < argc; i++)
		SS_ASSERT(!strcmp(argv[i], argv2[i]));
}

int fuzz_mtorrent(const uint8_t *data, size_t size)
{
	fuzz_parse(data, size);
	fuzz_split(data, size);
	return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	return fuzz_mtorrent(d, n);
}
#endif
