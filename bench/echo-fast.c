/*
 * bench/echo-fast.c: esockd-bench-echo, a fast echo server for the esockd
 * benchmarks.  It plays two roles: the backend behind the gateway (on a
 * Unix socket) and the "direct" ceiling (loopback TCP, no gateway).
 *
 * Owns the listening socket(s), one epoll loop per thread, the small
 * per-connection state and the echo itself.  libc and pthreads only.
 *
 *   esockd-bench-echo -l unix:/path/to.sock [-T THREADS]
 *   esockd-bench-echo -l tcp:127.0.0.1:PORT [-T THREADS]
 *   esockd-bench-echo -H unix:/path/to.sock [-T THREADS]
 *
 * -H makes it an esockd hand-off handler (esockd(8), HAND-OFF PROTOCOL)
 * instead: it accepts channels on the Unix socket, greets each with
 * "esockd-handoff 1", takes each client's socket from its PROXY v2
 * message, echoes on the client itself as the TCP echo does, and writes
 * "closed ID" on the client's channel when it closes the client.  The
 * channels are spread over the threads in turn; a client stays on its
 * channel's thread.  Orphans are not kept track of: when a channel ends
 * (esockd's worker exited) its clients are echoed to the end but never
 * announced with "held ID", and their "closed" is dropped.  That is
 * enough for a benchmark, whose esockd outlives every client; a real
 * handler must do better (examples/handoff.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define BUF_SIZE	65536	/* per-thread read buffer */
#define MAX_EVENTS	256
#define ACCEPT_BATCH	64	/* the listener is level-triggered: rest later */
#define IO_BUDGET	16	/* syscalls per direction per event */
#define WAIT_MS		200	/* how soon a thread notices the stop flag */
#define LISTEN_BACKLOG	65535	/* the kernel caps it at somaxconn */
#define MAX_THREADS	64
#define PAUSE_NS	100000000ll	/* listener rest after EMFILE */
#define FD_SLACK	16	/* fds kept free besides ours, for luck */

/* EPOLLOUT only once a connection has had to hold an echo: registered
 * from the start, every read the peer makes frees space and wakes this
 * thread for nothing (in the peer's time: it runs the wakeup), once per
 * connection in `rate`.  Once added it stays, so a bulk flow does not pay
 * two epoll_ctl calls per held chunk. */
#define CONN_EVENTS	(EPOLLIN | EPOLLRDHUP | EPOLLET)
#define HUP_EVENTS	(EPOLLRDHUP | EPOLLHUP | EPOLLERR)

/* What an epoll event's data.ptr points at (NULL: the listener). */
enum { K_CONN = 1, K_CHAN };

struct chan;

/* No EOF flag: we stop reading while anything is pending, so the EOF is
 * only ever read with nothing left to write, and we finish right away. */
struct econn {
	int kind;		/* K_CONN: first, as in struct chan */
	int fd;
	struct chan *ch;	/* hand-off: the channel it came on, or NULL */
	char *id;		/* hand-off: its UNIQUE_ID, for "closed ID" */
	uint8_t *pend;		/* echo the socket would not take yet */
	size_t pend_off, pend_len;
	bool watch_out;		/* EPOLLOUT registered (never removed) */
};

struct ethread {
	pthread_t tid;
	unsigned idx;
	bool started;
	int epfd, lfd;
	uint64_t paused_until;	/* listener out of epoll until (ns) */
	unsigned long conns;
	time_t last_complaint;
	uint8_t buf[BUF_SIZE];
};

struct listen_addr {
	bool is_unix;
	const char *text;
	struct sockaddr_un un;
	struct sockaddr_in in;
};

static struct listen_addr g_addr;
static bool g_handoff;			/* -H: a hand-off handler */
static struct ethread *g_threads;
static unsigned g_nthreads;
static atomic_uint g_next_thread;	/* channels go to threads in turn */
static atomic_bool g_stop;
static atomic_bool g_failed;
/* Connections are capped below the fd limit, so accept() never meets
 * EMFILE in normal overload: over the cap we accept and close at once,
 * and the client fails fast instead of waiting in a backlog. */
