/* cmdline.c — the client shell's word splitter (cmdline.h). */
#include "swarm/cmdline.h"

#include "util/util.h"

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

int cmdline_split(const char *line, char *store, size_t storesz, char **argv, int max, int *argc)
{
	const char *p = line;
	size_t o = 0;
	int n = 0;

	*argc = 0;
	for (;;) {
		while (is_blank(*p))
			p++;
		if (!*p)
			break;
		if (n >= max)
			return ss_fail(SS_EINVAL, "too many words (at most %d)", max);
		argv[n++] = store + o;
		for (; *p && !is_blank(*p); p++) {
			if (*p == '\\' && !*++p)
				return ss_fail(SS_EINVAL, "a trailing \\ escapes nothing");
			/* Room for this byte and the word's NUL. */
			if (storesz < 2 || o > storesz - 2)
				return ss_fail(SS_EINVAL, "line too long");
			store[o++] = *p;
		}
		store[o++] = 0;
	}
	*argc = n;
	return 0;
}
