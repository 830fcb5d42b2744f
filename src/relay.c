/*
 * relay.c: move bytes both ways between a client and its backend.
 *
 * Each readable side is read into the worker's scratch buffer and written
 * straight to the other side: two syscalls per chunk, no copy into a
 * per-connection buffer.  Only when the other side cannot take it all is
 * the rest kept in a struct pending, and reading from this side stops
 * until that drains, so a connection holds at most one chunk per
 * direction however slow its peer.  The rest waits in a pooled pipe when
 * one can be had, so the kernel holds it, not this process; for the
 * client's TLS a chunk is one record (TLS_RECORD_MAX), so a client that
 * stops reading leaves one encrypted record in OpenSSL's write buffer
 * and its plaintext in a pipe (SSL_write's retry takes it back from
 * there).  Half-close: EOF from one side becomes
 * shutdown(SHUT_WR) on the other once nothing is pending for it; the
 * session ends when both directions are done, on an error, or when
 * idle_timeout passes without a byte read from either side.
 *
 * Bulk flows: once a read fills the whole chunk, that direction switches
 * to splice(2) through a pooled pipe (splice_pool.c), so its bytes are
 * never copied to user space; the pipe then holds what the slow side
 * cannot take yet, and a small read switches the direction back to
 * copying.
 *
 * Idle expiry: every listener's relaying sessions sit on one list in
 * order of last activity, so a single timer per listener finds the
 * expired ones at the head, with no per-read timer work.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "session.h"
#include "tls.h"

#define READS_PER_WAKEUP	4	/* then let other connections run */
/* A splice that moved less than this ends bulk mode: copy is cheaper. */
#define SPLICE_MIN		(16 * 1024)

/* One direction of a session, resolved once per callback. */
struct dir {
	int		  src, dst;
	struct event	 *src_ev;
	struct pending	**pend;
	unsigned	  eof;		/* flag: src said EOF */
	unsigned	  shut;		/* flag: dst shut for writing */
	unsigned	  bulk;		/* flag: this direction splices */
	int		  from_client;
	int		  tls_src, tls_dst; /* the client side speaks TLS */
};

static void on_client(evutil_socket_t, short, void *);
static void on_backend(evutil_socket_t, short, void *);

static void
dir_of(struct session *s, int from_client, struct dir *d)
{
	d->from_client = from_client;
	d->tls_src = from_client && s->ssl != NULL;
	d->tls_dst = !from_client && s->ssl != NULL;
	if (from_client) {
		d->src = s->cfd;
		d->dst = s->bfd;
		d->src_ev = &s->cev;
		d->pend = &s->to_backend;
		d->eof = S_CLIENT_EOF;
		d->shut = S_BACKEND_SHUT;
		d->bulk = S_BULK_C2B;
	} else {
		d->src = s->bfd;
		d->dst = s->cfd;
		d->src_ev = &s->bev;
		d->pend = &s->to_client;
		d->eof = S_BACKEND_EOF;
		d->shut = S_CLIENT_SHUT;
		d->bulk = S_BULK_B2C;
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
		session_close(s, SC_CLOSED_IDLE_TIMEOUT);
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
	event_del(&(*pp)->wev);
	pipe_close(w, (*pp)->pipe);	/* bytes left in it are dropped */
	free(*pp);
	*pp = NULL;
}

/* Is the direction opposite to d finished (EOF passed on)? */
static int
other_done(struct session *s, struct dir *d)
{
	unsigned other = d->from_client ? (S_BACKEND_EOF | S_CLIENT_SHUT) :
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
		session_close(s, SC_CLOSED_NORMAL);
		return -1;
	}
	if (d->tls_dst)
		tls_shutdown(s);	/* close_notify before the FIN */
	if (shutdown(d->dst, SHUT_WR) == -1 && errno != ENOTCONN)
		log_debug("shutdown: %s", strerror(errno));
	s->flags |= d->shut;
	return 0;
}

