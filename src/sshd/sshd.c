/*
 * ncgrpc-sshd: the SSH front door of ncgrpc.  Unchanged NETCONF-over-SSH
 * (RFC 6242) and SSH clients reach the devices connected to ncgrpcd: the
 * SSH user name names the device, the client's public key (authorized_keys)
 * names the operator and what it may open.  Every channel becomes one
 * Session call of ncgrpcd's operator API, on its Unix socket; this process
 * holds neither device secrets nor ncgrpcd's TLS key.
 *
 * This file: options, configuration, host key, authorized_keys, the
 * listening socket (with the caps on connections) and signals.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "akeys.h"
#include "audit.h"
#include "fileio.h"
#include "log.h"
#include "sconf.h"
#include "sshd.h"

#define SSHD_DEFAULT_CONF "/etc/ncgrpc/ncgrpcd.conf"
#define SSHD_BACKLOG      512
#define SSHD_ACCEPT_BURST 64 /* accepts per readiness, for fairness */

static struct {
	struct sshd sd;
	const char *conf_path;
	int conf_given;
	int lfd;
	uv_poll_t lpoll;
	int lpoll_open;
	uv_timer_t accept_again; /* after EMFILE: the poll rests a while */
	uint64_t emfile;         /* accept() failures for want of an fd */
	uv_signal_t sighup, sigint, sigterm;
} g;

/* How long the listener rests when no descriptor is left for a connection. */
#define SSHD_EMFILE_REST_MS 200

static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"init", no_argument, NULL, 'I'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static noreturn void usage(int code);

static void
usage(int code)
{
	fprintf(
	    code == 0 ? stdout : stderr,
	    "usage: ncgrpc-sshd [-dnV] [-f file] [-o keyword=value ...]\n"
	    "       ncgrpc-sshd -I | --init [-f file] [-o keyword=value ...]\n"
	    "       ncgrpc-sshd --help | --version\n"
	    "\n"
	    "The SSH front door of ncgrpc: NETCONF over SSH (RFC 6242) and "
	    "SSH shells for\n"
	    "every device connected to ncgrpcd.  The SSH user name selects "
	    "the device\n"
	    "(\"router-17\", or \"alice+router-17\"); the client's public key, "
	    "listed in\n"
	    "ssh-authorized-keys, names the operator and the devices and "
	    "session types it\n"
	    "may open.  Subsystem \"netconf\" opens a NETCONF session, "
	    "\"shell\" a shell, and\n"
	    "\"exec CMD\" a shell that runs CMD and ends.  Sessions go "
	    "through ncgrpcd's\n"
	    "operator socket; this daemon holds no device secret and no TLS "
	    "key.\n"
	    "\n"
	    "  -f file            configuration (default %s, whose absence\n"
	    "                     means the defaults); it shares ncgrpcd's "
	    "file and reads\n"
	    "                     the ssh-* keys, operator-socket and "
	    "audit-log\n"
	    "  -o keyword=value   override a configuration keyword\n"
	    "  -n                 check the configuration, host key and "
	    "authorized keys,\n"
	    "                     then exit\n"
	    "  -I, --init         make the host key if it is missing, then "
	    "exit\n"
	    "  -d                 debug logging\n"
	    "  -V, --version      print the version and exit\n"
	    "  -h, --help         print this help and exit\n"
	    "\n"
	    "With no host key at ssh-host-key, an ed25519 key is made (mode "
	    "0600, and a .pub\n"
	    "beside it); \"ncgrpc ssh-known-hosts\" prints the line clients "
	    "pin.  Only public\n"
	    "keys are accepted.  SIGHUP reloads ssh-authorized-keys (a "
	    "broken file keeps\n"
	    "the keys in force; open sessions are kept); SIGINT and SIGTERM "
	    "shut down.\n"
	    "Exit status: 0; 1 on a configuration or startup error; 64 on a "
	    "usage error.\nSee ncgrpc-sshd(8) "
	    "and docs/ncgrpcd.conf.md.\n",
	    SSHD_DEFAULT_CONF);
	exit(code);
}

