/*
 * bench/loadgen.c: esockd-bench, the load generator of the esockd
 * benchmarks.
 *
 * Owns the four load modes (rate, echo, stream, idle), their per-thread
 * epoll loops, counters and latency histograms, the multi-process idle
 * mode, and the single machine-readable RESULT line.  It only ever
 * connects to 127.0.0.0/8.  libc and pthreads only.
 *
 * Threads share nothing on the hot path: each owns its connections, its
 * epoll set and its counters; the main thread merges them at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* glibc's <netinet/in.h> lacks it; the value is the kernel ABI (linux/in.h). */
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define NS_PER_S	1000000000ull
#define NS_PER_MS	1000000ull

#define RATE_MSG	64	/* rate: request and echo size */
#define IDLE_MSG	16	/* idle: the single verification round trip */
#define OP_TIMEOUT_NS	(5 * NS_PER_S)	 /* one connection / round trip */
#define IDLE_TIMEOUT_NS	(10 * NS_PER_S)	 /* idle: connect + verify of one */
#define ESTABLISH_NS	(120 * NS_PER_S) /* idle: whole establishment phase */
#define REPORT_SLACK_NS	(30 * NS_PER_S)	 /* idle -P: children's report delay */
#define DRAIN_NS	(5 * NS_PER_S)	 /* stream: wait for the last echoes */
#define JOIN_SLACK_NS	(10 * NS_PER_S)
#define SCAN_NS		(100 * NS_PER_MS) /* timeout scan and progress period */
#define INFLIGHT_PER_PROC 2000	/* connects in flight, so backlogs hold */
#define START_BATCH	256	/* new connections per loop round */
#define IO_BUDGET	64	/* syscalls per direction per event */
#define RXBUF_SIZE	65536
#define PAT_PERIOD	251	/* prime: never lines up with sizes */
#define MAX_EVENTS	256
#define MAX_MSG		(16u << 20)
#define MAX_CLIENTS	1000000u
#define MAX_THREADS	64u
#define MAX_PROCS	64u
#define MAX_SOURCES	254u
#define FD_SLACK	64u	/* epoll sets, stdio, pipes */

/* Log-linear latency histogram in microseconds: exact below 64 us, then
 * 32 sub-buckets per power of two (about 3 % resolution) up to 10 s. */
#define HIST_SUB_BITS	5
#define HIST_SUB	(1u << HIST_SUB_BITS)
#define HIST_MAX_US	10000000ull
#define HIST_BUCKETS	640	/* covers every value below 2^24 us */

#define CONN_EVENTS	(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
#define IN_EVENTS	(EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)

enum mode { MODE_RATE, MODE_ECHO, MODE_STREAM, MODE_IDLE, MODE_COUNT };
static const char *const mode_names[MODE_COUNT] = {
	"rate", "echo", "stream", "idle"
};

enum err_kind {
	ERR_CONNECT, ERR_RESET, ERR_EOF, ERR_TIMEOUT, ERR_SHORT, ERR_KINDS
};
static const char *const err_names[ERR_KINDS] = {
	"connect", "reset", "eof", "timeout", "short"
};

enum cstate {
	C_OFF,		/* no socket */
	C_CONNECTING,	/* non-blocking connect in progress */
	C_BUSY,		/* exchanging data */
	C_DRAIN,	/* stream: no more sending, waiting for the echo */
	C_HELD,		/* idle: verified, held open */
};

struct config {
	enum mode mode;
	char target_str[40];
	struct sockaddr_in target;
	uint32_t clients, threads, sources, procs;
	double duration_s, warmup_s;
	size_t msg_bytes;
	bool linger_rst;
	const char *outfile;
};

struct stats {
	uint64_t done;		/* rate: connections; echo: round trips */
	uint64_t err[ERR_KINDS];
	uint64_t opened;	/* connection attempts */
	uint64_t win_sent, win_recv;	/* stream: in the measured window */
	uint64_t tot_sent, tot_recv;	/* stream: whole run */
	uint64_t established, failed, dropped;	/* idle */
	uint64_t t_settled;	/* idle: end of establishment (monotonic ns) */
	uint64_t hist[HIST_BUCKETS];
};

struct conn {
	int fd;
	uint32_t gen;		/* bumped per socket: spots stale events */
	uint8_t state;
	bool paced;		/* counted in worker.inflight */
	uint32_t id;		/* client number, unique across threads/procs */
	uint32_t base;		/* pattern offset of the current message */
	uint64_t seq;		/* echo: messages done on this socket */
	uint64_t t0;		/* start of the current wait (ns) */
	uint64_t tx, rx;	/* bytes of this message, or stream totals */
};

struct worker {
	unsigned idx;
	pthread_t tid;
	bool started;
	int epfd;
	bool running;		/* failed connections are restarted */
	bool fatal;
	struct conn *conns;
	uint32_t nconns;
	uint32_t next_start;	/* conns below this were started once */
	uint32_t *restart;	/* slots waiting for a new connection */
	uint32_t nrestart;
	uint32_t inflight, inflight_max;
	uint32_t settled;	/* idle: established or failed */
	uint32_t ndrain;	/* stream: connections in C_DRAIN */
	uint32_t src_next;	/* round robin over -S sources */
	uint64_t last_scan;
	uint8_t *rxbuf;
	bool logged[ERR_KINDS];
	uint64_t seen;		/* progress: all completions or bytes */
	struct stats st;
	struct stats phase1;	/* idle: published before g_ready */
	_Atomic uint64_t progress; /* read by the main thread each second */
};

/* Read-only once the workers run. */
static struct config g_cfg;
static uint8_t *g_pat;		/* every message is cut from this */
static uint64_t g_begin, g_meas, g_end;	/* timeline (monotonic ns) */
static char g_tag[24];		/* "[proc N] " in idle children */

/* The only state shared while running, touched a few times per run. */
static atomic_uint g_ready;	/* idle: workers past establishment */
static atomic_uint g_finished;	/* workers whose loop has ended */
static atomic_bool g_stop;	/* idle: the hold is over */

/* ------------------------------------------------------------------ */
/* Small utilities                                                     */

/* A line on stderr, named for this tool (common.h). */
#define logmsg(...)	bench_log("esockd-bench", g_tag, __VA_ARGS__)

static uint64_t now_ns(void)
{
	return bench_now_ns();
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts;
	int i;

	ts.tv_sec = (time_t)(ns / NS_PER_S);
	ts.tv_nsec = (long)(ns % NS_PER_S);
	/* EINTR resumes with the time left; the count guards a signal storm. */
	for (i = 0; i < 1000; i++) {
		if (nanosleep(&ts, &ts) == 0 || errno != EINTR)
			return;
	}
}

static double secs(uint64_t ns)
{
	return (double)ns / (double)NS_PER_S;
}

static uint64_t to_ns(double s)
{
	return (uint64_t)llround(s * (double)NS_PER_S);
}

static bool would_block(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK;
}

/* ------------------------------------------------------------------ */
/* Histogram                                                           */

static unsigned hist_index(uint64_t us)
{
	unsigned msb, shift;

	if (us > HIST_MAX_US)
		us = HIST_MAX_US;
	if (us < 2 * HIST_SUB)
		return (unsigned)us;
	msb = 63u - (unsigned)__builtin_clzll(us);
	shift = msb - HIST_SUB_BITS;
	return (shift + 1) * HIST_SUB + (unsigned)((us >> shift) - HIST_SUB);
}

