/*
 * Transport over libuv streams, with TLS through the sans-IO engine of tls.c.
 *
 * Output is gathered in x_out while one uv_write() is in flight from x_wbuf;
 * when that write completes the buffers swap.  So there is at most one write
 * request per connection and no allocation per write.
 *
 * Reading uses one buffer shared by every connection of the process: libuv
 * calls alloc_cb right before read_cb and we consume the bytes before
 * returning, so the buffer is never in use twice.  An idle connection thus
 * costs no read buffer at all.  With TLS the engine reads its records
 * straight from that buffer (tls_conn_lend()) and copies only what it has
 * not read when the read callback is done, and it appends its records
 * straight to x_out (tls_conn_set_output()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "buf.h"
#include "err.h"
#include "tls.h"
#include "xport.h"

#define XPORT_READ_BUFSZ         (64 * 1024)
#define XPORT_CLOSE_FLUSH_MS     2000
#define XPORT_DEFAULT_TIMEOUT_MS 10000
/*
 * Output queue watermarks for reading.  Input can make output without the
 * layer above asking (TLS 1.3 KeyUpdate requests are answered by the TLS
 * engine itself), so a peer that sends and never reads could grow the
 * queue without end.  Above the high mark the socket is not read until the
 * queue is below the low mark.  h2.c stops producing at 256 KiB, so normal
 * traffic never reaches the high mark.
 */
#define XPORT_OUT_HIGH (512 * 1024)
#define XPORT_OUT_LOW  (128 * 1024)

enum xport_state {
	XS_RESOLVING,
	XS_CONNECTING,
	XS_OPENING, /* cleartext: ready from the loop, not inside the caller */
	XS_HANDSHAKE,
	XS_READY,
	XS_FLUSHING, /* orderly close: waiting for output to drain */
	XS_CLOSING,  /* handles are being closed */
};

/*
 * What only an outbound connection needs: a server holds thousands of
 * accepted connections, which then do not carry these 256 bytes.
 */
struct xport_dial {
	uv_getaddrinfo_t d_gai;
	uv_connect_t d_req;
};

struct xport {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} x_h;
	uv_timer_t x_timer;
	struct xport_dial *x_dial; /* outbound only; NULL when accepted */
	uv_write_t x_wreq;
	uv_shutdown_t x_shutreq;
	uv_loop_t *x_loop;
	enum xport_state x_state;
	int x_is_pipe;
	int x_stream_open;  /* x_h is initialised and not yet closed */
	int x_open_handles; /* handles whose close callback is pending */
	int x_writing;      /* x_wreq in flight */
	int x_shutting;     /* x_shutreq in flight or done */
	int x_paused;       /* xport_pause() by the owner */
	int x_blocked;      /* reading stopped: output above XPORT_OUT_HIGH */
	int x_err;
	int x_have_cred; /* x_uid is known (Unix socket peers) */
	uid_t x_uid;
	struct tls_conn *x_tls;
	struct tls_ctx *x_tls_ctx;
	struct xport_opts x_opts;
	struct addrinfo *x_ai_head;
	struct addrinfo *x_ai_next;
	char *x_host;
	uint16_t x_port;
	struct buf x_out;  /* gathered output */
	struct buf x_wbuf; /* output being written */
	const struct xport_cb *x_cb;
	void *x_arg;
	struct peer x_peer;
	char *x_errmsg;    /* why it failed; NULL until it does (most never) */
	int x_errmsg_lost; /* a reason came, but no memory to keep it */
};

static const struct xport_cb xport_nocb;
static uint8_t xport_rbuf[XPORT_READ_BUFSZ];
static uint8_t xport_pbuf[XPORT_READ_BUFSZ];

