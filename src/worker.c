/*
 * worker.c: the worker process: one event loop over inherited listening
 * sockets, from fork to exit.
 *
 * A worker never parses config; it runs on the copy of the master's
 * parsed config that fork gave it.  It handles SIGTERM/SIGINT as "drain":
 * stop accepting at once, let open sessions finish for shutdown_timeout,
 * then close what is left and exit 0.  SIGQUIT exits at once.  With
 * 'user' set, a worker drops to that user before anything else; the
 * master keeps its uid, since it must bind new ports on reload.
 */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "early_drop.h"
#include "proc.h"
#include "session.h"

/* Bytes read per read(2) when relaying; also the most held per direction. */
#define RELAY_CHUNK	(64 * 1024)

/* Count this process's open descriptors (the base of the fd budget). */
static int
count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 16;	/* a safe overestimate for the budget */
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;		/* the directory's own descriptor */
}

static int
fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (1 << 30))
		return 1 << 30;
	return (int)rl.rlim_cur;
}

/* Close every session at once (drain timeout, or SIGQUIT). */
static void
close_all(struct worker *w)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&w->sessions)) != NULL)
		session_close(s, SC_CLOSED_SHUTDOWN);
}

static void
on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	log_info("shutdown_timeout reached: closing %zu connections",
	    w->nsessions);
	close_all(w);
	event_base_loopexit(w->base, NULL);
}

/* Stop accepting and leave once the last session has gone. */
static void
drain(struct worker *w)
{
	struct timeval tv = { w->conf->shutdown_timeout, 0 };

	if (w->draining)
		return;
	w->draining = 1;
	/* Handed-off clients are their handler's and need no draining: let
	 * them go now (released), so that the handler announces them on a
	 * channel of a worker that stays, not on this one's. */
	for (size_t i = 0; i < w->nacceptors; i++) {
		acceptor_stop(&w->acceptors[i]);
		handoff_free(&w->acceptors[i]);
	}
	if (w->nsessions == 0) {
		event_base_loopexit(w->base, NULL);
		return;
	}
	log_info("draining %zu connections for up to %d s", w->nsessions,
	    w->conf->shutdown_timeout);
	w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
	if (w->drain_timer == NULL || evtimer_add(w->drain_timer, &tv) == -1) {
		log_errorx("cannot arm the drain timer; closing now");
		close_all(w);
		event_base_loopexit(w->base, NULL);
	}
}

/* Called by session_close: a draining worker leaves with its last one. */
void
worker_session_closed(struct worker *w)
{
	if (w->draining && w->nsessions == 0)
		event_base_loopexit(w->base, NULL);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct worker *w = arg;

	(void)what;
	if (sig == SIGUSR2) {
		for (size_t i = 0; i < w->nacceptors; i++)
			acceptor_sync(&w->acceptors[i]);
		return;
	}
	if (sig == SIGQUIT) {
		close_all(w);
		event_base_loopbreak(w->base);
		return;
	}
	drain(w);
}

static int
setup_signals(struct worker *w)
{
	/* SIGUSR2: the master changed a listener's suspended flag.  The
	 * master owns the ignored ones; a worker must not die of them. */
	static const int sigs[] = { SIGTERM, SIGINT, SIGQUIT, SIGUSR2 },
	    ignore[] = { SIGPIPE, SIGHUP, SIGUSR1 };
	sigset_t stops;

	_Static_assert(sizeof(sigs) / sizeof(sigs[0]) <=
	    sizeof(w->sig) / sizeof(w->sig[0]), "room for each signal's event");
	if (proc_signals(w->base, sigs, sizeof(sigs) / sizeof(sigs[0]),
	    ignore, sizeof(ignore) / sizeof(ignore[0]), on_signal, w,
	    w->sig) == -1)
		return -1;
	/* The stops the fork left blocked (supervise.c: child) come now. */
	sigemptyset(&stops);
	sigaddset(&stops, SIGTERM);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGQUIT);
	sigprocmask(SIG_UNBLOCK, &stops, NULL);
	return 0;
}