/* The middle of a bucket, so a percentile is off by at most half of it. */
static uint64_t hist_value(unsigned idx)
{
	unsigned shift;
	uint64_t low;

	if (idx < 2 * HIST_SUB)
		return idx;
	shift = idx / HIST_SUB - 1;
	low = (uint64_t)(idx % HIST_SUB + HIST_SUB) << shift;
	return low + ((1ull << shift) >> 1);
}

static void hist_add(uint64_t *h, uint64_t ns)
{
	h[hist_index(ns / 1000)]++;
}

static uint64_t hist_percentile(const uint64_t *h, double q)
{
	uint64_t total = 0, seen = 0, rank;
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++)
		total += h[i];
	if (total == 0)
		return 0;
	rank = (uint64_t)ceil(q * (double)total);
	if (rank < 1)
		rank = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h[i];
		if (seen >= rank)
			return hist_value(i);
	}
	return hist_value(HIST_BUCKETS - 1);
}

static void stats_merge(struct stats *dst, const struct stats *src)
{
	unsigned i;

	dst->done += src->done;
	for (i = 0; i < ERR_KINDS; i++)
		dst->err[i] += src->err[i];
	dst->opened += src->opened;
	dst->win_sent += src->win_sent;
	dst->win_recv += src->win_recv;
	dst->tot_sent += src->tot_sent;
	dst->tot_recv += src->tot_recv;
	dst->established += src->established;
	dst->failed += src->failed;
	dst->dropped += src->dropped;
	if (src->t_settled > dst->t_settled)
		dst->t_settled = src->t_settled;
	for (i = 0; i < HIST_BUCKETS; i++)
		dst->hist[i] += src->hist[i];
}

static uint64_t stats_errors(const struct stats *st)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < ERR_KINDS; i++)
		n += st->err[i];
	return n;
}

/* ------------------------------------------------------------------ */
/* Payload pattern                                                     */

/* Byte j of the pattern depends on j % 251 only; a connection's stream or
 * message starts at its own offset, so bytes from another connection,
 * a lost chunk or a stale message fail the memcmp. */
static int pattern_init(void)
{
	size_t len = PAT_PERIOD + (g_cfg.msg_bytes > RXBUF_SIZE ?
				   g_cfg.msg_bytes : RXBUF_SIZE);
	size_t j;

	g_pat = malloc(len);
	if (g_pat == NULL) {
		logmsg("out of memory for a %zu-byte pattern", len);
		return -1;
	}
	/* 167 is odd, so the 251 values of one period are all distinct. */
	for (j = 0; j < len; j++)
		g_pat[j] = (uint8_t)((j % PAT_PERIOD) * 167u + 0x5au);
	return 0;
}

static uint32_t pat_base(uint32_t id, uint64_t n)
{
	return (uint32_t)(((uint64_t)id * 37u + n * 11u) % PAT_PERIOD);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static bool in_window(uint64_t now)
{
	return now >= g_meas && now < g_end;
}

/* Rate and echo count errors inside the measured window only, like their
 * successes; stream and idle connections live through the whole run, so
 * their errors count whenever they happen. */
static bool count_err(uint64_t now)
{
	if (g_cfg.mode == MODE_RATE || g_cfg.mode == MODE_ECHO)
		return in_window(now);
	return true;
}

static uint64_t conn_key(const struct worker *w, const struct conn *c)
{
	return (uint64_t)c->gen << 32 | (uint32_t)(c - w->conns);
}

static void unpace(struct worker *w, struct conn *c)
{
	if (!c->paced)
		return;
	c->paced = false;
	w->inflight--;
}

static void conn_close(struct worker *w, struct conn *c)
{
	if (c->state == C_OFF)
		return;
	/* close() also drops the fd from the epoll set: it is never dup()ed. */
	if (c->fd >= 0 && close(c->fd) != 0)
		logmsg("close: %s", strerror(errno));
	c->fd = -1;
	unpace(w, c);
	if (c->state == C_DRAIN)
		w->ndrain--;
	if (g_cfg.mode == MODE_STREAM) {
		w->st.tot_sent += c->tx;
		w->st.tot_recv += c->rx;
	}
	c->state = C_OFF;
}

static void conn_fail(struct worker *w, struct conn *c, enum err_kind kind,
		      int err)
{
	bool held = c->state == C_HELD;

	if (count_err(now_ns()))
		w->st.err[kind]++;
	/* One line per kind and thread tells why without flooding stderr. */
	if (!w->logged[kind]) {
		w->logged[kind] = true;
		logmsg("thread %u: first %s error: %s", w->idx, err_names[kind],
		       err ? strerror(err) : "-");
	}
	conn_close(w, c);
	if (g_cfg.mode == MODE_IDLE) {
		if (held) {
			w->st.dropped++;
		} else {
			w->st.failed++;
			w->settled++;
		}
		return;
	}
	/* Not restarted here: a connect that fails at once would recurse. */
	if (w->running)
		w->restart[w->nrestart++] = (uint32_t)(c - w->conns);
}

static int io_fail(struct worker *w, struct conn *c, int err)
{
	conn_fail(w, c, c->state == C_CONNECTING ? ERR_CONNECT : ERR_RESET,
		  err);
	return -1;
}

static int sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err ? err : ECONNREFUSED;
}

/* Ask epoll to report the socket again: EPOLL_CTL_MOD re-polls it, so an
 * edge we stopped short of (I/O budget spent) fires on the next wait. */
static void rearm(struct worker *w, struct conn *c)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof ev);
	ev.events = CONN_EVENTS;
	ev.data.u64 = conn_key(w, c);
	if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		(void)io_fail(w, c, errno);
}

static int socket_setup(struct worker *w, int fd)
{
	static const int one = 1;
	struct sockaddr_in src;

	if (g_cfg.sources > 1) {
		memset(&src, 0, sizeof src);
		src.sin_family = AF_INET;
		src.sin_addr.s_addr =
			htonl(INADDR_LOOPBACK + w->src_next++ % g_cfg.sources);
		/* Pick the port at connect() time from the full 4-tuple;
		 * a plain bind() would reserve one per socket and the 28k
		 * ephemeral ports would cap us again. */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			       sizeof one) != 0)
			return -1;
		if (bind(fd, (const struct sockaddr *)&src, sizeof src) != 0)
			return -1;
	}
	/* Persistent connections: a small tail write must not wait for an ACK. */
	if ((g_cfg.mode == MODE_ECHO || g_cfg.mode == MODE_STREAM) &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		return -1;
	if (g_cfg.linger_rst) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
			return -1;
	}
	return 0;
}

static void conn_io(struct worker *w, struct conn *c, uint32_t events);

static void on_connected(struct worker *w, struct conn *c, uint32_t events)
{
	c->state = C_BUSY;
	/* Idle stays paced until its echo check passes: what pacing protects
	 * is the gateway's accept queue and its backend connect. */
	if (g_cfg.mode != MODE_IDLE)
		unpace(w, c);
	switch (g_cfg.mode) {
	case MODE_RATE:		/* t0 stays at the connect */
		c->base = pat_base(c->id, c->gen);
		break;
	case MODE_ECHO:
		c->base = pat_base(c->id, c->seq);
		c->t0 = now_ns();
		break;
	default:
		c->base = pat_base(c->id, 0);
		c->t0 = now_ns();
		break;
	}
	/* Only EPOLLOUT: nothing to read before we send; but if the peer
	 * already hung up (RDHUP), let the read see it. */
	conn_io(w, c, events & ~(uint32_t)EPOLLOUT);
}

