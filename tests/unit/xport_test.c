/*
 * xport.c over real sockets: TCP on 127.0.0.1 and a Unix socket in a
 * temporary directory, cleartext and TLS (a self-signed certificate made by
 * certgen.c).  Both ends are xports of one loop, unless a test needs a
 * silent or absent peer, which is a bare libuv handle.
 *
 * Every test runs under a watchdog, closes every handle and asserts
 * uv_loop_close() == 0; no callback may run inside an xport_* call made by
 * the test (the transport's contract, libuv's rule).
 */
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <uv.h>

#include "testutil.h"

#include "common/err.h"
#include "common/tls.h"
#include "common/xport.h"
#include "nms/certgen.h"

#define WATCHDOG_MS 10000
#define TICK_MS     5
#define CHUNK       (64 * 1024)

/* One end of a connection. */
struct side {
	struct env *s_env;
	const char *s_name;
	struct xport *s_x;
	int s_ready;
	int s_closed;
	int s_err;
	char s_errmsg[400];
	int s_drains;
	size_t s_queued_at_drain;
	size_t s_got;  /* bytes received */
	size_t s_bad;  /* bytes that differed from the pattern */
	size_t s_sent; /* bytes written */
};

struct env {
	struct tloop e_tl;
	int e_in_call;   /* inside an xport_* call of the test */
	int e_reentered; /* callbacks that ran inside one */

	union {
		uv_handle_t h;
		uv_stream_t s;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} e_lis;
	int e_lis_open;
	uint16_t e_port;
	char e_dir[64];
	char e_path[128];
	char e_cert[128];
	char e_key[128];

	struct tls_ctx *e_srv_tls; /* used by the listener when set */
	struct xport_opts e_srv_opts;
	int e_accepts;
	int e_accept_rc;
	int e_ready_in_accept; /* xc_ready ran before xport_accept() returned */
	int e_raw_accept;      /* accept into e_raw, a silent peer */
	uv_tcp_t e_raw;
	int e_raw_open;

	struct side e_cli;
	struct side e_srv;
};

#define CALL(e, stmt)                                                          \
	do {                                                                   \
		(e)->e_in_call = 1;                                            \
		stmt;                                                          \
		(e)->e_in_call = 0;                                            \
	} while (0)

