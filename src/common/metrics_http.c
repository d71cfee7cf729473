/*
 * The metrics endpoint's HTTP server (see metrics_http.h).
 *
 * Written here rather than taken from a library: one GET of one resource
 * needs a request-head reader of a hundred lines, while the libraries at
 * hand bring their own event loops or threads (docs/metrics.md says more).
 *
 * A connection (struct mh_client) reads its request head into a fixed
 * buffer, is answered from one buffer with one write, is shut down for
 * writing and then closed.  Its tcp and timer handles are closed together
 * and it is freed when the second close callback runs; the server is freed
 * when its listener and every connection are closed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "metrics_http.h"

#define MH_DEFAULT_CLIENTS       16
#define MH_DEFAULT_READ_TIMEOUT  5000
#define MH_DEFAULT_WRITE_TIMEOUT 30000
#define MH_BACKLOG               64

enum mh_state { MH_READING, MH_WRITING, MH_CLOSING };

struct mh_client {
	struct metrics_http *c_h;
	enum mh_state c_state;
	uv_tcp_t c_tcp;
	uv_timer_t c_timer;
	uv_write_t c_wr;
	uv_shutdown_t c_sd;
	int c_nopen; /* handles not closed yet */
	struct buf c_out;
	size_t c_len;
	LIST_ENTRY(mh_client) c_entry;
	uint8_t c_req[METRICS_HTTP_MAX_REQUEST];
};

struct metrics_http {
	uv_loop_t *h_loop;
	struct metrics_http_opts h_opts;
	metrics_http_render_fn h_render;
	void *h_arg;
	uv_tcp_t h_listen;
	int h_listen_open; /* h_listen initialized and not closed yet */
	uint16_t h_port;
	LIST_HEAD(, mh_client) h_clients;
	unsigned h_nclients; /* connections until their memory is freed */
	int h_closing;
	void (*h_done)(void *);
	void *h_done_arg;
};

/* --- The request head --- */

static int
is_tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* "GET /metrics HTTP/1.1", without its line end. */
static enum metrics_http_status
request_line(const uint8_t *p, size_t len)
{
	size_t i = 0, m, t0, t1;

	while (i < len && p[i] != '\0' && is_tchar(p[i]))
		i++;
	m = i;
	if (m == 0 || i >= len || p[i] != ' ')
		return METRICS_HTTP_BAD_REQUEST;
	t0 = ++i;
	while (i < len && p[i] > 0x20 && p[i] < 0x7f)
		i++;
	t1 = i;
	if (t1 == t0 || i >= len || p[i] != ' ')
		return METRICS_HTTP_BAD_REQUEST;
	i++;
	if (len - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' ||
	    p[i + 5] > '9' || p[i + 6] != '.' || p[i + 7] < '0' ||
	    p[i + 7] > '9')
		return METRICS_HTTP_BAD_REQUEST;
	if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
		return METRICS_HTTP_BAD_VERSION;
	if (m != 3 || memcmp(p, "GET", 3) != 0)
		return METRICS_HTTP_BAD_METHOD;
	/* The path, less a query string. */
	for (i = t0; i < t1 && p[i] != '?'; i++)
		;
	if (i - t0 != 8 || memcmp(p + t0, "/metrics", 8) != 0)
		return METRICS_HTTP_NOT_FOUND;
	return METRICS_HTTP_OK;
}

/* "Name: value", without its line end; no folding. */
static int
header_valid(const uint8_t *p, size_t len)
{
	size_t i = 0;

	while (i < len && is_tchar(p[i]))
		i++;
	if (i == 0 || i >= len || p[i] != ':')
		return 0;
	for (i++; i < len; i++)
		if (p[i] != '\t' && (p[i] < 0x20 || p[i] == 0x7f))
			return 0;
	return 1;
}

int
metrics_http_parse(const uint8_t *data, size_t len,
                   enum metrics_http_status *status, size_t *used)
{
	enum metrics_http_status st = METRICS_HTTP_OK;
	const uint8_t *nl;
	size_t pos = 0, end;
	int first = 1;

	if (len > METRICS_HTTP_MAX_REQUEST)
		len = METRICS_HTTP_MAX_REQUEST;
	for (;;) {
		nl = len > pos ? memchr(data + pos, '\n', len - pos) : NULL;
		if (nl == NULL) {
			if (len < METRICS_HTTP_MAX_REQUEST)
				return -EAGAIN;
			*status = METRICS_HTTP_TOO_LARGE;
			*used = len;
			return 0;
		}
		end = (size_t)(nl - data);
		*used = end + 1;
		/* CRLF, or a bare LF as RFC 9112 lets a server accept. */
		if (end > pos && data[end - 1] == '\r')
			end--;
		if (first) {
			st = request_line(data + pos, end - pos);
			first = 0;
			if (st == METRICS_HTTP_BAD_REQUEST ||
			    st == METRICS_HTTP_BAD_VERSION) {
				*status = st;
				return 0;
			}
		} else if (end == pos) {
			*status = st;
			return 0;
		} else if (data[pos] == ' ' || data[pos] == '\t' ||
		           !header_valid(data + pos, end - pos)) {
			*status = METRICS_HTTP_BAD_REQUEST;
			return 0;
		}
		pos = *used;
	}
}

