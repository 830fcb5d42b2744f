/*
 * metrics.c: Prometheus text exposition (format 0.0.4) at GET /metrics,
 * served on the master's loop, one request per connection (the answer
 * says Connection: close).
 *
 * The numbers come from stats_collect, the same read the control socket
 * uses.  The connections and their limits are oneshot.c's, as for the
 * control socket: at most METRICS_MAX_CONNS open, METRICS_TIMEOUT_S to
 * send the request (408 past that) and as long to take the answer,
 * METRICS_REQ_MAX bytes of request (431 past that), and a pause of one
 * second after METRICS_ACCEPTS_PER_S connections in one second, since
 * this is a TCP port where the control socket is a 0600 file.  The
 * endpoint is not authenticated: bind it to loopback or a management
 * address.
 */
#include "metrics.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "listener.h"
#include "log.h"
#include "master.h"
#include "oneshot.h"
#include "stats.h"

#define METRICS_TIMEOUT_S	5	/* to send the request; to take the answer */
#define METRICS_MAX_CONNS	16	/* open at once */
#define METRICS_ACCEPTS_PER_S	50
#define METRICS_BACKLOG		64
#define METRICS_REQ_MAX		4096	/* request line and headers */
#define METRICS_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

struct metrics {
	struct master		*m;
	struct oneshot		*os;
	struct oneshot_cfg	 cfg;
	char			 name[96];	/* "metrics ADDR", for the log */
};

/* The per-listener families, in the order they are written. */
enum lfam {
	F_CONNS, F_MAX, F_RESERVED, F_SUSPENDED, F_DRAINING, F_QUEUE,
	F_QUEUE_MAX,
	F_ACCEPTED, F_CLOSED,
	F_HANDED_OFF, F_ADOPTED, F_BAD_RECORDS,
	F_REFUSED,
	F_ACCEPT_ERRORS, F_TLS_FAILURES, F_TLS_HANDSHAKES, F_TLS_BY_REASON,
	F_TLS_SECONDS, F_RECEIVED, F_SENT, F_COUNT
};

/* A family shows a gauge, one counter, every refusal or every close
 * reason (each by its reason label), the TLS handshakes (by version and
 * resumed), their failures (by reason), or their durations. */
enum fkind { K_GAUGE, K_COUNTER, K_REFUSED, K_CLOSED, K_TLS_DONE,
	K_TLS_FAILED, K_TLS_SECONDS };

