/*
 * master.c: the master process: limits, listening sockets, shared memory,
 * signals, reload and the supervisor, but never a client byte.
 *
 * Signals arrive through libevent (evsignal), so every handler below runs
 * in the loop, not in signal context.
 *
 * Reload (SIGHUP or esockdctl) checks the file's syntax in a short-lived
 * child (libconfig leaks on a syntax error), parses it into a new config and
 * hands it to reload.c, which plans the move (which sockets are kept,
 * bound, dropped) and commits it or changes nothing; the master then
 * starts the new generation of workers while the old one drains.
 */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "activation.h"
#include "addr.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "proc.h"
#include "shm.h"
#include "stats.h"
#include "reload.h"
#include "supervise.h"
#include "tls_ctx.h"
#include "tls_tickets.h"

/* How often the systemd STATUS= line is refreshed. */
#define STATUS_INTERVAL_S	5
/* How long a reload waits for its syntax check (a file that never ends). */
#define SYNTAX_CHECK_MS		10000

struct master {
	struct event_base	*base;
	struct esd_config	*conf;		/* the current generation's */
	struct shm_region	*shm;
	struct generation	*first;		/* until the supervisor has it */
	struct supervisor	*sup;
	struct event		*sig[6];
	struct event		*status_timer;
	int			 exit_code;
	struct master_status	 st;
	struct control		*control;
	struct metrics		*metrics;
};

/*
 * Raise RLIMIT_NOFILE as asked (0: to the hard limit), say what is in
 * effect, and warn when the listeners' limits (or the top-level one, if
 * lower) cannot fit in it: each relayed connection holds two descriptors
 * in its worker.
 */
static void
set_fd_limit(const struct esd_config *conf)
{
	struct rlimit rl;
	rlim_t want;
	unsigned long long need = 32 + conf->nlisteners, sum = 0;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit(RLIMIT_NOFILE)");
		return;
	}
	want = conf->max_open_files ? (rlim_t)conf->max_open_files : rl.rlim_max;
	if (want > rl.rlim_max) {
		struct rlimit both = { want, want };
		if (setrlimit(RLIMIT_NOFILE, &both) == 0) {
			rl = both;
		} else {
			log_warnx("max_open_files %d is above the hard limit "
			    "%llu and it cannot be raised (%s); using %llu",
			    conf->max_open_files,
			    (unsigned long long)rl.rlim_max, strerror(errno),
			    (unsigned long long)rl.rlim_max);
			want = rl.rlim_max;
		}
	}
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		log_warn("setrlimit(RLIMIT_NOFILE, %llu)",
		    (unsigned long long)want);
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	log_info("descriptor limit (RLIMIT_NOFILE) in effect: %llu",
	    (unsigned long long)rl.rlim_cur);
	for (size_t i = 0; i < conf->nlisteners; i++)
		sum += (unsigned long long)conf->listeners[i].max_connections;
	if (conf->max_connections > 0 &&
	    sum > (unsigned long long)conf->max_connections)
		sum = (unsigned long long)conf->max_connections;
	need += 2ULL * sum;
	if (need > rl.rlim_cur)
		log_warnx("max_connections of all listeners may need up to %llu "
		    "descriptors in one worker, above the limit of %llu; "
		    "connections past it wait in the backlog. Raise "
		    "max_open_files (and LimitNOFILE=) or lower "
		    "max_connections", need, (unsigned long long)rl.rlim_cur);
}

static int
resolve_workers(const struct esd_config *conf)
{
	long n;

	if (conf->workers > 0)
		return conf->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	return n > ESD_MAX_WORKERS ? ESD_MAX_WORKERS : (int)n;
}

/* The generation serving now: the supervisor's, or the one starting. */
static struct generation *
current(const struct master *m)
{
	struct generation *g = m->sup != NULL ? supervise_current(m->sup) :
	    NULL;

	return g != NULL ? g : m->first;
}

/* Take systemd's socket or bind one, per listener; fail if any failed. */
static int
bind_all(struct generation *g)
{
	int rc = 0;

	for (size_t i = 0; i < g->conf->nlisteners; i++) {
		struct listener *l = &g->listeners[i];

		if ((l->fd = activation_take(l->conf)) == -1)
			l->fd = listener_bind(l->conf);
		if (l->fd == -1)
			rc = -1;
		else
			listener_served(l);
	}
	activation_done();
	return rc;
}

