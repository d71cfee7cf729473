/*
 * The session broker.
 *
 * An Initialize call moves through INIT_AUTH (the registry checks the
 * secret in the threadpool), INIT_IDLE (on its device's idle queue), and
 * INIT_GRANTED (answered for an operator).  An operator session (struct
 * opsess) moves through OS_WAITING (no idle connection yet), OS_GRANTED
 * (waiting for the device's CommandGet on the granted connection),
 * OS_ACTIVE (joined), and ends.  A device exists while it has idle
 * connections or sessions; its creation and removal are the CONNECTED and
 * DISCONNECTED events.
 *
 * Calls can end inside our own sends (grpc.h), so every path that sends on
 * a call and then looks at the session holds the session (os_busy).
 */
#include <errno.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <openssl/crypto.h>

#include "audit.h"
#include "broker.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "ncframe.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "ncgrpc_wire.pb-c.h"
#include "pbwire.h"
#include "preauth.h"
#include "registry.h"
#include "utf8.h"

#define SVC "/jnx.jet.netconf.Ncgrpc/"
#define BROKER_BUCKETS	       16384
#define BROKER_MAX_LINE	       (64 * 1024)
#define BROKER_MAX_NETCONF_MSG (16 * 1024 * 1024)
#define BROKER_MAX_PENDING     (1024 * 1024)
/* ServerStatusGet and Initialize requests, checked at the length prefix. */
#define BROKER_MAX_UNARY       (64 * 1024)
/*
 * A device whose last connection went away stays listed this long: after
 * a session the agent's next connection is usually still authenticating,
 * and a DISCONNECTED/CONNECTED pair for that would be noise.
 */
#define BROKER_LINGER_MS 3000
/* How soon after devices connect the freed heap is given back. */
#define BROKER_TRIM_MS 1000

enum init_state { INIT_AUTH, INIT_IDLE, INIT_GRANTED, INIT_DONE };
enum os_state { OS_WAITING, OS_GRANTED, OS_ACTIVE, OS_ENDED };

struct device;

/* One NcgrpcInitialize call of a device. */
struct initcall {
	struct broker *ic_b;
	struct grpc_call *ic_call;
	struct grpc_conn *ic_conn;
	struct device *ic_dev;
	enum init_state ic_state;
	struct registry_req *ic_verify;
	uint8_t *ic_req;
	size_t ic_len;
	int ic_nmsg;
	char ic_id[256];
	uint64_t ic_instance;
	char ic_peer[64];
	uint64_t ic_reg_gen; /* b_reg_gen when the check started */
	TAILQ_ENTRY(initcall) ic_entry;
};

struct device {
	char *dv_id;
	uint64_t dv_instance;
	int64_t dv_since;
	char dv_peer[64];
	TAILQ_HEAD(, initcall) dv_idle;
	unsigned dv_nidle;
	unsigned dv_nsessions; /* granted or active */
	uint64_t dv_empty_since; /* ms; on b_empty while nonzero */
	TAILQ_ENTRY(device) dv_empty;
	struct device *dv_next;
};

struct opsess {
	struct broker *os_b;
	uint64_t os_id;
	enum os_state os_state;
	enum broker_session_type os_type;
	struct grpc_call *os_op;
	struct grpc_call *os_dev;
	struct grpc_conn *os_devconn;
	struct device *os_devp; /* counted in dv_nsessions while set */
	char os_device[256];
	char os_peer[64];
	uid_t os_uid;
	uv_timer_t os_timer;
	int os_busy;
	int os_freeing;
	int os_dev_finished; /* we ended the device's stream with OK */
	struct ncframe os_nf;
	struct buf os_line;
	uint64_t os_to_dev, os_from_dev;
	char os_reason[200];
	TAILQ_ENTRY(opsess) os_entry; /* waiting or granted list */
	int os_listed;
	LIST_ENTRY(opsess) os_all;
};

TAILQ_HEAD(oslist, opsess);

struct watcher {
	broker_watch_fn w_fn;
	void *w_arg;
	LIST_ENTRY(watcher) w_entry;
};

struct broker {
	uv_loop_t *b_loop;
	struct broker_opts b_opts;
	struct registry *b_reg;
	uint64_t b_reg_gen; /* counts registry reloads */
	struct device *b_buckets[BROKER_BUCKETS];
	size_t b_ndevices;
	struct oslist b_waiting; /* OS_WAITING */
	struct oslist b_granted; /* OS_GRANTED */
	LIST_HEAD(, watcher) b_watchers;
	TAILQ_HEAD(, device) b_empty; /* lingering without connections */
	LIST_HEAD(, opsess) b_sessions; /* every operator session */
	uv_timer_t b_linger;
	uv_timer_t b_trim;
	int b_open_timers; /* timers whose close callback is pending */
	uint64_t b_next_session;
};

static void os_end(struct opsess *, int status, const char *reason);
static void on_linger(uv_timer_t *);
static void os_unlist(struct opsess *);
static void os_try_grant(struct broker *, struct device *);

/* Devices. */

