/*
 * tls_tickets.c: the session-ticket keys, master and worker side.
 *
 * OpenSSL makes random ticket keys with each SSL_CTX, and a reload makes
 * new contexts, so every client's session stopped resuming at once (a
 * storm of full handshakes).  Here the keys belong to the daemon: the
 * master keeps each listener's keys in a shared slot, indexed like the
 * listener's counters (its si, kept across a reload), made before any
 * fork so every worker of every generation reads the same keys, and the
 * context's ticket callback reads the slot at each handshake.
 *
 * Without tls_ticket_keys the master makes a random key when a listener
 * first appears and a new one every tls_ticket_lifetime (on its status
 * timer, and at each commit); the previous key still decrypts for one
 * more lifetime.  With tls_ticket_keys the keys come from a file in
 * HAProxy's tls-ticket-keys format, read again at each reload: its last
 * three keys decrypt and the penultimate one encrypts, so a fleet can
 * append a key everywhere and reload in any order.
 *
 * The pure parts (a line of the file, the file's text, the rotation with
 * the clock passed in) take buffers and structs and are unit-tested.
 */
#include "tls_tickets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "log.h"

/* A key file bigger than this is not a key file. */
#define KEY_FILE_MAX	65536

/*
 * A listener's slot.  One writer (the master) and many readers (every
 * worker, at each handshake), across processes, so no lock a dead worker
 * could leave held.  A sequence counter (seqlock) rather than a publish
 * of a pointer to one of two copies: with two copies a reader slowed
 * down between loading the pointer and copying could see the master
 * rewrite that copy twice over (two quick reloads) and read a torn key;
 * with the counter the reader always notices and copies again.  The
 * writer makes the counter odd, writes, makes it even; a reader copies
 * the set and keeps the copy only if the counter was even and unchanged
 * around it.  The slot is a few hundred bytes and written at most at a
 * reload or a rotation, so a reader hardly ever retries.
 */
struct ticket_slot {
	_Atomic uint32_t	seq;
	struct ticket_set	set;
};

static struct ticket_slot *slots;	/* ESD_MAX_LISTENERS, shared */
static int ex_index = -1;		/* SSL_CTX ex_data: the slot's si */

/* Decoded key bytes into k: name, then the AES key, then the HMAC key. */
static void
key_from_bytes(struct ticket_key *k, const unsigned char *b, int size)
{
	int half = (size - TICKET_NAME_LEN) / 2;

	memset(k, 0, sizeof(*k));
	memcpy(k->name, b, TICKET_NAME_LEN);
	memcpy(k->aes, b + TICKET_NAME_LEN, (size_t)half);
	memcpy(k->hmac, b + TICKET_NAME_LEN + half, (size_t)half);
	k->size = size;
}

int
ticket_line_parse(const char *line, struct ticket_key *k, char *why,
    size_t len)
{
	unsigned char out[3 * 128 / 4 + 3];
	size_t n = strlen(line);
	int got, pad = 0;

	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' ||
	    line[n - 1] == '\t'))
		n--;
	if (n > 128) {
		snprintf(why, len, "a key of %zu base64 characters; a key is "
		    "48 or 80 bytes (64 or 108 characters)", n);
		return -1;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes: take it off. */
	if ((got = EVP_DecodeBlock(out, (const unsigned char *)line,
	    (int)n)) < 0) {
		snprintf(why, len, "not base64; make a key with 'openssl rand "
		    "80 | openssl base64 -A'");
		return -1;
	}
	while (pad < 2 && n > (size_t)pad && line[n - 1 - pad] == '=')
		pad++;
	got -= pad;
	if (got != TICKET_KEY_SMALL && got != TICKET_KEY_LARGE) {
		OPENSSL_cleanse(out, sizeof(out));
		snprintf(why, len, "a key of %d bytes; a key is 48 bytes "
		    "(AES-128) or 80 bytes (AES-256)", got);
		return -1;
	}
	key_from_bytes(k, out, got);
	OPENSSL_cleanse(out, sizeof(out));
	return 0;
}

