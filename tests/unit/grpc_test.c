/*
 * grpc_*.c end to end: a grpc_server and a client connection in one uv loop,
 * talking h2c over a Unix socket in a temporary directory, with plain byte
 * payloads.  Each test runs its scenario under a watchdog timer, shuts the
 * server down, closes the client, and asserts uv_loop_close() == 0.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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

#define WATCHDOG_MS 10000

/*
 * realloc() of the whole program goes through here (-Wl,--wrap=realloc,
 * tests/CMakeLists.txt): a test can make every realloc() of at least
 * fail_realloc_from bytes fail.
 */
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static size_t fail_realloc_from;

void *
__wrap_realloc(void *p, size_t n)
{
	if (fail_realloc_from != 0 && n >= fail_realloc_from)
		return NULL;
	return __real_realloc(p, n);
}

#define M_UNARY  "/t.T/Unary"
#define M_ECHO   "/t.T/Echo"
#define M_FAIL   "/t.T/Fail"
#define M_HANG   "/t.T/Hang"
#define M_DROP   "/t.T/Drop"
#define M_STREAM "/t.T/Stream"
#define M_SLOW   "/t.T/Slow"
#define M_MANY   "/t.T/Many"
#define M_PAUSE  "/t.T/Pause"

#define SLOW_MS 200

/* Scenario 8: 64 MiB in 64 KiB messages. */
#define STREAM_MSG   (64 * 1024)
#define STREAM_N     1024
#define STREAM_PAUSE 300

/* Scenario 2: 1000 messages of 0 bytes to 200 KiB. */
#define BIDI_N   1000
#define BIDI_MAX (200 * 1024)

#define NCALLS 200

struct env {
	uv_loop_t e_loop;
	uv_timer_t e_watchdog;
	int e_timed_out;
	char e_dir[64];
	char e_path[128];
	int e_seq; /* orders events across callbacks */

	struct grpc_server *e_srv;
	int e_srv_shut;
	int e_srv_done;
	int e_srv_done_seq;
	int e_conn_open;
	int e_conn_closed;
	int e_conn_closed_err;
	char e_conn_peer[64];      /* grpc_conn_peer() in on_conn_open */
	int e_reject;              /* on_conn_open closes the connection */
	struct grpc_conn *e_sconn; /* the last server connection opened */
	int e_limits[GRPC_LIMIT_MESSAGE + 1]; /* on_limit, by limit */
	int e_trusted;                        /* on_conn_trusted */

	struct grpc_conn *e_cli;
	int e_cli_ready;
	int e_cli_closed;
	int e_cli_closed_err;
	int e_cli_closed_seq;
	int e_goaway;
	void (*e_ready_fn)(struct env *);
	void (*e_goaway_fn)(struct env *);
	void *e_scenario;

	/* Server side of the calls. */
	int e_s_handled;
	int e_s_maxactive; /* most server calls open at once */
	int e_s_halfclosed;
	uint64_t e_s_rx_inplace; /* the server connection's counts at the */
	uint64_t e_s_rx_copied;  /* echo's half-close */
	int e_s_ends;
	int e_in_api;    /* a test is inside a grpc_call_*() call now */
	int e_cb_in_api; /* callbacks that ran inside one: must stay 0 */
	int e_s_ok;
	int e_s_status;
	char e_s_msg[256];
	struct grpc_call *e_s_call; /* the last call, until its on_end */
	struct grpc_mdlist e_s_md;  /* request metadata of the last call */
	uint64_t e_s_timeout;

	/* Scenario 8, server side. */
	unsigned e_st_sent;
	int e_st_writable;
};

struct ccall {
	struct env *c_env;
	struct grpc_call *c_call;
	int c_ended;
	int c_end_seq;
	int c_status;
	char c_msg[256];
	int c_got_headers;
	struct grpc_mdlist c_hdrs;
	struct grpc_mdlist c_trailers;
	size_t c_nmsg;
	uint8_t c_data[4096]; /* small messages, concatenated */
	size_t c_len;
	uint64_t c_start;
	uint64_t c_end;
	int c_cancel_on_msg;
	int c_drop_on_msg;
	int c_ended_before_closed;
	/* Streaming scenarios. */
	unsigned c_sent;
	uint8_t *c_buf;
	uint8_t *c_expect;
	uint64_t c_bytes;
};

struct scall {
	struct env *s_env;
	struct grpc_call *s_call;
	uint8_t *s_req;
	size_t s_reqlen;
	int s_nmsg;
	uv_timer_t s_timer;
	int s_timer_used;
	int s_finished;
	uint8_t *s_buf;
};

static void
md_copy(struct grpc_mdlist *dst, const struct grpc_mdlist *src)
{
	size_t i;

	for (i = 0; i < src->ml_n; i++)
		assert_int_equal(grpc_md_add(dst, src->ml_md[i].md_key,
		                             src->ml_md[i].md_value,
		                             src->ml_md[i].md_len),
		                 0);
}

static void
assert_md(const struct grpc_mdlist *ml, const char *key, const void *value,
          size_t len)
{
	const struct grpc_md *md = grpc_md_get(ml, key);

	assert_non_null(md);
	assert_int_equal(md->md_len, len);
	assert_memory_equal(md->md_value, value, len);
}

static size_t
rss_bytes(void)
{
	unsigned long size, res;
	FILE *f;

	if ((f = fopen("/proc/self/statm", "r")) == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* The environment: loop, watchdog, server, client. */

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
on_watchdog(uv_timer_t *t)
{
	struct env *e = t->data;

	e->e_timed_out = 1;
}

static void
on_srv_done(void *arg)
{
	struct env *e = arg;

	e->e_srv_done = 1;
	e->e_srv_done_seq = ++e->e_seq;
	e->e_srv = NULL;
}

static void
srv_on_conn_open(struct grpc_conn *conn, void *arg)
{
	struct env *e = arg;

	snprintf(e->e_conn_peer, sizeof(e->e_conn_peer), "%s",
	         grpc_conn_peer(conn));
	e->e_conn_open++;
	e->e_sconn = conn;
	if (e->e_reject)
		grpc_conn_close(conn, -ECONNREFUSED);
}

static void
srv_on_conn_closed(struct grpc_conn *conn, int err, const char *reason,
                   void *arg)
{
	struct env *e = arg;

	(void)conn;
	assert_non_null(reason);
	e->e_conn_closed++;
	e->e_conn_closed_err = err;
}

static void
srv_on_conn_trusted(struct grpc_conn *conn, void *arg)
{
	struct env *e = arg;

	assert_ptr_equal(conn, e->e_sconn);
	e->e_trusted++;
}

static void
srv_on_limit(struct grpc_conn *conn, enum grpc_limit what, void *arg)
{
	struct env *e = arg;

	assert_non_null(conn);
	e->e_limits[what]++;
}

static const struct grpc_server_ops srv_ops = {
    .on_conn_open = srv_on_conn_open,
    .on_conn_trusted = srv_on_conn_trusted,
    .on_limit = srv_on_limit,
    .on_conn_closed = srv_on_conn_closed,
};

static void
cli_on_ready(struct grpc_conn *conn, void *arg)
{
	struct env *e = arg;

	assert_ptr_equal(conn, e->e_cli);
	e->e_cli_ready = 1;
	if (e->e_ready_fn != NULL)
		e->e_ready_fn(e);
}

static void
cli_on_goaway(struct grpc_conn *conn, uint32_t code, const char *debug,
              void *arg)
{
	struct env *e = arg;

	(void)conn;
	(void)code;
	assert_non_null(debug);
	e->e_goaway++;
	if (e->e_goaway_fn != NULL)
		e->e_goaway_fn(e);
}

static void
cli_on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct env *e = arg;

	assert_ptr_equal(conn, e->e_cli);
	assert_non_null(reason);
	e->e_cli_closed = 1;
	e->e_cli_closed_err = err;
	e->e_cli_closed_seq = ++e->e_seq;
}

static const struct grpc_conn_ops cli_ops = {
    .on_ready = cli_on_ready,
    .on_goaway = cli_on_goaway,
    .on_closed = cli_on_closed,
};

static void add_methods(struct env *);

static void
env_init(struct env *e, const struct grpc_opts *srv_opts)
{
	memset(e, 0, sizeof(*e));
	assert_int_equal(uv_loop_init(&e->e_loop), 0);
	assert_int_equal(uv_timer_init(&e->e_loop, &e->e_watchdog), 0);
	e->e_watchdog.data = e;
	assert_int_equal(
	    uv_timer_start(&e->e_watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
	snprintf(e->e_dir, sizeof(e->e_dir), "/tmp/grpc_test.XXXXXX");
	assert_non_null(mkdtemp(e->e_dir));
	snprintf(e->e_path, sizeof(e->e_path), "%s/s.sock", e->e_dir);
	assert_int_equal(
	    grpc_server_new(&e->e_loop, srv_opts, &srv_ops, e, &e->e_srv), 0);
	add_methods(e);
	assert_int_equal(grpc_server_listen_unix(e->e_srv, e->e_path, 0600), 0);
	assert_int_equal(access(e->e_path, F_OK), 0);
}

static void
env_connect(struct env *e, const struct grpc_opts *cli_opts)
{
	assert_int_equal(grpc_conn_connect_unix(&e->e_loop, e->e_path, cli_opts,
	                                        &cli_ops, e, &e->e_cli),
	                 0);
	RUN_UNTIL(e, e->e_cli_ready || e->e_cli_closed);
	assert_true(e->e_cli_ready);
	assert_false(e->e_cli_closed);
	assert_string_equal(grpc_conn_peer(e->e_cli), "unix");
	assert_ptr_equal(grpc_conn_arg(e->e_cli), e);
}

static void
env_shutdown(struct env *e, unsigned grace_ms)
{
	assert_false(e->e_srv_shut);
	e->e_srv_shut = 1;
	grpc_server_shutdown(e->e_srv, grace_ms, on_srv_done, e);
}

static void
env_done(struct env *e)
{
	if (e->e_cli != NULL && !e->e_cli_closed)
		grpc_conn_close(e->e_cli, 0);
	if (!e->e_srv_shut)
		env_shutdown(e, 100);
	RUN_UNTIL(e, e->e_srv_done && (e->e_cli == NULL || e->e_cli_closed));
	assert_int_equal(e->e_conn_open, e->e_conn_closed);
	uv_close((uv_handle_t *)&e->e_watchdog, NULL);
	assert_int_equal(uv_run(&e->e_loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&e->e_loop), 0);
	grpc_md_free(&e->e_s_md);
	if (unlink(e->e_path) != 0)
		assert_int_equal(errno, ENOENT);
	assert_int_equal(rmdir(e->e_dir), 0);
}

/* Client calls. */

static void
cc_on_headers(struct grpc_call *c, void *arg)
{
	struct ccall *cc = arg;

	assert_ptr_equal(c, cc->c_call);
	assert_false(cc->c_got_headers);
	cc->c_got_headers = 1;
	md_copy(&cc->c_hdrs, grpc_call_metadata(c));
}

static void
cc_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *cc = arg;

	assert_ptr_equal(c, cc->c_call);
	assert_false(cc->c_ended);
	assert_true(cc->c_len + len <= sizeof(cc->c_data));
	if (len > 0)
		memcpy(cc->c_data + cc->c_len, msg, len);
	cc->c_len += len;
	cc->c_nmsg++;
	if (cc->c_cancel_on_msg)
		grpc_call_cancel(c);
	else if (cc->c_drop_on_msg && cc->c_nmsg == 1)
		assert_int_equal(grpc_call_send(c, (const uint8_t *)"drop", 4),
		                 0);
}

static void
cc_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct ccall *cc = arg;

	assert_ptr_equal(c, cc->c_call);
	assert_false(cc->c_ended);
	assert_non_null(message);
	assert_true(strlen(message) < sizeof(cc->c_msg));
	cc->c_ended = 1;
	cc->c_end_seq = ++cc->c_env->e_seq;
	cc->c_status = status;
	snprintf(cc->c_msg, sizeof(cc->c_msg), "%s", message);
	md_copy(&cc->c_trailers, grpc_call_trailers(c));
	cc->c_end = uv_now(&cc->c_env->e_loop);
	cc->c_call = NULL;
}

static const struct grpc_call_ops cc_ops = {
    .on_headers = cc_on_headers,
    .on_message = cc_on_message,
    .on_end = cc_on_end,
};

static void
cc_init(struct ccall *cc, struct env *e)
{
	memset(cc, 0, sizeof(*cc));
	cc->c_env = e;
	cc->c_status = -1;
}

static void
cc_free(struct ccall *cc)
{
	grpc_md_free(&cc->c_hdrs);
	grpc_md_free(&cc->c_trailers);
	free(cc->c_buf);
	free(cc->c_expect);
	cc->c_buf = cc->c_expect = NULL;
}

static int
cc_start(struct ccall *cc, const char *path, const struct grpc_mdlist *md,
         uint64_t timeout_ms, const struct grpc_call_ops *ops)
{
	struct env *e = cc->c_env;

	cc->c_start = uv_now(&e->e_loop);
	return grpc_call_start(e->e_cli, path, md, timeout_ms, ops, cc,
	                       &cc->c_call);
}

/* Starts a call, sends msg (if not NULL) and closes the sending side. */
static void
cc_unary(struct ccall *cc, const char *path, const char *msg)
{
	assert_int_equal(cc_start(cc, path, NULL, 0, &cc_ops), 0);
	assert_non_null(cc->c_call);
	assert_string_equal(grpc_call_path(cc->c_call), path);
	assert_ptr_equal(grpc_call_conn(cc->c_call), cc->c_env->e_cli);
	if (msg != NULL)
		assert_int_equal(grpc_call_send(cc->c_call,
		                                (const uint8_t *)msg,
		                                strlen(msg)),
		                 0);
	assert_int_equal(grpc_call_close_send(cc->c_call), 0);
	assert_int_equal(grpc_call_close_send(cc->c_call), -EALREADY);
}

/* Server calls. */

static void
on_scall_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
sc_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct scall *s = arg;
	struct env *e = s->s_env;

	assert_ptr_equal(c, s->s_call);
	assert_non_null(message);
	if (e->e_in_api)
		e->e_cb_in_api++;
	e->e_s_ends++;
	if (status == GRPC_STATUS_OK)
		e->e_s_ok++;
	e->e_s_status = status;
	snprintf(e->e_s_msg, sizeof(e->e_s_msg), "%s", message);
	if (e->e_s_call == c)
		e->e_s_call = NULL;
	free(s->s_req);
	free(s->s_buf);
	if (s->s_timer_used) {
		uv_timer_stop(&s->s_timer);
		s->s_timer.data = s;
		uv_close((uv_handle_t *)&s->s_timer, on_scall_timer_closed);
	} else
		free(s);
}

