/*
 * Node-to-node forwarding of operator sessions; see forward.h.
 *
 * A forwarded session joins two calls: the local operator's Session call
 * (op) and the Session call this node makes on the peer node (remote).
 * Messages pass as they are, without being decoded, in both directions,
 * except that the remote's first and last outputs (started, ended) are
 * read for the audit log.  Backpressure as in relay.c: a side whose output
 * queue is above GRPC_CALL_HIWAT pauses the other side's delivery until
 * on_writable.  A session is freed in the on_end of its last call.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "audit.h"
#include "err.h"
#include "forward.h"
#include "grpc.h"
#include "log.h"
#include "tls.h"

#define FWD_SESSION_PATH "/ncgrpc.operator.v1.Operator/Session"
/* Keepalive of a peer connection: a silent peer is gone within 40 s. */
#define FWD_PING_MS    20000
#define FWD_PING_TO_MS 20000
/* What a peer may send in one message: as the operator API takes. */
#define FWD_MAX_MESSAGE (16 * 1024 * 1024)
/* "node NAME": the certificate's CN, or the address before the handshake */
#define FWD_LABEL_MAX (FORWARD_ADDR_MAX + 80)
/* SessionOutput tags of its started (1) and ended (3) fields. */
#define FWD_TAG_STARTED 0x0a
#define FWD_TAG_ENDED   0x1a

enum fws_state {
	FWS_WAITING, /* for the peer's connection */
	FWS_OPEN,    /* the remote call runs */
	FWS_ENDED,
};

struct fwpeer;

struct fwsess {
	LIST_ENTRY(fwsess) fs_all;
	TAILQ_ENTRY(fwsess) fs_wait;
	struct fwpeer *fs_peer; /* while waiting or open, then NULL */
	struct grpc_call *fs_op;
	struct grpc_call *fs_remote;
	enum fws_state fs_state;
	int fs_waiting;    /* on fs_peer's waiting list */
	int fs_started;    /* the remote sent started */
	int fs_ended_seen; /* the remote sent ended */
	uint64_t fs_id;    /* of this node's audit records */
	uint64_t fs_remote_id;
	uint64_t fs_to_node, fs_from_node; /* message bytes */
	uint8_t *fs_open;                  /* the packed open message */
	size_t fs_openlen;
	char fs_device[256];
	const char *fs_type;
	char fs_node[FWD_LABEL_MAX];
	char fs_reason[512];
	struct broker_ident fs_ident;
};

struct fwpeer {
	LIST_ENTRY(fwpeer) fp_entry;
	char fp_addr[FORWARD_ADDR_MAX];
	char fp_name[64]; /* its certificate's CN, once connected */
	struct grpc_conn *fp_conn;
	int fp_ready;
	int fp_draining; /* GOAWAY: no new sessions on this connection */
	TAILQ_HEAD(, fwsess) fp_waiting;
	unsigned fp_nwaiting;
};

static struct {
	uv_loop_t *loop;
	struct tls_ctx *ctx;
	forward_resolver_fn resolver;
	void *resolver_arg;
	LIST_HEAD(, fwpeer) peers;
	unsigned npeers;
	LIST_HEAD(, fwsess) sessions;
	size_t nsess;
	uint64_t next_id;
	int init;
	int stopping;
} fw;

static void fs_end(struct fwsess *, int status, const char *reason);

int
forward_init(uv_loop_t *loop, struct tls_ctx *ctx)
{
	if (fw.init)
		return -EALREADY;
	fw.loop = loop;
	fw.ctx = ctx;
	LIST_INIT(&fw.peers);
	LIST_INIT(&fw.sessions);
	fw.init = 1;
	fw.stopping = 0;
	return 0;
}

void
forward_set_resolver(forward_resolver_fn fn, void *arg)
{
	fw.resolver = fn;
	fw.resolver_arg = arg;
}

