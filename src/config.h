/*
 * config.h: the parsed esockd.conf and the table of keys it may hold.
 */
#ifndef ESOCKD_CONFIG_H
#define ESOCKD_CONFIG_H

#include "cidr.h"
#include "early_drop.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#define ESD_MAX_LISTENERS	64	/* listeners in one config */
#define ESD_MAX_WORKERS		64	/* worker processes */
#define ESD_MAX_BACKENDS	32	/* backend sockets per listener */
#define ESD_NAME_MAX		64	/* listener name, with its NUL */
#define ESD_MAX_SNI		64	/* tls_sni entries per listener */
#define ESD_SNI_NAMES		16	/* names in one tls_sni entry */
#define ESD_SNI_NAME_MAX	254	/* a DNS name (253) with its NUL */
#define ESD_DEFAULT_CONTROL	"/run/esockd/control.sock"
#define ESD_DEFAULT_CONF	"/etc/esockd/esockd.conf"

struct backend_conf {
	char	**sockets;		/* Unix socket paths, round-robin */
	size_t	  nsockets;
	int	  connect_timeout_ms;
	int	  proxy_protocol;	/* send a PROXY v2 header first */
	int	  proxy_crc32c;		/* and a PP2_TYPE_CRC32C TLV */
	int	  fail_threshold;	/* consecutive failures: ejected */
	int	  retry_interval_ms;	/* first ejection; doubles to 30 s */
	int	  balance;		/* enum backend_balance */
	int	  mode;			/* enum backend_mode */
};

/* mode: relay each client's bytes, or hand its socket to a handler. */
enum backend_mode { BACKEND_RELAY, BACKEND_HANDOFF };

/* balance: how a connection's backend socket is chosen. */
enum backend_balance { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONNECTIONS };

/* An allow or deny list: address blocks a client is matched against. */
struct cidr_list {
	struct cidr	*v;
	size_t		 n;
};

/*
 * One tls_sni entry: a certificate served to clients that name one of
 * names (lowercase, no trailing dot; "*.x.y" covers one label).
 */
struct sni_conf {
	char	**names;
	size_t	  nnames;
	char	  certificate[108];
	char	  key[108];		/* "" = in the certificate file */
	int	  line;			/* of the entry, for errors */
};

struct sni_list {
	struct sni_conf	*v;
	size_t		 n;
};

struct listener_conf {
	char			name[ESD_NAME_MAX];
	char			bind[80];	/* as written, for messages */
	struct sockaddr_storage	addr;
	socklen_t		addrlen;
	int			backlog;
	int			max_connections;
	int			reserved_connections; /* of the global limit */
	int			idle_timeout;	/* seconds, 0 = none */
	int			tcp_nodelay;
	int			tcp_keepalive;
	int			defer_accept;	/* seconds, 0 = off */
	struct cidr_list	allow, deny;	/* empty allow: everyone */
	int			proxy_in;	/* enum proxy_in_mode (proxy_in.h) */
	struct cidr_list	proxy_sources;	/* may send a PROXY header */
	struct cidr_list	proxy_optional_sources; /* may send none */
	int			proxy_header_timeout; /* seconds */
	int			rate_limit;	/* connections/s, 0 = none */
	int			rate_burst;	/* beyond the rate, at once */
	int			max_handshakes;	/* 0 = max_connections / 4 */
	char			handshake_early_drop[16]; /* "" = off */
	struct early_drop	early_drop;	/* parsed from it */
	int			max_per_source;	/* open per client source */
	int			rate_per_source; /* connections/s, 0 = none */
	int			burst_per_source; /* beyond it, at once */
	int			source_prefix_v4; /* bits a source is counted */
	int			source_prefix_v6; /* by, per family */
	char			tls_certificate[108]; /* "" = plain TCP */
	char			tls_key[108];	/* "" = in the certificate file */
	struct sni_list		tls_sni;	/* certificates chosen by name */
	int			tls_sni_strict;	/* refuse a name not in tls_sni */
	int			tls_min_version; /* 12 or 13 */
	int			tls_ticket_lifetime; /* seconds a key encrypts */
	char			tls_ticket_keys[108]; /* "" = random keys */
	int			tls_ticket_line; /* of tls_ticket_keys */
	int			tls_handshake_timeout; /* seconds */
	/* Client certificates, ALPN, versions and algorithms (tls_policy.c);
	 * each *_line is its key's line, for the errors OpenSSL gives. */
	char			tls_client_ca[108]; /* "" = ask for none */
	int			tls_verify_client; /* enum tls_verify */
	int			tls_verify_depth;
	char			tls_crl[108];	/* "" = no revocation check */
	unsigned char		tls_alpn[256];	/* wire form: len, bytes, ... */
	int			tls_alpn_len;	/* 0 = no ALPN */
	int			tls_max_version; /* 12 or 13 */
	char			tls_ciphers[256]; /* "" = OpenSSL's default */
	char			tls_ciphersuites[256];
	char			tls_groups[256];
	int			tls_client_ca_line, tls_crl_line,
				tls_ciphers_line, tls_ciphersuites_line,
				tls_groups_line;
	int			tls_line;	/* of tls_certificate, for errors */
	struct backend_conf	backend;
	int			line;		/* where the group starts */
};

