#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/grpc_frame.h"

/* Small enough that every 2-way split of the stream is cheap to try. */
#define TEST_MAX 1000

/* Message sizes in the test stream: empties, odd sizes and the maximum. */
static const size_t sizes[] = {0, 1, 5, 0, 300, TEST_MAX, 0, 2, TEST_MAX};
#define NMSG (sizeof(sizes) / sizeof(sizes[0]))

struct stream {
	uint8_t *data;
	size_t len;
	size_t off[NMSG]; /* where each body starts in data */
};

/* Body byte j of message i: distinct per message so mixups show. */
static uint8_t
body_byte(size_t i, size_t j)
{
	return (uint8_t)(i * 31 + j * 7 + 1);
}

static void
stream_build(struct stream *st)
{
	size_t i, j, o = 0, total = 0;

	for (i = 0; i < NMSG; i++)
		total += GRPC_FRAME_HDR_LEN + sizes[i];
	st->data = malloc(total);
	assert_non_null(st->data);
	for (i = 0; i < NMSG; i++) {
		grpc_frame_header(st->data + o, (uint32_t)sizes[i]);
		o += GRPC_FRAME_HDR_LEN;
		st->off[i] = o;
		for (j = 0; j < sizes[i]; j++)
			st->data[o++] = body_byte(i, j);
	}
	st->len = o;
	assert_int_equal(o, total);
}

/* Checks a taken message against the next expected one and frees it. */
static void
check_take(struct grpc_deframer *d, const struct stream *st, size_t *nmsg)
{
	uint8_t *msg = NULL;
	size_t len = 12345;

	assert_int_equal(grpc_deframer_take(d, &msg, &len), 1);
	assert_true(*nmsg < NMSG);
	assert_non_null(msg);
	assert_int_equal(len, sizes[*nmsg]);
	assert_memory_equal(msg, st->data + st->off[*nmsg], len);
	free(msg);
	(*nmsg)++;
	assert_int_equal(grpc_deframer_take(d, &msg, &len), 0);
}

/*
 * Feeds one chunk the way a caller must: take each message as it
 * completes, then feed the rest of the chunk.
 */
static void
feed_chunk(struct grpc_deframer *d, const struct stream *st, const uint8_t *p,
           size_t len, size_t *nmsg)
{
	ssize_t r;

	while (len > 0) {
		r = grpc_deframer_feed(d, p, len);
		assert_true(r >= 0);
		assert_true((size_t)r <= len);
		if (d->df_complete) {
			/* Untaken message: nothing more goes in. */
			if (len > (size_t)r)
				assert_int_equal(grpc_deframer_feed(
				                     d, p + r, len - (size_t)r),
				                 0);
			check_take(d, st, nmsg);
		} else
			assert_int_equal((size_t)r, len);
		p += r;
		len -= (size_t)r;
	}
	assert_false(d->df_complete);
}

/* Feeds st split at the given points (ascending) and checks the result. */
static void
run_split(const struct stream *st, const size_t *cuts, size_t ncuts)
{
	struct grpc_deframer d;
	size_t nmsg = 0, prev = 0, i, end;

	grpc_deframer_init(&d, TEST_MAX);
	for (i = 0; i <= ncuts; i++) {
		end = i < ncuts ? cuts[i] : st->len;
		feed_chunk(&d, st, st->data + prev, end - prev, &nmsg);
		prev = end;
	}
	assert_int_equal(nmsg, NMSG);
	assert_false(grpc_deframer_partial(&d));
	assert_null(d.df_msg);
	grpc_deframer_free(&d);
}

static void
test_whole(void **state)
{
	struct stream st;

	(void)state;
	stream_build(&st);
	run_split(&st, NULL, 0);
	free(st.data);
}

