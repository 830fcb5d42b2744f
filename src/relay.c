/*
 * relay.c: move bytes both ways between a client and its backend.
 *
 * Each socket is registered once, edge-triggered, for reading, writing
 * and peer shutdown, and never modified until it is closed: readiness is
 * remembered in the session's flags instead of in epoll, so relaying
 * costs no epoll_ctl at all (as in nginx).  A short read means the socket
 * was drained, unless the peer's FIN was seen (EPOLLRDHUP), in which case
 * reading goes on until it returns 0.
 *
 * A readable side is read into the worker's scratch buffer and written
 * straight to the other side: two syscalls per chunk, no per-connection
 * buffer.  Only when the other side cannot take it all is the rest kept
 * in a struct pending, and that side is not read again until the rest is
 * gone, so a connection holds at most one chunk per direction however
 * slow its peer.  Bulk flows (a read that fills the whole chunk) switch
 * to splice(2) through a pooled pipe (pipes.c) so their bytes never visit
 * user space; a small splice switches back to copying.
 *
 * Half-close: EOF from one side becomes shutdown(SHUT_WR) on the other
 * once nothing is pending for it; the session ends when both directions
 * are done, on an error, or when idle_timeout passes without a byte read
 * from either side.  Idle expiry: every listener's relaying sessions sit
 * on one list in order of last activity, so one timer per listener finds
 * the expired ones at the head, with no per-read timer work.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "session.h"

#define READS_PER_WAKEUP	4	/* then let other connections run */
/* A splice that moved less than this ends bulk mode: copy is cheaper. */
#define SPLICE_MIN		(16 * 1024)
#define IO_EVENTS	(EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST)

#define DONE	(S_CLIENT_EOF | S_BACKEND_EOF | S_CLIENT_SHUT | S_BACKEND_SHUT)

/* One direction of a session, resolved once per use. */
struct dir {
	int		  src, dst;
	struct event	 *src_ev;
	struct pending	**pend;
	uint32_t	  eof;		/* src said EOF */
	uint32_t	  shut;		/* dst shut for writing */
	uint32_t	  bulk;		/* this direction splices */
	uint32_t	  rd;		/* src may be readable */
	uint32_t	  hup;		/* src's FIN was seen */
	uint32_t	  wblk;		/* dst cannot take more now */
	int		  from_client;
};

static void
dir_of(struct session *s, int from_client, struct dir *d)
{
	if (from_client) {
		*d = (struct dir){ s->cfd, s->bfd, &s->cev, &s->to_backend,
		    S_CLIENT_EOF, S_BACKEND_SHUT, S_BULK_C2B, S_CLIENT_RD,
		    S_CLIENT_HUP, S_BACKEND_WBLK, 1 };
	} else {
		*d = (struct dir){ s->bfd, s->cfd, &s->bev, &s->to_client,
		    S_BACKEND_EOF, S_CLIENT_SHUT, S_BULK_B2C, S_BACKEND_RD,
		    S_BACKEND_HUP, S_CLIENT_WBLK, 0 };
	}
}

/* Monotonic milliseconds; the coarse clock is a vDSO read. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
arm_idle(struct acceptor *a, int64_t in_ms)
{
	struct timeval tv;

	if (in_ms < 1)
		in_ms = 1;
	tv.tv_sec = in_ms / 1000;
	tv.tv_usec = (in_ms % 1000) * 1000;
	if (evtimer_add(&a->idle_timer, &tv) == -1)
		log_errorx("listener '%s': cannot arm the idle timer",
		    a->lc->name);
}

/* Activity: move to the tail of the listener's idle list. */
static void
touch(struct session *s)
{
	struct acceptor *a = s->acc;

	if (a->lc->idle_timeout == 0)
		return;
	s->last_active = now_ms();
	if (TAILQ_LAST(&a->idle_list, idle_head) == s)
		return;
	TAILQ_REMOVE(&a->idle_list, s, idle);
	TAILQ_INSERT_TAIL(&a->idle_list, s, idle);
}

/* Close every session idle for idle_timeout; re-arm for the next one. */
static void
on_idle_timer(evutil_socket_t fd, short what, void *arg)
{
	struct acceptor *a = arg;
	int64_t idle = (int64_t)a->lc->idle_timeout * 1000, now = now_ms();
	struct session *s;

	(void)fd;
	(void)what;
	while ((s = TAILQ_FIRST(&a->idle_list)) != NULL &&
	    s->last_active + idle <= now) {
		log_debug("listener '%s': closing a connection idle for %d s",
		    a->lc->name, a->lc->idle_timeout);
		session_close(s);
	}
	if (s != NULL)
		arm_idle(a, s->last_active + idle - now);
}

void
relay_idle_init(struct acceptor *a)
{
	TAILQ_INIT(&a->idle_list);
	evtimer_assign(&a->idle_timer, a->w->base, on_idle_timer, a);
}

