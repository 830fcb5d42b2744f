/*
 * supervise.c: fork the workers, by generation; reap them, restart the
 * ones that die.
 *
 * A generation is the set of workers started from one config.  A reload
 * starts a new one in free slots and retires the old one, whose workers
 * stop accepting at once and drain (SIGTERM), and are killed if they are
 * still there shutdown_timeout (theirs) plus a grace later.  A worker of
 * the current generation that dies while the daemon is not stopping is
 * replaced in the same slot, after the master has taken back the dead
 * worker's share of the shared connection counts (shm_reclaim_slot), so
 * the limit stays exact; a retired one is never replaced.  Restarts are damped as an OTP supervisor damps them: more than
 * RESTART_INTENSITY restarts within RESTART_PERIOD seconds and further
 * restarts wait, 1 s doubling up to RESTART_BACKOFF_MAX s, instead of
 * spinning on a worker that cannot start.
 */
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "tls_ctx.h"
#include "worker.h"

#define RESTART_INTENSITY	5
#define RESTART_PERIOD		10	/* seconds */
#define RESTART_BACKOFF_MAX	30	/* seconds */

/* One worker slot: the process in it, and the generation it serves. */
struct worker_proc {
	struct supervisor	*sup;
	struct generation	*gen;		/* NULL when the slot is free */
	pid_t			 pid;		/* 0 when not running */
	int			 slot;		/* shm slot */
	int			 id;		/* slot + 1, as in the logs */
	struct event		*restart_ev;
};

/* The table of worker slots; opaque outside this file. */
struct supervisor {
	struct event_base	*base;
	struct shm_region	*shm;
	struct generation	*cur;
	TAILQ_HEAD(, generation) gens;		/* every one with a worker */
	struct worker_proc	 procs[ESD_MAX_SLOTS];
	int			 stopping;
	uint64_t		 restarts;	/* workers replaced */
	/* Crash-loop damping, OTP style: intensity restarts per period. */
	struct timespec		 recent[8];	/* ring of restart times */
	unsigned		 nrecent;
	int			 backoff_s;
	void			(*all_exited)(void *);
	void			*arg;
};

/* Signals the master handles through libevent; a child resets them. */
static const int master_signals[] = {
	SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP, SIGPIPE
};

/* The child side of fork: a clean process that becomes a worker. */
static void __attribute__((noreturn))
child(struct supervisor *sup, struct worker_proc *wp, const sigset_t *mask,
    pid_t master)
{
	struct generation *g = wp->gen;
	int keep[ESD_MAX_LISTENERS];
	sigset_t stops;

	for (size_t i = 0; i < sizeof(master_signals) / sizeof(int); i++)
		signal(master_signals[i], SIG_DFL);
	/*
	 * SIGUSR2 ("re-read the suspended flags") may come before the worker
	 * watches it; its default would kill.  The worker reads the flags
	 * after it starts watching, so an ignored one loses nothing.
	 */
	signal(SIGUSR2, SIG_IGN);
	/*
	 * A stop (SIGTERM, SIGINT, SIGQUIT: esockd stopping, or a reload
	 * retiring this generation) that comes before the worker watches it
	 * would kill it by default, and the master would log a worker killed
	 * by a signal.  They stay blocked, and so pending, until worker_run
	 * watches them: then the worker drains as asked.  (Seen under
	 * valgrind, where a reload storm retires workers still starting.)
	 */
	stops = *mask;
	sigaddset(&stops, SIGTERM);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGQUIT);
	sigprocmask(SIG_SETMASK, &stops, NULL);
	/*
	 * The master's event base shares its epoll and signal descriptors
	 * with the master: close them first, so that freeing the base here
	 * (which libevent needs before another base may own signals) cannot
	 * touch the master's registrations.
	 */
	for (size_t i = 0; i < g->conf->nlisteners; i++)
		keep[i] = g->listeners[i].fd;
	proc_close_fds_except(keep, g->conf->nlisteners);
	event_base_free(sup->base);
	exit(worker_run(g->conf, g->listeners, sup->shm, wp->slot, wp->id,
	    g->nworkers, master));
}

static int
spawn(struct supervisor *sup, struct worker_proc *wp)
{
	sigset_t all, old;
	pid_t pid, master = getpid();

	/*
	 * Widen the range of slots that limit sums cover before the child
	 * exists: a worker admitting its first client before the parent got
	 * here would otherwise be invisible to every sum, its own included.
	 */
	shm_use_slot(sup->shm, wp->slot);
	atomic_store(&sup->shm->retired[wp->slot], 0);
	/* No signal may reach the child's copy of the master's handlers. */
	sigfillset(&all);
	if (sigprocmask(SIG_BLOCK, &all, &old) == -1) {
		log_error("sigprocmask");
		return -1;
	}
	pid = fork();
	if (pid == 0)
		child(sup, wp, &old, master);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid == -1) {
		log_error("cannot fork worker %d", wp->id);
		return -1;
	}
	wp->pid = pid;
	log_info("worker %d started (pid %ld) in generation %u", wp->id,
	    (long)pid, wp->gen->id);
	return 0;
}

