#include <errno.h>

#include "base64.h"

static const char base64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char base64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t
base64_encode(const uint8_t *in, size_t len, char *out, int flags)
{
	const char *a = (flags & BASE64_URL) ? base64_url : base64_std;
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 3 <= len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		    in[i + 2];
		out[o++] = a[v >> 18 & 0x3f];
		out[o++] = a[v >> 12 & 0x3f];
		out[o++] = a[v >> 6 & 0x3f];
		out[o++] = a[v & 0x3f];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = a[v >> 18 & 0x3f];
		out[o++] = a[v >> 12 & 0x3f];
		if (flags & BASE64_PAD) {
			out[o++] = '=';
			out[o++] = '=';
		}
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = a[v >> 18 & 0x3f];
		out[o++] = a[v >> 12 & 0x3f];
		out[o++] = a[v >> 6 & 0x3f];
		if (flags & BASE64_PAD)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static int
value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
base64_decode(const char *in, size_t len, uint8_t *out, size_t outmax,
              size_t *outlen, int flags)
{
	size_t i, o = 0;
	uint32_t v = 0;
	int c, bits = 0;

	/*
	 * Padding is only meaningful on a whole final quantum; anywhere
	 * else '=' falls through to the alphabet check and is rejected.
	 */
	if (len % 4 == 0 && len > 0 && in[len - 1] == '=') {
		len--;
		if (in[len - 1] == '=')
			len--;
	}
	/* One leftover character carries only 6 bits: not even a byte. */
	if (len % 4 == 1)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		if ((c = value(in[i])) < 0)
			return -EINVAL;
		v = v << 6 | (uint32_t)c;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == outmax)
				return -ENOBUFS;
			out[o++] = (uint8_t)(v >> bits);
			v &= (1u << bits) - 1;
		}
	}
	/*
	 * Nonzero leftover bits ("Zh==") are tolerated unless strict: a gRPC
	 * peer that sends them still meant the bytes we decoded.
	 */
	if ((flags & BASE64_STRICT) && v != 0)
		return -EINVAL;
	*outlen = o;
	return 0;
}
