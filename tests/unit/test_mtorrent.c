/*
 * test_mtorrent.c — the .mtorrent format (round trip, every refusal with its
 * message, forward compatibility, limits), its durable file I/O, and the
 * client shell's word splitter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "swarm/cmdline.h"
#include "swarm/mtorrent.h"
#include "util/util.h"

#define HDR "syncstore-mtorrent 1\n"
#define NAME "name report final.pdf\n"
#define SIZE "size 123456\n"
#define CHUNK "chunking fastcdc 8192 32768 131072 gear-v1\n"
#define HEX "3f9a000102030405060708090a0b0c0d0e0f101112131415161718191a1b1cff"
#define ROOT "root " HEX "\n"
#define TR1 "tracker 127.0.0.1:7001\n"
#define TR2 "tracker 127.0.0.1:7002\n"
#define VALID HDR NAME SIZE CHUNK ROOT TR1 TR2

/* rc must be want and the message must contain msg; print it if not. */
static void expect_err(int rc, int want, const char *msg)
{
	const char *got = rc ? ss_errmsg(rc) : "(success)";
	if (rc != want || !strstr(got, msg))
		fail_msg("want %d containing \"%s\", got %d \"%s\"", want, msg, rc, got);
}

static int parse_str(const char *text, mtorrent *t) { return mtorrent_parse(text, strlen(text), t); }

static void sample(mtorrent *t)
{
	memset(t, 0, sizeof *t);
	strcpy(t->name, "report final.pdf");
	t->size = 123456;
	assert_int_equal(hex_decode(HEX, t->root, HASH_LEN), 0);
	strcpy(t->trackers[0], "127.0.0.1:7001");
	strcpy(t->trackers[1], "127.0.0.1:7002");
	t->ntrackers = 2;
}

static void test_format_parse_round_trip(void **state)
{
	mtorrent t, back;
	buf b;
	sample(&t);
	buf_init(&b, MTORRENT_MAX_BYTES);
	assert_int_equal(mtorrent_format(&t, &b), 0);
	assert_int_equal(b.len, strlen(VALID));
	assert_memory_equal(b.p, VALID, b.len);
	assert_int_equal(mtorrent_parse((const char *)b.p, b.len, &back), 0);
	assert_memory_equal(&t, &back, sizeof t);
	buf_free(&b);

	/* Extremes: the largest size, a 255-byte name, eight 127-byte trackers. */
	memset(t.name, 'n', MTORRENT_NAME_MAX);
	t.size = UINT64_MAX;
	for (unsigned i = 0; i < MTORRENT_MAX_TRACKERS; i++) {
		memset(t.trackers[i], 'h', MTORRENT_TRACKER_MAX);
		memcpy(t.trackers[i] + MTORRENT_TRACKER_MAX - 6, ":65535", 6);
	}
	t.ntrackers = MTORRENT_MAX_TRACKERS;
	buf_init(&b, MTORRENT_MAX_BYTES);
	assert_int_equal(mtorrent_format(&t, &b), 0);
	assert_non_null(memmem(b.p, b.len, "size 18446744073709551615\n", 26));
	assert_int_equal(mtorrent_parse((const char *)b.p, b.len, &back), 0);
	assert_memory_equal(&t, &back, sizeof t);
	buf_free(&b);
}

static void test_names(void **state)
{
	const char *ok[] = {"a", "report final.pdf", " lead and trail ", "..hidden", "a..b", "...", "ünïcødé",
			    "\xff\xfe not utf-8", "a\\b", "#not a comment"};
	const char *bad[] = {"", ".", "..", "a/b", "/", "tab\there", "nl\nx", "cr\rx", "del\x7f", "\x01"};
	char text[1024];
	mtorrent t;
	for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
		assert_true(mtorrent_name_ok(ok[i]));
		snprintf(text, sizeof text, HDR "name %s\n" SIZE CHUNK ROOT TR1, ok[i]);
		assert_int_equal(parse_str(text, &t), 0);
		assert_string_equal(t.name, ok[i]);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		assert_false(mtorrent_name_ok(bad[i]));
	char name[MTORRENT_NAME_MAX + 2];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = 0;
	assert_false(mtorrent_name_ok(name));
	name[MTORRENT_NAME_MAX] = 0;
	assert_true(mtorrent_name_ok(name));
}

