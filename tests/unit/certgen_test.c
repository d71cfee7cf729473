/*
 * Unit tests for self-signed certificate generation.  The generated
 * certificate is parsed back with OpenSSL, verified as its own trust anchor
 * with and without X509_V_FLAG_PARTIAL_CHAIN, and used for in-memory
 * handshakes between src/common/tls.c clients and servers.
 *
 * certgen.c is included so the test can switch keyCertSign on.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/tls.h"
#include "nms/certgen.c"

static const char *const names3[] = {"nms.example.net", "127.0.0.1", "::1"};

static struct {
	char dir[64];
	char cert[128], key[128];
} T;

static int
setup(void **state)
{
	(void)state;
	snprintf(T.dir, sizeof(T.dir), "/tmp/certgen_test.XXXXXX");
	if (mkdtemp(T.dir) == NULL)
		return -1;
	snprintf(T.cert, sizeof(T.cert), "%s/server.crt", T.dir);
	snprintf(T.key, sizeof(T.key), "%s/server.key", T.dir);
	certgen_ku_certsign = 0;
	return 0;
}

static int
teardown(void **state)
{
	DIR *d;
	struct dirent *e;
	char path[384];

	(void)state;
	if ((d = opendir(T.dir)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", T.dir, e->d_name);
			unlink(path);
		}
		closedir(d);
	}
	return rmdir(T.dir);
}

/* Number of entries in T.dir: no temporary file may be left behind. */
static int
dir_entries(void)
{
	DIR *d = opendir(T.dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = malloc(65536);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	if (len != NULL)
		*len = n;
	return buf;
}

static X509 *
read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static void
generate(const char *const *names, size_t n)
{
	char err[256];

	if (certgen_selfsigned(names, n, 30, T.cert, T.key, err, sizeof(err)) !=
	    0)
		fail_msg("certgen_selfsigned: %s", err);
	assert_string_equal(err, "");
}

/* --- In-memory handshakes with src/common/tls.c ------------------------- */

static int
step(struct tls_conn *c, int *rc)
{
	if (*rc == TLS_EAGAIN)
		*rc = tls_conn_handshake(c);
	return *rc;
}

static size_t
move(struct tls_conn *from, struct tls_conn *to)
{
	uint8_t buf[4096];
	size_t n, total = 0;

	while ((n = tls_conn_take(from, buf, sizeof(buf))) > 0) {
		assert_int_equal(tls_conn_feed(to, buf, n), 0);
		total += n;
	}
	return total;
}

/* Client result of a handshake against a server using T.cert/T.key. */
static int
handshake(const char *peer, char *msg, size_t msglen)
{
	struct tls_ctx *cctx, *sctx;
	struct tls_conn *cl, *sv;
	char err[256], *pem;
	size_t len, moved;
	int crc = TLS_EAGAIN, src = TLS_EAGAIN, i;

	pem = slurp(T.cert, &len);
	if (tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)) != 0)
		fail_msg("tls_ctx_client_new: %s", err);
	if (tls_ctx_server_new(&sctx, T.cert, T.key, err, sizeof(err)) != 0)
		fail_msg("tls_ctx_server_new: %s", err);
	assert_int_equal(tls_conn_new(&cl, cctx, peer), 0);
	assert_int_equal(tls_conn_new(&sv, sctx, NULL), 0);
	for (i = 0; i < 20; i++) {
		step(cl, &crc);
		moved = move(cl, sv);
		step(sv, &src);
		moved += move(sv, cl);
		if (moved == 0)
			break;
	}
	assert_true(i < 20);
	snprintf(msg, msglen, "%s", tls_conn_errmsg(cl));
	if (crc == 0)
		assert_int_equal(src, 0);
	tls_conn_free(cl);
	tls_conn_free(sv);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	free(pem);
	return crc;
}

