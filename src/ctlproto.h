/*
 * ctlproto.h: the control protocol: its line limit and its commands,
 * shared by the daemon (ctlcmd.c runs them) and esockdctl (its usage text
 * and its checks before sending).  Data only: no I/O, no libevent, so
 * esockdctl links it without the daemon.
 */
#ifndef ESOCKD_CTLPROTO_H
#define ESOCKD_CTLPROTO_H

#define CTL_LINE_MAX	1024	/* bytes in a command, without its newline */

/* The commands, in the order 'help' and esockdctl's usage list them. */
enum ctlproto_id {
	CTLPROTO_STATS, CTLPROTO_LISTENERS, CTLPROTO_SET, CTLPROTO_SUSPEND,
	CTLPROTO_RESUME, CTLPROTO_RELOAD, CTLPROTO_HELP, CTLPROTO_NCMDS
};

struct ctlproto_cmd {
	const char	*name;
	int		 min, max;	/* words after the name, "json" aside */
	int		 json;		/* may end in "json" */
	int		 changes;	/* changes the daemon: log who asked */
	const char	*usage;		/* "stats [json]" */
	const char	*help;		/* the daemon's line in 'help' */
	const char	*brief;		/* esockdctl's line in its usage */
};

extern const struct ctlproto_cmd ctlproto_cmds[CTLPROTO_NCMDS];

const struct ctlproto_cmd *ctlproto_find(const char *name);

#endif
