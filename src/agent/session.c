/*
 * A session joins a CommandGet stream and a backend process.  It lives
 * until both halves are gone: se_call (ended by on_end) and se_proc (ended
 * by pc_exit).  Whichever ends first ends the other.
 *
 * The process starts once the stream's HEADERS have been handed to the
 * transport (se_spawn_pending, until on_writable): the server sees the
 * session start while the agent forks and the exec completes, instead
 * of after.  Until then the server has no stream to send on, so no input
 * can come before proc_spawn().  The exec itself runs on proc.c's spawner
 * thread: input that comes meanwhile waits in the pty or pipe for the
 * process, and a signal in proc.c until the process exists.
 */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "err.h"
#include "log.h"
#include "ncgrpc_wire.pb-c.h"
#include "proc.h"
#include "session.h"
#include "termext.h"
#include "utf8.h"

#define CMDGET_PATH           "/jnx.jet.netconf.Ncgrpc/NcgrpcCommandGet"
#define SESSION_KILL_GRACE_MS 2000
/*
 * After the client's <hello>, NETCONF input waits this long.  yuma123's
 * netconfd drops an RPC that reaches it in the same read as the client
 * hello, and operators pipe whole files (ncgrpc session --netconf <
 * rpcs.xml), whose messages the server sends back to back.
 */
#define SESSION_HELLO_SETTLE_MS 250
/*
 * After a signal, shell input waits until the shell has finished with it:
 * bash discards the line it is reading when SIGINT arrives, and would run
 * the rest of "exit" as "xit", or lose it whole.  Finished means: at least
 * SESSION_SIGNAL_SETTLE_MS have passed, the shell has written something
 * since the signal (its new prompt) and then been quiet for
 * SESSION_SIGNAL_QUIET_MS.  A fixed wait was not enough: on a loaded
 * machine bash took the signal later than that, and the line was lost.  A
 * process that answers a signal with silence gets the line after
 * SESSION_SIGNAL_SETTLE_MAX_MS.
 */
#define SESSION_SIGNAL_SETTLE_MS     100
#define SESSION_SIGNAL_QUIET_MS      20
#define SESSION_SIGNAL_STEP_MS       10
#define SESSION_SIGNAL_SETTLE_MAX_MS 2000
/*
 * SIGINT to a shell idle at its prompt is done once the shell has printed
 * that prompt again.  bash can echo "^C" and then wait, the signal noted
 * but not acted on, until a byte arrives, which it then throws away with
 * the line: "exit" would run as "xit" however long we waited.  (Measured
 * with bash 5.2 on a loaded machine: 20 of 100 times, waiting for its
 * prompt for 2 s.)  If the prompt has not come SESSION_SIGNAL_NUDGE_MS
 * after the signal, the shell gets an empty line to throw away instead:
 * at a prompt it runs nothing, and it gets the shell out of that wait (0
 * of 100).  The prompt is the output's last line when the signal went,
 * at most SESSION_PROMPT_MAX bytes.
 */
#define SESSION_SIGNAL_NUDGE_MS 200
#define SESSION_PROMPT_MAX      64
#define SESSION_TAIL            (2 * SESSION_PROMPT_MAX)
/*
 * A server that sends a line that ends the session together with a signal
 * (Juniper's sample server: csh_command "exit" or netconf_command "<>",
 * with kill_signal 2) has hung up and waits for us to close the stream.
 * If the process is still there this long after, it is ended: SIGHUP and
 * SIGTERM, then SIGKILL after SESSION_HANGUP_KILL_MS.
 */
#define SESSION_HANGUP_MS 1000
/*
 * A hang-up line and a signal in two messages, in either order, at most
 * this far apart, while the shell itself is the terminal's foreground,
 * mean the same: the operator ends the shell.  Each is delivered as
 * usual, and if the shell is still there SESSION_HANGUP_MS later (on a
 * loaded machine bash can take the signal so late that it discards the
 * line), the hang-up ends it.
 */
#define SESSION_HANGUP_PAIR_MS 1000
/*
 * A shell line longer than a canonical-mode terminal takes waits up to this
 * long, in steps, for the shell at its prompt to switch its terminal to raw
 * mode (bash's line editor does, right after the prompt); then it is
 * refused.
 */
#define SESSION_LONG_LINE_WAIT_MS 500
#define SESSION_LONG_LINE_STEP_MS 10
#define SESSION_HANGUP_KILL_MS    500

