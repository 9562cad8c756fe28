/* test_util.c — remote path rules, bounded buffers, id sets, formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/util.h"

static void test_paths_accepted(void **state)
{
	(void)state;
	const char *ok[] = {"a", "a/b", "docs/report.txt", "..hidden", "a/.b", "a/b..", "ünïcødé/файл", "with space"};
	for (size_t i = 0; i < ARRAY_LEN(ok); i++)
		assert_int_equal(path_check(ok[i], strlen(ok[i])), 0);
	char name[SS_NAME_MAX + 1];
	memset(name, 'n', SS_NAME_MAX);
	name[SS_NAME_MAX] = 0;
	assert_int_equal(path_check(name, strlen(name)), 0);
}

static void test_paths_refused(void **state)
{
	(void)state;
	const char *bad[] = {"", "/abs", "/", "a//b", "a/", "./a", "a/.", "..", "../x", "a/../b", "a/.."};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		assert_int_equal(path_check(bad[i], strlen(bad[i])), SS_EINVAL);
	/* A NUL inside the given length. */
	assert_int_equal(path_check("a\0b", 3), SS_EINVAL);
	/* A component one byte too long, and a path over the limit. */
	char name[SS_NAME_MAX + 2];
	memset(name, 'n', SS_NAME_MAX + 1);
	name[SS_NAME_MAX + 1] = 0;
	assert_int_equal(path_check(name, strlen(name)), SS_EINVAL);
	char *huge = malloc(SS_PATH_MAX + 2);
	for (size_t i = 0; i < SS_PATH_MAX + 1; i++)
		huge[i] = i % 100 == 99 ? '/' : 'x';
	huge[SS_PATH_MAX + 1] = 0;
	assert_int_equal(path_check(huge, strlen(huge)), SS_EINVAL);
	free(huge);
}

static void test_buf_limit(void **state)
{
	(void)state;
	buf b;
	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "12345", 5), 0);
	assert_int_equal(buf_append(&b, "12345", 5), 0);
	assert_int_equal(buf_append(&b, "x", 1), SS_ETOOBIG);
	assert_int_equal(b.len, 10);
	assert_int_equal(buf_reserve(&b, SIZE_MAX), SS_ETOOBIG);
	buf_free(&b);
}

static void test_idset(void **state)
{
	(void)state;
	idset set = {0};
	uint8_t id[IDSET_KEY] = {1};
	assert_false(idset_has(&set, id));
	for (int i = 0; i < 5000; i++) {
		memset(id, 0, sizeof id);
		memcpy(id, &i, sizeof i);
		id[31] = 1; /* never the all-zero id */
		assert_false(idset_add(&set, id));
	}
	assert_int_equal(set.n, 5000);
	for (int i = 0; i < 5000; i += 7) {
		memset(id, 0, sizeof id);
		memcpy(id, &i, sizeof i);
		id[31] = 1;
		assert_true(idset_has(&set, id));
		assert_true(idset_add(&set, id));
	}
	id[31] = 2;
	assert_false(idset_has(&set, id));
	idset_clear(&set);
	assert_int_equal(set.n, 0);
	id[31] = 1;
	assert_false(idset_has(&set, id));
	idset_free(&set);
}

static void test_formatting(void **state)
{
	(void)state;
	char out[16];
	fmt_size(0, out);
	assert_string_equal(out, "0 B");
	fmt_size(1023, out);
	assert_string_equal(out, "1023 B");
	fmt_size(1536, out);
	assert_string_equal(out, "1.50 KiB");
	fmt_size(268435456, out);
	assert_string_equal(out, "256 MiB");
	fmt_duration(75, out);
	assert_string_equal(out, "01:15");
	fmt_duration(3725, out);
	assert_string_equal(out, "1:02:05");
	fmt_duration(-1, out);
	assert_string_equal(out, "--:--");
	uint8_t bytes[3] = {0x00, 0xab, 0xff}, back[3];
	char hex[7];
	hex_encode(bytes, 3, hex);
	assert_string_equal(hex, "00abff");
	assert_int_equal(hex_decode("00ABff", back, 3), 0);
	assert_memory_equal(back, bytes, 3);
	assert_int_equal(hex_decode("00abf", back, 3), SS_EINVAL);
	assert_int_equal(hex_decode("00abfg", back, 3), SS_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paths_accepted),
		cmocka_unit_test(test_paths_refused),
		cmocka_unit_test(test_buf_limit),
		cmocka_unit_test(test_idset),
		cmocka_unit_test(test_formatting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
