/*
 * hs_budget.c: a listener's handshake budget, in a worker.
 *
 * A connection is in its handshake phase from its admission until the
 * phases before its backend connect are done (its PROXY header, its TLS
 * handshake; session.c opens and closes that window).  Meanwhile it
 * costs memory and CPU and serves no one, and a client that sends
 * nothing holds it until proxy_header_timeout or tls_handshake_timeout:
 * enough of those lock real clients out.
 * So, for a listener with a handshake phase:
 *
 *   - max_handshakes caps how many may be in it at once, across all
 *     workers and exactly, by the claim-then-check in shared memory
 *     that max_connections uses (shm.c);
 *   - handshake_early_drop refuses new clients at random as that
 *     budget fills (early_drop.c), as OpenSSH's MaxStartups does;
 *   - and a new client that either of them, or max_connections, would
 *     turn away pushes out instead the listener's oldest connection in
 *     its handshake phase, if that one has waited over HS_STALE_US.  A
 *     connection that late is more likely a silent client than a slow
 *     real one, so silent clients cannot lock real ones out, whatever
 *     the settings.  Only when none is that late is the client refused.
 *
 * The oldest may be in another worker.  Each worker keeps its sessions
 * in their handshake phase in admission order (the acceptor's hs_list)
 * and publishes when its oldest began in its shared-memory slot.  A
 * worker at a limit picks the slot with the oldest.  Its own: it pushes
 * that one out and admits the client at once.  A peer's: it asks the
 * peer (a counter in the peer's slot) and parks the client, a
 * descriptor taken but not admitted (not in cur, still in the
 * descriptor budget), whose admission is tried again every
 * PARK_RETRY_US and which is refused as it would have been if no room
 * appears within PARK_US.  A parked client is admitted once or refused
 * once, never both and never neither: a worker that stops accepting
 * refuses what it has parked.
 *
 * The peer is not woken by a signal or an eventfd.  A worker whose
 * oldest has waited over HS_STALE_US, the only kind a peer asks,
 * already looks at what it was asked every PARK_RETRY_US (hs_timer),
 * and a worker with no late handshake has nothing to give.  So there is
 * no pid that could be stale to signal, no descriptor to share across
 * generations, and no wakeup at all while no handshake is late.
 */
#include "hs_budget.h"

#include <time.h>

#include "early_drop.h"
#include "session.h"

#define PARK_US		1000000	/* a parked client waits at most 1 s */
#define PARK_RETRY_US	10000	/* and is tried again every 10 ms */

/*
 * Now in µs on the monotonic clock, the same in every process, so times
 * published in shared memory compare across workers; fine enough that
 * two handshakes begun one after the other never look the same age (the
 * coarse clock's 4 ms ticks would).  0 (never a real time) if it cannot
 * be read: nothing then looks late, and no one is pushed out.
 */
int64_t
hsb_now_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 0;
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * The listener's max_handshakes in effect: its own, or "auto", a
 * quarter of the max_connections in effect (esockdctl may have set
 * another), at least 1.
 */
int
hsb_max(const struct acceptor *a)
{
	int conns;

	if (a->lc->max_handshakes > 0)
		return a->lc->max_handshakes;
	conns = atomic_load_explicit(
	    &a->w->shm->listeners[a->li].max_connections, memory_order_relaxed);
	return conns / 4 > 1 ? conns / 4 : 1;
}

/*
 * Have hs_timer fire within in_us: armed, or re-armed only when that is
 * sooner than it was due, so that frequent calls never put it off.
 * Returns -1 when it cannot be armed.
 */
static int
arm(struct acceptor *a, int64_t in_us, int64_t now)
{
	struct timeval tv;

	if (a->hs_due_us != 0 && a->hs_due_us <= now + in_us)
		return 0;
	if (in_us < 1000)
		in_us = 1000;
	tv.tv_sec = in_us / 1000000;
	tv.tv_usec = in_us % 1000000;
	if (evtimer_add(&a->hs_timer, &tv) == -1) {
		log_errorx("listener '%s': cannot arm the handshake budget's "
		    "timer", a->lc->name);
		return -1;
	}
	a->hs_due_us = now + in_us;
	return 0;
}

/*
 * Claim the client's places: in the handshake budget, if the listener
 * has a handshake phase (after the early drop's draw, when roll), then
 * among max_connections.  Returns 0, or -1 with *why the counter of the
 * refusal; nothing is held then.
 */