struct session {
	struct grpc_call *se_call;
	struct proc *se_proc;
	enum session_type se_type;
	const struct session_cb *se_cb;
	void *se_arg;
	int se_output_told; /* sc_output has run */
	struct session_stats se_stats;
	uint8_t se_carry[4]; /* start of a character split across reads */
	size_t se_ncarry;
	int se_call_done;
	int se_proc_done;
	int se_spawn_pending; /* the process starts after the HEADERS */
	const struct session_env *se_env;
	int se_closing_send;  /* output flushed and END_STREAM asked for */
	uv_timer_t se_settle; /* input held: NETCONF hello, shell signal */
	int se_settling;
	int se_hello_done;
	int se_held_sig;  /* signal waiting for the shell to read a line */
	uint8_t *se_held; /* shell line waiting for a signal to settle */
	size_t se_held_len;
	uint64_t se_held_until; /* a long line waits for raw mode until then */
	uint64_t se_last_input; /* loop time of the last line to the shell */
	uint64_t se_sig_at;     /* a signal the shell may not have taken yet */
	uint64_t se_sig_out_at; /* its last output since that signal, or 0 */
	int se_sig_nudged;      /* the empty line after it was written */
	size_t se_sig_out;      /* bytes of output since it */
	uint8_t se_prompt[SESSION_PROMPT_MAX]; /* the shell's, when it went */
	size_t se_prompt_len;                  /* 0: not known */
	uint8_t se_tail[SESSION_TAIL];         /* the last bytes of output */
	size_t se_tail_len;
	int se_tail_cut; /* the tail no longer starts at the output's start */
	uint64_t se_hup_line_at; /* a hang-up line alone came then, or 0 */
	uint64_t se_sig_in_at;   /* a signal alone came then, or 0 */
	uv_timer_t se_hangup;    /* the server hung up: end the process */
	int se_nhandles;         /* timers whose close callback is pending */
	/* The raw-terminal extension (termext.h), granted for this shell. */
	int se_raw;
	struct termext_window se_window;    /* initial pty size */
	char se_term[TERMEXT_TERM_MAX + 1]; /* TERM of the shell */
};

static const struct proc_cb session_proc_cb;
static const struct grpc_call_ops session_call_ops;

const char *
session_type_name(enum session_type type)
{
	return type == SESSION_CSH ? "shell" : "netconf";
}

int
session_is_raw(const struct session *s)
{
	return s->se_raw;
}

static void
session_reason(struct session *s, const char *why)
{
	if (s->se_stats.ss_reason[0] == '\0')
		snprintf(s->se_stats.ss_reason, sizeof(s->se_stats.ss_reason),
		         "%.*s", (int)sizeof(s->se_stats.ss_reason) - 1, why);
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct session *s = h->data;

	if (--s->se_nhandles == 0) {
		free(s->se_held);
		free(s);
	}
}

static void
session_close_timers(struct session *s)
{
	uv_close((uv_handle_t *)&s->se_settle, on_timer_closed);
	uv_close((uv_handle_t *)&s->se_hangup, on_timer_closed);
}

static void
session_maybe_done(struct session *s)
{
	if (!s->se_call_done || !s->se_proc_done ||
	    uv_is_closing((uv_handle_t *)&s->se_settle))
		return;
	s->se_cb->sc_done(s, &s->se_stats, s->se_arg);
	/* The timers' close callbacks free s. */
	session_close_timers(s);
}

static void on_settled(uv_timer_t *);

/* Holds the stream's input for ms (the call is resumed by on_settled). */
static void
session_hold_input(struct session *s, uint64_t ms)
{
	s->se_settling = 1;
	if (s->se_call != NULL)
		grpc_call_pause(s->se_call);
	uv_timer_start(&s->se_settle, on_settled, ms, 0);
}

static int write_input(struct session *s, const uint8_t *data, size_t len,
                       int newline);

static uint64_t
session_now(const struct session *s)
{
	return uv_now(uv_handle_get_loop((const uv_handle_t *)&s->se_settle));
}

/* Keeps the last SESSION_TAIL bytes of the process's output. */
static void
tail_add(struct session *s, const uint8_t *data, size_t len)
{
	size_t keep;

	if (len >= sizeof(s->se_tail)) {
		memcpy(s->se_tail, data + len - sizeof(s->se_tail),
		       sizeof(s->se_tail));
		s->se_tail_len = sizeof(s->se_tail);
		s->se_tail_cut |= len > sizeof(s->se_tail);
		return;
	}
	keep = s->se_tail_len;
	if (keep > sizeof(s->se_tail) - len) {
		keep = sizeof(s->se_tail) - len;
		s->se_tail_cut = 1;
	}
	memmove(s->se_tail, s->se_tail + s->se_tail_len - keep, keep);
	memcpy(s->se_tail + keep, data, len);
	s->se_tail_len = keep + len;
}

/*
 * The shell's prompt, if it sits at one: the output's last line, when its
 * start is known (a line break before it in the tail, or the output's
 * start) and it is 1 to SESSION_PROMPT_MAX bytes.  0 when not known.
 */
static size_t
shell_prompt(const struct session *s, uint8_t *out)
{
	size_t i = s->se_tail_len, len;

	while (i > 0 && s->se_tail[i - 1] != '\n' && s->se_tail[i - 1] != '\r')
		i--;
	len = s->se_tail_len - i;
	if ((i == 0 && s->se_tail_cut) || len == 0 || len > SESSION_PROMPT_MAX)
		return 0;
	memcpy(out, s->se_tail + i, len);
	return len;
}