/* src said EOF: stop watching it (unless the session ends here). */
static int
src_eof(struct session *s, struct dir *d)
{
	s->flags |= d->eof;
	if (*d->pend == NULL && other_done(s, d)) {
		session_close(s, SC_CLOSED_NORMAL);
		return -1;
	}
	event_del(d->src_ev);
	return finish_direction(s, d);
}

static void on_writable(evutil_socket_t, short, void *);

/*
 * A write's result (m of n bytes), with 0 of n made an error: a write
 * that moves nothing and reports no error comes from a peer that is gone
 * (SSL_write after the client's EOF and reset), and waiting for the
 * socket to take more would spin, since a dead socket is always
 * writable.  Any other result is passed on as it is.
 */
static ssize_t
written(ssize_t m, size_t n)
{
	if (m == 0 && n > 0) {
		errno = EPIPE;
		return -1;
	}
	return m;
}

/*
 * Copied bytes dst did not take go into a pooled pipe, so that, as
 * spliced ones do, they wait in the kernel rather than in this process.
 * A plain dst drains the pipe with splice, the client's TLS by reading
 * it back (pipe_to_tls).  -1: no pipe to be had, or it could not take
 * them all (a pipe shrunk by fs.pipe-user-pages-soft): the caller keeps
 * the bytes itself.
 */
static int
park(struct worker *w, struct dir *d, const char *buf, size_t n, int pipe[2])
{
	if ((w->no_splice && !d->tls_dst) || pipe_get(w, pipe) == -1)
		return -1;
	if (write(pipe[1], buf, n) == (ssize_t)n)
		return 0;
	pipe_close(w, pipe);	/* with whatever part it took */
	return -1;
}

/*
 * dst took only part of a chunk: keep the n bytes it did not take (from
 * buf, or already in pipe) and stop reading src until they are gone.
 */
static int
hold(struct session *s, struct dir *d, const char *buf, int pipe[2], size_t n)
{
	struct pending *p;
	int parked[2];

	if (pipe == NULL && park(session_worker(s), d, buf, n, parked) == 0)
		pipe = parked;
	p = malloc(sizeof(*p) + (pipe != NULL ? 0 : n));

	if (p == NULL) {
		log_warnx("listener '%s': out of memory for %zu pending bytes; "
		    "closing the connection", s->acc->lc->name, n);
		if (pipe != NULL)
			pipe_close(session_worker(s), pipe);
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return -1;
	}
	p->pipe[0] = pipe != NULL ? pipe[0] : -1;
	p->pipe[1] = pipe != NULL ? pipe[1] : -1;
	p->len = (uint32_t)n;
	p->off = 0;
	if (pipe == NULL)
		memcpy(p->data, buf, n);
	event_assign(&p->wev, session_worker(s)->base, d->dst,
	    EV_WRITE | EV_PERSIST, on_writable, s);
	event_del(d->src_ev);
	*d->pend = p;
	if (event_add(&p->wev, NULL) == -1) {
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return -1;
	}
	return 0;
}

/*
 * The splice version of relay_read: src to a pooled pipe to dst.
 * Returns 1 when splice cannot be used here (the caller copies instead).
 */
static int
relay_splice(struct session *s, struct dir *d, _Atomic uint64_t *bytes)
{
	struct worker *w = session_worker(s);
	int pipe[2];

	if (pipe_get(w, pipe) == -1) {
		s->flags &= ~d->bulk;
		return 1;
	}
	for (int i = 0; i < READS_PER_WAKEUP; i++) {
		ssize_t n = splice(d->src, NULL, pipe[1], NULL, w->scratch_size,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK), m;

		if (n == 0) {
			pipe_put(w, pipe);
			return src_eof(s, d);
		}
		if (n < 0) {
			pipe_put(w, pipe);	/* still empty */
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			if (errno == EINVAL || errno == ENOSYS) {
				s->flags &= ~d->bulk;
				w->no_splice = 1;
				return 1;
			}
			session_close(s, session_side_error(d->from_client));
			return -1;
		}
		shm_count(bytes, (uint64_t)n);
		touch(s);
		if (n < SPLICE_MIN)
			s->flags &= ~d->bulk;
		m = written(splice(pipe[0], NULL, d->dst, NULL, (size_t)n,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK), (size_t)n);
		if (m == n) {
			if (!(s->flags & d->bulk))
				break;
			continue;
		}
		if (m < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				pipe_close(w, pipe);
				session_close(s,
				    session_side_error(!d->from_client));
				return -1;
			}
			m = 0;
		}
		return hold(s, d, NULL, pipe, (size_t)(n - m));
	}
	pipe_put(w, pipe);
	return 0;
}

