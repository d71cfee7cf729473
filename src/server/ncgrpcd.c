/*
 * ncgrpcd: the management-system side of NETCONF and shell sessions over
 * outbound HTTPS.  Devices (Junos, or ncgrpc-agent) dial in over TLS and
 * speak jnx.jet.netconf.Ncgrpc; operators reach them through the operator
 * API on a local Unix socket (ncgrpc, or any gRPC client).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <uv.h>

#include "audit.h"
#include "broker.h"
#include "certgen.h"
#ifdef NCGRPC_HAVE_ETCD
#include "cluster.h"
#include "etcd.h"
#endif
#include "err.h"
#include "fileio.h"
#include "filewatch.h"
#include "forward.h"
#include "grpc.h"
#include "log.h"
#include "metrics_http.h"
#include "operator.h"
#include "preauth.h"
#include "registry.h"
#include "sconf.h"
#include "srvmetrics.h"
#include "ticketkey.h"
#include "tls.h"

/* Heap blocks from this size on are mmap()ed (see main()). */
#define NCGRPCD_MMAP_THRESHOLD (1024 * 1024)
/* Free memory kept at the top of the heap (see main()). */
#define NCGRPCD_TRIM_THRESHOLD (1024 * 1024)

#define NCGRPCD_DEFAULT_CONF "/etc/ncgrpc/ncgrpcd.conf"
#define NCGRPCD_CERT_DAYS    825
#define NCGRPCD_GRACE_MS     5000
#define NCGRPCD_RELOAD_DELAY 300
/* Longest a TLS 1.3 ticket may live (RFC 8446, 4.6.1): seven days. */
#define NCGRPCD_TICKET_LIFETIME (7 * 24 * 3600)
/*
 * File descriptors kept free of device connections: the operator socket's
 * clients, the logs, the registry and its reloads.
 */
#define NCGRPCD_FD_RESERVE 64
/*
 * Operators and other nodes run many calls on one connection, and a gRPC
 * client ends each call the server finished first with a RST_STREAM.  They
 * may send this many a second, above the sessions ncgrpcd can open, after
 * a burst of ten seconds' worth; nghttp2's rapid-reset guard (1,000, then
 * 33 a second) tore down an SSH front door or a node with every session on
 * it.  Devices keep the guard as it is: a device connection carries one
 * session.
 */
#define NCGRPCD_TRUSTED_RESET_RATE  1000
#define NCGRPCD_TRUSTED_RESET_BURST 10000

/* The daemon's state, one per process. */
static struct {
	uv_loop_t *loop;
	const char *conf_path;
	const char *log_override;
	struct sconf *sc;
	struct tls_ctx *tls;
	struct registry_throttle *throttle;
	struct preauth *preauth;
	struct broker *broker;
	struct grpc_server *devsrv;
	struct grpc_server *opsrv;
	struct grpc_server *nodesrv; /* NULL without cluster-listen */
	struct tls_ctx *node_tls;    /* cluster-listen: mutual TLS */
	struct tls_ctx *fwd_tls;     /* dialling other nodes */
	char static_peer[FORWARD_ADDR_MAX];
	struct metrics_http *mhttp; /* NULL without metrics-listen */
	struct cluster *cluster;    /* NULL: a single node */
	uv_signal_t sighup, sigint, sigterm;
	struct stat conf_st; /* the configuration as read; st_ino 0: none */
	struct filewatch watch;
	int pending;
	int stopping;
} ncd = {.conf_path = NCGRPCD_DEFAULT_CONF};

static const struct option main_longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"init", no_argument, NULL, 'I'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static noreturn void
usage(int code)
{
	fprintf(code == 0 ? stdout : stderr,
	        "usage: ncgrpcd [-dnV] [-f file] [-L logfile]\n"
	        "       ncgrpcd -I | --init [-f file]\n"
	        "       ncgrpcd --help | --version\n"
	        "\n"
	        "Accepts devices that dial out over TLS (gRPC on HTTP/2, "
	        "jnx.jet.netconf.Ncgrpc),\n"
	        "authenticates them against the device registry, and brokers "
	        "NETCONF and shell\n"
	        "sessions for operators on a local Unix socket "
	        "(see ncgrpc(1)).\n"
	        "\n"
	        "  -f file     configuration (default %s, whose absence "
	        "means the defaults)\n"
	        "  -n          check the configuration, registry and "
	        "certificates (the\n"
	        "              cluster's too), then exit\n"
	        "  -I, --init  make what the first start makes where it is "
	        "missing (devices\n"
	        "              file, certificate and key, TLS ticket key), "
	        "then exit\n"
	        "  -L logfile  log here instead of log-file; \"-\" is stderr\n"
	        "  -d          debug logging\n"
	        "  -V, --version  print the version and exit\n"
	        "  -h, --help     print this help and exit\n"
	        "\n"
	        "With no certificate at the configured path, ncgrpcd makes a "
	        "self-signed one\n"
	        "whose SubjectAltName holds the configured names.  SIGHUP "
	        "reloads the device\n"
	        "registry (so does a change to the file); SIGINT and SIGTERM "
	        "shut down\n"
	        "gracefully.  See ncgrpcd(8) and docs/ncgrpcd.conf.md.\n",
	        NCGRPCD_DEFAULT_CONF);
	exit(code);
}

/*
 * Creates the directory that will hold path (one level, as packagers
 * usually provide the rest), so that a first run with the defaults works.
 */
static void
ensure_parent(const char *path, mode_t mode)
{
	if (strcmp(path, "-") != 0 && fileio_make_parent(path, mode))
		log_info("created the directory of \"%s\"", path);
}

/* An empty registry file where there is none: 0, or -errno of open(). */
static int
make_registry_file(void)
{
	int fd;

	fd = open(ncd.sc->sc_devices, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	          0600);
	if (fd == -1)
		return errno == EEXIST ? 0 : -errno;
	dprintf(fd, "# ncgrpc device registry; add devices with 'ncgrpc "
	            "device add ID'\n");
	close(fd);
	log_info("made an empty device registry \"%s\"", ncd.sc->sc_devices);
	return 0;
}

static int
load_registry(struct registry **out, char *err, size_t errlen)
{
	struct registry *reg;
	int rc;

	rc = registry_load(ncd.sc->sc_devices, &reg, err, errlen);
	if (rc == -ENOENT) {
		/* No devices yet: start with an empty registry file. */
		(void)make_registry_file();
		rc = registry_load(ncd.sc->sc_devices, &reg, err, errlen);
	}
	if (rc != 0)
		return rc;
	registry_set_throttle(reg, ncd.throttle);
	*out = reg;
	return 0;
}

