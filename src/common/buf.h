/*
 * A growable byte queue with a hard size limit.
 *
 * Bytes are appended at the tail and consumed from the head.  A queue may
 * have a hard limit; queues without one must be bounded by their users
 * (HTTP/2 flow control and the high/low water marks of grpc.h and proc.h
 * bound the ones a peer can fill).
 */
#ifndef NCGRPC_BUF_H
#define NCGRPC_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *b_data;
	size_t b_off; /* first unconsumed byte */
	size_t b_len; /* end of valid bytes */
	size_t b_cap;
	size_t b_max; /* most bytes the queue may hold; 0 means SIZE_MAX */
};

/* Initialises an empty queue that will hold at most max bytes (0: no cap). */
void buf_init(struct buf *b, size_t max);

/* Frees the storage; the queue is empty and reusable afterwards. */
void buf_free(struct buf *b);

/*
 * Appends len bytes.  Returns 0, -ENOBUFS if the queue would exceed its
 * limit (nothing is appended), or -ENOMEM.
 */
int buf_append(struct buf *b, const void *data, size_t len);

/* Drops the first n bytes (n <= buf_len()). */
void buf_consume(struct buf *b, size_t n);

static inline size_t
buf_len(const struct buf *b)
{
	return b->b_len - b->b_off;
}

/*
 * The unconsumed bytes, buf_len() of them.  Never NULL: a queue without
 * storage yet has none to point into, and NULL + 0 is undefined in C.
 */
static inline const uint8_t *
buf_data(const struct buf *b)
{
	static const uint8_t empty[1];

	return b->b_data != NULL ? b->b_data + b->b_off : empty;
}

#endif
