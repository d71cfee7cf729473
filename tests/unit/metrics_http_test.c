/*
 * The metrics endpoint's request reader (src/common/metrics_http.c):
 * truncated, oversized and malformed heads, and the answers; then the
 * server on a loop with a client over loopback.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/metrics_http.h"

static int
parse(const char *s, enum metrics_http_status *st, size_t *used)
{
	return metrics_http_parse((const uint8_t *)s, strlen(s), st, used);
}

static void
expect(const char *req, enum metrics_http_status want)
{
	enum metrics_http_status st = 0;
	size_t used = 0;

	if (parse(req, &st, &used) != 0)
		fail_msg("incomplete: %s", req);
	if (st != want)
		fail_msg("%d, not %d, for %s", (int)st, (int)want, req);
	assert_true(used <= strlen(req));
}

static void
test_good(void **state)
{
	enum metrics_http_status st;
	size_t used;

	(void)state;
	expect("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_HTTP_OK);
	expect("GET /metrics HTTP/1.0\r\n\r\n", METRICS_HTTP_OK);
	expect("GET /metrics HTTP/1.0\n\n", METRICS_HTTP_OK);
	expect("GET /metrics?x=1 HTTP/1.1\r\nA:\r\nB:\t v \r\n\r\n",
	       METRICS_HTTP_OK);
	/* Bytes after the head (a body, a pipelined request) are not used. */
	assert_int_equal(
	    parse("GET /metrics HTTP/1.1\r\n\r\nGET /", &st, &used), 0);
	assert_int_equal(st, METRICS_HTTP_OK);
	assert_int_equal(used, strlen("GET /metrics HTTP/1.1\r\n\r\n"));
	expect("GET /other HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND);
	expect("GET /metrics/ HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND);
	expect("GET http://h/metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND);
	expect("POST /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_METHOD);
	expect("get /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_METHOD);
	expect("HEAD /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD_METHOD);
	expect("GET /metrics HTTP/2.0\r\n", METRICS_HTTP_BAD_VERSION);
	expect("GET /metrics HTTP/1.2\r\n", METRICS_HTTP_BAD_VERSION);
}

static void
test_truncated(void **state)
{
	static const char full[] =
	    "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
	enum metrics_http_status st;
	size_t used, n;

	(void)state;
	/* Every proper prefix waits for more; the whole is answered. */
	for (n = 0; n < sizeof(full) - 1; n++)
		assert_int_equal(
		    metrics_http_parse((const uint8_t *)full, n, &st, &used),
		    -EAGAIN);
	assert_int_equal(
	    metrics_http_parse((const uint8_t *)full, n, &st, &used), 0);
	assert_int_equal(st, METRICS_HTTP_OK);
	assert_int_equal(used, n);
}

static void
test_malformed(void **state)
{
	static const char *const bad[] = {
	    "\r\n",
	    "GET\r\n\r\n",
	    "GET /metrics\r\n\r\n",
	    "GET  /metrics HTTP/1.1\r\n\r\n",
	    "GET /metrics  HTTP/1.1\r\n\r\n",
	    " GET /metrics HTTP/1.1\r\n\r\n",
	    "GET /metrics HTTP/1.1 \r\n\r\n",
	    "GET /metrics HTTP/1.1\r\r\n\r\n",
	    "GET /metrics HTTP/1.1x\r\n\r\n",
	    "GET /metrics http/1.1\r\n\r\n",
	    "GET /metrics HTTP/a.1\r\n\r\n",
	    "GET /met\x01rics HTTP/1.1\r\n\r\n",
	    "G(T /metrics HTTP/1.1\r\n\r\n",
	    "GET /metrics HTTP/1.1\r\nNo colon\r\n\r\n",
	    "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
	    "GET /metrics HTTP/1.1\r\nA b: c\r\n\r\n",
	    "GET /metrics HTTP/1.1\r\nA: x\r\n folded\r\n\r\n",
	    "GET /metrics HTTP/1.1\r\nA: \x7f\r\n\r\n",
	    "GET /metrics HTTP/1.1\r\nA: x\ry\r\n\r\n",
	};
	enum metrics_http_status st;
	size_t used, i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(bad[i], METRICS_HTTP_BAD_REQUEST);
	/* A NUL inside the head. */
	assert_int_equal(
	    metrics_http_parse((const uint8_t *)"GET /\0 HTTP/1.1\n\n", 18, &st,
	                       &used),
	    0);
	assert_int_equal(st, METRICS_HTTP_BAD_REQUEST);
	/* A malformed request line is answered before the head ends. */
	expect("BAD LINE\r\n", METRICS_HTTP_BAD_REQUEST);
}

static void
test_oversized(void **state)
{
	enum metrics_http_status st;
	uint8_t *big;
	size_t used, n = METRICS_HTTP_MAX_REQUEST + 100;
	const char *head = "GET /metrics HTTP/1.1\r\nX: ";

	(void)state;
	big = malloc(n);
	assert_non_null(big);
	memset(big, 'a', n);
	memcpy(big, head, strlen(head));
	assert_int_equal(
	    metrics_http_parse(big, METRICS_HTTP_MAX_REQUEST - 1, &st, &used),
	    -EAGAIN);
	assert_int_equal(
	    metrics_http_parse(big, METRICS_HTTP_MAX_REQUEST, &st, &used), 0);
	assert_int_equal(st, METRICS_HTTP_TOO_LARGE);
	/* More than the bound is looked at only up to the bound. */
	assert_int_equal(metrics_http_parse(big, n, &st, &used), 0);
	assert_int_equal(st, METRICS_HTTP_TOO_LARGE);
	assert_int_equal(used, METRICS_HTTP_MAX_REQUEST);
	/* The head ends just past the bound: still too large. */
	memcpy(big + METRICS_HTTP_MAX_REQUEST - 2, "\r\n\r\n", 4);
	assert_int_equal(metrics_http_parse(big, n, &st, &used), 0);
	assert_int_equal(st, METRICS_HTTP_TOO_LARGE);
	/* ...and just within it: fine. */
	memcpy(big + METRICS_HTTP_MAX_REQUEST - 4, "\r\n\r\n", 4);
	assert_int_equal(metrics_http_parse(big, n, &st, &used), 0);
	assert_int_equal(st, METRICS_HTTP_OK);
	assert_int_equal(used, METRICS_HTTP_MAX_REQUEST);
	free(big);
}

static void
test_response(void **state)
{
	struct buf out, body;
	const char *want;

	(void)state;
	buf_init(&out, 0);
	buf_init(&body, 0);
	assert_int_equal(buf_append(&body, "x 1\n", 4), 0);
	assert_int_equal(metrics_http_response(&out, METRICS_HTTP_OK, &body),
	                 0);
	want = "HTTP/1.1 200 OK\r\n"
	       "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
	       "Content-Length: 4\r\nConnection: close\r\n\r\nx 1\n";
	assert_int_equal(buf_len(&out), strlen(want));
	assert_memory_equal(buf_data(&out), want, strlen(want));
	buf_free(&out);
	assert_int_equal(
	    metrics_http_response(&out, METRICS_HTTP_BAD_METHOD, &body), 0);
	want = "HTTP/1.1 405 Method Not Allowed\r\n"
	       "Content-Type: text/plain; charset=utf-8\r\n"
	       "Content-Length: 23\r\nAllow: GET\r\nConnection: close\r\n\r\n"
	       "405 Method Not Allowed\n";
	assert_int_equal(buf_len(&out), strlen(want));
	assert_memory_equal(buf_data(&out), want, strlen(want));
	buf_free(&out);
	buf_free(&body);
}

/* --- The server on a loop --- */

struct loopt {
	uv_loop_t loop;
	struct metrics_http *h;
	uv_tcp_t cli;
	uv_connect_t conn;
	uv_write_t wr;
	char got[4096];
	size_t ngot;
	int closed_done;
};

static int
render_doc(struct buf *body, void *arg)
{
	(void)arg;
	return buf_append(body, "up 1\n", 5);
}

static void
on_done(void *arg)
{
	((struct loopt *)arg)->closed_done = 1;
}

static void
cli_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct loopt *t = h->data;

	(void)sz;
	*b =
	    uv_buf_init(t->got + t->ngot, (unsigned)(sizeof(t->got) - t->ngot));
}

static void
cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct loopt *t = s->data;

	(void)b;
	if (n > 0) {
		t->ngot += (size_t)n;
		return;
	}
	if (n < 0) {
		uv_close((uv_handle_t *)&t->cli, NULL);
		metrics_http_close(t->h, on_done, t);
	}
}

static void
cli_connected(uv_connect_t *req, int status)
{
	static char reqtext[] = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
	struct loopt *t = req->data;
	uv_buf_t b = uv_buf_init(reqtext, sizeof(reqtext) - 1);

	assert_int_equal(status, 0);
	assert_int_equal(uv_write(&t->wr, (uv_stream_t *)&t->cli, &b, 1, NULL),
	                 0);
	assert_int_equal(
	    uv_read_start((uv_stream_t *)&t->cli, cli_alloc, cli_read), 0);
}

static void
test_serve(void **state)
{
	struct loopt *t;
	struct sockaddr_in sa;

	(void)state;
	t = calloc(1, sizeof(*t));
	assert_non_null(t);
	assert_int_equal(uv_loop_init(&t->loop), 0);
	assert_int_equal(
	    metrics_http_new(&t->loop, NULL, render_doc, NULL, &t->h), 0);
	assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sa), 0);
	assert_int_equal(metrics_http_listen(t->h, (struct sockaddr *)&sa), 0);
	assert_true(metrics_http_port(t->h) != 0);
	assert_int_equal(uv_ip4_addr("127.0.0.1", metrics_http_port(t->h), &sa),
	                 0);
	uv_tcp_init(&t->loop, &t->cli);
	t->cli.data = t->conn.data = t;
	assert_int_equal(uv_tcp_connect(&t->conn, &t->cli,
	                                (struct sockaddr *)&sa, cli_connected),
	                 0);
	assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
	assert_true(t->closed_done);
	t->got[t->ngot < sizeof(t->got) ? t->ngot : sizeof(t->got) - 1] = '\0';
	assert_non_null(strstr(t->got, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(t->got, "\r\n\r\nup 1\n"));
	assert_int_equal(uv_loop_close(&t->loop), 0);
	free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),      cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_malformed), cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_response),  cmocka_unit_test(test_serve),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
