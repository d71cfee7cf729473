/*
 * An agent session (src/agent/session.c) against an NMS in the same loop:
 * a grpc_server on a Unix socket in a temporary directory plays the
 * server's end of NcgrpcCommandGet, and the session runs a real process
 * through proc.c (/bin/sh -c COMMAND, or /bin/sh on a pty for a shell).
 * Asserts what reaches the NMS, how the stream ends, and the session's
 * statistics and reason; and the timers: how a hang-up escalates, and that
 * a shell's last output is drained before the stream is closed.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <uv.h>

#include "testutil.h"

#include "agent/session.h"
#include "common/err.h"
#include "common/grpc.h"
#include "common/log.h"
#include "common/utf8.h"
#include "ncgrpc_wire.pb-c.h"

#define WATCHDOG_MS 10000
#define TICK_MS     5
#define CMDGET      "/jnx.jet.netconf.Ncgrpc/NcgrpcCommandGet"

struct env {
	struct tloop e_tl;
	char e_dir[64];
	char e_path[128];

	/* the NMS */
	struct grpc_server *e_srv;
	int e_srv_done;
	struct grpc_call *e_call; /* its end of CommandGet */
	char e_out[256 * 1024];   /* process output received */
	size_t e_outlen;
	int e_half_closed; /* the device closed its side */
	size_t e_outlen_at_half_close;
	uint64_t e_t_half_close; /* uv_now() then */
	int e_call_ended;

	/* the agent */
	struct grpc_conn *e_conn;
	int e_conn_ready;
	int e_conn_closed;
	struct session *e_s;
	int e_told;           /* sc_output calls */
	size_t e_told_outlen; /* what the NMS had of the output then */
	int e_done;
	struct session_stats e_stats;
};

/* The NMS's end of CommandGet. */

static void
nms_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct env *e = arg;
	Ncgrpc__Wire__CommandGetRequest *r;

	(void)c;
	r = ncgrpc__wire__command_get_request__unpack(NULL, len, msg);
	assert_non_null(r);
	/* A proto3 string: each message whole UTF-8 on its own. */
	assert_true(utf8_valid(r->message.data, r->message.len));
	assert_true(e->e_outlen + r->message.len <= sizeof(e->e_out));
	memcpy(e->e_out + e->e_outlen, r->message.data, r->message.len);
	e->e_outlen += r->message.len;
	ncgrpc__wire__command_get_request__free_unpacked(r, NULL);
}

/* Whether the process's output so far holds text. */
static int
out_has(const struct env *e, const char *text)
{
	return memmem(e->e_out, e->e_outlen, text, strlen(text)) != NULL;
}

static void
nms_half_close(struct grpc_call *c, void *arg)
{
	struct env *e = arg;

	(void)c;
	e->e_half_closed++;
	e->e_outlen_at_half_close = e->e_outlen;
	e->e_t_half_close = uv_now(&e->e_tl.tl_loop);
}

static void
nms_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct env *e = arg;

	(void)c;
	(void)status;
	(void)message;
	e->e_call = NULL;
	e->e_call_ended++;
}

static const struct grpc_call_ops nms_call_ops = {
    .on_message = nms_message,
    .on_half_close = nms_half_close,
    .on_end = nms_end,
};

static void
h_cmdget(struct grpc_call *c, void *arg)
{
	struct env *e = arg;

	assert_null(e->e_call);
	e->e_call = c;
	grpc_call_set_ops(c, &nms_call_ops, e);
}

/* The NMS sends one NETCONF message to the process. */
static void
nms_send(struct env *e, const char *text, unsigned sig)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;

	r.command_case =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_NETCONF_COMMAND;
	r.netconf_command.data = (uint8_t *)(uintptr_t)text;
	r.netconf_command.len = strlen(text);
	r.kill_signal = sig;
	assert_non_null(e->e_call);
	assert_int_equal(grpc_call_send_pb(e->e_call, &r.base), 0);
}

