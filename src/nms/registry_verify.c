/*
 * The device registry, part 2 of 3: verifying a device's secret (scrypt in
 * libuv's threadpool, with a success cache) and the throttle that bounds
 * failures and work per (device, peer), per peer and in total.  See
 * registry.h for the contract.
 */
#include <sys/queue.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <uv.h>

#include "registry_int.h"

struct throttle_entry {
	struct throttle_entry *te_next; /* hash chain */
	TAILQ_ENTRY(throttle_entry) te_lru;
	uint64_t te_start; /* window start, ms */
	unsigned te_fails;
	unsigned te_inflight;
	size_t te_keylen;
	uint8_t te_key[];
};

TAILQ_HEAD(throttle_list, throttle_entry);
TAILQ_HEAD(req_list, registry_req);

struct throttle_table {
	struct throttle_entry **tt_tab;
	size_t tt_tabsize;
	size_t tt_count;
	/* By window start, newest first: expired entries gather at the tail. */
	struct throttle_list tt_lru;
	unsigned tt_max_fails;
};

/*
 * Failures count per (device id, peer) and per peer, never per id alone:
 * an attacker elsewhere must not be able to lock a device out.  rt_dev only
 * counts the checks in flight per id.
 */
struct registry_throttle {
	unsigned rt_refs;
	struct throttle_table rt_dev;
	struct throttle_table rt_peer;
	struct throttle_table rt_pair;
	uint64_t rt_window;
	unsigned rt_inflight;      /* per device id */
	unsigned rt_peer_inflight; /* per peer: a whole NAT site is one peer */
	unsigned rt_total_max;     /* scrypt checks handed to the threadpool */
	unsigned rt_total;
	/*
	 * Checks that found rt_total at rt_total_max wait here in order, at
	 * most rt_wait_max of them, and go to the threadpool as earlier ones
	 * finish.  They count as in flight
	 * for their id and peer while they wait.
	 */
	struct req_list rt_waitq;
	unsigned rt_nwait;
	unsigned rt_wait_max;
	size_t rt_max;
	uint64_t (*rt_now)(void *);
	void *rt_now_arg;
};

struct registry_req {
	union {
		uv_work_t u_work;
		uv_timer_t u_timer;
	} rq_u;
	int rq_queued;  /* rq_u.u_work is in use, else rq_u.u_timer */
	int rq_waiting; /* on rt_waitq: neither is in use yet */
	int rq_slot;    /* counted in rt_total */
	TAILQ_ENTRY(registry_req) rq_wait;
	uv_loop_t *rq_loop;
	struct registry *rq_reg;
	struct registry_entry *rq_entry; /* NULL: unknown device */
	struct registry_throttle *rq_thr;
	registry_verify_cb rq_cb;
	void *rq_arg;
	uint8_t *rq_secret;
	size_t rq_len;
	int rq_result;
	int rq_cancelled;
	int rq_has_mac;
	uint8_t rq_mac[MAC_LEN];
	int rq_idvalid;
	size_t rq_idlen;
	char rq_id[REGISTRY_ID_MAX + 1];
	size_t rq_peerlen; /* 0: no peer */
	uint8_t rq_peer[PEERKEY_MAX];
	size_t rq_pairlen; /* 0: no valid id */
	uint8_t rq_pair[PAIRKEY_MAX];
	int rq_counted; /* in the in-flight counts */
};

/* --- throttling --- */

static uint64_t
clock_default(void *arg)
{
	(void)arg;
	return uv_hrtime() / 1000000;
}