int
ticket_text_parse(const char *text, struct ticket_set *s, int *line,
    char *why, size_t len)
{
	struct ticket_key ring[TICKET_KEYS];
	int count = 0, lineno = 0, rc = -1;
	const char *p = text;

	memset(s, 0, sizeof(*s));
	*line = 0;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		char buf[256];
		struct ticket_key *k = &ring[count % TICKET_KEYS];

		lineno++;
		/* A longer line is cut, and fails on its length. */
		memcpy(buf, p, n < sizeof(buf) ? n : sizeof(buf) - 1);
		buf[n < sizeof(buf) ? n : sizeof(buf) - 1] = '\0';
		p += n + (nl != NULL);
		if (buf[strspn(buf, " \t\r")] == '\0')
			continue;		/* a blank line */
		if (ticket_line_parse(buf, k, why, len) == -1) {
			*line = lineno;
			goto out;
		}
		/* One cipher per file, as HAProxy has it. */
		if (count > 0 && k->size != ring[0].size) {
			snprintf(why, len, "a key of %d bytes after keys of %d; "
			    "every key of the file has the same length",
			    k->size, ring[0].size);
			*line = lineno;
			goto out;
		}
		count++;
	}
	if (count < TICKET_KEYS) {
		snprintf(why, len, "%d keys; the file needs at least %d (the "
		    "last %d are used, the penultimate one encrypts), one per "
		    "line", count, TICKET_KEYS, TICKET_KEYS);
		goto out;
	}
	/* Oldest first: the last three, the penultimate one encrypting. */
	for (int i = 0; i < TICKET_KEYS; i++)
		s->k[i] = ring[(count + i) % TICKET_KEYS];
	s->n = TICKET_KEYS;
	s->enc = TICKET_KEYS - 2;
	s->from_file = 1;
	rc = 0;
out:
	OPENSSL_cleanse(ring, sizeof(ring));
	return rc;
}

int
ticket_rotate(struct ticket_set *s, int64_t now,
    const unsigned char fresh[TICKET_KEY_LARGE])
{
	int64_t life = s->lifetime;
	int changed = 0, j = 0, enc = -1;

	if (s->n == 0 || now >= s->k[s->enc].born + life) {
		if (s->n == TICKET_KEYS) {	/* the oldest goes first */
			memmove(&s->k[0], &s->k[1],
			    (TICKET_KEYS - 1) * sizeof(s->k[0]));
			s->n--;
		}
		key_from_bytes(&s->k[s->n], fresh, TICKET_KEY_LARGE);
		s->k[s->n].born = now;
		s->enc = s->n++;
		changed = 1;
	}
	/* A key decrypts until two lifetimes after its birth. */
	for (int i = 0; i < s->n; i++) {
		if (i != s->enc && now >= s->k[i].born + 2 * life) {
			changed = 1;
			continue;
		}
		if (i == s->enc)
			enc = j;
		if (j != i)
			s->k[j] = s->k[i];
		j++;
	}
	if (j < s->n)
		OPENSSL_cleanse(&s->k[j], (size_t)(s->n - j) * sizeof(s->k[0]));
	s->n = j;
	s->enc = enc;
	return changed;
}

int
ticket_find(const struct ticket_set *s,
    const unsigned char name[TICKET_NAME_LEN])
{
	for (int i = 0; i < s->n; i++)
		if (CRYPTO_memcmp(s->k[i].name, name, TICKET_NAME_LEN) == 0)
			return i;
	return -1;
}

/* Worker: a torn-free copy of slot si, or -1 (none, or always being
 * written: the handshake goes on without a ticket). */
static int
slot_read(int si, struct ticket_set *out)
{
	struct ticket_slot *sl;

	if (slots == NULL || si < 0 || si >= ESD_MAX_LISTENERS)
		return -1;
	sl = &slots[si];
	for (int tries = 0; tries < 1000; tries++) {
		uint32_t a = atomic_load_explicit(&sl->seq,
		    memory_order_acquire);

		if (a & 1)
			continue;
		memcpy(out, &sl->set, sizeof(*out));
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&sl->seq, memory_order_relaxed) == a)
			return 0;
	}
	return -1;
}

/* Master, the one writer: publish s into slot si. */
static void
slot_write(int si, const struct ticket_set *s)
{
	struct ticket_slot *sl = &slots[si];
	uint32_t q = atomic_load_explicit(&sl->seq, memory_order_relaxed);

	atomic_store_explicit(&sl->seq, q + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	memcpy(&sl->set, s, sizeof(*s));
	atomic_store_explicit(&sl->seq, q + 2, memory_order_release);
}

/* The cipher and the MAC set up with key k; iv is made when encrypting. */
static int
key_init(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *c,
    EVP_MAC_CTX *mac, int enc)
{
	static char digest[] = "SHA256";
	const EVP_CIPHER *cipher = k->size == TICKET_KEY_LARGE ?
	    EVP_aes_256_cbc() : EVP_aes_128_cbc();
	size_t half = (size_t)(k->size - TICKET_NAME_LEN) / 2;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
		    digest, 0),
		OSSL_PARAM_construct_end()
	};

	if (enc && RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1)
		return -1;
	if ((enc ? EVP_EncryptInit_ex(c, cipher, NULL, k->aes, iv) :
	    EVP_DecryptInit_ex(c, cipher, NULL, k->aes, iv)) != 1)
		return -1;
	if (EVP_MAC_init(mac, k->hmac, half, params) != 1)
		return -1;
	return 0;
}

