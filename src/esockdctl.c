/*
 * esockdctl.c: the operator's side of esockd's control socket.
 *
 * Sends one command line, then prints the reply: the body of an OK on
 * stdout, an ERR and whatever follows it on stderr.  Exits 0 for OK, 1
 * for ERR, 2 for a usage error and 3 when no daemon could be reached or
 * it did not answer.  The socket is -s PATH, or control_socket of the
 * config file -c FILE, or the default path.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ctlproto.h"

#define EX_OK		0
#define EX_ERR		1	/* the daemon said ERR; or -c FILE is bad */
#define EX_USAGE	2
#define EX_UNREACHABLE	3

#define REPLY_MAX	(16 << 20)	/* more is not a reply from esockd */
#define TIMEOUT_S	10

/* The usage text; the commands are the daemon's (ctlproto.c). */
static void
print_usage(FILE *f)
{
	fputs("usage: esockdctl [-s PATH | -c FILE] [-t SECONDS] [--json] "
	    "COMMAND [ARGS]\n"
	    "       (options may also follow the command: esockdctl stats "
	    "--json)\n\n", f);
	for (int i = 0; i < CTLPROTO_NCMDS; i++)
		fprintf(f, "  %-28s %s\n", ctlproto_cmds[i].usage,
		    ctlproto_cmds[i].brief);
	fputs("\n"
	    "  -s PATH      the control socket (default " ESD_DEFAULT_CONTROL
	    ")\n"
	    "  -c FILE      use control_socket from this esockd.conf\n"
	    "  -t SECONDS   how long to wait for the reply (default 10)\n"
	    "  --json       stats and listeners as JSON\n"
	    "\n"
	    "Exit status: 0 OK, 1 the daemon refused (ERR), 2 usage, 3 no "
	    "daemon.\n", f);
}

static void __attribute__((noreturn))
usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "esockdctl: %s\n", why);
	print_usage(stderr);
	exit(EX_USAGE);
}

/* "--json goes with 'stats' or 'listeners' alone", from the commands. */
static void
json_refusal(char *why, size_t len)
{
	size_t off = 0;
	int n = 0;

	off += (size_t)snprintf(why, len, "--json goes with");
	for (int i = 0; i < CTLPROTO_NCMDS; i++) {
		if (!ctlproto_cmds[i].json)
			continue;
		off += (size_t)snprintf(why + off, off < len ? len - off : 0,
		    "%s '%s'", n++ ? " or" : "", ctlproto_cmds[i].name);
	}
	snprintf(why + off, off < len ? len - off : 0, " alone");
}

/* The socket path from -c FILE's control_socket; exits on a bad file. */
static void
path_from_config(const char *file, char *path, size_t len)
{
	struct config_diag diag = { NULL, 0 };
	struct esd_config *conf = config_load_file(file, &diag);

	if (conf == NULL) {
		for (size_t i = 0; i < diag.n; i++)
			fprintf(stderr, "%s\n", diag.lines[i]);
		fprintf(stderr, "esockdctl: %s is not a valid esockd "
		    "configuration; fix it, or give the socket with -s PATH\n",
		    file);
		config_diag_free(&diag);
		exit(EX_ERR);
	}
	if (conf->control_socket[0] == '\0') {
		fprintf(stderr, "esockdctl: %s sets control_socket = \"\", so "
		    "that daemon has no control socket; set control_socket "
		    "there and restart esockd, or give the socket with -s "
		    "PATH\n", file);
		config_free(conf);
		exit(EX_ERR);
	}
	snprintf(path, len, "%s", conf->control_socket);
	config_free(conf);
}

/*
 * Join the words into one command line; -1 if it cannot be sent, with
 * the reason in why.
 */
