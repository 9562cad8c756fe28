/* test_resolve.c — version vector order and the conflict rules are the same
 * whichever side of a pair a server sees first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/repl.h"
#include "core/resolve.h"

static vvec vv(unsigned n, ...)
{
	vvec v = {.n = n};
	va_list ap;
	va_start(ap, n);
	for (unsigned i = 0; i < n; i++) {
		v.e[i].node = va_arg(ap, uint64_t);
		v.e[i].counter = va_arg(ap, uint64_t);
	}
	va_end(ap);
	return v;
}

static record rec(const char *path, vvec v, uint8_t content, int64_t mtime, uint64_t origin)
{
	record r;
	memset(&r, 0, sizeof r);
	strcpy(r.path, path);
	r.vv = v;
	r.size = content;
	r.mode = 0644;
	memset(r.root, content, HASH_LEN);
	r.deleted = content == 0;
	r.mtime_ns = mtime;
	r.origin = origin;
	return r;
}

static void test_vv_order(void **state)
{
	(void)state;
	vvec a = vv(1, (uint64_t)1, (uint64_t)1), b = vv(1, (uint64_t)1, (uint64_t)2);
	vvec c = vv(1, (uint64_t)2, (uint64_t)1), e = vv(0);
	assert_int_equal(vv_compare(&a, &b), VV_BEFORE);
	assert_int_equal(vv_compare(&b, &a), VV_AFTER);
	assert_int_equal(vv_compare(&a, &a), VV_EQUAL);
	assert_int_equal(vv_compare(&a, &c), VV_CONCURRENT);
	assert_int_equal(vv_compare(&e, &a), VV_BEFORE);
	assert_int_equal(vv_compare(&e, &e), VV_EQUAL);
	/* Missing entries count as zero on either side. */
	vvec d = vv(2, (uint64_t)1, (uint64_t)1, (uint64_t)2, (uint64_t)0);
	assert_int_equal(vv_compare(&a, &d), VV_EQUAL);
}

static void test_vv_merge_sorted_max(void **state)
{
	(void)state;
	vvec a = vv(2, (uint64_t)9, (uint64_t)1, (uint64_t)3, (uint64_t)5);
	vvec b = vv(2, (uint64_t)3, (uint64_t)7, (uint64_t)1, (uint64_t)2);
	vvec m;
	assert_int_equal(vv_merge(&a, &b, &m), 0);
	assert_int_equal(m.n, 3);
	assert_int_equal(m.e[0].node, 1);
	assert_int_equal(m.e[1].node, 3);
	assert_int_equal(m.e[1].counter, 7);
	assert_int_equal(m.e[2].node, 9);
	assert_int_equal(vv_compare(&m, &a), VV_AFTER);
	assert_int_equal(vv_compare(&m, &b), VV_AFTER);
}

static void test_vv_merge_limit(void **state)
{
	(void)state;
	vvec a = {.n = VV_MAX}, b = vv(1, (uint64_t)1000, (uint64_t)1);
	for (unsigned i = 0; i < VV_MAX; i++)
		a.e[i] = (vv_entry){i + 1, 1};
	vvec m;
	assert_int_equal(vv_merge(&a, &b, &m), SS_ETOOBIG);
}

static void test_causal_order_takes_newer(void **state)
{
	(void)state;
	record l = rec("a.txt", vv(1, (uint64_t)1, (uint64_t)1), 1, 100, 1);
	record r = rec("a.txt", vv(1, (uint64_t)1, (uint64_t)2), 2, 50, 1);
	resolution res;
	assert_int_equal(resolve(&l, &r, &res), 0);
	assert_int_equal(res.kind, RESOLVE_TAKE);
	assert_ptr_equal(res.winner, &r);
	assert_int_equal(resolve(&r, &l, &res), 0);
	assert_int_equal(res.kind, RESOLVE_KEEP);
}

static void test_identical_concurrent_versions_merge(void **state)
{
	(void)state;
	record l = rec("a.txt", vv(1, (uint64_t)1, (uint64_t)1), 7, 100, 1);
	record r = rec("a.txt", vv(1, (uint64_t)2, (uint64_t)1), 7, 100, 2);
	resolution res;
	assert_int_equal(resolve(&l, &r, &res), 0);
	assert_int_equal(res.kind, RESOLVE_MERGE);
	assert_int_equal(res.merged.n, 2);
}

static void test_conflict_same_winner_from_both_sides(void **state)
{
	(void)state;
	record a = rec("docs/report.txt", vv(1, (uint64_t)1, (uint64_t)1), 1, 200, 1);
	record b = rec("docs/report.txt", vv(1, (uint64_t)2, (uint64_t)1), 2, 100, 2);
	resolution x, y;
	assert_int_equal(resolve(&a, &b, &x), 0);
	assert_int_equal(resolve(&b, &a, &y), 0);
	assert_int_equal(x.kind, RESOLVE_CONFLICT);
	assert_int_equal(y.kind, RESOLVE_CONFLICT);
	assert_ptr_equal(x.winner, &a); /* newer mtime */
	assert_ptr_equal(y.winner, &a);
	assert_ptr_equal(x.loser, &b);
	char p1[SS_PATH_MAX + 1], p2[SS_PATH_MAX + 1];
	assert_int_equal(conflict_path(x.loser, p1, sizeof p1), 0);
	assert_int_equal(conflict_path(y.loser, p2, sizeof p2), 0);
	assert_string_equal(p1, p2);
	assert_string_equal(p1, "docs/report.sync-conflict-19700101-000000-0000000000000002.txt");
}

