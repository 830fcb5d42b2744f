/*
 * test_source.c: sources, addresses masked to source_prefix_v4 and
 * source_prefix_v6; max_connections_per_source in shared memory, exact
 * under racing processes, after a worker's death and as entries are
 * reused; a full table refuses rather than lets a client through
 * uncounted.  rate_limit_per_source on a stopped clock: burst + 1 at
 * once, then one per interval, exact under racing processes; its words
 * are kept while they hold a budget and taken by others once they do
 * not, and a source whose word another holds is let in unrated.
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
#include <sys/un.h>
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

static struct sockaddr_in6
v6(const char *text)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6 };

	assert_int_equal(inet_pton(AF_INET6, text, &sa.sin6_addr), 1);
	return sa;
}

#define SA(x)	((struct sockaddr *)&(x))

/* The source of x, by whole addresses (the prefixes at their longest). */
static struct source_key
whole(const struct sockaddr *sa)
{
	struct source_key k;

	assert_int_equal(source_key_of(sa, 32, 128, &k), 0);
	return k;
}

/* Do a and b fall in one source with these prefixes? */
static int
same_source(const struct sockaddr *a, const struct sockaddr *b, int p4, int p6)
{
	struct source_key ka, kb;

	assert_int_equal(source_key_of(a, p4, p6, &ka), 0);
	assert_int_equal(source_key_of(b, p4, p6, &kb), 0);
	return memcmp(&ka, &kb, sizeof(ka)) == 0;
}

/*
 * Masking: an IPv4 client by source_prefix_v4, an IPv6 one by
 * source_prefix_v6, to the bit; an IPv4-mapped IPv6 address is its IPv4
 * address, masked by the IPv4 prefix and never by the IPv6 one.
 */
static void
addresses_are_masked_to_their_familys_prefix(void **state)
{
	struct sockaddr_in a = v4(0x0a010203), b = v4(0x0a0102c8),
	    c = v4(0x0a010301), d = v4(0x0a0103ff);
	struct sockaddr_in6 x = v6("2001:db8:1:2::1"),
	    y = v6("2001:db8:1:2:ffff:ffff:ffff:ffff"),
	    z = v6("2001:db8:1:3::1"), m = v6("::ffff:10.1.2.3"),
	    n = v6("::ffff:10.1.3.1");
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	struct source_key k;

	(void)state;
	assert_false(same_source(SA(a), SA(b), 32, 64));
	assert_true(same_source(SA(a), SA(b), 24, 64));
	assert_false(same_source(SA(a), SA(c), 24, 64));
	/* 10.1.2.0/23 holds 10.1.3.x; a /24 does not. */
	assert_true(same_source(SA(a), SA(d), 23, 64));
	assert_true(same_source(SA(a), SA(c), 8, 128));
	assert_true(same_source(SA(x), SA(y), 32, 64));
	assert_false(same_source(SA(x), SA(y), 32, 65));
	assert_false(same_source(SA(x), SA(z), 32, 64));
	/* 2001:db8:1:2::/63 holds 2001:db8:1:3::. */
	assert_true(same_source(SA(x), SA(z), 32, 63));
	assert_false(same_source(SA(x), SA(y), 32, 128));
	/* Mapped is IPv4: masked by the IPv4 prefix only. */
	assert_true(same_source(SA(a), SA(m), 32, 128));
	assert_true(same_source(SA(b), SA(m), 24, 128));
	assert_false(same_source(SA(m), SA(n), 24, 32));
	assert_true(same_source(SA(m), SA(n), 16, 128));
	/* However short the IPv6 prefix, IPv4 clients stay apart from it. */
	assert_false(same_source(SA(a), SA(x), 8, 32));
	assert_int_equal(source_key_of(SA(u), 32, 64, &k), -1);
}

