#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* src/server is in no library yet; the test builds the module itself. */
#include "server/ncframe.c"

#define U(x) ((const uint8_t *)(x)), (sizeof(x) - 1)

#define CAP10 "<capability>urn:ietf:params:netconf:base:1.0</capability>"
#define CAP11 "<capability>urn:ietf:params:netconf:base:1.1</capability>"

/* Hellos as RFC 6241 section 8.1 shows them. */
static const char op_hello10[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <capabilities>\n    " CAP10 "\n  </capabilities>\n"
    "</hello>]]>]]>";
static const char op_hello11[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <capabilities>\n    " CAP10 "\n    " CAP11 "\n"
    "  </capabilities>\n</hello>]]>]]>";
static const char dev_hello10[] =
    "<!-- No zombies were killed during the creation of this user "
    "interface -->\n"
    "<!-- user admin, class j-super-user -->\n"
    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <capabilities>\n    " CAP10 "\n"
    "    <capability>urn:ietf:params:netconf:capability:candidate:1.0"
    "</capability>\n  </capabilities>\n"
    "  <session-id>4</session-id>\n</hello>\n]]>]]>\n";
static const char dev_hello11[] =
    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">"
    "<capabilities>" CAP10 CAP11 "</capabilities>"
    "<session-id>4</session-id></hello>]]>]]>";

static const char rpc_get_config[] =
    "<rpc message-id=\"101\" "
    "xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <get-config>\n    <source>\n      <running/>\n    </source>\n"
    "  </get-config>\n</rpc>";
static const char rpc_edit_config[] =
    "<nc:rpc message-id=\"101\" "
    "xmlns:nc=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <nc:edit-config>\n    <nc:target><nc:running/></nc:target>\n"
    "    <nc:config>\n      <top xmlns=\"http://example.com/schema/1.2/"
    "config\">\n        <interface nc:operation=\"replace\">\n"
    "          <name>Ethernet0/0</name>\n          <mtu>1500</mtu>\n"
    "        </interface>\n      </top>\n    </nc:config>\n"
    "  </nc:edit-config>\n</nc:rpc>";
static const char rpc_commit[] =
    "<rpc message-id=\"101\" "
    "xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <commit/>\n</rpc>";
static const char rpc_close[] =
    "<rpc message-id=\"101\" "
    "xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <close-session/>\n</rpc>";
static const char rpc_kill[] =
    "<rpc message-id=\"101\" "
    "xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <kill-session>\n    <session-id>4</session-id>\n"
    "  </kill-session>\n</rpc>";
static const char rpc_get_filter[] =
    "<rpc message-id=\"101\" "
    "xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">\n"
    "  <get>\n    <filter type=\"subtree\">\n"
    "      <top xmlns=\"http://example.com/schema/1.2/stats\">\n"
    "        <interfaces><interface><ifName>eth0</ifName></interface>"
    "</interfaces>\n      </top>\n    </filter>\n  </get>\n</rpc>";
/* Declaration, comments, a PI, a DOCTYPE and attributes holding '>'. */
static const char rpc_decorated[] =
    "\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>\r\n"
    "<!DOCTYPE rpc [ <!ENTITY x \"<get>\"> ]>\n"
    "<!-- <rpc><delete-config/></rpc> -->\n"
    "<?app stuff <rpc>?>\n"
    "<rpc\n  message-id='a>b'\n  xmlns=\"urn:ietf:params:xml:ns:netconf:"
    "base:1.0\"\n>\n"
    "  <!-- the operation follows: <lock/> -->\n"
    "  <![CDATA[ <discard-changes/> ]]>\n"
    "  <?pi <unlock/> ?>\n"
    "  <junos:get-configuration xmlns:junos=\"http://xml.juniper.net/\""
    " format=\"text\"/>\n</rpc>";

struct exp {
	const char *name; /* expected ncframe_op_name(), NULL: -ENOENT */
	const char *xml;
};

static const struct exp realistic[] = {
    {"hello", op_hello10},
    {"hello", dev_hello10},
    {"get-config", rpc_get_config},
    {"edit-config", rpc_edit_config},
    {"commit", rpc_commit},
    {"close-session", rpc_close},
    {"kill-session", rpc_kill},
    {"get", rpc_get_filter},
    {"get-configuration", rpc_decorated},
};

/* A growable byte string for building inputs and collecting outputs. */
struct str {
	uint8_t *s_p;
	size_t s_len;
	size_t s_cap;
};

static void
str_add(struct str *s, const void *p, size_t n)
{
	if (s->s_len + n > s->s_cap) {
		s->s_cap = (s->s_len + n) * 2 + 64;
		s->s_p = realloc(s->s_p, s->s_cap);
		assert_non_null(s->s_p);
	}
	if (n > 0)
		memcpy(s->s_p + s->s_len, p, n);
	s->s_len += n;
}

static void
str_adds(struct str *s, const char *p)
{
	str_add(s, p, strlen(p));
}

static void
str_free(struct str *s)
{
	free(s->s_p);
	memset(s, 0, sizeof(*s));
}

/* Appends xml in 1.1 framing, cut into chunks of at most csize bytes. */
static void
str_chunked(struct str *s, const char *xml, size_t csize)
{
	size_t len = strlen(xml), off, n;
	char hdr[32];

	for (off = 0; off < len; off += n) {
		n = len - off < csize ? len - off : csize;
		snprintf(hdr, sizeof(hdr), "\n#%zu\n", n);
		str_adds(s, hdr);
		str_add(s, xml + off, n);
	}
	str_adds(s, "\n##\n");
}

/*
 * Takes every message ready, checking that each is the next piece of want
 * (ending at ends[i] if ends is not NULL), and appends it to got.  Returns
 * the last ncframe_next() result.
 */
static int
drain_ends(struct ncframe *f, struct str *got, const struct str *want,
           size_t *nmsg, const size_t *ends)
{
	const uint8_t *m;
	size_t len;
	int rc;

	while ((rc = ncframe_next(f, &m, &len)) == 1) {
		assert_true(len > 0);
		str_add(got, m, len);
		if (ends != NULL)
			assert_int_equal(got->s_len, ends[*nmsg]);
		(*nmsg)++;
	}
	assert_true(got->s_len <= want->s_len);
	assert_memory_equal(got->s_p, want->s_p, got->s_len);
	return rc;
}

static int
drain(struct ncframe *f, struct str *got, const struct str *want, size_t *nmsg)
{
	return drain_ends(f, got, want, nmsg, NULL);
}

/*
 * Feeds the whole of in, cut at the given points, with the device hello
 * observed first.  Checks that exactly nmsg messages come out, that each
 * ends where a message of `ends` ends, and that their concatenation is in.
 */
static void
feed_cut(const struct str *in, const char *dev, const size_t *cuts,
         size_t ncuts, const size_t *ends, size_t nends, int mode)
{
	struct ncframe f;
	struct str got = {0};
	size_t i, from = 0, to, nmsg = 0;

	ncframe_init(&f, 0);
	ncframe_observe_device(&f, (const uint8_t *)dev, strlen(dev));
	for (i = 0; i <= ncuts; i++) {
		to = i < ncuts ? cuts[i] : in->s_len;
		assert_int_equal(ncframe_feed(&f, in->s_p + from, to - from),
		                 0);
		assert_int_equal(drain_ends(&f, &got, in, &nmsg, ends), 0);
		assert_true(nmsg <= nends);
		/* Everything not returned is pending, nothing more. */
		assert_int_equal(ncframe_pending(&f), to - got.s_len);
		from = to;
	}
	assert_int_equal(nmsg, nends);
	assert_int_equal(got.s_len, in->s_len);
	assert_int_equal(ends[nends - 1], in->s_len);
	assert_int_equal(ncframe_mode(&f), mode);
	assert_int_equal(ncframe_eof(&f), 0);
	ncframe_free(&f);
	str_free(&got);
}

/* Like feed_cut(), but checks message boundaries one by one. */
static void
feed_check_ends(const struct str *in, const char *dev, const size_t *ends,
                size_t nends)
{
	struct ncframe f;
	const uint8_t *m;
	size_t len, off = 0, i;

	ncframe_init(&f, 0);
	ncframe_observe_device(&f, (const uint8_t *)dev, strlen(dev));
	assert_int_equal(ncframe_feed(&f, in->s_p, in->s_len), 0);
	for (i = 0; i < nends; i++) {
		assert_int_equal(ncframe_next(&f, &m, &len), 1);
		assert_int_equal(len, ends[i] - off);
		assert_memory_equal(m, in->s_p + off, len);
		off = ends[i];
	}
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	assert_int_equal(ncframe_pending(&f), 0);
	ncframe_free(&f);
}

/* Every byte-by-byte and every 2-way split of in. */
static void
split_everywhere(const struct str *in, const char *dev, const size_t *ends,
                 size_t nends, int mode)
{
	size_t *cuts, i;

	feed_check_ends(in, dev, ends, nends);
	cuts = calloc(in->s_len, sizeof(*cuts));
	assert_non_null(cuts);
	for (i = 0; i < in->s_len; i++)
		cuts[i] = i + 1;
	feed_cut(in, dev, cuts, in->s_len - 1, ends, nends, mode);
	for (i = 0; i <= in->s_len; i++)
		feed_cut(in, dev, &i, 1, ends, nends, mode);
	free(cuts);
}

static void
test_eom_split(void **state)
{
	struct str in = {0};
	size_t ends[5];

	(void)state;
	str_adds(&in, op_hello10);
	ends[0] = in.s_len;
	str_adds(&in, rpc_get_config);
	str_adds(&in, "]]>]]>");
	ends[1] = in.s_len;
	/* Whitespace between messages goes with the next one. */
	str_adds(&in, "\n\n  ");
	str_adds(&in, rpc_commit);
	str_adds(&in, "]]>]]>");
	ends[2] = in.s_len;
	/* Near-marks inside a message do not end it. */
	str_adds(&in, "\n<rpc><get><filter>]]>]]]>]>]]]]>]]</filter></get>"
	              "</rpc>]]]>]]>");
	ends[3] = in.s_len;
	str_adds(&in, "]]>]]>");
	ends[4] = in.s_len;
	split_everywhere(&in, dev_hello10, ends, 5, NCFRAME_EOM);
	/* 1.1 on one side only still means 1.0. */
	split_everywhere(&in, dev_hello11, ends, 5, NCFRAME_EOM);
	str_free(&in);
}

static void
test_chunked_split(void **state)
{
	struct str in = {0};
	size_t ends[5];

	(void)state;
	str_adds(&in, op_hello11);
	ends[0] = in.s_len;
	str_chunked(&in, rpc_get_config, 7);
	ends[1] = in.s_len;
	str_chunked(&in, rpc_commit, 1000);
	ends[2] = in.s_len;
	/* Chunk data may hold anything, framing look-alikes included. */
	str_chunked(&in, "<rpc>\n##\n\n#3\n]]>]]></rpc>", 3);
	ends[3] = in.s_len;
	str_chunked(&in, rpc_close, 10);
	ends[4] = in.s_len;
	split_everywhere(&in, dev_hello11, ends, 5, NCFRAME_CHUNKED);
	str_free(&in);
}

static void
test_many_in_one_feed(void **state)
{
	struct ncframe f;
	struct str in = {0}, got = {0};
	size_t i, nmsg = 0;

	(void)state;
	str_adds(&in, op_hello10);
	for (i = 0; i < 1000; i++) {
		str_adds(&in, i % 2 ? rpc_commit : rpc_get_filter);
		str_adds(&in, "]]>]]>\n");
	}
	ncframe_init(&f, 0);
	ncframe_observe_device(&f, U(dev_hello10));
	assert_int_equal(ncframe_feed(&f, in.s_p, in.s_len), 0);
	assert_int_equal(ncframe_pending(&f), in.s_len);
	assert_int_equal(drain(&f, &got, &in, &nmsg), 0);
	assert_int_equal(nmsg, 1001);
	/* The last "\n" waits for a message that never comes. */
	assert_int_equal(got.s_len, in.s_len - 1);
	assert_int_equal(ncframe_pending(&f), 1);
	assert_int_equal(ncframe_eof(&f), 0);
	assert_int_equal(ncframe_feed(&f, U("x")), -EINVAL);
	ncframe_free(&f);
	str_free(&in);
	str_free(&got);
}

/* Hello and rpc in one write, before the device has said anything. */
static void
test_hello_then_rpc(void **state)
{
	struct ncframe f;
	struct str in = {0};
	const uint8_t *m;
	size_t len;

	(void)state;
	str_adds(&in, op_hello11);
	str_chunked(&in, rpc_get_config, 50);
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_mode(&f), NCFRAME_UNDECIDED);
	assert_int_equal(ncframe_feed(&f, in.s_p, in.s_len), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(len, strlen(op_hello11));
	assert_memory_equal(m, op_hello11, len);
	assert_int_equal(ncframe_pending(&f), in.s_len - len);
	/* The rest waits: its framing depends on the device. */
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	assert_int_equal(ncframe_mode(&f), NCFRAME_UNDECIDED);
	assert_int_equal(ncframe_pending(&f), in.s_len - strlen(op_hello11));
	/* The device's hello arrives in pieces. */
	ncframe_observe_device(&f, (const uint8_t *)dev_hello11, 30);
	assert_int_equal(ncframe_mode(&f), NCFRAME_UNDECIDED);
	ncframe_observe_device(&f, (const uint8_t *)dev_hello11 + 30,
	                       strlen(dev_hello11) - 30);
	assert_int_equal(ncframe_mode(&f), NCFRAME_CHUNKED);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(len, in.s_len - strlen(op_hello11));
	assert_memory_equal(m, in.s_p + strlen(op_hello11), len);
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	assert_int_equal(ncframe_pending(&f), 0);
	/* Later device output is not looked at. */
	ncframe_observe_device(&f, U("<rpc-reply/>]]>]]>"));
	assert_int_equal(ncframe_mode(&f), NCFRAME_CHUNKED);
	ncframe_free(&f);
	str_free(&in);
}

/*
 * Every combination of hello versions and of which hello comes first,
 * with the device hello cut at every byte.
 */
static void
test_mode_decision(void **state)
{
	const char *ops[2] = {op_hello10, op_hello11};
	const char *devs[2] = {dev_hello10, dev_hello11};
	struct ncframe f;
	const uint8_t *m;
	size_t len, dlen, cut;
	int o, d, devfirst, want, rc;
	const char *dev;

	(void)state;
	for (o = 0; o < 2; o++) {
		for (d = 0; d < 2; d++) {
			want = o && d ? NCFRAME_CHUNKED : NCFRAME_EOM;
			dev = devs[d];
			dlen = strlen(dev);
			for (devfirst = 0; devfirst < 2; devfirst++) {
				for (cut = 0; cut <= dlen; cut++) {
					ncframe_init(&f, 0);
					if (devfirst) {
						ncframe_observe_device(
						    &f, (const uint8_t *)dev,
						    cut);
						ncframe_observe_device(
						    &f,
						    (const uint8_t *)dev + cut,
						    dlen - cut);
						assert_int_equal(
						    ncframe_mode(&f),
						    NCFRAME_UNDECIDED);
					}
					rc = ncframe_feed(
					    &f, (const uint8_t *)ops[o],
					    strlen(ops[o]));
					assert_int_equal(rc, 0);
					assert_int_equal(
					    ncframe_next(&f, &m, &len), 1);
					assert_int_equal(len, strlen(ops[o]));
					if (!devfirst) {
						assert_int_equal(
						    ncframe_mode(&f),
						    NCFRAME_UNDECIDED);
						ncframe_observe_device(
						    &f, (const uint8_t *)dev,
						    cut);
						ncframe_observe_device(
						    &f,
						    (const uint8_t *)dev + cut,
						    dlen - cut);
					}
					assert_int_equal(ncframe_mode(&f),
					                 want);
					ncframe_free(&f);
				}
			}
		}
	}
}

/* Variations of the device's hello, as a light scanner must read them. */
static void
test_device_hello(void **state)
{
	static const struct {
		const char *hello;
		int mode;
	} cases[] = {
	    {"<hello><capabilities><capability>\n  urn:ietf:params:"
	     "netconf:base:1.1\n</capability></capabilities></hello>]]>]]>",
	     NCFRAME_CHUNKED},
	    {"<nc:hello xmlns:nc=\"urn:ietf:params:xml:ns:netconf:base:1.0"
	     "\"><nc:capabilities><nc:capability>urn:ietf:params:netconf:"
	     "base:1.1</nc:capability></nc:capabilities></nc:hello>]]>]]>",
	     NCFRAME_CHUNKED},
	    /* Mentioned in a comment only. */
	    {"<hello><!-- <capability>urn:ietf:params:netconf:base:1.1"
	     "</capability> -->" CAP10 "</hello>]]>]]>",
	     NCFRAME_EOM},
	    /* A longer URN, and the bare string outside a capability. */
	    {"<hello><capabilities><capability>urn:ietf:params:netconf:"
	     "base:1.10</capability><x>urn:ietf:params:netconf:base:1.1"
	     "</x></capabilities></hello>]]>]]>",
	     NCFRAME_EOM},
	    /* Advertised after the hello has ended. */
	    {"<hello>" CAP10 "</hello>]]>]]>" CAP11, NCFRAME_EOM},
	    {"<hello><capability/>" CAP11 "</hello>]]>]]>", NCFRAME_CHUNKED},
	    {"<hello><capability>urn:ietf:params:netconf:base:1.1",
	     NCFRAME_UNDECIDED},
	};
	struct ncframe f;
	uint8_t *big;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ncframe_init(&f, 0);
		ncframe_observe_device(&f, (const uint8_t *)cases[i].hello,
		                       strlen(cases[i].hello));
		assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
		assert_int_equal(ncframe_mode(&f), cases[i].mode);
		ncframe_free(&f);
	}

	/* An over-long device hello counts as 1.0-only, in one call... */
	big = malloc(NCFRAME_DEVICE_HELLO_MAX + 100);
	assert_non_null(big);
	memset(big, ' ', NCFRAME_DEVICE_HELLO_MAX + 100);
	memcpy(big, "<hello>" CAP11, sizeof("<hello>" CAP11) - 1);
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	ncframe_observe_device(&f, big, NCFRAME_DEVICE_HELLO_MAX + 100);
	assert_int_equal(ncframe_mode(&f), NCFRAME_EOM);
	assert_null(f.f_dev.b_data);
	ncframe_free(&f);
	/* ...or reaching the cap exactly over several. */
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	for (i = 0; i < NCFRAME_DEVICE_HELLO_MAX; i += 4096) {
		assert_int_equal(ncframe_mode(&f), NCFRAME_UNDECIDED);
		ncframe_observe_device(&f, big, 4096);
	}
	assert_int_equal(ncframe_mode(&f), NCFRAME_EOM);
	ncframe_free(&f);
	free(big);
}

struct bad {
	const char *in; /* operator bytes after a 1.1 hello */
	int feed_rc;    /* what ncframe_feed() returns */
	int eof_rc;     /* then what ncframe_eof() returns */
};

static void
test_chunked_malformed(void **state)
{
	static const struct bad cases[] = {
	    {"\n#01\nx\n##\n", -EPROTO, -EPROTO},      /* leading zero */
	    {"\n#0\n\n##\n", -EPROTO, -EPROTO},        /* zero size */
	    {"\n#x\n", -EPROTO, -EPROTO},              /* non-digit */
	    {"\n#1x\n", -EPROTO, -EPROTO},             /* non-digit */
	    {"\n#-1\n", -EPROTO, -EPROTO},             /* sign */
	    {"\n# 1\n", -EPROTO, -EPROTO},             /* space */
	    {"\n#1\r\nx", -EPROTO, -EPROTO},           /* CRLF */
	    {"\n#3abc\n##\n", -EPROTO, -EPROTO},       /* missing LF */
	    {"\n##\n", -EPROTO, -EPROTO},              /* no chunk */
	    {"\n#3\nabc\n#", 0, -EPROTO},              /* no end */
	    {"\n#3\nabc\n##x", -EPROTO, -EPROTO},      /* junk end */
	    {"\n#3\nabc##\n", -EPROTO, -EPROTO},       /* too long */
	    {"\n#2\nabc\n##\n", -EPROTO, -EPROTO},     /* too short */
	    {"\n#4294967296\n", -EPROTO, -EPROTO},     /* over 2^32-1 */
	    {"\n#99999999999\n", -EPROTO, -EPROTO},    /* 11 digits */
	    {"\n#4294967295\n", -EMSGSIZE, -EMSGSIZE}, /* over max_msg */
	    {"\n#", 0, -EPROTO},                       /* then EOF */
	    {"\n", 0, -EPROTO},
	    {"\n#3\nab", 0, -EPROTO},
	    {"\n#3\nabc\n##\n\n", 0, -EPROTO},
	    {" \n#3\nabc\n##\n", -EPROTO, -EPROTO}, /* no whitespace */
	    {"<rpc/>]]>]]>", -EPROTO, -EPROTO},     /* 1.0 framing */
	    {"\n#3\nabc\n##\n", 0, 0},              /* the good one */
	};
	struct ncframe f;
	const uint8_t *m;
	size_t len, i, k, n;
	int rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = strlen(cases[i].in);
		/* In one feed, and a byte at a time. */
		for (k = 0; k < 2; k++) {
			ncframe_init(&f, 0);
			ncframe_observe_device(&f, U(dev_hello11));
			assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
			assert_int_equal(ncframe_next(&f, &m, &len), 1);
			if (k == 0)
				rc = ncframe_feed(
				    &f, (const uint8_t *)cases[i].in, n);
			else {
				for (rc = 0, len = 0; len < n && rc == 0; len++)
					rc = ncframe_feed(
					    &f,
					    (const uint8_t *)cases[i].in + len,
					    1);
			}
			assert_int_equal(rc, cases[i].feed_rc);
			assert_int_equal(ncframe_eof(&f), cases[i].eof_rc);
			/* Sticky, for every entry point. */
			if (cases[i].eof_rc != 0) {
				assert_int_equal(ncframe_feed(&f, U("\n")),
				                 cases[i].eof_rc);
				rc = ncframe_next(&f, &m, &len);
				if (rc == 1) /* the good message first */
					rc = ncframe_next(&f, &m, &len);
				assert_int_equal(rc, cases[i].eof_rc);
			}
			ncframe_free(&f);
		}
	}
}

