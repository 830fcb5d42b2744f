/*
 * test_backend_health.c: the passive health of backend sockets and the
 * choice of socket (backend_health.c), with the clock passed in: the
 * threshold, the interval doubling to its cap and back, one probe per
 * interval (and a claim that expires), the least recently failed when
 * every socket is ejected, least_connections, and exactly one worker told
 * of each transition when several processes race.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend_health.h"

static const struct health_conf rr = { .threshold = 3, .interval_ms = 2000,
	.probe_ms = 2000, .least = 0 };

/* n sockets, all up and never failed. */
static void
fresh(struct shm_backend *b, size_t n)
{
	memset(b, 0, n * sizeof(*b));
}

static int
pick(struct shm_backend *b, size_t n, uint32_t tried, size_t start,
    int64_t now, enum health_pick *how)
{
	return health_pick(b, n, tried, start, NULL, now, &rr, how);
}

static void
ejected_after_threshold_failures_in_a_row(void **state)
{
	struct shm_backend b;

	(void)state;
	fresh(&b, 1);
	assert_int_equal(health_failure(&b, 0, 1000, &rr), HE_NONE);
	assert_int_equal(health_failure(&b, 0, 1001, &rr), HE_NONE);
	/* A success in between forgets them. */
	assert_int_equal(health_success(&b, 0, &rr), HE_NONE);
	assert_int_equal(health_failure(&b, 0, 1002, &rr), HE_NONE);
	assert_int_equal(health_failure(&b, 0, 1003, &rr), HE_NONE);
	assert_true(health_is_up(&b));
	assert_int_equal(health_failure(&b, 0, 1004, &rr), HE_EJECTED);
	assert_false(health_is_up(&b));
	assert_int_equal(b.ejected_until, 1004 + 2000);
	assert_int_equal(b.ejections, 1);
	/* Failures of connects begun before: no second ejection. */
	assert_int_equal(health_failure(&b, 0, 1005, &rr), HE_NONE);
	assert_int_equal(b.ejections, 1);
	assert_int_equal(b.ejected_until, 1004 + 2000);
}

static void
interval_doubles_to_30_s_and_resets_on_return(void **state)
{
	static const int64_t want[] = { 4000, 8000, 16000, 30000, 30000 };
	struct shm_backend b;
	enum health_pick how;
	int64_t now = 10000;

	(void)state;
	fresh(&b, 1);
	for (int i = 0; i < 3; i++)
		health_failure(&b, 0, now, &rr);
	assert_int_equal(b.interval_ms, 2000);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		/* Not a moment early, and then one probe. */
		assert_int_equal(pick(&b, 1, 0, 0, b.ejected_until - 1, &how), 0);
		assert_int_equal(how, HP_FALLBACK);
		now = b.ejected_until;
		assert_int_equal(pick(&b, 1, 0, 0, now, &how), 0);
		assert_int_equal(how, HP_PROBE);
		assert_int_equal(health_failure(&b, 1, now, &rr),
		    HE_PROBE_FAILED);
		assert_int_equal(b.interval_ms, want[i]);
		assert_int_equal(b.ejected_until, now + want[i]);
		assert_int_equal(b.probe_until, 0);
	}
	assert_int_equal(b.ejections, 1);
	now = b.ejected_until;
	assert_int_equal(pick(&b, 1, 0, 0, now, &how), 0);
	assert_int_equal(how, HP_PROBE);
	assert_int_equal(health_success(&b, 1, &rr), HE_RETURNED);
	assert_true(health_is_up(&b));
	assert_int_equal(b.returns, 1);
	assert_int_equal(b.interval_ms, 2000);
	assert_int_equal(b.fails, 0);
	/* Ejected again later: from the first interval, not the last. */
	for (int i = 0; i < 3; i++)
		health_failure(&b, 0, now + 5, &rr);
	assert_int_equal(b.ejected_until, now + 5 + 2000);
}