static void
each_address_has_its_own_limit(void **state)
{
	struct shm_region *r = shm_create();
	struct sockaddr_in a = v4(0x7f000002), b = v4(0x7f000003);
	struct sockaddr_in6 m = v6("::ffff:127.0.0.2");
	struct source_key ka = whole(SA(a)), kb = whole(SA(b)),
	    km = whole(SA(m));
	int32_t e[4], x;

	(void)state;
	shm_use_slot(r, 0);
	shm_use_slot(r, 1);
	assert_int_equal(source_admit(r, 0, 0, &ka, 3, &e[0]), 0);
	assert_int_equal(source_admit(r, 0, 1, &ka, 3, &e[1]), 0);
	/* The same client seen through a dual-stack socket. */
	assert_int_equal(source_admit(r, 0, 0, &km, 3, &e[2]), 0);
	assert_int_equal(source_admit(r, 0, 1, &ka, 3, &x), -1);
	assert_int_equal(source_open(r, 0, &ka), 3);
	/* Another address, another listener: counted apart. */
	assert_int_equal(source_admit(r, 0, 1, &kb, 3, &e[3]), 0);
	assert_int_equal(source_admit(r, 1, 0, &ka, 3, &x), 0);
	source_release(r, 0, x);
	source_release(r, 1, e[1]);
	assert_int_equal(source_open(r, 0, &ka), 2);
	assert_int_equal(source_admit(r, 0, 1, &ka, 3, &e[1]), 0);
	assert_int_equal(source_open(r, 1, &ka), 0);
	assert_int_equal(source_open(r, 0, &kb), 1);
	shm_destroy(r);
}

