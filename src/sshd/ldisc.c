/*
 * The line discipline of ncgrpc-sshd (see ldisc.h).
 */
#include <string.h>

#include "ldisc.h"

#define CTRL(c) ((c)&0x1f)

void
ldisc_init(struct ldisc *ld, const struct ldisc_ops *ops, void *arg)
{
	memset(ld, 0, sizeof(*ld));
	ld->ld_ops = ops;
	ld->ld_arg = arg;
}

static void
echo(struct ldisc *ld, const char *s, size_t len)
{
	ld->ld_ops->lo_echo(ld->ld_arg, s, len);
}

/* Erases the last character, a whole UTF-8 sequence if it is one. */
static void
erase(struct ldisc *ld)
{
	if (ld->ld_len == 0)
		return;
	while (ld->ld_len > 1 &&
	       ((unsigned char)ld->ld_line[ld->ld_len - 1] & 0xc0) == 0x80)
		ld->ld_len--;
	ld->ld_len--;
	echo(ld, "\b \b", 3);
}

static void
enter(struct ldisc *ld)
{
	echo(ld, "\r\n", 2);
	ld->ld_line[ld->ld_len++] = '\n';
	ld->ld_ops->lo_line(ld->ld_arg, ld->ld_line, ld->ld_len);
	ld->ld_len = 0;
}

void
ldisc_input(struct ldisc *ld, const uint8_t *in, size_t len)
{
	size_t i;
	uint8_t c;

	for (i = 0; i < len && !ld->ld_eof; i++) {
		c = in[i];
		if (ld->ld_cr && c == '\n') {
			ld->ld_cr = 0;
			continue;
		}
		ld->ld_cr = c == '\r';
		/* ESC [ ... final byte, or ESC O x: arrow and function keys. */
		if (ld->ld_esc == 1) {
			ld->ld_esc = (c == '[' || c == 'O') ? 2 : 0;
			continue;
		}
		if (ld->ld_esc == 2) {
			if (c >= 0x40 && c <= 0x7e)
				ld->ld_esc = 0;
			continue;
		}
		switch (c) {
		case '\r':
		case '\n':
			enter(ld);
			break;
		case CTRL('C'):
			echo(ld, "^C\r\n", 4);
			ld->ld_len = 0;
			ld->ld_ops->lo_signal(ld->ld_arg, 2);
			break;
		case CTRL('D'):
			if (ld->ld_len == 0) {
				ld->ld_eof = 1;
				ld->ld_ops->lo_eof(ld->ld_arg);
			}
			break;
		case CTRL('U'):
			while (ld->ld_len > 0)
				erase(ld);
			break;
		case 0x7f:
		case CTRL('H'):
			erase(ld);
			break;
		case 0x1b:
			ld->ld_esc = 1;
			break;
		default:
			if (c < 0x20 && c != '\t')
				break;
			if (ld->ld_len == LDISC_MAX_LINE) {
				echo(ld, "\a", 1);
				break;
			}
			ld->ld_line[ld->ld_len++] = (char)c;
			echo(ld, (const char *)&c, 1);
			break;
		}
	}
}

size_t
ldisc_output(const uint8_t *in, size_t len, uint8_t *out, int *prev_cr)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (in[i] == '\n' && !*prev_cr)
			out[n++] = '\r';
		*prev_cr = in[i] == '\r';
		out[n++] = in[i];
	}
	return n;
}
