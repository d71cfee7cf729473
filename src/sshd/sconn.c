/*
 * One SSH connection of ncgrpc-sshd and its channels.
 *
 * The libssh session is non-blocking and driven from the libuv loop: a
 * uv_poll_t watches its socket (writable too while libssh has output it
 * could not write), and each readiness runs ssh_handle_key_exchange()
 * until the keys are agreed, then ssh_event_dopoll(ev, 0), which runs the
 * libssh callbacks below.  Those callbacks only record what the client
 * asked; the work (starting an operator call, refusing with a message,
 * moving bytes) happens in conn_after(), once libssh has returned, so that
 * libssh never sees our packets inside its own replies.
 *
 * Each session channel (subsystem netconf, shell or exec) is one Session
 * call of the operator API on the connection's own gRPC connection to
 * ncgrpcd's operator socket.  Flow control holds both ways:
 *
 *   client -> device: the data callback takes bytes only while the call
 *   has less than GRPC_CALL_HIWAT queued; what it leaves stays in libssh's
 *   channel buffer, which then stops growing the SSH window, so the client
 *   stops.  on_writable reads the held bytes back.
 *
 *   device -> client: output is written only into the client's SSH window
 *   and only while the socket is not backed up (SSH_WRITE_PENDING); the
 *   rest waits in ch_out, and above SCONN_OUT_HIWAT the call is paused, so
 *   HTTP/2 flow control stops the device.
 *
 * A client that vanishes hangs up its terminal sessions at once.  A
 * session without a terminal (NETCONF, exec, a shell on pipes) gets what
 * the client sent and then EOF, as OpenSSH's sshd closes a subsystem's
 * stdin, and may end by itself within SCONN_DRAIN_MS: a NETCONF client
 * that leaves right after the <ok/> of its <close-session> ends with the
 * device's own end, not with a hang-up.  Its output goes nowhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libssh/callbacks.h>

#include "akeys.h"
#include "audit.h"
#include "buf.h"
#include "grpc.h"
#include "ldisc.h"
#include "log.h"
#include "ncgrpc_operator.pb-c.h"
#include "pbwire.h"
#include "prompt.h"
#include "sconf.h"
#include "sshd.h"
#include "termext.h"

#define SCONN_OPSVC_SESSION "/ncgrpc.operator.v1.Operator/Session"
#define SCONN_OUT_HIWAT     (256 * 1024) /* device output held for a channel */
#define SCONN_OUT_LOWAT     (64 * 1024)
/* Above the mark, one more message (4 MiB, doubled by CRs on a pty). */
#define SCONN_OUT_MAX     (SCONN_OUT_HIWAT + 2 * 4 * 1024 * 1024 + 64)
#define SCONN_READ_CHUNK  (16 * 1024)
#define SCONN_WRITE_CHUNK (32 * 1024)
#define SCONN_MAX_AUTH    10   /* authentication requests per connection */
#define SCONN_MAX_CMD     4096 /* bytes of an exec command */
#define SCONN_STR_(x)     #x
#define SCONN_STR(x)      SCONN_STR_(x)
#define SCONN_BAD_CMD                                                          \
	"the command must be one line of at most " SCONN_STR(                  \
	    SCONN_MAX_CMD) " bytes, without control characters"
/* A vanished client's session without a terminal may end by itself. */
#define SCONN_DRAIN_MS 2000

enum conn_state {
	CONN_KEX,  /* banner and key exchange */
	CONN_AUTH, /* waiting for a public key */
	CONN_OPEN, /* authenticated: channels */
	CONN_DEAD, /* torn down; freed when the last handle closes */
};

enum chan_type { CH_NONE, CH_NETCONF, CH_SHELL, CH_EXEC };

enum chan_state {
	CH_NEW,      /* open, no shell/exec/subsystem request yet */
	CH_PENDING,  /* request taken: start in conn_after() */
	CH_WAITCONN, /* waiting for the operator socket connection */
	CH_CALL,     /* the Session call runs */
	CH_DRAIN,    /* the call is over: output is still being written */
	CH_DONE,     /* exit-status and close sent (or the client is gone) */
};

struct schan {
	struct sconn *ch_c;
	TAILQ_ENTRY(schan) ch_entry;
	ssh_channel ch_ssh; /* NULL once released */
	struct ssh_channel_callbacks_struct ch_cb;
	enum chan_type ch_type;
	enum chan_state ch_state;
	char *ch_cmd; /* exec */
	int ch_pty;
	uint32_t ch_cols, ch_rows; /* 0: not said (the device's default) */
	char ch_term[TERMEXT_TERM_MAX + 1]; /* "": not said */
	int ch_raw;                         /* RAW terminal granted */
	struct grpc_call *ch_call;          /* NULL once on_end ran */
	int ch_started;
	uint64_t ch_sid; /* ncgrpcd's session id */
	struct buf ch_out;
	int ch_paused;
	int ch_out_cr;
	struct ldisc ch_ld;
	struct prompt_tail ch_prompt; /* line mode: the device's last line */
	size_t ch_held;  /* bytes left in libssh's channel buffer */
	int ch_eof_in;   /* the client sent EOF */
	int ch_eof_done; /* ... and it was passed on */
	int ch_last_nl;  /* the last byte sent to a shell was a newline */
	uint64_t ch_to_dev, ch_from_dev;
	int ch_exit;
	int ch_exit_sent; /* the client got exit-status ch_exit */
	char ch_reason[256];
};

struct sconn {
	struct sshd *c_sd;
	LIST_ENTRY(sconn) c_entry;
	uint64_t c_id;
	enum conn_state c_state;
	ssh_session c_ss;
	ssh_event c_ev;
	struct ssh_server_callbacks_struct c_cb;
	uv_poll_t c_poll;
	int c_pollfd; /* our dup of libssh's socket: see sconn_accept() */
	int c_poll_events;
	uv_timer_t c_grace;
	int c_handles;  /* uv handles not closed yet */
	int c_draining; /* dead, with sessions draining: c_grace bounds them */
	int c_no_drain; /* shutting down: every session is hung up */
	int c_busy;     /* inside libssh or conn_after() */
	int c_closing;
	char c_why[200];
	char c_peer[64];
	char c_op[AKEYS_MAX_OPERATOR + 1];
	char c_dev[AKEYS_MAX_DEVICE + 1];
	char c_fp[128];
	unsigned c_allowed; /* AKEYS_* bits for c_dev */
	unsigned c_auth_tries;
	struct grpc_conn *c_gc;
	int c_gc_ready;
	TAILQ_HEAD(, schan) c_chans;
	unsigned c_nchans;
};

