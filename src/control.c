/*
 * control.c: the master's control socket, the daemon side of esockdctl(8):
 * the socket file, its connections and their limits.  What the commands
 * do and how their replies read is in ctlcmd.c.
 *
 * Operator traffic only, on the master's event loop: one command per
 * connection.  The client sends one line, gets the reply, and the
 * connection closes.
 *
 * A broken or hostile client costs bounded memory and time: a command is
 * at most CTL_LINE_MAX bytes; it must arrive whole within CTL_TIMEOUT_S
 * seconds of the connect, and the reply be taken within as long again
 * (deadlines, not idle timers, so a trickle cannot stretch them); and at
 * most CTL_MAX_CONNS connections are open at once.  At that cap a new
 * connection pushes out the oldest one that has not sent its command yet,
 * so a pile of idle connections cannot lock the operator out; the
 * pushed-out are counted and logged at most once a second.
 *
 * The socket is bound under umask 0177, so it is never wider than 0600;
 * with control_group it is then given that group and mode 0660.  A stale
 * socket left by a dead daemon is replaced; a live one, or anything that
 * is not a socket, makes startup fail.  Only the socket this daemon made
 * is unlinked at exit.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
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
#include <event2/listener.h>

#include "ctlcmd.h"
#include "log.h"
#include "master.h"

#define CTL_TIMEOUT_S	5	/* to send the command, then to take the reply */
#define CTL_MAX_CONNS	32	/* control connections open at once */
#define CTL_BACKLOG	CTL_MAX_CONNS	/* a burst up to the cap waits */

struct ctl_conn {
	struct control		*c;
	struct bufferevent	*bev;
	struct event		*deadline;	/* for the command, then the reply */
	TAILQ_ENTRY(ctl_conn)	 entry;
	int			 replied;	/* reply queued: reading is over */
	long			 uid, pid;	/* the peer, for the log; -1 unknown */
};

struct control {
	struct event_base	*base;
	struct master		*m;
	struct evconnlistener	*lev;
	struct event		*resume;	/* accept again after EMFILE */
	char			 path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int			 made;		/* we bound path: unlink at exit */
	dev_t			 dev;		/* ...if it is still our file */
	ino_t			 ino;
	TAILQ_HEAD(, ctl_conn)	 conns;		/* oldest first */
	int			 nconns;
	uint64_t		 shed;		/* pushed out at CTL_MAX_CONNS */
	struct log_ratelimit	 rl_shed;
	struct log_ratelimit	 rl_accept;
};

static void
conn_free(struct ctl_conn *cc)
{
	TAILQ_REMOVE(&cc->c->conns, cc, entry);
	cc->c->nconns--;
	if (cc->deadline != NULL)
		event_free(cc->deadline);
	bufferevent_free(cc->bev);
	free(cc);
}

/*
 * Answer one line and stop reading; the write callback closes once the
 * reply is out, or the deadline, CTL_TIMEOUT_S from now, if it is not.
 */
static void
answer(struct ctl_conn *cc, char *line, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(cc->bev);
	struct timeval tv = { CTL_TIMEOUT_S, 0 };

	cc->replied = 1;
	bufferevent_disable(cc->bev, EV_READ);
	evtimer_add(cc->deadline, &tv);
	if (line != NULL)
		ctlcmd_run(cc->c->m, line, n, cc->uid, cc->pid, out);
	else
		ctlcmd_too_long(out);
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	if (cc->replied)
		return;
	if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		answer(cc, line, n);
		free(line);
	} else if (evbuffer_get_length(in) > CTL_LINE_MAX + 1) {
		answer(cc, NULL, 0);	/* no newline where one must be */
	}
}

/* The whole reply is out: one command per connection, so close. */
static void
on_written(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;

	if (cc->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(cc);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (!cc->replied && (what & BEV_EVENT_EOF) && n > 0 &&
	    n <= CTL_LINE_MAX + 1) {
		/* "printf stats | nc -U": a last line without its newline. */
		char line[CTL_LINE_MAX + 2];
		evbuffer_remove(in, line, n);
		line[n] = '\0';
		answer(cc, line, n);
		return;
	}
	conn_free(cc);	/* EOF without a command, or an error */
}

/* No whole command in time: say so; no reply taken in time: close. */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_conn *cc = arg;
	struct timeval tv = { CTL_TIMEOUT_S, 0 };

	(void)fd;
	(void)what;
	if (cc->replied) {
		conn_free(cc);
		return;
	}
	cc->replied = 1;
	bufferevent_disable(cc->bev, EV_READ);
	evtimer_add(cc->deadline, &tv);
	ctlcmd_err(bufferevent_get_output(cc->bev), "no command within %d s; "
	    "send one line ending in a newline", CTL_TIMEOUT_S);
}

