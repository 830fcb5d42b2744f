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
#include "shm.h"

/* Grace on top of shutdown_timeout before draining workers are killed. */
#define ESD_KILL_GRACE_S	5

struct supervisor;

/*
 * The workers started from one config.  The current generation is
 * restarted when a worker dies; an older one only drains, and is freed
 * (config and all) when its last worker has exited.
 */
struct generation {
	struct supervisor	*sup;
	unsigned		 id;		/* 1, 2, ... */
	struct esd_config	*conf;		/* owned */
	int			 listen_fds[ESD_MAX_LISTENERS];
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
void	supervise_free(struct supervisor *);

#endif