static void
test_chunked_max(void **state)
{
	struct ncframe f;
	struct str in = {0};
	const uint8_t *m;
	size_t len;

	(void)state;
	/* Exactly max_msg bytes is accepted: "\n#5\n" + 5 + "\n##\n". */
	ncframe_init(&f, 13);
	ncframe_observe_device(&f, U(dev_hello11));
	f.f_max = 100000; /* let the hello through first */
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	f.f_max = 13;
	assert_int_equal(ncframe_feed(&f, U("\n#5\nabcde\n##\n")), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(len, 13);
	/* One more byte is refused at the chunk header. */
	assert_int_equal(ncframe_feed(&f, U("\n#6\n")), -EMSGSIZE);
	ncframe_free(&f);

	/* Many small chunks adding up past max_msg. */
	ncframe_init(&f, 1000);
	ncframe_observe_device(&f, U(dev_hello11));
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	for (len = 0; len < 200; len++)
		str_adds(&in, "\n#5\nabcde");
	assert_int_equal(ncframe_feed(&f, in.s_p, in.s_len), -EMSGSIZE);
	ncframe_free(&f);
	str_free(&in);
}

static void
test_eom_max(void **state)
{
	struct ncframe f;
	const uint8_t *m;
	uint8_t *big;
	size_t len, i;

	(void)state;
	/* Exactly max_msg is fine, one byte more is not. */
	ncframe_init(&f, 16);
	assert_int_equal(ncframe_feed(&f, U("<hello/>]]>]]>\n ")), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(len, 14);
	ncframe_observe_device(&f, U(dev_hello10));
	assert_int_equal(ncframe_feed(&f, U("<rpc  />]]>]]>")), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(len, 16);
	assert_memory_equal(m, "\n <rpc  />]]>]]>", 16);
	assert_int_equal(ncframe_feed(&f, U("<rpc></rpc>]]>]")), 0);
	assert_int_equal(ncframe_feed(&f, U("]")), 0);
	assert_int_equal(ncframe_feed(&f, U(">")), -EMSGSIZE);
	assert_int_equal(ncframe_next(&f, &m, &len), -EMSGSIZE);
	ncframe_free(&f);

	/* An over-long hello, too. */
	ncframe_init(&f, 16);
	assert_int_equal(ncframe_feed(&f, U("<hello> </hello>]]>]]>")),
	                 -EMSGSIZE);
	ncframe_free(&f);

	/*
	 * With the default 16 MiB limit, memory follows the input, and
	 * 17 MiB without a mark is refused having kept little more than
	 * the limit.
	 */
	ncframe_init(&f, 0);
	ncframe_observe_device(&f, U(dev_hello10));
	assert_int_equal(ncframe_feed(&f, U(op_hello10)), 0);
	assert_true(f.f_in.b_cap < 4096);
	big = malloc(1024 * 1024);
	assert_non_null(big);
	memset(big, 'x', 1024 * 1024);
	for (i = 0; i < 16; i++)
		assert_int_equal(ncframe_feed(&f, big, 1024 * 1024), 0);
	assert_int_equal(ncframe_feed(&f, big, 1024 * 1024), -EMSGSIZE);
	assert_true(f.f_in.b_len <= NCFRAME_DEFAULT_MAX_MSG + 2 * FEED_STEP);
	ncframe_free(&f);
	free(big);
}

static void
test_eof(void **state)
{
	struct ncframe f;
	const uint8_t *m;
	size_t len;

	(void)state;
	/* Trailing whitespace is fine in 1.0, a partial message is not. */
	ncframe_init(&f, 0);
	ncframe_observe_device(&f, U(dev_hello10));
	assert_int_equal(ncframe_feed(&f, U(op_hello10)), 0);
	assert_int_equal(ncframe_feed(&f, U("<rpc><commit/></rpc>]]>]]>\n")),
	                 0);
	assert_int_equal(ncframe_eof(&f), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	ncframe_free(&f);

	ncframe_init(&f, 0);
	ncframe_observe_device(&f, U(dev_hello10));
	assert_int_equal(ncframe_feed(&f, U(op_hello10)), 0);
	assert_int_equal(ncframe_feed(&f, U("<rpc><commit/></rpc>]]>]]")), 0);
	assert_int_equal(ncframe_eof(&f), -EPROTO);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), -EPROTO);
	ncframe_free(&f);

	/* A cut-off hello, and an empty stream. */
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_feed(&f, U("<hello>")), 0);
	assert_int_equal(ncframe_eof(&f), -EPROTO);
	ncframe_free(&f);
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_eof(&f), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	ncframe_free(&f);

	/* Undecided at EOF: the verdict comes with the device's hello. */
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	assert_int_equal(ncframe_feed(&f, U("\n#3\nab")), 0);
	assert_int_equal(ncframe_eof(&f), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	ncframe_observe_device(&f, U(dev_hello11));
	assert_int_equal(ncframe_next(&f, &m, &len), -EPROTO);
	ncframe_free(&f);

	/* Chunked bytes, but 1.0 was decided: a cut-off 1.0 message. */
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	assert_int_equal(ncframe_feed(&f, U("\n#3\nabc\n##\n")), 0);
	assert_int_equal(ncframe_eof(&f), 0);
	ncframe_observe_device(&f, U(dev_hello10));
	assert_int_equal(ncframe_mode(&f), NCFRAME_EOM);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), -EPROTO);
	ncframe_free(&f);
}