static uint8_t
pattern(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/* The transport's callbacks, the same for both ends. */

static void
on_ready(struct xport *x, void *arg)
{
	struct side *s = arg;

	assert_ptr_equal(x, s->s_x);
	if (s->s_env->e_in_call)
		s->s_env->e_reentered++;
	s->s_ready++;
}

static void
on_data(struct xport *x, const uint8_t *data, size_t len, void *arg)
{
	struct side *s = arg;
	size_t i;

	(void)x;
	if (s->s_env->e_in_call)
		s->s_env->e_reentered++;
	for (i = 0; i < len; i++)
		if (data[i] != pattern(s->s_got + i))
			s->s_bad++;
	s->s_got += len;
}

static void
on_drain(struct xport *x, void *arg)
{
	struct side *s = arg;

	if (s->s_env->e_in_call)
		s->s_env->e_reentered++;
	s->s_drains++;
	s->s_queued_at_drain = xport_queued(x);
}

static void
on_closed(struct xport *x, int err, void *arg)
{
	struct side *s = arg;

	if (s->s_env->e_in_call)
		s->s_env->e_reentered++;
	s->s_closed++;
	s->s_err = err;
	snprintf(s->s_errmsg, sizeof(s->s_errmsg), "%s", xport_errmsg(x));
	s->s_x = NULL;
}

static const struct xport_cb side_cb = {
    .xc_ready = on_ready,
    .xc_data = on_data,
    .xc_drain = on_drain,
    .xc_closed = on_closed,
};

/* Writes n bytes of the pattern, as far as it goes. */
static void
side_write(struct side *s, size_t n)
{
	uint8_t buf[CHUNK];
	size_t i, k;

	while (n > 0) {
		k = n < sizeof(buf) ? n : sizeof(buf);
		for (i = 0; i < k; i++)
			buf[i] = pattern(s->s_sent + i);
		CALL(s->s_env,
		     assert_int_equal(xport_write(s->s_x, buf, k), 0));
		s->s_sent += k;
		n -= k;
	}
}

static void
on_connection(uv_stream_t *lis, int status)
{
	struct env *e = lis->data;
	struct xport *x = NULL;

	assert_int_equal(status, 0);
	e->e_accepts++;
	if (e->e_raw_accept) {
		uv_tcp_init(&e->e_tl.tl_loop, &e->e_raw);
		e->e_raw_open = 1;
		assert_int_equal(uv_accept(lis, (uv_stream_t *)&e->e_raw), 0);
		return;
	}
	assert_null(e->e_srv.s_x);
	e->e_srv.s_x = (struct xport *)&e->e_srv; /* not NULL during the call */
	CALL(e, e->e_accept_rc = xport_accept(lis, e->e_srv_tls, &e->e_srv_opts,
	                                      &side_cb, &e->e_srv, &x));
	e->e_srv.s_x = e->e_accept_rc == 0 ? x : NULL;
	e->e_ready_in_accept += e->e_srv.s_ready;
}

static void
env_init(struct env *e)
{
	static const char *const names[] = {"127.0.0.1"};
	char err[256];

	memset(e, 0, sizeof(*e));
	tloop_init(&e->e_tl, WATCHDOG_MS, TICK_MS);
	e->e_cli.s_env = e->e_srv.s_env = e;
	e->e_cli.s_name = "client";
	e->e_srv.s_name = "server";
	tdir_make(e->e_dir, sizeof(e->e_dir), "xport_test");
	snprintf(e->e_path, sizeof(e->e_path), "%s/sock", e->e_dir);
	snprintf(e->e_cert, sizeof(e->e_cert), "%s/cert.pem", e->e_dir);
	snprintf(e->e_key, sizeof(e->e_key), "%s/key.pem", e->e_dir);
	assert_int_equal(certgen_selfsigned(names, 1, 1, e->e_cert, e->e_key,
	                                    err, sizeof(err)),
	                 0);
}

/* Listens on 127.0.0.1, on a port of the kernel's choosing. */
static void
env_listen_tcp(struct env *e, int tls)
{
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char err[256];

	if (tls)
		assert_int_equal(tls_ctx_server_new(&e->e_srv_tls, e->e_cert,
		                                    e->e_key, err, sizeof(err)),
		                 0);
	uv_ip4_addr("127.0.0.1", 0, &sin);
	assert_int_equal(uv_tcp_init(&e->e_tl.tl_loop, &e->e_lis.tcp), 0);
	e->e_lis_open = 1;
	e->e_lis.h.data = e;
	assert_int_equal(
	    uv_tcp_bind(&e->e_lis.tcp, (const struct sockaddr *)&sin, 0), 0);
	assert_int_equal(uv_listen(&e->e_lis.s, 8, on_connection), 0);
	assert_int_equal(
	    uv_tcp_getsockname(&e->e_lis.tcp, (struct sockaddr *)&ss, &len), 0);
	e->e_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void
env_listen_unix(struct env *e)
{
	assert_int_equal(uv_pipe_init(&e->e_tl.tl_loop, &e->e_lis.pipe, 0), 0);
	e->e_lis_open = 1;
	e->e_lis.h.data = e;
	assert_int_equal(uv_pipe_bind(&e->e_lis.pipe, e->e_path), 0);
	assert_int_equal(uv_listen(&e->e_lis.s, 8, on_connection), 0);
}

static struct tls_ctx *
client_tls(struct env *e)
{
	struct tls_ctx *ctx;
	char err[256];

	assert_int_equal(
	    tls_ctx_client_new_file(&ctx, e->e_cert, err, sizeof(err)), 0);
	return ctx;
}

static void
env_connect(struct env *e, const char *host, struct tls_ctx *ctx,
            const struct xport_opts *o)
{
	int rc;

	CALL(e, rc = xport_connect(&e->e_tl.tl_loop, host, e->e_port, ctx, o,
	                           &side_cb, &e->e_cli, &e->e_cli.s_x));
	assert_int_equal(rc, 0);
	assert_int_equal(e->e_cli.s_ready, 0);
}

/* Both ends up, as a cleartext or TLS pair. */
static void
env_pair_tcp(struct env *e, int tls)
{
	struct tls_ctx *ctx = NULL;

	env_listen_tcp(e, tls);
	if (tls)
		ctx = client_tls(e);
	env_connect(e, "127.0.0.1", ctx, NULL);
	if (ctx != NULL)
		tls_ctx_free(ctx);
	RUN_UNTIL(&e->e_tl, e->e_cli.s_ready == 1 && e->e_srv.s_ready == 1);
	assert_int_equal(e->e_accept_rc, 0);
}

static void
side_close(struct side *s, int err)
{
	if (s->s_x != NULL)
		CALL(s->s_env, xport_close(s->s_x, err));
}

static void
on_raw_closed(uv_handle_t *h)
{
	(void)h;
}

static void
env_done(struct env *e)
{
	side_close(&e->e_cli, 0);
	side_close(&e->e_srv, 0);
	RUN_UNTIL(&e->e_tl, e->e_cli.s_x == NULL && e->e_srv.s_x == NULL);
	if (e->e_lis_open)
		uv_close(&e->e_lis.h, NULL);
	if (e->e_raw_open)
		uv_close((uv_handle_t *)&e->e_raw, on_raw_closed);
	if (e->e_srv_tls != NULL)
		tls_ctx_free(e->e_srv_tls);
	tloop_done(&e->e_tl);
	assert_int_equal(e->e_reentered, 0);
	assert_true(e->e_cli.s_closed <= 1 && e->e_srv.s_closed <= 1);
	tdir_remove(e->e_dir);
}

/* Tests */

/*
 * Cleartext TCP: ready from the loop (not inside xport_accept()), both
 * peers' addresses, data both ways, an orderly close seen as EOF.
 */
static void
test_tcp_cleartext(void **state)
{
	const struct peer *pe;
	char text[64];
	struct env e;

	(void)state;
	env_init(&e);
	env_listen_tcp(&e, 0);
	env_connect(&e, "127.0.0.1", NULL, NULL);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_ready == 1 && e.e_srv.s_ready == 1);
	assert_int_equal(e.e_accepts, 1);
	assert_int_equal(e.e_accept_rc, 0);
	assert_int_equal(e.e_ready_in_accept, 0);

	pe = xport_peer_addr(e.e_cli.s_x);
	assert_string_equal(pe->pe_host, "127.0.0.1");
	assert_int_equal(pe->pe_port, e.e_port);
	snprintf(text, sizeof(text), "127.0.0.1:%u", e.e_port);
	assert_string_equal(pe->pe_text, text);
	assert_string_equal(xport_peer(e.e_cli.s_x), text);
	pe = xport_peer_addr(e.e_srv.s_x);
	assert_string_equal(pe->pe_host, "127.0.0.1");
	assert_int_not_equal(pe->pe_port, 0);
	assert_int_not_equal(pe->pe_port, e.e_port);
	{
		uid_t uid;

		assert_int_equal(xport_peer_uid(e.e_srv.s_x, &uid), -ENOENT);
	}

	side_write(&e.e_cli, 100000);
	side_write(&e.e_srv, 3000);
	RUN_UNTIL(&e.e_tl, e.e_srv.s_got == 100000 && e.e_cli.s_got == 3000);
	assert_int_equal(e.e_srv.s_bad + e.e_cli.s_bad, 0);
	RUN_UNTIL(&e.e_tl,
	          e.e_cli.s_drains > 0 && e.e_cli.s_queued_at_drain == 0);

	side_close(&e.e_cli, 0);
	assert_int_equal(e.e_cli.s_closed, 0);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1 && e.e_srv.s_closed == 1);
	assert_int_equal(e.e_cli.s_err, 0);
	assert_int_equal(e.e_srv.s_err, NCG_ECLOSED);
	assert_non_null(strstr(e.e_srv.s_errmsg, "closed the connection"));
	env_done(&e);
}