/* A signal for the shell: input waits until it has taken it. */
static void
shell_kill(struct session *s, int sig)
{
	proc_kill(s->se_proc, sig);
	s->se_sig_at = session_now(s);
	s->se_sig_out_at = 0;
	s->se_sig_out = 0;
	s->se_sig_nudged = 0;
	s->se_prompt_len = 0;
	/* Only a shell at its prompt: with a job running, a line is its. */
	if (sig == SIGINT && proc_foreground_is_leader(s->se_proc))
		s->se_prompt_len = shell_prompt(s, s->se_prompt);
	session_hold_input(s, SESSION_SIGNAL_SETTLE_MS);
}

/*
 * The shell has not finished with the last signal yet: with its prompt
 * known, until that prompt is the end of the output again (nudging it
 * with an empty line after SESSION_SIGNAL_NUDGE_MS); else until it has
 * written something and then been quiet for SESSION_SIGNAL_QUIET_MS.  At
 * most SESSION_SIGNAL_SETTLE_MAX_MS either way.
 */
static int
shell_taking_signal(struct session *s)
{
	uint64_t now = session_now(s);
	size_t n = s->se_prompt_len;

	if (s->se_sig_at == 0)
		return 0;
	if (now - s->se_sig_at >= SESSION_SIGNAL_SETTLE_MAX_MS)
		goto done;
	if (n == 0) {
		if (s->se_sig_out_at != 0 &&
		    now - s->se_sig_out_at >= SESSION_SIGNAL_QUIET_MS)
			goto done;
		return 1;
	}
	if (s->se_sig_out >= n && s->se_tail_len >= n &&
	    memcmp(s->se_tail + s->se_tail_len - n, s->se_prompt, n) == 0)
		goto done;
	if (!s->se_sig_nudged &&
	    now - s->se_sig_at >= SESSION_SIGNAL_NUDGE_MS &&
	    proc_foreground_is_leader(s->se_proc)) {
		s->se_sig_nudged = 1;
		s->se_sig_out = 0; /* its own prompt, not an old one */
		(void)proc_write(s->se_proc, (const uint8_t *)"\n", 1);
	}
	return 1;
done:
	s->se_sig_at = 0;
	return 0;
}

static void
on_settled(uv_timer_t *t)
{
	struct session *s = t->data;
	int sig = s->se_held_sig;

	if (s->se_proc != NULL && sig != 0) {
		/*
		 * The line before it must have been read whole: a shell
		 * descheduled after the first byte of "exit" would otherwise
		 * lose the "e" to the signal and run "xit".  A fixed wait was
		 * not enough on a loaded machine.
		 */
		if ((proc_queued(s->se_proc) > 0 ||
		     proc_input_unread(s->se_proc) > 0) &&
		    session_now(s) - s->se_last_input <
		        SESSION_SIGNAL_SETTLE_MAX_MS) {
			session_hold_input(s, SESSION_SIGNAL_STEP_MS);
			return;
		}
		s->se_held_sig = 0;
		shell_kill(s, sig);
		return;
	}
	s->se_held_sig = 0;
	if (s->se_proc != NULL && shell_taking_signal(s)) {
		session_hold_input(s, SESSION_SIGNAL_STEP_MS);
		return;
	}
	if (s->se_held != NULL && s->se_proc != NULL &&
	    s->se_held_len > proc_line_max(s->se_proc) &&
	    proc_line_max(s->se_proc) != 0 &&
	    uv_now(uv_handle_get_loop((uv_handle_t *)t)) < s->se_held_until) {
		session_hold_input(s, SESSION_LONG_LINE_STEP_MS);
		return;
	}
	if (s->se_held != NULL) {
		uint8_t *line = s->se_held;

		s->se_held = NULL;
		if (s->se_proc != NULL &&
		    write_input(s, line, s->se_held_len, 1) != 0 &&
		    s->se_call != NULL) {
			free(line);
			grpc_call_cancel(s->se_call);
			return;
		}
		free(line);
	}
	s->se_settling = 0;
	if (s->se_call != NULL)
		grpc_call_resume(s->se_call);
}

static void
on_hangup(uv_timer_t *t)
{
	struct session *s = t->data;

	if (s->se_proc == NULL)
		return;
	log_info("the server hung up %lu ms ago and the %s session is still "
	         "running: ending it",
	         (unsigned long)SESSION_HANGUP_MS,
	         session_type_name(s->se_type));
	session_reason(s, "server hung up; process ended");
	proc_close(s->se_proc, SESSION_HANGUP_KILL_MS);
}

/*
 * Nonzero for a command that ends the session when it comes with a
 * signal: how Juniper's sample server hangs up.
 */
static int
is_hangup_line(enum session_type type, const uint8_t *data, size_t len)
{
	while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\t' ||
	                   data[len - 1] == '\r' || data[len - 1] == '\n'))
		len--;
	while (len > 0 && (*data == ' ' || *data == '\t')) {
		data++;
		len--;
	}
	if (type == SESSION_NETCONF)
		return len == 2 && memcmp(data, "<>", 2) == 0;
	return (len == 4 && memcmp(data, "exit", 4) == 0) ||
	       (len == 6 && memcmp(data, "logout", 6) == 0);
}

