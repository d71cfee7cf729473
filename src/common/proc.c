/*
 * Session backend processes on pipes or on a pseudo-terminal.
 *
 * uv_spawn() can give a child neither a controlling terminal nor
 * supplementary groups, so we spawn ourselves: clone(CLONE_VM |
 * CLONE_VFORK), as posix_spawn() does, rather than fork().  A fork() copies
 * the agent's page tables, which grow with its clients (7-25 ms with 1,000
 * clients under load), the parent then takes a copy-on-write fault for
 * each page it touches, and the exec tears the copy down again.  The child
 * shares our memory on a stack of its own, and this thread sleeps until
 * it has exec'd or exited.  So between clone() and execve() the child makes
 * raw system calls only: nothing that allocates or reads files (the user,
 * its groups, the PATH search, the pty are done in the parent first), and
 * no glibc set*id() wrapper, which would change the credentials of our
 * other threads too.  The child reports a failed exec through a
 * close-on-exec pipe, which makes exec failures synchronous errors of
 * proc_spawn().
 *
 * A pty master is read with read() under a uv_poll_t, not as a libuv
 * stream: libuv takes POLLHUP after a short read as end of file, and a pty
 * master both reports POLLHUP once the slave side is closed and returns at
 * most a few KiB per read while more is buffered, so a stream would drop
 * the tail of the output of every child that exits while we are behind.
 * Reads end only at EIO, which Linux returns once the buffer is empty.
 * Input goes to the pty through a libuv stream on a dup() of the master.
 *
 * The child is reaped with waitpid() on its own pid whenever SIGCHLD
 * arrives, never with waitpid(-1): other children of the agent belong to
 * others.  A program that starts children with proc_spawn() alone may
 * adopt its descendants' orphans (proc_orphans_adopt()); then the
 * processes left of a session are looked for among its descendants, not
 * in all of /proc, and the orphans are reaped here when they exit.  pc_exit
 * runs when the child is reaped and its output has reached EOF.  Background
 * processes may keep the output open forever, so once the child is gone we wait
 * at most PROC_EOF_WAIT_MS of reading time for EOF and then kill the rest of
 * the session.
 *
 * Every handle lives in struct proc; the proc is freed in the close callback
 * of its last handle, which libuv never runs from inside another callback.
 * So callers may use any function from within any callback.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "proc.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PROC_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(PROC_ASAN)
#include <sanitizer/asan_interface.h>
/*
 * The child never returns from its frames on the stack we give it, so
 * their redzones would stay poisoned in ASan's shadow for whatever is
 * mapped there next.
 */
#define child_stack_release(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define child_stack_release(p, n) ((void)(p), (void)(n))
#endif

#define PROC_READ_BUFSZ   (64 * 1024)
#define PROC_EOF_WAIT_MS  500
#define PROC_EOF_MIN_MS   50
#define PROC_DEFAULT_ROWS 24
#define PROC_DEFAULT_COLS 80
#define PROC_DEFAULT_PATH "/usr/bin:/bin"
/* The child's stack until execve(): touched a few KiB deep (more in ASan). */
#define PROC_CHILD_STACK (256 * 1024)
/* The spawner thread's stack: spawn_run() and a few system calls. */
#define PROC_SPAWNER_STACK (128 * 1024)
/* Descendants looked at by one walk; more, and /proc is scanned. */
#define PROC_WALK_MAX (64 * 1024)
/* Readings of our own children in one walk, while orphans keep coming. */
#define PROC_WALK_PASSES 8
/* Zombies reaped per SIGCHLD; the rest at the next one. */
#define PROC_REAP_MAX 1024

enum proc_state {
	PS_RUNNING,
	PS_DONE, /* pc_exit has run or runs now; handles are closing */
};

struct proc {
	uv_loop_t *p_loop;
	struct proc_cb p_cb;
	void *p_arg;
	enum proc_state p_state;
	pid_t p_pid;
	int p_pty;
	int p_master; /* pty master (closed with p_poll), or -1 */

	/* Output: the stdout pipe, or p_poll on the pty master. */
	uv_pipe_t p_out;
	uv_poll_t p_poll;
	uv_pipe_t p_in; /* stdin pipe, or a dup() of the pty master */
	uv_signal_t p_sigchld;
	uv_timer_t p_timer; /* grace period, EOF wait, deferred finish */
	int p_nhandles;     /* handles whose close callback is pending */
	int p_in_open;      /* p_in is initialised and not closed */

	int p_status; /* from waitpid() */
	int p_status_known;
	int p_reaped;
	int p_leftovers;   /* at reaping, the session had other members */
	int p_rest_killed; /* leftovers killed while awaiting EOF */
	int p_eof;
	int p_paused;
	int p_closing;       /* proc_close() was called */
	uint64_t p_eof_left; /* reading time left to wait for EOF */

	int p_in_closed;   /* no more proc_write() */
	int p_in_draining; /* close p_in once the writes are done */
	size_t p_queued;
	unsigned p_nwrites;
	int p_above_hiwat;

	/* On the list of children not reaped yet (live_procs). */
	struct proc *p_next, **p_prevp;

	/*
	 * The spawner thread is starting the child: no pid yet.  What needs
	 * the pid waits for spawn_done(): signals, and proc_close()'s.
	 */
	int p_spawning;
	unsigned p_grace_ms;
	int p_sigq[8];
	int p_nsigq;

	uint8_t p_rbuf[PROC_READ_BUFSZ];
};

/*
 * Our children not reaped yet, for the orphan reaper to tell them from
 * adopted ones; the loop's thread only.
 */
static struct proc *live_procs;

/* proc_orphans_adopt(): we are the reaper of our descendants' orphans. */
static struct {
	uv_signal_t o_sigchld;
	uv_timer_t o_again; /* another pass: after the first, or a full one */
	int o_on;
	size_t o_examined; /* processes the last scan looked at */
} orphans;

struct proc_wreq {
	uv_write_t w_req;
	struct proc *w_proc;
	size_t w_len;
	uint8_t w_data[];
};

/* Everything the child needs, prepared by the parent. */
struct spawn {
	char *s_path; /* argv[0] resolved through PATH */
	const char *const *s_argv;
	const char *const *s_envp;
	const char *s_cwd;
	int s_pty;
	int s_master, s_slave; /* pty */
	int s_in[2], s_out[2]; /* pipes: [0] read end, [1] write end */
	int s_err;             /* stderr of a pipe child */
	int s_devnull;
	int s_errpipe[2];
	int s_setcred;
	uid_t s_uid;
	gid_t s_gid;
	gid_t *s_groups;
	size_t s_ngroups;
	long s_maxfd; /* for closing fds without close_range() */

	/* Spawns off the loop (spawn_queue()): */
	struct spawn *s_next;
	struct proc *s_proc;
	pid_t s_result; /* spawn_run()'s */
	char *s_own;    /* our copies of argv, envp and cwd */
	int s_errdup;   /* our dup() of the caller's stderr fd */
};

/*
 * The pid of the child that the spawner thread is starting, stored by the
 * child itself (our memory: CLONE_VM) before its execve(), and cleared by
 * the thread once the pid is on the spawner's done list; so that the
 * orphan reaper can tell that child's zombie from an orphan's.
 */
static atomic_int spawning_child;

static void on_alloc(uv_handle_t *, size_t, uv_buf_t *);
static void on_read(uv_stream_t *, ssize_t, const uv_buf_t *);
static void on_pty_readable(uv_poll_t *, int, int);
static void on_timer(uv_timer_t *);

static void
closefd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/*
 * The child from clone() to execve(), in the parent's memory: raw system
 * calls only (see the top of this file); on failure errno goes to the
 * parent through s_errpipe.
 */
