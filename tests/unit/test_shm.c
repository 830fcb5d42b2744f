/*
 * test_shm.c: the shared connection limit under real multi-process races,
 * and exact counts when a process dies mid-operation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"

#define PROCS	4
#define ROUNDS	100000
#define LIMIT	10

/* Shared between the racing processes: the truth the limit must hold. */
struct witness {
	_Atomic int	arrived;	/* processes at the start barrier */
	_Atomic int	holders;	/* admitted and not yet released */
	_Atomic int	worst;		/* most holders ever seen at once */
	_Atomic long	admitted;	/* shm_admit successes, all processes */
	_Atomic long	refused;	/* shm_admit refusals, all processes */
};

/* Each process tries to hold HOLD at once: PROCS * HOLD > LIMIT. */
#define HOLD		5
#define BARRIER_S	30	/* a start barrier not met in this is a bug */
#define RACE_RUNS	3	/* runs tried to catch the limit contended */

/*
 * Wait until every racer has arrived, so that the race starts with all
 * of them running rather than with whichever fork the scheduler ran
 * first.  sched_yield lets a racer not yet on a CPU get there (2 cores,
 * 4 racers); the deadline turns a lost racer into a failure, not a hang.
 */
static int
start_barrier(struct witness *wt)
{
	time_t deadline = time(NULL) + BARRIER_S;

	atomic_fetch_add(&wt->arrived, 1);
	while (atomic_load(&wt->arrived) < PROCS) {
		if (time(NULL) > deadline)
			return -1;
		sched_yield();
	}
	return 0;
}

/* One place under a limit: a connection, or one in the handshake
 * budget (hs), of LIMIT too. */
static int
claim_place(struct shm_region *r, int slot, int hs)
{
	return hs ? shm_hs_claim(r, 0, slot, LIMIT) : shm_admit(r, 0, slot);
}

static void
release_place(struct shm_region *r, int slot, int hs)
{
	if (hs)
		shm_hs_release(r, 0, slot);
	else
		shm_release(r, 0, slot);
}

static void
race(struct shm_region *r, struct witness *wt, int slot, int hs)
{
	for (int i = 0; i < ROUNDS / HOLD; i++) {
		int held = 0;

		for (int j = 0; j < HOLD; j++) {
			int h, worst;
			if (claim_place(r, slot, hs) == -1) {
				atomic_fetch_add(&wt->refused, 1);
				continue;
			}
			held++;
			atomic_fetch_add(&wt->admitted, 1);
			h = atomic_fetch_add(&wt->holders, 1) + 1;
			worst = atomic_load(&wt->worst);
			while (h > worst && !atomic_compare_exchange_weak(
			    &wt->worst, &worst, h))
				;
		}
		for (; held > 0; held--) {
			atomic_fetch_sub(&wt->holders, 1);
			release_place(r, slot, hs);
		}
	}
}

/*
 * One race of PROCS processes behind a start barrier, for connections
 * or (hs) for places in the handshake budget.  The invariant is
 * asserted every time: never more than LIMIT held at once, and counts
 * exact afterwards.  Returns whether the race was contended (refusals
 * happened and the witness saw the limit nearly full), which depends on
 * the scheduler, so the caller retries rather than fails on it.
 */
