/*
 * ncgrpc-testd: a minimal jnx.jet.netconf.Ncgrpc server on the common
 * library, for the interop tests and benchmarks (docs/internals/testtools.md
 * is its contract).  It is also the skeleton of ncgrpcd: a status probe, a
 * long-poll Initialize with a secret check, and a CommandGet stream.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "addr.h"
#include "err.h"
#include "grpc.h"
#include "log.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_wire.pb-c.h"
#include "peerutil.h"
#include "tls.h"

#define SVC "/jnx.jet.netconf.Ncgrpc/"

static struct {
	const char *secret;
	uint64_t release_after_ms;
	int csh;
	uv_loop_t *loop;
	struct grpc_server *srv;
	uv_signal_t sigint, sigterm;
} testd = {.secret = "secret"};

/* A unary call collects its one request, then answers at half-close. */
struct unary {
	struct grpc_call *u_call;
	uint8_t *u_req;
	size_t u_len;
	int u_got;
	uv_timer_t u_timer;
	int u_timer_used;
	int u_released;
	int u_accepted;
	char u_device[128];
};

static void
unary_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct unary *u = arg;

	if (u->u_got++) {
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "more than one request message", NULL);
		return;
	}
	if ((u->u_req = malloc(len + 1)) == NULL) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	memcpy(u->u_req, msg, len);
	u->u_len = len;
}

static void
on_unary_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
unary_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct unary *u = arg;

	(void)c;
	(void)msg;
	if (u->u_accepted && !u->u_released)
		peer_say("initialize-cancelled device=%s", u->u_device);
	free(u->u_req);
	if (u->u_timer_used) {
		u->u_timer.data = u;
		uv_close((uv_handle_t *)&u->u_timer, on_unary_timer_closed);
	} else
		free(u);
	(void)status;
}

static void
reply(struct grpc_call *c, const ProtobufCMessage *m,
      const struct grpc_mdlist *trailers)
{
	if (grpc_call_send_pb(c, m) != 0) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	grpc_call_finish(c, GRPC_STATUS_OK, NULL, trailers);
}

static void
status_on_half_close(struct grpc_call *c, void *arg)
{
	struct unary *u = arg;
	Jnx__Jet__Netconf__NcgrpcServerStatusGetRequest *req;
	Jnx__Jet__Netconf__NcgrpcServerStatusGetResponse resp =
	    JNX__JET__NETCONF__NCGRPC_SERVER_STATUS_GET_RESPONSE__INIT;

	req = jnx__jet__netconf__ncgrpc_server_status_get_request__unpack(
	    NULL, u->u_len, u->u_req);
	if (req == NULL) {
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "malformed request", NULL);
		return;
	}
	jnx__jet__netconf__ncgrpc_server_status_get_request__free_unpacked(
	    req, NULL);
	peer_say("status");
	resp.status = JNX__JET__NETCONF__STATUS_RESPONSE__SUCCESS;
	reply(c, &resp.base, NULL);
}

static const struct grpc_call_ops status_ops = {
    .on_message = unary_on_message,
    .on_half_close = status_on_half_close,
    .on_end = unary_on_end,
};

static void
init_release(uv_timer_t *t)
{
	struct unary *u = t->data;
	Jnx__Jet__Netconf__NcgrpcInitializeResponse resp =
	    JNX__JET__NETCONF__NCGRPC_INITIALIZE_RESPONSE__INIT;
	struct grpc_mdlist tr = {0};
	const char *type = testd.csh ? "csh" : "netconf";

	resp.session_type = testd.csh
	                        ? JNX__JET__NETCONF__SESSION_TYPE__CSH
	                        : JNX__JET__NETCONF__SESSION_TYPE__NETCONF;
	grpc_md_add(&tr, "conn_type", type, strlen(type));
	u->u_released = 1;
	peer_say("initialize-released device=%s", u->u_device);
	reply(u->u_call, &resp.base, &tr);
	grpc_md_free(&tr);
}

static void
init_on_half_close(struct grpc_call *c, void *arg)
{
	struct unary *u = arg;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest *req;
	size_t slen;
	char msg[200];

	req = jnx__jet__netconf__ncgrpc_initialize_request__unpack(
	    NULL, u->u_len, u->u_req);
	if (req == NULL) {
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "malformed request", NULL);
		return;
	}
	snprintf(u->u_device, sizeof(u->u_device), "%s", req->device_id);
	slen = strlen(req->secret_key);
	/* Constant-time compare, as the real server must. */
	if (slen != strlen(testd.secret) ||
	    CRYPTO_memcmp(req->secret_key, testd.secret, slen) != 0) {
		peer_say("initialize-rejected device=%s", u->u_device);
		snprintf(msg, sizeof(msg), "invalid secret for device '%s'",
		         u->u_device);
		jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(
		    req, NULL);
		grpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED, msg, NULL);
		return;
	}
	peer_say("initialize device=%s instance=%llu", u->u_device,
	         (unsigned long long)req->instance_id);
	jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(req, NULL);
	u->u_accepted = 1;
	uv_timer_init(testd.loop, &u->u_timer);
	u->u_timer.data = u;
	u->u_timer_used = 1;
	uv_timer_start(&u->u_timer, init_release, testd.release_after_ms, 0);
}

