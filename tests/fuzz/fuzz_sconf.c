/*
 * Fuzzes the ncgrpcd configuration (sconf.c): parse, validate, and a
 * command-line override taken from the input's last line ("key=value").
 */
#include <string.h>

#include "fuzz.h"
#include "nms/sconf.h"

static void
set_from_last_line(struct sconf *sc, const uint8_t *data, size_t size)
{
	const uint8_t *nl, *line = data, *eq;
	char key[64], value[512];
	size_t klen, vlen;
	char err[256];

	while ((nl = memchr(line, '\n', size - (size_t)(line - data))) !=
	           NULL &&
	       nl + 1 < data + size)
		line = nl + 1;
	vlen = size - (size_t)(line - data);
	if ((eq = memchr(line, '=', vlen)) == NULL)
		return;
	klen = (size_t)(eq - line);
	vlen -= klen + 1;
	if (klen >= sizeof(key) || vlen >= sizeof(value))
		return;
	memcpy(key, line, klen);
	key[klen] = '\0';
	memcpy(value, eq + 1, vlen);
	value[vlen] = '\0';
	if (sconf_set(sc, key, value, err, sizeof(err)) != 0)
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sconf *sc;
	char err[512];
	size_t i;

	memset(err, 'x', sizeof(err));
	if (sconf_parse_string("fuzz.conf", (const char *)data, size, &sc, err,
	                       sizeof(err)) != 0) {
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	if (size > 0)
		set_from_last_line(sc, data, size);
	memset(err, 'x', sizeof(err));
	if (sconf_validate(sc, err, sizeof(err)) != 0)
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	for (i = 0; i < sc->sc_nnames; i++)
		(void)sconf_name_valid(sc->sc_names[i].nm_name);
	sconf_free(sc);
	return 0;
}
