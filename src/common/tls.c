/*
 * TLS engine over a queue BIO of its own; see tls.h for the contract.  Peer
 * verification is in tls_verify.c, session resumption in tls_resume.c.
 *
 * The SSL object reads ciphertext from what tls_conn_lend() lent and
 * tls_conn_feed() queued, and writes ciphertext to the caller's output
 * queue (tls_conn_set_output()) or to one that tls_conn_take() drains.
 * Nothing here touches a socket, so the transport decides when bytes move.
 *
 * Peer verification runs inside OpenSSL's chain verification through
 * tls__verify_cb(), so that a failed check aborts the handshake with the right
 * alert while we remember the precise reason in the connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "fileio.h"
#include "tls_int.h"

/* The only application protocol we speak, in wire format. */
static const unsigned char tls_alpn_h2[] = {2, 'h', '2'};

void
tls__conn_msg(struct tls_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->c_msg, sizeof(c->c_msg), fmt, ap);
	va_end(ap);
}

/*
 * Copies untrusted text (from a certificate or the peer) into dst, replacing
 * anything but printable ASCII so that log lines stay intact.
 */
void
tls__clean(char *dst, size_t dstlen, const unsigned char *src, size_t len)
{
	size_t i, n;

	if (dstlen == 0)
		return;
	n = len < dstlen - 1 ? len : dstlen - 1;
	for (i = 0; i < n; i++)
		dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? (char)src[i] : '?';
	dst[n] = '\0';
}

/* Reason text of an OpenSSL error code, never NULL. */
static const char *
ossl_reason(unsigned long e, char *buf, size_t len)
{
	const char *r;

	if (e == 0)
		return "unknown error";
	if ((r = ERR_reason_error_string(e)) != NULL)
		return r;
	ERR_error_string_n(e, buf, len);
	return buf;
}

/* Takes the first (root cause) error off the queue and clears the rest. */
static unsigned long
ossl_first_error(void)
{
	unsigned long e = ERR_peek_error();

	ERR_clear_error();
	return e;
}

static int
ossl_is_oom(unsigned long e)
{
	return e != 0 && !ERR_SYSTEM_ERROR(e) &&
	       ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE;
}

/*
 * Reads a whole file of at most TLS_FILE_MAX bytes.  It may hold a private
 * key: free it with tls_file_free().
 */
int
tls_file_read(const char *path, char **out, size_t *outlen, char *err,
              size_t errlen)
{
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "cannot open '%s': %s", path,
		           strerror(-rc));
		return rc;
	}
	rc = fileio_read_fd(fd, TLS_FILE_MAX, 0, FILEIO_SECRET, out, outlen);
	(void)close(fd);
	if (rc == -EFBIG)
		ncg_seterr(err, errlen, "'%s' is larger than %d bytes", path,
		           TLS_FILE_MAX);
	else if (rc != 0)
		ncg_seterr(err, errlen, "cannot read '%s': %s", path,
		           strerror(-rc));
	return rc;
}

void
tls_file_free(char *p, size_t len)
{
	fileio_free(p, len, FILEIO_SECRET);
}

/*
 * Maps the error left by a failed PEM read: broken armour or base64 is a bad
 * PEM text (-EINVAL), a well-formed block that does not decode is a bad
 * certificate.
 */
