/*
 * A minimal line discipline for shell sessions with an SSH pty while the
 * device grants only LINE mode (input cut into lines): ncgrpc-sshd plays
 * the terminal driver that the client's raw pty no longer provides.
 *
 * Input bytes from the SSH client are edited into a line and handed on at
 * Enter, with the echo the user expects:
 *
 *   CR, LF, CRLF     end of line: the line and "\n" go to the device
 *   ^C (0x03)        the line is dropped; SIGINT goes to the device
 *   ^D (0x04)        on an empty line: end of input; otherwise ignored
 *   ^U (0x15)        the line is dropped
 *   DEL, ^H          one character (UTF-8 sequence) is erased
 *   other controls   ignored (escape sequences of arrow keys included)
 *
 * The line holds at most LDISC_MAX_LINE bytes; bytes past it are dropped
 * with a BEL echoed.  Output from the device passes through
 * ldisc_output(), which adds the CR before each LF (the device's pty has
 * -onlcr) as a terminal would.
 */
#ifndef NCGRPC_SSHD_LDISC_H
#define NCGRPC_SSHD_LDISC_H

#include <stddef.h>
#include <stdint.h>

#define LDISC_MAX_LINE 4096

struct ldisc_ops {
	/* Echo for the user's terminal. */
	void (*lo_echo)(void *arg, const void *data, size_t len);
	/* A whole line, with its "\n", for the device. */
	void (*lo_line)(void *arg, const void *data, size_t len);
	void (*lo_signal)(void *arg, int signum);
	void (*lo_eof)(void *arg);
};

struct ldisc {
	const struct ldisc_ops *ld_ops;
	void *ld_arg;
	char ld_line[LDISC_MAX_LINE + 1]; /* room for the "\n" */
	size_t ld_len;
	int ld_cr;  /* the last byte was CR: a following LF is the same Enter */
	int ld_eof; /* ^D was taken: the rest is ignored */
	int ld_esc; /* inside an escape sequence */
};

void ldisc_init(struct ldisc *ld, const struct ldisc_ops *ops, void *arg);

/* Feeds input from the client; the ops run from inside. */
void ldisc_input(struct ldisc *ld, const uint8_t *in, size_t len);

/*
 * Copies in[0..len) to out with "\r" before each "\n" that has none.
 * out must hold 2 * len bytes; *prev_cr carries the last byte's CR-ness
 * between calls.  Returns the bytes written.
 */
size_t ldisc_output(const uint8_t *in, size_t len, uint8_t *out, int *prev_cr);

#endif
