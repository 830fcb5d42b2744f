/*
 * echo-handler.c: an example esockd backend: echo on a Unix socket.
 *
 * Each connection's input is moved (not copied) to its output.  It is
 * half-close aware: on EOF it finishes sending what it has, then shuts
 * its write side, as a well-behaved backend behind esockd should.
 * Output is bounded: reading stops while 1 MiB is waiting to be sent.
 *
 * usage: echo-handler -s PATH, or -s @NAME for the Linux abstract
 * namespace (no file: the name goes after a NUL in sun_path).
 *
 * echo-handler --handoff SOCKET is the same echo as a hand-off handler
 * (esockd's mode = "handoff", handoff.h): it takes channels on SOCKET,
 * receives each client's own socket from esockd and echoes on it
 * directly, and says "closed <id>" on the channel when it closes one.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "handoff.h"

#define HIGH	(1024 * 1024)

struct conn {
	struct bufferevent	*bev;
	int			 eof;
	/* Hand-off mode only: the client's record, and the list of open
	 * clients freed at exit.  NULL and unused in relay mode. */
	struct handoff_client	*hc;
	LIST_ENTRY(conn)	 entry;
};

/* Hand-off mode's open clients, so that exit frees them. */
static LIST_HEAD(, conn) conns = LIST_HEAD_INITIALIZER(conns);

static void
conn_free(struct conn *c)
{
	bufferevent_free(c->bev);	/* closes the client's socket */
	if (c->hc != NULL) {
		/* Closed, then said so: esockd counts it after the close. */
		handoff_client_closed(c->hc);
		LIST_REMOVE(c, entry);
	}
	free(c);
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *out = bufferevent_get_output(bev);

	(void)arg;
	evbuffer_add_buffer(out, bufferevent_get_input(bev));
	if (evbuffer_get_length(out) >= HIGH) {
		bufferevent_disable(bev, EV_READ);
		bufferevent_setwatermark(bev, EV_WRITE, HIGH / 2, 0);
	}
}

