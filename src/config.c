/*
 * config.c: esockd.conf, from libconfig text to a validated struct.
 *
 * Owns the key table (config_keys), which the parser, "esockd -t", the man
 * page check and the demo config test all read, so they cannot drift.
 * Parsing never stops at the first problem: every error in the file is
 * collected as "FILE:LINE: what is wrong; what would be right".  No I/O
 * beyond reading the named file, so unit tests can feed it strings.
 */
#include "config.h"

#include <arpa/inet.h>
#include <libconfig.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"
#include "log.h"
#include "proxy_in.h"

/* A field's place and size: rows never repeat a size as a literal. */
#define FIELD(T, f)	.offset = offsetof(T, f), .size = sizeof(((T *)0)->f)
#define G(f)		FIELD(struct esd_config, f)
#define L(f)		FIELD(struct listener_conf, f)
#define B(f)		FIELD(struct backend_conf, f)
/* Fields first to last (contiguous), as a key's derived state. */
#define DERIVED(T, first, last)						\
	.derived_offset = offsetof(T, first),				\
	.derived_size = offsetof(T, last) + sizeof(((T *)0)->last) -	\
	    offsetof(T, first)

/* Row shapes.  Every key may change at reload unless RESTART_ONLY. */
#define INT_KEY(sc, nm, fld, d, lo, hi, un, dc)				\
	{ .name = nm, .scope = sc, .type = KT_INT, fld, .def = d,	\
	  .min = lo, .max = hi, .reloadable = 1, .unit = un, .doc = dc }
#define BOOL_KEY(sc, nm, fld, d, dc)					\
	{ .name = nm, .scope = sc, .type = KT_BOOL, fld, .def = d,	\
	  .min = 0, .max = 1, .reloadable = 1, .doc = dc }
#define STR_KEY(sc, nm, ty, fld, sd, rl, dc)				\
	{ .name = nm, .scope = sc, .type = ty, fld, .sdef = sd,		\
	  .reloadable = rl, .doc = dc }
#define CIDR_KEY(nm, fld, dc)						\
	{ .name = nm, .scope = SCOPE_LISTENER, .type = KT_CIDRS, fld,	\
	  .reloadable = 1, .doc = dc }
/* A key of its own form: parsed by fn, shown in -K as fm. */
#define HOOK_KEY(sc, nm, fld, fn, fm, dc, ...)				\
	{ .name = nm, .scope = sc, .type = KT_HOOK, fld, .parse = fn,	\
	  .form = fm, .doc = dc, __VA_ARGS__ }
#define SUB_KEY(sc, nm, ty, fld, dc)					\
	{ .name = nm, .scope = sc, .type = ty, fld, .required = 1,	\
	  .reloadable = 1, .doc = dc }
#define RESTART_ONLY	0
#define RELOADABLE	1

static config_hook parse_int_or_auto, parse_level, parse_metrics,
    parse_name, parse_bind, parse_tlsver, parse_sockets, parse_sni,
    parse_alpn, parse_text, parse_choice, parse_early_drop;
static config_show show_auto, show_level, show_tlsver, show_choice;
static const config_setting_t *member_or(const config_setting_t *,
    const char *);

