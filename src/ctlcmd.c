/*
 * ctlcmd.c: the control socket's commands: what each one does to the
 * master and how its reply reads, as text tables or JSON.
 *
 * control.c owns the socket and its connections and hands each command
 * line here; this file never touches a descriptor.  Which commands there
 * are and the words each takes is ctlproto.c's table, which esockdctl
 * reads too.  A reply is written whole into an evbuffer: a first line
 * "OK", "OK message" or "ERR what was wrong; what would be right", then
 * the body.  Commands that change the
 * daemon are logged with the client's uid and pid.
 */
#include "ctlcmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "master.h"
#include "stats.h"

#define CTL_WORDS_MAX	8	/* words in a command */
#define CTL_SHOW_MAX	64	/* bytes of a client's text quoted back */

typedef void (*ctl_fn)(struct master *, int, char **, struct evbuffer *);

static void	cmd_stats(struct master *, int, char **, struct evbuffer *);
static void	cmd_listeners(struct master *, int, char **, struct evbuffer *);
static void	cmd_set(struct master *, int, char **, struct evbuffer *);
static void	cmd_suspend(struct master *, int, char **, struct evbuffer *);
static void	cmd_resume(struct master *, int, char **, struct evbuffer *);
static void	cmd_reload(struct master *, int, char **, struct evbuffer *);
static void	cmd_help(struct master *, int, char **, struct evbuffer *);

/* What each command of ctlproto.c's table does here. */
static const ctl_fn handlers[CTLPROTO_NCMDS] = {
	[CTLPROTO_STATS] = cmd_stats,
	[CTLPROTO_LISTENERS] = cmd_listeners,
	[CTLPROTO_SET] = cmd_set,
	[CTLPROTO_SUSPEND] = cmd_suspend,
	[CTLPROTO_RESUME] = cmd_resume,
	[CTLPROTO_RELOAD] = cmd_reload,
	[CTLPROTO_HELP] = cmd_help,
};

/* Append "ERR message\n", the whole first line of a refusal. */
void
ctlcmd_err(struct evbuffer *out, const char *fmt, ...)
{
	va_list ap;

	evbuffer_add(out, "ERR ", 4);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\n", 1);
}

/* A client's text made safe to quote: printable ASCII, length capped. */
static const char *
show(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < len && i < CTL_SHOW_MAX; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	if (s[i] != '\0' && i >= 3)
		memcpy(buf + i - 3, "...", 3);
	return buf;
}

/* "a, b, c": the listener names, for an ERR about an unknown one. */
static void
names(const struct esd_config *conf, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < conf->nlisteners && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    i ? ", " : "", conf->listeners[i].name);
}

/* The current listener called name, or NULL after an ERR in out. */
static const struct listener_conf *
find_listener(struct master *m, const char *name, struct evbuffer *out)
{
	const struct esd_config *conf = master_config(m);
	const struct listener *l = master_find_listener(m, name);
	char shown[CTL_SHOW_MAX + 1], list[1024];

	if (l != NULL && l->si >= 0 && l->si < ESD_MAX_LISTENERS)
		return l->conf;
	names(conf, list, sizeof(list));
	ctlcmd_err(out, "no listener '%s'; the listeners are: %s",
	    show(name, shown, sizeof(shown)), list);
	return NULL;
}

static const char *
state_name(const struct stats_listener *l)
{
	return l->draining ? "draining" : l->suspended ? "suspended" :
	    "accepting";
}

static void
iso_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t == 0 || gmtime_r(&t, &tm) == NULL)
		snprintf(buf, len, "never");
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * A text table: a heading and one row per listener, columns padded to
 * their widest cell, numbers right-aligned, and a last column of text
 * left as it is (it may be long: backend paths).
 */
#define TABLE_COLS	24

struct table {
	size_t		 ncols, nrows;	/* nrows counts the heading */
	const char	*align;		/* 'l' or 'r' per column */
	char		**cell;		/* row-major; a NULL cell prints "?" */
};

static int
table_init(struct table *t, size_t ncols, size_t nrows, const char *align,
    const char *const *head)
{
	if (ncols > TABLE_COLS)
		return -1;
	t->ncols = ncols;
	t->nrows = nrows + 1;
	t->align = align;
	if ((t->cell = calloc(t->nrows * ncols, sizeof(char *))) == NULL)
		return -1;
	for (size_t i = 0; i < ncols; i++)
		t->cell[i] = strdup(head[i]);
	return 0;
}

