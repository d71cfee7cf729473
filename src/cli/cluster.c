/*
 * The ncgrpc CLI in a cluster (docs/cluster.md): "device add|remove"
 * edit the registry in etcd when the configuration names cluster-etcd,
 * and "cluster status" prints the node list, the devices each node
 * claims, and the health of every etcd member.
 *
 * Each etcd request runs on a private loop until its callback, so the
 * commands read as plain sequential code.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cli.h"
#include "clusterkey.h"
#include "etcd.h"
#include "sconf.h"

/* A command gives etcd this long, retries included. */
#define CE_TIMEOUT_MS 5000

struct ce {
	uv_loop_t ce_loop;
	struct etcd_client *ce_c;
	const struct sconf *ce_sc;
	char ce_eps[512];
};

/* One request: done, status and message, and what the handler made of it. */
struct ce_wait {
	int w_done;
	int w_status;
	char w_msg[256];
	void (*w_fn)(const ProtobufCMessage *resp, void *arg);
	void *w_arg;
};

static void
ce_cb(struct etcd_client *c, int status, const char *message,
      const ProtobufCMessage *resp, void *arg)
{
	struct ce_wait *w = arg;

	(void)c;
	w->w_done = 1;
	w->w_status = status;
	snprintf(w->w_msg, sizeof(w->w_msg), "%s", message);
	if (status == 0 && w->w_fn != NULL)
		w->w_fn(resp, w->w_arg);
}

static void
ce_run_until(struct ce *ce, const int *done)
{
	while (!*done)
		uv_run(&ce->ce_loop, UV_RUN_ONCE);
}

static int
ce_open_eps(struct ce *ce, const struct sconf *sc, const char *list,
            unsigned timeout_ms)
{
	struct etcd_endpoint eps[ETCD_MAX_ENDPOINTS];
	struct etcd_opts eo = {0};
	char err[512];
	size_t n;
	int tls;

	ce->ce_sc = sc;
	snprintf(ce->ce_eps, sizeof(ce->ce_eps), "%s", list);
	if (etcd_endpoints_parse(list, eps, ETCD_MAX_ENDPOINTS, &n, &tls) !=
	    0) {
		cli_err("cluster-etcd: \"%s\" is not a list of etcd endpoints",
		        list);
		return -EINVAL;
	}
	eo.eo_ca_file = sc->sc_cluster_etcd_ca;
	eo.eo_cert_file = sc->sc_cluster_etcd_cert;
	eo.eo_key_file = sc->sc_cluster_etcd_key;
	eo.eo_timeout_ms = timeout_ms;
	eo.eo_attempt_ms = timeout_ms < 2000 ? timeout_ms : 2000;
	eo.eo_connect_ms = timeout_ms < 2000 ? timeout_ms : 2000;
	if (uv_loop_init(&ce->ce_loop) != 0) {
		cli_err("cannot make an event loop");
		return -ENOMEM;
	}
	if (etcd_client_new(&ce->ce_loop, eps, n, &eo, &ce->ce_c, err,
	                    sizeof(err)) != 0) {
		cli_err("etcd: %s", err);
		uv_loop_close(&ce->ce_loop);
		return -EINVAL;
	}
	return 0;
}

static void
on_closed(void *arg)
{
	*(int *)arg = 1;
}

static void
ce_close(struct ce *ce)
{
	int done = 0;

	etcd_client_close(ce->ce_c, on_closed, &done);
	ce_run_until(ce, &done);
	uv_run(&ce->ce_loop, UV_RUN_DEFAULT);
	uv_loop_close(&ce->ce_loop);
}

static void
ce_report(const struct ce *ce, const struct ce_wait *w)
{
	cli_err("etcd at %s: %s", ce->ce_eps, w->w_msg);
}

/* --- device add / remove --- */

static void
on_cas(const ProtobufCMessage *resp, void *arg)
{
	*(int *)arg = ((const Etcdserverpb__TxnResponse *)resp)->succeeded;
}

/*
 * The key of device id (CLUSTERKEY_MAX + 1 bytes at key), and a connection
 * to the cluster's etcd.  0, or -EINVAL after saying what is wrong.
 */
static int
device_open(struct ce *ce, const struct sconf *sc, const char *id, char *key,
            size_t *klen)
{
	if (clusterkey_make(sc->sc_cluster_prefix, CLUSTERKEY_DEVICE, id, key,
	                    CLUSTERKEY_MAX + 1, klen) != 0) {
		cli_err("\"%s\" is not a device id", id);
		return -EINVAL;
	}
	if (ce_open_eps(ce, sc, sc->sc_cluster_etcd, CE_TIMEOUT_MS) != 0)
		return -EINVAL;
	return 0;
}

/*
 * Closes ce after one call (started with rc, then waited for in w).
 * Returns 0 when it succeeded, or -EIO after saying why it did not.
 */
