/*
 * test_config.c: esockd.conf validation, fed from strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "proc.h"

#define LISTENER(extra)							\
	"listeners = ( { name = \"web\"; bind = \"127.0.0.1:5000\";\n"	\
	extra								\
	"  backend = { socket = \"/run/h.sock\"; }; } );\n"

/* Load text; return the diag (caller frees) and whether it parsed. */
static struct esd_config *
load(const char *text, struct config_diag *d)
{
	memset(d, 0, sizeof(*d));
	return config_load_string(text, "t.conf", d);
}

/* Assert exactly one error, starting with prefix and holding needle. */
static void
expect_error(const char *text, const char *prefix, const char *needle)
{
	struct config_diag d;
	struct esd_config *c = load(text, &d);

	assert_null(c);
	if (d.n != 1)
		for (size_t i = 0; i < d.n; i++)
			print_message("diag: %s\n", d.lines[i]);
	assert_int_equal(d.n, 1);
	if (strncmp(d.lines[0], prefix, strlen(prefix)) != 0 ||
	    strstr(d.lines[0], needle) == NULL)
		fail_msg("got \"%s\", want prefix \"%s\" and \"%s\"",
		    d.lines[0], prefix, needle);
	config_diag_free(&d);
}

static void
minimal_config_gets_defaults(void **state)
{
	struct config_diag d;
	struct esd_config *c = load(LISTENER(""), &d);
	struct listener_conf *l;

	(void)state;
	assert_non_null(c);
	assert_int_equal(d.n, 0);
	assert_int_equal(c->workers, 0);		/* auto */
	assert_int_equal(c->log_level, LOG_LVL_INFO);
	assert_int_equal(c->shutdown_timeout, 30);
	assert_int_equal(c->nlisteners, 1);
	l = &c->listeners[0];
	assert_string_equal(l->name, "web");
	assert_int_equal(l->backlog, 511);
	assert_int_equal(l->max_connections, 10000);
	assert_int_equal(l->idle_timeout, 300);
	assert_int_equal(l->tcp_nodelay, 1);
	assert_int_equal(l->tcp_keepalive, 0);
	assert_int_equal(l->defer_accept, 0);	/* off: server-first protocols */
	assert_int_equal(l->max_per_source, 0);
	assert_int_equal(l->rate_per_source, 0);	/* off */
	assert_int_equal(l->burst_per_source, 10);
	assert_int_equal(l->source_prefix_v4, 32);	/* one address */
	assert_int_equal(l->source_prefix_v6, 64);	/* one host's /64 */
	assert_int_equal(l->backend.nsockets, 1);
	assert_string_equal(l->backend.sockets[0], "/run/h.sock");
	assert_int_equal(l->backend.connect_timeout_ms, 1000);
	config_free(c);
}

static void
full_config_is_read(void **state)
{
	struct config_diag d;
	struct esd_config *c = load(
	    "workers = 3; max_open_files = 4096; log_level = \"debug\";\n"
	    "shutdown_timeout = 5;\n"
	    "listeners = ( { name = \"a\"; bind = \"[::1]:7000\"; backlog = 10;\n"
	    "  max_connections = 50; idle_timeout = 0; tcp_nodelay = false;\n"
	    "  tcp_keepalive = true; defer_accept = 3;\n"
	    "  source_prefix_v4 = 24; source_prefix_v6 = 48;\n"
	    "  rate_limit_per_source = 5; rate_burst_per_source = 0;\n"
	    "  backend = { socket = ( \"/x.sock\", \"/y.sock\" );\n"
	    "    connect_timeout = 250; }; },\n"
	    " { name = \"b\"; bind = \"*:7001\";\n"
	    "  backend = { socket = [ \"/z.sock\" ]; }; } );\n", &d);

	(void)state;
	assert_non_null(c);
	assert_int_equal(c->workers, 3);
	assert_int_equal(c->max_open_files, 4096);
	assert_int_equal(c->log_level, LOG_LVL_DEBUG);
	assert_int_equal(c->shutdown_timeout, 5);
	assert_int_equal(c->nlisteners, 2);
	assert_int_equal(c->listeners[0].addr.ss_family, AF_INET6);
	assert_int_equal(c->listeners[0].backlog, 10);
	assert_int_equal(c->listeners[0].max_connections, 50);
	assert_int_equal(c->listeners[0].idle_timeout, 0);
	assert_int_equal(c->listeners[0].tcp_nodelay, 0);
	assert_int_equal(c->listeners[0].tcp_keepalive, 1);
	assert_int_equal(c->listeners[0].defer_accept, 3);
	assert_int_equal(c->listeners[0].source_prefix_v4, 24);
	assert_int_equal(c->listeners[0].source_prefix_v6, 48);
	assert_int_equal(c->listeners[0].rate_per_source, 5);
	assert_int_equal(c->listeners[0].burst_per_source, 0);
	assert_int_equal(c->listeners[0].backend.nsockets, 2);
	assert_string_equal(c->listeners[0].backend.sockets[1], "/y.sock");
	assert_int_equal(c->listeners[0].backend.connect_timeout_ms, 250);
	assert_int_equal(c->listeners[1].addr.ss_family, AF_INET);
	assert_int_equal(c->listeners[1].backend.nsockets, 1);
	config_free(c);
}