static void xport_fail(struct xport *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void xport_try_next(struct xport *);
static void xport_start_write(struct xport *);
static void xport_half_close(struct xport *);
static void xport_tls_input(struct xport *);
static void xport_open_cleartext(struct xport *);
static void on_alloc(uv_handle_t *, size_t, uv_buf_t *);
static void on_read(uv_stream_t *, ssize_t, const uv_buf_t *);

static unsigned
opt_or(unsigned v, unsigned dflt)
{
	return v != 0 ? v : dflt;
}

static struct xport *
xport_alloc(uv_loop_t *loop, const struct xport_opts *opts,
            const struct xport_cb *cb, void *arg)
{
	struct xport *x;

	if ((x = calloc(1, sizeof(*x))) == NULL)
		return NULL;
	x->x_loop = loop;
	x->x_cb = cb;
	x->x_arg = arg;
	if (opts != NULL)
		x->x_opts = *opts;
	/* Read by xport_connect() only: the caller's string may go later. */
	x->x_opts.xo_resume_tag = NULL;
	buf_init(&x->x_out, 0);
	buf_init(&x->x_wbuf, 0);
	return x;
}

/* The last step of a successful start: from here on, close to free. */
static void
xport_init_timer(struct xport *x)
{
	uv_timer_init(x->x_loop, &x->x_timer);
	x->x_timer.data = x;
	x->x_open_handles++;
}

static void
xport_free(struct xport *x)
{
	if (x->x_ai_head != NULL)
		uv_freeaddrinfo(x->x_ai_head);
	tls_conn_free(x->x_tls);
	buf_free(&x->x_out);
	buf_free(&x->x_wbuf);
	free(x->x_host);
	free(x->x_errmsg);
	free(x->x_dial);
	free(x);
}

static void
on_handle_closed_last(struct xport *x)
{
	if (x->x_cb->xc_closed != NULL)
		x->x_cb->xc_closed(x, x->x_err, x->x_arg);
	xport_free(x);
}

static void
on_handle_closed(uv_handle_t *h)
{
	struct xport *x = h->data;

	if (--x->x_open_handles > 0)
		return;
	on_handle_closed_last(x);
}

/* Closes every handle; xc_closed runs when the last close callback does. */
static void
xport_teardown(struct xport *x)
{
	if (x->x_state == XS_CLOSING)
		return;
	/* A pending lookup holds a count of its own, dropped in on_resolved. */
	if (x->x_state == XS_RESOLVING)
		uv_cancel((uv_req_t *)&x->x_dial->d_gai);
	x->x_state = XS_CLOSING;
	x->x_timer.data = x;
	uv_close((uv_handle_t *)&x->x_timer, on_handle_closed);
	if (x->x_stream_open) {
		x->x_stream_open = 0;
		x->x_h.handle.data = x;
		x->x_open_handles++;
		uv_close(&x->x_h.handle, on_handle_closed);
	}
}

/* Replaces the error message (NULL if even that cannot be allocated). */
static void
vset_errmsg(struct xport *x, const char *fmt, va_list ap)
{
	char *m;

	if (vasprintf(&m, fmt, ap) == -1)
		m = NULL;
	free(x->x_errmsg);
	x->x_errmsg = m;
	x->x_errmsg_lost = m == NULL;
}

static void __attribute__((format(printf, 2, 3)))
set_errmsg(struct xport *x, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset_errmsg(x, fmt, ap);
	va_end(ap);
}

static void
xport_fail(struct xport *x, int err, const char *fmt, ...)
{
	va_list ap;

	if (x->x_state == XS_CLOSING)
		return;
	if (x->x_err == 0) {
		x->x_err = err;
		va_start(ap, fmt);
		vset_errmsg(x, fmt, ap);
		va_end(ap);
	}
	xport_teardown(x);
}

static void
on_timeout(uv_timer_t *t)
{
	struct xport *x = t->data;

	switch (x->x_state) {
	case XS_RESOLVING:
		xport_fail(x, -ETIMEDOUT, "resolving '%s' timed out",
		           x->x_host);
		break;
	case XS_CONNECTING:
		if (x->x_is_pipe || x->x_ai_head == NULL) {
			xport_fail(x, -ETIMEDOUT, "connection to %s timed out",
			           x->x_peer.pe_text);
			break;
		}
		/* A silent address does not stop us trying the next one. */
		x->x_err = -ETIMEDOUT;
		set_errmsg(x, "connection to %s timed out", x->x_peer.pe_text);
		xport_try_next(x);
		break;
	case XS_OPENING:
		xport_open_cleartext(x);
		break;
	case XS_HANDSHAKE:
		xport_fail(x, NCG_ETLS_HANDSHAKE_TIMEOUT,
		           "tls handshake with %s timed out",
		           x->x_peer.pe_text);
		break;
	case XS_FLUSHING:
		xport_teardown(x);
		break;
	default:
		break;
	}
}

static void
arm_timer(struct xport *x, unsigned ms)
{
	x->x_timer.data = x;
	uv_timer_start(&x->x_timer, on_timeout, ms, 0);
}

/*
 * Output held for the peer.  The TLS engine appends its records straight
 * to x_out (tls_conn_set_output()), so nothing waits inside it.
 */
static size_t
xport_backlog(const struct xport *x)
{
	return xport_queued(x);
}

/* Stops reading while the peer does not take our output. */
static int
xport_check_block(struct xport *x)
{
	if (x->x_blocked)
		return 1;
	if (xport_backlog(x) < XPORT_OUT_HIGH)
		return 0;
	x->x_blocked = 1;
	if (!x->x_paused && x->x_stream_open)
		uv_read_stop(&x->x_h.stream);
	return 1;
}

/* Reads again once the output fell below the low mark. */
static void
xport_maybe_unblock(struct xport *x)
{
	if (!x->x_blocked || x->x_state != XS_READY ||
	    xport_backlog(x) > XPORT_OUT_LOW)
		return;
	x->x_blocked = 0;
	if (x->x_paused)
		return;
	uv_read_start(&x->x_h.stream, on_alloc, on_read);
	/* Records received before the block are still in the engine. */
	if (x->x_tls != NULL)
		xport_tls_input(x);
}

static void
on_write_done(uv_write_t *req, int status)
{
	struct xport *x = req->data;

	x->x_writing = 0;
	buf_consume(&x->x_wbuf, buf_len(&x->x_wbuf));
	/*
	 * With nothing more queued the connection has most likely gone
	 * quiet, as an agent's long poll does for hours, so the queues and
	 * the TLS engine's BIOs give back what they grew to (the handshake
	 * flight alone leaves a few KiB).  While output keeps coming x_out
	 * is not empty here and the storage is kept, so a busy stream pays
	 * no allocation per write.
	 */
	if (buf_len(&x->x_out) == 0) {
		buf_free(&x->x_wbuf);
		buf_free(&x->x_out);
		if (x->x_tls != NULL)
			tls_conn_trim(x->x_tls);
	}
	if (x->x_state == XS_CLOSING)
		return;
	if (status < 0) {
		xport_fail(x, status, "write to %s: %s", x->x_peer.pe_text,
		           uv_strerror(status));
		return;
	}
	if (buf_len(&x->x_out) > 0) {
		xport_start_write(x);
		xport_maybe_unblock(x);
		return;
	}
	if (x->x_state == XS_FLUSHING) {
		xport_half_close(x);
		return;
	}
	xport_maybe_unblock(x);
	if (x->x_state == XS_CLOSING || xport_queued(x) > 0)
		return;
	if (x->x_cb->xc_drain != NULL)
		x->x_cb->xc_drain(x, x->x_arg);
}

static void
xport_start_write(struct xport *x)
{
	struct buf tmp;
	uv_buf_t ub;
	int rc;

	if (x->x_writing || buf_len(&x->x_out) == 0 || !x->x_stream_open)
		return;
	tmp = x->x_wbuf;
	x->x_wbuf = x->x_out;
	x->x_out = tmp;
	ub = uv_buf_init((char *)(uintptr_t)buf_data(&x->x_wbuf),
	                 (unsigned)buf_len(&x->x_wbuf));
	x->x_wreq.data = x;
	rc = uv_write(&x->x_wreq, &x->x_h.stream, &ub, 1, on_write_done);
	if (rc < 0) {
		xport_fail(x, rc, "write to %s: %s", x->x_peer.pe_text,
		           uv_strerror(rc));
		return;
	}
	x->x_writing = 1;
}

int
xport_write(struct xport *x, const uint8_t *data, size_t len)
{
	int rc;

	if (x->x_state != XS_READY)
		return NCG_ECLOSED;
	/* With TLS, the records go straight to x_out. */
	if (x->x_tls != NULL)
		rc = tls_conn_write(x->x_tls, data, len);
	else
		rc = buf_append(&x->x_out, data, len);
	if (rc != 0)
		return rc;
	xport_start_write(x);
	return 0;
}

size_t
xport_queued(const struct xport *x)
{
	return buf_len(&x->x_out) + buf_len(&x->x_wbuf);
}

static void
xport_set_ready(struct xport *x)
{
	uv_timer_stop(&x->x_timer);
	x->x_state = XS_READY;
	x->x_cb->xc_ready(x, x->x_arg);
}

static const char *
tls_reason(struct xport *x)
{
	const char *m = tls_conn_errmsg(x->x_tls);

	return m[0] != '\0' ? m : "handshake failed";
}

/* Runs the TLS engine over newly fed ciphertext. */
static void
xport_tls_input(struct xport *x)
{
	ssize_t n;
	int rc;

	if (x->x_state == XS_HANDSHAKE) {
		rc = tls_conn_handshake(x->x_tls);
		/* Send handshake records, or the alert explaining a failure. */
		xport_start_write(x);
		if (rc == TLS_EAGAIN)
			return;
		if (rc < 0) {
			xport_fail(x, rc, "%s", tls_reason(x));
			return;
		}
		xport_set_ready(x);
	}
	while (x->x_state == XS_READY && !x->x_paused) {
		if (xport_check_block(x))
			break;
		n = tls_conn_read(x->x_tls, xport_pbuf, sizeof(xport_pbuf));
		if (n == -EAGAIN)
			break;
		if (n == 0) {
			xport_fail(x, NCG_ECLOSED, "%s closed the connection",
			           x->x_peer.pe_text);
			return;
		}
		if (n < 0) {
			xport_fail(x, (int)n, "%s", tls_reason(x));
			return;
		}
		x->x_cb->xc_data(x, xport_pbuf, (size_t)n, x->x_arg);
	}
	/* Key updates and session tickets may need an answer. */
	if (x->x_state == XS_READY)
		xport_start_write(x);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	(void)h;
	(void)suggested;
	*b = uv_buf_init((char *)xport_rbuf, sizeof(xport_rbuf));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct xport *x = s->data;
	int rc;

	if (nread == 0 || x->x_state == XS_CLOSING)
		return;
	if (x->x_state == XS_FLUSHING) {
		/* Draining: input is dropped, EOF or an error ends it. */
		if (nread < 0)
			xport_teardown(x);
		return;
	}
	if (nread < 0) {
		if (nread == UV_EOF)
			xport_fail(x, NCG_ECLOSED, "%s closed the connection",
			           x->x_peer.pe_text);
		else
			xport_fail(x, (int)nread, "read from %s: %s",
			           x->x_peer.pe_text, uv_strerror((int)nread));
		return;
	}
	if (x->x_tls == NULL) {
		x->x_cb->xc_data(x, (const uint8_t *)b->base, (size_t)nread,
		                 x->x_arg);
		if (x->x_state == XS_READY)
			(void)xport_check_block(x);
		return;
	}
	/*
	 * The engine reads its records straight from xport_rbuf, and keeps
	 * only what is left when this read is done with (the start of a
	 * record, or records a pause or a block left unread).
	 */
	if ((rc = tls_conn_lend(x->x_tls, (const uint8_t *)b->base,
	                        (size_t)nread)) == 0) {
		xport_tls_input(x);
		rc = tls_conn_keep(x->x_tls);
	}
	if (rc != 0)
		xport_fail(x, rc, "tls: out of memory");
}

/*
 * A cleartext stream is ready as soon as it is connected; but xc_ready
 * comes from the loop (a zero timer), never inside xport_accept() or
 * before the owner has stored what that returned.
 */
static void
xport_open_cleartext(struct xport *x)
{
	int rc;

	if (!x->x_paused &&
	    (rc = uv_read_start(&x->x_h.stream, on_alloc, on_read)) < 0) {
		xport_fail(x, rc, "read from %s: %s", x->x_peer.pe_text,
		           uv_strerror(rc));
		return;
	}
	xport_set_ready(x);
}

static int
xport_start_stream(struct xport *x)
{
	int rc;

	x->x_h.handle.data = x;
	if (x->x_tls == NULL) {
		x->x_state = XS_OPENING;
		arm_timer(x, 0);
		return 0;
	}
	if (!x->x_paused &&
	    (rc = uv_read_start(&x->x_h.stream, on_alloc, on_read)) < 0)
		return rc;
	x->x_state = XS_HANDSHAKE;
	arm_timer(x, opt_or(x->x_opts.xo_handshake_timeout_ms,
	                    XPORT_DEFAULT_TIMEOUT_MS));
	/* The client speaks first. */
	xport_tls_input(x);
	return 0;
}

static void
xport_tune_tcp(struct xport *x)
{
	uv_os_fd_t fd;
	int v;

	uv_tcp_nodelay(&x->x_h.tcp, 1);
	if (uv_fileno(&x->x_h.handle, &fd) != 0)
		return;
	/*
	 * Without it, data the peer never acknowledges is retransmitted for
	 * about 15 minutes, and a busy connection over a cut link (keepalive
	 * does not probe while data is in flight) lingers that long.
	 */
	if ((v = (int)x->x_opts.xo_user_timeout_ms) > 0)
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v));
	if (x->x_opts.xo_keepalive_idle == 0)
		return;
	uv_tcp_keepalive(&x->x_h.tcp, 1, x->x_opts.xo_keepalive_idle);
	if ((v = (int)x->x_opts.xo_keepalive_intvl) > 0)
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
	if ((v = (int)x->x_opts.xo_keepalive_cnt) > 0)
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
}

