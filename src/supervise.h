/*
 * supervise.h: the master's table of worker processes, by generation.
 */
#ifndef ESOCKD_SUPERVISE_H
#define ESOCKD_SUPERVISE_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include <event2/event.h>

#include "config.h"
#include "listener.h"
#include "shm.h"

/* Grace on top of shutdown_timeout before draining workers are killed. */
#define ESD_KILL_GRACE_S	5

struct supervisor;

/*
 * The workers started from one config, and what the master built from
 * it for them: listeners[i] is conf->listeners[i] at run time.  The
 * current generation is restarted when a worker dies; an older one only
 * drains, and is freed (config, TLS contexts and all) when its last
 * worker has exited.  The listening sockets are the master's: a kept one
 * is shared by two generations, and a dropped one is closed by the
 * master at the reload (fd set to -1 here), its copies in the draining
 * workers by them.
 */
struct generation {
	struct supervisor	*sup;
	unsigned		 id;		/* 1, 2, ... */
	struct esd_config	*conf;		/* owned */
	struct listener		 listeners[ESD_MAX_LISTENERS];
	int			 nworkers;
	int			 nprocs;	/* slots it holds */
	int			 retired;	/* replaced by a reload */
	struct event		*kill_timer;	/* drain deadline, retired */
	TAILQ_ENTRY(generation)	 entry;
};

struct worker_proc {
	struct supervisor	*sup;
	struct generation	*gen;		/* NULL when the slot is free */
	pid_t			 pid;		/* 0 when not running */
	int			 slot;		/* shm slot */
	int			 id;		/* slot + 1, as in the logs */
	struct event		*restart_ev;
};

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

struct generation *generation_new(unsigned id, struct esd_config *,
	    int nworkers);
void	generation_free(struct generation *);
int	supervise_init(struct supervisor *, struct event_base *,
	    struct shm_region *);
int	supervise_free_slots(const struct supervisor *);
int	supervise_start(struct supervisor *, struct generation *);
void	supervise_reap(struct supervisor *);
void	supervise_stop(struct supervisor *);
void	supervise_signal_all(struct supervisor *, int sig);
int	supervise_running(const struct supervisor *);
int	supervise_draining(const struct supervisor *);
uint64_t supervise_busy_listeners(const struct supervisor *);
size_t	supervise_listeners(const struct supervisor *,
	    const struct listener **out, int *draining, size_t max);
void	supervise_free(struct supervisor *);

#endif