static void conn_start(struct worker *w, struct conn *c)
{
	struct epoll_event ev;
	int fd, r, e;

	c->gen++;
	c->t0 = now_ns();
	c->tx = c->rx = 0;
	c->seq = 0;
	c->state = C_CONNECTING;
	c->paced = true;
	w->inflight++;
	w->st.opened++;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	c->fd = fd;
	if (fd < 0)
		goto fail;
	if (socket_setup(w, fd) != 0)
		goto fail;
	r = connect(fd, (const struct sockaddr *)&g_cfg.target,
		    sizeof g_cfg.target);
	if (r != 0 && errno != EINPROGRESS)
		goto fail;
	/* Added after connect(): an unconnected socket polls as HUP. */
	memset(&ev, 0, sizeof ev);
	ev.events = CONN_EVENTS;
	ev.data.u64 = conn_key(w, c);
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		goto fail;
	if (r == 0)		/* loopback may finish inside connect() */
		on_connected(w, c, EPOLLOUT);
	return;
fail:
	e = errno;
	conn_fail(w, c, ERR_CONNECT, e);
}

/* Push the rest of the current message, then pull its echo and compare.
 * Returns 1 when the whole echo arrived intact, 0 while waiting, -1 when
 * the connection failed (counted and closed). */
static int exchange(struct worker *w, struct conn *c, size_t len,
		    bool may_read)
{
	const uint8_t *msg = g_pat + c->base;
	bool again = false;
	ssize_t n;
	int i;

	for (i = 0; i < IO_BUDGET && c->tx < len; i++) {
		n = send(c->fd, msg + c->tx, len - c->tx, MSG_NOSIGNAL);
		if (n < 0 && would_block(errno))
			break;	/* the EPOLLOUT edge brings us back */
		if (n < 0)
			return io_fail(w, c, errno);
		c->tx += (size_t)n;
	}
	if (i == IO_BUDGET && c->tx < len)
		again = true;
	/* Edge-triggered: read only when told there is something, else the
	 * recv is a wasted EAGAIN; newer data raises a new edge anyway. */
	if (may_read) {
		for (i = 0; i < IO_BUDGET && c->rx < len; i++) {
			size_t want = len - c->rx;

			if (want > RXBUF_SIZE)
				want = RXBUF_SIZE;
			n = recv(c->fd, w->rxbuf, want, 0);
			if (n == 0) {
				conn_fail(w, c, ERR_EOF, 0);
				return -1;
			}
			if (n < 0 && would_block(errno))
				break;
			if (n < 0)
				return io_fail(w, c, errno);
			if ((size_t)n > c->tx - c->rx ||
			    memcmp(w->rxbuf, msg + c->rx, (size_t)n) != 0) {
				conn_fail(w, c, ERR_SHORT, 0);
				return -1;
			}
			c->rx += (size_t)n;
		}
		if (c->rx == len)
			return 1;
		if (i == IO_BUDGET)
			again = true;
	}
	if (again)
		rearm(w, c);
	return 0;
}

/* An exchange finished: count it, and time it if inside the window. */
static uint64_t exchange_done(struct worker *w, const struct conn *c)
{
	uint64_t now = now_ns();

	w->seen++;
	if (in_window(now)) {
		w->st.done++;
		hist_add(w->st.hist, now - c->t0);
	}
	return now;
}

static void rate_io(struct worker *w, struct conn *c, bool may_read)
{
	if (exchange(w, c, RATE_MSG, may_read) != 1)
		return;
	exchange_done(w, c);
	conn_close(w, c);
	if (w->running)
		conn_start(w, c);
}

static void echo_io(struct worker *w, struct conn *c, bool may_read)
{
	uint64_t now;

	if (exchange(w, c, g_cfg.msg_bytes, may_read) != 1)
		return;
	now = exchange_done(w, c);
	c->seq++;
	c->base = pat_base(c->id, c->seq);
	c->tx = c->rx = 0;
	c->t0 = now;
	/* Send the next request now; its echo cannot be here yet. */
	(void)exchange(w, c, g_cfg.msg_bytes, false);
}

static void idle_held(struct worker *w, struct conn *c, bool may_read)
{
	ssize_t n;

	if (!may_read)
		return;
	n = recv(c->fd, w->rxbuf, RXBUF_SIZE, 0);
	if (n > 0)		/* nothing may arrive on an idle connection */
		conn_fail(w, c, ERR_SHORT, 0);
	else if (n == 0)
		conn_fail(w, c, ERR_EOF, 0);
	else if (!would_block(errno))
		(void)io_fail(w, c, errno);
}

static void idle_io(struct worker *w, struct conn *c, bool may_read)
{
	if (c->state == C_HELD) {
		idle_held(w, c, may_read);
		return;
	}
	if (exchange(w, c, IDLE_MSG, may_read) != 1)
		return;
	c->state = C_HELD;
	unpace(w, c);
	w->st.established++;
	w->settled++;
}

static int stream_send(struct worker *w, struct conn *c, uint64_t now)
{
	ssize_t n;
	int i;

	/* The echo wait starts when we get ahead of it, not before. */
	if (c->tx == c->rx)
		c->t0 = now;
	for (i = 0; i < IO_BUDGET; i++) {
		n = send(c->fd, g_pat + (c->tx + c->base) % PAT_PERIOD,
			 g_cfg.msg_bytes, MSG_NOSIGNAL);
		if (n < 0 && would_block(errno))
			return 0;
		if (n < 0)
			return io_fail(w, c, errno);
		c->tx += (uint64_t)n;
		w->seen += (uint64_t)n;
		if (in_window(now))
			w->st.win_sent += (uint64_t)n;
	}
	return 1;		/* budget spent, still writable */
}

static int stream_recv(struct worker *w, struct conn *c, uint64_t now)
{
	ssize_t n;
	int i;

	for (i = 0; i < IO_BUDGET; i++) {
		n = recv(c->fd, w->rxbuf, RXBUF_SIZE, 0);
		if (n == 0) {
			conn_fail(w, c, ERR_EOF, 0);
			return -1;
		}
		if (n < 0 && would_block(errno))
			return 0;
		if (n < 0)
			return io_fail(w, c, errno);
		if ((uint64_t)n > c->tx - c->rx ||
		    memcmp(w->rxbuf, g_pat + (c->rx + c->base) % PAT_PERIOD,
			   (size_t)n) != 0) {
			conn_fail(w, c, ERR_SHORT, 0);
			return -1;
		}
		c->rx += (uint64_t)n;
		c->t0 = now;
		w->seen += (uint64_t)n;
		if (in_window(now))
			w->st.win_recv += (uint64_t)n;
	}
	return 1;
}

/* Bulk both ways: write until the socket is full, read what came back. */
static void stream_io(struct worker *w, struct conn *c, bool may_read)
{
	uint64_t now = now_ns();
	int again = 0, r;

	if (c->state == C_BUSY) {
		r = stream_send(w, c, now);
		if (r < 0)
			return;
		again |= r;
	}
	if (may_read) {
		r = stream_recv(w, c, now);
		if (r < 0)
			return;
		again |= r;
	}
	if (c->state == C_DRAIN && c->rx == c->tx) {
		conn_close(w, c);	/* fully echoed */
		return;
	}
	if (again)
		rearm(w, c);
}