static void test_accepted_variants(void **state)
{
	mtorrent want, t;
	sample(&want);
	const char *texts[] = {
		/* CRLF line endings */
		"syncstore-mtorrent 1\r\nname report final.pdf\r\nsize 123456\r\n"
		"chunking fastcdc 8192 32768 131072 gear-v1\r\nroot " HEX "\r\n"
		"tracker 127.0.0.1:7001\r\ntracker 127.0.0.1:7002\r\n",
		/* comments, blank lines, any order, unknown keys (with and without a value) */
		HDR "# made by hand\n\n" TR1 ROOT "\n#name other\n" SIZE "comment whatever\nsizes 5\nfuture\n"
		    "Name Other\n" NAME CHUNK TR2 "\n",
		/* upper-case root, leading zeros in the size */
		HDR NAME "size 000123456\n" CHUNK "root 3F9A000102030405060708090A0B0C0D0E0F101112131415161718191A1B1CFF\n"
		    TR1 TR2,
	};
	for (size_t i = 0; i < ARRAY_LEN(texts); i++) {
		expect_err(parse_str(texts[i], &t), 0, "(success)");
		assert_memory_equal(&t, &want, sizeof t);
	}
	expect_err(parse_str(HDR NAME "size 18446744073709551615\n" CHUNK ROOT TR1, &t), 0, "(success)");
	assert_true(t.size == UINT64_MAX);
	expect_err(parse_str(HDR NAME "size 0\n" CHUNK ROOT "tracker [::1]:1\n", &t), 0, "(success)");
	assert_string_equal(t.trackers[0], "[::1]:1");
}

