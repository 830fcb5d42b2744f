/*
 * test_helpers.c: address parsing and the log rate limiter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"

static void
bind_forms_round_trip(void **state)
{
	const char *in[] = { "127.0.0.1:5000", "[::1]:80", "*:65535",
	    "[2001:db8::1]:1", "[::]:9" };
	const char *out[] = { "127.0.0.1:5000", "[::1]:80", "0.0.0.0:65535",
	    "[2001:db8::1]:1", "[::]:9" };
	struct sockaddr_storage ss;
	socklen_t len;
	const char *why;
	char buf[80];

	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		assert_int_equal(addr_parse_bind(in[i], &ss, &len, &why), 0);
		addr_format((struct sockaddr *)&ss, buf, sizeof(buf));
		assert_string_equal(buf, out[i]);
	}
}

static void
addresses_compare_by_value(void **state)
{
	struct sockaddr_storage a, b;
	socklen_t len;
	const char *why;

	(void)state;
	addr_parse_bind("10.0.0.1:80", &a, &len, &why);
	addr_parse_bind("10.0.0.1:80", &b, &len, &why);
	assert_true(addr_equal((void *)&a, (void *)&b));
	addr_parse_bind("10.0.0.1:81", &b, &len, &why);
	assert_false(addr_equal((void *)&a, (void *)&b));
	addr_parse_bind("[::1]:80", &b, &len, &why);
	assert_false(addr_equal((void *)&a, (void *)&b));
}

/* A "held" record's address: a bare IPv4 or IPv6 one, port 0, or -1. */
static void
bare_addresses_parse_and_others_do_not(void **state)
{
	const char *good[] = { "127.0.0.1", "192.0.2.7", "::1",
	    "2001:db8::7" };
	const char *out[] = { "127.0.0.1:0", "192.0.2.7:0", "[::1]:0",
	    "[2001:db8::7]:0" };
	const char *bad[] = { "", "localhost", "127.0.0.1:80", "[::1]",
	    "1.2.3", "::1 ", "2001:db8::7/64" };
	struct sockaddr_storage ss;
	char buf[80];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(addr_parse_ip(good[i], &ss), 0);
		addr_format((struct sockaddr *)&ss, buf, sizeof(buf));
		assert_string_equal(buf, out[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(addr_parse_ip(bad[i], &ss), -1);
}

static void
ratelimit_passes_once_a_second_and_counts(void **state)
{
	struct log_ratelimit rl = { { 0, 0 }, 0 };
	uint64_t suppressed = 99;

	(void)state;
	assert_int_equal(log_ratelimit_pass(&rl, &suppressed), 1);
	assert_int_equal(suppressed, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(log_ratelimit_pass(&rl, &suppressed), 0);
	rl.last.tv_sec -= 2;		/* as if two seconds went by */
	assert_int_equal(log_ratelimit_pass(&rl, &suppressed), 1);
	assert_int_equal(suppressed, 5);
}

static void
journal_stream_must_match_stderr(void **state)
{
	struct stat st;
	char v[64];

	(void)state;
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", v, 1);
	assert_int_equal(log_journal_stream(), 1);
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", v, 1);
	assert_int_equal(log_journal_stream(), 0);
	unsetenv("JOURNAL_STREAM");
	assert_int_equal(log_journal_stream(), 0);
}

static void
levels_parse_by_name(void **state)
{
	enum log_level l;

	(void)state;
	assert_int_equal(log_parse_level("warn", &l), 0);
	assert_int_equal(l, LOG_LVL_WARN);
	assert_int_equal(log_parse_level("debug", &l), 0);
	assert_int_equal(l, LOG_LVL_DEBUG);
	assert_int_equal(log_parse_level("verbose", &l), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bind_forms_round_trip),
		cmocka_unit_test(addresses_compare_by_value),
		cmocka_unit_test(bare_addresses_parse_and_others_do_not),
		cmocka_unit_test(ratelimit_passes_once_a_second_and_counts),
		cmocka_unit_test(journal_stream_must_match_stderr),
		cmocka_unit_test(levels_parse_by_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