/*
 * At the cap, close the oldest connection still waiting for its command.
 * Returns -1 when every open one is busy taking its reply.
 */
static int
make_room(struct control *c)
{
	struct ctl_conn *cc;
	uint64_t suppressed;

	TAILQ_FOREACH(cc, &c->conns, entry)
		if (!cc->replied)
			break;
	c->shed++;
	if (log_ratelimit_pass(&c->rl_shed, &suppressed))
		log_warnx("control socket: %d connections open, the most "
		    "allowed; %s (%llu such connections closed in all)",
		    CTL_MAX_CONNS, cc ? "closed the oldest idle one" :
		    "refused a new one", (unsigned long long)c->shed);
	if (cc == NULL)
		return -1;
	conn_free(cc);
	return 0;
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct control *c = arg;
	struct timeval tv = { CTL_TIMEOUT_S, 0 };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct ctl_conn *cc;

	(void)lev;
	(void)sa;
	(void)salen;
	if (c->nconns >= CTL_MAX_CONNS && make_room(c) == -1) {
		close(fd);
		return;
	}
	if ((cc = calloc(1, sizeof(*cc))) == NULL ||
	    (cc->deadline = evtimer_new(c->base, on_deadline, cc)) == NULL ||
	    (cc->bev = bufferevent_socket_new(c->base, fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		log_warnx("control socket: out of memory; connection closed");
		if (cc != NULL && cc->deadline != NULL)
			event_free(cc->deadline);
		free(cc);
		close(fd);
		return;
	}
	cc->c = c;
	cc->uid = cc->pid = -1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		cc->uid = (long)cred.uid;
		cc->pid = (long)cred.pid;
	}
	TAILQ_INSERT_TAIL(&c->conns, cc, entry);
	c->nconns++;
	bufferevent_setcb(cc->bev, on_read, on_written, on_event, cc);
	bufferevent_setwatermark(cc->bev, EV_READ, 0, CTL_LINE_MAX + 2);
	if (evtimer_add(cc->deadline, &tv) == -1 ||
	    bufferevent_enable(cc->bev, EV_READ) == -1) {
		log_warnx("control socket: cannot watch a connection");
		conn_free(cc);
	}
}

/* accept(2) failed for want of descriptors or memory: wait a second. */
static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct control *c = arg;
	struct timeval tv = { 1, 0 };
	int e = EVUTIL_SOCKET_ERROR();
	uint64_t suppressed;

	if (log_ratelimit_pass(&c->rl_accept, &suppressed))
		log_warnx("control socket: accept: %s; pausing for 1 s (%llu "
		    "more since the last report)", strerror(e),
		    (unsigned long long)suppressed);
	evconnlistener_disable(lev);
	if (evtimer_add(c->resume, &tv) == -1)
		log_errorx("control socket: cannot arm the resume timer");
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct control *c = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(c->lev);
}

/* The socket's directory must exist: say what would be right if not. */
static int
check_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		return 0;		/* the parser allows absolute paths only */
	slash[slash == dir ? 1 : 0] = '\0';
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	if (errno == ENOENT || errno == ENOTDIR || !S_ISDIR(st.st_mode))
		log_errorx("control socket %s: directory %s does not exist; "
		    "create it (for example: install -d -m 0755 %s) or set "
		    "control_socket to a path in an existing directory", path,
		    dir, dir);
	else
		log_error("control socket %s: cannot use directory %s", path,
		    dir);
	return -1;
}

/*
 * Make way for our socket: nothing there, or a stale socket (nobody
 * accepts on it: connect is refused) that is removed.  A live socket or
 * any other file is left alone and fails startup.
 */
