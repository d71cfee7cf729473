/*
 * The operator's terminal during "ncgrpc session --shell": raw mode for a
 * raw-terminal session (the device echoes and edits), no local echo for a
 * line-mode session (the device echoes each line), the window size, and
 * the escapes of a raw session, as in OpenSSH: at the start of a line,
 * "~." leaves, "~^Z" suspends ncgrpc, "~?" lists them, "~~" sends one "~".
 *
 * tty_raw() and tty_noecho() save the terminal's settings once; every exit
 * path calls tty_restore(), which is idempotent and safe to call from an
 * atexit() handler.
 */
#ifndef NCGRPC_CLI_TTY_H
#define NCGRPC_CLI_TTY_H

#include <stddef.h>
#include <stdint.h>

/*
 * Puts the terminal on fd in raw mode (as cfmakeraw(): no echo, no line
 * editing, no signals from keys, no output processing).  0 or -errno.
 */
int tty_raw(int fd);

/* Turns the terminal's echo off, line editing stays.  0 or -errno. */
int tty_noecho(int fd);

/* Puts back the settings saved by tty_raw() or tty_noecho(), if any. */
void tty_restore(void);

/*
 * The window size of the terminal on fd.  0 and *cols, *rows set, or
 * -errno (not a terminal), or -ERANGE for a size of 0.
 */
int tty_window(int fd, unsigned *cols, unsigned *rows);

/* The escapes of a raw session. */
enum tty_esc_state {
	TTY_ESC_LINESTART = 0, /* at the start of a line: "~" is special */
	TTY_ESC_MIDLINE,
	TTY_ESC_TILDE, /* "~" at line start held: what follows decides */
};

struct tty_esc {
	enum tty_esc_state te_state;
};

enum tty_esc_action {
	TTY_ESC_NONE = 0,
	TTY_ESC_LEAVE,   /* "~." */
	TTY_ESC_SUSPEND, /* "~^Z" */
	TTY_ESC_HELP,    /* "~?" */
};

/*
 * Filters typed bytes in[0..len) into out, which must have room for
 * len + 1 bytes (a "~" held from the last call comes first), and sets
 * *outlen to the bytes to send.  It stops after an escape command and
 * returns it, with *used set to the bytes of in taken so far: the caller
 * sends out, acts, and calls again with what is left.  Otherwise it
 * returns TTY_ESC_NONE and *used is len.  A line starts at the session's
 * start, after a CR or LF, and after an escape command.
 */
enum tty_esc_action tty_esc_filter(struct tty_esc *e, const uint8_t *in,
                                   size_t len, uint8_t *out, size_t *outlen,
                                   size_t *used);

#endif