static void
worker_free(struct worker *w)
{
	close_all(w);
	for (size_t i = 0; i < w->nacceptors; i++)
		acceptor_stop(&w->acceptors[i]);
	for (size_t i = 0; i < w->nacceptors; i++) {
		event_del(&w->acceptors[i].idle_timer);
		event_del(&w->acceptors[i].hs_timer);
		/* After close_all: no session waits for a channel now. */
		handoff_free(&w->acceptors[i]);
	}
	free(w->acceptors);
	free(w->handed);
	accept_spare_free(w);
	free(w->scratch);
	pipe_pool_free(w);
	for (size_t i = 0; i < sizeof(w->sig) / sizeof(w->sig[0]); i++)
		if (w->sig[i] != NULL)
			event_free(w->sig[i]);
	if (w->drain_timer != NULL)
		event_free(w->drain_timer);
	if (w->base != NULL)
		event_base_free(w->base);
}

/*
 * The start of this worker in µs of the real clock, the first part of
 * its connection ids (session_id).  The real clock, unlike the
 * monotonic one, goes on across restarts and reboots.
 */
static int
id_epoch(struct worker *w)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1) {
		log_error("clock_gettime(CLOCK_REALTIME)");
		return -1;
	}
	w->id_epoch = (uint64_t)ts.tv_sec * 1000000u +
	    (uint64_t)ts.tv_nsec / 1000u;
	return 0;
}

/*
 * The early drop's generator (early_drop.c), seeded for this worker from
 * the kernel, so workers draw apart and a client cannot guess them.
 * Without getrandom (too early in boot), the start time and pid do.
 */
static void
seed_rng(struct worker *w)
{
	uint64_t e;

	if (getrandom(&e, sizeof(e), GRND_NONBLOCK) != (ssize_t)sizeof(e)) {
		log_warn("getrandom; the early drop is seeded from the clock");
		e = w->id_epoch ^ ((uint64_t)getpid() << 32);
	}
	w->rng = early_drop_seed(e);
}

/*
 * The body of a worker process: l[i] is listener i of conf as the master
 * made it (socket, shared-memory index, TLS context).  Returns the
 * process's exit status.
 */
int
worker_run(const struct esd_config *conf, const struct listener *l,
    struct shm_region *shm, int slot, int id, int nworkers, pid_t master)
{
	struct worker w = { .conf = conf, .shm = shm, .slot = slot, .id = id,
	    .nworkers = nworkers, .spare_fd = -1 };
	int rc = 1;

	TAILQ_INIT(&w.sessions);
	log_init("worker", id);
	if (id_epoch(&w) == -1)
		return 1;
	seed_rng(&w);
	/* First: a credential change would clear the parent-death signal. */
	if (proc_drop_privileges(conf) == -1)
		return 1;
	/* If the master dies, drain rather than serve unsupervised. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1)
		log_warn("prctl(PR_SET_PDEATHSIG)");
	if (getppid() != master) {
		log_errorx("the master died as this worker started; exiting");
		return 1;
	}
	if ((w.base = event_base_new()) == NULL) {
		log_errorx("cannot create an event base");
		goto fail;
	}
	if (setup_signals(&w) == -1)
		goto fail;
	w.scratch_size = RELAY_CHUNK;
	if ((w.scratch = malloc(w.scratch_size)) == NULL) {
		log_error("cannot allocate the relay buffer");
		goto fail;
	}
	w.acceptors = calloc(conf->nlisteners, sizeof(*w.acceptors));
	if (w.acceptors == NULL) {
		log_error("cannot allocate acceptors");
		goto fail;
	}
	for (size_t i = 0; i < conf->nlisteners; i++) {
		if (acceptor_init(&w.acceptors[i], &w, &l[i]) == -1)
			goto fail;
		w.nacceptors++;
	}
	w.fd_limit = fd_limit();
	w.fds_in_use = count_open_fds();
	accept_spare_init(&w);
	log_debug("serving %zu listeners, %d of %d descriptors in use",
	    w.nacceptors, w.fds_in_use, w.fd_limit);
	if (event_base_dispatch(w.base) == -1) {
		log_errorx("event loop failed");
		goto fail;
	}
	rc = 0;
fail:
	worker_free(&w);
	return rc;
}