const char *
forward_resolve(const char *device_id)
{
	const char *addr;

	if (!fw.init || fw.stopping || fw.resolver == NULL)
		return NULL;
	addr = fw.resolver(device_id, fw.resolver_arg);
	if (addr == NULL || addr[0] == '\0')
		return NULL;
	return addr;
}

size_t
forward_nsessions(void)
{
	return fw.nsess;
}

/* --- Sessions ------------------------------------------------------------ */

static const char *
nonempty(const char *s)
{
	return s[0] != '\0' ? s : NULL;
}

static void
fs_unwait(struct fwsess *fs)
{
	if (!fs->fs_waiting)
		return;
	TAILQ_REMOVE(&fs->fs_peer->fp_waiting, fs, fs_wait);
	fs->fs_peer->fp_nwaiting--;
	fs->fs_waiting = 0;
}

static void
fs_maybe_free(struct fwsess *fs)
{
	if (fs->fs_op != NULL || fs->fs_remote != NULL)
		return;
	fs_unwait(fs);
	LIST_REMOVE(fs, fs_all);
	fw.nsess--;
	free(fs->fs_open);
	free(fs);
}

static void
audit_end(struct fwsess *fs, const char *reason)
{
	char id[24], rid[24], to[24], from[24];

	snprintf(id, sizeof(id), "%" PRIu64, fs->fs_id);
	snprintf(rid, sizeof(rid), "%" PRIu64, fs->fs_remote_id);
	snprintf(to, sizeof(to), "%" PRIu64, fs->fs_to_node);
	snprintf(from, sizeof(from), "%" PRIu64, fs->fs_from_node);
	log_info("forwarded session %s on \"%s\" via node %s ended: %s", id,
	         fs->fs_device, fs->fs_node, reason);
	audit_event("session-forward-end", "forward", id, "device",
	            fs->fs_device, "node", fs->fs_node, "remote-session",
	            fs->fs_started ? rid : NULL, "message-bytes-to-node", to,
	            "message-bytes-from-node", from, "reason", reason, NULL);
}

/* The operator learns why, in an ended output when it saw started. */
static void
op_finish(struct fwsess *fs, int status, const char *reason)
{
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	Ncgrpc__Operator__V1__SessionEnded ended =
	    NCGRPC__OPERATOR__V1__SESSION_ENDED__INIT;

	if (fs->fs_op == NULL)
		return;
	if (fs->fs_started && !fs->fs_ended_seen) {
		ended.reason = (char *)(uintptr_t)reason;
		out.output_case =
		    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED;
		out.ended = &ended;
		(void)grpc_call_send_pb(fs->fs_op, &out.base);
	}
	if (grpc_call_finish(fs->fs_op, status,
	                     status == GRPC_STATUS_OK ? NULL : reason,
	                     NULL) == -ENOMEM)
		grpc_call_cancel(fs->fs_op);
}

/*
 * Ends a session from this side: the operator gets status and reason, the
 * remote call (if any) is cancelled, and the end is audited.
 */
static void
fs_end(struct fwsess *fs, int status, const char *reason)
{
	if (fs->fs_state == FWS_ENDED)
		return;
	fs->fs_state = FWS_ENDED;
	fs_unwait(fs);
	/* A longer reason is cut, deliberately. */
	snprintf(fs->fs_reason, sizeof(fs->fs_reason), "%.*s",
	         (int)sizeof(fs->fs_reason) - 1, reason);
	audit_end(fs, reason);
	op_finish(fs, status, reason);
	if (fs->fs_remote != NULL)
		grpc_call_cancel(fs->fs_remote);
}

static void
fs_send_failed(struct fwsess *fs, int rc)
{
	if (rc != 0 && rc != -EPIPE)
		fs_end(fs, GRPC_STATUS_RESOURCE_EXHAUSTED,
		       rc == -EMSGSIZE ? "message too large to forward"
		                       : "out of memory while forwarding");
}

/* Operator side. */

