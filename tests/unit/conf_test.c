/*
 * Agent configuration: the product description's example, Junos pastes,
 * defaults, the agent block, every kind of syntax and validation error with its
 * file:line:col, truncations and mutations of valid files, limits, and
 * that no secret ever reaches an error message.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/*
 * Failing allocations: the code under test is compiled with its allocator
 * calls routed here, so that a test can fail the i-th one for every i.
 */
static int fm_countdown = -1; /* allocations left before one fails; -1 never */

static int
fm_fail(void)
{
	if (fm_countdown < 0)
		return 0;
	return fm_countdown-- == 0;
}

static void *
fm_malloc(size_t n)
{
	return fm_fail() ? NULL : malloc(n);
}

static void *
fm_calloc(size_t n, size_t m)
{
	return fm_fail() ? NULL : calloc(n, m);
}

static void *
fm_reallocarray(void *p, size_t n, size_t m)
{
	return fm_fail() ? NULL : reallocarray(p, n, m);
}

static char *
fm_strdup(const char *s)
{
	return fm_fail() ? NULL : strdup(s);
}

static char *
fm_strndup(const char *s, size_t n)
{
	return fm_fail() ? NULL : strndup(s, n);
}

#define malloc(n)             fm_malloc(n)
#define calloc(n, m)          fm_calloc(n, m)
#define reallocarray(p, n, m) fm_reallocarray(p, n, m)
#define strdup(s)             fm_strdup(s)
#define strndup(s, n)         fm_strndup(s, n)

#include "agent/conf.c"
#include "agent/junos9.c"

#undef malloc
#undef calloc
#undef reallocarray
#undef strdup
#undef strndup

/* The product description's example, verbatim, placeholders and all. */
/* clang-format off */
static const char spec_example[] =
	"outbound-https {\n"
	"    client nms1 {                          # local name only, never sent\n"
	"        device-id router-17;\n"
	"        secret \"$9$...\";                   ## SECRET-DATA\n"
	"        reconnect-strategy in-order;       # in-order (default) | sticky\n"
	"        waittime 30;                       # seconds, default 30\n"
	"        address 198.51.100.7 {             # IPv4/IPv6 address or hostname\n"
	"            port 443;                      # default 443\n"
	"            trusted-cert \"-----BEGIN CERTIFICATE-----\\nMIIB...\\n-----END CERTIFICATE-----\";\n"
	"        }\n"
	"        address nms-backup.example.net {   # backup servers, tried in order\n"
	"            port 8443;\n"
	"            trusted-cert \"...\";\n"
	"        }\n"
	"    }\n"
	"    client nms2 { ... }                    # several independent clients\n"
	"}\n";
/* clang-format on */

/* A throwaway self-signed certificate, as Junos prints it: one line, \n. */
#define CERT_B64                                                               \
	"MIIBrjCCAVSgAwIBAgIUUTFChQZF4zCMIURtyQ9rsEl8BgowCgYIKoZIzj0EAwIw\\n"  \
	"GzEZMBcGA1UEAwwQbm1zMS5leGFtcGxlLm5ldDAeFw0yNjExMjYxNDMyMTdaFw0z\\n"  \
	"NjExMjMxNDMyMTdaMBsxGTAXBgNVBAMMEG5tczEuZXhhbXBsZS5uZXQwWTATBgcq\\n"  \
	"hkjOPQIBBggqhkjOPQMBBwNCAATS6EhM3ge4fHRFNoqKlWHlEh1AIYhNXB/Y8Yof\\n"  \
	"QXAZGBF2tjjR1t/ZsXZYwQv8Cgjzo2UG+V/W0z1e1s/Qtcsso3YwdDAdBgNVHQ4E\\n"  \
	"FgQUlWkHigHo/eNP0nj2+vyuVVyNVLIwHwYDVR0jBBgwFoAUlWkHigHo/eNP0nj2\\n"  \
	"+vyuVVyNVLIwDwYDVR0TAQH/BAUwAwEB/zAhBgNVHREEGjAYghBubXMxLmV4YW1w\\n"  \
	"bGUubmV0hwTGM2QHMAoGCCqGSM49BAMCA0gAMEUCIEpbHMII/nf9xYAKX58AD9B5\\n"  \
	"Pq0khBh0RjB7d3u15WWmAiEA+SSbvb8FWly/A2viPDcyI87OgweOTq/KNLFjn/zh\\n"  \
	"NQY="
#define CERT                                                                   \
	"-----BEGIN CERTIFICATE-----\\n" CERT_B64 "\\n-----END "               \
	"CERTIFICATE-----"

/* The published vector "$9$41JDk5T3CpBFnCuB1rl8X7-VYq.5" is "netscreen". */
#define SECRET9     "$9$41JDk5T3CpBFnCuB1rl8X7-VYq.5"
#define SECRET9_DEC "netscreen"

/* A realistic "show configuration system services" paste. */
static const char junos_paste[] =
    "## Last commit: 2024-05-01 10:00:00 UTC by admin\n"
    "system {\n"
    "    services {\n"
    "        outbound-https {\n"
    "            client nms1 {\n"
    "                device-id router-17;\n"
    "                secret \"" SECRET9 "\"; ## SECRET-DATA\n"
    "                reconnect-strategy sticky;\n"
    "                waittime 60;\n"
    "                address 198.51.100.7 {\n"
    "                    port 8443;\n"
    "                    trusted-cert \"" CERT "\";\n"
    "                }\n"
    "                address 2001:db8::7 {\n"
    "                    trusted-cert \"" CERT "\";\n"
    "                }\n"
    "            }\n"
    "            /* deactivated: checked, then ignored */\n"
    "            inactive: client old {\n"
    "                device-id old-router;\n"
    "                inactive: waittime 5;\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}";

