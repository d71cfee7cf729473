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
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "common/err.h"
#include "common/grpc.h"
#include "common/log.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "nms/registry.h"
#include "server/broker.h"
#include "server/operator.h"

/*
 * malloc(), calloc() and realloc() of the program's own code go through here
 * (-Wl,--wrap, tests/CMakeLists.txt): when fail_in is n > 0, the n-th
 * allocation from now fails.  Shared libraries (nghttp2, protobuf-c,
 * OpenSSL, libuv) allocate on their own.  The registry's verification
 * runs in libuv's threadpool, hence the atomics.
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
	uv_loop_t e_loop;
	uv_timer_t e_watchdog;
	uv_timer_t e_tick;
	int e_timed_out;
	char e_dir[64];
	char e_devpath[128];
	char e_oppath[128];

	struct broker *e_b;
	struct grpc_server *e_devsrv;
	struct grpc_server *e_opsrv;
	int e_srv_done;

	struct grpc_conn *e_dev; /* a device's connection */
	struct grpc_conn *e_op;  /* an operator's connection */
	int e_ready;
	int e_closed;
};

#define RUN_UNTIL(e, cond)                                                     \
	do {                                                                   \
		while (!(cond)) {                                              \
			if ((e)->e_timed_out)                                  \
				fail_msg("watchdog fired waiting for %s",      \
				         #cond);                               \
			uv_run(&(e)->e_loop, UV_RUN_ONCE);                     \
		}                                                              \
	} while (0)

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
on_watchdog(uv_timer_t *t)
{
	struct env *e = t->data;

	e->e_timed_out = 1;
}

static void
on_tick(uv_timer_t *t)
{
	(void)t;
}

static void
env_init(struct env *e)
{
	const struct broker_opts bo = {.bo_session_limit = 1,
	                               .bo_session_wait_ms = 100};
	struct registry *reg;
	char *line, err[256];

	memset(e, 0, sizeof(*e));
	assert_int_equal(uv_loop_init(&e->e_loop), 0);
	uv_timer_init(&e->e_loop, &e->e_watchdog);
	e->e_watchdog.data = e;
	uv_timer_start(&e->e_watchdog, on_watchdog, WATCHDOG_MS, 0);
	uv_timer_init(&e->e_loop, &e->e_tick);
	uv_timer_start(&e->e_tick, on_tick, TICK_MS, TICK_MS);
	snprintf(e->e_dir, sizeof(e->e_dir), "/tmp/operator_test.XXXXXX");
	assert_non_null(mkdtemp(e->e_dir));
	snprintf(e->e_devpath, sizeof(e->e_devpath), "%s/dev.sock", e->e_dir);
	snprintf(e->e_oppath, sizeof(e->e_oppath), "%s/op.sock", e->e_dir);

	assert_int_equal(
	    registry_hash_line("dev-1", (const uint8_t *)"s3cret", 6, &line),
	    0);
	assert_int_equal(
	    registry_parse("test", line, strlen(line), &reg, err, sizeof(err)),
	    0);
	free(line);
	assert_int_equal(broker_new(&e->e_loop, &bo, reg, &e->e_b), 0);

	assert_int_equal(
	    grpc_server_new(&e->e_loop, NULL, &devsrv_ops, e, &e->e_devsrv), 0);
	assert_int_equal(broker_register_device_methods(e->e_b, e->e_devsrv),
	                 0);
	assert_int_equal(
	    grpc_server_listen_unix(e->e_devsrv, e->e_devpath, 0600), 0);
	assert_int_equal(
	    grpc_server_new(&e->e_loop, NULL, NULL, e, &e->e_opsrv), 0);
	assert_int_equal(operator_register(e->e_b, e->e_opsrv), 0);
	assert_int_equal(grpc_server_listen_unix(e->e_opsrv, e->e_oppath, 0600),
	                 0);

	assert_int_equal(grpc_conn_connect_unix(&e->e_loop, e->e_devpath, NULL,
	                                        &conn_ops, e, &e->e_dev),
	                 0);
	assert_int_equal(grpc_conn_connect_unix(&e->e_loop, e->e_oppath, NULL,
	                                        &conn_ops, e, &e->e_op),
	                 0);
	RUN_UNTIL(e, e->e_ready == 2);
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
	RUN_UNTIL(e, e->e_srv_done == 2 && e->e_dev == NULL && e->e_op == NULL);
	broker_free(e->e_b);
	uv_close((uv_handle_t *)&e->e_watchdog, NULL);
	uv_close((uv_handle_t *)&e->e_tick, NULL);
	assert_int_equal(uv_run(&e->e_loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&e->e_loop), 0);
	unlink(e->e_devpath);
	unlink(e->e_oppath);
	rmdir(e->e_dir);
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
	RUN_UNTIL(&e, a.cc_ended && b.cc_ended && c.cc_ended);
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
	RUN_UNTIL(&e, a.cc_ended && b.cc_ended);
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
	RUN_UNTIL(&e, a.cc_ended && b.cc_ended);
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
	RUN_UNTIL(&e, broker_ndevices(e.e_b) == 1);
	cc_start_pb(e.e_op, &list, OPSVC "ListDevices", &lreq.base, 1);
	RUN_UNTIL(&e, list.cc_ended);
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
	RUN_UNTIL(&e, init.cc_ended);
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
	RUN_UNTIL(&e, broker_ndevices(e.e_b) == 1);
	op_open(&e, &o1, "dev-1", 1000);
	RUN_UNTIL(&e, i1.cc_ended || i2.cc_ended);
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
	RUN_UNTIL(&e, o2.cc_ended);
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
		RUN_UNTIL(&e, init.cc_ended || broker_ndevices(e.e_b) == 1 ||
		                  e.e_dev == NULL);
		if (e.e_op != NULL) {
			cc_start_pb(e.e_op, &list, OPSVC "ListDevices",
			            &lreq.base, 1);
			op_open(&e, &sess, "dev-1", 100);
			RUN_UNTIL(&e, (list.cc_ended && sess.cc_ended) ||
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
	};

	log_init("operator_test", LOG_LEVEL_WARN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
