/*
 * etcd v3 client on a libuv loop, over the gRPC stack of src/common.
 *
 * One client talks to one etcd cluster through a list of endpoints.  It
 * holds one connection at a time; when that connection fails, or a member
 * answers that it has no leader, the client moves to the next endpoint, and
 * after a whole round of failures waits with exponential backoff and jitter.
 *
 * Three kinds of work, each with one final callback that runs exactly once
 * (also at etcd_client_close(), then with CANCELLED) and never inside the
 * call that started or cancelled it (libuv's rule, docs/internals/grpc.md):
 *
 * - unary calls (etcd_call() and its helpers): retried on another endpoint
 *   within one deadline, by the rules of docs/internals/etcd.md;
 * - leases (etcd_lease_grant()): kept alive on a shared stream every TTL/3
 *   until revoked or lost;
 * - watches (etcd_watch_start()): on a shared stream, recreated after a
 *   reconnect from the revision after the last one delivered, and
 *   reporting a resync when etcd compacted past it.
 *
 * Statuses are gRPC codes (enum grpc_status) with a message that is never
 * NULL: etcd's own ("etcdserver: ...") or a local one.
 */
#ifndef NCGRPC_ETCD_H
#define NCGRPC_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "etcd/etcdserver/etcdserverpb/rpc.pb-c.h"

#define ETCD_HOST_MAX      256
#define ETCD_MAX_ENDPOINTS 16
#define ETCD_DEFAULT_PORT  2379

struct etcd_client;
struct etcd_lease;
struct etcd_watch;

struct etcd_endpoint {
	char ee_host[ETCD_HOST_MAX];
	uint16_t ee_port;
};

/*
 * Parses an endpoint list: entries separated by commas or blanks, each
 * "HOST:PORT", "[V6ADDR]:PORT" or a bare host (port 2379), optionally
 * prefixed by "http://" or "https://" (a trailing "/" is allowed).  Fills
 * eps[0..max) and sets *n, and *tls to 1 when the entries say https, 0
 * otherwise.  Returns 0, -EINVAL (malformed entry, empty list, http mixed
 * with https), -E2BIG (more than max entries) or -ENAMETOOLONG.
 */
int etcd_endpoints_parse(const char *list, struct etcd_endpoint *eps,
                         size_t max, size_t *n, int *tls);

/* Options; zero fields take the defaults given. */
struct etcd_opts {
	/* TLS when eo_ca_file is set (trusted CA or server certificate). */
	const char *eo_ca_file;
	/* Client certificate chain and key, both or neither (TLS only). */
	const char *eo_cert_file;
	const char *eo_key_file;
	unsigned eo_timeout_ms;     /* a unary call, retries included: 5 s */
	unsigned eo_attempt_ms;     /* one attempt of it: 2 s */
	unsigned eo_connect_ms;     /* TCP connect, TLS handshake: 2 s */
	unsigned eo_backoff_min_ms; /* after a round of failures: 100 ms */
	unsigned eo_backoff_max_ms; /* doubling up to: 3 s */
	unsigned eo_ping_ms;        /* HTTP/2 keepalive PING: 10 s */
	unsigned eo_max_pending;    /* unary calls not yet ended: 1024 */
	unsigned eo_max_leases;     /* leases: 64 */
	unsigned eo_max_watches;    /* watches: 256 */
	size_t eo_max_message;      /* largest response: 16 MiB */
	/*
	 * Connection news, may be NULL: up is 1 when a connection to
	 * endpoint became ready, 0 when one ended (reason says why).
	 */
	void (*eo_on_conn)(struct etcd_client *c, int up, const char *endpoint,
	                   const char *reason, void *arg);
	void *eo_arg;
};

/*
 * Creates a client for eps[0..n) (copied) and starts connecting to the
 * first.  On failure writes a reason to err and returns -EINVAL (no
 * endpoint, more than ETCD_MAX_ENDPOINTS, a certificate without a key),
 * a TLS setup code (tls.h) or -ENOMEM; *out is set only on success.
 */
int etcd_client_new(uv_loop_t *loop, const struct etcd_endpoint *eps, size_t n,
                    const struct etcd_opts *opts, struct etcd_client **out,
                    char *err, size_t errlen);

/*
 * Closes the client: every unary call, lease and watch still alive ends
 * with CANCELLED (leases are not revoked: their keys live out their TTL),
 * then the connection and handles close, the client is freed and done
 * runs (may be NULL).  Nothing may be started afterwards.
 */
void etcd_client_close(struct etcd_client *c, void (*done)(void *arg),
                       void *arg);

/* "HOST:PORT" of the endpoint in use or being dialled. */
const char *etcd_client_endpoint(const struct etcd_client *c);
/* Connections that became ready so far (failovers + 1). */
unsigned etcd_client_connects(const struct etcd_client *c);

/* --- unary calls --- */

enum etcd_method {
	ETCD_RANGE,        /* KV/Range: Etcdserverpb__RangeRequest */
	ETCD_PUT,          /* KV/Put */
	ETCD_DELETE_RANGE, /* KV/DeleteRange */
	ETCD_TXN,          /* KV/Txn */
	ETCD_COMPACT,      /* KV/Compact */
	ETCD_LEASE_GRANT,  /* Lease/LeaseGrant */
	ETCD_LEASE_REVOKE, /* Lease/LeaseRevoke */
	ETCD_LEASE_TTL,    /* Lease/LeaseTimeToLive */
	ETCD_MEMBER_LIST,  /* Cluster/MemberList */
	ETCD_STATUS,       /* Maintenance/Status (of the member answering) */
	ETCD_METHOD_MAX
};