/* Nonzero if a NETCONF message is a <hello> (prefixes allowed). */
static int
is_hello(const uint8_t *data, size_t len)
{
	const uint8_t *p = data, *end = data + (len < 4096 ? len : 4096);

	while ((p = memchr(p, '<', (size_t)(end - p))) != NULL) {
		const uint8_t *q = p + 1, *name = q;

		/* Skip declarations, comments and chunk framing noise. */
		if (q < end && (*q == '?' || *q == '!')) {
			p = q;
			continue;
		}
		while (q < end && *q != '>' && *q != ' ' && *q != '\t' &&
		       *q != '\n' && *q != '\r' && *q != '/')
			if (*q++ == ':')
				name = q;
		return q - name == 5 && memcmp(name, "hello", 5) == 0;
	}
	return 0;
}

/* Sends bytes up as one CommandGetRequest. */
static int
send_up(struct session *s, const uint8_t *data, size_t len)
{
	Ncgrpc__Wire__CommandGetRequest req =
	    NCGRPC__WIRE__COMMAND_GET_REQUEST__INIT;

	/* The call can end inside an earlier send (grpc.h). */
	if (s->se_call == NULL)
		return -EPIPE;
	req.message.data = (uint8_t *)(uintptr_t)data;
	req.message.len = len;
	s->se_stats.ss_bytes_up += len;
	return grpc_call_send_pb(s->se_call, &req.base);
}

/*
 * Sends raw process output as valid UTF-8 chunks.  Bytes of a character
 * that is not complete yet stay in se_carry; with final set they are
 * flushed (as U+FFFD) because no more bytes will come.
 */
static int
send_output(struct session *s, const uint8_t *data, size_t len, int final)
{
	uint8_t in[SESSION_CHUNK + 4], clean[(SESSION_CHUNK + 4) * 3];
	size_t take, n, keep, ncl;
	int rc;

	/*
	 * Valid UTF-8 with nothing carried, the usual case, is packed straight
	 * from the read buffer: utf8_valid() only reads it.  A character cut
	 * at a chunk's end starts the next chunk.  From the first invalid
	 * sequence, or a character cut at the end of the data, the loop below
	 * copies and repairs.
	 */
	while (len > 0 && s->se_ncarry == 0) {
		take = len < SESSION_CHUNK ? len : SESSION_CHUNK;
		keep = utf8_complete_prefix(data, take);
		if (keep == 0 || !utf8_valid(data, keep))
			break;
		if ((rc = send_up(s, data, keep)) != 0)
			return rc;
		data += keep;
		len -= keep;
	}
	while (len > 0 || (final && s->se_ncarry > 0)) {
		memcpy(in, s->se_carry, s->se_ncarry);
		take = len < SESSION_CHUNK ? len : SESSION_CHUNK;
		/* data is NULL for the final flush: no memcpy(, NULL, 0). */
		if (take > 0) {
			memcpy(in + s->se_ncarry, data, take);
			data += take;
			len -= take;
		}
		n = s->se_ncarry + take;
		keep = final && len == 0 ? n : utf8_complete_prefix(in, n);
		ncl = utf8_sanitize(in, keep, clean);
		s->se_ncarry = n - keep;
		memcpy(s->se_carry, in + keep, s->se_ncarry);
		/* Chunks of at most SESSION_CHUNK; sanitising may grow them. */
		for (size_t off = 0; off < ncl;) {
			size_t part = ncl - off;

			if (part > SESSION_CHUNK) {
				part = utf8_complete_prefix(clean + off,
				                            SESSION_CHUNK);
				if (part == 0)
					part = SESSION_CHUNK;
			}
			if ((rc = send_up(s, clean + off, part)) != 0)
				return rc;
			off += part;
		}
	}
	return 0;
}

static void
session_close_send(struct session *s)
{
	if (s->se_closing_send || s->se_call_done)
		return;
	s->se_closing_send = 1;
	send_output(s, NULL, 0, 1);
	/* Sending the last bytes may have ended the call (grpc.h). */
	if (s->se_call != NULL)
		grpc_call_close_send(s->se_call);
}

/* The first output is queued for the server: tell the client, once. */
static void
session_output_queued(struct session *s)
{
	if (s->se_output_told)
		return;
	s->se_output_told = 1;
	if (s->se_cb->sc_output != NULL)
		s->se_cb->sc_output(s, s->se_arg);
}

/* Process side. */

static void
on_proc_output(struct proc *p, const uint8_t *data, size_t len, void *arg)
{
	struct session *s = arg;
	int rc;

	if (s->se_call_done || s->se_closing_send)
		return;
	if (s->se_sig_at != 0) {
		s->se_sig_out_at = session_now(s);
		s->se_sig_out += len;
	}
	if (s->se_type == SESSION_CSH && !s->se_raw)
		tail_add(s, data, len);
	rc = send_output(s, data, len, 0);
	/* Sending may have ended the call (grpc.h): look again. */
	if (s->se_call == NULL)
		return;
	if (rc != 0) {
		session_reason(s, "cannot queue output");
		grpc_call_cancel(s->se_call);
		return;
	}
	session_output_queued(s);
	/* A server that reads slowly stops the process, not our memory. */
	if (grpc_call_queued(s->se_call) >= GRPC_CALL_HIWAT)
		proc_pause(p);
}

