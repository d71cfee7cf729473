#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/utf8.h"

#define U(x) ((const uint8_t *)(x)), (sizeof(x) - 1)

/* Encodes code point cp (any value up to 0x1fffff, surrogates too). */
static size_t
encode(uint32_t cp, uint8_t *out)
{
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xc0 | cp >> 6);
		out[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xe0 | cp >> 12);
		out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (uint8_t)(0xf0 | cp >> 18);
	out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

static void
test_valid(void **state)
{
	uint8_t buf[4];
	uint32_t cp;
	size_t n;

	(void)state;
	assert_true(utf8_valid(U("")));
	assert_true(utf8_valid(U("plain ascii <rpc/>")));
	assert_true(utf8_valid(U("\0")));
	assert_true(utf8_valid(U("\x7f")));
	/* é, ☃ and 😀: one character of each longer length. */
	assert_true(utf8_valid(U("h\xc3\xa9llo")));
	assert_true(utf8_valid(U("\xe2\x98\x83")));
	assert_true(utf8_valid(U("\xf0\x9f\x98\x80")));
	/* The boundaries: 80 7FF, 800 FFFF, D7FF E000, 10000, 10FFFF. */
	assert_true(utf8_valid(U("\xc2\x80\xdf\xbf")));
	assert_true(utf8_valid(U("\xe0\xa0\x80\xef\xbf\xbf")));
	assert_true(utf8_valid(U("\xed\x9f\xbf\xee\x80\x80")));
	assert_true(utf8_valid(U("\xf0\x90\x80\x80")));
	assert_true(utf8_valid(U("\xf4\x8f\xbf\xbf")));
	assert_true(utf8_valid(U("\xef\xbf\xbd")));

	/* Every scalar value, each alone and after ASCII. */
	for (cp = 0; cp <= 0x10ffff; cp++) {
		if (cp >= 0xd800 && cp <= 0xdfff)
			continue;
		n = encode(cp, buf);
		assert_true(utf8_valid(buf, n));
		assert_int_equal(utf8_complete_prefix(buf, n), n);
	}
}

static void
test_invalid(void **state)
{
	uint8_t buf[4];
	uint32_t cp;
	unsigned int b;

	(void)state;
	/* Overlong forms. */
	assert_false(utf8_valid(U("\xc0\x80")));
	assert_false(utf8_valid(U("\xc0\xaf")));
	assert_false(utf8_valid(U("\xc1\xbf")));
	assert_false(utf8_valid(U("\xe0\x80\x80")));
	assert_false(utf8_valid(U("\xe0\x9f\xbf")));
	assert_false(utf8_valid(U("\xf0\x80\x80\x80")));
	assert_false(utf8_valid(U("\xf0\x8f\xbf\xbf")));
	/* Surrogates, alone and as a CESU-8 pair. */
	assert_false(utf8_valid(U("\xed\xa0\x80")));
	assert_false(utf8_valid(U("\xed\xbf\xbf")));
	assert_false(utf8_valid(U("\xed\xa0\xbd\xed\xb8\x80")));
	for (cp = 0xd800; cp <= 0xdfff; cp++) {
		encode(cp, buf);
		assert_false(utf8_valid(buf, 3));
	}
	/* Above U+10FFFF. */
	assert_false(utf8_valid(U("\xf4\x90\x80\x80")));
	assert_false(utf8_valid(U("\xf7\xbf\xbf\xbf")));
	assert_false(utf8_valid(U("\xf8\x88\x80\x80\x80")));
	for (cp = 0x110000; cp <= 0x1fffff; cp += 0x1111)
		assert_false(utf8_valid(buf, encode(cp, buf)));
	/* Stray continuation bytes. */
	for (b = 0x80; b <= 0xbf; b++) {
		buf[0] = (uint8_t)b;
		assert_false(utf8_valid(buf, 1));
	}
	assert_false(utf8_valid(U("a\x80")));
	assert_false(utf8_valid(U("\xc3\xa9\xa9")));
	/* Bytes that never appear. */
	assert_false(utf8_valid(U("\xc0")));
	assert_false(utf8_valid(U("\xc1")));
	for (b = 0xf5; b <= 0xff; b++) {
		buf[0] = (uint8_t)b;
		buf[1] = buf[2] = buf[3] = 0x80;
		assert_false(utf8_valid(buf, 1));
		assert_false(utf8_valid(buf, 4));
	}
	/* Truncated and interrupted sequences. */
	assert_false(utf8_valid(U("\xc3")));
	assert_false(utf8_valid(U("\xe2\x98")));
	assert_false(utf8_valid(U("\xf0\x9f\x98")));
	assert_false(utf8_valid(U("\xc3"
	                          "a")));
	assert_false(utf8_valid(U("\xe2\x98"
	                          "a")));
	assert_false(utf8_valid(U("\xf0\x9f\x98\xc3\xa9")));
	/* Only len bytes are read. */
	assert_true(utf8_valid((const uint8_t *)"ab\xff", 2));
}

