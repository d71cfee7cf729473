/*
 * ncgrpcd configuration: a line-at-a-time parser over the defaults, and a
 * separate validator (see sconf.h for the format).
 *
 * Each line is split into at most three words (the keyword, its value, and
 * a third only to report it as extra).  Keywords are looked up in one table
 * that also says how the value is parsed and where it is stored, so a new
 * keyword is one table row plus a default and a validation rule.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "common/addr.h"
#include "common/fileio.h"
#include "clusterkey.h"
#include "sconf.h"

#define SCONF_UNNAMED "<config>"
#define SCONF_MSG_MAX 1024

/* Where a value comes from; a later source replaces a list. */
enum src { SRC_DEFAULT = 0, SRC_FILE = 1, SRC_SET = 2 };

enum vtype {
	V_LISTEN,
	V_SSH_LISTEN,
	V_METRICS_LISTEN,
	V_CLUSTER_LISTEN,
	V_STATIC_PEER,
	V_CLUSTER_ADDRESS,
	V_NAME,
	V_STR,
	V_UINT,
	V_MODE
};

struct keyword {
	const char *kw_name;
	enum vtype kw_type;
	int kw_key; /* enum sconf_key; -1 for the repeatable ones */
	size_t
	    kw_off; /* of the field in struct sconf (V_STR, V_UINT, V_MODE) */
};

#define F(f) offsetof(struct sconf, f)

static const struct keyword keywords[] = {
    {"listen", V_LISTEN, -1, 0},
    {"certificate", V_STR, SCONF_K_CERTIFICATE, F(sc_certificate)},
    {"key", V_STR, SCONF_K_KEY, F(sc_key)},
    {"tls-ticket-key", V_STR, SCONF_K_TLS_TICKET_KEY, F(sc_tls_ticket_key)},
    {"devices", V_STR, SCONF_K_DEVICES, F(sc_devices)},
    {"operator-socket", V_STR, SCONF_K_OPERATOR_SOCKET, F(sc_operator_socket)},
    {"operator-socket-mode", V_MODE, SCONF_K_OPERATOR_SOCKET_MODE,
     F(sc_operator_socket_mode)},
    {"operator-socket-group", V_STR, SCONF_K_OPERATOR_SOCKET_GROUP,
     F(sc_operator_socket_group)},
    {"log-file", V_STR, SCONF_K_LOG_FILE, F(sc_log_file)},
    {"audit-log", V_STR, SCONF_K_AUDIT_LOG, F(sc_audit_log)},
    {"name", V_NAME, -1, 0},
    {"session-limit", V_UINT, SCONF_K_SESSION_LIMIT, F(sc_session_limit)},
    {"session-wait", V_UINT, SCONF_K_SESSION_WAIT, F(sc_session_wait)},
    {"max-streams", V_UINT, SCONF_K_MAX_STREAMS, F(sc_max_streams)},
    {"keepalive-interval", V_UINT, SCONF_K_KEEPALIVE_INTERVAL,
     F(sc_keepalive_interval)},
    {"tcp-keepalive", V_UINT, SCONF_K_TCP_KEEPALIVE, F(sc_tcp_keepalive)},
    {"handshake-timeout", V_UINT, SCONF_K_HANDSHAKE_TIMEOUT,
     F(sc_handshake_timeout)},
    {"dead-peer-timeout", V_UINT, SCONF_K_DEAD_PEER_TIMEOUT,
     F(sc_dead_peer_timeout)},
    {"auth-timeout", V_UINT, SCONF_K_AUTH_TIMEOUT, F(sc_auth_timeout)},
    {"max-connections", V_UINT, SCONF_K_MAX_CONNECTIONS, F(sc_max_connections)},
    {"max-unauthenticated", V_UINT, SCONF_K_MAX_UNAUTH, F(sc_max_unauth)},
    {"max-unauthenticated-per-address", V_UINT, SCONF_K_MAX_UNAUTH_PER_ADDR,
     F(sc_max_unauth_per_addr)},
    {"preauth-streams", V_UINT, SCONF_K_PREAUTH_STREAMS, F(sc_preauth_streams)},
    {"preauth-buffer", V_UINT, SCONF_K_PREAUTH_BUFFER, F(sc_preauth_buffer)},
    {"auth-failures", V_UINT, SCONF_K_AUTH_FAILURES, F(sc_auth_failures)},
    {"auth-failures-per-address", V_UINT, SCONF_K_AUTH_FAILURES_PER_ADDR,
     F(sc_auth_failures_per_addr)},
    {"auth-checks", V_UINT, SCONF_K_AUTH_CHECKS, F(sc_auth_checks)},
    {"auth-checks-per-address", V_UINT, SCONF_K_AUTH_CHECKS_PER_ADDR,
     F(sc_auth_checks_per_addr)},
    {"ssh-listen", V_SSH_LISTEN, SCONF_K_SSH_LISTEN, 0},
    {"ssh-host-key", V_STR, SCONF_K_SSH_HOST_KEY, F(sc_ssh_host_key)},
    {"ssh-authorized-keys", V_STR, SCONF_K_SSH_AUTHORIZED_KEYS,
     F(sc_ssh_authorized_keys)},
    {"ssh-log-file", V_STR, SCONF_K_SSH_LOG_FILE, F(sc_ssh_log_file)},
    {"ssh-login-grace-time", V_UINT, SCONF_K_SSH_GRACE, F(sc_ssh_grace)},
    {"ssh-max-startups", V_UINT, SCONF_K_SSH_MAX_STARTUPS,
     F(sc_ssh_max_startups)},
    {"ssh-max-connections", V_UINT, SCONF_K_SSH_MAX_CONNECTIONS,
     F(sc_ssh_max_conns)},
    {"ssh-max-channels", V_UINT, SCONF_K_SSH_MAX_CHANNELS,
     F(sc_ssh_max_channels)},
    {"metrics-listen", V_METRICS_LISTEN, SCONF_K_METRICS_LISTEN, 0},
    {"cluster-listen", V_CLUSTER_LISTEN, SCONF_K_CLUSTER_LISTEN, 0},
    {"cluster-ca", V_STR, SCONF_K_CLUSTER_CA, F(sc_cluster_ca)},
    {"cluster-cert", V_STR, SCONF_K_CLUSTER_CERT, F(sc_cluster_cert)},
    {"cluster-key", V_STR, SCONF_K_CLUSTER_KEY, F(sc_cluster_key)},
    {"cluster-static-peer", V_STATIC_PEER, SCONF_K_CLUSTER_STATIC_PEER, 0},
    {"cluster-etcd", V_STR, SCONF_K_CLUSTER_ETCD, F(sc_cluster_etcd)},
    {"cluster-node", V_STR, SCONF_K_CLUSTER_NODE, F(sc_cluster_node)},
    {"cluster-address", V_CLUSTER_ADDRESS, SCONF_K_CLUSTER_ADDRESS, 0},
    {"cluster-prefix", V_STR, SCONF_K_CLUSTER_PREFIX, F(sc_cluster_prefix)},
    {"cluster-lease-ttl", V_UINT, SCONF_K_CLUSTER_LEASE_TTL,
     F(sc_cluster_lease_ttl)},
    {"cluster-etcd-ca", V_STR, SCONF_K_CLUSTER_ETCD_CA, F(sc_cluster_etcd_ca)},
    {"cluster-etcd-cert", V_STR, SCONF_K_CLUSTER_ETCD_CERT,
     F(sc_cluster_etcd_cert)},
    {"cluster-etcd-key", V_STR, SCONF_K_CLUSTER_ETCD_KEY,
     F(sc_cluster_etcd_key)},
};

