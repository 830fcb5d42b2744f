/*
 * shm.c: the one MAP_SHARED region made by the master before it forks.
 *
 * Every worker slot owns its own cache lines (two) per listener and is its only
 * writer, so the hot path is contention-free.  The connection limit is
 * enforced without locks by "claim, then check": a worker increments its
 * own count, sums all slots, and backs out if the sum is over the limit.
 * With sequentially consistent atomics the last claimant of any set that
 * would overshoot sees the whole set, so the limit can never be exceeded.
 * Because each slot's count is a single word, the master can take back a
 * dead worker's connections exactly, whatever instant it died at.
 *
 * The top-level max_connections is checked the same way, after the
 * listener's own: every listener counts as its open connections or its
 * reservation (reserved_connections), whichever is more, and their sum
 * must stay within the global limit; a listener under its reservation is
 * admitted without looking further.  The sum only grows with each count,
 * so the last claimant of a set that would overshoot sees the whole set,
 * as above: neither limit is ever exceeded, and a reservation is never
 * taken by another listener.
 */
#include "shm.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"

/* How often a claim that lost a race at the limit is retried. */
#define ADMIT_RETRIES	8

struct shm_region *
shm_create(void)
{
	void *p = mmap(NULL, sizeof(struct shm_region), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_error("cannot map %zu bytes of shared memory",
		    sizeof(struct shm_region));
		return NULL;
	}
	source_init(p);
	return p;
}

void
shm_destroy(struct shm_region *r)
{
	if (r != NULL)
		munmap(r, sizeof(*r));
}

/* The index of the listener called name, or -1 (master only). */
int
shm_listener_find(struct shm_region *r, const char *name)
{
	for (int li = 0; li < ESD_MAX_LISTENERS; li++)
		if (r->listeners[li].in_use &&
		    strcmp(r->listeners[li].name, name) == 0)
			return li;
	return -1;
}

/*
 * The index for listener name with limit max_connections: its own if it
 * has one, or had one that a reload dropped (counts carry on, and workers
 * of an old generation still draining it stay under the same limit);
 * else the first free index that no running worker counts on (bit li of
 * *busy), with its counters zeroed.  Returns -1 when every index is
 * taken.  Master only.
 */
int
shm_listener_claim(struct shm_region *r, const char *name,
    int max_connections, const uint64_t *busy)
{
	int li = shm_listener_find(r, name);

	/*
	 * Back after a reload that had removed it: its counts again, but
	 * accepting, as its file says, whatever esockdctl had set before.
	 */
	for (int i = 0; li == -1 && i < ESD_MAX_LISTENERS; i++)
		if (!r->listeners[i].in_use &&
		    strcmp(r->listeners[i].name, name) == 0) {
			li = i;
			atomic_store(&r->listeners[li].suspended, 0);
		}
	for (int i = 0; li == -1 && i < ESD_MAX_LISTENERS; i++) {
		if (r->listeners[i].in_use || (busy && (*busy >> i) & 1))
			continue;
		li = i;
		memset(r->counters[li], 0, sizeof(r->counters[li]));
		memset(r->backends[li], 0, sizeof(r->backends[li]));
		atomic_store(&r->listeners[li].suspended, 0);
		atomic_store(&r->listeners[li].rate_tat, 0);
		snprintf(r->listeners[li].name, sizeof(r->listeners[li].name),
		    "%s", name);
	}
	if (li == -1)
		return -1;
	if ((uint32_t)li + 1 > atomic_load(&r->nlisteners))
		atomic_store(&r->nlisteners, (uint32_t)li + 1);
	r->listeners[li].in_use = 1;
	atomic_store(&r->listeners[li].max_connections, max_connections);
	return li;
}

/*
 * A reload kept listener li's socket under a new name (or the same): it
 * keeps its counts and its state, and takes the new limit.
 */
void
shm_listener_rename(struct shm_region *r, int li, const char *name,
    int max_connections)
{
	snprintf(r->listeners[li].name, sizeof(r->listeners[li].name), "%s",
	    name);
	atomic_store(&r->listeners[li].max_connections, max_connections);
}

/*
 * A reload dropped the listener: its index may be claimed again later.
 * It reserves nothing from then on; the connections its old workers
 * still drain count against the global limit like any beyond a
 * reservation.
 */
void
shm_listener_release(struct shm_region *r, int li)
{
	r->listeners[li].in_use = 0;
	atomic_store(&r->listeners[li].reserved, 0);
}

/*
 * Listener li's reserved_connections (master, at start and reload); a
 * listener without an index (-1) has nothing to reserve in.
 */
void
shm_listener_reserve(struct shm_region *r, int li, int reserved)
{
	if (li < 0 || li >= ESD_MAX_LISTENERS)
		return;
	atomic_store(&r->listeners[li].reserved, reserved);
}