static const struct config_key keys[] = {
	HOOK_KEY(SCOPE_GLOBAL, "workers", G(workers), parse_int_or_auto,
	    "integer|auto", "worker processes, or \"auto\" for one per CPU",
	    .def = 0, .min = 1, .max = ESD_MAX_WORKERS, .reloadable = 1,
	    .show = show_auto),
	INT_KEY(SCOPE_GLOBAL, "max_open_files", G(max_open_files), 0, 0,
	    1 << 30, NULL,
	    "RLIMIT_NOFILE to set at start; 0 raises it to the hard limit"),
	HOOK_KEY(SCOPE_GLOBAL, "log_level", G(log_level), parse_level, "level",
	    "\"error\", \"warn\", \"info\" or \"debug\"",
	    .def = LOG_LVL_INFO, .reloadable = 1, .show = show_level),
	INT_KEY(SCOPE_GLOBAL, "shutdown_timeout", G(shutdown_timeout), 30, 0,
	    86400, "seconds",
	    "how long open connections may finish after SIGTERM"),
	INT_KEY(SCOPE_GLOBAL, "max_connections", G(max_connections), 0, 0,
	    10000000, NULL, "open connections allowed at once over all "
	    "listeners, across all workers; 0 = no limit"),
	STR_KEY(SCOPE_GLOBAL, "control_socket", KT_PATH, G(control_socket),
	    ESD_DEFAULT_CONTROL, RESTART_ONLY,
	    "Unix socket for esockdctl; \"\" for none"),
	STR_KEY(SCOPE_GLOBAL, "control_group", KT_ACCOUNT, G(control_group),
	    "", RESTART_ONLY,
	    "group allowed to use the control socket (mode 0660)"),
	HOOK_KEY(SCOPE_GLOBAL, "metrics", G(metrics), parse_metrics, "address",
	    "\"IP:PORT\" serving Prometheus /metrics; \"\" for none",
	    .sdef = "", .reloadable = RESTART_ONLY,
	    DERIVED(struct esd_config, metrics_addr, metrics_addrlen)),
	STR_KEY(SCOPE_GLOBAL, "user", KT_ACCOUNT, G(user), "", RELOADABLE,
	    "user the workers run as; \"\" keeps the master's"),
	STR_KEY(SCOPE_GLOBAL, "group", KT_ACCOUNT, G(group), "", RELOADABLE,
	    "group the workers run as; \"\" for the user's own"),
	SUB_KEY(SCOPE_GLOBAL, "listeners", KT_LIST, .offset = 0,
	    "the list of listener groups"),

	HOOK_KEY(SCOPE_LISTENER, "name", L(name), parse_name, "name",
	    "unique name, letters, digits, '_', '-' and '.'",
	    .required = 1, .reloadable = 1),
	HOOK_KEY(SCOPE_LISTENER, "bind", L(bind), parse_bind, "address",
	    "\"IPV4:PORT\", \"[IPV6]:PORT\" or \"*:PORT\"",
	    .required = 1, .reloadable = 1),
	INT_KEY(SCOPE_LISTENER, "backlog", L(backlog), 511, 1, 65535, NULL,
	    "listen(2) backlog, capped by net.core.somaxconn"),
	INT_KEY(SCOPE_LISTENER, "max_connections", L(max_connections), 10000,
	    1, 10000000, NULL,
	    "open connections allowed at once, across all workers"),
	INT_KEY(SCOPE_LISTENER, "reserved_connections",
	    L(reserved_connections), 0, 0, 10000000, NULL,
	    "connections of the top-level max_connections that only this "
	    "listener may take"),
	INT_KEY(SCOPE_LISTENER, "idle_timeout", L(idle_timeout), 300, 0,
	    604800, "seconds",
	    "close a connection with no traffic for this long; 0 = never"),
	BOOL_KEY(SCOPE_LISTENER, "tcp_nodelay", L(tcp_nodelay), 1,
	    "set TCP_NODELAY on client connections"),
	BOOL_KEY(SCOPE_LISTENER, "tcp_keepalive", L(tcp_keepalive), 0,
	    "set SO_KEEPALIVE on client connections"),
	INT_KEY(SCOPE_LISTENER, "defer_accept", L(defer_accept), 0, 0, 3600,
	    "seconds", "accept only once the client has sent data "
	    "(TCP_DEFER_ACCEPT); 0 = off"),
	INT_KEY(SCOPE_LISTENER, "max_connections_per_source",
	    L(max_per_source), 0, 0, 10000000, NULL,
	    "open connections allowed from one client address, across all "
	    "workers; 0 = no limit"),
	INT_KEY(SCOPE_LISTENER, "rate_limit", L(rate_limit), 0, 0, 1000000,
	    "connections/s", "new connections allowed per second, across all "
	    "workers; 0 = no limit"),
	INT_KEY(SCOPE_LISTENER, "rate_burst", L(rate_burst), 10, 0, 1000000,
	    "connections", "connections allowed at once beyond rate_limit"),
	HOOK_KEY(SCOPE_LISTENER, "max_handshakes", L(max_handshakes),
	    parse_int_or_auto, "integer|auto", "connections allowed in their "
	    "handshake phase (PROXY header, TLS) at once, across all workers; "
	    "\"auto\" = a quarter of max_connections, at least 1", .def = 0,
	    .min = 1, .max = 10000000, .reloadable = 1, .show = show_auto),
	HOOK_KEY(SCOPE_LISTENER, "handshake_early_drop",
	    L(handshake_early_drop), parse_early_drop, "start:rate:full",
	    "from START percent of max_handshakes in use, refuse a new "
	    "connection with RATE percent chance, growing to all at FULL "
	    "percent (OpenSSH's MaxStartups); \"\" = off",
	    .sdef = "", .reloadable = 1),
	INT_KEY(SCOPE_LISTENER, "rate_limit_per_source", L(rate_per_source),
	    0, 0, 1000000, "connections/s", "new connections allowed per "
	    "second from one source, across all workers; 0 = no limit"),
	INT_KEY(SCOPE_LISTENER, "rate_burst_per_source", L(burst_per_source),
	    10, 0, 1000000, "connections", "connections one source may open "
	    "at once beyond rate_limit_per_source"),
	/* Shorter prefixes would put unrelated networks in one source. */
	INT_KEY(SCOPE_LISTENER, "source_prefix_v4", L(source_prefix_v4), 32,
	    8, 32, "bits", "IPv4 clients in one block of this prefix length "
	    "are one source for the per-source limit and rate"),
	INT_KEY(SCOPE_LISTENER, "source_prefix_v6", L(source_prefix_v6), 64,
	    32, 128, "bits", "IPv6 clients in one block of this prefix length "
	    "are one source for the per-source limit and rate"),
	CIDR_KEY("allow", L(allow), "address blocks whose clients are served; "
	    "empty: every client not denied"),
	CIDR_KEY("deny", L(deny),
	    "address blocks whose clients are refused, even when allowed"),
	HOOK_KEY(SCOPE_LISTENER, "proxy_protocol_in", L(proxy_in),
	    parse_choice, "off|v1|v2|any",
	    "read a PROXY protocol header from each client first: \"off\", "
	    "\"v1\", \"v2\" or \"any\" (either, told by its first bytes)",
	    .def = PROXY_IN_OFF, .reloadable = 1, .show = show_choice),
	CIDR_KEY("proxy_sources", L(proxy_sources), "address blocks (the "
	    "load balancers) allowed to send a PROXY header; required with "
	    "proxy_protocol_in"),
	CIDR_KEY("proxy_optional_sources", L(proxy_optional_sources),
	    "address blocks that may connect without a PROXY header (health "
	    "checks), served as direct clients"),
	INT_KEY(SCOPE_LISTENER, "proxy_header_timeout",
	    L(proxy_header_timeout), 5, 1, 3600, "seconds",
	    "time allowed for the whole PROXY header, from the accept"),
	STR_KEY(SCOPE_LISTENER, "tls_certificate", KT_PATH,
	    L(tls_certificate), "", RELOADABLE, "PEM certificate chain: the "
	    "listener terminates TLS; \"\" = plain TCP"),
	STR_KEY(SCOPE_LISTENER, "tls_key", KT_PATH, L(tls_key), "", RELOADABLE,
	    "PEM private key; \"\" = in the tls_certificate file"),
	HOOK_KEY(SCOPE_LISTENER, "tls_sni", L(tls_sni), parse_sni, "list",
	    "certificates chosen by the client's server name: ( { names = "
	    "( \"a.example\", \"*.b.example\" ); certificate = \"/path\"; "
	    "key = \"/path\"; }, ... )", .reloadable = 1),
	BOOL_KEY(SCOPE_LISTENER, "tls_sni_strict", L(tls_sni_strict), 0,
	    "refuse a client that names no tls_sni name (alert "
	    "unrecognized_name) instead of serving tls_certificate"),
	HOOK_KEY(SCOPE_LISTENER, "tls_min_version", L(tls_min_version),
	    parse_tlsver, "1.2|1.3",
	    "oldest TLS version accepted: \"1.2\" or \"1.3\"",
	    .def = 12, .reloadable = 1, .show = show_tlsver),
	INT_KEY(SCOPE_LISTENER, "tls_ticket_lifetime",
	    L(tls_ticket_lifetime), 43200, 60, 604800, "seconds",
	    "time a random session-ticket key encrypts; it decrypts for one "
	    "more"),
	STR_KEY(SCOPE_LISTENER, "tls_ticket_keys", KT_PATH,
	    L(tls_ticket_keys), "", RELOADABLE, "session-ticket key file, "
	    "HAProxy's tls-ticket-keys format (mode 600); \"\" = random "
	    "keys, rotated"),
	INT_KEY(SCOPE_LISTENER, "tls_handshake_timeout",
	    L(tls_handshake_timeout), 10, 1, 3600, "seconds",
	    "time allowed for the TLS handshake, from the accept"),
	STR_KEY(SCOPE_LISTENER, "tls_client_ca", KT_PATH, L(tls_client_ca),
	    "", RELOADABLE, "PEM CAs that client certificates are verified "
	    "against; their names are sent in the certificate request"),
	HOOK_KEY(SCOPE_LISTENER, "tls_verify_client", L(tls_verify_client),
	    parse_choice, "none|optional|required",
	    "ask for a client certificate: \"none\", \"optional\" or "
	    "\"required\"", .def = TLS_VERIFY_NONE, .reloadable = 1,
	    .show = show_choice),
	INT_KEY(SCOPE_LISTENER, "tls_verify_depth", L(tls_verify_depth), 9, 0,
	    100, NULL, "most intermediate CAs allowed in a client's chain"),
	STR_KEY(SCOPE_LISTENER, "tls_crl", KT_PATH, L(tls_crl), "", RELOADABLE,
	    "PEM CRL: a revoked client certificate fails; \"\" = no check"),
	HOOK_KEY(SCOPE_LISTENER, "tls_alpn", L(tls_alpn), parse_alpn, "list",
	    "ALPN protocols in the server's order, such as ( \"h2\", "
	    "\"http/1.1\" ); a client sharing none fails; () = no ALPN",
	    .reloadable = 1),
	HOOK_KEY(SCOPE_LISTENER, "tls_max_version", L(tls_max_version),
	    parse_tlsver, "1.2|1.3",
	    "newest TLS version accepted: \"1.2\" or \"1.3\"",
	    .def = 13, .reloadable = 1, .show = show_tlsver),
	HOOK_KEY(SCOPE_LISTENER, "tls_ciphers", L(tls_ciphers), parse_text,
	    "string", "OpenSSL cipher list for TLS 1.2; \"\" = OpenSSL's "
	    "default", .sdef = "", .reloadable = 1),
	HOOK_KEY(SCOPE_LISTENER, "tls_ciphersuites", L(tls_ciphersuites),
	    parse_text, "string", "TLS 1.3 cipher suites, ':' between them; "
	    "\"\" = OpenSSL's default", .sdef = "", .reloadable = 1),
	HOOK_KEY(SCOPE_LISTENER, "tls_groups", L(tls_groups), parse_text,
	    "string", "key exchange groups in order, such as "
	    "\"X25519:P-256\"; \"\" = OpenSSL's default", .sdef = "",
	    .reloadable = 1),
	SUB_KEY(SCOPE_LISTENER, "backend", KT_GROUP, L(backend),
	    "where accepted connections are relayed"),

	HOOK_KEY(SCOPE_BACKEND, "socket", B(sockets), parse_sockets,
	    "path|@name|list", "a Unix socket: an absolute path or @name "
	    "(abstract); or a list used round-robin with failover",
	    .required = 1, .reloadable = 1),
	INT_KEY(SCOPE_BACKEND, "connect_timeout", B(connect_timeout_ms), 1000,
	    1, 600000, "ms", "time allowed to connect to one backend"),
	BOOL_KEY(SCOPE_BACKEND, "proxy_protocol", B(proxy_protocol), 0,
	    "send a PROXY protocol v2 header naming the client first on each "
	    "backend connection"),
	BOOL_KEY(SCOPE_BACKEND, "proxy_crc32c", B(proxy_crc32c), 0,
	    "add a CRC32c of the PROXY v2 header (PP2_TYPE_CRC32C) to it"),
	INT_KEY(SCOPE_BACKEND, "backend_fail_threshold", B(fail_threshold), 3,
	    1, 1000, NULL, "consecutive failed connects that eject a backend "
	    "socket (no client waits on it until its retry interval ends)"),
	INT_KEY(SCOPE_BACKEND, "backend_retry_interval", B(retry_interval_ms),
	    2000, 10, 30000, "ms", "how long an ejected socket is skipped "
	    "before one connection probes it; doubles, up to 30 s, while "
	    "probes fail"),
	HOOK_KEY(SCOPE_BACKEND, "balance", B(balance), parse_choice,
	    "round_robin|least_connections", "how a backend socket is "
	    "chosen: \"round_robin\", or \"least_connections\": the fewest "
	    "open connections across all workers", .def = BALANCE_ROUND_ROBIN,
	    .reloadable = 1, .show = show_choice),
	HOOK_KEY(SCOPE_BACKEND, "mode", B(mode), parse_choice,
	    "relay|handoff", "\"relay\": esockd relays each client's bytes; "
	    "\"handoff\": each client's socket is passed to the handler with "
	    "SCM_RIGHTS and a PROXY v2 header, and esockd leaves its data path "
	    "(plain listeners only)", .def = BACKEND_RELAY, .reloadable = 1,
	    .show = show_choice),
};