static void
op_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct fwsess *fs = arg;

	if (fs->fs_remote == NULL || fs->fs_state != FWS_OPEN)
		return;
	fs->fs_to_node += len;
	fs_send_failed(fs, grpc_call_send(fs->fs_remote, msg, len));
	if (fs->fs_remote != NULL &&
	    grpc_call_queued(fs->fs_remote) >= GRPC_CALL_HIWAT)
		grpc_call_pause(c);
}

static void
op_on_half_close(struct grpc_call *c, void *arg)
{
	struct fwsess *fs = arg;

	(void)c;
	if (fs->fs_remote != NULL)
		(void)grpc_call_close_send(fs->fs_remote);
}

static void
op_on_writable(struct grpc_call *c, void *arg)
{
	struct fwsess *fs = arg;

	(void)c;
	if (fs->fs_remote != NULL)
		grpc_call_resume(fs->fs_remote);
}

static void
op_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct fwsess *fs = arg;
	char why[300];

	(void)c;
	fs->fs_op = NULL;
	if (fs->fs_state != FWS_ENDED) {
		snprintf(why, sizeof(why), "operator went away (%s%s%s)",
		         grpc_status_name(status), msg[0] ? ": " : "", msg);
		fs_end(fs, GRPC_STATUS_CANCELLED, why);
	}
	fs_maybe_free(fs);
}

static const struct grpc_call_ops op_ops = {
    .on_message = op_on_message,
    .on_half_close = op_on_half_close,
    .on_writable = op_on_writable,
    .on_end = op_on_end,
};

/* Remote side. */

/* Reads the started and ended outputs; data passes unread. */
static void
remote_observe(struct fwsess *fs, const uint8_t *msg, size_t len)
{
	Ncgrpc__Operator__V1__SessionOutput *o;

	if (len == 0 || (msg[0] != FWD_TAG_STARTED && msg[0] != FWD_TAG_ENDED))
		return;
	o = ncgrpc__operator__v1__session_output__unpack(NULL, len, msg);
	if (o == NULL)
		return;
	if (o->output_case ==
	        NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED &&
	    !fs->fs_started) {
		fs->fs_started = 1;
		fs->fs_remote_id = o->started->session_id;
		log_info("forwarded session %" PRIu64 " on \"%s\" started on "
		         "node %s as its session %" PRIu64,
		         fs->fs_id, fs->fs_device, fs->fs_node,
		         fs->fs_remote_id);
	} else if (o->output_case ==
	           NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED) {
		fs->fs_ended_seen = 1;
		snprintf(fs->fs_reason, sizeof(fs->fs_reason), "%s",
		         o->ended->reason);
	}
	ncgrpc__operator__v1__session_output__free_unpacked(o, NULL);
}

static void
remote_on_message(struct grpc_call *c, const uint8_t *msg, size_t len,
                  void *arg)
{
	struct fwsess *fs = arg;

	if (fs->fs_op == NULL || fs->fs_state == FWS_ENDED)
		return;
	fs->fs_from_node += len;
	remote_observe(fs, msg, len);
	fs_send_failed(fs, grpc_call_send(fs->fs_op, msg, len));
	/* An operator that reads slowly stops the other node. */
	if (fs->fs_op != NULL && grpc_call_queued(fs->fs_op) >= GRPC_CALL_HIWAT)
		grpc_call_pause(c);
}

static void
remote_on_writable(struct grpc_call *c, void *arg)
{
	struct fwsess *fs = arg;

	(void)c;
	if (fs->fs_op != NULL)
		grpc_call_resume(fs->fs_op);
}