/* Read from src: the socket, or the client's TLS. */
static ssize_t
src_read(struct session *s, struct dir *d, char *buf, size_t cap)
{
	return d->tls_src ? tls_read(s, buf, cap) : read(d->src, buf, cap);
}

/* Write to dst: the socket, or the client's TLS. */
static ssize_t
dst_write(struct session *s, struct dir *d, const char *buf, size_t n)
{
	return written(d->tls_dst ? tls_write(s, buf, n) :
	    send(d->dst, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT), n);
}

/*
 * The client's TLS may hold decrypted bytes that epoll cannot see: while
 * it does, and reading it is not held back, come back to it.
 */
static void
tls_more(struct session *s)
{
	if (s->ssl != NULL && s->to_backend == NULL &&
	    !(s->flags & S_CLIENT_EOF) && tls_pending(s))
		event_active(&s->cev, EV_READ, 1);
}

/* relay_read's copy loop (read(2) and send(2), or the client's TLS). */
static int
relay_copy(struct session *s, int from_client)
{
	struct shm_counters *c = session_counters(s);
	_Atomic uint64_t *bytes = from_client ? &c->bytes_in : &c->bytes_out;
	struct worker *w = session_worker(s);
	char *buf = w->scratch;
	size_t cap = w->scratch_size;
	struct dir d;

	dir_of(s, from_client, &d);
	/* One record per SSL_write: a blocked one then holds no more. */
	if (d.tls_dst && cap > TLS_RECORD_MAX)
		cap = TLS_RECORD_MAX;
	if (s->flags & d.bulk) {
		int rc = relay_splice(s, &d, bytes);
		if (rc != 1)
			return rc;
	}
	for (int i = 0; i < READS_PER_WAKEUP; i++) {
		ssize_t n = src_read(s, &d, buf, cap), m;

		if (n == 0)
			return src_eof(s, &d);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			session_close(s, session_side_error(from_client));
			return -1;
		}
		shm_count(bytes, (uint64_t)n);
		touch(s);
		m = dst_write(s, &d, buf, (size_t)n);
		/* TLS bytes are not the socket's: no splice for them. */
		if ((size_t)n == cap && !w->no_splice && s->ssl == NULL)
			s->flags |= d.bulk;	/* a full chunk: bulk ahead */
		if (m == n) {
			/* A short read most likely drained the socket; a TLS
			 * read is one record at most, and says nothing. */
			if ((size_t)n < cap && !d.tls_src)
				return 0;
			continue;
		}
		if (m < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				session_close(s, session_side_error(!from_client));
				return -1;
			}
			m = 0;
		}
		return hold(s, &d, buf + m, NULL, (size_t)(n - m));
	}
	return 0;
}

/*
 * Read what src has and hand it to dst.  Returns -1 when the session was
 * closed (the caller must not touch it again).
 */
static int
relay_read(struct session *s, int from_client)
{
	int rc = relay_copy(s, from_client);

	if (rc == 0 && from_client)
		tls_more(s);
	return rc;
}


/*
 * Bytes pending for the client's TLS wait in a pipe (park): read them
 * back for SSL_write, whose retry must offer the same bytes (from
 * anywhere: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), and put back what it
 * did not take, for the next retry.  Returns 1 when all went out, 0
 * when some are still pending, -1 when the session was closed.
 */
