/*
 * Unit tests for ncgrpc-sshd's line discipline (src/sshd/ldisc.c), which
 * edits what an SSH client with a pty types into lines for LINE sessions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sshd/ldisc.c"

struct rec {
	char echo[2 * LDISC_MAX_LINE + 64];
	size_t echolen;
	char lines[4 * LDISC_MAX_LINE];
	size_t lineslen;
	int nlines;
	int signals[8];
	int nsignals;
	int eof;
};

static void
r_echo(void *arg, const void *data, size_t len)
{
	struct rec *r = arg;

	assert_true(r->echolen + len <= sizeof(r->echo));
	memcpy(r->echo + r->echolen, data, len);
	r->echolen += len;
}

static void
r_line(void *arg, const void *data, size_t len)
{
	struct rec *r = arg;

	assert_true(r->lineslen + len <= sizeof(r->lines));
	memcpy(r->lines + r->lineslen, data, len);
	r->lineslen += len;
	r->nlines++;
}

static void
r_signal(void *arg, int signum)
{
	struct rec *r = arg;

	assert_true(r->nsignals < 8);
	r->signals[r->nsignals++] = signum;
}

static void
r_eof(void *arg)
{
	((struct rec *)arg)->eof++;
}

static const struct ldisc_ops rec_ops = {r_echo, r_line, r_signal, r_eof};

static struct ldisc ld;
static struct rec rec;

static void
feed(const char *s)
{
	ldisc_input(&ld, (const uint8_t *)s, strlen(s));
}

static int
setup(void **state)
{
	(void)state;
	memset(&rec, 0, sizeof(rec));
	ldisc_init(&ld, &rec_ops, &rec);
	return 0;
}

static void
assert_mem(const char *got, size_t gotlen, const char *want)
{
	if (gotlen != strlen(want) || memcmp(got, want, gotlen) != 0)
		fail_msg("got '%.*s' (%zu bytes), want '%s'", (int)gotlen, got,
		         gotlen, want);
}

static void
test_lines(void **state)
{
	(void)state;
	feed("abc\r");
	assert_int_equal(rec.nlines, 1);
	assert_mem(rec.lines, rec.lineslen, "abc\n");
	assert_mem(rec.echo, rec.echolen, "abc\r\n");
	/* CRLF is one Enter, also when split across reads; LF alone too. */
	feed("d\r");
	feed("\ne\n");
	assert_int_equal(rec.nlines, 3);
	assert_mem(rec.lines, rec.lineslen, "abc\nd\ne\n");
	/* An empty line is a line. */
	feed("\r");
	assert_int_equal(rec.nlines, 4);
	assert_mem(rec.lines, rec.lineslen, "abc\nd\ne\n\n");
}

static void
test_editing(void **state)
{
	(void)state;
	feed("ab\x7f"
	     "c\r");
	assert_mem(rec.lines, rec.lineslen, "ac\n");
	assert_mem(rec.echo, rec.echolen, "ab\b \bc\r\n");
	/* ^H erases too; erasing an empty line does nothing. */
	rec.lineslen = rec.echolen = 0;
	feed("\b\bx\b\r");
	assert_mem(rec.lines, rec.lineslen, "\n");
	/* A UTF-8 character goes in one erase. */
	rec.lineslen = 0;
	feed("a\xc3\xa9\x7f\r");
	assert_mem(rec.lines, rec.lineslen, "a\n");
	/* ^U drops the line. */
	rec.lineslen = 0;
	feed("junk\x15ok\r");
	assert_mem(rec.lines, rec.lineslen, "ok\n");
	/* Arrow keys and other controls are ignored; tabs are kept. */
	rec.lineslen = 0;
	feed("l\x1b[A\x1bOBs\x01\t-l\r");
	assert_mem(rec.lines, rec.lineslen, "ls\t-l\n");
}

static void
test_interrupt(void **state)
{
	(void)state;
	feed("sleep 100\x03");
	assert_int_equal(rec.nsignals, 1);
	assert_int_equal(rec.signals[0], 2);
	assert_int_equal(rec.nlines, 0);
	assert_mem(rec.echo, rec.echolen, "sleep 100^C\r\n");
	feed("ls\r");
	assert_mem(rec.lines, rec.lineslen, "ls\n");
}

static void
test_eof(void **state)
{
	(void)state;
	/* ^D on a line with text is ignored ... */
	feed("ab\x04"
	     "c\r");
	assert_int_equal(rec.eof, 0);
	assert_mem(rec.lines, rec.lineslen, "abc\n");
	/* ... on an empty line it ends the input; the rest is dropped. */
	feed("\x04more\r");
	assert_int_equal(rec.eof, 1);
	assert_int_equal(rec.nlines, 1);
	feed("\x04x\r");
	assert_int_equal(rec.eof, 1);
}

static void
test_oversized(void **state)
{
	char big[LDISC_MAX_LINE + 10];
	size_t i, bells = 0;

	(void)state;
	memset(big, 'x', sizeof(big));
	ldisc_input(&ld, (const uint8_t *)big, sizeof(big));
	for (i = 0; i < rec.echolen; i++)
		bells += rec.echo[i] == '\a';
	assert_int_equal(bells, 10);
	assert_int_equal(rec.nlines, 0);
	feed("\r");
	assert_int_equal(rec.nlines, 1);
	assert_int_equal(rec.lineslen, LDISC_MAX_LINE + 1);
	assert_int_equal(rec.lines[LDISC_MAX_LINE], '\n');
}

static void
test_output(void **state)
{
	uint8_t out[64];
	size_t n;
	int cr = 0;

	(void)state;
	n = ldisc_output((const uint8_t *)"a\nb\r\nc", 6, out, &cr);
	assert_mem((char *)out, n, "a\r\nb\r\nc");
	/* A CR at the end of one chunk and the LF in the next. */
	n = ldisc_output((const uint8_t *)"d\r", 2, out, &cr);
	assert_mem((char *)out, n, "d\r");
	n = ldisc_output((const uint8_t *)"\n\n", 2, out, &cr);
	assert_mem((char *)out, n, "\n\r\n");
	n = ldisc_output((const uint8_t *)"", 0, out, &cr);
	assert_int_equal(n, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_lines, setup),
	    cmocka_unit_test_setup(test_editing, setup),
	    cmocka_unit_test_setup(test_interrupt, setup),
	    cmocka_unit_test_setup(test_eof, setup),
	    cmocka_unit_test_setup(test_oversized, setup),
	    cmocka_unit_test_setup(test_output, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