/* Spawn, or try again in a second if fork failed. */
static void
spawn_or_retry(struct worker_proc *wp)
{
	struct timeval tv = { 1, 0 };

	if (spawn(wp->sup, wp) == -1 && evtimer_add(wp->restart_ev, &tv) == -1)
		log_errorx("worker %d: cannot schedule another fork", wp->id);
}

static void
on_restart(evutil_socket_t fd, short what, void *arg)
{
	struct worker_proc *wp = arg;

	(void)fd;
	(void)what;
	if (wp->sup->stopping || wp->gen == NULL || wp->gen->retired)
		return;
	spawn_or_retry(wp);
}

/*
 * A generation for conf, which it owns from here on, with nworkers
 * workers to come; its listeners have no socket, index or context yet.
 * NULL (logged, conf freed) when out of memory.
 */
struct generation *
generation_new(unsigned id, struct esd_config *conf, int nworkers)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (g == NULL) {
		log_error("cannot allocate a worker generation");
		config_free(conf);
		return NULL;
	}
	g->id = id;
	g->conf = conf;
	g->nworkers = nworkers;
	for (size_t i = 0; i < conf->nlisteners; i++) {
		g->listeners[i].conf = &conf->listeners[i];
		g->listeners[i].fd = -1;
		g->listeners[i].si = -1;
	}
	return g;
}

/*
 * Free a generation and what it owns (config, TLS contexts), not its
 * sockets, which are the master's.  For one the supervisor holds, see
 * gen_free.
 */
void
generation_free(struct generation *g)
{
	if (g == NULL)
		return;
	if (g->kill_timer != NULL)
		event_free(g->kill_timer);
	tls_ctx_free_all(g->listeners, g->conf->nlisteners);
	config_free(g->conf);
	free(g);
}

static void
gen_free(struct supervisor *sup, struct generation *g)
{
	TAILQ_REMOVE(&sup->gens, g, entry);
	generation_free(g);
}

/*
 * A slot's worker is gone for good: the slot is free again.  Returns 1
 * when that was the last slot of a retired generation, now freed.
 */
static int
slot_release(struct supervisor *sup, struct worker_proc *wp)
{
	struct generation *g = wp->gen;

	evtimer_del(wp->restart_ev);
	wp->gen = NULL;
	if (g == NULL)
		return 0;
	g->nprocs--;
	if (!g->retired || g->nprocs > 0)
		return 0;
	log_info("generation %u has drained", g->id);
	gen_free(sup, g);
	return 1;
}

/* How long to wait before the next restart: 0 unless in a crash loop. */
static int
restart_delay(struct supervisor *sup)
{
	struct timespec now;
	unsigned cap = sizeof(sup->recent) / sizeof(sup->recent[0]);
	unsigned oldest;

	clock_gettime(CLOCK_MONOTONIC, &now);
	sup->recent[sup->nrecent % cap] = now;
	sup->nrecent++;
	if (sup->nrecent <= RESTART_INTENSITY) {
		sup->backoff_s = 0;
		return 0;
	}
	oldest = (sup->nrecent - 1 - RESTART_INTENSITY) % cap;
	if (now.tv_sec - sup->recent[oldest].tv_sec >= RESTART_PERIOD) {
		sup->backoff_s = 0;
		return 0;
	}
	sup->backoff_s = sup->backoff_s ? sup->backoff_s * 2 : 1;
	if (sup->backoff_s > RESTART_BACKOFF_MAX)
		sup->backoff_s = RESTART_BACKOFF_MAX;
	return sup->backoff_s;
}

static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
		    strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* A worker is gone: take back its counts, then replace it if we should. */
static void
worker_died(struct supervisor *sup, struct worker_proc *wp, int status)
{
	char how[96];
	int64_t lost = shm_reclaim_slot(sup->shm, wp->slot);
	int delay;
	struct timeval tv = { 0, 0 };
	pid_t pid = wp->pid;

	describe_exit(status, how, sizeof(how));
	wp->pid = 0;
	if (sup->stopping || wp->gen->retired) {
		log_at(status == 0 && lost == 0 ? LOG_LVL_INFO : LOG_LVL_WARN,
		    "worker %d (generation %u) %s (%lld connections lost)",
		    wp->id, wp->gen->id, how, (long long)lost);
		slot_release(sup, wp);
		return;
	}
	delay = restart_delay(sup);
	sup->restarts++;
	if (delay == 0)
		log_warnx("worker %d (pid %ld) %s; restarting (%lld "
		    "connections lost)", wp->id, (long)pid, how,
		    (long long)lost);
	else
		log_warnx("worker %d %s; crash loop (over %d restarts in %d s),"
		    " next restart in %d s (%lld connections lost)", wp->id,
		    how, RESTART_INTENSITY, RESTART_PERIOD, delay,
		    (long long)lost);
	tv.tv_sec = delay;
	if (evtimer_add(wp->restart_ev, &tv) == -1)
		log_errorx("worker %d: cannot schedule its restart", wp->id);
}

