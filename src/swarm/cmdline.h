/*
 * cmdline — split a line of the client shell into words (docs/SWARM.md).
 *
 * Words are separated by runs of spaces and tabs.  A backslash makes the
 * next character part of the word, so "share my\ file.txt my\ file.mtorrent"
 * is three words; a backslash with nothing after it is an error.  There are
 * no quotes.  The caller strips the line ending first.
 */
#ifndef SS_CMDLINE_H
#define SS_CMDLINE_H

#include <stddef.h>

/*
 * Split line into at most max words, copied NUL-terminated into store
 * (storesz bytes, the bound on the whole line); argv[i] point into store.
 * Returns 0 and sets *argc, or SS_EINVAL ("too many words", "a trailing \
 * escapes nothing", "line too long") with *argc = 0.
 */
int cmdline_split(const char *line, char *store, size_t storesz, char **argv, int max, int *argc);

#endif
