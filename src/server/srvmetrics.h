/*
 * ncgrpcd's metric families (docs/metrics.md lists them).
 *
 * One registry per process, in the global srvm.  ncgrpcd.c creates it at
 * startup with srvmetrics_init(); the modules that see an event count it
 * through the family pointers below, with the label indexes of the enums
 * here.  Before srvmetrics_init() (unit tests that run the broker alone)
 * every pointer is NULL and counting does nothing (metrics.h).
 *
 * The cluster families (etcd round trips and errors, etcd up, nodes and
 * devices claimed) are described here but
 * registered only by srvmetrics_cluster_init(), which the cluster code calls
 * when it starts, so that a single node does not export families that can
 * only read zero.  A module that wants more families adds a description to
 * srvmetrics.c, a pointer here, and registers it the same way.
 */
#ifndef NCGRPC_SRVMETRICS_H
#define NCGRPC_SRVMETRICS_H

#include <stdint.h>

#include "metrics.h"

/* Label "type": the index is enum broker_session_type. */

/* Label "reason" of ncgrpcd_sessions_total. */
enum srvm_end {
	SRVM_END_DEVICE_CLOSED,   /* the device ended it (the process exited) */
	SRVM_END_OPERATOR_CLOSED, /* the operator's call went away */
	SRVM_END_DEVICE_LOST,     /* the device's stream or connection broke */
	SRVM_END_NOT_CONNECTED,   /* no such device, or it never came */
	SRVM_END_BUSY,            /* session limit, or no free connection */
	SRVM_END_TIMEOUT,         /* the device did not open the stream */
	SRVM_END_PROTOCOL,        /* malformed input from either side */
	SRVM_END_RESOURCE,        /* out of memory, or a line too long */
	SRVM_END_SHUTDOWN,        /* ncgrpcd is stopping */
};

/* Label "direction" of ncgrpcd_session_bytes_total. */
enum srvm_dir { SRVM_TO_DEVICE, SRVM_FROM_DEVICE };

/* Label "reason" of ncgrpcd_auth_failures_total. */
enum srvm_auth { SRVM_AUTH_UNKNOWN, SRVM_AUTH_BAD_SECRET, SRVM_AUTH_ERROR };

/* Label "reason" of ncgrpcd_auth_throttled_total. */
enum srvm_throttle { SRVM_THROTTLE_FAILURES, SRVM_THROTTLE_BUSY };

/* Label "result" of ncgrpcd_tls_handshakes_total. */
enum srvm_tls { SRVM_TLS_OK, SRVM_TLS_FAILED };

/* Label "limit" of ncgrpcd_preauth_limit_hits_total. */
enum srvm_limit {
	SRVM_LIMIT_CONNS,
	SRVM_LIMIT_UNAUTH,
	SRVM_LIMIT_UNAUTH_ADDR,
	SRVM_LIMIT_AUTH_TIMEOUT,
	SRVM_LIMIT_STREAMS,
	SRVM_LIMIT_BUFFER,
	SRVM_LIMIT_MESSAGE,
};

/* Label "state" of ncgrpcd_device_connections. */
enum srvm_conn { SRVM_CONN_AUTHENTICATED, SRVM_CONN_UNAUTHENTICATED };

struct srvmetrics {
	struct metrics *sm_reg;
	struct metrics_family *sm_devices;          /* gauge */
	struct metrics_family *sm_idle;             /* gauge */
	struct metrics_family *sm_conns;            /* gauge {state} */
	struct metrics_family *sm_sessions_active;  /* gauge {type} */
	struct metrics_family *sm_sessions_started; /* counter {type} */
	struct metrics_family *sm_sessions;         /* counter {type,reason} */
	struct metrics_family *sm_bytes;          /* counter {type,direction} */
	struct metrics_family *sm_open_secs;      /* histogram {type} */
	struct metrics_family *sm_auth_failures;  /* counter {reason} */
	struct metrics_family *sm_auth_throttled; /* counter {reason} */
	struct metrics_family *sm_preauth_limits; /* counter {limit} */
	struct metrics_family *sm_tls;            /* counter {result} */
	struct metrics_family *sm_tls_secs;       /* histogram */
	/* Registered by srvmetrics_cluster_init() only. */
	struct metrics_family *sm_etcd_secs;   /* histogram {op} */
	struct metrics_family *sm_etcd_errors; /* counter {op} */
	struct metrics_family *sm_etcd_up;     /* gauge */
	struct metrics_family *sm_cl_nodes;    /* gauge */
	struct metrics_family *sm_cl_claimed;  /* gauge */
};

/* Label "op" of the etcd families. */
enum srvm_etcd_op {
	SRVM_ETCD_GET,
	SRVM_ETCD_PUT,
	SRVM_ETCD_TXN,
	SRVM_ETCD_LEASE,
	SRVM_ETCD_WATCH
};

extern struct srvmetrics srvm;

/* Creates the registry and the single-node families.  0 or -ENOMEM. */
int srvmetrics_init(void);

/*
 * Registers the etcd families; a second call does nothing.  0, -EINVAL
 * before srvmetrics_init(), or -ENOMEM.
 */
int srvmetrics_cluster_init(void);

/* Frees the registry; every pointer in srvm is NULL again. */
void srvmetrics_free(void);

/* Seconds between two uv_hrtime() readings, for the histograms. */
static inline double
srvmetrics_secs(uint64_t from_ns, uint64_t to_ns)
{
	return to_ns > from_ns ? (double)(to_ns - from_ns) / 1e9 : 0.0;
}

#endif
