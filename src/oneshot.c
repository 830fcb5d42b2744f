/*
 * oneshot.c: one request and one answer per connection, for the master's
 * operator endpoints (the control socket and /metrics).  The protocol,
 * how a request ends and what the answer says, is the caller's
 * (oneshot_cfg.request); this file owns the connections and their limits.
 *
 * A broken or hostile client costs bounded memory, time and descriptors:
 * - a request is at most read_max bytes;
 * - it must arrive whole within timeout_s of the accept, and the answer
 *   be taken (and the client's FIN come) within as long again: deadlines,
 *   not idle timers, so a trickle cannot stretch them;
 * - at most max_conns connections are open (and a newcomer, for the
 *   instant between its accept and the push-out).  At that cap a new one pushes
 *   out the oldest one that has its whole answer and only owes its FIN,
 *   else the oldest one still sending its request, so neither a pile of
 *   idle connections nor of answered ones left open can lock the operator
 *   out; only when every open one is still taking its answer is the new
 *   one refused.  Both are counted and logged at most once a second;
 * - optionally, accepting pauses for a second once accepts_per_s
 *   connections came in one second of the monotonic clock, and it always
 *   does when accept(2) fails.
 *
 * After the answer is written we send our FIN and read (and drop) until
 * the client's, so that a request's unread rest cannot make the kernel
 * send a RST that destroys the answer in flight.
 */
#include "oneshot.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "log.h"

struct oneshot_conn {
	struct oneshot		*os;
	struct bufferevent	*bev;
	struct event		*deadline;	/* for the request, then the answer */
	TAILQ_ENTRY(oneshot_conn) entry;
	int			 answered;	/* reading the request is over */
	int			 lingering;	/* answer out, our FIN sent */
};

struct oneshot {
	struct oneshot_cfg	 cfg;
	struct event_base	*base;
	struct evconnlistener	*lev;
	struct event		*resume;	/* ends a 1 s accept pause */
	TAILQ_HEAD(, oneshot_conn) conns;	/* oldest first */
	int			 nconns;
	struct oneshot_counters	 n;
	time_t			 window;	/* monotonic second being counted */
	int			 accepts;	/* connections in that second */
	struct log_ratelimit	 rl_shed[3], rl_pause, rl_timer;	/* shed: by make_room outcome */
};

static void on_written(struct bufferevent *, void *);

#define ONESHOT_NAME(f)	#f,
const char *const oneshot_counter_names[ONESHOT_NCOUNTERS] = {
	ONESHOT_COUNTERS(ONESHOT_NAME)
};

const struct oneshot_counters *
oneshot_counters(const struct oneshot *os)
{
	return &os->n;
}

int
oneshot_fd(const struct oneshot_conn *oc)
{
	return bufferevent_getfd(oc->bev);
}

/*
 * The socket is closed here, not by the bufferevent: with
 * BEV_OPT_CLOSE_ON_FREE libevent closes it later, from the loop, and for
 * that moment a connection pushed out at the cap would still hold its
 * descriptor next to the one that replaced it.  bufferevent_free has
 * taken it out of the event loop already.
 */
static void
conn_close(struct oneshot_conn *oc)
{
	struct oneshot *os = oc->os;
	int fd = bufferevent_getfd(oc->bev);

	TAILQ_REMOVE(&os->conns, oc, entry);
	os->nconns--;
	event_free(oc->deadline);
	bufferevent_free(oc->bev);
	if (fd != -1 && close(fd) == -1)
		log_warn("%s: close", os->cfg.name);
	free(oc);
}

static int linger(struct oneshot_conn *);

/*
 * The answer is queued in the output: stop reading, start its deadline.
 * Returns 1 when the connection was closed.
 */
static int
answering(struct oneshot_conn *oc)
{
	struct timeval tv = { oc->os->cfg.timeout_s, 0 };

	oc->answered = 1;
	bufferevent_disable(oc->bev, EV_READ);
	if (evtimer_add(oc->deadline, &tv) == -1) {
		oc->os->n.errors++;
		conn_close(oc);
		return 1;
	}
	/* Nothing to write: no write callback would come. */
	if (evbuffer_get_length(bufferevent_get_output(oc->bev)) == 0)
		return linger(oc);
	return 0;
}

