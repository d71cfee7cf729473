/*
 * Junos "$9$" secret decoding and encoding (see junos9.h for the scheme).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/err.h"
#include "junos9.h"

#define J9_PREFIX     "$9$"
#define J9_PREFIX_LEN 3

/*
 * The alphabet is the concatenation of four families.  Which family the salt
 * comes from decides how many filler characters follow it.
 */
static const char j9_alpha[] = "QzF3n6/9CAtpu0O"
                               "B1IREhcSyrleKvMW8LXx"
                               "7N-dVbwsY2g4oaJZGUDj"
                               "iHkq.mPf5T";
#define J9_NALPHA ((int)sizeof(j9_alpha) - 1)

/* Ends of the families within j9_alpha, and their filler counts. */
static const struct {
	int fa_end;
	int fa_fill;
} j9_family[] = {{15, 3}, {35, 2}, {55, 1}, {65, 0}};

/*
 * Weights for the gaps of each plaintext byte, by byte position modulo 7.
 * A byte b is written as gaps g[0..n) with b = sum(g[j] * w[j]), where each
 * g[j] except the last is below w[j + 1] / w[j].
 */
#define J9_NWEIGHTS 7
#define J9_MAXGAPS  4
static const struct {
	int we_n;
	unsigned we_w[J9_MAXGAPS];
} j9_weights[J9_NWEIGHTS] = {
    {3, {1, 4, 32}}, {3, {1, 16, 32}},     {3, {1, 8, 32}},  {2, {1, 64}},
    {2, {1, 32}},    {4, {1, 4, 16, 128}}, {3, {1, 32, 64}},
};

/* Position of c in the alphabet, or -1. */
static int
alpha_index(char c)
{
	const char *p;

	if (c == '\0')
		return -1;
	p = memchr(j9_alpha, c, J9_NALPHA);
	return p == NULL ? -1 : (int)(p - j9_alpha);
}

static int
filler_count(int salt)
{
	size_t i;

	for (i = 0; i < sizeof(j9_family) / sizeof(j9_family[0]); i++)
		if (salt < j9_family[i].fa_end)
			return j9_family[i].fa_fill;
	return 0;
}

int
junos9_is_encoded(const char *s)
{
	return s != NULL && strncmp(s, J9_PREFIX, J9_PREFIX_LEN) == 0;
}

/*
 * Decodes the gaps of one byte starting at s, which holds at least
 * j9_weights[k].we_n alphabet characters.  *prev is the index of the
 * character before s and is advanced.
 */
static int
decode_byte(const char *s, int k, int *prev, unsigned char *out)
{
	const unsigned *w = j9_weights[k].we_w;
	int n = j9_weights[k].we_n, j, c, gap;
	unsigned val = 0;

	for (j = 0; j < n; j++) {
		c = alpha_index(s[j]);
		gap = (c - *prev + J9_NALPHA) % J9_NALPHA - 1;
		*prev = c;
		/* An encoder steps at least one place and writes canonical
		 * digits, so anything else is corruption. */
		if (gap < 0)
			return JUNOS9_EINVALID;
		if (j + 1 < n && (unsigned)gap * w[j] >= w[j + 1])
			return JUNOS9_EINVALID;
		val += (unsigned)gap * w[j];
	}
	if (val > 255)
		return JUNOS9_EINVALID;
	if (val == 0)
		return JUNOS9_ENUL;
	*out = (unsigned char)val;
	return 0;
}

