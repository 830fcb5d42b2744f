/*
 * metrics.c: Prometheus text exposition (format 0.0.4) at GET /metrics,
 * served on the master's loop by a small HTTP/1.x responder of our own.
 *
 * The numbers come from stats_collect, the same read the control socket
 * uses.  Like the control socket this is operator traffic, and a hostile
 * client must not be able to pile up master descriptors: one request per
 * connection (the answer says Connection: close), at most
 * METRICS_MAX_CONNS connections open at once (past that, accepting
 * pauses and new ones wait in the backlog), each closed METRICS_TIMEOUT_S
 * after it was accepted whatever it sends (a client trickling its headers
 * cannot stretch that, as it could evhttp's idle timer), and accepting
 * pauses for a second after METRICS_ACCEPTS_PER_S connections in one
 * second.  The endpoint is not authenticated: bind it to loopback or a
 * management address.
 */
#include "metrics.h"

#include <errno.h>
#include <stdint.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "log.h"
#include "master.h"
#include "stats.h"

#define METRICS_TIMEOUT_S	5	/* a connection's whole life */
#define METRICS_MAX_CONNS	16	/* open at once */
#define METRICS_ACCEPTS_PER_S	50
#define METRICS_BACKLOG		64
#define METRICS_REQ_MAX		4096	/* request line and headers */
#define METRICS_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

struct metrics;

/* One client connection, from accept to the end of its one answer. */
struct mconn {
	struct metrics		*mt;
	struct bufferevent	*bev;
	struct event		*deadline;
	TAILQ_ENTRY(mconn)	 entry;
};

struct metrics {
	struct master		*m;
	struct evconnlistener	*lev;
	struct event		*resume;	/* ends a 1 s accept pause */
	TAILQ_HEAD(, mconn)	 conns;
	int			 nconns;
	time_t			 window;	/* monotonic second being counted */
	int			 accepts;	/* connections in that second */
	struct log_ratelimit	 rl;
	char			 addr[80];
};

/* The per-listener families, in the order they are written. */
enum lfam {
	F_CONNS, F_MAX, F_SUSPENDED, F_ACCEPTED, F_CLOSED, F_REFUSED,
	F_ACCEPT_ERRORS, F_RECEIVED, F_SENT, F_COUNT
};

static const struct family {
	const char	*name, *type, *help;
} lfams[F_COUNT] = {
	{ "esockd_connections", "gauge", "Client connections open now." },
	{ "esockd_max_connections", "gauge",
	  "The connection limit in effect (max_connections, or as last set "
	  "by esockdctl)." },
	{ "esockd_listener_suspended", "gauge",
	  "1 while the listener is suspended by esockdctl, else 0." },
	{ "esockd_connections_accepted_total", "counter",
	  "Connections admitted under max_connections." },
	{ "esockd_connections_closed_total", "counter",
	  "Admitted connections that have ended." },
	{ "esockd_connections_refused_total", "counter",
	  "Connections closed without being relayed: over max_connections "
	  "(limit) or no backend socket reachable (backend_unavailable)." },
	{ "esockd_accept_errors_total", "counter",
	  "accept(2) failures, and accepts put off for want of descriptors." },
	{ "esockd_received_bytes_total", "counter", "Bytes read from clients." },
	{ "esockd_sent_bytes_total", "counter", "Bytes written to clients." },
};