int
registry_throttle_new(struct registry_throttle **out)
{
	struct registry_throttle *thr;

	reg_keys_once();
	if ((thr = calloc(1, sizeof(*thr))) == NULL)
		return -ENOMEM;
	thr->rt_refs = 1;
	TAILQ_INIT(&thr->rt_dev.tt_lru);
	TAILQ_INIT(&thr->rt_peer.tt_lru);
	TAILQ_INIT(&thr->rt_pair.tt_lru);
	TAILQ_INIT(&thr->rt_waitq);
	thr->rt_dev.tt_max_fails = UINT_MAX;
	thr->rt_pair.tt_max_fails = REGISTRY_THROTTLE_FAILURES;
	thr->rt_peer.tt_max_fails = REGISTRY_THROTTLE_FAILURES;
	thr->rt_total_max = REGISTRY_THROTTLE_TOTAL_INFLIGHT;
	thr->rt_wait_max = REGISTRY_THROTTLE_WAITING;
	thr->rt_window = REGISTRY_THROTTLE_WINDOW_MS;
	thr->rt_inflight = REGISTRY_THROTTLE_INFLIGHT;
	thr->rt_peer_inflight = REGISTRY_THROTTLE_PEER_INFLIGHT;
	thr->rt_max = REGISTRY_THROTTLE_ENTRIES;
	thr->rt_now = clock_default;
	*out = thr;
	return 0;
}

static void
tt_clear(struct throttle_table *tt)
{
	struct throttle_entry *te;

	while ((te = TAILQ_FIRST(&tt->tt_lru)) != NULL) {
		TAILQ_REMOVE(&tt->tt_lru, te, te_lru);
		free(te);
	}
	free(tt->tt_tab);
	tt->tt_tab = NULL;
	tt->tt_tabsize = tt->tt_count = 0;
}

void
registry_throttle_free(struct registry_throttle *thr)
{
	if (thr == NULL || --thr->rt_refs > 0)
		return;
	tt_clear(&thr->rt_dev);
	tt_clear(&thr->rt_peer);
	tt_clear(&thr->rt_pair);
	free(thr);
}

void
registry_set_throttle(struct registry *reg, struct registry_throttle *thr)
{
	if (thr != NULL)
		thr->rt_refs++;
	registry_throttle_free(reg->r_throttle);
	reg->r_throttle = thr;
}

void
registry_throttle_set_limits(struct registry_throttle *thr,
                             unsigned dev_failures, unsigned peer_failures,
                             uint64_t window_ms, unsigned inflight,
                             size_t max_entries)
{
	if (dev_failures != 0)
		thr->rt_pair.tt_max_fails = dev_failures;
	if (peer_failures != 0)
		thr->rt_peer.tt_max_fails = peer_failures;
	if (window_ms != 0)
		thr->rt_window = window_ms;
	if (inflight != 0)
		thr->rt_inflight = inflight;
	if (max_entries != 0)
		thr->rt_max = max_entries;
}

void
registry_throttle_set_checks(struct registry_throttle *thr,
                             unsigned peer_inflight, unsigned total_inflight,
                             unsigned waiting)
{
	if (peer_inflight != 0)
		thr->rt_peer_inflight = peer_inflight;
	if (total_inflight != 0)
		thr->rt_total_max = total_inflight;
	if (waiting != 0)
		thr->rt_wait_max = waiting;
}

unsigned
registry_throttle_inflight(const struct registry_throttle *thr)
{
	return thr->rt_total;
}

unsigned
registry_throttle_waiting(const struct registry_throttle *thr)
{
	return thr->rt_nwait;
}

void
registry_throttle_set_clock(struct registry_throttle *thr,
                            uint64_t (*now_ms)(void *arg), void *arg)
{
	thr->rt_now = now_ms != NULL ? now_ms : clock_default;
	thr->rt_now_arg = now_ms != NULL ? arg : NULL;
}

size_t
registry_throttle_count(const struct registry_throttle *thr)
{
	return thr->rt_dev.tt_count + thr->rt_peer.tt_count +
	       thr->rt_pair.tt_count;
}

static struct throttle_entry **
tt_slot(struct throttle_table *tt, const uint8_t *key, size_t keylen)
{
	struct throttle_entry **tp;

	if (tt->tt_tabsize == 0)
		return NULL;
	tp = &tt->tt_tab[reg_keyhash(key, keylen) & (tt->tt_tabsize - 1)];
	for (; *tp != NULL; tp = &(*tp)->te_next)
		if ((*tp)->te_keylen == keylen &&
		    memcmp((*tp)->te_key, key, keylen) == 0)
			return tp;
	return tp;
}

