/*
 * replay.c — runs every file of a fuzz corpus through its harness without
 * libFuzzer, so `make test` replays the corpora in the normal and the
 * sanitizer builds.  Usage: fuzz-replay NAME DIR
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define FUZZ_TARGETS(X) X(mtorrent) X(tree) X(wire)

#define DECL(n) int fuzz_##n(const uint8_t *data, size_t size);
FUZZ_TARGETS(DECL)
#undef DECL

static const struct {
	const char *name;
	int (*fn)(const uint8_t *, size_t);
} targets[] = {
#define ENTRY(n) {#n, fuzz_##n},
	FUZZ_TARGETS(ENTRY)
#undef ENTRY
};

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fuzz-replay NAME DIR\n");
		return 2;
	}
	int (*fn)(const uint8_t *, size_t) = NULL;
	for (size_t i = 0; i < ARRAY_LEN(targets); i++)
		if (!strcmp(targets[i].name, argv[1]))
			fn = targets[i].fn;
	if (!fn) {
		fprintf(stderr, "fuzz-replay: no harness named %s\n", argv[1]);
		return 2;
	}
	DIR *d = opendir(argv[2]);
	if (!d) {
		perror(argv[2]);
		return 1;
	}
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", argv[2], e->d_name);
		buf b;
		buf_init(&b, 1 << 24);
		if (read_file_small(path, &b)) {
			fprintf(stderr, "fuzz-replay: cannot read %s\n", path);
			return 1;
		}
		fn(b.p, b.len);
		buf_free(&b);
		n++;
	}
	closedir(d);
	printf("fuzz corpus %s: %d inputs replayed\n", argv[1], n);
	return 0;
}
