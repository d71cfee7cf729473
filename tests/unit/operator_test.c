/*
 * ncgrpcd's operator API and broker in-process (src/server operator.c,
 * broker.c, relay.c): the device-facing and the operator servers of
 * ncgrpcd, each on a Unix socket in a temporary directory, and in-process
 * gRPC clients playing devices and operators, all in one loop.  The
 * registry is parsed from a line made by registry_hash_line().
 *
 * Asserts the answers to what a wrong or hostile peer sends: malformed or
 * incomplete SessionInput, a session to a device that is not connected,
 * an unregistered device or a wrong secret; and that a device that
 * authenticated waits idle and is listed by ListDevices.
 *
 * The joined relay (test_relay_*): a device that opens CommandGet after
 * its grant and an operator, both clients of ours.  Bytes pass byte-exact
 * both ways; a side that reads nothing stops the other; every end cause
 * ends both halves, frees the session and writes one session-end with its
 * reason; and failed allocations while the relay works end the session
 * cleanly or lose nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "testutil.h"

#include "broker_int.h" /* b_sessions: whether the relay freed a session */
#include "common/audit.h"
#include "common/err.h"
#include "common/grpc.h"
#include "common/log.h"
#include "common/termext.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "ncgrpc_wire.pb-c.h"
#include "nms/registry.h"
#include "server/broker.h"
#include "server/operator.h"

/*
 * malloc(), calloc() and realloc() of the program's own code go through here
 * (-Wl,--wrap, tests/CMakeLists.txt): when fail_in is n > 0, the n-th
 * allocation from now fails.  nghttp2 allocates through h2.c's allocator,
 * so its failures are injected too; the other shared libraries
 * (protobuf-c, OpenSSL, libuv) allocate on their own.  The registry's
 * verification runs in libuv's threadpool, hence the atomics.
 */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static _Atomic unsigned fail_in;
static _Atomic unsigned failed;

static int
fail_now(void)
{
	unsigned n = fail_in;

	while (n > 0 && !atomic_compare_exchange_weak(&fail_in, &n, n - 1))
		;
	if (n == 1) {
		failed++;
		return 1;
	}
	return 0;
}

void *
__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

#define WATCHDOG_MS 15000
#define TICK_MS     5
#define SVC         "/jnx.jet.netconf.Ncgrpc/"
#define OPSVC       "/ncgrpc.operator.v1.Operator/"

/* A client call and what came back. */
struct ccall {
	struct grpc_call *cc_call;
	int cc_ended;
	int cc_status;
	char cc_msg[256];
	uint8_t cc_resp[4096];
	size_t cc_resplen;
	char cc_conn_type[16]; /* trailer of a granted Initialize */
};

struct env {
	struct tloop e_tl;
	char e_dir[64];
	char e_devpath[128];
	char e_oppath[128];
	char e_auditpath[128];

	struct broker *e_b;
	struct grpc_server *e_devsrv;
	struct grpc_server *e_opsrv;
	int e_srv_done;

	struct grpc_conn *e_dev; /* a device's connection */
	struct grpc_conn *e_op;  /* an operator's connection */
	int e_ready;
	int e_closed;
};

static void
cc_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *cc = arg;

	(void)c;
	assert_true(len <= sizeof(cc->cc_resp));
	memcpy(cc->cc_resp, msg, len);
	cc->cc_resplen = len;
}

static void
cc_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct ccall *cc = arg;
	const struct grpc_md *md;

	md = grpc_md_get(grpc_call_trailers(c), "conn_type");
	if (md != NULL)
		snprintf(cc->cc_conn_type, sizeof(cc->cc_conn_type), "%.*s",
		         (int)md->md_len, (const char *)md->md_value);
	cc->cc_ended = 1;
	cc->cc_status = status;
	cc->cc_call = NULL;
	snprintf(cc->cc_msg, sizeof(cc->cc_msg), "%s", message);
}

static const struct grpc_call_ops cc_ops = {
    .on_message = cc_message,
    .on_end = cc_end,
};

/* Starts a call and sends msg (raw bytes, may be NULL); half-closes. */
static void
cc_start(struct grpc_conn *conn, struct ccall *cc, const char *path,
         const uint8_t *msg, size_t len, int close_send)
{
	int rc;

	memset(cc, 0, sizeof(*cc));
	rc = grpc_call_start(conn, path, NULL, 0, &cc_ops, cc, &cc->cc_call);
	if (rc == -ENOMEM && fail_in == 0 && failed > 0) {
		/* test_failmalloc: our own client ran out. */
		cc->cc_ended = 1;
		cc->cc_status = -1;
		return;
	}
	assert_int_equal(rc, 0);
	if (msg != NULL && (rc = grpc_call_send(cc->cc_call, msg, len)) != 0) {
		assert_int_equal(rc, -ENOMEM);
		grpc_call_cancel(cc->cc_call);
		return;
	}
	if (close_send)
		assert_int_equal(grpc_call_close_send(cc->cc_call), 0);
}

static void
cc_start_pb(struct grpc_conn *conn, struct ccall *cc, const char *path,
            const ProtobufCMessage *m, int close_send)
{
	uint8_t buf[1024];
	size_t len = protobuf_c_message_get_packed_size(m);

	assert_true(len <= sizeof(buf));
	protobuf_c_message_pack(m, buf);
	cc_start(conn, cc, path, buf, len, close_send);
}

static void
conn_ready(struct grpc_conn *conn, void *arg)
{
	struct env *e = arg;

	(void)conn;
	e->e_ready++;
}

static void
conn_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct env *e = arg;

	(void)err;
	(void)reason;
	if (conn == e->e_dev)
		e->e_dev = NULL;
	if (conn == e->e_op)
		e->e_op = NULL;
	e->e_closed++;
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = conn_ready,
    .on_closed = conn_closed,
};

static void
dev_conn_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct env *e = arg;

	(void)err;
	(void)reason;
	broker_conn_closed(e->e_b, conn);
}

static const struct grpc_server_ops devsrv_ops = {
    .on_conn_closed = dev_conn_closed,
};