static const char *
reason_phrase(enum metrics_http_status st)
{
	switch (st) {
	case METRICS_HTTP_OK:
		return "OK";
	case METRICS_HTTP_BAD_REQUEST:
		return "Bad Request";
	case METRICS_HTTP_NOT_FOUND:
		return "Not Found";
	case METRICS_HTTP_BAD_METHOD:
		return "Method Not Allowed";
	case METRICS_HTTP_TIMEOUT:
		return "Request Timeout";
	case METRICS_HTTP_TOO_LARGE:
		return "Request Header Fields Too Large";
	case METRICS_HTTP_BAD_VERSION:
		return "HTTP Version Not Supported";
	case METRICS_HTTP_ERROR:
		break;
	}
	return "Internal Server Error";
}

int
metrics_http_response(struct buf *out, enum metrics_http_status status,
                      const struct buf *body)
{
	char head[256], text[64];
	const void *bp;
	size_t blen;
	int n, rc;

	if (status == METRICS_HTTP_OK && body != NULL) {
		bp = buf_data(body);
		blen = buf_len(body);
	} else {
		n = snprintf(text, sizeof(text), "%d %s\n", (int)status,
		             reason_phrase(status));
		bp = text;
		blen = n > 0 ? (size_t)n : 0;
	}
	n = snprintf(head, sizeof(head),
	             "HTTP/1.1 %d %s\r\n"
	             "Content-Type: %s\r\n"
	             "Content-Length: %zu\r\n"
	             "%s"
	             "Connection: close\r\n"
	             "\r\n",
	             (int)status, reason_phrase(status),
	             status == METRICS_HTTP_OK
	                 ? "text/plain; version=0.0.4; charset=utf-8"
	                 : "text/plain; charset=utf-8",
	             blen,
	             status == METRICS_HTTP_BAD_METHOD ? "Allow: GET\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(head))
		return -ENOMEM;
	if ((rc = buf_reserve(out, (size_t)n + blen)) != 0)
		return rc;
	buf_append(out, head, (size_t)n);
	buf_append(out, bp, blen);
	return 0;
}

/* --- Connections --- */

static void maybe_done(struct metrics_http *);
static void respond(struct mh_client *, enum metrics_http_status);

static void
on_client_closed(uv_handle_t *hd)
{
	struct mh_client *c = hd->data;
	struct metrics_http *h = c->c_h;

	if (--c->c_nopen > 0)
		return;
	buf_free(&c->c_out);
	free(c);
	h->h_nclients--;
	maybe_done(h);
}

static void
client_close(struct mh_client *c)
{
	if (c->c_state == MH_CLOSING)
		return;
	c->c_state = MH_CLOSING;
	LIST_REMOVE(c, c_entry);
	/* Both close callbacks come; the second frees c. */
	uv_close((uv_handle_t *)&c->c_tcp, on_client_closed);
	uv_close((uv_handle_t *)&c->c_timer, on_client_closed);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct mh_client *c = req->data;

	(void)status;
	client_close(c);
}

static void
on_written(uv_write_t *req, int status)
{
	struct mh_client *c = req->data;

	if (c->c_state == MH_CLOSING)
		return;
	if (status < 0 ||
	    uv_shutdown(&c->c_sd, (uv_stream_t *)&c->c_tcp, on_shutdown) != 0)
		client_close(c);
}

static void
on_timeout(uv_timer_t *t)
{
	struct mh_client *c = t->data;

	if (c->c_state == MH_READING)
		respond(c, METRICS_HTTP_TIMEOUT);
	else
		client_close(c);
}

/* Answers with status and closes once the answer is out. */
static void
respond(struct mh_client *c, enum metrics_http_status status)
{
	struct metrics_http *h = c->c_h;
	struct buf body;
	uv_buf_t ub;
	int rc;

	uv_read_stop((uv_stream_t *)&c->c_tcp);
	c->c_state = MH_WRITING;
	buf_init(&body, METRICS_HTTP_MAX_BODY);
	if (status == METRICS_HTTP_OK && h->h_render(&body, h->h_arg) != 0)
		status = METRICS_HTTP_ERROR;
	rc = metrics_http_response(&c->c_out, status, &body);
	buf_free(&body);
	if (rc != 0) {
		client_close(c);
		return;
	}
	uv_timer_start(&c->c_timer, on_timeout, h->h_opts.mo_write_timeout_ms,
	               0);
	ub = uv_buf_init((char *)(uintptr_t)buf_data(&c->c_out),
	                 (unsigned)buf_len(&c->c_out));
	if (uv_write(&c->c_wr, (uv_stream_t *)&c->c_tcp, &ub, 1, on_written) !=
	    0)
		client_close(c);
}

static void
on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
	struct mh_client *c = hd->data;

	(void)suggested;
	*b = uv_buf_init((char *)c->c_req + c->c_len,
	                 (unsigned)(sizeof(c->c_req) - c->c_len));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct mh_client *c = s->data;
	enum metrics_http_status st;
	size_t used;

	(void)b;
	if (c->c_state != MH_READING || nread == 0)
		return;
	if (nread < 0) {
		/* EOF or an error before a whole request: nobody to answer. */
		client_close(c);
		return;
	}
	c->c_len += (size_t)nread;
	if (metrics_http_parse(c->c_req, c->c_len, &st, &used) == 0)
		respond(c, st);
}

