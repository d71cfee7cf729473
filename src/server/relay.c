/*
 * The relay half of the broker: an operator's Session call joined to the
 * CommandGet stream that a device opens on a granted connection.
 *
 * A joined session is two halves (struct relay_half, broker_int.h), one per
 * side, each pointing at its peer, as relayd pairs ctl_in and ctl_out.  One
 * set of functions (half_*) serves both: a message from a half is
 * translated and sent to its peer; a half whose peer reads slowly is
 * paused, and resumed when the peer's queue drains; the end of either half
 * ends both, once, through os_end().  What truly differs between the sides
 * sits in one table per side (struct relay_side): the operator speaks the
 * operator API (SessionInput in, SessionOutput out), the device the Ncgrpc
 * CommandGet stream (CommandGetRequest in, CommandGetResponse out), and
 * their half-closes and losses mean different things.
 *
 * Bytes pass byte-exact both ways.  NETCONF input is cut into whole
 * messages (ncframe.h), shell input into lines, and a signal travels alone.
 * A raw-terminal shell (termext.h) is not cut into lines: its keystrokes go
 * on as they come, and window sizes follow.  The session state
 * (broker_int.h) changes only in os_set_state().
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
#include "pbwire.h"
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

/*
 * What differs between the operator's side and the device's.  The
 * functions get the half of their side; the peer is h->rh_peer.
 */
struct relay_side {
	/*
	 * Translates one message from this side and sends what it carries
	 * to the peer.  Returns 0, or -1 after ending the session because
	 * of the message.
	 */
	int (*rs_input)(struct relay_half *h, const uint8_t *msg, size_t len);
	/* Input held back by the translation: pause this side too. */
	int (*rs_held)(const struct relay_half *h);
	/*
	 * This side sends nothing more: what the translation still holds
	 * goes to the peer (only while the session is active).
	 */
	void (*rs_flush)(struct relay_half *h);
	/* Tells this side the session ended; it was active if so. */
	void (*rs_end)(struct relay_half *h, int status, const char *reason,
	               int active);
	/*
	 * Non-NULL when the end of this side's output ends the session: the
	 * reason, and the session ends with OK.
	 */
	const char *rs_eof_ends;
	enum srvm_end rs_eof_why; /* its end reason, for the metrics */
	/* This side's call ended under the session: status and reason. */
	int rs_lost_status;
	const char *rs_lost;
	enum srvm_end rs_lost_why;
};

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