/* Close the master's copies of the current listening sockets. */
static void
close_listeners(struct master *m)
{
	struct generation *g = current(m);

	for (size_t i = 0; g != NULL && i < g->conf->nlisteners; i++) {
		struct listener *l = &g->listeners[i];

		if (l->fd != -1 && close(l->fd) == -1)
			log_warn("close listener '%s'", l->conf->name);
		l->fd = -1;
	}
}

/* "N1/N2/...": listener si's open connections per live worker, by slot. */
static void
per_worker(struct master *m, int si, char *buf, size_t size)
{
	size_t off = 0;

	if (si < 0 || si >= ESD_MAX_LISTENERS)
		return;		/* not in shared memory: nothing counted */
	for (int s = 0; s < ESD_MAX_SLOTS && off < size; s++)
		if (supervise_slot_live(m->sup, s))
			off += (size_t)snprintf(buf + off, size - off, "%s%lld",
			    off ? "/" : "", (long long)atomic_load(
			    &m->shm->counters[si][s].cur));
}

static void
log_endpoint(const char *name, const struct oneshot_counters *n, int on)
{
	char kv[ENDPOINT_KV_MAX];

	stats_endpoint_kv(n, on, kv, sizeof(kv));
	log_info("stats endpoint=%s %s", name, kv);
}

/*
 * SIGUSR1's line for the whole daemon: the top-level max_connections and
 * what it is checked against, and the machine's listen queues (-1:
 * /proc/net/netstat could not say).
 */
static void
log_global(const struct stats *st)
{
	log_info("stats global connections=%lld max_connections=%d "
	    "reserved=%lld committed=%lld listen_overflows=%lld "
	    "listen_drops=%lld", (long long)st->global.connections,
	    st->global.max_connections, (long long)st->global.reserved,
	    (long long)st->global.committed,
	    st->netstat_ok ? (long long)st->netstat.overflows : -1LL,
	    st->netstat_ok ? (long long)st->netstat.drops : -1LL);
}

/*
 * SIGUSR1: one line of counters per listener, from the same snapshot as
 * "esockdctl stats" and /metrics, plus each live worker's open count.
 */
static void
log_stats(struct master *m)
{
	struct stats *st = malloc(sizeof(*st));

	if (st == NULL) {
		log_warnx("SIGUSR1: out of memory for the counters; try again");
		return;
	}
	master_stats(m, st);
	for (size_t i = 0; i < st->n; i++) {
		const struct stats_listener *l = &st->l[i];
		char per[ESD_MAX_SLOTS * 12] = "", kv[STATS_NFIELDS * 40];

		per_worker(m, l->si, per, sizeof(per));
		stats_listener_kv(&l->t, kv, sizeof(kv));
		log_info("stats listener=%s connections=%lld max_connections=%d "
		    "reserved_connections=%d suspended=%d draining=%d "
		    "accept_queue=%d accept_queue_max=%d %s per_worker=%s",
		    l->lc->name, (long long)l->t.cur, l->max_connections,
		    l->reserved, l->suspended ? 1 : 0, l->draining, l->queue,
		    l->queue_max, kv, per);
	}
	log_global(st);
	log_endpoint("control", &st->st.control, st->st.control_on);
	log_endpoint("metrics", &st->st.metrics, st->st.metrics_on);
	free(st);
}

static void
all_exited(void *arg)
{
	struct master *m = arg;

	log_info("all workers have exited");
	event_base_loopbreak(m->base);
}

/* SIGTERM/SIGINT: stop accepting everywhere, let workers drain. */
static void
stop(struct master *m)
{
	if (supervise_stopping(m->sup))
		return;
	log_info("stopping: open connections may finish for up to %d s",
	    m->conf->shutdown_timeout);
	notify_stopping();
	close_listeners(m);
	supervise_stop(m->sup);
	if (supervise_running(m->sup) == 0)
		event_base_loopbreak(m->base);
}

/* SIGQUIT: no drain; workers are killed and the master leaves now. */
static void
quit(struct master *m)
{
	log_info("quit: killing workers without draining");
	notify_stopping();
	supervise_kill(m->sup, SIGKILL);
	event_base_loopbreak(m->base);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct master *m = arg;

	(void)what;
	switch (sig) {
	case SIGCHLD:
		supervise_reap(m->sup);
		break;
	case SIGTERM:
	case SIGINT:
		stop(m);
		break;
	case SIGQUIT:
		quit(m);
		break;
	case SIGUSR1:
		log_stats(m);
		break;
	case SIGHUP: {
		struct config_diag diag;
		notify_reloading();
		master_reload(m, &diag);
		config_diag_free(&diag);
		break;
	}
	}
}