static int
race_once(int hs)
{
	struct shm_region *r = shm_create();
	struct witness *wt = mmap(NULL, sizeof(*wt), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shm_totals t;
	pid_t pids[PROCS];
	int contended;

	assert_non_null(r);
	assert_true(wt != MAP_FAILED);
	assert_int_equal(shm_listener_claim(r, "race", LIMIT, NULL), 0);
	for (int p = 0; p < PROCS; p++)
		shm_use_slot(r, p);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] != -1);
		if (pids[p] == 0) {
			if (start_barrier(wt) == -1)
				_exit(2);
			race(r, wt, p, hs);
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int st;
		assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	shm_totals(r, 0, &t);
	print_message("worst holders %d of %d; admitted %ld refused %ld\n",
	    atomic_load(&wt->worst), LIMIT, atomic_load(&wt->admitted),
	    atomic_load(&wt->refused));
	/* The invariant, whatever the scheduler did. */
	assert_true(atomic_load(&wt->worst) <= LIMIT);
	assert_int_equal(atomic_load(&wt->holders), 0);
	contended = atomic_load(&wt->refused) > 0 &&
	    atomic_load(&wt->worst) >= LIMIT - 2;
	if (hs) {
		/* Claims count nothing: the callers count the outcome. */
		assert_int_equal(shm_hs_current(r, 0), 0);
		assert_int_equal(t.cur, 0);
		assert_int_equal(t.accepted + t.rejected_limit, 0);
		assert_int_equal(atomic_load(&wt->admitted) +
		    atomic_load(&wt->refused), PROCS * (ROUNDS / HOLD) * HOLD);
		goto out;
	}
	assert_int_equal(t.cur, 0);
	assert_int_equal(t.accepted, t.closed);
	assert_int_equal(t.accepted, (uint64_t)atomic_load(&wt->admitted));
	assert_int_equal(t.rejected_limit, (uint64_t)atomic_load(&wt->refused));
	assert_int_equal(t.accepted + t.rejected_limit,
	    (uint64_t)PROCS * (ROUNDS / HOLD) * HOLD);
	/*
	 * Not "== LIMIT": at the boundary two claimers can both see an
	 * overshoot and both back out, so the witness may never catch all
	 * LIMIT places held at one instant (seen: 9 of 10 under ASan).
	 * Reaching the limit exactly is proven uncontended below.
	 */
out:
	munmap(wt, sizeof(*wt));
	shm_destroy(r);
	return contended;
}

/* Race for connections, or (hs) for places in the handshake budget. */
static void
race_runs(int hs)
{
	for (int run = 1; run <= RACE_RUNS; run++) {
		if (race_once(hs))
			return;
		print_message("run %d: the racers barely overlapped (a busy "
		    "machine); the limit held, racing again\n", run);
	}
	/* The invariant held every run; only the pressure was missing. */
	print_message("skipped: %d runs never pressed the limit (the "
	    "scheduler ran the racers apart); the limit itself held\n",
	    RACE_RUNS);
	skip();
}

static void
limit_holds_across_racing_processes(void **state)
{
	(void)state;
	race_runs(0);
}

/* max_handshakes is claimed as max_connections is, and holds as well. */
static void
handshake_budget_holds_across_racing_processes(void **state)
{
	(void)state;
	race_runs(1);
}

/*
 * The handshake budget's shared state: places claimed exactly to the
 * budget, the slot whose oldest began first (of those late enough),
 * tickets for push-outs asked, and a dead slot's share taken back.
 */
