/*
 * notify.h: telling systemd how the daemon is (sd_notify), master only.
 */
#ifndef ESOCKD_NOTIFY_H
#define ESOCKD_NOTIFY_H

#include <event2/event.h>

int	notify_init(struct event_base *);
void	notify_ready(void);
void	notify_reloading(void);
void	notify_stopping(void);
void	notify_status(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
void	notify_free(void);

#endif