/* Parsing state for one file. */
struct config_parse {
	const char		*file;
	struct config_diag	*diag;
	struct esd_config	*conf;
};

const struct config_key *
config_keys(size_t *n)
{
	*n = sizeof(keys) / sizeof(keys[0]);
	return keys;
}

void
config_keep_restart_only(const struct esd_config *old, struct esd_config *conf,
    void (*changed)(const char *, const char *, void *), void *arg)
{
	const char *from = (const char *)old;
	char *to = (char *)conf;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct config_key *k = &keys[i];

		/* Every restart-only key is a global string (test_config). */
		if (k->reloadable || k->scope != SCOPE_GLOBAL ||
		    memcmp(from + k->offset, to + k->offset, k->size) == 0)
			continue;
		changed(k->name, from + k->offset, arg);
		memcpy(to + k->offset, from + k->offset, k->size);
		memcpy(to + k->derived_offset, from + k->derived_offset,
		    k->derived_size);
	}
}

/* A key's default as it would be written in the file; "none" if required. */
void
config_key_default(const struct config_key *k, char *buf, size_t len)
{
	if (k->show != NULL)
		k->show(k, buf, len);
	else if (k->type == KT_INT)
		snprintf(buf, len, "%lld", k->def);
	else if (k->type == KT_BOOL)
		snprintf(buf, len, "%s", k->def ? "true" : "false");
	else if (k->sdef != NULL)
		snprintf(buf, len, "\"%s\"", k->sdef);
	else if (k->type == KT_CIDRS)
		snprintf(buf, len, "()");	/* an empty list */
	else
		snprintf(buf, len, "none");
}

const char *
config_scope_name(enum config_scope scope)
{
	switch (scope) {
	case SCOPE_GLOBAL:	return "global";
	case SCOPE_LISTENER:	return "listener";
	case SCOPE_BACKEND:	return "backend";
	}
	return "?";
}

static void
diag_add(struct config_diag *diag, const char *line)
{
	char **n = realloc(diag->lines, (diag->n + 1) * sizeof(*n));
	char *dup = strdup(line);

	if (n == NULL || dup == NULL) {
		free(dup);
		if (n != NULL)
			diag->lines = n;
		fprintf(stderr, "%s\n", line);	/* out of memory: say it now */
		return;
	}
	diag->lines = n;
	diag->lines[diag->n++] = dup;
}

/* Add one formatted line (for errors found outside the parser). */
void
config_diag_add(struct config_diag *diag, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	diag_add(diag, line);
}

void
config_diag_free(struct config_diag *diag)
{
	for (size_t i = 0; i < diag->n; i++)
		free(diag->lines[i]);
	free(diag->lines);
	diag->lines = NULL;
	diag->n = 0;
}

/* Record one error at a setting's line (or the file when s is NULL). */
__attribute__((format(printf, 3, 4)))
static void
perr(struct config_parse *p, const config_setting_t *s, const char *fmt, ...)
{
	char msg[768], line[1024];
	const char *file = p->file;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (s != NULL && config_setting_source_file(s) != NULL)
		file = config_setting_source_file(s);
	if (s != NULL && config_setting_source_line(s) > 0)
		snprintf(line, sizeof(line), "%s:%u: %s", file,
		    config_setting_source_line(s), msg);
	else
		snprintf(line, sizeof(line), "%s:1: %s", file, msg);
	diag_add(p->diag, line);
}

/* Levenshtein distance, for "did you mean" on unknown keys. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64], prev, tmp;

	if (lb >= sizeof(row) / sizeof(row[0]))
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			tmp = row[j];
			row[j] = prev + (a[i - 1] != b[j - 1]);
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			if (tmp + 1 < row[j])
				row[j] = tmp + 1;
			prev = tmp;
		}
	}
	return row[lb];
}

static const struct config_key *
key_find(enum config_scope scope, const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (keys[i].scope == scope && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* Report an unknown key, suggesting the closest known one in its scope. */
static void
unknown_key(struct config_parse *p, const config_setting_t *s, enum config_scope scope,
    const char *where)
{
	const char *name = config_setting_name(s), *best = NULL;
	size_t bestd = 3;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		size_t d;
		if (keys[i].scope != scope)
			continue;
		d = edit_distance(name, keys[i].name);
		if (d < bestd) {
			bestd = d;
			best = keys[i].name;
		}
	}
	if (best != NULL)
		perr(p, s, "unknown key '%s' %s; did you mean '%s'?", name,
		    where, best);
	else
		perr(p, s, "unknown key '%s' %s; see esockd.conf(5) for the "
		    "keys of a %s section", name, where,
		    config_scope_name(scope));
}

static const char *
type_name(int t)
{
	switch (t) {
	case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT:	return "a decimal number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL:	return "a boolean";
	case CONFIG_TYPE_ARRAY:	return "an array";
	case CONFIG_TYPE_LIST:	return "a list";
	case CONFIG_TYPE_GROUP:	return "a group";
	}
	return "a value of unknown type";
}

/* Read an integer setting within the key's bounds into *out. */
static int
get_int(struct config_parse *p, const config_setting_t *s, const struct config_key *k,
    int *out)
{
	long long v;
	int t = config_setting_type(s);

	if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
		perr(p, s, "'%s' must be an integer, not %s; for example "
		    "%s = %lld;", k->name, type_name(t), k->name, k->def ?
		    k->def : k->max);
		return -1;
	}
	v = config_setting_get_int64(s);
	if (v < k->min || v > k->max) {
		perr(p, s, "'%s' = %lld is out of range; use an integer from "
		    "%lld to %lld%s%s", k->name, v, k->min, k->max,
		    k->unit ? " " : "", k->unit ? k->unit : "");
		return -1;
	}
	*out = (int)v;
	return 0;
}

static int
get_string(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, const char **out)
{
	int t = config_setting_type(s);

	if (t != CONFIG_TYPE_STRING) {
		perr(p, s, "'%s' must be a string, not %s; %s", k->name,
		    type_name(t), k->doc);
		return -1;
	}
	*out = config_setting_get_string(s);
	return 0;
}

static int
valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= ESD_NAME_MAX)
		return 0;
	for (; *s != '\0'; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' ||
		    *s == '.'))
			return 0;
	}
	return 1;
}

/*
 * A setting given as one value or as a list of them ('socket', 'allow',
 * 'deny'): add() each element.  Returns the number of elements, or -1
 * (reported) when s is neither a string nor a list.
 */
static int
one_or_list(struct config_parse *p, const config_setting_t *s, const char *what,
    int (*add)(struct config_parse *, const config_setting_t *, void *), void *dst)
{
	int t = config_setting_type(s), n;

	if (t == CONFIG_TYPE_STRING) {
		(void)add(p, s, dst);
		return 1;
	}
	if (t != CONFIG_TYPE_LIST && t != CONFIG_TYPE_ARRAY) {
		perr(p, s, "%s, not %s", what, type_name(t));
		return -1;
	}
	n = config_setting_length(s);
	for (int i = 0; i < n; i++)
		(void)add(p, config_setting_get_elem(s, (unsigned)i), dst);
	return n;
}

/*
 * A backend socket is an absolute path, like every other path key, or
 * "@name" for the Linux abstract namespace (backend.c connects to it
 * with a leading NUL).  A relative path would be resolved against
 * whatever directory the daemon happens to run in, so it is refused.
 */
static int
check_socket_path(struct config_parse *p, const config_setting_t *s,
    const char *path)
{
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

	if (path[0] == '\0' || strcmp(path, "@") == 0) {
		perr(p, s, "backend socket \"%s\" is empty; use an absolute "
		    "path such as \"/run/handler.sock\", or \"@name\" for "
		    "an abstract socket", path);
		return -1;
	}
	if (path[0] != '/' && path[0] != '@') {
		perr(p, s, "backend socket \"%s\" is a relative path; use an "
		    "absolute path such as \"/run/handler.sock\", or "
		    "\"@name\" for an abstract socket", path);
		return -1;
	}
	if (strlen(path) > max) {
		perr(p, s, "backend socket path \"%s\" is too long; use a path "
		    "of 1 to %zu bytes", path, max);
		return -1;
	}
	return 0;
}

