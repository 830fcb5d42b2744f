/*
 * stats.c: what the control socket and /metrics report, read once.
 *
 * Both read the same snapshot through stats_collect, so "esockdctl stats"
 * and a scrape taken at the same moment show the same numbers: the shared
 * counters, each listening socket's accept queue (listener.c) and the
 * machine's listen-queue counters (netstat.c).  The
 * escapers for the two text formats live here too: they take a string
 * and append to a buffer, with no I/O, so unit tests can feed them.
 */
#include "stats.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

const struct stats_field stats_fields[STATS_NFIELDS] = {
	{ SC_ACCEPTED, "accepted", "ACCEPTED", NULL, NULL },
	{ SC_CLOSED, "closed", "CLOSED", NULL, NULL },
	{ SC_HANDED_OFF, "handed_off", "HANDED_OFF", NULL, NULL },
	{ SC_ADOPTED, "adopted", "ADOPTED", NULL, NULL },
	{ SC_HANDOFF_BAD_RECORDS, "handoff_bad_records", "BAD_RECORDS", NULL,
	  NULL },
	{ SC_REJECTED_LIMIT, "rejected_limit", "REFUSED_LIMIT", "limit", NULL },
	{ SC_REJECTED_GLOBAL_LIMIT, "rejected_global_limit", "REFUSED_GLOBAL",
	  "global_limit", NULL },
	{ SC_REJECTED_RULE, "rejected_rule", "REFUSED_RULE", "rule", NULL },
	{ SC_REJECTED_RATE, "rejected_rate", "REFUSED_RATE", "rate", NULL },
	{ SC_REJECTED_SOURCE, "rejected_source", "REFUSED_SOURCE", "source", NULL },
	{ SC_REJECTED_SOURCE_RATE, "rejected_source_rate", "REFUSED_SOURCE_RATE",
	  "source_rate", NULL },
	{ SC_PROXY_FAIL_BAD_SIGNATURE, "proxy_fail_bad_signature",
	  "BAD_SIGNATURE", "proxy_bad_signature", NULL },
	{ SC_PROXY_FAIL_BAD_VERSION, "proxy_fail_bad_version", "BAD_VERSION",
	  "proxy_bad_version", NULL },
	{ SC_PROXY_FAIL_BAD_FAMILY, "proxy_fail_bad_family", "BAD_FAMILY",
	  "proxy_bad_family", NULL },
	{ SC_PROXY_FAIL_BAD_LENGTH, "proxy_fail_bad_length", "BAD_LENGTH",
	  "proxy_bad_length", NULL },
	{ SC_PROXY_FAIL_BAD_ADDRESS, "proxy_fail_bad_address", "BAD_ADDRESS",
	  "proxy_bad_address", NULL },
	{ SC_PROXY_FAIL_BAD_CHECKSUM, "proxy_fail_bad_checksum",
	  "BAD_CHECKSUM", "proxy_bad_checksum", NULL },
	{ SC_PROXY_FAIL_TIMEOUT, "proxy_fail_timeout", "HEADER_TIMEOUT",
	  "proxy_timeout", NULL },
	{ SC_PROXY_FAIL_UNTRUSTED, "proxy_fail_untrusted", "UNTRUSTED",
	  "proxy_untrusted", NULL },
	{ SC_REJECTED_EMFILE, "rejected_emfile", "REFUSED_EMFILE", "emfile", NULL },
	{ SC_REJECTED_HANDSHAKES, "rejected_handshakes", "REFUSED_HANDSHAKES",
	  "handshakes", NULL },
	{ SC_REJECTED_EARLY_DROP, "rejected_early_drop", "REFUSED_EARLY_DROP",
	  "early_drop", NULL },
	{ SC_BACKEND_FAILURES, "backend_failures", "REFUSED_BACKEND",
	  "backend_unavailable", NULL },
	{ SC_TLS_FAILURES, "tls_failures", "TLS_FAILURES", NULL, NULL },
	{ SC_TLS12_FULL, "tls12_full", "TLS12_FULL", NULL, NULL },
	{ SC_TLS12_RESUMED, "tls12_resumed", "TLS12_RESUMED", NULL, NULL },
	{ SC_TLS13_FULL, "tls13_full", "TLS13_FULL", NULL, NULL },
	{ SC_TLS13_RESUMED, "tls13_resumed", "TLS13_RESUMED", NULL, NULL },
	{ SC_TLS_FAIL_TIMEOUT, "tls_fail_timeout", "TIMEOUT", NULL, NULL },
	{ SC_TLS_FAIL_PLAINTEXT, "tls_fail_plaintext", "PLAINTEXT", NULL, NULL },
	{ SC_TLS_FAIL_VERSION, "tls_fail_version", "VERSION", NULL, NULL },
	{ SC_TLS_FAIL_NO_CIPHER, "tls_fail_no_cipher", "NO_CIPHER", NULL, NULL },
	{ SC_TLS_FAIL_NO_CERT, "tls_fail_no_cert", "NO_CERT", NULL, NULL },
	{ SC_TLS_FAIL_UNKNOWN_CA, "tls_fail_unknown_ca", "UNKNOWN_CA", NULL,
	  NULL },
	{ SC_TLS_FAIL_EXPIRED, "tls_fail_expired", "EXPIRED", NULL, NULL },
	{ SC_TLS_FAIL_REVOKED, "tls_fail_revoked", "REVOKED", NULL, NULL },
	{ SC_TLS_FAIL_BAD_CERT, "tls_fail_bad_cert", "BAD_CERT", NULL, NULL },
	{ SC_TLS_FAIL_UNKNOWN_SNI, "tls_fail_unknown_sni", "UNKNOWN_SNI", NULL,
	  NULL },
	{ SC_TLS_FAIL_NO_ALPN, "tls_fail_no_alpn", "NO_ALPN", NULL, NULL },
	{ SC_TLS_FAIL_OTHER, "tls_fail_other", "OTHER", NULL, NULL },
	{ SC_ACCEPT_ERRORS, "accept_errors", "ACCEPT_ERRORS", NULL, NULL },
	{ SC_BYTES_IN, "bytes_in", "BYTES_IN", NULL, NULL },
	{ SC_BYTES_OUT, "bytes_out", "BYTES_OUT", NULL, NULL },
	{ SC_CLOSED_NORMAL, "closed_normal", "NORMAL", NULL, "normal" },
	{ SC_CLOSED_IDLE_TIMEOUT, "closed_idle_timeout", "IDLE_TIMEOUT", NULL,
	  "idle_timeout" },
	{ SC_CLOSED_HANDSHAKE_TIMEOUT, "closed_handshake_timeout",
	  "HANDSHAKE_TIMEOUT", NULL, "handshake_timeout" },
	{ SC_CLOSED_HANDSHAKE_FAILED, "closed_handshake_failed",
	  "HANDSHAKE_FAILED", NULL, "handshake_failed" },
	{ SC_CLOSED_HANDSHAKE_EVICTED, "closed_handshake_evicted",
	  "HANDSHAKE_EVICTED", NULL, "handshake_evicted" },
	{ SC_CLOSED_BACKEND_UNAVAILABLE, "closed_backend_unavailable",
	  "BACKEND_UNAVAILABLE", NULL, "backend_unavailable" },
	{ SC_CLOSED_CLIENT_RESET, "closed_client_reset", "CLIENT_RESET", NULL,
	  "client_reset" },
	{ SC_CLOSED_BACKEND_RESET, "closed_backend_reset", "BACKEND_RESET",
	  NULL, "backend_reset" },
	{ SC_CLOSED_SHUTDOWN, "closed_shutdown", "SHUTDOWN", NULL, "shutdown" },
	{ SC_CLOSED_LOCAL_ERROR, "closed_local_error", "LOCAL_ERROR", NULL,
	  "local_error" },
	{ SC_CLOSED_PROXY_FAILED, "closed_proxy_failed", "PROXY_FAILED", NULL,
	  "proxy_failed" },
	{ SC_CLOSED_REFUSED, "closed_refused", "REFUSED", NULL, "refused" },
	{ SC_CLOSED_BY_HANDLER, "closed_by_handler", "BY_HANDLER", NULL,
	  "by_handler" },
	{ SC_CLOSED_HANDLER_LOST, "closed_handler_lost", "HANDLER_LOST", NULL,
	  "handler_lost" },
	{ SC_CLOSED_HANDOFF_RELEASED, "closed_handoff_released",
	  "HANDOFF_RELEASED", NULL, "handoff_released" },
	{ SC_CLOSED_WORKER_LOST, "closed_worker_lost", "WORKER_LOST", NULL,
	  "worker_lost" },
};

