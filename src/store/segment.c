/*
 * segment.c — append-only segment files seg/NNNNNNNN.seg (8 decimal digits,
 * numbered from 1 upwards).
 *
 * Segment file header (16 bytes):
 *
 *   offset  size  field
 *   ------  ----  ---------------------------------------------------------
 *   0       4     magic "SSSG"
 *   4       4     format version, u32 LE (SEG_VERSION = 1)
 *   8       4     segment number, u32 LE (equals the number in the name)
 *   12      4     reserved, 0
 *
 * Then records, back to back, no padding.  Record (48 + length bytes):
 *
 *   offset  size    field
 *   ------  ------  -------------------------------------------------------
 *   0       4       magic "SSCK"
 *   4       4       flags, u32 LE: 0 in format 1 (bit 0 is kept for zstd
 *                   later; a writer setting any flag must bump STORE_FORMAT,
 *                   because this reader treats a non-zero flag as a torn
 *                   record and cuts the file there)
 *   8       4       length of the stored bytes, u32 LE, ≤ SEG_CHUNK_MAX
 *   12      4       reserved, 0
 *   16      32      chunk id = SHA-256 of the stored bytes
 *   48      length  the chunk's bytes, raw
 *
 * A record is whole when its header is well-formed, its bytes fit in the
 * file and their SHA-256 equals the id; nothing else (no CRC) is needed,
 * since the hash covers the bytes and a wrong length yields a wrong hash.
 * Any whole record is genuinely the chunk its id names, so recovery may
 * index whatever whole records it finds.
 *
 * Costs and limits: an append is one pwritev (the caller has hashed the
 * bytes already); a read is two preads and one SHA-256 (~2 GB/s), on every
 * read, so corruption on disk is never served.  At most SEG_OPEN_MAX file
 * descriptors stay open for reads; idle, clean ones are closed first.
 */
#include "segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store.h"

typedef struct seg_ent {
	uint32_t num;
	int fd;          /* -1 while closed */
	unsigned users;  /* threads using fd outside the lock: it stays open */
	uint64_t size;   /* end of the last whole record: the append point */
	uint64_t synced; /* bytes covered by the last successful fsync */
	uint64_t used;   /* tick of the last use, to pick an fd to close */
	bool sealed;     /* no more appends */
	bool lost;       /* an fsync failed */
	bool dying;      /* seg_remove: no new readers, waiting for the last */
	bool damaged;    /* kept read-only by recovery: never collected */
} seg_ent;

struct seg_set {
	char dir[PATH_MAX - 32]; /* room for "/NNNNNNNN.seg" */
	pthread_mutex_t append_mu; /* one append at a time; taken before mu */
	pthread_mutex_t mu;        /* the table and every seg_ent field */
	pthread_cond_t idle_cv;    /* a dying segment's last user left */
	seg_ent *v;                /* sorted by num; new segments go last */
	uint64_t max;              /* roll past this size */
	unsigned n, cap;
	unsigned nopen;
	uint64_t tick;
	bool dir_dirty; /* a segment was created since the last directory fsync */
};

void seg_id_abbrev(const uint8_t id[HASH_LEN], char out[SEG_ID_ABBREV])
{
	hex_encode(id, 4, out);
	memcpy(out + 8, "\xe2\x80\xa6", 4); /* "…" and the NUL */
}

static void seg_path(const seg_set *ss, uint32_t num, char out[PATH_MAX])
{
	snprintf(out, PATH_MAX, "%s/%08u.seg", ss->dir, num);
}

static void seg_file_header(uint8_t h[SEG_FILE_HDR], uint32_t num)
{
	memcpy(h, SEG_FILE_MAGIC, 4);
	le32(h + 4, SEG_VERSION);
	le32(h + 8, num);
	le32(h + 12, 0);
}

