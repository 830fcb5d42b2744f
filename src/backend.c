/*
 * backend.c: connect a session to one of its listener's Unix sockets.
 *
 * Sockets are chosen round-robin or by fewest open connections (balance),
 * skipping those ejected by their passive health (backend_health.c); a
 * refusal, a missing path or a timeout moves on to the next one, and only
 * when every socket left has failed is the client closed and a backend
 * failure counted.  Each attempt's outcome is counted on its socket (its
 * open connections, connects, failures by reason, latency) and told to
 * its health, and an ejection or a return is logged by the worker whose
 * connect made it.  A Unix socket whose
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
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "backend_health.h"
#include "proxy_proto.h"
#include "session.h"
#include "tls.h"

#define RETRY_MIN_MS	1
#define RETRY_MAX_MS	64
/* A probe's claim outlives its connect_timeout by this much, so that it
 * expires (a worker died mid-probe) but never under a live probe. */
#define PROBE_SLACK_MS	1000

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

/* The shared state and counts of the socket the session is on. */
static struct shm_backend *
backend_shm(struct session *s)
{
	return &session_worker(s)->shm->backends[s->acc->li][s->backend];
}

/* CLOCK_MONOTONIC in µs, and in ms for the health's clock. */
static int64_t
now_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 1000;	/* cannot happen; any time is safe */
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
now_ms(void)
{
	return now_us() / 1000;
}

static void
health_conf_of(const struct session *s, struct health_conf *hc)
{
	const struct backend_conf *b = &s->acc->lc->backend;

	hc->threshold = (uint32_t)b->fail_threshold;
	hc->interval_ms = (uint32_t)b->retry_interval_ms;
	hc->probe_ms = (uint32_t)b->connect_timeout_ms + PROBE_SLACK_MS;
	hc->least = b->balance == BALANCE_LEAST_CONNECTIONS;
}

static enum backend_failure
failure_reason(int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		return BF_MISSING;
	case ETIMEDOUT:
		return BF_TIMEOUT;
	default:
		return BF_REFUSED;
	}
}

/* An ejection or a return, logged once, by the worker that made it. */
static void
health_log(struct session *s, enum health_event e, int err)
{
	struct shm_backend *b = backend_shm(s);
	const char *name = s->acc->lc->name;

	switch (e) {
	case HE_EJECTED:
		log_warnx("listener '%s': backend %s ejected after %d failed "
		    "connects in a row (the last: %s); probed again in %u ms",
		    name, backend_path(s), s->acc->lc->backend.fail_threshold,
		    strerror(err), (unsigned)atomic_load(&b->interval_ms));
		break;
	case HE_RETURNED:
		log_info("listener '%s': backend %s returned: a connect "
		    "succeeded (%s)", name, backend_path(s),
		    s->flags & S_PROBE ? "the probe" : "not a probe");
		break;
	case HE_PROBE_FAILED:
		log_debug("listener '%s': backend %s probe failed: %s; probed "
		    "again in %u ms", name, backend_path(s), strerror(err),
		    (unsigned)atomic_load(&b->interval_ms));
		break;
	case HE_NONE:
		break;
	}
}

/* The session's connection no longer counts on its socket. */
static void
leave_socket(struct session *s)
{
	if (s->flags & S_BACKEND_OPEN)
		atomic_fetch_sub(&session_counters(s)->backend_open[s->backend],
		    1);
	s->flags &= (uint16_t)~(S_BACKEND_OPEN | S_PROBE);
}

/* The attempt on the current socket failed with err: count and judge it. */
static void
attempt_failed(struct session *s, int err)
{
	struct shm_backend *b = backend_shm(s);
	struct health_conf hc;
	enum health_event e;

	health_conf_of(s, &hc);
	atomic_fetch_add(&b->failures[failure_reason(err)], 1);
	e = health_failure(b, (s->flags & S_PROBE) != 0, now_ms(), &hc);
	health_log(s, e, err);
	leave_socket(s);
}

/* Connected: the latency into its bucket, and the socket judged up. */
static void
attempt_succeeded(struct session *s)
{
	static const uint64_t le_us[] = BACKEND_CONNECT_BUCKETS_US;
	struct shm_backend *b = backend_shm(s);
	struct health_conf hc;
	int64_t took;
	uint64_t us;
	int i = 0;

	_Static_assert(sizeof(le_us) / sizeof(le_us[0]) ==
	    BACKEND_CONNECT_NBUCKETS - 1, "one bound per bucket but +Inf");
	took = now_us() - s->connect_began;
	us = took > 0 ? (uint64_t)took : 0;
	while (i < BACKEND_CONNECT_NBUCKETS - 1 && us > le_us[i])
		i++;
	atomic_fetch_add(&b->connect_bucket[i], 1);
	atomic_fetch_add(&b->connect_us, us);
	atomic_fetch_add(&b->connects, 1);
	health_conf_of(s, &hc);
	health_log(s, health_success(b, (s->flags & S_PROBE) != 0, &hc), 0);
	s->flags &= (uint16_t)~S_PROBE;
}

