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

#include <grp.h>
#include <libconfig.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "log.h"

#define G(f)	offsetof(struct esd_config, f)
#define L(f)	offsetof(struct listener_conf, f)
#define B(f)	offsetof(struct backend_conf, f)

static const struct config_key keys[] = {
	{ "workers", SCOPE_GLOBAL, KT_WORKERS, G(workers), 0, 1,
	  ESD_MAX_WORKERS, 0, 1, NULL,
	  "worker processes, or \"auto\" for one per CPU", NULL },
	{ "max_open_files", SCOPE_GLOBAL, KT_INT, G(max_open_files), 0, 0,
	  1 << 30, 0, 1, NULL,
	  "RLIMIT_NOFILE to set at start; 0 raises it to the hard limit", NULL },
	{ "log_level", SCOPE_GLOBAL, KT_LEVEL, G(log_level), LOG_LVL_INFO, 0, 0,
	  0, 1, NULL, "\"error\", \"warn\", \"info\" or \"debug\"", NULL },
	{ "shutdown_timeout", SCOPE_GLOBAL, KT_INT, G(shutdown_timeout), 30, 0,
	  86400, 0, 1, "seconds",
	  "how long open connections may finish after SIGTERM", NULL },
	{ "control_socket", SCOPE_GLOBAL, KT_PATH, G(control_socket), 0, 0, 0,
	  0, 0, NULL, "Unix socket for esockdctl; \"\" for none",
	  ESD_DEFAULT_CONTROL },
	{ "control_group", SCOPE_GLOBAL, KT_UGROUP, G(control_group), 0, 0, 0,
	  0, 0, NULL, "group allowed to use the control socket (mode 0660)",
	  "" },
	{ "metrics", SCOPE_GLOBAL, KT_ADDR, G(metrics), 0, 0, 0, 0, 0, NULL,
	  "\"IP:PORT\" serving Prometheus /metrics; \"\" for none", "" },
	{ "user", SCOPE_GLOBAL, KT_USER, G(user), 0, 0, 0, 0, 1, NULL,
	  "user the workers run as; \"\" keeps the master's", "" },
	{ "group", SCOPE_GLOBAL, KT_UGROUP, G(group), 0, 0, 0, 0, 1, NULL,
	  "group the workers run as; \"\" for the user's own", "" },
	{ "listeners", SCOPE_GLOBAL, KT_LIST, 0, 0, 0, 0, 1, 1, NULL,
	  "the list of listener groups", NULL },

	{ "name", SCOPE_LISTENER, KT_NAME, L(name), 0, 0, 0, 1, 1, NULL,
	  "unique name, letters, digits, '_', '-' and '.'", NULL },
	{ "bind", SCOPE_LISTENER, KT_BIND, L(bind), 0, 0, 0, 1, 1, NULL,
	  "\"IPV4:PORT\", \"[IPV6]:PORT\" or \"*:PORT\"", NULL },
	{ "backlog", SCOPE_LISTENER, KT_INT, L(backlog), 511, 1, 65535, 0, 1,
	  NULL, "listen(2) backlog, capped by net.core.somaxconn", NULL },
	{ "max_connections", SCOPE_LISTENER, KT_INT, L(max_connections), 10000,
	  1, 10000000, 0, 1, NULL,
	  "open connections allowed at once, across all workers", NULL },
	{ "idle_timeout", SCOPE_LISTENER, KT_INT, L(idle_timeout), 300, 0,
	  604800, 0, 1, "seconds",
	  "close a connection with no traffic for this long; 0 = never", NULL },
	{ "tcp_nodelay", SCOPE_LISTENER, KT_BOOL, L(tcp_nodelay), 1, 0, 1, 0, 1,
	  NULL, "set TCP_NODELAY on client connections", NULL },
	{ "tcp_keepalive", SCOPE_LISTENER, KT_BOOL, L(tcp_keepalive), 0, 0, 1,
	  0, 1, NULL, "set SO_KEEPALIVE on client connections", NULL },
	{ "defer_accept", SCOPE_LISTENER, KT_INT, L(defer_accept), 0, 0, 3600,
	  0, 1, "seconds",
	  "accept only once the client has sent data (TCP_DEFER_ACCEPT); "
	  "0 = off", NULL },
	{ "max_connections_per_source", SCOPE_LISTENER, KT_INT,
	  L(max_per_source), 0, 0, 10000000, 0, 1, NULL,
	  "open connections allowed from one client address, across all "
	  "workers; 0 = no limit", NULL },
	{ "rate_limit", SCOPE_LISTENER, KT_INT, L(rate_limit), 0, 0, 1000000,
	  0, 1, "connections/s",
	  "new connections allowed per second, across all workers; 0 = no "
	  "limit", NULL },
	{ "rate_burst", SCOPE_LISTENER, KT_INT, L(rate_burst), 10, 0, 1000000,
	  0, 1, "connections",
	  "connections allowed at once beyond rate_limit", NULL },
	{ "allow", SCOPE_LISTENER, KT_CIDRS, L(allow), 0, 0, 0, 0, 1, NULL,
	  "address blocks whose clients are served; empty: every client "
	  "not denied", NULL },
	{ "deny", SCOPE_LISTENER, KT_CIDRS, L(deny), 0, 0, 0, 0, 1, NULL,
	  "address blocks whose clients are refused, even when allowed",
	  NULL },
	{ "tls_certificate", SCOPE_LISTENER, KT_PATH, L(tls_certificate), 0,
	  0, 0, 0, 1, NULL, "PEM certificate chain: the listener terminates "
	  "TLS; \"\" = plain TCP", "" },
	{ "tls_key", SCOPE_LISTENER, KT_PATH, L(tls_key), 0, 0, 0, 0, 1, NULL,
	  "PEM private key; \"\" = in the tls_certificate file", "" },
	{ "tls_min_version", SCOPE_LISTENER, KT_TLSVER, L(tls_min_version),
	  12, 0, 0, 0, 1, NULL, "oldest TLS version accepted: \"1.2\" or "
	  "\"1.3\"", NULL },
	{ "tls_handshake_timeout", SCOPE_LISTENER, KT_INT,
	  L(tls_handshake_timeout), 10, 1, 3600, 0, 1, "seconds",
	  "time allowed for the TLS handshake, from the accept", NULL },
	{ "backend", SCOPE_LISTENER, KT_GROUP, L(backend), 0, 0, 0, 1, 1, NULL,
	  "where accepted connections are relayed", NULL },

	{ "socket", SCOPE_BACKEND, KT_SOCKETS, B(sockets), 0, 0, 0, 1, 1, NULL,
	  "a Unix socket path, or a list used round-robin with failover", NULL },
	{ "connect_timeout", SCOPE_BACKEND, KT_INT, B(connect_timeout_ms), 1000,
	  1, 600000, 0, 1, "ms", "time allowed to connect to one backend", NULL },
	{ "proxy_protocol", SCOPE_BACKEND, KT_BOOL, B(proxy_protocol), 0, 0, 1,
	  0, 1, NULL, "send a PROXY protocol v2 header naming the client "
	  "first on each backend connection", NULL },
};