/* A Unix socket: the peer is "unix", with its uid; close with an error. */
static void
test_unix(void **state)
{
	struct env e;
	uid_t uid = (uid_t)-1;
	int rc;

	(void)state;
	env_init(&e);
	env_listen_unix(&e);
	CALL(&e, rc = xport_connect_unix(&e.e_tl.tl_loop, e.e_path, &side_cb,
	                                 &e.e_cli, &e.e_cli.s_x));
	assert_int_equal(rc, 0);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_ready == 1 && e.e_srv.s_ready == 1);
	assert_string_equal(xport_peer(e.e_srv.s_x), "unix");
	assert_string_equal(xport_peer_addr(e.e_cli.s_x)->pe_host, "unix");
	assert_int_equal(xport_peer_addr(e.e_cli.s_x)->pe_port, 0);
	assert_int_equal(xport_peer_uid(e.e_srv.s_x, &uid), 0);
	assert_int_equal(uid, getuid());
	assert_int_equal(xport_peer_uid(e.e_cli.s_x, &uid), -ENOENT);

	side_write(&e.e_cli, 5000);
	RUN_UNTIL(&e.e_tl, e.e_srv.s_got == 5000);
	side_close(&e.e_srv, NCG_EH2);
	side_close(&e.e_srv, 0); /* again: harmless */
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1 && e.e_srv.s_closed == 1);
	assert_int_equal(e.e_srv.s_err, NCG_EH2);
	/* The closer's own error comes with no text of ours. */
	assert_string_equal(e.e_srv.s_errmsg, "");
	assert_int_equal(e.e_cli.s_err, NCG_ECLOSED);
	env_done(&e);
}

