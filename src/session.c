/*
 * session.c: the life of one connection in a worker, from admission to
 * the last close.
 *
 * Admission comes first and costs nothing but the accepted descriptor: a
 * connection over max_connections is closed before any allocation or
 * backend work.  Every admitted session ends in session_close(), the one
 * place that releases its slot in shared memory, so counts stay exact.
 */
#include "session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
set_client_options(struct session *s)
{
	const struct listener_conf *lc = s->acc->lc;
	int on = 1;

	/* Best effort: a failure here changes latency, not correctness. */
	if (lc->tcp_nodelay &&
	    setsockopt(s->cfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == -1)
		log_debug("listener '%s': TCP_NODELAY: %s", lc->name,
		    strerror(errno));
	if (lc->tcp_keepalive &&
	    setsockopt(s->cfd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == -1)
		log_debug("listener '%s': SO_KEEPALIVE: %s", lc->name,
		    strerror(errno));
}

static void
session_nothing(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* A freshly accepted client: admit it or close it, then find a backend. */
void
session_start(struct acceptor *a, int fd)
{
	struct worker *w = a->w;
	struct session *s;

	if (shm_admit(w->shm, a->li, w->slot) == -1) {
		close(fd);
		w->fds_in_use--;
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		acceptor_pause(a, ENOMEM, "session allocation");
		close(fd);
		w->fds_in_use--;
		shm_release(w->shm, a->li, w->slot);
		return;
	}
	s->w = w;
	s->acc = a;
	s->cfd = fd;
	s->bfd = -1;
	/* Assigned now so that session_close may always event_del them. */
	evtimer_assign(&s->timer, w->base, session_nothing, s);
	event_assign(&s->connect_ev, w->base, -1, 0, session_nothing, s);
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	w->nsessions++;
	set_client_options(s);
	backend_connect(s);
}

/* End a session: both sockets, its timers and its share of the count. */
void
session_close(struct session *s)
{
	struct worker *w = s->w;

	event_del(&s->timer);
	event_del(&s->connect_ev);
	if (s->cbev != NULL)
		bufferevent_free(s->cbev);
	else if (s->cfd != -1 && close(s->cfd) == -1)
		log_warn("close client socket");
	if (s->bbev != NULL)
		bufferevent_free(s->bbev);
	else if (s->bfd != -1 && close(s->bfd) == -1)
		log_warn("close backend socket");
	w->fds_in_use -= (s->cfd != -1) + (s->bfd != -1);
	shm_release(w->shm, s->acc->li, w->slot);
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	free(s);
	worker_session_closed(w);
}