/* Bare form, both comment kinds, an agent block, several clients. */
static const char multi[] =
    "/*\n"
    " * Two NMS clusters.\n"
    " */\n"
    "agent {\n"
    "    user netconf;           # sessions run as this user\n"
    "    netconf-command \"/usr/sbin/netconf-subsystem -f /etc/x.conf\";\n"
    "    shell /bin/bash;\n"
    "    log-file /var/log/outbound_https.log;\n"
    "    keepalive-interval 600;\n"
    "    keepalive-timeout 30;\n"
    "    tcp-keepalive-idle 120;\n"
    "    tcp-keepalive-interval 10;\n"
    "    tcp-keepalive-count 5;\n"
    "}\n"
    "outbound-https {\n"
    "    client a { device-id dev#1; secret plain-Secret; /* inline */\n"
    "        address nms-a.example.net { trusted-cert \"" CERT "\"; } }\n"
    "    client \"b\" {\n"
    "        device-id \"dev 2\";\n"
    "        secret \"p@ss \\\"quoted\\\" \\\\ back\";\n"
    "        waittime 86400;\n"
    "        address 192.0.2.1 { trusted-cert-file \"/etc/ncgrpc/b.pem\"; }\n"
    "        address 192.0.2.2 { port 1; trusted-cert-file /etc/ncgrpc/b.pem; "
    "}\n"
    "        address nms-b.example.net {\n"
    "            port 65535;\n"
    "            trusted-cert-file /etc/ncgrpc/b.pem;\n"
    "        }\n"
    "    }\n"
    "}\n";

static char errbuf[1024];

static uint32_t
lcg_rand_conf(void *arg, uint32_t bound)
{
	uint32_t *st = arg;

	*st = *st * 1103515245u + 12345u;
	return (*st >> 16) % bound;
}
static struct conf sentinel;

/* CERT with its \n escapes turned into newlines, as the parser does. */
static char *
cert_pem(void)
{
	const char *s = CERT;
	char *out = malloc(strlen(s) + 1), *o = out;

	assert_non_null(out);
	while (*s != '\0') {
		if (s[0] == '\\' && s[1] == 'n') {
			*o++ = '\n';
			s += 2;
		} else
			*o++ = *s++;
	}
	*o = '\0';
	return out;
}

/* A copy of text with the first occurrence of from replaced by to. */
static char *
subst(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	size_t pre, n;
	char *out;

	assert_non_null(at);
	pre = (size_t)(at - text);
	n = strlen(text) - strlen(from) + strlen(to) + 1;
	out = malloc(n);
	assert_non_null(out);
	memcpy(out, text, pre);
	memcpy(out + pre, to, strlen(to));
	memcpy(out + pre + strlen(to), at + strlen(from),
	       strlen(at + strlen(from)) + 1);
	return out;
}

/* A copy of text with every occurrence of from replaced by to. */
static char *
subst_all(const char *text, const char *from, const char *to)
{
	char *cur = strdup(text), *next;
	size_t off = 0;

	assert_non_null(cur);
	while (strstr(cur + off, from) != NULL) {
		size_t at = (size_t)(strstr(cur + off, from) - cur);

		next = subst(cur + at, from, to);
		cur[at] = '\0';
		{
			char *joined = malloc(at + strlen(next) + 1);

			assert_non_null(joined);
			memcpy(joined, cur, at);
			memcpy(joined + at, next, strlen(next) + 1);
			free(cur);
			free(next);
			cur = joined;
		}
		off = at + strlen(to);
	}
	return cur;
}

static struct conf *
parse_valid(const char *text)
{
	struct conf *cf = &sentinel;

	if (conf_parse_string("test.conf", text, strlen(text), &cf, errbuf,
	                      sizeof(errbuf)) != 0)
		fail_msg("parse failed: %s", errbuf);
	if (conf_validate(cf, errbuf, sizeof(errbuf)) != 0)
		fail_msg("validation failed: %s", errbuf);
	return cf;
}

/* Parses and validates text[0..len), which must fail; returns the text. */
static const char *
parse_invalid(const char *text, size_t len)
{
	struct conf *cf = &sentinel;
	int rc;

	memset(errbuf, 'X', sizeof(errbuf));
	rc = conf_parse_string("test.conf", text, len, &cf, errbuf,
	                       sizeof(errbuf));
	if (rc == 0) {
		assert_ptr_not_equal(cf, &sentinel);
		rc = conf_validate(cf, errbuf, sizeof(errbuf));
		conf_free(cf);
		if (rc == 0)
			fail_msg("accepted: %.*s", (int)len, text);
		assert_int_equal(rc, -EINVAL);
	} else
		assert_ptr_equal(cf, &sentinel); /* untouched on failure */
	assert_true(rc < 0);
	assert_non_null(memchr(errbuf, '\0', sizeof(errbuf)));
	assert_int_equal(strncmp(errbuf, "test.conf:", 10), 0);
	return errbuf;
}

