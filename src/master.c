/*
 * master.c: the master process: limits, listening sockets, shared memory,
 * signals, reload and the supervisor, but never a client byte.
 *
 * Signals arrive through libevent (evsignal), so every handler below runs
 * in the loop, not in signal context.
 *
 * Reload (SIGHUP or esockdctl) follows hitch: parse the file into a new
 * config; keep every listening socket whose address is unchanged (its
 * accept queue is never dropped), bind the new ones, and only when all
 * of that worked commit: close the dropped sockets, map listeners to their
 * shared counters by name, and start a new generation of workers while
 * the old one drains.  Anything that fails before the commit is undone
 * and the old config keeps serving.
 */
#include "master.h"

#include <errno.h>
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
#include "supervise.h"
#include "tls.h"

/* How often the systemd STATUS= line is refreshed. */
#define STATUS_INTERVAL_S	5

struct master {
	struct event_base	*base;
	struct esd_config	*conf;		/* the current generation's */
	struct shm_region	*shm;
	int			 listen_fds[ESD_MAX_LISTENERS]; /* conf's */
	struct supervisor	 sup;
	struct event		*sig[6];
	struct event		*status_timer;
	int			 exit_code;
	struct master_status	 st;
	struct control		*control;
	struct metrics		*metrics;
};

/*
 * Raise RLIMIT_NOFILE as asked (0: to the hard limit), say what is in
 * effect, and warn when the listeners' limits cannot fit in it: each
 * relayed connection holds two descriptors in its worker.
 */
static void
set_fd_limit(const struct esd_config *conf)
{
	struct rlimit rl;
	rlim_t want;
	unsigned long long need = 32 + conf->nlisteners;

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
		need += 2ULL * (unsigned long long)conf->listeners[i].max_connections;
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

/* Take systemd's socket or bind one, per listener; fail if any failed. */
static int
bind_all(struct master *m)
{
	int rc = 0;

	for (size_t i = 0; i < m->conf->nlisteners; i++) {
		m->listen_fds[i] = activation_take(&m->conf->listeners[i]);
		if (m->listen_fds[i] == -1)
			m->listen_fds[i] = listener_bind(&m->conf->listeners[i]);
		if (m->listen_fds[i] == -1)
			rc = -1;
	}
	activation_done();
	return rc;
}

/* Close the master's copies of the current listening sockets. */
static void
close_listeners(struct master *m)
{
	for (size_t i = 0; i < ESD_MAX_LISTENERS; i++) {
		if (m->listen_fds[i] == -1)
			continue;
		if (close(m->listen_fds[i]) == -1)
			log_warn("close listener '%s'", m->conf->listeners[i].name);
		m->listen_fds[i] = -1;
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
		if (m->sup.procs[s].gen != NULL)
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
	stats_collect(m, st);
	for (size_t i = 0; i < st->n; i++) {
		const struct stats_listener *l = &st->l[i];
		char per[ESD_MAX_SLOTS * 12] = "", kv[STATS_NFIELDS * 40];

		per_worker(m, l->lc->si, per, sizeof(per));
		stats_listener_kv(&l->t, kv, sizeof(kv));
		log_info("stats listener=%s connections=%lld max_connections=%d "
		    "suspended=%d %s per_worker=%s", l->lc->name,
		    (long long)l->t.cur, l->max_connections, l->suspended ? 1 : 0,
		    kv, per);
	}
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
	if (m->sup.stopping)
		return;
	log_info("stopping: open connections may finish for up to %d s",
	    m->conf->shutdown_timeout);
	notify_stopping();
	close_listeners(m);
	supervise_stop(&m->sup);
	if (supervise_running(&m->sup) == 0)
		event_base_loopbreak(m->base);
}

/* SIGQUIT: no drain; workers are killed and the master leaves now. */
static void
quit(struct master *m)
{
	log_info("quit: killing workers without draining");
	notify_stopping();
	m->sup.stopping = 1;
	supervise_signal_all(&m->sup, SIGKILL);
	event_base_loopbreak(m->base);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct master *m = arg;

	(void)what;
	switch (sig) {
	case SIGCHLD:
		supervise_reap(&m->sup);
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
	};

	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		log_error("cannot ignore SIGPIPE");
		return -1;
	}
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		m->sig[i] = evsignal_new(m->base, sigs[i], on_signal, m);
		if (m->sig[i] == NULL || evsignal_add(m->sig[i], NULL) == -1) {
			log_errorx("cannot watch signal %d", sigs[i]);
			return -1;
		}
	}
	return 0;
}

