/*
 * gRPC-over-HTTP/2 header values: status codes, grpc-message percent
 * encoding, grpc-timeout, metadata keys and values, and base64 for "-bin"
 * metadata.  Pure functions, no I/O.
 */
#ifndef NCGRPC_GRPC_META_H
#define NCGRPC_GRPC_META_H

#include <stddef.h>
#include <stdint.h>

enum grpc_status {
	GRPC_STATUS_OK = 0,
	GRPC_STATUS_CANCELLED = 1,
	GRPC_STATUS_UNKNOWN = 2,
	GRPC_STATUS_INVALID_ARGUMENT = 3,
	GRPC_STATUS_DEADLINE_EXCEEDED = 4,
	GRPC_STATUS_NOT_FOUND = 5,
	GRPC_STATUS_ALREADY_EXISTS = 6,
	GRPC_STATUS_PERMISSION_DENIED = 7,
	GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
	GRPC_STATUS_FAILED_PRECONDITION = 9,
	GRPC_STATUS_ABORTED = 10,
	GRPC_STATUS_OUT_OF_RANGE = 11,
	GRPC_STATUS_UNIMPLEMENTED = 12,
	GRPC_STATUS_INTERNAL = 13,
	GRPC_STATUS_UNAVAILABLE = 14,
	GRPC_STATUS_DATA_LOSS = 15,
	GRPC_STATUS_UNAUTHENTICATED = 16,
};

/* "OK", "CANCELLED", ... "UNAUTHENTICATED"; "UNKNOWN" for other values. */
const char *grpc_status_name(int code);

/*
 * Parses a grpc-status header value: 1 to 3 ASCII digits.  Returns 0 and
 * sets *code, or -EINVAL.
 */
int grpc_status_parse(const char *v, size_t len, int *code);

/*
 * Percent-encodes a grpc-message value: bytes outside 0x20..0x7e, and '%',
 * become %XX (uppercase hex).  *out is malloc'd and NUL-terminated, and set
 * only on success.  Returns 0 or -ENOMEM.
 */
int grpc_percent_encode(const char *in, size_t len, char **out);

/*
 * Decodes a grpc-message value.  As the gRPC spec asks, a malformed escape
 * ("%", "%4", "%zz") is kept as literal text rather than rejected.  *out is
 * malloc'd and NUL-terminated (*outlen excludes the NUL; the decoded text
 * may contain NUL bytes).  Returns 0 or -ENOMEM.
 */
int grpc_percent_decode(const char *in, size_t len, char **out, size_t *outlen);

/*
 * Parses a grpc-timeout value: 1 to 8 ASCII digits followed by one unit of
 * H, M, S, m (milli), u (micro) or n (nano).  Returns 0 and sets *ms
 * (rounded up to a whole millisecond, so a nonzero timeout never becomes 0),
 * or -EINVAL.
 */
int grpc_timeout_parse(const char *v, size_t len, uint64_t *ms);

/*
 * Formats a timeout of ms milliseconds as a grpc-timeout value in out (at
 * least 16 bytes), choosing the finest unit that fits in 8 digits.
 */
void grpc_timeout_format(uint64_t ms, char out[16]);

/*
 * Nonzero if key is a legal custom metadata key: 1 or more of [0-9a-z_.-],
 * not starting with ':'.
 */
int grpc_meta_key_valid(const char *key, size_t len);

/*
 * Nonzero if key is reserved for the transport and must not be set by an
 * application or echoed back: every "grpc-*" key, pseudo-headers (":*"),
 * and content-type, te, user-agent, host, connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade.
 */
int grpc_meta_key_reserved(const char *key, size_t len);

/* Nonzero if key ends in "-bin" (its value is base64 on the wire). */
int grpc_meta_key_is_bin(const char *key, size_t len);

/* Nonzero if value is a legal ASCII value: bytes 0x20..0x7e only. */
int grpc_meta_value_valid(const char *value, size_t len);

/*
 * Standard base64 with padding.  *out is malloc'd and NUL-terminated.
 * Returns 0 or -ENOMEM.
 */
int grpc_base64_encode(const uint8_t *in, size_t len, char **out);

/*
 * Decodes standard base64, with or without padding (gRPC peers send it
 * unpadded).  Returns 0, -EINVAL for bad characters or length, or -ENOMEM.
 * *out is malloc'd (and NUL-terminated for convenience).
 */
int grpc_base64_decode(const char *in, size_t len, uint8_t **out,
                       size_t *outlen);

#endif
