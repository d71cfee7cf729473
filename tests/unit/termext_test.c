/*
 * The raw-terminal extension's parsers: "COLSxROWS" trailers, terminal
 * types, and the window field (100) of CommandGetResponse as the agent
 * decodes it, truncated, oversized and malformed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/termext.h"
#include "ncgrpc_wire.pb-c.h"

#define S(x) (x), (sizeof(x) - 1)

static void
test_window_parse(void **state)
{
	struct termext_window w = {7, 7};

	(void)state;
	assert_int_equal(termext_window_parse(S("100x30"), &w), 0);
	assert_int_equal(w.tw_cols, 100);
	assert_int_equal(w.tw_rows, 30);
	assert_int_equal(termext_window_parse(S("1x1"), &w), 0);
	assert_int_equal(termext_window_parse(S("4096x4096"), &w), 0);
	assert_int_equal(w.tw_cols, 4096);
	assert_int_equal(w.tw_rows, 4096);
	/* Only len bytes count: what follows is not read. */
	assert_int_equal(termext_window_parse("80x24junk", 4, &w), 0);
	assert_int_equal(w.tw_cols, 80);
	assert_int_equal(w.tw_rows, 2);
}

static void
test_window_parse_bad(void **state)
{
	static const char *const bad[] = {
	    "",         "x",        "80",
	    "80x",      "x24",      "80x24x",
	    "80 x24",   " 80x24",   "80x24 ",
	    "+80x24",   "-1x24",    "80X24",
	    "080x24",   "80x024",   "80x2a",
	    "123456x1", "1x123456", "99999999999999999999x1",
	};
	struct termext_window w = {7, 9};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    termext_window_parse(bad[i], strlen(bad[i]), &w), -EINVAL);
		/* Out-params are set only on success. */
		assert_int_equal(w.tw_cols, 7);
		assert_int_equal(w.tw_rows, 9);
	}
	/* Truncated before the second side: refused. */
	for (i = 0; i <= 4; i++)
		assert_int_equal(termext_window_parse("100x30", i, &w),
		                 -EINVAL);
	/* Well formed, out of range. */
	assert_int_equal(termext_window_parse(S("0x24"), &w), -ERANGE);
	assert_int_equal(termext_window_parse(S("80x0"), &w), -ERANGE);
	assert_int_equal(termext_window_parse(S("4097x24"), &w), -ERANGE);
	assert_int_equal(termext_window_parse(S("80x65535"), &w), -ERANGE);
	assert_int_equal(termext_window_parse(S("99999x1"), &w), -ERANGE);
	assert_int_equal(w.tw_cols, 7);
}

