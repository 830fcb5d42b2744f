/*
 * handoff.h: the handler's side of esockd's hand-off protocol, version 1,
 * as a small library: plain POSIX, no libevent, usable from any loop.
 *
 * esockd (mode = "handoff") keeps one persistent Unix-socket "channel"
 * per worker to the handler.  The handler greets each channel with
 * "esockd-handoff 1\n"; esockd then sends, per admitted client, a PROXY
 * v2 header with the client's socket attached (SCM_RIGHTS) to its first
 * byte, and the handler answers "closed <id>\n" when it closes a client.
 * Clients whose channel ended are kept, and announced
 * "held <id> <source address>\n" on the newest live channel (at once, or
 * after the hello of the next channel accepted), which they then belong
 * to.
 *
 * Use:
 *	srv = handoff_server_new(path, err, sizeof(err));
 *	poll handoff_server_fd(srv) for reading; then
 *	    ch = handoff_accept(srv)		(NULL, errno EAGAIN: none yet)
 *	poll handoff_channel_fd(ch) for reading; then, until it returns
 *	HANDOFF_AGAIN:
 *	    r = handoff_channel_read(ch, &c)
 *	    HANDOFF_CLIENT: c is yours (c->fd, c->id, c->src, c->dst)
 *	    HANDOFF_ENDED:  stop polling the fd, then handoff_channel_close(ch)
 *	when you close a client: close(c->fd); handoff_client_closed(c);
 *
 * Channels are non-blocking for reads.  Records are short and esockd
 * reads them at once, so they are written with a bounded wait
 * (HANDOFF_SEND_TIMEOUT_MS); a channel that cannot take one is shut
 * down, and its next handoff_channel_read reports HANDOFF_ENDED.
 *
 * Single-threaded: call everything from one thread.
 */
#ifndef ESOCKD_HANDOFF_H
#define ESOCKD_HANDOFF_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/queue.h>

#define HANDOFF_HELLO		"esockd-handoff 1\n"
/* The unique id's bound in the protocol (the PROXY spec allows 128). */
#define HANDOFF_ID_MAX		64
/* The longest header taken, 16 fixed bytes included: esockd's longest
 * (its PROXY_IN_MAX) fits; a longer one ends the channel. */
#define HANDOFF_HEADER_MAX	4096
#define HANDOFF_SEND_TIMEOUT_MS	1000

struct handoff_server;		/* opaque: the listener, channels, clients */
struct handoff_channel;		/* opaque: one connection from an esockd worker */

/* One client handed over.  Owned by the library until
 * handoff_client_closed; the fields below are the caller's to read. */
struct handoff_client {
	int			 fd;	/* the client's socket: the caller's to
					   use and close */
	char			 id[HANDOFF_ID_MAX + 1];	/* UNIQUE_ID, NUL-ended */
	struct sockaddr_storage	 src;	/* client; ss_family AF_UNSPEC when
					   the header's family is UNSPEC */
	struct sockaddr_storage	 dst;	/* the listener esockd accepted on */
	void			*udata;	/* the caller's, untouched */

	/* Internal. */
	struct handoff_channel	*chan;	/* current channel, NULL: orphan */
	LIST_ENTRY(handoff_client) entry;	/* the server's clients */
};

/* handoff_channel_read's results. */
#define HANDOFF_CLIENT	1	/* *out holds a new client */
#define HANDOFF_AGAIN	0	/* nothing more now: poll again */
#define HANDOFF_ENDED	(-1)	/* EOF, error or a malformed message */

/*
 * Listen on path (a file, replaced if it exists, or "@name" in the Linux
 * abstract namespace).  NULL on error, with the reason in err.
 */
struct handoff_server	*handoff_server_new(const char *path, char *err,
			    size_t errlen);
/* The listening descriptor (non-blocking): readable means a channel. */
int			 handoff_server_fd(const struct handoff_server *srv);
/*
 * Close every channel, forget every client (their descriptors are the
 * caller's), stop listening and remove the socket file.  NULL is a no-op.
 */
void			 handoff_server_free(struct handoff_server *srv);

/*
 * Accept one channel, send the hello, then announce every orphan on it.
 * NULL with errno EAGAIN (or EINTR, ECONNABORTED) when there is nothing
 * to take now; NULL with another errno on an error, which is also
 * written to stderr (EMFILE: the caller should pause before retrying).
 * Like every error this library meets, as "handoff: ..." lines.
 */
struct handoff_channel	*handoff_accept(struct handoff_server *srv);
/* The channel's descriptor (non-blocking): readable means call read. */
int			 handoff_channel_fd(const struct handoff_channel *ch);
/*
 * Read what the channel has, up to one whole client.  Call it until it
 * returns HANDOFF_AGAIN.  On HANDOFF_ENDED the reason went to stderr
 * and any descriptor of the unfinished message was closed; the caller
 * stops polling the fd and calls handoff_channel_close.
 */
int			 handoff_channel_read(struct handoff_channel *ch,
			    struct handoff_client **out);
/*
 * End a channel: its clients become orphans and are announced "held" on
 * the newest live channel (or on the next one accepted).  NULL is a no-op.
 */
void			 handoff_channel_close(struct handoff_channel *ch);

/*
 * The caller closed c->fd (or is about to): send "closed <id>" on the
 * client's channel (an orphan is just forgotten: esockd counted it
 * closed when its channel ended) and free c.  NULL is a no-op.
 */
void			 handoff_client_closed(struct handoff_client *c);

/* Pure: parse one whole PROXY v2 header (buf, len bytes) into c's id,
 * src and dst.  0, or -1 with the reason in err.  Exposed for tests. */
int			 handoff_parse_header(const unsigned char *buf,
			    size_t len, struct handoff_client *c, char *err,
			    size_t errlen);

#endif /* ESOCKD_HANDOFF_H */
