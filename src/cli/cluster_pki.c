/*
 * ncgrpc cluster: the command, and the cluster PKI (docs/cluster.md).
 * "ca init DIR" makes the cluster CA, "node-cert" a node certificate signed
 * by it, with which ncgrpcd nodes authenticate each other (mutual TLS on
 * cluster-listen).  "status" reads etcd (cluster.c, built with the etcd
 * client).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certgen.h"
#include "cli.h"

#define CLUSTER_CA_NAME   "ncgrpc-cluster-ca"
#define CLUSTER_CA_DAYS   3650
#define CLUSTER_NODE_DAYS 825
#define CLUSTER_MAX_NAMES 32

static const char cluster_usage[] =
    "usage: ncgrpc cluster status\n"
    "       ncgrpc cluster ca init DIR [--days N]\n"
    "       ncgrpc cluster node-cert --ca DIR [--out DIR] [--days N]\n"
    "                                NAME [--address HOST ...]\n"
    "\n"
    "  status        Prints the nodes (name, address, alive), the devices\n"
    "                each holds, and the health of every etcd member, from\n"
    "                the etcd of cluster-etcd in the configuration (-f).\n"
    "  ca init DIR   Makes the cluster CA in DIR (created if missing, mode\n"
    "                0700): ca.key (mode 0600) and ca.crt, valid N days\n"
    "                (default 3650).  An existing ca.key is never "
    "overwritten.\n"
    "  node-cert     Makes NAME.crt and NAME.key (mode 0600) in --out "
    "(default:\n"
    "                the current directory), signed by the CA of --ca DIR,\n"
    "                valid N days (default 825), for client and server\n"
    "                authentication.  Its CN is NAME; its subjectAltName\n"
    "                holds NAME and every --address (a host name or an IP\n"
    "                address the other nodes dial: cluster-address's host,\n"
    "                without its port).\n"
    "\n"
    "Give each node its NAME.crt, NAME.key and the CA's ca.crt (never\n"
    "ca.key) as cluster-cert, cluster-key and cluster-ca (docs/cluster.md).\n";

static int
cluster_usage_error(const char *msg, const char *arg)
{
	cli_err("cluster: %s%s%s%s", msg, arg != NULL ? " \"" : "",
	        arg != NULL ? arg : "", arg != NULL ? "\"" : "");
	fputs(cluster_usage, stderr);
	return CLI_EXIT_USAGE;
}

static int
parse_days(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 ||
	    v > CERTGEN_MAX_DAYS)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int
path_in(char *buf, size_t len, const char *dir, const char *name,
        const char *ext)
{
	if ((size_t)snprintf(buf, len, "%s/%s%s", dir, name, ext) >= len) {
		cli_err("cluster: path \"%s/%s%s\" is too long", dir, name,
		        ext);
		return -ENAMETOOLONG;
	}
	return 0;
}

static int
ca_init(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"days", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char cert[PATH_MAX], key[PATH_MAX], err[512];
	unsigned days = CLUSTER_CA_DAYS;
	const char *dir;
	int ch;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			if (parse_days(optarg, &days) != 0)
				return cluster_usage_error(
				    "--days must be 1..36500, not", optarg);
			break;
		case 'h':
			fputs(cluster_usage, stdout);
			return CLI_EXIT_OK;
		default:
			return cluster_usage_error("unknown option",
			                           argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return cluster_usage_error("ca init needs one DIR", NULL);
	dir = argv[optind];
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		cli_err("cluster: cannot create \"%s\": %s", dir,
		        strerror(errno));
		return CLI_EXIT_FAIL;
	}
	if (path_in(cert, sizeof(cert), dir, "ca", ".crt") != 0 ||
	    path_in(key, sizeof(key), dir, "ca", ".key") != 0)
		return CLI_EXIT_FAIL;
	if (certgen_ca(CLUSTER_CA_NAME, days, cert, key, err, sizeof(err)) !=
	    0) {
		cli_err("cluster: %s", err);
		return CLI_EXIT_FAIL;
	}
	printf("made the cluster CA: %s (key %s, keep it off the nodes)\n",
	       cert, key);
	return CLI_EXIT_OK;
}

/*
 * The host of --address as a certificate names it: "[V6]" loses its
 * brackets; NULL for a "HOST:PORT" (the SubjectAltName would hold the port
 * and match nothing).
 */
