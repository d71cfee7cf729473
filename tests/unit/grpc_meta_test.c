#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/grpc_meta.h"

#define S(x) (x), (sizeof(x) - 1)

static void
test_status_name(void **state)
{
	(void)state;
	assert_string_equal(grpc_status_name(GRPC_STATUS_OK), "OK");
	assert_string_equal(grpc_status_name(1), "CANCELLED");
	assert_string_equal(grpc_status_name(4), "DEADLINE_EXCEEDED");
	assert_string_equal(grpc_status_name(9), "FAILED_PRECONDITION");
	assert_string_equal(grpc_status_name(14), "UNAVAILABLE");
	assert_string_equal(grpc_status_name(16), "UNAUTHENTICATED");
	assert_string_equal(grpc_status_name(17), "UNKNOWN");
	assert_string_equal(grpc_status_name(-1), "UNKNOWN");
	assert_string_equal(grpc_status_name(999), "UNKNOWN");
}

static void
test_status_parse(void **state)
{
	int code;

	(void)state;
	code = -1;
	assert_int_equal(grpc_status_parse(S("0"), &code), 0);
	assert_int_equal(code, 0);
	assert_int_equal(grpc_status_parse(S("16"), &code), 0);
	assert_int_equal(code, 16);
	assert_int_equal(grpc_status_parse(S("999"), &code), 0);
	assert_int_equal(code, 999);
	assert_int_equal(grpc_status_parse(S("007"), &code), 0);
	assert_int_equal(code, 7);

	/* Failures leave *code alone. */
	code = 42;
	assert_int_equal(grpc_status_parse(S(""), &code), -EINVAL);
	assert_int_equal(grpc_status_parse(S("1a"), &code), -EINVAL);
	assert_int_equal(grpc_status_parse(S("1234"), &code), -EINVAL);
	assert_int_equal(grpc_status_parse(S("-1"), &code), -EINVAL);
	assert_int_equal(grpc_status_parse(S("+1"), &code), -EINVAL);
	assert_int_equal(grpc_status_parse(S(" 1"), &code), -EINVAL);
	assert_int_equal(grpc_status_parse(S("1 "), &code), -EINVAL);
	assert_int_equal(code, 42);
	/* Only len bytes are read: "12" out of "123". */
	assert_int_equal(grpc_status_parse("123", 2, &code), 0);
	assert_int_equal(code, 12);
}

static void
check_encode(const char *in, size_t len, const char *want)
{
	char *enc = NULL, *dec = NULL;
	size_t declen = 0;

	assert_int_equal(grpc_percent_encode(in, len, &enc), 0);
	assert_string_equal(enc, want);
	assert_int_equal(grpc_percent_decode(enc, strlen(enc), &dec, &declen),
	                 0);
	assert_int_equal(declen, len);
	assert_memory_equal(dec, in, len);
	assert_int_equal(dec[declen], '\0');
	free(enc);
	free(dec);
}

static void
test_percent_round_trip(void **state)
{
	char all[256];
	size_t i;

	(void)state;
	check_encode(S(""), "");
	check_encode(S("plain text, ok!"), "plain text, ok!");
	check_encode(S("100%"), "100%25");
	check_encode(S("%%"), "%25%25");
	check_encode(S("a\tb\r\nc"), "a%09b%0D%0Ac");
	check_encode(S("\x7f\x1f"), "%7F%1F");
	check_encode(S("a\0b"), "a%00b");
	/* UTF-8 "héllo ☃": each byte of a multi-byte character escaped. */
	check_encode(S("h\xc3\xa9llo \xe2\x98\x83"), "h%C3%A9llo %E2%98%83");
	check_encode(S(" ~"), " ~");

	for (i = 0; i < sizeof(all); i++)
		all[i] = (char)i;
	{
		char *enc, *dec;
		size_t declen;

		assert_int_equal(grpc_percent_encode(all, sizeof(all), &enc),
		                 0);
		/* 0x20..0x7e except '%' stay: 94 bytes; the rest take 3. */
		assert_int_equal(strlen(enc), 94 + 3 * (256 - 94));
		for (i = 0; enc[i] != '\0'; i++)
			assert_true(enc[i] >= 0x20 && enc[i] <= 0x7e);
		assert_int_equal(
		    grpc_percent_decode(enc, strlen(enc), &dec, &declen), 0);
		assert_int_equal(declen, sizeof(all));
		assert_memory_equal(dec, all, sizeof(all));
		free(enc);
		free(dec);
	}
}

