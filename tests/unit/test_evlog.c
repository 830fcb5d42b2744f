/*
 * test_evlog.c: libevent's own warnings come out as esockd's lines,
 * labelled and leveled, and a repeated one is printed once a second.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "evlog.h"
#include "log.h"

/* Run fn with stderr sent to a temporary file; return what it wrote. */
static char *
capture_stderr(void (*fn)(void))
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	char *out = calloc(1, 65536);
	size_t n;

	assert_non_null(tmp);
	assert_non_null(out);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	fn();
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, 65535, tmp);
	out[n] = '\0';
	fclose(tmp);
	return out;
}

/* libevent warns (event_warnx) about an event that is both a signal and
 * a read: a real message from libevent's own code, not one made up. */
static void
provoke_warnings(void)
{
	struct event_base *base = event_base_new();
	struct event ev;

	assert_non_null(base);
	for (int i = 0; i < 50; i++)
		assert_int_equal(event_assign(&ev, base, 2, EV_SIGNAL | EV_READ,
		    NULL, NULL), -1);
	event_base_free(base);
}

static int
count_lines(const char *s)
{
	int n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void
libevent_warnings_are_labelled_and_rate_limited(void **state)
{
	char *out;

	(void)state;
	log_init("worker", 3);
	evlog_init();
	out = capture_stderr(provoke_warnings);
	/* One line for fifty warnings, in esockd's form. */
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, " worker 3["));
	assert_non_null(strstr(out, "] warn: libevent: event_assign: "
	    "EV_SIGNAL is not compatible"));
	assert_null(strstr(out, "[warn]"));	/* libevent's own format */
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(libevent_warnings_are_labelled_and_rate_limited),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
