/*
 * reload.h: a reload as a plan, then its commit (master only).
 */
#ifndef ESOCKD_RELOAD_H
#define ESOCKD_RELOAD_H

#include <stdint.h>

#include "config.h"
#include "shm.h"
#include "supervise.h"

/* What a reload will do, made before anything changes. */
struct reload_plan {
	struct generation	*cur;	/* serving now */
	struct generation	*next;	/* to serve; the plan's until the commit */
	/* KEEP: the index in cur of the listener with the same bind; NEW: -1 */
	int			 from[ESD_MAX_LISTENERS];
	size_t			 kept, dropped;
};

/*
 * Plan the move from cur to conf (which the plan owns from here on):
 * restart-only keys keep their running value, the certificates load, the
 * new listeners are bound, and the room in shared memory and in worker
 * slots is checked.  Returns 0, or -1 with every reason in diag and
 * nothing changed (conf freed, what was bound closed).
 */
int	reload_prepare(struct reload_plan *, struct generation *cur,
	    struct esd_config *conf, unsigned id, int nworkers, int free_slots,
	    struct shm_region *, uint64_t busy, struct config_diag *);
/*
 * The point of no return: kept sockets take the new options, dropped
 * ones are closed, and every listener of next gets its place in shared
 * memory.  next is then ready for supervise_start.
 */
void	reload_commit(struct reload_plan *, struct shm_region *, uint64_t busy);

#endif
