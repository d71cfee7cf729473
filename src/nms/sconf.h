/*
 * ncgrpcd configuration: parser and validator of ncgrpcd.conf.
 *
 * The format is line based, like sshd_config: one "keyword value" per line,
 * "#" starting a comment where a word would start, blank lines ignored.  A
 * value holding spaces or "#" is written in double quotes, inside which \"
 * and \\ stand for a quote and a backslash.  Every keyword takes exactly one
 * value.  docs/ncgrpcd.conf.md describes every keyword; in short:
 *
 *   keyword and value           default
 *   listen HOST:PORT            [::]:443 (repeatable; also [V6]:PORT, *:PORT)
 *   certificate PATH            /etc/ncgrpc/server.crt
 *   key PATH                    /etc/ncgrpc/server.key
 *   devices PATH                /etc/ncgrpc/devices
 *   operator-socket PATH        /run/ncgrpc/operator.sock
 *   operator-socket-mode OCTAL  0660
 *   operator-socket-group NAME  (none)
 *   log-file PATH | -           - (stderr)
 *   audit-log PATH              /var/log/ncgrpc/audit.log
 *   name DNS-NAME | IP          (none; repeatable)
 *   session-limit N             32
 *   session-wait SECONDS        10
 *   max-streams N               100
 *   keepalive-interval SECONDS  0 (no server PINGs)
 *   tcp-keepalive SECONDS       60 (0: off)
 *   handshake-timeout SECONDS   10
 *   dead-peer-timeout SECONDS   30 (0: kernel defaults)
 *   ssh-listen HOST:PORT        [::]:830 (ncgrpc-sshd; also [V6]:PORT, *:PORT)
 *   ssh-host-key PATH           /etc/ncgrpc/ssh_host_ed25519_key
 *   ssh-authorized-keys PATH    /etc/ncgrpc/ssh_authorized_keys
 *   ssh-log-file PATH | -       - (stderr)
 *   ssh-login-grace-time SECONDS 30
 *   ssh-max-startups N          64 (connections not authenticated yet)
 *   ssh-max-connections N       1000
 *   ssh-max-channels N          10 (per connection)
 *   metrics-listen HOST:PORT    (none: no metrics endpoint; also [V6]:PORT)
 *   cluster-listen HOST:PORT    (none: no inter-node listener; [V6]:PORT)
 *   cluster-ca PATH             (none; the cluster CA certificate)
 *   cluster-cert PATH           (none; this node's certificate)
 *   cluster-key PATH            (none; this node's key)
 *   cluster-static-peer HOST:PORT (none; for tests: forward to this node)
 *   cluster-etcd ENDPOINTS      (none: a single node; docs/cluster.md)
 *   cluster-node NAME           (the host name)
 *   cluster-address HOST:PORT   (none; also [V6]:PORT)
 *   cluster-prefix PREFIX       /ncgrpc/
 *   cluster-lease-ttl SECONDS   10
 *   cluster-etcd-ca PATH        (none: cleartext to etcd)
 *   cluster-etcd-cert PATH      (none)
 *   cluster-etcd-key PATH       (none)
 *
 * The repeatable keywords accumulate; the first "listen" (or "name") of a
 * file replaces the default list.  Any other keyword given twice in one file
 * is an error.
 *
 * Use: sconf_parse_file() builds a fresh struct sconf
 * holding the defaults overlaid with the file; the caller then applies
 * command-line options with sconf_set(), checks the result with
 * sconf_validate(), swaps it in, and later releases it with sconf_free().
 * So the precedence is defaults < file < command line.
 *
 * A missing file: sconf_parse_file() returns -ENOENT.  A daemon started
 * without an explicit "-f file" may treat that as "no file" and go on with
 * sconf_new() (the defaults); when the user named the file, it is an error.
 *
 * Nothing here logs.  Errors come back as text in the caller's buffer (err,
 * errlen bytes, always NUL-terminated when errlen > 0; err may be NULL), in
 * the form "file:line: message", or "command line: message" for values
 * given with sconf_set().
 */
#ifndef NCGRPC_SCONF_H
#define NCGRPC_SCONF_H

#include <stddef.h>
#include <stdint.h>