static void
env_init(struct env *e)
{
	const struct broker_opts bo = {.bo_session_limit = 1,
	                               .bo_session_wait_ms = 100};
	struct registry *reg;
	char *line, err[256];

	memset(e, 0, sizeof(*e));
	tloop_init(&e->e_tl, WATCHDOG_MS, TICK_MS);
	tdir_make(e->e_dir, sizeof(e->e_dir), "operator_test");
	snprintf(e->e_devpath, sizeof(e->e_devpath), "%s/dev.sock", e->e_dir);
	snprintf(e->e_oppath, sizeof(e->e_oppath), "%s/op.sock", e->e_dir);
	snprintf(e->e_auditpath, sizeof(e->e_auditpath), "%s/audit.log",
	         e->e_dir);
	assert_int_equal(audit_open(e->e_auditpath), 0);

	assert_int_equal(
	    registry_hash_line("dev-1", (const uint8_t *)"s3cret", 6, &line),
	    0);
	assert_int_equal(
	    registry_parse("test", line, strlen(line), &reg, err, sizeof(err)),
	    0);
	free(line);
	assert_int_equal(broker_new(&e->e_tl.tl_loop, &bo, reg, &e->e_b), 0);

	assert_int_equal(grpc_server_new(&e->e_tl.tl_loop, NULL, &devsrv_ops, e,
	                                 &e->e_devsrv),
	                 0);
	assert_int_equal(broker_register_device_methods(e->e_b, e->e_devsrv),
	                 0);
	assert_int_equal(
	    grpc_server_listen_unix(e->e_devsrv, e->e_devpath, 0600), 0);
	assert_int_equal(
	    grpc_server_new(&e->e_tl.tl_loop, NULL, NULL, e, &e->e_opsrv), 0);
	assert_int_equal(operator_register(e->e_b, e->e_opsrv), 0);
	assert_int_equal(grpc_server_listen_unix(e->e_opsrv, e->e_oppath, 0600),
	                 0);

	assert_int_equal(grpc_conn_connect_unix(&e->e_tl.tl_loop, e->e_devpath,
	                                        NULL, &conn_ops, e, &e->e_dev),
	                 0);
	assert_int_equal(grpc_conn_connect_unix(&e->e_tl.tl_loop, e->e_oppath,
	                                        NULL, &conn_ops, e, &e->e_op),
	                 0);
	RUN_UNTIL(&e->e_tl, e->e_ready == 2);
}

static void
on_srv_done(void *arg)
{
	struct env *e = arg;

	e->e_srv_done++;
}

static void
env_done(struct env *e)
{
	broker_shutdown(e->e_b, "test over");
	grpc_server_shutdown(e->e_devsrv, 0, on_srv_done, e);
	grpc_server_shutdown(e->e_opsrv, 0, on_srv_done, e);
	RUN_UNTIL(&e->e_tl,
	          e->e_srv_done == 2 && e->e_dev == NULL && e->e_op == NULL);
	broker_free(e->e_b);
	tloop_done(&e->e_tl);
	audit_close();
	tdir_remove(e->e_dir);
}

/* A device sends Initialize. */
static void
dev_initialize(struct env *e, struct ccall *cc, const char *id,
               const char *secret)
{
	Jnx__Jet__Netconf__NcgrpcInitializeRequest req =
	    JNX__JET__NETCONF__NCGRPC_INITIALIZE_REQUEST__INIT;

	req.instance_id = 42;
	req.device_id = (char *)(uintptr_t)id;
	req.secret_key = (char *)(uintptr_t)secret;
	cc_start_pb(e->e_dev, cc, SVC "NcgrpcInitialize", &req.base, 1);
}

static void
op_open(struct env *e, struct ccall *cc, const char *id, unsigned wait_ms)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__SessionOpen o =
	    NCGRPC__OPERATOR__V1__SESSION_OPEN__INIT;

	o.device_id = (char *)(uintptr_t)id;
	o.wait_ms = wait_ms;
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN;
	in.open = &o;
	cc_start_pb(e->e_op, cc, OPSVC "Session", &in.base, 0);
}

/* Tests */

/* Session calls that never open properly end INVALID_ARGUMENT. */
static void
test_malformed_session_input(void **state)
{
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x0f, 0x12};
	struct ccall a, b, c;
	struct env e;

	(void)state;
	env_init(&e);
	/* Not a SessionInput at all. */
	cc_start(e.e_op, &a, OPSVC "Session", garbage, sizeof(garbage), 0);
	/* A SessionInput without a device id. */
	op_open(&e, &b, "", 0);
	/* No message, only the end of input. */
	cc_start(e.e_op, &c, OPSVC "Session", NULL, 0, 1);
	RUN_UNTIL(&e.e_tl, a.cc_ended && b.cc_ended && c.cc_ended);
	assert_int_equal(a.cc_status, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(a.cc_msg, "must be 'open'"));
	assert_int_equal(b.cc_status, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(b.cc_msg, "device_id"));
	assert_int_equal(c.cc_status, GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(c.cc_msg, "never opened"));
	/* The operator connection survives its bad calls. */
	assert_non_null(e.e_op);
	env_done(&e);
}

/*
 * A session to a registered device that is not connected: NOT_FOUND after
 * the wait; to one that is not registered: NOT_FOUND at once.
 */
static void
test_device_not_connected(void **state)
{
	struct ccall a, b;
	struct env e;

	(void)state;
	env_init(&e);
	op_open(&e, &a, "dev-1", 50);
	op_open(&e, &b, "nobody", 5000);
	RUN_UNTIL(&e.e_tl, a.cc_ended && b.cc_ended);
	assert_int_equal(a.cc_status, GRPC_STATUS_NOT_FOUND);
	assert_non_null(strstr(a.cc_msg, "'dev-1' is not connected"));
	/* Not worth the wait: refused at once. */
	assert_int_equal(b.cc_status, GRPC_STATUS_NOT_FOUND);
	assert_non_null(strstr(b.cc_msg, "'nobody' is not registered"));
	env_done(&e);
}

/* Unregistered devices and wrong secrets are refused alike. */
static void
test_unregistered_device(void **state)
{
	struct ccall a, b;
	struct env e;

	(void)state;
	env_init(&e);
	dev_initialize(&e, &a, "nobody", "s3cret");
	dev_initialize(&e, &b, "dev-1", "wrong");
	RUN_UNTIL(&e.e_tl, a.cc_ended && b.cc_ended);
	assert_int_equal(a.cc_status, GRPC_STATUS_UNAUTHENTICATED);
	assert_int_equal(b.cc_status, GRPC_STATUS_UNAUTHENTICATED);
	/* The two messages do not tell which one was unknown. */
	assert_string_equal(a.cc_msg, b.cc_msg);
	assert_int_equal(broker_ndevices(e.e_b), 0);
	env_done(&e);
}