/* Checks complete_prefix on every truncation of one character. */
static void
check_truncations(const uint8_t *c, size_t n)
{
	uint8_t buf[8] = "ab";
	size_t k;

	memcpy(buf + 2, c, n);
	for (k = 0; k < n; k++) {
		/* "ab" plus the first k bytes: those k are held back. */
		assert_int_equal(utf8_complete_prefix(buf, 2 + k), 2);
		assert_int_equal(utf8_complete_prefix(buf + 2, k), 0);
	}
	assert_int_equal(utf8_complete_prefix(buf, 2 + n), 2 + n);
	assert_int_equal(utf8_complete_prefix(buf + 2, n), n);
}

static void
test_complete_prefix(void **state)
{
	uint8_t buf[8];

	(void)state;
	assert_int_equal(utf8_complete_prefix(U("")), 0);
	assert_int_equal(utf8_complete_prefix(U("abc")), 3);
	check_truncations(U("\xc3\xa9"));
	check_truncations(U("\xdf\xbf"));
	check_truncations(U("\xe0\xa0\x80"));
	check_truncations(U("\xe2\x98\x83"));
	check_truncations(U("\xed\x9f\xbf"));
	check_truncations(U("\xef\xbf\xbf"));
	check_truncations(U("\xf0\x90\x80\x80"));
	check_truncations(U("\xf0\x9f\x98\x80"));
	check_truncations(U("\xf3\xbf\xbf\xbf"));
	check_truncations(U("\xf4\x8f\xbf\xbf"));
	/* A complete character before an incomplete one is kept. */
	assert_int_equal(utf8_complete_prefix(U("\xc3\xa9\xe2\x98")), 2);
	assert_int_equal(utf8_complete_prefix(U("\xf0\x9f\x98\x80\xf0")), 4);

	/* Invalid trailing bytes are never held back. */
	assert_int_equal(utf8_complete_prefix(U("a\x80")), 2);
	assert_int_equal(utf8_complete_prefix(U("a\xbf\xbf\xbf")), 4);
	assert_int_equal(utf8_complete_prefix(U("a\xc0")), 2);
	assert_int_equal(utf8_complete_prefix(U("a\xc1")), 2);
	assert_int_equal(utf8_complete_prefix(U("a\xf5")), 2);
	assert_int_equal(utf8_complete_prefix(U("a\xff")), 2);
	assert_int_equal(utf8_complete_prefix(U("a\xc0\x80")), 3);
	/* Wrong second byte: overlong, surrogate, above U+10FFFF. */
	assert_int_equal(utf8_complete_prefix(U("a\xe0\x80")), 3);
	assert_int_equal(utf8_complete_prefix(U("a\xe0\x9f")), 3);
	assert_int_equal(utf8_complete_prefix(U("a\xed\xa0")), 3);
	assert_int_equal(utf8_complete_prefix(U("a\xed\xbf\x80")), 4);
	assert_int_equal(utf8_complete_prefix(U("a\xf0\x80")), 3);
	assert_int_equal(utf8_complete_prefix(U("a\xf0\x8f\xbf")), 4);
	assert_int_equal(utf8_complete_prefix(U("a\xf4\x90")), 3);
	assert_int_equal(utf8_complete_prefix(U("a\xf4\x90\x80")), 4);
	/* ... and the same leads with a good second byte are held back. */
	assert_int_equal(utf8_complete_prefix(U("a\xe0\xa0")), 1);
	assert_int_equal(utf8_complete_prefix(U("a\xed\x9f")), 1);
	assert_int_equal(utf8_complete_prefix(U("a\xf0\x90\x80")), 1);
	assert_int_equal(utf8_complete_prefix(U("a\xf4\x8f\xbf")), 1);
	/* A bad third byte, and a lead cut off by another lead. */
	assert_int_equal(utf8_complete_prefix(U("a\xf0\x90\x41")), 4);
	assert_int_equal(utf8_complete_prefix(U("a\xe2\xc3")), 2);
	/* A complete character followed by a stray continuation byte. */
	assert_int_equal(utf8_complete_prefix(U("\xc3\xa9\x80")), 3);
	assert_int_equal(utf8_complete_prefix(U("\xe2\x98\x83\x80")), 4);
	/* A 4-byte lead with too many continuations. */
	assert_int_equal(utf8_complete_prefix(U("\xf0\x9f\x98\x80\x80")), 5);

	/* Only len bytes are read. */
	memcpy(buf, "ab\xe2\x98\x83", 5);
	assert_int_equal(utf8_complete_prefix(buf, 4), 2);
}

