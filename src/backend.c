/*
 * backend.c: connect a session to one of its listener's Unix sockets.
 *
 * Sockets are tried round-robin; a refusal, a missing path or a timeout
 * moves on to the next one, and only when every socket has failed is the
 * client closed and a backend failure counted.  A Unix socket whose
 * accept queue is full answers EAGAIN rather than EINPROGRESS, so that
 * case is retried on a short timer until connect_timeout runs out.
 * With proxy_protocol the PROXY v2 header is the first thing sent on
 * the new connection, before the relay starts, with its TLVs: the
 * connection's id, the client's TLS identity, a CRC32c (proxy_proto.c).
 * The phase ends in session_next() once connected, or in session_close()
 * (which counts backend_failures for SC_CLOSED_BACKEND_UNAVAILABLE).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy_proto.h"
#include "session.h"
#include "tls.h"

#define RETRY_MIN_MS	1
#define RETRY_MAX_MS	64

static void try_backend(struct session *);
static void attempt(struct session *);

static const char *
backend_path(struct session *s)
{
	return s->acc->lc->backend.sockets[s->backend];
}

static void
backend_warn(struct session *s, int err, const char *what)
{
	char id[SESSION_ID_LEN];
	uint64_t suppressed;

	if (!log_ratelimit_pass(&s->acc->rl_backend, &suppressed))
		return;
	session_id(session_worker(s), s->seq, id);
	log_warnx("listener '%s': backend %s: %s: %s (%llu more since the last "
	    "report) [conn %s]", s->acc->lc->name, backend_path(s), what,
	    strerror(err), (unsigned long long)suppressed, id);
}

/* Give up on the current socket and move to the next, if any is left. */
static void
next_backend(struct session *s, int err, const char *what)
{
	backend_warn(s, err, what);
	event_del(&s->bev);
	if (s->bfd != -1) {
		if (close(s->bfd) == -1)
			log_warn("close backend socket");
		s->bfd = -1;
		session_worker(s)->fds_in_use--;
	}
	s->tries++;
	s->backend = (uint16_t)((s->backend + 1) %
	    s->acc->lc->backend.nsockets);
	try_backend(s);
}

/*
 * The PROXY v2 header, before any client byte.  A fresh Unix stream
 * socket has its whole send buffer free, so the header goes in one
 * send(2); anything short of that is this backend failing, and the next
 * one is tried with a new socket, so no backend sees half a header.
 * Returns 1 when sent, 0 when the client is gone (closed), -1 when the
 * backend failed (moved on).
 */
static int
send_proxy_header(struct session *s)
{
	struct sockaddr_storage src, dst;
	socklen_t slen = sizeof(src), dlen = sizeof(dst);
	uint8_t hdr[PROXY_V2_TLV_MAX];
	char id[SESSION_ID_LEN];
	struct proxy_tls tls;
	struct proxy_tlvs tlvs = { .unique_id = id,
	    .crc32c = s->acc->lc->backend.proxy_crc32c };
	size_t len;
	ssize_t n;

	if (getpeername(s->cfd, (struct sockaddr *)&src, &slen) == -1 ||
	    getsockname(s->cfd, (struct sockaddr *)&dst, &dlen) == -1) {
		/* ENOTCONN: the client reset before we got here. */
		session_close(s, SC_CLOSED_CLIENT_RESET);
		return 0;
	}
	/* Behind a PROXY header, the client and the address it reached
	 * are the header's, and its TLVs go on (proxy_proto.c merges). */
	if (s->origin != NULL) {
		if (session_client(s) != NULL) {
			src = s->origin->src;
			dst = s->origin->dst;
		}
		tlvs.passed = s->origin->tlvs;
		tlvs.npassed = s->origin->ntlvs;
	}
	session_id(session_worker(s), s->seq, id);
	if (s->ssl != NULL) {
		tls_identity(s, &tls);
		tlvs.tls = &tls;
	}
	len = proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &tlvs, hdr, sizeof(hdr));
	if (len == 0) {
		/* Only a client certificate's CN, or the TLVs passed on, can
		 * be over their bounds. */
		backend_warn(s, EMSGSIZE, "PROXY header (client certificate "
		    "CN over 255 bytes, or TLVs received over "
		    "PROXY_PASS_MAX)");
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return 0;
	}
	if ((n = send(s->bfd, hdr, len, MSG_NOSIGNAL | MSG_DONTWAIT)) ==
	    (ssize_t)len)
		return 1;
	next_backend(s, n == -1 ? errno : EAGAIN, "send PROXY header");
	return -1;
}

