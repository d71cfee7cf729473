/*
 * The operator API (proto/ncgrpc_operator.proto) on the local Unix socket:
 * ListDevices, WatchDevices, and the first step of Session, which hands
 * the call to the broker once its open message arrived.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "forward.h"
#include "grpc.h"
#include "log.h"
#include "ncgrpc_operator.pb-c.h"
#include "operator.h"
#include "termext.h"
#include "utf8.h"

#define OPSVC "/ncgrpc.operator.v1.Operator/"

/* A message that cannot be queued ends the call: it must not be lost. */
static void
send_packed(struct grpc_call *c, const ProtobufCMessage *m)
{
	int rc = grpc_call_send_pb(c, m);

	if (rc != 0 && rc != -EPIPE)
		grpc_call_cancel(c);
}

static void
fill_device(Ncgrpc__Operator__V1__Device *d,
            const struct broker_device_info *bi)
{
	ncgrpc__operator__v1__device__init(d);
	d->device_id = (char *)(uintptr_t)bi->bi_id;
	d->peer = (char *)(uintptr_t)bi->bi_peer;
	d->connected_since = bi->bi_since;
	d->instance_id = bi->bi_instance;
	d->idle_connections = bi->bi_idle;
	d->active_sessions = bi->bi_sessions;
}

/* ListDevices: answered at half-close; the request has no fields. */

static void
list_on_half_close(struct grpc_call *c, void *arg)
{
	struct broker *b = arg;
	Ncgrpc__Operator__V1__ListDevicesResponse resp =
	    NCGRPC__OPERATOR__V1__LIST_DEVICES_RESPONSE__INIT;
	Ncgrpc__Operator__V1__Device *devs = NULL, **ptrs = NULL;
	struct broker_device_info *bi = NULL;
	size_t n, i;

	if (broker_devices(b, &bi, &n) != 0 ||
	    (n > 0 && ((devs = calloc(n, sizeof(*devs))) == NULL ||
	               (ptrs = calloc(n, sizeof(*ptrs))) == NULL))) {
		free(devs);
		free(bi);
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	for (i = 0; i < n; i++) {
		fill_device(&devs[i], &bi[i]);
		ptrs[i] = &devs[i];
	}
	resp.n_devices = n;
	resp.devices = ptrs;
	send_packed(c, &resp.base);
	grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
	free(ptrs);
	free(devs);
	free(bi);
}

static void
ignore_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	(void)c;
	(void)msg;
	(void)len;
	(void)arg;
}

static void
nothing_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	(void)c;
	(void)status;
	(void)msg;
	(void)arg;
}

static const struct grpc_call_ops list_ops = {
    .on_message = ignore_message,
    .on_half_close = list_on_half_close,
    .on_end = nothing_on_end,
};

static void
handle_list(struct grpc_call *c, void *arg)
{
	grpc_call_set_ops(c, &list_ops, arg);
}

/* WatchDevices: a server stream of events until the client cancels. */

struct watch {
	struct broker *w_b;
	struct grpc_call *w_call;
	void *w_handle;
	int w_started;
	int w_overflow;
};

static void
send_event(struct watch *w, enum broker_event ev,
           const struct broker_device_info *bi, const char *reason)
{
	Ncgrpc__Operator__V1__DeviceEvent e =
	    NCGRPC__OPERATOR__V1__DEVICE_EVENT__INIT;
	Ncgrpc__Operator__V1__Device d;

	if (w->w_overflow)
		return;
	/* A watcher that does not read is cut off, not buffered forever. */
	if (grpc_call_queued(w->w_call) > 4 * GRPC_CALL_HIWAT) {
		w->w_overflow = 1;
		grpc_call_finish(w->w_call, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "watcher too slow; events dropped", NULL);
		return;
	}
	fill_device(&d, bi);
	e.kind = ev == BROKER_EV_CONNECTED
	             ? NCGRPC__OPERATOR__V1__DEVICE_EVENT__KIND__CONNECTED
	         : ev == BROKER_EV_DISCONNECTED
	             ? NCGRPC__OPERATOR__V1__DEVICE_EVENT__KIND__DISCONNECTED
	             : NCGRPC__OPERATOR__V1__DEVICE_EVENT__KIND__RESTARTED;
	e.device = &d;
	e.reason = (char *)(uintptr_t)(reason != NULL ? reason : "");
	send_packed(w->w_call, &e.base);
}

