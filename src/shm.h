/*
 * shm.h: the statistics and limits shared by the master and all workers.
 */
#ifndef ESOCKD_SHM_H
#define ESOCKD_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "source_count.h"

/* Worker slots: room for two generations of the largest worker count. */
#define ESD_MAX_SLOTS	(2 * ESD_MAX_WORKERS)

/*
 * A listener's monotonic counters, listed once, in the order shm_totals
 * reads them: the refusals and failures, which are counted after the
 * connection's release, come before cur is read; closed, counted before
 * the release, is read after it, and accepted after closed, so a total
 * never shows a counted end still open or more closed than accepted.
 */
/*
 * Why an admitted connection ended: exactly one of these is counted for
 * each, by session_close (after the release, as the refusals are), or by
 * the master for a worker that died with connections open (worker_lost).
 * Their sum is closed once nothing is in flight.
 */
#define CLOSE_REASONS(X)						\
	X(CLOSED_NORMAL, closed_normal)		/* both sides said EOF */ \
	X(CLOSED_IDLE_TIMEOUT, closed_idle_timeout) /* idle_timeout */	\
	X(CLOSED_HANDSHAKE_TIMEOUT, closed_handshake_timeout) /* TLS */	\
	X(CLOSED_HANDSHAKE_FAILED, closed_handshake_failed)		\
	/* pushed out, over a second in its handshake, for a new client */ \
	X(CLOSED_HANDSHAKE_EVICTED, closed_handshake_evicted)		\
	X(CLOSED_BACKEND_UNAVAILABLE, closed_backend_unavailable)	\
	X(CLOSED_CLIENT_RESET, closed_client_reset) /* error, client */	\
	X(CLOSED_BACKEND_RESET, closed_backend_reset) /* its backend */	\
	X(CLOSED_SHUTDOWN, closed_shutdown)	/* shutdown_timeout */	\
	X(CLOSED_LOCAL_ERROR, closed_local_error) /* memory, events */	\
	X(CLOSED_PROXY_FAILED, closed_proxy_failed) /* PROXY header */	\
	X(CLOSED_REFUSED, closed_refused) /* by the header's address */	\
	/* mode = "handoff" (handoff.c): the handler said it closed it, */ \
	X(CLOSED_BY_HANDLER, closed_by_handler)				\
	/* its channel to the handler ended (the handler exited), */	\
	X(CLOSED_HANDLER_LOST, closed_handler_lost)			\
	/* its worker stopped: the handler keeps it and tells a channel */ \
	X(CLOSED_HANDOFF_RELEASED, closed_handoff_released)		\
	X(CLOSED_WORKER_LOST, closed_worker_lost) /* its worker died */

/*
 * TLS handshakes by version and full or resumed, counted by tls.c when
 * one is done; then why one failed: exactly one reason for each that
 * tls_failures counts (their sum is tls_failures).
 */
#define TLS_COUNTERS(X)							\
	X(TLS12_FULL, tls12_full)					\
	X(TLS12_RESUMED, tls12_resumed)					\
	X(TLS13_FULL, tls13_full)					\
	X(TLS13_RESUMED, tls13_resumed)					\
	X(TLS_FAIL_TIMEOUT, tls_fail_timeout)	/* tls_handshake_timeout */ \
	X(TLS_FAIL_PLAINTEXT, tls_fail_plaintext) /* not a TLS record */ \
	X(TLS_FAIL_VERSION, tls_fail_version)	/* no version in common */ \
	X(TLS_FAIL_NO_CIPHER, tls_fail_no_cipher) /* nor cipher, group */ \
	X(TLS_FAIL_NO_CERT, tls_fail_no_cert)	/* required, not sent */ \
	X(TLS_FAIL_UNKNOWN_CA, tls_fail_unknown_ca) /* not tls_client_ca's */ \
	X(TLS_FAIL_EXPIRED, tls_fail_expired)	/* or not yet valid */	\
	X(TLS_FAIL_REVOKED, tls_fail_revoked)	/* in tls_crl */	\
	X(TLS_FAIL_BAD_CERT, tls_fail_bad_cert)	/* any other verify error */ \
	/* Counted by the SNI callback (tls_sni_strict), not yet here. */ \
	X(TLS_FAIL_UNKNOWN_SNI, tls_fail_unknown_sni)			\
	X(TLS_FAIL_NO_ALPN, tls_fail_no_alpn)	/* no tls_alpn in common */ \
	X(TLS_FAIL_OTHER, tls_fail_other)	/* a client gone, and more */