static uint32_t
hash_id(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static struct device *
device_find(struct broker *b, const char *id)
{
	struct device *d;

	for (d = b->b_buckets[hash_id(id) % BROKER_BUCKETS]; d != NULL;
	     d = d->dv_next)
		if (strcmp(d->dv_id, id) == 0)
			return d;
	return NULL;
}

static void
device_info(const struct device *d, struct broker_device_info *bi)
{
	memset(bi, 0, sizeof(*bi));
	snprintf(bi->bi_id, sizeof(bi->bi_id), "%s", d->dv_id);
	snprintf(bi->bi_peer, sizeof(bi->bi_peer), "%s", d->dv_peer);
	bi->bi_since = d->dv_since;
	bi->bi_instance = d->dv_instance;
	bi->bi_idle = d->dv_nidle;
	bi->bi_sessions = d->dv_nsessions;
}

static void
notify(struct broker *b, enum broker_event ev, const struct device *d,
       const char *reason)
{
	struct broker_device_info bi;
	struct watcher *w, *next;

	device_info(d, &bi);
	for (w = LIST_FIRST(&b->b_watchers); w != NULL; w = next) {
		next = LIST_NEXT(w, w_entry);
		w->w_fn(ev, &bi, reason, w->w_arg);
	}
}

static struct device *
device_get(struct broker *b, const char *id, uint64_t instance,
	   const char *peer)
{
	struct device *d = device_find(b, id);
	uint32_t h;

	if (d != NULL)
		return d;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	if ((d->dv_id = strdup(id)) == NULL) {
		free(d);
		return NULL;
	}
	d->dv_instance = instance;
	d->dv_since = (int64_t)time(NULL);
	snprintf(d->dv_peer, sizeof(d->dv_peer), "%s", peer);
	TAILQ_INIT(&d->dv_idle);
	h = hash_id(id) % BROKER_BUCKETS;
	d->dv_next = b->b_buckets[h];
	b->b_buckets[h] = d;
	b->b_ndevices++;
	log_info("device \"%s\" connected from %s (instance %" PRIu64 ")",
		 id, peer, instance);
	audit_event("device-connected", "device", id, "peer", peer, NULL);
	notify(b, BROKER_EV_CONNECTED, d, "connected");
	return d;
}

static void
device_remove(struct broker *b, struct device *d, const char *why)
{
	struct device **pp;

	for (pp = &b->b_buckets[hash_id(d->dv_id) % BROKER_BUCKETS]; *pp != d;
	     pp = &(*pp)->dv_next)
		;
	*pp = d->dv_next;
	b->b_ndevices--;
	log_info("device \"%s\" disconnected: %s", d->dv_id, why);
	audit_event("device-disconnected", "device", d->dv_id, "reason", why,
		    NULL);
	notify(b, BROKER_EV_DISCONNECTED, d, why);
	free(d->dv_id);
	free(d);
}

/*
 * A device with neither idle connections nor sessions lingers for
 * BROKER_LINGER_MS; on_linger removes it if nothing came back.
 */
static void
device_maybe_gone(struct broker *b, struct device *d, const char *why)
{
	(void)why;
	if (d->dv_nidle > 0 || d->dv_nsessions > 0)
		return;
	/* Counted from the latest time it became empty; the list stays in
	 * that order. */
	if (d->dv_empty_since != 0)
		TAILQ_REMOVE(&b->b_empty, d, dv_empty);
	d->dv_empty_since = uv_now(b->b_loop);
	if (d->dv_empty_since == 0)
		d->dv_empty_since = 1;
	TAILQ_INSERT_TAIL(&b->b_empty, d, dv_empty);
	if (!uv_is_active((uv_handle_t *)&b->b_linger))
		uv_timer_start(&b->b_linger, on_linger, BROKER_LINGER_MS, 0);
}

static void
on_linger(uv_timer_t *t)
{
	struct broker *b = t->data;
	struct device *d;
	uint64_t now = uv_now(b->b_loop);

	while ((d = TAILQ_FIRST(&b->b_empty)) != NULL) {
		if (d->dv_nidle > 0 || d->dv_nsessions > 0) {
			/* Back in use: it never left. */
			TAILQ_REMOVE(&b->b_empty, d, dv_empty);
			d->dv_empty_since = 0;
			continue;
		}
		if (now - d->dv_empty_since < BROKER_LINGER_MS) {
			uv_timer_start(&b->b_linger, on_linger,
				       BROKER_LINGER_MS -
					       (now - d->dv_empty_since),
				       0);
			return;
		}
		TAILQ_REMOVE(&b->b_empty, d, dv_empty);
		device_remove(b, d, "no connection left");
	}
}

/* Device side: ServerStatusGet. */

static void
unary_collect(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct initcall *ic = arg;

	if (ic->ic_nmsg++ > 0 || len > BROKER_MAX_UNARY) {
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
				 "expected one small request message", NULL);
		return;
	}
	if ((ic->ic_req = malloc(len + 1)) == NULL) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "out of memory", NULL);
		return;
	}
	memcpy(ic->ic_req, msg, len);
	ic->ic_len = len;
}

/* Returns 0, or the error of the allocation or of grpc_call_send(). */
static int
send_message(struct grpc_call *c, const ProtobufCMessage *m)
{
	uint8_t stack[256], *buf = stack;
	size_t len = protobuf_c_message_get_packed_size(m);
	int rc;

	if (len > sizeof(stack) && (buf = malloc(len)) == NULL)
		return -ENOMEM;
	protobuf_c_message_pack(m, buf);
	rc = grpc_call_send(c, buf, len);
	if (buf != stack)
		free(buf);
	return rc;
}

static void
status_half_close(struct grpc_call *c, void *arg)
{
	Jnx__Jet__Netconf__NcgrpcServerStatusGetResponse resp =
		JNX__JET__NETCONF__NCGRPC_SERVER_STATUS_GET_RESPONSE__INIT;

	(void)arg;
	resp.status = JNX__JET__NETCONF__STATUS_RESPONSE__SUCCESS;
	send_message(c, &resp.base);
	grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
}

static void
status_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct initcall *ic = arg;

	(void)c;
	(void)status;
	(void)msg;
	free(ic->ic_req);
	free(ic);
}

static const struct grpc_call_ops status_ops = {
	.on_message = unary_collect,
	.on_half_close = status_half_close,
	.on_end = status_on_end,
};

static struct initcall *
initcall_new(struct broker *b, struct grpc_call *c)
{
	struct initcall *ic = calloc(1, sizeof(*ic));

	if (ic == NULL) {
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "out of memory", NULL);
		return NULL;
	}
	ic->ic_b = b;
	ic->ic_call = c;
	ic->ic_conn = grpc_call_conn(c);
	snprintf(ic->ic_peer, sizeof(ic->ic_peer), "%s",
		 grpc_conn_peer(ic->ic_conn));
	return ic;
}

static void
handle_status(struct grpc_call *c, void *arg)
{
	struct initcall *ic = initcall_new(arg, c);

	grpc_call_set_max_message(c, BROKER_MAX_UNARY);
	if (ic != NULL)
		grpc_call_set_ops(c, &status_ops, ic);
}

/* Device side: Initialize. */

static void
peer_ip(const char *peer, char *out, size_t len)
{
	const char *end;

	if (peer[0] == '[' && (end = strchr(peer, ']')) != NULL) {
		snprintf(out, len, "%.*s", (int)(end - peer - 1), peer + 1);
		return;
	}
	end = strrchr(peer, ':');
	snprintf(out, len, "%.*s", end != NULL ? (int)(end - peer) : (int)strlen(peer),
		 peer);
}