/*
 * A unary call ended.  On status 0 resp is the response message of the
 * method (e.g. Etcdserverpb__RangeResponse), valid during the callback
 * only; otherwise resp is NULL and message says what failed.
 */
typedef void (*etcd_cb)(struct etcd_client *c, int status, const char *message,
                        const ProtobufCMessage *resp, void *arg);

/*
 * Starts a unary call of method m with request req (packed at once: req
 * need not outlive the call).  Returns 0, -EINVAL (req is not the method's
 * request message), -ENOBUFS (eo_max_pending calls not yet ended),
 * NCG_ECANCELLED (the client is closing) or -ENOMEM; then cb never runs.
 */
int etcd_call(struct etcd_client *c, enum etcd_method m,
              const ProtobufCMessage *req, etcd_cb cb, void *arg);

/* The method's full path, e.g. "/etcdserverpb.KV/Range". */
const char *etcd_method_path(enum etcd_method m);

/*
 * The range_end that makes [key, range_end) the keys starting with key:
 * key with its last byte below 0xff incremented and what follows dropped,
 * or "\0" (every key) when there is none.  Writes at most klen bytes to
 * out and returns the length.
 */
size_t etcd_prefix_end(const uint8_t *key, size_t klen, uint8_t *out);

/* Range of key, or of every key starting with key when prefix is set. */
int etcd_get(struct etcd_client *c, const void *key, size_t klen, int prefix,
             etcd_cb cb, void *arg);
/* Put, attached to lease when nonzero. */
int etcd_put(struct etcd_client *c, const void *key, size_t klen,
             const void *val, size_t vlen, int64_t lease, etcd_cb cb,
             void *arg);
/* DeleteRange of key, or of every key starting with key. */
int etcd_delete(struct etcd_client *c, const void *key, size_t klen, int prefix,
                etcd_cb cb, void *arg);
/*
 * Compare-and-swap: a Txn that puts key (with lease when nonzero) if its
 * mod_revision is mod_rev (0: the key does not exist), and otherwise
 * reads it.  The Etcdserverpb__TxnResponse says which: succeeded is 1
 * after the put; else responses[0] holds the current key (no kvs: absent).
 */
int etcd_cas(struct etcd_client *c, const void *key, size_t klen,
             const void *val, size_t vlen, int64_t lease, int64_t mod_rev,
             etcd_cb cb, void *arg);

/* --- leases --- */

struct etcd_lease_ops {
	/* The lease exists: id and the TTL etcd granted, in seconds. */
	void (*on_granted)(struct etcd_lease *l, int64_t id, int64_t ttl,
	                   void *arg);
	/*
	 * The lease is over, exactly once; the handle is freed when this
	 * returns.  OK after etcd_lease_revoke() succeeded; NOT_FOUND when
	 * etcd says it expired; DEADLINE_EXCEEDED when no keep-alive
	 * succeeded for a whole TTL (etcd may have expired it); CANCELLED at
	 * etcd_client_close(); or the grant's or revoke's failure.
	 */
	void (*on_lost)(struct etcd_lease *l, int status, const char *message,
	                void *arg);
};

/*
 * Grants a lease of ttl seconds (>= 1) and keeps it alive.  Returns 0 and
 * sets *out, or -EINVAL, -ENOBUFS (eo_max_leases), NCG_ECANCELLED or
 * -ENOMEM; then no callback runs.
 */
int etcd_lease_grant(struct etcd_client *c, int64_t ttl,
                     const struct etcd_lease_ops *ops, void *arg,
                     struct etcd_lease **out);

/*
 * Stops keeping the lease alive and revokes it (its keys go at once):
 * on_lost follows with the revoke's outcome.  Harmless after on_lost was
 * scheduled.
 */
void etcd_lease_revoke(struct etcd_lease *l);

/* The lease ID, 0 until granted. */
int64_t etcd_lease_id(const struct etcd_lease *l);

/* --- watches --- */

struct etcd_watch_ops {
	/*
	 * Events in revision order, never one already delivered; revision is
	 * the store revision etcd reported with them.  evs is valid during
	 * the call only.
	 */
	void (*on_events)(struct etcd_watch *w, Mvccpb__Event *const *evs,
	                  size_t n, int64_t revision, void *arg);
	/*
	 * etcd compacted past the next revision wanted: events were lost.
	 * revision is one etcd can still read (the compaction's, or later):
	 * the caller re-reads the range at it (a Range with that revision),
	 * and the watch goes on from revision + 1.
	 */
	void (*on_resync)(struct etcd_watch *w, int64_t revision, void *arg);
	/*
	 * The watch is over, exactly once; the handle is freed when this
	 * returns.  CANCELLED after etcd_watch_cancel() or at close;
	 * otherwise etcd refused or cancelled it (message says why).
	 */
	void (*on_end)(struct etcd_watch *w, int status, const char *message,
	               void *arg);
};

/*
 * Watches key, or every key starting with key when prefix is set, from
 * start_rev (0: from now).  Returns 0 and sets *out, or -EINVAL, -ENOBUFS
 * (eo_max_watches), NCG_ECANCELLED or -ENOMEM; then no callback runs.
 */
int etcd_watch_start(struct etcd_client *c, const void *key, size_t klen,
                     int prefix, int64_t start_rev,
                     const struct etcd_watch_ops *ops, void *arg,
                     struct etcd_watch **out);

/* Ends the watch: on_end follows with CANCELLED.  Harmless when ending. */
void etcd_watch_cancel(struct etcd_watch *w);

/* The revision the watch would resume from after a reconnect. */
int64_t etcd_watch_next_rev(const struct etcd_watch *w);

#endif