static void
check_decode(const char *in, size_t len, const char *want, size_t wantlen)
{
	char *dec = NULL;
	size_t declen = 0;

	assert_int_equal(grpc_percent_decode(in, len, &dec, &declen), 0);
	assert_non_null(dec);
	assert_int_equal(declen, wantlen);
	assert_memory_equal(dec, want, wantlen);
	assert_int_equal(dec[declen], '\0');
	free(dec);
}

static void
test_percent_decode(void **state)
{
	(void)state;
	check_decode(S(""), S(""));
	check_decode(S("%41%62c"), S("Abc"));
	/* Lowercase hex is accepted on input. */
	check_decode(S("%e2%98%83"), S("\xe2\x98\x83"));
	check_decode(S("%00"), "\0", 1);
	/* Malformed escapes stay as they were. */
	check_decode(S("%"), S("%"));
	check_decode(S("%4"), S("%4"));
	check_decode(S("%G1"), S("%G1"));
	check_decode(S("%1G"), S("%1G"));
	check_decode(S("abc%"), S("abc%"));
	check_decode(S("abc%4"), S("abc%4"));
	check_decode(S("%zz"), S("%zz"));
	check_decode(S("%%41"), S("%A"));
	check_decode(S("50% off"), S("50% off"));
	/* Decoding is one pass: %2541 is "%41", not "A". */
	check_decode(S("%2541"), S("%41"));
	/* Only len bytes are read. */
	check_decode("%41%42", 3, S("A"));
}

static void
check_timeout(const char *v, size_t len, uint64_t want)
{
	uint64_t ms = 0xdeadbeef;

	assert_int_equal(grpc_timeout_parse(v, len, &ms), 0);
	assert_int_equal(ms, want);
}

static void
check_timeout_bad(const char *v, size_t len)
{
	uint64_t ms = 0xdeadbeef;

	assert_int_equal(grpc_timeout_parse(v, len, &ms), -EINVAL);
	assert_int_equal(ms, 0xdeadbeef);
}

static void
test_timeout_parse(void **state)
{
	(void)state;
	check_timeout(S("1H"), 3600000);
	check_timeout(S("2M"), 120000);
	check_timeout(S("3S"), 3000);
	check_timeout(S("4m"), 4);
	check_timeout(S("5000u"), 5);
	check_timeout(S("6000000n"), 6);
	check_timeout(S("0S"), 0);
	check_timeout(S("0n"), 0);
	check_timeout(S("00000010S"), 10000);
	check_timeout(S("99999999m"), 99999999);
	check_timeout(S("99999999S"), 99999999000ull);
	check_timeout(S("99999999M"), 5999999940000ull);
	check_timeout(S("99999999H"), 359999996400000ull);

	/* Sub-millisecond values round up, never down to 0. */
	check_timeout(S("1u"), 1);
	check_timeout(S("999u"), 1);
	check_timeout(S("1000u"), 1);
	check_timeout(S("1001u"), 2);
	check_timeout(S("1n"), 1);
	check_timeout(S("999999n"), 1);
	check_timeout(S("1000000n"), 1);
	check_timeout(S("1000001n"), 2);
	check_timeout(S("99999999u"), 100000);
	check_timeout(S("99999999n"), 100);

	check_timeout_bad(S(""));
	check_timeout_bad(S("S"));
	check_timeout_bad(S("1"));
	check_timeout_bad(S("12345678"));
	check_timeout_bad(S("100000000S"));
	check_timeout_bad(S("000000001S"));
	check_timeout_bad(S("1s"));
	check_timeout_bad(S("1h"));
	check_timeout_bad(S("1x"));
	check_timeout_bad(S("1SS"));
	check_timeout_bad(S("1mS"));
	check_timeout_bad(S("-1S"));
	check_timeout_bad(S("+1S"));
	check_timeout_bad(S(" 1S"));
	check_timeout_bad(S("1 S"));
	check_timeout_bad(S("1S "));
	check_timeout_bad(S("1.5S"));
	check_timeout_bad(S("0x1S"));
	check_timeout_bad("1\0S", 3);
	/* Only len bytes are read. */
	check_timeout("12Sx", 3, 12000);
	check_timeout_bad("12S", 2);
}