/*
 * Every TLS handshake borrows some 55 KiB from the heap for a moment
 * (OpenSSL's handshake buffer and its record buffers) and returns it
 * before the device settles into its long poll.  When thousands of devices
 * connect at once, as they all do after a restart of ncgrpcd, those
 * buffers leave holes between the connections' long-lived state, and glibc
 * gives back only the top of the heap on its own: at 10,000 devices it
 * held 187 MB free in such holes, and the resident size per device went
 * from 46 to 69 KiB with the order the handshakes happened to run in.
 * malloc_trim() returns the holes' whole pages to the kernel.  It runs
 * once a second at most, and only while devices arrive, so a steady server
 * never pays for it.
 */
static void
on_trim(uv_timer_t *t)
{
	(void)t;
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static void
trim_soon(struct broker *b)
{
	if (!uv_is_active((uv_handle_t *)&b->b_trim))
		uv_timer_start(&b->b_trim, on_trim, BROKER_TRIM_MS, 0);
}

/*
 * Logs and audits a refused Initialize.  Refusals by the throttle or the
 * KDF queue bound can come thousands a second from one peer: after the
 * first of a minute per (reason, id, address), preauth.c folds them into
 * one summary line.
 */
static void
report_refusal(struct initcall *ic, int result, const char *why)
{
	struct preauth *pa = ic->ic_b->b_opts.bo_preauth;
	char ip[64];

	if ((result == -EAGAIN || result == -EBUSY) && pa != NULL) {
		peer_ip(ic->ic_peer, ip, sizeof(ip));
		if (!preauth_auth_refused(pa, why, ic->ic_id, ip))
			return;
	}
	if (result == -EBUSY) {
		log_info("device \"%s\" from %s: busy, told to retry",
			 ic->ic_id, ic->ic_peer);
		return;
	}
	log_warnx("device \"%s\" from %s: authentication failed (%s)",
		  ic->ic_id, ic->ic_peer, why);
	audit_event("auth-failed", "device", ic->ic_id, "peer", ic->ic_peer,
		    "reason", why, NULL);
}

static void
on_verified(void *arg, int result)
{
	struct initcall *ic = arg;
	struct broker *b = ic->ic_b;
	struct device *d;
	const char *why;

	ic->ic_verify = NULL;
	if (ic->ic_state == INIT_DONE) {
		/* The call ended while we were checking; on_end left ic to us. */
		free(ic);
		return;
	}
	if (result != 0) {
		why = result == -ENOENT	   ? "unknown-device"
		      : result == -EACCES  ? "bad-secret"
		      : result == -EAGAIN  ? "throttled"
		      : result == -EBUSY   ? "busy"
					   : "error";
		report_refusal(ic, result, why);
		if (result == -EBUSY) {
			/* Not the device's fault: it may come back at once. */
			grpc_call_finish(ic->ic_call, GRPC_STATUS_UNAVAILABLE,
					 "server busy checking other devices; "
					 "try again",
					 NULL);
			return;
		}
		/* One message for unknown and wrong: ids are not revealed. */
		grpc_call_finish(ic->ic_call, GRPC_STATUS_UNAUTHENTICATED,
				 result == -EAGAIN
					 ? "too many failed attempts; try "
					   "again later"
					 : "invalid device id or secret",
				 NULL);
		return;
	}
	/*
	 * The registry may have been reloaded during the check, and the
	 * reload's sweep of idle connections has run already: a device
	 * removed or given a new secret meanwhile must not become idle on
	 * the strength of the old entry.
	 */
	if (ic->ic_reg_gen != b->b_reg_gen) {
		log_info("device \"%s\" from %s: registry reloaded during "
			 "the check, told to retry",
			 ic->ic_id, ic->ic_peer);
		grpc_call_finish(ic->ic_call, GRPC_STATUS_UNAVAILABLE,
				 "device registry changed; try again", NULL);
		return;
	}
	grpc_conn_set_trusted(ic->ic_conn);
	d = device_find(b, ic->ic_id);
	if (d != NULL && d->dv_instance != ic->ic_instance) {
		struct initcall *old;

		log_info("device \"%s\" restarted (instance %" PRIu64
			 " -> %" PRIu64 ")",
			 d->dv_id, d->dv_instance, ic->ic_instance);
		audit_event("device-restarted", "device", d->dv_id, "peer",
			    ic->ic_peer, NULL);
		d->dv_instance = ic->ic_instance;
		d->dv_since = (int64_t)time(NULL);
		notify(b, BROKER_EV_RESTARTED, d, "new instance id");
		/* The old instance's idle connections are stale now. */
		while ((old = TAILQ_FIRST(&d->dv_idle)) != NULL) {
			TAILQ_REMOVE(&d->dv_idle, old, ic_entry);
			d->dv_nidle--;
			old->ic_state = INIT_DONE;
			old->ic_dev = NULL;
			grpc_call_finish(old->ic_call,
					 GRPC_STATUS_UNAVAILABLE,
					 "superseded by a new instance of the "
					 "device",
					 NULL);
		}
	}
	if (d == NULL &&
	    (d = device_get(b, ic->ic_id, ic->ic_instance, ic->ic_peer)) ==
		    NULL) {
		grpc_call_finish(ic->ic_call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "out of memory", NULL);
		return;
	}
	snprintf(d->dv_peer, sizeof(d->dv_peer), "%s", ic->ic_peer);
	ic->ic_dev = d;
	ic->ic_state = INIT_IDLE;
	/* Newest first: an old idle connection may have died in a NAT. */
	TAILQ_INSERT_HEAD(&d->dv_idle, ic, ic_entry);
	d->dv_nidle++;
	log_debug("device \"%s\": idle connection from %s (%u idle)",
		  d->dv_id, ic->ic_peer, d->dv_nidle);
	trim_soon(b);
	os_try_grant(b, d);
}

/*
 * The registry's device id syntax, checked before the id is logged: an
 * unauthenticated peer must not be able to write newlines or escape
 * sequences into our log.
 */
static int
device_id_ok(const char *id)
{
	size_t n = strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			      "0123456789._:@-");

	return n > 0 && n < 256 && id[n] == '\0';
}