static struct scall *
scall_new(struct grpc_call *c, struct env *e, const struct grpc_call_ops *ops)
{
	struct scall *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	s->s_env = e;
	s->s_call = c;
	grpc_call_set_ops(c, ops, s);
	e->e_s_handled++;
	if (e->e_s_handled - e->e_s_ends > e->e_s_maxactive)
		e->e_s_maxactive = e->e_s_handled - e->e_s_ends;
	e->e_s_call = c;
	e->e_s_timeout = grpc_call_timeout(c);
	grpc_md_free(&e->e_s_md);
	md_copy(&e->e_s_md, grpc_call_metadata(c));
	return s;
}

static void
sc_collect(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct scall *s = arg;
	uint8_t *p;

	assert_ptr_equal(c, s->s_call);
	p = realloc(s->s_req, s->s_reqlen + len + 1);
	assert_non_null(p);
	s->s_req = p;
	if (len > 0)
		memcpy(s->s_req + s->s_reqlen, msg, len);
	s->s_reqlen += len;
	s->s_nmsg++;
}

/*
 * Answers with the request in uppercase, status OK and trailer x-t: 1.
 * Callbacks never run inside the call that caused them, so the call
 * outlives grpc_call_finish() wherever it is called from: from one of its
 * own callbacks or from a timer (the slow method), where the finish may
 * end the stream at once.
 */
static void
sc_reply_upper(struct scall *s)
{
	struct grpc_call *c = s->s_call;
	struct grpc_mdlist tr = {0};
	size_t i;
	int rc;

	for (i = 0; i < s->s_reqlen; i++)
		if (s->s_req[i] >= 'a' && s->s_req[i] <= 'z')
			s->s_req[i] = (uint8_t)(s->s_req[i] - 'a' + 'A');
	assert_int_equal(
	    grpc_call_send(c, s->s_req != NULL ? s->s_req : (const uint8_t *)"",
	                   s->s_reqlen),
	    0);
	assert_int_equal(grpc_md_add(&tr, "x-t", "1", 1), 0);
	s->s_finished = 1;
	s->s_env->e_in_api++;
	rc = grpc_call_finish(c, GRPC_STATUS_OK, NULL, &tr);
	s->s_env->e_in_api--;
	grpc_md_free(&tr);
	assert_int_equal(rc, 0);
	assert_int_equal(grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL),
	                 -EALREADY);
	assert_int_equal(grpc_call_send(c, (const uint8_t *)"x", 1), -EPIPE);
}

static void
unary_on_half_close(struct grpc_call *c, void *arg)
{
	struct scall *s = arg;

	assert_ptr_equal(c, s->s_call);
	s->s_env->e_s_halfclosed++;
	assert_int_equal(s->s_nmsg, 1);
	sc_reply_upper(s);
}

static const struct grpc_call_ops unary_ops = {
    .on_message = sc_collect,
    .on_half_close = unary_on_half_close,
    .on_end = sc_on_end,
};

static void
unary_handler(struct grpc_call *c, void *arg)
{
	assert_string_equal(grpc_call_path(c), M_UNARY);
	scall_new(c, arg, &unary_ops);
}

/* Slow: answers SLOW_MS after the half-close. */
static void
slow_on_timer(uv_timer_t *t)
{
	struct scall *s = t->data;

	sc_reply_upper(s);
}

static void
slow_on_half_close(struct grpc_call *c, void *arg)
{
	struct scall *s = arg;

	(void)c;
	s->s_env->e_s_halfclosed++;
	assert_int_equal(uv_timer_init(&s->s_env->e_loop, &s->s_timer), 0);
	s->s_timer.data = s;
	s->s_timer_used = 1;
	assert_int_equal(uv_timer_start(&s->s_timer, slow_on_timer, SLOW_MS, 0),
	                 0);
}

static const struct grpc_call_ops slow_ops = {
    .on_message = sc_collect,
    .on_half_close = slow_on_half_close,
    .on_end = sc_on_end,
};

static void
slow_handler(struct grpc_call *c, void *arg)
{
	scall_new(c, arg, &slow_ops);
}

/* Echo: every message back, with backpressure; metadata back as headers. */
static void
echo_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct scall *s = arg;

	assert_ptr_equal(c, s->s_call);
	s->s_nmsg++;
	assert_int_equal(grpc_call_send(c, msg, len), 0);
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
	struct scall *s = arg;

	s->s_env->e_s_halfclosed++;
	grpc_conn_rx_counts(grpc_call_conn(c), &s->s_env->e_s_rx_inplace,
	                    &s->s_env->e_s_rx_copied);
	assert_int_equal(grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL), 0);
}

static const struct grpc_call_ops echo_ops = {
    .on_message = echo_on_message,
    .on_half_close = echo_on_half_close,
    .on_writable = echo_on_writable,
    .on_end = sc_on_end,
};

static void
echo_handler(struct grpc_call *c, void *arg)
{
	const struct grpc_mdlist *md = grpc_call_metadata(c);

	scall_new(c, arg, &echo_ops);
	if (md->ml_n > 0) {
		assert_int_equal(grpc_call_send_headers(c, md), 0);
		assert_int_equal(grpc_call_send_headers(c, md), -EALREADY);
	}
}

/* Fail: a non-OK status, trailers-only or after three messages. */
#define FAIL_MSG1 "caf\xc3\xa9 100% \xe2\x9c\x93 done"
#define FAIL_MSG2 "%41 is not A; na\xc3\xafve 50%%"

static const struct grpc_call_ops fail_ops = {
    .on_end = sc_on_end,
};

static void
fail_handler(struct grpc_call *c, void *arg)
{
	const struct grpc_md *mode =
	    grpc_md_get(grpc_call_metadata(c), "x-mode");
	struct grpc_mdlist tr = {0};
	char m[8];
	int i, rc;

	scall_new(c, arg, &fail_ops);
	assert_non_null(mode);
	if (strcmp((const char *)mode->md_value, "trailers-only") == 0) {
		assert_int_equal(grpc_md_add(&tr, "x-why", "early", 5), 0);
		rc = grpc_call_finish(c, GRPC_STATUS_FAILED_PRECONDITION,
		                      FAIL_MSG1, &tr);
		grpc_md_free(&tr);
		assert_int_equal(rc, 0);
		return;
	}
	for (i = 0; i < 3; i++) {
		snprintf(m, sizeof(m), "m%d", i);
		assert_int_equal(grpc_call_send(c, (const uint8_t *)m, 2), 0);
	}
	assert_int_equal(grpc_md_add(&tr, "x-why", "because", 7), 0);
	assert_int_equal(
	    grpc_call_finish(c, GRPC_STATUS_ABORTED, FAIL_MSG2, &tr), 0);
	grpc_md_free(&tr);
}

/* Hang: never answers. */
static const struct grpc_call_ops hang_ops = {
    .on_message = sc_collect,
    .on_end = sc_on_end,
};

static void
hang_handler(struct grpc_call *c, void *arg)
{
	scall_new(c, arg, &hang_ops);
}

