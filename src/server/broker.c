/*
 * The device half of the broker: the device table, ServerStatusGet, the
 * Initialize calls (authentication off the loop, the idle pool, linger),
 * watchers, and the public broker_* entry points.  Operator sessions are in
 * relay.c; what both share is in broker_int.h, with the state machines.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "addr.h"
#include "audit.h"
#include "broker_int.h"
#include "err.h"
#include "log.h"
#include "srvmetrics.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "ncgrpc_wire.pb-c.h"
#include "pbwire.h"
#include "preauth.h"
#include "registry.h"

static void on_linger(uv_timer_t *);

/* Devices. */

static uint32_t
hash_id(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

struct device *
broker_device_find(struct broker *b, const char *id)
{
	struct device *d;

	for (d = b->b_buckets[hash_id(id) % BROKER_BUCKETS]; d != NULL;
	     d = d->dv_next)
		if (strcmp(d->dv_id, id) == 0)
			return d;
	return NULL;
}

/*
 * A device lingering without connections is not here: in a cluster it may
 * already be on another node, and a session must be forwarded there rather
 * than wait for it on this one (operator.c).
 */
int
broker_device_here(struct broker *b, const char *id)
{
	const struct device *d = broker_device_find(b, id);

	return d != NULL && (d->dv_nidle > 0 || d->dv_nsessions > 0);
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
	struct device *d = broker_device_find(b, id);
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
	snprintf(d->dv_peer, sizeof(d->dv_peer), "%.63s", peer);
	TAILQ_INIT(&d->dv_idle);
	h = hash_id(id) % BROKER_BUCKETS;
	d->dv_next = b->b_buckets[h];
	b->b_buckets[h] = d;
	b->b_ndevices++;
	metrics_gauge_add(srvm.sm_devices, 0, 0, 1);
	log_info("device \"%s\" connected from %s (instance %" PRIu64 ")", id,
	         peer, instance);
	audit_event("device-connected", "device", id, "peer", peer, NULL);
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
	metrics_gauge_add(srvm.sm_devices, 0, 0, -1);
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
void
broker_device_maybe_gone(struct broker *b, struct device *d, const char *why)
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
			uv_timer_start(
			    &b->b_linger, on_linger,
			    BROKER_LINGER_MS - (now - d->dv_empty_since), 0);
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

static void
status_half_close(struct grpc_call *c, void *arg)
{
	Jnx__Jet__Netconf__NcgrpcServerStatusGetResponse resp =
	    JNX__JET__NETCONF__NCGRPC_SERVER_STATUS_GET_RESPONSE__INIT;

	(void)arg;
	resp.status = JNX__JET__NETCONF__STATUS_RESPONSE__SUCCESS;
	grpc_call_send_pb(c, &resp.base);
	grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
}

/* The last of an Initialize or ServerStatusGet call (ic_req already gone). */
static void
initcall_free(struct initcall *ic)
{
	free(ic->ic_id);
	free(ic);
}

static void
status_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct initcall *ic = arg;

	(void)c;
	(void)status;
	(void)msg;
	free(ic->ic_req);
	initcall_free(ic);
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
	ic->ic_peer = *grpc_conn_peer_addr(ic->ic_conn);
	return ic;
}

static void
handle_status(struct grpc_call *c, void *arg)
{
	struct broker *b = arg;
	struct initcall *ic = initcall_new(b, c);

	/*
	 * Not counted for the heap trim: a device probes before each
	 * Initialize on the same connection, and the Initialize counts.
	 */
	grpc_call_set_max_message(c, BROKER_MAX_UNARY);
	if (ic != NULL)
		grpc_call_set_ops(c, &status_ops, ic);
}

/* Device side: Initialize. */

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

	if ((result == -EAGAIN || result == -EBUSY) && pa != NULL) {
		if (!preauth_auth_refused(pa, why, ic->ic_id,
		                          ic->ic_peer.pe_host))
			return;
	}
	if (result == -EBUSY) {
		log_info("device \"%s\" from %s: busy, told to retry",
		         ic->ic_id, ic->ic_peer.pe_text);
		return;
	}
	log_warnx("device \"%s\" from %s: authentication failed (%s)",
	          ic->ic_id, ic->ic_peer.pe_text, why);
	audit_event("auth-failed", "device", ic->ic_id, "peer",
	            ic->ic_peer.pe_text, "reason", why, NULL);
}

