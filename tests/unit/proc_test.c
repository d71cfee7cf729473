#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <grp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/proc.h"

#define WATCHDOG_MS 15000

static const char *const env_default[] = {"PATH=/usr/bin:/bin", "LC_ALL=C",
                                          NULL};

/* The second round of every test runs with the spawner thread on. */
static int async_spawn;

/* One test: a loop, a watchdog, and what the callbacks saw. */
struct run {
	uv_loop_t r_loop;
	uv_timer_t r_watchdog;
	uv_timer_t r_timer;
	int r_timer_used;
	struct proc *r_proc;
	uint8_t *r_out;
	size_t r_len, r_cap;
	unsigned r_outputs;
	unsigned r_writables;
	int r_exits;
	int r_expect; /* pc_exit calls that end the test */
	int64_t r_status;
	int r_signal;
	pid_t r_pid;        /* the child's, at pc_exit */
	struct proc *r_aux; /* a second proc of the test */
	size_t r_examined;  /* proc_scan_examined() at the end */
	int r_failed;       /* pc_failed's err */
	uint64_t r_t0;      /* ms */
	uint64_t r_exit_ms; /* since r_t0 */
	int r_step;
	uint64_t r_mark;
	long r_val;
	void (*r_on_output)(struct run *, struct proc *);
	void (*r_on_writable)(struct run *, struct proc *);
	void (*r_on_exit)(struct run *, struct proc *);
};

static uint64_t
now_ms(void)
{
	return uv_hrtime() / 1000000;
}

static void
on_watchdog(uv_timer_t *t)
{
	(void)t;
	fail_msg("watchdog: the test took longer than %d ms", WATCHDOG_MS);
}

static void
t_output(struct proc *p, const uint8_t *data, size_t len, void *arg)
{
	struct run *r = arg;
	size_t cap;
	uint8_t *n;

	assert_true(len > 0);
	if (r->r_len + len > r->r_cap) {
		cap = r->r_cap == 0 ? 65536 : r->r_cap;
		while (cap < r->r_len + len)
			cap *= 2;
		n = realloc(r->r_out, cap);
		assert_non_null(n);
		r->r_out = n;
		r->r_cap = cap;
	}
	memcpy(r->r_out + r->r_len, data, len);
	r->r_len += len;
	r->r_outputs++;
	if (r->r_on_output != NULL)
		r->r_on_output(r, p);
}

static void
t_writable(struct proc *p, void *arg)
{
	struct run *r = arg;

	r->r_writables++;
	if (r->r_on_writable != NULL)
		r->r_on_writable(r, p);
}

static void
t_exit(struct proc *p, int64_t status, int sig, void *arg)
{
	struct run *r = arg;

	r->r_exits++;
	r->r_status = status;
	r->r_signal = sig;
	r->r_pid = proc_pid(p);
	r->r_exit_ms = now_ms() - r->r_t0;
	if (r->r_on_exit != NULL)
		r->r_on_exit(r, p);
	if (p == r->r_proc)
		r->r_proc = NULL;
	if (p == r->r_aux)
		r->r_aux = NULL;
	if (r->r_exits == r->r_expect) {
		uv_close((uv_handle_t *)&r->r_watchdog, NULL);
		if (r->r_timer_used &&
		    !uv_is_closing((uv_handle_t *)&r->r_timer))
			uv_close((uv_handle_t *)&r->r_timer, NULL);
	}
}

/* A failed start ends the test as an exit does. */
static void
t_failed(struct proc *p, int err, void *arg)
{
	struct run *r = arg;

	r->r_failed = err;
	t_exit(p, -1, 0, arg);
}

static const struct proc_cb test_cb = {
    .pc_output = t_output,
    .pc_writable = t_writable,
    .pc_exit = t_exit,
    .pc_failed = t_failed,
};

