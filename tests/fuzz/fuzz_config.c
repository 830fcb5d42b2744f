/*
 * fuzz_config.c: libFuzzer target for config_load_string, the whole
 * config parser (libconfig's grammar, then the key table's checks), on
 * the input as a config file's text.  It must never crash, and what it
 * returns (a config, or the errors) must be freed entirely: LeakSanitizer
 * runs after each input.
 *
 * An input naming @include is skipped: libconfig would open the file it
 * names, and reading files (/dev/zero never ends) is I/O outside the
 * pure parser; what an included file holds is parsed as any other text.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(c)	do { if (!(c)) abort(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
	struct config_diag diag = { NULL, 0 };
	struct esd_config *c;
	char *text;

	if ((text = malloc(len + 1)) == NULL)
		return 0;
	memcpy(text, buf, len);
	text[len] = '\0';
	if (strstr(text, "@include") != NULL)
		goto out;
	c = config_load_string(text, "fuzz.conf", &diag);
	/* A config, or at least one error saying why not; never both. */
	CHECK((c != NULL) != (diag.n > 0));
	for (size_t i = 0; i < diag.n; i++)
		CHECK(strncmp(diag.lines[i], "fuzz.conf", 9) == 0 ||
		    strcmp(diag.lines[i], "out of memory") == 0);
	config_free(c);
	config_diag_free(&diag);
out:
	free(text);
	return 0;
}