static void
expect_error(const char *text, const char *want)
{
	const char *e = parse_invalid(text, strlen(text));

	if (strstr(e, want) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", e, want);
}

static void
test_spec_example_verbatim(void **state)
{
	char *wrapped;

	(void)state;
	/* The "$9$..." placeholder is a truncated $9$ secret. */
	expect_error(spec_example, "test.conf:4:16: bad secret: $9$ secret "
	                           "truncated");
	wrapped = subst("system { services { X } }", "X", spec_example);
	expect_error(wrapped, "test.conf:4:16: bad secret");
	free(wrapped);
}

/* That example with its placeholders filled in. */
static char *
spec_filled(void)
{
	char *a, *b, *c, *d;

	a = subst(spec_example, "$9$...", SECRET9);
	b = subst(a, "MIIB...", CERT_B64);
	c = subst(b, "\"...\"", "\"" CERT "\"");
	d = subst(c, "{ ... }",
	          "{ device-id r17-b; secret other; address 203.0.113.9 { "
	          "trusted-cert \"" CERT "\"; } }");
	free(a);
	free(b);
	free(c);
	return d;
}

static void
check_spec_conf(const struct conf *cf)
{
	const struct conf_client *c;
	char *pem = cert_pem();

	assert_int_equal(cf->cf_nclients, 2);
	c = &cf->cf_clients[0];
	assert_string_equal(c->cc_name, "nms1");
	assert_string_equal(c->cc_device_id, "router-17");
	assert_string_equal(c->cc_secret, SECRET9_DEC);
	assert_int_equal(c->cc_secret_len, strlen(SECRET9_DEC));
	assert_int_equal(c->cc_reconnect, CONF_RECONNECT_IN_ORDER);
	assert_int_equal(c->cc_waittime, 30);
	assert_int_equal(c->cc_naddrs, 2);
	assert_string_equal(c->cc_addrs[0].ad_host, "198.51.100.7");
	assert_int_equal(c->cc_addrs[0].ad_port, 443);
	assert_string_equal(c->cc_addrs[0].ad_trusted_cert, pem);
	assert_null(c->cc_addrs[0].ad_trusted_cert_file);
	assert_string_equal(c->cc_addrs[1].ad_host, "nms-backup.example.net");
	assert_int_equal(c->cc_addrs[1].ad_port, 8443);
	assert_string_equal(c->cc_addrs[1].ad_trusted_cert, pem);
	c = &cf->cf_clients[1];
	assert_string_equal(c->cc_name, "nms2");
	assert_string_equal(c->cc_secret, "other");
	assert_int_equal(c->cc_naddrs, 1);
	assert_int_equal(c->cc_addrs[0].ad_port, 443);
	assert_ptr_equal(conf_client_find(cf, "nms2"), c);
	assert_null(conf_client_find(cf, "nms3"));
	free(pem);
}

static void
test_spec_example_filled(void **state)
{
	struct conf *cf;
	char *bare, *wrapped;

	(void)state;
	bare = spec_filled();
	cf = parse_valid(bare);
	check_spec_conf(cf);
	assert_string_equal(cf->cf_name, "test.conf");
	assert_int_equal(cf->cf_clients[0].cc_pos.po_line, 2);
	assert_int_equal(cf->cf_clients[0].cc_pos.po_col, 5);
	conf_free(cf);

	wrapped = subst("system {\n    services {\nX    }\n}\n", "X", bare);
	cf = parse_valid(wrapped);
	check_spec_conf(cf);
	conf_free(cf);
	free(wrapped);
	free(bare);
}

static void
test_junos_paste(void **state)
{
	struct conf *cf;
	const struct conf_client *c;
	char *pem = cert_pem();

	(void)state;
	cf = parse_valid(junos_paste);
	assert_int_equal(cf->cf_nclients, 1); /* "old" is inactive */
	c = &cf->cf_clients[0];
	assert_string_equal(c->cc_name, "nms1");
	assert_string_equal(c->cc_device_id, "router-17");
	assert_string_equal(c->cc_secret, SECRET9_DEC);
	assert_int_equal(c->cc_reconnect, CONF_RECONNECT_STICKY);
	assert_string_equal(conf_reconnect_name(c->cc_reconnect), "sticky");
	assert_int_equal(c->cc_waittime, 60);
	assert_int_equal(c->cc_naddrs, 2);
	assert_string_equal(c->cc_addrs[0].ad_host, "198.51.100.7");
	assert_int_equal(c->cc_addrs[0].ad_port, 8443);
	assert_string_equal(c->cc_addrs[0].ad_trusted_cert, pem);
	assert_int_equal(c->cc_addrs[0].ad_pos.po_line, 10);
	assert_int_equal(c->cc_addrs[0].ad_pos.po_col, 17);
	assert_string_equal(c->cc_addrs[1].ad_host, "2001:db8::7");
	assert_int_equal(c->cc_addrs[1].ad_port, 443);
	conf_free(cf);
	free(pem);
}

static void
test_multi_and_agent(void **state)
{
	struct conf *cf;
	const struct conf_client *c;
	const struct conf_agent *ag;

	(void)state;
	cf = parse_valid(multi);
	ag = &cf->cf_agent;
	assert_string_equal(ag->ag_user, "netconf");
	assert_string_equal(ag->ag_netconf_command,
	                    "/usr/sbin/netconf-subsystem -f /etc/x.conf");
	assert_string_equal(ag->ag_shell, "/bin/bash");
	assert_string_equal(ag->ag_log_file, "/var/log/outbound_https.log");
	assert_int_equal(ag->ag_keepalive_interval, 600);
	assert_int_equal(ag->ag_keepalive_timeout, 30);
	assert_int_equal(ag->ag_tcp_keepidle, 120);
	assert_int_equal(ag->ag_tcp_keepintvl, 10);
	assert_int_equal(ag->ag_tcp_keepcnt, 5);

	assert_int_equal(cf->cf_nclients, 2);
	c = &cf->cf_clients[0];
	assert_string_equal(c->cc_name, "a");
	assert_string_equal(c->cc_device_id, "dev#1"); /* '#' inside a word */
	assert_string_equal(c->cc_secret, "plain-Secret");
	assert_int_equal(c->cc_reconnect, CONF_RECONNECT_IN_ORDER);
	assert_int_equal(c->cc_waittime, CONF_DEFAULT_WAITTIME);
	assert_int_equal(c->cc_naddrs, 1);
	assert_int_equal(c->cc_addrs[0].ad_port, CONF_DEFAULT_PORT);
	c = &cf->cf_clients[1];
	assert_string_equal(c->cc_name, "b");
	assert_string_equal(c->cc_device_id, "dev 2");
	assert_string_equal(c->cc_secret, "p@ss \"quoted\" \\ back");
	assert_int_equal(c->cc_waittime, 86400);
	assert_int_equal(c->cc_naddrs, 3);
	assert_string_equal(c->cc_addrs[0].ad_trusted_cert_file,
	                    "/etc/ncgrpc/b.pem");
	assert_null(c->cc_addrs[0].ad_trusted_cert);
	assert_int_equal(c->cc_addrs[1].ad_port, 1);
	assert_int_equal(c->cc_addrs[2].ad_port, 65535);
	assert_string_equal(c->cc_addrs[2].ad_host, "nms-b.example.net");
	conf_free(cf);
}

static void
test_agent_defaults(void **state)
{
	struct conf *cf;
	const struct conf_agent *ag;

	(void)state;
	cf = parse_valid(junos_paste);
	ag = &cf->cf_agent;
	assert_null(ag->ag_user);
	assert_null(ag->ag_shell);
	assert_string_equal(ag->ag_log_file, "outbound_https.log");
	assert_string_equal(ag->ag_netconf_command,
	                    CONF_DEFAULT_NETCONF_COMMAND);
	assert_int_equal(ag->ag_keepalive_interval, 360);
	assert_int_equal(ag->ag_keepalive_timeout, 20);
	assert_int_equal(ag->ag_tcp_keepidle, 60);
	assert_int_equal(ag->ag_tcp_keepintvl, 15);
	assert_int_equal(ag->ag_tcp_keepcnt, 4);
	conf_free(cf);
}

static void
test_lexical_details(void **state)
{
	struct conf *cf;
	char *pem = cert_pem(), *multiline, *t;
	const char *esc =
	    "outbound-https { client x { device-id \"a\\tb\\\\c\\\"d\\qe\";"
	    " secret s; waittime 10; waittime 20; secret t;"
	    " reconnect-strategy sticky; reconnect-strategy in-order;"
	    " address h.example;"
	    " address h.example { port 1; port 2; trusted-cert-file /a;"
	    " } } }";

	(void)state;
	/* Escapes; the last of repeated statements wins, as in Junos. */
	assert_int_equal(conf_parse_string("e", esc, strlen(esc), &cf, errbuf,
	                                   sizeof(errbuf)),
	                 0);
	assert_string_equal(cf->cf_clients[0].cc_device_id, "a\tb\\c\"dqe");
	assert_string_equal(cf->cf_clients[0].cc_secret, "t");
	assert_int_equal(cf->cf_clients[0].cc_waittime, 20);
	assert_int_equal(cf->cf_clients[0].cc_reconnect,
	                 CONF_RECONNECT_IN_ORDER);
	/* "address HOST;" is an address with every default. */
	assert_int_equal(cf->cf_clients[0].cc_naddrs, 2);
	assert_int_equal(cf->cf_clients[0].cc_addrs[0].ad_port, 443);
	assert_null(cf->cf_clients[0].cc_addrs[0].ad_trusted_cert);
	assert_int_equal(cf->cf_clients[0].cc_addrs[1].ad_port, 2);
	conf_free(cf);

	/* A PEM pasted over several lines inside the quotes. */
	multiline = subst(junos_paste, CERT, pem);
	cf = parse_valid(multiline);
	assert_string_equal(cf->cf_clients[0].cc_addrs[0].ad_trusted_cert, pem);
	conf_free(cf);
	free(multiline);

	/* Comments at the very end, CRLF line ends, no final newline. */
	t = subst_all(junos_paste, "\n", "\r\n");
	multiline = subst(t, "}\r\n        }", "} # end\r\n /**/ }");
	free(t);
	t = subst(multiline, "system {", "system /* x */ {");
	cf = parse_valid(t);
	conf_free(cf);
	free(t);
	free(multiline);
	free(pem);
}

static void
test_error_positions(void **state)
{
	(void)state;
	expect_error("outbound-https {\n"
	             "    client a {\n"
	             "        device-id x\n"
	             "        secret y;\n",
	             "test.conf:4:9: expected ';' to end the 'device-id' "
	             "statement, found a word");
	expect_error("outbound-https {\n"
	             "  client a {\n"
	             "    device-id \"abc;\n"
	             "  }\n"
	             "}\n",
	             "test.conf:3:15: unterminated string; expected '\"'");
	expect_error("outbound-https {\n"
	             "  client a { device-id \"abc\\",
	             "test.conf:2:24: unterminated string");
	expect_error("outbound-https {\n"
	             "  /* open\n"
	             "  client a { }\n",
	             "test.conf:2:3: unterminated comment; expected '*/'");
	expect_error("outbound-https {\n"
	             "  client a {\n"
	             "    device-id x;\n",
	             "test.conf:4:1: unexpected end of file; expected '}' "
	             "closing 'client' opened at 2:12");
	expect_error("outbound-https {\n"
	             "}\n"
	             "}\n",
	             "test.conf:3:1: unexpected '}' with no open block");
	expect_error("outbound-https {\n"
	             "  client a {\n"
	             "    colour blue;\n",
	             "test.conf:3:5: unknown statement 'colour' in 'client'; "
	             "expected one of: device-id, secret, reconnect-strategy, "
	             "waittime, address, or '}'");
	expect_error("routing-options { }",
	             "test.conf:1:1: unknown statement 'routing-options'; "
	             "expected one of: system, outbound-https, agent");
	expect_error("system { services { ssh; } }",
	             "test.conf:1:21: unknown statement 'ssh' in 'services'; "
	             "expected one of: outbound-https, or '}'");
	expect_error("outbound-https { \"client\" a { } }",
	             "test.conf:1:18: found a quoted string in "
	             "'outbound-https'; expected one of: client, or '}'");
	expect_error("agent { user; }",
	             "test.conf:1:13: expected a value after 'user', found "
	             "';'");
	expect_error("agent { tcp-keepalive-count 0; }",
	             "test.conf:1:29: bad tcp-keepalive-count value; expected "
	             "a probe count from 1 to 127");
	expect_error("agent { keepalive-interval -1; }",
	             "bad keepalive-interval value");
	expect_error("agent { keepalive-timeout 0; }",
	             "bad keepalive-timeout value");
	expect_error("agent user x;",
	             "test.conf:1:7: expected '{' after 'agent', found a word");
	expect_error("outbound-https { client a; }",
	             "test.conf:1:26: expected '{' after 'client', found ';'");
	expect_error("outbound-https { client a { address h port 1; } }",
	             "test.conf:1:39: expected '{' or ';' after the address, "
	             "found a word");
	expect_error("outbound-https { client a { reconnect-strategy "
	             "random; } }",
	             "test.conf:1:48: bad reconnect-strategy; expected "
	             "in-order or sticky");
	expect_error("outbound-https { inactive: }",
	             "test.conf:1:28: found '}' in 'outbound-https'");
}

static void
test_nul_byte(void **state)
{
	static const char t[] = "agent { user \"a\0b\"; }";
	const char *e;

	(void)state;
	e = parse_invalid(t, sizeof(t) - 1);
	assert_string_equal(e, "test.conf:1:16: NUL byte in input");
	e = parse_invalid("agent\0", 6);
	assert_string_equal(e, "test.conf:1:6: NUL byte in input");
}

static void
test_bad_numbers(void **state)
{
	static const char *const ports[] = {
	    "0",     "65536", "abc",
	    "-1",    "+1",    "1.5",
	    "0x1bb", "",      "99999999999999999999999",
	    " 1"};
	static const char *const waits[] = {"0", "86401", "x", "-5",
	                                    "4294967296"};
	char buf[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "outbound-https { client a { address h { port "
		         "\"%s\"; } } }",
		         ports[i]);
		expect_error(buf, "test.conf:1:46: bad port value; expected "
		                  "a port number from 1 to 65535");
	}
	for (i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "outbound-https { client a { waittime %s; } }",
		         waits[i]);
		expect_error(buf, "test.conf:1:38: bad waittime value; "
		                  "expected a number of seconds from 1 to "
		                  "86400");
	}
	/* Leading zeros are still decimal. */
	snprintf(buf, sizeof(buf),
	         "outbound-https { client a { device-id d; secret s; "
	         "address h { port 00443; trusted-cert-file /c; } } }");
	{
		struct conf *cf = parse_valid(buf);

		assert_int_equal(cf->cf_clients[0].cc_addrs[0].ad_port, 443);
		conf_free(cf);
	}
}