static void
run_init(struct run *r)
{
	memset(r, 0, sizeof(*r));
	assert_int_equal(uv_loop_init(&r->r_loop), 0);
	assert_int_equal(uv_timer_init(&r->r_loop, &r->r_watchdog), 0);
	assert_int_equal(
	    uv_timer_start(&r->r_watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
	r->r_expect = 1;
	r->r_status = -2;
	r->r_t0 = now_ms();
	if (async_spawn)
		assert_int_equal(proc_spawner_start(&r->r_loop), 0);
}

static struct proc_opts
opts(const char *const *argv, int pty)
{
	struct proc_opts o;

	memset(&o, 0, sizeof(o));
	o.po_argv = argv;
	o.po_envp = env_default;
	o.po_pty = pty;
	o.po_stderr_fd = -1;
	return o;
}

static void
run_spawn(struct run *r, const struct proc_opts *o)
{
	struct proc *p = NULL;

	assert_int_equal(proc_spawn(&r->r_loop, o, &test_cb, r, &p), 0);
	assert_non_null(p);
	/* Off the loop, there is no child yet. */
	if (async_spawn)
		assert_int_equal(proc_pid(p), 0);
	else
		assert_true(proc_pid(p) > 0);
	r->r_proc = p;
}

/* No child of ours is left, not even a zombie. */
static void
assert_no_children(void)
{
	int st;

	assert_int_equal(waitpid(-1, &st, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static void
run_loop(struct run *r)
{
	uv_run(&r->r_loop, UV_RUN_DEFAULT);
	assert_int_equal(r->r_exits, r->r_expect);
}

static void
run_fini(struct run *r)
{
	proc_spawner_stop();
	if (!uv_is_closing((uv_handle_t *)&r->r_watchdog))
		uv_close((uv_handle_t *)&r->r_watchdog, NULL);
	if (r->r_timer_used && !uv_is_closing((uv_handle_t *)&r->r_timer))
		uv_close((uv_handle_t *)&r->r_timer, NULL);
	uv_run(&r->r_loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&r->r_loop), 0);
	free(r->r_out);
	r->r_out = NULL;
	assert_no_children();
}

static int
out_has(const struct run *r, const char *s)
{
	return r->r_len > 0 && memmem(r->r_out, r->r_len, s, strlen(s)) != NULL;
}

static void
assert_out(const struct run *r, const char *s)
{
	size_t n = strlen(s);

	if (r->r_len != n || memcmp(r->r_out, s, n) != 0)
		fail_msg("output \"%.*s\", expected \"%s\"", (int)r->r_len,
		         (const char *)r->r_out, s);
}

static int
count_fds(void)
{
	DIR *d;
	struct dirent *de;
	int n = 0;

	d = opendir("/proc/self/fd");
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/*
 * Waits up to 2 s for pid to be gone.  A zombie counts as gone: orphans go
 * to an init that may be slow to reap them.
 */
static int
pid_gone(pid_t pid)
{
	char path[64], buf[512], *s;
	FILE *f;
	int i, zombie;

	for (i = 0; i < 200; i++) {
		if (kill(pid, 0) == -1 && errno == ESRCH)
			return 1;
		snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
		zombie = 0;
		if ((f = fopen(path, "r")) != NULL) {
			if (fgets(buf, sizeof(buf), f) != NULL &&
			    (s = strrchr(buf, ')')) != NULL && s[1] == ' ' &&
			    s[2] == 'Z')
				zombie = 1;
			fclose(f);
		}
		if (zombie)
			return 1;
		sleep_ms(10);
	}
	return 0;
}

static long
parse_long(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	assert_int_equal(errno, 0);
	assert_true(end != s);
	return v;
}

/* Pipes: input comes back byte-exact; pc_writable after the high mark. */

static void
echo_writable(struct run *r, struct proc *p)
{
	(void)r;
	assert_true(proc_queued(p) < PROC_INPUT_LOWAT);
	proc_close_input(p);
	assert_int_equal(proc_write(p, (const uint8_t *)"x", 1), -EPIPE);
}

static void
test_cat_echo(void **state)
{
	static const char *const argv[] = {"cat", NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;
	uint8_t *in;
	size_t len = 1024 * 1024 + 256, i;

	(void)state;
	in = malloc(len);
	assert_non_null(in);
	/* Every byte value, NULs included, in many arrangements. */
	for (i = 0; i < len; i++)
		in[i] = (uint8_t)(i + (i >> 8) * 7);
	run_init(&r);
	r.r_on_writable = echo_writable;
	run_spawn(&r, &o);
	assert_int_equal(proc_write(r.r_proc, in, 0), 0);
	for (i = 0; i < len; i += 64 * 1024)
		assert_int_equal(proc_write(r.r_proc, in + i,
		                            len - i < 65536 ? len - i : 65536),
		                 0);
	assert_true(proc_queued(r.r_proc) >= PROC_INPUT_HIWAT);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_int_equal(r.r_signal, 0);
	assert_int_equal(r.r_writables, 1);
	assert_int_equal(r.r_len, len);
	assert_memory_equal(r.r_out, in, len);
	run_fini(&r);
	free(in);
}

static void
test_exit_status(void **state)
{
	static const char *const a_exit[] = {"sh", "-c", "exit 7", NULL};
	static const char *const a_kill[] = {"sh", "-c", "kill -KILL $$", NULL};
	struct proc_opts o;
	struct run r;

	(void)state;
	run_init(&r);
	o = opts(a_exit, 0);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 7);
	assert_int_equal(r.r_signal, 0);
	assert_int_equal(r.r_len, 0);
	run_fini(&r);

	run_init(&r);
	o = opts(a_kill, 0);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, -1);
	assert_int_equal(r.r_signal, SIGKILL);
	run_fini(&r);
}

static void
test_stderr(void **state)
{
	static const char *const argv[] = {"sh", "-c", "echo out; echo err >&2",
	                                   NULL};
	struct proc_opts o = opts(argv, 0);
	struct proc *p = NULL;
	struct run r;
	char buf[64];
	ssize_t n;
	int fd;

	(void)state;
	run_init(&r);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "out\n");
	run_fini(&r);

	fd = memfd_create("proc_test_stderr", MFD_CLOEXEC);
	assert_true(fd >= 0);
	run_init(&r);
	o.po_stderr_fd = fd;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "out\n");
	n = pread(fd, buf, sizeof(buf), 0);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "err\n", 4);
	close(fd);

	/* A closed fd is a bad option. */
	o.po_stderr_fd = fd;
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EINVAL);
	assert_null(p);
	run_fini(&r);
}

/* Signal dispositions and the mask start out clean; cwd defaults to "/". */
static void
test_child_defaults(void **state)
{
	static const char *const a_sig[] = {"grep", "-E", "^Sig(Blk|Ign)",
	                                    "/proc/self/status", NULL};
	static const char *const a_pwd[] = {"pwd", NULL};
	struct proc_opts o;
	struct run r;

	(void)state;
	run_init(&r);
	o = opts(a_sig, 0);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "SigBlk:\t0000000000000000\n"
	               "SigIgn:\t0000000000000000\n");
	run_fini(&r);

	run_init(&r);
	o = opts(a_pwd, 0);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "/\n");
	run_fini(&r);
}