static void
on_device_event(enum broker_event ev, const struct broker_device_info *bi,
                const char *reason, void *arg)
{
	struct watch *w = arg;

	if (ev == BROKER_EV_SHUTDOWN) {
		if (!w->w_overflow) {
			w->w_overflow = 1;
			grpc_call_finish(w->w_call, GRPC_STATUS_UNAVAILABLE,
			                 reason, NULL);
		}
		return;
	}
	send_event(w, ev, bi, reason);
}

static void
watch_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct watch *w = arg;
	Ncgrpc__Operator__V1__WatchDevicesRequest *req;
	struct broker_device_info *bi;
	size_t n, i;

	if (w->w_started)
		return;
	w->w_started = 1;
	req =
	    ncgrpc__operator__v1__watch_devices_request__unpack(NULL, len, msg);
	if (req == NULL) {
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "malformed WatchDevicesRequest", NULL);
		return;
	}
	grpc_call_send_headers(c, NULL);
	if (req->include_current && broker_devices(w->w_b, &bi, &n) == 0) {
		for (i = 0; i < n; i++)
			send_event(w, BROKER_EV_CONNECTED, &bi[i], "connected");
		free(bi);
	}
	ncgrpc__operator__v1__watch_devices_request__free_unpacked(req, NULL);
	if ((w->w_handle = broker_watch(w->w_b, on_device_event, w)) == NULL)
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
}

static void
watch_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct watch *w = arg;

	(void)c;
	(void)status;
	(void)msg;
	if (w->w_handle != NULL)
		broker_unwatch(w->w_b, w->w_handle);
	free(w);
}

static const struct grpc_call_ops watch_ops = {
    .on_message = watch_on_message,
    .on_end = watch_on_end,
};

static void
handle_watch(struct grpc_call *c, void *arg)
{
	struct watch *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	w->w_b = arg;
	w->w_call = c;
	grpc_call_set_ops(c, &watch_ops, w);
}

/* Session: the open message, then the broker takes the call over. */

/*
 * The terminal asked for in open.  -EINVAL for a mode we do not know or a
 * window size out of range; a terminal type we would not pass on is
 * dropped (the device uses its default), as the proto says.
 */
static int
open_terminal(const Ncgrpc__Operator__V1__SessionOpen *o,
              struct broker_terminal *out)
{
	struct termext_window w = {0, 0};
	size_t tl = o->term != NULL ? strlen(o->term) : 0;

	memset(out, 0, sizeof(*out));
	if (o->terminal != NCGRPC__OPERATOR__V1__TERMINAL_MODE__LINE &&
	    o->terminal != NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW)
		return -EINVAL;
	if (o->window != NULL &&
	    termext_window_check(o->window->cols, o->window->rows, &w) != 0)
		return -EINVAL;
	out->bt_raw = o->terminal == NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW;
	out->bt_cols = w.tw_cols;
	out->bt_rows = w.tw_rows;
	if (termext_term_ok(o->term, tl) && tl < sizeof(out->bt_term))
		memcpy(out->bt_term, o->term, tl + 1);
	return 0;
}

/* dst holds BROKER_IDENT_MAX bytes; NULL (absent) and longer s are cut. */
static void
copy_claim(char *dst, const char *s)
{
	snprintf(dst, BROKER_IDENT_MAX, "%s", s != NULL ? s : "");
}

/*
 * The hop of a session that another node forwarded: "node:NAME", NAME
 * being the CN of its verified certificate, after the via it claims.
 */
static void
add_node_hop(struct grpc_call *c, struct broker_ident *ident)
{
	char node[64], via[BROKER_IDENT_MAX];

	if (grpc_conn_peer_cert_name(grpc_call_conn(c), node, sizeof(node)) !=
	    0)
		snprintf(node, sizeof(node), "?");
	snprintf(via, sizeof(via), "%.180s%snode:%.63s", ident->bi_via,
	         ident->bi_via[0] != '\0' ? "," : "", node);
	memcpy(ident->bi_via, via, sizeof(via));
}

static void
session_open(struct grpc_call *c, const uint8_t *msg, size_t len,
             struct broker *b, int from_node)
{
	Ncgrpc__Operator__V1__SessionInput *in;
	Ncgrpc__Operator__V1__SessionOpen *o;
	struct broker_terminal term;
	struct broker_ident ident;
	char id[256];

