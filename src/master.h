/*
 * master.h: the supervising process.
 */
#ifndef ESOCKD_MASTER_H
#define ESOCKD_MASTER_H

#include "config.h"

int	master_run(struct esd_config *);

#endif
