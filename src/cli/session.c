/*
 * "ncgrpc session DEVICE --netconf|--shell": one Session call of the
 * operator API, joined to stdin and stdout.
 *
 * Pipe mode (stdin is not a terminal): stdin is read (a uv_pipe for pipes
 * and sockets, uv_fs_read for files, which libuv cannot poll) and sent as
 * data, pausing while the call has GRPC_CALL_HIWAT bytes queued.  At its
 * end a shell gets "exit\n" and the sending side is closed; the session
 * then ends when the device says so ("ended", then the call's status).
 *
 * Terminal mode, shell: a raw terminal is asked for (unless --line).  When
 * the device grants it, the local terminal goes raw (tty.h): every key goes
 * to the device as it is typed, the device echoes, the window size goes at
 * the start and on SIGWINCH, and the escapes of tty.h work ("~." leaves,
 * "~^Z" suspends).  When it does not (a Junos device), the session is in
 * line mode, said so on stderr, and the terminal keeps its line editing
 * without local echo: the device echoes each line once it is sent, so
 * nothing shows twice.
 *
 * Terminal mode, line (and NETCONF): the terminal stays in canonical mode,
 * so each read is a line the user typed; SIGINT is forwarded to the device
 * as a signal message, and Ctrl-D (end of file) ends the session.
 *
 * The terminal's settings are put back on every way out: the end of the
 * session, an error, a signal (handled in the loop), exit() (atexit).
 *
 * Output data is written to stdout with blocking writes: a slow stdout
 * stalls the loop, and HTTP/2 flow control then stops the device.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "cli.h"
#include "err.h"
#include "grpc.h"
#include "ncgrpc_operator.pb-c.h"
#include "pbwire.h"
#include "termext.h"
#include "tty.h"

#define SESS_READ_SIZE  (64 * 1024)
#define SESS_SHELL_READ (16 * 1024) /* see input_data() */
#define SESS_MAX_WAIT   600         /* seconds, as ncgrpcd caps wait_ms */

enum sess_input { IN_NONE, IN_TTY, IN_PIPE, IN_FILE };

/* Signals handled, and the exit status of those that end the session. */
static const struct {
	int sg_signum;
	int sg_exit;
} sess_signals[] = {
    {SIGINT, 130},
    {SIGQUIT, 131},
    {SIGTERM, 143},
    {SIGHUP, 129},
};
#define NSIGNALS (sizeof(sess_signals) / sizeof(sess_signals[0]))

static struct {
	uv_loop_t *s_loop;
	struct grpc_call *s_call; /* NULL once on_end ran */
	const char *s_device;
	int s_shell;
	unsigned s_wait_ms;
	int s_tty; /* terminal mode */
	int s_started;
	int s_ended;        /* SessionOutput.ended arrived */
	char s_reason[256]; /* its reason */
	uint64_t s_to_dev, s_from_dev;
	int s_exit;
	int s_forced_exit; /* a signal or EPIPE decided it */
	int s_user_ended;  /* Ctrl-D on a NETCONF session */
	int s_finished;    /* handles closed */

	/* Input. */
	enum sess_input s_in;
	union {
		uv_tty_t tty;
		uv_pipe_t pipe;
		uv_handle_t handle;
		uv_stream_t stream;
	} s_h;
	int s_h_open;
	int s_reading; /* stream: read started */
	int s_blocked; /* waiting for on_writable */
	int s_eof;     /* input is over */
	uv_fs_t s_fsreq;
	int s_fs_busy; /* an fs read in flight */
	char *s_buf;   /* SESS_READ_SIZE bytes */
	int s_last_nl; /* last byte sent was a newline */

	uv_signal_t s_sig[NSIGNALS];
	int s_sig_open;

	/* The terminal of a shell session (tty.h). */
	int s_line_only; /* --line */
	int s_ask_raw;   /* a raw terminal was asked for */
	int s_raw;       /* ... and granted: the local terminal is raw */
	unsigned s_cols, s_rows; /* the window size the device knows */
	struct tty_esc s_esc;
	uv_signal_t s_winch;
	int s_winch_open;
} sess;

