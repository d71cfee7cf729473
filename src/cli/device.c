/*
 * "ncgrpc device add|remove": edits ncgrpcd's device registry (the
 * devices file of its configuration; ncgrpcd reloads it when it changes)
 * and prints the configuration to paste on a new device: the Junos
 * outbound-https stanza, or the same as Junos "set" commands.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "certgen.h"
#include "cli.h"
#include "registry.h"
#include "sconf.h"
#include "utf8.h"

/* The client's name on the device: a local label, never sent. */
#define DEVICE_CLIENT_NAME "ncgrpcd"
#define DEVICE_SET_PREFIX                                                      \
	"set system services outbound-https client " DEVICE_CLIENT_NAME

struct device_conf {
	const char *dc_id;
	const char *dc_secret;       /* plain text */
	const char *const *dc_names; /* server addresses, main first */
	size_t dc_nnames;
	unsigned dc_port;
	const char *dc_cert; /* PEM as a quoted-string body */
};

/* Same syntax as the registry's (registry.h): [A-Za-z0-9._:@-]{1,255}. */
static int
id_valid(const char *id)
{
	size_t i, n = strlen(id);

	if (n == 0 || n > REGISTRY_ID_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || strchr("._:@-", c) != NULL))
			return 0;
	}
	return 1;
}