/* A malformed message found when the framing is decided. */
static void
test_error_on_decide(void **state)
{
	struct ncframe f;
	const uint8_t *m;
	size_t len;

	(void)state;
	ncframe_init(&f, 0);
	assert_int_equal(ncframe_feed(&f, U(op_hello11)), 0);
	assert_int_equal(ncframe_feed(&f, U("\n#3\nabc\n##\n\n#03\n")), 0);
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(ncframe_next(&f, &m, &len), 0);
	ncframe_observe_device(&f, U(dev_hello11));
	/* The good message still comes out, then the error. */
	assert_int_equal(ncframe_next(&f, &m, &len), 1);
	assert_int_equal(len, 11);
	assert_int_equal(ncframe_next(&f, &m, &len), -EPROTO);
	assert_int_equal(ncframe_feed(&f, U("\n")), -EPROTO);
	ncframe_free(&f);
}

/* A tiny deterministic generator, so failures reproduce. */
static uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Random messages and random feed sizes, in both framings. */
static void
test_concatenation(void **state)
{
	static const char *bodies[] = {
	    rpc_get_config, rpc_edit_config, rpc_commit,    rpc_close,
	    rpc_kill,       rpc_get_filter,  rpc_decorated, "",
	};
	struct ncframe f;
	struct str in = {0}, got = {0};
	uint32_t seed = 12345;
	size_t round, i, nmsg, want, off, n;
	int chunked;

	(void)state;
	for (round = 0; round < 200; round++) {
		chunked = round % 2;
		in.s_len = got.s_len = 0;
		str_adds(&in, chunked ? op_hello11 : op_hello10);
		want = 1 + rnd(&seed) % 30;
		for (i = 1; i < want; i++) {
			const char *b = bodies[rnd(&seed) % 8];

			if (chunked) {
				if (*b == '\0')
					b = "<rpc/>";
				str_chunked(&in, b, 1 + rnd(&seed) % 200);
			} else {
				if (rnd(&seed) % 3 == 0)
					str_adds(&in, "\r\n\t ");
				str_adds(&in, b);
				str_adds(&in, "]]>]]>");
			}
		}
		ncframe_init(&f, 0);
		nmsg = 0;
		for (off = 0; off < in.s_len; off += n) {
			n = 1 + rnd(&seed) % 300;
			if (n > in.s_len - off)
				n = in.s_len - off;
			assert_int_equal(ncframe_feed(&f, in.s_p + off, n), 0);
			if (rnd(&seed) % 4 == 0)
				assert_int_equal(drain(&f, &got, &in, &nmsg),
				                 0);
			/* The device hello turns up somewhere. */
			if (rnd(&seed) % 10 == 0)
				ncframe_observe_device(
				    &f, (const uint8_t *)dev_hello11,
				    strlen(dev_hello11));
		}
		ncframe_observe_device(&f, U(dev_hello11));
		assert_int_equal(drain(&f, &got, &in, &nmsg), 0);
		assert_int_equal(nmsg, want);
		assert_int_equal(got.s_len, in.s_len);
		assert_memory_equal(got.s_p, in.s_p, in.s_len);
		assert_int_equal(ncframe_pending(&f), 0);
		ncframe_free(&f);
	}
	str_free(&in);
	str_free(&got);
}

