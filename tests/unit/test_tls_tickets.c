/*
 * test_tls_tickets.c: the session-ticket keys' pure parts: a line of a
 * tls_ticket_keys file, a whole file (which key encrypts), and the
 * rotation of random keys with the clock stopped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "tls_tickets.h"

/* n bytes, byte i = seed + i, in base64 (one line of a key file). */
static const char *
key_line(int n, int seed)
{
	static char out[4][200];
	static int next;
	unsigned char raw[120];
	char *o = out[next++ % 4];

	for (int i = 0; i < n; i++)
		raw[i] = (unsigned char)(seed + i);
	EVP_EncodeBlock((unsigned char *)o, raw, n);
	return o;
}

static void
lines_of_48_and_80_bytes_split_into_name_aes_and_hmac(void **state)
{
	struct ticket_key k;
	char why[256], crlf[200];

	(void)state;
	assert_int_equal(ticket_line_parse(key_line(80, 0), &k, why,
	    sizeof(why)), 0);
	assert_int_equal(k.size, 80);
	assert_int_equal(k.name[0], 0);
	assert_int_equal(k.aes[0], 16);		/* after the 16-byte name */
	assert_int_equal(k.hmac[0], 48);	/* after 32 bytes of AES */
	assert_int_equal(ticket_line_parse(key_line(48, 0), &k, why,
	    sizeof(why)), 0);
	assert_int_equal(k.size, 48);
	assert_int_equal(k.aes[0], 16);
	assert_int_equal(k.hmac[0], 32);	/* after 16 bytes of AES */
	/* A Windows line end is not part of the key. */
	snprintf(crlf, sizeof(crlf), "%s\r", key_line(80, 1));
	assert_int_equal(ticket_line_parse(crlf, &k, why, sizeof(why)), 0);
	assert_int_equal(k.name[0], 1);
}

static void
bad_lines_say_why(void **state)
{
	struct ticket_key k;
	char why[256];

	(void)state;
	assert_int_equal(ticket_line_parse("not base64 at all!!", &k, why,
	    sizeof(why)), -1);
	assert_non_null(strstr(why, "not base64"));
	assert_int_equal(ticket_line_parse(key_line(64, 0), &k, why,
	    sizeof(why)), -1);
	assert_non_null(strstr(why, "64 bytes"));
	assert_int_equal(ticket_line_parse(key_line(79, 0), &k, why,
	    sizeof(why)), -1);
	assert_non_null(strstr(why, "79 bytes"));
	assert_int_equal(ticket_line_parse(key_line(96, 0), &k, why,
	    sizeof(why)), -1);
}

static void
a_file_uses_its_last_three_keys_and_the_penultimate_encrypts(void **state)
{
	struct ticket_set s;
	char text[1024], why[256];
	int line;

	(void)state;
	snprintf(text, sizeof(text), "%s\n\n%s\n%s\n%s\n", key_line(80, 1),
	    key_line(80, 2), key_line(80, 3), key_line(80, 4));
	assert_int_equal(ticket_text_parse(text, &s, &line, why, sizeof(why)),
	    0);
	assert_int_equal(s.n, 3);
	assert_true(s.from_file);
	assert_int_equal(s.k[0].name[0], 2);	/* the oldest still used */
	assert_int_equal(s.k[s.enc].name[0], 3);	/* the penultimate */
	assert_int_equal(s.k[2].name[0], 4);	/* the newest decrypts */
	assert_int_equal(ticket_find(&s, s.k[0].name), 0);
	assert_int_equal(ticket_find(&s, s.k[2].name), 2);
}

/* text is refused with want in the reason: the line it names. */
static int
refused_at(const char *text, const char *want)
{
	struct ticket_set s;
	char why[256];
	int line;

	assert_int_equal(ticket_text_parse(text, &s, &line, why, sizeof(why)),
	    -1);
	assert_non_null(strstr(why, want));
	return line;
}