static void
test_timeout_format(void **state)
{
	static const uint64_t values[] = {
	    0,
	    1,
	    999,
	    1000,
	    59999,
	    60000,
	    99999999,
	    100000000,
	    100000001,
	    99999999000ull,
	    99999999001ull,
	    5999999940000ull,
	    5999999940001ull,
	    359999996400000ull,
	    359999996400001ull,
	    UINT64_MAX,
	};
	char out[16];
	uint64_t ms;
	size_t i;

	(void)state;
	grpc_timeout_format(0, out);
	assert_string_equal(out, "0m");
	grpc_timeout_format(1, out);
	assert_string_equal(out, "1m");
	grpc_timeout_format(30000, out);
	assert_string_equal(out, "30000m");
	grpc_timeout_format(99999999, out);
	assert_string_equal(out, "99999999m");
	grpc_timeout_format(100000000, out);
	assert_string_equal(out, "100000S");
	/* Coarser units round up rather than cut the deadline short. */
	grpc_timeout_format(100000001, out);
	assert_string_equal(out, "100001S");
	grpc_timeout_format(99999999000ull, out);
	assert_string_equal(out, "99999999S");
	grpc_timeout_format(99999999001ull, out);
	assert_string_equal(out, "1666667M");
	grpc_timeout_format(359999996400000ull, out);
	assert_string_equal(out, "99999999H");
	/* Beyond the largest expressible timeout the value saturates. */
	grpc_timeout_format(359999996400001ull, out);
	assert_string_equal(out, "99999999H");
	grpc_timeout_format(UINT64_MAX, out);
	assert_string_equal(out, "99999999H");

	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		grpc_timeout_format(values[i], out);
		assert_true(strlen(out) >= 2 && strlen(out) <= 9);
		assert_int_equal(grpc_timeout_parse(out, strlen(out), &ms), 0);
		if (values[i] <= 359999996400000ull) {
			/* Never shorter, and no more than one unit longer. */
			assert_true(ms >= values[i]);
			assert_true(ms - values[i] < 3600000);
		} else
			assert_int_equal(ms, 359999996400000ull);
		if (values[i] <= 99999999)
			assert_int_equal(ms, values[i]);
	}
	/* Exact multiples of a unit survive the round trip unchanged. */
	for (ms = 1; ms <= 99999999; ms = ms * 7 + 3) {
		uint64_t back;

		grpc_timeout_format(ms * 1000, out);
		assert_int_equal(grpc_timeout_parse(out, strlen(out), &back),
		                 0);
		assert_int_equal(back, ms * 1000);
		grpc_timeout_format(ms * 3600000, out);
		assert_int_equal(grpc_timeout_parse(out, strlen(out), &back),
		                 0);
		assert_int_equal(back, ms * 3600000);
	}
}

static void
test_key_valid(void **state)
{
	(void)state;
	assert_true(grpc_meta_key_valid(S("x-request-id")));
	assert_true(grpc_meta_key_valid(S("a")));
	assert_true(grpc_meta_key_valid(S("0.9_z-")));
	assert_true(grpc_meta_key_valid(S("trace-bin")));
	assert_false(grpc_meta_key_valid(S("")));
	assert_false(grpc_meta_key_valid(S("X-Request-Id")));
	assert_false(grpc_meta_key_valid(S("aB")));
	assert_false(grpc_meta_key_valid(S(":path")));
	assert_false(grpc_meta_key_valid(S(":")));
	assert_false(grpc_meta_key_valid(S("a:b")));
	assert_false(grpc_meta_key_valid(S("a b")));
	assert_false(grpc_meta_key_valid(S("a/b")));
	assert_false(grpc_meta_key_valid(S("caf\xc3\xa9")));
	assert_false(grpc_meta_key_valid("a\0b", 3));
	/* Only len bytes are read. */
	assert_true(grpc_meta_key_valid("abC", 2));
}

