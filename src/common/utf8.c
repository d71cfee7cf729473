#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "utf8.h"

/* What utf8_scan() found at the start of its input. */
enum scan {
	SCAN_VALID,     /* a whole, well-formed character */
	SCAN_TRUNCATED, /* a well-formed start, cut off by the end of input */
	SCAN_INVALID,   /* an ill-formed sequence */
};

static int
is_cont(uint8_t c)
{
	return c >= 0x80 && c <= 0xbf;
}

/*
 * Classifies the sequence starting at s[0] (len >= 1) following table 3-7
 * of the Unicode standard, which encodes RFC 3629 directly: the second byte
 * ranges exclude overlongs (E0, F0), surrogates (ED) and values above
 * U+10FFFF (F4).  *n is set to the length of the character, of the
 * truncated start, or of the maximal subpart of the ill-formed sequence
 * (at least 1), which is what one U+FFFD replaces.
 */
static enum scan
utf8_scan(const uint8_t *s, size_t len, size_t *n)
{
	uint8_t b = s[0], lo = 0x80, hi = 0xbf;
	size_t need, k;

	if (b < 0x80) {
		*n = 1;
		return SCAN_VALID;
	}
	if (b >= 0xc2 && b <= 0xdf)
		need = 2;
	else if (b >= 0xe0 && b <= 0xef) {
		need = 3;
		if (b == 0xe0)
			lo = 0xa0;
		else if (b == 0xed)
			hi = 0x9f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		need = 4;
		if (b == 0xf0)
			lo = 0x90;
		else if (b == 0xf4)
			hi = 0x8f;
	} else {
		/* 80..BF stray continuation, C0 C1 overlong, F5..FF. */
		*n = 1;
		return SCAN_INVALID;
	}
	for (k = 1; k < need; k++) {
		if (k >= len) {
			*n = k;
			return SCAN_TRUNCATED;
		}
		if (k == 1 ? s[k] < lo || s[k] > hi : !is_cont(s[k])) {
			*n = k;
			return SCAN_INVALID;
		}
	}
	*n = need;
	return SCAN_VALID;
}

/*
 * The length of the run of ASCII bytes at the start of s, eight bytes at a
 * time: ASCII runs are the common case in NETCONF text and shell output.
 */
static size_t
ascii_run(const uint8_t *s, size_t len)
{
	uint64_t w;
	size_t i = 0;

	while (len - i >= sizeof(w)) {
		memcpy(&w, s + i, sizeof(w));
		if ((w & 0x8080808080808080ULL) != 0)
			break;
		i += sizeof(w);
	}
	while (i < len && s[i] < 0x80)
		i++;
	return i;
}

/* The length of the longest well-formed prefix of s. */
static size_t
valid_run(const uint8_t *s, size_t len)
{
	size_t i = 0, n;

	for (;;) {
		i += ascii_run(s + i, len - i);
		if (i == len || utf8_scan(s + i, len - i, &n) != SCAN_VALID)
			return i;
		i += n;
	}
}

int
utf8_valid(const uint8_t *s, size_t len)
{
	return valid_run(s, len) == len;
}

size_t
utf8_complete_prefix(const uint8_t *s, size_t len)
{
	size_t i, n, stop;

	/*
	 * Every byte that is not a continuation byte starts a unit of its
	 * own, valid or not, so only the last such byte can begin an
	 * unfinished character, and it must lie within the last 3 bytes.
	 */
	stop = len > 3 ? len - 3 : 0;
	for (i = len; i > stop; i--) {
		if (is_cont(s[i - 1]))
			continue;
		if (utf8_scan(s + i - 1, len - (i - 1), &n) == SCAN_TRUNCATED)
			return i - 1;
		break;
	}
	return len;
}

size_t
utf8_sanitize(const uint8_t *s, size_t len, uint8_t *out)
{
	static const uint8_t fffd[] = {0xef, 0xbf, 0xbd};
	size_t i = 0, o = 0, n;

	while (i < len) {
		/* Well-formed runs go over in one copy. */
		n = valid_run(s + i, len - i);
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
		if (i == len)
			break;
		/* A truncated start at the end is ill-formed too. */
		(void)utf8_scan(s + i, len - i, &n);
		memcpy(out + o, fffd, sizeof(fffd));
		o += sizeof(fffd);
		i += n;
	}
	return o;
}