static int
pem_error(unsigned long e, const char *what, char *err, size_t errlen)
{
	char tmp[128];

	if (ossl_is_oom(e)) {
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (ERR_GET_LIB(e) == ERR_LIB_PEM) {
		ncg_seterr(err, errlen, "bad pem text in %s: %s", what,
		           ossl_reason(e, tmp, sizeof(tmp)));
		return -EINVAL;
	}
	ncg_seterr(err, errlen, "cannot parse %s: %s", what,
	           ossl_reason(e, tmp, sizeof(tmp)));
	return NCG_ETLS_BAD_CERT;
}

static int
is_pem_eof(unsigned long e)
{
	return ERR_GET_LIB(e) == ERR_LIB_PEM &&
	       ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

/* Settings shared by client and server contexts. */
static int
ctx_common(SSL_CTX *ssl, char *err, size_t errlen)
{
	if (!SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION)) {
		ncg_seterr(err, errlen, "cannot set the minimum tls version");
		return NCG_ETLS;
	}
	/*
	 * Compression invites CRIME-style attacks and renegotiation is a
	 * needless attack surface.  Tickets stay off until a server is given
	 * a ticket key (tls_ctx_set_ticket_key()); even then none is sent at
	 * the handshake, only when the server asks (tls_conn_issue_ticket()).
	 */
	SSL_CTX_set_options(ssl, SSL_OP_NO_COMPRESSION |
	                             SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ssl, 0);
	SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
	/* Idle connections (many agents on one server) keep no buffers. */
	SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

static int
ctx_wrap(struct tls_ctx **out, SSL_CTX *ssl, int server, char *err,
         size_t errlen)
{
	struct tls_ctx *ctx;

	if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		SSL_CTX_free(ssl);
		return -ENOMEM;
	}
	ctx->tc_ssl = ssl;
	ctx->tc_server = server;
	ctx->tc_refs = 1;
	*out = ctx;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	return 0;
}

/*
 * Fills a store with every certificate in the PEM text.  Other PEM blocks
 * are skipped by the PEM reader.
 */
static int
load_trust(X509_STORE *store, const char *pem, size_t len, char *err,
           size_t errlen)
{
	BIO *b;
	X509 *x;
	unsigned long e;
	int n = 0, rc = 0;

	if (len == 0) {
		ncg_seterr(err, errlen,
		           "no certificate in the trusted pem text "
		           "(it is empty)");
		return -EINVAL;
	}
	if (len > INT_MAX) {
		ncg_seterr(err, errlen, "trusted pem text is too large");
		return -EINVAL;
	}
	if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (!X509_STORE_add_cert(store, x)) {
			X509_free(x);
			rc = pem_error(ossl_first_error(),
			               "trusted certificate", err, errlen);
			break;
		}
		X509_free(x);
		n++;
	}
	if (rc == 0) {
		e = ossl_first_error();
		if (e != 0 && !is_pem_eof(e))
			rc = pem_error(e, "trusted certificate", err, errlen);
		else if (n == 0) {
			ncg_seterr(err, errlen,
			           "no certificate in the trusted "
			           "pem text");
			rc = -EINVAL;
		}
	}
	BIO_free(b);
	ERR_clear_error();
	return rc;
}

int
tls_ctx_client_new(struct tls_ctx **out, const char *pem, size_t len, char *err,
                   size_t errlen)
{
	SSL_CTX *ssl;
	X509_STORE *store;
	int rc;

	if (pem == NULL && len > 0) {
		ncg_seterr(err, errlen, "no trusted pem text");
		return -EINVAL;
	}
	if ((ssl = SSL_CTX_new(TLS_client_method())) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if ((rc = ctx_common(ssl, err, errlen)) != 0)
		goto fail;
	/*
	 * A fresh store: only what the configuration trusts, never the
	 * system CAs, which SSL_CTX_new() does not load either.
	 */
	if ((store = X509_STORE_new()) == NULL) {
		rc = -ENOMEM;
		ncg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	SSL_CTX_set_cert_store(ssl, store);
	if ((rc = load_trust(store, pem, len, err, errlen)) != 0)
		goto fail;
	/*
	 * Partial chains let the anchor be an intermediate CA or the server
	 * certificate itself, as Junos allows for trusted-cert.
	 */
	X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ssl),
	                            X509_V_FLAG_PARTIAL_CHAIN);
	SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, tls__verify_cb);
	/* Note the inverted convention: 0 means success here. */
	if (SSL_CTX_set_alpn_protos(ssl, tls_alpn_h2, sizeof(tls_alpn_h2)) ||
	    tls__resume_attach(ssl) != 0) {
		rc = -ENOMEM;
		ncg_seterr(err, errlen, "out of memory");
		goto fail;
	}
	return ctx_wrap(out, ssl, 0, err, errlen);
fail:
	SSL_CTX_free(ssl);
	ERR_clear_error();
	return rc;
}

