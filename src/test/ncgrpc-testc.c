/*
 * ncgrpc-testc: a minimal jnx.jet.netconf.Ncgrpc client on the common
 * library, for the interop tests and benchmarks (docs/internals/testtools.md
 * is its contract).  It is also the skeleton of ncgrpc-agent's connection
 * logic: connect over TLS, probe, long-poll Initialize, stream CommandGet.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <uv.h>

#include "addr.h"
#include "err.h"
#include "grpc.h"
#include "log.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_wire.pb-c.h"
#include "peerutil.h"
#include "tls.h"

#define SVC          "/jnx.jet.netconf.Ncgrpc/"
#define BENCH_WINDOW 16

enum cmd {
	CMD_STATUS,
	CMD_INIT,
	CMD_ECHO,
	CMD_CANCEL_INIT,
	CMD_SEND_STATUS,
	CMD_BENCH_STREAM,
	CMD_BENCH_UNARY
};

static struct {
	uv_loop_t *loop;
	struct grpc_conn *conn;
	struct grpc_mdlist md;
	const char *device_id;
	const char *secret;
	uint64_t deadline_ms;
	enum cmd cmd;
	unsigned long long count, size, ms, seconds;
	const char *status_text;
	unsigned long long status_code;
	int exit_code;
	int done;
	uv_timer_t timer;
	/* Streaming state. */
	struct grpc_call *call;
	unsigned long long sent, received, bytes;
	uint64_t t_start, t_end;
	int stop_sending;
	uint8_t *payload;
	int session_type;
	int got_response;
} tc = {.device_id = "dev1", .secret = "secret", .exit_code = 1};

/* Prints "PREFIX K=V" lines, sorted by key; -bin values as base64. */
static void
say_kv(const char *kv, void *prefix)
{
	peer_say("%s %s", (const char *)prefix, kv);
}

static void
print_md(const char *prefix, const struct grpc_mdlist *ml)
{
	peer_md_each(ml, say_kv, (void *)(uintptr_t)prefix);
}

static void
finish(int code)
{
	if (tc.done)
		return;
	tc.done = 1;
	tc.exit_code = code;
	uv_timer_stop(&tc.timer);
	uv_close((uv_handle_t *)&tc.timer, NULL);
	if (tc.conn != NULL)
		grpc_conn_close(tc.conn, 0);
}

static void
report_status(int status, const char *message)
{
	/* The first failure is the one that explains; later ones follow it. */
	if (tc.done)
		return;
	peer_say("error: %s: %s", grpc_status_name(status), message);
	finish(1);
}

static int
send_packed(struct grpc_call *c, const ProtobufCMessage *m)
{
	return grpc_call_send_pb(c, m);
}

static double
elapsed_s(void)
{
	return (double)(tc.t_end - tc.t_start) / 1e3;
}

/* status, initialize, cancel-initialize and bench-unary. */

static void start_unary(void);

static void
unary_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	(void)c;
	(void)arg;
	if (tc.cmd == CMD_STATUS || tc.cmd == CMD_BENCH_UNARY) {
		Jnx__Jet__Netconf__NcgrpcServerStatusGetResponse *r =
		    jnx__jet__netconf__ncgrpc_server_status_get_response__unpack(
		        NULL, len, msg);

		if (r == NULL)
			return;
		tc.got_response =
		    r->status == JNX__JET__NETCONF__STATUS_RESPONSE__SUCCESS;
		jnx__jet__netconf__ncgrpc_server_status_get_response__free_unpacked(
		    r, NULL);
		return;
	}
	Jnx__Jet__Netconf__NcgrpcInitializeResponse *r =
	    jnx__jet__netconf__ncgrpc_initialize_response__unpack(NULL, len,
	                                                          msg);
	if (r == NULL)
		return;
	tc.got_response = 1;
	tc.session_type = r->session_type;
	jnx__jet__netconf__ncgrpc_initialize_response__free_unpacked(r, NULL);
}

static void
unary_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	(void)arg;
	tc.call = NULL;
	if (tc.cmd == CMD_CANCEL_INIT) {
		if (status == GRPC_STATUS_CANCELLED) {
			peer_say("cancelled");
			finish(0);
		} else
			report_status(status, message);
		return;
	}
	if (status != GRPC_STATUS_OK) {
		report_status(status, message);
		return;
	}
	if (!tc.got_response) {
		report_status(GRPC_STATUS_INTERNAL, "no response message");
		return;
	}
	switch (tc.cmd) {
	case CMD_STATUS:
		peer_say("status SUCCESS");
		finish(0);
		break;
	case CMD_INIT:
		peer_say("session_type %s",
		         tc.session_type == JNX__JET__NETCONF__SESSION_TYPE__CSH
		             ? "CSH"
		             : "NETCONF");
		print_md("trailer", grpc_call_trailers(c));
		finish(0);
		break;
	case CMD_BENCH_UNARY:
		tc.received++;
		tc.t_end = uv_now(tc.loop);
		if (tc.t_end - tc.t_start < tc.seconds * 1000) {
			start_unary();
			break;
		}
		peer_say("bench-unary calls=%llu seconds=%.3f calls_per_s=%.1f",
		         tc.received, elapsed_s(),
		         (double)tc.received / elapsed_s());
		finish(0);
		break;
	default:
		break;
	}
}