static void sess_read_more(void);
static void stop_input(void);
static void send_window(void);

/* Closes every handle; the loop then ends once the connection is gone. */
static void
sess_finish(void)
{
	size_t i;

	if (sess.s_finished)
		return;
	sess.s_finished = 1;
	stop_input();
	if (sess.s_fs_busy)
		uv_cancel((uv_req_t *)&sess.s_fsreq);
	if (sess.s_sig_open) {
		sess.s_sig_open = 0;
		for (i = 0; i < NSIGNALS; i++)
			uv_close((uv_handle_t *)&sess.s_sig[i], NULL);
	}
	if (sess.s_winch_open) {
		sess.s_winch_open = 0;
		uv_close((uv_handle_t *)&sess.s_winch, NULL);
	}
	tty_restore();
	opconn_close();
}

/* Ends the session from our side with exit status code. */
static void
sess_abort(int code)
{
	if (!sess.s_forced_exit) {
		sess.s_forced_exit = 1;
		sess.s_exit = code;
	}
	if (sess.s_call != NULL)
		grpc_call_cancel(sess.s_call); /* on_end may run inside */
	else
		sess_finish();
}

static void
stop_input(void)
{
	if (sess.s_reading) {
		sess.s_reading = 0;
		uv_read_stop(&sess.s_h.stream);
	}
	if (sess.s_h_open) {
		sess.s_h_open = 0;
		uv_close(&sess.s_h.handle, NULL);
	}
}

/*
 * Sends one SessionInput with data or a signal.  Returns 0, or a negative
 * code (the call may have ended: check s_call).
 */
static int
send_input(const void *data, size_t len, uint32_t signum)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;

	if (sess.s_call == NULL)
		return -EPIPE;
	if (signum != 0) {
		in.input_case =
		    NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_SIGNAL;
		in.signal = signum;
	} else {
		in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA;
		in.data.data = (uint8_t *)(uintptr_t)data;
		in.data.len = len;
		if (len > 0)
			sess.s_last_nl =
			    ((const uint8_t *)data)[len - 1] == '\n';
	}
	return opconn_send(sess.s_call, &in.base);
}

/* The input is over: tell the device, as the session type wants. */
static void
input_eof(void)
{
	int rc;

	if (sess.s_eof)
		return;
	sess.s_eof = 1;
	stop_input();
	if (sess.s_call == NULL)
		return;
	if (sess.s_raw) {
		/* The terminal went away: hang up, as for SIGHUP. */
		sess_abort(128 + SIGHUP);
		return;
	}
	if (sess.s_shell) {
		/* A last line without newline must not swallow the exit. */
		rc = send_input(sess.s_last_nl ? "exit\n" : "\nexit\n",
		                sess.s_last_nl ? 5 : 6, 0);
		if (rc != 0 || sess.s_call == NULL) {
			if (sess.s_call != NULL)
				grpc_call_cancel(sess.s_call);
			return;
		}
		grpc_call_close_send(sess.s_call);
		return;
	}
	if (sess.s_tty) {
		/* There is no "exit" for NETCONF: end the session here. */
		fprintf(stderr, "ncgrpc: end of input: closing the NETCONF "
		                "session\n");
		sess.s_user_ended = 1;
		grpc_call_cancel(sess.s_call);
		return;
	}
	grpc_call_close_send(sess.s_call);
}

/*
 * ~^Z: ncgrpc stops with the terminal as it found it, and takes it back
 * raw when continued (the window may have changed meanwhile).  The
 * session goes on on the device; its output waits in flow control.
 */
static void
suspend(void)
{
	int rc;

	tty_restore();
	fprintf(stderr, "\r\nncgrpc: suspended (~^Z)\n");
	raise(SIGTSTP);
	if ((rc = tty_raw(STDIN_FILENO)) != 0) {
		cli_err("cannot put the terminal in raw mode: %s",
		        strerror(-rc));
		sess_abort(CLI_EXIT_FAIL);
		return;
	}
	send_window();
}

