/*
 * The connection manager of one outbound-https client.
 *
 * Every connection is a struct aconn.  At most one is the client's
 * "waiting" connection (connecting, probing with ServerStatusGet, or
 * long-polling Initialize); the others carry sessions.  Calls end before
 * their connection reports closed (grpc.h), so the Initialize outcome is
 * recorded in the aconn by the call and acted upon in conn_on_closed, the
 * one place that decides what to do next.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "client.h"
#include "err.h"
#include "grpc.h"
#include "log.h"
#include "ncgrpc.pb-c.h"
#include "termext.h"
#include "tls.h"

#define SVC            "/jnx.jet.netconf.Ncgrpc/"
#define BACKOFF_MIN_MS 1000
/*
 * A learned (too_many_pings) PING interval is halved, down to the
 * configured one, once a connection has had this many PINGs at it
 * acknowledged without a complaint.  A gRPC Core server sends its GOAWAY
 * at the third PING it finds too early (two strikes allowed), so five
 * acknowledged PINGs show the server accepts the rate.
 */
#define KEEPALIVE_DECAY_PINGS 5
/*
 * After a grant, the next waiting connection is dialled when the session's
 * first output is on its way, or after this long if the process is silent.
 * Dialled at the grant, its TLS handshake (a millisecond or two of CPU on
 * each side) fell between the shell's exec and its prompt and set the
 * tail of the time to the first byte (docs/internals/performance.md).
 */
#define REPLACE_DEFER_MS 100

enum aconn_state {
	AC_CONNECTING, /* TCP, TLS */
	AC_STATUS,     /* ServerStatusGet probe */
	AC_INIT,       /* long-poll Initialize */
	AC_SESSION,    /* carries a session */
};

enum aconn_outcome {
	AO_NONE,
	AO_PROBE_FAILED, /* the server answered the probe badly */
	AO_AUTH_FAILED,  /* UNAUTHENTICATED */
	AO_GRANTED,      /* Initialize answered: a session starts */
};

/*
 * Clients that trust the same certificates share one TLS context: an
 * OpenSSL context with its trust store costs about 20 KiB, most of what
 * each client added to an agent.  A context is found by the PEM text it was
 * made from (a file is read again whenever a client starts, so a changed
 * file gets a context of its own) and lives while an address of a client
 * uses it.  Each client keeps its TLS tickets apart (xo_resume_tag: its
 * name and device id), so none offers a ticket that another device id
 * logged in with.
 * One loop uses them, so there is no lock.
 */
struct trust {
	LIST_ENTRY(trust) t_entry;
	char *t_pem;
	size_t t_len;
	struct tls_ctx *t_ctx; /* each user holds a reference */
	unsigned t_users;
};

static LIST_HEAD(, trust) trusts = LIST_HEAD_INITIALIZER(trusts);

struct caddr {
	char *ca_host;
	uint16_t ca_port;
	struct tls_ctx *ca_ctx; /* NULL when the trust anchor is unusable */
	struct trust *ca_trust; /* where ca_ctx comes from */
	char *ca_file;          /* trusted-cert-file, or NULL */
	char ca_ctx_err[256];
};

struct aconn {
	struct client *ac_client;
	struct grpc_conn *ac_conn;
	struct grpc_call *ac_call;
	enum aconn_state ac_state;
	enum aconn_outcome ac_outcome;
	size_t ac_addr;
	int ac_ready;       /* TLS verified at least once */
	int ac_conn_closed; /* the connection is gone; a session may not be */
	uint8_t *ac_resp;
	size_t ac_resp_len;
	struct session *ac_session;
	enum session_type ac_type;
	unsigned ac_sid;
	char ac_peer[128];
	unsigned ac_ping_ms;    /* PING interval this connection started with */
	int ac_ping_refused;    /* it got a too_many_pings GOAWAY */
	unsigned ac_idle_pings; /* PINGs acknowledged before it was granted */
	LIST_ENTRY(aconn) ac_entry;
};

struct client {
	uv_loop_t *cl_loop;
	const struct client_settings *cl_cs;
	char *cl_name;
	char *cl_device_id;
	char *cl_resume_tag; /* whose TLS tickets: name and device id */
	char *cl_secret;
	size_t cl_secret_len;
	struct caddr *cl_addrs;
	size_t cl_naddrs;
	enum conf_reconnect cl_reconnect;
	unsigned cl_waittime;
	uv_timer_t cl_timer;
	size_t cl_cur;       /* address to try next */
	size_t cl_tried;     /* addresses failed in this pass */
	size_t cl_last_good; /* for sticky */
	unsigned cl_backoff_ms;
	unsigned cl_ping_ms; /* grows on too_many_pings, decays back */
	unsigned cl_nsessions;
	int cl_capped;  /* no connection waits: at the session limit */
	int cl_replace; /* granted: the next connection is dialled soon */
	unsigned cl_next_sid;
	struct aconn *cl_wait; /* the waiting connection, or NULL */
	LIST_HEAD(, aconn) cl_conns;
	int cl_stopping;
	void (*cl_done)(void *);
	void *cl_done_arg;
};