static void
handshake_budget_oldest_slot_and_reclaim(void **state)
{
	struct shm_region *r = shm_create();
	struct shm_counters *c1;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "tls", 10, NULL), 0);
	for (int s = 0; s < 3; s++)
		shm_use_slot(r, s);
	assert_int_equal(shm_hs_claim(r, 0, 0, 3), 0);
	assert_int_equal(shm_hs_claim(r, 0, 1, 3), 0);
	assert_int_equal(shm_hs_claim(r, 0, 1, 3), 0);
	assert_int_equal(shm_hs_claim(r, 0, 2, 3), -1);
	assert_int_equal(shm_hs_current(r, 0), 3);
	assert_int_equal(shm_current(r, 0), 0);	/* a separate count */
	shm_hs_release(r, 0, 0);
	assert_int_equal(shm_hs_claim(r, 0, 2, 3), 0);

	/* None published: no slot; then the earliest at or before. */
	assert_int_equal(shm_hs_oldest_slot(r, 0, 5000), -1);
	c1 = shm_slot(r, 0, 1);
	atomic_store(&c1->hs_oldest_us, 3000);
	atomic_store(&shm_slot(r, 0, 2)->hs_oldest_us, 4000);
	assert_int_equal(shm_hs_oldest_slot(r, 0, 2999), -1);
	assert_int_equal(shm_hs_oldest_slot(r, 0, 3000), 1);
	assert_int_equal(shm_hs_oldest_slot(r, 0, 9000), 1);
	atomic_store(&c1->hs_oldest_us, 0);
	assert_int_equal(shm_hs_oldest_slot(r, 0, 9000), 2);
	atomic_store(&c1->hs_oldest_us, 3000);
	atomic_store(&shm_slot(r, 0, 2)->hs_oldest_us, 0);

	/* Tickets count up; the slot's worker answers up to one. */
	assert_int_equal(shm_evict_ask(r, 0, 1, 8000), 1);
	assert_int_equal(shm_evict_ask(r, 0, 1, 8001), 2);
	assert_int_equal(atomic_load(&c1->evict_asked_us), 8001);

	/* Slot 1 dies: its places go back, it is nobody's oldest, and what
	 * was asked of it reads answered (its asker asks someone else). */
	shm_reclaim_slot(r, 1);
	assert_int_equal(shm_hs_current(r, 0), 1);
	assert_int_equal(shm_hs_oldest_slot(r, 0, 9000), -1);
	assert_int_equal(atomic_load(&c1->evict_served), 2);
	assert_int_equal(shm_hs_claim(r, 0, 0, 3), 0);
	assert_int_equal(shm_hs_claim(r, 0, 0, 3), 0);
	assert_int_equal(shm_hs_claim(r, 0, 0, 3), -1);
	shm_destroy(r);
}

/* shm_claim admits as shm_admit does but leaves the refusal uncounted:
 * the caller counts it, by the limit that refused. */
static void
claim_counts_admissions_not_refusals(void **state)
{
	struct shm_region *r = shm_create();
	enum shm_counter why = SC_COUNT;
	struct shm_totals t;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "one", 1, NULL), 0);
	shm_use_slot(r, 0);
	assert_int_equal(shm_claim(r, 0, 0, &why), 0);
	assert_int_equal(shm_claim(r, 0, 0, &why), -1);
	assert_int_equal(why, SC_REJECTED_LIMIT);
	/* Under its own limit, over the global one: that one's counter. */
	assert_int_equal(shm_listener_claim(r, "two", 5, NULL), 1);
	shm_set_global_limit(r, 1);
	assert_int_equal(shm_claim(r, 1, 0, &why), -1);
	assert_int_equal(why, SC_REJECTED_GLOBAL_LIMIT);
	shm_totals(r, 0, &t);
	assert_int_equal(t.accepted, 1);
	assert_int_equal(t.rejected_limit, 0);
	assert_int_equal(t.cur, 1);
	shm_totals(r, 1, &t);
	assert_int_equal(t.accepted + t.rejected_global_limit, 0);
	shm_destroy(r);
}

static void
limit_is_reached_exactly_when_uncontended(void **state)
{
	struct shm_region *r = shm_create();
	struct shm_totals t;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "one", 3, NULL), 0);
	shm_use_slot(r, 0);
	shm_use_slot(r, 1);
	assert_int_equal(shm_admit(r, 0, 0), 0);
	assert_int_equal(shm_admit(r, 0, 1), 0);
	assert_int_equal(shm_admit(r, 0, 1), 0);
	assert_int_equal(shm_admit(r, 0, 0), -1);
	assert_int_equal(shm_admit(r, 0, 1), -1);
	assert_int_equal(shm_current(r, 0), 3);
	shm_release(r, 0, 1);
	assert_int_equal(shm_admit(r, 0, 0), 0);
	shm_totals(r, 0, &t);
	assert_int_equal(t.cur, 3);
	assert_int_equal(t.accepted, 4);
	assert_int_equal(t.closed, 1);
	assert_int_equal(t.rejected_limit, 2);
	shm_destroy(r);
}