static void
init_half_close(struct grpc_call *c, void *arg)
{
	struct initcall *ic = arg;
	struct broker *b = ic->ic_b;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest *req;
	char ip[64];
	int rc, nul;

	/*
	 * A NUL inside device_id (2) or secret_key (3) would be cut off by
	 * the decoder ("r1\0x" read as "r1"): refuse it, never truncate.
	 */
	nul = ic->ic_req != NULL &&
	      (pbwire_field_has_nul(ic->ic_req, ic->ic_len, 2) == 1 ||
	       pbwire_field_has_nul(ic->ic_req, ic->ic_len, 3) == 1);
	req = ic->ic_req == NULL || nul
		      ? NULL
		      : jnx__jet__netconf__ncgrpc_initialize_request__unpack(
				NULL, ic->ic_len, ic->ic_req);
	if (ic->ic_req != NULL) {
		OPENSSL_cleanse(ic->ic_req, ic->ic_len);
		free(ic->ic_req);
		ic->ic_req = NULL;
	}
	if (req == NULL || !device_id_ok(req->device_id)) {
		if (req != NULL)
			jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(
				req, NULL);
		grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
				 nul ? "NUL byte in device_id or secret_key"
				     : "malformed NcgrpcInitializeRequest",
				 NULL);
		return;
	}
	snprintf(ic->ic_id, sizeof(ic->ic_id), "%s", req->device_id);
	ic->ic_instance = req->instance_id;
	peer_ip(ic->ic_peer, ip, sizeof(ip));
	ic->ic_reg_gen = b->b_reg_gen;
	rc = registry_verify(b->b_reg, b->b_loop, req->device_id,
			     (const uint8_t *)req->secret_key,
			     strlen(req->secret_key), ip, on_verified, ic,
			     &ic->ic_verify);
	OPENSSL_cleanse(req->secret_key, strlen(req->secret_key));
	jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(req, NULL);
	if (rc != 0)
		grpc_call_finish(c, GRPC_STATUS_INTERNAL,
				 "cannot check the secret now", NULL);
}

static void
init_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct initcall *ic = arg;
	struct device *d = ic->ic_dev;

	(void)c;
	(void)status;
	(void)msg;
	if (ic->ic_req != NULL) {
		OPENSSL_cleanse(ic->ic_req, ic->ic_len);
		free(ic->ic_req);
	}
	ic->ic_req = NULL;
	if (ic->ic_state == INIT_IDLE && d != NULL) {
		TAILQ_REMOVE(&d->dv_idle, ic, ic_entry);
		d->dv_nidle--;
		device_maybe_gone(ic->ic_b, d, "connection closed");
	}
	ic->ic_state = INIT_DONE;
	if (ic->ic_verify != NULL) {
		/* on_verified still comes and frees ic. */
		registry_cancel(ic->ic_verify);
		return;
	}
	free(ic);
}

static const struct grpc_call_ops init_ops = {
	.on_message = unary_collect,
	.on_half_close = init_half_close,
	.on_end = init_on_end,
};

static void
handle_initialize(struct grpc_call *c, void *arg)
{
	struct initcall *ic = initcall_new(arg, c);

	grpc_call_set_max_message(c, BROKER_MAX_UNARY);
	if (ic != NULL) {
		ic->ic_state = INIT_AUTH;
		grpc_call_set_ops(c, &init_ops, ic);
	}
}

/* Operator sessions. */

static void
os_hold(struct opsess *os)
{
	os->os_busy++;
}

static void
on_os_timer_closed(uv_handle_t *h)
{
	struct opsess *os = h->data;

	ncframe_free(&os->os_nf);
	buf_free(&os->os_line);
	free(os);
}

/* Frees the session once neither call is left and nobody holds it. */
static void
os_maybe_free(struct opsess *os)
{
	if (os->os_busy > 0 || os->os_op != NULL || os->os_dev != NULL ||
	    os->os_freeing)
		return;
	os->os_freeing = 1;
	os_unlist(os);
	LIST_REMOVE(os, os_all);
	if (os->os_devp != NULL) {
		struct device *d = os->os_devp;

		os->os_devp = NULL;
		d->dv_nsessions--;
		/* A request waiting at the session limit may go now. */
		os_try_grant(os->os_b, d);
		device_maybe_gone(os->os_b, d, "last session ended");
	}
	uv_close((uv_handle_t *)&os->os_timer, on_os_timer_closed);
}

static void
os_release(struct opsess *os)
{
	os->os_busy--;
	os_maybe_free(os);
}

static void
os_unlist(struct opsess *os)
{
	if (!os->os_listed)
		return;
	TAILQ_REMOVE(os->os_state == OS_WAITING ? &os->os_b->b_waiting
						: &os->os_b->b_granted,
		     os, os_entry);
	os->os_listed = 0;
}

static const char *
os_type_name(const struct opsess *os)
{
	return os->os_type == BROKER_SHELL ? "shell" : "netconf";
}

/*
 * A session that cannot queue its bytes would lose some: out of memory in
 * a connection ends that session, never the others.  The caller holds os.
 */
static void
send_failed(struct opsess *os, int rc)
{
	if (rc != 0 && rc != -EPIPE)
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED,
		       "out of memory while relaying the session");
}

static void
send_output(struct opsess *os, const Ncgrpc__Operator__V1__SessionOutput *o)
{
	if (os->os_op != NULL)
		send_failed(os, send_message(os->os_op, &o->base));
}

/*
 * Ends the session: the operator gets "ended" and status; the device's
 * stream, if still open, is cancelled (the agent then kills the process).
 */
static void
os_end(struct opsess *os, int status, const char *reason)
{
	Ncgrpc__Operator__V1__SessionOutput out =
		NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	Ncgrpc__Operator__V1__SessionEnded ended =
		NCGRPC__OPERATOR__V1__SESSION_ENDED__INIT;
	enum os_state prev = os->os_state;
	char id[24], to[24], from[24];

	if (prev == OS_ENDED)
		return;
	os_hold(os);
	os_unlist(os);
	os->os_state = OS_ENDED;
	uv_timer_stop(&os->os_timer);
	snprintf(os->os_reason, sizeof(os->os_reason), "%s", reason);
	if (prev == OS_ACTIVE) {
		snprintf(id, sizeof(id), "%" PRIu64, os->os_id);
		snprintf(to, sizeof(to), "%" PRIu64, os->os_to_dev);
		snprintf(from, sizeof(from), "%" PRIu64, os->os_from_dev);
		log_info("session %s (%s) on \"%s\" ended: %s", id,
			 os_type_name(os), os->os_device, reason);
		audit_event("session-end", "session", id, "device",
			    os->os_device, "type", os_type_name(os),
			    "bytes-to-device", to, "bytes-from-device", from,
			    "reason", reason, NULL);
		if (os->os_op != NULL) {
			ended.reason = (char *)(uintptr_t)reason;
			ended.bytes_to_device = os->os_to_dev;
			ended.bytes_from_device = os->os_from_dev;
			out.output_case =
				NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED;
			out.ended = &ended;
			send_output(os, &out);
		}
	}
	if (os->os_op != NULL &&
	    grpc_call_finish(os->os_op, status,
			     status == GRPC_STATUS_OK ? NULL : reason,
			     NULL) == -ENOMEM && os->os_op != NULL)
		grpc_call_cancel(os->os_op);
	if (os->os_dev != NULL && !os->os_dev_finished)
		grpc_call_cancel(os->os_dev);
	os_release(os);
}