/* The NMS sends one shell line (without its newline) to the shell. */
static void
nms_send_line(struct env *e, const char *line)
{
	Ncgrpc__Wire__CommandGetResponse r =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__INIT;

	r.command_case =
	    NCGRPC__WIRE__COMMAND_GET_RESPONSE__COMMAND_CSH_COMMAND;
	r.csh_command.data = (uint8_t *)(uintptr_t)line;
	r.csh_command.len = strlen(line);
	assert_non_null(e->e_call);
	assert_int_equal(grpc_call_send_pb(e->e_call, &r.base), 0);
}

/* The agent's side. */

static void
conn_ready(struct grpc_conn *conn, void *arg)
{
	struct env *e = arg;

	(void)conn;
	e->e_conn_ready = 1;
}

static void
conn_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	struct env *e = arg;

	(void)conn;
	(void)err;
	(void)reason;
	e->e_conn = NULL;
	e->e_conn_closed = 1;
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = conn_ready,
    .on_closed = conn_closed,
};

static void
session_output(struct session *s, void *arg)
{
	struct env *e = arg;

	assert_ptr_equal(s, e->e_s);
	e->e_told++;
	e->e_told_outlen = e->e_outlen;
}

static void
session_done(struct session *s, const struct session_stats *st, void *arg)
{
	struct env *e = arg;

	assert_ptr_equal(s, e->e_s);
	e->e_done++;
	e->e_stats = *st;
	e->e_s = NULL;
}

/* NMS and agent connection up, no session yet. */
static void
env_connect(struct env *e)
{
	memset(e, 0, sizeof(*e));
	tloop_init(&e->e_tl, WATCHDOG_MS, TICK_MS);
	tdir_make(e->e_dir, sizeof(e->e_dir), "session_test");
	snprintf(e->e_path, sizeof(e->e_path), "%s/nms.sock", e->e_dir);

	assert_int_equal(
	    grpc_server_new(&e->e_tl.tl_loop, NULL, NULL, e, &e->e_srv), 0);
	assert_int_equal(grpc_server_add_method(e->e_srv, CMDGET, h_cmdget, e),
	                 0);
	assert_int_equal(grpc_server_listen_unix(e->e_srv, e->e_path, 0600), 0);
	assert_int_equal(grpc_conn_connect_unix(&e->e_tl.tl_loop, e->e_path,
	                                        NULL, &conn_ops, e, &e->e_conn),
	                 0);
	RUN_UNTIL(&e->e_tl, e->e_conn_ready);
}

/* What session_start() reads when the process starts: outlives it. */
static struct session_env test_se;

/*
 * session_start() of type running command (NETCONF) or /bin/sh (a shell,
 * on a pty), as user; the loop has not run yet.
 */
static void
session_begin(struct env *e, enum session_type type, const char *command,
              const char *user)
{
	test_se.se_user = user;
	test_se.se_netconf_command = command;
	test_se.se_shell = "/bin/sh";
	test_se.se_stderr_fd = -1;
	static const struct session_cb cb = {
	    .sc_output = session_output,
	    .sc_done = session_done,
	};

	assert_int_equal(
	    session_start(e->e_conn, type, NULL, &test_se, &cb, e, &e->e_s), 0);
}

/* NMS and agent connection up; then a session, and the NMS has its call. */
static void
env_init_type(struct env *e, enum session_type type, const char *command,
              const char *user)
{
	env_connect(e);
	session_begin(e, type, command, user);
	RUN_UNTIL(&e->e_tl, e->e_call != NULL);
}

static void
env_init(struct env *e, const char *command, const char *user)
{
	env_init_type(e, SESSION_NETCONF, command, user);
}

static void
on_srv_done(void *arg)
{
	struct env *e = arg;

	e->e_srv_done = 1;
}

static void
env_done(struct env *e)
{
	if (e->e_s != NULL)
		session_stop(e->e_s, "test over");
	RUN_UNTIL(&e->e_tl, e->e_done == 1);
	if (e->e_conn != NULL)
		grpc_conn_close(e->e_conn, 0);
	RUN_UNTIL(&e->e_tl, e->e_conn_closed);
	grpc_server_shutdown(e->e_srv, 0, on_srv_done, e);
	RUN_UNTIL(&e->e_tl, e->e_srv_done);
	tloop_done(&e->e_tl);
	assert_int_equal(e->e_done, 1);
	tdir_remove(e->e_dir);
}

