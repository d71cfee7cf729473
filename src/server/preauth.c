/*
 * Pre-authentication limits of the device port (see preauth.h).
 *
 * Connections not yet authenticated sit on pa_pending in the order they
 * were accepted, so one timer tick closes the expired ones from the head.
 * Per-address counts and the refusal summaries live in two small hash
 * tables keyed by strings; both are bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "addr.h"
#include "audit.h"
#include "err.h"
#include "log.h"
#include "preauth.h"

#define PA_TICK_MS        1000
#define PA_SUMMARY_TICKS  60   /* a summary per minute */
#define PA_BUCKETS        1024 /* power of two */
#define PA_MAX_REFUSALS   4096 /* summary entries kept per minute */
#define PA_LINES_PER_ADDR 5    /* refusals logged one by one per address */
#define PA_IP_MAX         64

struct pa_conn {
	struct grpc_conn *pc_conn;
	struct pa_addr *pc_addr; /* while unauthenticated */
	uint64_t pc_deadline;    /* ms, loop time */
	int pc_pending;          /* on pa_pending */
	TAILQ_ENTRY(pa_conn) pc_entry;
};

/* Unauthenticated connections of one address. */
struct pa_addr {
	struct pa_addr *pd_next;
	unsigned pd_n;
	char pd_ip[PA_IP_MAX];
};

/*
 * Refusals of one (reason, id, address) in the current minute; with an
 * empty id, of one (reason, address), whatever the id.
 */
struct pa_refusal {
	struct pa_refusal *pr_next;
	uint64_t pr_more;   /* after the first, which was logged */
	unsigned pr_logged; /* (reason, address): lines logged */
	size_t pr_len;
	char pr_key[]; /* "reason\0id\0ip\0" */
};

struct preauth {
	uv_loop_t *pa_loop;
	uv_timer_t pa_timer;
	struct preauth_opts pa_opts;
	TAILQ_HEAD(, pa_conn) pa_pending;
	struct pa_addr *pa_addrs[PA_BUCKETS];
	struct pa_refusal *pa_refusals[PA_BUCKETS];
	size_t pa_nrefusals;
	uint64_t pa_refusals_dropped; /* past PA_MAX_REFUSALS */
	unsigned pa_nconns;
	unsigned pa_nunauth;
	int pa_holding; /* may_accept said no, and has not said yes since */
	unsigned pa_ticks;
	uint64_t pa_count[PREAUTH_C_COUNT];
	uint64_t pa_minute[PREAUTH_C_COUNT]; /* this minute, not yet told */
	int pa_told[PREAUTH_C_COUNT];        /* a line this minute already */
};

static const char *const pa_names[PREAUTH_C_COUNT] = {
    [PREAUTH_C_CONNS] = "max-connections",
    [PREAUTH_C_UNAUTH] = "max-unauthenticated",
    [PREAUTH_C_UNAUTH_ADDR] = "max-unauthenticated-per-address",
    [PREAUTH_C_AUTH_TIMEOUT] = "auth-timeout",
    [PREAUTH_C_STREAMS] = "preauth-streams",
    [PREAUTH_C_BUFFER] = "preauth-buffer",
    [PREAUTH_C_MESSAGE] = "message-size",
    [PREAUTH_C_AUTH_THROTTLED] = "auth-throttled",
    [PREAUTH_C_AUTH_BUSY] = "auth-busy",
    [PREAUTH_C_LOG_SUPPRESSED] = "log-suppressed",
};

const char *
preauth_counter_name(enum preauth_counter c)
{
	return c < PREAUTH_C_COUNT ? pa_names[c] : "?";
}

uint64_t
preauth_count(const struct preauth *pa, enum preauth_counter c)
{
	return c < PREAUTH_C_COUNT ? pa->pa_count[c] : 0;
}

unsigned
preauth_nconns(const struct preauth *pa)
{
	return pa->pa_nconns;
}

unsigned
preauth_nunauth(const struct preauth *pa)
{
	return pa->pa_nunauth;
}

static uint32_t
hash_str(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

/*
 * The key that connections are counted under: the address, except that
 * IPv6 peers count per /64 (one host usually owns a whole /64, as the
 * registry throttle assumes too) and IPv4-mapped ones as IPv4.
 */
static void
addr_key(const char *ip, char *out, size_t len)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
	                                   0, 0, 0, 0, 0xff, 0xff};
	char text[INET6_ADDRSTRLEN];
	uint8_t a[16];

	if (strchr(ip, ':') == NULL || inet_pton(AF_INET6, ip, a) != 1) {
		snprintf(out, len, "%.*s", (int)(len - 1), ip);
		return;
	}
	if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		inet_ntop(AF_INET, a + 12, text, sizeof(text));
		snprintf(out, len, "%s", text);
		return;
	}
	memset(a + 8, 0, 8);
	inet_ntop(AF_INET6, a, text, sizeof(text));
	snprintf(out, len, "%s/64", text);
}