static void test_equal_mtime_breaks_tie_on_node(void **state)
{
	(void)state;
	record a = rec("x", vv(1, (uint64_t)1, (uint64_t)1), 1, 100, 5);
	record b = rec("x", vv(1, (uint64_t)2, (uint64_t)1), 2, 100, 9);
	resolution x, y;
	resolve(&a, &b, &x);
	resolve(&b, &a, &y);
	assert_ptr_equal(x.winner, &b);
	assert_ptr_equal(y.winner, &b);
}

static void test_equal_vectors_different_content_conflict(void **state)
{
	(void)state;
	record a = rec("x", vv(1, (uint64_t)1, (uint64_t)3), 1, 100, 1);
	record b = rec("x", vv(1, (uint64_t)1, (uint64_t)3), 2, 300, 1);
	resolution res;
	assert_int_equal(resolve(&a, &b, &res), 0);
	assert_int_equal(res.kind, RESOLVE_CONFLICT);
	assert_ptr_equal(res.winner, &b);
	assert_non_null(res.loser);
}

static void test_update_beats_concurrent_delete(void **state)
{
	(void)state;
	record del = rec("x", vv(1, (uint64_t)1, (uint64_t)2), 0, 900, 1);
	record upd = rec("x", vv(2, (uint64_t)1, (uint64_t)1, (uint64_t)2, (uint64_t)1), 4, 100, 2);
	resolution x, y;
	resolve(&del, &upd, &x);
	resolve(&upd, &del, &y);
	assert_int_equal(x.kind, RESOLVE_CONFLICT);
	assert_ptr_equal(x.winner, &upd);
	assert_null(x.loser);
	assert_ptr_equal(y.winner, &upd);
	assert_int_equal(vv_compare(&x.merged, &del.vv), VV_AFTER);
}

static void test_conflict_names(void **state)
{
	(void)state;
	char out[SS_PATH_MAX + 1];
	record r = rec(".profile", vv(0), 1, 0, 0xab);
	assert_int_equal(conflict_path(&r, out, sizeof out), 0);
	assert_string_equal(out, ".profile.sync-conflict-19700101-000000-00000000000000ab");
	record s = rec("a.b/c", vv(0), 1, -1500000000, 1); /* before 1970 */
	assert_int_equal(conflict_path(&s, out, sizeof out), 0);
	assert_string_equal(out, "a.b/c.sync-conflict-19691231-235958-0000000000000001");
	/* A name too long for the suffix is cut, the same way everywhere,
	 * rather than making the conflict impossible to record. */
	record t = rec("x", vv(0), 1, 0, 1);
	memcpy(t.path, "dir/", 4);
	memset(t.path + 4, 'n', 250);
	strcpy(t.path + 254, ".txt");
	assert_int_equal(conflict_path(&t, out, sizeof out), 0);
	const char *name = strrchr(out, '/') + 1;
	assert_int_equal(strlen(name), SS_NAME_MAX);
	assert_int_equal(strncmp(out, "dir/nnnn", 8), 0);
	assert_non_null(strstr(out, ".sync-conflict-19700101-000000-0000000000000001.txt"));
	/* ... at a UTF-8 character boundary */
	record u = rec("x", vv(0), 1, 0, 1);
	for (int i = 0; i < 125; i++)
		memcpy(u.path + 2 * i, "\xc3\xa9", 2); /* é × 125 = 250 bytes */
	u.path[250] = 0;
	assert_int_equal(conflict_path(&u, out, sizeof out), 0);
	size_t stem = strstr(out, ".sync-conflict") - out;
	assert_int_equal(stem % 2, 0);
}

/* A puller's cursor is a place in our log unless it is past our head or our
 * record there is another one (a restored data directory). */
static void test_cursor_valid(void **state)
{
	(void)state;
	assert_true(repl_cursor_valid(0, 0, 0, 0));
	assert_true(repl_cursor_valid(5, 9, 0x77, 0x77));
	assert_false(repl_cursor_valid(10, 9, 0x77, 0x77)); /* past the head */
	assert_false(repl_cursor_valid(5, 9, 0x77, 0x78));  /* another record there */
	assert_true(repl_cursor_valid(5, 9, 0, 0x78));      /* ours expired: cannot tell */
	assert_true(repl_cursor_valid(5, 9, 0x77, 0));      /* theirs unknown (older cursor) */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vv_order),
		cmocka_unit_test(test_cursor_valid),
		cmocka_unit_test(test_vv_merge_sorted_max),
		cmocka_unit_test(test_vv_merge_limit),
		cmocka_unit_test(test_causal_order_takes_newer),
		cmocka_unit_test(test_identical_concurrent_versions_merge),
		cmocka_unit_test(test_conflict_same_winner_from_both_sides),
		cmocka_unit_test(test_equal_mtime_breaks_tie_on_node),
		cmocka_unit_test(test_equal_vectors_different_content_conflict),
		cmocka_unit_test(test_update_beats_concurrent_delete),
		cmocka_unit_test(test_conflict_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
