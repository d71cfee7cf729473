/*
 * ncgrpcd's metric families: their names, help texts, labels and buckets,
 * and the registry that holds them (see srvmetrics.h).
 */
#include <errno.h>
#include <string.h>

#include "srvmetrics.h"

struct srvmetrics srvm;

/* In the order of the enums of srvmetrics.h and broker.h. */
static const char *const types[] = {"netconf", "shell", NULL};
static const char *const ends[] = {
    "device_closed", "operator_closed", "device_lost", "not_connected", "busy",
    "timeout",       "protocol_error",  "resource",    "shutdown",      NULL};
static const char *const dirs[] = {"to_device", "from_device", NULL};
static const char *const auths[] = {"unknown_device", "bad_secret", "error",
                                    NULL};
static const char *const throttles[] = {"failures", "busy", NULL};
static const char *const tls_results[] = {"ok", "failed", NULL};
static const char *const limits[] = {"max_connections",
                                     "max_unauthenticated",
                                     "max_unauthenticated_per_address",
                                     "auth_timeout",
                                     "preauth_streams",
                                     "preauth_buffer",
                                     "message_size",
                                     NULL};
static const char *const conn_states[] = {"authenticated", "unauthenticated",
                                          NULL};
static const char *const etcd_ops[] = {"get",   "put",   "txn",
                                       "lease", "watch", NULL};