static int
setup_signals(struct master *m)
{
	static const int sigs[] = {
		SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP
	}, ignore[] = { SIGPIPE };

	_Static_assert(sizeof(sigs) / sizeof(sigs[0]) <=
	    sizeof(m->sig) / sizeof(m->sig[0]), "room for each signal's event");
	return proc_signals(m->base, sigs, sizeof(sigs) / sizeof(sigs[0]),
	    ignore, 1, on_signal, m, m->sig);
}

const struct esd_config *
master_config(const struct master *m)
{
	return m->conf;
}

struct shm_region *
master_shm(const struct master *m)
{
	return m->shm;
}

static void
endpoint_status(const struct oneshot_counters *from, int *on,
    struct oneshot_counters *to)
{
	*on = from != NULL;
	if (from != NULL)
		*to = *from;
	else
		memset(to, 0, sizeof(*to));
}

void
master_status(const struct master *m, struct master_status *st)
{
	*st = m->st;
	st->workers = current(m) != NULL ? current(m)->nworkers : 0;
	st->running = supervise_running(m->sup);
	st->draining = supervise_draining(m->sup);
	st->worker_restarts = supervise_restarts(m->sup);
	endpoint_status(control_counters(m->control), &st->control_on,
	    &st->control);
	endpoint_status(metrics_counters(m->metrics), &st->metrics_on,
	    &st->metrics);
}

/* Stop or start accepting on one listener in every worker. */
int
master_suspend(struct master *m, const char *listener, int suspend)
{
	int li = shm_listener_find(m->shm, listener);

	if (li == -1)
		return -1;
	atomic_store(&m->shm->listeners[li].suspended, suspend ? 1 : 0);
	supervise_signal_all(m->sup, SIGUSR2);
	log_info("listener '%s': %s by the control socket", listener,
	    suspend ? "suspended" : "resumed");
	return 0;
}

const struct listener *
master_find_listener(const struct master *m, const char *name)
{
	const struct generation *g = current(m);

	for (size_t i = 0; g != NULL && i < g->conf->nlisteners; i++)
		if (strcmp(g->listeners[i].conf->name, name) == 0)
			return &g->listeners[i];
	return NULL;
}

int
master_set_limit(struct master *m, const char *listener, int v, int *old)
{
	const struct listener *l = master_find_listener(m, listener);

	if (l == NULL || l->si < 0)
		return -1;
	*old = atomic_exchange(&m->shm->listeners[l->si].max_connections, v);
	log_info("listener '%s': max_connections %d (was %d), set by the "
	    "control socket", listener, v, *old);
	return 0;
}

void
master_stats(struct master *m, struct stats *s)
{
	const struct listener *ls[ESD_MAX_LISTENERS];
	int draining[ESD_MAX_LISTENERS];
	struct master_status st;
	size_t n = supervise_listeners(m->sup, ls, draining, ESD_MAX_LISTENERS);

	master_status(m, &st);
	stats_collect(ls, draining, n, m->shm, &st, s);
}

static void
master_free(struct master *m)
{
	control_free(m->control);
	metrics_free(m->metrics);
	notify_free();
	for (size_t i = 0; i < sizeof(m->sig) / sizeof(m->sig[0]); i++)
		if (m->sig[i] != NULL)
			event_free(m->sig[i]);
	if (m->status_timer != NULL)
		event_free(m->status_timer);
	close_listeners(m);
	supervise_free(m->sup);		/* frees every config, m->conf too */
	generation_free(m->first);	/* one that never started */
	if (m->base != NULL)
		event_base_free(m->base);
	shm_destroy(m->shm);
}

/* Current connections over every listener, for STATUS=. */
static long long
connections_now(struct master *m)
{
	long long n = 0;

	const struct generation *g = current(m);

	for (size_t i = 0; i < g->conf->nlisteners; i++)
		n += shm_current(m->shm, g->listeners[i].si);
	return n;
}

static void
update_status(struct master *m)
{
	if (!m->st.last_reload_ok)
		notify_status("reload failed: %s; serving generation %u: %zu "
		    "listeners, %d workers, %lld connections", m->st.last_error,
		    m->st.generation, m->conf->nlisteners, current(m)->nworkers,
		    connections_now(m));
	else
		notify_status("generation %u: %zu listeners, %d workers, %lld "
		    "connections", m->st.generation, m->conf->nlisteners,
		    current(m)->nworkers, connections_now(m));
}

