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

struct generation *generation_new(unsigned id, struct esd_config *,
	    int nworkers);
void	generation_free(struct generation *);
/* The table; all_exited(arg) runs once every worker has exited after
 * supervise_stop.  NULL (logged) when out of memory. */
struct supervisor *supervise_new(struct event_base *, struct shm_region *,
	    void (*all_exited)(void *), void *arg);
struct generation *supervise_current(const struct supervisor *);
int	supervise_stopping(const struct supervisor *);
uint64_t supervise_restarts(const struct supervisor *);
/* Is a worker of some generation running in slot? */
int	supervise_slot_live(const struct supervisor *, int slot);
/* SIGQUIT, or a start that failed: no drain; every worker gets sig and
 * is waited for, so none outlives the master. */
void	supervise_kill(struct supervisor *, int sig);
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
