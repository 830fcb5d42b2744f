/*
 * metrics.c: Prometheus text exposition (format 0.0.4) at GET /metrics,
 * served by libevent's evhttp on the master's loop.
 *
 * The numbers come from stats_collect, the same read the control socket
 * uses.  Like the control socket this is operator traffic: requests are
 * small and answered at once, a connection idle for METRICS_TIMEOUT_S is
 * closed, and accepting pauses for a second after METRICS_ACCEPTS_PER_S
 * connections in one second.  evhttp in libevent 2.1 has no cap on open
 * connections and its timeout is an idle timer, so a client trickling a
 * request's headers can hold a connection (and a master descriptor) for
 * long; the rate cap slows a pile-up but does not bound it.  That is one
 * reason the endpoint must be bound to loopback or a management address;
 * it is not authenticated either.
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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "log.h"
#include "master.h"
#include "stats.h"

#define METRICS_TIMEOUT_S	5
#define METRICS_ACCEPTS_PER_S	50
#define METRICS_BACKLOG		64
#define METRICS_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

struct metrics {
	struct master		*m;
	struct evhttp		*http;
	struct evconnlistener	*lev;		/* evhttp's, to pause it */
	struct event		*resume;
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

/* A short text reply with a status other than 200. */
static void
reply_text(struct evhttp_request *req, int code, const char *reason,
    const char *text)
{
	struct evbuffer *body = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; charset=utf-8");
	if (body != NULL)
		evbuffer_add_printf(body, "%s\n", text);
	evhttp_send_reply(req, code, reason, body);
	if (body != NULL)
		evbuffer_free(body);
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	struct metrics *mt = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *body;
	struct stats *s;
	char len[32];

	if (path == NULL || strcmp(path, "/metrics") != 0) {
		reply_text(req, HTTP_NOTFOUND, "Not Found",
		    "not found; the metrics are at /metrics");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(h, "Allow", "GET, HEAD");
		reply_text(req, 405, "Method Not Allowed",
		    "method not allowed; use GET");
		return;
	}
	if ((s = malloc(sizeof(*s))) == NULL ||
	    (body = evbuffer_new()) == NULL) {
		free(s);
		reply_text(req, HTTP_SERVUNAVAIL, "Service Unavailable",
		    "out of memory; try again");
		return;
	}
	stats_collect(mt->m, s);
	exposition(s, body);
	free(s);
	evhttp_add_header(h, "Content-Type", METRICS_CONTENT_TYPE);
	if (cmd == EVHTTP_REQ_HEAD) {
		/* evhttp sends no body for HEAD, nor its length: say it. */
		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
		evhttp_add_header(h, "Content-Length", len);
		evhttp_send_reply(req, HTTP_OK, "OK", NULL);
	} else {
		evhttp_send_reply(req, HTTP_OK, "OK", body);
	}
	evbuffer_free(body);
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
	evconnlistener_disable(mt->lev);
	if (evtimer_add(mt->resume, &tv) == -1)
		log_errorx("metrics %s: cannot arm the resume timer", mt->addr);
}

/* evhttp asks for a bufferevent per accepted connection: count them. */
static struct bufferevent *
on_connection(struct event_base *base, void *arg)
{
	struct metrics *mt = arg;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec != mt->window) {
		mt->window = now.tv_sec;
		mt->accepts = 0;
	}
	if (++mt->accepts == METRICS_ACCEPTS_PER_S)
		pause_accept(mt, "too many connections in one second");
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
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
	struct metrics *mt = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(mt->lev);
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
	struct evhttp_bound_socket *bound;
	struct metrics *mt;
	int fd;

	if ((mt = calloc(1, sizeof(*mt))) == NULL) {
		log_errorx("metrics: out of memory");
		return NULL;
	}
	mt->m = m;
	if (conf->metrics[0] == '\0')
		return mt;
	snprintf(mt->addr, sizeof(mt->addr), "%s", conf->metrics);
	if ((mt->http = evhttp_new(base)) == NULL ||
	    (mt->resume = evtimer_new(base, on_resume, mt)) == NULL) {
		log_errorx("metrics %s: cannot set up the HTTP server",
		    mt->addr);
		goto err;
	}
	evhttp_set_timeout(mt->http, METRICS_TIMEOUT_S);
	evhttp_set_max_headers_size(mt->http, 4096);
	evhttp_set_max_body_size(mt->http, 4096);
	/* Every method reaches on_request, which answers 405 itself. */
	evhttp_set_allowed_methods(mt->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	evhttp_set_gencb(mt->http, on_request, mt);
	evhttp_set_bevcb(mt->http, on_connection, mt);
	if ((fd = bind_metrics(conf)) == -1)
		goto err;
	if ((bound = evhttp_accept_socket_with_handle(mt->http, fd)) == NULL) {
		log_errorx("metrics %s: cannot serve HTTP on it", mt->addr);
		goto err;
	}
	mt->lev = evhttp_bound_socket_get_listener(bound);
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
	if (mt->http != NULL)
		evhttp_free(mt->http);
	if (mt->resume != NULL)
		event_free(mt->resume);
	free(mt);
}
