/*
 * log.h: leveled logging to stderr for every esockd process.
 */
#ifndef ESOCKD_LOG_H
#define ESOCKD_LOG_H

#include <stdarg.h>
#include <stdint.h>
#include <time.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* A rate limiter for one repeating message: at most one line per period. */
struct log_ratelimit {
	struct timespec	last;		/* monotonic time of the last printed line */
	uint64_t	suppressed;	/* lines swallowed since then */
};

void	log_init(const char *label, int worker_slot);
void	log_set_level(enum log_level);
/* Would a line at this level be written?  (Skip building one that is not.) */
int	log_enabled(enum log_level);
int	log_parse_level(const char *, enum log_level *);
int	log_journal_stream(void);

void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_error(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_errorx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_at(enum log_level, const char *, ...) __attribute__((format(printf, 2, 3)));

int	log_ratelimit_pass(struct log_ratelimit *, uint64_t *suppressed);

#endif
