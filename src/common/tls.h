/*
 * TLS engine: OpenSSL 3 over queues, with no I/O of its own.
 *
 * The transport hands over ciphertext read from the socket with
 * tls_conn_lend() (or tls_conn_feed(), which copies), drives the handshake
 * and reads plaintext with tls_conn_handshake() and tls_conn_read(), and
 * encrypts with tls_conn_write().  Records to send go straight to the
 * transport's output queue when it gave one with tls_conn_set_output();
 * otherwise, after every call that may produce output, the caller checks
 * tls_conn_pending() and sends what tls_conn_take() hands back.
 *
 * Verification (client side, docs/protocol.md): the peer must chain to one
 * of the trusted certificates given to tls_ctx_client_new() (a self-signed
 * server certificate, or a CA chain).  When the peer name is an IP address it
 * must match a SubjectAltName IP entry.  When it is a hostname it must match
 * a SAN DNS entry (wildcards as in RFC 6125), or the subject CN when the
 * certificate has no SAN at all.  When the certificate has SAN IP entries
 * the CN is never used.  ALPN "h2" is required on both sides.
 */
#ifndef NCGRPC_TLS_H
#define NCGRPC_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TLS_EAGAIN 1 /* positive: not an error, more input is needed */

struct buf;
struct tls_ctx;
struct tls_conn;
struct x509_st; /* OpenSSL's X509 */

/*
 * Whether cert names name by the rules of the client's check
 * (docs/protocol.md): an IP address (is_ip) only as a SubjectAltName IP
 * entry; a DNS name as a SubjectAltName DNS entry, or as the CN when the
 * certificate has no SubjectAltName at all; no partial wildcards.
 */
int tls_cert_names(struct x509_st *cert, const char *name, int is_ip);

/*
 * Creates a client context trusting the PEM certificates in pem[0..len)
 * (one or more; the text need not be NUL-terminated).  TLS 1.2 minimum,
 * ALPN "h2".  On failure a description is written to err (errlen bytes,
 * always NUL-terminated) and -EINVAL (no certificate in the PEM, or bad
 * PEM), NCG_ETLS_BAD_CERT or -ENOMEM is returned.  *out is set only on
 * success.
 */
int tls_ctx_client_new(struct tls_ctx **out, const char *pem, size_t len,
                       char *err, size_t errlen);

/*
 * Another reference to ctx, which tls_ctx_free() then frees at the last
 * one: clients that trust the same certificates can share one context
 * (about 20 KiB each).  Each reference to a client context makes room for
 * TLS_RESUME_MAX more tickets in its resumption cache; sharers keep their
 * tickets apart with keys of their own (tls_conn_resume(),
 * xport_opts.xo_resume_tag).  Contexts are not thread-safe: use them from
 * one loop.
 */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);

/*
 * Reads the PEM file at path (at most 1 MiB) into *out (NUL-terminated;
 * *outlen bytes before the NUL), to free with tls_file_free(), which
 * cleanses it (it may hold a key).  Returns 0 or -errno, with err saying
 * which step failed on which path.
 */
int tls_file_read(const char *path, char **out, size_t *outlen, char *err,
                  size_t errlen);
void tls_file_free(char *p, size_t len);

/* Same as tls_ctx_client_new(), reading the PEM from path. */
int tls_ctx_client_new_file(struct tls_ctx **out, const char *path, char *err,
                            size_t errlen);

/*
 * Gives a client context a certificate (chain, leaf first) and its private
 * key, both PEM files, to present when the server asks (mutual TLS, as etcd
 * may require).  Errors as for tls_ctx_server_new(); -EINVAL on a server
 * context.  On error ctx is left as it may have been partly changed, and
 * should be freed.
 */
int tls_ctx_client_set_cert(struct tls_ctx *ctx, const char *cert_file,
                            const char *key_file, char *err, size_t errlen);