static void conn_after(struct sconn *c);
static void conn_close(struct sconn *c, const char *why);
static void conn_maybe_free(struct sconn *c);
static void conn_drained(struct sconn *c);
static void chan_flush(struct schan *ch);
static void chan_pump(struct schan *ch);
static void chan_maybe_free(struct schan *ch);
static void on_poll(uv_poll_t *p, int status, int events);

static const char *
chan_type_name(const struct schan *ch)
{
	switch (ch->ch_type) {
	case CH_NETCONF:
		return "netconf";
	case CH_SHELL:
		return "shell";
	case CH_EXEC:
		return "exec";
	default:
		return "none";
	}
}

static unsigned
chan_type_bit(const struct schan *ch)
{
	switch (ch->ch_type) {
	case CH_NETCONF:
		return AKEYS_NETCONF;
	case CH_SHELL:
		return AKEYS_SHELL;
	case CH_EXEC:
		return AKEYS_EXEC;
	default:
		return 0;
	}
}

/* --- Audit --- */

static void
audit_chan_end(struct schan *ch)
{
	struct sconn *c = ch->ch_c;
	char sid[24], to[24], from[24], ex[16];

	snprintf(sid, sizeof(sid), "%" PRIu64, ch->ch_sid);
	snprintf(to, sizeof(to), "%" PRIu64, ch->ch_to_dev);
	snprintf(from, sizeof(from), "%" PRIu64, ch->ch_from_dev);
	snprintf(ex, sizeof(ex), "%d", ch->ch_exit);
	audit_event("ssh-session-end", "session", ch->ch_sid ? sid : NULL,
	            "operator", c->c_op, "operator-key", c->c_fp, "source",
	            c->c_peer, "device", c->c_dev, "channel",
	            chan_type_name(ch), "pty", ch->ch_pty ? "yes" : "no",
	            "bytes-to-device", to, "bytes-from-device", from,
	            "exit-status", ch->ch_exit_sent ? ex : NULL, "reason",
	            ch->ch_reason, NULL);
}

/* --- Operator calls --- */

/*
 * Sends one SessionInput.  Input that cannot be queued would be lost, so
 * the call is cancelled then (on_end follows, perhaps at once).
 */
static int
send_input(struct schan *ch, Ncgrpc__Operator__V1__SessionInput *in)
{
	int rc;

	if (ch->ch_call == NULL)
		return -EPIPE;
	if ((rc = grpc_call_send_pb(ch->ch_call, &in->base)) != 0 &&
	    rc != -EPIPE) {
		snprintf(ch->ch_reason, sizeof(ch->ch_reason), "input lost: %s",
		         strerror(-rc));
		grpc_call_cancel(ch->ch_call);
	}
	return rc;
}

static int
send_data(struct schan *ch, const void *data, size_t len)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;

	if (len == 0)
		return 0;
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA;
	in.data.data = (uint8_t *)(uintptr_t)data;
	in.data.len = len;
	ch->ch_to_dev += len;
	ch->ch_last_nl = ((const uint8_t *)data)[len - 1] == '\n';
	return send_input(ch, &in);
}

static void
send_signal(struct schan *ch, int signum)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;

	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_SIGNAL;
	in.signal = (uint32_t)signum;
	(void)send_input(ch, &in);
}

/* The client's input is over: a shell gets "exit", then half-close. */
static void
input_eof(struct schan *ch)
{
	if (ch->ch_eof_done || ch->ch_call == NULL)
		return;
	ch->ch_eof_done = 1;
	if (ch->ch_type == CH_SHELL) {
		if (ch->ch_to_dev > 0 && !ch->ch_last_nl)
			(void)send_data(ch, "\n", 1);
		(void)send_data(ch, "exit\n", 5);
	}
	if (ch->ch_call != NULL && ch->ch_type != CH_EXEC)
		grpc_call_close_send(ch->ch_call);
}

/*
 * At a prompt for a secret the device's terminal would not echo: neither
 * do we, until the line is sent.
 */
static void
ld_echo(void *arg, const void *data, size_t len)
{
	struct schan *ch = arg;

	if (prompt_is_secret(&ch->ch_prompt))
		return;
	(void)buf_append(&ch->ch_out, data, len);
}

static void
ld_line(void *arg, const void *data, size_t len)
{
	struct schan *ch = arg;

	prompt_reset(&ch->ch_prompt);
	(void)send_data(ch, data, len);
}

static void
ld_signal(void *arg, int signum)
{
	send_signal(arg, signum);
}

static void
ld_eof(void *arg)
{
	input_eof(arg);
}

static const struct ldisc_ops chan_ldisc_ops = {
    .lo_echo = ld_echo,
    .lo_line = ld_line,
    .lo_signal = ld_signal,
    .lo_eof = ld_eof,
};

/* Input from the client, as the channel type wants it. */
static void
chan_input(struct schan *ch, const uint8_t *data, size_t len)
{
	if (ch->ch_type == CH_EXEC || ch->ch_eof_done)
		return; /* exec runs its command without input */
	if (ch->ch_pty && !ch->ch_raw && ch->ch_type == CH_SHELL)
		ldisc_input(&ch->ch_ld, data, len);
	else
		(void)send_data(ch, data, len);
}

/* Device output, with the CR a terminal adds when there is a pty. */
static void
chan_output(struct schan *ch, const uint8_t *data, size_t len)
{
	uint8_t tmp[2 * 4096];
	size_t n, take;

	ch->ch_from_dev += len;
	if (ch->ch_ssh == NULL)
		return; /* the client is gone */
	if (!ch->ch_pty || ch->ch_raw) {
		if (buf_append(&ch->ch_out, data, len) != 0)
			conn_close(ch->ch_c, "out of memory");
		return;
	}
	prompt_feed(&ch->ch_prompt, data, len);
	while (len > 0) {
		take = len < sizeof(tmp) / 2 ? len : sizeof(tmp) / 2;
		n = ldisc_output(data, take, tmp, &ch->ch_out_cr);
		if (buf_append(&ch->ch_out, tmp, n) != 0) {
			conn_close(ch->ch_c, "out of memory");
			return;
		}
		data += take;
		len -= take;
	}
}

/* A decoded SessionOutput: started, output, or ended; then freed. */
static void
call_on_output(struct schan *ch, Ncgrpc__Operator__V1__SessionOutput *out)
{
	switch (out->output_case) {
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED:
		ch->ch_started = 1;
		ch->ch_sid = out->started->session_id;
		ch->ch_raw = out->started->terminal ==
		             NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW;
		log_debug("connection %" PRIu64 ": %s session %" PRIu64
		          " on \"%s\" started (%s)",
		          ch->ch_c->c_id, chan_type_name(ch), ch->ch_sid,
		          ch->ch_c->c_dev, ch->ch_raw ? "raw" : "line");
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA:
		chan_output(ch, out->data.data, out->data.len);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED:
		snprintf(ch->ch_reason, sizeof(ch->ch_reason), "%s",
		         out->ended->reason);
		break;
	default:
		break;
	}
	ncgrpc__operator__v1__session_output__free_unpacked(out, NULL);
}