/* Two hosts of one /64 are one source: they share its limit. */
static void
hosts_of_one_prefix_share_the_limit(void **state)
{
	struct shm_region *r = shm_create();
	struct sockaddr_in6 x = v6("2001:db8:1:2::1"),
	    y = v6("2001:db8:1:2:a:b:c:d"), z = v6("2001:db8:1:3::1");
	struct source_key kx, ky, kz;
	int32_t e;

	(void)state;
	assert_int_equal(source_key_of(SA(x), 32, 64, &kx), 0);
	assert_int_equal(source_key_of(SA(y), 32, 64, &ky), 0);
	assert_int_equal(source_key_of(SA(z), 32, 64, &kz), 0);
	shm_use_slot(r, 0);
	shm_use_slot(r, 1);
	assert_int_equal(source_admit(r, 0, 0, &kx, 2, &e), 0);
	assert_int_equal(source_admit(r, 0, 1, &ky, 2, &e), 0);
	assert_int_equal(source_admit(r, 0, 0, &ky, 2, &e), -1);
	assert_int_equal(source_admit(r, 0, 1, &kx, 2, &e), -1);
	assert_int_equal(source_admit(r, 0, 0, &kz, 2, &e), 0);
	assert_int_equal(source_open(r, 0, &kx), 2);
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
	struct source_key k = whole(SA(a));
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
				if (source_admit(r, 0, p, &k, LIMIT,
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
	assert_int_equal(source_open(r, 0, &k), 0);
	munmap((void *)w, 2 * sizeof(int));
	shm_destroy(r);
}

/* A dead worker's connections stop counting once its slot is reclaimed. */
static void
a_reclaimed_slot_counts_nothing(void **state)
{
	struct shm_region *r = shm_create();
	struct sockaddr_in a = v4(0x7f000004);
	struct source_key k = whole(SA(a));
	int32_t e;

	(void)state;
	shm_use_slot(r, 2);
	shm_use_slot(r, 3);
	for (int i = 0; i < 5; i++)
		assert_int_equal(source_admit(r, 0, 2, &k, 5, &e), 0);
	assert_int_equal(source_admit(r, 0, 3, &k, 5, &e), -1);
	shm_reclaim_slot(r, 2);
	assert_int_equal(source_open(r, 0, &k), 0);
	assert_int_equal(source_admit(r, 0, 3, &k, 5, &e), 0);
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
		struct source_key k = whole(SA(a));
		assert_int_equal(source_admit(r, 0, 0, &k, 1, &e), 0);
		source_release(r, 0, e);
	}
	for (uint32_t i = 0; i < SOURCE_ENTRIES + SOURCE_PROBES; i++) {
		struct sockaddr_in a = v4(0x0b000000 + i);
		struct source_key k = whole(SA(a));
		int rc = source_admit(r, 0, 0, &k, 1, &e);
		assert_true(rc == 0 || rc == -2);
		held += rc == 0;
		full += rc == -2;
	}
	assert_true(full > 0);
	assert_true(held > SOURCE_ENTRIES / 2);
	shm_destroy(r);
}

#define SEC	UINT64_C(1000000)	/* in the µs of source_rate_admit */
#define T0	(1000 * SEC)		/* a stopped clock */
#define SEED	UINT64_C(0x5eed)	/* a table laid out the same each run */

/*
 * One source at 1/s with a burst of 2: three at once, then one a second;
 * a refusal uses nothing up; another source or listener has its own.
 */
static void
the_rate_allows_the_burst_then_one_per_interval(void **state)
{
	struct shm_region *r = shm_create();
	struct sockaddr_in a = v4(0x7f000002), b = v4(0x7f000003);
	struct source_key ka = whole(SA(a)), kb = whole(SA(b));

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(source_rate_admit(r, 0, &ka, T0, SEC, 2), 0);
	assert_int_equal(source_rate_admit(r, 0, &ka, T0, SEC, 2), -1);
	for (int i = 0; i < 5; i++)
		assert_int_equal(source_rate_admit(r, 0, &ka, T0 + SEC - 1, SEC,
		    2), -1);
	assert_int_equal(source_rate_admit(r, 0, &ka, T0 + SEC, SEC, 2), 0);
	assert_int_equal(source_rate_admit(r, 0, &ka, T0 + SEC, SEC, 2), -1);
	assert_int_equal(source_rate_admit(r, 0, &kb, T0, SEC, 2), 0);
	assert_int_equal(source_rate_admit(r, 1, &ka, T0, SEC, 2), 0);
	/* Idle long enough, the whole burst again, and no more. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(source_rate_admit(r, 0, &ka, T0 + 60 * SEC,
		    SEC, 2), 0);
	assert_int_equal(source_rate_admit(r, 0, &ka, T0 + 60 * SEC, SEC, 2),
	    -1);
	shm_destroy(r);
}

#define RATE_TRIES	20000
#define RATE_BURST	9999

/*
 * Four processes, started together, race for one source's budget on a
 * stopped clock: exactly burst + 1 get in.
 */
static void
the_rate_is_exact_across_racing_processes(void **state)
{
	struct shm_region *r = shm_create();
	_Atomic int *w = mmap(NULL, 2 * sizeof(int), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);	/* admitted, ready */
	struct sockaddr_in a = v4(0x7f00000a);
	struct source_key k = whole(SA(a));
	pid_t pids[PROCS];

	(void)state;
	assert_true(w != MAP_FAILED);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] != -1);
		if (pids[p] != 0)
			continue;
		atomic_fetch_add(&w[1], 1);
		while (atomic_load(&w[1]) < PROCS)
			;
		for (int i = 0; i < RATE_TRIES; i++)
			if (source_rate_admit(r, 0, &k, T0, SEC, RATE_BURST) ==
			    0)
				atomic_fetch_add(&w[0], 1);
		_exit(0);
	}
	for (int p = 0; p < PROCS; p++)
		assert_int_equal(waitpid(pids[p], NULL, 0), pids[p]);
	assert_int_equal(atomic_load(&w[0]), RATE_BURST + 1);
	munmap((void *)w, 2 * sizeof(int));
	shm_destroy(r);
}

/* Result of one connection from source k at time t: 1/s, burst 0. */
static int
one(struct shm_region *r, const struct source_key *k, uint64_t t)
{
	return source_rate_admit(r, 0, k, t, SEC, 0);
}