static int
claim(struct acceptor *a, int roll, enum shm_counter *why)
{
	struct worker *w = a->w;
	int hs = session_has_handshake(a), max;

	if (hs) {
		max = hsb_max(a);
		if (roll && a->lc->early_drop.on &&
		    early_drop_hit(&a->lc->early_drop,
		    shm_hs_current(w->shm, a->li), max, &w->rng)) {
			*why = SC_REJECTED_EARLY_DROP;
			return -1;
		}
		if (shm_hs_claim(w->shm, a->li, w->slot, max) == -1) {
			*why = SC_REJECTED_HANDSHAKES;
			return -1;
		}
	}
	if (shm_claim(w->shm, a->li, w->slot, why) == -1) {
		if (hs)
			shm_hs_release(w->shm, a->li, w->slot);
		return -1;
	}
	return 0;
}

/*
 * Push out this worker's oldest connection in its handshake phase on
 * the listener, if it has waited over HS_STALE_US.  Returns 1 if one
 * went, else 0.
 */
static int
push_out(struct acceptor *a, int64_t now)
{
	struct session *s = TAILQ_FIRST(&a->hs_list);
	char id[SESSION_ID_LEN];
	uint64_t suppressed;

	if (s == NULL || now - s->hs_began <= HS_STALE_US)
		return 0;
	if (log_ratelimit_pass(&a->rl_evict, &suppressed)) {
		session_id(a->w, s->seq, id);
		log_info("listener '%s': pushed out a connection %lld ms in its "
		    "handshake phase to make room for a new client (%llu more "
		    "since the last report) [conn %s]", a->lc->name,
		    (long long)(now - s->hs_began) / 1000,
		    (unsigned long long)suppressed, id);
	}
	session_close(s, SC_CLOSED_HANDSHAKE_EVICTED);
	return 1;
}

/*
 * Make room for a client at a limit by pushing out the listener's
 * oldest connection in its handshake phase, if it has waited over
 * HS_STALE_US: at once when it is this worker's, else by asking the
 * worker of *slot (request *ticket).  Returns 0 when room was made or
 * asked for, -1 when no connection is that late.
 */
static int
make_room(struct acceptor *a, int *slot, uint64_t *ticket)
{
	struct worker *w = a->w;
	int64_t now = hsb_now_us();
	int s = shm_hs_oldest_slot(w->shm, a->li, now - HS_STALE_US - 1);

	*slot = -1;
	if (s == -1)
		return -1;
	if (s == w->slot)
		return push_out(a, now) ? 0 : -1;
	/* No place left to park the client while a peer pushes one out (a
	 * burst of clients at a full budget): one of this worker's own late
	 * connections goes instead, if it has one, rather than refuse. */
	if (a->nparked == PARKED_MAX)
		return push_out(a, now) ? 0 : -1;
	*slot = s;
	*ticket = shm_evict_ask(w->shm, a->li, s, now);
	return 0;
}

/*
 * Wait for the room asked for: PARK_US at most, tried every
 * PARK_RETRY_US.  A client that cannot be parked takes the place of a
 * late connection of this worker's, if it has one (a few tries: a peer
 * may claim the room first), else is refused now.
 */
static void
park(struct acceptor *a, int fd, uint64_t seq, int32_t src, uint16_t trust,
    enum shm_counter why, int slot, uint64_t ticket)
{
	int64_t now = hsb_now_us();

	if (a->nparked == PARKED_MAX || arm(a, PARK_RETRY_US, now) == -1) {
		for (int i = 0; i < 3 && push_out(a, now); i++) {
			if (claim(a, 0, &why) == 0) {
				session_admitted(a, fd, seq, src, trust);
				return;
			}
		}
		session_refused(a, fd, seq, src, why);
		return;
	}
	a->parked[a->nparked++] = (struct parked){ .fd = fd, .src = src,
	    .seq = seq, .until_us = now + PARK_US, .why = (int)why,
	    .slot = slot, .ticket = ticket, .trust = trust };
}

/*
 * The budget's part of admitting a client that the rules, the rate and
 * the per-source limit let through (src: its per-source entry; trust:
 * its S_PROXY_ flags): it ends in session_admitted or session_refused,
 * now or, parked, later.
 */
void
hsb_admit(struct acceptor *a, int fd, uint64_t seq, int32_t src,
    uint16_t trust)
{
	enum shm_counter why;
	uint64_t ticket = 0;
	int slot;

	if (claim(a, 1, &why) == 0) {
		session_admitted(a, fd, seq, src, trust);
		return;
	}
	if (make_room(a, &slot, &ticket) == -1) {
		session_refused(a, fd, seq, src, why);
		return;
	}
	/* A late connection goes instead of the early drop's refusal, so
	 * the draw is not made again; the limits still hold. */
	if (claim(a, 0, &why) == 0) {
		session_admitted(a, fd, seq, src, trust);
		return;
	}
	park(a, fd, seq, src, trust, why, slot, ticket);
}

