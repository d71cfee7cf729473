/*
 * Fuzzes ncgrpc-sshd's authorized_keys parser (src/sshd/akeys.c): the file,
 * then every parsed key against device names and session types taken from
 * the input, and the input's last line as an SSH user name.
 */
#include <string.h>

#include "fuzz.h"
#include "sshd/akeys.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512], user[600], op[AKEYS_MAX_OPERATOR + 1];
	char dev[AKEYS_MAX_DEVICE + 1];
	const uint8_t *line = data, *nl;
	struct akeys *as;
	size_t i, n;
	int rc;

	memset(err, 'x', sizeof(err));
	rc = akeys_parse("fuzz", (const char *)data, size, &as, err,
	                 sizeof(err));
	FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	if (rc == 0) {
		for (i = 0; i < as->as_nkeys; i++) {
			const struct akey *ak = &as->as_keys[i];

			FUZZ_CHECK(ak->ak_operator[0] != '\0');
			FUZZ_CHECK(ak->ak_ndevices > 0 &&
			           ak->ak_ndevices <= AKEYS_MAX_PATTERNS);
			FUZZ_CHECK((ak->ak_sessions & ~AKEYS_ALL) == 0 &&
			           ak->ak_sessions != 0);
			FUZZ_CHECK(akeys_find(as, ak->ak_key) != NULL);
			(void)akeys_allows(ak, ak->ak_devices[0],
			                   AKEYS_NETCONF);
		}
	}
	/* The last line as a user name. */
	while ((nl = memchr(line, '\n', size - (size_t)(line - data))) != NULL)
		line = nl + 1;
	n = size - (size_t)(line - data);
	if (n < sizeof(user) && memchr(line, '\0', n) == NULL) {
		memcpy(user, line, n);
		user[n] = '\0';
		if (akeys_parse_user(user, op, dev) == 0) {
			FUZZ_CHECK(akeys_device_valid(dev));
			FUZZ_CHECK(strlen(op) <= AKEYS_MAX_OPERATOR);
			if (rc == 0)
				for (i = 0; i < as->as_nkeys; i++)
					(void)akeys_allows(&as->as_keys[i], dev,
					                   AKEYS_SHELL);
		}
	}
	if (rc == 0)
		akeys_free(as);
	return 0;
}
