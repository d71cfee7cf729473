/*
 * The operator's terminal: modes, window size, and the "~." escape.  See
 * tty.h.  The saved settings are static: one terminal per process.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "tty.h"

static struct termios tty_saved;
static int tty_saved_fd = -1;

static int
tty_save(int fd)
{
	if (tty_saved_fd != -1)
		return 0;
	if (tcgetattr(fd, &tty_saved) == -1)
		return -errno;
	tty_saved_fd = fd;
	return 0;
}

int
tty_raw(int fd)
{
	struct termios t;
	int rc;

	if ((rc = tty_save(fd)) != 0)
		return rc;
	t = tty_saved;
	cfmakeraw(&t);
	/* A read returns as soon as one byte is there. */
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(fd, TCSADRAIN, &t) == -1)
		return -errno;
	return 0;
}

int
tty_noecho(int fd)
{
	struct termios t;
	int rc;

	if ((rc = tty_save(fd)) != 0)
		return rc;
	t = tty_saved;
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	if (tcsetattr(fd, TCSADRAIN, &t) == -1)
		return -errno;
	return 0;
}

void
tty_restore(void)
{
	int saved = errno;

	if (tty_saved_fd != -1) {
		/* Interrupted by a signal: try again, it matters. */
		while (tcsetattr(tty_saved_fd, TCSADRAIN, &tty_saved) == -1 &&
		       errno == EINTR)
			;
		tty_saved_fd = -1;
	}
	errno = saved;
}

int
tty_window(int fd, unsigned *cols, unsigned *rows)
{
	struct winsize ws;

	if (ioctl(fd, TIOCGWINSZ, &ws) == -1)
		return -errno;
	if (ws.ws_col == 0 || ws.ws_row == 0)
		return -ERANGE;
	*cols = ws.ws_col;
	*rows = ws.ws_row;
	return 0;
}

enum tty_esc_action
tty_esc_filter(struct tty_esc *e, const uint8_t *in, size_t len, uint8_t *out,
               size_t *outlen, size_t *used)
{
	enum tty_esc_action act;
	size_t i, n = 0;
	uint8_t c;

	for (i = 0; i < len; i++) {
		c = in[i];
		switch (e->te_state) {
		case TTY_ESC_TILDE:
			act = c == '.'    ? TTY_ESC_LEAVE
			      : c == 0x1a ? TTY_ESC_SUSPEND /* Ctrl-Z */
			      : c == '?'  ? TTY_ESC_HELP
			                  : TTY_ESC_NONE;
			if (act != TTY_ESC_NONE) {
				e->te_state = TTY_ESC_LINESTART;
				*outlen = n;
				*used = i + 1;
				return act;
			}
			/* "~~" is one "~"; "~x" is both, as typed. */
			out[n++] = '~';
			if (c == '~') {
				e->te_state = TTY_ESC_MIDLINE;
				continue;
			}
			break;
		case TTY_ESC_LINESTART:
			if (c == '~') {
				e->te_state = TTY_ESC_TILDE;
				continue;
			}
			break;
		case TTY_ESC_MIDLINE:
			break;
		}
		out[n++] = c;
		e->te_state = c == '\r' || c == '\n' ? TTY_ESC_LINESTART
		                                     : TTY_ESC_MIDLINE;
	}
	*outlen = n;
	*used = len;
	return TTY_ESC_NONE;
}
