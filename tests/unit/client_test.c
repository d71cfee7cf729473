/*
 * The agent's client manager (src/agent/client.c) against an NMS in the
 * same loop: a grpc_server with TLS on 127.0.0.1 that answers
 * ServerStatusGet and holds or refuses Initialize, and "dead" addresses,
 * bare listeners that accept and close at once (a TLS failure for the
 * client).  What is asserted is the order and the timing of the
 * connection attempts: address order, in-order against sticky after a lost
 * connection, the jittered backoff, the waittime after a failed pass and
 * after an authentication failure.
 *
 * client.c is included to read its state (cl_backoff_ms).  No session is
 * ever granted: session.c is linked but not run.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "testutil.h"

#include "agent/client.c"
#include "nms/certgen.h"

#define WATCHDOG_MS 15000
#define TICK_MS     5
#define NDEAD       2
#define MAXEV       16

enum init_mode {
	INIT_HOLD,   /* Initialize waits (for a session request) */
	INIT_UNAUTH, /* Initialize ends UNAUTHENTICATED */
};

/* A dead address: accepts and closes at once. */
struct dead {
	struct env *d_env;
	uv_tcp_t d_lis;
	uint16_t d_port;
};

/* A connection attempt as the NMS side saw it. */
struct event {
	int ev_addr; /* 0..NDEAD-1: a dead address; NDEAD: the NMS */
	uint64_t ev_ms;
};

struct env {
	struct tloop e_tl;
	char e_dir[64];
	char e_cert[128];
	char e_key[128];

	struct dead e_dead[NDEAD];
	struct grpc_server *e_srv;
	struct tls_ctx *e_srv_tls; /* the listener does not hold a reference */
	uint16_t e_port;
	int e_srv_done;
	enum init_mode e_init_mode;

	struct event e_ev[MAXEV];
	int e_nev;
	int e_inits;              /* Initialize calls received */
	struct grpc_call *e_init; /* the one held */
	int e_init_ended;         /* its on_end ran */
	char e_device_id[64];
	char e_secret[64];
	uint64_t e_instance_id;

	struct client *e_cl;
	int e_cl_done;
};

static void
record(struct env *e, int addr)
{
	assert_true(e->e_nev < MAXEV);
	e->e_ev[e->e_nev].ev_addr = addr;
	e->e_ev[e->e_nev].ev_ms = uv_now(&e->e_tl.tl_loop);
	e->e_nev++;
}

static void
on_dead_closed(uv_handle_t *h)
{
	free(h);
}

static void
on_dead_connection(uv_stream_t *lis, int status)
{
	struct dead *d = lis->data;
	uv_tcp_t *t;

	assert_int_equal(status, 0);
	t = malloc(sizeof(*t));
	assert_non_null(t);
	uv_tcp_init(lis->loop, t);
	assert_int_equal(uv_accept(lis, (uv_stream_t *)t), 0);
	uv_close((uv_handle_t *)t, on_dead_closed);
	record(d->d_env, (int)(d - d->d_env->e_dead));
}

/* The NMS. */

static int
nms_on_accept(struct grpc_conn *conn, void *arg)
{
	(void)conn;
	record(arg, NDEAD);
	return 0;
}

static const struct grpc_server_ops nms_ops = {
    .on_conn_accept = nms_on_accept,
};

static void
status_half_close(struct grpc_call *c, void *arg)
{
	Jnx__Jet__Netconf__NcgrpcServerStatusGetResponse r =
	    JNX__JET__NETCONF__NCGRPC_SERVER_STATUS_GET_RESPONSE__INIT;

	(void)arg;
	r.status = JNX__JET__NETCONF__STATUS_RESPONSE__SUCCESS;
	assert_int_equal(grpc_call_send_pb(c, &r.base), 0);
	assert_int_equal(grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL), 0);
}

static void
ignore_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	(void)c;
	(void)status;
	(void)message;
	(void)arg;
}

static const struct grpc_call_ops status_srv_ops = {
    .on_half_close = status_half_close,
    .on_end = ignore_end,
};

static void
h_status(struct grpc_call *c, void *arg)
{
	grpc_call_set_ops(c, &status_srv_ops, arg);
}

static void
init_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct env *e = arg;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest *r;

	(void)c;
	r = jnx__jet__netconf__ncgrpc_initialize_request__unpack(NULL, len,
	                                                         msg);
	assert_non_null(r);
	snprintf(e->e_device_id, sizeof(e->e_device_id), "%s", r->device_id);
	snprintf(e->e_secret, sizeof(e->e_secret), "%s", r->secret_key);
	e->e_instance_id = r->instance_id;
	jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(r, NULL);
}

