/*
 * oneshot.h: a listener whose connections each carry one request and get
 * one answer, on the master's loop, under fixed limits (the control
 * socket and /metrics).
 */
#ifndef ESOCKD_ONESHOT_H
#define ESOCKD_ONESHOT_H

#include <stddef.h>

#include <event2/buffer.h>
#include <event2/event.h>

struct oneshot;
struct oneshot_conn;

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

#endif
