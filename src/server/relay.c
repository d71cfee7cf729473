/*
 * The relay half of the broker: an operator's Session call joined to the
 * CommandGet stream that a device opens on a granted connection.
 *
 * Bytes pass byte-exact both ways with backpressure: an operator that
 * reads slowly pauses the device's stream and the other way round.  NETCONF
 * input is cut into whole messages (ncframe.h), shell input into lines, and
 * a signal travels alone.  A raw-terminal shell (termext.h) is not cut into
 * lines: its keystrokes go on as they come, and window sizes follow.  Either
 * side ending ends the other; the session state (broker_int.h) changes only in
 * os_set_state().
 *
 * No call ends inside our own sends, finishes or cancels (grpc.h: on_end
 * comes from the loop), so a session is freed only from the on_end of its
 * last call, and no path needs to hold it while it works.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "audit.h"
#include "broker_int.h"
#include "err.h"
#include "log.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "ncgrpc_wire.pb-c.h"
#include "registry.h"
#include "srvmetrics.h"
#include "utf8.h"

/* What a CommandGetResponse to the device carries besides kill_signal. */
enum dev_input {
	DEVIN_SIGNAL,     /* nothing: the signal alone */
	DEVIN_NETCONF,    /* netconf_command: one whole NETCONF message */
	DEVIN_SHELL_LINE, /* csh_command: one line, without its newline */
	DEVIN_SHELL_RAW,  /* csh_command: raw terminal input, as it came */
};

/*
 * Raw terminal input goes to the device in pieces of at most this many
 * bytes (before UTF-8 repair), so that a large paste never makes a message
 * the device refuses.
 */
#define RELAY_RAW_CHUNK (16 * 1024)

static void os_end(struct opsess *, int status, enum srvm_end why,
                   const char *reason);
static void os_unlist(struct opsess *);

static const char *const os_state_names[] = {
    [OS_WAITING] = "waiting",
    [OS_GRANTED] = "granted",
    [OS_ACTIVE] = "active",
    [OS_ENDED] = "ended",
};

/* The one place a session changes state: legal moves only, logged. */
static void
os_set_state(struct opsess *os, enum os_state to)
{
	enum os_state from = os->os_state;

	assert((from == OS_WAITING && (to == OS_GRANTED || to == OS_ENDED)) ||
	       (from == OS_GRANTED && (to == OS_ACTIVE || to == OS_ENDED)) ||
	       (from == OS_ACTIVE && to == OS_ENDED));
	log_debug("session %" PRIu64 " on \"%s\": %s -> %s", os->os_id,
	          os->os_device, os_state_names[from], os_state_names[to]);
	os->os_state = to;
}

static void
on_os_timer_closed(uv_handle_t *h)
{
	struct opsess *os = h->data;

	ncframe_free(&os->os_nf);
	buf_free(&os->os_line);
	free(os);
}

/* Frees the session once neither call is left. */
static void
os_maybe_free(struct opsess *os)
{
	if (os->os_op != NULL || os->os_dev != NULL || os->os_freeing)
		return;
	os->os_freeing = 1;
	os_unlist(os);
	LIST_REMOVE(os, os_all);
	if (os->os_devp != NULL) {
		struct device *d = os->os_devp;

		os->os_devp = NULL;
		d->dv_nsessions--;
		/* A request waiting at the session limit may go now. */
		relay_try_grant(os->os_b, d);
		broker_device_maybe_gone(os->os_b, d, "last session ended");
	}
	uv_close((uv_handle_t *)&os->os_timer, on_os_timer_closed);
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
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, SRVM_END_RESOURCE,
		       "out of memory while relaying the session");
}

static void
send_output(struct opsess *os, const Ncgrpc__Operator__V1__SessionOutput *o)
{
	if (os->os_op != NULL)
		send_failed(os, grpc_call_send_pb(os->os_op, &o->base));
}

/*
 * Ends the session: the operator gets "ended" and status; the device's
 * stream, if still open, is cancelled (the agent then kills the process).
 */
