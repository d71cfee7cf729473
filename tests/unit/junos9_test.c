/*
 * Junos $9$ secrets: published vectors, round trips with deterministic and
 * real randomness, and rejection of malformed input.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/junos9.c"

/* A small deterministic generator for salt and filler. */
static uint32_t
lcg_rand(void *arg, uint32_t bound)
{
	uint32_t *st = arg;

	*st = *st * 1103515245u + 12345u;
	return (*st >> 16) % bound;
}

/* Hands out the alphabet positions of the characters of a script. */
static uint32_t
script_rand(void *arg, uint32_t bound)
{
	const char **s = arg;
	int i = alpha_index(**s);

	assert_true(i >= 0 && (uint32_t)i < bound);
	(*s)++;
	return (uint32_t)i;
}

/* Vectors published with several independent decoders. */
static const struct {
	const char *enc;
	const char *plain;
} vectors[] = {
    {"$9$LbHX-wg4Z", "lc"},
    {"$9$41JDk5T3CpBFnCuB1rl8X7-VYq.5", "netscreen"},
    {"$9$FNkC3/t1IcevLuOWx", "hello"},
    {"$9$o1aGiPfz/Cuk.tO", "hello"},
};

static void
test_known_vectors(void **state)
{
	size_t i, len;
	char *out;

	(void)state;
	for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		assert_true(junos9_is_encoded(vectors[i].enc));
		assert_int_equal(junos9_decode(vectors[i].enc, &out, &len), 0);
		assert_string_equal(out, vectors[i].plain);
		assert_int_equal(len, strlen(vectors[i].plain));
		junos9_free(out);
	}
}

/*
 * Encoding with the salt and filler of a published vector reproduces it
 * exactly, so the encoder is checked independently of the decoder.
 */
static void
test_encode_reproduces_vectors(void **state)
{
	size_t i, nfill;
	const char *script;
	char *out;

	(void)state;
	for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		script = vectors[i].enc + 3;
		nfill = (size_t)filler_count(alpha_index(script[0]));
		assert_int_equal(junos9_encode(vectors[i].plain,
		                               strlen(vectors[i].plain),
		                               script_rand, &script, &out),
		                 0);
		assert_int_equal(script, vectors[i].enc + 3 + 1 + nfill);
		assert_string_equal(out, vectors[i].enc);
		free(out);
	}
}

static void
roundtrip(const char *plain, size_t len, junos9_rand_fn rnd, void *arg)
{
	char *enc = NULL, *dec = NULL;
	size_t declen;
	size_t i;

	assert_int_equal(junos9_encode(plain, len, rnd, arg, &enc), 0);
	assert_true(junos9_is_encoded(enc));
	for (i = 3; enc[i] != '\0'; i++)
		assert_true(alpha_index(enc[i]) >= 0);
	assert_int_equal(junos9_decode(enc, &dec, &declen), 0);
	assert_int_equal(declen, len);
	assert_memory_equal(dec, plain, len);
	assert_int_equal(dec[len], '\0');
	junos9_free(dec);
	free(enc);
}

static void
test_roundtrip(void **state)
{
	static const char *const words[] = {
	    "a",
	    "lc",
	    "hello",
	    "netscreen",
	    "s3cr3t-Key_2024!",
	    "with space and \"quotes\" and \\backslash",
	    "ünïcödé パスワード",
	    "$9$looks-encoded-but-is-not",
	    "~`!@#$%^&*()_+-={}[]|:;'<>,.?/",
	};
	char buf[300];
	uint32_t seed;
	size_t i, n;

	(void)state;
	for (seed = 1; seed < 200; seed++)
		for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
			roundtrip(words[i], strlen(words[i]), lcg_rand, &seed);
	/* Every byte value in every one of the 7 weight positions. */
	for (n = 1; n <= 7; n++)
		for (i = 1; i < 256; i++) {
			memset(buf, 'x', sizeof(buf));
			buf[n - 1] = (char)i;
			seed = (uint32_t)(i * 7 + n);
			roundtrip(buf, n, lcg_rand, &seed);
		}
	/* Every length up to 256, with random content. */
	seed = 42;
	for (n = 0; n <= 256; n++) {
		for (i = 0; i < n; i++)
			buf[i] = (char)(1 + lcg_rand(&seed, 255));
		roundtrip(buf, n, lcg_rand, &seed);
	}
	/* The OpenSSL generator. */
	for (i = 0; i < 100; i++)
		roundtrip("hello world", 11, NULL, NULL);
}

