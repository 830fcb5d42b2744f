/*
 * control.c: the master's control socket, the daemon side of esockdctl(8).
 *
 * Operator traffic only, on the master's event loop: one command per
 * connection.  The client sends one line; the reply's first line is "OK"
 * (perhaps with a short message) or "ERR what was wrong; what would be
 * right", then a body; then the connection closes.
 *
 * A broken or hostile client costs bounded memory and time: a command is
 * at most CTL_LINE_MAX bytes; it must arrive whole within CTL_TIMEOUT_S
 * seconds of the connect, and the reply be taken within as long again
 * (deadlines, not idle timers, so a trickle cannot stretch them); and at
 * most CTL_MAX_CONNS connections are open at once.  At that cap a new connection pushes out
 * the oldest one that has not sent its command yet, so a pile of idle
 * connections cannot lock the operator out; the pushed-out are counted and
 * logged at most once a second.
 *
 * The socket is bound under umask 0177, so it is never wider than 0600;
 * with control_group it is then given that group and mode 0660.  A stale
 * socket left by a dead daemon is replaced; a live one, or anything that
 * is not a socket, makes startup fail.  Only the socket this daemon made
 * is unlinked at exit.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "log.h"
#include "master.h"
#include "stats.h"

#define CTL_LINE_MAX	1024	/* bytes in a command, without its newline */
#define CTL_TIMEOUT_S	5	/* to send the command, then to take the reply */
#define CTL_MAX_CONNS	32	/* control connections open at once */
#define CTL_BACKLOG	CTL_MAX_CONNS	/* a burst up to the cap waits */
#define CTL_WORDS_MAX	8	/* words in a command */
#define CTL_SHOW_MAX	64	/* bytes of a client's text quoted back */

struct ctl_conn {
	struct control		*c;
	struct bufferevent	*bev;
	struct event		*deadline;	/* for the command, then the reply */
	TAILQ_ENTRY(ctl_conn)	 entry;
	int			 replied;	/* reply queued: reading is over */
	long			 uid, pid;	/* the peer, for the log; -1 unknown */
};

struct control {
	struct event_base	*base;
	struct master		*m;
	struct evconnlistener	*lev;
	struct event		*resume;	/* accept again after EMFILE */
	char			 path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int			 made;		/* we bound path: unlink at exit */
	dev_t			 dev;		/* ...if it is still our file */
	ino_t			 ino;
	TAILQ_HEAD(, ctl_conn)	 conns;		/* oldest first */
	int			 nconns;
	uint64_t		 shed;		/* pushed out at CTL_MAX_CONNS */
	struct log_ratelimit	 rl_shed;
	struct log_ratelimit	 rl_accept;
};

struct ctl_cmd {
	const char	*name;
	int		 min, max;	/* words after the name */
	int		 changes;	/* changes the daemon: log who asked */
	void		(*fn)(struct ctl_conn *, int, char **, struct evbuffer *);
	const char	*usage;
	const char	*help;
};

static void	cmd_stats(struct ctl_conn *, int, char **, struct evbuffer *);
static void	cmd_listeners(struct ctl_conn *, int, char **, struct evbuffer *);
static void	cmd_set(struct ctl_conn *, int, char **, struct evbuffer *);
static void	cmd_suspend(struct ctl_conn *, int, char **, struct evbuffer *);
static void	cmd_resume(struct ctl_conn *, int, char **, struct evbuffer *);
static void	cmd_reload(struct ctl_conn *, int, char **, struct evbuffer *);
static void	cmd_help(struct ctl_conn *, int, char **, struct evbuffer *);

static const struct ctl_cmd cmds[] = {
	{ "stats", 0, 1, 0, cmd_stats, "stats [json]",
	  "the master's status and each listener's counters" },
	{ "listeners", 0, 1, 0, cmd_listeners, "listeners [json]",
	  "each listener's address, backends, limit and state" },
	{ "set", 3, 3, 1, cmd_set, "set max_connections NAME N",
	  "change a listener's limit now, in every worker" },
	{ "suspend", 1, 1, 1, cmd_suspend, "suspend NAME",
	  "stop accepting on a listener; open connections carry on" },
	{ "resume", 1, 1, 1, cmd_resume, "resume NAME",
	  "accept on a suspended listener again" },
	{ "reload", 0, 0, 1, cmd_reload, "reload",
	  "read the configuration file again and apply it" },
	{ "help", 0, 0, 0, cmd_help, "help", "this list" },
};

