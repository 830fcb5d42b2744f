/*
 * worker.h: one worker process: its event loop, acceptors and sessions.
 */
#ifndef ESOCKD_WORKER_H
#define ESOCKD_WORKER_H

#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "shm.h"

struct session;

/*
 * A client at a limit waiting for a push-out to make room (hs_budget.c):
 * accepted, not admitted, its descriptor in the worker's budget.
 */
struct parked {
	int		 fd;
	int32_t		 src;		/* its per-source entry, or -1 */
	uint64_t	 seq;		/* its connection id's */
	int64_t		 until_us;	/* refused then (µs, monotonic) */
	int		 why;		/* enum shm_counter it is refused by */
	int		 slot;		/* the peer asked to push one out, */
	uint64_t	 ticket;	/* and its request; slot -1: none */
	uint16_t	 trust;		/* its S_PROXY_ flags (session.h) */
};
#define PARKED_MAX	32	/* per acceptor; more are refused at once */

/* Accept state of one listening socket in one worker. */
struct acceptor {
	struct worker			*w;
	int				 li;	/* shm index (the listener's si) */
	const struct listener_conf	*lc;
	struct ssl_ctx_st		*tls_ctx; /* the listener's, or NULL */
	int				 fd;
	struct event			 ev;	/* readable listening socket */
	struct event			 backoff; /* resume after an error */
	int				 backoff_ms;
	int				 paused;	/* backoff after an error */
	/* Out of descriptors, no peer accepting: the socket is watched
	 * during the backoff to close each new client at once; by_budget:
	 * the budget said so (not the kernel), so the pause may end as
	 * soon as the budget has room again. */
	int				 rejecting;
	int				 by_budget;
	int				 suspended; /* by esockdctl suspend */
	int				 stepped_back; /* ahead of peers */
	int				 force_next; /* peers took none: take */
	uint64_t			 peers_accepted; /* when stepping back */
	struct event			 rejoin; /* end of a step back */
	unsigned			 rr;	/* round-robin backend cursor */
	TAILQ_HEAD(idle_head, session)	 idle_list; /* relaying, LRU first */
	struct event			 idle_timer;
	/* The handshake budget (hs_budget.c): sessions in their handshake
	 * phase, oldest first; the timer that answers peers' push-out
	 * requests and retries the parked clients; when it is due. */
	TAILQ_HEAD(hs_head, session)	 hs_list;
	struct event			 hs_timer;
	int64_t				 hs_due_us; /* 0: not armed */
	struct parked			 parked[PARKED_MAX];
	int				 nparked;
	struct log_ratelimit		 rl_accept;
	struct log_ratelimit		 rl_backend;
	struct log_ratelimit		 rl_rule;
	struct log_ratelimit		 rl_rate;
	struct log_ratelimit		 rl_source;
	struct log_ratelimit		 rl_source_rate;
	struct log_ratelimit		 rl_tls;
	struct log_ratelimit		 rl_budget; /* handshakes, early drop */
	struct log_ratelimit		 rl_evict;
	/* mode = "handoff" (handoff.c): a channel to each backend socket,
	 * and the sessions waiting for one to take them, oldest first. */
	struct channel			*channels;
	size_t				 nchannels;
	TAILQ_HEAD(wait_head, session)	 handoff_wait;
	struct log_ratelimit		 rl_handoff;
};

struct worker {
	struct event_base		*base;
	const struct esd_config		*conf;
	struct shm_region		*shm;
	int				 slot;	/* shm slot */
	int				 id;	/* 1-based, for logs */
	int				 nworkers; /* in this generation */
	struct acceptor			*acceptors;
	size_t				 nacceptors;
	TAILQ_HEAD(, session)		 sessions;
	size_t				 nsessions;
	int				 fd_limit; /* RLIMIT_NOFILE */
	int				 fds_in_use;
	int				 spare_fd; /* held for the fast reject */
	int				 draining;
	char				*scratch;	/* relay read buffer */
	size_t				 scratch_size;
	int				 pipes[32][2];	/* idle splice pipes */
	int				 npipes;
	int				 no_splice;	/* the kernel refused it */
	struct event			*sig[4];
	struct event			*drain_timer;
	/* Connection ids (session_id): this worker's start and count. */
	uint64_t			 id_epoch; /* µs, real clock */
	uint64_t			 conn_seq;	/* accepted so far */
	uint64_t			 rng;	/* the early drop's draws */
	/* Clients handed off and open in the books, by id (handoff.c). */
	struct handed			**handed;
	size_t				 handed_buckets;
};

/* Descriptors kept free for logging and the like (relayd's reserve). */
#define FD_RESERVE	4

/* Can n more descriptors be opened and still leave the reserve free? */
static inline int
worker_fds_fit(const struct worker *w, int n)
{
	return w->fds_in_use + n + FD_RESERVE <= w->fd_limit;
}

int	worker_run(const struct esd_config *, const struct listener *,
	    struct shm_region *, int slot, int id, int nworkers, pid_t master);
void	worker_session_closed(struct worker *);

/* splice_pool.c */
int	pipe_get(struct worker *, int p[2]);
void	pipe_put(struct worker *, int p[2]);
void	pipe_close(struct worker *, int p[2]);
void	pipe_pool_free(struct worker *);

/* handoff.c */
int	handoff_init(struct acceptor *);
void	handoff_free(struct acceptor *);

/* accept.c */
int	acceptor_init(struct acceptor *, struct worker *,
	    const struct listener *);
void	acceptor_stop(struct acceptor *);
void	acceptor_pause(struct acceptor *, int err, const char *what);
void	acceptor_sync(struct acceptor *);
void	acceptor_session_closed(struct acceptor *);
void	accept_spare_init(struct worker *);
void	accept_spare_free(struct worker *);

#endif