/* Tests */

/*
 * Input from the NMS reaches the process, its output comes back; when the
 * NMS ends the stream the process is killed and done reports both counts.
 */
static void
test_echo(void **state)
{
	static const char rpc[] = "<rpc><get/></rpc>]]>]]>";
	struct env e;

	(void)state;
	/* Killed, not ended by the EOF on its input: sleep outlives it. */
	env_init(&e, "cat; sleep 30", NULL);
	nms_send(&e, rpc, 0);
	RUN_UNTIL(&e.e_tl, e.e_outlen == sizeof(rpc) - 1);
	assert_memory_equal(e.e_out, rpc, sizeof(rpc) - 1);
	assert_int_equal(e.e_done, 0);
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_int_equal(e.e_stats.ss_bytes_down, sizeof(rpc) - 1);
	assert_int_equal(e.e_stats.ss_bytes_up, sizeof(rpc) - 1);
	assert_int_equal(e.e_stats.ss_exit_status, -1);
	assert_int_not_equal(e.e_stats.ss_term_signal, 0);
	env_done(&e);
}

/*
 * The process exits by itself: its output, with invalid UTF-8 replaced,
 * then the device closes its side and done has the exit status.
 */
static void
test_exit_status(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, "printf 'ab\\377c'; exit 3", NULL);
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	assert_int_equal(e.e_outlen, 6);
	assert_memory_equal(e.e_out,
	                    "ab\xef\xbf\xbd"
	                    "c",
	                    6);
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_int_equal(e.e_stats.ss_exit_status, 3);
	assert_int_equal(e.e_stats.ss_term_signal, 0);
	assert_non_null(strstr(e.e_stats.ss_reason, "status 3"));
	env_done(&e);
}

/* Whether this process has a child, without reaping it. */
static int
have_child(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1) {
		assert_int_equal(errno, ECHILD);
		return 0;
	}
	return 1;
}

/*
 * The process starts only once the stream's HEADERS have left: the server
 * learns of the session while the agent forks and the exec completes, not
 * after (the fork of a large agent and the exec were on the path to
 * SessionStarted).  So session_start() returns with no child yet, and the
 * child is there by the time the NMS has the call.
 */
static void
test_spawn_after_headers(void **state)
{
	static const char rpc[] = "<rpc/>]]>]]>";
	struct env e;

	(void)state;
	env_connect(&e);
	assert_false(have_child());
	session_begin(&e, SESSION_NETCONF, "cat", NULL);
	assert_false(have_child());
	RUN_UNTIL(&e.e_tl, e.e_call != NULL);
	assert_true(have_child());
	/* Input sent as soon as the NMS has the call reaches the process. */
	nms_send(&e, rpc, 0);
	RUN_UNTIL(&e.e_tl, e.e_outlen == sizeof(rpc) - 1);
	assert_memory_equal(e.e_out, rpc, sizeof(rpc) - 1);
	env_done(&e);
}

/*
 * The stream ends before its HEADERS could leave: no process is started,
 * and the session is done.
 */
static void
test_end_before_spawn(void **state)
{
	struct env e;

	(void)state;
	env_connect(&e);
	session_begin(&e, SESSION_NETCONF, "cat", NULL);
	session_stop(e.e_s, "agent stopping");
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_false(have_child());
	assert_int_equal(e.e_told, 0);
	assert_int_equal(e.e_stats.ss_exit_status, -1);
	assert_int_equal(e.e_stats.ss_term_signal, 0);
	assert_non_null(strstr(e.e_stats.ss_reason, "agent stopping"));
	env_done(&e);
}

/*
 * sc_output runs once, when the first output is queued and before any of
 * it has reached the NMS (the agent dials its next connection then, not
 * at the grant), and not at all for a process that prints nothing.
 */
static void
test_output_told_once(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, "printf a; sleep 0.05; printf b; sleep 0.05; printf c",
	         NULL);
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	assert_int_equal(e.e_outlen, 3);
	assert_memory_equal(e.e_out, "abc", 3);
	assert_int_equal(e.e_told, 1);
	assert_int_equal(e.e_told_outlen, 0);
	env_done(&e);

	env_init(&e, "sleep 0.05", NULL);
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	assert_int_equal(e.e_outlen, 0);
	assert_int_equal(e.e_told, 0);
	env_done(&e);
}

