#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/pbwire.h"
#include "ncgrpc.pb-c.h"

static size_t
pack_init(const char *id, size_t idlen, const char *secret, size_t slen,
          uint8_t *out)
{
	size_t n = 0;

	out[n++] = 0x08; /* instance_id = 300 */
	out[n++] = 0xac;
	out[n++] = 0x02;
	out[n++] = 0x12; /* device_id */
	out[n++] = (uint8_t)idlen;
	memcpy(out + n, id, idlen);
	n += idlen;
	out[n++] = 0x1a; /* secret_key */
	out[n++] = (uint8_t)slen;
	memcpy(out + n, secret, slen);
	n += slen;
	return n;
}

static void
test_nul_found(void **state)
{
	uint8_t m[64];
	size_t n;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest *r;

	(void)state;
	n = pack_init("r1\0x", 4, "k", 1, m);
	assert_int_equal(pbwire_field_has_nul(m, n, 2), 1);
	assert_int_equal(pbwire_field_has_nul(m, n, 3), 0);
	/* What the check guards against: the decoder cuts at the NUL. */
	r = jnx__jet__netconf__ncgrpc_initialize_request__unpack(NULL, n, m);
	assert_non_null(r);
	assert_string_equal(r->device_id, "r1");
	jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(r, NULL);
	n = pack_init("r1", 2, "k\0junk", 6, m);
	assert_int_equal(pbwire_field_has_nul(m, n, 2), 0);
	assert_int_equal(pbwire_field_has_nul(m, n, 3), 1);
	n = pack_init("r1", 2, "k", 1, m);
	assert_int_equal(pbwire_field_has_nul(m, n, 2), 0);
	assert_int_equal(pbwire_field_has_nul(m, n, 3), 0);
	assert_int_equal(pbwire_field_has_nul(m, 0, 2), 0);
}

static void
test_malformed(void **state)
{
	uint8_t m[64];
	size_t n;
	static const uint8_t longvar[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
	                                  0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	static const uint8_t fixed[] = {0x09, 1, 2,    3, 4, 5, 6,
	                                7,    8, 0x15, 1, 2, 3, 4};
	static const uint8_t group[] = {0x0b};

	(void)state;
	n = pack_init("r1", 2, "k", 1, m);
	assert_int_equal(pbwire_field_has_nul(m, n - 1, 3), -EINVAL);
	assert_int_equal(pbwire_field_has_nul(m, 2, 3), -EINVAL);
	assert_int_equal(pbwire_field_has_nul(longvar, sizeof(longvar), 2),
	                 -EINVAL);
	assert_int_equal(pbwire_field_has_nul(fixed, sizeof(fixed), 2), 0);
	assert_int_equal(pbwire_field_has_nul(fixed, sizeof(fixed) - 1, 2),
	                 -EINVAL);
	assert_int_equal(pbwire_field_has_nul(group, sizeof(group), 2),
	                 -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nul_found),
	    cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