int
tls_ctx_client_new_file(struct tls_ctx **out, const char *path, char *err,
                        size_t errlen)
{
	char *p = NULL, tmp[256];
	size_t len = 0;
	int rc;

	if ((rc = tls_file_read(path, &p, &len, err, errlen)) != 0)
		return rc;
	rc = tls_ctx_client_new(out, p, len, tmp, sizeof(tmp));
	if (rc != 0)
		ncg_seterr(err, errlen, "%s: %s", path, tmp);
	else
		ncg_seterr(err, errlen, "%s", "");
	tls_file_free(p, len);
	return rc;
}

/*
 * Refuses to prompt for a passphrase: a daemon has no terminal, and an
 * encrypted key then fails to load with a clear error instead.
 */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Installs the certificate chain in the PEM text: leaf first. */
static int
load_chain(SSL_CTX *ssl, const char *pem, size_t len, const char *path,
           char *err, size_t errlen)
{
	BIO *b;
	X509 *x;
	unsigned long e;
	char tmp[128];
	int n = 0, rc = 0;

	if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		/* The leaf is referenced, chain certificates are handed on. */
		if (n == 0 ? SSL_CTX_use_certificate(ssl, x) != 1
		           : SSL_CTX_add0_chain_cert(ssl, x) != 1) {
			e = ossl_first_error();
			X509_free(x);
			rc = ossl_is_oom(e) ? -ENOMEM : NCG_ETLS_BAD_CERT;
			ncg_seterr(err, errlen, "%s: unusable certificate: %s",
			           path, ossl_reason(e, tmp, sizeof(tmp)));
			break;
		}
		if (n == 0)
			X509_free(x);
		n++;
	}
	if (rc == 0) {
		e = ossl_first_error();
		if (e != 0 && !is_pem_eof(e)) {
			rc = pem_error(e, "certificate", tmp, sizeof(tmp));
			ncg_seterr(err, errlen, "%s: %s", path, tmp);
		} else if (n == 0) {
			ncg_seterr(err, errlen, "%s: no certificate found",
			           path);
			rc = -EINVAL;
		}
	}
	BIO_free(b);
	ERR_clear_error();
	return rc;
}

/*
 * Installs the private key.  Error texts carry only OpenSSL's reason, never
 * any of the key's bytes.
 */
static int
load_key(SSL_CTX *ssl, const char *pem, size_t len, const char *path, char *err,
         size_t errlen)
{
	BIO *b;
	EVP_PKEY *k;
	unsigned long e;
	char tmp[128];
	int rc = 0;

	if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ERR_clear_error();
	k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
	BIO_free(b);
	if (k == NULL) {
		e = ossl_first_error();
		if (ossl_is_oom(e)) {
			ncg_seterr(err, errlen, "out of memory");
			return -ENOMEM;
		}
		ncg_seterr(err, errlen,
		           "%s: no usable private key (%s; it must "
		           "be unencrypted pem)",
		           path, ossl_reason(e, tmp, sizeof(tmp)));
		return -EINVAL;
	}
	if (SSL_CTX_use_PrivateKey(ssl, k) != 1 ||
	    SSL_CTX_check_private_key(ssl) != 1) {
		e = ossl_first_error();
		rc = ossl_is_oom(e) ? -ENOMEM : NCG_ETLS_BAD_CERT;
		ncg_seterr(err, errlen,
		           "%s: private key does not match the "
		           "certificate (%s)",
		           path, ossl_reason(e, tmp, sizeof(tmp)));
	}
	EVP_PKEY_free(k);
	ERR_clear_error();
	return rc;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out,
                          unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg);
static int client_hello_cb(SSL *ssl, int *alert, void *arg);

int
tls_ctx_server_new(struct tls_ctx **out, const char *cert_file,
                   const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ssl = NULL;
	char *cp = NULL, *kp = NULL;
	size_t clen = 0, klen = 0;
	int rc;

	if ((rc = tls_file_read(cert_file, &cp, &clen, err, errlen)) != 0 ||
	    (rc = tls_file_read(key_file, &kp, &klen, err, errlen)) != 0)
		goto out;
	if ((ssl = SSL_CTX_new(TLS_server_method())) == NULL) {
		ncg_seterr(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = ctx_common(ssl, err, errlen)) != 0 ||
	    (rc = load_chain(ssl, cp, clen, cert_file, err, errlen)) != 0 ||
	    (rc = load_key(ssl, kp, klen, key_file, err, errlen)) != 0)
		goto out;
	SSL_CTX_set_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_client_hello_cb(ssl, client_hello_cb, NULL);
	SSL_CTX_set_alpn_select_cb(ssl, alpn_select_cb, NULL);
	rc = ctx_wrap(out, ssl, 1, err, errlen);
	ssl = NULL;
out:
	SSL_CTX_free(ssl);
	tls_file_free(cp, clen);
	tls_file_free(kp, klen);
	ERR_clear_error();
	return rc;
}