/*
 * The handshake duration histogram: the upper bounds of its buckets in
 * microseconds; one more bucket (+Inf) follows the last.
 */
#define TLS_HS_BUCKETS_US	{ 1000, 5000, 10000, 50000, 100000,	\
				  500000, 1000000, 5000000 }
#define TLS_HS_NBUCKETS		9	/* with +Inf */

/*
 * Why a client's PROXY header was refused (proxy_protocol_in): one of
 * these for each, in the order of enum proxy_in_err (proxy_in.h).
 * Untrusted is counted at the accept (never admitted); the others close
 * an admitted connection, as closed_proxy_failed.
 */
#define PROXY_FAILURES(X)						\
	X(PROXY_FAIL_BAD_SIGNATURE, proxy_fail_bad_signature)		\
	X(PROXY_FAIL_BAD_VERSION, proxy_fail_bad_version)		\
	X(PROXY_FAIL_BAD_FAMILY, proxy_fail_bad_family)			\
	X(PROXY_FAIL_BAD_LENGTH, proxy_fail_bad_length)			\
	X(PROXY_FAIL_BAD_ADDRESS, proxy_fail_bad_address)		\
	X(PROXY_FAIL_BAD_CHECKSUM, proxy_fail_bad_checksum)		\
	X(PROXY_FAIL_TIMEOUT, proxy_fail_timeout)	/* proxy_header_timeout */ \
	X(PROXY_FAIL_UNTRUSTED, proxy_fail_untrusted)	/* not a source */

#define SHM_COUNTERS(X)							\
	X(REJECTED_LIMIT, rejected_limit)	/* at max_connections */	\
	X(REJECTED_GLOBAL_LIMIT, rejected_global_limit) /* at the global */ \
	X(REJECTED_RULE, rejected_rule)		/* by allow/deny */	\
	X(REJECTED_RATE, rejected_rate)		/* over rate_limit */	\
	X(REJECTED_SOURCE, rejected_source)	/* over the per-source */ \
	X(REJECTED_SOURCE_RATE, rejected_source_rate) /* its source's rate */ \
	PROXY_FAILURES(X)			/* a PROXY header refused */ \
	X(REJECTED_EMFILE, rejected_emfile)	/* out of descriptors */ \
	X(REJECTED_HANDSHAKES, rejected_handshakes) /* max_handshakes */ \
	X(REJECTED_EARLY_DROP, rejected_early_drop) /* its random drop */ \
	X(BACKEND_FAILURES, backend_failures)	/* no backend reached */ \
	X(TLS_FAILURES, tls_failures)		/* handshake failed, late */ \
	TLS_COUNTERS(X)				/* handshakes, by kind */ \
	X(ACCEPT_ERRORS, accept_errors)		/* accept(), fd budget */ \
	CLOSE_REASONS(X)			/* why admitted ones ended */ \
	X(CLOSED, closed)			/* admitted, then ended */ \
	X(ACCEPTED, accepted)			/* admitted under the limit */ \
	/* mode = "handoff": passed to a handler (still open); open again */ \
	/* as a handler's "held" record said (books: accepted + adopted */ \
	/* - closed = connections); handler records refused as invalid */ \
	X(HANDED_OFF, handed_off)					\
	X(ADOPTED, adopted)						\
	X(HANDOFF_BAD_RECORDS, handoff_bad_records)			\
	X(BYTES_IN, bytes_in)			/* read from clients */	\
	X(BYTES_OUT, bytes_out)			/* written to clients */

enum shm_counter {
#define SHM_ENUM(E, f)	SC_##E,
	SHM_COUNTERS(SHM_ENUM)
#undef SHM_ENUM
	SC_COUNT
};

#define SHM_FIELD(E, f)		_Atomic uint64_t f;
#define SHM_TOTAL(E, f)		uint64_t f;

/*
 * A backend socket's connect latency histogram: the upper bounds of its
 * buckets in microseconds; one more bucket (+Inf) follows the last.
 */
#define BACKEND_CONNECT_BUCKETS_US { 100, 250, 500, 1000, 2500, 5000,	\
				  10000, 50000, 250000, 1000000 }
#define BACKEND_CONNECT_NBUCKETS	11	/* with +Inf */

