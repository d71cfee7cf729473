/*
 * Fuzzes the device registry file parser (registry.c) through
 * registry_parse(), the parser of registry_load() without the file.
 */
#include <string.h>

#include "fuzz.h"
#include "nms/registry.h"

static int
id_shaped(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || (c != 0 && strchr("._:@-", c) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct registry *reg;
	char err[512], id[REGISTRY_ID_MAX + 1];
	size_t n;

	memset(err, 'x', sizeof(err));
	if (registry_parse("devices", (const char *)data, size, &reg, err,
	                   sizeof(err)) != 0) {
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	/*
	 * A file that parsed and starts with an id-shaped word followed by a
	 * space starts with a device line: that device must be found.
	 */
	for (n = 0; n < size && n < REGISTRY_ID_MAX && id_shaped(data[n]); n++)
		id[n] = (char)data[n];
	id[n] = '\0';
	if (n > 0 && n < size && data[n] == ' ')
		FUZZ_CHECK(registry_has(reg, id));
	registry_free(reg);
	return 0;
}
