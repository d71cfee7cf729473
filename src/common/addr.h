/*
 * Parsing of "HOST:PORT" operands, as given on command lines.
 */
#ifndef NCGRPC_ADDR_H
#define NCGRPC_ADDR_H

#include <stddef.h>
#include <stdint.h>

/*
 * Splits "HOST:PORT", "[V6ADDR]:PORT" or, when dflt_port is nonzero, a bare
 * "HOST" or "[V6ADDR]".  host receives the host without brackets.  PORT
 * must be 1..65535 (0 too when allow_zero is set).  Returns 0, or -EINVAL
 * for a malformed operand, or -ENAMETOOLONG when host does not fit.
 */
int addr_parse_hostport(const char *s, uint16_t dflt_port, int allow_zero,
                        char *host, size_t hostlen, uint16_t *port);

/*
 * The host part of a peer address as grpc_conn_peer() gives it ("ADDR:PORT"
 * or "[V6ADDR]:PORT"), without brackets; a string without a port (such as
 * "(closed)") is copied whole.  out is always NUL-terminated (truncated if
 * it must be).
 */
void addr_peer_host(const char *peer, char *out, size_t len);

/*
 * Parses a decimal number in [min, max] that fills the whole string.
 * Returns 0 and sets *out, or -EINVAL / -ERANGE.
 */
int addr_parse_uint(const char *s, unsigned long long min,
                    unsigned long long max, unsigned long long *out);

#endif