static void
reclaim_returns_a_dead_slots_connections(void **state)
{
	struct shm_region *r = shm_create();
	struct shm_totals t;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "a", 100, NULL), 0);
	assert_int_equal(shm_listener_claim(r, "b", 100, NULL), 1);
	shm_use_slot(r, 0);
	shm_use_slot(r, 1);
	for (int i = 0; i < 5; i++)
		assert_int_equal(shm_admit(r, 0, 1), 0);
	assert_int_equal(shm_admit(r, 1, 1), 0);
	assert_int_equal(shm_admit(r, 0, 0), 0);
	assert_int_equal(shm_reclaim_slot(r, 1), 6);
	shm_totals(r, 0, &t);
	assert_int_equal(t.cur, 1);
	assert_int_equal(t.closed, 5);
	assert_int_equal(t.accepted - t.closed, (uint64_t)t.cur);
	shm_totals(r, 1, &t);
	assert_int_equal(t.cur, 0);
	assert_int_equal(t.accepted, t.closed);
	shm_destroy(r);
}

/*
 * A dead worker's connections that ended with a reason keep it; every
 * other admission of its slot is counted worker_lost, so the reasons add
 * up to closed.  The slot stops being an accepting peer.
 */
static void
reclaim_counts_the_unreasoned_as_worker_lost(void **state)
{
	struct shm_region *r = shm_create();
	struct shm_counters *c;
	struct shm_totals t;
	uint64_t reasons = 0;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "a", 100, NULL), 0);
	shm_use_slot(r, 1);
	c = shm_slot(r, 0, 1);
	atomic_store(&c->accepting, 1);
	for (int i = 0; i < 7; i++)
		assert_int_equal(shm_admit(r, 0, 1), 0);
	shm_release(r, 0, 1);
	shm_count(&c->closed_normal, 1);
	shm_release(r, 0, 1);
	shm_count(&c->closed_idle_timeout, 1);
	shm_release(r, 0, 1);	/* died before counting the reason */
	assert_int_equal(shm_reclaim_slot(r, 1), 4);
	assert_int_equal(atomic_load(&c->accepting), 0);
	shm_totals(r, 0, &t);
	assert_int_equal(t.closed_normal, 1);
	assert_int_equal(t.closed_idle_timeout, 1);
	assert_int_equal(t.closed_worker_lost, 5);
	for (int i = SC_CLOSED_NORMAL; i <= SC_CLOSED_WORKER_LOST; i++)
		reasons += t.n[i];
	assert_int_equal(reasons, t.closed);
	assert_int_equal(t.closed, 7);
	/* A second death of the same slot recounts, never adds twice. */
	assert_int_equal(shm_admit(r, 0, 1), 0);
	assert_int_equal(shm_reclaim_slot(r, 1), 1);
	shm_totals(r, 0, &t);
	assert_int_equal(t.closed_worker_lost, 6);
	assert_int_equal(t.closed, 8);
	shm_destroy(r);
}

/*
 * SIGKILL a process at random points of admit/release, reclaim its slot
 * as the master does, and check that nothing leaked each time.
 */
static void
counts_stay_exact_when_killed_mid_operation(void **state)
{
	struct shm_region *r = shm_create();
	struct timespec pause = { 0, 0 };

	(void)state;
	assert_int_equal(shm_listener_claim(r, "k", 1000, NULL), 0);
	srand(42);
	for (int round = 0; round < 40; round++) {
		struct shm_totals t;
		pid_t pid = fork();

		assert_true(pid != -1);
		if (pid == 0) {
			shm_use_slot(r, 2);
			for (;;) {
				int held = 0;
				for (int i = 0; i < 7; i++)
					held += shm_admit(r, 0, 2) == 0;
				while (held-- > 0)
					shm_release(r, 0, 2);
			}
		}
		pause.tv_nsec = 1000000 + rand() % 5000000;
		nanosleep(&pause, NULL);
		assert_int_equal(kill(pid, SIGKILL), 0);
		assert_int_equal(waitpid(pid, NULL, 0), pid);
		shm_reclaim_slot(r, 2);
		shm_totals(r, 0, &t);
		assert_int_equal(t.cur, 0);
		assert_int_equal(t.accepted, t.closed);
	}
	shm_destroy(r);
}

