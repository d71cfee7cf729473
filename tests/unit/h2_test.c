/*
 * h2.c over the memory transport (tests/fuzz/memxport.c): no socket.  The
 * other end is a plain nghttp2 session of the test's own, "the peer": what
 * h2.c writes goes straight into the peer's nghttp2_session_mem_recv(), and
 * what the peer queues is fed to h2.c by pump(), from the test, as one
 * socket read would deliver it.  Raw bytes (garbage, truncated or oversized
 * frames) are fed with memxport_feed() directly.
 *
 * Every test runs under a watchdog, closes every handle and asserts
 * uv_loop_close() == 0, that no transport is left, and that no callback of
 * h2.c ever ran inside an h2_* call made by the test (libuv's rule).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "testutil.h"

#include "common/err.h"
#include "common/h2.h"
#include "common/xport.h"
#include "memxport.h"

#define WATCHDOG_MS 10000
#define MAXST       4
#define TICK_MS     2

/*
 * calloc() of the program's own code goes through here
 * (-Wl,--wrap=calloc, tests/CMakeLists.txt): when fail_calloc_in is n > 0,
 * the n-th calloc() from now fails.  nghttp2 allocates in its shared
 * library, which the wrap does not reach.
 */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
static unsigned fail_calloc_in;
static unsigned calloc_failed;

void *
__wrap_calloc(size_t n, size_t size)
{
	if (fail_calloc_in > 0 && --fail_calloc_in == 0) {
		calloc_failed++;
		return NULL;
	}
	return __real_calloc(n, size);
}

struct tstream {
	struct env *t_env;
	int32_t t_id;
	int t_headers;     /* header fields seen */
	int t_headers_end; /* header blocks ended */
	size_t t_data;     /* DATA bytes received */
	int t_data_end;
	int t_closed;
	uint32_t t_close_code;
	int t_bad_byte; /* DATA differed from the pattern */
};

struct env {
	struct tloop e_tl;
	uv_pipe_t e_listener; /* the "listening socket" of xport_accept() */
	int e_server;
	size_t e_live; /* memxport_live() before: a failed test leaks some */

	/* h2.c's side */
	struct h2conn *e_c;
	struct xport *e_x;
	int e_in_call;   /* inside an h2_* call of the test */
	int e_reentered; /* callbacks that ran inside one */
	int e_ready;
	int e_closed;
	int e_closed_err;
	char e_closed_reason[160];
	int e_goaways;
	uint32_t e_goaway_code;
	int e_flushed;
	int e_deferred;
	int e_defer_ping;   /* on_deferred submits a PING and flushes */
	int e_refuse;       /* on_stream_open refuses */
	int e_auto_consume; /* on_data consumes at once */
	struct tstream e_st[MAXST];
	int e_nst;

	/* the peer */
	nghttp2_session *e_peer;
	int e_mute;          /* pump() sends nothing */
	size_t e_wrote;      /* bytes h2.c wrote */
	int e_peer_bad;      /* the peer could not parse them */
	int e_peer_settings; /* SETTINGS (not ACK) */
	int e_peer_settings_ack;
	int e_peer_pings;
	int e_peer_ping_acks;
	int e_peer_goaways;
	uint32_t e_peer_goaway_code;
	int32_t e_peer_goaway_last;
	int e_peer_window_updates;
	int e_peer_rsts;
	uint32_t e_peer_rst_code;
	int e_peer_stream_closes;
	const uint8_t *e_body; /* what the peer's DATA provider sends */
	size_t e_bodylen;
	size_t e_bodyoff;
	size_t e_peer_data;  /* DATA bytes the peer received */
	int e_peer_data_bad; /* ... that differed from the pattern */

	/* h2.c's response body, sent without a copy (on_send_data) */
	size_t e_out_len;
	size_t e_out_off;  /* handed to nghttp2 by out_body() */
	size_t e_out_sent; /* written by on_send_data() */
	int e_out_frames;  /* on_send_data() calls */
	size_t e_out_maxq; /* most bytes the transport held after one */
};

/* Marks an h2_* call of the test: no callback may run inside it. */
#define CALL(e, stmt)                                                          \
	do {                                                                   \
		(e)->e_in_call = 1;                                            \
		stmt;                                                          \
		(e)->e_in_call = 0;                                            \
	} while (0)

