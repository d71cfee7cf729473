/*
 * etcd v3 client: endpoints and failover, unary calls with retries,
 * leases with keep-alive, watches (docs/internals/etcd.md).
 *
 * Every final callback goes through a done list drained by an idle handle
 * (client_drain), so none runs inside an API call, and a handle is freed
 * only after its final callback.  A 100 ms tick expires queued calls,
 * sends keep-alives and restarts streams.
 */
#include <sys/queue.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "err.h"
#include "grpc.h"
#include "grpc_meta.h"
#include "tls.h"

#include "etcd.h"

#define TICK_MS 100

#define container_of(p, t, m) ((t *)(void *)((char *)(p)-offsetof(t, m)))

#ifndef TAILQ_FOREACH_SAFE
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)                             \
	for ((var) = TAILQ_FIRST(head);                                        \
	     (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);            \
	     (var) = (tvar))
#endif

struct etcd_conn {
	struct etcd_client *ec_client;
	struct grpc_conn *ec_conn;
	size_t ec_ep;
	int ec_ready;
	char ec_name[ETCD_HOST_MAX + 8];
	TAILQ_ENTRY(etcd_conn) ec_link;
};

enum req_where { REQ_QUEUED, REQ_INFLIGHT, REQ_DONE };

struct etcd_req {
	TAILQ_ENTRY(etcd_req) r_link;
	struct etcd_client *r_client;
	enum etcd_method r_method;
	enum req_where r_where;
	uint8_t *r_buf;
	size_t r_len;
	uint64_t r_deadline;
	unsigned r_attempts;
	struct grpc_call *r_call;
	struct etcd_conn *r_conn;
	ProtobufCMessage *r_resp;
	int r_status;
	char *r_msg;
	etcd_cb r_cb;
	void *r_arg;
};
TAILQ_HEAD(req_list, etcd_req);

enum lease_state { L_GRANTING, L_ACTIVE, L_REVOKING, L_DONE };

struct etcd_lease {
	TAILQ_ENTRY(etcd_lease) l_link;
	struct etcd_client *l_client;
	enum lease_state l_state;
	int l_revoke_wanted;
	int64_t l_id;
	int64_t l_ttl;
	uint64_t l_last_ok;
	uint64_t l_next_ka;
	int l_status;
	char *l_msg;
	const struct etcd_lease_ops *l_ops;
	void *l_arg;
};
TAILQ_HEAD(lease_list, etcd_lease);

enum watch_state { W_PENDING, W_CREATING, W_ACTIVE, W_CANCELING, W_DONE };

struct etcd_watch {
	TAILQ_ENTRY(etcd_watch) w_link;
	struct etcd_client *w_client;
	enum watch_state w_state;
	int w_cancel_wanted;
	int64_t w_id;
	uint8_t *w_key;
	size_t w_klen;
	uint8_t *w_end;
	size_t w_elen;
	int64_t w_next_rev;
	int w_status;
	char *w_msg;
	const struct etcd_watch_ops *w_ops;
	void *w_arg;
};
TAILQ_HEAD(watch_list, etcd_watch);

enum client_state { C_CONNECTING, C_READY, C_BACKOFF, C_CLOSING };

struct etcd_client {
	uv_loop_t *c_loop;
	struct etcd_endpoint *c_eps;
	size_t c_nep;
	size_t c_ep;
	struct tls_ctx *c_tls;
	struct etcd_opts c_opts;
	struct grpc_opts c_gopts;
	enum client_state c_state;

	struct etcd_conn *c_conn; /* current, connecting or ready */
	TAILQ_HEAD(, etcd_conn) c_draining;
	int c_conn_bad;
	char c_bad_reason[128];
	unsigned c_fails; /* connection failures in a row */
	unsigned c_backoff_ms;
	unsigned c_connects;
	char c_epname[ETCD_HOST_MAX + 8];

	struct req_list c_queue;
	struct req_list c_inflight;
	struct req_list c_done;
	unsigned c_nreq;

	struct lease_list c_leases;
	struct lease_list c_ldone;
	unsigned c_nlease;
	struct grpc_call *c_kcall;
	uint64_t c_kretry_at;

	struct watch_list c_watches;
	struct watch_list c_wdone;
	unsigned c_nwatch;
	int64_t c_next_wid;
	struct grpc_call *c_wcall;
	uint64_t c_wretry_at;

	uv_timer_t c_tick;
	uv_timer_t c_backoff;
	uv_idle_t c_idle;
	int c_handles; /* open handles; freed when the last closes */
	int c_closing;
	void (*c_done_cb)(void *);
	void *c_done_arg;
};

struct method_info {
	const char *mi_path;
	const ProtobufCMessageDescriptor *mi_req;
	const ProtobufCMessageDescriptor *mi_resp;
	int mi_readonly; /* safe to retry after it may have been applied */
};

static const struct method_info methods[ETCD_METHOD_MAX] = {
    [ETCD_RANGE] = {"/etcdserverpb.KV/Range",
                    &etcdserverpb__range_request__descriptor,
                    &etcdserverpb__range_response__descriptor, 1},
    [ETCD_PUT] = {"/etcdserverpb.KV/Put",
                  &etcdserverpb__put_request__descriptor,
                  &etcdserverpb__put_response__descriptor, 0},
    [ETCD_DELETE_RANGE] = {"/etcdserverpb.KV/DeleteRange",
                           &etcdserverpb__delete_range_request__descriptor,
                           &etcdserverpb__delete_range_response__descriptor, 0},
    [ETCD_TXN] = {"/etcdserverpb.KV/Txn",
                  &etcdserverpb__txn_request__descriptor,
                  &etcdserverpb__txn_response__descriptor, 0},
    [ETCD_COMPACT] = {"/etcdserverpb.KV/Compact",
                      &etcdserverpb__compaction_request__descriptor,
                      &etcdserverpb__compaction_response__descriptor, 0},
    [ETCD_LEASE_GRANT] = {"/etcdserverpb.Lease/LeaseGrant",
                          &etcdserverpb__lease_grant_request__descriptor,
                          &etcdserverpb__lease_grant_response__descriptor, 0},
    [ETCD_LEASE_REVOKE] = {"/etcdserverpb.Lease/LeaseRevoke",
                           &etcdserverpb__lease_revoke_request__descriptor,
                           &etcdserverpb__lease_revoke_response__descriptor, 0},
    [ETCD_LEASE_TTL] = {"/etcdserverpb.Lease/LeaseTimeToLive",
                        &etcdserverpb__lease_time_to_live_request__descriptor,
                        &etcdserverpb__lease_time_to_live_response__descriptor,
                        1},
    [ETCD_MEMBER_LIST] = {"/etcdserverpb.Cluster/MemberList",
                          &etcdserverpb__member_list_request__descriptor,
                          &etcdserverpb__member_list_response__descriptor, 1},
    [ETCD_STATUS] = {"/etcdserverpb.Maintenance/Status",
                     &etcdserverpb__status_request__descriptor,
                     &etcdserverpb__status_response__descriptor, 1},
};