/*
 * max_handshakes: "auto" (0, a quarter of max_connections, worked out at
 * admission) or 1 and up; handshake_early_drop: three percents, start
 * below full, or "" for off; every mistake at its line, saying what
 * would be right.
 */
static void
handshake_budget_keys(void **state)
{
	struct config_diag d;
	struct esd_config *c = load(LISTENER(""), &d);

	(void)state;
	assert_non_null(c);
	assert_int_equal(c->listeners[0].max_handshakes, 0);
	assert_string_equal(c->listeners[0].handshake_early_drop, "");
	assert_int_equal(c->listeners[0].early_drop.on, 0);
	config_free(c);
	c = load(LISTENER("  max_handshakes = 7;\n"
	    "  handshake_early_drop = \"10:30:90\";\n"), &d);
	assert_non_null(c);
	assert_int_equal(c->listeners[0].max_handshakes, 7);
	assert_string_equal(c->listeners[0].handshake_early_drop, "10:30:90");
	assert_true(c->listeners[0].early_drop.on);
	assert_int_equal(c->listeners[0].early_drop.start, 10);
	assert_int_equal(c->listeners[0].early_drop.rate, 30);
	assert_int_equal(c->listeners[0].early_drop.full, 90);
	config_free(c);
	c = load(LISTENER("  max_handshakes = \"auto\";\n"), &d);
	assert_non_null(c);
	assert_int_equal(c->listeners[0].max_handshakes, 0);
	config_free(c);
	expect_error(LISTENER("  max_handshakes = 0;\n"), "t.conf:2: ",
	    "'max_handshakes' = 0 is out of range; use an integer from 1 to "
	    "10000000");
	expect_error(LISTENER("  max_handshakes = \"many\";\n"), "t.conf:2: ",
	    "use an integer from 1 to 10000000 or \"auto\"");
	expect_error(LISTENER("  handshake_early_drop = \"90:30:50\";\n"),
	    "t.conf:2: ", "\"90:30:50\" is not valid: START must be below "
	    "FULL; use \"START:RATE:FULL\", percents of max_handshakes from 0 "
	    "to 100 with START below FULL, such as \"50:30:100\", or \"\" "
	    "for off");
	expect_error(LISTENER("  handshake_early_drop = \"50:30:200\";\n"),
	    "t.conf:2: ", "from 0 to 100");
	expect_error(LISTENER("  handshake_early_drop = \"50:30\";\n"),
	    "t.conf:2: ", "three numbers");
	expect_error(LISTENER("  handshake_early_drop = \"1:1:10000000000000\";"
	    "\n"), "t.conf:2: ", "too long");
	expect_error(LISTENER("  handshake_early_drop = 50;\n"), "t.conf:2: ",
	    "must be a string");
}

static void
workers_auto_and_bad_values(void **state)
{
	struct config_diag d;
	struct esd_config *c = load("workers = \"auto\";\n" LISTENER(""), &d);

	(void)state;
	assert_non_null(c);
	assert_int_equal(c->workers, 0);
	config_free(c);
	expect_error("workers = \"two\";\n" LISTENER(""), "t.conf:1: ",
	    "use an integer from 1 to 64 or \"auto\"");
	expect_error("workers = 0;\n" LISTENER(""), "t.conf:1: ",
	    "out of range");
	expect_error("workers = 1.5;\n" LISTENER(""), "t.conf:1: ",
	    "not a decimal number");
}

static void
syntax_error_names_the_line(void **state)
{
	(void)state;
	expect_error("workers = 2;\nlog_level = \"info\";\nshutdown_timeout = ;\n",
	    "t.conf:3: syntax error", "syntax error");
}

