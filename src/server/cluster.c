/*
 * The cluster core of ncgrpcd (cluster.h, docs/internals/cluster.md).
 *
 * Three caches mirror the prefix in etcd: devices (id -> registry line),
 * presence (id -> node) and nodes (name -> address).  They are filled by a
 * paged read of the whole prefix at one revision, then kept up to date by
 * one prefix watch from the revision after it.  When etcd compacted past
 * the watch, the watch is dropped and the read-then-watch starts over, so
 * that no event is lost or applied twice.  A fourth set, local, holds the
 * devices connected here, from broker_watch().
 *
 * The lease goes through LEASE_NONE -> LEASE_GRANTING -> LEASE_REGISTERING
 * (the node key is being written) -> LEASE_UP, and back to LEASE_NONE when
 * it is lost; cl_set_lease_state() logs each change.
 */
#include <errno.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "broker.h"
#include "cluster.h"
#include "clusterkey.h"
#include "etcd.h"
#include "grpc_meta.h"
#include "log.h"
#include "registry.h"
#include "srvmetrics.h"

/* Keys read per Range while loading the prefix. */
#define CL_PAGE 1000
/* Changes to the registry within this many ms make one rebuild. */
#define CL_REBUILD_MS 50
/* Retry of a lease, a load or a claim after a failure. */
#define CL_RETRY_MS 1000
/* Presence claims in flight at once during a reclaim. */
#define CL_RECLAIM_INFLIGHT 128

enum lease_state {
	LEASE_NONE,
	LEASE_GRANTING,
	LEASE_REGISTERING,
	LEASE_UP,
	LEASE_STOPPING,
};

static const char *const lease_state_names[] = {
    "none", "granting", "registering", "up", "stopping",
};

/* One cached key: name -> value. */
struct ent {
	const char *e_key; /* points into the same allocation */
	char *e_val;
};

struct map {
	void *m_root;
	size_t m_n;
};

enum { MAP_NODES, MAP_DEVICES, MAP_PRESENCE, MAP_COUNT };

struct cluster {
	uv_loop_t *cl_loop;
	struct broker *cl_broker;
	void *cl_bwatch;
	struct etcd_client *cl_etcd;
	char *cl_node;
	char *cl_addr;
	char *cl_prefix;
	size_t cl_plen;
	unsigned cl_ttl;
	struct registry_throttle *cl_throttle;
	void (*cl_on_ready)(void *arg);
	void *cl_arg;
	int cl_ready; /* the registry was read once */

	enum lease_state cl_lstate;
	struct etcd_lease *cl_lease;
	int64_t cl_lease_id;
	uint64_t cl_grant_t0;
	int cl_was_up; /* for the log: lost vs. not reached yet */

	/* The caches, and the load that refills them. */
	struct map cl_maps[MAP_COUNT];
	struct map cl_local;
	size_t cl_claimed;
	struct map cl_ld[MAP_COUNT];
	int cl_loading;
	int64_t cl_ld_rev;
	uint8_t cl_ld_next[CLUSTERKEY_MAX + 2];
	size_t cl_ld_nlen;
	struct etcd_watch *cl_watch;

	/* A reclaim in progress: ids to claim, the next, in flight. */
	char **cl_rc_ids;
	size_t cl_rc_n, cl_rc_next;
	unsigned cl_rc_inflight;
	int cl_rc_rebind;

	uv_timer_t cl_t_lease, cl_t_load, cl_t_rebuild, cl_t_reclaim;
	int cl_nclosing;
	int cl_stopping;
	void (*cl_done)(void *arg);
	void *cl_done_arg;
};

/* One etcd request, for its latency and its outcome. */
struct clreq {
	struct cluster *r_cl;
	enum srvm_etcd_op r_op;
	uint64_t r_t0;
	char r_id[CLUSTERKEY_NAME_MAX + 1];
};

static void cl_register(struct cluster *cl);
static void on_lease_timer(uv_timer_t *t);
static void on_load_timer(uv_timer_t *t);
static void on_reclaim_timer(uv_timer_t *t);
static void cl_load_start(struct cluster *cl, int64_t rev);
static void cl_reclaim(struct cluster *cl, int rebind);
static void cl_reclaim_pump(struct cluster *cl);

/* --- caches --- */

static int
ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ent *)a)->e_key,
	              ((const struct ent *)b)->e_key);
}

static void
ent_free(void *p)
{
	struct ent *e = p;

	free(e->e_val);
	free(e);
}

static struct ent *
map_get(const struct map *m, const char *k)
{
	struct ent q = {.e_key = k};
	void *const *p = tfind(&q, &m->m_root, ent_cmp);

	return p != NULL ? *(struct ent *const *)p : NULL;
}

/* Sets k to v; *old receives the previous value (the caller frees it). */
static int
map_set(struct map *m, const char *k, const char *v, size_t vlen, char **old)
{
	struct ent *e, **p;
	size_t klen = strlen(k);
	char *val;

	*old = NULL;
	if ((val = malloc(vlen + 1)) == NULL)
		return -ENOMEM;
	memcpy(val, v, vlen);
	val[vlen] = '\0';
	if ((e = map_get(m, k)) != NULL) {
		*old = e->e_val;
		e->e_val = val;
		return 0;
	}
	if ((e = malloc(sizeof(*e) + klen + 1)) == NULL) {
		free(val);
		return -ENOMEM;
	}
	memcpy((char *)(e + 1), k, klen + 1);
	e->e_key = (char *)(e + 1);
	e->e_val = val;
	if ((p = tsearch(e, &m->m_root, ent_cmp)) == NULL) {
		ent_free(e);
		return -ENOMEM;
	}
	m->m_n++;
	return 0;
}