/*
 * Output that is mostly valid UTF-8, with characters cut at read and chunk
 * boundaries, invalid sequences in the middle and a character cut at the
 * very end: the NMS gets the whole of it repaired once (what
 * utf8_sanitize() makes of all of it), in order, whether a piece was sent
 * straight from the read buffer or copied and repaired.
 */
static void
test_output_utf8_mix(void **state)
{
	static uint8_t in[96 * 1024], want[3 * sizeof(in)];
	char path[] = "/tmp/session_test_utf8.XXXXXX", cmd[80];
	size_t n = 0, nwant;
	struct env e;
	int fd;

	(void)state;
	/* U+20AC, 3 bytes: 16 KiB chunks and pipe reads cut characters. */
	while (n + 3 <= 40000) {
		in[n++] = 0xe2;
		in[n++] = 0x82;
		in[n++] = 0xac;
	}
	in[n++] = 0xff; /* never valid */
	in[n++] = 'a';
	in[n++] = 0xe2; /* a bad continuation */
	in[n++] = 0x28;
	/* U+1F600, 4 bytes, then valid again for a while. */
	while (n + 4 <= 90000) {
		in[n++] = 0xf0;
		in[n++] = 0x9f;
		in[n++] = 0x98;
		in[n++] = 0x80;
	}
	in[n++] = 0xed; /* a surrogate */
	in[n++] = 0xa0;
	in[n++] = 0x80;
	memset(in + n, 'x', 1000);
	n += 1000;
	in[n++] = 0xe2; /* cut at the very end */
	in[n++] = 0x82;
	assert_true(n <= sizeof(in));
	assert_true((fd = mkstemp(path)) != -1);
	assert_int_equal(write(fd, in, n), (ssize_t)n);
	close(fd);
	snprintf(cmd, sizeof(cmd), "cat %s", path);

	env_init(&e, cmd, NULL);
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	unlink(path);
	nwant = utf8_sanitize(in, n, want);
	assert_int_equal(e.e_outlen, nwant);
	assert_memory_equal(e.e_out, want, nwant);
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_int_equal(e.e_stats.ss_bytes_up, nwant);
	env_done(&e);
}

/* A process that cannot start: the operator reads why, the stream ends. */
static void
test_unknown_user(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, "cat", "no-such-user-ncgrpc-test");
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	e.e_out[e.e_outlen < sizeof(e.e_out) ? e.e_outlen : 0] = '\0';
	assert_non_null(strstr(e.e_out, "cannot start the netconf session"));
	assert_non_null(strstr(e.e_out, "unknown user"));
	assert_int_equal(e.e_told, 1); /* the reason is the output */
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_non_null(strstr(e.e_stats.ss_reason, "cannot start process"));
	env_done(&e);
}

/* The connection drops: the process is killed, done runs once. */
static void
test_connection_drop(void **state)
{
	struct env e;

	(void)state;
	env_init(&e, "sleep 30", NULL);
	grpc_conn_close(e.e_conn, NCG_ECLOSED);
	RUN_UNTIL(&e.e_tl, e.e_done == 1 && e.e_conn_closed);
	assert_int_equal(e.e_stats.ss_exit_status, -1);
	assert_int_not_equal(e.e_stats.ss_term_signal, 0);
	assert_int_equal(e.e_stats.ss_bytes_up, 0);
	env_done(&e);
}

/*
 * The NMS hangs up as Juniper's sample server does ("<>" with SIGINT) and
 * waits; the process ignores that and every later polite signal.  The
 * session escalates: SIGINT at once, SIGHUP and SIGTERM to the process
 * group after the hang-up delay (1 s), SIGKILL half a second later, then
 * the stream is closed, all within 2 s.  The process writes down the
 * signals it sees in a file: its output is no longer read once it is
 * being ended.
 */