static void
unknown_keys_suggest_the_closest(void **state)
{
	(void)state;
	expect_error("wrokers = 2;\n" LISTENER(""), "t.conf:1: ",
	    "unknown key 'wrokers' at top level; did you mean 'workers'?");
	expect_error(LISTENER("  max_conection = 5;\n"), "t.conf:2: ",
	    "unknown key 'max_conection' in listener 'web'; did you mean "
	    "'max_connections'?");
	expect_error("listeners = ( { name = \"web\"; bind = \"127.0.0.1:1\";\n"
	    "  backend = { sockett = \"/a\"; socket = \"/b\"; }; } );\n",
	    "t.conf:2: ", "did you mean 'socket'?");
	expect_error("colour = 1;\n" LISTENER(""), "t.conf:1: ",
	    "unknown key 'colour' at top level; see esockd.conf(5)");
}

static void
wrong_types_are_named(void **state)
{
	(void)state;
	expect_error(LISTENER("  backlog = \"big\";\n"), "t.conf:2: ",
	    "'backlog' must be an integer, not a string");
	expect_error(LISTENER("  tcp_nodelay = 1;\n"), "t.conf:2: ",
	    "'tcp_nodelay' must be true or false, not an integer");
	expect_error("log_level = \"loud\";\n" LISTENER(""), "t.conf:1: ",
	    "use \"error\", \"warn\", \"info\" or \"debug\"");
	expect_error("listeners = { name = \"x\"; };\n", "t.conf:1: ",
	    "'listeners' must be a list of groups");
}

static void
numbers_out_of_range(void **state)
{
	(void)state;
	expect_error(LISTENER("  backlog = 0;\n"), "t.conf:2: ",
	    "'backlog' = 0 is out of range; use an integer from 1 to 65535");
	expect_error(LISTENER("  defer_accept = 3601;\n"), "t.conf:2: ",
	    "'defer_accept' = 3601 is out of range; use an integer from 0 to 3600");
	expect_error(LISTENER("  max_connections = -1;\n"), "t.conf:2: ",
	    "'max_connections' = -1 is out of range");
	expect_error(LISTENER("  idle_timeout = 99999999999;\n"), "t.conf:2: ",
	    "out of range");
	expect_error("listeners = ( { name = \"web\"; bind = \"127.0.0.1:1\";\n"
	    "  backend = { socket = \"/a\";\n connect_timeout = 0; }; } );\n",
	    "t.conf:3: ", "from 1 to 600000 ms");
	/* A source no wider than any one holder's block. */
	expect_error(LISTENER("  source_prefix_v4 = 0;\n"), "t.conf:2: ",
	    "'source_prefix_v4' = 0 is out of range; use an integer from 8 "
	    "to 32 bits");
	expect_error(LISTENER("  source_prefix_v4 = 33;\n"), "t.conf:2: ",
	    "from 8 to 32 bits");
	expect_error(LISTENER("  source_prefix_v6 = 31;\n"), "t.conf:2: ",
	    "'source_prefix_v6' = 31 is out of range; use an integer from 32 "
	    "to 128 bits");
	expect_error(LISTENER("  source_prefix_v6 = 129;\n"), "t.conf:2: ",
	    "from 32 to 128 bits");
	expect_error(LISTENER("  rate_limit_per_source = -1;\n"), "t.conf:2: ",
	    "from 0 to 1000000 connections/s");
	expect_error(LISTENER("  rate_burst_per_source = 1000001;\n"),
	    "t.conf:2: ", "from 0 to 1000000 connections");
}

static void
bad_addresses(void **state)
{
	const char *bad[] = {
		"127.0.0.1:99999", "nonsense", "127.0.0.1", ":5000",
		"localhost:5000", "[::1:5000", "::1:5000", "1.2.3.4:0",
		"1.2.3.4:5x", "[]:5000",
	};
	char text[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "listeners = ( { name = \"w\";\n"
		    " bind = \"%s\"; backend = { socket = \"/a\"; }; } );\n",
		    bad[i]);
		expect_error(text, "t.conf:2: ", "is not valid; use");
	}
}

static void
listener_requirements(void **state)
{
	(void)state;
	expect_error("listeners = ( { name = \"web\"; bind = \"127.0.0.1:1\"; "
	    "} );\n", "t.conf:1: ", "listener 'web' has no 'backend'");
	expect_error("listeners = ( { name = \"web\"; bind = \"127.0.0.1:1\";\n"
	    " backend = { connect_timeout = 5; }; } );\n", "t.conf:2: ",
	    "has no 'socket'");
	expect_error("listeners = ( { bind = \"127.0.0.1:1\";\n"
	    " backend = { socket = \"/a\"; }; } );\n", "t.conf:1: ",
	    "listener #1 has no 'name'");
	expect_error("workers = 1;\n", "t.conf:1: ", "no 'listeners'");
	expect_error("listeners = ( );\n", "t.conf:1: ", "is empty");
	expect_error("listeners = ( { name = \"bad name\"; bind = \"127.0.0.1:1\";\n"
	    " backend = { socket = \"/a\"; }; } );\n", "t.conf:1: ",
	    "listener name \"bad name\" is not valid");
}

