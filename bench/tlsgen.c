/*
 * bench/tlsgen.c: esockd-bench-tls, the TLS load generator of the esockd
 * benchmarks.
 *
 * Owns the TLS modes of bench/run.sh: full or resumed handshakes (hs),
 * bulk transfer through TLS (stream), idle TLS connections (idle) and a
 * one-connection check (check).  Non-blocking OpenSSL over one
 * level-triggered epoll loop per thread; the threads share only the
 * SSL_CTX and a few atomics.  It prints one machine-readable RESULT line
 * like esockd-bench, so run.sh and report.py treat both alike.  It only
 * ever connects to 127.0.0.0/8.
 *
 * A separate program rather than a -s flag of loadgen.c: loadgen.c is
 * libc and pthreads only and its edge-triggered I/O is built around
 * plain read/write; TLS needs a different state machine (a handshake, and
 * reads that want writes and back), and this keeps libssl out of it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common.h"

#define NS_PER_S	1000000000ull
#define OP_TIMEOUT_NS	(5 * NS_PER_S)	/* one connection's handshake+echo */
#define ESTABLISH_NS	(120 * NS_PER_S) /* idle: the whole opening phase */
#define SMALL_MSG	64		/* hs, idle, check: the one echo */
#define CHUNK		65536		/* stream: bytes per SSL_write */
#define MAX_AHEAD	(1u << 20)	/* stream: sent but not yet echoed */
#define INFLIGHT	256		/* idle: handshakes in flight a thread */
#define MAX_EVENTS	256
#define MAX_THREADS	64u
#define HIST_BUCKETS	50000		/* latency, 10 us each, up to 500 ms */

enum mode { M_HS, M_STREAM, M_IDLE, M_CHECK };
static const char *const mode_names[] = { "hs", "stream", "idle", "check" };

enum err_kind { E_CONNECT, E_HANDSHAKE, E_RESET, E_EOF, E_TIMEOUT, E_KINDS };
static const char *const err_names[] = {
	"connect", "handshake", "reset", "eof", "timeout"
};

enum cstate { C_OFF, C_CONNECTING, C_HANDSHAKE, C_SEND, C_RECV, C_STREAM,
	      C_HELD };

struct conn {
	int fd;
	SSL *ssl;
	SSL_SESSION *sess;	/* -r: offered on the next connection */
	uint8_t state;
	uint32_t events;	/* what epoll waits for now */
	uint64_t t0;		/* start of this connection (ns) */
	uint64_t tx, rx;	/* bytes of the echo, or stream totals */
	size_t pending;		/* stream: an SSL_write to repeat */
};

struct stats {
	uint64_t done, resumed, tls13, attempts;
	uint64_t win_sent, win_recv, tot_sent, tot_recv;
	uint64_t established, failed, dropped;
	uint64_t err[E_KINDS];
	uint64_t hist[HIST_BUCKETS];
};

struct worker {
	pthread_t tid;
	int epfd;
	struct conn *conns;
	uint32_t n, next, inflight;
	uint32_t settled;
	struct stats st;
};

struct config {
	enum mode mode;
	char target_str[40];
	struct sockaddr_in target;
	uint32_t clients, threads;
	double duration_s, warmup_s;
	bool resume;
};

static struct config g_cfg = { .threads = 2, .duration_s = 5, .warmup_s = 1 };
static SSL_CTX *g_ctx;
static uint8_t g_msg[CHUNK];
static uint64_t g_begin, g_meas, g_end;
static atomic_uint g_settled_threads;
static atomic_bool g_stop;

/* A line on stderr, named for this tool (common.h). */
#define logmsg(...)	bench_log("esockd-bench-tls", "", __VA_ARGS__)

static uint64_t now_ns(void)
{
	return bench_now_ns();
}

static bool in_window(uint64_t t)
{
	return t >= g_meas && t < g_end;
}