/*
 * A device with the right secret waits idle in Initialize, and ListDevices
 * shows it; at shutdown its Initialize is answered UNAVAILABLE.
 */
static void
test_device_listed(void **state)
{
	Ncgrpc__Operator__V1__ListDevicesRequest lreq =
	    NCGRPC__OPERATOR__V1__LIST_DEVICES_REQUEST__INIT;
	Ncgrpc__Operator__V1__ListDevicesResponse *r;
	struct ccall init, list;
	struct env e;

	(void)state;
	env_init(&e);
	dev_initialize(&e, &init, "dev-1", "s3cret");
	RUN_UNTIL(&e.e_tl, broker_ndevices(e.e_b) == 1);
	cc_start_pb(e.e_op, &list, OPSVC "ListDevices", &lreq.base, 1);
	RUN_UNTIL(&e.e_tl, list.cc_ended);
	assert_int_equal(list.cc_status, GRPC_STATUS_OK);
	r = ncgrpc__operator__v1__list_devices_response__unpack(
	    NULL, list.cc_resplen, list.cc_resp);
	assert_non_null(r);
	assert_int_equal(r->n_devices, 1);
	assert_string_equal(r->devices[0]->device_id, "dev-1");
	assert_int_equal(r->devices[0]->instance_id, 42);
	assert_int_equal(r->devices[0]->idle_connections, 1);
	assert_int_equal(r->devices[0]->active_sessions, 0);
	ncgrpc__operator__v1__list_devices_response__free_unpacked(r, NULL);
	assert_int_equal(init.cc_ended, 0);

	broker_shutdown(e.e_b, "test over");
	RUN_UNTIL(&e.e_tl, init.cc_ended);
	assert_int_equal(init.cc_status, GRPC_STATUS_UNAVAILABLE);
	env_done(&e);
}

/*
 * An operator's request completes an idle Initialize (OK, the session type,
 * conn_type "netconf"); at the session limit (1 here) the next request is
 * refused at once, even though an idle connection is left.
 */
static void
test_grant_and_session_limit(void **state)
{
	Jnx__Jet__Netconf__NcgrpcInitializeResponse *r;
	struct ccall i1, i2, o1, o2;
	struct env e;

	(void)state;
	env_init(&e);
	dev_initialize(&e, &i1, "dev-1", "s3cret");
	dev_initialize(&e, &i2, "dev-1", "s3cret");
	RUN_UNTIL(&e.e_tl, broker_ndevices(e.e_b) == 1);
	op_open(&e, &o1, "dev-1", 1000);
	RUN_UNTIL(&e.e_tl, i1.cc_ended || i2.cc_ended);
	{
		struct ccall *g = i1.cc_ended ? &i1 : &i2;

		assert_int_equal(g->cc_status, GRPC_STATUS_OK);
		assert_string_equal(g->cc_conn_type, "netconf");
		r = jnx__jet__netconf__ncgrpc_initialize_response__unpack(
		    NULL, g->cc_resplen, g->cc_resp);
		assert_non_null(r);
		assert_int_equal(r->session_type,
		                 JNX__JET__NETCONF__SESSION_TYPE__NETCONF);
		jnx__jet__netconf__ncgrpc_initialize_response__free_unpacked(
		    r, NULL);
	}
	op_open(&e, &o2, "dev-1", 1000);
	RUN_UNTIL(&e.e_tl, o2.cc_ended);
	assert_int_equal(o2.cc_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(o2.cc_msg, "limit of 1 sessions"));
	assert_false(i1.cc_ended && i2.cc_ended);
	assert_int_equal(o1.cc_ended, 0);
	env_done(&e);
}

/*
 * failmalloc: the i-th allocation of our code fails, for every i, while a
 * device authenticates, an operator lists devices and asks for a session
 * that is granted.  Whatever fails, every call ends, every connection
 * closes at shutdown, and nothing leaks (ASan) or is left on the loop.
 */
static void
test_failmalloc(void **state)
{
	Ncgrpc__Operator__V1__ListDevicesRequest lreq =
	    NCGRPC__OPERATOR__V1__LIST_DEVICES_REQUEST__INIT;
	struct ccall init, list, sess;
	struct env e;
	unsigned i;

	(void)state;
	for (i = 1; i < 10000; i++) {
		env_init(&e);
		failed = 0;
		fail_in = i;
		dev_initialize(&e, &init, "dev-1", "s3cret");
		RUN_UNTIL(&e.e_tl, init.cc_ended ||
		                       broker_ndevices(e.e_b) == 1 ||
		                       e.e_dev == NULL);
		if (e.e_op != NULL) {
			cc_start_pb(e.e_op, &list, OPSVC "ListDevices",
			            &lreq.base, 1);
			op_open(&e, &sess, "dev-1", 100);
			RUN_UNTIL(&e.e_tl,
			          (list.cc_ended && sess.cc_ended) ||
			              e.e_op == NULL ||
			              (list.cc_ended && init.cc_ended));
		}
		fail_in = 0;
		env_done(&e);
		if (failed == 0)
			break;
	}
	/* The sweep reached the end: the scenario allocates fewer times. */
	assert_true(i > 1 && i < 10000);
}

/* A connection of test_accept_failmalloc. */
struct xconn {
	struct grpc_conn *x_conn; /* NULL once closed */
	int x_ready;
};

static void
xconn_ready(struct grpc_conn *conn, void *arg)
{
	struct xconn *x = arg;

	(void)conn;
	x->x_ready = 1;
}

static void
xconn_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct xconn *x = arg;

	(void)err;
	(void)reason;
	if (x->x_conn == conn)
		x->x_conn = NULL;
}

static const struct grpc_conn_ops xconn_ops = {
    .on_ready = xconn_ready,
    .on_closed = xconn_closed,
};

/*
 * failmalloc at accept: the i-th allocation of our code fails, for every
 * i, while a new connection comes in and is accepted.  Whatever failed,
 * the device listener still accepts the next connection, and a device
 * gets in through it.  (A failure in xport_accept() ahead of uv_accept()
 * used to leave libuv holding the connection, with the listening socket no
 * longer read: no device could connect again.)
 */
