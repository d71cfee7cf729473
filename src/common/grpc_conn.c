/*
 * gRPC connections: h2.c's connection callbacks (ready, new streams,
 * flushed, deferred work, GOAWAY, closed) for both ends, and client
 * connections over TCP or TLS and Unix sockets.  Calls are in grpc_call.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "grpc_int.h"
#include "xport.h"

void
grpc__conn_report_limit(struct grpc_conn *conn, enum grpc_limit what)
{
	struct grpc_server *srv = conn->gc_srv;

	if (srv != NULL && srv->gs_ops != NULL && srv->gs_ops->on_limit != NULL)
		srv->gs_ops->on_limit(conn, what, srv->gs_arg);
}

static void
conn_on_ready(struct h2conn *h, void *arg)
{
	struct grpc_conn *conn = arg;

	(void)h;
	conn->gc_ready = 1;
	if (conn->gc_hs_start != 0)
		conn->gc_hs_ns = uv_hrtime() - conn->gc_hs_start;
	if (conn->gc_srv != NULL) {
		if (conn->gc_srv->gs_ops != NULL &&
		    conn->gc_srv->gs_ops->on_conn_open != NULL)
			conn->gc_srv->gs_ops->on_conn_open(
			    conn, conn->gc_srv->gs_arg);
		return;
	}
	if (conn->gc_ops->on_ready != NULL)
		conn->gc_ops->on_ready(conn, conn->gc_arg);
}

static void *
conn_on_stream_open(struct h2conn *h, int32_t stream_id, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_call *c;

	(void)h;
	if (conn->gc_srv == NULL || conn->gc_srv->gs_shutdown)
		return NULL;
	if (!conn->gc_trusted && conn->gc_opts.go_preauth_streams != 0 &&
	    conn->gc_nstreams >= conn->gc_opts.go_preauth_streams) {
		/* A peer ignoring our SETTINGS; the stream is refused. */
		grpc__conn_report_limit(conn, GRPC_LIMIT_STREAMS);
		return NULL;
	}
	if ((c = grpc__call_new(conn, 1)) == NULL)
		return NULL;
	c->ca_stream_id = stream_id;
	c->ca_counted = 1;
	conn->gc_nstreams++;
	return c;
}

/*
 * Tells calls that wanted room that there is some.  h2.c runs this with
 * its flushes deferred, so nothing here can end a call under us.
 */
static void
conn_on_flushed(struct h2conn *h, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_call *c, *next;

	(void)h;
	for (c = LIST_FIRST(&conn->gc_calls); c != NULL; c = next) {
		next = LIST_NEXT(c, ca_entry);
		if (!c->ca_want_writable || c->ca_life == LIFE_ENDED)
			continue;
		c->ca_want_writable = 0;
		if (c->ca_ops != NULL && c->ca_ops->on_writable != NULL)
			c->ca_ops->on_writable(c, c->ca_arg);
	}
}

/* Delivers the input of calls resumed since the loop last came by. */
static void
conn_on_deferred(struct h2conn *h, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_call *c, *next;

	(void)h;
	for (c = LIST_FIRST(&conn->gc_calls); c != NULL; c = next) {
		next = LIST_NEXT(c, ca_entry);
		if (!c->ca_want_process)
			continue;
		c->ca_want_process = 0;
		grpc__call_process(c);
		grpc__call_end_pending(c); /* may free c */
	}
}

static void
conn_on_goaway(struct h2conn *h, uint32_t error_code, const uint8_t *debug,
               size_t debuglen, void *arg)
{
	struct grpc_conn *conn = arg;
	char text[128];
	size_t n = debuglen < sizeof(text) - 1 ? debuglen : sizeof(text) - 1;

	if (n > 0)
		memcpy(text, debug, n);
	text[n] = '\0';
	if (conn->gc_srv != NULL)
		return;
	/* As gRPC Core clients do: back off our keepalive pings. */
	if (error_code == NGHTTP2_ENHANCE_YOUR_CALM &&
	    strcmp(text, "too_many_pings") == 0 && h2_ping_interval(h) > 0) {
		unsigned ms = h2_ping_interval(h);
		unsigned max = conn->gc_opts.go_ping_interval_max_ms;

		ms = ms > UINT32_MAX / 2 ? UINT32_MAX : ms * 2;
		if (max > 0 && ms > max)
			ms = max > h2_ping_interval(h) ? max
			                               : h2_ping_interval(h);
		h2_set_ping_interval(h, ms);
	}
	if (conn->gc_ops->on_goaway != NULL)
		conn->gc_ops->on_goaway(conn, error_code, text, conn->gc_arg);
}