static void
init_half_close(struct grpc_call *c, void *arg)
{
	struct env *e = arg;

	e->e_inits++;
	if (e->e_init_mode == INIT_UNAUTH) {
		assert_int_equal(grpc_call_finish(c,
		                                  GRPC_STATUS_UNAUTHENTICATED,
		                                  "bad secret", NULL),
		                 0);
		return;
	}
	e->e_init = c;
	e->e_init_ended = 0;
}

static void
init_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct env *e = arg;

	(void)status;
	(void)message;
	if (e->e_init == c) {
		e->e_init = NULL;
		e->e_init_ended = 1;
	}
}

static const struct grpc_call_ops init_srv_ops = {
    .on_message = init_message,
    .on_half_close = init_half_close,
    .on_end = init_end,
};

static void
h_init(struct grpc_call *c, void *arg)
{
	grpc_call_set_ops(c, &init_srv_ops, arg);
}

static void
env_init(struct env *e)
{
	static const char *const names[] = {"127.0.0.1"};
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	char err[256];
	int i, len;

	memset(e, 0, sizeof(*e));
	tloop_init(&e->e_tl, WATCHDOG_MS, TICK_MS);

	tdir_make(e->e_dir, sizeof(e->e_dir), "client_test");
	snprintf(e->e_cert, sizeof(e->e_cert), "%s/cert.pem", e->e_dir);
	snprintf(e->e_key, sizeof(e->e_key), "%s/key.pem", e->e_dir);
	assert_int_equal(certgen_selfsigned(names, 1, 1, e->e_cert, e->e_key,
	                                    err, sizeof(err)),
	                 0);

	for (i = 0; i < NDEAD; i++) {
		struct dead *d = &e->e_dead[i];

		d->d_env = e;
		uv_tcp_init(&e->e_tl.tl_loop, &d->d_lis);
		d->d_lis.data = d;
		uv_ip4_addr("127.0.0.1", 0, &sin);
		assert_int_equal(
		    uv_tcp_bind(&d->d_lis, (const struct sockaddr *)&sin, 0),
		    0);
		assert_int_equal(
		    uv_listen((uv_stream_t *)&d->d_lis, 8, on_dead_connection),
		    0);
		len = sizeof(ss);
		assert_int_equal(
		    uv_tcp_getsockname(&d->d_lis, (struct sockaddr *)&ss, &len),
		    0);
		d->d_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}

	assert_int_equal(tls_ctx_server_new(&e->e_srv_tls, e->e_cert, e->e_key,
	                                    err, sizeof(err)),
	                 0);
	assert_int_equal(
	    grpc_server_new(&e->e_tl.tl_loop, NULL, &nms_ops, e, &e->e_srv), 0);
	assert_int_equal(grpc_server_add_method(e->e_srv,
	                                        SVC "NcgrpcServerStatusGet",
	                                        h_status, e),
	                 0);
	assert_int_equal(
	    grpc_server_add_method(e->e_srv, SVC "NcgrpcInitialize", h_init, e),
	    0);
	assert_int_equal(
	    grpc_server_listen(e->e_srv, "127.0.0.1", 0, e->e_srv_tls), 0);
	e->e_port = grpc_server_port(e->e_srv);
	assert_int_not_equal(e->e_port, 0);
}

/*
 * Starts a client whose addresses are given as indexes: 0..NDEAD-1 a dead
 * address, NDEAD the NMS.
 */
static void
env_client(struct env *e, const int *which, size_t n, enum conf_reconnect how,
           unsigned waittime)
{
	static struct client_settings cs;
	struct conf_address ad[NDEAD + 1];
	struct conf_client cc;
	size_t i;

	assert_true(n <= NDEAD + 1);
	memset(&cs, 0, sizeof(cs));
	cs.cs_instance_id = 0x1122334455667788ULL;
	cs.cs_session_limit = 4;
	memset(ad, 0, sizeof(ad));
	for (i = 0; i < n; i++) {
		ad[i].ad_host = (char *)(uintptr_t) "127.0.0.1";
		ad[i].ad_port =
		    which[i] == NDEAD ? e->e_port : e->e_dead[which[i]].d_port;
		ad[i].ad_trusted_cert_file = e->e_cert;
	}
	memset(&cc, 0, sizeof(cc));
	cc.cc_name = (char *)(uintptr_t) "test";
	cc.cc_device_id = (char *)(uintptr_t) "dev-1";
	cc.cc_secret = (char *)(uintptr_t) "s3cret";
	cc.cc_secret_len = 6;
	cc.cc_reconnect = how;
	cc.cc_waittime = waittime;
	cc.cc_addrs = ad;
	cc.cc_naddrs = n;
	assert_int_equal(client_start(&e->e_tl.tl_loop, &cc, &cs, &e->e_cl), 0);
}

static void
on_client_done(void *arg)
{
	struct env *e = arg;

	e->e_cl_done = 1;
}