/* Frees the session once neither half has a call left. */
static void
os_maybe_free(struct opsess *os)
{
	if (os->os_op.rh_call != NULL || os->os_dev.rh_call != NULL ||
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

/* Sends m to the side of h, if its call is still there. */
static void
half_send(struct relay_half *h, const ProtobufCMessage *m)
{
	if (h->rh_call != NULL)
		send_failed(h->rh_os, grpc_call_send_pb(h->rh_call, m));
}

/*
 * Ends the session, once: both halves are told (rs_end), the operator's
 * first, with status and reason.
 */
static void
os_end(struct opsess *os, int status, enum srvm_end why, const char *reason)
{
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
		snprintf(to, sizeof(to), "%" PRIu64, os->os_op.rh_nrelayed);
		snprintf(from, sizeof(from), "%" PRIu64,
		         os->os_dev.rh_nrelayed);
		snprintf(raw, sizeof(raw), "%" PRIu64, os->os_raw_msgs);
		log_info("session %s (%s) on \"%s\" ended: %s", id,
		         os_type_name(os), os->os_device, reason);
		audit_event("session-end", "session", id, "device",
		            os->os_device, "type", os_type_name(os),
		            "bytes-to-device", to, "bytes-from-device", from,
		            "raw-input-messages", os->os_raw ? raw : NULL,
		            "reason", reason, NULL);
	}
	os->os_op.rh_side->rs_end(&os->os_op, status, reason,
	                          prev == OS_ACTIVE);
	os->os_dev.rh_side->rs_end(&os->os_dev, status, reason,
	                           prev == OS_ACTIVE);
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

/* The halves: one set of callbacks for both calls of a session. */

/* Both halves have their call: pausing and resuming make sense. */
static int
half_joined(const struct relay_half *h)
{
	return h->rh_call != NULL && h->rh_peer->rh_call != NULL;
}

static void
half_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct relay_half *h = arg;
	const struct relay_side *s = h->rh_side;

	if (s->rs_input(h, msg, len) != 0)
		return;
	/*
	 * A peer that reads slowly stops this side, and so does input that
	 * the translation holds back.
	 */
	if (half_joined(h) &&
	    (grpc_call_queued(h->rh_peer->rh_call) >= GRPC_CALL_HIWAT ||
	     (s->rs_held != NULL && s->rs_held(h))))
		grpc_call_pause(c);
}

static void
half_on_half_close(struct grpc_call *c, void *arg)
{
	struct relay_half *h = arg;
	struct opsess *os = h->rh_os;
	const struct relay_side *s = h->rh_side;

	if (s->rs_flush != NULL && os->os_state == OS_ACTIVE)
		s->rs_flush(h);
	if (s->rs_eof_ends == NULL)
		return;
	/*
	 * The session ends before this side's call is finished, so that
	 * the call's end cannot read as a side that vanished.
	 */
	h->rh_finished = 1;
	os_end(os, GRPC_STATUS_OK, s->rs_eof_why, s->rs_eof_ends);
	if (h->rh_call != NULL)
		grpc_call_finish(c, GRPC_STATUS_OK, NULL, NULL);
}

/* This side's queue drained: its peer, paused for it, may send again. */
static void
half_on_writable(struct grpc_call *c, void *arg)
{
	struct relay_half *h = arg;

	(void)c;
	if (h->rh_peer->rh_call != NULL)
		grpc_call_resume(h->rh_peer->rh_call);
}

static void
half_on_end(struct grpc_call *c, int status, const char *msg, void *arg)
{
	struct relay_half *h = arg;
	struct opsess *os = h->rh_os;
	char why[200];

	(void)c;
	h->rh_call = NULL;
	if (os->os_state != OS_ENDED) {
		snprintf(why, sizeof(why), "%s (%s%s%s)", h->rh_side->rs_lost,
		         grpc_status_name(status), msg[0] ? ": " : "", msg);
		os_end(os, h->rh_side->rs_lost_status, h->rh_side->rs_lost_why,
		       why);
	}
	os_maybe_free(os);
}

static const struct grpc_call_ops half_ops = {
    .on_message = half_on_message,
    .on_half_close = half_on_half_close,
    .on_writable = half_on_writable,
    .on_end = half_on_end,
};

/*
 * The operator's side: SessionInput in, translated into CommandGetResponse
 * messages for the device; SessionOutput out.  Its half is "op" below.
 */

static void
send_to_device(struct relay_half *op, enum dev_input kind, const uint8_t *data,
               size_t len, uint64_t sig)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	ProtobufCBinaryData bd = {.len = len,
	                          .data = (uint8_t *)(uintptr_t)data};
	uint8_t *clean = NULL;

	if (op->rh_peer->rh_call == NULL)
		return;
	/*
	 * proto3 strings must be valid UTF-8 and devices reject anything
	 * else: invalid bytes become U+FFFD (docs/protocol.md).
	 */
	if (len > 0 && !utf8_valid(data, len)) {
		if ((clean = malloc(len * 3)) == NULL) {
			send_failed(op->rh_os, -ENOMEM);
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
	op->rh_nrelayed += len;
	metrics_count(srvm.sm_bytes, op->rh_os->os_type, SRVM_TO_DEVICE, len);
	half_send(op->rh_peer, &r.base);
	free(clean);
}

/* A raw session's new window size, alone in a message. */
static void
send_window(struct relay_half *op, const struct termext_window *w)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;
	Ncgrpc__Wire__TerminalWindow tw = NCGRPC__WIRE__TERMINAL_WINDOW__INIT;

	if (op->rh_peer->rh_call == NULL)
		return;
	tw.cols = w->tw_cols;
	tw.rows = w->tw_rows;
	r.window = &tw;
	log_debug("session %" PRIu64 ": window %ux%u", op->rh_os->os_id,
	          (unsigned)w->tw_cols, (unsigned)w->tw_rows);
	half_send(op->rh_peer, &r.base);
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
take_raw(struct relay_half *op, const uint8_t *data, size_t len)
{
	struct opsess *os = op->rh_os;
	uint8_t piece[RELAY_RAW_CHUNK + sizeof(os->os_carry)];
	size_t take, n, keep;

	os->os_raw_msgs++;
	while (len > 0 && op->rh_peer->rh_call != NULL) {
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
			send_to_device(op, DEVIN_SHELL_RAW, piece, keep, 0);
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

/* A line typed at a password prompt: its length, never its text. */
static void
audit_hidden_line(struct opsess *os, size_t len)
{
	char id[24], n[24];

	snprintf(id, sizeof(id), "%" PRIu64, os->os_id);
	snprintf(n, sizeof(n), "%zu", len);
	audit_event("shell-line", "session", id, "device", os->os_device,
	            "hidden", "password prompt", "bytes", n, NULL);
}

static void
flush_lines(struct relay_half *op, int final)
{
	struct opsess *os = op->rh_os;
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
		if (prompt_is_secret(&os->os_prompt)) {
			/* One line per prompt: typed at it, never logged. */
			audit_hidden_line(os, (size_t)(nl - p));
			prompt_reset(&os->os_prompt);
		} else {
			snprintf(line, sizeof(line), "%.*s", (int)(nl - p),
			         (const char *)p);
			audit_input(os, "shell-line", line);
		}
		send_to_device(op, DEVIN_SHELL_LINE, p, (size_t)(nl - p), 0);
		buf_consume(&os->os_line, (size_t)(nl - p) + (nl < p + len));
	}
}

#define NETCONF_NOT_UTF8 "NETCONF input is not valid UTF-8"

/*
 * A chunked message (RFC 6242, 4.2), which the framer has checked, as one
 * chunk: "\n#N\n", the data of its chunks joined, "\n##\n".  A chunk may
 * end inside a UTF-8 character, as clients that write chunks of a fixed
 * size do, so the message is valid UTF-8 only once its data is joined.
 * Returns 0 and a new buffer in *out, -ENOMEM, or -EPROTO.
 */
static int
netconf_one_chunk(const uint8_t *msg, size_t len, uint8_t **out, size_t *outlen)
{
	const uint8_t *p = msg, *end = msg + len;
	uint8_t *data, *o;
	size_t n, dlen = 0;
	int hl;

	if ((data = malloc(len)) == NULL)
		return -ENOMEM;
	for (;;) {
		if (end - p < 3 || p[0] != '\n' || p[1] != '#')
			goto bad;
		p += 2;
		if (p[0] == '#') {
			if (end - p != 2 || p[1] != '\n')
				goto bad;
			break;
		}
		for (n = 0; p < end && *p >= '0' && *p <= '9' && n <= len; p++)
			n = n * 10 + (size_t)(*p - '0');
		if (p >= end || *p != '\n' || n == 0 ||
		    n > (size_t)(end - p - 1))
			goto bad;
		memcpy(data + dlen, p + 1, n);
		dlen += n;
		p += 1 + n;
	}
	if (dlen == 0 || (o = malloc(dlen + 32)) == NULL) {
		free(data);
		return dlen == 0 ? -EPROTO : -ENOMEM;
	}
	hl = snprintf((char *)o, 32, "\n#%zu\n", dlen);
	memcpy(o + hl, data, dlen);
	memcpy(o + (size_t)hl + dlen, "\n##\n", 4);
	free(data);
	*out = o;
	*outlen = (size_t)hl + dlen + 4;
	return 0;
bad:
	free(data);
	return -EPROTO;
}

/*
 * Sends the whole NETCONF messages cut so far.  0, the framer's error, or
 * -EILSEQ for a message that is not UTF-8 (in chunked framing: once its
 * chunks are joined): replacing its bytes, as shell input's are
 * (send_to_device()), would change the lengths that chunked framing
 * declares, and XML is UTF-8 anyway, so the session ends instead.
 */
static int
flush_netconf(struct relay_half *op)
{
	struct opsess *os = op->rh_os;
	const uint8_t *msg;
	uint8_t *joined;
	size_t len;
	char opname[128];
	int rc, jr;

	while ((rc = ncframe_next(&os->os_nf, &msg, &len)) == 1) {
		joined = NULL;
		if (!utf8_valid(msg, len)) {
			if (ncframe_mode(&os->os_nf) != NCFRAME_CHUNKED ||
			    (jr = netconf_one_chunk(msg, len, &joined, &len)) ==
			        -EPROTO)
				return -EILSEQ;
			if (jr != 0)
				return jr;
			if (!utf8_valid(joined, len)) {
				free(joined);
				return -EILSEQ;
			}
			msg = joined;
		}
		if (ncframe_op_name(msg, len, opname, sizeof(opname)) == 0)
			audit_input(os,
			            strcmp(opname, "hello") == 0
			                ? "netconf-hello"
			                : "netconf-rpc",
			            opname);
		send_to_device(op, DEVIN_NETCONF, msg, len, 0);
		free(joined);
	}
	return rc;
}

/*
 * Shell input: whole lines go to the device one by one; only a line that
 * is still incomplete is kept, so only a single line over BROKER_MAX_LINE
 * fails (-ENOBUFS), whatever the size of the data message.
 */
static int
take_lines(struct relay_half *op, const uint8_t *data, size_t len)
{
	struct opsess *os = op->rh_os;
	const uint8_t *nl;
	size_t n;
	int rc;

	while (len > 0) {
		nl = memchr(data, '\n', len);
		n = nl != NULL ? (size_t)(nl - data) + 1 : len;
		if ((rc = buf_append(&os->os_line, data, n)) != 0)
			return rc;
		if (nl != NULL)
			flush_lines(op, 0);
		data += n;
		len -= n;
	}
	return 0;
}

/* The operator's bytes, by session type. */
static int
opside_data(struct relay_half *op, const uint8_t *data, size_t len)
{
	struct opsess *os = op->rh_os;
	int rc = 0;

	if (os->os_type == BROKER_NETCONF) {
		rc = ncframe_feed(&os->os_nf, data, len);
		if (rc == 0)
			rc = flush_netconf(op);
	} else if (os->os_raw)
		take_raw(op, data, len);
	else
		rc = take_lines(op, data, len);
	return rc;
}

/* A decoded SessionInput: data, a window size or a signal. */
static int
opside_decoded(struct relay_half *op,
               const Ncgrpc__Operator__V1__SessionInput *in)
{
	struct opsess *os = op->rh_os;
	struct termext_window w;
	int rc = 0;

	switch (in->input_case) {
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA:
		rc = opside_data(op, in->data.data, in->data.len);
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
		send_window(op, &w);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_SIGNAL:
		if (in->signal == 0 || in->signal > 64) {
			rc = -EINVAL;
			break;
		}
		audit_input(os, "signal", in->signal == 2 ? "SIGINT" : "other");
		send_to_device(op, DEVIN_SIGNAL, NULL, 0, in->signal);
		break;
	default:
		rc = -EINVAL;
		break;
	}
	return rc;
}

/* One SessionInput: data, a window size or a signal, for the device. */
static int
opside_input(struct relay_half *op, const uint8_t *msg, size_t len)
{
	struct opsess *os = op->rh_os;
	Ncgrpc__Operator__V1__SessionInput *in;
	const uint8_t *data;
	size_t n;
	int rc;

	/* Data, the usual input, is read where it lies (devside_input()). */
	if (pbwire_only_bytes(msg, len, PBWIRE_SESSION_INPUT_DATA, &data, &n) ==
	    1)
		rc = opside_data(op, data, n);
	else {
		in =
		    ncgrpc__operator__v1__session_input__unpack(NULL, len, msg);
		if (in == NULL) {
			os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
			       SRVM_END_PROTOCOL, "malformed SessionInput");
			return -1;
		}
		rc = opside_decoded(op, in);
		ncgrpc__operator__v1__session_input__free_unpacked(in, NULL);
	}
	if (rc == 0)
		return 0;
	if (rc == -EMSGSIZE || rc == -ENOBUFS)
		os_end(os, GRPC_STATUS_RESOURCE_EXHAUSTED, SRVM_END_RESOURCE,
		       "input message or line too long");
	else if (rc == -EPROTO)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "malformed NETCONF 1.1 chunked framing");
	else if (rc == -ERANGE)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "window size out of range");
	else if (rc == -EILSEQ)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       NETCONF_NOT_UTF8);
	else
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       "unexpected SessionInput");
	return -1;
}

