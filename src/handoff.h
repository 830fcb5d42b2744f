/*
 * handoff.h: a worker's channels to the handlers of mode = "handoff"
 * backends (handoff.c); session.h and worker.h have the entry points.
 */
#ifndef ESOCKD_HANDOFF_H
#define ESOCKD_HANDOFF_H

#include <stdint.h>
#include <sys/queue.h>

#include <event2/event_struct.h>

#include "worker.h"

enum channel_state {
	CH_DOWN,		/* waiting to reconnect */
	CH_CONNECTING,
	CH_HELLO,		/* connected, the handler's hello not yet in */
	CH_READY,		/* takes clients */
};

/* The most a handler's record may be, its newline included. */
#define HANDOFF_LINE_MAX	128

struct handed;

/* One worker's connection to one handler socket of one listener. */
struct channel {
	struct acceptor		*acc;
	uint16_t		 b;	/* the backend socket's index */
	int			 fd;
	enum channel_state	 state;
	int			 full;	/* a send would block: wait for wev */
	int			 backoff_ms; /* before the next reconnect */
	struct event		 rev, wev, retry;
	size_t			 inlen;
	char			 in[HANDOFF_LINE_MAX];
	TAILQ_HEAD(, handed)	 handed;	/* its clients, open */
	size_t			 nhanded;
};

#endif