/* Close C (close_notify sent, not waited for); keep its session. */
static void conn_close(struct worker *w, struct conn *c)
{
	if (c->ssl != NULL) {
		if (c->state != C_CONNECTING && c->state != C_HANDSHAKE)
			(void)SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	c->state = C_OFF;
}

/* Count a failure of C and close it. */
static void conn_fail(struct worker *w, struct conn *c, enum err_kind k)
{
	if (g_cfg.mode != M_HS || in_window(now_ns()))
		w->st.err[k]++;
	if (g_cfg.mode == M_IDLE && c->state != C_HELD) {
		w->st.failed++;
		w->settled++;
		w->inflight--;
	} else if (g_cfg.mode == M_IDLE) {
		w->st.dropped++;
	}
	if (c->sess != NULL && k == E_HANDSHAKE) {
		SSL_SESSION_free(c->sess);
		c->sess = NULL;
	}
	conn_close(w, c);
}

/* Wait for EV on C's socket. */
static void want(struct worker *w, struct conn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };

	if (ev != c->events) {
		epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &e);
		c->events = ev;
	}
}

/* After an SSL call returned R <= 0: wait as OpenSSL asks, or fail. */
static int ssl_wait(struct worker *w, struct conn *c, int r, enum err_kind k)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		want(w, c, EPOLLIN);
		return 0;
	case SSL_ERROR_WANT_WRITE:
		want(w, c, EPOLLOUT);
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		conn_fail(w, c, E_EOF);
		return -1;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		conn_fail(w, c, errno == 0 ? E_EOF : E_RESET);
		return -1;
	default:
		if (g_cfg.mode == M_CHECK)
			ERR_print_errors_fp(stderr);
		ERR_clear_error();
		conn_fail(w, c, k);
		return -1;
	}
}

/* Open a new connection in slot C. */
static void conn_start(struct worker *w, struct conn *c)
{
	struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
	int one = 1, fd;

	c->t0 = now_ns();
	c->tx = c->rx = 0;
	c->pending = 0;
	w->st.attempts++;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		logmsg("socket: %s", strerror(errno));
		c->state = C_OFF;
		w->st.err[E_CONNECT]++;
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	c->state = C_CONNECTING;
	c->events = EPOLLOUT;
	if (connect(fd, (struct sockaddr *)&g_cfg.target,
		    sizeof g_cfg.target) != 0 && errno != EINPROGRESS) {
		close(fd);
		c->fd = -1;
		if (g_cfg.mode == M_IDLE)
			w->inflight++;
		conn_fail(w, c, E_CONNECT);
		return;
	}
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &e);
	if (g_cfg.mode == M_IDLE)
		w->inflight++;
}

/* The connection's echo came back whole. */
static void echo_done(struct worker *w, struct conn *c)
{
	uint64_t t = now_ns(), us;

	if (g_cfg.mode == M_IDLE) {
		c->state = C_HELD;
		want(w, c, EPOLLIN | EPOLLRDHUP);
		w->st.established++;
		if (SSL_version(c->ssl) == TLS1_3_VERSION)
			w->st.tls13++;
		w->settled++;
		w->inflight--;
		return;
	}
	if (g_cfg.mode == M_CHECK || in_window(t)) {
		w->st.done++;
		if (SSL_session_reused(c->ssl))
			w->st.resumed++;
		if (SSL_version(c->ssl) == TLS1_3_VERSION)
			w->st.tls13++;
		us = (t - c->t0) / 10000;
		w->st.hist[us < HIST_BUCKETS ? us : HIST_BUCKETS - 1]++;
	}
	if (g_cfg.resume) {
		SSL_SESSION *s = SSL_get1_session(c->ssl);

		if (s != NULL && SSL_SESSION_is_resumable(s)) {
			SSL_SESSION_free(c->sess);
			c->sess = s;
		} else {
			SSL_SESSION_free(s);
		}
	}
	conn_close(w, c);
	if (g_cfg.mode == M_HS && t < g_end)
		conn_start(w, c);
}