/*
 * A device whose hello has not decided the framing yet stops the operator
 * too.  Once it is decided, a message being cut is bounded by
 * BROKER_MAX_NETCONF_MSG and must be let complete.
 */
static int
opside_held(const struct relay_half *op)
{
	const struct opsess *os = op->rh_os;

	return ncframe_mode(&os->os_nf) == NCFRAME_UNDECIDED &&
	       ncframe_pending(&os->os_nf) >= BROKER_MAX_PENDING;
}

/*
 * The end of the operator's input.  A last shell line without its newline
 * is still a line; the start of a character that never completed goes as
 * U+FFFD.
 */
static void
opside_flush(struct relay_half *op)
{
	struct opsess *os = op->rh_os;
	int rc;

	if (os->os_raw) {
		if (os->os_ncarry > 0)
			send_to_device(op, DEVIN_SHELL_RAW, os->os_carry,
			               os->os_ncarry, 0);
		os->os_ncarry = 0;
	} else if (os->os_type == BROKER_SHELL)
		flush_lines(op, 1);
	else if ((rc = ncframe_eof(&os->os_nf)) < 0 ||
	         (rc = flush_netconf(op)) < 0)
		os_end(os, GRPC_STATUS_INVALID_ARGUMENT, SRVM_END_PROTOCOL,
		       rc == -EILSEQ ? NETCONF_NOT_UTF8
		                     : "input ended inside a NETCONF message");
}

