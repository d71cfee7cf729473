/*
 * The CLI's one connection to ncgrpcd's operator socket (gRPC h2c on a
 * Unix socket).  A CLI process runs one command, so the connection is a
 * single static object.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "err.h"
#include "grpc.h"

static struct {
	struct grpc_conn *oc_conn; /* NULL once closed */
	const char *oc_path;
	const struct opconn_ops *oc_ops;
	void *oc_arg;
	int oc_ready;
	int oc_closing;
} oc;

static void
oc_on_ready(struct grpc_conn *conn, void *arg)
{
	(void)arg;
	oc.oc_ready = 1;
	oc.oc_ops->oo_ready(conn, oc.oc_arg);
}

/* Why the socket cannot be reached, with a hint for the usual causes. */
static void
report_unreachable(int err, const char *reason)
{
	const char *hint = "";

	switch (err) {
	case -ENOENT:
	case -ECONNREFUSED:
		hint = " (is ncgrpcd running? -s names another socket)";
		break;
	case -EACCES:
	case -EPERM:
		hint = " (the socket's group may read and write it: "
		       "operator-socket-group in ncgrpcd.conf)";
		break;
	default:
		break;
	}
	if (err != 0)
		reason = ncg_strerror(err);
	cli_err("cannot reach ncgrpcd on \"%s\": %s%s", oc.oc_path, reason,
	        hint);
}

static void
oc_on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	/* Closed by us before it was ready (an early signal): no error. */
	int unreachable = !oc.oc_ready && !oc.oc_closing;

	(void)conn;
	(void)arg;
	oc.oc_conn = NULL;
	if (unreachable)
		report_unreachable(err, reason);
	oc.oc_ops->oo_closed(unreachable, oc.oc_arg);
}

static const struct grpc_conn_ops oc_conn_ops = {
    .on_ready = oc_on_ready,
    .on_closed = oc_on_closed,
};

int
opconn_open(uv_loop_t *loop, const char *path, const struct opconn_ops *ops,
            void *arg)
{
	int rc;

	memset(&oc, 0, sizeof(oc));
	oc.oc_path = path;
	oc.oc_ops = ops;
	oc.oc_arg = arg;
	rc = grpc_conn_connect_unix(loop, path, NULL, &oc_conn_ops, NULL,
	                            &oc.oc_conn);
	if (rc != 0) {
		oc.oc_conn = NULL;
		report_unreachable(rc, ncg_strerror(rc));
	}
	return rc;
}

void
opconn_close(void)
{
	if (oc.oc_conn == NULL || oc.oc_closing)
		return;
	oc.oc_closing = 1;
	grpc_conn_close(oc.oc_conn, 0);
}

int
opconn_send(struct grpc_call *c, const ProtobufCMessage *m)
{
	return grpc_call_send_pb(c, m);
}

void
opconn_report(int status, const char *message)
{
	if (message == NULL || message[0] == '\0')
		message = grpc_status_name(status);
	cli_err("%s", message);
}
