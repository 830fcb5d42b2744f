/*
 * activation.h: listening sockets passed by systemd, master only.
 */
#ifndef ESOCKD_ACTIVATION_H
#define ESOCKD_ACTIVATION_H

#include "config.h"

int	activation_take(const struct listener_conf *);
void	activation_done(void);

#endif
