#include <arpa/inet.h>

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

int
addr_parse_uint(const char *s, unsigned long long min, unsigned long long max,
                unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int
addr_parse_hostport(const char *s, uint16_t dflt_port, int allow_zero,
                    char *host, size_t hostlen, uint16_t *port)
{
	const char *h, *p = NULL, *colon;
	unsigned long long v;
	size_t hlen;

	if (s == NULL || *s == '\0')
		return -EINVAL;
	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close == s + 1)
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		if (close[1] == ':')
			p = close + 2;
		else if (close[1] != '\0')
			return -EINVAL;
	} else {
		colon = strrchr(s, ':');
		if (colon != NULL && strchr(s, ':') != colon)
			return -EINVAL; /* bare IPv6 needs brackets */
		h = s;
		hlen = colon != NULL ? (size_t)(colon - s) : strlen(s);
		if (colon != NULL)
			p = colon + 1;
	}
	if (hlen == 0)
		return -EINVAL;
	if (p == NULL) {
		if (dflt_port == 0)
			return -EINVAL;
		v = dflt_port;
	} else if (addr_parse_uint(p, allow_zero ? 0 : 1, 65535, &v) != 0)
		return -EINVAL;
	if (hlen >= hostlen)
		return -ENAMETOOLONG;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)v;
	return 0;
}

void
peer_from_name(struct peer *pe, const char *host, uint16_t port)
{
	snprintf(pe->pe_host, sizeof(pe->pe_host), "%s", host);
	pe->pe_port = port;
	if (port == 0)
		snprintf(pe->pe_text, sizeof(pe->pe_text), "%s", pe->pe_host);
	else if (strchr(pe->pe_host, ':') != NULL)
		snprintf(pe->pe_text, sizeof(pe->pe_text), "[%s]:%u",
		         pe->pe_host, port);
	else
		snprintf(pe->pe_text, sizeof(pe->pe_text), "%s:%u", pe->pe_host,
		         port);
}

void
peer_from_sockaddr(struct peer *pe, const struct sockaddr *sa)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;

		if (inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host)) ==
		    NULL)
			snprintf(host, sizeof(host), "?");
		peer_from_name(pe, host, ntohs(s6->sin6_port));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;

		if (inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host)) ==
		    NULL)
			snprintf(host, sizeof(host), "?");
		peer_from_name(pe, host, ntohs(s4->sin_port));
	} else
		peer_from_name(pe, "unix", 0);
}