#undef F

#define NKEYWORDS (sizeof(keywords) / sizeof(keywords[0]))

static char **
str_field(struct sconf *sc, const struct keyword *kw)
{
	return (char **)(void *)((char *)sc + kw->kw_off);
}

static unsigned *
uint_field(struct sconf *sc, const struct keyword *kw)
{
	return (unsigned *)(void *)((char *)sc + kw->kw_off);
}

static const struct keyword *
keyword_find(const char *name)
{
	size_t i;

	for (i = 0; i < NKEYWORDS; i++)
		if (strcmp(keywords[i].kw_name, name) == 0)
			return &keywords[i];
	return NULL;
}

/* --- Defaults and lifetime --- */

static void
listen_clear(struct sconf *sc)
{
	size_t i;

	for (i = 0; i < sc->sc_nlisten; i++)
		free(sc->sc_listen[i].li_host);
	free(sc->sc_listen);
	sc->sc_listen = NULL;
	sc->sc_nlisten = 0;
}

static void
names_clear(struct sconf *sc)
{
	size_t i;

	for (i = 0; i < sc->sc_nnames; i++)
		free(sc->sc_names[i].nm_name);
	free(sc->sc_names);
	sc->sc_names = NULL;
	sc->sc_nnames = 0;
}

static int
listen_add(struct sconf *sc, const char *host, uint16_t port, unsigned line)
{
	struct sconf_listen *l;
	char *h;

	if ((h = strdup(host)) == NULL)
		return -ENOMEM;
	l = reallocarray(sc->sc_listen, sc->sc_nlisten + 1, sizeof(*l));
	if (l == NULL) {
		free(h);
		return -ENOMEM;
	}
	sc->sc_listen = l;
	l += sc->sc_nlisten++;
	l->li_host = h;
	l->li_port = port;
	l->li_line = line;
	return 0;
}

static int
name_add(struct sconf *sc, const char *name, unsigned line)
{
	struct sconf_name *n;
	char *s;

	if ((s = strdup(name)) == NULL)
		return -ENOMEM;
	n = reallocarray(sc->sc_names, sc->sc_nnames + 1, sizeof(*n));
	if (n == NULL) {
		free(s);
		return -ENOMEM;
	}
	sc->sc_names = n;
	n += sc->sc_nnames++;
	n->nm_name = s;
	n->nm_line = line;
	return 0;
}

void
sconf_clear(struct sconf *sc)
{
	size_t i;

	if (sc == NULL)
		return;
	listen_clear(sc);
	names_clear(sc);
	for (i = 0; i < NKEYWORDS; i++)
		if (keywords[i].kw_type == V_STR)
			free(*str_field(sc, &keywords[i]));
	free(sc->sc_ssh_listen_host);
	free(sc->sc_metrics_listen_host);
	free(sc->sc_cluster_listen_host);
	free(sc->sc_cluster_static_peer_host);
	free(sc->sc_cluster_addr_host);
	free(sc->sc_file);
	memset(sc, 0, sizeof(*sc));
}

int
sconf_defaults(struct sconf *sc)
{
	memset(sc, 0, sizeof(*sc));
	sc->sc_operator_socket_mode = SCONF_DEFAULT_OPERATOR_MODE;
	sc->sc_session_limit = SCONF_DEFAULT_SESSION_LIMIT;
	sc->sc_session_wait = SCONF_DEFAULT_SESSION_WAIT;
	sc->sc_max_streams = SCONF_DEFAULT_MAX_STREAMS;
	sc->sc_keepalive_interval = SCONF_DEFAULT_KEEPALIVE;
	sc->sc_tcp_keepalive = SCONF_DEFAULT_TCP_KEEPALIVE;
	sc->sc_dead_peer_timeout = SCONF_DEFAULT_DEAD_PEER;
	sc->sc_handshake_timeout = SCONF_DEFAULT_HANDSHAKE_TO;
	sc->sc_auth_timeout = SCONF_DEFAULT_AUTH_TIMEOUT;
	sc->sc_max_connections = SCONF_DEFAULT_MAX_CONNECTIONS;
	sc->sc_max_unauth = SCONF_DEFAULT_MAX_UNAUTH;
	sc->sc_max_unauth_per_addr = SCONF_DEFAULT_MAX_UNAUTH_PER_ADDR;
	sc->sc_preauth_streams = SCONF_DEFAULT_PREAUTH_STREAMS;
	sc->sc_preauth_buffer = SCONF_DEFAULT_PREAUTH_BUFFER;
	sc->sc_auth_failures = SCONF_DEFAULT_AUTH_FAILURES;
	sc->sc_auth_failures_per_addr = SCONF_DEFAULT_AUTH_FAILURES_PER_ADDR;
	sc->sc_auth_checks = SCONF_DEFAULT_AUTH_CHECKS;
	sc->sc_auth_checks_per_addr = SCONF_DEFAULT_AUTH_CHECKS_PER_ADDR;
	sc->sc_ssh_listen_port = SCONF_DEFAULT_SSH_LISTEN_PORT;
	sc->sc_ssh_grace = SCONF_DEFAULT_SSH_GRACE;
	sc->sc_ssh_max_startups = SCONF_DEFAULT_SSH_MAX_STARTUPS;
	sc->sc_ssh_max_conns = SCONF_DEFAULT_SSH_MAX_CONNECTIONS;
	sc->sc_ssh_max_channels = SCONF_DEFAULT_SSH_MAX_CHANNELS;
	sc->sc_cluster_lease_ttl = SCONF_DEFAULT_CLUSTER_LEASE_TTL;
	if ((sc->sc_file = strdup(SCONF_UNNAMED)) == NULL ||
	    (sc->sc_certificate = strdup(SCONF_DEFAULT_CERTIFICATE)) == NULL ||
	    (sc->sc_key = strdup(SCONF_DEFAULT_KEY)) == NULL ||
	    (sc->sc_devices = strdup(SCONF_DEFAULT_DEVICES)) == NULL ||
	    (sc->sc_operator_socket = strdup(SCONF_DEFAULT_OPERATOR_SOCKET)) ==
	        NULL ||
	    (sc->sc_log_file = strdup(SCONF_DEFAULT_LOG_FILE)) == NULL ||
	    (sc->sc_audit_log = strdup(SCONF_DEFAULT_AUDIT_LOG)) == NULL ||
	    (sc->sc_ssh_listen_host = strdup(SCONF_DEFAULT_SSH_LISTEN_HOST)) ==
	        NULL ||
	    (sc->sc_ssh_host_key = strdup(SCONF_DEFAULT_SSH_HOST_KEY)) ==
	        NULL ||
	    (sc->sc_ssh_authorized_keys =
	         strdup(SCONF_DEFAULT_SSH_AUTHORIZED_KEYS)) == NULL ||
	    (sc->sc_ssh_log_file = strdup(SCONF_DEFAULT_SSH_LOG_FILE)) ==
	        NULL ||
	    (sc->sc_cluster_prefix = strdup(SCONF_DEFAULT_CLUSTER_PREFIX)) ==
	        NULL ||
	    listen_add(sc, SCONF_DEFAULT_LISTEN_HOST, SCONF_DEFAULT_LISTEN_PORT,
	               0) != 0) {
		sconf_clear(sc);
		return -ENOMEM;
	}
	return 0;
}