static void
test_deterministic(void **state)
{
	uint32_t s1 = 7, s2 = 7;
	char *a, *b;

	(void)state;
	assert_int_equal(junos9_encode("secret", 6, lcg_rand, &s1, &a), 0);
	assert_int_equal(junos9_encode("secret", 6, lcg_rand, &s2, &b), 0);
	assert_string_equal(a, b);
	free(a);
	free(b);
}

static void
test_limits(void **state)
{
	char *big, *enc = NULL, *dec = NULL, *out = (char *)&out;
	uint32_t seed = 3;
	size_t len;

	(void)state;
	big = malloc(JUNOS9_MAX_PLAIN + 2);
	assert_non_null(big);
	memset(big, 'z', JUNOS9_MAX_PLAIN + 1);
	big[JUNOS9_MAX_PLAIN + 1] = '\0';
	assert_int_equal(
	    junos9_encode(big, JUNOS9_MAX_PLAIN + 1, lcg_rand, &seed, &out),
	    -E2BIG);
	assert_ptr_equal(out, (char *)&out);
	assert_int_equal(junos9_encode("a\0b", 3, lcg_rand, &seed, &out),
	                 -EINVAL);
	assert_ptr_equal(out, (char *)&out);

	/* The longest plaintext round-trips. */
	assert_int_equal(
	    junos9_encode(big, JUNOS9_MAX_PLAIN, lcg_rand, &seed, &enc), 0);
	assert_int_equal(junos9_decode(enc, &dec, &len), 0);
	assert_int_equal(len, JUNOS9_MAX_PLAIN);
	junos9_free(dec);
	free(enc);

	free(big);
}

static void
test_decode_too_long(void **state)
{
	/* Made by hand, since encode refuses it: an encoding of
	 * JUNOS9_MAX_PLAIN + 1 bytes. */
	char *plain, *enc, *out = (char *)&out;
	size_t n = JUNOS9_MAX_PLAIN + 1, i, o;
	int prev, j, k;
	unsigned gaps[J9_MAXGAPS];

	(void)state;
	plain = malloc(n);
	enc = malloc(8 + 4 * n);
	assert_non_null(plain);
	assert_non_null(enc);
	memset(plain, 'q', n);
	memcpy(enc, "$9$i", 4); /* salt from the last family: no filler */
	o = 4;
	prev = alpha_index('i');
	for (i = 0; i < n; i++) {
		unsigned b = (unsigned char)plain[i];

		k = (int)(i % J9_NWEIGHTS);
		for (j = j9_weights[k].we_n - 1; j >= 0; j--) {
			gaps[j] = b / j9_weights[k].we_w[j];
			b %= j9_weights[k].we_w[j];
		}
		for (j = 0; j < j9_weights[k].we_n; j++) {
			prev = (prev + (int)gaps[j] + 1) % J9_NALPHA;
			enc[o++] = j9_alpha[prev];
		}
	}
	enc[o] = '\0';
	assert_int_equal(junos9_decode(enc, &out, NULL), -E2BIG);
	assert_ptr_equal(out, (char *)&out);
	free(plain);
	free(enc);
}

static void
expect_decode_error(const char *in, int code)
{
	char *out = (char *)&out;
	size_t len = 12345;

	assert_int_equal(junos9_decode(in, &out, &len), code);
	/* Out-params are untouched on failure. */
	assert_ptr_equal(out, (char *)&out);
	assert_int_equal(len, 12345);
}