static void
call_on_message(struct grpc_call *call, const uint8_t *msg, size_t len,
                void *arg)
{
	struct schan *ch = arg;
	struct sconn *c = ch->ch_c;
	Ncgrpc__Operator__V1__SessionOutput *out = NULL;
	const uint8_t *data;
	size_t n;

	/* Output, the usual message, is read where it lies. */
	if (pbwire_only_bytes(msg, len, PBWIRE_SESSION_OUTPUT_DATA, &data,
	                      &n) != 1 &&
	    (out = ncgrpc__operator__v1__session_output__unpack(NULL, len,
	                                                        msg)) == NULL) {
		snprintf(ch->ch_reason, sizeof(ch->ch_reason),
		         "malformed SessionOutput from ncgrpcd");
		grpc_call_cancel(call);
		return;
	}
	/* Nothing is freed before conn_after() below. */
	c->c_busy++;
	if (out == NULL)
		chan_output(ch, data, n);
	else
		call_on_output(ch, out);
	if (ch->ch_call != NULL && !ch->ch_paused &&
	    buf_len(&ch->ch_out) >= SCONN_OUT_HIWAT) {
		ch->ch_paused = 1;
		grpc_call_pause(ch->ch_call);
	}
	c->c_busy--;
	conn_after(c);
}

static void
call_on_writable(struct grpc_call *call, void *arg)
{
	struct schan *ch = arg;

	(void)call;
	conn_after(ch->ch_c);
}

static void
call_on_end(struct grpc_call *call, int status, const char *message, void *arg)
{
	struct schan *ch = arg;
	struct sconn *c = ch->ch_c;
	char line[400];

	(void)call;
	ch->ch_call = NULL;
	if (status == GRPC_STATUS_OK) {
		ch->ch_exit = 0;
		if (ch->ch_reason[0] == '\0')
			snprintf(ch->ch_reason, sizeof(ch->ch_reason),
			         "session ended");
	} else {
		ch->ch_exit = 1;
		if (!ch->ch_started || ch->ch_reason[0] == '\0')
			snprintf(ch->ch_reason, sizeof(ch->ch_reason), "%s%s%s",
			         grpc_status_name(status),
			         message[0] != '\0' ? ": " : "", message);
		/* Tell the user, on stderr, why it failed. */
		if (ch->ch_ssh != NULL && !ch->ch_c->c_closing) {
			snprintf(line, sizeof(line), "ncgrpc-sshd: %s\r\n",
			         message[0] != '\0' ? message
			                            : grpc_status_name(status));
			(void)ssh_channel_write_stderr(ch->ch_ssh, line,
			                               (uint32_t)strlen(line));
		}
	}
	if (ch->ch_state < CH_DRAIN)
		ch->ch_state = CH_DRAIN;
	if (c->c_closing) {
		chan_maybe_free(ch);
		conn_drained(c);
	} else
		conn_after(c);
}

static const struct grpc_call_ops chan_call_ops = {
    .on_message = call_on_message,
    .on_writable = call_on_writable,
    .on_end = call_on_end,
};

/* Refuses the channel's request: a message on stderr and exit status 1. */
static void
chan_refuse(struct schan *ch, const char *why, const char *msg)
{
	char line[400];

	snprintf(ch->ch_reason, sizeof(ch->ch_reason), "refused: %s", why);
	audit_event("ssh-refused", "operator", ch->ch_c->c_op, "operator-key",
	            ch->ch_c->c_fp, "source", ch->ch_c->c_peer, "device",
	            ch->ch_c->c_dev, "channel", chan_type_name(ch), "reason",
	            why, NULL);
	snprintf(line, sizeof(line), "ncgrpc-sshd: %s\r\n", msg);
	if (ch->ch_ssh != NULL)
		(void)ssh_channel_write_stderr(ch->ch_ssh, line,
		                               (uint32_t)strlen(line));
	ch->ch_exit = 1;
	ch->ch_state = CH_DRAIN;
}

/* Starts the Session call; on failure the channel is refused. */
static void
chan_call(struct schan *ch)
{
	struct sconn *c = ch->ch_c;
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__SessionOpen open =
	    NCGRPC__OPERATOR__V1__SESSION_OPEN__INIT;
	Ncgrpc__Operator__V1__WindowSize win =
	    NCGRPC__OPERATOR__V1__WINDOW_SIZE__INIT;
	int rc;

	rc = grpc_call_start(c->c_gc, SCONN_OPSVC_SESSION, NULL, 0,
	                     &chan_call_ops, ch, &ch->ch_call);
	if (rc != 0) {
		ch->ch_call = NULL;
		chan_refuse(ch, "ncgrpcd unreachable",
		            "ncgrpcd cannot be reached; try again later");
		return;
	}
	/* ch_out pauses the call and always resumes it as the client reads. */
	grpc_call_deliver_all(ch->ch_call);
	ch->ch_state = CH_CALL;
	open.device_id = c->c_dev;
	open.type = ch->ch_type == CH_NETCONF
	                ? NCGRPC__OPERATOR__V1__SESSION_TYPE__NETCONF
	                : NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL;
	if (ch->ch_type == CH_SHELL && ch->ch_pty) {
		open.terminal = NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW;
		/* A client without a terminal of its own says 0x0. */
		if (ch->ch_cols != 0 && ch->ch_rows != 0) {
			win.cols = ch->ch_cols;
			win.rows = ch->ch_rows;
			open.window = &win;
		}
		if (ch->ch_term[0] != '\0')
			open.term = ch->ch_term;
	}
	open.operator_name = c->c_op;
	open.operator_key = c->c_fp;
	open.operator_source = c->c_peer;
	open.via = (char *)(uintptr_t) "ssh";
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN;
	in.open = &open;
	if (send_input(ch, &in) != 0) {
		/* on_end says why; it may have run already. */
		if (ch->ch_call != NULL)
			grpc_call_cancel(ch->ch_call);
		return;
	}
	if (ch->ch_type == CH_EXEC) {
		/* The command, then the shell's end: the session ends. */
		(void)send_data(ch, ch->ch_cmd, strlen(ch->ch_cmd));
		(void)send_data(ch, "\nexit\n", 6);
		if (ch->ch_call != NULL)
			grpc_call_close_send(ch->ch_call);
		ch->ch_eof_done = 1;
	}
}