static void client_connect(struct client *);
static void caddr_free(struct caddr *);
static int caddr_trust_file(struct caddr *);
static void client_ping_decay(struct client *);

const char *
client_name(const struct client *cl)
{
	return cl->cl_name;
}

unsigned
client_sessions(const struct client *cl)
{
	return cl->cl_nsessions;
}

static void
on_client_timer_closed(uv_handle_t *h)
{
	struct client *cl = h->data;
	void (*done)(void *) = cl->cl_done;
	void *arg = cl->cl_done_arg;
	size_t i;

	for (i = 0; i < cl->cl_naddrs; i++)
		caddr_free(&cl->cl_addrs[i]);
	free(cl->cl_addrs);
	free(cl->cl_name);
	free(cl->cl_device_id);
	free(cl->cl_resume_tag);
	if (cl->cl_secret != NULL)
		OPENSSL_cleanse(cl->cl_secret, cl->cl_secret_len);
	free(cl->cl_secret);
	free(cl);
	if (done != NULL)
		done(arg);
}

static void
client_maybe_done(struct client *cl)
{
	if (!cl->cl_stopping || !LIST_EMPTY(&cl->cl_conns) ||
	    uv_is_closing((uv_handle_t *)&cl->cl_timer))
		return;
	uv_close((uv_handle_t *)&cl->cl_timer, on_client_timer_closed);
}

static void
on_retry(uv_timer_t *t)
{
	client_connect(t->data);
}

static void
client_retry_in(struct client *cl, unsigned ms)
{
	if (cl->cl_stopping)
		return;
	uv_timer_start(&cl->cl_timer, on_retry, ms, 0);
}

/* A random delay in [ms/2, ms*3/2), so that devices do not move in step. */
static unsigned
jitter(unsigned ms)
{
	uint32_t r = 0;

	RAND_bytes((unsigned char *)&r, sizeof(r));
	return ms / 2 + (unsigned)(r % (ms > 0 ? ms : 1));
}

/* Next unary call on the waiting connection. */

static void
aconn_close(struct aconn *ac, int err)
{
	grpc_conn_close(ac->ac_conn, err);
}

static void
on_unary_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct aconn *ac = arg;

	(void)c;
	free(ac->ac_resp);
	ac->ac_resp = NULL;
	ac->ac_resp_len = 0;
	if ((ac->ac_resp = malloc(len + 1)) == NULL)
		return;
	memcpy(ac->ac_resp, msg, len);
	ac->ac_resp_len = len;
}

static int send_packed(struct grpc_call *, const ProtobufCMessage *);
static void start_initialize(struct aconn *);

static void
on_status_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct aconn *ac = arg;
	struct client *cl = ac->ac_client;
	Jnx__Jet__Netconf__NcgrpcServerStatusGetResponse *r = NULL;

	(void)c;
	ac->ac_call = NULL;
	if (status == GRPC_STATUS_OK && ac->ac_resp != NULL)
		r = jnx__jet__netconf__ncgrpc_server_status_get_response__unpack(
		    NULL, ac->ac_resp_len, ac->ac_resp);
	if (r == NULL ||
	    r->status != JNX__JET__NETCONF__STATUS_RESPONSE__SUCCESS) {
		log_warnx("client \"%s\": server %s failed the status probe: "
		          "%s%s%s",
		          cl->cl_name, ac->ac_peer,
		          status != GRPC_STATUS_OK ? grpc_status_name(status)
		                                   : "status FAILURE",
		          status != GRPC_STATUS_OK ? ": " : "",
		          status != GRPC_STATUS_OK ? message : "");
		if (r != NULL)
			jnx__jet__netconf__ncgrpc_server_status_get_response__free_unpacked(
			    r, NULL);
		ac->ac_outcome = AO_PROBE_FAILED;
		aconn_close(ac, NCG_ECANCELLED);
		return;
	}
	jnx__jet__netconf__ncgrpc_server_status_get_response__free_unpacked(
	    r, NULL);
	/* The server works: a later disconnect starts a fresh backoff. */
	cl->cl_backoff_ms = 0;
	start_initialize(ac);
}