int
tls_ctx_client_set_cert(struct tls_ctx *ctx, const char *cert_file,
                        const char *key_file, char *err, size_t errlen)
{
	char *cp = NULL, *kp = NULL;
	size_t clen = 0, klen = 0;
	int rc;

	if (ctx->tc_server) {
		ncg_seterr(err, errlen, "not a client context");
		return -EINVAL;
	}
	if ((rc = tls_file_read(cert_file, &cp, &clen, err, errlen)) == 0 &&
	    (rc = tls_file_read(key_file, &kp, &klen, err, errlen)) == 0 &&
	    (rc = load_chain(ctx->tc_ssl, cp, clen, cert_file, err, errlen)) ==
	        0)
		rc = load_key(ctx->tc_ssl, kp, klen, key_file, err, errlen);
	tls_file_free(cp, clen);
	tls_file_free(kp, klen);
	ERR_clear_error();
	return rc;
}

int
tls_ctx_server_require_client(struct tls_ctx *ctx, const char *ca_file,
                              char *err, size_t errlen)
{
	X509_STORE *store;
	STACK_OF(X509_NAME) * names;
	char *p = NULL, tmp[256];
	size_t len = 0;
	int rc;

	if (!ctx->tc_server) {
		ncg_seterr(err, errlen, "not a server context");
		return -EINVAL;
	}
	if ((rc = tls_file_read(ca_file, &p, &len, err, errlen)) != 0)
		return rc;
	if ((store = X509_STORE_new()) == NULL) {
		tls_file_free(p, len);
		ncg_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if ((rc = load_trust(store, p, len, tmp, sizeof(tmp))) != 0) {
		X509_STORE_free(store);
		tls_file_free(p, len);
		ncg_seterr(err, errlen, "%s: %s", ca_file, tmp);
		return rc;
	}
	tls_file_free(p, len);
	SSL_CTX_set_cert_store(ctx->tc_ssl, store);
	/* Tells clients which CA we take; a courtesy, so failure is fine. */
	if ((names = SSL_load_client_CA_file(ca_file)) != NULL)
		SSL_CTX_set_client_CA_list(ctx->tc_ssl, names);
	SSL_CTX_set_verify(ctx->tc_ssl,
	                   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
	                   tls__verify_cb);
	ERR_clear_error();
	ncg_seterr(err, errlen, "%s", "");
	return 0;
}

struct tls_ctx *
tls_ctx_ref(struct tls_ctx *ctx)
{
	struct tls_resume_cache *rc;

	ctx->tc_refs++;
	if (!ctx->tc_server && (rc = tls__resume_cache(ctx->tc_ssl)) != NULL)
		rc->rc_max += TLS_RESUME_MAX;
	return ctx;
}

void
tls_ctx_free(struct tls_ctx *ctx)
{
	struct tls_resume_cache *rc;

	if (ctx == NULL)
		return;
	if (--ctx->tc_refs > 0) {
		/* Entries over the new bound go when the next one comes. */
		if (!ctx->tc_server &&
		    (rc = tls__resume_cache(ctx->tc_ssl)) != NULL)
			rc->rc_max -= TLS_RESUME_MAX;
		return;
	}
	/* Each SSL holds its own reference, so live connections go on. */
	SSL_CTX_free(ctx->tc_ssl);
	free(ctx);
}

/*
 * Is name an IP address literal?  Brackets around an IPv6 address, as in
 * URLs, are dropped into buf.
 */
static int
peer_is_ip(const char *name, char *buf, size_t len)
{
	unsigned char addr[16];
	size_t n = strlen(name);

	if (n >= 2 && name[0] == '[' && name[n - 1] == ']' && n - 2 < len) {
		memcpy(buf, name + 1, n - 2);
		buf[n - 2] = '\0';
		return inet_pton(AF_INET6, buf, addr) == 1;
	}
	return inet_pton(AF_INET, name, addr) == 1 ||
	       inet_pton(AF_INET6, name, addr) == 1;
}

/* --- The queue BIO ------------------------------------------------------ */

/*
 * OpenSSL's memory BIOs would cost a copy each way: the transport would
 * copy what it read into one, and what OpenSSL wrote into the other out
 * of it.  This BIO reads straight from the transport's read buffer (lent
 * with tls_conn_lend(), only an unread tail being kept in c_rq) and
 * appends records straight to the transport's output queue.  It never
 * blocks: an empty input is a retryable read, and a write either queues
 * everything or fails for want of memory (c_qerr), which conn_error()
 * reports as -ENOMEM.
 */
static int
qbio_read(BIO *b, char *out, size_t len, size_t *got)
{
	struct tls_conn *c = BIO_get_data(b);
	size_t n = 0, k;

	BIO_clear_retry_flags(b);
	if ((k = buf_len(&c->c_rq)) > 0) {
		n = k < len ? k : len;
		memcpy(out, buf_data(&c->c_rq), n);
		buf_consume(&c->c_rq, n);
	}
	if (n < len && (k = c->c_lentlen) > 0) {
		if (k > len - n)
			k = len - n;
		memcpy(out + n, c->c_lent, k);
		c->c_lent += k;
		c->c_lentlen -= k;
		n += k;
	}
	*got = n;
	if (n == 0) {
		/* Nothing yet: "wait for more", not the end of the stream. */
		BIO_set_retry_read(b);
		return 0;
	}
	return 1;
}

static int
qbio_write(BIO *b, const char *in, size_t len, size_t *put)
{
	struct tls_conn *c = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	*put = 0;
	if (buf_append(c->c_out, in, len) != 0) {
		c->c_qerr = -ENOMEM;
		return 0;
	}
	*put = len;
	return 1;
}

static long
qbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_conn *c = BIO_get_data(b);

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		return (long)(buf_len(&c->c_rq) + c->c_lentlen);
	default:
		/* No kTLS, no duplication, no push or pop: none applies. */
		return 0;
	}
}