static char *
address_host(char *arg)
{
	unsigned char a6[16];
	size_t len = strlen(arg);

	if (len > 2 && arg[0] == '[' && arg[len - 1] == ']') {
		arg[len - 1] = '\0';
		arg++;
	}
	if (strchr(arg, ':') != NULL && inet_pton(AF_INET6, arg, a6) != 1)
		return NULL;
	return arg;
}

static int
node_cert(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"ca", required_argument, NULL, 'c'},
	    {"out", required_argument, NULL, 'o'},
	    {"address", required_argument, NULL, 'a'},
	    {"days", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *names[CLUSTER_MAX_NAMES + 1];
	char cacert[PATH_MAX], cakey[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	char err[512];
	const char *ca = NULL, *out = ".";
	unsigned days = CLUSTER_NODE_DAYS;
	size_t n = 1, i;
	int ch;

	optind = 0;
	opterr = 0;
	/* Options may follow NAME: "node-cert --ca D n1 --address 10.0.0.1". */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			ca = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'a':
			if (n > CLUSTER_MAX_NAMES)
				return cluster_usage_error(
				    "too many --address, at", optarg);
			if ((names[n] = address_host(optarg)) == NULL)
				return cluster_usage_error(
				    "--address is a host name or an IP "
				    "address, "
				    "without a port, not",
				    optarg);
			n++;
			break;
		case 'd':
			if (parse_days(optarg, &days) != 0)
				return cluster_usage_error(
				    "--days must be 1..36500, not", optarg);
			break;
		case 'h':
			fputs(cluster_usage, stdout);
			return CLI_EXIT_OK;
		default:
			if (optopt != 0)
				return cluster_usage_error(
				    "option needs a value:", argv[optind - 1]);
			return cluster_usage_error("unknown option",
			                           argv[optind - 1]);
		}
	}
	if (ca == NULL)
		return cluster_usage_error("node-cert needs --ca DIR", NULL);
	if (argc - optind != 1)
		return cluster_usage_error("node-cert needs one NAME", NULL);
	names[0] = argv[optind];
	if (strchr(names[0], '/') != NULL || names[0][0] == '.')
		return cluster_usage_error("a node NAME is a plain name, not",
		                           names[0]);
	/* The name itself is in the SAN once, even when given as --address. */
	for (i = 1; i < n; i++)
		if (strcmp(names[i], names[0]) == 0) {
			names[i] = names[--n];
			break;
		}
	if (path_in(cacert, sizeof(cacert), ca, "ca", ".crt") != 0 ||
	    path_in(cakey, sizeof(cakey), ca, "ca", ".key") != 0 ||
	    path_in(cert, sizeof(cert), out, names[0], ".crt") != 0 ||
	    path_in(key, sizeof(key), out, names[0], ".key") != 0)
		return CLI_EXIT_FAIL;
	if (certgen_signed(names, n, days, cacert, cakey, cert, key, err,
	                   sizeof(err)) != 0) {
		cli_err("cluster: %s", err);
		return CLI_EXIT_FAIL;
	}
	printf("made %s and %s for node \"%s\"", cert, key, names[0]);
	for (i = 1; i < n; i++)
		printf("%s%s", i == 1 ? " (" : ", ", names[i]);
	printf("%s\n", n > 1 ? ")" : "");
	return CLI_EXIT_OK;
}

int
cmd_cluster(const struct cli *cl, int argc, char **argv)
{
	if (cli_wants_help(argc, argv) ||
	    (argc >= 2 && strcmp(argv[1], "help") == 0)) {
		fputs(cluster_usage, stdout);
		return CLI_EXIT_OK;
	}
	if (argc >= 2 && strcmp(argv[1], "status") == 0) {
#ifdef NCGRPC_HAVE_ETCD
		return cmd_cluster_status(cl, argc - 1, argv + 1);
#else
		cli_err("cluster status: this ncgrpc was built without etcd");
		return CLI_EXIT_FAIL;
#endif
	}
	if (argc >= 3 && strcmp(argv[1], "ca") == 0 &&
	    strcmp(argv[2], "init") == 0)
		return ca_init(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "node-cert") == 0)
		return node_cert(argc - 1, argv + 1);
	return cluster_usage_error(argc < 2 ? "no cluster command given"
	                                    : "unknown cluster command",
	                           argc < 2 ? NULL : argv[1]);
}