static void
family(struct evbuffer *out, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

/* "name{listener="...",reason="..."} ": a sample's name and labels. */
static void
labels(struct evbuffer *out, enum lfam f, const char *listener,
    const char *reason)
{
	evbuffer_add_printf(out, "%s{listener=", lfams[f].name);
	stats_prom_label(out, listener);
	if (reason != NULL) {
		evbuffer_add(out, ",reason=", 8);
		stats_prom_label(out, reason);
	}
	evbuffer_add(out, "} ", 2);
}

/* One sample of a per-listener counter (uint64 in shared memory). */
static void
counter(struct evbuffer *out, enum lfam f, const char *listener,
    const char *reason, uint64_t v)
{
	labels(out, f, listener, reason);
	evbuffer_add_printf(out, "%llu\n", (unsigned long long)v);
}

/* One sample of a per-listener gauge. */
static void
gauge(struct evbuffer *out, enum lfam f, const char *listener, long long v)
{
	labels(out, f, listener, NULL);
	evbuffer_add_printf(out, "%lld\n", v);
}

static void
exposition(const struct stats *s, struct evbuffer *out)
{
	for (int f = 0; f < F_COUNT; f++) {
		family(out, lfams[f].name, lfams[f].type, lfams[f].help);
		for (size_t i = 0; i < s->n; i++) {
			const struct stats_listener *l = &s->l[i];
			const char *n = l->lc->name;

			switch ((enum lfam)f) {
			case F_CONNS:
				gauge(out, F_CONNS, n, (long long)l->t.cur);
				break;
			case F_MAX:
				gauge(out, F_MAX, n, l->max_connections);
				break;
			case F_SUSPENDED:
				gauge(out, F_SUSPENDED, n, l->suspended);
				break;
			case F_ACCEPTED:
				counter(out, F_ACCEPTED, n, NULL, l->t.accepted);
				break;
			case F_CLOSED:
				counter(out, F_CLOSED, n, NULL, l->t.closed);
				break;
			case F_REFUSED:
				counter(out, F_REFUSED, n, "limit",
				    l->t.rejected_limit);
				counter(out, F_REFUSED, n, "backend_unavailable",
				    l->t.backend_failures);
				break;
			case F_ACCEPT_ERRORS:
				counter(out, F_ACCEPT_ERRORS, n, NULL,
				    l->t.accept_errors);
				break;
			case F_RECEIVED:
				counter(out, F_RECEIVED, n, NULL, l->t.bytes_in);
				break;
			case F_SENT:
				counter(out, F_SENT, n, NULL, l->t.bytes_out);
				break;
			case F_COUNT:
				break;
			}
		}
	}
	family(out, "esockd_workers", "gauge",
	    "Worker processes running, of every generation.");
	evbuffer_add_printf(out, "esockd_workers %d\n", s->st.running);
	family(out, "esockd_generation", "gauge",
	    "Configuration generation: 1 at start, +1 per applied reload.");
	evbuffer_add_printf(out, "esockd_generation %u\n", s->st.generation);
	family(out, "esockd_reloads_total", "counter", "Reloads applied.");
	evbuffer_add_printf(out, "esockd_reloads_total %llu\n",
	    (unsigned long long)s->st.reloads);
	family(out, "esockd_reload_failures_total", "counter",
	    "Reloads refused; the previous configuration kept serving.");
	evbuffer_add_printf(out, "esockd_reload_failures_total %llu\n",
	    (unsigned long long)s->st.reload_failures);
	family(out, "esockd_config_last_reload_successful", "gauge",
	    "1 if the last reload was applied (or none was tried), else 0.");
	evbuffer_add_printf(out, "esockd_config_last_reload_successful %d\n",
	    s->st.last_reload_ok ? 1 : 0);
	family(out, "esockd_worker_restarts_total", "counter",
	    "Workers replaced after they died.");
	evbuffer_add_printf(out, "esockd_worker_restarts_total %llu\n",
	    (unsigned long long)s->st.worker_restarts);
	family(out, "esockd_start_time_seconds", "gauge",
	    "When the master started, in seconds since the Unix epoch.");
	evbuffer_add_printf(out, "esockd_start_time_seconds %lld\n",
	    (long long)s->st.started);
}

static void conn_close(struct mconn *);

/* Queue the whole answer; on_written ends the connection after it. */
static void
reply(struct mconn *c, int code, const char *reason, const char *ctype,
    const char *extra, struct evbuffer *body, int head)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = evbuffer_get_length(body);

	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", code,
	    reason, ctype, len, extra);
	if (!head)
		evbuffer_add_buffer(out, body);
}

/* A short text answer with a status other than 200. */
static void
reply_text(struct mconn *c, int code, const char *reason, const char *extra,
    const char *text, int head)
{
	struct evbuffer *body = evbuffer_new();

	if (body == NULL) {
		conn_close(c);
		return;
	}
	evbuffer_add_printf(body, "%s\n", text);
	reply(c, code, reason, "text/plain; charset=utf-8", extra, body, head);
	evbuffer_free(body);
}

/*
 * Answer one request line ("METHOD SP TARGET SP HTTP/1.x"); the headers
 * after it (read, up to METRICS_REQ_MAX) change nothing here.
 */
