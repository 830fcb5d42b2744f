/*
 * proc.h: what both process roles do: resolve the config's user and
 * group names, drop privileges, watch signals through the event loop,
 * and close the descriptors a new process must not keep.
 */
#ifndef ESOCKD_PROC_H
#define ESOCKD_PROC_H

#include <stddef.h>

#include <event2/event.h>

#include "config.h"

int	proc_resolve(struct esd_config *, struct config_diag *);
int	proc_drop_privileges(const struct esd_config *);
/*
 * Ignore each of ignore[0..nignore), then watch each of sigs[0..n) on
 * base: cb(sig, ..., arg) runs in the loop, never in signal context.
 * evs gets the n events (the caller frees them).  -1 (logged) on failure.
 */
int	proc_signals(struct event_base *, const int *sigs, size_t n,
	    const int *ignore, size_t nignore, event_callback_fn cb, void *arg,
	    struct event **evs);
/* In a new child: close every descriptor but stdio and keep[0..n). */
void	proc_close_fds_except(const int *keep, size_t n);

#endif
