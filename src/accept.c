/*
 * accept.c: take connections off a listening socket in a worker.
 *
 * Owns the answer to "what on EMFILE": an acceptor that cannot accept
 * stops watching its socket for a backoff (20 ms doubling to 1 s), logs
 * at most one line a second with a count, counts every failure and then
 * resumes on its own; open connections keep flowing.  Descriptors are
 * budgeted before accept (as relayd's accept_reserve does) so a
 * connection is never taken that could not also get its backend socket.
 * Out of descriptors (EMFILE, ENFILE or the budget spent), a client left
 * in the backlog would wait out the backoff, or its own timeout, for a
 * descriptor that is not coming: unless a peer accepts and can take it,
 * the worker goes on watching the socket during the backoff and closes
 * each new client at once (rejected_emfile), through one spare
 * descriptor it holds for that (libev's trick: let the spare go, accept,
 * close, take the spare back).  The client hears at once.  The budget's
 * pause ends as soon as a session frees room; the kernel's runs its
 * course.
 *
 * Balance: every worker watches the one listening socket, and the kernel
 * wakes them all, but the one already running wins nearly every race:
 * left alone, 100 new clients split 93/7 over two workers.  So before
 * each accept a worker compares its open connections on the listener
 * with those of its peers that are accepting too (shared memory), and
 * when it holds more than the least loaded peer plus a slack it steps
 * back: it stops watching the socket for STEP_BACK_MS and leaves the
 * next clients to the others.  Peers that are paused, suspended or
 * draining are not accepting and never make it step back, and a peer
 * that stops taking clients (hung, or dead and not yet reaped) is seen
 * by its accepted count standing still: the worker then takes one
 * regardless.  A worker that stepped back still counts as accepting, so
 * the others do not race past it meanwhile; two can then step back at
 * once, each ahead of the other when it looked, so a worker also comes
 * back as soon as one of its own connections closes and it is no longer
 * ahead, not only when its STEP_BACK_MS are up.  The spread is by open connections, so long-lived ones
 * end up even, which a hash over addresses (SO_REUSEPORT) cannot promise.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hs_budget.h"
#include "session.h"
#include "worker.h"

#define BACKOFF_MIN_MS	20
#define BACKOFF_MAX_MS	1000
#define ACCEPT_BURST	64	/* accepts per wakeup, then let others run */
#define STEP_BACK_MS	1	/* a worker ahead of its peers waits this */

/* Watch the listening socket, and say so to the peers. */
static int
acceptor_watch(struct acceptor *a)
{
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);

	if (event_add(&a->ev, NULL) == -1) {
		log_errorx("listener '%s': cannot resume accepting",
		    a->lc->name);
		return -1;
	}
	atomic_store(&c->accepting, 1);
	return 0;
}

/* Stop watching it; peers no longer leave clients to this worker. */
static void
acceptor_unwatch(struct acceptor *a)
{
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);

	atomic_store(&c->accepting, 0);
	event_del(&a->ev);
	event_del(&a->rejoin);
	a->stepped_back = 0;
	a->rejecting = 0;
}