static const struct family {
	const char		*name, *type, *help;
	enum fkind		 kind;
	enum shm_counter	 sc;	/* K_COUNTER's */
} lfams[F_COUNT] = {
	{ "esockd_connections", "gauge", "Client connections open now.",
	  K_GAUGE, 0 },
	{ "esockd_max_connections", "gauge",
	  "The connection limit in effect (max_connections, or as last set "
	  "by esockdctl).", K_GAUGE, 0 },
	{ "esockd_reserved_connections", "gauge",
	  "reserved_connections: connections of the top-level "
	  "max_connections that only this listener may take.", K_GAUGE, 0 },
	{ "esockd_listener_suspended", "gauge",
	  "1 while the listener is suspended by esockdctl, else 0.",
	  K_GAUGE, 0 },
	{ "esockd_listener_draining", "gauge",
	  "1 while the listener, dropped by a reload, still drains its "
	  "connections in the old workers, else 0.", K_GAUGE, 0 },
	{ "esockd_listener_accept_queue", "gauge",
	  "Connections the kernel has completed that no worker has accepted "
	  "yet (TCP_INFO of the listening socket).", K_GAUGE, 0 },
	{ "esockd_listener_accept_queue_max", "gauge",
	  "The most the accept queue holds: the backlog in effect, capped by "
	  "net.core.somaxconn.", K_GAUGE, 0 },
	{ "esockd_connections_accepted_total", "counter",
	  "Connections admitted under max_connections.", K_COUNTER,
	  SC_ACCEPTED },
	{ "esockd_connections_closed_total", "counter",
	  "Admitted connections that have ended, by why: both sides ended "
	  "(normal), idle_timeout, handshake_timeout, handshake_failed, "
	  "pushed out after over a second in the handshake phase for a new "
	  "client (handshake_evicted), backend_unavailable, an error or "
	  "reset on the client's side "
	  "(client_reset) or the backend's (backend_reset), shutdown_timeout "
	  "(shutdown), local_error, its PROXY header refused (proxy_failed), "
	  "refused by the address its PROXY header named (refused), or "
	  "closed with a worker that died (worker_lost); with mode = "
	  "\"handoff\": the handler said it closed it (by_handler), its "
	  "channel to the handler ended (handler_lost), its worker stopped "
	  "and the handler keeps it (handoff_released).", K_CLOSED, 0 },
	{ "esockd_connections_handed_off_total", "counter",
	  "Connections passed to a handler (backend mode = \"handoff\"); "
	  "they stay open until the handler says it closed them.", K_COUNTER,
	  SC_HANDED_OFF },
	{ "esockd_connections_adopted_total", "counter",
	  "Handed-off connections a handler announced it still holds on a new "
	  "channel (after a worker stopped or esockd restarted), counted open "
	  "again: accepted + adopted - closed = connections.", K_COUNTER,
	  SC_ADOPTED },
	{ "esockd_handoff_bad_records_total", "counter",
	  "Records from a hand-off handler refused: not the hello, unknown, "
	  "over-long, or naming a connection esockd does not know.",
	  K_COUNTER, SC_HANDOFF_BAD_RECORDS },
	{ "esockd_connections_refused_total", "counter",
	  "Connections closed without being relayed: over max_connections "
	  "(limit), over the top-level max_connections (global_limit), "
	  "refused by allow/deny (rule), over rate_limit (rate), "
	  "over max_connections_per_source (source), over "
	  "rate_limit_per_source (source_rate), a client's PROXY header "
	  "refused (proxy_bad_signature, proxy_bad_version, "
	  "proxy_bad_family, proxy_bad_length, proxy_bad_address, "
	  "proxy_bad_checksum, proxy_timeout, proxy_untrusted), closed at "
	  "once for want of descriptors (emfile), over max_handshakes "
	  "(handshakes), dropped by handshake_early_drop (early_drop) or no "
	  "backend socket reachable (backend_unavailable).", K_REFUSED, 0 },
	{ "esockd_accept_errors_total", "counter",
	  "accept(2) failures, and accepts put off for want of descriptors.",
	  K_COUNTER, SC_ACCEPT_ERRORS },
	{ "esockd_tls_handshake_failures_total", "counter",
	  "TLS handshakes that failed or did not finish within "
	  "tls_handshake_timeout (the client was closed).", K_COUNTER,
	  SC_TLS_FAILURES },
	{ "esockd_tls_handshakes_total", "counter",
	  "TLS handshakes done, by protocol version (1.2, 1.3) and whether "
	  "the session was resumed.", K_TLS_DONE, 0 },
	{ "esockd_tls_handshake_failures_by_reason_total", "counter",
	  "TLS handshakes that failed, by why: timeout, plaintext (not TLS), "
	  "version, no_cipher (nor group), no_cert, unknown_ca, expired, "
	  "revoked, bad_cert, unknown_sni, no_alpn, other; their sum is "
	  "esockd_tls_handshake_failures_total.", K_TLS_FAILED, 0 },
	{ "esockd_tls_handshake_seconds", "histogram",
	  "Time from the accept to a TLS handshake done.", K_TLS_SECONDS, 0 },
	{ "esockd_received_bytes_total", "counter", "Bytes read from clients.",
	  K_COUNTER, SC_BYTES_IN },
	{ "esockd_sent_bytes_total", "counter", "Bytes written to clients.",
	  K_COUNTER, SC_BYTES_OUT },
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

/* The control socket's and this endpoint's own counters. */
static void
endpoint_events(const struct stats *s, struct evbuffer *out)
{
	const struct {
		const char			*name;
		const struct oneshot_counters	*n;
		int				 on;
	} ep[] = { { "control", &s->st.control, s->st.control_on },
	    { "metrics", &s->st.metrics, s->st.metrics_on } };

	family(out, "esockd_endpoint_events_total", "counter",
	    "Operator endpoint connections (endpoint: control or metrics) "
	    "by event: accepted, answered, late_request, late_answer, "
	    "dropped, pushed_out_answered, pushed_out_idle, refused, "
	    "accept_pauses, errors.");
	for (size_t e = 0; e < sizeof(ep) / sizeof(ep[0]); e++) {
		if (!ep[e].on)
			continue;
		for (int i = 0; i < ONESHOT_NCOUNTERS; i++)
			evbuffer_add_printf(out, "esockd_endpoint_events_total"
			    "{endpoint=\"%s\",event=\"%s\"} %llu\n",
			    ep[e].name, oneshot_counter_names[i],
			    (unsigned long long)ep[e].n->n[i]);
	}
}

/* The TLS handshake counters: version and resumed labels. */
static const struct {
	enum shm_counter	 sc;
	const char		*version, *resumed;
} tls_done[] = {
	{ SC_TLS12_FULL, "1.2", "false" }, { SC_TLS12_RESUMED, "1.2", "true" },
	{ SC_TLS13_FULL, "1.3", "false" }, { SC_TLS13_RESUMED, "1.3", "true" },
};

static void
tls_done_samples(struct evbuffer *out, const struct stats_listener *l)
{
	for (size_t i = 0; i < sizeof(tls_done) / sizeof(tls_done[0]); i++) {
		evbuffer_add_printf(out, "%s{listener=",
		    lfams[F_TLS_HANDSHAKES].name);
		stats_prom_label(out, l->lc->name);
		evbuffer_add_printf(out, ",version=\"%s\",resumed=\"%s\"} "
		    "%llu\n", tls_done[i].version, tls_done[i].resumed,
		    (unsigned long long)l->t.n[tls_done[i].sc]);
	}
}

/*
 * The end of histogram bucket k of n, after its labels: its bound in
 * seconds (the last is +Inf) and the cumulative count.
 */
static void
bucket_end(struct evbuffer *out, const uint64_t *le_us, int n, int k,
    uint64_t sum)
{
	if (k < n - 1)
		evbuffer_add_printf(out, ",le=\"%g\"} %llu\n",
		    (double)le_us[k] / 1e6, (unsigned long long)sum);
	else
		evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n",
		    (unsigned long long)sum);
}