static const struct grpc_call_ops unary_ops = {
    .on_message = unary_on_message,
    .on_end = unary_on_end,
};

static void
on_cancel_timer(uv_timer_t *t)
{
	(void)t;
	if (tc.call != NULL)
		grpc_call_cancel(tc.call);
}

static void
start_unary(void)
{
	Jnx__Jet__Netconf__NcgrpcServerStatusGetRequest sreq =
	    JNX__JET__NETCONF__NCGRPC_SERVER_STATUS_GET_REQUEST__INIT;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest ireq =
	    JNX__JET__NETCONF__NCGRPC_INITIALIZE_REQUEST__INIT;
	const ProtobufCMessage *m;
	const char *path;
	int rc;

	tc.got_response = 0;
	if (tc.cmd == CMD_STATUS || tc.cmd == CMD_BENCH_UNARY) {
		sreq.req = JNX__JET__NETCONF__STATUS_REQUEST__REQ_RUNNING;
		path = SVC "NcgrpcServerStatusGet";
		m = &sreq.base;
	} else {
		uint64_t id = 0;

		RAND_bytes((unsigned char *)&id, sizeof(id));
		ireq.instance_id = id;
		ireq.device_id = (char *)(uintptr_t)tc.device_id;
		ireq.secret_key = (char *)(uintptr_t)tc.secret;
		path = SVC "NcgrpcInitialize";
		m = &ireq.base;
	}
	rc = grpc_call_start(tc.conn, path, NULL, tc.deadline_ms, &unary_ops,
	                     NULL, &tc.call);
	if (rc != 0) {
		peer_say("error: start call: %s", ncg_strerror(rc));
		finish(1);
		return;
	}
	if ((rc = send_packed(tc.call, m)) != 0 ||
	    (rc = grpc_call_close_send(tc.call)) != 0) {
		peer_say("error: send: %s", ncg_strerror(rc));
		grpc_call_cancel(tc.call);
		return;
	}
	if (tc.cmd == CMD_CANCEL_INIT)
		uv_timer_start(&tc.timer, on_cancel_timer, tc.ms, 0);
}

/* echo, send-status and bench-stream over one CommandGet. */

/*
 * The payload of message i, ASCII that differs per message: byte k is
 * 'a' + (i + 7k) % 26.  As 7 * 15 = 1 (mod 26), that is byte k + 15i
 * (mod 26) of message 0's, so one buffer of size + 26 bytes, filled once,
 * holds every message's payload, and sending costs no work per byte (as
 * the grpcio client's one prebuilt message does not).
 */
static const uint8_t *
payload(unsigned long long i)
{
	return tc.payload + (15 * (i % 26)) % 26;
}

static int
send_echo(unsigned long long i)
{
	Ncgrpc__Wire__CommandGetRequest req =
	    NCGRPC__WIRE__COMMAND_GET_REQUEST__INIT;

	req.message.data = (uint8_t *)(uintptr_t)payload(i);
	req.message.len = tc.size;
	return send_packed(tc.call, &req.base);
}

static void
pump_sends(struct grpc_call *c)
{
	int rc;

	while (!tc.stop_sending && tc.sent < tc.count &&
	       grpc_call_queued(c) < GRPC_CALL_HIWAT) {
		if (tc.cmd == CMD_BENCH_STREAM) {
			if (tc.sent - tc.received >= BENCH_WINDOW)
				return;
			if (uv_now(tc.loop) - tc.t_start >= tc.seconds * 1000) {
				tc.stop_sending = 1;
				break;
			}
		}
		if ((rc = send_echo(tc.sent)) != 0) {
			if (rc == -EMSGSIZE)
				report_status(GRPC_STATUS_RESOURCE_EXHAUSTED,
				              "message larger than the "
				              "maximum message size");
			else
				peer_say("error: send: %s", ncg_strerror(rc));
			grpc_call_cancel(c);
			return;
		}
		tc.sent++;
	}
	if ((tc.sent == tc.count || tc.stop_sending) && tc.received == tc.sent)
		grpc_call_close_send(c);
}

