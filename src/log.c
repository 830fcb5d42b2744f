/*
 * log.c: one line per event on stderr, labelled with the process role.
 *
 * Owns the process label ("master", "worker 3"), the level threshold and
 * the choice between timestamps (a terminal or file) and <N> priority
 * prefixes (stderr connected to the journal, see sd-daemon(3)).  The
 * prefixes are spelled out here rather than taken from sd-daemon.h so that
 * libsystemd stays confined to notify.c.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Process-wide logging state: set once at start (and after fork). */
static struct {
	char		label[32];
	enum log_level	level;
	int		journal;	/* stderr is the journal: use <N> */
} log_state = { "esockd", LOG_LVL_INFO, 0 };

static const char *const level_names[] = { "error", "warn", "info", "debug" };
/* syslog priorities: err, warning, info, debug */
static const int level_prio[] = { 3, 4, 6, 7 };

/* Does JOURNAL_STREAM name the very file stderr is connected to? */
int
log_journal_stream(void)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) == -1)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

/* Name this process in every line it logs; slot 0 means the master. */
void
log_init(const char *label, int worker_slot)
{
	if (worker_slot > 0)
		snprintf(log_state.label, sizeof(log_state.label), "%s %d",
		    label, worker_slot);
	else
		snprintf(log_state.label, sizeof(log_state.label), "%s", label);
	log_state.journal = log_journal_stream();
}

void
log_set_level(enum log_level level)
{
	log_state.level = level;
}

int
log_enabled(enum log_level level)
{
	return level <= log_state.level;
}

int
log_parse_level(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static void
log_vemit(enum log_level level, const char *errstr, const char *fmt, va_list ap)
{
	/* The longest line is SIGUSR1's per listener: some 70 counters. */
	char msg[4096], stamp[40];
	struct timespec ts;
	struct tm tm;
	int saved = errno;

	if (level > log_state.level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_state.journal) {
		fprintf(stderr, "<%d>%s[%ld] %s: %s%s%s\n", level_prio[level],
		    log_state.label, (long)getpid(), level_names[level], msg,
		    errstr ? ": " : "", errstr ? errstr : "");
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ %s[%ld] %s: %s%s%s\n", stamp,
		    ts.tv_nsec / 1000000, log_state.label, (long)getpid(),
		    level_names[level], msg, errstr ? ": " : "",
		    errstr ? errstr : "");
	}
	errno = saved;
}

#define LOG_FN(fn, lvl, with_errno)					\
void									\
fn(const char *fmt, ...)						\
{									\
	const char *e = (with_errno) ? strerror(errno) : NULL;		\
	va_list ap;							\
	va_start(ap, fmt);						\
	log_vemit(lvl, e, fmt, ap);					\
	va_end(ap);							\
}

LOG_FN(log_warn, LOG_LVL_WARN, 1)
LOG_FN(log_warnx, LOG_LVL_WARN, 0)
LOG_FN(log_error, LOG_LVL_ERROR, 1)
LOG_FN(log_errorx, LOG_LVL_ERROR, 0)
LOG_FN(log_info, LOG_LVL_INFO, 0)
LOG_FN(log_debug, LOG_LVL_DEBUG, 0)

void
log_at(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(level, NULL, fmt, ap);
	va_end(ap);
}

/*
 * Decide whether a repeating message may be printed now (at most once a
 * second).  On a pass, *suppressed says how many were swallowed since.
 */
int
log_ratelimit_pass(struct log_ratelimit *rl, uint64_t *suppressed)
{
	struct timespec now;
	int64_t elapsed_ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	elapsed_ms = (int64_t)(now.tv_sec - rl->last.tv_sec) * 1000 +
	    (now.tv_nsec - rl->last.tv_nsec) / 1000000;
	if ((rl->last.tv_sec != 0 || rl->last.tv_nsec != 0) &&
	    elapsed_ms < 1000) {
		rl->suppressed++;
		return 0;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last = now;
	return 1;
}