/* --- Configuration --- */

static int
load_config(char **overrides, size_t noverrides)
{
	struct sconf *sc = NULL;
	char err[1024], *eq, key[128];
	size_t i;
	int rc;

	rc = sconf_parse_file(g.conf_path, &sc, err, sizeof(err));
	if (rc == -ENOENT && !g.conf_given)
		rc = sconf_new(&sc);
	if (rc != 0) {
		fprintf(stderr, "ncgrpc-sshd: %s\n",
		        err[0] != '\0' && rc != -ENOMEM ? err : strerror(-rc));
		return -1;
	}
	for (i = 0; i < noverrides; i++) {
		if ((eq = strchr(overrides[i], '=')) == NULL ||
		    (size_t)(eq - overrides[i]) >= sizeof(key)) {
			fprintf(
			    stderr,
			    "ncgrpc-sshd: -o '%s': expected keyword=value\n",
			    overrides[i]);
			sconf_free(sc);
			return -1;
		}
		memcpy(key, overrides[i], (size_t)(eq - overrides[i]));
		key[eq - overrides[i]] = '\0';
		if (sconf_set(sc, key, eq + 1, err, sizeof(err)) != 0) {
			fprintf(stderr, "ncgrpc-sshd: %s\n", err);
			sconf_free(sc);
			return -1;
		}
	}
	if (sconf_validate(sc, err, sizeof(err)) != 0) {
		fprintf(stderr, "ncgrpc-sshd: %s\n", err);
		sconf_free(sc);
		return -1;
	}
	g.sd.sd_sc = sc;
	return 0;
}

/* --- Host key --- */

static int
write_pub(ssh_key key, const char *path)
{
	char pub[4096 + 8];
	int n;

	n = snprintf(pub, sizeof(pub), "%s.pub", path);
	if (n < 0 || (size_t)n >= sizeof(pub))
		return -ENAMETOOLONG;
	(void)unlink(pub);
	if (ssh_pki_export_pubkey_file(key, pub) != SSH_OK)
		return -EIO;
	(void)chmod(pub, 0644);
	return 0;
}

/*
 * Loads the host key, or makes an ed25519 one (mode 0600, .pub beside it)
 * when there is none.  Returns 0 and *out, or -1 after printing why.  With
 * check, a missing key is only checked for: 0 and a NULL *out when it can
 * be made.
 */
static int
host_key(const char *path, int check, ssh_key *out)
{
	struct stat st;
	ssh_key key = NULL;
	mode_t old;
	int rc;

	if (stat(path, &st) == -1) {
		if (errno != ENOENT) {
			fprintf(stderr, "ncgrpc-sshd: host key \"%s\": %s\n",
			        path, strerror(errno));
			return -1;
		}
		if (check) {
			if ((rc = fileio_can_create(path)) != 0) {
				fprintf(
				    stderr,
				    "ncgrpc-sshd: host key \"%s\" is missing "
				    "and cannot be made there: %s (make "
				    "it, or point ssh-host-key at a "
				    "directory ncgrpc-sshd may write)\n",
				    path, strerror(-rc));
				return -1;
			}
			printf("%s: missing (an ed25519 host key will be "
			       "made)\n",
			       path);
			*out = NULL;
			return 0;
		}
		if (fileio_make_parent(path, 0755))
			log_info("created the directory of \"%s\"", path);
		if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) {
			fprintf(stderr,
			        "ncgrpc-sshd: cannot make a host key\n");
			return -1;
		}
		old = umask(077);
		rc = ssh_pki_export_privkey_file(key, NULL, NULL, NULL, path);
		umask(old);
		if (rc != SSH_OK || chmod(path, 0600) == -1 ||
		    write_pub(key, path) != 0) {
			fprintf(stderr,
			        "ncgrpc-sshd: cannot write host key \"%s\" or "
			        "its .pub\n",
			        path);
			ssh_key_free(key);
			return -1;
		}
		log_info("made host key \"%s\"", path);
		*out = key;
		return 0;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
		fprintf(stderr,
		        "ncgrpc-sshd: host key \"%s\": must be a regular file "
		        "readable by its owner only (mode %04o)\n",
		        path, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	if (ssh_pki_import_privkey_file(path, NULL, NULL, NULL, &key) !=
	    SSH_OK) {
		fprintf(stderr,
		        "ncgrpc-sshd: host key \"%s\": not a private key "
		        "libssh can read\n",
		        path);
		return -1;
	}
	*out = key;
	return 0;
}

static void
fingerprint(ssh_key key, char *out, size_t outlen)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp = NULL;

	snprintf(out, outlen, "?");
	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash,
	                           &hlen) != 0)
		return;
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	if (fp != NULL)
		snprintf(out, outlen, "%s %s",
		         ssh_key_type_to_char(ssh_key_type(key)), fp);
	ssh_string_free_char(fp);
}