static void
a_bad_file_names_its_line(void **state)
{
	char text[1024];

	(void)state;
	snprintf(text, sizeof(text), "%s\n%s\n%s\n", key_line(80, 1),
	    "@@@@", key_line(80, 3));
	assert_int_equal(refused_at(text, "not base64"), 2);
	snprintf(text, sizeof(text), "%s\n%s\n%s\n", key_line(80, 1),
	    key_line(80, 2), key_line(48, 3));
	assert_int_equal(refused_at(text, "same length"), 3);
	snprintf(text, sizeof(text), "%s\n%s\n", key_line(48, 1),
	    key_line(48, 2));
	/* Too few keys: the whole file, no line. */
	assert_int_equal(refused_at(text, "at least 3"), 0);
}

static void
fresh_bytes(unsigned char *b, int seed)
{
	for (int i = 0; i < TICKET_KEY_LARGE; i++)
		b[i] = (unsigned char)(seed * 7 + i);
}

static void
a_random_key_encrypts_one_lifetime_and_decrypts_one_more(void **state)
{
	struct ticket_set s;
	unsigned char b[TICKET_KEY_LARGE], first[TICKET_NAME_LEN];
	const int64_t t0 = 1000000, life = 60;

	(void)state;
	memset(&s, 0, sizeof(s));
	s.lifetime = (int)life;
	fresh_bytes(b, 1);
	assert_int_equal(ticket_rotate(&s, t0, b), 1);	/* the first key */
	assert_int_equal(s.n, 1);
	memcpy(first, s.k[s.enc].name, sizeof(first));
	/* Within its lifetime: nothing moves, whatever the fresh bytes. */
	fresh_bytes(b, 2);
	assert_int_equal(ticket_rotate(&s, t0 + life - 1, b), 0);
	assert_int_equal(s.n, 1);
	assert_memory_equal(s.k[s.enc].name, first, sizeof(first));
	/* One lifetime on: a new key encrypts, the first still decrypts. */
	assert_int_equal(ticket_rotate(&s, t0 + life, b), 1);
	assert_int_equal(s.n, 2);
	assert_memory_not_equal(s.k[s.enc].name, first, sizeof(first));
	assert_int_not_equal(ticket_find(&s, first), -1);
	assert_int_not_equal(ticket_find(&s, first), s.enc);
	/* Just before two lifetimes, it still does. */
	assert_int_equal(ticket_rotate(&s, t0 + 2 * life - 1, b), 0);
	assert_int_not_equal(ticket_find(&s, first), -1);
	/* At two lifetimes it is gone, and a third key encrypts. */
	fresh_bytes(b, 3);
	assert_int_equal(ticket_rotate(&s, t0 + 2 * life, b), 1);
	assert_int_equal(ticket_find(&s, first), -1);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.k[s.enc].name[0], 3 * 7);
}

static void
a_master_asleep_for_long_keeps_only_a_new_key(void **state)
{
	struct ticket_set s;
	unsigned char b[TICKET_KEY_LARGE];

	(void)state;
	memset(&s, 0, sizeof(s));
	s.lifetime = 60;
	fresh_bytes(b, 1);
	ticket_rotate(&s, 0, b);
	fresh_bytes(b, 2);
	ticket_rotate(&s, 60, b);
	fresh_bytes(b, 3);
	assert_int_equal(ticket_rotate(&s, 100000, b), 1);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.enc, 0);
	assert_int_equal(s.k[0].name[0], 3 * 7);
	assert_int_equal(s.k[0].born, 100000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		    lines_of_48_and_80_bytes_split_into_name_aes_and_hmac),
		cmocka_unit_test(bad_lines_say_why),
		cmocka_unit_test(
		    a_file_uses_its_last_three_keys_and_the_penultimate_encrypts),
		cmocka_unit_test(a_bad_file_names_its_line),
		cmocka_unit_test(
		    a_random_key_encrypts_one_lifetime_and_decrypts_one_more),
		cmocka_unit_test(a_master_asleep_for_long_keeps_only_a_new_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