/* Removes k; *old receives its value (the caller frees it), NULL if none. */
static void
map_del(struct map *m, const char *k, char **old)
{
	struct ent *e;

	*old = NULL;
	if ((e = map_get(m, k)) == NULL)
		return;
	tdelete(e, &m->m_root, ent_cmp);
	m->m_n--;
	*old = e->e_val;
	free(e);
}

static void
map_clear(struct map *m)
{
	tdestroy(m->m_root, ent_free);
	m->m_root = NULL;
	m->m_n = 0;
}

/* --- requests and metrics --- */

static struct clreq *
req_new(struct cluster *cl, enum srvm_etcd_op op, const char *id)
{
	struct clreq *r;

	if ((r = malloc(sizeof(*r))) == NULL)
		return NULL;
	r->r_cl = cl;
	r->r_op = op;
	r->r_t0 = uv_hrtime();
	snprintf(r->r_id, sizeof(r->r_id), "%s", id != NULL ? id : "");
	return r;
}

/* Records the outcome; 1 if it was a failure other than our own close. */
static int
req_end(struct clreq *r, int status)
{
	if (status == GRPC_STATUS_CANCELLED && r->r_cl->cl_stopping)
		return 1;
	metrics_observe(srvm.sm_etcd_secs, r->r_op, 0,
	                srvmetrics_secs(r->r_t0, uv_hrtime()));
	if (status != 0)
		metrics_count(srvm.sm_etcd_errors, r->r_op, 0, 1);
	return status != 0;
}

static int
cl_key(const struct cluster *cl, enum clusterkey_kind kind, const char *name,
       char *buf, size_t *klen)
{
	return clusterkey_make(cl->cl_prefix, kind, name, buf,
	                       CLUSTERKEY_MAX + 1, klen);
}

/* --- the registry --- */

/*
 * A registry line fit for device id: "ID" and a blank, one line, that the
 * registry's parser takes.  Checked one key at a time, so that one bad
 * value costs only its own device: the registry is parsed whole
 * (cl_rebuild()), and a line it refuses would keep every change out.
 */
static int
line_ok(const char *id, const char *v, size_t vlen)
{
	struct registry *reg;
	size_t n = strlen(id);
	char err[256];

	if (!(vlen > n && vlen <= REGISTRY_LINE_MAX && memcmp(v, id, n) == 0 &&
	      (v[n] == ' ' || v[n] == '\t') && memchr(v, '\n', vlen) == NULL &&
	      memchr(v, '\0', vlen) == NULL))
		return 0;
	if (registry_parse("etcd", v, vlen, &reg, err, sizeof(err)) != 0)
		return 0;
	registry_free(reg);
	return 1;
}

struct text {
	char *t_buf;
	size_t t_len, t_cap;
	int t_err;
};

static void
text_visit(const void *node, VISIT which, void *arg)
{
	const struct ent *e = *(struct ent *const *)node;
	struct text *t = arg;
	size_t n;
	char *p;

	if ((which != postorder && which != leaf) || t->t_err)
		return;
	n = strlen(e->e_val);
	if (t->t_len + n + 1 > t->t_cap) {
		size_t cap = (t->t_cap + n + 1) * 2;

		if ((p = realloc(t->t_buf, cap)) == NULL) {
			t->t_err = 1;
			return;
		}
		t->t_buf = p;
		t->t_cap = cap;
	}
	memcpy(t->t_buf + t->t_len, e->e_val, n);
	t->t_len += n;
	t->t_buf[t->t_len++] = '\n';
}

/* Builds a registry from the devices cache and hands it to the broker. */
static void
cl_rebuild(struct cluster *cl)
{
	struct text t = {0};
	struct registry *reg;
	char err[512];

	twalk_r(cl->cl_maps[MAP_DEVICES].m_root, text_visit, &t);
	if (t.t_err) {
		log_warnx("cluster: out of memory building the registry; "
		          "keeping the previous one");
		free(t.t_buf);
		return;
	}
	if (registry_parse("etcd", t.t_buf != NULL ? t.t_buf : "", t.t_len,
	                   &reg, err, sizeof(err)) != 0) {
		log_warnx("cluster: the registry in etcd does not parse, "
		          "keeping the previous one: %s",
		          err);
		free(t.t_buf);
		return;
	}
	free(t.t_buf);
	registry_set_throttle(reg, cl->cl_throttle);
	log_info("cluster: registry from etcd: %zu devices",
	         registry_count(reg));
	broker_set_registry(cl->cl_broker, reg);
}

static void
on_rebuild_timer(uv_timer_t *t)
{
	cl_rebuild((struct cluster *)t->data);
}

static void
cl_registry_changed(struct cluster *cl)
{
	if (!cl->cl_ready || uv_is_active((uv_handle_t *)&cl->cl_t_rebuild))
		return;
	uv_timer_start(&cl->cl_t_rebuild, on_rebuild_timer, CL_REBUILD_MS, 0);
}