/* A Unix socket nobody listens on: a clear error, from the loop. */
static void
test_unix_absent(void **state)
{
	struct env e;
	int rc;

	(void)state;
	env_init(&e);
	CALL(&e, rc = xport_connect_unix(&e.e_tl.tl_loop, e.e_path, &side_cb,
	                                 &e.e_cli, &e.e_cli.s_x));
	assert_int_equal(rc, 0);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1);
	assert_int_equal(e.e_cli.s_ready, 0);
	assert_int_equal(e.e_cli.s_err, -ENOENT);
	assert_non_null(strstr(e.e_cli.s_errmsg, e.e_path));
	env_done(&e);
}

/* TLS: handshake with the certgen certificate, 1 MiB each way, close. */
static void
test_tls(void **state)
{
	struct env e;

	(void)state;
	env_init(&e);
	env_pair_tcp(&e, 1);
	side_write(&e.e_cli, 1 << 20);
	side_write(&e.e_srv, 1 << 20);
	RUN_UNTIL(&e.e_tl,
	          e.e_srv.s_got == 1 << 20 && e.e_cli.s_got == 1 << 20);
	assert_int_equal(e.e_srv.s_bad + e.e_cli.s_bad, 0);
	side_close(&e.e_cli, 0); /* close_notify */
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1 && e.e_srv.s_closed == 1);
	assert_int_equal(e.e_cli.s_err, 0);
	assert_int_equal(e.e_srv.s_err, NCG_ECLOSED);
	env_done(&e);
}

