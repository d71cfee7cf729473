/*
 * Self-signed server certificates for ncgrpcd's first run
 * (docs/ncgrpcd.conf.md), and the PEM text as a Junos quoted string for the
 * device stanza.
 *
 * The certificate is meant to be its own trust anchor: devices list it as
 * "trusted-cert" and verify the server against it (with OpenSSL's
 * X509_V_FLAG_PARTIAL_CHAIN, as src/common/tls.c does, and also without,
 * as Python's ssl module and gRPC clients do by default).  It carries:
 *
 *   version 3, a random positive 128-bit serial, ecdsa-with-SHA256 over an
 *   EC P-256 key; subject and issuer CN = the first name; notBefore one
 *   hour ago (tolerating slow device clocks), notAfter in `days` days;
 *   basicConstraints critical CA:FALSE; keyUsage critical
 *   digitalSignature; extendedKeyUsage serverAuth; subjectKeyIdentifier;
 *   subjectAltName with an IP entry for each IPv4/IPv6 literal among the
 *   names and a DNS entry for each other name.
 *
 * keyUsage leaves out keyCertSign: RFC 5280 (4.2.1.3) allows it only with
 * CA:TRUE, and the certificate verifies as a self-signed trust anchor with
 * OpenSSL 3 and Python's ssl without it (tests/unit/certgen_test.c checks
 * both variants against src/common/tls.c).
 *
 * Nothing here logs.  Messages go to err (errlen bytes, always
 * NUL-terminated when errlen > 0; err may be NULL).
 */
#ifndef NCGRPC_CERTGEN_H
#define NCGRPC_CERTGEN_H

#include <stddef.h>

#define CERTGEN_MAX_DAYS 36500        /* validity limit, 100 years */
#define CERTGEN_MAX_CN   64           /* RFC 5280 ub-common-name */
#define CERTGEN_MAX_PEM  (256 * 1024) /* bytes certgen_pem_escaped() reads */

/*
 * Generates an EC P-256 key and a self-signed certificate for names[0..
 * nnames) (nnames >= 1; names[0] becomes the CN, so it must be at most
 * CERTGEN_MAX_CN bytes; every name is non-empty printable ASCII without
 * spaces), valid for days (1..CERTGEN_MAX_DAYS) days.
 *
 * The key goes to key_path (PEM PKCS#8, mode 0600) and the certificate to
 * cert_path (PEM, mode 0644).  Each is written to a temporary file in the
 * same directory, flushed to disk, and then moved into place: the key with
 * link(), so an existing key is never overwritten, the certificate with
 * rename(), replacing any old one.  If the certificate cannot be written
 * the new key is removed again.
 *
 * Returns 0; -EINVAL (bad names or days); -EEXIST (key_path exists; nothing
 * is written); -ENOMEM; NCG_ETLS (OpenSSL failed to make the key or the
 * certificate); or the negated errno of a failed file operation (-EACCES,
 * -ENOENT for a missing directory, ...).
 */
int certgen_selfsigned(const char *const *names, size_t nnames, unsigned days,
                       const char *cert_path, const char *key_path, char *err,
                       size_t errlen);

/*
 * A cluster CA (docs/cluster.md): an EC P-256 key and a self-signed CA
 * certificate with CN name, basicConstraints critical CA:TRUE pathlen:0,
 * keyUsage critical keyCertSign and cRLSign, no SAN.  Files, modes and
 * errors as for certgen_selfsigned() with the one name.
 */
int certgen_ca(const char *name, unsigned days, const char *cert_path,
               const char *key_path, char *err, size_t errlen);

/*
 * A cluster node certificate signed by the CA in ca_cert/ca_key (PEM files,
 * the key unencrypted): as certgen_selfsigned() makes, except that the
 * issuer is the CA, extendedKeyUsage holds serverAuth and clientAuth (a
 * node is both), and an authorityKeyIdentifier names the CA's key.  Errors
 * as for certgen_selfsigned(), plus those of reading the CA files and
 * -EINVAL when they hold no certificate or key, the key does not match, or
 * the certificate is not a CA.
 */
int certgen_signed(const char *const *names, size_t nnames, unsigned days,
                   const char *ca_cert, const char *ca_key,
                   const char *cert_path, const char *key_path, char *err,
                   size_t errlen);

/*
 * Reads the PEM certificate file at cert_path (at most CERTGEN_MAX_PEM
 * bytes, holding a "-----BEGIN CERTIFICATE-----" block and no private key)
 * and returns its text as the body of a Junos quoted string: newline,
 * carriage return and tab become \n, \r and \t, and '"' and '\' get a
 * backslash.  Unescaping gives back the file text exactly (including its
 * final newline, which appears as a trailing \n).  So the caller can print
 *
 *   trusted-cert "<*out>";
 *
 * On success *out is a NUL-terminated string the caller frees.  Returns 0,
 * -EINVAL (not a certificate, or a private key in the file), -EFBIG,
 * -ENOMEM, or the negated errno of open() or read().
 */
int certgen_pem_escaped(const char *cert_path, char **out);

/*
 * Whether the first certificate in cert_path (the one ncgrpcd presents)
 * names name by the rules that devices check it with (tls_cert_names()):
 * 1 or 0, else -EINVAL (no certificate), -ENOMEM or the negated errno of
 * open() or read().
 */
int certgen_names_host(const char *cert_path, const char *name);

/*
 * Default names for a certificate when none are configured: this host's
 * name (from gethostname(), when it is a plausible DNS name other than
 * "localhost"), "localhost", "127.0.0.1" and "::1", in that order.  On
 * success *names is an array of *n strings, released with
 * certgen_names_free().  Returns 0 or -ENOMEM.
 */
int certgen_names_from_host(char ***names, size_t *n);

/* Frees what certgen_names_from_host() returned; NULL is fine. */
void certgen_names_free(char **names, size_t n);

#endif