/* Stream: read what is there, write while the echo keeps up. */
static void stream_io(struct worker *w, struct conn *c)
{
	uint8_t buf[CHUNK];
	uint64_t t;
	int r;

	for (;;) {
		r = SSL_read(c->ssl, buf, sizeof buf);
		if (r <= 0)
			break;
		t = now_ns();
		c->rx += (uint64_t)r;
		w->st.tot_recv += (uint64_t)r;
		if (in_window(t))
			w->st.win_recv += (uint64_t)r;
	}
	if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
		(void)ssl_wait(w, c, r, E_RESET);
		return;
	}
	while (now_ns() < g_end && c->tx - c->rx < MAX_AHEAD) {
		r = SSL_write(c->ssl, g_msg, CHUNK);
		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);

			if (e == SSL_ERROR_WANT_WRITE) {
				want(w, c, EPOLLIN | EPOLLOUT);
				return;
			}
			if (e != SSL_ERROR_WANT_READ) {
				(void)ssl_wait(w, c, r, E_RESET);
				return;
			}
			break;
		}
		t = now_ns();
		c->tx += (uint64_t)r;
		w->st.tot_sent += (uint64_t)r;
		if (in_window(t))
			w->st.win_sent += (uint64_t)r;
	}
	want(w, c, EPOLLIN);
}

/* Drive C as far as it goes on the readiness EV. */
static void conn_io(struct worker *w, struct conn *c, uint32_t ev)
{
	uint8_t buf[SMALL_MSG];
	int r, err = 0;
	socklen_t len = sizeof err;

	switch (c->state) {
	case C_CONNECTING:
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
		    err != 0) {
			conn_fail(w, c, E_CONNECT);
			return;
		}
		c->ssl = SSL_new(g_ctx);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
			conn_fail(w, c, E_HANDSHAKE);
			return;
		}
		if (c->sess != NULL)
			SSL_set_session(c->ssl, c->sess);
		c->state = C_HANDSHAKE;
		/* FALLTHROUGH */
	case C_HANDSHAKE:
		r = SSL_connect(c->ssl);
		if (r <= 0) {
			(void)ssl_wait(w, c, r, E_HANDSHAKE);
			return;
		}
		if (g_cfg.mode == M_STREAM) {
			c->state = C_STREAM;
			stream_io(w, c);
			return;
		}
		c->state = C_SEND;
		/* FALLTHROUGH */
	case C_SEND:
		r = SSL_write(c->ssl, g_msg, SMALL_MSG);
		if (r <= 0) {
			(void)ssl_wait(w, c, r, E_RESET);
			return;
		}
		c->state = C_RECV;
		/* FALLTHROUGH */
	case C_RECV:
		while (c->rx < SMALL_MSG) {
			r = SSL_read(c->ssl, buf, SMALL_MSG - c->rx);
			if (r <= 0) {
				(void)ssl_wait(w, c, r, E_RESET);
				return;
			}
			if (memcmp(buf, g_msg + c->rx, (size_t)r) != 0) {
				conn_fail(w, c, E_RESET);
				return;
			}
			c->rx += (uint64_t)r;
		}
		echo_done(w, c);
		return;
	case C_STREAM:
		stream_io(w, c);
		return;
	case C_HELD:
		/* a held connection that becomes readable was closed, or got
		 * a late ticket: read it, and count a close as dropped */
		r = SSL_read(c->ssl, buf, sizeof buf);
		if (r <= 0)
			(void)ssl_wait(w, c, r, E_EOF);
		return;
	}
	(void)ev;
}

/* Fail connections that have not finished their echo in time. */
static void scan_timeouts(struct worker *w, uint64_t t)
{
	uint32_t i;

	for (i = 0; i < w->next; i++) {
		struct conn *c = &w->conns[i];

		if (c->state != C_OFF && c->state != C_HELD &&
		    c->state != C_STREAM && t - c->t0 > OP_TIMEOUT_NS) {
			conn_fail(w, c, E_TIMEOUT);
			if (g_cfg.mode == M_HS && t < g_end)
				conn_start(w, c);
		}
	}
}

