/*
 * A minimal HTTP/1.x server for one resource: GET /metrics, answered with
 * what a render callback writes (the Prometheus text format) and
 * "Connection: close".  It runs on the caller's libuv loop.
 *
 * Everything a scraper sends is peer input: the request head is bounded
 * (METRICS_HTTP_MAX_REQUEST), each connection has one deadline for sending
 * its request and another for taking the answer, and at most mo_max_clients
 * connections are served at once; more are closed as soon as accepted.
 * Only the request head is read: a body is never wanted, and the
 * connection closes after the answer.
 *
 * Answers: 200 for GET /metrics (a query string is ignored), 404 for
 * another path, 405 for another method, 400 for a malformed request, 431
 * for a head over the bound, 505 for a version other than HTTP/1.0 and
 * HTTP/1.1, 500 when the render fails, 408 when the request does not
 * arrive in time.
 */
#ifndef NCGRPC_METRICS_HTTP_H
#define NCGRPC_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "buf.h"

#define METRICS_HTTP_MAX_REQUEST 8192 /* bytes of request line and headers */
#define METRICS_HTTP_MAX_BODY    (64 * 1024 * 1024) /* of a rendered answer */

/* What the parser makes of a request head. */
enum metrics_http_status {
	METRICS_HTTP_OK = 200,
	METRICS_HTTP_BAD_REQUEST = 400,
	METRICS_HTTP_NOT_FOUND = 404,
	METRICS_HTTP_BAD_METHOD = 405,
	METRICS_HTTP_TIMEOUT = 408,
	METRICS_HTTP_TOO_LARGE = 431,
	METRICS_HTTP_ERROR = 500,
	METRICS_HTTP_BAD_VERSION = 505,
};

/*
 * Parses the request head at data[0..len).  Returns -EAGAIN when the head
 * is not complete yet (more may come, up to METRICS_HTTP_MAX_REQUEST), or 0
 * with *status set to the answer the request gets (METRICS_HTTP_OK only
 * for a well-formed GET /metrics) and *used to the bytes of the head.  A
 * head that cannot become complete within the bound gets
 * METRICS_HTTP_TOO_LARGE; a line that is malformed as soon as it is
 * complete gets its answer without waiting for the rest.  Pure: no state,
 * no allocation.
 */
int metrics_http_parse(const uint8_t *data, size_t len,
                       enum metrics_http_status *status, size_t *used);

/*
 * Writes the answer's text: the status line and headers for status, and
 * body (of a 200) or a short explanation.  Returns 0, -ENOBUFS or -ENOMEM.
 */
int metrics_http_response(struct buf *out, enum metrics_http_status status,
                          const struct buf *body);

/*
 * Writes the document into body (limited to METRICS_HTTP_MAX_BODY).
 * Returns 0, or a negative code and the scraper gets 500.
 */
typedef int (*metrics_http_render_fn)(struct buf *body, void *arg);

struct metrics_http_opts {
	unsigned mo_max_clients;      /* at once; 0: 16 */
	unsigned mo_read_timeout_ms;  /* to send the request; 0: 5 s */
	unsigned mo_write_timeout_ms; /* to take the answer; 0: 30 s */
};

struct metrics_http;

/*
 * Creates a server (not listening yet) that answers with render.  Returns
 * 0 and sets *out, or -ENOMEM.
 */
int metrics_http_new(uv_loop_t *loop, const struct metrics_http_opts *opts,
                     metrics_http_render_fn render, void *arg,
                     struct metrics_http **out);

/*
 * Listens on addr (IPv4 or IPv6; port 0 picks a free one).  One address per
 * server.  Returns 0, or a negative libuv code (-EADDRINUSE, -EACCES...).
 */
int metrics_http_listen(struct metrics_http *h, const struct sockaddr *addr);

/* The port listened on, or 0. */
uint16_t metrics_http_port(const struct metrics_http *h);

/* Connections being served now. */
unsigned metrics_http_nclients(const struct metrics_http *h);

/*
 * Stops listening, drops every connection, and frees h once its handles
 * are closed; done(arg) runs then (done may be NULL).  NULL h is fine.
 */
void metrics_http_close(struct metrics_http *h, void (*done)(void *),
                        void *arg);

#endif