static void
reload_registry(const char *why)
{
	struct registry *reg;
	char err[512];

	if (ncd.stopping)
		return;
	if (ncd.sc->sc_cluster_etcd != NULL) {
		log_info("registry reload (%s) ignored: in a cluster the "
		         "registry comes from etcd",
		         why);
		return;
	}
	if (load_registry(&reg, err, sizeof(err)) != 0) {
		log_warnx(
		    "registry reload (%s) failed, keeping the old one: %s", why,
		    err);
		return;
	}
	log_info("registry reloaded (%s): %zu devices", why,
	         registry_count(reg));
	broker_set_registry(ncd.broker, reg);
}

static void
on_registry_changed(void *arg)
{
	(void)arg;
	reload_registry("file changed");
}

static void
on_server_done(void *arg)
{
	(void)arg;
	if (--ncd.pending > 0)
		return;
	metrics_http_close(ncd.mhttp, NULL, NULL);
	ncd.mhttp = NULL;
	broker_free(ncd.broker);
	ncd.broker = NULL;
	preauth_free(ncd.preauth);
	ncd.preauth = NULL;
	uv_close((uv_handle_t *)&ncd.sighup, NULL);
	uv_close((uv_handle_t *)&ncd.sigint, NULL);
	uv_close((uv_handle_t *)&ncd.sigterm, NULL);
	if (ncd.sc->sc_cluster_etcd == NULL)
		filewatch_close(&ncd.watch);
}

static void
shutdown_server(const char *why)
{
	if (ncd.stopping)
		return;
	ncd.stopping = 1;
	log_info("shutting down (%s)", why);
	broker_shutdown(ncd.broker, "server shutting down");
	forward_shutdown("server shutting down");
	ncd.pending = ncd.nodesrv != NULL ? 3 : 2;
#ifdef NCGRPC_HAVE_ETCD
	if (ncd.cluster != NULL) {
		/* Revoking the lease releases our devices at once. */
		ncd.pending++;
		cluster_stop(ncd.cluster, on_server_done, NULL);
		ncd.cluster = NULL;
	}
#endif
	/* GOAWAY to everyone; sessions in flight get the grace period. */
	if (ncd.nodesrv != NULL)
		grpc_server_shutdown(ncd.nodesrv, NCGRPCD_GRACE_MS,
		                     on_server_done, NULL);
	grpc_server_shutdown(ncd.opsrv, NCGRPCD_GRACE_MS, on_server_done, NULL);
	grpc_server_shutdown(ncd.devsrv, NCGRPCD_GRACE_MS, on_server_done,
	                     NULL);
}

/*
 * SIGHUP reloads the registry, not the configuration: an operator who
 * edited ncgrpcd.conf and sent it is told so, once per change.
 */
static void
conf_changed_warning(void)
{
	struct stat st;

	if (stat(ncd.conf_path, &st) == -1)
		memset(&st, 0, sizeof(st));
	if (st.st_ino == ncd.conf_st.st_ino &&
	    st.st_size == ncd.conf_st.st_size &&
	    st.st_mtim.tv_sec == ncd.conf_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == ncd.conf_st.st_mtim.tv_nsec)
		return;
	ncd.conf_st = st;
	log_warnx("\"%s\" changed since ncgrpcd started: its settings take "
	          "effect at the next restart (SIGHUP reloads the device "
	          "registry only)",
	          ncd.conf_path);
}

