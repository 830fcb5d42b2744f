/*
 * stats.h: one read of the master's status and of every listener's
 * counters, shared by the control socket and /metrics so they agree.
 */
#ifndef ESOCKD_STATS_H
#define ESOCKD_STATS_H

#include <event2/buffer.h>

#include "config.h"
#include "listener.h"
#include "master.h"
#include "netstat.h"
#include "shm.h"

/* One backend socket of a listener: its health and counts (shm_backend). */
struct stats_backend {
	const char	*socket;	/* its path, from the config */
	int		 up;		/* 0: ejected, or no channel (hand-off) */
	int		 handoff;	/* mode = "handoff": its channels */
	int64_t		 open;		/* connections on it, every worker */
	uint64_t	 connects, failures[BF_COUNT], ejections, returns;
	uint64_t	 connect_bucket[BACKEND_CONNECT_NBUCKETS];
	uint64_t	 connect_us;
};

/* "up", "ejected" (a relay socket's health) or "down" (no channel). */
const char	*stats_backend_state(const struct stats_backend *);

/* A backend failure reason's name ("refused"), as the reports say it. */
extern const char *const stats_backend_failures[BF_COUNT];

/*
 * One listener, as the workers see it now: one of the current config, or
 * one a reload dropped whose old workers still drain its connections.
 */
struct stats_listener {
	const struct listener_conf *lc;
	const char		*bind;	/* the address served */
	struct shm_totals	 t;
	int			 max_connections; /* in effect (shm) */
	int			 reserved; /* reserved_connections (shm) */
	int			 suspended;
	int			 draining; /* dropped by a reload */
	int			 si;	/* its place in shared memory */
	const struct listener	*rt;	/* the master's: TLS contexts' dates */
	/* Its accept queue now, and the most it holds; -1: not known (the
	 * master closed a draining listener's socket). */
	int			 queue, queue_max;
	size_t			 nbackends;
	struct stats_backend	 b[ESD_MAX_BACKENDS];
};

struct stats {
	struct master_status	 st;
	struct shm_global	 global; /* the top-level max_connections */
	/* The machine's ListenOverflows and ListenDrops, when readable. */
	int			 netstat_ok;
	struct netstat_listen	 netstat;
	size_t			 n;
	struct stats_listener	 l[ESD_MAX_LISTENERS];
};

/*
 * Every listener counter as the reports name it, in the order they show
 * them: the SIGUSR1 log's key, the stats table's column, the reason it
 * is under "refused" in the JSON and /metrics (NULL: not a refusal), and
 * the reason under "closed_by" and in esockd_connections_closed_total
 * (NULL: not a close reason; those have a table of their own).  The
 * TLS handshake counts are named by their key: "tls12_full" and the
 * like for those done, "tls_fail_REASON" for those failed; they go in
 * the JSON's "tls":{...} and tables of their own.
 */
struct stats_field {
	enum shm_counter	 sc;
	const char		*key, *column, *refused, *closed;
};

/* 1 for a TLS handshake count (TLS_COUNTERS in shm.h), else 0. */
int	stats_is_tls(const struct stats_field *);
/* 1 for a refused PROXY header (PROXY_FAILURES in shm.h): a refusal,
 * in "refused", with a table of its own in the text. */
int	stats_is_proxy(const struct stats_field *);
/* A TLS failure's reason, its key less "tls_fail_"; NULL for others. */
const char *stats_tls_reason(const struct stats_field *);

#define STATS_NFIELDS	SC_COUNT
extern const struct stats_field stats_fields[STATS_NFIELDS];

/* What a report reads: the listeners (draining[i]: dropped by a reload
 * and still draining), the counters, and the master's own status. */
void	stats_collect(const struct listener *const *, const int *draining,
	    size_t n, struct shm_region *, const struct master_status *,
	    struct stats *);
void	stats_json_string(struct evbuffer *, const char *);
/* Room for stats_endpoint_kv's longest line. */
#define ENDPOINT_KV_MAX	512
void	stats_listener_kv(const struct shm_totals *, char *buf, size_t len);
void	stats_endpoint_kv(const struct oneshot_counters *, int on, char *buf,
	    size_t len);
void	stats_prom_label(struct evbuffer *, const char *);

#endif