void
xport_opts_dead_peer(struct xport_opts *o, unsigned seconds)
{
	unsigned idle, intvl, connect_ms;

	if (seconds == 0)
		return;
	idle = seconds / 2 > 0 ? seconds / 2 : 1;
	intvl = seconds / 6 > 0 ? seconds / 6 : 1;
	/*
	 * With TCP_USER_TIMEOUT set, Linux drops a connection at the first
	 * keepalive probe sent once nothing was received for the user
	 * timeout, whatever the probe count: probes at idle, idle + intvl,
	 * ... so one falls on the bound (seconds) or at most intvl after.
	 * Both are chosen so that idle + k * intvl hits the bound exactly for
	 * the values that matter (30 s: 15, 20, 25, 30).
	 */
	o->xo_user_timeout_ms = seconds * 1000;
	if (o->xo_keepalive_idle == 0 || o->xo_keepalive_idle > idle)
		o->xo_keepalive_idle = idle;
	if (o->xo_keepalive_intvl == 0 || o->xo_keepalive_intvl > intvl)
		o->xo_keepalive_intvl = intvl;
	if (o->xo_keepalive_cnt == 0)
		o->xo_keepalive_cnt = (seconds - idle) / intvl + 1;
	connect_ms = o->xo_connect_timeout_ms != 0 ? o->xo_connect_timeout_ms
	                                           : XPORT_DEFAULT_TIMEOUT_MS;
	if (connect_ms > seconds * 1000)
		o->xo_connect_timeout_ms = seconds * 1000;
}