/* Drop: sends "first"; on "drop" closes the whole connection. */
static void
drop_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	(void)arg;
	if (len == 4 && memcmp(msg, "drop", 4) == 0)
		grpc_conn_close(grpc_call_conn(c), -ECONNABORTED);
}

static const struct grpc_call_ops drop_ops = {
    .on_message = drop_on_message,
    .on_end = sc_on_end,
};

static void
drop_handler(struct grpc_call *c, void *arg)
{
	scall_new(c, arg, &drop_ops);
	assert_int_equal(grpc_call_send(c, (const uint8_t *)"first", 5), 0);
}

/* Stream: STREAM_N messages of STREAM_MSG bytes after the half-close. */
static void
stream_fill(uint8_t *p, unsigned i)
{
	memset(p, (int)(i & 0xff), STREAM_MSG);
	p[0] = (uint8_t)i;
	p[1] = (uint8_t)(i >> 8);
	p[2] = 0xa5;
	p[3] = 0x5a;
}

static void
stream_pump(struct scall *s)
{
	struct env *e = s->s_env;

	while (e->e_st_sent < STREAM_N &&
	       grpc_call_queued(s->s_call) < GRPC_CALL_HIWAT) {
		stream_fill(s->s_buf, e->e_st_sent);
		assert_int_equal(
		    grpc_call_send(s->s_call, s->s_buf, STREAM_MSG), 0);
		e->e_st_sent++;
	}
	if (e->e_st_sent == STREAM_N && !s->s_finished) {
		s->s_finished = 1;
		assert_int_equal(
		    grpc_call_finish(s->s_call, GRPC_STATUS_OK, NULL, NULL), 0);
	}
}

static void
stream_on_half_close(struct grpc_call *c, void *arg)
{
	struct scall *s = arg;

	(void)c;
	s->s_env->e_s_halfclosed++;
	stream_pump(s);
}

static void
stream_on_writable(struct grpc_call *c, void *arg)
{
	struct scall *s = arg;

	(void)c;
	s->s_env->e_st_writable++;
	stream_pump(s);
}

static const struct grpc_call_ops stream_ops = {
    .on_half_close = stream_on_half_close,
    .on_writable = stream_on_writable,
    .on_end = sc_on_end,
};

static void
stream_handler(struct grpc_call *c, void *arg)
{
	struct scall *s = scall_new(c, arg, &stream_ops);

	s->s_buf = malloc(STREAM_MSG);
	assert_non_null(s->s_buf);
}

/*
 * Many: finishes with more trailers than fit in one header block, which
 * must fail (before, those past 48 were dropped and finish said 0), then
 * with as many as fit.
 */
#define MANY_OK 40

static const struct grpc_call_ops many_ops = {
    .on_end = sc_on_end,
};

static void
many_handler(struct grpc_call *c, void *arg)
{
	struct grpc_mdlist md = {0};
	char key[16];
	int i;

	scall_new(c, arg, &many_ops);
	assert_int_equal(grpc_call_send(c, (const uint8_t *)"m", 1), 0);
	for (i = 0; i < 60; i++) {
		snprintf(key, sizeof(key), "x-k%02d", i);
		assert_int_equal(grpc_md_add(&md, key, "v", 1), 0);
	}
	assert_int_equal(grpc_call_finish(c, GRPC_STATUS_OK, NULL, &md),
	                 -E2BIG);
	md.ml_n = MANY_OK;
	assert_int_equal(grpc_call_finish(c, GRPC_STATUS_OK, "done", &md), 0);
	md.ml_n = 60;
	grpc_md_free(&md);
}

/*
 * Pause: pauses after the first message and resumes from a timer, then
 * answers in uppercase at the half-close.  Nothing may be delivered inside
 * grpc_call_resume() itself.
 */
static void
pause_on_timer(uv_timer_t *t)
{
	struct scall *s = t->data;

	s->s_env->e_in_api++;
	grpc_call_resume(s->s_call);
	s->s_env->e_in_api--;
}

static void
pause_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct scall *s = arg;

	if (s->s_env->e_in_api)
		s->s_env->e_cb_in_api++;
	sc_collect(c, msg, len, arg);
	if (s->s_nmsg != 1)
		return;
	grpc_call_pause(c);
	assert_int_equal(uv_timer_init(&s->s_env->e_loop, &s->s_timer), 0);
	s->s_timer.data = s;
	s->s_timer_used = 1;
	assert_int_equal(uv_timer_start(&s->s_timer, pause_on_timer, 20, 0), 0);
}

static void
pause_on_half_close(struct grpc_call *c, void *arg)
{
	struct scall *s = arg;

	(void)c;
	if (s->s_env->e_in_api)
		s->s_env->e_cb_in_api++;
	s->s_env->e_s_halfclosed++;
	sc_reply_upper(s);
}

static const struct grpc_call_ops pause_ops = {
    .on_message = pause_on_message,
    .on_half_close = pause_on_half_close,
    .on_end = sc_on_end,
};

static void
pause_handler(struct grpc_call *c, void *arg)
{
	scall_new(c, arg, &pause_ops);
}

static void
add_methods(struct env *e)
{
	struct grpc_server *srv = e->e_srv;

	assert_int_equal(grpc_server_add_method(srv, M_UNARY, unary_handler, e),
	                 0);
	assert_int_equal(grpc_server_add_method(srv, M_UNARY, unary_handler, e),
	                 -EEXIST);
	assert_int_equal(grpc_server_add_method(srv, M_ECHO, echo_handler, e),
	                 0);
	assert_int_equal(grpc_server_add_method(srv, M_FAIL, fail_handler, e),
	                 0);
	assert_int_equal(grpc_server_add_method(srv, M_HANG, hang_handler, e),
	                 0);
	assert_int_equal(grpc_server_add_method(srv, M_DROP, drop_handler, e),
	                 0);
	assert_int_equal(
	    grpc_server_add_method(srv, M_STREAM, stream_handler, e), 0);
	assert_int_equal(grpc_server_add_method(srv, M_SLOW, slow_handler, e),
	                 0);
	assert_int_equal(grpc_server_add_method(srv, M_MANY, many_handler, e),
	                 0);
	assert_int_equal(grpc_server_add_method(srv, M_PAUSE, pause_handler, e),
	                 0);
}

/* 1. Unary. */

static void
test_unary(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc_unary(&cc, M_UNARY, "hello, world");
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);

	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_string_equal(cc.c_msg, "");
	assert_int_equal(cc.c_nmsg, 1);
	assert_int_equal(cc.c_len, 12);
	assert_memory_equal(cc.c_data, "HELLO, WORLD", 12);
	assert_true(cc.c_got_headers);
	assert_int_equal(cc.c_trailers.ml_n, 1);
	assert_md(&cc.c_trailers, "x-t", "1", 1);
	assert_int_equal(e.e_s_handled, 1);
	assert_int_equal(e.e_s_halfclosed, 1);
	assert_int_equal(e.e_s_status, GRPC_STATUS_OK);
	assert_int_equal(e.e_s_timeout, 0);
	assert_int_equal(e.e_s_md.ml_n, 0);

	cc_free(&cc);
	env_done(&e);
	assert_int_equal(e.e_conn_open, 1);
}

/*
 * With grpc_call_deliver_all(), a paused client call keeps what it has not
 * delivered when its stream ends: the messages come on resume, then on_end
 * (ncgrpc-sshd pauses calls whose SSH client reads slowly, and lost the end
 * of long replies).  Without it, on_end comes at once, as before.
 */
static void
settle(struct env *e)
{
	int i;

	for (i = 0; i < 100; i++) {
		uv_run(&e->e_loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

static void
echo_paused(struct env *e, struct ccall *cc)
{
	assert_int_equal(cc_start(cc, M_ECHO, NULL, 0, &cc_ops), 0);
	grpc_call_deliver_all(cc->c_call);
	grpc_call_pause(cc->c_call);
	assert_int_equal(grpc_call_send(cc->c_call, (const uint8_t *)"one", 3),
	                 0);
	assert_int_equal(grpc_call_send(cc->c_call, (const uint8_t *)"two", 3),
	                 0);
	assert_int_equal(grpc_call_send(cc->c_call, (const uint8_t *)"", 0), 0);
	assert_int_equal(grpc_call_close_send(cc->c_call), 0);
	RUN_UNTIL(e, e->e_s_ends == 1);
	settle(e);
	/* The stream is over, but nothing was delivered, and no end. */
	assert_false(cc->c_ended);
	assert_int_equal(cc->c_nmsg, 0);
}

static void
test_paused_end(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	echo_paused(&e, &cc);
	grpc_call_resume(cc.c_call);
	assert_false(cc.c_ended); /* never inside the resume */
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_nmsg, 3);
	assert_int_equal(cc.c_len, 6);
	assert_memory_equal(cc.c_data, "onetwo", 6);
	cc_free(&cc);

	/* Cancelled instead: on_end from the loop, the messages dropped. */
	cc_init(&cc, &e);
	e.e_s_ends = 0;
	echo_paused(&e, &cc);
	grpc_call_cancel(cc.c_call);
	assert_false(cc.c_ended);
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_CANCELLED);
	assert_int_equal(cc.c_nmsg, 0);
	cc_free(&cc);

	/* Without deliver_all: ended at once, nothing delivered. */
	cc_init(&cc, &e);
	e.e_s_ends = 0;
	assert_int_equal(cc_start(&cc, M_ECHO, NULL, 0, &cc_ops), 0);
	grpc_call_pause(cc.c_call);
	assert_int_equal(grpc_call_send(cc.c_call, (const uint8_t *)"one", 3),
	                 0);
	assert_int_equal(grpc_call_close_send(cc.c_call), 0);
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_nmsg, 0);
	cc_free(&cc);
	env_done(&e);
}

/* 2. Bidi streaming with metadata. */

static size_t
bidi_size(unsigned i)
{
	if (i % 100 == 7)
		return BIDI_MAX;
	if (i % 100 == 51)
		return 16384 - 5; /* one grpc frame in one HTTP/2 frame */
	if (i % 100 == 52)
		return 16384;
	if (i % 10 == 0)
		return 0;
	return (size_t)((i * 2654435761u) % 16384);
}

static void
bidi_fill(uint8_t *p, unsigned i, size_t len)
{
	size_t j;

	for (j = 0; j < len; j++)
		p[j] = (uint8_t)(i * 131 + j * 7 + (j >> 8));
}

static void
bidi_pump(struct ccall *cc)
{
	size_t len;

	while (cc->c_sent < BIDI_N &&
	       grpc_call_queued(cc->c_call) < GRPC_CALL_HIWAT) {
		len = bidi_size(cc->c_sent);
		bidi_fill(cc->c_buf, cc->c_sent, len);
		assert_int_equal(grpc_call_send(cc->c_call, cc->c_buf, len), 0);
		cc->c_sent++;
	}
	/* END_STREAM goes after what is still queued. */
	if (cc->c_sent == BIDI_N)
		assert_int_equal(grpc_call_close_send(cc->c_call), 0);
}