static void
on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	if (signum == SIGHUP) {
		conf_changed_warning();
		reload_registry("SIGHUP");
	} else
		shutdown_server(signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void
on_dev_conn_open(struct grpc_conn *conn, void *arg)
{
	uint64_t ns;

	(void)arg;
	if (grpc_conn_handshake(conn, &ns) == 1) {
		metrics_count(srvm.sm_tls, SRVM_TLS_OK, 0, 1);
		metrics_observe(srvm.sm_tls_secs, 0, 0, (double)ns / 1e9);
	}
}

static void
on_dev_conn_closed(struct grpc_conn *conn, int err, const char *reason,
                   void *arg)
{
	(void)arg;
	if (grpc_conn_handshake(conn, NULL) == 0)
		metrics_count(srvm.sm_tls, SRVM_TLS_FAILED, 0, 1);
	if (err != 0 && err != NCG_ECLOSED)
		log_debug("device connection %s closed: %s",
		          grpc_conn_peer(conn), reason);
	if (ncd.broker != NULL)
		broker_conn_closed(ncd.broker, conn);
	preauth_conn_closed(ncd.preauth, conn);
}

static int
on_dev_may_accept(void *arg)
{
	(void)arg;
	return ncd.preauth == NULL || preauth_may_accept(ncd.preauth);
}

static int
on_dev_conn_accept(struct grpc_conn *conn, void *arg)
{
	(void)arg;
	return preauth_conn_accept(ncd.preauth, conn);
}

static void
on_dev_conn_trusted(struct grpc_conn *conn, void *arg)
{
	(void)arg;
	preauth_conn_trusted(ncd.preauth, conn);
}

static void
on_dev_limit(struct grpc_conn *conn, enum grpc_limit what, void *arg)
{
	(void)arg;
	preauth_limit(ncd.preauth, conn, what);
}

static const struct grpc_server_ops devsrv_ops = {
    .may_accept = on_dev_may_accept,
    .on_conn_accept = on_dev_conn_accept,
    .on_conn_open = on_dev_conn_open,
    .on_conn_trusted = on_dev_conn_trusted,
    .on_limit = on_dev_limit,
    .on_conn_closed = on_dev_conn_closed,
};

/*
 * max-connections, lowered to what the file descriptor limit allows with
 * NCGRPCD_FD_RESERVE left over, so that a flood of device connections
 * never takes the descriptors the operator socket needs.
 */
static unsigned
max_device_conns(void)
{
	unsigned want = ncd.sc->sc_max_connections;
	struct rlimit rl;
	rlim_t room;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return want;
	room = rl.rlim_cur > 2 * NCGRPCD_FD_RESERVE
	           ? rl.rlim_cur - NCGRPCD_FD_RESERVE
	           : rl.rlim_cur / 2;
	if ((rlim_t)want <= room)
		return want;
	log_info("max-connections %u lowered to %lu: the file descriptor "
	         "limit is %lu, with %d kept for the operator socket",
	         want, (unsigned long)room, (unsigned long)rl.rlim_cur,
	         NCGRPCD_FD_RESERVE);
	return (unsigned)room;
}

/* Makes a self-signed certificate when none exists yet. */
static int
ensure_certificate(void)
{
	const char **names = NULL;
	char **dflt = NULL;
	size_t n = 0, i;
	char err[512];
	int rc;

	if (access(ncd.sc->sc_certificate, F_OK) == 0 ||
	    access(ncd.sc->sc_key, F_OK) == 0)
		return 0;
	if (ncd.sc->sc_nnames > 0) {
		if ((names = calloc(ncd.sc->sc_nnames, sizeof(*names))) == NULL)
			return -ENOMEM;
		for (i = 0; i < ncd.sc->sc_nnames; i++)
			names[i] = ncd.sc->sc_names[i].nm_name;
		n = ncd.sc->sc_nnames;
	} else {
		if ((rc = certgen_names_from_host(&dflt, &n)) != 0)
			return rc;
		if ((names = calloc(n, sizeof(*names))) == NULL) {
			certgen_names_free(dflt, n);
			return -ENOMEM;
		}
		for (i = 0; i < n; i++)
			names[i] = dflt[i];
	}
	rc = certgen_selfsigned(names, n, NCGRPCD_CERT_DAYS,
	                        ncd.sc->sc_certificate, ncd.sc->sc_key, err,
	                        sizeof(err));
	if (rc == 0) {
		log_info("made a self-signed certificate \"%s\" for:",
		         ncd.sc->sc_certificate);
		for (i = 0; i < n; i++)
			log_info("  %s", names[i]);
		log_info("'ncgrpc device add ID' prints the device "
		         "configuration with it as trusted-cert");
	} else
		log_warnx("cannot make a certificate: %s", err);
	free(names);
	certgen_names_free(dflt, n);
	return rc;
}

static int
listen_all(void)
{
	struct addrinfo hints, *res, *ai;
	char host[INET6_ADDRSTRLEN];
	size_t i;
	int rc;

	for (i = 0; i < ncd.sc->sc_nlisten; i++) {
		const struct sconf_listen *l = &ncd.sc->sc_listen[i];

		if (strcmp(l->li_host, "*") == 0) {
			/* Dual-stack: "::" takes IPv4 too. */
			rc = grpc_server_listen(ncd.devsrv, "::", l->li_port,
			                        ncd.tls);
			if (rc == 0)
				log_info("listening on [::]:%u", l->li_port);
			else
				log_warnx("cannot listen on *:%u: %s",
				          l->li_port, uv_strerror(rc));
			if (rc != 0)
				return rc;
			continue;
		}
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		/* Startup only: a blocking lookup is fine here. */
		if ((rc = getaddrinfo(l->li_host, NULL, &hints, &res)) != 0) {
			log_warnx("cannot resolve listen address \"%s\": %s",
			          l->li_host, gai_strerror(rc));
			return -EINVAL;
		}
		for (ai = res; ai != NULL; ai = ai->ai_next) {
			if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host,
			                sizeof(host), NULL, 0,
			                NI_NUMERICHOST) != 0)
				continue;
			rc = grpc_server_listen(ncd.devsrv, host, l->li_port,
			                        ncd.tls);
			if (rc != 0) {
				log_warnx("cannot listen on %s port %u: %s",
				          host, l->li_port, uv_strerror(rc));
				freeaddrinfo(res);
				return rc;
			}
			log_info("listening on %s port %u", host, l->li_port);
		}
		freeaddrinfo(res);
	}
	return 0;
}

/*
 * Before each scrape: the counts preauth.c keeps for its log lines, which
 * are the metrics too.
 */
static void
collect_metrics(void *arg)
{
	static const struct {
		enum preauth_counter pc;
		enum srvm_limit lim;
	} map[] = {
	    {PREAUTH_C_CONNS, SRVM_LIMIT_CONNS},
	    {PREAUTH_C_UNAUTH, SRVM_LIMIT_UNAUTH},
	    {PREAUTH_C_UNAUTH_ADDR, SRVM_LIMIT_UNAUTH_ADDR},
	    {PREAUTH_C_AUTH_TIMEOUT, SRVM_LIMIT_AUTH_TIMEOUT},
	    {PREAUTH_C_STREAMS, SRVM_LIMIT_STREAMS},
	    {PREAUTH_C_BUFFER, SRVM_LIMIT_BUFFER},
	    {PREAUTH_C_MESSAGE, SRVM_LIMIT_MESSAGE},
	};
	unsigned nconns, nunauth;
	size_t i;

	(void)arg;
	if (ncd.preauth == NULL)
		return;
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		metrics_counter_set(srvm.sm_preauth_limits, map[i].lim, 0,
		                    preauth_count(ncd.preauth, map[i].pc));
	nconns = preauth_nconns(ncd.preauth);
	nunauth = preauth_nunauth(ncd.preauth);
	metrics_gauge_set(srvm.sm_conns, SRVM_CONN_AUTHENTICATED, 0,
	                  nconns >= nunauth ? nconns - nunauth : 0);
	metrics_gauge_set(srvm.sm_conns, SRVM_CONN_UNAUTHENTICATED, 0, nunauth);
}

static int
render_metrics(struct buf *body, void *arg)
{
	(void)arg;
	return metrics_render(srvm.sm_reg, body);
}

/*
 * metrics-listen: the first address the name resolves to ("*" is every
 * address, IPv4 too).
 */
static int
listen_metrics(void)
{
	struct addrinfo hints, *res;
	const char *host = ncd.sc->sc_metrics_listen_host;
	char port[8], text[INET6_ADDRSTRLEN];
	int rc;

	if (host == NULL)
		return 0;
	if ((rc = metrics_http_new(ncd.loop, NULL, render_metrics, NULL,
	                           &ncd.mhttp)) != 0)
		return rc;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(port, sizeof(port), "%u", ncd.sc->sc_metrics_listen_port);
	/* Startup only: a blocking lookup is fine here. */
	if ((rc = getaddrinfo(strcmp(host, "*") == 0 ? "::" : host, port,
	                      &hints, &res)) != 0) {
		log_warnx("cannot resolve metrics-listen address \"%s\": %s",
		          host, gai_strerror(rc));
		return -EINVAL;
	}
	rc = metrics_http_listen(ncd.mhttp, res->ai_addr);
	if (getnameinfo(res->ai_addr, res->ai_addrlen, text, sizeof(text), NULL,
	                0, NI_NUMERICHOST) != 0)
		snprintf(text, sizeof(text), "%s", host);
	freeaddrinfo(res);
	if (rc != 0) {
		log_warnx("cannot listen for metrics on %s port %u: %s", text,
		          ncd.sc->sc_metrics_listen_port, uv_strerror(rc));
		return rc;
	}
	log_info("metrics on http://%s%s%s:%u/metrics",
	         strchr(text, ':') != NULL ? "[" : "", text,
	         strchr(text, ':') != NULL ? "]" : "",
	         metrics_http_port(ncd.mhttp));
	return 0;
}

