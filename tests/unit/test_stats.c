/*
 * test_stats.c: the escapers behind "stats json" and /metrics, fed
 * strings that a config file or a client could put in front of them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "stats.h"

/* What fn appends for s, as a NUL-terminated string (caller frees). */
static char *
render(void (*fn)(struct evbuffer *, const char *), const char *s)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *out;

	assert_non_null(b);
	fn(b, s);
	n = evbuffer_get_length(b);
	out = malloc(n + 1);
	assert_non_null(out);
	evbuffer_remove(b, out, n);
	out[n] = '\0';
	evbuffer_free(b);
	return out;
}

static void
check(void (*fn)(struct evbuffer *, const char *), const char *in,
    const char *want)
{
	char *got = render(fn, in);

	assert_string_equal(got, want);
	free(got);
}

static void
json_escapes_quotes_backslashes_and_controls(void **state)
{
	(void)state;
	check(stats_json_string, "", "\"\"");
	check(stats_json_string, "/run/app.sock", "\"/run/app.sock\"");
	check(stats_json_string, "a\"b\\c", "\"a\\\"b\\\\c\"");
	check(stats_json_string, "l1\nl2\r\t", "\"l1\\nl2\\r\\t\"");
	check(stats_json_string, "\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\"");
}

static void
json_keeps_utf8_and_replaces_what_is_not(void **state)
{
	(void)state;
	check(stats_json_string, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	    "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	/* A lone continuation byte, a truncated sequence at the end. */
	check(stats_json_string, "a\x80z", "\"a\\ufffdz\"");
	check(stats_json_string, "a\xe2\x82", "\"a\\ufffd\\ufffd\"");
	/* Overlong '/', a UTF-16 surrogate, above U+10FFFF. */
	check(stats_json_string, "\xc0\xaf", "\"\\ufffd\\ufffd\"");
	check(stats_json_string, "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
	check(stats_json_string, "\xf4\x90\x80\x80",
	    "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

static void
prometheus_labels_escape_three_characters(void **state)
{
	(void)state;
	check(stats_prom_label, "web", "\"web\"");
	check(stats_prom_label, "a\\b\"c\nd", "\"a\\\\b\\\"c\\nd\"");
	check(stats_prom_label, "tab\there", "\"tab\there\"");
}

/* Every counter by name, in order; "off"; a short buffer cut, not overrun. */
static void
endpoint_counters_print_as_key_values(void **state)
{
	struct oneshot_counters n = { .accepted = 7, .answered = 5,
	    .late_request = 1, .dropped = 1, .pushed_out_idle = 18446744073709551615ULL,
	    .errors = 3 };
	char buf[ENDPOINT_KV_MAX], small[16];

	(void)state;
	stats_endpoint_kv(&n, 1, buf, sizeof(buf));
	assert_string_equal(buf, "accepted=7 answered=5 late_request=1 "
	    "late_answer=0 dropped=1 pushed_out_answered=0 "
	    "pushed_out_idle=18446744073709551615 refused=0 accept_pauses=0 "
	    "errors=3");
	stats_endpoint_kv(&n, 0, buf, sizeof(buf));
	assert_string_equal(buf, "off");
	memset(small, 'x', sizeof(small));
	stats_endpoint_kv(&n, 1, small, sizeof(small) - 1);
	assert_string_equal(small, "accepted=7 ans");
	assert_int_equal(small[sizeof(small) - 1], 'x');
}

/* Every shared counter is reported, once, under names of its own. */
static void
every_counter_has_one_report_row(void **state)
{
	int seen[SC_COUNT] = { 0 };

	(void)state;
	for (size_t f = 0; f < STATS_NFIELDS; f++) {
		assert_true(stats_fields[f].sc < SC_COUNT);
		seen[stats_fields[f].sc]++;
		assert_non_null(stats_fields[f].key);
		assert_non_null(stats_fields[f].column);
		for (size_t g = 0; g < f; g++) {
			assert_string_not_equal(stats_fields[f].key,
			    stats_fields[g].key);
			assert_string_not_equal(stats_fields[f].column,
			    stats_fields[g].column);
		}
	}
	for (int i = 0; i < SC_COUNT; i++)
		assert_int_equal(seen[i], 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(json_escapes_quotes_backslashes_and_controls),
		cmocka_unit_test(json_keeps_utf8_and_replaces_what_is_not),
		cmocka_unit_test(prometheus_labels_escape_three_characters),
		cmocka_unit_test(endpoint_counters_print_as_key_values),
		cmocka_unit_test(every_counter_has_one_report_row),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
