#include <errno.h>
#include <string.h>

#include "pbwire.h"

/* Reads a varint at *off; 0, or -EINVAL when truncated or over 64 bits. */
static int
varint(const uint8_t *p, size_t len, size_t *off, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift;

	for (shift = 0; shift < 64; shift += 7) {
		if (*off >= len)
			return -EINVAL;
		v |= (uint64_t)(p[*off] & 0x7f) << shift;
		if ((p[(*off)++] & 0x80) == 0) {
			*out = v;
			return 0;
		}
	}
	return -EINVAL;
}

int
pbwire_field_has_nul(const uint8_t *msg, size_t len, uint32_t field)
{
	size_t off = 0;
	uint64_t key, n;
	int found = 0;

	while (off < len) {
		if (varint(msg, len, &off, &key) != 0)
			return -EINVAL;
		switch (key & 7) {
		case 0: /* varint */
			if (varint(msg, len, &off, &n) != 0)
				return -EINVAL;
			break;
		case 1: /* 64-bit */
			if (len - off < 8)
				return -EINVAL;
			off += 8;
			break;
		case 2: /* length-delimited */
			if (varint(msg, len, &off, &n) != 0 || n > len - off)
				return -EINVAL;
			if ((key >> 3) == field &&
			    memchr(msg + off, '\0', (size_t)n) != NULL)
				found = 1;
			off += (size_t)n;
			break;
		case 5: /* 32-bit */
			if (len - off < 4)
				return -EINVAL;
			off += 4;
			break;
		default: /* groups (3, 4) are not proto3 */
			return -EINVAL;
		}
	}
	return found;
}

int
pbwire_only_bytes(const uint8_t *msg, size_t len, uint32_t field,
                  const uint8_t **data, size_t *n)
{
	size_t off = 0, at, last = 0;
	uint64_t m = 0;

	if (field == 0 || field > 15 || len == 0)
		return 0;
	while (off < len) {
		/* The key in its one-byte form, then the shortest length. */
		if (msg[off++] != (uint8_t)(field << 3 | 2))
			return 0;
		at = off;
		if (varint(msg, len, &off, &m) != 0 || off - at > 5 ||
		    (off - at > 1 && msg[off - 1] == 0) || m > len - off)
			return 0;
		last = off;
		off += (size_t)m;
	}
	*data = msg + last;
	*n = (size_t)m;
	return 1;
}
