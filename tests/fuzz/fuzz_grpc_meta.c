/*
 * Fuzzes the decoding of gRPC header values (grpc_meta.c, base64.c): every
 * input goes through each decoder, and what decodes must survive a round
 * trip through the matching encoder.
 */
#include <string.h>

#include "base64.h"
#include "fuzz.h"
#include "grpc_meta.h"

static void
check_percent(const uint8_t *data, size_t size)
{
	char *dec, *enc, *again;
	size_t declen, againlen, i;

	if (grpc_percent_decode((const char *)data, size, &dec, &declen) == 0) {
		FUZZ_CHECK(declen <= size);
		FUZZ_CHECK(dec[declen] == '\0');
		free(dec);
	}
	/* Whatever we send decodes back to exactly what we meant. */
	if (grpc_percent_encode((const char *)data, size, &enc) != 0)
		return;
	for (i = 0; enc[i] != '\0'; i++)
		FUZZ_CHECK(enc[i] >= 0x20 && enc[i] <= 0x7e);
	FUZZ_CHECK(grpc_meta_value_valid(enc, i));
	if (grpc_percent_decode(enc, i, &again, &againlen) == 0) {
		FUZZ_CHECK(againlen == size);
		FUZZ_CHECK(size == 0 || memcmp(again, data, size) == 0);
		free(again);
	}
	free(enc);
}

static void
check_timeout(const uint8_t *data, size_t size)
{
	uint64_t ms, back;
	char out[16];

	if (grpc_timeout_parse((const char *)data, size, &ms) != 0)
		return;
	FUZZ_CHECK(size >= 2 && size <= 9);
	/* Formatting never shortens a deadline. */
	grpc_timeout_format(ms, out);
	FUZZ_CHECK(grpc_timeout_parse(out, strlen(out), &back) == 0);
	FUZZ_CHECK(back >= ms);
}

static void
check_base64(const uint8_t *data, size_t size)
{
	uint8_t *dec, *again;
	size_t declen, againlen, n;
	char *enc;
	uint8_t small[48];

	if (grpc_base64_decode((const char *)data, size, &dec, &declen) == 0) {
		FUZZ_CHECK(declen <= size / 4 * 3 + 2);
		if (grpc_base64_encode(dec, declen, &enc) == 0) {
			n = strlen(enc);
			FUZZ_CHECK(
			    grpc_base64_decode(enc, n, &again, &againlen) == 0);
			FUZZ_CHECK(againlen == declen);
			FUZZ_CHECK(declen == 0 ||
			           memcmp(again, dec, declen) == 0);
			free(again);
			free(enc);
		}
		free(dec);
	}
	/* The registry's strict decoder, into a short fixed buffer. */
	(void)base64_decode((const char *)data, size, small, sizeof(small), &n,
	                    BASE64_STRICT);
	/* Any bytes encode, in both alphabets, and decode back. */
	if (grpc_base64_encode(data, size, &enc) == 0) {
		FUZZ_CHECK(grpc_base64_decode(enc, strlen(enc), &again,
		                              &againlen) == 0);
		FUZZ_CHECK(againlen == size);
		FUZZ_CHECK(size == 0 || memcmp(again, data, size) == 0);
		free(again);
		free(enc);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	int code;

	check_percent(data, size);
	check_timeout(data, size);
	check_base64(data, size);
	if (grpc_status_parse(s, size, &code) == 0) {
		FUZZ_CHECK(code >= 0 && code <= 999);
		FUZZ_CHECK(grpc_status_name(code) != NULL);
	}
	if (grpc_meta_key_valid(s, size)) {
		(void)grpc_meta_key_reserved(s, size);
		(void)grpc_meta_key_is_bin(s, size);
	}
	(void)grpc_meta_value_valid(s, size);
	return 0;
}