static void
remote_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct fwsess *fs = arg;
	char why[sizeof(fs->fs_reason)];

	(void)c;
	fs->fs_remote = NULL;
	fs->fs_peer = NULL;
	if (fs->fs_state != FWS_ENDED) {
		fs->fs_state = FWS_ENDED;
		if (!fs->fs_ended_seen &&
		    strncmp(msg, "connection closed", 17) == 0) {
			/* The node (or the way to it) is gone. */
			snprintf(why, sizeof(why),
			         "node %s connection lost (%s)", fs->fs_node,
			         msg);
			status = GRPC_STATUS_UNAVAILABLE;
		} else if (fs->fs_ended_seen)
			snprintf(why, sizeof(why), "%s", fs->fs_reason);
		else
			snprintf(why, sizeof(why), "%s", msg);
		audit_end(fs, why);
		/* The other node's word, as it said it. */
		op_finish(fs, status, fs->fs_ended_seen ? msg : why);
	}
	fs_maybe_free(fs);
}

static const struct grpc_call_ops remote_ops = {
    .on_message = remote_on_message,
    .on_writable = remote_on_writable,
    .on_end = remote_on_end,
};

static void
fs_label(struct fwsess *fs, const struct fwpeer *p)
{
	if (p->fp_name[0] != '\0')
		snprintf(fs->fs_node, sizeof(fs->fs_node), "%s (%s)",
		         p->fp_name, p->fp_addr);
	else
		snprintf(fs->fs_node, sizeof(fs->fs_node), "%s", p->fp_addr);
}

/* The peer's connection is ready: the remote call starts. */
static void
fs_start(struct fwsess *fs)
{
	struct fwpeer *p = fs->fs_peer;
	char why[400];
	int rc;

	fs_label(fs, p);
	rc = grpc_call_start(p->fp_conn, FWD_SESSION_PATH, NULL, 0, &remote_ops,
	                     fs, &fs->fs_remote);
	if (rc != 0) {
		snprintf(why, sizeof(why),
		         "node %s: cannot start the session there (%s)",
		         fs->fs_node, ncg_strerror(rc));
		fs_end(fs, GRPC_STATUS_UNAVAILABLE, why);
		return;
	}
	fs->fs_state = FWS_OPEN;
	/* Every output comes through, also when the remote ends paused. */
	grpc_call_deliver_all(fs->fs_remote);
	rc = grpc_call_send(fs->fs_remote, fs->fs_open, fs->fs_openlen);
	free(fs->fs_open);
	fs->fs_open = NULL;
	if (rc != 0) {
		fs_send_failed(fs, rc);
		return;
	}
	if (fs->fs_op != NULL)
		grpc_call_resume(fs->fs_op);
}

/* --- Peers ------------------------------------------------------------- */

static void
peer_on_ready(struct grpc_conn *conn, void *arg)
{
	struct fwpeer *p = arg;
	struct fwsess *fs;

	p->fp_ready = 1;
	(void)grpc_conn_peer_cert_name(conn, p->fp_name, sizeof(p->fp_name));
	log_info("node connection to %s (\"%s\") ready", p->fp_addr,
	         p->fp_name);
	while ((fs = TAILQ_FIRST(&p->fp_waiting)) != NULL) {
		fs_unwait(fs);
		fs_start(fs);
	}
}

static void
peer_on_goaway(struct grpc_conn *conn, uint32_t error_code, const char *debug,
               void *arg)
{
	struct fwpeer *p = arg;

	(void)conn;
	log_info("node %s going away (code %u%s%s): new sessions get a new "
	         "connection",
	         p->fp_addr, (unsigned)error_code, debug[0] ? ", " : "", debug);
	p->fp_draining = 1;
}

static void
peer_on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct fwpeer *p = arg;
	struct fwsess *fs;
	char why[600];

	(void)conn;
	if (err != 0 && !fw.stopping)
		log_warnx("node connection to %s%s%s%s closed: %s", p->fp_addr,
		          p->fp_name[0] ? " (\"" : "", p->fp_name,
		          p->fp_name[0] ? "\")" : "", reason);
	else
		log_info("node connection to %s closed", p->fp_addr);
	while ((fs = TAILQ_FIRST(&p->fp_waiting)) != NULL) {
		fs_unwait(fs);
		fs->fs_peer = NULL;
		snprintf(why, sizeof(why), "node %s connection failed (%s)",
		         p->fp_addr, reason);
		fs_end(fs, GRPC_STATUS_UNAVAILABLE, why);
		fs_maybe_free(fs);
	}
	LIST_REMOVE(p, fp_entry);
	fw.npeers--;
	free(p);
}

