#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "grpc_frame.h"

/*
 * The first allocation for a message body.  Small enough that a peer which
 * declares a large message and then stalls costs little, large enough that
 * typical small messages need a single allocation.
 */
#define DF_MIN_CAP 256

void
grpc_deframer_init(struct grpc_deframer *d, size_t max)
{
	memset(d, 0, sizeof(*d));
	d->df_max = max;
}

void
grpc_deframer_free(struct grpc_deframer *d)
{
	size_t max = d->df_max;

	free(d->df_msg);
	memset(d, 0, sizeof(*d));
	d->df_max = max;
}

/*
 * Makes room for need bytes of the current body.  The buffer grows
 * geometrically to keep copying linear, but never past the declared length:
 * what a peer costs us is bounded by what it has actually sent.
 */
static int
df_reserve(struct grpc_deframer *d, size_t need)
{
	size_t cap;
	uint8_t *p;

	if (need <= d->df_msg_cap)
		return 0;
	cap = d->df_msg_cap < DF_MIN_CAP ? DF_MIN_CAP : d->df_msg_cap;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > d->df_msg_len)
		cap = d->df_msg_len;
	p = realloc(d->df_msg, cap);
	if (p == NULL)
		return -ENOMEM;
	d->df_msg = p;
	d->df_msg_cap = cap;
	return 0;
}

/* Validates a complete header and prepares for the body it announces. */
static int
df_start_body(struct grpc_deframer *d)
{
	uint32_t len;

	len = (uint32_t)d->df_hdr[1] << 24 | (uint32_t)d->df_hdr[2] << 16 |
	      (uint32_t)d->df_hdr[3] << 8 | (uint32_t)d->df_hdr[4];
	if (len > d->df_max)
		return -EMSGSIZE;
	d->df_msg_len = len;
	d->df_msg_have = 0;
	/*
	 * take() promises a non-NULL pointer even for an empty message, and
	 * take() has no way to report -ENOMEM, so allocate that byte here.
	 */
	if (len == 0 && d->df_msg == NULL) {
		d->df_msg = malloc(1);
		if (d->df_msg == NULL)
			return -ENOMEM;
		d->df_msg_cap = 1;
	}
	return 0;
}

ssize_t
grpc_deframer_feed(struct grpc_deframer *d, const uint8_t *data, size_t len)
{
	size_t off = 0, n;
	int rc;

	if (d->df_error != 0)
		return d->df_error;
	if (d->df_complete || len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;

	if (d->df_hdr_have < GRPC_FRAME_HDR_LEN) {
		n = GRPC_FRAME_HDR_LEN - d->df_hdr_have;
		if (n > len)
			n = len;
		memcpy(d->df_hdr + d->df_hdr_have, data, n);
		d->df_hdr_have += n;
		off += n;
		/*
		 * The flag byte is checked as soon as it arrives; there is
		 * no point waiting for a length we will not honour.
		 */
		if (d->df_hdr[0] != 0) {
			d->df_error =
			    d->df_hdr[0] == 1 ? -EPROTONOSUPPORT : -EPROTO;
			return d->df_error;
		}
		if (d->df_hdr_have < GRPC_FRAME_HDR_LEN)
			return (ssize_t)off;
		if ((rc = df_start_body(d)) != 0) {
			d->df_error = rc;
			return rc;
		}
	}

	n = d->df_msg_len - d->df_msg_have;
	if (n > len - off)
		n = len - off;
	if (n > 0) {
		if ((rc = df_reserve(d, d->df_msg_have + n)) != 0) {
			d->df_error = rc;
			return rc;
		}
		memcpy(d->df_msg + d->df_msg_have, data + off, n);
		d->df_msg_have += n;
		off += n;
	}
	if (d->df_msg_have == d->df_msg_len) {
		/* Whole: the header is spent, the body waits for take(). */
		d->df_complete = 1;
		d->df_hdr_have = 0;
	}
	return (ssize_t)off;
}

ssize_t
grpc_deframer_whole(struct grpc_deframer *d, const uint8_t *data, size_t len,
                    const uint8_t **msg, size_t *mlen)
{
	uint32_t n;

	if (d->df_error != 0)
		return d->df_error;
	/* Only between messages; anything unusual is feed()'s to judge. */
	if (d->df_complete || d->df_hdr_have != 0 || len < GRPC_FRAME_HDR_LEN ||
	    data[0] != 0)
		return 0;
	n = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 |
	    (uint32_t)data[3] << 8 | (uint32_t)data[4];
	if (n > d->df_max || n > len - GRPC_FRAME_HDR_LEN)
		return 0;
	*msg = data + GRPC_FRAME_HDR_LEN;
	*mlen = n;
	return (ssize_t)(GRPC_FRAME_HDR_LEN + n);
}

int
grpc_deframer_take(struct grpc_deframer *d, uint8_t **msg, size_t *len)
{
	if (!d->df_complete)
		return 0;
	*msg = d->df_msg;
	*len = d->df_msg_len;
	d->df_msg = NULL;
	d->df_msg_cap = d->df_msg_len = d->df_msg_have = 0;
	d->df_complete = 0;
	return 1;
}

void
grpc_deframer_set_max(struct grpc_deframer *d, size_t max)
{
	d->df_max = max;
}

size_t
grpc_deframer_held(const struct grpc_deframer *d)
{
	return d->df_msg_cap;
}

int
grpc_deframer_partial(const struct grpc_deframer *d)
{
	return !d->df_complete && d->df_hdr_have > 0;
}

void
grpc_frame_header(uint8_t out[GRPC_FRAME_HDR_LEN], uint32_t len)
{
	out[0] = 0;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}
