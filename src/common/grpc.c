/*
 * gRPC calls over h2.c connections, for clients and servers.
 *
 * Received DATA goes through a per-call raw queue into the deframer;
 * HTTP/2 flow control is released (h2_consume) only as the deframer takes
 * bytes, so a paused call holds at most one stream window plus one message.
 * Outgoing messages are framed into cl_wbuf and pulled by nghttp2 through a
 * data provider that defers while the queue is empty.
 *
 * A call is freed right after its on_end.  No callback runs inside the
 * API call that caused it: sends and finishes are written by h2.c from
 * the loop, and grpc_call_resume() delivers what waits from there too
 * (h2_defer()).  So no code here can have a call freed under it while a
 * user callback runs, and nothing needs to hold one.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "grpc.h"
#include "grpc_frame.h"
#include "grpc_meta.h"
#include "h2.h"
#include "tls.h"

#define GRPC_MAX_METADATA (16 * 1024)
#define GRPC_USER_AGENT   "ncgrpc/" NCGRPC_VERSION

/*
 * A call's state is four small machines, each moving one way only (except
 * delivery, which pauses and resumes):
 *
 *  recv     the peer's half:   HEADERS -> OPEN -> EOS
 *  deliver  our handing over:  RUNNING <-> PAUSED; -> DONE (all messages
 *                              and the half-close delivered) or DROPPED
 *                              (input discarded after an error or cancel)
 *  send     our half:          IDLE -> OPEN -> CLOSING; a client starts
 *                              OPEN (its HEADERS go with grpc_call_start()),
 *                              a server's trailers-only answer skips OPEN.
 *                              CLOSING: the stream ends (END_STREAM, and a
 *                              server's trailers) once the queue is sent.
 *  life     the stream:        OPEN -> CLOSED -> ENDED (on_end delivered;
 *                              the call is freed right after)
 */
enum call_recv { RECV_HEADERS, RECV_OPEN, RECV_EOS };
enum call_deliver {
	DELIVER_RUNNING,
	DELIVER_PAUSED,
	DELIVER_DONE,
	DELIVER_DROPPED
};
enum call_send { SEND_IDLE, SEND_OPEN, SEND_CLOSING };
enum call_life { LIFE_OPEN, LIFE_CLOSED, LIFE_ENDED };

struct grpc_call {
	struct grpc_conn *cl_conn;
	int32_t cl_stream_id;
	int cl_server;
	char *cl_path;
	const struct grpc_call_ops *cl_ops;
	void *cl_arg;
	struct grpc_mdlist cl_md;
	struct grpc_mdlist cl_trailers;
	struct grpc_deframer cl_df;
	struct buf cl_rbuf;
	struct buf cl_wbuf;
	size_t cl_md_bytes;
	uint64_t cl_timeout_ms;
	uv_timer_t cl_timer;
	int cl_timer_used;
	enum call_recv cl_recv;
	enum call_deliver cl_deliver;
	enum call_send cl_send;
	enum call_life cl_life;
	int cl_want_process; /* resumed: deliver from the loop */
	int cl_bad_request;  /* server: method/content-type unusable */
	int cl_deferred;     /* data provider is deferred */
	int cl_want_writable;
	int cl_above_lowat;
	int cl_http_status;
	int cl_have_status; /* cl_status came from the peer or finish */
	int cl_status;
	char *cl_message;
	int cl_local_status; /* client: status decided here, or -1 */
	char *cl_local_message;
	struct grpc_mdlist cl_send_trailers;
	int cl_counted; /* server: counted in gc_nstreams */
	size_t cl_held; /* server: counted in gc_buffered */
	LIST_ENTRY(grpc_call) cl_entry;
};

LIST_HEAD(grpc_call_list, grpc_call);

struct grpc_conn {
	struct h2conn *gc_h2;
	uv_loop_t *gc_loop;
	struct grpc_server *gc_srv; /* NULL for a client connection */
	const struct grpc_conn_ops *gc_ops;
	void *gc_arg;
	struct grpc_opts gc_opts;
	struct grpc_call_list gc_calls;
	char *gc_authority;
	int gc_tls;
	int gc_ready;
	int gc_trusted;       /* server: grpc_conn_set_trusted() ran */
	uint32_t gc_nstreams; /* server: calls on it not yet freed */
	size_t gc_buffered;   /* server: request bytes held by its calls */
	LIST_ENTRY(grpc_conn) gc_entry;
};

struct grpc_method {
	char *gm_path;
	grpc_handler_fn gm_fn;
	void *gm_arg;
};

struct grpc_listener {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} gl_h;
	struct grpc_server *gl_srv;
	struct tls_ctx *gl_ctx;
	int gl_open;
};

#define GRPC_MAX_LISTENERS 8

struct grpc_server {
	uv_loop_t *gs_loop;
	struct grpc_opts gs_opts;
	const struct grpc_server_ops *gs_ops;
	void *gs_arg;
	struct grpc_method *gs_methods;
	size_t gs_nmethods;
	struct grpc_listener *gs_listeners[GRPC_MAX_LISTENERS];
	size_t gs_nlisteners;
	LIST_HEAD(, grpc_conn) gs_conns;
	uint16_t gs_port;
	int gs_shutdown;
	uv_timer_t gs_grace;
	int gs_grace_closing;
	size_t gs_open_listeners; /* listener handles not yet closed */
	void (*gs_done)(void *);
	void *gs_done_arg;
};

static const struct h2_stream_ops grpc_h2_ops;
static void call_finalize(struct grpc_call *c, int status, const char *msg);
static void call_process(struct grpc_call *c);
static void server_conn_gone(struct grpc_server *srv);

/* The transitions; each checks that it is a legal one. */
static void
call_set_recv(struct grpc_call *c, enum call_recv st)
{
	assert(st >= c->cl_recv);
	c->cl_recv = st;
}

static void
call_set_deliver(struct grpc_call *c, enum call_deliver st)
{
	assert(c->cl_deliver != DELIVER_DROPPED);
	assert(st != DELIVER_PAUSED || c->cl_deliver == DELIVER_RUNNING);
	assert(st != DELIVER_RUNNING || c->cl_deliver == DELIVER_PAUSED);
	assert(st != DELIVER_DONE || c->cl_deliver == DELIVER_RUNNING);
	c->cl_deliver = st;
}

static void
call_set_send(struct grpc_call *c, enum call_send st)
{
	assert(st > c->cl_send);
	c->cl_send = st;
}

static void
call_set_life(struct grpc_call *c, enum call_life st)
{
	assert(st >= c->cl_life);
	c->cl_life = st;
}

/* Input is discarded from now on (an error, a cancel, a bad request). */
static void
call_drop(struct grpc_call *c)
{
	if (c->cl_deliver != DELIVER_DROPPED)
		call_set_deliver(c, DELIVER_DROPPED);
}

/* Metadata lists. */

int
grpc_md_add(struct grpc_mdlist *ml, const char *key, const void *value,
            size_t len)
{
	struct grpc_md *md;
	size_t klen = strlen(key);

	if (!grpc_meta_key_valid(key, klen) ||
	    (!grpc_meta_key_is_bin(key, klen) &&
	     !grpc_meta_value_valid(value, len)))
		return -EINVAL;
	if (ml->ml_n == ml->ml_cap) {
		size_t cap = ml->ml_cap == 0 ? 4 : ml->ml_cap * 2;

		md = reallocarray(ml->ml_md, cap, sizeof(*md));
		if (md == NULL)
			return -ENOMEM;
		ml->ml_md = md;
		ml->ml_cap = cap;
	}
	md = &ml->ml_md[ml->ml_n];
	if ((md->md_key = strdup(key)) == NULL)
		return -ENOMEM;
	if ((md->md_value = malloc(len + 1)) == NULL) {
		free(md->md_key);
		return -ENOMEM;
	}
	if (len > 0)
		memcpy(md->md_value, value, len);
	md->md_value[len] = '\0';
	md->md_len = len;
	ml->ml_n++;
	return 0;
}

