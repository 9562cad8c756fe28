/* misc.c — hex, human-readable sizes, clocks, remote path validation. */
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void hex_encode(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

int hex_decode(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return SS_EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return SS_EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void fmt_size(uint64_t bytes, char out[16])
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	if (bytes < 1024) {
		snprintf(out, 16, "%u B", (unsigned)bytes);
		return;
	}
	double v = (double)bytes;
	int u = 0;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(out, 16, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void fmt_duration(double secs, char out[16])
{
	if (secs < 0 || secs > 359999)
		snprintf(out, 16, "--:--");
	else if (secs >= 3600)
		snprintf(out, 16, "%d:%02d:%02d", (int)secs / 3600, (int)secs / 60 % 60, (int)secs % 60);
	else
		snprintf(out, 16, "%02d:%02d", (int)secs / 60, (int)secs % 60);
}

double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t now_wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int path_check(const char *p, size_t len)
{
	if (len == 0)
		return ss_fail(SS_EINVAL, "empty path");
	if (len > SS_PATH_MAX)
		return ss_fail(SS_EINVAL, "path too long (%zu bytes, limit %d)", len, SS_PATH_MAX);
	if (memchr(p, 0, len))
		return ss_fail(SS_EINVAL, "path contains a NUL byte");
	if (p[0] == '/')
		return ss_fail(SS_EINVAL, "absolute path refused: %.*s (remote paths are relative, like docs/a.txt)",
			       (int)MIN(len, 200), p);
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && p[i] != '/')
			continue;
		size_t n = i - start;
		const char *c = p + start;
		if (n == 0)
			return ss_fail(SS_EINVAL, "empty path component in %.*s", (int)MIN(len, 200), p);
		if (n > SS_NAME_MAX)
			return ss_fail(SS_EINVAL, "path component longer than %d bytes", SS_NAME_MAX);
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return ss_fail(SS_EINVAL, "'%.*s' component refused in %.*s", (int)n, c, (int)MIN(len, 200), p);
		start = i + 1;
	}
	return 0;
}

int path_join(char *out, size_t outsz, const char *a, const char *b)
{
	int n = *a ? snprintf(out, outsz, "%s/%s", a, b) : snprintf(out, outsz, "%s", b);
	if (n < 0 || (size_t)n >= outsz)
		return ss_fail(SS_ETOOBIG, "path too long: %s/%s", a, b);
	return 0;
}

bool str_copy(char *dst, size_t n, const char *src)
{
	size_t len = strnlen(src, n);
	bool fits = len < n;
	if (!fits)
		len = n - 1;
	memcpy(dst, src, len);
	dst[len] = 0;
	return fits;
}