/* Hold the spare descriptor again, if it is not held (0) or cannot be (-1). */
static int
spare_take(struct worker *w)
{
	if (w->spare_fd != -1)
		return 0;
	if ((w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	w->fds_in_use++;
	return 0;
}

/* Let the spare go, so that the next accept has a descriptor. */
static void
spare_let_go(struct worker *w)
{
	if (w->spare_fd == -1)
		return;
	if (close(w->spare_fd) == -1)
		log_warn("close of the spare descriptor");
	w->spare_fd = -1;
	w->fds_in_use--;
}

/*
 * The spare descriptor, at the worker's start.  Without one (logged) the
 * fast reject still works while the budget leaves a descriptor free.
 */
void
accept_spare_init(struct worker *w)
{
	if (spare_take(w) == -1)
		log_warn("cannot open /dev/null as the spare descriptor; out of "
		    "descriptors, new clients may wait in the backlog");
}

void
accept_spare_free(struct worker *w)
{
	spare_let_go(w);
}

static void
backoff_done(evutil_socket_t fd, short what, void *arg)
{
	struct acceptor *a = arg;

	(void)fd;
	(void)what;
	a->paused = 0;
	a->rejecting = 0;
	(void)spare_take(a->w);		/* lost to ENFILE: try once more */
	if (a->w->draining || a->suspended)
		return;
	acceptor_watch(a);
}

/* Stop watching the socket for the backoff, and double it for next time. */
static void
backoff_start(struct acceptor *a)
{
	struct timeval tv;

	if (a->paused)
		return;
	acceptor_unwatch(a);
	a->paused = 1;
	tv.tv_sec = a->backoff_ms / 1000;
	tv.tv_usec = (a->backoff_ms % 1000) * 1000;
	if (event_add(&a->backoff, &tv) == -1)
		log_errorx("listener '%s': cannot arm the accept backoff timer",
		    a->lc->name);
	a->backoff_ms *= 2;
	if (a->backoff_ms > BACKOFF_MAX_MS)
		a->backoff_ms = BACKOFF_MAX_MS;
}

/*
 * Stop accepting for a while after a resource error (err), count it and
 * log it at most once a second.
 */
void
acceptor_pause(struct acceptor *a, int err, const char *what)
{
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);
	uint64_t suppressed;

	shm_count(&c->accept_errors, 1);
	if (log_ratelimit_pass(&a->rl_accept, &suppressed))
		log_warnx("listener '%s': %s: %s; pausing accept for %d ms "
		    "(%llu more since the last report)", a->lc->name, what,
		    strerror(err), a->backoff_ms,
		    (unsigned long long)suppressed);
	backoff_start(a);
}

/* Errors that say nothing about this process's resources. */
static int
accept_transient(int err)
{
	return err == EINTR || err == ECONNABORTED || err == EPROTO ||
	    err == EPERM;
}

/*
 * Listener li's open connections in the least loaded peer that accepts
 * too (-1: none does), and the sum of those peers' admissions, by which
 * a worker that stepped back sees whether they take clients at all.
 */
static int64_t
least_peer(struct acceptor *a, uint64_t *peers_accepted)
{
	struct worker *w = a->w;
	uint32_t n = atomic_load(&w->shm->nslots);
	int64_t least = -1;

	*peers_accepted = 0;
	for (uint32_t s = 0; s < n; s++) {
		struct shm_counters *c = shm_slot(w->shm, a->li, (int)s);
		int64_t cur;

		if ((int)s == w->slot || !atomic_load_explicit(&c->accepting,
		    memory_order_relaxed))
			continue;
		cur = atomic_load_explicit(&c->cur, memory_order_relaxed);
		if (least == -1 || cur < least)
			least = cur;
		*peers_accepted += atomic_load_explicit(&c->accepted,
		    memory_order_relaxed);
	}
	return least;
}

/*
 * Is this worker too far ahead of its least loaded accepting peer to
 * take the next client?  The slack grows with the load, so an even
 * spread does not cost a step back on every other accept.
 */
static int
ahead_of_peers(struct acceptor *a, uint64_t *peers_accepted)
{
	struct worker *w = a->w;
	int64_t mine, least;

	if (w->nworkers < 2)
		return 0;
	if ((least = least_peer(a, peers_accepted)) == -1)
		return 0;
	mine = atomic_load_explicit(&shm_slot(w->shm, a->li, w->slot)->cur,
	    memory_order_relaxed);
	return mine > least + 1 + least / 8;
}

/* Leave the next clients to the peers for STEP_BACK_MS. */
static void
step_back(struct acceptor *a, uint64_t peers_accepted)
{
	struct timeval tv = { 0, STEP_BACK_MS * 1000 };

	event_del(&a->ev);
	a->stepped_back = 1;
	a->peers_accepted = peers_accepted;
	if (evtimer_add(&a->rejoin, &tv) == -1) {
		log_errorx("listener '%s': cannot arm the rejoin timer; "
		    "accepting again", a->lc->name);
		a->stepped_back = 0;
		acceptor_watch(a);
	}
}

/* End a step back; force: take the next client whatever the counts. */
static void
come_back(struct acceptor *a, int force)
{
	a->stepped_back = 0;
	a->force_next = force;
	if (a->paused || a->suspended || a->w->draining)
		return;
	acceptor_watch(a);
}

/*
 * One of this worker's connections on the listener closed: back at once
 * from a step back if that leaves it no longer ahead (sessions ending is
 * what ends the wait when every worker stepped back at the same time).
 */
void
acceptor_session_closed(struct acceptor *a)
{
	uint64_t peers_accepted;

	if (!a->stepped_back || ahead_of_peers(a, &peers_accepted))
		return;
	event_del(&a->rejoin);
	come_back(a, 0);
}

/*
 * Back from a step back: watch the socket again.  If the peers admitted
 * no client meanwhile they may not be taking any (a peer hung, or dead
 * and not yet reaped): the next client is taken whatever the counts say,
 * so no client waits on a peer that will never come.
 */
static void
rejoin(evutil_socket_t fd, short what, void *arg)
{
	struct acceptor *a = arg;
	uint64_t now_accepted;

	(void)fd;
	(void)what;
	(void)least_peer(a, &now_accepted);
	come_back(a, now_accepted == a->peers_accepted);
}

/*
 * Must the acceptor stop taking clients now?  Suspended while SIGUSR2 is
 * on its way, or retired while SIGTERM is: it stops at once, not later.
 */
static int
acceptor_must_stop(struct acceptor *a)
{
	struct worker *w = a->w;

	if (atomic_load(&w->shm->listeners[a->li].suspended)) {
		acceptor_sync(a);
		return 1;
	}
	if (atomic_load_explicit(&w->shm->retired[w->slot],
	    memory_order_relaxed)) {
		acceptor_unwatch(a);
		return 1;
	}
	return 0;
}

/*
 * Close the client at the head of the queue at once: let the spare go,
 * accept into its place, close the client, take the spare back.  Returns
 * 1 when a client left the queue, 0 when the queue is empty, -1 when not
 * even that could be done (*err says why).
 */
static int
reject_one(struct acceptor *a, int *err)
{
	struct worker *w = a->w;
	int fd;

	spare_let_go(w);
	fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
	*err = errno;
	if (fd != -1 && close(fd) == -1)
		log_warn("listener '%s': close of a client refused for want "
		    "of descriptors", a->lc->name);
	(void)spare_take(w);	/* else at the next one, or the backoff's end */
	if (fd != -1) {
		shm_count(&shm_slot(w->shm, a->li, w->slot)->rejected_emfile, 1);
		return 1;
	}
	if (*err == EAGAIN || *err == EWOULDBLOCK)
		return 0;
	return accept_transient(*err) ? 1 : -1;
}

/* Back to the plain backoff: the socket is left alone until it ends. */
static void
stop_rejecting(struct acceptor *a)
{
	a->rejecting = 0;
	event_del(&a->ev);
}

/* The budget's pause is over once a session has freed room: accept now. */
static void
budget_room_again(struct acceptor *a)
{
	event_del(&a->backoff);
	a->paused = 0;
	a->rejecting = 0;
	a->backoff_ms = BACKOFF_MIN_MS;
	acceptor_watch(a);
}

/*
 * During an out-of-descriptors pause: close each client waiting in the
 * queue at once (a burst per wakeup), so that it hears now rather than
 * time out in the backlog.  A peer that accepts gets the queue instead,
 * and a client that cannot be taken even with the spare let go ends
 * this: the backoff alone goes on, and nothing spins.
 */
static void
reject_queued(struct acceptor *a)
{
	uint64_t unused;
	int err;

	for (int i = 0; i < ACCEPT_BURST; i++) {
		if (acceptor_must_stop(a))
			return;
		if (a->by_budget && worker_fds_fit(a->w, 2)) {
			budget_room_again(a);
			return;
		}
		if (least_peer(a, &unused) != -1) {
			stop_rejecting(a);
			return;
		}
		switch (reject_one(a, &err)) {
		case 0:
			return;
		case -1:
			log_warnx("listener '%s': cannot take a client off the "
			    "queue to close it: %s; new clients wait in the "
			    "backlog for the backoff", a->lc->name,
			    strerror(err));
			stop_rejecting(a);
			return;
		}
	}
}

/*
 * No descriptor for the next client (err: EMFILE or ENFILE from accept,
 * or the budget spent): count it and pause as for any resource error,
 * but unless a peer accepts (and may have room), keep watching the
 * socket to close every new client at once until the pause ends.
 */
static void
out_of_fds(struct acceptor *a, int err, const char *what, int by_budget)
{
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);
	uint64_t suppressed, unused;
	int peer = least_peer(a, &unused) != -1;

	shm_count(&c->accept_errors, 1);
	if (log_ratelimit_pass(&a->rl_accept, &suppressed))
		log_warnx("listener '%s': %s: %s; for %d ms %s (%llu more "
		    "since the last report)", a->lc->name, what, strerror(err),
		    a->backoff_ms, peer ? "new clients are left to the other "
		    "workers" : "new clients are closed at once",
		    (unsigned long long)suppressed);
	backoff_start(a);
	if (peer)
		return;
	if (event_add(&a->ev, NULL) == -1) {
		log_errorx("listener '%s': cannot watch the socket to close "
		    "new clients; they wait in the backlog", a->lc->name);
		return;
	}
	a->rejecting = 1;
	a->by_budget = by_budget;
	reject_queued(a);
}