/* A certificate that does not name the host dialled fails the client. */
static void
test_tls_wrong_name(void **state)
{
	struct tls_ctx *ctx;
	struct env e;

	(void)state;
	env_init(&e);
	env_listen_tcp(&e, 1);
	ctx = client_tls(&e);
	env_connect(&e, "localhost", ctx, NULL);
	tls_ctx_free(ctx);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1 && e.e_srv.s_closed == 1);
	assert_int_equal(e.e_cli.s_ready, 0);
	assert_int_equal(e.e_srv.s_ready, 0);
	assert_int_equal(e.e_cli.s_err, NCG_ETLS_NAME);
	assert_non_null(strstr(e.e_cli.s_errmsg, "localhost"));
	assert_int_not_equal(e.e_srv.s_err, 0);
	env_done(&e);
}

/*
 * The name "two.test" has two addresses, 127.0.0.2 and then 127.0.0.1, at
 * the port asked for: libuv calls getaddrinfo() from its threadpool, and
 * this program's definition comes before the C library's, to which every
 * other name goes.  The list is ours to free (marked by ai_canonname).
 */
static char two_test[] = "two.test";

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                      struct addrinfo **);
typedef void (*fai_fn)(struct addrinfo *);

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
            struct addrinfo **res)
{
	static const char *const addrs[] = {"127.0.0.2", "127.0.0.1"};
	struct addrinfo *head = NULL, **tail = &head;
	struct sockaddr_in *sin;
	gai_fn real;
	size_t i;

	if (node == NULL || strcmp(node, two_test) != 0) {
		*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
		return real(node, service, hints, res);
	}
	/* A name, not an address literal, as the C library would say. */
	if (hints != NULL && (hints->ai_flags & AI_NUMERICHOST))
		return EAI_NONAME;
	for (i = 0; i < 2; i++) {
		*tail = calloc(1, sizeof(**tail) + sizeof(*sin));
		if (*tail == NULL)
			return EAI_MEMORY;
		sin = (struct sockaddr_in *)(void *)(*tail + 1);
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)atoi(service));
		inet_pton(AF_INET, addrs[i], &sin->sin_addr);
		(*tail)->ai_family = AF_INET;
		(*tail)->ai_socktype = SOCK_STREAM;
		(*tail)->ai_addrlen = sizeof(*sin);
		(*tail)->ai_addr = (struct sockaddr *)sin;
		(*tail)->ai_canonname = two_test;
		tail = &(*tail)->ai_next;
	}
	*res = head;
	return 0;
}

void
freeaddrinfo(struct addrinfo *ai)
{
	struct addrinfo *next;
	fai_fn real;

	if (ai == NULL || ai->ai_canonname != two_test) {
		*(void **)&real = dlsym(RTLD_NEXT, "freeaddrinfo");
		real(ai);
		return;
	}
	for (; ai != NULL; ai = next) {
		next = ai->ai_next;
		free(ai);
	}
}

/*
 * An address that never answers is given up after the connect timeout,
 * and the next one is tried: the timeout closes the attempt while its
 * connect is pending, and libuv then reports that connect as cancelled,
 * which must not start another attempt on the handle being closed.
 */
static void
test_silent_address_then_next(void **state)
{
	struct xport_opts o = {.xo_connect_timeout_ms = 200};
	struct sockaddr_in sin;
	int silent, filler;
	struct env e;
	uint64_t t0;

	(void)state;
	env_init(&e);
	env_listen_tcp(&e, 0);
	/* 127.0.0.2, the same port: a full accept queue drops every SYN. */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(e.e_port);
	inet_pton(AF_INET, "127.0.0.2", &sin.sin_addr);
	silent = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(silent >= 0 && filler >= 0);
	assert_int_equal(bind(silent, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(silent, 0), 0);
	assert_int_equal(connect(filler, (struct sockaddr *)&sin, sizeof(sin)),
	                 0);
	t0 = uv_now(&e.e_tl.tl_loop);
	env_connect(&e, two_test, NULL, &o);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_ready == 1 || e.e_cli.s_closed == 1);
	assert_int_equal(e.e_cli.s_closed, 0);
	assert_int_equal(e.e_cli.s_ready, 1);
	assert_true(uv_now(&e.e_tl.tl_loop) - t0 >= 190);
	RUN_UNTIL(&e.e_tl, e.e_srv.s_ready == 1);
	close(filler);
	close(silent);
	env_done(&e);
}