/* Ask the caller about the request; 1 when the connection was closed. */
static int
ask(struct oneshot_conn *oc, int eof)
{
	struct oneshot *os = oc->os;
	struct evbuffer *in = bufferevent_get_input(oc->bev);

	switch (os->cfg.request(oc, in, eof, bufferevent_get_output(oc->bev),
	    os->cfg.arg)) {
	case 1:
		os->n.answered++;
		return answering(oc);
	case 0:
		if (!eof && evbuffer_get_length(in) < os->cfg.read_max)
			return 0;
		break;
	}
	os->n.dropped++;
	conn_close(oc);
	return 1;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct oneshot_conn *oc = arg;

	if (oc->answered)	/* the lingering close: drop what comes */
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
	else
		(void)ask(oc, 0);
}

/* The answer is out: our FIN, then read until the client's.  Returns 1
 * when the connection was closed. */
static int
linger(struct oneshot_conn *oc)
{
	struct bufferevent *bev = oc->bev;

	oc->lingering = 1;
	bufferevent_setwatermark(bev, EV_READ, 0, 0);
	if (shutdown(bufferevent_getfd(bev), SHUT_WR) == -1 ||
	    bufferevent_enable(bev, EV_READ) == -1) {
		/* The client reset it (ENOTCONN), or no event: either way
		 * the answer may not have reached it. */
		oc->os->n.dropped++;
		conn_close(oc);
		return 1;
	}
	return 0;
}

static void
on_written(struct bufferevent *bev, void *arg)
{
	struct oneshot_conn *oc = arg;

	if (oc->answered && !oc->lingering &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		(void)linger(oc);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct oneshot_conn *oc = arg;

	(void)bev;
	/* The client's FIN may end a request ("printf stats | nc -U"). */
	if (!oc->answered && what == (BEV_EVENT_READING | BEV_EVENT_EOF)) {
		(void)ask(oc, 1);
		return;
	}
	/* An error, or the FIN that ends the lingering. */
	if (!oc->lingering)
		oc->os->n.dropped++;
	conn_close(oc);
}

/* No whole request in time: say so (or just close); no answer taken
 * in time: close. */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct oneshot_conn *oc = arg;
	struct oneshot *os = oc->os;

	(void)fd;
	(void)what;
	if (oc->answered) {
		os->n.late_answer++;
		conn_close(oc);
		return;
	}
	os->n.late_request++;
	if (os->cfg.late == NULL) {
		conn_close(oc);
		return;
	}
	os->cfg.late(bufferevent_get_output(oc->bev), os->cfg.arg);
	(void)answering(oc);
}

/* The oldest connection with lingering as given, still reading if not. */
static struct oneshot_conn *
oldest(struct oneshot *os, int lingering)
{
	struct oneshot_conn *oc;

	TAILQ_FOREACH(oc, &os->conns, entry)
		if (lingering ? oc->lingering : !oc->answered)
			return oc;
	return NULL;
}

/*
 * At the cap, close the oldest connection that has its whole answer, else
 * the oldest one still sending its request.  Returns -1 when every open
 * one is still taking its answer.
 */
static int
make_room(struct oneshot *os)
{
	/* Each outcome logged at most once a second on its own, so one
	 * kind cannot hide the other from the log. */
	static const char *const which[] = { "closed the oldest answered one",
	    "closed the oldest idle one", "refused a new one" };
	uint64_t *const count[] = { &os->n.pushed_out_answered,
	    &os->n.pushed_out_idle, &os->n.refused };
	struct oneshot_conn *oc;
	uint64_t suppressed;
	int k = 0;

	if ((oc = oldest(os, 1)) == NULL)
		k = (oc = oldest(os, 0)) != NULL ? 1 : 2;
	(*count[k])++;
	if (log_ratelimit_pass(&os->rl_shed[k], &suppressed))
		log_warnx("%s: %d connections open, the most allowed; %s "
		    "(%llu such connections closed in all)", os->cfg.name,
		    os->cfg.max_conns, which[k], (unsigned long long)(
		    os->n.pushed_out_answered + os->n.pushed_out_idle +
		    os->n.refused));
	if (oc == NULL)
		return -1;
	conn_close(oc);
	return 0;
}

