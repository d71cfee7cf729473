/*
 * Internals of the gRPC layer, shared by its three parts:
 *  - grpc_call.c: calls (lifetime, sending, receiving, the stream callbacks
 *    of h2.c) and metadata lists;
 *  - grpc_conn.c: connections (h2.c's connection callbacks, client
 *    connections);
 *  - grpc_server.c: servers (methods, listeners, dispatch, shutdown).
 * grpc.h is the contract; nothing outside these files includes this one.
 * Functions shared between the parts are named grpc__*, as libuv names
 * its internals uv__*.
 */
#ifndef NCGRPC_GRPC_INT_H
#define NCGRPC_GRPC_INT_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "buf.h"
#include "grpc.h"
#include "grpc_frame.h"
#include "h2.h"

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
	struct grpc_conn *ca_conn;
	int32_t ca_stream_id;
	int ca_server;
	char *ca_path;
	const struct grpc_call_ops *ca_ops;
	void *ca_arg;
	struct grpc_mdlist ca_md;
	struct grpc_mdlist ca_trailers;
	struct grpc_deframer ca_df;
	struct buf ca_rbuf;
	struct buf ca_wbuf;
	/*
	 * Bytes from the head of ca_wbuf to the next message boundary (0 at
	 * one).  From there the queue is a walk of gRPC prefixes, which lets
	 * call_read_cb() cut DATA frames where messages end
	 * (call_frame_len()).
	 */
	size_t ca_wmsg;
	size_t ca_md_bytes;
	uint64_t ca_timeout_ms;
	uv_timer_t ca_timer;
	int ca_timer_used;
	enum call_recv ca_recv;
	enum call_deliver ca_deliver;
	enum call_send ca_send;
	enum call_life ca_life;
	int ca_want_process; /* resumed: deliver from the loop */
	int ca_bad_request;  /* server: method/content-type unusable */
	int ca_deferred;     /* data provider is deferred */
	int ca_want_writable;
	int ca_above_lowat;
	int ca_http_status;
	int ca_have_status; /* ca_status came from the peer or finish */
	int ca_status;
	char *ca_message;
	int ca_local_status; /* client: status decided here, or -1 */
	char *ca_local_message;
	struct grpc_mdlist ca_send_trailers;
	int ca_counted; /* server: counted in gc_nstreams */
	/*
	 * Client, with grpc_call_deliver_all(): the stream closed while the
	 * call was paused with messages not delivered yet.  The call stays
	 * LIFE_CLOSED, and on_end waits until resumed delivery has handed
	 * them over (or a cancel dropped them); conn_on_deferred() ends it.
	 */
	int ca_deliver_all;
	int ca_end_pending;
	size_t ca_held; /* server: counted in gc_buffered */
	LIST_ENTRY(grpc_call) ca_entry;
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
	uint64_t gc_hs_start;   /* server TLS: uv_hrtime() at accept; 0: none */
	uint64_t gc_hs_ns;      /* the handshake's duration, once ready */
	uint64_t gc_rx_inplace; /* messages taken where they lay in a frame */
	uint64_t gc_rx_copied;  /* messages reassembled by a deframer */
	int gc_trusted;         /* server: grpc_conn_set_trusted() ran */
	uint32_t gc_nstreams;   /* server: calls on it not yet freed */
	size_t gc_buffered;     /* server: request bytes held by its calls */
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
	int gl_held; /* libuv holds one accepted fd; the backlog waits */
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
	uv_timer_t gs_resume; /* while a listener is held: may_accept again? */
	size_t gs_open_listeners; /* listener handles not yet closed */
	void (*gs_done)(void *);
	void *gs_done_arg;
};

/* grpc_call.c */
void grpc__call_set_life(struct grpc_call *c, enum call_life st);
void grpc__call_drop(struct grpc_call *c);
struct grpc_call *grpc__call_new(struct grpc_conn *conn, int server);
void grpc__call_finalize(struct grpc_call *c, int status, const char *msg);
void grpc__call_on_end_sent(struct h2conn *h, void *st);
void grpc__call_process(struct grpc_call *c);
void grpc__call_on_data(struct h2conn *h, void *st, const uint8_t *data,
                        size_t len);
void grpc__call_on_data_end(struct h2conn *h, void *st);
int grpc__call_send_data(struct h2conn *h, void *source, size_t len);
int grpc__call_on_header(struct h2conn *h, void *st, const nghttp2_nv *nv);
void grpc__call_end_pending(struct grpc_call *c);
void grpc__call_start_deadline(struct grpc_call *c, uv_loop_t *loop);
void grpc__call_on_headers_end(struct h2conn *h, void *st, int end_stream);
void grpc__call_on_stream_close(struct h2conn *h, void *st,
                                uint32_t error_code);

/* grpc_conn.c */
void grpc__conn_report_limit(struct grpc_conn *conn, enum grpc_limit what);
extern const struct h2_stream_ops grpc__h2_ops;
void grpc__opts_defaults(struct grpc_opts *o, const struct grpc_opts *in);
struct h2_opts grpc__h2_opts_from(const struct grpc_opts *o, int server);
void grpc__conn_discard(struct grpc_conn *conn);

/* grpc_server.c */
void grpc__server_dispatch(struct grpc_call *c);
void grpc__server_conn_gone(struct grpc_server *srv);

#endif