static void
on_srv_done(void *arg)
{
	struct env *e = arg;

	e->e_srv_done = 1;
}

static void
env_done(struct env *e)
{
	int i;

	if (e->e_cl != NULL) {
		client_stop(e->e_cl, "test over", on_client_done, e);
		RUN_UNTIL(&e->e_tl, e->e_cl_done);
	}
	grpc_server_shutdown(e->e_srv, 0, on_srv_done, e);
	RUN_UNTIL(&e->e_tl, e->e_srv_done);
	tls_ctx_free(e->e_srv_tls);
	for (i = 0; i < NDEAD; i++)
		uv_close((uv_handle_t *)&e->e_dead[i].d_lis, NULL);
	tloop_done(&e->e_tl);
	tdir_remove(e->e_dir);
}

/* Tests */

/*
 * Addresses are tried in the order written, each once, until one works;
 * the NMS then sees the device's Initialize.  Stopping the client ends it.
 */
static void
test_address_order(void **state)
{
	static const int which[] = {0, 1, NDEAD};
	struct env e;

	(void)state;
	env_init(&e);
	env_client(&e, which, 3, CONF_RECONNECT_IN_ORDER, 30);
	RUN_UNTIL(&e.e_tl, e.e_init != NULL);
	assert_int_equal(e.e_nev, 3);
	assert_int_equal(e.e_ev[0].ev_addr, 0);
	assert_int_equal(e.e_ev[1].ev_addr, 1);
	assert_int_equal(e.e_ev[2].ev_addr, NDEAD);
	/* No pause within a pass. */
	assert_true(e.e_ev[2].ev_ms - e.e_ev[0].ev_ms < 1000);
	assert_string_equal(e.e_device_id, "dev-1");
	assert_string_equal(e.e_secret, "s3cret");
	/* Its TLS tickets go under its name and its device id. */
	assert_string_equal(e.e_cl->cl_resume_tag, "4:test dev-1");
	assert_true(e.e_instance_id == 0x1122334455667788ULL);
	assert_int_equal(e.e_inits, 1);

	client_stop(e.e_cl, "test over", on_client_done, &e);
	RUN_UNTIL(&e.e_tl, e.e_cl_done && e.e_init_ended);
	e.e_cl = NULL;
	assert_int_equal(e.e_nev, 3);
	env_done(&e);
}

/*
 * A working connection that is lost: a reconnect after the jittered
 * backoff (1 s: 0.5 to 1.5 s), from the first address (in-order) or from
 * the one that worked (sticky).
 */
static void
lost_connection(enum conf_reconnect how, int want_next)
{
	static const int which[] = {0, NDEAD};
	struct env e;
	uint64_t t0, dt;
	int n;

	env_init(&e);
	env_client(&e, which, 2, how, 30);
	RUN_UNTIL(&e.e_tl, e.e_init != NULL);
	n = e.e_nev;
	assert_int_equal(e.e_ev[n - 1].ev_addr, NDEAD);
	assert_int_equal(e.e_cl->cl_backoff_ms, 0);
	/* The server ends the long poll: the client drops the connection. */
	t0 = uv_now(&e.e_tl.tl_loop);
	assert_int_equal(
	    grpc_call_finish(e.e_init, GRPC_STATUS_UNAVAILABLE, "gone", NULL),
	    0);
	RUN_UNTIL(&e.e_tl, e.e_nev > n);
	dt = e.e_ev[n].ev_ms - t0;
	assert_int_equal(e.e_ev[n].ev_addr, want_next);
	assert_int_equal(e.e_cl->cl_backoff_ms, BACKOFF_MIN_MS);
	assert_true(dt >= BACKOFF_MIN_MS / 2 - 10);
	assert_true(dt < BACKOFF_MIN_MS * 3 / 2 + 200);
	RUN_UNTIL(&e.e_tl, e.e_init != NULL);
	env_done(&e);
}

static void
test_lost_in_order(void **state)
{
	(void)state;
	lost_connection(CONF_RECONNECT_IN_ORDER, 0);
}

static void
test_lost_sticky(void **state)
{
	(void)state;
	lost_connection(CONF_RECONNECT_STICKY, NDEAD);
}

/* After a pass where every address failed, the next starts waittime on. */
static void
test_waittime_between_passes(void **state)
{
	static const int which[] = {0, 1};
	struct env e;
	uint64_t gap;

	(void)state;
	env_init(&e);
	env_client(&e, which, 2, CONF_RECONNECT_IN_ORDER, 1);
	RUN_UNTIL(&e.e_tl, e.e_nev >= 4);
	assert_int_equal(e.e_ev[0].ev_addr, 0);
	assert_int_equal(e.e_ev[1].ev_addr, 1);
	assert_int_equal(e.e_ev[2].ev_addr, 0);
	assert_int_equal(e.e_ev[3].ev_addr, 1);
	assert_true(e.e_ev[1].ev_ms - e.e_ev[0].ev_ms < 500);
	gap = e.e_ev[2].ev_ms - e.e_ev[1].ev_ms;
	assert_true(gap >= 990 && gap < 1500);
	assert_int_equal(e.e_inits, 0);
	env_done(&e);
}

