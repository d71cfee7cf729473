/*
 * Metric families and their text rendering (see metrics.h).
 *
 * A family's series are one array indexed by l0 * n1 + l1, where n1 is the
 * number of values of the second label (1 without it).  A histogram keeps
 * per series one count per bucket, not cumulative, so that an observation
 * touches one slot; rendering adds them up.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

struct metrics_family {
	const struct metrics_desc *mf_desc;
	size_t mf_n[METRICS_MAX_LABELS]; /* values per label; 1 if absent */
	size_t mf_nseries;
	int64_t *mf_vals;     /* counters (as unsigned) and gauges */
	uint64_t *mf_buckets; /* histograms: nseries * (nbounds + 1) */
	double *mf_sums;      /* histograms: nseries */
	struct metrics_family *mf_next;
};

struct metrics {
	struct metrics_family *m_first, **m_tail;
	metrics_collect_fn m_collect;
	void *m_collect_arg;
};

int
metrics_new(struct metrics **out)
{
	struct metrics *m;

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return -ENOMEM;
	m->m_tail = &m->m_first;
	*out = m;
	return 0;
}

static void
family_free(struct metrics_family *f)
{
	free(f->mf_vals);
	free(f->mf_buckets);
	free(f->mf_sums);
	free(f);
}

void
metrics_free(struct metrics *m)
{
	struct metrics_family *f, *next;

	if (m == NULL)
		return;
	for (f = m->m_first; f != NULL; f = next) {
		next = f->mf_next;
		family_free(f);
	}
	free(m);
}

static int
name_valid(const char *s, int colon)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' ||
		      (colon && c == ':')))
			return 0;
	}
	return 1;
}

/* "le" is the histogram's own label; "__" names are reserved. */
static int
label_valid(const struct metrics_desc *d, const struct metrics_label *l,
            size_t *nvalues)
{
	size_t n;

	if (!name_valid(l->ml_name, 0) || strncmp(l->ml_name, "__", 2) == 0 ||
	    (d->md_type == METRICS_HISTOGRAM && strcmp(l->ml_name, "le") == 0))
		return 0;
	if (l->ml_values == NULL)
		return 0;
	for (n = 0; l->ml_values[n] != NULL; n++)
		if (n == METRICS_MAX_VALUES)
			return 0;
	*nvalues = n;
	return n > 0;
}

static int
desc_valid(const struct metrics_desc *d, size_t *n)
{
	size_t i;

	if (!name_valid(d->md_name, 1) || d->md_help == NULL ||
	    d->md_nlabels > METRICS_MAX_LABELS)
		return 0;
	if (d->md_type != METRICS_COUNTER && d->md_type != METRICS_GAUGE &&
	    d->md_type != METRICS_HISTOGRAM)
		return 0;
	n[0] = n[1] = 1;
	for (i = 0; i < d->md_nlabels; i++)
		if (!label_valid(d, &d->md_labels[i], &n[i]))
			return 0;
	if (d->md_nlabels == 2 &&
	    strcmp(d->md_labels[0].ml_name, d->md_labels[1].ml_name) == 0)
		return 0;
	if (d->md_type != METRICS_HISTOGRAM)
		return 1;
	if (d->md_nbounds == 0 || d->md_nbounds > METRICS_MAX_BUCKETS ||
	    d->md_bounds == NULL)
		return 0;
	for (i = 0; i < d->md_nbounds; i++)
		if (!isfinite(d->md_bounds[i]) ||
		    (i > 0 && d->md_bounds[i] <= d->md_bounds[i - 1]))
			return 0;
	return 1;
}

int
metrics_register(struct metrics *m, const struct metrics_desc *d,
                 struct metrics_family **out)
{
	struct metrics_family *f;
	size_t n[METRICS_MAX_LABELS];

	if (!desc_valid(d, n))
		return -EINVAL;
	for (f = m->m_first; f != NULL; f = f->mf_next)
		if (strcmp(f->mf_desc->md_name, d->md_name) == 0)
			return -EEXIST;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return -ENOMEM;
	f->mf_desc = d;
	f->mf_n[0] = n[0];
	f->mf_n[1] = n[1];
	f->mf_nseries = n[0] * n[1];
	if (d->md_type == METRICS_HISTOGRAM) {
		f->mf_buckets = calloc(f->mf_nseries * (d->md_nbounds + 1),
		                       sizeof(*f->mf_buckets));
		f->mf_sums = calloc(f->mf_nseries, sizeof(*f->mf_sums));
		if (f->mf_buckets == NULL || f->mf_sums == NULL) {
			family_free(f);
			return -ENOMEM;
		}
	} else if ((f->mf_vals = calloc(f->mf_nseries, sizeof(*f->mf_vals))) ==
	           NULL) {
		family_free(f);
		return -ENOMEM;
	}
	*m->m_tail = f;
	m->m_tail = &f->mf_next;
	*out = f;
	return 0;
}