/* Input limits. */
#define SCONF_MAX_FILE (1024 * 1024) /* bytes in a configuration file */
#define SCONF_MAX_LINE 4096          /* bytes in a line, without newline */

/* Defaults. */
#define SCONF_DEFAULT_LISTEN_HOST     "::"
#define SCONF_DEFAULT_LISTEN_PORT     443
#define SCONF_DEFAULT_CERTIFICATE     "/etc/ncgrpc/server.crt"
#define SCONF_DEFAULT_KEY             "/etc/ncgrpc/server.key"
#define SCONF_DEFAULT_DEVICES         "/etc/ncgrpc/devices"
#define SCONF_DEFAULT_OPERATOR_SOCKET "/run/ncgrpc/operator.sock"
#define SCONF_DEFAULT_OPERATOR_MODE   0660
#define SCONF_DEFAULT_LOG_FILE        "-"
#define SCONF_DEFAULT_AUDIT_LOG       "/var/log/ncgrpc/audit.log"
#define SCONF_DEFAULT_SESSION_LIMIT   32
#define SCONF_DEFAULT_SESSION_WAIT    10
#define SCONF_DEFAULT_MAX_STREAMS     100
#define SCONF_DEFAULT_KEEPALIVE       0
#define SCONF_DEFAULT_TCP_KEEPALIVE   60
#define SCONF_DEFAULT_HANDSHAKE_TO    10
#define SCONF_DEFAULT_DEAD_PEER       30
/* ncgrpc-sshd, the SSH front door (docs/internals/sshd.md). */
#define SCONF_DEFAULT_SSH_LISTEN_HOST     "::"
#define SCONF_DEFAULT_SSH_LISTEN_PORT     830
#define SCONF_DEFAULT_SSH_HOST_KEY        "/etc/ncgrpc/ssh_host_ed25519_key"
#define SCONF_DEFAULT_SSH_AUTHORIZED_KEYS "/etc/ncgrpc/ssh_authorized_keys"
#define SCONF_DEFAULT_SSH_LOG_FILE        "-"
#define SCONF_DEFAULT_SSH_GRACE           30
#define SCONF_DEFAULT_SSH_MAX_STARTUPS    64
#define SCONF_DEFAULT_SSH_MAX_CONNECTIONS 1000
#define SCONF_DEFAULT_SSH_MAX_CHANNELS    10
/* Pre-authentication limits (docs/security.md). */
#define SCONF_DEFAULT_AUTH_TIMEOUT           30
#define SCONF_DEFAULT_MAX_CONNECTIONS        10000
#define SCONF_DEFAULT_MAX_UNAUTH             1024
#define SCONF_DEFAULT_MAX_UNAUTH_PER_ADDR    32
#define SCONF_DEFAULT_PREAUTH_STREAMS        4
#define SCONF_DEFAULT_PREAUTH_BUFFER         131072
#define SCONF_DEFAULT_AUTH_FAILURES          5
#define SCONF_DEFAULT_AUTH_FAILURES_PER_ADDR 50
#define SCONF_DEFAULT_AUTH_CHECKS            32
#define SCONF_DEFAULT_AUTH_CHECKS_PER_ADDR   8
/* The cluster (docs/cluster.md). */
#define SCONF_DEFAULT_CLUSTER_PREFIX    "/ncgrpc/"
#define SCONF_DEFAULT_CLUSTER_LEASE_TTL 10