static const struct grpc_conn_ops peer_ops = {
    .on_ready = peer_on_ready,
    .on_goaway = peer_on_goaway,
    .on_closed = peer_on_closed,
};

/* "HOST:PORT" or "[V6]:PORT" into host and port.  0 or -EINVAL. */
static int
split_addr(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon = strrchr(addr, ':'), *h = addr;
	size_t hl;
	char *end;
	unsigned long v;

	if (colon == NULL || colon == addr)
		return -EINVAL;
	hl = (size_t)(colon - addr);
	if (addr[0] == '[') {
		if (hl < 3 || addr[hl - 1] != ']')
			return -EINVAL;
		h = addr + 1;
		hl -= 2;
	} else if (memchr(addr, ':', hl) != NULL)
		return -EINVAL;
	errno = 0;
	v = strtoul(colon + 1, &end, 10);
	if (errno != 0 || end == colon + 1 || *end != '\0' || v == 0 ||
	    v > 65535 || hl >= hostlen)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)v;
	return 0;
}

/* The connection to the node at addr: the one kept, or a new one. */
static int
peer_get(const char *addr, struct fwpeer **out, char *err, size_t errlen)
{
	struct grpc_opts o = {0};
	struct fwpeer *p;
	char host[FORWARD_ADDR_MAX];
	uint16_t port;
	int rc;

	LIST_FOREACH(p, &fw.peers, fp_entry)
	if (!p->fp_draining && strcmp(p->fp_addr, addr) == 0) {
		*out = p;
		return 0;
	}
	if (strlen(addr) >= sizeof(p->fp_addr) ||
	    split_addr(addr, host, sizeof(host), &port) != 0) {
		ncg_seterr(err, errlen, "bad node address \"%.80s\"", addr);
		return -EINVAL;
	}
	if (fw.npeers >= FORWARD_MAX_PEERS) {
		ncg_seterr(err, errlen, "connections to %d nodes already",
		           FORWARD_MAX_PEERS);
		return -EMFILE;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(p->fp_addr, sizeof(p->fp_addr), "%s", addr);
	TAILQ_INIT(&p->fp_waiting);
	o.go_max_message = FWD_MAX_MESSAGE;
	o.go_ping_interval_ms = FWD_PING_MS;
	o.go_ping_timeout_ms = FWD_PING_TO_MS;
	xport_opts_dead_peer(&o.go_xport, 30);
	rc = grpc_conn_connect(fw.loop, host, port, fw.ctx, &o, &peer_ops, p,
	                       &p->fp_conn);
	if (rc != 0) {
		free(p);
		ncg_seterr(err, errlen, "%s", ncg_strerror(rc));
		return rc;
	}
	LIST_INSERT_HEAD(&fw.peers, p, fp_entry);
	fw.npeers++;
	*out = p;
	return 0;
}

/* --- Taking a session over ---------------------------------------------- */

/* The open message for the other node, with the local operator in it. */
static int
pack_open(struct fwsess *fs, const Ncgrpc__Operator__V1__SessionOpen *open)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__SessionOpen o = *open;
	char name[BROKER_IDENT_MAX];

	if (fs->fs_ident.bi_name[0] != '\0')
		snprintf(name, sizeof(name), "%s", fs->fs_ident.bi_name);
	else
		snprintf(name, sizeof(name), "uid:%ld",
		         (long)fs->fs_ident.bi_uid);
	o.operator_name = name;
	o.operator_key = fs->fs_ident.bi_key;
	o.operator_source = fs->fs_ident.bi_source;
	o.via = fs->fs_ident.bi_via;
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN;
	in.open = &o;
	fs->fs_openlen =
	    ncgrpc__operator__v1__session_input__get_packed_size(&in);
	if ((fs->fs_open = malloc(fs->fs_openlen + 1)) == NULL)
		return -ENOMEM;
	ncgrpc__operator__v1__session_input__pack(&in, fs->fs_open);
	return 0;
}

