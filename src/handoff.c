/*
 * handoff.c: mode = "handoff": each admitted client's socket is passed to
 * a handler process, and its end is learnt from the handler.
 *
 * A worker keeps one channel, a Unix stream connection, to each socket of
 * each listener whose backend is in hand-off mode, and reconnects with
 * backoff when it ends.  A channel is ready once the handler's hello
 * ("esockd-handoff 1") came.  A client goes as one message: the PROXY v2
 * header naming it (backend.c builds it, with the connection's unique id)
 * with the socket attached (SCM_RIGHTS).  Then the worker closes its copy
 * and the session ends (session_hand_over); the connection stays open in
 * the books as a struct handed, holding its listener slot, per-source
 * entry and socket count, until the handler's "closed <id>" record, the
 * channel's end (closed_handler_lost: the handler exited, and the kernel
 * closed its clients), or the worker's (closed_handoff_released: the
 * handler keeps them and tells another channel "held <id>", which counts
 * each open again as adopted).  The records are esockd(8)'s HAND-OFF
 * PROTOCOL.  A channel whose send buffer is full is skipped until it is
 * writable; a client no channel can take waits, up to connect_timeout.
 */
#include "handoff.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "proxy_proto.h"
#include "session.h"

#define BACKOFF_MIN_MS	100
#define BACKOFF_MAX_MS	5000
#define HELLO		"esockd-handoff 1"
#define HANDED_BUCKETS	4096	/* chains past that; a lookup per close */

/*
 * A client handed off (or adopted) and open in the books: on its
 * channel's list and in the worker's table by id.
 */
struct handed {
	TAILQ_ENTRY(handed)	 on;
	struct handed		*next;	/* hash chain */
	struct channel		*ch;
	int32_t			 src_entry;	/* per-source count, or -1 */
	uint32_t		 hash;
	char			 id[SESSION_ID_LEN];
};

static void	channel_connect(struct channel *);
static void	channel_down(struct channel *, const char *why);
static void	retry_waiting(struct acceptor *);

static uint32_t
id_hash(const char *id)
{
	return (uint32_t)str_hash(id);
}

static const char *
channel_path(const struct channel *ch)
{
	return ch->acc->lc->backend.sockets[ch->b];
}

static struct shm_counters *
channel_counters(const struct channel *ch)
{
	struct worker *w = ch->acc->w;

	return shm_slot(w->shm, ch->acc->li, w->slot);
}

static void
channel_warn(struct channel *ch, const char *fmt, const char *what)
{
	uint64_t suppressed;

	if (!log_ratelimit_pass(&ch->acc->rl_handoff, &suppressed))
		return;
	log_warnx("listener '%s': hand-off channel to %s: %s: %s (%llu more "
	    "since the last report)", ch->acc->lc->name, channel_path(ch),
	    fmt, what, (unsigned long long)suppressed);
}

/* ---------------------------------------------------------------- the books */

static struct handed *
handed_find(struct worker *w, const char *id, uint32_t hash)
{
	struct handed *h;

	if (w->handed == NULL)
		return NULL;
	for (h = w->handed[hash & (w->handed_buckets - 1)]; h != NULL;
	    h = h->next)
		if (h->hash == hash && strcmp(h->id, id) == 0)
			return h;
	return NULL;
}

/* A new record on ch (the slot and entry are already counted); hash is
 * id_hash(id), which the caller has at hand. */