static void
on_os_timeout(uv_timer_t *t)
{
	struct opsess *os = t->data;
	struct broker *b = os->os_b;
	struct device *d;
	char msg[400];

	if (os->os_state == OS_WAITING) {
		d = device_find(b, os->os_device);
		if (d == NULL) {
			snprintf(msg, sizeof(msg),
				 "device '%s' is not connected", os->os_device);
			os_end(os, GRPC_STATUS_NOT_FOUND, msg);
		} else if (d->dv_nsessions >= b->b_opts.bo_session_limit) {
			snprintf(msg, sizeof(msg),
				 "device '%s' has reached its limit of %u "
				 "sessions",
				 os->os_device, b->b_opts.bo_session_limit);
			os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
		} else {
			snprintf(msg, sizeof(msg),
				 "no free connection to device '%s' (%u "
				 "sessions active)",
				 os->os_device, d->dv_nsessions);
			os_end(os, GRPC_STATUS_UNAVAILABLE, msg);
		}
	} else if (os->os_state == OS_GRANTED) {
		snprintf(msg, sizeof(msg),
			 "device '%s' did not open the session stream",
			 os->os_device);
		os_end(os, GRPC_STATUS_UNAVAILABLE, msg);
	}
}

static void
grant(struct opsess *os, struct initcall *ic)
{
	struct broker *b = os->os_b;
	struct device *d = ic->ic_dev;
	Jnx__Jet__Netconf__NcgrpcInitializeResponse resp =
		JNX__JET__NETCONF__NCGRPC_INITIALIZE_RESPONSE__INIT;
	struct grpc_mdlist tr = {0};
	const char *ct = os->os_type == BROKER_SHELL ? "csh" : "netconf";

	TAILQ_REMOVE(&d->dv_idle, ic, ic_entry);
	d->dv_nidle--;
	d->dv_nsessions++;
	os->os_devp = d;
	os_unlist(os);
	os->os_state = OS_GRANTED;
	os->os_devconn = ic->ic_conn;
	snprintf(os->os_peer, sizeof(os->os_peer), "%s", ic->ic_peer);
	TAILQ_INSERT_TAIL(&b->b_granted, os, os_entry);
	os->os_listed = 1;
	uv_timer_start(&os->os_timer, on_os_timeout,
		       b->b_opts.bo_join_timeout_ms, 0);
	ic->ic_state = INIT_GRANTED;
	resp.session_type = os->os_type == BROKER_SHELL
				    ? JNX__JET__NETCONF__SESSION_TYPE__CSH
				    : JNX__JET__NETCONF__SESSION_TYPE__NETCONF;
	grpc_md_add(&tr, "conn_type", ct, strlen(ct));
	send_message(ic->ic_call, &resp.base);
	grpc_call_finish(ic->ic_call, GRPC_STATUS_OK, NULL, &tr);
	grpc_md_free(&tr);
}

/* A device got an idle connection: the oldest waiting request takes it. */
static void
os_try_grant(struct broker *b, struct device *d)
{
	struct opsess *os, *next;

	for (os = TAILQ_FIRST(&b->b_waiting); os != NULL && d->dv_nidle > 0;
	     os = next) {
		next = TAILQ_NEXT(os, os_entry);
		if (strcmp(os->os_device, d->dv_id) != 0)
			continue;
		if (d->dv_nsessions >= b->b_opts.bo_session_limit)
			continue;
		grant(os, TAILQ_FIRST(&d->dv_idle));
	}
}

/* Input from the operator, to the device. */

static void
send_to_device(struct opsess *os, int kind, const uint8_t *data, size_t len,
	       uint64_t sig)
{
	Ncgrpc__Wire__CommandGetResponse r =
		NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	ProtobufCBinaryData bd = {.len = len, .data = (uint8_t *)(uintptr_t)data};

	uint8_t *clean = NULL;

	if (os->os_dev == NULL)
		return;
	/*
	 * proto3 strings must be valid UTF-8 and devices reject anything
	 * else: invalid bytes become U+FFFD (docs/protocol.md).
	 */
	if (len > 0 && !utf8_valid(data, len)) {
		if ((clean = malloc(len * 3)) == NULL) {
			send_failed(os, -ENOMEM);
			return;
		}
		bd.len = utf8_sanitize(data, len, clean);
		bd.data = clean;
	}
	if (kind == 1) {
		r.command_case =
			NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND;
		r.netconf_command = bd;
	} else if (kind == 2) {
		r.command_case =
			NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND;
		r.csh_command = bd;
	}
	r.kill_signal = sig;
	os->os_to_dev += len;
	send_failed(os, send_message(os->os_dev, &r.base));
	free(clean);
}

static void
audit_input(struct opsess *os, const char *what, const char *value)
{
	char id[24];

	snprintf(id, sizeof(id), "%" PRIu64, os->os_id);
	audit_event(what, "session", id, "device", os->os_device,
		    os->os_type == BROKER_SHELL ? "line" : "operation", value,
		    NULL);
}

static void
flush_lines(struct opsess *os, int final)
{
	const uint8_t *p, *nl;
	size_t len;
	char line[201];

	for (;;) {
		p = buf_data(&os->os_line);
		len = buf_len(&os->os_line);
		nl = memchr(p, '\n', len);
		if (nl == NULL) {
			if (!final || len == 0)
				return;
			nl = p + len;
		}
		snprintf(line, sizeof(line), "%.*s", (int)(nl - p),
			 (const char *)p);
		audit_input(os, "shell-line", line);
		send_to_device(os, 2, p, (size_t)(nl - p), 0);
		buf_consume(&os->os_line, (size_t)(nl - p) + (nl < p + len));
	}
}

