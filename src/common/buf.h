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

/*
 * Makes room for len more bytes, so that appends of up to len bytes in all
 * cannot fail until the queue changes otherwise.  Returns 0, -ENOBUFS (over
 * the limit), or -ENOMEM; the contents are unchanged either way.
 */
int buf_reserve(struct buf *b, size_t len);

/*
 * Writing in place: after buf_reserve(b, len) succeeded, up to len bytes
 * may be written at buf_tail(b) and then added with buf_commit(b, n),
 * n <= len, instead of being copied in with buf_append().
 */
static inline uint8_t *
buf_tail(struct buf *b)
{
	return b->b_data + b->b_len;
}

void buf_commit(struct buf *b, size_t n);

/* Drops the first n bytes (n <= buf_len()). */
void buf_consume(struct buf *b, size_t n);

static inline size_t
buf_len(const struct buf *b)
{
	return b->b_len - b->b_off;
}

/*
 * The first unconsumed byte; valid until the next append, consume or free.
 * Never NULL: an empty queue that never held storage returns a pointer to
 * a static byte, so callers may pass it to memcpy() with a length of 0
 * (and no NULL + 0 arithmetic happens here).
 */
static inline const uint8_t *
buf_data(const struct buf *b)
{
	static const uint8_t buf_empty[1];

	return b->b_data != NULL ? b->b_data + b->b_off : buf_empty;
}

#endif
