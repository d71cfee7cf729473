#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/addr.h"

static void
test_hostport_ok(void **state)
{
	char host[64];
	uint16_t port;

	(void)state;
	assert_int_equal(addr_parse_hostport("127.0.0.1:443", 0, 0, host,
	                                     sizeof(host), &port),
	                 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 443);
	assert_int_equal(
	    addr_parse_hostport("[::1]:8443", 0, 0, host, sizeof(host), &port),
	    0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 8443);
	assert_int_equal(addr_parse_hostport("nms.example.net", 443, 0, host,
	                                     sizeof(host), &port),
	                 0);
	assert_string_equal(host, "nms.example.net");
	assert_int_equal(port, 443);
	assert_int_equal(
	    addr_parse_hostport("[fe80::1]", 443, 0, host, sizeof(host), &port),
	    0);
	assert_string_equal(host, "fe80::1");
	assert_int_equal(
	    addr_parse_hostport("localhost:0", 0, 1, host, sizeof(host), &port),
	    0);
	assert_int_equal(port, 0);
}

static void
test_hostport_bad(void **state)
{
	static const char *const bad[] = {
	    "",         ":443",       "host:",
	    "host:0",   "host:65536", "host:-1",
	    "host:44x", "host: 44",   "::1:443",
	    "[::1",     "[]:443",     "[::1]x",
	    "[::1]:",   "host",       "host:99999999999999999999",
	};
	char host[64];
	uint16_t port = 7;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(addr_parse_hostport(bad[i], 0, 0, host,
		                                     sizeof(host), &port),
		                 -EINVAL);
		assert_int_equal(port, 7); /* untouched on error */
	}
	assert_int_equal(addr_parse_hostport("averyveryverylonghostname:1", 0,
	                                     0, host, 8, &port),
	                 -ENAMETOOLONG);
	assert_int_equal(addr_parse_hostport(NULL, 0, 0, host, 8, &port),
	                 -EINVAL);
}

static void
test_uint(void **state)
{
	unsigned long long v = 99;

	(void)state;
	assert_int_equal(addr_parse_uint("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(addr_parse_uint("10", 0, 10, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(addr_parse_uint("11", 0, 10, &v), -ERANGE);
	assert_int_equal(addr_parse_uint("-1", 0, 10, &v), -EINVAL);
	assert_int_equal(addr_parse_uint("+1", 0, 10, &v), -EINVAL);
	assert_int_equal(addr_parse_uint(" 1", 0, 10, &v), -EINVAL);
	assert_int_equal(addr_parse_uint("1 ", 0, 10, &v), -EINVAL);
	assert_int_equal(addr_parse_uint("", 0, 10, &v), -EINVAL);
	assert_int_equal(
	    addr_parse_uint("99999999999999999999999", 0, ~0ULL, &v), -ERANGE);
	assert_int_equal(v, 10);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hostport_ok),
	    cmocka_unit_test(test_hostport_bad),
	    cmocka_unit_test(test_uint),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