static void
init_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct unary *u = arg;

	if (u->u_timer_used)
		uv_timer_stop(&u->u_timer);
	unary_on_end(c, status, msg, arg);
}

static const struct grpc_call_ops init_ops = {
    .on_message = unary_on_message,
    .on_half_close = init_on_half_close,
    .on_end = init_on_end,
};

static void
start_unary(struct grpc_call *c, const struct grpc_call_ops *ops)
{
	struct unary *u = calloc(1, sizeof(*u));

	if (u == NULL) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	u->u_call = c;
	grpc_call_set_ops(c, ops, u);
}

static void
handle_status(struct grpc_call *c, void *arg)
{
	(void)arg;
	start_unary(c, &status_ops);
}

static void
handle_initialize(struct grpc_call *c, void *arg)
{
	(void)arg;
	start_unary(c, &init_ops);
}

/* CommandGet: echo every message back, with backpressure. */
struct echo {
	unsigned long long e_count;
	unsigned long long e_bytes;
};

#define MD_LINE_MAX 4096

/* Appends " K=V" to the line (a char[MD_LINE_MAX]), as far as it fits. */
static void
append_kv(const char *kv, void *arg)
{
	char *line = arg;
	size_t n = strlen(line);

	snprintf(line + n, MD_LINE_MAX - n, " %s", kv);
}

static void
echo_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct echo *e = arg;
	Ncgrpc__Wire__CommandGetRequest *req;
	Ncgrpc__Wire__CommandGetResponse resp =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	uint8_t *out;
	size_t n;

	req = ncgrpc__wire__command_get_request__unpack(NULL, len, msg);
	if (req == NULL) {
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
		                 "malformed CommandGet request", NULL);
		return;
	}
	e->e_count++;
	e->e_bytes += req->message.len;
	if (req->message.len >= 7 &&
	    memcmp(req->message.data, "status:", 7) == 0) {
		char text[512], *sp;
		unsigned long long code;

		n = req->message.len - 7;
		if (n >= sizeof(text))
			n = sizeof(text) - 1;
		memcpy(text, req->message.data + 7, n);
		text[n] = '\0';
		sp = strchr(text, ' ');
		if (sp != NULL)
			*sp++ = '\0';
		if (addr_parse_uint(text, 0, 16, &code) != 0)
			code = GRPC_STATUS_UNKNOWN;
		grpc_call_finish(c, (int)code, sp != NULL ? sp : "", NULL);
		ncgrpc__wire__command_get_request__free_unpacked(req, NULL);
		return;
	}
	if (testd.csh) {
		resp.command_case =
		    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND;
		resp.csh_command = req->message;
	} else {
		resp.command_case =
		    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND;
		resp.netconf_command = req->message;
	}
	n = ncgrpc__wire__command_get_response__get_packed_size(&resp);
	if ((out = malloc(n + 1)) != NULL) {
		ncgrpc__wire__command_get_response__pack(&resp, out);
		if (grpc_call_send(c, out, n) != 0)
			grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
			                 "echo too large", NULL);
		free(out);
	}
	ncgrpc__wire__command_get_request__free_unpacked(req, NULL);
	/* A client that does not read our echoes must not grow our memory. */
	if (grpc_call_queued(c) >= GRPC_CALL_HIWAT)
		grpc_call_pause(c);
}

static void
echo_on_writable(struct grpc_call *c, void *arg)
{
	(void)arg;
	grpc_call_resume(c);
}

static void
echo_on_half_close(struct grpc_call *c, void *arg)
{
	struct echo *e = arg;
	struct grpc_mdlist tr = {0};
	char n[32];

	snprintf(n, sizeof(n), "%llu", e->e_count);
	grpc_md_add(&tr, "x-echo-count", n, strlen(n));
	peer_say("commandget-end count=%llu bytes=%llu", e->e_count,
	         e->e_bytes);
	grpc_call_finish(c, GRPC_STATUS_OK, NULL, &tr);
	grpc_md_free(&tr);
}

static void
echo_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct echo *e = arg;

	(void)c;
	(void)msg;
	if (status == GRPC_STATUS_CANCELLED)
		peer_say("commandget-cancelled count=%llu", e->e_count);
	free(e);
}

static const struct grpc_call_ops echo_ops = {
    .on_message = echo_on_message,
    .on_half_close = echo_on_half_close,
    .on_writable = echo_on_writable,
    .on_end = echo_on_end,
};

