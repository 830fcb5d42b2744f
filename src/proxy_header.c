/*
 * proxy_header.c: the PROXY header phase of a session on a listener
 * with proxy_protocol_in: read the header a load balancer sends before
 * the client's first byte, and learn from it who the client is.
 *
 * The header is read with MSG_PEEK and taken off the socket only once it
 * is whole, by its exact length: the bytes after it stay in the kernel,
 * so they reach the backend (or OpenSSL, whose ClientHello comes next
 * on a TLS listener) intact, with no buffer of ours in between.  Peeked
 * bytes stay readable, so the socket is watched edge-triggered: the
 * next segment, not the bytes already seen, wakes the session.  The
 * header must be whole within proxy_header_timeout of the accept;
 * proxy_in.c judges it a byte at a time, so a header that cannot come
 * right is refused at the first wrong byte.
 *
 * A client from proxy_optional_sources (a health check) may send no
 * header: bytes that cannot start one make it a direct client, as does
 * sending nothing until the timeout.  A header from such a source, not
 * also in proxy_sources, is refused as untrusted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy_in.h"
#include "session.h"

static void on_readable(evutil_socket_t, short, void *);

/* The counter of a refusal reason (enum proxy_in_err). */
static _Atomic uint64_t *
fail_counter(struct shm_counters *c, int err)
{
	static const enum shm_counter by_err[PROXY_IN_NERR] = {
		SC_PROXY_FAIL_BAD_SIGNATURE, SC_PROXY_FAIL_BAD_VERSION,
		SC_PROXY_FAIL_BAD_FAMILY, SC_PROXY_FAIL_BAD_LENGTH,
		SC_PROXY_FAIL_BAD_ADDRESS, SC_PROXY_FAIL_BAD_CHECKSUM,
		SC_PROXY_FAIL_TIMEOUT, SC_PROXY_FAIL_UNTRUSTED,
	};

	return &c->n[by_err[-err - 1]];
}

/*
 * Refuse the header: the session ends as closed_proxy_failed, and the
 * reason is counted after the release, as every refusal is (shm.h).
 */
static void
header_failed(struct session *s, int err)
{
	struct acceptor *a = s->acc;
	_Atomic uint64_t *reason = fail_counter(session_counters(s), err);
	char id[SESSION_ID_LEN];
	uint64_t suppressed;

	if (log_ratelimit_pass(&a->rl_rule, &suppressed)) {
		session_id(a->w, s->seq, id);
		log_info("listener '%s': PROXY header refused: %s (%llu more "
		    "since the last report) [conn %s]", a->lc->name,
		    proxy_in_reason(err), (unsigned long long)suppressed, id);
	}
	session_close(s, SC_CLOSED_PROXY_FAILED);
	shm_count(reason, 1);
}

/*
 * Keep what the backend is told: the addresses (when the header names
 * some of a family a backend header can carry) and the TLVs that may go
 * on, as many as fit in PROXY_PASS_MAX (the rest are dropped, not the
 * connection).  A checksum or padding never goes on.  NULL only when
 * out of memory.
 */
static struct session_origin *
origin_new(const struct proxy_in *pi)
{
	struct session_origin *o;
	size_t bytes = 0, used = 0;

	for (size_t i = 0; i < pi->ntlvs; i++)
		bytes += pi->tlvs[i].len;
	if ((o = calloc(1, sizeof(*o) + bytes)) == NULL)
		return NULL;
	if (pi->command == PROXY_IN_PROXY && (pi->family == AF_INET ||
	    pi->family == AF_INET6)) {
		o->src = pi->src;
		o->dst = pi->dst;
	}
	for (size_t i = 0, wire = 0; i < pi->ntlvs; i++) {
		const struct proxy_tlv *t = &pi->tlvs[i];

		if (t->type == PP2_TYPE_CRC32C || t->type == PP2_TYPE_NOOP ||
		    wire + 3 + t->len > PROXY_PASS_MAX)
			continue;
		wire += 3 + t->len;
		o->tlvs[o->ntlvs] = *t;
		o->tlvs[o->ntlvs++].value = o->bytes + used;
		memcpy(o->bytes + used, t->value, t->len);
		used += t->len;
	}
	return o;
}