/* One thread's loop: start its connections, run until the end. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t t, last_scan = 0;
	bool announced = false;
	int n, i;

	for (;;) {
		t = now_ns();
		while (w->next < w->n &&
		       (g_cfg.mode != M_IDLE || w->inflight < INFLIGHT))
			conn_start(w, &w->conns[w->next++]);
		if (g_cfg.mode == M_IDLE && !announced && w->next == w->n &&
		    w->settled == w->n) {
			announced = true;
			atomic_fetch_add(&g_settled_threads, 1);
		}
		if (g_cfg.mode == M_IDLE ? atomic_load(&g_stop) :
		    g_cfg.mode == M_CHECK ? w->conns[0].state == C_OFF :
		    t >= g_end + (g_cfg.mode == M_STREAM ? NS_PER_S : 0))
			break;
		if (g_cfg.mode == M_IDLE && !announced &&
		    t - g_begin > ESTABLISH_NS) {
			announced = true;
			atomic_fetch_add(&g_settled_threads, 1);
		}
		n = epoll_wait(w->epfd, evs, MAX_EVENTS, 50);
		for (i = 0; i < n; i++)
			conn_io(w, evs[i].data.ptr, evs[i].events);
		t = now_ns();
		/* hs: a failed slot starts again at once */
		for (i = 0; g_cfg.mode == M_HS && t < g_end &&
		     i < (int)w->n; i++)
			if (w->conns[i].state == C_OFF)
				conn_start(w, &w->conns[i]);
		if (t - last_scan > NS_PER_S / 10) {
			last_scan = t;
			scan_timeouts(w, t);
		}
	}
	for (i = 0; i < (int)w->n; i++) {
		if (w->conns[i].state != C_OFF)
			conn_close(w, &w->conns[i]);
		SSL_SESSION_free(w->conns[i].sess);
	}
	return NULL;
}

static uint64_t percentile(const uint64_t *h, double q)
{
	uint64_t total = 0, acc = 0;
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++)
		total += h[i];
	for (i = 0; i < HIST_BUCKETS && total > 0; i++) {
		acc += h[i];
		if ((double)acc >= q * (double)total)
			return (uint64_t)i * 10 + 5;
	}
	return 0;
}

/* Print the RESULT line; the exit status. */
static int report(const struct stats *st, double establish_s, double held_s)
{
	uint64_t errors = 0, attempts;
	double d = g_cfg.duration_s;
	unsigned k;

	for (k = 0; k < E_KINDS; k++)
		errors += st->err[k];
	printf("RESULT mode=tls-%s target=%s clients=%" PRIu32 " threads=%"
	       PRIu32 " duration_s=%.3f errors=%" PRIu64, mode_names[g_cfg.mode],
	       g_cfg.target_str, g_cfg.clients, g_cfg.threads, d, errors);
	switch (g_cfg.mode) {
	case M_HS:
	case M_CHECK:
		printf(" resume=%d hs=%" PRIu64 " hs_per_s=%.1f resumed=%" PRIu64
		       " tls13=%" PRIu64 " p50_us=%" PRIu64 " p99_us=%" PRIu64,
		       g_cfg.resume, st->done, (double)st->done / d, st->resumed,
		       st->tls13,
		       percentile(st->hist, 0.5), percentile(st->hist, 0.99));
		attempts = st->done + errors;
		break;
	case M_STREAM:
		printf(" chunk_bytes=%d bytes_sent=%" PRIu64 " bytes_recv=%"
		       PRIu64 " mb_per_s=%.1f lost_bytes=%" PRIu64, CHUNK,
		       st->win_sent, st->win_recv,
		       (double)(st->win_sent + st->win_recv) / 1e6 / d,
		       st->tot_sent - st->tot_recv);
		attempts = st->attempts;
		break;
	default:
		printf(" procs=1 established=%" PRIu64 " tls13=%" PRIu64
		       " failed=%" PRIu64 " dropped=%" PRIu64
		       " establish_s=%.3f held_s=%.3f", st->established,
		       st->tls13, st->failed, st->dropped, establish_s, held_s);
		attempts = st->attempts;
		break;
	}
	for (k = 0; k < E_KINDS; k++)
		printf(" err_%s=%" PRIu64, err_names[k], st->err[k]);
	printf("\n");
	if (fflush(stdout) != 0)
		return 1;
	return attempts == 0 || errors * 100 > attempts ? 2 : 0;
}