static void
on_proc_writable(struct proc *p, void *arg)
{
	struct session *s = arg;

	(void)p;
	if (!s->se_call_done && !s->se_settling)
		grpc_call_resume(s->se_call);
}

static void
on_proc_exit(struct proc *p, int64_t status, int sig, void *arg)
{
	struct session *s = arg;
	char why[64];

	(void)p;
	s->se_proc = NULL;
	s->se_proc_done = 1;
	uv_timer_stop(&s->se_hangup);
	s->se_stats.ss_exit_status = status;
	s->se_stats.ss_term_signal = sig;
	if (sig != 0)
		snprintf(why, sizeof(why), "process killed by signal %d", sig);
	else
		snprintf(why, sizeof(why), "process exited with status %lld",
		         (long long)status);
	session_reason(s, why);
	/* The device closes the stream after the last output. */
	session_close_send(s);
	session_maybe_done(s);
}

static void session_spawn_failed(struct session *s, int rc, int checked);

/* The process failed in its exec, after proc_spawn() had returned. */
static void
on_proc_failed(struct proc *p, int err, void *arg)
{
	struct session *s = arg;

	(void)p;
	s->se_proc = NULL;
	uv_timer_stop(&s->se_hangup);
	session_spawn_failed(s, err, 0);
	session_maybe_done(s);
}

static const struct proc_cb session_proc_cb = {
    .pc_output = on_proc_output,
    .pc_writable = on_proc_writable,
    .pc_exit = on_proc_exit,
    .pc_failed = on_proc_failed,
};

/* Stream side. */

/*
 * Writes input to the process, csh_command with its newline.  0, or a
 * negative code after which input would be lost (the caller ends the
 * session; the reason is set).
 */
static int
write_input(struct session *s, const uint8_t *data, size_t len, int newline)
{
	size_t max = newline ? proc_line_max(s->se_proc) : 0;
	char msg[200];
	int rc = 0;

	if (max != 0 && len > max) {
		/*
		 * The terminal would keep the first bytes and drop the rest,
		 * newline included: the shell would wait for the end of a
		 * line that never comes.  Tell the operator instead.
		 */
		snprintf(msg, sizeof(msg),
		         "\r\nncgrpc-agent: line of %zu bytes not sent: the "
		         "terminal takes at most %zu bytes per line now\r\n",
		         len, max);
		log_warnx("shell line of %zu bytes refused (canonical mode "
		          "limit %zu)",
		          len, max);
		if ((rc = send_output(s, (const uint8_t *)msg, strlen(msg),
		                      0)) != 0)
			session_reason(s, "cannot queue output");
		return rc;
	}
	if (len > 0)
		rc = proc_write(s->se_proc, data, len);
	if (rc == 0 && newline)
		rc = proc_write(s->se_proc, (const uint8_t *)"\n", 1);
	if (rc != 0) {
		session_reason(s, rc == -EPIPE ? "process closed its input"
		                               : "cannot queue input");
		return rc;
	}
	s->se_stats.ss_bytes_down += len + (newline ? 1 : 0);
	if (newline)
		s->se_last_input = session_now(s);
	return 0;
}

/* Keeps a shell line to write when the input is let go (on_settled). */
static int
hold_line(struct session *s, const ProtobufCBinaryData *cmd, uint64_t wait)
{
	free(s->se_held);
	if ((s->se_held = malloc(cmd->len + 1)) == NULL) {
		session_reason(s, "cannot queue input");
		return -ENOMEM;
	}
	if (cmd->len > 0)
		memcpy(s->se_held, cmd->data, cmd->len);
	s->se_held_len = cmd->len;
	s->se_held_until = session_now(s) + wait;
	return 0;
}

/*
 * A signal for a shell.  It goes first and its line waits until the shell
 * has settled (a line and a signal together are a hang-up: the line is
 * "exit" and must not be cut by the signal).  A signal alone that follows a
 * line the shell may still be reading at its prompt waits until the shell
 * has read that line whole (the pty holds none of it) and at least
 * SESSION_SIGNAL_SETTLE_MS have passed since it, for the same reason; at
 * most SESSION_SIGNAL_SETTLE_MAX_MS.  Either way, later input waits until
 * the shell has finished with the signal.
 */
static int
shell_signal(struct session *s, int sig, const ProtobufCBinaryData *cmd)
{
	uint64_t now = session_now(s);
	uint64_t since = now - s->se_last_input;

	if (cmd != NULL) {
		if (hold_line(s, cmd, 0) != 0)
			return -ENOMEM;
	} else if (s->se_last_input != 0 &&
	           proc_foreground_is_leader(s->se_proc) &&
	           (since < SESSION_SIGNAL_SETTLE_MS ||
	            (since < SESSION_SIGNAL_SETTLE_MAX_MS &&
	             proc_input_unread(s->se_proc) > 0))) {
		s->se_held_sig = sig;
		session_hold_input(s, since < SESSION_SIGNAL_SETTLE_MS
		                          ? SESSION_SIGNAL_SETTLE_MS - since
		                          : SESSION_SIGNAL_STEP_MS);
		return 0;
	}
	shell_kill(s, sig);
	return 0;
}