/* Parsing state for one file. */
struct parse {
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
perr(struct parse *p, const config_setting_t *s, const char *fmt, ...)
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
unknown_key(struct parse *p, const config_setting_t *s, enum config_scope scope,
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
get_int(struct parse *p, const config_setting_t *s, const struct config_key *k,
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
get_string(struct parse *p, const config_setting_t *s,
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
one_or_list(struct parse *p, const config_setting_t *s, const char *what,
    int (*add)(struct parse *, const config_setting_t *, void *), void *dst)
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

static int
add_socket(struct parse *p, const config_setting_t *s, void *arg)
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
	if (path[0] == '\0' || strlen(path) >= 108) {
		perr(p, s, "backend socket path \"%s\" is %s; use a path of 1 "
		    "to 107 bytes", path, path[0] ? "too long" : "empty");
		return -1;
	}
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

static void
get_sockets(struct parse *p, const config_setting_t *s, struct backend_conf *b)
{
	if (one_or_list(p, s, "backend 'socket' must be a path or a list of "
	    "paths", add_socket, b) == 0)
		perr(p, s, "backend 'socket' list is empty; give at least one "
		    "Unix socket path");
}

/* The list a cidr entry goes to, and its key's name for messages. */
struct cidr_dst {
	const char		*name;
	struct cidr_list	*l;
};

static int
add_cidr(struct parse *p, const config_setting_t *s, void *arg)
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
get_cidrs(struct parse *p, const config_setting_t *s,
    const struct config_key *k, struct cidr_list *l)
{
	struct cidr_dst d = { k->name, l };
	char what[96];

	snprintf(what, sizeof(what), "'%s' must be an address block or a "
	    "list of them, such as ( \"10.0.0.0/8\", \"::1\" )", k->name);
	(void)one_or_list(p, s, what, add_cidr, &d);
}

/*
 * Resolve 'user' now, so that a user missing from this host is reported
 * at its line by "esockd -t" rather than when a worker starts.
 */
static void
get_user(struct parse *p, const config_setting_t *s, const char *name)
{
	struct passwd *pw;

	if (name[0] == '\0')
		return;
	if (strlen(name) >= sizeof(p->conf->user) ||
	    (pw = getpwnam(name)) == NULL) {
		perr(p, s, "user \"%s\" does not exist on this host; create it "
		    "or name an existing user (for example \"nobody\")", name);
		return;
	}
	snprintf(p->conf->user, sizeof(p->conf->user), "%s", name);
	p->conf->uid = pw->pw_uid;
	p->conf->user_gid = pw->pw_gid;
}

static void
get_group(struct parse *p, const config_setting_t *s,
    const struct config_key *k, const char *name, gid_t *gid)
{
	struct group *gr;

	if (name[0] == '\0')
		return;
	if (strlen(name) >= 64 || (gr = getgrnam(name)) == NULL) {
		perr(p, s, "'%s' = \"%s\" is not a group on this host; create "
		    "it or name an existing group", k->name, name);
		return;
	}
	snprintf((char *)p->conf + k->offset, 64, "%s", name);
	*gid = gr->gr_gid;
}

/*
 * Workers change group only as part of dropping to 'user', so 'group'
 * alone is an error; without 'group' they take the user's own group.
 */
static void
check_user_group(struct parse *p, const config_setting_t *root)
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
	if (p->conf->user[0] != '\0' && p->conf->group[0] == '\0')
		p->conf->gid = p->conf->user_gid;
}

/* Store one scalar setting according to its key row. */
static void
parse_value(struct parse *p, const config_setting_t *s,
    const struct config_key *k, void *base)
{
	void *dst = (char *)base + k->offset;
	const char *str;
	int t = config_setting_type(s);
	enum log_level lvl;

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
	case KT_WORKERS:
		if (t == CONFIG_TYPE_STRING) {
			if (strcmp(config_setting_get_string(s), "auto") == 0)
				*(int *)dst = 0;
			else
				perr(p, s, "'workers' = \"%s\" is not valid; use "
				    "an integer from 1 to %d or \"auto\"",
				    config_setting_get_string(s), ESD_MAX_WORKERS);
			return;
		}
		if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
			perr(p, s, "'workers' must be an integer or \"auto\", "
			    "not %s", type_name(t));
			return;
		}
		get_int(p, s, k, dst);
		return;
	case KT_LEVEL:
		if (get_string(p, s, k, &str) == -1)
			return;
		if (log_parse_level(str, &lvl) == -1) {
			perr(p, s, "'log_level' = \"%s\" is not a level; use "
			    "\"error\", \"warn\", \"info\" or \"debug\"", str);
			return;
		}
		*(int *)dst = (int)lvl;
		return;
	case KT_NAME:
		if (get_string(p, s, k, &str) == -1)
			return;
		if (!valid_name(str)) {
			perr(p, s, "listener name \"%s\" is not valid; use 1 to "
			    "%d letters, digits, '_', '-' or '.'", str,
			    ESD_NAME_MAX - 1);
			return;
		}
		snprintf(dst, ESD_NAME_MAX, "%s", str);
		return;
	case KT_BIND: {
		struct listener_conf *lc = base;
		const char *why;
		if (get_string(p, s, k, &str) == -1)
			return;
		if (addr_parse_bind(str, &lc->addr, &lc->addrlen, &why) == -1) {
			perr(p, s, "bind address \"%s\" is not valid; %s", str,
			    why);
			return;
		}
		snprintf(lc->bind, sizeof(lc->bind), "%s", str);
		return;
	}
	case KT_SOCKETS:
		get_sockets(p, s, base);
		return;
	case KT_CIDRS:
		get_cidrs(p, s, k, dst);
		return;
	case KT_TLSVER:
		if (get_string(p, s, k, &str) == -1)
			return;
		if (strcmp(str, "1.2") != 0 && strcmp(str, "1.3") != 0) {
			perr(p, s, "'%s' = \"%s\" is not a version esockd "
			    "accepts; use \"1.2\" or \"1.3\"", k->name, str);
			return;
		}
		*(int *)dst = str[2] == '2' ? 12 : 13;
		return;
	case KT_PATH:
		if (get_string(p, s, k, &str) == -1)
			return;
		if (strlen(str) >= 108 || (str[0] != '\0' && str[0] != '/')) {
			perr(p, s, "'%s' = \"%s\" is not valid; use an absolute "
			    "path of at most 107 bytes, or \"\" for none",
			    k->name, str);
			return;
		}
		snprintf(dst, 108, "%s", str);
		return;
	case KT_USER:
		if (get_string(p, s, k, &str) == -1)
			return;
		get_user(p, s, str);
		return;
	case KT_UGROUP:
		if (get_string(p, s, k, &str) == -1)
			return;
		get_group(p, s, k, str,
		    k->offset == G(group) ? &p->conf->gid : &p->conf->control_gid);
		return;
	case KT_ADDR: {
		struct esd_config *c = base;
		const char *why;
		if (get_string(p, s, k, &str) == -1)
			return;
		if (str[0] != '\0' && (addr_parse_bind(str, &c->metrics_addr,
		    &c->metrics_addrlen, &why) == -1 ||
		    strlen(str) >= sizeof(c->metrics))) {
			perr(p, s, "'%s' = \"%s\" is not valid; use \"IP:PORT\", "
			    "for example \"127.0.0.1:9100\", or \"\" for none",
			    k->name, str);
			return;
		}
		snprintf(c->metrics, sizeof(c->metrics), "%s", str);
		return;
	}
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
		if (k->type == KT_INT || k->type == KT_BOOL ||
		    k->type == KT_LEVEL || k->type == KT_WORKERS ||
		    k->type == KT_TLSVER)
			*(int *)((char *)base + k->offset) = (int)k->def;
		/* Every string key's field is a char array of at least 64. */
		if (k->sdef != NULL)
			snprintf((char *)base + k->offset, 64, "%s", k->sdef);
	}
}

/* Walk a group's settings: known keys are stored, unknown ones reported. */
static void
parse_group(struct parse *p, const config_setting_t *g, enum config_scope scope,
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
check_required(struct parse *p, const config_setting_t *g,
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

/*
 * The TLS keys hang together: a key needs a certificate, and the line of
 * the certificate is kept for the errors of loading it (tls_ctx.c).
 */
static void
check_tls(struct parse *p, const config_setting_t *g,
    struct listener_conf *lc, const char *where)
{
	const config_setting_t *cert = config_setting_get_member(g,
	    "tls_certificate");
	const config_setting_t *key = config_setting_get_member(g, "tls_key");

	lc->tls_line = (int)config_setting_source_line(cert != NULL ? cert : g);
	if (lc->tls_certificate[0] == '\0' && key != NULL &&
	    lc->tls_key[0] != '\0')
		perr(p, key, "'tls_key' %s needs 'tls_certificate'; add "
		    "tls_certificate = \"/etc/esockd/cert.pem\"; or remove "
		    "'tls_key'", where);
}

static void
parse_listener(struct parse *p, const config_setting_t *g,
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
}

/* A group's member (for its line), or the group itself. */
static const config_setting_t *
member_or(const config_setting_t *g, const char *name)
{
	const config_setting_t *m = config_setting_get_member(g, name);

	return m != NULL ? m : g;
}

/* Names and binds must be unique across listeners. */
static void
check_unique(struct parse *p, const config_setting_t *list)
{
	struct esd_config *c = p->conf;

	for (size_t i = 0; i < c->nlisteners; i++) {
		const config_setting_t *gi =
		    config_setting_get_elem(list, (unsigned)i);
		for (size_t j = 0; j < i; j++) {
			struct listener_conf *a = &c->listeners[j];
			struct listener_conf *b = &c->listeners[i];
			if (a->name[0] && strcmp(a->name, b->name) == 0)
				perr(p, member_or(gi, "name"), "listener name '%s' is used twice "
				    "(first at line %d); give each listener its "
				    "own name", b->name, a->line);
			if (a->addrlen && b->addrlen &&
			    addr_equal((struct sockaddr *)&a->addr,
			    (struct sockaddr *)&b->addr))
				perr(p, member_or(gi, "bind"), "bind \"%s\" of listener '%s' is "
				    "already bound by listener '%s' (line %d); "
				    "use another address or port", b->bind,
				    b->name, a->name, a->line);
		}
	}
}

static void
parse_listeners(struct parse *p, const config_setting_t *list)
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

static void
parse_root(struct parse *p, config_t *cfg)
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
}

static struct esd_config *
load(config_t *cfg, int ok, const char *name, struct config_diag *diag)
{
	struct parse p = { name, diag, NULL };
	char line[1024];

	if (!ok) {
		if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
			snprintf(line, sizeof(line), "%s: cannot read the "
			    "file; check the path and its permissions", name);
		else
			snprintf(line, sizeof(line), "%s:%d: syntax error: %s",
			    config_error_file(cfg) ? config_error_file(cfg) :
			    name, config_error_line(cfg),
			    config_error_text(cfg));
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

/* Read and validate a file; NULL with every error in diag on failure. */
struct esd_config *
config_load_file(const char *path, struct config_diag *diag)
{
	struct esd_config *c;
	char dir[4096], *slash;
	config_t cfg;
	int ok;

	config_init(&cfg);
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		config_set_include_dir(&cfg, dir[0] ? dir : "/");
	}
	ok = config_read_file(&cfg, path);
	c = load(&cfg, ok, path, diag);
	config_destroy(&cfg);
	return c;
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
	}
	free(c->listeners);
	free(c->path);
	free(c);
}