/* --- authorized_keys --- */

static void
reload_keys(const char *why)
{
	struct akeys *as;
	char err[1024];
	int rc;

	rc = akeys_load(g.sd.sd_sc->sc_ssh_authorized_keys, &as, err,
	                sizeof(err));
	if (rc != 0) {
		log_warnx("%s: authorized keys not reloaded, the %zu in force "
		          "stay: %s",
		          why,
		          g.sd.sd_keys != NULL ? g.sd.sd_keys->as_nkeys : 0,
		          err);
		return;
	}
	akeys_free(g.sd.sd_keys);
	g.sd.sd_keys = as;
	log_info("%s: %zu authorized keys loaded from \"%s\"", why,
	         as->as_nkeys, g.sd.sd_sc->sc_ssh_authorized_keys);
}

/* --- Listening socket --- */

static void
peer_name(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port = 0;

	host[0] = '\0';
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
		snprintf(out, outlen, "%s:%u", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
		if (strncmp(host, "::ffff:", 7) == 0 &&
		    strchr(host + 7, ':') == NULL)
			snprintf(out, outlen, "%s:%u", host + 7, port);
		else
			snprintf(out, outlen, "[%s]:%u", host, port);
	} else
		snprintf(out, outlen, "unknown");
}

static void on_accept(uv_poll_t *, int, int);

static void
on_accept_again(uv_timer_t *t)
{
	(void)t;
	if (g.lpoll_open)
		uv_poll_start(&g.lpoll, UV_READABLE, on_accept);
}

/*
 * TCP keepalive and TCP_USER_TIMEOUT from dead-peer-timeout, as ncgrpcd's
 * device connections have (xport_opts_dead_peer()): a client whose link
 * is cut, or a half-open connection, gives back its slot, its ncgrpcd
 * session and the device's session within that time.
 */
static void
tune_tcp(int fd)
{
	unsigned s = g.sd.sd_sc->sc_dead_peer_timeout;
	int one = 1, v;

	if (s == 0)
		return;
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	v = s / 2 > 0 ? (int)(s / 2) : 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
	v = s / 6 > 0 ? (int)(s / 6) : 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
	v = (int)(s * 1000);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v));
}

static void
on_accept(uv_poll_t *p, int status, int events)
{
	struct sshd *sd = &g.sd;
	struct sockaddr_storage ss;
	socklen_t sl;
	char peer[80];
	int fd, i;

	(void)p;
	(void)events;
	if (status < 0)
		return;
	for (i = 0; i < SSHD_ACCEPT_BURST; i++) {
		sl = sizeof(ss);
		fd = accept4(g.lfd, (struct sockaddr *)&ss, &sl,
		             SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE) {
				/*
				 * The connection stays in the backlog, and the
				 * poll, level-triggered, would fire again at
				 * once: rest until descriptors come back.
				 */
				if (g.emfile++ % 1000 == 0)
					log_warn("accept (listener resting "
					         "%d ms; %llu times so far)",
					         SSHD_EMFILE_REST_MS,
					         (unsigned long long)g.emfile);
				uv_poll_stop(&g.lpoll);
				uv_timer_start(&g.accept_again, on_accept_again,
				               SSHD_EMFILE_REST_MS, 0);
			} else if (errno != EAGAIN && errno != EINTR &&
			           errno != ECONNABORTED)
				log_warn("accept");
			return;
		}
		tune_tcp(fd);
		peer_name(&ss, peer, sizeof(peer));
		/* Over a cap: closed at once, like OpenSSH's MaxStartups. */
		if (sd->sd_nconns >= sd->sd_sc->sc_ssh_max_conns ||
		    sd->sd_nunauth >= sd->sd_sc->sc_ssh_max_startups) {
			if (sd->sd_dropped++ % 1000 == 0)
				log_warnx("connection from %s dropped: %u "
				          "connections, %u not authenticated "
				          "(%llu dropped so far)",
				          peer, sd->sd_nconns, sd->sd_nunauth,
				          (unsigned long long)sd->sd_dropped);
			close(fd);
			continue;
		}
		sconn_accept(sd, fd, peer);
	}
}