static void
test_byte_by_byte(void **state)
{
	struct grpc_deframer d;
	struct stream st;
	size_t i, nmsg = 0;

	(void)state;
	stream_build(&st);
	grpc_deframer_init(&d, TEST_MAX);
	for (i = 0; i < st.len; i++) {
		assert_int_equal(grpc_deframer_feed(&d, st.data + i, 1), 1);
		if (d.df_complete)
			check_take(&d, &st, &nmsg);
		else
			assert_true(d.df_msg_cap <= TEST_MAX);
	}
	assert_int_equal(nmsg, NMSG);
	assert_false(grpc_deframer_partial(&d));
	grpc_deframer_free(&d);
	free(st.data);
}

static void
test_every_two_way_split(void **state)
{
	struct stream st;
	size_t cut;

	(void)state;
	stream_build(&st);
	for (cut = 0; cut <= st.len; cut++)
		run_split(&st, &cut, 1);
	free(st.data);
}

/* A fixed-seed generator, so a failure reproduces on every machine. */
static uint32_t
xorshift32(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void
test_random_splits(void **state)
{
	struct stream st;
	size_t cuts[64], ncuts, i, j, t;
	uint32_t seed = 0x9e3779b9u;
	int round;

	(void)state;
	stream_build(&st);
	for (round = 0; round < 2000; round++) {
		ncuts = xorshift32(&seed) % 64;
		for (i = 0; i < ncuts; i++)
			cuts[i] = xorshift32(&seed) % (st.len + 1);
		/* Insertion sort: the cuts must ascend; repeats are fine. */
		for (i = 1; i < ncuts; i++)
			for (j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
				t = cuts[j];
				cuts[j] = cuts[j - 1];
				cuts[j - 1] = t;
			}
		run_split(&st, cuts, ncuts);
	}
	free(st.data);
}

static void
test_stop_after_complete(void **state)
{
	struct grpc_deframer d;
	uint8_t buf[2 * GRPC_FRAME_HDR_LEN + 3 + 2], *msg;
	size_t len;

	(void)state;
	grpc_frame_header(buf, 3);
	memcpy(buf + 5, "abc", 3);
	grpc_frame_header(buf + 8, 2);
	memcpy(buf + 13, "de", 2);

	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 0);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)), 8);
	assert_false(grpc_deframer_partial(&d));
	/* The first message is untaken, so nothing more is accepted. */
	assert_int_equal(grpc_deframer_feed(&d, buf + 8, sizeof(buf) - 8), 0);
	assert_int_equal(grpc_deframer_feed(&d, buf + 8, sizeof(buf) - 8), 0);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 1);
	assert_int_equal(len, 3);
	assert_memory_equal(msg, "abc", 3);
	free(msg);

	assert_int_equal(grpc_deframer_feed(&d, buf + 8, sizeof(buf) - 8), 7);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 1);
	assert_int_equal(len, 2);
	assert_memory_equal(msg, "de", 2);
	free(msg);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 0);
	assert_int_equal(grpc_deframer_feed(&d, NULL, 0), 0);
	grpc_deframer_free(&d);
}

static void
test_empty_message(void **state)
{
	struct grpc_deframer d;
	uint8_t hdr[GRPC_FRAME_HDR_LEN], *msg = NULL;
	size_t len = 99;

	(void)state;
	grpc_frame_header(hdr, 0);
	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_feed(&d, hdr, 4), 4);
	assert_true(grpc_deframer_partial(&d));
	assert_int_equal(grpc_deframer_feed(&d, hdr + 4, 1), 1);
	assert_false(grpc_deframer_partial(&d));
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 1);
	assert_non_null(msg);
	assert_int_equal(len, 0);
	free(msg);
	grpc_deframer_free(&d);
}