static int
add_socket(struct config_parse *p, const config_setting_t *s, void *arg)
{
	struct backend_conf *b = arg;
	const char *path;
	char **n;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		perr(p, s, "backend 'socket' entries must be strings, not %s; "
		    "for example socket = ( \"/run/a.sock\", \"/run/b.sock\" );",
		    type_name(config_setting_type(s)));
		return -1;
	}
	path = config_setting_get_string(s);
	if (check_socket_path(p, s, path) == -1)
		return -1;
	if (b->nsockets == ESD_MAX_BACKENDS) {
		perr(p, s, "too many backend sockets; at most %d per listener",
		    ESD_MAX_BACKENDS);
		return -1;
	}
	n = realloc(b->sockets, (b->nsockets + 1) * sizeof(*n));
	if (n == NULL)
		return -1;
	b->sockets = n;
	if ((b->sockets[b->nsockets] = strdup(path)) == NULL)
		return -1;
	b->nsockets++;
	return 0;
}

/* 'socket': one path or @name, or a list of them. */
static void
parse_sockets(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	(void)k;
	if (one_or_list(p, s, "backend 'socket' must be a path or a list of "
	    "paths", add_socket, base) == 0)
		perr(p, s, "backend 'socket' list is empty; give at least one "
		    "Unix socket path");
}

/* The list a cidr entry goes to, and its key's name for messages. */
struct cidr_dst {
	const char		*name;
	struct cidr_list	*l;
};

static int
add_cidr(struct config_parse *p, const config_setting_t *s, void *arg)
{
	const struct cidr_dst *d = arg;
	struct cidr_list *l = d->l;
	const char *str, *why;
	struct cidr c, *n;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		perr(p, s, "'%s' entries must be strings such as \"10.0.0.0/8\" "
		    "or \"::1\", not %s", d->name,
		    type_name(config_setting_type(s)));
		return -1;
	}
	str = config_setting_get_string(s);
	if (cidr_parse(str, &c, &why) == -1) {
		perr(p, s, "'%s' entry \"%s\" is not an address block: %s",
		    d->name, str, why);
		return -1;
	}
	if (l->n == CIDR_MAX_RULES) {
		perr(p, s, "'%s' has more than %d entries; merge blocks into "
		    "wider ones", d->name, CIDR_MAX_RULES);
		return -1;
	}
	if ((n = realloc(l->v, (l->n + 1) * sizeof(*n))) == NULL) {
		perr(p, s, "out of memory");
		return -1;
	}
	l->v = n;
	l->v[l->n++] = c;
	return 0;
}

/* 'allow' or 'deny': one block as a string, or a list of them. */
static void
get_cidrs(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, struct cidr_list *l)
{
	struct cidr_dst d = { k->name, l };
	char what[96];

	snprintf(what, sizeof(what), "'%s' must be an address block or a "
	    "list of them, such as ( \"10.0.0.0/8\", \"::1\" )", k->name);
	(void)one_or_list(p, s, what, add_cidr, &d);
}

/*
 * 'user', 'group', 'control_group': a name only.  proc_resolve looks it
 * up (the parser does no NSS lookups), reporting at the line kept by
 * record_account_lines.
 */
static void
get_account(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *dst)
{
	const char *str;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (strlen(str) >= k->size) {
		perr(p, s, "'%s' = \"%s\" is longer than %zu bytes; name an "
		    "existing %s", k->name, str, k->size - 1,
		    strcmp(k->name, "user") == 0 ? "user" : "group");
		return;
	}
	snprintf(dst, k->size, "%s", str);
}

/* The line of a top-level setting, or 0 when the file does not set it. */
static int
line_of(const config_setting_t *root, const char *name)
{
	const config_setting_t *s = config_setting_get_member(root, name);

	return s != NULL ? (int)config_setting_source_line(s) : 0;
}

/*
 * Workers change group only as part of dropping to 'user', so 'group'
 * alone is an error; without 'group' they take the user's own group.
 */
static void
check_user_group(struct config_parse *p, const config_setting_t *root)
{
	const config_setting_t *u = config_setting_get_member(root, "user");
	const config_setting_t *g = config_setting_get_member(root, "group");
	int named_user = u != NULL && config_setting_type(u) ==
	    CONFIG_TYPE_STRING && config_setting_get_string(u)[0] != '\0';

	if (g != NULL && config_setting_type(g) == CONFIG_TYPE_STRING &&
	    config_setting_get_string(g)[0] != '\0' && !named_user)
		perr(p, g, "'group' needs 'user': workers change group only when "
		    "they drop to a user; add user = \"NAME\"; or remove "
		    "'group'");
	p->conf->user_line = line_of(root, "user");
	p->conf->group_line = line_of(root, "group");
	p->conf->control_group_line = line_of(root, "control_group");
}

/* 'workers', 'max_handshakes': an integer in bounds, or "auto" (0). */
static void
parse_int_or_auto(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	int *dst = (int *)((char *)base + k->offset);
	int t = config_setting_type(s);

	if (t == CONFIG_TYPE_STRING) {
		if (strcmp(config_setting_get_string(s), "auto") == 0)
			*dst = 0;
		else
			perr(p, s, "'%s' = \"%s\" is not valid; use an integer "
			    "from %lld to %lld or \"auto\"", k->name,
			    config_setting_get_string(s), k->min, k->max);
		return;
	}
	if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
		perr(p, s, "'%s' must be an integer or \"auto\", not %s",
		    k->name, type_name(t));
		return;
	}
	get_int(p, s, k, dst);
}

static void
show_auto(const struct config_key *k, char *buf, size_t len)
{
	if (k->def == 0)
		snprintf(buf, len, "\"auto\"");
	else
		snprintf(buf, len, "%lld", k->def);
}

static const char *const level_names[] = {
	[LOG_LVL_ERROR] = "error", [LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug",
};

static void
parse_level(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	const char *str;
	enum log_level lvl;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (log_parse_level(str, &lvl) == -1) {
		perr(p, s, "'log_level' = \"%s\" is not a level; use "
		    "\"error\", \"warn\", \"info\" or \"debug\"", str);
		return;
	}
	*(int *)((char *)base + k->offset) = (int)lvl;
}

static void
show_level(const struct config_key *k, char *buf, size_t len)
{
	snprintf(buf, len, "\"%s\"", level_names[k->def]);
}

static void
parse_tlsver(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	const char *str;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (strcmp(str, "1.2") != 0 && strcmp(str, "1.3") != 0) {
		perr(p, s, "'%s' = \"%s\" is not a version esockd accepts; use "
		    "\"1.2\" or \"1.3\"", k->name, str);
		return;
	}
	*(int *)((char *)base + k->offset) = str[2] == '2' ? 12 : 13;
}

static void
show_tlsver(const struct config_key *k, char *buf, size_t len)
{
	snprintf(buf, len, "\"%lld.%lld\"", k->def / 10, k->def % 10);
}

/*
 * A word out of the row's form, "a|b|c", stored as its index: the form
 * is the one list of the words, for the parser, its error and -K.
 */
static int
choice_index(const char *form, const char *word)
{
	size_t n = strlen(word);
	int i = 0;

	for (const char *f = form; *f != '\0'; i++) {
		size_t len = strcspn(f, "|");

		if (len == n && strncmp(f, word, n) == 0)
			return i;
		f += len + (f[len] == '|');
	}
	return -1;
}

static void
parse_choice(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	char use[128] = "";
	const char *str, *f;
	int i;

	if (get_string(p, s, k, &str) == -1)
		return;
	if ((i = choice_index(k->form, str)) != -1) {
		*(int *)((char *)base + k->offset) = i;
		return;
	}
	/* "a|b|c" said as "a", "b" or "c" */
	for (f = k->form; *f != '\0'; ) {
		size_t len = strcspn(f, "|"), at = strlen(use);

		snprintf(use + at, sizeof(use) - at, "%s\"%.*s\"",
		    at == 0 ? "" : f[len] == '\0' ? " or " : ", ", (int)len, f);
		f += len + (f[len] == '|');
	}
	perr(p, s, "'%s' = \"%s\" is not valid; use %s", k->name, str, use);
}

static void
show_choice(const struct config_key *k, char *buf, size_t len)
{
	const char *f = k->form;

	for (long long i = 0; i < k->def && *f != '\0'; i++)
		f += strcspn(f, "|") + (f[strcspn(f, "|")] == '|');
	snprintf(buf, len, "\"%.*s\"", (int)strcspn(f, "|"), f);
}

/* A string of at most the field's size, taken as it is (OpenSSL's
 * syntax is checked by tls_policy.c, the only place that knows it). */
static void
parse_text(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	const char *str;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (strlen(str) >= k->size) {
		perr(p, s, "'%s' is longer than %zu bytes; shorten it", k->name,
		    k->size - 1);
		return;
	}
	snprintf((char *)base + k->offset, k->size, "%s", str);
}

/*
 * 'handshake_early_drop': "START:RATE:FULL" in percent of max_handshakes
 * (early_drop.c reads it), or "" for off.
 */
static void
parse_early_drop(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	struct listener_conf *lc = base;
	const char *str, *why = "it is too long";

	if (get_string(p, s, k, &str) == -1)
		return;
	if (strlen(str) >= k->size ||
	    early_drop_parse(str, &lc->early_drop, &why) == -1) {
		perr(p, s, "'%s' = \"%s\" is not valid: %s; use "
		    "\"START:RATE:FULL\", percents of max_handshakes from 0 to "
		    "100 with START below FULL, such as \"50:30:100\", or \"\" "
		    "for off", k->name, str, why);
		return;
	}
	snprintf((char *)base + k->offset, k->size, "%s", str);
}

/* One ALPN protocol appended in wire form: a length byte, the name. */
static int
add_alpn(struct config_parse *p, const config_setting_t *s, void *arg)
{
	struct listener_conf *lc = arg;
	const char *str;
	size_t n;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		perr(p, s, "'tls_alpn' entries must be strings, not %s; for "
		    "example tls_alpn = ( \"h2\", \"http/1.1\" );",
		    type_name(config_setting_type(s)));
		return -1;
	}
	str = config_setting_get_string(s);
	n = strlen(str);
	if (n == 0 || n > 255 || lc->tls_alpn_len + 1 + n >
	    sizeof(lc->tls_alpn)) {
		perr(p, s, "'tls_alpn' entry \"%s\" is %s; use names of 1 to "
		    "255 bytes, %zu bytes in all", str, n == 0 ? "empty" :
		    "too long", sizeof(lc->tls_alpn));
		return -1;
	}
	lc->tls_alpn[lc->tls_alpn_len++] = (unsigned char)n;
	memcpy(lc->tls_alpn + lc->tls_alpn_len, str, n);
	lc->tls_alpn_len += (int)n;
	return 0;
}

