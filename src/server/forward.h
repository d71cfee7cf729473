/*
 * Node-to-node forwarding of operator sessions (docs/cluster.md,
 * docs/internals/forward.md).
 *
 * When an operator's Session asks for a device that is not connected to
 * this node, and the resolver names another node for it, the session is
 * opened there: the Session call is made on that node's inter-node port
 * (gRPC over mutual TLS, the operator API's own method) and relayed both
 * ways, message for message, with backpressure.  One connection per peer
 * node is kept and reused; a lost connection ends its sessions with
 * "node X connection lost"; an operator who hangs up cancels the remote
 * call.  A session is forwarded at most once: calls that came in on the
 * inter-node port are never forwarded again.
 *
 * One forwarder per process (ncgrpcd); every function runs on its loop.
 */
#ifndef NCGRPC_FORWARD_H
#define NCGRPC_FORWARD_H

#include <stddef.h>

#include <uv.h>

#include "broker.h"
#include "ncgrpc_operator.pb-c.h"

struct grpc_call;
struct tls_ctx;

/* Peer nodes with a connection at once; more are refused. */
#define FORWARD_MAX_PEERS 64
/* Sessions waiting for one peer's connection to come up. */
#define FORWARD_MAX_WAITING 256
/* Longest "HOST:PORT" a resolver may return. */
#define FORWARD_ADDR_MAX 280

/*
 * The resolver hook: the address ("HOST:PORT", "[V6]:PORT") of the node
 * that holds device_id now, or NULL when no other node does (or it is not
 * known): the session then stays here, and the broker waits for the
 * device or refuses it as usual.  It must not return this node's own
 * address.  It runs on the loop, for each Session of a device not
 * connected here, and must not block; the string must stay valid until
 * the next call.  The cluster core installs it with forward_set_resolver().
 */
typedef const char *(*forward_resolver_fn)(const char *device_id, void *arg);

/*
 * Starts the forwarder: ctx (a client context with the cluster CA and this
 * node's certificate, tls_ctx_client_set_cert()) is used for every peer
 * connection.  The caller keeps ctx alive until forward_free().
 * Returns 0 or -EALREADY.
 */
int forward_init(uv_loop_t *loop, struct tls_ctx *ctx);

/* Installs (or with NULL removes) the resolver.  Harmless before init. */
void forward_set_resolver(forward_resolver_fn fn, void *arg);

/*
 * The node holding device_id, by the resolver: its address, valid until the
 * next call, or NULL (no forwarder, no resolver, or the resolver says
 * none).
 */
const char *forward_resolve(const char *device_id);

/*
 * Takes over the operator's Session call op, whose first message was open,
 * and opens it on the node at addr (from forward_resolve()).  ident is the
 * local operator (copied): it goes to the other node in the open message
 * (operator_name "uid:N" when a front door named nobody) and to this
 * node's audit log.  From now on the forwarder owns op's callbacks and ends
 * it.  Cannot fail: every error ends op with its reason.
 */
void forward_session(struct grpc_call *op, const char *addr,
                     const Ncgrpc__Operator__V1__SessionOpen *open,
                     const struct broker_ident *ident);

/*
 * Shutdown: ends every forwarded session (the operator is told why) and
 * closes the peer connections.  Their handles are closed once the loop
 * runs on.
 */
void forward_shutdown(const char *why);

/* After the loop ended: frees what is left.  Harmless without init. */
void forward_free(void);

/* Forwarded sessions running or waiting now (for tests and logs). */
size_t forward_nsessions(void);

#endif