/* Collect every exited child (on SIGCHLD). */
void
supervise_reap(struct supervisor *sup)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < ESD_MAX_SLOTS; i++) {
			if (sup->procs[i].pid == pid) {
				worker_died(sup, &sup->procs[i], status);
				break;
			}
		}
	}
	if (pid == -1 && errno != ECHILD)
		log_warn("waitpid");
	if (sup->stopping && supervise_running(sup) == 0 &&
	    sup->all_exited != NULL)
		sup->all_exited(sup->arg);
}

int
supervise_running(const struct supervisor *sup)
{
	int n = 0;

	for (int i = 0; i < ESD_MAX_SLOTS; i++)
		n += sup->procs[i].pid != 0;
	return n;
}

/* Workers of retired generations still draining. */
int
supervise_draining(const struct supervisor *sup)
{
	int n = 0;

	for (int i = 0; i < ESD_MAX_SLOTS; i++)
		n += sup->procs[i].pid != 0 && sup->procs[i].gen->retired;
	return n;
}

int
supervise_free_slots(const struct supervisor *sup)
{
	int n = 0;

	for (int i = 0; i < ESD_MAX_SLOTS; i++)
		n += sup->procs[i].gen == NULL;
	return n;
}

/* Bit si set for every shm listener index a live generation counts on. */
uint64_t
supervise_busy_listeners(const struct supervisor *sup)
{
	const struct generation *g;
	uint64_t busy = 0;

	TAILQ_FOREACH(g, &sup->gens, entry)
		for (size_t i = 0; i < g->conf->nlisteners; i++)
			busy |= 1ULL << g->listeners[i].si;
	return busy;
}

/*
 * Every listener some live generation serves, each place in shared
 * memory once: the current generation's first, then those an older one
 * still drains that no newer one took over (draining[i] = 1).  Returns
 * how many were put in out.
 */
size_t
supervise_listeners(const struct supervisor *sup, const struct listener **out,
    int *draining, size_t max)
{
	const struct generation *g;
	uint64_t seen = 0;
	size_t n = 0;

	if (sup->cur == NULL)
		return 0;
	for (size_t i = 0; i < sup->cur->conf->nlisteners && n < max; i++) {
		out[n] = &sup->cur->listeners[i];
		draining[n++] = 0;
		seen |= 1ULL << sup->cur->listeners[i].si;
	}
	TAILQ_FOREACH(g, &sup->gens, entry) {
		for (size_t i = 0; g != sup->cur && i < g->conf->nlisteners &&
		    n < max; i++) {
			if ((seen >> g->listeners[i].si) & 1)
				continue;
			seen |= 1ULL << g->listeners[i].si;
			out[n] = &g->listeners[i];
			draining[n++] = 1;
		}
	}
	return n;
}

static void
signal_gen(struct supervisor *sup, const struct generation *g, int sig)
{
	for (int i = 0; i < ESD_MAX_SLOTS; i++) {
		struct worker_proc *wp = &sup->procs[i];
		if (wp->pid == 0 || (g != NULL && wp->gen != g))
			continue;
		if (kill(wp->pid, sig) == -1 && errno != ESRCH)
			log_warn("kill worker %d (pid %ld)", wp->id,
			    (long)wp->pid);
	}
}

void
supervise_signal_all(struct supervisor *sup, int sig)
{
	signal_gen(sup, NULL, sig);
}

static void
on_gen_kill(evutil_socket_t fd, short what, void *arg)
{
	struct generation *g = arg;

	(void)fd;
	(void)what;
	log_warnx("generation %u: %d workers still draining %d s after its "
	    "shutdown_timeout; killing them", g->id, g->nprocs,
	    ESD_KILL_GRACE_S);
	signal_gen(g->sup, g, SIGKILL);
}

/* Kill what is left of g after its own shutdown_timeout and a grace. */
static void
arm_deadline(struct supervisor *sup, struct generation *g)
{
	struct timeval tv = { g->conf->shutdown_timeout + ESD_KILL_GRACE_S, 0 };

	if (g->kill_timer != NULL)
		return;		/* already draining: its deadline stands */
	g->kill_timer = evtimer_new(sup->base, on_gen_kill, g);
	if (g->kill_timer == NULL || evtimer_add(g->kill_timer, &tv) == -1)
		log_errorx("generation %u: cannot arm its drain deadline", g->id);
}