const char *const stats_backend_failures[BF_COUNT] = {
#define BF_NAME(E, f)	[BF_##E] = #f,
	BACKEND_FAILURES(BF_NAME)
#undef BF_NAME
};

const char *
stats_backend_state(const struct stats_backend *b)
{
	if (b->up)
		return "up";
	return b->handoff ? "down" : "ejected";
}

int
stats_is_tls(const struct stats_field *sf)
{
	return strncmp(sf->key, "tls1", 4) == 0 ||
	    stats_tls_reason(sf) != NULL;
}

int
stats_is_proxy(const struct stats_field *sf)
{
	return strncmp(sf->key, "proxy_fail_", 11) == 0;
}

const char *
stats_tls_reason(const struct stats_field *sf)
{
	return strncmp(sf->key, "tls_fail_", 9) == 0 ? sf->key + 9 : NULL;
}

/* Listener si's backend sockets, as lc names them, into l. */
static void
collect_backends(struct shm_region *shm, int si,
    const struct listener_conf *lc, struct stats_listener *l)
{
	for (size_t i = 0; i < lc->backend.nsockets && i < ESD_MAX_BACKENDS;
	    i++) {
		struct shm_backend *e = &shm->backends[si][i];
		struct stats_backend *b = &l->b[l->nbackends++];

		b->socket = lc->backend.sockets[i];
		/* A hand-off socket is up while some worker's channel to
		 * it is; a relay socket while it is not ejected. */
		b->handoff = lc->backend.mode == BACKEND_HANDOFF;
		b->up = b->handoff ?
		    shm_channels_up(shm, si, i) :
		    atomic_load(&e->ejected_until) == 0;
		b->open = shm_backend_open(shm, si, i);
		b->connects = atomic_load(&e->connects);
		for (int r = 0; r < BF_COUNT; r++)
			b->failures[r] = atomic_load(&e->failures[r]);
		b->ejections = atomic_load(&e->ejections);
		b->returns = atomic_load(&e->returns);
		for (int k = 0; k < BACKEND_CONNECT_NBUCKETS; k++)
			b->connect_bucket[k] = atomic_load(&e->connect_bucket[k]);
		b->connect_us = atomic_load(&e->connect_us);
	}
}