/*
 * Creates a server context from a PEM certificate (chain) file and a PEM
 * private key file, which must match.  TLS 1.2 minimum, ALPN "h2" required
 * of clients.  Errors as for tls_ctx_client_new(), plus -ENOENT/-EACCES etc.
 * when a file cannot be read.
 */
int tls_ctx_server_new(struct tls_ctx **out, const char *cert_file,
                       const char *key_file, char *err, size_t errlen);

/*
 * Mutual TLS, server side: from now on a server context asks every client
 * for a certificate, refuses the handshake when none comes, and verifies
 * the one that comes against the CA certificates in the PEM file ca_file
 * only (a full chain to one of them; no partial chains, no system CAs).
 * The certificate must be fit for client authentication (an
 * extendedKeyUsage, when present, must hold clientAuth) and valid now.
 * tls_conn_peer_name() then gives the verified name.  Call it before the
 * first tls_conn_new() on ctx.  Returns 0, -EINVAL (a client context, or no
 * certificate in the file), -ENOMEM, or the errors of reading the file;
 * err explains, as for tls_ctx_client_new().
 */
int tls_ctx_server_require_client(struct tls_ctx *ctx, const char *ca_file,
                                  char *err, size_t errlen);

/* Drops the caller's reference; connections keep the context alive. */
void tls_ctx_free(struct tls_ctx *ctx);

/*
 * Creates a connection.  For a client context, peer_name is the host name or
 * IP address text that was dialled: it is verified against the certificate,
 * and sent as SNI when it is a hostname.  For a server context peer_name
 * must be NULL.  Returns 0, -EINVAL or -ENOMEM; *out is set only on success.
 */
int tls_conn_new(struct tls_conn **out, struct tls_ctx *ctx,
                 const char *peer_name);
void tls_conn_free(struct tls_conn *c);

/*
 * Makes every record the engine produces from now on (handshake flights,
 * alerts, application data, close_notify) go to the end of out, which
 * must outlive c (NULL: back to the engine's own queue, drained with
 * tls_conn_take()).  Call it before the first call that may produce a
 * record.  out must have no size limit below what the peer can make the
 * engine write; an append that fails is a -ENOMEM of the call that made
 * the record.  tls_conn_pending() is then always 0.
 */
void tls_conn_set_output(struct tls_conn *c, struct buf *out);

/* Queues len bytes of ciphertext received from the peer.  0 or -ENOMEM. */
int tls_conn_feed(struct tls_conn *c, const uint8_t *data, size_t len);

/*
 * Lends len bytes of ciphertext received from the peer, without a copy:
 * the engine reads its records straight from data until tls_conn_keep(),
 * which the caller must call before data changes or goes away.  What a
 * loan still holds then is copied (usually the start of a record cut by
 * the end of a read).  An earlier loan not yet kept is kept first.
 * Returns 0, or -ENOMEM when keeping an earlier loan failed.
 */
int tls_conn_lend(struct tls_conn *c, const uint8_t *data, size_t len);

/*
 * Ends a loan: copies what the engine has not read of it into its own
 * queue.  Returns 0, or -ENOMEM (those bytes are lost: close the
 * connection).  Without a loan it does nothing.
 */
int tls_conn_keep(struct tls_conn *c);

/*
 * Advances the handshake.  Returns 0 when it is complete (and on every later
 * call), TLS_EAGAIN when more input is needed, or a negative code:
 * NCG_ETLS_UNKNOWN_CA, NCG_ETLS_NAME, NCG_ETLS_EXPIRED, NCG_ETLS_NOT_YET,
 * NCG_ETLS_NO_ALPN, NCG_ETLS_BAD_CERT, NCG_ETLS (anything else, such as a
 * protocol version mismatch or a garbage peer) or -ENOMEM.  After an error,
 * tls_conn_errmsg() explains it, and tls_conn_pending() may hold an alert
 * worth sending before closing.
 */
int tls_conn_handshake(struct tls_conn *c);