/* Set a cell of row (1 = the first under the heading); made printable. */
__attribute__((format(printf, 4, 5)))
static void
table_set(struct table *t, size_t row, size_t col, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		s = NULL;
	va_end(ap);
	for (char *p = s; p != NULL && *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	t->cell[row * t->ncols + col] = s;
}

static void
table_print(struct table *t, struct evbuffer *out)
{
	size_t w[TABLE_COLS] = { 0 };

	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cell[r * t->ncols + c];
			size_t n = s ? strlen(s) : 1;
			if (n > w[c])
				w[c] = n;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cell[r * t->ncols + c];
			int last = c + 1 == t->ncols;
			if (s == NULL)
				s = "?";
			if (t->align[c] == 'r')
				evbuffer_add_printf(out, "%*s%s", (int)w[c], s,
				    last ? "" : "  ");
			else if (last)
				evbuffer_add_printf(out, "%s", s);
			else
				evbuffer_add_printf(out, "%-*s  ", (int)w[c], s);
		}
		evbuffer_add(out, "\n", 1);
	}
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cell[i]);
	free(t->cell);
}

/* The tables the counters are shown in, each within TABLE_COLS. */
enum ctable { CT_MAIN, CT_CLOSED, CT_TLS_DONE, CT_TLS_FAILED,
	CT_PROXY_FAILED };

static enum ctable
ctable_of(const struct stats_field *sf)
{
	if (sf->closed != NULL)
		return CT_CLOSED;
	if (stats_is_proxy(sf))
		return CT_PROXY_FAILED;
	if (stats_is_tls(sf))
		return stats_tls_reason(sf) != NULL ? CT_TLS_FAILED :
		    CT_TLS_DONE;
	return CT_MAIN;
}

/*
 * One row per listener: the first columns (NAME, and the ncols_pre given
 * by pre), then every counter of stats_fields that belongs in table
 * want.  -1 when out of memory.
 */
static int
counters_table(const struct stats *s, struct evbuffer *out, enum ctable want,
    const char *const *pre, size_t npre)
{
	const char *head[TABLE_COLS];
	char align[TABLE_COLS + 1];
	enum shm_counter sc[TABLE_COLS];
	size_t ncols = 0;
	struct table t;

	for (size_t i = 0; i < npre; i++) {
		head[ncols] = pre[i];
		align[ncols++] = i < 3 ? 'l' : 'r';
	}
	for (size_t f = 0; f < STATS_NFIELDS && ncols < TABLE_COLS; f++) {
		if (ctable_of(&stats_fields[f]) != want)
			continue;
		sc[ncols] = stats_fields[f].sc;
		head[ncols] = stats_fields[f].column;
		align[ncols++] = 'r';
	}
	align[ncols] = '\0';
	if (table_init(&t, ncols, s->n, align, head) == -1)
		return -1;
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];
		size_t r = i + 1;

		table_set(&t, r, 0, "%s", l->lc->name);
		if (npre > 1) {
			table_set(&t, r, 1, "%s", l->bind);
			table_set(&t, r, 2, "%s", state_name(l));
			table_set(&t, r, 3, "%lld", (long long)l->t.cur);
			table_set(&t, r, 4, "%d", l->max_connections);
		}
		for (size_t c = npre; c < ncols; c++)
			table_set(&t, r, c, "%llu",
			    (unsigned long long)l->t.n[sc[c]]);
	}
	table_print(&t, out);
	return 0;
}

/* A count that may not be known (-1) as text: the number, or "-". */
static void
table_count(struct table *t, size_t row, size_t col, long long v)
{
	if (v < 0)
		table_set(t, row, col, "-");
	else
		table_set(t, row, col, "%lld", v);
}

/*
 * Each listener's accept queue now and the most it holds, and its share
 * of the top-level max_connections that no other listener may take.
 */
static int
queues_table(const struct stats *s, struct evbuffer *out)
{
	static const char *const head[] = { "NAME", "QUEUE", "QUEUE_MAX",
	    "RESERVED" };
	struct table t;

	if (table_init(&t, 4, s->n, "lrrr", head) == -1)
		return -1;
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];

		table_set(&t, i + 1, 0, "%s", l->lc->name);
		table_count(&t, i + 1, 1, l->queue);
		table_count(&t, i + 1, 2, l->queue_max);
		table_set(&t, i + 1, 3, "%d", l->reserved);
	}
	table_print(&t, out);
	return 0;
}

