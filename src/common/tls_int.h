/*
 * Internals of the TLS engine, shared by its three parts:
 *  - tls.c: contexts, connections and the engine (handshake, read, write);
 *  - tls_verify.c: peer verification inside OpenSSL's chain check;
 *  - tls_resume.c: session resumption (tickets on both sides).
 * Nothing outside src/common/tls*.c includes this file; the contract is
 * tls.h.
 */
#ifndef NCGRPC_TLS_INT_H
#define NCGRPC_TLS_INT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "buf.h"
#include "tls.h"

/* PEM files larger than this are surely not certificates or keys. */
#define TLS_FILE_MAX (1024 * 1024)
/* Longest peer name accepted: a DNS name is at most 253 characters. */
#define TLS_NAME_MAX 255
#define TLS_MSG_MAX  512

struct tls_ctx {
	SSL_CTX *tc_ssl;
	int tc_server;
	unsigned tc_refs; /* tls_ctx_ref() adds one, tls_ctx_free() takes it */
};

/*
 * A client context's resumption cache: the newest session ticket under
 * each key (tls_conn_resume(): "host:port", or a tag of the connection's
 * owner before it), at most TLS_RESUME_MAX per reference to the context,
 * the least recently used one making room.  It hangs off the SSL_CTX as
 * ex_data, so it lives as long as the last connection that may add to it.
 */
#define TLS_RESUME_MAX 32

struct tls_resume {
	char *rs_key;
	SSL_SESSION *rs_sess;
	uint64_t rs_used;
};

struct tls_resume_cache {
	struct tls_resume *rc_ent; /* rc_n of them, room for rc_cap */
	size_t rc_n, rc_cap;
	size_t rc_max; /* TLS_RESUME_MAX times the context's references */
	uint64_t rc_clock;
};

/* tls_resume.c: the cache of a client context, or NULL. */
struct tls_resume_cache *tls__resume_cache(SSL_CTX *ssl);

/*
 * Ciphertext moves through one BIO of our own (tls.c, "The queue BIO")
 * instead of OpenSSL's memory BIOs, which cost a copy each way: OpenSSL
 * reads records from c_rq and then from bytes the transport lent
 * (tls_conn_lend()), and writes them to *c_out, the transport's own output
 * queue when it gave one (tls_conn_set_output()).
 */
struct tls_conn {
	SSL *c_ssl;
	char *c_resume;        /* client: resumption cache key, NULL if none */
	struct buf c_rq;       /* ciphertext kept for OpenSSL to read */
	const uint8_t *c_lent; /* ciphertext lent by the caller, unread */
	size_t c_lentlen;
	struct buf c_wq;   /* ciphertext for the peer, if no c_out given */
	struct buf *c_out; /* where records go: &c_wq or the caller's */
	int c_qerr;        /* a record could not be queued: -ENOMEM */
	char *c_peer;      /* name to verify (client only) */
	int c_peer_ip;     /* c_peer is an IP address literal */
	int c_done;        /* handshake completed */
	int c_err;         /* sticky fatal error, 0 if none */
	int c_verr; /* reason recorded by a callback during the handshake */
	char c_msg[TLS_MSG_MAX];
};

/* tls.c */
void tls__conn_msg(struct tls_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void tls__clean(char *dst, size_t dstlen, const unsigned char *src, size_t len);

/* tls_verify.c: the X509 verify callback of every context that verifies. */
int tls__verify_cb(int ok, X509_STORE_CTX *xs);

/* tls_resume.c: gives a client context its resumption cache. */
int tls__resume_attach(SSL_CTX *ssl);

#endif