static int
listen_operator(void)
{
	char *end;
	const char *group;
	struct group *gr;
	unsigned long gid;
	int rc;

	(void)fileio_make_parent(ncd.sc->sc_operator_socket, 0755);
	rc = grpc_server_listen_unix(ncd.opsrv, ncd.sc->sc_operator_socket,
	                             (int)ncd.sc->sc_operator_socket_mode);
	if (rc != 0) {
		log_warnx("cannot listen on \"%s\": %s",
		          ncd.sc->sc_operator_socket, uv_strerror(rc));
		return rc;
	}
	if ((group = ncd.sc->sc_operator_socket_group) != NULL) {
		/*
		 * A name, else a numeric gid (docs/ncgrpcd.conf.md), as
		 * chown(1) takes them.
		 */
		gid = strtoul(group, &end, 10);
		if ((gr = getgrnam(group)) != NULL)
			rc = chown(ncd.sc->sc_operator_socket, (uid_t)-1,
			           gr->gr_gid);
		else if (*end == '\0' && group[0] >= '0' && group[0] <= '9' &&
		         gid < UINT32_MAX)
			rc = chown(ncd.sc->sc_operator_socket, (uid_t)-1,
			           (gid_t)gid);
		else {
			rc = -1;
			errno = ENOENT;
		}
		if (rc != 0)
			log_warnx("cannot give \"%s\" to group \"%s\": %s",
			          ncd.sc->sc_operator_socket, group,
			          errno == ENOENT ? "no such group"
			                          : strerror(errno));
	}
	log_info("operator API on \"%s\" (mode %04o)",
	         ncd.sc->sc_operator_socket, ncd.sc->sc_operator_socket_mode);
	return 0;
}

static int
load_config(int check)
{
	char err[1024];
	int rc;

	/* Before the parse: a file replaced during it draws the warning. */
	if (stat(ncd.conf_path, &ncd.conf_st) == -1)
		memset(&ncd.conf_st, 0, sizeof(ncd.conf_st));
	rc = sconf_parse_file(ncd.conf_path, &ncd.sc, err, sizeof(err));
	/* Only the default file may be absent: a named one is a typo away. */
	if (rc == -ENOENT && strcmp(ncd.conf_path, NCGRPCD_DEFAULT_CONF) != 0) {
		fprintf(stderr, "ncgrpcd: %s\n", err);
		return rc;
	}
	if (rc == -ENOENT) {
		if (check)
			fprintf(stderr,
			        "ncgrpcd: %s: not found; using the "
			        "defaults\n",
			        ncd.conf_path);
		if ((rc = sconf_new(&ncd.sc)) != 0)
			return rc;
	} else if (rc != 0) {
		fprintf(stderr, "ncgrpcd: %s\n", err);
		return rc;
	}
	if ((rc = sconf_validate(ncd.sc, err, sizeof(err))) != 0) {
		fprintf(stderr, "ncgrpcd: %s\n", err);
		return rc;
	}
	return 0;
}

static int cluster_tls_load(char *, size_t);
static int etcd_tls_check(char *, size_t);

/*
 * For "-n": whether a file that the first start makes (keyword names it)
 * could not be made, after saying why.
 */
static int
cannot_make(const char *path, const char *keyword)
{
	int rc;

	if ((rc = fileio_can_create(path)) == 0)
		return 0;
	fprintf(stderr,
	        "ncgrpcd: %s %s is missing and cannot be made there: %s "
	        "(make it, or point %s at a directory ncgrpcd may write, "
	        "such as /var/lib/ncgrpc)\n",
	        keyword, path, strerror(-rc), keyword);
	return 1;
}

static const char *ticket_key_path(char *, size_t);

/*
 * A cluster without what forwarding needs is legal (say, a first node
 * alone), but its sessions for devices on other nodes only wait out
 * session-wait here: say so, at the start and with -n.
 */
static const char *
forwarding_missing(void)
{
	const struct sconf *sc = ncd.sc;

	if (sc->sc_cluster_etcd == NULL)
		return NULL;
	if (sc->sc_cluster_listen_host == NULL)
		return "cluster-listen";
	if (sc->sc_cluster_addr_host == NULL)
		return "cluster-address";
	return NULL;
}

#define FORWARDING_MISSING_FMT                                                 \
	"cluster-etcd without %s: no session is forwarded between this node "  \
	"and the others, so one for a device held by another node waits for "  \
	"the device to connect here (docs/cluster.md)"

static int
check_only(void)
{
	struct registry *reg;
	struct tls_ctx *ctx;
	char err[512], buf[PATH_MAX];
	const char *path, *what;
	int rc;

	if (ncd.sc->sc_cluster_etcd != NULL)
		printf("cluster: node registry from etcd %s, prefix %s (the "
		       "devices file is not used)\n",
		       ncd.sc->sc_cluster_etcd, ncd.sc->sc_cluster_prefix);
	else if ((rc = registry_load(ncd.sc->sc_devices, &reg, err,
	                             sizeof(err))) == 0) {
		printf("%s: %zu devices\n", ncd.sc->sc_devices,
		       registry_count(reg));
		registry_free(reg);
	} else if (rc == -ENOENT) {
		if (cannot_make(ncd.sc->sc_devices, "devices"))
			return 1;
		printf("%s: missing (it will be created empty)\n",
		       ncd.sc->sc_devices);
	} else {
		fprintf(stderr, "ncgrpcd: %s\n", err);
		return 1;
	}
	/* As ensure_certificate(): a pair is made only where neither is. */
	if (access(ncd.sc->sc_certificate, F_OK) != 0 &&
	    access(ncd.sc->sc_key, F_OK) != 0) {
		if (cannot_make(ncd.sc->sc_certificate, "certificate") ||
		    cannot_make(ncd.sc->sc_key, "key"))
			return 1;
		printf("%s: missing (a self-signed certificate will be "
		       "made)\n",
		       ncd.sc->sc_certificate);
	} else if (tls_ctx_server_new(&ctx, ncd.sc->sc_certificate,
	                              ncd.sc->sc_key, err, sizeof(err)) != 0) {
		fprintf(stderr, "ncgrpcd: %s\n", err);
		return 1;
	} else
		tls_ctx_free(ctx);
	if ((path = ticket_key_path(buf, sizeof(buf))) != NULL &&
	    access(path, F_OK) != 0 && (rc = fileio_can_create(path)) != 0)
		fprintf(stderr,
		        "ncgrpcd: warning: tls-ticket-key %s is missing and "
		        "cannot be made there (%s): devices will not resume "
		        "their TLS sessions across a restart\n",
		        path, strerror(-rc));
	if (cluster_tls_load(err, sizeof(err)) != 0 ||
	    etcd_tls_check(err, sizeof(err)) != 0) {
		fprintf(stderr, "ncgrpcd: %s\n", err);
		return 1;
	}
	if (ncd.sc->sc_cluster_ca != NULL)
		printf("cluster: node certificate %s and CA %s OK\n",
		       ncd.sc->sc_cluster_cert, ncd.sc->sc_cluster_ca);
	tls_ctx_free(ncd.node_tls);
	tls_ctx_free(ncd.fwd_tls);
	ncd.node_tls = ncd.fwd_tls = NULL;
	if ((what = forwarding_missing()) != NULL)
		fprintf(stderr,
		        "ncgrpcd: warning: " FORWARDING_MISSING_FMT "\n", what);
	printf("%s: configuration OK\n", ncd.conf_path);
	return 0;
}

