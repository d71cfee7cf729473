/*
 * Fuzzes the raw-terminal extension's parsers (src/common/termext.c): the
 * "COLSxROWS" window trailer and the terminal type, both from peers.  A
 * window that parses is in range and formats back to exactly the input.
 *
 * Input: the trailer value.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "termext.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct termext_window w = {0, 0}, back;
	char buf[TERMEXT_WINDOW_STRLEN];
	int rc;

	rc = termext_window_parse(data, size, &w);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ERANGE);
	if (rc == 0) {
		FUZZ_CHECK(w.tw_cols >= 1 && w.tw_cols <= TERMEXT_WINDOW_MAX);
		FUZZ_CHECK(w.tw_rows >= 1 && w.tw_rows <= TERMEXT_WINDOW_MAX);
		FUZZ_CHECK(termext_window_format(&w, buf, sizeof(buf)) == 0);
		FUZZ_CHECK(strlen(buf) == size && memcmp(buf, data, size) == 0);
		FUZZ_CHECK(termext_window_parse(buf, strlen(buf), &back) == 0);
		FUZZ_CHECK(back.tw_cols == w.tw_cols &&
		           back.tw_rows == w.tw_rows);
	} else
		FUZZ_CHECK(w.tw_cols == 0 && w.tw_rows == 0);
	if (termext_term_ok(data, size)) {
		FUZZ_CHECK(size >= 1 && size <= TERMEXT_TERM_MAX);
		/* Safe in an environment string and a log line. */
		for (size_t i = 0; i < size; i++)
			FUZZ_CHECK(data[i] > 0x20 && data[i] < 0x7f &&
			           data[i] != '=' && data[i] != '$' &&
			           data[i] != ';');
	}
	return 0;
}