/*
 * Reads up to len bytes of plaintext.  Returns the count (> 0), 0 when the
 * peer sent close_notify, -EAGAIN when no complete record is buffered, or a
 * negative code as for tls_conn_handshake().
 */
ssize_t tls_conn_read(struct tls_conn *c, uint8_t *buf, size_t len);

/*
 * Encrypts all len bytes of plaintext into the outgoing queue (only after
 * the handshake).  Returns 0, -ENOMEM, or NCG_ETLS.
 */
int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len);

/* Queues a close_notify alert.  Returns 0 or NCG_ETLS. */
int tls_conn_shutdown(struct tls_conn *c);

/* Bytes of ciphertext waiting to be sent. */
size_t tls_conn_pending(const struct tls_conn *c);

/* Moves up to len bytes of pending ciphertext into buf; returns the count. */
size_t tls_conn_take(struct tls_conn *c, uint8_t *buf, size_t len);

/*
 * Gives back the storage of whichever of the engine's queues is empty.
 * For when the connection goes quiet; it changes nothing else, and cannot
 * fail.
 */
void tls_conn_trim(struct tls_conn *c);

/*
 * The reason for the last error, e.g. "certificate has expired (notAfter
 * 2020-01-01 00:00:00 GMT)" or "certificate names 'a.example' and
 * '10.0.0.1', not '127.0.0.1'".  Empty when there was no error.  Valid until
 * the next call on c.
 */
const char *tls_conn_errmsg(const struct tls_conn *c);

/*
 * After a completed handshake whose peer certificate was verified (a
 * server's, or a client's under tls_ctx_server_require_client()): the
 * subject CN of that certificate, copied into buf (len bytes, always
 * NUL-terminated; anything but printable ASCII becomes '?').  Returns 0,
 * -ENOENT when there is no verified certificate or it has no CN, or
 * -EINVAL when len is 0.
 */
int tls_conn_peer_name(const struct tls_conn *c, char *buf, size_t len);

/* Negotiated protocol version text, e.g. "TLSv1.3", after the handshake. */
const char *tls_conn_version(const struct tls_conn *c);

/*
 * Session resumption (TLS 1.3 tickets), docs/internals/tls.md.
 *
 * A server given a ticket key sends no ticket at the handshake: it issues
 * one when it chooses, with tls_conn_issue_ticket(), carrying appdata that
 * only it can read back when the client resumes with that ticket.  The key
 * is 80 bytes (name, HMAC key, AES key) and tickets are accepted for
 * lifetime seconds.  Returns 0, -EINVAL or NCG_ETLS.
 */
#define TLS_TICKET_KEY_LEN 80
int tls_ctx_set_ticket_key(struct tls_ctx *ctx, const uint8_t *key, size_t len,
                           unsigned lifetime);

/*
 * Server, after the handshake: queues a new ticket holding appdata (copied)
 * for the client; the caller then sends tls_conn_pending().  Returns 0,
 * -ENOTSUP below TLS 1.3, -EINVAL without a ticket key, or -ENOMEM.
 */
int tls_conn_issue_ticket(struct tls_conn *c, const uint8_t *appdata,
                          size_t len);

/* The handshake resumed an earlier session instead of a full one. */
int tls_conn_resumed(const struct tls_conn *c);

/*
 * Server: the appdata of the ticket the client resumed with, valid until
 * the next tls_conn_issue_ticket() on c.  0, or -ENOENT when the session is
 * not resumed or its ticket holds none.
 */
int tls_conn_ticket_appdata(const struct tls_conn *c, const uint8_t **data,
                            size_t *len);

/*
 * Client, before the handshake: names the server (e.g. "host:port") whose
 * tickets this connection keeps in its context, and offers the newest one
 * kept for it.  Returns 1 when a ticket is offered, 0 when there is none,
 * -EINVAL or -ENOMEM.  Tickets live in the context: a new context (a
 * reload) starts with none.
 */
int tls_conn_resume(struct tls_conn *c, const char *key);

#endif
