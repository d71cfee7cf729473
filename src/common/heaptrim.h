/*
 * Giving the heap's free pages back after a connect storm, without
 * stalling the loop when connections only trickle in.
 *
 * Every TLS handshake borrows some 55 KiB (OpenSSL's handshake and record
 * buffers) and frees it before its connection settles.  When many run at
 * once, as after a restart of ncgrpcd, those buffers leave holes between
 * the connections' long-lived state, and glibc gives back only the top of
 * the heap by itself; malloc_trim(0) returns the holes' pages.  But it
 * walks every free chunk of every arena, on the loop: with 2,000
 * connections it takes milliseconds when the machine is quiet and
 * hundreds of them when it is not, and whatever the loop has to do waits,
 * a session open included.
 *
 * One connection at a time (the one that replaces a connection taken by a
 * session) reuses the hole of the one before, so trimming after it gains
 * nothing.  Its callers therefore do not note such a replacement (the next
 * connection of a device or client whose session runs and which has no
 * other connection left): at a hundred session opens a second those would
 * count as a storm and trim once a second, for milliseconds, in the middle
 * of the opens.  So:
 *  - the trim runs one period after a connection arrives, and only if at
 *    least the batch arrived in that period (a storm); the first period
 *    after heaptrim_init() always trims (a process's first connections);
 *  - a trim that took D ms of CPU allows the next one no sooner than
 *    HEAPTRIM_COST_RATIO * D ms later, so that trimming takes at most about
 *    1% of the loop's time however large the heap.  A storm whose trim
 *    falls in that pause is trimmed when the pause ends, even if it has
 *    ended by then.
 */
#ifndef NCGRPC_HEAPTRIM_H
#define NCGRPC_HEAPTRIM_H

#include <stdint.h>

#include <uv.h>

#define HEAPTRIM_PERIOD_MS  1000
#define HEAPTRIM_BATCH      32
#define HEAPTRIM_COST_RATIO 100

struct heaptrim {
	uv_timer_t ht_timer;
	unsigned ht_arrivals; /* connections in this period */
	unsigned ht_period_ms;
	unsigned ht_batch;
	unsigned ht_cost_ratio;
	int ht_owed;            /* a storm's trim waits for the pause */
	uint64_t ht_not_before; /* uv_now() of the earliest next trim */
	unsigned ht_trims;      /* trims done, for tests and logs */
	void (*ht_trim)(void);  /* malloc_trim(0); tests replace it */
};

/*
 * Initialises t on loop with period_ms and batch (0: the defaults above).
 * The timer is a libuv handle: heaptrim_close() it before freeing t.
 */
void heaptrim_init(struct heaptrim *t, uv_loop_t *loop, unsigned period_ms,
                   unsigned batch);

/*
 * A connection arrived that replaces none: counts it and starts the period
 * if none runs.
 */
void heaptrim_note(struct heaptrim *t);

/*
 * Stops and closes the timer.  cb (may be NULL) runs as for uv_close(),
 * with the handle's data set to arg.
 */
void heaptrim_close(struct heaptrim *t, uv_close_cb cb, void *arg);

#endif