/* Has the worker of slot answered request ticket? */
static int
answered(struct acceptor *a, int slot, uint64_t ticket)
{
	return atomic_load(&shm_slot(a->w->shm, a->li, slot)->evict_served) >=
	    ticket;
}

/*
 * Try the parked clients again, in the order they came: admitted if
 * there is room now, refused once their time is up; one whose request
 * was answered without room for it (another client took it, or nothing
 * was late any more) asks again.
 */
static void
retry_parked(struct acceptor *a, int64_t now)
{
	enum shm_counter why;
	int n = a->nparked, kept = 0;

	/* Neither admitting nor refusing parks anyone: a plain loop. */
	for (int i = 0; i < n; i++) {
		struct parked p = a->parked[i];

		if (claim(a, 0, &why) == 0) {
			session_admitted(a, p.fd, p.seq, p.src, p.trust);
			continue;
		}
		if (now >= p.until_us) {
			session_refused(a, p.fd, p.seq, p.src, why);
			continue;
		}
		/* Answered, or never asked, and still no room: ask again;
		 * room made here is taken at once. */
		if ((p.slot == -1 || answered(a, p.slot, p.ticket)) &&
		    make_room(a, &p.slot, &p.ticket) == 0 && p.slot == -1 &&
		    claim(a, 0, &why) == 0) {
			session_admitted(a, p.fd, p.seq, p.src, p.trust);
			continue;
		}
		p.why = (int)why;
		a->parked[kept++] = p;
	}
	a->nparked = kept;
}

/*
 * Answer what peers asked of this worker: a push-out each, while it has
 * a connection late enough.  Requests older than PARK_US are moot (their
 * clients are admitted or refused by now) and answered without one.
 */
static void
serve_asked(struct acceptor *a, int64_t now)
{
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);
	uint64_t asked = atomic_load(&c->evict_asked);
	uint64_t served = atomic_load(&c->evict_served);

	if (served == asked)
		return;
	if (now - atomic_load(&c->evict_asked_us) <= PARK_US)
		while (served < asked && push_out(a, now))
			served++;
	atomic_store(&c->evict_served, asked);
}

/*
 * hs_timer: answer the peers, retry the parked clients, then come back
 * every PARK_RETRY_US while a client is parked or the oldest handshake
 * is late (peers may ask), else when the oldest becomes late, else not.
 */
static void
on_hs_timer(evutil_socket_t fd, short what, void *arg)
{
	struct acceptor *a = arg;
	int64_t now = hsb_now_us();
	struct session *s;

	(void)fd;
	(void)what;
	a->hs_due_us = 0;
	serve_asked(a, now);
	retry_parked(a, now);
	if (a->nparked > 0) {
		(void)arm(a, PARK_RETRY_US, now);
		return;
	}
	if ((s = TAILQ_FIRST(&a->hs_list)) == NULL)
		return;
	(void)arm(a, now - s->hs_began > HS_STALE_US ? PARK_RETRY_US :
	    s->hs_began + HS_STALE_US + 1 - now, now);
}

/*
 * The acceptor's oldest connection in its handshake phase changed (one
 * came into an empty list, or the oldest left): publish when it began
 * for the peers, and have the timer look once it is late.
 */
void
hsb_oldest_changed(struct acceptor *a, int64_t now)
{
	struct session *s = TAILQ_FIRST(&a->hs_list);
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);

	/* A hint for peers choosing whom to ask, re-checked here. */
	atomic_store_explicit(&c->hs_oldest_us, s != NULL ? s->hs_began : 0,
	    memory_order_relaxed);
	if (s != NULL)
		(void)arm(a, s->hs_began + HS_STALE_US + 1 - now, now);
}

int
hsb_init(struct acceptor *a)
{
	TAILQ_INIT(&a->hs_list);
	return evtimer_assign(&a->hs_timer, a->w->base, on_hs_timer, a);
}

/*
 * The worker takes no new client on this listener (drain, exit): refuse
 * the parked ones.  The timer goes on: the connections still in their
 * handshake phase here may be asked for.
 */
void
hsb_stop(struct acceptor *a)
{
	while (a->nparked > 0) {
		struct parked *p = &a->parked[--a->nparked];

		session_refused(a, p->fd, p->seq, p->src, p->why);
	}
}
