/*
 * source_count.c: max_connections_per_source and rate_limit_per_source,
 * exact across workers, by source (an address masked to its prefix).
 *
 * The open counts use the same "claim, then check" as the connection
 * limit (shm.c): a worker adds one to its own entry for the client's
 * source, sums that source's entries in every slot's table, and backs
 * out if the sum is over the limit.  With sequentially consistent counts,
 * of two racing claims at least one sees the other, so the limit is
 * never exceeded.
 *
 * Each slot's table is open-addressed and written by its worker only.
 * An entry is never emptied, only reused once its count is 0, so a
 * probe chain never breaks under a reader.  The key is rewritten under
 * a sequence number (odd while writing); the count goes from 0 to 1
 * only after, so a reader that sees a key change in progress is right to
 * count that entry as 0.  A dead worker's table is zeroed by the master
 * (source_reclaim_slot), which keeps the counts exact across crashes.
 *
 * The rates are the listener rate's GCRA (shm_rate_admit), one word per
 * source instead of one per listener: every worker moves the same word
 * with a compare-and-swap, so the rate is exact across workers.  The
 * word is the whole entry, when the next connection is due and a
 * fingerprint of the source, so there is no key to rewrite under a
 * reader and no lock for a dying worker to leave held.  A source has one
 * word, at the place its hash gives: no two words can ever hold the same
 * source, which several places to choose from could not promise without
 * a lock.  A word whose due time has passed holds nothing that a fresh
 * one would not (its source may come at once with its whole burst), so
 * any source may take it: state is kept exactly as long as it matters,
 * open connections or not, and never needs sweeping.
 */
#include "source_count.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "shm.h"

/* A rate word: due time in µs above, the source's fingerprint below. */
#define RATE_FP_BITS	14
#define RATE_FP_MASK	((UINT64_C(1) << RATE_FP_BITS) - 1)