static void
on_connect(uv_connect_t *req, int status)
{
	struct xport *x = req->data;
	int rc;

	/*
	 * A connect cancelled by the close of its attempt (the connect
	 * timeout, xport_try_next()): on_attempt_closed() goes on from there.
	 * Going on here too would start the next attempt on the handle while
	 * libuv is still closing it, and the attempt would be lost.
	 */
	if (x->x_state == XS_CLOSING || status == UV_ECANCELED)
		return;
	if (status < 0) {
		/* Remember why, then try the next address, if any. */
		x->x_err = status;
		set_errmsg(x, "connect to %s: %s", x->x_peer.pe_text,
		           uv_strerror(status));
		xport_try_next(x);
		return;
	}
	x->x_err = 0;
	free(x->x_errmsg);
	x->x_errmsg = NULL;
	x->x_errmsg_lost = 0;
	if (!x->x_is_pipe)
		xport_tune_tcp(x);
	if ((rc = xport_start_stream(x)) < 0)
		xport_fail(x, rc, "read from %s: %s", x->x_peer.pe_text,
		           uv_strerror(rc));
}

static void
on_attempt_closed(uv_handle_t *h)
{
	struct xport *x = h->data;

	x->x_open_handles--;
	if (x->x_state == XS_CLOSING) {
		/* Teardown raced us; finish its count. */
		if (x->x_open_handles == 0)
			on_handle_closed_last(x);
		return;
	}
	xport_try_next(x);
}