/*
 * OpenSSL's ticket callback.  Encrypting: the slot's encrypting key, or
 * no ticket (0) when there is none.  Decrypting: the key the ticket
 * names, and always 2 ("renew"): OpenSSL sends a TLS 1.3 client a new
 * ticket after a resumption only when asked to, and a client that keeps
 * only its last session (RFC 8446 advises one use per ticket) would
 * otherwise do a full handshake every other time (the TLS benchmark
 * resumed 50% of its handshakes, HAProxy 99.8%).  It also moves a client
 * of an older key to the current one.  0 (a full handshake) when no key
 * has the ticket's name any more.
 */
static int
ticket_cb(SSL *ssl, unsigned char name[TICKET_NAME_LEN], unsigned char *iv,
    EVP_CIPHER_CTX *c, EVP_MAC_CTX *mac, int enc)
{
	const int *si = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
	struct ticket_set s;
	int i, rc = 0;

	if (si == NULL || slot_read(*si, &s) == -1)
		return 0;
	if (enc) {
		if (s.n == 0)
			goto out;
		memcpy(name, s.k[s.enc].name, TICKET_NAME_LEN);
		rc = key_init(&s.k[s.enc], iv, c, mac, 1) == -1 ? -1 : 1;
		goto out;
	}
	if ((i = ticket_find(&s, name)) == -1)
		goto out;
	if (key_init(&s.k[i], iv, c, mac, 0) == -1)
		rc = -1;
	else
		rc = 2;
out:
	OPENSSL_cleanse(&s, sizeof(s));
	return rc;
}

int
tls_tickets_init(void)
{
	void *p = mmap(NULL, ESD_MAX_LISTENERS * sizeof(*slots),
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_error("cannot map the session-ticket keys");
		return -1;
	}
	slots = p;
	return 0;
}

int
tls_tickets_install(SSL_CTX *ctx, const int *si)
{
	if (ex_index == -1 && (ex_index = SSL_CTX_get_ex_new_index(0, NULL,
	    NULL, NULL, NULL)) == -1)
		return -1;
	if (SSL_CTX_set_ex_data(ctx, ex_index, (void *)si) != 1)
		return -1;
	if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1)
		return -1;
	return 0;
}

/*
 * The file's text, or NULL with the error in diag: it must be a regular
 * file that neither group nor others can read or write (it is a secret:
 * whoever has it can decrypt every session made with its keys).
 */
static char *
key_file_read(const struct esd_config *conf, const struct listener_conf *lc,
    struct config_diag *diag)
{
	const char *path = lc->tls_ticket_keys;
	struct stat st;
	char *text = NULL;
	ssize_t got = 0, r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		config_diag_add(diag, "%s:%d: listener '%s': cannot open the "
		    "ticket key file %s: %s; give a readable file", conf->path,
		    lc->tls_ticket_line, lc->name, path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size > KEY_FILE_MAX) {
		config_diag_add(diag, "%s:%d: listener '%s': the ticket key "
		    "file %s is not a regular file of at most %d bytes; give "
		    "one key per line", conf->path, lc->tls_ticket_line,
		    lc->name, path, KEY_FILE_MAX);
		goto fail;
	}
	if (st.st_mode & 077) {
		config_diag_add(diag, "%s:%d: listener '%s': the ticket key "
		    "file %s is open to group or others (mode %04o); it is a "
		    "secret: chmod 600 %s", conf->path, lc->tls_ticket_line,
		    lc->name, path, (unsigned)(st.st_mode & 07777), path);
		goto fail;
	}
	if ((text = malloc((size_t)st.st_size + 1)) == NULL) {
		config_diag_add(diag, "%s: out of memory for %s", conf->path,
		    path);
		goto fail;
	}
	while (got < st.st_size && (r = read(fd, text + got,
	    (size_t)(st.st_size - got))) != 0) {
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			config_diag_add(diag, "%s:%d: listener '%s': cannot "
			    "read %s: %s", conf->path, lc->tls_ticket_line,
			    lc->name, path, strerror(errno));
			goto fail;
		}
		got += r;
	}
	text[got] = '\0';
	if (strlen(text) != (size_t)got) {
		config_diag_add(diag, "%s:%d: listener '%s': the ticket key "
		    "file %s holds a NUL byte; give base64 lines only",
		    conf->path, lc->tls_ticket_line, lc->name, path);
		goto fail;
	}
	close(fd);
	return text;
fail:
	free(text);
	close(fd);
	return NULL;
}

int
tls_tickets_prepare(const struct esd_config *conf,
    const struct listener_conf *lc, struct listener *l,
    struct config_diag *diag)
{
	struct ticket_set *s = NULL;
	char *text, why[256];
	int line, rc = -1;