static uint8_t
pattern(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

static void
check_outside(struct env *e)
{
	if (e->e_in_call)
		e->e_reentered++;
}

/* The stream layer, as grpc_*.c would be. */

static void
on_ready(struct h2conn *c, void *arg)
{
	struct env *e = arg;

	(void)c;
	check_outside(e);
	e->e_ready++;
}

static void *
on_stream_open(struct h2conn *c, int32_t id, void *arg)
{
	struct env *e = arg;
	struct tstream *st;

	(void)c;
	check_outside(e);
	if (e->e_refuse || e->e_nst == MAXST)
		return NULL;
	st = &e->e_st[e->e_nst++];
	memset(st, 0, sizeof(*st));
	st->t_env = e;
	st->t_id = id;
	return st;
}

static int
on_header(struct h2conn *c, void *stp, const nghttp2_nv *nv)
{
	struct tstream *st = stp;

	(void)c;
	(void)nv;
	check_outside(st->t_env);
	st->t_headers++;
	return 0;
}

static void
on_headers_end(struct h2conn *c, void *stp, int end_stream)
{
	struct tstream *st = stp;

	(void)c;
	check_outside(st->t_env);
	st->t_headers_end++;
	if (end_stream)
		st->t_data_end++;
}

static void
on_data(struct h2conn *c, void *stp, const uint8_t *data, size_t len)
{
	struct tstream *st = stp;
	size_t i;

	check_outside(st->t_env);
	for (i = 0; i < len; i++)
		if (data[i] != pattern(st->t_data + i))
			st->t_bad_byte++;
	st->t_data += len;
	if (st->t_env->e_auto_consume)
		h2_consume(c, st->t_id, len);
}

static void
on_data_end(struct h2conn *c, void *stp)
{
	struct tstream *st = stp;

	(void)c;
	check_outside(st->t_env);
	st->t_data_end++;
}

static void
on_stream_close(struct h2conn *c, void *stp, uint32_t code)
{
	struct tstream *st = stp;

	(void)c;
	check_outside(st->t_env);
	st->t_closed++;
	st->t_close_code = code;
}

static void
on_flushed(struct h2conn *c, void *arg)
{
	struct env *e = arg;

	(void)c;
	check_outside(e);
	e->e_flushed++;
}

static void
on_deferred(struct h2conn *c, void *arg)
{
	struct env *e = arg;

	check_outside(e);
	e->e_deferred++;
	if (e->e_defer_ping) {
		assert_int_equal(
		    nghttp2_submit_ping(h2_session(c), NGHTTP2_FLAG_NONE, NULL),
		    0);
		h2_flush(c);
	}
}

static void
on_goaway(struct h2conn *c, uint32_t code, const uint8_t *debug,
          size_t debuglen, void *arg)
{
	struct env *e = arg;

	(void)c;
	(void)debug;
	(void)debuglen;
	check_outside(e);
	e->e_goaways++;
	e->e_goaway_code = code;
}

static void
on_closed(struct h2conn *c, int err, const char *reason, void *arg)
{
	struct env *e = arg;

	assert_ptr_equal(c, e->e_c);
	check_outside(e);
	e->e_closed++;
	e->e_closed_err = err;
	snprintf(e->e_closed_reason, sizeof(e->e_closed_reason), "%s", reason);
	/* Both are freed when this returns. */
	e->e_c = NULL;
	e->e_x = NULL;
}

/* Writes the payload out_body() left in place: the pattern from there. */
static int
on_send_data(struct h2conn *c, void *source, size_t len)
{
	struct env *e = source;
	uint8_t chunk[1024];
	size_t i, n, q;

	check_outside(e);
	e->e_out_frames++;
	while (len > 0) {
		n = len < sizeof(chunk) ? len : sizeof(chunk);
		for (i = 0; i < n; i++)
			chunk[i] = pattern(e->e_out_sent + i);
		if (h2_write(c, chunk, n) != 0)
			return -1;
		e->e_out_sent += n;
		len -= n;
	}
	q = xport_queued(e->e_x);
	if (q > e->e_out_maxq)
		e->e_out_maxq = q;
	return 0;
}

static const struct h2_stream_ops test_ops = {
    .on_send_data = on_send_data,
    .on_ready = on_ready,
    .on_stream_open = on_stream_open,
    .on_header = on_header,
    .on_headers_end = on_headers_end,
    .on_data = on_data,
    .on_data_end = on_data_end,
    .on_stream_close = on_stream_close,
    .on_flushed = on_flushed,
    .on_deferred = on_deferred,
    .on_goaway = on_goaway,
    .on_closed = on_closed,
};

/* The peer: records what h2.c sent it. */

static int
peer_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct env *e = ud;

	(void)s;
	switch (f->hd.type) {
	case NGHTTP2_SETTINGS:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			e->e_peer_settings_ack++;
		else
			e->e_peer_settings++;
		break;
	case NGHTTP2_PING:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			e->e_peer_ping_acks++;
		else
			e->e_peer_pings++;
		break;
	case NGHTTP2_GOAWAY:
		e->e_peer_goaways++;
		e->e_peer_goaway_code = f->goaway.error_code;
		e->e_peer_goaway_last = f->goaway.last_stream_id;
		break;
	case NGHTTP2_WINDOW_UPDATE:
		e->e_peer_window_updates++;
		break;
	case NGHTTP2_RST_STREAM:
		e->e_peer_rsts++;
		e->e_peer_rst_code = f->rst_stream.error_code;
		break;
	default:
		break;
	}
	return 0;
}

static int
peer_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
          size_t len, void *ud)
{
	struct env *e = ud;
	size_t i;

	(void)s;
	(void)flags;
	(void)id;
	for (i = 0; i < len; i++)
		if (data[i] != pattern(e->e_peer_data + i))
			e->e_peer_data_bad++;
	e->e_peer_data += len;
	return 0;
}

static int
peer_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
	struct env *e = ud;

	(void)s;
	(void)id;
	(void)code;
	e->e_peer_stream_closes++;
	return 0;
}

static ssize_t
peer_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
          uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct env *e = ud;
	size_t i, n = e->e_bodylen - e->e_bodyoff;

	(void)s;
	(void)id;
	(void)src;
	if (n > len)
		n = len;
	for (i = 0; i < n; i++)
		buf[i] = pattern(e->e_bodyoff + i);
	e->e_bodyoff += n;
	if (e->e_bodyoff == e->e_bodylen)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* What h2.c writes reaches the peer at once, as over a socket pair. */