static void gc_connect(struct sconn *c);

/* A request (shell, exec, subsystem) was accepted: authorize and start. */
static void
chan_start(struct schan *ch)
{
	struct sconn *c = ch->ch_c;
	const struct akey *ak;
	char msg[400];

	/*
	 * The keys in force now decide, not those of the login: a key taken
	 * out of ssh-authorized-keys (and SIGHUP) opens no more sessions on
	 * connections it logged in, and changed options apply to the next
	 * session.  Sessions already open are kept.
	 */
	if ((ak = akeys_find_fp(c->c_sd->sd_keys, c->c_fp)) == NULL) {
		chan_refuse(
		    ch, "key no longer in ssh-authorized-keys",
		    "this key was removed from ssh-authorized-keys since "
		    "it logged in");
		return;
	}
	if (strcmp(ak->ak_operator, c->c_op) != 0) {
		chan_refuse(
		    ch, "the key's operator changed",
		    "ssh-authorized-keys names another operator for this "
		    "key since it logged in: log in again");
		return;
	}
	c->c_allowed = akeys_rights(ak, c->c_dev);
	if ((c->c_allowed & chan_type_bit(ch)) == 0) {
		snprintf(msg, sizeof(msg),
		         "operator '%s' may not open %s sessions on device "
		         "'%s' (authorized_keys)",
		         c->c_op, chan_type_name(ch), c->c_dev);
		chan_refuse(ch, "not authorized for this device or type", msg);
		return;
	}
	if (ch->ch_pty && ch->ch_type == CH_SHELL)
		ldisc_init(&ch->ch_ld, &chan_ldisc_ops, ch);
	if (c->c_gc_ready) {
		chan_call(ch);
		return;
	}
	ch->ch_state = CH_WAITCONN;
	if (c->c_gc == NULL)
		gc_connect(c);
}

/* --- The operator socket connection --- */

static void
gc_on_ready(struct grpc_conn *gc, void *arg)
{
	struct sconn *c = arg;
	struct schan *ch;

	(void)gc;
	c->c_gc_ready = 1;
	/* A call that fails at once must not free its channel in the loop. */
	c->c_busy++;
	TAILQ_FOREACH(ch, &c->c_chans, ch_entry)
	if (ch->ch_state == CH_WAITCONN)
		chan_call(ch);
	c->c_busy--;
	conn_after(c);
}

static void
gc_on_closed(struct grpc_conn *gc, int err, const char *reason, void *arg)
{
	struct sconn *c = arg;
	struct schan *ch;

	(void)gc;
	(void)err;
	c->c_gc = NULL;
	c->c_gc_ready = 0;
	if (c->c_state == CONN_DEAD) {
		conn_maybe_free(c);
		return;
	}
	log_warnx("connection %" PRIu64 ": operator socket closed: %s", c->c_id,
	          reason);
	TAILQ_FOREACH(ch, &c->c_chans, ch_entry)
	if (ch->ch_state == CH_WAITCONN)
		chan_refuse(ch, "ncgrpcd unreachable",
		            "ncgrpcd cannot be reached; try again later");
	conn_after(c);
}

static const struct grpc_conn_ops gc_ops = {
    .on_ready = gc_on_ready,
    .on_closed = gc_on_closed,
};

static void
gc_connect(struct sconn *c)
{
	struct schan *ch;
	int rc;

	rc = grpc_conn_connect_unix(c->c_sd->sd_loop,
	                            c->c_sd->sd_sc->sc_operator_socket, NULL,
	                            &gc_ops, c, &c->c_gc);
	if (rc == 0)
		return;
	c->c_gc = NULL;
	log_warnx("connection %" PRIu64 ": cannot reach ncgrpcd on \"%s\": %s",
	          c->c_id, c->c_sd->sd_sc->sc_operator_socket, strerror(-rc));
	TAILQ_FOREACH(ch, &c->c_chans, ch_entry)
	if (ch->ch_state == CH_WAITCONN)
		chan_refuse(ch, "ncgrpcd unreachable",
		            "ncgrpcd cannot be reached; try again later");
}

/* --- Channels: libssh callbacks (they only record) --- */

static int
cb_data(ssh_session ss, ssh_channel channel, void *data, uint32_t len,
        int is_stderr, void *arg)
{
	struct schan *ch = arg;

	(void)ss;
	(void)channel;
	if (is_stderr)
		return (int)len; /* a client has no stderr to send: dropped */
	/* Held until the call runs and has room; see the top of the file. */
	if (ch->ch_state == CH_CALL && ch->ch_started && ch->ch_call != NULL &&
	    ch->ch_held == 0 &&
	    grpc_call_queued(ch->ch_call) < GRPC_CALL_HIWAT) {
		chan_input(ch, data, len);
		return (int)len;
	}
	if (ch->ch_state >= CH_DRAIN)
		return (int)len; /* the session is over: nowhere to go */
	ch->ch_held = len;
	return 0;
}

static void
cb_eof(ssh_session ss, ssh_channel channel, void *arg)
{
	struct schan *ch = arg;

	(void)ss;
	(void)channel;
	ch->ch_eof_in = 1;
}

static void
cb_close(ssh_session ss, ssh_channel channel, void *arg)
{
	struct schan *ch = arg;

	(void)ss;
	(void)channel;
	ch->ch_eof_in = 1;
	if (ch->ch_reason[0] == '\0')
		snprintf(ch->ch_reason, sizeof(ch->ch_reason),
		         "client closed the channel");
	if (ch->ch_call != NULL)
		grpc_call_cancel(ch->ch_call);
	ch->ch_state = CH_DONE;
}

static void
cb_signal(ssh_session ss, ssh_channel channel, const char *signal, void *arg)
{
	static const struct {
		const char *name;
		int num;
	} sigs[] = {
	    {"HUP", 1}, {"INT", 2}, {"QUIT", 3}, {"KILL", 9}, {"TERM", 15}};
	struct schan *ch = arg;
	size_t i;

	(void)ss;
	(void)channel;
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (strcmp(signal, sigs[i].name) == 0 && ch->ch_started)
			send_signal(ch, sigs[i].num);
}

/*
 * The window a client reports, as ncgrpcd takes it: 0 (unknown) when
 * either side is, and at most TERMEXT_WINDOW_MAX cells each way.
 */
static void
pty_size(struct schan *ch, int cols, int rows)
{
	if (cols == 0 || rows == 0)
		cols = rows = 0;
	ch->ch_cols =
	    cols > TERMEXT_WINDOW_MAX ? TERMEXT_WINDOW_MAX : (uint32_t)cols;
	ch->ch_rows =
	    rows > TERMEXT_WINDOW_MAX ? TERMEXT_WINDOW_MAX : (uint32_t)rows;
}