/*
 * Ticket appdata: a version byte, the id's length and the id, then the
 * registry_proof() of the id, its entry and its secret.
 */
#define RESUME_V1 1

/*
 * Before the check of a device's secret: if the connection resumed a TLS
 * session whose ticket proves this id with this very secret, fill the
 * registry's cache so that no scrypt runs; and compute the proof for the
 * ticket this connection gets once the device is in.
 */
static void
resume_check(struct initcall *ic, const uint8_t *secret, size_t len)
{
	struct broker *b = ic->ic_b;
	const uint8_t *ad, *key = b->b_opts.bo_resume_key;
	size_t adlen, idlen = strlen(ic->ic_id);

	if (grpc_conn_ticket_appdata(ic->ic_conn, &ad, &adlen) == 0 &&
	    adlen == 2 + idlen + REGISTRY_PROOF_LEN && ad[0] == RESUME_V1 &&
	    ad[1] == idlen && memcmp(ad + 2, ic->ic_id, idlen) == 0 &&
	    registry_accept_proof(b->b_reg, ic->ic_id, secret, len, key,
	                          sizeof(b->b_opts.bo_resume_key),
	                          ad + 2 + idlen) == 0)
		ic->ic_resumed = 1;
	ic->ic_has_proof =
	    registry_proof(b->b_reg, ic->ic_id, secret, len, key,
	                   sizeof(b->b_opts.bo_resume_key), ic->ic_proof) == 0;
}

/* The device is in: its connection gets a ticket to come back with. */
static void
resume_issue(struct initcall *ic)
{
	uint8_t ad[2 + 255 + REGISTRY_PROOF_LEN];
	size_t idlen = strlen(ic->ic_id);
	int rc;

	if (!ic->ic_has_proof || idlen > 255)
		return;
	ad[0] = RESUME_V1;
	ad[1] = (uint8_t)idlen;
	memcpy(ad + 2, ic->ic_id, idlen);
	memcpy(ad + 2 + idlen, ic->ic_proof, REGISTRY_PROOF_LEN);
	rc = grpc_conn_issue_ticket(ic->ic_conn, ad,
	                            2 + idlen + REGISTRY_PROOF_LEN);
	if (rc != 0 && rc != -ENOTSUP)
		log_debug("device \"%s\" from %s: no session ticket: %s",
		          ic->ic_id, ic->ic_peer.pe_text, ncg_strerror(rc));
	OPENSSL_cleanse(ad, sizeof(ad));
	OPENSSL_cleanse(ic->ic_proof, sizeof(ic->ic_proof));
	ic->ic_has_proof = 0;
}

static void
count_refusal(int result)
{
	if (result == -EAGAIN)
		metrics_count(srvm.sm_auth_throttled, SRVM_THROTTLE_FAILURES, 0,
		              1);
	else if (result == -EBUSY)
		metrics_count(srvm.sm_auth_throttled, SRVM_THROTTLE_BUSY, 0, 1);
	else
		metrics_count(srvm.sm_auth_failures,
		              result == -ENOENT   ? SRVM_AUTH_UNKNOWN
		              : result == -EACCES ? SRVM_AUTH_BAD_SECRET
		                                  : SRVM_AUTH_ERROR,
		              0, 1);
}

