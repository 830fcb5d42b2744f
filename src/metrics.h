/*
 * metrics.h: Prometheus /metrics over HTTP from the master's loop.
 */
#ifndef ESOCKD_METRICS_H
#define ESOCKD_METRICS_H

#include <event2/event.h>

struct master;
struct metrics;
struct oneshot_counters;

struct metrics	*metrics_start(struct event_base *, struct master *);
void		 metrics_free(struct metrics *);
/* NULL when there is no /metrics endpoint. */
const struct oneshot_counters *metrics_counters(const struct metrics *);

#endif
