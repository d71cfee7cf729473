#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"

static void
test_append_consume(void **state)
{
	struct buf b;
	uint8_t big[1000];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	buf_init(&b, 0);
	assert_int_equal(buf_len(&b), 0);
	for (i = 0; i < 100; i++)
		assert_int_equal(buf_append(&b, big, sizeof(big)), 0);
	assert_int_equal(buf_len(&b), 100000);
	buf_consume(&b, 999);
	assert_int_equal(buf_len(&b), 100000 - 999);
	assert_int_equal(buf_data(&b)[0], (uint8_t)999);
	/* A consumed head is reused before the buffer grows. */
	assert_int_equal(buf_append(&b, big, 10), 0);
	assert_int_equal(buf_data(&b)[buf_len(&b) - 1], 9);
	buf_consume(&b, buf_len(&b) + 5);
	assert_int_equal(buf_len(&b), 0);
	buf_free(&b);
}

static void
test_limit(void **state)
{
	struct buf b;
	uint8_t x[64] = {0};

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(buf_append(&b, x, 64), 0);
	assert_int_equal(buf_append(&b, x, 37), -ENOBUFS);
	assert_int_equal(buf_len(&b), 64);
	assert_int_equal(buf_append(&b, x, 36), 0);
	assert_int_equal(buf_len(&b), 100);
	assert_true(b.b_cap <= 100);
	buf_consume(&b, 50);
	assert_int_equal(buf_append(&b, x, 50), 0);
	assert_int_equal(buf_append(&b, x, 1), -ENOBUFS);
	buf_free(&b);
}

/* Writing in place: reserve, write at the tail, commit what was written. */
static void
test_tail_commit(void **state)
{
	struct buf b;
	int i;

	(void)state;
	buf_init(&b, 1000);
	assert_int_equal(buf_append(&b, "ab", 2), 0);
	assert_int_equal(buf_reserve(&b, 10), 0);
	memcpy(buf_tail(&b), "cdefghijkl", 10);
	buf_commit(&b, 4); /* only part of what was reserved */
	assert_int_equal(buf_len(&b), 6);
	assert_memory_equal(buf_data(&b), "abcdef", 6);
	/* After a consume, a reserve may compact: the bytes stay in order. */
	buf_consume(&b, 5);
	for (i = 0; i < 50; i++) {
		assert_int_equal(buf_reserve(&b, 19), 0);
		memset(buf_tail(&b), 'a' + i % 26, 19);
		buf_commit(&b, 19);
	}
	assert_int_equal(buf_len(&b), 1 + 50 * 19);
	assert_int_equal(buf_data(&b)[0], 'f');
	assert_int_equal(buf_data(&b)[1], 'a');
	assert_int_equal(buf_data(&b)[1 + 49 * 19], 'a' + 49 % 26);
	/* The limit holds for reserves too. */
	assert_int_equal(buf_reserve(&b, 1000), -ENOBUFS);
	assert_int_equal(buf_len(&b), 1 + 50 * 19);
	buf_free(&b);
}

/*
 * An empty queue that never allocated must not compute NULL + 0 (UBSan:
 * "applying zero offset to null pointer"), and its data pointer must be
 * usable as a memcpy() source of 0 bytes.
 */
static void
test_empty_data(void **state)
{
	struct buf b;
	uint8_t dst[1] = {7};

	(void)state;
	buf_init(&b, 0);
	assert_non_null(buf_data(&b));
	memcpy(dst, buf_data(&b), buf_len(&b));
	assert_int_equal(dst[0], 7);
	assert_int_equal(buf_append(&b, dst, 1), 0);
	buf_consume(&b, 1);
	assert_non_null(buf_data(&b));
	buf_free(&b);
	assert_non_null(buf_data(&b));
}

static void
test_strerror(void **state)
{
	(void)state;
	assert_string_equal(ncg_strerror(0), "success");
	assert_non_null(strstr(ncg_strerror(NCG_ETLS_NAME), "name mismatch"));
	assert_non_null(
	    strstr(ncg_strerror(NCG_ETLS_UNKNOWN_CA), "unknown ca"));
	assert_string_equal(ncg_strerror(-ENOMEM), strerror(ENOMEM));
	assert_string_equal(ncg_strerror(NCG_EBASE), "unknown error");
	assert_string_equal(ncg_strerror(12345), "unknown error");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_append_consume),
	    cmocka_unit_test(test_limit),
	    cmocka_unit_test(test_tail_commit),
	    cmocka_unit_test(test_empty_data),
	    cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