/* Append "ERR message\n", the whole first line of a refusal. */
__attribute__((format(printf, 2, 3)))
static void
err(struct evbuffer *out, const char *fmt, ...)
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
find_listener(struct ctl_conn *cc, const char *name, struct evbuffer *out)
{
	const struct esd_config *conf = master_config(cc->c->m);
	const struct listener_conf *lc = stats_find(conf, name);
	char shown[CTL_SHOW_MAX + 1], list[1024];

	if (lc != NULL && lc->si >= 0 && lc->si < ESD_MAX_LISTENERS)
		return lc;
	names(conf, list, sizeof(list));
	err(out, "no listener '%s'; the listeners are: %s",
	    show(name, shown, sizeof(shown)), list);
	return NULL;
}

static const char *
state_name(const struct stats_listener *l)
{
	return l->suspended ? "suspended" : "accepting";
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
#define TABLE_COLS	12

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

/* "stats": the master's status, then one row of counters per listener. */
static void
stats_text(const struct stats *s, struct evbuffer *out)
{
	static const char *const head[] = { "NAME", "BIND", "STATE", "CONNS",
	    "MAX", "ACCEPTED", "CLOSED", "REFUSED_LIMIT", "REFUSED_BACKEND",
	    "ACCEPT_ERRORS", "BYTES_IN", "BYTES_OUT" };
	struct table t;
	char started[32], last[32];

	if (table_init(&t, 12, s->n, "lllrrrrrrrrr", head) == -1) {
		err(out, "out of memory; try again");
		return;
	}
	iso_time(s->st.started, started, sizeof(started));
	iso_time(s->st.last_reload, last, sizeof(last));
	evbuffer_add_printf(out, "OK\n"
	    "generation: %u\n"
	    "workers: %d running (%d in this generation, %d draining), "
	    "%llu restarted\n"
	    "reloads: %llu ok, %llu failed; last: %s%s%s%s\n"
	    "started: %s (up %lld s)\n\n", s->st.generation, s->st.running,
	    s->st.workers, s->st.draining,
	    (unsigned long long)s->st.worker_restarts,
	    (unsigned long long)s->st.reloads,
	    (unsigned long long)s->st.reload_failures, last,
	    s->st.last_reload == 0 ? "" : s->st.last_reload_ok ? " ok" :
	    " failed", !s->st.last_reload_ok && s->st.last_error[0] ? ": " : "",
	    !s->st.last_reload_ok ? s->st.last_error : "", started,
	    (long long)(time(NULL) - s->st.started));
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];
		size_t r = i + 1;

		table_set(&t, r, 0, "%s", l->lc->name);
		table_set(&t, r, 1, "%s", l->lc->bind);
		table_set(&t, r, 2, "%s", state_name(l));
		table_set(&t, r, 3, "%lld", (long long)l->t.cur);
		table_set(&t, r, 4, "%d", l->max_connections);
		table_set(&t, r, 5, "%llu", (unsigned long long)l->t.accepted);
		table_set(&t, r, 6, "%llu", (unsigned long long)l->t.closed);
		table_set(&t, r, 7, "%llu",
		    (unsigned long long)l->t.rejected_limit);
		table_set(&t, r, 8, "%llu",
		    (unsigned long long)l->t.backend_failures);
		table_set(&t, r, 9, "%llu",
		    (unsigned long long)l->t.accept_errors);
		table_set(&t, r, 10, "%llu", (unsigned long long)l->t.bytes_in);
		table_set(&t, r, 11, "%llu", (unsigned long long)l->t.bytes_out);
	}
	table_print(&t, out);
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
	evbuffer_add_printf(out, ",\"started\":%lld,\"listeners\":[",
	    (long long)s->st.started);
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];

		evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
		stats_json_string(out, l->lc->name);
		evbuffer_add_printf(out, ",\"bind\":");
		stats_json_string(out, l->lc->bind);
		evbuffer_add_printf(out, ",\"state\":\"%s\",\"suspended\":%s,"
		    "\"connections\":%lld,\"max_connections\":%d,"
		    "\"accepted\":%llu,\"closed\":%llu,\"refused\":{\"limit\":%llu,"
		    "\"backend_unavailable\":%llu},\"accept_errors\":%llu,"
		    "\"bytes_in\":%llu,\"bytes_out\":%llu}", state_name(l),
		    l->suspended ? "true" : "false", (long long)l->t.cur,
		    l->max_connections, (unsigned long long)l->t.accepted,
		    (unsigned long long)l->t.closed,
		    (unsigned long long)l->t.rejected_limit,
		    (unsigned long long)l->t.backend_failures,
		    (unsigned long long)l->t.accept_errors,
		    (unsigned long long)l->t.bytes_in,
		    (unsigned long long)l->t.bytes_out);
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
	err(out, "'%s' takes 'json' or nothing, not '%s'; for example: %s json",
	    argv[0], show(argv[1], shown, sizeof(shown)), argv[0]);
	return -1;
}