static struct throttle_entry *
tt_lookup(struct throttle_table *tt, const uint8_t *key, size_t keylen)
{
	struct throttle_entry **tp = tt_slot(tt, key, keylen);

	return tp != NULL ? *tp : NULL;
}

static void
tt_remove(struct throttle_table *tt, struct throttle_entry *te)
{
	struct throttle_entry **tp = tt_slot(tt, te->te_key, te->te_keylen);

	/* te is in the table, so the table has slots and tp points at te. */
	if (tp == NULL || *tp != te)
		abort();
	*tp = te->te_next;
	TAILQ_REMOVE(&tt->tt_lru, te, te_lru);
	tt->tt_count--;
	free(te);
}

static int
tt_grow(struct throttle_table *tt)
{
	struct throttle_entry **tab, *te;
	size_t size, b;

	size = tt->tt_tabsize == 0 ? 64 : tt->tt_tabsize * 2;
	if ((tab = calloc(size, sizeof(*tab))) == NULL)
		return -ENOMEM;
	/* Every entry is on the list, which is easier to walk than chains. */
	TAILQ_FOREACH(te, &tt->tt_lru, te_lru)
	{
		b = reg_keyhash(te->te_key, te->te_keylen) & (size - 1);
		te->te_next = tab[b];
		tab[b] = te;
	}
	free(tt->tt_tab);
	tt->tt_tab = tab;
	tt->tt_tabsize = size;
	return 0;
}

/* Starts a new window for te if its last one has passed. */
static void
tt_refresh(struct registry_throttle *thr, struct throttle_table *tt,
           struct throttle_entry *te, uint64_t now)
{
	if (now - te->te_start < thr->rt_window)
		return;
	te->te_fails = 0;
	te->te_start = now;
	TAILQ_REMOVE(&tt->tt_lru, te, te_lru);
	TAILQ_INSERT_HEAD(&tt->tt_lru, te, te_lru);
}

/*
 * Finds or makes the entry for key.  Expired entries are dropped from the
 * tail first; a full table then forgets the oldest window.  Returns NULL
 * when out of memory, and the throttle then forgets this attempt rather
 * than failing the verify.
 */
static struct throttle_entry *
tt_get(struct registry_throttle *thr, struct throttle_table *tt,
       const uint8_t *key, size_t keylen, uint64_t now)
{
	struct throttle_entry *te;
	size_t b;

	if ((te = tt_lookup(tt, key, keylen)) != NULL) {
		tt_refresh(thr, tt, te, now);
		return te;
	}
	while ((te = TAILQ_LAST(&tt->tt_lru, throttle_list)) != NULL &&
	       (tt->tt_count >= thr->rt_max ||
	        (now - te->te_start >= thr->rt_window && te->te_inflight == 0)))
		tt_remove(tt, te);
	if (tt->tt_count >= tt->tt_tabsize && tt_grow(tt) < 0)
		return NULL;
	if ((te = calloc(1, sizeof(*te) + keylen)) == NULL)
		return NULL;
	te->te_start = now;
	te->te_keylen = keylen;
	memcpy(te->te_key, key, keylen);
	b = reg_keyhash(key, keylen) & (tt->tt_tabsize - 1);
	te->te_next = tt->tt_tab[b];
	tt->tt_tab[b] = te;
	TAILQ_INSERT_HEAD(&tt->tt_lru, te, te_lru);
	tt->tt_count++;
	return te;
}

static uint64_t
thr_now(const struct registry_throttle *thr)
{
	return thr->rt_now(thr->rt_now_arg);
}

/*
 * Returns -EAGAIN if key has used up its failures in the current window,
 * -EBUSY if the checks in flight could use up the rest (they are counted
 * as if they failed, so that concurrency does not buy extra guesses), or 0.
 */
