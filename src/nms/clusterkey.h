/*
 * The key layout of an ncgrpcd cluster in etcd (docs/cluster.md).
 *
 * Under a prefix P (cluster-prefix, default "/ncgrpc/"):
 *
 *	P nodes/NAME      = "HOST:PORT" (cluster-address, "" when unset),
 *	                    bound to the lease of node NAME
 *	P devices/ID      = the device's registry line (registry.h)
 *	P presence/ID     = NAME of the node holding ID's connection, bound
 *	                    to that node's lease
 *
 * Names and ids share the registry's id syntax, 1..255 bytes of
 * [A-Za-z0-9._:@-], so that a key never needs escaping.  Nothing here
 * allocates or logs; ncgrpcd and the ncgrpc CLI both use it.
 */
#ifndef NCGRPC_CLUSTERKEY_H
#define NCGRPC_CLUSTERKEY_H

#include <stddef.h>

#define CLUSTERKEY_PREFIX_MAX 128
#define CLUSTERKEY_NAME_MAX   255
/* The longest key: a prefix, "presence/" and a name. */
#define CLUSTERKEY_MAX (CLUSTERKEY_PREFIX_MAX + 16 + CLUSTERKEY_NAME_MAX)

enum clusterkey_kind {
	CLUSTERKEY_NODE,
	CLUSTERKEY_DEVICE,
	CLUSTERKEY_PRESENCE,
};

/*
 * Nonzero if p is a usable prefix: "/" first and last, 2..CLUSTERKEY_
 * PREFIX_MAX bytes of printable ASCII other than space.
 */
int clusterkey_prefix_valid(const char *p);

/* Nonzero if s is a node name or device id (the registry's id syntax). */
int clusterkey_name_valid(const char *s);

/*
 * Writes the key of kind for name under prefix to out (outlen bytes, NUL
 * terminated; not counted in *klen).  name may be "" for the directory of
 * that kind (the prefix of all its keys).  Returns 0, -EINVAL (invalid
 * name) or -ENAMETOOLONG.
 */
int clusterkey_make(const char *prefix, enum clusterkey_kind kind,
                    const char *name, char *out, size_t outlen, size_t *klen);

/*
 * Splits key[0..klen) (not NUL terminated) under prefix: sets *kind and
 * copies the name, NUL terminated, to name (CLUSTERKEY_NAME_MAX + 1 bytes).
 * Returns 0, or -ENOENT for a key outside the layout (another prefix, an
 * unknown directory, an invalid name), which callers ignore.
 */
int clusterkey_parse(const char *prefix, const void *key, size_t klen,
                     enum clusterkey_kind *kind, char *name);

#endif