static void
cmd_stats(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	struct stats *s;
	int json = want_json(argc, argv, out);

	if (json == -1)
		return;
	if ((s = malloc(sizeof(*s))) == NULL) {
		err(out, "out of memory; try again");
		return;
	}
	stats_collect(cc->c->m, s);
	if (json)
		stats_json(s, out);
	else
		stats_text(s, out);
	free(s);
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
		err(out, "out of memory; try again");
		return;
	}
	evbuffer_add(out, "OK\n", 3);
	for (size_t i = 0; i < s->n; i++) {
		const struct stats_listener *l = &s->l[i];
		char *sockets = join_sockets(&l->lc->backend);

		table_set(&t, i + 1, 0, "%s", l->lc->name);
		table_set(&t, i + 1, 1, "%s", l->lc->bind);
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
		stats_json_string(out, l->lc->bind);
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
cmd_listeners(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	struct stats *s;
	int json = want_json(argc, argv, out);

	if (json == -1)
		return;
	if ((s = malloc(sizeof(*s))) == NULL) {
		err(out, "out of memory; try again");
		return;
	}
	stats_collect(cc->c->m, s);
	if (json)
		listeners_json(s, out);
	else
		listeners_text(s, out);
	free(s);
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
cmd_set(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	const struct config_key *k = max_connections_key();
	const struct listener_conf *lc;
	char shown[CTL_SHOW_MAX + 1], *end;
	long long v;
	int old;

	(void)argc;
	if (k == NULL || strcmp(argv[1], k->name) != 0) {
		err(out, "'%s' cannot be set; only max_connections can be "
		    "changed at run time: set max_connections NAME N",
		    show(argv[1], shown, sizeof(shown)));
		return;
	}
	if ((lc = find_listener(cc, argv[2], out)) == NULL)
		return;
	errno = 0;
	v = strtoll(argv[3], &end, 10);
	if (argv[3][0] < '0' || argv[3][0] > '9' || *end != '\0' ||
	    errno != 0 || v < k->min || v > k->max) {
		err(out, "max_connections '%s' is not valid; use an integer "
		    "from %lld to %lld", show(argv[3], shown, sizeof(shown)),
		    k->min, k->max);
		return;
	}
	old = atomic_exchange(&master_shm(cc->c->m)->listeners[lc->si].
	    max_connections, (int)v);
	log_info("listener '%s': max_connections %lld (was %d), set by the "
	    "control socket", lc->name, v, old);
	evbuffer_add_printf(out, "OK %s: max_connections %lld (was %d)\n",
	    lc->name, v, old);
}

static void
suspend(struct ctl_conn *cc, const char *name, int on, struct evbuffer *out)
{
	const struct listener_conf *lc = find_listener(cc, name, out);

	if (lc == NULL)
		return;
	if (master_suspend(cc->c->m, lc->name, on) == -1) {
		err(out, "listener '%s' is not in shared memory; try again "
		    "after the reload in progress", lc->name);
		return;
	}
	evbuffer_add_printf(out, "OK %s: %s\n", lc->name,
	    on ? "suspended" : "accepting");
}

static void
cmd_suspend(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	(void)argc;
	suspend(cc, argv[1], 1, out);
}

static void
cmd_resume(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	(void)argc;
	suspend(cc, argv[1], 0, out);
}

static void
cmd_reload(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	struct config_diag diag = { NULL, 0 };
	struct master_status st;

	(void)argc;
	(void)argv;
	if (master_reload(cc->c->m, &diag) == 0) {
		master_status(cc->c->m, &st);
		evbuffer_add_printf(out, "OK reloaded: generation %u\n",
		    st.generation);
	} else {
		err(out, "reload failed; still serving the previous "
		    "configuration");
		for (size_t i = 0; i < diag.n; i++)
			evbuffer_add_printf(out, "%s\n", diag.lines[i]);
		if (diag.n == 0) {
			master_status(cc->c->m, &st);
			if (st.last_error[0] != '\0')
				evbuffer_add_printf(out, "%s\n", st.last_error);
		}
	}
	config_diag_free(&diag);
}

static void
cmd_help(struct ctl_conn *cc, int argc, char **argv, struct evbuffer *out)
{
	(void)cc;
	(void)argc;
	(void)argv;
	evbuffer_add(out, "OK\n", 3);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		evbuffer_add_printf(out, "%-28s %s\n", cmds[i].usage,
		    cmds[i].help);
}

/* Split a line into words at spaces and tabs; -1 if there are too many. */
static int
split(char *line, char **argv)
{
	int argc = 0;

	for (char *p = strtok(line, " \t"); p != NULL; p = strtok(NULL, " \t")) {
		if (argc == CTL_WORDS_MAX)
			return -1;
		argv[argc++] = p;
	}
	return argc;
}

/* Run one command line (n bytes, without its newline) into out. */
static void
run_line(struct ctl_conn *cc, char *line, size_t n, struct evbuffer *out)
{
	char *argv[CTL_WORDS_MAX], shown[CTL_SHOW_MAX + 1];
	int argc;

	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (n > CTL_LINE_MAX) {
		err(out, "command longer than %d bytes; send one command of "
		    "at most %d bytes ending in a newline", CTL_LINE_MAX,
		    CTL_LINE_MAX);
		return;
	}
	if (memchr(line, '\0', n) != NULL) {
		err(out, "the command holds a NUL byte; send one line of text");
		return;
	}
	if ((argc = split(line, argv)) == -1) {
		err(out, "more than %d words; send one command, see 'help'",
		    CTL_WORDS_MAX);
		return;
	}
	if (argc == 0) {
		err(out, "empty command; send 'help' for the list of commands");
		return;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const struct ctl_cmd *cmd = &cmds[i];
		if (strcmp(argv[0], cmd->name) != 0)
			continue;
		if (argc - 1 < cmd->min || argc - 1 > cmd->max) {
			err(out, "wrong number of words for '%s'; usage: %s",
			    cmd->name, cmd->usage);
			return;
		}
		if (cmd->changes)
			log_info("control socket: '%s' from uid %ld pid %ld",
			    cmd->name, cc->uid, cc->pid);
		cmd->fn(cc, argc, argv, out);
		return;
	}
	err(out, "unknown command '%s'; send 'help' for the list of commands",
	    show(argv[0], shown, sizeof(shown)));
}

static void
conn_free(struct ctl_conn *cc)
{
	TAILQ_REMOVE(&cc->c->conns, cc, entry);
	cc->c->nconns--;
	if (cc->deadline != NULL)
		event_free(cc->deadline);
	bufferevent_free(cc->bev);
	free(cc);
}

/*
 * Answer one line and stop reading; the write callback closes once the
 * reply is out, or the deadline, CTL_TIMEOUT_S from now, if it is not.
 */
static void
answer(struct ctl_conn *cc, char *line, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(cc->bev);
	struct timeval tv = { CTL_TIMEOUT_S, 0 };

	cc->replied = 1;
	bufferevent_disable(cc->bev, EV_READ);
	evtimer_add(cc->deadline, &tv);
	if (line != NULL)
		run_line(cc, line, n, out);
	else
		err(out, "command longer than %d bytes; send one command of "
		    "at most %d bytes ending in a newline", CTL_LINE_MAX,
		    CTL_LINE_MAX);
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	if (cc->replied)
		return;
	if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		answer(cc, line, n);
		free(line);
	} else if (evbuffer_get_length(in) > CTL_LINE_MAX + 1) {
		answer(cc, NULL, 0);	/* no newline where one must be */
	}
}

/* The whole reply is out: one command per connection, so close. */
static void
on_written(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;

	if (cc->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(cc);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (!cc->replied && (what & BEV_EVENT_EOF) && n > 0 &&
	    n <= CTL_LINE_MAX + 1) {
		/* "printf stats | nc -U": a last line without its newline. */
		char line[CTL_LINE_MAX + 2];
		evbuffer_remove(in, line, n);
		line[n] = '\0';
		answer(cc, line, n);
		return;
	}
	conn_free(cc);	/* EOF without a command, or an error */
}

/* No whole command in time: say so; no reply taken in time: close. */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_conn *cc = arg;
	struct timeval tv = { CTL_TIMEOUT_S, 0 };

	(void)fd;
	(void)what;
	if (cc->replied) {
		conn_free(cc);
		return;
	}
	cc->replied = 1;
	bufferevent_disable(cc->bev, EV_READ);
	evtimer_add(cc->deadline, &tv);
	err(bufferevent_get_output(cc->bev), "no command within %d s; send "
	    "one line ending in a newline", CTL_TIMEOUT_S);
}

/*
 * At the cap, close the oldest connection still waiting for its command.
 * Returns -1 when every open one is busy taking its reply.
 */
static int
make_room(struct control *c)
{
	struct ctl_conn *cc;
	uint64_t suppressed;

	TAILQ_FOREACH(cc, &c->conns, entry)
		if (!cc->replied)
			break;
	c->shed++;
	if (log_ratelimit_pass(&c->rl_shed, &suppressed))
		log_warnx("control socket: %d connections open, the most "
		    "allowed; %s (%llu such connections closed in all)",
		    CTL_MAX_CONNS, cc ? "closed the oldest idle one" :
		    "refused a new one", (unsigned long long)c->shed);
	if (cc == NULL)
		return -1;
	conn_free(cc);
	return 0;
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct control *c = arg;
	struct timeval tv = { CTL_TIMEOUT_S, 0 };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct ctl_conn *cc;

	(void)lev;
	(void)sa;
	(void)salen;
	if (c->nconns >= CTL_MAX_CONNS && make_room(c) == -1) {
		close(fd);
		return;
	}
	if ((cc = calloc(1, sizeof(*cc))) == NULL ||
	    (cc->deadline = evtimer_new(c->base, on_deadline, cc)) == NULL ||
	    (cc->bev = bufferevent_socket_new(c->base, fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		log_warnx("control socket: out of memory; connection closed");
		if (cc != NULL && cc->deadline != NULL)
			event_free(cc->deadline);
		free(cc);
		close(fd);
		return;
	}
	cc->c = c;
	cc->uid = cc->pid = -1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		cc->uid = (long)cred.uid;
		cc->pid = (long)cred.pid;
	}
	TAILQ_INSERT_TAIL(&c->conns, cc, entry);
	c->nconns++;
	bufferevent_setcb(cc->bev, on_read, on_written, on_event, cc);
	bufferevent_setwatermark(cc->bev, EV_READ, 0, CTL_LINE_MAX + 2);
	if (evtimer_add(cc->deadline, &tv) == -1 ||
	    bufferevent_enable(cc->bev, EV_READ) == -1) {
		log_warnx("control socket: cannot watch a connection");
		conn_free(cc);
	}
}

/* accept(2) failed for want of descriptors or memory: wait a second. */
static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct control *c = arg;
	struct timeval tv = { 1, 0 };
	int e = EVUTIL_SOCKET_ERROR();
	uint64_t suppressed;

	if (log_ratelimit_pass(&c->rl_accept, &suppressed))
		log_warnx("control socket: accept: %s; pausing for 1 s (%llu "
		    "more since the last report)", strerror(e),
		    (unsigned long long)suppressed);
	evconnlistener_disable(lev);
	if (evtimer_add(c->resume, &tv) == -1)
		log_errorx("control socket: cannot arm the resume timer");
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct control *c = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(c->lev);
}

/* The socket's directory must exist: say what would be right if not. */
static int
check_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		return 0;		/* the parser allows absolute paths only */
	slash[slash == dir ? 1 : 0] = '\0';
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	if (errno == ENOENT || errno == ENOTDIR || !S_ISDIR(st.st_mode))
		log_errorx("control socket %s: directory %s does not exist; "
		    "create it (for example: install -d -m 0755 %s) or set "
		    "control_socket to a path in an existing directory", path,
		    dir, dir);
	else
		log_error("control socket %s: cannot use directory %s", path,
		    dir);
	return -1;
}