static const struct grpc_call_ops status_ops = {
    .on_message = on_unary_message,
    .on_end = on_status_end,
};

/* The deferred dial after a grant (REPLACE_DEFER_MS), if still due. */
static void
client_replace(struct client *cl)
{
	if (!cl->cl_replace)
		return;
	cl->cl_replace = 0;
	uv_timer_stop(&cl->cl_timer);
	client_connect(cl);
}

static void
on_session_output(struct session *s, void *arg)
{
	struct aconn *ac = arg;

	(void)s;
	client_replace(ac->ac_client);
}

static void
on_session_done(struct session *s, const struct session_stats *st, void *arg)
{
	struct aconn *ac = arg;
	struct client *cl = ac->ac_client;

	(void)s;
	ac->ac_session = NULL;
	cl->cl_nsessions--;
	log_info("client \"%s\": session %u (%s) ended: %s; %llu bytes up, "
	         "%llu bytes down",
	         cl->cl_name, ac->ac_sid, session_type_name(ac->ac_type),
	         st->ss_reason, (unsigned long long)st->ss_bytes_up,
	         (unsigned long long)st->ss_bytes_down);
	/* A dial still deferred (this session was silent) is due now. */
	client_replace(cl);
	/* Below the limit again: a connection may wait for the next one. */
	if (cl->cl_capped && !cl->cl_stopping) {
		cl->cl_capped = 0;
		log_info("client \"%s\": %u session%s, below the session "
		         "limit again; waiting for sessions",
		         cl->cl_name, cl->cl_nsessions,
		         cl->cl_nsessions == 1 ? "" : "s");
		client_connect(cl);
	}
	if (!ac->ac_conn_closed) {
		aconn_close(ac, 0);
		return;
	}
	/* The connection went first; the session was the last user. */
	LIST_REMOVE(ac, ac_entry);
	free(ac);
	client_maybe_done(cl);
}

static const struct session_cb client_session_cb = {
    .sc_output = on_session_output,
    .sc_done = on_session_done,
};

static void
start_session(struct aconn *ac, struct grpc_call *init)
{
	struct client *cl = ac->ac_client;
	int rc;

	ac->ac_state = AC_SESSION;
	ac->ac_sid = ++cl->cl_next_sid;
	/* The trailers of Initialize go back as the stream's metadata. */
	rc = session_start(ac->ac_conn, ac->ac_type, grpc_call_trailers(init),
	                   &cl->cl_cs->cs_session, &client_session_cb, ac,
	                   &ac->ac_session);
	if (rc != 0) {
		log_warnx("client \"%s\": cannot start session %u: %s",
		          cl->cl_name, ac->ac_sid, ncg_strerror(rc));
		aconn_close(ac, rc);
		return;
	}
	cl->cl_nsessions++;
	log_info("client \"%s\": session %u (%s%s) started with %s",
	         cl->cl_name, ac->ac_sid, session_type_name(ac->ac_type),
	         session_is_raw(ac->ac_session) ? ", raw terminal" : "",
	         ac->ac_peer);
}

static void
on_init_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct aconn *ac = arg;
	struct client *cl = ac->ac_client;
	Jnx__Jet__Netconf__NcgrpcInitializeResponse *r = NULL;

	ac->ac_call = NULL;
	if (status == GRPC_STATUS_UNAUTHENTICATED) {
		log_warnx("client \"%s\": authentication failed at %s: %s",
		          cl->cl_name, ac->ac_peer, message);
		ac->ac_outcome = AO_AUTH_FAILED;
		aconn_close(ac, NCG_ECANCELLED);
		return;
	}
	if (status != GRPC_STATUS_OK) {
		if (!cl->cl_stopping)
			log_info("client \"%s\": initialize at %s ended: "
			         "%s: %s",
			         cl->cl_name, ac->ac_peer,
			         grpc_status_name(status), message);
		aconn_close(ac, NCG_ECANCELLED);
		return;
	}
	if (ac->ac_resp != NULL)
		r = jnx__jet__netconf__ncgrpc_initialize_response__unpack(
		    NULL, ac->ac_resp_len, ac->ac_resp);
	if (r == NULL) {
		log_warnx("client \"%s\": malformed initialize response "
		          "from %s",
		          cl->cl_name, ac->ac_peer);
		ac->ac_outcome = AO_PROBE_FAILED;
		aconn_close(ac, NCG_ECANCELLED);
		return;
	}
	ac->ac_type = r->session_type == JNX__JET__NETCONF__SESSION_TYPE__CSH
	                  ? SESSION_CSH
	                  : SESSION_NETCONF;
	jnx__jet__netconf__ncgrpc_initialize_response__free_unpacked(r, NULL);
	ac->ac_outcome = AO_GRANTED;
	ac->ac_idle_pings = grpc_conn_pings_acked(ac->ac_conn);
	if (cl->cl_wait == ac)
		cl->cl_wait = NULL;
	/*
	 * One connection always waits for the next session: dialled when
	 * this one's first output is queued (on_session_output), or by the
	 * timer.  Set before the start, which may already end the session.
	 */
	if (!cl->cl_stopping && cl->cl_wait == NULL) {
		cl->cl_cur = ac->ac_addr;
		cl->cl_tried = 0;
		cl->cl_replace = 1;
		client_retry_in(cl, REPLACE_DEFER_MS);
	}
	start_session(ac, c);
}

