/*
 * Base64 (RFC 4648) without allocation, for gRPC "-bin" metadata (standard
 * alphabet, padded out, padding optional in) and for the device registry
 * (unpadded, strict; base64url for generated secrets).
 */
#ifndef NCGRPC_BASE64_H
#define NCGRPC_BASE64_H

#include <stddef.h>
#include <stdint.h>

#define BASE64_PAD 0x1 /* encode: append '=' padding */
#define BASE64_URL 0x2 /* encode: the "-_" alphabet of base64url */
#define BASE64_STRICT                                                          \
	0x4 /* decode: unused bits must be zero, so each                       \
	     * value has exactly one accepted spelling */

/* Bytes base64_encode() needs for len bytes, NUL included. */
#define BASE64_ENCODED_SIZE(len) (((len) + 2) / 3 * 4 + 1)

/*
 * Encodes in[0..len) into out (BASE64_ENCODED_SIZE(len) bytes), NUL-
 * terminated.  Returns the length written, NUL excluded.
 */
size_t base64_encode(const uint8_t *in, size_t len, char *out, int flags);

/*
 * Decodes standard base64, padded or not ('=' only as one or two final
 * characters of a whole quantum), into out (outmax bytes).  Returns 0 and
 * sets *outlen, -EINVAL for a bad character, length or (with
 * BASE64_STRICT) nonzero unused bits, or -ENOBUFS when out is too small.
 */
int base64_decode(const char *in, size_t len, uint8_t *out, size_t outmax,
                  size_t *outlen, int flags);

#endif
