/*
 * mtorrent.c — parse, format, read and write .mtorrent files (format in
 * mtorrent.h).  The parser walks the bytes line by line with explicit
 * lengths; values are never NUL-terminated in place, so nothing is read
 * past text + n.
 */
#include "swarm/mtorrent.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "syncstore-mtorrent "
#define MAGIC_LEN (sizeof MAGIC - 1)

/* The known keys; seen[] in the parser holds the line of each one's first
 * appearance. */
enum { K_NAME, K_SIZE, K_CHUNKING, K_ROOT, K_TRACKER, K_COUNT };
static const char *const keys[K_COUNT] = {"name", "size", "chunking", "root", "tracker"};

static bool is_ctl(char c) { return (uint8_t)c < 0x20 || c == 0x7f; }

/* A value as it may appear in a one-line message: at most 40 bytes, control
 * bytes shown as '?'. */
static const char *quote(const char *p, size_t n, char out[48])
{
	size_t k = MIN(n, 40);
	for (size_t i = 0; i < k; i++)
		out[i] = is_ctl(p[i]) ? '?' : p[i];
	strcpy(out + k, n > k ? "..." : "");
	return out;
}

/* The only chunking this client can produce: its chunk ids must match. */
static const char *chunking(char out[64])
{
	snprintf(out, 64, "fastcdc %d %d %d gear-v%d", CDC_MIN, CDC_AVG, CDC_MAX, CDC_FORMAT_VERSION);
	return out;
}

/* Decimal digits only: 0, -1 if not a number, -2 if it overflows u64. */
static int parse_u64(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
			return -2;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return 0;
}

/* Why name p[0..n) is refused, or NULL. */
static const char *name_problem(const char *p, size_t n)
{
	if (n == 0)
		return "is empty";
	if (n > MTORRENT_NAME_MAX)
		return "is longer than 255 bytes";
	if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
		return "cannot be '.' or '..'";
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '/')
			return "contains '/'";
		if (is_ctl(p[i]))
			return "contains a control character";
	}
	return NULL;
}

/* Why tracker address p[0..n) is refused, or NULL. */
static const char *tracker_problem(const char *p, size_t n)
{
	uint64_t port;
	if (n == 0 || n > MTORRENT_TRACKER_MAX)
		return "must be 1..127 bytes";
	for (size_t i = 0; i < n; i++)
		if (p[i] == ' ' || is_ctl(p[i]))
			return "contains a space or a control character";
	const char *colon = memrchr(p, ':', n);
	if (!colon || colon == p)
		return "is not HOST:PORT";
	if (parse_u64(colon + 1, n - (size_t)(colon + 1 - p), &port) || port < 1 || port > 65535)
		return "has no port in 1..65535";
	return NULL;
}

bool mtorrent_name_ok(const char *s)
{
	return !name_problem(s, strnlen(s, MTORRENT_NAME_MAX + 1));
}

int mtorrent_format(const mtorrent *t, buf *out)
{
	char text[2048], q[48], hex[HASH_HEX_LEN + 1], spec[64];
	size_t n = strnlen(t->name, sizeof t->name);
	const char *why = name_problem(t->name, n);
	if (why)
		return ss_fail(SS_EINVAL, "name '%s' %s", quote(t->name, n, q), why);
	if (t->ntrackers < 1 || t->ntrackers > MTORRENT_MAX_TRACKERS)
		return ss_fail(SS_EINVAL, "a .mtorrent needs 1..%d trackers, not %u", MTORRENT_MAX_TRACKERS,
			       t->ntrackers);
	for (unsigned i = 0; i < t->ntrackers; i++) {
		n = strnlen(t->trackers[i], sizeof t->trackers[i]);
		if ((why = tracker_problem(t->trackers[i], n)))
			return ss_fail(SS_EINVAL, "tracker '%s' %s", quote(t->trackers[i], n, q), why);
	}
	hex_encode(t->root, HASH_LEN, hex);
	/* Longest text: about 1.5 KiB (eight 127-byte trackers, a 255-byte name). */
	int len = snprintf(text, sizeof text, MAGIC "%d\nname %s\nsize %" PRIu64 "\nchunking %s\nroot %s\n",
			   MTORRENT_VERSION, t->name, t->size, chunking(spec), hex);
	for (unsigned i = 0; i < t->ntrackers; i++)
		len += snprintf(text + len, sizeof text - (size_t)len, "tracker %s\n", t->trackers[i]);
	SS_ASSERT(len > 0 && (size_t)len < sizeof text && len <= MTORRENT_MAX_BYTES);
	return buf_append(out, text, (size_t)len);
}

/* Line 1: the magic and a version number. */
static int parse_header(const char *p, size_t n)
{
	char q[48];
	if (n == MAGIC_LEN + 1 && !memcmp(p, MAGIC "1", n))
		return 0;
	if (n > MAGIC_LEN && !memcmp(p, MAGIC, MAGIC_LEN) && p[MAGIC_LEN] != '0') {
		uint64_t v;
		const char *ver = p + MAGIC_LEN;
		if (parse_u64(ver, n - MAGIC_LEN, &v) != -1)
			return ss_fail(SS_EFORMAT, ".mtorrent version %s is newer than this client (%d)",
				       quote(ver, n - MAGIC_LEN, q), MTORRENT_VERSION);
	}
	return ss_fail(SS_EINVAL, "not a .mtorrent file");
}