static void
check_sanitize(const uint8_t *in, size_t len, const uint8_t *want,
               size_t wantlen)
{
	uint8_t out[3 * 64];
	size_t n;

	assert_true(len <= 64);
	n = utf8_sanitize(in, len, out);
	assert_int_equal(n, wantlen);
	assert_memory_equal(out, want, wantlen);
	assert_true(utf8_valid(out, n));
}

#define R "\xef\xbf\xbd"

static void
test_sanitize(void **state)
{
	(void)state;
	check_sanitize(U(""), U(""));
	check_sanitize(U("abc"), U("abc"));
	check_sanitize(U("h\xc3\xa9llo \xf0\x9f\x98\x80"),
	               U("h\xc3\xa9llo \xf0\x9f\x98\x80"));
	/*
	 * Unicode 15, chapter 3, table 3-8: the maximal subparts are
	 * 61 | F1 80 80 | E1 80 | C2 | 62 | 80 | 63 | 80 | BF | 64, so
	 * three U+FFFD stand between "a" and "b".
	 */
	check_sanitize(U("\x61\xf1\x80\x80\xe1\x80\xc2\x62"
	                 "\x80\x63\x80\xbf\x64"),
	               U("a" R R R "b" R "c" R R "d"));
	/* Table 3-9: non-shortest forms, one U+FFFD per byte. */
	check_sanitize(U("\xc0\xaf\xe0\x80\xbf\xf0\x81\x82\x41"),
	               U(R R R R R R R R "A"));
	/* Table 3-10: surrogates. */
	check_sanitize(U("\xed\xa0\x80\xed\xbf\xbf\xed\xaf\x41"),
	               U(R R R R R R R R "A"));
	/* Table 3-11: other ill-formed sequences. */
	check_sanitize(U("\xf4\x91\x92\x93\xff\x41\x80\xbf\x42"),
	               U(R R R R R "A" R R "B"));
	/* Table 3-12: truncated sequences, one U+FFFD each. */
	check_sanitize(U("\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41"),
	               U(R R R R "A"));
	/* A truncated sequence at the very end. */
	check_sanitize(U("a\xf0\x9f\x98"), U("a" R));
	check_sanitize(U("a\xe2\x98"), U("a" R));
	check_sanitize(U("\xc3"), U(R));
	/* The worst case: every byte becomes three. */
	check_sanitize(U("\xff\x80\xc0"), U(R R R));
	/* U+FFFD itself passes through. */
	check_sanitize(U(R), U(R));
	check_sanitize(U("\0\x7f"), U("\0\x7f"));
}

