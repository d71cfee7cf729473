/*
 * Unit tests for the TLS engine.  Every key and certificate is made here
 * with the OpenSSL API, and client and server talk through memory only.
 *
 * tls.c is included so the tests can look at a connection's BIOs; its
 * symbols therefore come from this file, not from the library.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/tls.c"
#include "common/tls_resume.c"
#include "common/tls_verify.c"

/* 2020-01-01, 2021-01-01 and 2099-01-01, 00:00:00 UTC. */
#define T2020 ((time_t)1577836800)
#define T2021 ((time_t)1609459200)
#define T2099 ((time_t)4070908800)

struct spec {
	const char *cn;
	const char *san; /* "DNS:a,IP:b" form, NULL for no SAN at all */
	time_t nb, na;   /* validity; 0 means an hour ago / in a day */
	int ca;
	const char *eku; /* extendedKeyUsage, NULL for none */
	X509 *iss;       /* NULL: self-signed */
	EVP_PKEY *iss_key;
};

static struct {
	char dir[64];
	char cert[96], key[96], file[96], ccert[96], ckey[96];
	EVP_PKEY *ca_key, *other_key, *imp_key, *int_key;
	X509 *ca, *other, *imp, *inter;
	long serial;
} T;

/* --- PKI helpers ------------------------------------------------------- */

static EVP_PKEY *
mkkey(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static void
add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *e;

	e = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

static X509 *
mkcert(const struct spec *s, EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_NAME *n;
	X509V3_CTX v3;
	time_t now = time(NULL);

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), ++T.serial);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x),
	                              s->nb != 0 ? s->nb : now - 3600));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x),
	                              s->na != 0 ? s->na : now + 86400));
	n = X509_get_subject_name(x);
	if (s->cn != NULL)
		assert_int_equal(X509_NAME_add_entry_by_txt(
		                     n, "CN", MBSTRING_ASC,
		                     (const unsigned char *)s->cn, -1, -1, 0),
		                 1);
	assert_int_equal(
	    X509_set_issuer_name(
	        x, s->iss != NULL ? X509_get_subject_name(s->iss) : n),
	    1);
	assert_int_equal(X509_set_pubkey(x, key), 1);
	X509V3_set_ctx(&v3, s->iss != NULL ? s->iss : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_basic_constraints,
	        s->ca ? "critical,CA:TRUE" : "CA:FALSE");
	if (s->ca)
		add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (s->iss != NULL)
		add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
	if (s->san != NULL)
		add_ext(x, &v3, NID_subject_alt_name, s->san);
	if (s->eku != NULL)
		add_ext(x, &v3, NID_ext_key_usage, s->eku);
	assert_true(X509_sign(x, s->iss_key != NULL ? s->iss_key : key,
	                      EVP_sha256()) > 0);
	return x;
}

/* PEM text of certs, malloc'd and NUL-terminated. */
static char *
pem_of(X509 *const *certs, int n, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out;
	long l;
	int i;

	assert_non_null(b);
	for (i = 0; i < n; i++)
		assert_int_equal(PEM_write_bio_X509(b, certs[i]), 1);
	l = BIO_get_mem_data(b, &p);
	assert_true(l > 0);
	out = malloc((size_t)l + 1);
	assert_non_null(out);
	memcpy(out, p, (size_t)l);
	out[l] = '\0';
	*len = (size_t)l;
	BIO_free(b);
	return out;
}

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void
write_chain(const char *path, X509 *const *certs, int n)
{
	size_t len;
	char *p = pem_of(certs, n, &len);

	write_text(path, p);
	free(p);
}

static void
write_key(const char *path, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL),
	                 1);
	assert_int_equal(fclose(f), 0);
}

/* --- Peers: our engine, or raw OpenSSL playing the other side ---------- */

struct peer {
	struct tls_conn *tc;
	SSL *raw;
	int rc; /* last handshake result; raw failures are -1 */
};

static SSL *
raw_new(SSL_CTX *ctx, int server)
{
	SSL *s = SSL_new(ctx);
	BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());

	assert_non_null(s);
	assert_non_null(r);
	assert_non_null(w);
	BIO_set_mem_eof_return(r, -1);
	BIO_set_mem_eof_return(w, -1);
	SSL_set_bio(s, r, w);
	if (server)
		SSL_set_accept_state(s);
	else
		SSL_set_connect_state(s);
	return s;
}

static void
peer_step(struct peer *p)
{
	int r;

	if (p->tc != NULL) {
		p->rc = tls_conn_handshake(p->tc);
		return;
	}
	r = SSL_do_handshake(p->raw);
	if (r == 1)
		p->rc = 0;
	else if (SSL_get_error(p->raw, r) == SSL_ERROR_WANT_READ)
		p->rc = TLS_EAGAIN;
	else
		p->rc = -1;
	ERR_clear_error();
}

static size_t
peer_take(struct peer *p, uint8_t *buf, size_t len)
{
	int n;

	if (p->tc != NULL)
		return tls_conn_take(p->tc, buf, len);
	n = BIO_read(SSL_get_wbio(p->raw), buf, (int)len);
	return n > 0 ? (size_t)n : 0;
}

static void
peer_feed(struct peer *p, const uint8_t *buf, size_t len)
{
	if (p->tc != NULL)
		assert_int_equal(tls_conn_feed(p->tc, buf, len), 0);
	else
		assert_int_equal(BIO_write(SSL_get_rbio(p->raw), buf, (int)len),
		                 (int)len);
}

/* Moves all pending ciphertext from one peer to the other. */
static size_t
move(struct peer *from, struct peer *to)
{
	uint8_t buf[4096];
	size_t n, total = 0;

	while ((n = peer_take(from, buf, sizeof(buf))) > 0) {
		peer_feed(to, buf, n);
		total += n;
	}
	return total;
}

/* Runs both handshakes until neither side has anything more to say. */
static void
pump(struct peer *cl, struct peer *sv)
{
	size_t moved;
	int i;

	cl->rc = sv->rc = TLS_EAGAIN;
	for (i = 0; i < 20; i++) {
		if (cl->rc == TLS_EAGAIN)
			peer_step(cl);
		moved = move(cl, sv);
		if (sv->rc == TLS_EAGAIN)
			peer_step(sv);
		moved += move(sv, cl);
		if (moved == 0)
			return;
	}
	fail_msg("handshake did not settle");
}

struct result {
	int cl, sv;
	char msg[TLS_MSG_MAX], svmsg[TLS_MSG_MAX];
	char version[16];
};

/* One handshake between a client trusting pem and a server using files. */
static void
connect_files(const char *pem, size_t len, const char *peer_name,
              struct result *res)
{
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	char err[256];

	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	assert_string_equal(err, "");
	assert_int_equal(
	    tls_ctx_server_new(&sctx, T.cert, T.key, err, sizeof(err)), 0);
	assert_int_equal(tls_conn_new(&cl.tc, cctx, peer_name), 0);
	assert_int_equal(tls_conn_new(&sv.tc, sctx, NULL), 0);
	pump(&cl, &sv);
	res->cl = cl.rc;
	res->sv = sv.rc;
	snprintf(res->msg, sizeof(res->msg), "%s", tls_conn_errmsg(cl.tc));
	snprintf(res->svmsg, sizeof(res->svmsg), "%s", tls_conn_errmsg(sv.tc));
	snprintf(res->version, sizeof(res->version), "%s",
	         tls_conn_version(cl.tc));
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

/*
 * Serves a fresh certificate made from s (with its issuer appended as the
 * chain when chain is set) to a client trusting anchor, or the certificate
 * itself when anchor is NULL.  Returns the client's handshake result.
 */
static int
try_cert(const struct spec *s, int chain, X509 *anchor, const char *peer_name,
         struct result *res)
{
	EVP_PKEY *k = mkkey();
	X509 *x = mkcert(s, k), *certs[2] = {x, s->iss};
	char *pem;
	size_t len;

	write_chain(T.cert, certs, chain ? 2 : 1);
	write_key(T.key, k);
	pem = pem_of(anchor != NULL ? &anchor : &x, 1, &len);
	connect_files(pem, len, peer_name, res);
	free(pem);
	X509_free(x);
	EVP_PKEY_free(k);
	return res->cl;
}

/* A leaf signed by the test CA. */
static int
try_ca(const char *cn, const char *san, const char *peer_name,
       struct result *res)
{
	struct spec s = {.cn = cn, .san = san, .iss = NULL};