/*
 * Keys typed in a raw session go as they are, but for the escapes at the
 * start of a line: "~." leaves (the session is cancelled, as when the
 * operator hangs up), "~^Z" suspends, "~?" lists them, "~~" sends one "~".
 */
static void
input_raw(const char *buf, size_t len)
{
	const uint8_t *p = (const uint8_t *)buf;
	uint8_t out[SESS_SHELL_READ + 1];
	enum tty_esc_action act;
	size_t n, used;
	int rc = 0;

	while (len > 0) {
		act = tty_esc_filter(&sess.s_esc, p, len, out, &n, &used);
		p += used;
		len -= used;
		if (n > 0)
			rc = send_input(out, n, 0);
		if (sess.s_call == NULL)
			return;
		if (rc != 0) {
			tty_restore();
			cli_err("cannot send input: %s", ncg_strerror(rc));
			sess_abort(CLI_EXIT_FAIL);
			return;
		}
		switch (act) {
		case TTY_ESC_LEAVE:
			tty_restore();
			fprintf(stderr,
			        "\r\nncgrpc: leaving the session (~.)\n");
			sess.s_user_ended = 1;
			grpc_call_cancel(sess.s_call);
			return;
		case TTY_ESC_SUSPEND:
			suspend();
			if (sess.s_call == NULL || sess.s_finished)
				return;
			break;
		case TTY_ESC_HELP:
			fprintf(
			    stderr,
			    "\r\nncgrpc escapes, at the start of a line:\r\n"
			    "  ~.   leave the session\r\n"
			    "  ~^Z  suspend ncgrpc\r\n"
			    "  ~~   send one ~\r\n"
			    "  ~?   this list\r\n");
			break;
		case TTY_ESC_NONE:
			break;
		}
	}
	if (grpc_call_queued(sess.s_call) >= GRPC_CALL_HIWAT)
		sess.s_blocked = 1;
}

/*
 * Sends what was read; stops reading while the call's queue is full.
 *
 * ncgrpcd cuts shell input into lines; only a single line over 64 KiB is
 * refused.  Shell input still goes out split at line ends (the end of the
 * current line, whole lines, the start of the next), which keeps each
 * message small.
 */
static void
input_data(const char *buf, size_t len)
{
	const char *first, *last;
	size_t cut[4], i, n = 0;
	int rc = 0;

	if (sess.s_raw) {
		input_raw(buf, len);
		return;
	}
	cut[n++] = 0;
	if (sess.s_shell && (first = memchr(buf, '\n', len)) != NULL) {
		last = memrchr(buf, '\n', len);
		cut[n++] = (size_t)(first - buf) + 1;
		if (last != first)
			cut[n++] = (size_t)(last - buf) + 1;
	}
	if (cut[n - 1] != len)
		cut[n++] = len;
	for (i = 0; i + 1 < n && rc == 0; i++)
		rc = send_input(buf + cut[i], cut[i + 1] - cut[i], 0);
	if (sess.s_call == NULL)
		return;
	if (rc != 0) {
		cli_err("cannot send input: %s", ncg_strerror(rc));
		sess_abort(CLI_EXIT_FAIL);
		return;
	}
	if (grpc_call_queued(sess.s_call) >= GRPC_CALL_HIWAT)
		sess.s_blocked = 1;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = sess.s_buf;
	buf->len = sess.s_shell ? SESS_SHELL_READ : SESS_READ_SIZE;
}

static void
on_stream_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	(void)st;
	if (nread > 0) {
		input_data(buf->base, (size_t)nread);
		if (sess.s_blocked && sess.s_reading) {
			sess.s_reading = 0;
			uv_read_stop(&sess.s_h.stream);
		}
		return;
	}
	if (nread == 0)
		return;
	if (nread != UV_EOF)
		cli_err("reading standard input: %s", uv_strerror((int)nread));
	input_eof();
}