#define CL_OK   "device-id d; secret s; "
#define ADDR_OK "address h.example { trusted-cert-file /c.pem; } "

static void
test_validation(void **state)
{
	char buf[2048];

	(void)state;
	expect_error("", "test.conf: no client; expected at least one "
	                 "'client NAME { ... }' in 'outbound-https'");
	expect_error("# only a comment\n", "no client");
	expect_error("system { services { outbound-https { } } }", "no client");
	expect_error("outbound-https {\n"
	             "  client a { " CL_OK ADDR_OK "}\n"
	             "  client a { " CL_OK ADDR_OK "}\n"
	             "}\n",
	             "test.conf:3:3: client 'a' defined twice (first at line "
	             "2)");
	expect_error("outbound-https {\n  client a { " CL_OK "}\n}\n",
	             "test.conf:2:3: client 'a': no address; expected at "
	             "least one 'address HOST { ... }'");
	expect_error("outbound-https { client a { secret s; " ADDR_OK "} }",
	             "test.conf:1:18: client 'a': no device-id");
	expect_error(
	    "outbound-https { client a { device-id \"\"; secret s; " ADDR_OK
	    "} }",
	    "client 'a': no device-id");
	expect_error("outbound-https { client a { device-id \"a\\nb\"; "
	             "secret s; " ADDR_OK "} }",
	             "client 'a': device-id must be printable UTF-8");
	expect_error("outbound-https { client a { device-id d; " ADDR_OK "} }",
	             "client 'a': no secret");
	expect_error(
	    "outbound-https { client a { device-id d; secret \"\"; " ADDR_OK
	    "} }",
	    "client 'a': no secret");
	expect_error("outbound-https { client \"\" { " CL_OK ADDR_OK "} }",
	             "test.conf:1:18: bad client name");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example; } }",
	             "test.conf:1:52: client 'a': address 'h.example' has no "
	             "trusted-cert");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example { trusted-cert-file /c; "
	             "trusted-cert \"" CERT "\"; } } }",
	             "has both trusted-cert and trusted-cert-file");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example { trusted-cert-file c.pem; } } }",
	             "trusted-cert-file; expected an absolute path");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example { trusted-cert \"-----BEGIN "
	             "CERTIFICATE-----\\nMIIB...\\n-----END "
	             "CERTIFICATE-----\"; } } }",
	             "trusted-cert is not PEM");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example { trusted-cert \"...\"; } } }",
	             "trusted-cert is not PEM");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example { trusted-cert \"-----BEGIN "
	             "CERTIFICATE-----\\nMIIB\"; } } }",
	             "trusted-cert is not PEM");
	expect_error("outbound-https { client a { " CL_OK
	             "address h.example { trusted-cert \"-----BEGIN "
	             "CERTIFICATE----------END CERTIFICATE-----\"; } } }",
	             "trusted-cert is not PEM");
	expect_error("outbound-https { client a { " CL_OK ADDR_OK
	             "address H.EXAMPLE { port 443; trusted-cert-file /c; } "
	             "} }",
	             "test.conf:1:100: client 'a': address 'H.EXAMPLE' port "
	             "443 given twice");
	/* A non-UTF-8 secret cannot travel in a proto3 string. */
	{
		char *enc = NULL;
		uint32_t seed = 1;

		assert_int_equal(
		    junos9_encode("\xff\xfe", 2, lcg_rand_conf, &seed, &enc),
		    0);
		snprintf(buf, sizeof(buf),
		         "outbound-https { client a { device-id d; secret "
		         "\"%s\"; " ADDR_OK "} }",
		         enc);
		free(enc);
		expect_error(buf, "client 'a': secret is not valid UTF-8");
	}
	/*
	 * A NUL in a secret would be cut at on the wire ("r1\0x" sent as
	 * "r1").  Neither the lexer nor the $9$ decoder lets one through, and
	 * the validator refuses one too, should a new source of secrets
	 * appear.
	 */
	{
		static const char txt[] =
		    "outbound-https { client a { "
		    "device-id d; secret k; " ADDR_OK "} }";
		struct conf *cf = NULL;
		char e[256];

		assert_int_equal(conf_parse_string("test.conf", txt,
		                                   sizeof(txt) - 1, &cf, e,
		                                   sizeof(e)),
		                 0);
		free(cf->cf_clients[0].cc_secret);
		cf->cf_clients[0].cc_secret = malloc(5);
		assert_non_null(cf->cf_clients[0].cc_secret);
		memcpy(cf->cf_clients[0].cc_secret, "r1\0x", 5);
		cf->cf_clients[0].cc_secret_len = 4;
		assert_int_equal(conf_validate(cf, e, sizeof(e)), -EINVAL);
		assert_non_null(strstr(e, "client 'a': secret holds a NUL "
		                          "byte"));
		conf_free(cf);
	}
	/* A NUL written into the device id is refused by the lexer. */
	{
		static const char nulid[] = "outbound-https { client a { "
		                            "device-id \"r1\0x\"; } }";
		struct conf *cf = NULL;
		char e[256];

		assert_int_equal(conf_parse_string("test.conf", nulid,
		                                   sizeof(nulid) - 1, &cf, e,
		                                   sizeof(e)),
		                 -EINVAL);
		assert_non_null(strstr(e, "NUL byte"));
	}
	static const char *const hosts[] = {
	    "bad_host!", "1.2.3.999", "-a.example",    "a-.example",
	    "a..b",      ".a",        "[2001:db8::1]", "2001:db8::g",
	    "1.2.3.4.5", "x.123",     "\"a b\"",       "\"\""};
	size_t i;

	for (i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "outbound-https { client a { " CL_OK
		         "address %s { trusted-cert-file /c; } } }",
		         hosts[i]);
		expect_error(buf, "is not an IP address or host name");
	}
	static const char *const good_hosts[] = {
	    "a",           "nms.example.net.", "10.0.0.1",
	    "::1",         "2001:db8::7",      "fe80::1:2:3:4",
	    "x-1.example", "srv_1.lab",        "a.b1"};
	for (i = 0; i < sizeof(good_hosts) / sizeof(good_hosts[0]); i++) {
		struct conf *cf;

		snprintf(buf, sizeof(buf),
		         "outbound-https { client a { " CL_OK
		         "address %s { trusted-cert-file /c; } } }",
		         good_hosts[i]);
		cf = parse_valid(buf);
		assert_string_equal(cf->cf_clients[0].cc_addrs[0].ad_host,
		                    good_hosts[i]);
		conf_free(cf);
	}
}