/*
 * One row per backend socket of every listener: its state, its open
 * connections, connects, failures by reason, ejections and returns.
 */
static int
backends_table(const struct stats *s, struct evbuffer *out)
{
	static const char *const head[] = { "NAME", "STATE", "OPEN",
	    "CONNECTS", "REFUSED", "MISSING", "TIMEOUT", "EJECTIONS",
	    "RETURNS", "SOCKET" };
	size_t rows = 0, r = 0;
	struct table t;

	_Static_assert(BF_COUNT == 3, "a column per failure reason");
	for (size_t i = 0; i < s->n; i++)
		rows += s->l[i].nbackends;
	if (table_init(&t, 10, rows, "llrrrrrrrl", head) == -1)
		return -1;
	for (size_t i = 0; i < s->n; i++)
		for (size_t k = 0; k < s->l[i].nbackends; k++) {
			const struct stats_backend *b = &s->l[i].b[k];

			r++;
			table_set(&t, r, 0, "%s", s->l[i].lc->name);
			table_set(&t, r, 1, "%s", stats_backend_state(b));
			table_set(&t, r, 2, "%lld", (long long)b->open);
			table_set(&t, r, 3, "%llu",
			    (unsigned long long)b->connects);
			for (int f = 0; f < BF_COUNT; f++)
				table_set(&t, r, 4 + (size_t)f, "%llu",
				    (unsigned long long)b->failures[f]);
			table_set(&t, r, 7, "%llu",
			    (unsigned long long)b->ejections);
			table_set(&t, r, 8, "%llu",
			    (unsigned long long)b->returns);
			table_set(&t, r, 9, "%s", b->socket);
		}
	table_print(&t, out);
	return 0;
}

/*
 * "5 open of max_connections 10 (4 reserved, 7 committed)": the open
 * connections of every listener, and the top-level limit if there is one.
 */
static void
global_text(const struct stats *s, char *buf, size_t len)
{
	const struct shm_global *g = &s->global;

	if (g->max_connections == 0)
		snprintf(buf, len, "%lld open (no top-level max_connections)",
		    (long long)g->connections);
	else
		snprintf(buf, len, "%lld open of max_connections %d (%lld "
		    "reserved, %lld committed)", (long long)g->connections,
		    g->max_connections, (long long)g->reserved,
		    (long long)g->committed);
}

/* "N overflows, M drops": the machine's listen queues, or "unknown". */
static void
netstat_text(const struct stats *s, char *buf, size_t len)
{
	if (!s->netstat_ok)
		snprintf(buf, len, "unknown (/proc/net/netstat unreadable)");
	else
		snprintf(buf, len, "%llu overflows, %llu drops (this machine, "
		    "since boot)", (unsigned long long)s->netstat.overflows,
		    (unsigned long long)s->netstat.drops);
}

/*
 * "stats": the master's status, then one row of counters per listener,
 * then one row of close reasons per listener, then its TLS handshakes
 * and their failures, then its refused PROXY headers, then its accept
 * queue.
 */