static void
os_end(struct opsess *os, int status, enum srvm_end why, const char *reason)
{
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	Ncgrpc__Operator__V1__SessionEnded ended =
	    NCGRPC__OPERATOR__V1__SESSION_ENDED__INIT;
	enum os_state prev = os->os_state;
	char id[24], to[24], from[24], raw[24];

	if (prev == OS_ENDED)
		return;
	os_unlist(os);
	os_set_state(os, OS_ENDED);
	uv_timer_stop(&os->os_timer);
	snprintf(os->os_reason, sizeof(os->os_reason), "%s", reason);
	metrics_count(srvm.sm_sessions, os->os_type, why, 1);
	if (prev == OS_ACTIVE) {
		metrics_gauge_add(srvm.sm_sessions_active, os->os_type, 0, -1);
		snprintf(id, sizeof(id), "%" PRIu64, os->os_id);
		snprintf(to, sizeof(to), "%" PRIu64, os->os_to_dev);
		snprintf(from, sizeof(from), "%" PRIu64, os->os_from_dev);
		snprintf(raw, sizeof(raw), "%" PRIu64, os->os_raw_msgs);
		log_info("session %s (%s) on \"%s\" ended: %s", id,
		         os_type_name(os), os->os_device, reason);
		audit_event("session-end", "session", id, "device",
		            os->os_device, "type", os_type_name(os),
		            "bytes-to-device", to, "bytes-from-device", from,
		            "raw-input-messages", os->os_raw ? raw : NULL,
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
	                     NULL) == -ENOMEM &&
	    os->os_op != NULL)
		grpc_call_cancel(os->os_op);
	if (os->os_dev != NULL && !os->os_dev_finished)
		grpc_call_cancel(os->os_dev);
}

static void
on_os_timeout(uv_timer_t *t)
{
	struct opsess *os = t->data;
	struct broker *b = os->os_b;
	struct device *d;
	char msg[400];

	if (os->os_state == OS_WAITING) {
		d = broker_device_find(b, os->os_device);
		if (d == NULL) {
			snprintf(msg, sizeof(msg),
			         "device '%s' is not connected", os->os_device);
			os_end(os, GRPC_STATUS_NOT_FOUND,
			       SRVM_END_NOT_CONNECTED, msg);
		} else if (d->dv_nsessions >= b->b_opts.bo_session_limit) {
			snprintf(msg, sizeof(msg),
			         "device '%s' has reached its limit of %u "
			         "sessions",
			         os->os_device, b->b_opts.bo_session_limit);
			os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED,
			       SRVM_END_BUSY, msg);
		} else {
			snprintf(msg, sizeof(msg),
			         "no free connection to device '%s' (%u "
			         "sessions active)",
			         os->os_device, d->dv_nsessions);
			os_end(os, GRPC_STATUS_UNAVAILABLE, SRVM_END_BUSY, msg);
		}
	} else if (os->os_state == OS_GRANTED) {
		snprintf(msg, sizeof(msg),
		         "device '%s' did not open the session stream",
		         os->os_device);
		os_end(os, GRPC_STATUS_UNAVAILABLE, SRVM_END_TIMEOUT, msg);
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
	struct termext_window w;
	char ws[TERMEXT_WINDOW_STRLEN];
	int rc;

	TAILQ_REMOVE(&d->dv_idle, ic, ic_entry);
	d->dv_nidle--;
	metrics_gauge_add(srvm.sm_idle, 0, 0, -1);
	d->dv_nsessions++;
	os->os_devp = d;
	os_unlist(os);
	os_set_state(os, OS_GRANTED);
	os->os_devconn = ic->ic_conn;
	snprintf(os->os_peer, sizeof(os->os_peer), "%.63s",
	         ic->ic_peer.pe_text);
	TAILQ_INSERT_TAIL(&b->b_granted, os, os_entry);
	os->os_listed = 1;
	uv_timer_start(&os->os_timer, on_os_timeout,
	               b->b_opts.bo_join_timeout_ms, 0);
	broker_initcall_set_state(ic, INIT_GRANTED);
	resp.session_type = os->os_type == BROKER_SHELL
	                        ? JNX__JET__NETCONF__SESSION_TYPE__CSH
	                        : JNX__JET__NETCONF__SESSION_TYPE__NETCONF;
	rc = grpc_md_add(&tr, "conn_type", ct, strlen(ct));
	/*
	 * The raw terminal, only to a connection that offered it: a device
	 * that did not (Junos) never sees these trailers.
	 */
	os->os_raw = os->os_type == BROKER_SHELL && os->os_term_ask.bt_raw &&
	             ic->ic_raw_offer;
	if (rc == 0 && os->os_raw) {
		const struct broker_terminal *t = &os->os_term_ask;

		rc = grpc_md_add(&tr, TERMEXT_MD_MODE, TERMEXT_RAW,
		                 strlen(TERMEXT_RAW));
		w.tw_cols = t->bt_cols;
		w.tw_rows = t->bt_rows;
		if (rc == 0 && termext_window_format(&w, ws, sizeof(ws)) == 0)
			rc =
			    grpc_md_add(&tr, TERMEXT_MD_WINDOW, ws, strlen(ws));
		if (rc == 0 && t->bt_term[0] != '\0')
			rc = grpc_md_add(&tr, TERMEXT_MD_TERM, t->bt_term,
			                 strlen(t->bt_term));
	}
	if (rc != 0 || grpc_call_send_pb(ic->ic_call, &resp.base) != 0 ||
	    grpc_call_finish(ic->ic_call, GRPC_STATUS_OK, NULL, &tr) != 0) {
		/*
		 * Out of memory: an Initialize left unanswered would hold the
		 * device's connection, and the operator would wait for the
		 * join timeout.  End both now.
		 */
		grpc_md_free(&tr);
		grpc_call_cancel(ic->ic_call);
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, SRVM_END_RESOURCE,
		       "out of memory granting the session");
		return;
	}
	grpc_md_free(&tr);
}

