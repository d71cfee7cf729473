/*
 * Fuzzes a gRPC client connection (grpc_*.c over h2.c over nghttp2) with the
 * bytes a server would send, through the in-memory transport of
 * memxport.c.
 *
 * The client behaves like ncgrpc-agent: once connected it starts a unary
 * call (with metadata, "-bin" included, and a deadline far away) and a
 * bidirectional stream, which sends an empty and a 4 KiB message, answers
 * each message it receives and half-closes after an odd-sized one.  Their
 * stream ids are 1 and 3.
 *
 * Input: one control byte, then the server's byte stream (its SETTINGS
 * first).  Control bits 0-1 choose how the connection ends: 0, closed at
 * once by the client; 1 or 3, by the server (EOF); 2, a graceful client
 * close and then EOF.  Bits 2-7 choose the read size (0: the whole stream
 * at once, n: n * n bytes per read, with a loop turn between reads).
 */
#include <string.h>

#include <uv.h>

#include "err.h"
#include "fuzz.h"
#include "grpc.h"
#include "memxport.h"

#define FZ_PREFIX "/jnx.jet.netconf.Ncgrpc/"

static uv_loop_t fz_loop;
static struct grpc_conn *fz_conn; /* NULL once closed */
static int fz_calls;              /* calls started and not yet ended */

static void
touch_md(const struct grpc_mdlist *ml)
{
	volatile uint8_t sink = 0;
	size_t i, j;

	for (i = 0; i < ml->ml_n; i++) {
		for (j = 0; ml->ml_md[i].md_key[j] != '\0'; j++)
			sink ^= (uint8_t)ml->ml_md[i].md_key[j];
		for (j = 0; j <= ml->ml_md[i].md_len; j++)
			sink ^= ml->ml_md[i].md_value[j];
	}
	(void)sink;
}

static void
on_headers(struct grpc_call *c, void *arg)
{
	(void)arg;
	touch_md(grpc_call_metadata(c));
}

static void
on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	(void)arg;
	if (grpc_call_send(c, msg, len) != 0 || len % 2 == 1)
		(void)grpc_call_close_send(c);
}

static void
on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	(void)arg;
	FUZZ_CHECK(message != NULL);
	(void)strlen(message);
	(void)status;
	touch_md(grpc_call_trailers(c));
	touch_md(grpc_call_metadata(c));
	fz_calls--;
}

static const struct grpc_call_ops call_ops = {
    .on_headers = on_headers,
    .on_message = on_message,
    .on_end = on_end,
};

static void
start_calls(struct grpc_conn *conn)
{
	static const uint8_t bin[] = {0xde, 0xad, 0, 0xbe, 0xef};
	static const uint8_t req[] = {0x0a, 0x02, 'r', '1', 0x12, 0x01, 's'};
	struct grpc_mdlist md = {0};
	struct grpc_call *c;

	(void)grpc_md_add(&md, "client-id", "r1", 2);
	(void)grpc_md_add(&md, "x-trace-bin", bin, sizeof(bin));
	if (grpc_call_start(conn, FZ_PREFIX "NcgrpcInitialize", &md,
	                    3600 * 1000, &call_ops, NULL, &c) == 0) {
		fz_calls++;
		(void)grpc_call_send(c, req, sizeof(req));
		(void)grpc_call_close_send(c);
	}
	grpc_md_free(&md);
	if (grpc_call_start(conn, FZ_PREFIX "NcgrpcCommandGet", NULL, 0,
	                    &call_ops, NULL, &c) == 0) {
		static uint8_t big[4096];

		fz_calls++;
		(void)grpc_call_send(c, (const uint8_t *)"", 0);
		/*
		 * With a small initial window in the server's SETTINGS, its
		 * WINDOW_UPDATEs decide how much of this leaves.
		 */
		(void)grpc_call_send(c, big, sizeof(big));
	}
}

static void
on_ready(struct grpc_conn *conn, void *arg)
{
	(void)arg;
	start_calls(conn);
}

static void
on_goaway(struct grpc_conn *conn, uint32_t error_code, const char *debug,
          void *arg)
{
	(void)conn;
	(void)error_code;
	(void)arg;
	(void)strlen(debug);
}

static void
on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	(void)arg;
	(void)err;
	FUZZ_CHECK(conn == fz_conn);
	FUZZ_CHECK(reason != NULL);
	/* The contract: every call has ended before its connection. */
	FUZZ_CHECK(fz_calls == 0);
	fz_conn = NULL;
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = on_ready,
    .on_goaway = on_goaway,
    .on_closed = on_closed,
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (uv_loop_init(&fz_loop) != 0)
		abort();
	return 0;
}

/*
 * Turns the loop while transport events (drain, close) are due, and so
 * runs what they set off.  Bounded, as a busy stream keeps them coming.
 */
static void
turn_loop(void)
{
	int i;

	for (i = 0; i < 16 && memxport_pending() > 0; i++)
		uv_run(&fz_loop, UV_RUN_NOWAIT);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct grpc_opts opts = {
	    .go_max_message = 64 * 1024,
	};
	struct xport *x;
	size_t chunk, off, n;
	unsigned ctl;

	if (size < 1)
		return 0;
	ctl = data[0];
	data++;
	size--;
	chunk = (ctl >> 2) * (ctl >> 2);
	if (chunk == 0)
		chunk = size;

	fz_calls = 0;
	if (grpc_conn_connect(&fz_loop, "nms.example", 443, NULL, &opts,
	                      &conn_ops, NULL, &fz_conn) != 0)
		abort();
	x = memxport_last();
	FUZZ_CHECK(x != NULL);
	memxport_ready(x);

	for (off = 0; off < size && fz_conn != NULL; off += n) {
		n = size - off < chunk ? size - off : chunk;
		if (memxport_feed(x, data + off, n) != 0)
			break;
		turn_loop();
	}
	if (fz_conn != NULL) {
		switch (ctl & 3) {
		case 0:
			grpc_conn_close(fz_conn, NCG_ECANCELLED);
			break;
		case 2:
			grpc_conn_close(fz_conn, 0);
			turn_loop();
			if (fz_conn != NULL)
				memxport_eof(x);
			break;
		default:
			memxport_eof(x);
			break;
		}
	}
	/* Everything must close now: a handle left open hangs here. */
	uv_run(&fz_loop, UV_RUN_DEFAULT);
	FUZZ_CHECK(fz_conn == NULL);
	FUZZ_CHECK(memxport_live() == 0);
	return 0;
}