static int
cb_pty(ssh_session ss, ssh_channel channel, const char *term, int cols,
       int rows, int pxw, int pxh, void *arg)
{
	struct schan *ch = arg;

	(void)ss;
	(void)channel;
	(void)pxw;
	(void)pxh;
	if (ch->ch_state != CH_NEW || cols < 0 || rows < 0)
		return -1;
	ch->ch_pty = 1;
	pty_size(ch, cols, rows);
	/* A type the device would not be given is left to its default. */
	if (term != NULL && termext_term_ok(term, strlen(term)))
		snprintf(ch->ch_term, sizeof(ch->ch_term), "%s", term);
	return 0;
}

static int
cb_window(ssh_session ss, ssh_channel channel, int cols, int rows, int pxw,
          int pxh, void *arg)
{
	struct schan *ch = arg;
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__WindowSize win =
	    NCGRPC__OPERATOR__V1__WINDOW_SIZE__INIT;

	(void)ss;
	(void)channel;
	(void)pxw;
	(void)pxh;
	if (cols < 0 || rows < 0)
		return -1;
	pty_size(ch, cols, rows);
	/* A LINE session has no window to resize: only RAW takes it. */
	if (ch->ch_raw && ch->ch_call != NULL && ch->ch_cols != 0 &&
	    ch->ch_rows != 0) {
		win.cols = ch->ch_cols;
		win.rows = ch->ch_rows;
		in.input_case =
		    NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_WINDOW;
		in.window = &win;
		(void)send_input(ch, &in);
	}
	return 0;
}

static int
take_request(struct schan *ch, enum chan_type type)
{
	if (ch->ch_state != CH_NEW)
		return -1;
	ch->ch_type = type;
	ch->ch_state = CH_PENDING;
	return 0;
}

static int
cb_shell(ssh_session ss, ssh_channel channel, void *arg)
{
	(void)ss;
	(void)channel;
	return take_request(arg, CH_SHELL);
}

/*
 * An exec command becomes one input line of the device's shell: at most
 * SCONN_MAX_CMD bytes, without control characters (a CR or LF would make
 * two lines, a ^C would be a signal to the device's terminal).
 */
static int
cmd_valid(const char *cmd)
{
	const unsigned char *p;
	size_t n = 0;

	for (p = (const unsigned char *)cmd; *p != '\0'; p++, n++)
		if (n == SCONN_MAX_CMD || (*p < 0x20 && *p != '\t') ||
		    *p == 0x7f)
			return 0;
	return n > 0;
}

/*
 * A request refused before any session: the client is told why on stderr
 * (its "request failed" alone says nothing), and the audit log keeps it,
 * as it keeps every refused channel.
 */
static int
refuse_request(struct schan *ch, const char *what, const char *why)
{
	struct sconn *c = ch->ch_c;
	char line[200];

	audit_event("ssh-refused", "operator", c->c_op, "operator-key", c->c_fp,
	            "source", c->c_peer, "device", c->c_dev, "channel", what,
	            "reason", why, NULL);
	snprintf(line, sizeof(line), "ncgrpc-sshd: %s: %s\r\n", what, why);
	if (ch->ch_ssh != NULL)
		(void)ssh_channel_write_stderr(ch->ch_ssh, line,
		                               (uint32_t)strlen(line));
	return -1;
}

static int
cb_exec(ssh_session ss, ssh_channel channel, const char *command, void *arg)
{
	struct schan *ch = arg;

	(void)ss;
	(void)channel;
	if (ch->ch_state != CH_NEW)
		return -1;
	if (!cmd_valid(command))
		return refuse_request(ch, "exec", SCONN_BAD_CMD);
	if ((ch->ch_cmd = strdup(command)) == NULL)
		return -1;
	return take_request(ch, CH_EXEC);
}

static int
cb_subsystem(ssh_session ss, ssh_channel channel, const char *subsystem,
             void *arg)
{
	(void)ss;
	(void)channel;
	if (((struct schan *)arg)->ch_state != CH_NEW)
		return -1;
	if (strcmp(subsystem, "netconf") != 0)
		return refuse_request(arg, "subsystem",
		                      "only the netconf subsystem is offered");
	return take_request(arg, CH_NETCONF);
}

static int
cb_env(ssh_session ss, ssh_channel channel, const char *name, const char *value,
       void *arg)
{
	(void)ss;
	(void)channel;
	(void)name;
	(void)value;
	(void)arg;
	return -1; /* the device's shell has its own environment */
}

static int
cb_wontblock(ssh_session ss, ssh_channel channel, uint32_t bytes, void *arg)
{
	(void)ss;
	(void)channel;
	(void)bytes;
	(void)arg;
	return 0; /* conn_after() writes what the window now allows */
}

/* --- Channels: the work --- */

static void
chan_free(struct schan *ch)
{
	struct sconn *c = ch->ch_c;

	TAILQ_REMOVE(&c->c_chans, ch, ch_entry);
	c->c_nchans--;
	buf_free(&ch->ch_out);
	free(ch->ch_cmd);
	free(ch);
}

/* Releases the libssh channel (and, if the client is there, closes it). */
static void
chan_release(struct schan *ch)
{
	if (ch->ch_ssh == NULL)
		return;
	ssh_remove_channel_callbacks(ch->ch_ssh, &ch->ch_cb);
	if (!ch->ch_c->c_closing) {
		ssh_channel_close(ch->ch_ssh);
		ssh_channel_free(ch->ch_ssh);
	}
	ch->ch_ssh = NULL;
}

static void
chan_maybe_free(struct schan *ch)
{
	if (ch->ch_call != NULL)
		return;
	if (ch->ch_state != CH_DONE) {
		ch->ch_state = CH_DONE;
		if (ch->ch_reason[0] == '\0')
			snprintf(ch->ch_reason, sizeof(ch->ch_reason), "%s",
			         ch->ch_c->c_why[0] ? ch->ch_c->c_why
			                            : "connection closed");
	}
	if (ch->ch_type != CH_NONE)
		audit_chan_end(ch);
	chan_release(ch);
	chan_free(ch);
}