/* Wait for the workers SIGQUIT killed, so none outlives the master. */
static void
wait_killed(struct master *m)
{
	for (int i = 0; i < ESD_MAX_SLOTS; i++) {
		struct worker_proc *wp = &m->sup.procs[i];
		if (wp->pid != 0 && waitpid(wp->pid, NULL, 0) == -1 &&
		    errno != ECHILD)
			log_warn("waitpid worker %d", wp->id);
		wp->pid = 0;
	}
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
	st->workers = m->sup.cur != NULL ? m->sup.cur->nworkers : 0;
	st->running = supervise_running(&m->sup);
	st->draining = supervise_draining(&m->sup);
	st->worker_restarts = m->sup.restarts;
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
	supervise_signal_all(&m->sup, SIGUSR2);
	log_info("listener '%s': %s by the control socket", listener,
	    suspend ? "suspended" : "resumed");
	return 0;
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
	supervise_free(&m->sup);	/* frees every config, m->conf too */
	if (m->base != NULL)
		event_base_free(m->base);
	shm_destroy(m->shm);
}

/* Current connections over every listener, for STATUS=. */
static long long
connections_now(struct master *m)
{
	long long n = 0;

	for (size_t i = 0; i < m->conf->nlisteners; i++)
		n += shm_current(m->shm, m->conf->listeners[i].si);
	return n;
}

static void
update_status(struct master *m)
{
	if (!m->st.last_reload_ok)
		notify_status("reload failed: %s; serving generation %u: %zu "
		    "listeners, %d workers, %lld connections", m->st.last_error,
		    m->st.generation, m->conf->nlisteners, m->sup.cur->nworkers,
		    connections_now(m));
	else
		notify_status("generation %u: %zu listeners, %d workers, %lld "
		    "connections", m->st.generation, m->conf->nlisteners,
		    m->sup.cur->nworkers, connections_now(m));
}

static void
on_status_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	update_status(arg);
}

/* A generation for conf (which it owns from here on), or NULL. */
static struct generation *
generation_new(struct master *m, struct esd_config *conf, const int *fds)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (g == NULL) {
		log_error("cannot allocate a worker generation");
		return NULL;
	}
	g->id = m->st.generation;
	g->conf = conf;
	g->nworkers = resolve_workers(conf);
	memcpy(g->listen_fds, fds, conf->nlisteners * sizeof(int));
	return g;
}

/*
 * Keys the running master cannot change without a restart (the table's
 * rows with reloadable = 0) keep their old value, and the operator is
 * told so rather than left guessing.
 */
static void
keep_restart_only(const struct esd_config *old, struct esd_config *conf)
{
	if (strcmp(old->control_socket, conf->control_socket) != 0 ||
	    strcmp(old->control_group, conf->control_group) != 0) {
		log_warnx("reload: control_socket/control_group changed; they "
		    "apply at the next restart (still \"%s\")",
		    old->control_socket);
		memcpy(conf->control_socket, old->control_socket,
		    sizeof(conf->control_socket));
		memcpy(conf->control_group, old->control_group,
		    sizeof(conf->control_group));
		conf->control_gid = old->control_gid;
	}
	if (strcmp(old->metrics, conf->metrics) != 0) {
		log_warnx("reload: metrics changed; it applies at the next "
		    "restart (still \"%s\")", old->metrics);
		memcpy(conf->metrics, old->metrics, sizeof(conf->metrics));
		conf->metrics_addr = old->metrics_addr;
		conf->metrics_addrlen = old->metrics_addrlen;
	}
}

/* The current listener bound to the same address as lc, or -1. */
static int
same_bind(const struct master *m, const struct listener_conf *lc)
{
	for (size_t j = 0; j < m->conf->nlisteners; j++)
		if (addr_equal((const struct sockaddr *)&lc->addr,
		    (const struct sockaddr *)&m->conf->listeners[j].addr))
			return (int)j;
	return -1;
}

/*
 * Sockets for conf: the current one where the address is unchanged, a
 * new one elsewhere.  On failure every new socket is closed again and
 * nothing has changed.
 */