/* 20 MB of a known pattern arrive complete and in order. */
static void
test_bulk_output(void **state)
{
#define BULK_LINE                                                              \
	"0123456789abcdefghijklmnopqrstuvwxyz"                                 \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	static const char line[] = BULK_LINE;
	static const char *const argv[] = {
	    "sh", "-c", "yes " BULK_LINE " | head -c 20000000", NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;
	uint8_t *want, md1[32], md2[32];
	size_t len = 20000000, i, ll = sizeof(line);

	(void)state;
	want = malloc(len);
	assert_non_null(want);
	for (i = 0; i < len; i++)
		want[i] = (uint8_t)(i % ll == ll - 1 ? '\n' : line[i % ll]);
	run_init(&r);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_int_equal(r.r_len, len);
	assert_int_equal(
	    EVP_Digest(r.r_out, r.r_len, md1, NULL, EVP_sha256(), NULL), 1);
	assert_int_equal(EVP_Digest(want, len, md2, NULL, EVP_sha256(), NULL),
	                 1);
	assert_memory_equal(md1, md2, sizeof(md1));
	assert_memory_equal(r.r_out, want, len);
	run_fini(&r);
	free(want);
}

static long
proc_wchar(pid_t pid)
{
	char path[64], buf[1024], *s;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/io", (long)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	s = strstr(buf, "wchar: ");
	assert_non_null(s);
	return parse_long(s + 7);
}

static void
bp_tick(uv_timer_t *t)
{
	struct run *r = t->data;
	pid_t pid = proc_pid(r->r_proc);

	r->r_step++;
	if (r->r_step == 1) {
		r->r_val = proc_wchar(pid);
		return;
	}
	if (r->r_step < 3)
		return;
	/* Paused for 300 ms: the child is blocked on a full pipe. */
	assert_int_equal(proc_wchar(pid), r->r_val);
	assert_true(r->r_val < 4000000);
	assert_int_equal(r->r_len, r->r_mark);
	uv_timer_stop(t);
	proc_resume(r->r_proc);
}

static void
bp_output(struct run *r, struct proc *p)
{
	if (r->r_outputs != 1)
		return;
	proc_pause(p);
	proc_pause(p);
	r->r_mark = r->r_len;
	r->r_timer.data = r;
	assert_int_equal(uv_timer_start(&r->r_timer, bp_tick, 100, 100), 0);
}

static void
test_backpressure(void **state)
{
	static const char *const argv[] = {"head", "-c", "4000000", "/dev/zero",
	                                   NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;
	size_t i;

	(void)state;
	run_init(&r);
	assert_int_equal(uv_timer_init(&r.r_loop, &r.r_timer), 0);
	r.r_timer_used = 1;
	r.r_on_output = bp_output;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_step, 3);
	assert_int_equal(r.r_status, 0);
	assert_int_equal(r.r_len, 4000000);
	for (i = 0; i < r.r_len; i++)
		if (r.r_out[i] != 0)
			fail_msg("byte %zu is %u", i, r.r_out[i]);
	run_fini(&r);
}

/* Output paused when the child exits is still delivered, later. */
static void
resume_tick(uv_timer_t *t)
{
	struct run *r = t->data;

	assert_int_equal(r->r_exits, 0);
	assert_int_equal(r->r_len, 0);
	proc_resume(r->r_proc);
}

static void
test_pause_across_exit(void **state)
{
	static const char *const argv[] = {"sh", "-c", "echo hello; exit 3",
	                                   NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;

	(void)state;
	run_init(&r);
	assert_int_equal(uv_timer_init(&r.r_loop, &r.r_timer), 0);
	r.r_timer_used = 1;
	r.r_timer.data = &r;
	run_spawn(&r, &o);
	proc_pause(r.r_proc);
	assert_int_equal(uv_timer_start(&r.r_timer, resume_tick, 800, 0), 0);
	run_loop(&r);
	assert_out(&r, "hello\n");
	assert_int_equal(r.r_status, 3);
	assert_true(r.r_exit_ms >= 790);
	run_fini(&r);
}

/*
 * A pty reader that falls behind must still get every byte after the child
 * exits.  The kernel keeps the slave's output after its last close, but a
 * pty master reports POLLHUP then, and returns a few KiB per read: libuv's
 * stream code took a short read plus POLLHUP for end of file and dropped
 * the rest (seen as lost tails of shell sessions).
 */
static void
slow_output(struct run *r, struct proc *p)
{
	(void)r;
	(void)p;
	sleep_ms(1);
}

static void
test_pty_slow_reader_tail(void **state)
{
	static const char *const argv[] = {"sh", "-c",
	                                   "stty -onlcr; seq 1 200000", NULL};
	struct proc_opts o = opts(argv, 1);
	struct run r;
	size_t want = 0;
	char num[16];
	int i, round;

	(void)state;
	for (i = 1; i <= 200000; i++)
		want += (size_t)snprintf(num, sizeof(num), "%d\n", i);
	for (round = 0; round < 3; round++) {
		run_init(&r);
		r.r_on_output = slow_output;
		run_spawn(&r, &o);
		run_loop(&r);
		assert_int_equal(r.r_status, 0);
		if (r.r_len != want)
			fail_msg("round %d: %zu bytes of %zu; tail \"%.*s\"",
			         round, r.r_len, want,
			         (int)(r.r_len < 20 ? r.r_len : 20),
			         (const char *)r.r_out + r.r_len -
			             (r.r_len < 20 ? r.r_len : 20));
		assert_memory_equal(r.r_out + r.r_len - 14, "199999\n200000\n",
		                    14);
		run_fini(&r);
	}
}

/*
 * The output callback may change errno (any library call does): reading
 * must not take the EAGAIN it saw before the callback for something else.
 */
static void
clobber_output(struct run *r, struct proc *p)
{
	(void)r;
	(void)p;
	errno = EBADF;
}

static void
test_pty_callback_errno(void **state)
{
	static const char *const argv[] = {
	    "sh", "-c", "echo one; sleep 0.2; echo two", NULL};
	struct proc_opts o = opts(argv, 1);
	struct run r;

	(void)state;
	run_init(&r);
	r.r_on_output = clobber_output;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_out(&r, "one\r\ntwo\r\n");
	run_fini(&r);
}

/* Splits the output at "\r\n" into at most max lines. */
static size_t
pty_lines(const struct run *r, char lines[][128], size_t max)
{
	size_t n = 0, i = 0, j;

	while (i < r->r_len && n < max) {
		for (j = i; j + 1 < r->r_len; j++)
			if (r->r_out[j] == '\r' && r->r_out[j + 1] == '\n')
				break;
		if (j + 1 >= r->r_len)
			break;
		snprintf(lines[n++], 128, "%.*s", (int)(j - i),
		         (const char *)r->r_out + i);
		i = j + 2;
	}
	return n;
}

static void
test_pty_basics(void **state)
{
	static const char *const argv[] = {
	    "sh", "-c",
	    "tty; stty size; echo $$; cut -d' ' -f6 /proc/$$/stat; "
	    "echo err >&2",
	    NULL};
	struct proc_opts o = opts(argv, 1);
	struct run r;
	char lines[8][128];
	pid_t pid;

	(void)state;
	run_init(&r);
	run_spawn(&r, &o);
	run_loop(&r);
	pid = r.r_pid;
	assert_true(pid > 0);
	assert_int_equal(r.r_status, 0);
	assert_int_equal(pty_lines(&r, lines, 8), 5);
	assert_memory_equal(lines[0], "/dev/pts/", 9);
	assert_string_equal(lines[1], "24 80");
	/* The child leads its own session. */
	assert_int_equal(parse_long(lines[2]), pid);
	assert_int_equal(parse_long(lines[3]), pid);
	assert_string_equal(lines[4], "err");
	run_fini(&r);

	o.po_rows = 40;
	o.po_cols = 132;
	run_init(&r);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(pty_lines(&r, lines, 8), 5);
	assert_string_equal(lines[1], "40 132");
	run_fini(&r);
}

static void
resize_output(struct run *r, struct proc *p)
{
	if (r->r_step == 0 && out_has(r, "30 100\r\n")) {
		r->r_step = 1;
		assert_int_equal(proc_resize(p, 50, 132), 0);
		assert_int_equal(proc_write(p, (const uint8_t *)"\n", 1), 0);
	}
}

static void
test_pty_echo_resize(void **state)
{
	static const char *const argv[] = {
	    "sh", "-c",
	    "read line; echo \"got:$line\"; stty size; read x; stty size",
	    NULL};
	static const char *const a_cat[] = {"cat", NULL};
	struct proc_opts o = opts(argv, 1);
	struct run r;

	(void)state;
	o.po_rows = 30;
	o.po_cols = 100;
	run_init(&r);
	r.r_on_output = resize_output;
	run_spawn(&r, &o);
	assert_int_equal(proc_write(r.r_proc, (const uint8_t *)"hello\n", 6),
	                 0);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	/* The terminal echoes input; the program's answer follows. */
	assert_true(out_has(&r, "hello\r\n"));
	assert_true(out_has(&r, "got:hello\r\n"));
	assert_true(out_has(&r, "30 100\r\n"));
	assert_true(out_has(&r, "50 132\r\n"));
	run_fini(&r);

	/* proc_close_input() on a pty is the EOF character. */
	o = opts(a_cat, 1);
	run_init(&r);
	run_spawn(&r, &o);
	assert_int_equal(proc_write(r.r_proc, (const uint8_t *)"abc\n", 4), 0);
	proc_close_input(r.r_proc);
	assert_int_equal(proc_write(r.r_proc, (const uint8_t *)"x", 1), -EPIPE);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_out(&r, "abc\r\nabc\r\n");
	run_fini(&r);
}

/* Returns 1 when pid runs the program called comm. */
static int
runs(pid_t pid, const char *comm)
{
	char path[64], buf[64];
	FILE *f;
	int rc = 0;

	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fgets(buf, sizeof(buf), f) != NULL)
		rc = strncmp(buf, comm, strlen(comm)) == 0 &&
		     buf[strlen(comm)] == '\n';
	fclose(f);
	return rc;
}

/*
 * SIGINT goes once sh has exec'd the foreground sleep: a shell that gets
 * SIGINT between commands may carry on, which is not what we test here.
 */
static void
kill_tick(uv_timer_t *t)
{
	struct run *r = t->data;

	if (r->r_step != 1 || !runs(proc_pid(r->r_proc), "sleep"))
		return;
	r->r_step = 2;
	r->r_mark = now_ms();
	uv_timer_stop(t);
	assert_int_equal(proc_kill(r->r_proc, SIGINT), 0);
}

static void
kill_output(struct run *r, struct proc *p)
{
	(void)p;
	if (r->r_step == 0 && out_has(r, "\n")) {
		r->r_step = 1;
		r->r_val = parse_long((const char *)r->r_out);
		r->r_timer.data = r;
		assert_int_equal(uv_timer_start(&r->r_timer, kill_tick, 0, 10),
		                 0);
	}
}

static void
test_kill(void **state)
{
	static const char *const a_sleep[] = {"sleep", "100", NULL};
	static const char *const a_bg[] = {
	    "sh", "-c", "sleep 100 & echo $!; exec sleep 100", NULL};
	struct proc_opts o = opts(a_sleep, 0);
	struct run r;

	(void)state;
	run_init(&r);
	run_spawn(&r, &o);
	assert_int_equal(proc_kill(r.r_proc, SIGINT), 0);
	run_loop(&r);
	assert_int_equal(r.r_status, -1);
	assert_int_equal(r.r_signal, SIGINT);
	assert_true(r.r_exit_ms < 1000);
	run_fini(&r);

	/*
	 * The background sleep ignores SIGINT (sh does that for "&") and
	 * keeps stdout open; it must still go when the session ends.
	 */
	o = opts(a_bg, 0);
	run_init(&r);
	assert_int_equal(uv_timer_init(&r.r_loop, &r.r_timer), 0);
	r.r_timer_used = 1;
	r.r_on_output = kill_output;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_step, 2);
	assert_int_equal(r.r_status, -1);
	assert_int_equal(r.r_signal, SIGINT);
	assert_true(now_ms() - r.r_mark < 1500);
	assert_true(r.r_val > 0);
	assert_true(pid_gone((pid_t)r.r_val));
	run_fini(&r);
}