static void
reject_closed(uv_handle_t *hd)
{
	free(hd);
}

static void
on_connection(uv_stream_t *ls, int status)
{
	struct metrics_http *h = ls->data;
	struct mh_client *c;
	uv_tcp_t *spare;

	if (status < 0 || h->h_closing)
		return;
	if (h->h_nclients >= h->h_opts.mo_max_clients ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		/* Taken off the backlog and closed: the others go on. */
		if ((spare = malloc(sizeof(*spare))) == NULL)
			return;
		uv_tcp_init(h->h_loop, spare);
		(void)uv_accept(ls, (uv_stream_t *)spare);
		uv_close((uv_handle_t *)spare, reject_closed);
		return;
	}
	c->c_h = h;
	buf_init(&c->c_out, 0);
	uv_tcp_init(h->h_loop, &c->c_tcp);
	uv_timer_init(h->h_loop, &c->c_timer);
	c->c_tcp.data = c->c_timer.data = c->c_wr.data = c->c_sd.data = c;
	c->c_nopen = 2;
	c->c_state = MH_READING;
	LIST_INSERT_HEAD(&h->h_clients, c, c_entry);
	h->h_nclients++;
	if (uv_accept(ls, (uv_stream_t *)&c->c_tcp) != 0 ||
	    uv_read_start((uv_stream_t *)&c->c_tcp, on_alloc, on_read) != 0) {
		client_close(c);
		return;
	}
	uv_timer_start(&c->c_timer, on_timeout, h->h_opts.mo_read_timeout_ms,
	               0);
}

/* --- The server --- */

int
metrics_http_new(uv_loop_t *loop, const struct metrics_http_opts *opts,
                 metrics_http_render_fn render, void *arg,
                 struct metrics_http **out)
{
	struct metrics_http *h;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return -ENOMEM;
	h->h_loop = loop;
	if (opts != NULL)
		h->h_opts = *opts;
	if (h->h_opts.mo_max_clients == 0)
		h->h_opts.mo_max_clients = MH_DEFAULT_CLIENTS;
	if (h->h_opts.mo_read_timeout_ms == 0)
		h->h_opts.mo_read_timeout_ms = MH_DEFAULT_READ_TIMEOUT;
	if (h->h_opts.mo_write_timeout_ms == 0)
		h->h_opts.mo_write_timeout_ms = MH_DEFAULT_WRITE_TIMEOUT;
	h->h_render = render;
	h->h_arg = arg;
	LIST_INIT(&h->h_clients);
	*out = h;
	return 0;
}

static void
on_listen_closed(uv_handle_t *hd)
{
	struct metrics_http *h = hd->data;

	h->h_listen_open = 0;
	maybe_done(h);
}

int
metrics_http_listen(struct metrics_http *h, const struct sockaddr *addr)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss), rc;

	if (h->h_listen_open)
		return -EALREADY;
	if ((rc = uv_tcp_init(h->h_loop, &h->h_listen)) != 0)
		return rc;
	h->h_listen.data = h;
	h->h_listen_open = 1;
	if ((rc = uv_tcp_bind(&h->h_listen, addr, 0)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)&h->h_listen, MH_BACKLOG,
	                    on_connection)) != 0 ||
	    (rc = uv_tcp_getsockname(&h->h_listen, (struct sockaddr *)&ss,
	                             &len)) != 0) {
		/* Closed at once; metrics_http_close() waits for it. */
		uv_close((uv_handle_t *)&h->h_listen, on_listen_closed);
		return rc;
	}
	h->h_port = ntohs(ss.ss_family == AF_INET6
	                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                      : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

uint16_t
metrics_http_port(const struct metrics_http *h)
{
	return h->h_port;
}

unsigned
metrics_http_nclients(const struct metrics_http *h)
{
	return h->h_nclients;
}

static void
maybe_done(struct metrics_http *h)
{
	void (*done)(void *);
	void *arg;

	/* Connections still closing hold h until their last callback. */
	if (!h->h_closing || h->h_listen_open || h->h_nclients > 0)
		return;
	done = h->h_done;
	arg = h->h_done_arg;
	free(h);
	if (done != NULL)
		done(arg);
}

void
metrics_http_close(struct metrics_http *h, void (*done)(void *), void *arg)
{
	if (h == NULL) {
		if (done != NULL)
			done(arg);
		return;
	}
	if (h->h_closing)
		return;
	h->h_closing = 1;
	h->h_done = done;
	h->h_done_arg = arg;
	while (!LIST_EMPTY(&h->h_clients))
		client_close(LIST_FIRST(&h->h_clients));
	if (h->h_listen_open && !uv_is_closing((uv_handle_t *)&h->h_listen))
		uv_close((uv_handle_t *)&h->h_listen, on_listen_closed);
	else
		maybe_done(h);
}