#define PATH_WATCH     "/etcdserverpb.Watch/Watch"
#define PATH_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"

static void client_kick(struct etcd_client *c);
static void conn_start(struct etcd_client *c);
static void conn_failover(struct etcd_client *c, const char *reason);
static void req_complete(struct etcd_req *r, int status, const char *msg);
static void lease_end(struct etcd_lease *l, int status, const char *msg);
static void watch_end(struct etcd_watch *w, int status, const char *msg);
static void streams_reset(struct etcd_client *c);

/* --- endpoints --- */

int
etcd_endpoints_parse(const char *list, struct etcd_endpoint *eps, size_t max,
                     size_t *n, int *tls)
{
	const char *p = list, *e;
	char tok[ETCD_HOST_MAX + 32];
	size_t cnt = 0, len;
	int scheme = -1, s, rc;

	if (list == NULL)
		return -EINVAL;
	for (;;) {
		while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (*p == '\0')
			break;
		for (e = p; *e != '\0' && *e != ',' && *e != ' ' &&
		            *e != '\t' && *e != '\n';
		     e++)
			;
		len = (size_t)(e - p);
		s = -1;
		if (len >= 7 && strncmp(p, "http://", 7) == 0) {
			s = 0;
			p += 7;
			len -= 7;
		} else if (len >= 8 && strncmp(p, "https://", 8) == 0) {
			s = 1;
			p += 8;
			len -= 8;
		}
		if (len > 0 && p[len - 1] == '/')
			len--;
		if (len == 0)
			return -EINVAL;
		if (len >= sizeof(tok))
			return -ENAMETOOLONG;
		if (s != -1) {
			if (scheme != -1 && scheme != s)
				return -EINVAL;
			scheme = s;
		}
		if (cnt == max)
			return -E2BIG;
		memcpy(tok, p, len);
		tok[len] = '\0';
		rc = addr_parse_hostport(
		    tok, ETCD_DEFAULT_PORT, 0, eps[cnt].ee_host,
		    sizeof(eps[cnt].ee_host), &eps[cnt].ee_port);
		if (rc != 0)
			return rc;
		cnt++;
		p = e;
	}
	if (cnt == 0)
		return -EINVAL;
	*n = cnt;
	*tls = scheme == 1;
	return 0;
}

size_t
etcd_prefix_end(const uint8_t *key, size_t klen, uint8_t *out)
{
	size_t i;

	for (i = klen; i > 0; i--) {
		if (key[i - 1] != 0xff) {
			memcpy(out, key, i - 1);
			out[i - 1] = (uint8_t)(key[i - 1] + 1);
			return i;
		}
	}
	out[0] = 0;
	return 1;
}

const char *
etcd_method_path(enum etcd_method m)
{
	if ((unsigned)m >= ETCD_METHOD_MAX)
		return NULL;
	return methods[m].mi_path;
}

/* --- the client --- */

static void
on_handle_closed(uv_handle_t *h)
{
	struct etcd_client *c = h->data;
	void (*done)(void *);
	void *arg;

	if (--c->c_handles > 0)
		return;
	done = c->c_done_cb;
	arg = c->c_done_arg;
	tls_ctx_free(c->c_tls);
	free(c->c_eps);
	free(c);
	if (done != NULL)
		done(arg);
}

/* Everything ended and delivered: close the handles. */
static void
client_maybe_free(struct etcd_client *c)
{
	if (!c->c_closing || c->c_handles != 3 || c->c_conn != NULL ||
	    !TAILQ_EMPTY(&c->c_draining) || c->c_nreq > 0 ||
	    !TAILQ_EMPTY(&c->c_leases) || !TAILQ_EMPTY(&c->c_ldone) ||
	    !TAILQ_EMPTY(&c->c_watches) || !TAILQ_EMPTY(&c->c_wdone) ||
	    c->c_wcall != NULL || c->c_kcall != NULL)
		return;
	uv_close((uv_handle_t *)&c->c_tick, on_handle_closed);
	uv_close((uv_handle_t *)&c->c_backoff, on_handle_closed);
	uv_close((uv_handle_t *)&c->c_idle, on_handle_closed);
}

static void
req_free(struct etcd_req *r)
{
	if (r->r_resp != NULL)
		protobuf_c_message_free_unpacked(r->r_resp, NULL);
	free(r->r_msg);
	free(r->r_buf);
	free(r);
}

static void dispatch(struct etcd_client *c);
static void streams_start(struct etcd_client *c);

/* The idle handle: deliver final callbacks, then act on the state. */
static void
client_drain(uv_idle_t *h)
{
	struct etcd_client *c = container_of(h, struct etcd_client, c_idle);
	struct etcd_req *r;
	struct etcd_lease *l;
	struct etcd_watch *w;

	uv_idle_stop(h);
	for (;;) {
		if ((r = TAILQ_FIRST(&c->c_done)) != NULL) {
			TAILQ_REMOVE(&c->c_done, r, r_link);
			r->r_cb(c, r->r_status,
			        r->r_msg != NULL ? r->r_msg : "",
			        r->r_status == 0 ? r->r_resp : NULL, r->r_arg);
			c->c_nreq--;
			req_free(r);
		} else if ((l = TAILQ_FIRST(&c->c_ldone)) != NULL) {
			TAILQ_REMOVE(&c->c_ldone, l, l_link);
			if (l->l_ops->on_lost != NULL)
				l->l_ops->on_lost(
				    l, l->l_status,
				    l->l_msg != NULL ? l->l_msg : "", l->l_arg);
			c->c_nlease--;
			free(l->l_msg);
			free(l);
		} else if ((w = TAILQ_FIRST(&c->c_wdone)) != NULL) {
			TAILQ_REMOVE(&c->c_wdone, w, w_link);
			if (w->w_ops->on_end != NULL)
				w->w_ops->on_end(
				    w, w->w_status,
				    w->w_msg != NULL ? w->w_msg : "", w->w_arg);
			c->c_nwatch--;
			free(w->w_msg);
			free(w->w_key);
			free(w->w_end);
			free(w);
		} else
			break;
	}
	if (c->c_closing) {
		client_maybe_free(c);
		return;
	}
	if (c->c_conn_bad) {
		c->c_conn_bad = 0;
		conn_failover(c, c->c_bad_reason);
	}
	dispatch(c);
	streams_start(c);
}

