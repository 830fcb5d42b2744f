/*
 * control.h: the master's control socket, the daemon side of esockdctl.
 */
#ifndef ESOCKD_CONTROL_H
#define ESOCKD_CONTROL_H

#include <event2/event.h>

struct control;
struct master;

struct control	*control_start(struct event_base *, struct master *);
void		 control_free(struct control *);

#endif