/* Refused credentials: the same address again, but only after waittime. */
static void
test_auth_failed(void **state)
{
	static const int which[] = {0, NDEAD};
	struct env e;
	uint64_t gap;

	(void)state;
	env_init(&e);
	e.e_init_mode = INIT_UNAUTH;
	env_client(&e, which, 2, CONF_RECONNECT_IN_ORDER, 1);
	RUN_UNTIL(&e.e_tl, e.e_inits == 2);
	assert_int_equal(e.e_nev, 3);
	assert_int_equal(e.e_ev[0].ev_addr, 0);
	assert_int_equal(e.e_ev[1].ev_addr, NDEAD);
	assert_int_equal(e.e_ev[2].ev_addr, NDEAD);
	gap = e.e_ev[2].ev_ms - e.e_ev[1].ev_ms;
	assert_true(gap >= 990 && gap < 1800);
	env_done(&e);
}

/*
 * Addresses that trust the same certificates share one TLS context, whether
 * the PEM text is inline or in a file; other certificates get their own,
 * an unusable anchor none (and a reason naming the file), and the last
 * user to go takes the context with it.
 */
static void
test_shared_trust(void **state)
{
	static const char *const names[] = {"127.0.0.1"};
	char dir[256], cert[300], key[300], other[300], okey[300], err[256];
	char *pem;
	struct conf_address ad;
	struct caddr a[5];
	size_t len;
	int i;

	(void)state;
	tdir_make(dir, sizeof(dir), "client_trust");
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(other, sizeof(other), "%s/other.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(okey, sizeof(okey), "%s/okey.pem", dir);
	assert_int_equal(
	    certgen_selfsigned(names, 1, 1, cert, key, err, sizeof(err)), 0);
	assert_int_equal(
	    certgen_selfsigned(names, 1, 1, other, okey, err, sizeof(err)), 0);
	assert_int_equal(tls_file_read(cert, &pem, &len, err, sizeof(err)), 0);
	memset(a, 0, sizeof(a));
	memset(&ad, 0, sizeof(ad));
	ad.ad_host = (char *)(uintptr_t) "127.0.0.1";
	ad.ad_port = 1;
	ad.ad_trusted_cert_file = cert;
	assert_int_equal(caddr_init(&a[0], &ad), 0);
	assert_int_equal(caddr_init(&a[1], &ad), 0);
	ad.ad_trusted_cert_file = NULL;
	ad.ad_trusted_cert = pem;
	assert_int_equal(caddr_init(&a[2], &ad), 0);
	ad.ad_trusted_cert = NULL;
	ad.ad_trusted_cert_file = other;
	assert_int_equal(caddr_init(&a[3], &ad), 0);
	ad.ad_trusted_cert_file = (char *)(uintptr_t) "/nonexistent/ca.pem";
	assert_int_equal(caddr_init(&a[4], &ad), 0);

	assert_non_null(a[0].ca_ctx);
	assert_ptr_equal(a[1].ca_ctx, a[0].ca_ctx);
	assert_ptr_equal(a[2].ca_ctx, a[0].ca_ctx);
	assert_int_equal(a[0].ca_trust->t_users, 3);
	assert_non_null(a[3].ca_ctx);
	assert_ptr_not_equal(a[3].ca_ctx, a[0].ca_ctx);
	assert_int_equal(a[3].ca_trust->t_users, 1);
	assert_null(a[4].ca_ctx);
	assert_null(a[4].ca_trust);
	assert_non_null(strstr(a[4].ca_ctx_err, "/nonexistent/ca.pem"));

	/* The first user goes; the others keep the context. */
	caddr_free(&a[0]);
	assert_int_equal(a[1].ca_trust->t_users, 2);
	for (i = 1; i < 5; i++)
		caddr_free(&a[i]);
	assert_true(LIST_EMPTY(&trusts));
	tls_file_free(pem, len);
	tdir_remove(dir);
}

/* An argument runs only the tests whose names match it (cmocka's glob). */
int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_address_order),
	    cmocka_unit_test(test_lost_in_order),
	    cmocka_unit_test(test_lost_sticky),
	    cmocka_unit_test(test_waittime_between_passes),
	    cmocka_unit_test(test_auth_failed),
	    cmocka_unit_test(test_shared_trust),
	};

	log_init("client_test", LOG_LEVEL_WARN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