static void
on_fs_read(uv_fs_t *req)
{
	ssize_t n = req->result;

	sess.s_fs_busy = 0;
	uv_fs_req_cleanup(req);
	if (sess.s_finished || sess.s_eof)
		return;
	if (n > 0) {
		input_data(sess.s_buf, (size_t)n);
		if (!sess.s_blocked)
			sess_read_more();
		return;
	}
	if (n < 0 && n != UV_ECANCELED)
		cli_err("reading standard input: %s", uv_strerror((int)n));
	input_eof();
}

/* Reads on, unless the call's queue is full or the input is over. */
static void
sess_read_more(void)
{
	uv_buf_t b;
	int rc;

	if (sess.s_eof || sess.s_blocked || sess.s_finished ||
	    sess.s_call == NULL)
		return;
	switch (sess.s_in) {
	case IN_TTY:
	case IN_PIPE:
		if (sess.s_reading)
			return;
		if ((rc = uv_read_start(&sess.s_h.stream, on_alloc,
		                        on_stream_read)) != 0) {
			cli_err("reading standard input: %s", uv_strerror(rc));
			input_eof();
			return;
		}
		sess.s_reading = 1;
		break;
	case IN_FILE:
		if (sess.s_fs_busy)
			return;
		b = uv_buf_init(sess.s_buf, sess.s_shell ? SESS_SHELL_READ
		                                         : SESS_READ_SIZE);
		rc = uv_fs_read(sess.s_loop, &sess.s_fsreq, STDIN_FILENO, &b, 1,
		                -1, on_fs_read);
		if (rc != 0) {
			cli_err("reading standard input: %s", uv_strerror(rc));
			input_eof();
			return;
		}
		sess.s_fs_busy = 1;
		break;
	case IN_NONE:
		input_eof();
		break;
	}
}

/* Sets up stdin by its kind: terminal, pipe or socket, or file. */
static int
open_input(void)
{
	uv_handle_type t = uv_guess_handle(STDIN_FILENO);
	int rc = 0;

	switch (t) {
	case UV_TTY:
		sess.s_in = IN_TTY;
		rc = uv_tty_init(sess.s_loop, &sess.s_h.tty, STDIN_FILENO, 1);
		break;
	case UV_NAMED_PIPE:
	case UV_TCP:
		sess.s_in = IN_PIPE;
		if ((rc = uv_pipe_init(sess.s_loop, &sess.s_h.pipe, 0)) == 0 &&
		    (rc = uv_pipe_open(&sess.s_h.pipe, STDIN_FILENO)) != 0)
			uv_close(&sess.s_h.handle, NULL);
		break;
	case UV_FILE:
		sess.s_in = IN_FILE;
		return 0;
	default:
		/* Closed, or something unreadable: no input at all. */
		sess.s_in = IN_NONE;
		return 0;
	}
	if (rc != 0) {
		cli_err("cannot read standard input: %s", uv_strerror(rc));
		sess.s_in = IN_NONE;
		return rc;
	}
	sess.s_h_open = 1;
	return 0;
}

static void
on_started(const Ncgrpc__Operator__V1__SessionStarted *st)
{
	const char *dev =
	    st->device_id[0] != '\0' ? st->device_id : sess.s_device;
	const char *peer = st->peer[0] != '\0' ? st->peer : "?";
	int rc;

	sess.s_started = 1;
	if (sess.s_ask_raw &&
	    st->terminal == NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW) {
		if ((rc = tty_raw(STDIN_FILENO)) != 0) {
			cli_err("cannot put the terminal in raw mode: %s",
			        strerror(-rc));
			sess_abort(CLI_EXIT_FAIL);
			return;
		}
		sess.s_raw = 1;
		fprintf(stderr,
		        "connected to %s (shell, raw terminal) via %s; ~. "
		        "leaves\r\n",
		        dev, peer);
		/* The window may have changed since the open message. */
		send_window();
	} else if (sess.s_tty && sess.s_shell) {
		if (sess.s_ask_raw)
			fprintf(
			    stderr,
			    "ncgrpc: %s does not offer a raw terminal: line "
			    "mode\n",
			    dev);
		/* The device echoes each line: the terminal does not. */
		if ((rc = tty_noecho(STDIN_FILENO)) != 0)
			cli_err("cannot turn the terminal's echo off: %s",
			        strerror(-rc));
		fprintf(stderr,
		        "connected to %s (shell, line mode) via %s; lines are "
		        "shown once sent; Ctrl-C sends SIGINT, Ctrl-D ends\n",
		        dev, peer);
	} else if (sess.s_tty)
		fprintf(stderr,
		        "connected to %s (%s) via %s; Ctrl-C sends SIGINT, "
		        "Ctrl-D ends\n",
		        dev, sess.s_shell ? "shell" : "netconf", peer);
	sess_read_more();
}