/*
 * The ticket key's file: tls-ticket-key, or beside the server's key, which
 * needs the same protection.  NULL for "none".
 */
static const char *
ticket_key_path(char *buf, size_t len)
{
	const char *path = ncd.sc->sc_tls_ticket_key, *slash;

	if (path != NULL)
		return strcmp(path, "none") == 0 ? NULL : path;
	slash = strrchr(ncd.sc->sc_key, '/');
	snprintf(buf, len, "%.*s/tls_ticket_key", (int)(slash - ncd.sc->sc_key),
	         ncd.sc->sc_key);
	return buf;
}

/*
 * TLS resumption: the ticket key from its file (made on first start), set
 * on the device-facing context, and the key of the broker's proofs.
 */
static void
setup_resumption(struct broker_opts *bo)
{
	const char *path;
	uint8_t key[TICKETKEY_LEN];
	char buf[PATH_MAX], err[512];
	int made, rc;

	if ((path = ticket_key_path(buf, sizeof(buf))) == NULL) {
		log_info("tls-ticket-key none: devices do not resume tls "
		         "sessions");
		return;
	}
	if (ncd.sc->sc_tls_ticket_key != NULL)
		ensure_parent(path, 0755);
	if ((rc = ticketkey_load(path, key, &made, err, sizeof(err))) != 0) {
		/* A file that is there but wrong is the operator's to fix. */
		if (access(path, F_OK) == 0 ||
		    RAND_bytes(key, sizeof(key)) != 1)
			fatalx("tls-ticket-key: %s", err);
		/*
		 * It could not be made (a read-only /etc under systemd's
		 * ProtectSystem, say): tickets then last until we stop.
		 */
		log_warnx("tls-ticket-key: %s; using a key kept in memory: "
		          "devices resume until ncgrpcd stops, not across a "
		          "restart",
		          err);
	}
	if (tls_ctx_set_ticket_key(ncd.tls, key, sizeof(key),
	                           NCGRPCD_TICKET_LIFETIME) != 0 ||
	    ticketkey_proof_key(key, bo->bo_resume_key) != 0)
		fatalx("tls-ticket-key: cannot use %s", path);
	OPENSSL_cleanse(key, sizeof(key));
	bo->bo_resume = 1;
	if (made)
		log_info("made the tls session ticket key \"%s\"", path);
}

/* --- Node-to-node forwarding (docs/cluster.md) ------------------------- */

/* The peer's address, kept for the messages after its transport is gone. */
static int
on_node_conn_accept(struct grpc_conn *conn, void *arg)
{
	char *peer;

	(void)arg;
	if ((peer = strdup(grpc_conn_peer(conn))) == NULL)
		return -ENOMEM;
	grpc_conn_set_arg(conn, peer);
	return 0;
}

static void
on_node_conn_open(struct grpc_conn *conn, void *arg)
{
	char name[64];

	(void)arg;
	/* The handshake verified its certificate against cluster-ca. */
	if (grpc_conn_peer_cert_name(conn, name, sizeof(name)) != 0)
		snprintf(name, sizeof(name), "?");
	log_info("node \"%s\" connected from %s", name, grpc_conn_peer(conn));
	grpc_conn_set_trusted(conn);
}

static void
on_node_conn_closed(struct grpc_conn *conn, int err, const char *reason,
                    void *arg)
{
	char *peer = grpc_conn_arg(conn);

	(void)arg;
	if (grpc_conn_handshake(conn, NULL) == 0)
		log_warnx("node connection from %s refused: %s",
		          peer != NULL ? peer : "?", reason);
	else if (err != 0 && err != NCG_ECLOSED)
		log_info("node connection from %s closed: %s",
		         peer != NULL ? peer : "?", reason);
	free(peer);
}

static const struct grpc_server_ops nodesrv_ops = {
    .on_conn_accept = on_node_conn_accept,
    .on_conn_open = on_node_conn_open,
    .on_conn_closed = on_node_conn_closed,
};

/*
 * cluster-static-peer: every device not connected here is looked for on
 * that one node.  For tests and two-node trials; the cluster core installs
 * its own resolver.
 */
static const char *
static_resolver(const char *device_id, void *arg)
{
	(void)device_id;
	(void)arg;
	return ncd.static_peer;
}

/*
 * The TLS contexts of the cluster: to serve other nodes, and to dial them.
 * 0, or -1 with err naming the setting at fault.
 */
static int
cluster_tls_load(char *err, size_t len)
{
	const struct sconf *sc = ncd.sc;
	char why[400];

	if (sc->sc_cluster_ca == NULL)
		return 0;
	if (sc->sc_cluster_listen_host != NULL &&
	    (tls_ctx_server_new(&ncd.node_tls, sc->sc_cluster_cert,
	                        sc->sc_cluster_key, why, sizeof(why)) != 0 ||
	     tls_ctx_server_require_client(ncd.node_tls, sc->sc_cluster_ca, why,
	                                   sizeof(why)) != 0)) {
		snprintf(err, len, "cluster-listen: %s", why);
		return -1;
	}
	if (tls_ctx_client_new_file(&ncd.fwd_tls, sc->sc_cluster_ca, why,
	                            sizeof(why)) != 0 ||
	    tls_ctx_client_set_cert(ncd.fwd_tls, sc->sc_cluster_cert,
	                            sc->sc_cluster_key, why,
	                            sizeof(why)) != 0) {
		snprintf(err, len, "cluster-cert: %s", why);
		return -1;
	}
	return 0;
}