static const struct {
	const char *text;
	int code;
	const char *msg;
} refused[] = {
	{"", SS_EINVAL, "not a .mtorrent file"},
	{"hello\n", SS_EINVAL, "not a .mtorrent file"},
	{"\n" VALID, SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent\n", SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent 0\n", SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent 01\n", SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent 1 \n", SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent 1x\n", SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent  1\n", SS_EINVAL, "not a .mtorrent file"},
	{"syncstore-mtorrent 2\n" NAME SIZE CHUNK ROOT TR1, SS_EFORMAT,
	 ".mtorrent version 2 is newer than this client (1)"},
	{"syncstore-mtorrent 123456789012345678901234567890\n", SS_EFORMAT, "version 1234567890"},
	{HDR SIZE CHUNK ROOT TR1, SS_EINVAL, "no 'name' line"},
	{HDR NAME CHUNK ROOT TR1, SS_EINVAL, "no 'size' line"},
	{HDR NAME SIZE ROOT TR1, SS_EINVAL, "no 'chunking' line"},
	{HDR NAME SIZE CHUNK TR1, SS_EINVAL, "no 'root' line"},
	{HDR NAME SIZE CHUNK ROOT, SS_EINVAL, "no 'tracker' line"},
	{HDR NAME NAME SIZE CHUNK ROOT TR1, SS_EINVAL, "line 3: second 'name' line (the first is line 2)"},
	{HDR NAME SIZE CHUNK "size 1\n" ROOT TR1, SS_EINVAL, "line 5: second 'size' line (the first is line 3)"},
	{HDR NAME SIZE CHUNK CHUNK ROOT TR1, SS_EINVAL, "line 5: second 'chunking' line"},
	{HDR NAME SIZE CHUNK ROOT TR1 ROOT, SS_EINVAL, "line 7: second 'root' line"},
	{HDR "name\n", SS_EINVAL, "line 2: name '' is empty"},
	{HDR "name \n", SS_EINVAL, "line 2: name '' is empty"},
	{HDR "name a/b\n", SS_EINVAL, "line 2: name 'a/b' contains '/'"},
	{HDR "name .\n", SS_EINVAL, "line 2: name '.' cannot be '.' or '..'"},
	{HDR "name ..\r\n", SS_EINVAL, "line 2: name '..' cannot be '.' or '..'"},
	{HDR "name a\tb\n", SS_EINVAL, "line 2: name 'a?b' contains a control character"},
	{HDR "name a\rb\n", SS_EINVAL, "line 2: name 'a?b' contains a control character"},
	{HDR "name a\x7f\n", SS_EINVAL, "line 2: name 'a?' contains a control character"},
	{HDR "name \x1b[2J\n", SS_EINVAL, "line 2: name '?[2J' contains a control character"},
	{HDR "\n" SIZE "size abc\n", SS_EINVAL, "line 4: second 'size' line"},
	{HDR NAME "size abc\n", SS_EINVAL, "line 3: size 'abc' is not a number"},
	{HDR NAME "size\n", SS_EINVAL, "line 3: size '' is not a number"},
	{HDR NAME "size -1\n", SS_EINVAL, "line 3: size '-1' is not a number"},
	{HDR NAME "size +1\n", SS_EINVAL, "line 3: size '+1' is not a number"},
	{HDR NAME "size  1\n", SS_EINVAL, "line 3: size ' 1' is not a number"},
	{HDR NAME "size 1 \n", SS_EINVAL, "line 3: size '1 ' is not a number"},
	{HDR NAME "size 0x10\n", SS_EINVAL, "line 3: size '0x10' is not a number"},
	{HDR NAME "size 1.5\n", SS_EINVAL, "line 3: size '1.5' is not a number"},
	{HDR NAME "size 12\r3\n", SS_EINVAL, "line 3: size '12?3' is not a number"},
	{HDR NAME "size 18446744073709551616\n", SS_EINVAL, "line 3: size '18446744073709551616' is too large"},
	{HDR NAME "size 99999999999999999999999\n", SS_EINVAL, "is too large"},
	{HDR NAME SIZE "chunking fastcdc 8192 32768 131072 gear-v2\n", SS_EFORMAT,
	 "line 4: chunking 'fastcdc 8192 32768 131072 gear-v2' is not supported (this client chunks with "
	 "'fastcdc 8192 32768 131072 gear-v1')"},
	{HDR NAME SIZE "chunking fixed 4096\n", SS_EFORMAT, "chunking 'fixed 4096' is not supported"},
	{HDR NAME SIZE "chunking fastcdc 8192 32768 131072 gear-v1 \n", SS_EFORMAT, "is not supported"},
	{HDR NAME SIZE CHUNK "root " HEX "0\n", SS_EINVAL, "line 5: root '3f9a0001" /* … */},
	{HDR NAME SIZE CHUNK "root 3f9a\n", SS_EINVAL, "line 5: root '3f9a' is not 64 hex digits"},
	{HDR NAME SIZE CHUNK "root g f9a000102030405060708090a0b0c0d0e0f101112131415161718191a1b1cff\n", SS_EINVAL,
	 "is not 64 hex digits"},
	{HDR NAME SIZE CHUNK "root \n", SS_EINVAL, "line 5: root '' is not 64 hex digits"},
	{HDR "tracker\n", SS_EINVAL, "line 2: tracker '' must be 1..127 bytes"},
	{HDR "tracker 127.0.0.1\n", SS_EINVAL, "line 2: tracker '127.0.0.1' is not HOST:PORT"},
	{HDR "tracker :7001\n", SS_EINVAL, "line 2: tracker ':7001' is not HOST:PORT"},
	{HDR "tracker host:\n", SS_EINVAL, "line 2: tracker 'host:' has no port in 1..65535"},
	{HDR "tracker host:0\n", SS_EINVAL, "has no port in 1..65535"},
	{HDR "tracker host:65536\n", SS_EINVAL, "has no port in 1..65535"},
	{HDR "tracker host:70a\n", SS_EINVAL, "has no port in 1..65535"},
	{HDR "tracker host:-1\n", SS_EINVAL, "has no port in 1..65535"},
	{HDR "tracker a b:1\n", SS_EINVAL, "line 2: tracker 'a b:1' contains a space or a control character"},
	{HDR "tracker a:1 \n", SS_EINVAL, "contains a space"},
	{HDR TR1 TR1 TR1 TR1 TR1 TR1 TR1 TR1 TR1, SS_EINVAL, "line 10: more than 8 trackers"},
	{VALID "x", SS_EINVAL, "line 8: no newline at the end (truncated file?)"},
	{HDR NAME CHUNK ROOT TR1 "size 12", SS_EINVAL, "line 6: no newline at the end"},
	{HDR NAME SIZE CHUNK ROOT "tracker 127.0.0.1:70", SS_EINVAL, "line 6: no newline at the end"},
	{"syncstore-mtorrent 1", SS_EINVAL, "line 1: no newline at the end"},
};

