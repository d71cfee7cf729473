/*
 * HTTP/2 connections: nghttp2 sessions over a transport (xport.h).
 *
 * h2.c owns the session, the transport under it, output flushing with
 * backpressure, keepalive PINGs and GOAWAY.  Stream events go to the layer
 * above (grpc_*.c) through struct h2_stream_ops; that layer keeps its own
 * per-stream object as nghttp2 stream user data.
 *
 * Re-entrancy: every h2_* function may be called from inside the callbacks
 * below.  Output generated then is sent when nghttp2 hands control back.
 */
#ifndef NCGRPC_H2_H
#define NCGRPC_H2_H

#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

struct h2conn;
struct xport;

struct h2_stream_ops {
	/* Transport and preface ready; the connection can carry streams. */
	void (*on_ready)(struct h2conn *c, void *arg);
	/*
	 * Server: a request HEADERS frame opens stream_id.  Returns the new
	 * stream object (stored as stream user data), or NULL to refuse the
	 * stream with RST_STREAM REFUSED_STREAM.
	 */
	void *(*on_stream_open)(struct h2conn *c, int32_t stream_id, void *arg);
	/* One header field of a header block (initial or trailers). */
	int (*on_header)(struct h2conn *c, void *st, const nghttp2_nv *nv);
	/* A header block ended; end_stream if it carried END_STREAM. */
	void (*on_headers_end)(struct h2conn *c, void *st, int end_stream);
	/* DATA payload.  The stream layer calls h2_consume() once done. */
	void (*on_data)(struct h2conn *c, void *st, const uint8_t *data,
	                size_t len);
	/* END_STREAM on a DATA frame. */
	void (*on_data_end)(struct h2conn *c, void *st);
	/*
	 * A stream's data read callback set NGHTTP2_DATA_FLAG_NO_COPY and
	 * returned len: the 9-byte frame header is out, and the stream now
	 * writes exactly len bytes of payload with h2_write() (source is the
	 * data source's ptr).  Returns 0, or nonzero to end the connection.
	 * May be NULL if no stream uses NO_COPY.
	 */
	int (*on_send_data)(struct h2conn *c, void *source, size_t len);
	/* A frame with END_STREAM went out on the stream.  May be NULL. */
	void (*on_end_sent)(struct h2conn *c, void *st);
	/* Stream closed (error_code is the HTTP/2 code, 0 if clean). */
	void (*on_stream_close)(struct h2conn *c, void *st,
	                        uint32_t error_code);
	/*
	 * Output was flushed to the transport, outside any nghttp2 call: a
	 * safe point to tell writers there is room again.  May be NULL.
	 */
	void (*on_flushed)(struct h2conn *c, void *arg);
	/*
	 * The loop came back for a deferred pass (after h2_defer(), or a
	 * flush asked for outside a callback): the place for work that must
	 * not run inside the call that asked for it.  It may find nothing
	 * to do.  May be NULL.
	 */
	void (*on_deferred)(struct h2conn *c, void *arg);
	/*
	 * GOAWAY received: no new streams on this connection.  debug is the
	 * opaque debug data (may be empty, not NUL-terminated).
	 */
	void (*on_goaway)(struct h2conn *c, uint32_t error_code,
	                  const uint8_t *debug, size_t debuglen, void *arg);
	/*
	 * The connection is gone (err 0 after an orderly close).  Streams
	 * get no on_stream_close of their own: the layer above ends them
	 * here.  c is freed after this returns.
	 */
	void (*on_closed)(struct h2conn *c, int err, const char *reason,
	                  void *arg);
};

struct h2_opts {
	int ho_server;
	uint32_t ho_max_streams;      /* server: SETTINGS; 0 means 100 */
	uint32_t ho_stream_window;    /* receive window per stream; 0: 1 MiB */
	uint32_t ho_conn_window;      /* receive window of the connection;
	                               * 0: 16 MiB */
	unsigned ho_ping_interval_ms; /* keepalive PING period; 0: none */
	unsigned ho_ping_timeout_ms;  /* unanswered PING is fatal; 0: 20 s */
	/*
	 * Server: the RST_STREAM frames a client may send, a token bucket of
	 * ho_reset_burst refilled by ho_reset_rate a second, before nghttp2
	 * takes the connection for a rapid-reset attack and sends GOAWAY.
	 * Either 0: nghttp2's 1,000 and 33.
	 */
	uint32_t ho_reset_burst;
	uint32_t ho_reset_rate;
};

