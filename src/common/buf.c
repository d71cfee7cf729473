#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

void
buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->b_max = max == 0 ? SIZE_MAX : max;
}

void
buf_free(struct buf *b)
{
	size_t max = b->b_max;

	free(b->b_data);
	memset(b, 0, sizeof(*b));
	b->b_max = max;
}

int
buf_reserve(struct buf *b, size_t len)
{
	size_t used = buf_len(b), cap;
	uint8_t *p;

	if (len > b->b_max - used)
		return -ENOBUFS;
	if (b->b_len + len <= b->b_cap)
		return 0;
	/* Compact first: often that alone makes room. */
	if (b->b_off > 0) {
		memmove(b->b_data, b->b_data + b->b_off, used);
		b->b_off = 0;
		b->b_len = used;
		if (used + len <= b->b_cap)
			return 0;
	}
	cap = b->b_cap < 256 ? 256 : b->b_cap;
	while (cap < used + len)
		cap = cap > SIZE_MAX / 2 ? used + len : cap * 2;
	if (cap > b->b_max && b->b_max >= used + len)
		cap = b->b_max;
	p = realloc(b->b_data, cap);
	if (p == NULL)
		return -ENOMEM;
	b->b_data = p;
	b->b_cap = cap;
	return 0;
}

int
buf_append(struct buf *b, const void *data, size_t len)
{
	int rc;

	if (len == 0)
		return 0;
	if ((rc = buf_reserve(b, len)) != 0)
		return rc;
	memcpy(b->b_data + b->b_len, data, len);
	b->b_len += len;
	return 0;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= buf_len(b)) {
		b->b_off = b->b_len = 0;
		return;
	}
	b->b_off += n;
}

void
buf_commit(struct buf *b, size_t n)
{
	assert(n <= b->b_cap - b->b_len);
	b->b_len += n;
}
