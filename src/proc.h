/*
 * proc.h: what both process roles do with the parsed config: resolve
 * its user and group names, and drop privileges.
 */
#ifndef ESOCKD_PROC_H
#define ESOCKD_PROC_H

#include "config.h"

int	proc_resolve(struct esd_config *, struct config_diag *);
int	proc_drop_privileges(const struct esd_config *);

#endif