static void
on_acceptable(evutil_socket_t lfd, short what, void *arg)
{
	struct acceptor *a = arg;
	struct worker *w = a->w;
	struct sockaddr_storage peer;
	/* The address costs no syscall, but only rules, per-source limits
	 * and the PROXY header's sources want it. */
	struct sockaddr *pa = a->lc->allow.n > 0 || a->lc->deny.n > 0 ||
	    a->lc->max_per_source > 0 || a->lc->rate_per_source > 0 ||
	    a->lc->proxy_in != PROXY_IN_OFF ?
	    (struct sockaddr *)&peer : NULL;

	(void)what;

	if (a->rejecting) {
		reject_queued(a);
		return;
	}
	for (int i = 0; i < ACCEPT_BURST && !a->paused && !w->draining; i++) {
		socklen_t plen = sizeof(peer);
		uint64_t peers_accepted;
		int fd;

		if (acceptor_must_stop(a))
			return;
		if (!worker_fds_fit(w, 2)) {	/* client and backend */
			out_of_fds(a, EMFILE, "descriptor budget spent", 1);
			return;
		}
		if (!a->force_next && ahead_of_peers(a, &peers_accepted)) {
			step_back(a, peers_accepted);
			return;
		}
		fd = accept4(lfd, pa, pa != NULL ? &plen : NULL,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (accept_transient(errno))
				continue;
			if (errno == EMFILE || errno == ENFILE)
				out_of_fds(a, errno, "accept", 0);
			else
				acceptor_pause(a, errno, "accept");
			return;
		}
		a->backoff_ms = BACKOFF_MIN_MS;
		a->force_next = 0;
		w->fds_in_use++;
		session_start(a, fd, pa);
	}
}