static void
client_kick(struct etcd_client *c)
{
	if (c->c_handles == 3)
		uv_idle_start(&c->c_idle, client_drain);
}

/* Marks the current connection for failover, done from the loop. */
static void
conn_mark_bad(struct etcd_client *c, struct etcd_conn *ec, const char *reason)
{
	if (ec == NULL || ec != c->c_conn || c->c_conn_bad)
		return;
	c->c_conn_bad = 1;
	snprintf(c->c_bad_reason, sizeof(c->c_bad_reason), "%s", reason);
	client_kick(c);
}

static void
conn_on_ready(struct grpc_conn *conn, void *arg)
{
	struct etcd_conn *ec = arg;
	struct etcd_client *c = ec->ec_client;

	(void)conn;
	ec->ec_ready = 1;
	if (ec != c->c_conn)
		return;
	c->c_state = C_READY;
	c->c_fails = 0;
	c->c_backoff_ms = 0;
	c->c_connects++;
	c->c_wretry_at = c->c_kretry_at = 0;
	if (c->c_opts.eo_on_conn != NULL)
		c->c_opts.eo_on_conn(c, 1, ec->ec_name, "ready",
		                     c->c_opts.eo_arg);
	client_kick(c);
}

static void
conn_on_goaway(struct grpc_conn *conn, uint32_t code, const char *debug,
               void *arg)
{
	(void)conn;
	(void)code;
	(void)debug;
	struct etcd_conn *ec = arg;

	conn_mark_bad(ec->ec_client, ec, "goaway");
}

static void
backoff_fire(uv_timer_t *t)
{
	struct etcd_client *c = container_of(t, struct etcd_client, c_backoff);

	if (!c->c_closing)
		conn_start(c);
}

/* The current connection failed or was dropped: the next endpoint. */
static void
conn_next(struct etcd_client *c, int failed)
{
	unsigned ms;

	c->c_ep = (c->c_ep + 1) % c->c_nep;
	if (failed)
		c->c_fails++;
	if (c->c_fails < c->c_nep) {
		conn_start(c);
		return;
	}
	/* A whole round failed: back off, doubling, with jitter. */
	c->c_fails = 0;
	if (c->c_backoff_ms == 0)
		c->c_backoff_ms = c->c_opts.eo_backoff_min_ms;
	else if (c->c_backoff_ms < c->c_opts.eo_backoff_max_ms / 2)
		c->c_backoff_ms *= 2;
	else
		c->c_backoff_ms = c->c_opts.eo_backoff_max_ms;
	ms = c->c_backoff_ms / 2 +
	     (unsigned)((uint64_t)rand() % (c->c_backoff_ms / 2 + 1));
	c->c_state = C_BACKOFF;
	uv_timer_start(&c->c_backoff, backoff_fire, ms, 0);
}

static void
conn_on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct etcd_conn *ec = arg;
	struct etcd_client *c = ec->ec_client;
	char why[160];

	(void)conn;
	snprintf(why, sizeof(why), "%s",
	         reason != NULL && *reason != '\0' ? reason
	                                           : ncg_strerror(err));
	if (ec != c->c_conn) {
		TAILQ_REMOVE(&c->c_draining, ec, ec_link);
		free(ec);
		client_kick(c);
		return;
	}
	c->c_conn = NULL;
	if (c->c_opts.eo_on_conn != NULL && !c->c_closing)
		c->c_opts.eo_on_conn(c, 0, ec->ec_name, why, c->c_opts.eo_arg);
	free(ec);
	if (c->c_closing) {
		client_kick(c);
		return;
	}
	c->c_state = C_CONNECTING;
	conn_next(c, 1);
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = conn_on_ready,
    .on_goaway = conn_on_goaway,
    .on_closed = conn_on_closed,
};

static void
conn_start(struct etcd_client *c)
{
	struct etcd_endpoint *ep = &c->c_eps[c->c_ep];
	struct etcd_conn *ec;
	int rc;

	c->c_state = C_CONNECTING;
	snprintf(c->c_epname, sizeof(c->c_epname),
	         strchr(ep->ee_host, ':') != NULL ? "[%s]:%u" : "%s:%u",
	         ep->ee_host, ep->ee_port);
	if ((ec = calloc(1, sizeof(*ec))) == NULL) {
		conn_next(c, 1);
		return;
	}
	ec->ec_client = c;
	ec->ec_ep = c->c_ep;
	snprintf(ec->ec_name, sizeof(ec->ec_name), "%s", c->c_epname);
	c->c_conn = ec;
	rc = grpc_conn_connect(c->c_loop, ep->ee_host, ep->ee_port, c->c_tls,
	                       &c->c_gopts, &conn_ops, ec, &ec->ec_conn);
	if (rc != 0) {
		c->c_conn = NULL;
		free(ec);
		conn_next(c, 1);
	}
}

/*
 * Leaves the current connection: it closes gracefully (unary calls in
 * flight finish there, the streams are cancelled and move), and the next
 * endpoint is dialled.
 */
static void
conn_failover(struct etcd_client *c, const char *reason)
{
	struct etcd_conn *ec = c->c_conn;

	if (ec == NULL)
		return;
	if (c->c_opts.eo_on_conn != NULL)
		c->c_opts.eo_on_conn(c, 0, ec->ec_name, reason,
		                     c->c_opts.eo_arg);
	c->c_conn = NULL;
	TAILQ_INSERT_TAIL(&c->c_draining, ec, ec_link);
	streams_reset(c);
	if (ec->ec_conn != NULL)
		grpc_conn_close(ec->ec_conn, ec->ec_ready ? 0 : NCG_ECLOSED);
	conn_next(c, 0);
}

/* --- unary calls --- */

/* etcd's answers that say "this member cannot serve you now". */
static int
member_unfit(const char *msg)
{
	static const char *const m[] = {
	    "etcdserver: no leader",      "etcdserver: not leader",
	    "etcdserver: leader changed", "etcdserver: server stopped",
	    "etcdserver: not capable",    "etcdserver: too many requests",
	};
	size_t i;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (strcmp(msg, m[i]) == 0)
			return 1;
	return 0;
}