/*
 * Counts one event of counter c.  Returns 1 if it is the first of the
 * minute, which the caller then logs in full.
 */
static int
pa_bump(struct preauth *pa, enum preauth_counter c)
{
	pa->pa_count[c]++;
	if (!pa->pa_told[c]) {
		pa->pa_told[c] = 1;
		return 1;
	}
	pa->pa_minute[c]++;
	pa->pa_count[PREAUTH_C_LOG_SUPPRESSED]++;
	return 0;
}

/* Per-address counts. */

static struct pa_addr **
addr_slot(struct preauth *pa, const char *ip)
{
	struct pa_addr **pp;

	pp = &pa->pa_addrs[hash_str(ip, strlen(ip)) & (PA_BUCKETS - 1)];
	for (; *pp != NULL; pp = &(*pp)->pd_next)
		if (strcmp((*pp)->pd_ip, ip) == 0)
			break;
	return pp;
}

static void
addr_put(struct preauth *pa, struct pa_addr *pd)
{
	struct pa_addr **pp;

	pa->pa_nunauth--;
	if (--pd->pd_n > 0)
		return;
	pp = addr_slot(pa, pd->pd_ip);
	*pp = pd->pd_next;
	free(pd);
}

/* Ends the unauthenticated state of pc (trusted or closed). */
static void
conn_settle(struct preauth *pa, struct pa_conn *pc)
{
	if (pc->pc_pending) {
		TAILQ_REMOVE(&pa->pa_pending, pc, pc_entry);
		pc->pc_pending = 0;
	}
	if (pc->pc_addr != NULL) {
		addr_put(pa, pc->pc_addr);
		pc->pc_addr = NULL;
	}
}

int
preauth_may_accept(struct preauth *pa)
{
	const struct preauth_opts *o = &pa->pa_opts;

	if (o->po_max_unauth == 0 || pa->pa_nunauth < o->po_max_unauth) {
		pa->pa_holding = 0;
		return 1;
	}
	if (!pa->pa_holding) {
		pa->pa_holding = 1;
		if (pa_bump(pa, PREAUTH_C_UNAUTH))
			log_warnx("%u connections not authenticated yet "
			          "(max-unauthenticated): new connections "
			          "wait in the listen backlog",
			          pa->pa_nunauth);
	}
	return 0;
}

int
preauth_conn_accept(struct preauth *pa, struct grpc_conn *conn)
{
	const struct preauth_opts *o = &pa->pa_opts;
	char ip[PA_IP_MAX];
	struct pa_addr **pp, *pd;
	struct pa_conn *pc;

	addr_key(grpc_conn_peer_addr(conn)->pe_host, ip, sizeof(ip));
	if (o->po_max_conns != 0 && pa->pa_nconns >= o->po_max_conns) {
		if (pa_bump(pa, PREAUTH_C_CONNS))
			log_warnx("refused a connection from %s: %u device "
			          "connections open (max-connections)",
			          ip, pa->pa_nconns);
		return -EMFILE;
	}
	if (o->po_max_unauth != 0 && pa->pa_nunauth >= o->po_max_unauth) {
		if (pa_bump(pa, PREAUTH_C_UNAUTH))
			log_warnx("refused a connection from %s: %u "
			          "connections not authenticated yet "
			          "(max-unauthenticated)",
			          ip, pa->pa_nunauth);
		return -EUSERS;
	}
	pp = addr_slot(pa, ip);
	if ((pd = *pp) != NULL && o->po_max_unauth_per_addr != 0 &&
	    pd->pd_n >= o->po_max_unauth_per_addr) {
		if (pa_bump(pa, PREAUTH_C_UNAUTH_ADDR))
			log_warnx("refused a connection from %s: %u "
			          "connections from it not authenticated yet "
			          "(max-unauthenticated-per-address)",
			          ip, pd->pd_n);
		return -EBUSY;
	}
	if ((pc = calloc(1, sizeof(*pc))) == NULL)
		return -ENOMEM;
	if (pd == NULL) {
		if ((pd = calloc(1, sizeof(*pd))) == NULL) {
			free(pc);
			return -ENOMEM;
		}
		snprintf(pd->pd_ip, sizeof(pd->pd_ip), "%s", ip);
		*pp = pd;
	}
	pd->pd_n++;
	pa->pa_nunauth++;
	pa->pa_nconns++;
	pc->pc_conn = conn;
	pc->pc_addr = pd;
	if (o->po_auth_timeout_ms != 0) {
		pc->pc_deadline = uv_now(pa->pa_loop) + o->po_auth_timeout_ms;
		TAILQ_INSERT_TAIL(&pa->pa_pending, pc, pc_entry);
		pc->pc_pending = 1;
	}
	grpc_conn_set_arg(conn, pc);
	return 0;
}

