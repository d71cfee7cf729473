/*
 * nghttp2 glue, after the nghttp2 example server: input is drained with
 * nghttp2_session_mem_recv(), output is sent while the session wants to
 * write and the transport's queue is below a high-water mark, and the
 * connection closes when the session wants neither.
 *
 * Callbacks never run inside the call that caused them (libuv's rule), so
 * that no caller has to guard against its own objects ending under it:
 *  - h2_flush() and h2_close() called from outside never write at once;
 *    they start c->c_defer, an idle handle that runs the flush (or the
 *    close) from the loop, before it next waits for I/O.  Every send made
 *    in one loop iteration thus goes out in one batch.
 *  - Our callbacks run with c->c_depth > 0: inside nghttp2 (which must not
 *    be re-entered from its own callbacks), inside the deferred pass, and
 *    around on_flushed.  A flush asked for there only marks the connection,
 *    and the outermost level flushes on the way out.
 * The connection is freed only when the transport reports it closed,
 * which libuv does from the loop, never from inside a callback.
 */
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "h2.h"
#include "xport.h"

#define H2_HIGH_WATER           (256 * 1024)
#define H2_DEFAULT_MAX_STREAMS  100
#define H2_DEFAULT_STREAM_WIN   (1024 * 1024)
#define H2_DEFAULT_CONN_WIN     (16 * 1024 * 1024)
#define H2_DEFAULT_PING_TIMEOUT 20000
/* nghttp2's frame buffer: one maximum-size frame and its header. */
#define H2_FRAMEBUF_MIN (16 * 1024)
/* The frame buffer's pages go back at most this often. */
#define H2_TRIM_INTERVAL_MS 1000
/* Give-backs gathered for one system call, and their longest wait. */
#define H2_GIVEBACK_BATCH    64
#define H2_GIVEBACK_DELAY_MS 100
/* The calling thread, whose memory is the process's (uapi pidfd.h). */
#ifndef PIDFD_SELF
#define PIDFD_SELF (-10000)
#endif

struct h2conn {
	nghttp2_session *c_session;
	struct xport *c_xport;
	const struct h2_stream_ops *c_ops;
	void *c_arg;
	struct h2_opts c_opts;
	uv_timer_t c_ping_timer;
	int c_ping_timer_open;
	int c_ping_outstanding;
	unsigned c_pings_acked;
	uv_idle_t c_defer; /* runs deferred flushes and closes */
	int c_defer_open;
	int c_depth;      /* nesting of nghttp2 calls and our callbacks */
	int c_want_flush; /* h2_flush() asked for while nested */
	int c_want_close; /* h2_close() asked for from outside */
	int c_ready;      /* on_ready delivered */
	int c_closing;    /* GOAWAY sent or received, or closing */
	int c_xclosed;    /* xport_close() called */
	int c_err;
	uint32_t c_goaway_sent; /* error code of a GOAWAY we sent, or 0 */
	char c_reason[160];
	int c_werr;        /* h2_write() failed inside nghttp2, or 0 */
	nghttp2_mem c_mem; /* nghttp2's allocator, user data c */
	int c_creating;    /* inside nghttp2_session_*_new3() */
	void *c_fb;        /* nghttp2's frame buffer, whole pages */
	size_t c_fb_len;
	int c_fb_dirty;          /* written since it was last given back */
	uint64_t c_fb_trimmed;   /* uv_now() of the last give-back, or 0 */
	uv_timer_t c_trim_timer; /* a give-back put off to its interval */
	size_t c_gb;             /* 1 + its place in the batch, or 0 */
};

static void h2_close_xport(struct h2conn *, int, const char *);
static void h2_schedule(struct h2conn *);

nghttp2_session *
h2_session(struct h2conn *c)
{
	return c->c_session;
}

struct xport *
h2_xport(struct h2conn *c)
{
	return c->c_xport;
}

void *
h2_arg(struct h2conn *c)
{
	return c->c_arg;
}

void
h2_set_arg(struct h2conn *c, void *arg)
{
	c->c_arg = arg;
}