static void
stats_text(const struct stats *s, struct evbuffer *out)
{
	static const char *const pre[] = { "NAME", "BIND", "STATE", "CONNS",
	    "MAX" }, *const name[] = { "NAME" };
	char started[32], last[32], ctl[ENDPOINT_KV_MAX], met[ENDPOINT_KV_MAX];
	char queues[96], conns[128];

	netstat_text(s, queues, sizeof(queues));
	global_text(s, conns, sizeof(conns));
	iso_time(s->st.started, started, sizeof(started));
	iso_time(s->st.last_reload, last, sizeof(last));
	stats_endpoint_kv(&s->st.control, s->st.control_on, ctl, sizeof(ctl));
	stats_endpoint_kv(&s->st.metrics, s->st.metrics_on, met, sizeof(met));
	evbuffer_add_printf(out, "OK\n"
	    "generation: %u\n"
	    "workers: %d running (%d in this generation, %d draining), "
	    "%llu restarted\n"
	    "reloads: %llu ok, %llu failed; last: %s%s%s%s\n"
	    "started: %s (up %lld s)\n"
	    "connections: %s\n"
	    "control socket: %s\n"
	    "metrics: %s\n"
	    "listen queues: %s\n\n", s->st.generation, s->st.running,
	    s->st.workers, s->st.draining,
	    (unsigned long long)s->st.worker_restarts,
	    (unsigned long long)s->st.reloads,
	    (unsigned long long)s->st.reload_failures, last,
	    s->st.last_reload == 0 ? "" : s->st.last_reload_ok ? " ok" :
	    " failed", !s->st.last_reload_ok && s->st.last_error[0] ? ": " : "",
	    !s->st.last_reload_ok ? s->st.last_error : "", started,
	    (long long)(time(NULL) - s->st.started), conns, ctl, met, queues);
	if (counters_table(s, out, CT_MAIN, pre, 5) == -1)
		goto nomem;
	evbuffer_add_printf(out, "\nclosed, by reason:\n");
	if (counters_table(s, out, CT_CLOSED, name, 1) == -1)
		goto nomem;
	evbuffer_add_printf(out, "\nTLS handshakes, by version:\n");
	if (counters_table(s, out, CT_TLS_DONE, name, 1) == -1)
		goto nomem;
	evbuffer_add_printf(out, "\nTLS handshake failures, by reason:\n");
	if (counters_table(s, out, CT_TLS_FAILED, name, 1) == -1)
		goto nomem;
	evbuffer_add_printf(out, "\nPROXY headers refused, by reason:\n");
	if (counters_table(s, out, CT_PROXY_FAILED, name, 1) == -1)
		goto nomem;
	evbuffer_add_printf(out, "\naccept queues and reservations:\n");
	if (queues_table(s, out) == -1)
		goto nomem;
	evbuffer_add_printf(out, "\nbackend sockets:\n");
	if (backends_table(s, out) == -1)
		goto nomem;
	return;
nomem:
	evbuffer_add_printf(out, "(out of memory for the table; try again)\n");
}

/* "name":{"enabled":true,"accepted":3,...}: one operator endpoint. */
static void
endpoint_json(struct evbuffer *out, const char *name,
    const struct oneshot_counters *n, int on)
{
	evbuffer_add_printf(out, "\"%s\":{\"enabled\":%s", name,
	    on ? "true" : "false");
	for (int i = 0; i < ONESHOT_NCOUNTERS; i++)
		evbuffer_add_printf(out, ",\"%s\":%llu",
		    oneshot_counter_names[i],
		    (unsigned long long)n->n[i]);
	evbuffer_add(out, "}", 1);
}

/*
 * A listener's counters as JSON members, the refusals grouped in
 * "refused":{...}, the close reasons in "closed_by":{...} and the TLS
 * handshakes and failures in "tls":{...} (each group
 * is contiguous in stats_fields).
 */
static void
counters_json(struct evbuffer *out, const struct shm_totals *t)
{
	const char *open = NULL;	/* the group being written, if any */

	for (size_t f = 0; f < STATS_NFIELDS; f++) {
		const struct stats_field *sf = &stats_fields[f];
		const char *group = sf->refused != NULL ? "refused" :
		    sf->closed != NULL ? "closed_by" : stats_is_tls(sf) ?
		    "tls" : NULL;
		const char *member = sf->refused != NULL ? sf->refused :
		    sf->closed != NULL ? sf->closed : sf->key;
		int first = 0;

		if (group != open) {
			if (open != NULL)
				evbuffer_add(out, "}", 1);
			if (group != NULL)
				evbuffer_add_printf(out, ",\"%s\":{", group);
			open = group;
			first = group != NULL;
		}
		evbuffer_add_printf(out, "%s\"%s\":%llu", first ? "" : ",",
		    member, (unsigned long long)t->n[sf->sc]);
	}
	if (open != NULL)
		evbuffer_add(out, "}", 1);
}

/* ,"backends":[{...},...]: a listener's backend sockets. */
static void
backends_json(struct evbuffer *out, const struct stats_listener *l)
{
	evbuffer_add_printf(out, ",\"backends\":[");
	for (size_t k = 0; k < l->nbackends; k++) {
		const struct stats_backend *b = &l->b[k];

		evbuffer_add_printf(out, "%s{\"socket\":", k ? "," : "");
		stats_json_string(out, b->socket);
		evbuffer_add_printf(out, ",\"state\":\"%s\",\"open\":%lld,"
		    "\"connects\":%llu,\"failures\":{", stats_backend_state(b),
		    (long long)b->open,
		    (unsigned long long)b->connects);
		for (int f = 0; f < BF_COUNT; f++)
			evbuffer_add_printf(out, "%s\"%s\":%llu", f ? "," : "",
			    stats_backend_failures[f],
			    (unsigned long long)b->failures[f]);
		evbuffer_add_printf(out, "},\"ejections\":%llu,\"returns\":%llu,"
		    "\"connect_us\":%llu}", (unsigned long long)b->ejections,
		    (unsigned long long)b->returns,
		    (unsigned long long)b->connect_us);
	}
	evbuffer_add(out, "]", 1);
}