/* Stop accepting for a second (a flood, or accept failing). */
static void
pause_accept(struct oneshot *os, const char *why)
{
	struct timeval tv = { 1, 0 };
	uint64_t suppressed;

	os->n.accept_pauses++;
	if (log_ratelimit_pass(&os->rl_pause, &suppressed))
		log_warnx("%s: %s; not accepting for 1 s (%llu more since the "
		    "last report)", os->cfg.name, why,
		    (unsigned long long)suppressed);
	/* Without the timer nothing would resume: keep accepting then. */
	if (evtimer_add(os->resume, &tv) == -1) {
		if (log_ratelimit_pass(&os->rl_timer, &suppressed))
			log_errorx("%s: cannot arm the resume timer; not "
			    "pausing (%llu more since the last report)",
			    os->cfg.name, (unsigned long long)suppressed);
		return;
	}
	evconnlistener_disable(os->lev);
}

/* The accept rate limit, if any: count this one. */
static void
count_accept(struct oneshot *os)
{
	struct timespec now;

	if (os->cfg.accepts_per_s == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec != os->window) {
		os->window = now.tv_sec;
		os->accepts = 0;
	}
	if (++os->accepts == os->cfg.accepts_per_s)
		pause_accept(os, "too many connections in one second");
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct oneshot *os = arg;
	struct timeval tv = { os->cfg.timeout_s, 0 };
	struct oneshot_conn *oc;

	(void)lev;
	(void)sa;
	(void)salen;
	os->n.accepted++;
	count_accept(os);
	if (os->nconns >= os->cfg.max_conns && make_room(os) == -1) {
		close(fd);
		return;
	}
	if ((oc = calloc(1, sizeof(*oc))) == NULL ||
	    (oc->deadline = evtimer_new(os->base, on_deadline, oc)) == NULL ||
	    (oc->bev = bufferevent_socket_new(os->base, fd, 0)) == NULL) {
		log_warnx("%s: out of memory; connection closed", os->cfg.name);
		os->n.errors++;
		if (oc != NULL && oc->deadline != NULL)
			event_free(oc->deadline);
		free(oc);
		close(fd);
		return;
	}
	oc->os = os;
	TAILQ_INSERT_TAIL(&os->conns, oc, entry);
	os->nconns++;
	bufferevent_setcb(oc->bev, on_read, on_written, on_event, oc);
	bufferevent_setwatermark(oc->bev, EV_READ, 0, os->cfg.read_max);
	if (evtimer_add(oc->deadline, &tv) == -1 ||
	    bufferevent_enable(oc->bev, EV_READ) == -1) {
		log_warnx("%s: cannot watch a connection", os->cfg.name);
		os->n.errors++;
		conn_close(oc);
	}
}

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
	char why[128];

	(void)lev;
	snprintf(why, sizeof(why), "accept: %s", strerror(EVUTIL_SOCKET_ERROR()));
	pause_accept(arg, why);
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct oneshot *os = arg;

	(void)fd;
	(void)what;
	if (evconnlistener_enable(os->lev) == -1)
		log_errorx("%s: cannot accept again", os->cfg.name);
}

/*
 * Serve the listening socket fd (listen(2) done) by cfg, which must
 * outlive the result.  fd is closed on failure too.  NULL: logged.
 */
struct oneshot *
oneshot_start(struct event_base *base, int fd, const struct oneshot_cfg *cfg)
{
	struct oneshot *os;

	if ((os = calloc(1, sizeof(*os))) == NULL) {
		log_errorx("%s: out of memory", cfg->name);
		close(fd);
		return NULL;
	}
	os->cfg = *cfg;
	os->base = base;
	TAILQ_INIT(&os->conns);
	if ((os->resume = evtimer_new(base, on_resume, os)) == NULL ||
	    (os->lev = evconnlistener_new(base, on_accept, os,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)) == NULL) {
		log_errorx("%s: cannot watch the socket", cfg->name);
		close(fd);
		oneshot_free(os);
		return NULL;
	}
	evconnlistener_set_error_cb(os->lev, on_accept_error);
	return os;
}

/* Close every connection and the listening socket. */
void
oneshot_free(struct oneshot *os)
{
	if (os == NULL)
		return;
	while (!TAILQ_EMPTY(&os->conns))
		conn_close(TAILQ_FIRST(&os->conns));
	if (os->lev != NULL)
		evconnlistener_free(os->lev);
	if (os->resume != NULL)
		event_free(os->resume);
	free(os);
}