/* 'tls_alpn': one protocol name, or a list in the server's order; an
 * empty list () is no ALPN, the default. */
static void
parse_alpn(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	(void)k;
	(void)one_or_list(p, s, "'tls_alpn' must be a list of protocol names "
	    "such as ( \"h2\", \"http/1.1\" )", add_alpn, base);
}

static void
parse_name(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	const char *str;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (!valid_name(str)) {
		perr(p, s, "listener name \"%s\" is not valid; use 1 to %d "
		    "letters, digits, '_', '-' or '.'", str, ESD_NAME_MAX - 1);
		return;
	}
	snprintf((char *)base + k->offset, k->size, "%s", str);
}

/*
 * "[::ffff:192.0.2.1]:P" parses, but esockd's IPv6 sockets are IPv6-only
 * (listener.c, metrics.c), and bind(2) refuses a mapped address on them
 * with EINVAL.  Say so at the line, with the IPv4 form to write instead.
 */
static int
refuse_mapped(struct config_parse *p, const config_setting_t *s,
    const char *key, const char *str, const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
	char v4[INET_ADDRSTRLEN];

	if (ss->ss_family != AF_INET6 ||
	    !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return 0;
	if (inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], v4,
	    sizeof(v4)) == NULL)
		snprintf(v4, sizeof(v4), "IPV4");
	perr(p, s, "%s \"%s\" is an IPv4-mapped IPv6 address, which esockd's "
	    "IPv6-only sockets cannot bind; write it as IPv4: \"%s:%u\"",
	    key, str, v4, ntohs(sin6->sin6_port));
	return -1;
}

static void
parse_bind(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	struct listener_conf *lc = base;
	const char *str, *why;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (strlen(str) >= k->size ||
	    addr_parse_bind(str, &lc->addr, &lc->addrlen, &why) == -1) {
		if (strlen(str) >= k->size)
			why = "it is too long for an address";
		perr(p, s, "bind address \"%s\" is not valid; %s", str, why);
		return;
	}
	if (refuse_mapped(p, s, "bind address", str, &lc->addr) == -1) {
		lc->addrlen = 0;	/* no overlap reports on top */
		return;
	}
	snprintf((char *)base + k->offset, k->size, "%s", str);
}

static void
parse_metrics(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	struct esd_config *c = base;
	const char *str, *why;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (str[0] != '\0' && (strlen(str) >= k->size ||
	    addr_parse_bind(str, &c->metrics_addr, &c->metrics_addrlen,
	    &why) == -1)) {
		perr(p, s, "'%s' = \"%s\" is not valid; use \"IP:PORT\", for "
		    "example \"127.0.0.1:9100\", or \"\" for none", k->name, str);
		return;
	}
	if (str[0] != '\0' &&
	    refuse_mapped(p, s, "'metrics'", str, &c->metrics_addr) == -1)
		return;
	snprintf((char *)base + k->offset, k->size, "%s", str);
}

/* An absolute path of at most the field's size, or "" for none. */
static void
get_path(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *dst)
{
	const char *str;

	if (get_string(p, s, k, &str) == -1)
		return;
	if (strlen(str) >= k->size || (str[0] != '\0' && str[0] != '/')) {
		perr(p, s, "'%s' = \"%s\" is not valid; use an absolute path of "
		    "at most %zu bytes, or \"\" for none", k->name, str,
		    k->size - 1);
		return;
	}
	snprintf(dst, k->size, "%s", str);
}

/*
 * A tls_sni name as stored: lowercase, without the trailing dot of the
 * root, in out (ESD_SNI_NAME_MAX bytes).  NULL, or what is wrong.  A
 * wildcard is only a whole first label with two labels after it, so
 * "*.b.example" covers "x.b.example" and never a whole top-level domain.
 */
static const char *
sni_name_norm(const char *str, char *out)
{
	size_t n = strlen(str), lab = 0, labels = 0;

	if (n > 0 && str[n - 1] == '.')
		n--;
	if (n == 0)
		return "it is empty";
	if (n >= ESD_SNI_NAME_MAX)
		return "it is longer than 253 bytes";
	for (size_t i = 0; i < n; i++) {
		char c = str[i];

		if (c == '.') {
			if (lab == 0)
				return "it has an empty label";
			labels++;
			lab = 0;
		} else if (c == '*' && (i != 0 || n < 2 || str[1] != '.'))
			return "'*' may only be the whole first label";
		else if (c != '*' && c != '-' && c != '_' &&
		    !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
		    !(c >= '0' && c <= '9'))
			return "only letters, digits, '-', '_' and '.' may "
			    "follow a leading '*.'";
		else if (++lab > 63)
			return "a label is longer than 63 bytes";
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[n] = '\0';
	if (str[0] == '*' && labels < 2)
		return "a wildcard needs two labels after it";
	return NULL;
}

/* Where a tls_sni name is already given: its entry's line, or 0. */
static int
sni_name_seen(const struct sni_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		for (size_t j = 0; j < l->v[i].nnames; j++)
			if (strcmp(l->v[i].names[j], name) == 0)
				return l->v[i].line;
	return 0;
}

/* One name of the tls_sni entry being read (the list's last). */
static int
add_sni_name(struct config_parse *p, const config_setting_t *s, void *arg)
{
	struct sni_list *l = arg;
	struct sni_conf *e = &l->v[l->n - 1];
	char norm[ESD_SNI_NAME_MAX], **n;
	const char *str, *why;
	int seen;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		perr(p, s, "tls_sni 'names' entries must be strings such as "
		    "\"a.example\", not %s", type_name(config_setting_type(s)));
		return -1;
	}
	str = config_setting_get_string(s);
	if ((why = sni_name_norm(str, norm)) != NULL) {
		perr(p, s, "tls_sni name \"%s\" is not valid: %s; use a DNS "
		    "name such as \"a.example\" or \"*.b.example\"", str, why);
		return -1;
	}
	if ((seen = sni_name_seen(l, norm)) != 0) {
		perr(p, s, "tls_sni name \"%s\" is already given (entry at "
		    "line %d); name each host in one entry only", str, seen);
		return -1;
	}
	if (e->nnames == ESD_SNI_NAMES) {
		perr(p, s, "a tls_sni entry has more than %d names; split it "
		    "or use a wildcard", ESD_SNI_NAMES);
		return -1;
	}
	if ((n = realloc(e->names, (e->nnames + 1) * sizeof(*n))) == NULL) {
		perr(p, s, "out of memory");
		return -1;
	}
	e->names = n;
	if ((e->names[e->nnames] = strdup(norm)) == NULL) {
		perr(p, s, "out of memory");
		return -1;
	}
	e->nnames++;
	return 0;
}