static const struct grpc_call_ops init_ops = {
    .on_message = on_unary_message,
    .on_end = on_init_end,
};

static int
send_packed(struct grpc_call *c, const ProtobufCMessage *m)
{
	int rc;

	rc = grpc_call_send_pb(c, m);
	if (rc == 0)
		rc = grpc_call_close_send(c);
	return rc;
}

static void
start_unary(struct aconn *ac, const char *method, const struct grpc_mdlist *md,
            const struct grpc_call_ops *ops, const ProtobufCMessage *m)
{
	int rc;

	free(ac->ac_resp);
	ac->ac_resp = NULL;
	rc = grpc_call_start(ac->ac_conn, method, md, 0, ops, ac, &ac->ac_call);
	if (rc == 0 && (rc = send_packed(ac->ac_call, m)) != 0)
		grpc_call_cancel(ac->ac_call);
	if (rc != 0)
		aconn_close(ac, rc);
}

/*
 * Counts a connection for the heap trim (heaptrim.h) unless its client
 * has another that is still connected: the next connection of a client
 * whose session runs reuses the memory of the one before.
 */
static void
trim_soon(const struct aconn *ac)
{
	const struct client *cl = ac->ac_client;
	const struct aconn *o;

	if (cl->cl_cs->cs_trim == NULL)
		return;
	LIST_FOREACH(o, &cl->cl_conns, ac_entry)
	{
		if (o != ac && !o->ac_conn_closed)
			return;
	}
	heaptrim_note(cl->cl_cs->cs_trim);
}

static void
start_initialize(struct aconn *ac)
{
	struct client *cl = ac->ac_client;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest req =
	    JNX__JET__NETCONF__NCGRPC_INITIALIZE_REQUEST__INIT;
	struct grpc_mdlist md = {0};

	ac->ac_state = AC_INIT;
	req.instance_id = cl->cl_cs->cs_instance_id;
	req.device_id = cl->cl_device_id;
	req.secret_key = cl->cl_secret;
	log_debug("client \"%s\": waiting for a session request from %s",
	          cl->cl_name, ac->ac_peer);
	trim_soon(ac);
	/*
	 * The offer of the raw-terminal extension (termext.h): metadata a
	 * server that does not know it ignores, as gRPC servers do.
	 */
	if (grpc_md_add(&md, TERMEXT_MD_MODE, TERMEXT_RAW,
	                strlen(TERMEXT_RAW)) != 0) {
		aconn_close(ac, -ENOMEM);
		return;
	}
	start_unary(ac, SVC "NcgrpcInitialize", &md, &init_ops, &req.base);
	grpc_md_free(&md);
}

/* Connection events. */

static void
conn_on_ready(struct grpc_conn *conn, void *arg)
{
	struct aconn *ac = arg;
	struct client *cl = ac->ac_client;
	Jnx__Jet__Netconf__NcgrpcServerStatusGetRequest req =
	    JNX__JET__NETCONF__NCGRPC_SERVER_STATUS_GET_REQUEST__INIT;

	(void)conn;
	ac->ac_ready = 1;
	ac->ac_state = AC_STATUS;
	cl->cl_last_good = ac->ac_addr;
	log_info("client \"%s\": connected to %s", cl->cl_name, ac->ac_peer);
	req.req = JNX__JET__NETCONF__STATUS_REQUEST__REQ_RUNNING;
	start_unary(ac, SVC "NcgrpcServerStatusGet", NULL, &status_ops,
	            &req.base);
}