static void
answer(struct mconn *c, char *line)
{
	char *method = line, *target, *version, *q;
	struct evbuffer *body;
	struct stats *s;
	int head;

	if ((target = strchr(method, ' ')) == NULL ||
	    (version = strchr(target + 1, ' ')) == NULL ||
	    strchr(version + 1, ' ') != NULL ||
	    strncmp(version + 1, "HTTP/1.", 7) != 0) {
		reply_text(c, 400, "Bad Request", "", "bad request line; "
		    "expected: GET /metrics HTTP/1.1", 0);
		return;
	}
	*target++ = '\0';
	*version = '\0';
	if ((q = strchr(target, '?')) != NULL)
		*q = '\0';	/* a query string changes nothing */
	/* The absolute form (RFC 9112 3.2.2): keep the path only. */
	if (strncmp(target, "http://", 7) == 0 &&
	    (q = strchr(target + 7, '/')) != NULL)
		target = q;
	head = strcmp(method, "HEAD") == 0;
	if (strcmp(target, "/metrics") != 0) {
		reply_text(c, 404, "Not Found", "",
		    "not found; the metrics are at /metrics", head);
		return;
	}
	if (strcmp(method, "GET") != 0 && !head) {
		reply_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
		    "method not allowed; use GET", 0);
		return;
	}
	if ((s = malloc(sizeof(*s))) == NULL ||
	    (body = evbuffer_new()) == NULL) {
		free(s);
		reply_text(c, 503, "Service Unavailable", "",
		    "out of memory; try again", head);
		return;
	}
	stats_collect(c->mt->m, s);
	exposition(s, body);
	free(s);
	/* HEAD: the length the body would have, and no body. */
	reply(c, 200, "OK", METRICS_CONTENT_TYPE, "", body, head);
	evbuffer_free(body);
}

static void on_written(struct bufferevent *, void *);
static void on_conn_event(struct bufferevent *, short, void *);

/* Wait for the end of the headers, then answer the request line. */
static void
on_read(struct bufferevent *bev, void *arg)
{
	struct mconn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;
	size_t n;
	char *line;

	/* Empty lines before the request line are ignored (RFC 9112 2.2). */
	while ((line = (char *)evbuffer_pullup(in, 1)) != NULL &&
	    (*line == '\r' || *line == '\n'))
		evbuffer_drain(in, 1);
	/* The empty line that ends the headers: CRLF or a bare LF. */
	if ((end = evbuffer_search(in, "\n\r\n", 3, NULL)).pos == -1)
		end = evbuffer_search(in, "\n\n", 2, NULL);
	if (end.pos == -1) {
		if (evbuffer_get_length(in) >= METRICS_REQ_MAX) {
			bufferevent_disable(bev, EV_READ);
			bufferevent_setcb(bev, NULL, on_written, on_conn_event,
			    c);
			reply_text(c, 431, "Request Header Fields Too Large",
			    "", "request headers over 4096 bytes", 0);
		}
		return;
	}
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, on_written, on_conn_event, c);
	if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) == NULL) {
		conn_close(c);
		return;
	}
	answer(c, line);
	free(line);
}

/* After the answer: throw away what the client still sends. */
static void
on_drain(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
}

/*
 * The answer is out: send our FIN, and close at the client's (or at the
 * deadline).  Closing at once, with a request's unread rest still in the
 * socket, would send a RST that can destroy the answer in flight.
 */
static void
on_written(struct bufferevent *bev, void *arg)
{
	struct mconn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (shutdown(bufferevent_getfd(bev), SHUT_WR) == -1) {
		conn_close(c);
		return;
	}
	bufferevent_setcb(bev, on_drain, NULL, on_conn_event, c);
	bufferevent_setwatermark(bev, EV_READ, 0, 0);
	on_drain(bev, c);
	if (bufferevent_enable(bev, EV_READ) == -1)
		conn_close(c);
}

static void
on_conn_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;	/* EOF before a whole request, or an error */
	conn_close(arg);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_close(arg);
}

/* Stop accepting for a second (a flood, or accept failing). */
static void
pause_accept(struct metrics *mt, const char *why)
{
	struct timeval tv = { 1, 0 };
	uint64_t suppressed;

	if (log_ratelimit_pass(&mt->rl, &suppressed))
		log_warnx("metrics %s: %s; not accepting for 1 s (%llu more "
		    "since the last report)", mt->addr, why,
		    (unsigned long long)suppressed);
	/* Without the timer nothing would resume: keep accepting then. */
	if (evtimer_add(mt->resume, &tv) == -1) {
		log_errorx("metrics %s: cannot arm the resume timer; not "
		    "pausing", mt->addr);
		return;
	}
	evconnlistener_disable(mt->lev);
}

/* Accept again unless paused for a second or still full. */
static void
maybe_resume(struct metrics *mt)
{
	if (mt->nconns < METRICS_MAX_CONNS &&
	    !evtimer_pending(mt->resume, NULL) &&
	    evconnlistener_enable(mt->lev) == -1)
		log_errorx("metrics %s: cannot accept again", mt->addr);
}