/*
 * Why a connect to a backend socket failed: exactly one for each failed
 * attempt (backend.c).  missing: no such path (ENOENT, ENOTDIR); timeout:
 * connect_timeout ran out; refused: any other error (ECONNREFUSED from a
 * path nobody listens on, a PROXY header not taken).
 */
#define BACKEND_FAILURES(X)						\
	X(REFUSED, refused)						\
	X(MISSING, missing)						\
	X(TIMEOUT, timeout)

enum backend_failure {
#define BF_ENUM(E, f)	BF_##E,
	BACKEND_FAILURES(BF_ENUM)
#undef BF_ENUM
	BF_COUNT
};

/*
 * One backend socket of one listener, as every worker sees it: its
 * passive health (backend_health.c, which alone writes those words, by
 * compare-and-swap where two workers may race) and its counts.  Unlike
 * the per-slot counters these have many writers: a connect is rare next
 * to a byte, and one atomic add on it costs nothing beside the connect(2)
 * itself, while a per-slot copy would be 128 times the memory.  The open
 * connections are per slot (shm_counters.backend_open), so the master
 * can take back a dead worker's exactly.
 */
struct shm_backend {
	_Atomic int64_t		ejected_until;	/* ms, CLOCK_MONOTONIC; 0: up */
	_Atomic int64_t		probe_until;	/* a probe's claim ends (ms) */
	_Atomic int64_t		last_failure;	/* ms; 0: never failed */
	_Atomic uint32_t	fails;		/* consecutive failed connects */
	_Atomic uint32_t	interval_ms;	/* of the ejection now */
	_Atomic uint64_t	connects;	/* succeeded */
	_Atomic uint64_t	failures[BF_COUNT];
	_Atomic uint64_t	ejections, returns;
	_Atomic uint64_t	connect_bucket[BACKEND_CONNECT_NBUCKETS];
	_Atomic uint64_t	connect_us;	/* the latencies' sum */
	uint64_t		path_hash;	/* master only: whose state */
} __attribute__((aligned(64)));

/* One worker's share of one listener: its own cache lines, one writer. */
struct shm_counters {
	_Atomic int64_t		cur;		/* connections open now */
	/*
	 * This slot's worker watches the listener (not paused, suspended
	 * or draining): a peer may leave it the next client (accept.c).
	 * Cleared by the master when the worker dies.
	 */
	_Atomic int		accepting;
	union {				/* by name, or by enum shm_counter */
		_Atomic uint64_t n[SC_COUNT];
		struct { SHM_COUNTERS(SHM_FIELD) };
	};
	/* Handshakes done, by duration (not cumulative), and their sum. */
	_Atomic uint64_t	tls_hs_bucket[TLS_HS_NBUCKETS];
	_Atomic uint64_t	tls_hs_us;
	/*
	 * The handshake phase (hs_budget.c): this worker's connections in
	 * it now, as cur for max_handshakes; when the oldest of them began
	 * (µs, CLOCK_MONOTONIC; 0: none), for a peer at a limit to
	 * find the oldest anywhere; the push-outs peers asked of this
	 * worker (any worker adds, and says when it last did) and how many
	 * it has answered (it alone writes).
	 */
	_Atomic int64_t		hs_cur;
	_Atomic int64_t		hs_oldest_us;
	_Atomic uint64_t	evict_asked;
	_Atomic int64_t		evict_asked_us;
	_Atomic uint64_t	evict_served;
	/*
	 * This worker's connections on each backend socket, from the start
	 * of the connect to the close (backend.c, session_close): what
	 * balance = "least_connections" sums over the slots.
	 */
	_Atomic int64_t		backend_open[ESD_MAX_BACKENDS];
	/* mode = "handoff": bit b is set while this worker's channel to
	 * backend socket b is ready (handoff.c); cleared with the slot. */
	_Atomic uint32_t	channels_up;
} __attribute__((aligned(64)));

/* Totals over every slot, as read by the master. */
struct shm_totals {
	int64_t		cur;
	union {
		uint64_t n[SC_COUNT];
		struct { SHM_COUNTERS(SHM_TOTAL) };
	};
	uint64_t	tls_hs_bucket[TLS_HS_NBUCKETS];
	uint64_t	tls_hs_us;
};

/*
 * A listener's shared state.  A reload keeps a listener's index (and so
 * its counts and limit) when its bind is unchanged, under a new name
 * too, and gives a new listener the index its name had (reload.c).
 */