/* --- presence claims --- */

/* A reclaim after CL_RETRY_MS, unless one is due already. */
static void
cl_reclaim_later(struct cluster *cl)
{
	if (!cl->cl_stopping && !uv_is_active((uv_handle_t *)&cl->cl_t_reclaim))
		uv_timer_start(&cl->cl_t_reclaim, on_reclaim_timer, CL_RETRY_MS,
		               0);
}

static void
on_claim_done(struct etcd_client *c, int status, const char *message,
              const ProtobufCMessage *resp, void *arg)
{
	struct clreq *r = arg;
	struct cluster *cl = r->r_cl;

	(void)c;
	(void)resp;
	if (req_end(r, status) && !cl->cl_stopping) {
		log_debug("cluster: claiming \"%s\" failed: %s", r->r_id,
		          message);
		cl_reclaim_later(cl);
	}
	free(r);
}

/*
 * Claims id: a put bound to the lease (newest connection wins), or with
 * create set only if no node claims it.  Failures schedule a reclaim.
 */
static int
cl_claim(struct cluster *cl, const char *id, int create, etcd_cb cb)
{
	char key[CLUSTERKEY_MAX + 1];
	struct clreq *r;
	size_t klen;
	int rc;

	if (cl_key(cl, CLUSTERKEY_PRESENCE, id, key, &klen) != 0)
		return -EINVAL;
	if ((r = req_new(cl, create ? SRVM_ETCD_TXN : SRVM_ETCD_PUT, id)) ==
	    NULL)
		return -ENOMEM;
	if (create)
		rc = etcd_cas(cl->cl_etcd, key, klen, cl->cl_node,
		              strlen(cl->cl_node), cl->cl_lease_id, 0, cb, r);
	else
		rc = etcd_put(cl->cl_etcd, key, klen, cl->cl_node,
		              strlen(cl->cl_node), cl->cl_lease_id, cb, r);
	if (rc != 0) {
		metrics_count(srvm.sm_etcd_errors, r->r_op, 0, 1);
		free(r);
	}
	return rc;
}

static void
on_unclaim_done(struct etcd_client *c, int status, const char *message,
                const ProtobufCMessage *resp, void *arg)
{
	struct clreq *r = arg;

	(void)c;
	(void)resp;
	if (req_end(r, status) && !r->r_cl->cl_stopping)
		log_debug("cluster: releasing \"%s\" failed: %s", r->r_id,
		          message);
	free(r);
}

/* Deletes id's presence key if it still names this node: one Txn. */
static void
cl_unclaim(struct cluster *cl, const char *id)
{
	Etcdserverpb__TxnRequest tx = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
	Etcdserverpb__DeleteRangeRequest del =
	    ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__Compare *cmps[1] = {&cmp};
	Etcdserverpb__RequestOp *ops[1] = {&op};
	char key[CLUSTERKEY_MAX + 1];
	struct clreq *r;
	size_t klen;

	if (cl_key(cl, CLUSTERKEY_PRESENCE, id, key, &klen) != 0 ||
	    (r = req_new(cl, SRVM_ETCD_TXN, id)) == NULL)
		return;
	cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
	cmp.key.data = (uint8_t *)key;
	cmp.key.len = klen;
	cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
	cmp.value.data = (uint8_t *)cl->cl_node;
	cmp.value.len = strlen(cl->cl_node);
	del.key = cmp.key;
	op.request_case =
	    ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	op.request_delete_range = &del;
	tx.n_compare = 1;
	tx.compare = cmps;
	tx.n_success = 1;
	tx.success = ops;
	if (etcd_call(cl->cl_etcd, ETCD_TXN, &tx.base, on_unclaim_done, r) !=
	    0) {
		metrics_count(srvm.sm_etcd_errors, SRVM_ETCD_TXN, 0, 1);
		free(r);
	}
}

static void
on_broker_event(enum broker_event ev, const struct broker_device_info *dev,
                const char *reason, void *arg)
{
	struct cluster *cl = arg;
	char *old;

	(void)reason;
	if (ev == BROKER_EV_CONNECTED) {
		if (map_set(&cl->cl_local, dev->bi_id, "", 0, &old) != 0)
			log_warnx("cluster: out of memory tracking \"%s\"",
			          dev->bi_id);
		free(old);
		if (cl->cl_lstate == LEASE_UP &&
		    cl_claim(cl, dev->bi_id, 0, on_claim_done) != 0)
			cl_reclaim_later(cl);
	} else if (ev == BROKER_EV_DISCONNECTED) {
		map_del(&cl->cl_local, dev->bi_id, &old);
		free(old);
		if (cl->cl_lstate == LEASE_UP)
			cl_unclaim(cl, dev->bi_id);
	}
}

/* --- reclaim: every local device, after a new lease or a failure --- */

static void
reclaim_free(struct cluster *cl)
{
	size_t i;

	for (i = cl->cl_rc_next; i < cl->cl_rc_n; i++)
		free(cl->cl_rc_ids[i]);
	free(cl->cl_rc_ids);
	cl->cl_rc_ids = NULL;
	cl->cl_rc_n = cl->cl_rc_next = 0;
}