/* Clear all but the first bits of the 16-byte address b. */
static void
mask_to(uint8_t b[16], int bits)
{
	for (int i = 0; i < 16; i++, bits -= 8) {
		if (bits >= 8)
			continue;
		b[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
	}
}

/*
 * The source of the client at sa: its address as 16 bytes, IPv4 as
 * ::ffff:a.b.c.d whether it came as AF_INET or IPv4-mapped AF_INET6,
 * masked to the prefix of its family.  -1: not an IP client.
 */
int
source_key_of(const struct sockaddr *sa, int prefix_v4, int prefix_v6,
    struct source_key *k)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	uint8_t b[16] = { 0 };

	if (sa->sa_family == AF_INET) {
		memcpy(b, mapped, sizeof(mapped));
		memcpy(b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6)
		memcpy(b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	else
		return -1;
	if (memcmp(b, mapped, sizeof(mapped)) == 0)
		mask_to(b, 96 + prefix_v4);
	else
		mask_to(b, prefix_v6);
	memcpy(&k->w[0], b, 8);
	memcpy(&k->w[1], b + 8, 8);
	return 0;
}

/* The 64-bit finalizer of MurmurHash3: every input bit moves every
 * output bit, so addresses that differ only in their last byte spread. */
static uint64_t
mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* The hash of source k on listener li, keyed by the region's seed. */
static uint64_t
hash_of(const struct shm_region *r, int li, const struct source_key *k)
{
	return mix(mix(mix(r->rates.seed ^ (uint64_t)li) ^ k->w[0]) ^ k->w[1]);
}

/* Where the probe for (li, k) starts in a slot's table of counts. */
static uint32_t
start_of(const struct shm_region *r, int li, const struct source_key *k)
{
	return (uint32_t)(hash_of(r, li, k) % SOURCE_ENTRIES);
}

/*
 * Seed the hash (master only, before the first fork).  Without
 * randomness the clock and the pid still make it hard to guess; only
 * crafted collisions would profit, so a start is not refused for it.
 */
void
source_init(struct shm_region *r)
{
	struct timespec ts = { 0, 0 };

	if (getrandom(&r->rates.seed, sizeof(r->rates.seed), 0) ==
	    (ssize_t)sizeof(r->rates.seed))
		return;
	log_warn("getrandom: the per-source tables' hash is seeded from "
	    "the clock instead");
	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		log_warn("clock_gettime");	/* the pid alone, then */
	r->rates.seed = mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
	    (uint64_t)getpid());
}

/* Is e, read consistently, (li, k)?  An entry mid-rewrite is not. */
static int
entry_is(struct source_entry *e, uint32_t seq, int li,
    const struct source_key *k)
{
	return (seq & 1) == 0 && atomic_load(&e->li) == (uint32_t)li &&
	    atomic_load(&e->key[0]) == k->w[0] &&
	    atomic_load(&e->key[1]) == k->w[1] &&
	    atomic_load_explicit(&e->seq, memory_order_acquire) == seq;
}

/* The open count of (li, k) in one slot's table. */
static int64_t
count_in(struct source_table *t, int li, const struct source_key *k,
    uint32_t at)
{
	int64_t sum = 0;

	for (int i = 0; i < SOURCE_PROBES; i++) {
		struct source_entry *e = &t->e[(at + (uint32_t)i) % SOURCE_ENTRIES];
		uint32_t seq = atomic_load_explicit(&e->seq,
		    memory_order_acquire);

		if (seq == 0)
			break;		/* never used: the chain ends */
		if (entry_is(e, seq, li, k))
			sum += atomic_load(&e->count);
	}
	return sum;
}

/*
 * This slot's entry for (li, k): the one it has, else one to reuse or
 * a fresh one, given the key.  Returns its index, or -1 when every entry
 * within SOURCE_PROBES is in use by other sources.
 */
static int32_t
own_entry(struct source_table *t, int li, const struct source_key *k,
    uint32_t at)
{
	int32_t spare = -1;
	struct source_entry *e;

	for (int i = 0; i < SOURCE_PROBES; i++) {
		int32_t idx = (int32_t)((at + (uint32_t)i) % SOURCE_ENTRIES);
		uint32_t seq;

		e = &t->e[idx];
		seq = atomic_load(&e->seq);
		if (seq != 0 && entry_is(e, seq, li, k))
			return idx;
		if (spare == -1 && (seq == 0 || atomic_load(&e->count) == 0))
			spare = idx;
		if (seq == 0)
			break;
	}
	if (spare == -1)
		return -1;
	atomic_store(&t->used, 1);
	e = &t->e[spare];
	atomic_store_explicit(&e->seq, atomic_load(&e->seq) | 1,
	    memory_order_release);
	atomic_store(&e->li, (uint32_t)li);
	atomic_store(&e->key[0], k->w[0]);
	atomic_store(&e->key[1], k->w[1]);
	atomic_store_explicit(&e->seq, atomic_load(&e->seq) + 1,
	    memory_order_release);
	return spare;
}

/*
 * Claim one connection for source k on listener li.  Returns 0 with
 * *entry set (release it later), -1 when the source already has limit
 * connections open, -2 when this slot's table has no room.  Refusals are
 * counted by the caller.
 */
int
source_admit(struct shm_region *r, int li, int slot,
    const struct source_key *k, int limit, int32_t *entry)
{
	uint32_t at = start_of(r, li, k), n = atomic_load(&r->nslots);
	int64_t sum = 0;
	int32_t idx;

	*entry = -1;
	if ((idx = own_entry(&r->sources[slot], li, k, at)) == -1)
		return -2;
	atomic_fetch_add(&r->sources[slot].e[idx].count, 1);
	for (uint32_t s = 0; s < n; s++)
		sum += count_in(&r->sources[s], li, k, at);
	if (sum > limit) {
		atomic_fetch_sub(&r->sources[slot].e[idx].count, 1);
		return -1;
	}
	*entry = idx;
	return 0;
}

/* A connection claimed with source_admit has ended. */
void
source_release(struct shm_region *r, int slot, int32_t entry)
{
	if (entry >= 0)
		atomic_fetch_sub(&r->sources[slot].e[entry].count, 1);
}

/* Connections open now from source k on listener li, over all slots. */
int
source_open(struct shm_region *r, int li, const struct source_key *k)
{
	uint32_t at = start_of(r, li, k), n = atomic_load(&r->nslots);
	int64_t sum = 0;

	for (uint32_t s = 0; s < n; s++)
		sum += count_in(&r->sources[s], li, k, at);
	return (int)sum;
}

/*
 * rate_limit_per_source: admit one connection from source k on listener
 * li at now_us, one every interval_us with burst more at once, as
 * shm_rate_admit does for the listener: from idle, burst + 1 may come at
 * once.  now_us is CLOCK_MONOTONIC (below 2^50, 35 years of uptime),
 * passed in so that tests can stop it.  Returns 0 when admitted, -1 when
 * over the rate (the caller counts it), and 1 when admitted unrated: the
 * source's word is another's still within its budget.  That fails open
 * on purpose: a word is held by connecting alone, so refusing would let
 * many sources lock out the ones whose words they took; the listener's
 * rate and max_connections still hold.  Two sources share a budget only
 * when their fingerprints are equal too, about once in 16384 such
 * meetings, and not a pair a client can choose (the seed).
 */
int
source_rate_admit(struct shm_region *r, int li, const struct source_key *k,
    uint64_t now_us, uint64_t interval_us, uint64_t burst)
{
	uint64_t h = hash_of(r, li, k), fp = (h >> 50) & RATE_FP_MASK;
	_Atomic uint64_t *w = &r->rates.w[h % SOURCE_RATE_ENTRIES];
	uint64_t cur = atomic_load(w), from;

	if (fp == 0)
		fp = 1;		/* 0 is a word never used */
	do {
		uint64_t due = cur >> RATE_FP_BITS;
		int mine = (cur & RATE_FP_MASK) == fp;

		if (!mine && due > now_us)
			return 1;
		from = mine && due > now_us ? due : now_us;
		if (from - now_us > burst * interval_us)
			return -1;
	} while (!atomic_compare_exchange_weak(w, &cur,
	    (from + interval_us) << RATE_FP_BITS | fp));
	return 0;
}

/*
 * A dead worker's slot (master only, after the reap: nothing else
 * writes it): its connections are gone, so are their counts.  Keys and
 * sequence numbers stay, so other slots' probe chains are unaffected.
 */
void
source_reclaim_slot(struct shm_region *r, int slot)
{
	struct source_table *t = &r->sources[slot];

	/* A slot that never counted a source: reading its 512 KiB would
	 * only fault in pages of zeros. */
	if (!atomic_load(&t->used))
		return;
	for (int i = 0; i < SOURCE_ENTRIES; i++)
		if (atomic_load(&t->e[i].seq) != 0)
			atomic_store(&t->e[i].count, 0);
}