static void
test_accept_failmalloc(void **state)
{
	struct xconn c2, c3;
	struct grpc_conn *dev;
	struct ccall init;
	struct env e;
	unsigned i;

	(void)state;
	for (i = 1; i < 1000; i++) {
		env_init(&e);
		memset(&c2, 0, sizeof(c2));
		memset(&c3, 0, sizeof(c3));
		failed = 0;
		fail_in = i;
		if (grpc_conn_connect_unix(&e.e_tl.tl_loop, e.e_devpath, NULL,
		                           &xconn_ops, &c2, &c2.x_conn) != 0)
			c2.x_conn = NULL;
		tloop_run_for(&e.e_tl, 20);
		fail_in = 0;
		assert_int_equal(
		    grpc_conn_connect_unix(&e.e_tl.tl_loop, e.e_devpath, NULL,
		                           &xconn_ops, &c3, &c3.x_conn),
		    0);
		RUN_UNTIL(&e.e_tl, c3.x_ready || c3.x_conn == NULL);
		assert_non_null(c3.x_conn);
		/* The device logs in on the newest connection. */
		dev = e.e_dev;
		e.e_dev = c3.x_conn;
		dev_initialize(&e, &init, "dev-1", "s3cret");
		e.e_dev = dev;
		RUN_UNTIL(&e.e_tl, broker_ndevices(e.e_b) == 1 ||
		                       init.cc_ended || c3.x_conn == NULL);
		assert_int_equal(broker_ndevices(e.e_b), 1);
		if (c2.x_conn != NULL)
			grpc_conn_close(c2.x_conn, -ECONNRESET);
		grpc_conn_close(c3.x_conn, -ECONNRESET);
		RUN_UNTIL(&e.e_tl, c2.x_conn == NULL && c3.x_conn == NULL);
		env_done(&e);
		if (failed == 0)
			break;
	}
	/* The sweep reached the end: accepting allocates fewer times. */
	assert_true(i > 1 && i < 1000);
}

/* The joined relay: an operator and a device, each a client of ours. */

/* One side of a joined session as its client sees it. */
struct tside {
	struct grpc_call *ts_call;
	int ts_ended;
	int ts_status;
	char ts_msg[256];
	uint8_t *ts_data; /* operator: SessionOutput.data; device: commands */
	size_t ts_len;
	size_t ts_cap;
	int ts_lines; /* device: a csh_command is a line (add its newline) */
	/* Operator: the started and ended messages. */
	unsigned ts_nstarted;
	unsigned ts_nended;
	char ts_reason[256];
	uint64_t ts_to_dev, ts_from_dev;
	/* Device: the last kill_signal. */
	uint64_t ts_sig;
};

static void
ts_append(struct tside *ts, const uint8_t *p, size_t n)
{
	if (ts->ts_len + n > ts->ts_cap) {
		ts->ts_cap = (ts->ts_len + n) * 2;
		/* Not through the failing allocator: the test's own. */
		ts->ts_data = __real_realloc(ts->ts_data, ts->ts_cap);
		assert_non_null(ts->ts_data);
	}
	if (n > 0)
		memcpy(ts->ts_data + ts->ts_len, p, n);
	ts->ts_len += n;
}

static void
ts_free(struct tside *ts)
{
	free(ts->ts_data);
	ts->ts_data = NULL;
}

static void
ts_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct tside *ts = arg;

	(void)c;
	assert_int_equal(ts->ts_ended, 0);
	ts->ts_ended = 1;
	ts->ts_status = status;
	ts->ts_call = NULL;
	snprintf(ts->ts_msg, sizeof(ts->ts_msg), "%s", message);
}

static void
op_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct tside *ts = arg;
	Ncgrpc__Operator__V1__SessionOutput *o;

	(void)c;
	o = ncgrpc__operator__v1__session_output__unpack(NULL, len, msg);
	assert_non_null(o);
	switch (o->output_case) {
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED:
		ts->ts_nstarted++;
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA:
		/* Nothing before started, nothing after ended. */
		assert_int_equal(ts->ts_nstarted, 1);
		assert_int_equal(ts->ts_nended, 0);
		ts_append(ts, o->data.data, o->data.len);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED:
		ts->ts_nended++;
		snprintf(ts->ts_reason, sizeof(ts->ts_reason), "%s",
		         o->ended->reason);
		ts->ts_to_dev = o->ended->bytes_to_device;
		ts->ts_from_dev = o->ended->bytes_from_device;
		break;
	default:
		fail_msg("unexpected SessionOutput %d", (int)o->output_case);
	}
	ncgrpc__operator__v1__session_output__free_unpacked(o, NULL);
}

static const struct grpc_call_ops op_ops = {
    .on_message = op_message,
    .on_end = ts_end,
};

static void
dev_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct tside *ts = arg;
	Ncgrpc__Wire__CommandGetResponse *r;

	(void)c;
	r = ncgrpc__wire__command_get_response__unpack(NULL, len, msg);
	assert_non_null(r);
	if (r->command_case ==
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND)
		ts_append(ts, r->netconf_command.data, r->netconf_command.len);
	else if (r->command_case ==
	         NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND) {
		ts_append(ts, r->csh_command.data, r->csh_command.len);
		if (ts->ts_lines)
			ts_append(ts, (const uint8_t *)"\n", 1);
	}
	if (r->kill_signal != 0)
		ts->ts_sig = r->kill_signal;
	ncgrpc__wire__command_get_response__free_unpacked(r, NULL);
}

static const struct grpc_call_ops dev_ops = {
    .on_message = dev_message,
    .on_end = ts_end,
};

enum jtype { J_NETCONF, J_SHELL, J_RAW };

/*
 * A device authenticates (offering the raw terminal for J_RAW), an
 * operator asks for a session, the device is granted it and opens
 * CommandGet: returns once the operator has seen "started".
 */
