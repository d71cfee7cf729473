/*
 * The xport.h API over memory, for the h2 and gRPC fuzz targets and unit
 * tests: see memxport.h.  Nothing here touches a socket; one libuv timer per
 * transport delivers what the real transport delivers from the loop
 * (xc_drain after writes, xc_closed after a close).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "memxport.h"
#include "xport.h"

enum memxport_state {
	MX_CONNECTING, /* client, until memxport_ready() */
	MX_OPENING,    /* accepted: xc_ready is due from the loop */
	MX_READY,
	MX_CLOSING, /* xc_closed is due from the loop */
};

struct xport {
	uv_loop_t *x_loop;
	uv_timer_t x_timer;
	const struct xport_cb *x_cb;
	void *x_arg;
	enum memxport_state x_state;
	int x_err;
	int x_paused;
	size_t x_queued; /* written since the last xc_drain */
	memxport_sink_fn x_sink;
	void *x_sink_arg;
	struct peer x_peer;
	char x_errmsg[300];
};

static void on_timer(uv_timer_t *);

static struct xport *memxport_newest;
static size_t memxport_nlive;
static size_t memxport_npending; /* timers armed and not yet run */

/* Schedules on_timer() for the next loop turn. */
static void
memxport_arm(struct xport *x)
{
	if (!uv_is_active((uv_handle_t *)&x->x_timer))
		memxport_npending++;
	uv_timer_start(&x->x_timer, on_timer, 0, 0);
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct xport *x = h->data;

	if (memxport_newest == x)
		memxport_newest = NULL;
	free(x);
	memxport_nlive--;
}

static void
on_timer(uv_timer_t *t)
{
	struct xport *x = t->data;

	memxport_npending--;
	if (x->x_state == MX_OPENING) {
		/* As the real transport, ready comes from the loop. */
		x->x_state = MX_READY;
		x->x_cb->xc_ready(x, x->x_arg);
		return;
	}
	if (x->x_state == MX_CLOSING) {
		if (x->x_cb->xc_closed != NULL)
			x->x_cb->xc_closed(x, x->x_err, x->x_arg);
		uv_close((uv_handle_t *)&x->x_timer, on_timer_closed);
		return;
	}
	/* The "kernel" took everything: the real transport says so too. */
	x->x_queued = 0;
	if (x->x_cb->xc_drain != NULL)
		x->x_cb->xc_drain(x, x->x_arg);
}

static struct xport *
memxport_new(uv_loop_t *loop, const struct xport_cb *cb, void *arg,
             const char *host, uint16_t port)
{
	struct xport *x;

	if ((x = calloc(1, sizeof(*x))) == NULL)
		return NULL;
	x->x_loop = loop;
	x->x_cb = cb;
	x->x_arg = arg;
	peer_from_name(&x->x_peer, host, port);
	uv_timer_init(loop, &x->x_timer);
	x->x_timer.data = x;
	memxport_newest = x;
	memxport_nlive++;
	return x;
}

int
xport_connect(uv_loop_t *loop, const char *host, uint16_t port,
              struct tls_ctx *ctx, const struct xport_opts *opts,
              const struct xport_cb *cb, void *arg, struct xport **out)
{
	struct xport *x;

	(void)opts;
	if (host == NULL || *host == '\0' || port == 0)
		return -EINVAL;
	if (ctx != NULL)
		return -ENOTSUP; /* no TLS over memory */
	if ((x = memxport_new(loop, cb, arg, host, port)) == NULL)
		return -ENOMEM;
	x->x_state = MX_CONNECTING;
	*out = x;
	return 0;
}

int
xport_connect_unix(uv_loop_t *loop, const char *path, const struct xport_cb *cb,
                   void *arg, struct xport **out)
{
	struct xport *x;

	(void)path;
	if ((x = memxport_new(loop, cb, arg, "unix", 0)) == NULL)
		return -ENOMEM;
	x->x_state = MX_CONNECTING;
	*out = x;
	return 0;
}

