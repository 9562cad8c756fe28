/* file.c — full reads and writes, durable atomic replace, directories. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int write_full(int fd, const void *p, size_t n)
{
	const uint8_t *q = p;
	while (n) {
		ssize_t w = write(fd, q, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return ss_fail_errno("write failed");
		}
		q += w;
		n -= (size_t)w;
	}
	return 0;
}

int pread_full(int fd, void *p, size_t n, uint64_t off)
{
	uint8_t *q = p;
	while (n) {
		ssize_t r = pread(fd, q, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return ss_fail_errno("read failed");
		}
		if (r == 0)
			return ss_fail(SS_EIO, "unexpected end of file");
		q += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ss_fail_errno("cannot open directory %s", dir);
	int rc = 0;
	if (fsync(fd) < 0)
		rc = ss_fail_errno("cannot fsync directory %s", dir);
	close(fd);
	return rc;
}

int write_file_atomic(const char *path, const void *p, size_t n, int mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return ss_fail(SS_ETOOBIG, "path too long: %s", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return ss_fail_errno("cannot create %s", tmp);
	int rc = write_full(fd, p, n);
	if (!rc && fsync(fd) < 0)
		rc = ss_fail_errno("cannot fsync %s", tmp);
	close(fd);
	if (!rc && rename(tmp, path) < 0)
		rc = ss_fail_errno("cannot rename %s", tmp);
	if (rc) {
		unlink(tmp);
		return rc;
	}
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	else
		strcpy(dir, ".");
	return fsync_dir(dir);
}

int read_file_small(const char *path, buf *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ss_fail_errno("cannot open %s", path);
	int rc = 0;
	for (;;) {
		if ((rc = buf_reserve(out, 4096)))
			break;
		ssize_t r = read(fd, out->p + out->len, out->cap - out->len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = ss_fail_errno("cannot read %s", path);
			break;
		}
		if (r == 0)
			break;
		out->len += (size_t)r;
	}
	close(fd);
	return rc;
}

int mkdir_p(const char *dir, int mode)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
		return ss_fail(SS_ETOOBIG, "path too long: %s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST)
			return ss_fail_errno("cannot create directory %s", tmp);
		*p = '/';
	}
	if (mkdir(tmp, (mode_t)mode) < 0 && errno != EEXIST)
		return ss_fail_errno("cannot create directory %s", tmp);
	return 0;
}