static void
on_reclaim_done(struct etcd_client *c, int status, const char *message,
                const ProtobufCMessage *resp, void *arg)
{
	struct clreq *r = arg;
	struct cluster *cl = r->r_cl;

	cl->cl_rc_inflight--;
	on_claim_done(c, status, message, resp, arg);
	if (!cl->cl_stopping)
		cl_reclaim_pump(cl);
}

struct collect {
	struct cluster *co_cl;
	char **co_ids;
	size_t co_n;
	int co_err;
};

static void
collect_visit(const void *node, VISIT which, void *arg)
{
	const struct ent *e = *(struct ent *const *)node;
	struct collect *co = arg;
	struct ent *p;

	if ((which != postorder && which != leaf) || co->co_err)
		return;
	p = map_get(&co->co_cl->cl_maps[MAP_PRESENCE], e->e_key);
	/* Another node's claim is the newer connection: leave it. */
	if (p != NULL && strcmp(p->e_val, co->co_cl->cl_node) != 0)
		return;
	if (p != NULL && !co->co_cl->cl_rc_rebind)
		return;
	if ((co->co_ids[co->co_n] = strdup(e->e_key)) == NULL)
		co->co_err = 1;
	else
		co->co_n++;
}

static void
cl_reclaim_pump(struct cluster *cl)
{
	struct ent *p;
	char *id;
	int create;

	while (cl->cl_lstate == LEASE_UP && cl->cl_rc_next < cl->cl_rc_n &&
	       cl->cl_rc_inflight < CL_RECLAIM_INFLIGHT) {
		id = cl->cl_rc_ids[cl->cl_rc_next++];
		/* Still here, and claimed by no one else meanwhile? */
		p = map_get(&cl->cl_maps[MAP_PRESENCE], id);
		create = p == NULL;
		if (map_get(&cl->cl_local, id) != NULL &&
		    (create || strcmp(p->e_val, cl->cl_node) == 0)) {
			if (cl_claim(cl, id, create, on_reclaim_done) == 0)
				cl->cl_rc_inflight++;
			else
				cl_reclaim_later(cl);
		}
		free(id);
	}
	if (cl->cl_rc_next == cl->cl_rc_n && cl->cl_rc_ids != NULL)
		reclaim_free(cl);
}

/*
 * Claims the local devices that no node claims; with rebind (a new lease)
 * also those claimed by this node, so that their keys move to the new
 * lease.
 */
static void
cl_reclaim(struct cluster *cl, int rebind)
{
	struct collect co = {.co_cl = cl};

	reclaim_free(cl);
	if (cl->cl_lstate != LEASE_UP || cl->cl_local.m_n == 0)
		return;
	if ((co.co_ids = calloc(cl->cl_local.m_n, sizeof(char *))) == NULL) {
		log_warnx("cluster: out of memory claiming devices");
		return;
	}
	cl->cl_rc_rebind = rebind;
	twalk_r(cl->cl_local.m_root, collect_visit, &co);
	cl->cl_rc_ids = co.co_ids;
	cl->cl_rc_n = co.co_n;
	cl->cl_rc_next = 0;
	if (co.co_n > 0)
		log_info("cluster: claiming %zu devices connected here",
		         co.co_n);
	cl_reclaim_pump(cl);
}

static void
on_reclaim_timer(uv_timer_t *t)
{
	cl_reclaim((struct cluster *)t->data, 0);
}

/* --- the caches from etcd --- */

static void
cl_update_gauges(struct cluster *cl)
{
	metrics_gauge_set(srvm.sm_cl_nodes, 0, 0,
	                  (int64_t)cl->cl_maps[MAP_NODES].m_n);
	/* Nothing is claimed without a lease, whatever the cache says. */
	metrics_gauge_set(srvm.sm_cl_claimed, 0, 0,
	                  cl->cl_lstate == LEASE_UP ? (int64_t)cl->cl_claimed
	                                            : 0);
}

/*
 * Applies one key (val NULL: deleted) to maps.  live is set for the
 * caches in use (not a load in progress): then the registry, the claimed
 * count and the reclaims follow.
 */
static void
cl_apply(struct cluster *cl, struct map *maps, int live, const uint8_t *key,
         size_t klen, const uint8_t *val, size_t vlen)
{
	enum clusterkey_kind kind;
	char name[CLUSTERKEY_NAME_MAX + 1], *old = NULL;
	int mine_now = 0;

	if (clusterkey_parse(cl->cl_prefix, key, klen, &kind, name) != 0)
		return;
	if (kind == CLUSTERKEY_DEVICE && val != NULL &&
	    !line_ok(name, (const char *)val, vlen)) {
		log_warnx("cluster: ignoring the registry line of \"%s\" in "
		          "etcd: not a valid \"%s $scrypt$...\" line",
		          name, name);
		val = NULL;
	}
	if (val != NULL) {
		if (map_set(&maps[kind], name, (const char *)val, vlen, &old) !=
		    0) {
			log_warnx("cluster: out of memory caching \"%s\"",
			          name);
			return;
		}
		mine_now = kind == CLUSTERKEY_PRESENCE &&
		           vlen == strlen(cl->cl_node) &&
		           memcmp(val, cl->cl_node, vlen) == 0;
	} else
		map_del(&maps[kind], name, &old);
	if (live && kind == CLUSTERKEY_PRESENCE) {
		if (old != NULL && strcmp(old, cl->cl_node) == 0)
			cl->cl_claimed--;
		if (mine_now)
			cl->cl_claimed++;
		/*
		 * Our device lost its claim (the other node's connection
		 * ended, or an old lease expired): claim it back.
		 */
		if (val == NULL && cl->cl_lstate == LEASE_UP &&
		    map_get(&cl->cl_local, name) != NULL &&
		    cl_claim(cl, name, 1, on_claim_done) != 0)
			cl_reclaim_later(cl);
	}
	if (live && kind == CLUSTERKEY_DEVICE)
		cl_registry_changed(cl);
	free(old);
}