/*
 * Input of a raw-terminal session: the bytes go to the pty as they are
 * (keystrokes: no newline, no line limits, no hang-up line), a window
 * size resizes the pty (the kernel sends SIGWINCH to its foreground job),
 * and a signal goes at once: with raw keystrokes the line discipline
 * already turns Ctrl-C into SIGINT, so nothing needs to settle.  0, or a
 * negative code after which input would be lost.
 */
static int
raw_input(struct session *s, const Ncgrpc__Wire__CommandGetResponse *r, int sig)
{
	const ProtobufCBinaryData *cmd = NULL;
	struct termext_window w;
	int rc;

	if (r->window != NULL) {
		if (termext_window_check(r->window->cols, r->window->rows,
		                         &w) == 0)
			proc_resize(s->se_proc, w.tw_rows, w.tw_cols);
		else
			log_warnx("ignoring a window of %ux%u from the server: "
			          "out of range",
			          (unsigned)r->window->cols,
			          (unsigned)r->window->rows);
	}
	if (r->command_case ==
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND)
		cmd = &r->csh_command;
	else if (r->command_case ==
	         NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND)
		cmd = &r->netconf_command;
	if (cmd != NULL && cmd->len > 0 &&
	    (rc = write_input(s, cmd->data, cmd->len, 0)) != 0)
		return rc;
	if (sig != 0 && s->se_proc != NULL)
		proc_kill(s->se_proc, sig);
	return 0;
}

/*
 * A shell's hang-up line and a signal in separate messages: the second of
 * the pair, within SESSION_HANGUP_PAIR_MS of the first, arms the hang-up.
 */
static void
shell_hangup_pair(struct session *s, int sig, int hup_line)
{
	uint64_t now = session_now(s), other;

	if (!hup_line && sig == 0)
		return;
	if (!proc_foreground_is_leader(s->se_proc)) {
		s->se_hup_line_at = s->se_sig_in_at = 0;
		return;
	}
	other = hup_line ? s->se_sig_in_at : s->se_hup_line_at;
	if (hup_line)
		s->se_hup_line_at = now;
	else
		s->se_sig_in_at = now;
	if (other == 0 || now - other > SESSION_HANGUP_PAIR_MS ||
	    uv_is_active((uv_handle_t *)&s->se_hangup))
		return;
	log_info("the server ended the shell session (a hang-up line and a "
	         "signal %lu ms apart)",
	         (unsigned long)(now - other));
	uv_timer_start(&s->se_hangup, on_hangup, SESSION_HANGUP_MS, 0);
}

static void
on_call_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct session *s = arg;
	Ncgrpc__Wire__CommandGetResponse *r;
	const ProtobufCBinaryData *cmd = NULL;
	int newline = 0, sig = 0, rc = 0;

	r = ncgrpc__wire__command_get_response__unpack(NULL, len, msg);
	if (r == NULL) {
		session_reason(s, "malformed CommandGet response from server");
		grpc_call_cancel(c);
		return;
	}
	if (r->command_case ==
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND)
		cmd = &r->netconf_command;
	else if (r->command_case ==
	         NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND) {
		cmd = &r->csh_command;
		newline = 1;
	}
	if (r->kill_signal > 0 && r->kill_signal < 65)
		sig = (int)r->kill_signal;
	else if (r->kill_signal != 0)
		log_warnx("ignoring kill_signal %llu: not a signal",
		          (unsigned long long)r->kill_signal);
	if (s->se_proc == NULL)
		goto out;
	if (s->se_raw) {
		rc = raw_input(s, r, sig);
		goto pause;
	}
	if (sig != 0 && cmd != NULL &&
	    is_hangup_line(s->se_type, cmd->data, cmd->len)) {
		log_info("the server hung up the %s session (line and signal "
		         "%d)",
		         session_type_name(s->se_type), sig);
		uv_timer_start(&s->se_hangup, on_hangup, SESSION_HANGUP_MS, 0);
	} else if (s->se_type == SESSION_CSH)
		shell_hangup_pair(
		    s, sig,
		    cmd != NULL && newline &&
		        is_hangup_line(s->se_type, cmd->data, cmd->len));
	if (s->se_type == SESSION_CSH && sig != 0) {
		rc = shell_signal(s, sig, cmd);
		goto out;
	}
	if (newline && cmd->len > PROC_PTY_LINE_MAX &&
	    proc_line_max(s->se_proc) != 0 &&
	    proc_foreground_is_leader(s->se_proc)) {
		/* The shell may be about to read it in raw mode: wait. */
		if ((rc = hold_line(s, cmd, SESSION_LONG_LINE_WAIT_MS)) == 0)
			session_hold_input(s, SESSION_LONG_LINE_STEP_MS);
		goto out;
	}
	if (cmd != NULL && (cmd->len > 0 || newline)) {
		if ((rc = write_input(s, cmd->data, cmd->len, newline)) != 0)
			goto out;
		if (s->se_type == SESSION_NETCONF && !s->se_hello_done &&
		    is_hello(cmd->data, cmd->len)) {
			s->se_hello_done = 1;
			session_hold_input(s, SESSION_HELLO_SETTLE_MS);
		}
	}
	if (sig != 0)
		proc_kill(s->se_proc, sig);