static void
req_complete(struct etcd_req *r, int status, const char *msg)
{
	struct etcd_client *c = r->r_client;

	if (r->r_where == REQ_QUEUED)
		TAILQ_REMOVE(&c->c_queue, r, r_link);
	else if (r->r_where == REQ_INFLIGHT)
		TAILQ_REMOVE(&c->c_inflight, r, r_link);
	r->r_where = REQ_DONE;
	r->r_status = status;
	free(r->r_msg);
	r->r_msg = strdup(msg);
	TAILQ_INSERT_TAIL(&c->c_done, r, r_link);
	client_kick(c);
}

static void
req_on_message(struct grpc_call *call, const uint8_t *msg, size_t len,
               void *arg)
{
	struct etcd_req *r = arg;

	(void)call;
	if (r->r_resp != NULL)
		protobuf_c_message_free_unpacked(r->r_resp, NULL);
	r->r_resp = protobuf_c_message_unpack(methods[r->r_method].mi_resp,
	                                      NULL, len, msg);
	if (r->r_resp == NULL)
		r->r_status = -1; /* remembered for on_end */
}

static void
req_on_end(struct grpc_call *call, int status, const char *msg, void *arg)
{
	struct etcd_req *r = arg;
	struct etcd_client *c = r->r_client;
	uint64_t now = uv_now(c->c_loop);
	int unfit, retry;

	(void)call;
	r->r_call = NULL;
	if (c->c_closing) {
		req_complete(r, GRPC_STATUS_CANCELLED, "client closed");
		return;
	}
	if (status == GRPC_STATUS_OK) {
		if (r->r_status == -1 || r->r_resp == NULL)
			req_complete(r, GRPC_STATUS_INTERNAL,
			             "malformed or missing response");
		else
			req_complete(r, GRPC_STATUS_OK, "");
		return;
	}
	/*
	 * Who may be retried: any call the member refused outright (it did
	 * not apply it), and reads after any transport or deadline failure.
	 * A member that lost its leader lets a linearizable read run into our
	 * attempt deadline and answers UNKNOWN "context deadline exceeded"
	 * (Go's error, unwrapped): a deadline failure too.  A write whose fate
	 * is unknown is reported, as etcd's own client does.
	 */
	unfit = status == GRPC_STATUS_UNAVAILABLE && member_unfit(msg);
	retry =
	    unfit || (methods[r->r_method].mi_readonly &&
	              (status == GRPC_STATUS_UNAVAILABLE ||
	               status == GRPC_STATUS_DEADLINE_EXCEEDED ||
	               (status == GRPC_STATUS_UNKNOWN &&
	                strcmp(msg, "context deadline exceeded") == 0) ||
	               strncmp(msg, "etcdserver: request timed out", 29) == 0));
	if (unfit || (status == GRPC_STATUS_DEADLINE_EXCEEDED &&
	              strncmp(msg, "etcdserver:", 11) != 0))
		conn_mark_bad(c, r->r_conn, msg);
	if (!retry || now + 10 >= r->r_deadline) {
		req_complete(r, status, msg);
		return;
	}
	TAILQ_REMOVE(&c->c_inflight, r, r_link);
	r->r_where = REQ_QUEUED;
	r->r_status = 0;
	TAILQ_INSERT_HEAD(&c->c_queue, r, r_link);
	client_kick(c);
}

static const struct grpc_call_ops req_ops = {
    .on_message = req_on_message,
    .on_end = req_on_end,
};

static void
dispatch(struct etcd_client *c)
{
	struct etcd_req *r;
	uint64_t now = uv_now(c->c_loop), left;
	int rc;

	if (c->c_state != C_READY || c->c_conn == NULL || c->c_conn_bad)
		return;
	while ((r = TAILQ_FIRST(&c->c_queue)) != NULL) {
		left = r->r_deadline > now ? r->r_deadline - now : 1;
		/* A write cannot be retried once sent: all the time left. */
		if (methods[r->r_method].mi_readonly &&
		    left > c->c_opts.eo_attempt_ms)
			left = c->c_opts.eo_attempt_ms;
		rc = grpc_call_start(c->c_conn->ec_conn,
		                     methods[r->r_method].mi_path, NULL, left,
		                     &req_ops, r, &r->r_call);
		if (rc == NCG_ECLOSED) {
			conn_mark_bad(c, c->c_conn, "connection closing");
			return;
		}
		if (rc != 0) {
			req_complete(r, GRPC_STATUS_INTERNAL, ncg_strerror(rc));
			continue;
		}
		TAILQ_REMOVE(&c->c_queue, r, r_link);
		r->r_where = REQ_INFLIGHT;
		r->r_conn = c->c_conn;
		r->r_attempts++;
		TAILQ_INSERT_TAIL(&c->c_inflight, r, r_link);
		if (grpc_call_send(r->r_call, r->r_buf, r->r_len) != 0 ||
		    grpc_call_close_send(r->r_call) != 0)
			grpc_call_cancel(r->r_call); /* on_end follows */
	}
}

int
etcd_call(struct etcd_client *c, enum etcd_method m,
          const ProtobufCMessage *req, etcd_cb cb, void *arg)
{
	struct etcd_req *r;

	if ((unsigned)m >= ETCD_METHOD_MAX || req == NULL || cb == NULL ||
	    req->descriptor != methods[m].mi_req)
		return -EINVAL;
	if (c->c_closing)
		return NCG_ECANCELLED;
	if (c->c_nreq >= c->c_opts.eo_max_pending)
		return -ENOBUFS;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return -ENOMEM;
	r->r_len = protobuf_c_message_get_packed_size(req);
	if ((r->r_buf = malloc(r->r_len > 0 ? r->r_len : 1)) == NULL) {
		free(r);
		return -ENOMEM;
	}
	protobuf_c_message_pack(req, r->r_buf);
	r->r_client = c;
	r->r_method = m;
	r->r_cb = cb;
	r->r_arg = arg;
	r->r_deadline = uv_now(c->c_loop) + c->c_opts.eo_timeout_ms;
	r->r_where = REQ_QUEUED;
	TAILQ_INSERT_TAIL(&c->c_queue, r, r_link);
	c->c_nreq++;
	client_kick(c);
	return 0;
}

/*
 * Points k at key and, for a prefix, end at the first key past it, in a
 * buffer returned in *buf for the caller to free.  0 or -ENOMEM.
 */