static atomic_long g_conns;
static long g_conn_cap;

/* A line on stderr, named for this tool (common.h). */
#define logmsg(...)	bench_log("esockd-bench-echo", "", __VA_ARGS__)

/* At most one complaint a second per thread: an fd storm must not turn
 * into a log storm. */
static bool may_complain(struct ethread *t)
{
	time_t now = time(NULL);

	if (now == t->last_complaint)
		return false;
	t->last_complaint = now;
	return true;
}

static bool would_block(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static void chan_closed(struct ethread *t, struct chan *ch, const char *id);

static void conn_free(struct ethread *t, struct econn *c)
{
	/* close() also takes the fd out of the epoll set (never dup()ed),
	 * but a handed-off socket may still be open in esockd for a moment
	 * (it closes its copy after the send): its events would keep coming
	 * after our close, to freed memory.  So that one leaves first. */
	if (c->ch != NULL &&
	    epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0 &&
	    may_complain(t))
		logmsg("epoll_ctl DEL: %s", strerror(errno));
	if (close(c->fd) != 0 && may_complain(t))
		logmsg("close: %s", strerror(errno));
	/* Closed first, then said: esockd counts it closed on the line. */
	if (c->ch != NULL)
		chan_closed(t, c->ch, c->id);
	free(c->id);
	free(c->pend);
	free(c);
	t->conns--;
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
}

/* Peer closed and everything is echoed: send our FIN, then close. */
static void conn_finish(struct ethread *t, struct econn *c)
{
	if (shutdown(c->fd, SHUT_WR) != 0 && errno != ENOTCONN &&
	    may_complain(t))
		logmsg("shutdown: %s", strerror(errno));
	conn_free(t, c);
}

/* epoll_ctl ADD or MOD of fd for events, with ptr as its data. */
static int watch(int epfd, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof ev);
	ev.events = events;
	ev.data.ptr = ptr;
	return epoll_ctl(epfd, op, fd, &ev);
}

/* Re-poll the socket: an edge we stopped short of fires again.  Watches
 * for room to write from the first echo held on. */
static int conn_rearm(struct ethread *t, struct econn *c)
{
	if (c->pend_len > 0)
		c->watch_out = true;
	return watch(t->epfd, EPOLL_CTL_MOD, c->fd,
	    CONN_EVENTS | (c->watch_out ? EPOLLOUT : 0), c);
}

/* Write what we owe.  1: all out; 0: still pending (an EPOLLOUT edge or
 * a rearm brings us back); -1: the connection is dead. */
static int flush_pending(struct ethread *t, struct econn *c)
{
	ssize_t n;
	int i;

	for (i = 0; i < IO_BUDGET && c->pend_off < c->pend_len; i++) {
		n = send(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off,
			 MSG_NOSIGNAL);
		if (n < 0 && would_block(errno))
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		c->pend_off += (size_t)n;
	}
	if (c->pend_off < c->pend_len)
		return conn_rearm(t, c) == 0 ? 0 : -1;
	free(c->pend);
	c->pend = NULL;
	c->pend_off = c->pend_len = 0;
	return 1;
}

/* Echo len bytes now; keep what the socket refuses.  Memory stays bounded:
 * the caller stops reading a connection while it has a remainder. */
