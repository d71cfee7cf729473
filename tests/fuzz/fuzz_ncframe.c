/*
 * Fuzzes the NETCONF framer of operator input (ncframe.c) and its
 * operation-name scanner.  Checks the promise of ncframe.h: the messages
 * handed out, concatenated, are exactly the operator bytes, in order, and
 * no byte after an error is ever part of a message.
 *
 * Input: four control bytes, then the operator's stream.
 *   byte 0: bits 0-1 the device's hello: 0 none, 1 base:1.0, 2 base:1.1,
 *           3 the last (byte 3) bytes of the stream are the device's
 *           output instead; bit 2 a small message limit (256 bytes);
 *           bit 3 no EOF at the end
 *   byte 1: read size (0: all at once)
 *   byte 2: reads of operator input before the device output is shown
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "server/ncframe.h"

static const char fz_hello10[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">"
    "<capabilities><capability>urn:ietf:params:netconf:base:1.0"
    "</capability></capabilities><session-id>1</session-id></hello>"
    "]]>]]>";
static const char fz_hello11[] =
    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">"
    "<capabilities><capability>urn:ietf:params:netconf:base:1.0"
    "</capability><capability>urn:ietf:params:netconf:base:1.1"
    "</capability></capabilities><session-id>7</session-id></hello>"
    "]]>]]>";

struct fz_state {
	struct ncframe s_f;
	const uint8_t *s_op; /* the operator's bytes */
	size_t s_out;        /* of which handed out as messages so far */
	int s_err;
};

static void
check_name(const uint8_t *msg, size_t len)
{
	char name[64];
	size_t i;

	memset(name, 'x', sizeof(name));
	if (ncframe_op_name(msg, len, name, sizeof(name)) != 0)
		return;
	for (i = 0; name[i] != '\0'; i++) {
		char c = name[i];

		FUZZ_CHECK(i < sizeof(name));
		FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		           c == '.');
	}
}

/* Takes every message ready and checks it against the input. */
static void
drain(struct fz_state *s, size_t fed)
{
	const uint8_t *msg;
	size_t len;
	int rc;

	while ((rc = ncframe_next(&s->s_f, &msg, &len)) == 1) {
		FUZZ_CHECK(s->s_err == 0);
		FUZZ_CHECK(len > 0);
		FUZZ_CHECK(s->s_out + len <= fed);
		FUZZ_CHECK(memcmp(msg, s->s_op + s->s_out, len) == 0);
		s->s_out += len;
		check_name(msg, len);
	}
	if (rc < 0) {
		FUZZ_CHECK(rc == -EMSGSIZE || rc == -EPROTO || rc == -ENOMEM);
		FUZZ_CHECK(s->s_err == 0 || s->s_err == rc);
		s->s_err = rc;
	} else
		FUZZ_CHECK(rc == 0);
	FUZZ_CHECK(ncframe_pending(&s->s_f) <= fed - s->s_out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_state s;
	const uint8_t *dev = NULL;
	size_t devlen = 0, chunk, off, n, reads = 0;
	unsigned flags, devafter;
	int shown = 0, rc;

	if (size < 4)
		return 0;
	flags = data[0];
	chunk = data[1];
	devafter = data[2];
	n = data[3];
	data += 4;
	size -= 4;
	check_name(data, size);
	switch (flags & 3) {
	case 1:
		dev = (const uint8_t *)fz_hello10;
		devlen = sizeof(fz_hello10) - 1;
		break;
	case 2:
		dev = (const uint8_t *)fz_hello11;
		devlen = sizeof(fz_hello11) - 1;
		break;
	case 3:
		devlen = n < size ? n : size;
		size -= devlen;
		dev = data + size;
		break;
	default:
		break;
	}
	if (chunk == 0)
		chunk = size > 0 ? size : 1;

	memset(&s, 0, sizeof(s));
	s.s_op = data;
	ncframe_init(&s.s_f, (flags & 4) ? 256 : 0);
	for (off = 0; off < size; off += n) {
		n = size - off < chunk ? size - off : chunk;
		rc = ncframe_feed(&s.s_f, data + off, n);
		FUZZ_CHECK(rc == 0 || rc == -EMSGSIZE || rc == -EPROTO ||
		           rc == -ENOMEM);
		drain(&s, off + n);
		if (++reads == devafter && dev != NULL) {
			ncframe_observe_device(&s.s_f, dev, devlen);
			shown = 1;
			drain(&s, off + n);
		}
	}
	if (!(flags & 8)) {
		rc = ncframe_eof(&s.s_f);
		FUZZ_CHECK(rc == 0 || rc == -EMSGSIZE || rc == -EPROTO ||
		           rc == -ENOMEM);
		FUZZ_CHECK(ncframe_feed(&s.s_f, data, size) == -EINVAL ||
		           s.s_err != 0 || rc != 0);
		drain(&s, size);
	}
	if (!shown && dev != NULL) {
		/* The device's output may come in pieces too. */
		for (off = 0; off < devlen; off += n) {
			n = devlen - off < chunk ? devlen - off : chunk;
			ncframe_observe_device(&s.s_f, dev + off, n);
		}
		drain(&s, size);
	}
	FUZZ_CHECK(ncframe_mode(&s.s_f) >= NCFRAME_UNDECIDED &&
	           ncframe_mode(&s.s_f) <= NCFRAME_CHUNKED);
	ncframe_free(&s.s_f);
	return 0;
}