static void
bidi_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *cc = arg;
	unsigned i = (unsigned)cc->c_nmsg;

	(void)c;
	assert_true(i < BIDI_N);
	assert_int_equal(len, bidi_size(i));
	bidi_fill(cc->c_expect, i, len);
	if (len > 0)
		assert_memory_equal(msg, cc->c_expect, len);
	cc->c_bytes += len;
	cc->c_nmsg++;
}

static void
bidi_on_writable(struct grpc_call *c, void *arg)
{
	struct ccall *cc = arg;

	(void)c;
	if (cc->c_sent < BIDI_N)
		bidi_pump(cc);
}

static const struct grpc_call_ops bidi_ops = {
    .on_headers = cc_on_headers,
    .on_message = bidi_on_message,
    .on_writable = bidi_on_writable,
    .on_end = cc_on_end,
};

static void
test_bidi(void **state)
{
	static const uint8_t bin[] = {0x00, 0xff};
	struct grpc_mdlist md = {0};
	struct env e;
	struct ccall cc;
	uint64_t total = 0;
	unsigned i;

	(void)state;
	for (i = 0; i < BIDI_N; i++)
		total += bidi_size(i);
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc.c_buf = malloc(BIDI_MAX);
	cc.c_expect = malloc(BIDI_MAX);
	assert_non_null(cc.c_buf);
	assert_non_null(cc.c_expect);
	assert_int_equal(grpc_md_add(&md, "x-a", "b", 1), 0);
	assert_int_equal(grpc_md_add(&md, "x-k-bin", bin, sizeof(bin)), 0);
	assert_int_equal(grpc_md_add(&md, "X-Upper", "v", 1), -EINVAL);
	assert_int_equal(grpc_md_add(&md, "x-ctl", "a\nb", 3), -EINVAL);
	assert_int_equal(cc_start(&cc, M_ECHO, &md, 0, &bidi_ops), 0);
	grpc_md_free(&md);
	bidi_pump(&cc);
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);

	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_string_equal(cc.c_msg, "");
	assert_int_equal(cc.c_sent, BIDI_N);
	assert_int_equal(cc.c_nmsg, BIDI_N);
	assert_int_equal(cc.c_bytes, total);
	/* The server saw the request metadata ... */
	assert_int_equal(e.e_s_md.ml_n, 2);
	assert_md(&e.e_s_md, "x-a", "b", 1);
	assert_md(&e.e_s_md, "x-k-bin", bin, sizeof(bin));
	/* ... and echoed it in the response headers. */
	assert_true(cc.c_got_headers);
	assert_int_equal(cc.c_hdrs.ml_n, 2);
	assert_md(&cc.c_hdrs, "x-a", "b", 1);
	assert_md(&cc.c_hdrs, "x-k-bin", bin, sizeof(bin));
	assert_int_equal(cc.c_trailers.ml_n, 0);
	assert_int_equal(e.e_s_status, GRPC_STATUS_OK);
	assert_int_equal(e.e_s_halfclosed, 1);

	cc_free(&cc);
	env_done(&e);
}

/*
 * Messages that fit a DATA frame (16,384 bytes with their prefix) arrive
 * whole in one and are taken without a copy: the sender cuts its frames
 * where messages end.  Without the cut, each small message before a big
 * one shifts every later frame, and all the big ones straddle two.
 */
#define WHOLE_N 40

static size_t
whole_size(unsigned i)
{
	return i % 2 == 0 ? 100 : 16384 - 5; /* the prefix: 5 bytes */
}

static void
whole_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *cc = arg;
	unsigned i = (unsigned)cc->c_nmsg;
	size_t j;

	(void)c;
	assert_true(i < WHOLE_N);
	assert_int_equal(len, whole_size(i));
	for (j = 0; j < len; j++)
		assert_int_equal(msg[j], (uint8_t)(i + j));
	cc->c_bytes += len;
	cc->c_nmsg++;
}

static const struct grpc_call_ops whole_ops = {
    .on_headers = cc_on_headers,
    .on_message = whole_on_message,
    .on_end = cc_on_end,
};

static void
test_frames_whole(void **state)
{
	static uint8_t buf[16384];
	struct env e;
	struct ccall cc;
	unsigned i;
	size_t j;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	assert_int_equal(cc_start(&cc, M_ECHO, NULL, 0, &whole_ops), 0);
	/* All queued before the first frame goes out. */
	for (i = 0; i < WHOLE_N; i++) {
		for (j = 0; j < whole_size(i); j++)
			buf[j] = (uint8_t)(i + j);
		assert_int_equal(grpc_call_send(cc.c_call, buf, whole_size(i)),
		                 0);
	}
	assert_int_equal(grpc_call_close_send(cc.c_call), 0);
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_nmsg, WHOLE_N);
	assert_int_equal(e.e_s_rx_inplace + e.e_s_rx_copied, WHOLE_N);
	print_message("frames: %llu of %d messages taken in place\n",
	              (unsigned long long)e.e_s_rx_inplace, WHOLE_N);
	/*
	 * A read of the socket (at most 64 KiB) may still cut a frame, whose
	 * message is then reassembled: a few (5 of 40 here), not all the big
	 * ones as without the cut (20 of 40).
	 */
	assert_true(e.e_s_rx_inplace >= WHOLE_N * 5 / 8);
	cc_free(&cc);
	env_done(&e);
}

/*
 * A send that cannot be queued (out of memory) queues nothing: before, the
 * 5-byte prefix went out without its message and the peer read the next
 * message as the rest of this one.
 */
static void
test_send_all_or_nothing(void **state)
{
	static uint8_t big[100 * 1024];
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	assert_int_equal(cc_start(&cc, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(cc.c_call, (const uint8_t *)"one", 3),
	                 0);
	fail_realloc_from = sizeof(big);
	assert_int_equal(grpc_call_send(cc.c_call, big, sizeof(big)), -ENOMEM);
	fail_realloc_from = 0;
	assert_int_equal(grpc_call_send(cc.c_call, (const uint8_t *)"two", 3),
	                 0);
	assert_int_equal(grpc_call_close_send(cc.c_call), 0);
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_nmsg, 2);
	assert_int_equal(cc.c_len, 6);
	assert_memory_equal(cc.c_data, "onetwo", 6);
	cc_free(&cc);
	env_done(&e);
}

/* Trailers that do not fit are refused, not dropped. */
static void
test_too_many_trailers(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc_unary(&cc, M_MANY, NULL);
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_string_equal(cc.c_msg, "done");
	assert_int_equal(cc.c_trailers.ml_n, MANY_OK);
	assert_md(&cc.c_trailers, "x-k39", "v", 1);
	cc_free(&cc);
	env_done(&e);
}

/* 3. Unknown method. */

static void
test_unimplemented(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc_unary(&cc, "/t.T/NoSuchMethod", "x");
	RUN_UNTIL(&e, cc.c_ended);

	assert_int_equal(cc.c_status, GRPC_STATUS_UNIMPLEMENTED);
	assert_non_null(strstr(cc.c_msg, "/t.T/NoSuchMethod"));
	assert_int_equal(cc.c_nmsg, 0);
	assert_int_equal(e.e_s_handled, 0);

	/* Bad paths never reach the wire. */
	assert_int_equal(grpc_call_start(e.e_cli, "noslash", NULL, 0, &cc_ops,
	                                 &cc, &cc.c_call),
	                 -EINVAL);

	cc_free(&cc);
	env_done(&e);
}

/* 4. Non-OK status with a message that needs percent-encoding. */

static void
test_status_message(void **state)
{
	struct grpc_mdlist md = {0};
	struct env e;
	struct ccall a, b;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);

	/* Trailers-only: the server answers before sending anything. */
	cc_init(&a, &e);
	assert_int_equal(grpc_md_add(&md, "x-mode", "trailers-only", 13), 0);
	assert_int_equal(cc_start(&a, M_FAIL, &md, 0, &cc_ops), 0);
	grpc_md_free(&md);
	assert_int_equal(grpc_call_close_send(a.c_call), 0);
	RUN_UNTIL(&e, a.c_ended && e.e_s_ends == 1);
	assert_int_equal(a.c_status, GRPC_STATUS_FAILED_PRECONDITION);
	assert_string_equal(a.c_msg, FAIL_MSG1);
	assert_int_equal(a.c_nmsg, 0);
	assert_false(a.c_got_headers);
	/* Its one HEADERS block is the trailers: so is its metadata. */
	assert_int_equal(a.c_trailers.ml_n, 1);
	assert_md(&a.c_trailers, "x-why", "early", 5);
	assert_int_equal(e.e_s_status, GRPC_STATUS_FAILED_PRECONDITION);
	assert_string_equal(e.e_s_msg, FAIL_MSG1);

	/* After messages, with the client still sending. */
	cc_init(&b, &e);
	assert_int_equal(grpc_md_add(&md, "x-mode", "after", 5), 0);
	assert_int_equal(cc_start(&b, M_FAIL, &md, 0, &cc_ops), 0);
	grpc_md_free(&md);
	RUN_UNTIL(&e, b.c_ended && e.e_s_ends == 2);
	assert_int_equal(b.c_status, GRPC_STATUS_ABORTED);
	assert_string_equal(b.c_msg, FAIL_MSG2);
	assert_int_equal(b.c_nmsg, 3);
	assert_int_equal(b.c_len, 6);
	assert_memory_equal(b.c_data, "m0m1m2", 6);
	assert_true(b.c_got_headers);
	assert_int_equal(b.c_trailers.ml_n, 1);
	assert_md(&b.c_trailers, "x-why", "because", 7);
	assert_int_equal(e.e_s_status, GRPC_STATUS_ABORTED);

	cc_free(&a);
	cc_free(&b);
	env_done(&e);
}

/* 5. Deadline. */

static void
test_deadline(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	assert_int_equal(cc_start(&cc, M_HANG, NULL, 100, &cc_ops), 0);
	assert_int_equal(grpc_call_send(cc.c_call, (const uint8_t *)"q", 1), 0);
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);

	assert_int_equal(cc.c_status, GRPC_STATUS_DEADLINE_EXCEEDED);
	assert_true(cc.c_msg[0] != '\0');
	assert_true(cc.c_end - cc.c_start >= 95);
	assert_true(cc.c_end - cc.c_start < 2000);
	assert_int_equal(e.e_s_handled, 1);
	assert_true(e.e_s_timeout > 0 && e.e_s_timeout <= 100);
	/* The handler learned that the call is over. */
	assert_int_not_equal(e.e_s_status, GRPC_STATUS_OK);

	cc_free(&cc);
	env_done(&e);
}

/* 6. Client cancel, from a timer and from inside on_message. */

static void
cancel_on_timer(uv_timer_t *t)
{
	struct ccall *cc = t->data;

	grpc_call_cancel(cc->c_call);
}