static int
build_line(int argc, char **argv, int json, char *line, size_t len,
    char *why, size_t whylen)
{
	const struct ctlproto_cmd *cmd;
	size_t off = 0;

	if (json && (argc != 1 || (cmd = ctlproto_find(argv[0])) == NULL ||
	    !cmd->json)) {
		json_refusal(why, whylen);
		return -1;
	}
	for (int i = 0; i < argc; i++) {
		if (argv[i][0] == '\0' || strpbrk(argv[i], " \t\r\n") != NULL) {
			snprintf(why, whylen, "a word of the command is empty or "
			    "holds a space or newline");
			return -1;
		}
		off += (size_t)snprintf(line + off, off < len ? len - off : 0,
		    "%s%s", i ? " " : "", argv[i]);
	}
	if (json)
		off += (size_t)snprintf(line + off, off < len ? len - off : 0,
		    " json");
	if (off > CTL_LINE_MAX) {
		snprintf(why, whylen, "the command is longer than %d bytes",
		    CTL_LINE_MAX);
		return -1;
	}
	return 0;
}

static int
remaining_ms(const struct timespec *deadline)
{
	struct timespec now;
	long long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(deadline->tv_sec - now.tv_sec) * 1000 +
	    (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms > 3600000 ? 3600000 : (int)ms;
}

/* Connect and send the line; exits 3 with the reason if it cannot. */
static int
send_line(const char *path, const char *line, int timeout_s)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { timeout_s, 0 };
	size_t len = strlen(line), off = 0;
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		fprintf(stderr, "esockdctl: socket: %s\n", strerror(errno));
		exit(EX_UNREACHABLE);
	}
	/* Bounds a blocking connect to a full backlog, and the send. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;
		if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
			fprintf(stderr, "esockdctl: no esockd is listening on "
			    "%s (%s); is it running, and is control_socket set "
			    "to this path?\n", path, strerror(e));
		else if (e == EACCES || e == EPERM)
			fprintf(stderr, "esockdctl: permission denied on %s; "
			    "run as root or as a member of control_group\n",
			    path);
		else if (e == EAGAIN || e == ETIMEDOUT)
			fprintf(stderr, "esockdctl: %s did not accept the "
			    "connection within %d s; the daemon may be stuck "
			    "(check its log)\n", path, timeout_s);
		else
			fprintf(stderr, "esockdctl: cannot connect to %s: %s\n",
			    path, strerror(e));
		exit(EX_UNREACHABLE);
	}
	while (off <= len) {
		const char *p = off < len ? line + off : "\n";
		size_t n = off < len ? len - off : 1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			fprintf(stderr, "esockdctl: cannot send the command to "
			    "%s: %s\n", path, strerror(errno));
			exit(EX_UNREACHABLE);
		}
		off += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	return fd;
}

/* Read the whole reply (the daemon closes after it); NUL-terminated. */
static char *
read_reply(int fd, const char *path, int timeout_s, size_t *lenp)
{
	struct timespec deadline;
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);

	if (buf == NULL) {
		fprintf(stderr, "esockdctl: out of memory\n");
		exit(EX_UNREACHABLE);
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_s;
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t r;
		int rc = poll(&pfd, 1, remaining_ms(&deadline));

		if (rc == -1 && errno == EINTR)
			continue;
		if (rc == 0) {
			fprintf(stderr, "esockdctl: no reply from %s within %d "
			    "s; the daemon may be stuck (check its log), or "
			    "wait longer with -t\n", path, timeout_s);
			exit(EX_UNREACHABLE);
		}
		if (len + 1 >= cap) {
			char *n = cap < REPLY_MAX ? realloc(buf, cap * 2) : NULL;
			if (n == NULL) {
				fprintf(stderr, "esockdctl: the reply from %s is "
				    "too long\n", path);
				exit(EX_UNREACHABLE);
			}
			buf = n;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			if (len > 0 && errno == ECONNRESET)
				break;	/* what came is the reply */
			fprintf(stderr, "esockdctl: reading the reply from %s: "
			    "%s\n", path, strerror(errno));
			exit(EX_UNREACHABLE);
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	*lenp = len;
	return buf;
}

/* Print a reply and return the exit status it means. */
static int
print_reply(const char *path, char *reply, size_t len)
{
	char *nl = memchr(reply, '\n', len);
	char *first = reply, *body = nl ? nl + 1 : reply + len;
	size_t blen = len - (size_t)(body - reply);

	if (len == 0 || nl == NULL) {
		fprintf(stderr, "esockdctl: %s closed the connection without "
		    "a whole reply%s\n", path, len ? "" : " (too many control "
		    "connections at once?)");
		return EX_UNREACHABLE;
	}
	*nl = '\0';
	if (strcmp(first, "OK") == 0 || strncmp(first, "OK ", 3) == 0) {
		if (first[2] != '\0')
			printf("%s\n", first + 3);
		fwrite(body, 1, blen, stdout);
		return EX_OK;
	}
	if (strncmp(first, "ERR ", 4) == 0) {
		fflush(stdout);
		fprintf(stderr, "%s\n", first + 4);
		fwrite(body, 1, blen, stderr);
		return EX_ERR;
	}
	fprintf(stderr, "esockdctl: unexpected reply from %s (is it esockd's "
	    "control socket?): %.80s\n", path, first);
	return EX_UNREACHABLE;
}

/* What the options asked for, wherever they stood on the command line. */
struct opts {
	const char	*sock, *file;
	int		 json, timeout_s;
	/* The command's words (calloc'd).  Held here, in main's frame,
	 * so that a usage error's exit() leaves them reachable rather
	 * than leaked in the sanitizer's eyes. */
	char		**words;
};

/*
 * Whether a word is an option rather than a word of the command.  "-5"
 * is a word ("set max_connections NAME -5" reaches the daemon, which
 * names the bad value), and so is everything after "--".
 */
static int
is_option(const char *w)
{
	return w[0] == '-' && w[1] != '\0' && !(w[1] >= '0' && w[1] <= '9');
}

/*
 * Options may come before or after the command ("stats --json" as well
 * as "--json stats").  getopt stops at each command word ("+": no
 * permutation, which would take "-5" for an option); the word is kept
 * and getopt goes on from the next one.  Returns the number of command
 * words, moved to the front of o->words[].
 */
static int
parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int ch, n = 0, rest = 0;
	char *end;
	long t;

	while (optind < argc) {
		if (rest || !is_option(argv[optind])) {
			o->words[n++] = argv[optind++];
			continue;
		}
		if (strcmp(argv[optind], "--") == 0) {
			rest = 1;
			optind++;
			continue;
		}
		if ((ch = getopt_long(argc, argv, "+s:c:t:h", longopts,
		    NULL)) == -1) {
			if (optind < argc)	/* not an option after all */
				o->words[n++] = argv[optind++];
			continue;
		}
		switch (ch) {
		case 's':
			o->sock = optarg;
			break;
		case 'c':
			o->file = optarg;
			break;
		case 't':
			errno = 0;
			t = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || t < 1 || t > 3600)
				usage("-t takes seconds, from 1 to 3600");
			o->timeout_s = (int)t;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			print_usage(stdout);
			exit(EX_OK);
		default:
			usage(NULL);
		}
	}
	return n;
}