static int
device_done(struct ce *ce, struct ce_wait *w, int rc)
{
	ce_close(ce);
	if (rc == 0 && w->w_status == 0)
		return 0;
	if (rc != 0)
		snprintf(w->w_msg, sizeof(w->w_msg), "%s", strerror(-rc));
	ce_report(ce, w);
	return -EIO;
}

int
cli_cluster_device_add(const struct sconf *sc, const char *id, const char *line)
{
	struct ce ce;
	struct ce_wait w = {0};
	char key[CLUSTERKEY_MAX + 1];
	size_t klen;
	int ok = 0, rc;

	if ((rc = device_open(&ce, sc, id, key, &klen)) != 0)
		return rc;
	w.w_fn = on_cas;
	w.w_arg = &ok;
	/* Create only if absent: two operators cannot both add an id. */
	if ((rc = etcd_cas(ce.ce_c, key, klen, line, strlen(line), 0, 0, ce_cb,
	                   &w)) == 0)
		ce_run_until(&ce, &w.w_done);
	if (device_done(&ce, &w, rc) != 0)
		return -EIO;
	if (!ok) {
		cli_err("etcd: device \"%s\" already exists (\"ncgrpc device "
		        "remove %s\" first)",
		        id, id);
		return -EEXIST;
	}
	return 0;
}

static void
on_del(const ProtobufCMessage *resp, void *arg)
{
	*(int64_t *)arg =
	    ((const Etcdserverpb__DeleteRangeResponse *)resp)->deleted;
}

int
cli_cluster_device_remove(const struct sconf *sc, const char *id)
{
	struct ce ce;
	struct ce_wait w = {0};
	char key[CLUSTERKEY_MAX + 1];
	int64_t deleted = 0;
	size_t klen;
	int rc;

	if ((rc = device_open(&ce, sc, id, key, &klen)) != 0)
		return rc;
	w.w_fn = on_del;
	w.w_arg = &deleted;
	if ((rc = etcd_delete(ce.ce_c, key, klen, 0, ce_cb, &w)) == 0)
		ce_run_until(&ce, &w.w_done);
	if (device_done(&ce, &w, rc) != 0)
		return -EIO;
	if (deleted == 0) {
		cli_err("etcd: no device \"%s\"", id);
		return -ENOENT;
	}
	return 0;
}

/* --- cluster status --- */

struct node {
	char n_name[CLUSTERKEY_NAME_MAX + 1];
	char n_addr[300];
	int n_alive;
	size_t n_devices;
};

struct status {
	const char *st_prefix;
	struct node *st_nodes;
	size_t st_nnodes;
	size_t st_registered, st_present;
	int st_err;
};

static struct node *
node_find(struct status *st, const char *name, int add)
{
	struct node *n;
	size_t i;

	for (i = 0; i < st->st_nnodes; i++)
		if (strcmp(st->st_nodes[i].n_name, name) == 0)
			return &st->st_nodes[i];
	if (!add)
		return NULL;
	n = reallocarray(st->st_nodes, st->st_nnodes + 1, sizeof(*n));
	if (n == NULL) {
		st->st_err = 1;
		return NULL;
	}
	st->st_nodes = n;
	n += st->st_nnodes++;
	memset(n, 0, sizeof(*n));
	snprintf(n->n_name, sizeof(n->n_name), "%s", name);
	return n;
}

static void
on_range(const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__RangeResponse *rr =
	    (const Etcdserverpb__RangeResponse *)resp;
	char name[CLUSTERKEY_NAME_MAX + 1], val[300];
	enum clusterkey_kind kind;
	struct status *st = arg;
	struct node *n;
	size_t i, vlen;

	for (i = 0; i < rr->n_kvs; i++) {
		if (clusterkey_parse(st->st_prefix, rr->kvs[i]->key.data,
		                     rr->kvs[i]->key.len, &kind, name) != 0)
			continue;
		vlen = rr->kvs[i]->value.len;
		if (vlen >= sizeof(val))
			vlen = sizeof(val) - 1;
		memcpy(val, rr->kvs[i]->value.data, vlen);
		val[vlen] = '\0';
		if (kind == CLUSTERKEY_NODE &&
		    (n = node_find(st, name, 1)) != NULL) {
			n->n_alive = 1;
			snprintf(n->n_addr, sizeof(n->n_addr), "%s", val);
		} else if (kind == CLUSTERKEY_PRESENCE) {
			st->st_present++;
			if (clusterkey_name_valid(val) &&
			    (n = node_find(st, val, 1)) != NULL)
				n->n_devices++;
		}
	}
}

static void
on_count(const ProtobufCMessage *resp, void *arg)
{
	*(size_t *)arg =
	    (size_t)((const Etcdserverpb__RangeResponse *)resp)->count;
}

