/*
 * session.c: the life of one connection in a worker, from admission to
 * the last close: which phase comes next, and the one way out.
 *
 * TCP_NODELAY and SO_KEEPALIVE are set on the listening socket, which
 * accepted sockets inherit, so a connection costs no setsockopt.
 * Admission comes first and costs nothing but the accepted descriptor: a
 * connection over max_connections is closed before any allocation or
 * backend work; at the limits, the handshake budget (hs_budget.c) may
 * make room by pushing out a connection stuck in its handshake.  An
 * admitted session then goes through its phases (session.h) by
 * session_next(): the client's PROXY header (proxy_header.c) on a
 * proxy_protocol_in listener, the TLS handshake (tls.c) on a TLS
 * listener, the backend connect (backend.c), the relay (relay.c); or, for
 * a backend in mode = "handoff", the hand-off to a handler (handoff.c)
 * in place of the last two.  The
 * phases before the backend are its handshake window, which
 * max_handshakes budgets: session_hs_enter() opens it at admission,
 * session_hs_leave() closes it when they are done or the session ends.  The
 * phase files report back here, never to each other, so the order is
 * written once, below.  Every admitted session ends in session_close(),
 * the one place that releases its slot in shared memory, so counts stay
 * exact, and the one place that counts why it ended; a handed-off one
 * ends in session_hand_over(), which gives its slot to the hand-off
 * record, released when the handler says the client closed.
 */
#include "session.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cidr.h"
#include "hs_budget.h"
#include "proxy_in.h"
#include "tls.h"

