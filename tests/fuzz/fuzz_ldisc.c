/*
 * Fuzzes ncgrpc-sshd's line discipline (src/sshd/ldisc.c): input split at
 * every byte value 0xff (a chunk boundary, so CRLF and escape sequences
 * are cut everywhere), with the properties a device relies on: each line
 * ends with its only "\n" and fits the limit, nothing follows end of input.
 */
#include <string.h>

#include "fuzz.h"
#include "sshd/ldisc.h"

struct sink {
	int eof;
	size_t lines;
};

static void
f_echo(void *arg, const void *data, size_t len)
{
	(void)arg;
	(void)data;
	FUZZ_CHECK(len > 0 && len <= 4);
}

static void
f_line(void *arg, const void *data, size_t len)
{
	struct sink *s = arg;

	FUZZ_CHECK(!s->eof);
	FUZZ_CHECK(len >= 1 && len <= LDISC_MAX_LINE + 1);
	FUZZ_CHECK(((const char *)data)[len - 1] == '\n');
	FUZZ_CHECK(memchr(data, '\n', len - 1) == NULL);
	FUZZ_CHECK(memchr(data, '\r', len) == NULL);
	s->lines++;
}

static void
f_signal(void *arg, int signum)
{
	FUZZ_CHECK(!((struct sink *)arg)->eof);
	FUZZ_CHECK(signum == 2);
}

static void
f_eof(void *arg)
{
	struct sink *s = arg;

	FUZZ_CHECK(!s->eof);
	s->eof = 1;
}

static const struct ldisc_ops fops = {f_echo, f_line, f_signal, f_eof};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ldisc ld;
	struct sink s = {0, 0};
	const uint8_t *p = data, *cut;
	static uint8_t out[2 * 4096];
	size_t n;
	int cr = 0;

	ldisc_init(&ld, &fops, &s);
	while (p < data + size) {
		cut = memchr(p, 0xff, (size_t)(data + size - p));
		n = (cut != NULL ? (size_t)(cut - p)
		                 : (size_t)(data + size - p));
		ldisc_input(&ld, p, n);
		p += n + (cut != NULL);
	}
	n = size < 4096 ? size : 4096;
	FUZZ_CHECK(ldisc_output(data, n, out, &cr) <= 2 * n);
	return 0;
}