static void
handshake_ok(const char *peer)
{
	char msg[512];

	if (handshake(peer, msg, sizeof(msg)) != 0)
		fail_msg("handshake with '%s' failed: %s", peer, msg);
}

/*
 * Plain X509_verify_cert() with the certificate as the only trust anchor,
 * for a TLS server, as Python's ssl and gRPC clients do it: without
 * X509_V_FLAG_PARTIAL_CHAIN, optionally with X509_V_FLAG_X509_STRICT (the
 * default of Python 3.13).  Returns the verify error, X509_V_OK for success.
 */
static int
verify_plain(unsigned long flags)
{
	X509 *x = read_cert(T.cert);
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *xs = X509_STORE_CTX_new();
	int rc;

	assert_non_null(st);
	assert_non_null(xs);
	assert_int_equal(X509_STORE_add_cert(st, x), 1);
	assert_int_equal(X509_STORE_CTX_init(xs, st, x, NULL), 1);
	assert_int_equal(
	    X509_STORE_CTX_set_purpose(xs, X509_PURPOSE_SSL_SERVER), 1);
	X509_STORE_CTX_set_flags(xs, flags);
	rc = X509_verify_cert(xs) == 1 ? X509_V_OK
	                               : X509_STORE_CTX_get_error(xs);
	X509_STORE_CTX_free(xs);
	X509_STORE_free(st);
	X509_free(x);
	return rc;
}

/* --- Tests --- */

static void
check_ext_critical(X509 *x, int nid, int critical)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	assert_true(i >= 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(x, i)),
	                 critical);
}

static void
test_fields(void **state)
{
	X509 *x;
	EVP_PKEY *pk;
	GENERAL_NAMES *san;
	const GENERAL_NAME *g;
	const ASN1_OCTET_STRING *ip;
	const ASN1_INTEGER *serial;
	char cn[128], group[32];
	int day, sec;
	struct stat st;
	FILE *f;

	(void)state;
	generate(names3, 3);
	x = read_cert(T.cert);

	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_int_equal(X509_NAME_get_text_by_NID(X509_get_subject_name(x),
	                                           NID_commonName, cn,
	                                           sizeof(cn)),
	                 15);
	assert_string_equal(cn, "nms.example.net");
	assert_int_equal(
	    X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)),
	    0);

	/* SAN: DNS for the host name, IP for each literal, in order. */
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(san);
	assert_int_equal(sk_GENERAL_NAME_num(san), 3);
	g = sk_GENERAL_NAME_value(san, 0);
	assert_int_equal(g->type, GEN_DNS);
	assert_string_equal(ASN1_STRING_get0_data(g->d.dNSName),
	                    "nms.example.net");
	g = sk_GENERAL_NAME_value(san, 1);
	assert_int_equal(g->type, GEN_IPADD);
	ip = g->d.iPAddress;
	assert_int_equal(ASN1_STRING_length(ip), 4);
	assert_memory_equal(ASN1_STRING_get0_data(ip), "\x7f\0\0\x01", 4);
	g = sk_GENERAL_NAME_value(san, 2);
	assert_int_equal(g->type, GEN_IPADD);
	ip = g->d.iPAddress;
	assert_int_equal(ASN1_STRING_length(ip), 16);
	assert_memory_equal(ASN1_STRING_get0_data(ip),
	                    "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	GENERAL_NAMES_free(san);
	check_ext_critical(x, NID_subject_alt_name, 0);

	/* Validity: from an hour ago, for 30 days. */
	assert_int_equal(
	    ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notBefore(x)), 1);
	assert_int_equal(day, 0);
	assert_true(sec <= -3600 && sec > -3600 - 60);
	assert_int_equal(
	    ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(x)), 1);
	assert_true((day == 30 && sec <= 0) || (day == 29 && sec > 86400 - 60));

	/* Extensions. */
	assert_true(X509_get_extension_flags(x) & EXFLAG_BCONS);
	assert_false(X509_get_extension_flags(x) & EXFLAG_CA);
	check_ext_critical(x, NID_basic_constraints, 1);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	check_ext_critical(x, NID_key_usage, 1);
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
	check_ext_critical(x, NID_ext_key_usage, 0);
	assert_non_null(X509_get0_subject_key_id(x));
	assert_int_equal(X509_get_ext_count(x), 5);

	/* A positive 128-bit serial. */
	serial = X509_get0_serialNumber(x);
	assert_int_equal(ASN1_STRING_type(serial), V_ASN1_INTEGER);
	assert_int_equal(ASN1_STRING_length(serial), 16);

	/* EC P-256, self-signed with ECDSA-SHA256, matching the key file. */
	pk = X509_get0_pubkey(x);
	assert_non_null(pk);
	assert_int_equal(EVP_PKEY_get_base_id(pk), EVP_PKEY_EC);
	assert_int_equal(
	    EVP_PKEY_get_group_name(pk, group, sizeof(group), NULL), 1);
	assert_string_equal(group, "prime256v1");
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	assert_int_equal(X509_verify(x, pk), 1);
	f = fopen(T.key, "r");
	assert_non_null(f);
	pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(pk);
	assert_int_equal(X509_check_private_key(x, pk), 1);
	EVP_PKEY_free(pk);
	X509_free(x);

	/* Modes, and no temporary files left. */
	assert_int_equal(stat(T.key, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(T.cert, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(dir_entries(), 2);
}

static void
test_serial_random(void **state)
{
	X509 *a, *b;

	(void)state;
	generate(names3, 1);
	a = read_cert(T.cert);
	assert_int_equal(unlink(T.key), 0);
	generate(names3, 1);
	b = read_cert(T.cert);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a),
	                                      X509_get0_serialNumber(b)),
	                     0);
	/* A single name: just the CN and one SAN DNS entry. */
	assert_int_equal(X509_get_ext_count(b), 5);
	X509_free(a);
	X509_free(b);
}

