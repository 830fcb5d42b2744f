/*
 * session.h: one relayed connection, client socket to backend socket,
 * and the calls between session.c, which sequences its phases, and the
 * phase files (tls.c, backend.c, relay.c), which call down into it only.
 */
#ifndef ESOCKD_SESSION_H
#define ESOCKD_SESSION_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <event2/event_struct.h>

#include "proxy_in.h"
#include "worker.h"

/* Direction flags: which side said EOF, which side we shut for writing. */
#define S_CLIENT_EOF	0x01
#define S_BACKEND_EOF	0x02
#define S_CLIENT_SHUT	0x04	/* shutdown(client, SHUT_WR) done */
#define S_BACKEND_SHUT	0x08
#define S_BULK_C2B	0x20	/* client to backend flows in bulk: splice */
#define S_BULK_B2C	0x40
#define S_TLS_DEAD	0x80	/* a fatal TLS error: no close_notify */
#define S_PROXY_TRUSTED	0x100	/* from proxy_sources: may send a header */
#define S_PROXY_OPTIONAL 0x200	/* proxy_optional_sources: may send none */
#define S_HANDSHAKING	0x400	/* in the handshake window: budgeted */
#define S_PROBE		0x800	/* this connect probes an ejected socket */
#define S_BACKEND_OPEN	0x1000	/* counted in its socket's backend_open */
#define S_HANDOFF_WAIT	0x2000	/* on its acceptor's handoff_wait list */

/*
 * Where a session is in its life, in order.  session_next() moves it on
 * (skipping a phase its listener does not use, as the handshake on a
 * plain listener) and session_close() ends it from any phase.  A phase
 * file reports to session.c and never starts another phase itself.
 */
enum session_phase {
	SP_ADMITTED,		/* slot claimed, session allocated */
	SP_PROXY_HEADER,	/* the client's PROXY header (proxy_header.c) */
	SP_HANDSHAKE,		/* TLS handshake (tls.c) */
	SP_HANDOFF,		/* mode = "handoff": to a handler (handoff.c),
				 * in place of the two phases below */
	SP_CONNECTING,		/* backend connect, PROXY header (backend.c) */
	SP_RELAYING,		/* bytes both ways (relay.c); on the idle list */
	SP_CLOSING,		/* in session_close: no way back */
};

/*
 * Bytes one side could not take yet; exists only while it is behind.
 * They are either in data[] (read(2) path) or in a pipe (splice path).
 */
struct pending {
	struct event	wev;		/* the slow side is writable */
	int		pipe[2];	/* -1 when the bytes are in data[] */
	uint32_t	len, off;
	char		data[];
};

/*
 * Who the client is when a PROXY header named it (proxy_protocol_in),
 * and the header's TLVs to pass on to the backend; their values are
 * copied into bytes[].  A session without one is its socket's peer.
 */
struct session_origin {
	struct sockaddr_storage	 src, dst;
	size_t			 ntlvs;
	struct proxy_tlv	 tlvs[PROXY_IN_TLVS];
	uint8_t			 bytes[];
};

/*
 * Kept small on purpose: an idle relayed connection costs this struct,
 * its two embedded events and nothing else (no buffers).
 */
struct session {
	TAILQ_ENTRY(session)	 entry;		/* worker's list, for drain */
	union {		/* the acceptor's lists, one phase at a time */
		TAILQ_ENTRY(session) hs;	/* handshaking, oldest first */
		TAILQ_ENTRY(session) idle;	/* relaying, LRU first */
		TAILQ_ENTRY(session) wait;	/* for a hand-off channel */
	};
	struct acceptor		*acc;	/* and through it, its worker */
	int			 cfd, bfd;
	struct event		 cev;	/* client readable */
	struct event		 bev;	/* backend readable, or connecting */
	struct pending		*to_client, *to_backend;
	union {		/* one phase at a time: connecting, then relaying */
		struct {
			struct timeval	 deadline; /* handshake or connect */
			union {	/* one phase at a time, as above */
				int64_t	 tls_began; /* us (monotonic), tls.c */
				int64_t	 connect_began; /* µs, backend.c:
						 * this socket's connect */
			};
			int64_t		 hs_began; /* µs (monotonic), window open */
		};
		int64_t		 last_active;	/* ms (monotonic), last read */
	};
	uint16_t		 backend;	/* index of the socket tried */
	uint16_t		 retry_ms;
	uint16_t		 flags;
	uint8_t			 phase;	/* enum session_phase; in padding */
	int32_t			 src_entry;	/* per-source count, or -1 */
	uint32_t		 tried;	/* bit i: backend socket i tried */
	struct ssl_st		*ssl;		/* TLS listeners only (tls.c) */
	struct session_origin	*origin;	/* NULL: the socket's peer */
	uint64_t		 seq;	/* count at accept, for session_id */
};