static void conn_io(struct worker *w, struct conn *c, uint32_t events)
{
	bool may_read = (events & IN_EVENTS) != 0;

	switch (g_cfg.mode) {
	case MODE_RATE:
		rate_io(w, c, may_read);
		break;
	case MODE_ECHO:
		echo_io(w, c, may_read);
		break;
	case MODE_STREAM:
		stream_io(w, c, may_read);
		break;
	default:
		idle_io(w, c, may_read);
		break;
	}
}

static void dispatch(struct worker *w, const struct epoll_event *ev)
{
	uint32_t idx = (uint32_t)ev->data.u64;
	uint32_t gen = (uint32_t)(ev->data.u64 >> 32);
	struct conn *c;

	if (idx >= w->nconns)
		return;
	c = &w->conns[idx];
	/* Closed (and maybe reopened) earlier in this batch: a stale event. */
	if (c->state == C_OFF || c->gen != gen)
		return;
	if (c->state != C_CONNECTING) {
		conn_io(w, c, ev->events);
		return;
	}
	if (ev->events & (EPOLLERR | EPOLLHUP)) {
		conn_fail(w, c, ERR_CONNECT, sock_error(c->fd));
		return;
	}
	if (ev->events & EPOLLOUT)
		on_connected(w, c, ev->events);
}

/* ------------------------------------------------------------------ */
/* Worker loop                                                         */

static uint64_t progress_value(const struct worker *w)
{
	return g_cfg.mode == MODE_IDLE ? w->st.established : w->seen;
}

static void scan_timeouts(struct worker *w)
{
	uint64_t now = now_ns();
	uint64_t limit = g_cfg.mode == MODE_IDLE ? IDLE_TIMEOUT_NS :
						    OP_TIMEOUT_NS;
	uint32_t i;

	for (i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		bool waiting;

		switch (c->state) {
		case C_CONNECTING:
			waiting = true;
			break;
		case C_BUSY:	/* a stream only waits when ahead of its echo */
			waiting = g_cfg.mode != MODE_STREAM || c->tx > c->rx;
			break;
		default:	/* held, draining (own deadline), off */
			waiting = false;
			break;
		}
		if (waiting && now > c->t0 && now - c->t0 > limit)
			conn_fail(w, c, ERR_TIMEOUT, ETIMEDOUT);
	}
	w->last_scan = now;
	atomic_store_explicit(&w->progress, progress_value(w),
			      memory_order_relaxed);
}

static void start_pending(struct worker *w)
{
	uint32_t n = w->nrestart, i, started = 0;

	/* A restart that fails at once is pushed back at an index <= i,
	 * which this loop has already read: safe to reuse the array. */
	w->nrestart = 0;
	for (i = 0; i < n; i++)
		conn_start(w, &w->conns[w->restart[i]]);
	while (w->next_start < w->nconns && w->inflight < w->inflight_max &&
	       started++ < START_BATCH)
		conn_start(w, &w->conns[w->next_start++]);
}

static bool start_ready(const struct worker *w)
{
	return w->nrestart > 0 || (w->next_start < w->nconns &&
				   w->inflight < w->inflight_max);
}