/* The top-level max_connections, 0 for none (master, start and reload). */
void
shm_set_global_limit(struct shm_region *r, int max_connections)
{
	atomic_store(&r->max_connections, max_connections);
}

/* Widen the range of slots that sums look at to include slot. */
void
shm_use_slot(struct shm_region *r, int slot)
{
	uint32_t n = atomic_load(&r->nslots);

	while ((uint32_t)slot + 1 > n &&
	    !atomic_compare_exchange_weak(&r->nslots, &n, (uint32_t)slot + 1))
		;
}

/* A gauge of listener li's slots (the int64_t at field), summed. */
static int64_t
slots_sum(struct shm_region *r, int li, size_t field)
{
	uint32_t n = atomic_load(&r->nslots);
	int64_t sum = 0;

	for (uint32_t s = 0; s < n; s++)
		sum += atomic_load((_Atomic int64_t *)(void *)
		    ((char *)&r->counters[li][s] + field));
	return sum;
}

int64_t
shm_current(struct shm_region *r, int li)
{
	return slots_sum(r, li, offsetof(struct shm_counters, cur));
}

/*
 * Every listener's open connections or its reservation, whichever is
 * more, summed: what the global limit is checked against.  *open gets
 * the open connections alone.
 */
static int64_t
committed(struct shm_region *r, int64_t *open)
{
	uint32_t n = atomic_load(&r->nlisteners);
	int64_t sum = 0;

	*open = 0;
	for (uint32_t li = 0; li < n; li++) {
		int64_t cur = shm_current(r, (int)li);
		int64_t res = atomic_load(&r->listeners[li].reserved);

		*open += cur;
		sum += cur > res ? cur : res;
	}
	return sum;
}

enum verdict { ADMIT, OVER_LIMIT, OVER_GLOBAL };

/*
 * May listener li hold its count plus add (1: a claim not made; 0: it is
 * in the count)?  Its own limit first, then its reservation, then the
 * global limit; add = 1 grows the committed sum by one, since a listener
 * at or over its reservation counts every connection it opens.
 */
static enum verdict
verdict(struct shm_region *r, int li, int64_t add)
{
	int max = atomic_load_explicit(&r->listeners[li].max_connections,
	    memory_order_relaxed);
	int global = atomic_load_explicit(&r->max_connections,
	    memory_order_relaxed);
	int64_t cur = shm_current(r, li) + add, open;

	if (cur > max)
		return OVER_LIMIT;
	if (global == 0 || cur <= atomic_load(&r->listeners[li].reserved))
		return ADMIT;
	return committed(r, &open) + add <= global ? ADMIT : OVER_GLOBAL;
}

/*
 * Claim one connection of listener li for this slot.  Returns 0 when
 * admitted (counted in accepted), -1 when the listener is at its limit
 * or the global one, with *why the counter of that refusal
 * (rejected_limit or rejected_global_limit), which is not counted here:
 * the caller counts it, or makes room and claims again.
 */
int
shm_claim(struct shm_region *r, int li, int slot, enum shm_counter *why)
{
	struct shm_counters *c = &r->counters[li][slot];
	enum verdict over = OVER_LIMIT, without_us;

	for (int i = 0; i < ADMIT_RETRIES; i++) {
		atomic_fetch_add(&c->cur, 1);
		if ((over = verdict(r, li, 0)) == ADMIT) {
			shm_count(&c->accepted, 1);
			return 0;
		}
		atomic_fetch_sub(&c->cur, 1);
		/* Full without us: a real refusal, not a lost race. */
		if ((without_us = verdict(r, li, 1)) != ADMIT) {
			over = without_us;
			break;
		}
	}
	*why = over == OVER_GLOBAL ? SC_REJECTED_GLOBAL_LIMIT :
	    SC_REJECTED_LIMIT;
	return -1;
}

/*
 * Admit one connection to listener li for this slot, or refuse it.
 * Returns 0 when admitted, -1 when the listener is at its limit or the
 * global one (and counts the refusal as rejected_limit or
 * rejected_global_limit).
 */
int
shm_admit(struct shm_region *r, int li, int slot)
{
	enum shm_counter why;

	if (shm_claim(r, li, slot, &why) == 0)
		return 0;
	shm_count(&r->counters[li][slot].n[why], 1);
	return -1;
}

/* Listener li's connections in their handshake phase, in every slot. */
int64_t
shm_hs_current(struct shm_region *r, int li)
{
	return slots_sum(r, li, offsetof(struct shm_counters, hs_cur));
}

