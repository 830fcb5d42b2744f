/*
 * backend_health.c: passive health per backend socket, shared by every
 * worker, and the choice of socket for a connection.
 *
 * A socket is up until backend_fail_threshold connects in a row fail on
 * it, from any workers; then it is ejected until ejected_until, and no
 * connection tries it.  When that time has come, the first connection to
 * win a compare-and-swap on probe_until probes it: success brings it back
 * at once, failure ejects it again for twice the interval (up to
 * HEALTH_MAX_INTERVAL_MS).  The claim expires by itself (probe_until is a
 * time, not a flag), so a worker that dies mid-probe blocks nobody past
 * it.  Each transition is a compare-and-swap on ejected_until, so of two
 * workers racing to eject or bring back a socket exactly one is told it
 * did, and logs it.  No locks: every word is an atomic; a reader may see
 * the counters of a socket a moment apart, never a transition twice.
 *
 * The clock is passed in (ms, CLOCK_MONOTONIC) so the unit tests drive it.
 */
#include "backend_health.h"

#include <stdatomic.h>

int
health_is_up(const struct shm_backend *b)
{
	return atomic_load(&b->ejected_until) == 0;
}

/* Claim the probe of ejected socket b if its interval has ended. */
static int
probe_claim(struct shm_backend *b, int64_t now_ms,
    const struct health_conf *hc)
{
	int64_t until = atomic_load(&b->ejected_until);
	int64_t claim = atomic_load(&b->probe_until);

	if (until == 0 || now_ms < until || claim > now_ms)
		return 0;
	if (!atomic_compare_exchange_strong(&b->probe_until, &claim,
	    now_ms + hc->probe_ms))
		return 0;
	/*
	 * The probe before ours may have ended between our two loads: it
	 * moved ejected_until (back up, or ejected for longer) before it
	 * freed the claim, so a second look tells.  Ours is then no probe.
	 */
	until = atomic_load(&b->ejected_until);
	if (until != 0 && now_ms >= until)
		return 1;
	atomic_store(&b->probe_until, 0);
	return 0;
}

/* The first untried socket up, from start on, or the one with fewest open. */
static int
pick_up(struct shm_backend *b, size_t n, uint32_t tried, size_t start,
    const int64_t *open, const struct health_conf *hc)
{
	int best = -1;

	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;

		if ((tried >> i) & 1 || !health_is_up(&b[i]))
			continue;
		if (!hc->least)
			return (int)i;
		if (best == -1 || open[i] < open[best])
			best = (int)i;
	}
	return best;
}

/* Of the ejected sockets, the one whose last failure is the oldest. */
static int
pick_least_recently_failed(struct shm_backend *b, size_t n, size_t start)
{
	int best = -1;
	int64_t oldest = 0;

	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;
		int64_t t = atomic_load(&b[i].last_failure);

		if (best == -1 || t < oldest) {
			best = (int)i;
			oldest = t;
		}
	}
	return best;
}

int
health_pick(struct shm_backend *b, size_t n, uint32_t tried, size_t start,
    const int64_t *open, int64_t now_ms, const struct health_conf *hc,
    enum health_pick *how)
{
	int i;

	if (n == 0 || n > 32) {
		*how = HP_NONE;
		return -1;
	}
	/* Due probes first: else, with others up, one would never be tried. */
	for (size_t k = 0; k < n; k++) {
		size_t j = (start + k) % n;

		if (!((tried >> j) & 1) && probe_claim(&b[j], now_ms, hc)) {
			*how = HP_PROBE;
			return (int)j;
		}
	}
	if ((i = pick_up(b, n, tried, start, open, hc)) != -1) {
		*how = HP_UP;
		return i;
	}
	/* A connection that failed over already has had its chance. */
	if (tried != 0) {
		*how = HP_NONE;
		return -1;
	}
	*how = HP_FALLBACK;
	return pick_least_recently_failed(b, n, start);
}

/* The interval after one that failed its probe: twice, within the cap. */
static uint32_t
doubled(uint32_t ms)
{
	return ms >= HEALTH_MAX_INTERVAL_MS / 2 ? HEALTH_MAX_INTERVAL_MS :
	    ms * 2;
}

enum health_event
health_failure(struct shm_backend *b, int probe, int64_t now_ms,
    const struct health_conf *hc)
{
	uint32_t fails = atomic_fetch_add(&b->fails, 1) + 1;
	int64_t until = atomic_load(&b->ejected_until), zero = 0;
	uint32_t next;

	atomic_store(&b->last_failure, now_ms);
	if (until == 0) {
		if (fails < hc->threshold)
			return HE_NONE;
		atomic_store(&b->interval_ms, hc->interval_ms);
		if (!atomic_compare_exchange_strong(&b->ejected_until, &zero,
		    now_ms + hc->interval_ms))
			return HE_NONE;		/* another worker ejected it */
		atomic_fetch_add(&b->ejections, 1);
		return HE_EJECTED;
	}
	if (!probe)
		return HE_NONE;	/* a fallback, or a connect begun before */
	next = doubled(atomic_load(&b->interval_ms));
	atomic_store(&b->interval_ms, next);
	atomic_store(&b->ejected_until, now_ms + next);
	/* Released after the new time is set: no second probe before it. */
	atomic_store(&b->probe_until, 0);
	return HE_PROBE_FAILED;
}

enum health_event
health_success(struct shm_backend *b, int probe, const struct health_conf *hc)
{
	int64_t until = atomic_load(&b->ejected_until);
	enum health_event e = HE_NONE;

	atomic_store(&b->fails, 0);
	if (until != 0 &&
	    atomic_compare_exchange_strong(&b->ejected_until, &until, 0)) {
		atomic_store(&b->interval_ms, hc->interval_ms);
		atomic_fetch_add(&b->returns, 1);
		e = HE_RETURNED;
	}
	/* Freed after the socket is up: no second probe slips in between. */
	if (probe)
		atomic_store(&b->probe_until, 0);
	return e;
}

void
health_probe_abandon(struct shm_backend *b)
{
	atomic_store(&b->probe_until, 0);
}