static void
one_probe_per_interval_and_an_abandoned_claim_expires(void **state)
{
	struct shm_backend b[2];
	enum health_pick how;

	(void)state;
	fresh(b, 2);
	for (int i = 0; i < 3; i++)
		health_failure(&b[0], 0, 0, &rr);
	/* Due at 2000: the first connection probes socket 0 ... */
	assert_int_equal(pick(b, 2, 0, 1, 2000, &how), 0);
	assert_int_equal(how, HP_PROBE);
	/* ... and the others go to socket 1, not to 0. */
	for (int64_t t = 2000; t < 4000; t += 100) {
		assert_int_equal(pick(b, 2, 0, 0, t, &how), 1);
		assert_int_equal(how, HP_UP);
	}
	/* Its worker died: after probe_ms another may probe. */
	assert_int_equal(pick(b, 2, 0, 0, 4001, &how), 0);
	assert_int_equal(how, HP_PROBE);
	/* A probe whose client left: the claim is free at once. */
	health_probe_abandon(&b[0]);
	assert_int_equal(pick(b, 2, 0, 1, 4002, &how), 0);
	assert_int_equal(how, HP_PROBE);
	/* Not tried twice by one connection. */
	assert_int_equal(pick(b, 2, 1u << 1, 0, 9000, &how), 0);
	health_probe_abandon(&b[0]);
	assert_int_equal(pick(b, 2, 1u << 0, 0, 9000, &how), 1);
	assert_int_equal(how, HP_UP);
}

static void
round_robin_skips_ejected_and_tried(void **state)
{
	struct shm_backend b[3];
	enum health_pick how;

	(void)state;
	fresh(b, 3);
	assert_int_equal(pick(b, 3, 0, 2, 0, &how), 2);
	assert_int_equal(how, HP_UP);
	assert_int_equal(pick(b, 3, 1u << 2, 2, 0, &how), 0);
	for (int i = 0; i < 3; i++)
		health_failure(&b[1], 0, 0, &rr);
	assert_int_equal(pick(b, 3, 0, 1, 10, &how), 2);
	assert_int_equal(pick(b, 3, 1u << 2, 1, 10, &how), 0);
	/* Tried all that are up: nothing left, however ejected 1 is. */
	assert_int_equal(pick(b, 3, (1u << 0) | (1u << 2), 1, 10, &how), -1);
	assert_int_equal(how, HP_NONE);
}

static void
every_socket_ejected_the_least_recently_failed_is_tried(void **state)
{
	struct shm_backend b[3];
	enum health_pick how;

	(void)state;
	fresh(b, 3);
	for (int i = 0; i < 3; i++) {
		health_failure(&b[2], 0, 100, &rr);
		health_failure(&b[0], 0, 200, &rr);
		health_failure(&b[1], 0, 300, &rr);
	}
	for (size_t start = 0; start < 3; start++) {
		assert_int_equal(pick(b, 3, 0, start, 400, &how), 2);
		assert_int_equal(how, HP_FALLBACK);
	}
	/* It fails again (not a probe: still ejected, same interval). */
	assert_int_equal(health_failure(&b[2], 0, 500, &rr), HE_NONE);
	assert_int_equal(b[2].ejected_until, 100 + 2000);
	assert_int_equal(pick(b, 3, 0, 0, 600, &how), 0);
	/* A connection that already failed over gets no fallback. */
	assert_int_equal(pick(b, 3, 1u << 0, 0, 600, &how), -1);
	/* A fallback that connects brings it back. */
	assert_int_equal(health_success(&b[0], 0, &rr), HE_RETURNED);
	assert_int_equal(pick(b, 3, 0, 1, 700, &how), 0);
	assert_int_equal(how, HP_UP);
}

