/*
 * "ncgrpc ssh-known-hosts [HOST ...]": the known_hosts lines of
 * ncgrpc-sshd's host key, for operators to pin.
 *
 * The key is read from the public half that ncgrpc-sshd writes beside its
 * host key (ssh-host-key of the configuration, plus ".pub"), so the CLI
 * needs no access to the private key.  The blob is decoded and checked
 * (its type string must match the line's) before anything is printed; the
 * SHA256 fingerprint, as ssh(1) shows it, goes to standard error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base64.h"
#include "cli.h"
#include "fileio.h"
#include "sconf.h"

#define KH_MAX_FILE 16384 /* bytes of a .pub file */
#define KH_MAX_BLOB 8192  /* bytes of a decoded public key */
#define KH_MAX_HOST 253

/*
 * Splits the first line of a .pub file into type and base64, and checks
 * that the blob decodes and names the same type.  Returns 0, or -EINVAL.
 */
static int
parse_pub(char *text, char **type, char **b64, uint8_t *blob, size_t *bloblen)
{
	char *nl, *sp, *end;
	size_t len, tlen;

	if ((nl = strchr(text, '\n')) != NULL)
		*nl = '\0';
	if ((sp = strchr(text, ' ')) == NULL)
		return -EINVAL;
	*sp = '\0';
	end = sp + 1;
	if ((sp = strchr(end, ' ')) != NULL)
		*sp = '\0';
	len = strlen(end);
	if (len == 0 ||
	    base64_decode(end, len, blob, KH_MAX_BLOB, bloblen, 0) != 0)
		return -EINVAL;
	/* The blob starts with its type: uint32 length, then the bytes. */
	if (*bloblen < 4)
		return -EINVAL;
	tlen = (size_t)blob[0] << 24 | (size_t)blob[1] << 16 |
	       (size_t)blob[2] << 8 | blob[3];
	if (tlen != strlen(text) || tlen > *bloblen - 4 ||
	    memcmp(blob + 4, text, tlen) != 0)
		return -EINVAL;
	*type = text;
	*b64 = end;
	return 0;
}

/* "SHA256:..." of blob, unpadded base64 as ssh-keygen -l prints it. */
static void
fingerprint(const uint8_t *blob, size_t len, char *out, size_t outlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char b64[BASE64_ENCODED_SIZE(EVP_MAX_MD_SIZE)];

	if (EVP_Digest(blob, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
		snprintf(out, outlen, "?");
		return;
	}
	base64_encode(md, mdlen, b64, 0);
	snprintf(out, outlen, "SHA256:%s", b64);
}

static int
host_valid(const char *h)
{
	return h[0] != '\0' && strlen(h) <= KH_MAX_HOST &&
	       strspn(h,
	              "abcdefghijklmnopqrstuvwxyz"
	              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_") == strlen(h);
}

static void
print_line(const char *host, unsigned port, const char *type, const char *b64)
{
	if (port == 22)
		printf("%s %s %s\n", host, type, b64);
	else
		printf("[%s]:%u %s %s\n", host, port, type, b64);
}

int
cmd_ssh_known_hosts(const struct cli *cl, int argc, char **argv)
{
	struct sconf *sc;
	struct stat st;
	char path[4096], *text = NULL, *type, *b64, host[KH_MAX_HOST + 1];
	char fp[128];
	uint8_t *blob = NULL;
	size_t len = 0, bloblen, i;
	int fd, rc, status = CLI_EXIT_FAIL, n;

	for (i = 1; i < (size_t)argc; i++) {
		if (argv[i][0] == '-')
			return cli_usage_error("ssh-known-hosts: unknown "
			                       "option \"%s\"",
			                       argv[i]);
		if (!host_valid(argv[i]))
			return cli_usage_error("ssh-known-hosts: \"%s\" is not "
			                       "a host name or address",
			                       argv[i]);
	}
	if ((sc = cli_load_config(cl)) == NULL)
		return CLI_EXIT_FAIL;
	n = snprintf(path, sizeof(path), "%s.pub", sc->sc_ssh_host_key);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		cli_err("ssh-host-key: path too long");
		goto out;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		cli_err("cannot read \"%s\": %s%s", path, strerror(errno),
		        errno == ENOENT ? " (ncgrpc-sshd makes it on its first "
		                          "start)"
		                        : "");
		goto out;
	}
	rc = fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)
	         ? -EINVAL
	         : fileio_read_fd(fd, KH_MAX_FILE, 0, 0, &text, &len);
	close(fd);
	if (rc != 0) {
		cli_err("cannot read \"%s\": %s", path,
		        rc == -EINVAL ? "not a regular file" : strerror(-rc));
		goto out;
	}
	if ((blob = malloc(KH_MAX_BLOB)) == NULL) {
		cli_err("out of memory");
		goto out;
	}
	if (parse_pub(text, &type, &b64, blob, &bloblen) != 0) {
		cli_err("\"%s\" is not an OpenSSH public key line", path);
		goto out;
	}
	fingerprint(blob, bloblen, fp, sizeof(fp));
	fprintf(stderr, "# ncgrpc-sshd host key %s %s\n", type, fp);
	if (argc > 1) {
		for (i = 1; i < (size_t)argc; i++)
			print_line(argv[i], sc->sc_ssh_listen_port, type, b64);
	} else if (sc->sc_nnames > 0) {
		for (i = 0; i < sc->sc_nnames; i++)
			print_line(sc->sc_names[i].nm_name,
			           sc->sc_ssh_listen_port, type, b64);
	} else {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		print_line(host, sc->sc_ssh_listen_port, type, b64);
	}
	status = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
out:
	free(blob);
	if (text != NULL)
		fileio_free(text, len, 0);
	sconf_free(sc);
	return status;
}