/* Ranges checked by sconf_validate(). */
#define SCONF_MAX_SESSION_LIMIT          10000
#define SCONF_MAX_SESSION_WAIT           3600
#define SCONF_MAX_MAX_STREAMS            10000
#define SCONF_MIN_KEEPALIVE              10 /* when not 0 */
#define SCONF_MAX_KEEPALIVE              86400
#define SCONF_MAX_TCP_KEEPALIVE          32767 /* the Linux TCP_KEEPIDLE limit */
#define SCONF_MAX_HANDSHAKE_TO           300
#define SCONF_MAX_DEAD_PEER              3600
#define SCONF_MIN_AUTH_TIMEOUT           1
#define SCONF_MAX_AUTH_TIMEOUT           3600
#define SCONF_MIN_MAX_CONNECTIONS        1
#define SCONF_MAX_MAX_CONNECTIONS        1000000
#define SCONF_MIN_MAX_UNAUTH             1
#define SCONF_MAX_MAX_UNAUTH             1000000
#define SCONF_MIN_MAX_UNAUTH_PER_ADDR    1
#define SCONF_MAX_MAX_UNAUTH_PER_ADDR    1000000
#define SCONF_MIN_PREAUTH_STREAMS        1
#define SCONF_MAX_PREAUTH_STREAMS        10000
#define SCONF_MIN_PREAUTH_BUFFER         65600
#define SCONF_MAX_PREAUTH_BUFFER         16777216
#define SCONF_MIN_AUTH_FAILURES          1
#define SCONF_MAX_AUTH_FAILURES          100000
#define SCONF_MIN_AUTH_FAILURES_PER_ADDR 1
#define SCONF_MAX_AUTH_FAILURES_PER_ADDR 100000
#define SCONF_MIN_AUTH_CHECKS            1
#define SCONF_MAX_AUTH_CHECKS            10000
#define SCONF_MIN_AUTH_CHECKS_PER_ADDR   1
#define SCONF_MAX_AUTH_CHECKS_PER_ADDR   10000
#define SCONF_MAX_SSH_GRACE              600
#define SCONF_MAX_SSH_MAX_STARTUPS       100000
#define SCONF_MAX_SSH_MAX_CONNECTIONS    100000
#define SCONF_MAX_SSH_MAX_CHANNELS       1000
#define SCONF_MIN_CLUSTER_LEASE_TTL      2
#define SCONF_MAX_CLUSTER_LEASE_TTL      300
#define SCONF_MAX_NAME                   253 /* bytes in a DNS name */
#define SCONF_MAX_SOCKET_PATH            107 /* sun_path less its NUL */

/* Where a value came from: 0 for a default or sconf_set(), else its line. */
struct sconf_listen {
	char *li_host;    /* "*" (any), an IP literal or a host name */
	uint16_t li_port; /* 0 only in an unvalidated configuration */
	unsigned li_line;
};

struct sconf_name {
	char *nm_name;
	unsigned nm_line;
};

/* Single-valued keywords, indexing sc_line[]. */
enum sconf_key {
	SCONF_K_CERTIFICATE,
	SCONF_K_KEY,
	SCONF_K_TLS_TICKET_KEY,
	SCONF_K_DEVICES,
	SCONF_K_OPERATOR_SOCKET,
	SCONF_K_OPERATOR_SOCKET_MODE,
	SCONF_K_OPERATOR_SOCKET_GROUP,
	SCONF_K_LOG_FILE,
	SCONF_K_AUDIT_LOG,
	SCONF_K_SESSION_LIMIT,
	SCONF_K_SESSION_WAIT,
	SCONF_K_MAX_STREAMS,
	SCONF_K_KEEPALIVE_INTERVAL,
	SCONF_K_TCP_KEEPALIVE,
	SCONF_K_HANDSHAKE_TIMEOUT,
	SCONF_K_DEAD_PEER_TIMEOUT,
	SCONF_K_AUTH_TIMEOUT,
	SCONF_K_MAX_CONNECTIONS,
	SCONF_K_MAX_UNAUTH,
	SCONF_K_MAX_UNAUTH_PER_ADDR,
	SCONF_K_PREAUTH_STREAMS,
	SCONF_K_PREAUTH_BUFFER,
	SCONF_K_AUTH_FAILURES,
	SCONF_K_AUTH_FAILURES_PER_ADDR,
	SCONF_K_AUTH_CHECKS,
	SCONF_K_AUTH_CHECKS_PER_ADDR,
	SCONF_K_SSH_LISTEN,
	SCONF_K_SSH_HOST_KEY,
	SCONF_K_SSH_AUTHORIZED_KEYS,
	SCONF_K_SSH_LOG_FILE,
	SCONF_K_SSH_GRACE,
	SCONF_K_SSH_MAX_STARTUPS,
	SCONF_K_SSH_MAX_CONNECTIONS,
	SCONF_K_SSH_MAX_CHANNELS,
	SCONF_K_METRICS_LISTEN,
	SCONF_K_CLUSTER_LISTEN,
	SCONF_K_CLUSTER_CA,
	SCONF_K_CLUSTER_CERT,
	SCONF_K_CLUSTER_KEY,
	SCONF_K_CLUSTER_STATIC_PEER,
	SCONF_K_CLUSTER_ETCD,
	SCONF_K_CLUSTER_NODE,
	SCONF_K_CLUSTER_ADDRESS,
	SCONF_K_CLUSTER_PREFIX,
	SCONF_K_CLUSTER_LEASE_TTL,
	SCONF_K_CLUSTER_ETCD_CA,
	SCONF_K_CLUSTER_ETCD_CERT,
	SCONF_K_CLUSTER_ETCD_KEY,
	SCONF_K_COUNT
};

