/*
 * test_early_drop.c: handshake_early_drop's parser, the chance it gives
 * at each fill of the budget, and the generator its draws come from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "early_drop.h"

static struct early_drop
parsed(const char *s)
{
	struct early_drop ed;
	const char *why = NULL;

	assert_int_equal(early_drop_parse(s, &ed, &why), 0);
	assert_null(why);
	return ed;
}

static const char *
refusal(const char *s)
{
	struct early_drop ed;
	const char *why = NULL;

	assert_int_equal(early_drop_parse(s, &ed, &why), -1);
	assert_non_null(why);
	return why;
}

static void
parses_three_percents_and_empty_is_off(void **state)
{
	struct early_drop ed = parsed("50:30:100");

	(void)state;
	assert_int_equal(ed.on, 1);
	assert_int_equal(ed.start, 50);
	assert_int_equal(ed.rate, 30);
	assert_int_equal(ed.full, 100);
	ed = parsed("0:100:1");
	assert_true(ed.on && ed.start == 0 && ed.rate == 100 && ed.full == 1);
	ed = parsed("");
	assert_int_equal(ed.on, 0);
	assert_int_equal(early_drop_ppm(&ed, 1000, 10), 0);
}

static void
refuses_what_is_not_start_below_full_in_percent(void **state)
{
	(void)state;
	assert_string_equal(refusal("100:30:50"), "START must be below FULL");
	assert_string_equal(refusal("50:30:50"), "START must be below FULL");
	assert_string_equal(refusal("50:30:101"), "each of START, RATE and "
	    "FULL is a whole percent from 0 to 100");
	assert_non_null(strstr(refusal("50:130:100"), "from 0 to 100"));
	assert_non_null(strstr(refusal("-1:30:100"), "from 0 to 100"));
	assert_non_null(strstr(refusal("50:30"), "three numbers"));
	assert_non_null(strstr(refusal("50:30:100:1"), "three numbers"));
	assert_non_null(strstr(refusal("50,30,100"), "three numbers"));
	assert_non_null(strstr(refusal("50:30:100 "), "three numbers"));
	assert_non_null(strstr(refusal(" 50:30:100"), "from 0 to 100"));
	assert_non_null(strstr(refusal("50::100"), "from 0 to 100"));
	assert_non_null(strstr(refusal("off"), "from 0 to 100"));
	assert_int_equal(parsed("050:30:100").start, 50);
}

/* None below start, rate at start, linear to certainty at full. */
static void
chance_grows_from_rate_at_start_to_all_at_full(void **state)
{
	struct early_drop ed = parsed("50:30:100");

	(void)state;
	/* max_handshakes 10: start at 5 open, full at 10. */
	assert_int_equal(early_drop_ppm(&ed, 0, 10), 0);
	assert_int_equal(early_drop_ppm(&ed, 4, 10), 0);
	assert_int_equal(early_drop_ppm(&ed, 5, 10), 300000);
	assert_int_equal(early_drop_ppm(&ed, 6, 10), 440000);
	assert_int_equal(early_drop_ppm(&ed, 9, 10), 860000);
	assert_int_equal(early_drop_ppm(&ed, 10, 10), EARLY_DROP_PPM);
	assert_int_equal(early_drop_ppm(&ed, 11, 10), EARLY_DROP_PPM);
	/* No percent rounded: 3 of 7 is under half, 4 of 7 over it. */
	assert_int_equal(early_drop_ppm(&ed, 3, 7), 0);
	assert_int_equal(early_drop_ppm(&ed, 4, 7), 300000 + 700000 * 50 / 350);
	/* From 0: the first connection already meets the rate. */
	ed = parsed("0:100:100");
	assert_int_equal(early_drop_ppm(&ed, 0, 4), EARLY_DROP_PPM);
	ed = parsed("0:50:100");
	assert_int_equal(early_drop_ppm(&ed, 0, 4), 500000);
	assert_int_equal(early_drop_ppm(&ed, 2, 4), 750000);
	/* A budget of 1, the least there is. */
	ed = parsed("50:0:100");
	assert_int_equal(early_drop_ppm(&ed, 0, 1), 0);
	assert_int_equal(early_drop_ppm(&ed, 1, 1), EARLY_DROP_PPM);
	/* The largest budget does not overflow. */
	assert_int_equal(early_drop_ppm(&ed, 9999999, 10000000),
	    (uint32_t)(1000000LL * 4999999 / 5000000));
}

static void
hits_never_below_start_always_at_full_and_about_the_chance_between(
    void **state)
{
	struct early_drop ed = parsed("50:30:100");
	uint64_t rng = early_drop_seed(42), before = rng;
	int hits = 0;

	(void)state;
	assert_int_equal(early_drop_hit(&ed, 4, 10, &rng), 0);
	assert_int_equal(early_drop_hit(&ed, 10, 10, &rng), 1);
	assert_true(rng == before);	/* no draw when the answer is sure */
	for (int i = 0; i < 100000; i++)
		hits += early_drop_hit(&ed, 5, 10, &rng);
	/* 30%: 30,000 expected, sd 145; a bound 10 sd wide each way. */
	assert_in_range(hits, 28500, 31500);
}

static void
generator_never_sticks_and_seeds_differ(void **state)
{
	uint64_t a = early_drop_seed(0), b = early_drop_seed(1);
	int low = 0;

	(void)state;
	assert_true(a != 0 && b != 0 && a != b);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = early_drop_random(&a);

		assert_true(a != 0);
		low += (x & 1) != 0;
		assert_true(x != early_drop_random(&b));
	}
	assert_in_range(low, 400, 600);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parses_three_percents_and_empty_is_off),
		cmocka_unit_test(refuses_what_is_not_start_below_full_in_percent),
		cmocka_unit_test(chance_grows_from_rate_at_start_to_all_at_full),
		cmocka_unit_test(
		    hits_never_below_start_always_at_full_and_about_the_chance_between),
		cmocka_unit_test(generator_never_sticks_and_seeds_differ),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