/* The device's output to stdout. */
static void
write_output(struct grpc_call *c, const uint8_t *data, size_t len)
{
	int rc;

	rc = cli_write_all(STDOUT_FILENO, data, len);
	if (rc == -EPIPE) {
		/* Like SIGPIPE, but the session is ended cleanly. */
		sess.s_forced_exit = 1;
		sess.s_exit = 128 + SIGPIPE;
		grpc_call_cancel(c);
	} else if (rc != 0) {
		cli_err("writing standard output: %s", strerror(-rc));
		sess.s_forced_exit = 1;
		sess.s_exit = CLI_EXIT_FAIL;
		grpc_call_cancel(c);
	}
}

static void
s_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	Ncgrpc__Operator__V1__SessionOutput *out;
	const uint8_t *data;
	size_t n;

	(void)arg;
	/* Output, the usual message, is written from where it lies. */
	if (pbwire_only_bytes(msg, len, PBWIRE_SESSION_OUTPUT_DATA, &data,
	                      &n) == 1) {
		write_output(c, data, n);
		return;
	}
	out = ncgrpc__operator__v1__session_output__unpack(NULL, len, msg);
	if (out == NULL) {
		cli_err("malformed SessionOutput from ncgrpcd");
		sess.s_forced_exit = 1;
		sess.s_exit = CLI_EXIT_FAIL;
		grpc_call_cancel(c);
		return;
	}
	switch (out->output_case) {
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED:
		if (!sess.s_started)
			on_started(out->started);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA:
		write_output(c, out->data.data, out->data.len);
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_ENDED:
		sess.s_ended = 1;
		snprintf(sess.s_reason, sizeof(sess.s_reason), "%s",
		         out->ended->reason);
		sess.s_to_dev = out->ended->bytes_to_device;
		sess.s_from_dev = out->ended->bytes_from_device;
		break;
	default:
		break;
	}
	ncgrpc__operator__v1__session_output__free_unpacked(out, NULL);
}

static void
s_on_writable(struct grpc_call *c, void *arg)
{
	(void)c;
	(void)arg;
	if (!sess.s_blocked)
		return;
	sess.s_blocked = 0;
	sess_read_more();
}

static void
s_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	const char *why;

	(void)c;
	(void)arg;
	sess.s_call = NULL;
	/* Messages below are for a terminal in its own mode again. */
	tty_restore();
	why = sess.s_ended && sess.s_reason[0] != '\0' ? sess.s_reason
	      : message[0] != '\0'                     ? message
	                           : grpc_status_name(status);
	if (sess.s_forced_exit)
		; /* a signal or a local failure decided the status */
	else if (!sess.s_started) {
		opconn_report(status, message);
		sess.s_exit = CLI_EXIT_FAIL;
	} else if (sess.s_user_ended && status == GRPC_STATUS_CANCELLED) {
		sess.s_exit = CLI_EXIT_OK;
	} else if (status == GRPC_STATUS_OK) {
		if (sess.s_tty)
			fprintf(stderr,
			        "ncgrpc: session ended: %s (%" PRIu64
			        " bytes sent, %" PRIu64 " received)\n",
			        why, sess.s_to_dev, sess.s_from_dev);
		sess.s_exit = CLI_EXIT_OK;
	} else {
		cli_err("session ended: %s", why);
		if (sess.s_ended && message[0] != '\0' &&
		    strcmp(message, why) != 0)
			cli_err("%s", message);
		sess.s_exit = CLI_EXIT_FAIL;
	}
	sess_finish();
}