void
preauth_conn_trusted(struct preauth *pa, struct grpc_conn *conn)
{
	struct pa_conn *pc = grpc_conn_arg(conn);

	if (pa != NULL && pc != NULL)
		conn_settle(pa, pc);
}

void
preauth_conn_closed(struct preauth *pa, struct grpc_conn *conn)
{
	struct pa_conn *pc = grpc_conn_arg(conn);

	if (pa == NULL || pc == NULL)
		return;
	conn_settle(pa, pc);
	pa->pa_nconns--;
	grpc_conn_set_arg(conn, NULL);
	free(pc);
}

void
preauth_limit(struct preauth *pa, struct grpc_conn *conn, enum grpc_limit what)
{
	const char *ip = grpc_conn_peer_addr(conn)->pe_host;

	switch (what) {
	case GRPC_LIMIT_STREAMS:
		if (pa_bump(pa, PREAUTH_C_STREAMS))
			log_warnx("refused a stream from %s: too many streams "
			          "before authentication (preauth-streams)",
			          ip);
		break;
	case GRPC_LIMIT_BUFFER:
		if (pa_bump(pa, PREAUTH_C_BUFFER))
			log_warnx("ended a call from %s: too much request "
			          "data before authentication "
			          "(preauth-buffer)",
			          ip);
		break;
	case GRPC_LIMIT_MESSAGE:
		if (pa_bump(pa, PREAUTH_C_MESSAGE))
			log_warnx("ended a call from %s: declared message "
			          "larger than its method allows",
			          ip);
		break;
	}
}

/* Refusal summaries. */

/* Finds or makes the entry of key; NULL when full or out of memory. */
static struct pa_refusal *
refusal_get(struct preauth *pa, const char *reason, const char *id,
            const char *ip, int *created)
{
	size_t lr = strlen(reason) + 1, li = strlen(id) + 1;
	size_t la = strlen(ip) + 1, len = lr + li + la;
	struct pa_refusal *pr;
	char key[512];
	uint32_t b;

	*created = 0;
	if (len > sizeof(key))
		return NULL;
	memcpy(key, reason, lr);
	memcpy(key + lr, id, li);
	memcpy(key + lr + li, ip, la);
	b = hash_str(key, len) & (PA_BUCKETS - 1);
	for (pr = pa->pa_refusals[b]; pr != NULL; pr = pr->pr_next)
		if (pr->pr_len == len && memcmp(pr->pr_key, key, len) == 0)
			return pr;
	if (pa->pa_nrefusals >= PA_MAX_REFUSALS ||
	    (pr = malloc(sizeof(*pr) + len)) == NULL)
		return NULL;
	pr->pr_more = 0;
	pr->pr_logged = 0;
	pr->pr_len = len;
	memcpy(pr->pr_key, key, len);
	pr->pr_next = pa->pa_refusals[b];
	pa->pa_refusals[b] = pr;
	pa->pa_nrefusals++;
	*created = 1;
	return pr;
}

int
preauth_auth_refused(struct preauth *pa, const char *reason, const char *id,
                     const char *ip)
{
	struct pa_refusal *addr, *one;
	int created;

	if (strcmp(reason, "throttled") == 0)
		pa->pa_count[PREAUTH_C_AUTH_THROTTLED]++;
	else if (strcmp(reason, "busy") == 0)
		pa->pa_count[PREAUTH_C_AUTH_BUSY]++;
	/*
	 * Per address first: a peer cycling through made-up ids gets
	 * PA_LINES_PER_ADDR lines a minute, not one per id.
	 */
	if ((addr = refusal_get(pa, reason, "", ip, &created)) == NULL)
		goto fold;
	one = refusal_get(pa, reason, id, ip, &created);
	if (one != NULL && !created) {
		one->pr_more++;
		pa->pa_count[PREAUTH_C_LOG_SUPPRESSED]++;
		return 0;
	}
	if (one == NULL || addr->pr_logged >= PA_LINES_PER_ADDR) {
		addr->pr_more++;
		pa->pa_count[PREAUTH_C_LOG_SUPPRESSED]++;
		return 0;
	}
	addr->pr_logged++;
	return 1;
fold:
	/* Too many sources this minute: one line says how many. */
	pa->pa_refusals_dropped++;
	pa->pa_count[PREAUTH_C_LOG_SUPPRESSED]++;
	return 0;
}