/* A conf built by hand has no positions; messages then have none. */
static void
test_validate_hand_built(void **state)
{
	struct conf *cf;

	(void)state;
	cf = parse_valid("outbound-https { client a { " CL_OK ADDR_OK "} }");
	cf->cf_clients[0].cc_pos.po_line = 0;
	cf->cf_clients[0].cc_waittime = 0;
	assert_int_equal(conf_validate(cf, errbuf, sizeof(errbuf)), -EINVAL);
	assert_string_equal(errbuf, "test.conf: client 'a': waittime 0; "
	                            "expected 1 to 86400");
	cf->cf_clients[0].cc_waittime = 30;
	cf->cf_clients[0].cc_addrs[0].ad_port = 0;
	assert_int_equal(conf_validate(cf, errbuf, sizeof(errbuf)), -EINVAL);
	assert_non_null(strstr(errbuf, "port 0"));
	cf->cf_clients[0].cc_addrs[0].ad_port = 1;
	cf->cf_agent.ag_tcp_keepcnt = 0;
	assert_int_equal(conf_validate(cf, errbuf, sizeof(errbuf)), -EINVAL);
	assert_string_equal(errbuf, "test.conf: agent: tcp-keepalive-count "
	                            "0; expected 1 to 127");
	cf->cf_agent.ag_tcp_keepcnt = 1;
	free(cf->cf_agent.ag_log_file);
	cf->cf_agent.ag_log_file = NULL;
	assert_int_equal(conf_validate(cf, errbuf, sizeof(errbuf)), -EINVAL);
	assert_string_equal(errbuf, "test.conf: agent: log-file is empty");
	conf_free(cf);
}