static void
conn_on_goaway(struct grpc_conn *conn, uint32_t code, const char *debug,
               void *arg)
{
	struct aconn *ac = arg;
	struct client *cl = ac->ac_client;
	unsigned ms = grpc_conn_ping_interval(conn);
	unsigned max = cl->cl_cs->cs_ping_interval_max_ms;

	/* ENHANCE_YOUR_CALM (0xb) "too_many_pings", as gRPC Core sends it. */
	if (code == 0xb && strcmp(debug, "too_many_pings") == 0 &&
	    ac->ac_ping_ms > 0)
		ac->ac_ping_refused = 1;
	if (ac->ac_ping_refused && cl->cl_ping_ms > 0 && ms >= cl->cl_ping_ms) {
		/*
		 * The server refused our ping rate; keep the slower one, but
		 * never beyond the maximum: TCP keepalive and the user timeout
		 * find dead peers, PINGs only back them up.
		 */
		if (max > 0 && ms > max)
			ms = max;
		if (ms > cl->cl_ping_ms)
			log_warnx("client \"%s\": %s asked for fewer pings "
			          "(%s); keepalive interval now %u s",
			          cl->cl_name, ac->ac_peer, debug, ms / 1000);
		else
			log_warnx("client \"%s\": %s asked for fewer pings "
			          "(%s); keepalive interval stays at its "
			          "maximum, %u s",
			          cl->cl_name, ac->ac_peer, debug, ms / 1000);
		cl->cl_ping_ms = ms;
	} else
		log_debug("client \"%s\": goaway from %s (code %u %s)",
		          cl->cl_name, ac->ac_peer, code, debug);
}

static int
is_tls_error(int err)
{
	return err >= NCG_ETLS && err <= NCG_ETLS_HANDSHAKE_TIMEOUT;
}

/* After a failed attempt, the next address, or a pause after a full pass. */
static void
client_next_address(struct client *cl)
{
	if (++cl->cl_tried < cl->cl_naddrs) {
		cl->cl_cur = (cl->cl_cur + 1) % cl->cl_naddrs;
		client_connect(cl);
		return;
	}
	cl->cl_tried = 0;
	cl->cl_cur =
	    cl->cl_reconnect == CONF_RECONNECT_STICKY ? cl->cl_last_good : 0;
	log_info("client \"%s\": no server of %zu reachable; next pass in "
	         "%u s",
	         cl->cl_name, cl->cl_naddrs, cl->cl_waittime);
	client_retry_in(cl, cl->cl_waittime * 1000);
}

static void
conn_on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct aconn *ac = arg;
	struct client *cl = ac->ac_client;
	int was_waiting = cl->cl_wait == ac;

	(void)conn;
	if (was_waiting)
		cl->cl_wait = NULL;
	if (!cl->cl_stopping)
		client_ping_decay(cl);
	free(ac->ac_resp);
	ac->ac_resp = NULL;
	if (ac->ac_session != NULL) {
		/*
		 * The session's stream ended with the connection and its
		 * process is being stopped; on_session_done frees ac.
		 */
		ac->ac_conn_closed = 1;
		ac->ac_conn = NULL;
		log_info("client \"%s\": disconnected from %s during session "
		         "%u: %s",
		         cl->cl_name, ac->ac_peer, ac->ac_sid,
		         err == 0 ? "closed" : reason);
		return;
	}
	LIST_REMOVE(ac, ac_entry);
	if (cl->cl_stopping) {
		free(ac);
		client_maybe_done(cl);
		return;
	}
	if (!ac->ac_ready) {
		if (is_tls_error(err))
			log_warnx("client \"%s\": tls failure with %s: %s (%s)",
			          cl->cl_name, ac->ac_peer, ncg_strerror(err),
			          reason);
		else
			log_warnx("client \"%s\": cannot connect to %s: %s",
			          cl->cl_name, ac->ac_peer, reason);
	} else if (ac->ac_state != AC_SESSION || ac->ac_outcome != AO_GRANTED)
		log_info("client \"%s\": disconnected from %s: %s", cl->cl_name,
		         ac->ac_peer, err == 0 ? "closed" : reason);
	if (!was_waiting) {
		free(ac);
		return;
	}
	switch (ac->ac_outcome) {
	case AO_AUTH_FAILED:
		/* Retrying at once would only hammer the server. */
		cl->cl_tried = 0;
		cl->cl_cur = ac->ac_addr;
		log_info("client \"%s\": retrying in %u s", cl->cl_name,
		         cl->cl_waittime);
		client_retry_in(cl, cl->cl_waittime * 1000);
		break;
	case AO_PROBE_FAILED:
		cl->cl_cur = ac->ac_addr;
		client_next_address(cl);
		break;
	default:
		if (!ac->ac_ready) {
			cl->cl_cur = ac->ac_addr;
			client_next_address(cl);
			break;
		}
		/* A working connection was lost: reconnect with backoff. */
		cl->cl_tried = 0;
		cl->cl_cur =
		    cl->cl_reconnect == CONF_RECONNECT_STICKY ? ac->ac_addr : 0;
		cl->cl_backoff_ms = cl->cl_backoff_ms == 0
		                        ? BACKOFF_MIN_MS
		                        : cl->cl_backoff_ms * 2;
		if (cl->cl_backoff_ms > cl->cl_waittime * 1000)
			cl->cl_backoff_ms = cl->cl_waittime * 1000;
		client_retry_in(cl, jitter(cl->cl_backoff_ms));
		break;
	}
	free(ac);
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = conn_on_ready,
    .on_goaway = conn_on_goaway,
    .on_closed = conn_on_closed,
};