/* Sends the whole NETCONF messages cut so far.  0 or the framer's error. */
static int
flush_netconf(struct opsess *os)
{
	const uint8_t *msg;
	size_t len;
	char op[128];
	int rc;

	while ((rc = ncframe_next(&os->os_nf, &msg, &len)) == 1) {
		if (ncframe_op_name(msg, len, op, sizeof(op)) == 0)
			audit_input(os,
				    strcmp(op, "hello") == 0 ? "netconf-hello"
							     : "netconf-rpc",
				    op);
		send_to_device(os, 1, msg, len, 0);
	}
	return rc;
}

/*
 * Shell input: whole lines go to the device one by one; only a line that
 * is still incomplete is kept, so only a single line over BROKER_MAX_LINE
 * fails (-ENOBUFS), whatever the size of the data message.
 */
static int
take_lines(struct opsess *os, const uint8_t *data, size_t len)
{
	const uint8_t *nl;
	size_t n;
	int rc;

	while (len > 0) {
		nl = memchr(data, '\n', len);
		n = nl != NULL ? (size_t)(nl - data) + 1 : len;
		if ((rc = buf_append(&os->os_line, data, n)) != 0)
			return rc;
		if (nl != NULL)
			flush_lines(os, 0);
		data += n;
		len -= n;
	}
	return 0;
}

static void
op_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct opsess *os = arg;
	Ncgrpc__Operator__V1__SessionInput *in;
	int rc = 0;

	in = ncgrpc__operator__v1__session_input__unpack(NULL, len, msg);
	if (in == NULL) {
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
		       "malformed SessionInput");
		return;
	}
	os_hold(os);
	switch (in->input_case) {
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA:
		if (os->os_type == BROKER_NETCONF) {
			rc = ncframe_feed(&os->os_nf, in->data.data,
					  in->data.len);
			if (rc == 0)
				rc = flush_netconf(os);
		} else
			rc = take_lines(os, in->data.data, in->data.len);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_SIGNAL:
		if (in->signal == 0 || in->signal > 64) {
			rc = -EINVAL;
			break;
		}
		audit_input(os, "signal",
			    in->signal == 2 ? "SIGINT" : "other");
		send_to_device(os, 0, NULL, 0, in->signal);
		break;
	default:
		rc = -EINVAL;
		break;
	}
	ncgrpc__operator__v1__session_input__free_unpacked(in, NULL);
	if (rc == -EMSGSIZE || rc == -ENOBUFS)
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED,
		       "input message or line too long");
	else if (rc == -EPROTO)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
		       "malformed NETCONF 1.1 chunked framing");
	else if (rc != 0)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
		       "unexpected SessionInput");
	else if (os->os_dev != NULL && os->os_op != NULL &&
		 (grpc_call_queued(os->os_dev) >= GRPC_CALL_HIWAT ||
		  (ncframe_mode(&os->os_nf) == NCFRAME_UNDECIDED &&
		   ncframe_pending(&os->os_nf) >= BROKER_MAX_PENDING)))
		/*
		 * A device that reads slowly stops the operator; so does a
		 * device whose hello has not decided the framing yet.  Once
		 * it is decided, a message being cut is bounded by
		 * BROKER_MAX_NETCONF_MSG and must be let complete.
		 */
		grpc_call_pause(c);
	os_release(os);
}

static void
op_on_half_close(struct grpc_call *c, void *arg)
{
	struct opsess *os = arg;

	(void)c;
	if (os->os_state != OS_ACTIVE)
		return;
	os_hold(os);
	/* A last shell line without its newline is still a line. */
	if (os->os_type == BROKER_SHELL)
		flush_lines(os, 1);
	else if (ncframe_eof(&os->os_nf) < 0 || flush_netconf(os) < 0)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
		       "input ended inside a NETCONF message");
	os_release(os);
}

static void
op_on_writable(struct grpc_call *c, void *arg)
{
	struct opsess *os = arg;

	(void)c;
	if (os->os_dev != NULL)
		grpc_call_resume(os->os_dev);
}

static void
op_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct opsess *os = arg;
	char why[200];

	(void)c;
	os->os_op = NULL;
	if (os->os_state != OS_ENDED) {
		snprintf(why, sizeof(why), "operator went away (%s%s%s)",
			 grpc_status_name(status), msg[0] ? ": " : "", msg);
		os_end(os, GRPC_STATUS_CANCELLED, why);
	}
	os_maybe_free(os);
}

static const struct grpc_call_ops op_ops = {
	.on_message = op_on_message,
	.on_half_close = op_on_half_close,
	.on_writable = op_on_writable,
	.on_end = op_on_end,
};

void
broker_session_open(struct broker *b, struct grpc_call *op,
		    const char *device_id, enum broker_session_type type,
		    unsigned wait_ms, uid_t uid)
{
	struct opsess *os;
	struct device *d;
	char msg[400];

	if ((os = calloc(1, sizeof(*os))) == NULL) {
		grpc_call_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "out of memory", NULL);
		return;
	}
	os->os_b = b;
	LIST_INSERT_HEAD(&b->b_sessions, os, os_all);
	os->os_op = op;
	os->os_type = type;
	os->os_uid = uid;
	snprintf(os->os_device, sizeof(os->os_device), "%s", device_id);
	ncframe_init(&os->os_nf, BROKER_MAX_NETCONF_MSG);
	buf_init(&os->os_line, BROKER_MAX_LINE);
	uv_timer_init(b->b_loop, &os->os_timer);
	os->os_timer.data = os;
	grpc_call_set_ops(op, &op_ops, os);
	/* Input waits until the device's stream is there. */
	grpc_call_pause(op);
	os->os_state = OS_WAITING;
	TAILQ_INSERT_TAIL(&b->b_waiting, os, os_entry);
	os->os_listed = 1;
	d = device_find(b, device_id);
	/* Only a device that may connect is worth the wait. */
	if (d == NULL && (b->b_reg == NULL || !registry_has(b->b_reg, device_id))) {
		snprintf(msg, sizeof(msg), "device '%s' is not registered",
			 device_id);
		os_end(os, GRPC_STATUS_NOT_FOUND, msg);
		return;
	}
	if (d != NULL && d->dv_nsessions >= b->b_opts.bo_session_limit) {
		snprintf(msg, sizeof(msg),
			 "device '%s' has reached its limit of %u sessions",
			 device_id, b->b_opts.bo_session_limit);
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
		return;
	}
	if (d != NULL && d->dv_nidle > 0) {
		grant(os, TAILQ_FIRST(&d->dv_idle));
		return;
	}
	uv_timer_start(&os->os_timer, on_os_timeout,
		       wait_ms != 0 ? wait_ms : b->b_opts.bo_session_wait_ms,
		       0);
}