static void
join(struct env *e, struct tside *op, struct tside *dev, enum jtype type)
{
	Jnx__Jet__Netconf__NcgrpcInitializeRequest req =
	    JNX__JET__NETCONF__NCGRPC_INITIALIZE_REQUEST__INIT;
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__SessionOpen o =
	    NCGRPC__OPERATOR__V1__SESSION_OPEN__INIT;
	struct grpc_mdlist md = {0};
	uint8_t buf[256];
	struct ccall init;
	size_t len;

	memset(op, 0, sizeof(*op));
	memset(dev, 0, sizeof(*dev));
	dev->ts_lines = type == J_SHELL;
	if (type == J_RAW)
		assert_int_equal(grpc_md_add(&md, TERMEXT_MD_MODE, TERMEXT_RAW,
		                             strlen(TERMEXT_RAW)),
		                 0);
	req.instance_id = 42;
	req.device_id = (char *)(uintptr_t) "dev-1";
	req.secret_key = (char *)(uintptr_t) "s3cret";
	len = protobuf_c_message_get_packed_size(&req.base);
	protobuf_c_message_pack(&req.base, buf);
	memset(&init, 0, sizeof(init));
	assert_int_equal(grpc_call_start(e->e_dev, SVC "NcgrpcInitialize", &md,
	                                 0, &cc_ops, &init, &init.cc_call),
	                 0);
	grpc_md_free(&md);
	assert_int_equal(grpc_call_send(init.cc_call, buf, len), 0);
	assert_int_equal(grpc_call_close_send(init.cc_call), 0);
	RUN_UNTIL(&e->e_tl, broker_ndevices(e->e_b) == 1);

	o.device_id = (char *)(uintptr_t) "dev-1";
	o.type = type == J_NETCONF ? NCGRPC__OPERATOR__V1__SESSION_TYPE__NETCONF
	                           : NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL;
	o.terminal = type == J_RAW ? NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW
	                           : NCGRPC__OPERATOR__V1__TERMINAL_MODE__LINE;
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN;
	in.open = &o;
	len = protobuf_c_message_get_packed_size(&in.base);
	protobuf_c_message_pack(&in.base, buf);
	assert_int_equal(grpc_call_start(e->e_op, OPSVC "Session", NULL, 0,
	                                 &op_ops, op, &op->ts_call),
	                 0);
	assert_int_equal(grpc_call_send(op->ts_call, buf, len), 0);
	RUN_UNTIL(&e->e_tl, init.cc_ended);
	assert_int_equal(init.cc_status, GRPC_STATUS_OK);
	assert_string_equal(init.cc_conn_type,
	                    type == J_NETCONF ? "netconf" : "csh");

	assert_int_equal(grpc_call_start(e->e_dev, SVC "NcgrpcCommandGet", NULL,
	                                 0, &dev_ops, dev, &dev->ts_call),
	                 0);
	RUN_UNTIL(&e->e_tl, op->ts_nstarted == 1);
	assert_int_equal(LIST_FIRST(&e->e_b->b_sessions)->os_raw,
	                 type == J_RAW);
}

/* The operator sends data, in SessionInput messages of at most chunk. */
static int
op_send(struct tside *op, const uint8_t *p, size_t len, size_t chunk)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	uint8_t *buf;
	size_t n;
	int rc = 0;

	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA;
	buf = __real_malloc(chunk + 16);
	assert_non_null(buf);
	while (rc == 0 && len > 0) {
		n = len < chunk ? len : chunk;
		in.data.data = (uint8_t *)(uintptr_t)p;
		in.data.len = n;
		rc = grpc_call_send(op->ts_call, buf,
		                    protobuf_c_message_pack(&in.base, buf));
		p += n;
		len -= n;
	}
	free(buf);
	return rc;
}

/* The device sends output, in CommandGetRequest messages of at most chunk. */
static int
dev_send(struct tside *dev, const uint8_t *p, size_t len, size_t chunk)
{
	Ncgrpc__Wire__CommandGetRequest r =
	    NCGRPC__WIRE__COMMAND_GET_REQUEST__INIT;
	uint8_t *buf;
	size_t n;
	int rc = 0;

	buf = __real_malloc(chunk + 16);
	assert_non_null(buf);
	while (rc == 0 && len > 0) {
		n = len < chunk ? len : chunk;
		r.message.data = (uint8_t *)(uintptr_t)p;
		r.message.len = n;
		rc = grpc_call_send(dev->ts_call, buf,
		                    protobuf_c_message_pack(&r.base, buf));
		p += n;
		len -= n;
	}
	free(buf);
	return rc;
}

/* Bytes of every value, in an order no relay would make up. */
static uint8_t *
pattern(size_t len, unsigned seed)
{
	uint8_t *p = __real_malloc(len);
	uint32_t x = seed * 2654435761u + 1;
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++) {
		x = x * 1664525u + 1013904223u;
		p[i] = (uint8_t)(x >> 24);
	}
	return p;
}

/* Printable ASCII (valid UTF-8, so the device gets it unchanged). */
static uint8_t *
text_pattern(size_t len, unsigned seed)
{
	uint8_t *p = pattern(len, seed);
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)(' ' + p[i] % 94);
	return p;
}

/*
 * The session-end events in the audit log: their number, and the first
 * one in line (NULL-terminated, at most size bytes).
 */
static int
audit_ends(struct env *e, char *line, size_t size)
{
	char buf[1024];
	FILE *f;
	int n = 0;

	assert_non_null(f = fopen(e->e_auditpath, "r"));
	line[0] = '\0';
	while (fgets(buf, sizeof(buf), f) != NULL) {
		if (strstr(buf, " event=session-end ") == NULL)
			continue;
		if (n++ == 0)
			snprintf(line, size, "%s", buf);
	}
	fclose(f);
	return n;
}

/*
 * Waits for both sides' calls to end and for the relay to free the
 * session; then the audit log has exactly one session-end with reason.
 */
static void
both_ended(struct env *e, struct tside *op, struct tside *dev,
           const char *reason)
{
	char line[1024], want[300];

	RUN_UNTIL(&e->e_tl, op->ts_ended && dev->ts_ended &&
	                        LIST_EMPTY(&e->e_b->b_sessions));
	assert_int_equal(audit_ends(e, line, sizeof(line)), 1);
	snprintf(want, sizeof(want), "reason=\"%s", reason);
	if (strstr(line, want) == NULL)
		fail_msg("session-end without %s: %s", want, line);
}

