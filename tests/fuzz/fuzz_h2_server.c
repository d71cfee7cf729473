/*
 * Fuzzes a gRPC server connection (grpc_*.c over h2.c over nghttp2) with the
 * bytes a client would send, through the in-memory transport of
 * memxport.c: no socket, no TLS.
 *
 * grpc_server.c is included so that the connection is accepted by its own
 * on_new_connection(), from a listener that never listens: every line of
 * the server's connection setup runs as in ncgrpcd.
 *
 * Input: one control byte, then the client's byte stream (connection
 * preface first).  Control bits 0-1 choose how the connection ends: 0 or
 * 3, the peer closes and then the server shuts down; 1, the server shuts
 * down alone; 2, the peer closes during the shutdown.  Bits 2-7
 * choose the read size (0: the whole stream at once, n: n * n bytes per
 * read, with a loop turn between reads).
 *
 * The server has four methods shaped like ncgrpcd's: a unary one, a
 * bidirectional stream that echoes, pauses and sometimes answers with a
 * large message, one that refuses at once and one that cancels on its
 * first message.
 */
#include "grpc_server.c"

#include "fuzz.h"
#include "memxport.h"

#define FZ_PREFIX "/jnx.jet.netconf.Ncgrpc/"

static uv_loop_t fz_loop;
static struct grpc_call *fz_paused; /* a call paused by the echo method */
static int fz_done;

static void
touch_md(const struct grpc_mdlist *ml)
{
	volatile uint8_t sink = 0;
	size_t i, j;

	/* Every byte of every entry is read: ASan checks the bounds. */
	for (i = 0; i < ml->ml_n; i++) {
		for (j = 0; ml->ml_md[i].md_key[j] != '\0'; j++)
			sink ^= (uint8_t)ml->ml_md[i].md_key[j];
		for (j = 0; j <= ml->ml_md[i].md_len; j++)
			sink ^= ml->ml_md[i].md_value[j];
	}
	(void)sink;
}

static void
on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	(void)arg;
	FUZZ_CHECK(message != NULL);
	FUZZ_CHECK(status >= 0 && status <= 16);
	if (fz_paused == c)
		fz_paused = NULL;
}

/* Unary, like NcgrpcInitialize: echo the request, finish with trailers. */
static void
unary_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	(void)arg;
	(void)grpc_call_send(c, msg, len);
}

static void
unary_half_close(struct grpc_call *c, void *arg)
{
	struct grpc_mdlist tr = {0};
	static const uint8_t bin[] = {0, 1, 2, 0xff};

	(void)arg;
	(void)grpc_md_add(&tr, "x-fuzz-bin", bin, sizeof(bin));
	(void)grpc_md_add(&tr, "x-fuzz", "t", 1);
	(void)grpc_call_finish(c, GRPC_STATUS_OK, "done: \xc3\xa9\n%", &tr);
	grpc_md_free(&tr);
}

static const struct grpc_call_ops unary_ops = {
    .on_message = unary_message,
    .on_half_close = unary_half_close,
    .on_end = on_end,
};

static void
h_unary(struct grpc_call *c, void *arg)
{
	(void)arg;
	touch_md(grpc_call_metadata(c));
	(void)grpc_call_timeout(c);
	grpc_call_set_ops(c, &unary_ops, NULL);
}

/*
 * Streaming, like NcgrpcCommandGet: echo; odd-sized messages pause, the
 * message "BIG" also gets a reply larger than the HTTP/2 windows and
 * GRPC_CALL_HIWAT (rare, as it is slow under ASan), and one starting with
 * 'F' ends the call.
 */
static void
echo_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	static uint8_t big[GRPC_CALL_HIWAT + 4096];

	(void)arg;
	if (len == 3 && memcmp(msg, "BIG", 3) == 0)
		(void)grpc_call_send(c, big, sizeof(big));
	if (grpc_call_send(c, msg, len) != 0 || (len > 0 && msg[0] == 'F')) {
		(void)grpc_call_finish(c, GRPC_STATUS_ABORTED, "bye", NULL);
		return;
	}
	if (len % 2 == 1 && fz_paused == NULL) {
		grpc_call_pause(c);
		fz_paused = c;
	}
}