/* Reads back input libssh holds for us, while the call has room. */
static void
chan_pump(struct schan *ch)
{
	uint8_t tmp[SCONN_READ_CHUNK];
	uint32_t want;
	int n;

	if (ch->ch_state != CH_CALL || !ch->ch_started || ch->ch_ssh == NULL)
		return;
	while (ch->ch_held > 0 && ch->ch_call != NULL &&
	       grpc_call_queued(ch->ch_call) < GRPC_CALL_HIWAT) {
		want = ch->ch_held < sizeof(tmp) ? (uint32_t)ch->ch_held
		                                 : (uint32_t)sizeof(tmp);
		n = ssh_channel_read_nonblocking(ch->ch_ssh, tmp, want, 0);
		if (n <= 0) {
			ch->ch_held = 0;
			break;
		}
		ch->ch_held -= (size_t)n;
		chan_input(ch, tmp, (size_t)n);
	}
	if (ch->ch_eof_in && ch->ch_held == 0)
		input_eof(ch);
}

/* Writes held output into the client's window. */
static void
chan_flush(struct schan *ch)
{
	ssh_session ss = ch->ch_c->c_ss;
	uint32_t win, n;
	int rc;

	while (buf_len(&ch->ch_out) > 0 && ch->ch_ssh != NULL &&
	       ch->ch_state != CH_DONE) {
		if (ssh_get_poll_flags(ss) & SSH_WRITE_PENDING)
			break;
		win = ssh_channel_window_size(ch->ch_ssh);
		if (win == 0)
			break;
		n = buf_len(&ch->ch_out) < win ? (uint32_t)buf_len(&ch->ch_out)
		                               : win;
		if (n > SCONN_WRITE_CHUNK)
			n = SCONN_WRITE_CHUNK;
		rc = ssh_channel_write(ch->ch_ssh, buf_data(&ch->ch_out), n);
		if (rc == SSH_ERROR) {
			conn_close(ch->ch_c, ssh_get_error(ss));
			return;
		}
		if (rc <= 0)
			break;
		buf_consume(&ch->ch_out, (size_t)rc);
	}
	if (ch->ch_paused && buf_len(&ch->ch_out) < SCONN_OUT_LOWAT &&
	    ch->ch_call != NULL) {
		ch->ch_paused = 0;
		grpc_call_resume(ch->ch_call);
	}
	/* Over, and all written: exit status, EOF, close. */
	if (ch->ch_state == CH_DRAIN && buf_len(&ch->ch_out) == 0 &&
	    ch->ch_call == NULL && ch->ch_ssh != NULL) {
		if (ssh_channel_request_send_exit_status(ch->ch_ssh,
		                                         ch->ch_exit) == SSH_OK)
			ch->ch_exit_sent = 1;
		(void)ssh_channel_send_eof(ch->ch_ssh);
		ch->ch_state = CH_DONE;
	}
}

/* --- Connections --- */

static void
conn_update_poll(struct sconn *c)
{
	int ev = UV_READABLE;

	if (c->c_state == CONN_DEAD)
		return;
	if (ssh_get_poll_flags(c->c_ss) & SSH_WRITE_PENDING)
		ev |= UV_WRITABLE;
	if (ev != c->c_poll_events) {
		c->c_poll_events = ev;
		uv_poll_start(&c->c_poll, ev, on_poll);
	}
}

static void
on_handle_closed(uv_handle_t *h)
{
	struct sconn *c = h->data;

	if (h == (uv_handle_t *)&c->c_poll && c->c_pollfd != -1) {
		close(c->c_pollfd);
		c->c_pollfd = -1;
	}
	c->c_handles--;
	conn_maybe_free(c);
}

/* A dead connection's last draining session is over: the timer goes. */
static void
conn_drained(struct sconn *c)
{
	if (c->c_draining && c->c_state == CONN_DEAD &&
	    TAILQ_EMPTY(&c->c_chans)) {
		c->c_draining = 0;
		uv_close((uv_handle_t *)&c->c_grace, on_handle_closed);
	}
	conn_maybe_free(c);
}

/* The sessions a vanished client left did not end in time: hung up. */
static void
on_drain_over(uv_timer_t *t)
{
	struct sconn *c = container_of(t, struct sconn, c_grace);
	struct schan *ch, *next;

	for (ch = TAILQ_FIRST(&c->c_chans); ch != NULL; ch = next) {
		next = TAILQ_NEXT(ch, ch_entry);
		if (ch->ch_call != NULL) {
			if (ch->ch_reason[0] == '\0')
				snprintf(ch->ch_reason, sizeof(ch->ch_reason),
				         "%s", c->c_why);
			grpc_call_cancel(ch->ch_call);
		}
	}
}

/*
 * The client vanished: a session without a terminal gets the input libssh
 * still holds, then EOF, and may go on (see the top of the file).  1 if it
 * goes on; the caller hangs up the others.
 */
static int
chan_drain(struct schan *ch)
{
	uint8_t tmp[SCONN_READ_CHUNK];
	uint32_t want;
	int n;

	if (ch->ch_c->c_no_drain || ch->ch_pty || ch->ch_state != CH_CALL ||
	    ch->ch_ssh == NULL)
		return 0;
	while (ch->ch_held > 0 && ch->ch_call != NULL) {
		want = ch->ch_held < sizeof(tmp) ? (uint32_t)ch->ch_held
		                                 : (uint32_t)sizeof(tmp);
		n = ssh_channel_read_nonblocking(ch->ch_ssh, tmp, want, 0);
		if (n <= 0)
			break;
		ch->ch_held -= (size_t)n;
		chan_input(ch, tmp, (size_t)n);
	}
	ch->ch_held = 0;
	if (ch->ch_call == NULL)
		return 0;
	input_eof(ch);
	return ch->ch_call != NULL;
}

static void
conn_maybe_free(struct sconn *c)
{
	if (c->c_state != CONN_DEAD || c->c_handles > 0 || c->c_gc != NULL ||
	    !TAILQ_EMPTY(&c->c_chans))
		return;
	free(c);
}

/* Tears the connection down; runs outside libssh callbacks. */
static void
conn_teardown(struct sconn *c)
{
	struct sshd *sd = c->c_sd;
	struct schan *ch, *next;

	if (c->c_state == CONN_DEAD)
		return;
	log_info("connection %" PRIu64 " from %s closed: %s", c->c_id,
	         c->c_peer, c->c_why);
	if (c->c_state != CONN_OPEN)
		sd->sd_nunauth--;
	sd->sd_nconns--;
	LIST_REMOVE(c, c_entry);
	c->c_state = CONN_DEAD;
	/* Channels: calls drain or are cancelled; on_end frees each. */
	for (ch = TAILQ_FIRST(&c->c_chans); ch != NULL; ch = next) {
		next = TAILQ_NEXT(ch, ch_entry);
		if (chan_drain(ch)) {
			chan_release(ch);
			c->c_draining = 1;
			continue;
		}
		chan_release(ch);
		if (ch->ch_call != NULL) {
			if (ch->ch_reason[0] == '\0')
				snprintf(ch->ch_reason, sizeof(ch->ch_reason),
				         "%s", c->c_why);
			grpc_call_cancel(ch->ch_call);
		} else
			chan_maybe_free(ch);
	}
	uv_close((uv_handle_t *)&c->c_poll, on_handle_closed);
	if (c->c_draining)
		uv_timer_start(&c->c_grace, on_drain_over, SCONN_DRAIN_MS, 0);
	else
		uv_close((uv_handle_t *)&c->c_grace, on_handle_closed);
	if (c->c_ev != NULL) {
		ssh_event_remove_session(c->c_ev, c->c_ss);
		ssh_event_free(c->c_ev);
		c->c_ev = NULL;
	}
	ssh_disconnect(c->c_ss);
	ssh_free(c->c_ss);
	c->c_ss = NULL;
	if (c->c_gc != NULL)
		grpc_conn_close(c->c_gc, 0);
	conn_maybe_free(c);
}