pause:
	/* A process that does not read stops the stream. */
	if (s->se_proc != NULL && proc_queued(s->se_proc) >= PROC_INPUT_HIWAT)
		grpc_call_pause(c);
out:
	ncgrpc__wire__command_get_response__free_unpacked(r, NULL);
	/* Input would be lost: end the session. */
	if (rc != 0)
		grpc_call_cancel(c);
}

static void session_spawn_now(struct session *s);

static void
on_call_writable(struct grpc_call *c, void *arg)
{
	struct session *s = arg;

	(void)c;
	if (s->se_spawn_pending)
		session_spawn_now(s);
	else if (s->se_proc != NULL)
		proc_resume(s->se_proc);
}

static void
on_call_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct session *s = arg;
	char why[200];

	(void)c;
	s->se_call = NULL;
	s->se_call_done = 1;
	if (s->se_spawn_pending) {
		/* Ended before its HEADERS went: no process was started. */
		s->se_spawn_pending = 0;
		s->se_proc_done = 1;
	}
	uv_timer_stop(&s->se_settle);
	s->se_settling = 0;
	s->se_held_sig = 0;
	if (status == GRPC_STATUS_OK)
		session_reason(s, "stream closed");
	else {
		snprintf(why, sizeof(why), "stream ended: %s: %s",
		         grpc_status_name(status), message);
		session_reason(s, why);
	}
	if (s->se_proc != NULL)
		proc_close(s->se_proc, SESSION_KILL_GRACE_MS);
	session_maybe_done(s);
}

static const struct grpc_call_ops session_call_ops = {
    .on_message = on_call_message,
    .on_writable = on_call_writable,
    .on_end = on_call_end,
};

/* Starting the backend. */

struct envbuf {
	char *ev_vars[16];
	size_t ev_n;
};

static void
env_add(struct envbuf *e, const char *name, const char *value)
{
	char *v;

	if (value == NULL ||
	    e->ev_n + 1 >= sizeof(e->ev_vars) / sizeof(e->ev_vars[0]))
		return;
	if (asprintf(&v, "%s=%s", name, value) < 0)
		return;
	e->ev_vars[e->ev_n++] = v;
	e->ev_vars[e->ev_n] = NULL;
}

static void
env_free(struct envbuf *e)
{
	for (size_t i = 0; i < e->ev_n; i++)
		free(e->ev_vars[i]);
	e->ev_n = 0;
}

/*
 * netconf-subsystem (yuma123) expects what sshd gives a subsystem: USER,
 * and SSH_CONNECTION whose local port netconfd accepts (830).
 */
static void
ssh_connection(char *out, size_t len, const char *peer)
{
	char host[128];
	uint16_t port;

	if (addr_parse_hostport(peer, 0, 1, host, sizeof(host), &port) != 0) {
		snprintf(host, sizeof(host), "0.0.0.0");
		port = 0;
	}
	snprintf(out, len, "%s %u 127.0.0.1 830", host, (unsigned)port);
}

static int
session_spawn(struct session *s, const struct session_env *env, uv_loop_t *loop,
              const char *peer)
{
	const char *argv[4];
	struct proc_opts po = {0};
	struct envbuf e = {0};
	struct passwd pw, *pwp = NULL;
	char pwbuf[4096], sshc[200];
	const char *home = "/", *shell = "/bin/sh", *user = env->se_user;
	int rc;

	if (user != NULL)
		getpwnam_r(user, &pw, pwbuf, sizeof(pwbuf), &pwp);
	else
		getpwuid_r(geteuid(), &pw, pwbuf, sizeof(pwbuf), &pwp);
	if (user != NULL && pwp == NULL)
		return -EINVAL;
	if (pwp != NULL) {
		home = pwp->pw_dir;
		if (pwp->pw_shell != NULL && pwp->pw_shell[0] == '/')
			shell = pwp->pw_shell;
		user = pwp->pw_name;
	}
	if (env->se_shell != NULL)
		shell = env->se_shell;
	env_add(&e, "HOME", home);
	env_add(&e, "USER", user);
	env_add(&e, "LOGNAME", user);
	env_add(&e, "SHELL", shell);
	env_add(&e, "PATH", SESSION_DEFAULT_PATH);
	env_add(&e, "LANG", "C.UTF-8");
	if (s->se_type == SESSION_CSH) {
		/* Line mode: no escape sequences in prompts. */
		env_add(&e, "TERM", s->se_raw ? s->se_term : "dumb");
		argv[0] = shell;
		argv[1] = NULL;
		po.po_pty = 1;
		po.po_cols = s->se_window.tw_cols;
		po.po_rows = s->se_window.tw_rows;
	} else {
		ssh_connection(sshc, sizeof(sshc), peer);
		env_add(&e, "SSH_CONNECTION", sshc);
		argv[0] = "/bin/sh";
		argv[1] = "-c";
		argv[2] = env->se_netconf_command;
		argv[3] = NULL;
		po.po_stderr_fd = env->se_stderr_fd;
	}
	po.po_argv = argv;
	po.po_envp = (const char *const *)e.ev_vars;
	po.po_cwd = home;
	po.po_user = env->se_user;
	rc = proc_spawn(loop, &po, &session_proc_cb, s, &s->se_proc);
	env_free(&e);
	return rc;
}