static void
test_window_format(void **state)
{
	struct termext_window w = {100, 30}, back;
	char buf[TERMEXT_WINDOW_STRLEN];

	(void)state;
	assert_int_equal(termext_window_format(&w, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "100x30");
	w.tw_cols = w.tw_rows = TERMEXT_WINDOW_MAX;
	assert_int_equal(termext_window_format(&w, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "4096x4096");
	assert_int_equal(termext_window_parse(buf, strlen(buf), &back), 0);
	assert_int_equal(back.tw_cols, TERMEXT_WINDOW_MAX);
	assert_int_equal(termext_window_format(&w, buf, 9), -ENOBUFS);
	w.tw_cols = 0;
	assert_int_equal(termext_window_format(&w, buf, sizeof(buf)), -ERANGE);
	w.tw_cols = 5000;
	assert_int_equal(termext_window_format(&w, buf, sizeof(buf)), -ERANGE);
}

static void
test_window_check(void **state)
{
	struct termext_window w = {1, 1};

	(void)state;
	assert_int_equal(termext_window_check(80, 24, &w), 0);
	assert_int_equal(w.tw_cols, 80);
	assert_int_equal(termext_window_check(0, 24, &w), -ERANGE);
	assert_int_equal(termext_window_check(80, 0, &w), -ERANGE);
	/* A uint32 that a uint16 would wrap to a valid size. */
	assert_int_equal(termext_window_check(65536 + 80, 24, &w), -ERANGE);
	assert_int_equal(termext_window_check(UINT32_MAX, UINT32_MAX, &w),
	                 -ERANGE);
	assert_int_equal(w.tw_cols, 80);
}

static void
test_term_ok(void **state)
{
	char longname[TERMEXT_TERM_MAX + 2];

	(void)state;
	assert_true(termext_term_ok(S("xterm-256color")));
	assert_true(termext_term_ok(S("tmux-256color")));
	assert_true(termext_term_ok(S("rxvt-unicode.x_y+z")));
	assert_false(termext_term_ok(S("")));
	assert_false(termext_term_ok(NULL, 0));
	assert_false(termext_term_ok(S("xterm;rm -rf")));
	assert_false(termext_term_ok(S("../../etc")));
	assert_false(termext_term_ok(S("a b")));
	assert_false(termext_term_ok("xt\0rm", 5));
	assert_false(termext_term_ok(S("x\n")));
	memset(longname, 'a', sizeof(longname));
	assert_true(termext_term_ok(longname, TERMEXT_TERM_MAX));
	assert_false(termext_term_ok(longname, TERMEXT_TERM_MAX + 1));
}

/* The window as it travels: packed by ncgrpcd, unpacked by the agent. */

static size_t
pack_window(uint32_t cols, uint32_t rows, uint8_t *out)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	Ncgrpc__Wire__TerminalWindow tw = NCGRPC__WIRE__TERMINAL_WINDOW__INIT;

	tw.cols = cols;
	tw.rows = rows;
	r.window = &tw;
	return ncgrpc__wire__command_get_response__pack(&r, out);
}

static void
test_wire_window(void **state)
{
	/* field 100, length-delimited: tag 0xa2 0x06 */
	static const uint8_t expect[] = {0xa2, 0x06, 0x04, 0x08,
	                                 0x64, 0x10, 0x1e};
	Ncgrpc__Wire__CommandGetResponse *r;
	struct termext_window w;
	uint8_t buf[64];
	size_t n, i;

	(void)state;
	n = pack_window(100, 30, buf);
	assert_int_equal(n, sizeof(expect));
	assert_memory_equal(buf, expect, n);
	r = ncgrpc__wire__command_get_response__unpack(NULL, n, buf);
	assert_non_null(r);
	assert_non_null(r->window);
	assert_int_equal(
	    termext_window_check(r->window->cols, r->window->rows, &w), 0);
	assert_int_equal(w.tw_cols, 100);
	assert_int_equal(w.tw_rows, 30);
	ncgrpc__wire__command_get_response__free_unpacked(r, NULL);

	/* Truncated anywhere: refused as a whole, never half-applied. */
	for (i = 1; i < n; i++) {
		r = ncgrpc__wire__command_get_response__unpack(NULL, i, buf);
		assert_null(r);
	}
}

static void
test_wire_window_oversized(void **state)
{
	Ncgrpc__Wire__CommandGetResponse *r;
	struct termext_window w = {1, 2};
	uint8_t buf[64];
	size_t n;

	(void)state;
	/* Decodes (protobuf is fine with it), but the agent refuses it. */
	n = pack_window(UINT32_MAX, 70000, buf);
	r = ncgrpc__wire__command_get_response__unpack(NULL, n, buf);
	assert_non_null(r);
	assert_int_equal(
	    termext_window_check(r->window->cols, r->window->rows, &w),
	    -ERANGE);
	ncgrpc__wire__command_get_response__free_unpacked(r, NULL);
	n = pack_window(0, 0, buf);
	r = ncgrpc__wire__command_get_response__unpack(NULL, n, buf);
	assert_non_null(r);
	assert_non_null(r->window);
	assert_int_equal(
	    termext_window_check(r->window->cols, r->window->rows, &w),
	    -ERANGE);
	assert_int_equal(w.tw_cols, 1);
	ncgrpc__wire__command_get_response__free_unpacked(r, NULL);
}

static void
test_wire_window_malformed(void **state)
{
	/* Field 100 as a varint, where a message is expected. */
	static const uint8_t varint[] = {0xa0, 0x06, 0x05};
	/* A length that runs past the end. */
	static const uint8_t overrun[] = {0xa2, 0x06, 0x7f, 0x08, 0x01};
	/* Inside the window: cols as a length-delimited field. */
	static const uint8_t inner[] = {0xa2, 0x06, 0x03, 0x0a, 0x01, 0x41};
	/* A varint of 11 bytes. */
	static const uint8_t longvar[] = {0xa2, 0x06, 0x0c, 0x08, 0xff,
	                                  0xff, 0xff, 0xff, 0xff, 0xff,
	                                  0xff, 0xff, 0xff, 0xff, 0x01};
	Ncgrpc__Wire__CommandGetResponse *r;

	(void)state;
	r = ncgrpc__wire__command_get_response__unpack(NULL, sizeof(varint),
	                                               varint);
	assert_null(r);
	r = ncgrpc__wire__command_get_response__unpack(NULL, sizeof(overrun),
	                                               overrun);
	assert_null(r);
	r = ncgrpc__wire__command_get_response__unpack(NULL, sizeof(inner),
	                                               inner);
	assert_null(r);
	r = ncgrpc__wire__command_get_response__unpack(NULL, sizeof(longvar),
	                                               longvar);
	assert_null(r);
}

/*
 * A message without the window packs exactly as the contract's: what a
 * device that never offered the extension gets is unchanged.
 */
static void
test_wire_unchanged_without_window(void **state)
{
	static const uint8_t expect[] = {0x12, 0x02, 'l', 's', 0x18, 0x02};
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	uint8_t buf[32], ls[2] = {'l', 's'};
	size_t n;

	(void)state;
	r.command_case =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND;
	r.csh_command.data = ls;
	r.csh_command.len = 2;
	r.kill_signal = 2;
	n = ncgrpc__wire__command_get_response__pack(&r, buf);
	assert_int_equal(n, sizeof(expect));
	assert_memory_equal(buf, expect, n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_window_parse),
	    cmocka_unit_test(test_window_parse_bad),
	    cmocka_unit_test(test_window_format),
	    cmocka_unit_test(test_window_check),
	    cmocka_unit_test(test_term_ok),
	    cmocka_unit_test(test_wire_window),
	    cmocka_unit_test(test_wire_window_oversized),
	    cmocka_unit_test(test_wire_window_malformed),
	    cmocka_unit_test(test_wire_unchanged_without_window),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
