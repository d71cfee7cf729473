/*
 * gRPC over HTTP/2: client connections, servers and calls.
 *
 * One event-driven API serves unary and streaming calls on both sides.  A
 * call reports to one struct grpc_call_ops; its on_end runs exactly once,
 * last, for every call that was started or handed to a handler, also when
 * the connection drops or the server shuts down, and the call is freed when
 * on_end returns.
 *
 * No callback runs inside the call that caused it, as in libuv: output is
 * written from the loop, so on_end never runs inside grpc_call_send(),
 * _close_send(), _finish() or _cancel(), and grpc_call_resume() delivers
 * what waits from the loop too.  A call is alive until its on_end.
 *
 * Backpressure both ways: grpc_call_pause() stops delivering messages (HTTP/2
 * flow control then stops the peer, so memory stays bounded by the window),
 * and a sender watches grpc_call_queued() and waits for on_writable.
 */
#ifndef NCGRPC_GRPC_H
#define NCGRPC_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "grpc_meta.h"
#include "xport.h"

struct grpc_conn;
struct grpc_call;
struct grpc_server;
struct tls_ctx;

/* Output queued on a call above this is "a lot": wait for on_writable. */
#define GRPC_CALL_HIWAT (256 * 1024)
/* on_writable fires when the queue falls below this after being above. */
#define GRPC_CALL_LOWAT (64 * 1024)

/* Custom metadata: keys are lowercase; values are binary for "-bin" keys. */
struct grpc_md {
	char *md_key;
	uint8_t *md_value; /* NUL-terminated for convenience */
	size_t md_len;
};

struct grpc_mdlist {
	struct grpc_md *ml_md;
	size_t ml_n;
	size_t ml_cap;
};

/*
 * Appends key/value (copied).  Returns 0, -EINVAL for an illegal key or an
 * illegal ASCII value, or -ENOMEM.
 */
int grpc_md_add(struct grpc_mdlist *ml, const char *key, const void *value,
                size_t len);
/* First entry with key, or NULL. */
const struct grpc_md *grpc_md_get(const struct grpc_mdlist *ml,
                                  const char *key);
void grpc_md_free(struct grpc_mdlist *ml);

struct grpc_call_ops {
	/* Client: the response headers arrived (grpc_call_metadata()). */
	void (*on_headers)(struct grpc_call *c, void *arg);
	/* A message; msg is valid only during the call. */
	void (*on_message)(struct grpc_call *c, const uint8_t *msg, size_t len,
	                   void *arg);
	/* Server: the client half-closed; no more messages will come. */
	void (*on_half_close)(struct grpc_call *c, void *arg);
	/* The send queue fell below GRPC_CALL_LOWAT. */
	void (*on_writable)(struct grpc_call *c, void *arg);
	/*
	 * The call is over.  Client: the server's status and message (or a
	 * local one: CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE when the
	 * connection failed, RESOURCE_EXHAUSTED for an oversized message),
	 * with trailers in grpc_call_trailers().  Server: the status that was
	 * sent, or CANCELLED when the client reset the stream or went away.
	 * message is never NULL.
	 */
	void (*on_end)(struct grpc_call *c, int status, const char *message,
	               void *arg);
};

/* Options shared by clients and servers; zero fields take defaults. */
struct grpc_opts {
	size_t go_max_message;        /* largest message received; 4 MiB */
	size_t go_max_send_message;   /* largest sent; 0: no limit, as
	                               * gRPC libraries default to */
	uint32_t go_max_streams;      /* server: concurrent streams, 100 */
	unsigned go_ping_interval_ms; /* HTTP/2 keepalive PING; 0: none */
	unsigned go_ping_timeout_ms;  /* default 20 s */
	/* client: too_many_pings doubles the interval up to this; 0: no cap */
	unsigned go_ping_interval_max_ms;
	struct xport_opts go_xport; /* timeouts and TCP keepalive */
	/*
	 * Server: budgets of a connection until grpc_conn_set_trusted()
	 * (the peer authenticated).  go_preauth_streams caps its concurrent
	 * streams (SETTINGS and enforced: more are refused), and
	 * go_preauth_buffer the bytes of request messages it may have
	 * buffered across its calls (a call that would go over ends with
	 * RESOURCE_EXHAUSTED).  0 means no separate limit.
	 */
	uint32_t go_preauth_streams;
	size_t go_preauth_buffer;
	/*
	 * Server: RST_STREAMs a client may send before nghttp2 tears its
	 * connection down as a rapid reset (h2.h: ho_reset_burst, then
	 * go_reset_rate a second); 0: nghttp2's 1,000 and 33.  A gRPC client
	 * ends with one every call that the server finished while the
	 * client's half was open, so a client of many calls on one
	 * connection needs more.
	 */
	uint32_t go_reset_burst;
	uint32_t go_reset_rate;
};

