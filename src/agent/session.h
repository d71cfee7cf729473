/*
 * One NETCONF or shell session of ncgrpc-agent: a NcgrpcCommandGet stream
 * joined to a backend process (proc.h).
 *
 * Output of the process goes up as NcgrpcCommandGetRequest.message, in
 * chunks of at most SESSION_CHUNK bytes of valid UTF-8 (a character is
 * never split, invalid bytes become U+FFFD).  netconf_command is written to
 * the process as is, csh_command with "\n" appended, and a nonzero
 * kill_signal goes to the process group: after the command for NETCONF;
 * for a shell first, with input held while the shell settles, so that a
 * signal never cuts a line (docs/protocol.md, "The end of a session").
 * Both ways are flow-controlled: a slow server pauses the process's
 * output, a process that does not read pauses the stream.
 *
 * The session ends when the process exits (the stream is closed with
 * status OK after the last output), when the server ends the stream (the
 * process group is killed), when the server hangs up with a line and a
 * signal together (the process is ended if it does not exit by itself
 * within a bound), or when the connection drops.  done runs once, after
 * both the stream and the process are gone.
 */
#ifndef NCGRPC_SESSION_H
#define NCGRPC_SESSION_H

#include <stdint.h>

#include "grpc.h"

/*
 * Output goes up in messages of at most this many bytes: with the 5-byte
 * gRPC prefix and the 3 bytes of the message field's tag and length, a
 * full one is 16,384 bytes, one DATA frame of the default size, which the
 * transport starts at a message boundary (grpc_call.c, call_frame_len()):
 * the server takes it from the frame without copying it.
 */
#define SESSION_CHUNK (16 * 1024 - 8)
/* PATH in the environment of every session's process. */
#define SESSION_DEFAULT_PATH                                                   \
	"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum session_type {
	SESSION_NETCONF = 0,
	SESSION_CSH = 1,
};

struct session;

struct session_env {
	const char *se_user;            /* run as this user, or NULL */
	const char *se_netconf_command; /* run with /bin/sh -c */
	const char *se_shell;           /* NULL: the user's login shell */
	int se_stderr_fd;               /* NETCONF stderr: fd or -1 */
};

struct session_stats {
	uint64_t ss_bytes_up;   /* process output sent to the server */
	uint64_t ss_bytes_down; /* server input written to the process */
	int64_t ss_exit_status; /* -1 when killed (ss_term_signal) */
	int ss_term_signal;
	char ss_reason[160]; /* why the session ended */
};

typedef void (*session_done_fn)(struct session *s,
                                const struct session_stats *st, void *arg);

struct session_cb {
	/*
	 * Once, when the first output of the process (or the reason it could
	 * not start) has been queued for the server: the operator's open is
	 * served.  The client dials its next waiting connection then, so that
	 * the handshake does not compete with the open.  May be NULL.
	 */
	void (*sc_output)(struct session *s, void *arg);
	session_done_fn sc_done; /* the session is over; s is freed after */
};

/*
 * Opens NcgrpcCommandGet on conn with request metadata md (the
 * Initialize trailers) and starts the backend for type, from the loop,
 * once the stream's HEADERS have been handed to the transport: env is
 * read then, and must stay valid until sc_done, as must cb.  Returns 0 and
 * sets *out, or a negative code: then no callback runs and nothing was
 * started.  If the
 * process cannot be started, the session still starts: it sends the
 * reason up as output and ends, so the operator sees it.
 */
int session_start(struct grpc_conn *conn, enum session_type type,
                  const struct grpc_mdlist *md, const struct session_env *env,
                  const struct session_cb *cb, void *arg, struct session **out);

/* Ends the session now (agent shutdown, client removed). sc_done follows. */
void session_stop(struct session *s, const char *why);

const char *session_type_name(enum session_type type);

/*
 * Nonzero when the server granted the session a raw terminal (the
 * extension of docs/protocol.md, "Raw terminal"), which the agent offers
 * on every Initialize: keystrokes as they come, window sizes, a real TERM.
 */
int session_is_raw(const struct session *s);

#endif