int
sconf_new(struct sconf **out)
{
	struct sconf *sc;

	if ((sc = malloc(sizeof(*sc))) == NULL)
		return -ENOMEM;
	if (sconf_defaults(sc) != 0) {
		free(sc);
		return -ENOMEM;
	}
	*out = sc;
	return 0;
}

void
sconf_free(struct sconf *sc)
{
	if (sc == NULL)
		return;
	sconf_clear(sc);
	free(sc);
}

/* --- Values --- */

/*
 * Parses a listen address: HOST:PORT, [IPV6]:PORT or *:PORT ("*" is every
 * address).  Returns 0 with host and *port set, or -EINVAL with a message.
 */
static int
parse_listen(const char *kwname, const char *value, char *host, size_t hostlen,
             uint16_t *port, char *msg, size_t msglen)
{
	unsigned long long v;
	int rc;

	if (value[0] == '*' && value[1] == ':') {
		rc = addr_parse_uint(value + 2, 0, 65535, &v);
		host[0] = '*';
		host[1] = '\0';
		*port = rc == 0 ? (uint16_t)v : 0;
	} else
		rc = addr_parse_hostport(value, 0, 1, host, hostlen, port);
	if (rc == -ENAMETOOLONG) {
		ncg_seterr(msg, msglen, "%s: host name too long", kwname);
		return -EINVAL;
	}
	if (rc != 0 ||
	    (value[0] == '[' &&
	     inet_pton(AF_INET6, host, &(struct in6_addr){0}) != 1)) {
		ncg_seterr(
		    msg, msglen,
		    "%s: '%.64s' is not HOST:PORT, [IPV6]:PORT or *:PORT",
		    kwname, value);
		return -EINVAL;
	}
	return 0;
}

/*
 * Stores value for kw, as given on line (0 for sconf_set()) by src.
 * Returns 0, -EINVAL with a message (without position) in msg, or -ENOMEM.
 */
static int
set_value(struct sconf *sc, const struct keyword *kw, const char *value,
          unsigned line, enum src src, char *msg, size_t msglen)
{
	unsigned long long v;
	char host[256], *s;
	uint16_t port;
	size_t i;
	int rc;

	if (kw->kw_key >= 0 && src == SRC_FILE &&
	    sc->sc_line[kw->kw_key] != 0) {
		ncg_seterr(msg, msglen, "'%s' given twice (first at line %u)",
		           kw->kw_name, sc->sc_line[kw->kw_key]);
		return -EINVAL;
	}
	switch (kw->kw_type) {
	case V_SSH_LISTEN:
		if ((rc = parse_listen(kw->kw_name, value, host, sizeof(host),
		                       &port, msg, msglen)) != 0)
			return rc;
		if ((s = strdup(host)) == NULL)
			return -ENOMEM;
		free(sc->sc_ssh_listen_host);
		sc->sc_ssh_listen_host = s;
		sc->sc_ssh_listen_port = port;
		break;
	case V_METRICS_LISTEN:
		if ((rc = parse_listen(kw->kw_name, value, host, sizeof(host),
		                       &port, msg, msglen)) != 0)
			return rc;
		if ((s = strdup(host)) == NULL)
			return -ENOMEM;
		free(sc->sc_metrics_listen_host);
		sc->sc_metrics_listen_host = s;
		sc->sc_metrics_listen_port = port;
		break;
	case V_CLUSTER_LISTEN:
	case V_STATIC_PEER:
		if ((rc = parse_listen(kw->kw_name, value, host, sizeof(host),
		                       &port, msg, msglen)) != 0)
			return rc;
		if ((s = strdup(host)) == NULL)
			return -ENOMEM;
		if (kw->kw_type == V_CLUSTER_LISTEN) {
			free(sc->sc_cluster_listen_host);
			sc->sc_cluster_listen_host = s;
			sc->sc_cluster_listen_port = port;
		} else {
			free(sc->sc_cluster_static_peer_host);
			sc->sc_cluster_static_peer_host = s;
			sc->sc_cluster_static_peer_port = port;
		}
		break;
	case V_CLUSTER_ADDRESS:
		/* Other nodes dial it: "*" is no address. */
		if (value[0] == '*' ||
		    (rc = parse_listen(kw->kw_name, value, host, sizeof(host),
		                       &port, msg, msglen)) != 0) {
			if (value[0] == '*')
				ncg_seterr(msg, msglen,
				           "%s: '%.64s' is not HOST:PORT or "
				           "[IPV6]:PORT",
				           kw->kw_name, value);
			return -EINVAL;
		}
		if ((s = strdup(host)) == NULL)
			return -ENOMEM;
		free(sc->sc_cluster_addr_host);
		sc->sc_cluster_addr_host = s;
		sc->sc_cluster_addr_port = port;
		break;
	case V_LISTEN:
		if ((rc = parse_listen(kw->kw_name, value, host, sizeof(host),
		                       &port, msg, msglen)) != 0)
			return rc;
		if (sc->sc_listen_src < (int)src) {
			listen_clear(sc);
			sc->sc_listen_src = (int)src;
		}
		return listen_add(sc, host, port, line);
	case V_NAME:
		if (sc->sc_names_src < (int)src) {
			names_clear(sc);
			sc->sc_names_src = (int)src;
		}
		return name_add(sc, value, line);
	case V_STR:
		if ((s = strdup(value)) == NULL)
			return -ENOMEM;
		free(*str_field(sc, kw));
		*str_field(sc, kw) = s;
		break;
	case V_UINT:
		rc = addr_parse_uint(value, 0, UINT_MAX, &v);
		if (rc == -ERANGE) {
			ncg_seterr(msg, msglen, "%s: '%.64s' is too large",
			           kw->kw_name, value);
			return -EINVAL;
		}
		if (rc != 0) {
			ncg_seterr(msg, msglen, "%s: '%.64s' is not a number",
			           kw->kw_name, value);
			return -EINVAL;
		}
		*uint_field(sc, kw) = (unsigned)v;
		break;
	case V_MODE:
		v = 0;
		for (i = 0; i < 5 && value[i] >= '0' && value[i] <= '7'; i++)
			v = v * 8 + (unsigned)(value[i] - '0');
		if (i == 0 || i > 4 || value[i] != '\0') {
			ncg_seterr(
			    msg, msglen,
			    "%s: '%.64s' is not an octal mode such as 0660",
			    kw->kw_name, value);
			return -EINVAL;
		}
		*uint_field(sc, kw) = (unsigned)v;
		break;
	}
	sc->sc_line[kw->kw_key] = line;
	return 0;
}