static int
tt_failed_out(struct registry_throttle *thr, struct throttle_table *tt,
              const uint8_t *key, size_t keylen, uint64_t now)
{
	struct throttle_entry *te;

	if (keylen == 0 || (te = tt_lookup(tt, key, keylen)) == NULL)
		return 0;
	tt_refresh(thr, tt, te, now);
	if (te->te_fails >= tt->tt_max_fails)
		return -EAGAIN;
	if (te->te_inflight > 0 &&
	    te->te_fails + te->te_inflight >= tt->tt_max_fails)
		return -EBUSY;
	return 0;
}

static int
tt_busy(struct throttle_table *tt, unsigned limit, const uint8_t *key,
        size_t keylen)
{
	struct throttle_entry *te;

	if (keylen == 0 || (te = tt_lookup(tt, key, keylen)) == NULL)
		return 0;
	return te->te_inflight >= limit;
}

static void
tt_fail(struct registry_throttle *thr, struct throttle_table *tt,
        const uint8_t *key, size_t keylen, uint64_t now)
{
	struct throttle_entry *te;

	if (keylen > 0 && (te = tt_get(thr, tt, key, keylen, now)) != NULL)
		te->te_fails++;
}

static void
tt_inflight(struct registry_throttle *thr, struct throttle_table *tt,
            const uint8_t *key, size_t keylen, int delta, uint64_t now)
{
	struct throttle_entry *te;

	if (keylen == 0)
		return;
	if (delta > 0) {
		if ((te = tt_get(thr, tt, key, keylen, now)) != NULL)
			te->te_inflight++;
	} else if ((te = tt_lookup(tt, key, keylen)) != NULL &&
	           te->te_inflight > 0) {
		/* The entry may have been forgotten and made anew meanwhile. */
		if (--te->te_inflight == 0 && te->te_fails == 0)
			tt_remove(tt, te);
	}
}

static void
tt_reset(struct throttle_table *tt, const uint8_t *key, size_t keylen)
{
	struct throttle_entry *te;

	if (keylen == 0 || (te = tt_lookup(tt, key, keylen)) == NULL)
		return;
	te->te_fails = 0;
	if (te->te_inflight == 0)
		tt_remove(tt, te);
}

/*
 * Makes the throttle key of a peer: 4 bytes for IPv4 (also when mapped into
 * IPv6), the /64 prefix for IPv6, else the text itself, truncated.
 */
static size_t
peer_key(const char *peer, uint8_t *key)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *h = peer, *e, *c;
	uint8_t a[16];
	size_t len;

	if (*peer == '[' && (e = strchr(peer, ']')) != NULL) {
		h = peer + 1;
		len = (size_t)(e - h);
	} else if ((c = strchr(peer, ':')) != NULL &&
	           strchr(c + 1, ':') == NULL) {
		len = (size_t)(c - peer);
	} else {
		len = strlen(peer);
	}
	if ((e = memchr(h, '%', len)) != NULL) /* a zone id */
		len = (size_t)(e - h);
	if (len < sizeof(host)) {
		memcpy(host, h, len);
		host[len] = '\0';
		if (inet_pton(AF_INET, host, a) == 1) {
			key[0] = 4;
			memcpy(key + 1, a, 4);
			return 5;
		}
		if (inet_pton(AF_INET6, host, a) == 1) {
			static const uint8_t mapped[12] = {
			    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
			if (memcmp(a, mapped, sizeof(mapped)) == 0) {
				key[0] = 4;
				memcpy(key + 1, a + 12, 4);
				return 5;
			}
			key[0] = 6;
			memcpy(key + 1, a, 8);
			return 9;
		}
	}
	len = strlen(peer);
	if (len > PEERKEY_MAX - 1)
		len = PEERKEY_MAX - 1;
	key[0] = 'S';
	memcpy(key + 1, peer, len);
	return len + 1;
}

/* The throttle key of (peer, device id). */
static size_t
pair_key(const struct registry_req *req, uint8_t *key)
{
	if (!req->rq_idvalid)
		return 0;
	memcpy(key, req->rq_peer, req->rq_peerlen);
	memcpy(key + req->rq_peerlen, req->rq_id, req->rq_idlen);
	return req->rq_peerlen + req->rq_idlen;
}