/* The settings of a tls_sni entry, as rows for get_path's messages. */
static const struct config_key sni_rows[] = {
	{ .name = "certificate", FIELD(struct sni_conf, certificate),
	  .doc = "a PEM certificate chain, such as \"/etc/esockd/a.pem\"" },
	{ .name = "key", FIELD(struct sni_conf, key),
	  .doc = "its PEM private key; \"\" = in the certificate file" },
};

/* One tls_sni entry: { names = ...; certificate = ...; key = ...; }. */
static void
add_sni_entry(struct config_parse *p, const config_setting_t *g,
    struct sni_list *l)
{
	struct sni_conf *e, *v;
	int n;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		perr(p, g, "'tls_sni' entries must be groups, such as { names = "
		    "( \"a.example\" ); certificate = \"/etc/esockd/a.pem\"; "
		    "}, not %s", type_name(config_setting_type(g)));
		return;
	}
	if (l->n == ESD_MAX_SNI) {
		perr(p, g, "'tls_sni' has more than %d entries; put several "
		    "names in one entry, or use a wildcard", ESD_MAX_SNI);
		return;
	}
	if ((v = realloc(l->v, (l->n + 1) * sizeof(*v))) == NULL) {
		perr(p, g, "out of memory");
		return;
	}
	l->v = v;
	e = &l->v[l->n++];
	memset(e, 0, sizeof(*e));
	e->line = (int)config_setting_source_line(g);
	n = config_setting_length(g);
	for (int i = 0; i < n; i++) {
		const config_setting_t *m = config_setting_get_elem(g,
		    (unsigned)i);
		const char *name = config_setting_name(m);

		if (strcmp(name, "names") == 0)
			(void)one_or_list(p, m, "tls_sni 'names' must be a name "
			    "or a list of names", add_sni_name, l);
		else if (strcmp(name, "certificate") == 0)
			get_path(p, m, &sni_rows[0], e->certificate);
		else if (strcmp(name, "key") == 0)
			get_path(p, m, &sni_rows[1], e->key);
		else
			perr(p, m, "unknown key '%s' in a tls_sni entry; an "
			    "entry has names, certificate and key", name);
	}
	if (e->nnames == 0 && config_setting_get_member(g, "names") == NULL)
		perr(p, g, "a tls_sni entry has no 'names'; add names = ( "
		    "\"a.example\" );");
	if (config_setting_get_member(g, "certificate") == NULL)
		perr(p, g, "a tls_sni entry has no 'certificate'; add "
		    "certificate = \"/etc/esockd/a.pem\";");
}

/* 'tls_sni': a list of entries, each a group. */
static void
parse_sni(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	struct sni_list *l = (struct sni_list *)((char *)base + k->offset);
	int n;

	if (config_setting_type(s) != CONFIG_TYPE_LIST) {
		perr(p, s, "'tls_sni' must be a list of groups, such as ( { "
		    "names = ( \"a.example\" ); certificate = "
		    "\"/etc/esockd/a.pem\"; } ), not %s",
		    type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	for (int i = 0; i < n; i++)
		add_sni_entry(p, config_setting_get_elem(s, (unsigned)i), l);
}

/* Store one scalar setting according to its key row. */
static void
parse_value(struct config_parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	void *dst = (char *)base + k->offset;
	int t = config_setting_type(s);

	switch (k->type) {
	case KT_INT:
		get_int(p, s, k, dst);
		return;
	case KT_BOOL:
		if (t != CONFIG_TYPE_BOOL) {
			perr(p, s, "'%s' must be true or false, not %s",
			    k->name, type_name(t));
			return;
		}
		*(int *)dst = config_setting_get_bool(s);
		return;
	case KT_PATH:
		get_path(p, s, k, dst);
		return;
	case KT_ACCOUNT:
		get_account(p, s, k, dst);
		return;
	case KT_CIDRS:
		get_cidrs(p, s, k, dst);
		return;
	case KT_HOOK:
		k->parse(p, s, k, base);
		return;
	case KT_GROUP:
	case KT_LIST:
		return;		/* handled by the caller */
	}
}

/* Fill a scope's struct with the defaults from the table. */
static void
apply_defaults(enum config_scope scope, void *base)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct config_key *k = &keys[i];
		if (k->scope != scope)
			continue;
		if (k->type == KT_INT || k->type == KT_BOOL || k->show != NULL)
			*(int *)((char *)base + k->offset) = (int)k->def;
		if (k->sdef != NULL)
			snprintf((char *)base + k->offset, k->size, "%s",
			    k->sdef);
	}
}

/* Walk a group's settings: known keys are stored, unknown ones reported. */
static void
parse_group(struct config_parse *p, const config_setting_t *g, enum config_scope scope,
    void *base, const char *where, const config_setting_t **sub)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
		const struct config_key *k = key_find(scope, config_setting_name(s));

		if (k == NULL) {
			unknown_key(p, s, scope, where);
			continue;
		}
		if (k->type == KT_GROUP || k->type == KT_LIST) {
			*sub = s;
			continue;
		}
		parse_value(p, s, k, base);
	}
}

/* Report required keys of a scope that a group left out. */
static void
check_required(struct config_parse *p, const config_setting_t *g,
    enum config_scope scope, const char *where)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct config_key *k = &keys[i];
		if (k->scope != scope || !k->required)
			continue;
		if (config_setting_get_member(g, k->name) == NULL)
			perr(p, g, "%s has no '%s'; add %s", where, k->name,
			    k->type == KT_GROUP ?
			    "backend = { socket = \"/run/handler.sock\"; };" :
			    k->doc);
	}
}

/* A key set to "on" (set) that chooses among certificates needs the
 * default one, tls_certificate. */
static void
check_tls_default(struct config_parse *p, const config_setting_t *g,
    const struct listener_conf *lc, const char *name, int set,
    const char *where)
{
	if (lc->tls_certificate[0] != '\0' || !set)
		return;
	perr(p, member_or(g, name), "'%s' %s needs 'tls_certificate', the "
	    "certificate for a client that names no tls_sni name; add "
	    "tls_certificate = \"/etc/esockd/cert.pem\"; or remove '%s'",
	    name, where, name);
}

/* The line of a listener key, or the certificate's when it is not set. */
static int
tls_key_line(const config_setting_t *g, const struct listener_conf *lc,
    const char *name)
{
	int line = line_of(g, name);

	return line != 0 ? line : lc->tls_line;
}

/*
 * The client-certificate, ALPN, version and algorithm keys: each needs a
 * certificate, verifying needs CAs, a CRL needs verifying, and the
 * versions must leave one.  What OpenSSL alone can judge (a cipher
 * string, a CA file) is tls_policy.c's, at the lines kept here.
 */
static void
check_tls_policy(struct config_parse *p, const config_setting_t *g,
    struct listener_conf *lc, const char *where)
{
	/* Set to something other than the default (which the configs
	 * shipped write out), each needs a certificate. */
	const struct { const char *name; int set; } needs_cert[] = {
		{ "tls_client_ca", lc->tls_client_ca[0] != '\0' },
		{ "tls_verify_client", lc->tls_verify_client != TLS_VERIFY_NONE },
		{ "tls_crl", lc->tls_crl[0] != '\0' },
		{ "tls_alpn", lc->tls_alpn_len > 0 },
		{ "tls_ciphers", lc->tls_ciphers[0] != '\0' },
		{ "tls_ciphersuites", lc->tls_ciphersuites[0] != '\0' },
		{ "tls_groups", lc->tls_groups[0] != '\0' },
	};
	const config_setting_t *s;