/* One epoll round; never waits past deadline nor past the next scan. */
static int one_round(struct worker *w, uint64_t deadline, bool starting)
{
	struct epoll_event evs[MAX_EVENTS];
	uint64_t now, wait_ns;
	int n, i, timeout_ms = 0;

	if (starting)
		start_pending(w);
	now = now_ns();
	if (!(starting && start_ready(w)) && now < deadline) {
		wait_ns = deadline - now;
		if (wait_ns > SCAN_NS)
			wait_ns = SCAN_NS;
		timeout_ms = (int)((wait_ns + NS_PER_MS - 1) / NS_PER_MS);
	}
	n = epoll_wait(w->epfd, evs, MAX_EVENTS, timeout_ms);
	if (n < 0 && errno != EINTR) {
		logmsg("thread %u: epoll_wait: %s", w->idx, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++)
		dispatch(w, &evs[i]);
	if (now_ns() - w->last_scan >= SCAN_NS)
		scan_timeouts(w);
	return 0;
}

static void close_all(struct worker *w)
{
	uint32_t i;

	for (i = 0; i < w->nconns; i++)
		conn_close(w, &w->conns[i]);
}

/* Stream end: stop sending, wait (bounded) until every byte came back. */
static int stream_drain(struct worker *w)
{
	uint64_t deadline = g_end + DRAIN_NS;
	uint32_t i;

	for (i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		if (c->state == C_BUSY && c->tx != c->rx) {
			c->state = C_DRAIN;
			w->ndrain++;
		} else {
			conn_close(w, c);
		}
	}
	while (w->ndrain > 0 && now_ns() < deadline) {
		if (one_round(w, deadline, false) != 0)
			return -1;
	}
	for (i = 0; i < w->nconns; i++) {
		if (w->conns[i].state == C_DRAIN)
			conn_fail(w, &w->conns[i], ERR_TIMEOUT, ETIMEDOUT);
	}
	return 0;
}

/* rate, echo, stream: run until the end of the measured window.  Each
 * round waits at most SCAN_NS, so the loop is bounded by time. */
static int run_loop(struct worker *w)
{
	w->running = true;
	while (now_ns() < g_end) {
		if (one_round(w, g_end, true) != 0)
			return -1;
	}
	w->running = false;
	if (g_cfg.mode == MODE_STREAM && stream_drain(w) != 0)
		return -1;
	close_all(w);
	return 0;
}

/* Idle: whatever has not been verified when the phase ends has failed. */
static void idle_settle(struct worker *w)
{
	uint32_t i;

	for (i = 0; i < w->next_start; i++) {
		struct conn *c = &w->conns[i];

		if (c->state == C_CONNECTING || c->state == C_BUSY)
			conn_fail(w, c, ERR_TIMEOUT, ETIMEDOUT);
	}
	for (; w->next_start < w->nconns; w->next_start++) {
		w->st.failed++;
		w->st.err[ERR_TIMEOUT]++;
		w->settled++;
	}
}

static int idle_loop(struct worker *w)
{
	uint64_t deadline = g_begin + ESTABLISH_NS;
	uint64_t hard = deadline + 2 * REPORT_SLACK_NS +
			to_ns(g_cfg.duration_s);
	int rc = 0;

	w->running = false;	/* idle never retries a connection */
	while (w->settled < w->nconns && now_ns() < deadline &&
	       !atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		rc = one_round(w, deadline, true);
		if (rc != 0)
			break;
	}
	idle_settle(w);
	w->st.t_settled = now_ns();
	w->phase1 = w->st;
	atomic_store_explicit(&w->progress, w->st.established,
			      memory_order_relaxed);
	atomic_fetch_add_explicit(&g_ready, 1, memory_order_release);
	/* Hold: keep watching so a connection the peer drops is counted. */
	while (rc == 0 && !atomic_load_explicit(&g_stop, memory_order_acquire)
	       && now_ns() < hard)
		rc = one_round(w, now_ns() + SCAN_NS, false);
	close_all(w);
	return rc;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int rc;

	w->last_scan = now_ns();
	rc = g_cfg.mode == MODE_IDLE ? idle_loop(w) : run_loop(w);
	if (rc != 0) {
		w->fatal = true;
		close_all(w);
	}
	atomic_store_explicit(&w->progress, progress_value(w),
			      memory_order_relaxed);
	atomic_fetch_add_explicit(&g_finished, 1, memory_order_release);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Worker setup                                                        */

static void worker_free(struct worker *w)
{
	if (w->epfd >= 0 && close(w->epfd) != 0)
		logmsg("close epoll: %s", strerror(errno));
	w->epfd = -1;
	free(w->conns);
	free(w->restart);
	free(w->rxbuf);
	w->conns = NULL;
	w->restart = NULL;
	w->rxbuf = NULL;
}

static int worker_init(struct worker *w, unsigned idx, uint32_t first_id,
		       uint32_t count, uint32_t inflight_max)
{
	uint32_t i;

	memset(w, 0, sizeof *w);
	atomic_init(&w->progress, 0);
	w->idx = idx;
	w->epfd = -1;
	w->nconns = count;
	w->inflight_max = inflight_max;
	w->src_next = idx;
	w->conns = calloc(count, sizeof *w->conns);
	w->restart = calloc(count, sizeof *w->restart);
	w->rxbuf = malloc(RXBUF_SIZE);
	if (w->conns == NULL || w->restart == NULL || w->rxbuf == NULL) {
		logmsg("out of memory for %" PRIu32 " connections", count);
		return -1;
	}
	for (i = 0; i < count; i++) {
		w->conns[i].fd = -1;
		w->conns[i].id = first_id + i;
	}
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		logmsg("epoll_create1: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Split count clients over n workers (ids first_id..), then start them. */
static int workers_start(struct worker *ws, uint32_t n, uint32_t first_id,
			 uint32_t count)
{
	uint32_t inflight = INFLIGHT_PER_PROC / n, t, id = first_id;
	int err;

	if (inflight == 0)
		inflight = 1;
	for (t = 0; t < n; t++)
		ws[t].epfd = -1;
	for (t = 0; t < n; t++) {
		uint32_t share = count / n + (t < count % n ? 1 : 0);

		if (worker_init(&ws[t], t, id, share, inflight) != 0)
			return -1;
		id += share;
	}
	for (t = 0; t < n; t++) {
		err = pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]);
		if (err != 0) {
			logmsg("pthread_create: %s", strerror(err));
			return -1;
		}
		ws[t].started = true;
	}
	return 0;
}

/* Workers end on their own (their loops are bounded by time). */
static int workers_join(struct worker *ws, uint32_t n)
{
	int rc = 0, err;
	uint32_t t;

	for (t = 0; t < n; t++) {
		if (!ws[t].started)
			continue;
		err = pthread_join(ws[t].tid, NULL);
		if (err != 0) {
			logmsg("pthread_join: %s", strerror(err));
			rc = -1;
		}
		ws[t].started = false;
		if (ws[t].fatal)
			rc = -1;
	}
	return rc;
}

static void workers_free(struct worker *ws, uint32_t n)
{
	uint32_t t;

	if (ws == NULL)
		return;
	for (t = 0; t < n; t++)
		worker_free(&ws[t]);
	free(ws);
}

static uint64_t progress_sum(struct worker *ws, uint32_t n)
{
	uint64_t sum = 0;
	uint32_t t;

	for (t = 0; t < n; t++)
		sum += atomic_load_explicit(&ws[t].progress,
					    memory_order_relaxed);
	return sum;
}

static void progress_line(struct worker *ws, uint32_t n, uint64_t now,
			  uint64_t *last)
{
	uint64_t cur = progress_sum(ws, n);
	uint64_t mid = now - NS_PER_S / 2;	/* the second just gone */
	const char *phase = mid < g_meas ? "warm-up" :
			    mid < g_end ? "measuring" : "draining";

	switch (g_cfg.mode) {
	case MODE_IDLE:
		logmsg("[%6.1fs] established %" PRIu64, secs(now - g_begin),
		       cur);
		break;
	case MODE_STREAM:
		logmsg("[%6.1fs] %s: %.1f MB/s", secs(now - g_begin), phase,
		       (double)(cur - *last) / 1e6);
		break;
	default:
		logmsg("[%6.1fs] %s: %" PRIu64 "/s", secs(now - g_begin),
		       phase, cur - *last);
		break;
	}
	*last = cur;
}

/* Print progress once a second until the workers are done (or until). */
static void progress_wait(struct worker *ws, uint32_t n, uint64_t until,
			  atomic_uint *counter)
{
	uint64_t now = now_ns(), next = now + NS_PER_S, last = 0;
	uint64_t steps = (until > now ? until - now : 0) / (20 * NS_PER_MS) + 10;

	while (steps-- > 0) {
		now = now_ns();
		if (atomic_load_explicit(counter, memory_order_acquire) >= n ||
		    now >= until)
			return;
		if (now >= next) {
			progress_line(ws, n, now, &last);
			next += NS_PER_S;
		}
		sleep_ns(20 * NS_PER_MS);
	}
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

struct line {
	char buf[1024];
	size_t len;
};

static void line_add(struct line *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void line_add(struct line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->len >= sizeof l->buf)
		return;
	va_start(ap, fmt);
	n = vsnprintf(l->buf + l->len, sizeof l->buf - l->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		l->len += (size_t)n;
}

struct idle_times {
	double establish_s, held_s;
};

static uint64_t mode_fields(struct line *l, const struct stats *st,
			    const struct idle_times *it)
{
	double dur = g_cfg.duration_s;

	switch (g_cfg.mode) {
	case MODE_RATE:
		line_add(l, " conns=%" PRIu64 " conns_per_s=%.1f", st->done,
			 (double)st->done / dur);
		break;
	case MODE_ECHO:
		line_add(l, " msg_bytes=%zu msgs=%" PRIu64 " msgs_per_s=%.1f",
			 g_cfg.msg_bytes, st->done, (double)st->done / dur);
		break;
	case MODE_STREAM:
		line_add(l, " chunk_bytes=%zu bytes_sent=%" PRIu64
			 " bytes_recv=%" PRIu64 " mb_per_s=%.1f"
			 " lost_bytes=%" PRIu64, g_cfg.msg_bytes,
			 st->win_sent, st->win_recv,
			 (double)(st->win_sent + st->win_recv) / 1e6 / dur,
			 st->tot_sent - st->tot_recv);
		return st->opened;
	default:
		line_add(l, " procs=%" PRIu32 " established=%" PRIu64
			 " failed=%" PRIu64 " dropped=%" PRIu64
			 " establish_s=%.3f held_s=%.3f", g_cfg.procs,
			 st->established, st->failed, st->dropped,
			 it->establish_s, it->held_s);
		return st->established + st->failed;
	}
	line_add(l, " p50_us=%" PRIu64 " p99_us=%" PRIu64,
		 hist_percentile(st->hist, 0.50),
		 hist_percentile(st->hist, 0.99));
	return st->done + stats_errors(st);
}

static int write_outfile(const char *text)
{
	FILE *f = fopen(g_cfg.outfile, "w");

	if (f == NULL) {
		logmsg("-o %s: %s", g_cfg.outfile, strerror(errno));
		return -1;
	}
	if (fputs(text, f) == EOF || fclose(f) != 0) {
		logmsg("-o %s: write failed", g_cfg.outfile);
		return -1;
	}
	return 0;
}

/* Print the one RESULT line; returns the exit status. */
static int report(const struct stats *st, const struct idle_times *it)
{
	struct line l = { .len = 0 };
	uint64_t errors = stats_errors(st), attempts;
	unsigned k;
	int rc;

	line_add(&l, "RESULT mode=%s target=%s clients=%" PRIu32
		 " threads=%" PRIu32 " sources=%" PRIu32 " duration_s=%.3f"
		 " errors=%" PRIu64, mode_names[g_cfg.mode], g_cfg.target_str,
		 g_cfg.clients, g_cfg.threads, g_cfg.sources,
		 g_cfg.duration_s, errors);
	attempts = mode_fields(&l, st, it);
	for (k = 0; k < ERR_KINDS; k++)
		line_add(&l, " err_%s=%" PRIu64, err_names[k], st->err[k]);
	line_add(&l, "\n");
	if (fputs(l.buf, stdout) == EOF || fflush(stdout) != 0)
		return 1;
	if (g_cfg.outfile != NULL && write_outfile(l.buf) != 0)
		return 1;
	/* Nothing attempted is as bad as everything failing. */
	rc = attempts == 0 || errors * 100 > attempts ? 2 : 0;
	logmsg("done: %" PRIu64 " errors in %" PRIu64 " attempts%s", errors,
	       attempts, rc == 2 ? " (more than 1%: exit 2)" : "");
	return rc;
}

/* ------------------------------------------------------------------ */
/* Timed modes: rate, echo, stream                                     */

static int run_timed(void)
{
	uint32_t n = g_cfg.threads, t;
	uint64_t until;
	struct worker *ws;
	struct stats *total;
	bool started;
	int rc = 1;

	ws = calloc(n, sizeof *ws);
	total = calloc(1, sizeof *total);
	if (ws == NULL || total == NULL) {
		logmsg("out of memory");
		goto out;
	}
	g_begin = now_ns();
	g_meas = g_begin + to_ns(g_cfg.warmup_s);
	g_end = g_meas + to_ns(g_cfg.duration_s);
	logmsg("%s: %" PRIu32 " clients on %" PRIu32 " threads against %s,"
	       " warm-up %.1f s, measuring %.1f s", mode_names[g_cfg.mode],
	       g_cfg.clients, n, g_cfg.target_str, g_cfg.warmup_s,
	       g_cfg.duration_s);
	started = workers_start(ws, n, 0, g_cfg.clients) == 0;
	until = g_end + (g_cfg.mode == MODE_STREAM ? DRAIN_NS : 0);
	if (started)
		progress_wait(ws, n, until + JOIN_SLACK_NS, &g_finished);
	/* Also after a failed start: threads already running end by g_end. */
	if (workers_join(ws, n) != 0 || !started)
		goto out;
	for (t = 0; t < n; t++)
		stats_merge(total, &ws[t].st);
	rc = report(total, NULL);
out:
	workers_free(ws, n);
	free(total);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Idle mode                                                           */

enum { MSG_READY = 1, MSG_FINAL = 2 };

struct idle_msg {
	uint32_t kind;
	uint64_t held_ns;
	struct stats st;
};

static int send_msg(int fd, uint32_t kind, const struct stats *st,
		    uint64_t held_ns)
{
	struct idle_msg *m = calloc(1, sizeof *m);
	ssize_t n;

	if (m == NULL)
		return -1;
	m->kind = kind;
	m->held_ns = held_ns;
	m->st = *st;
	/* SOCK_SEQPACKET: one record, delivered whole or not at all. */
	n = send(fd, m, sizeof *m, MSG_NOSIGNAL);
	free(m);
	if (n != (ssize_t)sizeof *m) {
		logmsg("report to parent: %s", n < 0 ? strerror(errno) : "short");
		return -1;
	}
	return 0;
}

/* Child: block (bounded) until the parent says the hold begins. */
static bool wait_go(int fd, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char go;
	uint64_t now;
	int r, i;

	for (i = 0; i < 1000; i++) {
		now = now_ns();
		if (now >= deadline)
			return false;
		r = poll(&p, 1, (int)((deadline - now) / NS_PER_MS) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		return recv(fd, &go, 1, 0) == 1;
	}
	return false;
}

static void hold_for(double seconds)
{
	uint64_t end = now_ns() + to_ns(seconds), now;
	uint64_t steps = to_ns(seconds) / (50 * NS_PER_MS) + 10;

	while (steps-- > 0 && (now = now_ns()) < end)
		sleep_ns(end - now > 50 * NS_PER_MS ? 50 * NS_PER_MS :
						      end - now);
}

/* One process's share of the idle connections.  report_fd < 0: we are
 * the whole run and print HOLDING ourselves; otherwise we are a child of
 * idle_parent() and report through report_fd. */
static int idle_share(uint32_t first_id, uint32_t count, int report_fd,
		      struct stats *out, uint64_t *held_ns)
{
	uint32_t n = g_cfg.threads < count ? g_cfg.threads : count, t;
	struct stats *p1 = calloc(1, sizeof *p1);
	struct worker *ws = calloc(n, sizeof *ws);
	uint64_t hold_start;
	bool go = true, started = false;
	int rc = 1;

	*held_ns = 0;
	if (ws == NULL || p1 == NULL) {
		logmsg("out of memory");
		goto out;
	}
	started = workers_start(ws, n, first_id, count) == 0;
	if (!started)
		goto stop;
	progress_wait(ws, n, g_begin + ESTABLISH_NS + REPORT_SLACK_NS,
		      &g_ready);
	for (t = 0; t < n; t++)
		stats_merge(p1, &ws[t].phase1);
	if (report_fd < 0) {
		printf("HOLDING connections=%" PRIu64 "\n", p1->established);
		if (fflush(stdout) != 0)
			goto stop;
	} else {
		if (send_msg(report_fd, MSG_READY, p1, 0) != 0)
			goto stop;
		go = wait_go(report_fd, g_begin + ESTABLISH_NS +
				     2 * REPORT_SLACK_NS);
	}
	hold_start = now_ns();
	if (go)
		hold_for(g_cfg.duration_s);
	*held_ns = now_ns() - hold_start;
stop:
	atomic_store_explicit(&g_stop, true, memory_order_release);
	if (workers_join(ws, n) != 0 || !started || !go)
		goto out;
	for (t = 0; t < n; t++)
		stats_merge(out, &ws[t].st);
	rc = 0;
out:
	workers_free(ws, n);
	free(p1);
	return rc;
}

static int idle_single(void)
{
	struct idle_times it;
	struct stats *st = calloc(1, sizeof *st);
	uint64_t held;
	int rc;

	if (st == NULL)
		return 1;
	g_begin = now_ns();
	rc = idle_share(0, g_cfg.clients, -1, st, &held);
	if (rc == 0) {
		it.establish_s = secs(st->t_settled - g_begin);
		it.held_s = secs(held);
		rc = report(st, &it);
	}
	free(st);
	return rc;
}

static uint32_t proc_share(uint32_t i)
{
	return g_cfg.clients / g_cfg.procs +
	       (i < g_cfg.clients % g_cfg.procs ? 1 : 0);
}

static void idle_child(uint32_t i, int fd) __attribute__((noreturn));

static void idle_child(uint32_t i, int fd)
{
	struct stats *st = calloc(1, sizeof *st);
	uint32_t first = 0, j;
	uint64_t held;
	int rc = 1;

	snprintf(g_tag, sizeof g_tag, "[proc %" PRIu32 "] ", i);
	for (j = 0; j < i; j++)
		first += proc_share(j);
	if (st != NULL && idle_share(first, proc_share(i), fd, st, &held) == 0)
		rc = send_msg(fd, MSG_FINAL, st, held) == 0 ? 0 : 1;
	free(st);
	if (close(fd) != 0)
		rc = 1;
	free(g_pat);
	exit(rc);
}

struct children {
	uint32_t n;
	pid_t pid[MAX_PROCS];
	int fd[MAX_PROCS];
	bool got[MAX_PROCS];	/* reported in the current collect() */
};

/* Gather one `kind` record from every child (bounded by deadline). */
static uint32_t collect(struct children *ch, uint32_t kind,
			uint64_t deadline, struct stats *sum,
			uint64_t *held_min)
{
	struct pollfd p[MAX_PROCS];
	struct idle_msg *m = malloc(sizeof *m);
	uint32_t i, missing = 0;
	uint64_t now;
	int r;

	if (m == NULL)
		return ch->n;
	for (i = 0; i < ch->n; i++)
		ch->got[i] = false;
	for (;;) {	/* ends by deadline: every poll waits <= 1 s */
		missing = 0;
		for (i = 0; i < ch->n; i++) {
			p[i].fd = ch->got[i] || ch->fd[i] < 0 ? -1 : ch->fd[i];
			p[i].events = POLLIN;
			missing += p[i].fd >= 0;
		}
		now = now_ns();
		if (missing == 0 || now >= deadline)
			break;
		r = poll(p, ch->n, 1000);
		if (r < 0 && errno != EINTR)
			break;
		for (i = 0; r > 0 && i < ch->n; i++) {
			if (p[i].fd < 0 || p[i].revents == 0)
				continue;
			if (recv(ch->fd[i], m, sizeof *m, 0) !=
				    (ssize_t)sizeof *m || m->kind != kind) {
				logmsg("proc %" PRIu32 " died or sent garbage",
				       i);
				if (close(ch->fd[i]) != 0)
					logmsg("close: %s", strerror(errno));
				ch->fd[i] = -1;
				continue;
			}
			ch->got[i] = true;
			stats_merge(sum, &m->st);
			if (*held_min == 0 || m->held_ns < *held_min)
				*held_min = m->held_ns;
		}
	}
	free(m);
	return missing;
}

/* Reap our children; any still running after the grace period is
 * killed by its pid (we started every one of them). */
static void reap(struct children *ch)
{
	uint64_t deadline = now_ns() + 10 * NS_PER_S;
	bool killed = false;
	uint32_t i;
	int status;

	for (i = 0; i < ch->n; i++) {
		while (ch->pid[i] > 0) {
			pid_t r = waitpid(ch->pid[i], &status, WNOHANG);

			if (r == ch->pid[i] || (r < 0 && errno != EINTR)) {
				ch->pid[i] = 0;
			} else if (now_ns() < deadline) {
				sleep_ns(10 * NS_PER_MS);
			} else if (!killed) {
				if (kill(ch->pid[i], SIGKILL) != 0)
					logmsg("kill: %s", strerror(errno));
				killed = true;
				deadline = now_ns() + 10 * NS_PER_S;
			} else {	/* unkillable (D state): give up on it */
				logmsg("proc %" PRIu32 " (pid %d) will not die",
				       i, (int)ch->pid[i]);
				ch->pid[i] = 0;
			}
		}
		killed = false;
	}
}

static int spawn(struct children *ch)
{
	pid_t parent = getpid();
	int sv[2];
	uint32_t i, j;

	for (i = 0; i < g_cfg.procs; i++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
			       sv) != 0) {
			logmsg("socketpair: %s", strerror(errno));
			return -1;
		}
		if (fflush(stdout) != 0 || fflush(stderr) != 0)
			return -1;
		ch->pid[i] = fork();
		if (ch->pid[i] < 0) {
			logmsg("fork: %s", strerror(errno));
			return -1;
		}
		if (ch->pid[i] == 0) {
			for (j = 0; j < i; j++)
				(void)close(ch->fd[j]);
			(void)close(sv[0]);
			/* Die with the parent so no connection outlives it. */
			if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 ||
			    getppid() != parent)
				exit(1);
			idle_child(i, sv[1]);
		}
		if (close(sv[1]) != 0)
			logmsg("close: %s", strerror(errno));
		ch->fd[i] = sv[0];
		ch->n = i + 1;
	}
	return 0;
}

static int idle_parent(void)
{
	struct children ch;
	struct stats *p1 = calloc(1, sizeof *p1);
	struct stats *st = calloc(1, sizeof *st);
	struct idle_times it = { 0, 0 };
	uint64_t held = 0, unused = 0;
	uint32_t i, missing;
	int rc = 1;

	memset(&ch, 0, sizeof ch);
	if (p1 == NULL || st == NULL)
		goto out;
	g_begin = now_ns();	/* inherited: children share the timeline */
	logmsg("idle: %" PRIu32 " connections in %" PRIu32 " processes",
	       g_cfg.clients, g_cfg.procs);
	if (spawn(&ch) != 0)
		goto reap;
	missing = collect(&ch, MSG_READY, g_begin + ESTABLISH_NS +
			  REPORT_SLACK_NS, p1, &unused);
	it.establish_s = secs(p1->t_settled - g_begin);
	printf("HOLDING connections=%" PRIu64 "\n", p1->established);
	if (fflush(stdout) != 0)
		goto reap;
	for (i = 0; i < ch.n; i++) {
		if (ch.got[i] && send(ch.fd[i], "g", 1, MSG_NOSIGNAL) != 1)
			logmsg("go to proc %" PRIu32 ": %s", i, strerror(errno));
	}
	missing += collect(&ch, MSG_FINAL, now_ns() + to_ns(g_cfg.duration_s) +
			   REPORT_SLACK_NS, st, &held);
	it.held_s = secs(held);
	if (missing > 0)
		logmsg("%" PRIu32 " process(es) did not report", missing);
	rc = report(st, &it);
	if (missing > 0)
		rc = 1;
reap:
	for (i = 0; i < ch.n; i++) {
		if (ch.fd[i] >= 0 && close(ch.fd[i]) != 0)
			logmsg("close: %s", strerror(errno));
	}
	reap(&ch);
out:
	free(p1);
	free(st);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */

static void usage(FILE *f)
{
	fputs("usage: esockd-bench MODE -t HOST:PORT [options]\n"
	      "MODE: rate | echo | stream | idle\n"
	      "  -t HOST:PORT  target, IPv4 in 127.0.0.0/8 (required)\n"
	      "  -c N          clients (default: rate 64, echo 1000, stream 8,"
	      " idle 1000)\n"
	      "  -d SECONDS    measured duration; idle: hold time (default 5)\n"
	      "  -w SECONDS    warm-up before measuring (default 1; not idle)\n"
	      "  -m BYTES      echo message size (default 1024); stream chunk"
	      " size (default 65536)\n"
	      "  -T THREADS    threads, each with its own epoll (default 2)\n"
	      "  -S N          spread sources over 127.0.0.1..127.0.0.N"
	      " (default 1)\n"
	      "  -P PROCS      idle: processes sharing the connections"
	      " (default 1)\n"
	      "  -L            close with RST (SO_LINGER 0) instead of FIN\n"
	      "  -o FILE       also write the RESULT line to FILE\n"
	      "stdout: one 'RESULT key=value ...' line (idle: first "
	      "'HOLDING connections=N').\n"
	      "exit: 0 done, 1 usage/setup error, 2 more than 1% of attempts"
	      " failed\n", f);
}

static int parse_u32(const char *what, const char *s, uint32_t lo,
		     uint32_t hi, uint32_t *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || v < lo ||
	    v > hi) {
		logmsg("%s %s: expected an integer from %" PRIu32 " to %" PRIu32,
		       what, s, lo, hi);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

static int parse_secs(const char *what, const char *s, double lo, double hi,
		      double *out)
{
	double v;
	char *end;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !isfinite(v) ||
	    v < lo || v > hi) {
		logmsg("%s %s: expected seconds from %g to %g", what, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse_target(const char *s, struct config *cfg)
{
	char host[INET_ADDRSTRLEN];

	switch (bench_parse_loopback(s, &cfg->target)) {
	case 0:
		break;
	case BENCH_ADDR_REMOTE:
		logmsg("-t %s: only 127.0.0.0/8 targets are allowed", s);
		return -1;
	default:
		logmsg("-t %s: expected IPV4:PORT, e.g. 127.0.0.1:5000", s);
		return -1;
	}
	inet_ntop(AF_INET, &cfg->target.sin_addr, host, sizeof host);
	snprintf(cfg->target_str, sizeof cfg->target_str, "%s:%u", host,
		 (unsigned)ntohs(cfg->target.sin_port));
	return 0;
}

static int parse_mode(const char *s, enum mode *out)
{
	int m;

	for (m = 0; m < MODE_COUNT; m++) {
		if (strcmp(s, mode_names[m]) == 0) {
			*out = (enum mode)m;
			return 0;
		}
	}
	return -1;
}

struct seen {
	bool t, c, m, w, P;
};

static int parse_opt(int opt, struct config *cfg, struct seen *seen)
{
	uint32_t v;

	switch (opt) {
	case 't':
		seen->t = true;
		return parse_target(optarg, cfg);
	case 'c':
		seen->c = true;
		return parse_u32("-c", optarg, 1, MAX_CLIENTS, &cfg->clients);
	case 'd':
		return parse_secs("-d", optarg, 0, 86400, &cfg->duration_s);
	case 'w':
		seen->w = true;
		return parse_secs("-w", optarg, 0, 3600, &cfg->warmup_s);
	case 'm':
		seen->m = true;
		if (parse_u32("-m", optarg, 1, MAX_MSG, &v) != 0)
			return -1;
		cfg->msg_bytes = v;
		return 0;
	case 'T':
		return parse_u32("-T", optarg, 1, MAX_THREADS, &cfg->threads);
	case 'S':
		return parse_u32("-S", optarg, 1, MAX_SOURCES, &cfg->sources);
	case 'P':
		seen->P = true;
		return parse_u32("-P", optarg, 1, MAX_PROCS, &cfg->procs);
	case 'L':
		cfg->linger_rst = true;
		return 0;
	case 'o':
		cfg->outfile = optarg;
		return 0;
	default:
		usage(stderr);
		return -1;
	}
}

static int check_config(struct config *cfg, const struct seen *seen)
{
	static const uint32_t def_clients[MODE_COUNT] = { 64, 1000, 8, 1000 };

	if (!seen->t) {
		logmsg("-t HOST:PORT is required");
		return -1;
	}
	if (!seen->c)
		cfg->clients = def_clients[cfg->mode];
	if (cfg->mode != MODE_IDLE && cfg->duration_s < 0.001) {
		logmsg("-d must be at least 0.001 s in %s mode",
		       mode_names[cfg->mode]);
		return -1;
	}
	if (cfg->mode != MODE_IDLE && seen->P) {
		logmsg("-P is for idle mode only");
		return -1;
	}
	if (cfg->mode == MODE_IDLE && cfg->procs > cfg->clients) {
		logmsg("-P %" PRIu32 " is more than -c %" PRIu32, cfg->procs,
		       cfg->clients);
		return -1;
	}
	if (cfg->mode == MODE_IDLE && seen->w)
		logmsg("note: -w does not apply to idle mode; ignored");
	if ((cfg->mode == MODE_RATE || cfg->mode == MODE_IDLE) && seen->m)
		logmsg("note: %s mode always sends %d bytes; -m ignored",
		       mode_names[cfg->mode],
		       cfg->mode == MODE_RATE ? RATE_MSG : IDLE_MSG);
	if (cfg->mode == MODE_RATE)
		cfg->msg_bytes = RATE_MSG;
	else if (cfg->mode == MODE_IDLE)
		cfg->msg_bytes = IDLE_MSG;
	else if (!seen->m)
		cfg->msg_bytes = cfg->mode == MODE_ECHO ? 1024 : 65536;
	/* A worker without clients would be pointless. */
	if (cfg->threads > cfg->clients / cfg->procs)
		cfg->threads = cfg->clients / cfg->procs;
	return 0;
}

/* Returns 0 to run, 1 after -h, -1 on a usage error. */
static int parse_args(int argc, char **argv, struct config *cfg)
{
	struct seen seen = { false, false, false, false, false };
	int opt;

	memset(cfg, 0, sizeof *cfg);
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 ||
			  strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 1;
	}
	if (argc < 2 || parse_mode(argv[1], &cfg->mode) != 0) {
		usage(stderr);
		return -1;
	}
	cfg->threads = 2;
	cfg->sources = 1;
	cfg->procs = 1;
	cfg->duration_s = 5;
	cfg->warmup_s = 1;
	optind = 2;
	while ((opt = getopt(argc, argv, "t:c:d:w:m:T:S:P:Lo:h")) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 1;
		}
		if (parse_opt(opt, cfg, &seen) != 0)
			return -1;
	}
	if (optind != argc) {
		logmsg("unexpected argument '%s'", argv[optind]);
		return -1;
	}
	if (cfg->mode == MODE_IDLE)
		cfg->warmup_s = 0;
	return check_config(cfg, &seen);
}

/* Raise the soft fd limit to the hard one, then check one process can
 * hold its share of the connections. */
static int fd_budget(void)
{
	uint32_t per_proc = (g_cfg.clients + g_cfg.procs - 1) / g_cfg.procs;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		logmsg("getrlimit: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			logmsg("setrlimit: %s", strerror(errno));
			return -1;
		}
	}
	if ((rlim_t)per_proc + FD_SLACK > rl.rlim_cur) {
		logmsg("%" PRIu32 " connections per process exceed the fd limit"
		       " (%llu)%s", per_proc, (unsigned long long)rl.rlim_cur,
		       g_cfg.mode == MODE_IDLE ? "; use more -P" :
						 "; lower -c");
		return -1;
	}
	/* About 28k ephemeral ports per source address and target. */
	if (g_cfg.mode == MODE_IDLE && g_cfg.clients > 28000u * g_cfg.sources)
		logmsg("warning: %" PRIu32 " connections from %" PRIu32
		       " source address(es) may run out of ports; use -S",
		       g_cfg.clients, g_cfg.sources);
	return 0;
}

int main(int argc, char **argv)
{
	int rc;

	rc = parse_args(argc, argv, &g_cfg);
	if (rc != 0)
		return rc > 0 ? 0 : 1;
	/* MSG_NOSIGNAL covers our sends; this covers anything else. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		logmsg("signal: %s", strerror(errno));
		return 1;
	}
	if (fd_budget() != 0 || pattern_init() != 0)
		return 1;
	if (g_cfg.mode != MODE_IDLE)
		rc = run_timed();
	else if (g_cfg.procs > 1)
		rc = idle_parent();
	else
		rc = idle_single();
	free(g_pat);
	return rc;
}
