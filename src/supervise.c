/*
 * supervise.c: fork the workers, reap them, restart the ones that die.
 *
 * A worker that dies while the daemon is not stopping is replaced in the
 * same slot, after the master has taken back the dead worker's share of
 * the shared connection counts (shm_reclaim_slot), so the limit stays
 * exact.  Restarts are damped as an OTP supervisor damps them: more than
 * RESTART_INTENSITY restarts within RESTART_PERIOD seconds and further
 * restarts wait, 1 s doubling up to RESTART_BACKOFF_MAX s, instead of
 * spinning on a worker that cannot start.
 */
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

#define RESTART_INTENSITY	5
#define RESTART_PERIOD		10	/* seconds */
#define RESTART_BACKOFF_MAX	30	/* seconds */

/* Signals the master handles through libevent; a child resets them. */
static const int master_signals[] = {
	SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP, SIGPIPE
};

static int
cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* In a new child: drop every descriptor but stdio and the listeners. */
static void
close_inherited(const int *keep, size_t nkeep)
{
	int sorted[ESD_MAX_LISTENERS];
	unsigned lo = 3;

	memcpy(sorted, keep, nkeep * sizeof(int));
	qsort(sorted, nkeep, sizeof(int), cmp_int);
	for (size_t i = 0; i < nkeep; i++) {
		if ((unsigned)sorted[i] > lo)
			close_range(lo, (unsigned)sorted[i] - 1, 0);
		lo = (unsigned)sorted[i] + 1;
	}
	close_range(lo, ~0U, 0);
}

/* The child side of fork: a clean process that becomes a worker. */
static void __attribute__((noreturn))
child(struct supervisor *sup, struct worker_proc *wp, const sigset_t *mask,
    pid_t master)
{
	for (size_t i = 0; i < sizeof(master_signals) / sizeof(int); i++)
		signal(master_signals[i], SIG_DFL);
	/*
	 * SIGUSR2 ("re-read the suspended flags") may come before the worker
	 * watches it; its default would kill.  The worker reads the flags
	 * after it starts watching, so an ignored one loses nothing.
	 */
	signal(SIGUSR2, SIG_IGN);
	sigprocmask(SIG_SETMASK, mask, NULL);
	/*
	 * The master's event base shares its epoll and signal descriptors
	 * with the master: close them first, so that freeing the base here
	 * (which libevent needs before another base may own signals) cannot
	 * touch the master's registrations.
	 */
	close_inherited(sup->listen_fds, sup->conf->nlisteners);
	event_base_free(sup->base);
	exit(worker_run(sup->conf, sup->shm, wp->slot, wp->id, sup->nworkers,
	    sup->listen_fds, master));
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
	log_info("worker %d started (pid %ld)", wp->id, (long)pid);
	return 0;
}

static void
on_restart(evutil_socket_t fd, short what, void *arg)
{
	struct worker_proc *wp = arg;
	struct supervisor *sup = wp->sup;

	(void)fd;
	(void)what;
	if (sup->stopping)
		return;
	if (spawn(sup, wp) == -1) {
		struct timeval tv = { 1, 0 };
		evtimer_add(wp->restart_ev, &tv);	/* fork failed: retry */
	}
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
	if (sup->stopping) {
		log_at(status == 0 ? LOG_LVL_INFO : LOG_LVL_WARN,
		    "worker %d %s", wp->id, how);
		return;
	}
	delay = restart_delay(sup);
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
		for (int i = 0; i < sup->nworkers; i++) {
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

	for (int i = 0; i < sup->nworkers; i++)
		n += sup->procs[i].pid != 0;
	return n;
}

void
supervise_signal_all(struct supervisor *sup, int sig)
{
	for (int i = 0; i < sup->nworkers; i++) {
		struct worker_proc *wp = &sup->procs[i];
		if (wp->pid != 0 && kill(wp->pid, sig) == -1 && errno != ESRCH)
			log_warn("kill worker %d (pid %ld)", wp->id,
			    (long)wp->pid);
	}
}

/* Fork the first generation of workers. */
int
supervise_start(struct supervisor *sup)
{
	for (int i = 0; i < sup->nworkers; i++) {
		struct worker_proc *wp = &sup->procs[i];
		wp->sup = sup;
		wp->slot = i;
		wp->id = i + 1;
		wp->restart_ev = evtimer_new(sup->base, on_restart, wp);
		if (wp->restart_ev == NULL) {
			log_errorx("cannot allocate a restart timer");
			return -1;
		}
		if (spawn(sup, wp) == -1)
			return -1;
	}
	return 0;
}

void
supervise_free(struct supervisor *sup)
{
	for (int i = 0; i < sup->nworkers; i++)
		if (sup->procs[i].restart_ev != NULL)
			event_free(sup->procs[i].restart_ev);
}
