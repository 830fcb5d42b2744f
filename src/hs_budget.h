/*
 * hs_budget.h: a listener's handshake budget in a worker (hs_budget.c):
 * admission through max_handshakes, handshake_early_drop and
 * max_connections, and room made at those limits by pushing out the
 * oldest connection still in its handshake phase, in any worker.
 */
#ifndef ESOCKD_HS_BUDGET_H
#define ESOCKD_HS_BUDGET_H

#include <stdint.h>

struct acceptor;

/* Longer than this (µs: a second) in its handshake phase, a connection
 * may be pushed out for a new client. */
#define HS_STALE_US	1000000

int	hsb_init(struct acceptor *);
void	hsb_admit(struct acceptor *, int fd, uint64_t seq, int32_t src,
	    uint16_t trust);
int	hsb_max(const struct acceptor *);
void	hsb_oldest_changed(struct acceptor *, int64_t now_us);
void	hsb_stop(struct acceptor *);
int64_t	hsb_now_us(void);

#endif
