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

/* No EOF flag: we stop reading while anything is pending, so the EOF is
 * only ever read with nothing left to write, and we finish right away. */
struct econn {
	int fd;
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

static void conn_free(struct ethread *t, struct econn *c)
{
	/* close() also takes the fd out of the epoll set (never dup()ed). */
	if (close(c->fd) != 0 && may_complain(t))
		logmsg("close: %s", strerror(errno));
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

/* Re-poll the socket: an edge we stopped short of fires again.  Watches
 * for room to write from the first echo held on. */
static int conn_rearm(struct ethread *t, struct econn *c)
{
	struct epoll_event ev;

	if (c->pend_len > 0)
		c->watch_out = true;
	memset(&ev, 0, sizeof ev);
	ev.events = CONN_EVENTS | (c->watch_out ? EPOLLOUT : 0);
	ev.data.ptr = c;
	return epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev);
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

static void conn_new(struct ethread *t, int fd)
{
	static const int one = 1;
	struct epoll_event ev;
	struct econn *c;

	/* A small echo must not wait for the ACK of the previous one. */
	if (!g_addr.is_unix &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		goto fail;
	c = calloc(1, sizeof *c);
	if (c == NULL)
		goto fail;
	c->fd = fd;
	memset(&ev, 0, sizeof ev);
	ev.events = CONN_EVENTS;
	ev.data.ptr = c;
	/* ADD polls the socket: data that is already there raises the edge. */
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
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
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
}

static int listener_add(struct ethread *t)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof ev);
	/* Level-triggered listener; on the shared Unix one, EXCLUSIVE wakes
	 * one thread per connection instead of all of them. */
	ev.events = EPOLLIN | (g_addr.is_unix ? EPOLLEXCLUSIVE : 0);
	ev.data.ptr = NULL;
	return epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->lfd, &ev);
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

static void accept_batch(struct ethread *t)
{
	int i, fd;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			if (atomic_fetch_add_explicit(&g_conns, 1,
					memory_order_relaxed) >= g_conn_cap)
				shed(t, fd);
			else
				conn_new(t, fd);
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
	      "  ADDR: unix:/path/to.sock | tcp:127.0.0.1:PORT\n"
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
	while ((opt = getopt(argc, argv, "l:T:h")) != -1) {
		switch (opt) {
		case 'l':
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
	if (g_addr.is_unix) {
		shared_lfd = listen_unix();
		if (shared_lfd < 0) {
			logmsg("listen on %s: %s", g_addr.text, strerror(errno));
			goto fail;
		}
	}
	if (start_threads(ts, n, shared_lfd) != 0)
		goto fail;
	fprintf(stderr, "listening on %s\n", g_addr.text);
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
