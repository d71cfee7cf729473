/*
 * The CLI's terminal helpers (src/cli/tty.c, included): the "~." escape
 * filter, and raw mode and its restoration on a real pty.
 */
#include <errno.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/tty.c"

/*
 * Feeds in, returns the filter's result; out gets the bytes to send.  Only
 * an escape command stops the filter before the end of in.
 */
static int
feed(struct tty_esc *e, const char *in, char *out, size_t *n)
{
	uint8_t buf[256];
	size_t used;
	int rc;

	rc = tty_esc_filter(e, (const uint8_t *)in, strlen(in), buf, n, &used);
	assert_true(*n <= strlen(in) + 1);
	assert_true(used <= strlen(in));
	if (rc == TTY_ESC_NONE)
		assert_int_equal(used, strlen(in));
	memcpy(out, buf, *n);
	out[*n] = '\0';
	return rc;
}

static void
test_esc_leave(void **state)
{
	struct tty_esc e = {0};
	char out[256];
	size_t n;

	(void)state;
	/* At the very start. */
	assert_int_equal(feed(&e, "~.", out, &n), 1);
	assert_int_equal(n, 0);
	/* After a CR (Enter in raw mode); what follows is dropped. */
	e.te_state = TTY_ESC_LINESTART;
	assert_int_equal(feed(&e, "ls\r~.rm", out, &n), 1);
	assert_string_equal(out, "ls\r");
	/* After LF too. */
	e.te_state = TTY_ESC_MIDLINE;
	assert_int_equal(feed(&e, "x\n~.", out, &n), 1);
	assert_string_equal(out, "x\n");
}