/* --- verification --- */

static void
req_free(struct registry_req *req)
{
	if (req->rq_secret != NULL)
		OPENSSL_clear_free(req->rq_secret, req->rq_len);
	OPENSSL_cleanse(req->rq_mac, sizeof(req->rq_mac));
	registry_throttle_free(req->rq_thr);
	reg_unref(req->rq_reg);
	free(req);
}

static const uint8_t *
req_devkey(const struct registry_req *req, size_t *len)
{
	*len = req->rq_idvalid ? req->rq_idlen : 0;
	return (const uint8_t *)req->rq_id;
}

/* Counts the outcome of an attempt against its device id and peer. */
static void
req_account(struct registry_req *req, int result)
{
	struct registry_throttle *thr = req->rq_thr;
	uint64_t now;

	if (thr == NULL)
		return;
	now = thr_now(thr);
	if (result == 0) {
		tt_reset(&thr->rt_pair, req->rq_pair, req->rq_pairlen);
	} else if (result == -EACCES || result == -ENOENT) {
		tt_fail(thr, &thr->rt_pair, req->rq_pair, req->rq_pairlen, now);
		tt_fail(thr, &thr->rt_peer, req->rq_peer, req->rq_peerlen, now);
	}
}

/* Counts req in (delta 1) or out of (-1) the checks in flight. */
static void
req_inflight(struct registry_req *req, int delta)
{
	struct registry_throttle *thr = req->rq_thr;
	const uint8_t *dk;
	size_t dlen;
	uint64_t now;

	if (thr == NULL || (delta > 0) == req->rq_counted)
		return;
	req->rq_counted = delta > 0;
	now = thr_now(thr);
	dk = req_devkey(req, &dlen);
	tt_inflight(thr, &thr->rt_dev, dk, dlen, delta, now);
	tt_inflight(thr, &thr->rt_peer, req->rq_peer, req->rq_peerlen, delta,
	            now);
	tt_inflight(thr, &thr->rt_pair, req->rq_pair, req->rq_pairlen, delta,
	            now);
}

static void
req_timer_close(uv_handle_t *h)
{
	req_free(REG_CONTAINER_OF(h, struct registry_req, rq_u.u_timer));
}

static void
req_timer(uv_timer_t *t)
{
	struct registry_req *req;

	req = REG_CONTAINER_OF(t, struct registry_req, rq_u.u_timer);
	req->rq_cb(req->rq_arg,
	           req->rq_cancelled ? -ECANCELED : req->rq_result);
	uv_close((uv_handle_t *)t, req_timer_close);
}

/* Settles req on a later loop iteration with result (or -ECANCELED). */
static void
req_settle_later(struct registry_req *req, int result)
{
	req->rq_result = result;
	(void)uv_timer_init(req->rq_loop, &req->rq_u.u_timer);
	(void)uv_timer_start(&req->rq_u.u_timer, req_timer, 0, 0);
}

static void req_work(uv_work_t *);
static void req_after_work(uv_work_t *, int);

/* Hands req to the threadpool, in one of the rt_total_max slots. */
static int
req_start(struct registry_req *req)
{
	int rc;

	rc = uv_queue_work(req->rq_loop, &req->rq_u.u_work, req_work,
	                   req_after_work);
	if (rc < 0)
		return rc;
	req->rq_queued = 1;
	if (req->rq_thr != NULL) {
		req->rq_slot = 1;
		req->rq_thr->rt_total++;
	}
	return 0;
}

/* Starts waiting checks, oldest first, while there are free slots. */
static void
thr_run_waiting(struct registry_throttle *thr)
{
	struct registry_req *req;
	int rc;

	while (thr->rt_total < thr->rt_total_max &&
	       (req = TAILQ_FIRST(&thr->rt_waitq)) != NULL) {
		TAILQ_REMOVE(&thr->rt_waitq, req, rq_wait);
		thr->rt_nwait--;
		req->rq_waiting = 0;
		if ((rc = req_start(req)) < 0) {
			req_inflight(req, -1);
			req_settle_later(req, rc);
		}
	}
}