static void
handle_commandget(struct grpc_call *c, void *arg)
{
	struct echo *e;
	char line[MD_LINE_MAX];

	(void)arg;
	if ((e = calloc(1, sizeof(*e))) == NULL) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	line[0] = '\0';
	peer_md_each(grpc_call_metadata(c), append_kv, line);
	peer_say("commandget-open%s", line);
	grpc_call_set_ops(c, &echo_ops, e);
	grpc_call_send_headers(c, grpc_call_metadata(c));
}

static void
on_shutdown_done(void *arg)
{
	(void)arg;
	uv_close((uv_handle_t *)&testd.sigint, NULL);
	uv_close((uv_handle_t *)&testd.sigterm, NULL);
}

static void
on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	(void)signum;
	if (testd.srv != NULL) {
		grpc_server_shutdown(testd.srv, 2000, on_shutdown_done, NULL);
		testd.srv = NULL;
	}
}

static void
on_conn_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	(void)arg;
	if (err != 0)
		log_info("connection from %s closed: %s", grpc_conn_peer(conn),
		         reason);
}

static const struct grpc_server_ops server_ops = {
    .on_conn_closed = on_conn_closed,
};

static noreturn void
usage(int code)
{
	fprintf(
	    code == 0 ? stdout : stderr,
	    "usage: ncgrpc-testd --listen HOST:PORT --cert FILE --key FILE\n"
	    "                    [--secret S] [--release-after MS]\n"
	    "                    [--session-type netconf|csh] "
	    "[--max-message BYTES] [-d]\n"
	    "\n"
	    "A minimal jnx.jet.netconf.Ncgrpc server for tests and "
	    "benchmarks;\n"
	    "see docs/internals/testtools.md.\n");
	exit(code);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {"secret", required_argument, NULL, 's'},
	    {"release-after", required_argument, NULL, 'r'},
	    {"session-type", required_argument, NULL, 't'},
	    {"max-message", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen = NULL, *cert = NULL, *key = NULL;
	struct grpc_opts opts = {0};
	struct tls_ctx *ctx;
	unsigned long long v;
	char host[256], err[256];
	uint16_t port;
	int ch, rc;

	log_init("ncgrpc-testd", LOG_LEVEL_WARN);
	while ((ch = getopt_long(argc, argv, "dh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			listen = optarg;
			break;
		case 'c':
			cert = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 's':
			testd.secret = optarg;
			break;
		case 'r':
			if (addr_parse_uint(optarg, 0, 86400000, &v) != 0)
				usage(64);
			testd.release_after_ms = v;
			break;
		case 't':
			if (strcmp(optarg, "csh") == 0)
				testd.csh = 1;
			else if (strcmp(optarg, "netconf") != 0)
				usage(64);
			break;
		case 'm':
			if (addr_parse_uint(optarg, 1, 1u << 30, &v) != 0)
				usage(64);
			opts.go_max_message = (size_t)v;
			break;
		case 'd':
			log_set_level(LOG_LEVEL_DEBUG);
			break;
		case 'h':
			usage(0);
		default:
			usage(64);
		}
	}
	if (listen == NULL || cert == NULL || key == NULL || optind != argc)
		usage(64);
	if (addr_parse_hostport(listen, 0, 1, host, sizeof(host), &port) != 0)
		fatalx("bad listen address \"%s\"", listen);
	if ((rc = tls_ctx_server_new(&ctx, cert, key, err, sizeof(err))) != 0)
		fatalx("tls: %s", err);

	signal(SIGPIPE, SIG_IGN);
	testd.loop = uv_default_loop();
	if (grpc_server_new(testd.loop, &opts, &server_ops, NULL, &testd.srv) !=
	    0)
		fatalx("out of memory");
	if (grpc_server_add_method(testd.srv, SVC "NcgrpcServerStatusGet",
	                           handle_status, NULL) != 0 ||
	    grpc_server_add_method(testd.srv, SVC "NcgrpcInitialize",
	                           handle_initialize, NULL) != 0 ||
	    grpc_server_add_method(testd.srv, SVC "NcgrpcCommandGet",
	                           handle_commandget, NULL) != 0)
		fatalx("out of memory");
	if ((rc = grpc_server_listen(testd.srv, host, port, ctx)) != 0)
		fatalx("listen on \"%s\": %s", listen, uv_strerror(rc));
	uv_signal_init(testd.loop, &testd.sigint);
	uv_signal_init(testd.loop, &testd.sigterm);
	uv_signal_start(&testd.sigint, on_signal, SIGINT);
	uv_signal_start(&testd.sigterm, on_signal, SIGTERM);
	if (strchr(host, ':') != NULL)
		peer_say("listening [%s]:%u", host,
		         grpc_server_port(testd.srv));
	else
		peer_say("listening %s:%u", host, grpc_server_port(testd.srv));
	uv_run(testd.loop, UV_RUN_DEFAULT);
	tls_ctx_free(ctx);
	rc = uv_loop_close(testd.loop);
	if (rc != 0)
		log_warnx("event loop closed with handles open: %s",
		          uv_strerror(rc));
	return rc == 0 ? 0 : 1;
}
