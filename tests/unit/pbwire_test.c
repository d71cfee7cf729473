#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/pbwire.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "ncgrpc_wire.pb-c.h"

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

/* What the decoder makes of msg: CommandGetRequest.message. */
static void
assert_decodes_to(const uint8_t *msg, size_t len, const uint8_t *want,
                  size_t nwant)
{
	Ncgrpc__Wire__CommandGetRequest *r;

	r = ncgrpc__wire__command_get_request__unpack(NULL, len, msg);
	assert_non_null(r);
	assert_int_equal(r->message.len, nwant);
	if (nwant > 0)
		assert_memory_equal(r->message.data, want, nwant);
	ncgrpc__wire__command_get_request__free_unpacked(r, NULL);
}

static void
test_only_bytes(void **state)
{
	static uint8_t big[300], buf[400];
	static const uint8_t twice[] = {0x0a, 1, 'a', 0x0a, 2, 'b', 'c'};
	Ncgrpc__Wire__CommandGetRequest req =
	    NCGRPC__WIRE__COMMAND_GET_REQUEST__INIT;
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	const uint8_t *d = NULL;
	size_t n = 0, len;

	(void)state;
	/* As protobuf-c packs them: a short payload and a 2-byte length. */
	req.message.data = (uint8_t *)(uintptr_t) "hello";
	req.message.len = 5;
	len = ncgrpc__wire__command_get_request__pack(&req, buf);
	assert_int_equal(
	    pbwire_only_bytes(buf, len, PBWIRE_CMDGET_REQUEST_MESSAGE, &d, &n),
	    1);
	assert_ptr_equal(d, buf + 2);
	assert_int_equal(n, 5);
	memset(big, 'x', sizeof(big));
	req.message.data = big;
	req.message.len = sizeof(big);
	len = ncgrpc__wire__command_get_request__pack(&req, buf);
	assert_int_equal(pbwire_only_bytes(buf, len, 1, &d, &n), 1);
	assert_ptr_equal(d, buf + 3);
	assert_int_equal(n, sizeof(big));
	assert_int_equal(pbwire_only_bytes(buf, len, 2, &d, &n), 0);
	/* SessionOutput.data is field 2 of a oneof. */
	out.output_case = NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA;
	out.data.data = (uint8_t *)(uintptr_t) "out";
	out.data.len = 3;
	len = ncgrpc__operator__v1__session_output__pack(&out, buf);
	assert_int_equal(
	    pbwire_only_bytes(buf, len, PBWIRE_SESSION_OUTPUT_DATA, &d, &n), 1);
	assert_int_equal(n, 3);
	assert_memory_equal(d, "out", 3);
	/* The last occurrence wins, as in the decoder. */
	assert_int_equal(pbwire_only_bytes(twice, sizeof(twice), 1, &d, &n), 1);
	assert_ptr_equal(d, twice + 5);
	assert_int_equal(n, 2);
	assert_decodes_to(twice, sizeof(twice), (const uint8_t *)"bc", 2);
}

/* The field numbers of pbwire.h are those of the .proto files. */
static void
test_field_numbers(void **state)
{
	(void)state;
	assert_int_equal(
	    protobuf_c_message_descriptor_get_field_by_name(
	        &ncgrpc__wire__command_get_request__descriptor, "message")
	        ->id,
	    PBWIRE_CMDGET_REQUEST_MESSAGE);
	assert_int_equal(
	    protobuf_c_message_descriptor_get_field_by_name(
	        &ncgrpc__operator__v1__session_output__descriptor, "data")
	        ->id,
	    PBWIRE_SESSION_OUTPUT_DATA);
}

static void
test_only_bytes_else(void **state)
{
	static const uint8_t other[] = {0x0a, 1, 'a', 0x10, 1};
	static const uint8_t varint_one[] = {0x08, 1};
	static const uint8_t long_len[] = {0x0a, 0x81, 0x00, 'a'};
	static const uint8_t long_key[] = {0x8a, 0x00, 1, 'a'};
	static const uint8_t cut[] = {0x0a, 5, 'a', 'b'};
	static const uint8_t cut_len[] = {0x0a, 0x80};
	static const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
	static const uint8_t high[] = {0x82, 0x01, 1, 'a'}; /* field 16 */
	const uint8_t *d = NULL;
	size_t n = 0;

	(void)state;
	/* Nothing, or more than the field: the decoder's business. */
	assert_int_equal(pbwire_only_bytes(other, 0, 1, &d, &n), 0);
	assert_int_equal(pbwire_only_bytes(other, sizeof(other), 1, &d, &n), 0);
	assert_int_equal(
	    pbwire_only_bytes(varint_one, sizeof(varint_one), 1, &d, &n), 0);
	/* Well-formed, but not as an encoder writes it. */
	assert_int_equal(
	    pbwire_only_bytes(long_len, sizeof(long_len), 1, &d, &n), 0);
	assert_decodes_to(long_len, sizeof(long_len), (const uint8_t *)"a", 1);
	assert_int_equal(
	    pbwire_only_bytes(long_key, sizeof(long_key), 1, &d, &n), 0);
	/* Truncated or oversized. */
	assert_int_equal(pbwire_only_bytes(cut, sizeof(cut), 1, &d, &n), 0);
	assert_int_equal(pbwire_only_bytes(cut_len, sizeof(cut_len), 1, &d, &n),
	                 0);
	assert_int_equal(pbwire_only_bytes(huge, sizeof(huge), 1, &d, &n), 0);
	/* Fields past 15 have two-byte keys: not for this. */
	assert_int_equal(pbwire_only_bytes(high, sizeof(high), 16, &d, &n), 0);
	assert_int_equal(pbwire_only_bytes(high, sizeof(high), 0, &d, &n), 0);
	assert_null(d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nul_found),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_only_bytes),
	    cmocka_unit_test(test_field_numbers),
	    cmocka_unit_test(test_only_bytes_else),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