static void
on_verified(void *arg, int result)
{
	struct initcall *ic = arg;
	struct broker *b = ic->ic_b;
	struct device *d;
	const char *why;
	int ev = -1; /* the event for watchers, once d is up to date */

	ic->ic_verify = NULL;
	if (ic->ic_state == INIT_DONE) {
		/* The call ended while we were checking; on_end left ic to us.
		 */
		initcall_free(ic);
		return;
	}
	if (result != 0) {
		why = result == -ENOENT   ? "unknown-device"
		      : result == -EACCES ? "bad-secret"
		      : result == -EAGAIN ? "throttled"
		      : result == -EBUSY  ? "busy"
		                          : "error";
		report_refusal(ic, result, why);
		count_refusal(result);
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
		         ic->ic_id, ic->ic_peer.pe_text);
		grpc_call_finish(ic->ic_call, GRPC_STATUS_UNAVAILABLE,
		                 "device registry changed; try again", NULL);
		return;
	}
	grpc_conn_set_trusted(ic->ic_conn);
	if (b->b_opts.bo_resume)
		resume_issue(ic);
	d = broker_device_find(b, ic->ic_id);
	if (d != NULL && d->dv_instance != ic->ic_instance) {
		struct initcall *old;

		ev = BROKER_EV_RESTARTED;
		log_info("device \"%s\" restarted (instance %" PRIu64
		         " -> %" PRIu64 ")",
		         d->dv_id, d->dv_instance, ic->ic_instance);
		audit_event("device-restarted", "device", d->dv_id, "peer",
		            ic->ic_peer.pe_text, NULL);
		d->dv_instance = ic->ic_instance;
		d->dv_since = (int64_t)time(NULL);
		/* The old instance's idle connections are stale now. */
		while ((old = TAILQ_FIRST(&d->dv_idle)) != NULL) {
			TAILQ_REMOVE(&d->dv_idle, old, ic_entry);
			d->dv_nidle--;
			metrics_gauge_add(srvm.sm_idle, 0, 0, -1);
			broker_initcall_set_state(old, INIT_DONE);
			old->ic_dev = NULL;
			grpc_call_finish(old->ic_call, GRPC_STATUS_UNAVAILABLE,
			                 "superseded by a new instance of the "
			                 "device",
			                 NULL);
		}
	}
	if (d == NULL) {
		if ((d = device_get(b, ic->ic_id, ic->ic_instance,
		                    ic->ic_peer.pe_text)) == NULL) {
			grpc_call_finish(ic->ic_call,
			                 GRPC_STATUS_RESOURCE_EXHAUSTED,
			                 "out of memory", NULL);
			return;
		}
		ev = BROKER_EV_CONNECTED;
	}
	snprintf(d->dv_peer, sizeof(d->dv_peer), "%.63s", ic->ic_peer.pe_text);
	ic->ic_dev = d;
	broker_initcall_set_state(ic, INIT_IDLE);
	/* Newest first: an old idle connection may have died in a NAT. */
	TAILQ_INSERT_HEAD(&d->dv_idle, ic, ic_entry);
	d->dv_nidle++;
	metrics_gauge_add(srvm.sm_idle, 0, 0, 1);
	log_debug("device \"%s\": idle connection from %s (%u idle%s)",
	          d->dv_id, ic->ic_peer.pe_text, d->dv_nidle,
	          ic->ic_resumed ? ", tls resumed" : "");
	/*
	 * Watchers see the device as it is now: its new peer, its instance's
	 * idle connection (docs/operator-api.md), not the state before.
	 */
	if (ev == BROKER_EV_CONNECTED)
		notify(b, ev, d, "connected");
	else if (ev == BROKER_EV_RESTARTED)
		notify(b, ev, d, "new instance id");
	relay_try_grant(b, d);
}

/*
 * The registry's device id syntax, checked before the id is logged: an
 * unauthenticated peer must not be able to write newlines or escape
 * sequences into our log.
 */
static int
device_id_ok(const char *id)
{
	size_t n =
	    strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	               "0123456789._:@-");

	return n > 0 && n < 256 && id[n] == '\0';
}

/*
 * Whether an Initialize is the next connection of a device whose idle one
 * was just given to a session (its instance has sessions and no idle
 * connection): it reuses the memory of the one before, and is no arrival
 * for the heap trim.  A device that reconnects while its old idle
 * connections are still listed (a link flap shorter than the dead-peer
 * timeout, a restart) counts as an arrival.
 */
static int
init_replaces(struct broker *b,
              const Jnx__Jet__Netconf__NcgrpcInitializeRequest *req)
{
	const struct device *d = broker_device_find(b, req->device_id);

	return d != NULL && d->dv_nsessions > 0 && d->dv_nidle == 0 &&
	       d->dv_instance == req->instance_id;
}

