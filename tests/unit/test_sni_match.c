/*
 * test_sni_match.c: which tls_sni entry a client's server name chooses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sni_match.h"

/* Entries as config.c stores them: lowercase, no trailing dot. */
static char *e0[] = { "a.example", "www.a.example" };
static char *e1[] = { "*.b.example" };
static char *e2[] = { "x.b.example" };
static char *e3[] = { "*.a.example" };
static const struct sni_conf entries[] = {
	{ .names = e0, .nnames = 2, .line = 1 },
	{ .names = e1, .nnames = 1, .line = 2 },
	{ .names = e2, .nnames = 1, .line = 3 },
	{ .names = e3, .nnames = 1, .line = 4 },
};
#define N	(sizeof(entries) / sizeof(entries[0]))

static int
pick(const char *host)
{
	return sni_match(entries, N, host);
}

/* An exact name wins over a wildcard, even one listed before it. */
static void
exact_names_come_before_wildcards(void **state)
{
	(void)state;
	assert_int_equal(pick("a.example"), 0);
	assert_int_equal(pick("www.a.example"), 0);
	assert_int_equal(pick("x.b.example"), 2);
	assert_int_equal(pick("y.b.example"), 1);
	assert_int_equal(pick("mail.a.example"), 3);
}

/* "*.b.example" covers one label: not b.example, not two labels. */
static void
a_wildcard_covers_exactly_one_label(void **state)
{
	(void)state;
	assert_int_equal(pick("b.example"), -1);
	assert_int_equal(pick("y.x.b.example"), -1);
	assert_int_equal(pick(".b.example"), -1);
	assert_int_equal(pick("yb.example"), -1);
	assert_int_equal(pick("example"), -1);
}

static void
case_does_not_matter(void **state)
{
	(void)state;
	assert_int_equal(pick("A.Example"), 0);
	assert_int_equal(pick("WWW.A.EXAMPLE"), 0);
	assert_int_equal(pick("Y.B.Example"), 1);
}

/* "a.example." is the same host as "a.example"; "." alone is no name. */
static void
a_trailing_dot_is_ignored(void **state)
{
	(void)state;
	assert_int_equal(pick("a.example."), 0);
	assert_int_equal(pick("y.b.example."), 1);
	assert_int_equal(pick("."), -1);
	assert_int_equal(pick("a.example.."), -1);
}

static void
no_name_or_an_unknown_one_matches_nothing(void **state)
{
	(void)state;
	assert_int_equal(pick(NULL), -1);
	assert_int_equal(pick(""), -1);
	assert_int_equal(pick("c.example"), -1);
	assert_int_equal(pick("a.example.org"), -1);
	assert_int_equal(sni_match(entries, 0, "a.example"), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(exact_names_come_before_wildcards),
		cmocka_unit_test(a_wildcard_covers_exactly_one_label),
		cmocka_unit_test(case_does_not_matter),
		cmocka_unit_test(a_trailing_dot_is_ignored),
		cmocka_unit_test(no_name_or_an_unknown_one_matches_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
