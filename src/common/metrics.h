/*
 * Counters, gauges and histograms, rendered in the Prometheus text
 * exposition format (version 0.0.4).
 *
 * A registry (struct metrics) holds families.  A family has a name, a help
 * text, a type, and at most METRICS_MAX_LABELS labels whose values come
 * from small fixed lists, so that every series exists from registration on
 * and an update is an index into an array: no allocation, no lookup, no
 * lock.  A histogram's buckets are fixed at registration too.
 *
 * Updates name a series by the index of each label's value in its list
 * (0 for a family without that label).  Every update accepts a NULL family
 * and does nothing, so that code can count whether or not anybody created
 * the family, and ignores indexes out of range.
 *
 * Families render in the order registered; a family registered later (a
 * module that starts after the others) appears from the next render on.
 * Everything runs on one thread (the event loop's); nothing here logs.
 */
#ifndef NCGRPC_METRICS_H
#define NCGRPC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define METRICS_MAX_LABELS  2
#define METRICS_MAX_BUCKETS 32
#define METRICS_MAX_VALUES  64 /* values in one label's list */

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

struct metrics_label {
	const char *ml_name;
	const char *const *ml_values; /* NULL-terminated, at least one */
};

/*
 * What a family is.  metrics_register() keeps pointers to the strings and
 * arrays, which must outlive the registry (static tables in practice).
 * md_bounds are a histogram's upper bounds, strictly increasing and finite;
 * the +Inf bucket is implied.
 */
struct metrics_desc {
	const char *md_name; /* [a-zA-Z_:][a-zA-Z0-9_:]* */
	const char *md_help;
	enum metrics_type md_type;
	struct metrics_label md_labels[METRICS_MAX_LABELS];
	size_t md_nlabels;
	const double *md_bounds;
	size_t md_nbounds;
};

struct metrics;
struct metrics_family;

/* Called by metrics_render() before it writes, to refresh mirrored values. */
typedef void (*metrics_collect_fn)(void *arg);

/* Creates an empty registry.  Returns 0 and sets *out, or -ENOMEM. */
int metrics_new(struct metrics **out);

/* Frees m and its families; NULL is fine. */
void metrics_free(struct metrics *m);

/*
 * Adds a family described by d (see above for what must outlive m).
 * Returns 0 and sets *out (owned by m), -EINVAL for a malformed
 * description (bad name or label name, too many labels, values or buckets,
 * bounds not increasing), -EEXIST for a name already registered, or
 * -ENOMEM.
 */
int metrics_register(struct metrics *m, const struct metrics_desc *d,
                     struct metrics_family **out);

/*
 * Sets the hook metrics_render() calls first (one per registry; NULL
 * removes it).
 */
void metrics_set_collect(struct metrics *m, metrics_collect_fn fn, void *arg);

/* Counters: adds v, or sets the total (for a count kept elsewhere). */
void metrics_count(struct metrics_family *f, unsigned l0, unsigned l1,
                   uint64_t v);
void metrics_counter_set(struct metrics_family *f, unsigned l0, unsigned l1,
                         uint64_t v);

/* Gauges: adds delta (may be negative), or sets the value. */
void metrics_gauge_add(struct metrics_family *f, unsigned l0, unsigned l1,
                       int64_t delta);
void metrics_gauge_set(struct metrics_family *f, unsigned l0, unsigned l1,
                       int64_t v);

/* Histograms: counts one observation of v (seconds, bytes...). */
void metrics_observe(struct metrics_family *f, unsigned l0, unsigned l1,
                     double v);

/*
 * Reads a series back (tests, and the collect hook of a caller that needs
 * it): a counter's or gauge's value, a histogram's count.  0 for a NULL
 * family or an index out of range.
 */
int64_t metrics_value(const struct metrics_family *f, unsigned l0, unsigned l1);

/*
 * Appends every family in the text format to out.  Returns 0, -ENOBUFS
 * (out's limit) or -ENOMEM; after an error out holds part of the text.
 */
int metrics_render(struct metrics *m, struct buf *out);

/*
 * Appends s to out escaped as a label value (backslash, double quote and
 * newline) or, with help set, as a HELP text (backslash and newline).
 * Returns 0, -ENOBUFS or -ENOMEM.
 */
int metrics_escape(struct buf *out, const char *s, int help);

#endif
