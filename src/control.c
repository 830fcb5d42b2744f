/*
 * control.c: the master's control socket, the daemon side of esockdctl(8):
 * the socket file, its connections and their limits.  What the commands
 * do and how their replies read is in ctlcmd.c.
 *
 * Operator traffic only, on the master's event loop: one command per
 * connection.  The client sends one line, gets the reply, and the
 * connection closes.  The connections and their limits (a command of at
 * most CTL_LINE_MAX bytes, CTL_TIMEOUT_S to send it and as long to take
 * the reply, CTL_MAX_CONNS open) are oneshot.c's.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "ctlcmd.h"
#include "log.h"
#include "master.h"
#include "oneshot.h"

#define CTL_TIMEOUT_S	5	/* to send the command, then to take the reply */
#define CTL_MAX_CONNS	32	/* control connections open at once */
#define CTL_BACKLOG	CTL_MAX_CONNS	/* a burst up to the cap waits */

struct control {
	struct master		*m;
	struct oneshot		*os;
	struct oneshot_cfg	 cfg;
	char			 path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int			 made;		/* we bound path: unlink at exit */
	dev_t			 dev;		/* ...if it is still our file */
	ino_t			 ino;
};

/* Run one command line; the peer's credentials go to the log. */
static void
run(struct control *c, struct oneshot_conn *oc, char *line, size_t n,
    struct evbuffer *out)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	long uid = -1, pid = -1;

	if (getsockopt(oneshot_fd(oc), SOL_SOCKET, SO_PEERCRED, &cred,
	    &len) == 0) {
		uid = (long)cred.uid;
		pid = (long)cred.pid;
	}
	ctlcmd_run(c->m, line, n, uid, pid, out);
}

/* One line ending in a newline, or in the client's FIN. */
static int
on_request(struct oneshot_conn *oc, struct evbuffer *in, int eof,
    struct evbuffer *out, void *arg)
{
	char *line, last[CTL_LINE_MAX + 2];
	size_t n;

	if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		run(arg, oc, line, n, out);
		free(line);
		return 1;
	}
	if ((n = evbuffer_get_length(in)) > CTL_LINE_MAX + 1) {
		ctlcmd_too_long(out);	/* no newline where one must be */
		return 1;
	}
	if (!eof || n == 0)
		return eof ? -1 : 0;
	/* "printf stats | nc -U": a last line without its newline. */
	evbuffer_remove(in, last, n);
	last[n] = '\0';
	run(arg, oc, last, n, out);
	return 1;
}

static void
on_late(struct evbuffer *out, void *arg)
{
	(void)arg;
	ctlcmd_err(out, "no command within %d s; send one line ending in a "
	    "newline", CTL_TIMEOUT_S);
}

/*
 * Running as root, make a missing socket directory (one level, 0755), as
 * systemd's RuntimeDirectory= would: the default /run/esockd is gone
 * after every boot.  0 when made; -1 (errno set) when not.
 */
static int
make_dir(const char *path, const char *dir)
{
	if (geteuid() != 0) {
		errno = ENOENT;
		return -1;
	}
	if (mkdir(dir, 0755) == -1)
		return -1;
	log_info("control socket %s: made its directory %s (mode 0755)", path,
	    dir);
	return 0;
}

/* The socket's directory must exist: say what would be right if not. */
static int
check_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], *slash;
	struct stat st;
	int missing;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		return 0;		/* the parser allows absolute paths only */
	slash[slash == dir ? 1 : 0] = '\0';
	if (stat(dir, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		missing = 1;		/* a file where the directory should be */
	} else {
		if (errno == ENOENT && make_dir(path, dir) == 0)
			return 0;
		missing = errno == ENOENT || errno == ENOTDIR;
	}
	if (missing)
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
	c->m = m;
	if (conf->control_socket[0] == '\0') {
		log_info("no control socket (control_socket is \"\")");
		return c;
	}
	snprintf(c->path, sizeof(c->path), "%s", conf->control_socket);
	if (check_dir(c->path) == -1 || clear_path(c->path) == -1 ||
	    (fd = make_socket(c, conf)) == -1)
		goto err;
	c->cfg = (struct oneshot_cfg){ .name = "control socket",
	    .max_conns = CTL_MAX_CONNS, .timeout_s = CTL_TIMEOUT_S,
	    .read_max = CTL_LINE_MAX + 2, .request = on_request,
	    .late = on_late, .arg = c };
	if ((c->os = oneshot_start(base, fd, &c->cfg)) == NULL)
		goto err;
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

const struct oneshot_counters *
control_counters(const struct control *c)
{
	return c != NULL && c->os != NULL ? oneshot_counters(c->os) : NULL;
}

/* Close every control connection and remove the socket we made. */
void
control_free(struct control *c)
{
	struct stat st;

	if (c == NULL)
		return;
	oneshot_free(c->os);
	if (c->made && lstat(c->path, &st) == 0 && st.st_dev == c->dev &&
	    st.st_ino == c->ino && unlink(c->path) == -1)
		log_warn("control socket %s: cannot remove it", c->path);
	free(c);
}