static int
rebind(struct master *m, const struct esd_config *conf, int *fds,
    struct config_diag *diag)
{
	for (size_t i = 0; i < conf->nlisteners; i++) {
		const struct listener_conf *lc = &conf->listeners[i];
		int j = same_bind(m, lc);

		if (j != -1) {
			fds[i] = m->listen_fds[j];
			continue;
		}
		if ((fds[i] = listener_bind(lc)) != -1)
			continue;
		config_diag_add(diag, "%s:%d: listener '%s': cannot bind %s (the "
		    "log says why); the previous configuration is kept",
		    conf->path, lc->line, lc->name, lc->bind);
		while (i-- > 0)
			if (same_bind(m, &conf->listeners[i]) == -1)
				close(fds[i]);
		return -1;
	}
	return 0;
}

/*
 * Bring kept sockets' options and backlog up to the new config; listen(2)
 * on a listening socket only sets the backlog, its queue stays.
 */
static void
update_kept(struct master *m, const struct esd_config *conf, const int *fds)
{
	for (size_t i = 0; i < conf->nlisteners; i++) {
		const struct listener_conf *lc = &conf->listeners[i];
		if (same_bind(m, lc) != -1 &&
		    (listener_set_options(fds[i], lc) == -1 ||
		    listener_listen(fds[i], lc) == -1))
			log_warnx("listener '%s': the socket is kept with its "
			    "previous options", conf->listeners[i].name);
	}
}

/* Are there shm indices enough for conf's listeners that are new? */
static int
check_listener_room(struct master *m, const struct esd_config *conf,
    struct config_diag *diag)
{
	uint64_t busy = supervise_busy_listeners(&m->sup);
	int need = 0, room = 0;

	for (size_t i = 0; i < conf->nlisteners; i++)
		need += shm_listener_find(m->shm, conf->listeners[i].name) == -1;
	for (int li = 0; li < ESD_MAX_LISTENERS; li++)
		room += !m->shm->listeners[li].in_use && !((busy >> li) & 1);
	if (need <= room)
		return 0;
	config_diag_add(diag, "%s: %d new listener names, but only %d of %d "
	    "counter sets are free while older workers drain; retry once "
	    "they have exited", conf->path, need, room, ESD_MAX_LISTENERS);
	return -1;
}

/*
 * Point of no return: close the dropped sockets, map listeners to their
 * shared counters by name (a kept name keeps its counts and its place
 * under max_connections), and make conf the master's.
 */
static void
commit_listeners(struct master *m, struct esd_config *conf, const int *fds)
{
	uint64_t busy = supervise_busy_listeners(&m->sup);

	for (size_t j = 0; j < m->conf->nlisteners; j++) {
		int kept = 0;
		for (size_t i = 0; i < conf->nlisteners; i++)
			kept |= fds[i] == m->listen_fds[j];
		if (!kept && close(m->listen_fds[j]) == -1)
			log_warn("close listener '%s'", m->conf->listeners[j].name);
		m->listen_fds[j] = -1;
	}
	for (int li = 0; li < ESD_MAX_LISTENERS; li++) {
		int wanted = 0;
		if (!m->shm->listeners[li].in_use)
			continue;
		for (size_t i = 0; i < conf->nlisteners; i++)
			wanted |= strcmp(conf->listeners[i].name,
			    m->shm->listeners[li].name) == 0;
		if (!wanted)
			shm_listener_release(m->shm, li);
	}
	for (size_t i = 0; i < conf->nlisteners; i++) {
		conf->listeners[i].si = shm_listener_claim(m->shm,
		    conf->listeners[i].name, conf->listeners[i].max_connections,
		    &busy);
		m->listen_fds[i] = fds[i];
	}
	m->conf = conf;
}

