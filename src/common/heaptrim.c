/* Heap trims after connect storms only: see heaptrim.h. */
#include <stdlib.h> /* defines __GLIBC__ */
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <inttypes.h>
#include <time.h>

#include "heaptrim.h"
#include "log.h"

/*
 * The loop thread's CPU time in ns: a trim's own cost, not the time the
 * thread spent waiting for a core on a busy machine.
 */
static uint64_t
thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		return uv_hrtime();
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
trim_heap(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static void
on_period(uv_timer_t *h)
{
	struct heaptrim *t = h->data;
	uv_loop_t *loop = h->loop;
	uint64_t start, took;

	if (t->ht_arrivals >= t->ht_batch)
		t->ht_owed = 1;
	t->ht_arrivals = 0;
	if (!t->ht_owed)
		return;
	uv_update_time(loop);
	if (uv_now(loop) < t->ht_not_before) {
		(void)uv_timer_start(h, on_period,
		                     t->ht_not_before - uv_now(loop), 0);
		return;
	}
	start = thread_cpu_ns();
	t->ht_trim();
	took = (thread_cpu_ns() - start + 999999) / 1000000;
	t->ht_owed = 0;
	t->ht_trims++;
	uv_update_time(loop);
	t->ht_not_before = uv_now(loop) + took * t->ht_cost_ratio;
	log_debug("heap trimmed: %" PRIu64 " ms of CPU, the next trim not "
	          "before %" PRIu64 " ms",
	          took, took * t->ht_cost_ratio);
}

void
heaptrim_init(struct heaptrim *t, uv_loop_t *loop, unsigned period_ms,
              unsigned batch)
{
	uv_timer_init(loop, &t->ht_timer);
	t->ht_timer.data = t;
	t->ht_period_ms = period_ms != 0 ? period_ms : HEAPTRIM_PERIOD_MS;
	t->ht_batch = batch != 0 ? batch : HEAPTRIM_BATCH;
	t->ht_cost_ratio = HEAPTRIM_COST_RATIO;
	/* The first period trims whatever arrives in it. */
	t->ht_arrivals = t->ht_batch;
	t->ht_owed = 0;
	t->ht_not_before = 0;
	t->ht_trims = 0;
	t->ht_trim = trim_heap;
}

void
heaptrim_note(struct heaptrim *t)
{
	if (uv_is_closing((uv_handle_t *)&t->ht_timer))
		return;
	if (t->ht_arrivals < ~0U)
		t->ht_arrivals++;
	if (!uv_is_active((uv_handle_t *)&t->ht_timer))
		(void)uv_timer_start(&t->ht_timer, on_period, t->ht_period_ms,
		                     0);
}

void
heaptrim_close(struct heaptrim *t, uv_close_cb cb, void *arg)
{
	uv_timer_stop(&t->ht_timer);
	t->ht_timer.data = arg;
	uv_close((uv_handle_t *)&t->ht_timer, cb);
}
