#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "grpc_meta.h"

/* The largest value grpc-timeout can carry in any unit: 8 digits. */
#define TIMEOUT_MAX_VALUE 99999999u

static const char hexdigits[] = "0123456789ABCDEF";

const char *
grpc_status_name(int code)
{
	static const char *const names[] = {
	    [GRPC_STATUS_OK] = "OK",
	    [GRPC_STATUS_CANCELLED] = "CANCELLED",
	    [GRPC_STATUS_UNKNOWN] = "UNKNOWN",
	    [GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
	    [GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
	    [GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
	    [GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
	    [GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
	    [GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
	    [GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
	    [GRPC_STATUS_ABORTED] = "ABORTED",
	    [GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
	    [GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
	    [GRPC_STATUS_INTERNAL] = "INTERNAL",
	    [GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
	    [GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
	    [GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
	};

	if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
		return "UNKNOWN";
	return names[code];
}

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

int
grpc_status_parse(const char *v, size_t len, int *code)
{
	size_t i;
	int c = 0;

	if (len < 1 || len > 3)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		if (!is_digit(v[i]))
			return -EINVAL;
		c = c * 10 + (v[i] - '0');
	}
	*code = c;
	return 0;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
grpc_percent_encode(const char *in, size_t len, char **out)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i, o = 0;
	char *p;

	if (len > (SIZE_MAX - 1) / 3)
		return -ENOMEM;
	if ((p = malloc(len * 3 + 1)) == NULL)
		return -ENOMEM;
	for (i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '%') {
			p[o++] = '%';
			p[o++] = hexdigits[s[i] >> 4];
			p[o++] = hexdigits[s[i] & 0xf];
		} else
			p[o++] = (char)s[i];
	}
	p[o] = '\0';
	*out = p;
	return 0;
}

int
grpc_percent_decode(const char *in, size_t len, char **out, size_t *outlen)
{
	size_t i, o = 0;
	int hi, lo;
	char *p;

	if (len == SIZE_MAX)
		return -ENOMEM;
	if ((p = malloc(len + 1)) == NULL)
		return -ENOMEM;
	for (i = 0; i < len; i++) {
		/*
		 * A '%' that does not start a complete escape is kept as
		 * text; the spec prefers a garbled message to a lost one.
		 */
		if (in[i] == '%' && len - i >= 3 &&
		    (hi = hexval(in[i + 1])) >= 0 &&
		    (lo = hexval(in[i + 2])) >= 0) {
			p[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			p[o++] = in[i];
	}
	p[o] = '\0';
	*out = p;
	*outlen = o;
	return 0;
}

int
grpc_timeout_parse(const char *v, size_t len, uint64_t *ms)
{
	uint64_t n = 0;
	size_t i;

	if (len < 2 || len > 9)
		return -EINVAL;
	for (i = 0; i < len - 1; i++) {
		if (!is_digit(v[i]))
			return -EINVAL;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	/* n < 10^8, so even hours in milliseconds stay far below 2^64. */
	switch (v[len - 1]) {
	case 'H':
		n *= 3600000;
		break;
	case 'M':
		n *= 60000;
		break;
	case 'S':
		n *= 1000;
		break;
	case 'm':
		break;
	/* Round up: a nonzero deadline must not become "already expired". */
	case 'u':
		n = n / 1000 + (n % 1000 != 0);
		break;
	case 'n':
		n = n / 1000000 + (n % 1000000 != 0);
		break;
	default:
		return -EINVAL;
	}
	*ms = n;
	return 0;
}

void
grpc_timeout_format(uint64_t ms, char out[16])
{
	/*
	 * Milliseconds is the finest unit worth sending: our input has no
	 * finer precision.  Coarser units round up, so the peer never sees
	 * a shorter deadline than ours.
	 */
	static const struct {
		uint64_t div;
		char unit;
	} units[] = {
	    {1, 'm'},
	    {1000, 'S'},
	    {60000, 'M'},
	    {3600000, 'H'},
	};
	uint64_t v = TIMEOUT_MAX_VALUE;
	char unit = 'H';
	size_t i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		uint64_t q = ms / units[i].div + (ms % units[i].div != 0);

		if (q <= TIMEOUT_MAX_VALUE) {
			v = q;
			unit = units[i].unit;
			break;
		}
	}
	/* Past 99999999H (over 11,000 years) the value saturates. */
	(void)snprintf(out, 16, "%" PRIu64 "%c", v, unit);
}

int
grpc_meta_key_valid(const char *key, size_t len)
{
	size_t i;
	char c;

	if (len == 0)
		return 0;
	for (i = 0; i < len; i++) {
		c = key[i];
		if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '_' ||
		      c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

int
grpc_meta_key_reserved(const char *key, size_t len)
{
	static const char *const names[] = {
	    "content-type",     "te",
	    "user-agent",       "host",
	    "connection",       "keep-alive",
	    "proxy-connection", "transfer-encoding",
	    "upgrade",
	};
	size_t i;

	/*
	 * Compare without case: such a key is invalid anyway, but a
	 * reserved header must never slip through by changing case.
	 */
	if (len >= 1 && key[0] == ':')
		return 1;
	if (len >= 5 && strncasecmp(key, "grpc-", 5) == 0)
		return 1;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len &&
		    strncasecmp(key, names[i], len) == 0)
			return 1;
	return 0;
}

int
grpc_meta_key_is_bin(const char *key, size_t len)
{
	return len >= 4 && memcmp(key + len - 4, "-bin", 4) == 0;
}

int
grpc_meta_value_valid(const char *value, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)value[i] < 0x20 ||
		    (unsigned char)value[i] > 0x7e)
			return 0;
	return 1;
}

int
grpc_base64_encode(const uint8_t *in, size_t len, char **out)
{
	char *p;

	if (len / 3 >= (SIZE_MAX - 1) / 4 - 1)
		return -ENOMEM;
	if ((p = malloc(BASE64_ENCODED_SIZE(len))) == NULL)
		return -ENOMEM;
	base64_encode(in, len, p, BASE64_PAD);
	*out = p;
	return 0;
}

int
grpc_base64_decode(const char *in, size_t len, uint8_t **out, size_t *outlen)
{
	size_t n = len / 4 * 3 + 3, got;
	uint8_t *p;
	int rc;

	if ((p = malloc(n + 1)) == NULL)
		return -ENOMEM;
	if ((rc = base64_decode(in, len, p, n, &got, 0)) != 0) {
		free(p);
		return rc;
	}
	p[got] = '\0';
	*out = p;
	*outlen = got;
	return 0;
}
