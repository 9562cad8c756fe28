/* err.c — error codes and the per-thread error message slot. */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_msg[512];
static _Thread_local int err_code;

const char *ss_strerror(int code)
{
	switch (code) {
#define SS_X(name, val, text) case val: return text;
		SS_ERRORS(SS_X)
#undef SS_X
	}
	return "unknown error";
}

int ss_errno_code(int err)
{
	switch (err) {
	case ENOMEM: return SS_ENOMEM;
	case ENOENT: case ENOTDIR: return SS_ENOENT;
	case ENOSPC: case EDQUOT: case EFBIG: return SS_ENOSPC;
	case EACCES: case EPERM: case EROFS: return SS_EPERM;
	case EEXIST: return SS_EEXIST;
	case EINVAL: return SS_EINVAL;
	case EPIPE: case ECONNRESET: return SS_ECLOSED;
	case ETIMEDOUT: return SS_ETIMEDOUT;
	default: return SS_EIO;
	}
}

static int vfail(int code, const char *suffix, const char *fmt, va_list ap)
{
	int n = vsnprintf(err_msg, sizeof err_msg, fmt, ap);
	if (suffix && n >= 0 && (size_t)n < sizeof err_msg)
		snprintf(err_msg + n, sizeof err_msg - (size_t)n, ": %s", suffix);
	err_code = code;
	return code;
}

int ss_fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(code, NULL, fmt, ap);
	va_end(ap);
	return code;
}

int ss_fail_errno(const char *fmt, ...)
{
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vfail(ss_errno_code(e), strerror(e), fmt, ap);
	va_end(ap);
	return err_code;
}

const char *ss_errmsg(int code)
{
	if (err_code == code && err_msg[0])
		return err_msg;
	return ss_strerror(code);
}

_Noreturn void ss_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "assertion failed: %s (%s:%d)\n", expr, file, line);
	abort();
}