static int
pipe_to_tls(struct session *s, struct dir *d, struct pending *p)
{
	struct worker *w = session_worker(s);
	size_t n = p->len - p->off;
	ssize_t m;

	if (read(p->pipe[0], w->scratch, n) != (ssize_t)n)
		goto lost;
	if ((m = dst_write(s, d, w->scratch, n)) < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			session_close(s, session_side_error(!d->from_client));
			return -1;
		}
		m = 0;
	}
	p->off += (uint32_t)m;
	if ((size_t)m == n)
		return 1;
	if (write(p->pipe[1], w->scratch + m, n - (size_t)m) ==
	    (ssize_t)(n - (size_t)m))
		return 0;
lost:
	log_warn("listener '%s': the pipe of %zu pending bytes failed; "
	    "closing the connection", s->acc->lc->name, n);
	session_close(s, SC_CLOSED_LOCAL_ERROR);
	return -1;
}

/* The slow side can take more of what is pending for it. */
static void
on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	int from_client = fd == s->bfd;
	struct dir d;
	struct pending *p;
	ssize_t m;

	(void)what;
	dir_of(s, from_client, &d);
	p = *d.pend;
	if (p->pipe[0] != -1 && d.tls_dst) {
		if (pipe_to_tls(s, &d, p) != 1)
			return;
	} else {
		if (p->pipe[0] != -1)
			m = written(splice(p->pipe[0], NULL, fd, NULL,
			    p->len - p->off, SPLICE_F_MOVE | SPLICE_F_NONBLOCK),
			    p->len - p->off);
		else
			m = dst_write(s, &d, p->data + p->off, p->len - p->off);
		if (m < 0) {
			if (errno != EAGAIN && errno != EINTR)
				session_close(s,
				    session_side_error(!from_client));
			return;
		}
		p->off += (uint32_t)m;
		if (p->off < p->len)
			return;
	}
	if (p->pipe[0] != -1)
		pipe_put(session_worker(s), p->pipe); /* drained: empty again */
	pending_free(session_worker(s), d.pend);
	if (s->flags & d.eof) {
		finish_direction(s, &d);
		return;
	}
	if (event_add(d.src_ev, NULL) == -1) {
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return;
	}
	if (from_client)
		tls_more(s);
}

static void
on_client(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	relay_read(arg, 1);
}

static void
on_backend(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	relay_read(arg, 0);
}

/*
 * The relay phase (from session_next): both sockets are connected, so
 * watch them, and read the client at once, since a client that speaks
 * first has usually sent its first bytes by now (one read saves a trip
 * through the event loop).  The session is on the idle list before its
 * events are added, so that session_close, which relay_stop's every
 * session in this phase, finds it there even when an add fails.
 */
void
relay_start(struct session *s)
{
	struct acceptor *a = s->acc;
	struct event_base *base = a->w->base;

	event_del(&s->bev);
	event_assign(&s->cev, base, s->cfd, EV_READ | EV_PERSIST, on_client, s);
	event_assign(&s->bev, base, s->bfd, EV_READ | EV_PERSIST, on_backend,
	    s);
	if (a->lc->idle_timeout > 0) {
		s->last_active = now_ms();
		TAILQ_INSERT_TAIL(&a->idle_list, s, idle);
		if (!evtimer_pending(&a->idle_timer, NULL))
			arm_idle(a, (int64_t)a->lc->idle_timeout * 1000);
	}
	if (event_add(&s->cev, NULL) == -1 || event_add(&s->bev, NULL) == -1) {
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return;
	}
	relay_read(s, 1);
}

/* Undo relay_start's bookkeeping (session_close, for the relay phase). */
void
relay_stop(struct session *s)
{
	pending_free(session_worker(s), &s->to_client);
	pending_free(session_worker(s), &s->to_backend);
	if (s->acc->lc->idle_timeout > 0)
		TAILQ_REMOVE(&s->acc->idle_list, s, idle);
}
