/*
 * mtorrent — the .mtorrent file: what a client needs to fetch one shared
 * file from the swarm (docs/SWARM.md).  The text is small, bounded and
 * untrusted; parsing never reads past the given bytes (fuzz/fuzz_mtorrent.c).
 *
 * Format version 1: text (valid UTF-8 is not required), one "key value" per
 * line, key and value separated by one space, the value being the rest of
 * the line (so names may contain spaces).  Every line ends in "\n" ("\r\n"
 * is accepted), the last one too, so a truncated file is refused rather than
 * read as a smaller size.  Blank lines and lines starting with '#' are
 * ignored; so are unknown keys, for forward compatibility.  At most
 * MTORRENT_MAX_BYTES in all, no NUL bytes.
 *
 *   line                   count  value
 *   ---------------------  -----  ------------------------------------------
 *   syncstore-mtorrent 1   first  exactly; another number is a newer format
 *   name NAME              1      1..255 bytes, no '/', no control bytes
 *                                 (< 0x20, 0x7f), not "." or ".."
 *   size N                 1      file size in bytes, decimal u64
 *   chunking SPEC          1      "fastcdc 8192 32768 131072 gear-v1": the
 *                                 CDC_MIN/AVG/MAX and CDC_FORMAT_VERSION of
 *                                 chunk.h; anything else is refused
 *   root HEX               1      manifest tree root id, 64 hex digits
 *                                 (written in lower case, either accepted)
 *   tracker HOST:PORT      1..8   1..127 bytes, no spaces or control bytes,
 *                                 port after the last ':' in 1..65535
 *
 * Example:
 *
 *   syncstore-mtorrent 1
 *   name report final.pdf
 *   size 123456
 *   chunking fastcdc 8192 32768 131072 gear-v1
 *   root 3f9a…(64 hex digits)
 *   tracker 127.0.0.1:7001
 *   tracker 127.0.0.1:7002
 *
 * Errors are one line, naming the line number: "line 4: size 'abc' is not a
 * number"; mtorrent_read puts the path in front.  Control bytes of quoted
 * values are shown as '?', so a hostile file cannot write to the terminal.
 */
#ifndef SS_MTORRENT_H
#define SS_MTORRENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk/chunk.h"
#include "util/util.h"

#define MTORRENT_VERSION 1
#define MTORRENT_MAX_TRACKERS 8
#define MTORRENT_MAX_BYTES 8192
#define MTORRENT_NAME_MAX 255
#define MTORRENT_TRACKER_MAX 127 /* bytes of HOST:PORT */

/* A parsed .mtorrent.  Strings are NUL-terminated and NUL-padded, so two
 * parses of equivalent text compare equal with memcmp. */
typedef struct mtorrent {
	char name[MTORRENT_NAME_MAX + 1];
	uint64_t size;
	uint8_t root[HASH_LEN];
	char trackers[MTORRENT_MAX_TRACKERS][MTORRENT_TRACKER_MAX + 1];
	unsigned ntrackers;
} mtorrent;

/* Is s a valid file name for a .mtorrent (rules above)? */
bool mtorrent_name_ok(const char *s);

/* Append the text of t to out.  SS_EINVAL if t breaks a rule above (name,
 * trackers), SS_ETOOBIG if out's maximum is reached. */
int mtorrent_format(const mtorrent *t, buf *out);

/* Parse n bytes of untrusted text.  0, or SS_EINVAL (malformed), SS_EFORMAT
 * (newer version, other chunking) or SS_ETOOBIG (over MTORRENT_MAX_BYTES);
 * on error *out is zeroed. */
int mtorrent_parse(const char *text, size_t n, mtorrent *out);

/* Durable atomic write (temporary file in the same directory, fsync,
 * rename, fsync of the directory), mode 0644. */
int mtorrent_write(const char *path, const mtorrent *t);

/* Read and parse a file of at most MTORRENT_MAX_BYTES.  Errors name the
 * path: "x.mtorrent: line 3: ...", SS_ENOENT "x.mtorrent: no such file". */
int mtorrent_read(const char *path, mtorrent *out);

#endif