static void
test_too_big(void **state)
{
	struct grpc_deframer d;
	uint8_t hdr[GRPC_FRAME_HDR_LEN], *msg;
	size_t len;

	(void)state;
	/* Exactly the maximum is fine; one more is not. */
	grpc_deframer_init(&d, 10);
	grpc_frame_header(hdr, 10);
	assert_int_equal(grpc_deframer_feed(&d, hdr, sizeof(hdr)), 5);
	grpc_deframer_free(&d);

	grpc_deframer_init(&d, 10);
	grpc_frame_header(hdr, 11);
	assert_int_equal(grpc_deframer_feed(&d, hdr, sizeof(hdr)), -EMSGSIZE);
	assert_null(d.df_msg);
	/* Sticky. */
	grpc_frame_header(hdr, 1);
	assert_int_equal(grpc_deframer_feed(&d, hdr, sizeof(hdr)), -EMSGSIZE);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 0);
	grpc_deframer_free(&d);

	/* One over 1 GiB would make an up-front allocation obvious. */
	grpc_deframer_init(&d, 1u << 30);
	grpc_frame_header(hdr, (1u << 30) + 1);
	assert_int_equal(grpc_deframer_feed(&d, hdr, sizeof(hdr)), -EMSGSIZE);
	assert_null(d.df_msg);
	assert_int_equal(d.df_msg_cap, 0);
	grpc_deframer_free(&d);
}

static void
test_grows_as_bytes_arrive(void **state)
{
	struct grpc_deframer d;
	uint8_t buf[GRPC_FRAME_HDR_LEN + 10];
	size_t i;

	(void)state;
	memset(buf, 'x', sizeof(buf));
	grpc_frame_header(buf, GRPC_DEFAULT_MAX_MESSAGE);
	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)), sizeof(buf));
	assert_true(grpc_deframer_partial(&d));
	assert_int_equal(d.df_msg_len, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(d.df_msg_have, 10);
	assert_true(d.df_msg_cap >= 10 && d.df_msg_cap <= 1024);

	/* Growth stays proportional to what arrived. */
	for (i = 0; i < 100; i++)
		assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)),
		                 sizeof(buf));
	assert_int_equal(d.df_msg_have, 10 + 100 * sizeof(buf));
	assert_true(d.df_msg_cap <= 2 * d.df_msg_have + 256);
	grpc_deframer_free(&d);
	assert_null(d.df_msg);
	assert_int_equal(d.df_max, GRPC_DEFAULT_MAX_MESSAGE);
}

static void
test_high_bit_length(void **state)
{
	struct grpc_deframer d;
	uint8_t buf[GRPC_FRAME_HDR_LEN + 10] = {0, 0x80, 0, 0, 0};

	(void)state;
	/* Read as unsigned: 2 GiB, far over the default limit. */
	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)), -EMSGSIZE);
	grpc_deframer_free(&d);

	/* With no practical limit it is accepted and still costs little. */
	grpc_deframer_init(&d, SIZE_MAX);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)), sizeof(buf));
	assert_int_equal(d.df_msg_len, 0x80000000u);
	assert_true(d.df_msg_cap <= 1024);
	assert_true(grpc_deframer_partial(&d));
	grpc_deframer_free(&d);

	buf[1] = 0xff;
	buf[2] = 0xff;
	buf[3] = 0xff;
	buf[4] = 0xff;
	grpc_deframer_init(&d, SIZE_MAX);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)), sizeof(buf));
	assert_int_equal(d.df_msg_len, 0xffffffffu);
	grpc_deframer_free(&d);
}

/*
 * grpc_deframer_whole(): a message that lies whole in the input is handed
 * over in place; everything else is left to feed(), which still reports
 * what is wrong.
 */
