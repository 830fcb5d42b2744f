/*
 * activation.c: listening sockets passed by systemd (LISTEN_FDS), master
 * only.
 *
 * Under socket activation systemd binds the sockets of a .socket unit and
 * passes them when it starts esockd, each with its FileDescriptorName=.
 * Before the master binds a listener it asks here for a passed socket:
 * first one named like the listener, else one bound to the listener's
 * address.  A passed socket that no listener takes is closed with a
 * warning.  systemd keeps its own copy of every socket, so while esockd
 * restarts clients wait in the accept queue instead of being refused.
 *
 * libsystemd itself is called only from notify.c (notify_listen_fds and
 * notify_is_listening_inet), the one place esockd talks to systemd.
 */
#include "activation.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "listener.h"
#include "log.h"
#include "notify.h"

/* What systemd passed: fds NOTIFY_LISTEN_FDS_START .. + n - 1. */
static struct {
	int	  loaded;	/* LISTEN_FDS read (once, then unset) */
	int	  n;
	char	**names;	/* FileDescriptorName= of each, or "unknown" */
	char	 *taken;	/* taken[i]: a listener owns fd i */
} passed;

/* Read LISTEN_FDS once; notify_listen_fds unsets the variables. */
static void
load(void)
{
	int n;

	if (passed.loaded)
		return;
	passed.loaded = 1;
	n = notify_listen_fds(&passed.names);
	if (n < 0) {
		log_warnx("LISTEN_FDS from systemd is not valid (%s); binding "
		    "every listener here", strerror(-n));
		return;
	}
	if (n == 0)
		return;
	if ((passed.taken = calloc((size_t)n, 1)) == NULL) {
		log_error("cannot track the %d sockets systemd passed", n);
		return;
	}
	passed.n = n;
	log_info("systemd passed %d listening socket%s", n, n == 1 ? "" : "s");
}

/* The name systemd gave fd index i, or "" when it gave none. */
static const char *
name_of(int i)
{
	return passed.names != NULL && passed.names[i] != NULL ?
	    passed.names[i] : "";
}

/* The address fd is bound to, printed as a bind value. */
static void
bound_to(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		snprintf(buf, len, "(getsockname: %s)", strerror(errno));
	else
		addr_format((struct sockaddr *)&ss, buf, len);
}

/* Does fd i fit lc: a listening stream socket of lc's family? */
static int
fits(int i, const struct listener_conf *lc)
{
	int fd = NOTIFY_LISTEN_FDS_START + i;
	int r = notify_is_listening_inet(fd, lc->addr.ss_family);
	char addr[INET6_ADDRSTRLEN + 16];

	if (r > 0)
		return 1;
	bound_to(fd, addr, sizeof(addr));
	log_warnx("listener '%s': the socket systemd passed as '%s' (fd %d, "
	    "%s) is not a listening TCP socket of the family of %s; not "
	    "using it", lc->name, name_of(i), fd, addr, lc->bind);
	return 0;
}

/* Make a passed socket behave as one listener_bind made. */
static int
adopt(int i, const struct listener_conf *lc)
{
	int fd = NOTIFY_LISTEN_FDS_START + i, fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
		log_error("listener '%s': cannot make fd %d non-blocking",
		    lc->name, fd);
		return -1;
	}
	if (listener_set_options(fd, lc) == -1 || listener_listen(fd, lc) == -1)
		return -1;
	passed.taken[i] = 1;
	log_info("listener '%s': using the socket passed by systemd (fd %d)",
	    lc->name, fd);
	return fd;
}

/*
 * A passed socket for lc, matched by FileDescriptorName= or else by
 * address, made ready to accept on; -1 when there is none.
 */
int
activation_take(const struct listener_conf *lc)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char addr[INET6_ADDRSTRLEN + 16];

	load();
	for (int i = 0; i < passed.n; i++) {
		if (passed.taken[i] || strcmp(name_of(i), lc->name) != 0 ||
		    !fits(i, lc))
			continue;
		sl = sizeof(ss);
		if (getsockname(NOTIFY_LISTEN_FDS_START + i, (struct sockaddr *)&ss,
		    &sl) == 0 && !addr_equal((struct sockaddr *)&ss,
		    (const struct sockaddr *)&lc->addr)) {
			addr_format((struct sockaddr *)&ss, addr, sizeof(addr));
			log_warnx("listener '%s': the socket systemd passed "
			    "under this name is bound to %s, not to bind %s; "
			    "it serves %s", lc->name, addr, lc->bind, addr);
		}
		return adopt(i, lc);
	}
	for (int i = 0; i < passed.n; i++) {
		sl = sizeof(ss);
		if (passed.taken[i] || getsockname(NOTIFY_LISTEN_FDS_START + i,
		    (struct sockaddr *)&ss, &sl) == -1 ||
		    !addr_equal((struct sockaddr *)&ss,
		    (const struct sockaddr *)&lc->addr) || !fits(i, lc))
			continue;
		return adopt(i, lc);
	}
	return -1;
}

/* Close every passed socket no listener took; forget what was passed. */
void
activation_done(void)
{
	char addr[INET6_ADDRSTRLEN + 16];

	load();
	for (int i = 0; i < passed.n; i++) {
		int fd = NOTIFY_LISTEN_FDS_START + i;
		if (passed.taken[i])
			continue;
		bound_to(fd, addr, sizeof(addr));
		log_warnx("the socket systemd passed as '%s' (fd %d, %s) is "
		    "used by no listener (none has that name or bind); closing "
		    "it", name_of(i), fd, addr);
		if (close(fd) == -1)
			log_warn("close fd %d", fd);
	}
	for (int i = 0; passed.names != NULL && i < passed.n; i++)
		free(passed.names[i]);
	free(passed.names);
	free(passed.taken);
	passed.names = NULL;
	passed.taken = NULL;
	passed.n = 0;
}