void
backend_release(struct session *s)
{
	if (s->flags & S_PROBE)
		health_probe_abandon(backend_shm(s));
	leave_socket(s);
}

/* Give up on the current socket and move to the next, if any is left. */
static void
next_backend(struct session *s, int err, const char *what)
{
	backend_warn(s, err, what);
	attempt_failed(s, err);
	event_del(&s->bev);
	if (s->bfd != -1) {
		if (close(s->bfd) == -1)
			log_warn("close backend socket");
		s->bfd = -1;
		session_worker(s)->fds_in_use--;
	}
	try_backend(s);
}

/*
 * The PROXY v2 header naming s's client, with its TLVs (id, the
 * connection's id as session_id made it; the client's TLS identity;
 * those a proxy in front passed on), into hdr: a backend's first bytes,
 * or a hand-off's message (handoff.c, which books the client by the same
 * id).
 * Returns its length, or 0 when the session was closed instead: the
 * client is gone, or the header is over its bounds.
 */
size_t
backend_proxy_header(struct session *s, const char *id, uint8_t *hdr,
    size_t cap)
{
	struct sockaddr_storage src, dst;
	socklen_t slen = sizeof(src), dlen = sizeof(dst);
	struct proxy_tls tls;
	struct proxy_tlvs tlvs = { .unique_id = id,
	    .crc32c = s->acc->lc->backend.proxy_crc32c };
	size_t len;

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
	if (s->ssl != NULL) {
		tls_identity(s, &tls);
		tlvs.tls = &tls;
	}
	len = proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &tlvs, hdr, cap);
	if (len == 0) {
		/* Only a client certificate's CN, or the TLVs passed on, can
		 * be over their bounds. */
		backend_warn(s, EMSGSIZE, "PROXY header (client certificate "
		    "CN over 255 bytes, or TLVs received over "
		    "PROXY_PASS_MAX)");
		session_close(s, SC_CLOSED_LOCAL_ERROR);
	}
	return len;
}

/*
 * The PROXY v2 header, before any client byte.  A fresh Unix stream
 * socket has its whole send buffer free, so the header goes in one
 * send(2); anything short of that is this backend failing, and the next
 * one is tried with a new socket, so no backend sees half a header.
 * Returns 1 when sent, 0 when the session was closed, -1 when the
 * backend failed (moved on).
 */
static int
send_proxy_header(struct session *s)
{
	uint8_t hdr[PROXY_V2_TLV_MAX];
	char id[SESSION_ID_LEN];
	size_t len;
	ssize_t n;

	session_id(session_worker(s), s->seq, id);
	if ((len = backend_proxy_header(s, id, hdr, sizeof(hdr))) == 0)
		return 0;
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
	attempt_succeeded(s);
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
	struct sockaddr_un sun;
	socklen_t len;
	struct timeval tv;

	addr_unix(backend_path(s), &sun, &len);
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

/*
 * The socket to try next (health_pick says which), from the one after
 * the last tried; -1 when none is left for this connection.
 */
static int
choose(struct session *s)
{
	const struct backend_conf *b = &s->acc->lc->backend;
	struct shm_region *shm = session_worker(s)->shm;
	int64_t open[ESD_MAX_BACKENDS];
	struct health_conf hc;
	enum health_pick how;
	int i;

	health_conf_of(s, &hc);
	for (size_t k = 0; hc.least && k < b->nsockets; k++)
		open[k] = shm_backend_open(shm, s->acc->li, k);
	i = health_pick(shm->backends[s->acc->li], b->nsockets, s->tried,
	    s->backend, open, now_ms(), &hc, &how);
	if (i == -1)
		return -1;
	s->backend = (uint16_t)i;
	s->tried |= 1u << i;
	if (how == HP_PROBE)
		s->flags |= S_PROBE;
	return 0;
}

/* Start on the next socket with a fresh descriptor and deadline. */
static void
try_backend(struct session *s)
{
	const struct backend_conf *b = &s->acc->lc->backend;
	struct timeval now, tv;

	if (choose(s) == -1) {
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
	atomic_fetch_add(&session_counters(s)->backend_open[s->backend], 1);
	s->flags |= S_BACKEND_OPEN;
	s->retry_ms = RETRY_MIN_MS;
	/* The loop's cached time is coarse (ms) and as old as this
	 * iteration; a Unix connect takes microseconds. */
	s->connect_began = now_us();
	event_base_gettimeofday_cached(session_worker(s)->base, &now);
	tv.tv_sec = b->connect_timeout_ms / 1000;
	tv.tv_usec = (b->connect_timeout_ms % 1000) * 1000;
	evutil_timeradd(&now, &tv, &s->deadline);
	attempt(s);
}

/* The connect phase (from session_next): the search starts in turn. */
void
backend_connect(struct session *s)
{
	const struct backend_conf *b = &s->acc->lc->backend;

	s->tried = 0;
	s->backend = (uint16_t)(s->acc->rr++ % b->nsockets);
	try_backend(s);
}