static void
test_whole_in_place(void **state)
{
	struct grpc_deframer d;
	/* "abc", an empty message, and "xy". */
	uint8_t two[] = {0, 0, 0, 0, 3, 'a', 'b', 'c', 0,   0,
	                 0, 0, 0, 0, 0, 0,   0,   2,   'x', 'y'};
	uint8_t bad[] = {1, 0, 0, 0, 1, 'a'};
	uint8_t big[] = {0,   0,   0,   0,   9,   'a', 'b',
	                 'c', 'd', 'e', 'f', 'g', 'h', 'i'};
	const uint8_t *msg;
	uint8_t *got;
	size_t mlen, len;

	(void)state;
	grpc_deframer_init(&d, 8);
	/* "abc", then an empty message: both in place. */
	assert_int_equal(grpc_deframer_whole(&d, two, sizeof(two), &msg, &mlen),
	                 8);
	assert_ptr_equal(msg, two + 5);
	assert_int_equal(mlen, 3);
	assert_int_equal(grpc_deframer_whole(&d, two + 8, 5, &msg, &mlen), 5);
	assert_ptr_equal(msg, two + 13);
	assert_int_equal(mlen, 0);
	/* Cut by the end of the input: 0, and feed() takes it in pieces. */
	assert_int_equal(grpc_deframer_whole(&d, two + 13, 6, &msg, &mlen), 0);
	assert_int_equal(grpc_deframer_whole(&d, two + 13, 4, &msg, &mlen), 0);
	assert_int_equal(grpc_deframer_feed(&d, two + 13, 6), 6);
	/* In the middle of a message: 0, even with a whole one after it. */
	assert_int_equal(grpc_deframer_whole(&d, two, sizeof(two), &msg, &mlen),
	                 0);
	assert_int_equal(grpc_deframer_feed(&d, two + 19, 1), 1);
	assert_int_equal(grpc_deframer_take(&d, &got, &len), 1);
	assert_int_equal(len, 2);
	assert_memory_equal(got, "xy", 2);
	free(got);
	/* Over the maximum (8), or a bad flag: 0 here, the error in feed(). */
	assert_int_equal(grpc_deframer_whole(&d, big, sizeof(big), &msg, &mlen),
	                 0);
	assert_int_equal(grpc_deframer_whole(&d, bad, sizeof(bad), &msg, &mlen),
	                 0);
	assert_int_equal(grpc_deframer_feed(&d, big, sizeof(big)), -EMSGSIZE);
	/* The error is sticky here too. */
	assert_int_equal(grpc_deframer_whole(&d, two, sizeof(two), &msg, &mlen),
	                 -EMSGSIZE);
	grpc_deframer_free(&d);
	grpc_deframer_init(&d, 8);
	assert_int_equal(grpc_deframer_whole(&d, bad, sizeof(bad), &msg, &mlen),
	                 0);
	assert_int_equal(grpc_deframer_feed(&d, bad, sizeof(bad)),
	                 -EPROTONOSUPPORT);
	grpc_deframer_free(&d);
}

static void
test_flags(void **state)
{
	struct grpc_deframer d;
	uint8_t buf[GRPC_FRAME_HDR_LEN + 1] = {1, 0, 0, 0, 1, 'a'};
	uint8_t ok[GRPC_FRAME_HDR_LEN + 1] = {0, 0, 0, 0, 1, 'a'};
	uint8_t *msg;
	size_t len;
	int flag;

	(void)state;
	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)),
	                 -EPROTONOSUPPORT);
	assert_int_equal(grpc_deframer_feed(&d, ok, sizeof(ok)),
	                 -EPROTONOSUPPORT);
	assert_int_equal(grpc_deframer_feed(&d, NULL, 0), -EPROTONOSUPPORT);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 0);
	grpc_deframer_free(&d);

	for (flag = 2; flag <= 255; flag++) {
		buf[0] = (uint8_t)flag;
		grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
		/* The flag byte alone is enough to tell. */
		assert_int_equal(grpc_deframer_feed(&d, buf, 1), -EPROTO);
		assert_int_equal(grpc_deframer_feed(&d, ok, sizeof(ok)),
		                 -EPROTO);
		assert_int_equal(grpc_deframer_take(&d, &msg, &len), 0);
		grpc_deframer_free(&d);
	}

	/* A bad flag after a good message still fails, and sticks. */
	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_feed(&d, ok, sizeof(ok)), sizeof(ok));
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 1);
	free(msg);
	buf[0] = 1;
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)),
	                 -EPROTONOSUPPORT);
	assert_int_equal(grpc_deframer_feed(&d, ok, sizeof(ok)),
	                 -EPROTONOSUPPORT);
	grpc_deframer_free(&d);
}