static void
reload_failed(struct master *m, struct config_diag *diag)
{
	for (size_t i = 0; i < diag->n; i++)
		log_errorx("%s", diag->lines[i]);
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
 * Re-read the config file and, if it is valid and can be applied, start a
 * new generation of workers on it.  Returns 0, or -1 with every reason in
 * diag (which the caller frees either way); the daemon serves on both.
 */
int
master_reload(struct master *m, struct config_diag *diag)
{
	struct esd_config *conf;
	struct generation *g;
	int fds[ESD_MAX_LISTENERS], nworkers, prev_slots;
	size_t kept = 0;

	memset(diag, 0, sizeof(*diag));
	log_info("reloading %s", m->conf->path);
	if (m->sup.stopping) {
		config_diag_add(diag, "esockd is stopping; nothing reloaded");
		goto fail;
	}
	if ((conf = config_load_file(m->conf->path, diag)) == NULL)
		goto fail;
	/* Both run, so that a bad certificate hides no unknown user. */
	if ((tls_load(conf, diag) == -1) | (proc_resolve(conf, diag) == -1))
		goto fail_conf;
	keep_restart_only(m->conf, conf);
	nworkers = resolve_workers(conf);
	prev_slots = supervise_free_slots(&m->sup);
	if (prev_slots < nworkers) {
		config_diag_add(diag, "%s: %d workers wanted but only %d worker "
		    "slots are free while older generations drain; retry once "
		    "they have exited (up to shutdown_timeout)", conf->path,
		    nworkers, prev_slots);
		goto fail_conf;
	}
	if (check_listener_room(m, conf, diag) == -1 ||
	    rebind(m, conf, fds, diag) == -1)
		goto fail_conf;
	for (size_t i = 0; i < conf->nlisteners; i++)
		kept += same_bind(m, &conf->listeners[i]) != -1;
	update_kept(m, conf, fds);
	log_info("reload: %zu listeners kept, %zu bound, %zu closed",
	    kept, conf->nlisteners - kept, m->conf->nlisteners - kept);
	commit_listeners(m, conf, fds);
	log_set_level((enum log_level)conf->log_level);
	set_fd_limit(conf);
	m->st.generation++;
	if ((g = generation_new(m, conf, fds)) == NULL) {
		/* Cannot happen short of memory: keep conf as the current. */
		log_errorx("reload: the new generation could not be made");
		m->st.generation--;
		return -1;
	}
	if (supervise_start(&m->sup, g) == -1)
		log_errorx("reload: generation %u is short of workers",
		    g->id);
	m->st.reloads++;
	m->st.last_reload_ok = 1;
	m->st.last_error[0] = '\0';
	m->st.last_reload = time(NULL);
	log_info("reloaded: generation %u, %zu listeners, %d workers; "
	    "generation %u drains", g->id, conf->nlisteners, g->nworkers,
	    g->id - 1);
	update_status(m);
	notify_ready();
	return 0;
fail_conf:
	config_free(conf);
fail:
	reload_failed(m, diag);
	return -1;
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
	struct generation *g = NULL;
	struct timeval tv = { STATUS_INTERVAL_S, 0 };

	for (size_t i = 0; i < ESD_MAX_LISTENERS; i++)
		m.listen_fds[i] = -1;
	m.st.started = time(NULL);
	log_init("master", 0);
	log_set_level((enum log_level)conf->log_level);
	set_fd_limit(conf);
	if (bind_all(&m) == -1)
		goto fail_conf;
	if ((m.shm = shm_create()) == NULL)
		goto fail_conf;
	for (size_t i = 0; i < conf->nlisteners; i++)
		conf->listeners[i].si = shm_listener_claim(m.shm,
		    conf->listeners[i].name, conf->listeners[i].max_connections,
		    NULL);
	if ((m.base = event_base_new()) == NULL) {
		log_errorx("cannot create an event base");
		goto fail_conf;
	}
	if (setup_signals(&m) == -1 || notify_init(m.base) == -1 ||
	    supervise_init(&m.sup, m.base, m.shm) == -1)
		goto fail_conf;
	if ((m.control = control_start(m.base, &m)) == NULL ||
	    (m.metrics = metrics_start(m.base, &m)) == NULL)
		goto fail_conf;
	m.sup.all_exited = all_exited;
	m.sup.arg = &m;
	if ((g = generation_new(&m, conf, m.listen_fds)) == NULL)
		goto fail_conf;
	if (supervise_start(&m.sup, g) == -1) {
		/* Not a loop to wait in: stop the workers that did start. */
		m.sup.stopping = 1;
		close_listeners(&m);
		supervise_signal_all(&m.sup, SIGTERM);
		wait_killed(&m);
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
	if (m.sup.stopping && supervise_running(&m.sup) > 0)
		wait_killed(&m);
	log_info("exiting");
	m.exit_code = 0;
	goto fail;
fail_conf:
	/* No generation owns conf yet. */
	close_listeners(&m);
	config_free(conf);
	m.conf = NULL;
fail:
	master_free(&m);
	return m.exit_code;
}