/* ,"key":v, or ,"key":null when v is not known (-1). */
static void
json_count(struct evbuffer *out, const char *key, long long v)
{
	if (v < 0)
		evbuffer_add_printf(out, ",\"%s\":null", key);
	else
		evbuffer_add_printf(out, ",\"%s\":%lld", key, v);
}

/* "stats json": the same numbers as one JSON object on one line. */
static void
stats_json(const struct stats *s, struct evbuffer *out)
{
	evbuffer_add_printf(out, "OK\n{\"generation\":%u,\"workers\":%d,"
	    "\"workers_running\":%d,\"workers_draining\":%d,"
	    "\"worker_restarts\":%llu,\"reloads\":%llu,\"reload_failures\":%llu,"
	    "\"last_reload_ok\":%s,\"last_reload\":%lld,\"last_error\":",
	    s->st.generation, s->st.workers, s->st.running, s->st.draining,
	    (unsigned long long)s->st.worker_restarts,
	    (unsigned long long)s->st.reloads,
	    (unsigned long long)s->st.reload_failures,
	    s->st.last_reload_ok ? "true" : "false",
	    (long long)s->st.last_reload);
	stats_json_string(out, s->st.last_error);
	evbuffer_add_printf(out, ",\"started\":%lld", (long long)s->st.started);
	json_count(out, "listen_overflows", s->netstat_ok ?
	    (long long)s->netstat.overflows : -1);
	json_count(out, "listen_drops", s->netstat_ok ?
	    (long long)s->netstat.drops : -1);
	evbuffer_add_printf(out, ",\"global\":{\"max_connections\":%d,"
	    "\"connections\":%lld,\"reserved\":%lld,\"committed\":%lld}",
	    s->global.max_connections, (long long)s->global.connections,
	    (long long)s->global.reserved, (long long)s->global.committed);
	evbuffer_add_printf(out, ",\"endpoints\":{");
	endpoint_json(out, "control", &s->st.control, s->st.control_on);
	evbuffer_add(out, ",", 1);
	endpoint_json(out, "metrics", &s->st.metrics, s->st.metrics_on);
	evbuffer_add_printf(out, "},\"listeners\":[");
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];

		evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
		stats_json_string(out, l->lc->name);
		evbuffer_add_printf(out, ",\"bind\":");
		stats_json_string(out, l->bind);
		evbuffer_add_printf(out, ",\"state\":\"%s\",\"suspended\":%s,"
		    "\"connections\":%lld,\"max_connections\":%d", state_name(l),
		    l->suspended ? "true" : "false", (long long)l->t.cur,
		    l->max_connections);
		evbuffer_add_printf(out, ",\"reserved_connections\":%d",
		    l->reserved);
		json_count(out, "accept_queue", l->queue);
		json_count(out, "accept_queue_max", l->queue_max);
		counters_json(out, &l->t);
		backends_json(out, l);
		evbuffer_add(out, "}", 1);
	}
	evbuffer_add_printf(out, "]}\n");
}

/* "json" or nothing after a command; anything else is an ERR. */
static int
want_json(int argc, char **argv, struct evbuffer *out)
{
	char shown[CTL_SHOW_MAX + 1];

	if (argc < 2)
		return 0;
	if (strcmp(argv[1], "json") == 0)
		return 1;
	ctlcmd_err(out, "'%s' takes 'json' or nothing, not '%s'; for example: %s json",
	    argv[0], show(argv[1], shown, sizeof(shown)), argv[0]);
	return -1;
}

typedef void (*render_fn)(const struct stats *, struct evbuffer *);

/* Snapshot the counters and render them as text or, asked, as JSON. */
static void
render(struct master *m, int argc, char **argv, struct evbuffer *out,
    render_fn text, render_fn json)
{
	struct stats *s;
	int want = want_json(argc, argv, out);

	if (want == -1)
		return;
	if ((s = malloc(sizeof(*s))) == NULL) {
		ctlcmd_err(out, "out of memory; try again");
		return;
	}
	master_stats(m, s);
	(want ? json : text)(s, out);
	free(s);
}