int
h2_is_closing(const struct h2conn *c)
{
	return c->c_closing || c->c_xclosed;
}

unsigned
h2_pings_acked(const struct h2conn *c)
{
	return c->c_pings_acked;
}

unsigned
h2_ping_interval(const struct h2conn *c)
{
	return c->c_opts.ho_ping_interval_ms;
}

/* nghttp2 callbacks: each one forwards to the stream layer. */

static int
cb_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2conn *c = ud;
	void *st;

	if (f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST || !c->c_opts.ho_server)
		return 0;
	if (c->c_closing) {
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
		                          NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	st = c->c_ops->on_stream_open(c, f->hd.stream_id, c->c_arg);
	if (st == NULL) {
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
		                          NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
	return 0;
}

static int
cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
          size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
          void *ud)
{
	struct h2conn *c = ud;
	nghttp2_nv nv;
	void *st;

	(void)flags;
	if (f->hd.type != NGHTTP2_HEADERS)
		return 0;
	st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (st == NULL)
		return 0;
	nv.name = (uint8_t *)(uintptr_t)name;
	nv.namelen = namelen;
	nv.value = (uint8_t *)(uintptr_t)value;
	nv.valuelen = valuelen;
	nv.flags = NGHTTP2_NV_FLAG_NONE;
	if (c->c_ops->on_header(c, st, &nv) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

static int
cb_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2conn *c = ud;
	void *st;

	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
		if (st != NULL)
			c->c_ops->on_headers_end(
			    c, st, f->hd.flags & NGHTTP2_FLAG_END_STREAM);
		break;
	case NGHTTP2_DATA:
		st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
		if (st != NULL && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
			c->c_ops->on_data_end(c, st);
		break;
	case NGHTTP2_PING:
		if ((f->hd.flags & NGHTTP2_FLAG_ACK) && c->c_ping_outstanding) {
			c->c_ping_outstanding = 0;
			c->c_pings_acked++;
			h2_set_ping_interval(c, c->c_opts.ho_ping_interval_ms);
		}
		break;
	case NGHTTP2_GOAWAY:
		c->c_closing = 1;
		if (c->c_ops->on_goaway != NULL)
			c->c_ops->on_goaway(
			    c, f->goaway.error_code, f->goaway.opaque_data,
			    f->goaway.opaque_data_len, c->c_arg);
		break;
	default:
		break;
	}
	return 0;
}

static int
cb_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id,
              const uint8_t *data, size_t len, void *ud)
{
	struct h2conn *c = ud;
	void *st;

	(void)flags;
	st = nghttp2_session_get_stream_user_data(s, stream_id);
	if (st == NULL) {
		/* A stream we refused or already ended: just give it back. */
		nghttp2_session_consume(s, stream_id, len);
		return 0;
	}
	c->c_ops->on_data(c, st, data, len);
	return 0;
}

static int
cb_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                void *ud)
{
	struct h2conn *c = ud;
	void *st;

	st = nghttp2_session_get_stream_user_data(s, stream_id);
	if (st == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(s, stream_id, NULL);
	c->c_ops->on_stream_close(c, st, error_code);
	return 0;
}

static int
cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2conn *c = ud;
	void *st;

	if (f->hd.type == NGHTTP2_GOAWAY && c->c_goaway_sent == 0)
		c->c_goaway_sent = f->goaway.error_code;
	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
	    c->c_ops->on_end_sent == NULL)
		return 0;
	st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (st != NULL)
		c->c_ops->on_end_sent(c, st);
	return 0;
}

/*
 * A DATA frame whose payload the stream left where it was
 * (NGHTTP2_DATA_FLAG_NO_COPY): the frame header goes out here, and the
 * stream's on_send_data writes the payload with h2_write().  Nothing else
 * can come between: nghttp2 calls this right after the read callback, in
 * the same nghttp2_session_mem_send().  As that call would go on to the
 * next frame without returning, the transport's high-water mark is
 * checked here too: PAUSE makes it return, and h2_run_flush() goes on
 * once the transport has drained (on_xport_drain()), as when its own
 * loop stops at the mark.  No padding: this connection sets no padding
 * callback.
 */