/*
 * A configuration.  It owns every string and array below, all of which live
 * until sconf_free().  Times are in seconds.
 */
struct sconf {
	char *sc_file;                  /* file name used in messages */
	struct sconf_listen *sc_listen; /* in the order written */
	size_t sc_nlisten;
	char *sc_certificate;
	char *sc_key;
	/* NULL: tls_ticket_key beside sc_key; "none": no resumption */
	char *sc_tls_ticket_key;
	char *sc_devices;
	char *sc_operator_socket;
	unsigned sc_operator_socket_mode;
	char *sc_operator_socket_group; /* NULL: the daemon's group */
	char *sc_log_file;              /* "-" for stderr */
	char *sc_audit_log;
	struct sconf_name *sc_names; /* in the order written; may be empty */
	size_t sc_nnames;
	unsigned sc_session_limit; /* sessions per device */
	unsigned sc_session_wait;  /* operator wait for an idle connection */
	unsigned sc_max_streams;   /* concurrent HTTP/2 streams per conn */
	unsigned sc_keepalive_interval; /* between server PINGs; 0: none */
	unsigned sc_tcp_keepalive;      /* TCP_KEEPIDLE; 0: no keepalive */
	unsigned sc_handshake_timeout;
	unsigned sc_dead_peer_timeout; /* TCP_USER_TIMEOUT etc.; 0: none */
	/* Pre-authentication limits (docs/security.md). */
	unsigned sc_auth_timeout;           /* to a successful Initialize */
	unsigned sc_max_connections;        /* device connections in all */
	unsigned sc_max_unauth;             /* not authenticated yet */
	unsigned sc_max_unauth_per_addr;    /* the same, from one address */
	unsigned sc_preauth_streams;        /* streams of such a connection */
	unsigned sc_preauth_buffer;         /* bytes it may have buffered */
	unsigned sc_auth_failures;          /* a minute, per (id, address) */
	unsigned sc_auth_failures_per_addr; /* a minute, per address */
	unsigned sc_auth_checks;            /* scrypt queued or running */
	unsigned sc_auth_checks_per_addr;   /* the same, per address */
	/* ncgrpc-sshd (ncgrpcd itself ignores these). */
	char *sc_ssh_listen_host; /* "*", an IP literal or a host name */
	uint16_t sc_ssh_listen_port;
	char *sc_ssh_host_key;
	char *sc_ssh_authorized_keys;
	char *sc_ssh_log_file;        /* "-" for stderr */
	unsigned sc_ssh_grace;        /* to authenticate, seconds */
	unsigned sc_ssh_max_startups; /* not authenticated yet, at once */
	unsigned sc_ssh_max_conns;    /* SSH connections in all */
	unsigned sc_ssh_max_channels; /* per SSH connection */
	/* The Prometheus endpoint (docs/metrics.md); NULL host: none. */
	char *sc_metrics_listen_host; /* "*", an IP literal or a host name */
	uint16_t sc_metrics_listen_port;
	/*
	 * Node-to-node forwarding (docs/cluster.md).  The inter-node
	 * listener, NULL host: none; the cluster CA, this node's certificate
	 * and key, NULL: none.  The static peer is for tests and two-node
	 * trials without the cluster's device lookup: NULL host: none.
	 */
	char *sc_cluster_listen_host; /* "*", an IP literal or a host name */
	uint16_t sc_cluster_listen_port;
	char *sc_cluster_ca;
	char *sc_cluster_cert;
	char *sc_cluster_key;
	char *sc_cluster_static_peer_host;
	uint16_t sc_cluster_static_peer_port;
	/*
	 * The cluster (docs/cluster.md).  sc_cluster_etcd NULL: a single
	 * node, and the other cluster fields are unused.
	 */
	char *sc_cluster_etcd;      /* endpoints, as etcd_endpoints_parse() */
	char *sc_cluster_node;      /* NULL: the host name */
	char *sc_cluster_addr_host; /* NULL: none; an IP literal or a name */
	uint16_t sc_cluster_addr_port;
	char *sc_cluster_prefix;
	unsigned sc_cluster_lease_ttl;
	char *sc_cluster_etcd_ca; /* NULL: cleartext */
	char *sc_cluster_etcd_cert;
	char *sc_cluster_etcd_key;
	/* Line of each single-valued keyword's value, 0 for none. */
	unsigned sc_line[SCONF_K_COUNT];
	/* Where sc_listen and sc_names came from: 0 default, 1 file, 2 set. */
	int sc_listen_src, sc_names_src;
};