/*
 * Raw terminal, byte-exact both ways: 1 MiB of printable text from the
 * operator arrives as the device's csh_command bytes, exactly; 1 MiB of
 * every byte value from the device arrives as SessionOutput.data,
 * exactly; and "ended" counts both.  Then the device half-closes: OK.
 */
static void
test_relay_bytes_both_ways(void **state)
{
	const size_t n = 1024 * 1024;
	struct tside op, dev;
	uint8_t *in, *out;
	struct env e;

	(void)state;
	env_init(&e);
	join(&e, &op, &dev, J_RAW);
	in = text_pattern(n, 1);
	out = pattern(n, 2);
	assert_int_equal(op_send(&op, in, n, 7000), 0);
	assert_int_equal(dev_send(&dev, out, n, 9000), 0);
	RUN_UNTIL(&e.e_tl, dev.ts_len == n && op.ts_len == n);
	assert_memory_equal(dev.ts_data, in, n);
	assert_memory_equal(op.ts_data, out, n);
	assert_int_equal(grpc_call_close_send(dev.ts_call), 0);
	both_ended(&e, &op, &dev, "device closed the session");
	assert_int_equal(op.ts_status, GRPC_STATUS_OK);
	assert_int_equal(op.ts_nended, 1);
	assert_string_equal(op.ts_reason, "device closed the session");
	assert_int_equal(op.ts_to_dev, n);
	assert_int_equal(op.ts_from_dev, n);
	/* Finished, not cancelled: its end is no loss. */
	assert_int_equal(dev.ts_status, GRPC_STATUS_OK);
	free(in);
	free(out);
	ts_free(&op);
	ts_free(&dev);
	env_done(&e);
}

/*
 * NETCONF: once the device's hello (1.0 only) decides the framing, the
 * operator's messages reach the device whole and byte-exact, even those
 * sent before the hello; the operator's half-close does not end the
 * session, the device's does.
 */
static void
test_relay_netconf_bytes(void **state)
{
	static const char hello[] =
	    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">"
	    "<capabilities><capability>urn:ietf:params:netconf:base:1.0"
	    "</capability></capabilities></hello>]]>]]>";
	static const char rpc[] =
	    "<rpc message-id=\"1\"><get-config><source><running/>"
	    "</source></get-config></rpc>]]>]]>";
	struct tside op, dev;
	struct env e;
	uint8_t *all;
	size_t n, i;

	(void)state;
	env_init(&e);
	join(&e, &op, &dev, J_NETCONF);
	n = sizeof(hello) - 1 + 100 * (sizeof(rpc) - 1);
	all = __real_malloc(n);
	assert_non_null(all);
	memcpy(all, hello, sizeof(hello) - 1);
	for (i = 0; i < 100; i++)
		memcpy(all + sizeof(hello) - 1 + i * (sizeof(rpc) - 1), rpc,
		       sizeof(rpc) - 1);
	/* Cut at odd places: the relay cuts it into messages. */
	assert_int_equal(op_send(&op, all, n, 77), 0);
	tloop_run_for(&e.e_tl, 50);
	/* Only the hello goes before the device's hello is seen. */
	assert_int_equal(dev.ts_len, sizeof(hello) - 1);
	assert_int_equal(
	    dev_send(&dev, (const uint8_t *)hello, sizeof(hello) - 1, 1000), 0);
	RUN_UNTIL(&e.e_tl, dev.ts_len == n);
	assert_memory_equal(dev.ts_data, all, n);
	assert_int_equal(op.ts_len, sizeof(hello) - 1);
	assert_int_equal(grpc_call_close_send(op.ts_call), 0);
	tloop_run_for(&e.e_tl, 50);
	assert_false(op.ts_ended || dev.ts_ended);
	assert_int_equal(grpc_call_close_send(dev.ts_call), 0);
	both_ended(&e, &op, &dev, "device closed the session");
	assert_int_equal(op.ts_status, GRPC_STATUS_OK);
	assert_int_equal(op.ts_to_dev, n);
	free(all);
	ts_free(&op);
	ts_free(&dev);
	env_done(&e);
}

/*
 * The operator sends its hello and more than BROKER_MAX_PENDING of an rpc
 * before the device's hello decides the framing: the relay holds the
 * operator back, and once the framing is decided it must let the rpc
 * complete (the bound is then BROKER_MAX_NETCONF_MSG), not stall.
 */
static void
test_relay_netconf_big_rpc_before_hello(void **state)
{
	static const char hello[] =
	    "<hello xmlns=\"urn:ietf:params:xml:ns:netconf:base:1.0\">"
	    "<capabilities><capability>urn:ietf:params:netconf:base:1.0"
	    "</capability></capabilities></hello>]]>]]>";
	static const char head[] = "<rpc message-id=\"1\"><edit-config><a>";
	static const char tail[] = "</a></edit-config></rpc>]]>]]>";
	const size_t body = BROKER_MAX_PENDING + 200 * 1024;
	struct tside op, dev;
	struct env e;
	uint8_t *all, *p;
	size_t n;

	(void)state;
	env_init(&e);
	join(&e, &op, &dev, J_NETCONF);
	n = sizeof(hello) - 1 + sizeof(head) - 1 + body + sizeof(tail) - 1;
	p = all = __real_malloc(n);
	assert_non_null(all);
	memcpy(p, hello, sizeof(hello) - 1);
	p += sizeof(hello) - 1;
	memcpy(p, head, sizeof(head) - 1);
	p += sizeof(head) - 1;
	memset(p, 'x', body);
	p += body;
	memcpy(p, tail, sizeof(tail) - 1);
	/* All but the end of the rpc, before the device says hello. */
	assert_int_equal(op_send(&op, all, n - (sizeof(tail) - 1), 16 * 1024),
	                 0);
	tloop_run_for(&e.e_tl, 200);
	assert_int_equal(dev.ts_len, sizeof(hello) - 1);
	assert_int_equal(
	    dev_send(&dev, (const uint8_t *)hello, sizeof(hello) - 1, 1000), 0);
	tloop_run_for(&e.e_tl, 200);
	assert_int_equal(
	    op_send(&op, all + n - (sizeof(tail) - 1), sizeof(tail) - 1, 1000),
	    0);
	RUN_UNTIL(&e.e_tl, dev.ts_len == n);
	assert_memory_equal(dev.ts_data, all, n);
	assert_false(op.ts_ended || dev.ts_ended);
	free(all);
	ts_free(&op);
	ts_free(&dev);
	env_done(&e);
}

