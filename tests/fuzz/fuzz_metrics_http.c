/*
 * Fuzzes the metrics endpoint's request reader (src/common/metrics_http.c),
 * whose input is whatever reaches the metrics port.  Checks the promise of
 * metrics_http.h: a head is either incomplete (and then shorter than the
 * bound) or answered with one of the listed statuses and a used length
 * within the input and the bound; feeding the input in two pieces gives
 * the same answer as feeding it whole, and the answer's text is well
 * formed.
 *
 * Input: the bytes a scraper sends.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "metrics_http.h"

static int
status_known(enum metrics_http_status st)
{
	switch (st) {
	case METRICS_HTTP_OK:
	case METRICS_HTTP_BAD_REQUEST:
	case METRICS_HTTP_NOT_FOUND:
	case METRICS_HTTP_BAD_METHOD:
	case METRICS_HTTP_TOO_LARGE:
	case METRICS_HTTP_BAD_VERSION:
		return 1;
	case METRICS_HTTP_TIMEOUT:
	case METRICS_HTTP_ERROR:
		break;
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum metrics_http_status st, st2;
	size_t used, used2, i;
	struct buf out;
	int rc, rc2;

	rc = metrics_http_parse(data, size, &st, &used);
	FUZZ_CHECK(rc == 0 || rc == -EAGAIN);
	if (rc == -EAGAIN) {
		FUZZ_CHECK(size < METRICS_HTTP_MAX_REQUEST);
		return 0;
	}
	FUZZ_CHECK(status_known(st));
	FUZZ_CHECK(used <= size && used <= METRICS_HTTP_MAX_REQUEST);
	FUZZ_CHECK(used > 0);
	if (st == METRICS_HTTP_OK)
		FUZZ_CHECK(size >= 16 && memcmp(data, "GET /metrics", 12) == 0);
	/* What the server sees as reads come in: prefixes wait or agree. */
	for (i = 0; i < used; i += 1 + used / 7) {
		rc2 = metrics_http_parse(data, i, &st2, &used2);
		if (rc2 == 0)
			FUZZ_CHECK(used2 <= i);
	}
	rc2 = metrics_http_parse(data, used, &st2, &used2);
	FUZZ_CHECK(rc2 == 0 && st2 == st && used2 == used);
	buf_init(&out, 0);
	FUZZ_CHECK(metrics_http_response(&out, st, NULL) == 0);
	FUZZ_CHECK(buf_len(&out) > 17 &&
	           memcmp(buf_data(&out), "HTTP/1.1 ", 9) == 0);
	buf_free(&out);
	return 0;
}
