/*
 * early_drop.c: handshake_early_drop, OpenSSH's MaxStartups applied to
 * esockd's handshake budget.  With "start:rate:full", a new connection
 * is refused with no chance while fewer than start percent of
 * max_handshakes are in their handshake phase, with rate percent at
 * start, a chance growing linearly to certainty at full, and always
 * from full on.  A flood of new connections then meets refusals before
 * the budget is spent, while a client trying again soon gets in.
 *
 * Pure: the parser takes the text, the chance takes the counts and the
 * draw takes the caller's generator state, so unit tests feed them all.
 * The generator is xorshift64* (Vigna): one word of state per worker,
 * no locks and no libc rand() state shared with anything else; it only
 * has to be unpredictable enough that a client cannot time its way past
 * a drop, and each worker seeds it from getrandom(2).
 */
#include "early_drop.h"

#include <stddef.h>

/* One percent field: 0 to 100, digits only.  The text after it in *end. */
static int
percent(const char *s, const char **end)
{
	int v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++)
		if ((v = v * 10 + (*s - '0')) > 100)
			return -1;
	*end = s;
	return v;
}

/*
 * Parse "START:RATE:FULL" (percents) into ed; "" is off.  Returns 0, or
 * -1 with *why saying what is wrong (a static string).
 */
int
early_drop_parse(const char *s, struct early_drop *ed, const char **why)
{
	int v[3];

	ed->on = 0;
	ed->start = ed->rate = ed->full = 0;
	if (*s == '\0')
		return 0;
	for (int i = 0; i < 3; i++) {
		if ((v[i] = percent(s, &s)) == -1) {
			*why = "each of START, RATE and FULL is a whole percent "
			    "from 0 to 100";
			return -1;
		}
		if (*s != (i < 2 ? ':' : '\0')) {
			*why = "it is not three numbers between colons";
			return -1;
		}
		s++;
	}
	if (v[0] >= v[2]) {
		*why = "START must be below FULL";
		return -1;
	}
	ed->on = 1;
	ed->start = v[0];
	ed->rate = v[1];
	ed->full = v[2];
	return 0;
}

/*
 * The chance, in parts per EARLY_DROP_PPM, that a new connection is
 * refused while n connections of a budget of max are in their handshake
 * phase.  Compared in whole connections times 100, so no percent is
 * rounded: 0 below start, rate at start, growing linearly to certainty
 * at full.
 */
uint32_t
early_drop_ppm(const struct early_drop *ed, int64_t n, int64_t max)
{
	int64_t at = 100 * n, from = (int64_t)ed->start * max;
	int64_t span = (int64_t)(ed->full - ed->start) * max;
	int64_t step = (int64_t)(100 - ed->rate) * (EARLY_DROP_PPM / 100);

	if (!ed->on || max <= 0 || at < from)
		return 0;
	if (at >= (int64_t)ed->full * max)
		return EARLY_DROP_PPM;
	/* at - from < span <= 100 * 10^7, step <= 10^6: no overflow. */
	return (uint32_t)((int64_t)ed->rate * (EARLY_DROP_PPM / 100) +
	    step * (at - from) / span);
}

/* Should this new connection be dropped?  Draws only when it may be. */
int
early_drop_hit(const struct early_drop *ed, int64_t n, int64_t max,
    uint64_t *rng)
{
	uint32_t ppm = early_drop_ppm(ed, n, max);

	if (ppm == 0)
		return 0;
	if (ppm >= EARLY_DROP_PPM)
		return 1;
	return early_drop_random(rng) % EARLY_DROP_PPM < ppm;
}

/* The next number of a xorshift64* generator; *state is never 0. */
uint64_t
early_drop_random(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/*
 * A generator state from entropy (getrandom's, or whatever the caller
 * has): splitmix64 spreads a weak seed over all 64 bits, and the state
 * is never 0, on which xorshift would stay.
 */
uint64_t
early_drop_seed(uint64_t entropy)
{
	uint64_t z = entropy + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return z != 0 ? z : 1;
}
