/*
 * splice_pool.c: the worker's pool of empty pipes for splice(2).
 *
 * Bulk flows move through a pipe with splice, so their bytes never visit
 * user space.  A pipe is taken only while a direction has data to move
 * and is given back empty, so idle connections hold none; the pool keeps
 * a few so a busy flow costs no pipe2/close per wakeup.  Pipes count
 * against the worker's descriptor budget like sockets do.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "worker.h"

#define POOL_MAX	(int)(sizeof(((struct worker *)0)->pipes) / \
			    sizeof(((struct worker *)0)->pipes[0]))

/* Take an empty pipe; -1 when none can be had (the caller copies). */
int
pipe_get(struct worker *w, int p[2])
{
	if (w->npipes > 0) {
		w->npipes--;
		p[0] = w->pipes[w->npipes][0];
		p[1] = w->pipes[w->npipes][1];
		return 0;
	}
	/* A pipe must not take the room of the next relayed connection. */
	if (!worker_fds_fit(w, 2 + 2))
		return -1;
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) == -1) {
		log_debug("pipe2: no splice for this flow");
		return -1;
	}
	w->fds_in_use += 2;
	return 0;
}

/* Close a pipe that may still hold bytes (a session ending). */
void
pipe_close(struct worker *w, int p[2])
{
	if (p[0] == -1)
		return;
	if (close(p[0]) == -1)
		log_warn("close pipe");
	if (close(p[1]) == -1)
		log_warn("close pipe");
	w->fds_in_use -= 2;
	p[0] = p[1] = -1;
}

/* Give back an empty pipe. */
void
pipe_put(struct worker *w, int p[2])
{
	if (w->npipes == POOL_MAX) {
		pipe_close(w, p);
		return;
	}
	w->pipes[w->npipes][0] = p[0];
	w->pipes[w->npipes][1] = p[1];
	w->npipes++;
	p[0] = p[1] = -1;
}

void
pipe_pool_free(struct worker *w)
{
	while (w->npipes > 0) {
		w->npipes--;
		pipe_close(w, w->pipes[w->npipes]);
	}
}