static int
clear_path(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		log_error("control socket %s: cannot check the path", path);
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_errorx("control socket %s: the path exists and is not a "
		    "socket; remove it, or set control_socket to another path",
		    path);
		return -1;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		log_error("control socket %s: socket", path);
		return -1;
	}
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
		close(fd);
		log_errorx("control socket %s: another process is listening on "
		    "it (is esockd already running?); stop it, or set "
		    "control_socket to another path", path);
		return -1;
	}
	if (errno != ECONNREFUSED && errno != ENOENT) {
		log_error("control socket %s: cannot tell whether a daemon "
		    "listens on it", path);
		close(fd);
		return -1;
	}
	close(fd);
	if (unlink(path) == -1 && errno != ENOENT) {
		log_error("control socket %s: cannot remove the stale socket",
		    path);
		return -1;
	}
	log_info("control socket %s: replaced a stale socket (no daemon "
	    "listened on it)", path);
	return 0;
}

/* Bind and listen at c->path, 0600 from the first instant (or 0660). */
static int
make_socket(struct control *c, const struct esd_config *conf)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", c->path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		log_error("control socket %s: socket", c->path);
		return -1;
	}
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc == -1) {
		log_error("control socket %s: cannot create it (the master "
		    "needs write access to its directory)", c->path);
		goto err;
	}
	if (lstat(c->path, &st) == 0) {
		c->made = 1;
		c->dev = st.st_dev;
		c->ino = st.st_ino;
	}
	/* Not chown/chmod: neither may follow a link swapped in meanwhile. */
	if (conf->control_group[0] != '\0' &&
	    (lchown(c->path, (uid_t)-1, conf->control_gid) == -1 ||
	    fchmodat(AT_FDCWD, c->path, 0660, AT_SYMLINK_NOFOLLOW) == -1)) {
		log_error("control socket %s: cannot give it group '%s' and "
		    "mode 0660", c->path, conf->control_group);
		goto err;
	}
	if (listen(fd, CTL_BACKLOG) == -1) {
		log_error("control socket %s: listen", c->path);
		goto err;
	}
	return fd;
err:
	close(fd);
	return -1;
}

/*
 * Open the control socket named by control_socket on the master's loop.
 * With control_socket = "" there is none, and an idle struct is returned.
 * NULL (logged) means startup must fail.
 */
struct control *
control_start(struct event_base *base, struct master *m)
{
	const struct esd_config *conf = master_config(m);
	struct control *c;
	int fd;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_errorx("control socket: out of memory");
		return NULL;
	}
	c->base = base;
	c->m = m;
	TAILQ_INIT(&c->conns);
	if (conf->control_socket[0] == '\0') {
		log_info("no control socket (control_socket is \"\")");
		return c;
	}
	snprintf(c->path, sizeof(c->path), "%s", conf->control_socket);
	if (check_dir(c->path) == -1 || clear_path(c->path) == -1 ||
	    (fd = make_socket(c, conf)) == -1)
		goto err;
	if ((c->lev = evconnlistener_new(base, on_accept, c,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)) == NULL) {
		close(fd);
		log_errorx("control socket %s: cannot watch it", c->path);
		goto err;
	}
	evconnlistener_set_error_cb(c->lev, on_accept_error);
	if ((c->resume = evtimer_new(base, on_resume, c)) == NULL) {
		log_errorx("control socket %s: cannot make a timer", c->path);
		goto err;
	}
	if (conf->control_group[0] != '\0')
		log_info("control socket %s (mode 0660, group %s)", c->path,
		    conf->control_group);
	else
		log_info("control socket %s (mode 0600)", c->path);
	return c;
err:
	control_free(c);
	return NULL;
}

/* Close every control connection and remove the socket we made. */
void
control_free(struct control *c)
{
	struct ctl_conn *cc;
	struct stat st;

	if (c == NULL)
		return;
	while ((cc = TAILQ_FIRST(&c->conns)) != NULL)
		conn_free(cc);
	if (c->lev != NULL)
		evconnlistener_free(c->lev);
	if (c->resume != NULL)
		event_free(c->resume);
	if (c->made && lstat(c->path, &st) == 0 && st.st_dev == c->dev &&
	    st.st_ino == c->ino && unlink(c->path) == -1)
		log_warn("control socket %s: cannot remove it", c->path);
	free(c);
}