static struct handed *
handed_add(struct channel *ch, const char *id, uint32_t hash,
    int32_t src_entry)
{
	struct worker *w = ch->acc->w;
	struct handed *h;
	size_t i;

	if (w->handed == NULL) {
		w->handed = calloc(HANDED_BUCKETS, sizeof(*w->handed));
		if (w->handed == NULL)
			return NULL;
		w->handed_buckets = HANDED_BUCKETS;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->ch = ch;
	h->src_entry = src_entry;
	h->hash = hash;
	strncpy(h->id, id, sizeof(h->id) - 1);
	i = h->hash & (w->handed_buckets - 1);
	h->next = w->handed[i];
	w->handed[i] = h;
	TAILQ_INSERT_TAIL(&ch->handed, h, on);
	ch->nhanded++;
	atomic_fetch_add(&channel_counters(ch)->backend_open[ch->b], 1);
	return h;
}

/* The end of a handed-off connection, counted in why. */
static void
handed_end(struct handed *h, enum shm_counter why)
{
	struct channel *ch = h->ch;
	struct worker *w = ch->acc->w;
	struct shm_counters *c = channel_counters(ch);
	struct handed **pp = &w->handed[h->hash & (w->handed_buckets - 1)];

	while (*pp != h)
		pp = &(*pp)->next;
	*pp = h->next;
	TAILQ_REMOVE(&ch->handed, h, on);
	ch->nhanded--;
	atomic_fetch_sub(&c->backend_open[ch->b], 1);
	source_release(w->shm, w->slot, h->src_entry);
	shm_release(w->shm, ch->acc->li, w->slot);
	shm_count(&c->n[why], 1);
	log_debug("listener '%s': handed-off connection ended: %s [conn %s]",
	    ch->acc->lc->name, why == SC_CLOSED_BY_HANDLER ? "by_handler" :
	    why == SC_CLOSED_HANDLER_LOST ? "handler_lost" : "released",
	    h->id);
	/* As a relayed session's end does: a worker that stepped back from
	 * accepting (ahead of its peers by open connections) comes back at
	 * once if this leaves it no longer ahead, not only when its timer
	 * is up.  Without it two workers stepped back together wait out
	 * the timer on every close, and accepting stalls.  Not while the
	 * worker ends (released): its acceptor is stopped by then. */
	if (why != SC_CLOSED_HANDOFF_RELEASED)
		acceptor_session_closed(ch->acc);
	free(h);
}

static void
handed_end_all(struct channel *ch, enum shm_counter why)
{
	struct handed *h;

	while ((h = TAILQ_FIRST(&ch->handed)) != NULL)
		handed_end(h, why);
}

/* ------------------------------------------------------- records from it */

static void
count_bad(struct channel *ch)
{
	shm_count(&channel_counters(ch)->handoff_bad_records, 1);
}

/* A record that names no connection it may: counted, told, ignored. */
static void
bad_record(struct channel *ch, const char *what)
{
	count_bad(ch);
	channel_warn(ch, "record refused", what);
}

/* "closed <id>": the handler closed that client. */
static void
record_closed(struct channel *ch, const char *id)
{
	struct handed *h = handed_find(ch->acc->w, id, id_hash(id));

	if (h == NULL || h->ch->acc != ch->acc) {
		bad_record(ch, "closed: no such connection handed off");
		return;
	}
	handed_end(h, SC_CLOSED_BY_HANDLER);
}

/*
 * The per-source count of an adopted client, from the address its
 * "held" record gave (the PROXY header's source): an entry claimed with
 * no limit, since the connection is open whatever the count says, so
 * that its source's next clients see it.  -1: none to claim (no address,
 * no max_connections_per_source, or a full table, which is logged).
 */
static int32_t
held_source(struct channel *ch, const char *addr, const char *id)
{
	const struct listener_conf *lc = ch->acc->lc;
	struct worker *w = ch->acc->w;
	struct sockaddr_storage ss;
	struct source_key sk;
	int32_t entry = -1;

	if (addr == NULL)
		return -1;
	if (addr_parse_ip(addr, &ss) == -1) {
		bad_record(ch, "held: the address after the id is not an "
		    "IPv4 or IPv6 address");
		return -1;
	}
	if (lc->max_per_source == 0)
		return -1;
	if (source_key_of((struct sockaddr *)&ss, lc->source_prefix_v4,
	    lc->source_prefix_v6, &sk) == 0 &&
	    source_admit(w->shm, ch->acc->li, w->slot, &sk, INT_MAX,
	    &entry) == -2)
		log_warnx("listener '%s': this worker's table of sources is "
		    "full; held connection not counted for %s [conn %s]",
		    lc->name, addr, id);
	return entry;
}

/*
 * "held <id> [<address>]": a client of an ended channel, open again on
 * this one (and in its source's count, when the address is given).
 */
static void
record_held(struct channel *ch, char *args)
{
	struct worker *w = ch->acc->w;
	char *id = args, *addr = strchr(args, ' ');
	uint32_t hash;
	int32_t entry;

	if (addr != NULL)
		*addr++ = '\0';
	hash = id_hash(id);
	if (*id == '\0' || strlen(id) >= SESSION_ID_LEN ||
	    handed_find(w, id, hash) != NULL) {
		bad_record(ch, "held: an empty, over-long or known id");
		return;
	}
	shm_adopt(w->shm, ch->acc->li, w->slot);
	entry = held_source(ch, addr, id);
	if (handed_add(ch, id, hash, entry) == NULL) {
		/* Counted open and closed at once: the books stay exact. */
		log_warnx("listener '%s': out of memory for a held connection "
		    "[conn %s]", ch->acc->lc->name, id);
		source_release(w->shm, w->slot, entry);
		shm_release(w->shm, ch->acc->li, w->slot);
		shm_count(&channel_counters(ch)->closed_local_error, 1);
	}
}

/* One line from the handler; -1 when the channel was taken down. */
static int
record(struct channel *ch, char *line)
{
	if (ch->state == CH_HELLO) {
		if (strcmp(line, HELLO) != 0) {
			count_bad(ch);
			channel_down(ch, "its first line is not \"" HELLO
			    "\": the handler does not speak the hand-off "
			    "protocol version 1");
			return -1;
		}
		ch->state = CH_READY;
		ch->backoff_ms = BACKOFF_MIN_MS;
		atomic_fetch_or(&channel_counters(ch)->channels_up,
		    1u << ch->b);
		log_info("listener '%s': hand-off channel to %s ready",
		    ch->acc->lc->name, channel_path(ch));
		retry_waiting(ch->acc);
		return 0;
	}
	if (strncmp(line, "closed ", 7) == 0) {
		record_closed(ch, line + 7);
		return 0;
	}
	if (strncmp(line, "held ", 5) == 0) {
		record_held(ch, line + 5);
		return 0;
	}
	count_bad(ch);
	channel_down(ch, "a record that is not 'closed ID' or 'held ID'");
	return -1;
}

static void
on_channel_read(evutil_socket_t fd, short what, void *arg)
{
	struct channel *ch = arg;
	ssize_t n;
	char *nl;

	(void)what;
	n = recv(fd, ch->in + ch->inlen, sizeof(ch->in) - ch->inlen, 0);
	if (n == 0) {
		channel_down(ch, "closed by the handler");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			channel_down(ch, strerror(errno));
		return;
	}
	ch->inlen += (size_t)n;
	while ((nl = memchr(ch->in, '\n', ch->inlen)) != NULL) {
		size_t len = (size_t)(nl - ch->in) + 1;

		*nl = '\0';
		/* A hello may hand the waiting clients over, and a failed
		 * send take this very channel down. */
		if (record(ch, ch->in) == -1 || ch->state != CH_READY)
			return;
		memmove(ch->in, ch->in + len, ch->inlen - len);
		ch->inlen -= len;
	}
	if (ch->inlen == sizeof(ch->in)) {
		count_bad(ch);
		channel_down(ch, "a record over 127 bytes");
	}
}

/* ------------------------------------------------------------ the channel */

static void
set_backoff_timer(struct channel *ch)
{
	struct timeval tv = { ch->backoff_ms / 1000,
	    (ch->backoff_ms % 1000) * 1000 };

	if (evtimer_add(&ch->retry, &tv) == -1)
		log_warnx("listener '%s': cannot arm the hand-off channel's "
		    "retry timer", ch->acc->lc->name);
	ch->backoff_ms = ch->backoff_ms * 2 > BACKOFF_MAX_MS ?
	    BACKOFF_MAX_MS : ch->backoff_ms * 2;
}

/*
 * The channel ended: every client handed over on it was the handler's,
 * and the kernel closed them with it (or the handler keeps them and says
 * so on another channel).  Then reconnect, after the backoff.
 */
static void
channel_down(struct channel *ch, const char *why)
{
	struct worker *w = ch->acc->w;
	size_t n = ch->nhanded;

	event_del(&ch->rev);
	event_del(&ch->wev);
	if (ch->fd != -1) {
		if (close(ch->fd) == -1)
			log_warn("close hand-off channel");
		ch->fd = -1;
		w->fds_in_use--;
	}
	atomic_fetch_and(&channel_counters(ch)->channels_up, ~(1u << ch->b));
	/* Every end that lost connections is told; a handler that keeps
	 * failing its hello is told at the log's rate. */
	if (n > 0)
		log_warnx("listener '%s': hand-off channel to %s ended (%s); "
		    "%zu handed-off connections counted closed",
		    ch->acc->lc->name, channel_path(ch), why, n);
	else if (ch->state >= CH_HELLO)
		channel_warn(ch, "ended", why);
	handed_end_all(ch, SC_CLOSED_HANDLER_LOST);
	ch->state = CH_DOWN;
	ch->full = 0;
	ch->inlen = 0;
	set_backoff_timer(ch);
}

static void
channel_failed(struct channel *ch, int err, const char *what)
{
	enum backend_failure r = err == ENOENT || err == ENOTDIR ?
	    BF_MISSING : BF_REFUSED;
	struct worker *w = ch->acc->w;

	atomic_fetch_add(&w->shm->backends[ch->acc->li][ch->b].failures[r], 1);
	channel_warn(ch, what, strerror(err));
	channel_down(ch, strerror(err));
}

static void
channel_up(struct channel *ch)
{
	ch->state = CH_HELLO;
	event_del(&ch->wev);
	if (event_add(&ch->rev, NULL) == -1)
		channel_down(ch, "cannot watch the channel");
}

/* Connected, or writable again after a full send buffer. */
static void
on_channel_write(evutil_socket_t fd, short what, void *arg)
{
	struct channel *ch = arg;
	int err = 0;
	socklen_t len = sizeof(err);

	(void)what;
	if (ch->state == CH_CONNECTING) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			channel_failed(ch, err, "connect");
			return;
		}
		channel_up(ch);
		return;
	}
	event_del(&ch->wev);
	ch->full = 0;
	retry_waiting(ch->acc);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	channel_connect(arg);
}