static BIO_METHOD *qbio_method;

static void
qbio_method_init(void)
{
	BIO_METHOD *m;
	int type = BIO_get_new_index();

	if (type == -1 || (m = BIO_meth_new(type | BIO_TYPE_SOURCE_SINK,
	                                    "ncgrpc queue")) == NULL)
		return;
	if (!BIO_meth_set_read_ex(m, qbio_read) ||
	    !BIO_meth_set_write_ex(m, qbio_write) ||
	    !BIO_meth_set_ctrl(m, qbio_ctrl)) {
		BIO_meth_free(m);
		return;
	}
	/* Kept for the life of the process, as OpenSSL's own methods are. */
	qbio_method = m;
}

static BIO *
queue_bio_new(struct tls_conn *c)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	BIO *b;

	if (pthread_once(&once, qbio_method_init) != 0 || qbio_method == NULL ||
	    (b = BIO_new(qbio_method)) == NULL)
		return NULL;
	BIO_set_data(b, c);
	BIO_set_init(b, 1);
	return b;
}

int
tls_conn_new(struct tls_conn **out, struct tls_ctx *ctx, const char *peer_name)
{
	struct tls_conn *c;
	char ip[TLS_NAME_MAX + 1];
	BIO *bio;
	int server;

	if (ctx == NULL)
		return -EINVAL;
	server = ctx->tc_server;
	if (server != (peer_name == NULL))
		return -EINVAL;
	if (!server &&
	    (peer_name[0] == '\0' || strlen(peer_name) > TLS_NAME_MAX))
		return -EINVAL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	buf_init(&c->c_rq, 0);
	buf_init(&c->c_wq, 0);
	c->c_out = &c->c_wq;
	ERR_clear_error();
	if ((c->c_ssl = SSL_new(ctx->tc_ssl)) == NULL)
		goto nomem;
	if ((bio = queue_bio_new(c)) == NULL)
		goto nomem;
	/* One BIO both ways: SSL_set_bio() takes this one reference. */
	SSL_set_bio(c->c_ssl, bio, bio);
	SSL_set_app_data(c->c_ssl, c);
	if (server) {
		SSL_set_accept_state(c->c_ssl);
		*out = c;
		return 0;
	}
	ip[0] = '\0';
	c->c_peer_ip = peer_is_ip(peer_name, ip, sizeof(ip));
	if ((c->c_peer = strdup(
	         c->c_peer_ip && ip[0] != '\0' ? ip : peer_name)) == NULL)
		goto nomem;
	/* RFC 6066 forbids IP literals in SNI. */
	if (!c->c_peer_ip && !SSL_set_tlsext_host_name(c->c_ssl, c->c_peer))
		goto nomem;
	SSL_set_connect_state(c->c_ssl);
	*out = c;
	return 0;
nomem:
	/* Once SSL_set_bio() has run, this frees the BIO too. */
	SSL_free(c->c_ssl);
	free(c->c_peer);
	free(c);
	ERR_clear_error();
	return -ENOMEM;
}