/*
 * Lets a learned PING interval come back down: if a connection that started
 * with the current interval has had KEEPALIVE_DECAY_PINGS of them
 * acknowledged without a too_many_pings GOAWAY while it waited in
 * Initialize, the server accepts that rate, and the next connections try
 * half of it (never below the configured interval).  Only PINGs on the
 * waiting connection count: gRPC Core forgives PINGs while data flows, so
 * a busy session connection proves nothing.  Should the half be refused,
 * the GOAWAY doubles it again; the cost is one reconnect of an idle
 * connection.
 */
static void
client_ping_decay(struct client *cl)
{
	unsigned base = cl->cl_cs->cs_ping_interval_ms, next;
	struct aconn *ac;

	if (cl->cl_ping_ms <= base)
		return;
	LIST_FOREACH(ac, &cl->cl_conns, ac_entry)
	{
		unsigned idle;

		if (ac->ac_conn == NULL || ac->ac_ping_refused ||
		    ac->ac_ping_ms != cl->cl_ping_ms)
			continue;
		if (ac->ac_state == AC_INIT)
			idle = grpc_conn_pings_acked(ac->ac_conn);
		else if (ac->ac_state == AC_SESSION)
			idle = ac->ac_idle_pings;
		else
			idle = 0;
		if (idle < KEEPALIVE_DECAY_PINGS)
			continue;
		next = cl->cl_ping_ms / 2 > base ? cl->cl_ping_ms / 2 : base;
		log_info("client \"%s\": %s accepted keepalive pings every "
		         "%u s; new connections ping every %u s",
		         cl->cl_name, ac->ac_peer, cl->cl_ping_ms / 1000,
		         next / 1000);
		cl->cl_ping_ms = next;
		return;
	}
}

static void
client_connect(struct client *cl)
{
	struct caddr *a = &cl->cl_addrs[cl->cl_cur];
	struct grpc_opts go = {0};
	struct aconn *ac;
	int rc;

	cl->cl_replace = 0;
	if (cl->cl_stopping || cl->cl_wait != NULL)
		return;
	/*
	 * At the session limit no connection waits, so the server has none
	 * to grant: it sees the device as busy (docs/protocol.md).  The last
	 * session to end brings the waiting connection back.
	 */
	if (cl->cl_nsessions >= cl->cl_cs->cs_session_limit) {
		if (!cl->cl_capped)
			log_warnx("client \"%s\": %u sessions, at the session "
			          "limit; no connection waits for more until "
			          "one ends",
			          cl->cl_name, cl->cl_nsessions);
		cl->cl_capped = 1;
		return;
	}
	client_ping_decay(cl);
	/*
	 * A trusted-cert-file that was missing or broken may have been put
	 * right since: read it again at each try until it is usable.
	 */
	if (a->ca_ctx == NULL && a->ca_file != NULL &&
	    caddr_trust_file(a) == 0 && a->ca_ctx != NULL)
		log_info("client \"%s\": trusted-cert-file \"%s\" is usable "
		         "now",
		         cl->cl_name, a->ca_file);
	if (a->ca_ctx == NULL) {
		log_warnx("client \"%s\": skipping %s port %u: trusted-cert "
		          "unusable: %s",
		          cl->cl_name, a->ca_host, a->ca_port, a->ca_ctx_err);
		client_next_address(cl);
		return;
	}
	if ((ac = calloc(1, sizeof(*ac))) == NULL) {
		log_warnx("client \"%s\": out of memory", cl->cl_name);
		client_retry_in(cl, cl->cl_waittime * 1000);
		return;
	}
	ac->ac_client = cl;
	ac->ac_addr = cl->cl_cur;
	ac->ac_state = AC_CONNECTING;
	if (strchr(a->ca_host, ':') != NULL)
		snprintf(ac->ac_peer, sizeof(ac->ac_peer), "[%s]:%u",
		         a->ca_host, a->ca_port);
	else
		snprintf(ac->ac_peer, sizeof(ac->ac_peer), "%s:%u", a->ca_host,
		         a->ca_port);
	go.go_ping_interval_ms = cl->cl_ping_ms;
	go.go_ping_interval_max_ms = cl->cl_cs->cs_ping_interval_max_ms;
	go.go_ping_timeout_ms = cl->cl_cs->cs_ping_timeout_ms;
	ac->ac_ping_ms = cl->cl_ping_ms;
	go.go_xport = cl->cl_cs->cs_xport;
	/* The context may be shared: our tickets go under our own tag. */
	go.go_xport.xo_resume_tag = cl->cl_resume_tag;
	log_info("client \"%s\": connecting to %s", cl->cl_name, ac->ac_peer);
	rc = grpc_conn_connect(cl->cl_loop, a->ca_host, a->ca_port, a->ca_ctx,
	                       &go, &conn_ops, ac, &ac->ac_conn);
	if (rc != 0) {
		log_warnx("client \"%s\": cannot connect to %s: %s",
		          cl->cl_name, ac->ac_peer, ncg_strerror(rc));
		free(ac);
		client_next_address(cl);
		return;
	}
	LIST_INSERT_HEAD(&cl->cl_conns, ac, ac_entry);
	cl->cl_wait = ac;
}

