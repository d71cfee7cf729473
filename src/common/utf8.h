/*
 * UTF-8 helpers for proto3 string fields, which must hold valid UTF-8
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
 */
#ifndef NCGRPC_UTF8_H
#define NCGRPC_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Nonzero if s[0..len) is entirely valid UTF-8. */
int utf8_valid(const uint8_t *s, size_t len);

/*
 * Returns the length of the longest prefix of s[0..len) that does not end
 * inside a multi-byte sequence which later bytes could still complete.  At
 * most 3 trailing bytes are held back, and only when they form a valid,
 * incomplete start of a sequence; invalid bytes are never held back.  Used
 * so that output is never split in the middle of a character.
 */
size_t utf8_complete_prefix(const uint8_t *s, size_t len);

/*
 * Writes s[0..len) to out with each invalid sequence replaced by U+FFFD
 * (EF BF BD), following the Unicode "maximal subpart" practice.  out must
 * have room for 3 * len bytes.  Returns the number of bytes written.
 */
size_t utf8_sanitize(const uint8_t *s, size_t len, uint8_t *out);

#endif