/* Connected (and the header sent): this phase is done. */
static void
connected(struct session *s)
{
	if (s->acc->lc->backend.proxy_protocol && send_proxy_header(s) != 1)
		return;
	session_next(s);
}

static int
deadline_passed(struct session *s)
{
	struct timeval now;

	event_base_gettimeofday_cached(session_worker(s)->base, &now);
	return evutil_timercmp(&now, &s->deadline, >=);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	attempt(arg);
}

/* The in-progress connect finished, or its deadline came. */
static void
on_connect_done(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	socklen_t len = sizeof(int);
	int err = 0;

	if (what & EV_TIMEOUT) {
		next_backend(s, ETIMEDOUT, "connect");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		next_backend(s, err, "connect");
		return;
	}
	connected(s);
}

static void
remaining(struct session *s, struct timeval *tv)
{
	struct timeval now;

	event_base_gettimeofday_cached(session_worker(s)->base, &now);
	evutil_timersub(&s->deadline, &now, tv);
	if (tv->tv_sec < 0)
		evutil_timerclear(tv);
}

/*
 * One connect(2) on the current socket.  "@name" is in the abstract
 * namespace: sun_path is a NUL and the name, and the length passed is
 * exactly that, since every byte of it (trailing NULs too) is the name.
 */
static void
attempt(struct session *s)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = backend_path(s);
	socklen_t len = sizeof(sun);
	struct timeval tv;

	if (path[0] == '@') {
		/* config.c bounds the name to fit after the NUL. */
		memcpy(sun.sun_path + 1, path + 1, strlen(path + 1));
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
		    strlen(path + 1));
	} else {
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	}
	if (connect(s->bfd, (struct sockaddr *)&sun, len) == 0) {
		connected(s);
		return;
	}
	switch (errno) {
	case EINPROGRESS:
		remaining(s, &tv);
		event_assign(&s->bev, session_worker(s)->base, s->bfd, EV_WRITE,
		    on_connect_done, s);
		if (event_add(&s->bev, &tv) == -1)
			next_backend(s, errno, "wait for connect");
		return;
	case EAGAIN:
		if (deadline_passed(s)) {
			next_backend(s, ETIMEDOUT, "connect (accept queue full)");
			return;
		}
		tv.tv_sec = 0;
		tv.tv_usec = s->retry_ms * 1000;
		if (s->retry_ms < RETRY_MAX_MS)
			s->retry_ms *= 2;
		evtimer_assign(&s->bev, session_worker(s)->base, on_retry, s);
		if (evtimer_add(&s->bev, &tv) == -1)
			next_backend(s, errno, "arm connect retry");
		return;
	case EINTR:
		attempt(s);
		return;
	default:
		next_backend(s, errno, "connect");
	}
}

/* Start on the current socket with a fresh descriptor and deadline. */
static void
try_backend(struct session *s)
{
	const struct backend_conf *b = &s->acc->lc->backend;
	struct timeval now, tv;

	if (s->tries >= b->nsockets) {
		session_close(s, SC_CLOSED_BACKEND_UNAVAILABLE);
		return;
	}
	s->bfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->bfd == -1) {
		int err = errno;
		/* Out of descriptors: stop taking clients we cannot serve. */
		if (err == EMFILE || err == ENFILE || err == ENOBUFS ||
		    err == ENOMEM)
			acceptor_pause(s->acc, err, "backend socket");
		else
			backend_warn(s, err, "socket");
		session_close(s, SC_CLOSED_BACKEND_UNAVAILABLE);
		return;
	}
	session_worker(s)->fds_in_use++;
	s->retry_ms = RETRY_MIN_MS;
	event_base_gettimeofday_cached(session_worker(s)->base, &now);
	tv.tv_sec = b->connect_timeout_ms / 1000;
	tv.tv_usec = (b->connect_timeout_ms % 1000) * 1000;
	evutil_timeradd(&now, &tv, &s->deadline);
	attempt(s);
}

/* The connect phase (from session_next): the next socket round-robin. */
void
backend_connect(struct session *s)
{
	const struct backend_conf *b = &s->acc->lc->backend;

	s->tries = 0;
	s->backend = (uint16_t)(s->acc->rr++ % b->nsockets);
	try_backend(s);
}