/* The duration histogram: cumulative buckets, +Inf, sum and count. */
static void
tls_seconds_samples(struct evbuffer *out, const struct stats_listener *l)
{
	static const uint64_t le_us[] = TLS_HS_BUCKETS_US;
	const char *fam = lfams[F_TLS_SECONDS].name;
	uint64_t sum = 0;

	_Static_assert(sizeof(le_us) / sizeof(le_us[0]) == TLS_HS_NBUCKETS - 1,
	    "one bound per bucket but +Inf");
	for (int b = 0; b < TLS_HS_NBUCKETS; b++) {
		sum += l->t.tls_hs_bucket[b];
		evbuffer_add_printf(out, "%s_bucket{listener=", fam);
		stats_prom_label(out, l->lc->name);
		bucket_end(out, le_us, TLS_HS_NBUCKETS, b, sum);
	}
	evbuffer_add_printf(out, "%s_sum{listener=", fam);
	stats_prom_label(out, l->lc->name);
	evbuffer_add_printf(out, "} %.6f\n%s_count{listener=",
	    (double)l->t.tls_hs_us / 1e6, fam);
	stats_prom_label(out, l->lc->name);
	evbuffer_add_printf(out, "} %llu\n", (unsigned long long)sum);
}

/* The reason label of sf in a by-reason family of this kind, or NULL. */
static const char *
reason_label(enum fkind kind, const struct stats_field *sf)
{
	switch (kind) {
	case K_REFUSED:
		return sf->refused;
	case K_CLOSED:
		return sf->closed;
	case K_TLS_FAILED:
		return stats_tls_reason(sf);
	default:
		return NULL;
	}
}