	l->tickets = NULL;
	if (l->tls_ctx != NULL && tls_tickets_install(l->tls_ctx,
	    &l->si) == -1) {
		config_diag_add(diag, "%s:%d: listener '%s': cannot install "
		    "the session-ticket keys", conf->path, lc->tls_line,
		    lc->name);
		return -1;
	}
	/* A session is good for as long as its key encrypts (it returns
	 * the previous timeout: nothing to check). */
	if (l->tls_ctx != NULL && lc->tls_ticket_keys[0] == '\0')
		SSL_CTX_set_timeout(l->tls_ctx, lc->tls_ticket_lifetime);
	if (lc->tls_ticket_keys[0] == '\0')
		return 0;
	if ((text = key_file_read(conf, lc, diag)) == NULL)
		return -1;
	if ((s = malloc(sizeof(*s))) == NULL) {
		config_diag_add(diag, "%s: out of memory", conf->path);
		goto out;
	}
	if (ticket_text_parse(text, s, &line, why, sizeof(why)) == -1) {
		if (line > 0)
			config_diag_add(diag, "%s:%d: %s (tls_ticket_keys of "
			    "listener '%s', %s:%d)", lc->tls_ticket_keys, line,
			    why, lc->name, conf->path, lc->tls_ticket_line);
		else
			config_diag_add(diag, "%s:%d: listener '%s': the "
			    "ticket key file %s has %s", conf->path,
			    lc->tls_ticket_line, lc->name, lc->tls_ticket_keys,
			    why);
		goto out;
	}
	l->tickets = s;
	s = NULL;
	rc = 0;
out:
	tls_tickets_free(s);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	return rc;
}

/*
 * The master's clock for rotation.  ESOCKD_TEST_TICKET_CLOCK names a
 * file holding seconds to add to it: only the tests set it, so that they
 * can age a key by a lifetime without waiting one.
 */
static int64_t
tickets_now(void)
{
	const char *path = getenv("ESOCKD_TEST_TICKET_CLOCK");
	int64_t now = (int64_t)time(NULL);
	long long skew = 0;
	FILE *f;

	if (path == NULL || (f = fopen(path, "re")) == NULL)
		return now;
	if (fscanf(f, "%lld", &skew) != 1)
		skew = 0;
	fclose(f);
	return now + skew;
}

/* Rotate s at now with fresh random bytes; 1 when it changed. */
static int
rotate_random(struct ticket_set *s, int64_t now)
{
	unsigned char fresh[TICKET_KEY_LARGE];
	int changed;

	if (RAND_bytes(fresh, sizeof(fresh)) != 1) {
		log_warnx("cannot make a session-ticket key; the current "
		    "one is kept");
		return 0;
	}
	changed = ticket_rotate(s, now, fresh);
	OPENSSL_cleanse(fresh, sizeof(fresh));
	return changed;
}

void
tls_tickets_commit(struct listener *l, size_t n)
{
	int64_t now = tickets_now();

	for (size_t i = 0; i < n; i++) {
		struct ticket_set s;
		int si = l[i].si;

		if (slots == NULL || l[i].tls_ctx == NULL || si < 0 ||
		    si >= ESD_MAX_LISTENERS)
			continue;
		/* The master is the only writer: its reads need no care. */
		memcpy(&s, &slots[si].set, sizeof(s));
		if (l[i].tickets != NULL) {
			memcpy(&s, l[i].tickets, sizeof(s));
		} else {
			if (s.from_file)	/* the file was taken out */
				memset(&s, 0, sizeof(s));
			s.lifetime = l[i].conf->tls_ticket_lifetime;
			rotate_random(&s, now);
		}
		slot_write(si, &s);
		OPENSSL_cleanse(&s, sizeof(s));
		tls_tickets_free(l[i].tickets);	/* in the slot now */
		l[i].tickets = NULL;
	}
}

void
tls_tickets_forget(int si)
{
	struct ticket_set none;

	if (slots == NULL || si < 0 || si >= ESD_MAX_LISTENERS)
		return;
	memset(&none, 0, sizeof(none));
	slot_write(si, &none);
}

void
tls_tickets_rotate_all(void)
{
	int64_t now = tickets_now();

	for (int si = 0; slots != NULL && si < ESD_MAX_LISTENERS; si++) {
		struct ticket_set s;

		memcpy(&s, &slots[si].set, sizeof(s));
		if (s.n > 0 && !s.from_file && rotate_random(&s, now))
			slot_write(si, &s);
		OPENSSL_cleanse(&s, sizeof(s));
	}
}

void
tls_tickets_free(struct ticket_set *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}
