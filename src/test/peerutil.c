#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peerutil.h"

void
peer_say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static int
md_cmp(const void *a, const void *b)
{
	const struct grpc_md *x = a, *y = b;

	return strcmp(x->md_key, y->md_key);
}

void
peer_md_each(const struct grpc_mdlist *ml,
             void (*fn)(const char *kv, void *arg), void *arg)
{
	struct grpc_md *sorted;
	size_t i;

	if (ml->ml_n == 0 ||
	    (sorted = calloc(ml->ml_n, sizeof(*sorted))) == NULL)
		return;
	memcpy(sorted, ml->ml_md, ml->ml_n * sizeof(*sorted));
	qsort(sorted, ml->ml_n, sizeof(*sorted), md_cmp);
	for (i = 0; i < ml->ml_n; i++) {
		const struct grpc_md *md = &sorted[i];
		const char *v = (const char *)md->md_value;
		char *b64 = NULL, *kv;

		if (grpc_meta_key_is_bin(md->md_key, strlen(md->md_key)) &&
		    grpc_base64_encode(md->md_value, md->md_len, &b64) == 0)
			v = b64;
		if (asprintf(&kv, "%s=%s", md->md_key, v) >= 0) {
			fn(kv, arg);
			free(kv);
		}
		free(b64);
	}
	free(sorted);
}
