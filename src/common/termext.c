/*
 * The raw-terminal extension's values: window sizes and terminal types.
 * They come from peers (trailers, protobuf fields) and end in a TIOCSWINSZ
 * or a child's environment, so everything is checked, nothing trusted.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "termext.h"

int
termext_window_check(uint32_t cols, uint32_t rows, struct termext_window *out)
{
	if (cols == 0 || rows == 0 || cols > TERMEXT_WINDOW_MAX ||
	    rows > TERMEXT_WINDOW_MAX)
		return -ERANGE;
	out->tw_cols = (uint16_t)cols;
	out->tw_rows = (uint16_t)rows;
	return 0;
}

/*
 * One decimal side of "COLSxROWS": at most 5 digits (so that no value
 * overflows before the range check), no leading zero.  Returns the number
 * of bytes taken, or 0 when there is no valid number at s.
 */
static size_t
parse_side(const char *s, size_t len, uint32_t *v)
{
	size_t i;
	uint32_t n = 0;

	for (i = 0; i < len && i < 6 && s[i] >= '0' && s[i] <= '9'; i++)
		n = n * 10 + (uint32_t)(s[i] - '0');
	if (i == 0 || i > 5 || (i > 1 && s[0] == '0'))
		return 0;
	*v = n;
	return i;
}

int
termext_window_parse(const void *s, size_t len, struct termext_window *out)
{
	const char *p = s;
	uint32_t cols, rows;
	size_t n;

	if ((n = parse_side(p, len, &cols)) == 0 || n == len || p[n] != 'x')
		return -EINVAL;
	p += n + 1;
	len -= n + 1;
	if ((n = parse_side(p, len, &rows)) == 0 || n != len)
		return -EINVAL;
	return termext_window_check(cols, rows, out);
}

int
termext_window_format(const struct termext_window *w, char *buf, size_t len)
{
	struct termext_window ok;
	int n;

	if (termext_window_check(w->tw_cols, w->tw_rows, &ok) != 0)
		return -ERANGE;
	n = snprintf(buf, len, "%ux%u", (unsigned)ok.tw_cols,
	             (unsigned)ok.tw_rows);
	if (n < 0 || (size_t)n >= len)
		return -ENOBUFS;
	return 0;
}

int
termext_term_ok(const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t i;

	if (len == 0 || len > TERMEXT_TERM_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') ||
		      (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || p[i] == '.' ||
		      p[i] == '_' || p[i] == '+' || p[i] == '-'))
			return 0;
	return 1;
}
