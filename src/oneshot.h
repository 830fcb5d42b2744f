/*
 * oneshot.h: a listener whose connections each carry one request and get
 * one answer, on the master's loop, under fixed limits (the control
 * socket and /metrics).
 */
#ifndef ESOCKD_ONESHOT_H
#define ESOCKD_ONESHOT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>

struct oneshot;
struct oneshot_conn;

/*
 * What became of an endpoint's connections, for the master's lifetime:
 * every connection closed without its answer, and every refusal, has a
 * counter.  Only the master's loop writes them.  Listed once: the names
 * below are the reports' names, in the reports' order.
 */
#define ONESHOT_COUNTERS(X)						\
	X(accepted)							\
	X(answered)		/* the caller's answer queued */	\
	X(late_request)		/* no whole request within timeout_s */	\
	X(late_answer)		/* answer or FIN not taken in time */	\
	X(dropped)		/* closed unanswered: the client left,	\
				 * or sent what has no answer */	\
	X(pushed_out_answered)	/* at the cap: answered, owed its FIN */ \
	X(pushed_out_idle)	/* at the cap: still sending its request */ \
	X(refused)		/* at the cap, every open one answering */ \
	X(accept_pauses)	/* 1 s pauses: a flood or accept failing */ \
	X(errors)		/* out of memory, or no event to watch */

#define ONESHOT_ENUM(f)		OC_##f,
#define ONESHOT_FIELD(f)	uint64_t f;
enum { ONESHOT_COUNTERS(ONESHOT_ENUM) ONESHOT_NCOUNTERS };

struct oneshot_counters {
	union {				/* by name, or by index */
		uint64_t n[ONESHOT_NCOUNTERS];
		struct { ONESHOT_COUNTERS(ONESHOT_FIELD) };
	};
};

extern const char *const oneshot_counter_names[ONESHOT_NCOUNTERS];

struct oneshot_cfg {
	const char	*name;		/* starts every log line */
	int		 max_conns;	/* open at once */
	int		 timeout_s;	/* to send the request; again to take
					 * the answer */
	size_t		 read_max;	/* request bytes held at most */
	int		 accepts_per_s;	/* then pause 1 s; 0: no such limit */
	/*
	 * The request as read so far; eof: the client sent its FIN.
	 * Returns 0 to wait for more, 1 once the answer is in out, -1 to
	 * close at once.  0 with read_max bytes in, or with eof, closes too.
	 */
	int	(*request)(struct oneshot_conn *, struct evbuffer *in, int eof,
		    struct evbuffer *out, void *arg);
	/* No whole request within timeout_s; NULL: just close. */
	void	(*late)(struct evbuffer *out, void *arg);
	void	 *arg;
};

struct oneshot	*oneshot_start(struct event_base *, int fd,
		    const struct oneshot_cfg *);
void		 oneshot_free(struct oneshot *);
int		 oneshot_fd(const struct oneshot_conn *);
const struct oneshot_counters *oneshot_counters(const struct oneshot *);

#endif