int
main(int argc, char **argv)
{
	struct opts o = { NULL, NULL, 0, TIMEOUT_S, NULL };
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char line[CTL_LINE_MAX + 64], why[256], *reply;
	const char *sock, *file;
	int fd, rc, nwords;
	size_t len;

	if ((o.words = calloc((size_t)argc + 1, sizeof(*o.words))) == NULL) {
		fprintf(stderr, "esockdctl: out of memory\n");
		return EX_UNREACHABLE;
	}
	nwords = parse_args(argc, argv, &o);
	sock = o.sock;
	file = o.file;
	if (nwords == 0)
		usage("no command given");
	if (sock != NULL && file != NULL)
		usage("give -s PATH or -c FILE, not both");
	if (sock != NULL && (sock[0] == '\0' || strlen(sock) >= sizeof(path)))
		usage("the socket path must have 1 to 107 bytes");
	if (file != NULL)
		path_from_config(file, path, sizeof(path));
	else
		snprintf(path, sizeof(path), "%s",
		    sock ? sock : ESD_DEFAULT_CONTROL);
	rc = build_line(nwords, o.words, o.json, line, sizeof(line), why,
	    sizeof(why));
	free(o.words);
	if (rc == -1)
		usage(why);
	fd = send_line(path, line, o.timeout_s);
	reply = read_reply(fd, path, o.timeout_s, &len);
	close(fd);
	rc = print_reply(path, reply, len);
	free(reply);
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "esockdctl: cannot write the reply: %s\n",
		    strerror(errno));
		return rc == EX_OK ? EX_ERR : rc;
	}
	return rc;
}