static void
conn_close(struct mconn *c)
{
	struct metrics *mt = c->mt;

	bufferevent_free(c->bev);	/* and, a moment later, the socket */
	event_free(c->deadline);
	TAILQ_REMOVE(&mt->conns, c, entry);
	mt->nconns--;
	free(c);
	maybe_resume(mt);
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct metrics *mt = arg;
	struct timeval life = { METRICS_TIMEOUT_S, 0 };
	struct timespec now;
	struct mconn *c;

	(void)sa;
	(void)salen;
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL ||
	    (c->deadline = evtimer_new(evconnlistener_get_base(lev),
	    on_deadline, c)) == NULL || evtimer_add(c->deadline, &life) == -1) {
		if (c != NULL && c->bev != NULL)
			bufferevent_free(c->bev);
		else if (close(fd) == -1)
			log_warn("metrics %s: close", mt->addr);
		if (c != NULL && c->deadline != NULL)
			event_free(c->deadline);
		free(c);
		pause_accept(mt, "out of memory for a connection");
		return;
	}
	c->mt = mt;
	TAILQ_INSERT_TAIL(&mt->conns, c, entry);
	mt->nconns++;
	bufferevent_setcb(c->bev, on_read, NULL, on_conn_event, c);
	/* Past the limit the headers are refused: read no further. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, METRICS_REQ_MAX);
	if (bufferevent_enable(c->bev, EV_READ) == -1) {
		conn_close(c);
		return;
	}
	if (mt->nconns == METRICS_MAX_CONNS)
		evconnlistener_disable(lev);	/* conn_close resumes */
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec != mt->window) {
		mt->window = now.tv_sec;
		mt->accepts = 0;
	}
	if (++mt->accepts == METRICS_ACCEPTS_PER_S)
		pause_accept(mt, "too many connections in one second");
}

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
	char why[128];

	(void)lev;
	snprintf(why, sizeof(why), "accept: %s", strerror(EVUTIL_SOCKET_ERROR()));
	pause_accept(arg, why);
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	maybe_resume(arg);
}

static const char *
bind_hint(int e)
{
	switch (e) {
	case EADDRINUSE:
		return "another program holds that port; stop it, or set "
		    "'metrics' to another address";
	case EADDRNOTAVAIL:
		return "no local interface has that address; use an address "
		    "of this host";
	case EACCES:
		return "ports below 1024 need CAP_NET_BIND_SERVICE; run as "
		    "root or use a port of 1024 or more";
	}
	return "check the 'metrics' address";
}

/* A listening socket on the metrics address, or -1 (logged). */
static int
bind_metrics(const struct esd_config *conf)
{
	int fd, on = 1, e;

	if ((fd = socket(conf->metrics_addr.ss_family, SOCK_STREAM |
	    SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		log_error("metrics %s: socket", conf->metrics);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1 ||
	    (conf->metrics_addr.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) == -1))
		log_warn("metrics %s: setsockopt", conf->metrics);
	if (bind(fd, (const struct sockaddr *)&conf->metrics_addr,
	    conf->metrics_addrlen) == -1 || listen(fd, METRICS_BACKLOG) == -1) {
		e = errno;
		log_errorx("metrics: cannot listen on %s: %s; %s", conf->metrics,
		    strerror(e), bind_hint(e));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Serve /metrics on the 'metrics' address.  With metrics = "" there is
 * no endpoint and an idle struct is returned.  NULL (logged) means
 * startup must fail.
 */
struct metrics *
metrics_start(struct event_base *base, struct master *m)
{
	const struct esd_config *conf = master_config(m);
	struct metrics *mt;
	int fd;

	if ((mt = calloc(1, sizeof(*mt))) == NULL) {
		log_errorx("metrics: out of memory");
		return NULL;
	}
	mt->m = m;
	TAILQ_INIT(&mt->conns);
	if (conf->metrics[0] == '\0')
		return mt;
	snprintf(mt->addr, sizeof(mt->addr), "%s", conf->metrics);
	if ((mt->resume = evtimer_new(base, on_resume, mt)) == NULL) {
		log_errorx("metrics %s: cannot set up the HTTP server",
		    mt->addr);
		goto err;
	}
	if ((fd = bind_metrics(conf)) == -1)
		goto err;
	/* Backlog 0: bind_metrics has called listen(2) already. */
	if ((mt->lev = evconnlistener_new(base, on_accept, mt,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)) == NULL) {
		log_errorx("metrics %s: cannot serve HTTP on it", mt->addr);
		close(fd);
		goto err;
	}
	evconnlistener_set_error_cb(mt->lev, on_accept_error);
	log_info("metrics at http://%s/metrics", mt->addr);
	return mt;
err:
	metrics_free(mt);
	return NULL;
}

void
metrics_free(struct metrics *mt)
{
	if (mt == NULL)
		return;
	while (!TAILQ_EMPTY(&mt->conns))
		conn_close(TAILQ_FIRST(&mt->conns));
	if (mt->lev != NULL)
		evconnlistener_free(mt->lev);
	if (mt->resume != NULL)
		event_free(mt->resume);
	free(mt);
}
