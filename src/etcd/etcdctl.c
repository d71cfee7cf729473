/*
 * ncgrpc-etcdctl: one etcd operation through libncgrpc_etcd, for the tests
 * of tests/etcd and for looking at a cluster by hand.  Prints one line per
 * result, stable enough for scripts.
 *
 *   ncgrpc-etcdctl [-e ENDPOINTS] [--ca F [--cert F --key F]] [-t MS] CMD ...
 *
 *   put KEY VALUE              "rev N"
 *   get KEY [prefix]           "kv KEY VALUE MOD_REV LEASE" each, "rev N"
 *   del KEY [prefix]           "deleted N rev N"
 *   cas KEY VALUE MOD_REV      "cas ok rev N" or "cas failed mod N"
 *   status                     "member ID NAME URL" each, "leader ID ..."
 *   watch KEY PREFIX(0|1) START_REV COUNT SECONDS
 *                              "put KEY VALUE MOD_REV", "delete KEY
 *                              MOD_REV", "resync REV"; ends after COUNT
 *                              events or SECONDS
 *   lease TTL KEY VALUE SECONDS [revoke]
 *                              "lease ID TTL", puts KEY on it ("put
 *                              ok"), keeps it alive SECONDS from then, revokes
 * it if asked; "lost STATUS MESSAGE" if it is lost bench N                    N
 * puts then N gets in turn; latencies
 *
 * Connection news goes to stderr ("conn up|down ENDPOINT REASON").  Exit 0
 * on success, 1 on an etcd error, 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "err.h"
#include "etcd.h"

static uv_loop_t loop;
static struct etcd_client *cl;
static int exit_code;
static uv_timer_t stop_timer;
static char **args;
static int nargs;

static long count_left;
static struct etcd_lease *lease;
static int lease_revoke;
static uint64_t lease_hold_ms;
static void on_stop(uv_timer_t *t);

static uint64_t bench_n, bench_i, bench_t0;
static double *bench_lat;

static void
usage(void)
{
	fprintf(stderr,
	        "usage: ncgrpc-etcdctl [-e endpoints] [--ca file [--cert "
	        "file --key file]] [-t ms] put|get|del|cas|status|watch|"
	        "lease|bench ...\n");
	exit(2);
}

static void
finish(int code)
{
	exit_code = code;
	if (cl != NULL) {
		etcd_client_close(cl, NULL, NULL);
		cl = NULL;
	}
	if (!uv_is_closing((uv_handle_t *)&stop_timer))
		uv_close((uv_handle_t *)&stop_timer, NULL);
}

static void
print_bytes(const ProtobufCBinaryData *b)
{
	fwrite(b->data, 1, b->len, stdout);
}

static int
check(int status, const char *msg)
{
	if (status == 0)
		return 0;
	printf("error %d %s\n", status, msg);
	finish(1);
	return -1;
}

static void
on_put(struct etcd_client *c, int status, const char *msg,
       const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__PutResponse *r = (const void *)resp;

	(void)c;
	(void)arg;
	if (check(status, msg) == 0) {
		printf("rev %" PRId64 "\n", r->header->revision);
		finish(0);
	}
}

static void
on_get(struct etcd_client *c, int status, const char *msg,
       const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__RangeResponse *r = (const void *)resp;
	size_t i;

	(void)c;
	(void)arg;
	if (check(status, msg) != 0)
		return;
	for (i = 0; i < r->n_kvs; i++) {
		printf("kv ");
		print_bytes(&r->kvs[i]->key);
		printf(" ");
		print_bytes(&r->kvs[i]->value);
		printf(" %" PRId64 " %" PRId64 "\n", r->kvs[i]->mod_revision,
		       r->kvs[i]->lease);
	}
	printf("rev %" PRId64 "\n", r->header->revision);
	finish(0);
}

static void
on_del(struct etcd_client *c, int status, const char *msg,
       const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__DeleteRangeResponse *r = (const void *)resp;

	(void)c;
	(void)arg;
	if (check(status, msg) == 0) {
		printf("deleted %" PRId64 " rev %" PRId64 "\n", r->deleted,
		       r->header->revision);
		finish(0);
	}
}

static void
on_cas(struct etcd_client *c, int status, const char *msg,
       const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__TxnResponse *r = (const void *)resp;
	const Etcdserverpb__RangeResponse *rr;

	(void)c;
	(void)arg;
	if (check(status, msg) != 0)
		return;
	if (r->succeeded)
		printf("cas ok rev %" PRId64 "\n", r->header->revision);
	else {
		rr =
		    r->n_responses > 0 ? r->responses[0]->response_range : NULL;
		printf("cas failed mod %" PRId64 "\n",
		       rr != NULL && rr->n_kvs > 0 ? rr->kvs[0]->mod_revision
		                                   : 0);
	}
	finish(0);
}

static void
on_status(struct etcd_client *c, int status, const char *msg,
          const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__StatusResponse *r = (const void *)resp;

	(void)c;
	(void)arg;
	if (check(status, msg) != 0)
		return;
	printf("leader %" PRIx64 " member %" PRIx64 " term %" PRIu64
	       " revision %" PRId64 " dbsize %" PRId64 " version %s\n",
	       r->leader, r->header->member_id, r->raftterm,
	       r->header->revision, r->dbsize, r->version);
	finish(0);
}

static void
on_members(struct etcd_client *c, int status, const char *msg,
           const ProtobufCMessage *resp, void *arg)
{
	const Etcdserverpb__MemberListResponse *r = (const void *)resp;
	Etcdserverpb__StatusRequest sr = ETCDSERVERPB__STATUS_REQUEST__INIT;
	size_t i;

	(void)arg;
	if (check(status, msg) != 0)
		return;
	for (i = 0; i < r->n_members; i++)
		printf("member %" PRIx64 " %s %s\n", r->members[i]->id,
		       *r->members[i]->name != '\0' ? r->members[i]->name : "-",
		       r->members[i]->n_clienturls > 0
		           ? r->members[i]->clienturls[0]
		           : "-");
	if (etcd_call(c, ETCD_STATUS, &sr.base, on_status, NULL) != 0)
		finish(1);
}

static void
on_events(struct etcd_watch *w, Mvccpb__Event *const *evs, size_t n,
          int64_t revision, void *arg)
{
	size_t i;

	(void)revision;
	(void)arg;
	for (i = 0; i < n; i++) {
		printf(evs[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE
		           ? "delete "
		           : "put ");
		print_bytes(&evs[i]->kv->key);
		if (evs[i]->type != MVCCPB__EVENT__EVENT_TYPE__DELETE) {
			printf(" ");
			print_bytes(&evs[i]->kv->value);
		}
		printf(" %" PRId64 "\n", evs[i]->kv->mod_revision);
		if (--count_left == 0) {
			etcd_watch_cancel(w);
			return;
		}
	}
}

static void
on_resync(struct etcd_watch *w, int64_t revision, void *arg)
{
	(void)w;
	(void)arg;
	printf("resync %" PRId64 "\n", revision);
}

static void
on_watch_end(struct etcd_watch *w, int status, const char *msg, void *arg)
{
	(void)w;
	(void)arg;
	if (status == 1 /* CANCELLED */ && count_left <= 0)
		finish(0);
	else if (cl != NULL) {
		printf("error %d %s\n", status, msg);
		finish(1);
	}
}

