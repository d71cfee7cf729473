/*
 * When the heap is trimmed (heaptrim.c): in the first period whatever
 * arrives, later only after a storm of at least the batch in one period,
 * never while connections only trickle in, never sooner after a trim than
 * its cost allows (but a storm's trim is then late, not lost), and never
 * after the close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>
#include <uv.h>

#include "common/heaptrim.h"

#define PERIOD_MS 5
#define BATCH     4

static unsigned ntrims;
static uv_loop_t *trim_loop;
static uint64_t trim_at;      /* uv_now() when the last trim started */
static unsigned trim_cost_ms; /* the fake trim's CPU time */

static uint64_t
cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Counts, and spends trim_cost_ms of CPU: the cost heaptrim.c measures. */
static void
count_trim(void)
{
	uint64_t start = cpu_ns();

	ntrims++;
	uv_update_time(trim_loop);
	trim_at = uv_now(trim_loop);
	while (cpu_ns() - start < (uint64_t)trim_cost_ms * 1000000u)
		;
}

static void
setup_trim(struct heaptrim *t, uv_loop_t *loop)
{
	uv_loop_init(loop);
	heaptrim_init(t, loop, PERIOD_MS, BATCH);
	t->ht_trim = count_trim;
	ntrims = 0;
	trim_loop = loop;
	trim_cost_ms = 0;
}

/* Notes n arrivals, then lets the period run out. */
static void
arrive(struct heaptrim *t, uv_loop_t *loop, unsigned n)
{
	while (n-- > 0)
		heaptrim_note(t);
	assert_true(uv_is_active((uv_handle_t *)&t->ht_timer));
	/* Only the timer is active: this returns when its period is over. */
	uv_run(loop, UV_RUN_DEFAULT);
	assert_false(uv_is_active((uv_handle_t *)&t->ht_timer));
}

static void *closed_arg;

static void
on_closed(uv_handle_t *h)
{
	closed_arg = h->data;
}

static void
teardown_trim(struct heaptrim *t, uv_loop_t *loop)
{
	int marker;

	closed_arg = NULL;
	heaptrim_close(t, on_closed, &marker);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_ptr_equal(closed_arg, &marker);
	assert_int_equal(uv_loop_close(loop), 0);
}

static void
test_first_period_trims(void **state)
{
	struct heaptrim t;
	uv_loop_t loop;

	(void)state;
	setup_trim(&t, &loop);
	/* Nothing arrived: no timer, no trim. */
	assert_false(uv_is_active((uv_handle_t *)&t.ht_timer));
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(ntrims, 0);
	/* A process's first connection: trimmed once its period is over. */
	arrive(&t, &loop, 1);
	assert_int_equal(ntrims, 1);
	assert_int_equal(t.ht_trims, 1);
	teardown_trim(&t, &loop);
}

static void
test_trickle_never_trims(void **state)
{
	struct heaptrim t;
	uv_loop_t loop;
	unsigned i;

	(void)state;
	setup_trim(&t, &loop);
	arrive(&t, &loop, 1);
	assert_int_equal(ntrims, 1);
	/*
	 * One session open after another, each with its replacement
	 * connection: fewer than the batch per period, many periods.
	 */
	for (i = 0; i < 20; i++)
		arrive(&t, &loop, BATCH - 1);
	assert_int_equal(ntrims, 1);
	teardown_trim(&t, &loop);
}

static void
test_storm_trims_each_period(void **state)
{
	struct heaptrim t;
	uv_loop_t loop;

	(void)state;
	setup_trim(&t, &loop);
	arrive(&t, &loop, 1);
	arrive(&t, &loop, BATCH);
	assert_int_equal(ntrims, 2);
	arrive(&t, &loop, 10 * BATCH);
	assert_int_equal(ntrims, 3);
	/* The count starts again with each period. */
	arrive(&t, &loop, BATCH - 1);
	assert_int_equal(ntrims, 3);
	arrive(&t, &loop, BATCH);
	assert_int_equal(ntrims, 4);
	teardown_trim(&t, &loop);
}

static void
test_cost_bound(void **state)
{
	struct heaptrim t;
	uv_loop_t loop;
	uint64_t not_before;

	(void)state;
	setup_trim(&t, &loop);
	t.ht_cost_ratio = 10;
	/* A trim of 20 ms of CPU: the next one no sooner than 200 ms later. */
	trim_cost_ms = 20;
	arrive(&t, &loop, 1);
	assert_int_equal(ntrims, 1);
	not_before = t.ht_not_before;
	assert_true(not_before >= trim_at + 20 + 200);
	/*
	 * A storm within the pause: its period ends without a trim, which
	 * comes once the pause is over, though nothing arrived since.
	 */
	trim_cost_ms = 0;
	heaptrim_note(&t);
	for (unsigned i = 1; i < BATCH; i++)
		heaptrim_note(&t);
	uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(ntrims, 1);
	assert_true(uv_is_active((uv_handle_t *)&t.ht_timer));
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(ntrims, 2);
	assert_true(trim_at >= not_before);
	/* And it was owed once: nothing more without a new storm. */
	arrive(&t, &loop, 1);
	assert_int_equal(ntrims, 2);
	teardown_trim(&t, &loop);
}

static void
test_close_stops(void **state)
{
	struct heaptrim t;
	uv_loop_t loop;

	(void)state;
	setup_trim(&t, &loop);
	heaptrim_note(&t);
	closed_arg = NULL;
	heaptrim_close(&t, on_closed, &t);
	/* An arrival after the close is ignored, and the timer never fires. */
	heaptrim_note(&t);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_ptr_equal(closed_arg, &t);
	assert_int_equal(ntrims, 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_defaults(void **state)
{
	struct heaptrim t;
	uv_loop_t loop;

	(void)state;
	uv_loop_init(&loop);
	heaptrim_init(&t, &loop, 0, 0);
	assert_int_equal(t.ht_period_ms, HEAPTRIM_PERIOD_MS);
	assert_int_equal(t.ht_batch, HEAPTRIM_BATCH);
	/* The real trim (glibc's malloc_trim) runs, from the loop. */
	t.ht_period_ms = 1;
	heaptrim_note(&t);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(t.ht_trims, 1);
	teardown_trim(&t, &loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_period_trims),
	    cmocka_unit_test(test_trickle_never_trims),
	    cmocka_unit_test(test_storm_trims_each_period),
	    cmocka_unit_test(test_cost_bound),
	    cmocka_unit_test(test_close_stops),
	    cmocka_unit_test(test_defaults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