static void
test_hangup_escalation(void **state)
{
	char cmd[512], log[256], got[64];
	struct env e;
	uint64_t t0, took;
	FILE *f;
	size_t n;

	(void)state;
	snprintf(log, sizeof(log), "/tmp/session_test.sig.%ld", (long)getpid());
	snprintf(cmd, sizeof(cmd),
	         "for s in INT HUP TERM; do trap \"echo $s >>%s\" $s; done; "
	         "echo ready; while :; do sleep 0.05 2>/dev/null; done",
	         log);
	unlink(log);
	env_init(&e, cmd, NULL);
	RUN_UNTIL(&e.e_tl, out_has(&e, "ready"));
	t0 = uv_now(&e.e_tl.tl_loop);
	nms_send(&e, "<>", SIGINT);
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	took = e.e_t_half_close - t0;
	/* The hang-up delay (1 s) and the grace before SIGKILL (0.5 s). */
	assert_true(took >= 1400);
	assert_true(took < 2000);
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_int_equal(e.e_stats.ss_term_signal, SIGKILL);
	assert_string_equal(e.e_stats.ss_reason,
	                    "server hung up; process ended");
	env_done(&e);
	assert_non_null(f = fopen(log, "r"));
	n = fread(got, 1, sizeof(got) - 1, f);
	got[n] = '\0';
	fclose(f);
	unlink(log);
	assert_string_equal(got, "INT\nHUP\nTERM\n");
}

/* A process that leaves by itself after the hang-up is not killed. */
static void
test_hangup_exits_by_itself(void **state)
{
	struct env e;

	(void)state;
	env_init(&e,
	         "trap 'exit 0' INT; echo ready; while :; do sleep 0.05; "
	         "done",
	         NULL);
	RUN_UNTIL(&e.e_tl, out_has(&e, "ready"));
	nms_send(&e, "<>", SIGINT);
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_int_equal(e.e_stats.ss_term_signal, 0);
	assert_int_equal(e.e_stats.ss_exit_status, 0);
	env_done(&e);
}

/*
 * A shell on a pty prints a lot and exits at once: what was still in the
 * pty when the child exited is read and sent before the stream is closed,
 * and nothing comes after the close.
 */
static void
test_pty_drain_before_close(void **state)
{
	static const char tail[] = "\r\n30000\r\n";
	struct env e;
	char *p;

	(void)state;
	env_init_type(&e, SESSION_CSH, NULL, NULL);
	nms_send_line(&e, "seq 1 30000; exit");
	RUN_UNTIL(&e.e_tl, e.e_half_closed == 1);
	/* Every line, the last included, came before the half-close. */
	assert_int_equal(e.e_outlen_at_half_close, e.e_outlen);
	assert_true(e.e_outlen > sizeof(tail));
	p = memmem(e.e_out, e.e_outlen, tail, sizeof(tail) - 1);
	assert_non_null(p);
	/* The first lines too (after the echo and the prompt). */
	assert_non_null(memmem(e.e_out, e.e_outlen, "\r\n2\r\n3\r\n", 8));
	/* Nothing after the last line but the terminal's own bytes. */
	assert_true((size_t)(p - e.e_out) + sizeof(tail) - 1 + 64 >=
	            e.e_outlen);
	assert_int_equal(grpc_call_finish(e.e_call, GRPC_STATUS_OK, NULL, NULL),
	                 0);
	RUN_UNTIL(&e.e_tl, e.e_done == 1);
	assert_int_equal(e.e_stats.ss_exit_status, 0);
	assert_int_equal(e.e_stats.ss_term_signal, 0);
	assert_int_equal(e.e_stats.ss_bytes_up, e.e_outlen);
	env_done(&e);
}

/* An argument runs only the tests whose names match it (cmocka's glob). */
int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_echo),
	    cmocka_unit_test(test_exit_status),
	    cmocka_unit_test(test_unknown_user),
	    cmocka_unit_test(test_output_utf8_mix),
	    cmocka_unit_test(test_spawn_after_headers),
	    cmocka_unit_test(test_end_before_spawn),
	    cmocka_unit_test(test_output_told_once),
	    cmocka_unit_test(test_connection_drop),
	    cmocka_unit_test(test_hangup_escalation),
	    cmocka_unit_test(test_hangup_exits_by_itself),
	    cmocka_unit_test(test_pty_drain_before_close),
	};

	log_init("session_test", LOG_LEVEL_WARN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