/*
 * A snapshot taken while a worker's connections come and go may lag but
 * never contradicts itself.  The writer follows the worker's order for a
 * connection that no backend took: admit, release, then count the
 * failure; it marks each connection begun before its admit.  Each
 * snapshot must hold what was true at some instant: a counted failure is
 * no longer open (the stats once said backend_failures=1 with
 * connections=1 for that one connection), and nothing is closed that
 * was not accepted.
 */
static void
snapshots_never_show_a_counted_end_still_open(void **state)
{
	struct shm_region *r = shm_create();
	_Atomic uint64_t *begun = mmap(NULL, sizeof(*begun),
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shm_totals t;
	pid_t pid;
	int status;

	(void)state;
	assert_true(begun != MAP_FAILED);
	assert_int_equal(shm_listener_claim(r, "s", 1000, NULL), 0);
	shm_use_slot(r, 1);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		for (int i = 0; i < ROUNDS; i++) {
			atomic_fetch_add(begun, 1);
			if (shm_admit(r, 0, 1) == -1)
				_exit(1);
			shm_release(r, 0, 1);
			shm_count(&shm_slot(r, 0, 1)->backend_failures, 1);
		}
		_exit(0);
	}
	do {
		shm_totals(r, 0, &t);
		assert_true(t.cur == 0 || t.cur == 1);
		/* Failed and still open would make one connection two. */
		assert_true(t.backend_failures + (uint64_t)t.cur <=
		    atomic_load(begun));
		assert_true(t.backend_failures <= t.closed);
		assert_true(t.closed <= t.accepted);
	} while (t.backend_failures < ROUNDS);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	shm_totals(r, 0, &t);
	assert_int_equal(t.cur, 0);
	assert_int_equal(t.accepted, ROUNDS);
	assert_int_equal(t.closed, ROUNDS);
	assert_int_equal(munmap((void *)begun, sizeof(*begun)), 0);
	shm_destroy(r);
}

/*
 * rate_limit with the clock stopped: burst + 1 at once, then one per
 * interval; idle time banks no more than the burst; refusals counted.
 */
static void
rate_admits_the_burst_then_one_per_interval(void **state)
{
	struct shm_region *r = shm_create();
	const uint64_t iv = 100000000, t0 = 5000000000ULL;	/* 10/s */
	struct shm_totals t;
	int ok = 0;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "rate", 1000, NULL), 0);
	shm_use_slot(r, 0);
	for (int i = 0; i < 20; i++)
		ok += shm_rate_admit(r, 0, 0, t0, iv, 4) == 0;
	assert_int_equal(ok, 5);
	assert_int_equal(shm_rate_admit(r, 0, 0, t0 + iv - 1, iv, 4), -1);
	assert_int_equal(shm_rate_admit(r, 0, 0, t0 + iv, iv, 4), 0);
	assert_int_equal(shm_rate_admit(r, 0, 0, t0 + iv, iv, 4), -1);
	/* 100 s idle: still only burst + 1 at once. */
	ok = 0;
	for (int i = 0; i < 20; i++)
		ok += shm_rate_admit(r, 0, 0, t0 + 100 * 1000000000ULL, iv, 4) == 0;
	assert_int_equal(ok, 5);
	/* No burst: exactly one per interval. */
	assert_int_equal(shm_listener_claim(r, "strict", 1000, NULL), 1);
	assert_int_equal(shm_rate_admit(r, 1, 0, t0, iv, 0), 0);
	assert_int_equal(shm_rate_admit(r, 1, 0, t0, iv, 0), -1);
	assert_int_equal(shm_rate_admit(r, 1, 0, t0 + iv, iv, 0), 0);
	shm_totals(r, 0, &t);
	assert_int_equal(t.rejected_rate, 15 + 1 + 1 + 15);
	shm_destroy(r);
}