/*
 * An address literal is connected without a lookup: with every thread of
 * libuv's pool busy, a lookup would wait for them, and the agent, whose
 * only use of the pool it was, would start its threads at all.
 */
#define BLOCKERS 128

static uv_sem_t blocker_sem;

static void
blocker_work(uv_work_t *w)
{
	(void)w;
	uv_sem_wait(&blocker_sem);
}

static void
blocker_done(uv_work_t *w, int status)
{
	int *left = w->data;

	assert_int_equal(status, 0);
	(*left)--;
}

static void
test_literal_no_lookup(void **state)
{
	static uv_work_t w[BLOCKERS];
	struct env e;
	int i, left = BLOCKERS;

	(void)state;
	env_init(&e);
	env_listen_tcp(&e, 0);
	assert_int_equal(uv_sem_init(&blocker_sem, 0), 0);
	for (i = 0; i < BLOCKERS; i++) {
		w[i].data = &left;
		assert_int_equal(uv_queue_work(&e.e_tl.tl_loop, &w[i],
		                               blocker_work, blocker_done),
		                 0);
	}
	env_connect(&e, "127.0.0.1", NULL, NULL);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_ready == 1 || e.e_cli.s_closed == 1);
	assert_int_equal(e.e_cli.s_ready, 1);
	RUN_UNTIL(&e.e_tl, e.e_srv.s_ready == 1);
	for (i = 0; i < BLOCKERS; i++)
		uv_sem_post(&blocker_sem);
	RUN_UNTIL(&e.e_tl, left == 0);
	uv_sem_destroy(&blocker_sem);
	env_done(&e);
}

/* A TLS client whose server never answers gives up after the timeout. */
static void
test_tls_handshake_timeout_client(void **state)
{
	struct xport_opts o = {.xo_handshake_timeout_ms = 100};
	struct tls_ctx *ctx;
	struct env e;
	uint64_t t0;

	(void)state;
	env_init(&e);
	e.e_raw_accept = 1;
	env_listen_tcp(&e, 0);
	ctx = client_tls(&e);
	t0 = uv_now(&e.e_tl.tl_loop);
	env_connect(&e, "127.0.0.1", ctx, &o);
	tls_ctx_free(ctx);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1);
	assert_true(uv_now(&e.e_tl.tl_loop) - t0 >= 90);
	assert_int_equal(e.e_accepts, 1);
	assert_int_equal(e.e_cli.s_ready, 0);
	assert_int_equal(e.e_cli.s_err, NCG_ETLS_HANDSHAKE_TIMEOUT);
	assert_non_null(strstr(e.e_cli.s_errmsg, "timed out"));
	env_done(&e);
}

/* A TLS server whose client never speaks gives up after the timeout. */
static void
on_raw_connect(uv_connect_t *req, int status)
{
	int *done = req->data;

	assert_int_equal(status, 0);
	*done = 1;
}