/* The client certificate and trust anchor for etcd, when TLS is used. */
static int
etcd_tls_check(char *err, size_t len)
{
	const struct sconf *sc = ncd.sc;
	struct tls_ctx *ctx;
	char why[400];
	int rc = 0;

#ifdef NCGRPC_HAVE_ETCD
	/* As cluster_start() checks them, so that -n fails where it would. */
	if (sc->sc_cluster_etcd != NULL) {
		struct etcd_endpoint eps[ETCD_MAX_ENDPOINTS];
		size_t n;
		int tls;

		if (etcd_endpoints_parse(sc->sc_cluster_etcd, eps,
		                         ETCD_MAX_ENDPOINTS, &n, &tls) != 0) {
			snprintf(err, len,
			         "cluster-etcd: \"%.128s\" is not a list of "
			         "etcd endpoints (HOST:PORT, at most %d)",
			         sc->sc_cluster_etcd, ETCD_MAX_ENDPOINTS);
			return -1;
		}
		if (tls && sc->sc_cluster_etcd_ca == NULL) {
			snprintf(err, len,
			         "cluster-etcd: https endpoints need "
			         "cluster-etcd-ca");
			return -1;
		}
	}
#endif
	if (sc->sc_cluster_etcd_ca == NULL)
		return 0;
	if (tls_ctx_client_new_file(&ctx, sc->sc_cluster_etcd_ca, why,
	                            sizeof(why)) != 0) {
		snprintf(err, len, "cluster-etcd-ca: %s", why);
		return -1;
	}
	if (sc->sc_cluster_etcd_cert != NULL &&
	    tls_ctx_client_set_cert(ctx, sc->sc_cluster_etcd_cert,
	                            sc->sc_cluster_etcd_key, why,
	                            sizeof(why)) != 0) {
		snprintf(err, len, "cluster-etcd-cert: %s", why);
		rc = -1;
	}
	tls_ctx_free(ctx);
	return rc;
}

static void
setup_cluster_tls(void)
{
	char err[600];

	if (cluster_tls_load(err, sizeof(err)) != 0)
		fatalx("%s", err);
}

/* The calls of operators and other nodes: see NCGRPCD_TRUSTED_RESET_RATE. */
static void
trusted_resets(struct grpc_opts *o)
{
	o->go_reset_burst = NCGRPCD_TRUSTED_RESET_BURST;
	o->go_reset_rate = NCGRPCD_TRUSTED_RESET_RATE;
}

static int
listen_cluster(void)
{
	const struct sconf *sc = ncd.sc;
	struct grpc_opts o = {0};
	struct addrinfo hints, *res;
	char host[INET6_ADDRSTRLEN];
	const char *h = sc->sc_cluster_listen_host;
	int rc;

	if (ncd.fwd_tls != NULL) {
		if (forward_init(ncd.loop, ncd.fwd_tls) != 0)
			fatalx("forward: cannot start");
		if (sc->sc_cluster_static_peer_host != NULL) {
			snprintf(ncd.static_peer, sizeof(ncd.static_peer),
			         strchr(sc->sc_cluster_static_peer_host, ':')
			             ? "[%s]:%u"
			             : "%s:%u",
			         sc->sc_cluster_static_peer_host,
			         sc->sc_cluster_static_peer_port);
			forward_set_resolver(static_resolver, NULL);
			log_info("cluster-static-peer: devices not connected "
			         "here are looked for on %s",
			         ncd.static_peer);
		}
	}
	if (h == NULL)
		return 0;
	/* Other nodes open many sessions on one connection. */
	o.go_max_streams = 10000;
	trusted_resets(&o);
	o.go_max_message = 16 * 1024 * 1024;
	o.go_xport.xo_handshake_timeout_ms = sc->sc_handshake_timeout * 1000;
	xport_opts_dead_peer(&o.go_xport, sc->sc_dead_peer_timeout);
	if (grpc_server_new(ncd.loop, &o, &nodesrv_ops, NULL, &ncd.nodesrv) !=
	        0 ||
	    operator_register_node(ncd.broker, ncd.nodesrv) != 0)
		fatalx("out of memory");
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	/* Startup only: a blocking lookup is fine here. */
	if ((rc = getaddrinfo(strcmp(h, "*") == 0 ? "::" : h, NULL, &hints,
	                      &res)) != 0) {
		log_warnx("cannot resolve cluster-listen address \"%s\": %s", h,
		          gai_strerror(rc));
		return -EINVAL;
	}
	if (getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof(host), NULL,
	                0, NI_NUMERICHOST) != 0)
		snprintf(host, sizeof(host), "%s", h);
	freeaddrinfo(res);
	if ((rc = grpc_server_listen(ncd.nodesrv, host,
	                             sc->sc_cluster_listen_port,
	                             ncd.node_tls)) != 0) {
		log_warnx("cannot listen for nodes on %s port %u: %s", host,
		          sc->sc_cluster_listen_port, uv_strerror(rc));
		return rc;
	}
	log_info("nodes of the cluster on %s port %u (mutual tls, ca \"%s\")",
	         host, sc->sc_cluster_listen_port, sc->sc_cluster_ca);
	return 0;
}

#ifdef NCGRPC_HAVE_ETCD
/* The registry is in: devices may come now. */
static void
on_cluster_ready(void *arg)
{
	(void)arg;
	if (ncd.stopping)
		return;
	if (listen_all() != 0)
		fatalx("cannot listen for devices");
	log_info("ncgrpcd %s started: cluster node \"%s\"", NCGRPC_VERSION,
	         ncd.sc->sc_cluster_node);
}

/* The cluster-address of the node that holds device_id, or NULL. */
static const char *
cluster_resolver(const char *device_id, void *arg)
{
	(void)arg;
	return ncd.cluster != NULL
	           ? cluster_device_address(ncd.cluster, device_id)
	           : NULL;
}