/*
 * Backpressure, device to operator: while the operator reads nothing, the
 * relay stops reading the device, so most of 8 MiB stays queued on the
 * device's side instead of in ncgrpcd; once the operator reads again,
 * every byte arrives in order.
 */
static void
test_relay_slow_operator(void **state)
{
	const size_t n = 8 * 1024 * 1024;
	struct tside op, dev;
	struct env e;
	uint8_t *out;

	(void)state;
	env_init(&e);
	join(&e, &op, &dev, J_RAW);
	out = pattern(n, 3);
	grpc_call_pause(op.ts_call);
	assert_int_equal(dev_send(&dev, out, n, 32 * 1024), 0);
	tloop_run_for(&e.e_tl, 300);
	assert_int_equal(op.ts_len, 0);
	/*
	 * In flight at most: the operator's and the device's stream windows
	 * (1 MiB each), the relay's high mark and a message or two.
	 */
	assert_true(grpc_call_queued(dev.ts_call) > n - 3 * 1024 * 1024);
	grpc_call_resume(op.ts_call);
	RUN_UNTIL(&e.e_tl, op.ts_len == n);
	assert_memory_equal(op.ts_data, out, n);
	assert_false(op.ts_ended || dev.ts_ended);
	free(out);
	ts_free(&op);
	ts_free(&dev);
	env_done(&e);
}

/* The same, operator to device: a device that reads nothing. */
static void
test_relay_slow_device(void **state)
{
	const size_t n = 8 * 1024 * 1024;
	struct tside op, dev;
	struct env e;
	uint8_t *in;

	(void)state;
	env_init(&e);
	join(&e, &op, &dev, J_RAW);
	in = text_pattern(n, 4);
	grpc_call_pause(dev.ts_call);
	assert_int_equal(op_send(&op, in, n, 32 * 1024), 0);
	tloop_run_for(&e.e_tl, 300);
	assert_int_equal(dev.ts_len, 0);
	assert_true(grpc_call_queued(op.ts_call) > n - 3 * 1024 * 1024);
	grpc_call_resume(dev.ts_call);
	RUN_UNTIL(&e.e_tl, dev.ts_len == n);
	assert_memory_equal(dev.ts_data, in, n);
	assert_false(op.ts_ended || dev.ts_ended);
	free(in);
	ts_free(&op);
	ts_free(&dev);
	env_done(&e);
}

enum end_cause {
	END_OP_CLOSES,    /* operator half-closes, then the backend exits */
	END_OP_CANCELS,   /* operator cancels its call */
	END_OP_VANISHES,  /* operator's connection drops */
	END_DEV_CLOSES,   /* device half-closes: the backend exited */
	END_DEV_CANCELS,  /* device cancels its stream */
	END_DEV_VANISHES, /* device's connection drops */
	END_SHUTDOWN,     /* ncgrpcd ends it (broker_shutdown) */
};

/*
 * A line-mode shell session with a line each way, then one end cause:
 * both halves end, the relay frees the session, the audit log has one
 * session-end with the cause's reason, and the operator, if still there,
 * gets one "ended" with that reason and the matching status.
 */
static void
end_case(enum end_cause cause)
{
	static const char line[] = "show version\n";
	static const char output[] = "Junos: 23.4R1\n";
	const char *reason = NULL;
	struct tside op, dev;
	struct env e;
	int st = 0, devst = GRPC_STATUS_CANCELLED;

	env_init(&e);
	join(&e, &op, &dev, J_SHELL);
	assert_int_equal(op_send(&op, (const uint8_t *)line, strlen(line), 5),
	                 0);
	assert_int_equal(
	    dev_send(&dev, (const uint8_t *)output, strlen(output), 100), 0);
	RUN_UNTIL(&e.e_tl,
	          dev.ts_len == strlen(line) && op.ts_len == strlen(output));
	assert_memory_equal(dev.ts_data, line, strlen(line));
	assert_memory_equal(op.ts_data, output, strlen(output));
	switch (cause) {
	case END_OP_CLOSES:
		/* A last line without its newline still goes. */
		assert_int_equal(op_send(&op, (const uint8_t *)"exit", 4, 10),
		                 0);
		assert_int_equal(grpc_call_close_send(op.ts_call), 0);
		RUN_UNTIL(&e.e_tl, dev.ts_len == strlen(line) + 5);
		assert_memory_equal(dev.ts_data + strlen(line), "exit\n", 5);
		tloop_run_for(&e.e_tl, 30);
		assert_false(op.ts_ended || dev.ts_ended);
		assert_int_equal(grpc_call_close_send(dev.ts_call), 0);
		reason = "device closed the session";
		st = GRPC_STATUS_OK;
		devst = GRPC_STATUS_OK;
		break;
	case END_OP_CANCELS:
		grpc_call_cancel(op.ts_call);
		reason = "operator went away (CANCELLED";
		break;
	case END_OP_VANISHES:
		grpc_conn_close(e.e_op, -ECONNRESET);
		reason = "operator went away (CANCELLED";
		break;
	case END_DEV_CLOSES:
		assert_int_equal(grpc_call_close_send(dev.ts_call), 0);
		reason = "device closed the session";
		st = GRPC_STATUS_OK;
		devst = GRPC_STATUS_OK;
		break;
	case END_DEV_CANCELS:
		grpc_call_cancel(dev.ts_call);
		reason = "device connection lost (CANCELLED";
		st = GRPC_STATUS_UNAVAILABLE;
		break;
	case END_DEV_VANISHES:
		grpc_conn_close(e.e_dev, -ECONNRESET);
		reason = "device connection lost (CANCELLED";
		st = GRPC_STATUS_UNAVAILABLE;
		devst = GRPC_STATUS_UNAVAILABLE; /* its own, local */
		break;
	case END_SHUTDOWN:
		broker_shutdown(e.e_b, "server shutting down");
		reason = "server shutting down";
		st = GRPC_STATUS_UNAVAILABLE;
		break;
	}
	both_ended(&e, &op, &dev, reason);
	assert_int_equal(dev.ts_status, devst);
	if (cause == END_OP_CANCELS || cause == END_OP_VANISHES) {
		assert_int_equal(op.ts_nended, 0);
	} else {
		assert_int_equal(op.ts_status, st);
		assert_int_equal(op.ts_nended, 1);
		assert_int_equal(strncmp(op.ts_reason, reason, strlen(reason)),
		                 0);
		if (st != GRPC_STATUS_OK)
			assert_string_equal(op.ts_msg, op.ts_reason);
		assert_int_equal(op.ts_from_dev, strlen(output));
	}
	/* Nothing of the device was sent after the end. */
	assert_int_equal(op.ts_len, strlen(output));
	ts_free(&op);
	ts_free(&dev);
	env_done(&e);
}