/*
 * Fills *sc, whose previous contents are ignored, with the defaults.
 * Returns 0, or -ENOMEM (and *sc is then zeroed).  Release the contents
 * with sconf_clear().
 */
int sconf_defaults(struct sconf *sc);

/* Releases what *sc holds (not sc itself) and zeroes it. */
void sconf_clear(struct sconf *sc);

/* Allocates a configuration holding the defaults.  0 or -ENOMEM. */
int sconf_new(struct sconf **out);

/*
 * Parses the file at path (at most SCONF_MAX_FILE bytes) over the defaults.
 * On success *out is a new configuration owned by the caller (release with
 * sconf_free()); it has not been validated.  On failure a message is written
 * to err and the return is -EINVAL (syntax error or malformed value, or not
 * a regular file), -EFBIG (file too large), -ENOMEM, or the negated errno of
 * open() or read(): -ENOENT for a missing file (see above), -EACCES, ...
 * *out is set only on success.
 */
int sconf_parse_file(const char *path, struct sconf **out, char *err,
                     size_t errlen);

/*
 * As sconf_parse_file(), on text[0..len) (need not be NUL-terminated; a NUL
 * byte inside is an error).  name labels messages, e.g. "<stdin>".
 */
int sconf_parse_string(const char *name, const char *text, size_t len,
                       struct sconf **out, char *err, size_t errlen);

/*
 * Sets keyword key to value as a command-line option would (for example
 * from "-o key=value"): it overrides what the file said, and the first
 * sconf_set() of "listen" or "name" replaces the list from the file.
 * Returns 0, -EINVAL (unknown keyword or malformed value, with a message in
 * err) or -ENOMEM.  After -EINVAL sc is unchanged.
 */
int sconf_set(struct sconf *sc, const char *key, const char *value, char *err,
              size_t errlen);

/*
 * Checks what the parser cannot: at least one listen address, each port
 * 1..65535 and each host "*", an IP literal or a DNS name; absolute paths
 * (log-file may also be "-"), the operator socket short enough for
 * sun_path; mode at most 0777; a well-formed group name (not looked up);
 * each name non-empty and a DNS name or IP literal; numbers within the
 * SCONF_MIN_ and SCONF_MAX_ limits above, session-limit, session-wait,
 * max-streams and handshake-timeout at least 1; the cluster keywords
 * (a non-empty endpoint list, a valid prefix and node name, an address
 * that is not "*", the etcd certificate and key together and only with a
 * CA).  Returns 0, or -EINVAL with
 * the first problem in err.
 */
int sconf_validate(const struct sconf *sc, char *err, size_t errlen);

/* Frees sc and everything it holds; NULL is fine. */
void sconf_free(struct sconf *sc);

/*
 * Nonzero if s is a DNS name (LDH labels of 1..63 bytes, at most
 * SCONF_MAX_NAME bytes, not ending in an all-numeric label) or an IPv4 or
 * IPv6 literal.
 */
int sconf_name_valid(const char *s);

#endif