static int
key_range(ProtobufCBinaryData *k, ProtobufCBinaryData *end, const void *key,
          size_t klen, int prefix, uint8_t **buf)
{
	k->data = (uint8_t *)(uintptr_t)key;
	k->len = klen;
	*buf = NULL;
	if (!prefix)
		return 0;
	if ((*buf = malloc(klen + 1)) == NULL)
		return -ENOMEM;
	end->len = etcd_prefix_end(key, klen, *buf);
	end->data = *buf;
	return 0;
}

int
etcd_get(struct etcd_client *c, const void *key, size_t klen, int prefix,
         etcd_cb cb, void *arg)
{
	Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
	uint8_t *end = NULL;
	int rc;

	if ((rc = key_range(&rq.key, &rq.range_end, key, klen, prefix, &end)) !=
	    0)
		return rc;
	rc = etcd_call(c, ETCD_RANGE, &rq.base, cb, arg);
	free(end);
	return rc;
}

int
etcd_put(struct etcd_client *c, const void *key, size_t klen, const void *val,
         size_t vlen, int64_t lease, etcd_cb cb, void *arg)
{
	Etcdserverpb__PutRequest rq = ETCDSERVERPB__PUT_REQUEST__INIT;

	rq.key.data = (uint8_t *)(uintptr_t)key;
	rq.key.len = klen;
	rq.value.data = (uint8_t *)(uintptr_t)val;
	rq.value.len = vlen;
	rq.lease = lease;
	return etcd_call(c, ETCD_PUT, &rq.base, cb, arg);
}

int
etcd_delete(struct etcd_client *c, const void *key, size_t klen, int prefix,
            etcd_cb cb, void *arg)
{
	Etcdserverpb__DeleteRangeRequest rq =
	    ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	uint8_t *end = NULL;
	int rc;

	if ((rc = key_range(&rq.key, &rq.range_end, key, klen, prefix, &end)) !=
	    0)
		return rc;
	rc = etcd_call(c, ETCD_DELETE_RANGE, &rq.base, cb, arg);
	free(end);
	return rc;
}

int
etcd_cas(struct etcd_client *c, const void *key, size_t klen, const void *val,
         size_t vlen, int64_t lease, int64_t mod_rev, etcd_cb cb, void *arg)
{
	Etcdserverpb__TxnRequest tx = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
	Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
	Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RequestOp ok = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp ko = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__Compare *cmps[1] = {&cmp};
	Etcdserverpb__RequestOp *oks[1] = {&ok}, *kos[1] = {&ko};

	cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
	cmp.key.data = (uint8_t *)(uintptr_t)key;
	cmp.key.len = klen;
	cmp.target_union_case =
	    ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
	cmp.mod_revision = mod_rev;
	put.key = cmp.key;
	put.value.data = (uint8_t *)(uintptr_t)val;
	put.value.len = vlen;
	put.lease = lease;
	get.key = cmp.key;
	ok.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	ok.request_put = &put;
	ko.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	ko.request_range = &get;
	tx.n_compare = 1;
	tx.compare = cmps;
	tx.n_success = 1;
	tx.success = oks;
	tx.n_failure = 1;
	tx.failure = kos;
	return etcd_call(c, ETCD_TXN, &tx.base, cb, arg);
}

/* --- streams: keep-alive and watch --- */

static void
lease_end(struct etcd_lease *l, int status, const char *msg)
{
	struct etcd_client *c = l->l_client;

	if (l->l_state == L_DONE)
		return;
	l->l_state = L_DONE;
	l->l_status = status;
	l->l_msg = strdup(msg);
	TAILQ_REMOVE(&c->c_leases, l, l_link);
	TAILQ_INSERT_TAIL(&c->c_ldone, l, l_link);
	client_kick(c);
}

static void
watch_end(struct etcd_watch *w, int status, const char *msg)
{
	struct etcd_client *c = w->w_client;

	if (w->w_state == W_DONE)
		return;
	w->w_state = W_DONE;
	w->w_status = status;
	w->w_msg = strdup(msg);
	TAILQ_REMOVE(&c->c_watches, w, w_link);
	TAILQ_INSERT_TAIL(&c->c_wdone, w, w_link);
	client_kick(c);
}

static struct etcd_lease *
lease_find(struct etcd_client *c, int64_t id)
{
	struct etcd_lease *l;

	TAILQ_FOREACH(l, &c->c_leases, l_link)
	if (l->l_id == id && l->l_state == L_ACTIVE)
		return l;
	return NULL;
}

static void
ka_on_message(struct grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
	struct etcd_client *c = arg;
	Etcdserverpb__LeaseKeepAliveResponse *rs;
	struct etcd_lease *l;

	(void)call;
	rs = etcdserverpb__lease_keep_alive_response__unpack(NULL, len, msg);
	if (rs == NULL)
		return;
	if ((l = lease_find(c, rs->id)) != NULL) {
		if (rs->ttl <= 0)
			lease_end(l, GRPC_STATUS_NOT_FOUND,
			          "lease expired or revoked");
		else
			l->l_last_ok = uv_now(c->c_loop);
	}
	etcdserverpb__lease_keep_alive_response__free_unpacked(rs, NULL);
}

static void
ka_on_end(struct grpc_call *call, int status, const char *msg, void *arg)
{
	struct etcd_client *c = arg;

	(void)call;
	c->c_kcall = NULL;
	c->c_kretry_at = uv_now(c->c_loop) + 500;
	if (status == GRPC_STATUS_UNAVAILABLE && member_unfit(msg) &&
	    c->c_conn != NULL)
		conn_mark_bad(c, c->c_conn, msg);
	client_kick(c);
}

static const struct grpc_call_ops ka_ops = {
    .on_message = ka_on_message,
    .on_end = ka_on_end,
};

static void
ka_send(struct etcd_client *c, struct etcd_lease *l)
{
	Etcdserverpb__LeaseKeepAliveRequest rq =
	    ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;

	rq.id = l->l_id;
	if (grpc_call_send_pb(c->c_kcall, &rq.base) != 0)
		grpc_call_cancel(c->c_kcall);
}

static void
watch_send_create(struct etcd_client *c, struct etcd_watch *w)
{
	Etcdserverpb__WatchRequest rq = ETCDSERVERPB__WATCH_REQUEST__INIT;
	Etcdserverpb__WatchCreateRequest cr =
	    ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;

	w->w_id = ++c->c_next_wid;
	cr.key.data = w->w_key;
	cr.key.len = w->w_klen;
	cr.range_end.data = w->w_end;
	cr.range_end.len = w->w_elen;
	cr.start_revision = w->w_next_rev;
	cr.watch_id = w->w_id;
	rq.request_union_case =
	    ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
	rq.create_request = &cr;
	w->w_state = W_CREATING;
	if (grpc_call_send_pb(c->c_wcall, &rq.base) != 0)
		grpc_call_cancel(c->c_wcall);
}

