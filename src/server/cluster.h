/*
 * The cluster core of ncgrpcd: shared state in etcd (docs/cluster.md,
 * docs/internals/cluster.md).
 *
 * With cluster-etcd set, ncgrpcd
 *  - registers itself in the node list under a lease of its own
 *    (<prefix>nodes/<name> = cluster-address), kept alive every TTL/3;
 *  - takes its device registry from <prefix>devices/ instead of the
 *    devices file: loaded at start, then watched, and rebuilt through
 *    registry_parse() and broker_set_registry() after each change;
 *  - claims the devices connected to it in <prefix>presence/<id> = <name>,
 *    bound to its lease: one put when a device connects, one conditional
 *    delete when it goes away;
 *  - keeps a watched cache of the presence keys, for
 *    cluster_device_node().
 *
 * When the lease is lost (etcd expired it, or no keep-alive succeeded for
 * a whole TTL, e.g. every member is unreachable), the node logs it, sets
 * ncgrpcd_cluster_etcd_up to 0 and stops claiming devices; the devices
 * connected to it stay connected.  It asks for a new lease every second,
 * and once it has one it registers again and claims its devices again.
 */
#ifndef NCGRPC_CLUSTER_H
#define NCGRPC_CLUSTER_H

#include <uv.h>

struct broker;
struct cluster;
struct registry_throttle;

struct cluster_opts {
	const char *co_endpoints; /* etcd endpoints (etcd_endpoints_parse) */
	const char *co_node;      /* this node's name (clusterkey.h) */
	const char *co_address;   /* "HOST:PORT" for the node list, or "" */
	const char *co_prefix;    /* key prefix, "/" first and last */
	unsigned co_ttl;          /* lease TTL, seconds */
	const char *co_ca_file;   /* etcd TLS, NULL: cleartext */
	const char *co_cert_file;
	const char *co_key_file;
	/* Attached to every registry built from etcd; may be NULL. */
	struct registry_throttle *co_throttle;
	/*
	 * Runs once, when the registry was first read from etcd: the
	 * server starts accepting devices then.
	 */
	void (*co_on_ready)(void *arg);
	void *co_arg;
};

/*
 * Connects to etcd and starts the work above, watching b's devices.
 * Returns 0 and sets *out, or -EINVAL (bad endpoints, prefix or name, with
 * a message in err), a TLS setup code, or -ENOMEM.
 */
int cluster_start(uv_loop_t *loop, struct broker *b,
                  const struct cluster_opts *o, struct cluster **out, char *err,
                  size_t errlen);

/*
 * Stops: revokes the lease (this node's presence keys and node key go at
 * once, so its devices' failover need not wait for the TTL), closes the
 * etcd client and frees cl, then runs done.  Stops watching the broker at
 * once, so b may be freed as soon as this returns.
 */
void cluster_stop(struct cluster *cl, void (*done)(void *arg), void *arg);

/*
 * The node holding device id's connection, from the watched presence
 * cache, or NULL when no node claims it.  The string lives until the loop
 * next runs.
 */
const char *cluster_device_node(const struct cluster *cl, const char *id);

/*
 * The cluster-address ("HOST:PORT") of the other node that holds device
 * id's connection, for forwarding a session there (forward.h), or NULL
 * when no node claims it, this node does, or that node has no address.
 * The string lives until the loop next runs.
 */
const char *cluster_device_address(const struct cluster *cl, const char *id);

/* 1 while the node holds its lease (ncgrpcd_cluster_etcd_up), else 0. */
int cluster_etcd_up(const struct cluster *cl);

#endif
