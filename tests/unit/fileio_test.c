/*
 * fileio: whole files, bounded; empty, exact, one over, growing past the
 * first allocation, a wrong size hint, and read errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/fileio.h"

/* A pipe holding len bytes of a pattern, for reading as a file. */
static int
feed(size_t len)
{
	int p[2];
	size_t i;
	char c;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(fcntl(p[1], F_SETPIPE_SZ, 1024 * 1024) > 0, 1);
	for (i = 0; i < len; i++) {
		c = (char)('a' + i % 26);
		assert_int_equal(write(p[1], &c, 1), 1);
	}
	close(p[1]);
	return p[0];
}

static void
check(size_t len, size_t max, size_t hint, int flags, int want)
{
	char *buf = (char *)0x1;
	size_t n = 12345, i;
	int fd = feed(len), rc;

	rc = fileio_read_fd(fd, max, hint, flags, &buf, &n);
	close(fd);
	assert_int_equal(rc, want);
	if (want != 0) {
		/* Out-params untouched on failure. */
		assert_ptr_equal(buf, (char *)0x1);
		assert_int_equal(n, 12345);
		return;
	}
	assert_int_equal(n, len);
	assert_int_equal(buf[len], '\0');
	for (i = 0; i < len; i++)
		assert_int_equal(buf[i], (char)('a' + i % 26));
	fileio_free(buf, n, flags);
}

static void
test_sizes(void **state)
{
	(void)state;
	check(0, 100, 0, 0, 0);
	check(1, 100, 0, 0, 0);
	check(100, 100, 0, 0, 0);
	check(101, 100, 0, 0, -EFBIG);
	check(100000, 200000, 0, 0, 0); /* grows past the first 8 KiB */
	check(100000, 200000, 10, FILEIO_SECRET, 0); /* hint too small */
	check(100, 200000, 99999, 0, 0);             /* hint too large */
	check(8191, 8192, 0, FILEIO_SECRET, 0);
	check(8193, 8192, 0, FILEIO_SECRET, -EFBIG);
	check(0, 0, 0, 0, 0);
	check(1, 0, 0, 0, -EFBIG);
}

static void
test_read_error(void **state)
{
	char *buf = NULL;
	size_t n = 0;
	int fd = open("/", O_RDONLY | O_DIRECTORY);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(fileio_read_fd(fd, 100, 0, 0, &buf, &n), -EISDIR);
	assert_null(buf);
	close(fd);
	assert_int_equal(fileio_read_fd(-1, 100, 0, 0, &buf, &n), -EBADF);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sizes),
	    cmocka_unit_test(test_read_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
