/*
 * notify.c: the one place that talks to systemd (sd_notify, LISTEN_FDS).
 *
 * Everything goes through libsystemd's sd_notify, which does nothing when
 * NOTIFY_SOCKET is unset, so esockd run by hand or by another supervisor
 * behaves the same.  The watchdog is pinged from the master's event loop
 * at half the interval systemd asked for: a master stuck anywhere misses
 * it, which is the point.
 */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"

/*
 * The shortest watchdog ping interval: a tiny WATCHDOG_USEC must not turn
 * into a zero-length persistent timer, which would spin the master.
 */
#define WATCHDOG_MIN_PING_USEC	1000ULL

/* The watchdog timer on the master's loop; NULL when systemd wants none. */
static struct event *watchdog_ev;

/* Failures to reach the notify socket repeat with every ping: one line/s. */
static struct log_ratelimit tell_rl;

static void
tell(const char *state)
{
	int rc = sd_notify(0, state);
	uint64_t left_out;

	if (rc >= 0 || !log_ratelimit_pass(&tell_rl, &left_out))
		return;
	if (left_out == 0)
		log_warnx("sd_notify(\"%.*s\") failed: %s",
		    (int)strcspn(state, "\n"), state, strerror(-rc));
	else
		log_warnx("sd_notify(\"%.*s\") failed: %s; %llu more failures "
		    "since the last report", (int)strcspn(state, "\n"), state,
		    strerror(-rc), (unsigned long long)left_out);
}

static void
on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	tell("WATCHDOG=1");
}

/* Arm the watchdog if WATCHDOG_USEC asks for one. */
int
notify_init(struct event_base *base)
{
	uint64_t asked = 0, usec;
	struct timeval tv;
	int rc = sd_watchdog_enabled(0, &asked);

	if (rc < 0)
		log_warnx("WATCHDOG_USEC or WATCHDOG_PID is not valid (%s); "
		    "no watchdog", strerror(-rc));
	if (rc <= 0 || asked == 0)
		return 0;
	usec = asked / 2;
	if (usec < WATCHDOG_MIN_PING_USEC) {
		log_warnx("WATCHDOG_USEC=%llu is too short to honour; pinging "
		    "every %llu ms", (unsigned long long)asked,
		    WATCHDOG_MIN_PING_USEC / 1000);
		usec = WATCHDOG_MIN_PING_USEC;
	}
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	watchdog_ev = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
	if (watchdog_ev == NULL || event_add(watchdog_ev, &tv) == -1) {
		log_errorx("cannot arm the systemd watchdog timer");
		return -1;
	}
	tell("WATCHDOG=1");
	log_info("systemd watchdog: pinging every %llu ms",
	    (unsigned long long)(usec / 1000));
	return 0;
}

void
notify_ready(void)
{
	tell("READY=1");
}

/* RELOADING=1 with the clock reading that Type=notify-reload wants. */
void
notify_reloading(void)
{
	struct timespec ts;
	char msg[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
	tell(msg);
}

void
notify_stopping(void)
{
	tell("STOPPING=1");
}

void
notify_status(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	memcpy(msg, "STATUS=", 7);
	va_start(ap, fmt);
	vsnprintf(msg + 7, sizeof(msg) - 7, fmt, ap);
	va_end(ap);
	tell(msg);
}

void
notify_free(void)
{
	if (watchdog_ev != NULL)
		event_free(watchdog_ev);
	watchdog_ev = NULL;
}

/*
 * The sockets systemd passed (LISTEN_FDS, LISTEN_FDNAMES), unsetting the
 * variables so that no child sees them; returns their number or -errno.
 */
int
notify_listen_fds(char ***names)
{
	_Static_assert(NOTIFY_LISTEN_FDS_START == SD_LISTEN_FDS_START,
	    "the first passed descriptor is systemd's");
	return sd_listen_fds_with_names(1, names);
}

/* 1 if fd is a listening TCP socket of family, 0 if not, or -errno. */
int
notify_is_listening_inet(int fd, int family)
{
	return sd_is_socket_inet(fd, family, SOCK_STREAM, 1, 0);
}
