/*
 * supervise.h: the master's table of worker processes.
 */
#ifndef ESOCKD_SUPERVISE_H
#define ESOCKD_SUPERVISE_H

#include <sys/types.h>
#include <time.h>

#include <event2/event.h>

#include "config.h"
#include "shm.h"

struct supervisor;

struct worker_proc {
	struct supervisor *sup;
	pid_t		 pid;		/* 0 when not running */
	int		 slot;		/* shm slot */
	int		 id;		/* 1-based, as in the logs */
	struct event	*restart_ev;
};

struct supervisor {
	struct event_base	*base;
	const struct esd_config	*conf;
	struct shm_region	*shm;
	const int		*listen_fds;
	int			 nworkers;
	struct worker_proc	 procs[ESD_MAX_WORKERS];
	int			 stopping;
	/* Crash-loop damping, OTP style: intensity restarts per period. */
	struct timespec		 recent[8];	/* ring of restart times */
	unsigned		 nrecent;
	int			 backoff_s;
	void			(*all_exited)(void *);
	void			*arg;
};

int	supervise_start(struct supervisor *);
void	supervise_reap(struct supervisor *);
void	supervise_signal_all(struct supervisor *, int sig);
int	supervise_running(const struct supervisor *);
void	supervise_free(struct supervisor *);

#endif