	lc->tls_client_ca_line = tls_key_line(g, lc, "tls_client_ca");
	lc->tls_crl_line = tls_key_line(g, lc, "tls_crl");
	lc->tls_ciphers_line = tls_key_line(g, lc, "tls_ciphers");
	lc->tls_ciphersuites_line = tls_key_line(g, lc, "tls_ciphersuites");
	lc->tls_groups_line = tls_key_line(g, lc, "tls_groups");
	if (lc->tls_certificate[0] == '\0') {
		for (size_t i = 0; i < sizeof(needs_cert) /
		    sizeof(needs_cert[0]); i++)
			if (needs_cert[i].set)
				perr(p, member_or(g, needs_cert[i].name),
				    "'%s' %s needs 'tls_certificate'; add "
				    "tls_certificate = \"/etc/esockd/cert.pem\"; "
				    "or remove '%s'", needs_cert[i].name, where,
				    needs_cert[i].name);
		return;
	}
	if (lc->tls_verify_client != TLS_VERIFY_NONE &&
	    lc->tls_client_ca[0] == '\0')
		perr(p, config_setting_get_member(g, "tls_verify_client"),
		    "'tls_verify_client' %s needs 'tls_client_ca' to verify "
		    "against; add tls_client_ca = \"/etc/esockd/clients-ca.pem\";",
		    where);
	if ((s = config_setting_get_member(g, "tls_client_ca")) != NULL &&
	    lc->tls_client_ca[0] != '\0' &&
	    lc->tls_verify_client == TLS_VERIFY_NONE)
		perr(p, s, "'tls_client_ca' %s is unused while "
		    "tls_verify_client is \"none\"; set tls_verify_client = "
		    "\"optional\"; or \"required\"; or remove it", where);
	if ((s = config_setting_get_member(g, "tls_crl")) != NULL &&
	    lc->tls_crl[0] != '\0' && lc->tls_verify_client == TLS_VERIFY_NONE)
		perr(p, s, "'tls_crl' %s needs client certificates; set "
		    "tls_verify_client = \"optional\"; or \"required\"; or "
		    "remove it", where);
	if (lc->tls_min_version > lc->tls_max_version)
		perr(p, member_or(g, "tls_max_version"), "'tls_max_version' "
		    "%s is older than tls_min_version, which leaves no version; "
		    "use tls_max_version = \"1.3\"; or lower tls_min_version",
		    where);
}

/*
 * The TLS keys hang together: a key needs a certificate, and the line of
 * the certificate is kept for the errors of loading it (tls_ctx.c).
 */
static void
check_tls(struct config_parse *p, const config_setting_t *g,
    struct listener_conf *lc, const char *where)
{
	const config_setting_t *cert = config_setting_get_member(g,
	    "tls_certificate");
	const config_setting_t *key = config_setting_get_member(g, "tls_key");
	const config_setting_t *tickets = config_setting_get_member(g,
	    "tls_ticket_keys");

	lc->tls_line = (int)config_setting_source_line(cert != NULL ? cert : g);
	lc->tls_ticket_line = (int)config_setting_source_line(tickets != NULL ?
	    tickets : g);
	if (lc->tls_certificate[0] == '\0' && key != NULL &&
	    lc->tls_key[0] != '\0')
		perr(p, key, "'tls_key' %s needs 'tls_certificate'; add "
		    "tls_certificate = \"/etc/esockd/cert.pem\"; or remove "
		    "'tls_key'", where);
	check_tls_default(p, g, lc, "tls_sni", lc->tls_sni.n > 0, where);
	check_tls_default(p, g, lc, "tls_sni_strict", lc->tls_sni_strict,
	    where);
	if (lc->tls_certificate[0] == '\0' && tickets != NULL &&
	    lc->tls_ticket_keys[0] != '\0')
		perr(p, tickets, "'tls_ticket_keys' %s needs 'tls_certificate'; "
		    "add tls_certificate = \"/etc/esockd/cert.pem\"; or remove "
		    "'tls_ticket_keys'", where);
	check_tls_policy(p, g, lc, where);
}

/*
 * A PROXY header is believed from proxy_sources only: reading headers
 * with nobody trusted would refuse every client, and trusting everyone
 * would let any client claim any address.  The source lists mean
 * nothing without the header.
 */
static void
check_proxy_in(struct config_parse *p, const config_setting_t *g,
    struct listener_conf *lc, const char *where)
{
	const char *lists[] = { "proxy_sources", "proxy_optional_sources" };
	const config_setting_t *s;

	if (lc->proxy_in != PROXY_IN_OFF && lc->proxy_sources.n == 0) {
		perr(p, member_or(g, "proxy_protocol_in"), "'proxy_protocol_in' "
		    "%s needs 'proxy_sources', the load balancers' addresses "
		    "(a header from any other address is refused); add "
		    "proxy_sources = ( \"10.0.0.0/8\" );", where);
		return;
	}
	if (lc->proxy_in != PROXY_IN_OFF)
		return;
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		if ((s = config_setting_get_member(g, lists[i])) != NULL &&
		    config_setting_length(s) + (config_setting_type(s) ==
		    CONFIG_TYPE_STRING) > 0)
			perr(p, s, "'%s' %s is unused while proxy_protocol_in "
			    "is \"off\"; set proxy_protocol_in = \"any\"; or "
			    "remove it", lists[i], where);
}

/*
 * A hand-off passes the client's socket as it is: behind TLS the handler
 * would get ciphertext whose keys live in esockd, so a TLS listener
 * relays.
 */
static void
check_handoff(struct config_parse *p, const config_setting_t *backend,
    const struct listener_conf *lc, const char *where)
{
	if (lc->backend.mode != BACKEND_HANDOFF ||
	    lc->tls_certificate[0] == '\0')
		return;
	perr(p, member_or(backend, "mode"), "'mode' = \"handoff\" %s cannot "
	    "be used on a TLS listener: the handler would get the encrypted "
	    "stream, whose keys are esockd's; use mode = \"relay\" here, or "
	    "a plain listener for the hand-off", where);
}

static void
parse_listener(struct config_parse *p, const config_setting_t *g,
    struct listener_conf *lc, size_t idx)
{
	const config_setting_t *backend = NULL;
	const config_setting_t *name = config_setting_get_member(g, "name");
	char where[ESD_NAME_MAX + 32];

	apply_defaults(SCOPE_LISTENER, lc);
	apply_defaults(SCOPE_BACKEND, &lc->backend);
	lc->line = (int)config_setting_source_line(g);
	if (name != NULL && config_setting_type(name) == CONFIG_TYPE_STRING)
		snprintf(where, sizeof(where), "in listener '%s'",
		    config_setting_get_string(name));
	else
		snprintf(where, sizeof(where), "in listener #%zu", idx + 1);
	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		perr(p, g, "listener #%zu must be a group { ... }, not %s",
		    idx + 1, type_name(config_setting_type(g)));
		return;
	}
	parse_group(p, g, SCOPE_LISTENER, lc, where, &backend);
	check_required(p, g, SCOPE_LISTENER, where + 3);
	check_tls(p, g, lc, where);
	check_proxy_in(p, g, lc, where);
	if (backend == NULL)
		return;
	if (config_setting_type(backend) != CONFIG_TYPE_GROUP) {
		perr(p, backend, "'backend' %s must be a group, for example "
		    "backend = { socket = \"/run/handler.sock\"; };", where);
		return;
	}
	strncat(where, " backend", sizeof(where) - strlen(where) - 1);
	parse_group(p, backend, SCOPE_BACKEND, &lc->backend, where, &(const
	    config_setting_t *){ NULL });
	check_required(p, backend, SCOPE_BACKEND, where + 3);
	check_handoff(p, backend, lc, where);
}

/* A group's member (for its line), or the group itself. */
static const config_setting_t *
member_or(const config_setting_t *g, const char *name)
{
	const config_setting_t *m = config_setting_get_member(g, name);

	return m != NULL ? m : g;
}

/* The wildcard of its family: "*:P" or "[::]:P". */
static int
is_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
		    htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(
	    &((const struct sockaddr_in6 *)ss)->sin6_addr);
}

static in_port_t
port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_port;
	return ((const struct sockaddr_in6 *)ss)->sin6_port;
}

/*
 * A wildcard and a specific address of the same family on one port:
 * whichever is bound second fails with EADDRINUSE (SO_REUSEADDR does not
 * allow it for listening sockets).  The families do not overlap: IPv6
 * sockets are IPv6-only, so "*:P" beside "[::]:P" is fine.
 */
static int
binds_overlap(const struct listener_conf *a, const struct listener_conf *b)
{
	if (a->addrlen == 0 || b->addrlen == 0 ||
	    a->addr.ss_family != b->addr.ss_family ||
	    port_of(&a->addr) != port_of(&b->addr))
		return 0;
	return is_wildcard(&a->addr) != is_wildcard(&b->addr);
}