static void
conn_on_closed(struct h2conn *h, int err, const char *reason, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_server *srv = conn->gc_srv;
	struct grpc_call *c;
	char msg[256];

	(void)h;
	snprintf(msg, sizeof(msg), "connection closed: %s", reason);
	/* Streams get no close callback of their own now; end them here. */
	while ((c = LIST_FIRST(&conn->gc_calls)) != NULL) {
		assert(c->ca_life == LIFE_OPEN || c->ca_end_pending);
		grpc__call_set_life(c, LIFE_CLOSED);
		if (c->ca_end_pending && c->ca_deliver == DELIVER_RUNNING) {
			/*
			 * Its stream ended whole; what the deferred pass was
			 * to deliver goes now, before the connection does.
			 */
			grpc__call_process(c);
			if (c->ca_deliver == DELIVER_PAUSED) /* paused again */
				grpc__call_finalize(c, GRPC_STATUS_UNAVAILABLE,
				                    msg);
			else
				grpc__call_end_pending(c);
			continue;
		}
		/* A call with messages waiting (ca_end_pending) loses them. */
		if (c->ca_server)
			grpc__call_finalize(c, GRPC_STATUS_CANCELLED, msg);
		else if (c->ca_local_status >= 0)
			grpc__call_finalize(c, c->ca_local_status,
			                    c->ca_local_message);
		else
			grpc__call_finalize(c, GRPC_STATUS_UNAVAILABLE, msg);
	}
	if (srv != NULL) {
		LIST_REMOVE(conn, gc_entry);
		if (srv->gs_ops != NULL && srv->gs_ops->on_conn_closed != NULL)
			srv->gs_ops->on_conn_closed(conn, err, reason,
			                            srv->gs_arg);
	} else if (conn->gc_ops->on_closed != NULL)
		conn->gc_ops->on_closed(conn, err, reason, conn->gc_arg);
	free(conn->gc_authority);
	free(conn);
	if (srv != NULL)
		grpc__server_conn_gone(srv);
}

const struct h2_stream_ops grpc__h2_ops = {
    .on_ready = conn_on_ready,
    .on_stream_open = conn_on_stream_open,
    .on_header = grpc__call_on_header,
    .on_headers_end = grpc__call_on_headers_end,
    .on_data = grpc__call_on_data,
    .on_data_end = grpc__call_on_data_end,
    .on_send_data = grpc__call_send_data,
    .on_end_sent = grpc__call_on_end_sent,
    .on_stream_close = grpc__call_on_stream_close,
    .on_flushed = conn_on_flushed,
    .on_deferred = conn_on_deferred,
    .on_goaway = conn_on_goaway,
    .on_closed = conn_on_closed,
};

void
grpc__opts_defaults(struct grpc_opts *o, const struct grpc_opts *in)
{
	if (in != NULL)
		*o = *in;
	else
		memset(o, 0, sizeof(*o));
	if (o->go_max_message == 0)
		o->go_max_message = GRPC_DEFAULT_MAX_MESSAGE;
}

struct h2_opts
grpc__h2_opts_from(const struct grpc_opts *o, int server)
{
	struct h2_opts h = {0};

	h.ho_server = server;
	h.ho_max_streams = o->go_max_streams;
	h.ho_ping_interval_ms = o->go_ping_interval_ms;
	h.ho_ping_timeout_ms = o->go_ping_timeout_ms;
	h.ho_reset_burst = o->go_reset_burst;
	h.ho_reset_rate = o->go_reset_rate;
	return h;
}

static int
conn_new_client(const struct grpc_opts *opts, const struct grpc_conn_ops *ops,
                void *arg, struct grpc_conn **out)
{
	struct grpc_conn *conn;
	struct h2_opts ho;
	int rc;

	if ((conn = calloc(1, sizeof(*conn))) == NULL)
		return -ENOMEM;
	grpc__opts_defaults(&conn->gc_opts, opts);
	conn->gc_ops = ops;
	conn->gc_arg = arg;
	LIST_INIT(&conn->gc_calls);
	ho = grpc__h2_opts_from(&conn->gc_opts, 0);
	if ((rc = h2_new(&ho, &grpc__h2_ops, conn, &conn->gc_h2)) != 0) {
		free(conn);
		return rc;
	}
	*out = conn;
	return 0;
}

void
grpc__conn_discard(struct grpc_conn *conn)
{
	h2_discard(conn->gc_h2);
	free(conn->gc_authority);
	free(conn);
}

int
grpc_conn_connect(uv_loop_t *loop, const char *host, uint16_t port,
                  struct tls_ctx *ctx, const struct grpc_opts *opts,
                  const struct grpc_conn_ops *ops, void *arg,
                  struct grpc_conn **out)
{
	struct grpc_conn *conn;
	struct xport *x;
	char auth[300];
	int rc;