static void
xport_try_next(struct xport *x)
{
	struct addrinfo *ai;
	int rc;

	if (x->x_stream_open) {
		/* Close the failed attempt's socket first. */
		x->x_stream_open = 0;
		x->x_h.handle.data = x;
		x->x_open_handles++;
		uv_close(&x->x_h.handle, on_attempt_closed);
		return;
	}
	while ((ai = x->x_ai_next) != NULL) {
		x->x_ai_next = ai->ai_next;
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		peer_from_sockaddr(&x->x_peer, ai->ai_addr);
		if ((rc = uv_tcp_init(x->x_loop, &x->x_h.tcp)) < 0)
			break;
		x->x_stream_open = 1;
		x->x_state = XS_CONNECTING;
		x->x_dial->d_req.data = x;
		rc = uv_tcp_connect(&x->x_dial->d_req, &x->x_h.tcp, ai->ai_addr,
		                    on_connect);
		if (rc < 0) {
			x->x_err = rc;
			set_errmsg(x, "connect to %s: %s", x->x_peer.pe_text,
			           uv_strerror(rc));
			xport_try_next(x);
			return;
		}
		arm_timer(x, opt_or(x->x_opts.xo_connect_timeout_ms,
		                    XPORT_DEFAULT_TIMEOUT_MS));
		return;
	}
	/* Every address failed: report the last reason. */
	if (x->x_err == 0)
		xport_fail(x, -EHOSTUNREACH, "no usable address for '%s'",
		           x->x_host);
	else
		xport_teardown(x);
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct xport *x = req->data;

	x->x_open_handles--;
	if (x->x_state == XS_CLOSING) {
		if (res != NULL)
			uv_freeaddrinfo(res);
		if (x->x_open_handles == 0)
			on_handle_closed_last(x);
		return;
	}
	if (status < 0) {
		xport_fail(x, -EHOSTUNREACH, "cannot resolve '%s': %s",
		           x->x_host, uv_strerror(status));
		return;
	}
	x->x_ai_head = x->x_ai_next = res;
	xport_try_next(x);
}