static void usage(FILE *f)
{
	fputs("usage: esockd-bench-tls MODE -t HOST:PORT [options]\n"
	      "MODE: hs | stream | idle | check\n"
	      "  hs      loop: connect, TLS handshake, one 64-byte echo, close\n"
	      "  stream  keep -c connections writing 64 KiB records, read the"
	      " echo\n"
	      "  idle    open -c connections (handshake + one echo), hold -d s\n"
	      "  check   one connection as in hs; exit 0 when it echoed\n"
	      "  -t HOST:PORT  target, IPv4 in 127.0.0.0/8 (required)\n"
	      "  -c N          clients (default: hs 64, stream 8, idle 1000)\n"
	      "  -d SECONDS    measured duration; idle: hold time (default 5)\n"
	      "  -w SECONDS    warm-up before measuring (default 1)\n"
	      "  -T THREADS    threads, each with its own epoll (default 2)\n"
	      "  -r            resume: offer each client's last session (ticket"
	      " or id);\n"
	      "                without it tickets are off and nothing is kept\n"
	      "stdout: one 'RESULT key=value ...' line (idle: first "
	      "'HOLDING connections=N').\n"
	      "exit: 0 done, 1 usage/setup error, 2 more than 1% failed\n", f);
}

/* Parse the command line into g_cfg; -1 on a usage error. */
static int parse_args(int argc, char **argv)
{
	char *end;
	int ch;

	if (argc < 2)
		return -1;
	for (ch = 0; ch < 4; ch++)
		if (strcmp(argv[1], mode_names[ch]) == 0)
			g_cfg.mode = (enum mode)ch;
	if (ch == 4 && strcmp(argv[1], mode_names[g_cfg.mode]) != 0)
		return -1;
	g_cfg.clients = g_cfg.mode == M_HS ? 64 : g_cfg.mode == M_STREAM ? 8 :
	    g_cfg.mode == M_IDLE ? 1000 : 1;
	optind = 2;
	while ((ch = getopt(argc, argv, "t:c:d:w:T:rh")) != -1) {
		switch (ch) {
		case 't':
			if (bench_parse_loopback(optarg, &g_cfg.target) != 0) {
				logmsg("-t %s: expected 127.x.y.z:PORT", optarg);
				return -1;
			}
			snprintf(g_cfg.target_str, sizeof g_cfg.target_str,
				 "%s", optarg);
			break;
		case 'c':
			g_cfg.clients = (uint32_t)strtoul(optarg, &end, 10);
			if (*end || g_cfg.clients < 1 || g_cfg.clients > 200000)
				return -1;
			break;
		case 'd':
			g_cfg.duration_s = strtod(optarg, &end);
			if (*end || !(g_cfg.duration_s >= 0.1) ||
			    g_cfg.duration_s > 3600)
				return -1;
			break;
		case 'w':
			g_cfg.warmup_s = strtod(optarg, &end);
			if (*end || !(g_cfg.warmup_s >= 0) || g_cfg.warmup_s > 600)
				return -1;
			break;
		case 'T':
			g_cfg.threads = (uint32_t)strtoul(optarg, &end, 10);
			if (*end || g_cfg.threads < 1 ||
			    g_cfg.threads > MAX_THREADS)
				return -1;
			break;
		case 'r':
			g_cfg.resume = true;
			break;
		default:
			return -1;
		}
	}
	if (g_cfg.target_str[0] == '\0' || optind != argc)
		return -1;
	if (g_cfg.mode == M_CHECK)
		g_cfg.clients = g_cfg.threads = 1;
	if (g_cfg.clients < g_cfg.threads)
		g_cfg.threads = g_cfg.clients;
	return 0;
}