struct shm_listener {
	_Atomic int	max_connections; /* read at each admission */
	/* reserved_connections: of the global limit, only this one's. */
	_Atomic int	reserved;
	_Atomic int	suspended;	/* esockdctl suspend: do not accept */
	_Atomic uint64_t rate_tat;	/* rate_limit: when the next connection
					 * is due, CLOCK_MONOTONIC ns (GCRA) */
	int		in_use;		/* master only */
	char		name[ESD_NAME_MAX];
};

struct shm_region {
	_Atomic uint32_t	nslots;		/* slots ever used: sum bound */
	_Atomic uint32_t	nlisteners;	/* indices ever claimed: the same */
	/* The top-level max_connections, over every listener; 0 = none. */
	_Atomic int		max_connections;
	/*
	 * The master retired this slot's worker (a reload or the stop):
	 * it takes no new client from then on, even before its SIGTERM is
	 * handled, so a client that comes after "reloaded" meets the new
	 * configuration.  Cleared when the slot's next worker is forked.
	 */
	_Atomic int		retired[ESD_MAX_SLOTS];
	struct shm_listener	listeners[ESD_MAX_LISTENERS];
	struct shm_counters	counters[ESD_MAX_LISTENERS][ESD_MAX_SLOTS];
	struct shm_backend	backends[ESD_MAX_LISTENERS][ESD_MAX_BACKENDS];
	/* Per-source counts and rates (source_count.c); pages are touched
	 * only when used. */
	struct source_table	sources[ESD_MAX_SLOTS];
	struct source_rates	rates;
};

struct shm_region *shm_create(void);
void		shm_destroy(struct shm_region *);
int		shm_listener_find(struct shm_region *, const char *name);
int		shm_listener_claim(struct shm_region *, const char *name,
		    int max_connections, const uint64_t *busy);
void		shm_listener_rename(struct shm_region *, int li,
		    const char *name, int max_connections);
void		shm_listener_release(struct shm_region *, int li);
void		shm_listener_reserve(struct shm_region *, int li, int reserved);
void		shm_set_global_limit(struct shm_region *, int max_connections);
void		shm_use_slot(struct shm_region *, int slot);
int		shm_admit(struct shm_region *, int li, int slot);
int		shm_claim(struct shm_region *, int li, int slot,
		    enum shm_counter *why);
int		shm_hs_claim(struct shm_region *, int li, int slot, int max);
void		shm_hs_release(struct shm_region *, int li, int slot);
int64_t		shm_hs_current(struct shm_region *, int li);
int		shm_hs_oldest_slot(struct shm_region *, int li,
		    int64_t before_us);
uint64_t	shm_evict_ask(struct shm_region *, int li, int slot,
		    int64_t now_us);
int		shm_rate_admit(struct shm_region *, int li, int slot,
		    uint64_t now_ns, uint64_t interval_ns, uint64_t burst);
void		shm_release(struct shm_region *, int li, int slot);
void		shm_adopt(struct shm_region *, int li, int slot);
int		shm_channels_up(struct shm_region *, int li, size_t b);
uint64_t	str_hash(const char *);
int64_t		shm_current(struct shm_region *, int li);
int64_t		shm_reclaim_slot(struct shm_region *, int slot);
void		shm_totals(struct shm_region *, int li, struct shm_totals *);
void		shm_backends_bind(struct shm_region *, int li,
		    char *const *paths, size_t n);
int64_t		shm_backend_open(struct shm_region *, int li, size_t b);

/* The global limit and what it is checked against, as read now. */
struct shm_global {
	int		max_connections;	/* 0 = none */
	int64_t		connections;	/* open, every listener */
	int64_t		reserved;	/* the reservations' sum */
	int64_t		committed;	/* each listener's open or reserved,
					 * whichever is more, summed */
};
void		shm_global(struct shm_region *, struct shm_global *);

/*
 * Bump a monotonic counter of this worker's share; no other writer.
 * Release order, paired with shm_totals' acquire loads, so the order in
 * which a connection's counters move is the order a reader sees them
 * (see shm_totals).  On x86 it costs nothing.
 */
static inline void
shm_count(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_fetch_add_explicit(counter, n, memory_order_release);
}

static inline struct shm_counters *
shm_slot(struct shm_region *r, int li, int slot)
{
	return &r->counters[li][slot];
}

#endif