static const struct grpc_call_ops s_call_ops = {
    .on_message = s_on_message,
    .on_writable = s_on_writable,
    .on_end = s_on_end,
};

static void
s_on_ready(struct grpc_conn *conn, void *arg)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__SessionOpen o =
	    NCGRPC__OPERATOR__V1__SESSION_OPEN__INIT;
	Ncgrpc__Operator__V1__WindowSize win =
	    NCGRPC__OPERATOR__V1__WINDOW_SIZE__INIT;
	int rc;

	(void)arg;
	if (sess.s_finished)
		return;
	rc = grpc_call_start(conn, CLI_OPSVC "Session", NULL, 0, &s_call_ops,
	                     NULL, &sess.s_call);
	if (rc != 0) {
		cli_err("cannot start the session call: %s", ncg_strerror(rc));
		sess.s_exit = CLI_EXIT_FAIL;
		sess_finish();
		return;
	}
	o.device_id = (char *)(uintptr_t)sess.s_device;
	o.type = sess.s_shell ? NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL
	                      : NCGRPC__OPERATOR__V1__SESSION_TYPE__NETCONF;
	o.wait_ms = sess.s_wait_ms;
	if (sess.s_ask_raw) {
		const char *term = getenv("TERM");

		o.terminal = NCGRPC__OPERATOR__V1__TERMINAL_MODE__RAW;
		if (sess.s_cols != 0) {
			win.cols = sess.s_cols;
			win.rows = sess.s_rows;
			o.window = &win;
		}
		if (term != NULL && termext_term_ok(term, strlen(term)))
			o.term = (char *)(uintptr_t)term;
	}
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN;
	in.open = &o;
	rc = opconn_send(sess.s_call, &in.base);
	if (rc != 0 && sess.s_call != NULL) {
		cli_err("cannot send the open message: %s", ncg_strerror(rc));
		sess_abort(CLI_EXIT_FAIL);
	}
}

static void
s_on_closed(int unreachable, void *arg)
{
	(void)arg;
	if (unreachable && !sess.s_forced_exit)
		sess.s_exit = CLI_EXIT_UNREACHABLE;
	sess_finish();
}

static const struct opconn_ops s_conn_ops = {
    .oo_ready = s_on_ready,
    .oo_closed = s_on_closed,
};

/*
 * Sends the terminal's window size when it differs from what the device
 * knows.  A terminal that cannot tell its size sends nothing.
 */
static void
send_window(void)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__WindowSize win =
	    NCGRPC__OPERATOR__V1__WINDOW_SIZE__INIT;
	struct termext_window ok;
	unsigned cols, rows;
	int rc;

	if (!sess.s_raw || sess.s_call == NULL ||
	    tty_window(STDIN_FILENO, &cols, &rows) != 0 ||
	    termext_window_check(cols, rows, &ok) != 0 ||
	    (cols == sess.s_cols && rows == sess.s_rows))
		return;
	sess.s_cols = cols;
	sess.s_rows = rows;
	win.cols = cols;
	win.rows = rows;
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_WINDOW;
	in.window = &win;
	rc = opconn_send(sess.s_call, &in.base);
	if (rc != 0 && sess.s_call != NULL) {
		tty_restore();
		cli_err("cannot send the window size: %s", ncg_strerror(rc));
		sess_abort(CLI_EXIT_FAIL);
	}
}

static void
s_on_winch(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	send_window();
}

static void
s_on_signal(uv_signal_t *h, int signum)
{
	size_t i;

	(void)h;
	/*
	 * In a terminal, Ctrl-C is for the device's processes (in a raw
	 * session it is a key and never reaches us as a signal).
	 */
	if (signum == SIGINT && sess.s_tty && sess.s_started &&
	    sess.s_call != NULL) {
		int rc = send_input(NULL, 0, 2);

		if (rc != 0 && sess.s_call != NULL)
			sess_abort(CLI_EXIT_FAIL);
		return;
	}
	for (i = 0; i < NSIGNALS; i++)
		if (sess_signals[i].sg_signum == signum)
			break;
	sess_abort(i < NSIGNALS ? sess_signals[i].sg_exit : CLI_EXIT_FAIL);
}