static void __attribute__((noreturn)) child(struct spawn *s)
{
	struct sigaction sa;
	sigset_t none;
	int efd, in, out, errfd, sig, e;
	ssize_t n;

	/* Handlers of the parent must never run here: back to defaults. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)sigaction(sig, &sa, NULL);

	/*
	 * Any of our fds may be 0, 1 or 2 when the agent runs without stdio;
	 * move those out of the way before the dup2() calls below.
	 */
	if (s->s_proc != NULL)
		atomic_store(&spawning_child, (int)getpid());
	efd = s->s_errpipe[1];
	if (efd < 3 && (efd = fcntl(efd, F_DUPFD_CLOEXEC, 3)) == -1)
		_exit(127);
	if (setsid() == -1)
		goto fail;
	if (s->s_pty) {
		in = s->s_slave;
		if (in < 3 && (in = fcntl(in, F_DUPFD_CLOEXEC, 3)) == -1)
			goto fail;
		if (ioctl(in, TIOCSCTTY, 0) == -1)
			goto fail;
		out = errfd = in;
	} else {
		in = s->s_in[0];
		out = s->s_out[1];
		errfd = s->s_err;
		if (in < 3 && (in = fcntl(in, F_DUPFD_CLOEXEC, 3)) == -1)
			goto fail;
		if (out < 3 && (out = fcntl(out, F_DUPFD_CLOEXEC, 3)) == -1)
			goto fail;
		if (errfd < 3 &&
		    (errfd = fcntl(errfd, F_DUPFD_CLOEXEC, 3)) == -1)
			goto fail;
	}
	if (dup2(in, 0) == -1 || dup2(out, 1) == -1 || dup2(errfd, 2) == -1)
		goto fail;

	/*
	 * Our own fds are close-on-exec, but other threads of the agent may
	 * open fds without O_CLOEXEC: close everything but stdio and the
	 * error pipe.
	 */
	if ((efd > 3 && close_range(3, (unsigned)efd - 1, 0) == -1) ||
	    close_range((unsigned)efd + 1, ~0U, 0) == -1) {
		for (long fd = 3; fd < s->s_maxfd; fd++)
			if (fd != efd)
				(void)close((int)fd);
	}

	if (s->s_setcred) {
		/* The syscalls: glibc's wrappers act on every thread. */
		if (syscall(SYS_setgroups, s->s_ngroups, s->s_groups) == -1 ||
		    syscall(SYS_setgid, s->s_gid) == -1 ||
		    syscall(SYS_setuid, s->s_uid) == -1)
			goto fail;
		/* Make sure that there is no way back. */
		if (s->s_uid != 0 && syscall(SYS_setuid, 0) != -1) {
			errno = EPERM;
			goto fail;
		}
	}
	/* A user without a home still gets a session, in "/", as sshd does. */
	if (chdir(s->s_cwd) == -1 && chdir("/") == -1)
		goto fail;
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) == -1)
		goto fail;
	/* execve() leaves argv and envp alone; its prototype predates const. */
	execve(s->s_path, (char *const *)(uintptr_t)s->s_argv,
	       (char *const *)(uintptr_t)s->s_envp);
fail:
	e = errno;
	do
		n = write(efd, &e, sizeof(e));
	while (n == -1 && errno == EINTR);
	_exit(127);
}

static int
child_main(void *arg)
{
	child(arg);
}

/* Looks up uid, gid and groups of user; -EINVAL if there is no such user. */
static int
cred_lookup(struct spawn *s, const char *user)
{
	struct passwd pw, *res;
	char *buf = NULL, *nbuf;
	size_t buflen = 4096;
	gid_t *groups = NULL, *ng;
	int n = 32, ngroups, rc;

	if (user[0] == '\0')
		return -EINVAL;
	for (;;) {
		if ((nbuf = realloc(buf, buflen)) == NULL) {
			free(buf);
			return -ENOMEM;
		}
		buf = nbuf;
		rc = getpwnam_r(user, &pw, buf, buflen, &res);
		if (rc != ERANGE || buflen >= 1024 * 1024)
			break;
		buflen *= 2;
	}
	if (rc != 0 || res == NULL) {
		free(buf);
		/* Some NSS modules say ENOENT or ESRCH for "no such user". */
		return rc == 0 || rc == ENOENT || rc == ESRCH ? -EINVAL : -rc;
	}
	for (;;) {
		ng = reallocarray(groups, (size_t)n, sizeof(*ng));
		if (ng == NULL) {
			free(groups);
			free(buf);
			return -ENOMEM;
		}
		groups = ng;
		ngroups = n;
		if (getgrouplist(user, pw.pw_gid, groups, &ngroups) != -1)
			break;
		/* glibc sets ngroups to the number needed. */
		n = ngroups > n ? ngroups : n * 2;
		if (n > NGROUPS_MAX) {
			/* setgroups() would refuse them anyway. */
			free(groups);
			free(buf);
			return -EINVAL;
		}
	}
	s->s_setcred = 1;
	s->s_uid = pw.pw_uid;
	s->s_gid = pw.pw_gid;
	s->s_groups = groups;
	s->s_ngroups = (size_t)ngroups;
	free(buf);
	return 0;
}

/*
 * Resolves file like execvp() would in the child, with the PATH of envp,
 * and checks that it is an executable file.  Relative PATH entries are
 * skipped: they would depend on the cwd.
 */
int
proc_path_resolve(const char *file, const char *const *envp, char **out)
{
	const char *path = PROC_DEFAULT_PATH, *dir, *end;
	char *cand;
	size_t dlen, flen = strlen(file);
	struct stat st;
	int eacces = 0;

	if (flen == 0)
		return -ENOENT;
	if (strchr(file, '/') != NULL) {
		/*
		 * What execve() would say, while we can still say it; a
		 * relative path is the child's, from its own cwd.
		 */
		if (file[0] == '/') {
			if (stat(file, &st) == -1)
				return -errno;
			if (!S_ISREG(st.st_mode) || access(file, X_OK) == -1)
				return -EACCES;
		}
		if ((*out = strdup(file)) == NULL)
			return -ENOMEM;
		return 0;
	}
	for (; *envp != NULL; envp++)
		if (strncmp(*envp, "PATH=", 5) == 0) {
			path = *envp + 5;
			break;
		}
	for (dir = path; *dir != '\0'; dir = *end == ':' ? end + 1 : end) {
		if ((end = strchr(dir, ':')) == NULL)
			end = dir + strlen(dir);
		dlen = (size_t)(end - dir);
		if (dlen == 0 || dir[0] != '/')
			continue;
		if ((cand = malloc(dlen + 1 + flen + 1)) == NULL)
			return -ENOMEM;
		memcpy(cand, dir, dlen);
		cand[dlen] = '/';
		memcpy(cand + dlen + 1, file, flen + 1);
		if (stat(cand, &st) == 0) {
			if (S_ISREG(st.st_mode) && access(cand, X_OK) == 0) {
				*out = cand;
				return 0;
			}
			eacces = 1;
		} else if (errno == EACCES)
			eacces = 1;
		free(cand);
	}
	return eacces ? -EACCES : -ENOENT;
}

static int
pty_open(struct spawn *s, unsigned short rows, unsigned short cols)
{
	struct winsize ws;
	char name[64];
	int rc;

	if ((s->s_master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) == -1)
		return -errno;
	if (grantpt(s->s_master) == -1 || unlockpt(s->s_master) == -1)
		return -errno;
	if ((rc = ptsname_r(s->s_master, name, sizeof(name))) != 0)
		return -rc;
	s->s_slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s->s_slave == -1)
		return -errno;
	memset(&ws, 0, sizeof(ws));
	ws.ws_row = rows != 0 ? rows : PROC_DEFAULT_ROWS;
	ws.ws_col = cols != 0 ? cols : PROC_DEFAULT_COLS;
	if (ioctl(s->s_master, TIOCSWINSZ, &ws) == -1)
		return -errno;
	/* Like a login: the user owns its terminal (e.g. for mesg, write). */
	if (s->s_setcred && (fchown(s->s_slave, s->s_uid, (gid_t)-1) == -1 ||
	                     fchmod(s->s_slave, 0620) == -1))
		return -errno;
	return 0;
}