static void
on_status_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	update_status(arg);
	tls_tickets_rotate_all();
}

static void
reload_failed(struct master *m, struct config_diag *diag)
{
	for (size_t i = 0; i < diag->n; i++)
		log_errorx("%s", diag->lines[i]);
	m->st.last_reload = time(NULL);		/* the last try, failed */
	m->st.reload_failures++;
	m->st.last_reload_ok = 0;
	snprintf(m->st.last_error, sizeof(m->st.last_error), "%s",
	    diag->n > 0 ? diag->lines[0] : "unknown error");
	log_errorx("reload failed (%zu error%s); still serving generation %u "
	    "with the previous configuration", diag->n, diag->n == 1 ? "" : "s",
	    m->st.generation);
	update_status(m);
	notify_ready();
}

/*
 * Read the file in a short-lived child first, and refuse the reload at
 * once if it has a syntax error.  libconfig 1.5 leaks the string token it
 * stopped on (its buffer, 64 bytes or more, and malloc's header: 80 bytes
 * for a short path, 64 KiB for a 64 KiB string), so each SIGHUP on such a
 * file would grow the master for good; the child's leak dies with it.  0 when the file parses (the master then reads it itself,
 * with every other check) or when the check could not be made (the
 * master's own read then reports the error, at the cost of the leak); -1
 * with the error in diag.
 */