static void
sink(const uint8_t *data, size_t len, void *arg)
{
	struct env *e = arg;

	e->e_wrote += len;
	if (nghttp2_session_mem_recv(e->e_peer, data, len) < 0)
		e->e_peer_bad++;
}

/* Feeds what the peer queued to h2.c, as one read each. */
static void
pump(struct env *e)
{
	const uint8_t *data;
	ssize_t n;

	/* Until the transport is ready, what the peer sends would be lost. */
	if (e->e_mute || e->e_x == NULL || !e->e_ready)
		return;
	while (e->e_x != NULL &&
	       (n = nghttp2_session_mem_send(e->e_peer, &data)) > 0)
		(void)memxport_feed(e->e_x, data, (size_t)n);
}

/* RUN_UNTIL pumps before each turn of the loop (testutil.h). */
static void
pump_cb(void *arg)
{
	pump(arg);
}

static void
feed(struct env *e, const void *data, size_t len)
{
	assert_non_null(e->e_x);
	assert_int_equal(memxport_feed(e->e_x, data, len), 0);
}

static void
on_flag(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

/*
 * Sets up h2.c (a server when server is set) over a memory transport, and a
 * peer of the other role that already queued its preface and SETTINGS.
 * With no_ping_ack the peer never answers PINGs.
 */
static void
env_init(struct env *e, int server, const struct h2_opts *o, int no_ping_ack)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *nopt;
	nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
	                             123456};
	struct h2_opts opts = {0};
	int rc;

	memset(e, 0, sizeof(*e));
	e->e_server = server;
	e->e_live = memxport_live();
	tloop_init(&e->e_tl, WATCHDOG_MS, TICK_MS);
	e->e_tl.tl_pump = pump_cb;
	e->e_tl.tl_pump_arg = e;

	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
	                                                     peer_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(
	    cbs, peer_stream_close);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
	                                                          peer_data);
	assert_int_equal(nghttp2_option_new(&nopt), 0);
	nghttp2_option_set_no_auto_ping_ack(nopt, no_ping_ack);
	if (server)
		rc = nghttp2_session_client_new2(&e->e_peer, cbs, e, nopt);
	else
		rc = nghttp2_session_server_new2(&e->e_peer, cbs, e, nopt);
	assert_int_equal(rc, 0);
	nghttp2_option_del(nopt);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(
	    nghttp2_submit_settings(e->e_peer, NGHTTP2_FLAG_NONE, &iv, 1), 0);

	if (o != NULL)
		opts = *o;
	opts.ho_server = server;
	assert_int_equal(h2_new(&opts, &test_ops, e, &e->e_c), 0);
	if (server) {
		assert_int_equal(
		    uv_pipe_init(&e->e_tl.tl_loop, &e->e_listener, 0), 0);
		rc = xport_accept((uv_stream_t *)&e->e_listener, NULL, NULL,
		                  &h2_xport_cb, e->e_c, &e->e_x);
	} else {
		rc = xport_connect(&e->e_tl.tl_loop, "192.0.2.7", 50051, NULL,
		                   NULL, &h2_xport_cb, e->e_c, &e->e_x);
	}
	assert_int_equal(rc, 0);
	h2_attach(e->e_c, e->e_x);
	memxport_set_sink(e->e_x, sink, e);
}

/* Brings the connection up and lets both SETTINGS be acknowledged. */
static void
env_up(struct env *e)
{
	if (!e->e_server)
		memxport_ready(e->e_x);
	RUN_UNTIL(&e->e_tl, e->e_ready == 1);
	RUN_UNTIL(&e->e_tl,
	          e->e_peer_settings_ack == 1 &&
	              nghttp2_session_get_remote_settings(
	                  h2_session(e->e_c),
	                  NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE) == 123456);
}

/* Closes what is left, and checks that everything went away. */
static void
env_done(struct env *e)
{
	if (e->e_c != NULL) {
		h2_close(e->e_c, 0, NULL);
		RUN_UNTIL(&e->e_tl, e->e_closed == 1);
	}
	if (e->e_server)
		uv_close((uv_handle_t *)&e->e_listener, NULL);
	tloop_done(&e->e_tl);
	assert_int_equal(e->e_closed, 1);
	assert_int_equal(e->e_reentered, 0);
	assert_int_equal(e->e_peer_bad, 0);
	assert_int_equal(memxport_live(), e->e_live);
	nghttp2_session_del(e->e_peer);
}

/* The peer opens a request stream; with a body, it ends the stream too. */
static int32_t
peer_request(struct env *e, size_t bodylen, int end)
{
	static const nghttp2_nv nva[] = {
#define NV(n, v)                                                               \
	{(uint8_t *)(uintptr_t)n, (uint8_t *)(uintptr_t)v, sizeof(n) - 1,      \
	 sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}
	    NV(":method", "POST"),
	    NV(":scheme", "http"),
	    NV(":path", "/t.T/M"),
	    NV(":authority", "test"),
	    NV("content-type", "application/grpc"),
	};
	nghttp2_data_provider prd = {.read_callback = peer_body};
	int32_t id;

	e->e_bodylen = bodylen;
	e->e_bodyoff = 0;
	if (bodylen > 0)
		id =
		    nghttp2_submit_request(e->e_peer, NULL, nva, 5, &prd, NULL);
	else
		id = nghttp2_submit_headers(e->e_peer,
		                            end ? NGHTTP2_FLAG_END_STREAM
		                                : NGHTTP2_FLAG_NONE,
		                            -1, NULL, nva, 5, NULL);
	assert_true(id > 0);
	return id;
}

