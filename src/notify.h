/*
 * notify.h: everything esockd says to or takes from systemd, master only.
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

/* Socket activation (LISTEN_FDS), for activation.c. */
#define NOTIFY_LISTEN_FDS_START	3	/* SD_LISTEN_FDS_START */
int	notify_listen_fds(char ***names);
int	notify_is_listening_inet(int fd, int family);

#endif