static void
pending_free(struct worker *w, struct pending **pp)
{
	if (*pp == NULL)
		return;
	pipe_close(w, (*pp)->pipe);	/* bytes left in it are dropped */
	free(*pp);
	*pp = NULL;
}

/* Is the direction opposite to d finished (EOF passed on)? */
static int
other_done(struct session *s, struct dir *d)
{
	uint32_t other = d->from_client ? (S_BACKEND_EOF | S_CLIENT_SHUT) :
	    (S_CLIENT_EOF | S_BACKEND_SHUT);

	return (s->flags & other) == other;
}

/*
 * src said EOF and nothing is pending for dst: pass the EOF on.  When the
 * other direction is finished too, the session just closes (close sends
 * the FIN), saving a shutdown(2).  Returns -1 when the session closed.
 */
static int
finish_direction(struct session *s, struct dir *d)
{
	if (*d->pend != NULL || (s->flags & d->shut))
		return 0;
	if (other_done(s, d)) {
		session_close(s);
		return -1;
	}
	if (shutdown(d->dst, SHUT_WR) == -1 && errno != ENOTCONN)
		log_debug("shutdown: %s", strerror(errno));
	s->flags |= d->shut;
	return 0;
}

static int
src_eof(struct session *s, struct dir *d)
{
	s->flags |= d->eof;
	s->flags &= ~d->rd;
	return finish_direction(s, d);
}

/* Keep n bytes dst could not take (in buf, or already in pipe). */
static int
hold(struct session *s, struct dir *d, const char *buf, int pipe[2], size_t n)
{
	struct pending *p = malloc(sizeof(*p) + (pipe ? 0 : n));

	if (p == NULL) {
		log_warnx("listener '%s': out of memory for %zu pending bytes; "
		    "closing the connection", s->acc->lc->name, n);
		if (pipe != NULL)
			pipe_close(s->w, pipe);
		session_close(s);
		return -1;
	}
	p->pipe[0] = pipe ? pipe[0] : -1;
	p->pipe[1] = pipe ? pipe[1] : -1;
	p->len = (uint32_t)n;
	p->off = 0;
	if (pipe == NULL)
		memcpy(p->data, buf, n);
	*d->pend = p;
	s->flags |= d->wblk;	/* the EPOLLOUT edge will say when */
	return 0;
}

/*
 * Send what is pending for dst.  Returns 1 when all of it went, 0 when
 * dst is full again, -1 when the session closed.
 */
