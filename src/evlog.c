/*
 * evlog.c: libevent's own messages through esockd's log.
 *
 * Left alone, libevent prints its warnings ("[warn] Epoll MOD(4) on fd 9
 * failed ...") straight to stderr: no time, no process label, no journal
 * priority, and one line per occurrence, which a client could repeat at
 * will.  Here each goes through log.c like every other line, labelled
 * "libevent", at the matching level, and at most one a second per level
 * with a count of those swallowed, so one that esockd's own code cannot
 * prevent is still seen and still bounded.
 */
#include "evlog.h"

#include <event2/event.h>

#include "log.h"

/*
 * Process-wide: one rate limiter per libevent severity (debug, msg,
 * warn, error).  libevent's callback takes no argument to hold them.
 */
static struct log_ratelimit evlog_rl[4];

void
evlog_message(int severity, const char *msg)
{
	enum log_level level;
	uint64_t suppressed;
	int i;

	switch (severity) {
	case EVENT_LOG_DEBUG:
		level = LOG_LVL_DEBUG, i = 0;
		break;
	case EVENT_LOG_MSG:
		level = LOG_LVL_INFO, i = 1;
		break;
	case EVENT_LOG_WARN:
		level = LOG_LVL_WARN, i = 2;
		break;
	default:
		level = LOG_LVL_ERROR, i = 3;
		break;
	}
	if (!log_ratelimit_pass(&evlog_rl[i], &suppressed))
		return;
	log_at(level, "libevent: %s (%llu more since the last report)", msg,
	    (unsigned long long)suppressed);
}

/* libevent exits right after this returns: say why first. */
static void
evlog_fatal(int err)
{
	log_errorx("libevent: fatal internal error %d; exiting", err);
}

void
evlog_init(void)
{
	event_set_log_callback(evlog_message);
	event_set_fatal_callback(evlog_fatal);
}