static int
cb_send_data(nghttp2_session *s, nghttp2_frame *f, const uint8_t *framehd,
             size_t len, nghttp2_data_source *src, void *ud)
{
	struct h2conn *c = ud;

	(void)s;
	if (f->data.padlen != 0 || c->c_ops->on_send_data == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	c->c_fb_dirty = 1;
	if (h2_write(c, framehd, 9) != 0 ||
	    c->c_ops->on_send_data(c, src->ptr, len) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return xport_queued(c->c_xport) >= H2_HIGH_WATER ? NGHTTP2_ERR_PAUSE
	                                                 : 0;
}

int
h2_write(struct h2conn *c, const uint8_t *data, size_t len)
{
	int rc;

	if ((rc = xport_write(c->c_xport, data, len)) != 0 && c->c_werr == 0)
		c->c_werr = rc;
	return rc;
}

/*
 * The give-backs of frame buffers (below) go to the kernel together.  Each
 * madvise() costs a TLB shootdown, an interrupt of every core the process
 * may have run on; on a virtual machine in a connect storm that was 5-6%
 * of both ncgrpcd's and the agent's time.  One process_madvise() of up to
 * H2_GIVEBACK_BATCH buffers costs about a sixth of as many madvise()
 * calls.  PIDFD_SELF and MADV_DONTNEED there are recent (Linux 6.13 to
 * 6.15): after a kernel refused them once, every buffer gets its own
 * madvise() as before.
 *
 * A buffer waits here at most H2_GIVEBACK_DELAY_MS, on the timer of the
 * connection that came first (gb_conn[0]).  Nothing lives in a frame
 * buffer between frames, so one written again while it waits loses
 * nothing when it goes; one that is freed must leave first
 * (giveback_forget()), or the pages of whatever malloc() puts there next
 * would be zeroed.  One loop thread uses all connections, so there is no
 * lock.
 */
static struct {
	struct h2conn *gb_conn[H2_GIVEBACK_BATCH];
	size_t gb_n;
	int gb_single; /* process_madvise() refused: one madvise() each */
} giveback;

static void
giveback_flush(void)
{
	struct iovec iov[H2_GIVEBACK_BATCH];
	size_t i, n = giveback.gb_n, total = 0;
	long rc = -1;

	for (i = 0; i < n; i++) {
		struct h2conn *c = giveback.gb_conn[i];

		iov[i].iov_base = c->c_fb;
		iov[i].iov_len = c->c_fb_len;
		total += c->c_fb_len;
		c->c_gb = 0;
	}
	giveback.gb_n = 0;
	if (n == 0)
		return;
#if defined(SYS_process_madvise) && defined(MADV_DONTNEED)
	if (!giveback.gb_single) {
		rc = syscall(SYS_process_madvise, PIDFD_SELF, iov, n,
		             MADV_DONTNEED, 0);
		/* ENOSYS, EBADF (no PIDFD_SELF), EINVAL (no MADV_DONTNEED). */
		if (rc == -1 && errno != EAGAIN && errno != EINTR &&
		    errno != ENOMEM)
			giveback.gb_single = 1;
	}
#endif
#ifdef MADV_DONTNEED
	if (rc < 0 || (size_t)rc != total)
		for (i = 0; i < n; i++)
			(void)madvise(iov[i].iov_base, iov[i].iov_len,
			              MADV_DONTNEED);
#else
	(void)rc;
	(void)total;
#endif
}

/* c's buffer is about to be freed, or c to close: it leaves the batch. */
static void
giveback_forget(struct h2conn *c)
{
	size_t i;

	if (c->c_gb == 0)
		return;
	i = c->c_gb - 1;
	giveback.gb_conn[i] = giveback.gb_conn[--giveback.gb_n];
	giveback.gb_conn[i]->c_gb = i + 1;
	c->c_gb = 0;
	/* The first one's timer was the batch's: the rest go now. */
	if (i == 0)
		giveback_flush();
}

size_t
h2_giveback_pending(void)
{
	return giveback.gb_n;
}

void
h2_giveback_single(int on)
{
	giveback.gb_single = on != 0;
}

/*
 * nghttp2 keeps a frame buffer of one maximum-size frame (16 KiB) for the
 * life of each session, whatever the traffic: on an idle device
 * connection, a third of what the connection costs.  Sessions get an
 * allocator that gives that buffer whole pages of its own, and once the
 * connection is quiet (nothing queued in nghttp2 or in the transport) its
 * pages go back to the kernel (MADV_DONTNEED), at most once a second: a
 * stream in full flow goes quiet between writes thousands of times a
 * second, and each madvise() of a threaded process costs a TLB shootdown
 * on every core (10% of the agent's time in a NETCONF bulk transfer when
 * it ran at every quiet moment).  The pages come back, zeroed, when the
 * next frame is packed.  Nothing lives in the buffer between
 * frames: nghttp2 packs each frame into it from its start, and
 * h2_run_flush() copies the frame out before it asks for the next.  The
 * buffer is the one allocation of at least H2_FRAMEBUF_MIN bytes that
 * nghttp2 makes while it creates the session; every other allocation is
 * plain malloc().
 */
static void *
h2_mem_malloc(size_t size, void *ud)
{
	struct h2conn *c = ud;
	size_t pg, len;
	void *p;

	if (!c->c_creating || c->c_fb != NULL || size < H2_FRAMEBUF_MIN)
		return malloc(size);
	pg = (size_t)sysconf(_SC_PAGESIZE);
	len = (size + pg - 1) / pg * pg;
	if ((p = aligned_alloc(pg, len)) == NULL)
		return NULL;
	c->c_fb = p;
	c->c_fb_len = len;
	c->c_fb_dirty = 1;
	return p;
}

static void
h2_mem_free(void *p, void *ud)
{
	struct h2conn *c = ud;

	if (p != NULL && p == c->c_fb) {
		giveback_forget(c);
		c->c_fb = NULL;
		c->c_fb_len = 0;
	}
	free(p);
}

static void *
h2_mem_calloc(size_t n, size_t size, void *ud)
{
	(void)ud;
	return calloc(n, size);
}

static void *
h2_mem_realloc(void *p, size_t size, void *ud)
{
	struct h2conn *c = ud;

	if (p == NULL)
		return h2_mem_malloc(size, ud);
	/* Not seen from nghttp2 1.52; the buffer then stops being ours. */
	if (p == c->c_fb) {
		giveback_forget(c);
		c->c_fb = NULL;
		c->c_fb_len = 0;
	}
	return realloc(p, size);
}

static void on_trim_timer(uv_timer_t *);

/* The connection is quiet: the frame buffer's pages go back. */
static void
h2_trim(struct h2conn *c, uint64_t now)
{
	c->c_fb_dirty = 0;
	c->c_fb_trimmed = now;
	if (c->c_gb != 0)
		return;
	giveback.gb_conn[giveback.gb_n++] = c;
	c->c_gb = giveback.gb_n;
	if (giveback.gb_n == H2_GIVEBACK_BATCH)
		giveback_flush();
	else if (giveback.gb_n == 1)
		uv_timer_start(&c->c_trim_timer, on_trim_timer,
		               H2_GIVEBACK_DELAY_MS, 0);
}

static int
h2_quiet(struct h2conn *c)
{
	return !c->c_xclosed && c->c_xport != NULL &&
	       xport_queued(c->c_xport) == 0 &&
	       !nghttp2_session_want_write(c->c_session);
}

static void h2_maybe_trim(struct h2conn *);

static void
on_trim_timer(uv_timer_t *t)
{
	struct h2conn *c = t->data;

	if (c->c_gb == 1)
		giveback_flush();
	/* Busy again: the next quiet moment gives the pages back. */
	if (h2_quiet(c))
		h2_maybe_trim(c);
}

/* A quiet moment: give the pages back now, or when the interval is up. */
static void
h2_maybe_trim(struct h2conn *c)
{
	uint64_t now, due;

	if (c->c_fb == NULL || !c->c_fb_dirty)
		return;
	now = uv_now(xport_loop(c->c_xport));
	due = c->c_fb_trimmed == 0 ? 0 : c->c_fb_trimmed + H2_TRIM_INTERVAL_MS;
	if (now >= due)
		h2_trim(c, now);
	else if (!uv_is_active((uv_handle_t *)&c->c_trim_timer))
		uv_timer_start(&c->c_trim_timer, on_trim_timer, due - now, 0);
}

size_t
h2_framebuf_resident(const struct h2conn *c)
{
	size_t pg, n = 0, i;
	unsigned char vec[8];

	if (c->c_fb == NULL)
		return 0;
	pg = (size_t)sysconf(_SC_PAGESIZE);
	if (c->c_fb_len / pg > sizeof(vec) ||
	    mincore(c->c_fb, c->c_fb_len, vec) != 0)
		return 0;
	for (i = 0; i < c->c_fb_len / pg; i++)
		n += vec[i] & 1;
	return n * pg;
}

/* Transport callbacks. */

static void
h2_write_failed(struct h2conn *c, int rc)
{
	char why[160];

	snprintf(why, sizeof(why), "write to %s: %s", xport_peer(c->c_xport),
	         xport_errmsg(c->c_xport)[0] != '\0' ? xport_errmsg(c->c_xport)
	                                             : ncg_strerror(rc));
	h2_close_xport(c, rc, why);
}

static void
h2_run_flush(struct h2conn *c)
{
	const uint8_t *data;
	ssize_t n;
	int rc;

	c->c_want_flush = 0;
	while (!c->c_xclosed && xport_queued(c->c_xport) < H2_HIGH_WATER) {
		c->c_depth++;
		n = nghttp2_session_mem_send(c->c_session, &data);
		c->c_depth--;
		if (n < 0 && c->c_werr != 0) {
			/* A payload written by cb_send_data() failed. */
			h2_write_failed(c, c->c_werr);
			return;
		}
		if (n < 0) {
			h2_close_xport(c, NCG_EH2, nghttp2_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		c->c_fb_dirty = 1;
		if ((rc = h2_write(c, data, (size_t)n)) != 0) {
			h2_write_failed(c, rc);
			return;
		}
	}
	if (c->c_xclosed)
		return;
	if (!nghttp2_session_want_read(c->c_session) &&
	    !nghttp2_session_want_write(c->c_session)) {
		char why[160];

		if (c->c_goaway_sent == NGHTTP2_NO_ERROR) {
			h2_close_xport(c, 0, NULL);
			return;
		}
		/*
		 * nghttp2 ended the session over the peer's protocol error
		 * (bad frame, flow control, ...): not an orderly close.
		 */
		snprintf(why, sizeof(why), "http/2 error from %s: %s",
		         xport_peer(c->c_xport),
		         nghttp2_http2_strerror(c->c_goaway_sent));
		h2_close_xport(c, NCG_EH2, why);
		return;
	}
	if (c->c_ops->on_flushed != NULL) {
		c->c_depth++;
		c->c_ops->on_flushed(c, c->c_arg);
		c->c_depth--;
		/* Sends made in on_flushed go out on the next pass. */
		if (c->c_want_flush)
			h2_schedule(c);
	}
}

static void
on_defer(uv_idle_t *h)
{
	struct h2conn *c = h->data;

	uv_idle_stop(&c->c_defer);
	if (c->c_xclosed)
		return;
	if (c->c_want_close) {
		c->c_want_close = 0;
		h2_run_flush(c); /* the GOAWAY of h2_close() */
		h2_close_xport(c, c->c_err, c->c_reason);
		return;
	}
	c->c_depth++;
	if (c->c_ops->on_deferred != NULL)
		c->c_ops->on_deferred(c, c->c_arg);
	c->c_depth--;
	h2_run_flush(c);
}

/* Runs on_defer() from the loop, before it next waits for I/O. */
static void
h2_schedule(struct h2conn *c)
{
	if (c->c_defer_open && !c->c_xclosed)
		uv_idle_start(&c->c_defer, on_defer);
}

void
h2_flush(struct h2conn *c)
{
	if (c->c_xport == NULL || !c->c_ready)
		return;
	c->c_want_flush = 1;
	if (c->c_depth == 0)
		h2_schedule(c);
}

void
h2_defer(struct h2conn *c)
{
	if (c->c_xport != NULL && c->c_ready)
		h2_schedule(c);
}

static void
on_xport_ready(struct xport *x, void *arg)
{
	struct h2conn *c = arg;

	assert(c->c_xport == x);
	(void)x;
	c->c_ready = 1;
	h2_set_ping_interval(c, c->c_opts.ho_ping_interval_ms);
	c->c_depth++;
	c->c_ops->on_ready(c, c->c_arg);
	c->c_depth--;
	h2_run_flush(c);
}

static void
on_xport_data(struct xport *x, const uint8_t *data, size_t len, void *arg)
{
	struct h2conn *c = arg;
	ssize_t n;

	(void)x;
	if (c->c_xclosed || c->c_want_close)
		return;
	c->c_depth++;
	n = nghttp2_session_mem_recv(c->c_session, data, len);
	c->c_depth--;
	if (n < 0) {
		char why[128];

		snprintf(why, sizeof(why), "http/2 error from %s: %s",
		         xport_peer(c->c_xport), nghttp2_strerror((int)n));
		/* nghttp2 queued a GOAWAY explaining the error; try to send. */
		h2_run_flush(c);
		h2_close_xport(c, NCG_EH2, why);
		return;
	}
	h2_run_flush(c);
}

static void
on_xport_drain(struct xport *x, void *arg)
{
	struct h2conn *c = arg;

	(void)x;
	/* Handshake records drain before the connection is ready. */
	if (c->c_depth != 0 || !c->c_ready)
		return;
	h2_run_flush(c);
	if (h2_quiet(c))
		h2_maybe_trim(c);
}

static void
on_ping_timer_closed(uv_handle_t *h)
{
	struct h2conn *c = h->data;

	nghttp2_session_del(c->c_session);
	free(c);
}

static void
on_trim_timer_closed(uv_handle_t *h)
{
	struct h2conn *c = h->data;

	uv_close((uv_handle_t *)&c->c_ping_timer, on_ping_timer_closed);
}

static void
on_defer_closed(uv_handle_t *h)
{
	struct h2conn *c = h->data;

	uv_close((uv_handle_t *)&c->c_trim_timer, on_trim_timer_closed);
}

static void
on_xport_closed(struct xport *x, int err, void *arg)
{
	struct h2conn *c = arg;
	const char *reason;

	c->c_xclosed = 1;
	if (c->c_err == 0 && err != 0) {
		c->c_err = err;
		snprintf(c->c_reason, sizeof(c->c_reason), "%s",
		         xport_errmsg(x)[0] != '\0' ? xport_errmsg(x)
		                                    : ncg_strerror(err));
	}
	c->c_xport = NULL;
	reason = c->c_err != 0 ? c->c_reason : "closed";
	c->c_depth++;
	c->c_ops->on_closed(c, c->c_err, reason, c->c_arg);
	c->c_depth--;
	/* The handles' close callbacks free c, after libuv is done with them.
	 */
	giveback_forget(c);
	uv_timer_stop(&c->c_ping_timer);
	uv_close((uv_handle_t *)&c->c_defer, on_defer_closed);
}

const struct xport_cb h2_xport_cb = {
    .xc_ready = on_xport_ready,
    .xc_data = on_xport_data,
    .xc_drain = on_xport_drain,
    .xc_closed = on_xport_closed,
};

static void
h2_close_xport(struct h2conn *c, int err, const char *reason)
{
	if (c->c_xclosed || c->c_xport == NULL)
		return;
	c->c_xclosed = 1;
	c->c_closing = 1;
	if (c->c_err == 0 && err != 0) {
		c->c_err = err;
		snprintf(c->c_reason, sizeof(c->c_reason), "%s",
		         reason != NULL ? reason : ncg_strerror(err));
	}
	uv_timer_stop(&c->c_ping_timer);
	xport_close(c->c_xport, err);
}

static void
on_ping_timer(uv_timer_t *t)
{
	struct h2conn *c = t->data;

	if (c->c_xclosed)
		return;
	if (c->c_ping_outstanding) {
		char why[128];

		snprintf(why, sizeof(why), "keepalive ping to %s timed out",
		         xport_peer(c->c_xport));
		h2_close_xport(c, NCG_EPING_TIMEOUT, why);
		return;
	}
	if (nghttp2_submit_ping(c->c_session, NGHTTP2_FLAG_NONE, NULL) != 0)
		return;
	c->c_ping_outstanding = 1;
	uv_timer_start(&c->c_ping_timer, on_ping_timer,
	               c->c_opts.ho_ping_timeout_ms, 0);
	h2_flush(c);
}

void
h2_set_max_streams(struct h2conn *c, uint32_t n)
{
	nghttp2_settings_entry iv;

	if (c->c_xclosed)
		return;
	c->c_opts.ho_max_streams = n != 0 ? n : H2_DEFAULT_MAX_STREAMS;
	iv.settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
	iv.value = c->c_opts.ho_max_streams;
	if (nghttp2_submit_settings(c->c_session, NGHTTP2_FLAG_NONE, &iv, 1) ==
	    0)
		h2_flush(c);
}

void
h2_set_ping_interval(struct h2conn *c, unsigned ms)
{
	c->c_opts.ho_ping_interval_ms = ms;
	if (c->c_xclosed || !c->c_ready || c->c_ping_outstanding)
		return;
	if (ms == 0)
		uv_timer_stop(&c->c_ping_timer);
	else
		uv_timer_start(&c->c_ping_timer, on_ping_timer, ms, 0);
}

int
h2_new(const struct h2_opts *opts, const struct h2_stream_ops *ops, void *arg,
       struct h2conn **out)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *nopt;
	nghttp2_settings_entry iv[4];
	struct h2conn *c;
	size_t niv = 0;
	int rc;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	c->c_opts = *opts;
	c->c_ops = ops;
	c->c_arg = arg;
	if (c->c_opts.ho_max_streams == 0)
		c->c_opts.ho_max_streams = H2_DEFAULT_MAX_STREAMS;
	if (c->c_opts.ho_stream_window == 0)
		c->c_opts.ho_stream_window = H2_DEFAULT_STREAM_WIN;
	if (c->c_opts.ho_conn_window == 0)
		c->c_opts.ho_conn_window = H2_DEFAULT_CONN_WIN;
	if (c->c_opts.ho_ping_timeout_ms == 0)
		c->c_opts.ho_ping_timeout_ms = H2_DEFAULT_PING_TIMEOUT;

	if (nghttp2_session_callbacks_new(&cbs) != 0) {
		free(c);
		return -ENOMEM;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(
	    cbs, cb_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs,
	                                                     cb_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
	    cbs, cb_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
	                                                       cb_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs,
	                                                     cb_frame_send);
	nghttp2_session_callbacks_set_send_data_callback(cbs, cb_send_data);
	if (nghttp2_option_new(&nopt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		free(c);
		return -ENOMEM;
	}
	/* Flow control follows what the application has really consumed. */
	nghttp2_option_set_no_auto_window_update(nopt, 1);
#ifdef NCGRPC_HAVE_RESET_RATE_LIMIT
	if (opts->ho_server && opts->ho_reset_burst != 0 &&
	    opts->ho_reset_rate != 0)
		nghttp2_option_set_stream_reset_rate_limit(
		    nopt, opts->ho_reset_burst, opts->ho_reset_rate);
#endif
	/* Keepalive pings and settings acks are nghttp2's to answer. */
	c->c_mem = (nghttp2_mem){
	    .mem_user_data = c,
	    .malloc = h2_mem_malloc,
	    .free = h2_mem_free,
	    .calloc = h2_mem_calloc,
	    .realloc = h2_mem_realloc,
	};
	c->c_creating = 1;
	if (opts->ho_server)
		rc = nghttp2_session_server_new3(&c->c_session, cbs, c, nopt,
		                                 &c->c_mem);
	else
		rc = nghttp2_session_client_new3(&c->c_session, cbs, c, nopt,
		                                 &c->c_mem);
	c->c_creating = 0;
	nghttp2_option_del(nopt);
	nghttp2_session_callbacks_del(cbs);
	if (rc != 0) {
		free(c);
		return -ENOMEM;
	}

	iv[niv].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
	iv[niv++].value = c->c_opts.ho_stream_window;
	iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
	iv[niv++].value = 64 * 1024;
	if (opts->ho_server) {
		iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
		iv[niv++].value = c->c_opts.ho_max_streams;
	} else {
		iv[niv].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
		iv[niv++].value = 0;
	}
	if (nghttp2_submit_settings(c->c_session, NGHTTP2_FLAG_NONE, iv, niv) !=
	        0 ||
	    nghttp2_session_set_local_window_size(
	        c->c_session, NGHTTP2_FLAG_NONE, 0,
	        (int32_t)c->c_opts.ho_conn_window) != 0) {
		nghttp2_session_del(c->c_session);
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void
h2_attach(struct h2conn *c, struct xport *x)
{
	if (c->c_xport != NULL)
		return;
	c->c_xport = x;
	/* The loop is the transport's; the handles live as long as c. */
	uv_timer_init(xport_loop(x), &c->c_ping_timer);
	c->c_ping_timer.data = c;
	uv_timer_init(xport_loop(x), &c->c_trim_timer);
	c->c_trim_timer.data = c;
	uv_unref((uv_handle_t *)&c->c_trim_timer); /* keeps no loop alive */
	uv_idle_init(xport_loop(x), &c->c_defer);
	c->c_defer.data = c;
	c->c_defer_open = 1;
}

void
h2_discard(struct h2conn *c)
{
	nghttp2_session_del(c->c_session);
	free(c);
}

void
h2_consume(struct h2conn *c, int32_t stream_id, size_t n)
{
	if (n == 0 || c->c_xclosed)
		return;
	if (nghttp2_session_get_stream_user_data(c->c_session, stream_id) ==
	    NULL)
		nghttp2_session_consume_connection(c->c_session, n);
	else
		nghttp2_session_consume(c->c_session, stream_id, n);
	h2_flush(c);
}

void
h2_shutdown(struct h2conn *c)
{
	if (c->c_xclosed)
		return;
	if (!c->c_ready) {
		h2_close_xport(c, 0, NULL);
		return;
	}
	if (!c->c_closing) {
		/*
		 * GOAWAY, not terminate_session(): streams in flight finish,
		 * and the session stops wanting to read once they are done.
		 */
		c->c_closing = 1;
		nghttp2_submit_goaway(
		    c->c_session, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(c->c_session),
		    NGHTTP2_NO_ERROR, NULL, 0);
	}
	h2_flush(c);
}

void
h2_close(struct h2conn *c, int err, const char *reason)
{
	/*
	 * A close already deferred to the loop sends its GOAWAY there; closing
	 * the transport now would drop it.
	 */
	if (c->c_xclosed || c->c_want_close)
		return;
	/* Recorded first: the flush below may already close the transport. */
	if (c->c_err == 0 && err != 0) {
		c->c_err = err;
		snprintf(c->c_reason, sizeof(c->c_reason), "%s",
		         reason != NULL ? reason : ncg_strerror(err));
	}
	if (c->c_ready && !c->c_closing) {
		c->c_closing = 1;
		nghttp2_session_terminate_session(
		    c->c_session,
		    err == 0 ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR);
		if (c->c_depth == 0 && c->c_defer_open) {
			/* The GOAWAY goes out, then the transport closes. */
			c->c_want_close = 1;
			h2_schedule(c);
			return;
		}
	}
	h2_close_xport(c, err, reason);
}