static int
listen_socket(const char *host, uint16_t port)
{
	struct addrinfo hints, *res = NULL, *ai;
	char portstr[8];
	int fd = -1, one = 1, zero = 0, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", port);
	/* "*": one IPv6 socket that takes IPv4 too, else IPv4 alone. */
	if (strcmp(host, "*") == 0) {
		if ((fd = listen_socket("::", port)) != -1)
			return fd;
		host = "0.0.0.0";
	}
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		log_warnx("ssh-listen \"%s\": %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		            ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero,
			           sizeof(zero));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, SSHD_BACKLOG) == 0)
			break;
		log_warn("ssh-listen \"%s\" port %u", host, port);
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* --- Signals and shutdown --- */

static void
shutdown_all(void)
{
	if (g.sd.sd_stopping)
		return;
	g.sd.sd_stopping = 1;
	log_info("shutting down");
	if (g.lpoll_open) {
		g.lpoll_open = 0;
		uv_close((uv_handle_t *)&g.accept_again, NULL);
		uv_close((uv_handle_t *)&g.lpoll, NULL);
		close(g.lfd);
	}
	sconn_close_all(&g.sd, "ncgrpc-sshd shutting down");
	uv_close((uv_handle_t *)&g.sighup, NULL);
	uv_close((uv_handle_t *)&g.sigint, NULL);
	uv_close((uv_handle_t *)&g.sigterm, NULL);
}

static void
on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	if (signum == SIGHUP)
		reload_keys("SIGHUP");
	else
		shutdown_all();
}