void
metrics_set_collect(struct metrics *m, metrics_collect_fn fn, void *arg)
{
	m->m_collect = fn;
	m->m_collect_arg = arg;
}

/* The series index, or -1 if there is none to update. */
static long
series(const struct metrics_family *f, enum metrics_type t, unsigned l0,
       unsigned l1)
{
	if (f == NULL || f->mf_desc->md_type != t || l0 >= f->mf_n[0] ||
	    l1 >= f->mf_n[1])
		return -1;
	return (long)(l0 * f->mf_n[1] + l1);
}

void
metrics_count(struct metrics_family *f, unsigned l0, unsigned l1, uint64_t v)
{
	long s = series(f, METRICS_COUNTER, l0, l1);

	if (s >= 0)
		f->mf_vals[s] = (int64_t)((uint64_t)f->mf_vals[s] + v);
}

void
metrics_counter_set(struct metrics_family *f, unsigned l0, unsigned l1,
                    uint64_t v)
{
	long s = series(f, METRICS_COUNTER, l0, l1);

	if (s >= 0)
		f->mf_vals[s] = (int64_t)v;
}

void
metrics_gauge_add(struct metrics_family *f, unsigned l0, unsigned l1,
                  int64_t delta)
{
	long s = series(f, METRICS_GAUGE, l0, l1);

	if (s >= 0)
		f->mf_vals[s] =
		    (int64_t)((uint64_t)f->mf_vals[s] + (uint64_t)delta);
}

void
metrics_gauge_set(struct metrics_family *f, unsigned l0, unsigned l1, int64_t v)
{
	long s = series(f, METRICS_GAUGE, l0, l1);

	if (s >= 0)
		f->mf_vals[s] = v;
}

void
metrics_observe(struct metrics_family *f, unsigned l0, unsigned l1, double v)
{
	long s = series(f, METRICS_HISTOGRAM, l0, l1);
	const struct metrics_desc *d;
	size_t i;

	if (s < 0 || isnan(v))
		return;
	d = f->mf_desc;
	/* A handful of fixed bounds: a linear scan beats a search. */
	for (i = 0; i < d->md_nbounds && v > d->md_bounds[i]; i++)
		;
	f->mf_buckets[(size_t)s * (d->md_nbounds + 1) + i]++;
	f->mf_sums[s] += v;
}

int64_t
metrics_value(const struct metrics_family *f, unsigned l0, unsigned l1)
{
	const struct metrics_desc *d;
	uint64_t n = 0;
	size_t i, s;

	if (f == NULL || l0 >= f->mf_n[0] || l1 >= f->mf_n[1])
		return 0;
	d = f->mf_desc;
	s = l0 * f->mf_n[1] + l1;
	if (d->md_type != METRICS_HISTOGRAM)
		return f->mf_vals[s];
	for (i = 0; i <= d->md_nbounds; i++)
		n += f->mf_buckets[s * (d->md_nbounds + 1) + i];
	return (int64_t)n;
}

/* --- Rendering --- */

static int
put(struct buf *out, const char *s)
{
	return buf_append(out, s, strlen(s));
}

static int __attribute__((format(printf, 2, 3)))
putf(struct buf *out, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -EINVAL; /* numbers only: cannot happen */
	return buf_append(out, tmp, (size_t)n);
}

int
metrics_escape(struct buf *out, const char *s, int help)
{
	const char *run = s;
	const char *rep;
	int rc;

	for (; *s != '\0'; s++) {
		if (*s == '\\')
			rep = "\\\\";
		else if (*s == '\n')
			rep = "\\n";
		else if (*s == '"' && !help)
			rep = "\\\"";
		else
			continue;
		if ((rc = buf_append(out, run, (size_t)(s - run))) != 0 ||
		    (rc = put(out, rep)) != 0)
			return rc;
		run = s + 1;
	}
	return buf_append(out, run, (size_t)(s - run));
}

