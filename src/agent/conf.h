/*
 * ncgrpc-agent configuration: parser, validator and comparison.
 *
 * The syntax mirrors the Junos [edit system services outbound-https]
 * hierarchy (docs/configuration.md), so that the output
 * of "show configuration system services outbound-https" can be pasted
 * verbatim, plus an "agent { }" block for what Junos keeps elsewhere.
 *
 * Use: conf_parse_file() or conf_parse_string() builds a fresh struct conf,
 * conf_validate() checks it in a separate pass, and the caller swaps it in
 * (on reload, comparing clients with conf_client_equal_conn()) and later
 * releases it with conf_free().  Nothing here logs; every error comes back
 * as text in the caller's buffer, in the form "file:line:col: message"
 * (lines and columns count from 1; columns count bytes).  No error text
 * ever contains a secret.
 */
#ifndef NCGRPC_CONF_H
#define NCGRPC_CONF_H

#include <stddef.h>
#include <stdint.h>

/* Input limits: larger files and tokens are refused. */
#define CONF_MAX_FILE  (1024 * 1024) /* bytes in a configuration file */
#define CONF_MAX_TOKEN (64 * 1024)   /* bytes in one word or string */
#define CONF_MAX_DEPTH 16            /* nested { } blocks */

/* Defaults and limits of the client statements. */
#define CONF_DEFAULT_PORT     443
#define CONF_DEFAULT_WAITTIME 30 /* seconds */
#define CONF_MIN_WAITTIME     1
#define CONF_MAX_WAITTIME     86400

/*
 * Defaults and limits of the agent block.  HTTP/2 PINGs stay above the
 * 5-minute minimum that gRPC Core servers enforce on idle connections
 * (docs/protocol.md, interop), so the default is 6 minutes; dead peers are
 * found sooner by TCP keepalive: 60 s idle, then 4 probes 15 s apart, which
 * drops a dead connection after about 2 minutes.
 */
#define CONF_DEFAULT_LOG_FILE           "outbound_https.log"
#define CONF_DEFAULT_NETCONF_COMMAND    "/usr/sbin/netconf-subsystem"
#define CONF_DEFAULT_KEEPALIVE_INTERVAL 360 /* s; 0 disables PINGs */
#define CONF_MAX_KEEPALIVE_INTERVAL     86400
#define CONF_DEFAULT_KEEPALIVE_TIMEOUT  20 /* s to wait for the PING ack */
#define CONF_MAX_KEEPALIVE_TIMEOUT      3600
#define CONF_DEFAULT_TCP_KEEPIDLE       60 /* s idle before the first probe */
#define CONF_DEFAULT_TCP_KEEPINTVL      15 /* s between probes */
#define CONF_DEFAULT_TCP_KEEPCNT        4  /* unanswered probes before drop */
#define CONF_MAX_TCP_KEEPIDLE           32767 /* the Linux limits */
#define CONF_MAX_TCP_KEEPINTVL          32767
#define CONF_MAX_TCP_KEEPCNT            127
/*
 * A too_many_pings GOAWAY doubles the PING interval (docs/protocol.md),
 * never beyond keepalive-interval-max; it comes back down once a
 * connection kept the learned interval without a complaint (client.c).
 */
#define CONF_DEFAULT_KEEPALIVE_INTERVAL_MAX 3600 /* s */
/*
 * A dead peer (link cut, box gone) is noticed within dead-peer-timeout
 * seconds on idle and busy connections alike: TCP_USER_TIMEOUT, with TCP
 * keepalive shortened to fit (xport_opts_dead_peer()).  0 turns it off.
 */
#define CONF_DEFAULT_DEAD_PEER_TIMEOUT 30 /* s */
#define CONF_MAX_DEAD_PEER_TIMEOUT     3600
/* Sessions per client at once; at the limit no connection waits. */
#define CONF_DEFAULT_SESSION_LIMIT 16
#define CONF_MAX_SESSION_LIMIT     1024

enum conf_reconnect {
	CONF_RECONNECT_IN_ORDER = 0, /* restart from the first address */
	CONF_RECONNECT_STICKY        /* retry the last good address first */
};

