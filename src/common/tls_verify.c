/*
 * TLS peer verification (tls.h, docs/internals/tls.md): runs inside
 * OpenSSL's chain verification through tls__verify_cb(), so that a failed
 * check aborts the handshake with the right alert while the precise reason
 * is kept in the connection.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "tls_int.h"

/* RFC 2253 text of a certificate name, e.g. "CN=Foo CA,O=Example". */
static void
name_text(const X509_NAME *name, char *buf, size_t len)
{
	BIO *b;
	char *p;
	long n;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (name == NULL || (b = BIO_new(BIO_s_mem())) == NULL)
		return;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_get_mem_data(b, &p)) > 0)
		tls__clean(buf, len, (const unsigned char *)p, (size_t)n);
	BIO_free(b);
}

static void
time_text(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) {
		snprintf(buf, len, "unknown");
		return;
	}
	snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d GMT",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	         tm.tm_min, tm.tm_sec);
}

/* --- Verification ------------------------------------------------------ */

/* How many names a mismatch message quotes; the rest are counted. */
#define TLS_NAMES_SHOWN 4

struct names {
	char n_text[TLS_NAMES_SHOWN][96];
	int n_count; /* all names seen, shown or not */
};

static void
names_add(struct names *nl, const unsigned char *s, size_t slen,
          const char *tag)
{
	char one[80];

	if (nl->n_count < TLS_NAMES_SHOWN) {
		tls__clean(one, sizeof(one), s, slen);
		snprintf(nl->n_text[nl->n_count], sizeof(nl->n_text[0]),
		         "'%s'%s", one, tag);
	}
	nl->n_count++;
}

/*
 * Lists the names a certificate offers, for the mismatch message: its SAN
 * DNS and IP entries, or its CN when it has no SAN.  A DNS entry holding an
 * address is tagged, since it never matches an address.
 */
static void
cert_names(X509 *cert, char *buf, size_t len)
{
	struct names nl;
	GENERAL_NAMES *gens;
	const GENERAL_NAME *g;
	const X509_NAME *subj;
	const ASN1_STRING *s;
	char ip[INET6_ADDRSTRLEN], tmp[96];
	unsigned char bin[16];
	size_t used;
	const char *sep;
	int i, shown, idx, looks_ip;

	memset(&nl, 0, sizeof(nl));
	gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS) {
			s = g->d.dNSName;
			tls__clean(tmp, sizeof(tmp), ASN1_STRING_get0_data(s),
			           (size_t)ASN1_STRING_length(s));
			looks_ip = inet_pton(AF_INET, tmp, bin) == 1 ||
			           inet_pton(AF_INET6, tmp, bin) == 1;
			names_add(&nl, ASN1_STRING_get0_data(s),
			          (size_t)ASN1_STRING_length(s),
			          looks_ip ? " (dns)" : "");
		} else if (g->type == GEN_IPADD) {
			s = g->d.iPAddress;
			if (ASN1_STRING_length(s) != 4 &&
			    ASN1_STRING_length(s) != 16)
				continue;
			inet_ntop(ASN1_STRING_length(s) == 4 ? AF_INET
			                                     : AF_INET6,
			          ASN1_STRING_get0_data(s), ip, sizeof(ip));
			names_add(&nl, (unsigned char *)ip, strlen(ip), "");
		}
	}
	GENERAL_NAMES_free(gens);
	if (X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) < 0) {
		subj = X509_get_subject_name(cert);
		idx = -1;
		while ((idx = X509_NAME_get_index_by_NID(subj, NID_commonName,
		                                         idx)) >= 0) {
			s = X509_NAME_ENTRY_get_data(
			    X509_NAME_get_entry(subj, idx));
			names_add(&nl, ASN1_STRING_get0_data(s),
			          (size_t)ASN1_STRING_length(s), " (cn)");
		}
	}
	if (nl.n_count == 0) {
		snprintf(buf, len, "no names");
		return;
	}
	/* "'a'", "'a' and 'b'", "'a', ..., 'd' and 9 more" */
	shown = nl.n_count < TLS_NAMES_SHOWN ? nl.n_count : TLS_NAMES_SHOWN;
	buf[0] = '\0';
	for (i = 0; i < shown; i++) {
		if (i == 0)
			sep = "";
		else if (i == shown - 1 && shown == nl.n_count)
			sep = " and ";
		else
			sep = ", ";
		used = strlen(buf);
		snprintf(buf + used, len - used, "%s%s", sep, nl.n_text[i]);
	}
	if (nl.n_count > shown) {
		used = strlen(buf);
		snprintf(buf + used, len - used, " and %d more",
		         nl.n_count - shown);
	}
}

/* Does the subject CN equal name?  Only used to explain a mismatch. */
static int
cn_is(X509 *cert, const char *name)
{
	return X509_check_host(cert, name, 0,
	                       X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT |
	                           X509_CHECK_FLAG_NO_WILDCARDS,
	                       NULL) == 1;
}

/*
 * The name rules of docs/protocol.md (server certificate check).
 * X509_check_host() falls back to the CN whenever there is no SAN DNS entry,
 * but we allow the CN only when the certificate has no SAN extension at all, so
 * with one present the subject is never consulted.
 */