/* The whole header is in the first len peeked bytes: take it off. */
static void
header_done(struct session *s, const struct proxy_in *pi, size_t len)
{
	ssize_t n;

	if (!(s->flags & S_PROXY_TRUSTED)) {
		header_failed(s, PROXY_IN_ERR_UNTRUSTED);
		return;
	}
	/* Peeked, so there: a short read is the socket failing.  MSG_TRUNC
	 * on TCP drops the bytes without copying them anywhere; the
	 * buffer is named only so that valgrind sees an addressable one
	 * (the header is at most PROXY_IN_MAX, under its size). */
	if ((n = recv(s->cfd, session_worker(s)->scratch, len,
	    MSG_DONTWAIT | MSG_TRUNC)) !=
	    (ssize_t)len) {
		session_close(s, SC_CLOSED_CLIENT_RESET);
		return;
	}
	if ((s->origin = origin_new(pi)) == NULL) {
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return;
	}
	/* LOCAL (v2) or UNKNOWN (v1): the balancer's health check. */
	if (pi->command == PROXY_IN_LOCAL && log_enabled(LOG_LVL_DEBUG))
		log_debug("listener '%s': PROXY header without a client "
		    "(LOCAL): served as the connection itself",
		    s->acc->lc->name);
	session_next(s);
}

/* No header, from a source that may send none: a direct client. */
static void
header_absent(struct session *s)
{
	event_del(&s->cev);
	event_del(&s->bev);
	session_next(s);
}

/*
 * Peek at what came so far and judge it.  Not yet a whole header: wait
 * for the next segment (the read event stays, edge-triggered).
 */
static void
header_step(struct session *s)
{
	uint8_t buf[PROXY_IN_MAX];
	struct proxy_in pi;
	ssize_t n;
	int rc;

	n = recv(s->cfd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {		/* gone before its header was whole */
		session_close(s, SC_CLOSED_CLIENT_RESET);
		return;
	}
	rc = proxy_in_parse((enum proxy_in_mode)s->acc->lc->proxy_in, buf,
	    (size_t)n, &pi);
	if (rc > 0) {
		event_del(&s->cev);
		event_del(&s->bev);
		header_done(s, &pi, (size_t)rc);
		return;
	}
	if (rc == 0)
		return;
	/* Not a header at all, from a source that may send none. */
	if (rc == PROXY_IN_ERR_BAD_SIGNATURE && (s->flags & S_PROXY_OPTIONAL)) {
		header_absent(s);
		return;
	}
	header_failed(s, rc);
}

static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	header_step(arg);
}

/* proxy_header_timeout: no whole header in time. */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	if (s->flags & S_PROXY_OPTIONAL) {	/* said nothing: direct */
		header_absent(s);
		return;
	}
	header_failed(s, PROXY_IN_ERR_TIMEOUT);
}

/*
 * The phase (from session_next): watch the socket, edge-triggered and
 * for good (re-adding an edge-triggered event on a socket with peeked
 * bytes would report them again at once), and a timer for the deadline,
 * then look at what may already be there.
 */
void
proxy_header_start(struct session *s)
{
	struct event_base *base = session_worker(s)->base;
	struct timeval tv = { s->acc->lc->proxy_header_timeout, 0 };

	event_assign(&s->cev, base, s->cfd, EV_READ | EV_ET | EV_PERSIST,
	    on_readable, s);
	evtimer_assign(&s->bev, base, on_deadline, s);
	if (event_add(&s->cev, NULL) == -1 || evtimer_add(&s->bev, &tv) == -1) {
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return;
	}
	header_step(s);
}
