/*
 * Limits on the device port before a peer has authenticated, and the
 * counters and rate-limited log lines that tell an operator when they bite.
 *
 * The device-facing grpc_server reports every accepted connection here
 * (preauth_conn_accept) before any TLS work, when it authenticates
 * (preauth_conn_trusted, after a successful Initialize) and when it closes.
 * preauth caps connections in all, unauthenticated connections in all and
 * per address, and closes a connection that has not authenticated within
 * the deadline.  The per-connection budgets (streams, buffered bytes,
 * message sizes) are enforced by grpc_*.c and only reported here
 * (preauth_limit).
 *
 * Logging: the first time a limit bites in a minute it is logged with
 * details; the rest of the minute is counted, and one line per minute says
 * how many more there were.  Refused authentication attempts
 * (preauth_auth_refused) are aggregated the same way per (reason, id,
 * address): "N more refused for id X from Y in the last minute".
 *
 * Everything runs on the loop thread.
 */
#ifndef NCGRPC_PREAUTH_H
#define NCGRPC_PREAUTH_H

#include <stdint.h>

#include <uv.h>

#include "grpc.h"

enum preauth_counter {
	PREAUTH_C_CONNS,          /* refused: max-connections */
	PREAUTH_C_UNAUTH,         /* refused: max-unauthenticated */
	PREAUTH_C_UNAUTH_ADDR,    /* refused: ...-per-address */
	PREAUTH_C_AUTH_TIMEOUT,   /* closed: auth-timeout */
	PREAUTH_C_STREAMS,        /* stream refused: preauth-streams */
	PREAUTH_C_BUFFER,         /* call ended: preauth-buffer */
	PREAUTH_C_MESSAGE,        /* call ended: message over its limit */
	PREAUTH_C_AUTH_THROTTLED, /* Initialize refused: failure limits */
	PREAUTH_C_AUTH_BUSY,      /* Initialize refused: KDF queue full */
	PREAUTH_C_LOG_SUPPRESSED, /* log lines folded into a summary */
	PREAUTH_C_COUNT
};

struct preauth_opts {
	unsigned po_auth_timeout_ms;     /* 0: no deadline */
	unsigned po_max_conns;           /* device connections; 0: no cap */
	unsigned po_max_unauth;          /* unauthenticated; 0: no cap */
	unsigned po_max_unauth_per_addr; /* 0: no cap */
};

struct preauth;

/* Creates the limiter and starts its timer.  0 and *out, or -ENOMEM. */
int preauth_new(uv_loop_t *loop, const struct preauth_opts *opts,
                struct preauth **out);

/*
 * Stops the timer and frees pa once it is closed.  Every connection must
 * have been reported closed before.
 */
void preauth_free(struct preauth *pa);

/*
 * A connection was accepted.  Returns 0 (it is counted and its deadline
 * runs; its grpc_conn arg is taken for the bookkeeping), or -EMFILE
 * (max-connections), -EUSERS (max-unauthenticated) or -EBUSY (the
 * address's cap), and the caller drops it.  -ENOMEM when out of memory.
 */
int preauth_conn_accept(struct preauth *pa, struct grpc_conn *conn);

/*
 * Whether a new connection may be accepted now (the server's may_accept):
 * 0 while max-unauthenticated connections are not yet authenticated, and
 * new ones then wait in the kernel's listen backlog instead of being
 * refused.  A wait counts once as a max-unauthenticated hit.
 */
int preauth_may_accept(struct preauth *pa);

/*
 * The connection authenticated: it no longer counts as unauthenticated.
 * pa may be NULL.
 */
void preauth_conn_trusted(struct preauth *pa, struct grpc_conn *conn);

/* The connection is gone (accepted or not).  pa may be NULL. */
void preauth_conn_closed(struct preauth *pa, struct grpc_conn *conn);

/* grpc_*.c enforced a per-connection budget on conn. */
void preauth_limit(struct preauth *pa, struct grpc_conn *conn,
                   enum grpc_limit what);

/*
 * An Initialize from ip for device id was refused for reason ("throttled",
 * "busy", ...).  Counts it; returns 1 if the caller should log and audit
 * this one, 0 if it was folded into the summary of the minute.
 */
int preauth_auth_refused(struct preauth *pa, const char *reason, const char *id,
                         const char *ip);

/* Total since start. */
uint64_t preauth_count(const struct preauth *pa, enum preauth_counter c);
const char *preauth_counter_name(enum preauth_counter c);

/* Connections now open, and those not yet authenticated. */
unsigned preauth_nconns(const struct preauth *pa);
unsigned preauth_nunauth(const struct preauth *pa);

#endif