/* The first child of pid, or 0. */
static pid_t
first_child(pid_t pid)
{
	char path[80], buf[64];
	FILE *f;
	long c = 0;

	snprintf(path, sizeof(path), "/proc/%ld/task/%ld/children", (long)pid,
	         (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fgets(buf, sizeof(buf), f) != NULL && buf[0] != '\0')
		c = strtol(buf, NULL, 10);
	fclose(f);
	return (pid_t)c;
}

/* Once the job runs in its own process group, ^C it as a terminal would. */
static void
job_tick(uv_timer_t *t)
{
	static const char cmd[] = "echo done-$((6*7))\nexit\n";
	struct run *r = t->data;
	pid_t c = first_child(proc_pid(r->r_proc));

	if (c <= 0 || !runs(c, "sleep") || getpgid(c) == proc_pid(r->r_proc))
		return;
	uv_timer_stop(t);
	r->r_val = c;
	r->r_mark = now_ms();
	assert_int_equal(proc_kill(r->r_proc, SIGINT), 0);
	assert_int_equal(
	    proc_write(r->r_proc, (const uint8_t *)cmd, sizeof(cmd) - 1), 0);
}

/*
 * An interactive shell runs each job in a process group of its own; the
 * kill signal of a session must still stop the job (docs/protocol.md: "2 =
 * SIGINT stops tail -f"), and leave the shell alone.
 */
static void
test_pty_job_control(void **state)
{
	static const char *const argv[] = {"bash", "--norc", "--noprofile",
	                                   "-i", NULL};
	static const char cmd[] = "sleep 100\n";
	struct proc_opts o = opts(argv, 1);
	struct run r;

	(void)state;
	if (access("/bin/bash", X_OK) != 0)
		skip();
	run_init(&r);
	assert_int_equal(uv_timer_init(&r.r_loop, &r.r_timer), 0);
	r.r_timer_used = 1;
	r.r_timer.data = &r;
	run_spawn(&r, &o);
	assert_int_equal(
	    proc_write(r.r_proc, (const uint8_t *)cmd, sizeof(cmd) - 1), 0);
	assert_int_equal(uv_timer_start(&r.r_timer, job_tick, 10, 10), 0);
	run_loop(&r);
	assert_true(r.r_val > 0);
	assert_int_equal(r.r_status, 0);
	assert_true(out_has(&r, "done-42"));
	assert_true(now_ms() - r.r_mark < 2000);
	assert_true(pid_gone((pid_t)r.r_val));
	run_fini(&r);
}

static void
close_output(struct run *r, struct proc *p)
{
	if (r->r_step == 0 && out_has(r, "ready\n")) {
		r->r_step = 1;
		r->r_mark = now_ms();
		proc_close(p, 300);
		proc_close(p, 0);
		assert_int_equal(proc_write(p, (const uint8_t *)"x", 1),
		                 -EPIPE);
	}
}

static void
test_close_grace(void **state)
{
	static const char *const argv[] = {
	    "sh", "-c", "trap '' TERM HUP; echo ready; sleep 100; echo late",
	    NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;
	uint64_t took;

	(void)state;
	run_init(&r);
	r.r_on_output = close_output;
	run_spawn(&r, &o);
	run_loop(&r);
	took = now_ms() - r.r_mark;
	assert_int_equal(r.r_step, 1);
	assert_int_equal(r.r_exits, 1);
	assert_int_equal(r.r_status, -1);
	assert_int_equal(r.r_signal, SIGKILL);
	assert_true(took >= 290 && took < 1500);
	assert_out(&r, "ready\n");
	run_fini(&r);
}

static void
bg_output(struct run *r, struct proc *p)
{
	(void)p;
	if (r->r_step == 0 && out_has(r, "\n")) {
		r->r_step = 1;
		r->r_val = parse_long((const char *)r->r_out);
	}
}

/* The child exits while a background process holds its stdout. */
static void
test_background_holds_output(void **state)
{
	static const char *const argv[] = {
	    "sh", "-c", "sleep 100 & echo $!; echo hi", NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;

	(void)state;
	run_init(&r);
	r.r_on_output = bg_output;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_true(r.r_exit_ms >= 400 && r.r_exit_ms < 1200);
	assert_true(out_has(&r, "\nhi\n"));
	assert_true(r.r_val > 0);
	assert_true(pid_gone((pid_t)r.r_val));
	run_fini(&r);
}

/*
 * A job in a process group of its own (job control, as an interactive
 * shell runs it) that holds nothing of the session open: the shell's exit
 * and its group are gone, yet the job is found by its session
 * (session_scan()) and killed.
 */
static void
test_job_left_in_session(void **state)
{
	/* On a pty, where sh has job control; the pid, then its group. */
	static const char *const argv[] = {
	    "sh", "-c",
	    "set -m; sleep 100 </dev/null >/dev/null 2>&1 & "
	    "echo $! $(cut -d' ' -f5 /proc/$!/stat)",
	    NULL};
	struct proc_opts o = opts(argv, 1);
	struct run r;
	char *sp;

	(void)state;
	run_init(&r);
	r.r_on_output = bg_output;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_true(r.r_val > 0);
	/* It ran in a group of its own. */
	assert_non_null(sp = memchr(r.r_out, ' ', r.r_len));
	assert_int_equal(parse_long(sp + 1), r.r_val);
	assert_true(pid_gone((pid_t)r.r_val));
	run_fini(&r);
}

/* The parent pid of pid from /proc, or -1. */
static long
parent_of(pid_t pid)
{
	char path[64], buf[512], *s;
	long ppid = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	/* "pid (comm) state ppid ..." */
	if (fgets(buf, sizeof(buf), f) != NULL &&
	    (s = strrchr(buf, ')')) != NULL &&
	    sscanf(s + 1, " %*c %ld", &ppid) != 1)
		ppid = -1;
	fclose(f);
	return ppid;
}

static void
on_reaped_poll(uv_timer_t *t)
{
	struct run *r = t->data;

	if ((kill((pid_t)r->r_val, 0) == -1 && errno == ESRCH) ||
	    now_ms() - r->r_mark > 3000)
		uv_timer_stop(t);
}

/*
 * Runs the loop until pid r_val is gone, zombie and all: only our orphan
 * reaper can reap an adopted process.  Asserts that it happened in 3 s.
 */
static void
run_until_reaped(struct run *r)
{
	if (!r->r_timer_used) {
		assert_int_equal(uv_timer_init(&r->r_loop, &r->r_timer), 0);
		r->r_timer_used = 1;
	}
	r->r_timer.data = r;
	r->r_mark = now_ms();
	assert_int_equal(uv_timer_start(&r->r_timer, on_reaped_poll, 10, 10),
	                 0);
	uv_run(&r->r_loop, UV_RUN_DEFAULT);
	assert_int_equal(kill((pid_t)r->r_val, 0), -1);
	assert_int_equal(errno, ESRCH);
}

/* The session's end: what its search examined; the neighbour may go. */
static void
oj_exit(struct run *r, struct proc *p)
{
	if (p != r->r_proc)
		return;
	assert_int_equal(r->r_status, 0);
	r->r_examined = proc_scan_examined();
	if (r->r_aux != NULL)
		proc_close(r->r_aux, 0);
}

/*
 * A job whose shell exits before the session's leader: the job's process
 * is orphaned, in a group of its own, and nothing of the session is held
 * open by it.  Beside it runs another session of three processes, which
 * the search need not look at.  Returns how many processes the search
 * examined.
 */
static size_t
orphaned_job(int adopt)
{
	static const char *const argv[] = {
	    "sh", "-c",
	    "set -m; sh -c 'sleep 100 </dev/null >/dev/null 2>&1 & echo $!'",
	    NULL};
	static const char *const a_other[] = {
	    "sh", "-c", "sleep 30 & sleep 30 & wait", NULL};
	struct proc_opts o = opts(argv, 1), other = opts(a_other, 0);
	struct run r;
	int v = 0;

	run_init(&r);
	if (adopt)
		assert_int_equal(proc_orphans_adopt(&r.r_loop), 0);
	assert_int_equal(prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0), 0);
	assert_int_equal(v, adopt);
	assert_int_equal(proc_spawn(&r.r_loop, &other, &test_cb, &r, &r.r_aux),
	                 0);
	r.r_expect = 2;
	r.r_on_output = bg_output;
	r.r_on_exit = oj_exit;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_true(r.r_val > 0);
	assert_true(pid_gone((pid_t)r.r_val));
	if (adopt) {
		/* Killed as our child, so reaped by us too. */
		run_until_reaped(&r);
		proc_orphans_release();
		assert_int_equal(prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0), 0);
		assert_int_equal(v, 0);
	}
	run_fini(&r);
	return r.r_examined;
}

/*
 * With orphans adopted, what is left of a session is found among our
 * descendants (here: the one orphan), not in all of /proc; and it is
 * still found and killed.
 */
static void
test_orphans_session_walk(void **state)
{
	size_t scan, walk;

	(void)state;
	scan = orphaned_job(0);
	walk = orphaned_job(1);
	/*
	 * All of /proc holds at least us, that orphan and the other session;
	 * the walk only the orphan (and a zombie or two of the session).
	 */
	assert_true(scan >= 5);
	if (!(walk >= 1 && walk <= 2))
		fail_msg("walk %zu scan %zu", walk, scan);
}

/*
 * A daemon started from a session leaves the session (setsid) and is
 * orphaned when the session ends: it is adopted, left alone, and reaped
 * once it exits, so no zombie stays behind.
 */
static void
test_orphans_reaped(void **state)
{
	/*
	 * The session ends only once the daemon has left it, as the daemon
	 * writes its pid after its setsid().
	 */
	static const char script[] =
	    "setsid sh -c 'echo $$ >\"$0\"; exec sleep 0.5' \"$0\" "
	    "</dev/null >/dev/null 2>&1 & "
	    "i=0; while [ ! -s \"$0\" ] && [ $i -lt 500 ]; do sleep 0.01; "
	    "i=$((i+1)); done; cat \"$0\"";
	char path[64];
	const char *argv[] = {"sh", "-c", script, path, NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/proc_test.XXXXXX");
	assert_true((fd = mkstemp(path)) >= 0);
	close(fd);
	run_init(&r);
	assert_int_equal(proc_orphans_adopt(&r.r_loop), 0);
	r.r_on_output = bg_output;
	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_true(r.r_val > 0);
	/* Not of the session, so not killed; and now ours. */
	assert_int_equal(kill((pid_t)r.r_val, 0), 0);
	assert_int_equal(parent_of((pid_t)r.r_val), (long)getpid());
	run_until_reaped(&r);
	proc_orphans_release();
	run_fini(&r);
	unlink(path);
}

static void
test_exec_failure(void **state)
{
	static const char *const a_none[] = {"ncgrpc-no-such-program", NULL};
	static const char *const a_abs[] = {"/nonexistent/ncgrpc-prog", NULL};
	static const char *const a_true[] = {"true", NULL};
	static const char *const a_dir[] = {"/tmp", NULL};
	static const char *const a_empty[] = {NULL};
	const char *a_file[2] = {NULL, NULL};
	const char *env_tmp[2] = {NULL, NULL};
	char path[64], envpath[80];
	struct proc_opts o;
	struct proc *p = NULL;
	struct run r;
	uv_signal_t sig;
	int fd, n0;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/proc_test.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
	assert_int_equal(fchmod(fd, 0644), 0);
	close(fd);

	run_init(&r);
	/* The loop's signal pipe comes with the first signal handle. */
	assert_int_equal(uv_signal_init(&r.r_loop, &sig), 0);
	uv_close((uv_handle_t *)&sig, NULL);
	uv_run(&r.r_loop, UV_RUN_NOWAIT);
	n0 = count_fds();

	o = opts(a_none, 0);
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -ENOENT);
	o = opts(a_abs, 0);
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -ENOENT);
	o = opts(a_dir, 0);
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EACCES);
	a_file[0] = path;
	o = opts(a_file, 0);
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EACCES);
	o.po_pty = 1;
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EACCES);
	/* Found through PATH but not executable. */
	a_file[0] = path + 5;
	snprintf(envpath, sizeof(envpath), "PATH=/nonexistent::tmp:/tmp");
	env_tmp[0] = envpath;
	o = opts(a_file, 0);
	o.po_envp = env_tmp;
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EACCES);
	/*
	 * A working directory that does not exist is not a failure: the child
	 * starts in "/", as sshd does for a user without a home (tested end
	 * to end by tests/agent, privilege drop to nobody).
	 */
	o = opts(a_empty, 0);
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EINVAL);
	o.po_argv = NULL;
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EINVAL);
	o = opts(a_true, 0);
	o.po_envp = NULL;
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EINVAL);
	assert_null(p);
	assert_no_children();

	uv_run(&r.r_loop, UV_RUN_NOWAIT);
	assert_int_equal(r.r_exits, 0);
	assert_int_equal(r.r_outputs, 0);
	assert_int_equal(count_fds(), n0);
	run_fini(&r);
	unlink(path);
}

