/*
 * Error codes shared by every ncgrpc module.
 *
 * Functions return 0 on success or a negative code: either a negated errno
 * value (-ENOMEM, -EINVAL, -ETIMEDOUT, ...) or one of the NCG_E* codes below,
 * which name failures that errno has no word for.  ncg_strerror() turns any
 * of them into a short lowercase phrase.
 */
#ifndef NCGRPC_ERR_H
#define NCGRPC_ERR_H

#include <stddef.h>

enum ncg_err {
	NCG_EBASE = -20000,
	NCG_ETLS,            /* TLS failure not covered below */
	NCG_ETLS_UNKNOWN_CA, /* peer does not chain to a trusted certificate */
	NCG_ETLS_NAME,       /* certificate does not match the peer's name */
	NCG_ETLS_EXPIRED,    /* certificate (or one in its chain) expired */
	NCG_ETLS_NOT_YET,    /* certificate not valid yet */
	NCG_ETLS_NO_ALPN,    /* peer did not agree on ALPN "h2" */
	NCG_ETLS_BAD_CERT, /* certificate could not be parsed or is unusable */
	NCG_ETLS_HANDSHAKE_TIMEOUT,
	NCG_EH2,           /* HTTP/2 protocol error */
	NCG_EH2_GOAWAY,    /* peer sent GOAWAY */
	NCG_EPING_TIMEOUT, /* keepalive PING not answered in time */
	NCG_ECLOSED,       /* the connection was closed */
	NCG_ECANCELLED,    /* the operation was cancelled, e.g. at shutdown */
	NCG_ELAST
};

/*
 * Returns a static string describing code, which may be any value returned
 * by an ncgrpc function.  Never returns NULL.
 */
const char *ncg_strerror(int code);

/*
 * Formats a message into err[0..errlen), the error buffer that parsers and
 * constructors take from their callers.  Does nothing when err is NULL or
 * errlen is 0.
 */
void ncg_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
