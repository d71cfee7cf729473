#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

const char *
ncg_strerror(int code)
{
	static const char *const names[] = {
	    [NCG_ETLS - NCG_EBASE] = "tls error",
	    [NCG_ETLS_UNKNOWN_CA - NCG_EBASE] =
	        "certificate not signed by a trusted certificate "
	        "(unknown ca)",
	    [NCG_ETLS_NAME - NCG_EBASE] =
	        "certificate does not match the server name "
	        "(name mismatch)",
	    [NCG_ETLS_EXPIRED - NCG_EBASE] = "certificate has expired",
	    [NCG_ETLS_NOT_YET - NCG_EBASE] = "certificate is not yet valid",
	    [NCG_ETLS_NO_ALPN - NCG_EBASE] =
	        "peer did not negotiate alpn \"h2\"",
	    [NCG_ETLS_BAD_CERT - NCG_EBASE] = "bad certificate",
	    [NCG_ETLS_HANDSHAKE_TIMEOUT - NCG_EBASE] =
	        "tls handshake timed out",
	    [NCG_EH2 - NCG_EBASE] = "http/2 protocol error",
	    [NCG_EH2_GOAWAY - NCG_EBASE] = "peer sent goaway",
	    [NCG_EPING_TIMEOUT - NCG_EBASE] =
	        "keepalive ping timed out (peer dead)",
	    [NCG_ECLOSED - NCG_EBASE] = "connection closed",
	    [NCG_ECANCELLED - NCG_EBASE] = "cancelled",
	};

	if (code == 0)
		return "success";
	if (code > NCG_EBASE && code < NCG_ELAST)
		return names[code - NCG_EBASE];
	if (code < 0 && code > NCG_EBASE)
		return strerror(-code);
	return "unknown error";
}

void
ncg_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
