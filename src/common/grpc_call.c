/*
 * gRPC calls over h2.c connections, for clients and servers.  The
 * connections are in grpc_conn.c, servers in grpc_server.c.
 *
 * Received DATA goes through a per-call raw queue into the deframer;
 * HTTP/2 flow control is released (h2_consume) only as the deframer takes
 * bytes, so a paused call holds at most one stream window plus one message.
 * Outgoing messages are framed into ca_wbuf and pulled by nghttp2 through a
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "grpc_int.h"
#include "grpc_meta.h"

/* The transitions; each checks that it is a legal one. */
static void
call_set_recv(struct grpc_call *c, enum call_recv st)
{
	assert(st >= c->ca_recv);
	c->ca_recv = st;
}

static void
call_set_deliver(struct grpc_call *c, enum call_deliver st)
{
	assert(c->ca_deliver != DELIVER_DROPPED);
	assert(st != DELIVER_PAUSED || c->ca_deliver == DELIVER_RUNNING);
	assert(st != DELIVER_RUNNING || c->ca_deliver == DELIVER_PAUSED);
	assert(st != DELIVER_DONE || c->ca_deliver == DELIVER_RUNNING);
	c->ca_deliver = st;
}

static void
call_set_send(struct grpc_call *c, enum call_send st)
{
	assert(st > c->ca_send);
	c->ca_send = st;
}

void
grpc__call_set_life(struct grpc_call *c, enum call_life st)
{
	assert(st >= c->ca_life);
	c->ca_life = st;
}