/* A per-listener gauge's value; -1 when it is not known. */
static long long
gauge_value(enum lfam f, const struct stats_listener *l)
{
	switch (f) {
	case F_CONNS:
		return (long long)l->t.cur;
	case F_MAX:
		return l->max_connections;
	case F_RESERVED:
		return l->reserved;
	case F_DRAINING:
		return l->draining;
	case F_QUEUE:
		return l->queue;
	case F_QUEUE_MAX:
		return l->queue_max;
	default:
		return l->suspended;
	}
}

/* One listener's samples of family f. */
static void
listener_samples(struct evbuffer *out, enum lfam f,
    const struct stats_listener *l)
{
	const char *n = l->lc->name;

	switch (lfams[f].kind) {
	case K_COUNTER:
		counter(out, f, n, NULL, l->t.n[lfams[f].sc]);
		return;
	case K_REFUSED:
	case K_CLOSED:
	case K_TLS_FAILED:
		for (size_t i = 0; i < STATS_NFIELDS; i++) {
			const char *reason = reason_label(lfams[f].kind,
			    &stats_fields[i]);
			if (reason != NULL)
				counter(out, f, n, reason,
				    l->t.n[stats_fields[i].sc]);
		}
		return;
	case K_TLS_DONE:
		tls_done_samples(out, l);
		return;
	case K_TLS_SECONDS:
		tls_seconds_samples(out, l);
		return;
	case K_GAUGE:
		/* A queue not known (a draining listener's): no sample. */
		if (gauge_value(f, l) >= 0)
			gauge(out, f, n, gauge_value(f, l));
		return;
	}
}

/* The per backend socket families, labelled listener and socket. */
enum bfam { B_UP, B_OPEN, B_CONNECTS, B_FAILURES, B_EJECTIONS, B_RETURNS,
	B_SECONDS, B_COUNT };

static const struct {
	const char	*name, *type, *help;
} bfams[B_COUNT] = {
	{ "esockd_backend_up", "gauge", "1 while the backend socket is up, "
	  "0 while it is ejected after backend_fail_threshold failed "
	  "connects in a row, or, for mode = \"handoff\", while no worker "
	  "has a channel to it." },
	{ "esockd_backend_connections", "gauge", "Connections on the backend "
	  "socket, across all workers, from the start of the connect to the "
	  "close." },
	{ "esockd_backend_connects_total", "counter",
	  "Connects to the backend socket that succeeded." },
	{ "esockd_backend_connect_failures_total", "counter",
	  "Connects to the backend socket that failed, by why: refused, "
	  "missing (no such path), timeout (connect_timeout)." },
	{ "esockd_backend_ejections_total", "counter",
	  "Times the backend socket was ejected." },
	{ "esockd_backend_returns_total", "counter",
	  "Times an ejected backend socket came back (a connect succeeded)." },
	{ "esockd_backend_connect_seconds", "histogram",
	  "Time a successful connect to the backend socket took." },
};

/* "name{listener="...",socket="..."" with the brace left open. */
static void
backend_labels(struct evbuffer *out, const char *name, const char *suffix,
    const struct stats_listener *l, const struct stats_backend *b)
{
	evbuffer_add_printf(out, "%s%s{listener=", name, suffix);
	stats_prom_label(out, l->lc->name);
	evbuffer_add(out, ",socket=", 8);
	stats_prom_label(out, b->socket);
}