/*
 * The operator gets "ended" (if the session was active) and the status,
 * with the reason as its message unless OK.
 */
static void
opside_end(struct relay_half *op, int status, const char *reason, int active)
{
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	Ncgrpc__Operator__V1__SessionEnded ended =
	    NCGRPC__OPERATOR__V1__SESSION_ENDED__INIT;

	if (op->rh_call == NULL)
		return;
	if (active) {
		ended.reason = (char *)(uintptr_t)reason;
		ended.bytes_to_device = op->rh_nrelayed;
		ended.bytes_from_device = op->rh_peer->rh_nrelayed;
		out.output_case =
		    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED;
		out.ended = &ended;
		half_send(op, &out.base);
	}
	if (op->rh_call != NULL &&
	    grpc_call_finish(op->rh_call, status,
	                     status == GRPC_STATUS_OK ? NULL : reason,
	                     NULL) == -ENOMEM &&
	    op->rh_call != NULL)
		grpc_call_cancel(op->rh_call);
}

static const struct relay_side opside = {
    .rs_input = opside_input,
    .rs_held = opside_held,
    .rs_flush = opside_flush,
    .rs_end = opside_end,
    .rs_eof_ends = NULL, /* the device still answers */
    .rs_lost_status = GRPC_STATUS_CANCELLED,
    .rs_lost = "operator went away",
    .rs_lost_why = SRVM_END_OPERATOR_CLOSED,
};