static void
stream_on_message(struct grpc_call *c, const uint8_t *msg, size_t len,
                  void *arg)
{
	Ncgrpc__Wire__CommandGetResponse *r;
	const ProtobufCBinaryData *d;

	(void)arg;
	r = ncgrpc__wire__command_get_response__unpack(NULL, len, msg);
	if (r == NULL) {
		peer_say("error: malformed CommandGet response");
		grpc_call_cancel(c);
		return;
	}
	d = r->command_case ==
	            NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND
	        ? &r->csh_command
	        : &r->netconf_command;
	if (tc.cmd != CMD_BENCH_STREAM) {
		/* Check the echo against what message number "received" was. */
		if (d->len != tc.size ||
		    memcmp(d->data, payload(tc.received), d->len)) {
			peer_say("error: echo %llu differs (%zu bytes)",
			         tc.received, d->len);
			ncgrpc__wire__command_get_response__free_unpacked(r,
			                                                  NULL);
			grpc_call_cancel(c);
			return;
		}
	}
	tc.received++;
	tc.bytes += d->len;
	ncgrpc__wire__command_get_response__free_unpacked(r, NULL);
	pump_sends(c);
}

static void
stream_on_writable(struct grpc_call *c, void *arg)
{
	(void)arg;
	pump_sends(c);
}

static void
stream_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	(void)arg;
	tc.call = NULL;
	tc.t_end = uv_now(tc.loop);
	if (status != GRPC_STATUS_OK) {
		report_status(status, message);
		return;
	}
	if (tc.cmd == CMD_BENCH_STREAM) {
		double s = elapsed_s();

		peer_say("bench-stream messages=%llu bytes=%llu seconds=%.3f "
		         "mib_per_s=%.1f",
		         tc.received, tc.bytes, s,
		         (double)tc.bytes / (1024.0 * 1024.0) / s);
		finish(0);
		return;
	}
	if (tc.received != tc.count) {
		peer_say("error: %llu of %llu echoes arrived", tc.received,
		         tc.count);
		finish(1);
		return;
	}
	print_md("header", grpc_call_metadata(c));
	print_md("trailer", grpc_call_trailers(c));
	peer_say("echo ok count=%llu bytes=%llu", tc.received, tc.bytes);
	finish(0);
}

static const struct grpc_call_ops stream_ops = {
    .on_message = stream_on_message,
    .on_writable = stream_on_writable,
    .on_end = stream_on_end,
};

static void
start_stream(void)
{
	Ncgrpc__Wire__CommandGetRequest req =
	    NCGRPC__WIRE__COMMAND_GET_REQUEST__INIT;
	char text[600];
	size_t k;
	int rc, n;

	rc = grpc_call_start(tc.conn, SVC "NcgrpcCommandGet", &tc.md,
	                     tc.deadline_ms, &stream_ops, NULL, &tc.call);
	if (rc != 0) {
		peer_say("error: start call: %s", ncg_strerror(rc));
		finish(1);
		return;
	}
	tc.t_start = uv_now(tc.loop);
	if (tc.cmd == CMD_SEND_STATUS) {
		n = snprintf(text, sizeof(text), "status:%llu %s",
		             tc.status_code, tc.status_text);
		req.message.data = (uint8_t *)text;
		req.message.len = (size_t)n;
		send_packed(tc.call, &req.base);
		return;
	}
	if ((tc.payload = malloc(tc.size + 26)) == NULL) {
		peer_say("error: out of memory");
		grpc_call_cancel(tc.call);
		return;
	}
	for (k = 0; k < tc.size + 26; k++)
		tc.payload[k] = (uint8_t)('a' + k * 7 % 26);
	pump_sends(tc.call);
}

static void
on_ready(struct grpc_conn *conn, void *arg)
{
	(void)conn;
	(void)arg;
	tc.t_start = uv_now(tc.loop);
	switch (tc.cmd) {
	case CMD_STATUS:
	case CMD_INIT:
	case CMD_CANCEL_INIT:
	case CMD_BENCH_UNARY:
		start_unary();
		break;
	default:
		start_stream();
		break;
	}
}

static int
is_tls_error(int err)
{
	return err >= NCG_ETLS && err <= NCG_ETLS_HANDSHAKE_TIMEOUT;
}

static void
on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	(void)conn;
	(void)arg;
	tc.conn = NULL;
	if (tc.done)
		return;
	if (is_tls_error(err))
		peer_say("error: tls: %s (%s)", ncg_strerror(err), reason);
	else
		peer_say("error: connect: %s", reason);
	finish(2);
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = on_ready,
    .on_closed = on_closed,
};

static noreturn void
usage(int code)
{
	fprintf(code == 0 ? stdout : stderr,
	        "usage: ncgrpc-testc --connect HOST:PORT --ca FILE [options] "
	        "COMMAND [ARGS]\n"
	        "options: --device-id ID --secret S --deadline MS "
	        "--metadata K=V --max-message BYTES\n"
	        "commands: status | initialize | echo COUNT SIZE |\n"
	        "          cancel-initialize MS | send-status CODE TEXT |\n"
	        "          bench-stream SECONDS SIZE | bench-unary SECONDS\n"
	        "see docs/internals/testtools.md\n");
	exit(code);
}

