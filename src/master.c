/*
 * master.c: the master process: limits, listening sockets, shared memory,
 * signals and the supervisor, but never a client byte.
 *
 * Signals arrive through libevent (evsignal), so every handler below runs
 * in the loop, not in signal context.
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

#include "control.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "shm.h"
#include "supervise.h"

/* Grace on top of shutdown_timeout before the master kills stragglers. */
#define KILL_GRACE_S	5

struct master {
	struct event_base	*base;
	struct esd_config	*conf;
	struct shm_region	*shm;
	int			 listen_fds[ESD_MAX_LISTENERS];
	struct supervisor	 sup;
	struct event		*sig[6];
	struct event		*kill_timer;
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

/* Bind every listener; report each failure, fail if any failed. */
static int
bind_all(struct master *m)
{
	int rc = 0;

	for (size_t i = 0; i < m->conf->nlisteners; i++) {
		m->listen_fds[i] = listener_bind(&m->conf->listeners[i]);
		if (m->listen_fds[i] == -1)
			rc = -1;
	}
	return rc;
}

static void
close_listeners(struct master *m)
{
	for (size_t i = 0; i < m->conf->nlisteners; i++) {
		if (m->listen_fds[i] == -1)
			continue;
		if (close(m->listen_fds[i]) == -1)
			log_warn("close listener '%s'", m->conf->listeners[i].name);
		m->listen_fds[i] = -1;
	}
}

/* SIGUSR1: one line of counters per listener. */
static void
log_stats(struct master *m)
{
	for (size_t i = 0; i < m->conf->nlisteners; i++) {
		struct shm_totals t;
		char per[ESD_MAX_SLOTS * 12] = "";
		uint32_t n = atomic_load(&m->shm->nslots);
		size_t off = 0;

		shm_totals(m->shm, (int)i, &t);
		for (uint32_t s = 0; s < n && off < sizeof(per); s++)
			off += (size_t)snprintf(per + off, sizeof(per) - off,
			    "%s%lld", s ? "/" : "", (long long)atomic_load(
			    &m->shm->counters[i][s].cur));
		log_info("stats listener=%s connections=%lld max_connections=%d "
		    "accepted=%llu closed=%llu rejected_limit=%llu "
		    "accept_errors=%llu backend_failures=%llu bytes_in=%llu "
		    "bytes_out=%llu per_worker=%s", m->conf->listeners[i].name,
		    (long long)t.cur, atomic_load(
		    &m->shm->listeners[i].max_connections),
		    (unsigned long long)t.accepted, (unsigned long long)t.closed,
		    (unsigned long long)t.rejected_limit,
		    (unsigned long long)t.accept_errors,
		    (unsigned long long)t.backend_failures,
		    (unsigned long long)t.bytes_in,
		    (unsigned long long)t.bytes_out, per);
	}
}

static void
all_exited(void *arg)
{
	struct master *m = arg;

	log_info("all workers have exited");
	event_base_loopbreak(m->base);
}

static void
on_kill_timer(evutil_socket_t fd, short what, void *arg)
{
	struct master *m = arg;

	(void)fd;
	(void)what;
	log_warnx("workers still running %d s after shutdown_timeout; "
	    "killing them", KILL_GRACE_S);
	supervise_signal_all(&m->sup, SIGKILL);
}

/* SIGTERM/SIGINT: stop accepting everywhere, let workers drain. */
static void
stop(struct master *m)
{
	struct timeval tv = { m->conf->shutdown_timeout + KILL_GRACE_S, 0 };

	if (m->sup.stopping)
		return;
	log_info("stopping: open connections may finish for up to %d s",
	    m->conf->shutdown_timeout);
	notify_stopping();
	m->sup.stopping = 1;
	close_listeners(m);
	supervise_signal_all(&m->sup, SIGTERM);
	if (supervise_running(&m->sup) == 0) {
		event_base_loopbreak(m->base);
		return;
	}
	m->kill_timer = evtimer_new(m->base, on_kill_timer, m);
	if (m->kill_timer == NULL || evtimer_add(m->kill_timer, &tv) == -1)
		log_errorx("cannot arm the shutdown kill timer");
}

/* SIGQUIT: no drain; workers are killed and the master leaves now. */
static void
quit(struct master *m)
{
	log_info("quit: killing workers without draining");
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
	case SIGHUP:
		log_warnx("SIGHUP: configuration reload is not implemented "
		    "yet; restart esockd to apply changes");
		break;
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
	for (int i = 0; i < m->sup.nworkers; i++) {
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

void
master_status(const struct master *m, struct master_status *st)
{
	*st = m->st;
	st->workers = m->sup.nworkers;
	st->running = supervise_running(&m->sup);
}

/* Replaced by the generation reload in the next change. */
int
master_reload(struct master *m, struct config_diag *errors)
{
	(void)m;
	errors->lines = NULL;
	errors->n = 0;
	return -1;
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
	if (m->kill_timer != NULL)
		event_free(m->kill_timer);
	supervise_free(&m->sup);
	if (m->base != NULL)
		event_base_free(m->base);
	close_listeners(m);
	shm_destroy(m->shm);
}

/* Run the daemon with a validated config; returns the exit status. */
int
master_run(struct esd_config *conf)
{
	struct master m = { .conf = conf, .exit_code = 1,
	    .st = { .generation = 1, .last_reload_ok = 1 } };

	for (size_t i = 0; i < ESD_MAX_LISTENERS; i++)
		m.listen_fds[i] = -1;
	m.st.started = time(NULL);
	log_init("master", 0);
	log_set_level((enum log_level)conf->log_level);
	set_fd_limit(conf);
	if (bind_all(&m) == -1)
		goto fail;
	if ((m.shm = shm_create()) == NULL)
		goto fail;
	for (size_t i = 0; i < conf->nlisteners; i++)
		conf->listeners[i].si = shm_listener_claim(m.shm,
		    conf->listeners[i].name, conf->listeners[i].max_connections,
		    NULL);
	if ((m.base = event_base_new()) == NULL) {
		log_errorx("cannot create an event base");
		goto fail;
	}
	if (setup_signals(&m) == -1 || notify_init(m.base) == -1)
		goto fail;
	if ((m.control = control_start(m.base, &m)) == NULL ||
	    (m.metrics = metrics_start(m.base, &m)) == NULL)
		goto fail;
	m.sup = (struct supervisor){
		.base = m.base, .conf = conf, .shm = m.shm,
		.listen_fds = m.listen_fds, .nworkers = resolve_workers(conf),
		.all_exited = all_exited, .arg = &m,
	};
	if (supervise_start(&m.sup) == -1) {
		/* Not a loop to wait in: stop the workers that did start. */
		m.sup.stopping = 1;
		close_listeners(&m);
		supervise_signal_all(&m.sup, SIGTERM);
		wait_killed(&m);
		goto fail;
	}
	log_info("ready: %zu listeners, %d workers", conf->nlisteners,
	    m.sup.nworkers);
	notify_status("%zu listeners, %d workers, 0 connections",
	    conf->nlisteners, m.sup.nworkers);
	notify_ready();
	if (event_base_dispatch(m.base) == -1) {
		log_errorx("event loop failed");
		goto fail;
	}
	if (m.sup.stopping && supervise_running(&m.sup) > 0)
		wait_killed(&m);
	log_info("exiting");
	m.exit_code = 0;
fail:
	master_free(&m);
	return m.exit_code;
}