static void
duplicates_are_refused(void **state)
{
	(void)state;
	expect_error("listeners = (\n"
	    " { name = \"a\"; bind = \"127.0.0.1:1\"; backend = { socket = \"/a\"; }; },\n"
	    " { name = \"a\"; bind = \"127.0.0.1:2\"; backend = { socket = \"/a\"; }; } );\n",
	    "t.conf:3: ", "listener name 'a' is used twice (first at line 2)");
	expect_error("listeners = (\n"
	    " { name = \"a\"; bind = \"127.0.0.1:1\"; backend = { socket = \"/a\"; }; },\n"
	    " { name = \"b\"; bind = \"127.0.0.1:1\"; backend = { socket = \"/a\"; }; } );\n",
	    "t.conf:3: ", "is already bound by listener 'a'");
}

static void
every_error_is_reported(void **state)
{
	struct config_diag d;
	struct esd_config *c = load(
	    "workers = \"x\";\n"
	    "listeners = ( { name = \"web\"; bind = \"nope\";\n"
	    "  backlog = 0;\n"
	    "  backend = { socket = \"/a\"; }; } );\n", &d);

	(void)state;
	assert_null(c);
	assert_int_equal(d.n, 3);
	assert_true(strncmp(d.lines[0], "t.conf:1: ", 10) == 0);
	assert_true(strncmp(d.lines[1], "t.conf:2: ", 10) == 0);
	assert_true(strncmp(d.lines[2], "t.conf:3: ", 10) == 0);
	config_diag_free(&d);
}

static void
missing_file_is_an_error(void **state)
{
	struct config_diag d = { 0 };

	(void)state;
	assert_null(config_load_file("/nonexistent/esockd.conf", &d));
	assert_int_equal(d.n, 1);
	assert_non_null(strstr(d.lines[0], "/nonexistent/esockd.conf: cannot "
	    "read the file"));
	config_diag_free(&d);
}

/* The reload's syntax check (run in a child) says what the load would. */
static void
syntax_check_gives_the_loads_message(void **state)
{
	static const char *texts[] = {
		"workers = 2;\nsocket \"/run/x.sock\";\n",	/* no '=' */
		"workers = 2;\nlisteners = ( { name = \"a\"; } );\n",
	};
	char path[] = "/tmp/esockd-unit-XXXXXX", line[1024];
	struct config_diag d;
	FILE *f;
	int fd;

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		assert_true((fd = mkstemp(path)) != -1);
		assert_non_null(f = fdopen(fd, "w"));
		fputs(texts[i], f);
		fclose(f);
		memset(&d, 0, sizeof(d));
		line[0] = '\0';
		assert_null(config_load_file(path, &d));
		assert_true(d.n >= 1);
		if (i == 0) {
			/* A syntax error: the same one line either way. */
			assert_int_equal(config_check_syntax(path, line,
			    sizeof(line)), -1);
			assert_string_equal(line, d.lines[0]);
			assert_non_null(strstr(line, ":2: syntax error"));
		} else {
			/* Parses: the errors are the load's to find. */
			assert_int_equal(config_check_syntax(path, line,
			    sizeof(line)), 0);
		}
		config_diag_free(&d);
		unlink(path);
		strcpy(path, "/tmp/esockd-unit-XXXXXX");
	}
	assert_int_equal(config_check_syntax("/nonexistent/esockd.conf", line,
	    sizeof(line)), -1);
	assert_non_null(strstr(line, "cannot read the file"));
}

static void
key_table_is_consistent(void **state)
{
	size_t n;
	const struct config_key *k = config_keys(&n);

	(void)state;
	assert_true(n > 10);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(k[i].doc);
		if (k[i].type == KT_INT)
			assert_true(k[i].min <= k[i].def && k[i].def <= k[i].max);
		for (size_t j = 0; j < i; j++)
			assert_false(k[i].scope == k[j].scope &&
			    strcmp(k[i].name, k[j].name) == 0);
	}
}

static void
group_needs_user(void **state)
{
	(void)state;
	expect_error("workers = 1;\ngroup = \"root\";\n" LISTENER(""),
	    "t.conf:2: ", "'group' needs 'user'");
	expect_error("user = \"\";\ngroup = \"root\";\n" LISTENER(""),
	    "t.conf:2: ", "add user = \"NAME\"; or remove 'group'");
}