/* A device got an idle connection: the oldest waiting request takes it. */
void
relay_try_grant(struct broker *b, struct device *d)
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
send_to_device(struct opsess *os, enum dev_input kind, const uint8_t *data,
               size_t len, uint64_t sig)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	ProtobufCBinaryData bd = {.len = len,
	                          .data = (uint8_t *)(uintptr_t)data};

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
	if (kind == DEVIN_NETCONF) {
		r.command_case =
		    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND;
		r.netconf_command = bd;
	} else if (kind == DEVIN_SHELL_LINE || kind == DEVIN_SHELL_RAW) {
		r.command_case =
		    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND;
		r.csh_command = bd;
	}
	r.kill_signal = sig;
	os->os_to_dev += len;
	metrics_count(srvm.sm_bytes, os->os_type, SRVM_TO_DEVICE, len);
	send_failed(os, grpc_call_send_pb(os->os_dev, &r.base));
	free(clean);
}

/* A raw session's new window size, alone in a message. */
static void
send_window(struct opsess *os, const struct termext_window *w)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	Ncgrpc__Wire__TerminalWindow tw = NCGRPC__WIRE__TERMINAL_WINDOW__INIT;

	if (os->os_dev == NULL)
		return;
	tw.cols = w->tw_cols;
	tw.rows = w->tw_rows;
	r.window = &tw;
	log_debug("session %" PRIu64 ": window %ux%u", os->os_id,
	          (unsigned)w->tw_cols, (unsigned)w->tw_rows);
	send_failed(os, grpc_call_send_pb(os->os_dev, &r.base));
}

/*
 * Raw terminal input: relayed as it came, in pieces of at most
 * RELAY_RAW_CHUNK bytes.  Only the start of a character that the next
 * message completes is held back (os_carry), so that a character split by
 * the operator's reads is not turned into U+FFFD.  Keystrokes are not
 * audited one by one: they are not command lines, and the session-end
 * event counts them.
 */
static void
take_raw(struct opsess *os, const uint8_t *data, size_t len)
{
	uint8_t piece[RELAY_RAW_CHUNK + sizeof(os->os_carry)];
	size_t take, n, keep;

	os->os_raw_msgs++;
	while (len > 0 && os->os_dev != NULL) {
		memcpy(piece, os->os_carry, os->os_ncarry);
		take = len < RELAY_RAW_CHUNK ? len : RELAY_RAW_CHUNK;
		memcpy(piece + os->os_ncarry, data, take);
		data += take;
		len -= take;
		n = os->os_ncarry + take;
		keep = utf8_complete_prefix(piece, n);
		os->os_ncarry = n - keep;
		memcpy(os->os_carry, piece + keep, os->os_ncarry);
		if (keep > 0)
			send_to_device(os, DEVIN_SHELL_RAW, piece, keep, 0);
	}
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
		send_to_device(os, DEVIN_SHELL_LINE, p, (size_t)(nl - p), 0);
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
		send_to_device(os, DEVIN_NETCONF, msg, len, 0);
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
	struct termext_window w;
	int rc = 0;

	in = ncgrpc__operator__v1__session_input__unpack(NULL, len, msg);
	if (in == NULL) {
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "malformed SessionInput");
		return;
	}
	switch (in->input_case) {
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA:
		if (os->os_type == BROKER_NETCONF) {
			rc = ncframe_feed(&os->os_nf, in->data.data,
			                  in->data.len);
			if (rc == 0)
				rc = flush_netconf(os);
		} else if (os->os_raw)
			take_raw(os, in->data.data, in->data.len);
		else
			rc = take_lines(os, in->data.data, in->data.len);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_WINDOW:
		/* A line-mode session has no window: ignored, as documented. */
		if (!os->os_raw)
			break;
		if (termext_window_check(in->window->cols, in->window->rows,
		                         &w) != 0) {
			rc = -ERANGE;
			break;
		}
		send_window(os, &w);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_SIGNAL:
		if (in->signal == 0 || in->signal > 64) {
			rc = -EINVAL;
			break;
		}
		audit_input(os, "signal", in->signal == 2 ? "SIGINT" : "other");
		send_to_device(os, DEVIN_SIGNAL, NULL, 0, in->signal);
		break;
	default:
		rc = -EINVAL;
		break;
	}
	ncgrpc__operator__v1__session_input__free_unpacked(in, NULL);
	if (rc == -EMSGSIZE || rc == -ENOBUFS)
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, SRVM_END_RESOURCE,
		       "input message or line too long");
	else if (rc == -EPROTO)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "malformed NETCONF 1.1 chunked framing");
	else if (rc == -ERANGE)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "window size out of range");
	else if (rc != 0)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
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
}