static void
on_watch_events(struct etcd_watch *w, Mvccpb__Event *const *evs, size_t n,
                int64_t revision, void *arg)
{
	struct cluster *cl = arg;
	const Mvccpb__KeyValue *kv;
	size_t i;

	(void)w;
	(void)revision;
	for (i = 0; i < n; i++) {
		if ((kv = evs[i]->kv) == NULL)
			continue;
		cl_apply(cl, cl->cl_maps, 1, kv->key.data, kv->key.len,
		         evs[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE
		             ? NULL
		             : kv->value.data,
		         kv->value.len);
	}
	cl_update_gauges(cl);
}

static void
on_watch_resync(struct etcd_watch *w, int64_t revision, void *arg)
{
	struct cluster *cl = arg;

	log_warnx("cluster: etcd compacted past our watch (revision %lld): "
	          "reading the state again",
	          (long long)revision);
	etcd_watch_cancel(w);
	cl->cl_watch = NULL;
	cl_load_start(cl, 0);
}

static void
on_watch_end(struct etcd_watch *w, int status, const char *message, void *arg)
{
	struct cluster *cl = arg;

	if (w != cl->cl_watch || cl->cl_stopping)
		return;
	cl->cl_watch = NULL;
	metrics_count(srvm.sm_etcd_errors, SRVM_ETCD_WATCH, 0, 1);
	log_warnx("cluster: etcd ended our watch (%d %s): reading the state "
	          "again",
	          status, message);
	uv_timer_start(&cl->cl_t_load, on_load_timer, 0, 0);
}

static const struct etcd_watch_ops watch_ops = {
    .on_events = on_watch_events,
    .on_resync = on_watch_resync,
    .on_end = on_watch_end,
};

static int cl_load_page(struct cluster *cl);

static void
mine_visit(const void *node, VISIT which, void *arg)
{
	const struct ent *e = *(struct ent *const *)node;
	struct collect *co = arg;

	if ((which == postorder || which == leaf) &&
	    strcmp(e->e_val, co->co_cl->cl_node) == 0)
		co->co_n++;
}

static size_t
count_mine(struct cluster *cl)
{
	struct collect co = {.co_cl = cl};

	twalk_r(cl->cl_maps[MAP_PRESENCE].m_root, mine_visit, &co);
	return co.co_n;
}

/* The load is complete: its maps replace the caches. */
static void
cl_load_done(struct cluster *cl)
{
	struct etcd_watch *w;
	char key[CLUSTERKEY_MAX + 1];
	size_t i;
	int rc;

	for (i = 0; i < MAP_COUNT; i++) {
		map_clear(&cl->cl_maps[i]);
		cl->cl_maps[i] = cl->cl_ld[i];
		memset(&cl->cl_ld[i], 0, sizeof(cl->cl_ld[i]));
	}
	cl->cl_loading = 0;
	cl->cl_claimed = count_mine(cl);
	log_info("cluster: read etcd at revision %lld: %zu nodes, %zu "
	         "devices, %zu present",
	         (long long)cl->cl_ld_rev, cl->cl_maps[MAP_NODES].m_n,
	         cl->cl_maps[MAP_DEVICES].m_n, cl->cl_maps[MAP_PRESENCE].m_n);
	snprintf(key, sizeof(key), "%s", cl->cl_prefix);
	rc = etcd_watch_start(cl->cl_etcd, key, cl->cl_plen, 1,
	                      cl->cl_ld_rev + 1, &watch_ops, cl, &w);
	if (rc != 0) {
		log_warnx("cluster: cannot watch etcd: %s", strerror(-rc));
		uv_timer_start(&cl->cl_t_load, on_load_timer, CL_RETRY_MS, 0);
	} else
		cl->cl_watch = w;
	cl_rebuild(cl);
	if (!cl->cl_ready) {
		cl->cl_ready = 1;
		if (cl->cl_on_ready != NULL)
			cl->cl_on_ready(cl->cl_arg);
	}
	cl_update_gauges(cl);
	/* Presence as read: which local devices lost their claim? */
	if (cl->cl_lstate == LEASE_UP)
		cl_reclaim(cl, 0);
}

static void
on_load_page(struct etcd_client *c, int status, const char *message,
             const ProtobufCMessage *resp, void *arg)
{
	struct clreq *r = arg;
	struct cluster *cl = r->r_cl;
	const Etcdserverpb__RangeResponse *rr =
	    (const Etcdserverpb__RangeResponse *)resp;
	const Mvccpb__KeyValue *kv;
	size_t i;

	(void)c;
	if (req_end(r, status)) {
		free(r);
		if (cl->cl_stopping)
			return;
		log_warnx("cluster: reading etcd failed: %s; retrying",
		          message);
		uv_timer_start(&cl->cl_t_load, on_load_timer, CL_RETRY_MS, 0);
		return;
	}
	free(r);
	if (cl->cl_ld_rev == 0 && rr->header != NULL)
		cl->cl_ld_rev = rr->header->revision;
	for (i = 0; i < rr->n_kvs; i++) {
		kv = rr->kvs[i];
		cl_apply(cl, cl->cl_ld, 0, kv->key.data, kv->key.len,
		         kv->value.data, kv->value.len);
	}
	if (rr->more && rr->n_kvs > 0) {
		kv = rr->kvs[rr->n_kvs - 1];
		if (kv->key.len + 1 <= sizeof(cl->cl_ld_next)) {
			memcpy(cl->cl_ld_next, kv->key.data, kv->key.len);
			cl->cl_ld_next[kv->key.len] = '\0';
			cl->cl_ld_nlen = kv->key.len + 1;
			if (cl_load_page(cl) == 0)
				return;
		}
		/* A key longer than any of ours: start over later. */
		uv_timer_start(&cl->cl_t_load, on_load_timer, CL_RETRY_MS, 0);
		return;
	}
	cl_load_done(cl);
}

static int
cl_load_page(struct cluster *cl)
{
	Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
	uint8_t end[CLUSTERKEY_PREFIX_MAX + 1];
	struct clreq *r;
	int rc;

	if ((r = req_new(cl, SRVM_ETCD_GET, NULL)) == NULL)
		return -ENOMEM;
	rq.key.data = cl->cl_ld_next;
	rq.key.len = cl->cl_ld_nlen;
	rq.range_end.data = end;
	rq.range_end.len =
	    etcd_prefix_end((const uint8_t *)cl->cl_prefix, cl->cl_plen, end);
	rq.limit = CL_PAGE;
	rq.revision = cl->cl_ld_rev;
	if ((rc = etcd_call(cl->cl_etcd, ETCD_RANGE, &rq.base, on_load_page,
	                    r)) != 0) {
		metrics_count(srvm.sm_etcd_errors, SRVM_ETCD_GET, 0, 1);
		free(r);
	}
	return rc;
}

/* Reads the whole prefix at revision rev (0: the latest) into fresh maps. */
static void
cl_load_start(struct cluster *cl, int64_t rev)
{
	size_t i;

	if (cl->cl_stopping)
		return;
	for (i = 0; i < MAP_COUNT; i++)
		map_clear(&cl->cl_ld[i]);
	cl->cl_loading = 1;
	cl->cl_ld_rev = rev;
	memcpy(cl->cl_ld_next, cl->cl_prefix, cl->cl_plen);
	cl->cl_ld_nlen = cl->cl_plen;
	if (cl_load_page(cl) != 0)
		uv_timer_start(&cl->cl_t_load, on_load_timer, CL_RETRY_MS, 0);
}

static void
on_load_timer(uv_timer_t *t)
{
	struct cluster *cl = (struct cluster *)t->data;

	if (cl->cl_watch != NULL) {
		etcd_watch_cancel(cl->cl_watch);
		cl->cl_watch = NULL;
	}
	cl_load_start(cl, 0);
}

/* --- the lease and the node key --- */

static void
cl_set_lease_state(struct cluster *cl, enum lease_state s)
{
	log_debug("cluster: lease %s -> %s", lease_state_names[cl->cl_lstate],
	          lease_state_names[s]);
	cl->cl_lstate = s;
	metrics_gauge_set(srvm.sm_etcd_up, 0, 0, s == LEASE_UP);
	cl_update_gauges(cl);
}

static void
on_node_put(struct etcd_client *c, int status, const char *message,
            const ProtobufCMessage *resp, void *arg)
{
	struct clreq *r = arg;
	struct cluster *cl = r->r_cl;

	(void)c;
	(void)resp;
	if (req_end(r, status)) {
		free(r);
		if (cl->cl_stopping || cl->cl_lease == NULL)
			return;
		log_warnx("cluster: cannot register node \"%s\": %s",
		          cl->cl_node, message);
		/* on_lost follows, and a new lease after it. */
		etcd_lease_revoke(cl->cl_lease);
		return;
	}
	free(r);
	if (cl->cl_lstate != LEASE_REGISTERING)
		return;
	cl_set_lease_state(cl, LEASE_UP);
	log_info("cluster: %s node \"%s\" (address \"%s\", lease %llx, ttl "
	         "%u s): claiming devices",
	         cl->cl_was_up ? "etcd is back: registered again as"
	                       : "registered as",
	         cl->cl_node, cl->cl_addr, (unsigned long long)cl->cl_lease_id,
	         cl->cl_ttl);
	cl->cl_was_up = 1;
	cl_reclaim(cl, 1);
}

static void
on_lease_granted(struct etcd_lease *l, int64_t id, int64_t ttl, void *arg)
{
	struct cluster *cl = arg;
	char key[CLUSTERKEY_MAX + 1];
	struct clreq *r;
	size_t klen;

	(void)l;
	(void)ttl;
	metrics_observe(srvm.sm_etcd_secs, SRVM_ETCD_LEASE, 0,
	                srvmetrics_secs(cl->cl_grant_t0, uv_hrtime()));
	cl->cl_lease_id = id;
	cl_set_lease_state(cl, LEASE_REGISTERING);
	if (cl_key(cl, CLUSTERKEY_NODE, cl->cl_node, key, &klen) != 0 ||
	    (r = req_new(cl, SRVM_ETCD_PUT, NULL)) == NULL) {
		etcd_lease_revoke(cl->cl_lease);
		return;
	}
	if (etcd_put(cl->cl_etcd, key, klen, cl->cl_addr, strlen(cl->cl_addr),
	             id, on_node_put, r) != 0) {
		free(r);
		etcd_lease_revoke(cl->cl_lease);
	}
}

static void cl_maybe_closed(struct cluster *cl);

static void
on_lease_lost(struct etcd_lease *l, int status, const char *message, void *arg)
{
	struct cluster *cl = arg;
	int was_up = cl->cl_lstate == LEASE_UP;

	(void)l;
	cl->cl_lease = NULL;
	cl->cl_lease_id = 0;
	if (cl->cl_stopping) {
		if (status == 0)
			log_info("cluster: lease revoked: this node's devices "
			         "are released");
		cl_maybe_closed(cl);
		return;
	}
	metrics_count(srvm.sm_etcd_errors, SRVM_ETCD_LEASE, 0, 1);
	reclaim_free(cl);
	cl_set_lease_state(cl, LEASE_NONE);
	if (was_up)
		log_warnx("cluster: lost the etcd lease (%s): node \"%s\" no "
		          "longer claims its %zu devices; they stay connected; "
		          "retrying every %d ms",
		          message, cl->cl_node, cl->cl_local.m_n, CL_RETRY_MS);
	else
		log_warnx("cluster: no etcd lease (%s); retrying", message);
	(void)status;
	uv_timer_start(&cl->cl_t_lease, on_lease_timer, CL_RETRY_MS, 0);
}

static const struct etcd_lease_ops lease_ops = {
    .on_granted = on_lease_granted,
    .on_lost = on_lease_lost,
};

static void
cl_register(struct cluster *cl)
{
	int rc;

	if (cl->cl_stopping || cl->cl_lease != NULL)
		return;
	cl->cl_grant_t0 = uv_hrtime();
	cl_set_lease_state(cl, LEASE_GRANTING);
	if ((rc = etcd_lease_grant(cl->cl_etcd, cl->cl_ttl, &lease_ops, cl,
	                           &cl->cl_lease)) != 0) {
		cl_set_lease_state(cl, LEASE_NONE);
		metrics_count(srvm.sm_etcd_errors, SRVM_ETCD_LEASE, 0, 1);
		log_warnx("cluster: cannot ask for a lease: %s", strerror(-rc));
		uv_timer_start(&cl->cl_t_lease, on_lease_timer, CL_RETRY_MS, 0);
	}
}

static void
on_lease_timer(uv_timer_t *t)
{
	cl_register((struct cluster *)t->data);
}

static void
on_etcd_conn(struct etcd_client *c, int up, const char *endpoint,
             const char *reason, void *arg)
{
	(void)c;
	(void)arg;
	if (up)
		log_info("cluster: connected to etcd at %s", endpoint);
	else
		log_info("cluster: etcd connection to %s ended: %s", endpoint,
		         reason);
}

/* --- start and stop --- */

static void
on_timer_closed(uv_handle_t *h)
{
	struct cluster *cl = h->data;
	size_t i;

	if (--cl->cl_nclosing > 0)
		return;
	for (i = 0; i < MAP_COUNT; i++) {
		map_clear(&cl->cl_maps[i]);
		map_clear(&cl->cl_ld[i]);
	}
	map_clear(&cl->cl_local);
	reclaim_free(cl);
	if (cl->cl_done != NULL)
		cl->cl_done(cl->cl_done_arg);
	free(cl->cl_node);
	free(cl->cl_addr);
	free(cl->cl_prefix);
	free(cl);
}

static void
on_etcd_closed(void *arg)
{
	struct cluster *cl = arg;

	cl->cl_etcd = NULL;
	cl->cl_nclosing = 4;
	uv_close((uv_handle_t *)&cl->cl_t_lease, on_timer_closed);
	uv_close((uv_handle_t *)&cl->cl_t_load, on_timer_closed);
	uv_close((uv_handle_t *)&cl->cl_t_rebuild, on_timer_closed);
	uv_close((uv_handle_t *)&cl->cl_t_reclaim, on_timer_closed);
}

/* Closes the client once the lease is revoked (or there is none). */
static void
cl_maybe_closed(struct cluster *cl)
{
	if (cl->cl_lease != NULL || cl->cl_etcd == NULL || cl->cl_nclosing)
		return;
	cl->cl_nclosing = -1; /* closing the client */
	etcd_client_close(cl->cl_etcd, on_etcd_closed, cl);
}

void
cluster_stop(struct cluster *cl, void (*done)(void *arg), void *arg)
{
	cl->cl_stopping = 1;
	cl->cl_done = done;
	cl->cl_done_arg = arg;
	broker_unwatch(cl->cl_broker, cl->cl_bwatch);
	cl->cl_bwatch = NULL;
	cl->cl_broker = NULL;
	uv_timer_stop(&cl->cl_t_lease);
	uv_timer_stop(&cl->cl_t_load);
	uv_timer_stop(&cl->cl_t_rebuild);
	uv_timer_stop(&cl->cl_t_reclaim);
	reclaim_free(cl);
	cl_set_lease_state(cl, LEASE_STOPPING);
	if (cl->cl_lease != NULL)
		etcd_lease_revoke(cl->cl_lease);
	cl_maybe_closed(cl);
}

const char *
cluster_device_node(const struct cluster *cl, const char *id)
{
	const struct ent *e = map_get(&cl->cl_maps[MAP_PRESENCE], id);

	return e != NULL ? e->e_val : NULL;
}

const char *
cluster_device_address(const struct cluster *cl, const char *id)
{
	const char *node = cluster_device_node(cl, id);
	const struct ent *e;

	if (node == NULL || strcmp(node, cl->cl_node) == 0 ||
	    (e = map_get(&cl->cl_maps[MAP_NODES], node)) == NULL ||
	    e->e_val[0] == '\0')
		return NULL;
	return e->e_val;
}

int
cluster_etcd_up(const struct cluster *cl)
{
	return cl->cl_lstate == LEASE_UP;
}

int
cluster_start(uv_loop_t *loop, struct broker *b, const struct cluster_opts *o,
              struct cluster **out, char *err, size_t errlen)
{
	struct etcd_endpoint eps[ETCD_MAX_ENDPOINTS];
	struct etcd_opts eo = {0};
	struct cluster *cl;
	size_t n;
	int tls, rc;

	if ((rc = etcd_endpoints_parse(o->co_endpoints, eps, ETCD_MAX_ENDPOINTS,
	                               &n, &tls)) != 0) {
		snprintf(err, errlen,
		         "cluster-etcd: \"%.128s\" is not a list of etcd "
		         "endpoints (HOST:PORT, at most %d)",
		         o->co_endpoints, ETCD_MAX_ENDPOINTS);
		return -EINVAL;
	}
	if (tls && o->co_ca_file == NULL) {
		snprintf(err, errlen,
		         "cluster-etcd: https endpoints need "
		         "cluster-etcd-ca");
		return -EINVAL;
	}
	if (!clusterkey_prefix_valid(o->co_prefix) ||
	    !clusterkey_name_valid(o->co_node)) {
		snprintf(err, errlen, "cluster: bad prefix or node name");
		return -EINVAL;
	}
	if ((cl = calloc(1, sizeof(*cl))) == NULL ||
	    (cl->cl_node = strdup(o->co_node)) == NULL ||
	    (cl->cl_addr = strdup(o->co_address)) == NULL ||
	    (cl->cl_prefix = strdup(o->co_prefix)) == NULL) {
		if (cl != NULL) {
			free(cl->cl_node);
			free(cl->cl_addr);
			free(cl);
		}
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cl->cl_loop = loop;
	cl->cl_broker = b;
	cl->cl_plen = strlen(cl->cl_prefix);
	cl->cl_ttl = o->co_ttl;
	cl->cl_throttle = o->co_throttle;
	cl->cl_on_ready = o->co_on_ready;
	cl->cl_arg = o->co_arg;
	eo.eo_ca_file = o->co_ca_file;
	eo.eo_cert_file = o->co_cert_file;
	eo.eo_key_file = o->co_key_file;
	eo.eo_on_conn = on_etcd_conn;
	eo.eo_arg = cl;
	/*
	 * The keep-alive PINGs find a silent member well within the lease
	 * TTL; etcd refuses PINGs more often than every 5 s.
	 */
	eo.eo_ping_ms = 5000;
	eo.eo_max_pending = 4096;
	if ((rc = etcd_client_new(loop, eps, n, &eo, &cl->cl_etcd, err,
	                          errlen)) != 0) {
		free(cl->cl_node);
		free(cl->cl_addr);
		free(cl->cl_prefix);
		free(cl);
		return rc;
	}
	uv_timer_init(loop, &cl->cl_t_lease);
	uv_timer_init(loop, &cl->cl_t_load);
	uv_timer_init(loop, &cl->cl_t_rebuild);
	uv_timer_init(loop, &cl->cl_t_reclaim);
	cl->cl_t_lease.data = cl->cl_t_load.data = cl->cl_t_rebuild.data =
	    cl->cl_t_reclaim.data = cl;
	if ((cl->cl_bwatch = broker_watch(b, on_broker_event, cl)) == NULL) {
		snprintf(err, errlen, "out of memory");
		/* Nothing started yet: close it all the normal way. */
		cluster_stop(cl, NULL, NULL);
		return -ENOMEM;
	}
	srvmetrics_cluster_init();
	metrics_gauge_set(srvm.sm_etcd_up, 0, 0, 0);
	log_info("cluster: node \"%s\", etcd %s, prefix \"%s\", lease ttl "
	         "%u s",
	         cl->cl_node, o->co_endpoints, cl->cl_prefix, cl->cl_ttl);
	cl_load_start(cl, 0);
	cl_register(cl);
	*out = cl;
	return 0;
}