static void
spawn_free(struct spawn *s)
{
	closefd(&s->s_master);
	closefd(&s->s_slave);
	closefd(&s->s_in[0]);
	closefd(&s->s_in[1]);
	closefd(&s->s_out[0]);
	closefd(&s->s_out[1]);
	closefd(&s->s_devnull);
	closefd(&s->s_errpipe[0]);
	closefd(&s->s_errpipe[1]);
	closefd(&s->s_errdup);
	free(s->s_groups);
	free(s->s_path);
	free(s->s_own);
	s->s_groups = NULL;
	s->s_path = NULL;
	s->s_own = NULL;
}

/* Creates the fds of the child and everything else it needs. */
static int
spawn_prepare(struct spawn *s, const struct proc_opts *o)
{
	int rc;

	s->s_argv = o->po_argv;
	s->s_envp = o->po_envp;
	s->s_cwd = o->po_cwd != NULL ? o->po_cwd : "/";
	s->s_pty = o->po_pty;
	if (o->po_user != NULL) {
		if ((rc = cred_lookup(s, o->po_user)) != 0)
			return rc;
		if (geteuid() != 0)
			return -EPERM;
	}
	if ((rc = proc_path_resolve(o->po_argv[0], o->po_envp, &s->s_path)) !=
	    0)
		return rc;
	if (s->s_pty) {
		if ((rc = pty_open(s, o->po_rows, o->po_cols)) != 0)
			return rc;
	} else {
		/* Checked before we open fds that could take its number. */
		if (o->po_stderr_fd >= 0 &&
		    fcntl(o->po_stderr_fd, F_GETFD) == -1)
			return -EINVAL;
		if (pipe2(s->s_in, O_CLOEXEC) == -1 ||
		    pipe2(s->s_out, O_CLOEXEC) == -1)
			return -errno;
		if (o->po_stderr_fd < 0) {
			s->s_devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
			if (s->s_devnull == -1)
				return -errno;
			s->s_err = s->s_devnull;
		} else
			s->s_err = o->po_stderr_fd;
	}
	if (pipe2(s->s_errpipe, O_CLOEXEC) == -1)
		return -errno;
	if ((s->s_maxfd = sysconf(_SC_OPEN_MAX)) < 0 || s->s_maxfd > 65536)
		s->s_maxfd = 65536;
	return 0;
}

/*
 * Forks and execs.  Returns the pid, or a negative errno when fork() or
 * anything in the child up to and including execve() failed; then the
 * child has been reaped already.
 */