/* Device side: CommandGet, joined to its operator. */

static void
dev_on_message(struct grpc_call *c, const uint8_t *msg, size_t len,
	       void *arg)
{
	struct opsess *os = arg;
	Ncgrpc__Wire__CommandGetRequest *req;
	Ncgrpc__Operator__V1__SessionOutput out =
		NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;

	req = ncgrpc__wire__command_get_request__unpack(NULL, len, msg);
	if (req == NULL) {
		os_end(os, GRPC_STATUS_UNAVAILABLE,
		       "device sent a malformed CommandGet request");
		return;
	}
	os_hold(os);
	os->os_from_dev += req->message.len;
	if (os->os_type == BROKER_NETCONF) {
		ncframe_observe_device(&os->os_nf, req->message.data,
				       req->message.len);
		/* The framing may have just been decided. */
		if (flush_netconf(os) < 0) {
			ncgrpc__wire__command_get_request__free_unpacked(req,
									 NULL);
			os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
			       "malformed NETCONF framing from the operator");
			os_release(os);
			return;
		}
		if (os->os_op != NULL && os->os_dev != NULL &&
		    ncframe_pending(&os->os_nf) < BROKER_MAX_PENDING &&
		    grpc_call_queued(os->os_dev) < GRPC_CALL_HIWAT)
			grpc_call_resume(os->os_op);
	}
	out.output_case = NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA;
	out.data = req->message;
	send_output(os, &out);
	ncgrpc__wire__command_get_request__free_unpacked(req, NULL);
	/* An operator that reads slowly stops the device. */
	if (os->os_op != NULL && os->os_dev != NULL &&
	    grpc_call_queued(os->os_op) >= GRPC_CALL_HIWAT)
		grpc_call_pause(c);
	os_release(os);
}

static void
dev_on_half_close(struct grpc_call *c, void *arg)
{
	struct opsess *os = arg;

	/*
	 * The backend exited: the device closed the stream.  The session
	 * ends before the device's call is finished: finishing can end the
	 * call on the spot (grpc.h), and that must not read as a device that
	 * vanished.
	 */
	os_hold(os);
	os->os_dev_finished = 1;
	os_end(os, GRPC_STATUS_OK, "device closed the session");
	if (os->os_dev != NULL)
		grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
	os_release(os);
}

static void
dev_on_writable(struct grpc_call *c, void *arg)
{
	struct opsess *os = arg;

	(void)c;
	if (os->os_op != NULL)
		grpc_call_resume(os->os_op);
}

static void
dev_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct opsess *os = arg;
	char why[200];

	(void)c;
	os->os_dev = NULL;
	if (os->os_state != OS_ENDED) {
		snprintf(why, sizeof(why), "device connection lost (%s%s%s)",
			 grpc_status_name(status), msg[0] ? ": " : "", msg);
		os_end(os, GRPC_STATUS_UNAVAILABLE, why);
	}
	os_maybe_free(os);
}

static const struct grpc_call_ops dev_ops = {
	.on_message = dev_on_message,
	.on_half_close = dev_on_half_close,
	.on_writable = dev_on_writable,
	.on_end = dev_on_end,
};

static void
handle_commandget(struct grpc_call *c, void *arg)
{
	struct broker *b = arg;
	struct grpc_conn *conn = grpc_call_conn(c);
	Ncgrpc__Operator__V1__SessionOutput out =
		NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	Ncgrpc__Operator__V1__SessionStarted st =
		NCGRPC__OPERATOR__V1__SESSION_STARTED__INIT;
	struct opsess *os;
	char id[24], uid[24];

	TAILQ_FOREACH(os, &b->b_granted, os_entry)
		if (os->os_devconn == conn)
			break;
	if (os == NULL) {
		grpc_call_finish(c, GRPC_STATUS_FAILED_PRECONDITION,
				 "no session was requested on this connection",
				 NULL);
		return;
	}
	os_unlist(os);
	uv_timer_stop(&os->os_timer);
	os->os_state = OS_ACTIVE;
	os->os_dev = c;
	os->os_id = ++b->b_next_session;
	grpc_call_set_ops(c, &dev_ops, os);
	snprintf(id, sizeof(id), "%" PRIu64, os->os_id);
	snprintf(uid, sizeof(uid), "%ld", (long)os->os_uid);
	log_info("session %s (%s) on \"%s\" started for uid %s", id,
		 os_type_name(os), os->os_device, uid);
	audit_event("session-start", "session", id, "operator-uid", uid,
		    "device", os->os_device, "type", os_type_name(os), "peer",
		    os->os_peer, NULL);
	os_hold(os);
	st.device_id = os->os_device;
	st.type = os->os_type == BROKER_SHELL ? NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL
					      : NCGRPC__OPERATOR__V1__SESSION_TYPE__NETCONF;
	st.peer = os->os_peer;
	st.session_id = os->os_id;
	out.output_case = NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED;
	out.started = &st;
	send_output(os, &out);
	if (os->os_op != NULL)
		grpc_call_resume(os->os_op);
	os_release(os);
}

/* Public. */

void
broker_conn_closed(struct broker *b, struct grpc_conn *conn)
{
	struct opsess *os, *next;

	for (os = TAILQ_FIRST(&b->b_granted); os != NULL; os = next) {
		next = TAILQ_NEXT(os, os_entry);
		if (os->os_devconn == conn)
			os_end(os, GRPC_STATUS_UNAVAILABLE,
			       "device connection closed before the session "
			       "started");
	}
}