static unsigned long long
num_arg(const char *s, unsigned long long max)
{
	unsigned long long v;

	if (s == NULL || addr_parse_uint(s, 0, max, &v) != 0)
		usage(64);
	return v;
}

static void
parse_command(int argc, char **argv)
{
	const char *c;

	if (argc < 1)
		usage(64);
	c = argv[0];
	if (strcmp(c, "status") == 0 && argc == 1)
		tc.cmd = CMD_STATUS;
	else if (strcmp(c, "initialize") == 0 && argc == 1)
		tc.cmd = CMD_INIT;
	else if (strcmp(c, "echo") == 0 && argc == 3) {
		tc.cmd = CMD_ECHO;
		tc.count = num_arg(argv[1], 1000000);
		tc.size = num_arg(argv[2], 64u << 20);
	} else if (strcmp(c, "cancel-initialize") == 0 && argc == 2) {
		tc.cmd = CMD_CANCEL_INIT;
		tc.ms = num_arg(argv[1], 3600000);
	} else if (strcmp(c, "send-status") == 0 && argc == 3) {
		tc.cmd = CMD_SEND_STATUS;
		tc.status_code = num_arg(argv[1], 16);
		tc.status_text = argv[2];
	} else if (strcmp(c, "bench-stream") == 0 && argc == 3) {
		tc.cmd = CMD_BENCH_STREAM;
		tc.seconds = num_arg(argv[1], 3600);
		tc.size = num_arg(argv[2], 4u << 20);
		tc.count = ~0ULL;
	} else if (strcmp(c, "bench-unary") == 0 && argc == 2) {
		tc.cmd = CMD_BENCH_UNARY;
		tc.seconds = num_arg(argv[1], 3600);
	} else
		usage(64);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"connect", required_argument, NULL, 'c'},
	    {"ca", required_argument, NULL, 'a'},
	    {"device-id", required_argument, NULL, 'i'},
	    {"secret", required_argument, NULL, 's'},
	    {"deadline", required_argument, NULL, 'D'},
	    {"metadata", required_argument, NULL, 'M'},
	    {"max-message", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *connect = NULL, *ca = NULL;
	struct grpc_opts opts = {0};
	struct tls_ctx *ctx;
	char host[256], err[256];
	uint16_t port;
	int ch, rc;

	log_init("ncgrpc-testc", LOG_LEVEL_WARN);
	while ((ch = getopt_long(argc, argv, "+dh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			connect = optarg;
			break;
		case 'a':
			ca = optarg;
			break;
		case 'i':
			tc.device_id = optarg;
			break;
		case 's':
			tc.secret = optarg;
			break;
		case 'D':
			tc.deadline_ms = num_arg(optarg, 86400000);
			break;
		case 'M': {
			char *eq = strchr(optarg, '=');
			uint8_t *bin = NULL;
			size_t binlen;

			if (eq == NULL)
				usage(64);
			*eq++ = '\0';
			if (grpc_meta_key_is_bin(optarg, strlen(optarg))) {
				/* -bin values are given in base64. */
				if (grpc_base64_decode(eq, strlen(eq), &bin,
				                       &binlen) != 0 ||
				    grpc_md_add(&tc.md, optarg, bin, binlen))
					usage(64);
				free(bin);
			} else if (grpc_md_add(&tc.md, optarg, eq,
			                       strlen(eq)) != 0)
				usage(64);
			break;
		}
		case 'm':
			opts.go_max_message = num_arg(optarg, 1u << 30);
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
	if (connect == NULL || ca == NULL)
		usage(64);
	parse_command(argc - optind, argv + optind);
	if (addr_parse_hostport(connect, 0, 0, host, sizeof(host), &port) != 0)
		usage(64);
	if ((rc = tls_ctx_client_new_file(&ctx, ca, err, sizeof(err))) != 0) {
		peer_say("error: tls: %s", err);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	tc.loop = uv_default_loop();
	uv_timer_init(tc.loop, &tc.timer);
	rc = grpc_conn_connect(tc.loop, host, port, ctx, &opts, &conn_ops, NULL,
	                       &tc.conn);
	tls_ctx_free(ctx);
	if (rc != 0) {
		peer_say("error: connect: %s", ncg_strerror(rc));
		return 2;
	}
	uv_run(tc.loop, UV_RUN_DEFAULT);
	grpc_md_free(&tc.md);
	free(tc.payload);
	if (uv_loop_close(tc.loop) != 0) {
		log_warnx("event loop closed with handles open");
		return 70;
	}
	return tc.exit_code;
}