/* Server limits reported to grpc_server_ops.on_limit. */
enum grpc_limit {
	GRPC_LIMIT_STREAMS, /* go_preauth_streams: a stream was refused */
	GRPC_LIMIT_BUFFER,  /* go_preauth_buffer: a call was ended */
	GRPC_LIMIT_MESSAGE, /* a message declared over its method limit */
};

struct grpc_conn_ops {
	/* Connected (TLS verified, preface sent): calls can start. */
	void (*on_ready)(struct grpc_conn *conn, void *arg);
	/*
	 * GOAWAY received.  A client whose pings were refused as
	 * "too_many_pings" has its ping interval doubled (never beyond
	 * go_ping_interval_max_ms) before this runs.
	 */
	void (*on_goaway)(struct grpc_conn *conn, uint32_t error_code,
	                  const char *debug, void *arg);
	/*
	 * The connection is gone, err 0 after an orderly close.  Every call
	 * on it has had its on_end.  conn is freed after this returns.
	 */
	void (*on_closed)(struct grpc_conn *conn, int err, const char *reason,
	                  void *arg);
};

/*
 * Opens a client connection to host:port with TLS (ctx from
 * tls_ctx_client_new()), or in cleartext when ctx is NULL.  Calls may be
 * started once on_ready ran.  Returns 0 and sets *out, or -EINVAL, -ENOMEM
 * or a resolver error code; then no callback runs.
 */
int grpc_conn_connect(uv_loop_t *loop, const char *host, uint16_t port,
                      struct tls_ctx *ctx, const struct grpc_opts *opts,
                      const struct grpc_conn_ops *ops, void *arg,
                      struct grpc_conn **out);

/* Same over a Unix socket, in cleartext (h2c with prior knowledge). */
int grpc_conn_connect_unix(uv_loop_t *loop, const char *path,
                           const struct grpc_opts *opts,
                           const struct grpc_conn_ops *ops, void *arg,
                           struct grpc_conn **out);

/*
 * Closes a connection: with err == 0 gracefully (GOAWAY, calls in flight
 * finish), otherwise at once with calls ended as UNAVAILABLE.
 */
void grpc_conn_close(struct grpc_conn *conn, int err);

/*
 * Server side of a Unix socket: the peer's uid.  0 and *uid, or -ENOENT.
 */
int grpc_conn_peer_uid(const struct grpc_conn *conn, uid_t *uid);

/* "ADDR:PORT" of the peer, or "unix": for messages. */
const char *grpc_conn_peer(const struct grpc_conn *conn);

/*
 * Messages received on the connection's calls so far: those handed to
 * on_message where they lay in a DATA frame, and those a deframer
 * reassembled (one copy more).  For tests and benchmarks.
 */
void grpc_conn_rx_counts(const struct grpc_conn *conn, uint64_t *inplace,
                         uint64_t *copied);
/* The peer's address, whole (addr.h): for decisions keyed by address. */
const struct peer *grpc_conn_peer_addr(const struct grpc_conn *conn);
/* TLS session resumption of the connection's transport (xport.h). */
int grpc_conn_issue_ticket(struct grpc_conn *conn, const uint8_t *appdata,
                           size_t len);
int grpc_conn_ticket_appdata(const struct grpc_conn *conn, const uint8_t **data,
                             size_t *len);
int grpc_conn_resumed(const struct grpc_conn *conn);
/*
 * The subject CN of the peer's verified certificate (a client certificate
 * on a server with tls_ctx_server_require_client()), into buf as
 * tls_conn_peer_name() does.  0, or -ENOENT (none, or cleartext).
 */
int grpc_conn_peer_cert_name(const struct grpc_conn *conn, char *buf,
                             size_t len);
/*
 * The TLS handshake of a connection a server accepted: 1 when it is done
 * (ALPN h2 agreed and the connection ready), with its duration from the
 * accept in nanoseconds in *ns (ns may be NULL); 0 while it runs, which at
 * on_conn_closed means it failed or timed out; -1 for none (a client or
 * cleartext connection, or one on_conn_accept refused).
 */
