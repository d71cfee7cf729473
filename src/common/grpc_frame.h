/*
 * gRPC message framing (the 5-byte length prefix of the gRPC-over-HTTP/2
 * protocol): a push deframer that reassembles messages across any split of
 * DATA frames, and the prefix encoder.
 */
#ifndef NCGRPC_GRPC_FRAME_H
#define NCGRPC_GRPC_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GRPC_FRAME_HDR_LEN       5
#define GRPC_DEFAULT_MAX_MESSAGE (4u * 1024 * 1024)

struct grpc_deframer {
	uint8_t df_hdr[GRPC_FRAME_HDR_LEN];
	size_t df_hdr_have;
	uint8_t *df_msg; /* grows as bytes arrive, never past df_msg_len */
	size_t df_msg_cap;
	size_t df_msg_len; /* declared length of the current message */
	size_t df_msg_have;
	size_t df_max;   /* largest message accepted */
	int df_complete; /* a whole message is waiting in df_msg */
	int df_error;    /* sticky error, 0 if none */
};

/* Initialises a deframer accepting messages of at most max bytes. */
void grpc_deframer_init(struct grpc_deframer *d, size_t max);
void grpc_deframer_free(struct grpc_deframer *d);

/*
 * Consumes input, stopping right after a message is complete so that the
 * caller can take it before feeding more (this is what lets a slow consumer
 * push back).  Returns the number of bytes consumed (0..len), or:
 *   -EMSGSIZE         declared length exceeds the maximum
 *   -EPROTONOSUPPORT  compressed flag set (no compression is negotiated)
 *   -EPROTO           flag byte other than 0 or 1
 *   -ENOMEM
 * Errors are sticky.  While a complete message waits untaken, returns 0.
 * Memory is allocated as bytes arrive, so a peer that declares 4 MiB and
 * sends 10 bytes costs about 10 bytes, not 4 MiB.
 */
ssize_t grpc_deframer_feed(struct grpc_deframer *d, const uint8_t *data,
                           size_t len);

/*
 * The copy-free way for a message that lies whole in data: when d is
 * between messages (nothing fed of the next one) and data starts with a
 * well-formed prefix and the whole body it announces, within the maximum,
 * sets *msg to the body inside data and *mlen to its length, and returns
 * the bytes it spans (prefix and body); d does not change.  Returns 0 when
 * that is not so (a message cut by the end of data, a bad flag byte, a
 * message too big, or d in the middle of one): feed the bytes then, which
 * also reports what is wrong.  Returns d's sticky error if it has one.
 */
ssize_t grpc_deframer_whole(struct grpc_deframer *d, const uint8_t *data,
                            size_t len, const uint8_t **msg, size_t *mlen);

/*
 * If a whole message is waiting, hands it over: *msg (malloc'd, the caller
 * frees it; non-NULL even for an empty message) and *len, and returns 1.
 * Returns 0 if no message is complete.
 */
int grpc_deframer_take(struct grpc_deframer *d, uint8_t **msg, size_t *len);

/*
 * Changes the largest message accepted.  It applies to the next length
 * prefix; one already read was checked against the old maximum.
 */
void grpc_deframer_set_max(struct grpc_deframer *d, size_t max);

/* Bytes of message body the deframer has allocated (memory accounting). */
size_t grpc_deframer_held(const struct grpc_deframer *d);

/* Nonzero when a message has started but is not complete (truncated). */
int grpc_deframer_partial(const struct grpc_deframer *d);

/* Writes the 5-byte prefix of an uncompressed message of len bytes. */
void grpc_frame_header(uint8_t out[GRPC_FRAME_HDR_LEN], uint32_t len);

#endif