/*
 * Make way for our socket: nothing there, or a stale socket (nobody
 * accepts on it: connect is refused) that is removed.  A live socket or
 * any other file is left alone and fails startup.
 */
static int
clear_path(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		log_error("control socket %s: cannot check the path", path);
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_errorx("control socket %s: the path exists and is not a "
		    "socket; remove it, or set control_socket to another path",
		    path);
		return -1;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		log_error("control socket %s: socket", path);
		return -1;
	}
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
		close(fd);
		log_errorx("control socket %s: another process is listening on "
		    "it (is esockd already running?); stop it, or set "
		    "control_socket to another path", path);
		return -1;
	}
	if (errno != ECONNREFUSED && errno != ENOENT) {
		log_error("control socket %s: cannot tell whether a daemon "
		    "listens on it", path);
		close(fd);
		return -1;
	}
	close(fd);
	if (unlink(path) == -1 && errno != ENOENT) {
		log_error("control socket %s: cannot remove the stale socket",
		    path);
		return -1;
	}
	log_info("control socket %s: replaced a stale socket (no daemon "
	    "listened on it)", path);
	return 0;
}

/* Bind and listen at c->path, 0600 from the first instant (or 0660). */
static int
make_socket(struct control *c, const struct esd_config *conf)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", c->path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		log_error("control socket %s: socket", c->path);
		return -1;
	}
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc == -1) {
		log_error("control socket %s: cannot create it (the master "
		    "needs write access to its directory)", c->path);
		goto err;
	}
	if (lstat(c->path, &st) == 0) {
		c->made = 1;
		c->dev = st.st_dev;
		c->ino = st.st_ino;
	}
	/* Not chown/chmod: neither may follow a link swapped in meanwhile. */
	if (conf->control_group[0] != '\0' &&
	    (lchown(c->path, (uid_t)-1, conf->control_gid) == -1 ||
	    fchmodat(AT_FDCWD, c->path, 0660, AT_SYMLINK_NOFOLLOW) == -1)) {
		log_error("control socket %s: cannot give it group '%s' and "
		    "mode 0660", c->path, conf->control_group);
		goto err;
	}
	if (listen(fd, CTL_BACKLOG) == -1) {
		log_error("control socket %s: listen", c->path);
		goto err;
	}
	return fd;