/*
 * Whether the server granted the raw-terminal extension that we offered
 * (client.c), in the Initialize trailers, and with which window and
 * terminal type.  Bad values fall back to defaults: the session still
 * works, and the server can send the size again.
 */
static void
session_terminal(struct session *s, const struct grpc_mdlist *md)
{
	const struct grpc_md *m;

	if (s->se_type != SESSION_CSH ||
	    (m = grpc_md_get(md, TERMEXT_MD_MODE)) == NULL ||
	    m->md_len != strlen(TERMEXT_RAW) ||
	    memcmp(m->md_value, TERMEXT_RAW, m->md_len) != 0)
		return;
	s->se_raw = 1;
	snprintf(s->se_term, sizeof(s->se_term), "%s", TERMEXT_TERM_DEFAULT);
	if ((m = grpc_md_get(md, TERMEXT_MD_TERM)) != NULL) {
		if (termext_term_ok(m->md_value, m->md_len))
			snprintf(s->se_term, sizeof(s->se_term), "%.*s",
			         (int)m->md_len, (const char *)m->md_value);
		else
			log_warnx("ignoring an invalid terminal type from the "
			          "server");
	}
	if ((m = grpc_md_get(md, TERMEXT_MD_WINDOW)) != NULL &&
	    termext_window_parse(m->md_value, m->md_len, &s->se_window) != 0)
		log_warnx("ignoring an invalid window size from the server");
	log_debug("raw terminal \"%s\" %ux%u granted", s->se_term,
	          (unsigned)s->se_window.tw_cols,
	          (unsigned)s->se_window.tw_rows);
}

int
session_start(struct grpc_conn *conn, enum session_type type,
              const struct grpc_mdlist *md, const struct session_env *env,
              const struct session_cb *cb, void *arg, struct session **out)
{
	struct session *s;
	int rc;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -ENOMEM;
	uv_timer_init(grpc_conn_loop(conn), &s->se_settle);
	s->se_settle.data = s;
	uv_timer_init(grpc_conn_loop(conn), &s->se_hangup);
	s->se_hangup.data = s;
	s->se_nhandles = 2;
	s->se_type = type;
	s->se_cb = cb;
	s->se_arg = arg;
	s->se_stats.ss_exit_status = -1;
	if (md != NULL)
		session_terminal(s, md);
	rc = grpc_call_start(conn, CMDGET_PATH, md, 0, &session_call_ops, s,
	                     &s->se_call);
	if (rc != 0) {
		session_close_timers(s);
		return rc;
	}
	s->se_env = env;
	s->se_spawn_pending = 1;
	grpc_call_notify_flushed(s->se_call);
	*out = s;
	return 0;
}

/*
 * The process could not be started (rc; from proc_spawn() itself when
 * checked, or from the child's exec): tells the operator why, then ends
 * the stream normally.
 */
static void
session_spawn_failed(struct session *s, int rc, int checked)
{
	const char *why = checked && rc == -EINVAL && s->se_env->se_user != NULL
	                      ? "unknown user"
	                      : ncg_strerror(rc);
	char msg[300];

	log_warnx("cannot start the %s session: %s",
	          session_type_name(s->se_type), why);
	snprintf(s->se_stats.ss_reason, sizeof(s->se_stats.ss_reason),
	         "cannot start process: %s", ncg_strerror(rc));
	s->se_proc_done = 1;
	if (s->se_call_done)
		return;
	snprintf(msg, sizeof(msg),
	         "ncgrpc-agent: cannot start the %s session: %s\n",
	         session_type_name(s->se_type), why);
	send_output(s, (const uint8_t *)msg, strlen(msg), 1);
	session_output_queued(s);
	session_close_send(s);
}

/* The HEADERS are out (on_call_writable): starts the process. */
static void
session_spawn_now(struct session *s)
{
	const struct session_env *env = s->se_env;
	struct grpc_conn *conn = grpc_call_conn(s->se_call);
	int rc;

	s->se_spawn_pending = 0;
	if ((rc = session_spawn(s, env, grpc_conn_loop(conn),
	                        grpc_conn_peer(conn))) != 0)
		session_spawn_failed(s, rc, 1);
}

void
session_stop(struct session *s, const char *why)
{
	session_reason(s, why);
	if (s->se_spawn_pending) {
		/* Not even started: the flush after the cancel must not. */
		s->se_spawn_pending = 0;
		s->se_proc_done = 1;
	}
	if (s->se_call != NULL)
		grpc_call_cancel(s->se_call);
	else if (s->se_proc != NULL)
		proc_close(s->se_proc, SESSION_KILL_GRACE_MS);
}