/* The connect latency histogram: cumulative buckets, sum and count. */
static void
backend_seconds(struct evbuffer *out, const struct stats_listener *l,
    const struct stats_backend *b)
{
	static const uint64_t le_us[] = BACKEND_CONNECT_BUCKETS_US;
	const char *fam = bfams[B_SECONDS].name;
	uint64_t sum = 0;

	for (int k = 0; k < BACKEND_CONNECT_NBUCKETS; k++) {
		sum += b->connect_bucket[k];
		backend_labels(out, fam, "_bucket", l, b);
		bucket_end(out, le_us, BACKEND_CONNECT_NBUCKETS, k, sum);
	}
	backend_labels(out, fam, "_sum", l, b);
	evbuffer_add_printf(out, "} %.6f\n", (double)b->connect_us / 1e6);
	backend_labels(out, fam, "_count", l, b);
	evbuffer_add_printf(out, "} %llu\n", (unsigned long long)sum);
}

/* One backend socket's samples of family f. */
static void
backend_samples(struct evbuffer *out, enum bfam f,
    const struct stats_listener *l, const struct stats_backend *b)
{
	const char *fam = bfams[f].name;
	uint64_t v;

	switch (f) {
	case B_SECONDS:
		backend_seconds(out, l, b);
		return;
	case B_FAILURES:
		for (int r = 0; r < BF_COUNT; r++) {
			backend_labels(out, fam, "", l, b);
			evbuffer_add_printf(out, ",reason=\"%s\"} %llu\n",
			    stats_backend_failures[r],
			    (unsigned long long)b->failures[r]);
		}
		return;
	case B_UP:
		v = (uint64_t)b->up;
		break;
	case B_OPEN:
		v = b->open < 0 ? 0 : (uint64_t)b->open;
		break;
	case B_CONNECTS:
		v = b->connects;
		break;
	case B_EJECTIONS:
		v = b->ejections;
		break;
	default:
		v = b->returns;
		break;
	}
	backend_labels(out, fam, "", l, b);
	evbuffer_add_printf(out, "} %llu\n", (unsigned long long)v);
}

/* Every listener's backend sockets, family by family. */
static void
backends(const struct stats *s, struct evbuffer *out)
{
	for (int f = 0; f < B_COUNT; f++) {
		family(out, bfams[f].name, bfams[f].type, bfams[f].help);
		for (size_t i = 0; i < s->n; i++)
			for (size_t k = 0; k < s->l[i].nbackends; k++)
				backend_samples(out, (enum bfam)f, &s->l[i],
				    &s->l[i].b[k]);
	}
}

/* One certificate's notAfter, labelled by its listener and name. */
static void
not_after(struct evbuffer *out, const char *listener, const char *name,
    time_t t)
{
	evbuffer_add_printf(out, "esockd_tls_certificate_not_after_seconds"
	    "{listener=");
	stats_prom_label(out, listener);
	evbuffer_add(out, ",name=", 6);
	stats_prom_label(out, name);
	evbuffer_add_printf(out, "} %lld\n", (long long)t);
}

/*
 * When each certificate of the current listeners expires: the default
 * (tls_certificate) as name "default", a tls_sni entry's by its first
 * name.  The master made the contexts and keeps the dates with them.
 */
static void
cert_expiry(const struct stats *s, struct evbuffer *out)
{
	family(out, "esockd_tls_certificate_not_after_seconds", "gauge",
	    "When a listener's certificate expires (notAfter), in seconds "
	    "since the Unix epoch; name: \"default\" for tls_certificate, "
	    "else the first name of its tls_sni entry.");
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];

		if (l->draining || l->rt == NULL || l->rt->tls_ctx == NULL)
			continue;
		not_after(out, l->lc->name, "default", l->rt->tls_not_after);
		for (size_t j = 0; j < l->rt->nsni && j < l->lc->tls_sni.n; j++)
			not_after(out, l->lc->name,
			    l->lc->tls_sni.v[j].names[0],
			    l->rt->sni[j].not_after);
	}
}