/* Calls ncframe_op_name() on an exact-size heap copy, for ASan. */
static int
op_name(const void *p, size_t len, char *out, size_t outlen)
{
	uint8_t *copy = malloc(len == 0 ? 1 : len);
	int rc;

	assert_non_null(copy);
	memcpy(copy, p, len);
	rc = ncframe_op_name(copy + (len == 0 ? 1 : 0), len, out, outlen);
	free(copy);
	return rc;
}

static void
test_op_name_realistic(void **state)
{
	struct str s = {0};
	char out[64];
	size_t i, csize;

	(void)state;
	for (i = 0; i < sizeof(realistic) / sizeof(realistic[0]); i++) {
		const char *xml = realistic[i].xml;

		/* Bare, and with its 1.0 framing. */
		memset(out, 0, sizeof(out));
		assert_int_equal(op_name(xml, strlen(xml), out, sizeof(out)),
		                 0);
		assert_string_equal(out, realistic[i].name);
		s.s_len = 0;
		str_adds(&s, xml);
		if (strstr(xml, "]]>]]>") == NULL)
			str_adds(&s, "]]>]]>");
		str_adds(&s, "trailing <rpc><junk/></rpc>");
		assert_int_equal(op_name(s.s_p, s.s_len, out, sizeof(out)), 0);
		assert_string_equal(out, realistic[i].name);
		/* Chunked, with chunk boundaries everywhere. */
		for (csize = 1; csize < 40; csize++) {
			s.s_len = 0;
			str_chunked(&s, xml, csize);
			memset(out, 0, sizeof(out));
			assert_int_equal(
			    op_name(s.s_p, s.s_len, out, sizeof(out)), 0);
			assert_string_equal(out, realistic[i].name);
		}
	}
	str_free(&s);
}

