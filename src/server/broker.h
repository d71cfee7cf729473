/*
 * The session broker of ncgrpcd.
 *
 * Device side: it serves jnx.jet.netconf.Ncgrpc.  ServerStatusGet answers
 * SUCCESS; Initialize is authenticated against the registry (off the event
 * loop) and then kept as an idle connection of its device; an operator's
 * request completes one idle Initialize with the session type and the
 * conn_type trailer, and the CommandGet that the device then opens on the
 * same connection is joined to that operator.
 *
 * Operator side (operator.c): a Session call is handed over with
 * broker_session_open() after its open message.  Bytes pass byte-exact
 * both ways with backpressure; NETCONF input is cut into whole messages
 * (ncframe.h), shell input into lines.  Either side ending ends the other.
 */
#ifndef NCGRPC_BROKER_H
#define NCGRPC_BROKER_H

#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "grpc.h"
#include "termext.h"

struct broker;
struct preauth;
struct registry;
struct registry_throttle;

enum broker_session_type {
	BROKER_NETCONF = 0,
	BROKER_SHELL = 1,
};

struct broker_opts {
	unsigned bo_session_limit;   /* sessions per device; 0: 32 */
	unsigned bo_session_wait_ms; /* wait for a connection; 0: 10 s */
	unsigned bo_join_timeout_ms; /* grant to CommandGet; 0: 15 s */
	struct preauth *bo_preauth;  /* log limits of refusals; may be NULL */
	/*
	 * TLS resumption: after a device authenticates, its connection gets
	 * a ticket holding a registry_proof() under this key, and a device
	 * that resumes with it skips scrypt.  bo_resume 0: no tickets.
	 */
	int bo_resume;
	uint8_t bo_resume_key[32];
};

struct broker_device_info {
	char bi_id[256];
	char bi_peer[64];
	int64_t bi_since; /* Unix time */
	uint64_t bi_instance;
	unsigned bi_idle;
	unsigned bi_sessions;
};

enum broker_event {
	BROKER_EV_CONNECTED,
	BROKER_EV_DISCONNECTED,
	BROKER_EV_RESTARTED,
	BROKER_EV_SHUTDOWN, /* the server is going away: end the stream */
};

typedef void (*broker_watch_fn)(enum broker_event ev,
                                const struct broker_device_info *dev,
                                const char *reason, void *arg);

/*
 * Creates a broker using reg (the broker owns it from now on).  Returns 0
 * and sets *out, or -ENOMEM.
 */
int broker_new(uv_loop_t *loop, const struct broker_opts *opts,
               struct registry *reg, struct broker **out);

/* Swaps in a reloaded registry (owned by the broker from now on). */
void broker_set_registry(struct broker *b, struct registry *reg);

/* Registers the three Ncgrpc methods on the device-facing server. */
int broker_register_device_methods(struct broker *b, struct grpc_server *srv);

/* The device-facing server saw a connection close. */
void broker_conn_closed(struct broker *b, struct grpc_conn *conn);

/*
 * The connected devices, sorted by id.  *out is malloc'd (free it).
 * Returns 0 or -ENOMEM.
 */
int broker_devices(struct broker *b, struct broker_device_info **out,
                   size_t *n);

/*
 * 1 when device id has a connection to this node now (idle or in a
 * session), else 0: also 0 while it lingers after its last connection.
 */
int broker_device_here(struct broker *b, const char *id);

/* Device events; returns a handle for broker_unwatch(), or NULL. */
void *broker_watch(struct broker *b, broker_watch_fn fn, void *arg);
void broker_unwatch(struct broker *b, void *handle);

/*
 * Who a session is for, as written in the audit log.  bi_uid is the
 * kernel-checked uid of the operator socket's peer; the strings are what a
 * front door (ncgrpc-sshd) says it acts for (SessionOpen.operator_name,
 * operator_key, operator_source, via), empty when it says nothing.  They
 * are recorded, never used for decisions.
 */
#define BROKER_IDENT_MAX 256
struct broker_ident {
	uid_t bi_uid;
	char bi_name[BROKER_IDENT_MAX];
	char bi_key[BROKER_IDENT_MAX];
	char bi_source[BROKER_IDENT_MAX];
	char bi_via[BROKER_IDENT_MAX];
};

/*
 * What an operator asks of a shell session's terminal
 * (SessionOpen.terminal, .window, .term).  bt_raw asks for the raw
 * terminal, which is granted only when the device offered it.
 */
struct broker_terminal {
	int bt_raw;
	uint16_t bt_cols, bt_rows;          /* 0: the device's default */
	char bt_term[TERMEXT_TERM_MAX + 1]; /* "": the device's default */
};

/*
 * Takes over an operator's Session call after its open message: from now
 * on the broker owns the call's callbacks and ends it.  ident (copied) says
 * whom it is for, for the audit log; term may be NULL (line mode).
 */
void broker_session_open(struct broker *b, struct grpc_call *op,
                         const char *device_id, enum broker_session_type type,
                         unsigned wait_ms, const struct broker_ident *ident,
                         const struct broker_terminal *term);

/*
 * Shutdown: ends every operator session (the operator is told why) and
 * answers every idle Initialize with UNAVAILABLE, so that nothing waits for
 * the grace period.
 */
void broker_shutdown(struct broker *b, const char *why);

/* Frees b once the servers are shut down and every call has ended. */
void broker_free(struct broker *b);

/* Counts for logs and metrics. */
size_t broker_ndevices(const struct broker *b);

#endif