/* One daemon-wide gauge, its HELP and its sample. */
static void
global_gauge(struct evbuffer *out, const char *name, const char *help,
    long long v)
{
	family(out, name, "gauge", help);
	evbuffer_add_printf(out, "%s %lld\n", name, v);
}

/* The top-level max_connections and what it is checked against. */
static void
global_limit(const struct stats *s, struct evbuffer *out)
{
	global_gauge(out, "esockd_global_max_connections", "The top-level "
	    "max_connections, over every listener; 0 when there is none.",
	    s->global.max_connections);
	global_gauge(out, "esockd_global_connections", "Client connections "
	    "open now, every listener's.", (long long)s->global.connections);
	global_gauge(out, "esockd_global_reserved_connections", "The sum of "
	    "the listeners' reserved_connections.",
	    (long long)s->global.reserved);
	global_gauge(out, "esockd_global_committed_connections", "Each "
	    "listener's open connections or its reservation, whichever is "
	    "more, summed: what the top-level max_connections is checked "
	    "against.", (long long)s->global.committed);
}

/* The machine's listen-queue counters, when /proc/net/netstat has them. */
static void
listen_queues(const struct stats *s, struct evbuffer *out)
{
	family(out, "esockd_listen_overflows_total", "counter",
	    "Handshakes the kernel dropped because a listener's accept queue "
	    "was full (ListenOverflows in /proc/net/netstat): the machine's, "
	    "every program's listeners, since boot.");
	if (s->netstat_ok)
		evbuffer_add_printf(out, "esockd_listen_overflows_total %llu\n",
		    (unsigned long long)s->netstat.overflows);
	family(out, "esockd_listen_drops_total", "counter",
	    "Connections dropped at a listener for any reason, overflows "
	    "included (ListenDrops in /proc/net/netstat): the machine's, "
	    "since boot.");
	if (s->netstat_ok)
		evbuffer_add_printf(out, "esockd_listen_drops_total %llu\n",
		    (unsigned long long)s->netstat.drops);
}

static void
exposition(const struct stats *s, struct evbuffer *out)
{
	for (int f = 0; f < F_COUNT; f++) {
		family(out, lfams[f].name, lfams[f].type, lfams[f].help);
		for (size_t i = 0; i < s->n; i++)
			listener_samples(out, (enum lfam)f, &s->l[i]);
	}
	backends(s, out);
	cert_expiry(s, out);
	endpoint_events(s, out);
	global_limit(s, out);
	listen_queues(s, out);
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

/* The status line and headers; the caller adds the body (none for HEAD). */
static void
head_of(struct evbuffer *out, int code, const char *reason, const char *ctype,
    const char *extra, size_t len)
{
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", code,
	    reason, ctype, len, extra);
}

/* A short text answer with a status other than 200. */
static void
reply_text(struct evbuffer *out, int code, const char *reason,
    const char *extra, const char *text, int head)
{
	head_of(out, code, reason, "text/plain; charset=utf-8", extra,
	    strlen(text) + 1);
	if (!head)
		evbuffer_add_printf(out, "%s\n", text);
}

/*
 * Answer one request line ("METHOD SP TARGET SP HTTP/1.x"); the headers
 * after it (read, up to METRICS_REQ_MAX) change nothing here.
 */