static void
session_nothing(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/*
 * The listener's rules: deny first, then allow (when it has entries).
 * Returns 1 when the client at peer may come in; peer NULL: no rules.
 */
static int
rules_admit(const struct listener_conf *lc, const struct sockaddr *peer)
{
	if (peer == NULL)
		return 1;
	if (cidr_match(lc->deny.v, lc->deny.n, peer))
		return 0;
	return lc->allow.n == 0 || cidr_match(lc->allow.v, lc->allow.n, peer);
}

/*
 * Say why a client was turned away, now and then, after the client's
 * address when known.
 */
static void
refusal_log(struct acceptor *a, uint64_t seq, const struct sockaddr *peer,
    struct log_ratelimit *rl, const char *why)
{
	char who[64] = "";	/* "[IPV6]:PORT " */
	char id[SESSION_ID_LEN];
	uint64_t suppressed;

	if (!log_ratelimit_pass(rl, &suppressed))
		return;
	if (peer != NULL) {
		addr_format(peer, who, sizeof(who) - 1);
		strcat(who, " ");
	}
	session_id(a->w, seq, id);
	log_info("listener '%s': %s%s (%llu more since the last report) "
	    "[conn %s]", a->lc->name, who, why, (unsigned long long)suppressed,
	    id);
}

/*
 * Close a client that admission turned away before admitting it, count
 * it (unless the check counted it itself: counter NULL), and say why.
 * The counter moves after the close.
 */
static void
refuse(struct acceptor *a, int fd, uint64_t seq, const struct sockaddr *peer,
    _Atomic uint64_t *counter, struct log_ratelimit *rl, const char *why)
{
	close(fd);
	a->w->fds_in_use--;
	if (counter != NULL)
		shm_count(counter, 1);
	refusal_log(a, seq, peer, rl, why);
}

/*
 * The id of the worker's seq-th connection: the worker's start time (µs
 * of the real clock), its slot, and seq.  Workers with different slots
 * differ in the slot; workers that have had the same slot (a restart, a
 * reload's new generation beside the draining one, another run of the
 * daemon) were forked one after another by one master, more than a
 * microsecond apart, so they differ in the start time; within a worker
 * seq, 64 bits, never repeats.  Only the real clock stepping back onto
 * the very microsecond a worker of that slot started could repeat one.
 */
void
session_id(const struct worker *w, uint64_t seq, char *buf)
{
	snprintf(buf, SESSION_ID_LEN, "%llx-%d-%llu",
	    (unsigned long long)w->id_epoch, w->slot, (unsigned long long)seq);
}

/*
 * rate_limit: is this connection within the listener's rate, shared by
 * every worker?  A refusal is counted by shm_rate_admit.
 */
static int
rate_admit(struct acceptor *a)
{
	const struct listener_conf *lc = a->lc;
	struct timespec now;

	if (lc->rate_limit == 0)
		return 1;
	if (clock_gettime(CLOCK_MONOTONIC, &now) == -1)
		return 1;	/* cannot happen; a clock error never refuses */
	return shm_rate_admit(a->w->shm, a->li, a->w->slot,
	    (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec,
	    1000000000u / (uint64_t)lc->rate_limit,
	    (uint64_t)lc->rate_burst) == 0;
}

/* Why admission_check turned a client away. */
struct refusal {
	_Atomic uint64_t	*counter;	/* NULL: counted by the check */
	struct log_ratelimit	*rl;
	char			 why[160];
};

/*
 * rate_limit_per_source: is this connection within its source's rate,
 * shared by every worker?  A source whose word another holds is let in
 * unrated (source_rate_admit says why).
 */
static int
source_rate_ok(struct acceptor *a, const struct source_key *k)
{
	const struct listener_conf *lc = a->lc;
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now) == -1)
		return 1;	/* cannot happen; a clock error never refuses */
	return source_rate_admit(a->w->shm, a->li, k,
	    (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000,
	    1000000u / (uint64_t)lc->rate_per_source,
	    (uint64_t)lc->burst_per_source) != -1;
}

/*
 * The client's own checks: its listener's rules, then its source's rate,
 * then the listener's rate, then the per-source limit (which claims an
 * entry in the table: *src).  The rules come first, so a refused client
 * uses up no rate; then its source's rate, so one source's flood uses
 * up none of the listener's.  Returns 0 when
 * the client may come in, -1 with *r filled when not.
 */
static int
admission_check(struct acceptor *a, const struct sockaddr *peer,
    int32_t *src, struct refusal *r)
{
	const struct listener_conf *lc = a->lc;
	struct worker *w = a->w;
	struct shm_counters *c = shm_slot(w->shm, a->li, w->slot);
	struct source_key sk;
	int by_source, rc;

	*src = -1;
	if (!rules_admit(lc, peer)) {
		*r = (struct refusal){ &c->rejected_rule, &a->rl_rule,
		    "refused by its allow/deny rules" };
		return -1;
	}
	by_source = peer != NULL && (lc->max_per_source > 0 ||
	    lc->rate_per_source > 0) && source_key_of(peer,
	    lc->source_prefix_v4, lc->source_prefix_v6, &sk) == 0;
	if (by_source && lc->rate_per_source > 0 && !source_rate_ok(a, &sk)) {
		*r = (struct refusal){ &c->rejected_source_rate,
		    &a->rl_source_rate, "" };
		snprintf(r->why, sizeof(r->why), "over rate_limit_per_source "
		    "%d/s (rate_burst_per_source %d); connection refused",
		    lc->rate_per_source, lc->burst_per_source);
		return -1;
	}
	if (!rate_admit(a)) {
		*r = (struct refusal){ NULL, &a->rl_rate, "" };
		snprintf(r->why, sizeof(r->why), "over rate_limit %d/s "
		    "(rate_burst %d); connection refused", lc->rate_limit,
		    lc->rate_burst);
		return -1;
	}
	if (by_source && lc->max_per_source > 0 && (rc = source_admit(w->shm,
	    a->li, w->slot, &sk, lc->max_per_source, src)) != 0) {
		*r = (struct refusal){ &c->rejected_source, &a->rl_source, "" };
		snprintf(r->why, sizeof(r->why), "%s; connection refused",
		    rc == -1 ? "has max_connections_per_source open" :
		    "cannot be counted: this worker's table of sources is full");
		return -1;
	}
	return 0;
}

/*
 * What the client at peer may do on a proxy_protocol_in listener, as
 * session flags: S_PROXY_TRUSTED (proxy_sources) may send a header,
 * S_PROXY_OPTIONAL (proxy_optional_sources) may send none and is served
 * as it is.  0, from anywhere else, is refused at once: a header from
 * there could name any address, and no header is expected from it.
 */
static uint16_t
proxy_trust(const struct listener_conf *lc, const struct sockaddr *peer)
{
	uint16_t f = 0;

	if (peer == NULL)
		return 0;
	if (cidr_match(lc->proxy_sources.v, lc->proxy_sources.n, peer))
		f |= S_PROXY_TRUSTED;
	if (cidr_match(lc->proxy_optional_sources.v,
	    lc->proxy_optional_sources.n, peer))
		f |= S_PROXY_OPTIONAL;
	return f;
}

/*
 * A freshly accepted client: admit it or close it, then start its
 * phases.  Its own checks come before the limits, so a refused client
 * never holds a slot another could have had; behind a PROXY header
 * (proxy_protocol_in) they wait for the header, which names the client,
 * and only the proxy's right to send one is checked here.  The handshake
 * budget and max_connections come last (hs_budget.c), which end in
 * session_admitted or session_refused.
 */
void
session_start(struct acceptor *a, int fd, const struct sockaddr *peer)
{
	struct worker *w = a->w;
	const struct listener_conf *lc = a->lc;
	struct shm_counters *c = shm_slot(w->shm, a->li, w->slot);
	struct refusal r;
	uint64_t seq = ++w->conn_seq;	/* a refusal's line has an id */
	int32_t src = -1;
	uint16_t trust = 0;

	if (lc->proxy_in != PROXY_IN_OFF) {
		if ((trust = proxy_trust(lc, peer)) == 0) {
			refuse(a, fd, seq, peer, &c->proxy_fail_untrusted,
			    &a->rl_rule, "not in proxy_sources nor "
			    "proxy_optional_sources; connection refused");
			return;
		}
	} else if (admission_check(a, peer, &src, &r) == -1) {
		refuse(a, fd, seq, peer, r.counter, r.rl, r.why);
		return;
	}
	hsb_admit(a, fd, seq, src, trust);
}

/*
 * A client turned away by a limit (hs_budget.c): its per-source entry
 * back, closed and counted.  The handshake budget's refusals are logged
 * now and then; those at max_connections and the global limit never
 * were, being the common case of a full listener.
 */
void
session_refused(struct acceptor *a, int fd, uint64_t seq, int32_t src,
    enum shm_counter why)
{
	struct worker *w = a->w;
	_Atomic uint64_t *counter = &shm_slot(w->shm, a->li, w->slot)->n[why];
	char line[160];

	source_release(w->shm, w->slot, src);
	if (why == SC_REJECTED_HANDSHAKES) {
		snprintf(line, sizeof(line), "%d connections in their handshake "
		    "phase already (max_handshakes); connection refused",
		    hsb_max(a));
		refuse(a, fd, seq, NULL, counter, &a->rl_budget, line);
	} else if (why == SC_REJECTED_EARLY_DROP) {
		snprintf(line, sizeof(line), "dropped early "
		    "(handshake_early_drop \"%s\" of max_handshakes %d); "
		    "connection refused", a->lc->handshake_early_drop,
		    hsb_max(a));
		refuse(a, fd, seq, NULL, counter, &a->rl_budget, line);
	} else {
		close(fd);
		w->fds_in_use--;
		shm_count(counter, 1);
	}
}

/*
 * The handshake window opens: the session is admitted with a place in
 * its listener's handshake budget (hs_budget.c claimed it), listed
 * oldest first, and the oldest is published for the other workers.  It
 * closes in session_hs_leave, when the last phase before the backend is
 * done or the session ends; a phase between the two is inside it.
 */
static void
session_hs_enter(struct session *s)
{
	struct acceptor *a = s->acc;

	s->flags |= S_HANDSHAKING;
	s->hs_began = hsb_now_us();
	TAILQ_INSERT_TAIL(&a->hs_list, s, hs);
	if (TAILQ_FIRST(&a->hs_list) == s)
		hsb_oldest_changed(a, s->hs_began);
}

/* The handshake window closes, if it was open: the place goes back. */
static void
session_hs_leave(struct session *s)
{
	struct acceptor *a = s->acc;
	struct worker *w = a->w;
	int oldest;

	if (!(s->flags & S_HANDSHAKING))
		return;
	s->flags &= ~S_HANDSHAKING;
	oldest = TAILQ_FIRST(&a->hs_list) == s;
	TAILQ_REMOVE(&a->hs_list, s, hs);
	shm_hs_release(w->shm, a->li, w->slot);
	if (oldest)
		hsb_oldest_changed(a, hsb_now_us());
}

/*
 * A client admitted (hs_budget.c holds its places under the limits):
 * its session, which then goes through its phases.  src: its
 * per-source entry; trust: what it may do on a proxy_protocol_in
 * listener (S_PROXY_ flags).
 */
void
session_admitted(struct acceptor *a, int fd, uint64_t seq, int32_t src,
    uint16_t trust)
{
	struct worker *w = a->w;
	struct session *s;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		close(fd);
		w->fds_in_use--;
		source_release(w->shm, w->slot, src);
		if (session_has_handshake(a))
			shm_hs_release(w->shm, a->li, w->slot);
		shm_release(w->shm, a->li, w->slot);
		/* Counted after the release, as every outcome is (shm.h). */
		acceptor_pause(a, ENOMEM, "session allocation");
		return;
	}

	s->acc = a;
	s->seq = seq;
	s->cfd = fd;
	s->bfd = -1;
	s->src_entry = src;
	s->flags = trust;
	/* Assigned now so that session_close may always event_del them. */
	event_assign(&s->cev, w->base, -1, 0, session_nothing, s);
	event_assign(&s->bev, w->base, -1, 0, session_nothing, s);
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	w->nsessions++;
	s->phase = SP_ADMITTED;
	if (session_has_handshake(a))
		session_hs_enter(s);
	session_next(s);
}