	if (host == NULL || strlen(host) > 255)
		return -EINVAL;
	if ((rc = conn_new_client(opts, ops, arg, &conn)) != 0)
		return rc;
	conn->gc_loop = loop;
	if (strchr(host, ':') != NULL)
		snprintf(auth, sizeof(auth), "[%s]:%u", host, port);
	else
		snprintf(auth, sizeof(auth), "%s:%u", host, port);
	conn->gc_tls = ctx != NULL;
	if ((conn->gc_authority = strdup(auth)) == NULL) {
		grpc__conn_discard(conn);
		return -ENOMEM;
	}
	rc = xport_connect(loop, host, port, ctx, &conn->gc_opts.go_xport,
	                   &h2_xport_cb, conn->gc_h2, &x);
	/* Read at the connect only: the caller's string may go later. */
	conn->gc_opts.go_xport.xo_resume_tag = NULL;
	if (rc != 0) {
		grpc__conn_discard(conn);
		return rc;
	}
	h2_attach(conn->gc_h2, x);
	*out = conn;
	return 0;
}

int
grpc_conn_connect_unix(uv_loop_t *loop, const char *path,
                       const struct grpc_opts *opts,
                       const struct grpc_conn_ops *ops, void *arg,
                       struct grpc_conn **out)
{
	struct grpc_conn *conn;
	struct xport *x;
	int rc;

	if ((rc = conn_new_client(opts, ops, arg, &conn)) != 0)
		return rc;
	conn->gc_loop = loop;
	if ((conn->gc_authority = strdup("localhost")) == NULL) {
		grpc__conn_discard(conn);
		return -ENOMEM;
	}
	if ((rc = xport_connect_unix(loop, path, &h2_xport_cb, conn->gc_h2,
	                             &x)) != 0) {
		grpc__conn_discard(conn);
		return rc;
	}
	h2_attach(conn->gc_h2, x);
	*out = conn;
	return 0;
}

void
grpc_conn_close(struct grpc_conn *conn, int err)
{
	if (err == 0)
		h2_shutdown(conn->gc_h2);
	else
		h2_close(conn->gc_h2, err, ncg_strerror(err));
}

const struct peer *
grpc_conn_peer_addr(const struct grpc_conn *conn)
{
	static const struct peer closed = {.pe_host = "(closed)",
	                                   .pe_text = "(closed)"};
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_peer_addr(x) : &closed;
}

int
grpc_conn_issue_ticket(struct grpc_conn *conn, const uint8_t *appdata,
                       size_t len)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_issue_ticket(x, appdata, len) : NCG_ECLOSED;
}

int
grpc_conn_ticket_appdata(const struct grpc_conn *conn, const uint8_t **data,
                         size_t *len)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_ticket_appdata(x, data, len) : -ENOENT;
}

int
grpc_conn_peer_cert_name(const struct grpc_conn *conn, char *buf, size_t len)
{
	struct xport *x = h2_xport(conn->gc_h2);

	if (x == NULL) {
		if (len > 0)
			buf[0] = '\0';
		return -ENOENT;
	}
	return xport_peer_cert_name(x, buf, len);
}

int
grpc_conn_resumed(const struct grpc_conn *conn)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL && xport_resumed(x);
}

int
grpc_conn_handshake(const struct grpc_conn *conn, uint64_t *ns)
{
	if (conn->gc_hs_start == 0)
		return -1;
	if (!conn->gc_ready)
		return 0;
	if (ns != NULL)
		*ns = conn->gc_hs_ns;
	return 1;
}

const char *
grpc_conn_peer(const struct grpc_conn *conn)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_peer(x) : "(closed)";
}

void
grpc_conn_rx_counts(const struct grpc_conn *conn, uint64_t *inplace,
                    uint64_t *copied)
{
	*inplace = conn->gc_rx_inplace;
	*copied = conn->gc_rx_copied;
}

int
grpc_conn_peer_uid(const struct grpc_conn *conn, uid_t *uid)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_peer_uid(x, uid) : -ENOENT;
}

uv_loop_t *
grpc_conn_loop(const struct grpc_conn *conn)
{
	return conn->gc_loop;
}

void *
grpc_conn_arg(const struct grpc_conn *conn)
{
	return conn->gc_arg;
}

void
grpc_conn_set_arg(struct grpc_conn *conn, void *arg)
{
	conn->gc_arg = arg;
}

void
grpc_conn_set_trusted(struct grpc_conn *conn)
{
	struct grpc_server *srv = conn->gc_srv;

	if (conn->gc_trusted || srv == NULL)
		return;
	conn->gc_trusted = 1;
	if (conn->gc_opts.go_preauth_streams != 0)
		h2_set_max_streams(conn->gc_h2, conn->gc_opts.go_max_streams);
	if (srv->gs_ops != NULL && srv->gs_ops->on_conn_trusted != NULL)
		srv->gs_ops->on_conn_trusted(conn, srv->gs_arg);
}

int
grpc_conn_trusted(const struct grpc_conn *conn)
{
	return conn->gc_trusted;
}

unsigned
grpc_conn_pings_acked(const struct grpc_conn *conn)
{
	return h2_pings_acked(conn->gc_h2);
}

unsigned
grpc_conn_ping_interval(const struct grpc_conn *conn)
{
	return h2_ping_interval(conn->gc_h2);
}
