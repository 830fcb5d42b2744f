/*
 * ctlproto.c: the control protocol's command table, the one list of
 * what the daemon accepts and esockdctl offers: each command's name, how
 * many words it takes, whether it takes "json", and its usage lines.
 */
#include "ctlproto.h"

#include <string.h>

/* Both usage lines of a command sit side by side here: 'help' speaks as
 * the daemon, esockdctl's usage as the client ("the daemon's list"). */
const struct ctlproto_cmd ctlproto_cmds[CTLPROTO_NCMDS] = {
	[CTLPROTO_STATS] = { "stats", 0, 0, 1, 0, "stats [json]",
	  "the master's status and each listener's counters",
	  "status and counters per listener" },
	[CTLPROTO_LISTENERS] = { "listeners", 0, 0, 1, 0, "listeners [json]",
	  "each listener's address, backends, limit and state",
	  "addresses, backends, limits and state" },
	[CTLPROTO_SET] = { "set", 3, 3, 0, 1, "set max_connections NAME N",
	  "change a listener's limit now, in every worker",
	  "change a listener's limit now" },
	[CTLPROTO_SUSPEND] = { "suspend", 1, 1, 0, 1, "suspend NAME",
	  "stop accepting on a listener; open connections carry on",
	  "stop accepting; open connections carry on" },
	[CTLPROTO_RESUME] = { "resume", 1, 1, 0, 1, "resume NAME",
	  "accept on a suspended listener again", "accept again" },
	[CTLPROTO_RELOAD] = { "reload", 0, 0, 0, 1, "reload",
	  "read the configuration file again and apply it",
	  "read the configuration file again" },
	[CTLPROTO_HELP] = { "help", 0, 0, 0, 0, "help", "this list",
	  "the daemon's list of commands" },
};

/* The command named name, or NULL if there is none. */
const struct ctlproto_cmd *
ctlproto_find(const char *name)
{
	for (int i = 0; i < CTLPROTO_NCMDS; i++)
		if (strcmp(ctlproto_cmds[i].name, name) == 0)
			return &ctlproto_cmds[i];
	return NULL;
}