int
junos9_decode(const char *in, char **out, size_t *outlen)
{
	const char *s;
	char *plain;
	size_t n, pos, k, cap;
	int prev, fill, rc;

	if (!junos9_is_encoded(in))
		return JUNOS9_ENOPREFIX;
	s = in + J9_PREFIX_LEN;
	n = strlen(s);
	for (pos = 0; pos < n; pos++)
		if (alpha_index(s[pos]) < 0)
			return JUNOS9_EALPHABET;
	if (n < 1)
		return JUNOS9_ESHORT;
	prev = alpha_index(s[0]);
	fill = filler_count(prev);
	if (n < 1 + (size_t)fill)
		return JUNOS9_ESHORT;
	pos = 1 + (size_t)fill;

	/* Every byte takes at least two characters. */
	cap = (n - pos) / 2;
	if (cap > JUNOS9_MAX_PLAIN)
		cap = JUNOS9_MAX_PLAIN;
	if ((plain = malloc(cap + 1)) == NULL)
		return -ENOMEM;
	for (k = 0; pos < n; k++) {
		int wk = (int)(k % J9_NWEIGHTS);

		rc = JUNOS9_ETRUNCATED;
		if (n - pos < (size_t)j9_weights[wk].we_n)
			goto fail;
		rc = -E2BIG;
		if (k >= JUNOS9_MAX_PLAIN)
			goto fail;
		rc =
		    decode_byte(s + pos, wk, &prev, (unsigned char *)plain + k);
		if (rc != 0)
			goto fail;
		pos += (size_t)j9_weights[wk].we_n;
	}
	plain[k] = '\0';
	*out = plain;
	if (outlen != NULL)
		*outlen = k;
	return 0;

fail:
	OPENSSL_cleanse(plain, cap + 1);
	free(plain);
	return rc;
}

static uint32_t
openssl_rand(void *arg, uint32_t bound)
{
	uint32_t v;
	int *failed = arg;

	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1) {
		*failed = 1;
		return 0;
	}
	/* The bias of a 32-bit value modulo 65 does not matter for salt. */
	return v % bound;
}

int
junos9_encode(const char *plain, size_t len, junos9_rand_fn rnd, void *arg,
              char **out)
{
	char *s;
	size_t need, k, o;
	unsigned gaps[J9_MAXGAPS];
	int prev, fill, i, j, failed = 0;

	if (len > JUNOS9_MAX_PLAIN)
		return -E2BIG;
	if (memchr(plain, '\0', len) != NULL)
		return -EINVAL;
	if (rnd == NULL) {
		rnd = openssl_rand;
		arg = &failed;
	}
	need = J9_PREFIX_LEN + 1 + 3 + 1;
	for (k = 0; k < len; k++)
		need += (size_t)j9_weights[k % J9_NWEIGHTS].we_n;
	if ((s = malloc(need)) == NULL)
		return -ENOMEM;
	memcpy(s, J9_PREFIX, J9_PREFIX_LEN);
	o = J9_PREFIX_LEN;
	prev = (int)(rnd(arg, J9_NALPHA) % J9_NALPHA);
	s[o++] = j9_alpha[prev];
	fill = filler_count(prev);
	for (i = 0; i < fill; i++)
		s[o++] = j9_alpha[rnd(arg, J9_NALPHA) % J9_NALPHA];
	if (failed) {
		free(s);
		return -EIO;
	}
	for (k = 0; k < len; k++) {
		int wk = (int)(k % J9_NWEIGHTS), n = j9_weights[wk].we_n;
		unsigned b = (unsigned char)plain[k];

		/* Split b into digits, the heaviest weight first. */
		for (j = n - 1; j >= 0; j--) {
			gaps[j] = b / j9_weights[wk].we_w[j];
			b %= j9_weights[wk].we_w[j];
		}
		for (j = 0; j < n; j++) {
			prev = (prev + (int)gaps[j] + 1) % J9_NALPHA;
			s[o++] = j9_alpha[prev];
		}
	}
	s[o] = '\0';
	OPENSSL_cleanse(gaps, sizeof(gaps));
	*out = s;
	return 0;
}

void
junos9_free(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

const char *
junos9_strerror(int code)
{
	switch (code) {
	case JUNOS9_ENOPREFIX:
		return "not a $9$ secret";
	case JUNOS9_ESHORT:
		return "$9$ secret too short";
	case JUNOS9_EALPHABET:
		return "character outside the $9$ alphabet";
	case JUNOS9_ETRUNCATED:
		return "$9$ secret truncated";
	case JUNOS9_EINVALID:
		return "$9$ secret corrupted (no encoder writes it)";
	case JUNOS9_ENUL:
		return "$9$ secret decodes to a NUL byte";
	case -E2BIG:
		return "$9$ secret too long";
	default:
		return ncg_strerror(code);
	}
}