static void test_refused(void **state)
{
	mtorrent t, zero;
	memset(&zero, 0, sizeof zero);
	for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
		memset(&t, 0xa5, sizeof t);
		expect_err(parse_str(refused[i].text, &t), refused[i].code, refused[i].msg);
		assert_memory_equal(&t, &zero, sizeof t);
		/* One line, nothing that could drive a terminal. */
		const char *m = ss_errmsg(refused[i].code);
		for (size_t k = 0; m[k]; k++)
			assert_true((unsigned char)m[k] >= 0x20 && m[k] != 0x7f);
	}
	/* A 256-byte name, a 128-byte tracker. */
	char text[1024], name[MTORRENT_NAME_MAX + 2];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = 0;
	snprintf(text, sizeof text, HDR "name %s\n", name);
	expect_err(parse_str(text, &t), SS_EINVAL, "line 2: name 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...' is longer than 255");
	snprintf(text, sizeof text, HDR "tracker %.123s:7001\n", name);
	expect_err(parse_str(text, &t), SS_EINVAL, "must be 1..127 bytes");
	snprintf(text, sizeof text, HDR NAME SIZE CHUNK ROOT "tracker %.122s:7001\n", name);
	expect_err(parse_str(text, &t), 0, "(success)");
}

static void test_nul_and_size_limits(void **state)
{
	static const char nul_name[] = HDR "name a\0b\n" SIZE CHUNK ROOT TR1;
	static const char nul_head[] = "syncstore-mtorrent 1\0\n" NAME SIZE CHUNK ROOT TR1;
	static const char nul_comment[] = HDR "#\0\n" NAME SIZE CHUNK ROOT TR1;
	mtorrent t;
	expect_err(mtorrent_parse(nul_name, sizeof nul_name - 1, &t), SS_EINVAL, "line 2: NUL byte");
	expect_err(mtorrent_parse(nul_head, sizeof nul_head - 1, &t), SS_EINVAL, "not a .mtorrent file");
	expect_err(mtorrent_parse(nul_comment, sizeof nul_comment - 1, &t), SS_EINVAL, "line 2: NUL byte");
	/* The text is read only within n: a valid prefix of a longer buffer. */
	expect_err(mtorrent_parse(VALID "garbage", strlen(VALID), &t), 0, "(success)");
	expect_err(mtorrent_parse(VALID, strlen(VALID) - 1, &t), SS_EINVAL, "line 7: no newline");

	/* Exactly MTORRENT_MAX_BYTES is accepted, one more byte is not. */
	char *big = malloc(MTORRENT_MAX_BYTES + 2);
	size_t n = strlen(VALID);
	memcpy(big, VALID, n);
	memset(big + n, '#', MTORRENT_MAX_BYTES - n);
	big[MTORRENT_MAX_BYTES - 1] = '\n';
	expect_err(mtorrent_parse(big, MTORRENT_MAX_BYTES, &t), 0, "(success)");
	big[MTORRENT_MAX_BYTES - 1] = '#';
	big[MTORRENT_MAX_BYTES] = '\n';
	expect_err(mtorrent_parse(big, MTORRENT_MAX_BYTES + 1, &t), SS_ETOOBIG,
		   ".mtorrent is 8193 bytes, over the limit of 8192");
	free(big);
}