/*
 * The device's side: CommandGetRequest in, its output passed to the
 * operator as SessionOutput.data; CommandGetResponse out.
 */

static int
devside_input(struct relay_half *dev, const uint8_t *msg, size_t len)
{
	struct opsess *os = dev->rh_os;
	Ncgrpc__Wire__CommandGetRequest *req = NULL;
	Ncgrpc__Operator__V1__SessionOutput out =
	    NCGRPC__OPERATOR__V1__SESSION_OUTPUT__INIT;
	const uint8_t *data;
	size_t n;
	int rc = 0;

	/*
	 * The output as it lies in the message, as every encoder writes it;
	 * anything else goes through the decoder (a copy of the output).
	 */
	if (pbwire_only_bytes(msg, len, PBWIRE_CMDGET_REQUEST_MESSAGE, &data,
	                      &n) != 1) {
		req = ncgrpc__wire__command_get_request__unpack(NULL, len, msg);
		if (req == NULL) {
			os_end(os, GRPC_STATUS_UNAVAILABLE, SRVM_END_PROTOCOL,
			       "device sent a malformed CommandGet request");
			return -1;
		}
		data = req->message.data;
		n = req->message.len;
	}
	dev->rh_nrelayed += n;
	metrics_count(srvm.sm_bytes, os->os_type, SRVM_FROM_DEVICE, n);
	if (os->os_type == BROKER_NETCONF) {
		ncframe_observe_device(&os->os_nf, data, n);
		/* The framing may have just been decided. */
		if ((rc = flush_netconf(dev->rh_peer)) < 0) {
			os_end(os, GRPC_STATUS_INVALID_ARGUMENT,
			       SRVM_END_PROTOCOL,
			       rc == -EILSEQ ? NETCONF_NOT_UTF8
			                     : "malformed NETCONF framing from "
			                       "the operator");
			rc = -1;
			goto done;
		}
		/*
		 * And the operator, held for it, may go on: with the framing
		 * decided, a message being cut may grow to its own bound
		 * (the same test as the pause, opside_held()).
		 */
		if (half_joined(dev) && !opside_held(dev->rh_peer) &&
		    grpc_call_queued(dev->rh_call) < GRPC_CALL_HIWAT)
			grpc_call_resume(dev->rh_peer->rh_call);
	}
	if (os->os_type == BROKER_SHELL && !os->os_raw)
		prompt_feed(&os->os_prompt, data, n);
	out.output_case = NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA;
	out.data.data = (uint8_t *)(uintptr_t)data;
	out.data.len = n;
	half_send(dev->rh_peer, &out.base);
done:
	if (req != NULL)
		ncgrpc__wire__command_get_request__free_unpacked(req, NULL);
	return rc;
}