/*
 * A server that is up, with one request stream the peer opened (headers
 * only, the stream still open): returns its id.
 */
static int32_t
server_with_stream(struct env *e)
{
	int32_t id;

	env_init(e, 1, NULL, 0);
	env_up(e);
	id = peer_request(e, 0, 0);
	RUN_UNTIL(&e->e_tl, e->e_nst == 1 && e->e_st[0].t_headers_end == 1);
	return id;
}

/* Tests */

/* A server is ready from the loop, sends its SETTINGS, acks the peer's. */
static void
test_settings_server(void **state)
{
	struct h2_opts o = {.ho_max_streams = 7,
	                    .ho_stream_window = 70000,
	                    .ho_conn_window = 1 << 20};
	struct env e;

	(void)state;
	env_init(&e, 1, &o, 0);
	/* Nothing happens inside xport_accept() or h2_attach(). */
	assert_int_equal(e.e_ready, 0);
	assert_int_equal(e.e_wrote, 0);
	env_up(&e);
	assert_int_equal(e.e_ready, 1);
	assert_int_equal(e.e_peer_settings, 1);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
	                 7);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
	                 70000);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
	                 65536);
	/* The connection window was raised from 65535 by a WINDOW_UPDATE. */
	assert_int_equal(nghttp2_session_get_remote_window_size(e.e_peer),
	                 1 << 20);
	assert_false(h2_is_closing(e.e_c));
	env_done(&e);
}

/* A client sends the preface with push disabled; defaults apply. */
static void
test_settings_client(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, 0, NULL, 0);
	assert_int_equal(e.e_ready, 0);
	env_up(&e);
	assert_int_equal(e.e_peer_settings, 1);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_ENABLE_PUSH),
	                 0);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
	                 1024 * 1024);
	assert_int_equal(nghttp2_session_get_remote_window_size(e.e_peer),
	                 16 * 1024 * 1024);
	env_done(&e);
}

/*
 * h2_flush() and h2_defer() from outside a callback write and call nothing;
 * the loop's next turn sends everything queued in one pass, including what
 * on_deferred queued.
 */
static void
test_flush_batching(void **state)
{
	struct env e;
	size_t wrote;
	int flushed, deferred;

	(void)state;
	env_init(&e, 1, NULL, 0);
	env_up(&e);
	wrote = e.e_wrote;
	flushed = e.e_flushed;
	CALL(&e, {
		int i;

		for (i = 0; i < 3; i++) {
			assert_int_equal(nghttp2_submit_ping(h2_session(e.e_c),
			                                     NGHTTP2_FLAG_NONE,
			                                     NULL),
			                 0);
			h2_flush(e.e_c);
		}
	});
	assert_int_equal(e.e_wrote, wrote);
	assert_int_equal(e.e_flushed, flushed);
	assert_int_equal(e.e_peer_pings, 0);
	uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
	assert_int_equal(e.e_peer_pings, 3);
	assert_int_equal(e.e_wrote, wrote + 3 * 17);
	assert_true(e.e_flushed > flushed);

	/* A flush asked for inside on_deferred goes out in the same pass. */
	e.e_defer_ping = 1;
	deferred = e.e_deferred;
	CALL(&e, h2_defer(e.e_c));
	assert_int_equal(e.e_deferred, deferred);
	uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
	assert_int_equal(e.e_deferred, deferred + 1);
	assert_int_equal(e.e_peer_pings, 4);

	/* The peer's acks come back and are nghttp2's to handle. */
	RUN_UNTIL(&e.e_tl, nghttp2_session_want_write(e.e_peer) == 0);
	assert_int_equal(e.e_closed, 0);
	env_done(&e);
}

/*
 * nghttp2's frame buffer gives its pages back when the connection goes
 * quiet (within 100 ms the first time, then at most once a second), and
 * frames packed into the zeroed pages afterwards arrive intact.
 */
static void
test_framebuf_trim(void **state)
{
	struct env e;
	int round;

	(void)state;
	env_init(&e, 1, NULL, 0);
	env_up(&e);
	RUN_UNTIL(&e.e_tl, h2_framebuf_resident(e.e_c) == 0);
	for (round = 1; round <= 3; round++) {
		CALL(&e, {
			assert_int_equal(nghttp2_submit_ping(h2_session(e.e_c),
			                                     NGHTTP2_FLAG_NONE,
			                                     NULL),
			                 0);
			h2_flush(e.e_c);
		});
		/* The flush packs the PING into the buffer: a page is back. */
		uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
		assert_int_equal(e.e_peer_pings, round);
		assert_true(h2_framebuf_resident(e.e_c) > 0);
		/* Written and drained: quiet again, the pages go back. */
		RUN_UNTIL(&e.e_tl, h2_framebuf_resident(e.e_c) == 0);
	}
	assert_int_equal(e.e_peer_bad, 0);
	env_done(&e);
}

/*
 * Frame buffers of several connections go back together, on the timer of
 * the first: the second's pages go although its own loop never runs after
 * it went quiet.  A connection that closes leaves the batch before its
 * buffer is freed, without sending the others' early; the first one's
 * close sends the batch at once.
 */
