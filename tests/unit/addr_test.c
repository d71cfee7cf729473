#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>

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

/* struct peer: built from socket addresses and names, never parsed back. */
static void
test_peer(void **state)
{
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
	                          .sin6_port = htons(51234)};
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(830)};
	struct sockaddr sun = {.sa_family = AF_UNIX};
	char longname[400];
	struct peer pe;

	(void)state;
	assert_int_equal(inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr), 1);
	peer_from_sockaddr(&pe, (struct sockaddr *)&s4);
	assert_string_equal(pe.pe_host, "192.0.2.7");
	assert_int_equal(pe.pe_port, 830);
	assert_string_equal(pe.pe_text, "192.0.2.7:830");

	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr), 1);
	peer_from_sockaddr(&pe, (struct sockaddr *)&s6);
	assert_string_equal(pe.pe_host, "2001:db8::1");
	assert_int_equal(pe.pe_port, 51234);
	assert_string_equal(pe.pe_text, "[2001:db8::1]:51234");

	peer_from_sockaddr(&pe, &sun);
	assert_string_equal(pe.pe_host, "unix");
	assert_int_equal(pe.pe_port, 0);
	assert_string_equal(pe.pe_text, "unix");

	peer_from_name(&pe, "nms.example.net", 443);
	assert_string_equal(pe.pe_text, "nms.example.net:443");

	/* Too long a name is cut, never overrun. */
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	peer_from_name(&pe, longname, 1);
	assert_int_equal(strlen(pe.pe_host), PEER_HOST_MAX - 1);
	assert_true(strlen(pe.pe_text) < sizeof(pe.pe_text));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hostport_ok),
	    cmocka_unit_test(test_hostport_bad),
	    cmocka_unit_test(test_uint),
	    cmocka_unit_test(test_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
