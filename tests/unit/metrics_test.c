/*
 * The metrics registry (src/common/metrics.c): registration checks, O(1)
 * updates, and the exact text of the exposition format.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/metrics.h"

static const char *const kinds[] = {"a", "b\"q\\\n", NULL};
static const char *const dirs[] = {"in", "out", "x", NULL};
static const double bounds[] = {0.5, 1, 2.5};

static const struct metrics_desc d_counter = {
    .md_name = "t_events_total",
    .md_help = "Events, with \\ and\na newline.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"kind", kinds}, {"dir", dirs}},
    .md_nlabels = 2,
};
static const struct metrics_desc d_gauge = {
    .md_name = "t_level",
    .md_help = "A level.",
    .md_type = METRICS_GAUGE,
};
static const struct metrics_desc d_hist = {
    .md_name = "t_seconds",
    .md_help = "Durations.",
    .md_type = METRICS_HISTOGRAM,
    .md_labels = {{"kind", kinds}},
    .md_nlabels = 1,
    .md_bounds = bounds,
    .md_nbounds = 3,
};

static char *
render(struct metrics *m, struct buf *b)
{
	buf_free(b);
	assert_int_equal(metrics_render(m, b), 0);
	assert_int_equal(buf_append(b, "", 1), 0);
	return (char *)(uintptr_t)buf_data(b);
}

static void
test_render(void **state)
{
	struct metrics_family *c, *g, *h;
	struct metrics *m;
	struct buf b;
	char *text;

	(void)state;
	buf_init(&b, 0);
	assert_int_equal(metrics_new(&m), 0);
	assert_int_equal(metrics_register(m, &d_counter, &c), 0);
	assert_int_equal(metrics_register(m, &d_gauge, &g), 0);
	assert_int_equal(metrics_register(m, &d_hist, &h), 0);
	metrics_count(c, 1, 2, 5);
	metrics_count(c, 1, 2, 1);
	metrics_count(c, 0, 0, 7);
	metrics_count(c, 2, 0, 100); /* out of range: ignored */
	metrics_count(c, 0, 3, 100);
	metrics_gauge_add(g, 0, 0, 3);
	metrics_gauge_add(g, 0, 0, -5);
	metrics_observe(h, 0, 0, 0.5); /* le is inclusive */
	metrics_observe(h, 0, 0, 0.75);
	metrics_observe(h, 0, 0, 99);
	metrics_observe(h, 1, 0, 0.25);
	metrics_observe(h, 1, 0, NAN); /* ignored */
	/* Wrong type for the family: ignored. */
	metrics_observe(c, 0, 0, 1);
	metrics_gauge_set(c, 0, 0, 1);
	metrics_count(g, 0, 0, 1);
	text = render(m, &b);
	assert_string_equal(
	    text, "# HELP t_events_total Events, with \\\\ and\\na newline.\n"
	          "# TYPE t_events_total counter\n"
	          "t_events_total{kind=\"a\",dir=\"in\"} 7\n"
	          "t_events_total{kind=\"a\",dir=\"out\"} 0\n"
	          "t_events_total{kind=\"a\",dir=\"x\"} 0\n"
	          "t_events_total{kind=\"b\\\"q\\\\\\n\",dir=\"in\"} 0\n"
	          "t_events_total{kind=\"b\\\"q\\\\\\n\",dir=\"out\"} 0\n"
	          "t_events_total{kind=\"b\\\"q\\\\\\n\",dir=\"x\"} 6\n"
	          "# HELP t_level A level.\n"
	          "# TYPE t_level gauge\n"
	          "t_level -2\n"
	          "# HELP t_seconds Durations.\n"
	          "# TYPE t_seconds histogram\n"
	          "t_seconds_bucket{kind=\"a\",le=\"0.5\"} 1\n"
	          "t_seconds_bucket{kind=\"a\",le=\"1\"} 2\n"
	          "t_seconds_bucket{kind=\"a\",le=\"2.5\"} 2\n"
	          "t_seconds_bucket{kind=\"a\",le=\"+Inf\"} 3\n"
	          "t_seconds_sum{kind=\"a\"} 100.25\n"
	          "t_seconds_count{kind=\"a\"} 3\n"
	          "t_seconds_bucket{kind=\"b\\\"q\\\\\\n\",le=\"0.5\"} 1\n"
	          "t_seconds_bucket{kind=\"b\\\"q\\\\\\n\",le=\"1\"} 1\n"
	          "t_seconds_bucket{kind=\"b\\\"q\\\\\\n\",le=\"2.5\"} 1\n"
	          "t_seconds_bucket{kind=\"b\\\"q\\\\\\n\",le=\"+Inf\"} 1\n"
	          "t_seconds_sum{kind=\"b\\\"q\\\\\\n\"} 0.25\n"
	          "t_seconds_count{kind=\"b\\\"q\\\\\\n\"} 1\n");
	assert_int_equal(metrics_value(c, 1, 2), 6);
	assert_int_equal(metrics_value(g, 0, 0), -2);
	assert_int_equal(metrics_value(h, 0, 0), 3);
	assert_int_equal(metrics_value(NULL, 0, 0), 0);
	/* A counter kept elsewhere is mirrored with metrics_counter_set(). */
	metrics_counter_set(c, 0, 1, 42);
	assert_int_equal(metrics_value(c, 0, 1), 42);
	buf_free(&b);
	metrics_free(m);
}

