/*
 * ctlcmd.h: the control socket's commands, run on one line of text.
 */
#ifndef ESOCKD_CTLCMD_H
#define ESOCKD_CTLCMD_H

#include <stddef.h>

#include <event2/buffer.h>

#include "ctlproto.h"	/* CTL_LINE_MAX and the commands */

struct master;

void	ctlcmd_run(struct master *, char *line, size_t n, long uid, long pid,
	    struct evbuffer *out);
void	ctlcmd_err(struct evbuffer *out, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
void	ctlcmd_too_long(struct evbuffer *out);

#endif