/*
 * Every proper prefix of a valid file that cuts before its last '}' is
 * refused (by the parser or the validator), and none crashes or leaks.
 */
static void
truncations(const char *text)
{
	size_t len = strlen(text), last = (size_t)(strrchr(text, '}') - text);
	size_t i;
	struct conf *cf;

	for (i = 0; i <= last; i++)
		(void)parse_invalid(text, i);
	for (i = last + 1; i <= len; i++) {
		assert_int_equal(conf_parse_string("t", text, i, &cf, errbuf,
		                                   sizeof(errbuf)),
		                 0);
		assert_int_equal(conf_validate(cf, errbuf, sizeof(errbuf)), 0);
		conf_free(cf);
	}
}

static void
test_truncations(void **state)
{
	char *filled;

	(void)state;
	truncations(junos_paste);
	truncations(multi);
	filled = spec_filled();
	truncations(filled);
	free(filled);
}

/* Random byte damage must never crash; run under ASan to catch leaks. */
static void
test_mutations(void **state)
{
	static const char alphabet[] = "{};\"\\#/* \nax1$";
	size_t len = strlen(junos_paste), i, k;
	uint32_t seed = 12345;
	struct conf *cf;
	char *buf;

	(void)state;
	buf = malloc(len);
	assert_non_null(buf);
	for (i = 0; i < 3000; i++) {
		memcpy(buf, junos_paste, len);
		for (k = 0; k < 1 + i % 4; k++) {
			seed = seed * 1103515245u + 12345u;
			buf[(seed >> 8) % len] =
			    alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
		}
		errbuf[0] = '\0';
		if (conf_parse_string("m", buf, len, &cf, errbuf,
		                      sizeof(errbuf)) == 0) {
			(void)conf_validate(cf, errbuf, sizeof(errbuf));
			conf_free(cf);
		} else
			assert_int_equal(strncmp(errbuf, "m:", 2), 0);
	}
	free(buf);
}