int
acceptor_init(struct acceptor *a, struct worker *w, const struct listener *l)
{
	memset(a, 0, sizeof(*a));
	a->w = w;
	a->lc = l->conf;
	a->li = l->si;
	a->fd = l->fd;
	a->tls_ctx = l->tls_ctx;
	a->backoff_ms = BACKOFF_MIN_MS;
	relay_idle_init(a);
	if (handoff_init(a) == -1)
		return -1;
	if (hsb_init(a) == -1 ||
	    event_assign(&a->ev, w->base, a->fd, EV_READ | EV_PERSIST,
	    on_acceptable, a) == -1 ||
	    event_assign(&a->backoff, w->base, -1, 0, backoff_done, a) == -1 ||
	    evtimer_assign(&a->rejoin, w->base, rejoin, a) == -1) {
		log_errorx("listener '%s': cannot watch the listening socket",
		    a->lc->name);
		return -1;
	}
	a->suspended = 1;	/* so that sync starts it unless suspended */
	acceptor_sync(a);
	return 0;
}

/*
 * Follow the listener's suspended flag in shared memory (at start and on
 * the master's SIGUSR2).  A suspended listener stops watching its socket:
 * new clients wait in the kernel backlog, open connections carry on.
 */
void
acceptor_sync(struct acceptor *a)
{
	int want = atomic_load(&a->w->shm->listeners[a->li].suspended);

	if (want == a->suspended || a->fd == -1)
		return;
	a->suspended = want;
	if (want) {
		acceptor_unwatch(a);
		log_info("listener '%s': suspended", a->lc->name);
		return;
	}
	if (a->paused || a->w->draining || acceptor_watch(a) == -1)
		return;
	if (a->w->id > 0)
		log_debug("listener '%s': accepting", a->lc->name);
}

/* Stop accepting for good (drain): the worker's copy of the socket goes. */
void
acceptor_stop(struct acceptor *a)
{
	if (a->fd == -1)
		return;
	acceptor_unwatch(a);
	event_del(&a->backoff);
	a->paused = 1;
	hsb_stop(a);
	if (close(a->fd) == -1)
		log_warn("listener '%s': close", a->lc->name);
	a->fd = -1;
	a->w->fds_in_use--;
}
