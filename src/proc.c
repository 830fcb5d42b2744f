/*
 * proc.c: what both process roles do: resolve the config's names, drop
 * privileges, watch signals through the event loop, close inherited
 * descriptors.
 *
 * proc_resolve turns the names of 'user', 'group' and 'control_group'
 * into ids; the parser (config.c) stays pure text-to-struct and does no
 * NSS lookups.  It runs wherever a config is loaded to be used: "esockd
 * -t", the master's start (both in esockd.c) and every reload (master.c),
 * so a name missing from this host is reported at its FILE:LINE before
 * anything is started.
 *
 * The ids are kept in the config, and a worker takes them from the copy
 * fork gives it, rather than looking the names up again after fork: the
 * ids a worker drops to are then exactly those -t or the reload checked,
 * a respawned worker cannot pick up a different uid because the user
 * database changed meanwhile, and no worker waits on NSS (which may be
 * LDAP or sssd over a socket) before serving.  An error found in a
 * worker could no longer be reported at FILE:LINE, only logged.
 *
 * proc_drop_privileges is the worker's first act (worker_run).
 */
#include "proc.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Look up 'user': its uid, and its primary group for when 'group' is "". */
static int
resolve_user(struct esd_config *c, struct config_diag *diag, gid_t *user_gid)
{
	struct passwd *pw;

	if (c->user[0] == '\0')
		return 0;
	if ((pw = getpwnam(c->user)) == NULL) {
		config_diag_add(diag, "%s:%d: user \"%s\" does not exist on this "
		    "host; create it or name an existing user (for example "
		    "\"nobody\")", c->path, c->user_line, c->user);
		return -1;
	}
	c->uid = pw->pw_uid;
	*user_gid = pw->pw_gid;
	return 0;
}

/* Look up one group key ('group' or 'control_group') into *gid. */
static int
resolve_group(const struct esd_config *c, struct config_diag *diag,
    const char *key, const char *name, int line, gid_t *gid)
{
	struct group *gr;

	if (name[0] == '\0')
		return 0;
	if ((gr = getgrnam(name)) == NULL) {
		config_diag_add(diag, "%s:%d: '%s' = \"%s\" is not a group on "
		    "this host; create it or name an existing group", c->path,
		    line, key, name);
		return -1;
	}
	*gid = gr->gr_gid;
	return 0;
}

/*
 * Fill uid, gid and control_gid from the names.  Every name is looked
 * up, so that all that are missing are reported, each at its line.
 */
int
proc_resolve(struct esd_config *c, struct config_diag *diag)
{
	gid_t user_gid = 0;
	int rc = 0;

	rc |= resolve_user(c, diag, &user_gid);
	rc |= resolve_group(c, diag, "group", c->group, c->group_line, &c->gid);
	rc |= resolve_group(c, diag, "control_group", c->control_group,
	    c->control_group_line, &c->control_gid);
	if (c->user[0] != '\0' && c->group[0] == '\0')
		c->gid = user_gid;
	return rc == 0 ? 0 : -1;
}

/*
 * Become conf->user and its group for good: setgroups, setgid, setuid,
 * then prove that root cannot be regained.  A master already running as
 * that user and group (User= in a unit) skips the changes, not the proof.
 */
int
proc_drop_privileges(const struct esd_config *conf)
{
	gid_t gid = conf->gid;

	if (conf->user[0] == '\0')
		return 0;
	if (getuid() != conf->uid || geteuid() != conf->uid ||
	    getgid() != gid || getegid() != gid) {
		if (setgroups(1, &gid) == -1) {
			log_error("cannot drop privileges to user '%s': "
			    "setgroups(%lu)", conf->user, (unsigned long)gid);
			return -1;
		}
		if (setgid(gid) == -1) {
			log_error("cannot drop privileges to user '%s': "
			    "setgid(%lu)", conf->user, (unsigned long)gid);
			return -1;
		}
		if (setuid(conf->uid) == -1) {
			log_error("cannot drop privileges to user '%s': "
			    "setuid(%lu)", conf->user, (unsigned long)conf->uid);
			return -1;
		}
	}
	if (conf->uid != 0 && (setuid(0) != -1 || seteuid(0) != -1)) {
		log_errorx("dropped to user '%s' (uid %lu) but could become "
		    "root again (a capability such as CAP_SETUID is left); "
		    "exiting", conf->user, (unsigned long)conf->uid);
		return -1;
	}
	log_info("running as user '%s' (uid %lu, gid %lu)", conf->user,
	    (unsigned long)conf->uid, (unsigned long)gid);
	return 0;
}

int
proc_signals(struct event_base *base, const int *sigs, size_t n,
    const int *ignore, size_t nignore, event_callback_fn cb, void *arg,
    struct event **evs)
{
	for (size_t i = 0; i < nignore; i++)
		if (signal(ignore[i], SIG_IGN) == SIG_ERR) {
			log_error("cannot ignore signal %d", ignore[i]);
			return -1;
		}
	for (size_t i = 0; i < n; i++) {
		evs[i] = evsignal_new(base, sigs[i], cb, arg);
		if (evs[i] == NULL || evsignal_add(evs[i], NULL) == -1) {
			log_errorx("cannot watch signal %d", sigs[i]);
			return -1;
		}
	}
	return 0;
}

static int
cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

void
proc_close_fds_except(const int *keep, size_t n)
{
	int sorted[ESD_MAX_LISTENERS];
	unsigned lo = 3;

	if (n > ESD_MAX_LISTENERS)
		n = ESD_MAX_LISTENERS;
	memcpy(sorted, keep, n * sizeof(int));
	qsort(sorted, n, sizeof(int), cmp_int);
	for (size_t i = 0; i < n; i++) {
		if (sorted[i] < 0)
			continue;	/* a socket closed by a reload */
		if ((unsigned)sorted[i] > lo)
			close_range(lo, (unsigned)sorted[i] - 1, 0);
		lo = (unsigned)sorted[i] + 1;
	}
	close_range(lo, ~0U, 0);
}