int grpc_conn_handshake(const struct grpc_conn *conn, uint64_t *ns);
void *grpc_conn_arg(const struct grpc_conn *conn);
uv_loop_t *grpc_conn_loop(const struct grpc_conn *conn);
void grpc_conn_set_arg(struct grpc_conn *conn, void *arg);
/*
 * Server: the peer has authenticated.  Lifts the go_preauth_* budgets
 * (the stream limit goes up to go_max_streams in a new SETTINGS) and runs
 * grpc_server_ops.on_conn_trusted.  Harmless when called again.
 */
void grpc_conn_set_trusted(struct grpc_conn *conn);
int grpc_conn_trusted(const struct grpc_conn *conn);

/* The current keepalive PING period (changes after too_many_pings). */
unsigned grpc_conn_ping_interval(const struct grpc_conn *conn);

/* Keepalive PINGs of ours the peer has acknowledged on this connection. */
unsigned grpc_conn_pings_acked(const struct grpc_conn *conn);

/*
 * Starts a client call of method path (e.g. "/pkg.Service/Method") with
 * request metadata md (may be NULL) and a deadline timeout_ms from now (0:
 * none).  Returns 0 and sets *out, or -EINVAL (bad path or metadata),
 * NCG_ECLOSED (connection not ready or going away) or -ENOMEM; then
 * on_end never runs.
 */
int grpc_call_start(struct grpc_conn *conn, const char *path,
                    const struct grpc_mdlist *md, uint64_t timeout_ms,
                    const struct grpc_call_ops *ops, void *arg,
                    struct grpc_call **out);

/*
 * Queues one message (copied).  Returns 0, -EMSGSIZE when len exceeds
 * go_max_send_message (or 4 GiB), -EPIPE after the sending side was closed or
 * the call ended, or -ENOMEM.
 */
int grpc_call_send(struct grpc_call *c, const uint8_t *msg, size_t len);

/*
 * Queues one protobuf message, packed straight behind its prefix (no copy
 * of its own).  Returns as grpc_call_send().
 */
int grpc_call_send_pb(struct grpc_call *c, const ProtobufCMessage *m);

/* Bytes queued on the call and not yet handed to HTTP/2. */
size_t grpc_call_queued(const struct grpc_call *c);

/*
 * Has on_writable run once, from the loop, after the connection's next
 * pass has handed what it could to the transport: the HEADERS of a call
 * just started are then on their way (unless the transport was above its
 * high-water mark).  If the connection closes first, only on_end runs.
 */
void grpc_call_notify_flushed(struct grpc_call *c);

/*
 * Client: no more messages (END_STREAM after the queued ones).  Returns 0,
 * -EALREADY, or -EINVAL on a server call.
 */
int grpc_call_close_send(struct grpc_call *c);

/*
 * Server: sends headers now (with md, may be NULL); otherwise they go with
 * the first message or the status.  Returns 0, -EALREADY, -EINVAL, -ENOMEM.
 */
int grpc_call_send_headers(struct grpc_call *c, const struct grpc_mdlist *md);

/*
 * Server: ends the call after the queued messages, with status, message
 * (may be NULL) and trailing metadata (may be NULL).  Returns 0, -EALREADY,
 * -EINVAL on a client call, or -ENOMEM (then nothing was sent and the call
 * may be finished again).  on_end follows once the stream is closed.
 */
int grpc_call_finish(struct grpc_call *c, int status, const char *message,
                     const struct grpc_mdlist *trailers);

/*
 * Cancels the call (RST_STREAM CANCEL).  on_end follows with CANCELLED,
 * from the event loop or right away; it is safe to call at any time
 * before on_end, also from the call's own callbacks.
 */
void grpc_call_cancel(struct grpc_call *c);

/*
 * Server: the largest message this call accepts, checked against the
 * length prefix as soon as it arrives (RESOURCE_EXHAUSTED, without reading
 * the body).  For handlers, which run before any message is read; the
 * default is go_max_message.
 */
void grpc_call_set_max_message(struct grpc_call *c, size_t max);

/*
 * Stops and resumes delivery of messages to on_message.  When the stream of
 * a paused call ends, on_end runs and messages not delivered yet are
 * dropped, unless grpc_call_deliver_all() was called.
 */
void grpc_call_pause(struct grpc_call *c);
void grpc_call_resume(struct grpc_call *c);

/*
 * Client: every message that arrives is delivered, also when the stream
 * ends while the call is paused: on_end then waits for grpc_call_resume()
 * to deliver them (grpc_call_cancel() drops them and ends the call).  For
 * callers that pause only while their reader is slow and always resume
 * (ncgrpc-sshd); a caller that may never resume must not use it.  No
 * effect on a server call.
 */
