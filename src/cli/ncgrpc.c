/*
 * ncgrpc: the operator CLI of ncgrpc.  It lists the devices connected to
 * ncgrpcd, watches them come and go, opens NETCONF and shell sessions on
 * them through the operator API (proto/ncgrpc_operator.proto, on a local
 * Unix socket), and adds devices to the registry.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "sconf.h"

#define CLI_DEFAULT_CONFIG "/etc/ncgrpc/ncgrpcd.conf"

static const char usage_text[] =
    "NAME\n"
    "     ncgrpc - operate network devices connected to ncgrpcd\n"
    "\n"
    "SYNOPSIS\n"
    "     ncgrpc [-s SOCKET] [-f CONFIG] COMMAND [ARGS]\n"
    "\n"
    "     ncgrpc devices [--json]\n"
    "     ncgrpc watch [--json] [--current]\n"
    "     ncgrpc session DEVICE --netconf|--shell [--line] [--wait SECONDS]\n"
    "     ncgrpc device add ID [--set] [--secret-stdin]\n"
    "     ncgrpc device remove ID\n"
    "     ncgrpc ssh-known-hosts [HOST ...]\n"
    "     ncgrpc cluster status\n"
    "     ncgrpc cluster ca init DIR [--days N]\n"
    "     ncgrpc cluster node-cert --ca DIR NAME [--address HOST ...]\n"
    "                               [--out DIR] [--days N]\n"
    "     ncgrpc help\n"
    "     ncgrpc COMMAND ... --help\n"
    "\n"
    "DESCRIPTION\n"
    "     Devices (Junos boxes, or hosts running ncgrpc-agent) dial out to\n"
    "     ncgrpcd over HTTPS.  ncgrpc reaches them through ncgrpcd's operator\n"
    "     API, a gRPC service on a local Unix socket whose permissions decide\n"
    "     who may use it (docs/operator-api.md).\n"
    "\n"
    "     -s SOCKET   The operator socket.  Default: operator-socket of "
    "CONFIG,\n"
    "                 else /run/ncgrpc/operator.sock.\n"
    "     -f CONFIG   The ncgrpcd configuration, read for the socket path "
    "and,\n"
    "                 by \"device add\", for the names, port, certificate and\n"
    "                 devices file.  Default /etc/ncgrpc/ncgrpcd.conf; when\n"
    "                 that file is missing the defaults apply.\n"
    "     -h, --help  Print this text.\n"
    "     -V          Print the version.\n"
    "\n"
    "COMMANDS\n"
    "     devices [--json]\n"
    "           The connected devices: DEVICE, PEER (address:port of the\n"
    "           latest connection), CONNECTED (since, local time, and how\n"
    "           long ago), INSTANCE (changes when the device application\n"
    "           restarts), IDLE (whether a connection is waiting, so a "
    "session\n"
    "           starts at once, and how many) and SESSIONS (active now).\n"
    "           --json prints a JSON array of objects with the proto field\n"
    "           names (device_id, peer, connected_since, instance_id,\n"
    "           idle_connections, active_sessions); as in the proto3 JSON\n"
    "           mapping, the 64-bit connected_since and instance_id are\n"
    "           strings.\n"
    "\n"
    "     watch [--json] [--current]\n"
    "           Prints device events as they happen, one per line, until\n"
    "           interrupted (Ctrl-C; exit status 0): CONNECTED, DISCONNECTED,\n"
    "           RESTARTED.  --current first prints a CONNECTED event for each\n"
    "           device connected now.  --json prints each event as a JSON\n"
    "           object (kind, device, reason) on one line.\n"
    "\n"
    "     session DEVICE --netconf|--shell [--line] [--wait SECONDS]\n"
    "           Opens a NETCONF or shell session on DEVICE.  --wait is how "
    "long\n"
    "           ncgrpcd may wait for an idle connection of the device (1 to\n"
    "           600; 0 or none: session-wait of ncgrpcd).  Output goes to\n"
    "           standard output byte for byte.\n"
    "\n"
    "           When standard input is not a terminal (a pipe or a file) it "
    "is\n"
    "           sent to the device as is.  At its end, a shell session gets a\n"
    "           last \"exit\" line, so the shell runs every command before it\n"
    "           and the session ends after their output; a NETCONF session\n"
    "           gets nothing more, so the input should end with a\n"
    "           <close-session/> rpc (otherwise ncgrpc waits for the device;\n"
    "           interrupt it with Ctrl-C).  Ctrl-C cancels the session.\n"
    "\n"
    "           In a terminal, lines are sent as they are typed (the terminal\n"
    "           stays in line mode and echoes them).  Ctrl-C sends SIGINT to\n"
    "           the session's processes on the device, and does not end\n"
    "           ncgrpc.  Ctrl-D on an empty line ends the session: a shell "
    "gets\n"
    "           \"exit\", a NETCONF session is cancelled.  How the session "
    "ended\n"
    "           is printed on standard error.\n"
    "\n"
    "           In both modes Ctrl-\\ (SIGQUIT) and SIGTERM cancel the "
    "session\n"
    "           at once.\n"
    "\n"
    "           A shell in a terminal is a raw terminal when the device\n"
    "           offers one (ncgrpc-agent does): every key goes to the device\n"
    "           as it is typed, so Tab completion, arrow keys, vi, top and\n"
    "           Ctrl-C work as on the device's console; the device echoes\n"
    "           and the window size follows the terminal.  At the start of a\n"
    "           line \"~.\" leaves, \"~^Z\" suspends, \"~?\" lists the "
    "escapes,\n"
    "           \"~~\" sends one \"~\".  A device without it\n"
    "           (Junos) gives line mode, said so on standard error: lines\n"
    "           are edited locally without echo and shown once the device\n"
    "           echoes them.  --line asks for line mode.  The terminal's\n"
    "           settings are restored however the session ends.\n"
    "\n"
    "     device add ID [--set] [--secret-stdin]\n"
    "           Adds device ID to the device registry (the devices file of\n"
    "           CONFIG; ncgrpcd reloads it by itself) with a new random\n"
    "           secret, or with the first line of standard input with\n"
    "           --secret-stdin, and prints the configuration to paste on the\n"
    "           device: a Junos outbound-https stanza (for \"load merge\n"
    "           terminal\", or ncgrpc-agent's configuration file), or with "
    "--set\n"
    "           the same as Junos set commands.  It names ncgrpcd by every\n"
    "           \"name\" of CONFIG (the first as the main address, the others "
    "as\n"
    "           backups) with the first listen port, and trusts ncgrpcd's\n"
    "           certificate.  Needs write access to the devices file, and\n"
    "           read access to CONFIG and the certificate.  An ID that is\n"
    "           already registered is refused.\n"
    "\n"
    "     device remove ID\n"
    "           Removes device ID from the registry.  Its connections are\n"
    "           refused from then on; sessions running now go on.\n"
    "\n"
    "     cluster status\n"
    "           With cluster-etcd in CONFIG (docs/cluster.md): the nodes\n"
    "           (NODE, ADDRESS from cluster-address, STATE alive while its\n"
    "           etcd lease lives, gone when devices still name a dead "
    "node),\n"
    "           the DEVICES each node holds (its presence keys), and every\n"
    "           etcd member's health (leader or follower, revision, raft\n"
    "           term, database size, or DOWN and why).  Exit status 2 when\n"
    "           etcd cannot be reached.  In a cluster, \"device add\" and\n"
    "           \"device remove\" edit the registry in etcd instead of the\n"
    "           devices file (add only creates an id that is absent), and\n"
    "           every node accepts the change within a second.\n"
    "\n"
    "     ssh-known-hosts [HOST ...]\n"
    "           Prints the known_hosts lines that pin the host key of\n"
    "           ncgrpc-sshd, the SSH front door (from the .pub file beside\n"
    "           ssh-host-key of CONFIG), one per HOST, or per \"name\" of\n"
    "           CONFIG, or for this host's name; with the port of ssh-listen\n"
    "           (\"[HOST]:PORT\" unless it is 22).  The key's SHA256\n"
    "           fingerprint goes to standard error, as a comment line.\n"
    "           Append the lines to ~/.ssh/known_hosts of each operator.\n"
    "\n"
    "     cluster ca init DIR\n"
    "     cluster node-cert --ca DIR NAME [--address HOST ...] [--out DIR]\n"
    "           The cluster PKI: a cluster CA in DIR (ca.crt, ca.key), and\n"
    "           node certificates signed by it for mutual TLS between\n"
    "           ncgrpcd nodes (docs/cluster.md; \"ncgrpc cluster --help\").\n"
    "\n"
    "EXIT STATUS\n"
    "     0    success\n"
    "     1    ncgrpcd refused (unknown device, no idle connection, session\n"
    "          limit, ...), the session failed or the device's connection was\n"
    "          lost, or a configuration or registry error\n"
    "     2    ncgrpcd cannot be reached on the operator socket\n"
    "     64   usage error\n"
    "     129  the session was ended by SIGHUP (the terminal went away)\n"
    "     130  the session was ended by Ctrl-C (pipe mode); 131 by Ctrl-\\\n"
    "     141  standard output was closed (for example by head(1))\n"
    "     143  the session was ended by SIGTERM\n"
    "\n"
    "EXAMPLES\n"
    "     List the devices, and watch them come and go:\n"
    "           $ ncgrpc devices\n"
    "           $ ncgrpc watch --current\n"
    "\n"
    "     Run NETCONF rpcs from a file (ending with <close-session/>):\n"
    "           $ ncgrpc session router-17 --netconf < rpcs.xml > replies.xml\n"
    "\n"
    "     Run shell commands from a script, or interactively:\n"
    "           $ echo 'uname -a; id' | ncgrpc session router-17 --shell\n"
    "           $ ncgrpc session router-17 --shell\n"
    "           $ ncgrpc session router-17 --shell --line\n"
    "\n"
    "     Register a device and load its configuration on a Junos box:\n"
    "           # ncgrpc device add router-17 > router-17.conf\n"
    "           # ncgrpc device add router-18 --set\n"
    "           # ncgrpc device add router-19 --secret-stdin < secret.txt\n"
    "\n"
    "     Use another ncgrpcd instance:\n"
    "           $ ncgrpc -f /etc/ncgrpc/lab.conf devices --json | jq "
    "'.[].peer'\n"
    "\n"
    "SEE ALSO\n"
    "     ncgrpcd(8), ncgrpc-agent(8), docs/operator-api.md\n";

static void
usage_hint(void)
{
	fprintf(stderr, "usage: ncgrpc [-s SOCKET] [-f CONFIG] COMMAND [ARGS]"
	                "\n       (see ncgrpc --help)\n");
}

void
cli_err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("ncgrpc: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int
cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("ncgrpc: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage_hint();
	return CLI_EXIT_USAGE;
}

int
cli_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	struct pollfd pfd;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* Shared with a non-blocking stdin: wait here. */
			pfd.fd = fd;
			pfd.events = POLLOUT;
			pfd.revents = 0;
			if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		return n < 0 ? -errno : -EIO;
	}
	return 0;
}