/*
 * The listener's connections have a handshake phase, the window that
 * max_handshakes budgets: the client's PROXY header, the TLS handshake,
 * or both.
 */
int
session_has_handshake(const struct acceptor *a)
{
	return a->tls_ctx != NULL || a->lc->proxy_in != PROXY_IN_OFF;
}

/*
 * The PROXY header is in: the client is the one it names (or, with no
 * header or one without addresses, the connection's own peer), and its
 * own checks run now, as session_start runs them for a direct client.
 * Returns 0 to go on, -1 when the session was closed.
 */
static int
session_admit_origin(struct session *s)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	const struct sockaddr *who = session_client(s);
	struct refusal r;

	if (who == NULL) {
		if (getpeername(s->cfd, (struct sockaddr *)&peer, &plen) == -1) {
			session_close(s, SC_CLOSED_CLIENT_RESET);
			return -1;
		}
		who = (const struct sockaddr *)&peer;
	}
	if (admission_check(s->acc, who, &s->src_entry, &r) == 0)
		return 0;
	refusal_log(s->acc, s->seq, who, r.rl, r.why);
	/* After the close, as a refusal before admission is (shm.h). */
	session_close(s, SC_CLOSED_REFUSED);
	if (r.counter != NULL)
		shm_count(r.counter, 1);
	return -1;
}