static void
test_framebuf_giveback_batch(void **state)
{
	struct env e[4];
	int i;

	(void)state;
	assert_int_equal(h2_giveback_pending(), 0);
	for (i = 0; i < 2; i++) {
		env_init(&e[i], 1, NULL, 0);
		env_up(&e[i]);
		RUN_UNTIL(&e[i].e_tl, h2_giveback_pending() == (size_t)i + 1);
		assert_true(h2_framebuf_resident(e[i].e_c) > 0);
	}
	RUN_UNTIL(&e[0].e_tl, h2_giveback_pending() == 0);
	assert_int_equal(h2_framebuf_resident(e[0].e_c), 0);
	assert_int_equal(h2_framebuf_resident(e[1].e_c), 0);

	for (i = 2; i < 4; i++) {
		env_init(&e[i], 1, NULL, 0);
		env_up(&e[i]);
		RUN_UNTIL(&e[i].e_tl, h2_giveback_pending() == (size_t)i - 1);
	}
	env_done(&e[3]);
	assert_int_equal(h2_giveback_pending(), 1);
	assert_true(h2_framebuf_resident(e[2].e_c) > 0);
	env_done(&e[2]);
	assert_int_equal(h2_giveback_pending(), 0);
	env_done(&e[1]);
	env_done(&e[0]);
}

/*
 * The batch goes as soon as it is full, without waiting for its timer:
 * the 64th quiet connection sends all 64, although the loops of the 63
 * before it never run again.  And on a kernel without process_madvise() of
 * MADV_DONTNEED, each buffer of the batch goes with a madvise() of its
 * own, as pages that mincore() sees gone.
 */
static void
test_framebuf_giveback_full_and_single(void **state)
{
	enum { NBATCH = 64 };
	struct env *e;
	int i, single;

	(void)state;
	assert_non_null(e = calloc(NBATCH, sizeof(*e)));
	for (single = 0; single <= 1; single++) {
		h2_giveback_single(single);
		assert_int_equal(h2_giveback_pending(), 0);
		for (i = 0; i < NBATCH; i++) {
			env_init(&e[i], 1, NULL, 0);
			env_up(&e[i]);
			RUN_UNTIL(&e[i].e_tl, h2_giveback_pending() ==
			                          (size_t)(i + 1) % NBATCH);
		}
		/* The last may have written again since: its next quiet
		 * moment is another batch's. */
		for (i = 0; i < NBATCH - 1; i++)
			assert_int_equal(h2_framebuf_resident(e[i].e_c), 0);
		for (i = NBATCH - 1; i >= 0; i--)
			env_done(&e[i]);
	}
	h2_giveback_single(0);
	free(e);
}

