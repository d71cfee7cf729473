/*
 * Throughput of utf8_valid() and utf8_sanitize() on shell-like output
 * (mostly ASCII, some multibyte characters, CRLF line ends), next to
 * memcpy() of the same bytes as the floor.  Then the agent's work per
 * 16 KiB chunk of output before it is packed (src/agent/session.c,
 * send_output()): staged (a copy into in[], then utf8_sanitize() into
 * clean[]) against checked in place (utf8_valid()).  Built and run by
 * bench/bench_utf8.sh, which also builds the same program against an older
 * utf8.c so that both are measured in one sitting.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "utf8.h"

#define SIZE   (16 * 1024 * 1024)
#define ROUNDS 8
#define CHUNK  (16 * 1024) /* SESSION_CHUNK */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Lines of `ls -l`-like text with an accented name now and then. */
static void
fill(uint8_t *p, size_t len)
{
	static const char *words[] = {
	    "-rw-r--r-- 1 root root  4096 Dec  4 21:36 ", "config.xml",
	    "caf\xc3\xa9.txt", "\xe2\x94\x80\xe2\x94\x80 tree", "\r\n"};
	uint32_t seed = 1;
	size_t i = 0, n;
	const char *w;

	while (i < len) {
		seed = seed * 1103515245 + 12345;
		w = words[(seed >> 16) % 5];
		n = strlen(w);
		if (n > len - i)
			n = len - i;
		memcpy(p + i, w, n);
		i += n;
	}
	/* The fill may cut a character at the end; keep it whole. */
	p[len - 1] = '\n';
	p[len - 2] = '\r';
	p[len - 3] = 'x';
	p[len - 4] = 'x';
}

int
main(void)
{
	uint8_t *in = malloc(SIZE), *out = malloc(3 * (size_t)SIZE);
	double t0, t_copy, t_valid, t_san;
	volatile size_t sink = 0;
	int r;

	if (in == NULL || out == NULL)
		return 1;
	fill(in, SIZE);
	memset(out, 0, 3 * (size_t)SIZE);
	t0 = now();
	for (r = 0; r < ROUNDS; r++) {
		memcpy(out, in, SIZE);
		sink += out[r];
	}
	t_copy = now() - t0;
	t0 = now();
	for (r = 0; r < ROUNDS; r++)
		sink += (size_t)utf8_valid(in, SIZE);
	t_valid = now() - t0;
	t0 = now();
	for (r = 0; r < ROUNDS; r++)
		sink += utf8_sanitize(in, SIZE, out);
	t_san = now() - t0;
	(void)sink; /* volatile: the work above cannot be optimised away */
	printf("memcpy        %8.0f MB/s\n", ROUNDS * SIZE / t_copy / 1e6);
	printf("utf8_valid    %8.0f MB/s  (%.2f x memcpy time)\n",
	       ROUNDS * SIZE / t_valid / 1e6, t_valid / t_copy);
	printf("utf8_sanitize %8.0f MB/s  (%.2f x memcpy time)\n",
	       ROUNDS * SIZE / t_san / 1e6, t_san / t_copy);

	/* Per chunk, in cache, as send_output() sees the pty's reads. */
	{
		static uint8_t stage[CHUNK + 4], clean[(CHUNK + 4) * 3];
		double t_staged, t_inplace;
		size_t off, keep;

		t0 = now();
		for (r = 0; r < ROUNDS; r++)
			for (off = 0; off + CHUNK <= SIZE; off += CHUNK) {
				memcpy(stage, in + off, CHUNK);
				keep = utf8_complete_prefix(stage, CHUNK);
				sink += utf8_sanitize(stage, keep, clean);
			}
		t_staged = now() - t0;
		t0 = now();
		for (r = 0; r < ROUNDS; r++)
			for (off = 0; off + CHUNK <= SIZE; off += CHUNK) {
				keep = utf8_complete_prefix(in + off, CHUNK);
				sink += (size_t)utf8_valid(in + off, keep);
			}
		t_inplace = now() - t0;
		printf("agent output, staged   %8.0f MB/s\n",
		       ROUNDS * SIZE / t_staged / 1e6);
		printf("agent output, in place %8.0f MB/s  (%.2f x the "
		       "staged time)\n",
		       ROUNDS * SIZE / t_inplace / 1e6, t_inplace / t_staged);
	}
	free(in);
	free(out);
	return 0;
}