static int echo_back(struct ethread *t, struct econn *c, size_t len)
{
	size_t off = 0;
	bool blocked = false;
	ssize_t n;
	int i;

	for (i = 0; i < IO_BUDGET && off < len; i++) {
		n = send(c->fd, t->buf + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && would_block(errno)) {
			blocked = true;
			break;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		off += (size_t)n;
	}
	if (off == len)
		return 0;
	c->pend = malloc(len - off);
	if (c->pend == NULL)
		return -1;
	memcpy(c->pend, t->buf + off, len - off);
	c->pend_off = 0;
	c->pend_len = len - off;
	/* Blocked with EPOLLOUT watched: its edge will come.  Else (the
	 * first hold, or a budget stop with room left) re-poll, watching
	 * EPOLLOUT from now on: the MOD raises the edge if room is there. */
	if (!(blocked && c->watch_out) && conn_rearm(t, c) != 0)
		return -1;
	return 0;
}

/* 1: keep the connection; 0: it is finished or dead (already freed). */
static int read_echo(struct ethread *t, struct econn *c, uint32_t events)
{
	ssize_t n;
	int i;

	for (i = 0; i < IO_BUDGET; i++) {
		n = recv(c->fd, t->buf, BUF_SIZE, 0);
		if (n == 0) {
			conn_finish(t, c);	/* nothing pending here */
			return 0;
		}
		if (n < 0 && would_block(errno))
			return 1;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || echo_back(t, c, (size_t)n) != 0)
			goto drop;
		if (c->pend_len > 0)
			return 1;	/* read no more until the peer drains */
		/* A short read emptied the socket.  Newer data raises a new
		 * edge; a FIN that came before epoll_wait shows as RDHUP in
		 * this event, and then we read on to see the EOF. */
		if ((size_t)n < BUF_SIZE && !(events & HUP_EVENTS))
			return 1;
	}
	if (conn_rearm(t, c) == 0)
		return 1;
drop:
	conn_free(t, c);
	return 0;
}

static void conn_event(struct ethread *t, struct econn *c, uint32_t events)
{
	int r;

	if (c->pend_len > 0) {
		r = flush_pending(t, c);
		if (r < 0) {
			conn_free(t, c);
			return;
		}
		if (r == 0)
			return;
	}
	/* The EPOLLIN edge may have come while we were not reading: read. */
	(void)read_echo(t, c, events);
}

/* A new connection on this thread: an accepted one (ch NULL), or a
 * handed-off client (ch its channel, id its UNIQUE_ID, taken over). */
static void conn_new(struct ethread *t, int fd, struct chan *ch, char *id)
{
	static const int one = 1;
	struct econn *c;

	/* A small echo must not wait for the ACK of the previous one.  A
	 * handed-off client has it from esockd's listener (tcp_nodelay). */
	if (!g_addr.is_unix &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		goto fail;
	c = calloc(1, sizeof *c);
	if (c == NULL)
		goto fail;
	c->kind = K_CONN;
	c->fd = fd;
	c->ch = ch;
	c->id = id;
	/* ADD polls the socket: data that is already there raises the edge. */
	if (watch(t->epfd, EPOLL_CTL_ADD, fd, CONN_EVENTS, c) != 0) {
		free(c);
		goto fail;
	}
	t->conns++;
	return;
fail:
	if (may_complain(t))
		logmsg("new connection: %s", strerror(errno));
	if (close(fd) != 0 && may_complain(t))
		logmsg("close: %s", strerror(errno));
	if (ch != NULL)
		chan_closed(t, ch, id);
	free(id);
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
}

static int listener_add(struct ethread *t)
{
	/* Level-triggered listener; on the shared Unix one, EXCLUSIVE wakes
	 * one thread per connection instead of all of them. */
	return watch(t->epfd, EPOLL_CTL_ADD, t->lfd,
	    EPOLLIN | (g_addr.is_unix ? EPOLLEXCLUSIVE : 0), NULL);
}

/* accept() failed for want of fds anyway (something else holds them):
 * take the level-triggered listener out of epoll for a moment instead
 * of spinning on it.  DEL/ADD, since EPOLLEXCLUSIVE forbids MOD. */
static void listener_pause(struct ethread *t)
{
	if (may_complain(t))
		logmsg("thread %u: accept: %s; pausing the listener",
		       t->idx, strerror(errno));
	if (epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->lfd, NULL) != 0) {
		logmsg("epoll_ctl DEL listener: %s", strerror(errno));
		return;
	}
	t->paused_until = bench_now_ns() + PAUSE_NS;
}

static void listener_resume(struct ethread *t)
{
	if (t->paused_until == 0 || bench_now_ns() < t->paused_until)
		return;
	if (listener_add(t) != 0) {
		logmsg("epoll_ctl ADD listener: %s", strerror(errno));
		t->paused_until = bench_now_ns() + PAUSE_NS;
		return;
	}
	t->paused_until = 0;
}