void grpc_call_deliver_all(struct grpc_call *c);

/*
 * Client: response headers; server: request metadata.  Custom keys only
 * (no pseudo-headers, no grpc-*, no reserved HTTP headers).
 */
const struct grpc_mdlist *grpc_call_metadata(const struct grpc_call *c);
/* Client: trailing metadata (custom keys), complete in on_end. */
const struct grpc_mdlist *grpc_call_trailers(const struct grpc_call *c);
/* The method path. */
const char *grpc_call_path(const struct grpc_call *c);
struct grpc_conn *grpc_call_conn(const struct grpc_call *c);
/* Server: the deadline the client gave, in ms from arrival, or 0. */
uint64_t grpc_call_timeout(const struct grpc_call *c);
/* Sets the call's callbacks; a server handler must do so before returning. */
void grpc_call_set_ops(struct grpc_call *c, const struct grpc_call_ops *ops,
                       void *arg);

/*
 * A server handler: a call to its method arrived with its headers.  It
 * must call grpc_call_set_ops(), or end the call with grpc_call_finish().
 */
typedef void (*grpc_handler_fn)(struct grpc_call *c, void *arg);

/* How often a listener held by may_accept asks again. */
#define GRPC_ACCEPT_RETRY_MS 5

struct grpc_server_ops {
	/*
	 * Asked before each new connection is accepted: return 0 to leave it
	 * and the ones behind it in the listen backlog for now.  The server
	 * asks again every GRPC_ACCEPT_RETRY_MS until it may go on.  Meant
	 * for limits that free themselves soon (connections that have not
	 * authenticated yet).  May be NULL.
	 */
	int (*may_accept)(void *arg);
	/*
	 * A TCP or Unix connection was just accepted, before any TLS work;
	 * grpc_conn_peer() is known.  Return 0 to go on, or a negative code
	 * to drop it at once (on_conn_closed still follows, with that code).
	 * May be NULL.
	 */
	int (*on_conn_accept)(struct grpc_conn *conn, void *arg);
	/* A connection was accepted (TLS verified); may be NULL. */
	void (*on_conn_open)(struct grpc_conn *conn, void *arg);
	/* grpc_conn_set_trusted() ran for the first time; may be NULL. */
	void (*on_conn_trusted)(struct grpc_conn *conn, void *arg);
	/* A limit refused a stream or ended a call; may be NULL. */
	void (*on_limit)(struct grpc_conn *conn, enum grpc_limit what,
	                 void *arg);
	/* A connection ended, after all its calls ended; may be NULL. */
	void (*on_conn_closed)(struct grpc_conn *conn, int err,
	                       const char *reason, void *arg);
};

/* Creates a server.  Returns 0 and sets *out, or -ENOMEM. */
int grpc_server_new(uv_loop_t *loop, const struct grpc_opts *opts,
                    const struct grpc_server_ops *ops, void *arg,
                    struct grpc_server **out);

/*
 * Routes calls to path to handler.  Calls to any other path end with
 * UNIMPLEMENTED.  Returns 0, -EEXIST or -ENOMEM.
 */
int grpc_server_add_method(struct grpc_server *srv, const char *path,
                           grpc_handler_fn handler, void *arg);

/*
 * Listens on host:port (host an IP address; "::" listens on every
 * address, IPv4 too) with TLS ctx from tls_ctx_server_new().  port 0 picks
 * a free port; grpc_server_port() tells which.  Returns 0 or a negative
 * code (-EADDRINUSE, -EACCES, -EINVAL ...).
 */
int grpc_server_listen(struct grpc_server *srv, const char *host, uint16_t port,
                       struct tls_ctx *ctx);

/*
 * Listens on a Unix socket at path (cleartext h2c), replacing a stale
 * socket file, with permissions mode.  Returns 0 or a negative code.
 */
int grpc_server_listen_unix(struct grpc_server *srv, const char *path,
                            int mode);

/* The TCP port listened on, or 0. */
uint16_t grpc_server_port(const struct grpc_server *srv);

/*
 * Stops listening, sends GOAWAY on every connection, lets calls in flight
 * run for up to grace_ms, then closes what is left.  done runs once every
 * connection and the listeners are closed, right after the server was
 * freed.
 */
void grpc_server_shutdown(struct grpc_server *srv, unsigned grace_ms,
                          void (*done)(void *arg), void *arg);

#endif