/*
 * A place in listener li's handshake budget of max for this slot, by the
 * same claim-then-check as shm_claim, so max holds exactly across
 * workers.  Returns 0, or -1 when the budget is spent (nothing counted).
 */
int
shm_hs_claim(struct shm_region *r, int li, int slot, int max)
{
	struct shm_counters *c = &r->counters[li][slot];

	for (int i = 0; i < ADMIT_RETRIES; i++) {
		atomic_fetch_add(&c->hs_cur, 1);
		if (shm_hs_current(r, li) <= max)
			return 0;
		atomic_fetch_sub(&c->hs_cur, 1);
		if (shm_hs_current(r, li) >= max)
			break;
	}
	return -1;
}

/* A connection's handshake phase is over (or it was never admitted). */
void
shm_hs_release(struct shm_region *r, int li, int slot)
{
	atomic_fetch_sub(&r->counters[li][slot].hs_cur, 1);
}

/*
 * The slot whose oldest connection in its handshake phase on listener li
 * began at or before before_us, the earliest of them; -1 when none did.
 */
int
shm_hs_oldest_slot(struct shm_region *r, int li, int64_t before_us)
{
	uint32_t n = atomic_load(&r->nslots);
	int64_t best = before_us + 1;
	int slot = -1;

	for (uint32_t s = 0; s < n; s++) {
		int64_t t = atomic_load(&r->counters[li][s].hs_oldest_us);

		if (t != 0 && t < best) {
			best = t;
			slot = (int)s;
		}
	}
	return slot;
}

/*
 * Ask slot's worker to push out its oldest connection in its handshake
 * phase on listener li.  Returns the ticket: the request is answered
 * once that slot's evict_served reaches it.
 */
uint64_t
shm_evict_ask(struct shm_region *r, int li, int slot, int64_t now_us)
{
	struct shm_counters *c = &r->counters[li][slot];

	atomic_store(&c->evict_asked_us, now_us);
	return atomic_fetch_add(&c->evict_asked, 1) + 1;
}

/*
 * The connection rate of listener li, as the generic cell rate algorithm
 * (GCRA): one shared word holds when the next connection is due, and
 * each admitted connection moves it on by interval_ns with a
 * compare-and-swap.  Every worker draws from that one budget, so the rate
 * holds across workers exactly: from idle, burst + 1 connections may come
 * at once, then one per interval.  Time is passed in, so tests can stop
 * the clock.  Returns 0 when admitted, -1 when refused (and counted).
 */
int
shm_rate_admit(struct shm_region *r, int li, int slot, uint64_t now_ns,
    uint64_t interval_ns, uint64_t burst)
{
	_Atomic uint64_t *tat = &r->listeners[li].rate_tat;
	uint64_t due = atomic_load(tat), from;

	do {
		from = due > now_ns ? due : now_ns;
		if (from - now_ns > burst * interval_ns) {
			shm_count(&r->counters[li][slot].rejected_rate, 1);
			return -1;
		}
	} while (!atomic_compare_exchange_weak(tat, &due, from + interval_ns));
	return 0;
}

/* An admitted connection has ended. */
void
shm_release(struct shm_region *r, int li, int slot)
{
	struct shm_counters *c = &r->counters[li][slot];

	/* closed first: whoever sees the connection gone sees it closed. */
	shm_count(&c->closed, 1);
	atomic_fetch_sub(&c->cur, 1);
}

/*
 * A connection a handler still holds, announced on a new channel
 * (handoff.c), open in listener li again: counted as an admission is,
 * but never refused, since it exists whatever the limit says.
 */
void
shm_adopt(struct shm_region *r, int li, int slot)
{
	struct shm_counters *c = &r->counters[li][slot];

	atomic_fetch_add(&c->cur, 1);
	shm_count(&c->adopted, 1);
}

/* Has some worker a ready hand-off channel to backend socket b? */
int
shm_channels_up(struct shm_region *r, int li, size_t b)
{
	uint32_t n = atomic_load(&r->nslots);

	for (uint32_t s = 0; s < n; s++)
		if (atomic_load(&r->counters[li][s].channels_up) & (1u << b))
			return 1;
	return 0;
}

/* The close reasons a worker counted in slot c, at most accepted. */
static uint64_t
reasons_counted(struct shm_counters *c, uint64_t accepted)
{
	uint64_t sum = 0;

	for (int i = SC_CLOSED_NORMAL; i < SC_CLOSED_WORKER_LOST; i++)
		sum += atomic_load(&c->n[i]);
	return sum > accepted ? accepted : sum;
}

/*
 * Take back the connections of a dead worker's slot (master only, after
 * the worker was reaped, so nothing else writes the slot).  Its open
 * connections were closed by the kernel.  Every connection the slot ever
 * admitted is now closed, so closed is set to accepted rather than
 * incremented: that stays exact even when the worker died between the
 * two words of an admit or a release.  Returns the connections lost.
 */
