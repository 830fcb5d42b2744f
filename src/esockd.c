/*
 * esockd.c: command line: check a config (-t) or run the daemon.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "evlog.h"
#include "log.h"
#include "master.h"
#include "proc.h"
#include "tls_ctx.h"

#ifndef ESOCKD_VERSION
#define ESOCKD_VERSION	"0.1"
#endif

/* -K: every key the parser accepts, from the table it parses with. */
static void
print_keys(void)
{
	static const char *const types[] = {
		[KT_INT] = "integer", [KT_BOOL] = "boolean", [KT_PATH] = "path",
		[KT_ACCOUNT] = "account", [KT_CIDRS] = "block|list",
		[KT_HOOK] = NULL, [KT_GROUP] = "group", [KT_LIST] = "list",
	};
	_Static_assert(sizeof(types) / sizeof(types[0]) == KT_NTYPES,
	    "a config type without a name for -K");
	size_t n;
	const struct config_key *k = config_keys(&n);
	char def[128];

	for (size_t i = 0; i < n; i++) {
		config_key_default(&k[i], def, sizeof(def));
		printf("%s %s %s default=%s", config_scope_name(k[i].scope),
		    k[i].name, k[i].type == KT_HOOK ? k[i].form :
		    types[k[i].type], def);
		if (k[i].type == KT_INT)
			printf(" min=%lld max=%lld", k[i].min, k[i].max);
		if (k[i].required)
			printf(" required");
		if (!k[i].reloadable)
			printf(" restart-only");
		printf("\n");
	}
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: esockd [-t] [-c file]\n"
	    "  -c file  configuration (default " ESD_DEFAULT_CONF ")\n"
	    "  -t       check the configuration and exit: 0 valid, 1 not\n"
	    "  -K       list the configuration keys and exit\n"
	    "  -V       print the version\n");
}

int
main(int argc, char **argv)
{
	const char *path = ESD_DEFAULT_CONF;
	struct config_diag diag = { 0 };
	struct esd_config *conf;
	int ch, test = 0, rc;

	while ((ch = getopt(argc, argv, "c:thKV")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'K':
			print_keys();
			return 0;
		case 'V':
			printf("esockd %s\n", ESOCKD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "esockd: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr);
		return 2;
	}
	log_init("esockd", 0);
	evlog_init();
	conf = config_load_file(path, &diag);
	/*
	 * The same checks as a reload (reload.c): parse, then TLS and the
	 * names, both run so that every error is reported.  The certificates
	 * load here so that -t checks them; the master loads them again into
	 * its first generation.
	 */
	if (conf != NULL && ((tls_ctx_check(conf, &diag, test) == -1) |
	    (proc_resolve(conf, &diag) == -1))) {
		config_free(conf);
		conf = NULL;
	}
	if (conf == NULL) {
		for (size_t i = 0; i < diag.n; i++)
			fprintf(stderr, "%s\n", diag.lines[i]);
		fprintf(stderr, "esockd: %s: %zu error%s; nothing started\n",
		    path, diag.n, diag.n == 1 ? "" : "s");
		config_diag_free(&diag);
		return 1;
	}
	if (test) {
		fprintf(stderr, "esockd: %s: configuration is valid\n", path);
		config_free(conf);
		return 0;
	}
	rc = master_run(conf);	/* owns conf */
	return rc;
}