/* A Range of one directory of the layout, or only its count. */
static int
get_dir(struct ce *ce, const struct sconf *sc, enum clusterkey_kind kind,
        int count_only, struct ce_wait *w)
{
	Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
	char key[CLUSTERKEY_MAX + 1];
	uint8_t end[CLUSTERKEY_MAX + 1];
	size_t klen;

	if (clusterkey_make(sc->sc_cluster_prefix, kind, "", key, sizeof(key),
	                    &klen) != 0)
		return -EINVAL;
	rq.key.data = (uint8_t *)key;
	rq.key.len = klen;
	rq.range_end.data = end;
	rq.range_end.len = etcd_prefix_end((const uint8_t *)key, klen, end);
	rq.count_only = count_only;
	return etcd_call(ce->ce_c, ETCD_RANGE, &rq.base, ce_cb, w);
}

static int
node_cmp(const void *a, const void *b)
{
	return strcmp(((const struct node *)a)->n_name,
	              ((const struct node *)b)->n_name);
}

struct member {
	uint64_t m_id;
	char m_name[64];
	char m_url[256];
	struct ce m_ce;
	struct ce_wait m_w;
	uint64_t m_leader, m_rev, m_term;
	int64_t m_db;
	int m_open;
};

struct members {
	struct member *ms_v;
	size_t ms_n;
};

static void
on_member_list(const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__MemberListResponse *r =
	    (const Etcdserverpb__MemberListResponse *)resp;
	struct members *ms = arg;
	size_t i;

	if ((ms->ms_v = calloc(r->n_members, sizeof(*ms->ms_v))) == NULL)
		return;
	ms->ms_n = r->n_members;
	for (i = 0; i < r->n_members; i++) {
		ms->ms_v[i].m_id = r->members[i]->id;
		snprintf(ms->ms_v[i].m_name, sizeof(ms->ms_v[i].m_name), "%s",
		         *r->members[i]->name != '\0' ? r->members[i]->name
		                                      : "-");
		snprintf(ms->ms_v[i].m_url, sizeof(ms->ms_v[i].m_url), "%s",
		         r->members[i]->n_clienturls > 0
		             ? r->members[i]->clienturls[0]
		             : "");
	}
}

static void
on_status(const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__StatusResponse *r =
	    (const Etcdserverpb__StatusResponse *)resp;
	struct member *m = arg;

	m->m_leader = r->leader;
	m->m_db = r->dbsize;
	m->m_term = r->raftterm;
	m->m_rev = r->header != NULL ? (uint64_t)r->header->revision : 0;
}

/* Asks every member for its own status, all at once. */
static void
print_members(const struct sconf *sc, struct members *ms)
{
	Etcdserverpb__StatusRequest sr = ETCDSERVERPB__STATUS_REQUEST__INIT;
	struct member *m;
	size_t i;
	int done;

	for (i = 0; i < ms->ms_n; i++) {
		m = &ms->ms_v[i];
		m->m_w.w_fn = on_status;
		m->m_w.w_arg = m;
		if (m->m_url[0] == '\0' ||
		    ce_open_eps(&m->m_ce, sc, m->m_url, 2000) != 0) {
			m->m_w.w_done = 1;
			m->m_w.w_status = -1;
			snprintf(m->m_w.w_msg, sizeof(m->m_w.w_msg),
			         "no client URL");
			continue;
		}
		m->m_open = 1;
		if (etcd_call(m->m_ce.ce_c, ETCD_STATUS, &sr.base, ce_cb,
		              &m->m_w) != 0) {
			m->m_w.w_done = 1;
			m->m_w.w_status = -1;
			snprintf(m->m_w.w_msg, sizeof(m->m_w.w_msg),
			         "cannot ask");
		}
	}
	/* Each member's client runs on its own loop: turn them in turn. */
	do {
		done = 1;
		for (i = 0; i < ms->ms_n; i++) {
			m = &ms->ms_v[i];
			if (m->m_w.w_done)
				continue;
			done = 0;
			uv_run(&m->m_ce.ce_loop, UV_RUN_NOWAIT);
		}
		if (!done)
			uv_sleep(5);
	} while (!done);
	printf("\n%-10s %-16s %-28s %-8s %s\n", "MEMBER", "ID", "ENDPOINT",
	       "HEALTH", "DETAIL");
	for (i = 0; i < ms->ms_n; i++) {
		m = &ms->ms_v[i];
		if (m->m_w.w_status == 0)
			printf("%-10s %016" PRIx64 " %-28s %-8s %s, "
			       "revision %" PRIu64 ", raft term %" PRIu64
			       ", db %" PRId64 " bytes\n",
			       m->m_name, m->m_id, m->m_url, "healthy",
			       m->m_leader == m->m_id ? "leader" : "follower",
			       m->m_rev, m->m_term, m->m_db);
		else
			printf("%-10s %016" PRIx64 " %-28s %-8s %s\n",
			       m->m_name, m->m_id, m->m_url, "DOWN",
			       m->m_w.w_msg);
		if (m->m_open)
			ce_close(&m->m_ce);
	}
}

