/*
 * Fuzzes the ncgrpc-agent configuration (conf.c, with its "$9$" secrets):
 * parse, validate, and the lookups a reload makes.
 */
#include <string.h>

#include "agent/conf.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *cf;
	char err[512];
	size_t i;

	memset(err, 'x', sizeof(err));
	if (conf_parse_string("fuzz.conf", (const char *)data, size, &cf, err,
	                      sizeof(err)) != 0) {
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	memset(err, 'x', sizeof(err));
	if (conf_validate(cf, err, sizeof(err)) != 0)
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	for (i = 0; i < cf->cf_nclients; i++) {
		const struct conf_client *cl = &cf->cf_clients[i];

		FUZZ_CHECK(conf_client_equal_conn(cl, cl));
		FUZZ_CHECK(conf_client_find(cf, cl->cc_name) != NULL);
		if (cl->cc_secret != NULL)
			FUZZ_CHECK(strlen(cl->cc_secret) == cl->cc_secret_len);
		(void)conf_reconnect_name(cl->cc_reconnect);
	}
	conf_free(cf);
	return 0;
}