/* Seconds: a loopback handshake takes a millisecond, a slow link seconds. */
static const double tls_bounds[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
/* Up to session-wait (10 s by default) and beyond. */
static const double open_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,    2.5,   5,    10,  30};
static const double etcd_bounds[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct metrics_desc d_devices = {
    .md_name = "ncgrpcd_devices_connected",
    .md_help = "Devices connected now (with an idle connection or a "
               "session, or in their linger time after the last one).",
    .md_type = METRICS_GAUGE,
};
static const struct metrics_desc d_idle = {
    .md_name = "ncgrpcd_idle_connections",
    .md_help = "Authenticated device connections waiting for a session.",
    .md_type = METRICS_GAUGE,
};
static const struct metrics_desc d_conns = {
    .md_name = "ncgrpcd_device_connections",
    .md_help = "Device connections open now, by whether they have "
               "authenticated.",
    .md_type = METRICS_GAUGE,
    .md_labels = {{"state", conn_states}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_active = {
    .md_name = "ncgrpcd_sessions_active",
    .md_help = "Operator sessions relaying now.",
    .md_type = METRICS_GAUGE,
    .md_labels = {{"type", types}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_started = {
    .md_name = "ncgrpcd_sessions_started_total",
    .md_help = "Operator sessions the device joined (SessionStarted sent).",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"type", types}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_sessions = {
    .md_name = "ncgrpcd_sessions_total",
    .md_help = "Operator session requests ended, started or not, by why "
               "they ended.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"type", types}, {"reason", ends}},
    .md_nlabels = 2,
};
static const struct metrics_desc d_bytes = {
    .md_name = "ncgrpcd_session_bytes_total",
    .md_help = "Session payload bytes relayed, as the audit log's "
               "session-end counts them.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"type", types}, {"direction", dirs}},
    .md_nlabels = 2,
};
static const struct metrics_desc d_open = {
    .md_name = "ncgrpcd_session_open_seconds",
    .md_help = "From an operator's session request to SessionStarted.",
    .md_type = METRICS_HISTOGRAM,
    .md_labels = {{"type", types}},
    .md_nlabels = 1,
    .md_bounds = open_bounds,
    .md_nbounds = N(open_bounds),
};
static const struct metrics_desc d_authf = {
    .md_name = "ncgrpcd_auth_failures_total",
    .md_help = "Device Initialize calls refused for their id or secret.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"reason", auths}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_throttled = {
    .md_name = "ncgrpcd_auth_throttled_total",
    .md_help = "Device Initialize calls refused unchecked: too many "
               "failures (failures) or too many checks queued (busy).",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"reason", throttles}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_limits = {
    .md_name = "ncgrpcd_preauth_limit_hits_total",
    .md_help = "Times a pre-authentication limit refused or closed "
               "something.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"limit", limits}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_tls = {
    .md_name = "ncgrpcd_tls_handshakes_total",
    .md_help = "TLS handshakes on the device port, by result.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"result", tls_results}},
    .md_nlabels = 1,
};
static const struct metrics_desc d_tls_secs = {
    .md_name = "ncgrpcd_tls_handshake_seconds",
    .md_help = "From accepting a device connection to the end of its "
               "TLS handshake.",
    .md_type = METRICS_HISTOGRAM,
    .md_bounds = tls_bounds,
    .md_nbounds = N(tls_bounds),
};
static const struct metrics_desc d_etcd_secs = {
    .md_name = "ncgrpcd_etcd_request_seconds",
    .md_help = "Round trips to etcd, by operation.",
    .md_type = METRICS_HISTOGRAM,
    .md_labels = {{"op", etcd_ops}},
    .md_nlabels = 1,
    .md_bounds = etcd_bounds,
    .md_nbounds = N(etcd_bounds),
};
static const struct metrics_desc d_etcd_errors = {
    .md_name = "ncgrpcd_etcd_errors_total",
    .md_help = "etcd requests that failed (an error answer, a timeout, a "
               "lost connection), by operation.",
    .md_type = METRICS_COUNTER,
    .md_labels = {{"op", etcd_ops}},
    .md_nlabels = 1,
};

static const struct metrics_desc d_etcd_up = {
    .md_name = "ncgrpcd_cluster_etcd_up",
    .md_help = "1 while this node holds its etcd lease (it claims its "
               "devices), 0 while it has lost etcd.",
    .md_type = METRICS_GAUGE,
};
static const struct metrics_desc d_cl_nodes = {
    .md_name = "ncgrpcd_cluster_nodes",
    .md_help = "Nodes in the cluster's node list, as this node last saw "
               "it.",
    .md_type = METRICS_GAUGE,
};
static const struct metrics_desc d_cl_claimed = {
    .md_name = "ncgrpcd_cluster_devices_claimed",
    .md_help = "Devices whose presence key in etcd names this node.",
    .md_type = METRICS_GAUGE,
};

int
srvmetrics_init(void)
{
	static const struct {
		const struct metrics_desc *d;
		struct metrics_family **f;
	} fams[] = {
	    {&d_devices, &srvm.sm_devices},
	    {&d_idle, &srvm.sm_idle},
	    {&d_conns, &srvm.sm_conns},
	    {&d_active, &srvm.sm_sessions_active},
	    {&d_started, &srvm.sm_sessions_started},
	    {&d_sessions, &srvm.sm_sessions},
	    {&d_bytes, &srvm.sm_bytes},
	    {&d_open, &srvm.sm_open_secs},
	    {&d_authf, &srvm.sm_auth_failures},
	    {&d_throttled, &srvm.sm_auth_throttled},
	    {&d_limits, &srvm.sm_preauth_limits},
	    {&d_tls, &srvm.sm_tls},
	    {&d_tls_secs, &srvm.sm_tls_secs},
	};
	struct metrics *m;
	size_t i;
	int rc;

	if ((rc = metrics_new(&m)) != 0)
		return rc;
	for (i = 0; i < N(fams); i++) {
		if ((rc = metrics_register(m, fams[i].d, fams[i].f)) != 0) {
			metrics_free(m);
			memset(&srvm, 0, sizeof(srvm));
			return rc;
		}
	}
	srvm.sm_reg = m;
	return 0;
}

int
srvmetrics_cluster_init(void)
{
	int rc;

	if (srvm.sm_reg == NULL)
		return -EINVAL;
	if (srvm.sm_etcd_secs == NULL &&
	    (rc = metrics_register(srvm.sm_reg, &d_etcd_secs,
	                           &srvm.sm_etcd_secs)) != 0)
		return rc;
	if (srvm.sm_etcd_errors == NULL &&
	    (rc = metrics_register(srvm.sm_reg, &d_etcd_errors,
	                           &srvm.sm_etcd_errors)) != 0)
		return rc;
	if (srvm.sm_etcd_up == NULL &&
	    (rc = metrics_register(srvm.sm_reg, &d_etcd_up,
	                           &srvm.sm_etcd_up)) != 0)
		return rc;
	if (srvm.sm_cl_nodes == NULL &&
	    (rc = metrics_register(srvm.sm_reg, &d_cl_nodes,
	                           &srvm.sm_cl_nodes)) != 0)
		return rc;
	if (srvm.sm_cl_claimed == NULL &&
	    (rc = metrics_register(srvm.sm_reg, &d_cl_claimed,
	                           &srvm.sm_cl_claimed)) != 0)
		return rc;
	return 0;
}

void
srvmetrics_free(void)
{
	metrics_free(srvm.sm_reg);
	memset(&srvm, 0, sizeof(srvm));
}