/*
 * A program that passes the parent's checks (a regular file, executable)
 * but that execve() refuses: synchronously an error of proc_spawn(), off
 * the loop pc_failed, or pc_exit with 127 for a caller without pc_failed.
 */
static void
test_exec_failure_in_child(void **state)
{
	static const struct proc_cb no_failed_cb = {
	    .pc_output = t_output,
	    .pc_exit = t_exit,
	};
	const char *argv[2] = {NULL, NULL};
	char path[64];
	struct proc_opts o;
	struct proc *p = NULL;
	struct run r;
	int fd, pty;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/proc_test.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	/* Neither "#!" nor ELF: ENOEXEC. */
	assert_int_equal(write(fd, "\x01\x02garbage\n", 10), 10);
	assert_int_equal(fchmod(fd, 0755), 0);
	close(fd);
	argv[0] = path;
	for (pty = 0; pty < 2; pty++) {
		run_init(&r);
		o = opts(argv, pty);
		if (!async_spawn) {
			assert_int_equal(
			    proc_spawn(&r.r_loop, &o, &test_cb, &r, &p),
			    -ENOEXEC);
			assert_null(p);
			run_fini(&r);
			continue;
		}
		run_spawn(&r, &o);
		run_loop(&r);
		assert_int_equal(r.r_failed, -ENOEXEC);
		assert_int_equal(r.r_outputs, 0);
		run_fini(&r);

		run_init(&r);
		assert_int_equal(
		    proc_spawn(&r.r_loop, &o, &no_failed_cb, &r, &r.r_proc), 0);
		run_loop(&r);
		assert_int_equal(r.r_failed, 0);
		assert_int_equal(r.r_status, 127);
		assert_int_equal(r.r_signal, 0);
		run_fini(&r);
	}
	unlink(path);
}