/*
 * The device's stream is cancelled (the agent then kills the process),
 * unless the device closed it and we answered OK.
 */
static void
devside_end(struct relay_half *dev, int status, const char *reason, int active)
{
	(void)status;
	(void)reason;
	(void)active;
	if (dev->rh_call != NULL && !dev->rh_finished)
		grpc_call_cancel(dev->rh_call);
}

static const struct relay_side devside = {
    .rs_input = devside_input,
    .rs_held = NULL,
    .rs_flush = NULL,
    .rs_end = devside_end,
    /* The backend exited: the device closed the stream. */
    .rs_eof_ends = "device closed the session",
    .rs_eof_why = SRVM_END_DEVICE_CLOSED,
    .rs_lost_status = GRPC_STATUS_UNAVAILABLE,
    .rs_lost = "device connection lost",
    .rs_lost_why = SRVM_END_DEVICE_LOST,
};

static void
half_init(struct relay_half *h, struct opsess *os, struct relay_half *peer,
          const struct relay_side *s)
{
	h->rh_os = os;
	h->rh_peer = peer;
	h->rh_side = s;
}

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
	half_init(&os->os_op, os, &os->os_dev, &opside);
	half_init(&os->os_dev, os, &os->os_op, &devside);
	os->os_op.rh_call = op;
	os->os_type = type;
	os->os_ident = *ident;
	if (term != NULL && type == BROKER_SHELL)
		os->os_term_ask = *term;
	snprintf(os->os_device, sizeof(os->os_device), "%s", device_id);
	ncframe_init(&os->os_nf, BROKER_MAX_NETCONF_MSG);
	buf_init(&os->os_line, BROKER_MAX_LINE);
	uv_timer_init(b->b_loop, &os->os_timer);
	os->os_timer.data = os;
	grpc_call_set_ops(op, &half_ops, &os->os_op);
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
	os->os_dev.rh_call = c;
	os->os_id = ++b->b_next_session;
	grpc_call_set_ops(c, &half_ops, &os->os_dev);
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
	half_send(&os->os_op, &out.base);
	if (os->os_op.rh_call != NULL)
		grpc_call_resume(os->os_op.rh_call);
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
