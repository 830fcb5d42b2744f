/*
 * master.h: the supervising process, and what its control socket and
 * metrics endpoint may ask of it.
 */
#ifndef ESOCKD_MASTER_H
#define ESOCKD_MASTER_H

#include <stdint.h>
#include <time.h>

#include "config.h"
#include "listener.h"
#include "oneshot.h"
#include "shm.h"

struct master;
struct stats;

/* The master's own state, for esockdctl and /metrics. */
struct master_status {
	unsigned	generation;	/* 1 at start, +1 per applied reload */
	int		workers;	/* in the current generation */
	int		running;	/* worker processes alive, all generations */
	int		draining;	/* of those, old generations still draining */
	uint64_t	reloads;	/* applied */
	uint64_t	reload_failures; /* refused: bad config, bind failed... */
	uint64_t	worker_restarts; /* workers replaced after dying */
	int		last_reload_ok;	/* 1 until a reload fails */
	time_t		started;
	time_t		last_reload;	/* 0 if never */
	char		last_error[512]; /* first error of the last failure */
	/* The operator endpoints; *_on is 0 when one is turned off. */
	int		control_on, metrics_on;
	struct oneshot_counters control, metrics;
};

int	master_run(struct esd_config *);

const struct esd_config *master_config(const struct master *);
struct shm_region	*master_shm(const struct master *);
void	master_status(const struct master *, struct master_status *);
int	master_reload(struct master *, struct config_diag *errors);
/* A listener of the current config by name, or NULL. */
const struct listener *master_find_listener(const struct master *,
	    const char *name);
int	master_suspend(struct master *, const char *listener, int suspend);
/* esockdctl set: listener's limit is v from the next admission on; *old
 * is the one it replaces.  -1 when there is no such listener. */
int	master_set_limit(struct master *, const char *listener, int v,
	    int *old);
/* One snapshot of every listener (draining ones too) and the status. */
void	master_stats(struct master *, struct stats *);

#endif