static int
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"netconf", no_argument, NULL, 'n'},
	    {"shell", no_argument, NULL, 's'},
	    {"wait", required_argument, NULL, 'w'},
	    {"line", no_argument, NULL, 'l'},
	    {NULL, 0, NULL, 0},
	};
	unsigned long long v;
	int ch, type = -1;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'n':
		case 's':
			if (type != -1 && type != (ch == 's'))
				return cli_usage_error("session: --netconf "
				                       "and --shell exclude "
				                       "each other");
			type = ch == 's';
			break;
		case 'l':
			sess.s_line_only = 1;
			break;
		case 'w':
			if (addr_parse_uint(optarg, 0, SESS_MAX_WAIT, &v) != 0)
				return cli_usage_error(
				    "session: --wait takes whole seconds "
				    "from 0 to %d, not \"%s\"",
				    SESS_MAX_WAIT, optarg);
			sess.s_wait_ms = (unsigned)v * 1000;
			break;
		default:
			if (optopt == 'w')
				return cli_usage_error("session: --wait "
				                       "needs SECONDS");
			return cli_usage_error("session: unknown option "
			                       "\"%s\"",
			                       argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cli_usage_error("session: which DEVICE?");
	if (optind + 1 < argc)
		return cli_usage_error("session: unexpected argument \"%s\"",
		                       argv[optind + 1]);
	if (type == -1)
		return cli_usage_error("session: --netconf or --shell?");
	if (sess.s_line_only && !type)
		return cli_usage_error("session: --line is for --shell");
	sess.s_device = argv[optind];
	sess.s_shell = type;
	if (sess.s_device[0] == '\0')
		return cli_usage_error("session: empty DEVICE");
	return 0;
}

int
cmd_session(const struct cli *cl, int argc, char **argv)
{
	const char *path;
	size_t i;
	int rc;

	if ((rc = parse_args(argc, argv)) != 0)
		return rc;
	if ((path = cli_socket_path(cl)) == NULL)
		return CLI_EXIT_FAIL;
	if ((sess.s_buf = malloc(SESS_READ_SIZE)) == NULL) {
		cli_err("out of memory");
		return CLI_EXIT_FAIL;
	}
	sess.s_loop = uv_default_loop();
	sess.s_last_nl = 1;
	sess.s_tty = isatty(STDIN_FILENO);
	/* Whatever happens, the terminal gets its settings back. */
	atexit(tty_restore);
	if (sess.s_tty && sess.s_shell && !sess.s_line_only) {
		struct termext_window w;

		sess.s_ask_raw = 1;
		/* A size ncgrpcd would refuse is not sent (80x24 then). */
		if (tty_window(STDIN_FILENO, &sess.s_cols, &sess.s_rows) != 0 ||
		    termext_window_check(sess.s_cols, sess.s_rows, &w) != 0)
			sess.s_cols = sess.s_rows = 0;
		uv_signal_init(sess.s_loop, &sess.s_winch);
		uv_signal_start(&sess.s_winch, s_on_winch, SIGWINCH);
		sess.s_winch_open = 1;
	}
	/* On failure there is no input: the session gets an end of input. */
	(void)open_input();
	for (i = 0; i < NSIGNALS; i++) {
		uv_signal_init(sess.s_loop, &sess.s_sig[i]);
		uv_signal_start(&sess.s_sig[i], s_on_signal,
		                sess_signals[i].sg_signum);
	}
	sess.s_sig_open = 1;
	if (opconn_open(sess.s_loop, path, &s_conn_ops, NULL) != 0) {
		sess.s_exit = CLI_EXIT_UNREACHABLE;
		sess_finish();
	}
	uv_run(sess.s_loop, UV_RUN_DEFAULT);
	tty_restore();
	rc = sess.s_exit;
	if (uv_loop_close(sess.s_loop) != 0)
		cli_err("event loop closed with handles open");
	free(sess.s_buf);
	return rc;
}
