/*
 * The key layout of an ncgrpcd cluster in etcd (clusterkey.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clusterkey.h"

static const char *const dirs[] = {
    [CLUSTERKEY_NODE] = "nodes/",
    [CLUSTERKEY_DEVICE] = "devices/",
    [CLUSTERKEY_PRESENCE] = "presence/",
};

int
clusterkey_prefix_valid(const char *p)
{
	size_t i, n = strlen(p);

	if (n < 2 || n > CLUSTERKEY_PREFIX_MAX || p[0] != '/' ||
	    p[n - 1] != '/')
		return 0;
	for (i = 0; i < n; i++)
		if (p[i] <= ' ' || p[i] > '~')
			return 0;
	return 1;
}

static int
name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '@' || c == '-';
}

static int
name_valid(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > CLUSTERKEY_NAME_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (!name_char(s[i]))
			return 0;
	return 1;
}

int
clusterkey_name_valid(const char *s)
{
	return name_valid(s, strlen(s));
}

int
clusterkey_make(const char *prefix, enum clusterkey_kind kind, const char *name,
                char *out, size_t outlen, size_t *klen)
{
	int n;

	if (name[0] != '\0' && !clusterkey_name_valid(name))
		return -EINVAL;
	n = snprintf(out, outlen, "%s%s%s", prefix, dirs[kind], name);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	*klen = (size_t)n;
	return 0;
}

int
clusterkey_parse(const char *prefix, const void *key, size_t klen,
                 enum clusterkey_kind *kind, char *name)
{
	const char *k = key;
	size_t plen = strlen(prefix), dlen, i;

	if (klen < plen || memcmp(k, prefix, plen) != 0)
		return -ENOENT;
	k += plen;
	klen -= plen;
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		dlen = strlen(dirs[i]);
		if (klen < dlen || memcmp(k, dirs[i], dlen) != 0)
			continue;
		if (!name_valid(k + dlen, klen - dlen))
			return -ENOENT;
		memcpy(name, k + dlen, klen - dlen);
		name[klen - dlen] = '\0';
		*kind = (enum clusterkey_kind)i;
		return 0;
	}
	return -ENOENT;
}