/*
 * Everything a caller may do right after proc_spawn(), before the child
 * exists when the spawner starts it: input, its end, a signal, a close.
 */
static void
test_use_before_start(void **state)
{
	static const char *const a_cat[] = {"cat", NULL};
	static const char *const a_sleep[] = {"sleep", "100", NULL};
	struct proc_opts o;
	struct run r;
	int pty;

	(void)state;
	for (pty = 0; pty < 2; pty++) {
		run_init(&r);
		o = opts(a_cat, pty);
		run_spawn(&r, &o);
		assert_int_equal(
		    proc_write(r.r_proc, (const uint8_t *)"early\n", 6), 0);
		proc_close_input(r.r_proc);
		run_loop(&r);
		assert_int_equal(r.r_status, 0);
		assert_true(out_has(&r, "early"));
		run_fini(&r);
	}

	/* A signal sent before the start reaches the child. */
	run_init(&r);
	o = opts(a_sleep, 0);
	run_spawn(&r, &o);
	assert_int_equal(proc_kill(r.r_proc, SIGTERM), 0);
	run_loop(&r);
	assert_int_equal(r.r_signal, SIGTERM);
	assert_true(r.r_exit_ms < 5000);
	run_fini(&r);

	/* proc_close() before the start ends it within the grace. */
	run_init(&r);
	o = opts(a_sleep, 1);
	run_spawn(&r, &o);
	proc_close(r.r_proc, 3000);
	run_loop(&r);
	assert_true(r.r_signal == SIGHUP || r.r_signal == SIGTERM);
	assert_true(r.r_exit_ms < 2500);
	run_fini(&r);
}