int64_t
shm_reclaim_slot(struct shm_region *r, int slot)
{
	int64_t total = 0;

	for (int li = 0; li < ESD_MAX_LISTENERS; li++) {
		struct shm_counters *c = &r->counters[li][slot];
		int64_t n = atomic_exchange(&c->cur, 0);
		/* A connection a handler announced held (adopted) was open
		 * in this slot as an admitted one is. */
		uint64_t accepted = atomic_load(&c->accepted) +
		    atomic_load(&c->adopted);

		atomic_store(&c->accepting, 0);
		/* Its handshakes went with it; what was asked of it is moot. */
		atomic_store(&c->hs_cur, 0);
		atomic_store(&c->hs_oldest_us, 0);
		atomic_store(&c->evict_served, atomic_load(&c->evict_asked));
		/* Its backend connections were closed with it. */
		for (int b = 0; b < ESD_MAX_BACKENDS; b++)
			atomic_store(&c->backend_open[b], 0);
		/* Its hand-off channels closed with it. */
		atomic_store(&c->channels_up, 0);
		atomic_store(&c->closed, accepted);
		/* Every admission without a reason: it died with its worker
		 * (or between the release and the reason, the same to us). */
		atomic_store(&c->closed_worker_lost,
		    accepted - reasons_counted(c, accepted));
		total += n > 0 ? n : 0;
	}
	source_reclaim_slot(r, slot);
	return total;
}

/* Add slot c's counters from first up to (not including) end into t. */
static void
add_counters(struct shm_totals *t, struct shm_counters *c, int first, int end)
{
	for (int i = first; i < end; i++)
		t->n[i] += atomic_load_explicit(&c->n[i], memory_order_acquire);
}

/*
 * Read in the order the writers write (see SHM_COUNTERS), so a snapshot
 * may lag but never contradicts itself.
 */
void
shm_totals(struct shm_region *r, int li, struct shm_totals *t)
{
	uint32_t n = atomic_load(&r->nslots);

	memset(t, 0, sizeof(*t));
	for (uint32_t s = 0; s < n; s++)
		add_counters(t, &r->counters[li][s], 0, SC_CLOSED);
	for (uint32_t s = 0; s < n; s++)
		t->cur += atomic_load(&r->counters[li][s].cur);
	for (uint32_t s = 0; s < n; s++)
		add_counters(t, &r->counters[li][s], SC_CLOSED, SC_COUNT);
	for (uint32_t s = 0; s < n; s++) {
		struct shm_counters *c = &r->counters[li][s];

		for (int b = 0; b < TLS_HS_NBUCKETS; b++)
			t->tls_hs_bucket[b] += atomic_load(&c->tls_hs_bucket[b]);
		t->tls_hs_us += atomic_load(&c->tls_hs_us);
	}
}

/* The global limit and the sums it is checked against (stats). */
void
shm_global(struct shm_region *r, struct shm_global *g)
{
	uint32_t n = atomic_load(&r->nlisteners);

	g->max_connections = atomic_load(&r->max_connections);
	g->reserved = 0;
	for (uint32_t li = 0; li < n; li++)
		g->reserved += atomic_load(&r->listeners[li].reserved);
	g->committed = committed(r, &g->connections);
}

/*
 * FNV-1a of a string: a backend socket's path, which socket an entry's
 * state is of (here); a hand-off's id, in the worker's table (handoff.c).
 */
uint64_t
str_hash(const char *p)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h;
}

/*
 * Listener li's backend sockets are paths[0..n) (master, at start and at
 * each reload): an entry whose socket changed starts afresh, up and
 * uncounted, so one socket's health never passes to another; an entry
 * whose socket is the same keeps its state and counts.
 */
void
shm_backends_bind(struct shm_region *r, int li, char *const *paths,
    size_t n)
{
	if (li < 0 || li >= ESD_MAX_LISTENERS)
		return;
	for (size_t b = 0; b < n && b < ESD_MAX_BACKENDS; b++) {
		struct shm_backend *e = &r->backends[li][b];
		uint64_t h = str_hash(paths[b]);

		if (e->path_hash == h)
			continue;
		memset(e, 0, sizeof(*e));
		e->path_hash = h;
	}
}

/* Listener li's connections on backend socket b, in every slot. */
int64_t
shm_backend_open(struct shm_region *r, int li, size_t b)
{
	uint32_t n = atomic_load(&r->nslots);
	int64_t sum = 0;

	for (uint32_t s = 0; s < n; s++)
		sum += atomic_load(&r->counters[li][s].backend_open[b]);
	return sum;
}