/* The shared context for the certificates in pem[0..len), made if new. */
static int
trust_get(struct caddr *a, const char *pem, size_t len, char *err,
          size_t errlen)
{
	struct trust *t;
	int rc;

	for (t = LIST_FIRST(&trusts); t != NULL; t = LIST_NEXT(t, t_entry))
		if (t->t_len == len && memcmp(t->t_pem, pem, len) == 0) {
			t->t_users++;
			a->ca_trust = t;
			a->ca_ctx = tls_ctx_ref(t->t_ctx);
			return 0;
		}
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->t_pem = malloc(len == 0 ? 1 : len)) == NULL) {
		free(t);
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if ((rc = tls_ctx_client_new(&t->t_ctx, pem, len, err, errlen)) != 0) {
		free(t->t_pem);
		free(t);
		return rc;
	}
	memcpy(t->t_pem, pem, len);
	t->t_len = len;
	t->t_users = 1;
	LIST_INSERT_HEAD(&trusts, t, t_entry);
	a->ca_trust = t;
	a->ca_ctx = t->t_ctx;
	return 0;
}

static void
caddr_free(struct caddr *a)
{
	struct trust *t = a->ca_trust;

	free(a->ca_host);
	free(a->ca_file);
	if (t == NULL)
		return;
	tls_ctx_free(a->ca_ctx);
	a->ca_ctx = NULL;
	a->ca_trust = NULL;
	if (--t->t_users > 0)
		return;
	LIST_REMOVE(t, t_entry);
	/* As tls_file_free() does: a trusted-cert file may hold more. */
	OPENSSL_cleanse(t->t_pem, t->t_len);
	free(t->t_pem);
	free(t);
}

/*
 * The anchor of ca_file.  Returns -ENOMEM, else 0: an unusable anchor is
 * noted in ca_ctx_err.
 */
static int
caddr_trust_file(struct caddr *a)
{
	char *pem, tmp[sizeof(a->ca_ctx_err)];
	size_t len;
	int rc;

	if ((rc = tls_file_read(a->ca_file, &pem, &len, a->ca_ctx_err,
	                        sizeof(a->ca_ctx_err))) != 0)
		return rc == -ENOMEM ? rc : 0;
	rc = trust_get(a, pem, len, tmp, sizeof(tmp));
	if (rc != 0)
		ncg_seterr(a->ca_ctx_err, sizeof(a->ca_ctx_err), "%s: %s",
		           a->ca_file, tmp);
	tls_file_free(pem, len);
	return rc == -ENOMEM ? rc : 0;
}

/* Returns -ENOMEM, else 0: an unusable anchor is noted in ca_ctx_err. */
static int
caddr_init(struct caddr *a, const struct conf_address *ad)
{
	int rc;

	if ((a->ca_host = strdup(ad->ad_host)) == NULL)
		return -ENOMEM;
	a->ca_port = ad->ad_port;
	if (ad->ad_trusted_cert != NULL) {
		rc = trust_get(a, ad->ad_trusted_cert,
		               strlen(ad->ad_trusted_cert), a->ca_ctx_err,
		               sizeof(a->ca_ctx_err));
		return rc == -ENOMEM ? rc : 0;
	}
	if ((a->ca_file = strdup(ad->ad_trusted_cert_file)) == NULL)
		return -ENOMEM;
	return caddr_trust_file(a);
}