static void
test_cancel(void **state)
{
	struct env e;
	struct ccall a, b;
	uv_timer_t t;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);

	/* From a timer, while the server holds the call open. */
	cc_init(&a, &e);
	assert_int_equal(cc_start(&a, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(a.c_call, (const uint8_t *)"a", 1), 0);
	RUN_UNTIL(&e, a.c_nmsg == 1);
	assert_int_equal(e.e_s_handled, 1);
	assert_int_equal(uv_timer_init(&e.e_loop, &t), 0);
	t.data = &a;
	assert_int_equal(uv_timer_start(&t, cancel_on_timer, 20, 0), 0);
	RUN_UNTIL(&e, a.c_ended && e.e_s_ends == 1);
	uv_close((uv_handle_t *)&t, NULL);
	assert_int_equal(a.c_status, GRPC_STATUS_CANCELLED);
	assert_int_equal(e.e_s_status, GRPC_STATUS_CANCELLED);

	/* From inside on_message: nothing is delivered after it. */
	cc_init(&b, &e);
	b.c_cancel_on_msg = 1;
	assert_int_equal(cc_start(&b, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(b.c_call, (const uint8_t *)"1", 1), 0);
	assert_int_equal(grpc_call_send(b.c_call, (const uint8_t *)"2", 1), 0);
	assert_int_equal(grpc_call_send(b.c_call, (const uint8_t *)"3", 1), 0);
	RUN_UNTIL(&e, b.c_ended && e.e_s_ends == 2);
	assert_int_equal(b.c_status, GRPC_STATUS_CANCELLED);
	assert_int_equal(b.c_nmsg, 1);
	assert_memory_equal(b.c_data, "1", 1);
	assert_int_equal(e.e_s_status, GRPC_STATUS_CANCELLED);
	assert_int_equal(e.e_s_handled, 2);

	/* The connection is still good. */
	assert_false(e.e_cli_closed);
	cc_free(&a);
	cc_free(&b);
	cc_init(&a, &e);
	cc_unary(&a, M_UNARY, "ok");
	RUN_UNTIL(&e, a.c_ended);
	assert_int_equal(a.c_status, GRPC_STATUS_OK);
	assert_memory_equal(a.c_data, "OK", 2);

	cc_free(&a);
	env_done(&e);
}

/* 7. Maximum message size. */

static void
test_max_message(void **state)
{
	struct grpc_opts so = {0}, co = {0};
	struct env e;
	struct ccall a, b, c;
	uint8_t *big;

	(void)state;
	so.go_max_message = 1000;      /* what the server accepts */
	co.go_max_message = 4096;      /* what the client accepts */
	co.go_max_send_message = 4096; /* what the client sends */
	big = calloc(1, 4097);
	assert_non_null(big);
	env_init(&e, &so);
	env_connect(&e, &co);

	cc_init(&a, &e);
	assert_int_equal(cc_start(&a, M_ECHO, NULL, 0, &cc_ops), 0);
	/* Over our own limit: refused here. */
	assert_int_equal(grpc_call_send(a.c_call, big, 4097), -EMSGSIZE);
	/* Over the server's: refused there. */
	assert_int_equal(grpc_call_send(a.c_call, big, 2000), 0);
	assert_int_equal(grpc_call_close_send(a.c_call), 0);
	RUN_UNTIL(&e, a.c_ended && e.e_s_ends == 1);
	assert_int_equal(a.c_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
	assert_true(a.c_msg[0] != '\0');
	assert_int_equal(a.c_nmsg, 0);
	assert_int_equal(e.e_s_status, GRPC_STATUS_RESOURCE_EXHAUSTED);

	/* A message over the client's own receive limit ends it here. */
	cc_init(&c, &e);
	assert_int_equal(cc_start(&c, M_STREAM, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_close_send(c.c_call), 0);
	RUN_UNTIL(&e, c.c_ended && e.e_s_ends == 2);
	assert_int_equal(c.c_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
	assert_true(c.c_msg[0] != '\0');
	assert_int_equal(c.c_nmsg, 0);
	assert_int_equal(e.e_s_status, GRPC_STATUS_CANCELLED);

	/* The same connection serves the next call. */
	assert_false(e.e_cli_closed);
	cc_init(&b, &e);
	cc_unary(&b, M_UNARY, "next");
	RUN_UNTIL(&e, b.c_ended && e.e_s_ends == 3);
	assert_int_equal(b.c_status, GRPC_STATUS_OK);
	assert_int_equal(b.c_len, 4);
	assert_memory_equal(b.c_data, "NEXT", 4);
	assert_int_equal(e.e_conn_open, 1);

	free(big);
	cc_free(&a);
	cc_free(&b);
	cc_free(&c);
	env_done(&e);
}

/*
 * 7b. Before grpc_conn_set_trusted() a connection may buffer only
 * go_preauth_buffer bytes of requests; after it, the usual limits apply.
 */
static void
test_preauth_budget(void **state)
{
	struct grpc_opts so = {0};
	struct env e;
	struct ccall a, b, c;
	uint8_t *msg;

	(void)state;
	so.go_preauth_buffer = 3000;
	so.go_preauth_streams = 2;
	msg = calloc(1, 4000);
	assert_non_null(msg);
	memset(msg, 'm', 4000);
	env_init(&e, &so);
	env_connect(&e, NULL);
	RUN_UNTIL(&e, e.e_sconn != NULL);
	assert_false(grpc_conn_trusted(e.e_sconn));

	/* Over the budget: the call ends before the message is read. */
	cc_init(&a, &e);
	assert_int_equal(cc_start(&a, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(a.c_call, msg, 4000), 0);
	assert_int_equal(grpc_call_close_send(a.c_call), 0);
	RUN_UNTIL(&e, a.c_ended && e.e_s_ends == 1);
	assert_int_equal(a.c_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
	assert_int_equal(a.c_nmsg, 0);
	assert_int_equal(e.e_limits[GRPC_LIMIT_BUFFER], 1);

	/* Within it, fine. */
	cc_init(&b, &e);
	assert_int_equal(cc_start(&b, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(b.c_call, msg, 2000), 0);
	assert_int_equal(grpc_call_close_send(b.c_call), 0);
	RUN_UNTIL(&e, b.c_ended && e.e_s_ends == 2);
	assert_int_equal(b.c_status, GRPC_STATUS_OK);
	assert_int_equal(b.c_len, 2000);

	/* Trusted (once), the same message goes through. */
	grpc_conn_set_trusted(e.e_sconn);
	grpc_conn_set_trusted(e.e_sconn);
	assert_true(grpc_conn_trusted(e.e_sconn));
	assert_int_equal(e.e_trusted, 1);
	cc_init(&c, &e);
	assert_int_equal(cc_start(&c, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(c.c_call, msg, 4000), 0);
	assert_int_equal(grpc_call_close_send(c.c_call), 0);
	RUN_UNTIL(&e, c.c_ended && e.e_s_ends == 3);
	assert_int_equal(c.c_status, GRPC_STATUS_OK);
	assert_int_equal(c.c_len, 4000);
	assert_int_equal(e.e_limits[GRPC_LIMIT_BUFFER], 1);
	assert_false(e.e_cli_closed);

	free(msg);
	cc_free(&a);
	cc_free(&b);
	cc_free(&c);
	env_done(&e);
}

/* 8. Backpressure. */

struct bp {
	struct env *b_env;
	struct ccall *b_cc;
	uv_timer_t b_resume;
	uv_timer_t b_sample;
	int b_paused;
	size_t b_rss_pause;
	size_t b_rss_max;
	size_t b_queued_max;
	int b_samples;
	uint64_t b_inflight_max;
	unsigned b_sent_at_resume;
	uint64_t b_paused_at;
	uint64_t b_resumed_at;
};

/* Bytes the server handed to HTTP/2 and the client did not yet take. */
static uint64_t
bp_inflight(struct bp *bp, size_t queued)
{
	uint64_t handed =
	    (uint64_t)bp->b_env->e_st_sent * (STREAM_MSG + 5) - queued;

	return handed - bp->b_cc->c_nmsg * (uint64_t)(STREAM_MSG + 5);
}

static void
bp_on_sample(uv_timer_t *t)
{
	struct bp *bp = t->data;
	struct env *e = bp->b_env;
	size_t q, rss;
	uint64_t inflight;

	if (e->e_s_call == NULL)
		return;
	q = grpc_call_queued(e->e_s_call);
	if (q > bp->b_queued_max)
		bp->b_queued_max = q;
	if ((rss = rss_bytes()) > bp->b_rss_max)
		bp->b_rss_max = rss;
	inflight = bp_inflight(bp, q);
	if (inflight > bp->b_inflight_max)
		bp->b_inflight_max = inflight;
	bp->b_samples++;
}

static void
bp_on_resume(uv_timer_t *t)
{
	struct bp *bp = t->data;

	bp_on_sample(&bp->b_sample);
	uv_timer_stop(&bp->b_sample);
	bp->b_sent_at_resume = bp->b_env->e_st_sent;
	bp->b_paused = 0;
	bp->b_resumed_at = uv_now(&bp->b_env->e_loop);
	grpc_call_resume(bp->b_cc->c_call);
}

static void
bp_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *cc = arg;
	struct bp *bp = cc->c_env->e_scenario;
	unsigned i = (unsigned)cc->c_nmsg;
	size_t j;

	assert_false(bp->b_paused);
	assert_int_equal(len, STREAM_MSG);
	assert_int_equal(msg[0], (uint8_t)i);
	assert_int_equal(msg[1], (uint8_t)(i >> 8));
	assert_int_equal(msg[2], 0xa5);
	assert_int_equal(msg[3], 0x5a);
	for (j = 4; j < len; j++)
		if (msg[j] != (uint8_t)i)
			fail_msg("message %u byte %zu: %u", i, j, msg[j]);
	cc->c_bytes += len;
	cc->c_nmsg++;
	if (i == 0) {
		grpc_call_pause(c);
		bp->b_paused = 1;
		bp->b_paused_at = uv_now(&cc->c_env->e_loop);
		bp->b_rss_pause = bp->b_rss_max = rss_bytes();
		uv_timer_start(&bp->b_sample, bp_on_sample, 10, 10);
		uv_timer_start(&bp->b_resume, bp_on_resume, STREAM_PAUSE, 0);
	}
}

static const struct grpc_call_ops bp_ops = {
    .on_message = bp_on_message,
    .on_end = cc_on_end,
};

static void
test_backpressure(void **state)
{
	struct env e;
	struct ccall cc;
	struct bp bp;
	size_t rss0, rss1;

	(void)state;
	env_init(&e, NULL);
	/*
	 * 64 MiB through TLS in one process: 1.5 s under ASan on an idle
	 * machine, so give a loaded one (ctest -j beside other suites) more
	 * than the usual watchdog.
	 */
	assert_int_equal(
	    uv_timer_start(&e.e_watchdog, on_watchdog, 4 * WATCHDOG_MS, 0), 0);
	env_connect(&e, NULL);
	memset(&bp, 0, sizeof(bp));
	bp.b_env = &e;
	bp.b_cc = &cc;
	e.e_scenario = &bp;
	assert_int_equal(uv_timer_init(&e.e_loop, &bp.b_resume), 0);
	assert_int_equal(uv_timer_init(&e.e_loop, &bp.b_sample), 0);
	bp.b_resume.data = bp.b_sample.data = &bp;
	cc_init(&cc, &e);
	rss0 = rss_bytes();
	assert_int_equal(cc_start(&cc, M_STREAM, NULL, 0, &bp_ops), 0);
	assert_int_equal(grpc_call_close_send(cc.c_call), 0);
	RUN_UNTIL(&e, cc.c_ended && e.e_s_ends == 1);
	rss1 = rss_bytes();
	uv_close((uv_handle_t *)&bp.b_resume, NULL);
	uv_close((uv_handle_t *)&bp.b_sample, NULL);

	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_nmsg, STREAM_N);
	assert_int_equal(cc.c_bytes, (uint64_t)STREAM_N * STREAM_MSG);
	assert_int_equal(e.e_s_status, GRPC_STATUS_OK);
	assert_true(e.e_st_writable > 0);
	/* The pause lasted, and the server was held back during it. */
	assert_true(bp.b_resumed_at - bp.b_paused_at >= STREAM_PAUSE - 5);
	assert_true(bp.b_samples >= 5);
	assert_true(bp.b_sent_at_resume < STREAM_N / 4);
	assert_true(bp.b_queued_max < GRPC_CALL_HIWAT + STREAM_MSG + 5);
	/* In flight: one stream window (1 MiB) plus some slack. */
	assert_true(bp.b_inflight_max < 4 * 1024 * 1024);
	print_message("backpressure: max queued %zu, max in flight %llu, "
	              "rss +%zd KiB during pause, +%zd KiB overall\n",
	              bp.b_queued_max, (unsigned long long)bp.b_inflight_max,
	              ((ssize_t)bp.b_rss_max - (ssize_t)bp.b_rss_pause) / 1024,
	              ((ssize_t)rss1 - (ssize_t)rss0) / 1024);
	assert_true(bp.b_rss_max < bp.b_rss_pause + 32 * 1024 * 1024);
#ifndef __SANITIZE_ADDRESS__
	/* ASan's quarantine keeps freed memory resident; skip it there. */
	assert_true(rss1 < rss0 + 32 * 1024 * 1024);
#endif
	e.e_scenario = NULL;
	cc_free(&cc);
	env_done(&e);
}

/* 9. Connection loss. */

static void
lossy_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct ccall *cc = arg;

	cc_on_end(c, status, message, arg);
	cc->c_ended_before_closed = !cc->c_env->e_cli_closed;
}

static const struct grpc_call_ops lossy_ops = {
    .on_headers = cc_on_headers,
    .on_message = cc_on_message,
    .on_end = lossy_on_end,
};

static void
test_server_drops(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc.c_drop_on_msg = 1;
	assert_int_equal(cc_start(&cc, M_DROP, NULL, 0, &lossy_ops), 0);
	RUN_UNTIL(&e, cc.c_ended && e.e_cli_closed && e.e_s_ends == 1 &&
	                  e.e_conn_closed == 1);

	assert_int_equal(cc.c_status, GRPC_STATUS_UNAVAILABLE);
	assert_int_equal(cc.c_nmsg, 1);
	assert_memory_equal(cc.c_data, "first", 5);
	assert_true(cc.c_ended_before_closed);
	assert_true(cc.c_end_seq < e.e_cli_closed_seq);
	assert_int_not_equal(e.e_cli_closed_err, 0);
	assert_int_equal(e.e_s_status, GRPC_STATUS_CANCELLED);
	assert_int_equal(e.e_conn_closed_err, -ECONNABORTED);

	cc_free(&cc);
	env_done(&e);
}

static void
test_client_drops(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	assert_int_equal(cc_start(&cc, M_ECHO, NULL, 0, &lossy_ops), 0);
	assert_int_equal(grpc_call_send(cc.c_call, (const uint8_t *)"x", 1), 0);
	RUN_UNTIL(&e, cc.c_nmsg == 1);
	grpc_conn_close(e.e_cli, -ECONNABORTED);
	RUN_UNTIL(&e, cc.c_ended && e.e_cli_closed && e.e_s_ends == 1 &&
	                  e.e_conn_closed == 1);

	assert_int_equal(cc.c_status, GRPC_STATUS_UNAVAILABLE);
	assert_true(cc.c_ended_before_closed);
	assert_true(cc.c_end_seq < e.e_cli_closed_seq);
	assert_int_equal(e.e_s_status, GRPC_STATUS_CANCELLED);
	assert_int_equal(e.e_s_handled, 1);

	cc_free(&cc);
	env_done(&e);
}

/*
 * grpc.h: on_closed has "err 0 after an orderly close"; a close with an
 * error (grpc_conn_close(conn, err != 0), outside any callback) is not one.
 */
static void
test_client_close_err(void **state)
{
	struct env e;
	struct ccall cc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	assert_int_equal(cc_start(&cc, M_ECHO, NULL, 0, &cc_ops), 0);
	assert_int_equal(grpc_call_send(cc.c_call, (const uint8_t *)"x", 1), 0);
	RUN_UNTIL(&e, cc.c_nmsg == 1);
	grpc_conn_close(e.e_cli, -ECONNABORTED);
	RUN_UNTIL(&e, cc.c_ended && e.e_cli_closed && e.e_s_ends == 1);
	assert_int_equal(cc.c_status, GRPC_STATUS_UNAVAILABLE);
	assert_int_not_equal(e.e_cli_closed_err, 0);

	cc_free(&cc);
	env_done(&e);
}

/*
 * grpc.h: grpc_conn_close(conn, 0) closes "gracefully (GOAWAY, calls in
 * flight finish)".
 */
static void
test_client_graceful_close(void **state)
{
	struct env e;
	struct ccall a, b;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&a, &e);
	cc_unary(&a, M_SLOW, "slow");
	RUN_UNTIL(&e, e.e_s_halfclosed == 1);
	grpc_conn_close(e.e_cli, 0);
	cc_init(&b, &e);
	assert_int_equal(cc_start(&b, M_UNARY, NULL, 0, &cc_ops), NCG_ECLOSED);
	RUN_UNTIL(&e, a.c_ended && e.e_cli_closed && e.e_s_ends == 1);

	assert_int_equal(a.c_status, GRPC_STATUS_OK);
	assert_int_equal(a.c_len, 4);
	assert_memory_equal(a.c_data, "SLOW", 4);
	assert_true(a.c_end_seq < e.e_cli_closed_seq);
	assert_int_equal(e.e_cli_closed_err, 0);
	assert_int_equal(e.e_s_status, GRPC_STATUS_OK);

	cc_free(&a);
	cc_free(&b);
	env_done(&e);
}

/* 10. Graceful server shutdown with a call in flight. */

struct gs {
	struct ccall *g_late;
	int g_rc;
	int g_tried;
};

static void
gs_on_goaway(struct env *e)
{
	struct gs *g = e->e_scenario;

	if (g->g_tried++)
		return;
	g->g_rc = cc_start(g->g_late, M_UNARY, NULL, 0, &cc_ops);
}

static void
test_server_shutdown(void **state)
{
	struct env e;
	struct ccall a, b, c;
	struct gs g;
	uint64_t t0;
	int rc;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);
	cc_init(&a, &e);
	cc_init(&b, &e);
	cc_init(&c, &e);
	memset(&g, 0, sizeof(g));
	g.g_late = &c;
	g.g_rc = 1;
	e.e_scenario = &g;
	e.e_goaway_fn = gs_on_goaway;

	cc_unary(&a, M_SLOW, "slow");
	RUN_UNTIL(&e, e.e_s_halfclosed == 1);
	t0 = uv_now(&e.e_loop);
	env_shutdown(&e, 2000);
	/* Before the GOAWAY arrives: the server must refuse it. */
	rc = cc_start(&b, M_UNARY, NULL, 0, &cc_ops);
	assert_true(rc == 0 || rc == NCG_ECLOSED);
	if (rc == 0)
		assert_int_equal(grpc_call_close_send(b.c_call), 0);
	RUN_UNTIL(&e, e.e_srv_done && e.e_cli_closed && a.c_ended &&
	                  (rc != 0 || b.c_ended));

	assert_int_equal(a.c_status, GRPC_STATUS_OK);
	assert_int_equal(a.c_len, 4);
	assert_memory_equal(a.c_data, "SLOW", 4);
	assert_true(a.c_end_seq < e.e_srv_done_seq);
	if (rc == 0) {
		assert_int_equal(b.c_status, GRPC_STATUS_UNAVAILABLE);
		assert_int_equal(b.c_nmsg, 0);
	}
	/* After the GOAWAY: refused at once. */
	assert_true(e.e_goaway >= 1);
	assert_int_equal(g.g_rc, NCG_ECLOSED);
	assert_false(c.c_ended);
	/* The in-flight call, not the grace timer, ended the shutdown. */
	assert_true(uv_now(&e.e_loop) - t0 < 1500);
	assert_int_equal(e.e_s_handled, 1);
	assert_int_equal(e.e_s_ends, 1);
	assert_int_equal(e.e_s_status, GRPC_STATUS_OK);

	e.e_goaway_fn = NULL;
	e.e_scenario = NULL;
	cc_free(&a);
	cc_free(&b);
	cc_free(&c);
	env_done(&e);
}

/* 11. Garbage peers. */

struct raw {
	struct env *r_env;
	uv_pipe_t r_pipe;
	uv_connect_t r_creq;
	uv_write_t r_wreq;
	uv_buf_t r_out;
	uint8_t r_in[65536];
	size_t r_inlen;
	uint8_t r_sink[4096];
	int r_closed;
};

static void
raw_on_closed(uv_handle_t *h)
{
	struct raw *r = h->data;

	r->r_closed = 1;
}

static void
raw_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct raw *r = h->data;

	(void)suggested;
	if (r->r_inlen < sizeof(r->r_in))
		*b = uv_buf_init((char *)r->r_in + r->r_inlen,
		                 (unsigned)(sizeof(r->r_in) - r->r_inlen));
	else
		*b = uv_buf_init((char *)r->r_sink, sizeof(r->r_sink));
}

static void
raw_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct raw *r = s->data;

	if (nread > 0 && b->base == (char *)r->r_in + r->r_inlen)
		r->r_inlen += (size_t)nread;
	if (nread < 0 && !uv_is_closing((uv_handle_t *)s))
		uv_close((uv_handle_t *)s, raw_on_closed);
}

static void
raw_on_write(uv_write_t *req, int status)
{
	(void)req;
	(void)status; /* the server may hang up before reading it all */
}

static void
raw_on_connect(uv_connect_t *req, int status)
{
	struct raw *r = req->data;

	assert_int_equal(status, 0);
	assert_int_equal(
	    uv_read_start((uv_stream_t *)&r->r_pipe, raw_on_alloc, raw_on_read),
	    0);
	r->r_wreq.data = r;
	assert_int_equal(uv_write(&r->r_wreq, (uv_stream_t *)&r->r_pipe,
	                          &r->r_out, 1, raw_on_write),
	                 0);
}

/* Sends data on a raw connection, reads until the server hangs up. */
static void
raw_talk(struct env *e, struct raw *r, const uint8_t *data, size_t len)
{
	int closed = e->e_conn_closed;

	memset(r, 0, sizeof(*r));
	r->r_env = e;
	r->r_out = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
	assert_int_equal(uv_pipe_init(&e->e_loop, &r->r_pipe, 0), 0);
	r->r_pipe.data = r;
	r->r_creq.data = r;
	uv_pipe_connect(&r->r_creq, &r->r_pipe, e->e_path, raw_on_connect);
	RUN_UNTIL(e, r->r_closed && e->e_conn_closed == closed + 1);
}

/* Finds a GOAWAY frame in what a server sent; returns its error code. */
static int
find_goaway(const uint8_t *p, size_t n, uint32_t *code)
{
	size_t off = 0, len;

	while (off + 9 <= n) {
		len =
		    (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
		if (off + 9 + len > n)
			break;
		if (p[off + 3] == 0x07 && len >= 8) {
			const uint8_t *q = p + off + 9 + 4;

			*code = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 |
			        (uint32_t)q[2] << 8 | q[3];
			return 1;
		}
		off += 9 + len;
	}
	return 0;
}

static void
test_garbage_peer(void **state)
{
	static const char http1[] = "GET / HTTP/1.1\r\nHost: localhost\r\n"
	                            "Connection: close\r\n\r\n";
	static const uint8_t bad_frame[] =
	    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	    /* SETTINGS with a length that is no multiple of 6 */
	    "\x00\x00\x03\x04\x00\x00\x00\x00\x00"
	    "\x01\x02\x03";
	uint8_t noise[4096];
	uint32_t x = 0x12345678, code = 0;
	struct env e;
	struct raw *r;
	struct ccall cc;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(noise); i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		noise[i] = (uint8_t)x;
	}
	noise[0] = 0x16; /* not 'P' */
	r = malloc(sizeof(*r));
	assert_non_null(r);
	env_init(&e, NULL);

	raw_talk(&e, r, (const uint8_t *)http1, sizeof(http1) - 1);
	assert_int_equal(e.e_conn_open, 1);
	assert_int_not_equal(e.e_conn_closed_err, 0);

	raw_talk(&e, r, noise, sizeof(noise));
	assert_int_equal(e.e_conn_open, 2);
	assert_int_not_equal(e.e_conn_closed_err, 0);

	raw_talk(&e, r, bad_frame, sizeof(bad_frame) - 1);
	assert_int_equal(e.e_conn_open, 3);
	assert_true(find_goaway(r->r_in, r->r_inlen, &code));
	assert_int_equal(code, 0x6); /* FRAME_SIZE_ERROR */

	/* A proper client is still served. */
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc_unary(&cc, M_UNARY, "still here");
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_len, 10);
	assert_memory_equal(cc.c_data, "STILL HERE", 10);
	assert_int_equal(e.e_s_handled, 1);

	cc_free(&cc);
	env_done(&e);
	assert_int_equal(e.e_conn_open, 4);
	free(r);
}