/* s as a Junos quoted string: '"' and '\' get a backslash. */
static void
put_quoted(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void
print_stanza(FILE *f, const struct device_conf *dc)
{
	size_t i;

	fprintf(f,
	        "system {\n"
	        "    services {\n"
	        "        outbound-https {\n"
	        "            client %s {\n"
	        "                device-id %s;\n"
	        "                secret ",
	        DEVICE_CLIENT_NAME, dc->dc_id);
	put_quoted(f, dc->dc_secret);
	fputs("; ## SECRET-DATA\n", f);
	for (i = 0; i < dc->dc_nnames; i++) {
		fprintf(f,
		        "                address %s {%s\n"
		        "                    port %u;\n"
		        "                    trusted-cert \"%s\";\n"
		        "                }\n",
		        dc->dc_names[i],
		        dc->dc_nnames > 1 ? (i == 0 ? " # main" : " # backup")
		                          : "",
		        dc->dc_port, dc->dc_cert);
	}
	fputs("            }\n"
	      "        }\n"
	      "    }\n"
	      "}\n",
	      f);
}

static void
print_set(FILE *f, const struct device_conf *dc)
{
	size_t i;

	fprintf(f, DEVICE_SET_PREFIX " device-id %s\n", dc->dc_id);
	fputs(DEVICE_SET_PREFIX " secret ", f);
	put_quoted(f, dc->dc_secret);
	fputc('\n', f);
	for (i = 0; i < dc->dc_nnames; i++) {
		fprintf(f, DEVICE_SET_PREFIX " address %s port %u\n",
		        dc->dc_names[i], dc->dc_port);
		fprintf(f,
		        DEVICE_SET_PREFIX " address %s trusted-cert \"%s\"\n",
		        dc->dc_names[i], dc->dc_cert);
	}
}

/*
 * The secret for --secret-stdin: the first line of stdin, without its
 * line end.  It must be printable UTF-8 (it travels in a proto string and
 * is pasted into a quoted string), at most REGISTRY_SECRET_MAX bytes, and
 * must not start with "$9$", which devices would take for an obfuscated
 * secret.  Returns 0 and a malloc'ed *out, or -1 after printing why.
 */
static int
read_secret(char **out)
{
	size_t cap = REGISTRY_SECRET_MAX + 2, len = 0, i;
	char *buf;
	ssize_t n;

	struct termios saved, quiet;
	int echo_off = 0;

	if (isatty(STDIN_FILENO)) {
		fprintf(stderr, "secret: ");
		/* A secret typed at a terminal is not shown on it. */
		if (tcgetattr(STDIN_FILENO, &saved) == 0) {
			quiet = saved;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			echo_off =
			    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
		}
	}
	if ((buf = malloc(cap + 1)) == NULL) {
		if (echo_off)
			tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		cli_err("out of memory");
		return -1;
	}
	/* Read byte-wise up to the first newline: leave the rest alone. */
	while (len < cap) {
		n = read(STDIN_FILENO, buf + len, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		if (n == 0 || buf[len] == '\n')
			break;
		len++;
	}
	if (echo_off) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fputc('\n', stderr);
	}
	if (n < 0) {
		cli_err("reading the secret: %s", strerror(errno));
		free(buf);
		return -1;
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	if (len == 0) {
		cli_err("--secret-stdin: no secret on standard input");
		free(buf);
		return -1;
	}
	if (len > REGISTRY_SECRET_MAX) {
		cli_err("--secret-stdin: the secret is longer than %d bytes",
		        REGISTRY_SECRET_MAX);
		free(buf);
		return -1;
	}
	for (i = 0; i < len; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			break;
	if (i < len || !utf8_valid((const uint8_t *)buf, len)) {
		cli_err("--secret-stdin: the secret must be printable UTF-8");
		free(buf);
		return -1;
	}
	if (strncmp(buf, "$9$", 3) == 0) {
		cli_err("--secret-stdin: a secret must not start with \"$9$\" "
		        "(devices take it for an obfuscated one)");
		free(buf);
		return -1;
	}
	*out = buf;
	return 0;
}

/* A registry error, with a hint when it is about file permissions. */
static void
report_registry(const struct sconf *sc, int rc, const char *err)
{
	if (rc == -EACCES || rc == -EPERM || rc == -EROFS)
		cli_err("%s (ncgrpc needs write access to the devices file "
		        "\"%s\" and its directory: run it as the user that "
		        "owns them, e.g. root)",
		        err, sc->sc_devices);
	else
		cli_err("%s", err);
}

/* Fails when id is registered already (for --secret-stdin). */
static int
check_absent(const struct sconf *sc, const char *id)
{
	struct registry *reg;
	char err[512];
	int rc, has;

	rc = registry_load(sc->sc_devices, &reg, err, sizeof(err));
	if (rc == -ENOENT)
		return 0;
	if (rc != 0) {
		report_registry(sc, rc, err);
		return -1;
	}
	has = registry_has(reg, id);
	registry_free(reg);
	if (has) {
		cli_err("%s: device \"%s\" already exists (\"ncgrpc device "
		        "remove %s\" first)",
		        sc->sc_devices, id, id);
		return -1;
	}
	return 0;
}

/*
 * Cluster mode: the registry line goes to etcd, created only if absent.
 * The secret is gen (made here) or, with secret_stdin, *secret_out.
 */
static int
add_to_etcd(const struct sconf *sc, const char *id, int secret_stdin, char *gen,
            char **secret_out)
{
#ifdef NCGRPC_HAVE_ETCD
	const char *secret;
	char *line = NULL;
	int rc;

	if (secret_stdin) {
		if (read_secret(secret_out) != 0)
			return -1;
		secret = *secret_out;
	} else {
		if (registry_new_secret(gen, REGISTRY_SECRET_BUFSZ) != 0) {
			cli_err("no random bytes for a secret");
			return -1;
		}
		secret = gen;
	}
	if ((rc = registry_hash_line(id, (const uint8_t *)secret,
	                             strlen(secret), &line)) != 0) {
		cli_err("cannot hash the secret: %s", strerror(-rc));
		return -1;
	}
	rc = cli_cluster_device_add(sc, id, line);
	free(line);
	return rc == 0 ? 0 : -1;
#else
	(void)sc;
	(void)id;
	(void)secret_stdin;
	(void)gen;
	(void)secret_out;
	cli_err("cluster-etcd: this ncgrpc was built without etcd");
	return -1;
#endif
}

static int
etcd_remove(const struct sconf *sc, const char *id)
{
#ifdef NCGRPC_HAVE_ETCD
	return cli_cluster_device_remove(sc, id);
#else
	(void)sc;
	(void)id;
	cli_err("cluster-etcd: this ncgrpc was built without etcd");
	return -1;
#endif
}

static const char *
cert_error(int rc)
{
	switch (rc) {
	case -ENOENT:
		return "no such file: ncgrpcd makes a self-signed certificate "
		       "there when it first starts";
	case -EINVAL:
		return "not a PEM certificate, or it holds a private key";
	case -EFBIG:
		return "too large";
	default:
		return strerror(-rc);
	}
}

static int
device_add(const struct cli *cl, const char *id, int set_form, int secret_stdin)
{
	struct device_conf dc = {.dc_id = id};
	struct sconf *sc;
	char **dflt = NULL;
	const char **names = NULL;
	size_t n = 0, i;
	char *cert = NULL, *secret = NULL;
	char gen[REGISTRY_SECRET_BUFSZ], err[512];
	int rc, ret = CLI_EXIT_FAIL;

	if (!id_valid(id))
		return cli_usage_error("device add: \"%s\" is not a device id "
		                       "(1 to %d of A-Z a-z 0-9 . _ : @ -)",
		                       id, REGISTRY_ID_MAX);
	if ((sc = cli_load_config(cl)) == NULL)
		return CLI_EXIT_FAIL;
	/* Everything the output needs comes first: no entry without it. */
	if ((rc = certgen_pem_escaped(sc->sc_certificate, &cert)) != 0) {
		cli_err("cannot read the server certificate \"%s\": %s",
		        sc->sc_certificate, cert_error(rc));
		goto out;
	}
	if (sc->sc_nnames > 0) {
		if ((names = calloc(sc->sc_nnames, sizeof(*names))) == NULL)
			goto oom;
		for (i = 0; i < sc->sc_nnames; i++)
			names[i] = sc->sc_names[i].nm_name;
		n = sc->sc_nnames;
	} else {
		if (certgen_names_from_host(&dflt, &n) != 0 ||
		    (names = calloc(n, sizeof(*names))) == NULL)
			goto oom;
		for (i = 0; i < n; i++)
			names[i] = dflt[i];
	}
	if (sc->sc_cluster_etcd != NULL) {
		if (add_to_etcd(sc, id, secret_stdin, gen, &secret) != 0)
			goto out;
		dc.dc_secret = secret != NULL ? secret : gen;
		rc = 0;
	} else if (secret_stdin) {
		if (read_secret(&secret) != 0 || check_absent(sc, id) != 0)
			goto out;
		rc = registry_set(sc->sc_devices, id, (const uint8_t *)secret,
		                  strlen(secret), err, sizeof(err));
		dc.dc_secret = secret;
	} else {
		rc = registry_add(sc->sc_devices, id, gen, sizeof(gen), err,
		                  sizeof(err));
		dc.dc_secret = gen;
	}
	if (rc != 0) {
		if (rc == -EEXIST)
			cli_err("%s (\"ncgrpc device remove %s\" first)", err,
			        id);
		else
			report_registry(sc, rc, err);
		goto out;
	}
	dc.dc_names = names;
	dc.dc_nnames = n;
	dc.dc_port = sc->sc_listen[0].li_port;
	dc.dc_cert = cert;
	if (set_form)
		print_set(stdout, &dc);
	else
		print_stanza(stdout, &dc);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		cli_err("cannot write the configuration: %s", strerror(errno));
		cli_err("\"%s\" was added all the same; \"ncgrpc device "
		        "remove %s\" undoes it",
		        id, id);
		goto out;
	}
	if (sc->sc_cluster_etcd != NULL)
		fprintf(stderr,
		        "ncgrpc: added \"%s\" to the registry in etcd (%s)\n",
		        id, sc->sc_cluster_etcd);
	else
		fprintf(stderr, "ncgrpc: added \"%s\" to \"%s\"\n", id,
		        sc->sc_devices);
	if (sc->sc_nnames == 0)
		fprintf(stderr,
		        "ncgrpc: %s has no \"name\": the addresses "
		        "are this host's default names; devices need "
		        "a name or address that reaches it\n",
		        cl->ci_config);
	/*
	 * A name the certificate does not cover fails the device's check of
	 * the server's name: the names go into a certificate only when
	 * ncgrpcd makes it, and one made or given before they changed
	 * lacks the new ones.
	 */
	for (i = 0; i < n; i++)
		if (certgen_names_host(sc->sc_certificate, names[i]) == 0)
			fprintf(stderr,
			        "ncgrpc: warning: the certificate \"%s\" does "
			        "not name %s: a device that dials it fails "
			        "the server name check (%s)\n",
			        sc->sc_certificate, names[i],
			        sc->sc_nnames > 0
			            ? "make a certificate that names it, or "
			              "remove it from \"name\""
			            : "set \"name\" to the names the "
			              "certificate has");
	ret = CLI_EXIT_OK;
	goto out;
oom:
	cli_err("out of memory");
out:
	explicit_bzero(gen, sizeof(gen));
	if (secret != NULL) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	free(cert);
	free(names);
	certgen_names_free(dflt, n);
	sconf_free(sc);
	return ret;
}

static int
device_remove(const struct cli *cl, const char *id)
{
	struct sconf *sc;
	char err[512];
	int rc;

	if (!id_valid(id))
		return cli_usage_error("device remove: \"%s\" is not a device "
		                       "id",
		                       id);
	if ((sc = cli_load_config(cl)) == NULL)
		return CLI_EXIT_FAIL;
	if (sc->sc_cluster_etcd != NULL) {
		rc = etcd_remove(sc, id);
		if (rc == 0)
			fprintf(stderr,
			        "ncgrpc: removed \"%s\" from the registry in "
			        "etcd\n",
			        id);
		sconf_free(sc);
		return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	}
	rc = registry_remove(sc->sc_devices, id, err, sizeof(err));
	if (rc == 0)
		fprintf(stderr, "ncgrpc: removed \"%s\" from \"%s\"\n", id,
		        sc->sc_devices);
	else if (rc == -ENOENT && err[0] == '\0')
		cli_err("%s: no device \"%s\"", sc->sc_devices, id);
	else
		report_registry(sc, rc, err);
	sconf_free(sc);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int
cmd_device(const struct cli *cl, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"set", no_argument, NULL, 's'},
	    {"secret-stdin", no_argument, NULL, 'S'},
	    {NULL, 0, NULL, 0},
	};
	int ch, set_form = 0, secret_stdin = 0, add;

	if (argc < 2)
		return cli_usage_error("device: add or remove?");
	if (strcmp(argv[1], "add") == 0)
		add = 1;
	else if (strcmp(argv[1], "remove") == 0)
		add = 0;
	else
		return cli_usage_error("device: unknown subcommand \"%s\"",
		                       argv[1]);
	argc--;
	argv++;
	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (!add)
				goto bad;
			set_form = 1;
			break;
		case 'S':
			if (!add)
				goto bad;
			secret_stdin = 1;
			break;
		default:
			goto bad;
		}
	}
	if (optind >= argc)
		return cli_usage_error("device %s: which ID?", argv[0]);
	if (optind + 1 < argc)
		return cli_usage_error("device %s: unexpected argument \"%s\"",
		                       argv[0], argv[optind + 1]);
	if (add)
		return device_add(cl, argv[optind], set_form, secret_stdin);
	return device_remove(cl, argv[optind]);
bad:
	return cli_usage_error("device %s: unknown option \"%s\"", argv[0],
	                       argv[optind - 1]);
}