static void
op_on_half_close(struct grpc_call *c, void *arg)
{
	struct opsess *os = arg;

	(void)c;
	if (os->os_state != OS_ACTIVE)
		return;
	/*
	 * A last shell line without its newline is still a line; the start
	 * of a character that never completed goes as U+FFFD.
	 */
	if (os->os_raw) {
		if (os->os_ncarry > 0)
			send_to_device(os, DEVIN_SHELL_RAW, os->os_carry,
			               os->os_ncarry, 0);
		os->os_ncarry = 0;
	} else if (os->os_type == BROKER_SHELL)
		flush_lines(os, 1);
	else if (ncframe_eof(&os->os_nf) < 0 || flush_netconf(os) < 0)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "input ended inside a NETCONF message");
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
		os_end(os, GRPC_STATUS_CANCELLED, SRVM_END_OPERATOR_CLOSED,
		       why);
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
relay_open(struct broker *b, struct grpc_call *op, const char *device_id,
           enum broker_session_type type, unsigned wait_ms,
           const struct broker_ident *ident, const struct broker_terminal *term)
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
	os->os_open_ns = uv_hrtime();
	LIST_INSERT_HEAD(&b->b_sessions, os, os_all);
	os->os_op = op;
	os->os_type = type;
	os->os_ident = *ident;
	if (term != NULL && type == BROKER_SHELL)
		os->os_term_ask = *term;
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
	d = broker_device_find(b, device_id);
	/* Only a device that may connect is worth the wait. */
	if (d == NULL &&
	    (b->b_reg == NULL || !registry_has(b->b_reg, device_id))) {
		snprintf(msg, sizeof(msg), "device '%s' is not registered",
		         device_id);
		os_end(os, GRPC_STATUS_NOT_FOUND, SRVM_END_NOT_CONNECTED, msg);
		return;
	}
	if (d != NULL && d->dv_nsessions >= b->b_opts.bo_session_limit) {
		snprintf(msg, sizeof(msg),
		         "device '%s' has reached its limit of %u sessions",
		         device_id, b->b_opts.bo_session_limit);
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, SRVM_END_BUSY, msg);
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
dev_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct opsess *os = arg;
	Ncgrpc__Wire__CommandGetRequest *req;
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;

	req = ncgrpc__wire__command_get_request__unpack(NULL, len, msg);
	if (req == NULL) {
		os_end(os, GRPC_STATUS_UNAVAILABLE, SRVM_END_PROTOCOL,
		       "device sent a malformed CommandGet request");
		return;
	}
	os->os_from_dev += req->message.len;
	metrics_count(srvm.sm_bytes, os->os_type, SRVM_FROM_DEVICE,
	              req->message.len);
	if (os->os_type == BROKER_NETCONF) {
		ncframe_observe_device(&os->os_nf, req->message.data,
		                       req->message.len);
		/* The framing may have just been decided. */
		if (flush_netconf(os) < 0) {
			ncgrpc__wire__command_get_request__free_unpacked(req,
			                                                 NULL);
			os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
			       SRVM_END_PROTOCOL,
			       "malformed NETCONF framing from the operator");
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
}

static void
dev_on_half_close(struct grpc_call *c, void *arg)
{
	struct opsess *os = arg;

	/*
	 * The backend exited: the device closed the stream.  The session
	 * ends before the device's call is finished, so that the call's end
	 * cannot read as a device that vanished.
	 */
	os->os_dev_finished = 1;
	os_end(os, GRPC_STATUS_OK, SRVM_END_DEVICE_CLOSED,
	       "device closed the session");
	if (os->os_dev != NULL)
		grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
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
		os_end(os, GRPC_STATUS_UNAVAILABLE, SRVM_END_DEVICE_LOST, why);
	}
	os_maybe_free(os);
}