/* Any user of this host whose primary group is not root's, or NULL. */
static struct passwd *
user_with_own_group(void)
{
	struct passwd *pw;

	setpwent();
	while ((pw = getpwent()) != NULL)
		if (pw->pw_gid != 0 && strlen(pw->pw_name) < 60)
			break;
	endpwent();
	return pw;
}

static void
group_defaults_to_the_users_group(void **state)
{
	struct config_diag d;
	struct esd_config *c;
	struct passwd *pw = user_with_own_group();
	struct group *root = getgrnam("root");
	char text[512], name[64];
	uid_t uid;
	gid_t gid;

	(void)state;
	if (pw == NULL || root == NULL)
		skip();
	snprintf(name, sizeof(name), "%s", pw->pw_name);
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	snprintf(text, sizeof(text), "user = \"%s\";\n" LISTENER(""), name);
	c = load(text, &d);
	assert_non_null(c);
	/* The parser only reads names; proc_resolve looks them up. */
	assert_int_equal(proc_resolve(c, &d), 0);
	assert_int_equal(c->uid, uid);
	assert_int_equal(c->gid, gid);
	assert_string_equal(c->group, "");
	config_free(c);
	snprintf(text, sizeof(text), "user = \"%s\"; group = \"root\";\n"
	    LISTENER(""), name);
	c = load(text, &d);
	assert_non_null(c);
	assert_int_equal(proc_resolve(c, &d), 0);
	assert_int_equal(c->gid, root->gr_gid);
	assert_string_equal(c->group, "root");
	config_free(c);
}

/* Every row's field lies inside its scope's struct, and defaults fit it. */
/* Collects what config_keep_restart_only reports. */
static void
note_changed(const char *key, const char *running, void *arg)
{
	char *buf = arg;

	strcat(buf, key);
	strcat(buf, "=");
	strcat(buf, running);
	strcat(buf, " ");
}

/*
 * A reload keeps the running value of every restart-only key and what
 * was parsed from it (metrics: the address), says which changed, and
 * leaves reloadable keys as the new file has them.
 */
static void
restart_only_keys_keep_their_running_value(void **state)
{
	struct config_diag d;
	struct esd_config *old = load("metrics = \"127.0.0.1:9100\";\n"
	    "control_socket = \"/run/a.sock\";\nworkers = 2;\n"
	    LISTENER(""), &d);
	struct esd_config *conf = load("metrics = \"[::1]:9200\";\n"
	    "control_socket = \"/run/a.sock\";\nworkers = 3;\n"
	    LISTENER(""), &d);
	char said[512] = "";
	size_t n;
	const struct config_key *k = config_keys(&n);

	(void)state;
	assert_non_null(old);
	assert_non_null(conf);
	config_keep_restart_only(old, conf, note_changed, said);
	assert_string_equal(said, "metrics=127.0.0.1:9100 ");
	assert_string_equal(conf->metrics, "127.0.0.1:9100");
	assert_int_equal(conf->metrics_addr.ss_family, AF_INET);
	assert_int_equal(conf->metrics_addrlen, old->metrics_addrlen);
	assert_memory_equal(&conf->metrics_addr, &old->metrics_addr,
	    old->metrics_addrlen);
	assert_string_equal(conf->control_socket, "/run/a.sock");
	assert_int_equal(conf->workers, 3);	/* reloadable: the new value */
	/* Every restart-only key is a global string, as the copy assumes. */
	for (size_t i = 0; i < n; i++)
		if (!k[i].reloadable) {
			assert_int_equal(k[i].scope, SCOPE_GLOBAL);
			assert_non_null(k[i].sdef);
		}
	config_free(old);
	config_free(conf);
}

static void
key_rows_record_offset_and_size(void **state)
{
	static const size_t scope_size[] = {
		[SCOPE_GLOBAL] = sizeof(struct esd_config),
		[SCOPE_LISTENER] = sizeof(struct listener_conf),
		[SCOPE_BACKEND] = sizeof(struct backend_conf),
	};
	size_t n;
	const struct config_key *k = config_keys(&n);
	char def[128];

	(void)state;
	for (size_t i = 0; i < n; i++) {
		if (k[i].type == KT_LIST)
			continue;	/* the listeners array, not a field */
		if (k[i].size == 0 ||
		    k[i].offset + k[i].size > scope_size[k[i].scope])
			fail_msg("key '%s': offset %zu size %zu outside its "
			    "struct", k[i].name, k[i].offset, k[i].size);
		if (k[i].type == KT_INT || k[i].type == KT_BOOL ||
		    k[i].show != NULL)
			assert_int_equal(k[i].size, sizeof(int));
		if (k[i].sdef != NULL && strlen(k[i].sdef) >= k[i].size)
			fail_msg("key '%s': default \"%s\" does not fit %zu "
			    "bytes", k[i].name, k[i].sdef, k[i].size);
		if (k[i].type == KT_HOOK)
			assert_true(k[i].parse != NULL && k[i].form != NULL);
		config_key_default(&k[i], def, sizeof(def));
		assert_true(def[0] != '\0');
	}
}