static const struct etcd_watch_ops watch_ops = {
    .on_events = on_events,
    .on_resync = on_resync,
    .on_end = on_watch_end,
};

static void
on_lease_put(struct etcd_client *c, int status, const char *msg,
             const ProtobufCMessage *resp, void *arg)
{
	(void)c;
	(void)resp;
	(void)arg;
	if (check(status, msg) != 0)
		return;
	printf("put ok\n");
	/* Held from now on. */
	uv_timer_start(&stop_timer, on_stop, lease_hold_ms, 0);
}

static void
on_granted(struct etcd_lease *l, int64_t id, int64_t ttl, void *arg)
{
	(void)l;
	(void)arg;
	printf("lease %" PRIx64 " %" PRId64 "\n", id, ttl);
	if (etcd_put(cl, args[2], strlen(args[2]), args[3], strlen(args[3]), id,
	             on_lease_put, NULL) != 0)
		finish(1);
}

static void
on_lost(struct etcd_lease *l, int status, const char *msg, void *arg)
{
	(void)l;
	(void)arg;
	lease = NULL;
	if (cl == NULL)
		return;
	printf("lost %d %s\n", status, msg);
	finish(lease_revoke && status == 0 ? 0 : 1);
}

static const struct etcd_lease_ops lease_ops = {
    .on_granted = on_granted,
    .on_lost = on_lost,
};