static void
test_malformed(void **state)
{
	char *out;

	(void)state;
	expect_decode_error("", JUNOS9_ENOPREFIX);
	expect_decode_error("hello", JUNOS9_ENOPREFIX);
	expect_decode_error("$8$LbHX-wg4Z", JUNOS9_ENOPREFIX);
	expect_decode_error("$9", JUNOS9_ENOPREFIX);
	expect_decode_error("$9$", JUNOS9_ESHORT);
	expect_decode_error("$9$Q", JUNOS9_ESHORT); /* wants 3 filler */
	expect_decode_error("$9$QzF", JUNOS9_ESHORT);
	expect_decode_error("$9$B1", JUNOS9_ESHORT); /* wants 2 filler */
	expect_decode_error("$9$7", JUNOS9_ESHORT);  /* wants 1 filler */
	expect_decode_error("$9$LbHX-wg4", JUNOS9_ETRUNCATED);
	expect_decode_error("$9$LbHX-", JUNOS9_ETRUNCATED);
	expect_decode_error("$9$LbHX", JUNOS9_ETRUNCATED);
	expect_decode_error("$9$LbHX-wg4Z!", JUNOS9_EALPHABET);
	expect_decode_error("$9$LbH X-wg4Z", JUNOS9_EALPHABET);
	expect_decode_error("$9$LbHX-wg4Z\n", JUNOS9_EALPHABET);
	expect_decode_error("$9$$bHX-wg4Z", JUNOS9_EALPHABET);
	expect_decode_error("$9$LbHX-wg4\xc3\xa9", JUNOS9_EALPHABET);
	/* A character never follows itself. */
	expect_decode_error("$9$iiHk", JUNOS9_EINVALID);
	/* Gaps 3, 7, 8 under weights 1, 4, 32 make 287, over a byte. */
	expect_decode_error("$9$i.Fp", JUNOS9_EINVALID);
	/* Gaps 4, 0, 0 make 4, which an encoder writes as 0, 1, 0. */
	expect_decode_error("$9$imPf", JUNOS9_EINVALID);
	/* Gaps 0, 0, 0 make a NUL byte. */
	expect_decode_error("$9$iHkq", JUNOS9_ENUL);

	/* No plaintext at all is well formed; callers reject it. */
	assert_int_equal(junos9_decode("$9$i", &out, NULL), 0);
	assert_string_equal(out, "");
	junos9_free(out);
	assert_false(junos9_is_encoded(NULL));
	assert_false(junos9_is_encoded("$9"));
}

/*
 * Every prefix of an encoding either fails cleanly or decodes to a prefix
 * of the plaintext; random alphabet strings never crash.
 */
static void
test_prefixes_and_noise(void **state)
{
	const char *plain = "The quick brown fox jumps over the lazy dog";
	char *enc = NULL, *dec = NULL, buf[64];
	uint32_t seed = 11;
	size_t i, n, len;
	int rc;

	(void)state;
	assert_int_equal(
	    junos9_encode(plain, strlen(plain), lcg_rand, &seed, &enc), 0);
	n = strlen(enc);
	for (i = 0; i <= n; i++) {
		char *pre = strndup(enc, i);

		assert_non_null(pre);
		rc = junos9_decode(pre, &dec, &len);
		if (rc == 0) {
			assert_true(len <= strlen(plain));
			assert_memory_equal(dec, plain, len);
			junos9_free(dec);
		} else
			assert_true(rc == JUNOS9_ENOPREFIX ||
			            rc == JUNOS9_ESHORT ||
			            rc == JUNOS9_ETRUNCATED);
		free(pre);
	}
	free(enc);

	for (i = 0; i < 20000; i++) {
		size_t k, m = 3 + lcg_rand(&seed, 40);

		memcpy(buf, "$9$", 3);
		for (k = 3; k < m; k++)
			buf[k] = j9_alpha[lcg_rand(&seed, J9_NALPHA)];
		buf[m] = '\0';
		rc = junos9_decode(buf, &dec, &len);
		if (rc == 0) {
			assert_int_equal(strlen(dec), len);
			junos9_free(dec);
		} else
			assert_true(rc < 0);
	}
}

static void
test_strerror(void **state)
{
	int c;

	(void)state;
	for (c = JUNOS9_EBASE + 1; c < JUNOS9_ELAST; c++) {
		assert_non_null(junos9_strerror(c));
		assert_string_not_equal(junos9_strerror(c), "unknown error");
	}
	assert_string_equal(junos9_strerror(-ENOMEM), strerror(ENOMEM));
	assert_non_null(
	    strstr(junos9_strerror(JUNOS9_ETRUNCATED), "truncated"));
	assert_non_null(strstr(junos9_strerror(JUNOS9_EALPHABET), "alphabet"));
	assert_non_null(strstr(junos9_strerror(JUNOS9_ESHORT), "short"));
	junos9_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_vectors),
	    cmocka_unit_test(test_encode_reproduces_vectors),
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_deterministic),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_decode_too_long),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_prefixes_and_noise),
	    cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
