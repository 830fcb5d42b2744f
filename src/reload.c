/*
 * reload.c: a reload as a plan, then its commit or its roll back.
 *
 * As hitch does it: the new config becomes a new generation, and each of
 * its listeners gets a verdict against the current generation's:
 *   KEEP  the same bind: the listening socket (its accept queue with it)
 *         and its place in shared memory carry over, under a new name
 *         too, so a rename neither drops a queued client nor doubles the
 *         limit by counting the old connections somewhere else;
 *   NEW   bound now; its place in shared memory is the one a listener of
 *         that name has or had (its counts), or a fresh one, resumed.
 * A current listener that no new one keeps is DROP: the master closes
 * its socket at the commit, its draining workers close theirs, and until
 * they have, it stays in the stats, marked draining.  Everything that can
 * fail happens in reload_prepare (certificates, binds, room in shared
 * memory and in worker slots); a failure there closes what the plan bound
 * and changes nothing.
 */
#include "reload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "listener.h"
#include "log.h"
#include "proc.h"
#include "tls_ctx.h"
#include "tls_tickets.h"

/* The listener of g with lc's bind, or -1. */
static int
same_bind(const struct generation *g, const struct listener_conf *lc)
{
	for (size_t j = 0; j < g->conf->nlisteners; j++)
		if (addr_equal((const struct sockaddr *)&lc->addr,
		    (const struct sockaddr *)&g->conf->listeners[j].addr))
			return (int)j;
	return -1;
}

/*
 * A key the running master cannot change without a restart (reloadable =
 * 0 in the key table) kept its old value: tell the operator rather than
 * leave them guessing.
 */
static void
say_restart_only(const char *key, const char *running, void *arg)
{
	(void)arg;
	log_warnx("reload: %s changed; it applies at the next restart (still "
	    "\"%s\")", key, running);
}

/* KEEP or NEW for each listener of next. */
static void
judge(struct reload_plan *p)
{
	const struct esd_config *conf = p->next->conf;

	p->kept = 0;
	for (size_t i = 0; i < conf->nlisteners; i++) {
		p->from[i] = same_bind(p->cur, &conf->listeners[i]);
		p->kept += p->from[i] != -1;
	}
	p->dropped = p->cur->conf->nlisteners - p->kept;
}

/* Close the sockets the plan bound (the NEW ones). */
static void
unbind_new(struct reload_plan *p)
{
	for (size_t i = 0; i < p->next->conf->nlisteners; i++) {
		struct listener *l = &p->next->listeners[i];
		if (p->from[i] == -1 && l->fd != -1 && close(l->fd) == -1)
			log_warn("close listener '%s'", l->conf->name);
		l->fd = -1;
	}
}

/* Bind every NEW listener; on a failure, close them all again. */
static int
bind_new(struct reload_plan *p, struct config_diag *diag)
{
	const struct esd_config *conf = p->next->conf;

	for (size_t i = 0; i < conf->nlisteners; i++) {
		const struct listener_conf *lc = &conf->listeners[i];

		if (p->from[i] != -1)
			continue;
		if ((p->next->listeners[i].fd = listener_bind(lc)) != -1) {
			listener_served(&p->next->listeners[i]);
			continue;
		}
		config_diag_add(diag, "%s:%d: listener '%s': cannot bind %s (the "
		    "log says why); the previous configuration is kept",
		    conf->path, lc->line, lc->name, lc->bind);
		unbind_new(p);
		return -1;
	}
	return 0;
}

/*
 * Are there places enough in shared memory for the NEW listeners that
 * have none under their name?  (A KEEP listener takes its predecessor's.)
 */
static int
check_room(const struct reload_plan *p, struct shm_region *shm, uint64_t busy,
    struct config_diag *diag)
{
	const struct esd_config *conf = p->next->conf;
	int need = 0, room = 0;

	for (size_t i = 0; i < conf->nlisteners; i++)
		need += p->from[i] == -1 &&
		    shm_listener_find(shm, conf->listeners[i].name) == -1;
	for (int li = 0; li < ESD_MAX_LISTENERS; li++)
		room += !shm->listeners[li].in_use && !((busy >> li) & 1);
	if (need <= room)
		return 0;
	config_diag_add(diag, "%s: %d new listener names, but only %d of %d "
	    "counter sets are free while older workers drain; retry once "
	    "they have exited", conf->path, need, room, ESD_MAX_LISTENERS);
	return -1;
}