/*
 * 12. Many concurrent calls on one connection, each held SLOW_MS by the
 * server, against its limit of 100 concurrent streams.
 */

static void
many_start(struct env *e)
{
	struct ccall *calls = e->e_scenario;
	char req[32];
	int i;

	for (i = 0; i < NCALLS; i++) {
		cc_init(&calls[i], e);
		snprintf(req, sizeof(req), "req-%03d", i);
		cc_unary(&calls[i], M_SLOW, req);
	}
}

static void
test_many_calls(void **state)
{
	struct ccall *calls;
	struct env e;
	char want[32];
	int i, ended;

	(void)state;
	calls = calloc(NCALLS, sizeof(*calls));
	assert_non_null(calls);
	env_init(&e, NULL);
	e.e_scenario = calls;
	/* Right as the connection is ready, before any SETTINGS arrived. */
	e.e_ready_fn = many_start;
	env_connect(&e, NULL);
	for (;;) {
		for (i = 0, ended = 0; i < NCALLS; i++)
			ended += calls[i].c_ended;
		if (ended == NCALLS && e.e_s_ends == NCALLS)
			break;
		if (e.e_timed_out)
			fail_msg("watchdog fired with %d calls ended", ended);
		uv_run(&e.e_loop, UV_RUN_ONCE);
	}
	for (i = 0; i < NCALLS; i++) {
		snprintf(want, sizeof(want), "REQ-%03d", i);
		if (calls[i].c_status != GRPC_STATUS_OK)
			fail_msg("call %d: status %d '%s'", i,
			         calls[i].c_status, calls[i].c_msg);
		assert_int_equal(calls[i].c_len, 7);
		assert_memory_equal(calls[i].c_data, want, 7);
		assert_md(&calls[i].c_trailers, "x-t", "1", 1);
		cc_free(&calls[i]);
	}
	assert_int_equal(e.e_s_ok, NCALLS);
	assert_int_equal(e.e_conn_open, 1);
	/* The server held 100 calls; the others waited their turn. */
	assert_int_equal(e.e_s_maxactive, 100);

	e.e_scenario = NULL;
	env_done(&e);
	free(calls);
}