static void
test_tls_handshake_timeout_server(void **state)
{
	struct sockaddr_in sin;
	uv_connect_t req;
	struct env e;
	int done = 0;

	(void)state;
	env_init(&e);
	e.e_srv_opts.xo_handshake_timeout_ms = 100;
	env_listen_tcp(&e, 1);
	uv_tcp_init(&e.e_tl.tl_loop, &e.e_raw);
	e.e_raw_open = 1;
	uv_ip4_addr("127.0.0.1", e.e_port, &sin);
	req.data = &done;
	assert_int_equal(uv_tcp_connect(&req, &e.e_raw,
	                                (const struct sockaddr *)&sin,
	                                on_raw_connect),
	                 0);
	RUN_UNTIL(&e.e_tl, done && e.e_srv.s_closed == 1);
	assert_int_equal(e.e_srv.s_ready, 0);
	assert_int_equal(e.e_srv.s_err, NCG_ETLS_HANDSHAKE_TIMEOUT);
	env_done(&e);
}

/* A port nobody listens on: refused, with the address in the message. */
static void
test_connect_refused(void **state)
{
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	uv_tcp_t t;
	struct env e;
	char want[64];

	(void)state;
	env_init(&e);
	/* A port that was just free: bound, never listened on, closed. */
	uv_ip4_addr("127.0.0.1", 0, &sin);
	uv_tcp_init(&e.e_tl.tl_loop, &t);
	assert_int_equal(uv_tcp_bind(&t, (const struct sockaddr *)&sin, 0), 0);
	assert_int_equal(uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len),
	                 0);
	e.e_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	uv_close((uv_handle_t *)&t, NULL);
	env_connect(&e, "127.0.0.1", NULL, NULL);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1);
	assert_int_equal(e.e_cli.s_ready, 0);
	assert_int_equal(e.e_cli.s_err, -ECONNREFUSED);
	snprintf(want, sizeof(want), "connect to 127.0.0.1:%u", e.e_port);
	assert_non_null(strstr(e.e_cli.s_errmsg, want));
	env_done(&e);
}

/* Bad arguments fail at once, and then no callback ever runs. */
static void
test_connect_einval(void **state)
{
	struct xport *x = NULL;
	struct env e;

	(void)state;
	env_init(&e);
	assert_int_equal(xport_connect(&e.e_tl.tl_loop, "127.0.0.1", 0, NULL,
	                               NULL, &side_cb, &e.e_cli, &x),
	                 -EINVAL);
	assert_int_equal(xport_connect(&e.e_tl.tl_loop, "", 1, NULL, NULL,
	                               &side_cb, &e.e_cli, &x),
	                 -EINVAL);
	assert_null(x);
	env_done(&e);
	assert_int_equal(e.e_cli.s_closed, 0);
}

/*
 * Backpressure: while the receiver is paused nothing is delivered and the
 * sender's queue holds what the kernel does not take; after resume it all
 * arrives, and xc_drain reports an empty queue.
 */
static void
test_pause_backpressure(void **state)
{
	const size_t total = 16 << 20;
	struct env e;
	size_t got;
	int i;

	(void)state;
	env_init(&e);
	env_pair_tcp(&e, 0);
	CALL(&e, xport_pause(e.e_srv.s_x));
	side_write(&e.e_cli, total);
	for (i = 0; i < 20; i++)
		uv_run(&e.e_tl.tl_loop, UV_RUN_ONCE);
	assert_int_equal(e.e_srv.s_got, 0);
	/* The socket buffers are far below 16 MiB. */
	assert_true(xport_queued(e.e_cli.s_x) > 0);
	assert_int_equal(e.e_cli.s_drains, 0);

	CALL(&e, xport_resume(e.e_srv.s_x));
	CALL(&e, xport_resume(e.e_srv.s_x)); /* again: harmless */
	RUN_UNTIL(&e.e_tl, e.e_srv.s_got > 0);
	/* Pausing midway stops delivery again. */
	CALL(&e, xport_pause(e.e_srv.s_x));
	got = e.e_srv.s_got;
	for (i = 0; i < 5; i++)
		uv_run(&e.e_tl.tl_loop, UV_RUN_NOWAIT);
	assert_int_equal(e.e_srv.s_got, got);
	CALL(&e, xport_resume(e.e_srv.s_x));
	RUN_UNTIL(&e.e_tl, e.e_srv.s_got == total && e.e_cli.s_drains > 0);
	assert_int_equal(e.e_srv.s_bad, 0);
	assert_int_equal(e.e_cli.s_queued_at_drain, 0);
	assert_int_equal(xport_queued(e.e_cli.s_x), 0);
	env_done(&e);
}