void
cli_format_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || localtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, len, "-");
}

void
cli_format_age(int64_t secs, char *buf, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs < 60)
		snprintf(buf, len, "%llds", (long long)secs);
	else if (secs < 3600)
		snprintf(buf, len, "%lldm", (long long)(secs / 60));
	else if (secs < 86400)
		snprintf(buf, len, "%lldh%lldm", (long long)(secs / 3600),
		         (long long)(secs % 3600 / 60));
	else
		snprintf(buf, len, "%lldd%lldh", (long long)(secs / 86400),
		         (long long)(secs % 86400 / 3600));
}

struct sconf *
cli_load_config(const struct cli *cl)
{
	struct sconf *sc = NULL;
	char err[1024];
	int rc;

	rc = sconf_parse_file(cl->ci_config, &sc, err, sizeof(err));
	if (rc == -ENOENT && !cl->ci_config_given) {
		if (sconf_new(&sc) != 0) {
			cli_err("out of memory");
			return NULL;
		}
		return sc;
	}
	if (rc != 0) {
		if (rc == -ENOENT || rc == -EACCES)
			cli_err("cannot read \"%s\": %s", cl->ci_config,
			        strerror(-rc));
		else
			cli_err("%s", err);
		return NULL;
	}
	if (sconf_validate(sc, err, sizeof(err)) != 0) {
		cli_err("%s", err);
		sconf_free(sc);
		return NULL;
	}
	return sc;
}