/* Over the cap: close at once, so the client sees FIN/RST now. */
static void shed(struct ethread *t, int fd)
{
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
	if (may_complain(t))
		logmsg("thread %u: %ld connections, the cap; shedding new ones",
		       t->idx, g_conn_cap);
	if (close(fd) != 0 && may_complain(t))
		logmsg("close: %s", strerror(errno));
}

/* ------------------------------------------------------------------ */
/* Hand-off (-H): channels from esockd                                 */

#define HELLO		"esockd-handoff 1\n"
#define PP2_HDR		16	/* signature, version, family, length */
#define PP2_MAX		(PP2_HDR + 65535)
#define PP2_UNIQUE_ID	0x05
#define ID_MAX		64
#define CHAN_EVENTS	(EPOLLIN | EPOLLRDHUP | EPOLLET)
#define CHAN_BUDGET	128	/* recvmsg calls per event, then re-poll */

static const uint8_t pp2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

/* One channel: the message being read (the descriptor comes with its
 * first byte) and the "closed" lines the socket would not take yet.
 * Freed once it has ended and its last client is closed. */
struct chan {
	int kind;		/* K_CHAN: first, as in struct econn */
	int fd;			/* -1 once ended */
	unsigned clients;	/* handed on it and not closed yet */
	bool reading;		/* chan_read is on the stack: do not free */
	bool watch_out;		/* EPOLLOUT registered (never removed) */
	int in_fd;		/* the client of the message being read */
	size_t in_got;
	char *out;
	size_t out_len, out_cap;
	uint8_t in[PP2_MAX];
};

static void chan_free_if_done(struct chan *ch)
{
	if (ch->fd >= 0 || ch->clients > 0 || ch->reading)
		return;
	free(ch->out);
	free(ch);
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
}

/* The channel is over (EOF, error, garbage): close it.  Its clients go
 * on echoing as orphans, unannounced (see the top of the file). */
static void chan_end(struct ethread *t, struct chan *ch)
{
	if (close(ch->fd) != 0 && may_complain(t))
		logmsg("close channel: %s", strerror(errno));
	ch->fd = -1;
	if (ch->in_fd >= 0)
		(void)close(ch->in_fd);
	ch->in_fd = -1;
	ch->out_len = 0;
	chan_free_if_done(ch);
}

static int chan_rearm(struct ethread *t, struct chan *ch)
{
	return watch(t->epfd, EPOLL_CTL_MOD, ch->fd,
	    CHAN_EVENTS | (ch->watch_out ? EPOLLOUT : 0), ch);
}

/* Send the held lines.  0: sent or held (EPOLLOUT brings us back);
 * -1: the channel is dead. */
static int chan_flush(struct ethread *t, struct chan *ch)
{
	ssize_t n;

	while (ch->out_len > 0) {
		n = send(ch->fd, ch->out, ch->out_len,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && would_block(errno)) {
			if (ch->watch_out)
				return 0;
			ch->watch_out = true;
			return chan_rearm(t, ch);
		}
		if (n < 0)
			return -1;
		memmove(ch->out, ch->out + n, ch->out_len - (size_t)n);
		ch->out_len -= (size_t)n;
	}
	return 0;
}

/* A client of ch is closed: say so with its id (NULL: it had none), and
 * drop the channel if it has ended and this was its last client. */
static void chan_closed(struct ethread *t, struct chan *ch, const char *id)
{
	char line[ID_MAX + 16];
	size_t len;
	char *p;

	ch->clients--;
	if (ch->fd < 0 || id == NULL) {
		chan_free_if_done(ch);
		return;
	}
	len = (size_t)snprintf(line, sizeof line, "closed %s\n", id);
	if (ch->out_len + len > ch->out_cap) {
		size_t cap = ch->out_cap ? ch->out_cap * 2 : 4096;

		while (cap < ch->out_len + len)
			cap *= 2;
		p = realloc(ch->out, cap);
		if (p == NULL) {
			logmsg("out of memory for a closed line; ending the "
			       "channel");
			chan_end(t, ch);
			return;
		}
		ch->out = p;
		ch->out_cap = cap;
	}
	memcpy(ch->out + ch->out_len, line, len);
	ch->out_len += len;
	if (chan_flush(t, ch) != 0) {
		if (may_complain(t))
			logmsg("channel send: %s", strerror(errno));
		chan_end(t, ch);
	}
}