void
tls_conn_free(struct tls_conn *c)
{
	if (c == NULL)
		return;
	SSL_free(c->c_ssl);
	buf_free(&c->c_rq);
	buf_free(&c->c_wq);
	free(c->c_peer);
	free(c->c_resume);
	free(c);
}

void
tls_conn_set_output(struct tls_conn *c, struct buf *out)
{
	c->c_out = out != NULL ? out : &c->c_wq;
}

int
tls_conn_keep(struct tls_conn *c)
{
	int rc = 0;

	if (c->c_lentlen > 0 &&
	    buf_append(&c->c_rq, c->c_lent, c->c_lentlen) != 0)
		rc = -ENOMEM;
	c->c_lent = NULL;
	c->c_lentlen = 0;
	return rc;
}

int
tls_conn_lend(struct tls_conn *c, const uint8_t *data, size_t len)
{
	int rc;

	/* What an earlier loan left comes first; it must not be lost. */
	if ((rc = tls_conn_keep(c)) != 0)
		return rc;
	c->c_lent = data;
	c->c_lentlen = len;
	return 0;
}

int
tls_conn_feed(struct tls_conn *c, const uint8_t *data, size_t len)
{
	if (tls_conn_keep(c) != 0 || buf_append(&c->c_rq, data, len) != 0)
		return -ENOMEM;
	return 0;
}

/* --- ALPN (server side) ------------------------------------------------ */

/*
 * OpenSSL calls the ALPN selection callback only when the client sends the
 * extension, so a client without ALPN is caught here, early, with the same
 * alert.
 */
static int
client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_conn *c = SSL_get_app_data(ssl);
	const unsigned char *p;
	size_t n;

	(void)arg;
	if (SSL_client_hello_get0_ext(
	        ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p,
	        &n) == 1)
		return SSL_CLIENT_HELLO_SUCCESS;
	if (c != NULL && c->c_verr == 0) {
		c->c_verr = NCG_ETLS_NO_ALPN;
		tls__conn_msg(c, "client did not offer alpn \"h2\" (it sent no "
		                 "alpn extension)");
	}
	*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

/*
 * Picks "h2" from the client's list.  The list is scanned by hand, which
 * also lets *out point into the client's const buffer without a cast.
 */