/* Names and binds must be unique across listeners, and binds disjoint. */
static void
check_unique(struct config_parse *p, const config_setting_t *list)
{
	struct esd_config *c = p->conf;

	for (size_t i = 0; i < c->nlisteners; i++) {
		const config_setting_t *gi =
		    config_setting_get_elem(list, (unsigned)i);
		for (size_t j = 0; j < i; j++) {
			struct listener_conf *a = &c->listeners[j];
			struct listener_conf *b = &c->listeners[i];
			if (a->name[0] && strcmp(a->name, b->name) == 0)
				perr(p, member_or(gi, "name"), "listener name "
				    "'%s' is used twice (first at line %d); "
				    "give each listener its own name", b->name,
				    a->line);
			if (a->addrlen && b->addrlen &&
			    addr_equal((struct sockaddr *)&a->addr,
			    (struct sockaddr *)&b->addr))
				perr(p, member_or(gi, "bind"), "bind \"%s\" of "
				    "listener '%s' is already bound by listener "
				    "'%s' (line %d); use another address or port",
				    b->bind, b->name, a->name, a->line);
			else if (binds_overlap(a, b))
				perr(p, member_or(gi, "bind"), "bind \"%s\" of "
				    "listener '%s' overlaps \"%s\" of listener "
				    "'%s' (line %d): a wildcard address takes "
				    "its port on every address of the family; "
				    "use another port, or bind both to specific "
				    "addresses", b->bind, b->name, a->bind,
				    a->name, a->line);
		}
	}
}

static void
parse_listeners(struct config_parse *p, const config_setting_t *list)
{
	struct esd_config *c = p->conf;
	int n;

	if (config_setting_type(list) != CONFIG_TYPE_LIST) {
		perr(p, list, "'listeners' must be a list of groups, for "
		    "example listeners = ( { name = \"web\"; ... } );");
		return;
	}
	n = config_setting_length(list);
	if (n == 0) {
		perr(p, list, "'listeners' is empty; add at least one listener");
		return;
	}
	if (n > ESD_MAX_LISTENERS) {
		perr(p, list, "%d listeners is too many; at most %d", n,
		    ESD_MAX_LISTENERS);
		return;
	}
	c->listeners = calloc((size_t)n, sizeof(*c->listeners));
	if (c->listeners == NULL) {
		perr(p, list, "out of memory");
		return;
	}
	c->nlisteners = (size_t)n;
	for (int i = 0; i < n; i++)
		parse_listener(p, config_setting_get_elem(list, (unsigned)i),
		    &c->listeners[i], (size_t)i);
	check_unique(p, list);
}

/* "a 2, b 3": the listeners that reserve, for a message. */
static void
reservations(const struct esd_config *c, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < c->nlisteners && off < len; i++)
		if (c->listeners[i].reserved_connections > 0)
			off += (size_t)snprintf(buf + off, len - off, "%s%s %d",
			    off ? ", " : "", c->listeners[i].name,
			    c->listeners[i].reserved_connections);
}

/*
 * The top-level max_connections and the listeners' reserved_connections:
 * a reservation is taken from the global limit, so it needs one, it must
 * fit in its own listener's limit (beyond that it could never be used),
 * and all of them together must fit in the global limit.
 */
static void
check_reservations(struct config_parse *p, const config_setting_t *root,
    const config_setting_t *list)
{
	struct esd_config *c = p->conf;
	long long sum = 0;
	char who[256];

	for (size_t i = 0; i < c->nlisteners; i++)
		sum += c->listeners[i].reserved_connections;
	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct listener_conf *lc = &c->listeners[i];
		const config_setting_t *s = member_or(config_setting_get_elem(
		    list, (unsigned)i), "reserved_connections");

		if (lc->reserved_connections == 0)
			continue;
		if (lc->reserved_connections > lc->max_connections)
			perr(p, s, "reserved_connections %d in listener '%s' is "
			    "above its own max_connections %d, so part of it "
			    "could never be used; set reserved_connections to "
			    "at most %d", lc->reserved_connections, lc->name,
			    lc->max_connections, lc->max_connections);
		if (c->max_connections == 0)
			perr(p, s, "reserved_connections in listener '%s' is "
			    "taken from the top-level max_connections, which is "
			    "not set; add max_connections = %lld; (or more) at "
			    "the top level, or remove reserved_connections",
			    lc->name, sum);
	}
	if (c->max_connections == 0 || sum <= c->max_connections)
		return;
	reservations(c, who, sizeof(who));
	perr(p, member_or(root, "max_connections"), "max_connections %d at "
	    "top level is below the %lld connections the listeners reserve "
	    "(%s); raise it to at least %lld, or lower reserved_connections",
	    c->max_connections, sum, who, sum);
}

static void
parse_root(struct config_parse *p, config_t *cfg)
{
	const config_setting_t *root = config_root_setting(cfg);
	const config_setting_t *list = NULL;

	apply_defaults(SCOPE_GLOBAL, p->conf);
	parse_group(p, root, SCOPE_GLOBAL, p->conf, "at top level", &list);
	check_user_group(p, root);
	if (list == NULL) {
		perr(p, NULL, "no 'listeners'; add listeners = ( { name = "
		    "\"web\"; bind = \"127.0.0.1:5000\"; backend = { socket = "
		    "\"/run/handler.sock\"; }; } );");
		return;
	}
	parse_listeners(p, list);
	if (p->conf->listeners != NULL)
		check_reservations(p, root, list);
}

/* The message for a file libconfig could not read or parse. */
static void
read_error(const config_t *cfg, const char *name, char *line, size_t len)
{
	if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
		snprintf(line, len, "%s: cannot read the file; check the path "
		    "and its permissions", name);
	else
		snprintf(line, len, "%s:%d: syntax error: %s",
		    config_error_file(cfg) ? config_error_file(cfg) : name,
		    config_error_line(cfg), config_error_text(cfg));
}

static struct esd_config *
load(config_t *cfg, int ok, const char *name, struct config_diag *diag)
{
	struct config_parse p = { name, diag, NULL };
	char line[1024];

	if (!ok) {
		read_error(cfg, name, line, sizeof(line));
		diag_add(diag, line);
		return NULL;
	}
	if ((p.conf = calloc(1, sizeof(*p.conf))) == NULL ||
	    (p.conf->path = strdup(name)) == NULL) {
		diag_add(diag, "out of memory");
		config_free(p.conf);
		return NULL;
	}
	parse_root(&p, cfg);
	if (diag->n > 0) {
		config_free(p.conf);
		return NULL;
	}
	return p.conf;
}

/* config_read_file, with @include paths relative to the file's directory. */
static int
read_file(config_t *cfg, const char *path)
{
	char dir[4096], *slash;

	config_init(cfg);
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		config_set_include_dir(cfg, dir[0] ? dir : "/");
	}
	return config_read_file(cfg, path);
}

/* Read and validate a file; NULL with every error in diag on failure. */
struct esd_config *
config_load_file(const char *path, struct config_diag *diag)
{
	struct esd_config *c;
	config_t cfg;
	int ok;

	ok = read_file(&cfg, path);
	c = load(&cfg, ok, path, diag);
	config_destroy(&cfg);
	return c;
}

/*
 * Only read the file as config_load_file does: 0 if libconfig parses it,
 * else -1 with the message config_load_file would give in line.  libconfig
 * 1.5 leaks the string token it stopped on at a syntax error (its
 * look-ahead; as many bytes as the string), so the master calls this in a
 * short-lived child before each reload: see syntax_check() in master.c.
 */
int
config_check_syntax(const char *path, char *line, size_t len)
{
	config_t cfg;
	int ok;

	ok = read_file(&cfg, path);
	if (!ok)
		read_error(&cfg, path, line, len);
	config_destroy(&cfg);
	return ok ? 0 : -1;
}

/* As config_load_file, for text in memory named "name" in messages. */
struct esd_config *
config_load_string(const char *text, const char *name, struct config_diag *diag)
{
	struct esd_config *c;
	config_t cfg;
	int ok;

	config_init(&cfg);
	ok = config_read_string(&cfg, text);
	c = load(&cfg, ok, name, diag);
	config_destroy(&cfg);
	return c;
}

void
config_free(struct esd_config *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nlisteners; i++) {
		struct backend_conf *b = &c->listeners[i].backend;
		for (size_t j = 0; j < b->nsockets; j++)
			free(b->sockets[j]);
		free(b->sockets);
		free(c->listeners[i].allow.v);
		free(c->listeners[i].deny.v);
		free(c->listeners[i].proxy_sources.v);
		free(c->listeners[i].proxy_optional_sources.v);
		for (size_t j = 0; j < c->listeners[i].tls_sni.n; j++) {
			struct sni_conf *e = &c->listeners[i].tls_sni.v[j];
			for (size_t k = 0; k < e->nnames; k++)
				free(e->names[k]);
			free(e->names);
		}
		free(c->listeners[i].tls_sni.v);
	}
	free(c->listeners);
	free(c->path);
	free(c);
}