int
tls_cert_names(X509 *cert, const char *name, int is_ip)
{
	unsigned int flags = X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

	if (is_ip)
		return X509_check_ip_asc(cert, name, 0) == 1;
	if (X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) >= 0)
		flags |= X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;
	return X509_check_host(cert, name, 0, flags, NULL) == 1;
}

static int
check_name(struct tls_conn *c, X509 *cert)
{
	char names[512];
	int has_san;
	const char *why = "";

	if (tls_cert_names(cert, c->c_peer, c->c_peer_ip))
		return 0;
	has_san = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) >= 0;
	cert_names(cert, names, sizeof(names));
	if (c->c_peer_ip && !has_san)
		why = " (an ip address must be a subjectaltname ip entry; "
		      "the cn is not used)";
	else if (!c->c_peer_ip && has_san && cn_is(cert, c->c_peer))
		why = " (the cn is not used when the certificate has a "
		      "subjectaltname)";
	tls__conn_msg(c, "certificate names %s, not '%s'%s", names, c->c_peer,
	              why);
	return NCG_ETLS_NAME;
}

/* Maps a chain verification error to our code and a message. */
static int
verify_error(struct tls_conn *c, X509_STORE_CTX *xs, int verr)
{
	X509 *cert = X509_STORE_CTX_get_current_cert(xs);
	int depth = X509_STORE_CTX_get_error_depth(xs);
	char subj[160], iss[160], when[64], which[200];

	subj[0] = iss[0] = '\0';
	if (cert != NULL) {
		name_text(X509_get_subject_name(cert), subj, sizeof(subj));
		name_text(X509_get_issuer_name(cert), iss, sizeof(iss));
	}
	if (depth > 0)
		snprintf(which, sizeof(which), "certificate '%s' in the chain",
		         subj);
	else
		snprintf(which, sizeof(which), "certificate");
	switch (verr) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		tls__conn_msg(c, "unable to verify: issuer '%s' is not trusted",
		              iss);
		return NCG_ETLS_UNKNOWN_CA;
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		tls__conn_msg(c,
		              "unable to verify: self-signed certificate '%s' "
		              "is not trusted",
		              subj);
		return NCG_ETLS_UNKNOWN_CA;
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		tls__conn_msg(c,
		              "unable to verify: root certificate '%s' in the "
		              "chain is not trusted",
		              subj);
		return NCG_ETLS_UNKNOWN_CA;
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
	case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
		tls__conn_msg(c,
		              "unable to verify: certificate '%s' is not "
		              "signed by the trusted '%s'",
		              subj, iss);
		return NCG_ETLS_UNKNOWN_CA;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		time_text(cert != NULL ? X509_get0_notAfter(cert) : NULL, when,
		          sizeof(when));
		tls__conn_msg(c, "%s has expired (notAfter %s)", which, when);
		return NCG_ETLS_EXPIRED;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		time_text(cert != NULL ? X509_get0_notBefore(cert) : NULL, when,
		          sizeof(when));
		tls__conn_msg(c, "%s is not yet valid (notBefore %s)", which,
		              when);
		return NCG_ETLS_NOT_YET;
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
	case X509_V_ERR_INVALID_CA:
	case X509_V_ERR_INVALID_PURPOSE:
	case X509_V_ERR_INVALID_EXTENSION:
	case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
	case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
	case X509_V_ERR_EE_KEY_TOO_SMALL:
	case X509_V_ERR_CA_KEY_TOO_SMALL:
	case X509_V_ERR_CA_MD_TOO_WEAK:
		/* The certificate is readable, but unfit for this use. */
		tls__conn_msg(c, "certificate '%s'%s is unusable: %s", subj,
		              depth > 0 ? " in the chain" : "",
		              X509_verify_cert_error_string(verr));
		return NCG_ETLS_BAD_CERT;
	default:
		tls__conn_msg(c, "certificate '%s'%s failed verification: %s",
		              subj, depth > 0 ? " in the chain" : "",
		              X509_verify_cert_error_string(verr));
		return NCG_ETLS;
	}
}

/*
 * Runs for every certificate of the chain.  The first failure is kept: it is
 * the one that aborted the handshake, and later calls would only blur it.
 */
int
tls__verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl;
	struct tls_conn *c;
	X509 *cert;
	int rc;

	ssl = X509_STORE_CTX_get_ex_data(xs,
	                                 SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl == NULL || (c = SSL_get_app_data(ssl)) == NULL)
		return 0;
	if (!ok) {
		if (c->c_verr == 0)
			c->c_verr =
			    verify_error(c, xs, X509_STORE_CTX_get_error(xs));
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(xs) != 0 || c->c_peer == NULL)
		return 1;
	cert = X509_STORE_CTX_get_current_cert(xs);
	if (cert == NULL || (rc = check_name(c, cert)) != 0) {
		if (cert == NULL)
			tls__conn_msg(c, "no server certificate to verify");
		if (c->c_verr == 0)
			c->c_verr = NCG_ETLS_NAME;
		X509_STORE_CTX_set_error(
		    xs, c->c_peer_ip ? X509_V_ERR_IP_ADDRESS_MISMATCH
		                     : X509_V_ERR_HOSTNAME_MISMATCH);
		return 0;
	}
	return 1;
}