static void
channel_connect(struct channel *ch)
{
	struct worker *w = ch->acc->w;
	struct sockaddr_un sun;
	socklen_t sunlen;

	if (!worker_fds_fit(w, 1)) {
		channel_warn(ch, "connect", "out of descriptors");
		set_backoff_timer(ch);
		return;
	}
	addr_unix(channel_path(ch), &sun, &sunlen);
	ch->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ch->fd == -1) {
		channel_warn(ch, "socket", strerror(errno));
		set_backoff_timer(ch);
		return;
	}
	w->fds_in_use++;
	event_assign(&ch->rev, w->base, ch->fd, EV_READ | EV_PERSIST,
	    on_channel_read, ch);
	event_assign(&ch->wev, w->base, ch->fd, EV_WRITE | EV_PERSIST,
	    on_channel_write, ch);
	if (connect(ch->fd, (struct sockaddr *)&sun, sunlen) == 0) {
		channel_up(ch);
		return;
	}
	if (errno == EINPROGRESS) {
		ch->state = CH_CONNECTING;
		if (event_add(&ch->wev, NULL) == -1)
			channel_down(ch, "cannot watch the channel");
		return;
	}
	/* EAGAIN: the handler's accept queue is full; try again soon. */
	channel_failed(ch, errno, "connect");
}