static void
test_key_reserved(void **state)
{
	(void)state;
	assert_true(grpc_meta_key_reserved(S("grpc-status")));
	assert_true(grpc_meta_key_reserved(S("grpc-message")));
	assert_true(grpc_meta_key_reserved(S("grpc-timeout")));
	assert_true(grpc_meta_key_reserved(S("grpc-anything-new")));
	assert_true(grpc_meta_key_reserved(S("grpc-")));
	assert_true(grpc_meta_key_reserved(S(":path")));
	assert_true(grpc_meta_key_reserved(S(":authority")));
	assert_true(grpc_meta_key_reserved(S(":")));
	assert_true(grpc_meta_key_reserved(S("content-type")));
	assert_true(grpc_meta_key_reserved(S("te")));
	assert_true(grpc_meta_key_reserved(S("user-agent")));
	assert_true(grpc_meta_key_reserved(S("host")));
	assert_true(grpc_meta_key_reserved(S("connection")));
	assert_true(grpc_meta_key_reserved(S("keep-alive")));
	assert_true(grpc_meta_key_reserved(S("proxy-connection")));
	assert_true(grpc_meta_key_reserved(S("transfer-encoding")));
	assert_true(grpc_meta_key_reserved(S("upgrade")));
	assert_true(grpc_meta_key_reserved(S("Content-Type")));
	assert_true(grpc_meta_key_reserved(S("GRPC-Status")));

	assert_false(grpc_meta_key_reserved(S("")));
	assert_false(grpc_meta_key_reserved(S("grpc")));
	assert_false(grpc_meta_key_reserved(S("grpcx-a")));
	assert_false(grpc_meta_key_reserved(S("x-grpc-status")));
	assert_false(grpc_meta_key_reserved(S("content-type2")));
	assert_false(grpc_meta_key_reserved(S("t")));
	assert_false(grpc_meta_key_reserved(S("tea")));
	assert_false(grpc_meta_key_reserved(S("hostname")));
	assert_false(grpc_meta_key_reserved(S("x-request-id")));
	/* Only len bytes are read: "te" out of "tea" is reserved. */
	assert_true(grpc_meta_key_reserved("tea", 2));
}

static void
test_key_is_bin(void **state)
{
	(void)state;
	assert_true(grpc_meta_key_is_bin(S("trace-bin")));
	assert_true(grpc_meta_key_is_bin(S("-bin")));
	assert_false(grpc_meta_key_is_bin(S("bin")));
	assert_false(grpc_meta_key_is_bin(S("")));
	assert_false(grpc_meta_key_is_bin(S("trace-bin2")));
	assert_false(grpc_meta_key_is_bin(S("tracebin")));
	assert_false(grpc_meta_key_is_bin(S("trace-binary")));
	assert_false(grpc_meta_key_is_bin("trace-bin", 8));
}

static void
test_value_valid(void **state)
{
	char all[0x7f - 0x20];
	int c;

	(void)state;
	for (c = 0x20; c < 0x7f; c++)
		all[c - 0x20] = (char)c;
	assert_true(grpc_meta_value_valid(all, sizeof(all)));
	assert_true(grpc_meta_value_valid(S("")));
	assert_true(grpc_meta_value_valid(S("hello, world")));
	assert_false(grpc_meta_value_valid(S("a\x7f")));
	assert_false(grpc_meta_value_valid(S("\x1f")));
	assert_false(grpc_meta_value_valid(S("\x80")));
	assert_false(grpc_meta_value_valid(S("\xff")));
	assert_false(grpc_meta_value_valid(S("a\tb")));
	assert_false(grpc_meta_value_valid(S("a\r\nb")));
	assert_false(grpc_meta_value_valid("a\0b", 3));
	assert_false(grpc_meta_value_valid(S("caf\xc3\xa9")));
}

static void
check_b64(const char *raw, const char *padded, const char *unpadded)
{
	char *enc = NULL;
	uint8_t *dec = NULL;
	size_t len = strlen(raw), declen = 0;

	assert_int_equal(grpc_base64_encode((const uint8_t *)raw, len, &enc),
	                 0);
	assert_string_equal(enc, padded);
	free(enc);

	assert_int_equal(
	    grpc_base64_decode(padded, strlen(padded), &dec, &declen), 0);
	assert_int_equal(declen, len);
	assert_memory_equal(dec, raw, len);
	assert_int_equal(dec[declen], 0);
	free(dec);

	dec = NULL;
	assert_int_equal(
	    grpc_base64_decode(unpadded, strlen(unpadded), &dec, &declen), 0);
	assert_int_equal(declen, len);
	assert_memory_equal(dec, raw, len);
	assert_int_equal(dec[declen], 0);
	free(dec);
}