/* h2.c's response body: every frame's payload left in place (NO_COPY). */
static ssize_t
out_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct env *e = src->ptr;
	size_t n = e->e_out_len - e->e_out_off;

	(void)s;
	(void)id;
	(void)buf;
	(void)ud;
	if (n > len)
		n = len;
	e->e_out_off += n;
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (e->e_out_off == e->e_out_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/*
 * DATA frames whose payload the stream writes itself (NO_COPY): the peer
 * gets every byte in order, and the transport never holds much more than
 * h2.c's high-water mark (256 KiB), although nghttp2 would send the whole
 * 4 MiB window in one nghttp2_session_mem_send() if nothing stopped it.
 */
static void
test_data_nocopy(void **state)
{
	static const nghttp2_nv resp[] = {
	    {(uint8_t *)(uintptr_t) ":status", (uint8_t *)(uintptr_t) "200", 7,
	     3, NGHTTP2_NV_FLAG_NONE},
	};
	const size_t body = 3 * 1024 * 1024, win = 4 * 1024 * 1024;
	nghttp2_data_provider prd;
	struct env e;
	int32_t id;

	(void)state;
	id = server_with_stream(&e);
	/* The peer opens its windows wide: only the mark can stop a flush. */
	assert_int_equal(nghttp2_session_set_local_window_size(
	                     e.e_peer, NGHTTP2_FLAG_NONE, 0, (int32_t)win),
	                 0);
	assert_int_equal(nghttp2_session_set_local_window_size(
	                     e.e_peer, NGHTTP2_FLAG_NONE, id, (int32_t)win),
	                 0);
	RUN_UNTIL(&e.e_tl, nghttp2_session_get_stream_remote_window_size(
	                       h2_session(e.e_c), id) > 1024 * 1024);
	e.e_out_len = body;
	prd.source.ptr = &e;
	prd.read_callback = out_body;
	assert_int_equal(
	    nghttp2_submit_response(h2_session(e.e_c), id, resp, 1, &prd), 0);
	CALL(&e, h2_flush(e.e_c));
	RUN_UNTIL(&e.e_tl,
	          e.e_peer_stream_closes == 0 && e.e_peer_data == body);
	assert_int_equal(e.e_peer_data_bad, 0);
	assert_int_equal(e.e_out_sent, body);
	/* 16 KiB frames, each written by on_send_data(). */
	assert_int_equal(e.e_out_frames, (int)(body / 16384));
	/* At most one frame past the mark. */
	assert_true(e.e_out_maxq <= 256 * 1024 + 16384 + 9);
	assert_true(e.e_out_maxq >= 256 * 1024);
	env_done(&e);
}

/*
 * h2_shutdown(): GOAWAY NO_ERROR naming the last stream, from the loop; the
 * stream in flight finishes, then the connection closes cleanly.
 */
static void
test_shutdown(void **state)
{
	static const nghttp2_nv resp[] = {
	    {(uint8_t *)(uintptr_t) ":status", (uint8_t *)(uintptr_t) "200", 7,
	     3, NGHTTP2_NV_FLAG_NONE},
	};
	struct env e;
	struct tstream *st;
	int32_t id;

	(void)state;
	id = server_with_stream(&e);
	st = &e.e_st[0];
	assert_int_equal(st->t_id, id);
	assert_int_equal(st->t_headers, 5);

	CALL(&e, h2_shutdown(e.e_c));
	assert_true(h2_is_closing(e.e_c));
	assert_int_equal(e.e_peer_goaways, 0);
	RUN_UNTIL(&e.e_tl, e.e_peer_goaways == 1);
	assert_int_equal(e.e_peer_goaway_code, NGHTTP2_NO_ERROR);
	assert_int_equal(e.e_peer_goaway_last, id);
	/* Again: no second GOAWAY. */
	CALL(&e, h2_shutdown(e.e_c));

	/* The stream still works both ways. */
	assert_int_equal(
	    nghttp2_submit_response(h2_session(e.e_c), id, resp, 1, NULL), 0);
	CALL(&e, h2_flush(e.e_c));
	assert_int_equal(nghttp2_submit_headers(e.e_peer,
	                                        NGHTTP2_FLAG_END_STREAM, id,
	                                        NULL, NULL, 0, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_int_equal(e.e_closed_err, 0);
	assert_int_equal(st->t_closed, 1);
	assert_int_equal(st->t_close_code, 0);
	assert_int_equal(e.e_peer_goaways, 1);
	assert_int_equal(e.e_peer_stream_closes, 1);
	env_done(&e);
}

/* h2_close() with and without an error: GOAWAY code, then on_closed. */
static void
close_with(int err, uint32_t want_code)
{
	struct env e;

	env_init(&e, 0, NULL, 0);
	env_up(&e);
	CALL(&e, {
		h2_close(e.e_c, err, "test says so");
		h2_close(e.e_c, NCG_EH2, "second close"); /* harmless */
	});
	assert_int_equal(e.e_closed, 0);
	assert_int_equal(e.e_peer_goaways, 0);
	assert_true(h2_is_closing(e.e_c));
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_int_equal(e.e_peer_goaways, 1);
	assert_int_equal(e.e_peer_goaway_code, want_code);
	assert_int_equal(e.e_closed_err, err);
	if (err != 0)
		assert_string_equal(e.e_closed_reason, "test says so");
	env_done(&e);
	assert_int_equal(e.e_closed, 1);
}

static void
test_close_error(void **state)
{
	(void)state;
	close_with(NCG_EH2, NGHTTP2_INTERNAL_ERROR);
}

static void
test_close_clean(void **state)
{
	(void)state;
	close_with(0, NGHTTP2_NO_ERROR);
}

/* Closing before the transport is ready sends nothing and frees all. */
static void
test_close_before_ready(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, 0, NULL, 0);
	CALL(&e, h2_close(e.e_c, NCG_ECANCELLED, "not wanted"));
	assert_int_equal(e.e_closed, 0);
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_int_equal(e.e_ready, 0);
	assert_int_equal(e.e_wrote, 0);
	assert_int_equal(e.e_closed_err, NCG_ECANCELLED);
	env_done(&e);
}

/* An unanswered keepalive PING closes the connection. */
static void
test_ping_timeout(void **state)
{
	struct h2_opts o = {.ho_ping_interval_ms = 20,
	                    .ho_ping_timeout_ms = 60};
	struct env e;
	uint64_t t0;

	(void)state;
	env_init(&e, 0, &o, 1);
	env_up(&e);
	t0 = uv_now(&e.e_tl.tl_loop);
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_true(uv_now(&e.e_tl.tl_loop) - t0 >= 75);
	assert_int_equal(e.e_peer_pings, 1);
	assert_int_equal(e.e_closed_err, NCG_EPING_TIMEOUT);
	assert_non_null(strstr(e.e_closed_reason, "keepalive ping"));
	env_done(&e);
}

/* Answered PINGs keep it open, and an interval of 0 stops them. */
static void
test_ping_acked(void **state)
{
	struct h2_opts o = {.ho_ping_interval_ms = 10,
	                    .ho_ping_timeout_ms = 1000};
	struct env e;
	int pings;

	(void)state;
	env_init(&e, 1, &o, 0);
	env_up(&e);
	assert_int_equal(h2_ping_interval(e.e_c), 10);
	RUN_UNTIL(&e.e_tl, h2_pings_acked(e.e_c) >= 3);
	assert_int_equal(e.e_closed, 0);
	CALL(&e, h2_set_ping_interval(e.e_c, 0));
	assert_int_equal(h2_ping_interval(e.e_c), 0);
	/* One may still be in flight; none goes out after its ack. */
	RUN_UNTIL(&e.e_tl, h2_pings_acked(e.e_c) == (unsigned)e.e_peer_pings);
	pings = e.e_peer_pings;
	{
		uv_timer_t t;
		int fired = 0;

		/* 50 ms of quiet: five intervals. */
		uv_timer_init(&e.e_tl.tl_loop, &t);
		t.data = &fired;
		uv_timer_start(&t, on_flag, 50, 0);
		RUN_UNTIL(&e.e_tl, fired);
		uv_close((uv_handle_t *)&t, NULL);
	}
	assert_int_equal(e.e_peer_pings, pings);
	env_done(&e);
}

/*
 * Not HTTP/2 at all: the connection closes once, with an error.  (nghttp2
 * stops at the bad client magic without a GOAWAY.)
 */
static void
test_garbage_http1(void **state)
{
	static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct env e;

	(void)state;
	env_init(&e, 1, NULL, 0);
	e.e_mute = 1;
	RUN_UNTIL(&e.e_tl, e.e_ready == 1);
	feed(&e, http1, sizeof(http1) - 1);
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_int_equal(e.e_closed_err, NCG_EH2);
	assert_non_null(strstr(e.e_closed_reason, "192.0.2.1:40000"));
	env_done(&e);
}

/* A frame that is no valid frame, after a good preface. */
static void
garbage_frame(const uint8_t *frame, size_t len, uint32_t want_code)
{
	struct env e;

	env_init(&e, 1, NULL, 0);
	env_up(&e);
	feed(&e, frame, len);
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_int_equal(e.e_peer_goaways, 1);
	assert_int_equal(e.e_peer_goaway_code, want_code);
	/* The peer broke the protocol: that is no orderly close. */
	assert_int_equal(e.e_closed_err, NCG_EH2);
	assert_non_null(strstr(e.e_closed_reason, "http/2 error from"));
	env_done(&e);
}

static void
test_garbage_settings(void **state)
{
	/* SETTINGS whose length is no multiple of 6. */
	static const uint8_t f[] = {0, 0, 3, 4, 0, 0, 0, 0, 0, 1, 2, 3};

	(void)state;
	garbage_frame(f, sizeof(f), NGHTTP2_FRAME_SIZE_ERROR);
}

static void
test_garbage_data_on_stream0(void **state)
{
	static const uint8_t f[] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 'h', 'i'};

	(void)state;
	garbage_frame(f, sizeof(f), NGHTTP2_PROTOCOL_ERROR);
}

/* A frame longer than SETTINGS_MAX_FRAME_SIZE (16384, the default). */
static void
test_oversized_frame(void **state)
{
	static uint8_t f[9 + 16385];

	(void)state;
	memset(f, 0, sizeof(f));
	f[0] = 0x00;
	f[1] = 0x40;
	f[2] = 0x01; /* 16385 */
	f[3] = 0x00; /* DATA */
	f[8] = 1;    /* stream 1 */
	garbage_frame(f, sizeof(f), NGHTTP2_FRAME_SIZE_ERROR);
}

/* A frame cut into single bytes is put together again. */
static void
test_split_frame(void **state)
{
	static const uint8_t ping[] = {0, 0, 8, 6, 0, 0, 0, 0, 0,
	                               1, 2, 3, 4, 5, 6, 7, 8};
	struct env e;
	size_t i;

	(void)state;
	env_init(&e, 1, NULL, 0);
	env_up(&e);
	for (i = 0; i < sizeof(ping); i++) {
		assert_int_equal(e.e_peer_ping_acks, 0);
		feed(&e, ping + i, 1);
		uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
	}
	assert_int_equal(e.e_peer_ping_acks, 1);
	env_done(&e);
}

/*
 * A frame cut short by EOF: on_closed once, with the transport's reason;
 * the open stream ends with the connection, not with on_stream_close.
 */
static void
test_truncated_frame_eof(void **state)
{
	static const uint8_t ping[] = {0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3};
	struct env e;

	(void)state;
	env_init(&e, 1, NULL, 0);
	env_up(&e);
	peer_request(&e, 0, 0);
	RUN_UNTIL(&e.e_tl, e.e_nst == 1);
	feed(&e, ping, sizeof(ping));
	memxport_eof(e.e_x);
	RUN_UNTIL(&e.e_tl, e.e_closed == 1);
	assert_int_equal(e.e_closed_err, NCG_ECLOSED);
	assert_non_null(strstr(e.e_closed_reason, "closed the connection"));
	assert_int_equal(e.e_peer_ping_acks, 0);
	assert_int_equal(e.e_st[0].t_closed, 0);
	env_done(&e);
}

/*
 * Flow control: DATA stops at the stream window until the stream layer
 * consumes, and h2_consume() sends WINDOW_UPDATE from the loop only.
 */
static void
test_flow_control(void **state)
{
	struct h2_opts o = {.ho_stream_window = 16384};
	struct env e;
	struct tstream *st;
	int32_t id;
	int i, wu;

	(void)state;
	env_init(&e, 1, &o, 0);
	env_up(&e);
	id = peer_request(&e, 40000, 1);
	RUN_UNTIL(&e.e_tl, e.e_nst == 1 && e.e_st[0].t_data == 16384);
	st = &e.e_st[0];
	for (i = 0; i < 5; i++) {
		pump(&e);
		uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
	}
	assert_int_equal(st->t_data, 16384);
	assert_int_equal(
	    nghttp2_session_get_stream_remote_window_size(e.e_peer, id), 0);

	wu = e.e_peer_window_updates;
	CALL(&e, h2_consume(e.e_c, id, 16384));
	assert_int_equal(e.e_peer_window_updates, wu);
	uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
	assert_true(e.e_peer_window_updates > wu);
	assert_true(
	    nghttp2_session_get_stream_remote_window_size(e.e_peer, id) > 0);

	/* The rest flows as fast as it is consumed. */
	e.e_auto_consume = 1;
	RUN_UNTIL(&e.e_tl, st->t_data_end == 1);
	assert_int_equal(st->t_data, 40000);
	assert_int_equal(st->t_bad_byte, 0);
	env_done(&e);
}

/* A stream the layer above refuses is reset with REFUSED_STREAM. */
static void
test_refused_stream(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, 1, NULL, 0);
	env_up(&e);
	e.e_refuse = 1;
	peer_request(&e, 1000, 1);
	RUN_UNTIL(&e.e_tl, e.e_peer_rsts == 1);
	assert_int_equal(e.e_peer_rst_code, NGHTTP2_REFUSED_STREAM);
	assert_int_equal(e.e_nst, 0);
	/* Its DATA was given back: the connection window is whole again. */
	RUN_UNTIL(&e.e_tl, e.e_peer_stream_closes == 1 &&
	                       nghttp2_session_get_remote_window_size(
	                           e.e_peer) == 16 * 1024 * 1024);
	assert_int_equal(e.e_closed, 0);
	env_done(&e);
}