static int
cluster_status(const struct sconf *sc)
{
	Etcdserverpb__MemberListRequest ml =
	    ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
	struct status st = {.st_prefix = sc->sc_cluster_prefix};
	struct members ms = {0};
	struct ce_wait w = {0}, wm = {0}, wp, wc = {0};
	struct ce ce;
	size_t i, healthy = 0;
	int rc;

	if (ce_open_eps(&ce, sc, sc->sc_cluster_etcd, CE_TIMEOUT_MS) != 0)
		return CLI_EXIT_FAIL;
	w.w_fn = on_range;
	w.w_arg = &st;
	wm.w_fn = on_member_list;
	wm.w_arg = &ms;
	wp = w;
	wc.w_fn = on_count;
	wc.w_arg = &st.st_registered;
	/*
	 * Nodes and presence whole, the registry only counted: its lines
	 * would not fit one response at 100,000 devices.
	 */
	if ((rc = get_dir(&ce, sc, CLUSTERKEY_NODE, 0, &w)) == 0 &&
	    (rc = get_dir(&ce, sc, CLUSTERKEY_PRESENCE, 0, &wp)) == 0 &&
	    (rc = get_dir(&ce, sc, CLUSTERKEY_DEVICE, 1, &wc)) == 0 &&
	    (rc = etcd_call(ce.ce_c, ETCD_MEMBER_LIST, &ml.base, ce_cb, &wm)) ==
	        0) {
		ce_run_until(&ce, &w.w_done);
		ce_run_until(&ce, &wp.w_done);
		ce_run_until(&ce, &wc.w_done);
		ce_run_until(&ce, &wm.w_done);
	}
	if (wp.w_status != 0 && w.w_status == 0)
		w = wp;
	if (wc.w_status != 0 && w.w_status == 0)
		w = wc;
	ce_close(&ce);
	if (rc != 0 || w.w_status != 0 || wm.w_status != 0) {
		if (rc != 0)
			snprintf(w.w_msg, sizeof(w.w_msg), "%s", strerror(-rc));
		cli_err("etcd unreachable at %s: %s", sc->sc_cluster_etcd,
		        w.w_status != 0 || rc != 0 ? w.w_msg : wm.w_msg);
		free(st.st_nodes);
		free(ms.ms_v);
		return CLI_EXIT_UNREACHABLE;
	}
	if (st.st_err || (ms.ms_v == NULL && ms.ms_n > 0)) {
		cli_err("out of memory");
		free(st.st_nodes);
		free(ms.ms_v);
		return CLI_EXIT_FAIL;
	}
	qsort(st.st_nodes, st.st_nnodes, sizeof(*st.st_nodes), node_cmp);
	printf("cluster %s (prefix %s): %zu nodes, %zu devices registered, "
	       "%zu connected\n\n",
	       sc->sc_cluster_etcd, sc->sc_cluster_prefix, st.st_nnodes,
	       st.st_registered, st.st_present);
	printf("%-20s %-28s %-6s %s\n", "NODE", "ADDRESS", "STATE", "DEVICES");
	for (i = 0; i < st.st_nnodes; i++)
		printf("%-20s %-28s %-6s %zu\n", st.st_nodes[i].n_name,
		       st.st_nodes[i].n_addr[0] != '\0' ? st.st_nodes[i].n_addr
		                                        : "-",
		       st.st_nodes[i].n_alive ? "alive" : "gone",
		       st.st_nodes[i].n_devices);
	print_members(sc, &ms);
	for (i = 0; i < ms.ms_n; i++)
		healthy += ms.ms_v[i].m_w.w_status == 0;
	printf("\netcd: %zu of %zu members healthy\n", healthy, ms.ms_n);
	free(st.st_nodes);
	free(ms.ms_v);
	return CLI_EXIT_OK;
}

int
cmd_cluster_status(const struct cli *cl, int argc, char **argv)
{
	struct sconf *sc;
	int rc;

	if (argc > 1)
		return cli_usage_error("cluster status: unexpected argument "
		                       "\"%s\"",
		                       argv[1]);
	if ((sc = cli_load_config(cl)) == NULL)
		return CLI_EXIT_FAIL;
	if (sc->sc_cluster_etcd == NULL) {
		cli_err("%s: no cluster-etcd: this ncgrpcd is a single node",
		        cl->ci_config);
		sconf_free(sc);
		return CLI_EXIT_FAIL;
	}
	rc = cluster_status(sc);
	sconf_free(sc);
	return rc;
}