static void
answer(struct metrics *mt, char *line, struct evbuffer *out)
{
	char *method = line, *target, *version, *q;
	struct evbuffer *body;
	struct stats *s;
	int head;

	if ((target = strchr(method, ' ')) == NULL ||
	    (version = strchr(target + 1, ' ')) == NULL ||
	    strchr(version + 1, ' ') != NULL ||
	    strncmp(version + 1, "HTTP/1.", 7) != 0) {
		reply_text(out, 400, "Bad Request", "", "bad request line; "
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
		reply_text(out, 404, "Not Found", "",
		    "not found; the metrics are at /metrics", head);
		return;
	}
	if (strcmp(method, "GET") != 0 && !head) {
		reply_text(out, 405, "Method Not Allowed",
		    "Allow: GET, HEAD\r\n", "method not allowed; use GET", 0);
		return;
	}
	if ((s = malloc(sizeof(*s))) == NULL ||
	    (body = evbuffer_new()) == NULL) {
		free(s);
		reply_text(out, 503, "Service Unavailable", "",
		    "out of memory; try again", head);
		return;
	}
	master_stats(mt->m, s);
	exposition(s, body);
	free(s);
	/* HEAD: the length the body would have, and no body. */
	head_of(out, 200, "OK", METRICS_CONTENT_TYPE, "",
	    evbuffer_get_length(body));
	if (!head)
		evbuffer_add_buffer(out, body);
	evbuffer_free(body);
}

/* The request ends at an empty line: wait for it, then answer. */
static int
on_request(struct oneshot_conn *oc, struct evbuffer *in, int eof,
    struct evbuffer *out, void *arg)
{
	struct evbuffer_ptr end;
	char *line, text[64];
	size_t n;

	(void)oc;
	/* Empty lines before the request line are ignored (RFC 9112 2.2). */
	while ((line = (char *)evbuffer_pullup(in, 1)) != NULL &&
	    (*line == '\r' || *line == '\n'))
		evbuffer_drain(in, 1);
	/* The empty line that ends the headers: CRLF or a bare LF. */
	if ((end = evbuffer_search(in, "\n\r\n", 3, NULL)).pos == -1)
		end = evbuffer_search(in, "\n\n", 2, NULL);
	if (end.pos == -1) {
		if (evbuffer_get_length(in) <= METRICS_REQ_MAX)
			return eof ? -1 : 0;
		snprintf(text, sizeof(text), "request headers over %d bytes",
		    METRICS_REQ_MAX);
		reply_text(out, 431, "Request Header Fields Too Large", "", text,
		    0);
		return 1;
	}
	if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) == NULL)
		return -1;
	answer(arg, line, out);
	free(line);
	return 1;
}

static void
on_late(struct evbuffer *out, void *arg)
{
	char text[64];

	(void)arg;
	snprintf(text, sizeof(text), "no whole request within %d s",
	    METRICS_TIMEOUT_S);
	reply_text(out, 408, "Request Timeout", "", text, 0);
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
	const struct listen_addr la = { .addr = &conf->metrics_addr,
	    .addrlen = conf->metrics_addrlen, .text = conf->metrics,
	    .who = "metrics", .key = "metrics",
	    .cannot_bind = "cannot listen on", .backlog = METRICS_BACKLOG };
	struct metrics *mt;
	int fd;

	if ((mt = calloc(1, sizeof(*mt))) == NULL) {
		log_errorx("metrics: out of memory");
		return NULL;
	}
	mt->m = m;
	if (conf->metrics[0] == '\0')
		return mt;
	snprintf(mt->name, sizeof(mt->name), "metrics %s", conf->metrics);
	mt->cfg = (struct oneshot_cfg){ .name = mt->name,
	    .max_conns = METRICS_MAX_CONNS, .timeout_s = METRICS_TIMEOUT_S,
	    .read_max = METRICS_REQ_MAX + 1,	/* one more: the 431 */
	    .accepts_per_s = METRICS_ACCEPTS_PER_S, .request = on_request,
	    .late = on_late, .arg = mt };
	if ((fd = listener_open(&la)) == -1 ||
	    (mt->os = oneshot_start(base, fd, &mt->cfg)) == NULL)
		goto err;
	log_info("metrics at http://%s/metrics", conf->metrics);
	return mt;
err:
	metrics_free(mt);
	return NULL;
}

const struct oneshot_counters *
metrics_counters(const struct metrics *mt)
{
	return mt != NULL && mt->os != NULL ? oneshot_counters(mt->os) : NULL;
}

void
metrics_free(struct metrics *mt)
{
	if (mt == NULL)
		return;
	oneshot_free(mt->os);
	free(mt);
}