/* The UNIQUE_ID TLV of a PROXY v2 message of len bytes, as a string
 * (the caller frees it), or NULL.  Other TLVs are skipped. */
static char *pp2_unique_id(const uint8_t *m, size_t len)
{
	size_t off = PP2_HDR, tl;

	switch (m[13]) {
	case 0x11: off += 12; break;	/* TCP4 */
	case 0x21: off += 36; break;	/* TCP6 */
	case 0x31: off += 216; break;	/* UNIX */
	default: break;
	}
	while (off + 3 <= len) {
		tl = (size_t)m[off + 1] << 8 | m[off + 2];
		if (off + 3 + tl > len)
			return NULL;
		if (m[off] == PP2_UNIQUE_ID) {
			if (tl == 0 || tl > ID_MAX ||
			    memchr(m + off + 3, '\n', tl) != NULL ||
			    memchr(m + off + 3, '\0', tl) != NULL)
				return NULL;
			return strndup((const char *)m + off + 3, tl);
		}
		off += 3 + tl;
	}
	return NULL;
}

/* A whole message is in: take its client on this thread. */
static void chan_message(struct ethread *t, struct chan *ch, size_t len)
{
	int fd = ch->in_fd;
	char *id = pp2_unique_id(ch->in, len);

	ch->in_fd = -1;
	ch->in_got = 0;
	if (fd < 0 || id == NULL) {
		if (may_complain(t))
			logmsg("hand-off message without %s",
			       fd < 0 ? "a descriptor" : "a UNIQUE_ID");
		if (fd >= 0)
			(void)close(fd);
		if (id != NULL) {	/* nothing to echo on: closed */
			ch->clients++;
			chan_closed(t, ch, id);
		}
		free(id);
		return;
	}
	ch->clients++;
	if (atomic_fetch_add_explicit(&g_conns, 1, memory_order_relaxed) >=
	    g_conn_cap) {
		shed(t, fd);
		chan_closed(t, ch, id);
		free(id);
		return;
	}
	conn_new(t, fd, ch, id);	/* owns id now */
}

/* Read messages: 16 bytes, then `length` more, never into the next one,
 * always with room for one descriptor (a read without it would make the
 * kernel close the descriptor). */
static void chan_read(struct ethread *t, struct chan *ch)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct cmsghdr *cm;
	struct msghdr mh;
	struct iovec iov;
	size_t want, len, k, nfd;
	ssize_t n;
	int i, fd;

	ch->reading = true;
	for (i = 0; i < CHAN_BUDGET && ch->fd >= 0; i++) {
		len = ch->in_got < PP2_HDR ? 0 :
		      (size_t)ch->in[14] << 8 | ch->in[15];
		want = PP2_HDR + len - ch->in_got;
		iov.iov_base = ch->in + ch->in_got;
		iov.iov_len = want;
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof cbuf.buf;
		n = recvmsg(ch->fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && would_block(errno))
			goto out;
		if (n <= 0) {
			if (n < 0 && may_complain(t))
				logmsg("channel recvmsg: %s", strerror(errno));
			chan_end(t, ch);
			goto out;
		}
		for (cm = CMSG_FIRSTHDR(&mh); cm != NULL;
		     cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET ||
			    cm->cmsg_type != SCM_RIGHTS)
				continue;
			nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (k = 0; k < nfd; k++) {
				memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int),
				       sizeof fd);
				if (ch->in_fd < 0)
					ch->in_fd = fd;
				else
					(void)close(fd);
			}
		}
		if ((mh.msg_flags & MSG_CTRUNC) && may_complain(t))
			logmsg("channel: control data truncated");
		ch->in_got += (size_t)n;
		if (ch->in_got < PP2_HDR)
			continue;
		if (memcmp(ch->in, pp2_sig, sizeof pp2_sig) != 0 ||
		    (ch->in[12] & 0xF0) != 0x20) {
			logmsg("channel: not a PROXY v2 header; ending it");
			chan_end(t, ch);
			goto out;
		}
		len = (size_t)ch->in[14] << 8 | ch->in[15];
		if (ch->in_got == PP2_HDR + len)
			chan_message(t, ch, PP2_HDR + len);
	}
	/* Budget spent: re-poll, which raises the edge if more is there. */
	if (ch->fd >= 0 && chan_rearm(t, ch) != 0)
		chan_end(t, ch);