/* One line after the first, without its line ending. */
static int parse_line(const char *p, size_t n, unsigned line, unsigned seen[K_COUNT], mtorrent *t)
{
	char q[48], spec[64], hex[HASH_HEX_LEN + 1];
	const char *why;
	int k;

	if (memchr(p, 0, n))
		return ss_fail(SS_EINVAL, "line %u: NUL byte", line);
	if (n == 0 || p[0] == '#')
		return 0;
	const char *sp = memchr(p, ' ', n);
	size_t kn = sp ? (size_t)(sp - p) : n;
	const char *val = sp ? sp + 1 : p + n;
	size_t vn = n - (size_t)(val - p);
	for (k = 0; k < K_COUNT; k++)
		if (strlen(keys[k]) == kn && !memcmp(p, keys[k], kn))
			break;
	if (k == K_COUNT)
		return 0;
	if (seen[k] && k != K_TRACKER)
		return ss_fail(SS_EINVAL, "line %u: second '%s' line (the first is line %u)", line, keys[k], seen[k]);
	if (!seen[k])
		seen[k] = line;

	switch (k) {
	case K_NAME:
		if ((why = name_problem(val, vn)))
			return ss_fail(SS_EINVAL, "line %u: name '%s' %s", line, quote(val, vn, q), why);
		memcpy(t->name, val, vn);
		return 0;
	case K_SIZE:
		switch (parse_u64(val, vn, &t->size)) {
		case -1: return ss_fail(SS_EINVAL, "line %u: size '%s' is not a number", line, quote(val, vn, q));
		case -2: return ss_fail(SS_EINVAL, "line %u: size '%s' is too large", line, quote(val, vn, q));
		}
		return 0;
	case K_CHUNKING:
		if (vn != strlen(chunking(spec)) || memcmp(val, spec, vn))
			return ss_fail(SS_EFORMAT, "line %u: chunking '%s' is not supported (this client chunks with '%s')",
				       line, quote(val, vn, q), spec);
		return 0;
	case K_ROOT:
		if (vn == HASH_HEX_LEN) {
			memcpy(hex, val, vn);
			hex[vn] = 0;
			if (hex_decode(hex, t->root, HASH_LEN) == 0)
				return 0;
		}
		return ss_fail(SS_EINVAL, "line %u: root '%s' is not 64 hex digits", line, quote(val, vn, q));
	default:
		if (t->ntrackers == MTORRENT_MAX_TRACKERS)
			return ss_fail(SS_EINVAL, "line %u: more than %d trackers", line, MTORRENT_MAX_TRACKERS);
		if ((why = tracker_problem(val, vn)))
			return ss_fail(SS_EINVAL, "line %u: tracker '%s' %s", line, quote(val, vn, q), why);
		memcpy(t->trackers[t->ntrackers++], val, vn);
		return 0;
	}
}

static int parse(const char *text, size_t n, mtorrent *t)
{
	unsigned seen[K_COUNT] = {0}, line = 0;
	const char *p = text, *end = text + n;
	int rc;

	if (n > MTORRENT_MAX_BYTES)
		return ss_fail(SS_ETOOBIG, ".mtorrent is %zu bytes, over the limit of %d", n, MTORRENT_MAX_BYTES);
	if (n == 0)
		return ss_fail(SS_EINVAL, "not a .mtorrent file");
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (nl && len && p[len - 1] == '\r')
			len--;
		line++;
		rc = line == 1 ? parse_header(p, len) : parse_line(p, len, line, seen, t);
		if (rc)
			return rc;
		if (!nl)
			return ss_fail(SS_EINVAL, "line %u: no newline at the end (truncated file?)", line);
		p = nl + 1;
	}
	for (int k = 0; k < K_COUNT; k++)
		if (!seen[k])
			return ss_fail(SS_EINVAL, "no '%s' line", keys[k]);
	return 0;
}

int mtorrent_parse(const char *text, size_t n, mtorrent *out)
{
	memset(out, 0, sizeof *out);
	int rc = parse(text, n, out);
	if (rc)
		memset(out, 0, sizeof *out);
	return rc;
}

/* Put "path: " in front of the current error message. */
static int with_path(int rc, const char *path)
{
	char msg[512];
	snprintf(msg, sizeof msg, "%s", ss_errmsg(rc));
	return ss_fail(rc, "%s: %s", path, msg);
}

int mtorrent_write(const char *path, const mtorrent *t)
{
	buf b;
	buf_init(&b, MTORRENT_MAX_BYTES);
	int rc = mtorrent_format(t, &b);
	if (rc)
		rc = with_path(rc, path);
	else
		rc = write_file_atomic(path, b.p, b.len, 0644);
	buf_free(&b);
	return rc;
}

int mtorrent_read(const char *path, mtorrent *out)
{
	buf b;
	/* read_file_small asks for 4 KiB of room before each read, even the one
	 * that finds the end, so allow that much over the limit. */
	buf_init(&b, MTORRENT_MAX_BYTES + 1 + 4096);
	memset(out, 0, sizeof *out);
	int rc = read_file_small(path, &b);
	if (rc == SS_ENOENT)
		rc = ss_fail(SS_ENOENT, "%s: no such file", path);
	else if (rc == SS_ETOOBIG || (!rc && b.len > MTORRENT_MAX_BYTES))
		rc = ss_fail(SS_ETOOBIG, "%s: larger than %d bytes, not a .mtorrent", path, MTORRENT_MAX_BYTES);
	else if (!rc && (rc = mtorrent_parse((const char *)b.p, b.len, out)))
		rc = with_path(rc, path);
	buf_free(&b);
	return rc;
}
