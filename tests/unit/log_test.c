/*
 * log: every message is written on one line of printable ASCII, whatever
 * text a peer put into it (issue: a server's grpc-message with "\n" and
 * ESC was logged raw, so it could forge log lines and drive terminals).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"

static void
test_escape(void **state)
{
	char out[64];
	size_t n;

	(void)state;
	n = log_escape(out, sizeof(out), "a\nb\x1b[31mc\\d\x7f\xc3\xa9", 14);
	assert_string_equal(out, "a\\x0ab\\x1b[31mc\\\\d\\x7f\\xc3\\xa9");
	assert_int_equal(n, strlen(out));
	/* A NUL inside the input is escaped too, not an end. */
	n = log_escape(out, sizeof(out), "r1\0x", 4);
	assert_string_equal(out, "r1\\x00x");
	/* Plain text is unchanged. */
	log_escape(out, sizeof(out), "client \"c\": ok", 14);
	assert_string_equal(out, "client \"c\": ok");
}

static void
test_escape_truncates_whole_escapes(void **state)
{
	char out[6];
	size_t n;

	(void)state;
	/* "ab" fits, "\x0a" (4 bytes) would not: it is left out whole. */
	n = log_escape(out, sizeof(out), "ab\ncd", 5);
	assert_int_equal(n, 8);
	assert_string_equal(out, "ab");
	assert_int_equal(log_escape(NULL, 0, "\n", 1), 4);
	memset(out, 'z', sizeof(out));
	assert_int_equal(log_escape(out, 1, "abc", 3), 3);
	assert_int_equal(out[0], '\0');
}

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "rb");
	char *s;
	long len;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	len = ftell(fp);
	assert_true(len >= 0);
	rewind(fp);
	s = malloc((size_t)len + 1);
	assert_non_null(s);
	assert_int_equal(fread(s, 1, (size_t)len, fp), (size_t)len);
	s[len] = '\0';
	fclose(fp);
	return s;
}

static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void
test_sink_escapes_peer_text(void **state)
{
	char path[] = "/tmp/ncgrpc-log-test-XXXXXX";
	char big[3000];
	char *text;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	log_init("log_test", LOG_LEVEL_DEBUG);
	assert_int_equal(log_open(path), 0);
	log_warnx("initialize ended: %s", "bye\n2026-01-01T00:00:00.000Z "
	                                  "forged[1] info: \x1b]0;pwned\x07");
	memset(big, 'x', sizeof(big) - 2);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	log_info("long %s end", big);
	errno = ENOENT;
	log_warn("open \"%s\"", "a\rb");
	text = slurp(path);
	assert_int_equal(count_lines(text), 3);
	assert_null(strchr(text, '\x1b'));
	assert_null(strchr(text, '\r'));
	assert_null(strchr(text, '\x07'));
	assert_non_null(strstr(text, "initialize ended: bye\\x0a2026-01-01T"));
	assert_non_null(strstr(text, "\\x1b]0;pwned\\x07\n"));
	/* Long messages are written whole, escaped to the end. */
	assert_non_null(strstr(text, "xxxx\\x0a end\n"));
	assert_non_null(strstr(text, "open \"a\\x0db\": "));
	free(text);
	unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escape),
	    cmocka_unit_test(test_escape_truncates_whole_escapes),
	    cmocka_unit_test(test_sink_escapes_peer_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