static void test_format_refuses(void **state)
{
	mtorrent t;
	buf b;
	buf_init(&b, MTORRENT_MAX_BYTES);
	sample(&t);
	strcpy(t.name, "a/b");
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "name 'a/b' contains '/'");
	strcpy(t.name, "evil\nroot 00");
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "contains a control character");
	memset(t.name, 'x', sizeof t.name); /* not terminated */
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "is longer than 255 bytes");
	sample(&t);
	t.ntrackers = 0;
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "a .mtorrent needs 1..8 trackers, not 0");
	t.ntrackers = 9;
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "not 9");
	t.ntrackers = 2;
	strcpy(t.trackers[1], "nope");
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "tracker 'nope' is not HOST:PORT");
	memset(t.trackers[1], 'x', sizeof t.trackers[1]); /* not terminated */
	expect_err(mtorrent_format(&t, &b), SS_EINVAL, "must be 1..127 bytes");
	assert_int_equal(b.len, 0);
	buf_free(&b);

	sample(&t);
	buf_init(&b, 20);
	expect_err(mtorrent_format(&t, &b), SS_ETOOBIG, "buffer limit");
	buf_free(&b);
}

/* ---- files ---- */

static char tdir[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) { return remove(p); }

static int setup(void **state)
{
	snprintf(tdir, sizeof tdir, "/tmp/ss_test_mtorrent_XXXXXX");
	assert_non_null(mkdtemp(tdir));
	return 0;
}

static int teardown(void **state)
{
	nftw(tdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static void put_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static void test_write_read(void **state)
{
	char path[128], other[128], msg[256];
	mtorrent t, back;
	struct stat st;
	sample(&t);
	snprintf(path, sizeof path, "%s/report final.mtorrent", tdir);
	mode_t mask = umask(022);
	assert_int_equal(mtorrent_write(path, &t), 0);
	umask(mask);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(st.st_size, strlen(VALID));
	assert_int_equal(mtorrent_read(path, &back), 0);
	assert_memory_equal(&t, &back, sizeof t);

	/* Replaced atomically, leaving no temporary file behind. */
	t.size = 42;
	assert_int_equal(mtorrent_write(path, &t), 0);
	assert_int_equal(mtorrent_read(path, &back), 0);
	assert_true(back.size == 42);
	snprintf(other, sizeof other, "%s/report final.mtorrent.tmp", tdir);
	assert_int_equal(access(other, F_OK), -1);

	/* A refused struct writes nothing and the error names the path. */
	snprintf(other, sizeof other, "%s/bad.mtorrent", tdir);
	strcpy(t.name, "..");
	snprintf(msg, sizeof msg, "%s: name '..' cannot be", other);
	expect_err(mtorrent_write(other, &t), SS_EINVAL, msg);
	assert_int_equal(access(other, F_OK), -1);

	snprintf(msg, sizeof msg, "%s: no such file", other);
	expect_err(mtorrent_read(other, &back), SS_ENOENT, msg);
	snprintf(path, sizeof path, "%s/nodir/x.mtorrent", tdir);
	expect_err(mtorrent_write(path, &t), SS_EINVAL, "name");
	sample(&t);
	expect_err(mtorrent_write(path, &t), SS_ENOENT, "cannot create");

	static const char broken[] = HDR NAME "size x\n";
	put_file(other, broken, sizeof broken - 1);
	snprintf(msg, sizeof msg, "%s: line 3: size 'x' is not a number", other);
	expect_err(mtorrent_read(other, &back), SS_EINVAL, msg);
	put_file(other, "syncstore-mtorrent 7\n", 21);
	snprintf(msg, sizeof msg, "%s: .mtorrent version 7 is newer than this client (1)", other);
	expect_err(mtorrent_read(other, &back), SS_EFORMAT, msg);
	expect_err(mtorrent_read(tdir, &back), SS_EIO, "cannot read");
}

static void test_read_size_limit(void **state)
{
	char path[128], msg[256];
	mtorrent t;
	size_t n = strlen(VALID);
	char *big = malloc(3 * MTORRENT_MAX_BYTES);
	memcpy(big, VALID, n);
	memset(big + n, '#', 3 * MTORRENT_MAX_BYTES - n);
	big[MTORRENT_MAX_BYTES - 1] = '\n';
	snprintf(path, sizeof path, "%s/big.mtorrent", tdir);
	put_file(path, big, MTORRENT_MAX_BYTES);
	expect_err(mtorrent_read(path, &t), 0, "(success)");
	snprintf(msg, sizeof msg, "%s: larger than 8192 bytes, not a .mtorrent", path);
	size_t sizes[] = {MTORRENT_MAX_BYTES + 1, MTORRENT_MAX_BYTES + 4097, 3 * MTORRENT_MAX_BYTES};
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		big[sizes[i] - 1] = '\n';
		put_file(path, big, sizes[i]);
		expect_err(mtorrent_read(path, &t), SS_ETOOBIG, msg);
	}
	free(big);
}

/* ---- the shell's word splitter ---- */

static void test_cmdline_words(void **state)
{
	static const struct {
		const char *line;
		const char *words[5];
	} cases[] = {
		{"", {NULL}},
		{" \t  ", {NULL}},
		{"close", {"close"}},
		{"share my\\ file.txt my\\ file.mtorrent", {"share", "my file.txt", "my file.mtorrent"}},
		{"  get\t\ta.mtorrent   out  ", {"get", "a.mtorrent", "out"}},
		{"a\\\\b \\\\", {"a\\b", "\\"}},
		{"\\  \\\t", {" ", "\t"}},
		{"x\\yz \\#", {"xyz", "#"}},
		{"a\\ \\ b c", {"a  b", "c"}},
	};
	char store[64], *argv[4];
	int argc;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		argc = -1;
		assert_int_equal(cmdline_split(cases[i].line, store, sizeof store, argv, 4, &argc), 0);
		int n = 0;
		while (cases[i].words[n])
			n++;
		assert_int_equal(argc, n);
		for (int k = 0; k < n; k++)
			assert_string_equal(argv[k], cases[i].words[k]);
	}
}