/*
 * The current phase is done: enter the next one this session uses and
 * start it.  Each case names what follows its phase; a phase a listener
 * does not use falls through to the one after.  A new phase is one case
 * here and one value in enum session_phase.
 */
void
session_next(struct session *s)
{
	switch ((enum session_phase)s->phase) {
	case SP_ADMITTED:
		if (s->acc->lc->proxy_in != PROXY_IN_OFF) {
			s->phase = SP_PROXY_HEADER;
			proxy_header_start(s);
			return;
		}
		/* FALLTHROUGH */
	case SP_PROXY_HEADER:
		if (s->phase == SP_PROXY_HEADER &&
		    session_admit_origin(s) == -1)
			return;
		if (s->acc->tls_ctx != NULL) {
			s->phase = SP_HANDSHAKE;
			tls_start(s);
			return;
		}
		/* A plain listener has no handshake. */
		/* FALLTHROUGH */
	case SP_HANDSHAKE:
		/* The last phase before the backend: the window closes. */
		session_hs_leave(s);
		if (s->acc->lc->backend.mode == BACKEND_HANDOFF) {
			s->phase = SP_HANDOFF;
			handoff_start(s);
			return;
		}
		s->phase = SP_CONNECTING;
		backend_connect(s);
		return;
	case SP_CONNECTING:
		s->phase = SP_RELAYING;
		relay_start(s);
		return;
	case SP_HANDOFF:	/* ends in session_hand_over or _close */
	case SP_RELAYING:	/* a relay ends in session_close only */
	case SP_CLOSING:
		break;
	}
	log_errorx("listener '%s': session_next in phase %d, which has no "
	    "next; closing the connection", s->acc->lc->name, s->phase);
	assert(0);
	session_close(s, SC_CLOSED_LOCAL_ERROR);
}

/* The name of a close reason, for the log: closed_idle_timeout's is
 * "idle_timeout". */
