/*
 * Transport: a byte stream over a libuv TCP or Unix socket, with TLS as an
 * optional layer (tls.h) underneath.  The layer above (h2.c) sees only
 * plaintext, a "ready" event once connected (and, with TLS, once the
 * handshake and its checks passed), and one final "closed" event.
 *
 * Contract: when xport_connect() or xport_accept() fails, no callback ever
 * runs.  Otherwise xc_closed runs exactly once, also when xport_close() is
 * called by the owner, and the xport is freed right after it returns.
 */
#ifndef NCGRPC_XPORT_H
#define NCGRPC_XPORT_H

#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include <uv.h>

#include "addr.h"

struct tls_ctx;
struct xport;

struct xport_cb {
	/* Connected and, with TLS, handshake done with ALPN h2. */
	void (*xc_ready)(struct xport *x, void *arg);
	/* Plaintext from the peer; valid only during the call. */
	void (*xc_data)(struct xport *x, const uint8_t *data, size_t len,
	                void *arg);
	/* Everything written so far has been handed to the kernel. */
	void (*xc_drain)(struct xport *x, void *arg);
	/*
	 * The transport is gone.  err is 0 after an orderly xport_close(x, 0),
	 * otherwise the reason (NCG_E* or -errno); xport_errmsg() may say
	 * more.  Last callback: x is freed when it returns.
	 */
	void (*xc_closed)(struct xport *x, int err, void *arg);
};

struct xport_opts {
	unsigned xo_connect_timeout_ms;   /* per connection attempt; 0: 10 s */
	unsigned xo_handshake_timeout_ms; /* TLS handshake; 0: 10 s */
	unsigned xo_keepalive_idle;       /* TCP keepalive, seconds; 0: off */
	unsigned xo_keepalive_intvl;      /* probe interval, seconds */
	unsigned xo_keepalive_cnt;        /* probes before the peer is dead */
	/*
	 * TCP_USER_TIMEOUT: a connection whose sent data stays unacknowledged
	 * this long, or whose keepalive probes go unanswered this long, is
	 * dropped (as ETIMEDOUT).  0 leaves the kernel default (about 15
	 * minutes of retransmissions).
	 */
	unsigned xo_user_timeout_ms;
	/*
	 * Client: whose TLS session tickets these are.  Connections that
	 * share a tls_ctx keep their tickets apart by it (the key is the tag,
	 * a space and "host:port"), so that one never resumes a session
	 * another authenticated.  NULL: the tickets go by "host:port" alone.
	 */
	const char *xo_resume_tag;
};

/*
 * Fits o to notice a dead peer within seconds, idle or busy (0 changes
 * nothing): sets xo_user_timeout_ms to seconds, turns TCP keepalive on and
 * shortens its idle time to seconds/2 and its interval to seconds/6 (each
 * at least 1 s, never longer than configured), so that on an idle
 * connection the probes reach the user timeout within the bound, and caps
 * xo_connect_timeout_ms (default 10 s) at seconds, so that a failover to
 * the next address also starts within it.
 */
void xport_opts_dead_peer(struct xport_opts *o, unsigned seconds);

/*
 * Resolves host (asynchronously) and connects to each address in turn until
 * one accepts (an attempt that is refused, fails or times out moves on to
 * the next address; resolving shares the first attempt's timeout); with ctx (a
 * client tls_ctx), then runs the TLS handshake, verifying the certificate
 * against host.  host may be a name, an IPv4 address, or an IPv6 address
 * without brackets.  Returns 0 and sets *out, or -EINVAL / -ENOMEM (no callback
 * then).
 */
int xport_connect(uv_loop_t *loop, const char *host, uint16_t port,
                  struct tls_ctx *ctx, const struct xport_opts *opts,
                  const struct xport_cb *cb, void *arg, struct xport **out);

/* Connects to a Unix socket at path, without TLS. */
int xport_connect_unix(uv_loop_t *loop, const char *path,
                       const struct xport_cb *cb, void *arg,
                       struct xport **out);

/*
 * Accepts one connection from a listening TCP or pipe handle; with ctx (a
 * server tls_ctx) runs the server side of the handshake.  Returns 0 and
 * sets *out, or a negative code (no callback then).
 */
int xport_accept(uv_stream_t *server, struct tls_ctx *ctx,
                 const struct xport_opts *opts, const struct xport_cb *cb,
                 void *arg, struct xport **out);

/*
 * Queues len bytes for sending (copied; encrypted first with TLS).  Only
 * after xc_ready.  Returns 0, -ENOMEM, NCG_ETLS, or NCG_ECLOSED when the
 * transport is closing.  Callers bound their use with xport_queued().
 */
int xport_write(struct xport *x, const uint8_t *data, size_t len);

/* Bytes accepted by xport_write() and not yet handed to the kernel. */
size_t xport_queued(const struct xport *x);

/*
 * Closes.  Output queued so far is flushed first, bounded by a short timer;
 * with err == 0 TLS also sends close_notify.  err (when nonzero) is what
 * xc_closed reports.
 * xc_closed runs later, from the event loop, never from inside this call.
 * Calling it again is harmless.
 */
void xport_close(struct xport *x, int err);

uv_loop_t *xport_loop(const struct xport *x);

/* Stops and restarts reading from the socket. */
void xport_pause(struct xport *x);
void xport_resume(struct xport *x);

/* Detail of the failure passed to xc_closed, or "". */
const char *xport_errmsg(const struct xport *x);

/*
 * The uid of the process at the other end of an accepted Unix socket
 * (SO_PEERCRED).  Returns 0 and sets *uid, or -ENOENT (TCP, or unknown).
 */
int xport_peer_uid(const struct xport *x, uid_t *uid);

/* The peer as "ADDR:PORT" ("[v6]:PORT"), or "unix" for a Unix socket. */
const char *xport_peer(const struct xport *x);
/* The peer's address, whole (addr.h); valid while x is. */
const struct peer *xport_peer_addr(const struct xport *x);

/*
 * TLS session resumption (tls.h).  Server: xport_issue_ticket() sends the
 * client a ticket holding appdata (0, -ENOTSUP without TLS 1.3 or a ticket
 * key, NCG_ECLOSED, -ENOMEM); xport_ticket_appdata() reads back that of the
 * ticket the client resumed with (0 or -ENOENT).  Both sides:
 * xport_resumed() tells whether the handshake was a resumption.
 */
int xport_issue_ticket(struct xport *x, const uint8_t *appdata, size_t len);
int xport_ticket_appdata(const struct xport *x, const uint8_t **data,
                         size_t *len);
int xport_resumed(const struct xport *x);
/* The verified peer certificate's CN (tls_conn_peer_name()); -ENOENT too
 * for a cleartext transport. */
int xport_peer_cert_name(const struct xport *x, char *buf, size_t len);

#endif