int
broker_register_device_methods(struct broker *b, struct grpc_server *srv)
{
	int rc;

	if ((rc = grpc_server_add_method(srv, SVC "NcgrpcServerStatusGet",
					 handle_status, b)) != 0 ||
	    (rc = grpc_server_add_method(srv, SVC "NcgrpcInitialize",
					 handle_initialize, b)) != 0 ||
	    (rc = grpc_server_add_method(srv, SVC "NcgrpcCommandGet",
					 handle_commandget, b)) != 0)
		return rc;
	return 0;
}

int
broker_new(uv_loop_t *loop, const struct broker_opts *opts,
	   struct registry *reg, struct broker **out)
{
	struct broker *b;

	if ((b = calloc(1, sizeof(*b))) == NULL)
		return -ENOMEM;
	b->b_loop = loop;
	if (opts != NULL)
		b->b_opts = *opts;
	if (b->b_opts.bo_session_limit == 0)
		b->b_opts.bo_session_limit = 32;
	if (b->b_opts.bo_session_wait_ms == 0)
		b->b_opts.bo_session_wait_ms = 10000;
	if (b->b_opts.bo_join_timeout_ms == 0)
		b->b_opts.bo_join_timeout_ms = 15000;
	b->b_reg = reg;
	TAILQ_INIT(&b->b_waiting);
	TAILQ_INIT(&b->b_granted);
	TAILQ_INIT(&b->b_empty);
	LIST_INIT(&b->b_sessions);
	LIST_INIT(&b->b_watchers);
	uv_timer_init(loop, &b->b_linger);
	b->b_linger.data = b;
	uv_timer_init(loop, &b->b_trim);
	b->b_trim.data = b;
	*out = b;
	return 0;
}

void
broker_set_registry(struct broker *b, struct registry *reg)
{
	struct initcall *ic;
	struct device *d;
	size_t i;

	/* Checks in flight hold their own reference (registry.h). */
	registry_free(b->b_reg);
	b->b_reg = reg;
	b->b_reg_gen++;
	/*
	 * A device taken out of the registry keeps no idle connection: it
	 * was authenticated under the old registry.  Sessions running now
	 * are left to end on their own.
	 */
	for (i = 0; i < BROKER_BUCKETS; i++)
		for (d = b->b_buckets[i]; d != NULL; d = d->dv_next) {
			if (registry_has(reg, d->dv_id))
				continue;
			while ((ic = TAILQ_FIRST(&d->dv_idle)) != NULL) {
				TAILQ_REMOVE(&d->dv_idle, ic, ic_entry);
				d->dv_nidle--;
				ic->ic_state = INIT_DONE;
				ic->ic_dev = NULL;
				grpc_call_finish(ic->ic_call,
						 GRPC_STATUS_UNAUTHENTICATED,
						 "device removed from the registry",
						 NULL);
			}
			device_maybe_gone(b, d, "removed from the registry");
		}
}

static int
info_cmp(const void *a, const void *b)
{
	const struct broker_device_info *x = a, *y = b;

	return strcmp(x->bi_id, y->bi_id);
}

int
broker_devices(struct broker *b, struct broker_device_info **out, size_t *n)
{
	struct broker_device_info *v;
	struct device *d;
	size_t i, k = 0;

	if ((v = calloc(b->b_ndevices + 1, sizeof(*v))) == NULL)
		return -ENOMEM;
	for (i = 0; i < BROKER_BUCKETS; i++)
		for (d = b->b_buckets[i]; d != NULL; d = d->dv_next)
			device_info(d, &v[k++]);
	qsort(v, k, sizeof(*v), info_cmp);
	*out = v;
	*n = k;
	return 0;
}

size_t
broker_ndevices(const struct broker *b)
{
	return b->b_ndevices;
}

void *
broker_watch(struct broker *b, broker_watch_fn fn, void *arg)
{
	struct watcher *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->w_fn = fn;
	w->w_arg = arg;
	LIST_INSERT_HEAD(&b->b_watchers, w, w_entry);
	return w;
}

void
broker_unwatch(struct broker *b, void *handle)
{
	struct watcher *w = handle;

	(void)b;
	LIST_REMOVE(w, w_entry);
	free(w);
}

void
broker_shutdown(struct broker *b, const char *why)
{
	struct opsess *os, *next;
	struct initcall *ic;
	struct watcher *w, *wnext;
	struct device *d;
	struct broker_device_info none;
	size_t i;

	/* Watchers hear it first, and end their streams. */
	memset(&none, 0, sizeof(none));
	for (w = LIST_FIRST(&b->b_watchers); w != NULL; w = wnext) {
		wnext = LIST_NEXT(w, w_entry);
		w->w_fn(BROKER_EV_SHUTDOWN, &none, why, w->w_arg);
	}

	for (os = LIST_FIRST(&b->b_sessions); os != NULL; os = next) {
		next = LIST_NEXT(os, os_all);
		os_hold(os);
		os_end(os, GRPC_STATUS_UNAVAILABLE, why);
		next = LIST_NEXT(os, os_all);
		os_release(os);
	}
	/* Idle long polls would otherwise hold the shutdown to its grace. */
	for (i = 0; i < BROKER_BUCKETS; i++)
		for (d = b->b_buckets[i]; d != NULL; d = d->dv_next)
			while ((ic = TAILQ_FIRST(&d->dv_idle)) != NULL) {
				TAILQ_REMOVE(&d->dv_idle, ic, ic_entry);
				d->dv_nidle--;
				ic->ic_state = INIT_DONE;
				ic->ic_dev = NULL;
				grpc_call_finish(ic->ic_call,
						 GRPC_STATUS_UNAVAILABLE, why,
						 NULL);
			}
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct broker *b = h->data;
	struct device *d;
	size_t i;

	if (--b->b_open_timers > 0)
		return;

	/* Lingering devices are all that can be left. */
	for (i = 0; i < BROKER_BUCKETS; i++)
		while ((d = b->b_buckets[i]) != NULL) {
			b->b_buckets[i] = d->dv_next;
			free(d->dv_id);
			free(d);
		}
	registry_free(b->b_reg);
	free(b);
}

void
broker_free(struct broker *b)
{
	struct watcher *w;

	/* The servers were shut down first: every call has ended. */
	while ((w = LIST_FIRST(&b->b_watchers)) != NULL)
		broker_unwatch(b, w);
	b->b_open_timers = 2;
	uv_close((uv_handle_t *)&b->b_linger, on_timer_closed);
	uv_close((uv_handle_t *)&b->b_trim, on_timer_closed);
}