/* tls_verify_client: whether a client certificate is asked for and needed. */
enum tls_verify { TLS_VERIFY_NONE, TLS_VERIFY_OPTIONAL, TLS_VERIFY_REQUIRED };

struct esd_config {
	char			*path;
	int			 workers;	/* 0 = "auto" */
	int			 max_open_files; /* 0 = up to the hard limit */
	int			 log_level;	/* enum log_level */
	int			 shutdown_timeout; /* seconds */
	int			 max_connections; /* all listeners; 0 = none */
	char			 control_socket[108]; /* "" = none */
	char			 control_group[64]; /* "" = root only (0600) */
	gid_t			 control_gid;	/* set by proc_resolve */
	char			 metrics[80];	/* "" = no metrics endpoint */
	struct sockaddr_storage	 metrics_addr;
	socklen_t		 metrics_addrlen;
	char			 user[64];	/* "" = workers keep the uid */
	char			 group[64];	/* "" = the user's group */
	/*
	 * The ids of user, group and control_group.  The parser only reads
	 * text; proc_resolve (proc.c) looks the names up, reporting at the
	 * lines kept here (0: the key is not in the file).
	 */
	uid_t			 uid;
	gid_t			 gid;		/* group's, else the user's own */
	int			 user_line, group_line, control_group_line;
	struct listener_conf	*listeners;
	size_t			 nlisteners;
};

/* Every error found in one file, each "FILE:LINE: what; what is right". */
struct config_diag {
	char	**lines;
	size_t	  n;
};

enum config_scope { SCOPE_GLOBAL, SCOPE_LISTENER, SCOPE_BACKEND };

/*
 * How a key's value is read.  Types shared by several keys are here; a
 * key with a form of its own is KT_HOOK and its row names the function.
 */
enum config_type {
	KT_INT,		/* int field, within min..max */
	KT_BOOL,	/* int field, 0 or 1 */
	KT_PATH,	/* char array: absolute path or "" */
	KT_ACCOUNT,	/* char array: a user or group name, or "" */
	KT_CIDRS,	/* struct cidr_list */
	KT_HOOK,	/* the row's parse function */
	KT_GROUP,	/* a sub-group (backend), read by the caller */
	KT_LIST		/* the list of listeners, read by the caller */
};
#define KT_NTYPES	(KT_LIST + 1)	/* keep it after the last type */

struct config_key;
struct config_parse;			/* the parser's state, in config.c */
struct config_setting_t;		/* libconfig's */

/* Read one setting into the scope's struct at base (errors reported). */
typedef void config_hook(struct config_parse *,
    const struct config_setting_t *, const struct config_key *, void *base);
/* Write a KT_HOOK key's int default as it would be written in the file. */
typedef void config_show(const struct config_key *, char *, size_t);

/* One row of the key table: the single source for parser, -t and docs. */
struct config_key {
	const char		*name;
	enum config_scope	 scope;
	enum config_type	 type;
	size_t			 offset;	/* into the scope's struct */
	size_t			 size;		/* of that field */
	long long		 def;		/* default of an int field */
	long long		 min, max;	/* bounds of an int field */
	int			 required;
	int			 reloadable;
	const char		*unit;		/* "seconds", "ms" or NULL */
	const char		*doc;		/* one line */
	const char		*sdef;		/* default of a string key */
	config_hook		*parse;		/* KT_HOOK only */
	config_show		*show;		/* a KT_HOOK int field's default */
	const char		*form;		/* KT_HOOK: its value, for -K */
	/* What the parse made from it besides the field (metrics: the
	 * address), kept with it when a reload may not change it. */
	size_t			 derived_offset, derived_size;
};

struct esd_config *config_load_file(const char *path, struct config_diag *);
int		   config_check_syntax(const char *path, char *line, size_t len);
struct esd_config *config_load_string(const char *text, const char *name,
		    struct config_diag *);
void		   config_free(struct esd_config *);
const struct config_key *config_keys(size_t *n);
/*
 * Give conf old's value of every key a reload may not change (the rows
 * with reloadable = 0, and what was parsed from them); changed(key,
 * running value, arg) is called for each that conf had changed.
 */
void		   config_keep_restart_only(const struct esd_config *old,
		    struct esd_config *conf,
		    void (*changed)(const char *, const char *, void *),
		    void *arg);
void		   config_key_default(const struct config_key *, char *,
		    size_t);
const char	  *config_scope_name(enum config_scope);
void		   config_diag_free(struct config_diag *);
void		   config_diag_add(struct config_diag *, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

#endif
