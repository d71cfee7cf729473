/*
 * gRPC servers: the method table and dispatch of new calls, listeners
 * (TCP with or without TLS, Unix sockets), accepting connections, and
 * graceful shutdown.  Calls are in grpc_call.c, connections in
 * grpc_conn.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "grpc_int.h"
#include "tls.h"
#include "xport.h"

/*
 * The listen backlog asked for by TCP listeners: as deep as the kernel
 * allows, which caps it at net.core.somaxconn (4096 on Linux since 5.4).
 * Connections that may_accept holds wait there, and in a reconnect storm
 * a SYN that finds the backlog full is dropped: the client retries after
 * 1, 2, 4 s, and one whose connect times out sleeps its whole wait before
 * the next try.
 */
#define GRPC_LISTEN_BACKLOG 65535

void
grpc__server_dispatch(struct grpc_call *c)
{
	struct grpc_server *srv = c->ca_conn->gc_srv;
	char msg[300];
	size_t i;

	if (c->ca_bad_request || c->ca_path == NULL) {
		grpc__call_drop(c);
		grpc_call_finish(c, GRPC_STATUS_INTERNAL,
		                 "not a grpc request (method must be POST, "
		                 "content-type application/grpc)",
		                 NULL);
		return;
	}
	grpc__call_start_deadline(c, srv->gs_loop);
	for (i = 0; i < srv->gs_nmethods; i++) {
		if (strcmp(srv->gs_methods[i].gm_path, c->ca_path) != 0)
			continue;
		srv->gs_methods[i].gm_fn(c, srv->gs_methods[i].gm_arg);
		return;
	}
	grpc__call_drop(c);
	snprintf(msg, sizeof(msg), "unknown method '%.256s'", c->ca_path);
	grpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
}

/* Servers. */

int
grpc_server_new(uv_loop_t *loop, const struct grpc_opts *opts,
                const struct grpc_server_ops *ops, void *arg,
                struct grpc_server **out)
{
	struct grpc_server *srv;

	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		return -ENOMEM;
	srv->gs_loop = loop;
	grpc__opts_defaults(&srv->gs_opts, opts);
	srv->gs_ops = ops;
	srv->gs_arg = arg;
	LIST_INIT(&srv->gs_conns);
	uv_timer_init(loop, &srv->gs_resume);
	srv->gs_resume.data = srv;
	*out = srv;
	return 0;
}

