/*
 * Fuzzes the secret-prompt recogniser (src/common/prompt.c) with device
 * output in pieces.  The tail always holds the end of the last line, at
 * most PROMPT_TAIL bytes of it, whatever the pieces; prompt_is_secret()
 * reads only those.
 *
 * Input: one byte of piece size (1-32), then the output.
 */
#include <string.h>

#include "fuzz.h"
#include "prompt.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct prompt_tail pt = {.pt_len = 0};
	size_t piece, i, n, start, want;

	if (size < 1)
		return 0;
	piece = (size_t)(data[0] % 32) + 1;
	data++;
	size--;
	for (i = 0; i < size; i += n) {
		n = size - i < piece ? size - i : piece;
		prompt_feed(&pt, data + i, n);
		FUZZ_CHECK(pt.pt_len <= PROMPT_TAIL);
		(void)prompt_is_secret(&pt);
	}
	/* The model: what follows the last CR or LF, its last bytes. */
	for (start = size; start > 0; start--)
		if (data[start - 1] == '\n' || data[start - 1] == '\r')
			break;
	want = size - start < PROMPT_TAIL ? size - start : PROMPT_TAIL;
	FUZZ_CHECK(pt.pt_len == want);
	FUZZ_CHECK(memcmp(pt.pt_buf, data + size - want, want) == 0);
	return 0;
}