/* Offers the ticket kept for this server and, if any, the owner's tag. */
static int
resume(struct xport *x, const struct xport_opts *opts)
{
	char *key;
	int rc;

	if (opts == NULL || opts->xo_resume_tag == NULL)
		return tls_conn_resume(x->x_tls, x->x_peer.pe_text);
	if (asprintf(&key, "%s %s", opts->xo_resume_tag, x->x_peer.pe_text) ==
	    -1)
		return -ENOMEM;
	rc = tls_conn_resume(x->x_tls, key);
	free(key);
	return rc;
}

int
xport_connect(uv_loop_t *loop, const char *host, uint16_t port,
              struct tls_ctx *ctx, const struct xport_opts *opts,
              const struct xport_cb *cb, void *arg, struct xport **out)
{
	struct addrinfo hints;
	char portstr[8];
	struct xport *x;
	int rc;

	if (host == NULL || *host == '\0' || port == 0)
		return -EINVAL;
	if ((x = xport_alloc(loop, opts, cb, arg)) == NULL)
		return -ENOMEM;
	if ((x->x_host = strdup(host)) == NULL ||
	    (x->x_dial = calloc(1, sizeof(*x->x_dial))) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	x->x_port = port;
	if (ctx != NULL && (rc = tls_conn_new(&x->x_tls, ctx, host)) != 0)
		goto fail;
	if (x->x_tls != NULL)
		tls_conn_set_output(x->x_tls, &x->x_out);
	peer_from_name(&x->x_peer, host, port);
	/* The server's tickets are kept under the name and port dialled. */
	if (x->x_tls != NULL && (rc = resume(x, opts)) < 0)
		goto fail;
	snprintf(portstr, sizeof(portstr), "%u", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	/*
	 * An address literal needs no lookup.  Parsed here, it spares the
	 * threadpool: a hop to a worker thread and back per connection, and
	 * in a process with no other use for threads (the agent), the threads
	 * themselves, with their stacks and malloc arenas.  Failures are
	 * still reported from the loop: the timer's close runs xc_closed.
	 */
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(host, portstr, &hints, &x->x_ai_head) == 0) {
		x->x_ai_next = x->x_ai_head;
		/* No lookup pending, for a teardown to cancel. */
		x->x_state = XS_CONNECTING;
		xport_init_timer(x);
		*out = x;
		xport_try_next(x);
		return 0;
	}
	x->x_ai_head = NULL;
	hints.ai_flags = AI_ADDRCONFIG;
	x->x_dial->d_gai.data = x;
	rc = uv_getaddrinfo(loop, &x->x_dial->d_gai, on_resolved, host, portstr,
	                    &hints);
	if (rc < 0)
		goto fail;
	x->x_state = XS_RESOLVING;
	x->x_open_handles++;
	xport_init_timer(x);
	arm_timer(x, opt_or(x->x_opts.xo_connect_timeout_ms,
	                    XPORT_DEFAULT_TIMEOUT_MS));
	*out = x;
	return 0;
fail:
	xport_free(x);
	return rc;
}

static void
on_pipe_connect(uv_connect_t *req, int status)
{
	struct xport *x = req->data;
	int rc;

	if (x->x_state == XS_CLOSING)
		return;
	if (status < 0) {
		xport_fail(x, status, "connect to '%s': %s", x->x_host,
		           uv_strerror(status));
		return;
	}
	if ((rc = xport_start_stream(x)) < 0)
		xport_fail(x, rc, "read: %s", uv_strerror(rc));
}

int
xport_connect_unix(uv_loop_t *loop, const char *path, const struct xport_cb *cb,
                   void *arg, struct xport **out)
{
	struct xport *x;

	if ((x = xport_alloc(loop, NULL, cb, arg)) == NULL)
		return -ENOMEM;
	if ((x->x_host = strdup(path)) == NULL ||
	    (x->x_dial = calloc(1, sizeof(*x->x_dial))) == NULL) {
		xport_free(x);
		return -ENOMEM;
	}
	xport_init_timer(x);
	x->x_is_pipe = 1;
	peer_from_name(&x->x_peer, "unix", 0);
	uv_pipe_init(loop, &x->x_h.pipe, 0);
	x->x_stream_open = 1;
	x->x_state = XS_CONNECTING;
	x->x_dial->d_req.data = x;
	uv_pipe_connect(&x->x_dial->d_req, &x->x_h.pipe, path, on_pipe_connect);
	arm_timer(x, XPORT_DEFAULT_TIMEOUT_MS);
	*out = x;
	return 0;
}

int
xport_accept(uv_stream_t *server, struct tls_ctx *ctx,
             const struct xport_opts *opts, const struct xport_cb *cb,
             void *arg, struct xport **out)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct xport *x;
	int rc;

	if ((x = xport_alloc(server->loop, opts, cb, arg)) == NULL)
		return -ENOMEM;
	x->x_is_pipe = server->type == UV_NAMED_PIPE;
	if (ctx != NULL && (rc = tls_conn_new(&x->x_tls, ctx, NULL)) != 0) {
		xport_free(x);
		return rc;
	}
	if (x->x_tls != NULL)
		tls_conn_set_output(x->x_tls, &x->x_out);
	xport_init_timer(x);
	if (x->x_is_pipe)
		uv_pipe_init(server->loop, &x->x_h.pipe, 0);
	else
		uv_tcp_init(server->loop, &x->x_h.tcp);
	x->x_stream_open = 1;
	x->x_h.handle.data = x;
	x->x_state = XS_CONNECTING;
	if ((rc = uv_accept(server, &x->x_h.stream)) < 0)
		goto fail;
	if (x->x_is_pipe) {
		struct ucred cred;
		socklen_t clen = sizeof(cred);
		uv_os_fd_t fd;

		peer_from_name(&x->x_peer, "unix", 0);
		/* Who is calling: the operator API records it. */
		if (uv_fileno(&x->x_h.handle, &fd) == 0 &&
		    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) ==
		        0) {
			x->x_have_cred = 1;
			x->x_uid = cred.uid;
		}
	} else {
		if (uv_tcp_getpeername(&x->x_h.tcp, (struct sockaddr *)&ss,
		                       &sslen) == 0)
			peer_from_sockaddr(&x->x_peer, (struct sockaddr *)&ss);
		xport_tune_tcp(x);
	}
	if ((rc = xport_start_stream(x)) < 0)
		goto fail;
	*out = x;
	return 0;
