/*
 * Self-signed certificate generation with the OpenSSL 3 API, and the PEM
 * text escaped for a Junos configuration (see certgen.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/err.h"
#include "common/fileio.h"
#include "common/tls.h"
#include "certgen.h"

/*
 * Nonzero adds keyCertSign to keyUsage.  Only the unit test sets it, to
 * show that both variants verify (certgen.h says why the default omits it).
 */
static int certgen_ku_certsign;

/* Sets err to "what: <first OpenSSL error>" and returns NCG_ETLS. */
static int
sslerr(char *err, size_t errlen, const char *what)
{
	char buf[256];
	unsigned long e = ERR_get_error();

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "unknown error");
	ERR_clear_error();
	ncg_seterr(err, errlen, "%s: %s", what, buf);
	return NCG_ETLS;
}

/* A name is printable ASCII without spaces, commas or quotes. */
static int
name_ok(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (*s <= ' ' || *s >= 0x7f || *s == ',' || *s == '"' ||
		    *s == '\\')
			return 0;
	return 1;
}

/* --- The certificate --- */

static GENERAL_NAMES *
san_new(const char *const *names, size_t nnames)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gen;
	ASN1_OCTET_STRING *ip;
	ASN1_IA5STRING *dns;
	unsigned char a[16];
	size_t i;
	int alen;

	if ((gens = GENERAL_NAMES_new()) == NULL)
		return NULL;
	for (i = 0; i < nnames; i++) {
		if ((gen = GENERAL_NAME_new()) == NULL)
			goto fail;
		alen = inet_pton(AF_INET, names[i], a) == 1    ? 4
		       : inet_pton(AF_INET6, names[i], a) == 1 ? 16
		                                               : 0;
		if (alen != 0) {
			if ((ip = ASN1_OCTET_STRING_new()) == NULL ||
			    !ASN1_OCTET_STRING_set(ip, a, alen)) {
				ASN1_OCTET_STRING_free(ip);
				GENERAL_NAME_free(gen);
				goto fail;
			}
			GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
		} else {
			if ((dns = ASN1_IA5STRING_new()) == NULL ||
			    !ASN1_STRING_set(dns, names[i], -1)) {
				ASN1_IA5STRING_free(dns);
				GENERAL_NAME_free(gen);
				goto fail;
			}
			GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
		}
		if (!sk_GENERAL_NAME_push(gens, gen)) {
			GENERAL_NAME_free(gen);
			goto fail;
		}
	}
	return gens;
fail:
	GENERAL_NAMES_free(gens);
	return NULL;
}

static int
add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *e;
	int ok;

	if ((e = X509V3_EXT_nconf_nid(NULL, v3, nid, value)) == NULL)
		return 0;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok;
}

/* A random positive serial of 128 bits (RFC 5280 allows up to 20 bytes). */
static int
set_serial(X509 *x)
{
	unsigned char r[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(r, sizeof(r)) != 1)
		return 0;
	r[0] &= 0x7f; /* positive in DER without a leading zero byte */
	r[0] |= 0x40; /* and never shorter, so never zero */
	if ((bn = BN_bin2bn(r, sizeof(r), NULL)) == NULL)
		return 0;
	ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok;
}

/* What a certificate is for. */
enum cert_kind {
	CERT_SELFSIGNED, /* ncgrpcd's own trust anchor: serverAuth */
	CERT_CA,         /* a cluster CA: signs node certificates */
	CERT_NODE,       /* a cluster node: serverAuth and clientAuth */
};

/*
 * Makes a certificate for key and names (names[0] is the CN; a CA has no
 * SAN), issued by iss with iss_key, or self-issued when iss is NULL.
 */
static X509 *
cert_new(EVP_PKEY *key, const char *const *names, size_t nnames, unsigned days,
         enum cert_kind kind, X509 *iss, EVP_PKEY *iss_key)
{
	X509 *x;
	X509_NAME *n;
	X509V3_CTX v3;
	GENERAL_NAMES *san = NULL;
	time_t now = time(NULL);
	const char *ku, *eku;