/* Sanitized output is always valid, and valid input is left unchanged. */
static void
test_sanitize_random(void **state)
{
	uint8_t in[32], out[3 * sizeof(in)];
	uint32_t seed = 12345;
	size_t i, n, len, p;
	int round;

	(void)state;
	for (round = 0; round < 100000; round++) {
		len = (seed = seed * 1103515245 + 12345) >> 16 & 31;
		for (i = 0; i < len; i++) {
			seed = seed * 1103515245 + 12345;
			/* Favour bytes near the interesting boundaries. */
			in[i] = (uint8_t)(seed >> 16 & 1 ? 0x80 | (seed >> 20)
			                                 : seed >> 20);
		}
		n = utf8_sanitize(in, len, out);
		assert_true(n <= 3 * len);
		assert_true(utf8_valid(out, n));
		if (utf8_valid(in, len)) {
			assert_int_equal(n, len);
			assert_memory_equal(out, in, len);
		}
		p = utf8_complete_prefix(in, len);
		assert_true(p <= len && len - p <= 3);
		/* What is held back is never invalid on its own account. */
		if (p < len)
			assert_true(in[p] >= 0xc2 && in[p] <= 0xf4);
		if (utf8_valid(in, p) && p < len)
			assert_false(utf8_valid(in, len));
	}
}

/*
 * The byte-at-a-time decoder that utf8.c replaced with run copies, as an
 * oracle: one U+FFFD per maximal subpart (Unicode table 3-8).
 */
static size_t
ref_sanitize(const uint8_t *s, size_t len, uint8_t *out)
{
	size_t i = 0, o = 0, need, k;
	uint8_t b, lo, hi;

	while (i < len) {
		b = s[i];
		lo = 0x80;
		hi = 0xbf;
		if (b < 0x80) {
			out[o++] = b;
			i++;
			continue;
		}
		if (b >= 0xc2 && b <= 0xdf)
			need = 2;
		else if (b >= 0xe0 && b <= 0xef) {
			need = 3;
			lo = b == 0xe0 ? 0xa0 : lo;
			hi = b == 0xed ? 0x9f : hi;
		} else if (b >= 0xf0 && b <= 0xf4) {
			need = 4;
			lo = b == 0xf0 ? 0x90 : lo;
			hi = b == 0xf4 ? 0x8f : hi;
		} else
			need = 0;
		for (k = 1; k < need && i + k < len; k++)
			if (k == 1 ? s[i + k] < lo || s[i + k] > hi
			           : s[i + k] < 0x80 || s[i + k] > 0xbf)
				break;
		if (need != 0 && k == need) {
			memcpy(out + o, s + i, need);
			o += need;
			i += need;
		} else {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i += need == 0 ? 1 : k;
		}
	}
	return o;
}

/*
 * Long, mostly-ASCII inputs with a bad or multibyte byte at any offset,
 * so that the word-at-a-time ASCII runs stop at every alignment: the
 * result is the oracle's, byte for byte.
 */
static void
test_sanitize_runs(void **state)
{
	static const uint8_t odd[] = {0x80, 0xbf, 0xc2, 0xc3, 0xe0,
	                              0xe2, 0xed, 0xef, 0xf0, 0xf4,
	                              0xf5, 0xff, 0xa9, 0x98, 0x9f};
	uint8_t in[200], out[3 * sizeof(in)], ref[3 * sizeof(in)];
	uint32_t seed = 777;
	size_t i, n, r, len;
	int round;

	(void)state;
	for (round = 0; round < 50000; round++) {
		len = (seed = seed * 1103515245 + 12345) >> 16 & 0xff;
		len %= sizeof(in) + 1;
		for (i = 0; i < len; i++) {
			seed = seed * 1103515245 + 12345;
			in[i] = (seed >> 16 & 15) == 0
			            ? odd[(seed >> 20) % sizeof(odd)]
			            : (uint8_t)(0x20 + (seed >> 20) % 95);
		}
		n = utf8_sanitize(in, len, out);
		r = ref_sanitize(in, len, ref);
		assert_int_equal(n, r);
		assert_memory_equal(out, ref, n);
		assert_int_equal(utf8_valid(in, len),
		                 r == len && memcmp(ref, in, len) == 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_complete_prefix),
	    cmocka_unit_test(test_sanitize),
	    cmocka_unit_test(test_sanitize_random),
	    cmocka_unit_test(test_sanitize_runs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
