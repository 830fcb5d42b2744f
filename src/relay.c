/*
 * relay.c: move bytes both ways between a client and its backend.
 *
 * Bytes move between bufferevents with evbuffer_add_buffer, which hands
 * over chains instead of copying.  Flow control: when one side's pending
 * output passes RELAY_HIGH, reading from the other side stops until that
 * output drains below half, so a slow or stalled reader costs at most
 * about RELAY_HIGH plus one read per direction.  Half-close: EOF from one
 * side becomes shutdown(SHUT_WR) on the other once its output is flushed;
 * the session ends when both directions are done, on an error, or when
 * idle_timeout passes without a byte read from either side.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>

#include "session.h"

#define RELAY_HIGH	(256 * 1024)
#define RELAY_READ_MAX	(64 * 1024)	/* bytes per read(2) */

#define DONE		(S_CLIENT_EOF | S_BACKEND_EOF | S_CLIENT_SHUT | \
			 S_BACKEND_SHUT)

static int
is_client(struct session *s, struct bufferevent *bev)
{
	return bev == s->cbev;
}

static struct bufferevent *
peer_of(struct session *s, struct bufferevent *bev)
{
	return is_client(s, bev) ? s->bbev : s->cbev;
}

/* Monotonic milliseconds; the coarse clock is a vDSO read, cheap per read. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
touch(struct session *s)
{
	s->last_active = now_ms();
}

/* Shut the write side of bev once nothing is left to send on it. */
static void
shut_when_flushed(struct session *s, struct bufferevent *bev)
{
	unsigned flag = is_client(s, bev) ? S_CLIENT_SHUT : S_BACKEND_SHUT;

	if (s->flags & flag)
		return;
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if (shutdown(bufferevent_getfd(bev), SHUT_WR) == -1 &&
	    errno != ENOTCONN)
		log_debug("shutdown: %s", strerror(errno));
	s->flags |= flag;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct bufferevent *peer = peer_of(s, bev);
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(peer);
	struct shm_counters *c = shm_slot(s->w->shm, s->acc->li, s->w->slot);
	size_t n = evbuffer_get_length(in);

	shm_count(is_client(s, bev) ? &c->bytes_in : &c->bytes_out, n);
	touch(s);
	evbuffer_add_buffer(out, in);
	if (evbuffer_get_length(out) >= RELAY_HIGH) {
		bufferevent_disable(bev, EV_READ);
		s->flags |= is_client(s, bev) ? S_CLIENT_HELD : S_BACKEND_HELD;
		bufferevent_setwatermark(peer, EV_WRITE, RELAY_HIGH / 2, 0);
	}
}

/* bev's output fell to its low watermark: release the reader or shut. */
static void
on_write(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct bufferevent *peer = peer_of(s, bev);
	unsigned held = is_client(s, bev) ? S_BACKEND_HELD : S_CLIENT_HELD;
	unsigned peer_eof = is_client(s, bev) ? S_BACKEND_EOF : S_CLIENT_EOF;

	if (s->flags & held) {
		s->flags &= ~held;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		if (!(s->flags & peer_eof))
			bufferevent_enable(peer, EV_READ);
	}
	if (s->flags & peer_eof) {
		shut_when_flushed(s, bev);
		if ((s->flags & DONE) == DONE)
			session_close(s);
	}
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	if (what & BEV_EVENT_ERROR) {
		session_close(s);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* Whatever is still buffered was handed on by on_read. */
		s->flags |= is_client(s, bev) ? S_CLIENT_EOF : S_BACKEND_EOF;
		touch(s);
		shut_when_flushed(s, peer_of(s, bev));
		if ((s->flags & DONE) == DONE)
			session_close(s);
	}
}

/* idle_timeout: close if nothing was read since; else wait the rest. */
static void
on_idle(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	int64_t idle_ms = (int64_t)s->acc->lc->idle_timeout * 1000;
	int64_t left = s->last_active + idle_ms - now_ms();
	struct timeval tv;

	(void)fd;
	(void)what;
	if (left <= 0) {
		log_debug("listener '%s': closing a connection idle for %d s",
		    s->acc->lc->name, s->acc->lc->idle_timeout);
		session_close(s);
		return;
	}
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	if (evtimer_add(&s->timer, &tv) == -1)
		session_close(s);
}

static struct bufferevent *
relay_bev(struct session *s, int fd)
{
	struct bufferevent *bev = bufferevent_socket_new(s->w->base, fd,
	    BEV_OPT_CLOSE_ON_FREE);

	if (bev == NULL)
		return NULL;
	bufferevent_setcb(bev, on_read, on_write, on_event, s);
	bufferevent_set_max_single_read(bev, RELAY_READ_MAX);
	return bev;
}

/* Both sockets are connected: start moving bytes. */
int
relay_start(struct session *s)
{
	int idle = s->acc->lc->idle_timeout;

	if ((s->cbev = relay_bev(s, s->cfd)) == NULL)
		return -1;
	if ((s->bbev = relay_bev(s, s->bfd)) == NULL)
		return -1;
	if (bufferevent_enable(s->cbev, EV_READ | EV_WRITE) == -1 ||
	    bufferevent_enable(s->bbev, EV_READ | EV_WRITE) == -1)
		return -1;
	touch(s);
	if (idle > 0) {
		struct timeval tv = { idle, 0 };
		evtimer_assign(&s->timer, s->w->base, on_idle, s);
		if (evtimer_add(&s->timer, &tv) == -1)
			return -1;
	}
	return 0;
}