/* h2_set_max_streams() announces the new limit from the loop. */
static void
test_set_max_streams(void **state)
{
	struct env e;
	int settings;

	(void)state;
	env_init(&e, 1, NULL, 0);
	env_up(&e);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
	                 100);
	settings = e.e_peer_settings;
	CALL(&e, h2_set_max_streams(e.e_c, 3));
	assert_int_equal(e.e_peer_settings, settings);
	RUN_UNTIL(&e.e_tl, e.e_peer_settings == settings + 1);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
	                 3);
	/* 0 means the default again. */
	CALL(&e, h2_set_max_streams(e.e_c, 0));
	RUN_UNTIL(&e.e_tl, e.e_peer_settings == settings + 2);
	assert_int_equal(nghttp2_session_get_remote_settings(
	                     e.e_peer, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
	                 100);
	env_done(&e);
}

/* GOAWAY from the peer: on_goaway, then h2_is_closing(). */
static void
test_goaway_received(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, 0, NULL, 0);
	env_up(&e);
	assert_int_equal(nghttp2_submit_goaway(e.e_peer, NGHTTP2_FLAG_NONE, 0,
	                                       NGHTTP2_ENHANCE_YOUR_CALM,
	                                       (const uint8_t *)"calm", 4),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_goaways == 1);
	assert_int_equal(e.e_goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
	assert_true(h2_is_closing(e.e_c));
	env_done(&e);
}

