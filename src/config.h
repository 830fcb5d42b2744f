/*
 * config.h: the parsed esockd.conf and the table of keys it may hold.
 */
#ifndef ESOCKD_CONFIG_H
#define ESOCKD_CONFIG_H

#include "cidr.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#define ESD_MAX_LISTENERS	64	/* listeners in one config */
#define ESD_MAX_WORKERS		64	/* worker processes */
#define ESD_MAX_BACKENDS	32	/* backend sockets per listener */
#define ESD_NAME_MAX		64	/* listener name, with its NUL */
#define ESD_DEFAULT_CONTROL	"/run/esockd/control.sock"
#define ESD_DEFAULT_CONF	"/etc/esockd/esockd.conf"

struct backend_conf {
	char	**sockets;		/* Unix socket paths, round-robin */
	size_t	  nsockets;
	int	  connect_timeout_ms;
	int	  proxy_protocol;	/* send a PROXY v2 header first */
};

/* An allow or deny list: address blocks a client is matched against. */
struct cidr_list {
	struct cidr	*v;
	size_t		 n;
};

struct listener_conf {
	char			name[ESD_NAME_MAX];
	char			bind[80];	/* as written, for messages */
	struct sockaddr_storage	addr;
	socklen_t		addrlen;
	int			backlog;
	int			max_connections;
	int			idle_timeout;	/* seconds, 0 = none */
	int			tcp_nodelay;
	int			tcp_keepalive;
	int			defer_accept;	/* seconds, 0 = off */
	struct cidr_list	allow, deny;	/* empty allow: everyone */
	int			rate_limit;	/* connections/s, 0 = none */
	int			rate_burst;	/* beyond the rate, at once */
	int			max_per_source;	/* open per client address */
	char			tls_certificate[108]; /* "" = plain TCP */
	char			tls_key[108];	/* "" = in the certificate file */
	int			tls_min_version; /* 12 or 13 */
	int			tls_handshake_timeout; /* seconds */
	int			tls_line;	/* of tls_certificate, for errors */
	struct backend_conf	backend;
	int			line;		/* where the group starts */
};

struct esd_config {
	char			*path;
	int			 workers;	/* 0 = "auto" */
	int			 max_open_files; /* 0 = up to the hard limit */
	int			 log_level;	/* enum log_level */
	int			 shutdown_timeout; /* seconds */
	char			 control_socket[108]; /* "" = none */
	char			 control_group[64]; /* "" = root only (0600) */
	gid_t			 control_gid;
	char			 metrics[80];	/* "" = no metrics endpoint */
	struct sockaddr_storage	 metrics_addr;
	socklen_t		 metrics_addrlen;
	char			 user[64];	/* "" = workers keep the uid */
	uid_t			 uid;
	gid_t			 user_gid;	/* the user's primary group */
	char			 group[64];	/* "" = the user's group */
	gid_t			 gid;
	struct listener_conf	*listeners;
	size_t			 nlisteners;
};

/* Every error found in one file, each "FILE:LINE: what; what is right". */
struct config_diag {
	char	**lines;
	size_t	  n;
};

enum config_scope { SCOPE_GLOBAL, SCOPE_LISTENER, SCOPE_BACKEND };
enum config_type {
	KT_INT, KT_BOOL, KT_NAME, KT_LEVEL, KT_WORKERS, KT_BIND, KT_SOCKETS,
	KT_GROUP, KT_LIST, KT_PATH, KT_USER, KT_UGROUP, KT_ADDR, KT_CIDRS,
	KT_TLSVER
};
#define KT_NTYPES	(KT_TLSVER + 1)	/* keep it after the last type */

/* One row of the key table: the single source for parser, -t and docs. */
struct config_key {
	const char		*name;
	enum config_scope	 scope;
	enum config_type	 type;
	size_t			 offset;	/* into the scope's struct */
	long long		 def;		/* default for KT_INT/KT_BOOL */
	long long		 min, max;	/* bounds for KT_INT */
	int			 required;
	int			 reloadable;
	const char		*unit;		/* "seconds", "ms" or NULL */
	const char		*doc;		/* one line */
	const char		*sdef;		/* default of a string key */
};

struct esd_config *config_load_file(const char *path, struct config_diag *);
struct esd_config *config_load_string(const char *text, const char *name,
		    struct config_diag *);
void		   config_free(struct esd_config *);
const struct config_key *config_keys(size_t *n);
const char	  *config_scope_name(enum config_scope);
void		   config_diag_free(struct config_diag *);
void		   config_diag_add(struct config_diag *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

#endif