/*
 * Edit distance of a and b, letters compared without case, or more than
 * max when it is: enough to say "did you mean" for a typo.
 */
static size_t
typo_distance(const char *a, const char *b, size_t max)
{
	size_t la = strlen(a), lb = strlen(b), i, j, prev, cur, best;
	size_t row[64];

	if (la >= sizeof(row) / sizeof(row[0]) ||
	    lb >= sizeof(row) / sizeof(row[0]) ||
	    (la > lb ? la - lb : lb - la) > max)
		return max + 1;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		best = row[0];
		for (j = 1; j <= lb; j++) {
			cur = row[j];
			row[j] = prev + (tolower((unsigned char)a[i - 1]) !=
			                 tolower((unsigned char)b[j - 1]));
			if (cur + 1 < row[j])
				row[j] = cur + 1;
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			prev = cur;
			if (row[j] < best)
				best = row[j];
		}
		if (best > max)
			return max + 1;
	}
	return row[lb];
}

/*
 * "unknown keyword": with the keyword key was likely meant to be, else
 * with every keyword.
 */
static void
unknown_keyword(const char *key, char *msg, size_t msglen)
{
	size_t i, off, d, max = strlen(key) < 5 ? 1 : 2, best = max + 1;
	size_t k = NKEYWORDS;
	int n;

	for (i = 0; i < NKEYWORDS; i++)
		if ((d = typo_distance(key, keywords[i].kw_name, max)) < best) {
			best = d;
			k = i;
		}
	if (k < NKEYWORDS) {
		snprintf(msg, msglen,
		         "unknown keyword '%.64s' (did you mean "
		         "'%s'?)",
		         key, keywords[k].kw_name);
		return;
	}
	n = snprintf(msg, msglen, "unknown keyword '%.64s' (valid:", key);
	for (i = 0; i < NKEYWORDS && n >= 0 && (size_t)n < msglen; i++) {
		off = (size_t)n;
		n = snprintf(msg + off, msglen - off, "%s %s", i ? "," : "",
		             keywords[i].kw_name);
		if (n >= 0)
			n += (int)off;
	}
	if (n >= 0 && (size_t)n < msglen)
		snprintf(msg + n, msglen - (size_t)n, ")");
}

int
sconf_set(struct sconf *sc, const char *key, const char *value, char *err,
          size_t errlen)
{
	const struct keyword *kw;
	char msg[SCONF_MSG_MAX];
	int rc;

	if ((kw = keyword_find(key)) == NULL) {
		unknown_keyword(key, msg, sizeof(msg));
		ncg_seterr(err, errlen, "command line: %s", msg);
		return -EINVAL;
	}
	/* Strings are replaced only once the new one is allocated. */
	if ((rc = set_value(sc, kw, value, 0, SRC_SET, msg, sizeof(msg))) ==
	    -EINVAL)
		ncg_seterr(err, errlen, "command line: %s", msg);
	else if (rc != 0)
		ncg_seterr(err, errlen, "command line: out of memory");
	return rc;
}

/* --- Lines --- */

/*
 * Splits line[0..len) into at most 3 words in buf (which has room for len
 * + 3 bytes): words[i] points into buf.  Returns the number of words, or
 * -EINVAL with a message in msg.
 */
static int
split(const char *line, size_t len, char *buf, char *words[3], char *msg,
      size_t msglen)
{
	size_t i = 0;
	int n = 0;
	unsigned char c;

	while (n < 3) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len || line[i] == '#')
			break;
		words[n++] = buf;
		if (line[i] == '"') {
			for (i++;; i++) {
				if (i == len) {
					ncg_seterr(
					    msg, msglen,
					    "unterminated quoted string");
					return -EINVAL;
				}
				if (line[i] == '"')
					break;
				if (line[i] == '\\') {
					if (i + 1 == len ||
					    (line[i + 1] != '"' &&
					     line[i + 1] != '\\')) {
						ncg_seterr(
						    msg, msglen,
						    "only \\\" and \\\\ may "
						    "follow a backslash");
						return -EINVAL;
					}
					i++;
				}
				c = (unsigned char)line[i];
				if ((c < 0x20 && c != '\t') || c == 0x7f)
					goto control;
				*buf++ = line[i];
			}
			i++;
			if (i < len && line[i] != ' ' && line[i] != '\t') {
				ncg_seterr(msg, msglen,
				           "no space after a quoted string");
				return -EINVAL;
			}
		} else {
			for (; i < len && line[i] != ' ' && line[i] != '\t';
			     i++) {
				c = (unsigned char)line[i];
				if (c == '"') {
					ncg_seterr(msg, msglen,
					           "a quote inside a word");
					return -EINVAL;
				}
				if (c < 0x20 || c == 0x7f)
					goto control;
				*buf++ = line[i];
			}
		}
		*buf++ = '\0';
	}
	return n;
