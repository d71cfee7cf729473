/*
 * Fuzzes the gRPC message deframer (grpc_frame.c) as grpc_*.c drives it:
 * input arrives in pieces of any size and each complete message is taken
 * before more is fed.  Every message taken must be exactly the bytes its
 * 5-byte prefix announced, and the input consumed must be exactly the
 * prefixes and messages handed out (plus a partial one at the end).
 *
 * Input: two control bytes, then the stream.  Byte 0 picks the size limit
 * (0, 1, 64, 1024, 64 KiB, 4 MiB ...) with its low 7 bits, and with its top
 * bit has each piece offered to grpc_deframer_whole() first, as
 * grpc_call.c does: a message whole in the piece must be handed over in
 * place, at a message boundary, exactly as feed() would have given it;
 * byte 1 the piece size (0: all at once).
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "grpc_frame.h"

static const size_t fz_limits[] = {
    0, 1, 5, 64, 1024, 65536, GRPC_DEFAULT_MAX_MESSAGE,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct grpc_deframer d;
	size_t max, chunk, off = 0, pos = 0, len, n;
	const uint8_t *inplace;
	uint8_t *msg;
	ssize_t got;
	int error = 0, whole;

	if (size < 2)
		return 0;
	whole = data[0] & 0x80;
	max = fz_limits[(data[0] & 0x7f) %
	                (sizeof(fz_limits) / sizeof(fz_limits[0]))];
	chunk = data[1];
	data += 2;
	size -= 2;
	if (chunk == 0)
		chunk = size > 0 ? size : 1;

	grpc_deframer_init(&d, max);
	while (off < size) {
		n = size - off < chunk ? size - off : chunk;
		if (whole && (got = grpc_deframer_whole(&d, data + off, n,
		                                        &inplace, &len)) > 0) {
			const uint8_t *h = data + off;

			FUZZ_CHECK(off == pos);
			FUZZ_CHECK((size_t)got == GRPC_FRAME_HDR_LEN + len);
			FUZZ_CHECK((size_t)got <= n);
			FUZZ_CHECK(h[0] == 0 && len <= max);
			FUZZ_CHECK(((size_t)h[1] << 24 | (size_t)h[2] << 16 |
			            (size_t)h[3] << 8 | h[4]) == len);
			FUZZ_CHECK(inplace == h + GRPC_FRAME_HDR_LEN);
			FUZZ_CHECK(!grpc_deframer_partial(&d));
			off += (size_t)got;
			pos += (size_t)got;
			continue;
		}
		FUZZ_CHECK(!whole || got == 0);
		got = grpc_deframer_feed(&d, data + off, n);
		if (got < 0) {
			FUZZ_CHECK(got == -EMSGSIZE ||
			           got == -EPROTONOSUPPORT || got == -EPROTO ||
			           got == -ENOMEM);
			/* Sticky. */
			FUZZ_CHECK(grpc_deframer_feed(&d, data + off, n) ==
			           got);
			error = 1;
			break;
		}
		FUZZ_CHECK((size_t)got <= n);
		off += (size_t)got;
		if (grpc_deframer_take(&d, &msg, &len)) {
			const uint8_t *h = data + pos;

			/* The prefix in the input says what we were given. */
			FUZZ_CHECK(pos + GRPC_FRAME_HDR_LEN + len <= off);
			FUZZ_CHECK(h[0] == 0);
			FUZZ_CHECK(((size_t)h[1] << 24 | (size_t)h[2] << 16 |
			            (size_t)h[3] << 8 | h[4]) == len);
			FUZZ_CHECK(len <= max);
			FUZZ_CHECK(msg != NULL);
			FUZZ_CHECK(len == 0 ||
			           memcmp(msg, h + GRPC_FRAME_HDR_LEN, len) ==
			               0);
			pos += GRPC_FRAME_HDR_LEN + len;
			free(msg);
			FUZZ_CHECK(!grpc_deframer_take(&d, &msg, &len));
		} else if (got == 0) {
			/* No progress and nothing to take cannot happen. */
			FUZZ_CHECK(n == 0);
			break;
		}
	}
	if (!error) {
		FUZZ_CHECK(off == size);
		FUZZ_CHECK(grpc_deframer_partial(&d) == (pos < size));
	}
	grpc_deframer_free(&d);
	return 0;
}
