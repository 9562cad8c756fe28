/*
 * util — errors, growable bounded buffers, logging, paths, formatting, time.
 *
 * Errors follow libuv: functions return int, 0 on success or a negative
 * SS_E* code.  The human message (git style: lower case, says what failed and
 * on what) is kept in a thread-local slot by ss_fail(), so the caller that
 * finally reports the error prints one clear line with ss_errmsg().
 */
#ifndef SS_UTIL_H
#define SS_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* X-macro: one list gives each code its default text. */
#define SS_ERRORS(X)                                              \
	X(SS_EIO, -1, "input/output error")                      \
	X(SS_ENOMEM, -2, "out of memory")                        \
	X(SS_EPROTO, -3, "protocol error")                        \
	X(SS_ETOOBIG, -4, "too big")                              \
	X(SS_ECORRUPT, -5, "corrupt data")                        \
	X(SS_ENOENT, -6, "no such file")                          \
	X(SS_EINVAL, -7, "invalid argument")                      \
	X(SS_ENOSPC, -8, "no space left on device")               \
	X(SS_ETLS, -9, "tls error")                               \
	X(SS_EAUTH, -10, "not authorized")                        \
	X(SS_EBUSY, -11, "busy")                                  \
	X(SS_EEXIST, -12, "already exists")                       \
	X(SS_ECLOSED, -13, "connection closed")                   \
	X(SS_EFORMAT, -14, "unsupported format")                  \
	X(SS_EPERM, -15, "permission denied")                     \
	X(SS_ETIMEDOUT, -16, "timed out")                         \
	X(SS_EREMOTE, -17, "server error")                        \
	X(SS_EUNAVAIL, -18, "quorum unavailable")

enum {
#define SS_X(name, val, text) name = val,
	SS_ERRORS(SS_X)
#undef SS_X
};

const char *ss_strerror(int code);
/* Record a formatted message for the current thread and return code. */
int ss_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like ss_fail, appending ": strerror(errno)"; maps errno to an SS_E code. */
int ss_fail_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Message of the last ss_fail on this thread (or the code's text). */
const char *ss_errmsg(int code);
int ss_errno_code(int err);

/* ---- logging (stderr, or log_fd) ---- */
enum { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern int log_level;
extern int log_fd; /* where lines go: 2 (stderr) unless a program redirects them */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/*
 * buf — a growable byte buffer with a hard maximum (curl's dynbuf).
 * buf_free releases the storage; buf_detach hands it to the caller.
 */
typedef struct buf {
	uint8_t *p;
	size_t len, cap, max;
} buf;

void buf_init(buf *b, size_t max);
void buf_free(buf *b);
void buf_reset(buf *b);
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *p, size_t n);
uint8_t *buf_detach(buf *b, size_t *len);

/* ---- idset: a set of 32-byte ids (idset.c); zero-initialise, idset_free ---- */
#define IDSET_KEY 32
typedef struct idset {
	uint8_t (*v)[IDSET_KEY];
	size_t cap, n;
} idset;
/* Add id; true if it was there already. */
bool idset_add(idset *set, const uint8_t id[IDSET_KEY]);
bool idset_has(const idset *set, const uint8_t id[IDSET_KEY]);
void idset_clear(idset *set); /* empty, keeping the memory */
void idset_free(idset *set);

/* ---- memory ---- */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* ---- hex, formatting ---- */
void hex_encode(const uint8_t *p, size_t n, char *out); /* out: 2n+1 */
int hex_decode(const char *s, uint8_t *out, size_t n);  /* exact 2n chars */
/* "1.5 MiB", "312 B" — out must hold 16 bytes */
void fmt_size(uint64_t bytes, char out[16]);
void fmt_duration(double secs, char out[16]);
/* Copy src into dst (n bytes, NUL-terminated, cut if need be); false if cut. */
bool str_copy(char *dst, size_t n, const char *src);

/* ---- time ---- */
double now_mono(void);     /* seconds, CLOCK_MONOTONIC */
int64_t now_wall_ns(void); /* CLOCK_REALTIME in ns */

/* ---- remote paths ----
 * A remote path is relative, '/'-separated, with no empty, "." or ".."
 * components, no NUL (checked by length), components ≤ 255 bytes, whole path
 * ≤ SS_PATH_MAX.  Returns 0 or SS_EINVAL with a message saying why. */
#define SS_PATH_MAX 4096
#define SS_NAME_MAX 255
int path_check(const char *p, size_t len);
/* Join a/b into out (bounded); returns SS_ETOOBIG if it does not fit. */
int path_join(char *out, size_t outsz, const char *a, const char *b);

/* ---- file helpers ---- */
int write_full(int fd, const void *p, size_t n);
int pread_full(int fd, void *p, size_t n, uint64_t off);
int fsync_dir(const char *dir);
/* Durable atomic write: tmp file, fsync, rename, fsync dir. */
int write_file_atomic(const char *path, const void *p, size_t n, int mode);
int read_file_small(const char *path, buf *out); /* bounded by out->max */
int mkdir_p(const char *dir, int mode);

/* ---- little-endian helpers ---- */
static inline void le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Assertions stay on in production (TigerBeetle). */
#define SS_ASSERT(c) ((c) ? (void)0 : ss_assert_fail(#c, __FILE__, __LINE__))
_Noreturn void ss_assert_fail(const char *expr, const char *file, int line);

#endif
