/*
 * Session backend processes: a program on pipes (NETCONF) or on a
 * pseudo-terminal (shell), in its own session and process group, optionally
 * with the privileges of another user.  Output is read through libuv with
 * pause/resume for backpressure; input is queued.
 *
 * Contract: when proc_spawn() fails, no callback runs.  Otherwise
 * pc_exit runs exactly once, after the process has been reaped and its
 * output drained (or abandoned, see proc_close()), or, with the spawner
 * on (proc_spawner_start()), pc_failed once instead when the child could
 * not be started after all; p must not be used after either returns (it
 * is freed once its handles are closed).
 */
#ifndef NCGRPC_PROC_H
#define NCGRPC_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

struct proc;

struct proc_opts {
	/* Program and arguments; argv[0] is run through PATH of envp. */
	const char *const *po_argv;
	/* The complete environment of the child (NULL-terminated). */
	const char *const *po_envp;
	/* Working directory, or NULL for "/"; "/" when it cannot be entered. */
	const char *po_cwd;
	/* Run on a new pseudo-terminal (controlling tty, stdio = slave). */
	int po_pty;
	unsigned short po_rows, po_cols; /* pty size; 0: 24x80 */
	/*
	 * When po_user is not NULL, the child runs as that user: uid, gid,
	 * and supplementary groups looked up in the parent.  Needs root.
	 */
	const char *po_user;
	/*
	 * Where the child's stderr goes when not on a pty: -1 for
	 * /dev/null, or an fd to dup (e.g. the agent's log file).
	 */
	int po_stderr_fd;
};

struct proc_cb {
	/* Bytes the child wrote (pipe or pty master); valid during call. */
	void (*pc_output)(struct proc *p, const uint8_t *data, size_t len,
	                  void *arg);
	/* Room again: the input queue fell below PROC_INPUT_LOWAT. */
	void (*pc_writable)(struct proc *p, void *arg);
	/*
	 * The child is gone.  exit_status is its exit code, or -1 when it
	 * was killed by term_signal.  Last callback: p is gone after it.
	 */
	void (*pc_exit)(struct proc *p, int64_t exit_status, int term_signal,
	                void *arg);
	/*
	 * With the spawner on: the child failed between clone() and its
	 * execve() (err, a negative errno, e.g. -ENOEXEC), which proc_spawn()
	 * had no way to report.  Last callback.  When NULL, pc_exit runs
	 * instead with exit status 127, as a shell reports such a failure.
	 */
	void (*pc_failed)(struct proc *p, int err, void *arg);
};

#define PROC_INPUT_HIWAT (256 * 1024)
#define PROC_INPUT_LOWAT (64 * 1024)

/*
 * Starts the child.  Returns 0 and sets *out, or a negative code: -ENOENT
 * (program not found), -EACCES, -EINVAL (unknown user, bad options),
 * -EPERM (not root but po_user set), -ENOMEM, or another -errno from
 * fork/exec/openpty.  Exec failures are reported here, synchronously,
 * unless the spawner is on: then only what the parent checks before the
 * child starts (the program found and executable, the user, the pty) is,
 * and a failure in the child comes later, through pc_failed.
 */
int proc_spawn(uv_loop_t *loop, const struct proc_opts *opts,
               const struct proc_cb *cb, void *arg, struct proc **out);

/*
 * Queues len bytes for the child's stdin (copied).  Returns 0, -EPIPE when
 * the child's input is closed, or -ENOMEM.
 */
int proc_write(struct proc *p, const uint8_t *data, size_t len);
size_t proc_queued(const struct proc *p);

/* Closes the child's stdin after the queued bytes (pipes only; on a pty
 * it sends the EOF character). */
void proc_close_input(struct proc *p);

/* Stops and resumes reading the child's output. */
void proc_pause(struct proc *p);
void proc_resume(struct proc *p);

/* Sends signum to the child's whole process group.  0 or -errno. */
int proc_kill(struct proc *p, int signum);

/*
 * Ends the child: SIGHUP and SIGTERM to its process group, SIGKILL after
 * grace_ms if it is still there.  Output is no longer delivered.  pc_exit
 * still runs once the child is reaped.
 */
void proc_close(struct proc *p, unsigned grace_ms);

/* The child's pid; 0 while the spawner is still starting it. */
pid_t proc_pid(const struct proc *p);

/*
 * Nonzero when the child runs on a pty whose foreground process group is
 * the child's own: a shell waiting at its prompt, not running a job.
 */
int proc_foreground_is_leader(const struct proc *p);

/*
 * The longest input line the child can read now, without its newline: on
 * a pty in canonical mode the kernel keeps at most PROC_PTY_LINE_MAX bytes
 * of a line and drops the rest; 0 when there is no such limit (pipes, and
 * a pty in raw mode, such as bash's line editor sets while it reads).
 */
#define PROC_PTY_LINE_MAX 4095
size_t proc_line_max(const struct proc *p);

/*
 * Bytes written to the child's pty that it has not read yet (in canonical
 * mode, those of complete lines), as its own FIONREAD would say.  0
 * without a pty, once the child is gone, or when the pty cannot be asked.
 * It opens and closes the slave: for occasional checks, not every byte.
 */
size_t proc_input_unread(const struct proc *p);

/* Sets the pty window size (ignored without a pty).  0 or -errno. */
int proc_resize(struct proc *p, unsigned short rows, unsigned short cols);

/*
 * Makes this process the reaper of its descendants' orphans
 * (PR_SET_CHILD_SUBREAPER) and reaps them on loop when they exit, so that
 * what is left of a session at its end is looked for among our
 * descendants rather than in all of /proc.  For programs that start
 * children with proc_spawn() only: any other exited child is reaped here.
 * Returns 0, or -errno (e.g. a kernel without /proc/PID/task/TID/children),
 * and then sessions are scanned for in /proc as before.
 * Its handle does not keep the loop running; proc_orphans_release() undoes
 * it all, and must run before the loop closes.
 */
int proc_orphans_adopt(uv_loop_t *loop);
void proc_orphans_release(void);

/* How many processes the last search for a session's members examined. */
size_t proc_scan_examined(void);

/*
 * Has a thread start the children of proc_spawn() on loop, so that the
 * loop does not sleep through each child's clone() and execve() (about
 * 1 ms, and more on a loaded machine); the thread starts with the first
 * child.  proc_spawn() then returns
 * before the child exists: proc_pid() is 0, input is queued, signals and
 * proc_close() take effect once it has started.  proc_spawner_stop()
 * finishes what was queued (callbacks may run from it) and must run
 * before the loop closes.  0 or a negative errno (then proc_spawn() stays
 * synchronous).
 */
/*
 * The program that spawning file would run, as proc_spawn() finds it: a
 * path with a slash as given (an absolute one must be an executable
 * regular file), else the first executable regular file of that name in
 * envp's PATH (a default without one).  0 and a new string in *out,
 * -ENOENT, -EACCES or -ENOMEM.
 */
int proc_path_resolve(const char *file, const char *const *envp, char **out);

int proc_spawner_start(uv_loop_t *loop);
void proc_spawner_stop(void);

#endif