static void
test_key_exists(void **state)
{
	char err[256], *before, *after;
	FILE *f;

	(void)state;
	generate(names3, 3);
	before = slurp(T.cert, NULL);
	assert_int_equal(
	    certgen_selfsigned(names3, 3, 30, T.cert, T.key, err, sizeof(err)),
	    -EEXIST);
	assert_non_null(strstr(err, "key exists"));
	after = slurp(T.cert, NULL);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* Any file in the way counts, even an empty one, without a cert. */
	assert_int_equal(unlink(T.key), 0);
	assert_int_equal(unlink(T.cert), 0);
	f = fopen(T.key, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(
	    certgen_selfsigned(names3, 3, 30, T.cert, T.key, err, sizeof(err)),
	    -EEXIST);
	assert_int_equal(access(T.cert, F_OK), -1);
	assert_int_equal(dir_entries(), 1);
}

static void
test_bad_args(void **state)
{
	static const char *const empty[] = {""};
	static const char *const space[] = {"a b"};
	static const char *const comma[] = {"a,DNS:evil"};
	static const char *const null[] = {"a", NULL};
	static const char *const longcn[] = {
	    "a123456789b123456789c123456789d123456789e123456789f123456789."
	    "example"};
	char err[256], path[256];

	(void)state;
	assert_int_equal(
	    certgen_selfsigned(names3, 0, 30, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "no name for the certificate");
	assert_int_equal(
	    certgen_selfsigned(NULL, 1, 30, T.cert, T.key, NULL, 0), -EINVAL);
	assert_int_equal(
	    certgen_selfsigned(empty, 1, 30, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "bad certificate name ''");
	assert_int_equal(
	    certgen_selfsigned(space, 1, 30, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_int_equal(
	    certgen_selfsigned(comma, 1, 30, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_int_equal(
	    certgen_selfsigned(null, 2, 30, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_int_equal(
	    certgen_selfsigned(longcn, 1, 30, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_non_null(strstr(err, "too long for a common name"));
	assert_int_equal(
	    certgen_selfsigned(names3, 3, 0, T.cert, T.key, err, sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "validity of 0 days is not 1..36500");
	assert_int_equal(certgen_selfsigned(names3, 3, CERTGEN_MAX_DAYS + 1,
	                                    T.cert, T.key, err, sizeof(err)),
	                 -EINVAL);
	assert_int_equal(dir_entries(), 0);

	/* A missing directory for the key, then for the certificate. */
	snprintf(path, sizeof(path), "%s/nodir/server.key", T.dir);
	assert_int_equal(
	    certgen_selfsigned(names3, 3, 30, T.cert, path, err, sizeof(err)),
	    -ENOENT);
	assert_int_equal(dir_entries(), 0);
	snprintf(path, sizeof(path), "%s/nodir/server.crt", T.dir);
	assert_int_equal(
	    certgen_selfsigned(names3, 3, 30, path, T.key, err, sizeof(err)),
	    -ENOENT);
	assert_non_null(strstr(err, "No such file or directory"));
	/* The new key was removed again, so a retry can succeed. */
	assert_int_equal(dir_entries(), 0);
	generate(names3, 3);
}

static void
test_cert_replaced(void **state)
{
	char *before, *after;

	(void)state;
	generate(names3, 3);
	before = slurp(T.cert, NULL);
	/* A new key may replace an old certificate (not an old key). */
	assert_int_equal(unlink(T.key), 0);
	generate(names3, 3);
	after = slurp(T.cert, NULL);
	assert_string_not_equal(before, after);
	free(before);
	free(after);
	assert_int_equal(dir_entries(), 2);
}

static void
test_handshakes(void **state)
{
	char msg[512];

	(void)state;
	generate(names3, 3);
	handshake_ok("127.0.0.1");
	handshake_ok("::1");
	handshake_ok("nms.example.net");
	handshake_ok("NMS.Example.Net");
	assert_int_equal(handshake("other.example.net", msg, sizeof(msg)),
	                 NCG_ETLS_NAME);
	assert_non_null(strstr(msg, "other.example.net"));
	assert_int_equal(handshake("10.0.0.1", msg, sizeof(msg)),
	                 NCG_ETLS_NAME);
	assert_int_equal(handshake("::2", msg, sizeof(msg)), NCG_ETLS_NAME);
	assert_int_equal(handshake("localhost", msg, sizeof(msg)),
	                 NCG_ETLS_NAME);

	/* Without PARTIAL_CHAIN, with and without the strict checks. */
	assert_int_equal(verify_plain(0), X509_V_OK);
	assert_int_equal(verify_plain(X509_V_FLAG_X509_STRICT), X509_V_OK);
	assert_int_equal(verify_plain(X509_V_FLAG_PARTIAL_CHAIN), X509_V_OK);
}

/*
 * The alternative considered: keyUsage with keyCertSign.  It verifies as
 * well, so the RFC 5280 rule (keyCertSign only with CA:TRUE) decides.
 */
static void
test_handshakes_keycertsign(void **state)
{
	X509 *x;

	(void)state;
	certgen_ku_certsign = 1;
	generate(names3, 3);
	certgen_ku_certsign = 0;
	x = read_cert(T.cert);
	assert_int_equal(X509_get_key_usage(x),
	                 KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN);
	X509_free(x);
	handshake_ok("127.0.0.1");
	handshake_ok("::1");
	handshake_ok("nms.example.net");
	assert_int_equal(verify_plain(0), X509_V_OK);
	assert_int_equal(verify_plain(X509_V_FLAG_PARTIAL_CHAIN), X509_V_OK);
}

/* Undoes Junos quoted-string escapes, as src/agent/conf.c reads them. */
static char *
unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *q = out;

	assert_non_null(out);
	for (; *s != '\0'; s++) {
		if (*s == '\\') {
			s++;
			assert_true(*s != '\0');
			*q++ = *s == 'n'   ? '\n'
			       : *s == 'r' ? '\r'
			       : *s == 't' ? '\t'
			                   : *s;
		} else {
			assert_true(*s != '"' && *s != '\n');
			*q++ = *s;
		}
	}
	*q = '\0';
	return out;
}

static void
test_pem_escaped(void **state)
{
	char *esc, *text, *back, path[256];
	static const char odd[] = "-----BEGIN CERTIFICATE-----\r\n"
	                          "\"quoted\"\\back\tslash\n"
	                          "-----END CERTIFICATE-----";
	FILE *f;

	(void)state;
	generate(names3, 3);
	assert_int_equal(certgen_pem_escaped(T.cert, &esc), 0);
	text = slurp(T.cert, NULL);
	assert_null(strchr(esc, '\n'));
	assert_int_equal(strncmp(esc, "-----BEGIN CERTIFICATE-----\\nMII", 32),
	                 0);
	assert_non_null(strstr(esc, "\\n-----END CERTIFICATE-----\\n"));
	back = unescape(esc);
	assert_string_equal(back, text);
	free(back);
	free(esc);
	free(text);

	snprintf(path, sizeof(path), "%s/odd.pem", T.dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(odd, f);
	fclose(f);
	assert_int_equal(certgen_pem_escaped(path, &esc), 0);
	assert_string_equal(esc, "-----BEGIN CERTIFICATE-----\\r\\n"
	                         "\\\"quoted\\\"\\\\back\\tslash\\n"
	                         "-----END CERTIFICATE-----");
	back = unescape(esc);
	assert_string_equal(back, odd);
	free(back);
	free(esc);

	/* Never a private key, never something else. */
	esc = NULL;
	assert_int_equal(certgen_pem_escaped(T.key, &esc), -EINVAL);
	assert_null(esc);
	f = fopen(path, "a");
	assert_non_null(f);
	fputs("\n-----BEGIN PRIVATE KEY-----\n", f);
	fclose(f);
	assert_int_equal(certgen_pem_escaped(path, &esc), -EINVAL);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("hello\n", f);
	fclose(f);
	assert_int_equal(certgen_pem_escaped(path, &esc), -EINVAL);
	assert_int_equal(certgen_pem_escaped(T.dir, &esc), -EISDIR);
	snprintf(path, sizeof(path), "%s/missing.pem", T.dir);
	assert_int_equal(certgen_pem_escaped(path, &esc), -ENOENT);

	/* Too large. */
	snprintf(path, sizeof(path), "%s/big.pem", T.dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\n", f);
	for (int i = 0; i < CERTGEN_MAX_PEM / 64; i++)
		fputs("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		      "AAAAAAA"
		      "\n",
		      f);
	fclose(f);
	assert_int_equal(certgen_pem_escaped(path, &esc), -EFBIG);
	assert_null(esc);
}

static void
test_names_from_host(void **state)
{
	char **names, err[256];
	size_t n;

	(void)state;
	assert_int_equal(certgen_names_from_host(&names, &n), 0);
	assert_true(n == 3 || n == 4);
	assert_string_equal(names[n - 3], "localhost");
	assert_string_equal(names[n - 2], "127.0.0.1");
	assert_string_equal(names[n - 1], "::1");
	if (n == 4)
		assert_string_not_equal(names[0], "localhost");
	/* The defaults make a working certificate. */
	if (certgen_selfsigned((const char *const *)names, n, 1, T.cert, T.key,
	                       err, sizeof(err)) != 0)
		fail_msg("certgen_selfsigned: %s", err);
	handshake_ok("localhost");
	handshake_ok("127.0.0.1");
	certgen_names_free(names, n);
	certgen_names_free(NULL, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_serial_random, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_key_exists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cert_replaced, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_handshakes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshakes_keycertsign, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_pem_escaped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_names_from_host, setup,
	                                    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