static void
test_op_name_edges(void **state)
{
	static const struct exp cases[] = {
	    {"commit", "<rpc><commit/></rpc>"},
	    {"commit", "<rpc><commit></commit></rpc>"},
	    {"commit", "<rpc\t\n><commit\n/></rpc>"},
	    {"commit", "<rpc a=\"/>\"><commit/></rpc>"},
	    {"get", "<rpc>text first<get/></rpc>"},
	    {"lock", "<a:rpc xmlns:a=\"x\"><b:lock/></a:rpc>"},
	    {NULL, "<rpc><get-config"},       /* truncated after name */
	    {NULL, "<rpc><get-config a=\"x"}, /* truncated in a tag */
	    {"hello", "<hello/>"},
	    {"hello", "<nc:hello>"},
	    {NULL, ""},
	    {NULL, "   \n"},
	    {NULL, "]]>]]><rpc><get/></rpc>"},
	    {NULL, "<rpc/>"},
	    {NULL, "<rpc></rpc>"},
	    {NULL, "<rpc><!-- <get/> --></rpc>"},
	    {NULL, "<rpc><![CDATA[<get/>]]></rpc>"},
	    {NULL, "<rpc><!-- <get/>"},
	    {NULL, "<rpc-reply><ok/></rpc-reply>"},
	    {NULL, "<notification><eventTime/></notification>"},
	    {NULL, "<rpcx><get/></rpcx>"},
	    {NULL, "<rp><get/></rp>"},
	    {NULL, "< rpc><get/></rpc>"},
	    {NULL, "<rpc><nc:/></rpc>"},
	    {NULL, "<rpc><ge\xc3\xa9t/></rpc>"},
	    {NULL, "<rpc><get;/></rpc>"},
	    {NULL, "<rpc><get/"},
	    {NULL, "<rpc><get/x></rpc>"},
	    {NULL, "<rpc"},
	    {NULL, "<"},
	    {NULL, "<!"},
	    {NULL, "<!-"},
	    {NULL, "<?xml"},
	    {NULL, "<!DOCTYPE x [ <!ENTITY a '>'>"},
	    {NULL, "\n#"},
	    {NULL, "\n#0\n<rpc><get/></rpc>\n##\n"},
	    {NULL, "\n#99999999999\n<rpc><get/></rpc>\n##\n"},
	    {NULL, "\n#5\n<rpc>\n##\n"},
	    {NULL, "\n#5\n<rpc>\n#2\n<get/></rpc>\n##\n"},
	    {"get", "\n#5\n<rpc>\n#6\n<get/>\n#6\n</rpc>\n##\n"},
	    {"get", "\n#5\n<rpc>\n#100\n<get/>"}, /* chunk past the end */
	};
	char out[16], many[300];
	size_t i;
	int rc;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, '@', sizeof(out));
		rc = op_name(cases[i].xml, strlen(cases[i].xml), out,
		             sizeof(out));
		if (cases[i].name == NULL) {
			assert_int_equal(rc, -ENOENT);
			assert_int_equal(out[0], '@');
		} else {
			assert_int_equal(rc, 0);
			assert_string_equal(out, cases[i].name);
		}
	}

	/* Output that does not fit is not written at all. */
	memset(out, '@', sizeof(out));
	assert_int_equal(op_name(U(rpc_close), out, 13), -ENAMETOOLONG);
	assert_int_equal(out[0], '@');
	assert_int_equal(op_name(U(rpc_close), out, 0), -ENAMETOOLONG);
	assert_int_equal(op_name(U(rpc_close), out, 14), 0);
	assert_string_equal(out, "close-session");

	/* Names are bounded: an absurd one is refused, not truncated. */
	memcpy(many, "<rpc><", 6);
	memset(many + 6, 'a', 250);
	memcpy(many + 256, "/></rpc>", 9);
	assert_int_equal(op_name(many, strlen(many), out, sizeof(out)),
	                 -ENAMETOOLONG);
	/* A long prefix is dropped, so it is no problem. */
	memcpy(many + 252, ":get", 4);
	assert_int_equal(op_name(many, strlen(many), out, sizeof(out)), 0);
	assert_string_equal(out, "get");
}