	if ((x = X509_new()) == NULL)
		return NULL;
	n = X509_get_subject_name(x);
	if (!X509_set_version(x, X509_VERSION_3) || !set_serial(x) ||
	    ASN1_TIME_set(X509_getm_notBefore(x), now - 3600) == NULL ||
	    ASN1_TIME_adj(X509_getm_notAfter(x), now, (int)days, 0) == NULL ||
	    !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	                                (const unsigned char *)names[0], -1, -1,
	                                0) ||
	    !X509_set_issuer_name(x, iss != NULL ? X509_get_subject_name(iss)
	                                         : n) ||
	    !X509_set_pubkey(x, key))
		goto fail;
	X509V3_set_ctx(&v3, iss != NULL ? iss : x, x, NULL, NULL, 0);
	if (kind == CERT_CA) {
		ku = "critical,keyCertSign,cRLSign";
		eku = NULL;
	} else {
		ku = certgen_ku_certsign && kind == CERT_SELFSIGNED
		         ? "critical,digitalSignature,keyCertSign"
		         : "critical,digitalSignature";
		eku =
		    kind == CERT_NODE ? "serverAuth,clientAuth" : "serverAuth";
	}
	if (!add_ext(x, &v3, NID_basic_constraints,
	             kind == CERT_CA ? "critical,CA:TRUE,pathlen:0"
	                             : "critical,CA:FALSE") ||
	    !add_ext(x, &v3, NID_key_usage, ku) ||
	    (eku != NULL && !add_ext(x, &v3, NID_ext_key_usage, eku)) ||
	    !add_ext(x, &v3, NID_subject_key_identifier, "hash") ||
	    (iss != NULL &&
	     !add_ext(x, &v3, NID_authority_key_identifier, "keyid:always")))
		goto fail;
	if (kind != CERT_CA &&
	    ((san = san_new(names, nnames)) == NULL ||
	     !X509_add1_ext_i2d(x, NID_subject_alt_name, san, 0, 0)))
		goto fail;
	GENERAL_NAMES_free(san);
	if (X509_sign(x, iss_key != NULL ? iss_key : key, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
fail:
	GENERAL_NAMES_free(san);
	X509_free(x);
	return NULL;
}

/* --- Files --- */

/* Writes all of buf to fd.  0 or a negated errno. */
static int
write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, buf, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Flushes the directory holding path, so a rename or link is durable. */
static void
sync_dir(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t len;
	int fd;

	if (slash == NULL || slash == path) {
		dir[0] = slash == NULL ? '.' : '/';
		len = 1;
	} else if ((len = (size_t)(slash - path)) < sizeof(dir))
		memcpy(dir, path, len);
	else
		return;
	dir[len] = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return;
	(void)fsync(fd);
	close(fd);
}

/*
 * Writes the contents of mem to a new temporary file next to path with the
 * given mode, and then moves it to path: with link() when exclusive (so
 * -EEXIST when path exists), else with rename().  0 or a negated errno.
 */
static int
write_file(const char *path, BIO *mem, mode_t mode, int exclusive, char *err,
           size_t errlen)
{
	char tmp[PATH_MAX], *data;
	long len;
	int fd, rc;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >=
	    sizeof(tmp)) {
		ncg_seterr(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	/* mkstemp() creates the file 0600, so the key is never exposed. */
	if ((fd = mkostemp(tmp, O_CLOEXEC)) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
		return rc;
	}
	len = BIO_get_mem_data(mem, &data);
	if ((rc = write_all(fd, data, len > 0 ? (size_t)len : 0)) != 0 ||
	    (fchmod(fd, mode) == -1 && (rc = -errno) != 0) ||
	    (fsync(fd) == -1 && (rc = -errno) != 0)) {
		ncg_seterr(err, errlen, "%s: %s", tmp, strerror(-rc));
		close(fd);
		unlink(tmp);
		return rc;
	}
	if (close(fd) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
		unlink(tmp);
		return rc;
	}
	if (exclusive ? link(tmp, path) == -1 : rename(tmp, path) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return rc;
	}
	if (exclusive)
		unlink(tmp);
	sync_dir(path);
	return 0;
}

/* Checks names and days as certgen.h says.  0 or -EINVAL. */
static int
check_args(const char *const *names, size_t nnames, unsigned days, char *err,
           size_t errlen)
{
	size_t i;

	if (names == NULL || nnames == 0) {
		ncg_seterr(err, errlen, "no name for the certificate");
		return -EINVAL;
	}
	for (i = 0; i < nnames; i++)
		if (names[i] == NULL || !name_ok(names[i])) {
			ncg_seterr(err, errlen, "bad certificate name '%.64s'",
			           names[i] != NULL ? names[i] : "");
			return -EINVAL;
		}
	if (strlen(names[0]) > CERTGEN_MAX_CN) {
		ncg_seterr(
		    err, errlen,
		    "'%.64s...' is too long for a common name (%d bytes)",
		    names[0], CERTGEN_MAX_CN);
		return -EINVAL;
	}
	if (days < 1 || days > CERTGEN_MAX_DAYS) {
		ncg_seterr(err, errlen, "validity of %u days is not 1..%d",
		           days, CERTGEN_MAX_DAYS);
		return -EINVAL;
	}
	return 0;
}

/* Makes a key and a certificate of kind and writes both (certgen.h). */
static int
issue(const char *const *names, size_t nnames, unsigned days,
      enum cert_kind kind, X509 *iss, EVP_PKEY *iss_key, const char *cert_path,
      const char *key_path, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	BIO *kb = NULL, *cb = NULL;
	struct stat st;
	int rc;

	if ((rc = check_args(names, nnames, days, err, errlen)) != 0)
		return rc;
	/* Checked early to save the work; link() checks again. */
	if (lstat(key_path, &st) == 0) {
		ncg_seterr(err, errlen, "%s: key exists; not overwriting it",
		           key_path);
		return -EEXIST;
	}

	if ((key = EVP_EC_gen("P-256")) == NULL) {
		rc = sslerr(err, errlen, "cannot generate an EC P-256 key");
		goto out;
	}
	if ((x = cert_new(key, names, nnames, days, kind, iss, iss_key)) ==
	    NULL) {
		rc = sslerr(err, errlen, "cannot make the certificate");
		goto out;
	}
	if ((kb = BIO_new(BIO_s_mem())) == NULL ||
	    (cb = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cb, x)) {
		rc = sslerr(err, errlen, "cannot encode PEM");
		goto out;
	}
	if ((rc = write_file(key_path, kb, 0600, 1, err, errlen)) != 0)
		goto out;
	if ((rc = write_file(cert_path, cb, 0644, 0, err, errlen)) != 0) {
		unlink(key_path);
		goto out;
	}
	if (err != NULL && errlen > 0)
		err[0] = '\0';
out:
	/* The memory BIO held the key in PEM: clear it before freeing. */
	if (kb != NULL) {
		char *p;
		long l = BIO_get_mem_data(kb, &p);

		if (l > 0)
			OPENSSL_cleanse(p, (size_t)l);
	}
	BIO_free(kb);
	BIO_free(cb);
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

int
certgen_selfsigned(const char *const *names, size_t nnames, unsigned days,
                   const char *cert_path, const char *key_path, char *err,
                   size_t errlen)
{
	return issue(names, nnames, days, CERT_SELFSIGNED, NULL, NULL,
	             cert_path, key_path, err, errlen);
}

int
certgen_ca(const char *name, unsigned days, const char *cert_path,
           const char *key_path, char *err, size_t errlen)
{
	return issue(&name, 1, days, CERT_CA, NULL, NULL, cert_path, key_path,
	             err, errlen);
}

/* Reads one PEM object of path: a certificate, or a private key. */
static int
read_pem(const char *path, X509 **cert, EVP_PKEY **key, char *err,
         size_t errlen)
{
	FILE *f;
	int rc;

	if ((f = fopen(path, "re")) == NULL) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (cert != NULL)
		*cert = PEM_read_X509(f, NULL, NULL, NULL);
	else
		*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (cert != NULL ? *cert == NULL : *key == NULL) {
		ERR_clear_error();
		ncg_seterr(err, errlen, "%s: no %s in it", path,
		           cert != NULL ? "pem certificate"
		                        : "unencrypted pem private key");
		return -EINVAL;
	}
	return 0;
}

int
certgen_signed(const char *const *names, size_t nnames, unsigned days,
               const char *ca_cert, const char *ca_key, const char *cert_path,
               const char *key_path, char *err, size_t errlen)
{
	X509 *ca = NULL;
	EVP_PKEY *cakey = NULL;
	int rc;

	if ((rc = check_args(names, nnames, days, err, errlen)) != 0 ||
	    (rc = read_pem(ca_cert, &ca, NULL, err, errlen)) != 0 ||
	    (rc = read_pem(ca_key, NULL, &cakey, err, errlen)) != 0)
		goto out;
	if (X509_check_private_key(ca, cakey) != 1) {
		ERR_clear_error();
		ncg_seterr(err, errlen, "%s does not match %s", ca_key,
		           ca_cert);
		rc = -EINVAL;
		goto out;
	}
	if (X509_check_ca(ca) == 0) {
		ncg_seterr(err, errlen, "%s is not a ca certificate", ca_cert);
		rc = -EINVAL;
		goto out;
	}
	rc = issue(names, nnames, days, CERT_NODE, ca, cakey, cert_path,
	           key_path, err, errlen);
out:
	X509_free(ca);
	EVP_PKEY_free(cakey);
	return rc;
}

/* --- Escaped PEM --- */

/* A certificate file, whole: 0, or -errno of open() or fileio_read_fd(). */
static int
read_cert_text(const char *path, char **text, size_t *len)
{
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return -errno;
	rc = fileio_read_fd(fd, CERTGEN_MAX_PEM, 0, 0, text, len);
	close(fd);
	return rc;
}

int
certgen_names_host(const char *cert_path, const char *name)
{
	unsigned char addr[16];
	char *text = NULL;
	size_t len = 0;
	X509 *x = NULL;
	BIO *b;
	int rc;

	if ((rc = read_cert_text(cert_path, &text, &len)) != 0)
		return rc;
	if ((b = BIO_new_mem_buf(text, (int)len)) == NULL)
		rc = -ENOMEM;
	else if ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL)
		rc = -EINVAL;
	else
		rc = tls_cert_names(x, name,
		                    inet_pton(AF_INET, name, addr) == 1 ||
		                        inet_pton(AF_INET6, name, addr) == 1);
	ERR_clear_error();
	X509_free(x);
	BIO_free(b);
	fileio_free(text, len, 0);
	return rc;
}

int
certgen_pem_escaped(const char *cert_path, char **out)
{
	char *text = NULL, *esc, *q;
	size_t len = 0, i;
	int rc;

	if ((rc = read_cert_text(cert_path, &text, &len)) != 0)
		return rc;
	if (strlen(text) != len ||
	    strstr(text, "-----BEGIN CERTIFICATE-----") == NULL ||
	    strstr(text, "PRIVATE KEY") != NULL) {
		rc = -EINVAL;
		goto out;
	}
	/* At worst every byte doubles. */
	if ((esc = malloc(len * 2 + 1)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0, q = esc; i < len; i++) {
		switch (text[i]) {
		case '\n':
			*q++ = '\\';
			*q++ = 'n';
			break;
		case '\r':
			*q++ = '\\';
			*q++ = 'r';
			break;
		case '\t':
			*q++ = '\\';
			*q++ = 't';
			break;
		case '"':
		case '\\':
			*q++ = '\\';
			*q++ = text[i];
			break;
		default:
			*q++ = text[i];
		}
	}
	*q = '\0';
	*out = esc;
	rc = 0;
out:
	fileio_free(text, len, 0);
	return rc;
}

/* --- Default names --- */

static int
hostname_ok(const char *h)
{
	if (*h == '\0' || *h == '.' || *h == '-' ||
	    strcmp(h, "localhost") == 0 || strlen(h) > 253)
		return 0;
	for (; *h != '\0'; h++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		      (*h >= '0' && *h <= '9') || *h == '-' || *h == '.'))
			return 0;
	return 1;
}

void
certgen_names_free(char **names, size_t n)
{
	size_t i;

	if (names == NULL)
		return;
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int
certgen_names_from_host(char ***names, size_t *n)
{
	static const char *const fixed[] = {"localhost", "127.0.0.1", "::1"};
	char host[256], **v;
	size_t i, k = 0;

	if ((v = calloc(4, sizeof(*v))) == NULL)
		return -ENOMEM;
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		if (hostname_ok(host) && (v[k++] = strdup(host)) == NULL)
			goto nomem;
	}
	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if ((v[k++] = strdup(fixed[i])) == NULL)
			goto nomem;
	*names = v;
	*n = k;
	return 0;
nomem:
	certgen_names_free(v, k);
	return -ENOMEM;
}