static const char *
close_reason_name(enum shm_counter why)
{
	static const char *const names[] = {
#define REASON_NAME(E, f)	[SC_##E - SC_CLOSED_NORMAL] = #f + 7,
		CLOSE_REASONS(REASON_NAME)
#undef REASON_NAME
	};

	return names[why - SC_CLOSED_NORMAL];
}

/*
 * The failure counter a close reason also moves, or NULL: a handshake
 * that failed or ran late is a TLS failure, no backend reached a backend
 * failure.
 */
static _Atomic uint64_t *
close_failure_counter(struct shm_counters *c, enum shm_counter why)
{
	switch (why) {
	case SC_CLOSED_HANDSHAKE_TIMEOUT:
	case SC_CLOSED_HANDSHAKE_FAILED:
		return &c->tls_failures;
	case SC_CLOSED_BACKEND_UNAVAILABLE:
		return &c->backend_failures;
	default:
		return NULL;
	}
}

/*
 * End a session, for the reason why, from whatever phase it is in: its
 * events, then both sockets, then its share of the count, then the
 * reason counted and the failure it implies, if any (after the release,
 * so a reader who sees either sees the connection gone: shm.h).
 *
 * The events go before the descriptors: libevent updates epoll for the
 * events left on a descriptor (a client with bytes pending has a read
 * and a write event on it), and on a closed one that fails, which it
 * reports as a warning.  The syscalls are the same either way: libevent
 * makes its EPOLL_CTL_DEL whether or not the descriptor is still open.
 */
void
session_close(struct session *s, enum shm_counter why)
{
	struct worker *w = session_worker(s);
	struct shm_counters *c = session_counters(s);
	_Atomic uint64_t *failure = close_failure_counter(c, why);
	enum session_phase was = s->phase;
	char id[SESSION_ID_LEN];

	assert(why >= SC_CLOSED_NORMAL && why < SC_CLOSED_WORKER_LOST);
	assert(was != SP_CLOSING);
	s->phase = SP_CLOSING;
	event_del(&s->cev);
	event_del(&s->bev);
	if (was == SP_RELAYING)
		relay_stop(s);
	if (was == SP_HANDOFF)
		handoff_stop(s);
	if (s->ssl != NULL) {
		/* The close that ends both directions: close_notify first. */
		if (!(s->flags & S_CLIENT_SHUT))
			tls_shutdown(s);
		tls_free(s);
	}
	if (s->cfd != -1 && close(s->cfd) == -1)
		log_warn("close client socket");
	if (s->bfd != -1 && close(s->bfd) == -1)
		log_warn("close backend socket");
	w->fds_in_use -= (s->cfd != -1) + (s->bfd != -1);
	backend_release(s);
	session_hs_leave(s);
	free(s->origin);
	source_release(w->shm, w->slot, s->src_entry);
	shm_release(w->shm, s->acc->li, w->slot);
	shm_count(&c->n[why], 1);
	if (failure != NULL)
		shm_count(failure, 1);	/* after the reason, read before it */
	/* Every connection comes by here: no id formatted for nothing. */
	if (log_enabled(LOG_LVL_DEBUG)) {
		session_id(w, s->seq, id);
		log_debug("listener '%s': connection closed: %s [conn %s]",
		    s->acc->lc->name, close_reason_name(why), id);
	}
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	acceptor_session_closed(s->acc);
	free(s);
	worker_session_closed(w);
}

void
session_hand_over(struct session *s)
{
	struct worker *w = session_worker(s);
	char id[SESSION_ID_LEN];

	assert(s->phase == SP_HANDOFF);
	s->phase = SP_CLOSING;
	event_del(&s->cev);
	event_del(&s->bev);
	/* The handler has its own descriptor for the client now. */
	if (close(s->cfd) == -1)
		log_warn("close client socket");
	w->fds_in_use--;
	free(s->origin);
	shm_count(&session_counters(s)->handed_off, 1);
	if (log_enabled(LOG_LVL_DEBUG)) {
		session_id(w, s->seq, id);
		log_debug("listener '%s': connection handed off to %s [conn %s]",
		    s->acc->lc->name, s->acc->lc->backend.sockets[s->backend],
		    id);
	}
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	acceptor_session_closed(s->acc);
	free(s);
	worker_session_closed(w);
}
