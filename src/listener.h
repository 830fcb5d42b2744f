/*
 * listener.h: listening sockets, bound by the master before it forks.
 */
#ifndef ESOCKD_LISTENER_H
#define ESOCKD_LISTENER_H

#include "config.h"

int	listener_bind(const struct listener_conf *);
int	listener_set_options(int, const struct listener_conf *);
int	listener_listen(int, const struct listener_conf *);

#endif
