/*
 * Fuzzes Junos "$9$" decoding (junos9.c), and checks that whatever decodes
 * encodes back to a string that decodes to the same plaintext, and that
 * any plaintext the encoder takes survives the round trip.
 *
 * Input: the text to decode (a NUL ends it early, as in a C string).
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "agent/junos9.h"

struct fz_rand {
	const uint8_t *r_data;
	size_t r_len;
	size_t r_pos;
};

/* Salt and filler picked from the input, so runs are reproducible. */
static uint32_t
fz_rnd(void *arg, uint32_t bound)
{
	struct fz_rand *r = arg;
	uint32_t v;

	if (r->r_len == 0)
		return 0;
	v = r->r_data[r->r_pos++ % r->r_len];
	return v % bound;
}

static void
roundtrip(const char *plain, size_t len, struct fz_rand *r)
{
	char *enc, *back;
	size_t backlen;
	int rc;

	rc = junos9_encode(plain, len, fz_rnd, r, &enc);
	if (len > JUNOS9_MAX_PLAIN) {
		FUZZ_CHECK(rc == -E2BIG);
		return;
	}
	if (memchr(plain, '\0', len) != NULL) {
		FUZZ_CHECK(rc == -EINVAL);
		return;
	}
	FUZZ_CHECK(rc == 0);
	FUZZ_CHECK(junos9_is_encoded(enc));
	FUZZ_CHECK(junos9_decode(enc, &back, &backlen) == 0);
	FUZZ_CHECK(backlen == len);
	FUZZ_CHECK(len == 0 || memcmp(back, plain, len) == 0);
	junos9_free(back);
	free(enc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_rand r = {data, size, 0};
	char *in, *plain;
	size_t len;
	int rc;

	if ((in = malloc(size + 1)) == NULL)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	rc = junos9_decode(in, &plain, &len);
	FUZZ_CHECK(junos9_strerror(rc) != NULL);
	if (rc == 0) {
		FUZZ_CHECK(junos9_is_encoded(in));
		FUZZ_CHECK(strlen(plain) == len);
		FUZZ_CHECK(len <= JUNOS9_MAX_PLAIN);
		roundtrip(plain, len, &r);
		junos9_free(plain);
	}
	roundtrip((const char *)data, size, &r);
	free(in);
	return 0;
}