	s.iss = T.ca;
	s.iss_key = T.ca_key;
	return try_cert(&s, 0, T.ca, peer_name, res);
}

static void
assert_ok(const struct result *res)
{
	if (res->cl != 0 || res->sv != 0)
		fail_msg("handshake failed: client %d '%s', server %d '%s'",
		         res->cl, res->msg, res->sv, res->svmsg);
	assert_string_equal(res->msg, "");
	assert_string_equal(res->svmsg, "");
}

static void
assert_msg_has(const char *msg, const char *part)
{
	if (strstr(msg, part) == NULL)
		fail_msg("'%s' does not contain '%s'", msg, part);
}

/* --- Fixture ----------------------------------------------------------- */

static int
setup(void **state)
{
	struct spec s = {.ca = 1};

	(void)state;
	snprintf(T.dir, sizeof(T.dir), "/tmp/tls_test.XXXXXX");
	if (mkdtemp(T.dir) == NULL)
		return -1;
	snprintf(T.cert, sizeof(T.cert), "%s/cert.pem", T.dir);
	snprintf(T.key, sizeof(T.key), "%s/key.pem", T.dir);
	snprintf(T.file, sizeof(T.file), "%s/other.pem", T.dir);
	snprintf(T.ccert, sizeof(T.ccert), "%s/ccert.pem", T.dir);
	snprintf(T.ckey, sizeof(T.ckey), "%s/ckey.pem", T.dir);
	T.ca_key = mkkey();
	T.other_key = mkkey();
	T.imp_key = mkkey();
	T.int_key = mkkey();
	s.cn = "ncgrpc test CA";
	T.ca = mkcert(&s, T.ca_key);
	/* Same name as the test CA, different key. */
	T.imp = mkcert(&s, T.imp_key);
	s.cn = "other CA";
	T.other = mkcert(&s, T.other_key);
	s.cn = "ncgrpc intermediate CA";
	s.iss = T.ca;
	s.iss_key = T.ca_key;
	T.inter = mkcert(&s, T.int_key);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	unlink(T.cert);
	unlink(T.key);
	unlink(T.file);
	unlink(T.ccert);
	unlink(T.ckey);
	rmdir(T.dir);
	X509_free(T.ca);
	X509_free(T.imp);
	X509_free(T.other);
	X509_free(T.inter);
	EVP_PKEY_free(T.ca_key);
	EVP_PKEY_free(T.imp_key);
	EVP_PKEY_free(T.other_key);
	EVP_PKEY_free(T.int_key);
	return 0;
}

/* --- Success cases ----------------------------------------------------- */

static void
test_ca_signed(void **state)
{
	const char *san = "DNS:ncg.example,IP:127.0.0.1,IP:::1";
	struct result res;

	(void)state;
	try_ca("ncg.example", san, "ncg.example", &res);
	assert_ok(&res);
	assert_string_equal(res.version, "TLSv1.3");
	try_ca("ncg.example", san, "NCG.Example", &res);
	assert_ok(&res);
	try_ca("ncg.example", san, "127.0.0.1", &res);
	assert_ok(&res);
	try_ca("ncg.example", san, "::1", &res);
	assert_ok(&res);
	try_ca("ncg.example", san, "0:0:0:0:0:0:0:1", &res);
	assert_ok(&res);
	try_ca("ncg.example", san, "[::1]", &res);
	assert_ok(&res);
}

static void
test_self_signed(void **state)
{
	struct spec s = {.cn = "localhost", .san = "DNS:localhost"};
	struct result res;

	(void)state;
	try_cert(&s, 0, NULL, "localhost", &res);
	assert_ok(&res);
}

static void
test_chain(void **state)
{
	struct spec s = {.cn = "leaf", .san = "DNS:leaf.example"};
	EVP_PKEY *k = mkkey();
	X509 *x, *certs[2];
	char *pem;
	size_t len;
	struct result res;

	(void)state;
	s.iss = T.inter;
	s.iss_key = T.int_key;
	/* Server sends leaf + intermediate, client trusts the root. */
	try_cert(&s, 1, T.ca, "leaf.example", &res);
	assert_ok(&res);
	/* The intermediate alone as anchor (partial chain). */
	try_cert(&s, 1, T.inter, "leaf.example", &res);
	assert_ok(&res);
	/* Without the intermediate the root cannot be reached. */
	try_cert(&s, 0, T.ca, "leaf.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_UNKNOWN_CA);
	assert_msg_has(res.msg, "'CN=ncgrpc intermediate CA' is not trusted");
	/* A CA-signed leaf given as its own anchor. */
	x = mkcert(&s, k);
	certs[0] = x;
	certs[1] = T.inter;
	write_chain(T.cert, certs, 2);
	write_key(T.key, k);
	pem = pem_of(&x, 1, &len);
	connect_files(pem, len, "leaf.example", &res);
	assert_ok(&res);
	free(pem);
	/* Several anchors in one PEM text, the right one last. */
	certs[0] = T.other;
	certs[1] = T.ca;
	pem = pem_of(certs, 2, &len);
	connect_files(pem, len, "leaf.example", &res);
	assert_ok(&res);
	free(pem);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* --- Trust failures ---------------------------------------------------- */

static void
test_unknown_ca(void **state)
{
	struct spec s = {.cn = "ncg.example", .san = "DNS:ncg.example"};
	struct result res;

	(void)state;
	s.iss = T.ca;
	s.iss_key = T.ca_key;
	try_cert(&s, 0, T.other, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_UNKNOWN_CA);
	assert_string_equal(res.msg, "unable to verify: issuer "
	                             "'CN=ncgrpc test CA' is not trusted");
	/* The server learns of it from the alert. */
	assert_int_equal(res.sv, NCG_ETLS);
	assert_msg_has(res.svmsg, "alert 'unknown CA'");

	/* An impostor CA with the trusted CA's name. */
	try_cert(&s, 0, T.imp, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_UNKNOWN_CA);
	assert_msg_has(res.msg, "unable to verify");
	assert_msg_has(res.msg, "ncgrpc test CA");

	/*
	 * A trusted end-entity certificate (CA:FALSE) must not vouch for
	 * another certificate signed with its key.
	 */
	{
		struct spec es = {.cn = "ee", .san = "DNS:ncg.example"};
		EVP_PKEY *ek = mkkey();
		X509 *ee = mkcert(&es, ek);

		es.iss = ee;
		es.iss_key = ek;
		try_cert(&es, 0, ee, "ncg.example", &res);
		assert_int_equal(res.cl, NCG_ETLS_BAD_CERT);
		assert_msg_has(res.msg, "'CN=ee' in the chain is unusable");
		X509_free(ee);
		EVP_PKEY_free(ek);
	}

	/* A self-signed server certificate that is not the anchor. */
	s.iss = NULL;
	s.iss_key = NULL;
	try_cert(&s, 0, T.other, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_UNKNOWN_CA);
	assert_string_equal(res.msg, "unable to verify: self-signed "
	                             "certificate 'CN=ncg.example' is not "
	                             "trusted");

	/* A chain ending in a root the client does not trust. */
	s.iss = T.ca;
	s.iss_key = T.ca_key;
	{
		EVP_PKEY *k = mkkey();
		X509 *x = mkcert(&s, k), *certs[2] = {x, T.ca};
		char *pem;
		size_t len;

		write_chain(T.cert, certs, 2);
		write_key(T.key, k);
		pem = pem_of(&T.other, 1, &len);
		connect_files(pem, len, "ncg.example", &res);
		assert_int_equal(res.cl, NCG_ETLS_UNKNOWN_CA);
		assert_msg_has(res.msg, "root certificate "
		                        "'CN=ncgrpc test CA' in the chain is "
		                        "not trusted");
		free(pem);
		X509_free(x);
		EVP_PKEY_free(k);
	}
}

static void
test_expired(void **state)
{
	struct spec s = {.cn = "ncg.example", .san = "DNS:ncg.example"};
	struct spec cas = {.cn = "old CA", .ca = 1};
	EVP_PKEY *k;
	X509 *oldca;
	struct result res;

	(void)state;
	s.nb = T2020;
	s.na = T2021;
	s.iss = T.ca;
	s.iss_key = T.ca_key;
	try_cert(&s, 0, T.ca, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_EXPIRED);
	assert_string_equal(res.msg, "certificate has expired "
	                             "(notAfter 2021-01-01 00:00:00 GMT)");
	assert_int_equal(res.sv, NCG_ETLS);
	assert_msg_has(res.svmsg, "certificate expired");

	/* A self-signed anchor that expired. */
	s.iss = NULL;
	s.iss_key = NULL;
	try_cert(&s, 0, NULL, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_EXPIRED);

	/* An expired CA with a valid leaf. */
	k = mkkey();
	cas.nb = T2020;
	cas.na = T2021;
	oldca = mkcert(&cas, k);
	s.nb = s.na = 0;
	s.iss = oldca;
	s.iss_key = k;
	try_cert(&s, 0, oldca, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_EXPIRED);
	assert_string_equal(res.msg, "certificate 'CN=old CA' in the chain "
	                             "has expired (notAfter 2021-01-01 "
	                             "00:00:00 GMT)");
	X509_free(oldca);
	EVP_PKEY_free(k);
}

static void
test_not_yet(void **state)
{
	struct spec s = {.cn = "ncg.example", .san = "DNS:ncg.example"};
	struct result res;

	(void)state;
	s.nb = T2099;
	s.na = T2099 + 86400;
	s.iss = T.ca;
	s.iss_key = T.ca_key;
	try_cert(&s, 0, T.ca, "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NOT_YET);
	assert_string_equal(res.msg, "certificate is not yet valid "
	                             "(notBefore 2099-01-01 00:00:00 GMT)");
}

/* --- Names ------------------------------------------------------------- */

static void
test_wrong_name(void **state)
{
	struct result res;

	(void)state;
	try_ca("x", "DNS:other.example,IP:10.0.0.1", "127.0.0.1", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	assert_string_equal(res.msg, "certificate names 'other.example' and "
	                             "'10.0.0.1', not '127.0.0.1'");
	assert_int_equal(res.sv, NCG_ETLS);
	try_ca("x", "DNS:other.example,IP:10.0.0.1", "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	assert_msg_has(res.msg, "not 'ncg.example'");
	try_ca("x", "DNS:other.example,IP:10.0.0.1", "::1", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	/* A SAN DNS entry holding an address text is no IP entry. */
	try_ca("x", "DNS:127.0.0.1", "127.0.0.1", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	assert_string_equal(res.msg, "certificate names '127.0.0.1' (dns), "
	                             "not '127.0.0.1'");
	/* Long lists are summarised. */
	try_ca("x",
	       "DNS:a.example,DNS:b.example,DNS:c.example,IP:10.0.0.1,"
	       "IP:10.0.0.2,IP:fe80::1",
	       "10.0.0.3", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	assert_string_equal(res.msg, "certificate names 'a.example', "
	                             "'b.example', 'c.example', '10.0.0.1' "
	                             "and 2 more, not '10.0.0.3'");
}

static void
test_san_ip_cn(void **state)
{
	struct result res;

	(void)state;
	/* The SAN IP matches; the CN is irrelevant. */
	try_ca("something else", "IP:127.0.0.1", "127.0.0.1", &res);
	assert_ok(&res);
	/* A SAN exists, so the CN is never used, even when it matches. */
	try_ca("ncg.example", "IP:127.0.0.1", "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	assert_string_equal(res.msg, "certificate names '127.0.0.1', not "
	                             "'ncg.example' (the cn is not used when "
	                             "the certificate has a "
	                             "subjectaltname)");
}

static void
test_cn_only(void **state)
{
	struct result res;

	(void)state;
	try_ca("ncg.example", NULL, "ncg.example", &res);
	assert_ok(&res);
	try_ca("ncg.example", NULL, "127.0.0.1", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	assert_msg_has(res.msg, "'ncg.example' (cn)");
	assert_msg_has(res.msg, "an ip address must be a subjectaltname ip");
	/* An address in the CN does not count either. */
	try_ca("127.0.0.1", NULL, "127.0.0.1", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	try_ca("ncg.example", NULL, "other.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
}

static void
test_wildcard(void **state)
{
	struct result res;

	(void)state;
	try_ca("w", "DNS:*.ncg.example", "a.ncg.example", &res);
	assert_ok(&res);
	try_ca("w", "DNS:*.ncg.example", "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	try_ca("w", "DNS:*.ncg.example", "a.b.ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	try_ca("w", "DNS:a.*.example", "a.ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	try_ca("w", "DNS:f*.ncg.example", "foo.ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	try_ca("w", "DNS:*.example", "ncg.example", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	/* A wildcard never matches an address. */
	try_ca("w", "DNS:*.0.0.1", "127.0.0.1", &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
}

/* --- Raw OpenSSL peers ------------------------------------------------- */

static int
raw_select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
              const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned int i;

	(void)ssl;
	(void)arg;
	for (i = 0; i + 2 < inlen; i += 1u + in[i])
		if (in[i] == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
	return SSL_TLSEXT_ERR_NOACK;
}

/*
 * Our client against an OpenSSL server; alpn: 0 none, 1 h2.  Returns the
 * client result and copies the SNI the server saw.
 */
static int
client_vs_raw(const char *san, const char *peer_name, int alpn, int maxver,
              char *sni, size_t snilen, struct result *res)
{
	struct spec s = {.cn = "raw", .san = san};
	EVP_PKEY *k = mkkey();
	X509 *x;
	SSL_CTX *rctx;
	struct tls_ctx *cctx;
	struct peer cl = {0}, sv = {0};
	char *pem, err[256];
	const char *name;
	size_t len;

	s.iss = T.ca;
	s.iss_key = T.ca_key;
	x = mkcert(&s, k);
	rctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(rctx);
	assert_int_equal(SSL_CTX_use_certificate(rctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(rctx, k), 1);
	if (maxver != 0)
		SSL_CTX_set_max_proto_version(rctx, maxver);
	if (alpn)
		SSL_CTX_set_alpn_select_cb(rctx, raw_select_h2, NULL);
	pem = pem_of(&T.ca, 1, &len);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	assert_int_equal(tls_conn_new(&cl.tc, cctx, peer_name), 0);
	sv.raw = raw_new(rctx, 1);
	pump(&cl, &sv);
	res->cl = cl.rc;
	res->sv = sv.rc;
	snprintf(res->msg, sizeof(res->msg), "%s", tls_conn_errmsg(cl.tc));
	snprintf(res->version, sizeof(res->version), "%s",
	         tls_conn_version(cl.tc));
	name = SSL_get_servername(sv.raw, TLSEXT_NAMETYPE_host_name);
	snprintf(sni, snilen, "%s", name != NULL ? name : "");
	SSL_free(sv.raw);
	tls_conn_free(cl.tc);
	tls_ctx_free(cctx);
	SSL_CTX_free(rctx);
	free(pem);
	X509_free(x);
	EVP_PKEY_free(k);
	return res->cl;
}

static void
test_server_no_alpn(void **state)
{
	struct result res;
	char sni[64];

	(void)state;
	client_vs_raw("DNS:ncg.example", "ncg.example", 0, 0, sni, sizeof(sni),
	              &res);
	assert_int_equal(res.cl, NCG_ETLS_NO_ALPN);
	assert_msg_has(res.msg, "server did not select alpn \"h2\"");
}

static void
test_sni_and_tls12(void **state)
{
	struct result res;
	char sni[64];

	(void)state;
	client_vs_raw("DNS:ncg.example,IP:127.0.0.1", "ncg.example", 1, 0, sni,
	              sizeof(sni), &res);
	assert_int_equal(res.cl, 0);
	assert_string_equal(sni, "ncg.example");
	/* No SNI for address literals (RFC 6066). */
	client_vs_raw("DNS:ncg.example,IP:127.0.0.1", "127.0.0.1", 1, 0, sni,
	              sizeof(sni), &res);
	assert_int_equal(res.cl, 0);
	assert_string_equal(sni, "");
	/* TLS 1.2 is accepted, and verified the same way. */
	client_vs_raw("DNS:ncg.example", "ncg.example", 1, TLS1_2_VERSION, sni,
	              sizeof(sni), &res);
	assert_int_equal(res.cl, 0);
	assert_string_equal(res.version, "TLSv1.2");
	client_vs_raw("DNS:ncg.example", "other.example", 1, TLS1_2_VERSION,
	              sni, sizeof(sni), &res);
	assert_int_equal(res.cl, NCG_ETLS_NAME);
	client_vs_raw("DNS:ncg.example", "ncg.example", 0, TLS1_2_VERSION, sni,
	              sizeof(sni), &res);
	assert_int_equal(res.cl, NCG_ETLS_NO_ALPN);
}

/* An OpenSSL client offering alpn (wire format, may be NULL) to our server. */
static void
raw_vs_server(const unsigned char *alpn, unsigned alen, int maxver,
              struct result *res)
{
	struct spec s = {.cn = "srv", .san = "DNS:srv.example"};
	EVP_PKEY *k = mkkey();
	X509 *x = mkcert(&s, k);
	SSL_CTX *rctx;
	struct tls_ctx *sctx;
	struct peer cl = {0}, sv = {0};
	char err[256];

	write_chain(T.cert, &x, 1);
	write_key(T.key, k);
	assert_int_equal(
	    tls_ctx_server_new(&sctx, T.cert, T.key, err, sizeof(err)), 0);
	rctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(rctx);
	SSL_CTX_set_verify(rctx, SSL_VERIFY_NONE, NULL);
	if (maxver != 0) {
		SSL_CTX_set_security_level(rctx, 0);
		SSL_CTX_set_min_proto_version(rctx, 0);
		SSL_CTX_set_max_proto_version(rctx, maxver);
	}
	if (alpn != NULL)
		assert_int_equal(SSL_CTX_set_alpn_protos(rctx, alpn, alen), 0);
	cl.raw = raw_new(rctx, 0);
	assert_int_equal(tls_conn_new(&sv.tc, sctx, NULL), 0);
	pump(&cl, &sv);
	res->cl = cl.rc;
	res->sv = sv.rc;
	snprintf(res->svmsg, sizeof(res->svmsg), "%s", tls_conn_errmsg(sv.tc));
	res->msg[0] = '\0';
	SSL_free(cl.raw);
	tls_conn_free(sv.tc);
	tls_ctx_free(sctx);
	SSL_CTX_free(rctx);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void
test_client_without_h2(void **state)
{
	static const unsigned char http11[] = "\x08http/1.1";
	static const unsigned char both[] = "\x08http/1.1\x02h2";
	struct result res;

	(void)state;
	raw_vs_server(http11, sizeof(http11) - 1, 0, &res);
	assert_int_equal(res.sv, NCG_ETLS_NO_ALPN);
	assert_int_equal(res.cl, -1);
	assert_string_equal(res.svmsg, "client did not offer alpn \"h2\"");

	raw_vs_server(NULL, 0, 0, &res);
	assert_int_equal(res.sv, NCG_ETLS_NO_ALPN);
	assert_int_equal(res.cl, -1);
	assert_msg_has(res.svmsg, "no alpn extension");

	raw_vs_server(both, sizeof(both) - 1, 0, &res);
	assert_int_equal(res.sv, 0);
	assert_int_equal(res.cl, 0);

	/* TLS 1.2 is the minimum. */
	raw_vs_server(both, sizeof(both) - 1, TLS1_1_VERSION, &res);
	assert_int_equal(res.sv, NCG_ETLS);
	assert_int_equal(res.cl, -1);
	assert_msg_has(res.svmsg, "tls handshake failed: ");
}

static void
test_client_no_alpn_alert(void **state)
{
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	char *pem, err[256];
	size_t len;
	struct spec s = {.cn = "a", .san = "DNS:a.example"};
	EVP_PKEY *k = mkkey();
	X509 *x = mkcert(&s, k);

	(void)state;
	/* Our server refusing, seen from our client: the alert maps too. */
	write_chain(T.cert, &x, 1);
	write_key(T.key, k);
	pem = pem_of(&x, 1, &len);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	assert_int_equal(
	    tls_ctx_server_new(&sctx, T.cert, T.key, err, sizeof(err)), 0);
	/* Make the client offer only something else. */
	assert_int_equal(
	    SSL_CTX_set_alpn_protos(cctx->tc_ssl,
	                            (const unsigned char *)"\x08http/1.1", 9),
	    0);
	assert_int_equal(tls_conn_new(&cl.tc, cctx, "a.example"), 0);
	assert_int_equal(tls_conn_new(&sv.tc, sctx, NULL), 0);
	pump(&cl, &sv);
	assert_int_equal(sv.rc, NCG_ETLS_NO_ALPN);
	assert_int_equal(cl.rc, NCG_ETLS_NO_ALPN);
	assert_msg_has(tls_conn_errmsg(cl.tc), "no_application_protocol");
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	free(pem);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* --- Bad input --------------------------------------------------------- */

/* A server context and connection with a fresh self-signed g.example. */
static void
server_conn(struct tls_ctx **ctx, struct tls_conn **c)
{
	struct spec s = {.cn = "g", .san = "DNS:g.example"};
	EVP_PKEY *k = mkkey();
	X509 *x = mkcert(&s, k);
	char err[256];

	write_chain(T.cert, &x, 1);
	write_key(T.key, k);
	assert_int_equal(
	    tls_ctx_server_new(ctx, T.cert, T.key, err, sizeof(err)), 0);
	assert_int_equal(tls_conn_new(c, *ctx, NULL), 0);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* --- Session resumption ------------------------------------------------ */

static struct tls_ctx *
ticket_server(const uint8_t *key)
{
	struct tls_ctx *sctx;
	char err[256];

	assert_int_equal(
	    tls_ctx_server_new(&sctx, T.cert, T.key, err, sizeof(err)), 0);
	if (key != NULL)
		assert_int_equal(
		    tls_ctx_set_ticket_key(sctx, key, TLS_TICKET_KEY_LEN, 3600),
		    0);
	return sctx;
}

/*
 * One connection of cctx (tickets kept under name) to sctx.  Returns
 * whether the client offered a ticket; *resumed says whether the handshake
 * resumed.  With appdata, the server then issues a ticket holding it; got
 * receives the appdata of the ticket resumed with ("" if none).
 */
static int
ticket_round(struct tls_ctx *cctx, struct tls_ctx *sctx, const char *name,
             const char *appdata, int *resumed, char *got, size_t gotlen)
{
	struct peer cl = {0}, sv = {0};
	const uint8_t *ad;
	uint8_t buf[64];
	size_t adlen;
	int offered;

	assert_int_equal(tls_conn_new(&cl.tc, cctx, "localhost"), 0);
	assert_int_equal(tls_conn_new(&sv.tc, sctx, NULL), 0);
	offered = tls_conn_resume(cl.tc, name);
	assert_true(offered == 0 || offered == 1);
	pump(&cl, &sv);
	assert_int_equal(cl.rc, 0);
	assert_int_equal(sv.rc, 0);
	*resumed = tls_conn_resumed(cl.tc);
	assert_int_equal(tls_conn_resumed(sv.tc), *resumed);
	got[0] = '\0';
	if (tls_conn_ticket_appdata(sv.tc, &ad, &adlen) == 0) {
		assert_true(adlen < gotlen);
		memcpy(got, ad, adlen);
		got[adlen] = '\0';
	}
	if (appdata != NULL) {
		assert_int_equal(tls_conn_issue_ticket(sv.tc,
		                                       (const uint8_t *)appdata,
		                                       strlen(appdata)),
		                 0);
		assert_true(move(&sv, &cl) > 0);
		/* The client takes the ticket in while reading. */
		assert_int_equal(tls_conn_read(cl.tc, buf, sizeof(buf)),
		                 -EAGAIN);
	}
	/* No close_notify: as when a server restarts under its devices. */
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	return offered;
}

/* A localhost certificate for ticket_server(), and a client trusting it. */
struct ticket_pki {
	EVP_PKEY *tp_key;
	X509 *tp_cert;
	char *tp_pem;
};

static struct tls_ctx *
ticket_client(struct ticket_pki *tp)
{
	struct spec s = {.cn = "localhost", .san = "DNS:localhost"};
	struct tls_ctx *cctx;
	char err[256];
	size_t len;

	tp->tp_key = mkkey();
	tp->tp_cert = mkcert(&s, tp->tp_key);
	write_chain(T.cert, &tp->tp_cert, 1);
	write_key(T.key, tp->tp_key);
	tp->tp_pem = pem_of(&tp->tp_cert, 1, &len);
	assert_int_equal(
	    tls_ctx_client_new(&cctx, tp->tp_pem, len, err, sizeof(err)), 0);
	return cctx;
}

static void
ticket_pki_free(struct ticket_pki *tp)
{
	free(tp->tp_pem);
	X509_free(tp->tp_cert);
	EVP_PKEY_free(tp->tp_key);
}

static void
test_resumption(void **state)
{
	uint8_t key[TLS_TICKET_KEY_LEN], other[TLS_TICKET_KEY_LEN];
	struct tls_ctx *cctx, *sctx, *plain;
	struct peer cl = {0}, sv = {0};
	struct ticket_pki tp;
	char got[64];
	int resumed;

	(void)state;
	memset(key, 7, sizeof(key));
	memset(other, 9, sizeof(other));
	cctx = ticket_client(&tp);

	/* A first connection has nothing to offer, and gets a ticket. */
	sctx = ticket_server(key);
	assert_int_equal(ticket_round(cctx, sctx, "srv:1", "first", &resumed,
	                              got, sizeof(got)),
	                 0);
	assert_false(resumed);
	tls_ctx_free(sctx);
	/* The server restarts with the same key: the ticket resumes. */
	sctx = ticket_server(key);
	assert_int_equal(ticket_round(cctx, sctx, "srv:1", "second", &resumed,
	                              got, sizeof(got)),
	                 1);
	assert_true(resumed);
	assert_string_equal(got, "first");
	/* The newest ticket replaced the first. */
	assert_int_equal(
	    ticket_round(cctx, sctx, "srv:1", NULL, &resumed, got, sizeof(got)),
	    1);
	assert_true(resumed);
	assert_string_equal(got, "second");
	/* Another server name has no ticket. */
	assert_int_equal(
	    ticket_round(cctx, sctx, "srv:2", NULL, &resumed, got, sizeof(got)),
	    0);
	assert_false(resumed);
	tls_ctx_free(sctx);
	/* A new key cannot read the ticket: a full handshake, no appdata. */
	sctx = ticket_server(other);
	assert_int_equal(
	    ticket_round(cctx, sctx, "srv:1", NULL, &resumed, got, sizeof(got)),
	    1);
	assert_false(resumed);
	assert_string_equal(got, "");
	tls_ctx_free(sctx);

	/* Without a key a server issues no ticket; keys are for servers. */
	plain = ticket_server(NULL);
	assert_int_equal(tls_conn_new(&cl.tc, cctx, "localhost"), 0);
	assert_int_equal(tls_conn_new(&sv.tc, plain, NULL), 0);
	pump(&cl, &sv);
	assert_int_equal(sv.rc, 0);
	assert_int_equal(tls_conn_issue_ticket(sv.tc, (const uint8_t *)"x", 1),
	                 -EINVAL);
	assert_int_equal(tls_conn_resume(sv.tc, "x"), -EINVAL);
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	assert_int_equal(tls_ctx_set_ticket_key(cctx, key, sizeof(key), 60),
	                 -EINVAL);
	assert_int_equal(
	    tls_ctx_set_ticket_key(plain, key, sizeof(key) - 1, 60), -EINVAL);
	assert_int_equal(tls_ctx_set_ticket_key(plain, key, sizeof(key), 0),
	                 -EINVAL);
	tls_ctx_free(plain);
	tls_ctx_free(cctx);
	ticket_pki_free(&tp);
}

/*
 * How many of the keys name%d (0 <= %d < n) have a ticket to offer.  It
 * asks without a handshake, which would use the ticket up (a server takes
 * each ticket once) and would make the cache change.
 */
static int
offered_count(struct tls_ctx *cctx, const char *name, int n)
{
	struct tls_conn *c;
	char key[64];
	int i, rc, offered = 0;

	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s%d srv:1", name, i);
		assert_int_equal(tls_conn_new(&c, cctx, "localhost"), 0);
		rc = tls_conn_resume(c, key);
		assert_true(rc == 0 || rc == 1);
		offered += rc;
		tls_conn_free(c);
	}
	return offered;
}

/* Gives each key name%d (0 <= %d < n) a ticket. */
static void
ticket_each(struct tls_ctx *cctx, struct tls_ctx *sctx, const char *name, int n)
{
	char key[64], got[64];
	int i, resumed;

	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s%d srv:1", name, i);
		(void)ticket_round(cctx, sctx, key, "t", &resumed, got,
		                   sizeof(got));
	}
}

/*
 * A client context shared (tls_ctx_ref()) keeps TLS_RESUME_MAX tickets per
 * reference, so sharers that keep theirs under keys of their own do not
 * push each other's out; when a sharer goes, the bound falls back.
 */
static void
test_resumption_shared(void **state)
{
	uint8_t key[TLS_TICKET_KEY_LEN];
	struct tls_ctx *cctx, *sctx;
	struct ticket_pki tp;

	(void)state;
	memset(key, 7, sizeof(key));
	cctx = ticket_client(&tp);
	sctx = ticket_server(key);

	/* One reference: one key more than the bound, and the first goes. */
	ticket_each(cctx, sctx, "a", TLS_RESUME_MAX + 1);
	assert_int_equal(offered_count(cctx, "a", 1), 0);
	assert_int_equal(offered_count(cctx, "a", TLS_RESUME_MAX + 1),
	                 TLS_RESUME_MAX);
	/* Two: as many again fit beside them. */
	assert_ptr_equal(tls_ctx_ref(cctx), cctx);
	ticket_each(cctx, sctx, "b", TLS_RESUME_MAX);
	assert_int_equal(offered_count(cctx, "a", TLS_RESUME_MAX + 1) +
	                     offered_count(cctx, "b", TLS_RESUME_MAX),
	                 2 * TLS_RESUME_MAX);
	/* One again: the next ticket makes the cache fit the bound. */
	tls_ctx_free(cctx);
	ticket_each(cctx, sctx, "c", 1);
	assert_int_equal(offered_count(cctx, "c", 1), 1);
	assert_int_equal(offered_count(cctx, "a", TLS_RESUME_MAX + 1) +
	                     offered_count(cctx, "b", TLS_RESUME_MAX),
	                 TLS_RESUME_MAX - 1);
	/* The newest of the others stayed. */
	assert_int_equal(offered_count(cctx, "b", TLS_RESUME_MAX),
	                 TLS_RESUME_MAX - 1);

	tls_ctx_free(sctx);
	tls_ctx_free(cctx);
	ticket_pki_free(&tp);
}

static void
test_garbage(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t junk[300];
	struct tls_ctx *ctx;
	struct tls_conn *c;
	uint8_t buf[64];
	size_t i;

	(void)state;
	server_conn(&ctx, &c);
	assert_int_equal(
	    tls_conn_feed(c, (const uint8_t *)http, sizeof(http) - 1), 0);
	assert_int_equal(tls_conn_handshake(c), NCG_ETLS);
	assert_string_equal(tls_conn_errmsg(c), "tls handshake failed: peer "
	                                        "sent a plain http request");
	/* The failure sticks. */
	assert_int_equal(tls_conn_handshake(c), NCG_ETLS);
	assert_int_equal(tls_conn_read(c, buf, sizeof(buf)), NCG_ETLS);
	assert_int_equal(tls_conn_write(c, buf, 1), NCG_ETLS);
	assert_int_equal(tls_conn_shutdown(c), NCG_ETLS);
	tls_conn_free(c);

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	assert_int_equal(tls_conn_new(&c, ctx, NULL), 0);
	assert_int_equal(tls_conn_feed(c, junk, sizeof(junk)), 0);
	assert_int_equal(tls_conn_handshake(c), NCG_ETLS);
	assert_msg_has(tls_conn_errmsg(c), "tls handshake failed: ");
	tls_conn_free(c);

	/* A TLS record header that lies about its contents. */
	memset(junk, 0xff, sizeof(junk));
	memcpy(junk, "\x16\x03\x01\x00\x80", 5);
	assert_int_equal(tls_conn_new(&c, ctx, NULL), 0);
	assert_int_equal(tls_conn_feed(c, junk, sizeof(junk)), 0);
	assert_int_equal(tls_conn_handshake(c), NCG_ETLS);
	assert_true(strlen(tls_conn_errmsg(c)) > 0);
	/* An alert may be waiting; taking it must work after the failure. */
	while (tls_conn_take(c, buf, sizeof(buf)) > 0)
		;
	assert_int_equal(tls_conn_pending(c), 0);
	tls_conn_free(c);
	tls_ctx_free(ctx);
}

static void
test_truncated(void **state)
{
	struct tls_ctx *sctx, *cctx;
	struct tls_conn *sv, *cl;
	uint8_t hello[4096], buf[16];
	size_t n;
	char *pem, err[256];
	size_t len;

	(void)state;
	server_conn(&sctx, &sv);
	pem = pem_of(&T.ca, 1, &len);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	assert_int_equal(tls_conn_new(&cl, cctx, "g.example"), 0);
	assert_int_equal(tls_conn_handshake(cl), TLS_EAGAIN);
	assert_string_equal(tls_conn_errmsg(cl), "");
	n = tls_conn_take(cl, hello, sizeof(hello));
	assert_true(n > 100);
	assert_int_equal(tls_conn_pending(cl), 0);
	assert_int_equal(tls_conn_feed(sv, hello, n / 2), 0);
	assert_int_equal(tls_conn_handshake(sv), TLS_EAGAIN);
	assert_int_equal(tls_conn_handshake(sv), TLS_EAGAIN);
	assert_int_equal(tls_conn_read(sv, buf, sizeof(buf)), -EAGAIN);
	assert_int_equal(tls_conn_pending(sv), 0);
	assert_string_equal(tls_conn_errmsg(sv), "");
	/* Not ready: writing and shutting down are refused. */
	assert_int_equal(tls_conn_write(sv, buf, 1), NCG_ETLS);
	assert_true(strlen(tls_conn_errmsg(sv)) > 0);
	assert_int_equal(tls_conn_shutdown(sv), NCG_ETLS);
	/* ... but the handshake can still go on byte by byte. */
	for (size_t i = n / 2; i < n; i++) {
		assert_int_equal(tls_conn_feed(sv, hello + i, 1), 0);
		assert_int_equal(tls_conn_handshake(sv), TLS_EAGAIN);
	}
	assert_true(tls_conn_pending(sv) > 0);
	tls_conn_free(cl);
	tls_conn_free(sv);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	free(pem);
}

static void
test_bad_pem(void **state)
{
	static const char bad64[] = "-----BEGIN CERTIFICATE-----\n"
	                            "!!!!not base64!!!!\n"
	                            "-----END CERTIFICATE-----\n";
	static const char notcert[] = "-----BEGIN CERTIFICATE-----\n"
	                              "aGVsbG8gd29ybGQ=\n"
	                              "-----END CERTIFICATE-----\n";
	struct tls_ctx *ctx = NULL;
	char err[256];

	(void)state;
	assert_int_equal(tls_ctx_client_new(&ctx, "", 0, err, sizeof(err)),
	                 -EINVAL);
	assert_null(ctx);
	assert_msg_has(err, "no certificate");
	assert_int_equal(tls_ctx_client_new(&ctx, "hello", 5, err, sizeof(err)),
	                 -EINVAL);
	assert_null(ctx);
	assert_msg_has(err, "no certificate");
	assert_int_equal(tls_ctx_client_new(&ctx, bad64, sizeof(bad64) - 1, err,
	                                    sizeof(err)),
	                 -EINVAL);
	assert_null(ctx);
	assert_msg_has(err, "bad pem text");
	assert_int_equal(tls_ctx_client_new(&ctx, notcert, sizeof(notcert) - 1,
	                                    err, sizeof(err)),
	                 NCG_ETLS_BAD_CERT);
	assert_null(ctx);
	assert_msg_has(err, "cannot parse trusted certificate");
	/* A tiny err buffer is still terminated; NULL is allowed. */
	assert_int_equal(tls_ctx_client_new(&ctx, "", 0, err, 4), -EINVAL);
	assert_int_equal(strlen(err), 3);
	assert_int_equal(tls_ctx_client_new(&ctx, "", 0, NULL, 0), -EINVAL);
	assert_null(ctx);
}

static void
test_pem_not_terminated(void **state)
{
	struct tls_ctx *ctx = NULL;
	char *pem, *copy, err[256];
	size_t len;

	(void)state;
	/* The PEM text need not be NUL-terminated: only len bytes count. */
	pem = pem_of(&T.ca, 1, &len);
	copy = malloc(len);
	assert_non_null(copy);
	memcpy(copy, pem, len);
	assert_int_equal(tls_ctx_client_new(&ctx, copy, len, err, sizeof(err)),
	                 0);
	tls_ctx_free(ctx);
	ctx = NULL;
	/* A cut certificate is bad PEM. */
	assert_true(tls_ctx_client_new(&ctx, copy, len / 2, err, sizeof(err)) <
	            0);
	assert_null(ctx);
	assert_true(strlen(err) > 0);
	free(copy);
	free(pem);
}

static void
test_files(void **state)
{
	struct spec s = {.cn = "f", .san = "DNS:f.example"};
	EVP_PKEY *k = mkkey(), *k2 = mkkey();
	X509 *x = mkcert(&s, k);
	struct tls_ctx *ctx = NULL;
	char err[256], missing[128];
	FILE *f;
	char keytext[4096];
	size_t n;

	(void)state;
	snprintf(missing, sizeof(missing), "%s/missing.pem", T.dir);
	write_chain(T.cert, &x, 1);
	write_key(T.key, k2);
	/* The key file's body, to check it never leaks into messages. */
	f = fopen(T.key, "r");
	assert_non_null(f);
	n = fread(keytext, 1, sizeof(keytext) - 1, f);
	keytext[n] = '\0';
	fclose(f);

	assert_int_equal(
	    tls_ctx_server_new(&ctx, T.cert, T.key, err, sizeof(err)),
	    NCG_ETLS_BAD_CERT);
	assert_null(ctx);
	assert_msg_has(err, "private key does not match the certificate");
	assert_null(strstr(err, "PRIVATE"));
	assert_null(strstr(err, keytext + 28)); /* past the BEGIN line */
	assert_int_equal(
	    tls_ctx_server_new(&ctx, missing, T.key, err, sizeof(err)),
	    -ENOENT);
	assert_msg_has(err, "missing.pem");
	assert_int_equal(
	    tls_ctx_server_new(&ctx, T.cert, missing, err, sizeof(err)),
	    -ENOENT);
	/* Swapped files. */
	assert_int_equal(
	    tls_ctx_server_new(&ctx, T.key, T.cert, err, sizeof(err)), -EINVAL);
	assert_msg_has(err, "no certificate");
	write_text(T.file, "junk\n");
	assert_int_equal(
	    tls_ctx_server_new(&ctx, T.cert, T.file, err, sizeof(err)),
	    -EINVAL);
	assert_msg_has(err, "no usable private key");
	assert_null(ctx);

	/* The client's file form. */
	assert_int_equal(
	    tls_ctx_client_new_file(&ctx, missing, err, sizeof(err)), -ENOENT);
	assert_null(ctx);
	assert_int_equal(
	    tls_ctx_client_new_file(&ctx, T.file, err, sizeof(err)), -EINVAL);
	assert_msg_has(err, T.file);
	assert_int_equal(
	    tls_ctx_client_new_file(&ctx, T.cert, err, sizeof(err)), 0);
	assert_non_null(ctx);
	assert_string_equal(err, "");
	tls_ctx_free(ctx);
	X509_free(x);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
}

static void
test_conn_args(void **state)
{
	struct tls_ctx *sctx, *cctx;
	struct tls_conn *c = NULL, *sv;
	char *pem, err[256], longname[300];
	size_t len;

	(void)state;
	server_conn(&sctx, &sv);
	pem = pem_of(&T.ca, 1, &len);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	assert_int_equal(tls_conn_new(&c, sctx, "x.example"), -EINVAL);
	assert_int_equal(tls_conn_new(&c, cctx, NULL), -EINVAL);
	assert_int_equal(tls_conn_new(&c, cctx, ""), -EINVAL);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(tls_conn_new(&c, cctx, longname), -EINVAL);
	assert_null(c);
	tls_conn_free(NULL);
	tls_ctx_free(NULL);
	tls_conn_free(sv);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	free(pem);
}

/* --- Data -------------------------------------------------------------- */

/* Connects our client and server over a self-signed g.example. */
static void
pair(struct tls_ctx **cctx, struct tls_ctx **sctx, struct peer *cl,
     struct peer *sv)
{
	char *pem, err[256];
	size_t len;

	server_conn(sctx, &sv->tc);
	/* Trust exactly the certificate the server was given. */
	{
		BIO *b = BIO_new_file(T.cert, "r");
		X509 *x;

		assert_non_null(b);
		x = PEM_read_bio_X509(b, NULL, NULL, NULL);
		assert_non_null(x);
		pem = pem_of(&x, 1, &len);
		X509_free(x);
		BIO_free(b);
	}
	assert_int_equal(tls_ctx_client_new(cctx, pem, len, err, sizeof(err)),
	                 0);
	free(pem);
	assert_int_equal(tls_conn_new(&cl->tc, *cctx, "g.example"), 0);
	pump(cl, sv);
	assert_int_equal(cl->rc, 0);
	assert_int_equal(sv->rc, 0);
}

/* Sends len bytes in pieces and checks they arrive intact. */
static void
xfer(struct peer *from, struct peer *to, const uint8_t *data, size_t len,
     size_t piece)
{
	uint8_t *got = malloc(len + 1);
	size_t off = 0, have = 0, n;
	ssize_t r;
	int rounds = 0;

	assert_non_null(got);
	while (have < len) {
		assert_true(++rounds < 100000);
		if (off < len) {
			n = len - off < piece ? len - off : piece;
			assert_int_equal(
			    tls_conn_write(from->tc, data + off, n), 0);
			off += n;
		}
		move(from, to);
		while ((r = tls_conn_read(to->tc, got + have, len + 1 - have)) >
		       0)
			have += (size_t)r;
		assert_int_equal(r, -EAGAIN);
	}
	assert_int_equal(have, len);
	assert_memory_equal(got, data, len);
	free(got);
}

static void
test_data(void **state)
{
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	size_t mib = 1024 * 1024, i;
	uint8_t *big = malloc(mib);

	(void)state;
	assert_non_null(big);
	for (i = 0; i < mib; i++)
		big[i] = (uint8_t)(i * 7 + (i >> 9));
	pair(&cctx, &sctx, &cl, &sv);
	assert_string_equal(tls_conn_errmsg(cl.tc), "");
	xfer(&cl, &sv, (const uint8_t *)"hello", 5, 5);
	xfer(&sv, &cl, (const uint8_t *)"world!", 6, 6);
	xfer(&cl, &sv, big, mib, 10007);
	xfer(&sv, &cl, big, mib, 65536);
	/* In one go; the emptied queues must not stay at 1 MiB. */
	xfer(&cl, &sv, big, mib, mib);
	assert_true(cl.tc->c_wq.b_cap <= TLS_QUEUE_KEEP);
	assert_true(sv.tc->c_rq.b_cap <= TLS_QUEUE_KEEP);
	tls_conn_trim(cl.tc);
	tls_conn_trim(sv.tc);
	assert_int_equal(cl.tc->c_wq.b_cap, 0);
	assert_int_equal(sv.tc->c_rq.b_cap, 0);
	assert_int_equal(tls_conn_write(cl.tc, big, 0), 0);
	assert_int_equal(tls_conn_pending(cl.tc), 0);
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	free(big);
}

/*
 * The transport's way (xport.c): records go straight to a queue of its
 * own, and ciphertext is lent from its read buffer, which it overwrites
 * after each read.  Every way of cutting the stream into reads must give
 * the same bytes, the unread tail of each loan being kept.
 */
static void
test_lend_and_output(void **state)
{
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	struct buf out;
	const size_t len = 200 * 1024;
	const size_t cuts[] = {1, 5, 6, 4096, 16384 + 21, 16384 + 22, 65536};
	uint8_t *data = malloc(len), *got = malloc(len), *rd;
	size_t i, k, off, have;
	ssize_t r;

	(void)state;
	assert_non_null(data);
	assert_non_null(got);
	for (i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 13 + (i >> 11));
	pair(&cctx, &sctx, &cl, &sv);
	buf_init(&out, 0);
	tls_conn_set_output(cl.tc, &out);
	for (k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
		assert_int_equal(tls_conn_write(cl.tc, data, len), 0);
		/* Nothing waits inside the engine; it is all in out. */
		assert_int_equal(tls_conn_pending(cl.tc), 0);
		assert_true(buf_len(&out) > len);
		have = 0;
		for (off = 0; off < buf_len(&out); off += cuts[k]) {
			size_t n = buf_len(&out) - off;

			if (n > cuts[k])
				n = cuts[k];
			/* A fresh copy, destroyed after the loan. */
			rd = malloc(n);
			assert_non_null(rd);
			memcpy(rd, buf_data(&out) + off, n);
			assert_int_equal(tls_conn_lend(sv.tc, rd, n), 0);
			r = -EAGAIN;
			while (have < len &&
			       (r = tls_conn_read(sv.tc, got + have,
			                          len - have)) > 0)
				have += (size_t)r;
			assert_true(r > 0 || r == -EAGAIN);
			assert_int_equal(tls_conn_keep(sv.tc), 0);
			memset(rd, 0xee, n);
			free(rd);
		}
		assert_int_equal(have, len);
		assert_memory_equal(got, data, len);
		buf_consume(&out, buf_len(&out));
	}
	/* Two loans in a row: the first one's tail is kept before the next. */
	assert_int_equal(tls_conn_write(cl.tc, data, 1000), 0);
	assert_true(buf_len(&out) > 100);
	assert_int_equal(tls_conn_lend(sv.tc, buf_data(&out), 100), 0);
	assert_int_equal(
	    tls_conn_lend(sv.tc, buf_data(&out) + 100, buf_len(&out) - 100), 0);
	r = tls_conn_read(sv.tc, got, len);
	assert_int_equal(r, 1000);
	assert_memory_equal(got, data, 1000);
	assert_int_equal(tls_conn_keep(sv.tc), 0);
	assert_int_equal(buf_len(&sv.tc->c_rq), 0);
	/* Keeping without a loan does nothing. */
	assert_int_equal(tls_conn_keep(sv.tc), 0);
	assert_int_equal(tls_conn_read(sv.tc, got, len), -EAGAIN);
	buf_consume(&out, buf_len(&out));
	/* close_notify goes to the attached queue too. */
	assert_int_equal(tls_conn_shutdown(cl.tc), 0);
	assert_int_equal(tls_conn_pending(cl.tc), 0);
	assert_true(buf_len(&out) > 0);
	assert_int_equal(tls_conn_lend(sv.tc, buf_data(&out), buf_len(&out)),
	                 0);
	assert_int_equal(tls_conn_read(sv.tc, got, len), 0);
	assert_int_equal(tls_conn_keep(sv.tc), 0);
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	buf_free(&out);
	free(data);
	free(got);
}

static void
test_close_notify(void **state)
{
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	uint8_t buf[64];

	(void)state;
	pair(&cctx, &sctx, &cl, &sv);
	xfer(&cl, &sv, (const uint8_t *)"bye", 3, 3);
	assert_int_equal(tls_conn_shutdown(cl.tc), 0);
	assert_true(tls_conn_pending(cl.tc) > 0);
	/* A second call while waiting for the answer is harmless. */
	assert_int_equal(tls_conn_shutdown(cl.tc), 0);
	move(&cl, &sv);
	assert_int_equal(tls_conn_read(sv.tc, buf, sizeof(buf)), 0);
	assert_int_equal(tls_conn_read(sv.tc, buf, sizeof(buf)), 0);
	assert_int_equal(tls_conn_shutdown(sv.tc), 0);
	move(&sv, &cl);
	assert_int_equal(tls_conn_read(cl.tc, buf, sizeof(buf)), 0);
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

static void
test_ctx_freed_first(void **state)
{
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	char *pem, err[256];
	size_t len;

	(void)state;
	server_conn(&sctx, &sv.tc);
	pem = pem_of(&T.ca, 1, &len);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	free(pem);
	assert_int_equal(tls_conn_new(&cl.tc, cctx, "g.example"), 0);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	/* The connections hold the contexts; the server cert is not ours. */
	pump(&cl, &sv);
	assert_int_equal(cl.rc, NCG_ETLS_UNKNOWN_CA);
	assert_int_equal(sv.rc, NCG_ETLS);
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
}

/* --- Mutual TLS ---------------------------------------------------------- */

/*
 * A server "node-b" (signed by the test CA) that requires client
 * certificates from the test CA, and a client trusting the test CA that
 * presents a certificate made from cs (none when cs is NULL).  The client's
 * and server's results go to res; the server's name for the client to name.
 */
static void
mtls_try(const struct spec *cs, struct result *res, char *name, size_t len)
{
	struct spec ss = {.cn = "node-b",
	                  .san = "DNS:node-b,IP:127.0.0.1",
	                  .eku = "serverAuth,clientAuth",
	                  .iss = T.ca,
	                  .iss_key = T.ca_key};
	struct tls_ctx *cctx, *sctx;
	struct peer cl = {0}, sv = {0};
	EVP_PKEY *sk = mkkey(), *ck = NULL;
	X509 *sx = mkcert(&ss, sk), *cx = NULL;
	uint8_t buf[64];
	char *pem, err[256];
	size_t plen;

	write_chain(T.cert, &sx, 1);
	write_key(T.key, sk);
	write_chain(T.file, &T.ca, 1);
	assert_int_equal(
	    tls_ctx_server_new(&sctx, T.cert, T.key, err, sizeof(err)), 0);
	assert_int_equal(
	    tls_ctx_server_require_client(sctx, T.file, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	pem = pem_of(&T.ca, 1, &plen);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, plen, err, sizeof(err)),
	                 0);
	free(pem);
	if (cs != NULL) {
		ck = mkkey();
		cx = mkcert(cs, ck);
		write_chain(T.ccert, &cx, 1);
		write_key(T.ckey, ck);
		assert_int_equal(tls_ctx_client_set_cert(cctx, T.ccert, T.ckey,
		                                         err, sizeof(err)),
		                 0);
	}
	assert_int_equal(tls_conn_new(&cl.tc, cctx, "127.0.0.1"), 0);
	assert_int_equal(tls_conn_new(&sv.tc, sctx, NULL), 0);
	pump(&cl, &sv);
	res->cl = cl.rc;
	res->sv = sv.rc;
	snprintf(res->msg, sizeof(res->msg), "%s", tls_conn_errmsg(cl.tc));
	snprintf(res->svmsg, sizeof(res->svmsg), "%s", tls_conn_errmsg(sv.tc));
	name[0] = '\0';
	if (sv.rc == 0) {
		assert_int_equal(tls_conn_peer_name(sv.tc, name, len), 0);
		/* The client verified the server, and sees its name too. */
		assert_int_equal(
		    tls_conn_peer_name(cl.tc, (char *)buf, sizeof(buf)), 0);
		assert_string_equal((char *)buf, "node-b");
	} else {
		assert_int_equal(tls_conn_peer_name(sv.tc, name, len), -ENOENT);
		/*
		 * In TLS 1.3 the client is done before the server has looked
		 * at its certificate: the server's alert ends it on reading.
		 */
		if (cl.rc == 0) {
			ssize_t r = tls_conn_read(cl.tc, buf, sizeof(buf));

			assert_true(r < 0 && r != -EAGAIN);
		}
	}
	tls_conn_free(cl.tc);
	tls_conn_free(sv.tc);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	X509_free(sx);
	X509_free(cx);
	EVP_PKEY_free(sk);
	EVP_PKEY_free(ck);
}

static void
test_mtls_good(void **state)
{
	struct spec cs = {.cn = "node-a",
	                  .san = "DNS:node-a,IP:127.0.0.1",
	                  .eku = "serverAuth,clientAuth",
	                  .iss = T.ca,
	                  .iss_key = T.ca_key};
	struct result res;
	char name[64];

	(void)state;
	mtls_try(&cs, &res, name, sizeof(name));
	assert_ok(&res);
	assert_string_equal(name, "node-a");
	/* A name that does not fit is cut, never overrun. */
	mtls_try(&cs, &res, name, 4);
	assert_string_equal(name, "nod");
}

static void
test_mtls_no_cert(void **state)
{
	struct result res;
	char name[64];

	(void)state;
	mtls_try(NULL, &res, name, sizeof(name));
	assert_int_equal(res.sv, NCG_ETLS_BAD_CERT);
	assert_msg_has(res.svmsg, "client sent no certificate");
}

static void
test_mtls_other_ca(void **state)
{
	struct spec cs = {.cn = "node-a",
	                  .san = "DNS:node-a",
	                  .eku = "clientAuth",
	                  .iss = T.other,
	                  .iss_key = T.other_key};
	struct spec self = {.cn = "node-a", .eku = "clientAuth"};
	struct spec imp = {.cn = "node-a",
	                   .eku = "clientAuth",
	                   .iss = T.imp,
	                   .iss_key = T.imp_key};
	struct result res;
	char name[64];

	(void)state;
	mtls_try(&cs, &res, name, sizeof(name));
	assert_int_equal(res.sv, NCG_ETLS_UNKNOWN_CA);
	assert_msg_has(res.svmsg, "other CA");
	mtls_try(&self, &res, name, sizeof(name));
	assert_int_equal(res.sv, NCG_ETLS_UNKNOWN_CA);
	/* Same issuer name as the trusted CA, another key. */
	mtls_try(&imp, &res, name, sizeof(name));
	assert_int_equal(res.sv, NCG_ETLS_UNKNOWN_CA);
}

static void
test_mtls_expired(void **state)
{
	struct spec cs = {.cn = "node-a",
	                  .eku = "clientAuth",
	                  .nb = T2020,
	                  .na = T2021,
	                  .iss = T.ca,
	                  .iss_key = T.ca_key};
	struct result res;
	char name[64];

	(void)state;
	mtls_try(&cs, &res, name, sizeof(name));
	assert_int_equal(res.sv, NCG_ETLS_EXPIRED);
	assert_msg_has(res.svmsg, "has expired");
}

static void
test_mtls_server_only_eku(void **state)
{
	struct spec cs = {.cn = "node-a",
	                  .eku = "serverAuth",
	                  .iss = T.ca,
	                  .iss_key = T.ca_key};
	struct result res;
	char name[64];

	(void)state;
	mtls_try(&cs, &res, name, sizeof(name));
	assert_int_equal(res.sv, NCG_ETLS_BAD_CERT);
}

static void
test_mtls_args(void **state)
{
	struct tls_ctx *cctx;
	struct tls_conn *c;
	char *pem, err[256], name[8];
	size_t len;

	(void)state;
	pem = pem_of(&T.ca, 1, &len);
	assert_int_equal(tls_ctx_client_new(&cctx, pem, len, err, sizeof(err)),
	                 0);
	free(pem);
	assert_int_equal(
	    tls_ctx_server_require_client(cctx, T.file, err, sizeof(err)),
	    -EINVAL);
	assert_int_equal(tls_conn_new(&c, cctx, "x.example"), 0);
	/* No handshake yet: no name. */
	assert_int_equal(tls_conn_peer_name(c, name, sizeof(name)), -ENOENT);
	assert_int_equal(tls_conn_peer_name(c, name, 0), -EINVAL);
	tls_conn_free(c);
	assert_int_equal(
	    tls_ctx_client_set_cert(cctx, T.dir, T.ckey, err, sizeof(err)) < 0,
	    1);
	tls_ctx_free(cctx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ca_signed),
	    cmocka_unit_test(test_self_signed),
	    cmocka_unit_test(test_chain),
	    cmocka_unit_test(test_unknown_ca),
	    cmocka_unit_test(test_expired),
	    cmocka_unit_test(test_not_yet),
	    cmocka_unit_test(test_wrong_name),
	    cmocka_unit_test(test_san_ip_cn),
	    cmocka_unit_test(test_cn_only),
	    cmocka_unit_test(test_wildcard),
	    cmocka_unit_test(test_server_no_alpn),
	    cmocka_unit_test(test_sni_and_tls12),
	    cmocka_unit_test(test_client_without_h2),
	    cmocka_unit_test(test_client_no_alpn_alert),
	    cmocka_unit_test(test_resumption),
	    cmocka_unit_test(test_resumption_shared),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_bad_pem),
	    cmocka_unit_test(test_pem_not_terminated),
	    cmocka_unit_test(test_files),
	    cmocka_unit_test(test_conn_args),
	    cmocka_unit_test(test_data),
	    cmocka_unit_test(test_lend_and_output),
	    cmocka_unit_test(test_close_notify),
	    cmocka_unit_test(test_ctx_freed_first),
	    cmocka_unit_test(test_mtls_good),
	    cmocka_unit_test(test_mtls_no_cert),
	    cmocka_unit_test(test_mtls_other_ca),
	    cmocka_unit_test(test_mtls_expired),
	    cmocka_unit_test(test_mtls_server_only_eku),
	    cmocka_unit_test(test_mtls_args),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
