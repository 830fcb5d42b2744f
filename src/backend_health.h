/*
 * backend_health.h: passive health of a listener's backend sockets, shared
 * by every worker (struct shm_backend), and the choice of the socket a
 * connection tries next.  Pure: the clock is passed in, nothing is logged;
 * the caller logs the transitions it is told it made.
 */
#ifndef ESOCKD_BACKEND_HEALTH_H
#define ESOCKD_BACKEND_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

/* The longest an ejection lasts, however often its probes fail. */
#define HEALTH_MAX_INTERVAL_MS	30000

/* A backend group's health keys, as the worker passes them. */
struct health_conf {
	uint32_t	threshold;	/* backend_fail_threshold */
	uint32_t	interval_ms;	/* backend_retry_interval: the first */
	uint32_t	probe_ms;	/* a probe's claim lasts this long */
	int		least;		/* balance = "least_connections" */
};

/* How the chosen socket is to be tried. */
enum health_pick {
	HP_NONE,	/* nothing left to try: the client is closed */
	HP_UP,		/* a socket that is up */
	HP_PROBE,	/* an ejected socket whose interval ended: this
			 * connection alone tries it (the claim is held) */
	HP_FALLBACK,	/* every socket ejected: the least recently failed */
};

/* What a connect's outcome did to its socket; the caller logs these. */
enum health_event {
	HE_NONE,
	HE_EJECTED,	/* this failure reached the threshold: ejected */
	HE_RETURNED,	/* this success brought an ejected socket back */
	HE_PROBE_FAILED, /* still down: ejected again, for twice as long */
};

int	health_is_up(const struct shm_backend *);
/*
 * The socket to try next of b[0..n), skipping those in tried (bit i:
 * socket i already tried by this connection), starting the search at
 * start; open[i] is socket i's open connections (read with least only).
 * A socket due for a probe comes first, claimed by compare-and-swap so
 * that only one connection of all workers probes it; then the sockets
 * up, in turn or by fewest open; then, for a connection that has tried
 * nothing, the ejected socket that failed least recently.  Returns the
 * index, or -1 (HP_NONE) with nothing left.
 */
int	health_pick(struct shm_backend *b, size_t n, uint32_t tried,
	    size_t start, const int64_t *open, int64_t now_ms,
	    const struct health_conf *, enum health_pick *);
/* A connect to b failed (probe: it was the probe) at now_ms. */
enum health_event health_failure(struct shm_backend *b, int probe,
	    int64_t now_ms, const struct health_conf *);
/* A connect to b succeeded: its failures are forgotten. */
enum health_event health_success(struct shm_backend *b, int probe,
	    const struct health_conf *);
/* A probe ended with no verdict (its client went first): free the claim. */
void	health_probe_abandon(struct shm_backend *b);

#endif
