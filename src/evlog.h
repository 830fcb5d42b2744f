/*
 * evlog.h: libevent's own messages through esockd's log.
 */
#ifndef ESOCKD_EVLOG_H
#define ESOCKD_EVLOG_H

/* Route libevent's messages and fatal errors through log.c (once, at
 * start: the callbacks are process-wide and forked workers keep them). */
void	evlog_init(void);
/* The log callback itself, for tests: severity is libevent's EVENT_LOG_*. */
void	evlog_message(int severity, const char *msg);

#endif