/* Threadpool: the only place scrypt runs. */
static void
req_work(uv_work_t *w)
{
	struct registry_req *req;
	const struct kdfparams *k;
	uint8_t out[KDF_HASH_MAX];
	int rc;

	req = REG_CONTAINER_OF(w, struct registry_req, rq_u.u_work);
	k = req->rq_entry != NULL ? &req->rq_entry->e_kdf
	                          : &req->rq_reg->r_dummy;
	rc = reg_kdf_run(k, req->rq_secret, req->rq_len, out, k->k_hashlen);
	if (rc < 0)
		req->rq_result = rc;
	else if (req->rq_entry == NULL)
		req->rq_result = -ENOENT;
	else if (CRYPTO_memcmp(out, k->k_hash, k->k_hashlen) != 0)
		req->rq_result = -EACCES;
	else {
		req->rq_result = 0;
		req->rq_has_mac = reg_mac_secret(req->rq_secret, req->rq_len,
		                                 req->rq_mac) == 0;
	}
	OPENSSL_cleanse(out, sizeof(out));
	OPENSSL_cleanse(req->rq_secret, req->rq_len);
}

static void
req_after_work(uv_work_t *w, int status)
{
	struct registry_req *req;
	int result;

	req = REG_CONTAINER_OF(w, struct registry_req, rq_u.u_work);
	/*
	 * An attempt that ran counts even when cancelled: otherwise hanging
	 * up after sending a guess would dodge the throttle.
	 */
	if (status == 0) {
		req_account(req, req->rq_result);
		if (req->rq_result == 0 && req->rq_has_mac) {
			memcpy(req->rq_entry->e_mac, req->rq_mac, MAC_LEN);
			req->rq_entry->e_cached = 1;
		}
	}
	req_inflight(req, -1);
	if (req->rq_slot) {
		req->rq_slot = 0;
		req->rq_thr->rt_total--;
		thr_run_waiting(req->rq_thr);
	}
	if (status != 0 || req->rq_cancelled)
		result = -ECANCELED;
	else
		result = req->rq_result;
	req->rq_cb(req->rq_arg, result);
	req_free(req);
}

/*
 * Settles req at once when no scrypt is needed, returning 1 with
 * rq_result set; 0 sends it to the threadpool, 2 to the end of the
 * waiting checks.  Also -EBUSY (returned as 1) when the KDF slots of this
 * id or peer are all busy, or the waiting checks are as many as they may be.
 */
static int
req_decide(struct registry_req *req, const uint8_t *secret, size_t len)
{
	struct registry_throttle *thr = req->rq_thr;
	struct registry_entry *e = req->rq_entry;
	uint8_t mac[MAC_LEN];
	const uint8_t *dk;
	size_t dlen;
	uint64_t now = thr != NULL ? thr_now(thr) : 0;
	int hit, busy;

	dk = req_devkey(req, &dlen);
	/*
	 * The failures of this peer, and of this peer with this id, come
	 * before everything else.  Failures of the id from elsewhere do not
	 * count here: the real device, from its own address, still gets in.
	 */
	if (thr != NULL) {
		int a = tt_failed_out(thr, &thr->rt_pair, req->rq_pair,
		                      req->rq_pairlen, now);
		int b = tt_failed_out(thr, &thr->rt_peer, req->rq_peer,
		                      req->rq_peerlen, now);

		if (a == -EAGAIN || b == -EAGAIN || a == -EBUSY ||
		    b == -EBUSY) {
			req->rq_result =
			    a == -EAGAIN || b == -EAGAIN ? -EAGAIN : -EBUSY;
			return 1;
		}
	}
	/* Nothing secret is learnt from these failing fast. */
	if (!req->rq_idvalid) {
		req->rq_result = -ENOENT;
		return 1;
	}
	if (!reg_secret_valid(secret, len)) {
		req->rq_result = e != NULL ? -EACCES : -ENOENT;
		return 1;
	}
	/*
	 * A cache miss is not a failure: the secret may be right but not
	 * yet seen, so scrypt decides.  Only a right secret is faster.
	 */
	if (e != NULL && e->e_cached && reg_mac_secret(secret, len, mac) == 0) {
		hit = CRYPTO_memcmp(mac, e->e_mac, MAC_LEN) == 0;
		OPENSSL_cleanse(mac, sizeof(mac));
		if (hit) {
			req->rq_result = 0;
			return 1;
		}
	}
	if (thr == NULL || thr->rt_total < thr->rt_total_max)
		busy = 0;
	else if (thr->rt_nwait < thr->rt_wait_max)
		busy = 2;
	else
		busy = 1;
	if (thr != NULL &&
	    (busy == 1 || tt_busy(&thr->rt_dev, thr->rt_inflight, dk, dlen) ||
	     tt_busy(&thr->rt_peer, thr->rt_peer_inflight, req->rq_peer,
	             req->rq_peerlen))) {
		/* Not a failure: the device is told to come back later. */
		req->rq_result = -EBUSY;
		return 1;
	}
	return busy;
}