static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
               const unsigned char *in, unsigned int inlen, void *arg)
{
	struct tls_conn *c = SSL_get_app_data(ssl);
	unsigned int i, n;

	(void)arg;
	for (i = 0; i < inlen; i += 1 + n) {
		n = in[i];
		if (n > inlen - i - 1)
			break;
		if (n == tls_alpn_h2[0] &&
		    memcmp(in + i + 1, tls_alpn_h2 + 1, n) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	if (c != NULL && c->c_verr == 0) {
		c->c_verr = NCG_ETLS_NO_ALPN;
		tls__conn_msg(c, "client did not offer alpn \"h2\"");
	}
	/* Sends the no_application_protocol alert (RFC 7301). */
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* --- Connection -------------------------------------------------------- */

/*
 * A queue never gives back what it once grew to, so after a burst (a
 * 1 MiB write, say) an emptied one gives its storage back, to keep idle
 * connections small.  Below this size a busy connection keeps it.
 */
#define TLS_QUEUE_KEEP (64 * 1024)

static void
trim_queue(struct buf *q, size_t keep)
{
	if (buf_len(q) == 0 && q->b_cap > keep)
		buf_free(q);
}

/*
 * Classifies a failed SSL call.  Returns 1 when it only wants more input;
 * otherwise records the reason and returns a sticky negative code.
 */
static int
conn_error(struct tls_conn *c, int ret, const char *what)
{
	unsigned long e;
	int reason, rc;
	char tmp[128];

	if (c->c_qerr != 0) {
		/* The queue BIO could not take a record. */
		ERR_clear_error();
		tls__conn_msg(c, "%s failed: out of memory", what);
		return c->c_err = c->c_qerr;
	}
	switch (SSL_get_error(c->c_ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		ERR_clear_error();
		return 1;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		tls__conn_msg(c, "%s failed: peer closed the connection", what);
		return c->c_err = NCG_ETLS;
	default:
		break;
	}
	e = ossl_first_error();
	reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
	if (c->c_verr != 0) {
		/* A callback already explained it. */
		rc = c->c_verr;
	} else if (ossl_is_oom(e)) {
		tls__conn_msg(c, "%s failed: out of memory", what);
		rc = -ENOMEM;
	} else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
		tls__conn_msg(c, "client sent no certificate, and one is "
		                 "required");
		rc = NCG_ETLS_BAD_CERT;
	} else if (reason == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL) {
		tls__conn_msg(c, "peer does not speak alpn \"h2\" "
		                 "(no_application_protocol alert)");
		rc = NCG_ETLS_NO_ALPN;
	} else if (reason == SSL_R_HTTP_REQUEST ||
	           reason == SSL_R_HTTPS_PROXY_REQUEST) {
		tls__conn_msg(c, "%s failed: peer sent a plain http request",
		              what);
		rc = NCG_ETLS;
	} else if (reason > SSL_AD_REASON_OFFSET &&
	           reason < SSL_AD_REASON_OFFSET + 256) {
		tls__conn_msg(
		    c, "%s failed: peer sent alert '%s'", what,
		    SSL_alert_desc_string_long(reason - SSL_AD_REASON_OFFSET));
		rc = NCG_ETLS;
	} else {
		tls__conn_msg(c, "%s failed: %s", what,
		              e != 0 ? ossl_reason(e, tmp, sizeof(tmp))
		                     : "unexpected error");
		rc = NCG_ETLS;
	}
	return c->c_err = rc;
}

/* The client insists on "h2"; the server's callbacks already did. */
static int
handshake_done(struct tls_conn *c)
{
	const unsigned char *p = NULL;
	unsigned int n = 0;

	SSL_get0_alpn_selected(c->c_ssl, &p, &n);
	if (n != tls_alpn_h2[0] || memcmp(p, tls_alpn_h2 + 1, n) != 0) {
		tls__conn_msg(c, SSL_is_server(c->c_ssl)
		                     ? "client did not negotiate alpn \"h2\""
		                     : "server did not select alpn \"h2\" (it "
		                       "does not speak grpc over http/2)");
		return c->c_err = NCG_ETLS_NO_ALPN;
	}
	c->c_done = 1;
	c->c_msg[0] = '\0';
	trim_queue(&c->c_rq, TLS_QUEUE_KEEP);
	return 0;
}

int
tls_conn_handshake(struct tls_conn *c)
{
	int r;

	if (c->c_err != 0)
		return c->c_err;
	if (c->c_done)
		return 0;
	ERR_clear_error();
	r = SSL_do_handshake(c->c_ssl);
	if (r == 1)
		return handshake_done(c);
	return conn_error(c, r, "tls handshake") == 1 ? TLS_EAGAIN : c->c_err;
}

ssize_t
tls_conn_read(struct tls_conn *c, uint8_t *buf, size_t len)
{
	size_t n = 0;
	int r;

	if (c->c_err != 0)
		return c->c_err;
	if (!c->c_done) {
		r = tls_conn_handshake(c);
		if (r != 0)
			return r == TLS_EAGAIN ? -EAGAIN : r;
	}
	if (len == 0)
		return -EINVAL;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	ERR_clear_error();
	if (SSL_read_ex(c->c_ssl, buf, len, &n) == 1)
		return (ssize_t)n;
	if (SSL_get_error(c->c_ssl, 0) == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		return 0;
	}
	if (conn_error(c, 0, "tls read") == 1) {
		trim_queue(&c->c_rq, TLS_QUEUE_KEEP);
		return -EAGAIN;
	}
	return c->c_err;
}

int
tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len)
{
	size_t n;

	/* The handshake's own reasons are reported by the handshake. */
	if (c->c_err != 0)
		return c->c_err == -ENOMEM ? -ENOMEM : NCG_ETLS;
	if (!c->c_done) {
		tls__conn_msg(c, "tls write before the handshake completed");
		return NCG_ETLS;
	}
	ERR_clear_error();
	while (len > 0) {
		n = 0;
		if (SSL_write_ex(c->c_ssl, data, len, &n) != 1) {
			/* The queue BIO never blocks, so wanting is a bug. */
			if (conn_error(c, 0, "tls write") == 1) {
				tls__conn_msg(c, "tls write failed: stalled");
				c->c_err = NCG_ETLS;
			}
			return c->c_err == -ENOMEM ? -ENOMEM : NCG_ETLS;
		}
		data += n;
		len -= n;
	}
	return 0;
}

int
tls_conn_shutdown(struct tls_conn *c)
{
	int r;

	if (c->c_err != 0 || !c->c_done) {
		if (c->c_err == 0)
			tls__conn_msg(c, "tls shutdown before the handshake "
			                 "completed");
		return NCG_ETLS;
	}
	ERR_clear_error();
	r = SSL_shutdown(c->c_ssl);
	if (r >= 0)
		return 0;
	/* Called again, it waits for the peer's close_notify: ours is out. */
	if (SSL_get_error(c->c_ssl, r) == SSL_ERROR_WANT_READ) {
		ERR_clear_error();
		return 0;
	}
	conn_error(c, r, "tls shutdown");
	return NCG_ETLS;
}

size_t
tls_conn_pending(const struct tls_conn *c)
{
	return buf_len(&c->c_wq);
}

size_t
tls_conn_take(struct tls_conn *c, uint8_t *buf, size_t len)
{
	size_t n = buf_len(&c->c_wq);

	if (n > len)
		n = len;
	if (n == 0)
		return 0;
	memcpy(buf, buf_data(&c->c_wq), n);
	buf_consume(&c->c_wq, n);
	trim_queue(&c->c_wq, TLS_QUEUE_KEEP);
	return n;
}

/*
 * Below TLS_QUEUE_KEEP the queues keep their storage while traffic flows,
 * so a busy connection does not allocate per record.  But a connection
 * that goes quiet would keep it for hours: the tail of a record that came
 * in two reads, or the room the handshake flight needed.
 */
void
tls_conn_trim(struct tls_conn *c)
{
	trim_queue(&c->c_rq, 0);
	trim_queue(&c->c_wq, 0);
}

const char *
tls_conn_errmsg(const struct tls_conn *c)
{
	return c->c_msg;
}

int
tls_conn_peer_name(const struct tls_conn *c, char *buf, size_t len)
{
	X509 *cert;
	X509_NAME *subj;
	const ASN1_STRING *d;
	int i;

	if (len == 0)
		return -EINVAL;
	buf[0] = '\0';
	if (!c->c_done || SSL_get_verify_result(c->c_ssl) != X509_V_OK ||
	    (cert = SSL_get0_peer_certificate(c->c_ssl)) == NULL ||
	    (subj = X509_get_subject_name(cert)) == NULL ||
	    (i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1)) < 0)
		return -ENOENT;
	d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
	if (d == NULL || ASN1_STRING_length(d) <= 0)
		return -ENOENT;
	tls__clean(buf, len, ASN1_STRING_get0_data(d),
	           (size_t)ASN1_STRING_length(d));
	return 0;
}

const char *
tls_conn_version(const struct tls_conn *c)
{
	return SSL_get_version(c->c_ssl);
}