static int
flush_pending(struct session *s, struct dir *d)
{
	struct pending *p = *d->pend;

	while (p->off < p->len) {
		ssize_t m;

		if (p->pipe[0] != -1)
			m = splice(p->pipe[0], NULL, d->dst, NULL,
			    p->len - p->off, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			m = send(d->dst, p->data + p->off, p->len - p->off,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (m < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				s->flags |= d->wblk;
				return 0;
			}
			session_close(s);
			return -1;
		}
		p->off += (uint32_t)m;
		if (p->off < p->len) {
			s->flags |= d->wblk;
			return 0;
		}
	}
	if (p->pipe[0] != -1)
		pipe_put(s->w, p->pipe);	/* drained: empty again */
	pending_free(s->w, d->pend);
	return 1;
}

/* After a read of n bytes: was the socket drained by it? */
static void
note_read(struct session *s, struct dir *d, size_t n, size_t asked)
{
	if (n < asked && !(s->flags & d->hup))
		s->flags &= ~d->rd;
	touch(s);
}

/*
 * Splice src to a pooled pipe to dst.  Returns 1 when splice cannot be
 * used here (the caller copies instead), -1 when the session closed.
 */
static int
move_splice(struct session *s, struct dir *d, _Atomic uint64_t *bytes)
{
	struct worker *w = s->w;
	int pipe[2];

	if (pipe_get(w, pipe) == -1) {
		s->flags &= ~d->bulk;
		return 1;
	}
	for (int i = 0; i < READS_PER_WAKEUP && (s->flags & d->rd); i++) {
		ssize_t n = splice(d->src, NULL, pipe[1], NULL, w->scratch_size,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK), m;

		if (n == 0) {
			pipe_put(w, pipe);
			return src_eof(s, d);
		}
		if (n < 0) {
			pipe_put(w, pipe);	/* still empty */
			if (errno == EAGAIN) {
				s->flags &= ~d->rd;
				return 0;
			}
			if (errno == EINTR)
				return 0;
			if (errno == EINVAL || errno == ENOSYS) {
				s->flags &= ~d->bulk;
				w->no_splice = 1;
				return 1;
			}
			session_close(s);
			return -1;
		}
		shm_count(bytes, (uint64_t)n);
		note_read(s, d, (size_t)n, w->scratch_size);
		if (n < SPLICE_MIN)
			s->flags &= ~d->bulk;
		m = splice(pipe[0], NULL, d->dst, NULL, (size_t)n,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (m == n) {
			if (!(s->flags & d->bulk))
				break;
			continue;
		}
		if (m < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				pipe_close(w, pipe);
				session_close(s);
				return -1;
			}
			m = 0;
		}
		return hold(s, d, NULL, pipe, (size_t)(n - m));
	}
	pipe_put(w, pipe);
	return 0;
}

/* Copy what src has to dst through the scratch buffer. */
static int
move_copy(struct session *s, struct dir *d, _Atomic uint64_t *bytes)
{
	char *buf = s->w->scratch;
	size_t cap = s->w->scratch_size;

	for (int i = 0; i < READS_PER_WAKEUP && (s->flags & d->rd); i++) {
		ssize_t n = read(d->src, buf, cap), m;

		if (n == 0)
			return src_eof(s, d);
		if (n < 0) {
			if (errno == EAGAIN) {
				s->flags &= ~d->rd;
				return 0;
			}
			if (errno == EINTR)
				continue;
			session_close(s);
			return -1;
		}
		shm_count(bytes, (uint64_t)n);
		note_read(s, d, (size_t)n, cap);
		if ((size_t)n == cap && !s->w->no_splice)
			s->flags |= d->bulk;	/* a full chunk: bulk ahead */
		m = send(d->dst, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (m == n)
			continue;
		if (m < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				session_close(s);
				return -1;
			}
			m = 0;
		}
		return hold(s, d, buf + m, NULL, (size_t)(n - m));
	}
	return 0;
}

/* Move one direction as far as it goes now.  -1: the session closed. */
static int
pump_dir(struct session *s, int from_client)
{
	struct shm_counters *c = shm_slot(s->w->shm, s->acc->li, s->w->slot);
	_Atomic uint64_t *bytes = from_client ? &c->bytes_in : &c->bytes_out;
	struct dir d;
	int rc;

	dir_of(s, from_client, &d);
	if (*d.pend != NULL) {
		if (s->flags & d.wblk)
			return 0;
		if ((rc = flush_pending(s, &d)) <= 0)
			return rc;
		if (s->flags & d.eof)
			return finish_direction(s, &d);
	}
	if (s->flags & d.eof)
		return 0;
	if (s->flags & d.bulk) {
		rc = move_splice(s, &d, bytes);
		if (rc != 1)
			goto out;
	}
	rc = move_copy(s, &d, bytes);
out:
	/* Still readable after the fair share: come back after the others. */
	if (rc == 0 && (s->flags & d.rd) && *d.pend == NULL &&
	    !(s->flags & d.eof))
		event_active(d.src_ev, EV_READ, 0);
	return rc;
}

static int
pump(struct session *s)
{
	if (pump_dir(s, 1) == -1)
		return -1;
	return pump_dir(s, 0);
}

/* Any readiness on either socket: note it, then move what can move. */
static void
on_io(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	int client = fd == s->cfd;

	if (what & (EV_READ | EV_CLOSED))
		s->flags |= client ? S_CLIENT_RD : S_BACKEND_RD;
	if (what & EV_CLOSED)
		s->flags |= client ? S_CLIENT_HUP : S_BACKEND_HUP;
	if (what & EV_WRITE)
		s->flags &= ~(client ? S_CLIENT_WBLK : S_BACKEND_WBLK);
	pump(s);
}

/*
 * Both sockets are connected: register them once, and read the client at
 * once, since a client that speaks first has usually sent its first
 * bytes by now (one read saves a trip through the event loop).  Returns
 * -1 if the session could not start (the caller closes it) or -2 if it
 * already ended here.
 */
int
relay_start(struct session *s)
{
	struct acceptor *a = s->acc;

	event_del(&s->bev);
	event_assign(&s->cev, s->w->base, s->cfd, IO_EVENTS, on_io, s);
	event_assign(&s->bev, s->w->base, s->bfd, IO_EVENTS, on_io, s);
	if (event_add(&s->cev, NULL) == -1 || event_add(&s->bev, NULL) == -1)
		return -1;
	s->flags |= S_RELAYING | S_CLIENT_RD;
	if (a->lc->idle_timeout > 0) {
		s->last_active = now_ms();
		TAILQ_INSERT_TAIL(&a->idle_list, s, idle);
		if (!evtimer_pending(&a->idle_timer, NULL))
			arm_idle(a, (int64_t)a->lc->idle_timeout * 1000);
	}
	return pump(s) == -1 ? -2 : 0;
}

/* Undo relay_start's bookkeeping (from session_close). */
void
relay_stop(struct session *s)
{
	pending_free(s->w, &s->to_client);
	pending_free(s->w, &s->to_backend);
	if ((s->flags & S_RELAYING) && s->acc->lc->idle_timeout > 0)
		TAILQ_REMOVE(&s->acc->idle_list, s, idle);
	s->flags &= ~S_RELAYING;
}