/*
 * The master's status plus every listener's counters, flags and accept
 * queue, the global limit's use, and the machine's listen-queue
 * overflows.
 */
void
stats_collect(const struct listener *const *ls, const int *draining,
    size_t n, struct shm_region *shm, const struct master_status *st,
    struct stats *s)
{
	memset(s, 0, sizeof(*s));
	s->st = *st;
	s->netstat_ok = netstat_listen(&s->netstat) == 0;
	shm_global(shm, &s->global);
	for (size_t i = 0; i < n && i < ESD_MAX_LISTENERS; i++) {
		struct stats_listener *l = &s->l[s->n++];
		int si = ls[i]->si;

		l->lc = ls[i]->conf;
		l->rt = ls[i];
		l->bind = ls[i]->served[0] != '\0' ? ls[i]->served :
		    ls[i]->conf->bind;
		l->draining = draining[i];
		l->si = si;
		l->max_connections = l->lc->max_connections;
		if (listener_queue(ls[i]->fd, &l->queue, &l->queue_max) == -1)
			l->queue = l->queue_max = -1;
		if (si < 0 || si >= ESD_MAX_LISTENERS)
			continue;	/* not in shared memory: nothing counted */
		shm_totals(shm, si, &l->t);
		l->max_connections = atomic_load(
		    &shm->listeners[si].max_connections);
		l->reserved = atomic_load(&shm->listeners[si].reserved);
		l->suspended = atomic_load(&shm->listeners[si].suspended);
		collect_backends(shm, si, l->lc, l);
	}
}

/* Append " key=value" (no space first) to buf; cut short, never overrun. */
static void
kv_add(char *buf, size_t len, size_t *used, const char *key, uint64_t v)
{
	int w;

	if (*used >= len)
		return;
	w = snprintf(buf + *used, len - *used, "%s%s=%llu", *used ? " " : "",
	    key, (unsigned long long)v);
	if (w > 0)
		*used += (size_t)w;
}

/*
 * An operator endpoint's counters as "accepted=3 answered=3 ...", the
 * form of the SIGUSR1 log line and of "esockdctl stats"; "off" when the
 * endpoint is turned off.
 */
void
stats_endpoint_kv(const struct oneshot_counters *n, int on, char *buf,
    size_t len)
{
	size_t used = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (!on) {
		snprintf(buf, len, "off");
		return;
	}
	for (int i = 0; i < ONESHOT_NCOUNTERS; i++)
		kv_add(buf, len, &used, oneshot_counter_names[i], n->n[i]);
}

/* A listener's counters as "accepted=3 closed=1 ...", as stats_fields. */
void
stats_listener_kv(const struct shm_totals *t, char *buf, size_t len)
{
	size_t used = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (size_t f = 0; f < STATS_NFIELDS; f++)
		kv_add(buf, len, &used, stats_fields[f].key,
		    t->n[stats_fields[f].sc]);
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 if invalid. */
static size_t
utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	/* The second byte's range rules out overlongs and surrogates. */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/*
 * Append s as a JSON string, quotes included.  Bytes that are not UTF-8
 * (a path may hold any) become U+FFFD, so the output is always valid JSON.
 */
void
stats_json_string(struct evbuffer *out, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	evbuffer_add(out, "\"", 1);
	while (*s != '\0') {
		size_t n = utf8_len(s);

		if (n == 0) {
			evbuffer_add(out, "\\ufffd", 6);
			s++;
			continue;
		}
		if (n > 1) {
			evbuffer_add(out, s, n);
			s += n;
			continue;
		}
		switch (*s) {
		case '"':	evbuffer_add(out, "\\\"", 2); break;
		case '\\':	evbuffer_add(out, "\\\\", 2); break;
		case '\n':	evbuffer_add(out, "\\n", 2); break;
		case '\r':	evbuffer_add(out, "\\r", 2); break;
		case '\t':	evbuffer_add(out, "\\t", 2); break;
		default:
			if (*s < 0x20)
				evbuffer_add_printf(out, "\\u%04x", *s);
			else
				evbuffer_add(out, s, 1);
		}
		s++;
	}
	evbuffer_add(out, "\"", 1);
}

/* Append s as a Prometheus label value, quotes included (format 0.0.4). */
void
stats_prom_label(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			evbuffer_add(out, "\\\\", 2);
		else if (*s == '"')
			evbuffer_add(out, "\\\"", 2);
		else if (*s == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "\"", 1);
}