static void
test_relay_end_op_closes(void **state)
{
	(void)state;
	end_case(END_OP_CLOSES);
}

static void
test_relay_end_op_cancels(void **state)
{
	(void)state;
	end_case(END_OP_CANCELS);
}

static void
test_relay_end_op_vanishes(void **state)
{
	(void)state;
	end_case(END_OP_VANISHES);
}

static void
test_relay_end_dev_closes(void **state)
{
	(void)state;
	end_case(END_DEV_CLOSES);
}

static void
test_relay_end_dev_cancels(void **state)
{
	(void)state;
	end_case(END_DEV_CANCELS);
}

static void
test_relay_end_dev_vanishes(void **state)
{
	(void)state;
	end_case(END_DEV_VANISHES);
}

static void
test_relay_end_shutdown(void **state)
{
	(void)state;
	end_case(END_SHUTDOWN);
}

/*
 * failmalloc on a joined session: the i-th allocation fails, for every i,
 * while the relay cuts shell lines (os_line), repairs invalid UTF-8 for
 * the device (a copy per line) and passes the device's output on.  Each
 * time the session ends once, both halves end and nothing leaks; a
 * session that ends OK lost nothing, one that ran out says so.
 */
static void
test_relay_failmalloc(void **state)
{
	static const char lines[] = "echo \xff\xfe caf\xc3\n"
	                            "uname -a\n"
	                            "printf '\xe2\x82'\n"
	                            "exit";
	static const char output[] = "some output\n";
	uint8_t want[256];
	size_t nwant = 0;
	struct tside op, dev;
	struct env e;
	unsigned i, nrelay = 0;
	int rc;

	(void)state;
	for (i = 0; i < 10000; i++) {
		env_init(&e);
		join(&e, &op, &dev, J_SHELL);
		failed = 0;
		fail_in = i;
		rc = op_send(&op, (const uint8_t *)lines, sizeof(lines) - 1, 9);
		if (rc != 0)
			grpc_call_cancel(op.ts_call);
		else if (grpc_call_close_send(op.ts_call) != 0)
			grpc_call_cancel(op.ts_call);
		rc = dev_send(&dev, (const uint8_t *)output, sizeof(output) - 1,
		              5);
		if (rc != 0)
			grpc_call_cancel(dev.ts_call);
		if (i == 0) {
			/* No failure: what the device gets (repaired). */
			RUN_UNTIL(&e.e_tl, op.ts_len == sizeof(output) - 1);
			tloop_run_for(&e.e_tl, 50);
			assert_true(dev.ts_len <= sizeof(want));
			nwant = dev.ts_len;
			memcpy(want, dev.ts_data, nwant);
		} else
			RUN_UNTIL(&e.e_tl,
			          op.ts_ended || dev.ts_ended ||
			              (op.ts_len == sizeof(output) - 1 &&
			               dev.ts_len >= nwant));
		fail_in = 0;
		if (dev.ts_call != NULL)
			assert_int_equal(grpc_call_close_send(dev.ts_call), 0);
		RUN_UNTIL(&e.e_tl, op.ts_ended && dev.ts_ended &&
		                       LIST_EMPTY(&e.e_b->b_sessions));
		{
			char line[1024];

			assert_int_equal(audit_ends(&e, line, sizeof(line)), 1);
		}
		if (op.ts_status == GRPC_STATUS_OK) {
			assert_int_equal(op.ts_nended, 1);
			assert_int_equal(dev.ts_len, nwant);
			assert_memory_equal(dev.ts_data, want, nwant);
			assert_int_equal(op.ts_len, sizeof(output) - 1);
		} else if (op.ts_status == GRPC_STATUS_RESOURCE_EXHAUSTED) {
			/* The relay's, or gRPC's own on either side. */
			assert_int_equal(
			    strncmp(op.ts_msg, "out of memory", 13), 0);
			nrelay +=
			    strcmp(op.ts_msg, "out of memory while "
			                      "relaying the session") == 0;
		}
		ts_free(&op);
		ts_free(&dev);
		env_done(&e);
		if (i > 0 && failed == 0)
			break;
	}
	/* The sweep reached the end: the scenario allocates fewer times. */
	assert_true(i > 1 && i < 10000);
	/* Some failures hit the relay's own allocations. */
	assert_true(nrelay > 0);
}

/* An argument runs only the tests whose names match it (cmocka's glob). */
int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_malformed_session_input),
	    cmocka_unit_test(test_device_not_connected),
	    cmocka_unit_test(test_unregistered_device),
	    cmocka_unit_test(test_device_listed),
	    cmocka_unit_test(test_grant_and_session_limit),
	    cmocka_unit_test(test_failmalloc),
	    cmocka_unit_test(test_accept_failmalloc),
	    cmocka_unit_test(test_relay_bytes_both_ways),
	    cmocka_unit_test(test_relay_netconf_bytes),
	    cmocka_unit_test(test_relay_netconf_big_rpc_before_hello),
	    cmocka_unit_test(test_relay_slow_operator),
	    cmocka_unit_test(test_relay_slow_device),
	    cmocka_unit_test(test_relay_end_op_closes),
	    cmocka_unit_test(test_relay_end_op_cancels),
	    cmocka_unit_test(test_relay_end_op_vanishes),
	    cmocka_unit_test(test_relay_end_dev_closes),
	    cmocka_unit_test(test_relay_end_dev_cancels),
	    cmocka_unit_test(test_relay_end_dev_vanishes),
	    cmocka_unit_test(test_relay_end_shutdown),
	    cmocka_unit_test(test_relay_failmalloc),
	};

	log_init("operator_test", LOG_LEVEL_WARN);
	/* As the daemons do: a peer that closed is an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