static void
test_limits(void **state)
{
	size_t n = CONF_MAX_TOKEN + 40, i;
	char *big, *deep;
	const char *e;
	struct conf *cf = &sentinel;

	(void)state;
	/* One byte over the token limit. */
	big = malloc(n + 1);
	assert_non_null(big);
	memcpy(big, "agent { user ", 13);
	memset(big + 13, 'u', CONF_MAX_TOKEN + 1);
	memcpy(big + 13 + CONF_MAX_TOKEN + 1, "; }", 4);
	e = parse_invalid(big, strlen(big));
	assert_string_equal(e, "test.conf:1:14: token longer than 65536 "
	                       "bytes");
	/* Exactly at the limit, as a quoted string. */
	big[13] = '"';
	memcpy(big + 14 + CONF_MAX_TOKEN, "\"; }", 5);
	assert_int_equal(conf_parse_string("t", big, strlen(big), &cf, errbuf,
	                                   sizeof(errbuf)),
	                 0);
	assert_int_equal(strlen(cf->cf_agent.ag_user), CONF_MAX_TOKEN);
	conf_free(cf);
	/* A string over the limit. */
	memcpy(big + 14 + CONF_MAX_TOKEN, "x\"; }", 6);
	e = parse_invalid(big, strlen(big));
	assert_string_equal(e, "test.conf:1:14: token longer than 65536 "
	                       "bytes");
	free(big);

	/* Deep nesting: refused at the first brace the grammar forbids. */
	n = 200000;
	deep = malloc(n + 100);
	assert_non_null(deep);
	memcpy(deep,
	       "system { services { outbound-https { client a { "
	       "address h { ",
	       59);
	for (i = 0; i < n; i++)
		deep[59 + i] = (i % 2) ? ' ' : '{';
	deep[59 + n] = '\0';
	e = parse_invalid(deep, strlen(deep));
	assert_string_equal(e, "test.conf:1:60: found '{' in 'address'; "
	                       "expected one of: port, trusted-cert, "
	                       "trusted-cert-file, or '}'");
	for (i = 0; i < n; i++)
		deep[i] = '{';
	e = parse_invalid(deep, n);
	assert_non_null(strstr(e, "test.conf:1:1: found '{'"));
	free(deep);

	/* Files over the size limit. */
	big = calloc(1, CONF_MAX_FILE + 1);
	assert_non_null(big);
	memset(big, ' ', CONF_MAX_FILE + 1);
	cf = &sentinel;
	assert_int_equal(conf_parse_string("huge", big, CONF_MAX_FILE + 1, &cf,
	                                   errbuf, sizeof(errbuf)),
	                 -EFBIG);
	assert_ptr_equal(cf, &sentinel);
	assert_string_equal(errbuf, "huge: larger than 1048576 bytes; "
	                            "refused");
	/* Exactly at the limit is fine (and has no client). */
	assert_int_equal(conf_parse_string("huge", big, CONF_MAX_FILE, &cf,
	                                   errbuf, sizeof(errbuf)),
	                 0);
	conf_free(cf);
	free(big);
}

/* Error buffers of any size, or none, are safe. */
static void
test_error_buffers(void **state)
{
	static const char bad[] = "outbound-https { x }";
	struct conf *cf = &sentinel;
	char small[12];

	(void)state;
	assert_int_equal(
	    conf_parse_string("test.conf", bad, strlen(bad), &cf, NULL, 0),
	    -EINVAL);
	assert_int_equal(
	    conf_parse_string("test.conf", bad, strlen(bad), &cf, small, 0),
	    -EINVAL);
	memset(small, 'X', sizeof(small));
	assert_int_equal(conf_parse_string("test.conf", bad, strlen(bad), &cf,
	                                   small, sizeof(small)),
	                 -EINVAL);
	assert_string_equal(small, "test.conf:1");
	memset(small, 'X', sizeof(small));
	assert_int_equal(conf_parse_string("a-much-longer-file-name.conf", bad,
	                                   strlen(bad), &cf, small,
	                                   sizeof(small)),
	                 -EINVAL);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_ptr_equal(cf, &sentinel);
	assert_int_equal(conf_parse_string(NULL, bad, strlen(bad), &cf, errbuf,
	                                   sizeof(errbuf)),
	                 -EINVAL);
	assert_int_equal(strncmp(errbuf, "<config>:1:18:", 14), 0);
	conf_free(NULL);
}

static void
no_secret_in(const char *text, const char *const *secrets)
{
	const char *e = parse_invalid(text, strlen(text));
	size_t i;

	for (i = 0; secrets[i] != NULL; i++)
		if (strstr(e, secrets[i]) != NULL)
			fail_msg("\"%s\" leaks \"%s\"", e, secrets[i]);
}

static void
test_secret_never_in_errors(void **state)
{
	static const char *const plain[] = {"hunter2", "extra", "hunter3",
	                                    NULL};
	static const char *const enc[] = {SECRET9, SECRET9_DEC, "41JDk5", "VYq",
	                                  NULL};
	static const char *const cases[] = {
	    "outbound-https { client a { secret hunter2 extra; } }",
	    "outbound-https { client a { secret hunter2; hunter3; } }",
	    "outbound-https { client a { secret hunter2; extra { } } }",
	    "outbound-https { client a { secret \"hunter2\" \"extra\"; } }",
	    "outbound-https { client a { secret hunter2 }",
	    "outbound-https { client a { secret hunter2",
	    "outbound-https { client a { secret \"hunter2",
	    "outbound-https { client a { secret \"hunter2\\",
	    "outbound-https { client a { secret hunter2 { extra } } }",
	    "outbound-https { client a { secret hunter2; } }",
	    "outbound-https { client a { device-id d; secret hunter2; "
	    "address h; } }",
	    "outbound-https { client a { secret hunter2; waittime "
	    "hunter3; } }",
	};
	static const char *const enc_cases[] = {
	    "outbound-https { client a { secret \"" SECRET9 "\" x; } }",
	    "outbound-https { client a { secret " SECRET9 " x; } }",
	    "outbound-https { client a { secret \"" SECRET9 "\"; } }",
	    "outbound-https { client a { secret \"" SECRET9 "",
	    "outbound-https { client a { secret \"$9$41JDk5T3CpBFnCuB1rl8"
	    "X7-VYq\"; } }",
	    "outbound-https { client a { secret \"$9$41JDk5T3CpBFnCuB1rl8"
	    "X7-VYq.!\"; } }",
	    "outbound-https { client a { secret \"" SECRET9 "\"; "
	    "VYq; } }",
	};
	char *t;
	size_t i, k, len;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		no_secret_in(cases[i], plain);
	for (i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++)
		no_secret_in(enc_cases[i], enc);

	/* Every truncation of a full file, and every file with a damaged
	 * byte right after the secret. */
	len = strlen(junos_paste);
	for (i = 0; i < len; i++) {
		const char *e;

		(void)parse_invalid(junos_paste, i);
		e = errbuf;
		for (k = 0; enc[k] != NULL; k++)
			assert_null(strstr(e, enc[k]));
	}
	t = subst(junos_paste, SECRET9 "\";", SECRET9 "\" VYq;");
	no_secret_in(t, enc);
	free(t);
}