/*
 * Writes name{labels} for series (l0, l1), with le="..." last when le is
 * not NULL.
 */
static int
put_series(struct buf *out, const struct metrics_family *f, const char *suffix,
           size_t l0, size_t l1, const char *le)
{
	const struct metrics_desc *d = f->mf_desc;
	size_t idx[METRICS_MAX_LABELS] = {l0, l1};
	size_t i;
	int rc;

	if ((rc = put(out, d->md_name)) != 0 || (rc = put(out, suffix)) != 0)
		return rc;
	if (d->md_nlabels == 0 && le == NULL)
		return put(out, " ");
	if ((rc = put(out, "{")) != 0)
		return rc;
	for (i = 0; i < d->md_nlabels; i++) {
		if ((rc = put(out, i > 0 ? "," : "")) != 0 ||
		    (rc = put(out, d->md_labels[i].ml_name)) != 0 ||
		    (rc = put(out, "=\"")) != 0 ||
		    (rc = metrics_escape(out, d->md_labels[i].ml_values[idx[i]],
		                         0)) != 0 ||
		    (rc = put(out, "\"")) != 0)
			return rc;
	}
	if (le != NULL &&
	    ((rc = put(out, d->md_nlabels > 0 ? ",le=\"" : "le=\"")) != 0 ||
	     (rc = put(out, le)) != 0 || (rc = put(out, "\"")) != 0))
		return rc;
	return put(out, "} ");
}

static int
render_family(struct buf *out, const struct metrics_family *f)
{
	static const char *const types[] = {
	    [METRICS_COUNTER] = "counter",
	    [METRICS_GAUGE] = "gauge",
	    [METRICS_HISTOGRAM] = "histogram",
	};
	const struct metrics_desc *d = f->mf_desc;
	size_t l0, l1, i, s;
	uint64_t cum, *b;
	char le[48];
	int rc;

	if ((rc = putf(out, "# HELP %s ", d->md_name)) != 0 ||
	    (rc = metrics_escape(out, d->md_help, 1)) != 0 ||
	    (rc = putf(out, "\n# TYPE %s %s\n", d->md_name,
	               types[d->md_type])) != 0)
		return rc;
	for (l0 = 0; l0 < f->mf_n[0]; l0++) {
		for (l1 = 0; l1 < f->mf_n[1]; l1++) {
			s = l0 * f->mf_n[1] + l1;
			if (d->md_type == METRICS_COUNTER) {
				if ((rc = put_series(out, f, "", l0, l1,
				                     NULL)) != 0 ||
				    (rc = putf(
				         out, "%llu\n",
				         (unsigned long long)f->mf_vals[s])) !=
				        0)
					return rc;
				continue;
			}
			if (d->md_type == METRICS_GAUGE) {
				if ((rc = put_series(out, f, "", l0, l1,
				                     NULL)) != 0 ||
				    (rc = putf(out, "%lld\n",
				               (long long)f->mf_vals[s])) != 0)
					return rc;
				continue;
			}
			b = &f->mf_buckets[s * (d->md_nbounds + 1)];
			cum = 0;
			for (i = 0; i <= d->md_nbounds; i++) {
				cum += b[i];
				if (i < d->md_nbounds)
					snprintf(le, sizeof(le), "%.15g",
					         d->md_bounds[i]);
				else
					snprintf(le, sizeof(le), "+Inf");
				if ((rc = put_series(out, f, "_bucket", l0, l1,
				                     le)) != 0 ||
				    (rc = putf(out, "%llu\n",
				               (unsigned long long)cum)) != 0)
					return rc;
			}
			if ((rc = put_series(out, f, "_sum", l0, l1, NULL)) !=
			        0 ||
			    (rc = putf(out, "%.17g\n", f->mf_sums[s])) != 0 ||
			    (rc = put_series(out, f, "_count", l0, l1, NULL)) !=
			        0 ||
			    (rc = putf(out, "%llu\n",
			               (unsigned long long)cum)) != 0)
				return rc;
		}
	}
	return 0;
}

int
metrics_render(struct metrics *m, struct buf *out)
{
	struct metrics_family *f;
	int rc;

	if (m->m_collect != NULL)
		m->m_collect(m->m_collect_arg);
	for (f = m->m_first; f != NULL; f = f->mf_next)
		if ((rc = render_family(out, f)) != 0)
			return rc;
	return 0;
}