/* Logs and audits what was folded this minute, and starts a new one. */
static void
pa_summary(struct preauth *pa)
{
	struct pa_refusal *pr, *next;
	const char *reason, *id, *ip;
	char n[24];
	size_t b;
	int c;

	for (b = 0; b < PA_BUCKETS; b++) {
		for (pr = pa->pa_refusals[b]; pr != NULL; pr = next) {
			next = pr->pr_next;
			reason = pr->pr_key;
			id = reason + strlen(reason) + 1;
			ip = id + strlen(id) + 1;
			snprintf(n, sizeof(n), "%" PRIu64, pr->pr_more);
			if (pr->pr_more > 0 && *id != '\0') {
				log_warnx("%s more refused (%s) for id \"%s\" "
				          "from %s in the last minute",
				          n, reason, id, ip);
				audit_event("auth-failed-summary", "device", id,
				            "peer", ip, "reason", reason,
				            "count", n, NULL);
			} else if (pr->pr_more > 0) {
				log_warnx("%s more refused (%s) for other ids "
				          "from %s in the last minute",
				          n, reason, ip);
				audit_event("auth-failed-summary", "device",
				            "*", "peer", ip, "reason", reason,
				            "count", n, NULL);
			}
			free(pr);
		}
		pa->pa_refusals[b] = NULL;
	}
	pa->pa_nrefusals = 0;
	if (pa->pa_refusals_dropped > 0) {
		log_warnx("%" PRIu64 " more refused authentications from "
		          "other sources in the last minute",
		          pa->pa_refusals_dropped);
		pa->pa_refusals_dropped = 0;
	}
	for (c = 0; c < PREAUTH_C_COUNT; c++) {
		if (pa->pa_minute[c] > 0)
			log_warnx("%s: %" PRIu64 " more in the last minute "
			          "(%" PRIu64 " since start)",
			          pa_names[c], pa->pa_minute[c],
			          pa->pa_count[c]);
		pa->pa_minute[c] = 0;
		pa->pa_told[c] = 0;
	}
}

static void
on_tick(uv_timer_t *t)
{
	struct preauth *pa = t->data;
	struct pa_conn *pc;
	uint64_t now = uv_now(pa->pa_loop);

	while ((pc = TAILQ_FIRST(&pa->pa_pending)) != NULL &&
	       pc->pc_deadline <= now) {
		TAILQ_REMOVE(&pa->pa_pending, pc, pc_entry);
		pc->pc_pending = 0;
		if (pa_bump(pa, PREAUTH_C_AUTH_TIMEOUT)) {
			log_warnx("closing the connection from %s: no "
			          "successful Initialize within %u s "
			          "(auth-timeout)",
			          grpc_conn_peer_addr(pc->pc_conn)->pe_host,
			          pa->pa_opts.po_auth_timeout_ms / 1000);
		}
		/* pc goes in preauth_conn_closed(), from the loop. */
		grpc_conn_close(pc->pc_conn, -ETIMEDOUT);
	}
	if (++pa->pa_ticks >= PA_SUMMARY_TICKS) {
		pa->pa_ticks = 0;
		pa_summary(pa);
	}
}

int
preauth_new(uv_loop_t *loop, const struct preauth_opts *opts,
            struct preauth **out)
{
	struct preauth *pa;

	if ((pa = calloc(1, sizeof(*pa))) == NULL)
		return -ENOMEM;
	pa->pa_loop = loop;
	pa->pa_opts = *opts;
	TAILQ_INIT(&pa->pa_pending);
	uv_timer_init(loop, &pa->pa_timer);
	pa->pa_timer.data = pa;
	uv_timer_start(&pa->pa_timer, on_tick, PA_TICK_MS, PA_TICK_MS);
	/* The listeners keep the loop alive; this timer must not. */
	uv_unref((uv_handle_t *)&pa->pa_timer);
	*out = pa;
	return 0;
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct preauth *pa = h->data;
	struct pa_refusal *pr, *next;
	struct pa_addr *pd, *pdn;
	size_t b;

	for (b = 0; b < PA_BUCKETS; b++) {
		for (pr = pa->pa_refusals[b]; pr != NULL; pr = next) {
			next = pr->pr_next;
			free(pr);
		}
		for (pd = pa->pa_addrs[b]; pd != NULL; pd = pdn) {
			pdn = pd->pd_next;
			free(pd);
		}
	}
	free(pa);
}

void
preauth_free(struct preauth *pa)
{
	if (pa == NULL)
		return;
	/* What was folded since the last summary is not lost at shutdown. */
	pa_summary(pa);
	uv_close((uv_handle_t *)&pa->pa_timer, on_timer_closed);
}