static void
test_environment(void **state)
{
	static const char *const argv[] = {"env", NULL};
	static const char *const envp[] = {"PATH=/usr/bin:/bin", "FOO=bar baz",
	                                   "EMPTY=", "X=1=2", NULL};
	struct proc_opts o = opts(argv, 0);
	struct run r;

	(void)state;
	assert_int_equal(setenv("NCGRPC_PROC_TEST_LEAK", "1", 1), 0);
	o.po_envp = envp;
	run_init(&r);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "PATH=/usr/bin:/bin\nFOO=bar baz\nEMPTY=\nX=1=2\n");
	run_fini(&r);
	unsetenv("NCGRPC_PROC_TEST_LEAK");
}

static int
cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorted, without duplicates. */
static size_t
gid_set(gid_t *g, size_t n)
{
	size_t i, o = 0;

	qsort(g, n, sizeof(*g), cmp_gid);
	for (i = 0; i < n; i++)
		if (o == 0 || g[o - 1] != g[i])
			g[o++] = g[i];
	return o;
}

/* In a child that is not root: po_user needs root. */
static int
eperm_as_nobody(uid_t uid, gid_t gid)
{
	static const char *const argv[] = {"true", NULL};
	struct proc_opts o = opts(argv, 0);
	struct proc *p = NULL;
	uv_loop_t loop;
	int rc;

	if (setgroups(0, NULL) == -1 || setgid(gid) == -1 ||
	    setuid(uid) == -1 || uv_loop_init(&loop) != 0)
		return 2;
	o.po_user = "nobody";
	rc = proc_spawn(&loop, &o, &test_cb, NULL, &p);
	if (uv_loop_close(&loop) != 0)
		return 3;
	return rc == -EPERM && p == NULL ? 0 : 1;
}