static void
init_half_close(struct grpc_call *c, void *arg)
{
	struct initcall *ic = arg;
	struct broker *b = ic->ic_b;
	Jnx__Jet__Netconf__NcgrpcInitializeRequest *req;
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
	/*
	 * Counted for the heap trim before the secret check: the checks of a
	 * storm are paced by the KDF, its handshakes are not.
	 */
	if (req == NULL || !init_replaces(b, req))
		heaptrim_note(&b->b_trim);
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
	if ((ic->ic_id = strdup(req->device_id)) == NULL) {
		OPENSSL_cleanse(req->secret_key, strlen(req->secret_key));
		jnx__jet__netconf__ncgrpc_initialize_request__free_unpacked(
		    req, NULL);
		grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	ic->ic_instance = req->instance_id;
	ic->ic_reg_gen = b->b_reg_gen;
	if (b->b_opts.bo_resume)
		resume_check(ic, (const uint8_t *)req->secret_key,
		             strlen(req->secret_key));
	rc = registry_verify(b->b_reg, b->b_loop, req->device_id,
	                     (const uint8_t *)req->secret_key,
	                     strlen(req->secret_key), ic->ic_peer.pe_host,
	                     on_verified, ic, &ic->ic_verify);
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
		metrics_gauge_add(srvm.sm_idle, 0, 0, -1);
		broker_device_maybe_gone(ic->ic_b, d, "connection closed");
	}
	broker_initcall_set_state(ic, INIT_DONE);
	if (ic->ic_verify != NULL) {
		/* on_verified still comes and frees ic. */
		registry_cancel(ic->ic_verify);
		return;
	}
	initcall_free(ic);
}

static const struct grpc_call_ops init_ops = {
    .on_message = unary_collect,
    .on_half_close = init_half_close,
    .on_end = init_on_end,
};

static void
handle_initialize(struct grpc_call *c, void *arg)
{
	struct broker *b = arg;
	struct initcall *ic = initcall_new(b, c);

	grpc_call_set_max_message(c, BROKER_MAX_UNARY);
	if (ic != NULL) {
		const struct grpc_md *m =
		    grpc_md_get(grpc_call_metadata(c), TERMEXT_MD_MODE);

		/* The device's offer of the raw terminal (termext.h). */
		ic->ic_raw_offer =
		    m != NULL && m->md_len == strlen(TERMEXT_RAW) &&
		    memcmp(m->md_value, TERMEXT_RAW, m->md_len) == 0;
		ic->ic_state = INIT_AUTH;
		grpc_call_set_ops(c, &init_ops, ic);
	}
}

/* The one place an Initialize call changes state: legal moves only. */
void
broker_initcall_set_state(struct initcall *ic, enum init_state to)
{
	enum init_state from = ic->ic_state;

	assert(to == INIT_DONE || (from == INIT_AUTH && to == INIT_IDLE) ||
	       (from == INIT_IDLE && to == INIT_GRANTED));
	(void)from;
	ic->ic_state = to;
}

/* Public. */

void
broker_session_open(struct broker *b, struct grpc_call *op,
                    const char *device_id, enum broker_session_type type,
                    unsigned wait_ms, const struct broker_ident *ident,
                    const struct broker_terminal *term)
{
	relay_open(b, op, device_id, type, wait_ms, ident, term);
}

void
broker_conn_closed(struct broker *b, struct grpc_conn *conn)
{
	relay_conn_closed(b, conn);
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
	                                 relay_commandget, b)) != 0)
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
	heaptrim_init(&b->b_trim, loop, 0, 0);
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
				metrics_gauge_add(srvm.sm_idle, 0, 0, -1);
				broker_initcall_set_state(ic, INIT_DONE);
				ic->ic_dev = NULL;
				grpc_call_finish(
				    ic->ic_call, GRPC_STATUS_UNAUTHENTICATED,
				    "device removed from the registry", NULL);
			}
			broker_device_maybe_gone(b, d,
			                         "removed from the registry");
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

	relay_shutdown(b, why);
	/* Idle long polls would otherwise hold the shutdown to its grace. */
	for (i = 0; i < BROKER_BUCKETS; i++)
		for (d = b->b_buckets[i]; d != NULL; d = d->dv_next)
			while ((ic = TAILQ_FIRST(&d->dv_idle)) != NULL) {
				TAILQ_REMOVE(&d->dv_idle, ic, ic_entry);
				d->dv_nidle--;
				metrics_gauge_add(srvm.sm_idle, 0, 0, -1);
				broker_initcall_set_state(ic, INIT_DONE);
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
	heaptrim_close(&b->b_trim, on_timer_closed, b);
}