/* A string longer than the field is refused with the field's own limit. */
static void
string_limits_come_from_the_field(void **state)
{
	char text[512], big[200];

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(text, sizeof(text), "user = \"%s\";\n" LISTENER(""), big);
	expect_error(text, "t.conf:1: ", "is longer than 63 bytes");
	snprintf(text, sizeof(text), "workers = 1;\ncontrol_socket = \"/%s\";\n"
	    LISTENER(""), big);
	expect_error(text, "t.conf:2: ", "absolute path of at most 107 bytes");
}

#define TWO_BINDS(a, b)							\
	"listeners = (\n"						\
	"  { name = \"one\"; bind = \"" a "\";\n"			\
	"    backend = { socket = \"/run/h.sock\"; }; },\n"		\
	"  { name = \"two\";\n"						\
	"    bind = \"" b "\";\n"					\
	"    backend = { socket = \"/run/h.sock\"; }; } );\n"

static void
mapped_ipv6_bind_is_refused(void **state)
{
	(void)state;
	expect_error("listeners = ( { name = \"web\";\n"
	    "  bind = \"[::ffff:127.0.0.1]:5000\";\n"
	    "  backend = { socket = \"/run/h.sock\"; }; } );\n",
	    "t.conf:2: ", "IPv4-mapped IPv6 address, which esockd's IPv6-only "
	    "sockets cannot bind; write it as IPv4: \"127.0.0.1:5000\"");
	expect_error("metrics = \"[::ffff:10.0.0.1]:9100\";\n" LISTENER(""),
	    "t.conf:1: ", "write it as IPv4: \"10.0.0.1:9100\"");
}

static void
wildcard_next_to_specific_is_refused(void **state)
{
	struct config_diag d;
	struct esd_config *c;

	(void)state;
	expect_error(TWO_BINDS("127.0.0.1:5000", "*:5000"), "t.conf:5: ",
	    "bind \"*:5000\" of listener 'two' overlaps \"127.0.0.1:5000\" of "
	    "listener 'one' (line 2)");
	expect_error(TWO_BINDS("*:5000", "127.0.0.1:5000"), "t.conf:5: ",
	    "overlaps \"*:5000\" of listener 'one'");
	expect_error(TWO_BINDS("0.0.0.0:5000", "10.1.2.3:5000"), "t.conf:5: ",
	    "a wildcard address takes its port on every address");
	expect_error(TWO_BINDS("[::]:5000", "[::1]:5000"), "t.conf:5: ",
	    "overlaps \"[::]:5000\"");
	expect_error(TWO_BINDS("[::1]:5000", "[::]:5000"), "t.conf:5: ",
	    "overlaps \"[::1]:5000\"");
	/* Other port, other family (IPv6 is IPv6-only), or both specific. */
	c = load(TWO_BINDS("127.0.0.1:5000", "*:5001"), &d);
	assert_non_null(c);
	config_free(c);
	c = load(TWO_BINDS("*:5000", "[::]:5000"), &d);
	assert_non_null(c);
	config_free(c);
	c = load(TWO_BINDS("127.0.0.1:5000", "127.0.0.2:5000"), &d);
	assert_non_null(c);
	config_free(c);
}

#define BACKEND(sock)							\
	"listeners = ( { name = \"web\"; bind = \"127.0.0.1:5000\";\n"	\
	"  backend = { socket = " sock "; }; } );\n"

static void
backend_socket_is_absolute_or_abstract(void **state)
{
	struct config_diag d;
	struct esd_config *c;

	(void)state;
	expect_error(BACKEND("\"run/h.sock\""), "t.conf:2: ",
	    "backend socket \"run/h.sock\" is a relative path; use an "
	    "absolute path such as \"/run/handler.sock\", or \"@name\" for "
	    "an abstract socket");
	expect_error(BACKEND("( \"/run/a.sock\", \"./b.sock\" )"), "t.conf:2: ",
	    "\"./b.sock\" is a relative path");
	expect_error(BACKEND("\"@\""), "t.conf:2: ", "is empty");
	c = load(BACKEND("( \"/run/a.sock\", \"@esockd-b\" )"), &d);
	assert_non_null(c);
	assert_int_equal(c->listeners[0].backend.nsockets, 2);
	assert_string_equal(c->listeners[0].backend.sockets[0], "/run/a.sock");
	assert_string_equal(c->listeners[0].backend.sockets[1], "@esockd-b");
	config_free(c);
}