/* Server connection events over a Unix socket (cleartext). */

static void
idle_on_timer(uv_timer_t *t)
{
	int *fired = t->data;

	*fired = 1;
}

static void
test_conn_open(void **state)
{
	struct grpc_opts so = {0};
	struct env e;
	struct ccall cc;
	uv_timer_t t;
	int fired = 0;

	(void)state;

	/* (a) The peer is known when the connection is announced. */
	env_init(&e, NULL);
	env_connect(&e, NULL);
	RUN_UNTIL(&e, e.e_conn_open == 1);
	assert_string_equal(e.e_conn_peer, "unix");
	env_done(&e);

	/* (c) A handler may refuse a connection from on_conn_open. */
	env_init(&e, NULL);
	e.e_reject = 1;
	assert_int_equal(grpc_conn_connect_unix(&e.e_loop, e.e_path, NULL,
	                                        &cli_ops, &e, &e.e_cli),
	                 0);
	RUN_UNTIL(&e, e.e_cli_closed && e.e_conn_closed == 1);
	assert_int_equal(e.e_conn_closed_err, -ECONNREFUSED);
	env_done(&e);

	/* (b) Server keepalive pings over a Unix socket. */
	so.go_ping_interval_ms = 30;
	env_init(&e, &so);
	env_connect(&e, NULL);
	cc_init(&cc, &e);
	cc_unary(&cc, M_UNARY, "ping");
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(uv_timer_init(&e.e_loop, &t), 0);
	t.data = &fired;
	assert_int_equal(uv_timer_start(&t, idle_on_timer, 150, 0), 0);
	RUN_UNTIL(&e, fired);
	uv_close((uv_handle_t *)&t, NULL);
	assert_false(e.e_cli_closed);
	cc_free(&cc);
	env_done(&e);
}

/*
 * 13. Keepalive.  Some peers are fakes: a raw uv_pipe_t listener in the
 * test's directory that sends fixed bytes and ignores what it reads.
 */

#define KA_SETTINGS "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

struct fake {
	struct env *f_env;
	uv_pipe_t f_listen;
	uv_pipe_t f_conn;
	uv_write_t f_wreq;
	uv_buf_t f_out;
	char f_path[160];
	int f_accepted;
	int f_written;
	int f_close_after; /* close once written and the preface was read */
	int f_open;        /* handles not closed yet */
	size_t f_nread;
	uint8_t f_sink[4096];
};

/* What a keepalive test saw on its client connection. */
struct ka {
	struct ccall *k_call; /* started in on_ready, if not NULL */
	uint64_t k_t0;
	uint64_t k_closed_at;
	int k_goaway_seq;
	uint32_t k_goaway_code;
	char k_goaway_debug[64];
	unsigned k_interval_in_goaway;
	unsigned k_interval_at_close;
};

static void
fake_on_closed(uv_handle_t *h)
{
	struct fake *f = h->data;

	f->f_open--;
}

static void
fake_maybe_close(struct fake *f)
{
	/* 24 bytes: the client's connection preface. */
	if (f->f_close_after && f->f_written && f->f_nread >= 24 &&
	    !uv_is_closing((uv_handle_t *)&f->f_conn))
		uv_close((uv_handle_t *)&f->f_conn, fake_on_closed);
}

static void
fake_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct fake *f = h->data;

	(void)suggested;
	*b = uv_buf_init((char *)f->f_sink, sizeof(f->f_sink));
}

static void
fake_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct fake *f = s->data;

	(void)b;
	if (nread > 0) {
		f->f_nread += (size_t)nread;
		fake_maybe_close(f);
	} else if (nread < 0 && !uv_is_closing((uv_handle_t *)s))
		uv_close((uv_handle_t *)s, fake_on_closed);
}

static void
fake_on_write(uv_write_t *req, int status)
{
	struct fake *f = req->data;

	(void)status; /* ECANCELED if the client went away first */
	f->f_written = 1;
	fake_maybe_close(f);
}

static void
fake_on_connection(uv_stream_t *l, int status)
{
	struct fake *f = l->data;

	assert_int_equal(status, 0);
	assert_false(f->f_accepted);
	f->f_accepted = 1;
	assert_int_equal(uv_pipe_init(&f->f_env->e_loop, &f->f_conn, 0), 0);
	f->f_conn.data = f;
	f->f_open++;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&f->f_conn), 0);
	assert_int_equal(uv_read_start((uv_stream_t *)&f->f_conn, fake_on_alloc,
	                               fake_on_read),
	                 0);
	f->f_wreq.data = f;
	assert_int_equal(uv_write(&f->f_wreq, (uv_stream_t *)&f->f_conn,
	                          &f->f_out, 1, fake_on_write),
	                 0);
}

/* Listens at <dir>/fake.sock; sends data to the first client. */
static void
fake_start(struct fake *f, struct env *e, const void *data, size_t len,
           int close_after)
{
	memset(f, 0, sizeof(*f));
	f->f_env = e;
	f->f_out = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
	f->f_close_after = close_after;
	snprintf(f->f_path, sizeof(f->f_path), "%s/fake.sock", e->e_dir);
	assert_int_equal(uv_pipe_init(&e->e_loop, &f->f_listen, 0), 0);
	f->f_listen.data = f;
	f->f_open = 1;
	assert_int_equal(uv_pipe_bind(&f->f_listen, f->f_path), 0);
	assert_int_equal(
	    uv_listen((uv_stream_t *)&f->f_listen, 4, fake_on_connection), 0);
}

