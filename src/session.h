/*
 * session.h: one relayed connection, client socket to backend socket.
 */
#ifndef ESOCKD_SESSION_H
#define ESOCKD_SESSION_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <event2/bufferevent.h>
#include <event2/event_struct.h>

#include "worker.h"

/* Direction flags: which side said EOF, which side we shut for writing. */
#define S_CLIENT_EOF	0x01
#define S_BACKEND_EOF	0x02
#define S_CLIENT_SHUT	0x04	/* shutdown(client, SHUT_WR) done */
#define S_BACKEND_SHUT	0x08
#define S_CLIENT_HELD	0x10	/* client reads paused: backend output full */
#define S_BACKEND_HELD	0x20

struct session {
	TAILQ_ENTRY(session)	 entry;
	struct worker		*w;
	struct acceptor		*acc;
	int			 cfd, bfd;
	struct bufferevent	*cbev, *bbev;
	struct event		 timer;	/* connect deadline, retry, idle */
	struct event		 connect_ev;	/* backend connect in progress */
	unsigned		 backend;	/* index of the socket tried */
	unsigned		 tries;
	int			 retry_ms;
	struct timeval		 deadline;	/* of the current connect */
	int64_t			 last_active;	/* monotonic ms of the last read */
	unsigned		 flags;
};

void	session_start(struct acceptor *, int fd);
void	session_close(struct session *);

/* backend.c */
void	backend_connect(struct session *);

/* relay.c */
int	relay_start(struct session *);

#endif