static void
test_esc_split(void **state)
{
	struct tty_esc e = {0};
	char out[256];
	size_t n;

	(void)state;
	/* "~" in one read, "." in the next. */
	assert_int_equal(feed(&e, "\r~", out, &n), 0);
	assert_string_equal(out, "\r");
	assert_int_equal(feed(&e, ".", out, &n), 1);
	assert_int_equal(n, 0);
	/* "~" then "x" in the next read: both go, the "~" first. */
	e.te_state = TTY_ESC_LINESTART;
	assert_int_equal(feed(&e, "~", out, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(feed(&e, "x", out, &n), 0);
	assert_string_equal(out, "~x");
}

static void
test_esc_literal(void **state)
{
	struct tty_esc e = {0};
	char out[256];
	size_t n;

	(void)state;
	/* "~~" sends one "~"; the line goes on. */
	assert_int_equal(feed(&e, "~~/bin\r", out, &n), 0);
	assert_string_equal(out, "~/bin\r");
	/* "~~." is "~." typed literally, not the escape. */
	assert_int_equal(feed(&e, "~~.", out, &n), 0);
	assert_string_equal(out, "~.");
	/* Mid-line "~." is just text. */
	e.te_state = TTY_ESC_LINESTART;
	assert_int_equal(feed(&e, "cd ~.", out, &n), 0);
	assert_string_equal(out, "cd ~.");
	/* Another key after "~" at line start: both go as typed. */
	e.te_state = TTY_ESC_LINESTART;
	assert_int_equal(feed(&e, "~x~.", out, &n), 0);
	assert_string_equal(out, "~x~.");
	/* "~" then Enter: both, and a new line starts. */
	e.te_state = TTY_ESC_LINESTART;
	assert_int_equal(feed(&e, "~\r~.", out, &n), 1);
	assert_string_equal(out, "~\r");
}

static void
test_esc_commands(void **state)
{
	static const uint8_t in[] = "ls\r~\x1a~?pwd\r~.x";
	struct tty_esc e = {0};
	uint8_t out[sizeof(in) + 1];
	size_t n, used, off = 0;

	(void)state;
	/* "~^Z": the line before it goes, then the caller suspends. */
	assert_int_equal(tty_esc_filter(&e, in, sizeof(in) - 1, out, &n, &used),
	                 TTY_ESC_SUSPEND);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "ls\r", 3);
	assert_int_equal(used, 5);
	off += used;
	/* Still at the start of a line: "~?" is a command too. */
	assert_int_equal(
	    tty_esc_filter(&e, in + off, sizeof(in) - 1 - off, out, &n, &used),
	    TTY_ESC_HELP);
	assert_int_equal(n, 0);
	assert_int_equal(used, 2);
	off += used;
	assert_int_equal(
	    tty_esc_filter(&e, in + off, sizeof(in) - 1 - off, out, &n, &used),
	    TTY_ESC_LEAVE);
	assert_int_equal(n, 4);
	assert_memory_equal(out, "pwd\r", 4);
	/* The "x" after "~." is not taken. */
	assert_int_equal(off + used, sizeof(in) - 2);
}

static void
test_esc_bound(void **state)
{
	struct tty_esc e = {0};
	uint8_t in[300], out[301];
	size_t n, i, used;

	(void)state;
	/* The worst case: a held "~", then "~x" pairs: at most len + 1. */
	assert_int_equal(
	    tty_esc_filter(&e, (const uint8_t *)"~", 1, out, &n, &used),
	    TTY_ESC_NONE);
	for (i = 0; i < sizeof(in); i++)
		in[i] = i % 2 == 0 ? 'y' : '\r';
	assert_int_equal(tty_esc_filter(&e, in, sizeof(in), out, &n, &used),
	                 TTY_ESC_NONE);
	assert_int_equal(n, sizeof(in) + 1);
	assert_int_equal(out[0], '~');
}

static void
test_raw_restore(void **state)
{
	struct termios before, during, after;
	int master, slave;

	(void)state;
	/* The kernel fills only part of c_cc: compare zeroed structs. */
	memset(&before, 0, sizeof(before));
	memset(&during, 0, sizeof(during));
	memset(&after, 0, sizeof(after));
	if (openpty(&master, &slave, NULL, NULL, NULL) == -1)
		skip();
	assert_int_equal(tcgetattr(slave, &before), 0);
	assert_int_equal(tty_raw(slave), 0);
	assert_int_equal(tcgetattr(slave, &during), 0);
	assert_false(during.c_lflag & (ECHO | ICANON | ISIG | IEXTEN));
	assert_false(during.c_iflag & (ICRNL | IXON));
	assert_false(during.c_oflag & OPOST);
	/* A second call keeps the first settings as the ones to restore. */
	assert_int_equal(tty_noecho(slave), 0);
	tty_restore();
	assert_int_equal(tcgetattr(slave, &after), 0);
	assert_memory_equal(&before, &after, sizeof(before));
	/* Restoring again is harmless. */
	tty_restore();
	assert_int_equal(tty_noecho(slave), 0);
	assert_int_equal(tcgetattr(slave, &during), 0);
	assert_false(during.c_lflag & ECHO);
	assert_true(during.c_lflag & ICANON);
	tty_restore();
	assert_int_equal(tcgetattr(slave, &after), 0);
	assert_memory_equal(&before, &after, sizeof(before));
	close(master);
	close(slave);
}

static void
test_window(void **state)
{
	struct winsize ws = {.ws_row = 30, .ws_col = 100};
	unsigned cols = 0, rows = 0;
	int master, slave, fds[2];

	(void)state;
	if (openpty(&master, &slave, NULL, NULL, &ws) == -1)
		skip();
	assert_int_equal(tty_window(slave, &cols, &rows), 0);
	assert_int_equal(cols, 100);
	assert_int_equal(rows, 30);
	ws.ws_row = 0;
	assert_int_equal(ioctl(master, TIOCSWINSZ, &ws), 0);
	assert_int_equal(tty_window(slave, &cols, &rows), -ERANGE);
	assert_int_equal(cols, 100);
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(tty_window(fds[0], &cols, &rows), -ENOTTY);
	close(fds[0]);
	close(fds[1]);
	close(master);
	close(slave);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_esc_leave),
	    cmocka_unit_test(test_esc_split),
	    cmocka_unit_test(test_esc_literal),
	    cmocka_unit_test(test_esc_commands),
	    cmocka_unit_test(test_esc_bound),
	    cmocka_unit_test(test_raw_restore),
	    cmocka_unit_test(test_window),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