int
handoff_init(struct acceptor *a)
{
	const struct backend_conf *b = &a->lc->backend;

	TAILQ_INIT(&a->handoff_wait);
	if (b->mode != BACKEND_HANDOFF)
		return 0;
	a->channels = calloc(b->nsockets, sizeof(*a->channels));
	if (a->channels == NULL) {
		log_error("listener '%s': hand-off channels", a->lc->name);
		return -1;
	}
	a->nchannels = b->nsockets;
	for (size_t i = 0; i < a->nchannels; i++) {
		struct channel *ch = &a->channels[i];
		struct timeval now = { 0, 0 };

		ch->acc = a;
		ch->b = (uint16_t)i;
		ch->fd = -1;
		ch->backoff_ms = BACKOFF_MIN_MS;
		TAILQ_INIT(&ch->handed);
		evtimer_assign(&ch->retry, a->w->base, on_retry, ch);
		/* From the loop: the descriptor budget is not set up yet. */
		if (evtimer_add(&ch->retry, &now) == -1) {
			log_errorx("listener '%s': cannot start the hand-off "
			    "channels", a->lc->name);
			return -1;
		}
	}
	return 0;
}

/*
 * The worker stops: the handler keeps the clients it was given and
 * tells another channel it holds them, so they are counted closed here
 * (released) and open again there (adopted).
 */
void
handoff_free(struct acceptor *a)
{
	for (size_t i = 0; i < a->nchannels; i++) {
		struct channel *ch = &a->channels[i];

		handed_end_all(ch, SC_CLOSED_HANDOFF_RELEASED);
		event_del(&ch->retry);
		event_del(&ch->rev);
		event_del(&ch->wev);
		if (ch->fd != -1 && close(ch->fd) == -1)
			log_warn("close hand-off channel");
		ch->fd = -1;
	}
	free(a->channels);
	a->channels = NULL;
	a->nchannels = 0;
}

/* ------------------------------------------------------------ the hand-off */

/*
 * Send s's client on ch: 1 handed over (the session ended), 0 the
 * channel cannot take it now, -1 the session was closed.
 */