int
registry_verify(struct registry *reg, uv_loop_t *loop, const char *device_id,
                const uint8_t *secret, size_t len, const char *peer_addr,
                registry_verify_cb cb, void *arg, struct registry_req **out)
{
	struct registry_req *req;
	struct registry_throttle *thr;
	int rc, how;

	if (reg == NULL || loop == NULL || device_id == NULL || cb == NULL ||
	    (secret == NULL && len > 0))
		return -EINVAL;
	if ((req = calloc(1, sizeof(*req))) == NULL)
		return -ENOMEM;
	req->rq_reg = reg;
	req->rq_cb = cb;
	req->rq_arg = arg;
	req->rq_idlen = strnlen(device_id, REGISTRY_ID_MAX + 1);
	if ((req->rq_idvalid = reg_id_valid(device_id, req->rq_idlen))) {
		memcpy(req->rq_id, device_id, req->rq_idlen);
		req->rq_entry = reg_lookup(reg, req->rq_id, req->rq_idlen);
	}
	if (peer_addr != NULL)
		req->rq_peerlen = peer_key(peer_addr, req->rq_peer);
	req->rq_pairlen = pair_key(req, req->rq_pair);
	thr = req->rq_thr = reg->r_throttle;
	req->rq_loop = loop;

	if ((how = req_decide(req, secret, len)) == 1) {
		if ((rc = uv_timer_init(loop, &req->rq_u.u_timer)) < 0) {
			free(req);
			return rc;
		}
		/* From here on, req_free() and the close callback own req. */
		reg->r_refs++;
		if (thr != NULL)
			thr->rt_refs++;
		(void)uv_timer_start(&req->rq_u.u_timer, req_timer, 0, 0);
		if (req->rq_result != -EAGAIN && req->rq_result != -EBUSY)
			req_account(req, req->rq_result);
	} else {
		if ((req->rq_secret = malloc(len)) == NULL) {
			free(req);
			return -ENOMEM;
		}
		memcpy(req->rq_secret, secret, len);
		req->rq_len = len;
		if (how == 2) {
			TAILQ_INSERT_TAIL(&thr->rt_waitq, req, rq_wait);
			thr->rt_nwait++;
			req->rq_waiting = 1;
		} else if ((rc = req_start(req)) < 0) {
			OPENSSL_clear_free(req->rq_secret, len);
			free(req);
			return rc;
		}
		reg->r_refs++;
		if (thr != NULL) {
			thr->rt_refs++;
			req_inflight(req, 1);
		}
	}
	if (out != NULL)
		*out = req;
	return 0;
}

void
registry_cancel(struct registry_req *req)
{
	req->rq_cancelled = 1;
	if (req->rq_waiting) {
		/* It never ran: nothing to count against anyone. */
		TAILQ_REMOVE(&req->rq_thr->rt_waitq, req, rq_wait);
		req->rq_thr->rt_nwait--;
		req->rq_waiting = 0;
		req_inflight(req, -1);
		req_settle_later(req, -ECANCELED);
		return;
	}
	/* Fails harmlessly once the work has started; it then just ends. */
	if (req->rq_queued)
		uv_cancel((uv_req_t *)&req->rq_u.u_work);
}