int
client_start(uv_loop_t *loop, const struct conf_client *cc,
             const struct client_settings *cs, struct client **out)
{
	struct client *cl;
	size_t i;

	if ((cl = calloc(1, sizeof(*cl))) == NULL)
		return -ENOMEM;
	cl->cl_loop = loop;
	cl->cl_cs = cs;
	LIST_INIT(&cl->cl_conns);
	cl->cl_ping_ms = cs->cs_ping_interval_ms;
	cl->cl_reconnect = cc->cc_reconnect;
	cl->cl_waittime = cc->cc_waittime;
	if ((cl->cl_name = strdup(cc->cc_name)) == NULL ||
	    (cl->cl_device_id = strdup(cc->cc_device_id)) == NULL ||
	    (cl->cl_secret = strndup(cc->cc_secret, cc->cc_secret_len)) ==
	        NULL ||
	    (cl->cl_addrs = calloc(cc->cc_naddrs, sizeof(*cl->cl_addrs))) ==
	        NULL)
		goto nomem;
	/*
	 * The device id too: a reload that gives a client another device id
	 * must not offer the old one's ticket.  The name's length first, so
	 * that no two pairs make the same tag.
	 */
	if (asprintf(&cl->cl_resume_tag, "%zu:%s %s", strlen(cl->cl_name),
	             cl->cl_name, cl->cl_device_id) == -1) {
		cl->cl_resume_tag = NULL;
		goto nomem;
	}
	cl->cl_secret_len = cc->cc_secret_len;
	cl->cl_naddrs = cc->cc_naddrs;
	for (i = 0; i < cc->cc_naddrs; i++) {
		if (caddr_init(&cl->cl_addrs[i], &cc->cc_addrs[i]) != 0)
			goto nomem;
		if (cl->cl_addrs[i].ca_ctx == NULL)
			log_warnx("client \"%s\": address %s: trusted-cert "
			          "unusable: %s",
			          cl->cl_name, cc->cc_addrs[i].ad_host,
			          cl->cl_addrs[i].ca_ctx_err);
	}
	uv_timer_init(loop, &cl->cl_timer);
	cl->cl_timer.data = cl;
	log_info("client \"%s\": started (device-id \"%s\", %zu address%s, "
	         "%s, waittime %u s)",
	         cl->cl_name, cl->cl_device_id, cl->cl_naddrs,
	         cl->cl_naddrs == 1 ? "" : "es",
	         conf_reconnect_name(cl->cl_reconnect), cl->cl_waittime);
	client_connect(cl);
	*out = cl;
	return 0;
nomem:
	if (cl->cl_addrs != NULL)
		for (i = 0; i < cc->cc_naddrs; i++)
			caddr_free(&cl->cl_addrs[i]);
	free(cl->cl_addrs);
	free(cl->cl_name);
	free(cl->cl_device_id);
	free(cl->cl_resume_tag);
	free(cl->cl_secret);
	free(cl);
	return -ENOMEM;
}

void
client_update(struct client *cl, const struct conf_client *cc)
{
	if (cl->cl_waittime != cc->cc_waittime ||
	    cl->cl_reconnect != cc->cc_reconnect)
		log_info("client \"%s\": now %s, waittime %u s", cl->cl_name,
		         conf_reconnect_name(cc->cc_reconnect),
		         cc->cc_waittime);
	cl->cl_waittime = cc->cc_waittime;
	cl->cl_reconnect = cc->cc_reconnect;
	/* Learned slower pings (too_many_pings) are forgotten on purpose. */
	cl->cl_ping_ms = cl->cl_cs->cs_ping_interval_ms;
	/* A raised session-limit lets a connection wait again. */
	if (cl->cl_capped && cl->cl_nsessions < cl->cl_cs->cs_session_limit) {
		cl->cl_capped = 0;
		client_connect(cl);
	}
	/* A pause under way is shortened to the new waittime. */
	if (uv_is_active((uv_handle_t *)&cl->cl_timer) &&
	    uv_timer_get_due_in(&cl->cl_timer) > cl->cl_waittime * 1000ULL)
		client_retry_in(cl, cl->cl_waittime * 1000);
}

void
client_stop(struct client *cl, const char *why, void (*done)(void *), void *arg)
{
	struct aconn *ac;

	if (cl->cl_stopping)
		return;
	log_info("client \"%s\": stopping: %s", cl->cl_name, why);
	cl->cl_stopping = 1;
	cl->cl_done = done;
	cl->cl_done_arg = arg;
	uv_timer_stop(&cl->cl_timer);
	LIST_FOREACH(ac, &cl->cl_conns, ac_entry)
	{
		if (ac->ac_session != NULL)
			session_stop(ac->ac_session, why);
		else
			aconn_close(ac, NCG_ECANCELLED);
	}
	client_maybe_done(cl);
}