static void
cmd_stats(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	render(m, argc, argv, out, stats_text, stats_json);
}

/* A listener's backend paths separated by spaces (caller frees). */
static char *
join_sockets(const struct backend_conf *b)
{
	size_t len = 1;
	char *s;

	for (size_t j = 0; j < b->nsockets; j++)
		len += strlen(b->sockets[j]) + 1;
	if ((s = malloc(len)) == NULL)
		return NULL;
	s[0] = '\0';
	for (size_t j = 0; j < b->nsockets; j++) {
		if (j)
			strcat(s, " ");
		strcat(s, b->sockets[j]);
	}
	return s;
}

static void
listeners_text(const struct stats *s, struct evbuffer *out)
{
	static const char *const head[] = { "NAME", "BIND", "STATE", "MAX",
	    "BACKENDS" };
	struct table t;

	if (table_init(&t, 5, s->n, "lllrl", head) == -1) {
		ctlcmd_err(out, "out of memory; try again");
		return;
	}
	evbuffer_add(out, "OK\n", 3);
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];
		char *sockets = join_sockets(&l->lc->backend);

		table_set(&t, i + 1, 0, "%s", l->lc->name);
		table_set(&t, i + 1, 1, "%s", l->bind);
		table_set(&t, i + 1, 2, "%s", state_name(l));
		table_set(&t, i + 1, 3, "%d", l->max_connections);
		table_set(&t, i + 1, 4, "%s", sockets ? sockets : "?");
		free(sockets);
	}
	table_print(&t, out);
}

static void
listeners_json(const struct stats *s, struct evbuffer *out)
{
	evbuffer_add_printf(out, "OK\n{\"listeners\":[");
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];
		const struct backend_conf *b = &l->lc->backend;

		evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
		stats_json_string(out, l->lc->name);
		evbuffer_add_printf(out, ",\"bind\":");
		stats_json_string(out, l->bind);
		evbuffer_add_printf(out, ",\"state\":\"%s\",\"suspended\":%s,"
		    "\"max_connections\":%d,\"backends\":[", state_name(l),
		    l->suspended ? "true" : "false", l->max_connections);
		for (size_t j = 0; j < b->nsockets; j++) {
			if (j)
				evbuffer_add(out, ",", 1);
			stats_json_string(out, b->sockets[j]);
		}
		evbuffer_add_printf(out, "]}");
	}
	evbuffer_add_printf(out, "]}\n");
}

static void
cmd_listeners(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	render(m, argc, argv, out, listeners_text, listeners_json);
}

/* The bounds of max_connections, from the key table like the parser's. */
static const struct config_key *
max_connections_key(void)
{
	size_t n;
	const struct config_key *k = config_keys(&n);

	for (size_t i = 0; i < n; i++)
		if (k[i].scope == SCOPE_LISTENER &&
		    strcmp(k[i].name, "max_connections") == 0)
			return &k[i];
	return NULL;
}

/* "set max_connections NAME N": takes effect at the next admission. */
static void
cmd_set(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	const struct config_key *k = max_connections_key();
	const struct listener_conf *lc;
	char shown[CTL_SHOW_MAX + 1], *end;
	long long v;
	int old;

	(void)argc;
	if (k == NULL || strcmp(argv[1], k->name) != 0) {
		ctlcmd_err(out, "'%s' cannot be set; only max_connections can be "
		    "changed at run time: set max_connections NAME N",
		    show(argv[1], shown, sizeof(shown)));
		return;
	}
	if ((lc = find_listener(m, argv[2], out)) == NULL)
		return;
	errno = 0;
	v = strtoll(argv[3], &end, 10);
	if (argv[3][0] < '0' || argv[3][0] > '9' || *end != '\0' ||
	    errno != 0 || v < k->min || v > k->max) {
		ctlcmd_err(out, "max_connections '%s' is not valid; use an integer "
		    "from %lld to %lld", show(argv[3], shown, sizeof(shown)),
		    k->min, k->max);
		return;
	}
	if (master_set_limit(m, lc->name, (int)v, &old) == -1) {
		ctlcmd_err(out, "listener '%s' is not in shared memory; try again "
		    "after the reload in progress", lc->name);
		return;
	}
	evbuffer_add_printf(out, "OK %s: max_connections %lld (was %d)\n",
	    lc->name, v, old);
}