static void
on_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->eof) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
			/* Everything echoed: say EOF back, then leave. */
			shutdown(bufferevent_getfd(bev), SHUT_WR);
			conn_free(c);
		}
		return;
	}
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	bufferevent_enable(bev, EV_READ);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
			shutdown(bufferevent_getfd(bev), SHUT_WR);
			conn_free(c);
		}
		return;
	}
	if (what & BEV_EVENT_ERROR)
		conn_free(c);
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int len, void *arg)
{
	struct event_base *base = arg;
	struct conn *c = calloc(1, sizeof(*c));

	(void)l;
	(void)sa;
	(void)len;
	if (c == NULL) {
		close(fd);
		return;
	}
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_set_max_single_read(c->bev, 64 * 1024);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
on_accept_error(struct evconnlistener *l, void *arg)
{
	(void)arg;
	(void)l;
	fprintf(stderr, "echo-handler: accept: %s\n", strerror(errno));
	/* Out of descriptors: do not spin; the backlog keeps the clients. */
	usleep(10000);
}

/* Hand-off mode: one channel from an esockd worker, and its event. */
struct chan {
	struct handoff_channel	*ch;
	struct event		*ev;
	LIST_ENTRY(chan)	 entry;
};

static LIST_HEAD(, chan) chans = LIST_HEAD_INITIALIZER(chans);

/* What the hand-off socket's accept callback needs. */
struct hmode {
	struct event_base	*base;
	struct handoff_server	*srv;
};

/* Stop watching a channel and end it: its clients stay open and are
 * announced "held" on another channel. */
static void
chan_end(struct chan *w)
{
	event_free(w->ev);
	handoff_channel_close(w->ch);
	LIST_REMOVE(w, entry);
	free(w);
}

/* Echo a client handed over: the relay mode's echo on its own socket. */
static void
handoff_start(struct event_base *base, struct handoff_client *hc)
{
	struct conn *c;

	if (evutil_make_socket_nonblocking(hc->fd) == -1 ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		fprintf(stderr, "echo-handler: client %s: cannot take it: %s\n",
		    hc->id, strerror(errno));
		close(hc->fd);
		handoff_client_closed(hc);
		return;
	}
	c->bev = bufferevent_socket_new(base, hc->fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		fprintf(stderr, "echo-handler: client %s: no bufferevent\n",
		    hc->id);
		close(hc->fd);
		handoff_client_closed(hc);
		free(c);
		return;
	}
	c->hc = hc;
	LIST_INSERT_HEAD(&conns, c, entry);
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_set_max_single_read(c->bev, 64 * 1024);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* A channel is readable: take every whole client it has. */
static void
on_channel(evutil_socket_t fd, short what, void *arg)
{
	struct chan *w = arg;
	struct handoff_client *hc;
	int r;

	(void)fd;
	(void)what;
	while ((r = handoff_channel_read(w->ch, &hc)) == HANDOFF_CLIENT)
		handoff_start(event_get_base(w->ev), hc);
	if (r == HANDOFF_ENDED) {
		/* Said, so that an operator (and the tests) can see it. */
		fprintf(stderr, "echo-handler: a channel ended; its clients "
		    "stay open\n");
		chan_end(w);
	}
}

/* The hand-off socket is readable: take a channel (the library says
 * the hello and announces the orphans). */
static void
on_channel_accept(evutil_socket_t fd, short what, void *arg)
{
	struct hmode *hm = arg;
	struct handoff_channel *ch;
	struct chan *w;

	(void)fd;
	(void)what;
	if ((ch = handoff_accept(hm->srv)) == NULL) {
		/* Out of descriptors: do not spin; the backlog keeps them. */
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM)
			usleep(10000);
		return;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL)
		goto err0;
	w->ch = ch;
	w->ev = event_new(hm->base, handoff_channel_fd(ch),
	    EV_READ | EV_PERSIST, on_channel, w);
	if (w->ev == NULL || event_add(w->ev, NULL) == -1)
		goto err1;
	LIST_INSERT_HEAD(&chans, w, entry);
	return;
err1:
	if (w->ev != NULL)
		event_free(w->ev);
	free(w);
err0:
	fprintf(stderr, "echo-handler: cannot watch a new channel\n");
	handoff_channel_close(ch);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopexit(arg, NULL);
}

/* echo-handler --handoff PATH: run the hand-off mode until a signal. */
static int
handoff_main(const char *path)
{
	struct hmode hm = { NULL, NULL };
	struct event *sigterm = NULL, *sigint = NULL, *lev = NULL;
	char err[256];
	int rc = 1;

	signal(SIGPIPE, SIG_IGN);
	if ((hm.base = event_base_new()) == NULL) {
		fprintf(stderr, "echo-handler: event_base_new failed\n");
		return 1;
	}
	if ((hm.srv = handoff_server_new(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "echo-handler: --handoff: %s\n", err);
		goto out;
	}
	lev = event_new(hm.base, handoff_server_fd(hm.srv),
	    EV_READ | EV_PERSIST, on_channel_accept, &hm);
	sigterm = evsignal_new(hm.base, SIGTERM, on_signal, hm.base);
	sigint = evsignal_new(hm.base, SIGINT, on_signal, hm.base);
	if (lev == NULL || sigterm == NULL || sigint == NULL ||
	    event_add(lev, NULL) || evsignal_add(sigterm, NULL) ||
	    evsignal_add(sigint, NULL)) {
		fprintf(stderr, "echo-handler: cannot set up the events\n");
		goto out;
	}
	fprintf(stderr, "echo-handler: hand-off on %s\n", path);
	event_base_dispatch(hm.base);
	rc = 0;
out:
	/* Clients first ("closed" goes out on their channels), then channels. */
	while (!LIST_EMPTY(&conns))
		conn_free(LIST_FIRST(&conns));
	while (!LIST_EMPTY(&chans)) {
		struct chan *w = LIST_FIRST(&chans);

		LIST_REMOVE(w, entry);
		event_free(w->ev);
		free(w);
	}
	handoff_server_free(hm.srv);	/* closes the channels */
	if (lev != NULL)
		event_free(lev);
	if (sigterm != NULL)
		event_free(sigterm);
	if (sigint != NULL)
		event_free(sigint);
	event_base_free(hm.base);
	return rc;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct evconnlistener *l;
	struct event_base *base;
	struct event *sigterm, *sigint;
	const char *path = NULL;
	socklen_t sunlen = sizeof(sun);
	int ch, abstract;

	static const struct option longopts[] = {
		{ "handoff", required_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 }
	};
	const char *hpath = NULL;

	while ((ch = getopt_long(argc, argv, "s:", longopts, NULL)) != -1) {
		if (ch == 'H') {
			hpath = optarg;
			continue;
		}
		if (ch != 's') {
			fprintf(stderr, "usage: echo-handler -s PATH|@NAME, or "
			    "echo-handler --handoff PATH|@NAME\n");
			return 2;
		}
		path = optarg;
	}
	if (hpath != NULL && path != NULL) {
		fprintf(stderr, "echo-handler: -s and --handoff are two modes; "
		    "give one\n");
		return 2;
	}
	if (hpath != NULL)
		return handoff_main(hpath);
	if (path == NULL || path[0] == '\0' || strcmp(path, "@") == 0 ||
	    strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "usage: echo-handler -s PATH|@NAME, or "
		    "--handoff PATH|@NAME (at most %zu bytes)\n",
		    sizeof(sun.sun_path) - 1);
		return 2;
	}
	abstract = path[0] == '@';
	if (abstract) {
		/* The exact length: the NULs after the name are not part of it. */
		memcpy(sun.sun_path + 1, path + 1, strlen(path + 1));
		sunlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
		    strlen(path));
	} else {
		strcpy(sun.sun_path, path);
	}
	signal(SIGPIPE, SIG_IGN);
	if (!abstract && unlink(path) == -1 && errno != ENOENT) {
		fprintf(stderr, "echo-handler: unlink %s: %s\n", path,
		    strerror(errno));
		return 1;
	}
	if ((base = event_base_new()) == NULL)
		return 1;
	l = evconnlistener_new_bind(base, on_accept, base,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 4096,
	    (struct sockaddr *)&sun, sunlen);
	if (l == NULL) {
		fprintf(stderr, "echo-handler: cannot listen on %s: %s\n", path,
		    strerror(errno));
		return 1;
	}
	evconnlistener_set_error_cb(l, on_accept_error);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) ||
	    evsignal_add(sigint, NULL))
		return 1;
	fprintf(stderr, "echo-handler: listening on %s\n", path);
	event_base_dispatch(base);
	evconnlistener_free(l);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(base);
	if (!abstract)
		unlink(path);
	return 0;
}