/* The parser does no lookups: an unknown user is proc_resolve's error. */
static void
names_are_resolved_outside_the_parser(void **state)
{
	struct config_diag d;
	struct esd_config *c;

	(void)state;
	c = load("workers = 1;\nuser = \"esockd-no-such-user\";\n"
	    "control_group = \"esockd-no-such-group\";\n" LISTENER(""), &d);
	assert_non_null(c);
	assert_int_equal(c->user_line, 2);
	assert_int_equal(c->control_group_line, 3);
	assert_int_equal(proc_resolve(c, &d), -1);
	assert_int_equal(d.n, 2);
	assert_string_equal(d.lines[0], "t.conf:2: user \"esockd-no-such-user\" "
	    "does not exist on this host; create it or name an existing user "
	    "(for example \"nobody\")");
	assert_string_equal(d.lines[1], "t.conf:3: 'control_group' = "
	    "\"esockd-no-such-group\" is not a group on this host; create it "
	    "or name an existing group");
	config_diag_free(&d);
	config_free(c);
}

#define SNI_CERT	"  tls_certificate = \"/etc/esockd/d.pem\";\n"

/* tls_sni entries are kept with their line, names lowercase and without
 * the trailing dot, which is what sni_match compares against. */
static void
sni_entries_are_stored_lowercase(void **state)
{
	struct config_diag d;
	struct esd_config *c = load(LISTENER(SNI_CERT
	    "  tls_sni = ( { names = ( \"A.Example.\", \"*.B.example\" );\n"
	    "    certificate = \"/etc/esockd/a.pem\"; },\n"
	    "    { names = \"c.example\"; certificate = \"/c.pem\";"
	    " key = \"/c.key\"; } );\n"), &d);
	const struct sni_list *l;

	(void)state;
	assert_non_null(c);
	l = &c->listeners[0].tls_sni;
	assert_int_equal(l->n, 2);
	assert_int_equal(l->v[0].nnames, 2);
	assert_string_equal(l->v[0].names[0], "a.example");
	assert_string_equal(l->v[0].names[1], "*.b.example");
	assert_string_equal(l->v[0].certificate, "/etc/esockd/a.pem");
	assert_string_equal(l->v[0].key, "");
	assert_int_equal(l->v[0].line, 3);
	assert_string_equal(l->v[1].names[0], "c.example");
	assert_string_equal(l->v[1].key, "/c.key");
	assert_int_equal(l->v[1].line, 5);
	assert_int_equal(c->listeners[0].tls_sni_strict, 0);
	config_free(c);
}

static void
sni_names_and_entries_are_checked(void **state)
{
	char text[16384];
	size_t used;

	(void)state;
	expect_error(LISTENER(SNI_CERT "  tls_sni = ( { names = \"*.example\";"
	    " certificate = \"/a.pem\"; } );\n"), "t.conf:3: ",
	    "a wildcard needs two labels after it");
	expect_error(LISTENER(SNI_CERT "  tls_sni = ( { names = \"a.*.example\";"
	    " certificate = \"/a.pem\"; } );\n"), "t.conf:3: ",
	    "'*' may only be the whole first label");
	expect_error(LISTENER(SNI_CERT
	    "  tls_sni = ( { names = \"a.example\"; certificate = \"/a.pem\"; },\n"
	    "  { names = \"A.EXAMPLE\"; certificate = \"/b.pem\"; } );\n"),
	    "t.conf:4: ", "is already given (entry at line 3)");
	expect_error(LISTENER("  tls_sni = ( { names = \"a.example\";"
	    " certificate = \"/a.pem\"; } );\n"), "t.conf:2: ",
	    "'tls_sni' in listener 'web' needs 'tls_certificate'");
	expect_error(LISTENER(SNI_CERT "  tls_sni = ( { names = \"a.example\"; }"
	    " );\n"), "t.conf:3: ", "has no 'certificate'");
	used = (size_t)snprintf(text, sizeof(text), "listeners = ( { name = "
	    "\"web\"; bind = \"127.0.0.1:5000\";\n" SNI_CERT "tls_sni = (");
	for (int i = 0; i <= ESD_MAX_SNI; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used,
		    "%s{ names = \"h%d.example\"; certificate = \"/a.pem\"; }",
		    i ? ",\n" : "\n", i);
	snprintf(text + used, sizeof(text) - used, " );\n  backend = { socket "
	    "= \"/run/h.sock\"; }; } );\n");
	expect_error(text, "t.conf:68: ", "more than 64 entries");
}