/* Input is discarded from now on (an error, a cancel, a bad request). */
void
grpc__call_drop(struct grpc_call *c)
{
	if (c->ca_deliver != DELIVER_DROPPED)
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

struct grpc_call *
grpc__call_new(struct grpc_conn *conn, int server)
{
	struct grpc_call *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->ca_conn = conn;
	c->ca_server = server;
	/* A client's HEADERS go out with grpc_call_start(). */
	c->ca_send = server ? SEND_IDLE : SEND_OPEN;
	c->ca_local_status = -1;
	grpc_deframer_init(&c->ca_df, conn->gc_opts.go_max_message);
	buf_init(&c->ca_rbuf, 0);
	buf_init(&c->ca_wbuf, 0);
	LIST_INSERT_HEAD(&conn->gc_calls, c, ca_entry);
	return c;
}

/*
 * Server: keeps the connection's count of buffered request bytes (raw
 * input plus the deframer's partial message) in step with the call's.
 */
static void
call_account(struct grpc_call *c)
{
	struct grpc_conn *conn = c->ca_conn;
	size_t held;

	if (!c->ca_server)
		return;
	held = buf_len(&c->ca_rbuf) + grpc_deframer_held(&c->ca_df);
	conn->gc_buffered = conn->gc_buffered - c->ca_held + held;
	c->ca_held = held;
}

static void
on_call_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
call_free(struct grpc_call *c)
{
	LIST_REMOVE(c, ca_entry);
	c->ca_conn->gc_buffered -= c->ca_held;
	if (c->ca_counted)
		c->ca_conn->gc_nstreams--;
	grpc_md_free(&c->ca_md);
	grpc_md_free(&c->ca_trailers);
	grpc_md_free(&c->ca_send_trailers);
	grpc_deframer_free(&c->ca_df);
	buf_free(&c->ca_rbuf);
	buf_free(&c->ca_wbuf);
	free(c->ca_path);
	free(c->ca_message);
	free(c->ca_local_message);
	if (c->ca_timer_used) {
		c->ca_timer.data = c;
		uv_close((uv_handle_t *)&c->ca_timer, on_call_timer_closed);
	} else
		free(c);
}

/* Delivers on_end once, then frees the call. */
void
grpc__call_finalize(struct grpc_call *c, int status, const char *msg)
{
	if (c->ca_life == LIFE_ENDED)
		return;
	grpc__call_set_life(c, LIFE_ENDED);
	if (c->ca_timer_used)
		uv_timer_stop(&c->ca_timer);
	if (c->ca_ops != NULL && c->ca_ops->on_end != NULL)
		c->ca_ops->on_end(c, status, msg != NULL ? msg : "", c->ca_arg);
	call_free(c);
}

static nghttp2_session *
call_session(struct grpc_call *c)
{
	return h2_session(c->ca_conn->gc_h2);
}

static void
call_flush(struct grpc_call *c)
{
	h2_flush(c->ca_conn->gc_h2);
}

/* Sets the status a client call ends with, unless one is set already. */
static void
call_set_local(struct grpc_call *c, int status, const char *msg)
{
	if (c->ca_local_status >= 0)
		return;
	c->ca_local_status = status;
	free(c->ca_local_message);
	c->ca_local_message = strdup(msg);
}

/* Fails a call from our side: the client resets, the server answers. */
static void
call_fail(struct grpc_call *c, int status, const char *msg)
{
	grpc__call_drop(c);
	if (c->ca_server) {
		grpc_call_finish(c, status, msg, NULL);
		return;
	}
	call_set_local(c, status, msg);
	if (c->ca_life == LIFE_OPEN) {
		nghttp2_submit_rst_stream(call_session(c), NGHTTP2_FLAG_NONE,
		                          c->ca_stream_id, NGHTTP2_CANCEL);
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
static int
server_submit_trailers(struct grpc_call *c)
{
	struct nvlist l = {0};
	int rc;

	nv_add_status(&l, c->ca_status, c->ca_message);
	nv_add_md(&l, &c->ca_send_trailers);
	if (l.overflow) {
		nv_free(&l);
		memset(&l, 0, sizeof(l));
		nv_add_status(&l, GRPC_STATUS_INTERNAL, NULL);
	}
	rc =
	    nghttp2_submit_trailer(call_session(c), c->ca_stream_id, l.nv, l.n);
	nv_free(&l);
	return rc;
}

/*
 * Our END_STREAM is on the wire.  A server whose client is still sending
 * tells it to stop (RST_STREAM NO_ERROR, as gRPC servers do) so that the
 * stream does not linger half-closed.  Only now: a reset submitted before
 * the trailers were sent could overtake them.
 */
void
grpc__call_on_end_sent(struct h2conn *h, void *st)
{
	struct grpc_call *c = st;

	if (c->ca_server && c->ca_recv != RECV_EOS && c->ca_life == LIFE_OPEN)
		nghttp2_submit_rst_stream(h2_session(h), NGHTTP2_FLAG_NONE,
		                          c->ca_stream_id, NGHTTP2_NO_ERROR);
}

/*
 * DATA payloads at least this long are not copied into nghttp2's frame
 * buffer: nghttp2 writes the frame header and grpc__call_send_data()
 * writes the payload straight from ca_wbuf (NGHTTP2_DATA_FLAG_NO_COPY).
 * Over TLS the header then goes out as a record of its own, 31 bytes on
 * the wire and a cipher call, which costs more than copying a short
 * payload; so short ones are still copied.
 */
#define GRPC_NOCOPY_MIN 4096

/*
 * The bytes of the message whose prefix starts off bytes into ca_wbuf,
 * prefix included.  Messages are queued whole, so the prefix is there; if
 * it were not, the rest of the queue counts as one message, and an offset
 * at or past the end (which the callers never pass) as one byte, so that a
 * walk still moves on.
 */
static size_t
wmsg_span(const struct grpc_call *c, size_t off)
{
	const uint8_t *p;
	size_t have;

	if (off >= buf_len(&c->ca_wbuf))
		return 1;
	p = buf_data(&c->ca_wbuf) + off;
	if ((have = buf_len(&c->ca_wbuf) - off) < GRPC_FRAME_HDR_LEN)
		return have;
	return GRPC_FRAME_HDR_LEN + ((size_t)p[1] << 24 | (size_t)p[2] << 16 |
	                             (size_t)p[3] << 8 | (size_t)p[4]);
}

/* n bytes taken from ca_wbuf for a DATA frame. */
static void
call_taken(struct grpc_call *c, size_t n)
{
	size_t b = c->ca_wmsg;

	while (b < n)
		b += wmsg_span(c, b);
	c->ca_wmsg = b - n;
	buf_consume(&c->ca_wbuf, n);
}

/*
 * The length of the next DATA frame, at most len.  When more is queued
 * than one frame takes, the frame ends at the last message boundary
 * inside it if the message starting there fits a frame of its own: so a
 * message that fits a frame arrives whole in one, and the receiver takes
 * it from there without a copy (grpc_deframer_whole()).  A message longer
 * than a frame straddles frames whatever is done, and the frames are
 * filled then.
 */
static size_t
call_frame_len(const struct grpc_call *c, size_t len)
{
	size_t b = c->ca_wmsg, next;

	if (buf_len(&c->ca_wbuf) <= len)
		return buf_len(&c->ca_wbuf);
	if (b > len)
		return len;
	while ((next = b + wmsg_span(c, b)) <= len)
		b = next;
	return b > 0 && next - b <= len ? b : len;
}

int
grpc__call_send_data(struct h2conn *h, void *source, size_t len)
{
	struct grpc_call *c = source;
	int rc;

	if (len > buf_len(&c->ca_wbuf))
		return -EINVAL; /* cannot be: call_read_cb() promised it */
	rc = h2_write(h, buf_data(&c->ca_wbuf), len);
	call_taken(c, len);
	return rc;
}

static ssize_t
call_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *out, size_t len,
             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct grpc_call *c = src->ptr;
	size_t n = call_frame_len(c, len), left;

	(void)s;
	(void)stream_id;
	(void)ud;
	if (n >= GRPC_NOCOPY_MIN) {
		/* Consumed by grpc__call_send_data(), which nghttp2 calls next.
		 */
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
		left = buf_len(&c->ca_wbuf) - n;
	} else {
		if (n > 0) {
			memcpy(out, buf_data(&c->ca_wbuf), n);
			call_taken(c, n);
		}
		left = buf_len(&c->ca_wbuf);
	}
	if (c->ca_above_lowat && left < GRPC_CALL_LOWAT) {
		c->ca_above_lowat = 0;
		c->ca_want_writable = 1;
	}
	if (left > 0)
		return (ssize_t)n;
	if (c->ca_send != SEND_CLOSING) {
		if (n > 0)
			return (ssize_t)n;
		c->ca_deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (c->ca_server) {
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		/*
		 * Without its trailers the stream would never end: nghttp2
		 * resets it instead (INTERNAL_ERROR), or ends the connection
		 * if it cannot even do that.
		 */
		if (server_submit_trailers(c) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

static void
call_kick(struct grpc_call *c)
{
	if (c->ca_deferred && c->ca_life == LIFE_OPEN) {
		c->ca_deferred = 0;
		nghttp2_session_resume_data(call_session(c), c->ca_stream_id);
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
	rc = nghttp2_submit_response(call_session(c), c->ca_stream_id, l.nv,
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

	if (c->ca_life != LIFE_OPEN || c->ca_send == SEND_CLOSING)
		return -EPIPE;
	if ((c->ca_conn->gc_opts.go_max_send_message != 0 &&
	     len > c->ca_conn->gc_opts.go_max_send_message) ||
	    len > UINT32_MAX)
		return -EMSGSIZE;
	if ((rc = buf_reserve(&c->ca_wbuf, sizeof(hdr) + len)) != 0)
		return rc;
	if (c->ca_send == SEND_IDLE &&
	    (rc = server_submit_headers(c, NULL)) != 0)
		return rc;
	grpc_frame_header(hdr, (uint32_t)len);
	rc = buf_append(&c->ca_wbuf, hdr, sizeof(hdr));
	assert(rc == 0);
	return 0;
}

static void
call_send_end(struct grpc_call *c)
{
	if (buf_len(&c->ca_wbuf) >= GRPC_CALL_LOWAT)
		c->ca_above_lowat = 1;
	call_kick(c);
}

int
grpc_call_send(struct grpc_call *c, const uint8_t *msg, size_t len)
{
	int rc;

	if ((rc = call_send_begin(c, len)) != 0)
		return rc;
	rc = buf_append(&c->ca_wbuf, msg, len);
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
	                       .ps_buf = &c->ca_wbuf};
	size_t len = protobuf_c_message_get_packed_size(m);
	size_t before;
	int rc;

	if ((rc = call_send_begin(c, len)) != 0)
		return rc;
	before = buf_len(&c->ca_wbuf);
	protobuf_c_message_pack_to_buffer(m, &sink.ps_base);
	assert(buf_len(&c->ca_wbuf) - before == len);
	(void)before;
	call_send_end(c);
	return 0;
}

size_t
grpc_call_queued(const struct grpc_call *c)
{
	return buf_len(&c->ca_wbuf);
}

void
grpc_call_notify_flushed(struct grpc_call *c)
{
	if (c->ca_life == LIFE_ENDED)
		return;
	/* conn_on_flushed() runs on_writable for the calls marked so. */
	c->ca_want_writable = 1;
	call_flush(c);
}

int
grpc_call_close_send(struct grpc_call *c)
{
	if (c->ca_server)
		return -EINVAL;
	if (c->ca_send == SEND_CLOSING || c->ca_life == LIFE_ENDED)
		return -EALREADY;
	call_set_send(c, SEND_CLOSING);
	call_kick(c);
	return 0;
}

int
grpc_call_send_headers(struct grpc_call *c, const struct grpc_mdlist *md)
{
	int rc;

	if (!c->ca_server)
		return -EINVAL;
	if (c->ca_send != SEND_IDLE || c->ca_life != LIFE_OPEN)
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

	if (!c->ca_server)
		return -EINVAL;
	if (c->ca_send == SEND_CLOSING || c->ca_life != LIFE_OPEN)
		return -EALREADY;
	/* grpc-status and grpc-message come first; what does not fit fails. */
	if (md_wire_count(trailers) > NV_MAX - 4)
		return -E2BIG;
	free(c->ca_message);
	c->ca_message = NULL;
	grpc_md_free(&c->ca_send_trailers);
	if (message != NULL && (c->ca_message = strdup(message)) == NULL)
		return -ENOMEM;
	for (i = 0; trailers != NULL && i < trailers->ml_n; i++)
		if ((rc = grpc_md_add(&c->ca_send_trailers,
		                      trailers->ml_md[i].md_key,
		                      trailers->ml_md[i].md_value,
		                      trailers->ml_md[i].md_len)) != 0)
			return rc;
	c->ca_status = status;
	c->ca_have_status = 1;
	if (c->ca_timer_used)
		uv_timer_stop(&c->ca_timer);
	if (c->ca_send == SEND_IDLE) {
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
		rc = nghttp2_submit_response(call_session(c), c->ca_stream_id,
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
	if (c->ca_life == LIFE_ENDED)
		return;
	grpc__call_drop(c);
	if (!c->ca_server)
		call_set_local(c, GRPC_STATUS_CANCELLED, "cancelled by client");
	if (c->ca_end_pending) {
		/* What the stream left undelivered goes; on_end from the loop.
		 */
		c->ca_want_process = 1;
		h2_defer(c->ca_conn->gc_h2);
		return;
	}
	if (c->ca_life != LIFE_OPEN)
		return;
	nghttp2_submit_rst_stream(call_session(c), NGHTTP2_FLAG_NONE,
	                          c->ca_stream_id, NGHTTP2_CANCEL);
	call_flush(c);
}

void
grpc_call_pause(struct grpc_call *c)
{
	/* Once all is delivered or dropped, there is nothing to hold. */
	if (c->ca_deliver == DELIVER_RUNNING)
		call_set_deliver(c, DELIVER_PAUSED);
}

void
grpc_call_deliver_all(struct grpc_call *c)
{
	if (!c->ca_server)
		c->ca_deliver_all = 1;
}

/*
 * Ends a call whose stream closed while messages waited (ca_end_pending),
 * once resumed delivery has handed them over or a cancel dropped them.
 */
void
grpc__call_end_pending(struct grpc_call *c)
{
	if (!c->ca_end_pending || c->ca_deliver == DELIVER_PAUSED)
		return;
	if (c->ca_local_status >= 0)
		grpc__call_finalize(c, c->ca_local_status, c->ca_local_message);
	else if (grpc_deframer_partial(&c->ca_df))
		grpc__call_finalize(c, GRPC_STATUS_INTERNAL,
		                    "stream ended inside a message");
	else
		grpc__call_finalize(c, c->ca_status, c->ca_message);
}

void
grpc_call_resume(struct grpc_call *c)
{
	if (c->ca_deliver != DELIVER_PAUSED)
		return;
	call_set_deliver(c, DELIVER_RUNNING);
	if (c->ca_life == LIFE_ENDED)
		return;
	/* What waits is delivered from the loop (conn_on_deferred() in
	 * grpc_conn.c). */
	c->ca_want_process = 1;
	h2_defer(c->ca_conn->gc_h2);
}

const struct grpc_mdlist *
grpc_call_metadata(const struct grpc_call *c)
{
	return &c->ca_md;
}

const struct grpc_mdlist *
grpc_call_trailers(const struct grpc_call *c)
{
	return &c->ca_trailers;
}

const char *
grpc_call_path(const struct grpc_call *c)
{
	return c->ca_path != NULL ? c->ca_path : "";
}

struct grpc_conn *
grpc_call_conn(const struct grpc_call *c)
{
	return c->ca_conn;
}

uint64_t
grpc_call_timeout(const struct grpc_call *c)
{
	return c->ca_timeout_ms;
}

void
grpc_call_set_max_message(struct grpc_call *c, size_t max)
{
	grpc_deframer_set_max(&c->ca_df, max);
}

void
grpc_call_set_ops(struct grpc_call *c, const struct grpc_call_ops *ops,
                  void *arg)
{
	c->ca_ops = ops;
	c->ca_arg = arg;
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
	grpc__call_drop(c);
	buf_free(&c->ca_rbuf);
	grpc_deframer_free(&c->ca_df);
	call_account(c);
}

/*
 * Delivers complete messages while the call is not paused, releasing flow
 * control for what the deframer took.
 */
/* Hands over the message the deframer holds, if any; 1 if there was one. */
static int
call_deliver_one(struct grpc_call *c)
{
	uint8_t *msg;
	size_t len;

	if (!grpc_deframer_take(&c->ca_df, &msg, &len))
		return 0;
	c->ca_conn->gc_rx_copied++;
	if (c->ca_ops != NULL && c->ca_ops->on_message != NULL)
		c->ca_ops->on_message(c, msg, len, c->ca_arg);
	free(msg);
	return 1;
}

/* The deframer refused the input (n < 0): the call fails. */
static void
call_bad_input(struct grpc_call *c, ssize_t n)
{
	const char *why;
	int st = deframe_status(n, &why);

	if (n == -EMSGSIZE && c->ca_server)
		grpc__conn_report_limit(c->ca_conn, GRPC_LIMIT_MESSAGE);
	call_drop_input(c);
	call_fail(c, st, why);
}

static int
call_delivering(const struct grpc_call *c)
{
	return c->ca_deliver == DELIVER_RUNNING && c->ca_life != LIFE_ENDED;
}

void
grpc__call_process(struct grpc_call *c)
{
	ssize_t n;

	while (call_delivering(c)) {
		if (call_deliver_one(c))
			continue;
		if (buf_len(&c->ca_rbuf) == 0)
			break;
		n = grpc_deframer_feed(&c->ca_df, buf_data(&c->ca_rbuf),
		                       buf_len(&c->ca_rbuf));
		if (n < 0) {
			call_bad_input(c, n);
			return;
		}
		buf_consume(&c->ca_rbuf, (size_t)n);
		h2_consume(c->ca_conn->gc_h2, c->ca_stream_id, (size_t)n);
		call_account(c);
	}
	call_account(c);
	/*
	 * Once the peer has half-closed no more input can arrive, so an
	 * emptied read queue is given back: a device's long poll keeps its
	 * call open for hours after its one request.
	 */
	if (c->ca_recv == RECV_EOS && buf_len(&c->ca_rbuf) == 0)
		buf_free(&c->ca_rbuf);
	if (c->ca_deliver != DELIVER_RUNNING || c->ca_life == LIFE_ENDED ||
	    c->ca_recv != RECV_EOS || buf_len(&c->ca_rbuf) > 0)
		return;
	call_set_deliver(c, DELIVER_DONE);
	if (grpc_deframer_partial(&c->ca_df)) {
		call_fail(c, GRPC_STATUS_INTERNAL,
		          "stream ended inside a message");
		return;
	}
	if (c->ca_server && c->ca_ops != NULL &&
	    c->ca_ops->on_half_close != NULL)
		c->ca_ops->on_half_close(c, c->ca_arg);
}

void
grpc__call_on_data(struct h2conn *h, void *st, const uint8_t *data, size_t len)
{
	struct grpc_call *c = st;
	struct grpc_conn *conn = c->ca_conn;
	const uint8_t *msg;
	size_t mlen;
	ssize_t n;
	int rc;

	if (c->ca_deliver == DELIVER_DROPPED || c->ca_life == LIFE_ENDED ||
	    c->ca_bad_request) {
		h2_consume(h, c->ca_stream_id, len);
		return;
	}
	if (c->ca_server && !conn->gc_trusted &&
	    conn->gc_opts.go_preauth_buffer != 0 &&
	    conn->gc_buffered + len > conn->gc_opts.go_preauth_buffer) {
		/* Flow control alone would let every stream fill a window. */
		h2_consume(h, c->ca_stream_id, len);
		grpc__conn_report_limit(conn, GRPC_LIMIT_BUFFER);
		call_drop_input(c);
		call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		          "too much request data before authentication");
		return;
	}
	/*
	 * While nothing waits in ca_rbuf and messages are being delivered,
	 * a message that lies whole in this chunk is handed over where it
	 * is, and the deframer reads the pieces of the others straight from
	 * nghttp2's buffer; only what a paused or ended delivery leaves is
	 * queued.  on_message gets the message for the time of the call only,
	 * as it does from the deframer.
	 */
	while (len > 0 && buf_len(&c->ca_rbuf) == 0 && call_delivering(c)) {
		if (call_deliver_one(c))
			continue;
		if ((n = grpc_deframer_whole(&c->ca_df, data, len, &msg,
		                             &mlen)) > 0) {
			/* Whole in this chunk: handed over where it lies. */
			conn->gc_rx_inplace++;
			data += n;
			len -= (size_t)n;
			h2_consume(h, c->ca_stream_id, (size_t)n);
			if (c->ca_ops != NULL && c->ca_ops->on_message != NULL)
				c->ca_ops->on_message(c, msg, mlen, c->ca_arg);
			continue;
		}
		if ((n = grpc_deframer_feed(&c->ca_df, data, len)) < 0) {
			h2_consume(h, c->ca_stream_id, len);
			call_bad_input(c, n);
			return;
		}
		if (n == 0)
			break;
		data += n;
		len -= (size_t)n;
		h2_consume(h, c->ca_stream_id, (size_t)n);
		call_account(c);
	}
	if (len > 0 && (rc = buf_append(&c->ca_rbuf, data, len)) != 0) {
		h2_consume(h, c->ca_stream_id, len);
		call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	grpc__call_process(c);
}

void
grpc__call_on_data_end(struct h2conn *h, void *st)
{
	struct grpc_call *c = st;

	(void)h;
	call_set_recv(c, RECV_EOS);
	if (!c->ca_server && c->ca_life == LIFE_OPEN) {
		/* END_STREAM on DATA: the server sent no trailers. */
		call_set_local(c, GRPC_STATUS_INTERNAL,
		               "server closed the stream without a status");
	}
	grpc__call_process(c);
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

int
grpc__call_on_header(struct h2conn *h, void *st, const nghttp2_nv *nv)
{
	struct grpc_call *c = st;
	uint64_t ms;
	int code;

	(void)h;
	c->ca_md_bytes += nv->namelen + nv->valuelen + 32;
	if (c->ca_md_bytes > GRPC_MAX_METADATA)
		return -1; /* resets the stream */
	if (c->ca_server) {
		if (nv_is(nv, ":path"))
			return set_string(&c->ca_path, nv->value, nv->valuelen);
		if (nv_is(nv, ":method")) {
			if (nv->valuelen != 4 || memcmp(nv->value, "POST", 4))
				c->ca_bad_request = 1;
			return 0;
		}
		if (nv_is(nv, "content-type")) {
			if (!content_type_ok(nv))
				c->ca_bad_request = 1;
			return 0;
		}
		if (nv_is(nv, "grpc-timeout")) {
			if (grpc_timeout_parse((const char *)nv->value,
			                       nv->valuelen, &ms) == 0)
				c->ca_timeout_ms = ms;
			return 0;
		}
		if (nv->namelen > 0 && nv->name[0] == ':')
			return 0;
		return call_store_md(c, &c->ca_md, nv);
	}
	if (nv_is(nv, ":status")) {
		c->ca_http_status = 0;
		for (size_t i = 0; i < nv->valuelen && i < 3; i++)
			c->ca_http_status =
			    c->ca_http_status * 10 + (nv->value[i] - '0');
		return 0;
	}
	if (nv_is(nv, "grpc-status")) {
		if (grpc_status_parse((const char *)nv->value, nv->valuelen,
		                      &code) == 0) {
			c->ca_status = code;
			c->ca_have_status = 1;
		}
		return 0;
	}
	if (nv_is(nv, "grpc-message")) {
		char *dec;
		size_t declen;

		if (grpc_percent_decode((const char *)nv->value, nv->valuelen,
		                        &dec, &declen) != 0)
			return -1;
		free(c->ca_message);
		c->ca_message = dec;
		return 0;
	}
	if (nv->namelen > 0 && nv->name[0] == ':')
		return 0;
	return call_store_md(
	    c, c->ca_recv != RECV_HEADERS ? &c->ca_trailers : &c->ca_md, nv);
}

static void
on_call_deadline(uv_timer_t *t)
{
	struct grpc_call *c = t->data;

	if (c->ca_life == LIFE_ENDED)
		return;
	if (c->ca_server) {
		call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED,
		          "deadline exceeded");
		return;
	}
	call_set_local(c, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
	grpc_call_cancel(c);
}

void
grpc__call_start_deadline(struct grpc_call *c, uv_loop_t *loop)
{
	if (c->ca_timeout_ms == 0)
		return;
	uv_timer_init(loop, &c->ca_timer);
	c->ca_timer.data = c;
	c->ca_timer_used = 1;
	uv_timer_start(&c->ca_timer, on_call_deadline, c->ca_timeout_ms, 0);
}

void
grpc__call_on_headers_end(struct h2conn *h, void *st, int end_stream)
{
	struct grpc_call *c = st;
	int first = c->ca_recv == RECV_HEADERS;

	(void)h;
	call_set_recv(c, end_stream ? RECV_EOS : RECV_OPEN);
	if (c->ca_server) {
		if (first)
			grpc__server_dispatch(c);
		if (end_stream && c->ca_life != LIFE_ENDED)
			grpc__call_process(c);
	} else if (first && !end_stream) {
		if (c->ca_ops->on_headers != NULL)
			c->ca_ops->on_headers(c, c->ca_arg);
	} else if (first) {
		struct grpc_mdlist none = c->ca_trailers;

		/*
		 * A Trailers-Only response: its one HEADERS block is the
		 * trailers, so its metadata is trailing metadata, as gRPC
		 * Core reports it, and there was no initial metadata.
		 * (grpcio answers so when its handler ends before anything
		 * was sent.)
		 */
		c->ca_trailers = c->ca_md;
		c->ca_md = none;
	}
	if (!c->ca_server && end_stream && c->ca_send != SEND_CLOSING &&
	    c->ca_life == LIFE_OPEN)
		/* The server is done; stop our half too. */
		nghttp2_submit_rst_stream(call_session(c), NGHTTP2_FLAG_NONE,
		                          c->ca_stream_id, NGHTTP2_NO_ERROR);
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

void
grpc__call_on_stream_close(struct h2conn *h, void *st, uint32_t error_code)
{
	struct grpc_call *c = st;
	char msg[128];

	(void)h;
	grpc__call_set_life(c, LIFE_CLOSED);
	if (c->ca_server) {
		if (c->ca_have_status && c->ca_send == SEND_CLOSING &&
		    (c->ca_recv == RECV_EOS || error_code == NGHTTP2_NO_ERROR))
			grpc__call_finalize(c, c->ca_status, c->ca_message);
		else
			grpc__call_finalize(c, GRPC_STATUS_CANCELLED,
			                    "call cancelled by the client");
		return;
	}
	if (c->ca_local_status >= 0) {
		grpc__call_finalize(c, c->ca_local_status, c->ca_local_message);
		return;
	}
	if (c->ca_http_status != 0 && c->ca_http_status != 200) {
		snprintf(msg, sizeof(msg), "http status %d", c->ca_http_status);
		grpc__call_finalize(c, http_to_grpc_status(c->ca_http_status),
		                    msg);
		return;
	}
	if (c->ca_have_status &&
	    (buf_len(&c->ca_rbuf) > 0 || grpc_deframer_held(&c->ca_df) > 0) &&
	    (c->ca_deliver == DELIVER_RUNNING ||
	     (c->ca_deliver == DELIVER_PAUSED && c->ca_deliver_all))) {
		/*
		 * Messages wait, and on_end after them: a call resumed and
		 * not yet served by the loop (ca_want_process) gets them
		 * there; a paused one with grpc_call_deliver_all() on its
		 * resume.  Without deliver_all a paused call ends now.
		 */
		c->ca_end_pending = 1;
		if (c->ca_deliver == DELIVER_RUNNING) {
			c->ca_want_process = 1;
			h2_defer(c->ca_conn->gc_h2);
		}
		return;
	}
	if (c->ca_have_status) {
		grpc__call_finalize(c, c->ca_status, c->ca_message);
		return;
	}
	switch (error_code) {
	case NGHTTP2_REFUSED_STREAM:
		grpc__call_finalize(c, GRPC_STATUS_UNAVAILABLE,
		                    "stream refused by the server");
		break;
	case NGHTTP2_CANCEL:
		grpc__call_finalize(c, GRPC_STATUS_CANCELLED,
		                    "stream cancelled by the server");
		break;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		grpc__call_finalize(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                    "server says enhance your calm");
		break;
	default:
		snprintf(msg, sizeof(msg),
		         "stream closed without a status (http/2 error %s)",
		         nghttp2_http2_strerror(error_code));
		grpc__call_finalize(c, GRPC_STATUS_INTERNAL, msg);
		break;
	}
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
	if ((c = grpc__call_new(conn, 0)) == NULL)
		return -ENOMEM;
	c->ca_ops = ops;
	c->ca_arg = arg;
	c->ca_timeout_ms = timeout_ms;
	if ((c->ca_path = strdup(path)) == NULL)
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
	c->ca_stream_id = id;
	grpc__call_start_deadline(c, conn->gc_loop);
	h2_flush(conn->gc_h2);
	*out = c;
	return 0;
nomem:
	nv_free(&l);
	call_free(c);
	return -ENOMEM;
}
