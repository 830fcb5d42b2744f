/*
 * test_source.c: max_connections_per_source in shared memory, exact
 * under racing processes, after a worker's death and as entries are
 * reused; a full table refuses rather than lets a client through
 * uncounted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm.h"

static struct sockaddr_in
v4(uint32_t host)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };

	sa.sin_addr.s_addr = htonl(host);
	return sa;
}

#define SA(x)	((struct sockaddr *)&(x))

static void
each_address_has_its_own_limit(void **state)
{
	struct shm_region *r = shm_create();
	struct sockaddr_in a = v4(0x7f000002), b = v4(0x7f000003);
	struct sockaddr_in6 m = { .sin6_family = AF_INET6 };
	int32_t e[4], x;

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.2", &m.sin6_addr), 1);
	shm_use_slot(r, 0);
	shm_use_slot(r, 1);
	assert_int_equal(source_admit(r, 0, 0, SA(a), 3, &e[0]), 0);
	assert_int_equal(source_admit(r, 0, 1, SA(a), 3, &e[1]), 0);
	/* The same client seen through a dual-stack socket. */
	assert_int_equal(source_admit(r, 0, 0, SA(m), 3, &e[2]), 0);
	assert_int_equal(source_admit(r, 0, 1, SA(a), 3, &x), -1);
	assert_int_equal(source_open(r, 0, SA(a)), 3);
	/* Another address, another listener: counted apart. */
	assert_int_equal(source_admit(r, 0, 1, SA(b), 3, &e[3]), 0);
	assert_int_equal(source_admit(r, 1, 0, SA(a), 3, &x), 0);
	source_release(r, 0, x);
	source_release(r, 1, e[1]);
	assert_int_equal(source_open(r, 0, SA(a)), 2);
	assert_int_equal(source_admit(r, 0, 1, SA(a), 3, &e[1]), 0);
	assert_int_equal(source_open(r, 1, SA(a)), 0);
	assert_int_equal(source_open(r, 0, SA(b)), 1);
	shm_destroy(r);
}

#define PROCS	4
#define ROUNDS	20000
#define LIMIT	10
#define HOLD	5

/* Four processes, one address, each trying to hold HOLD at once. */
static void
the_limit_holds_across_racing_processes(void **state)
{
	struct shm_region *r = shm_create();
	_Atomic int *w = mmap(NULL, 2 * sizeof(int), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);	/* holders, worst */
	struct sockaddr_in a = v4(0x7f000009);
	pid_t pids[PROCS];

	(void)state;
	assert_true(w != MAP_FAILED);
	for (int p = 0; p < PROCS; p++)
		shm_use_slot(r, p);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] != -1);
		if (pids[p] != 0)
			continue;
		for (int i = 0; i < ROUNDS; i++) {
			int32_t held[HOLD];
			int n = 0;

			for (int j = 0; j < HOLD; j++) {
				int h, worst;
				if (source_admit(r, 0, p, SA(a), LIMIT,
				    &held[n]) != 0)
					continue;
				n++;
				h = atomic_fetch_add(&w[0], 1) + 1;
				worst = atomic_load(&w[1]);
				while (h > worst &&
				    !atomic_compare_exchange_weak(&w[1], &worst, h))
					;
			}
			while (n-- > 0) {
				atomic_fetch_sub(&w[0], 1);
				source_release(r, p, held[n]);
			}
		}
		_exit(0);
	}
	for (int p = 0; p < PROCS; p++)
		assert_int_equal(waitpid(pids[p], NULL, 0), pids[p]);
	assert_true(atomic_load(&w[1]) <= LIMIT);
	assert_true(atomic_load(&w[1]) >= HOLD);
	assert_int_equal(source_open(r, 0, SA(a)), 0);
	munmap((void *)w, 2 * sizeof(int));
	shm_destroy(r);
}

/* A dead worker's connections stop counting once its slot is reclaimed. */
static void
a_reclaimed_slot_counts_nothing(void **state)
{
	struct shm_region *r = shm_create();
	struct sockaddr_in a = v4(0x7f000004);
	int32_t e;

	(void)state;
	shm_use_slot(r, 2);
	shm_use_slot(r, 3);
	for (int i = 0; i < 5; i++)
		assert_int_equal(source_admit(r, 0, 2, SA(a), 5, &e), 0);
	assert_int_equal(source_admit(r, 0, 3, SA(a), 5, &e), -1);
	shm_reclaim_slot(r, 2);
	assert_int_equal(source_open(r, 0, SA(a)), 0);
	assert_int_equal(source_admit(r, 0, 3, SA(a), 5, &e), 0);
	shm_destroy(r);
}

/*
 * Entries are reused once their count is 0, so many clients coming and
 * going never fill a table; many held at once do, and then a client is
 * refused (-2), never let in uncounted or refused as over its limit.
 */
static void
entries_are_reused_and_a_full_table_refuses(void **state)
{
	struct shm_region *r = shm_create();
	int32_t e;
	int full = 0, held = 0;

	(void)state;
	shm_use_slot(r, 0);
	for (uint32_t i = 0; i < 4 * SOURCE_ENTRIES; i++) {
		struct sockaddr_in a = v4(0x0a000000 + i);
		assert_int_equal(source_admit(r, 0, 0, SA(a), 1, &e), 0);
		source_release(r, 0, e);
	}
	for (uint32_t i = 0; i < SOURCE_ENTRIES + SOURCE_PROBES; i++) {
		struct sockaddr_in a = v4(0x0b000000 + i);
		int rc = source_admit(r, 0, 0, SA(a), 1, &e);
		assert_true(rc == 0 || rc == -2);
		held += rc == 0;
		full += rc == -2;
	}
	assert_true(full > 0);
	assert_true(held > SOURCE_ENTRIES / 2);
	shm_destroy(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_address_has_its_own_limit),
		cmocka_unit_test(the_limit_holds_across_racing_processes),
		cmocka_unit_test(a_reclaimed_slot_counts_nothing),
		cmocka_unit_test(entries_are_reused_and_a_full_table_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