static void test_cmdline_refuses(void **state)
{
	char store[64], *argv[4];
	int argc;
	expect_err(cmdline_split("a b\\", store, sizeof store, argv, 4, &argc), SS_EINVAL,
		   "a trailing \\ escapes nothing");
	assert_int_equal(argc, 0);
	expect_err(cmdline_split("\\", store, sizeof store, argv, 4, &argc), SS_EINVAL, "escapes nothing");
	expect_err(cmdline_split("a b c d", store, sizeof store, argv, 3, &argc), SS_EINVAL, "too many words");
	expect_err(cmdline_split("a b c ", store, sizeof store, argv, 3, &argc), 0, "(success)");
	assert_int_equal(argc, 3);
	expect_err(cmdline_split("x", store, sizeof store, argv, 0, &argc), SS_EINVAL, "too many words");
	/* "abc de" needs 4 + 3 bytes of store. */
	expect_err(cmdline_split("abc  de", store, 7, argv, 4, &argc), 0, "(success)");
	assert_string_equal(argv[1], "de");
	expect_err(cmdline_split("abc  de", store, 6, argv, 4, &argc), SS_EINVAL, "line too long");
	expect_err(cmdline_split("a", store, 1, argv, 4, &argc), SS_EINVAL, "line too long");
	expect_err(cmdline_split("a", store, 0, argv, 4, &argc), SS_EINVAL, "line too long");
	expect_err(cmdline_split("  ", store, 0, argv, 4, &argc), 0, "(success)");
	assert_int_equal(argc, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_parse_round_trip),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_accepted_variants),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_nul_and_size_limits),
		cmocka_unit_test(test_format_refuses),
		cmocka_unit_test_setup_teardown(test_write_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_size_limit, setup, teardown),
		cmocka_unit_test(test_cmdline_words),
		cmocka_unit_test(test_cmdline_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