/*
 * Four processes draw on one rate, each walking the same timeline of
 * ROUNDS intervals: together they get at most ROUNDS + burst + 1, not
 * four times that, however the compare-and-swaps race (a plain load and
 * store here loses updates and lets far more through).
 */
static void
rate_holds_across_racing_processes(void **state)
{
	struct shm_region *r = shm_create();
	const uint64_t base = 7000000000ULL, iv = 1000;
	struct witness *wt = mmap(NULL, sizeof(*wt), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shm_totals t;
	pid_t pids[PROCS];

	(void)state;
	assert_true(wt != MAP_FAILED);
	assert_int_equal(shm_listener_claim(r, "rate", 1000, NULL), 0);
	for (int p = 0; p < PROCS; p++)
		shm_use_slot(r, p);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] != -1);
		if (pids[p] == 0) {
			for (int i = 0; i < ROUNDS; i++)
				if (shm_rate_admit(r, 0, p, base + i * iv, iv,
				    49) == 0)
					atomic_fetch_add(&wt->holders, 1);
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++)
		assert_int_equal(waitpid(pids[p], NULL, 0), pids[p]);
	shm_totals(r, 0, &t);
	assert_true(atomic_load(&wt->holders) <= ROUNDS + 50);
	assert_int_equal(t.rejected_rate + (uint64_t)atomic_load(&wt->holders),
	    (uint64_t)PROCS * ROUNDS);
	assert_int_equal(munmap(wt, sizeof(*wt)), 0);
	shm_destroy(r);
}

/*
 * A reload maps listeners by name: a kept name keeps its index, counts
 * and in-flight connections; a new name never takes an index a running
 * worker still counts on, and a reused index starts from zero.
 */
static void
listener_index_follows_the_name_across_reloads(void **state)
{
	struct shm_region *r = shm_create();
	struct shm_totals t;
	uint64_t busy;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "a", 5, NULL), 0);
	assert_int_equal(shm_listener_claim(r, "b", 5, NULL), 1);
	shm_use_slot(r, 0);
	assert_int_equal(shm_admit(r, 1, 0), 0);
	/* Reload: "b" kept with a new limit, "a" dropped, "c" added. */
	assert_int_equal(shm_listener_claim(r, "b", 1, NULL), 1);
	assert_int_equal(shm_admit(r, 1, 0), -1);	/* 1 open, limit 1 */
	shm_listener_release(r, 0);
	busy = 1;	/* an old worker may still hold "a"'s index */
	assert_int_equal(shm_listener_claim(r, "c", 5, &busy), 2);
	assert_int_equal(shm_listener_find(r, "a"), -1);
	/* "a" back while its old workers drain: the same index, same count. */
	assert_int_equal(shm_admit(r, 0, 0), 0);
	assert_int_equal(shm_listener_claim(r, "a", 5, &busy), 0);
	assert_int_equal(shm_current(r, 0), 1);
	/* Dropped again; once no worker counts on it, a new name reuses it. */
	shm_release(r, 0, 0);
	shm_listener_release(r, 0);
	busy = 0;
	assert_int_equal(shm_listener_claim(r, "d", 5, &busy), 0);
	shm_totals(r, 0, &t);
	assert_int_equal(t.cur, 0);
	assert_int_equal(t.accepted, 0);
	shm_destroy(r);
}

/*
 * The top-level limit: 4 over two listeners, the second reserving 2.
 * The first gets the 2 of the pool and no more, the second its 2 and
 * then one of the pool once the first gives one back; refusals are
 * counted by which limit made them; a dropped listener reserves nothing.
 */