#define TLS_LISTENER(extra)						\
	LISTENER("  tls_certificate = \"/etc/esockd/c.pem\";\n" extra)

/* The client-certificate, ALPN and version keys: read, and checked
 * together without OpenSSL. */
static void
tls_client_keys_read_and_hang_together(void **state)
{
	static const unsigned char wire[] = "\x02h2\x08http/1.1";
	struct config_diag d;
	struct esd_config *c = load(TLS_LISTENER(
	    "  tls_client_ca = \"/etc/esockd/ca.pem\";\n"
	    "  tls_verify_client = \"optional\";\n"
	    "  tls_alpn = ( \"h2\", \"http/1.1\" );\n"
	    "  tls_max_version = \"1.2\";\n  tls_groups = \"X25519\";\n"), &d);
	const struct listener_conf *l;

	(void)state;
	assert_non_null(c);
	l = &c->listeners[0];
	assert_int_equal(l->tls_verify_client, TLS_VERIFY_OPTIONAL);
	assert_int_equal(l->tls_verify_depth, 9);
	assert_int_equal(l->tls_max_version, 12);
	assert_int_equal(l->tls_alpn_len, sizeof(wire) - 1);
	assert_memory_equal(l->tls_alpn, wire, sizeof(wire) - 1);
	assert_string_equal(l->tls_groups, "X25519");
	assert_int_equal(l->tls_client_ca_line, 3);
	assert_int_equal(l->tls_groups_line, 7);
	config_free(c);

	expect_error(TLS_LISTENER("  tls_verify_client = \"required\";\n"),
	    "t.conf:3: ", "needs 'tls_client_ca'");
	expect_error(TLS_LISTENER("  tls_verify_client = \"always\";\n"),
	    "t.conf:3: ", "use \"none\", \"optional\" or \"required\"");
	expect_error(TLS_LISTENER("  tls_crl = \"/etc/esockd/r.crl\";\n"),
	    "t.conf:3: ", "'tls_crl' in listener 'web' needs client");
	expect_error(TLS_LISTENER("  tls_min_version = \"1.3\";\n"
	    "  tls_max_version = \"1.2\";\n"), "t.conf:4: ",
	    "older than tls_min_version");
	expect_error(LISTENER("  tls_alpn = ( \"h2\" );\n"), "t.conf:2: ",
	    "'tls_alpn' in listener 'web' needs 'tls_certificate'");
	expect_error(TLS_LISTENER("  tls_alpn = ( \"h2\", \"\" );\n"),
	    "t.conf:3: ", "is empty");
	/* The defaults, as the shipped configs write them, need nothing. */
	c = load(LISTENER("  tls_verify_client = \"none\";\n  tls_alpn = ();\n"
	    "  tls_ciphers = \"\";\n"), &d);
	assert_non_null(c);
	config_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(minimal_config_gets_defaults),
		cmocka_unit_test(full_config_is_read),
		cmocka_unit_test(workers_auto_and_bad_values),
		cmocka_unit_test(handshake_budget_keys),
		cmocka_unit_test(syntax_error_names_the_line),
		cmocka_unit_test(unknown_keys_suggest_the_closest),
		cmocka_unit_test(wrong_types_are_named),
		cmocka_unit_test(numbers_out_of_range),
		cmocka_unit_test(bad_addresses),
		cmocka_unit_test(listener_requirements),
		cmocka_unit_test(duplicates_are_refused),
		cmocka_unit_test(every_error_is_reported),
		cmocka_unit_test(missing_file_is_an_error),
		cmocka_unit_test(key_table_is_consistent),
		cmocka_unit_test(group_needs_user),
		cmocka_unit_test(group_defaults_to_the_users_group),
		cmocka_unit_test(key_rows_record_offset_and_size),
		cmocka_unit_test(restart_only_keys_keep_their_running_value),
		cmocka_unit_test(string_limits_come_from_the_field),
		cmocka_unit_test(mapped_ipv6_bind_is_refused),
		cmocka_unit_test(wildcard_next_to_specific_is_refused),
		cmocka_unit_test(backend_socket_is_absolute_or_abstract),
		cmocka_unit_test(names_are_resolved_outside_the_parser),
		cmocka_unit_test(sni_entries_are_stored_lowercase),
		cmocka_unit_test(sni_names_and_entries_are_checked),
		cmocka_unit_test(tls_client_keys_read_and_hang_together),
		cmocka_unit_test(syntax_check_gives_the_loads_message),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