/* xport_close() sends what was queued before it, then EOF. */
static void
test_close_flushes(void **state)
{
	const size_t total = 4 << 20;
	struct env e;

	(void)state;
	env_init(&e);
	env_pair_tcp(&e, 1);
	side_write(&e.e_cli, total);
	side_close(&e.e_cli, 0);
	assert_int_equal(e.e_cli.s_closed, 0);
	RUN_UNTIL(&e.e_tl, e.e_srv.s_closed == 1 && e.e_cli.s_closed == 1);
	assert_int_equal(e.e_srv.s_got, total);
	assert_int_equal(e.e_srv.s_bad, 0);
	assert_int_equal(e.e_srv.s_err, NCG_ECLOSED);
	assert_int_equal(e.e_cli.s_err, 0);
	env_done(&e);
}

/* Writing after close is refused, and xc_closed still comes once. */
static void
test_write_after_close(void **state)
{
	static const uint8_t b[4] = {1, 2, 3, 4};
	struct env e;
	int rc;

	(void)state;
	env_init(&e);
	env_pair_tcp(&e, 0);
	side_close(&e.e_cli, NCG_ECANCELLED);
	CALL(&e, rc = xport_write(e.e_cli.s_x, b, sizeof(b)));
	assert_int_equal(rc, NCG_ECLOSED);
	RUN_UNTIL(&e.e_tl, e.e_cli.s_closed == 1 && e.e_srv.s_closed == 1);
	assert_int_equal(e.e_cli.s_err, NCG_ECANCELLED);
	assert_int_equal(e.e_srv.s_got, 0);
	env_done(&e);
}

/* xport_opts_dead_peer() fits the keepalive to the bound. */
static void
test_opts_dead_peer(void **state)
{
	struct xport_opts o = {0};

	(void)state;
	xport_opts_dead_peer(&o, 30);
	assert_int_equal(o.xo_user_timeout_ms, 30000);
	assert_int_equal(o.xo_keepalive_idle, 15);
	assert_int_equal(o.xo_keepalive_intvl, 5);
	assert_int_equal(o.xo_keepalive_cnt, 4);
	assert_int_equal(o.xo_connect_timeout_ms, 0); /* the default fits */
	memset(&o, 0, sizeof(o));
	xport_opts_dead_peer(&o, 2);
	assert_int_equal(o.xo_keepalive_idle, 1);
	assert_int_equal(o.xo_keepalive_intvl, 1);
	assert_int_equal(o.xo_connect_timeout_ms, 2000);
	memset(&o, 0, sizeof(o));
	xport_opts_dead_peer(&o, 0);
	assert_int_equal(o.xo_user_timeout_ms, 0);
}

/* An argument runs only the tests whose names match it (cmocka's glob). */
int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tcp_cleartext),
	    cmocka_unit_test(test_unix),
	    cmocka_unit_test(test_unix_absent),
	    cmocka_unit_test(test_tls),
	    cmocka_unit_test(test_tls_wrong_name),
	    cmocka_unit_test(test_tls_handshake_timeout_client),
	    cmocka_unit_test(test_silent_address_then_next),
	    cmocka_unit_test(test_literal_no_lookup),
	    cmocka_unit_test(test_tls_handshake_timeout_server),
	    cmocka_unit_test(test_connect_refused),
	    cmocka_unit_test(test_connect_einval),
	    cmocka_unit_test(test_pause_backpressure),
	    cmocka_unit_test(test_close_flushes),
	    cmocka_unit_test(test_write_after_close),
	    cmocka_unit_test(test_opts_dead_peer),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