fail:
	/* Close through the normal path, with no callback to the owner. */
	x->x_cb = &xport_nocb;
	xport_teardown(x);
	return rc;
}

void
xport_close(struct xport *x, int err)
{
	if (x->x_state == XS_CLOSING || x->x_state == XS_FLUSHING)
		return;
	if (x->x_err == 0)
		x->x_err = err;
	if (x->x_state != XS_READY) {
		xport_teardown(x);
		return;
	}
	/*
	 * Even after an error, what is queued (say a GOAWAY that explains
	 * it) is worth sending; then the write side is shut down and input
	 * is drained until the peer closes too.  Closing a socket with
	 * unread input would make the kernel send a reset, which can destroy
	 * data the peer has not read yet.  The timer bounds all of it.
	 */
	x->x_state = XS_FLUSHING;
	arm_timer(x, XPORT_CLOSE_FLUSH_MS);
	if (x->x_paused || x->x_blocked) {
		x->x_paused = 0;
		x->x_blocked = 0;
		uv_read_start(&x->x_h.stream, on_alloc, on_read);
	}
	if (err == 0 && x->x_tls != NULL && tls_conn_shutdown(x->x_tls) == 0)
		xport_start_write(x);
	if (xport_queued(x) == 0)
		xport_half_close(x);
}

