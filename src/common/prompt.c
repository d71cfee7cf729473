/*
 * Recognising a prompt for a secret in a terminal's output: see prompt.h.
 */
#include <string.h>

#include "prompt.h"

void
prompt_feed(struct prompt_tail *pt, const void *data, size_t len)
{
	const char *p = data;
	size_t i, stop, keep;

	/*
	 * Only the last PROMPT_TAIL bytes can end up in the tail, so only they
	 * are searched for a line end: each message of a bulk transfer costs
	 * what a keystroke's echo does, not a pass over all its bytes.
	 */
	stop = len > PROMPT_TAIL ? len - PROMPT_TAIL : 0;
	for (i = len; i > stop; i--)
		if (p[i - 1] == '\n' || p[i - 1] == '\r')
			break;
	if (i > stop) {
		/* A new line: the tail is what follows its start. */
		p += i;
		len -= i;
		pt->pt_len = 0;
	}
	if (len >= PROMPT_TAIL) {
		memcpy(pt->pt_buf, p + len - PROMPT_TAIL, PROMPT_TAIL);
		pt->pt_len = PROMPT_TAIL;
		return;
	}
	if (pt->pt_len + len > PROMPT_TAIL) {
		/* Keep the end of a long line. */
		keep = PROMPT_TAIL - len;
		memmove(pt->pt_buf, pt->pt_buf + pt->pt_len - keep, keep);
		pt->pt_len = keep;
	}
	memcpy(pt->pt_buf + pt->pt_len, p, len);
	pt->pt_len += len;
}

void
prompt_reset(struct prompt_tail *pt)
{
	pt->pt_len = 0;
}

/* Skips the escape sequence at s[i] (s[i] is ESC); returns the next index. */
static size_t
skip_escape(const char *s, size_t i, size_t n)
{
	i++;
	if (i >= n)
		return n;
	if (s[i] == '[') {
		/* CSI: parameters and intermediates, then one final byte. */
		for (i++; i < n; i++)
			if ((unsigned char)s[i] >= 0x40 &&
			    (unsigned char)s[i] <= 0x7e)
				return i + 1;
		return n;
	}
	if (s[i] == ']') {
		/* OSC: up to BEL or ST (ESC \). */
		for (i++; i < n; i++) {
			if (s[i] == '\a')
				return i + 1;
			if (s[i] == '\033')
				return i + 1 < n ? i + 2 : n;
		}
		return n;
	}
	return i + 1;
}

/* Nonzero if c is an ASCII letter or digit. */
static int
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Nonzero if the word w is in s[0..n), not inside another word. */
static int
has_word(const char *s, size_t n, const char *w)
{
	size_t wl = strlen(w), i;

	for (i = 0; i + wl <= n; i++) {
		if (memcmp(s + i, w, wl) != 0)
			continue;
		if ((i == 0 || !is_alnum(s[i - 1])) &&
		    (i + wl == n || !is_alnum(s[i + wl])))
			return 1;
	}
	return 0;
}

int
prompt_is_secret(const struct prompt_tail *pt)
{
	static const char *const stems[] = {
	    "password", "passwd", "passphrase",        "passcode",
	    "secret",   "token",  "verification code",
	};
	char t[PROMPT_TAIL];
	size_t i, n = 0;
	char c;

	/* What a terminal shows, in lower case, without escapes. */
	for (i = 0; i < pt->pt_len;) {
		c = pt->pt_buf[i];
		if (c == '\033') {
			i = skip_escape(pt->pt_buf, i, pt->pt_len);
			continue;
		}
		i++;
		if ((unsigned char)c < 0x20 && c != '\t')
			continue;
		t[n++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
		n--;
	if (n == 0 || t[n - 1] != ':')
		return 0;
	for (i = 0; i < sizeof(stems) / sizeof(stems[0]); i++)
		if (memmem(t, n, stems[i], strlen(stems[i])) != NULL)
			return 1;
	return has_word(t, n, "pin") || has_word(t, n, "otp");
}