static int
send_client(struct channel *ch, struct session *s)
{
	uint8_t hdr[PROXY_V2_TLV_MAX];
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec iov;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c;
	char id[SESSION_ID_LEN];
	size_t len;
	ssize_t n;

	s->backend = ch->b;
	session_id(session_worker(s), s->seq, id);
	if ((len = backend_proxy_header(s, id, hdr, sizeof(hdr))) == 0)
		return -1;
	iov.iov_base = hdr;
	iov.iov_len = len;
	memset(&cm, 0, sizeof(cm));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &s->cfd, sizeof(int));
	n = sendmsg(ch->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	/* Full: the channel's buffer, or the descriptors this user may have
	 * in flight (ETOOMANYREFS, past RLIMIT_NOFILE): the handler is
	 * behind, not gone, so its clients stay and the next waits. */
	if (n == -1 && (errno == EAGAIN || errno == ENOBUFS ||
	    errno == ETOOMANYREFS)) {
		ch->full = 1;
		if (event_add(&ch->wev, NULL) == -1)
			channel_down(ch, "cannot watch the channel");
		return 0;
	}
	if (n == -1) {
		channel_down(ch, strerror(errno));
		return 0;
	}
	if (handed_add(ch, id, id_hash(id), s->src_entry) == NULL) {
		/* The handler has it, but it cannot be booked: the channel
		 * goes, which ends its clients (and counts them) too. */
		log_warnx("listener '%s': out of memory for a hand-off record "
		    "[conn %s]", s->acc->lc->name, id);
		channel_down(ch, "out of memory");
		session_close(s, SC_CLOSED_LOCAL_ERROR);
		return -1;
	}
	s->src_entry = -1;	/* the record's now */
	atomic_fetch_add(&session_worker(s)->shm->backends[s->acc->li]
	    [ch->b].connects, 1);
	session_hand_over(s);
	/* A cut message leaves the channel out of step with the handler. */
	if ((size_t)n != len)
		channel_down(ch, "a hand-off message was cut short");
	return 1;
}

/*
 * The channel with the fewest open connections across the workers among
 * those that can take a client now, from the acceptor's rotation on.
 */
static struct channel *
choose(struct acceptor *a, const uint32_t *skip)
{
	struct channel *best = NULL;
	int64_t best_open = 0;

	for (size_t k = 0; k < a->nchannels; k++) {
		struct channel *ch = &a->channels[(a->rr + k) % a->nchannels];
		int64_t open;

		if (ch->state != CH_READY || ch->full || (*skip & (1u << ch->b)))
			continue;
		open = shm_backend_open(a->w->shm, a->li, ch->b);
		if (best == NULL || open < best_open) {
			best = ch;
			best_open = open;
		}
	}
	a->rr++;
	return best;
}

/* 1 handed over, 0 no channel can take it now, -1 closed. */
static int
try_hand(struct session *s)
{
	struct channel *ch;
	uint32_t skip = 0;
	int rc;

	while ((ch = choose(s->acc, &skip)) != NULL) {
		if ((rc = send_client(ch, s)) != 0)
			return rc;
		skip |= 1u << ch->b;
	}
	return 0;
}

static void
on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	uint64_t suppressed;

	(void)fd;
	(void)what;
	if (log_ratelimit_pass(&s->acc->rl_backend, &suppressed))
		log_warnx("listener '%s': no hand-off channel could take a "
		    "client within connect_timeout; connection refused (%llu "
		    "more since the last report)", s->acc->lc->name,
		    (unsigned long long)suppressed);
	session_close(s, SC_CLOSED_BACKEND_UNAVAILABLE);
}

/* The hand-off phase (from session_next): now, or once a channel can. */
void
handoff_start(struct session *s)
{
	struct acceptor *a = s->acc;
	int ms = a->lc->backend.connect_timeout_ms;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (try_hand(s) != 0)
		return;
	TAILQ_INSERT_TAIL(&a->handoff_wait, s, wait);
	s->flags |= S_HANDOFF_WAIT;
	evtimer_assign(&s->bev, a->w->base, on_wait_timeout, s);
	if (evtimer_add(&s->bev, &tv) == -1)
		session_close(s, SC_CLOSED_LOCAL_ERROR);
}

void
handoff_stop(struct session *s)
{
	if (!(s->flags & S_HANDOFF_WAIT))
		return;
	TAILQ_REMOVE(&s->acc->handoff_wait, s, wait);
	s->flags &= (uint16_t)~S_HANDOFF_WAIT;
}

/* A channel became ready or writable: the waiting clients, in order. */
static void
retry_waiting(struct acceptor *a)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&a->handoff_wait)) != NULL) {
		handoff_stop(s);
		if (try_hand(s) == 0) {
			/* None can take it: back at the head, and wait. */
			TAILQ_INSERT_HEAD(&a->handoff_wait, s, wait);
			s->flags |= S_HANDOFF_WAIT;
			return;
		}
	}
}