/* Where a statement was written, for messages after parsing. */
struct conf_pos {
	unsigned po_line;
	unsigned po_col;
};

struct conf_address {
	char *ad_host; /* IPv4 or IPv6 literal, or hostname */
	uint16_t ad_port;
	char *ad_trusted_cert;      /* PEM text, or NULL */
	char *ad_trusted_cert_file; /* PEM file path, or NULL */
	struct conf_pos ad_pos;
};

struct conf_client {
	char *cc_name; /* local name, never sent */
	char *cc_device_id;
	char *cc_secret; /* plaintext ($9$ decoded) or NULL */
	size_t cc_secret_len;
	enum conf_reconnect cc_reconnect;
	unsigned cc_waittime;          /* seconds */
	struct conf_address *cc_addrs; /* in the order written */
	size_t cc_naddrs;
	struct conf_pos cc_pos;
};

struct conf_agent {
	char *ag_user; /* NULL: sessions keep the agent's user */
	char *ag_netconf_command;
	char *ag_shell; /* NULL: the user's login shell */
	char *ag_log_file;
	unsigned ag_keepalive_interval; /* s between HTTP/2 PINGs; 0: none */
	unsigned ag_keepalive_timeout;  /* s to wait for a PING ack */
	unsigned ag_tcp_keepidle;       /* TCP_KEEPIDLE, s */
	unsigned ag_tcp_keepintvl;      /* TCP_KEEPINTVL, s */
	unsigned ag_tcp_keepcnt;        /* TCP_KEEPCNT */
	unsigned ag_keepalive_interval_max; /* s; learned PING interval cap */
	unsigned ag_dead_peer_timeout;      /* s; 0: kernel defaults */
	unsigned ag_session_limit;          /* sessions per client at once */
};

/*
 * A parsed configuration.  It owns every string and array below; all of it
 * lives until conf_free().  Secrets are NUL-terminated and hold no NUL.
 */
struct conf {
	char *cf_name; /* file name used in messages */
	struct conf_agent cf_agent;
	struct conf_client *cf_clients; /* in the order written */
	size_t cf_nclients;
};

/*
 * Parses the file at path (at most CONF_MAX_FILE bytes).  On success *out is
 * a new configuration owned by the caller (release with conf_free()); it has
 * not been validated.  On failure a message is written to err (errlen bytes,
 * always NUL-terminated when errlen > 0; err may be NULL) and the return is
 * -EINVAL (syntax error or bad value), -EFBIG (file too large), -ENOMEM, or
 * the negated errno of open() or read().  *out is set only on success.
 */
int conf_parse_file(const char *path, struct conf **out, char *err,
                    size_t errlen);

/*
 * As conf_parse_file(), on text[0..len) (need not be NUL-terminated; a NUL
 * byte inside is an error).  name labels messages, e.g. "<stdin>".
 */
int conf_parse_string(const char *name, const char *text, size_t len,
                      struct conf **out, char *err, size_t errlen);

/*
 * Checks what the grammar cannot: at least one client; unique client names;
 * per client a device-id, a secret and at least one address; no address
 * twice; ports 1..65535; waittime and agent values in range; exactly one of
 * trusted-cert (which must hold PEM "CERTIFICATE" blocks) or
 * trusted-cert-file per address; host names well formed.  Returns 0, or
 * -EINVAL with the first problem in err (as above, with the position of the
 * offending client or address).
 */
int conf_validate(const struct conf *cf, char *err, size_t errlen);

/* Clears every secret and frees cf and everything it holds; NULL is fine. */
void conf_free(struct conf *cf);

/* The client named name, or NULL.  Lives as long as cf. */
const struct conf_client *conf_client_find(const struct conf *cf,
                                           const char *name);

/*
 * Nonzero if a and b connect identically: same device-id, secret, and the
 * same addresses in the same order with the same ports and trusted-cert
 * text or file path.  Then a reload may apply the new waittime and
 * reconnect-strategy live; otherwise the client must reconnect.  The
 * contents of a trusted-cert-file are not compared.
 */
int conf_client_equal_conn(const struct conf_client *a,
                           const struct conf_client *b);

/* "in-order" or "sticky". */
const char *conf_reconnect_name(enum conf_reconnect r);

#endif