static void
echo_half_close(struct grpc_call *c, void *arg)
{
	(void)arg;
	(void)grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
}

static void
echo_writable(struct grpc_call *c, void *arg)
{
	(void)arg;
	(void)grpc_call_queued(c);
}

static const struct grpc_call_ops echo_ops = {
    .on_message = echo_message,
    .on_half_close = echo_half_close,
    .on_writable = echo_writable,
    .on_end = on_end,
};

static void
h_echo(struct grpc_call *c, void *arg)
{
	struct grpc_mdlist md = {0};

	(void)arg;
	touch_md(grpc_call_metadata(c));
	(void)grpc_md_add(&md, "x-session", "1", 1);
	(void)grpc_call_send_headers(c, &md);
	grpc_md_free(&md);
	grpc_call_set_ops(c, &echo_ops, NULL);
}

/* Refused at once, like ServerStatusGet before Initialize. */
static void
h_refuse(struct grpc_call *c, void *arg)
{
	(void)arg;
	(void)grpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED,
	                       "not initialized\r\n\x1b[0m", NULL);
}

/* Cancelled by the server on the first message. */
static void
cancel_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	(void)msg;
	(void)len;
	(void)arg;
	grpc_call_cancel(c);
}

static const struct grpc_call_ops cancel_ops = {
    .on_message = cancel_message,
    .on_end = on_end,
};

static void
h_cancel(struct grpc_call *c, void *arg)
{
	(void)arg;
	grpc_call_set_ops(c, &cancel_ops, NULL);
}

static void
on_shutdown_done(void *arg)
{
	(void)arg;
	fz_done = 1;
}

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
	    .go_max_streams = 8,
	};
	struct grpc_server *srv;
	struct grpc_listener *l;
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

	fz_done = 0;
	fz_paused = NULL;
	if (grpc_server_new(&fz_loop, &opts, NULL, NULL, &srv) != 0)
		abort();
	(void)grpc_server_add_method(srv, FZ_PREFIX "NcgrpcInitialize", h_unary,
	                             NULL);
	(void)grpc_server_add_method(srv, FZ_PREFIX "NcgrpcCommandGet", h_echo,
	                             NULL);
	(void)grpc_server_add_method(srv, FZ_PREFIX "NcgrpcServerStatusGet",
	                             h_refuse, NULL);
	(void)grpc_server_add_method(srv, "/f/Cancel", h_cancel, NULL);

	/* As grpc_server_listen() does, without binding or listening. */
	if ((l = listener_new(srv, NULL)) == NULL)
		abort();
	uv_tcp_init(&fz_loop, &l->gl_h.tcp);
	l->gl_h.handle.data = l;
	srv->gs_listeners[srv->gs_nlisteners++] = l;
	on_new_connection(&l->gl_h.stream, 0);
	x = memxport_last();
	FUZZ_CHECK(x != NULL);
	turn_loop(); /* an accepted transport is ready from the loop */

	for (off = 0; off < size && memxport_last() == x; off += n) {
		n = size - off < chunk ? size - off : chunk;
		if (memxport_feed(x, data + off, n) != 0)
			break;
		turn_loop();
		/* A call paused by the echo method resumes a turn later. */
		if (fz_paused != NULL) {
			struct grpc_call *c = fz_paused;

			fz_paused = NULL;
			grpc_call_resume(c);
		}
	}
	if ((ctl & 3) != 1 && (ctl & 3) != 2 && memxport_last() == x)
		memxport_eof(x);
	turn_loop();
	grpc_server_shutdown(srv, 0, on_shutdown_done, NULL);
	if ((ctl & 3) == 2 && memxport_last() == x)
		memxport_eof(x);
	/* Everything must close now: a handle left open hangs here. */
	uv_run(&fz_loop, UV_RUN_DEFAULT);
	FUZZ_CHECK(fz_done);
	FUZZ_CHECK(memxport_live() == 0);
	return 0;
}
