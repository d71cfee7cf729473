/*
 * ncgrpc, the operator CLI: what its command modules share.
 *
 * ncgrpc.c parses the global options and dispatches to one cmd_*()
 * function, which returns the process exit status.  The commands that talk
 * to ncgrpcd (devices, watch, session) reach it through opconn.c, which
 * owns the single connection to the operator socket.
 */
#ifndef NCGRPC_CLI_H
#define NCGRPC_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

struct grpc_conn;
struct grpc_call;
struct sconf;

/* Exit statuses (documented in --help and ncgrpc(1)). */
#define CLI_EXIT_OK          0
#define CLI_EXIT_FAIL        1 /* ncgrpcd refused, session failed */
#define CLI_EXIT_UNREACHABLE 2 /* the operator socket cannot be reached */
#define CLI_EXIT_USAGE       64

/* The operator service (proto/ncgrpc_operator.proto). */
#define CLI_OPSVC "/ncgrpc.operator.v1.Operator/"

/* Global options. */
struct cli {
	const char *ci_socket; /* -s, or NULL: from the configuration */
	const char *ci_config; /* -f, or the default */
	int ci_config_given;   /* -f was used */
};

/*
 * ncgrpc.c: the configuration named by -f (or the default file, missing
 * -> the defaults).  Prints the problem and returns NULL on error.  The
 * caller frees the result with sconf_free().
 */
struct sconf *cli_load_config(const struct cli *cl);

/*
 * The operator socket: -s, else operator-socket of the configuration,
 * else the default.  Returns NULL (after printing why) when the
 * configuration was needed and is broken.  The string lives until exit.
 */
const char *cli_socket_path(const struct cli *cl);

/* Usage error: prints "ncgrpc: msg" and a hint, returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Whether the arguments of a command (argv[0] is the command) ask for help
 * ("--help" or "-h" before any "--").
 */
int cli_wants_help(int argc, char **argv);

/* "ncgrpc: msg" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Writes all of buf to fd, waiting with poll() when fd is non-blocking.
 * Returns 0 or a negative errno (-EPIPE when the reader went away).
 */
int cli_write_all(int fd, const void *buf, size_t len);

/*
 * Formats a Unix time as local "YYYY-MM-DD HH:MM:SS" into buf.
 */
void cli_format_time(int64_t t, char *buf, size_t len);

/* Formats an age in seconds compactly: "45s", "3m", "2h5m", "3d4h". */
void cli_format_age(int64_t secs, char *buf, size_t len);

/* opconn.c: the connection to ncgrpcd's operator socket. */

struct opconn_ops {
	/* Connected: calls can start. */
	void (*oo_ready)(struct grpc_conn *conn, void *arg);
	/*
	 * The connection is closed.  unreachable is nonzero when it never
	 * became ready; a message naming the socket was printed then.
	 */
	void (*oo_closed)(int unreachable, void *arg);
};

/*
 * Connects to the operator socket at path.  Returns 0 (then exactly one
 * oo_closed follows, perhaps after oo_ready) or a negative code, after
 * printing a message.
 */
int opconn_open(uv_loop_t *loop, const char *path, const struct opconn_ops *ops,
                void *arg);

/* Closes the connection gracefully, if open; safe to call repeatedly. */
void opconn_close(void);

/*
 * Packs m and sends it on c.  Returns 0 or the error of
 * grpc_call_send() (-ENOMEM, -EPIPE, ...).  on_end may run inside.
 */
int opconn_send(struct grpc_call *c, const ProtobufCMessage *m);

/* "ncgrpc: msg" for a call that ended with status (message may be ""). */
void opconn_report(int status, const char *message);

/* The commands; each returns the exit status. */
int cmd_devices(const struct cli *cl, int argc, char **argv);
int cmd_watch(const struct cli *cl, int argc, char **argv);
int cmd_session(const struct cli *cl, int argc, char **argv);
int cmd_device(const struct cli *cl, int argc, char **argv);
int cmd_ssh_known_hosts(const struct cli *cl, int argc, char **argv);
/* cluster_pki.c: ncgrpc cluster ca init | node-cert | status */
int cmd_cluster(const struct cli *cl, int argc, char **argv);
/* cluster.c (with the etcd client): ncgrpc cluster status */
int cmd_cluster_status(const struct cli *cl, int argc, char **argv);

/*
 * cluster.c: the registry in etcd, for "device add|remove" when the
 * configuration names cluster-etcd.  add creates the key only if absent
 * (line is the registry line); both print what went wrong and return 0,
 * -EEXIST (add), -ENOENT (remove), -EINVAL or -EIO (etcd failed).
 */
int cli_cluster_device_add(const struct sconf *sc, const char *id,
                           const char *line);
int cli_cluster_device_remove(const struct sconf *sc, const char *id);

/* devices.c: JSON output. */

/* Writes s as a JSON string literal (quotes included) to f. */
void json_string(FILE *f, const char *s);

#endif