static void
fake_stop(struct fake *f)
{
	if (!uv_is_closing((uv_handle_t *)&f->f_listen))
		uv_close((uv_handle_t *)&f->f_listen, fake_on_closed);
	if (f->f_accepted && !uv_is_closing((uv_handle_t *)&f->f_conn))
		uv_close((uv_handle_t *)&f->f_conn, fake_on_closed);
	RUN_UNTIL(f->f_env, f->f_open == 0);
	/* libuv unlinks a bound pipe's socket file when closing it. */
	if (unlink(f->f_path) != 0)
		assert_int_equal(errno, ENOENT);
}

static void
ka_on_goaway(struct grpc_conn *conn, uint32_t code, const char *debug,
             void *arg)
{
	struct env *e = arg;
	struct ka *k = e->e_scenario;

	k->k_goaway_seq = ++e->e_seq;
	k->k_goaway_code = code;
	snprintf(k->k_goaway_debug, sizeof(k->k_goaway_debug), "%s", debug);
	k->k_interval_in_goaway = grpc_conn_ping_interval(conn);
	cli_on_goaway(conn, code, debug, arg);
}

static void
ka_on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct env *e = arg;
	struct ka *k = e->e_scenario;

	k->k_closed_at = uv_now(&e->e_loop);
	k->k_interval_at_close = grpc_conn_ping_interval(conn);
	cli_on_closed(conn, err, reason, arg);
}

static const struct grpc_conn_ops ka_cli_ops = {
    .on_ready = cli_on_ready,
    .on_goaway = ka_on_goaway,
    .on_closed = ka_on_closed,
};

static void
ka_connect(struct env *e, struct ka *k, const char *path,
           const struct grpc_opts *o)
{
	e->e_scenario = k;
	uv_update_time(&e->e_loop);
	k->k_t0 = uv_now(&e->e_loop);
	assert_int_equal(grpc_conn_connect_unix(&e->e_loop, path, o,
	                                        &ka_cli_ops, e, &e->e_cli),
	                 0);
}

static void
ka_start_call(struct env *e)
{
	struct ka *k = e->e_scenario;

	cc_unary(k->k_call, M_UNARY, "hello");
}

static void
ka_on_timer_closed(uv_handle_t *h)
{
	int *fired = h->data;

	*fired = 1;
}

/* Runs the loop for ms, then checks the client is still connected. */
static void
ka_idle(struct env *e, unsigned ms)
{
	uv_timer_t t;
	int fired = 0;

	assert_int_equal(uv_timer_init(&e->e_loop, &t), 0);
	t.data = &fired;
	assert_int_equal(uv_timer_start(&t, idle_on_timer, ms, 0), 0);
	RUN_UNTIL(e, fired || e->e_cli_closed);
	/* t lives on this stack: wait for libuv to be done with it. */
	fired = 0;
	uv_close((uv_handle_t *)&t, ka_on_timer_closed);
	RUN_UNTIL(e, fired);
	assert_false(e->e_cli_closed);
}

/* A peer that answers nothing: the unanswered PING closes the connection. */
static void
test_keepalive_dead_peer(void **state)
{
	static const char settings[] = KA_SETTINGS;
	struct grpc_opts o = {0};
	struct fake f;
	struct ka k = {0};
	struct ccall cc;
	struct env e;
	uint64_t took;

	(void)state;
	env_init(&e, NULL);
	fake_start(&f, &e, settings, sizeof(settings) - 1, 0);
	cc_init(&cc, &e);
	k.k_call = &cc;
	e.e_ready_fn = ka_start_call;
	o.go_ping_interval_ms = 100;
	o.go_ping_timeout_ms = 200;
	ka_connect(&e, &k, f.f_path, &o);
	RUN_UNTIL(&e, e.e_cli_closed);
	assert_true(e.e_cli_ready);
	assert_int_equal(e.e_cli_closed_err, NCG_EPING_TIMEOUT);
	took = k.k_closed_at - k.k_t0;
	assert_true(took >= 250);
	assert_true(took < 3000);
	assert_true(cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_UNAVAILABLE);
	assert_true(cc.c_end_seq < e.e_cli_closed_seq);
	assert_int_equal(e.e_goaway, 0);
	assert_true(f.f_nread >= 24);

	fake_stop(&f);
	e.e_ready_fn = NULL;
	e.e_scenario = NULL;
	cc_free(&cc);
	env_done(&e);
	assert_int_equal(e.e_conn_open, 0);
}

/* A live peer answers every PING: the connection stays up. */
static void
test_keepalive_live_peer(void **state)
{
	struct grpc_opts o = {0};
	struct ccall cc;
	struct env e;

	(void)state;
	o.go_ping_interval_ms = 50;
	o.go_ping_timeout_ms = 200;
	env_init(&e, NULL);
	env_connect(&e, &o);
	ka_idle(&e, 1000);
	assert_int_equal(e.e_goaway, 0);
	assert_int_equal(e.e_conn_closed, 0);
	assert_int_equal(grpc_conn_ping_interval(e.e_cli), 50);

	cc_init(&cc, &e);
	cc_unary(&cc, M_UNARY, "alive");
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_len, 5);
	assert_memory_equal(cc.c_data, "ALIVE", 5);
	assert_false(e.e_cli_closed);
	cc_free(&cc);
	env_done(&e);
	assert_int_equal(e.e_conn_open, 1);
}

/* GOAWAY ENHANCE_YOUR_CALM "too_many_pings" doubles the ping interval. */
static void
test_keepalive_too_many_pings(void **state)
{
	static const char frames[] = KA_SETTINGS
	    /* GOAWAY: length 22, type 7, flags 0, stream 0 */
	    "\x00\x00\x16\x07\x00\x00\x00\x00\x00"
	    "\x00\x00\x00\x00" /* last stream id */
	    "\x00\x00\x00\x0b" /* ENHANCE_YOUR_CALM */
	    "too_many_pings";
	struct grpc_opts o = {0};
	struct fake f;
	struct ka k = {0};
	struct env e;

	(void)state;
	assert_int_equal(sizeof(frames) - 1, 9 + 9 + 8 + 14);
	env_init(&e, NULL);
	fake_start(&f, &e, frames, sizeof(frames) - 1, 1);
	o.go_ping_interval_ms = 1000;
	ka_connect(&e, &k, f.f_path, &o);
	RUN_UNTIL(&e, e.e_cli_closed);
	assert_true(e.e_cli_ready);
	assert_int_equal(e.e_goaway, 1);
	assert_int_equal(k.k_goaway_code, 0xb);
	assert_string_equal(k.k_goaway_debug, "too_many_pings");
	assert_int_equal(k.k_interval_in_goaway, 2000);
	assert_int_equal(k.k_interval_at_close, 2000);
	assert_true(k.k_goaway_seq < e.e_cli_closed_seq);
	/* Closed at once, well before any ping was due. */
	assert_true(k.k_closed_at - k.k_t0 < 1000);

	fake_stop(&f);
	e.e_scenario = NULL;
	env_done(&e);
	assert_int_equal(e.e_conn_open, 0);
}

/* Our server never sends a client away for pinging often. */
static void
test_keepalive_server_tolerates_pings(void **state)
{
	struct grpc_opts o = {0};
	struct ccall cc;
	struct env e;

	(void)state;
	o.go_ping_interval_ms = 20;
	env_init(&e, NULL);
	env_connect(&e, &o);
	ka_idle(&e, 1000);
	assert_int_equal(e.e_goaway, 0);
	assert_int_equal(e.e_conn_closed, 0);
	assert_int_equal(grpc_conn_ping_interval(e.e_cli), 20);

	cc_init(&cc, &e);
	cc_unary(&cc, M_UNARY, "still pinging");
	RUN_UNTIL(&e, cc.c_ended);
	assert_int_equal(cc.c_status, GRPC_STATUS_OK);
	assert_int_equal(cc.c_len, 13);
	assert_memory_equal(cc.c_data, "STILL PINGING", 13);
	assert_false(e.e_cli_closed);
	assert_int_equal(e.e_goaway, 0);
	cc_free(&cc);
	env_done(&e);
	assert_int_equal(e.e_conn_open, 1);
}

/*
 * libuv's rule: a callback never runs inside the call that caused it.  A
 * server finishing from a timer after the client half-closed ends the
 * stream on that write, and a resume from a timer has input waiting; the
 * call's on_end and on_message must still come later, from the loop.
 */
static void
test_callbacks_deferred(void **state)
{
	struct env e;
	struct ccall a, b;
	const char *parts[] = {"one ", "two ", "three"};
	size_t i;

	(void)state;
	env_init(&e, NULL);
	env_connect(&e, NULL);

	cc_init(&a, &e);
	cc_unary(&a, M_SLOW, "slow");
	RUN_UNTIL(&e, a.c_ended && e.e_s_ends == 1);
	assert_int_equal(a.c_status, GRPC_STATUS_OK);
	assert_int_equal(a.c_len, 4);
	assert_memory_equal(a.c_data, "SLOW", 4);
	assert_int_equal(e.e_cb_in_api, 0);

	cc_init(&b, &e);
	assert_int_equal(cc_start(&b, M_PAUSE, NULL, 0, &cc_ops), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(grpc_call_send(b.c_call,
		                                (const uint8_t *)parts[i],
		                                strlen(parts[i])),
		                 0);
	assert_int_equal(grpc_call_close_send(b.c_call), 0);
	RUN_UNTIL(&e, b.c_ended && e.e_s_ends == 2);
	assert_int_equal(b.c_status, GRPC_STATUS_OK);
	assert_int_equal(b.c_len, 13);
	assert_memory_equal(b.c_data, "ONE TWO THREE", 13);
	assert_int_equal(e.e_cb_in_api, 0);

	cc_free(&a);
	cc_free(&b);
	env_done(&e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unary),
	    cmocka_unit_test(test_bidi),
	    cmocka_unit_test(test_frames_whole),
	    cmocka_unit_test(test_paused_end),
	    cmocka_unit_test(test_unimplemented),
	    cmocka_unit_test(test_status_message),
	    cmocka_unit_test(test_deadline),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_max_message),
	    cmocka_unit_test(test_preauth_budget),
	    cmocka_unit_test(test_backpressure),
	    cmocka_unit_test(test_server_drops),
	    cmocka_unit_test(test_client_drops),
	    cmocka_unit_test(test_client_close_err),
	    cmocka_unit_test(test_client_graceful_close),
	    cmocka_unit_test(test_server_shutdown),
	    cmocka_unit_test(test_garbage_peer),
	    cmocka_unit_test(test_many_calls),
	    cmocka_unit_test(test_conn_open),
	    cmocka_unit_test(test_keepalive_dead_peer),
	    cmocka_unit_test(test_keepalive_live_peer),
	    cmocka_unit_test(test_keepalive_too_many_pings),
	    cmocka_unit_test(test_keepalive_server_tolerates_pings),
	    cmocka_unit_test(test_send_all_or_nothing),
	    cmocka_unit_test(test_too_many_trailers),
	    cmocka_unit_test(test_callbacks_deferred),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