static void
test_equal_conn(void **state)
{
	static const char base[] =
	    "outbound-https { client a { device-id d; secret s; "
	    "reconnect-strategy in-order; waittime 30; "
	    "address h1.example { port 443; trusted-cert \"" CERT "\"; } "
	    "address h2.example { trusted-cert-file /c.pem; } } }";
	static const struct {
		const char *from, *to;
		int equal;
	} edits[] = {
	    {"waittime 30", "waittime 99", 1},
	    {"in-order", "sticky", 1},
	    {"port 443;", "", 1}, /* the default is the same port */
	    {"device-id d", "device-id e", 0},
	    {"secret s", "secret t", 0},
	    {"secret s", "secret ss", 0},
	    {"port 443", "port 444", 0},
	    {"h2.example", "h3.example", 0},
	    {"/c.pem", "/d.pem", 0},
	    {"NQY=", "NQZ=", 0},
	    {"trusted-cert-file /c.pem;", "trusted-cert \"" CERT "\";", 0},
	    {"address h2.example { trusted-cert-file /c.pem; }", "", 0},
	    {"address h1",
	     "address h3.example { trusted-cert-file "
	     "/c.pem; } address h1",
	     0},
	};
	struct conf *a, *b;
	char *t;
	size_t i;

	(void)state;
	a = parse_valid(base);
	b = parse_valid(base);
	assert_true(
	    conf_client_equal_conn(&a->cf_clients[0], &b->cf_clients[0]));
	conf_free(b);
	for (i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		t = subst(base, edits[i].from, edits[i].to);
		b = parse_valid(t);
		assert_int_equal(conf_client_equal_conn(&a->cf_clients[0],
		                                        &b->cf_clients[0]) != 0,
		                 edits[i].equal);
		assert_int_equal(conf_client_equal_conn(&b->cf_clients[0],
		                                        &a->cf_clients[0]) != 0,
		                 edits[i].equal);
		conf_free(b);
		free(t);
	}
	conf_free(a);
}

static void
test_parse_file(void **state)
{
	char path[] = "/tmp/conf_test.XXXXXX", big[4096];
	struct conf *cf = &sentinel;
	size_t i;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junos_paste, strlen(junos_paste)),
	                 (ssize_t)strlen(junos_paste));
	assert_int_equal(conf_parse_file(path, &cf, errbuf, sizeof(errbuf)), 0);
	assert_int_equal(conf_validate(cf, errbuf, sizeof(errbuf)), 0);
	assert_string_equal(cf->cf_name, path);
	assert_string_equal(cf->cf_clients[0].cc_secret, SECRET9_DEC);
	conf_free(cf);

	/* Errors name the file. */
	assert_int_equal(write(fd, "}", 1), 1);
	cf = &sentinel;
	assert_int_equal(conf_parse_file(path, &cf, errbuf, sizeof(errbuf)),
	                 -EINVAL);
	assert_ptr_equal(cf, &sentinel);
	assert_int_equal(strncmp(errbuf, path, strlen(path)), 0);
	assert_string_equal(errbuf + strlen(path),
	                    ":25:2: unexpected '}' with no open block");

	/* Over the size limit, grown in blocks. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	memset(big, '#', sizeof(big));
	for (i = 0; i <= CONF_MAX_FILE / sizeof(big); i++)
		assert_int_equal(write(fd, big, sizeof(big)),
		                 (ssize_t)sizeof(big));
	assert_int_equal(conf_parse_file(path, &cf, errbuf, sizeof(errbuf)),
	                 -EFBIG);
	assert_ptr_equal(cf, &sentinel);
	(void)close(fd);
	(void)unlink(path);

	assert_int_equal(conf_parse_file(path, &cf, errbuf, sizeof(errbuf)),
	                 -ENOENT);
	assert_non_null(strstr(errbuf, ": cannot open: "));
	assert_int_equal(conf_parse_file("/", &cf, errbuf, sizeof(errbuf)),
	                 -EISDIR);
	assert_string_equal(errbuf, "/: cannot read: Is a directory");
	assert_ptr_equal(cf, &sentinel);
}

/* Failing each allocation in turn gives -ENOMEM, never a crash or leak. */
static void
test_failmalloc(void **state)
{
	char path[] = "/tmp/conf_test.XXXXXX";
	struct conf *cf;
	int i, rc, fd;

	(void)state;
	for (i = 0;; i++) {
		cf = &sentinel;
		fm_countdown = i;
		rc = conf_parse_string("fm", multi, strlen(multi), &cf, errbuf,
		                       sizeof(errbuf));
		fm_countdown = -1;
		if (rc == 0)
			break;
		assert_int_equal(rc, -ENOMEM);
		assert_ptr_equal(cf, &sentinel);
		assert_non_null(strstr(errbuf, "out of memory"));
	}
	assert_true(i > 20);
	conf_free(cf);

	/* Including the $9$ decoder and the file reader. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junos_paste, strlen(junos_paste)),
	                 (ssize_t)strlen(junos_paste));
	(void)close(fd);
	for (i = 0;; i++) {
		cf = &sentinel;
		fm_countdown = i;
		rc = conf_parse_file(path, &cf, errbuf, sizeof(errbuf));
		fm_countdown = -1;
		if (rc == 0)
			break;
		assert_int_equal(rc, -ENOMEM);
		assert_ptr_equal(cf, &sentinel);
	}
	assert_true(i > 10);
	assert_string_equal(cf->cf_clients[0].cc_secret, SECRET9_DEC);
	conf_free(cf);
	(void)unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spec_example_verbatim),
	    cmocka_unit_test(test_spec_example_filled),
	    cmocka_unit_test(test_junos_paste),
	    cmocka_unit_test(test_multi_and_agent),
	    cmocka_unit_test(test_agent_defaults),
	    cmocka_unit_test(test_lexical_details),
	    cmocka_unit_test(test_error_positions),
	    cmocka_unit_test(test_nul_byte),
	    cmocka_unit_test(test_bad_numbers),
	    cmocka_unit_test(test_validation),
	    cmocka_unit_test(test_validate_hand_built),
	    cmocka_unit_test(test_truncations),
	    cmocka_unit_test(test_mutations),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_error_buffers),
	    cmocka_unit_test(test_secret_never_in_errors),
	    cmocka_unit_test(test_equal_conn),
	    cmocka_unit_test(test_parse_file),
	    cmocka_unit_test(test_failmalloc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