/*
 * Creates an HTTP/2 connection without a transport.  The caller then creates
 * the transport with h2_xport_cb as its callbacks and c as their argument,
 * and binds it with h2_attach().  Returns 0 and sets *out, or -ENOMEM.
 */
int h2_new(const struct h2_opts *opts, const struct h2_stream_ops *ops,
           void *arg, struct h2conn **out);

/* The transport callbacks that drive c; pass c as their argument. */
extern const struct xport_cb h2_xport_cb;

/*
 * Binds the transport created with h2_xport_cb and c as argument.  Harmless
 * if the transport already bound itself (it does when it is ready at once).
 */
void h2_attach(struct h2conn *c, struct xport *x);

/*
 * Frees a connection whose transport could not be created (so that no
 * callback will ever run).  Never call it after h2_attach().
 */
void h2_discard(struct h2conn *c);

nghttp2_session *h2_session(struct h2conn *c);
struct xport *h2_xport(struct h2conn *c);
void *h2_arg(struct h2conn *c);
void h2_set_arg(struct h2conn *c, void *arg);

/*
 * Sends what nghttp2 has queued, as far as the transport takes it: from
 * the loop, before it next waits for I/O, never inside this call; so no
 * stream callback runs inside the call of the caller that queued it.
 */
void h2_flush(struct h2conn *c);
/* Has on_deferred called from the loop, before it next waits for I/O. */
void h2_defer(struct h2conn *c);

/*
 * Bytes of nghttp2's frame buffer now resident in memory (mincore(2)): 0
 * once the connection has been quiet, as h2.c gives its pages back then
 * (at most 100 ms later, with those of other connections).
 * For tests and benchmarks.
 */
size_t h2_framebuf_resident(const struct h2conn *c);
/* Frame buffers waiting to be given back together (h2.c).  For tests. */
size_t h2_giveback_pending(void);
/*
 * For tests: on, each buffer of a batch goes back with a madvise() of its
 * own, as on a kernel that refuses process_madvise() of MADV_DONTNEED.
 */
void h2_giveback_single(int on);

/*
 * Writes bytes of a frame to the transport, for on_send_data only.
 * Returns 0, or the transport's error, which also ends the connection.
 */
int h2_write(struct h2conn *c, const uint8_t *data, size_t len);

/* Acknowledges n bytes of stream_id's DATA as processed (flow control). */
void h2_consume(struct h2conn *c, int32_t stream_id, size_t n);

/*
 * Graceful close: GOAWAY (NO_ERROR) naming the last stream processed, then
 * close once no stream is left.  Streams in flight finish.
 */
void h2_shutdown(struct h2conn *c);

/*
 * Closes at once with err: a GOAWAY with an error code when possible, then
 * the transport.  Called from outside a callback, both happen from the
 * loop, so that on_closed never runs inside this call.
 */
void h2_close(struct h2conn *c, int err, const char *reason);

/*
 * Server: announces a new SETTINGS_MAX_CONCURRENT_STREAMS (0 means the
 * default, 100).  nghttp2 refuses streams over it from then on.
 */
void h2_set_max_streams(struct h2conn *c, uint32_t n);

/* Changes the keepalive PING period (0 stops pings). */
void h2_set_ping_interval(struct h2conn *c, unsigned ms);
unsigned h2_ping_interval(const struct h2conn *c);

/* Keepalive PINGs of ours acknowledged so far. */
unsigned h2_pings_acked(const struct h2conn *c);

/* Nonzero once GOAWAY was sent or received, or the close began. */
int h2_is_closing(const struct h2conn *c);

#endif