/*
 * Two sources whose hashes meet in one word.  The word holds its
 * source's budget as long as there is one (rate state has nothing to do
 * with open connections), the other source is let in unrated meanwhile,
 * never refused and taking nothing from it; once the budget is whole
 * again the word is anyone's.
 */
static void
a_word_is_kept_while_it_holds_a_budget(void **state)
{
	static struct source_key k[SOURCE_RATE_ENTRIES];
	struct shm_region *r = shm_create();
	int met = -1, holder = -1;

	(void)state;
	r->rates.seed = SEED;
	/* Sources one after another until one finds its word taken. */
	for (int i = 0; i < SOURCE_RATE_ENTRIES && met == -1; i++) {
		struct sockaddr_in a = v4(0x0a000000 + (uint32_t)i);
		int rc;

		k[i] = whole(SA(a));
		rc = one(r, &k[i], T0);
		assert_int_not_equal(rc, -1);
		if (rc == 1)
			met = i;
	}
	assert_int_not_equal(met, -1);
	/* On a fresh table, that one first: the one it met is now unrated. */
	shm_destroy(r);
	r = shm_create();
	r->rates.seed = SEED;
	assert_int_equal(one(r, &k[met], T0), 0);
	for (int i = 0; i < met && holder == -1; i++)
		if (one(r, &k[i], T0) == 1)
			holder = i;
	assert_int_not_equal(holder, -1);
	assert_int_equal(one(r, &k[holder], T0), 1);
	assert_int_equal(one(r, &k[met], T0), -1);	/* its budget kept */
	assert_int_equal(one(r, &k[met], T0 + SEC - 1), -1);
	/* A second on, the word holds nothing: the other one takes it. */
	assert_int_equal(one(r, &k[holder], T0 + SEC), 0);
	assert_int_equal(one(r, &k[holder], T0 + SEC), -1);
	assert_int_equal(one(r, &k[met], T0 + SEC), 1);
	shm_destroy(r);
}

/*
 * Twice as many sources as words, at one instant: none is refused for a
 * word it cannot have, many are let in unrated.  A second later every
 * word is free again: fresh sources are rated, not locked out of the
 * table by the ones that came before.
 */
static void
a_full_table_lets_sources_in_and_frees_itself(void **state)
{
	struct shm_region *r = shm_create();
	int unrated = 0, rated = 0;

	(void)state;
	r->rates.seed = SEED;
	for (uint32_t i = 0; i < 2 * SOURCE_RATE_ENTRIES; i++) {
		struct sockaddr_in a = v4(0x0a000000 + i);
		struct source_key k = whole(SA(a));
		int rc = source_rate_admit(r, 0, &k, T0, SEC, 1);

		assert_int_not_equal(rc, -1);
		unrated += rc == 1;
	}
	assert_true(unrated > SOURCE_RATE_ENTRIES / 2);
	for (uint32_t i = 0; i < 1000; i++) {
		struct sockaddr_in a = v4(0x0b000000 + i);
		struct source_key k = whole(SA(a));

		rated += source_rate_admit(r, 0, &k, T0 + 2 * SEC, SEC, 1) == 0;
	}
	assert_true(rated >= 990);
	shm_destroy(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(addresses_are_masked_to_their_familys_prefix),
		cmocka_unit_test(each_address_has_its_own_limit),
		cmocka_unit_test(hosts_of_one_prefix_share_the_limit),
		cmocka_unit_test(the_limit_holds_across_racing_processes),
		cmocka_unit_test(a_reclaimed_slot_counts_nothing),
		cmocka_unit_test(entries_are_reused_and_a_full_table_refuses),
		cmocka_unit_test(the_rate_allows_the_burst_then_one_per_interval),
		cmocka_unit_test(the_rate_is_exact_across_racing_processes),
		cmocka_unit_test(a_word_is_kept_while_it_holds_a_budget),
		cmocka_unit_test(a_full_table_lets_sources_in_and_frees_itself),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