/* Marks the connection for closing; conn_after() tears it down. */
static void
conn_close(struct sconn *c, const char *why)
{
	if (c->c_closing)
		return;
	c->c_closing = 1;
	snprintf(c->c_why, sizeof(c->c_why), "%s", why);
	if (c->c_busy == 0)
		conn_teardown(c);
}

/*
 * The work after libssh or a call reported something: starts requested
 * channels, moves bytes both ways, ends channels, and sets the poll mask.
 */
static void
conn_after(struct sconn *c)
{
	struct schan *ch, *next;

	if (c->c_state == CONN_DEAD || c->c_busy > 0)
		return;
	c->c_busy++;
	for (ch = TAILQ_FIRST(&c->c_chans); ch != NULL && !c->c_closing;
	     ch = next) {
		next = TAILQ_NEXT(ch, ch_entry);
		if (ch->ch_state == CH_PENDING)
			chan_start(ch);
		chan_pump(ch);
		chan_flush(ch);
	}
	/* Channels that are done go after the loop: freeing edits the list. */
	for (ch = TAILQ_FIRST(&c->c_chans); ch != NULL; ch = next) {
		next = TAILQ_NEXT(ch, ch_entry);
		if (ch->ch_state == CH_DONE && ch->ch_call == NULL)
			chan_maybe_free(ch);
	}
	c->c_busy--;
	/* libssh may have seen the end while writing, not only in dopoll. */
	if (!c->c_closing && c->c_state != CONN_KEX &&
	    (ssh_get_status(c->c_ss) & (SSH_CLOSED | SSH_CLOSED_ERROR)))
		conn_close(c, "client disconnected");
	if (c->c_closing) {
		conn_teardown(c);
		return;
	}
	conn_update_poll(c);
}

/* --- Authentication --- */

static void
fp_of(ssh_key key, char *out, size_t outlen)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp;

	snprintf(out, outlen, "unknown");
	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash,
	                           &hlen) != 0)
		return;
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	if (fp == NULL)
		return;
	snprintf(out, outlen, "%s %s", ssh_key_type_to_char(ssh_key_type(key)),
	         fp);
	ssh_string_free_char(fp);
}

/* Of a user name a peer sent before it logged in, what the audit keeps. */
#define SCONN_AUDIT_USER_MAX 128

static void
auth_refused(struct sconn *c, const char *user, const char *key,
             const char *why)
{
	char u[SCONN_AUDIT_USER_MAX + 1];

	/* The peer chose it: no more of it than a user name needs. */
	snprintf(u, sizeof(u), "%s", user);
	log_info("connection %" PRIu64 " from %s: login refused: %s", c->c_id,
	         c->c_peer, why);
	audit_event("ssh-login-refused", "user", u, "operator-key", key,
	            "source", c->c_peer, "reason", why, NULL);
}

static int
too_many_tries(struct sconn *c)
{
	if (++c->c_auth_tries <= SCONN_MAX_AUTH)
		return 0;
	conn_close(c, "too many authentication attempts");
	return 1;
}

static int
cb_auth_pubkey(ssh_session ss, const char *user, struct ssh_key_struct *key,
               char signature_state, void *arg)
{
	struct sconn *c = arg;
	const struct akey *ak;
	char op[AKEYS_MAX_OPERATOR + 1], dev[AKEYS_MAX_DEVICE + 1], fp[128];
	unsigned bits = 0;

	(void)ss;
	if (c->c_state != CONN_AUTH || too_many_tries(c))
		return SSH_AUTH_DENIED;
	fp_of(key, fp, sizeof(fp));
	if (akeys_parse_user(user, op, dev) != 0) {
		auth_refused(c, user, fp,
		             "user name is not DEVICE or OPERATOR+DEVICE");
		return SSH_AUTH_DENIED;
	}
	if ((ak = akeys_find(c->c_sd->sd_keys, key)) == NULL) {
		auth_refused(c, user, fp, "unknown key");
		return SSH_AUTH_DENIED;
	}
	if (signature_state == SSH_PUBLICKEY_STATE_NONE)
		return SSH_AUTH_SUCCESS; /* "this key would do": sign with it */
	if (signature_state != SSH_PUBLICKEY_STATE_VALID) {
		auth_refused(c, user, fp, "bad signature");
		return SSH_AUTH_DENIED;
	}
	/*
	 * Only once the key is proven: who holds a public key alone must not
	 * learn whose it is, nor write its operator's name into the audit.
	 */
	if (op[0] != '\0' && strcmp(op, ak->ak_operator) != 0) {
		auth_refused(c, user, fp,
		             "the user name names another operator than the "
		             "key's");
		return SSH_AUTH_DENIED;
	}
	bits = akeys_rights(ak, dev);
	snprintf(c->c_op, sizeof(c->c_op), "%s", ak->ak_operator);
	snprintf(c->c_dev, sizeof(c->c_dev), "%s", dev);
	snprintf(c->c_fp, sizeof(c->c_fp), "%s", ak->ak_fp);
	c->c_allowed = bits;
	c->c_state = CONN_OPEN;
	c->c_sd->sd_nunauth--;
	uv_timer_stop(&c->c_grace);
	log_info("connection %" PRIu64 " from %s: operator \"%s\" (%s) for "
	         "device \"%s\"",
	         c->c_id, c->c_peer, c->c_op, c->c_fp, c->c_dev);
	audit_event("ssh-login", "operator", c->c_op, "operator-key", c->c_fp,
	            "source", c->c_peer, "device", c->c_dev, NULL);
	return SSH_AUTH_SUCCESS;
}