int
grpc_server_add_method(struct grpc_server *srv, const char *path,
                       grpc_handler_fn fn, void *arg)
{
	struct grpc_method *m;
	size_t i;

	for (i = 0; i < srv->gs_nmethods; i++)
		if (strcmp(srv->gs_methods[i].gm_path, path) == 0)
			return -EEXIST;
	m = reallocarray(srv->gs_methods, srv->gs_nmethods + 1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	srv->gs_methods = m;
	m = &srv->gs_methods[srv->gs_nmethods];
	if ((m->gm_path = strdup(path)) == NULL)
		return -ENOMEM;
	m->gm_fn = fn;
	m->gm_arg = arg;
	srv->gs_nmethods++;
	return 0;
}

/*
 * Out of memory: accepts the pending connection, if libuv still holds
 * one, and closes it, so that the backlog does not spin and the listening
 * socket is read again.  The handle matches the listener's kind: TCP for
 * the device port, a pipe for the operator socket.  Returns -ENOMEM if it
 * could not even do that.
 */
static int
listener_drop_one(uv_stream_t *s)
{
	union {
		uv_handle_t h;
		uv_stream_t st;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} * u;
	int rc;

	if ((u = malloc(sizeof(*u))) == NULL)
		return -ENOMEM;
	rc = s->type == UV_NAMED_PIPE ? uv_pipe_init(s->loop, &u->pipe, 0)
	                              : uv_tcp_init(s->loop, &u->tcp);
	if (rc != 0) {
		free(u);
		return -ENOMEM;
	}
	(void)uv_accept(s, &u->st); /* nothing may be pending after all */
	uv_close(&u->h, (uv_close_cb)free);
	return 0;
}

static void on_new_connection(uv_stream_t *s, int status);
static void on_resume(uv_timer_t *t);

static int
may_accept(struct grpc_server *srv)
{
	return srv->gs_ops == NULL || srv->gs_ops->may_accept == NULL ||
	       srv->gs_ops->may_accept(srv->gs_arg);
}

/*
 * Leaves the connection libuv accepted, and the backlog behind it, until
 * on_resume accepts again; libuv does not read the listening socket
 * meanwhile.
 */
static void
listener_hold(struct grpc_listener *l)
{
	struct grpc_server *srv = l->gl_srv;

	l->gl_held = 1;
	if (!uv_is_active((uv_handle_t *)&srv->gs_resume))
		uv_timer_start(&srv->gs_resume, on_resume, GRPC_ACCEPT_RETRY_MS,
		               GRPC_ACCEPT_RETRY_MS);
}

/*
 * Accepts on the held listeners again once may_accept allows it; stops
 * once none is held.  Each accept lets libuv read the listening socket
 * again, and the next connection asks may_accept anew.
 */
static void
on_resume(uv_timer_t *t)
{
	struct grpc_server *srv = t->data;
	struct grpc_listener *l;
	size_t i, held = 0;

	for (i = 0; i < srv->gs_nlisteners; i++) {
		l = srv->gs_listeners[i];
		if (!l->gl_held)
			continue;
		if (may_accept(srv)) {
			l->gl_held = 0;
			on_new_connection(&l->gl_h.stream, 0);
		}
		held += l->gl_held;
	}
	if (held == 0)
		uv_timer_stop(t);
}

static void
on_new_connection(uv_stream_t *s, int status)
{
	struct grpc_listener *l = s->data;
	struct grpc_server *srv = l->gl_srv;
	struct grpc_conn *conn;
	struct h2_opts ho;
	struct xport *x;
	int rc;

	if (status < 0 || srv->gs_shutdown)
		return;
	if (!may_accept(srv)) {
		listener_hold(l);
		return;
	}
	if ((conn = calloc(1, sizeof(*conn))) == NULL)
		goto refuse;
	conn->gc_srv = srv;
	conn->gc_loop = srv->gs_loop;
	conn->gc_opts = srv->gs_opts;
	conn->gc_tls = l->gl_ctx != NULL;
	LIST_INIT(&conn->gc_calls);
	ho = grpc__h2_opts_from(&conn->gc_opts, 1);
	if (conn->gc_opts.go_preauth_streams != 0 &&
	    (ho.ho_max_streams == 0 ||
	     conn->gc_opts.go_preauth_streams < ho.ho_max_streams))
		ho.ho_max_streams = conn->gc_opts.go_preauth_streams;
	if (h2_new(&ho, &grpc__h2_ops, conn, &conn->gc_h2) != 0) {
		free(conn);
		goto refuse;
	}
	conn->gc_hs_start = conn->gc_tls ? uv_hrtime() : 0;
	if (xport_accept(s, l->gl_ctx, &srv->gs_opts.go_xport, &h2_xport_cb,
	                 conn->gc_h2, &x) != 0) {
		/* It may have failed before taking the connection from libuv.
		 */
		grpc__conn_discard(conn);
		goto refuse;
	}
	h2_attach(conn->gc_h2, x);
	LIST_INSERT_HEAD(&srv->gs_conns, conn, gc_entry);
	if (srv->gs_ops != NULL && srv->gs_ops->on_conn_accept != NULL &&
	    (rc = srv->gs_ops->on_conn_accept(conn, srv->gs_arg)) != 0) {
		conn->gc_hs_start = 0; /* not a handshake that failed */
		h2_close(conn->gc_h2, rc, "connection refused by a limit");
	}
	return;
refuse:
	if (listener_drop_one(s) != 0)
		listener_hold(l); /* try again shortly */
}

static struct grpc_listener *
listener_new(struct grpc_server *srv, struct tls_ctx *ctx)
{
	struct grpc_listener *l;

	if (srv->gs_nlisteners == GRPC_MAX_LISTENERS)
		return NULL;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->gl_srv = srv;
	l->gl_ctx = ctx;
	l->gl_h.handle.data = l;
	return l;
}

static void
on_listener_closed(uv_handle_t *h)
{
	struct grpc_listener *l = h->data;
	struct grpc_server *srv = l->gl_srv;

	free(l);
	if (srv != NULL && srv->gs_shutdown) {
		srv->gs_open_listeners--;
		grpc__server_conn_gone(srv);
	}
}

int
grpc_server_listen(struct grpc_server *srv, const char *host, uint16_t port,
                   struct tls_ctx *ctx)
{
	struct sockaddr_storage ss;
	struct grpc_listener *l;
	int len = sizeof(ss);
	int rc;

	memset(&ss, 0, sizeof(ss));
	if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0 &&
	    uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0)
		return -EINVAL;
	if ((l = listener_new(srv, ctx)) == NULL)
		return -ENOMEM;
	uv_tcp_init(srv->gs_loop, &l->gl_h.tcp);
	l->gl_h.handle.data = l;
	if ((rc = uv_tcp_bind(&l->gl_h.tcp, (struct sockaddr *)&ss, 0)) < 0 ||
	    (rc = uv_listen(&l->gl_h.stream, GRPC_LISTEN_BACKLOG,
	                    on_new_connection)) < 0) {
		l->gl_srv = NULL;
		uv_close(&l->gl_h.handle, on_listener_closed);
		return rc;
	}
	if (uv_tcp_getsockname(&l->gl_h.tcp, (struct sockaddr *)&ss, &len) ==
	    0) {
		if (ss.ss_family == AF_INET6)
			srv->gs_port =
			    ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		else
			srv->gs_port =
			    ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	srv->gs_listeners[srv->gs_nlisteners++] = l;
	return 0;
}

int
grpc_server_listen_unix(struct grpc_server *srv, const char *path, int mode)
{
	struct grpc_listener *l;
	int rc;

	if ((l = listener_new(srv, NULL)) == NULL)
		return -ENOMEM;
	uv_pipe_init(srv->gs_loop, &l->gl_h.pipe, 0);
	l->gl_h.handle.data = l;
	/* A socket file left by a previous run would make bind fail. */
	(void)unlink(path);
	if ((rc = uv_pipe_bind(&l->gl_h.pipe, path)) < 0 ||
	    (rc = chmod(path, (mode_t)mode) < 0 ? -errno : 0) < 0 ||
	    (rc = uv_listen(&l->gl_h.stream, 128, on_new_connection)) < 0) {
		l->gl_srv = NULL;
		uv_close(&l->gl_h.handle, on_listener_closed);
		return rc;
	}
	srv->gs_listeners[srv->gs_nlisteners++] = l;
	return 0;
}

uint16_t
grpc_server_port(const struct grpc_server *srv)
{
	return srv->gs_port;
}

static void
server_free(struct grpc_server *srv)
{
	size_t i;

	for (i = 0; i < srv->gs_nmethods; i++)
		free(srv->gs_methods[i].gm_path);
	free(srv->gs_methods);
	free(srv);
}

static void
on_resume_closed(uv_handle_t *h)
{
	struct grpc_server *srv = h->data;

	srv->gs_open_listeners--;
	grpc__server_conn_gone(srv);
}

static void
on_grace_closed(uv_handle_t *h)
{
	struct grpc_server *srv = h->data;
	void (*done)(void *) = srv->gs_done;
	void *arg = srv->gs_done_arg;

	server_free(srv);
	if (done != NULL)
		done(arg);
}

/*
 * Called whenever a listener or a connection goes away.  During shutdown,
 * once nothing is left, closing the grace timer finishes the shutdown.
 */
void
grpc__server_conn_gone(struct grpc_server *srv)
{
	if (!srv->gs_shutdown || srv->gs_grace_closing ||
	    srv->gs_open_listeners > 0 || !LIST_EMPTY(&srv->gs_conns))
		return;
	srv->gs_grace_closing = 1;
	uv_close((uv_handle_t *)&srv->gs_grace, on_grace_closed);
}

static void
on_grace_timeout(uv_timer_t *t)
{
	struct grpc_server *srv = t->data;
	struct grpc_conn *conn, *next;

	for (conn = LIST_FIRST(&srv->gs_conns); conn != NULL; conn = next) {
		next = LIST_NEXT(conn, gc_entry);
		h2_close(conn->gc_h2, NCG_ECANCELLED, "server shutting down");
	}
}

void
grpc_server_shutdown(struct grpc_server *srv, unsigned grace_ms,
                     void (*done)(void *), void *arg)
{
	struct grpc_conn *conn, *next;
	size_t i;

	if (srv->gs_shutdown)
		return;
	srv->gs_shutdown = 1;
	srv->gs_done = done;
	srv->gs_done_arg = arg;
	uv_timer_init(srv->gs_loop, &srv->gs_grace);
	srv->gs_grace.data = srv;
	uv_timer_start(&srv->gs_grace, on_grace_timeout, grace_ms, 0);
	/* The resume timer closes with the listeners, counted with them. */
	srv->gs_open_listeners = srv->gs_nlisteners + 1;
	uv_close((uv_handle_t *)&srv->gs_resume, on_resume_closed);
	for (i = 0; i < srv->gs_nlisteners; i++)
		uv_close(&srv->gs_listeners[i]->gl_h.handle,
		         on_listener_closed);
	srv->gs_nlisteners = 0;
	for (conn = LIST_FIRST(&srv->gs_conns); conn != NULL; conn = next) {
		next = LIST_NEXT(conn, gc_entry);
		h2_shutdown(conn->gc_h2);
	}
	grpc__server_conn_gone(srv);
}