static const struct grpc_call_ops dev_ops = {
    .on_message = dev_on_message,
    .on_half_close = dev_on_half_close,
    .on_writable = dev_on_writable,
    .on_end = dev_on_end,
};

/* NULL for "" (audit_event() then leaves the key out). */
static const char *
nonempty(const char *s)
{
	return s[0] != '\0' ? s : NULL;
}

void
relay_commandget(struct grpc_call *c, void *arg)
{
	struct broker *b = arg;
	struct grpc_conn *conn = grpc_call_conn(c);
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	Ncgrpc__Operator__V1__SessionStarted st =
	    NCGRPC__OPERATOR__V1__SESSION_STARTED__INIT;
	struct opsess *os;
	char id[24], uid[24], opname[BROKER_IDENT_MAX * 4];

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
	os_set_state(os, OS_ACTIVE);
	os->os_dev = c;
	os->os_id = ++b->b_next_session;
	grpc_call_set_ops(c, &dev_ops, os);
	metrics_count(srvm.sm_sessions_started, os->os_type, 0, 1);
	metrics_gauge_add(srvm.sm_sessions_active, os->os_type, 0, 1);
	metrics_observe(srvm.sm_open_secs, os->os_type, 0,
	                srvmetrics_secs(os->os_open_ns, uv_hrtime()));
	snprintf(id, sizeof(id), "%" PRIu64, os->os_id);
	/* A session from another node has no uid here (operator.h). */
	if (os->os_ident.bi_uid == (uid_t)-1)
		snprintf(uid, sizeof(uid), "(another node's)");
	else
		snprintf(uid, sizeof(uid), "%ld", (long)os->os_ident.bi_uid);
	log_escape(opname, sizeof(opname), os->os_ident.bi_name,
	           strlen(os->os_ident.bi_name));
	log_info("session %s (%s%s) on \"%s\" started for uid %s%s%s%s", id,
	         os_type_name(os), os->os_raw ? ", raw terminal" : "",
	         os->os_device, uid, opname[0] != '\0' ? " as operator \"" : "",
	         opname, opname[0] != '\0' ? "\"" : "");
	audit_event("session-start", "session", id, "operator-uid",
	            os->os_ident.bi_uid == (uid_t)-1 ? NULL : uid, "operator",
	            nonempty(os->os_ident.bi_name), "operator-key",
	            nonempty(os->os_ident.bi_key), "operator-source",
	            nonempty(os->os_ident.bi_source), "via",
	            nonempty(os->os_ident.bi_via), "device", os->os_device,
	            "type", os_type_name(os), "peer", os->os_peer, "terminal",
	            os->os_type != BROKER_SHELL ? NULL
	            : os->os_raw                ? "raw"
	                                        : "line",
	            NULL);
	st.device_id = os->os_device;
	st.type = os->os_type == BROKER_SHELL
	              ? NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL
	              : NCGRPC__OPERATOR__V1__SESSION_TYPE__NETCONF;
	st.peer = os->os_peer;
	st.session_id = os->os_id;
	st.terminal = os->os_raw ? NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW
	                         : NCGRPC__OPERATOR__V1__TERMINAL_MODE__LINE;
	out.output_case = NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED;
	out.started = &st;
	send_output(os, &out);
	if (os->os_op != NULL)
		grpc_call_resume(os->os_op);
}

void
relay_conn_closed(struct broker *b, struct grpc_conn *conn)
{
	struct opsess *os, *next;

	for (os = TAILQ_FIRST(&b->b_granted); os != NULL; os = next) {
		next = TAILQ_NEXT(os, os_entry);
		if (os->os_devconn == conn)
			os_end(os, GRPC_STATUS_UNAVAILABLE,
			       SRVM_END_DEVICE_LOST,
			       "device connection closed before the session "
			       "started");
	}
}

/* ncgrpcd is going away: every session ends, with why. */
void
relay_shutdown(struct broker *b, const char *why)
{
	struct opsess *os, *next;

	for (os = LIST_FIRST(&b->b_sessions); os != NULL; os = next) {
		os_end(os, GRPC_STATUS_UNAVAILABLE, SRVM_END_SHUTDOWN, why);
		next = LIST_NEXT(os, os_all);
	}
}