static int collected;

static void
collect(void *arg)
{
	metrics_gauge_set(arg, 0, 0, ++collected);
}

static void
test_collect_and_late_family(void **state)
{
	struct metrics_family *g, *h;
	struct metrics *m;
	struct buf b;
	char *text;

	(void)state;
	buf_init(&b, 0);
	assert_int_equal(metrics_new(&m), 0);
	assert_int_equal(metrics_register(m, &d_gauge, &g), 0);
	metrics_set_collect(m, collect, g);
	text = render(m, &b);
	assert_non_null(strstr(text, "\nt_level 1\n"));
	assert_null(strstr(text, "t_seconds"));
	/* Registered later: rendered from then on, after the others. */
	assert_int_equal(metrics_register(m, &d_hist, &h), 0);
	text = render(m, &b);
	assert_non_null(strstr(text, "\nt_level 2\n# HELP t_seconds"));
	buf_free(&b);
	metrics_free(m);
}

static void
test_register_checks(void **state)
{
	static const char *const none[] = {NULL};
	static const double down[] = {1, 0.5};
	static const double inf[] = {1, INFINITY};
	struct metrics_family *f;
	struct metrics *m;
	struct metrics_desc d;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	assert_int_equal(metrics_register(m, &d_gauge, &f), 0);
	assert_int_equal(metrics_register(m, &d_gauge, &f), -EEXIST);
	d = d_gauge;
	d.md_name = "9lives";
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_name = "bad-name";
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_name = "";
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d = d_counter;
	d.md_name = "t_other_total";
	d.md_labels[1].ml_name = "kind"; /* twice */
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_labels[1].ml_name = "__x";
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_labels[1].ml_name = "dir";
	d.md_labels[1].ml_values = none;
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_labels[1].ml_values = dirs;
	d.md_nlabels = 3;
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d = d_hist;
	d.md_name = "t_other";
	d.md_labels[0].ml_name = "le";
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_labels[0].ml_name = "kind";
	d.md_bounds = down;
	d.md_nbounds = 2;
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_bounds = inf;
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	d.md_nbounds = 0;
	assert_int_equal(metrics_register(m, &d, &f), -EINVAL);
	metrics_free(m);
	metrics_free(NULL);
}

static void
test_render_limit(void **state)
{
	struct metrics_family *f;
	struct metrics *m;
	struct buf b;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	assert_int_equal(metrics_register(m, &d_hist, &f), 0);
	buf_init(&b, 100);
	assert_int_equal(metrics_render(m, &b), -ENOBUFS);
	buf_free(&b);
	metrics_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_render),
	    cmocka_unit_test(test_collect_and_late_family),
	    cmocka_unit_test(test_register_checks),
	    cmocka_unit_test(test_render_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