static void
global_limit_keeps_a_reservation_for_its_listener(void **state)
{
	struct shm_region *r = shm_create();
	struct shm_global g;
	struct shm_totals t;

	(void)state;
	assert_int_equal(shm_listener_claim(r, "first", 100, NULL), 0);
	assert_int_equal(shm_listener_claim(r, "second", 100, NULL), 1);
	shm_listener_reserve(r, 1, 2);
	shm_set_global_limit(r, 4);
	shm_use_slot(r, 0);
	shm_use_slot(r, 1);
	assert_int_equal(shm_admit(r, 0, 0), 0);
	assert_int_equal(shm_admit(r, 0, 1), 0);
	assert_int_equal(shm_admit(r, 0, 0), -1);	/* 2 are the second's */
	assert_int_equal(shm_admit(r, 1, 1), 0);
	assert_int_equal(shm_admit(r, 1, 0), 0);
	assert_int_equal(shm_admit(r, 1, 1), -1);	/* all 4 taken */
	shm_release(r, 0, 1);
	assert_int_equal(shm_admit(r, 1, 0), 0);	/* from the pool */
	assert_int_equal(shm_admit(r, 0, 0), -1);
	shm_global(r, &g);
	assert_int_equal(g.max_connections, 4);
	assert_int_equal(g.connections, 4);
	assert_int_equal(g.reserved, 2);
	assert_int_equal(g.committed, 4);
	shm_totals(r, 0, &t);
	assert_int_equal(t.rejected_global_limit, 2);
	assert_int_equal(t.rejected_limit, 0);
	shm_totals(r, 1, &t);
	assert_int_equal(t.rejected_global_limit, 1);
	/* A listener's own limit is its own refusal, counted as such. */
	shm_listener_rename(r, 0, "first", 1);
	assert_int_equal(shm_admit(r, 0, 0), -1);
	shm_totals(r, 0, &t);
	assert_int_equal(t.rejected_limit, 1);
	assert_int_equal(t.rejected_global_limit, 2);
	/* Dropped, the second reserves nothing; its 3 still count. */
	shm_listener_release(r, 1);
	shm_listener_rename(r, 0, "first", 100);
	shm_release(r, 0, 0);
	shm_global(r, &g);
	assert_int_equal(g.reserved, 0);
	assert_int_equal(g.committed, 3);
	assert_int_equal(shm_admit(r, 0, 0), 0);
	assert_int_equal(shm_admit(r, 0, 0), -1);
	/* No global limit: only the listener's own. */
	shm_set_global_limit(r, 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(shm_admit(r, 0, 1), 0);
	shm_destroy(r);
}

/* What the racers over two listeners hold, as a witness outside shm. */
struct witness2 {
	_Atomic int	arrived;
	_Atomic int	holders[2];	/* per listener */
	_Atomic int	worst_total;	/* most held at once, both */
	_Atomic int	worst_first;	/* most the first held at once */
	_Atomic long	admitted, refused;
};

#define G_LIMIT		10
#define G_RESERVED	3	/* the second listener's */

static void
note_worst(_Atomic int *worst, int h)
{
	int w = atomic_load(worst);

	while (h > w && !atomic_compare_exchange_weak(worst, &w, h))
		;
}

/* One racer: HOLD claims at a time on listener li, then their release. */
static void
race2(struct shm_region *r, struct witness2 *wt, int li, int slot)
{
	for (int i = 0; i < ROUNDS / HOLD; i++) {
		int held = 0;

		for (int j = 0; j < HOLD; j++) {
			int mine, other;
			if (shm_admit(r, li, slot) == -1) {
				atomic_fetch_add(&wt->refused, 1);
				continue;
			}
			held++;
			atomic_fetch_add(&wt->admitted, 1);
			mine = atomic_fetch_add(&wt->holders[li], 1) + 1;
			other = atomic_load(&wt->holders[1 - li]);
			note_worst(&wt->worst_total, mine + other);
			if (li == 0)
				note_worst(&wt->worst_first, mine);
		}
		for (; held > 0; held--) {
			atomic_fetch_sub(&wt->holders[li], 1);
			shm_release(r, li, slot);
		}
	}
}

/*
 * Four processes, two per listener, against a global limit of 10 of
 * which the second listener reserves 3: never more than 10 held, never
 * more than 7 by the first, and every claim counted once, whatever the
 * scheduler does.  (A witness counts its holder after the admission and
 * before the release, so it can only see fewer than are held.)
 */
static void
global_limit_holds_across_racing_processes(void **state)
{
	struct shm_region *r = shm_create();
	struct witness2 *wt = mmap(NULL, sizeof(*wt), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shm_totals t0, t1;
	pid_t pids[PROCS];

	(void)state;
	assert_non_null(r);
	assert_true(wt != MAP_FAILED);
	assert_int_equal(shm_listener_claim(r, "first", 1000, NULL), 0);
	assert_int_equal(shm_listener_claim(r, "second", 1000, NULL), 1);
	shm_listener_reserve(r, 1, G_RESERVED);
	shm_set_global_limit(r, G_LIMIT);
	for (int p = 0; p < PROCS; p++)
		shm_use_slot(r, p);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] != -1);
		if (pids[p] == 0) {
			time_t deadline = time(NULL) + BARRIER_S;

			atomic_fetch_add(&wt->arrived, 1);
			while (atomic_load(&wt->arrived) < PROCS)
				if (time(NULL) > deadline)
					_exit(2);
			race2(r, wt, p % 2, p);
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int st;
		assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	shm_totals(r, 0, &t0);
	shm_totals(r, 1, &t1);
	print_message("worst held %d of %d, the first %d of %d; refused %ld\n",
	    atomic_load(&wt->worst_total), G_LIMIT,
	    atomic_load(&wt->worst_first), G_LIMIT - G_RESERVED,
	    atomic_load(&wt->refused));
	assert_true(atomic_load(&wt->worst_total) <= G_LIMIT);
	assert_true(atomic_load(&wt->worst_first) <= G_LIMIT - G_RESERVED);
	assert_int_equal(t0.cur + t1.cur, 0);
	assert_int_equal(t0.accepted + t1.accepted,
	    (uint64_t)atomic_load(&wt->admitted));
	assert_int_equal(t0.rejected_global_limit + t1.rejected_global_limit +
	    t0.rejected_limit + t1.rejected_limit,
	    (uint64_t)atomic_load(&wt->refused));
	assert_int_equal(t0.rejected_limit + t1.rejected_limit, 0);
	assert_int_equal(munmap(wt, sizeof(*wt)), 0);
	shm_destroy(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(limit_is_reached_exactly_when_uncontended),
		cmocka_unit_test(limit_holds_across_racing_processes),
		cmocka_unit_test(handshake_budget_holds_across_racing_processes),
		cmocka_unit_test(handshake_budget_oldest_slot_and_reclaim),
		cmocka_unit_test(claim_counts_admissions_not_refusals),
		cmocka_unit_test(reclaim_returns_a_dead_slots_connections),
		cmocka_unit_test(reclaim_counts_the_unreasoned_as_worker_lost),
		cmocka_unit_test(counts_stay_exact_when_killed_mid_operation),
		cmocka_unit_test(listener_index_follows_the_name_across_reloads),
		cmocka_unit_test(snapshots_never_show_a_counted_end_still_open),
		cmocka_unit_test(rate_admits_the_burst_then_one_per_interval),
		cmocka_unit_test(rate_holds_across_racing_processes),
		cmocka_unit_test(global_limit_keeps_a_reservation_for_its_listener),
		cmocka_unit_test(global_limit_holds_across_racing_processes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