static void
watch_send_cancel(struct etcd_client *c, struct etcd_watch *w)
{
	Etcdserverpb__WatchRequest rq = ETCDSERVERPB__WATCH_REQUEST__INIT;
	Etcdserverpb__WatchCancelRequest cr =
	    ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;

	cr.watch_id = w->w_id;
	rq.request_union_case =
	    ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
	rq.cancel_request = &cr;
	w->w_state = W_CANCELING;
	if (grpc_call_send_pb(c->c_wcall, &rq.base) != 0)
		grpc_call_cancel(c->c_wcall);
}

static struct etcd_watch *
watch_find(struct etcd_client *c, int64_t id)
{
	struct etcd_watch *w;

	TAILQ_FOREACH(w, &c->c_watches, w_link)
	if (w->w_id == id && w->w_state != W_PENDING)
		return w;
	return NULL;
}

/* One WatchResponse, for one watch (etcd never mixes them). */
static void
watch_response(struct etcd_client *c, const Etcdserverpb__WatchResponse *rs)
{
	struct etcd_watch *w;
	int64_t hrev = rs->header != NULL ? rs->header->revision : 0;
	size_t i, first;
	Mvccpb__Event *ev;

	if ((w = watch_find(c, rs->watch_id)) == NULL)
		return;
	if (rs->compact_revision != 0) {
		/*
		 * Compacted past w_next_rev.  etcd's header revision is 0
		 * here; compact_revision is the oldest it can still read,
		 * so the caller re-reads at that and the watch resumes
		 * after it.
		 */
		if (rs->compact_revision > hrev)
			hrev = rs->compact_revision;
		if (w->w_ops->on_resync != NULL)
			w->w_ops->on_resync(w, hrev, w->w_arg);
		if (w->w_state == W_DONE)
			return;
		if (w->w_cancel_wanted) {
			watch_end(w, GRPC_STATUS_CANCELLED, "cancelled");
			return;
		}
		w->w_next_rev = hrev + 1;
		if (!rs->canceled)
			watch_send_cancel(c, w);
		watch_send_create(c, w);
		return;
	}
	if (rs->canceled) {
		if (w->w_state == W_CANCELING || w->w_cancel_wanted)
			watch_end(w, GRPC_STATUS_CANCELLED, "cancelled");
		else
			watch_end(w, GRPC_STATUS_ABORTED,
			          *rs->cancel_reason != '\0'
			              ? rs->cancel_reason
			              : "watch cancelled by etcd");
		return;
	}
	if (rs->created && w->w_state == W_CREATING) {
		w->w_state = W_ACTIVE;
		if (w->w_next_rev == 0)
			w->w_next_rev = hrev + 1;
		if (w->w_cancel_wanted) {
			watch_send_cancel(c, w);
			return;
		}
	}
	if (w->w_state != W_ACTIVE || rs->n_events == 0)
		return;
	/* Never deliver a revision twice (after a restart). */
	for (first = 0; first < rs->n_events; first++) {
		ev = rs->events[first];
		if (ev->kv == NULL || ev->kv->mod_revision >= w->w_next_rev)
			break;
	}
	if (first == rs->n_events)
		return;
	for (i = first; i < rs->n_events; i++) {
		ev = rs->events[i];
		if (ev->kv != NULL && ev->kv->mod_revision >= w->w_next_rev)
			w->w_next_rev = ev->kv->mod_revision + 1;
	}
	if (w->w_ops->on_events != NULL)
		w->w_ops->on_events(w, rs->events + first, rs->n_events - first,
		                    hrev, w->w_arg);
}

static void
watch_on_message(struct grpc_call *call, const uint8_t *msg, size_t len,
                 void *arg)
{
	struct etcd_client *c = arg;
	Etcdserverpb__WatchResponse *rs;

	(void)call;
	if ((rs = etcdserverpb__watch_response__unpack(NULL, len, msg)) ==
	    NULL) {
		grpc_call_cancel(call);
		return;
	}
	watch_response(c, rs);
	etcdserverpb__watch_response__free_unpacked(rs, NULL);
}

static void
watch_on_end(struct grpc_call *call, int status, const char *msg, void *arg)
{
	struct etcd_client *c = arg;
	struct etcd_watch *w, *nw;

	(void)call;
	c->c_wcall = NULL;
	c->c_wretry_at = uv_now(c->c_loop) + 500;
	TAILQ_FOREACH_SAFE(w, &c->c_watches, w_link, nw)
	{
		if (w->w_state == W_CANCELING || w->w_cancel_wanted)
			watch_end(w, GRPC_STATUS_CANCELLED, "cancelled");
		else
			w->w_state = W_PENDING;
	}
	if (status == GRPC_STATUS_UNAVAILABLE && member_unfit(msg) &&
	    c->c_conn != NULL)
		conn_mark_bad(c, c->c_conn, msg);
	client_kick(c);
}

static const struct grpc_call_ops watch_ops = {
    .on_message = watch_on_message,
    .on_end = watch_on_end,
};

/* Both streams end (on_end follows) so that they restart elsewhere. */
static void
streams_reset(struct etcd_client *c)
{
	if (c->c_wcall != NULL)
		grpc_call_cancel(c->c_wcall);
	if (c->c_kcall != NULL)
		grpc_call_cancel(c->c_kcall);
}

static struct grpc_call *
stream_open(struct etcd_client *c, const char *path,
            const struct grpc_call_ops *ops)
{
	struct grpc_mdlist md = {0};
	struct grpc_call *call = NULL;

	/* Ask the member to end the stream when it loses its leader. */
	if (grpc_md_add(&md, "hasleader", "true", 4) == 0 &&
	    grpc_call_start(c->c_conn->ec_conn, path, &md, 0, ops, c, &call) !=
	        0)
		call = NULL;
	grpc_md_free(&md);
	return call;
}