/*
 * Replaced by a reload: stop the workers' accepting at once (SIGTERM is
 * "drain"), give up their pending restarts, and arm the deadline.
 */
static void
retire(struct supervisor *sup, struct generation *g)
{
	int running = 0;

	g->retired = 1;
	for (int i = 0; i < ESD_MAX_SLOTS; i++) {
		if (sup->procs[i].gen != g)
			continue;
		atomic_store(&sup->shm->retired[i], 1);
		running += sup->procs[i].pid != 0;
	}
	if (running > 0) {
		signal_gen(sup, g, SIGTERM);
		arm_deadline(sup, g);
	}
	/* Slots waiting for a restart are free now; the last frees g. */
	for (int i = 0; i < ESD_MAX_SLOTS; i++) {
		struct worker_proc *wp = &sup->procs[i];
		if (wp->gen == g && wp->pid == 0 && slot_release(sup, wp))
			return;
	}
}

/*
 * The daemon stops: every worker drains, and each generation is killed
 * at its own deadline (one already draining keeps the one it has).
 */
void
supervise_stop(struct supervisor *sup)
{
	struct generation *g;

	sup->stopping = 1;
	signal_gen(sup, NULL, SIGTERM);
	TAILQ_FOREACH(g, &sup->gens, entry)
		arm_deadline(sup, g);
}

/*
 * Make g the current generation: fork its workers into free slots (the
 * caller checked there are enough) and retire the one before it.  g is
 * the supervisor's from here on, whatever happens.
 */
int
supervise_start(struct supervisor *sup, struct generation *g)
{
	struct generation *old = sup->cur;
	int started = 0;

	g->sup = sup;
	TAILQ_INSERT_TAIL(&sup->gens, g, entry);
	sup->cur = g;
	for (int i = 0; i < ESD_MAX_SLOTS && started < g->nworkers; i++) {
		struct worker_proc *wp = &sup->procs[i];
		if (wp->gen != NULL)
			continue;
		wp->gen = g;
		g->nprocs++;
		started++;
		if (old == NULL) {
			/* At start a fork failure is fatal, not retried. */
			if (spawn(sup, wp) == -1)
				return -1;
		} else {
			spawn_or_retry(wp);
		}
	}
	if (started < g->nworkers) {
		log_errorx("generation %u: only %d of %d worker slots free",
		    g->id, started, g->nworkers);
		return -1;
	}
	if (old != NULL)
		retire(sup, old);
	return 0;
}

struct supervisor *
supervise_new(struct event_base *base, struct shm_region *shm,
    void (*all_exited)(void *), void *arg)
{
	struct supervisor *sup = calloc(1, sizeof(*sup));

	if (sup == NULL) {
		log_errorx("cannot allocate the worker table");
		return NULL;
	}
	sup->base = base;
	sup->shm = shm;
	sup->all_exited = all_exited;
	sup->arg = arg;
	TAILQ_INIT(&sup->gens);
	for (int i = 0; i < ESD_MAX_SLOTS; i++) {
		struct worker_proc *wp = &sup->procs[i];
		wp->sup = sup;
		wp->slot = i;
		wp->id = i + 1;
		wp->restart_ev = evtimer_new(base, on_restart, wp);
		if (wp->restart_ev == NULL) {
			log_errorx("cannot allocate a restart timer");
			supervise_free(sup);
			return NULL;
		}
	}
	return sup;
}

struct generation *
supervise_current(const struct supervisor *sup)
{
	return sup->cur;
}

int
supervise_stopping(const struct supervisor *sup)
{
	return sup->stopping;
}

uint64_t
supervise_restarts(const struct supervisor *sup)
{
	return sup->restarts;
}

int
supervise_slot_live(const struct supervisor *sup, int slot)
{
	return sup->procs[slot].gen != NULL;
}

void
supervise_kill(struct supervisor *sup, int sig)
{
	sup->stopping = 1;
	signal_gen(sup, NULL, sig);
	for (int i = 0; i < ESD_MAX_SLOTS; i++) {
		struct worker_proc *wp = &sup->procs[i];
		if (wp->pid != 0 && waitpid(wp->pid, NULL, 0) == -1 &&
		    errno != ECHILD)
			log_warn("waitpid worker %d", wp->id);
		wp->pid = 0;
	}
}

/* Free the table and every generation (with its config). */
void
supervise_free(struct supervisor *sup)
{
	struct generation *g;

	if (sup == NULL)
		return;
	for (int i = 0; i < ESD_MAX_SLOTS; i++)
		if (sup->procs[i].restart_ev != NULL)
			event_free(sup->procs[i].restart_ev);
	while ((g = TAILQ_FIRST(&sup->gens)) != NULL)
		gen_free(sup, g);
	free(sup);
}