static void
test_partial(void **state)
{
	struct grpc_deframer d;
	uint8_t buf[GRPC_FRAME_HDR_LEN + 4], *msg;
	size_t len, i;

	(void)state;
	grpc_frame_header(buf, 4);
	memcpy(buf + 5, "wxyz", 4);
	/* Every truncation point short of the end leaves a partial message. */
	for (i = 0; i <= sizeof(buf); i++) {
		grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
		assert_false(grpc_deframer_partial(&d));
		assert_int_equal(grpc_deframer_feed(&d, buf, i), (ssize_t)i);
		if (i == 0 || i == sizeof(buf))
			assert_false(grpc_deframer_partial(&d));
		else
			assert_true(grpc_deframer_partial(&d));
		assert_int_equal(grpc_deframer_take(&d, &msg, &len),
		                 i == sizeof(buf));
		if (i == sizeof(buf)) {
			assert_memory_equal(msg, "wxyz", 4);
			free(msg);
		}
		grpc_deframer_free(&d);
	}
}

static void
test_header(void **state)
{
	struct grpc_deframer d;
	uint8_t hdr[GRPC_FRAME_HDR_LEN], *body, *msg;
	size_t len, i;

	(void)state;
	grpc_frame_header(hdr, 0x01020304);
	assert_memory_equal(hdr, "\x00\x01\x02\x03\x04", 5);
	grpc_frame_header(hdr, 0xffffffff);
	assert_memory_equal(hdr, "\x00\xff\xff\xff\xff", 5);
	grpc_frame_header(hdr, 0);
	assert_memory_equal(hdr, "\x00\x00\x00\x00\x00", 5);

	/* Round trip a message whose length uses three bytes. */
	body = malloc(70000);
	assert_non_null(body);
	for (i = 0; i < 70000; i++)
		body[i] = (uint8_t)(i * 13);
	grpc_frame_header(hdr, 70000);
	assert_memory_equal(hdr, "\x00\x00\x01\x11\x70", 5);
	grpc_deframer_init(&d, GRPC_DEFAULT_MAX_MESSAGE);
	assert_int_equal(grpc_deframer_feed(&d, hdr, 5), 5);
	assert_int_equal(grpc_deframer_feed(&d, body, 70000), 70000);
	assert_int_equal(grpc_deframer_take(&d, &msg, &len), 1);
	assert_int_equal(len, 70000);
	assert_memory_equal(msg, body, 70000);
	free(msg);
	free(body);
	grpc_deframer_free(&d);
}

static void
test_free_midway(void **state)
{
	struct grpc_deframer d;
	uint8_t buf[GRPC_FRAME_HDR_LEN + 3] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};

	(void)state;
	/* Freeing with a message untaken or half-built must not leak. */
	grpc_deframer_init(&d, 100);
	assert_int_equal(grpc_deframer_feed(&d, buf, sizeof(buf)), sizeof(buf));
	assert_true(d.df_complete);
	grpc_deframer_free(&d);
	assert_null(d.df_msg);
	assert_false(d.df_complete);

	grpc_deframer_init(&d, 100);
	assert_int_equal(grpc_deframer_feed(&d, buf, 6), 6);
	grpc_deframer_free(&d);
	assert_null(d.df_msg);
	assert_int_equal(d.df_max, 100);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whole),
	    cmocka_unit_test(test_byte_by_byte),
	    cmocka_unit_test(test_every_two_way_split),
	    cmocka_unit_test(test_random_splits),
	    cmocka_unit_test(test_stop_after_complete),
	    cmocka_unit_test(test_empty_message),
	    cmocka_unit_test(test_too_big),
	    cmocka_unit_test(test_grows_as_bytes_arrive),
	    cmocka_unit_test(test_high_bit_length),
	    cmocka_unit_test(test_flags),
	    cmocka_unit_test(test_whole_in_place),
	    cmocka_unit_test(test_partial),
	    cmocka_unit_test(test_header),
	    cmocka_unit_test(test_free_midway),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