out:
	ch->reading = false;
	chan_free_if_done(ch);
}

static void chan_event(struct ethread *t, struct chan *ch, uint32_t events)
{
	if ((events & EPOLLOUT) && ch->out_len > 0 &&
	    chan_flush(t, ch) != 0) {
		chan_end(t, ch);
		return;
	}
	chan_read(t, ch);
}

/* A channel accepted: greet it, then give it to the next thread in turn,
 * which reads it and echoes its clients from then on. */
static void chan_new(struct ethread *t, int fd)
{
	struct ethread *to;
	struct chan *ch;

	to = &g_threads[atomic_fetch_add(&g_next_thread, 1) % g_nthreads];
	ch = calloc(1, sizeof *ch);
	if (ch == NULL)
		goto fail;
	ch->kind = K_CHAN;
	ch->fd = fd;
	ch->in_fd = -1;
	/* A fresh socket's buffer takes the 17 bytes whole. */
	if (send(fd, HELLO, sizeof HELLO - 1, MSG_NOSIGNAL) !=
	    (ssize_t)(sizeof HELLO - 1))
		goto fail;
	if (watch(to->epfd, EPOLL_CTL_ADD, fd, CHAN_EVENTS, ch) != 0)
		goto fail;
	return;
fail:
	if (may_complain(t))
		logmsg("new channel: %s", strerror(errno));
	free(ch);
	(void)close(fd);
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
}

static void accept_batch(struct ethread *t)
{
	int i, fd;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			if (atomic_fetch_add_explicit(&g_conns, 1,
					memory_order_relaxed) >= g_conn_cap)
				shed(t, fd);
			else if (g_handoff)
				chan_new(t, fd);
			else
				conn_new(t, fd, NULL, NULL);
			continue;
		}
		if (would_block(errno))
			return;	/* another thread took it, or none left */
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM) {
			listener_pause(t);
			return;
		}
		if (may_complain(t))
			logmsg("accept: %s", strerror(errno));
		return;
	}
}

static void *thread_main(void *arg)
{
	struct ethread *t = arg;
	struct epoll_event evs[MAX_EVENTS];
	int n, i;

	/* Runs until SIGTERM/SIGINT; each wait is bounded by WAIT_MS. */
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		listener_resume(t);
		n = epoll_wait(t->epfd, evs, MAX_EVENTS,
			       t->paused_until ? (int)(PAUSE_NS / 1000000) :
						 WAIT_MS);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			logmsg("thread %u: epoll_wait: %s", t->idx,
			       strerror(errno));
			atomic_store(&g_failed, true);
			/* Wake the main thread, which exits with status 1. */
			if (kill(getpid(), SIGTERM) != 0)
				abort();
			break;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL)
				accept_batch(t);
			else if (*(int *)evs[i].data.ptr == K_CHAN)
				chan_event(t, evs[i].data.ptr, evs[i].events);
			else
				conn_event(t, evs[i].data.ptr, evs[i].events);
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */

static int parse_tcp(const char *s)
{
	switch (bench_parse_loopback(s, &g_addr.in)) {
	case 0:
		return 0;
	case BENCH_ADDR_REMOTE:
		logmsg("-l tcp:%s: only 127.0.0.0/8 is allowed", s);
		return -1;
	default:
		logmsg("-l tcp:%s: expected tcp:127.0.0.1:PORT", s);
		return -1;
	}
}