static void
test_user(void **state)
{
	static const char *const argv[] = {"sh", "-c",
	                                   "id -u; id -g; id -G; pwd", NULL};
	static const char *const a_tty[] = {"sh", "-c", "stat -c %u \"$(tty)\"",
	                                    NULL};
	struct proc_opts o = opts(argv, 0);
	struct proc *p = NULL;
	struct passwd *pw;
	struct run r;
	gid_t want[64], got[64];
	int nwant = 64;
	size_t ngot = 0, nw;
	char expect[64], *s, *end, *nl;
	pid_t pid;
	int st;

	(void)state;
	run_init(&r);
	o.po_user = "ncgrpc-no-such-user";
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EINVAL);
	o.po_user = "";
	assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p), -EINVAL);
	o.po_user = "nobody";
	o.po_cwd = "/tmp";
	if (geteuid() != 0) {
		assert_int_equal(proc_spawn(&r.r_loop, &o, &test_cb, &r, &p),
		                 -EPERM);
		run_fini(&r);
		skip();
	}
	pw = getpwnam("nobody");
	assert_non_null(pw);
	if ((pid = fork()) == 0)
		_exit(eperm_as_nobody(pw->pw_uid, pw->pw_gid));
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_true(getgrouplist("nobody", pw->pw_gid, want, &nwant) >= 0);
	want[nwant++] = pw->pw_gid;
	nw = gid_set(want, (size_t)nwant);

	run_spawn(&r, &o);
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	assert_non_null(r.r_out);
	assert_true(r.r_len < r.r_cap);
	r.r_out[r.r_len] = '\0';
	s = (char *)r.r_out;
	assert_int_equal(parse_long(s), pw->pw_uid);
	assert_non_null(s = strchr(s, '\n'));
	assert_int_equal(parse_long(++s), pw->pw_gid);
	assert_non_null(s = strchr(s, '\n'));
	nl = strchr(++s, '\n');
	assert_non_null(nl);
	while (s < nl) {
		assert_true(ngot < 64);
		got[ngot++] = (gid_t)strtol(s, &end, 10);
		assert_true(end != s);
		s = end;
		while (*s == ' ')
			s++;
	}
	assert_int_equal(gid_set(got, ngot), nw);
	assert_memory_equal(got, want, nw * sizeof(gid_t));
	assert_string_equal(nl + 1, "/tmp\n");
	run_fini(&r);
	/*
	 * The child shares our memory until its exec (CLONE_VM): its
	 * privilege drop must not have touched our credentials.
	 */
	assert_int_equal(getuid(), 0);
	assert_int_equal(geteuid(), 0);
	assert_int_equal(getgid(), 0);
	assert_int_equal(getegid(), 0);

	/* The user owns its terminal. */
	o = opts(a_tty, 1);
	o.po_user = "nobody";
	run_init(&r);
	run_spawn(&r, &o);
	run_loop(&r);
	snprintf(expect, sizeof(expect), "%ld\r\n", (long)pw->pw_uid);
	assert_out(&r, expect);
	run_fini(&r);
}

static void
test_fd_leaks(void **state)
{
	static const char *const a_true[] = {"true", NULL};
	static const char *const a_ls[] = {"ls", "/proc/self/fd", NULL};
	static const char *const a_ls1[] = {"ls", "-1", "/proc/self/fd", NULL};
	struct proc_opts o;
	struct run r;
	int i, n0, leak;

	(void)state;
	/* Whatever libuv keeps for the whole process exists after this. */
	run_init(&r);
	r.r_expect = 2;
	o = opts(a_true, 0);
	run_spawn(&r, &o);
	o.po_pty = 1;
	run_spawn(&r, &o);
	run_loop(&r);
	run_fini(&r);

	n0 = count_fds();
	run_init(&r);
	r.r_expect = 50;
	for (i = 0; i < 50; i++) {
		o = opts(a_true, i % 2);
		run_spawn(&r, &o);
	}
	run_loop(&r);
	assert_int_equal(r.r_status, 0);
	run_fini(&r);
	assert_int_equal(count_fds(), n0);

	/* Any fd must be closed in the child, not only close-on-exec ones. */

	leak = open("/dev/null", O_RDONLY);
	assert_true(leak >= 0);
	run_init(&r);
	o = opts(a_ls, 0);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "0\n1\n2\n3\n");
	run_fini(&r);

	run_init(&r);
	o = opts(a_ls1, 1);
	run_spawn(&r, &o);
	run_loop(&r);
	assert_out(&r, "0\r\n1\r\n2\r\n3\r\n");
	run_fini(&r);
	close(leak);
}

static void
inner_close_output(struct run *r, struct proc *p)
{
	(void)r;
	proc_close(p, 1000);
	assert_int_equal(proc_write(p, (const uint8_t *)"x", 1), -EPIPE);
	proc_pause(p);
	proc_resume(p);
}

static void
inner_close_exit(struct run *r, struct proc *p)
{
	(void)r;
	/* Everything is a harmless no-op from within pc_exit. */
	proc_close(p, 0);
	proc_close_input(p);
	proc_pause(p);
	proc_resume(p);
	assert_int_equal(proc_kill(p, 0), -ESRCH);
	assert_int_equal(proc_write(p, (const uint8_t *)"x", 1), -EPIPE);
}

static void
test_close_from_output(void **state)
{
	static const char *const argv[] = {"yes", NULL};
	struct proc_opts o;
	struct run r;
	int pty;

	(void)state;
	for (pty = 0; pty <= 1; pty++) {
		o = opts(argv, pty);
		run_init(&r);
		r.r_on_output = inner_close_output;
		r.r_on_exit = inner_close_exit;
		run_spawn(&r, &o);
		run_loop(&r);
		assert_int_equal(r.r_outputs, 1);
		assert_int_equal(r.r_status, -1);
		assert_true(r.r_signal == SIGHUP || r.r_signal == SIGTERM);
		run_fini(&r);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cat_echo),
	    cmocka_unit_test(test_exit_status),
	    cmocka_unit_test(test_stderr),
	    cmocka_unit_test(test_child_defaults),
	    cmocka_unit_test(test_bulk_output),
	    cmocka_unit_test(test_pty_slow_reader_tail),
	    cmocka_unit_test(test_pty_callback_errno),
	    cmocka_unit_test(test_backpressure),
	    cmocka_unit_test(test_pause_across_exit),
	    cmocka_unit_test(test_pty_basics),
	    cmocka_unit_test(test_pty_echo_resize),
	    cmocka_unit_test(test_kill),
	    cmocka_unit_test(test_pty_job_control),
	    cmocka_unit_test(test_close_grace),
	    cmocka_unit_test(test_background_holds_output),
	    cmocka_unit_test(test_job_left_in_session),
	    cmocka_unit_test(test_orphans_session_walk),
	    cmocka_unit_test(test_orphans_reaped),
	    cmocka_unit_test(test_exec_failure),
	    cmocka_unit_test(test_exec_failure_in_child),
	    cmocka_unit_test(test_use_before_start),
	    cmocka_unit_test(test_environment),
	    cmocka_unit_test(test_user),
	    cmocka_unit_test(test_fd_leaks),
	    cmocka_unit_test(test_close_from_output),
	};

	/* As in the agent: a dead child's stdin must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	if (getenv("PROC_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("PROC_TEST_FILTER"));
	if (cmocka_run_group_tests_name("synchronous spawns", tests, NULL,
	                                NULL) != 0)
		return 1;
	async_spawn = 1;
	return cmocka_run_group_tests_name("spawns off the loop", tests, NULL,
	                                   NULL);
}