control:
	ncg_seterr(msg, msglen, "control character 0x%02x",
	           (unsigned)(unsigned char)line[i]);
	return -EINVAL;
}

static int
parse_line(struct sconf *sc, const char *line, size_t len, unsigned lineno,
           char *buf, char *msg, size_t msglen)
{
	const struct keyword *kw;
	char *w[3];
	int n;

	if (len > SCONF_MAX_LINE) {
		ncg_seterr(msg, msglen, "line too long (more than %d bytes)",
		           SCONF_MAX_LINE);
		return -EINVAL;
	}
	if ((n = split(line, len, buf, w, msg, msglen)) < 0)
		return n;
	if (n == 0)
		return 0;
	if ((kw = keyword_find(w[0])) == NULL) {
		unknown_keyword(w[0], msg, msglen);
		return -EINVAL;
	}
	if (n != 2) {
		ncg_seterr(msg, msglen, "'%s' takes one value%s", kw->kw_name,
		           n > 2 ? " (quote values with spaces)" : "");
		return -EINVAL;
	}
	return set_value(sc, kw, w[1], lineno, SRC_FILE, msg, msglen);
}

int
sconf_parse_string(const char *name, const char *text, size_t len,
                   struct sconf **out, char *err, size_t errlen)
{
	struct sconf *sc;
	char msg[SCONF_MSG_MAX], *buf;
	const char *line, *nl, *end = text + len;
	unsigned lineno = 0;
	size_t ll;
	int rc = 0;

	if (name == NULL)
		name = SCONF_UNNAMED;
	if (len > SCONF_MAX_FILE) {
		ncg_seterr(err, errlen,
		           "%s: file too large (more than %d bytes)", name,
		           SCONF_MAX_FILE);
		return -EFBIG;
	}
	if ((rc = sconf_new(&sc)) != 0) {
		ncg_seterr(err, errlen, "%s: out of memory", name);
		return rc;
	}
	free(sc->sc_file);
	if ((sc->sc_file = strdup(name)) == NULL ||
	    (buf = malloc(SCONF_MAX_LINE + 3)) == NULL) {
		sconf_free(sc);
		ncg_seterr(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	for (line = text; line < end; line = nl + 1) {
		lineno++;
		if ((nl = memchr(line, '\n', (size_t)(end - line))) == NULL)
			nl = end;
		ll = (size_t)(nl - line);
		if (ll > 0 && line[ll - 1] == '\r')
			ll--;
		if (memchr(line, '\0', ll) != NULL) {
			ncg_seterr(msg, sizeof(msg), "NUL byte");
			rc = -EINVAL;
		} else
			rc = parse_line(sc, line, ll, lineno, buf, msg,
			                sizeof(msg));
		if (rc == -ENOMEM)
			ncg_seterr(msg, sizeof(msg), "out of memory");
		if (rc != 0) {
			ncg_seterr(err, errlen, "%s:%u: %s", name, lineno, msg);
			break;
		}
	}
	free(buf);
	if (rc != 0) {
		sconf_free(sc);
		return rc;
	}
	*out = sc;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	return 0;
}

int
sconf_parse_file(const char *path, struct sconf **out, char *err, size_t errlen)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ncg_seterr(err, errlen, "%s: not a regular file", path);
		rc = -EINVAL;
		goto out;
	}
	/* The size is a hint: the file may change while it is read. */
	rc = fileio_read_fd(fd, SCONF_MAX_FILE, (size_t)st.st_size, 0, &text,
	                    &len);
	if (rc == -EFBIG)
		ncg_seterr(err, errlen,
		           "%s: file too large (more than %d bytes)", path,
		           SCONF_MAX_FILE);
	else if (rc != 0)
		ncg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
	else
		rc = sconf_parse_string(path, text, len, out, err, errlen);
out:
	fileio_free(text, len, 0);
	close(fd);
	return rc;
}

/* --- Validation --- */

int
sconf_name_valid(const char *s)
{
	unsigned char a[16];
	size_t len, lab = 0;
	int numeric = 1;
	const char *p;

	if (inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1)
		return 1;
	len = strlen(s);
	if (len == 0 || len > SCONF_MAX_NAME)
		return 0;
	for (p = s; *p != '\0'; p++) {
		if (*p == '.') {
			if (lab == 0 || p[-1] == '-')
				return 0;
			lab = 0;
			numeric = 1;
			continue;
		}
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
			numeric = 0;
		else if (*p == '-') {
			if (lab == 0)
				return 0;
			numeric = 0;
		} else if (*p < '0' || *p > '9')
			return 0;
		if (++lab > 63)
			return 0;
	}
	/* An all-numeric last label is a mistyped address, not a name. */
	return lab > 0 && p[-1] != '-' && !numeric;
}

/* "file:line" of a value, or "command line" when it was set there. */
static const char *
where(const struct sconf *sc, unsigned line, char *buf, size_t len)
{
	if (line == 0)
		return "command line";
	snprintf(buf, len, "%s:%u", sc->sc_file, line);
	return buf;
}

static int
check_path(const struct sconf *sc, enum sconf_key k, const char *kwname,
           const char *path, int dash_ok, char *err, size_t errlen)
{
	char pos[PATH_MAX + 16];

	if (path == NULL || path[0] != '/') {
		if (path != NULL && dash_ok && strcmp(path, "-") == 0)
			return 0;
		ncg_seterr(
		    err, errlen, "%s: %s: '%.64s' is not an absolute path%s",
		    where(sc, sc->sc_line[k], pos, sizeof(pos)), kwname,
		    path != NULL ? path : "", dash_ok ? " or \"-\"" : "");
		return -EINVAL;
	}
	return 0;
}

static int
group_valid(const char *g)
{
	size_t i;

	if (g[0] == '\0' || g[0] == '-' || strlen(g) > 32)
		return 0;
	for (i = 0; g[i] != '\0'; i++)
		if (!((g[i] >= 'a' && g[i] <= 'z') ||
		      (g[i] >= 'A' && g[i] <= 'Z') ||
		      (g[i] >= '0' && g[i] <= '9') || g[i] == '_' ||
		      g[i] == '-' || g[i] == '.'))
			return 0;
	return 1;
}

