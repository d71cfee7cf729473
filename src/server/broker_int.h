/*
 * Inside the session broker: what broker.c (devices and their Initialize
 * calls) and relay.c (operator sessions and their device streams) share.
 * Nothing outside those two files includes this.
 *
 * An Initialize call moves through INIT_AUTH (the registry checks the
 * secret in the threadpool), INIT_IDLE (on its device's idle queue), and
 * INIT_GRANTED (answered for an operator); INIT_DONE once its call ended.
 * An operator session (struct opsess) moves through OS_WAITING (no idle
 * connection yet), OS_GRANTED (waiting for the device's CommandGet on the
 * granted connection), OS_ACTIVE (joined), and OS_ENDED; only
 * os_set_state() in relay.c changes it.  A joined session is two halves
 * (struct relay_half), the operator's and the device's, each pointing at
 * the other.  A device exists while it has idle connections or sessions;
 * its creation and removal are the CONNECTED and DISCONNECTED events.
 */
#ifndef NCGRPC_BROKER_INT_H
#define NCGRPC_BROKER_INT_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <uv.h>

#include "addr.h"
#include "broker.h"
#include "buf.h"
#include "grpc.h"
#include "heaptrim.h"
#include "ncframe.h"
#include "prompt.h"
#include "registry.h"
#include "termext.h"

#define SVC                    "/jnx.jet.netconf.Ncgrpc/"
#define BROKER_BUCKETS         16384
#define BROKER_MAX_LINE        (64 * 1024)
#define BROKER_MAX_NETCONF_MSG (16 * 1024 * 1024)
#define BROKER_MAX_PENDING     (1024 * 1024)
/* ServerStatusGet and Initialize requests, checked at the length prefix. */
#define BROKER_MAX_UNARY (64 * 1024)
/*
 * A device whose last connection went away stays listed this long: after
 * a session the agent's next connection is usually still authenticating,
 * and a DISCONNECTED/CONNECTED pair for that would be noise.
 */
#define BROKER_LINGER_MS 3000

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
	char *ic_id; /* the device id asked for, once the request is in */
	uint64_t ic_instance;
	struct peer ic_peer; /* copied: the connection may go first */
	uint64_t ic_reg_gen; /* b_reg_gen when the check started */
	int ic_raw_offer;    /* the device offered a raw terminal */
	int ic_resumed;      /* a resumption proof filled the cache */
	int ic_has_proof;    /* ic_proof is for the secret just presented */
	uint8_t ic_proof[REGISTRY_PROOF_LEN];
	TAILQ_ENTRY(initcall) ic_entry;
};

struct device {
	char *dv_id;
	uint64_t dv_instance;
	int64_t dv_since;
	char
	    dv_peer[64]; /* a numeric address: the text of a struct peer fits */
	TAILQ_HEAD(, initcall) dv_idle;
	unsigned dv_nidle;
	unsigned dv_nsessions;   /* granted or active */
	uint64_t dv_empty_since; /* ms; on b_empty while nonzero */
	TAILQ_ENTRY(device) dv_empty;
	struct device *dv_next;
};

struct opsess;
struct relay_side; /* relay.c: what differs between the two sides */

/*
 * One side of a session, as relayd's ctl_in and ctl_out: the call to that
 * side and its end state, with a pointer to the other half (its peer).
 * Input from a half goes to its peer; a half whose peer's call has more
 * than GRPC_CALL_HIWAT queued is paused, and resumed by the peer's
 * on_writable.
 */
struct relay_half {
	struct opsess *rh_os;
	struct relay_half *rh_peer;
	const struct relay_side *rh_side;
	struct grpc_call *rh_call; /* NULL once its on_end ran */
	int rh_finished;           /* we ended its call with OK */
	uint64_t rh_nrelayed;      /* bytes of its input passed to the peer */
};

struct opsess {
	struct broker *os_b;
	uint64_t os_id;
	enum os_state os_state;
	enum broker_session_type os_type;
	struct relay_half os_op;  /* the operator's Session call */
	struct relay_half os_dev; /* the device's CommandGet, once joined */
	struct grpc_conn *os_devconn;
	struct device *os_devp; /* counted in dv_nsessions while set */
	char os_device[256];
	char os_peer[64];
	struct broker_ident os_ident; /* whom it is for (audit log) */
	uv_timer_t os_timer;
	int os_freeing;
	/* The translation of the operator's input (ncframe.h, lines). */
	struct ncframe os_nf;
	struct buf os_line;
	struct prompt_tail os_prompt; /* the device's last output line */
	uint64_t os_open_ns;          /* uv_hrtime() of the request (metrics) */
	char os_reason[200];
	/*
	 * The raw terminal: asked for by the operator (os_term_ask, with
	 * the initial window and TERM), granted when the connection given
	 * to the session offered it (os_raw).  Raw input is relayed as it
	 * comes, only a character split across messages is carried over.
	 */
	struct broker_terminal os_term_ask;
	int os_raw;
	uint8_t os_carry[4];
	size_t os_ncarry;
	uint64_t os_raw_msgs; /* raw input messages, for the audit log */
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
	TAILQ_HEAD(, device) b_empty;   /* lingering without connections */
	LIST_HEAD(, opsess) b_sessions; /* every operator session */
	uv_timer_t b_linger;
	struct heaptrim b_trim; /* after connect storms */
	int b_open_timers;      /* timers whose close callback is pending */
	uint64_t b_next_session;
};

/* broker.c */
struct device *broker_device_find(struct broker *b, const char *id);
void broker_device_maybe_gone(struct broker *b, struct device *d,
                              const char *why);
void broker_initcall_set_state(struct initcall *ic, enum init_state to);

/* relay.c */
void relay_open(struct broker *b, struct grpc_call *op, const char *device_id,
                enum broker_session_type type, unsigned wait_ms,
                const struct broker_ident *ident,
                const struct broker_terminal *term);
void relay_try_grant(struct broker *b, struct device *d);
void relay_commandget(struct grpc_call *c, void *arg);
void relay_conn_closed(struct broker *b, struct grpc_conn *conn);
void relay_shutdown(struct broker *b, const char *why);

#endif