static int
start_cluster(void)
{
	struct cluster_opts co = {0};
	char host[256], addr[300], err[512];
	int rc;

	if (ncd.sc->sc_cluster_node == NULL) {
		if (gethostname(host, sizeof(host)) != 0 ||
		    (ncd.sc->sc_cluster_node = strdup(host)) == NULL)
			fatalx("cluster-node: no host name to default to");
	}
	addr[0] = '\0';
	if (ncd.sc->sc_cluster_addr_host != NULL)
		snprintf(addr, sizeof(addr),
		         strchr(ncd.sc->sc_cluster_addr_host, ':') != NULL
		             ? "[%s]:%u"
		             : "%s:%u",
		         ncd.sc->sc_cluster_addr_host,
		         ncd.sc->sc_cluster_addr_port);
	co.co_endpoints = ncd.sc->sc_cluster_etcd;
	co.co_node = ncd.sc->sc_cluster_node;
	co.co_address = addr;
	co.co_prefix = ncd.sc->sc_cluster_prefix;
	co.co_ttl = ncd.sc->sc_cluster_lease_ttl;
	co.co_ca_file = ncd.sc->sc_cluster_etcd_ca;
	co.co_cert_file = ncd.sc->sc_cluster_etcd_cert;
	co.co_key_file = ncd.sc->sc_cluster_etcd_key;
	co.co_throttle = ncd.throttle;
	co.co_on_ready = on_cluster_ready;
	if ((rc = cluster_start(ncd.loop, ncd.broker, &co, &ncd.cluster, err,
	                        sizeof(err))) != 0) {
		log_warnx("%s", err);
		return rc;
	}
	/* Sessions for devices on other nodes go there (forward.c). */
	if (ncd.fwd_tls != NULL && ncd.static_peer[0] == '\0')
		forward_set_resolver(cluster_resolver, NULL);
	log_info("waiting for the registry from etcd before accepting "
	         "devices");
	return 0;
}
#else
static int
start_cluster(void)
{
	log_warnx("cluster-etcd: this ncgrpcd was built without etcd "
	          "(-DNCGRPC_ETCD=OFF)");
	return -ENOTSUP;
}
#endif

/*
 * --init: makes the files of a first start where they are missing (the
 * directories that hold them, one level; the devices file of a single
 * node; a self-signed certificate and its key; the TLS ticket key), then
 * exits.  The systemd unit runs it with full privileges
 * (ExecStartPre=+), so that the daemon itself runs with /etc read-only.
 */