struct range {
	enum sconf_key r_key;
	const char *r_name;
	size_t r_off;
	unsigned r_min, r_max;
	int r_zero_ok; /* 0 allowed besides [min, max] */
};

static const struct range ranges[] = {
    {SCONF_K_SESSION_LIMIT, "session-limit",
     offsetof(struct sconf, sc_session_limit), 1, SCONF_MAX_SESSION_LIMIT, 0},
    {SCONF_K_SESSION_WAIT, "session-wait",
     offsetof(struct sconf, sc_session_wait), 1, SCONF_MAX_SESSION_WAIT, 0},
    {SCONF_K_MAX_STREAMS, "max-streams", offsetof(struct sconf, sc_max_streams),
     1, SCONF_MAX_MAX_STREAMS, 0},
    {SCONF_K_KEEPALIVE_INTERVAL, "keepalive-interval",
     offsetof(struct sconf, sc_keepalive_interval), SCONF_MIN_KEEPALIVE,
     SCONF_MAX_KEEPALIVE, 1},
    {SCONF_K_TCP_KEEPALIVE, "tcp-keepalive",
     offsetof(struct sconf, sc_tcp_keepalive), 1, SCONF_MAX_TCP_KEEPALIVE, 1},
    {SCONF_K_HANDSHAKE_TIMEOUT, "handshake-timeout",
     offsetof(struct sconf, sc_handshake_timeout), 1, SCONF_MAX_HANDSHAKE_TO,
     0},
    {SCONF_K_DEAD_PEER_TIMEOUT, "dead-peer-timeout",
     offsetof(struct sconf, sc_dead_peer_timeout), 1, SCONF_MAX_DEAD_PEER, 1},
    {SCONF_K_AUTH_TIMEOUT, "auth-timeout",
     offsetof(struct sconf, sc_auth_timeout), SCONF_MIN_AUTH_TIMEOUT,
     SCONF_MAX_AUTH_TIMEOUT, 0},
    {SCONF_K_MAX_CONNECTIONS, "max-connections",
     offsetof(struct sconf, sc_max_connections), SCONF_MIN_MAX_CONNECTIONS,
     SCONF_MAX_MAX_CONNECTIONS, 0},
    {SCONF_K_MAX_UNAUTH, "max-unauthenticated",
     offsetof(struct sconf, sc_max_unauth), SCONF_MIN_MAX_UNAUTH,
     SCONF_MAX_MAX_UNAUTH, 0},
    {SCONF_K_MAX_UNAUTH_PER_ADDR, "max-unauthenticated-per-address",
     offsetof(struct sconf, sc_max_unauth_per_addr),
     SCONF_MIN_MAX_UNAUTH_PER_ADDR, SCONF_MAX_MAX_UNAUTH_PER_ADDR, 0},
    {SCONF_K_PREAUTH_STREAMS, "preauth-streams",
     offsetof(struct sconf, sc_preauth_streams), SCONF_MIN_PREAUTH_STREAMS,
     SCONF_MAX_PREAUTH_STREAMS, 0},
    {SCONF_K_PREAUTH_BUFFER, "preauth-buffer",
     offsetof(struct sconf, sc_preauth_buffer), SCONF_MIN_PREAUTH_BUFFER,
     SCONF_MAX_PREAUTH_BUFFER, 0},
    {SCONF_K_AUTH_FAILURES, "auth-failures",
     offsetof(struct sconf, sc_auth_failures), SCONF_MIN_AUTH_FAILURES,
     SCONF_MAX_AUTH_FAILURES, 0},
    {SCONF_K_AUTH_FAILURES_PER_ADDR, "auth-failures-per-address",
     offsetof(struct sconf, sc_auth_failures_per_addr),
     SCONF_MIN_AUTH_FAILURES_PER_ADDR, SCONF_MAX_AUTH_FAILURES_PER_ADDR, 0},
    {SCONF_K_AUTH_CHECKS, "auth-checks", offsetof(struct sconf, sc_auth_checks),
     SCONF_MIN_AUTH_CHECKS, SCONF_MAX_AUTH_CHECKS, 0},
    {SCONF_K_AUTH_CHECKS_PER_ADDR, "auth-checks-per-address",
     offsetof(struct sconf, sc_auth_checks_per_addr),
     SCONF_MIN_AUTH_CHECKS_PER_ADDR, SCONF_MAX_AUTH_CHECKS_PER_ADDR, 0},
    {SCONF_K_SSH_GRACE, "ssh-login-grace-time",
     offsetof(struct sconf, sc_ssh_grace), 1, SCONF_MAX_SSH_GRACE, 0},
    {SCONF_K_SSH_MAX_STARTUPS, "ssh-max-startups",
     offsetof(struct sconf, sc_ssh_max_startups), 1, SCONF_MAX_SSH_MAX_STARTUPS,
     0},
    {SCONF_K_SSH_MAX_CONNECTIONS, "ssh-max-connections",
     offsetof(struct sconf, sc_ssh_max_conns), 1, SCONF_MAX_SSH_MAX_CONNECTIONS,
     0},
    {SCONF_K_SSH_MAX_CHANNELS, "ssh-max-channels",
     offsetof(struct sconf, sc_ssh_max_channels), 1, SCONF_MAX_SSH_MAX_CHANNELS,
     0},
    {SCONF_K_CLUSTER_LEASE_TTL, "cluster-lease-ttl",
     offsetof(struct sconf, sc_cluster_lease_ttl), SCONF_MIN_CLUSTER_LEASE_TTL,
     SCONF_MAX_CLUSTER_LEASE_TTL, 0},
};