int
xport_accept(uv_stream_t *server, struct tls_ctx *ctx,
             const struct xport_opts *opts, const struct xport_cb *cb,
             void *arg, struct xport **out)
{
	struct xport *x;

	(void)opts;
	if (ctx != NULL)
		return -ENOTSUP;
	if ((x = memxport_new(server->loop, cb, arg, "192.0.2.1", 40000)) ==
	    NULL)
		return -ENOMEM;
	/* A cleartext accept is ready from the loop, after this returns. */
	x->x_state = MX_OPENING;
	memxport_arm(x);
	*out = x;
	return 0;
}

int
xport_write(struct xport *x, const uint8_t *data, size_t len)
{
	if (x->x_state != MX_READY)
		return NCG_ECLOSED;
	if (x->x_sink != NULL)
		x->x_sink(data, len, x->x_sink_arg);
	x->x_queued += len;
	if (!uv_is_active((uv_handle_t *)&x->x_timer))
		memxport_arm(x);
	return 0;
}

size_t
xport_queued(const struct xport *x)
{
	return x->x_queued;
}

void
xport_close(struct xport *x, int err)
{
	if (x->x_state == MX_CLOSING)
		return;
	if (x->x_err == 0)
		x->x_err = err;
	x->x_state = MX_CLOSING;
	memxport_arm(x);
}

uv_loop_t *
xport_loop(const struct xport *x)
{
	return x->x_loop;
}

void
xport_pause(struct xport *x)
{
	x->x_paused = 1;
}

void
xport_resume(struct xport *x)
{
	x->x_paused = 0;
}

const char *
xport_errmsg(const struct xport *x)
{
	return x->x_errmsg;
}

int
xport_peer_uid(const struct xport *x, uid_t *uid)
{
	(void)x;
	(void)uid;
	return -ENOENT;
}

const struct peer *
xport_peer_addr(const struct xport *x)
{
	return &x->x_peer;
}

const char *
xport_peer(const struct xport *x)
{
	return x->x_peer.pe_text;
}

int
xport_peer_cert_name(const struct xport *x, char *buf, size_t len)
{
	(void)x;
	if (len > 0)
		buf[0] = '\0';
	return -ENOENT;
}

/* No TLS here: no session tickets, and never a resumed handshake. */
int
xport_issue_ticket(struct xport *x, const uint8_t *appdata, size_t len)
{
	(void)x;
	(void)appdata;
	(void)len;
	return -ENOTSUP;
}

int
xport_ticket_appdata(const struct xport *x, const uint8_t **data, size_t *len)
{
	(void)x;
	(void)data;
	(void)len;
	return -ENOENT;
}

int
xport_resumed(const struct xport *x)
{
	(void)x;
	return 0;
}

struct xport *
memxport_last(void)
{
	return memxport_newest;
}

void
memxport_ready(struct xport *x)
{
	if (x->x_state != MX_CONNECTING)
		return;
	x->x_state = MX_READY;
	x->x_cb->xc_ready(x, x->x_arg);
}

int
memxport_feed(struct xport *x, const uint8_t *data, size_t len)
{
	if (x->x_state != MX_READY)
		return -EPIPE;
	if (x->x_paused)
		return -EAGAIN;
	x->x_cb->xc_data(x, data, len, x->x_arg);
	return 0;
}

void
memxport_eof(struct xport *x)
{
	if (x->x_state == MX_CLOSING)
		return;
	snprintf(x->x_errmsg, sizeof(x->x_errmsg), "%s closed the connection",
	         x->x_peer.pe_text);
	xport_close(x, NCG_ECLOSED);
}

void
memxport_set_sink(struct xport *x, memxport_sink_fn fn, void *arg)
{
	x->x_sink = fn;
	x->x_sink_arg = arg;
}

size_t
memxport_live(void)
{
	return memxport_nlive;
}

size_t
memxport_pending(void)
{
	return memxport_npending;
}