const char *
cli_socket_path(const struct cli *cl)
{
	static struct sconf *sc;
	char err[1024];
	int rc;

	if (cl->ci_socket != NULL)
		return cl->ci_socket;
	if (sc != NULL)
		return sc->sc_operator_socket;
	rc = sconf_parse_file(cl->ci_config, &sc, err, sizeof(err));
	if (rc == 0)
		return sc->sc_operator_socket;
	/*
	 * Operators often cannot read the daemon's configuration; then the
	 * default socket is the best guess, unless -f asked for the file.
	 */
	if (!cl->ci_config_given && (rc == -ENOENT || rc == -EACCES))
		return SCONF_DEFAULT_OPERATOR_SOCKET;
	if (rc == -ENOENT || rc == -EACCES)
		cli_err("cannot read \"%s\": %s", cl->ci_config, strerror(-rc));
	else
		cli_err("%s", err);
	return NULL;
}

int
cli_wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"config", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct cli cl = {.ci_config = CLI_DEFAULT_CONFIG};
	const char *cmd;
	int ch;

	log_init("ncgrpc", LOG_LEVEL_WARN);
	/* Writes to a closed stdout fail with EPIPE instead of killing us. */
	signal(SIGPIPE, SIG_IGN);
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+s:f:hV", longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case 's':
			cl.ci_socket = optarg;
			break;
		case 'f':
			cl.ci_config = optarg;
			cl.ci_config_given = 1;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return CLI_EXIT_OK;
		case 'V':
			printf("ncgrpc %s\n", NCGRPC_VERSION);
			return CLI_EXIT_OK;
		default:
			if (optopt != 0 && strchr("sf", optopt) != NULL)
				return cli_usage_error("option -%c needs a "
				                       "value",
				                       optopt);
			return cli_usage_error("unknown option \"%s\"",
			                       argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		return cli_usage_error("no command given");
	cmd = argv[0];
	if (strcmp(cmd, "cluster") == 0)
		return cmd_cluster(&cl, argc, argv);
	/* "ncgrpc session --help" and the like: this page, not an error. */
	if (strcmp(cmd, "help") == 0 || cli_wants_help(argc, argv)) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(cmd, "devices") == 0)
		return cmd_devices(&cl, argc, argv);
	if (strcmp(cmd, "watch") == 0)
		return cmd_watch(&cl, argc, argv);
	if (strcmp(cmd, "session") == 0)
		return cmd_session(&cl, argc, argv);
	if (strcmp(cmd, "device") == 0)
		return cmd_device(&cl, argc, argv);
	if (strcmp(cmd, "ssh-known-hosts") == 0)
		return cmd_ssh_known_hosts(&cl, argc, argv);
	return cli_usage_error("unknown command \"%s\"", cmd);
}