	in = ncgrpc__operator__v1__session_input__unpack(NULL, len, msg);
	if (in == NULL ||
	    in->input_case != NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN) {
		if (in != NULL)
			ncgrpc__operator__v1__session_input__free_unpacked(
			    in, NULL);
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "the first SessionInput must be 'open'", NULL);
		return;
	}
	o = in->open;
	if (o->device_id[0] == '\0' || strlen(o->device_id) >= sizeof(id) ||
	    (o->type != NCGRPC__OPERATOR__V1__SESSION_TYPE__NETCONF &&
	     o->type != NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL)) {
		ncgrpc__operator__v1__session_input__free_unpacked(in, NULL);
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "open needs a device_id and a session type",
		                 NULL);
		return;
	}
	if (open_terminal(o, &term) != 0) {
		ncgrpc__operator__v1__session_input__free_unpacked(in, NULL);
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "open has a bad terminal mode or window size",
		                 NULL);
		return;
	}
	snprintf(id, sizeof(id), "%s", o->device_id);
	memset(&ident, 0, sizeof(ident));
	ident.bi_uid = (uid_t)-1;
	grpc_conn_peer_uid(grpc_call_conn(c), &ident.bi_uid);
	/* Claims of a front door: kept (truncated) for the audit log only. */
	copy_claim(ident.bi_name, o->operator_name);
	copy_claim(ident.bi_key, o->operator_key);
	copy_claim(ident.bi_source, o->operator_source);
	copy_claim(ident.bi_via, o->via);
	if (from_node) {
		/* The uid is the other node's business: it is in the claims. */
		ident.bi_uid = (uid_t)-1;
		add_node_hop(c, &ident);
	} else if (!broker_device_here(b, id)) {
		const char *addr = forward_resolve(id);

		if (addr != NULL) {
			forward_session(c, addr, o, &ident);
			ncgrpc__operator__v1__session_input__free_unpacked(
			    in, NULL);
			return;
		}
	}
	broker_session_open(b, c, id,
	                    o->type == NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL
	                        ? BROKER_SHELL
	                        : BROKER_NETCONF,
	                    o->wait_ms > 600000 ? 600000 : o->wait_ms, &ident,
	                    &term);
	ncgrpc__operator__v1__session_input__free_unpacked(in, NULL);
}

static void
session_first_message(struct grpc_call *c, const uint8_t *msg, size_t len,
                      void *arg)
{
	session_open(c, msg, len, arg, 0);
}

/* From another node (operator_register_node()): never forwarded again. */
static void
node_session_first_message(struct grpc_call *c, const uint8_t *msg, size_t len,
                           void *arg)
{
	session_open(c, msg, len, arg, 1);
}

static void
session_half_close(struct grpc_call *c, void *arg)
{
	(void)arg;
	grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
	                 "the session was never opened", NULL);
}

static const struct grpc_call_ops session_open_ops = {
    .on_message = session_first_message,
    .on_half_close = session_half_close,
    .on_end = nothing_on_end,
};

static const struct grpc_call_ops node_session_open_ops = {
    .on_message = node_session_first_message,
    .on_half_close = session_half_close,
    .on_end = nothing_on_end,
};

static void
handle_session(struct grpc_call *c, void *arg)
{
	grpc_call_set_ops(c, &session_open_ops, arg);
}

static void
handle_node_session(struct grpc_call *c, void *arg)
{
	grpc_call_set_ops(c, &node_session_open_ops, arg);
}

int
operator_register_node(struct broker *b, struct grpc_server *srv)
{
	int rc;

	if ((rc = grpc_server_add_method(srv, OPSVC "ListDevices", handle_list,
	                                 b)) != 0 ||
	    (rc = grpc_server_add_method(srv, OPSVC "Session",
	                                 handle_node_session, b)) != 0)
		return rc;
	return 0;
}

int
operator_register(struct broker *b, struct grpc_server *srv)
{
	int rc;

	if ((rc = grpc_server_add_method(srv, OPSVC "ListDevices", handle_list,
	                                 b)) != 0 ||
	    (rc = grpc_server_add_method(srv, OPSVC "WatchDevices",
	                                 handle_watch, b)) != 0 ||
	    (rc = grpc_server_add_method(srv, OPSVC "Session", handle_session,
	                                 b)) != 0)
		return rc;
	return 0;
}