const struct grpc_md *
grpc_md_get(const struct grpc_mdlist *ml, const char *key)
{
	size_t i;

	for (i = 0; i < ml->ml_n; i++)
		if (strcmp(ml->ml_md[i].md_key, key) == 0)
			return &ml->ml_md[i];
	return NULL;
}

void
grpc_md_free(struct grpc_mdlist *ml)
{
	size_t i;

	for (i = 0; i < ml->ml_n; i++) {
		free(ml->ml_md[i].md_key);
		free(ml->ml_md[i].md_value);
	}
	free(ml->ml_md);
	memset(ml, 0, sizeof(*ml));
}

/* Header arrays for nghttp2.  Values of "-bin" keys are base64-encoded. */

#define NV_MAX 48

struct nvlist {
	nghttp2_nv nv[NV_MAX];
	char *owned[NV_MAX];
	size_t n;
	size_t nowned;
	int overflow;    /* something could not be added */
	char status[12]; /* grpc-status, which must never be lost */
};

static void
nv_add(struct nvlist *l, const char *name, const char *value, size_t vlen)
{
	nghttp2_nv *nv;

	if (l->n == sizeof(l->nv) / sizeof(l->nv[0])) {
		l->overflow = 1;
		return;
	}
	nv = &l->nv[l->n++];
	nv->name = (uint8_t *)(uintptr_t)name;
	nv->namelen = strlen(name);
	nv->value = (uint8_t *)(uintptr_t)value;
	nv->valuelen = vlen;
	nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void
nv_add_str(struct nvlist *l, const char *name, const char *value)
{
	nv_add(l, name, value, strlen(value));
}

/* Adds a value that l owns from now on (freed by nv_free). */
static void
nv_add_owned(struct nvlist *l, const char *name, char *value)
{
	if (value == NULL ||
	    l->nowned == sizeof(l->owned) / sizeof(l->owned[0])) {
		free(value);
		l->overflow = 1;
		return;
	}
	l->owned[l->nowned++] = value;
	nv_add_str(l, name, value);
}

static void
nv_add_md(struct nvlist *l, const struct grpc_mdlist *ml)
{
	size_t i;

	for (i = 0; ml != NULL && i < ml->ml_n; i++) {
		const struct grpc_md *md = &ml->ml_md[i];
		char *enc;

		if (grpc_meta_key_reserved(md->md_key, strlen(md->md_key)))
			continue;
		if (grpc_meta_key_is_bin(md->md_key, strlen(md->md_key))) {
			if (grpc_base64_encode(md->md_value, md->md_len,
			                       &enc) != 0) {
				l->overflow = 1;
				continue;
			}
			nv_add_owned(l, md->md_key, enc);
		} else
			nv_add(l, md->md_key, (const char *)md->md_value,
			       md->md_len);
	}
}

static void
nv_free(struct nvlist *l)
{
	size_t i;

	for (i = 0; i < l->nowned; i++)
		free(l->owned[i]);
	l->nowned = 0;
}

static void
nv_add_status(struct nvlist *l, int status, const char *message)
{
	char *enc = NULL;

	snprintf(l->status, sizeof(l->status), "%d", status);
	nv_add_str(l, "grpc-status", l->status);
	if (message == NULL || *message == '\0')
		return;
	if (grpc_percent_encode(message, strlen(message), &enc) == 0)
		nv_add_owned(l, "grpc-message", enc);
	else
		l->overflow = 1;
}

/* Call lifetime. */

static struct grpc_call *
call_new(struct grpc_conn *conn, int server)
{
	struct grpc_call *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->cl_conn = conn;
	c->cl_server = server;
	/* A client's HEADERS go out with grpc_call_start(). */
	c->cl_send = server ? SEND_IDLE : SEND_OPEN;
	c->cl_local_status = -1;
	grpc_deframer_init(&c->cl_df, conn->gc_opts.go_max_message);
	buf_init(&c->cl_rbuf, 0);
	buf_init(&c->cl_wbuf, 0);
	LIST_INSERT_HEAD(&conn->gc_calls, c, cl_entry);
	return c;
}

/*
 * Server: keeps the connection's count of buffered request bytes (raw
 * input plus the deframer's partial message) in step with the call's.
 */
static void
call_account(struct grpc_call *c)
{
	struct grpc_conn *conn = c->cl_conn;
	size_t held;

	if (!c->cl_server)
		return;
	held = buf_len(&c->cl_rbuf) + grpc_deframer_held(&c->cl_df);
	conn->gc_buffered = conn->gc_buffered - c->cl_held + held;
	c->cl_held = held;
}

static void
conn_report_limit(struct grpc_conn *conn, enum grpc_limit what)
{
	struct grpc_server *srv = conn->gc_srv;

	if (srv != NULL && srv->gs_ops != NULL && srv->gs_ops->on_limit != NULL)
		srv->gs_ops->on_limit(conn, what, srv->gs_arg);
}

static void
on_call_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
call_free(struct grpc_call *c)
{
	LIST_REMOVE(c, cl_entry);
	c->cl_conn->gc_buffered -= c->cl_held;
	if (c->cl_counted)
		c->cl_conn->gc_nstreams--;
	grpc_md_free(&c->cl_md);
	grpc_md_free(&c->cl_trailers);
	grpc_md_free(&c->cl_send_trailers);
	grpc_deframer_free(&c->cl_df);
	buf_free(&c->cl_rbuf);
	buf_free(&c->cl_wbuf);
	free(c->cl_path);
	free(c->cl_message);
	free(c->cl_local_message);
	if (c->cl_timer_used) {
		c->cl_timer.data = c;
		uv_close((uv_handle_t *)&c->cl_timer, on_call_timer_closed);
	} else
		free(c);
}

/* Delivers on_end once, then frees the call. */
static void
call_finalize(struct grpc_call *c, int status, const char *msg)
{
	if (c->cl_life == LIFE_ENDED)
		return;
	call_set_life(c, LIFE_ENDED);
	if (c->cl_timer_used)
		uv_timer_stop(&c->cl_timer);
	if (c->cl_ops != NULL && c->cl_ops->on_end != NULL)
		c->cl_ops->on_end(c, status, msg != NULL ? msg : "", c->cl_arg);
	call_free(c);
}

static nghttp2_session *
call_session(struct grpc_call *c)
{
	return h2_session(c->cl_conn->gc_h2);
}

static void
call_flush(struct grpc_call *c)
{
	h2_flush(c->cl_conn->gc_h2);
}

/* Sets the status a client call ends with, unless one is set already. */
static void
call_set_local(struct grpc_call *c, int status, const char *msg)
{
	if (c->cl_local_status >= 0)
		return;
	c->cl_local_status = status;
	free(c->cl_local_message);
	c->cl_local_message = strdup(msg);
}

/* Fails a call from our side: the client resets, the server answers. */
static void
call_fail(struct grpc_call *c, int status, const char *msg)
{
	call_drop(c);
	if (c->cl_server) {
		grpc_call_finish(c, status, msg, NULL);
		return;
	}
	call_set_local(c, status, msg);
	if (c->cl_life == LIFE_OPEN) {
		nghttp2_submit_rst_stream(call_session(c), NGHTTP2_FLAG_NONE,
		                          c->cl_stream_id, NGHTTP2_CANCEL);
		call_flush(c);
	}
}

/* Sending. */

/* Custom metadata entries that go on the wire (reserved keys do not). */
static size_t
md_wire_count(const struct grpc_mdlist *ml)
{
	size_t i, n = 0;

	for (i = 0; ml != NULL && i < ml->ml_n; i++)
		if (!grpc_meta_key_reserved(ml->ml_md[i].md_key,
		                            strlen(ml->ml_md[i].md_key)))
			n++;
	return n;
}

/*
 * The trailers, as finish asked for them.  If they cannot be built (out of
 * memory), the call ends with INTERNAL instead: a status that silently
 * lost its message or metadata would be a lie.
 */
static void
server_submit_trailers(struct grpc_call *c)
{
	struct nvlist l = {0};

	nv_add_status(&l, c->cl_status, c->cl_message);
	nv_add_md(&l, &c->cl_send_trailers);
	if (l.overflow) {
		nv_free(&l);
		memset(&l, 0, sizeof(l));
		nv_add_status(&l, GRPC_STATUS_INTERNAL, NULL);
	}
	nghttp2_submit_trailer(call_session(c), c->cl_stream_id, l.nv, l.n);
	nv_free(&l);
}

/*
 * Our END_STREAM is on the wire.  A server whose client is still sending
 * tells it to stop (RST_STREAM NO_ERROR, as gRPC servers do) so that the
 * stream does not linger half-closed.  Only now: a reset submitted before
 * the trailers were sent could overtake them.
 */
static void
call_on_end_sent(struct h2conn *h, void *st)
{
	struct grpc_call *c = st;

	if (c->cl_server && c->cl_recv != RECV_EOS && c->cl_life == LIFE_OPEN)
		nghttp2_submit_rst_stream(h2_session(h), NGHTTP2_FLAG_NONE,
		                          c->cl_stream_id, NGHTTP2_NO_ERROR);
}

static ssize_t
call_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *out, size_t len,
             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct grpc_call *c = src->ptr;
	size_t n = buf_len(&c->cl_wbuf);

	(void)s;
	(void)stream_id;
	(void)ud;
	if (n > len)
		n = len;
	if (n > 0) {
		memcpy(out, buf_data(&c->cl_wbuf), n);
		buf_consume(&c->cl_wbuf, n);
	}
	if (c->cl_above_lowat && buf_len(&c->cl_wbuf) < GRPC_CALL_LOWAT) {
		c->cl_above_lowat = 0;
		c->cl_want_writable = 1;
	}
	if (buf_len(&c->cl_wbuf) > 0)
		return (ssize_t)n;
	if (c->cl_send != SEND_CLOSING) {
		if (n > 0)
			return (ssize_t)n;
		c->cl_deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (c->cl_server) {
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		server_submit_trailers(c);
	}
	return (ssize_t)n;
}

static void
call_kick(struct grpc_call *c)
{
	if (c->cl_deferred && c->cl_life == LIFE_OPEN) {
		c->cl_deferred = 0;
		nghttp2_session_resume_data(call_session(c), c->cl_stream_id);
	}
	call_flush(c);
}

static int
server_submit_headers(struct grpc_call *c, const struct grpc_mdlist *md)
{
	nghttp2_data_provider prd = {.source.ptr = c,
	                             .read_callback = call_read_cb};
	struct nvlist l = {0};
	int rc;

	nv_add_str(&l, ":status", "200");
	nv_add_str(&l, "content-type", "application/grpc");
	nv_add_md(&l, md);
	if (l.overflow) {
		nv_free(&l);
		return -ENOMEM;
	}
	rc = nghttp2_submit_response(call_session(c), c->cl_stream_id, l.nv,
	                             l.n, &prd);
	nv_free(&l);
	if (rc != 0)
		return -ENOMEM;
	call_set_send(c, SEND_OPEN);
	return 0;
}

/*
 * Queues the 5-byte prefix of a len-byte message and makes room for the
 * message itself, which the caller appends at once and cannot fail to.  All
 * or nothing: a prefix queued without its message would corrupt the
 * stream, and a message queued must not be reported as failed.
 */
static int
call_send_begin(struct grpc_call *c, size_t len)
{
	uint8_t hdr[GRPC_FRAME_HDR_LEN];
	int rc;

	if (c->cl_life != LIFE_OPEN || c->cl_send == SEND_CLOSING)
		return -EPIPE;
	if ((c->cl_conn->gc_opts.go_max_send_message != 0 &&
	     len > c->cl_conn->gc_opts.go_max_send_message) ||
	    len > UINT32_MAX)
		return -EMSGSIZE;
	if ((rc = buf_reserve(&c->cl_wbuf, sizeof(hdr) + len)) != 0)
		return rc;
	if (c->cl_send == SEND_IDLE &&
	    (rc = server_submit_headers(c, NULL)) != 0)
		return rc;
	grpc_frame_header(hdr, (uint32_t)len);
	rc = buf_append(&c->cl_wbuf, hdr, sizeof(hdr));
	assert(rc == 0);
	return 0;
}

static void
call_send_end(struct grpc_call *c)
{
	if (buf_len(&c->cl_wbuf) >= GRPC_CALL_LOWAT)
		c->cl_above_lowat = 1;
	call_kick(c);
}

int
grpc_call_send(struct grpc_call *c, const uint8_t *msg, size_t len)
{
	int rc;

	if ((rc = call_send_begin(c, len)) != 0)
		return rc;
	rc = buf_append(&c->cl_wbuf, msg, len);
	assert(rc == 0);
	call_send_end(c);
	return 0;
}

/* protobuf-c's output, appended to the room call_send_begin() made. */
struct pb_sink {
	ProtobufCBuffer ps_base;
	struct buf *ps_buf;
};

static void
pb_sink_append(ProtobufCBuffer *base, size_t len, const uint8_t *data)
{
	struct pb_sink *sink = (struct pb_sink *)base;
	int rc;

	rc = buf_append(sink->ps_buf, data, len);
	assert(rc == 0);
	(void)rc;
}

int
grpc_call_send_pb(struct grpc_call *c, const ProtobufCMessage *m)
{
	struct pb_sink sink = {.ps_base.append = pb_sink_append,
	                       .ps_buf = &c->cl_wbuf};
	size_t len = protobuf_c_message_get_packed_size(m);
	size_t before;
	int rc;

	if ((rc = call_send_begin(c, len)) != 0)
		return rc;
	before = buf_len(&c->cl_wbuf);
	protobuf_c_message_pack_to_buffer(m, &sink.ps_base);
	assert(buf_len(&c->cl_wbuf) - before == len);
	(void)before;
	call_send_end(c);
	return 0;
}

size_t
grpc_call_queued(const struct grpc_call *c)
{
	return buf_len(&c->cl_wbuf);
}

int
grpc_call_close_send(struct grpc_call *c)
{
	if (c->cl_server)
		return -EINVAL;
	if (c->cl_send == SEND_CLOSING || c->cl_life == LIFE_ENDED)
		return -EALREADY;
	call_set_send(c, SEND_CLOSING);
	call_kick(c);
	return 0;
}

int
grpc_call_send_headers(struct grpc_call *c, const struct grpc_mdlist *md)
{
	int rc;

	if (!c->cl_server)
		return -EINVAL;
	if (c->cl_send != SEND_IDLE || c->cl_life != LIFE_OPEN)
		return -EALREADY;
	if (md_wire_count(md) > NV_MAX - 2)
		return -E2BIG;
	if ((rc = server_submit_headers(c, md)) == 0)
		call_flush(c);
	return rc;
}

int
grpc_call_finish(struct grpc_call *c, int status, const char *message,
                 const struct grpc_mdlist *trailers)
{
	size_t i;
	int rc;

	if (!c->cl_server)
		return -EINVAL;
	if (c->cl_send == SEND_CLOSING || c->cl_life != LIFE_OPEN)
		return -EALREADY;
	/* grpc-status and grpc-message come first; what does not fit fails. */
	if (md_wire_count(trailers) > NV_MAX - 4)
		return -E2BIG;
	free(c->cl_message);
	c->cl_message = NULL;
	grpc_md_free(&c->cl_send_trailers);
	if (message != NULL && (c->cl_message = strdup(message)) == NULL)
		return -ENOMEM;
	for (i = 0; trailers != NULL && i < trailers->ml_n; i++)
		if ((rc = grpc_md_add(&c->cl_send_trailers,
		                      trailers->ml_md[i].md_key,
		                      trailers->ml_md[i].md_value,
		                      trailers->ml_md[i].md_len)) != 0)
			return rc;
	c->cl_status = status;
	c->cl_have_status = 1;
	if (c->cl_timer_used)
		uv_timer_stop(&c->cl_timer);
	if (c->cl_send == SEND_IDLE) {
		/* Trailers-only: one HEADERS frame with END_STREAM. */
		struct nvlist l = {0};

		nv_add_str(&l, ":status", "200");
		nv_add_str(&l, "content-type", "application/grpc");
		nv_add_status(&l, status, message);
		nv_add_md(&l, trailers);
		if (l.overflow) {
			/* As in server_submit_trailers(). */
			nv_free(&l);
			memset(&l, 0, sizeof(l));
			nv_add_str(&l, ":status", "200");
			nv_add_str(&l, "content-type", "application/grpc");
			nv_add_status(&l, GRPC_STATUS_INTERNAL, NULL);
		}
		rc = nghttp2_submit_response(call_session(c), c->cl_stream_id,
		                             l.nv, l.n, NULL);
		nv_free(&l);
		if (rc != 0)
			return -ENOMEM;
		call_set_send(c, SEND_CLOSING);
		call_flush(c);
		return 0;
	}
	call_set_send(c, SEND_CLOSING);
	call_kick(c);
	return 0;
}

void
grpc_call_cancel(struct grpc_call *c)
{
	if (c->cl_life == LIFE_ENDED)
		return;
	call_drop(c);
	if (!c->cl_server)
		call_set_local(c, GRPC_STATUS_CANCELLED, "cancelled by client");
	if (c->cl_life != LIFE_OPEN)
		return;
	nghttp2_submit_rst_stream(call_session(c), NGHTTP2_FLAG_NONE,
	                          c->cl_stream_id, NGHTTP2_CANCEL);
	call_flush(c);
}

void
grpc_call_pause(struct grpc_call *c)
{
	/* Once all is delivered or dropped, there is nothing to hold. */
	if (c->cl_deliver == DELIVER_RUNNING)
		call_set_deliver(c, DELIVER_PAUSED);
}

void
grpc_call_resume(struct grpc_call *c)
{
	if (c->cl_deliver != DELIVER_PAUSED)
		return;
	call_set_deliver(c, DELIVER_RUNNING);
	if (c->cl_life == LIFE_ENDED)
		return;
	/* What waits is delivered from the loop (conn_on_deferred). */
	c->cl_want_process = 1;
	h2_defer(c->cl_conn->gc_h2);
}

const struct grpc_mdlist *
grpc_call_metadata(const struct grpc_call *c)
{
	return &c->cl_md;
}

const struct grpc_mdlist *
grpc_call_trailers(const struct grpc_call *c)
{
	return &c->cl_trailers;
}

const char *
grpc_call_path(const struct grpc_call *c)
{
	return c->cl_path != NULL ? c->cl_path : "";
}

struct grpc_conn *
grpc_call_conn(const struct grpc_call *c)
{
	return c->cl_conn;
}

uint64_t
grpc_call_timeout(const struct grpc_call *c)
{
	return c->cl_timeout_ms;
}

void
grpc_call_set_max_message(struct grpc_call *c, size_t max)
{
	grpc_deframer_set_max(&c->cl_df, max);
}

void
grpc_call_set_ops(struct grpc_call *c, const struct grpc_call_ops *ops,
                  void *arg)
{
	c->cl_ops = ops;
	c->cl_arg = arg;
}

/* Receiving. */

static int
deframe_status(ssize_t err, const char **msg)
{
	switch (err) {
	case -EMSGSIZE:
		*msg = "received message larger than the maximum";
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case -EPROTONOSUPPORT:
		*msg = "compressed message but no grpc-encoding was "
		       "negotiated";
		return GRPC_STATUS_INTERNAL;
	case -ENOMEM:
		*msg = "out of memory";
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	default:
		*msg = "malformed message framing";
		return GRPC_STATUS_INTERNAL;
	}
}

/*
 * After an input error: what was buffered is never delivered, so it goes
 * now rather than when the call ends.
 */
static void
call_drop_input(struct grpc_call *c)
{
	call_drop(c);
	buf_free(&c->cl_rbuf);
	grpc_deframer_free(&c->cl_df);
	call_account(c);
}

/*
 * Delivers complete messages while the call is not paused, releasing flow
 * control for what the deframer took.
 */
static void
call_process(struct grpc_call *c)
{
	const char *why;
	uint8_t *msg;
	size_t len;
	ssize_t n;

	while (c->cl_deliver == DELIVER_RUNNING && c->cl_life != LIFE_ENDED) {
		if (grpc_deframer_take(&c->cl_df, &msg, &len)) {
			if (c->cl_ops != NULL && c->cl_ops->on_message != NULL)
				c->cl_ops->on_message(c, msg, len, c->cl_arg);
			free(msg);
			continue;
		}
		if (buf_len(&c->cl_rbuf) == 0)
			break;
		n = grpc_deframer_feed(&c->cl_df, buf_data(&c->cl_rbuf),
		                       buf_len(&c->cl_rbuf));
		if (n < 0) {
			int st = deframe_status(n, &why);

			if (n == -EMSGSIZE && c->cl_server)
				conn_report_limit(c->cl_conn,
				                  GRPC_LIMIT_MESSAGE);
			call_drop_input(c);
			call_fail(c, st, why);
			return;
		}
		buf_consume(&c->cl_rbuf, (size_t)n);
		h2_consume(c->cl_conn->gc_h2, c->cl_stream_id, (size_t)n);
		call_account(c);
	}
	call_account(c);
	/*
	 * Once the peer has half-closed no more input can arrive, so an
	 * emptied read queue is given back: a device's long poll keeps its
	 * call open for hours after its one request.
	 */
	if (c->cl_recv == RECV_EOS && buf_len(&c->cl_rbuf) == 0)
		buf_free(&c->cl_rbuf);
	if (c->cl_deliver != DELIVER_RUNNING || c->cl_life == LIFE_ENDED ||
	    c->cl_recv != RECV_EOS || buf_len(&c->cl_rbuf) > 0)
		return;
	call_set_deliver(c, DELIVER_DONE);
	if (grpc_deframer_partial(&c->cl_df)) {
		call_fail(c, GRPC_STATUS_INTERNAL,
		          "stream ended inside a message");
		return;
	}
	if (c->cl_server && c->cl_ops != NULL &&
	    c->cl_ops->on_half_close != NULL)
		c->cl_ops->on_half_close(c, c->cl_arg);
}

static void
call_on_data(struct h2conn *h, void *st, const uint8_t *data, size_t len)
{
	struct grpc_call *c = st;
	struct grpc_conn *conn = c->cl_conn;
	int rc;

	if (c->cl_deliver == DELIVER_DROPPED || c->cl_life == LIFE_ENDED ||
	    c->cl_bad_request) {
		h2_consume(h, c->cl_stream_id, len);
		return;
	}
	if (c->cl_server && !conn->gc_trusted &&
	    conn->gc_opts.go_preauth_buffer != 0 &&
	    conn->gc_buffered + len > conn->gc_opts.go_preauth_buffer) {
		/* Flow control alone would let every stream fill a window. */
		h2_consume(h, c->cl_stream_id, len);
		conn_report_limit(conn, GRPC_LIMIT_BUFFER);
		call_drop_input(c);
		call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		          "too much request data before authentication");
		return;
	}
	if ((rc = buf_append(&c->cl_rbuf, data, len)) != 0) {
		h2_consume(h, c->cl_stream_id, len);
		call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	call_process(c);
}

static void
call_on_data_end(struct h2conn *h, void *st)
{
	struct grpc_call *c = st;

	(void)h;
	call_set_recv(c, RECV_EOS);
	if (!c->cl_server && c->cl_life == LIFE_OPEN) {
		/* END_STREAM on DATA: the server sent no trailers. */
		call_set_local(c, GRPC_STATUS_INTERNAL,
		               "server closed the stream without a status");
	}
	call_process(c);
}

static int
set_string(char **dst, const uint8_t *v, size_t len)
{
	char *s;

	if ((s = strndup((const char *)v, len)) == NULL)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

/* Stores one custom metadata entry, decoding "-bin" values. */
static int
call_store_md(struct grpc_call *c, struct grpc_mdlist *ml, const nghttp2_nv *nv)
{
	char key[256];
	uint8_t *bin;
	size_t binlen;
	int rc;

	if (nv->namelen >= sizeof(key) ||
	    !grpc_meta_key_valid((const char *)nv->name, nv->namelen))
		return 0; /* not ours to judge; ignore it */
	memcpy(key, nv->name, nv->namelen);
	key[nv->namelen] = '\0';
	if (grpc_meta_key_reserved(key, nv->namelen))
		return 0;
	if (grpc_meta_key_is_bin(key, nv->namelen)) {
		if (grpc_base64_decode((const char *)nv->value, nv->valuelen,
		                       &bin, &binlen) != 0)
			return 0;
		rc = grpc_md_add(ml, key, bin, binlen);
		free(bin);
	} else
		rc = grpc_md_add(ml, key, nv->value, nv->valuelen);
	(void)c;
	return rc == -EINVAL ? 0 : rc;
}

static int
nv_is(const nghttp2_nv *nv, const char *name)
{
	return nv->namelen == strlen(name) &&
	       memcmp(nv->name, name, nv->namelen) == 0;
}

static int
content_type_ok(const nghttp2_nv *nv)
{
	static const char ct[] = "application/grpc";

	return nv->valuelen >= sizeof(ct) - 1 &&
	       memcmp(nv->value, ct, sizeof(ct) - 1) == 0 &&
	       (nv->valuelen == sizeof(ct) - 1 ||
	        nv->value[sizeof(ct) - 1] == '+' ||
	        nv->value[sizeof(ct) - 1] == ';');
}

static int
call_on_header(struct h2conn *h, void *st, const nghttp2_nv *nv)
{
	struct grpc_call *c = st;
	uint64_t ms;
	int code;

	(void)h;
	c->cl_md_bytes += nv->namelen + nv->valuelen + 32;
	if (c->cl_md_bytes > GRPC_MAX_METADATA)
		return -1; /* resets the stream */
	if (c->cl_server) {
		if (nv_is(nv, ":path"))
			return set_string(&c->cl_path, nv->value, nv->valuelen);
		if (nv_is(nv, ":method")) {
			if (nv->valuelen != 4 || memcmp(nv->value, "POST", 4))
				c->cl_bad_request = 1;
			return 0;
		}
		if (nv_is(nv, "content-type")) {
			if (!content_type_ok(nv))
				c->cl_bad_request = 1;
			return 0;
		}
		if (nv_is(nv, "grpc-timeout")) {
			if (grpc_timeout_parse((const char *)nv->value,
			                       nv->valuelen, &ms) == 0)
				c->cl_timeout_ms = ms;
			return 0;
		}
		if (nv->namelen > 0 && nv->name[0] == ':')
			return 0;
		return call_store_md(c, &c->cl_md, nv);
	}
	if (nv_is(nv, ":status")) {
		c->cl_http_status = 0;
		for (size_t i = 0; i < nv->valuelen && i < 3; i++)
			c->cl_http_status =
			    c->cl_http_status * 10 + (nv->value[i] - '0');
		return 0;
	}
	if (nv_is(nv, "grpc-status")) {
		if (grpc_status_parse((const char *)nv->value, nv->valuelen,
		                      &code) == 0) {
			c->cl_status = code;
			c->cl_have_status = 1;
		}
		return 0;
	}
	if (nv_is(nv, "grpc-message")) {
		char *dec;
		size_t declen;

		if (grpc_percent_decode((const char *)nv->value, nv->valuelen,
		                        &dec, &declen) != 0)
			return -1;
		free(c->cl_message);
		c->cl_message = dec;
		return 0;
	}
	if (nv->namelen > 0 && nv->name[0] == ':')
		return 0;
	return call_store_md(
	    c, c->cl_recv != RECV_HEADERS ? &c->cl_trailers : &c->cl_md, nv);
}

static void
on_call_deadline(uv_timer_t *t)
{
	struct grpc_call *c = t->data;

	if (c->cl_life == LIFE_ENDED)
		return;
	if (c->cl_server) {
		call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED,
		          "deadline exceeded");
		return;
	}
	call_set_local(c, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
	grpc_call_cancel(c);
}

static void
call_start_deadline(struct grpc_call *c, uv_loop_t *loop)
{
	if (c->cl_timeout_ms == 0)
		return;
	uv_timer_init(loop, &c->cl_timer);
	c->cl_timer.data = c;
	c->cl_timer_used = 1;
	uv_timer_start(&c->cl_timer, on_call_deadline, c->cl_timeout_ms, 0);
}

static void
server_dispatch(struct grpc_call *c)
{
	struct grpc_server *srv = c->cl_conn->gc_srv;
	char msg[300];
	size_t i;

	if (c->cl_bad_request || c->cl_path == NULL) {
		call_drop(c);
		grpc_call_finish(c, GRPC_STATUS_INTERNAL,
		                 "not a grpc request (method must be POST, "
		                 "content-type application/grpc)",
		                 NULL);
		return;
	}
	call_start_deadline(c, srv->gs_loop);
	for (i = 0; i < srv->gs_nmethods; i++) {
		if (strcmp(srv->gs_methods[i].gm_path, c->cl_path) != 0)
			continue;
		srv->gs_methods[i].gm_fn(c, srv->gs_methods[i].gm_arg);
		return;
	}
	call_drop(c);
	snprintf(msg, sizeof(msg), "unknown method '%.256s'", c->cl_path);
	grpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
}

static void
call_on_headers_end(struct h2conn *h, void *st, int end_stream)
{
	struct grpc_call *c = st;
	int first = c->cl_recv == RECV_HEADERS;

	(void)h;
	call_set_recv(c, end_stream ? RECV_EOS : RECV_OPEN);
	if (c->cl_server) {
		if (first)
			server_dispatch(c);
		if (end_stream && c->cl_life != LIFE_ENDED)
			call_process(c);
	} else if (first && !end_stream) {
		if (c->cl_ops->on_headers != NULL)
			c->cl_ops->on_headers(c, c->cl_arg);
	}
	if (!c->cl_server && end_stream && c->cl_send != SEND_CLOSING &&
	    c->cl_life == LIFE_OPEN)
		/* The server is done; stop our half too. */
		nghttp2_submit_rst_stream(call_session(c), NGHTTP2_FLAG_NONE,
		                          c->cl_stream_id, NGHTTP2_NO_ERROR);
}

static int
http_to_grpc_status(int http)
{
	switch (http) {
	case 400:
		return GRPC_STATUS_INTERNAL;
	case 401:
		return GRPC_STATUS_UNAUTHENTICATED;
	case 403:
		return GRPC_STATUS_PERMISSION_DENIED;
	case 404:
		return GRPC_STATUS_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504:
		return GRPC_STATUS_UNAVAILABLE;
	default:
		return GRPC_STATUS_UNKNOWN;
	}
}

static void
call_on_stream_close(struct h2conn *h, void *st, uint32_t error_code)
{
	struct grpc_call *c = st;
	char msg[128];

	(void)h;
	call_set_life(c, LIFE_CLOSED);
	if (c->cl_server) {
		if (c->cl_have_status && c->cl_send == SEND_CLOSING &&
		    (c->cl_recv == RECV_EOS || error_code == NGHTTP2_NO_ERROR))
			call_finalize(c, c->cl_status, c->cl_message);
		else
			call_finalize(c, GRPC_STATUS_CANCELLED,
			              "call cancelled by the client");
		return;
	}
	if (c->cl_local_status >= 0) {
		call_finalize(c, c->cl_local_status, c->cl_local_message);
		return;
	}
	if (c->cl_http_status != 0 && c->cl_http_status != 200) {
		snprintf(msg, sizeof(msg), "http status %d", c->cl_http_status);
		call_finalize(c, http_to_grpc_status(c->cl_http_status), msg);
		return;
	}
	if (c->cl_have_status) {
		call_finalize(c, c->cl_status, c->cl_message);
		return;
	}
	switch (error_code) {
	case NGHTTP2_REFUSED_STREAM:
		call_finalize(c, GRPC_STATUS_UNAVAILABLE,
		              "stream refused by the server");
		break;
	case NGHTTP2_CANCEL:
		call_finalize(c, GRPC_STATUS_CANCELLED,
		              "stream cancelled by the server");
		break;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		call_finalize(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		              "server says enhance your calm");
		break;
	default:
		snprintf(msg, sizeof(msg),
		         "stream closed without a status (http/2 error %s)",
		         nghttp2_http2_strerror(error_code));
		call_finalize(c, GRPC_STATUS_INTERNAL, msg);
		break;
	}
}

/* Connections. */

static void
conn_on_ready(struct h2conn *h, void *arg)
{
	struct grpc_conn *conn = arg;

	(void)h;
	conn->gc_ready = 1;
	if (conn->gc_srv != NULL) {
		if (conn->gc_srv->gs_ops != NULL &&
		    conn->gc_srv->gs_ops->on_conn_open != NULL)
			conn->gc_srv->gs_ops->on_conn_open(
			    conn, conn->gc_srv->gs_arg);
		return;
	}
	if (conn->gc_ops->on_ready != NULL)
		conn->gc_ops->on_ready(conn, conn->gc_arg);
}

static void *
conn_on_stream_open(struct h2conn *h, int32_t stream_id, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_call *c;

	(void)h;
	if (conn->gc_srv == NULL || conn->gc_srv->gs_shutdown)
		return NULL;
	if (!conn->gc_trusted && conn->gc_opts.go_preauth_streams != 0 &&
	    conn->gc_nstreams >= conn->gc_opts.go_preauth_streams) {
		/* A peer ignoring our SETTINGS; the stream is refused. */
		conn_report_limit(conn, GRPC_LIMIT_STREAMS);
		return NULL;
	}
	if ((c = call_new(conn, 1)) == NULL)
		return NULL;
	c->cl_stream_id = stream_id;
	c->cl_counted = 1;
	conn->gc_nstreams++;
	return c;
}

/*
 * Tells calls that wanted room that there is some.  h2.c runs this with
 * its flushes deferred, so nothing here can end a call under us.
 */
static void
conn_on_flushed(struct h2conn *h, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_call *c, *next;

	(void)h;
	for (c = LIST_FIRST(&conn->gc_calls); c != NULL; c = next) {
		next = LIST_NEXT(c, cl_entry);
		if (!c->cl_want_writable || c->cl_life == LIFE_ENDED)
			continue;
		c->cl_want_writable = 0;
		if (c->cl_ops != NULL && c->cl_ops->on_writable != NULL)
			c->cl_ops->on_writable(c, c->cl_arg);
	}
}

/* Delivers the input of calls resumed since the loop last came by. */
static void
conn_on_deferred(struct h2conn *h, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_call *c, *next;

	(void)h;
	for (c = LIST_FIRST(&conn->gc_calls); c != NULL; c = next) {
		next = LIST_NEXT(c, cl_entry);
		if (!c->cl_want_process)
			continue;
		c->cl_want_process = 0;
		call_process(c);
	}
}

static void
conn_on_goaway(struct h2conn *h, uint32_t error_code, const uint8_t *debug,
               size_t debuglen, void *arg)
{
	struct grpc_conn *conn = arg;
	char text[128];
	size_t n = debuglen < sizeof(text) - 1 ? debuglen : sizeof(text) - 1;

	if (n > 0)
		memcpy(text, debug, n);
	text[n] = '\0';
	if (conn->gc_srv != NULL)
		return;
	/* As gRPC Core clients do: back off our keepalive pings. */
	if (error_code == NGHTTP2_ENHANCE_YOUR_CALM &&
	    strcmp(text, "too_many_pings") == 0 && h2_ping_interval(h) > 0) {
		unsigned ms = h2_ping_interval(h);
		unsigned max = conn->gc_opts.go_ping_interval_max_ms;

		ms = ms > UINT32_MAX / 2 ? UINT32_MAX : ms * 2;
		if (max > 0 && ms > max)
			ms = max > h2_ping_interval(h) ? max
			                               : h2_ping_interval(h);
		h2_set_ping_interval(h, ms);
	}
	if (conn->gc_ops->on_goaway != NULL)
		conn->gc_ops->on_goaway(conn, error_code, text, conn->gc_arg);
}

static void
conn_on_closed(struct h2conn *h, int err, const char *reason, void *arg)
{
	struct grpc_conn *conn = arg;
	struct grpc_server *srv = conn->gc_srv;
	struct grpc_call *c;
	char msg[256];

	(void)h;
	snprintf(msg, sizeof(msg), "connection closed: %s", reason);
	/* Streams get no close callback of their own now; end them here. */
	while ((c = LIST_FIRST(&conn->gc_calls)) != NULL) {
		assert(c->cl_life == LIFE_OPEN);
		call_set_life(c, LIFE_CLOSED);
		if (c->cl_server)
			call_finalize(c, GRPC_STATUS_CANCELLED, msg);
		else if (c->cl_local_status >= 0)
			call_finalize(c, c->cl_local_status,
			              c->cl_local_message);
		else
			call_finalize(c, GRPC_STATUS_UNAVAILABLE, msg);
	}
	if (srv != NULL) {
		LIST_REMOVE(conn, gc_entry);
		if (srv->gs_ops != NULL && srv->gs_ops->on_conn_closed != NULL)
			srv->gs_ops->on_conn_closed(conn, err, reason,
			                            srv->gs_arg);
	} else if (conn->gc_ops->on_closed != NULL)
		conn->gc_ops->on_closed(conn, err, reason, conn->gc_arg);
	free(conn->gc_authority);
	free(conn);
	if (srv != NULL)
		server_conn_gone(srv);
}

static const struct h2_stream_ops grpc_h2_ops = {
    .on_ready = conn_on_ready,
    .on_stream_open = conn_on_stream_open,
    .on_header = call_on_header,
    .on_headers_end = call_on_headers_end,
    .on_data = call_on_data,
    .on_data_end = call_on_data_end,
    .on_end_sent = call_on_end_sent,
    .on_stream_close = call_on_stream_close,
    .on_flushed = conn_on_flushed,
    .on_deferred = conn_on_deferred,
    .on_goaway = conn_on_goaway,
    .on_closed = conn_on_closed,
};

static void
opts_defaults(struct grpc_opts *o, const struct grpc_opts *in)
{
	if (in != NULL)
		*o = *in;
	else
		memset(o, 0, sizeof(*o));
	if (o->go_max_message == 0)
		o->go_max_message = GRPC_DEFAULT_MAX_MESSAGE;
}

static struct h2_opts
h2_opts_from(const struct grpc_opts *o, int server)
{
	struct h2_opts h = {0};

	h.ho_server = server;
	h.ho_max_streams = o->go_max_streams;
	h.ho_ping_interval_ms = o->go_ping_interval_ms;
	h.ho_ping_timeout_ms = o->go_ping_timeout_ms;
	return h;
}

static int
conn_new_client(const struct grpc_opts *opts, const struct grpc_conn_ops *ops,
                void *arg, struct grpc_conn **out)
{
	struct grpc_conn *conn;
	struct h2_opts ho;
	int rc;

	if ((conn = calloc(1, sizeof(*conn))) == NULL)
		return -ENOMEM;
	opts_defaults(&conn->gc_opts, opts);
	conn->gc_ops = ops;
	conn->gc_arg = arg;
	LIST_INIT(&conn->gc_calls);
	ho = h2_opts_from(&conn->gc_opts, 0);
	if ((rc = h2_new(&ho, &grpc_h2_ops, conn, &conn->gc_h2)) != 0) {
		free(conn);
		return rc;
	}
	*out = conn;
	return 0;
}

static void
conn_discard(struct grpc_conn *conn)
{
	h2_discard(conn->gc_h2);
	free(conn->gc_authority);
	free(conn);
}

int
grpc_conn_connect(uv_loop_t *loop, const char *host, uint16_t port,
                  struct tls_ctx *ctx, const struct grpc_opts *opts,
                  const struct grpc_conn_ops *ops, void *arg,
                  struct grpc_conn **out)
{
	struct grpc_conn *conn;
	struct xport *x;
	char auth[300];
	int rc;

	if (host == NULL || strlen(host) > 255)
		return -EINVAL;
	if ((rc = conn_new_client(opts, ops, arg, &conn)) != 0)
		return rc;
	conn->gc_loop = loop;
	if (strchr(host, ':') != NULL)
		snprintf(auth, sizeof(auth), "[%s]:%u", host, port);
	else
		snprintf(auth, sizeof(auth), "%s:%u", host, port);
	conn->gc_tls = ctx != NULL;
	if ((conn->gc_authority = strdup(auth)) == NULL) {
		conn_discard(conn);
		return -ENOMEM;
	}
	rc = xport_connect(loop, host, port, ctx, &conn->gc_opts.go_xport,
	                   &h2_xport_cb, conn->gc_h2, &x);
	if (rc != 0) {
		conn_discard(conn);
		return rc;
	}
	h2_attach(conn->gc_h2, x);
	*out = conn;
	return 0;
}

int
grpc_conn_connect_unix(uv_loop_t *loop, const char *path,
                       const struct grpc_opts *opts,
                       const struct grpc_conn_ops *ops, void *arg,
                       struct grpc_conn **out)
{
	struct grpc_conn *conn;
	struct xport *x;
	int rc;

	if ((rc = conn_new_client(opts, ops, arg, &conn)) != 0)
		return rc;
	conn->gc_loop = loop;
	if ((conn->gc_authority = strdup("localhost")) == NULL) {
		conn_discard(conn);
		return -ENOMEM;
	}
	if ((rc = xport_connect_unix(loop, path, &h2_xport_cb, conn->gc_h2,
	                             &x)) != 0) {
		conn_discard(conn);
		return rc;
	}
	h2_attach(conn->gc_h2, x);
	*out = conn;
	return 0;
}

void
grpc_conn_close(struct grpc_conn *conn, int err)
{
	if (err == 0)
		h2_shutdown(conn->gc_h2);
	else
		h2_close(conn->gc_h2, err, ncg_strerror(err));
}

const char *
grpc_conn_peer(const struct grpc_conn *conn)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_peer(x) : "(closed)";
}

int
grpc_conn_peer_uid(const struct grpc_conn *conn, uid_t *uid)
{
	struct xport *x = h2_xport(conn->gc_h2);

	return x != NULL ? xport_peer_uid(x, uid) : -ENOENT;
}

uv_loop_t *
grpc_conn_loop(const struct grpc_conn *conn)
{
	return conn->gc_loop;
}

void *
grpc_conn_arg(const struct grpc_conn *conn)
{
	return conn->gc_arg;
}

void
grpc_conn_set_arg(struct grpc_conn *conn, void *arg)
{
	conn->gc_arg = arg;
}

void
grpc_conn_set_trusted(struct grpc_conn *conn)
{
	struct grpc_server *srv = conn->gc_srv;

	if (conn->gc_trusted || srv == NULL)
		return;
	conn->gc_trusted = 1;
	if (conn->gc_opts.go_preauth_streams != 0)
		h2_set_max_streams(conn->gc_h2, conn->gc_opts.go_max_streams);
	if (srv->gs_ops != NULL && srv->gs_ops->on_conn_trusted != NULL)
		srv->gs_ops->on_conn_trusted(conn, srv->gs_arg);
}

int
grpc_conn_trusted(const struct grpc_conn *conn)
{
	return conn->gc_trusted;
}

unsigned
grpc_conn_pings_acked(const struct grpc_conn *conn)
{
	return h2_pings_acked(conn->gc_h2);
}

unsigned
grpc_conn_ping_interval(const struct grpc_conn *conn)
{
	return h2_ping_interval(conn->gc_h2);
}

int
grpc_call_start(struct grpc_conn *conn, const char *path,
                const struct grpc_mdlist *md, uint64_t timeout_ms,
                const struct grpc_call_ops *ops, void *arg,
                struct grpc_call **out)
{
	nghttp2_data_provider prd;
	struct nvlist l = {0};
	struct grpc_call *c;
	char tmo[16];
	int32_t id;

	if (path == NULL || path[0] != '/' || ops == NULL)
		return -EINVAL;
	if (!conn->gc_ready || h2_is_closing(conn->gc_h2) ||
	    conn->gc_srv != NULL)
		return NCG_ECLOSED;
	if ((c = call_new(conn, 0)) == NULL)
		return -ENOMEM;
	c->cl_ops = ops;
	c->cl_arg = arg;
	c->cl_timeout_ms = timeout_ms;
	if ((c->cl_path = strdup(path)) == NULL)
		goto nomem;
	nv_add_str(&l, ":method", "POST");
	nv_add_str(&l, ":scheme", conn->gc_tls ? "https" : "http");
	nv_add_str(&l, ":path", path);
	nv_add_str(&l, ":authority", conn->gc_authority);
	nv_add_str(&l, "te", "trailers");
	nv_add_str(&l, "content-type", "application/grpc");
	nv_add_str(&l, "user-agent", GRPC_USER_AGENT);
	if (timeout_ms > 0) {
		grpc_timeout_format(timeout_ms, tmo);
		nv_add_str(&l, "grpc-timeout", tmo);
	}
	nv_add_md(&l, md);
	if (l.overflow) {
		nv_free(&l);
		call_free(c);
		return -EINVAL;
	}
	prd.source.ptr = c;
	prd.read_callback = call_read_cb;
	id = nghttp2_submit_request(h2_session(conn->gc_h2), NULL, l.nv, l.n,
	                            &prd, c);
	nv_free(&l);
	if (id < 0)
		goto nomem;
	c->cl_stream_id = id;
	call_start_deadline(c, conn->gc_loop);
	h2_flush(conn->gc_h2);
	*out = c;
	return 0;
nomem:
	nv_free(&l);
	call_free(c);
	return -ENOMEM;
}

/* Servers. */

int
grpc_server_new(uv_loop_t *loop, const struct grpc_opts *opts,
                const struct grpc_server_ops *ops, void *arg,
                struct grpc_server **out)
{
	struct grpc_server *srv;

	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		return -ENOMEM;
	srv->gs_loop = loop;
	opts_defaults(&srv->gs_opts, opts);
	srv->gs_ops = ops;
	srv->gs_arg = arg;
	LIST_INIT(&srv->gs_conns);
	*out = srv;
	return 0;
}

int
grpc_server_add_method(struct grpc_server *srv, const char *path,
                       grpc_handler_fn fn, void *arg)
{
	struct grpc_method *m;
	size_t i;

	for (i = 0; i < srv->gs_nmethods; i++)
		if (strcmp(srv->gs_methods[i].gm_path, path) == 0)
			return -EEXIST;
	m = reallocarray(srv->gs_methods, srv->gs_nmethods + 1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	srv->gs_methods = m;
	m = &srv->gs_methods[srv->gs_nmethods];
	if ((m->gm_path = strdup(path)) == NULL)
		return -ENOMEM;
	m->gm_fn = fn;
	m->gm_arg = arg;
	srv->gs_nmethods++;
	return 0;
}

/*
 * Out of memory: accepts the pending connection and closes it, so that the
 * backlog does not spin.  The handle matches the listener's kind: TCP for
 * the device port, a pipe for the operator socket.
 */
static void
listener_drop_one(uv_stream_t *s)
{
	union {
		uv_handle_t h;
		uv_stream_t st;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} * u;
	int rc;

	if ((u = malloc(sizeof(*u))) == NULL)
		return;
	rc = s->type == UV_NAMED_PIPE ? uv_pipe_init(s->loop, &u->pipe, 0)
	                              : uv_tcp_init(s->loop, &u->tcp);
	if (rc != 0) {
		free(u);
		return;
	}
	(void)uv_accept(s, &u->st); /* nothing may be pending after all */
	uv_close(&u->h, (uv_close_cb)free);
}

static void
on_new_connection(uv_stream_t *s, int status)
{
	struct grpc_listener *l = s->data;
	struct grpc_server *srv = l->gl_srv;
	struct grpc_conn *conn;
	struct h2_opts ho;
	struct xport *x;
	int rc;

	if (status < 0 || srv->gs_shutdown)
		return;
	if ((conn = calloc(1, sizeof(*conn))) == NULL)
		goto refuse;
	conn->gc_srv = srv;
	conn->gc_loop = srv->gs_loop;
	conn->gc_opts = srv->gs_opts;
	conn->gc_tls = l->gl_ctx != NULL;
	LIST_INIT(&conn->gc_calls);
	ho = h2_opts_from(&conn->gc_opts, 1);
	if (conn->gc_opts.go_preauth_streams != 0 &&
	    (ho.ho_max_streams == 0 ||
	     conn->gc_opts.go_preauth_streams < ho.ho_max_streams))
		ho.ho_max_streams = conn->gc_opts.go_preauth_streams;
	if (h2_new(&ho, &grpc_h2_ops, conn, &conn->gc_h2) != 0) {
		free(conn);
		goto refuse;
	}
	if (xport_accept(s, l->gl_ctx, &srv->gs_opts.go_xport, &h2_xport_cb,
	                 conn->gc_h2, &x) != 0) {
		conn_discard(conn);
		return;
	}
	h2_attach(conn->gc_h2, x);
	LIST_INSERT_HEAD(&srv->gs_conns, conn, gc_entry);
	if (srv->gs_ops != NULL && srv->gs_ops->on_conn_accept != NULL &&
	    (rc = srv->gs_ops->on_conn_accept(conn, srv->gs_arg)) != 0)
		h2_close(conn->gc_h2, rc, "connection refused by a limit");
	return;
refuse:
	listener_drop_one(s);
}

static struct grpc_listener *
listener_new(struct grpc_server *srv, struct tls_ctx *ctx)
{
	struct grpc_listener *l;

	if (srv->gs_nlisteners == GRPC_MAX_LISTENERS)
		return NULL;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->gl_srv = srv;
	l->gl_ctx = ctx;
	l->gl_h.handle.data = l;
	return l;
}

static void
on_listener_closed(uv_handle_t *h)
{
	struct grpc_listener *l = h->data;
	struct grpc_server *srv = l->gl_srv;

	free(l);
	if (srv != NULL && srv->gs_shutdown) {
		srv->gs_open_listeners--;
		server_conn_gone(srv);
	}
}

int
grpc_server_listen(struct grpc_server *srv, const char *host, uint16_t port,
                   struct tls_ctx *ctx)
{
	struct sockaddr_storage ss;
	struct grpc_listener *l;
	int len = sizeof(ss);
	int rc;

	memset(&ss, 0, sizeof(ss));
	if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0 &&
	    uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0)
		return -EINVAL;
	if ((l = listener_new(srv, ctx)) == NULL)
		return -ENOMEM;
	uv_tcp_init(srv->gs_loop, &l->gl_h.tcp);
	l->gl_h.handle.data = l;
	if ((rc = uv_tcp_bind(&l->gl_h.tcp, (struct sockaddr *)&ss, 0)) < 0 ||
	    (rc = uv_listen(&l->gl_h.stream, 511, on_new_connection)) < 0) {
		l->gl_srv = NULL;
		uv_close(&l->gl_h.handle, on_listener_closed);
		return rc;
	}
	if (uv_tcp_getsockname(&l->gl_h.tcp, (struct sockaddr *)&ss, &len) ==
	    0) {
		if (ss.ss_family == AF_INET6)
			srv->gs_port =
			    ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		else
			srv->gs_port =
			    ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	srv->gs_listeners[srv->gs_nlisteners++] = l;
	return 0;
}

int
grpc_server_listen_unix(struct grpc_server *srv, const char *path, int mode)
{
	struct grpc_listener *l;
	int rc;

	if ((l = listener_new(srv, NULL)) == NULL)
		return -ENOMEM;
	uv_pipe_init(srv->gs_loop, &l->gl_h.pipe, 0);
	l->gl_h.handle.data = l;
	/* A socket file left by a previous run would make bind fail. */
	(void)unlink(path);
	if ((rc = uv_pipe_bind(&l->gl_h.pipe, path)) < 0 ||
	    (rc = chmod(path, (mode_t)mode) < 0 ? -errno : 0) < 0 ||
	    (rc = uv_listen(&l->gl_h.stream, 128, on_new_connection)) < 0) {
		l->gl_srv = NULL;
		uv_close(&l->gl_h.handle, on_listener_closed);
		return rc;
	}
	srv->gs_listeners[srv->gs_nlisteners++] = l;
	return 0;
}

uint16_t
grpc_server_port(const struct grpc_server *srv)
{
	return srv->gs_port;
}

static void
server_free(struct grpc_server *srv)
{
	size_t i;

	for (i = 0; i < srv->gs_nmethods; i++)
		free(srv->gs_methods[i].gm_path);
	free(srv->gs_methods);
	free(srv);
}

static void
on_grace_closed(uv_handle_t *h)
{
	struct grpc_server *srv = h->data;
	void (*done)(void *) = srv->gs_done;
	void *arg = srv->gs_done_arg;

	server_free(srv);
	if (done != NULL)
		done(arg);
}

/*
 * Called whenever a listener or a connection goes away.  During shutdown,
 * once nothing is left, closing the grace timer finishes the shutdown.
 */
static void
server_conn_gone(struct grpc_server *srv)
{
	if (!srv->gs_shutdown || srv->gs_grace_closing ||
	    srv->gs_open_listeners > 0 || !LIST_EMPTY(&srv->gs_conns))
		return;
	srv->gs_grace_closing = 1;
	uv_close((uv_handle_t *)&srv->gs_grace, on_grace_closed);
}

static void
on_grace_timeout(uv_timer_t *t)
{
	struct grpc_server *srv = t->data;
	struct grpc_conn *conn, *next;

	for (conn = LIST_FIRST(&srv->gs_conns); conn != NULL; conn = next) {
		next = LIST_NEXT(conn, gc_entry);
		h2_close(conn->gc_h2, NCG_ECANCELLED, "server shutting down");
	}
}

void
grpc_server_shutdown(struct grpc_server *srv, unsigned grace_ms,
                     void (*done)(void *), void *arg)
{
	struct grpc_conn *conn, *next;
	size_t i;

	if (srv->gs_shutdown)
		return;
	srv->gs_shutdown = 1;
	srv->gs_done = done;
	srv->gs_done_arg = arg;
	uv_timer_init(srv->gs_loop, &srv->gs_grace);
	srv->gs_grace.data = srv;
	uv_timer_start(&srv->gs_grace, on_grace_timeout, grace_ms, 0);
	srv->gs_open_listeners = srv->gs_nlisteners;
	for (i = 0; i < srv->gs_nlisteners; i++)
		uv_close(&srv->gs_listeners[i]->gl_h.handle,
		         on_listener_closed);
	srv->gs_nlisteners = 0;
	for (conn = LIST_FIRST(&srv->gs_conns); conn != NULL; conn = next) {
		next = LIST_NEXT(conn, gc_entry);
		h2_shutdown(conn->gc_h2);
	}
	server_conn_gone(srv);
}
