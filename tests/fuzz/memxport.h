/*
 * An in-memory transport for fuzzing and unit-testing h2.c and grpc_*.c
 * without sockets.
 *
 * memxport.c implements the xport.h API that h2.c and grpc_*.c use, so a
 * fuzz target or a unit test links it instead of src/common/xport.c.  The
 * harness feeds the peer's bytes with memxport_feed() and drives the libuv
 * loop itself; what the connection writes is counted (and optionally
 * handed to a sink) but goes nowhere.  Events keep the real transport's
 * order: a server transport is ready from the loop after xport_accept()
 * returns (as a cleartext accept is), a client transport when the harness
 * calls memxport_ready(); "everything written" (xc_drain) and xc_closed
 * come later from the loop, never from inside xport_write() or
 * xport_close().
 */
#ifndef NCGRPC_MEMXPORT_H
#define NCGRPC_MEMXPORT_H

#include <stddef.h>
#include <stdint.h>

struct xport;

/* The transport made most recently by xport_connect() or xport_accept(). */
struct xport *memxport_last(void);

/* Client transports: the "connection" is up; runs xc_ready now. */
void memxport_ready(struct xport *x);

/*
 * Delivers len bytes from the peer to xc_data, as one read would.
 * Returns 0, or -EPIPE when the transport is not ready or is closing (the
 * bytes are dropped, as a closing socket's input is).
 */
int memxport_feed(struct xport *x, const uint8_t *data, size_t len);

/* The peer closed its side: the transport closes as on EOF. */
void memxport_eof(struct xport *x);

/* Receives everything the connection writes, if set (NULL: discarded). */
typedef void (*memxport_sink_fn)(const uint8_t *data, size_t len, void *arg);
void memxport_set_sink(struct xport *x, memxport_sink_fn fn, void *arg);

/* Number of transports not yet freed, to check that none leaks. */
size_t memxport_live(void);

/*
 * Number of transport events (xc_ready, xc_drain, xc_closed) due on the next
 * loop turn.  A harness turns the loop while this is nonzero, and so does not
 * pay for a loop turn when nothing is due.
 */
size_t memxport_pending(void);

#endif