/* A session's worker: derived, not stored (a pointer less for each). */
static inline struct worker *
session_worker(const struct session *s)
{
	return s->acc->w;
}

/* This worker's share of the session's listener counters. */
static inline struct shm_counters *
session_counters(const struct session *s)
{
	return shm_slot(s->acc->w->shm, s->acc->li, s->acc->w->slot);
}

/* The client's address as a PROXY header gave it, or NULL: the
 * socket's peer is the client. */
static inline const struct sockaddr *
session_client(const struct session *s)
{
	return s->origin != NULL && s->origin->src.ss_family != AF_UNSPEC ?
	    (const struct sockaddr *)&s->origin->src : NULL;
}

void	session_start(struct acceptor *, int fd, const struct sockaddr *peer);
/*
 * The ends of an admission through the handshake budget (hs_budget.c),
 * now or for a parked client later: a session for fd, or fd refused and
 * counted in why (one of the rejected_ counters); src is the client's
 * per-source entry and trust its S_PROXY_ flags, kept by the session,
 * or src released.
 */
void	session_admitted(struct acceptor *, int fd, uint64_t seq, int32_t src,
	    uint16_t trust);
void	session_refused(struct acceptor *, int fd, uint64_t seq, int32_t src,
	    enum shm_counter why);
/* Has the listener a handshake phase, which max_handshakes budgets? */
int	session_has_handshake(const struct acceptor *);
/*
 * A connection's unique id, for the log and the PROXY header's
 * PP2_TYPE_UNIQUE_ID: "EPOCH-SLOT-SEQ" (session.c says why it is unique).
 */
#define SESSION_ID_LEN	64
void	session_id(const struct worker *, uint64_t seq, char *buf);
/* The current phase is done: start the next one (session.c decides). */
void	session_next(struct session *);
/*
 * The only end of a session, from any phase; why is one of CLOSE_REASONS
 * (shm.h).  It releases the slot, then counts the reason (and for some
 * reasons a failure counter too), then logs it.
 */
void	session_close(struct session *, enum shm_counter why);
/*
 * The hand-off's end of a session (handoff.c, once the handler has the
 * client's socket): the session goes, the connection stays open in the
 * books, its slot and per-source entry now the hand-off record's.
 */
void	session_hand_over(struct session *);
/* The close reason of an error on the client's side or the backend's. */
static inline enum shm_counter
session_side_error(int client_side)
{
	return client_side ? SC_CLOSED_CLIENT_RESET : SC_CLOSED_BACKEND_RESET;
}

/*
 * The phases' entry points, called by session_next() only.  Each ends
 * in session_next() or session_close(), now or from a later callback.
 */
/* proxy_header.c */
void	proxy_header_start(struct session *);

/* backend.c */
void	backend_connect(struct session *);
/* The session ends: its backend socket's open count and probe claim. */
void	backend_release(struct session *);
/* The PROXY v2 header naming the client into buf; 0: session closed. */
size_t	backend_proxy_header(struct session *, const char *id, uint8_t *buf,
	    size_t cap);

/* handoff.c */
void	handoff_start(struct session *);
/* session_close, for a session waiting for a channel. */
void	handoff_stop(struct session *);

/* relay.c */
void	relay_start(struct session *);
void	relay_stop(struct session *);
void	relay_idle_init(struct acceptor *);

#endif
