/*
 * control.h: the master's control socket, the daemon side of esockdctl.
 */
#ifndef ESOCKD_CONTROL_H
#define ESOCKD_CONTROL_H

#include <event2/event.h>

struct control;
struct oneshot_counters;
struct master;

struct control	*control_start(struct event_base *, struct master *);
void		 control_free(struct control *);
/* NULL when there is no control socket. */
const struct oneshot_counters *control_counters(const struct control *);

#endif