static int parse_addr(const char *s)
{
	memset(&g_addr, 0, sizeof g_addr);
	g_addr.text = s;
	if (strncmp(s, "unix:", 5) == 0) {
		size_t len = strlen(s + 5);

		if (len == 0 || len >= sizeof g_addr.un.sun_path)
			goto bad;
		g_addr.is_unix = true;
		g_addr.un.sun_family = AF_UNIX;
		memcpy(g_addr.un.sun_path, s + 5, len + 1);
		return 0;
	}
	if (strncmp(s, "tcp:", 4) == 0)
		return parse_tcp(s + 4);	/* it says what is wrong */
bad:
	logmsg("-l %s: expected unix:/path/to.sock or tcp:127.0.0.1:PORT", s);
	return -1;
}

/* A socket file left by a dead server is stale; a live one is not ours
 * to take, and a file that is not a socket is never removed. */
static int remove_stale(const char *path)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISSOCK(st.st_mode)) {
		logmsg("%s exists and is not a socket", path);
		errno = EEXIST;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	r = connect(fd, (const struct sockaddr *)&g_addr.un, sizeof g_addr.un);
	if (close(fd) != 0)
		return -1;
	if (r == 0 || errno == EAGAIN) {
		logmsg("%s: another server is listening there", path);
		errno = EADDRINUSE;
		return -1;
	}
	return unlink(path);
}

static int listen_on(int fd, const struct sockaddr *sa, socklen_t len)
{
	if (bind(fd, sa, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		int e = errno;

		(void)close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int listen_unix(void)
{
	int fd;

	if (remove_stale(g_addr.un.sun_path) != 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	return listen_on(fd, (const struct sockaddr *)&g_addr.un,
			 sizeof g_addr.un);
}

/* One listener per thread (and per process): SO_REUSEPORT spreads the
 * connections over all of them in the kernel. */
static int listen_tcp(void)
{
	static const int one = 1;
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
		(void)close(fd);
		return -1;
	}
	return listen_on(fd, (const struct sockaddr *)&g_addr.in,
			 sizeof g_addr.in);
}

/* Raise the soft fd limit to the hard one and derive the connection cap:
 * the limit minus stdio, our epoll sets and listeners, and some slack. */
static int raise_nofile(unsigned threads)
{
	struct rlimit rl;
	int rc = 0;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			rc = -1;
			if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
				return -1;
		}
	}
	g_conn_cap = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1L << 30 ?
		     1L << 30 : (long)rl.rlim_cur;
	g_conn_cap -= 3 + 1 + 2 * (long)threads + FD_SLACK;
	if (g_conn_cap < 1)
		g_conn_cap = 1;
	return rc;
}

static int thread_setup(struct ethread *t, unsigned idx, int shared_lfd)
{
	t->idx = idx;
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd < 0)
		return -1;
	t->lfd = g_addr.is_unix ? shared_lfd : listen_tcp();
	if (t->lfd < 0)
		return -1;
	return listener_add(t);
}

static void thread_cleanup(struct ethread *t, int shared_lfd)
{
	if (t->lfd >= 0 && t->lfd != shared_lfd)
		(void)close(t->lfd);
	if (t->epfd >= 0)
		(void)close(t->epfd);
}

static void usage(FILE *f)
{
	fputs("usage: esockd-bench-echo -l ADDR [-T THREADS]\n"
	      "       esockd-bench-echo -H unix:/path/to.sock [-T THREADS]\n"
	      "  ADDR: unix:/path/to.sock | tcp:127.0.0.1:PORT\n"
	      "  -H PATH     an esockd hand-off handler on that socket: takes"
	      " the clients\n"
	      "              from its channels and echoes on them itself\n"
	      "  -T THREADS  epoll threads (default 1); tcp: one SO_REUSEPORT"
	      " listener each\n"
	      "Echoes every byte back; SIGTERM/SIGINT exits 0.\n", f);
}