void
forward_session(struct grpc_call *op, const char *addr,
                const Ncgrpc__Operator__V1__SessionOpen *open,
                const struct broker_ident *ident)
{
	struct fwsess *fs;
	struct fwpeer *p;
	char id[24], uid[24], err[300], why[600];

	if (!fw.init || (fs = calloc(1, sizeof(*fs))) == NULL) {
		grpc_call_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED,
		                 "out of memory", NULL);
		return;
	}
	fs->fs_op = op;
	fs->fs_id = ++fw.next_id;
	fs->fs_ident = *ident;
	fs->fs_type = open->type == NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL
	                  ? "shell"
	                  : "netconf";
	snprintf(fs->fs_device, sizeof(fs->fs_device), "%s", open->device_id);
	snprintf(fs->fs_node, sizeof(fs->fs_node), "%s", addr);
	LIST_INSERT_HEAD(&fw.sessions, fs, fs_all);
	fw.nsess++;
	grpc_call_set_ops(op, &op_ops, fs);
	/* Input waits for the remote call. */
	grpc_call_pause(op);
	snprintf(id, sizeof(id), "%" PRIu64, fs->fs_id);
	snprintf(uid, sizeof(uid), "%ld", (long)ident->bi_uid);
	log_info("session on \"%s\" (%s) for uid %s forwarded to node %s as "
	         "forward %s",
	         fs->fs_device, fs->fs_type, uid, addr, id);
	audit_event("session-forward", "forward", id, "operator-uid", uid,
	            "operator", nonempty(ident->bi_name), "operator-key",
	            nonempty(ident->bi_key), "operator-source",
	            nonempty(ident->bi_source), "via", nonempty(ident->bi_via),
	            "device", fs->fs_device, "type", fs->fs_type, "node", addr,
	            NULL);
	if (pack_open(fs, open) != 0) {
		fs_end(fs, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (peer_get(addr, &p, err, sizeof(err)) != 0) {
		snprintf(why, sizeof(why), "node %s: cannot connect (%s)", addr,
		         err);
		fs_end(fs, GRPC_STATUS_UNAVAILABLE, why);
		return;
	}
	fs->fs_peer = p;
	if (p->fp_ready) {
		fs_start(fs);
		return;
	}
	if (p->fp_nwaiting >= FORWARD_MAX_WAITING) {
		snprintf(why, sizeof(why),
		         "node %s: %d sessions already wait for its connection",
		         addr, FORWARD_MAX_WAITING);
		fs_end(fs, GRPC_STATUS_RESOURCE_EXHAUSTED, why);
		return;
	}
	TAILQ_INSERT_TAIL(&p->fp_waiting, fs, fs_wait);
	p->fp_nwaiting++;
	fs->fs_waiting = 1;
}

void
forward_shutdown(const char *why)
{
	struct fwsess *fs, *fsnext;
	struct fwpeer *p, *pnext;

	if (!fw.init || fw.stopping)
		return;
	fw.stopping = 1;
	for (fs = LIST_FIRST(&fw.sessions); fs != NULL; fs = fsnext) {
		fsnext = LIST_NEXT(fs, fs_all);
		fs_end(fs, GRPC_STATUS_UNAVAILABLE, why);
	}
	for (p = LIST_FIRST(&fw.peers); p != NULL; p = pnext) {
		pnext = LIST_NEXT(p, fp_entry);
		grpc_conn_close(p->fp_conn, NCG_ECLOSED);
	}
}

void
forward_free(void)
{
	memset(&fw, 0, sizeof(fw));
}