/* Every prefix of every example, in both framings: never out of bounds. */
static void
test_op_name_truncated(void **state)
{
	struct str s = {0};
	char out[64];
	size_t i, n, full;
	int rc, framing;

	(void)state;
	for (i = 0; i < sizeof(realistic) / sizeof(realistic[0]); i++) {
		for (framing = 0; framing < 2; framing++) {
			s.s_len = 0;
			if (framing)
				str_chunked(&s, realistic[i].xml, 16);
			else
				str_adds(&s, realistic[i].xml);
			full = s.s_len;
			for (n = 0; n <= full; n++) {
				rc = op_name(s.s_p, n, out, sizeof(out));
				assert_true(rc == 0 || rc == -ENOENT);
				if (rc == 0)
					assert_string_equal(out,
					                    realistic[i].name);
			}
		}
	}
	str_free(&s);
}

/* Random bytes drawn from XML and framing characters. */
static void
test_op_name_garbage(void **state)
{
	static const char alphabet[] = "<>/!?-[]#\n:'\" =rpcgetCDATA0123456789";
	uint8_t buf[64];
	char out[8];
	uint32_t seed = 99;
	size_t round, n, i;
	int rc;

	(void)state;
	for (round = 0; round < 200000; round++) {
		n = rnd(&seed) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = (uint8_t)
			    alphabet[rnd(&seed) % (sizeof(alphabet) - 1)];
		if (round % 3 == 0 && n >= 6)
			memcpy(buf, "<rpc><", 6);
		rc = op_name(buf, n, out, sizeof(out));
		assert_true(rc == 0 || rc == -ENOENT || rc == -ENAMETOOLONG);
		if (rc == 0)
			assert_true(strlen(out) < sizeof(out));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_eom_split),
	    cmocka_unit_test(test_chunked_split),
	    cmocka_unit_test(test_many_in_one_feed),
	    cmocka_unit_test(test_hello_then_rpc),
	    cmocka_unit_test(test_mode_decision),
	    cmocka_unit_test(test_device_hello),
	    cmocka_unit_test(test_chunked_malformed),
	    cmocka_unit_test(test_chunked_max),
	    cmocka_unit_test(test_eom_max),
	    cmocka_unit_test(test_eof),
	    cmocka_unit_test(test_error_on_decide),
	    cmocka_unit_test(test_concatenation),
	    cmocka_unit_test(test_op_name_realistic),
	    cmocka_unit_test(test_op_name_edges),
	    cmocka_unit_test(test_op_name_truncated),
	    cmocka_unit_test(test_op_name_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