static int
cb_auth_password(ssh_session ss, const char *user, const char *password,
                 void *arg)
{
	struct sconn *c = arg;

	(void)ss;
	(void)password; /* never logged */
	if (!too_many_tries(c))
		auth_refused(c, user, "none",
		             "password authentication is not offered");
	return SSH_AUTH_DENIED;
}

static int
cb_auth_none(ssh_session ss, const char *user, void *arg)
{
	struct sconn *c = arg;

	(void)ss;
	(void)user;
	(void)too_many_tries(c);
	return SSH_AUTH_DENIED;
}

static ssh_channel
cb_channel_open(ssh_session ss, void *arg)
{
	struct sconn *c = arg;
	struct schan *ch;

	if (c->c_state != CONN_OPEN || c->c_closing ||
	    c->c_nchans >= c->c_sd->sd_sc->sc_ssh_max_channels)
		return NULL;
	if ((ch = calloc(1, sizeof(*ch))) == NULL)
		return NULL;
	if ((ch->ch_ssh = ssh_channel_new(ss)) == NULL) {
		free(ch);
		return NULL;
	}
	ch->ch_c = c;
	buf_init(&ch->ch_out, SCONN_OUT_MAX);
	ch->ch_state = CH_NEW;
	ssh_callbacks_init(&ch->ch_cb);
	ch->ch_cb.userdata = ch;
	ch->ch_cb.channel_data_function = cb_data;
	ch->ch_cb.channel_eof_function = cb_eof;
	ch->ch_cb.channel_close_function = cb_close;
	ch->ch_cb.channel_signal_function = cb_signal;
	ch->ch_cb.channel_pty_request_function = cb_pty;
	ch->ch_cb.channel_shell_request_function = cb_shell;
	ch->ch_cb.channel_pty_window_change_function = cb_window;
	ch->ch_cb.channel_exec_request_function = cb_exec;
	ch->ch_cb.channel_env_request_function = cb_env;
	ch->ch_cb.channel_subsystem_request_function = cb_subsystem;
	ch->ch_cb.channel_write_wontblock_function = cb_wontblock;
	ssh_set_channel_callbacks(ch->ch_ssh, &ch->ch_cb);
	TAILQ_INSERT_TAIL(&c->c_chans, ch, ch_entry);
	c->c_nchans++;
	return ch->ch_ssh;
}

/* --- Events --- */

static void
on_poll(uv_poll_t *p, int status, int events)
{
	struct sconn *c = container_of(p, struct sconn, c_poll);
	int rc;

	(void)events;
	if (c->c_state == CONN_DEAD)
		return;
	if (status < 0) {
		/* libuv reports POLLERR (a reset, mostly) as UV_EBADF. */
		conn_close(c, status == UV_EBADF ? "socket error"
		                                 : uv_strerror(status));
		return;
	}
	c->c_busy++;
	if (c->c_state == CONN_KEX) {
		rc = ssh_handle_key_exchange(c->c_ss);
		if (rc == SSH_OK) {
			c->c_state = CONN_AUTH;
			if ((c->c_ev = ssh_event_new()) == NULL ||
			    ssh_event_add_session(c->c_ev, c->c_ss) != SSH_OK)
				conn_close(c, "out of memory");
		} else if (rc == SSH_ERROR)
			conn_close(c, ssh_get_error(c->c_ss));
	} else if (ssh_event_dopoll(c->c_ev, 0) == SSH_ERROR)
		conn_close(c, ssh_get_error(c->c_ss));
	c->c_busy--;
	conn_after(c);
}

static void
on_grace(uv_timer_t *t)
{
	struct sconn *c = container_of(t, struct sconn, c_grace);

	conn_close(c, "login grace time over");
}

void
sconn_accept(struct sshd *sd, int fd, const char *peer)
{
	struct sconn *c;
	int rc;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_warnx("connection from %s: out of memory", peer);
		close(fd);
		return;
	}
	/*
	 * libssh closes its socket on its own when it sees the end, and the
	 * number may then come back from accept() while our poll handle still
	 * watches it.  The poll handle watches a descriptor of our own.
	 */
	if ((c->c_pollfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1) {
		log_warn("connection from %s: dup", peer);
		close(fd);
		free(c);
		return;
	}
	c->c_sd = sd;
	c->c_id = ++sd->sd_next_id;
	snprintf(c->c_peer, sizeof(c->c_peer), "%s", peer);
	TAILQ_INIT(&c->c_chans);
	if ((c->c_ss = ssh_new()) == NULL) {
		log_warnx("connection from %s: out of memory", peer);
		close(fd);
		close(c->c_pollfd);
		free(c);
		return;
	}
	if (ssh_bind_accept_fd(sd->sd_bind, c->c_ss, fd) != SSH_OK) {
		log_warnx("connection from %s: %s", peer,
		          ssh_get_error(sd->sd_bind));
		ssh_free(c->c_ss);
		close(fd);
		close(c->c_pollfd);
		free(c);
		return;
	}
	ssh_set_blocking(c->c_ss, 0);
	ssh_callbacks_init(&c->c_cb);
	c->c_cb.userdata = c;
	c->c_cb.auth_pubkey_function = cb_auth_pubkey;
	c->c_cb.auth_password_function = cb_auth_password;
	c->c_cb.auth_none_function = cb_auth_none;
	c->c_cb.channel_open_request_session_function = cb_channel_open;
	ssh_set_server_callbacks(c->c_ss, &c->c_cb);
	ssh_set_auth_methods(c->c_ss, SSH_AUTH_METHOD_PUBLICKEY);
	c->c_state = CONN_KEX;
	sd->sd_nconns++;
	sd->sd_nunauth++;
	LIST_INSERT_HEAD(&sd->sd_conns, c, c_entry);
	uv_poll_init(sd->sd_loop, &c->c_poll, c->c_pollfd);
	c->c_poll.data = c;
	uv_timer_init(sd->sd_loop, &c->c_grace);
	c->c_grace.data = c;
	c->c_handles = 2;
	uv_timer_start(&c->c_grace, on_grace,
	               (uint64_t)sd->sd_sc->sc_ssh_grace * 1000, 0);
	log_debug("connection %" PRIu64 " from %s", c->c_id, peer);
	/* Sends our banner; the rest of the exchange follows on_poll. */
	c->c_busy++;
	rc = ssh_handle_key_exchange(c->c_ss);
	if (rc == SSH_ERROR)
		conn_close(c, ssh_get_error(c->c_ss));
	c->c_busy--;
	conn_after(c);
}

void
sconn_close_all(struct sshd *sd, const char *why)
{
	struct sconn *c;

	while ((c = LIST_FIRST(&sd->sd_conns)) != NULL) {
		c->c_no_drain = 1;
		conn_close(c, why);
	}
}