static int
init_only(void)
{
	uint8_t key[TICKETKEY_LEN];
	char buf[PATH_MAX], err[512];
	const char *path;
	int made, rc;

	ensure_parent(ncd.sc->sc_certificate, 0755);
	ensure_parent(ncd.sc->sc_key, 0755);
	if (ncd.sc->sc_cluster_etcd == NULL) {
		ensure_parent(ncd.sc->sc_devices, 0755);
		if ((rc = make_registry_file()) != 0) {
			fprintf(stderr,
			        "ncgrpcd: cannot make the devices file "
			        "\"%s\": %s\n",
			        ncd.sc->sc_devices, strerror(-rc));
			return 1;
		}
	}
	if (ensure_certificate() != 0)
		return 1;
	if ((path = ticket_key_path(buf, sizeof(buf))) != NULL) {
		if (ncd.sc->sc_tls_ticket_key != NULL)
			ensure_parent(path, 0755);
		rc = ticketkey_load(path, key, &made, err, sizeof(err));
		OPENSSL_cleanse(key, sizeof(key));
		if (rc != 0) {
			fprintf(stderr, "ncgrpcd: tls-ticket-key: %s\n", err);
			return 1;
		}
		if (made)
			log_info("made the tls session ticket key \"%s\"",
			         path);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct grpc_opts devopts = {0}, opopts = {0};
	struct preauth_opts po = {0};
	struct broker_opts bo = {0};
	struct registry *reg;
	char err[512];
	int ch, check = 0, init = 0, rc;
	enum log_level level = LOG_LEVEL_INFO;

	log_init("ncgrpcd", level);
	while ((ch = getopt_long(argc, argv, "df:hIL:nV", main_longopts,
	                         NULL)) != -1) {
		switch (ch) {
		case 'd':
			level = LOG_LEVEL_DEBUG;
			break;
		case 'f':
			ncd.conf_path = optarg;
			break;
		case 'L':
			ncd.log_override = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'I':
			init = 1;
			break;
		case 'V':
			printf("ncgrpcd %s\n", NCGRPC_VERSION);
			return 0;
		case 'h':
			usage(0);
		default:
			usage(64);
		}
	}
	if (optind != argc)
		usage(64);
	log_set_level(level);
#ifdef __GLIBC__
	/*
	 * Each secret check takes 16 MiB (scrypt at the default cost) in a
	 * threadpool thread.  glibc raises its mmap threshold after the first
	 * such block is freed, so later ones come from the threads' arenas,
	 * whose tops malloc_trim() never shrinks: a storm of 12 devices left
	 * 66 MB behind for good.  A fixed threshold keeps large blocks in
	 * mmap(), given back by free().
	 */
	mallopt(M_MMAP_THRESHOLD, NCGRPCD_MMAP_THRESHOLD);
	/*
	 * A fixed mmap threshold also fixes the trim threshold, at 128 KiB:
	 * then a session's output, whose queue is freed whenever a write
	 * empties it, shrank the heap with brk() and grew it back, page by
	 * page, at nearly every message.  Each shrink is a TLB shootdown on
	 * every core: a fifth of ncgrpcd's time in a shell cat
	 * (BENCHMARKS.md, "A shell cat end to end").  The top of the heap now
	 * keeps up to 1 MiB; the connect storms' holes still go back
	 * (heaptrim.h), as malloc_trim() ignores this threshold.
	 */
	mallopt(M_TRIM_THRESHOLD, NCGRPCD_TRIM_THRESHOLD);
#endif
	if (load_config(check) != 0)
		return 1;
	if (check && init)
		usage(64);
	if (check)
		return check_only();
	if (init)
		return init_only();
	{
		const char *lf = ncd.log_override != NULL ? ncd.log_override
		                                          : ncd.sc->sc_log_file;

		ensure_parent(lf, 0750);
		ensure_parent(ncd.sc->sc_audit_log, 0750);
		ensure_parent(ncd.sc->sc_devices, 0755);
		ensure_parent(ncd.sc->sc_certificate, 0755);
		ensure_parent(ncd.sc->sc_key, 0755);
		if (strcmp(lf, "-") != 0 && (rc = log_open(lf)) != 0) {
			fprintf(stderr, "ncgrpcd: cannot open log \"%s\": %s\n",
			        lf, strerror(-rc));
			return 1;
		}
	}
	if ((rc = audit_open(ncd.sc->sc_audit_log)) != 0)
		fatalx("cannot open audit log \"%s\": %s", ncd.sc->sc_audit_log,
		       strerror(-rc));
	if (ensure_certificate() != 0)
		return 1;
	if ((rc = tls_ctx_server_new(&ncd.tls, ncd.sc->sc_certificate,
	                             ncd.sc->sc_key, err, sizeof(err))) != 0)
		fatalx("tls: %s", err);
	setup_resumption(&bo);
	setup_cluster_tls();
	if (forwarding_missing() != NULL)
		log_warnx(FORWARDING_MISSING_FMT, forwarding_missing());
	if (registry_throttle_new(&ncd.throttle) != 0)
		fatalx("out of memory");
	/*
	 * Per (device id, address): 5 failures a minute.  Per address, more:
	 * a whole site of devices behind one NAT address shares it.
	 */
	registry_throttle_set_limits(ncd.throttle, ncd.sc->sc_auth_failures,
	                             ncd.sc->sc_auth_failures_per_addr, 60000,
	                             0, 0);
	/*
	 * Every check waiting for a KDF slot belongs to a connection that
	 * has not authenticated yet: the line is as long as those may be.
	 */
	registry_throttle_set_checks(
	    ncd.throttle, ncd.sc->sc_auth_checks_per_addr,
	    ncd.sc->sc_auth_checks, ncd.sc->sc_max_unauth);
	if (ncd.sc->sc_cluster_etcd != NULL) {
		/* Empty until read from etcd; no device is accepted before. */
		if (registry_parse("etcd", "", 0, &reg, err, sizeof(err)) != 0)
			fatalx("%s", err);
		registry_set_throttle(reg, ncd.throttle);
	} else if (load_registry(&reg, err, sizeof(err)) != 0)
		fatalx("%s", err);

	signal(SIGPIPE, SIG_IGN);
	ncd.loop = uv_default_loop();
	po.po_auth_timeout_ms = ncd.sc->sc_auth_timeout * 1000;
	po.po_max_conns = max_device_conns();
	po.po_max_unauth = ncd.sc->sc_max_unauth;
	po.po_max_unauth_per_addr = ncd.sc->sc_max_unauth_per_addr;
	if (preauth_new(ncd.loop, &po, &ncd.preauth) != 0 ||
	    srvmetrics_init() != 0)
		fatalx("out of memory");
	metrics_set_collect(srvm.sm_reg, collect_metrics, NULL);
	bo.bo_session_limit = ncd.sc->sc_session_limit;
	bo.bo_session_wait_ms = ncd.sc->sc_session_wait * 1000;
	bo.bo_preauth = ncd.preauth;
	if (broker_new(ncd.loop, &bo, reg, &ncd.broker) != 0)
		fatalx("out of memory");
	devopts.go_max_streams = ncd.sc->sc_max_streams;
	devopts.go_preauth_streams = ncd.sc->sc_preauth_streams;
	devopts.go_preauth_buffer = ncd.sc->sc_preauth_buffer;
	devopts.go_ping_interval_ms = ncd.sc->sc_keepalive_interval * 1000;
	devopts.go_xport.xo_handshake_timeout_ms =
	    ncd.sc->sc_handshake_timeout * 1000;
	devopts.go_xport.xo_keepalive_idle = ncd.sc->sc_tcp_keepalive;
	devopts.go_xport.xo_keepalive_intvl = 15;
	devopts.go_xport.xo_keepalive_cnt = 4;
	/* A dead device is noticed within the bound, idle or busy. */
	xport_opts_dead_peer(&devopts.go_xport, ncd.sc->sc_dead_peer_timeout);
	trusted_resets(&opopts);
	if (grpc_server_new(ncd.loop, &devopts, &devsrv_ops, NULL,
	                    &ncd.devsrv) != 0 ||
	    grpc_server_new(ncd.loop, &opopts, NULL, NULL, &ncd.opsrv) != 0 ||
	    broker_register_device_methods(ncd.broker, ncd.devsrv) != 0 ||
	    operator_register(ncd.broker, ncd.opsrv) != 0)
		fatalx("out of memory");
	if (ncd.sc->sc_cluster_etcd != NULL) {
		if (listen_operator() != 0 || listen_metrics() != 0 ||
		    listen_cluster() != 0 || start_cluster() != 0)
			return 1;
	} else if (listen_all() != 0 || listen_operator() != 0 ||
	           listen_metrics() != 0 || listen_cluster() != 0)
		return 1;

	uv_signal_init(ncd.loop, &ncd.sighup);
	uv_signal_init(ncd.loop, &ncd.sigint);
	uv_signal_init(ncd.loop, &ncd.sigterm);
	uv_signal_start(&ncd.sighup, on_signal, SIGHUP);
	uv_signal_start(&ncd.sigint, on_signal, SIGINT);
	uv_signal_start(&ncd.sigterm, on_signal, SIGTERM);
	if (ncd.sc->sc_cluster_etcd == NULL &&
	    (rc = filewatch_start(ncd.loop, &ncd.watch, ncd.sc->sc_devices,
	                          NCGRPCD_RELOAD_DELAY, on_registry_changed,
	                          NULL)) != 0)
		log_warnx("cannot watch \"%s\" (%s); reload it with SIGHUP",
		          ncd.sc->sc_devices, uv_strerror(rc));
	if (ncd.sc->sc_cluster_etcd == NULL)
		log_info("ncgrpcd %s started: %zu devices registered",
		         NCGRPC_VERSION, registry_count(reg));
	uv_run(ncd.loop, UV_RUN_DEFAULT);

	forward_free();
	tls_ctx_free(ncd.fwd_tls);
	tls_ctx_free(ncd.node_tls);
	tls_ctx_free(ncd.tls);
	registry_throttle_free(ncd.throttle);
	srvmetrics_free();
	audit_close();
	sconf_free(ncd.sc);
	rc = uv_loop_close(ncd.loop);
	/*
	 * The threadpool's threads (where secrets are checked) exit now, while
	 * OpenSSL is still up to free what it keeps for each thread; left to
	 * libuv's destructor, they outlived OpenSSL's atexit cleanup and their
	 * error state was lost (valgrind: "definitely lost").
	 */
	uv_library_shutdown();
	log_info("stopped");
	return rc == 0 ? 0 : 1;
}
