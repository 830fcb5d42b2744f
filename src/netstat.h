/*
 * netstat.h: the machine's listen-queue counters from /proc/net/netstat.
 */
#ifndef ESOCKD_NETSTAT_H
#define ESOCKD_NETSTAT_H

#include <stdint.h>

/* TcpExt counters of the network namespace, since boot. */
struct netstat_listen {
	uint64_t	overflows;	/* ListenOverflows: a full accept queue */
	uint64_t	drops;		/* ListenDrops: dropped at a listener */
};

/* The value of proto's counter name in /proc/net/netstat text, or -1. */
int	netstat_value(const char *text, const char *proto, const char *name,
	    uint64_t *v);
/* Read both counters (master only); -1 when the file cannot say. */
int	netstat_listen(struct netstat_listen *);

#endif
