/*
 * src/etcd/etcd.c without a server: endpoint lists, prefix ends, and the
 * watch response path fed canned WatchResponses (the .c is included to
 * reach its static functions, as h2o's tests do).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../src/etcd/etcd.c"

static void
test_endpoints(void **state)
{
	struct etcd_endpoint eps[3];
	size_t n;
	int tls;

	(void)state;
	assert_int_equal(etcd_endpoints_parse("127.0.0.1:2379, [::1]:23 "
	                                      "h",
	                                      eps, 3, &n, &tls),
	                 0);
	assert_int_equal(n, 3);
	assert_int_equal(tls, 0);
	assert_string_equal(eps[0].ee_host, "127.0.0.1");
	assert_int_equal(eps[1].ee_port, 23);
	assert_string_equal(eps[1].ee_host, "::1");
	assert_int_equal(eps[2].ee_port, ETCD_DEFAULT_PORT);
	assert_int_equal(
	    etcd_endpoints_parse("https://a:1/,https://b:2", eps, 3, &n, &tls),
	    0);
	assert_int_equal(tls, 1);
	assert_int_equal(n, 2);
	assert_int_equal(
	    etcd_endpoints_parse("http://a:1,https://b:2", eps, 3, &n, &tls),
	    -EINVAL);
	assert_int_equal(etcd_endpoints_parse(" , ", eps, 3, &n, &tls),
	                 -EINVAL);
	assert_int_equal(etcd_endpoints_parse("a,b,c,d", eps, 3, &n, &tls),
	                 -E2BIG);
	assert_int_equal(etcd_endpoints_parse("a:0", eps, 3, &n, &tls),
	                 -EINVAL);
	assert_int_equal(etcd_endpoints_parse("a:x", eps, 3, &n, &tls),
	                 -EINVAL);
}

static void
test_prefix_end(void **state)
{
	uint8_t out[8];
	const uint8_t k1[] = {'a', 'b'}, k2[] = {'a', 0xff}, k3[] = {0xff};

	(void)state;
	assert_int_equal(etcd_prefix_end(k1, 2, out), 2);
	assert_memory_equal(out, "ac", 2);
	assert_int_equal(etcd_prefix_end(k2, 2, out), 1);
	assert_int_equal(out[0], 'b');
	assert_int_equal(etcd_prefix_end(k3, 1, out), 1);
	assert_int_equal(out[0], 0);
}

static int64_t seen[16];
static size_t nseen;

static void
t_events(struct etcd_watch *w, Mvccpb__Event *const *evs, size_t n, int64_t rev,
         void *arg)
{
	size_t i;

	(void)w;
	(void)rev;
	(void)arg;
	for (i = 0; i < n && nseen < 16; i++)
		seen[nseen++] = evs[i]->kv->mod_revision;
}

static const struct etcd_watch_ops t_ops = {.on_events = t_events};

/* Feeds a response with events at revs[0..n). */
static void
feed(struct etcd_client *c, int64_t id, int created, int canceled,
     const int64_t *revs, size_t n)
{
	Etcdserverpb__WatchResponse rs = ETCDSERVERPB__WATCH_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	Mvccpb__Event ev[4], *evp[4];
	Mvccpb__KeyValue kv[4];
	static char gone[] = "gone";
	size_t i;

	h.revision = 10;
	rs.header = &h;
	rs.watch_id = id;
	rs.created = created;
	rs.canceled = canceled;
	rs.cancel_reason = gone;
	for (i = 0; i < n; i++) {
		mvccpb__event__init(&ev[i]);
		mvccpb__key_value__init(&kv[i]);
		kv[i].mod_revision = revs[i];
		ev[i].kv = &kv[i];
		evp[i] = &ev[i];
	}
	rs.events = evp;
	rs.n_events = n;
	watch_response(c, &rs);
}

static void
test_watch_response(void **state)
{
	struct etcd_client c;
	struct etcd_watch *w;
	uv_loop_t loop;
	const int64_t a[] = {11, 12}, b[] = {12, 13}, d[] = {12};

	(void)state;
	uv_loop_init(&loop);
	memset(&c, 0, sizeof(c));
	c.c_loop = &loop;
	c.c_opts.eo_max_watches = 4;
	TAILQ_INIT(&c.c_watches);
	TAILQ_INIT(&c.c_wdone);
	assert_int_equal(etcd_watch_start(&c, "k", 1, 1, 0, &t_ops, NULL, &w),
	                 0);
	w->w_state = W_CREATING; /* as if sent */
	w->w_id = 7;
	feed(&c, 7, 1, 0, NULL, 0); /* created at revision 10 */
	assert_int_equal(w->w_state, W_ACTIVE);
	assert_int_equal(etcd_watch_next_rev(w), 11);
	feed(&c, 7, 0, 0, a, 2);
	feed(&c, 8, 0, 0, b, 2); /* another watch's: ignored */
	feed(&c, 7, 0, 0, d, 1); /* replayed after a restart: dropped */
	feed(&c, 7, 0, 0, b, 2); /* 12 dropped, 13 delivered */
	assert_int_equal(nseen, 3);
	assert_int_equal(seen[0], 11);
	assert_int_equal(seen[1], 12);
	assert_int_equal(seen[2], 13);
	assert_int_equal(etcd_watch_next_rev(w), 14);
	feed(&c, 7, 0, 1, NULL, 0); /* etcd cancelled it */
	assert_int_equal(w->w_state, W_DONE);
	assert_int_equal(w->w_status, GRPC_STATUS_ABORTED);
	assert_string_equal(w->w_msg, "gone");
	assert_ptr_equal(TAILQ_FIRST(&c.c_wdone), w);
	TAILQ_REMOVE(&c.c_wdone, w, w_link);
	free(w->w_msg);
	free(w->w_key);
	free(w->w_end);
	free(w);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_endpoints),
	    cmocka_unit_test(test_prefix_end),
	    cmocka_unit_test(test_watch_response),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