/*
 * Allocation failure: h2_new() fails cleanly and leaves *out alone, and a
 * transport that cannot be made is undone with h2_discard() (the path of
 * grpc_server.c).  ASan's leak check proves nothing is left.
 */
static void
test_alloc_failure(void **state)
{
	const struct h2_opts o = {.ho_server = 1};
	struct env e = {0};
	static char mark;
	struct h2conn *c, *sentinel = (struct h2conn *)(void *)&mark;
	struct xport *x;
	uv_loop_t loop;
	uv_pipe_t lis;
	unsigned i;
	int rc;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	uv_pipe_init(&loop, &lis, 0);
	for (i = 1;; i++) {
		c = sentinel;
		x = NULL;
		calloc_failed = 0;
		fail_calloc_in = i;
		rc = h2_new(&o, &test_ops, &e, &c);
		if (rc != 0) {
			assert_int_equal(rc, -ENOMEM);
			assert_ptr_equal(c, sentinel);
			assert_int_equal(calloc_failed, 1);
			continue;
		}
		rc = xport_accept((uv_stream_t *)&lis, NULL, NULL, &h2_xport_cb,
		                  c, &x);
		fail_calloc_in = 0;
		if (rc != 0) {
			assert_int_equal(rc, -ENOMEM);
			assert_null(x);
			h2_discard(c);
			continue;
		}
		/* Nothing failed: i went past the last allocation. */
		assert_int_equal(calloc_failed, 0);
		h2_attach(c, x);
		e.e_c = c;
		h2_close(c, 0, NULL);
		break;
	}
	assert_true(i >= 3);
	assert_int_equal(e.e_ready, 0);
	assert_int_equal(e.e_closed, 0);
	uv_close((uv_handle_t *)&lis, NULL);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(e.e_ready, 0);
	assert_int_equal(e.e_closed, 1);
	assert_int_equal(memxport_live(), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* An argument runs only the tests whose names match it (cmocka's glob). */
int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_settings_server),
	    cmocka_unit_test(test_settings_client),
	    cmocka_unit_test(test_flush_batching),
	    cmocka_unit_test(test_framebuf_trim),
	    cmocka_unit_test(test_framebuf_giveback_batch),
	    cmocka_unit_test(test_framebuf_giveback_full_and_single),
	    cmocka_unit_test(test_data_nocopy),
	    cmocka_unit_test(test_shutdown),
	    cmocka_unit_test(test_close_error),
	    cmocka_unit_test(test_close_clean),
	    cmocka_unit_test(test_close_before_ready),
	    cmocka_unit_test(test_ping_timeout),
	    cmocka_unit_test(test_ping_acked),
	    cmocka_unit_test(test_garbage_http1),
	    cmocka_unit_test(test_garbage_settings),
	    cmocka_unit_test(test_garbage_data_on_stream0),
	    cmocka_unit_test(test_oversized_frame),
	    cmocka_unit_test(test_split_frame),
	    cmocka_unit_test(test_truncated_frame_eof),
	    cmocka_unit_test(test_flow_control),
	    cmocka_unit_test(test_refused_stream),
	    cmocka_unit_test(test_set_max_streams),
	    cmocka_unit_test(test_goaway_received),
	    cmocka_unit_test(test_alloc_failure),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