/* The client context: no verification (loopback, throwaway keys). */
static SSL_CTX *make_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (g_cfg.resume)
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	else
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
}

int main(int argc, char **argv)
{
	struct worker *ws = NULL;
	static struct stats total;	/* 400 KB of histogram: not on the stack */
	struct rlimit rl;
	uint64_t t_hold = 0, t_settled = 0;
	uint32_t i, k, share;
	int rc = 1;

	if (parse_args(argc, argv) != 0) {
		usage(stderr);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (i = 0; i < CHUNK; i++)
		g_msg[i] = (uint8_t)('a' + i % 26);
	if ((g_ctx = make_ctx()) == NULL) {
		logmsg("SSL_CTX_new failed");
		return 1;
	}
	ws = calloc(g_cfg.threads, sizeof *ws);
	if (ws == NULL)
		goto out;
	g_begin = now_ns();
	g_meas = g_begin + (uint64_t)(g_cfg.warmup_s * 1e9);
	g_end = g_meas + (uint64_t)(g_cfg.duration_s * 1e9);
	if (g_cfg.mode == M_IDLE || g_cfg.mode == M_CHECK)
		g_meas = g_begin, g_end = UINT64_MAX;
	for (i = 0; i < g_cfg.threads; i++) {
		struct worker *w = &ws[i];

		share = g_cfg.clients / g_cfg.threads +
		    (i < g_cfg.clients % g_cfg.threads);
		w->n = share;
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->conns = calloc(share, sizeof *w->conns);
		if (w->epfd < 0 || w->conns == NULL) {
			logmsg("out of memory or descriptors");
			goto out;
		}
		for (k = 0; k < share; k++)
			w->conns[k].fd = -1;
	}
	for (i = 0; i < g_cfg.threads; i++)
		if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
			logmsg("pthread_create failed");
			exit(1);
		}
	if (g_cfg.mode == M_IDLE) {
		while (atomic_load(&g_settled_threads) < g_cfg.threads)
			usleep(20000);
		t_settled = now_ns();
		for (i = 0, k = 0; i < g_cfg.threads; i++)
			k += (uint32_t)ws[i].st.established;
		printf("HOLDING connections=%" PRIu32 "\n", k);
		fflush(stdout);
		t_hold = now_ns();
		while (now_ns() - t_hold < (uint64_t)(g_cfg.duration_s * 1e9))
			usleep(20000);
		atomic_store(&g_stop, true);
	}
	memset(&total, 0, sizeof total);
	for (i = 0; i < g_cfg.threads; i++) {
		struct stats *s = &ws[i].st;

		pthread_join(ws[i].tid, NULL);
		total.done += s->done;
		total.resumed += s->resumed;
		total.tls13 += s->tls13;
		total.attempts += s->attempts;
		total.win_sent += s->win_sent;
		total.win_recv += s->win_recv;
		total.tot_sent += s->tot_sent;
		total.tot_recv += s->tot_recv;
		total.established += s->established;
		total.failed += s->failed;
		total.dropped += s->dropped;
		for (k = 0; k < E_KINDS; k++)
			total.err[k] += s->err[k];
		for (k = 0; k < HIST_BUCKETS; k++)
			total.hist[k] += s->hist[k];
	}
	if (g_cfg.mode == M_CHECK)
		return total.done == 1 ? 0 : 1;
	rc = report(&total, (double)(t_settled - g_begin) / 1e9,
		    (double)(now_ns() - t_hold) / 1e9);
out:
	if (ws != NULL)
		for (i = 0; i < g_cfg.threads; i++) {
			if (ws[i].epfd > 0)
				close(ws[i].epfd);
			free(ws[i].conns);
		}
	free(ws);
	SSL_CTX_free(g_ctx);
	return rc;
}