static void
suspend(struct master *m, const char *name, int on, struct evbuffer *out)
{
	const struct listener_conf *lc = find_listener(m, name, out);

	if (lc == NULL)
		return;
	if (master_suspend(m, lc->name, on) == -1) {
		ctlcmd_err(out, "listener '%s' is not in shared memory; try again "
		    "after the reload in progress", lc->name);
		return;
	}
	evbuffer_add_printf(out, "OK %s: %s\n", lc->name,
	    on ? "suspended" : "accepting");
}

static void
cmd_suspend(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	(void)argc;
	suspend(m, argv[1], 1, out);
}

static void
cmd_resume(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	(void)argc;
	suspend(m, argv[1], 0, out);
}

static void
cmd_reload(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	struct config_diag diag = { NULL, 0 };
	struct master_status st;

	(void)argc;
	(void)argv;
	if (master_reload(m, &diag) == 0) {
		master_status(m, &st);
		evbuffer_add_printf(out, "OK reloaded: generation %u\n",
		    st.generation);
	} else {
		ctlcmd_err(out, "reload failed; still serving the previous "
		    "configuration");
		for (size_t i = 0; i < diag.n; i++)
			evbuffer_add_printf(out, "%s\n", diag.lines[i]);
		if (diag.n == 0) {
			master_status(m, &st);
			if (st.last_error[0] != '\0')
				evbuffer_add_printf(out, "%s\n", st.last_error);
		}
	}
	config_diag_free(&diag);
}

static void
cmd_help(struct master *m, int argc, char **argv, struct evbuffer *out)
{
	(void)m;
	(void)argc;
	(void)argv;
	evbuffer_add(out, "OK\n", 3);
	for (int i = 0; i < CTLPROTO_NCMDS; i++)
		evbuffer_add_printf(out, "%-28s %s\n", ctlproto_cmds[i].usage,
		    ctlproto_cmds[i].help);
}

/* Split a line into words at spaces and tabs; -1 if there are too many. */
static int
split(char *line, char **argv)
{
	char *save = NULL;
	int argc = 0;

	for (char *p = strtok_r(line, " \t", &save); p != NULL;
	    p = strtok_r(NULL, " \t", &save)) {
		if (argc == CTL_WORDS_MAX)
			return -1;
		argv[argc++] = p;
	}
	return argc;
}

/*
 * Run one command line (n bytes without its newline, NUL-terminated) and
 * append the whole reply to out.  uid and pid name the client in the log.
 */
void
ctlcmd_run(struct master *m, char *line, size_t n, long uid, long pid,
    struct evbuffer *out)
{
	char *argv[CTL_WORDS_MAX], shown[CTL_SHOW_MAX + 1];
	const struct ctlproto_cmd *cmd;
	int argc;

	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (n > CTL_LINE_MAX) {
		ctlcmd_too_long(out);
		return;
	}
	if (memchr(line, '\0', n) != NULL) {
		ctlcmd_err(out, "the command holds a NUL byte; send one line of text");
		return;
	}
	if ((argc = split(line, argv)) == -1) {
		ctlcmd_err(out, "more than %d words; send one command, see 'help'",
		    CTL_WORDS_MAX);
		return;
	}
	if (argc == 0) {
		ctlcmd_err(out, "empty command; send 'help' for the list of commands");
		return;
	}
	if ((cmd = ctlproto_find(argv[0])) == NULL) {
		ctlcmd_err(out, "unknown command '%s'; send 'help' for the list "
		    "of commands", show(argv[0], shown, sizeof(shown)));
		return;
	}
	/* A command that takes "json" takes one more word (want_json). */
	if (argc - 1 < cmd->min || argc - 1 > cmd->max + cmd->json) {
		ctlcmd_err(out, "wrong number of words for '%s'; usage: %s",
		    cmd->name, cmd->usage);
		return;
	}
	if (cmd->changes)
		log_info("control socket: '%s' from uid %ld pid %ld",
		    cmd->name, uid, pid);
	handlers[cmd - ctlproto_cmds](m, argc, argv, out);
}

/* The reply to a line that is over CTL_LINE_MAX bytes. */
void
ctlcmd_too_long(struct evbuffer *out)
{
	ctlcmd_err(out, "command longer than %d bytes; send one command of at "
	    "most %d bytes ending in a newline", CTL_LINE_MAX, CTL_LINE_MAX);
}