int
reload_prepare(struct reload_plan *p, struct generation *cur,
    struct esd_config *conf, unsigned id, int nworkers, int free_slots,
    struct shm_region *shm, uint64_t busy, struct config_diag *diag)
{
	memset(p, 0, sizeof(*p));
	p->cur = cur;
	config_keep_restart_only(cur->conf, conf, say_restart_only, NULL);
	if (free_slots < nworkers) {
		config_diag_add(diag, "%s: %d workers wanted but only %d worker "
		    "slots are free while older generations drain; retry once "
		    "they have exited (up to shutdown_timeout)", conf->path,
		    nworkers, free_slots);
		config_free(conf);
		return -1;
	}
	if ((p->next = generation_new(id, conf, nworkers)) == NULL) {
		config_diag_add(diag, "%s: out of memory for a new generation",
		    conf->path);
		return -1;
	}
	/* Both run, so that a bad certificate hides no unknown user. */
	if ((tls_ctx_load(conf, p->next->listeners, diag) == -1) |
	    (proc_resolve(conf, diag) == -1))
		goto fail;
	judge(p);
	if (check_room(p, shm, busy, diag) == -1 || bind_new(p, diag) == -1)
		goto fail;
	return 0;
fail:
	generation_free(p->next);
	p->next = NULL;
	return -1;
}

/* Bring a kept socket's options and backlog up to the new config;
 * listen(2) on a listening socket only sets the backlog. */
static void
update_kept(const struct listener *l)
{
	if (listener_set_options(l->fd, l->conf) == -1 ||
	    listener_listen(l->fd, l->conf) == -1)
		log_warnx("listener '%s': the socket is kept with its previous "
		    "options", l->conf->name);
}

/* Was cur's listener j kept by a listener of next? */
static int
kept(const struct reload_plan *p, size_t j)
{
	for (size_t i = 0; i < p->next->conf->nlisteners; i++)
		if (p->from[i] == (int)j)
			return 1;
	return 0;
}

void
reload_commit(struct reload_plan *p, struct shm_region *shm, uint64_t busy)
{
	struct generation *cur = p->cur, *next = p->next;

	/* KEEP first, so a NEW listener looking for its name's place
	 * finds what the renames left. */
	for (size_t i = 0; i < next->conf->nlisteners; i++) {
		struct listener *l = &next->listeners[i];
		const struct listener *was;

		if (p->from[i] == -1)
			continue;
		was = &cur->listeners[p->from[i]];
		l->fd = was->fd;
		l->si = was->si;
		memcpy(l->served, was->served, sizeof(l->served));
		update_kept(l);
		shm_listener_rename(shm, l->si, l->conf->name,
		    l->conf->max_connections);
		shm_backends_bind(shm, l->si, l->conf->backend.sockets,
		    l->conf->backend.nsockets);
		busy |= 1ULL << l->si;
	}
	for (size_t i = 0; i < next->conf->nlisteners; i++) {
		struct listener *l = &next->listeners[i];

		if (p->from[i] != -1)
			continue;
		l->si = shm_listener_claim(shm, l->conf->name,
		    l->conf->max_connections, &busy);
		shm_backends_bind(shm, l->si, l->conf->backend.sockets,
		    l->conf->backend.nsockets);
	}
	/* DROP last: a NEW listener of the same name took its place above. */
	for (size_t j = 0; j < cur->conf->nlisteners; j++) {
		struct listener *l = &cur->listeners[j];
		int taken = 0;

		if (kept(p, j))
			continue;
		if (l->fd != -1 && close(l->fd) == -1)
			log_warn("close listener '%s'", l->conf->name);
		l->fd = -1;
		for (size_t i = 0; i < next->conf->nlisteners; i++)
			taken |= next->listeners[i].si == l->si;
		if (!taken) {
			shm_listener_release(shm, l->si);
			tls_tickets_forget(l->si);
		}
	}
	/* Reservations last: a dropped listener's went with its release. */
	for (size_t i = 0; i < next->conf->nlisteners; i++)
		shm_listener_reserve(shm, next->listeners[i].si,
		    next->listeners[i].conf->reserved_connections);
	shm_set_global_limit(shm, next->conf->max_connections);
	tls_tickets_commit(next->listeners, next->conf->nlisteners);
}
