/*
 * Parsing of "HOST:PORT" operands, as given on command lines.
 */
#ifndef NCGRPC_ADDR_H
#define NCGRPC_ADDR_H

#include <netinet/in.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

/*
 * A peer's address as the transport saw it, kept whole so that nobody
 * parses "HOST:PORT" text back.  pe_host is the address without brackets
 * ("192.0.2.7", "2001:db8::1"), or a name before it is resolved, or "unix";
 * pe_text is how logs show it ("192.0.2.7:51234", "[2001:db8::1]:51234",
 * "unix").
 */
#define PEER_HOST_MAX 256
struct peer {
	char pe_host[PEER_HOST_MAX];
	uint16_t pe_port; /* 0 for a Unix socket */
	char pe_text[PEER_HOST_MAX + 8];
};

/* From a socket address (AF_INET, AF_INET6; anything else is "unix"). */
void peer_from_sockaddr(struct peer *pe, const struct sockaddr *sa);
/* From a host name or address and a port (port 0: the host alone). */
void peer_from_name(struct peer *pe, const char *host, uint16_t port);

/*
 * Splits "HOST:PORT", "[V6ADDR]:PORT" or, when dflt_port is nonzero, a bare
 * "HOST" or "[V6ADDR]".  host receives the host without brackets.  PORT
 * must be 1..65535 (0 too when allow_zero is set).  Returns 0, or -EINVAL
 * for a malformed operand, or -ENAMETOOLONG when host does not fit.
 */
int addr_parse_hostport(const char *s, uint16_t dflt_port, int allow_zero,
                        char *host, size_t hostlen, uint16_t *port);

/*
 * Parses a decimal number in [min, max] that fills the whole string.
 * Returns 0 and sets *out, or -EINVAL / -ERANGE.
 */
int addr_parse_uint(const char *s, unsigned long long min,
                    unsigned long long max, unsigned long long *out);

#endif