/*
 * HMAC-SHA256 under key of a label, the id, the entry's whole scrypt line
 * (parameters, salt and hash) and the secret: a new secret or a re-keyed
 * entry gives another value.
 */
static int
proof_compute(const struct registry_entry *e, const uint8_t *secret, size_t len,
              const uint8_t *key, size_t keylen, uint8_t *out)
{
	static const char label[] = "ncgrpc resumption proof 1";
	const struct kdfparams *k = &e->e_kdf;
	uint8_t hdr[5] = {k->k_ln, k->k_r, k->k_p, k->k_saltlen, k->k_hashlen};
	static char digest[] = "SHA256";
	OSSL_PARAM params[2];
	EVP_MAC_CTX *ctx = NULL;
	EVP_MAC *mac;
	size_t outlen = 0;
	int rc = -ENOMEM;

	if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL ||
	    (ctx = EVP_MAC_CTX_new(mac)) == NULL)
		goto out;
	params[0] =
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(ctx, key, keylen, params) == 1 &&
	    EVP_MAC_update(ctx, (const uint8_t *)label, sizeof(label)) == 1 &&
	    EVP_MAC_update(ctx, (const uint8_t *)e->e_id, e->e_idlen + 1) ==
	        1 &&
	    EVP_MAC_update(ctx, hdr, sizeof(hdr)) == 1 &&
	    EVP_MAC_update(ctx, k->k_salt, k->k_saltlen) == 1 &&
	    EVP_MAC_update(ctx, k->k_hash, k->k_hashlen) == 1 &&
	    EVP_MAC_update(ctx, secret, len) == 1 &&
	    EVP_MAC_final(ctx, out, &outlen, REGISTRY_PROOF_LEN) == 1 &&
	    outlen == REGISTRY_PROOF_LEN)
		rc = 0;
out:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return rc;
}

static struct registry_entry *
proof_entry(const struct registry *reg, const char *id, const uint8_t *secret,
            size_t len, const uint8_t *key, size_t keylen)
{
	size_t idlen;

	if (reg == NULL || id == NULL || key == NULL || keylen == 0 ||
	    (secret == NULL && len > 0))
		return NULL;
	idlen = strnlen(id, REGISTRY_ID_MAX + 1);
	if (!reg_id_valid(id, idlen) || !reg_secret_valid(secret, len))
		return NULL;
	return reg_lookup(reg, id, idlen);
}

int
registry_proof(const struct registry *reg, const char *device_id,
               const uint8_t *secret, size_t len, const uint8_t *key,
               size_t keylen, uint8_t *out)
{
	struct registry_entry *e;

	if ((e = proof_entry(reg, device_id, secret, len, key, keylen)) == NULL)
		return -ENOENT;
	return proof_compute(e, secret, len, key, keylen, out);
}

int
registry_accept_proof(struct registry *reg, const char *device_id,
                      const uint8_t *secret, size_t len, const uint8_t *key,
                      size_t keylen, const uint8_t *proof)
{
	struct registry_entry *e;
	uint8_t want[REGISTRY_PROOF_LEN], mac[MAC_LEN];
	int rc, same;

	if ((e = proof_entry(reg, device_id, secret, len, key, keylen)) == NULL)
		return -ENOENT;
	if ((rc = proof_compute(e, secret, len, key, keylen, want)) != 0)
		return rc;
	same = CRYPTO_memcmp(want, proof, REGISTRY_PROOF_LEN) == 0;
	OPENSSL_cleanse(want, sizeof(want));
	if (!same)
		return -EACCES;
	if ((rc = reg_mac_secret(secret, len, mac)) != 0)
		return rc;
	memcpy(e->e_mac, mac, MAC_LEN);
	e->e_cached = 1;
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}