static pid_t
spawn_run(struct spawn *s)
{
	sigset_t all, old;
	void *stack;
	pid_t pid;
	ssize_t n;
	int err = 0;

	stack = mmap(NULL, PROC_CHILD_STACK, PROT_READ | PROT_WRITE,
	             MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return -errno;
	/*
	 * With all signals blocked, no handler of the parent (libuv's write
	 * to its signal pipe) can run in the child before it resets them.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* Returns once the child has exec'd or exited (CLONE_VFORK). */
	pid = clone(child_main, (char *)stack + PROC_CHILD_STACK,
	            CLONE_VM | CLONE_VFORK | SIGCHLD, s);
	err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	child_stack_release(stack, PROC_CHILD_STACK);
	munmap(stack, PROC_CHILD_STACK);
	if (pid == -1)
		return -err;

	closefd(&s->s_slave);
	closefd(&s->s_in[0]);
	closefd(&s->s_out[1]);
	closefd(&s->s_devnull);
	closefd(&s->s_errdup);
	closefd(&s->s_errpipe[1]);
	do
		n = read(s->s_errpipe[0], &err, sizeof(err));
	while (n == -1 && errno == EINTR);
	if (n == 0)
		return pid;
	if (n != (ssize_t)sizeof(err) || err <= 0)
		err = EIO;
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
	return -err;
}

/* Signals the process group, and on a pty also its foreground job. */
static int
signal_group(struct proc *p, int signum)
{
	pid_t fg;
	int rc = 0, i;

	if (p->p_spawning) {
		/* For spawn_done(), in order, each signal once. */
		for (i = 0; i < p->p_nsigq; i++)
			if (p->p_sigq[i] == signum)
				return 0;
		if (p->p_nsigq ==
		    (int)(sizeof(p->p_sigq) / sizeof(p->p_sigq[0])))
			return -EAGAIN;
		p->p_sigq[p->p_nsigq++] = signum;
		return 0;
	}
	if (kill(-p->p_pid, signum) == -1)
		rc = -errno;
	/*
	 * An interactive shell puts each job in a process group of its own,
	 * so ^C and friends go to the terminal's foreground group.
	 */
	if (p->p_pty && (fg = tcgetpgrp(p->p_master)) > 0 && fg != p->p_pid &&
	    kill(-fg, signum) == 0)
		rc = 0;
	return rc;
}

/* Whether /proc/pid/stat says pid is a zombie or dead ("X"). */
static int
proc_is_dead(long pid)
{
	char path[64], buf[512], *s, state;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return 1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	/* "pid (comm) state ..."; comm may hold ')'s */
	if ((s = strrchr(buf, ')')) == NULL ||
	    sscanf(s + 1, " %c", &state) != 1)
		return 1;
	return state == 'Z' || state == 'X';
}

struct pidvec {
	pid_t *pv_v;
	size_t pv_n, pv_cap;
};

static int
pidvec_add(struct pidvec *pv, long pid)
{
	pid_t *nv;
	size_t ncap;

	if (pid <= 0 || pid > INT32_MAX)
		return 0;
	if (pv->pv_n == pv->pv_cap) {
		if (pv->pv_cap >= PROC_WALK_MAX)
			return -1;
		ncap = pv->pv_cap == 0 ? 64 : pv->pv_cap * 2;
		if ((nv = reallocarray(pv->pv_v, ncap, sizeof(*nv))) == NULL)
			return -1;
		pv->pv_v = nv;
		pv->pv_cap = ncap;
	}
	pv->pv_v[pv->pv_n++] = (pid_t)pid;
	return 0;
}

/* Adds the pids of a children file: numbers separated by spaces. */
static int
add_children_file(int fd, struct pidvec *pv)
{
	char buf[4096];
	long pid = 0;
	int in = 0;
	ssize_t n, i;

	for (;;) {
		if ((n = read(fd, buf, sizeof(buf))) == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (i = 0; i < n; i++) {
			if (buf[i] >= '0' && buf[i] <= '9') {
				if (pid < INT32_MAX)
					pid = pid * 10 + (buf[i] - '0');
				in = 1;
				continue;
			}
			if (in && pidvec_add(pv, pid) != 0)
				return -1;
			pid = 0;
			in = 0;
		}
	}
	return in ? pidvec_add(pv, pid) : 0;
}

/*
 * Adds the children of every thread of process pid, 0 for ourselves, from
 * /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN).  A process that has
 * gone meanwhile has no children to add.  -1 when the list is full.
 */
static int
add_children(pid_t pid, struct pidvec *pv)
{
	char path[64], sub[sizeof(((struct dirent *)0)->d_name) + 16];
	DIR *d;
	struct dirent *de;
	int fd, rc = 0;

	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/task");
	else
		snprintf(path, sizeof(path), "/proc/%ld/task", (long)pid);
	if ((d = opendir(path)) == NULL)
		return 0;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(sub, sizeof(sub), "%s/children", de->d_name);
		if ((fd = openat(dirfd(d), sub, O_RDONLY | O_CLOEXEC)) == -1)
			continue;
		rc = add_children_file(fd, pv);
		close(fd);
	}
	closedir(d);
	return rc;
}

static int
pid_cmp(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

	return (x > y) - (x < y);
}

static int
pid_in(const struct pidvec *sorted, pid_t pid)
{
	return sorted->pv_n > 0 && bsearch(&pid, sorted->pv_v, sorted->pv_n,
	                                   sizeof(pid), pid_cmp) != NULL;
}

/* Sorts a copy of from into to (to's old contents dropped). */
static int
pidvec_sorted(const struct pidvec *from, struct pidvec *to)
{
	size_t i;

	to->pv_n = 0;
	for (i = 0; i < from->pv_n; i++)
		if (pidvec_add(to, from->pv_v[i]) != 0)
			return -1;
	if (to->pv_n > 1)
		qsort(to->pv_v, to->pv_n, sizeof(*to->pv_v), pid_cmp);
	return 0;
}

/*
 * Every member of session sid descends from its leader, our child, and
 * orphans come back to us: so the session is among our descendants.
 * Nothing below another session's leader of ours can be in sid (its
 * descendants are in its session, or in sessions they made), so those
 * subtrees are skipped: the walk costs what the session and the orphans
 * have, not what every other session runs.  The whole tree is listed
 * before anything is signalled; and as a parent that exits during the
 * walk hands its children up to us, our own children are read again
 * until no new one turns up.  -1 when it could not be listed whole.
 */
static int
session_walk(pid_t sid, int signum)
{
	struct pidvec pv = {NULL, 0, 0}, top = {NULL, 0, 0};
	struct pidvec skip = {NULL, 0, 0}, seen = {NULL, 0, 0};
	const struct proc *p;
	size_t i, j, pass;
	int found = 0, rc = 0;

	for (p = live_procs; rc == 0 && p != NULL; p = p->p_next)
		if (p->p_pid > 0 && p->p_pid != sid)
			rc = pidvec_add(&skip, p->p_pid);
	if (skip.pv_n > 1)
		qsort(skip.pv_v, skip.pv_n, sizeof(*skip.pv_v), pid_cmp);
	for (pass = 0, i = 0; rc == 0; pass++) {
		top.pv_n = 0;
		if (pass == PROC_WALK_PASSES || add_children(0, &top) != 0 ||
		    pidvec_sorted(&pv, &seen) != 0) {
			rc = -1;
			break;
		}
		for (j = 0; rc == 0 && j < top.pv_n; j++)
			if (!pid_in(&skip, top.pv_v[j]) &&
			    !pid_in(&seen, top.pv_v[j]))
				rc = pidvec_add(&pv, top.pv_v[j]);
		if (rc != 0 || i == pv.pv_n)
			break;
		/* Down from what is new. */
		for (; rc == 0 && i < pv.pv_n; i++)
			rc = add_children(pv.pv_v[i], &pv);
	}
	orphans.o_examined = pv.pv_n;
	for (i = 0; rc == 0 && i < pv.pv_n; i++) {
		if (getsid(pv.pv_v[i]) != sid || proc_is_dead(pv.pv_v[i]))
			continue;
		found++;
		if (signum != 0)
			(void)kill(pv.pv_v[i], signum);
	}
	free(pv.pv_v);
	free(top.pv_v);
	free(skip.pv_v);
	free(seen.pv_v);
	return rc == 0 ? found : -1;
}

/*
 * Counts the live processes of session sid other than ourselves, and sends
 * them signum unless it is 0.  Jobs of an interactive shell live in process
 * groups of their own, so the process group alone does not find them.
 * It runs at every session end.  When we adopt orphans, only our
 * descendants are looked at (session_walk()); otherwise all of /proc,
 * where getsid() sorts out the processes of other sessions with one
 * system call each, and only the session's own have their /proc/PID/stat
 * read (for the zombies).
 */
static int
session_scan(pid_t sid, int signum)
{
	DIR *d;
	struct dirent *de;
	char *end;
	long pid;
	int found = 0;

	if (orphans.o_on && (found = session_walk(sid, signum)) >= 0)
		return found;
	found = 0;
	orphans.o_examined = 0;
	if ((d = opendir("/proc")) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		pid = strtol(de->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		orphans.o_examined++;
		if (pid == (long)getpid() || getsid((pid_t)pid) != sid ||
		    proc_is_dead(pid))
			continue;
		found++;
		if (signum != 0)
			(void)kill((pid_t)pid, signum);
	}
	closedir(d);
	return found;
}

/*
 * Kills whatever remains of the session.  After the child is reaped, its
 * pid is safe to use as a process group or session id only while members
 * remain: the kernel does not reuse the id of a live group or session.
 */
static void
kill_session(struct proc *p)
{
	int i;

	if (p->p_reaped && !p->p_leftovers)
		return;
	(void)signal_group(p, SIGKILL);
	/* Processes still forking could escape one pass. */
	for (i = 0; i < 3 && session_scan(p->p_pid, SIGKILL) > 0; i++)
		;
}

static void
live_link(struct proc *p)
{
	if ((p->p_next = live_procs) != NULL)
		live_procs->p_prevp = &p->p_next;
	live_procs = p;
	p->p_prevp = &live_procs;
}

static void
live_unlink(struct proc *p)
{
	if (p->p_prevp == NULL)
		return;
	if ((*p->p_prevp = p->p_next) != NULL)
		p->p_next->p_prevp = p->p_prevp;
	p->p_next = NULL;
	p->p_prevp = NULL;
}

static void
on_close(uv_handle_t *h)
{
	struct proc *p = h->data;

	if (--p->p_nhandles == 0) {
		live_unlink(p);
		free(p);
	}
}

static void
close_handle(struct proc *p, uv_handle_t *h)
{
	if (h->data == p && !uv_is_closing(h))
		uv_close(h, on_close);
}

/* The poll handle is stopped now; its fd is ours to close. */
static void
on_poll_close(uv_handle_t *h)
{
	struct proc *p = h->data;

	closefd(&p->p_master);
	on_close(h);
}

static void
close_all(struct proc *p)
{
	p->p_state = PS_DONE;
	if (p->p_pty) {
		if (p->p_poll.data == p &&
		    !uv_is_closing((uv_handle_t *)&p->p_poll))
			uv_close((uv_handle_t *)&p->p_poll, on_poll_close);
	} else
		close_handle(p, (uv_handle_t *)&p->p_out);
	if (p->p_in_open) {
		p->p_in_open = 0;
		close_handle(p, (uv_handle_t *)&p->p_in);
	}
	close_handle(p, (uv_handle_t *)&p->p_timer);
	close_handle(p, (uv_handle_t *)&p->p_sigchld);
}

/* The child is reaped and its output is done or abandoned. */
static void
finish(struct proc *p)
{
	int64_t status = -1;
	int sig = 0;

	if (p->p_state == PS_DONE)
		return;
	kill_session(p);
	p->p_state = PS_DONE;
	uv_timer_stop(&p->p_timer);
	/* When someone else reaped our child, there is nothing to report. */
	if (p->p_status_known && WIFEXITED(p->p_status))
		status = WEXITSTATUS(p->p_status);
	else if (p->p_status_known && WIFSIGNALED(p->p_status))
		sig = WTERMSIG(p->p_status);
	p->p_cb.pc_exit(p, status, sig, p->p_arg);
	close_all(p);
}

static int
reading(const struct proc *p)
{
	return p->p_state == PS_RUNNING && !p->p_eof &&
	       (!p->p_paused || p->p_closing);
}

static void
update_reading(struct proc *p)
{
	if (p->p_pty) {
		if (reading(p))
			(void)uv_poll_start(&p->p_poll, UV_READABLE,
			                    on_pty_readable);
		else
			(void)uv_poll_stop(&p->p_poll);
	} else if (reading(p))
		(void)uv_read_start((uv_stream_t *)&p->p_out, on_alloc,
		                    on_read);
	else
		(void)uv_read_stop((uv_stream_t *)&p->p_out);
}

/*
 * After the child is gone, EOF is awaited only while we read: output that
 * the caller paused is still wanted.
 */
static void
update_eof_wait(struct proc *p)
{
	if (p->p_state != PS_RUNNING || !p->p_reaped || p->p_eof ||
	    p->p_closing)
		return;
	if (reading(p)) {
		/* Whatever was left, give the reads one more chance to run. */
		if (p->p_eof_left < PROC_EOF_MIN_MS)
			p->p_eof_left = PROC_EOF_MIN_MS;
		if (!uv_is_active((uv_handle_t *)&p->p_timer))
			uv_timer_start(&p->p_timer, on_timer, p->p_eof_left, 0);
	} else if (uv_is_active((uv_handle_t *)&p->p_timer)) {
		p->p_eof_left = uv_timer_get_due_in(&p->p_timer);
		uv_timer_stop(&p->p_timer);
	}
}

/* Returns 1 when our child has been reaped now or before. */
static int
reap(struct proc *p)
{
	pid_t r;
	int status;

	if (p->p_reaped)
		return 1;
	if (p->p_spawning)
		return 0;
	do
		r = waitpid(p->p_pid, &status, WNOHANG);
	while (r == -1 && errno == EINTR);
	if (r == 0 || (r == -1 && errno != ECHILD))
		return 0;
	if (r == p->p_pid) {
		p->p_status = status;
		p->p_status_known = 1;
	}
	p->p_reaped = 1;
	live_unlink(p);
	p->p_leftovers =
	    kill(-p->p_pid, 0) == 0 || session_scan(p->p_pid, 0) > 0;
	uv_signal_stop(&p->p_sigchld);
	return 1;
}

static void
on_sigchld(uv_signal_t *h, int signum)
{
	struct proc *p = h->data;

	(void)signum;
	if (p->p_state != PS_RUNNING || !reap(p))
		return;
	if (p->p_eof || p->p_closing)
		finish(p);
	else
		update_eof_wait(p);
}

static void
on_timer(uv_timer_t *t)
{
	struct proc *p = t->data;

	if (p->p_state != PS_RUNNING)
		return;
	if (p->p_reaped) {
		/*
		 * No EOF in time: what is left of the session keeps the
		 * output open.  Kill it, then read what it wrote until EOF;
		 * only an output held open from outside the session is
		 * given up, after one more wait.  Also a finish deferred
		 * out of an API call.
		 */
		if (!p->p_closing && !p->p_eof && !p->p_rest_killed) {
			p->p_rest_killed = 1;
			kill_session(p);
			p->p_eof_left = PROC_EOF_WAIT_MS;
			update_eof_wait(p);
			return;
		}
		finish(p);
		return;
	}
	/* The grace period of proc_close() is over. */
	kill_session(p);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct proc *p = h->data;

	(void)hint;
	*buf = uv_buf_init((char *)p->p_rbuf, sizeof(p->p_rbuf));
}

/* The output is over: EOF on a pipe, or any read error. */
static void
output_end(struct proc *p)
{
	p->p_eof = 1;
	update_reading(p);
	if (p->p_reaped)
		finish(p);
}

static void
on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct proc *p = st->data;

	(void)buf;
	if (p->p_state != PS_RUNNING)
		return;
	if (n > 0) {
		if (!p->p_closing && p->p_cb.pc_output != NULL)
			p->p_cb.pc_output(p, p->p_rbuf, (size_t)n, p->p_arg);
		return;
	}
	if (n == 0)
		return;
	output_end(p);
}

/* Hands what was read to the caller (dropped after proc_close()). */
static void
deliver(struct proc *p, size_t n)
{
	if (n > 0 && !p->p_closing && p->p_cb.pc_output != NULL)
		p->p_cb.pc_output(p, p->p_rbuf, n, p->p_arg);
}

/*
 * Reads the pty master until it would block, a callback pauses us, or the
 * output ends: EIO once the slave side is closed and nothing is left.
 *
 * A pty read returns at most a few KiB, so while output flows the reads
 * are gathered in p_rbuf and handed over together: fewer, larger messages
 * upstream.  What was read goes out as soon as the master would block, so
 * a lone keystroke's echo waits for nothing.  The reads per wakeup are
 * bounded so that one busy session does not starve the loop; the poll is
 * level-triggered and comes back.
 */
static void
on_pty_readable(uv_poll_t *h, int status, int events)
{
	struct proc *p = h->data;
	size_t have = 0;
	ssize_t n;
	int i, again;

	(void)events;
	if (status < 0) {
		output_end(p);
		return;
	}
	for (i = 0; i < 32 && reading(p); i++) {
		n = read(p->p_master, p->p_rbuf + have,
		         sizeof(p->p_rbuf) - have);
		if (n > 0) {
			have += (size_t)n;
			if (have == sizeof(p->p_rbuf)) {
				deliver(p, have);
				have = 0;
			}
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		/* Before deliver(): its callbacks may change errno. */
		again = n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
		deliver(p, have);
		have = 0;
		if (again)
			return;
		if (p->p_state == PS_RUNNING)
			output_end(p);
		return;
	}
	deliver(p, have);
}

static void
on_write(uv_write_t *req, int status)
{
	struct proc_wreq *w = req->data;
	struct proc *p = w->w_proc;

	p->p_queued -= w->w_len;
	p->p_nwrites--;
	free(w);
	if (status < 0 && status != UV_ECANCELED)
		p->p_in_closed = 1;
	if (p->p_state != PS_RUNNING)
		return;
	if (p->p_in_draining && p->p_nwrites == 0 && p->p_in_open) {
		p->p_in_open = 0;
		close_handle(p, (uv_handle_t *)&p->p_in);
	}
	if (p->p_above_hiwat && p->p_queued < PROC_INPUT_LOWAT) {
		p->p_above_hiwat = 0;
		if (!p->p_closing && !p->p_in_closed &&
		    p->p_cb.pc_writable != NULL)
			p->p_cb.pc_writable(p, p->p_arg);
	}
}

static int
queue_write(struct proc *p, const uint8_t *data, size_t len)
{
	struct proc_wreq *w;
	uv_stream_t *st;
	uv_buf_t b;
	int rc;

	if (len == 0)
		return 0;
	st = (uv_stream_t *)&p->p_in;
	/*
	 * With nothing queued, what the pipe or pty takes now needs no copy;
	 * only the rest is queued.  A failure is left to uv_write(), which
	 * reports it as before.
	 */
	if (p->p_in_open && p->p_nwrites == 0 && len <= UINT_MAX) {
		b = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
		if ((rc = uv_try_write(st, &b, 1)) > 0) {
			data += rc;
			len -= (size_t)rc;
			if (len == 0)
				return 0;
		}
	}
	if (len > UINT_MAX || len > SIZE_MAX - sizeof(*w) ||
	    (w = malloc(sizeof(*w) + len)) == NULL)
		return -ENOMEM;
	memcpy(w->w_data, data, len);
	w->w_proc = p;
	w->w_len = len;
	w->w_req.data = w;
	b = uv_buf_init((char *)w->w_data, (unsigned)len);
	if (!p->p_in_open ||
	    (rc = uv_write(&w->w_req, st, &b, 1, on_write)) != 0) {
		rc = p->p_in_open ? rc : UV_EPIPE;
		free(w);
		return rc == UV_ENOMEM ? -ENOMEM : -EPIPE;
	}
	p->p_queued += len;
	p->p_nwrites++;
	if (p->p_queued >= PROC_INPUT_HIWAT)
		p->p_above_hiwat = 1;
	return 0;
}

/* A child we cannot watch: it goes, with its group, and is reaped. */
static void
kill_and_reap(pid_t pid)
{
	kill(-pid, SIGKILL);
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
}

/*
 * Failure after the child started, which libuv gives no reason for: kill
 * and reap the child, and free p when its handles are closed.
 */
static void
spawn_abort(struct proc *p)
{
	live_unlink(p);
	kill_and_reap(p->p_pid);
	close_all(p);
}

static int
init_handles(struct proc *p, struct spawn *s)
{
	int rc;

	uv_timer_init(p->p_loop, &p->p_timer);
	p->p_timer.data = p;
	p->p_nhandles++;
	if (s->s_pty) {
		/* The input side gets its own fd: one fd, one watcher. */
		if ((s->s_in[1] = fcntl(s->s_master, F_DUPFD_CLOEXEC, 3)) ==
		        -1 ||
		    (rc = uv_poll_init(p->p_loop, &p->p_poll, s->s_master)) !=
		        0)
			return s->s_in[1] == -1 ? -errno : rc;
		p->p_poll.data = p;
		p->p_nhandles++;
		p->p_master = s->s_master;
		s->s_master = -1;
	} else {
		uv_pipe_init(p->p_loop, &p->p_out, 0);
		p->p_out.data = p;
		p->p_nhandles++;
		if ((rc = uv_pipe_open(&p->p_out, s->s_out[0])) != 0)
			return rc;
		s->s_out[0] = -1;
	}
	uv_pipe_init(p->p_loop, &p->p_in, 0);
	p->p_in.data = p;
	p->p_nhandles++;
	p->p_in_open = 1;
	if ((rc = uv_pipe_open(&p->p_in, s->s_in[1])) != 0)
		return rc;
	s->s_in[1] = -1;
	update_reading(p);
	return 0;
}

/* Copies the strings of vector from after *w, their pointers into v. */
static void
strv_copy(const char *const *from, const char **v, char **w)
{
	size_t n, len;

	for (n = 0; from[n] != NULL; n++) {
		len = strlen(from[n]) + 1;
		v[n] = memcpy(*w, from[n], len);
		*w += len;
	}
	v[n] = NULL;
}

/*
 * Makes s independent of the caller's opts, which are the caller's again
 * once proc_spawn() returns: argv, envp and cwd copied into one block, and
 * the stderr fd dup()ed (the caller may close it, e.g. to reopen a log).
 */
static int
spawn_own(struct spawn *s)
{
	const char **v;
	size_t na, ne, bytes = strlen(s->s_cwd) + 1;
	char *w;

	for (na = 0; s->s_argv[na] != NULL; na++)
		bytes += strlen(s->s_argv[na]) + 1;
	for (ne = 0; s->s_envp[ne] != NULL; ne++)
		bytes += strlen(s->s_envp[ne]) + 1;
	if ((s->s_own = malloc((na + ne + 2) * sizeof(*v) + bytes)) == NULL)
		return -ENOMEM;
	v = (const char **)(void *)s->s_own;
	w = s->s_own + (na + ne + 2) * sizeof(*v);
	strv_copy(s->s_argv, v, &w);
	strv_copy(s->s_envp, v + na + 1, &w);
	s->s_cwd = memcpy(w, s->s_cwd, strlen(s->s_cwd) + 1);
	s->s_argv = v;
	s->s_envp = v + na + 1;
	if (!s->s_pty && s->s_err >= 0 && s->s_err != s->s_devnull) {
		if ((s->s_errdup = fcntl(s->s_err, F_DUPFD_CLOEXEC, 3)) == -1)
			return -errno;
		s->s_err = s->s_errdup;
	}
	return 0;
}

/*
 * The spawner: a thread that runs spawn_run(), so that the loop does not
 * sleep through each child's clone(), its setup and its execve().  The
 * child's parent is then that thread; waitpid() from the loop's thread
 * still reaps it, as a child of the same process.
 */
static struct {
	uv_loop_t *sp_loop;
	uv_thread_t sp_thread;
	uv_mutex_t sp_lock;
	uv_cond_t sp_cond;
	uv_async_t sp_async;
	/* Under sp_lock: to do, and done (for the loop), in order. */
	struct spawn *sp_todo, **sp_todo_tail;
	struct spawn *sp_done, **sp_done_tail;
	int sp_stop;
	int sp_running; /* spawn_run() runs */
	/* The loop's thread only. */
	int sp_on;
	int sp_closing;       /* sp_async's close is pending */
	int sp_started;       /* the thread runs: from the first spawn on */
	unsigned sp_inflight; /* queued, and not back through spawn_done() */
} spawner;

static void
spawner_main(void *arg)
{
	struct spawn *s;
	sigset_t all;

	(void)arg;
	/* Signals are the loop's business. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	(void)pthread_setname_np(pthread_self(), "ncgrpc-spawn");
	uv_mutex_lock(&spawner.sp_lock);
	for (;;) {
		while (spawner.sp_todo == NULL && !spawner.sp_stop)
			uv_cond_wait(&spawner.sp_cond, &spawner.sp_lock);
		if ((s = spawner.sp_todo) == NULL)
			break;
		if ((spawner.sp_todo = s->s_next) == NULL)
			spawner.sp_todo_tail = &spawner.sp_todo;
		spawner.sp_running = 1;
		uv_mutex_unlock(&spawner.sp_lock);
		s->s_result = spawn_run(s);
		uv_mutex_lock(&spawner.sp_lock);
		s->s_next = NULL;
		*spawner.sp_done_tail = s;
		spawner.sp_done_tail = &s->s_next;
		spawner.sp_running = 0;
		atomic_store(&spawning_child, 0);
		uv_async_send(&spawner.sp_async);
	}
	uv_mutex_unlock(&spawner.sp_lock);
}

/*
 * The thread starts with the first spawn: an agent that runs no session
 * has no thread for it.  Until it can start, spawns stay synchronous.
 */
static int
spawner_run(void)
{
	/* It calls no malloc() (no arena of its own) and little else. */
	uv_thread_options_t to = {UV_THREAD_HAS_STACK_SIZE, PROC_SPAWNER_STACK};

	if (!spawner.sp_started && uv_thread_create_ex(&spawner.sp_thread, &to,
	                                               spawner_main, NULL) == 0)
		spawner.sp_started = 1;
	return spawner.sp_started ? 0 : -EAGAIN;
}

/* The spawner is done with p's child: pid, or a negative errno. */
static void
spawn_done(struct proc *p, pid_t pid)
{
	int i;

	p->p_spawning = 0;
	if (pid >= 0 &&
	    uv_signal_start(&p->p_sigchld, on_sigchld, SIGCHLD) != 0) {
		kill_and_reap(pid);
		pid = -EAGAIN;
	}
	if (pid < 0) {
		p->p_state = PS_DONE;
		if (p->p_cb.pc_failed != NULL)
			p->p_cb.pc_failed(p, (int)pid, p->p_arg);
		else
			p->p_cb.pc_exit(p, 127, 0, p->p_arg);
		close_all(p);
		return;
	}
	p->p_pid = pid;
	live_link(p);
	for (i = 0; i < p->p_nsigq; i++)
		(void)signal_group(p, p->p_sigq[i]);
	p->p_nsigq = 0;
	/* The child may have died before SIGCHLD was watched. */
	if (reap(p)) {
		if (p->p_eof || p->p_closing)
			finish(p);
		else
			update_eof_wait(p);
	} else if (p->p_closing) {
		/* proc_close() while the child was starting. */
		(void)signal_group(p, SIGHUP);
		(void)signal_group(p, SIGTERM);
		(void)signal_group(p, SIGCONT);
		uv_timer_start(&p->p_timer, on_timer, p->p_grace_ms, 0);
	}
}

static void on_orphan_sigchld(uv_signal_t *h, int signum);

static void
on_spawned(uv_async_t *h)
{
	struct spawn *s, *next;
	struct proc *p;
	pid_t pid;

	(void)h;
	uv_mutex_lock(&spawner.sp_lock);
	s = spawner.sp_done;
	spawner.sp_done = NULL;
	spawner.sp_done_tail = &spawner.sp_done;
	uv_mutex_unlock(&spawner.sp_lock);
	for (; s != NULL; s = next) {
		next = s->s_next;
		p = s->s_proc;
		pid = s->s_result;
		spawn_free(s);
		free(s);
		if (--spawner.sp_inflight == 0 && spawner.sp_on)
			uv_unref((uv_handle_t *)&spawner.sp_async);
		spawn_done(p, pid);
	}
	/* Zombies left while a pid was on its way (on_orphan_sigchld()). */
	if (orphans.o_on)
		on_orphan_sigchld(&orphans.o_sigchld, SIGCHLD);
}

/*
 * proc_spawn() with the spawner on: the handles are made now, on the fds
 * that the child's stdio will be the other end of, and the spawner starts
 * the child.  s is consumed.
 */
static int
spawn_queue(struct proc *p, struct spawn *s, struct proc **out)
{
	struct spawn *sp;
	int rc;

	sp = NULL;
	if ((rc = spawn_own(s)) != 0 || (sp = malloc(sizeof(*sp))) == NULL ||
	    (rc = uv_signal_init(p->p_loop, &p->p_sigchld)) != 0) {
		spawn_free(s);
		free(sp);
		free(p);
		return rc != 0 ? rc : -ENOMEM;
	}
	*sp = *s;
	p->p_sigchld.data = p;
	p->p_nhandles++;
	p->p_spawning = 1;
	if ((rc = init_handles(p, sp)) != 0) {
		spawn_free(sp);
		free(sp);
		close_all(p);
		return rc;
	}
	sp->s_proc = p;
	sp->s_next = NULL;
	uv_mutex_lock(&spawner.sp_lock);
	*spawner.sp_todo_tail = sp;
	spawner.sp_todo_tail = &sp->s_next;
	uv_cond_signal(&spawner.sp_cond);
	uv_mutex_unlock(&spawner.sp_lock);
	/* The loop must wait for the child, whatever p's handles do. */
	if (spawner.sp_inflight++ == 0)
		uv_ref((uv_handle_t *)&spawner.sp_async);
	*out = p;
	return 0;
}

int
proc_spawner_start(uv_loop_t *loop)
{
	int rc;

	if (spawner.sp_on)
		return spawner.sp_loop == loop ? 0 : -EBUSY;
	if (spawner.sp_closing)
		return -EBUSY;
	if ((rc = uv_mutex_init(&spawner.sp_lock)) != 0)
		return rc;
	if ((rc = uv_cond_init(&spawner.sp_cond)) != 0) {
		uv_mutex_destroy(&spawner.sp_lock);
		return rc;
	}
	if ((rc = uv_async_init(loop, &spawner.sp_async, on_spawned)) != 0) {
		uv_cond_destroy(&spawner.sp_cond);
		uv_mutex_destroy(&spawner.sp_lock);
		return rc;
	}
	/* Referenced only while spawns are in flight (spawn_queue()). */
	uv_unref((uv_handle_t *)&spawner.sp_async);
	spawner.sp_todo = spawner.sp_done = NULL;
	spawner.sp_todo_tail = &spawner.sp_todo;
	spawner.sp_done_tail = &spawner.sp_done;
	spawner.sp_stop = 0;
	spawner.sp_inflight = 0;
	spawner.sp_started = 0;
	spawner.sp_loop = loop;
	spawner.sp_on = 1;
	return 0;
}

static void
on_spawner_closed(uv_handle_t *h)
{
	(void)h;
	spawner.sp_closing = 0;
}

void
proc_spawner_stop(void)
{
	if (!spawner.sp_on)
		return;
	uv_mutex_lock(&spawner.sp_lock);
	spawner.sp_stop = 1;
	uv_cond_signal(&spawner.sp_cond);
	uv_mutex_unlock(&spawner.sp_lock);
	/* It starts what was queued first. */
	if (spawner.sp_started)
		uv_thread_join(&spawner.sp_thread);
	spawner.sp_started = 0;
	spawner.sp_on = 0;
	on_spawned(&spawner.sp_async);
	spawner.sp_closing = 1;
	uv_close((uv_handle_t *)&spawner.sp_async, on_spawner_closed);
	uv_cond_destroy(&spawner.sp_cond);
	uv_mutex_destroy(&spawner.sp_lock);
}

int
proc_spawn(uv_loop_t *loop, const struct proc_opts *opts,
           const struct proc_cb *cb, void *arg, struct proc **out)
{
	struct spawn s;
	struct proc *p;
	pid_t pid;
	int rc;

	if (loop == NULL || opts == NULL || cb == NULL || out == NULL ||
	    cb->pc_exit == NULL || opts->po_argv == NULL ||
	    opts->po_argv[0] == NULL || opts->po_envp == NULL)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.s_master = s.s_slave = s.s_devnull = -1;
	s.s_in[0] = s.s_in[1] = s.s_out[0] = s.s_out[1] = -1;
	s.s_errpipe[0] = s.s_errpipe[1] = -1;
	s.s_err = s.s_errdup = -1;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	p->p_loop = loop;
	p->p_cb = *cb;
	p->p_arg = arg;
	p->p_master = -1;
	p->p_pty = opts->po_pty != 0;
	p->p_eof_left = PROC_EOF_WAIT_MS;
	if ((rc = spawn_prepare(&s, opts)) != 0)
		goto fail;
	if (spawner.sp_on && spawner.sp_loop == loop && spawner_run() == 0)
		return spawn_queue(p, &s, out);
	if ((pid = spawn_run(&s)) < 0) {
		rc = pid;
		goto fail;
	}
	p->p_pid = pid;
	live_link(p);
	/*
	 * Handles come after the exec, so that its failure needs no close
	 * callback.  Only uv_signal_init() can fail (the loop's signal pipe),
	 * and then the handle needs no close either.
	 */
	if ((rc = uv_signal_init(loop, &p->p_sigchld)) != 0) {
		live_unlink(p);
		kill_and_reap(pid);
		goto fail;
	}
	p->p_sigchld.data = p;
	p->p_nhandles++;
	if ((rc = init_handles(p, &s)) != 0 ||
	    (rc = uv_signal_start(&p->p_sigchld, on_sigchld, SIGCHLD)) != 0) {
		spawn_free(&s);
		spawn_abort(p);
		return rc;
	}
	spawn_free(&s);
	/* The child may have died before SIGCHLD was watched. */
	if (reap(p))
		update_eof_wait(p);
	*out = p;
	return 0;

fail:
	spawn_free(&s);
	free(p);
	return rc;
}

int
proc_write(struct proc *p, const uint8_t *data, size_t len)
{
	if (p->p_state != PS_RUNNING || p->p_closing || p->p_in_closed)
		return -EPIPE;
	return queue_write(p, data, len);
}

size_t
proc_queued(const struct proc *p)
{
	return p->p_queued;
}

void
proc_close_input(struct proc *p)
{
	struct termios t;
	uint8_t veof = 4; /* ^D */

	if (p->p_state != PS_RUNNING || p->p_in_closed)
		return;
	if (p->p_pty) {
		/* The master shares the slave's termios on Linux. */
		if (tcgetattr(p->p_master, &t) == 0 &&
		    t.c_cc[VEOF] != _POSIX_VDISABLE)
			veof = t.c_cc[VEOF];
		(void)queue_write(p, &veof, 1);
		p->p_in_closed = 1;
		return;
	}
	p->p_in_closed = 1;
	p->p_in_draining = 1;
	if (p->p_nwrites == 0 && p->p_in_open) {
		p->p_in_open = 0;
		close_handle(p, (uv_handle_t *)&p->p_in);
	}
}

void
proc_pause(struct proc *p)
{
	if (p->p_state != PS_RUNNING)
		return;
	p->p_paused = 1;
	update_reading(p);
	update_eof_wait(p);
}

void
proc_resume(struct proc *p)
{
	if (p->p_state != PS_RUNNING)
		return;
	p->p_paused = 0;
	update_reading(p);
	update_eof_wait(p);
}

int
proc_kill(struct proc *p, int signum)
{
	if (p->p_state != PS_RUNNING)
		return -ESRCH;
	return signal_group(p, signum);
}

void
proc_close(struct proc *p, unsigned grace_ms)
{
	if (p->p_state != PS_RUNNING || p->p_closing)
		return;
	p->p_closing = 1;
	p->p_in_closed = 1;
	/* Pending input is dropped; a closed stdin also helps the child end. */
	if (p->p_in_open) {
		p->p_in_open = 0;
		close_handle(p, (uv_handle_t *)&p->p_in);
	}
	/* Keep draining (and dropping) output so no writer blocks on it. */
	update_reading(p);
	if (p->p_spawning) {
		/* The rest once there is a child (spawn_done()). */
		p->p_grace_ms = grace_ms;
		return;
	}
	if (p->p_reaped) {
		/* Not from here: the caller may be in one of our callbacks. */
		uv_timer_start(&p->p_timer, on_timer, 0, 0);
		return;
	}
	(void)signal_group(p, SIGHUP);
	(void)signal_group(p, SIGTERM);
	/* A stopped process would not see SIGTERM before SIGKILL. */
	(void)signal_group(p, SIGCONT);
	uv_timer_start(&p->p_timer, on_timer, grace_ms, 0);
}

pid_t
proc_pid(const struct proc *p)
{
	return p->p_pid;
}

size_t
proc_line_max(const struct proc *p)
{
	struct termios t;

	/* Termios requests on a master act on its slave (Linux). */
	if (!p->p_pty || p->p_state != PS_RUNNING ||
	    tcgetattr(p->p_master, &t) == -1 || !(t.c_lflag & ICANON))
		return 0;
	return PROC_PTY_LINE_MAX;
}

int
proc_foreground_is_leader(const struct proc *p)
{
	/* A child being started will be its terminal's foreground. */
	return p->p_pty && p->p_state == PS_RUNNING &&
	       (p->p_spawning || tcgetpgrp(p->p_master) == p->p_pid);
}

size_t
proc_input_unread(const struct proc *p)
{
	int fd, n = 0;

	if (!p->p_pty || p->p_state != PS_RUNNING)
		return 0;
	/*
	 * The count lives on the slave's side of the pty: open the slave
	 * from the master (no path lookup), ask, and close it again.  The
	 * child holds the slave too, so this close is not the last one; if
	 * the child has just exited, the close ends the pty as its exit did.
	 */
	fd = ioctl(p->p_master, TIOCGPTPEER,
	           O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1)
		return 0;
	if (ioctl(fd, FIONREAD, &n) == -1 || n < 0)
		n = 0;
	close(fd);
	return (size_t)n;
}

int
proc_resize(struct proc *p, unsigned short rows, unsigned short cols)
{
	struct winsize ws;

	if (!p->p_pty || p->p_state != PS_RUNNING)
		return 0;
	memset(&ws, 0, sizeof(ws));
	ws.ws_row = rows != 0 ? rows : PROC_DEFAULT_ROWS;
	ws.ws_col = cols != 0 ? cols : PROC_DEFAULT_COLS;
	if (ioctl(p->p_master, TIOCSWINSZ, &ws) == -1)
		return -errno;
	return 0;
}

/*
 * Whether pid may be the child that the spawner is starting, or one whose
 * pid it has not handed over yet (spawn_done() then makes it a proc).
 */
static int
spawner_has(pid_t pid)
{
	const struct spawn *s;
	int child, r = 0;

	if (!spawner.sp_on || spawner.sp_inflight == 0)
		return 0;
	uv_mutex_lock(&spawner.sp_lock);
	/* 0: not stored yet, or stored in a copy (valgrind makes a fork). */
	child = atomic_load(&spawning_child);
	if (spawner.sp_running && (child == 0 || child == (int)pid))
		r = 1;
	for (s = spawner.sp_done; r == 0 && s != NULL; s = s->s_next)
		if (s->s_result == pid)
			r = 1;
	uv_mutex_unlock(&spawner.sp_lock);
	return r;
}

static void
on_orphans_again(uv_timer_t *t)
{
	(void)t;
	on_orphan_sigchld(&orphans.o_sigchld, SIGCHLD);
}

/*
 * Reaps every exited child that is not one of our procs: orphans that
 * came to us.  A proc's own exit goes through its handler, whichever of
 * the SIGCHLD handlers libuv happens to run first.
 */
static void
on_orphan_sigchld(uv_signal_t *h, int signum)
{
	struct proc *p;
	siginfo_t si;
	int i;

	(void)h;
	(void)signum;
	if (!orphans.o_on)
		return;
	for (i = 0;; i++) {
		if (i == PROC_REAP_MAX) {
			/* The rest after the loop's other work. */
			uv_timer_start(&orphans.o_again, on_orphans_again, 0,
			               0);
			break;
		}
		memset(&si, 0, sizeof(si));
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (si.si_pid == 0)
			break;
		for (p = live_procs; p != NULL && p->p_pid != si.si_pid;
		     p = p->p_next)
			;
		if (p != NULL) {
			on_sigchld(&p->p_sigchld, SIGCHLD);
			/* Not reaped there: leave it to its own handler. */
			if (!p->p_reaped)
				break;
		} else if (spawner_has(si.si_pid)) {
			/* on_spawned() calls us again once it is a proc. */
			break;
		} else
			while (waitpid(si.si_pid, NULL, WNOHANG) == -1 &&
			       errno == EINTR)
				;
	}
}

int
proc_orphans_adopt(uv_loop_t *loop)
{
	char path[64];
	int rc;

	if (orphans.o_on)
		return 0;
	/* Without the children files, the walk cannot see the tree. */
	snprintf(path, sizeof(path), "/proc/self/task/%ld/children",
	         (long)syscall(SYS_gettid));
	if (access(path, R_OK) == -1)
		return -errno;
	if ((rc = uv_signal_init(loop, &orphans.o_sigchld)) != 0)
		return rc;
	uv_timer_init(loop, &orphans.o_again);
	uv_unref((uv_handle_t *)&orphans.o_again);
	if ((rc = uv_signal_start(&orphans.o_sigchld, on_orphan_sigchld,
	                          SIGCHLD)) == 0 &&
	    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1)
		rc = -errno;
	if (rc != 0) {
		uv_close((uv_handle_t *)&orphans.o_sigchld, NULL);
		uv_close((uv_handle_t *)&orphans.o_again, NULL);
		return rc;
	}
	/* Orphans alone do not keep the loop running. */
	uv_unref((uv_handle_t *)&orphans.o_sigchld);
	orphans.o_on = 1;
	/* Orphans that exited before we watched; not from inside this call. */
	uv_timer_start(&orphans.o_again, on_orphans_again, 0, 0);
	return 0;
}

void
proc_orphans_release(void)
{
	if (!orphans.o_on)
		return;
	orphans.o_on = 0;
	(void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	uv_close((uv_handle_t *)&orphans.o_sigchld, NULL);
	uv_close((uv_handle_t *)&orphans.o_again, NULL);
}

size_t
proc_scan_examined(void)
{
	return orphans.o_examined;
}