err:
	close(fd);
	return -1;
}

/*
 * Open the control socket named by control_socket on the master's loop.
 * With control_socket = "" there is none, and an idle struct is returned.
 * NULL (logged) means startup must fail.
 */
struct control *
control_start(struct event_base *base, struct master *m)
{
	const struct esd_config *conf = master_config(m);
	struct control *c;
	int fd;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_errorx("control socket: out of memory");
		return NULL;
	}
	c->base = base;
	c->m = m;
	TAILQ_INIT(&c->conns);
	if (conf->control_socket[0] == '\0') {
		log_info("no control socket (control_socket is \"\")");
		return c;
	}
	snprintf(c->path, sizeof(c->path), "%s", conf->control_socket);
	if (check_dir(c->path) == -1 || clear_path(c->path) == -1 ||
	    (fd = make_socket(c, conf)) == -1)
		goto err;
	if ((c->lev = evconnlistener_new(base, on_accept, c,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)) == NULL) {
		close(fd);
		log_errorx("control socket %s: cannot watch it", c->path);
		goto err;
	}
	evconnlistener_set_error_cb(c->lev, on_accept_error);
	if ((c->resume = evtimer_new(base, on_resume, c)) == NULL) {
		log_errorx("control socket %s: cannot make a timer", c->path);
		goto err;
	}
	if (conf->control_group[0] != '\0')
		log_info("control socket %s (mode 0660, group %s)", c->path,
		    conf->control_group);
	else
		log_info("control socket %s (mode 0600)", c->path);
	return c;
err:
	control_free(c);
	return NULL;
}

/* Close every control connection and remove the socket we made. */
void
control_free(struct control *c)
{
	struct ctl_conn *cc;
	struct stat st;

	if (c == NULL)
		return;
	while ((cc = TAILQ_FIRST(&c->conns)) != NULL)
		conn_free(cc);
	if (c->lev != NULL)
		evconnlistener_free(c->lev);
	if (c->resume != NULL)
		event_free(c->resume);
	if (c->made && lstat(c->path, &st) == 0 && st.st_dev == c->dev &&
	    st.st_ino == c->ino && unlink(c->path) == -1)
		log_warn("control socket %s: cannot remove it", c->path);
	free(c);
}
