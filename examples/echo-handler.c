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
 */
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#define HIGH	(1024 * 1024)

struct conn {
	struct bufferevent	*bev;
	int			 eof;
};

static void
conn_free(struct conn *c)
{
	bufferevent_free(c->bev);
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

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopexit(arg, NULL);
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

	while ((ch = getopt(argc, argv, "s:")) != -1) {
		if (ch != 's') {
			fprintf(stderr, "usage: echo-handler -s PATH|@NAME\n");
			return 2;
		}
		path = optarg;
	}
	if (path == NULL || path[0] == '\0' || strcmp(path, "@") == 0 ||
	    strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "usage: echo-handler -s PATH|@NAME (at most "
		    "%zu bytes)\n", sizeof(sun.sun_path) - 1);
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
