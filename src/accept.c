/*
 * accept.c: take connections off a listening socket in a worker.
 *
 * Owns the answer to "what on EMFILE": an acceptor that cannot accept
 * stops watching its socket for a backoff (20 ms doubling to 1 s), logs
 * at most one line a second with a count, counts every failure and then
 * resumes on its own; clients wait in the kernel backlog meanwhile, and
 * open connections keep flowing.  Descriptors are budgeted before accept
 * (as relayd's accept_reserve does) so a connection is never taken that
 * could not also get its backend socket.
 *
 * Balance: a worker holding more than its share of a listener's open
 * connections takes one per wakeup instead of a burst, so a burst of new
 * clients spreads over the workers instead of piling on whichever woke
 * first (an uneven spread raises every tail latency of the busy one).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session.h"
#include "worker.h"

#define BACKOFF_MIN_MS	20
#define BACKOFF_MAX_MS	1000
#define ACCEPT_BURST	64	/* accepts per wakeup, then let others run */

static void
backoff_done(evutil_socket_t fd, short what, void *arg)
{
	struct acceptor *a = arg;

	(void)fd;
	(void)what;
	a->paused = 0;
	if (a->w->draining || a->suspended)
		return;
	if (event_add(&a->ev, NULL) == -1)
		log_errorx("listener '%s': cannot resume accepting",
		    a->lc->name);
}

/*
 * Stop accepting for a while after a resource error (err), count it and
 * log it at most once a second.
 */
void
acceptor_pause(struct acceptor *a, int err, const char *what)
{
	struct shm_counters *c = shm_slot(a->w->shm, a->li, a->w->slot);
	struct timeval tv;
	uint64_t suppressed;

	shm_count(&c->accept_errors, 1);
	if (log_ratelimit_pass(&a->rl_accept, &suppressed))
		log_warnx("listener '%s': %s: %s; pausing accept for %d ms "
		    "(%llu more since the last report)", a->lc->name, what,
		    strerror(err), a->backoff_ms,
		    (unsigned long long)suppressed);
	if (a->paused)
		return;
	event_del(&a->ev);
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

/* Errors that say nothing about this process's resources. */
static int
accept_transient(int err)
{
	return err == EINTR || err == ECONNABORTED || err == EPROTO ||
	    err == EPERM;
}

/* How many connections to accept in this wakeup. */
static int
accept_burst(struct acceptor *a)
{
	struct worker *w = a->w;
	int64_t mine, total;

	if (w->nworkers < 2)
		return ACCEPT_BURST;
	mine = atomic_load_explicit(&shm_slot(w->shm, a->li, w->slot)->cur,
	    memory_order_relaxed);
	total = shm_current(w->shm, a->li);
	return mine * w->nworkers > total + w->nworkers ? 1 : ACCEPT_BURST;
}

static void
on_acceptable(evutil_socket_t lfd, short what, void *arg)
{
	struct acceptor *a = arg;
	struct worker *w = a->w;
	int burst = accept_burst(a);
	struct sockaddr_storage peer;
	/* The address costs no syscall, but only rules and per-source
	 * limits want it. */
	struct sockaddr *pa = a->lc->allow.n > 0 || a->lc->deny.n > 0 ||
	    a->lc->max_per_source > 0 ? (struct sockaddr *)&peer : NULL;

	(void)what;

	for (int i = 0; i < burst && !a->paused && !w->draining; i++) {
		socklen_t plen = sizeof(peer);
		int fd;

		/* Suspended while SIGUSR2 is on its way: stop now, not later. */
		if (atomic_load(&w->shm->listeners[a->li].suspended)) {
			acceptor_sync(a);
			return;
		}

		if (!worker_fds_fit(w, 2)) {	/* client and backend */
			acceptor_pause(a, EMFILE, "descriptor budget spent");
			return;
		}
		fd = accept4(lfd, pa, pa != NULL ? &plen : NULL,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (accept_transient(errno))
				continue;
			acceptor_pause(a, errno, "accept");
			return;
		}
		a->backoff_ms = BACKOFF_MIN_MS;
		w->fds_in_use++;
		session_start(a, fd, pa);
	}
}

int
acceptor_init(struct acceptor *a, struct worker *w, int li, int fd)
{
	memset(a, 0, sizeof(*a));
	a->w = w;
	a->lc = &w->conf->listeners[li];
	a->li = a->lc->si;
	a->fd = fd;
	a->backoff_ms = BACKOFF_MIN_MS;
	relay_idle_init(a);
	if (event_assign(&a->ev, w->base, fd, EV_READ | EV_PERSIST,
	    on_acceptable, a) == -1 ||
	    event_assign(&a->backoff, w->base, -1, 0, backoff_done, a) == -1) {
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
		event_del(&a->ev);
		log_info("listener '%s': suspended", a->lc->name);
		return;
	}
	if (!a->paused && !a->w->draining && event_add(&a->ev, NULL) == -1)
		log_errorx("listener '%s': cannot resume accepting", a->lc->name);
	else if (a->w->id > 0)
		log_debug("listener '%s': accepting", a->lc->name);
}

/* Stop accepting for good (drain): the worker's copy of the socket goes. */
void
acceptor_stop(struct acceptor *a)
{
	if (a->fd == -1)
		return;
	event_del(&a->ev);
	event_del(&a->backoff);
	a->paused = 1;
	if (close(a->fd) == -1)
		log_warn("listener '%s': close", a->lc->name);
	a->fd = -1;
	a->w->fds_in_use--;
}