static int parse_args(int argc, char **argv, unsigned *threads)
{
	const char *addr = NULL;
	unsigned long v;
	char *end;
	int opt;

	*threads = 1;
	while ((opt = getopt(argc, argv, "l:H:T:h")) != -1) {
		switch (opt) {
		case 'H':
			g_handoff = true;
			/* FALLTHROUGH */
		case 'l':
			if (addr != NULL) {
				logmsg("one of -l and -H, once");
				return -1;
			}
			addr = optarg;
			break;
		case 'T':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (*end != '\0' || errno != 0 || v < 1 ||
			    v > MAX_THREADS) {
				logmsg("-T %s: expected 1 to %d", optarg,
				       MAX_THREADS);
				return -1;
			}
			*threads = (unsigned)v;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (addr == NULL || optind != argc) {
		usage(stderr);
		return -1;
	}
	if (g_handoff && strncmp(addr, "unix:", 5) != 0) {
		logmsg("-H %s: expected unix:/path/to.sock", addr);
		return -1;
	}
	return parse_addr(addr);
}

/* Block the stop signals in every thread; main takes them with sigwait. */
static int block_signals(sigset_t *set)
{
	int err;

	if (sigemptyset(set) != 0 || sigaddset(set, SIGTERM) != 0 ||
	    sigaddset(set, SIGINT) != 0)
		return -1;
	err = pthread_sigmask(SIG_BLOCK, set, NULL);
	if (err != 0) {
		errno = err;
		return -1;
	}
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return -1;
	return 0;
}

static int start_threads(struct ethread *ts, unsigned n, int shared_lfd)
{
	unsigned i;
	int err;

	for (i = 0; i < n; i++) {
		if (thread_setup(&ts[i], i, shared_lfd) != 0) {
			logmsg("listen on %s: %s", g_addr.text, strerror(errno));
			return -1;
		}
	}
	for (i = 0; i < n; i++) {
		err = pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]);
		if (err != 0) {
			logmsg("pthread_create: %s", strerror(err));
			return -1;
		}
		ts[i].started = true;
	}
	return 0;
}

static void stop_threads(struct ethread *ts, unsigned n)
{
	unsigned i;
	int err;

	/* Each thread sees the flag within WAIT_MS. */
	atomic_store(&g_stop, true);
	for (i = 0; i < n; i++) {
		if (!ts[i].started)
			continue;
		err = pthread_join(ts[i].tid, NULL);
		if (err != 0)
			logmsg("pthread_join: %s", strerror(err));
	}
}

static void wait_for_signal(const sigset_t *set)
{
	int sig = 0;

	/* sigwait only fails for an invalid set; then stop, do not spin. */
	if (sigwait(set, &sig) != 0)
		atomic_store(&g_failed, true);
}

int main(int argc, char **argv)
{
	struct ethread *ts = NULL;
	unsigned n = 1, i;
	int shared_lfd = -1, rc;
	sigset_t set;

	rc = parse_args(argc, argv, &n);
	if (rc != 0)
		return rc > 0 ? 0 : 1;
	rc = 1;
	if (raise_nofile(n) != 0)
		logmsg("warning: cannot raise the fd limit: %s",
		       strerror(errno));
	if (block_signals(&set) != 0) {
		logmsg("signals: %s", strerror(errno));
		return 1;
	}
	ts = calloc(n, sizeof *ts);
	if (ts == NULL) {
		logmsg("out of memory");
		return 1;
	}
	for (i = 0; i < n; i++)
		ts[i].epfd = ts[i].lfd = -1;
	g_threads = ts;
	g_nthreads = n;
	if (g_addr.is_unix) {
		shared_lfd = listen_unix();
		if (shared_lfd < 0) {
			logmsg("listen on %s: %s", g_addr.text, strerror(errno));
			goto fail;
		}
	}
	if (start_threads(ts, n, shared_lfd) != 0)
		goto fail;
	fprintf(stderr, "%s on %s\n", g_handoff ? "hand-off handler" :
		"listening", g_addr.text);
	wait_for_signal(&set);
	rc = atomic_load(&g_failed) ? 1 : 0;
fail:
	stop_threads(ts, n);
	for (i = 0; i < n; i++)
		thread_cleanup(&ts[i], shared_lfd);
	if (shared_lfd >= 0) {
		(void)close(shared_lfd);
		if (unlink(g_addr.un.sun_path) != 0)
			logmsg("unlink %s: %s", g_addr.un.sun_path,
			       strerror(errno));
	}
	free(ts);
	return rc;
}