static void
least_connections_takes_the_fewest_open_first_in_turn_on_ties(void **state)
{
	struct health_conf least = rr;
	struct shm_backend b[4];
	int64_t open[4] = { 5, 2, 7, 2 };
	enum health_pick how;

	(void)state;
	least.least = 1;
	fresh(b, 4);
	assert_int_equal(health_pick(b, 4, 0, 0, open, 0, &least, &how), 1);
	assert_int_equal(health_pick(b, 4, 0, 2, open, 0, &least, &how), 3);
	assert_int_equal(health_pick(b, 4, 1u << 1, 0, open, 0, &least, &how),
	    3);
	for (int i = 0; i < 3; i++)
		health_failure(&b[1], 0, 0, &least);
	for (int i = 0; i < 3; i++)
		health_failure(&b[3], 0, 0, &least);
	assert_int_equal(health_pick(b, 4, 0, 0, open, 10, &least, &how), 0);
	assert_int_equal(how, HP_UP);
}

/*
 * Processes racing on one shared socket: each fails it, so exactly one
 * is told it ejected it; then each goes through ROUNDS probe intervals,
 * each a fresh one (the claim of the one before has expired), so each
 * round is probed at most once, whoever gets there first: at most ROUNDS
 * probes in all; then each says the socket connected, and exactly
 * one is told it brought it back.
 */
#define RACERS	4
#define ROUNDS	200000
#define RACE_RUNS 5

struct race {
	struct shm_backend	b;
	_Atomic int		go, failed;	/* start; racers past failing */
	_Atomic long		ejected, probes, returned;
};

static void
racer(struct race *r, int64_t now)
{
	enum health_pick how;

	while (!atomic_load(&r->go))
		;
	for (int i = 0; i < 3; i++)
		if (health_failure(&r->b, 0, now, &rr) == HE_EJECTED)
			atomic_fetch_add(&r->ejected, 1);
	/* All have failed before any probes: else a late failure would
	 * eject the socket a second time, rightly. */
	atomic_fetch_add(&r->failed, 1);
	while (atomic_load(&r->failed) < RACERS)
		;
	for (int64_t i = 0; i < ROUNDS; i++) {
		int64_t t = now + 2000 + i * (rr.probe_ms + 1);

		if (health_pick(&r->b, 1, 0, 0, NULL, t, &rr, &how) == 0 &&
		    how == HP_PROBE)
			atomic_fetch_add(&r->probes, 1);
	}
	if (health_success(&r->b, 1, &rr) == HE_RETURNED)
		atomic_fetch_add(&r->returned, 1);
}

static void
race_once(void)
{
	struct race *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[RACERS];
	int status;

	assert_true(r != MAP_FAILED);
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < RACERS; i++) {
		pids[i] = fork();
		assert_true(pids[i] != -1);
		if (pids[i] == 0) {
			racer(r, 1000);
			_exit(0);
		}
	}
	atomic_store(&r->go, 1);
	for (int i = 0; i < RACERS; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	assert_int_equal(r->ejected, 1);
	assert_int_equal(r->b.ejections, 1);
	/* Never two probes of one round; one may go unprobed when its
	 * claim lost to a racer at an earlier round (no retry: someone
	 * just probed). */
	assert_in_range(r->probes, ROUNDS / 2, ROUNDS);
	assert_int_equal(r->returned, 1);
	assert_int_equal(r->b.returns, 1);
	assert_true(health_is_up(&r->b));
	munmap(r, sizeof(*r));
}

static void
racing_workers_see_each_transition_once(void **state)
{
	(void)state;
	for (int i = 0; i < RACE_RUNS; i++)
		race_once();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ejected_after_threshold_failures_in_a_row),
		cmocka_unit_test(interval_doubles_to_30_s_and_resets_on_return),
		cmocka_unit_test(
		    one_probe_per_interval_and_an_abandoned_claim_expires),
		cmocka_unit_test(round_robin_skips_ejected_and_tried),
		cmocka_unit_test(
		    every_socket_ejected_the_least_recently_failed_is_tried),
		cmocka_unit_test(
		    least_connections_takes_the_fewest_open_first_in_turn_on_ties),
		cmocka_unit_test(racing_workers_see_each_transition_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