static void
streams_start(struct etcd_client *c)
{
	struct etcd_watch *w;
	struct etcd_lease *l;
	uint64_t now = uv_now(c->c_loop);
	int want = 0;

	if (c->c_state != C_READY || c->c_conn == NULL || c->c_conn_bad)
		return;
	TAILQ_FOREACH(w, &c->c_watches, w_link)
	if (w->w_state == W_PENDING)
		want = 1;
	if (want && c->c_wcall == NULL && now >= c->c_wretry_at)
		c->c_wcall = stream_open(c, PATH_WATCH, &watch_ops);
	if (c->c_wcall != NULL)
		TAILQ_FOREACH(w, &c->c_watches, w_link)
	if (w->w_state == W_PENDING)
		watch_send_create(c, w);
	want = 0;
	TAILQ_FOREACH(l, &c->c_leases, l_link)
	if (l->l_state == L_ACTIVE)
		want = 1;
	if (want && c->c_kcall == NULL && now >= c->c_kretry_at) {
		c->c_kcall = stream_open(c, PATH_KEEPALIVE, &ka_ops);
		/* A new stream: every lease at once. */
		TAILQ_FOREACH(l, &c->c_leases, l_link)
		l->l_next_ka = now;
	}
}

/* --- the tick --- */

static void
tick(uv_timer_t *t)
{
	struct etcd_client *c = container_of(t, struct etcd_client, c_tick);
	struct etcd_req *r, *nr;
	struct etcd_lease *l, *nl;
	uint64_t now = uv_now(c->c_loop);

	TAILQ_FOREACH_SAFE(r, &c->c_queue, r_link, nr)
	if (now >= r->r_deadline)
		req_complete(r, GRPC_STATUS_DEADLINE_EXCEEDED,
		             c->c_state == C_READY
		                 ? "deadline exceeded"
		                 : "no etcd endpoint reachable");
	TAILQ_FOREACH_SAFE(l, &c->c_leases, l_link, nl)
	{
		if (l->l_state != L_ACTIVE)
			continue;
		if (now > l->l_last_ok + (uint64_t)l->l_ttl * 1000) {
			lease_end(l, GRPC_STATUS_DEADLINE_EXCEEDED,
			          "no keep-alive succeeded for a whole ttl");
			continue;
		}
		if (c->c_kcall != NULL && now >= l->l_next_ka) {
			ka_send(c, l);
			l->l_next_ka = now + (uint64_t)l->l_ttl * 1000 / 3;
		}
	}
	streams_start(c);
}

/* --- leases --- */

static void lease_revoke_send(struct etcd_lease *l);

static void
lease_granted(struct etcd_client *c, int status, const char *msg,
              const ProtobufCMessage *resp, void *arg)
{
	struct etcd_lease *l = arg;
	const Etcdserverpb__LeaseGrantResponse *rs = (const void *)resp;

	if (l->l_state == L_DONE)
		return;
	if (status != 0) {
		lease_end(l, status, msg);
		return;
	}
	if (*rs->error != '\0') {
		lease_end(l, GRPC_STATUS_UNKNOWN, rs->error);
		return;
	}
	l->l_id = rs->id;
	l->l_ttl = rs->ttl > 0 ? rs->ttl : 1;
	l->l_last_ok = uv_now(c->c_loop);
	l->l_next_ka = l->l_last_ok + (uint64_t)l->l_ttl * 1000 / 3;
	l->l_state = L_ACTIVE;
	if (l->l_ops->on_granted != NULL)
		l->l_ops->on_granted(l, l->l_id, l->l_ttl, l->l_arg);
	if (l->l_state == L_ACTIVE && l->l_revoke_wanted)
		lease_revoke_send(l);
	client_kick(c);
}

int
etcd_lease_grant(struct etcd_client *c, int64_t ttl,
                 const struct etcd_lease_ops *ops, void *arg,
                 struct etcd_lease **out)
{
	Etcdserverpb__LeaseGrantRequest rq =
	    ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	struct etcd_lease *l;
	int rc;

	if (ttl < 1 || ops == NULL)
		return -EINVAL;
	if (c->c_closing)
		return NCG_ECANCELLED;
	if (c->c_nlease >= c->c_opts.eo_max_leases)
		return -ENOBUFS;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return -ENOMEM;
	l->l_client = c;
	l->l_ops = ops;
	l->l_arg = arg;
	l->l_state = L_GRANTING;
	rq.ttl = ttl;
	if ((rc = etcd_call(c, ETCD_LEASE_GRANT, &rq.base, lease_granted, l)) !=
	    0) {
		free(l);
		return rc;
	}
	TAILQ_INSERT_TAIL(&c->c_leases, l, l_link);
	c->c_nlease++;
	*out = l;
	return 0;
}

static void
lease_revoked(struct etcd_client *c, int status, const char *msg,
              const ProtobufCMessage *resp, void *arg)
{
	struct etcd_lease *l = arg;

	(void)c;
	(void)resp;
	lease_end(l, status, status == 0 ? "revoked" : msg);
}

static void
lease_revoke_send(struct etcd_lease *l)
{
	Etcdserverpb__LeaseRevokeRequest rq =
	    ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
	int rc;

	l->l_state = L_REVOKING;
	rq.id = l->l_id;
	rc = etcd_call(l->l_client, ETCD_LEASE_REVOKE, &rq.base, lease_revoked,
	               l);
	if (rc != 0)
		lease_end(l, GRPC_STATUS_RESOURCE_EXHAUSTED, ncg_strerror(rc));
}

void
etcd_lease_revoke(struct etcd_lease *l)
{
	if (l->l_state == L_GRANTING)
		l->l_revoke_wanted = 1;
	else if (l->l_state == L_ACTIVE)
		lease_revoke_send(l);
}

int64_t
etcd_lease_id(const struct etcd_lease *l)
{
	return l->l_state == L_GRANTING ? 0 : l->l_id;
}

/* --- watches --- */

int
etcd_watch_start(struct etcd_client *c, const void *key, size_t klen,
                 int prefix, int64_t start_rev,
                 const struct etcd_watch_ops *ops, void *arg,
                 struct etcd_watch **out)
{
	struct etcd_watch *w;

	if (ops == NULL || start_rev < 0 || (klen > 0 && key == NULL))
		return -EINVAL;
	if (c->c_closing)
		return NCG_ECANCELLED;
	if (c->c_nwatch >= c->c_opts.eo_max_watches)
		return -ENOBUFS;
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->w_key = malloc(klen + 1)) == NULL ||
	    (prefix && (w->w_end = malloc(klen + 1)) == NULL)) {
		if (w != NULL)
			free(w->w_key);
		free(w);
		return -ENOMEM;
	}
	if (klen > 0)
		memcpy(w->w_key, key, klen);
	w->w_klen = klen;
	if (prefix)
		w->w_elen = etcd_prefix_end(w->w_key, klen, w->w_end);
	w->w_client = c;
	w->w_ops = ops;
	w->w_arg = arg;
	w->w_next_rev = start_rev;
	w->w_state = W_PENDING;
	TAILQ_INSERT_TAIL(&c->c_watches, w, w_link);
	c->c_nwatch++;
	client_kick(c);
	*out = w;
	return 0;
}