/* The cluster keywords; nothing to check without cluster-etcd. */
static int
check_cluster(const struct sconf *sc, char *err, size_t errlen)
{
	char pos[PATH_MAX + 16];
	unsigned const *ln = sc->sc_line;
	const char *p;
	int rc;

	if (sc->sc_cluster_etcd == NULL)
		return 0;
	for (p = sc->sc_cluster_etcd; *p == ' ' || *p == ','; p++)
		;
	if (*p == '\0') {
		ncg_seterr(
		    err, errlen, "%s: cluster-etcd: no endpoint",
		    where(sc, ln[SCONF_K_CLUSTER_ETCD], pos, sizeof(pos)));
		return -EINVAL;
	}
	if (!clusterkey_prefix_valid(sc->sc_cluster_prefix)) {
		ncg_seterr(
		    err, errlen,
		    "%s: cluster-prefix: '%.64s' must start and end "
		    "with '/' and hold at most %d printable bytes",
		    where(sc, ln[SCONF_K_CLUSTER_PREFIX], pos, sizeof(pos)),
		    sc->sc_cluster_prefix, CLUSTERKEY_PREFIX_MAX);
		return -EINVAL;
	}
	if (sc->sc_cluster_node != NULL &&
	    !clusterkey_name_valid(sc->sc_cluster_node)) {
		ncg_seterr(
		    err, errlen,
		    "%s: cluster-node: '%.64s' is not 1 to %d of "
		    "A-Z a-z 0-9 . _ : @ -",
		    where(sc, ln[SCONF_K_CLUSTER_NODE], pos, sizeof(pos)),
		    sc->sc_cluster_node, CLUSTERKEY_NAME_MAX);
		return -EINVAL;
	}
	if (sc->sc_cluster_addr_host != NULL &&
	    (!sconf_name_valid(sc->sc_cluster_addr_host) ||
	     sc->sc_cluster_addr_port == 0)) {
		ncg_seterr(
		    err, errlen,
		    "%s: cluster-address: '%.64s' port %u is not an "
		    "address or host name and a port 1..65535",
		    where(sc, ln[SCONF_K_CLUSTER_ADDRESS], pos, sizeof(pos)),
		    sc->sc_cluster_addr_host, sc->sc_cluster_addr_port);
		return -EINVAL;
	}
	if ((sc->sc_cluster_etcd_cert == NULL) !=
	    (sc->sc_cluster_etcd_key == NULL)) {
		ncg_seterr(err, errlen,
		           "%s: cluster-etcd-cert and cluster-etcd-key go "
		           "together",
		           where(sc,
		                 ln[sc->sc_cluster_etcd_cert != NULL
		                        ? SCONF_K_CLUSTER_ETCD_CERT
		                        : SCONF_K_CLUSTER_ETCD_KEY],
		                 pos, sizeof(pos)));
		return -EINVAL;
	}
	if (sc->sc_cluster_etcd_cert != NULL &&
	    sc->sc_cluster_etcd_ca == NULL) {
		ncg_seterr(
		    err, errlen,
		    "%s: cluster-etcd-cert needs cluster-etcd-ca (a "
		    "client certificate is for TLS only)",
		    where(sc, ln[SCONF_K_CLUSTER_ETCD_CERT], pos, sizeof(pos)));
		return -EINVAL;
	}
	if ((sc->sc_cluster_etcd_ca != NULL &&
	     (rc = check_path(sc, SCONF_K_CLUSTER_ETCD_CA, "cluster-etcd-ca",
	                      sc->sc_cluster_etcd_ca, 0, err, errlen)) != 0) ||
	    (sc->sc_cluster_etcd_cert != NULL &&
	     (rc =
	          check_path(sc, SCONF_K_CLUSTER_ETCD_CERT, "cluster-etcd-cert",
	                     sc->sc_cluster_etcd_cert, 0, err, errlen)) != 0) ||
	    (sc->sc_cluster_etcd_key != NULL &&
	     (rc = check_path(sc, SCONF_K_CLUSTER_ETCD_KEY, "cluster-etcd-key",
	                      sc->sc_cluster_etcd_key, 0, err, errlen)) != 0))
		return rc;
	return 0;
}

static int
check_ranges(const struct sconf *sc, char *err, size_t errlen)
{
	const struct range *r;
	char pos[PATH_MAX + 16];
	unsigned v;
	size_t i;

	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		r = &ranges[i];
		v = *(const unsigned *)(const void *)((const char *)sc +
		                                      r->r_off);
		if ((v == 0 && r->r_zero_ok) ||
		    (v >= r->r_min && v <= r->r_max))
			continue;
		ncg_seterr(err, errlen, "%s: %s: %u is out of range (%s%u..%u)",
		           where(sc, sc->sc_line[r->r_key], pos, sizeof(pos)),
		           r->r_name, v, r->r_zero_ok ? "0 or " : "", r->r_min,
		           r->r_max);
		return -EINVAL;
	}
	return 0;
}

/*
 * The cluster keys: an inter-node listener or a static peer needs the CA,
 * the certificate and the key, each an absolute path; hosts are names or
 * addresses, "*" only for the listener.
 */
static int
validate_cluster(const struct sconf *sc, char *err, size_t errlen)
{
	static const struct {
		enum sconf_key k;
		const char *name;
		size_t off;
	} files[] = {
	    {SCONF_K_CLUSTER_CA, "cluster-ca",
	     offsetof(struct sconf, sc_cluster_ca)},
	    {SCONF_K_CLUSTER_CERT, "cluster-cert",
	     offsetof(struct sconf, sc_cluster_cert)},
	    {SCONF_K_CLUSTER_KEY, "cluster-key",
	     offsetof(struct sconf, sc_cluster_key)},
	};
	const unsigned *ln = sc->sc_line;
	char pos[PATH_MAX + 16];
	const char *path, *need;
	unsigned needline;
	size_t i;
	int rc;

	if (sc->sc_cluster_listen_host != NULL &&
	    ((strcmp(sc->sc_cluster_listen_host, "*") != 0 &&
	      !sconf_name_valid(sc->sc_cluster_listen_host)) ||
	     sc->sc_cluster_listen_port == 0)) {
		ncg_seterr(
		    err, errlen,
		    "%s: cluster-listen: '%.64s' port %u is not an "
		    "address or host name and a port 1..65535",
		    where(sc, ln[SCONF_K_CLUSTER_LISTEN], pos, sizeof(pos)),
		    sc->sc_cluster_listen_host, sc->sc_cluster_listen_port);
		return -EINVAL;
	}
	if (sc->sc_cluster_static_peer_host != NULL &&
	    (!sconf_name_valid(sc->sc_cluster_static_peer_host) ||
	     sc->sc_cluster_static_peer_port == 0)) {
		ncg_seterr(err, errlen,
		           "%s: cluster-static-peer: '%.64s' port %u is not "
		           "an address or host name and a port 1..65535",
		           where(sc, ln[SCONF_K_CLUSTER_STATIC_PEER], pos,
		                 sizeof(pos)),
		           sc->sc_cluster_static_peer_host,
		           sc->sc_cluster_static_peer_port);
		return -EINVAL;
	}
	need = NULL;
	needline = 0;
	if (sc->sc_cluster_listen_host != NULL) {
		need = "cluster-listen";
		needline = ln[SCONF_K_CLUSTER_LISTEN];
	} else if (sc->sc_cluster_static_peer_host != NULL) {
		need = "cluster-static-peer";
		needline = ln[SCONF_K_CLUSTER_STATIC_PEER];
	}
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path = *(char *const *)(const void *)((const char *)sc +
		                                      files[i].off);
		if (path == NULL && need == NULL)
			continue;
		if (path == NULL) {
			ncg_seterr(err, errlen, "%s: %s needs %s",
			           where(sc, needline, pos, sizeof(pos)), need,
			           files[i].name);
			return -EINVAL;
		}
		if ((rc = check_path(sc, files[i].k, files[i].name, path, 0,
		                     err, errlen)) != 0)
			return rc;
	}
	return 0;
}