static int
syntax_check(const char *path, struct config_diag *diag)
{
	struct pollfd pfd;
	sigset_t all, old;
	char line[1024];
	size_t got = 0;
	ssize_t n;
	pid_t pid;
	int fds[2], r, timed_out = 0;

	if (pipe2(fds, O_CLOEXEC) == -1) {
		log_warn("reload: syntax check: pipe");
		return 0;
	}
	/*
	 * No signal may reach the child's copy of the master's handlers (it
	 * would be written to the master's signal pipe): the child keeps
	 * them all blocked, as spawn() does until a worker has its own.
	 */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid != 0)
		sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid == -1) {
		log_warn("reload: syntax check: fork");
		close(fds[0]);
		close(fds[1]);
		return 0;
	}
	if (pid == 0) {
		/* Only libconfig runs here: no log line, no event loop. */
		close(fds[0]);
		if (config_check_syntax(path, line, sizeof(line)) == -1 &&
		    write(fds[1], line, strlen(line)) == -1)
			_exit(2);
		_exit(0);
	}
	close(fds[1]);
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	while (got < sizeof(line) - 1) {
		if ((r = poll(&pfd, 1, SYNTAX_CHECK_MS)) == 0) {
			timed_out = 1;
			kill(pid, SIGKILL);
			break;
		}
		if (r == -1 || (n = read(fds[0], line + got,
		    sizeof(line) - 1 - got)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("reload: syntax check: read");
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fds[0]);
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
	if (timed_out) {
		config_diag_add(diag, "%s: not read within %d s; is it a "
		    "regular file?", path, SYNTAX_CHECK_MS / 1000);
		return -1;
	}
	if (got == 0)
		return 0;
	line[got] = '\0';
	config_diag_add(diag, "%s", line);
	return -1;
}

/*
 * Re-read the config file and, if it is valid and can be applied, start a
 * new generation of workers on it.  Returns 0, or -1 with every reason in
 * diag (which the caller frees either way); the daemon serves on both.
 */
int
master_reload(struct master *m, struct config_diag *diag)
{
	struct esd_config *conf;
	struct reload_plan plan;
	uint64_t busy;
	struct generation *g;

	memset(diag, 0, sizeof(*diag));
	log_info("reloading %s", m->conf->path);
	if (supervise_stopping(m->sup)) {
		config_diag_add(diag, "esockd is stopping; nothing reloaded");
		goto fail;
	}
	busy = supervise_busy_listeners(m->sup);
	if (syntax_check(m->conf->path, diag) == -1 ||
	    (conf = config_load_file(m->conf->path, diag)) == NULL)
		goto fail;
	if (reload_prepare(&plan, current(m), conf, m->st.generation + 1,
	    resolve_workers(conf), supervise_free_slots(m->sup), m->shm, busy,
	    diag) == -1)
		goto fail;
	g = plan.next;
	log_info("reload: %zu listeners kept, %zu bound, %zu closed",
	    plan.kept, g->conf->nlisteners - plan.kept, plan.dropped);
	reload_commit(&plan, m->shm, busy);
	m->conf = g->conf;
	log_set_level((enum log_level)m->conf->log_level);
	set_fd_limit(m->conf);
	m->st.generation = g->id;
	if (supervise_start(m->sup, g) == -1)
		log_errorx("reload: generation %u is short of workers",
		    g->id);
	m->st.reloads++;
	m->st.last_reload_ok = 1;
	m->st.last_error[0] = '\0';
	m->st.last_reload = time(NULL);
	log_info("reloaded: generation %u, %zu listeners, %d workers; "
	    "generation %u drains", g->id, m->conf->nlisteners, g->nworkers,
	    g->id - 1);
	update_status(m);
	notify_ready();
	return 0;
fail:
	reload_failed(m, diag);
	return -1;
}

/*
 * The first generation: every listener bound (or taken from systemd),
 * placed in shared memory, and its TLS context made.  -1 when one could
 * not be (logged); the caller frees g.
 */
static int
first_generation(struct master *m, struct generation *g)
{
	struct config_diag diag = { 0 };

	if (bind_all(g) == -1)
		return -1;
	if ((m->shm = shm_create()) == NULL || tls_tickets_init() == -1)
		return -1;
	for (size_t i = 0; i < g->conf->nlisteners; i++) {
		g->listeners[i].si = shm_listener_claim(m->shm,
		    g->listeners[i].conf->name,
		    g->listeners[i].conf->max_connections, NULL);
		shm_listener_reserve(m->shm, g->listeners[i].si,
		    g->listeners[i].conf->reserved_connections);
		shm_backends_bind(m->shm, g->listeners[i].si,
		    g->listeners[i].conf->backend.sockets,
		    g->listeners[i].conf->backend.nsockets);
	}
	shm_set_global_limit(m->shm, g->conf->max_connections);
	if (tls_ctx_load(g->conf, g->listeners, &diag) == -1) {
		/* esockd.c checked them: the files changed since. */
		for (size_t i = 0; i < diag.n; i++)
			log_errorx("%s", diag.lines[i]);
		config_diag_free(&diag);
		return -1;
	}
	tls_tickets_commit(g->listeners, g->conf->nlisteners);
	return 0;
}

/*
 * Run the daemon with a validated config, which the master owns from
 * here on (each generation frees its own); returns the exit status.
 */
int
master_run(struct esd_config *conf)
{
	struct master m = { .conf = conf, .exit_code = 1,
	    .st = { .generation = 1, .last_reload_ok = 1 } };
	struct timeval tv = { STATUS_INTERVAL_S, 0 };
	struct generation *g;

	m.st.started = time(NULL);
	log_init("master", 0);
	log_set_level((enum log_level)conf->log_level);
	set_fd_limit(conf);
	if ((g = m.first = generation_new(1, conf, resolve_workers(conf))) ==
	    NULL)
		return 1;
	if (first_generation(&m, g) == -1)
		goto fail;
	if ((m.base = event_base_new()) == NULL) {
		log_errorx("cannot create an event base");
		goto fail;
	}
	if (setup_signals(&m) == -1 || notify_init(m.base) == -1 ||
	    (m.sup = supervise_new(m.base, m.shm, all_exited, &m)) == NULL)
		goto fail;
	if ((m.control = control_start(m.base, &m)) == NULL ||
	    (m.metrics = metrics_start(m.base, &m)) == NULL)
		goto fail;
	m.first = NULL;		/* the supervisor's from here on */
	if (supervise_start(m.sup, g) == -1) {
		/* Not a loop to wait in: stop the workers that did start. */
		close_listeners(&m);
		supervise_kill(m.sup, SIGTERM);
		goto fail;
	}
	m.status_timer = event_new(m.base, -1, EV_PERSIST, on_status_timer, &m);
	if (m.status_timer == NULL || event_add(m.status_timer, &tv) == -1) {
		log_errorx("cannot arm the status timer");
		goto fail;
	}
	log_info("ready: %zu listeners, %d workers", conf->nlisteners,
	    g->nworkers);
	update_status(&m);
	notify_ready();
	if (event_base_dispatch(m.base) == -1) {
		log_errorx("event loop failed");
		goto fail;
	}
	if (supervise_stopping(m.sup) && supervise_running(m.sup) > 0)
		supervise_kill(m.sup, SIGKILL);
	log_info("exiting");
	m.exit_code = 0;
fail:
	master_free(&m);
	return m.exit_code;
}