void
etcd_watch_cancel(struct etcd_watch *w)
{
	struct etcd_client *c = w->w_client;

	switch (w->w_state) {
	case W_PENDING:
		watch_end(w, GRPC_STATUS_CANCELLED, "cancelled");
		break;
	case W_CREATING:
		w->w_cancel_wanted = 1;
		break;
	case W_ACTIVE:
		if (c->c_wcall != NULL)
			watch_send_cancel(c, w);
		else
			watch_end(w, GRPC_STATUS_CANCELLED, "cancelled");
		break;
	case W_CANCELING:
	case W_DONE:
		break;
	}
}

int64_t
etcd_watch_next_rev(const struct etcd_watch *w)
{
	return w->w_next_rev;
}

/* --- creation and close --- */

int
etcd_client_new(uv_loop_t *loop, const struct etcd_endpoint *eps, size_t n,
                const struct etcd_opts *opts, struct etcd_client **out,
                char *err, size_t errlen)
{
	struct etcd_client *c;
	int rc;

	if (n == 0 || n > ETCD_MAX_ENDPOINTS) {
		ncg_seterr(err, errlen, "between 1 and %d endpoints needed",
		           ETCD_MAX_ENDPOINTS);
		return -EINVAL;
	}
	if ((opts->eo_cert_file == NULL) != (opts->eo_key_file == NULL) ||
	    (opts->eo_cert_file != NULL && opts->eo_ca_file == NULL)) {
		ncg_seterr(err, errlen,
		           "a client certificate needs its key and a ca");
		return -EINVAL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->c_eps = calloc(n, sizeof(*eps))) == NULL) {
		free(c);
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (opts->eo_ca_file != NULL) {
		rc = tls_ctx_client_new_file(&c->c_tls, opts->eo_ca_file, err,
		                             errlen);
		if (rc == 0 && opts->eo_cert_file != NULL)
			rc = tls_ctx_client_set_cert(
			    c->c_tls, opts->eo_cert_file, opts->eo_key_file,
			    err, errlen);
		if (rc != 0) {
			tls_ctx_free(c->c_tls);
			free(c->c_eps);
			free(c);
			return rc;
		}
	}
	memcpy(c->c_eps, eps, n * sizeof(*eps));
	c->c_nep = n;
	c->c_loop = loop;
	c->c_opts = *opts;
#define DFLT(f, v)                                                             \
	if (c->c_opts.f == 0)                                                  \
		c->c_opts.f = (v);
	DFLT(eo_timeout_ms, 5000)
	DFLT(eo_attempt_ms, 2000)
	DFLT(eo_connect_ms, 2000)
	DFLT(eo_backoff_min_ms, 100)
	DFLT(eo_backoff_max_ms, 3000)
	DFLT(eo_ping_ms, 10000)
	DFLT(eo_max_pending, 1024)
	DFLT(eo_max_leases, 64)
	DFLT(eo_max_watches, 256)
	DFLT(eo_max_message, 16 * 1024 * 1024)
#undef DFLT
	if (c->c_opts.eo_backoff_max_ms < c->c_opts.eo_backoff_min_ms)
		c->c_opts.eo_backoff_max_ms = c->c_opts.eo_backoff_min_ms;
	c->c_gopts.go_max_message = c->c_opts.eo_max_message;
	c->c_gopts.go_ping_interval_ms = c->c_opts.eo_ping_ms;
	c->c_gopts.go_ping_timeout_ms = c->c_opts.eo_connect_ms * 2;
	c->c_gopts.go_xport.xo_connect_timeout_ms = c->c_opts.eo_connect_ms;
	c->c_gopts.go_xport.xo_handshake_timeout_ms = c->c_opts.eo_connect_ms;
	TAILQ_INIT(&c->c_draining);
	TAILQ_INIT(&c->c_queue);
	TAILQ_INIT(&c->c_inflight);
	TAILQ_INIT(&c->c_done);
	TAILQ_INIT(&c->c_leases);
	TAILQ_INIT(&c->c_ldone);
	TAILQ_INIT(&c->c_watches);
	TAILQ_INIT(&c->c_wdone);
	uv_timer_init(loop, &c->c_tick);
	uv_timer_init(loop, &c->c_backoff);
	uv_idle_init(loop, &c->c_idle);
	c->c_tick.data = c->c_backoff.data = c->c_idle.data = c;
	c->c_handles = 3;
	uv_timer_start(&c->c_tick, tick, TICK_MS, TICK_MS);
	conn_start(c);
	*out = c;
	return 0;
}

void
etcd_client_close(struct etcd_client *c, void (*done)(void *arg), void *arg)
{
	struct etcd_req *r, *nr;
	struct etcd_lease *l, *nl;
	struct etcd_watch *w, *nw;
	struct etcd_conn *ec;

	if (c->c_closing)
		return;
	c->c_closing = 1;
	c->c_state = C_CLOSING;
	c->c_done_cb = done;
	c->c_done_arg = arg;
	uv_timer_stop(&c->c_backoff);
	uv_timer_stop(&c->c_tick);
	TAILQ_FOREACH_SAFE(r, &c->c_queue, r_link, nr)
	req_complete(r, GRPC_STATUS_CANCELLED, "client closed");
	TAILQ_FOREACH_SAFE(l, &c->c_leases, l_link, nl)
	lease_end(l, GRPC_STATUS_CANCELLED, "client closed");
	TAILQ_FOREACH_SAFE(w, &c->c_watches, w_link, nw)
	watch_end(w, GRPC_STATUS_CANCELLED, "client closed");
	/* In-flight calls and the streams end through their on_end. */
	TAILQ_FOREACH_SAFE(r, &c->c_inflight, r_link, nr)
	grpc_call_cancel(r->r_call);
	streams_reset(c);
	if ((ec = c->c_conn) != NULL && ec->ec_conn != NULL)
		grpc_conn_close(ec->ec_conn, NCG_ECANCELLED);
	TAILQ_FOREACH(ec, &c->c_draining, ec_link)
	grpc_conn_close(ec->ec_conn, NCG_ECANCELLED);
	client_kick(c);
}

const char *
etcd_client_endpoint(const struct etcd_client *c)
{
	return c->c_epname;
}

unsigned
etcd_client_connects(const struct etcd_client *c)
{
	return c->c_connects;
}