static void
on_shutdown_done(uv_shutdown_t *req, int status)
{
	struct xport *x = req->data;

	/* EOF from the peer, or the timer, finishes the close. */
	if (status < 0 && x->x_state == XS_FLUSHING)
		xport_teardown(x);
}

static void
xport_half_close(struct xport *x)
{
	if (x->x_shutting || x->x_state != XS_FLUSHING)
		return;
	x->x_shutting = 1;
	x->x_shutreq.data = x;
	if (uv_shutdown(&x->x_shutreq, &x->x_h.stream, on_shutdown_done) < 0)
		xport_teardown(x);
}

uv_loop_t *
xport_loop(const struct xport *x)
{
	return x->x_loop;
}

void
xport_pause(struct xport *x)
{
	if (x->x_paused)
		return;
	x->x_paused = 1;
	if (x->x_stream_open && x->x_state <= XS_READY &&
	    x->x_state != XS_OPENING)
		uv_read_stop(&x->x_h.stream);
}

void
xport_resume(struct xport *x)
{
	if (!x->x_paused)
		return;
	x->x_paused = 0;
	if (!x->x_stream_open || x->x_state == XS_RESOLVING ||
	    x->x_state == XS_CONNECTING || x->x_state == XS_OPENING ||
	    x->x_state > XS_READY)
		return;
	if (!x->x_blocked)
		uv_read_start(&x->x_h.stream, on_alloc, on_read);
	/* Records decrypted before the pause are still in the engine. */
	if (x->x_tls != NULL)
		xport_tls_input(x);
}

const char *
xport_errmsg(const struct xport *x)
{
	if (x->x_errmsg != NULL)
		return x->x_errmsg;
	return x->x_errmsg_lost ? "failed (no memory for the reason)" : "";
}

int
xport_peer_uid(const struct xport *x, uid_t *uid)
{
	if (!x->x_have_cred)
		return -ENOENT;
	*uid = x->x_uid;
	return 0;
}

const struct peer *
xport_peer_addr(const struct xport *x)
{
	return &x->x_peer;
}

int
xport_issue_ticket(struct xport *x, const uint8_t *appdata, size_t len)
{
	int rc;

	if (x->x_tls == NULL)
		return -ENOTSUP;
	if (x->x_state != XS_READY)
		return NCG_ECLOSED;
	if ((rc = tls_conn_issue_ticket(x->x_tls, appdata, len)) != 0)
		return rc;
	xport_start_write(x);
	return 0;
}

int
xport_ticket_appdata(const struct xport *x, const uint8_t **data, size_t *len)
{
	if (x->x_tls == NULL)
		return -ENOENT;
	return tls_conn_ticket_appdata(x->x_tls, data, len);
}

int
xport_resumed(const struct xport *x)
{
	return x->x_tls != NULL && tls_conn_resumed(x->x_tls);
}

int
xport_peer_cert_name(const struct xport *x, char *buf, size_t len)
{
	if (x->x_tls == NULL) {
		if (len > 0)
			buf[0] = '\0';
		return -ENOENT;
	}
	return tls_conn_peer_name(x->x_tls, buf, len);
}

const char *
xport_peer(const struct xport *x)
{
	return x->x_peer.pe_text;
}