static void
check_b64_bad(const char *in, size_t len)
{
	uint8_t *dec = (uint8_t *)&dec;
	size_t declen = 77;

	assert_int_equal(grpc_base64_decode(in, len, &dec, &declen), -EINVAL);
	assert_ptr_equal(dec, (uint8_t *)&dec);
	assert_int_equal(declen, 77);
}

static void
test_base64(void **state)
{
	uint8_t all[256], *dec;
	char *enc;
	size_t i, n, declen;

	(void)state;
	/* RFC 4648, section 10. */
	check_b64("", "", "");
	check_b64("f", "Zg==", "Zg");
	check_b64("fo", "Zm8=", "Zm8");
	check_b64("foo", "Zm9v", "Zm9v");
	check_b64("foob", "Zm9vYg==", "Zm9vYg");
	check_b64("fooba", "Zm9vYmE=", "Zm9vYmE");
	check_b64("foobar", "Zm9vYmFy", "Zm9vYmFy");

	/* Every byte value, and the two non-alphanumeric characters. */
	for (i = 0; i < sizeof(all); i++)
		all[i] = (uint8_t)i;
	assert_int_equal(
	    grpc_base64_encode((const uint8_t *)"\xfb\xff", 2, &enc), 0);
	assert_string_equal(enc, "+/8=");
	free(enc);
	for (n = 0; n <= sizeof(all); n++) {
		assert_int_equal(grpc_base64_encode(all, n, &enc), 0);
		assert_int_equal(strlen(enc), (n + 2) / 3 * 4);
		assert_int_equal(
		    grpc_base64_decode(enc, strlen(enc), &dec, &declen), 0);
		assert_int_equal(declen, n);
		assert_memory_equal(dec, all, n);
		free(dec);
		/* Drop the padding, as gRPC peers do. */
		while (strlen(enc) > 0 && enc[strlen(enc) - 1] == '=')
			enc[strlen(enc) - 1] = '\0';
		assert_int_equal(
		    grpc_base64_decode(enc, strlen(enc), &dec, &declen), 0);
		assert_int_equal(declen, n);
		assert_memory_equal(dec, all, n);
		free(dec);
		free(enc);
	}

	/* Bad characters, including URL-safe base64 and whitespace. */
	check_b64_bad(S("Zm9v!"));
	check_b64_bad(S("Zm9-"));
	check_b64_bad(S("Zm9_"));
	check_b64_bad(S("Zm 9v"));
	check_b64_bad(S("Zm9v\n"));
	check_b64_bad("Zm\0v", 4);
	check_b64_bad(S("Zm9\x80"));
	/* Lengths no encoder produces. */
	check_b64_bad(S("Z"));
	check_b64_bad(S("Zm9vY"));
	check_b64_bad(S("Zm9vYmFyZ"));
	/* Padding anywhere but at the end of a whole quantum. */
	check_b64_bad(S("="));
	check_b64_bad(S("=="));
	check_b64_bad(S("===="));
	check_b64_bad(S("Z==="));
	check_b64_bad(S("Zg="));
	check_b64_bad(S("Zg==="));
	check_b64_bad(S("Zg==Zg=="));
	check_b64_bad(S("Zg==Zm9v"));
	check_b64_bad(S("Z=g="));
	check_b64_bad(S("=Zg="));
	check_b64_bad(S("Zm9v===="));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_status_name),
	    cmocka_unit_test(test_status_parse),
	    cmocka_unit_test(test_percent_round_trip),
	    cmocka_unit_test(test_percent_decode),
	    cmocka_unit_test(test_timeout_parse),
	    cmocka_unit_test(test_timeout_format),
	    cmocka_unit_test(test_key_valid),
	    cmocka_unit_test(test_key_reserved),
	    cmocka_unit_test(test_key_is_bin),
	    cmocka_unit_test(test_value_valid),
	    cmocka_unit_test(test_base64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