int
main(int argc, char **argv)
{
	enum log_level level = LOG_LEVEL_INFO;
	char **overrides = NULL, err[1024];
	size_t noverrides = 0;
	ssh_key key = NULL;
	uv_loop_t loop;
	int ch, check = 0, init = 0, rc;

	log_init("ncgrpc-sshd", level);
	g.conf_path = SSHD_DEFAULT_CONF;
	if ((overrides = calloc((size_t)argc, sizeof(*overrides))) == NULL)
		fatalx("out of memory");
	while ((ch = getopt_long(argc, argv, "df:hIno:V", longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'd':
			level = LOG_LEVEL_DEBUG;
			break;
		case 'f':
			g.conf_path = optarg;
			g.conf_given = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'I':
			init = 1;
			break;
		case 'o':
			overrides[noverrides++] = optarg;
			break;
		case 'V':
			printf("ncgrpc-sshd %s\n", NCGRPC_VERSION);
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
	rc = load_config(overrides, noverrides);
	free(overrides);
	if (rc != 0)
		return 1;
	if (check && init)
		usage(64);
	/*
	 * --init: the host key a first start makes, made now.  The systemd
	 * unit runs it with full privileges (ExecStartPre=+), so that the
	 * daemon itself runs with /etc read-only.
	 */
	if (init) {
		rc = host_key(g.sd.sd_sc->sc_ssh_host_key, 0, &key);
		ssh_key_free(key);
		sconf_free(g.sd.sd_sc);
		return rc == 0 ? 0 : 1;
	}
	if (check) {
		struct akeys *as;

		if (host_key(g.sd.sd_sc->sc_ssh_host_key, 1, &key) != 0)
			return 1;
		ssh_key_free(key);
		if (akeys_load(g.sd.sd_sc->sc_ssh_authorized_keys, &as, err,
		               sizeof(err)) != 0) {
			fprintf(stderr, "ncgrpc-sshd: %s\n", err);
			return 1;
		}
		printf("ncgrpc-sshd: configuration OK, %zu authorized keys\n",
		       as->as_nkeys);
		akeys_free(as);
		sconf_free(g.sd.sd_sc);
		return 0;
	}
	if (strcmp(g.sd.sd_sc->sc_ssh_log_file, "-") != 0 &&
	    (rc = log_open(g.sd.sd_sc->sc_ssh_log_file)) != 0) {
		fprintf(stderr, "ncgrpc-sshd: cannot open log \"%s\": %s\n",
		        g.sd.sd_sc->sc_ssh_log_file, strerror(-rc));
		return 1;
	}
	if ((rc = audit_open(g.sd.sd_sc->sc_audit_log)) != 0)
		fatalx("cannot open audit log \"%s\": %s",
		       g.sd.sd_sc->sc_audit_log, strerror(-rc));
	signal(SIGPIPE, SIG_IGN);
	if (host_key(g.sd.sd_sc->sc_ssh_host_key, 0, &key) != 0)
		return 1;
	fingerprint(key, g.sd.sd_hostfp, sizeof(g.sd.sd_hostfp));
	if (akeys_load(g.sd.sd_sc->sc_ssh_authorized_keys, &g.sd.sd_keys, err,
	               sizeof(err)) != 0)
		fatalx("%s", err);
	if ((g.sd.sd_bind = ssh_bind_new()) == NULL)
		fatalx("out of memory");
	{
		bool no = false;

		ssh_bind_options_set(g.sd.sd_bind,
		                     SSH_BIND_OPTIONS_PROCESS_CONFIG, &no);
	}
	/* The bind takes the key over. */
	if (ssh_bind_options_set(g.sd.sd_bind, SSH_BIND_OPTIONS_IMPORT_KEY,
	                         key) != SSH_OK)
		fatalx("host key: %s", ssh_get_error(g.sd.sd_bind));
	LIST_INIT(&g.sd.sd_conns);
	uv_loop_init(&loop);
	g.sd.sd_loop = &loop;
	g.lfd = listen_socket(g.sd.sd_sc->sc_ssh_listen_host,
	                      g.sd.sd_sc->sc_ssh_listen_port);
	if (g.lfd == -1)
		fatalx("cannot listen on ssh-listen \"%s\" port %u",
		       g.sd.sd_sc->sc_ssh_listen_host,
		       g.sd.sd_sc->sc_ssh_listen_port);
	uv_poll_init(&loop, &g.lpoll, g.lfd);
	uv_timer_init(&loop, &g.accept_again);
	uv_poll_start(&g.lpoll, UV_READABLE, on_accept);
	g.lpoll_open = 1;
	uv_signal_init(&loop, &g.sighup);
	uv_signal_init(&loop, &g.sigint);
	uv_signal_init(&loop, &g.sigterm);
	uv_signal_start(&g.sighup, on_signal, SIGHUP);
	uv_signal_start(&g.sigint, on_signal, SIGINT);
	uv_signal_start(&g.sigterm, on_signal, SIGTERM);
	log_info("listening on \"%s\" port %u, host key %s, %zu authorized "
	         "keys, operator socket \"%s\"",
	         g.sd.sd_sc->sc_ssh_listen_host, g.sd.sd_sc->sc_ssh_listen_port,
	         g.sd.sd_hostfp, g.sd.sd_keys->as_nkeys,
	         g.sd.sd_sc->sc_operator_socket);
	uv_run(&loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(&loop);
	if (rc != 0)
		log_warnx("loop closed with handles open: %s", uv_strerror(rc));
	ssh_bind_free(g.sd.sd_bind);
	akeys_free(g.sd.sd_keys);
	sconf_free(g.sd.sd_sc);
	ssh_finalize();
	return 0;
}