int
sconf_validate(const struct sconf *sc, char *err, size_t errlen)
{
	const struct sconf_listen *l;
	const struct sconf_name *nm;
	char pos[PATH_MAX + 16];
	unsigned const *ln = sc->sc_line;
	size_t i;
	int rc;

	if (sc->sc_nlisten == 0) {
		ncg_seterr(err, errlen, "%s: no listen address", sc->sc_file);
		return -EINVAL;
	}
	for (i = 0; i < sc->sc_nlisten; i++) {
		l = &sc->sc_listen[i];
		if (strcmp(l->li_host, "*") != 0 &&
		    !sconf_name_valid(l->li_host)) {
			ncg_seterr(
			    err, errlen,
			    "%s: listen: '%.64s' is not an address or host "
			    "name",
			    where(sc, l->li_line, pos, sizeof(pos)),
			    l->li_host);
			return -EINVAL;
		}
		if (l->li_port == 0) {
			ncg_seterr(
			    err, errlen,
			    "%s: listen: port 0 is out of range (1..65535)",
			    where(sc, l->li_line, pos, sizeof(pos)));
			return -EINVAL;
		}
	}
	if ((rc = check_path(sc, SCONF_K_CERTIFICATE, "certificate",
	                     sc->sc_certificate, 0, err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_KEY, "key", sc->sc_key, 0, err,
	                     errlen)) != 0 ||
	    (sc->sc_tls_ticket_key != NULL &&
	     strcmp(sc->sc_tls_ticket_key, "none") != 0 &&
	     (rc = check_path(sc, SCONF_K_TLS_TICKET_KEY, "tls-ticket-key",
	                      sc->sc_tls_ticket_key, 0, err, errlen)) != 0) ||
	    (rc = check_path(sc, SCONF_K_DEVICES, "devices", sc->sc_devices, 0,
	                     err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_OPERATOR_SOCKET, "operator-socket",
	                     sc->sc_operator_socket, 0, err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_LOG_FILE, "log-file", sc->sc_log_file,
	                     1, err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_AUDIT_LOG, "audit-log",
	                     sc->sc_audit_log, 0, err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_SSH_HOST_KEY, "ssh-host-key",
	                     sc->sc_ssh_host_key, 0, err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_SSH_AUTHORIZED_KEYS,
	                     "ssh-authorized-keys", sc->sc_ssh_authorized_keys,
	                     0, err, errlen)) != 0 ||
	    (rc = check_path(sc, SCONF_K_SSH_LOG_FILE, "ssh-log-file",
	                     sc->sc_ssh_log_file, 1, err, errlen)) != 0)
		return rc;
	if ((strcmp(sc->sc_ssh_listen_host, "*") != 0 &&
	     !sconf_name_valid(sc->sc_ssh_listen_host)) ||
	    sc->sc_ssh_listen_port == 0) {
		ncg_seterr(err, errlen,
		           "%s: ssh-listen: '%.64s' port %u is not an address "
		           "or host name and a port 1..65535",
		           where(sc, ln[SCONF_K_SSH_LISTEN], pos, sizeof(pos)),
		           sc->sc_ssh_listen_host, sc->sc_ssh_listen_port);
		return -EINVAL;
	}
	if (sc->sc_metrics_listen_host != NULL &&
	    ((strcmp(sc->sc_metrics_listen_host, "*") != 0 &&
	      !sconf_name_valid(sc->sc_metrics_listen_host)) ||
	     sc->sc_metrics_listen_port == 0)) {
		ncg_seterr(
		    err, errlen,
		    "%s: metrics-listen: '%.64s' port %u is not an "
		    "address or host name and a port 1..65535",
		    where(sc, ln[SCONF_K_METRICS_LISTEN], pos, sizeof(pos)),
		    sc->sc_metrics_listen_host, sc->sc_metrics_listen_port);
		return -EINVAL;
	}
	if ((rc = validate_cluster(sc, err, errlen)) != 0)
		return rc;
	if (strlen(sc->sc_operator_socket) > SCONF_MAX_SOCKET_PATH) {
		ncg_seterr(
		    err, errlen,
		    "%s: operator-socket: path longer than %d bytes",
		    where(sc, ln[SCONF_K_OPERATOR_SOCKET], pos, sizeof(pos)),
		    SCONF_MAX_SOCKET_PATH);
		return -EINVAL;
	}
	if (sc->sc_operator_socket_mode > 0777) {
		ncg_seterr(err, errlen,
		           "%s: operator-socket-mode: %04o is more than 0777",
		           where(sc, ln[SCONF_K_OPERATOR_SOCKET_MODE], pos,
		                 sizeof(pos)),
		           sc->sc_operator_socket_mode);
		return -EINVAL;
	}
	if (sc->sc_operator_socket_group != NULL &&
	    !group_valid(sc->sc_operator_socket_group)) {
		ncg_seterr(
		    err, errlen,
		    "%s: operator-socket-group: '%.64s' is not a group name",
		    where(sc, ln[SCONF_K_OPERATOR_SOCKET_GROUP], pos,
		          sizeof(pos)),
		    sc->sc_operator_socket_group);
		return -EINVAL;
	}
	for (i = 0; i < sc->sc_nnames; i++) {
		nm = &sc->sc_names[i];
		if (nm->nm_name[0] == '\0') {
			ncg_seterr(err, errlen, "%s: name: empty",
			           where(sc, nm->nm_line, pos, sizeof(pos)));
			return -EINVAL;
		}
		if (!sconf_name_valid(nm->nm_name)) {
			ncg_seterr(err, errlen,
			           "%s: name: '%.64s' is not a DNS name or IP "
			           "address",
			           where(sc, nm->nm_line, pos, sizeof(pos)),
			           nm->nm_name);
			return -EINVAL;
		}
	}
	if ((rc = check_ranges(sc, err, errlen)) != 0 ||
	    (rc = check_cluster(sc, err, errlen)) != 0)
		return rc;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	return 0;
}