/* pread until n bytes or end of file: bytes read, or -1 with errno set. */
static ssize_t seg_pread(int fd, void *p, size_t n, uint64_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, (uint8_t *)p + got, n - got, (off_t)(off + got));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int seg_pwritev_full(int fd, struct iovec *iov, int n, uint64_t off)
{
	while (n > 0) {
		ssize_t w = pwritev(fd, iov, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += (uint64_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Index of segment num in the table, or -1.  Caller holds mu. */
static int seg_find(const seg_set *ss, uint32_t num)
{
	unsigned lo = 0, hi = ss->n;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (ss->v[mid].num < num)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < ss->n && ss->v[lo].num == num ? (int)lo : -1;
}

/* Close the least recently used idle fd if too many are open.  Only clean
 * segments qualify: a dirty one's fd is the one seg_sync will fsync. */
static void seg_evict(seg_set *ss)
{
	while (ss->nopen > SEG_OPEN_MAX) {
		int best = -1;
		for (unsigned i = 0; i + 1 < ss->n; i++) {
			seg_ent *e = &ss->v[i];
			if (e->fd < 0 || e->users || e->synced < e->size)
				continue;
			if (best < 0 || e->used < ss->v[best].used)
				best = (int)i;
		}
		if (best < 0)
			return; /* all busy: stay over the limit for now */
		close(ss->v[best].fd);
		ss->v[best].fd = -1;
		ss->nopen--;
	}
}

/* Pin segment idx's fd (opening it if needed).  Caller holds mu. */
static int seg_pin(seg_set *ss, unsigned idx, int *fd)
{
	seg_ent *e = &ss->v[idx];
	if (e->fd < 0) {
		char path[PATH_MAX];
		seg_path(ss, e->num, path);
		int f = open(path, O_RDWR | O_CLOEXEC);
		if (f < 0)
			return ss_fail_errno("cannot open segment %08u", e->num);
		e->fd = f;
		ss->nopen++;
	}
	/* Pinned before evicting, so the fd just opened is not the one
	 * closed to make room. */
	e->users++;
	e->used = ++ss->tick;
	*fd = e->fd;
	seg_evict(ss);
	return 0;
}

static void seg_unpin(seg_set *ss, uint32_t num)
{
	int i = seg_find(ss, num);
	SS_ASSERT(i >= 0 && ss->v[i].users > 0);
	if (--ss->v[i].users == 0 && ss->v[i].dying)
		pthread_cond_broadcast(&ss->idle_cv);
}

static int seg_num_cmp(const void *a, const void *b)
{
	uint32_t x = ((const seg_ent *)a)->num, y = ((const seg_ent *)b)->num;
	return x < y ? -1 : x > y;
}

static void seg_push(seg_set *ss, uint32_t num, uint64_t size)
{
	if (ss->n == ss->cap) {
		ss->cap = ss->cap ? ss->cap * 2 : 16;
		ss->v = xrealloc(ss->v, ss->cap * sizeof *ss->v);
	}
	ss->v[ss->n++] = (seg_ent){.num = num, .fd = -1, .size = size, .synced = size};
}

/* A segment file name is exactly eight digits and ".seg". */
static bool seg_parse_name(const char *name, uint32_t *num)
{
	if (strlen(name) != 12 || strcmp(name + 8, ".seg"))
		return false;
	uint32_t v = 0;
	for (int i = 0; i < 8; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (uint32_t)(name[i] - '0');
	}
	*num = v;
	return v > 0;
}

int seg_open(const char *dir, seg_set **out)
{
	seg_set *ss = xcalloc(1, sizeof *ss);
	if (snprintf(ss->dir, sizeof ss->dir, "%s", dir) >= (int)sizeof ss->dir) {
		free(ss);
		return ss_fail(SS_ETOOBIG, "path too long: %s", dir);
	}
	DIR *d = opendir(dir);
	if (!d) {
		free(ss);
		return ss_fail_errno("cannot open segment directory %s", dir);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		uint32_t num;
		if (!seg_parse_name(de->d_name, &num))
			continue;
		char path[PATH_MAX];
		struct stat sb;
		seg_path(ss, num, path);
		if (stat(path, &sb) < 0) {
			int rc = ss_fail_errno("cannot stat segment %s", path);
			closedir(d);
			free(ss->v);
			free(ss);
			return rc;
		}
		seg_push(ss, num, (uint64_t)sb.st_size);
	}
	closedir(d);
	if (ss->n)
		qsort(ss->v, ss->n, sizeof *ss->v, seg_num_cmp);
	/* Only the newest segment takes appends; recovery decides whether it
	 * still can. */
	for (unsigned i = 0; i + 1 < ss->n; i++)
		ss->v[i].sealed = true;
	pthread_mutex_init(&ss->append_mu, NULL);
	pthread_mutex_init(&ss->mu, NULL);
	pthread_cond_init(&ss->idle_cv, NULL);
	ss->max = STORE_SEGMENT_MAX;
	*out = ss;
	return 0;
}

void seg_power_cut(seg_set *ss, unsigned keep_permille)
{
	pthread_mutex_lock(&ss->mu);
	for (unsigned i = 0; i < ss->n; i++) {
		seg_ent *e = &ss->v[i];
		if (e->synced >= e->size || e->fd < 0)
			continue;
		uint64_t keep = e->synced + (e->size - e->synced) * MIN(keep_permille, 1000u) / 1000;
		if (ftruncate(e->fd, (off_t)keep) < 0)
			log_warn("power cut of segment %08u: %s", e->num, strerror(errno));
		e->size = keep;
	}
	pthread_mutex_unlock(&ss->mu);
}

void seg_close(seg_set *ss)
{
	if (!ss)
		return;
	for (unsigned i = 0; i < ss->n; i++) {
		SS_ASSERT(ss->v[i].users == 0);
		if (ss->v[i].fd >= 0)
			close(ss->v[i].fd);
	}
	pthread_mutex_destroy(&ss->append_mu);
	pthread_mutex_destroy(&ss->mu);
	pthread_cond_destroy(&ss->idle_cv);
	free(ss->v);
	free(ss);
}

unsigned seg_count(seg_set *ss)
{
	pthread_mutex_lock(&ss->mu);
	unsigned n = ss->n;
	pthread_mutex_unlock(&ss->mu);
	return n;
}

uint32_t seg_num_at(seg_set *ss, unsigned i)
{
	pthread_mutex_lock(&ss->mu);
	SS_ASSERT(i < ss->n);
	uint32_t num = ss->v[i].num;
	pthread_mutex_unlock(&ss->mu);
	return num;
}

bool seg_lost(seg_set *ss, uint32_t num)
{
	pthread_mutex_lock(&ss->mu);
	int i = seg_find(ss, num);
	bool lost = i >= 0 && ss->v[i].lost;
	pthread_mutex_unlock(&ss->mu);
	return lost;
}

/* Replace an empty or torn file header (a crash right after creating the
 * file) by a fresh one. */
static int seg_reinit(int fd, uint32_t num)
{
	uint8_t h[SEG_FILE_HDR];
	seg_file_header(h, num);
	struct iovec iov = {h, sizeof h};
	if (ftruncate(fd, 0) < 0 || seg_pwritev_full(fd, &iov, 1, 0) < 0 || fsync(fd) < 0)
		return ss_fail_errno("cannot rewrite the header of segment %08u", num);
	return 0;
}

/* Scan records from start up to fsize; returns the end of the last whole
 * record in *end. */
static int seg_scan(uint32_t num, int fd, uint64_t start, uint64_t fsize, seg_found_fn fn, void *ctx,
		    uint64_t *end)
{
	uint8_t *data = xmalloc(SEG_CHUNK_MAX);
	uint64_t pos = start;
	int rc = 0;
	while (fsize - pos >= SEG_REC_HDR) {
		uint8_t h[SEG_REC_HDR], sum[HASH_LEN];
		ssize_t r = seg_pread(fd, h, sizeof h, pos);
		if (r < 0) {
			rc = ss_fail_errno("cannot read segment %08u at offset %llu", num, (unsigned long long)pos);
			break;
		}
		uint32_t len = rd32(h + 8);
		if (r != SEG_REC_HDR || memcmp(h, SEG_REC_MAGIC, 4) || rd32(h + 4) || rd32(h + 12) ||
		    len > SEG_CHUNK_MAX || len > fsize - pos - SEG_REC_HDR)
			break;
		r = seg_pread(fd, data, len, pos + SEG_REC_HDR);
		if (r < 0) {
			rc = ss_fail_errno("cannot read segment %08u at offset %llu", num, (unsigned long long)pos);
			break;
		}
		if ((size_t)r != len)
			break;
		sha256(data, len, sum);
		if (memcmp(sum, h + 16, HASH_LEN))
			break;
		seg_loc loc = {.seg = num, .len = len, .off = pos};
		if ((rc = fn(ctx, &loc, h + 16)))
			break;
		pos += SEG_REC_HDR + len;
	}
	free(data);
	*end = pos;
	return rc == SEG_CUT ? 0 : rc;
}

int seg_recover(seg_set *ss, uint32_t num, uint64_t indexed_end, seg_found_fn fn, void *ctx)
{
	int fd, rc;
	pthread_mutex_lock(&ss->mu);
	int idx = seg_find(ss, num);
	SS_ASSERT(idx >= 0);
	rc = seg_pin(ss, (unsigned)idx, &fd);
	pthread_mutex_unlock(&ss->mu);
	if (rc)
		return rc;

	bool seal = false;
	uint64_t fsize, end;
	struct stat sb;
	uint8_t h[SEG_FILE_HDR], want[SEG_FILE_HDR];
	ssize_t r;
	if (fstat(fd, &sb) < 0) {
		rc = ss_fail_errno("cannot stat segment %08u", num);
		goto out;
	}
	fsize = (uint64_t)sb.st_size;
	seg_file_header(want, num);
	if ((r = seg_pread(fd, h, sizeof h, 0)) < 0) {
		rc = ss_fail_errno("cannot read segment %08u", num);
		goto out;
	}
	if (r != SEG_FILE_HDR || memcmp(h, want, sizeof h)) {
		static const uint8_t zero[SEG_FILE_HDR];
		bool torn = r < SEG_FILE_HDR || !memcmp(h, zero, sizeof h);
		if (torn && indexed_end == 0) {
			/* A crash right after the file was created, before its
			 * header reached the disk: nothing was ever indexed here. */
			if ((rc = seg_reinit(fd, num)))
				goto out;
			fsize = end = SEG_FILE_HDR;
			goto done;
		}
		/* Not a file this store wrote as segment num (or a damaged
		 * one): keep it for whatever still verifies, never append. */
		log_warn("segment %08u has a damaged or foreign header; keeping it read-only", num);
		end = fsize;
		seal = true;
		goto done;
	}
	uint64_t start = indexed_end ? indexed_end : SEG_FILE_HDR;
	if (start > fsize) {
		log_warn("segment %08u is %llu bytes but its index reaches %llu: the chunks past the end will "
			 "read as corrupt; keeping it read-only",
			 num, (unsigned long long)fsize, (unsigned long long)start);
		end = fsize;
		seal = true;
		goto done;
	}
	if (start == fsize) {
		end = fsize;
		goto done;
	}
	/* Bytes past the index may still sit in the page cache only (the last
	 * server crashed, the kernel did not): make them durable before they
	 * are reported and indexed. */
	if (fsync(fd) < 0) {
		rc = ss_fail_errno("cannot fsync segment %08u", num);
		goto out;
	}
	if ((rc = seg_scan(num, fd, start, fsize, fn, ctx, &end)))
		goto out;
	if (end < fsize) {
		log_warn("segment %08u: cutting a torn tail at offset %llu (%llu bytes)", num,
			 (unsigned long long)end, (unsigned long long)(fsize - end));
		if (ftruncate(fd, (off_t)end) < 0 || fsync(fd) < 0) {
			rc = ss_fail_errno("cannot cut the torn tail of segment %08u", num);
			goto out;
		}
	}
done:
	pthread_mutex_lock(&ss->mu);
	ss->v[idx].size = ss->v[idx].synced = end;
	if (seal)
		ss->v[idx].sealed = ss->v[idx].damaged = true;
	pthread_mutex_unlock(&ss->mu);
out:
	pthread_mutex_lock(&ss->mu);
	seg_unpin(ss, num);
	pthread_mutex_unlock(&ss->mu);
	return rc;
}

/* Create the next segment file with its header.  Caller holds mu (and
 * append_mu); the new file becomes the active segment. */
static int seg_create(seg_set *ss)
{
	uint32_t num = ss->n ? ss->v[ss->n - 1].num + 1 : 1;
	if (num > 99999999)
		return ss_fail(SS_ETOOBIG, "segment numbers exhausted in %s", ss->dir);
	char path[PATH_MAX];
	seg_path(ss, num, path);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return ss_fail_errno("cannot create segment %s", path);
	uint8_t h[SEG_FILE_HDR];
	seg_file_header(h, num);
	struct iovec iov = {h, sizeof h};
	if (seg_pwritev_full(fd, &iov, 1, 0) < 0) {
		int rc = ss_fail_errno("cannot write segment %s", path);
		close(fd);
		unlink(path);
		return rc;
	}
	if (ss->n)
		ss->v[ss->n - 1].sealed = true;
	seg_push(ss, num, SEG_FILE_HDR);
	seg_ent *e = &ss->v[ss->n - 1];
	e->fd = fd;
	e->synced = 0; /* the header itself needs the next fsync */
	ss->nopen++;
	ss->dir_dirty = true;
	seg_evict(ss);
	return 0;
}

int seg_roll(seg_set *ss)
{
	pthread_mutex_lock(&ss->append_mu);
	pthread_mutex_lock(&ss->mu);
	int rc = seg_create(ss);
	pthread_mutex_unlock(&ss->mu);
	pthread_mutex_unlock(&ss->append_mu);
	return rc;
}

int seg_append(seg_set *ss, const uint8_t id[HASH_LEN], const void *data, uint32_t len, seg_loc *loc)
{
	SS_ASSERT(len <= SEG_CHUNK_MAX);
	int rc = 0, fd;
	uint32_t num;
	uint64_t off;
	pthread_mutex_lock(&ss->append_mu);
	pthread_mutex_lock(&ss->mu);
	seg_ent *e = ss->n ? &ss->v[ss->n - 1] : NULL;
	if (!e || e->sealed || (e->size > SEG_FILE_HDR && e->size + SEG_REC_HDR + len > ss->max)) {
		if ((rc = seg_create(ss))) {
			pthread_mutex_unlock(&ss->mu);
			goto out;
		}
	}
	num = ss->v[ss->n - 1].num;
	off = ss->v[ss->n - 1].size;
	rc = seg_pin(ss, ss->n - 1, &fd);
	pthread_mutex_unlock(&ss->mu);
	if (rc)
		goto out;

	uint8_t h[SEG_REC_HDR];
	memcpy(h, SEG_REC_MAGIC, 4);
	le32(h + 4, 0);
	le32(h + 8, len);
	le32(h + 12, 0);
	memcpy(h + 16, id, HASH_LEN);
	struct iovec iov[2] = {{h, sizeof h}, {(void *)data, len}};
	bool seal = false;
	if (seg_pwritev_full(fd, iov, len ? 2 : 1, off) < 0) {
		char ab[SEG_ID_ABBREV];
		seg_id_abbrev(id, ab);
		rc = ss_fail_errno("cannot store chunk %s in segment %08u", ab, num);
		/* Cut the partial record so the space comes back and the file
		 * ends with a whole record.  If even that fails, the next append
		 * starts a new segment; recovery cuts this tail at open. */
		int saved = errno;
		if (ftruncate(fd, (off_t)off) < 0)
			seal = true;
		errno = saved;
	}
	pthread_mutex_lock(&ss->mu);
	int i = seg_find(ss, num);
	if (!rc) {
		ss->v[i].size = off + SEG_REC_HDR + len;
		*loc = (seg_loc){.seg = num, .len = len, .off = off};
	}
	if (seal)
		ss->v[i].sealed = true;
	seg_unpin(ss, num);
	pthread_mutex_unlock(&ss->mu);
out:
	pthread_mutex_unlock(&ss->append_mu);
	return rc;
}

typedef struct seg_dirty {
	uint32_t num;
	int fd;
	uint64_t size;
} seg_dirty;

int seg_sync(seg_set *ss)
{
	int rc = 0;
	pthread_mutex_lock(&ss->mu);
	bool dir = ss->dir_dirty;
	ss->dir_dirty = false;
	unsigned n = 0;
	for (unsigned i = 0; i < ss->n; i++)
		if (ss->v[i].synced < ss->v[i].size && !ss->v[i].lost)
			n++;
	seg_dirty *d = n ? xmalloc(n * sizeof *d) : NULL;
	n = 0;
	for (unsigned i = 0; i < ss->n; i++) {
		seg_ent *e = &ss->v[i];
		if (e->synced >= e->size || e->lost)
			continue;
		/* A dirty segment's fd is never evicted, so pinning opens
		 * nothing; it keeps the fd for the fsync below. */
		int fd;
		SS_ASSERT(e->fd >= 0);
		seg_pin(ss, i, &fd);
		d[n++] = (seg_dirty){e->num, fd, e->size};
	}
	pthread_mutex_unlock(&ss->mu);

	/* fsync outside the lock: appends go on meanwhile, and only what was
	 * written before the snapshot above is claimed durable. */
	for (unsigned i = 0; i < n; i++) {
		int frc = 0;
		if (fsync(d[i].fd) < 0)
			frc = ss_fail_errno("cannot fsync segment %08u", d[i].num);
		pthread_mutex_lock(&ss->mu);
		seg_ent *e = &ss->v[seg_find(ss, d[i].num)];
		if (frc) {
			/* After a failed fsync the kernel may have dropped the
			 * dirty pages and will not report it again: never trust
			 * this segment's unsynced records. */
			e->lost = e->sealed = true;
			e->synced = e->size;
			if (!rc)
				rc = frc;
		} else if (e->synced < d[i].size) {
			e->synced = d[i].size;
		}
		seg_unpin(ss, d[i].num);
		pthread_mutex_unlock(&ss->mu);
	}
	free(d);
	if (dir) {
		int drc = fsync_dir(ss->dir);
		if (drc) {
			pthread_mutex_lock(&ss->mu);
			ss->dir_dirty = true;
			pthread_mutex_unlock(&ss->mu);
			if (!rc)
				rc = drc;
		}
	}
	return rc;
}

int seg_read(seg_set *ss, const seg_loc *loc, const uint8_t id[HASH_LEN], buf *out)
{
	char ab[SEG_ID_ABBREV];
	int fd, rc;
	buf_reset(out);
	pthread_mutex_lock(&ss->mu);
	int idx = seg_find(ss, loc->seg);
	/* A segment being removed (store_gc) reads as missing: its records
	 * were moved or dropped, and the caller looks the chunk up again. */
	rc = idx < 0 || ss->v[idx].dying ? SS_ENOENT : seg_pin(ss, (unsigned)idx, &fd);
	pthread_mutex_unlock(&ss->mu);
	if (rc) {
		seg_id_abbrev(id, ab);
		if (rc == SS_ENOENT)
			return ss_fail(SS_ECORRUPT, "chunk %s: corrupt on disk (segment %08u is missing)", ab,
				       loc->seg);
		return rc;
	}

	uint8_t h[SEG_REC_HDR], sum[HASH_LEN];
	ssize_t r = seg_pread(fd, h, sizeof h, loc->off);
	if (r == SEG_REC_HDR && !memcmp(h, SEG_REC_MAGIC, 4) && !rd32(h + 4) && !rd32(h + 12) &&
	    rd32(h + 8) == loc->len && !memcmp(h + 16, id, HASH_LEN)) {
		if ((rc = buf_reserve(out, loc->len)))
			goto out;
		r = seg_pread(fd, out->p, loc->len, loc->off + SEG_REC_HDR);
		if (r == (ssize_t)loc->len) {
			sha256(out->p, loc->len, sum);
			if (!memcmp(sum, id, HASH_LEN)) {
				out->len = loc->len;
				goto out;
			}
		}
	}
	seg_id_abbrev(id, ab);
	if (r < 0)
		rc = ss_fail_errno("cannot read chunk %s (segment %08u offset %llu)", ab, loc->seg,
				   (unsigned long long)loc->off);
	else
		rc = ss_fail(SS_ECORRUPT, "chunk %s: corrupt on disk (segment %08u offset %llu)", ab, loc->seg,
			     (unsigned long long)loc->off);
out:
	pthread_mutex_lock(&ss->mu);
	seg_unpin(ss, loc->seg);
	pthread_mutex_unlock(&ss->mu);
	return rc;
}

/* ---- for garbage collection and leases ---- */

void seg_position(seg_set *ss, uint32_t *num, uint64_t *off)
{
	pthread_mutex_lock(&ss->mu);
	if (!ss->n) {
		*num = 0;
		*off = 0;
	} else if (ss->v[ss->n - 1].sealed) {
		/* The next append creates the next segment. */
		*num = ss->v[ss->n - 1].num + 1;
		*off = 0;
	} else {
		*num = ss->v[ss->n - 1].num;
		*off = ss->v[ss->n - 1].size;
	}
	pthread_mutex_unlock(&ss->mu);
}

void seg_set_max(seg_set *ss, uint64_t max)
{
	pthread_mutex_lock(&ss->append_mu);
	pthread_mutex_lock(&ss->mu);
	ss->max = max;
	pthread_mutex_unlock(&ss->mu);
	pthread_mutex_unlock(&ss->append_mu);
}

int seg_info(seg_set *ss, uint32_t num, uint64_t *size, bool *sealed, bool *damaged)
{
	pthread_mutex_lock(&ss->mu);
	int i = seg_find(ss, num);
	if (i >= 0) {
		*size = ss->v[i].size;
		*sealed = ss->v[i].sealed;
		*damaged = ss->v[i].damaged;
	}
	pthread_mutex_unlock(&ss->mu);
	return i >= 0 ? 0 : SS_ENOENT;
}

uint64_t seg_total(seg_set *ss)
{
	uint64_t total = 0;
	pthread_mutex_lock(&ss->mu);
	for (unsigned i = 0; i < ss->n; i++)
		total += ss->v[i].size;
	pthread_mutex_unlock(&ss->mu);
	return total;
}

int seg_remove(seg_set *ss, uint32_t num)
{
	pthread_mutex_lock(&ss->mu);
	int i = seg_find(ss, num);
	if (i < 0 || (unsigned)i + 1 == ss->n || !ss->v[i].sealed) {
		pthread_mutex_unlock(&ss->mu);
		return ss_fail(SS_EINVAL, "cannot remove segment %08u: %s", num,
			       i < 0 ? "no such segment" : "it is the newest one");
	}
	ss->v[i].dying = true;
	/* Readers that pinned it before finish; the table may grow meanwhile
	 * (new segments go last), so look it up again after each wait. */
	while (ss->v[i].users) {
		pthread_cond_wait(&ss->idle_cv, &ss->mu);
		i = seg_find(ss, num);
		SS_ASSERT(i >= 0);
	}
	if (ss->v[i].fd >= 0) {
		close(ss->v[i].fd);
		ss->nopen--;
	}
	memmove(&ss->v[i], &ss->v[i + 1], (ss->n - (unsigned)i - 1) * sizeof *ss->v);
	ss->n--;
	pthread_mutex_unlock(&ss->mu);

	char path[PATH_MAX];
	seg_path(ss, num, path);
	if (unlink(path) < 0 && errno != ENOENT)
		return ss_fail_errno("cannot delete segment %s", path);
	return fsync_dir(ss->dir);
}