static void
on_stop(uv_timer_t *t)
{
	(void)t;
	if (strcmp(args[0], "lease") == 0 && lease != NULL && lease_revoke) {
		etcd_lease_revoke(lease);
		return;
	}
	if (strcmp(args[0], "lease") == 0)
		printf("held\n");
	else
		printf("timeout\n");
	finish(strcmp(args[0], "lease") == 0 ? 0 : 1);
}

static void bench_next(void);

static void
on_bench(struct etcd_client *c, int status, const char *msg,
         const ProtobufCMessage *resp, void *arg)
{
	(void)c;
	(void)resp;
	(void)arg;
	if (check(status, msg) != 0)
		return;
	bench_lat[bench_i++] = (double)(uv_hrtime() - bench_t0) / 1e6;
	bench_next();
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
bench_report(const char *what, double *v, uint64_t n)
{
	double sum = 0;
	uint64_t i;

	for (i = 0; i < n; i++)
		sum += v[i];
	qsort(v, n, sizeof(*v), cmp_double);
	printf("%s n %" PRIu64 " mean_ms %.3f p50_ms %.3f p99_ms %.3f\n", what,
	       n, sum / (double)n, v[n / 2], v[n * 99 / 100]);
}

static void
bench_next(void)
{
	char key[32];
	int rc;

	if (bench_i == 2 * bench_n) {
		bench_report("put", bench_lat, bench_n);
		bench_report("get", bench_lat + bench_n, bench_n);
		finish(0);
		return;
	}
	snprintf(key, sizeof(key), "/bench/%" PRIu64, bench_i % bench_n);
	bench_t0 = uv_hrtime();
	if (bench_i < bench_n)
		rc = etcd_put(cl, key, strlen(key), "v", 1, 0, on_bench, NULL);
	else
		rc = etcd_get(cl, key, strlen(key), 0, on_bench, NULL);
	if (rc != 0)
		finish(1);
}

static void
on_conn(struct etcd_client *c, int up, const char *ep, const char *reason,
        void *arg)
{
	(void)c;
	(void)arg;
	fprintf(stderr, "conn %s %s %s\n", up ? "up" : "down", ep, reason);
}

static int
start(void)
{
	const char *cmd = args[0];
	Etcdserverpb__MemberListRequest ml =
	    ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
	struct etcd_watch *w;
	long long v;

#define NEED(n)                                                                \
	if (nargs < (n))                                                       \
		usage();
	if (strcmp(cmd, "put") == 0) {
		NEED(3);
		return etcd_put(cl, args[1], strlen(args[1]), args[2],
		                strlen(args[2]), 0, on_put, NULL);
	} else if (strcmp(cmd, "get") == 0) {
		NEED(2);
		return etcd_get(cl, args[1], strlen(args[1]), nargs > 2, on_get,
		                NULL);
	} else if (strcmp(cmd, "del") == 0) {
		NEED(2);
		return etcd_delete(cl, args[1], strlen(args[1]), nargs > 2,
		                   on_del, NULL);
	} else if (strcmp(cmd, "cas") == 0) {
		NEED(4);
		return etcd_cas(cl, args[1], strlen(args[1]), args[2],
		                strlen(args[2]), 0, atoll(args[3]), on_cas,
		                NULL);
	} else if (strcmp(cmd, "status") == 0) {
		return etcd_call(cl, ETCD_MEMBER_LIST, &ml.base, on_members,
		                 NULL);
	} else if (strcmp(cmd, "watch") == 0) {
		NEED(6);
		count_left = atol(args[4]);
		uv_timer_start(&stop_timer, on_stop,
		               (uint64_t)atol(args[5]) * 1000, 0);
		return etcd_watch_start(cl, args[1], strlen(args[1]),
		                        atoi(args[2]), atoll(args[3]),
		                        &watch_ops, NULL, &w);
	} else if (strcmp(cmd, "lease") == 0) {
		NEED(5);
		lease_revoke = nargs > 5 && strcmp(args[5], "revoke") == 0;
		lease_hold_ms = (uint64_t)atol(args[4]) * 1000;
		return etcd_lease_grant(cl, atoll(args[1]), &lease_ops, NULL,
		                        &lease);
	} else if (strcmp(cmd, "bench") == 0) {
		NEED(2);
		v = atoll(args[1]);
		if (v < 1 || v > 1000000)
			usage();
		bench_n = (uint64_t)v;
		if ((bench_lat = calloc(2 * bench_n, sizeof(double))) == NULL)
			return -ENOMEM;
		bench_next();
		return 0;
	}
#undef NEED
	usage();
	return -EINVAL;
}

int
main(int argc, char **argv)
{
	struct etcd_endpoint eps[ETCD_MAX_ENDPOINTS];
	struct etcd_opts o = {0};
	const char *list = "127.0.0.1:2379";
	char err[256];
	size_t n;
	int i, tls, rc;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "-e") == 0)
			list = argv[++i];
		else if (strcmp(argv[i], "--ca") == 0)
			o.eo_ca_file = argv[++i];
		else if (strcmp(argv[i], "--cert") == 0)
			o.eo_cert_file = argv[++i];
		else if (strcmp(argv[i], "--key") == 0)
			o.eo_key_file = argv[++i];
		else if (strcmp(argv[i], "-t") == 0)
			o.eo_timeout_ms = (unsigned)atoi(argv[++i]);
		else
			usage();
	}
	if (i >= argc)
		usage();
	args = argv + i;
	nargs = argc - i;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((rc = etcd_endpoints_parse(list, eps, ETCD_MAX_ENDPOINTS, &n,
	                               &tls)) != 0) {
		fprintf(stderr, "ncgrpc-etcdctl: endpoints \"%s\": %s\n", list,
		        ncg_strerror(rc));
		return 2;
	}
	if (tls && o.eo_ca_file == NULL) {
		fprintf(stderr, "ncgrpc-etcdctl: https needs --ca\n");
		return 2;
	}
	o.eo_on_conn = on_conn;
	uv_loop_init(&loop);
	uv_timer_init(&loop, &stop_timer);
	if ((rc = etcd_client_new(&loop, eps, n, &o, &cl, err, sizeof(err))) !=
	    0) {
		fprintf(stderr, "ncgrpc-etcdctl: %s\n", err);
		return 2;
	}
	if ((rc = start()) != 0) {
		fprintf(stderr, "ncgrpc-etcdctl: %s\n", ncg_strerror(rc));
		finish(2);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	free(bench_lat);
	if (uv_loop_close(&loop) != 0) {
		fprintf(stderr, "ncgrpc-etcdctl: handles left open\n");
		return 3;
	}
	return exit_code;
}
